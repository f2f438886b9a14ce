/*
 * checkpoint, private: HDF5 helpers shared by save.c and load.c (types, attributes,
 * collective row transfers, error texts) and the names of files in a checkpoint
 * directory.
 */
#ifndef OMNI_CKPT_PRIVATE_H
#define OMNI_CKPT_PRIVATE_H

#include <hdf5.h>

#include "checkpoint.h"

#define CKPT_FORMAT_NAME "omnimoe checkpoint"
#define CKPT_LOAD_PATH   "state/coordinator/expert_load"
#define CKPT_STEPS_PATH  "state/coordinator/expert_load_steps"
#define CKPT_COUNTERS    "state/counters"
#define CKPT_LATEST      "latest"

/*
 * Largest transfer of one H5Dwrite/H5Dread call, in bytes. A tensor bigger than this
 * is moved in several collective calls (every rank makes the same number, with an
 * empty selection when it has nothing left), which keeps each MPI-IO request below
 * the 2 GiB that MPI counts in int can describe. Tests lower it to exercise pieces.
 */
extern size_t omni_ckpt_piece_bytes;

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

/* The most specific description on the current HDF5 error stack ("" if none). */
void ckpt_h5_reason(char *out, size_t len);

/* Collective: move rows [row_lo, row_hi) of t between memory and dataset `dset`
 * (write or read), in pieces, with collective transfers. `active` false: this rank
 * takes part with an empty selection. Failures are this rank's (not agreed). */
omni_status ckpt_transfer(MPI_Comm comm, hid_t dset, const omni_ckpt_tensor *t, bool active,
                          bool write, const char *file);

/* Attributes of `loc` (write: collective in a parallel file, same values everywhere). */
omni_status ckpt_attr_write_i64(hid_t loc, const char *name, int64_t v, const char *file);
omni_status ckpt_attr_write_f64(hid_t loc, const char *name, double v, const char *file);
omni_status ckpt_attr_write_str(hid_t loc, const char *name, const char *s, const char *file);
/* Read: OMNI_ERR_CKPT naming the file when absent or of the wrong kind. A string is
 * returned malloc'ed, NUL terminated. */
omni_status ckpt_attr_read_i64(hid_t loc, const char *name, int64_t *v, const char *file);
omni_status ckpt_attr_read_f64(hid_t loc, const char *name, double *v, const char *file);
omni_status ckpt_attr_read_str(hid_t loc, const char *name, char **s, const char *file);

/* Whether path "a/b/c" exists below `loc`, each link checked in turn. */
bool ckpt_path_exists(hid_t loc, const char *path);

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
