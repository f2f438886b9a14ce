/* omnimoe train: load the experiment (strictly) and train (the trainer prints the
 * effective configuration once the run is under way); --check prints it and stops. */
#include "cli.h"
#include "coordinator.h"
#include "experiment.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: omnimoe train EXP.yaml [--set section.key=value]... [--resume auto|CKPT]\n"
    "\n"
    "  --set section.key=value  override a key of the experiment (value read as YAML)\n"
    "  --resume auto|CKPT       continue from the latest checkpoint in out_dir, or CKPT\n"
    "  --remap-tasks            with --resume: the data's tasks may differ from the\n"
    "                           checkpoint's; tasks are carried over by name, new ones start\n"
    "                           from their initialisation (docs/training.md)\n"
    "  --check                  check the experiment, print the effective configuration, exit\n"
    "  --keys                   print the table of experiment keys and exit\n"
    "  --help                   this text\n"
    "\n"
    "Keys, types, defaults and ranges: configs/README.md.\n";

#define MAX_SETS 256

omni_status omni_cmd_train(MPI_Comm comm, int argc, char **argv)
{
    static const struct option opts[] = {
        {"set", required_argument, NULL, 's'},
        {"resume", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {"keys", no_argument, NULL, 'k'},
        {"check", no_argument, NULL, 'c'},
        {"remap-tasks", no_argument, NULL, 'm'},
        {NULL, 0, NULL, 0},
    };
    const char *sets[MAX_SETS];
    int n_sets = 0;
    const char *resume = NULL;
    bool check_only = false, remap_tasks = false;
    opterr = 0;
    optind = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (n_sets == MAX_SETS)
                return omni_usage_error(usage, "train: more than %d --set flags", MAX_SETS);
            sets[n_sets++] = optarg;
            break;
        case 'r':
            resume = optarg;
            break;
        case 'c':
            check_only = true;
            break;
        case 'm':
            remap_tasks = true;
            break;
        case 'k':
            if (omni_log_rank() == 0)
                omni_experiment_describe(stdout);
            return OMNI_OK;
        case 'h':
            return omni_usage_help(usage);
        default:
            /* names the option in full (--set, --resume) even when it was abbreviated */
            if (optopt)
                return omni_usage_error(usage, "train: option --%s needs a value",
                                        opts[optopt == 's' ? 0 : 1].name);
            return omni_option_error(usage, "train", argv);
        }
    }
    if (optind >= argc)
        return omni_usage_error(usage, "train: no experiment file given");
    if (optind + 1 < argc)
        return omni_usage_error(usage, "train: unexpected argument '%s'", argv[optind + 1]);
    const char *path = argv[optind];
    if (remap_tasks && !resume)
        return omni_usage_error(usage, "train: --remap-tasks needs --resume auto|CKPT");

    omni_experiment x;
    omni_status st = omni_experiment_load(comm, path, sets, n_sets, &x);
    if (st)
        return st;
    if (check_only) {
        char *yaml = NULL;
        if ((st = omni_experiment_to_yaml(&x, &yaml)))
            return st;
        omni_log(OMNI_LOG_INFO, "# omnimoe %s, experiment %s (%s)\n%s", OMNI_VERSION,
                 x.experiment.name, path, yaml);
        free(yaml);
        return OMNI_OK;
    }
    omni_train_opts topts = {.resume = resume, .remap_tasks = remap_tasks, .source = path};
    return omni_train(comm, &x, &topts);
}
