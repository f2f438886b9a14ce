/*
 * The Gato loop (docs/design.md §8): episodes of an environment driven by a policy that sees
 * the task's token history, and the JSON summary of `omnimoe act`. Rank 0 speaks to the
 * environment; each step it broadcasts the observation's tokens, every rank builds the
 * same prompt and calls the (collective) policy; rank 0's action tokens come with the
 * next step's broadcast, so every rank's history stays the same. One broadcast a step.
 */
#include "inference.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "datasets.h"
#include "inference.h"

/* Where an episode is, for messages: "episode 2, reset" or "episode 2, step 17". */
static omni_status at_step(omni_status st, int64_t episode, int64_t step)
{
    if (step == 0)
        return omni_fail_context(st, "episode %" PRId64 ", reset: ", episode + 1);
    return omni_fail_context(st, "episode %" PRId64 ", step %" PRId64 ": ", episode + 1, step);
}

omni_status omni_act_run(MPI_Comm comm, const omni_act_task *task, const omni_act_options *opt,
                         const omni_act_policy *policy, omni_act_result *res)
{
    memset(res, 0, sizeof *res);
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    const int32_t od = task->obs_dim, ad = task->act_dim;
    /* Pixel observations: each step starts with the picture's patches (Gato). */
    const int64_t side = task->images ? task->image_size / task->image_patch : 0;
    const int64_t grid = side * side,
                  dim = (int64_t)task->image_patch * task->image_patch * task->image_channels;
    const int64_t step_len = grid + od + 1 + ad;
    if (od < (task->images ? 0 : 1) || ad < 1 ||
        (task->images && (task->image_patch < 1 || grid < 1)))
        return omni_fail(OMNI_ERR_INTERNAL, "act: task '%s' has obs_dim %d, act_dim %d", task->name,
                         (int)od, (int)ad);
    if (opt->episodes < 1 || opt->max_steps < 1)
        return omni_fail(OMNI_ERR_USAGE, "act: episodes and max steps must be >= 1");
    if (1 + step_len > task->context)
        return omni_fail(OMNI_ERR_DATA,
                         "act: task '%s': the <task> token and one step (%" PRId64
                         " patches, %d observations, <sep>, %d actions) do not fit the model's "
                         "context of %" PRId64,
                         task->name, grid, (int)od, (int)ad, task->context);
    /* Whole past steps that fit before the current observation, <sep> and the action. */
    const int64_t keep = (task->context - 1 - step_len) / step_len;

    omni_status st = OMNI_OK;
    int32_t *hist = omni_alloc(keep * step_len + 1, sizeof *hist, "act history");
    int32_t *prompt = omni_alloc(task->context, sizeof *prompt, "act prompt");
    int32_t *msg = omni_alloc(2 + ad + od, sizeof *msg, "act step message");
    int32_t *cur = omni_alloc(od > 0 ? od : 1, sizeof *cur, "act observation tokens");
    int32_t *act_tok = omni_alloc(ad, sizeof *act_tok, "act action tokens");
    int32_t *act_i = omni_alloc(ad, sizeof *act_i, "act actions");
    float *act_f = omni_alloc(ad, sizeof *act_f, "act actions");
    float *obs = omni_alloc(od > 0 ? od : 1, sizeof *obs, "act observation");
    /* Pixel tasks: the patches of the kept steps then of the current one (the prompt's, in
     * order), and of the picture just received. */
    uint8_t *pat = omni_alloc((keep + 1) * grid * dim + 1, 1, "act patches");
    uint8_t *new_pat = omni_alloc(grid * dim + 1, 1, "act patches");
    res->returns = omni_alloc(opt->episodes, sizeof *res->returns, "act returns");
    res->steps = omni_alloc(opt->episodes, sizeof *res->steps, "act steps");
    if (!hist || !prompt || !msg || !cur || !act_tok || !act_i || !act_f || !obs || !pat ||
        !new_pat || !res->returns || !res->steps)
        st = OMNI_ERR_NOMEM;
    res->episodes = opt->episodes;

    omni_env *env = NULL;
    if (!st && rank == 0)
        st = omni_env_open(&env, opt->env, od, ad, task->discrete, opt->timeout);
    if (!st && rank == 0 && task->images)
        st = omni_env_want_images(env, task->image_size, task->image_channels, task->image_resize);
    if ((st = omni_mpi_agree(comm, st)))
        goto out;
    /* The legal action tokens: every bin, or the environment's discrete actions. */
    int32_t n_legal = rank == 0 && task->discrete ? omni_env_discrete_actions(env) : OMNI_BINS;
    if ((st = omni_mpi_check(MPI_Bcast(&n_legal, 1, MPI_INT32_T, 0, comm), "act: broadcast")))
        goto out;
    const int32_t tok_lo = OMNI_TOK_BIN0, tok_hi = OMNI_TOK_BIN0 + n_legal;

    uint8_t *cur_pat = pat + keep * grid * dim;
    for (int64_t e = 0; e < opt->episodes; e++) {
        int64_t t = 0, n_hist = 0;
        double ret = 0.0;
        bool done = false;
        if (rank == 0)
            st = omni_env_reset(env, opt->seed + (uint64_t)e, obs);
        for (;;) {
            /* One broadcast a step: rank 0's status, whether the episode is over, the
             * action tokens just sent (after step 1) and the observation's tokens; for a
             * pixel task a second one with the picture's patches. */
            if (rank == 0) {
                if (st)
                    st = at_step(st, e, t);
                msg[0] = (int32_t)st;
                msg[1] = done || t >= opt->max_steps;
                memcpy(msg + 2, act_tok, (size_t)ad * sizeof *msg);
                if (!st)
                    omni_control_obs_tokens(obs, od, msg + 2 + ad);
                if (!st && grid > 0) {
                    omni_image im = {.h = task->image_size,
                                     .w = task->image_size,
                                     .c = task->image_channels,
                                     .px = (uint8_t *)omni_env_image(env)};
                    omni_image_patches(&im, task->image_patch, new_pat);
                }
            }
            if ((st = omni_mpi_check(MPI_Bcast(msg, (int)(2 + ad + od), MPI_INT32_T, 0, comm),
                                     "act: broadcast")))
                goto out;
            if (msg[0]) {
                /* Rank 0 failed: everyone leaves with its status (and rank 0 its message). */
                st = omni_mpi_agree(comm, rank == 0 ? (omni_status)msg[0] : OMNI_OK);
                goto out;
            }
            if (grid > 0 &&
                (st = omni_mpi_check(MPI_Bcast(new_pat, (int)(grid * dim), MPI_UINT8_T, 0, comm),
                                     "act: broadcast")))
                goto out;
            /* The step just taken joins the history; the oldest leaves when it is full. */
            if (t > 0 && keep > 0) {
                if (n_hist == keep) {
                    memmove(hist, hist + step_len, (size_t)((keep - 1) * step_len) * sizeof *hist);
                    memmove(pat, pat + grid * dim, (size_t)((keep - 1) * grid * dim));
                    n_hist--;
                }
                int32_t *s = hist + n_hist * step_len;
                for (int64_t k = 0; k < grid; k++)
                    s[k] = OMNI_PROMPT_PATCH;
                memcpy(s + grid, cur, (size_t)od * sizeof *s);
                s[grid + od] = OMNI_TOK_SEP;
                memcpy(s + grid + od + 1, msg + 2, (size_t)ad * sizeof *s);
                memcpy(pat + n_hist * grid * dim, cur_pat, (size_t)(grid * dim));
                n_hist++;
            }
            memcpy(cur, msg + 2 + ad, (size_t)od * sizeof *cur);
            if (msg[1])
                break;
            /* <task>, the kept steps, this step's picture and observation, <sep>; the
             * patches of the kept steps and of this one follow each other in pat. */
            memcpy(pat + n_hist * grid * dim, new_pat, (size_t)(grid * dim));
            memcpy(cur_pat, new_pat, (size_t)(grid * dim));
            int64_t n = 0;
            prompt[n++] = task->token;
            memcpy(prompt + n, hist, (size_t)(n_hist * step_len) * sizeof *prompt);
            n += n_hist * step_len;
            for (int64_t k = 0; k < grid; k++)
                prompt[n++] = OMNI_PROMPT_PATCH;
            memcpy(prompt + n, cur, (size_t)od * sizeof *prompt);
            n += od;
            prompt[n++] = OMNI_TOK_SEP;
            if ((st = policy->act(policy->ctx, prompt, n, 1 + grid + (int64_t)od + 1,
                                  grid > 0 ? pat : NULL, ad, tok_lo, tok_hi, act_tok))) {
                st = at_step(st, e, t + 1);
                goto out;
            }
            t++;
            if (rank == 0) {
                for (int32_t j = 0; !st && j < ad; j++)
                    if (act_tok[j] < tok_lo || act_tok[j] >= tok_hi)
                        st = omni_fail(OMNI_ERR_INTERNAL,
                                       "act: the policy gave token %d, outside [%d, %d)",
                                       (int)act_tok[j], (int)tok_lo, (int)tok_hi);
                double reward = 0.0;
                if (!st) {
                    bool bins = omni_control_act_values(act_tok, ad, task->discrete, act_f, act_i);
                    OMNI_ASSERT(bins); /* checked just above */
                    st = omni_env_step(env, act_f, act_i, obs, &reward, &done);
                }
                ret += reward;
            }
        }
        res->returns[e] = ret;
        res->steps[e] = t;
        if (rank == 0 && opt->progress) {
            fprintf(opt->progress, "episode %" PRId64 ": return %g, %" PRId64 " steps\n", e + 1,
                    ret, t);
            fflush(opt->progress);
        }
    }
    /* Rank 0 summed the rewards; every rank gets them. */
    if ((st = omni_mpi_check(MPI_Bcast(res->returns, (int)opt->episodes, MPI_DOUBLE, 0, comm),
                             "act: broadcast")))
        goto out;
    double sum = 0.0;
    for (int64_t e = 0; e < opt->episodes; e++)
        sum += res->returns[e];
    res->mean_return = sum / (double)opt->episodes;
out:
    if (rank == 0)
        omni_env_close(env);
    omni_free(hist);
    omni_free(prompt);
    omni_free(msg);
    omni_free(cur);
    omni_free(act_tok);
    omni_free(act_i);
    omni_free(act_f);
    omni_free(obs);
    omni_free(pat);
    omni_free(new_pat);
    if (st)
        omni_act_result_free(res);
    return st;
}

/* ---- acting with a session's model ---------------------------------------------- */

omni_status omni_infer_act(MPI_Comm comm, omni_infer *s, const char *task_name,
                           const omni_act_options *opt, omni_act_result *res)
{
    memset(res, 0, sizeof *res);
    const omni_tokenization *tk = omni_infer_tokenization(s);
    const omni_tokenization_task *t = omni_tokenization_find(tk, task_name);
    if (!t) {
        char names[1024] = "";
        size_t used = 0;
        for (int i = 0; i < tk->n_tasks && used < sizeof names; i++)
            used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "",
                                     tk->tasks[i].name);
        return omni_fail(OMNI_ERR_USAGE, "the model has no task '%s' (its tasks: %s)", task_name,
                         names);
    }
    if (t->kind != OMNI_KIND_CONTROL)
        return omni_fail(OMNI_ERR_USAGE, "task '%s' is of kind %s, not control: it has no actions",
                         task_name, omni_task_kind_name(t->kind));
    const omni_act_task task = {.name = t->name,
                                .token = t->token,
                                .obs_dim = t->obs_dim,
                                .act_dim = t->act_dim,
                                .discrete = t->discrete != 0,
                                .context = omni_infer_context(s),
                                .images = t->images != 0,
                                .image_size = tk->image_size,
                                .image_channels = tk->image_channels,
                                .image_patch = tk->image_patch,
                                .image_resize = tk->image_resize};
    omni_act_policy pol;
    omni_infer_act_policy(s, &pol);
    return omni_act_run(comm, &task, opt, &pol, res);
}

void omni_act_result_free(omni_act_result *res)
{
    omni_free(res->returns);
    omni_free(res->steps);
    memset(res, 0, sizeof *res);
}

omni_status omni_act_write_json(const omni_act_result *res, const char *path)
{
    json_t *root = json_object(), *eps = json_array();
    bool ok = root && eps && !json_object_set(root, "episodes", eps);
    for (int64_t e = 0; ok && e < res->episodes; e++)
        ok = !json_array_append_new(eps, json_pack("{s:f, s:I}", "return", res->returns[e], "steps",
                                                   (json_int_t)res->steps[e]));
    ok = ok && !json_object_set_new(root, "mean_return", json_real(res->mean_return));
    json_decref(eps);
    if (!ok) {
        json_decref(root);
        return omni_fail(OMNI_ERR_NOMEM, "%s: cannot make the JSON", path);
    }
    size_t n = strlen(path) + 16;
    char *tmp = malloc(n);
    if (!tmp) {
        json_decref(root);
        return omni_fail(OMNI_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(tmp, n, "%s.tmp", path);
    omni_status st = OMNI_OK;
    FILE *f = fopen(tmp, "w");
    if (!f) {
        st = omni_fail(OMNI_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
        goto out;
    }
    int bad = json_dumpf(root, f, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    bad |= fputc('\n', f) == EOF;
    bad |= fflush(f) != 0;
    bad |= fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path)) {
        st = omni_fail(OMNI_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
        unlink(tmp);
    }
out:
    free(tmp);
    json_decref(root);
    return st;
}
