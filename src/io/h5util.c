/* HDF5 helpers shared by the checkpoint and metrics code (see h5util.h). */
#include "h5util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sp_h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

typedef struct walk_state {
    char outer[256], inner[256];
} walk_state;

static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *data) {
    walk_state *w = data;
    /* Walked upward: n = 0 is where the failure was detected (the precise
     * reason), the last one is the API call that failed (the context). */
    if (n == 0) snprintf(w->inner, sizeof w->inner, "%s", e->desc ? e->desc : "");
    snprintf(w->outer, sizeof w->outer, "%s", e->desc ? e->desc : "");
    return 0;
}

const char *sp_h5_reason(char *buf, size_t cap) {
    walk_state w = {"", ""};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, &w);
    if (!w.outer[0] && !w.inner[0])
        snprintf(buf, cap, "HDF5 error");
    else if (!strcmp(w.outer, w.inner))
        snprintf(buf, cap, "%s", w.inner);
    else
        snprintf(buf, cap, "%s (%s)", w.outer, w.inner);
    return buf;
}

hid_t sp_h5_fapl(int latest) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) return fapl;
    H5Pset_libver_bounds(fapl, latest ? H5F_LIBVER_LATEST : H5F_LIBVER_V18, H5F_LIBVER_LATEST);
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
#if H5_VERSION_GE(1, 10, 7)
    /* Lock, but carry on where the file system has no locks (some Lustre and
     * NFS mounts) instead of failing every open; HDF5_USE_FILE_LOCKING in
     * the environment still overrides. */
    H5Pset_file_locking(fapl, 1, 1);
#endif
    return fapl;
}

/* Writes a scalar attribute of file type ftype from memory of type mtype. */
static int attr_set(hid_t obj, const char *name, hid_t ftype, hid_t mtype, const void *v) {
    if (H5Aexists(obj, name) > 0 && H5Adelete(obj, name) < 0) return -1;
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = sp < 0 ? -1 : H5Acreate2(obj, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 || H5Awrite(a, mtype, v) < 0 ? -1 : 0;
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}

int sp_h5_attr_set_str(hid_t obj, const char *name, const char *text) {
    /* Variable-length UTF-8: h5py reads it back as a Python str. */
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return -1;
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    const char *p = text ? text : "";
    int rc = attr_set(obj, name, t, t, &p);
    H5Tclose(t);
    return rc;
}

int sp_h5_attr_set_fixed_str(hid_t obj, const char *name, const char *text) {
    const char *p = text ? text : "";
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return -1;
    /* Stored inside the (checksummed) object header, not the global heap. */
    H5Tset_size(t, strlen(p) + 1);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    H5Tset_cset(t, H5T_CSET_UTF8);
    int rc = attr_set(obj, name, t, t, p);
    H5Tclose(t);
    return rc;
}

int sp_h5_attr_set_i64(hid_t obj, const char *name, int64_t v) {
    return attr_set(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
}
int sp_h5_attr_set_u64(hid_t obj, const char *name, uint64_t v) {
    return attr_set(obj, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &v);
}
int sp_h5_attr_set_f64(hid_t obj, const char *name, double v) {
    return attr_set(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
}

int sp_h5_attr_get_str(hid_t obj, const char *name, char **text) {
    *text = NULL;
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t ft = a < 0 ? -1 : H5Aget_type(a);
    int rc = -1;
    if (ft >= 0 && H5Tget_class(ft) == H5T_STRING) {
        if (H5Tis_variable_str(ft) > 0) {
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, H5T_VARIABLE);
            H5Tset_cset(mt, H5Tget_cset(ft));
            char *p = NULL;
            if (H5Aread(a, mt, &p) >= 0 && p) {
                *text = strdup(p);
                H5free_memory(p);
                rc = *text ? 0 : -1;
            }
            H5Tclose(mt);
        } else {
            size_t n = H5Tget_size(ft);
            char *buf = calloc(n + 1, 1);
            if (buf && H5Aread(a, ft, buf) >= 0) {
                *text = buf;
                rc = 0;
            } else {
                free(buf);
            }
        }
    }
    if (ft >= 0) H5Tclose(ft);
    if (a >= 0) H5Aclose(a);
    return rc;
}

static int attr_get_num(hid_t obj, const char *name, hid_t mtype, void *v) {
    if (H5Aexists(obj, name) <= 0) return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a);
    H5T_class_t c = ft < 0 ? H5T_NO_CLASS : H5Tget_class(ft);
    hid_t sp = H5Aget_space(a);
    int scalar = sp >= 0 && H5Sget_simple_extent_npoints(sp) == 1;
    int rc = (c == H5T_INTEGER || c == H5T_FLOAT) && scalar && H5Aread(a, mtype, v) >= 0 ? 0 : -1;
    if (sp >= 0) H5Sclose(sp);
    if (ft >= 0) H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

int sp_h5_attr_get_i64(hid_t obj, const char *name, int64_t *v) {
    return attr_get_num(obj, name, H5T_NATIVE_INT64, v);
}
int sp_h5_attr_get_u64(hid_t obj, const char *name, uint64_t *v) {
    return attr_get_num(obj, name, H5T_NATIVE_UINT64, v);
}
int sp_h5_attr_get_f64(hid_t obj, const char *name, double *v) {
    return attr_get_num(obj, name, H5T_NATIVE_DOUBLE, v);
}
