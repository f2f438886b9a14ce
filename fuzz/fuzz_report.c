/* fuzz: the report's reader and drawing. The input is a metrics.jsonl, written into a
 * run directory of its own (no checkpoint there); the page is drawn with heatmaps at the
 * last logged step and at step 4, into a file in that directory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[] = "/tmp/omni_fuzz_report_XXXXXX";
static char jsonl[sizeof dir + 32], page[sizeof dir + 32];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    MPI_Comm comm;
    if (omni_mpi_init(argc, argv, &comm) || !mkdtemp(dir))
        abort();
    snprintf(jsonl, sizeof jsonl, "%s/metrics.jsonl", dir);
    snprintf(page, sizeof page, "%s/page.html", dir);
    omni_log_setup(0, OMNI_LOG_ERROR); /* no warnings per input */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *f = fopen(jsonl, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort(); /* a harness fault, not a finding */
    const char *dirs[1] = {dir};
    omni_report_options o = {.run_dirs = dirs, .n_runs = 1, .out = page, .step = 4};
    omni_report_write(&o);
    omni_error_clear();
    return 0;
}
