/*
 * datasets, private: the in-memory form of a dataset file shared by the builder, the
 * writer, the reader and the sampler, and helpers the files of the part share.
 */
#ifndef OMNI_DATASETS_INTERNAL_H
#define OMNI_DATASETS_INTERNAL_H

#include "datasets.h"

/* Samples of one split of one task: ragged arrays with offsets (as in the file). */
typedef struct {
    int64_t n;      /* samples */
    int64_t *off;   /* [n + 1] element offsets into tok/loss */
    int32_t *tok;   /* [off[n]] token ids, OMNI_DS_PATCH for a patch */
    uint8_t *loss;  /* [off[n]] 1: the element is a loss-bearing target */
    int64_t *poff;  /* [n + 1] patch offsets (NULL when the kind has no patches) */
    uint8_t *patch; /* [poff[n], patch_dim] */
    int64_t cap_n, cap_el, cap_patch; /* growth capacities while building */
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

/* Write a file (temporary name, then rename; nothing left on failure). */
omni_status ds_write(const ds_file *f, const char *path);
/* Read and check all of a file. On failure nothing is left allocated. */
omni_status ds_read(const char *path, ds_file *f);

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

/* Build a prompted task (prompt.c) from its manifest text (`path,prompt,text`): appends
 * to `all`; *images and *resized count the images read and those of another size. */
omni_status ds_build_prompted(const ds_spec *spec, ds_task *t, const char *manifest,
                              const char *text, size_t len, ds_pool *all, ds_progress *progress,
                              int64_t *images, int64_t *resized);

/* The `images` of a control episodes file (pixels.c), checked against the T steps of its
 * actions and fitted to the spec's image settings: *patches [T * grid, patch_dim] (free
 * with omni_free), NULL with *has_images false when the file has no `images`. */
omni_status ds_episode_images(int64_t file, const char *path, const ds_spec *spec, int64_t T,
                              uint8_t **patches, bool *has_images);

/* RFC 4180 CSV: calls row(ctx, fields, n_fields, line) for each record. Fields are NUL
 * terminated and may contain commas, quotes and newlines. */
typedef omni_status (*ds_csv_row_fn)(void *ctx, char **fields, int n_fields, int64_t line);
omni_status ds_csv_parse(const char *path, const char *text, size_t len, ds_csv_row_fn row,
                         void *ctx);

/* The tokenization with the layout constants and no task; then the tasks one by one in
 * the model's order. Adding an image or audio task whose file has other image or audio
 * settings than the tasks before it fails (OMNI_ERR_DATA naming `path` and `first_image`
 * / `first_audio`, the files of the settings already taken). */
void ds_tokenization_init(omni_tokenization *t);
omni_status ds_tokenization_add(omni_tokenization *t, const ds_file *f, const ds_task *dt,
                                const char *path, const char *first_image, const char *first_audio);

/* `rel` relative to the directory of `base` (unless absolute) into out. */
omni_status ds_path_join(const char *base, const char *rel, char *out, size_t cap);

#endif /* OMNI_DATASETS_INTERNAL_H */
