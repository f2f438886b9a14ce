/*
 * inference — acting (docs/design.md §8, `omnimoe act`): environments and the Gato loop.
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
#ifndef OMNI_INFERENCE_ENV_H
#define OMNI_INFERENCE_ENV_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base.h"
#include "inference.h"

/* ---- environments (not collective: one process talks to one) ------------------ */

#define OMNI_ENV_CARTPOLE "cartpole"
#define OMNI_ENV_LINE_MAX (1 << 20) /* longest reply line accepted, in bytes */
#define OMNI_ENV_TIMEOUT  30.0      /* default seconds to wait for a reply */

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
} omni_act_task;

/*
 * A policy: from prompt [n_prompt] (the <task> token, then whole past steps, then the
 * current observation's tokens and <sep>; positions 0.., one sample; its first n_prefix
 * tokens are the sample's prefix, up to the first action), write the next n_act tokens,
 * each in [tok_lo, tok_hi), into out. COLLECTIVE over the loop's comm: every rank calls
 * it with the same prompt; rank 0's out is used. Returns a status agreed across ranks.
 */
typedef struct omni_act_policy {
    void *ctx;
    omni_status (*act)(void *ctx, const int32_t *prompt, int64_t n_prompt, int64_t n_prefix,
                       int32_t n_act, int32_t tok_lo, int32_t tok_hi, int32_t *out);
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

#endif /* OMNI_INFERENCE_ENV_H */
