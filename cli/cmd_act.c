/* omnimoe act: a checkpoint's policy in an environment, Gato's way (docs/design.md §8). */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inference.h"

static const char usage[] =
    "usage: omnimoe act CKPT --task NAME --env cartpole|\"COMMAND\" [options]\n"
    "\n"
    "  --task NAME          a control task of the checkpoint\n"
    "  --env cartpole       the built-in cart-pole (4 observations, 1 discrete action)\n"
    "  --env \"COMMAND\"      any program, started with /bin/sh -c and spoken to in JSON\n"
    "                       lines on its stdin/stdout (docs/act.md)\n"
    "  --episodes N         episodes to play (default 10)\n"
    "  --seed S             episode e starts from seed S + e (default 1)\n"
    "  --max-steps N        end an episode after N steps (default 500)\n"
    "  --env-timeout SEC    seconds to wait for each reply of a COMMAND (default 30)\n"
    "  --json FILE          write {\"episodes\": [{\"return\", \"steps\"}..], \"mean_return\"}\n"
    "  --help               this text\n"
    "\n"
    "Prints each episode's return and steps, then the mean return.\n";

static omni_status act(MPI_Comm comm, const char *ckpt, const char *task, omni_act_options *opt,
                       const char *json_path)
{
    omni_infer *s = NULL;
    omni_status st = omni_infer_open(comm, ckpt, 1, &s);
    if (st)
        return st;
    omni_act_result res;
    opt->progress = omni_log_rank() == 0 ? stdout : NULL;
    st = omni_infer_act(comm, s, task, opt, &res);
    if (st) {
        st = omni_fail_context(st, "act: ");
        goto out;
    }
    if (omni_log_rank() == 0) {
        printf("mean return %g over %" PRId64 " episode%s\n", res.mean_return, res.episodes,
               res.episodes == 1 ? "" : "s");
        fflush(stdout);
        if (json_path)
            st = omni_act_write_json(&res, json_path);
    }
    st = omni_mpi_agree(comm, st);
    omni_act_result_free(&res);
out:
    omni_infer_close(s);
    return st;
}

omni_status omni_cmd_act(MPI_Comm comm, int argc, char **argv)
{
    static const struct option opts[] = {
        {"task", required_argument, NULL, 't'},
        {"env", required_argument, NULL, 'e'},
        {"episodes", required_argument, NULL, 'n'},
        {"seed", required_argument, NULL, 's'},
        {"max-steps", required_argument, NULL, 'm'},
        {"env-timeout", required_argument, NULL, 'w'},
        {"json", required_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *task = NULL, *json = NULL;
    omni_act_options opt = {
        .episodes = 10, .max_steps = 500, .seed = 1, .timeout = OMNI_ENV_TIMEOUT};
    int64_t v;
    omni_status st = OMNI_OK;
    opterr = 0;
    optind = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            task = optarg;
            break;
        case 'e':
            opt.env = optarg;
            break;
        case 'n':
            st = omni_parse_int(usage, "--episodes", optarg, 1, 1000000, &opt.episodes);
            break;
        case 's':
            st = omni_parse_int(usage, "--seed", optarg, 0, INT64_MAX / 2, &v);
            opt.seed = (uint64_t)v;
            break;
        case 'm':
            st = omni_parse_int(usage, "--max-steps", optarg, 1, INT64_MAX / 2, &opt.max_steps);
            break;
        case 'w':
            st = omni_parse_real(usage, "--env-timeout", optarg, 0.0, &opt.timeout);
            if (!st && !(opt.timeout > 0))
                st = omni_usage_error(usage, "act: --env-timeout must be > 0");
            break;
        case 'j':
            json = optarg;
            break;
        case 'h':
            return omni_usage_help(usage);
        default:
            return omni_option_error(usage, "act", argv);
        }
        if (st)
            return st;
    }
    if (optind >= argc)
        return omni_usage_error(usage, "act: no checkpoint given");
    if (optind + 1 < argc)
        return omni_usage_error(usage, "act: unexpected argument '%s'", argv[optind + 1]);
    if (!task)
        return omni_usage_error(usage, "act: no --task given");
    if (!opt.env || !*opt.env)
        return omni_usage_error(usage, "act: no --env given");
    return act(comm, argv[optind], task, &opt, json);
}
