/* omnimoe: the program's entry, subcommand dispatch, and the exit-status policy. */
#include "cli.h"
#include "ops.h"

#include <hdf5.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <cblas.h>
#include <dnnl.h>
#include <yaml.h>

const char omni_usage_main[] =
    "usage: omnimoe COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  train EXP.yaml [--set key=value]... [--resume auto|CKPT]   train an experiment\n"
    "  data demo --out FILE.h5                               make the demo dataset\n"
    "  data build SPEC.yaml --out FILE.h5                    build a dataset from raw files\n"
    "  data info FILE.h5                                     describe a dataset file\n"
    "  ckpt info CKPT.h5                                     describe a checkpoint\n"
    "  ckpt extract CKPT.h5 --task NAME --out FILE.h5        one task's experts (task routing)\n"
    "  report RUN_DIR... [--out FILE.html] [--step N]        draw runs as one HTML page\n"
    "  generate CKPT --task NAME [--image F|--audio F|--text S]   run a trained model\n"
    "  eval CKPT DATA.h5 [--tasks A,B] [--json FILE]         evaluate a trained model\n"
    "  act CKPT --task NAME --env cartpole|\"COMMAND\"         play a control task\n"
    "\n"
    "  omnimoe --version, omnimoe --help, omnimoe COMMAND --help\n"
    "\n"
    "Launch on several processes with mpirun -np N omnimoe train EXP.yaml (or srun).\n"
    "Exit status: 0 done, 2 bad usage or bad input, 1 a failure while running.\n";

static const char *pending_usage;

omni_status omni_usage_error(const char *usage, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pending_usage = usage;
    return omni_fail(OMNI_ERR_USAGE, "%s", line);
}

omni_status omni_parse_int(const char *usage, const char *opt, const char *s, int64_t lo,
                           int64_t hi, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        if (hi == INT64_MAX)
            return omni_usage_error(usage, "%s '%s': expected an integer >= %" PRId64, opt, s, lo);
        return omni_usage_error(usage, "%s '%s': expected an integer in [%" PRId64 ", %" PRId64 "]",
                                opt, s, lo, hi);
    }
    *out = v;
    return OMNI_OK;
}

omni_status omni_parse_real(const char *usage, const char *opt, const char *s, double lo,
                            double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo)
        return omni_usage_error(usage, "%s '%s': expected a number >= %g", opt, s, lo);
    *out = v;
    return OMNI_OK;
}

omni_status omni_usage_help(const char *usage)
{
    if (omni_log_rank() == 0)
        fputs(usage, stdout);
    return OMNI_OK;
}

omni_status omni_option_error(const char *usage, const char *cmd, char **argv)
{
    if (optopt)
        return omni_usage_error(usage, "%s: option %s needs a value", cmd, argv[optind - 1]);
    return omni_usage_error(usage, "%s: unknown option '%s'", cmd, argv[optind - 1]);
}

const char *omni_usage_pending(void)
{
    return pending_usage;
}

static void print_version(void)
{
    char mpi[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0, major = 0, minor = 0;
    MPI_Get_library_version(mpi, &len);
    MPI_Get_version(&major, &minor);
    char *nl = strchr(mpi, ',');
    if (nl)
        *nl = '\0';
    unsigned hmaj, hmin, hrel;
    H5get_libversion(&hmaj, &hmin, &hrel);
    printf("omnimoe %s\n", OMNI_VERSION);
    printf("  MPI      %s (standard %d.%d)\n", mpi, major, minor);
    printf("  HDF5     %u.%u.%u (parallel)\n", hmaj, hmin, hrel);
    printf("  OpenBLAS %s\n", openblas_get_config());
    const dnnl_version_t *dv = dnnl_version();
    printf("  oneDNN   %d.%d.%d\n", dv->major, dv->minor, dv->patch);
    /* the backend auto picks (parallel.gemm, env OMNI_GEMM), and each one's kernels */
    omni_gemm_backend use = omni_gemm_backend_of();
    for (int b = 0; b < OMNI_GEMM_BACKEND_COUNT; b++) {
        if (b == OMNI_GEMM_ONEDNN && omni_gemm_set_backend(OMNI_GEMM_ONEDNN)) {
            printf("  GEMM     onednn: cannot start (%s)\n", omni_error_message());
            omni_error_clear();
            continue;
        }
        printf("  GEMM     %-8s %s%s\n", omni_gemm_backend_name((omni_gemm_backend)b),
               omni_gemm_kernel((omni_gemm_backend)b), b == (int)use ? " (default)" : "");
    }
    omni_gemm_set_backend(use);
    printf("  bf16     %s\n", omni_bf16_available()
                                  ? "available (avx512_bf16: model.precision bf16 runs on oneDNN)"
                                  : "not available (this CPU lacks avx512_bf16, or oneDNN does "
                                    "not use it: model.precision fp32 only)");
    printf("  libyaml  %s\n", yaml_get_version_string());
}

static const struct {
    const char *name;
    omni_command_fn fn;
} commands[] = {
    {"report", omni_cmd_report}, {"train", omni_cmd_train},       {"data", omni_cmd_data},
    {"ckpt", omni_cmd_ckpt},     {"generate", omni_cmd_generate}, {"eval", omni_cmd_eval},
    {"act", omni_cmd_act},
};

static omni_status dispatch(MPI_Comm comm, int argc, char **argv)
{
    if (argc < 2)
        return omni_usage_error(omni_usage_main, "no command given");
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help"))
        return omni_usage_help(omni_usage_main);
    if (!strcmp(cmd, "--version")) {
        if (omni_log_rank() == 0)
            print_version();
        return OMNI_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(cmd, commands[i].name))
            return commands[i].fn(comm, argc - 1, argv + 1);
    return omni_usage_error(omni_usage_main, "unknown command '%s'", cmd);
}

int main(int argc, char **argv)
{
    MPI_Comm comm = MPI_COMM_NULL;
    omni_status st = omni_mpi_init(&argc, &argv, &comm);
    if (st) {
        fprintf(stderr, "omnimoe: %s\n", omni_error_message());
        return omni_exit_code(st);
    }
    int rank = 0, size = 1;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    /* HDF5 prints its own error stack by default; our messages say what went wrong. */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);

    st = dispatch(comm, argc, argv);
    int code = omni_exit_code(st);
    if (st) {
        /* An agreed failure is printed once by rank 0 (which holds the message of the
         * failing rank); a failure on one rank alone is printed by that rank, which then
         * aborts the job so the others do not wait for it in a collective call. Usage and
         * config errors count as agreed by construction: they come only from the command
         * line and the experiment bytes, which are the same on every rank (rank 0 reads
         * the file and broadcasts it), and from checks of those alone (expert placement);
         * a check that depends on anything rank-local must go through omni_mpi_agree. */
        bool agreed =
            omni_mpi_failure_agreed() || size == 1 || st == OMNI_ERR_USAGE || st == OMNI_ERR_CONFIG;
        if (!agreed || rank == 0) {
            if (agreed)
                fprintf(stderr, "omnimoe: %s\n", omni_error_message());
            else
                fprintf(stderr, "omnimoe: [rank %d] %s\n", rank, omni_error_message());
            if (omni_usage_pending())
                fprintf(stderr, "\n%s", omni_usage_pending());
            fflush(stderr);
        }
        if (!agreed)
            MPI_Abort(MPI_COMM_WORLD, code);
    }
    MPI_Comm_free(&comm);
    MPI_Finalize();
    return code;
}
