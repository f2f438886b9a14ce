/* omnimoe data: demo, build, info. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const char usage[] = "usage: omnimoe data demo --out FILE.h5\n"
                            "       omnimoe data build SPEC.yaml --out FILE.h5\n"
                            "       omnimoe data info FILE.h5\n";

omni_status omni_cmd_data(MPI_Comm comm, int argc, char **argv)
{
    (void)comm;
    if (argc < 2)
        return omni_usage_error(usage, "data: no subcommand given");
    if (!strcmp(argv[1], "--help")) {
        if (omni_log_rank() == 0)
            fputs(usage, stdout);
        return OMNI_OK;
    }
    return omni_usage_error(usage, "data: unknown subcommand '%s'", argv[1]);
}
