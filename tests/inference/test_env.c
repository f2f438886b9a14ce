/*
 * inference, environments (no MPI): the built-in cart-pole through omni_env, the
 * JSON-lines protocol with a child (tests/inference/fault_env.py) and every protocol
 * fault it plays: a command that does not start, malformed or incomplete replies, an obs
 * of the wrong length, a child that exits, closes its output or stops answering. Each
 * fault is OMNI_ERR_DATA with a message naming it, well within the test's time limit.
 * Also the control-step tokenization shared with the dataset builder.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "datasets.h"
#include "env.h"

static char command[1024];

/* The command that runs fault_env.py in `mode`. */
static const char *fault_env(const char *mode)
{
    /* close_mid runs without the shell in between (exec), which would keep the pipe open. */
    const char *exec = strcmp(mode, "close_mid") ? "" : "exec ";
    const char *d = getenv("OMNI_SOURCE_DIR");
    cr_assert_not_null(d, "OMNI_SOURCE_DIR must be set (CTest sets it)");
    snprintf(command, sizeof command, "%spython3 '%s/tests/inference/fault_env.py' %s", exec, d,
             mode);
    return command;
}

Test(inference_env, control_tokens_are_the_builders_and_decode_back)
{
    const float obs[3] = {0.0f, 1.0f, -0.5f};
    int32_t tok[3];
    omni_control_obs_tokens(obs, 3, tok);
    for (int j = 0; j < 3; j++)
        cr_assert_eq(tok[j], OMNI_TOK_BIN0 + omni_value_bin(obs[j]));
    cr_assert_eq(tok[0], OMNI_TOK_BIN0 + 512);

    const int32_t disc[2] = {0, 1};
    omni_control_act_tokens(NULL, disc, 2, tok);
    cr_assert(tok[0] == OMNI_TOK_BIN0 && tok[1] == OMNI_TOK_BIN0 + 1, "discrete: the bin itself");
    int32_t back_i[2] = {-1, -1};
    cr_assert(omni_control_act_values(tok, 2, true, NULL, back_i));
    cr_assert(back_i[0] == 0 && back_i[1] == 1);

    const float cont[2] = {0.3f, -2.0f};
    omni_control_act_tokens(cont, NULL, 2, tok);
    float back_f[2];
    cr_assert(omni_control_act_values(tok, 2, false, back_f, NULL));
    for (int j = 0; j < 2; j++)
        cr_assert(fabsf(back_f[j] - cont[j]) < 0.02f * fabsf(cont[j]), "%g decoded as %g",
                  (double)cont[j], (double)back_f[j]);

    int32_t bad[2] = {OMNI_TOK_BIN0, OMNI_TOK_SEP};
    back_i[0] = 7;
    cr_assert_not(omni_control_act_values(bad, 2, true, NULL, back_i), "<sep> is no action");
    cr_assert_eq(back_i[0], 7, "nothing written for a bad token");
}

Test(inference_env, builtin_cartpole_is_the_datasets_cartpole)
{
    omni_env *env;
    cr_assert_eq(omni_env_open(&env, "cartpole", 4, 1, true, 1.0), OMNI_OK);
    cr_assert_eq(omni_env_discrete_actions(env), 2);
    float obs[4], want[4];
    cr_assert_eq(omni_env_reset(env, 7, obs), OMNI_OK);
    omni_cartpole ref;
    omni_cartpole_reset(&ref, 7, 0);
    int64_t t = 0;
    for (bool done = false; !done; t++) {
        omni_cartpole_observe(&ref, want);
        cr_assert_arr_eq(obs, want, sizeof obs);
        int32_t a = (int32_t)(t % 3 == 0);
        double r = 0;
        cr_assert_eq(omni_env_step(env, NULL, &a, obs, &r, &done), OMNI_OK);
        cr_assert_eq(omni_cartpole_step(&ref, a), done);
        cr_assert_eq(r, 1.0);
    }
    cr_assert(t > 1 && t < 200, "a poor policy falls after %lld steps", (long long)t);
    omni_env_close(env);
}

Test(inference_env, builtin_cartpole_refuses_another_task_shape)
{
    omni_env *env = (omni_env *)1;
    cr_assert_eq(omni_env_open(&env, "cartpole", 3, 1, true, 1.0), OMNI_ERR_DATA);
    cr_assert_null(env);
    cr_assert(strstr(omni_error_message(), "cartpole"), "%s", omni_error_message());
    cr_assert_eq(omni_env_open(&env, "cartpole", 4, 1, false, 1.0), OMNI_ERR_DATA);
}

Test(inference_env, child_speaks_json_lines_and_is_reaped, .timeout = 30)
{
    char log[] = "/tmp/omni-env-XXXXXX";
    int fd = mkstemp(log);
    cr_assert(fd >= 0);
    close(fd);
    unlink(log);
    setenv("FAULT_ENV_LOG", log, 1);
    omni_env *env;
    cr_assert_eq(omni_env_open(&env, fault_env("ok"), 4, 1, true, 10.0), OMNI_OK);
    cr_assert_eq(omni_env_discrete_actions(env), OMNI_BINS);
    for (uint64_t ep = 0; ep < 2; ep++) {
        float obs[4];
        cr_assert_eq(omni_env_reset(env, 40 + ep, obs), OMNI_OK, "%s", omni_error_message());
        cr_assert_eq(obs[0], (float)(40 + ep), "the child got the seed");
        cr_assert_eq(obs[1], 0.0f);
        bool done = false;
        int32_t t = 0;
        double ret = 0;
        while (!done) {
            int32_t a = 1;
            double r;
            cr_assert_eq(omni_env_step(env, NULL, &a, obs, &r, &done), OMNI_OK, "%s",
                         omni_error_message());
            t++;
            ret += r;
            cr_assert_eq(obs[1], (float)t);
        }
        cr_assert_eq(t, 5);
        cr_assert_eq(ret, 5.0);
    }
    omni_env_close(env);
    /* The child saw its stdin closed and exited by itself (it wrote the log first). */
    FILE *f = fopen(log, "r");
    cr_assert_not_null(f, "the child did not see the end of its input");
    char line[32] = "";
    cr_assert_not_null(fgets(line, sizeof line, f));
    fclose(f);
    unlink(log);
    cr_assert_str_eq(line, "closed\n");
}

/* Play `mode` with a timeout of `timeout` s: reset and steps until a failure, which must
 * be OMNI_ERR_DATA at reply 2 (the second step) with `want` in its message. */
static void expect_fault(const char *mode, double timeout, const char *want)
{
    omni_env *env;
    cr_assert_eq(omni_env_open(&env, fault_env(mode), 4, 1, true, timeout), OMNI_OK);
    float obs[4];
    int replies = 0;
    omni_status st = omni_env_reset(env, 1, obs);
    while (!st && replies < 10) {
        replies++;
        int32_t a = 0;
        double r;
        bool done;
        st = omni_env_step(env, NULL, &a, obs, &r, &done);
    }
    double t0 = omni_now();
    omni_env_close(env);
    cr_assert_lt(omni_now() - t0, 8.0, "closing took too long");
    cr_assert_eq(st, OMNI_ERR_DATA, "%s: status %d: %s", mode, (int)st, omni_error_message());
    cr_assert_eq(replies, 2, "%s: failed at reply %d: %s", mode, replies, omni_error_message());
    cr_assert(strstr(omni_error_message(), want), "%s: '%s' lacks '%s'", mode, omni_error_message(),
              want);
    cr_assert(strstr(omni_error_message(), "fault_env.py"), "names the environment: %s",
              omni_error_message());
}

Test(inference_env, malformed_line, .timeout = 30)
{
    expect_fault("malformed", 10.0, "not JSON");
}

Test(inference_env, reply_not_an_object, .timeout = 30)
{
    expect_fault("not_object", 10.0, "not a JSON object");
}

Test(inference_env, obs_of_the_wrong_length, .timeout = 30)
{
    expect_fault("short_obs", 10.0, "\"obs\" has 3 values, the task has 4");
}

Test(inference_env, obs_not_finite, .timeout = 30)
{
    expect_fault("huge_obs", 10.0, "\"obs\"[0] is not a finite number");
}

Test(inference_env, reply_without_reward, .timeout = 30)
{
    expect_fault("no_reward", 10.0, "no \"reward\"");
}

Test(inference_env, done_not_a_boolean, .timeout = 30)
{
    expect_fault("bad_done", 10.0, "\"done\" is not true or false");
}

Test(inference_env, child_exits_mid_episode, .timeout = 30)
{
    expect_fault("exit_mid", 10.0, "exited with status 4");
}

Test(inference_env, child_closes_its_output, .timeout = 30)
{
    expect_fault("close_mid", 10.0, "closed its output");
}

Test(inference_env, child_stops_answering, .timeout = 60)
{
    double t0 = omni_now();
    /* Long enough for python to start on a loaded machine (the first reply has the same
     * timeout); the test costs that much waiting. */
    expect_fault("hang", 10.0, "did not answer within 10 s");
    double took = omni_now() - t0;
    cr_assert(took >= 10.0 && took < 25.0, "the timeout took %.2f s", took);
}

Test(inference_env, command_that_does_not_start, .timeout = 30)
{
    omni_env *env;
    cr_assert_eq(omni_env_open(&env, "/nonexistent/omni-env --flag", 4, 1, true, 10.0), OMNI_OK);
    float obs[4];
    cr_assert_eq(omni_env_reset(env, 1, obs), OMNI_ERR_DATA);
    cr_assert(strstr(omni_error_message(), "did not start"), "%s", omni_error_message());
    cr_assert(strstr(omni_error_message(), "not found"), "%s", omni_error_message());
    cr_assert(strstr(omni_error_message(), "/nonexistent/omni-env"), "%s", omni_error_message());
    omni_env_close(env);
}
