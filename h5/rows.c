/* h5: row transfers and the checksums of rows (h5.h). */
#include "h5.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double omni_h5_sum_cpu_seconds;

/* This thread's CPU time in seconds: what the checksums cost, whatever the load. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define SLAB_ROWS_MAX_SLABS 4096

int64_t omni_h5_slab_rows(int rank, const int64_t *dims)
{
    if (rank >= 2 && dims[0] >= 1 && dims[0] <= SLAB_ROWS_MAX_SLABS)
        return 1;
    return dims[0] > 0 ? dims[0] : 1;
}

int64_t omni_h5_slabs(int rank, const int64_t *dims)
{
    int64_t rows = omni_h5_slab_rows(rank, dims);
    int64_t n = (dims[0] + rows - 1) / rows;
    return n > 0 ? n : 1;
}

static size_t row_bytes_of(const omni_h5_rows *r)
{
    size_t b = r->elem_size;
    for (int d = 1; d < r->rank; d++)
        b *= (size_t)r->dims[d];
    return b;
}

omni_status omni_h5_sum_rows(const omni_h5_rows *r, uint32_t *crc)
{
    int64_t rows = omni_h5_slab_rows(r->rank, r->dims);
    if (r->row_hi <= r->row_lo)
        return OMNI_OK;
    if (r->row_lo % rows || (r->row_hi % rows && r->row_hi != r->dims[0]))
        return omni_fail(OMNI_ERR_INTERNAL,
                         "%s: rows [%" PRId64 ", %" PRId64 ") cut a checksum slab of %" PRId64
                         " rows",
                         r->name, r->row_lo, r->row_hi, rows);
    size_t rb = row_bytes_of(r);
    const char *p = r->data;
    for (int64_t lo = r->row_lo; lo < r->row_hi; lo += rows) {
        int64_t n = r->row_hi - lo < rows ? r->row_hi - lo : rows;
        crc[lo / rows] = r->sums
                             ? r->sums[lo / rows]
                             : omni_crc32c(0, p + (size_t)(lo - r->row_lo) * rb, (size_t)n * rb);
    }
    return OMNI_OK;
}

/* Continue the checksums r->sums of the slabs that rows [lo, lo + n) of r fall in, with
 * those rows' bytes (a piece of a transfer, taken in row order). */
static void sum_piece(const omni_h5_rows *r, int64_t lo, int64_t n)
{
    const double t0 = cpu_now();
    const int64_t rows = omni_h5_slab_rows(r->rank, r->dims);
    const size_t rb = row_bytes_of(r);
    const char *base = r->data;
    for (int64_t row = lo; row < lo + n;) {
        int64_t s = row / rows, end = (s + 1) * rows < lo + n ? (s + 1) * rows : lo + n;
        r->sums[s] = omni_crc32c(r->sums[s], base + (size_t)(row - r->row_lo) * rb,
                                 (size_t)(end - row) * rb);
        row = end;
    }
    omni_h5_sum_cpu_seconds += cpu_now() - t0;
}

omni_status omni_h5_sum_write(hid_t dset, int rank, const int64_t *dims, const uint32_t *crc,
                              const char *file)
{
    omni_status st = OMNI_OK;
    hsize_t n = (hsize_t)omni_h5_slabs(rank, dims);
    hid_t space = H5Screate_simple(1, &n, NULL);
    hid_t attr = space < 0 ? -1
                           : H5Acreate2(dset, OMNI_H5_SUM_ATTR, H5T_STD_U32LE, space, H5P_DEFAULT,
                                        H5P_DEFAULT);
    if (attr < 0 || H5Awrite(attr, H5T_NATIVE_UINT32, crc) < 0) {
        char why[512];
        omni_h5_reason(why, sizeof why);
        st = omni_fail(OMNI_ERR_IO, "%s: cannot write the checksums of a dataset (%s)", file, why);
    }
    if (attr >= 0)
        H5Aclose(attr);
    if (space >= 0)
        H5Sclose(space);
    if (!st)
        st = omni_h5_attr_write_i64(dset, OMNI_H5_SUM_ROWS_ATTR, omni_h5_slab_rows(rank, dims),
                                    file);
    return st;
}

static omni_status sum_write_shared(MPI_Comm comm, hid_t dset, const omni_h5_rows *r, bool active,
                                    const char *file)
{
    int64_t n = omni_h5_slabs(r->rank, r->dims);
    uint32_t *mine = omni_alloc(n, sizeof *mine, "checksums");
    uint32_t *all = omni_alloc(n, sizeof *all, "checksums");
    omni_status st = mine && all ? OMNI_OK : OMNI_ERR_NOMEM;
    if (!st) {
        memset(mine, 0, sizeof *mine * (size_t)n);
        if (active)
            st = omni_h5_sum_rows(r, mine);
    }
    /* Each slab has one writer and zeros elsewhere: the XOR of all ranks' arrays is the
     * writers' checksums. Entered by every rank even after a local failure. */
    st = omni_mpi_agree(comm, st);
    if (!st)
        st = omni_mpi_check(MPI_Allreduce(mine, all, (int)n, MPI_UINT32_T, MPI_BXOR, comm),
                            "MPI_Allreduce");
    if (!st)
        st = omni_h5_sum_write(dset, r->rank, r->dims, all, file);
    omni_free(all);
    omni_free(mine);
    return st;
}

omni_status omni_h5_sum_write_shared(MPI_Comm comm, hid_t dset, const omni_h5_rows *r, bool active,
                                     const char *file)
{
    const double t0 = cpu_now();
    omni_status st = sum_write_shared(comm, dset, r, active, file);
    omni_h5_sum_cpu_seconds += cpu_now() - t0;
    return st;
}

/* Whether dataset `dset` has HDF5's Fletcher32 filter. */
static bool has_fletcher32(hid_t dset)
{
    hid_t dcpl = H5Dget_create_plist(dset);
    if (dcpl < 0)
        return false;
    unsigned flags;
    size_t nelem = 0;
    unsigned int cd[4];
    char name[32];
    bool has = H5Pget_filter_by_id2(dcpl, H5Z_FILTER_FLETCHER32, &flags, &nelem, cd, sizeof name,
                                    name, NULL) >= 0;
    H5Pclose(dcpl);
    return has;
}

/* Whether memory type `mt` holds elements as the file type `ft` stores them (the
 * checksums cover stored bytes; omnimoe writes little-endian types it reads natively). */
static bool same_layout(hid_t ft, hid_t mt)
{
    H5T_class_t cls = H5Tget_class(ft);
    if (cls != H5Tget_class(mt) || H5Tget_size(ft) != H5Tget_size(mt) ||
        H5Tget_order(ft) != H5T_ORDER_LE || H5Tget_order(mt) != H5T_ORDER_LE)
        return false;
    return cls != H5T_INTEGER || H5Tget_sign(ft) == H5Tget_sign(mt);
}

static omni_status sum_check(hid_t dset, const omni_h5_rows *r, omni_h5_sum_kind *kind,
                             omni_status fault, const char *file)
{
    *kind = OMNI_H5_SUM_NONE;
    if (H5Aexists(dset, OMNI_H5_SUM_ATTR) <= 0) {
        if (has_fletcher32(dset))
            *kind = OMNI_H5_SUM_FLETCHER32; /* HDF5 checked it while reading */
        return OMNI_OK;
    }
    int64_t rows = 0, slabs = omni_h5_slabs(r->rank, r->dims);
    omni_status st = omni_h5_attr_read_i64(dset, OMNI_H5_SUM_ROWS_ATTR, &rows, fault, file);
    if (st)
        return st;
    if (rows != omni_h5_slab_rows(r->rank, r->dims))
        return omni_fail(fault,
                         "%s: %s: attribute %s = %" PRId64 ", expected %" PRId64
                         " for its shape (damaged, or not written by omnimoe)",
                         file, r->name, OMNI_H5_SUM_ROWS_ATTR, rows,
                         omni_h5_slab_rows(r->rank, r->dims));
    hid_t attr = H5Aopen(dset, OMNI_H5_SUM_ATTR, H5P_DEFAULT);
    hid_t space = attr < 0 ? -1 : H5Aget_space(attr);
    hid_t atype = attr < 0 ? -1 : H5Aget_type(attr);
    hid_t ftype = H5Dget_type(dset);
    uint32_t *crc = NULL;
    if (space < 0 || atype < 0 || H5Tget_class(atype) != H5T_INTEGER ||
        H5Sget_simple_extent_ndims(space) != 1 || H5Sget_simple_extent_npoints(space) != slabs) {
        st = omni_fail(fault, "%s: %s: attribute %s is not %" PRId64 " checksums", file, r->name,
                       OMNI_H5_SUM_ATTR, slabs);
        goto out;
    }
    if (ftype < 0 || !same_layout(ftype, r->mem_type)) {
        st = omni_fail(fault,
                       "%s: %s: has checksums but is stored in another type than omnimoe "
                       "writes (converted by a tool?); remove its attribute %s to read it "
                       "unchecked",
                       file, r->name, OMNI_H5_SUM_ATTR);
        goto out;
    }
    crc = omni_alloc(slabs, sizeof *crc, "checksums");
    if (!crc) {
        st = OMNI_ERR_NOMEM;
        goto out;
    }
    if (H5Aread(attr, H5T_NATIVE_UINT32, crc) < 0) {
        st =
            omni_fail(fault, "%s: %s: attribute %s is unreadable", file, r->name, OMNI_H5_SUM_ATTR);
        goto out;
    }
    size_t rb = row_bytes_of(r);
    const char *p = r->data;
    /* Every slab that lies whole inside the rows read. */
    int64_t first = (r->row_lo + rows - 1) / rows;
    for (int64_t s = first; s * rows < r->row_hi; s++) {
        int64_t lo = s * rows, hi = lo + rows < r->dims[0] ? lo + rows : r->dims[0];
        if (hi > r->row_hi)
            break;
        uint32_t c =
            r->sums ? r->sums[s]
                    : omni_crc32c(0, p + (size_t)(lo - r->row_lo) * rb, (size_t)(hi - lo) * rb);
        if (c != crc[s]) {
            st = omni_fail(fault,
                           "%s: %s: checksum mismatch in rows [%" PRId64 ", %" PRId64
                           ") (stored crc32c %08x, read %08x): the file is corrupt",
                           file, r->name, lo, hi, crc[s], c);
            goto out;
        }
    }
    *kind = OMNI_H5_SUM_CRC32C;
out:
    omni_free(crc);
    if (ftype >= 0)
        H5Tclose(ftype);
    if (atype >= 0)
        H5Tclose(atype);
    if (space >= 0)
        H5Sclose(space);
    if (attr >= 0)
        H5Aclose(attr);
    return st;
}

omni_status omni_h5_sum_check(hid_t dset, const omni_h5_rows *r, omni_h5_sum_kind *kind,
                              omni_status fault, const char *file)
{
    const double t0 = cpu_now();
    omni_status st = sum_check(dset, r, kind, fault, file);
    omni_h5_sum_cpu_seconds += cpu_now() - t0;
    return st;
}

omni_status omni_h5_transfer(MPI_Comm comm, hid_t dset, const omni_h5_rows *r, bool active,
                             bool write, size_t piece_bytes, omni_status fault, const char *file)
{
    omni_status st = OMNI_OK;
    const size_t row_bytes = row_bytes_of(r);
    int64_t row_elems = (int64_t)(row_bytes / r->elem_size);
    int64_t rows_per_piece = row_bytes ? (int64_t)(piece_bytes / row_bytes) : 1;
    if (rows_per_piece < 1)
        rows_per_piece = 1; /* a single row beyond the piece size still moves whole */
    const int64_t my_rows = active ? r->row_hi - r->row_lo : 0;
    long long mine = (long long)((my_rows + rows_per_piece - 1) / rows_per_piece), pieces = 0;
    st = omni_mpi_check(MPI_Allreduce(&mine, &pieces, 1, MPI_LONG_LONG, MPI_MAX, comm),
                        "MPI_Allreduce");
    if (st)
        return st;

    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    hid_t fspace = H5Dget_space(dset);
    int size = 1;
    MPI_Comm_size(comm, &size);
    if (dxpl < 0 || fspace < 0 || (size > 1 && H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE) < 0)) {
        st = omni_fail(OMNI_ERR_IO, "%s: cannot set up the transfer of %s", file, r->name);
        goto out_close;
    }
    static float dummy; /* a non-NULL buffer for an empty selection */
    char *base = r->data;
    if (r->sums && my_rows > 0) {
        const int64_t rows = omni_h5_slab_rows(r->rank, r->dims);
        for (int64_t s = r->row_lo / rows; s * rows < r->row_hi; s++)
            r->sums[s] = 0;
    }
    for (long long p = 0; p < pieces; p++) {
        int64_t lo = r->row_lo + p * rows_per_piece;
        int64_t n = 0;
        if (lo < r->row_lo + my_rows)
            n = r->row_lo + my_rows - lo < rows_per_piece ? r->row_lo + my_rows - lo
                                                          : rows_per_piece;
        hsize_t start[OMNI_H5_MAX_RANK] = {0}, count[OMNI_H5_MAX_RANK] = {0};
        hsize_t melems = (hsize_t)(n > 0 ? n * row_elems : 1);
        hid_t mspace = H5Screate_simple(1, &melems, NULL);
        herr_t rc = mspace < 0 ? -1 : 0;
        if (n > 0) {
            start[0] = (hsize_t)lo;
            count[0] = (hsize_t)n;
            for (int d = 1; d < r->rank; d++)
                count[d] = (hsize_t)r->dims[d];
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
        void *buf = n > 0 ? (void *)(base + (size_t)(lo - r->row_lo) * row_bytes) : &dummy;
        herr_t io;
        if (write) {
            if (r->sums && n > 0)
                sum_piece(r, lo, n);
            io = H5Dwrite(dset, r->mem_type, mspace, fspace, dxpl, buf);
        } else {
            io = H5Dread(dset, r->mem_type, mspace, fspace, dxpl, buf);
            if (r->sums && n > 0 && io >= 0)
                sum_piece(r, lo, n);
        }
        if ((io < 0 || rc < 0) && !st) {
            char why[512];
            omni_h5_reason(why, sizeof why);
            st = omni_fail(write ? OMNI_ERR_IO : fault, "%s: cannot %s %s (%s)", file,
                           write ? "write" : "read", r->name, why);
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
