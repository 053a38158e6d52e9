/* MPI data parallelism (see dist.h): contexts, broadcasts, the bucketed
 * gradient allreduce, small reductions, exposed-communication timing. The
 * agreement checks and the signal handling live in agree.c. */
#include "dist_internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "supair/error.h"

static int we_initialized = 0;

int sp_dist_mpi_fail(sp_error *err, int rc, const char *what) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "error %d", rc);
    return sp_fail(err, SP_ERUNTIME, "MPI %s failed: %s", what, msg);
}

/* Takes ownership of comm: errors return, rank/size and node-local numbers. */
static int wrap_comm(MPI_Comm comm, size_t bucket_bytes, sp_dist **out, sp_error *err) {
    *out = NULL;
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
    sp_dist *d = calloc(1, sizeof *d);
    if (!d) {
        MPI_Comm_free(&comm);
        return sp_fail(err, SP_ERUNTIME, "out of memory for the MPI context");
    }
    d->comm = comm;
    d->bucket_bytes = bucket_bytes;
    MPI_Comm_rank(comm, &d->rank);
    MPI_Comm_size(comm, &d->size);
    d->node = MPI_COMM_NULL;
    int rc = MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &d->node);
    if (rc != MPI_SUCCESS) {
        sp_dist_free(d);
        return sp_dist_mpi_fail(err, rc, "Comm_split_type(shared)");
    }
    MPI_Comm_rank(d->node, &d->local_rank);
    MPI_Comm_size(d->node, &d->local_size);
    *out = d;
    return SP_OK;
}

int sp_dist_init(int *argc, char ***argv, sp_dist **world, sp_error *err) {
    *world = NULL;
    int inited = 0, rc;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided = 0;
        rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) return sp_fail(err, SP_ERUNTIME, "MPI_Init_thread failed (code %d)", rc);
        we_initialized = 1;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm comm;
    /* A duplicate keeps our traffic apart from any other library's. */
    rc = MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    if (rc != MPI_SUCCESS) return sp_dist_mpi_fail(err, rc, "Comm_dup(world)");
    rc = wrap_comm(comm, SP_DIST_DEFAULT_BUCKET_BYTES, world, err);
    if (rc == SP_OK) sp_log_set_rank((*world)->rank);
    return rc;
}

int sp_dist_split(sp_dist *parent, int color, sp_dist **out, sp_error *err) {
    *out = NULL;
    MPI_Comm comm;
    int rc = MPI_Comm_split(parent->comm, color, parent->rank, &comm);
    if (rc != MPI_SUCCESS) return sp_dist_mpi_fail(err, rc, "Comm_split");
    return wrap_comm(comm, parent->bucket_bytes, out, err);
}

void sp_dist_free(sp_dist *d) {
    if (!d) return;
    if (d->comm != MPI_COMM_NULL) {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized) {
            if (d->node != MPI_COMM_NULL) MPI_Comm_free(&d->node);
            MPI_Comm_free(&d->comm);
        }
    }
    free(d->reqs);
    free(d);
}

/* ---- shared-memory windows (the node's scenes, node-shared parameters) */

int sp_dist_win_allocate(MPI_Comm comm, size_t bytes, int noncontig, MPI_Win *win, void **base,
                         const char *what, sp_error *err) {
    MPI_Info info = MPI_INFO_NULL;
    if (noncontig) {
        MPI_Info_create(&info);
        MPI_Info_set(info, "alloc_shared_noncontig", "true");
    }
    *win = MPI_WIN_NULL;
    int rc = MPI_Win_allocate_shared((MPI_Aint)bytes, 64, info, comm, base, win);
    if (info != MPI_INFO_NULL) MPI_Info_free(&info);
    if (rc != MPI_SUCCESS) {
        *win = MPI_WIN_NULL;
        return sp_dist_mpi_fail(err, rc, what);
    }
    MPI_Win_set_errhandler(*win, MPI_ERRORS_RETURN); /* errors come back as codes */
    /* One passive epoch for the window's life: loads and stores between
     * hand-overs (sp_dist_win_handover) need no further calls. */
    rc = MPI_Win_lock_all(MPI_MODE_NOCHECK, *win);
    if (rc != MPI_SUCCESS) {
        MPI_Win_free(win);
        return sp_dist_mpi_fail(err, rc, what);
    }
    return SP_OK;
}

int sp_dist_win_handover(MPI_Win win, MPI_Comm comm, double *comm_s, const char *what,
                         sp_error *err) {
    /* Every rank's stores, then the barrier, then every rank's view
     * refreshed: the shared-window pattern of the MPI-3 memory model. */
    double t0 = MPI_Wtime();
    MPI_Win_sync(win);
    int rc = MPI_Barrier(comm);
    MPI_Win_sync(win);
    if (comm_s) *comm_s += MPI_Wtime() - t0;
    return rc == MPI_SUCCESS ? SP_OK : sp_dist_mpi_fail(err, rc, what);
}

void sp_dist_win_free(MPI_Win *win) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized || *win == MPI_WIN_NULL) return;
    MPI_Win_unlock_all(*win);
    MPI_Win_free(win);
}

struct sp_dist_shm {
    MPI_Comm node; /* the sp_dist's, not owned */
    MPI_Win win;
};

int sp_dist_node_alloc(sp_dist *d, size_t bytes, sp_dist_shm **out, void **ptr, sp_error *err) {
    *out = NULL, *ptr = NULL;
    sp_dist_shm *s = calloc(1, sizeof *s);
    if (!s) return sp_fail(err, SP_ERUNTIME, "out of memory for a shared-memory window");
    s->node = d->node;
    const int leader = d->local_rank == 0;
    /* Only the leader's part has bytes: the block is one contiguous copy. */
    void *base = NULL;
    int rc = sp_dist_win_allocate(s->node, leader ? bytes : 0, 0, &s->win, &base,
                                  "Win_allocate_shared(node data)", err);
    if (rc) {
        free(s);
        return rc;
    }
    MPI_Aint size;
    int unit;
    int mrc = MPI_Win_shared_query(s->win, 0, &size, &unit, ptr);
    if (mrc != MPI_SUCCESS) {
        sp_dist_node_free(s);
        return sp_dist_mpi_fail(err, mrc, "Win_shared_query(node data)");
    }
    *out = s;
    return SP_OK;
}

int sp_dist_node_publish(sp_dist_shm *s, sp_error *err) {
    return sp_dist_win_handover(s->win, s->node, NULL, "Barrier(node data)", err);
}

void sp_dist_node_free(sp_dist_shm *s) {
    if (!s) return;
    sp_dist_win_free(&s->win);
    free(s);
}

void sp_dist_finalize(sp_dist *world) {
    sp_dist_free(world);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (we_initialized && !finalized) MPI_Finalize();
}

void sp_dist_abort(sp_dist *d, int code) { MPI_Abort(d ? d->comm : MPI_COMM_WORLD, code); }

int sp_dist_rank(const sp_dist *d) { return d->rank; }
int sp_dist_size(const sp_dist *d) { return d->size; }
int sp_dist_local_rank(const sp_dist *d) { return d->local_rank; }
int sp_dist_local_size(const sp_dist *d) { return d->local_size; }

int sp_dist_hostnames(sp_dist *d, char **text, sp_error *err) {
    *text = NULL;
    double t0 = MPI_Wtime();
    char name[MPI_MAX_PROCESSOR_NAME];
    memset(name, 0, sizeof name);
    int len = 0;
    MPI_Get_processor_name(name, &len);
    char *all = malloc((size_t)d->size * MPI_MAX_PROCESSOR_NAME);
    char *out = malloc((size_t)d->size * (MPI_MAX_PROCESSOR_NAME + 1) + 1);
    if (!all || !out) {
        free(all);
        free(out);
        return sp_fail(err, SP_ERUNTIME, "out of memory gathering host names of %d ranks", d->size);
    }
    int rc = MPI_Allgather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all, MPI_MAX_PROCESSOR_NAME,
                           MPI_CHAR, d->comm);
    d->comm_s += MPI_Wtime() - t0;
    if (rc != MPI_SUCCESS) {
        free(all);
        free(out);
        return sp_dist_mpi_fail(err, rc, "Allgather(host names)");
    }
    size_t pos = 0;
    out[0] = '\0';
    for (int r = 0; r < d->size; r++) {
        const char *h = all + (size_t)r * MPI_MAX_PROCESSOR_NAME;
        int seen = 0;
        for (int q = 0; q < r && !seen; q++)
            seen = strncmp(h, all + (size_t)q * MPI_MAX_PROCESSOR_NAME, MPI_MAX_PROCESSOR_NAME) == 0;
        if (seen) continue;
        size_t hl = strnlen(h, MPI_MAX_PROCESSOR_NAME - 1);
        if (pos) out[pos++] = ',';
        memcpy(out + pos, h, hl);
        pos += hl;
        out[pos] = '\0';
    }
    free(all);
    *text = out;
    return SP_OK;
}

int sp_dist_barrier(sp_dist *d, sp_error *err) {
    double t0 = MPI_Wtime();
    int rc = MPI_Barrier(d->comm);
    d->comm_s += MPI_Wtime() - t0;
    return rc == MPI_SUCCESS ? SP_OK : sp_dist_mpi_fail(err, rc, "Barrier");
}

/* ---- broadcasts ---- */

int sp_dist_bcast(sp_dist *d, void *buf, size_t bytes, sp_error *err) {
    double t0 = MPI_Wtime();
    const size_t piece = (size_t)1 << 30;
    int rc = MPI_SUCCESS;
    for (size_t off = 0; off < bytes && rc == MPI_SUCCESS; off += piece) {
        size_t n = bytes - off < piece ? bytes - off : piece;
        rc = MPI_Bcast((char *)buf + off, (int)n, MPI_BYTE, 0, d->comm);
    }
    d->comm_s += MPI_Wtime() - t0;
    return rc == MPI_SUCCESS ? SP_OK : sp_dist_mpi_fail(err, rc, "Bcast");
}

int sp_dist_bcast_params(sp_dist *d, sp_params *p, int with_adam, sp_error *err) {
    size_t bytes = (size_t)p->total * sizeof(float);
    int rc = sp_dist_bcast(d, p->val, bytes, err);
    if (rc == SP_OK && with_adam) rc = sp_dist_bcast(d, p->adam_m, bytes, err);
    if (rc == SP_OK && with_adam) rc = sp_dist_bcast(d, p->adam_v, bytes, err);
    return rc;
}

/* ---- bucketed gradient allreduce ---- */

void sp_dist_set_bucket_bytes(sp_dist *d, size_t bytes) {
    if (bytes < 1024) bytes = 1024;
    /* One bucket is one MPI call: its element count must fit an int. */
    if (bytes > (size_t)INT_MAX / 2 * sizeof(float)) bytes = (size_t)INT_MAX / 2 * sizeof(float);
    d->bucket_bytes = bytes / sizeof(float) * sizeof(float);
}

size_t sp_dist_bucket_bytes(const sp_dist *d) { return d->bucket_bytes; }

static long bucket_floats(const sp_dist *d) { return (long)(d->bucket_bytes / sizeof(float)); }

int sp_dist_allreduce_begin(sp_dist *d, float *buf, long n, int order, sp_error *err) {
    if (d->active) return sp_fail(err, SP_ERUNTIME, "allreduce_begin: previous allreduce not waited for");
    long bf = bucket_floats(d);
    long nb = n > 0 ? (n + bf - 1) / bf : 0;
    if (nb > d->reqs_cap) {
        /* Grows once (the first step); later steps reuse it. */
        MPI_Request *r = realloc(d->reqs, (size_t)nb * sizeof *r);
        if (!r) return sp_fail(err, SP_ERUNTIME, "out of memory for %ld allreduce buckets", nb);
        d->reqs = r;
        d->reqs_cap = nb;
    }
    d->buf = buf;
    d->n = n;
    d->order = order == SP_DIST_DESCENDING ? SP_DIST_DESCENDING : SP_DIST_ASCENDING;
    d->nb = nb;
    d->started = 0;
    d->active = 1;
    return SP_OK;
}

/* Starts the next bucket in the fixed order. */
static int start_next(sp_dist *d, sp_error *err) {
    long bf = bucket_floats(d);
    long b = d->order == SP_DIST_ASCENDING ? d->started : d->nb - 1 - d->started;
    long lo = b * bf, cnt = d->n - lo < bf ? d->n - lo : bf;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, d->buf + lo, (int)cnt, MPI_FLOAT, MPI_SUM, d->comm,
                            &d->reqs[d->started]);
    if (rc != MPI_SUCCESS) {
        d->active = 0;
        return sp_dist_mpi_fail(err, rc, "Iallreduce");
    }
    d->started++;
    return SP_OK;
}

int sp_dist_bucket_ready(sp_dist *d, long boundary, sp_error *err) {
    if (!d->active) return sp_fail(err, SP_ERUNTIME, "bucket_ready without allreduce_begin");
    double t0 = MPI_Wtime();
    long bf = bucket_floats(d);
    int rc = SP_OK;
    while (rc == SP_OK && d->started < d->nb) {
        long b = d->order == SP_DIST_ASCENDING ? d->started : d->nb - 1 - d->started;
        long lo = b * bf, hi = lo + bf < d->n ? lo + bf : d->n;
        int ready = d->order == SP_DIST_ASCENDING ? hi <= boundary : lo >= boundary;
        if (!ready) break;
        rc = start_next(d, err);
    }
    if (rc == SP_OK && d->started > 0) {
        int flag = 0;
        int mrc = MPI_Testall((int)d->started, d->reqs, &flag, MPI_STATUSES_IGNORE);
        if (mrc != MPI_SUCCESS) {
            d->active = 0;
            rc = sp_dist_mpi_fail(err, mrc, "Testall(allreduce buckets)");
        }
    }
    d->comm_s += MPI_Wtime() - t0;
    return rc;
}

static void scale_floats(float *buf, long n, float scale) {
    if (scale == 1.0f) return;
    for (long i = 0; i < n; i++) buf[i] *= scale;
}

int sp_dist_allreduce_wait(sp_dist *d, float scale, sp_error *err) {
    if (!d->active) return sp_fail(err, SP_ERUNTIME, "allreduce_wait without allreduce_begin");
    double t0 = MPI_Wtime();
    int rc = SP_OK;
    /* Buckets started during backward complete here; the ones still waiting
     * when backward is over gain nothing from being nonblocking, and Open
     * MPI's blocking allreduce is about twice as fast as its nonblocking one
     * (libnbc) at these sizes, so they go through MPI_Allreduce, in the same
     * fixed order. Which buckets started early depends only on the readiness
     * boundaries (the model's node order), never on timing, so every rank
     * makes the same calls and the sums stay deterministic. */
    if (d->started > 0) {
        int mrc = MPI_Waitall((int)d->started, d->reqs, MPI_STATUSES_IGNORE);
        if (mrc != MPI_SUCCESS) rc = sp_dist_mpi_fail(err, mrc, "Waitall(allreduce buckets)");
    }
    long bf = bucket_floats(d);
    for (; rc == SP_OK && d->started < d->nb; d->started++) {
        long b = d->order == SP_DIST_ASCENDING ? d->started : d->nb - 1 - d->started;
        long lo = b * bf, cnt = d->n - lo < bf ? d->n - lo : bf;
        int mrc = MPI_Allreduce(MPI_IN_PLACE, d->buf + lo, (int)cnt, MPI_FLOAT, MPI_SUM, d->comm);
        if (mrc != MPI_SUCCESS) rc = sp_dist_mpi_fail(err, mrc, "Allreduce(gradient bucket)");
    }
    d->active = 0;
    d->comm_s += MPI_Wtime() - t0;
    if (rc == SP_OK) scale_floats(d->buf, d->n, scale);
    return rc;
}

int sp_dist_allreduce_sum(sp_dist *d, float *buf, long n, float scale, sp_error *err) {
    double t0 = MPI_Wtime();
    long bf = bucket_floats(d);
    int rc = MPI_SUCCESS;
    for (long lo = 0; lo < n && rc == MPI_SUCCESS; lo += bf) {
        long cnt = n - lo < bf ? n - lo : bf;
        rc = MPI_Allreduce(MPI_IN_PLACE, buf + lo, (int)cnt, MPI_FLOAT, MPI_SUM, d->comm);
    }
    d->comm_s += MPI_Wtime() - t0;
    if (rc != MPI_SUCCESS) return sp_dist_mpi_fail(err, rc, "Allreduce(gradients)");
    scale_floats(buf, n, scale);
    return SP_OK;
}

double sp_dist_comm_take(sp_dist *d) {
    double s = d->comm_s;
    d->comm_s = 0;
    return s;
}

/* ---- small reductions ---- */

int sp_dist_reduce_doubles(sp_dist *d, double *vals, int n, int mean, sp_error *err) {
    double t0 = MPI_Wtime();
    int rc = MPI_Allreduce(MPI_IN_PLACE, vals, n, MPI_DOUBLE, MPI_SUM, d->comm);
    d->comm_s += MPI_Wtime() - t0;
    if (rc != MPI_SUCCESS) return sp_dist_mpi_fail(err, rc, "Allreduce(metrics)");
    if (mean)
        for (int i = 0; i < n; i++) vals[i] /= d->size;
    return SP_OK;
}

int sp_dist_max_int64(sp_dist *d, int64_t *vals, int n, sp_error *err) {
    double t0 = MPI_Wtime();
    int rc = MPI_Allreduce(MPI_IN_PLACE, vals, n, MPI_INT64_T, MPI_MAX, d->comm);
    d->comm_s += MPI_Wtime() - t0;
    return rc == MPI_SUCCESS ? SP_OK : sp_dist_mpi_fail(err, rc, "Allreduce(max)");
}
