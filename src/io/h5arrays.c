/* Named arrays into a new HDF5 file, atomically (see h5arrays.h). */
#include "supair/h5arrays.h"

#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static hid_t mem_type(int type) {
    return type == SP_H5_I32 ? H5T_NATIVE_INT32 : type == SP_H5_I64 ? H5T_NATIVE_INT64 : H5T_NATIVE_FLOAT;
}

static int write_string_attr(hid_t obj, const char *key, const char *val) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(val) + 1);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, key, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t st = a < 0 ? -1 : H5Awrite(a, t, val);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return st < 0 ? -1 : 0;
}

int sp_h5_write_arrays(const char *path, const sp_h5_array *arrays, int n,
                       const char *const *attrs, sp_error *err) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        H5Pclose(lcpl);
        return sp_fail(err, SP_EINPUT, "%s: cannot create file", path);
    }
    int rc = SP_OK;
    for (int i = 0; i < n && !rc; i++) {
        const sp_h5_array *a = &arrays[i];
        hsize_t dims[4];
        for (int d = 0; d < a->ndim; d++) dims[d] = (hsize_t)a->shape[d];
        hid_t sp = H5Screate_simple(a->ndim, dims, NULL);
        hid_t ds = H5Dcreate2(f, a->name, mem_type(a->type), sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
        if (ds < 0 || H5Dwrite(ds, mem_type(a->type), H5S_ALL, H5S_ALL, H5P_DEFAULT, a->data) < 0)
            rc = sp_fail(err, SP_ERUNTIME, "%s: cannot write dataset %s", path, a->name);
        if (ds >= 0) H5Dclose(ds);
        H5Sclose(sp);
    }
    for (int i = 0; !rc && attrs && attrs[i]; i += 2)
        if (write_string_attr(f, attrs[i], attrs[i + 1]))
            rc = sp_fail(err, SP_ERUNTIME, "%s: cannot write attribute %s", path, attrs[i]);
    H5Pclose(lcpl);
    if (H5Fclose(f) < 0 && !rc) rc = sp_fail(err, SP_ERUNTIME, "%s: cannot close", path);
    if (!rc && rename(tmp, path))
        rc = sp_fail(err, SP_EINPUT, "%s: cannot write: %s", path, strerror(errno));
    if (rc) unlink(tmp);
    return rc;
}
