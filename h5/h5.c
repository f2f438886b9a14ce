/* h5: error texts, paths and attributes (h5.h). */
#include "h5.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *out;
    size_t len;
} reason_buf;

static herr_t take_reason(unsigned n, const H5E_error2_t *err, void *data)
{
    (void)n;
    reason_buf *r = data;
    /* Walking upward from the innermost frame: keep the first non-empty description. */
    if (!r->out[0] && err->desc && err->desc[0])
        snprintf(r->out, r->len, "%s", err->desc);
    return 0;
}

void omni_h5_reason(char *out, size_t len)
{
    reason_buf r = {out, len};
    out[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, take_reason, &r);
    if (!out[0])
        snprintf(out, len, "HDF5 gave no reason");
}

bool omni_h5_path_exists(hid_t loc, const char *path)
{
    char buf[1024];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return false;
    for (char *p = buf;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (p > buf && H5Lexists(loc, buf, H5P_DEFAULT) <= 0)
                return false;
            if (c == '\0')
                return true;
            *p = c;
        }
    }
}

typedef struct {
    char *names;
    int max;
    size_t len;
    omni_h5_names *l;
} name_walk;

static herr_t take_name(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    (void)g;
    (void)info;
    name_walk *w = data;
    omni_h5_names *l = w->l;
    if (l->n == w->max) {
        l->overflow = true;
        return 1;
    }
    if (strlen(name) >= w->len || !omni_valid_name(name)) {
        l->bad_name = true;
        snprintf(l->bad, sizeof l->bad, "%.60s", name);
        return 1;
    }
    snprintf(w->names + (size_t)l->n++ * w->len, w->len, "%s", name);
    return 0;
}

bool omni_h5_list_names(hid_t g, char *names, int max, size_t len, omni_h5_names *l)
{
    *l = (omni_h5_names){0};
    name_walk w = {names, max, len, l};
    return H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, take_name, &w) >= 0;
}

/* "/tasks/qa/kind": the attribute's full name, for messages. */
static void attr_path(hid_t loc, const char *name, char *out, size_t len)
{
    char obj[512] = "";
    if (H5Iget_name(loc, obj, sizeof obj) <= 0)
        obj[0] = '\0';
    size_t n = strlen(obj);
    snprintf(out, len, "%s%s%s", obj, n && obj[n - 1] == '/' ? "" : "/", name);
}

omni_status omni_h5_attr_write(hid_t loc, const char *name, hid_t file_type, hid_t mem_type,
                               const void *value, const char *file)
{
    omni_status st = OMNI_OK;
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = space < 0 ? -1 : H5Acreate2(loc, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attr < 0 || H5Awrite(attr, mem_type, value) < 0) {
        char why[512], where[600];
        omni_h5_reason(why, sizeof why);
        attr_path(loc, name, where, sizeof where);
        st = omni_fail(OMNI_ERR_IO, "%s: cannot write attribute %s (%s)", file, where, why);
    }
    if (attr >= 0)
        H5Aclose(attr);
    if (space >= 0)
        H5Sclose(space);
    return st;
}

omni_status omni_h5_attr_write_i64(hid_t loc, const char *name, int64_t v, const char *file)
{
    return omni_h5_attr_write(loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v, file);
}

omni_status omni_h5_attr_write_f64(hid_t loc, const char *name, double v, const char *file)
{
    return omni_h5_attr_write(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v, file);
}

omni_status omni_h5_attr_write_str(hid_t loc, const char *name, const char *s, const char *file)
{
    size_t len = strlen(s);
    hid_t type = H5Tcopy(H5T_C_S1);
    if (type < 0 || H5Tset_size(type, len ? len : 1) < 0 ||
        H5Tset_strpad(type, H5T_STR_NULLPAD) < 0 || H5Tset_cset(type, H5T_CSET_UTF8) < 0) {
        if (type >= 0)
            H5Tclose(type);
        return omni_fail(OMNI_ERR_IO, "%s: cannot make the type of attribute %s", file, name);
    }
    omni_status st = omni_h5_attr_write(loc, name, type, type, len ? s : "", file);
    H5Tclose(type);
    return st;
}

/* Open attribute `name` of `loc`, present and holding one value. */
static omni_status open_attr(hid_t loc, const char *name, bool required, hid_t *attr,
                             omni_status fault, const char *file)
{
    char where[600];
    *attr = -1;
    if (H5Aexists(loc, name) <= 0) {
        if (!required)
            return OMNI_OK;
        attr_path(loc, name, where, sizeof where);
        return omni_fail(fault, "%s: missing attribute %s", file, where);
    }
    *attr = H5Aopen(loc, name, H5P_DEFAULT);
    hid_t space = *attr < 0 ? -1 : H5Aget_space(*attr);
    hssize_t n = space < 0 ? -1 : H5Sget_simple_extent_npoints(space);
    if (space >= 0)
        H5Sclose(space);
    if (n != 1) {
        if (*attr >= 0)
            H5Aclose(*attr);
        *attr = -1;
        attr_path(loc, name, where, sizeof where);
        return omni_fail(fault, "%s: attribute %s is not a single value", file, where);
    }
    return OMNI_OK;
}

omni_status omni_h5_attr_read_i64(hid_t loc, const char *name, int64_t *v, omni_status fault,
                                  const char *file)
{
    hid_t attr;
    omni_status st = open_attr(loc, name, true, &attr, fault, file);
    if (st)
        return st;
    hid_t type = H5Aget_type(attr);
    if (type < 0 || H5Tget_class(type) != H5T_INTEGER || H5Aread(attr, H5T_NATIVE_INT64, v) < 0) {
        char where[600];
        attr_path(loc, name, where, sizeof where);
        st = omni_fail(fault, "%s: attribute %s is not an integer", file, where);
    }
    if (type >= 0)
        H5Tclose(type);
    H5Aclose(attr);
    return st;
}

omni_status omni_h5_attr_read_num(hid_t loc, const char *name, bool required, double *v,
                                  bool *present, omni_status fault, const char *file)
{
    if (present)
        *present = false;
    hid_t attr;
    omni_status st = open_attr(loc, name, required, &attr, fault, file);
    if (st || attr < 0)
        return st;
    char where[600];
    hid_t type = H5Aget_type(attr);
    H5T_class_t cls = type < 0 ? H5T_NO_CLASS : H5Tget_class(type);
    if (cls != H5T_INTEGER && cls != H5T_FLOAT) {
        attr_path(loc, name, where, sizeof where);
        st = omni_fail(fault, "%s: attribute %s is not a number", file, where);
    } else if (H5Aread(attr, H5T_NATIVE_DOUBLE, v) < 0 || !isfinite(*v)) {
        attr_path(loc, name, where, sizeof where);
        st = omni_fail(fault, "%s: attribute %s cannot be read as a finite number", file, where);
    }
    if (type >= 0)
        H5Tclose(type);
    H5Aclose(attr);
    if (!st && present)
        *present = true;
    return st;
}

omni_status omni_h5_attr_read_str(hid_t loc, const char *name, size_t max_len, char **s,
                                  omni_status fault, const char *file)
{
    *s = NULL;
    hid_t attr;
    omni_status st = open_attr(loc, name, true, &attr, fault, file);
    if (st)
        return st;
    char where[600];
    attr_path(loc, name, where, sizeof where);
    char *buf = NULL;
    hid_t type = H5Aget_type(attr), mt = -1;
    if (type < 0 || H5Tget_class(type) != H5T_STRING) {
        st = omni_fail(fault, "%s: attribute %s is not a string", file, where);
    } else if (H5Tis_variable_str(type) > 0) {
        char *v = NULL;
        mt = H5Tcopy(H5T_C_S1);
        if (mt < 0 || H5Tset_size(mt, H5T_VARIABLE) < 0 || H5Tset_cset(mt, H5Tget_cset(type)) < 0 ||
            H5Aread(attr, mt, &v) < 0 || !v)
            st = omni_fail(fault, "%s: attribute %s cannot be read", file, where);
        else if (strlen(v) > max_len)
            st = omni_fail(fault, "%s: attribute %s is too long (over %zu bytes)", file, where,
                           max_len);
        else if (!(buf = strdup(v)))
            st = omni_fail(OMNI_ERR_NOMEM, "%s: out of memory reading attribute %s", file, where);
        if (v)
            H5free_memory(v);
    } else {
        size_t len = H5Tget_size(type);
        if (len == 0 || len > max_len)
            st = omni_fail(fault, "%s: attribute %s is too long (over %zu bytes)", file, where,
                           max_len);
        else if (!(buf = calloc(1, len + 1)))
            st = omni_fail(OMNI_ERR_NOMEM, "%s: out of memory reading attribute %s", file, where);
        else if (H5Aread(attr, type, buf) < 0)
            st = omni_fail(fault, "%s: attribute %s cannot be read", file, where);
    }
    if (st) {
        free(buf);
        buf = NULL;
    }
    *s = buf;
    if (mt >= 0)
        H5Tclose(mt);
    if (type >= 0)
        H5Tclose(type);
    H5Aclose(attr);
    return st;
}
