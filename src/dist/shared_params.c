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
    int l, L;           /* this rank's index in its group, the group size */
    int groups;         /* number of groups in d */
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

static void destroy(sp_dist_sharedp *s) {
    sp_dist_win_free(&s->win);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) {
        if (s->group != MPI_COMM_NULL) MPI_Comm_free(&s->group);
        if (s->cross != MPI_COMM_NULL) MPI_Comm_free(&s->cross);
    }
    free(s->slot);
    free(s);
}

static int hand_over(sp_dist_sharedp *s, const char *what, sp_error *err) {
    return sp_dist_win_handover(s->win, s->group, &s->d->comm_s, what, err);
}

int sp_dist_sharedp_create(sp_dist *d, sp_params *p, int group, sp_dist_sharedp **out,
                           sp_error *err) {
    *out = NULL;
    if (group < 0) return sp_fail(err, SP_EINPUT, "grad_group %d: must be >= 0", group);
    sp_dist_sharedp *s = calloc(1, sizeof *s);
    if (!s) return sp_fail(err, SP_ERUNTIME, "out of memory for the shared parameters");
    s->d = d, s->group = s->cross = MPI_COMM_NULL, s->win = MPI_WIN_NULL;
    int rc = SP_OK, mrc;
    const int color = group > 0 ? d->local_rank / group : 0;
    if ((mrc = MPI_Comm_split(d->node, color, d->local_rank, &s->group)) != MPI_SUCCESS) {
        rc = sp_dist_mpi_fail(err, mrc, "Comm_split(parameter group)");
        goto fail;
    }
    MPI_Comm_rank(s->group, &s->l);
    MPI_Comm_size(s->group, &s->L);
    /* Every group must cut the buffer the same way: equal sizes everywhere. */
    int mm[2] = {-s->L, s->L};
    if ((mrc = MPI_Allreduce(MPI_IN_PLACE, mm, 2, MPI_INT, MPI_MAX, d->comm)) != MPI_SUCCESS) {
        rc = sp_dist_mpi_fail(err, mrc, "Allreduce(parameter group sizes)");
        goto fail;
    }
    if (-mm[0] != mm[1]) goto fail; /* not an error: the caller keeps the allreduce */
    s->groups = d->size / s->L;
    if (s->groups > 1 &&
        (mrc = MPI_Comm_split(d->comm, s->l, d->rank, &s->cross)) != MPI_SUCCESS) {
        rc = sp_dist_mpi_fail(err, mrc, "Comm_split(slice holders)");
        goto fail;
    }
    if (!(s->slot = calloc((size_t)s->L, sizeof *s->slot))) {
        rc = sp_fail(err, SP_ERUNTIME, "out of memory for the shared parameters");
        goto fail;
    }
    /* Each rank's part is its gradient buffer; the group's first rank adds
     * the values and both moments. Parts allocated apart let each rank's
     * buffer live on its own NUMA node (first touch). */
    const size_t fb = (size_t)p->total * sizeof(float);
    void *base = NULL;
    if ((rc = sp_dist_win_allocate(s->group, s->l == 0 ? 4 * fb : fb, 1, &s->win, &base,
                                   "Win_allocate_shared(parameters)", err)))
        goto fail;
    for (int q = 0; q < s->L; q++) {
        MPI_Aint size;
        int unit;
        void *ptr = NULL;
        if ((mrc = MPI_Win_shared_query(s->win, q, &size, &unit, &ptr)) != MPI_SUCCESS) {
            rc = sp_dist_mpi_fail(err, mrc, "Win_shared_query(parameters)");
            goto fail;
        }
        s->slot[q] = ptr;
    }
    float *val = s->slot[0] + p->total, *m = val + p->total, *v = m + p->total;
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
    if ((rc = hand_over(s, "Barrier(shared parameters)", err))) goto fail;
    free(p->val), free(p->grad), free(p->adam_m), free(p->adam_v);
    p->val = val, p->grad = own, p->adam_m = m, p->adam_v = v;
    p->external = 1;
    *out = s;
    return SP_OK;
fail:
    destroy(s);
    return rc;
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
    destroy(s);
}
