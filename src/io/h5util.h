/* HDF5 helpers shared by src/io's checkpoint and metrics files (private to
 * src/io): quiet error stacks turned into one-line reasons, string and
 * scalar attributes, file access properties. */
#ifndef SUPAIR_IO_H5UTIL_H
#define SUPAIR_IO_H5UTIL_H

#include <hdf5.h>
#include <stdint.h>

/* Turns off HDF5's automatic error-stack printing (idempotent): library
 * failures become one sp_error line instead of a page on stderr. */
void sp_h5_quiet(void);

/* Describes the HDF5 error stack left by the call that just failed (outermost
 * and innermost messages), e.g. "unable to open file (truncated file: eof =
 * 1024, ...)". Returns buf. */
const char *sp_h5_reason(char *buf, size_t cap);

/* File access properties: SWMR-capable latest format when latest, else
 * formats from 1.8 on (checksummed object headers); objects closed with the
 * file; file locks ignored where the file system lacks them. */
hid_t sp_h5_fapl(int latest);

/* Attributes on obj (replacing an existing one). Return 0 or -1. */
int sp_h5_attr_set_str(hid_t obj, const char *name, const char *text);
/* Fixed-length text: kept in the checksummed object header, where HDF5
 * verifies it on open. Variable-length text lives in the global heap, which
 * has no checksum (a flipped bit there crashes HDF5 1.10 on read), so
 * checkpoints use this; metrics keep variable length for h5py's str. */
int sp_h5_attr_set_fixed_str(hid_t obj, const char *name, const char *text);
int sp_h5_attr_set_i64(hid_t obj, const char *name, int64_t v);
int sp_h5_attr_set_u64(hid_t obj, const char *name, uint64_t v);
int sp_h5_attr_set_f64(hid_t obj, const char *name, double v);

/* Reads attributes, converting any integer/float type. Return 0 or -1
 * (missing or wrong class). *text is malloc'd (fixed or variable length). */
int sp_h5_attr_get_str(hid_t obj, const char *name, char **text);
int sp_h5_attr_get_i64(hid_t obj, const char *name, int64_t *v);
int sp_h5_attr_get_u64(hid_t obj, const char *name, uint64_t *v);
int sp_h5_attr_get_f64(hid_t obj, const char *name, double *v);

#endif
