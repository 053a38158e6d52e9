/* The MPI context shared by src/dist's files (private: only src/dist includes
 * mpi.h, so the public dist.h keeps sp_dist opaque). */
#ifndef SUPAIR_DIST_INTERNAL_H
#define SUPAIR_DIST_INTERNAL_H

#include <mpi.h>

#include "supair/dist.h"

struct sp_dist {
    MPI_Comm comm; /* owned: freed by sp_dist_free */
    MPI_Comm node; /* owned: this rank's node (shared memory) within comm */
    int rank, size;
    int local_rank, local_size;
    size_t bucket_bytes;
    double comm_s; /* exposed communication since the last sp_dist_comm_take */
    /* the overlapped allreduce in flight */
    int active, order;
    float *buf;
    long n, nb, started;
    MPI_Request *reqs; /* reqs[k] = the k-th started bucket */
    long reqs_cap;
};

/* sp_fail with MPI's own description of rc. */
int sp_dist_mpi_fail(sp_error *err, int rc, const char *what);

/* MPI-3 shared windows over comm (ranks of one node): allocate this rank's
 * bytes (noncontig: each rank's part allocated apart, for first-touch NUMA
 * placement), errors returned, inside one lock_all epoch; a hand-over makes
 * every rank's stores visible to all (sync, barrier, sync; its wait added
 * to *comm_s when not NULL); free ends the epoch (a no-op after
 * MPI_Finalize or on MPI_WIN_NULL). */
int sp_dist_win_allocate(MPI_Comm comm, size_t bytes, int noncontig, MPI_Win *win, void **base,
                         const char *what, sp_error *err);
int sp_dist_win_handover(MPI_Win win, MPI_Comm comm, double *comm_s, const char *what,
                         sp_error *err);
void sp_dist_win_free(MPI_Win *win);

#endif
