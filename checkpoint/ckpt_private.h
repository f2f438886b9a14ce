/*
 * checkpoint, private: what save.c and load.c share (types, tensor transfers through the
 * h5 layer, the format check) and the names of files in a checkpoint directory.
 */
#ifndef OMNI_CKPT_PRIVATE_H
#define OMNI_CKPT_PRIVATE_H

#include "checkpoint.h"
#include "h5.h"

#define CKPT_FORMAT_NAME "omnimoe checkpoint"
#define CKPT_LOAD_PATH   "state/coordinator/expert_load"
#define CKPT_STEPS_PATH  "state/coordinator/expert_load_steps"
#define CKPT_COUNTERS    "state/counters"
#define CKPT_LATEST      "latest"

/* An open checkpoint (load.c opens it; remap.c reads through it). */
struct omni_ckpt {
    MPI_Comm comm;
    hid_t file;
    char path[OMNI_PATH_MAX];
    omni_ckpt_meta meta;
    char *yaml, *version;
    int64_t *load_steps;
    float *load;
    int64_t unchecked; /* tensors read that carry no checksum */
    char first_unchecked[OMNI_PATH_MAX];
    bool warned;
};

/*
 * Largest transfer of one H5Dwrite/H5Dread call, in bytes. A tensor bigger than this
 * is moved in several collective calls (every rank makes the same number, with an
 * empty selection when it has nothing left), which keeps each MPI-IO request below
 * the 2 GiB that MPI counts in int can describe. Tests lower it to exercise pieces.
 */
extern size_t omni_ckpt_piece_bytes;
/* Pieces of at most this many bytes when checksums are taken during a transfer. 1 GiB
 * (no smaller than omni_ckpt_piece_bytes): pieces of 1 and 4 MiB, summed while in cache,
 * measured no cheaper here (the kernel's page-cache copies pass by the cache), and they
 * multiply the collective calls. bench_checkpoint's last argument sets it. */
extern size_t omni_ckpt_sum_piece_bytes;

/*
 * How tensors are checksummed when saved: CRC32C attributes (h5.h; the default), none,
 * or HDF5's Fletcher32 filter on chunks of one checksum slab each. The last two exist
 * for bench_checkpoint, which measures what each costs (docs/bench.md).
 */
typedef enum { CKPT_SUM_CRC32C, CKPT_SUM_NONE, CKPT_SUM_FLETCHER32 } ckpt_sum_mode;
extern ckpt_sum_mode omni_ckpt_sum_mode;

size_t ckpt_type_size(omni_ckpt_type t);
const char *ckpt_type_name(omni_ckpt_type t);
hid_t ckpt_mem_type(omni_ckpt_type t);
hid_t ckpt_file_type(omni_ckpt_type t);

/* Elements in one row (the product of dims[1..rank-1]) and in the whole tensor. */
int64_t ckpt_row_elems(const omni_ckpt_tensor *t);
int64_t ckpt_elems(const omni_ckpt_tensor *t);

/* Check a descriptor (name, rank, dims, rows, type, data) made by our own caller:
 * OMNI_ERR_INTERNAL when bad. */
omni_status ckpt_check_descriptor(const omni_ckpt_tensor *t);

/* "[2, 3, 4]" */
void ckpt_format_dims(char *out, size_t len, int rank, const int64_t *dims);

/* The h5 layer's view of t's rows. */
omni_h5_rows ckpt_rows(const omni_ckpt_tensor *t);

/* Collective: move rows [row_lo, row_hi) of t between memory and dataset `dset` (write
 * or read) in pieces of omni_ckpt_piece_bytes. A write also stores the checksums (each
 * writer's slabs, combined); a read checks the rows read against them and says in *sum
 * how (OMNI_H5_SUM_NONE: the tensor carries none). `active` false: this rank takes part
 * with an empty selection. Failures are this rank's (not agreed). */
omni_status ckpt_transfer(MPI_Comm comm, hid_t dset, const omni_ckpt_tensor *t, bool active,
                          bool write, const char *file, omni_h5_sum_kind *sum);

/* Check the root attributes that make a file a checkpoint of our format (format name
 * and version): OMNI_ERR_CKPT "FILE: fault". Not collective. */
omni_status ckpt_check_format(hid_t file, const char *path, int64_t *version);

/* The tokenization under /tokenization (docs/checkpoints.md): written collectively (the
 * same values on every rank), read and checked by one rank. Reading a file without it
 * fails with OMNI_ERR_CKPT naming the file (a checkpoint of format 1). */
#define CKPT_TOKENIZATION "tokenization"
omni_status ckpt_write_tokenization(hid_t file, const omni_tokenization *t, const char *path);
omni_status ckpt_read_tokenization(hid_t file, const char *path, int64_t version,
                                   omni_tokenization *t);

/* Step of a complete checkpoint file name "ckpt-<digits>.h5", or -1 for any other
 * name (including the .tmp ones). */
int64_t ckpt_name_step(const char *name);

#endif /* OMNI_CKPT_PRIVATE_H */
