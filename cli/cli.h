/*
 * cli — the `omnimoe` command: one program, subcommands, each with --help. main()
 * owns MPI start-up and shutdown, prints the one error message, and chooses the exit
 * status (docs/design.md §6); the subcommands return statuses.
 */
#ifndef OMNI_CLI_H
#define OMNI_CLI_H

#include "base.h"

/* A subcommand: argv[0] is the subcommand's own name. Collective over comm. */
typedef omni_status (*omni_command_fn)(MPI_Comm comm, int argc, char **argv);

omni_status omni_cmd_train(MPI_Comm comm, int argc, char **argv);
omni_status omni_cmd_data(MPI_Comm comm, int argc, char **argv);
omni_status omni_cmd_ckpt(MPI_Comm comm, int argc, char **argv);
/* `omnimoe ckpt extract CKPT --task NAME --out FILE`: the sub-network of one task of a
 * task-routed model (cli/ckpt_extract.c). Collective. */
omni_status omni_ckpt_extract(MPI_Comm comm, const char *path, const char *task, const char *out);
omni_status omni_cmd_report(MPI_Comm comm, int argc, char **argv);
omni_status omni_cmd_generate(MPI_Comm comm, int argc, char **argv);
omni_status omni_cmd_eval(MPI_Comm comm, int argc, char **argv);
omni_status omni_cmd_act(MPI_Comm comm, int argc, char **argv);

/* Usage texts, printed by --help and after a usage error. */
extern const char omni_usage_main[];

/* A usage error: the one-line message, recorded with the subcommand's usage text to
 * print after it. */
omni_status omni_usage_error(const char *usage, const char *fmt, ...) OMNI_PRINTF(2, 3);
/* A whole-string integer in [lo, hi] / a finite number >= lo given to option `opt`
 * ("--seed"), or a usage error naming the option and the value (exit 2). */
omni_status omni_parse_int(const char *usage, const char *opt, const char *s, int64_t lo,
                           int64_t hi, int64_t *out);
omni_status omni_parse_real(const char *usage, const char *opt, const char *s, double lo,
                            double *out);
/* --help: the usage text on stdout from rank 0; returns OMNI_OK. */
omni_status omni_usage_help(const char *usage);
/* getopt_long's '?' as a usage error of command `cmd` ("act"), naming argv[optind - 1]:
 * "CMD: option --x needs a value" when optopt is set, else "CMD: unknown option '--x'". */
omni_status omni_option_error(const char *usage, const char *cmd, char **argv);
/* The usage text recorded with the last usage error, or NULL. */
const char *omni_usage_pending(void);

#endif /* OMNI_CLI_H */
