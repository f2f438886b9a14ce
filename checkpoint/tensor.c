/* checkpoint: tensor descriptors, their transfers and checksums through the h5 layer, the
 * format check and file names, shared by saving and loading (see ckpt_private.h). */
#include "ckpt_private.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t omni_ckpt_piece_bytes = (size_t)1 << 30;
size_t omni_ckpt_sum_piece_bytes = (size_t)1 << 30;
ckpt_sum_mode omni_ckpt_sum_mode = CKPT_SUM_CRC32C;

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

omni_h5_rows ckpt_rows(const omni_ckpt_tensor *t)
{
    return (omni_h5_rows){.name = t->name,
                          .mem_type = ckpt_mem_type(t->type),
                          .elem_size = ckpt_type_size(t->type),
                          .rank = t->rank,
                          .dims = t->dims,
                          .row_lo = t->row_lo,
                          .row_hi = t->row_hi,
                          .data = t->data};
}

omni_status ckpt_transfer(MPI_Comm comm, hid_t dset, const omni_ckpt_tensor *t, bool active,
                          bool write, const char *file, omni_h5_sum_kind *sum)
{
    omni_h5_rows r = ckpt_rows(t);
    const bool summing = !write || omni_ckpt_sum_mode == CKPT_SUM_CRC32C;
    size_t piece = omni_ckpt_piece_bytes;
    /* Checksums are taken piece by piece as the transfer passes, right after each piece
     * is read and before it is written (pieces of at most omni_ckpt_sum_piece_bytes). */
    if (summing) {
        /* Without the array (out of memory) the sums are taken after the transfer. */
        r.sums = omni_alloc(omni_h5_slabs(r.rank, r.dims), sizeof *r.sums, "checksums");
        if (r.sums && piece > omni_ckpt_sum_piece_bytes)
            piece = omni_ckpt_sum_piece_bytes;
    }
    omni_status st = omni_h5_transfer(comm, dset, &r, active, write, piece, OMNI_ERR_CKPT, file);
    if (write) {
        /* Collective: entered by every rank whatever its transfer did. */
        if (summing) {
            omni_status sst = omni_h5_sum_write_shared(comm, dset, &r, active && !st, file);
            st = st ? st : sst;
        }
    } else {
        *sum = OMNI_H5_SUM_NONE;
        if (!st && active)
            st = omni_h5_sum_check(dset, &r, sum, OMNI_ERR_CKPT, file);
    }
    omni_free(r.sums);
    return st;
}

omni_status ckpt_check_format(hid_t file, const char *path, int64_t *version)
{
    char *format = NULL;
    if (!H5Aexists(file, "format") ||
        omni_h5_attr_read_str(file, "format", 64, &format, OMNI_ERR_CKPT, path) ||
        strcmp(format, CKPT_FORMAT_NAME)) {
        free(format);
        return omni_fail(OMNI_ERR_CKPT,
                         "%s: not an omnimoe checkpoint (its root has no attribute format = "
                         "\"%s\")",
                         path, CKPT_FORMAT_NAME);
    }
    free(format);
    omni_status st = omni_h5_attr_read_i64(file, "format_version", version, OMNI_ERR_CKPT, path);
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
