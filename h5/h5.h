/*
 * h5 — the one HDF5 helper layer of omnimoe, under both the dataset files (datasets/)
 * and the checkpoints (checkpoint/): error texts, attributes, row transfers (collective
 * in a parallel file), and the checksums that every stored array carries.
 *
 * Checksums. An array of shape [n, ...] is cut along its first dimension into slabs of
 * omni_h5_slab_rows rows: one row each when it has two or more dimensions and n <= 4096
 * (one expert of an expert tensor, so each rank computes and checks the slabs of its own
 * rows, alone), else the whole array as one slab. The array's attribute "crc32c"
 * (uint32 [slabs]) holds the CRC32C (Castagnoli) of each slab's bytes as stored
 * (little-endian), and "crc32c_rows" (int64) the rows per slab. Readers check every slab
 * that lies inside the rows they read. An array with HDF5's Fletcher32 filter (h5py's
 * fletcher32=True) is checked by HDF5 itself as it is read, and counts as checksummed.
 */
#ifndef OMNI_H5_H
#define OMNI_H5_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hdf5.h>

#include "base.h"

#define OMNI_H5_SUM_ATTR      "crc32c"
#define OMNI_H5_SUM_ROWS_ATTR "crc32c_rows"
#define OMNI_H5_MAX_RANK      8

/* ---- errors and paths ---------------------------------------------------------- */

/* The most specific description on the current HDF5 error stack. */
void omni_h5_reason(char *out, size_t len);
/* Whether path "a/b/c" exists below `loc`, each link checked in turn. */
bool omni_h5_path_exists(hid_t loc, const char *path);

/* What omni_h5_list_names found besides the names. */
typedef struct {
    int n;         /* names listed */
    bool overflow; /* the group has more than `max` links */
    bool bad_name; /* a name too long or not omni_valid_name (base.h) stopped the listing */
    char bad[64];  /* that name, its first 60 bytes */
} omni_h5_names;

/* Not collective. The names of the links of group g, in name order, into names[max][len]
 * (a table of named groups: the tasks of a dataset file or a checkpoint). The listing
 * stops at the first name past `max` or not a valid name (l says which). False when HDF5
 * cannot list g. */
bool omni_h5_list_names(hid_t g, char *names, int max, size_t len, omni_h5_names *l);

/* ---- attributes ---------------------------------------------------------------- */

/* Write a scalar attribute of `loc` (collective in a parallel file, the same value on
 * every rank): OMNI_ERR_IO naming the file and attribute. Strings are fixed-length UTF-8. */
omni_status omni_h5_attr_write(hid_t loc, const char *name, hid_t file_type, hid_t mem_type,
                               const void *value, const char *file);
omni_status omni_h5_attr_write_i64(hid_t loc, const char *name, int64_t v, const char *file);
omni_status omni_h5_attr_write_f64(hid_t loc, const char *name, double v, const char *file);
omni_status omni_h5_attr_write_str(hid_t loc, const char *name, const char *s, const char *file);

/* Read a scalar attribute. A missing or malformed one returns `fault` (the caller's
 * status for a bad file: OMNI_ERR_CKPT, OMNI_ERR_DATA) with a message naming the file,
 * the object and the attribute. Not collective. */
omni_status omni_h5_attr_read_i64(hid_t loc, const char *name, int64_t *v, omni_status fault,
                                  const char *file);
/* Any integer or float attribute as a finite double. `present` (may be NULL when
 * required) tells whether an optional one was there. */
omni_status omni_h5_attr_read_num(hid_t loc, const char *name, bool required, double *v,
                                  bool *present, omni_status fault, const char *file);
/* A fixed- or variable-length string, returned malloc'ed and NUL-terminated, at most
 * max_len bytes long. */
omni_status omni_h5_attr_read_str(hid_t loc, const char *name, size_t max_len, char **s,
                                  omni_status fault, const char *file);

/* ---- checksums ----------------------------------------------------------------- */

/* CRC32C of n bytes continuing `crc` (0 to start): crc(A B) = omni_crc32c(crc(A), B). */
uint32_t omni_crc32c(uint32_t crc, const void *p, size_t n);

/* Rows per checksum slab of an array of this shape, and the number of slabs (>= 1). */
int64_t omni_h5_slab_rows(int rank, const int64_t *dims);
int64_t omni_h5_slabs(int rank, const int64_t *dims);

/* Rows [row_lo, row_hi) of an array of shape dims[rank], in memory at `data`, elements
 * of elem_size bytes (the stored, little-endian layout), for a transfer or a checksum. */
typedef struct {
    const char *name; /* for messages: the array's path in its file */
    hid_t mem_type;   /* HDF5 memory type of the elements */
    size_t elem_size;
    int rank;
    const int64_t *dims;
    int64_t row_lo, row_hi;
    void *data;
    /* Optional (NULL: none), an array of omni_h5_slabs() checksums. omni_h5_transfer
     * fills the entries of the slabs inside the rows as each piece passes, while the
     * piece is in cache (before it is written, after it is read), and
     * omni_h5_sum_write_shared and omni_h5_sum_check then use them instead of reading
     * the rows from memory a second time. Valid only after a transfer that succeeded. */
    uint32_t *sums;
} omni_h5_rows;

/* The checksums of the slabs inside r's rows into crc[slabs] (others left as they are;
 * taken from r->sums when it is set).
 * OMNI_ERR_INTERNAL when r's rows cut a slab: a writer must hold whole slabs. */
omni_status omni_h5_sum_rows(const omni_h5_rows *r, uint32_t *crc);

/* Write the checksum attributes of dataset `dset` (collective in a parallel file: every
 * rank passes the same crc[]). */
omni_status omni_h5_sum_write(hid_t dset, int rank, const int64_t *dims, const uint32_t *crc,
                              const char *file);

/* Collective (comm): the checksums of a dataset whose rows were written by several
 * ranks, each `active` one holding whole slabs of r (the writers tiling the array):
 * computed by each writer, combined, then written as attributes on every rank. */
omni_status omni_h5_sum_write_shared(MPI_Comm comm, hid_t dset, const omni_h5_rows *r, bool active,
                                     const char *file);

/* How an array is checksummed. */
typedef enum { OMNI_H5_SUM_NONE, OMNI_H5_SUM_CRC32C, OMNI_H5_SUM_FLETCHER32 } omni_h5_sum_kind;

/* Check rows r (as read) of dataset `dset` against its stored checksums. Not collective.
 * *kind says what was checked (NONE: the array carries no checksum; nothing checked).
 * A mismatch returns `fault`: "FILE: NAME: checksum mismatch in rows [a, b) ...". */
omni_status omni_h5_sum_check(hid_t dset, const omni_h5_rows *r, omni_h5_sum_kind *kind,
                              omni_status fault, const char *file);

/* What omni_h5_verify found. */
typedef struct {
    int64_t datasets;  /* datasets seen */
    int64_t unchecked; /* of them, carrying no checksum */
    char first_unchecked[256];
    double bytes; /* bytes this caller read and checked */
} omni_h5_verify_report;

/* Not collective. Read every dataset below `loc`, slab by slab, and check each against
 * its checksums; this caller reads the slabs s with s % n_shares == share (the ranks of a
 * job share the work). Datasets without checksums are counted, not failed. A mismatch,
 * an unreadable dataset or one too large to be real returns `fault` naming the file and
 * the dataset. */
omni_status omni_h5_verify(hid_t loc, int share, int n_shares, omni_h5_verify_report *rep,
                           omni_status fault, const char *file);

/* CPU seconds (this process's threads) spent on checksums so far: computing them, in
 * transfers and apart, and writing and checking their attributes. For bench_checkpoint,
 * whose save and load times on a shared machine are noisier than the cost it measures. */
extern double omni_h5_sum_cpu_seconds;

/* ---- row transfers ------------------------------------------------------------- */

/*
 * Collective in a parallel file (comm; MPI_COMM_SELF for a serial one): move rows
 * [row_lo, row_hi) of r between memory and dataset `dset` (write or read), in pieces of
 * at most piece_bytes, with collective transfers: every rank makes the same number of
 * calls, with an empty selection when `active` is false or its rows are done. A failed
 * read returns `fault`, a failed write OMNI_ERR_IO. Failures are this rank's (not agreed).
 */
omni_status omni_h5_transfer(MPI_Comm comm, hid_t dset, const omni_h5_rows *r, bool active,
                             bool write, size_t piece_bytes, omni_status fault, const char *file);

#endif /* OMNI_H5_H */
