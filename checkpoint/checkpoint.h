/*
 * checkpoint — training state in one HDF5 file per checkpoint (docs/design.md §5), written
 * in parallel, never half-written, read back on any number of processes.
 *
 * The layer knows nothing of the model: the caller describes its state as a list of
 * named tensors (omni_ckpt_tensor), each with its GLOBAL shape and the rows of dim 0
 * that this rank holds, plus a little metadata (omni_ckpt_meta). Experts are stored
 * whole, as [E, ...] with one row per expert, so a checkpoint written by N processes
 * loads on M: each rank reads the rows it owns in the new layout.
 *
 * File layout (format version OMNI_CKPT_FORMAT; docs/checkpoints.md shows it):
 *   /                       root attributes: format ("omnimoe checkpoint"),
 *                           format_version, omnimoe_version, step, tokens_seen,
 *                           world_size, seed, experiment_yaml (effective YAML text)
 *   /<tensor name>          one dataset per tensor, named by its path, e.g.
 *                           /params/layers/03/moe/experts/w1 [E, d_model, expert_ff];
 *                           attribute "meaning" says what its dimensions are
 *   /state/coordinator/expert_load        [rows, moe layers, E] f32 (when rows > 0)
 *   /state/coordinator/expert_load_steps  [rows] i64: the step of each row
 *   /state/counters         group whose int64 attributes are the named counters (only
 *                           when there are counters)
 *   /tokenization           the dataset's tokenization (omni_tokenization): layout,
 *                           mu-law, image/audio settings as attributes; one group
 *                           /tokenization/tasks/<name> per task (kind, index, token,
 *                           obs_dim, act_dim, discrete)
 *
 * Naming conventions (the worker writes them, `omnimoe ckpt info` reads them):
 *   params/...  model parameters; a tensor whose path contains "/moe/experts/" is a
 *               routed expert tensor with dim 0 = the expert (counts top_k/E of its
 *               size as active per token); everything else under params/ is dense.
 *   optim/m/..., optim/v/...  AdamW moments, same names and shapes as params/.
 *   state/...   everything else (balancing biases, sampler position, statistics).
 *
 * Files in a checkpoint directory: ckpt-<step, 8 digits>.h5 (complete checkpoints),
 * ckpt-<step>.h5.tmp (one being written, or left by a crash: ignored and removed by
 * the next successful save), and `latest`, a text file holding the name of the newest
 * complete checkpoint, replaced atomically after each save.
 *
 * Every function here is COLLECTIVE over `comm` unless it says otherwise: each rank
 * calls it, with the same tensor list (names, shapes, types, meanings) in the same
 * order; failures are agreed across ranks (omni_mpi_agree), so all ranks return the
 * same status. Bad checkpoints are OMNI_ERR_CKPT with "FILE: what is wrong"; failures
 * to write are OMNI_ERR_IO naming the file.
 */
#ifndef OMNI_CHECKPOINT_H
#define OMNI_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base.h"
#include "datasets.h"
#include "experiment.h"
#include "tensor.h"

#define OMNI_CKPT_FORMAT        2 /* format_version written: 1 + /tokenization */
#define OMNI_CKPT_FORMAT_OLDEST 1 /* oldest read (no tokenization: cannot be resumed) */
#define OMNI_CKPT_MAX_RANK      OMNI_TENSOR_MAX_RANK
#define OMNI_CKPT_MAX_COUNTERS  64
#define OMNI_CKPT_NAME_MAX      64

/* One tensor of the training state, as seen by one rank: the descriptor of tensor.h
 * (name, element type, GLOBAL shape, meaning, this rank's rows [row_lo, row_hi) of dim 0
 * in data, writer). The checkpoint reads only those fields. */
typedef omni_tensor omni_ckpt_tensor;

/* A named int64 (sampler position, random-stream counters, ...). */
typedef struct {
    char name[OMNI_CKPT_NAME_MAX]; /* letters, digits, '_', '.', '-' */
    int64_t value;
} omni_ckpt_counter;

/*
 * The metadata of a checkpoint. For save, rank 0's copy is what is written (the
 * others' are ignored and may be NULL), and world_size is the size of comm. For load, the fields
 * point into the open checkpoint and live until omni_ckpt_close.
 */
typedef struct {
    int64_t format_version; /* load only */
    int64_t step, tokens_seen, world_size, seed;
    const char *experiment_yaml; /* effective experiment (omni_experiment_to_yaml) */
    const char *omnimoe_version; /* load only: the version that wrote the file */
    /* Expert loads of the last logged steps, as the coordinator keeps them: row r is
     * step load_steps[r]; load[(r * load_layers + l) * load_experts + e] is the fraction
     * of token->expert assignments of MoE layer l that went to expert e. */
    int64_t load_rows, load_layers, load_experts;
    const int64_t *load_steps; /* [load_rows] */
    const float *load;         /* [load_rows, load_layers, load_experts] */
    int n_counters;
    omni_ckpt_counter counters[OMNI_CKPT_MAX_COUNTERS];
    /* save: the tokenization the model is trained with, written as /tokenization (NULL:
     * none, for tests of this layer only: such a file cannot be resumed or used for
     * inference). Load: NULL; read it with omni_ckpt_read_tokenization. */
    const omni_tokenization *tokenization;
} omni_ckpt_meta;

/* The file name of the checkpoint of `step` ("ckpt-00000200.h5"). Not collective. */
void omni_ckpt_file_name(int64_t step, char *out, size_t len);

/*
 * Collective. Write a checkpoint of `meta->step` into directory `dir` (created if
 * missing): as DIR/ckpt-<step>.h5.tmp with parallel HDF5 (each writer rank writes the
 * hyperslab of its rows, with collective transfers), flushed, closed, fsync'ed,
 * renamed to DIR/ckpt-<step>.h5, the directory fsync'ed, then `latest` replaced; only
 * then are checkpoints beyond the newest `keep` (>= 1) and stale .tmp files removed.
 * On failure the .tmp is removed and the previous checkpoints and `latest` are left
 * as they were. `path` (may be NULL) receives the final file name.
 * Errors: OMNI_ERR_IO (cannot write, disk full: names the file), OMNI_ERR_INTERNAL
 * (tensor lists differ across ranks, writers do not cover a tensor exactly once, a
 * bad descriptor).
 */
omni_status omni_ckpt_save(MPI_Comm comm, const char *dir, const omni_ckpt_meta *meta,
                           const omni_ckpt_tensor *tensors, int n_tensors, int64_t keep, char *path,
                           size_t path_len);

/*
 * Collective. The newest complete checkpoint in `dir`: the file `latest` names, if it
 * opens as a checkpoint of this format; otherwise (with a warning) the complete
 * ckpt-<step>.h5 of the highest step that does. .tmp files are never considered.
 * OMNI_ERR_CKPT "DIR: no complete checkpoint" when there is none.
 */
omni_status omni_ckpt_find_latest(MPI_Comm comm, const char *dir, char *path, size_t len);

/* Collective. `--resume ARG`: "auto" is omni_ckpt_find_latest(out_dir), anything else
 * a checkpoint file name, checked to exist. */
omni_status omni_ckpt_resolve(MPI_Comm comm, const char *arg, const char *out_dir, char *path,
                              size_t len);

/* An open checkpoint, for reading. */
typedef struct omni_ckpt omni_ckpt;

/* Collective. Open `path` read-only and read and check its metadata: an HDF5 file, an
 * omnimoe checkpoint, format version OMNI_CKPT_FORMAT, sane step/tokens/world size,
 * an experiment text. OMNI_ERR_CKPT "PATH: fault" otherwise. */
omni_status omni_ckpt_open(MPI_Comm comm, const char *path, omni_ckpt **out);
const omni_ckpt_meta *omni_ckpt_meta_of(const omni_ckpt *c);
const char *omni_ckpt_path(const omni_ckpt *c);

/*
 * Collective. Read each tensor's rows [row_lo, row_hi) into its data. Every tensor is
 * first checked to exist with the given type and global shape, before any data is
 * read, so a mismatch leaves the buffers untouched; then the rows are read and checked
 * against the tensor's stored checksums (h5.h), and a mismatch or a non-finite f32/f64
 * value fails the load (OMNI_ERR_CKPT naming the file, the tensor and the rows or the
 * element; the buffers then hold what was read).
 */
omni_status omni_ckpt_read(omni_ckpt *c, const omni_ckpt_tensor *tensors, int n_tensors);

/*
 * Collective. The tokenization the checkpoint's model was trained with: vocabulary
 * layout, mu-law, image and audio settings, and the task table (task i is the model's
 * task i, <task> token tok_task0 + i). Every value is checked (a layout other than this
 * omnimoe's, indices that are not 0..n-1, a bad name or kind: OMNI_ERR_CKPT naming the
 * file and the fault). A checkpoint without one (format 1, written before omnimoe stored
 * it) fails with OMNI_ERR_CKPT "FILE: has no /tokenization ...".
 */
omni_status omni_ckpt_read_tokenization(omni_ckpt *c, omni_tokenization *t);

/*
 * Collective. omni_ckpt_read into a model whose task set differs from the checkpoint's
 * (`then`: omni_ckpt_read_tokenization; `now`: the data's, with the same layout and
 * image/audio settings). Tensors with a dimension indexed by token id (`vocab_dims` of
 * their descriptor) are read in the checkpoint's size and carried over by task name: the entries of
 * a task move from its index then to its index now; the entries of tasks that are new keep what the
 * buffers held (their fresh initialisation, zero moments). Such tensors must be whole on every rank
 * (row_lo 0, row_hi dims[0]).
 */
omni_status omni_ckpt_read_remapped(omni_ckpt *c, const omni_ckpt_tensor *tensors, int n_tensors,
                                    const omni_tokenization *then, const omni_tokenization *now);

/* Collective. Whether the checkpoint holds a dataset `name` (for optional state). */
omni_status omni_ckpt_has(omni_ckpt *c, const char *name, bool *has);
/* How many of the tensors read so far carry no checksum (files written before omnimoe
 * stored them, or edited with the crc32c attribute removed); *first names one. Reading
 * them logs a warning once; a checksum that does not match fails the read (exit 2). */
int64_t omni_ckpt_unchecked(const omni_ckpt *c, const char **first);
/* Collective. Read every dataset of the checkpoint (the ranks share the work) and check
 * it against its checksums: OMNI_ERR_CKPT naming the file and the dataset on a mismatch.
 * Says how many datasets there are, how many carry no checksum (the first one named; the
 * caller decides), and the bytes checked. */
omni_status omni_ckpt_verify(omni_ckpt *c, int64_t *datasets, int64_t *unchecked,
                             const char **first_unchecked, double *bytes);

/* Not collective. Read dataset `name` whole (a small one: statistics, not parameters), of
 * `rank` dimensions and element type `type`: dims[d] >= 0 must match, dims[d] < 0 takes
 * the file's, and on return dims holds the shape. *data is omni_alloc'ed (free with
 * omni_free), NULL on failure. OMNI_ERR_CKPT "PATH: dataset NAME ..." when it is missing
 * or not of that rank, shape or type. */
omni_status omni_ckpt_read_whole(omni_ckpt *c, const char *name, omni_ckpt_type type, int rank,
                                 int64_t *dims, void **data);

/*
 * Not collective. The datasets under group `group` ("params", "optim", "state"; none when
 * it is absent) as descriptors: name (the full path without the leading '/'), type, global
 * shape, rows [0, dims[0]) (a read of them reads the whole tensor), meaning (NULL when the
 * dataset has none); data NULL. OMNI_ERR_CKPT for a dataset that is not a tensor of the
 * checkpoint's types. Free with omni_ckpt_list_free.
 */
omni_status omni_ckpt_list(omni_ckpt *c, const char *group, omni_ckpt_tensor **tensors, int *n);
void omni_ckpt_list_free(omni_ckpt_tensor *tensors, int n);

/* Collective. Close and free (NULL is fine). */
void omni_ckpt_close(omni_ckpt *c);

/* The value of counter `name` of a loaded meta; false when absent. Not collective. */
bool omni_ckpt_counter_get(const omni_ckpt_meta *m, const char *name, int64_t *value);

/* Collective. Parameter counts: the elements of every dataset under /params, and
 * those active for one token (routed experts, "/moe/experts/" in the path, count
 * top_k / num_experts of theirs, from the checkpoint's own experiment). */
omni_status omni_ckpt_param_counts(omni_ckpt *c, int64_t *total, double *active);

/*
 * Not collective. Compare the experiment stored in a checkpoint (`ckpt_yaml`, from
 * file `ckpt_path`) with the current one. When a key that shapes the model differs
 * (model.*, moe.num_experts, top_k, every, expert_ff, shared_experts, normalize_topk)
 * it fails with OMNI_ERR_CKPT
 * "CKPT: checkpoint of another model: model.d_model is 256 in the checkpoint, 128 in
 * the experiment". Otherwise it returns OMNI_OK and writes into `changed` (may be
 * NULL) the training-only keys that differ, "optim.steps 600 -> 800; log.every 20 ->
 * 10" ("" when none), for the caller to report. The tasks are not its business: the
 * caller compares the checkpoint's task table with the data's (omni_tokenization_same).
 */
omni_status omni_ckpt_check_experiment(const char *ckpt_path, const char *ckpt_yaml,
                                       const omni_experiment *now, char *changed,
                                       size_t changed_len);

#endif /* OMNI_CHECKPOINT_H */
