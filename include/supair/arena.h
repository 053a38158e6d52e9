/* Arena allocator: bump allocation out of big blocks, reset per step.
 *
 * A training step allocates every temporary (activations, tape nodes, scratch)
 * from an arena and resets it at the end. The first step may spill into extra
 * blocks; sp_arena_reset then coalesces them into one block of the high-water
 * size, so from the second step on a step performs no malloc at all
 * (sp_arena_system_allocs lets tests verify that). */
#ifndef SUPAIR_ARENA_H
#define SUPAIR_ARENA_H

#include <stddef.h>

typedef struct sp_arena sp_arena;

/* Returns NULL if the first block cannot be allocated. */
sp_arena *sp_arena_create(size_t initial_bytes);
void sp_arena_destroy(sp_arena *a);

/* 64-byte aligned (a cache line, and enough for AVX-512 loads). Contents are
 * uninitialised. Returns NULL only when the system is out of memory. */
void *sp_arena_alloc(sp_arena *a, size_t bytes);
/* Same, zero-filled (by the OpenMP team for large blocks: a step zeroes
 * tens of MB of gradient buffers, which on one thread was the largest
 * serial part of a 2-thread SuPAIR step). */
void *sp_arena_calloc(sp_arena *a, size_t bytes);

/* memset(p, 0, bytes), split over the OpenMP team from 1 MB up when called
 * outside a parallel region. */
void sp_zero_bytes(void *p, size_t bytes);

/* Forgets every allocation; keeps (and, if it spilled, coalesces) the memory. */
void sp_arena_reset(sp_arena *a);

size_t sp_arena_used(const sp_arena *a);       /* bytes handed out since reset */
size_t sp_arena_capacity(const sp_arena *a);   /* bytes held from the system */
size_t sp_arena_system_allocs(const sp_arena *a); /* malloc calls made so far */

#endif
