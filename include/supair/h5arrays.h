/* Writing a handful of named arrays to a new HDF5 file (src/io): used by
 * `supair_dist eval --dump` for plotting. Written to PATH.tmp.PID and renamed,
 * so a failure never leaves a partial PATH. */
#ifndef SUPAIR_H5ARRAYS_H
#define SUPAIR_H5ARRAYS_H

#include <stdint.h>

#include "supair/error.h"

enum { SP_H5_F32 = 0, SP_H5_I32 = 1, SP_H5_I64 = 2 };

typedef struct sp_h5_array {
    const char *name;   /* dataset path, e.g. "boxes" or "/scenes/boxes" */
    int type;           /* SP_H5_* */
    int ndim;           /* 1..4 */
    int64_t shape[4];
    const void *data;   /* row-major */
} sp_h5_array;

/* attrs: NULL or a NULL-terminated list of key, value string pairs written
 * as root attributes. */
int sp_h5_write_arrays(const char *path, const sp_h5_array *arrays, int n,
                       const char *const *attrs, sp_error *err);

#endif
