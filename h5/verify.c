/* h5: reading every dataset of a file to check its checksums (omni_h5_verify, h5.h). */
#include "h5.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* The largest slab read at once: a file claiming more is damaged or not ours. */
#define VERIFY_SLAB_MAX ((int64_t)1 << 32)
/* The piece read at once from an array without CRC32C slabs. */
#define VERIFY_PIECE ((int64_t)16 << 20)

typedef struct {
    int share, n_shares;
    omni_h5_verify_report *rep;
    omni_status fault;
    const char *file;
    omni_status st;
} walk;

static omni_status verify_dataset(walk *w, hid_t dset, const char *name)
{
    omni_status st = OMNI_OK;
    hid_t space = H5Dget_space(dset), ftype = H5Dget_type(dset), mtype = -1;
    int rank = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
    hsize_t hd[OMNI_H5_MAX_RANK];
    int64_t dims[OMNI_H5_MAX_RANK];
    void *buf = NULL;
    w->rep->datasets++;
    if (ftype < 0 || rank < 0 || rank > OMNI_H5_MAX_RANK ||
        H5Sget_simple_extent_dims(space, hd, NULL) != rank) {
        st = omni_fail(w->fault, "%s: dataset /%s is unreadable", w->file, name);
        goto out;
    }
    if (rank == 0) { /* a scalar: one row of one element */
        rank = 1;
        hd[0] = 1;
    }
    H5T_class_t cls = H5Tget_class(ftype);
    if (cls != H5T_INTEGER && cls != H5T_FLOAT) {
        goto out; /* strings and compounds: omnimoe stores no such arrays */
    }
    mtype = H5Tget_native_type(ftype, H5T_DIR_ASCEND);
    size_t esize = mtype < 0 ? 0 : H5Tget_size(mtype);
    int64_t row_elems = 1;
    for (int d = 0; d < rank; d++) {
        dims[d] = (int64_t)hd[d];
        if (hd[d] > (hsize_t)1 << 40 ||
            (d > 0 && hd[d] > 0 && row_elems > (INT64_C(1) << 40) / (int64_t)hd[d])) {
            st = omni_fail(w->fault, "%s: dataset /%s claims an implausible size", w->file, name);
            goto out;
        }
        if (d > 0)
            row_elems *= dims[d];
    }
    if (esize == 0) {
        st = omni_fail(w->fault, "%s: dataset /%s has an unreadable type", w->file, name);
        goto out;
    }
    int64_t rows = omni_h5_slab_rows(rank, dims), slabs = omni_h5_slabs(rank, dims);
    int64_t row_bytes = row_elems * (int64_t)esize;
    if (dims[0] == 0 || row_bytes == 0)
        goto out;
    if (H5Aexists(dset, OMNI_H5_SUM_ATTR) <= 0) {
        /* No CRC32C slabs (Fletcher32 chunks, or nothing): read it in pieces of about
         * VERIFY_PIECE bytes, each checked by HDF5 as it is read. */
        rows = VERIFY_PIECE / row_bytes > 0 ? VERIFY_PIECE / row_bytes : 1;
        slabs = (dims[0] + rows - 1) / rows;
    }
    if (rows > VERIFY_SLAB_MAX / row_bytes) {
        st = omni_fail(w->fault,
                       "%s: dataset /%s claims %" PRId64 " rows of %" PRId64
                       " bytes, too large to be real",
                       w->file, name, dims[0], row_bytes);
        goto out;
    }
    buf = omni_alloc(rows * row_elems, esize, name);
    if (!buf) {
        st = OMNI_ERR_NOMEM;
        goto out;
    }
    omni_h5_sum_kind kind = OMNI_H5_SUM_NONE;
    for (int64_t s = 0; s < slabs && !st; s++) {
        if (s % w->n_shares != w->share)
            continue;
        int64_t lo = s * rows, hi = lo + rows < dims[0] ? lo + rows : dims[0];
        omni_h5_rows r = {.name = name,
                          .mem_type = mtype,
                          .elem_size = esize,
                          .rank = rank,
                          .dims = dims,
                          .row_lo = lo,
                          .row_hi = hi,
                          .data = buf};
        hsize_t start[OMNI_H5_MAX_RANK] = {0}, count[OMNI_H5_MAX_RANK];
        for (int d = 0; d < rank; d++)
            count[d] = hd[d];
        start[0] = (hsize_t)lo;
        count[0] = (hsize_t)(hi - lo);
        hsize_t n = (hsize_t)((hi - lo) * row_elems);
        hid_t ms = H5Screate_simple(1, &n, NULL);
        hid_t fs = H5Dget_space(dset);
        bool ok = ms >= 0 && fs >= 0;
        if (ok && H5Sget_simple_extent_ndims(fs) > 0)
            ok = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0;
        if (!ok || H5Dread(dset, mtype, ms, fs, H5P_DEFAULT, buf) < 0) {
            char why[512];
            omni_h5_reason(why, sizeof why);
            st = omni_fail(w->fault,
                           "%s: dataset /%s: cannot read rows [%" PRId64 ", %" PRId64 ") (%s)",
                           w->file, name, lo, hi, why);
        }
        if (ms >= 0)
            H5Sclose(ms);
        if (fs >= 0)
            H5Sclose(fs);
        if (!st)
            st = omni_h5_sum_check(dset, &r, &kind, w->fault, w->file);
        if (!st)
            w->rep->bytes += (double)((hi - lo) * row_bytes);
    }
    if (!st && H5Aexists(dset, OMNI_H5_SUM_ATTR) <= 0) {
        hid_t dcpl = H5Dget_create_plist(dset);
        unsigned flags;
        size_t nelem = 0;
        bool fletcher = dcpl >= 0 && H5Pget_filter_by_id2(dcpl, H5Z_FILTER_FLETCHER32, &flags,
                                                          &nelem, NULL, 0, NULL, NULL) >= 0;
        if (dcpl >= 0)
            H5Pclose(dcpl);
        if (!fletcher && !w->rep->unchecked++)
            snprintf(w->rep->first_unchecked, sizeof w->rep->first_unchecked, "/%s", name);
    }
out:
    omni_free(buf);
    if (mtype >= 0)
        H5Tclose(mtype);
    if (ftype >= 0)
        H5Tclose(ftype);
    if (space >= 0)
        H5Sclose(space);
    return st;
}

static herr_t visit(hid_t loc, const char *name, const H5O_info_t *info, void *data)
{
    walk *w = data;
    if (info->type != H5O_TYPE_DATASET)
        return 0;
    hid_t dset = H5Dopen2(loc, name, H5P_DEFAULT);
    if (dset < 0) {
        w->st = omni_fail(w->fault, "%s: dataset /%s cannot be opened", w->file, name);
        return -1;
    }
    w->st = verify_dataset(w, dset, name);
    H5Dclose(dset);
    return w->st ? -1 : 0;
}

omni_status omni_h5_verify(hid_t loc, int share, int n_shares, omni_h5_verify_report *rep,
                           omni_status fault, const char *file)
{
    memset(rep, 0, sizeof *rep);
    walk w = {share, n_shares > 0 ? n_shares : 1, rep, fault, file, OMNI_OK};
    herr_t rc = H5Ovisit2(loc, H5_INDEX_NAME, H5_ITER_INC, visit, &w, H5O_INFO_BASIC);
    if (w.st)
        return w.st;
    if (rc < 0)
        return omni_fail(fault, "%s: cannot walk the file's objects (damaged?)", file);
    return OMNI_OK;
}
