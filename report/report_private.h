/*
 * report, private: the runs as read from metrics.jsonl (runs.c), a growing text buffer
 * (text.c), and the SVG drawing (svg.c) that page.c puts together.
 */
#ifndef OMNI_REPORT_PRIVATE_H
#define OMNI_REPORT_PRIVATE_H

#include <jansson.h>
#include <stdarg.h>
#include <stddef.h>

#include "experiment.h"
#include "report.h"

/* ---- text ------------------------------------------------------------------------ */

/* A growing NUL-terminated text; a failed allocation is sticky (ok false, text kept). */
typedef struct {
    char *s;
    size_t len, cap;
    bool ok;
} rtext;

void rtext_init(rtext *t);
void rtext_free(rtext *t);
void rtext_printf(rtext *t, const char *fmt, ...) OMNI_PRINTF(2, 3);
void rtext_puts(rtext *t, const char *s);
/* s with & < > " ' escaped for XML text and attributes. */
void rtext_escaped(rtext *t, const char *s);

/* ---- runs ------------------------------------------------------------------------- */

/* One curve of a run: (step, value) points; NAN values (JSON null) break the line. */
typedef struct {
    char key[64];    /* "loss", "lr", "drop_share", "task_loss", "load_max_over_mean",
                        "eval/task_loss", "eval/task_accuracy", "eval/exact_match", ... */
    char group[128]; /* the task, "layer N", or "" */
    double *x, *y;
    int64_t n, cap;
} rseries;

typedef struct {
    char dir[OMNI_PATH_MAX];
    char label[64]; /* the run's name on the page: its directory's last part */
    rseries *series;
    int n_series, cap_series;
    int64_t lines, first_step, last_step; /* training objects */
    int n_moe_layers;                     /* the longest load_max_over_mean seen */
    json_t *last;                         /* the last training object with routing tables */
    json_t *at;                           /* the last one at or before the chosen step */
    char *yaml;                           /* the effective experiment (malloc'ed), or NULL */
    char yaml_from[OMNI_PATH_MAX + 64];   /* where it was read */
} rrun;

/* Read DIR/metrics.jsonl into r (step < 0: no chosen step). OMNI_ERR_DATA naming the file
 * and line on a fault. */
omni_status rrun_read(rrun *r, const char *dir, int64_t step);
void rrun_free(rrun *r);
/* The series (key, group) of r, or NULL. */
const rseries *rrun_find(const rrun *r, const char *key, const char *group);

/* ---- drawing --------------------------------------------------------------------- */

/* Colours for tasks/layers/runs in order (Okabe-Ito, safe for colour-blind readers and
 * distinct in grey print), and dash patterns for runs. */
const char *rsvg_color(int i);
const char *rsvg_dash(int i);

typedef struct {
    const rseries *s;
    int color, dash;
} rline;

typedef struct {
    int color, dash; /* dash < 0: a filled swatch, no line */
    char text[160];
} rlegend;

/* A line chart: x = step over at least [x_first, x_last], lines over one y axis (ylabel
 * says the unit; percent: values x 100); legend entries under the plot. A note instead of
 * lines when no value is finite. */
void rsvg_line_chart(rtext *t, const char *title, const char *ylabel, const rline *lines,
                     int n_lines, const rlegend *legend, int n_legend, bool percent, double x_first,
                     double x_last);

/* A heatmap: rows x cols values (NAN: blank), shades from 0 to vmax, numbers in the
 * cells as percentages; right-hand column `side` (may be NULL) with header side_label;
 * columns in `dead` (may be NULL) marked. */
void rsvg_heatmap(rtext *t, const char *title, const char *const *row_labels, int rows, int cols,
                  const double *v, double vmax, const double *side, const char *side_label,
                  const bool *dead, const char *note);

#endif /* OMNI_REPORT_PRIVATE_H */
