/*
 * inference — using a trained model (docs/design.md §8): a session opened from a checkpoint,
 * autoregressive decoding with a KV cache (the cache-aware forward is model.h's
 * omni_model_forward_cached), greedy / temperature + top-k / beam search, decoding
 * constrained to each task kind's legal tokens, and teacher-forced scoring, batched over
 * samples. MoE layers are dropless at inference; under mpirun -np N the experts are
 * sharded and exchanged as in training (the worker's omni_mpi_moe_comm).
 *
 * Collectives: every function that runs the model is COLLECTIVE over the session's
 * communicator, because the MoE layers exchange tokens. Each rank passes ITS OWN prompts
 * (any number, 0 included); the calls return on every rank when every rank's prompts are
 * done. A rank with nothing to do still calls, with n = 0.
 *
 * Prompts. A prompt is what follows the task's <task> token (the session adds it in
 * front): elements, each a token id or OMNI_PROMPT_PATCH (the prompt's next patch), as
 * the dataset builder serializes a sample (datasets.h). Patches are the bytes the builder
 * stores ([patch_dim] per patch, for the task's image or audio geometry). For a *_to_text
 * task the prompt is the input and its <sep>; for text, the start of the text; for
 * control, the history: per step observation tokens, <sep>, and (for past steps) the
 * action tokens, ending with the <sep> after the newest observation.
 *
 * Prefix attention (model.attention: prefix): the prompt positions that training treats as
 * the sample's prefix (everything before its first loss-bearing element: for *_to_text the
 * whole prompt, for text the <task> token, for control the <task> token, the first
 * observation and its <sep>) see each other both ways, exactly as in training.
 *
 * Randomness: sampling draws from omni_rng keyed by (opts.seed, "decode", prompt id), so
 * a prompt's output depends neither on the number of processes nor on its batch.
 */
#ifndef OMNI_INFERENCE_H
#define OMNI_INFERENCE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base.h"
#include "datasets.h"
#include "experts.h"
#include "experiment.h"
#include "model.h"

#define OMNI_PROMPT_PATCH OMNI_DS_PATCH /* element marker of a patch */

typedef struct omni_infer omni_infer;

/* ---- the session --------------------------------------------------------------- */

/*
 * Collective: open checkpoint `path` on the ranks of comm (experts sharded as in
 * training), for batches of up to max_batch sequences per rank (beams count: a batch of
 * n prompts with beam B uses n * B). The checkpoint must carry its tokenization
 * (OMNI_ERR_CKPT naming the file otherwise). MoE layers are made dropless.
 */
omni_status omni_infer_open(MPI_Comm comm, const char *path, int64_t max_batch, omni_infer **out);
void omni_infer_close(omni_infer *s);

/* The tokenization the model was trained with (vocabulary, image and audio settings, task
 * table with control dimensions), as the checkpoint holds it. */
const omni_tokenization *omni_infer_tokenization(const omni_infer *s);
/* The experiment the model was trained with, and its sizes. */
const omni_experiment *omni_infer_experiment(const omni_infer *s);
int64_t omni_infer_vocab(const omni_infer *s);
int64_t omni_infer_context(const omni_infer *s);
int omni_infer_n_tasks(const omni_infer *s);
/* Index of task `name`, or -1. */
int omni_infer_find_task(const omni_infer *s, const char *name);
const char *omni_infer_task_name(const omni_infer *s, int task);
omni_task_kind omni_infer_task_kind(const omni_infer *s, int task);

/* ---- decoding ------------------------------------------------------------------ */

/* One prompt (see the file comment). */
typedef struct {
    int task;               /* task index (its <task> token goes first) */
    uint64_t id;            /* keys the prompt's random stream: a global sample number */
    int64_t n;              /* elements */
    const int32_t *tok;     /* [n] token ids, or OMNI_PROMPT_PATCH */
    const uint8_t *patches; /* [patches in tok, patch_dim] stored patch bytes (or NULL) */
} omni_prompt;

typedef struct {
    int64_t max_new;      /* tokens to generate at most; 0: until <eos>, within the context */
    double temperature;   /* 0: greedy (argmax); > 0: sample from softmax(logits / T) */
    int64_t top_k;        /* with temperature > 0: sample among the k likeliest; 0: all */
    int64_t beam;         /* 0: no beam search; B >= 1: beam search of width B (length-
                             normalised); width 1 gives the greedy tokens */
    uint64_t seed;        /* keys sampling */
    const uint8_t *legal; /* [vocab] 1 = may be emitted; NULL: the task kind's legal set */
    bool stop_at_eos;     /* stop a prompt at <eos> (which is not returned); set by
                             omni_decode_defaults for text outputs */
} omni_decode_opts;

/* Defaults: greedy, max_new 0, beam 0, seed 1, legal NULL, stop_at_eos true. */
void omni_decode_defaults(omni_decode_opts *o);

/*
 * The legal output tokens of a task kind, legal[vocab]: text bytes and <eos> for the
 * kinds with text outputs (text, *_to_text); the value bins for control. Not collective.
 */
void omni_infer_legal_tokens(const omni_infer *s, int task, uint8_t *legal);

/*
 * Collective. Generate for this rank's n prompts: prompt i's tokens go to
 * out[i * out_stride ...] (at most out_stride of them; max_new must be <= out_stride),
 * n_out[i] gets their count (an ending <eos> is not included). Only legal tokens are
 * emitted. Bad prompts (a token outside the vocabulary, a patch of a task without patches,
 * a prompt that leaves no room in the context) are OMNI_ERR_DATA naming the prompt and
 * the fault, agreed over the ranks.
 */
omni_status omni_infer_generate(omni_infer *s, const omni_prompt *prompts, int64_t n,
                                const omni_decode_opts *o, int32_t *out, int64_t out_stride,
                                int64_t *n_out);

/*
 * Collective. Teacher forcing: prompt i is a whole serialized sample after its <task>
 * token, with loss[i][j] (the builder's loss flags) marking the elements the model must
 * predict. For each loss-bearing element: logp[i][j] = log p(element | everything
 * before), and correct[i][j] = 1 when it is the argmax. Arrays have prompt i's n entries
 * (0 where no loss). One call takes at most max_batch prompts per rank.
 */
omni_status omni_infer_score(omni_infer *s, const omni_prompt *prompts, int64_t n,
                             const uint8_t *const *loss, double *const *logp,
                             uint8_t *const *correct);

/* ---- evaluation ---------------------------------------------------------------- */

/* What `omnimoe eval` measures of one task (docs/design.md §8). */
typedef struct {
    char name[OMNI_NAME_MAX];
    omni_task_kind kind;
    int64_t samples;
    double loss;     /* mean next-token cross-entropy over the loss-bearing tokens (nats) */
    double accuracy; /* share of loss-bearing tokens whose argmax is the target */
    bool has_generation;
    double exact_match; /* *_to_text: share of samples whose greedy caption from the input
                           alone equals the reference */
    double cer;         /* edit distance (bytes) / reference bytes, summed over samples */
    bool has_bpb;
    double bits_per_byte; /* text: -log2 p summed over the text bytes / their count */
    bool has_action;
    double action_accuracy; /* control: share of steps whose action tokens are all the
                               argmax under teacher forcing */
} omni_eval_task;

typedef struct {
    const char *tasks; /* "A,B": the tasks to evaluate; NULL: every task of the data that
                          the model knows */
    omni_split split;  /* OMNI_SPLIT_VAL by default */
    int64_t limit;     /* the first `limit` samples of each task; 0: all */
    int64_t generate;  /* generate captions of at most this many samples per to-text task
                          (-1: every evaluated sample; 0: none) */
    int64_t show;      /* rank 0 prints its first `show` captions of each task next to
                          their references (stdout) */
} omni_eval_opts;

/*
 * Collective. Evaluate the session's model on a dataset file: the samples of each task are
 * split over the ranks in contiguous ranges and the per-sample results gathered on rank 0
 * in sample order, so the numbers do not depend on the number of processes. Long samples
 * are scored in windows of the context (control windows at step boundaries), each with
 * its <task> token in front, as training cuts them. A task of the data that the model has
 * with another kind, or an unknown task named in opts->tasks, is OMNI_ERR_DATA.
 * out[n_tasks] and *n_out are valid on rank 0 (every rank gets *n_out).
 */
omni_status omni_infer_eval(omni_infer *s, const char *data_path, const omni_eval_opts *o,
                            omni_eval_task *out, int *n_out);
/* Rank 0: print the table of results, and write them as JSON (docs/design.md §8 shape). */
void omni_eval_print(FILE *f, const omni_eval_task *r, int n);
omni_status omni_eval_write_json(const char *path, const omni_eval_task *r, int n);

/* ---- acting ------------------------------------------------------------------------ */

/*
 * An act policy (omni_act_policy, below) that decodes with the session: the loop's prompt
 * (its <task> token first) becomes an omni_prompt of that task, and the action tokens are
 * decoded greedily, constrained to [tok_lo, tok_hi). Rank 0 decodes; the other ranks take
 * part in the MoE exchanges with no prompt. The session must outlive the policy.
 */
typedef struct omni_act_policy omni_act_policy;
void omni_infer_act_policy(omni_infer *s, omni_act_policy *p);

/* ---- training's periodic evaluation --------------------------------------------- */

/*
 * Not collective on its own (every rank calls it alike): a session shaped like a training
 * job's model — experiment x, the data dims and the tokenization of its sampler — with
 * the experts sharded over comm as the worker shards them. Its parameters come from
 * omni_infer_set_params before each use.
 */
omni_status omni_infer_create_like(MPI_Comm comm, const omni_experiment *x,
                                   const omni_data_dims *dims, const omni_tokenization *tk,
                                   int64_t max_batch, omni_infer **out);
/* Copy the current parameters (and balancing biases) of a training model and its MoE layers
 * (NULL for a dense model) into the session. Not collective. */
void omni_infer_set_params(omni_infer *s, omni_model *m, omni_moe *moe);
/*
 * Collective: the exact match of the greedy captions of the first n validation samples of
 * each task with text outputs (*_to_text) of sampler sp, whose task k is the model's task
 * k. exact[k] on rank 0; -1 for tasks without captions.
 */
omni_status omni_infer_exact_match(omni_infer *s, const omni_sampler *sp, int64_t n, double *exact);

/* ==== acting: environments and the Gato loop ==================================== */

/*
 * Acting (docs/design.md §8, `omnimoe act`): environments and the Gato loop.
 *
 * An environment is the built-in cart-pole ("cartpole") or any program started as a
 * child process (`/bin/sh -c COMMAND`) and spoken to in JSON lines over its stdin and
 * stdout:
 *     omnimoe -> {"reset": SEED}                 child -> {"obs": [..]}
 *     omnimoe -> {"action": [..]}                child -> {"obs": [..], "reward": R, "done": B}
 * actions are integers for a discrete task, numbers for a continuous one; other keys of a
 * reply are ignored; at the end omnimoe closes the child's stdin and reaps it. The
 * child's stderr is ours. A reply that is not one JSON object on one line, lacks a key,
 * has an obs of the wrong length or a non-finite value, a child that exits, closes its
 * output or does not answer within the timeout: OMNI_ERR_DATA naming the fault (the loop
 * adds the episode and step). Never a hang.
 *
 * The loop (omni_act_run) owns the token history of docs/design.md §8 and asks a policy for
 * the action tokens of each step; the policy is whatever decodes with a model or a
 * stand-in in tests. omni_infer_act plays a task with a session's model (`omnimoe act`,
 * and training's eval.env rollouts).
 */

/* ---- environments (not collective: one process talks to one) ------------------ */

#define OMNI_ENV_CARTPOLE  "cartpole"
#define OMNI_ENV_GRIDWORLD "gridworld" /* a picture, the state vector or both (datasets.h) */
#define OMNI_ENV_LINE_MAX  (1 << 20)   /* longest reply line accepted, in bytes */
#define OMNI_ENV_TIMEOUT   30.0        /* default seconds to wait for a reply */

typedef struct omni_env omni_env;

/*
 * Open an environment for a task with obs_dim observations and act_dim actions
 * (discrete or continuous): "cartpole" is the built-in one (which must fit the task:
 * 4 observations, 1 discrete action), anything else a command for /bin/sh -c, started
 * now. timeout (> 0) is the seconds to wait for each reply. A command that cannot be
 * started is found at the first reply (the shell exits 127 or 126), reported there.
 */
omni_status omni_env_open(omni_env **env, const char *what, int32_t obs_dim, int32_t act_dim,
                          bool discrete, double timeout);
/* Pixel observations, for a control task trained on pictures (its tokenization's images):
 * from now on every reset and step also yields a picture, fitted to size x size x channels
 * by `mode` as `data build` fits the images of an episodes file. The built-in cart-pole
 * draws itself (omni_cartpole_render); a child must add "image": nested lists H x W or
 * H x W x C (C = 1 or 3) of integers 0..255 to every reply that carries "obs" ("obs" may
 * be left out when the task has no state vector, obs_dim 0). A missing or malformed
 * "image" (ragged, other channel counts, values outside 0..255; another size under
 * resize: error) is OMNI_ERR_DATA naming the fault. */
omni_status omni_env_want_images(omni_env *env, int32_t size, int32_t channels,
                                 omni_resize_mode mode);
/* The picture of the last reset or step ([size * size * channels]); NULL when not wanted. */
const uint8_t *omni_env_image(const omni_env *env);
/* Number of legal values of a discrete action: 2 for the built-in cart-pole, OMNI_BINS
 * (every bin) for a child, which alone knows its action space. */
int32_t omni_env_discrete_actions(const omni_env *env);
/* Start an episode whose start state is drawn from `seed`; obs [obs_dim]. */
omni_status omni_env_reset(omni_env *env, uint64_t seed, float *obs);
/* One step with act_i [act_dim] (discrete) or act_f [act_dim] (continuous); obs gets the
 * next observation. */
omni_status omni_env_step(omni_env *env, const float *act_f, const int32_t *act_i, float *obs,
                          double *reward, bool *done);
/* Close the child's stdin, wait a moment for it to exit, then end it (SIGKILL to its
 * process group) and reap it. NULL is fine. */
void omni_env_close(omni_env *env);

/* ---- the Gato loop ------------------------------------------------------------------ */

/* The task being acted, from the checkpoint's tokenization. */
typedef struct {
    const char *name;
    int32_t token; /* its <task> token id */
    int32_t obs_dim, act_dim;
    bool discrete;
    int64_t context; /* the model's context: the longest prompt plus its action tokens */
    bool images;     /* pixel observations: each step starts with the picture's patches
                        (obs_dim may be 0), from the environment at the image settings below */
    int32_t image_size, image_channels, image_patch;
    omni_resize_mode image_resize;
} omni_act_task;

/*
 * A policy: from prompt [n_prompt] (the <task> token, then whole past steps, then the
 * current observation's tokens and <sep>; for a pixel task each step starts with the
 * picture's patches, OMNI_PROMPT_PATCH in the prompt, their bytes in order in `patches`; positions
 * 0.., one sample; its first n_prefix tokens are the sample's prefix, up to the first action),
 * write the next n_act tokens, each in [tok_lo, tok_hi), into out. COLLECTIVE over the loop's comm:
 * every rank calls it with the same prompt; rank 0's out is used. Returns a status agreed across
 * ranks.
 */
typedef struct omni_act_policy {
    void *ctx;
    omni_status (*act)(void *ctx, const int32_t *prompt, int64_t n_prompt, int64_t n_prefix,
                       const uint8_t *patches, int32_t n_act, int32_t tok_lo, int32_t tok_hi,
                       int32_t *out);
} omni_act_policy;

typedef struct {
    const char *env;   /* "cartpole" or a command */
    int64_t episodes;  /* >= 1 */
    int64_t max_steps; /* >= 1: an episode ends there if not done before */
    uint64_t seed;     /* episode e resets with seed + e */
    double timeout;    /* seconds for each reply of a child (> 0) */
    FILE *progress;    /* rank 0 prints "episode E: return R, S steps" here; NULL: quiet */
} omni_act_options;

typedef struct {
    int64_t episodes;
    double *returns; /* [episodes] sum of rewards */
    int64_t *steps;  /* [episodes] steps taken */
    double mean_return;
} omni_act_result;

/*
 * COLLECTIVE over comm. Run opt->episodes episodes of the Gato loop of docs/design.md §8:
 * rank 0 opens and speaks to the environment; every rank keeps the same token history
 * and calls the policy. Each episode: reset, then repeat: the observation's tokens and
 * <sep> are appended to the history (the oldest whole steps leave it so that the <task>
 * token, the history and the action fit the context), the policy gives the action tokens
 * (legal: value bins, only the environment's discrete actions when discrete), they are
 * turned into values and sent; until done or max_steps. Every rank gets the result
 * (free with omni_act_result_free). An environment fault is OMNI_ERR_DATA "episode E,
 * step S: ..." (E from 1, S the steps taken before it), agreed across ranks.
 */
omni_status omni_act_run(MPI_Comm comm, const omni_act_task *task, const omni_act_options *opt,
                         const omni_act_policy *policy, omni_act_result *res);
void omni_act_result_free(omni_act_result *res);

/*
 * COLLECTIVE over comm (the session's). The whole of `omnimoe act` after opening the
 * checkpoint, and what training's periodic evaluation calls for eval.env: play
 * opt->episodes episodes of control task `task` with the model of session s (its
 * tokenization gives obs_dim, act_dim, discrete and the <task> token; rank 0 brings the
 * prompt, the other ranks join the decoding with none). An unknown task, or one not of
 * kind control, is OMNI_ERR_USAGE naming it (and the tasks the model has).
 */
omni_status omni_infer_act(MPI_Comm comm, omni_infer *s, const char *task,
                           const omni_act_options *opt, omni_act_result *res);

/* Write {"episodes": [{"return": R, "steps": S}, ..], "mean_return": M} to path (through
 * a temporary name and a rename: never half-written). Not collective. */
omni_status omni_act_write_json(const omni_act_result *res, const char *path);

#endif /* OMNI_INFERENCE_H */
