/*
 * report — `omnimoe report`: one self-contained HTML page about one or more training runs
 * (DESIGN.md §9), drawn from their metrics.jsonl by omnimoe's own small plotting code as
 * inline SVG: loss per task (train and validation), the evaluation metrics, learning rate,
 * drop share, load max/mean per MoE layer, task × expert and modality × expert heatmaps of
 * each MoE layer (at the last logged step and at a chosen one) with the routing entropy,
 * and each run's effective experiment. No network, no script, no fetched font: it opens in
 * any browser and prints. The page and its fields are described in docs/report.md.
 */
#ifndef OMNI_REPORT_H
#define OMNI_REPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "base.h"

typedef struct {
    const char *const *run_dirs; /* training output directories (each with metrics.jsonl) */
    int n_runs;
    const char *out; /* the HTML file to write */
    int64_t step;    /* heatmaps also at the last logged step <= step; < 0: only the last */
} omni_report_options;

/*
 * Read every run, draw, and write o->out as a temporary file renamed into place, so a
 * failure leaves no file (or the previous one) under that name. Not collective: one
 * process does it. OMNI_ERR_DATA "FILE:LINE: fault" for a missing or unreadable
 * metrics.jsonl, a line that is not JSON or not a metrics object, a known field of the
 * wrong type, and when no run has an MoE layer; OMNI_ERR_IO naming the file when it cannot
 * be written; OMNI_ERR_USAGE for a --step before every run's first logged step.
 */
omni_status omni_report_write(const omni_report_options *o);

#endif /* OMNI_REPORT_H */
