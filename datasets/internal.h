/*
 * datasets, private: the in-memory form of a dataset file shared by the builder, the
 * writer, the reader and the sampler, and helpers the files of the part share.
 */
#ifndef OMNI_DATASETS_INTERNAL_H
#define OMNI_DATASETS_INTERNAL_H

#include <hdf5.h>

#include "datasets.h"

/* Format 2 storage (store.c, docs/datasets.md). */
#define DS_CHUNK_BYTES 65536     /* bytes per chunk of every sample array, at most */
#define DS_WRITE_BUF   (1 << 20) /* bytes a writer buffers per array before writing */
#define DS_SAMPLE_MAX  (1 << 24) /* elements of one sample, at most */
#define DS_TOK_LOSS    0x8000u   /* tokens: the loss flag */
#define DS_TOK_ID      0x7fffu   /* tokens: the id bits */
#define DS_TOK_PATCH   0x7fff    /* tokens: the id of a patch element */

/* Pack k elements (token ids, OMNI_DS_PATCH for a patch, and loss flags) into format 2's
 * uint16 tokens; an id that does not fit is an internal fault, named with path. */
omni_status ds_pack_tokens(uint16_t *out, const int32_t *tok, const uint8_t *loss, int64_t k,
                           const char *path);

/* Samples of one split of one task: ragged arrays with offsets (as in the file). */
typedef struct {
    int64_t n;      /* samples */
    int64_t *off;   /* [n + 1] element offsets into tok/loss */
    int32_t *tok;   /* [off[n]] token ids, OMNI_DS_PATCH for a patch */
    uint8_t *loss;  /* [off[n]] 1: the element is a loss-bearing target */
    int64_t *poff;  /* [n + 1] patch offsets (NULL when the kind has no patches) */
    uint8_t *patch; /* [poff[n], patch_dim] */
    int64_t cap_n, cap_el, cap_patch; /* growth capacities while building */
    int64_t first, first_el; /* read in windows: sample 0 and element 0 are these in the file
                                (for messages) */
} ds_pool;

typedef struct {
    char name[OMNI_NAME_MAX];
    omni_task_kind kind;
    int32_t index;                      /* task index in its file; token = OMNI_TOK_TASK0 + index */
    double val_fraction;                /* recorded, informative */
    int32_t obs_dim, act_dim, discrete; /* control only */
    int32_t images;                     /* control only: 1 when each step has image patches */
    int32_t patch, patch_dim, rows, cols; /* patch geometry (image/audio kinds) */
    ds_pool split[OMNI_SPLIT_COUNT];
} ds_task;

typedef struct {
    uint64_t seed;
    bool has_seed; /* the file records the seed it was built with (h5py files may not) */
    int32_t image_size, image_channels, image_patch; /* 0 when no image task */
    omni_resize_mode image_resize; /* how images of another size were fitted (attribute
                                      image_resize; stretch when absent) */
    omni_audio_cfg audio;          /* zeros when no audio task */
    int32_t n_tasks;
    ds_task tasks[OMNI_MAX_TASKS];
    int64_t unchecked; /* read: arrays that carry no checksum (h5.h); the first named */
    char first_unchecked[OMNI_NAME_MAX + 64];
} ds_file;

/* Pool growth: append one sample. The element arrays are copied; patches (n_patch of
 * patch_dim bytes) too. Returns OMNI_ERR_NOMEM on exhaustion. */
omni_status ds_pool_append(ds_pool *p, const int32_t *tok, const uint8_t *loss, int64_t n_el,
                           const uint8_t *patch, int64_t n_patch, int32_t patch_dim);
void ds_pool_free(ds_pool *p);
void ds_file_free(ds_file *f);

/* Assign the samples of `all` to train and val: round(n * val_fraction) samples chosen
 * by keys from omni_rng(seed, "split/<name>"), file order kept within each split.
 * `all` is freed. At least one train sample stays. */
omni_status ds_split(ds_task *t, ds_pool *all, uint64_t seed, int32_t patch_dim);
/* The same assignment for samples 0..n-1 of a task known only by their count (a
 * streaming build): ds_split_plan_is_val(p, i) says where sample i goes. */
typedef struct {
    omni_rng rng;
    int64_t n, n_val;
    uint32_t key; /* sample i is validation when its key < key, or == key and i <= last */
    int64_t last;
} ds_split_plan;
omni_status ds_split_plan_make(ds_split_plan *p, const char *task, int64_t n, double val_fraction,
                               uint64_t seed);
bool ds_split_plan_is_val(const ds_split_plan *p, int64_t i);

/* Write a file (temporary name, then rename; nothing left on failure). */
omni_status ds_write(const ds_file *f, const char *path);
/* Read and check all of a file into memory (small files: tests, info examples). On failure
 * nothing is left allocated. */
omni_status ds_read(const char *path, ds_file *f);
/* The attributes of a file (root and tasks; the task groups exist already). */
omni_status ds_write_attrs(hid_t f, const ds_file *df, const char *path);
/* Check the samples of a pool against the rules of their kind (messages count samples and
 * elements from p->first, p->first_el). */
omni_status ds_check_pool(const ds_task *t, const ds_pool *p, const char *where, const char *path);

/* ---- format 2: chunked arrays read in windows (store.c) ---- */

/* Rows per chunk of a sample array whose rows have row_bytes bytes (at least 1). */
int64_t ds_chunk_rows(size_t row_bytes);
/* Create sample array `name` in g as format 2 stores it: rows x row_elems of `type` (rank 1
 * or 2), extendible, in chunks of ds_chunk_rows rows with Fletcher32, shuffled and deflated
 * when deflate > 0; no_fill: HDF5 writes no fill values (every row will be written). The
 * dataset, or a negative id (the HDF5 error stack says why). */
hid_t ds_array_create(hid_t g, const char *name, hid_t type, int rank, int64_t rows,
                      int64_t row_elems, int deflate, bool no_fill);

/* A block cache of whole chunks (DS_CHUNK_BYTES each) for every array read through it:
 * its memory is fixed at creation, whatever the size of the files. Not thread-safe. */
typedef struct ds_cache ds_cache;
omni_status ds_cache_create(ds_cache **c, size_t bytes);
void ds_cache_free(ds_cache *c);
void ds_cache_stats(const ds_cache *c, int64_t *hits, int64_t *misses, size_t *bytes);

typedef struct {
    hid_t d;
    char name[OMNI_NAME_MAX + 48]; /* its path in the file, for messages */
    const char *file;
    hid_t mem_type;
    size_t elem_size;
    int rank; /* 1, or 2 for patches */
    int64_t rows, row_elems, chunk_rows;
    bool sum; /* Fletcher32 on its chunks */
    ds_cache *cache;
    int64_t id; /* in the cache */
} ds_array;
/* Rows [lo, hi) of an array into out (through its cache). */
omni_status ds_array_read(ds_array *a, int64_t lo, int64_t hi, void *out);

/* One split of one task of an open file. */
typedef struct {
    const ds_task *t;
    char where[OMNI_NAME_MAX + 32]; /* "/tasks/NAME/train/" */
    ds_array off, tok, poff, patch;
    int64_t n; /* samples */
} ds_split_store;

/* A sample read: a one-sample pool (off {0, n}, poff {0, np}) and scratch. */
typedef struct {
    ds_pool pool;
    uint16_t *raw;
    int64_t cap_raw;
} ds_sample_buf;
void ds_sample_buf_free(ds_sample_buf *b);

/* Open the arrays of split group g (attributes of t already read); checks types, shapes,
 * chunking and the first and last offsets. */
omni_status ds_split_open(ds_split_store *s, hid_t g, const char *where, const ds_task *t,
                          ds_cache *cache, const char *path);
void ds_split_close(ds_split_store *s);
/* Open again the arrays of a split closed by ds_split_close (its metadata kept), in file f:
 * an array that is gone or has another length is OMNI_ERR_DATA. */
omni_status ds_split_reopen(ds_split_store *s, hid_t f, const char *path);
/* The first of its arrays without a checksum (its name), or NULL. */
const char *ds_split_unchecked(const ds_split_store *s);
/* Offsets [lo, hi) of the split. */
omni_status ds_split_offsets(ds_split_store *s, int64_t lo, int64_t hi, int64_t *out);
/* Sample i into b->pool, checked like every sample (ds_check_pool). */
omni_status ds_split_sample(ds_split_store *s, int64_t i, ds_sample_buf *b, const char *path);

/* An open dataset file: its attributes (pools empty) and the arrays of every split. */
typedef struct {
    ds_file meta;
    hid_t h5;
    char path[OMNI_PATH_MAX];
    ds_split_store split[OMNI_MAX_TASKS][OMNI_SPLIT_COUNT];
} ds_store;
/* Open a file for windowed reads: attributes checked, arrays opened (format 2; a file of
 * format 1 is refused naming its version). On failure nothing is left open. */
omni_status ds_store_open(ds_store *s, const char *path, ds_cache *cache);
void ds_store_close(ds_store *s);
/* Close the HDF5 file and arrays of an open store, keeping what was read at open (counts,
 * shapes, the cache's array ids); resume opens them again (a no-op when open). A sampler
 * keeps at most DS_OPEN_FILES files open this way, whatever the length of data.files. */
void ds_store_suspend(ds_store *s);
omni_status ds_store_resume(ds_store *s);
#define DS_OPEN_FILES 32

/* A streaming writer: the file's groups and arrays at open, samples appended in any order
 * of tasks and splits (each split keeps its order), the attributes of df (which may have
 * changed since open, e.g. control dimensions) at close, then the rename. deflate: 0 (none)
 * or the level of HDF5's deflate on tokens and patches. */
typedef struct ds_writer ds_writer;
omni_status ds_writer_open(ds_writer **w, const ds_file *df, const char *path, int deflate);
omni_status ds_writer_append(ds_writer *w, int task, omni_split split, const int32_t *tok,
                             const uint8_t *loss, int64_t n_el, const uint8_t *patch,
                             int64_t n_patch);
/* Sample i of pool p. */
omni_status ds_writer_append_pool(ds_writer *w, int task, omni_split split, const ds_pool *p,
                                  int64_t i);
void ds_writer_counts(const ds_writer *w, int task, omni_split split, int64_t *n, int64_t *n_el);
/* Give a task's splits patch arrays of patch_dim bytes a patch, before its first sample (a
 * control task learns from its episodes file whether its steps carry images). */
omni_status ds_writer_add_patches(ds_writer *w, int task, int32_t patch_dim);
/* Finish (df != NULL: flush, write attributes, rename) or abandon (df == NULL: remove the
 * temporary file). Frees w either way. */
omni_status ds_writer_close(ds_writer *w, const ds_file *df);

/* What one rank builds of a task, per split: samples, elements and patches (also used for
 * where its share starts in the file, and for the totals). */
typedef struct {
    int64_t n[OMNI_SPLIT_COUNT], n_el[OMNI_SPLIT_COUNT], n_patch[OMNI_SPLIT_COUNT];
} ds_share;

/* The collective writer of a build shared among ranks (pwrite.c): every call is collective
 * over comm. Open creates the temporary file and the groups of df's tasks; a task is begun
 * with this rank's share, where it starts and the totals (its arrays are created at their
 * final size), its samples appended in order, and ended with this rank's status (the
 * agreed status is returned: a failure anywhere fails it everywhere). Close writes df's
 * attributes and renames (df NULL: removes the file), rank 0 doing the file operations. */
typedef struct ds_cwriter ds_cwriter;
omni_status ds_cwriter_open(ds_cwriter **w, MPI_Comm comm, const ds_file *df, const char *path,
                            int deflate);
omni_status ds_cwriter_task_begin(ds_cwriter *w, int task, int32_t patch_dim, const ds_share *mine,
                                  const ds_share *base, const ds_share *total);
omni_status ds_cwriter_append(ds_cwriter *w, omni_split split, const int32_t *tok,
                              const uint8_t *loss, int64_t n_el, const uint8_t *patch,
                              int64_t n_patch);
omni_status ds_cwriter_task_end(ds_cwriter *w, omni_status local);
/* True when a round agreed on a failure of another rank (not of this one). */
bool ds_cwriter_peer_failed(const ds_cwriter *w);
omni_status ds_cwriter_close(ds_cwriter *w, const ds_file *df);

/* Patch geometry of a task kind from the file's attributes. */
void ds_task_geometry(const ds_file *f, ds_task *t);

/* Serialization of the task kinds (exact layout: docs/datasets.md). The scratch
 * buffers grow as needed (*cap elements). Each appends one sample to `pool`. */
omni_status ds_emit_text(ds_pool *pool, int32_t task_tok, const uint8_t *bytes, int64_t n,
                         bool eos);
omni_status ds_emit_text_to_text(ds_pool *pool, int32_t task_tok, const uint8_t *in, int64_t n_in,
                                 const uint8_t *out, int64_t n_out);
omni_status ds_emit_patches_to_text(ds_pool *pool, int32_t task_tok, const uint8_t *patches,
                                    int64_t n_patch, int32_t patch_dim, const uint8_t *text,
                                    int64_t n_text);
/* The prompted kinds (prompt.c): <task>, the patches of the image(s) or clip, the prompt
 * bytes, <sep>, then the loss-bearing text and <eos>. */
omni_status ds_emit_prompted(ds_pool *pool, int32_t task_tok, const uint8_t *patches,
                             int64_t n_patch, int32_t patch_dim, const uint8_t *prompt,
                             int64_t n_prompt, const uint8_t *text, int64_t n_text);
/* Control steps with pixel observations (pixels.c): per step, the step's `grid` patches
 * (patches [T * grid, patch_dim]; NULL when grid is 0), the observation tokens, <sep>, the
 * action tokens. ds_emit_control is this with grid 0. */
omni_status ds_emit_control_steps(ds_pool *pool, int32_t task_tok, int64_t T, int64_t grid,
                                  int32_t patch_dim, const uint8_t *patches, int32_t obs_dim,
                                  const float *obs, int32_t act_dim, const float *act_f,
                                  const int32_t *act_i);
/* Control: obs [T, obs_dim] (finite, checked by the caller), actions as floats
 * (continuous) or ints (discrete, 0 <= a < OMNI_BINS). */
omni_status ds_emit_control(ds_pool *pool, int32_t task_tok, int64_t T, int32_t obs_dim,
                            const float *obs, int32_t act_dim, const float *act_f,
                            const int32_t *act_i);

/* Progress reporting: a bar on a terminal, a line every few seconds otherwise. */
typedef struct {
    FILE *f;
    bool tty;
    double t0, last;
    char what[96];
} ds_progress;
void ds_progress_start(ds_progress *p, FILE *f, const char *what);
void ds_progress_update(ds_progress *p, int64_t done, int64_t total);
/* Progress in bytes of input (text), with the samples made so far. */
void ds_progress_bytes(ds_progress *p, int64_t bytes, int64_t total, int64_t samples);
void ds_progress_end(ds_progress *p, int64_t total);

/* Build from a parsed spec (spec.c parses, build.c builds). */
typedef struct {
    char name[OMNI_NAME_MAX];
    omni_task_kind kind;
    char input[OMNI_PATH_MAX]; /* manifest, or episodes file; resolved against the spec */
    int n_files;               /* text: files */
    char (*files)[OMNI_PATH_MAX];
    double val_fraction;
    int64_t chunk; /* text: bytes per sample */
    long line;     /* where in the spec, for messages */
} ds_spec_task;

typedef struct {
    uint64_t seed;
    int deflate; /* 0: none, else HDF5's deflate level on tokens and patches */
    int32_t image_size, image_channels, image_patch;
    omni_resize_mode image_resize; /* image.resize */
    omni_audio_cfg audio;
    int n_tasks;
    ds_spec_task tasks[OMNI_MAX_TASKS];
} ds_spec;

omni_status ds_spec_parse(ds_spec *spec, const char *path);
void ds_spec_free(ds_spec *spec);

/* The images one sample of image_text_to_text may join with ';'. */
#define DS_MAX_IMAGES 16

/* The rows of a prompted task's manifest (prompt.c, `path,prompt,text`), for the build's
 * two passes. ds_prompted_row checks a row's columns, sets *sample when it is a sample (not
 * the header) and, when pool is not NULL, decodes its image(s) or clip and appends the
 * sample to pool. Close gives the images read and those of another size. */
typedef struct ds_prompted ds_prompted;
omni_status ds_prompted_open(ds_prompted **p, const ds_spec *spec, const ds_task *t,
                             const char *manifest);
omni_status ds_prompted_row(ds_prompted *p, char **f, int nf, int64_t line, ds_pool *pool,
                            bool *sample);
void ds_prompted_close(ds_prompted *p, int64_t *images, int64_t *resized);

/* The `images` of a control episodes file (pixels.c), checked against the T steps of its
 * actions, and those of steps [lo, hi) read and fitted to the spec's image settings:
 * *patches [(hi - lo) * grid, patch_dim] (free with omni_free), NULL with *has_images false
 * when the file has no `images`. lo == hi checks the array and reads nothing. */
omni_status ds_episode_images(int64_t file, const char *path, const ds_spec *spec, int64_t T,
                              int64_t lo, int64_t hi, uint8_t **patches, bool *has_images);

/* RFC 4180 CSV: calls row(ctx, fields, n_fields, line) for each record. Fields are NUL
 * terminated and may contain commas, quotes and newlines. */
typedef omni_status (*ds_csv_row_fn)(void *ctx, char **fields, int n_fields, int64_t line);
omni_status ds_csv_parse(const char *path, const char *text, size_t len, ds_csv_row_fn row,
                         void *ctx);

/* Onto a tokenization started by omni_tokenization_init, the tasks one by one in the
 * model's order. Adding an image or audio task whose file has other image or audio
 * settings than the tasks before it fails (OMNI_ERR_DATA naming `path` and `first_image`
 * / `first_audio`, the files of the settings already taken). */
omni_status ds_tokenization_add(omni_tokenization *t, const ds_file *f, const ds_task *dt,
                                const char *path, const char *first_image, const char *first_audio);

/* `rel` relative to the directory of `base` (unless absolute) into out. */
omni_status ds_path_join(const char *base, const char *rel, char *out, size_t cap);

#endif /* OMNI_DATASETS_INTERNAL_H */
