/* Shared atomic counter over MPI-3 RMA (see dist_counter.h). */
#include <stdlib.h>

#include "dist_internal.h"
#include "supair/dist_counter.h"

struct sp_dist_counter {
    MPI_Win win;
    int64_t *base; /* rank 0's exposed value (MPI_Alloc_mem), NULL elsewhere */
};

int sp_dist_counter_create(sp_dist *d, sp_dist_counter **out, sp_error *err) {
    sp_dist_counter *c = calloc(1, sizeof *c);
    if (!c) return sp_fail(err, SP_ERUNTIME, "out of memory");
    MPI_Aint size = d->rank == 0 ? (MPI_Aint)sizeof(int64_t) : 0;
    int rc = MPI_Win_allocate(size, sizeof(int64_t), MPI_INFO_NULL, d->comm, &c->base, &c->win);
    if (rc != MPI_SUCCESS) {
        free(c);
        return sp_dist_mpi_fail(err, rc, "MPI_Win_allocate (sweep counter)");
    }
    if (d->rank == 0) {
        MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, c->win);
        *c->base = 0;
        MPI_Win_unlock(0, c->win);
    }
    MPI_Barrier(d->comm); /* nobody reads before rank 0 has set 0 */
    *out = c;
    return SP_OK;
}

int sp_dist_counter_next(sp_dist_counter *c, int64_t *value, sp_error *err) {
    const int64_t one = 1;
    int rc = MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, c->win);
    if (rc == MPI_SUCCESS) rc = MPI_Fetch_and_op(&one, value, MPI_INT64_T, 0, 0, MPI_SUM, c->win);
    int rc2 = MPI_Win_unlock(0, c->win);
    if (rc == MPI_SUCCESS) rc = rc2;
    return rc == MPI_SUCCESS ? SP_OK : sp_dist_mpi_fail(err, rc, "MPI_Fetch_and_op (sweep counter)");
}

void sp_dist_counter_free(sp_dist_counter *c) {
    if (!c) return;
    MPI_Win_free(&c->win);
    free(c);
}
