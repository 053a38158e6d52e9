/* A shared counter across a communicator: the work queue of
 * `supair_dist sweep`, where groups of ranks take the next plan line whenever
 * they finish a trial, without any rank acting as a dedicated master.
 *
 * Built on MPI-3 passive-target RMA (MPI_Fetch_and_op on a window exposed by
 * rank 0), so a group can take a line while rank 0 is busy training in its
 * own group. Creation and destruction are collective over the context. */
#ifndef SUPAIR_DIST_COUNTER_H
#define SUPAIR_DIST_COUNTER_H

#include <stdint.h>

#include "supair/dist.h"
#include "supair/error.h"

typedef struct sp_dist_counter sp_dist_counter;

/* Collective: a counter starting at 0, hosted by rank 0 of d. */
int sp_dist_counter_create(sp_dist *d, sp_dist_counter **out, sp_error *err);
/* Not collective: atomically returns the current value and adds 1. */
int sp_dist_counter_next(sp_dist_counter *c, int64_t *value, sp_error *err);
/* Collective. NULL is a no-op. */
void sp_dist_counter_free(sp_dist_counter *c);

#endif
