/* checkpoint: HDF5 helpers shared by saving and loading (see ckpt_private.h). */
#include "ckpt_private.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t omni_ckpt_piece_bytes = (size_t)1 << 30;

static const struct {
    const char *name;
    size_t size;
} type_info[] = {
    [OMNI_CKPT_F32] = {"f32", 4},
    [OMNI_CKPT_F64] = {"f64", 8},
    [OMNI_CKPT_I64] = {"i64", 8},
};
_Static_assert(sizeof type_info / sizeof type_info[0] == OMNI_CKPT_TYPE_COUNT,
               "an entry for every checkpoint type");

size_t ckpt_type_size(omni_ckpt_type t)
{
    return type_info[t].size;
}

const char *ckpt_type_name(omni_ckpt_type t)
{
    return type_info[t].name;
}

hid_t ckpt_mem_type(omni_ckpt_type t)
{
    switch (t) {
    case OMNI_CKPT_F64:
        return H5T_NATIVE_DOUBLE;
    case OMNI_CKPT_I64:
        return H5T_NATIVE_INT64;
    default:
        return H5T_NATIVE_FLOAT;
    }
}

hid_t ckpt_file_type(omni_ckpt_type t)
{
    switch (t) {
    case OMNI_CKPT_F64:
        return H5T_IEEE_F64LE;
    case OMNI_CKPT_I64:
        return H5T_STD_I64LE;
    default:
        return H5T_IEEE_F32LE;
    }
}

int64_t ckpt_row_elems(const omni_ckpt_tensor *t)
{
    int64_t n = 1;
    for (int d = 1; d < t->rank; d++)
        n *= t->dims[d];
    return n;
}

int64_t ckpt_elems(const omni_ckpt_tensor *t)
{
    return t->dims[0] * ckpt_row_elems(t);
}

omni_status ckpt_check_descriptor(const omni_ckpt_tensor *t)
{
    if (!t->name || !t->name[0] || t->name[0] == '/' || t->name[strlen(t->name) - 1] == '/' ||
        strstr(t->name, "//"))
        return omni_fail(OMNI_ERR_INTERNAL, "checkpoint tensor with a bad name '%s'",
                         t->name ? t->name : "(null)");
    if ((int)t->type < 0 || t->type >= OMNI_CKPT_TYPE_COUNT)
        return omni_fail(OMNI_ERR_INTERNAL, "checkpoint tensor %s: bad type %d", t->name,
                         (int)t->type);
    if (t->rank < 1 || t->rank > OMNI_CKPT_MAX_RANK)
        return omni_fail(OMNI_ERR_INTERNAL, "checkpoint tensor %s: rank %d, expected 1..%d",
                         t->name, t->rank, OMNI_CKPT_MAX_RANK);
    /* Every dimension positive and the element count (times 8 bytes) far from overflow. */
    int64_t n = 1;
    for (int d = 0; d < t->rank; d++) {
        if (t->dims[d] < 1 || t->dims[d] > (INT64_C(1) << 40) / n)
            return omni_fail(OMNI_ERR_INTERNAL, "checkpoint tensor %s: bad dimension %d: %" PRId64,
                             t->name, d, t->dims[d]);
        n *= t->dims[d];
    }
    if (t->row_lo < 0 || t->row_hi < t->row_lo || t->row_hi > t->dims[0])
        return omni_fail(OMNI_ERR_INTERNAL,
                         "checkpoint tensor %s: rows [%" PRId64 ", %" PRId64
                         ") outside [0, %" PRId64 ")",
                         t->name, t->row_lo, t->row_hi, t->dims[0]);
    if (t->row_hi > t->row_lo && !t->data)
        return omni_fail(OMNI_ERR_INTERNAL, "checkpoint tensor %s: rows but no data", t->name);
    return OMNI_OK;
}

void ckpt_format_dims(char *out, size_t len, int rank, const int64_t *dims)
{
    size_t used = 0;
    out[0] = '\0';
    used += (size_t)snprintf(out, len, "[");
    for (int d = 0; d < rank && used < len; d++)
        used += (size_t)snprintf(out + used, len - used, "%s%" PRId64, d ? ", " : "", dims[d]);
    if (used < len)
        snprintf(out + used, len - used, "]");
}

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

void ckpt_h5_reason(char *out, size_t len)
{
    reason_buf r = {out, len};
    out[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, take_reason, &r);
    if (!out[0])
        snprintf(out, len, "HDF5 gave no reason");
}

omni_status ckpt_transfer(MPI_Comm comm, hid_t dset, const omni_ckpt_tensor *t, bool active,
                          bool write, const char *file)
{
    omni_status st = OMNI_OK;
    const int64_t row_elems = ckpt_row_elems(t);
    const size_t esize = ckpt_type_size(t->type);
    const size_t row_bytes = (size_t)row_elems * esize;
    int64_t rows_per_piece = (int64_t)(omni_ckpt_piece_bytes / row_bytes);
    if (rows_per_piece < 1)
        rows_per_piece = 1; /* a single row beyond the piece size still moves whole */
    const int64_t my_rows = active ? t->row_hi - t->row_lo : 0;
    long long mine = (long long)((my_rows + rows_per_piece - 1) / rows_per_piece), pieces = 0;
    st = omni_mpi_check(MPI_Allreduce(&mine, &pieces, 1, MPI_LONG_LONG, MPI_MAX, comm),
                        "MPI_Allreduce");
    if (st)
        return st;

    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    hid_t fspace = H5Dget_space(dset);
    if (dxpl < 0 || fspace < 0 || H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE) < 0) {
        st = omni_fail(OMNI_ERR_IO, "%s: cannot set up the transfer of %s", file, t->name);
        goto out_close;
    }
    static float dummy; /* a non-NULL buffer for an empty selection */
    char *base = t->data;
    for (long long p = 0; p < pieces; p++) {
        int64_t lo = t->row_lo + p * rows_per_piece;
        int64_t n = 0;
        if (lo < t->row_lo + my_rows)
            n = t->row_lo + my_rows - lo < rows_per_piece ? t->row_lo + my_rows - lo
                                                          : rows_per_piece;
        hsize_t start[OMNI_CKPT_MAX_RANK] = {0}, count[OMNI_CKPT_MAX_RANK] = {0};
        hsize_t melems = (hsize_t)(n > 0 ? n * row_elems : 1);
        hid_t mspace = H5Screate_simple(1, &melems, NULL);
        herr_t rc = mspace < 0 ? -1 : 0;
        if (n > 0) {
            start[0] = (hsize_t)lo;
            count[0] = (hsize_t)n;
            for (int d = 1; d < t->rank; d++)
                count[d] = (hsize_t)t->dims[d];
            if (rc >= 0)
                rc = H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL);
        } else if (rc >= 0) {
            rc = H5Sselect_none(fspace);
            if (rc >= 0)
                rc = H5Sselect_none(mspace);
        }
        /* The collective call is made even when the selection failed, with nothing
         * selected, so the other ranks are not left waiting in it. */
        if (rc < 0 && mspace >= 0) {
            H5Sselect_none(fspace);
            H5Sselect_none(mspace);
        }
        void *buf = n > 0 ? (void *)(base + (size_t)(lo - t->row_lo) * row_bytes) : &dummy;
        herr_t io;
        if (write)
            io = H5Dwrite(dset, ckpt_mem_type(t->type), mspace, fspace, dxpl, buf);
        else
            io = H5Dread(dset, ckpt_mem_type(t->type), mspace, fspace, dxpl, buf);
        if ((io < 0 || rc < 0) && !st) {
            char why[512];
            ckpt_h5_reason(why, sizeof why);
            st = omni_fail(write ? OMNI_ERR_IO : OMNI_ERR_CKPT, "%s: cannot %s tensor %s (%s)",
                           file, write ? "write" : "read", t->name, why);
        }
        if (mspace >= 0)
            H5Sclose(mspace);
    }
out_close:
    if (fspace >= 0)
        H5Sclose(fspace);
    if (dxpl >= 0)
        H5Pclose(dxpl);
    return st;
}

omni_status ckpt_attr_write_i64(hid_t loc, const char *name, int64_t v, const char *file)
{
    omni_status st = OMNI_OK;
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr =
        space < 0 ? -1 : H5Acreate2(loc, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attr < 0 || H5Awrite(attr, H5T_NATIVE_INT64, &v) < 0) {
        char why[512];
        ckpt_h5_reason(why, sizeof why);
        st = omni_fail(OMNI_ERR_IO, "%s: cannot write attribute %s (%s)", file, name, why);
    }
    if (attr >= 0)
        H5Aclose(attr);
    if (space >= 0)
        H5Sclose(space);
    return st;
}

omni_status ckpt_attr_write_f64(hid_t loc, const char *name, double v, const char *file)
{
    omni_status st = OMNI_OK;
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr =
        space < 0 ? -1 : H5Acreate2(loc, name, H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attr < 0 || H5Awrite(attr, H5T_NATIVE_DOUBLE, &v) < 0) {
        char why[512];
        ckpt_h5_reason(why, sizeof why);
        st = omni_fail(OMNI_ERR_IO, "%s: cannot write attribute %s (%s)", file, name, why);
    }
    if (attr >= 0)
        H5Aclose(attr);
    if (space >= 0)
        H5Sclose(space);
    return st;
}

omni_status ckpt_attr_write_str(hid_t loc, const char *name, const char *s, const char *file)
{
    omni_status st = OMNI_OK;
    size_t len = strlen(s);
    hid_t type = H5Tcopy(H5T_C_S1);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = -1;
    if (type >= 0 && space >= 0 && H5Tset_size(type, len ? len : 1) >= 0 &&
        H5Tset_strpad(type, H5T_STR_NULLPAD) >= 0 && H5Tset_cset(type, H5T_CSET_UTF8) >= 0)
        attr = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attr < 0 || H5Awrite(attr, type, len ? s : "") < 0) {
        char why[512];
        ckpt_h5_reason(why, sizeof why);
        st = omni_fail(OMNI_ERR_IO, "%s: cannot write attribute %s (%s)", file, name, why);
    }
    if (attr >= 0)
        H5Aclose(attr);
    if (space >= 0)
        H5Sclose(space);
    if (type >= 0)
        H5Tclose(type);
    return st;
}

/* Open attribute `name` of `loc` if it exists and is a scalar (or one element). */
static omni_status open_attr(hid_t loc, const char *name, hid_t *attr, const char *file)
{
    htri_t exists = H5Aexists(loc, name);
    if (exists <= 0)
        return omni_fail(OMNI_ERR_CKPT, "%s: attribute %s is missing", file, name);
    *attr = H5Aopen(loc, name, H5P_DEFAULT);
    if (*attr < 0)
        return omni_fail(OMNI_ERR_CKPT, "%s: attribute %s is unreadable", file, name);
    hid_t space = H5Aget_space(*attr);
    hssize_t n = space < 0 ? -1 : H5Sget_simple_extent_npoints(space);
    if (space >= 0)
        H5Sclose(space);
    if (n != 1) {
        H5Aclose(*attr);
        return omni_fail(OMNI_ERR_CKPT, "%s: attribute %s is not a single value", file, name);
    }
    return OMNI_OK;
}

omni_status ckpt_attr_read_i64(hid_t loc, const char *name, int64_t *v, const char *file)
{
    hid_t attr;
    omni_status st = open_attr(loc, name, &attr, file);
    if (st)
        return st;
    hid_t type = H5Aget_type(attr);
    if (type < 0 || H5Tget_class(type) != H5T_INTEGER || H5Aread(attr, H5T_NATIVE_INT64, v) < 0)
        st = omni_fail(OMNI_ERR_CKPT, "%s: attribute %s is not an integer", file, name);
    if (type >= 0)
        H5Tclose(type);
    H5Aclose(attr);
    return st;
}

omni_status ckpt_attr_read_f64(hid_t loc, const char *name, double *v, const char *file)
{
    hid_t attr;
    omni_status st = open_attr(loc, name, &attr, file);
    if (st)
        return st;
    hid_t type = H5Aget_type(attr);
    H5T_class_t cls = type < 0 ? H5T_NO_CLASS : H5Tget_class(type);
    if ((cls != H5T_FLOAT && cls != H5T_INTEGER) || H5Aread(attr, H5T_NATIVE_DOUBLE, v) < 0)
        st = omni_fail(OMNI_ERR_CKPT, "%s: attribute %s is not a number", file, name);
    if (type >= 0)
        H5Tclose(type);
    H5Aclose(attr);
    return st;
}

omni_status ckpt_attr_read_str(hid_t loc, const char *name, char **s, const char *file)
{
    hid_t attr;
    omni_status st = open_attr(loc, name, &attr, file);
    if (st)
        return st;
    char *buf = NULL;
    hid_t type = H5Aget_type(attr);
    if (type < 0 || H5Tget_class(type) != H5T_STRING || H5Tis_variable_str(type) != 0) {
        st = omni_fail(OMNI_ERR_CKPT, "%s: attribute %s is not a fixed-length string", file, name);
        goto out_close;
    }
    size_t len = H5Tget_size(type);
    buf = malloc(len + 1);
    if (!buf) {
        st = omni_fail(OMNI_ERR_NOMEM, "%s: out of memory reading attribute %s", file, name);
        goto out_close;
    }
    if (H5Aread(attr, type, buf) < 0) {
        free(buf);
        buf = NULL;
        st = omni_fail(OMNI_ERR_CKPT, "%s: attribute %s is unreadable", file, name);
        goto out_close;
    }
    buf[len] = '\0';
    *s = buf;
out_close:
    if (type >= 0)
        H5Tclose(type);
    H5Aclose(attr);
    return st;
}

bool ckpt_path_exists(hid_t loc, const char *path)
{
    char buf[OMNI_PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return false;
    for (char *p = buf;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (H5Lexists(loc, buf, H5P_DEFAULT) <= 0)
                return false;
            if (c == '\0')
                return true;
            *p = c;
        }
    }
}

omni_status ckpt_check_format(hid_t file, const char *path, int64_t *version)
{
    char *format = NULL;
    if (!H5Aexists(file, "format") || ckpt_attr_read_str(file, "format", &format, path) ||
        strcmp(format, CKPT_FORMAT_NAME)) {
        free(format);
        return omni_fail(OMNI_ERR_CKPT,
                         "%s: not an omnimoe checkpoint (its root has no attribute format = "
                         "\"%s\")",
                         path, CKPT_FORMAT_NAME);
    }
    free(format);
    omni_status st = ckpt_attr_read_i64(file, "format_version", version, path);
    if (st)
        return st;
    if (*version < OMNI_CKPT_FORMAT_OLDEST || *version > OMNI_CKPT_FORMAT)
        return omni_fail(OMNI_ERR_CKPT,
                         "%s: checkpoint format version %" PRId64
                         ", this omnimoe reads versions %d to %d",
                         path, *version, OMNI_CKPT_FORMAT_OLDEST, OMNI_CKPT_FORMAT);
    return OMNI_OK;
}

int64_t ckpt_name_step(const char *name)
{
    if (strncmp(name, "ckpt-", 5))
        return -1;
    const char *p = name + 5;
    int64_t step = 0;
    int digits = 0;
    while (isdigit((unsigned char)*p)) {
        if (step > (INT64_MAX - 9) / 10)
            return -1;
        step = step * 10 + (*p - '0');
        p++;
        digits++;
    }
    if (!digits || strcmp(p, ".h5"))
        return -1;
    return step;
}

void omni_ckpt_file_name(int64_t step, char *out, size_t len)
{
    snprintf(out, len, "ckpt-%08" PRId64 ".h5", step);
}
