/* Node-shared parameters and the sharded optimizer step (grad_reduce=node,
 * see dist.h).
 *
 * Why: with the bucketed MPI allreduce every rank of a node receives the
 * whole summed gradient through Open MPI's shared-memory transport (kernel
 * copies for large messages) and then runs Adam over ALL parameters: for
 * SuPAIR's 3.2M parameters that replicated work (~100 MB of memory traffic
 * per rank and step) and the copies were ~12% of a step at 2 ranks. Here
 * the node's ranks map one window holding the parameter values, the Adam
 * moments and one gradient buffer per rank; after backward, rank l of a
 * group sums slice l of every member's gradient (reading the others' buffers
 * directly), zeroes what it read, and updates only slice l. Across groups
 * (nodes) the slices are allreduced among the ranks holding the same slice.
 *
 * Memory model: the MPI-3 "separate" pattern for shared windows, made
 * portable: MPI_Win_sync, barrier, MPI_Win_sync around each hand-over
 * (inside a passive lock_all epoch opened at creation). */
#include "dist_internal.h"

#include <stdlib.h>
#include <string.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "supair/error.h"

struct sp_dist_sharedp {
    sp_dist *d;         /* not owned */
    MPI_Comm group;     /* owned: the ranks sharing one copy */
    MPI_Comm cross;     /* owned: the ranks holding the same slice in every group (NULL: one group) */
    MPI_Win win;
    int locked;
    int l, L;           /* this rank's index in its group, the group size */
    int groups;         /* number of groups in d */
    long total;         /* floats per buffer */
    long lo, hi;        /* this rank's slice */
    float **slot;       /* (L) every member's gradient buffer */
};

/* Slice l of L over n floats, boundaries on 16-float (64-byte) lines so no
 * two ranks write the same cache line. */
static long slice_start(long n, int l, int L) {
    long s = (long)((double)n * l / L);
    s = s / 16 * 16;
    return l == L ? n : s;
}

void sp_dist_sharedp_slice(const sp_dist_sharedp *s, long *lo, long *hi) {
    *lo = s->lo, *hi = s->hi;
}

int sp_dist_sharedp_group_size(const sp_dist_sharedp *s) { return s->L; }
int sp_dist_sharedp_groups(const sp_dist_sharedp *s) { return s->groups; }

static void free_comms(sp_dist_sharedp *s) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    if (s->win != MPI_WIN_NULL) {
        if (s->locked) MPI_Win_unlock_all(s->win);
        MPI_Win_free(&s->win);
    }
    if (s->group != MPI_COMM_NULL) MPI_Comm_free(&s->group);
    if (s->cross != MPI_COMM_NULL) MPI_Comm_free(&s->cross);
}

static int hand_over(sp_dist_sharedp *s, const char *what, sp_error *err) {
    double t0 = MPI_Wtime();
    MPI_Win_sync(s->win);
    int rc = MPI_Barrier(s->group);
    MPI_Win_sync(s->win);
    s->d->comm_s += MPI_Wtime() - t0;
    return rc == MPI_SUCCESS ? SP_OK : sp_dist_mpi_fail(err, rc, what);
}

int sp_dist_sharedp_create(sp_dist *d, sp_params *p, int group, sp_dist_sharedp **out,
                           sp_error *err) {
    *out = NULL;
    if (group < 0) return sp_fail(err, SP_EINPUT, "grad_group %d: must be >= 0", group);
    sp_dist_sharedp *s = calloc(1, sizeof *s);
    if (!s) return sp_fail(err, SP_ERUNTIME, "out of memory for the shared parameters");
    s->d = d, s->group = s->cross = MPI_COMM_NULL, s->win = MPI_WIN_NULL, s->total = p->total;
    const int color = group > 0 ? d->local_rank / group : 0;
    int rc = MPI_Comm_split(d->node, color, d->local_rank, &s->group);
    if (rc != MPI_SUCCESS) {
        free(s);
        return sp_dist_mpi_fail(err, rc, "Comm_split(parameter group)");
    }
    MPI_Comm_rank(s->group, &s->l);
    MPI_Comm_size(s->group, &s->L);
    /* Every group must cut the buffer the same way: equal sizes everywhere. */
    int mm[2] = {-s->L, s->L};
    rc = MPI_Allreduce(MPI_IN_PLACE, mm, 2, MPI_INT, MPI_MAX, d->comm);
    if (rc != MPI_SUCCESS) {
        free_comms(s), free(s);
        return sp_dist_mpi_fail(err, rc, "Allreduce(parameter group sizes)");
    }
    if (-mm[0] != mm[1]) {
        /* Not an error: the caller falls back to the plain allreduce. */
        free_comms(s), free(s);
        return SP_OK;
    }
    s->groups = d->size / s->L;
    if (s->groups > 1) {
        rc = MPI_Comm_split(d->comm, s->l, d->rank, &s->cross);
        if (rc != MPI_SUCCESS) {
            free_comms(s), free(s);
            return sp_dist_mpi_fail(err, rc, "Comm_split(slice holders)");
        }
    }
    s->slot = calloc((size_t)s->L, sizeof *s->slot);
    if (!s->slot) {
        free_comms(s), free(s);
        return sp_fail(err, SP_ERUNTIME, "out of memory for the shared parameters");
    }
    /* Each rank's part starts with its gradient buffer; the group's first
     * rank adds the values and both moments. Non-contiguous parts let each
     * rank's buffer live on its own NUMA node (first touch). */
    const size_t fb = (size_t)p->total * sizeof(float);
    MPI_Info info;
    MPI_Info_create(&info);
    MPI_Info_set(info, "alloc_shared_noncontig", "true");
    void *base = NULL;
    rc = MPI_Win_allocate_shared((MPI_Aint)(s->l == 0 ? 4 * fb : fb), 64, info, s->group, &base,
                                 &s->win);
    MPI_Info_free(&info);
    if (rc != MPI_SUCCESS) {
        s->win = MPI_WIN_NULL;
        free(s->slot), free_comms(s), free(s);
        return sp_dist_mpi_fail(err, rc, "Win_allocate_shared(parameters)");
    }
    MPI_Win_set_errhandler(s->win, MPI_ERRORS_RETURN);
    float *first = NULL;
    for (int q = 0; q < s->L && rc == MPI_SUCCESS; q++) {
        MPI_Aint size;
        int unit;
        void *ptr = NULL;
        rc = MPI_Win_shared_query(s->win, q, &size, &unit, &ptr);
        s->slot[q] = ptr;
        if (q == 0) first = ptr;
    }
    if (rc == MPI_SUCCESS) rc = MPI_Win_lock_all(MPI_MODE_NOCHECK, s->win);
    s->locked = rc == MPI_SUCCESS;
    if (rc != MPI_SUCCESS) {
        free(s->slot), free_comms(s), free(s);
        return sp_dist_mpi_fail(err, rc, "Win_shared_query(parameters)");
    }
    float *val = first + p->total, *m = val + p->total, *v = m + p->total;
    float *own = s->slot[s->l];
    /* Every replica holds the same values here (broadcast from rank 0). */
    if (s->l == 0) {
        memcpy(val, p->val, fb);
        memcpy(m, p->adam_m, fb);
        memcpy(v, p->adam_v, fb);
    }
    memcpy(own, p->grad, fb);
    s->lo = slice_start(p->total, s->l, s->L);
    s->hi = slice_start(p->total, s->l + 1, s->L);
    if ((rc = hand_over(s, "Barrier(shared parameters)", err))) {
        free(s->slot), free_comms(s), free(s);
        return rc;
    }
    free(p->val), free(p->grad), free(p->adam_m), free(p->adam_v);
    p->val = val, p->grad = own, p->adam_m = m, p->adam_v = v;
    p->external = 1;
    *out = s;
    return SP_OK;
}

/* Chunk of the slice reduction: small enough for L1 with two operands. */
#define RED_CHUNK 2048

/* out[i] = a[i] + b[i]; out may be a or b (each vector is loaded before it
 * is stored, so the in-place case needs no copy). */
static void add_into(float *out, const float *a, const float *b, long n) {
    long i = 0;
#if defined(__AVX2__)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
#endif
    for (; i < n; i++) out[i] = a[i] + b[i];
}

int sp_dist_sharedp_reduce(sp_dist_sharedp *s, sp_error *err) {
    int rc = hand_over(s, "Barrier(gradients ready)", err);
    if (rc) return rc;
    double t0 = MPI_Wtime();
    const int L = s->L, me = s->l;
    float *const *slot = s->slot;
    const long lo = s->lo, hi = s->hi;
    if (L > 1) {
        const long nchunks = (hi - lo + RED_CHUNK - 1) / RED_CHUNK;
#pragma omp parallel for schedule(static) if (hi - lo >= (1L << 16))
        for (long c = 0; c < nchunks; c++) {
            const long a = lo + c * RED_CHUNK, n = (a + RED_CHUNK < hi ? a + RED_CHUNK : hi) - a;
            /* Members in rank order, (((g0 + g1) + g2) + ...): the same sum
             * whichever rank computes it; the last addition lands in this
             * rank's own buffer. */
            if (L == 2) {
                add_into(slot[me] + a, slot[0] + a, slot[1] + a, n);
            } else {
                float acc[RED_CHUNK];
                add_into(acc, slot[0] + a, slot[1] + a, n);
                for (int q = 2; q < L - 1; q++) add_into(acc, acc, slot[q] + a, n);
                add_into(slot[me] + a, acc, slot[L - 1] + a, n);
            }
            for (int q = 0; q < L; q++)
                if (q != me) memset(slot[q] + a, 0, (size_t)n * sizeof(float));
        }
    }
    if (s->groups > 1) {
        const long piece = 1L << 28;
        for (long a = lo; a < hi && rc == SP_OK; a += piece) {
            long n = hi - a < piece ? hi - a : piece;
            int mrc = MPI_Allreduce(MPI_IN_PLACE, slot[me] + a, (int)n, MPI_FLOAT, MPI_SUM, s->cross);
            if (mrc != MPI_SUCCESS) rc = sp_dist_mpi_fail(err, mrc, "Allreduce(gradient slice)");
        }
    }
    s->d->comm_s += MPI_Wtime() - t0;
    return rc;
}

int sp_dist_sharedp_sum(sp_dist_sharedp *s, double *v, sp_error *err) {
    double t0 = MPI_Wtime();
    double all[64], *parts = s->L <= 64 ? all : malloc((size_t)s->L * sizeof *parts);
    if (!parts) return sp_fail(err, SP_ERUNTIME, "out of memory for %d partial sums", s->L);
    int rc = MPI_Allgather(v, 1, MPI_DOUBLE, parts, 1, MPI_DOUBLE, s->group);
    if (rc == MPI_SUCCESS) {
        double t = 0.0;
        for (int q = 0; q < s->L; q++) t += parts[q];
        *v = t;
    }
    if (parts != all) free(parts);
    s->d->comm_s += MPI_Wtime() - t0;
    return rc == MPI_SUCCESS ? SP_OK : sp_dist_mpi_fail(err, rc, "Allgather(partial sums)");
}

int sp_dist_sharedp_publish(sp_dist_sharedp *s, sp_error *err) {
    return hand_over(s, "Barrier(parameters updated)", err);
}

void sp_dist_sharedp_free(sp_dist_sharedp *s, sp_params *p) {
    if (!s) return;
    if (p && p->external) {
        p->val = p->grad = p->adam_m = p->adam_v = NULL;
        p->external = 0;
    }
    free_comms(s);
    free(s->slot);
    free(s);
}
