/*
 * datasets — from raw images, text, audio and control episodes to one token stream
 * (docs/design.md §3): the builder (`omnimoe data build|demo`), the dataset file (its
 * format is docs/datasets.md), a reader that checks every offset, id and size before
 * training starts, the sampler that packs context windows of the batch plan, and the
 * built-in cart-pole environment of the demo's control task.
 *
 * Serialized samples. A sample is a sequence of elements: a token id (text bytes,
 * value bins, <eos>, <sep>, its task's <task> token) or a patch (OMNI_DS_PATCH in the
 * token array: the sample's next patch, in order). Each element carries a loss flag:
 * 1 when the model must predict it. Every sample starts with its task's <task> token.
 *
 * Errors: bad input is OMNI_ERR_DATA with a message naming the file and the fault (and
 * the row, sample or byte offset where it applies).
 */
#ifndef OMNI_DATASETS_H
#define OMNI_DATASETS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base.h"
#include "experiment.h"
#include "tokens.h"

#define OMNI_DS_FORMAT         "omnimoe-dataset"
#define OMNI_DS_FORMAT_VERSION 2
#define OMNI_DS_PATCH          (-1) /* token-array marker of a patch element */
#define OMNI_MULAW_MU          100.0f
#define OMNI_MULAW_M           256.0f

typedef enum {
    OMNI_KIND_TEXT = 0,
    OMNI_KIND_TEXT_TO_TEXT,
    OMNI_KIND_IMAGE_TO_TEXT,
    OMNI_KIND_AUDIO_TO_TEXT,
    OMNI_KIND_CONTROL,
    OMNI_KIND_IMAGE_TEXT_TO_TEXT, /* OFA-style: image(s) and a prompt -> text */
    OMNI_KIND_AUDIO_TEXT_TO_TEXT, /* a clip and a prompt -> text */
    OMNI_KIND_COUNT
} omni_task_kind;

/* "text", "text_to_text", ...; and back (-1 when unknown). */
const char *omni_task_kind_name(omni_task_kind k);
int omni_task_kind_parse(const char *name);
/* The kinds by what their samples hold: image patches (image_to_text, image_text_to_text;
 * a control task may hold them too, per task: omni_tokenization_task.images), audio
 * patches (audio_to_text, audio_text_to_text), a text output generated after <sep>
 * (every *_to_text kind), a prompt beside the media (*_text_to_text). */
bool omni_kind_image(omni_task_kind k);
bool omni_kind_audio(omni_task_kind k);
bool omni_kind_to_text(omni_task_kind k);
bool omni_kind_prompted(omni_task_kind k);
/* "text, text_to_text, ..., audio_text_to_text" for messages. */
const char *omni_task_kind_list(void);

typedef enum { OMNI_SPLIT_TRAIN = 0, OMNI_SPLIT_VAL, OMNI_SPLIT_COUNT } omni_split;

/* ---- values: mu-law and bins ------------------------------------------------- */

/* Gato's mu-law: sgn(x) log(|x| mu + 1) / log(M mu + 1), mu = 100, M = 256. */
float omni_mulaw(float x);
float omni_mulaw_inverse(float y);
/* Bin (0..OMNI_BINS-1) of a continuous value: mu-law, clipped to [-1, 1], 1024 uniform
 * bins; NaN goes to the middle bin (callers reject NaN before). Token id = BIN0 + bin. */
int32_t omni_value_bin(float x);
/* The value at the centre of a bin (the decoding of omni_value_bin). */
float omni_bin_value(int32_t bin);

/* ---- control steps ------------------------------------------------------------ */

/* The tokens of one step of a control sample, exactly as the builder writes them, for
 * whoever must speak to a model the way it was trained (the act loop of inference/):
 * observation j -> OMNI_TOK_BIN0 + omni_value_bin(obs[j]) (obs finite, checked by the
 * caller); action j -> OMNI_TOK_BIN0 + act_i[j] when discrete (0 <= a < OMNI_BINS),
 * OMNI_TOK_BIN0 + omni_value_bin(act_f[j]) when continuous (act_i NULL). */
void omni_control_obs_tokens(const float *obs, int32_t obs_dim, int32_t *out);
void omni_control_act_tokens(const float *act_f, const int32_t *act_i, int32_t act_dim,
                             int32_t *out);
/* And back, for action tokens a model emitted: a discrete action is its bin (into act_i),
 * a continuous one the centre of its bin (into act_f). False when a token is not a value
 * bin (nothing else is written then). */
bool omni_control_act_values(const int32_t *tok, int32_t act_dim, bool discrete, float *act_f,
                             int32_t *act_i);

/* ---- images ------------------------------------------------------------------ */

/* An 8-bit image, h x w x c (c = 1 grey or 3 RGB), row-major, channels interleaved. */
typedef struct {
    int32_t h, w, c;
    uint8_t *px;
} omni_image;

/* Load a PNG or binary PGM/PPM (P5/P6), 8-bit grey or RGB (alpha is dropped). */
omni_status omni_image_load(omni_image *img, const char *path);
void omni_image_free(omni_image *img);
/* Resize to size x size with `channels` channels (area average when shrinking,
 * bilinear when enlarging; RGB -> grey by ITU-R BT.601 luma, grey -> RGB by copy). */
omni_status omni_image_resize(const omni_image *src, int32_t size, int32_t channels,
                              omni_image *dst);

/* What `data build` (and generate, as the model's data was built) does with an image that
 * is not image.size x image.size: the spec's `image.resize`. */
typedef enum {
    OMNI_RESIZE_STRETCH = 0, /* resize to size x size, whatever its aspect ratio (default) */
    OMNI_RESIZE_PAD,         /* resize its longer side to size, keep the aspect ratio, and
                                centre it on a black size x size canvas */
    OMNI_RESIZE_ERROR,       /* refuse it, naming the file and its size */
    OMNI_RESIZE_COUNT
} omni_resize_mode;
const char *omni_resize_mode_name(omni_resize_mode m);
int omni_resize_mode_parse(const char *name); /* -1 when not a mode */

/* Fit an image to size x size x channels by `mode` (channels are converted in every mode):
 * OMNI_ERR_DATA "PATH: image is WxH, expected SxS (image.size) ..." under
 * OMNI_RESIZE_ERROR. *resized (may be NULL) says whether its size was changed. */
omni_status omni_image_fit(const omni_image *src, int32_t size, int32_t channels,
                           omni_resize_mode mode, const char *path, omni_image *dst, bool *resized);
/* Cut an image (h, w multiples of patch) into patches in raster order; patch k holds
 * rows of its pixels, channels interleaved: out[k * patch*patch*c + (y*patch + x)*c + ch]. */
void omni_image_patches(const omni_image *img, int32_t patch, uint8_t *out);
/* Write an 8-bit PNG (used by tests and benchmarks to make inputs). */
omni_status omni_png_write(const char *path, const omni_image *img);

/* The patch bytes `data build` stores for the image file at `path`: loaded, fitted to
 * size x size x channels by `mode` (omni_image_fit; *resized may be NULL), cut into
 * patch x patch patches (out: (size / patch)^2 patches of patch * patch * channels bytes).
 * The same code builds datasets and serves generate. */
omni_status omni_image_file_patches(const char *path, int32_t size, int32_t channels, int32_t patch,
                                    omni_resize_mode mode, uint8_t *out, bool *resized);

/* Several images of one sample (image_text_to_text) are their paths joined by ';'. The
 * number of paths in such a list (1 + the number of ';'). */
int32_t omni_path_list_count(const char *list);
/* The patches of each image of a ';'-joined list, image after image (each as
 * omni_image_file_patches: (size / patch)^2 patches), into out [max_images * per image];
 * paths relative to the file `base` (NULL: as given). An empty path in the list, more than
 * max_images paths, or an image that cannot be read is OMNI_ERR_DATA naming it. *n_images
 * gets the images read; *resized (may be NULL) is increased by those not size x size. */
omni_status omni_image_list_patches(const char *list, const char *base, int32_t size,
                                    int32_t channels, int32_t patch, omni_resize_mode mode,
                                    int32_t max_images, uint8_t *out, int32_t *n_images,
                                    int64_t *resized);

/* The load-time normalisation of a stored patch byte: (v / 255 * 2 - 1) / sqrt(patch). */
float omni_patch_value(uint8_t v, int32_t patch);

/* ---- audio ------------------------------------------------------------------- */

typedef struct {
    int32_t sample_rate, mels, frames, patch;
    int32_t n_fft, hop; /* STFT window (Hann) and hop, in samples */
    float top_db;       /* dynamic range kept below the loudest bin (80 dB) */
} omni_audio_cfg;

/* Read a RIFF/WAVE file, PCM 16-bit, any channel count (mixed to mono) and any rate;
 * samples scaled to [-1, 1). Free *samples with omni_free. */
omni_status omni_wav_load(const char *path, float **samples, int64_t *n, int32_t *rate);
/* Write a mono PCM 16-bit WAV (tests, benchmarks). */
omni_status omni_wav_write(const char *path, const float *samples, int64_t n, int32_t rate,
                           int32_t channels);
/* Band-limited resampling (Hann-windowed sinc, cut-off at the lower Nyquist rate).
 * *n_out = ceil(n * to / from); out is allocated with omni_alloc. */
omni_status omni_resample(const float *in, int64_t n, int32_t from, int32_t to, float **out,
                          int64_t *n_out);

/* A reusable log-mel transform (FFTW plan, window, filter bank). */
typedef struct omni_logmel omni_logmel;
omni_status omni_logmel_create(omni_logmel **lm, const omni_audio_cfg *cfg);
void omni_logmel_free(omni_logmel *lm);
/* Mel power spectrogram in dB, out[m * frames + t] for mel band m (0 lowest) and frame
 * t (frame t starts at sample t * hop; past the end is silence). */
void omni_logmel_db(omni_logmel *lm, const float *x, int64_t n, float *out);
/* dB to bytes: the loudest bin (or -60 dB if all are quieter) maps to 255, top_db below
 * it to 0; power is scaled so a full-scale sine's band is near -3 dB. */
void omni_logmel_quantize(const omni_audio_cfg *cfg, const float *db, uint8_t *out);
/* The patch bytes `data build` stores for the WAV file at `path`: resampled to the rate of
 * `a`, log-mel (lm made for `a`), quantised and cut into patches (out: (mels / patch) *
 * (frames / patch) patches of patch * patch bytes); db [mels * frames] and spec_bytes
 * [mels * frames] are scratch. The same code builds datasets and serves generate. */
omni_status omni_audio_file_patches(const char *path, const omni_audio_cfg *a, omni_logmel *lm,
                                    float *db, uint8_t *spec_bytes, uint8_t *out);
/* Centre frequency in Hz of mel band m (HTK mel scale, 0 .. sample_rate / 2). */
float omni_mel_band_hz(const omni_audio_cfg *cfg, int32_t m);

/* ---- the cart-pole environment ----------------------------------------------- */

/*
 * Barto, Sutton & Anderson's cart-pole (as in OpenAI Gym's CartPole-v1): a pole on a
 * cart pushed left (action 0) or right (action 1) with 10 N, Euler steps of 20 ms; an
 * episode ends when |x| > 2.4 m, |theta| > 12 degrees, or after max_steps. Start states
 * are uniform in [-0.05, 0.05]^4 from omni_rng keyed by (seed, "cartpole", episode).
 */
#define OMNI_CARTPOLE_OBS     4
#define OMNI_CARTPOLE_ACTIONS 2

typedef struct {
    double x, x_dot, theta, theta_dot;
    int64_t t;
    bool done;
} omni_cartpole;

void omni_cartpole_reset(omni_cartpole *env, uint64_t seed, uint64_t episode);
/* The observation: (x, x_dot, theta, theta_dot) as floats. */
void omni_cartpole_observe(const omni_cartpole *env, float obs[OMNI_CARTPOLE_OBS]);
/* Apply an action (0 or 1); returns true when the episode has ended. */
bool omni_cartpole_step(omni_cartpole *env, int32_t action);
/* The expert: a linear state-feedback controller that balances the pole indefinitely. */
int32_t omni_cartpole_expert(const float obs[OMNI_CARTPOLE_OBS]);

/* The state drawn as a size x size picture of `channels` (1 or 3, grey either way) into px
 * [size * size * channels]: a chase view with the cart at the bottom centre, the pole at
 * its angle, and a mark for the track's centre (datasets/pixels.c). Pixel observations of
 * the demo's pixel task and of `act --env cartpole` for a task trained on them. */
void omni_cartpole_render(const omni_cartpole *env, int32_t size, int32_t channels, uint8_t *px);

/* A policy for rollouts: the action for an observation at step t. */
typedef int32_t (*omni_policy_fn)(void *ctx, const float *obs, int64_t t);
/* Run one episode of at most max_steps with `policy`; returns the steps survived (the
 * return). When obs/act are not NULL they receive [steps, OBS] and [steps]. */
int64_t omni_cartpole_rollout(uint64_t seed, uint64_t episode, int64_t max_steps,
                              omni_policy_fn policy, void *ctx, float *obs, int32_t *act);

/* ---- the grid world of the pixel-control demo --------------------------------- */

/*
 * An agent and a goal on a 4 x 4 grid (datasets/gridworld.c), observed as a picture, as a
 * state vector (the agent's row and column), or both. Actions 0 up, 1 down, 2 left,
 * 3 right (walls stop the agent). Reaching the goal pays 1 and ends the episode; every other
 * step pays -0.1; an episode ends after 20 steps. The goal is the bottom-right cell; the
 * agent starts in any other, drawn from omni_rng keyed by (seed, "gridworld", episode).
 */
#define OMNI_GRIDWORLD_SIDE    4
#define OMNI_GRIDWORLD_ACTIONS 4
#define OMNI_GRIDWORLD_STEPS   20
#define OMNI_GRIDWORLD_OBS     2 /* the state vector: the agent's row and column */

typedef struct {
    int32_t row, col, goal_row, goal_col;
    int64_t t;
    bool done;
} omni_gridworld;

void omni_gridworld_reset(omni_gridworld *g, uint64_t seed, uint64_t episode);
/* Apply an action (0..3); returns its reward; g->done says whether the episode ended. */
double omni_gridworld_step(omni_gridworld *g, int32_t action);
/* The expert: straight to the goal, columns first. */
int32_t omni_gridworld_expert(const omni_gridworld *g);
/* The state vector [OMNI_GRIDWORLD_OBS]: the agent's row and column, each mapped from
 * 0..3 to -1..1 (-1, -1/3, 1/3, 1: four distinct bins after mu-law). */
void omni_gridworld_observe(const omni_gridworld *g, float *obs);
/* The picture: size x size x channels (1 or 3), one cell per size / 4 pixels a side: dark
 * floor, a green goal, a white agent, cells with dark borders. */
void omni_gridworld_render(const omni_gridworld *g, int32_t size, int32_t channels, uint8_t *px);

/* ---- building ---------------------------------------------------------------- */

/* Build a dataset file from a spec (docs/design.md §3). Written to a temporary name and
 * renamed at the end: on failure no output file exists. `seed` >= 0 replaces the spec's
 * seed (`data build --seed`); -1 keeps it. Progress goes to `progress` (a bar on a
 * terminal, periodic lines otherwise; NULL: quiet). Not collective. */
omni_status omni_data_build(const char *spec_path, const char *out_path, int64_t seed,
                            FILE *progress);
/* The same build shared among the ranks of comm (`mpirun -np N omnimoe data build`): each
 * rank builds a contiguous share of every task and the file is written collectively through
 * MPI-IO; its content is that of omni_data_build whatever the number of ranks. A failure on
 * any rank fails every rank, with the message of the lowest failing rank, and leaves no
 * output. Progress goes to `progress` on the ranks that pass one (rank 0's share). `shards`:
 * no collective write, rank r of N writes its share alone to OUT-0000r-of-0000N.h5 (OUT's .h5
 * replaced), a shard file of every task; data.files listing the N files in order trains on
 * the content of the one file (every shard is renamed into place only when all are
 * complete). Collective. */
omni_status omni_data_build_shared(MPI_Comm comm, const char *spec_path, const char *out_path,
                                   int64_t seed, FILE *progress, bool shards);
/* The demo dataset (shapes, tones, arith, cartpole, shapes_qa, gridworld), deterministic
 * from `seed`. */
omni_status omni_data_demo(const char *out_path, uint64_t seed, FILE *progress);
/* Describe a dataset file (after checking all of it): tasks, counts, vocabulary, and
 * one decoded example per task. */
omni_status omni_data_info(const char *path, FILE *out);
/* `omnimoe data info --verify`: read every dataset of the file and check its checksums
 * (h5.h): OMNI_ERR_DATA naming the file and the array on a mismatch, or when an array
 * carries no checksum. Prints one line on success. */
omni_status omni_data_verify(const char *path, FILE *out);

/* ---- the tokenization of a trained model -------------------------------------- */

/*
 * Everything needed to turn raw inputs into the token stream a model was trained on, and
 * its outputs back (docs/design.md §8): the vocabulary layout, the value binning, the image
 * and audio settings, and the task table. The sampler makes it from the dataset files it
 * opened (omni_sampler_tokenization); a checkpoint stores it under /tokenization
 * (docs/checkpoints.md), so a checkpoint alone is enough to generate, eval or act.
 *
 * Task i of the table is the model's task i: its <task> token is tok_task0 + i, and every
 * per-task number (metrics, logs, checkpoints) is keyed by its name and index.
 */
typedef struct {
    char name[OMNI_NAME_MAX];
    omni_task_kind kind;
    int32_t index;                      /* the model's task index: 0..n_tasks-1 */
    int32_t token;                      /* its <task> token: tok_task0 + index */
    int32_t obs_dim, act_dim, discrete; /* control tasks; 0 for other kinds */
    int32_t images; /* control tasks: 1 when each step starts with image patches (pixel
                       observations; obs_dim may then be 0) */
} omni_tokenization_task;

typedef struct {
    int32_t text_vocab, bins;                        /* 256 byte ids, 1024 value bins */
    int32_t tok_bin0, tok_pad, tok_eos, tok_sep;     /* special ids (OMNI_TOK_*) */
    int32_t tok_task0, vocab;                        /* vocab = tok_task0 + n_tasks */
    double mulaw_mu, mulaw_m;                        /* 100 and 256 */
    int32_t image_size, image_channels, image_patch; /* 0 when no task has images */
    omni_resize_mode image_resize; /* how images of another size were fitted (image.resize) */
    omni_audio_cfg audio;          /* all 0 when no task has audio */
    int32_t n_tasks;
    omni_tokenization_task tasks[OMNI_MAX_TASKS]; /* by index: tasks[i].index == i */
} omni_tokenization;

/* The tokenization of this build's layout (OMNI_TOK_*, OMNI_BINS, mu-law) with no task,
 * no images and no audio: where the sampler starts before it adds each task. */
void omni_tokenization_init(omni_tokenization *t);
/* Task `name` of t, or NULL. */
const omni_tokenization_task *omni_tokenization_find(const omni_tokenization *t, const char *name);
/*
 * Compare the tokenization a model was trained with (`then`, a checkpoint's) with that of
 * the data at hand (`now`): true when they are the same (layout, values, image/audio
 * settings, and the task table: the same names with the same kind, index and control
 * dimensions). Otherwise false, and `why` (may be NULL) says what differs, naming the
 * tasks: "task shapes has index 0 in the checkpoint, 1 in the data; task qa (index 4) is
 * not in the checkpoint".
 */
bool omni_tokenization_same(const omni_tokenization *then, const omni_tokenization *now, char *why,
                            size_t why_len);

/* ---- reading and sampling ---------------------------------------------------- */

/* One task as the sampler sees it (read-only view). */
typedef struct {
    char name[OMNI_NAME_MAX];
    omni_task_kind kind;
    const char *file;   /* the dataset file it came from */
    double weight;      /* sampling weight from the experiment (before temperature) */
    double loss_weight; /* from the experiment */
    int64_t n_samples[OMNI_SPLIT_COUNT];
    int64_t n_elements[OMNI_SPLIT_COUNT];
    int64_t n_val_windows; /* fixed validation windows (omni_sampler_fill_val) */
} omni_task_info;

typedef struct omni_sampler omni_sampler;

/*
 * Open the dataset files of an experiment (data.files) and select its tasks
 * (data.tasks, in that order; all tasks of the files when empty). The files' attributes,
 * array types, shapes and end offsets are checked before this returns (OMNI_ERR_DATA
 * naming the file and fault); samples are read later, in windows, through a cache of
 * data.cache_mb MiB, each checked (offsets, ids, sizes, HDF5's chunk checksums) as it is
 * read: a failure then is kept and reported by omni_sampler_status. Not collective: each
 * rank opens the files itself; callers agree on the status (omni_mpi_agree).
 */
omni_status omni_sampler_open(omni_sampler **s, const omni_experiment *x);
void omni_sampler_close(omni_sampler *s);

omni_data_dims omni_sampler_dims(const omni_sampler *s);
int omni_sampler_n_tasks(const omni_sampler *s);
const omni_task_info *omni_sampler_task(const omni_sampler *s, int task);
/* The tokenization of the opened files: the task table in the sampler's task order
 * (task i is omni_sampler_task(s, i)). Lives as long as the sampler. */
const omni_tokenization *omni_sampler_tokenization(const omni_sampler *s);

/* Allocate the arrays of a batch of n_seq windows of `context` positions. */
omni_status omni_batch_alloc(omni_batch *b, int64_t n_seq, int64_t context, int64_t patch_dim);
void omni_batch_free(omni_batch *b);

/*
 * Fill window `row` of `b` for slot `slot` of the global batch of step `step`: a pure
 * function of (sampler's data, experiment weights and temperature, seed, split, step,
 * slot), so the plan does not depend on the number of processes. Draws come from the
 * omni_rng stream (seed, "plan/train" or "plan/val", step) at offset slot << 24: a task
 * with probability proportional to weight^(1/temperature), a sample uniform in its
 * split, and the sample packed whole, or cut when it would not fit: a sample longer than
 * the window starts at a random offset (a random step boundary for control) with its
 * <task> token in front, and the last sample is cut at the window's end. Returns the
 * loss-bearing positions of the window (sum over slots = batch->loss_norm).
 */
int64_t omni_sampler_fill(const omni_sampler *s, omni_split split, uint64_t seed, int64_t step,
                          int64_t slot, omni_batch *b, int64_t row);
/* Sample i (0 <= i < n_samples[split]) of task `task` as stored, after its <task> token:
 * its n elements (token ids, OMNI_DS_PATCH for the next patch), their loss flags, and its
 * patches (patch bytes in order, NULL for kinds without). Views into the sampler, valid
 * until its next read; n = 0 after a failed read (omni_sampler_status). */
typedef struct {
    int64_t n;
    const int32_t *tok;
    const uint8_t *loss;
    const uint8_t *patches;
} omni_sample;
void omni_sampler_sample(const omni_sampler *s, int task, omni_split split, int64_t i,
                         omni_sample *out);

/* The first failure of a read since open (OMNI_OK: none): a damaged or unreadable part of a
 * file, found as a window was filled; the window is then incomplete. Callers check it
 * after filling (and agree on it across ranks). */
omni_status omni_sampler_status(const omni_sampler *s);
/* The read cache: hits and misses (chunks) since open, and its size in bytes. */
void omni_sampler_cache_stats(const omni_sampler *s, int64_t *hits, int64_t *misses, size_t *bytes);

/* Fill window `row` with the i-th fixed validation window of `task` (0 <= i <
 * n_val_windows): the task's validation samples packed in file order, each window
 * starting at a sample, a long sample cut at its start. Returns loss positions. */
int64_t omni_sampler_fill_val(const omni_sampler *s, int task, int64_t i, omni_batch *b,
                              int64_t row);

#endif /* OMNI_DATASETS_H */
