/*
 * inference, the Gato loop under MPI (run with 1 and 2 processes), with stand-in
 * policies instead of a model:
 *   - an expert that reads the observation back from the prompt's bins and answers with
 *     the cart-pole expert's action balances the built-in cart-pole to the step limit,
 *     through a history that must be cut to a small context; a random policy falls early;
 *   - every prompt has the layout of a control sample of the dataset (the <task> token,
 *     whole steps of obs bins, <sep>, legal action bins, then the observation and <sep>)
 *     and is the same on every rank;
 *   - a child environment gets reset seeds seed + e and the loop's returns and steps;
 *   - protocol faults end the loop with OMNI_ERR_DATA naming the episode and step, on
 *     every rank;
 *   - --json output (written by omni_act_write_json) reads back.
 * Usage: act_mpi SOURCE_DIR WORK_DIR. Exits non-zero on the first mismatch, naming it.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "datasets.h"
#include "inference.h"

static int failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "[rank %d] %s:%d: check failed: %s: ", omni_log_rank(), __FILE__,      \
                    __LINE__, #cond);                                                              \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

#define CONTEXT 40 /* <task>, 5 whole steps of 6 tokens, the current 5 and 1 action fit */

typedef struct {
    MPI_Comm comm;
    const omni_act_task *task;
    int mode; /* 0 expert, 1 random, 2 always action 1 */
    int64_t calls, longest;
    int bad_prompts;
} stub;

/* Check that the prompt has a control sample's layout and is the same on every rank. */
static void check_prompt(stub *s, const int32_t *p, int64_t n, int64_t n_prefix, int32_t n_act,
                         int32_t lo, int32_t hi)
{
    const omni_act_task *t = s->task;
    const int64_t step = t->obs_dim + 1 + t->act_dim;
    bool ok = n >= 2 + t->obs_dim && n + n_act <= t->context && p[0] == t->token &&
              p[n - 1] == OMNI_TOK_SEP && n_prefix == 2 + t->obs_dim && n_act == t->act_dim &&
              (n - 2 - t->obs_dim) % step == 0;
    for (int64_t i = 1; ok && i < n - 1; i++) {
        int64_t k = (i - 1) % step;
        if (k == t->obs_dim)
            ok = p[i] == OMNI_TOK_SEP;
        else if (k < t->obs_dim)
            ok = p[i] >= OMNI_TOK_BIN0 && p[i] < OMNI_TOK_BIN0 + OMNI_BINS;
        else
            ok = p[i] >= lo && p[i] < hi;
    }
    /* The same prompt on every rank: compare a checksum with rank 0's. */
    uint64_t h = (uint64_t)n;
    for (int64_t i = 0; i < n; i++)
        h = h * 1000003u + (uint64_t)p[i];
    uint64_t h0 = h;
    MPI_Bcast(&h0, 1, MPI_UINT64_T, 0, s->comm);
    ok = ok && h0 == h;
    s->bad_prompts += !ok;
    if (n > s->longest)
        s->longest = n;
}

static omni_status stub_act(void *ctx, const int32_t *prompt, int64_t n, int64_t n_prefix,
                            const uint8_t *patches, int32_t n_act, int32_t lo, int32_t hi,
                            int32_t *out)
{
    stub *s = ctx;
    CHECK(!patches, "patches for a task without pictures");
    check_prompt(s, prompt, n, n_prefix, n_act, lo, hi);
    if (s->mode == 0) {
        float obs[OMNI_CARTPOLE_OBS];
        for (int j = 0; j < OMNI_CARTPOLE_OBS; j++)
            obs[j] = omni_bin_value(prompt[n - 1 - OMNI_CARTPOLE_OBS + j] - OMNI_TOK_BIN0);
        out[0] = OMNI_TOK_BIN0 + omni_cartpole_expert(obs);
    } else if (s->mode == 1) {
        omni_rng r;
        omni_rng_init(&r, 5, "act_mpi/random", 0);
        out[0] = lo + (int32_t)(omni_rng_u32(&r, (uint64_t)s->calls) % (uint32_t)(hi - lo));
    } else {
        out[0] = OMNI_TOK_BIN0 + 1;
    }
    s->calls++;
    return OMNI_OK;
}

static omni_act_options options(const char *env, int64_t episodes, int64_t max_steps)
{
    return (omni_act_options){.env = env,
                              .episodes = episodes,
                              .max_steps = max_steps,
                              .seed = 100,
                              .timeout = 10.0, /* python may take seconds to start */
                              .progress = NULL};
}

static void cartpole(MPI_Comm comm, const char *work)
{
    const omni_act_task task = {.name = "cartpole",
                                .token = OMNI_TOK_TASK0 + 3,
                                .obs_dim = 4,
                                .act_dim = 1,
                                .discrete = true,
                                .context = CONTEXT};
    stub s = {.comm = comm, .task = &task, .mode = 0};
    omni_act_policy pol = {.ctx = &s, .act = stub_act};
    omni_act_options opt = options("cartpole", 3, 300);
    omni_act_result res;
    omni_status st = omni_act_run(comm, &task, &opt, &pol, &res);
    CHECK(st == OMNI_OK, "expert: %s", omni_error_message());
    if (st)
        return;
    CHECK(s.bad_prompts == 0, "%d prompts with a wrong layout or differing across ranks",
          s.bad_prompts);
    CHECK(s.longest == 1 + (CONTEXT - 7) / 6 * 6 + 5, "the longest prompt is %lld",
          (long long)s.longest);
    for (int e = 0; e < 3; e++) {
        CHECK(res.steps[e] == 300, "expert: episode %d lasted %lld steps", e,
              (long long)res.steps[e]);
        CHECK(res.returns[e] == 300.0, "expert: return %g", res.returns[e]);
    }
    CHECK(res.mean_return == 300.0, "mean %g", res.mean_return);

    char path[1024];
    snprintf(path, sizeof path, "%s/act.json", work);
    if (omni_log_rank() == 0) {
        CHECK(omni_act_write_json(&res, path) == OMNI_OK, "%s", omni_error_message());
        json_error_t err;
        json_t *j = json_load_file(path, 0, &err);
        CHECK(j != NULL, "%s: %s", path, err.text);
        json_t *eps = json_object_get(j, "episodes");
        CHECK(json_array_size(eps) == 3, "episodes");
        CHECK(json_number_value(json_object_get(j, "mean_return")) == 300.0, "mean_return");
        CHECK(json_integer_value(json_object_get(json_array_get(eps, 2), "steps")) == 300, "steps");
        CHECK(json_number_value(json_object_get(json_array_get(eps, 2), "return")) == 300.0,
              "return");
        json_decref(j);
    }
    omni_act_result_free(&res);

    /* A random policy: every step is a fair coin; it falls early. */
    s = (stub){.comm = comm, .task = &task, .mode = 1};
    opt = options("cartpole", 10, 300);
    st = omni_act_run(comm, &task, &opt, &pol, &res);
    CHECK(st == OMNI_OK, "random: %s", omni_error_message());
    if (st)
        return;
    CHECK(res.mean_return > 5.0 && res.mean_return < 60.0, "random: mean return %g",
          res.mean_return);
    CHECK(s.bad_prompts == 0, "random: %d bad prompts", s.bad_prompts);
    omni_act_result_free(&res);
}

static void child(MPI_Comm comm, const char *source)
{
    const omni_act_task task = {.name = "probe",
                                .token = OMNI_TOK_TASK0,
                                .obs_dim = 4,
                                .act_dim = 1,
                                .discrete = true,
                                .context = 64};
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 '%s/tests/inference/fault_env.py' ok", source);
    stub s = {.comm = comm, .task = &task, .mode = 2};
    omni_act_policy pol = {.ctx = &s, .act = stub_act};
    omni_act_options opt = options(cmd, 2, 100);
    omni_act_result res;
    omni_status st = omni_act_run(comm, &task, &opt, &pol, &res);
    CHECK(st == OMNI_OK, "child: %s", omni_error_message());
    if (!st) {
        for (int e = 0; e < 2; e++)
            CHECK(res.steps[e] == 5 && res.returns[e] == 5.0,
                  "child: episode %d: %lld steps, "
                  "return %g",
                  e, (long long)res.steps[e], res.returns[e]);
        CHECK(s.calls == 10, "%lld policy calls", (long long)s.calls);
        CHECK(s.bad_prompts == 0, "%d bad prompts", s.bad_prompts);
        omni_act_result_free(&res);
    }
    /* max_steps cuts an episode. */
    opt = options(cmd, 1, 3);
    st = omni_act_run(comm, &task, &opt, &pol, &res);
    CHECK(st == OMNI_OK && res.steps[0] == 3, "max_steps: %s", omni_error_message());
    if (!st)
        omni_act_result_free(&res);

    /* Faults, on every rank, with the episode and step on rank 0. */
    static const struct {
        const char *mode, *want;
    } faults[] = {{"exit_mid", "episode 1, step 2: environment"},
                  {"short_obs", "episode 1, step 2: environment"},
                  {"hang", "episode 1, step 2: environment"},
                  {"malformed", "not JSON"}};
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) {
        snprintf(cmd, sizeof cmd, "python3 '%s/tests/inference/fault_env.py' %s", source,
                 faults[i].mode);
        opt = options(cmd, 2, 100);
        omni_error_clear();
        st = omni_act_run(comm, &task, &opt, &pol, &res);
        CHECK(st == OMNI_ERR_DATA, "%s: status %d", faults[i].mode, (int)st);
        if (omni_log_rank() == 0)
            CHECK(strstr(omni_error_message(), faults[i].want), "%s: message '%s'", faults[i].mode,
                  omni_error_message());
        CHECK(res.returns == NULL, "no result after a failure");
    }
    opt = options("exec /nonexistent/omni-env", 1, 10);
    st = omni_act_run(comm, &task, &opt, &pol, &res);
    CHECK(st == OMNI_ERR_DATA, "nonexistent: status %d", (int)st);
    if (omni_log_rank() == 0)
        CHECK(strstr(omni_error_message(), "episode 1, reset: environment 'exec "
                                           "/nonexistent/omni-env' did not start"),
              "message '%s'", omni_error_message());

    /* A context too small for one step is refused before anything starts. */
    omni_act_task tiny = task;
    tiny.context = 6;
    st = omni_act_run(comm, &tiny, &opt, &pol, &res);
    CHECK(st == OMNI_ERR_DATA, "tiny context: status %d", (int)st);
}

int main(int argc, char **argv)
{
    MPI_Comm comm;
    if (omni_mpi_init(&argc, &argv, &comm)) {
        fprintf(stderr, "%s\n", omni_error_message());
        return 1;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: act_mpi SOURCE_DIR WORK_DIR\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    cartpole(comm, argv[2]);
    child(comm, argv[1]);
    int all = 0;
    MPI_Allreduce(&failures, &all, 1, MPI_INT, MPI_SUM, comm);
    if (omni_log_rank() == 0)
        printf("act_mpi: %s\n", all ? "FAILED" : "ok");
    MPI_Comm_free(&comm);
    MPI_Finalize();
    return all ? 1 : 0;
}
