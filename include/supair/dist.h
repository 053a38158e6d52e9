/* Data parallelism over MPI (src/dist, the only code that includes mpi.h).
 *
 * Every function takes an sp_dist context holding its own communicator, never
 * MPI_COMM_WORLD directly: the world context is a duplicate of
 * MPI_COMM_WORLD, and a sweep splits it into groups (sp_dist_split) that each
 * train independently with the same code.
 *
 * Every call below that communicates is COLLECTIVE over the context: all its
 * ranks must call it, in the same order, or the job hangs. Agreements that may
 * fail (config, checksum, stop, errors) are therefore built from allgather /
 * allreduce, so every rank reaches the same verdict and returns the same
 * sp_error; no rank ever waits on a point-to-point message from a rank that
 * has already given up.
 *
 * Determinism: a sum-allreduce of the same buffer with the same bucket size on
 * the same number of ranks gives bitwise-identical results on every rank (Open
 * MPI's algorithms either reduce each element on one rank and broadcast it, or
 * combine pairs symmetrically, and IEEE addition of two numbers is
 * commutative). Caveats: the result differs in rounding between world sizes,
 * between bucket sizes (Open MPI picks the algorithm by message size), and
 * between the blocking path (MPI_Allreduce) and the overlapped path
 * (MPI_Iallreduce, libnbc's algorithms); a run must keep one path and one
 * bucket size for bit-identical resumes. sp_dist_check_params verifies the
 * agreement at run time. */
#ifndef SUPAIR_DIST_H
#define SUPAIR_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "supair/error.h"
#include "supair/params.h"

typedef struct sp_dist sp_dist;

#define SP_DIST_DEFAULT_BUCKET_BYTES ((size_t)4 << 20)

/* ---- lifetime ---- */

/* Initialises MPI (MPI_THREAD_FUNNELED: OpenMP threads never call MPI) unless
 * it already is, and returns the world context (a duplicate of
 * MPI_COMM_WORLD, errors returned rather than aborting). Also sets the log
 * rank prefix. */
int sp_dist_init(int *argc, char ***argv, sp_dist **world, sp_error *err);
/* Collective over parent: ranks passing the same color form one new context,
 * ordered by their rank in parent. */
int sp_dist_split(sp_dist *parent, int color, sp_dist **out, sp_error *err);
/* Frees a context (collective: frees its communicator). NULL is a no-op. */
void sp_dist_free(sp_dist *d);
/* Frees the world context and finalizes MPI if sp_dist_init started it. */
void sp_dist_finalize(sp_dist *world);
/* Last resort when a rank cannot reach a collective agreement (kills the job). */
void sp_dist_abort(sp_dist *d, int code);

int sp_dist_rank(const sp_dist *d);
int sp_dist_size(const sp_dist *d);
/* This rank's index among the context's ranks on the same node, and their
 * number (for dividing the node's cores among OpenMP threads). */
int sp_dist_local_rank(const sp_dist *d);
int sp_dist_local_size(const sp_dist *d);

/* *text = malloc'd "hostA,hostB" (distinct host names in order of first
 * rank), identical on every rank; the caller frees it. */
int sp_dist_hostnames(sp_dist *d, char **text, sp_error *err);

int sp_dist_barrier(sp_dist *d, sp_error *err);

/* ---- node-shared memory ----
 *
 * One block of memory per node that every rank of the node maps (an MPI-3
 * shared window over the node's ranks), for read-only data all ranks need:
 *
 *   sp_dist_node_alloc(d, bytes, &shm, &ptr, err);  (collective)
 *   ... fill ptr: the leader (local rank 0) alone, or each rank its own
 *       disjoint part ...
 *   sp_dist_node_publish(shm, err);  (collective over the node: after it,
 *                                      every rank sees every rank's bytes)
 *   ... read ptr ...
 *   sp_dist_node_free(shm);          (collective)
 *
 * The leader is the node's first rank; bytes may differ between nodes but
 * must agree within one (the leader's count is allocated). */
typedef struct sp_dist_shm sp_dist_shm;
int sp_dist_node_alloc(sp_dist *d, size_t bytes, sp_dist_shm **out, void **ptr, sp_error *err);
int sp_dist_node_publish(sp_dist_shm *s, sp_error *err);
void sp_dist_node_free(sp_dist_shm *s);

/* ---- node-shared parameters and the sharded optimizer step ----
 *
 * grad_reduce=node: the ranks of a node (or of each group of `group`
 * consecutive ranks of a node; 0 = the whole node) keep ONE copy of the
 * parameter values and Adam moments in a shared window, plus one gradient
 * buffer per rank. After backward, rank l of a group sums slice l of every
 * member's gradient (members in rank order), zeroes what it read, and
 * updates only that slice; with several groups (nodes) each slice is then
 * allreduced among the ranks holding it. Per step:
 *
 *   ... forward and backward into p->grad (this rank's own buffer) ...
 *   sp_dist_sharedp_reduce(s, err);            collective: own slice summed
 *   partial = sum of squares over the slice;  sp_dist_sharedp_sum(s, &partial, err);
 *   ... clip and Adam over [lo, hi) only, zeroing the slice's gradient ...
 *   sp_dist_sharedp_publish(s, err);           collective: new values visible
 *
 * Between publish and the next reduce every rank may read all of p->val,
 * p->adam_m, p->adam_v (checkpoints, checksums, evaluation) and write only
 * its own p->grad. */
typedef struct sp_dist_sharedp sp_dist_sharedp;
/* Collective over d, after every rank holds the same values (after the
 * broadcasts): moves p's four buffers into the window (p->external = 1).
 * *out = NULL with SP_OK when the groups would differ in size (e.g. nodes
 * with different rank counts): the caller keeps the plain allreduce. */
int sp_dist_sharedp_create(sp_dist *d, sp_params *p, int group, sp_dist_sharedp **out,
                           sp_error *err);
/* This rank's slice [lo, hi) of the flat buffers (16-float aligned). */
void sp_dist_sharedp_slice(const sp_dist_sharedp *s, long *lo, long *hi);
int sp_dist_sharedp_group_size(const sp_dist_sharedp *s);
int sp_dist_sharedp_groups(const sp_dist_sharedp *s);
int sp_dist_sharedp_reduce(sp_dist_sharedp *s, sp_error *err);
/* *v = the sum of every group member's *v, added in rank order (the same
 * bits on every rank). */
int sp_dist_sharedp_sum(sp_dist_sharedp *s, double *v, sp_error *err);
int sp_dist_sharedp_publish(sp_dist_sharedp *s, sp_error *err);
/* Collective over the group; p's buffers are gone afterwards (NULL). */
void sp_dist_sharedp_free(sp_dist_sharedp *s, sp_params *p);

/* ---- broadcasts from rank 0 ---- */

/* Any size (sent in pieces below INT_MAX bytes). */
int sp_dist_bcast(sp_dist *d, void *buf, size_t bytes, sp_error *err);
/* The whole flat parameter buffer p->val (padding included), so every replica
 * starts from rank 0's initialisation or checkpoint. with_adam also sends the
 * Adam moments (after a resume on rank 0 only). */
int sp_dist_bcast_params(sp_dist *d, sp_params *p, int with_adam, sp_error *err);

/* ---- gradient allreduce (sum, then scale) ----
 *
 * The buffer is cut into fixed buckets of bucket_bytes from offset 0; each
 * bucket is one allreduce. Overlapped use during backward:
 *
 *   sp_dist_allreduce_begin(d, p->grad, p->total, SP_DIST_DESCENDING, err);
 *   ... backward finishes parameters from the end of the buffer down ...
 *   sp_dist_bucket_ready(d, lowest_final_offset, err);   (any number of times)
 *   sp_dist_allreduce_wait(d, 1.0f / global_batch, err);
 *
 * Buckets start in one fixed order (ascending or descending index) on every
 * rank, as MPI requires of nonblocking collectives; readiness only decides how
 * early. Open MPI has no progress thread: each sp_dist_bucket_ready call also
 * tests the started buckets so they advance while backward runs. */
enum { SP_DIST_ASCENDING = 0, SP_DIST_DESCENDING = 1 };

/* Bucket size in bytes (rounded down to whole floats, at least 1024 bytes). */
void sp_dist_set_bucket_bytes(sp_dist *d, size_t bytes);
size_t sp_dist_bucket_bytes(const sp_dist *d);

/* Starts an overlapped allreduce of buf[0..n) (nothing is sent yet). */
int sp_dist_allreduce_begin(sp_dist *d, float *buf, long n, int order, sp_error *err);
/* ASCENDING: buf[0..boundary) is final; DESCENDING: buf[boundary..n) is
 * final. Starts every not yet started bucket lying wholly inside that range. */
int sp_dist_bucket_ready(sp_dist *d, long boundary, sp_error *err);
/* Waits for the started buckets, reduces the rest with blocking calls (faster
 * than nonblocking ones once backward is over), multiplies buf by scale. */
int sp_dist_allreduce_wait(sp_dist *d, float scale, sp_error *err);
/* Blocking equivalent: bucket by bucket MPI_Allreduce in place, then scale. */
int sp_dist_allreduce_sum(sp_dist *d, float *buf, long n, float scale, sp_error *err);

/* Seconds this rank spent blocked in communication since the last take
 * (waits, blocking collectives, agreements): the step's exposed comm_s.
 * Resets the counter. */
double sp_dist_comm_take(sp_dist *d);

/* ---- small reductions ---- */

/* In place over n doubles: sum over ranks, or the mean when mean != 0. */
int sp_dist_reduce_doubles(sp_dist *d, double *vals, int n, int mean, sp_error *err);
/* In place over n int64: max over ranks. */
int sp_dist_max_int64(sp_dist *d, int64_t *vals, int n, sp_error *err);

/* ---- agreement checks ---- */

/* 64-bit FNV-1a of bytes, continuing from h (start with SP_FNV_OFFSET). The
 * checkpoint checksum uses the same function. */
#define SP_FNV_OFFSET 0xcbf29ce484222325ULL
uint64_t sp_fnv1a64(uint64_t h, const void *data, size_t bytes);
/* A 64-bit hash of p->val, then p->adam_m and p->adam_v when with_adam
 * (whole buffers, padding included): four FNV-1a lanes over 32-bit words,
 * then FNV-1a of the lanes. For comparing replicas, not stored in files. */
uint64_t sp_params_checksum(const sp_params *p, int with_adam);

/* Collective: compares the checksum of p across ranks. On mismatch every rank
 * returns SP_ERUNTIME naming the ranks that differ from rank 0. */
int sp_dist_check_params(sp_dist *d, const sp_params *p, int with_adam, sp_error *err);

/* Collective start-up agreement: every rank passes its resolved config text
 * and dataset fingerprint. On a difference every rank returns SP_EINPUT
 * naming the ranks and what differs (the first differing config line). */
int sp_dist_check_agreement(sp_dist *d, const char *config_text, uint64_t data_fingerprint,
                            sp_error *err);

/* ---- stop and failure agreement ---- */

/* Installs async-signal-safe handlers for SIGUSR1 and SIGTERM that only
 * record the signal; training stops at the next step boundary. Open MPI's
 * mpirun (4.1) forwards SIGUSR1/SIGUSR2 to every rank and then exits with
 * the ranks' status; on SIGTERM it signals the ranks too but exits 1 and
 * kills them shortly after, so job scripts should deliver SIGUSR1 to mpirun
 * (srun delivers SIGTERM to every task, then SIGKILL after KillWait).
 *
 * Shutdown order matters: mpirun kills every remaining rank as soon as one
 * rank exits non-zero. After a stop verdict, rank 0 writes the checkpoint,
 * then ALL ranks call sp_dist_barrier and sp_dist_finalize, and only then
 * exit 3; otherwise a fast rank's exit can kill rank 0 mid-checkpoint (the
 * atomic write then leaves the previous checkpoint, but the stop is lost). */
int sp_dist_install_signal_handlers(sp_error *err);
/* The signal number received on this rank (0: none), and a way to raise the
 * stop locally without a signal (time limit, tests). */
int sp_dist_signal_pending(void);
void sp_dist_request_stop(int signum);
void sp_dist_clear_stop(void);

typedef struct sp_dist_verdict {
    int stop;         /* a signal number (the largest received on any rank), or 0 */
    int failed;       /* 1 when any rank reported a failure */
    int first_failed; /* lowest failing rank, or -1 */
} sp_dist_verdict;

/* Collective, at a step boundary: one MAX-allreduce of this rank's pending
 * signal and local_failed flag, so every rank takes the same decision (stop
 * cleanly, or all give up because one rank failed). */
int sp_dist_should_stop(sp_dist *d, int local_failed, sp_dist_verdict *v, sp_error *err);

#endif
