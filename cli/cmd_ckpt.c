/* omnimoe ckpt: info. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const char usage[] = "usage: omnimoe ckpt info CKPT.h5\n";

omni_status omni_cmd_ckpt(MPI_Comm comm, int argc, char **argv)
{
    (void)comm;
    if (argc < 2)
        return omni_usage_error(usage, "ckpt: no subcommand given");
    if (!strcmp(argv[1], "--help")) {
        if (omni_log_rank() == 0)
            fputs(usage, stdout);
        return OMNI_OK;
    }
    return omni_usage_error(usage, "ckpt: unknown subcommand '%s'", argv[1]);
}
