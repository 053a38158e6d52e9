/* Collective agreements (see dist.h): parameter checksums, start-up config and
 * dataset agreement, and the stop/failure verdict at step boundaries. Each is
 * built from allgather/allreduce so every rank reaches the same verdict and
 * reports the same message; none can hang on a rank that already gave up. */
#include "dist_internal.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

uint64_t sp_fnv1a64(uint64_t h, const void *data, size_t bytes) {
    const unsigned char *p = data;
    for (size_t i = 0; i < bytes; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* Four FNV-1a lanes over 32-bit words (lane = word index mod 4), mixed at
 * the end. Byte-wise FNV-1a is one multiply chain per byte: ~50 ms over
 * SuPAIR's 38 MB of parameters and moments, every checksum_every steps on
 * every rank; four independent word chains take ~9 ms (measured). Any differing bit
 * still changes its lane's hash (xor then multiply by an odd constant is a
 * bijection of the lane state). */
static void fnv_words4(uint64_t h[4], const uint32_t *w, long n) {
    const uint64_t prime = 0x100000001b3ULL;
    long i = 0;
    for (; i + 4 <= n; i += 4)
        for (int l = 0; l < 4; l++) h[l] = (h[l] ^ w[i + l]) * prime;
    for (; i < n; i++) h[i & 3] = (h[i & 3] ^ w[i]) * prime;
}

uint64_t sp_params_checksum(const sp_params *p, int with_adam) {
    uint64_t h[4] = {SP_FNV_OFFSET, SP_FNV_OFFSET ^ 1, SP_FNV_OFFSET ^ 2, SP_FNV_OFFSET ^ 3};
    const float *bufs[3] = {p->val, p->adam_m, p->adam_v};
    for (int b = 0; b < (with_adam ? 3 : 1); b++)
        fnv_words4(h, (const uint32_t *)(const void *)bufs[b], p->total);
    return sp_fnv1a64(SP_FNV_OFFSET, h, sizeof h);
}

/* Appends "1, 4, 7" (at most 8 ranks, then "and N more") to out. */
static void list_ranks(char *out, size_t cap, const int *ranks, int n) {
    size_t pos = strlen(out);
    for (int i = 0; i < n && i < 8 && pos < cap; i++)
        pos += (size_t)snprintf(out + pos, cap - pos, "%s%d", i ? ", " : "", ranks[i]);
    if (n > 8 && pos < cap) snprintf(out + pos, cap - pos, " and %d more", n - 8);
}

int sp_dist_check_params(sp_dist *d, const sp_params *p, int with_adam, sp_error *err) {
    uint64_t h = sp_params_checksum(p, with_adam);
    uint64_t *all = malloc((size_t)d->size * sizeof *all);
    int *bad = malloc((size_t)d->size * sizeof *bad);
    if (!all || !bad) {
        free(all);
        free(bad);
        return sp_fail(err, SP_ERUNTIME, "out of memory for %d checksums", d->size);
    }
    double t0 = MPI_Wtime();
    int rc = MPI_Allgather(&h, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, d->comm);
    d->comm_s += MPI_Wtime() - t0;
    if (rc != MPI_SUCCESS) {
        free(all);
        free(bad);
        return sp_dist_mpi_fail(err, rc, "Allgather(parameter checksums)");
    }
    int nbad = 0;
    for (int r = 1; r < d->size; r++)
        if (all[r] != all[0]) bad[nbad++] = r;
    int status = SP_OK;
    if (nbad) {
        char ranks[256] = "";
        list_ranks(ranks, sizeof ranks, bad, nbad);
        status = sp_fail(err, SP_ERUNTIME,
                         "parameter%s checksum differs from rank 0 on rank%s %s (rank 0 %016llx, "
                         "rank %d %016llx): replicas diverged",
                         with_adam ? "/Adam" : "", nbad > 1 ? "s" : "", ranks,
                         (unsigned long long)all[0], bad[0], (unsigned long long)all[bad[0]]);
    }
    free(all);
    free(bad);
    return status;
}

/* One line of text starting at s, copied into out (quoted, shortened). */
static void quote_line(char *out, size_t cap, const char *s) {
    if (!*s) {
        snprintf(out, cap, "(end of config)");
        return;
    }
    size_t n = strcspn(s, "\n");
    if (n > 96) n = 96;
    snprintf(out, cap, "'%.*s'", (int)n, s);
}

/* Describes the first line where mine differs from ref, or "" when equal. */
static void first_difference(char *out, size_t cap, const char *mine, const char *ref) {
    out[0] = '\0';
    int line = 1;
    const char *a = mine, *b = ref;
    for (;;) {
        size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");
        if (la != lb || memcmp(a, b, la) != 0 || (!a[la]) != (!b[lb])) break;
        if (!a[la]) return; /* both ended together: identical */
        a += la + 1;
        b += lb + 1;
        line++;
    }
    char qa[104], qb[104];
    quote_line(qa, sizeof qa, a);
    quote_line(qb, sizeof qb, b);
    snprintf(out, cap, "config line %d is %s, rank 0 has %s", line, qa, qb);
}

enum { DETAIL = 256 };

int sp_dist_check_agreement(sp_dist *d, const char *config_text, uint64_t data_fingerprint,
                            sp_error *err) {
    size_t len = strlen(config_text);
    uint64_t mine[3] = {sp_fnv1a64(SP_FNV_OFFSET, config_text, len), (uint64_t)len,
                        data_fingerprint};
    uint64_t *all = malloc((size_t)d->size * 3 * sizeof *all);
    int *bad_cfg = malloc((size_t)d->size * sizeof *bad_cfg);
    int *bad_data = malloc((size_t)d->size * sizeof *bad_data);
    char *ref = NULL, *details = NULL;
    int status = SP_OK, rc;
    double t0 = MPI_Wtime();
    if (!all || !bad_cfg || !bad_data) {
        /* Every rank allocates the same sizes, so all fail here together. */
        status = sp_fail(err, SP_ERUNTIME, "out of memory for the start-up agreement");
        goto done;
    }
    rc = MPI_Allgather(mine, 3, MPI_UINT64_T, all, 3, MPI_UINT64_T, d->comm);
    if (rc != MPI_SUCCESS) {
        status = sp_dist_mpi_fail(err, rc, "Allgather(config hashes)");
        goto done;
    }
    int ncfg = 0, ndata = 0;
    for (int r = 1; r < d->size; r++) {
        if (all[3 * r] != all[0] || all[3 * r + 1] != all[1]) bad_cfg[ncfg++] = r;
        if (all[3 * r + 2] != all[2]) bad_data[ndata++] = r;
    }
    if (!ncfg && !ndata) goto done;

    char msg[sizeof err->msg] = "";
    if (ncfg) {
        /* Every rank knows a config differs, so these collectives are entered
         * by all: rank 0's text goes out, each rank finds its first
         * differing line, and the descriptions come back to everyone. */
        size_t ref_len = (size_t)all[1];
        ref = malloc(ref_len + 1);
        details = malloc((size_t)d->size * DETAIL);
        char detail[DETAIL];
        if (!ref || !details) {
            status = sp_fail(err, SP_ERUNTIME, "out of memory comparing configs");
            goto done;
        }
        if (d->rank == 0) memcpy(ref, config_text, ref_len + 1);
        rc = MPI_Bcast(ref, (int)ref_len + 1, MPI_CHAR, 0, d->comm);
        if (rc == MPI_SUCCESS) {
            first_difference(detail, sizeof detail, config_text, ref);
            rc = MPI_Allgather(detail, DETAIL, MPI_CHAR, details, DETAIL, MPI_CHAR, d->comm);
        }
        if (rc != MPI_SUCCESS) {
            status = sp_dist_mpi_fail(err, rc, "comparing configs");
            goto done;
        }
        size_t pos = (size_t)snprintf(msg, sizeof msg, "resolved config differs from rank 0 on rank%s ",
                                      ncfg > 1 ? "s" : "");
        list_ranks(msg, sizeof msg, bad_cfg, ncfg);
        pos = strlen(msg);
        snprintf(msg + pos, sizeof msg - pos, " (rank %d: %.*s)", bad_cfg[0], DETAIL - 1,
                 details + (size_t)bad_cfg[0] * DETAIL);
    }
    if (ndata) {
        size_t pos = strlen(msg);
        pos += (size_t)snprintf(msg + pos, sizeof msg - pos,
                                "%sdataset fingerprint differs from rank 0 on rank%s ",
                                ncfg ? "; " : "", ndata > 1 ? "s" : "");
        list_ranks(msg, sizeof msg, bad_data, ndata);
        pos = strlen(msg);
        snprintf(msg + pos, sizeof msg - pos, " (rank 0 %016llx, rank %d %016llx): not the same data file",
                 (unsigned long long)all[2], bad_data[0], (unsigned long long)all[3 * bad_data[0] + 2]);
    }
    status = sp_fail(err, SP_EINPUT, "%s", msg);
done:
    d->comm_s += MPI_Wtime() - t0;
    free(all);
    free(bad_cfg);
    free(bad_data);
    free(ref);
    free(details);
    return status;
}

/* ---- signals ---- */

static volatile sig_atomic_t stop_signal = 0;

static void on_stop_signal(int sig) { stop_signal = sig; }

int sp_dist_install_signal_handlers(sp_error *err) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    /* Restart interrupted reads: the stop is taken at a step boundary, not
     * by making some I/O call fail half-way. */
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGUSR1, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
        return sp_fail(err, SP_ERUNTIME, "cannot install SIGUSR1/SIGTERM handlers");
    return SP_OK;
}

int sp_dist_signal_pending(void) { return (int)stop_signal; }
void sp_dist_request_stop(int signum) { stop_signal = signum; }
void sp_dist_clear_stop(void) { stop_signal = 0; }

int sp_dist_should_stop(sp_dist *d, int local_failed, sp_dist_verdict *v, sp_error *err) {
    /* MAX of (signal, failed, size - rank if failed) gives in one call the
     * stop decision, whether anyone failed, and the lowest failing rank. */
    int vals[3] = {(int)stop_signal, local_failed ? 1 : 0, local_failed ? d->size - d->rank : 0};
    double t0 = MPI_Wtime();
    int rc = MPI_Allreduce(MPI_IN_PLACE, vals, 3, MPI_INT, MPI_MAX, d->comm);
    d->comm_s += MPI_Wtime() - t0;
    if (rc != MPI_SUCCESS) return sp_dist_mpi_fail(err, rc, "Allreduce(stop flags)");
    v->stop = vals[0];
    v->failed = vals[1];
    v->first_failed = vals[2] ? d->size - vals[2] : -1;
    return SP_OK;
}
