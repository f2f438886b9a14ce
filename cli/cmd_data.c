/* omnimoe data: demo, build, info. `build` is shared among the ranks (each builds a share
 * of every task, the file is written collectively); demo and info run on rank 0. Every rank
 * agrees on the status, so an mpirun'ed command fails or succeeds as one. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets.h"

static const char usage[] =
    "usage: omnimoe data demo --out FILE.h5 [--seed N]\n"
    "       omnimoe data build SPEC.yaml --out FILE.h5 [--seed N] [--shards]\n"
    "       omnimoe data info FILE.h5 [--verify]\n"
    "\n"
    "demo   make the demo dataset (shapes, tones, arith, cartpole)\n"
    "build  build a dataset from raw files listed in a spec (--seed: in place of the\n"
    "       spec's seed, which draws the validation split); under mpirun the build is\n"
    "       shared among the ranks and the file written collectively (same content);\n"
    "       --shards: each rank writes its share to FILE-0000r-of-0000N.h5 instead\n"
    "info   check a dataset file and describe it; --verify also checks every array's\n"
    "       checksums (exit 2 on a mismatch or an array without one)\n"
    "The file format and the spec are described in docs/datasets.md.\n";

/* Parse [POSITIONAL] --out FILE [--seed N] after the subcommand. */
static omni_status parse_args(int argc, char **argv, bool want_pos, const char **pos,
                              const char **out, long long *seed, bool *verify)
{
    for (int i = 2; i < argc; i++) {
        if (verify && !strcmp(argv[i], !strcmp(argv[1], "build") ? "--shards" : "--verify")) {
            *verify = true;
        } else if (!strcmp(argv[i], "--out") || !strcmp(argv[i], "--seed")) {
            if (i + 1 >= argc)
                return omni_usage_error(usage, "data %s: %s needs a value", argv[1], argv[i]);
            if (!strcmp(argv[i], "--out")) {
                *out = argv[++i];
            } else {
                char *end;
                *seed = strtoll(argv[++i], &end, 10);
                if (*end || *seed < 0 || *seed > 4294967295LL || !argv[i][0])
                    return omni_usage_error(usage,
                                            "data %s: --seed %s, expected an integer in "
                                            "[0, 4294967295]",
                                            argv[1], argv[i]);
            }
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return omni_usage_error(usage, "data %s: unknown option %s", argv[1], argv[i]);
        } else if (want_pos && !*pos) {
            *pos = argv[i];
        } else {
            return omni_usage_error(usage, "data %s: unexpected argument %s", argv[1], argv[i]);
        }
    }
    return OMNI_OK;
}

static omni_status run(MPI_Comm comm, int argc, char **argv)
{
    bool root = omni_log_rank() == 0;
    const char *sub = argv[1], *pos = NULL, *out = NULL;
    long long seed = 1;
    omni_status st;
    if (!strcmp(sub, "demo")) {
        if ((st = parse_args(argc, argv, false, &pos, &out, &seed, NULL)))
            return st;
        if (!out)
            return omni_usage_error(usage, "data demo: --out FILE.h5 is required");
        st = omni_data_demo(out, (uint64_t)seed, stdout);
        if (!st)
            printf("wrote %s\n", out);
        return st;
    }
    if (!strcmp(sub, "build")) {
        seed = -1; /* the spec's, unless --seed */
        bool shards = false;
        if ((st = parse_args(argc, argv, true, &pos, &out, &seed, &shards)))
            return st;
        if (!pos || !out)
            return omni_usage_error(usage, "data build: SPEC.yaml and --out FILE.h5 are required");
        if (seed >= 0 && root)
            printf("seed %lld (--seed, in place of the spec's)\n", seed);
        st = omni_data_build_shared(comm, pos, out, seed, root ? stdout : NULL, shards);
        int size = 1;
        MPI_Comm_size(comm, &size);
        if (!st && root && shards) {
            size_t n = strlen(out);
            int stem = (int)(n > 3 && !strcmp(out + n - 3, ".h5") ? n - 3 : n);
            printf("wrote %d shard file%s: %.*s-%05d-of-%05d.h5 ... %.*s-%05d-of-%05d.h5\n", size,
                   size == 1 ? "" : "s", stem, out, 0, size, stem, out, size - 1, size);
        } else if (!st && root)
            printf("wrote %s\n", out);
        return st;
    }
    if (!strcmp(sub, "info")) {
        bool verify = false;
        if ((st = parse_args(argc, argv, true, &pos, &out, &seed, &verify)))
            return st;
        if (!pos || out)
            return omni_usage_error(usage, "data info: expected one FILE.h5");
        st = omni_data_info(pos, stdout);
        if (!st && verify)
            st = omni_data_verify(pos, stdout);
        return st;
    }
    return omni_usage_error(usage, "data: unknown subcommand '%s'", sub);
}

omni_status omni_cmd_data(MPI_Comm comm, int argc, char **argv)
{
    if (argc < 2)
        return omni_usage_error(usage, "data: no subcommand given");
    if (!strcmp(argv[1], "--help"))
        return omni_usage_help(usage);
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help"))
            return omni_usage_help(usage);
    omni_status st = OMNI_OK;
    if (!strcmp(argv[1], "build"))
        st = run(comm, argc, argv); /* every rank: collective */
    else if (omni_log_rank() == 0)
        st = run(comm, argc, argv);
    fflush(stdout);
    int size = 1;
    MPI_Comm_size(comm, &size);
    return size > 1 ? omni_mpi_agree(comm, st) : st;
}
