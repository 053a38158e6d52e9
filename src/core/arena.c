/* Arena allocator (see arena.h): a list of blocks, bump pointer in the last. */
#include "supair/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#define ARENA_ALIGN 64

typedef struct block {
    struct block *next;
    size_t size, used;
    unsigned char *data;
} block;

struct sp_arena {
    block *head, *cur;
    size_t used_total; /* since reset, across blocks */
    size_t high_water; /* max used_total seen */
    size_t n_sys_allocs;
};

static block *block_new(sp_arena *a, size_t size) {
    block *b = malloc(sizeof *b);
    if (!b) return NULL;
    b->data = aligned_alloc(ARENA_ALIGN, (size + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN);
    if (!b->data) {
        free(b);
        return NULL;
    }
    b->size = size;
    b->used = 0;
    b->next = NULL;
    a->n_sys_allocs++;
    return b;
}

static void blocks_free(block *b) {
    while (b) {
        block *n = b->next;
        free(b->data);
        free(b);
        b = n;
    }
}

sp_arena *sp_arena_create(size_t initial_bytes) {
    sp_arena *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    if (initial_bytes < 4096) initial_bytes = 4096;
    a->head = a->cur = block_new(a, initial_bytes);
    if (!a->head) {
        free(a);
        return NULL;
    }
    return a;
}

void sp_arena_destroy(sp_arena *a) {
    if (!a) return;
    blocks_free(a->head);
    free(a);
}

void *sp_arena_alloc(sp_arena *a, size_t bytes) {
    /* Rounding a near-SIZE_MAX request (a negative size cast to size_t) up
     * would wrap to a tiny block that looks valid. */
    if (bytes > SIZE_MAX - ARENA_ALIGN) return NULL;
    size_t need = (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    if (need == 0) need = ARENA_ALIGN;
    block *b = a->cur;
    if (b->used + need > b->size) {
        /* spill: a new block at least as big as the request and as the old block */
        size_t size = b->size > need ? b->size : need;
        block *nb = block_new(a, size);
        if (!nb) return NULL;
        b->next = nb;
        a->cur = b = nb;
    }
    void *p = b->data + b->used;
    b->used += need;
    a->used_total += need;
    if (a->used_total > a->high_water) a->high_water = a->used_total;
    return p;
}

/* Below this a zero fill stays on the calling thread (waking a team costs
 * more than it saves). */
#define ZERO_PAR_MIN ((size_t)1 << 20)

void sp_zero_bytes(void *p, size_t bytes) {
    if (bytes < ZERO_PAR_MIN || omp_in_parallel() || omp_get_max_threads() == 1) {
        memset(p, 0, bytes);
        return;
    }
#pragma omp parallel
    {
        /* one contiguous piece per thread, on cache-line boundaries */
        const size_t nt = (size_t)omp_get_num_threads(), t = (size_t)omp_get_thread_num();
        const size_t lines = (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN;
        size_t a0 = lines * t / nt * ARENA_ALIGN, a1 = lines * (t + 1) / nt * ARENA_ALIGN;
        if (a1 > bytes) a1 = bytes;
        if (a0 < a1) memset((unsigned char *)p + a0, 0, a1 - a0);
    }
}

void *sp_arena_calloc(sp_arena *a, size_t bytes) {
    void *p = sp_arena_alloc(a, bytes);
    if (p) sp_zero_bytes(p, bytes);
    return p;
}

void sp_arena_reset(sp_arena *a) {
    if (a->head->next) {
        /* Spilled: replace all blocks by one of the high-water size (+1/8 slack)
         * so the next step fits in a single block without further mallocs. */
        size_t size = a->high_water + a->high_water / 8;
        block *nb = block_new(a, size);
        if (nb) {
            blocks_free(a->head);
            a->head = nb;
        } else {
            blocks_free(a->head->next); /* keep the first block; spill again later */
            a->head->next = NULL;
        }
    }
    a->head->used = 0;
    a->cur = a->head;
    a->used_total = 0;
}

size_t sp_arena_used(const sp_arena *a) { return a->used_total; }

size_t sp_arena_capacity(const sp_arena *a) {
    size_t c = 0;
    for (const block *b = a->head; b; b = b->next) c += b->size;
    return c;
}

size_t sp_arena_system_allocs(const sp_arena *a) { return a->n_sys_allocs; }
