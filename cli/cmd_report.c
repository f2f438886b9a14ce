/* omnimoe report: one HTML page about one or more training runs (report/report.h). */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiment.h"
#include "report.h"

static const char usage[] =
    "usage: omnimoe report RUN_DIR [RUN_DIR...] [--out FILE.html] [--step N]\n"
    "\n"
    "  Draws the training runs in the given output directories (their metrics.jsonl and\n"
    "  newest checkpoint) as one self-contained HTML page with inline SVG: loss per task,\n"
    "  evaluation metrics, learning rate, drop share, load balance, and task x expert and\n"
    "  modality x expert heatmaps of each MoE layer. Several runs are overlaid.\n"
    "\n"
    "  --out FILE.html   the page to write (default: the first RUN_DIR/report.html)\n"
    "  --step N          heatmaps also at the last logged step at or before N\n";

#define MAX_RUNS 16

/* Collective: rank 0 reads and writes, every rank returns its agreed status. */
omni_status omni_cmd_report(MPI_Comm comm, int argc, char **argv)
{
    const char *dirs[MAX_RUNS];
    int n = 0;
    const char *out = NULL;
    int64_t step = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return omni_usage_help(usage);
        if (!strcmp(a, "--out") || !strcmp(a, "--step")) {
            if (i + 1 >= argc)
                return omni_usage_error(usage, "report: %s needs a value", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--out")) {
                if (!v[0])
                    return omni_usage_error(usage, "report: --out needs a file name");
                out = v;
                continue;
            }
            char *end;
            errno = 0;
            long long s = strtoll(v, &end, 10);
            if (errno || end == v || *end || s < 0)
                return omni_usage_error(usage, "report: --step '%s' is not a step number", v);
            step = s;
            continue;
        }
        if (a[0] == '-')
            return omni_usage_error(usage, "report: unknown option '%s'", a);
        if (n == MAX_RUNS)
            return omni_usage_error(usage, "report: more than %d runs", MAX_RUNS);
        dirs[n++] = a;
    }
    if (n == 0)
        return omni_usage_error(usage, "report: no run directory given");
    char def[OMNI_PATH_MAX + 16];
    if (!out) {
        snprintf(def, sizeof def, "%s/report.html", dirs[0]);
        out = def;
    }
    omni_status st = OMNI_OK;
    if (omni_log_rank() == 0) {
        omni_report_options o = {.run_dirs = dirs, .n_runs = n, .out = out, .step = step};
        st = omni_report_write(&o);
        if (!st)
            printf("report: %s\n", out);
    }
    return omni_mpi_agree(comm, st);
}
