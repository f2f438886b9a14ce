/*
 * report: the page. Sections: the runs, loss, evaluation, optimisation and load, routing
 * heatmaps, experiments. Colours stand for tasks (or layers, or runs where a chart has one
 * line per run) and dash patterns for runs, the same in every chart. The page is XHTML
 * (well-formed XML, so it can be checked by any XML parser) and is written to a temporary
 * file that is renamed into place.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gating.h"
#include "report_private.h"

#define MAX_GROUPS    64
#define MAX_HEAT_COLS 256 /* experts drawn in a heatmap; more are said in a note */

typedef struct {
    const omni_report_options *o;
    rrun *runs;
    int n_runs;
    /* every task name seen in any run's task_loss, in order: its index is its colour */
    char tasks[MAX_GROUPS][128];
    int n_tasks;
    double x_first, x_last; /* the steps logged by any run: every chart spans them */
} page;

static int task_color(page *p, const char *name)
{
    for (int i = 0; i < p->n_tasks; i++)
        if (!strcmp(p->tasks[i], name))
            return i;
    if (p->n_tasks == MAX_GROUPS)
        return MAX_GROUPS - 1;
    snprintf(p->tasks[p->n_tasks], sizeof p->tasks[0], "%s", name);
    return p->n_tasks++;
}

/* Legend entries for the runs (dash patterns), when there are several. */
static int run_legend(const page *p, rlegend *g, int n)
{
    if (p->n_runs < 2)
        return n;
    for (int r = 0; r < p->n_runs && n < 2 * MAX_GROUPS; r++) {
        g[n].color = -1;
        g[n].dash = r;
        snprintf(g[n].text, sizeof g[n].text, "run %s", p->runs[r].label);
        n++;
    }
    return n;
}

/* A chart of `key` with one line per (run, group): colour by group (task), dash by run. */
static void chart_by_group(page *p, rtext *t, const char *key, const char *title,
                           const char *ylabel, bool percent)
{
    rline lines[4 * MAX_GROUPS];
    rlegend legend[2 * MAX_GROUPS];
    bool used[MAX_GROUPS] = {false};
    int n = 0;
    for (int r = 0; r < p->n_runs; r++)
        for (int i = 0; i < p->runs[r].n_series && n < 4 * MAX_GROUPS; i++) {
            const rseries *s = &p->runs[r].series[i];
            if (strcmp(s->key, key))
                continue;
            int c = task_color(p, s->group);
            used[c] = true;
            lines[n++] = (rline){s, c, r};
        }
    if (n == 0)
        return;
    int m = 0;
    for (int c = 0; c < p->n_tasks; c++)
        if (used[c]) {
            legend[m] = (rlegend){.color = c, .dash = 0};
            snprintf(legend[m].text, sizeof legend[m].text, "%s",
                     p->tasks[c][0] ? p->tasks[c] : "(all)");
            m++;
        }
    m = run_legend(p, legend, m);
    rtext_puts(t, "<figure>\n");
    rsvg_line_chart(t, title, ylabel, lines, n, legend, m, percent, p->x_first, p->x_last);
    rtext_puts(t, "</figure>\n");
}

/* A chart of `key` (a single series per run, group ""): colour and dash by run. */
static void chart_by_run(page *p, rtext *t, const char *key, const char *title, const char *ylabel,
                         bool percent)
{
    rline lines[MAX_GROUPS];
    rlegend legend[MAX_GROUPS];
    int n = 0;
    for (int r = 0; r < p->n_runs && n < MAX_GROUPS; r++) {
        const rseries *s = rrun_find(&p->runs[r], key, "");
        if (!s)
            continue;
        lines[n] = (rline){s, r, r};
        legend[n] = (rlegend){.color = r, .dash = r};
        snprintf(legend[n].text, sizeof legend[n].text, "run %s", p->runs[r].label);
        n++;
    }
    if (n == 0)
        return;
    rtext_puts(t, "<figure>\n");
    rsvg_line_chart(t, title, ylabel, lines, n, legend, p->n_runs > 1 ? n : 0, percent, p->x_first,
                    p->x_last);
    rtext_puts(t, "</figure>\n");
}

/* Titles and units of the evaluation metrics omnimoe writes; others are drawn by name. */
static void eval_title(const char *key, char *title, size_t tl, char *unit, size_t ul,
                       bool *percent)
{
    static const struct {
        const char *key, *title, *unit;
        bool percent;
    } known[] = {
        {"task_accuracy", "Validation next-token accuracy", "accuracy (%)", true},
        {"accuracy", "Validation next-token accuracy", "accuracy (%)", true},
        {"exact_match", "Exact match of generated outputs", "exact match (%)", true},
        {"task_exact_match", "Exact match of generated outputs", "exact match (%)", true},
        {"cer", "Character error rate", "CER (%)", true},
        {"mean_return", "Mean return per episode", "return", false},
        {"task_mean_return", "Mean return per episode", "return", false},
        {"task_return", "Mean return per episode (eval.env rollouts)", "return", false},
        {"bits_per_byte", "Bits per byte", "bits/byte", false},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(key, known[i].key)) {
            snprintf(title, tl, "%s", known[i].title);
            snprintf(unit, ul, "%s", known[i].unit);
            *percent = known[i].percent;
            return;
        }
    snprintf(title, tl, "Evaluation: %s", key);
    snprintf(unit, ul, "%s", key);
    *percent = false;
}

/* Loss and evaluation (load false), or optimisation and expert load (load true). */
static void section_curves(page *p, rtext *t, bool load)
{
    if (load) {
        rtext_puts(t, "<h2>Optimisation and expert load</h2>\n<div class=\"figs\">\n");
        chart_by_run(p, t, "loss", "Training loss (task weights applied)",
                     "cross-entropy (nats/token)", false);
        chart_by_run(p, t, "lr", "Learning rate", "learning rate", false);
        chart_by_run(p, t, "drop_share", "Dropped assignments (over capacity)",
                     "share of assignments (%)", true);
        chart_by_group(p, t, "load_max_over_mean", "Expert load balance per MoE layer",
                       "max load / mean load (1 = even)", false);
        rtext_puts(t, "</div>\n");
        return;
    }
    rtext_puts(t, "<h2>Loss</h2>\n<div class=\"figs\">\n");
    chart_by_group(p, t, "task_loss", "Training loss per task", "cross-entropy (nats/token)",
                   false);
    chart_by_group(p, t, "eval/task_loss", "Validation loss per task", "cross-entropy (nats/token)",
                   false);
    rtext_puts(t, "</div>\n");

    /* every evaluation metric but the loss, in order of first appearance */
    char keys[MAX_GROUPS][64];
    int n_keys = 0;
    for (int r = 0; r < p->n_runs; r++)
        for (int i = 0; i < p->runs[r].n_series; i++) {
            const char *k = p->runs[r].series[i].key;
            if (strncmp(k, "eval/", 5) || !strcmp(k, "eval/task_loss"))
                continue;
            bool seen = false;
            for (int j = 0; j < n_keys && !seen; j++)
                seen = !strcmp(keys[j], k);
            if (!seen && n_keys < MAX_GROUPS)
                snprintf(keys[n_keys++], sizeof keys[0], "%s", k);
        }
    rtext_puts(t, "<h2>Evaluation</h2>\n");
    if (n_keys == 0)
        rtext_puts(t, "<p class=\"note\">No evaluation metric logged.</p>\n");
    rtext_puts(t, "<div class=\"figs\">\n");
    for (int j = 0; j < n_keys; j++) {
        char title[128], unit[96];
        bool percent;
        eval_title(keys[j] + 5, title, sizeof title, unit, sizeof unit, &percent);
        bool per_group = false;
        for (int r = 0; r < p->n_runs; r++)
            for (int i = 0; i < p->runs[r].n_series; i++)
                per_group |=
                    !strcmp(p->runs[r].series[i].key, keys[j]) && p->runs[r].series[i].group[0];
        if (per_group)
            chart_by_group(p, t, keys[j], title, unit, percent);
        else
            chart_by_run(p, t, keys[j], title, unit, percent);
    }
    rtext_puts(t, "</div>\n");
}

/* The row labels and row-normalised values of one routing table of one layer: the share
 * of each group's kept assignments that each expert took. false when absent. */
static bool heat_values(const json_t *o, const char *key, const char *ent_key, size_t layer,
                        const char **labels, double *v, double *side, int *rows, int *cols,
                        int *all_cols, double *vmax)
{
    const json_t *layers = json_object_get(o, key);
    const json_t *t = json_array_get(layers, layer);
    if (!json_is_object(t))
        return false;
    const json_t *ent = json_array_get(json_object_get(o, ent_key), layer);
    const char *g;
    json_t *row;
    *rows = 0;
    *cols = 0;
    *vmax = 0;
    json_object_foreach((json_t *)t, g, row)
    {
        if (*rows == MAX_GROUPS)
            break;
        int n = (int)json_array_size(row);
        if (*cols == 0) {
            *all_cols = n;
            *cols = n > MAX_HEAT_COLS ? MAX_HEAT_COLS : n;
        }
        double sum = 0;
        for (int e = 0; e < *cols; e++) {
            double x = json_number_value(json_array_get(row, (size_t)e));
            sum += isfinite(x) ? x : 0;
        }
        for (int e = 0; e < *cols; e++) {
            double x = json_number_value(json_array_get(row, (size_t)e));
            double f = sum > 0 ? x / sum : (double)NAN;
            v[*rows * MAX_HEAT_COLS + e] = f;
            if (isfinite(f) && f > *vmax)
                *vmax = f;
        }
        const json_t *h = json_object_get(ent, g);
        side[*rows] = json_is_number(h) ? json_number_value(h) : (double)NAN;
        labels[(*rows)++] = g;
    }
    return *rows > 0 && *cols > 0;
}

/* Where assignments were dropped over capacity in one layer: per task and expert, the
 * share of the task's assignments to that expert that were dropped (NAN where it had
 * none), and beside each row the task's dropped share in percent. false when the layer
 * dropped nothing (or the run logged no drop table). */
static bool drop_values(const json_t *o, size_t layer, const char **labels, double *v, double *side,
                        int *rows, int *cols, int *all_cols, double *vmax)
{
    const json_t *kept = json_array_get(json_object_get(o, "task_expert_load"), layer);
    const json_t *drop = json_array_get(json_object_get(o, "task_expert_drop"), layer);
    if (!json_is_object(kept) || !json_is_object(drop))
        return false;
    *rows = 0;
    *cols = 0;
    *vmax = 0;
    double dropped = 0;
    const char *g;
    json_t *drow;
    json_object_foreach((json_t *)drop, g, drow)
    {
        if (*rows == MAX_GROUPS)
            break;
        const json_t *krow = json_object_get(kept, g);
        int n = (int)json_array_size(drow);
        if (*cols == 0) {
            *all_cols = n;
            *cols = n > MAX_HEAT_COLS ? MAX_HEAT_COLS : n;
        }
        double d_sum = 0, a_sum = 0;
        for (int e = 0; e < *cols; e++) {
            /* json_number_value: 0 for a null or a missing value */
            double d = json_number_value(json_array_get(drow, (size_t)e));
            double k = json_number_value(json_array_get(krow, (size_t)e));
            d = isfinite(d) && d > 0 ? d : 0;
            k = isfinite(k) && k > 0 ? k : 0;
            double f = d + k > 0 ? d / (d + k) : (double)NAN;
            v[*rows * MAX_HEAT_COLS + e] = f;
            if (isfinite(f) && f > *vmax)
                *vmax = f;
            d_sum += d;
            a_sum += d + k;
        }
        dropped += d_sum;
        side[*rows] = a_sum > 0 ? 100 * d_sum / a_sum : (double)NAN;
        labels[(*rows)++] = g;
    }
    return dropped > 0 && *rows > 0 && *cols > 0;
}

static void heatmaps_at(rtext *t, const rrun *r, const json_t *o, const char *when)
{
    rtext_puts(t, "<h3>");
    rtext_escaped(t, r->label);
    rtext_printf(t, ", step %lld (%s)</h3>\n<div class=\"figs\">\n",
                 (long long)json_integer_value(json_object_get(o, "step")), when);
    static double v[MAX_GROUPS * MAX_HEAT_COLS], dense[MAX_GROUPS * MAX_HEAT_COLS],
        side[MAX_GROUPS];
    const char *labels[MAX_GROUPS];
    size_t n_layers = json_array_size(json_object_get(o, "task_expert_load"));
    for (size_t l = 0; l < n_layers; l++) {
        bool dead[MAX_HEAT_COLS] = {false};
        const json_t *d = json_array_get(json_object_get(o, "dead_experts"), l);
        for (size_t i = 0; i < json_array_size(d); i++) {
            json_int_t e = json_integer_value(json_array_get(d, i));
            if (e >= 0 && e < MAX_HEAT_COLS)
                dead[e] = true;
        }
        static const char *const keys[2][3] = {
            {"task_expert_load", "task_mean_entropy", "task"},
            {"modality_expert_load", "modality_mean_entropy", "modality"}};
        for (int k = 0; k < 2; k++) {
            int rows, cols, all_cols = 0;
            double vmax;
            if (!heat_values(o, keys[k][0], keys[k][1], l, labels, v, side, &rows, &cols, &all_cols,
                             &vmax))
                continue;
            char note[96];
            snprintf(note, sizeof note, "experts 0 to %d of %d shown", cols - 1, all_cols);
            for (int i = 0; i < rows; i++)
                memcpy(dense + i * cols, v + i * MAX_HEAT_COLS, (size_t)cols * sizeof *dense);
            char title[256];
            snprintf(title, sizeof title, "MoE layer %zu: %s \u00d7 expert (%% kept)", l,
                     keys[k][2]);
            vmax = vmax > 0 ? ceil(vmax * 10) / 10 : 1;
            rtext_puts(t, "<figure>\n");
            rsvg_heatmap(t, title, labels, rows, cols, dense, vmax, side, "entropy", dead,
                         all_cols > cols ? note : NULL);
            rtext_puts(t, "</figure>\n");
        }
        int rows, cols, all_cols = 0;
        double vmax;
        if (drop_values(o, l, labels, v, side, &rows, &cols, &all_cols, &vmax)) {
            for (int i = 0; i < rows; i++)
                memcpy(dense + i * cols, v + i * MAX_HEAT_COLS, (size_t)cols * sizeof *dense);
            char title[256], note[96];
            snprintf(title, sizeof title, "MoE layer %zu: task \u00d7 expert (%% dropped)", l);
            snprintf(note, sizeof note, "experts 0 to %d of %d shown", cols - 1, all_cols);
            vmax = ceil(vmax * 10) / 10;
            rtext_puts(t, "<figure>\n");
            rsvg_heatmap(t, title, labels, rows, cols, dense, vmax, side, "dropped (%)", NULL,
                         all_cols > cols ? note : NULL);
            rtext_puts(t, "</figure>\n");
        }
    }
    rtext_puts(t, "</div>\n");
}

static void section_routing(page *p, rtext *t)
{
    rtext_puts(t, "<h2>Routing: which experts each task and modality uses</h2>\n"
                  "<p class=\"note\">Each cell: the share (%) of a task's (or modality's) "
                  "token\u2192expert assignments kept by that expert over the logging window "
                  "of that step; each row sums to 100. Right: the entropy (nats) of the row's "
                  "mean router distribution, ln E when it spreads evenly over E experts, 0 "
                  "when one expert takes all. Experts that kept nothing in the window are "
                  "marked dead. Where a layer dropped assignments over capacity, a third map "
                  "shows where: the share (%) of each task's assignments to each expert that "
                  "were dropped, and beside it the task's dropped share.</p>\n");
    for (int r = 0; r < p->n_runs; r++) {
        const rrun *run = &p->runs[r];
        if (!run->last) {
            rtext_puts(t, "<p class=\"note\">Run ");
            rtext_escaped(t, run->label);
            rtext_puts(t, run->n_moe_layers == 0
                              ? ": a dense model, no routing.</p>\n"
                              : ": its metrics.jsonl has no routing tables (written before "
                                "they were logged); its load curves are above.</p>\n");
        } else {
            heatmaps_at(t, run, run->last, "last logged");
            if (p->o->step >= 0 && run->at && run->at != run->last)
                heatmaps_at(t, run, run->at, "--step");
            else if (p->o->step >= 0 && !run->at) {
                rtext_printf(t, "<p class=\"note\">Run ");
                rtext_escaped(t, run->label);
                rtext_printf(t, ": no routing tables logged at or before step %lld.</p>\n",
                             (long long)p->o->step);
            }
        }
    }
}

static void section_runs(page *p, rtext *t)
{
    rtext_puts(t, "<table>\n<tr><th>run</th><th>directory</th><th>steps logged</th>"
                  "<th>MoE layers</th><th>effective experiment from</th></tr>\n");
    for (int r = 0; r < p->n_runs; r++) {
        const rrun *run = &p->runs[r];
        rtext_puts(t, "<tr><td>");
        rtext_escaped(t, run->label);
        rtext_puts(t, "</td><td>");
        rtext_escaped(t, run->dir);
        rtext_printf(t, "</td><td>%lld (%lld to %lld)</td><td>%d</td><td>", (long long)run->lines,
                     (long long)run->first_step, (long long)run->last_step, run->n_moe_layers);
        rtext_escaped(t, run->yaml ? run->yaml_from : "no readable checkpoint");
        rtext_puts(t, "</td></tr>\n");
    }
    rtext_puts(t, "</table>\n");
}

static void section_experiments(page *p, rtext *t)
{
    rtext_puts(t, "<h2>Effective experiments</h2>\n");
    for (int r = 0; r < p->n_runs; r++) {
        const rrun *run = &p->runs[r];
        rtext_puts(t, "<h3>");
        rtext_escaped(t, run->label);
        rtext_puts(t, "</h3>\n");
        if (!run->yaml) {
            rtext_puts(t, "<p class=\"note\">No readable checkpoint in the run directory (");
            rtext_escaped(t, run->yaml_from);
            rtext_puts(t, "), so the effective experiment is not known here (the training log "
                          "prints it).</p>\n");
            continue;
        }
        rtext_puts(t, "<pre>");
        rtext_escaped(t, run->yaml);
        rtext_puts(t, "</pre>\n");
    }
}

static const char style[] =
    "body{font-family:sans-serif;color:#111;margin:24px;max-width:1420px}"
    "h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:26px 0 8px;"
    "border-bottom:1px solid #bbb;padding-bottom:3px}h3{font-size:14px}"
    "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
    "padding:3px 8px;text-align:left}.figs{display:flex;flex-wrap:wrap;gap:14px 22px}"
    "figure{margin:0;break-inside:avoid;page-break-inside:avoid}"
    "svg{max-width:100%;height:auto}.note{color:#444;font-size:13px}"
    "pre{font-size:11px;background:#f6f6f6;padding:8px;border:1px solid #ddd;"
    "white-space:pre-wrap;break-inside:avoid}"
    "@media print{body{margin:0;max-width:none}h2{break-after:avoid}"
    ".figs{gap:8px 12px}}";

static void build(page *p, rtext *t)
{
    rtext_puts(t, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE html>\n"
                  "<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n"
                  "<meta charset=\"utf-8\"/>\n<title>omnimoe report: ");
    for (int r = 0; r < p->n_runs; r++) {
        rtext_puts(t, r ? ", " : "");
        rtext_escaped(t, p->runs[r].label);
    }
    rtext_printf(t, "</title>\n<style>%s</style>\n</head>\n<body>\n<h1>omnimoe report</h1>\n",
                 style);
    rtext_printf(t,
                 "<p class=\"note\">Written by omnimoe %s from each run's metrics.jsonl "
                 "(docs/metrics.md, docs/report.md). Colours stand for tasks (or layers), "
                 "dash patterns for runs.</p>\n",
                 OMNI_VERSION);
    section_runs(p, t);
    section_curves(p, t, false); /* loss, evaluation */
    section_routing(p, t);
    section_curves(p, t, true); /* optimisation, expert load */
    section_experiments(p, t);
    rtext_puts(t, "</body>\n</html>\n");
}

/* Write text to `out` through a temporary file in the same directory and a rename. */
static omni_status write_atomic(const char *out, const rtext *t)
{
    char tmp[OMNI_PATH_MAX + 32];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", out) >= (int)sizeof tmp)
        return omni_fail(OMNI_ERR_USAGE, "%s: path too long", out);
    int fd = mkstemp(tmp);
    if (fd < 0)
        return omni_fail(OMNI_ERR_USAGE, "%s: cannot write there: %s", out, strerror(errno));
    /* mkstemp makes 0600; the page is for sharing: the usual mode under the umask */
    mode_t mask = umask(0);
    umask(mask);
    fchmod(fd, 0666 & ~mask);
    FILE *f = fdopen(fd, "w");
    if (!f) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return omni_fail(OMNI_ERR_IO, "%s: cannot write: %s", out, strerror(e));
    }
    errno = 0;
    size_t wrote = fwrite(t->s, 1, t->len, f);
    int e = errno;
    bool ok = wrote == t->len && fflush(f) == 0 && fsync(fileno(f)) == 0;
    e = ok ? 0 : errno ? errno : e;
    if (fclose(f) != 0 && ok) {
        ok = false;
        e = errno;
    }
    if (!ok) {
        unlink(tmp);
        return omni_fail(OMNI_ERR_IO, "%s: write failed: %s", out, e ? strerror(e) : "short write");
    }
    if (rename(tmp, out) != 0) {
        e = errno;
        unlink(tmp);
        return omni_fail(OMNI_ERR_USAGE, "%s: cannot write there: %s", out, strerror(e));
    }
    return OMNI_OK;
}

omni_status omni_report_write(const omni_report_options *o)
{
    page p;
    memset(&p, 0, sizeof p);
    p.o = o;
    p.runs = calloc((size_t)(o->n_runs > 0 ? o->n_runs : 1), sizeof *p.runs);
    if (!p.runs)
        return omni_fail(OMNI_ERR_NOMEM, "report: out of memory");
    omni_status st = OMNI_OK;
    for (int r = 0; r < o->n_runs && !st; r++, p.n_runs++)
        st = rrun_read(&p.runs[r], o->run_dirs[r], o->step);
    bool any_moe = false;
    for (int r = 0; r < p.n_runs && !st; r++)
        any_moe |= p.runs[r].n_moe_layers > 0;
    if (!st && !any_moe)
        st = omni_fail(OMNI_ERR_DATA,
                       "%s/metrics.jsonl: the run has no MoE layer (load_max_over_mean is empty "
                       "on every line): omnimoe report is about routing; give it an MoE run (a "
                       "dense run can be drawn beside one)",
                       o->run_dirs[0]);
    if (!st && o->step >= 0) {
        bool any = false;
        for (int r = 0; r < p.n_runs; r++)
            any |=
                p.runs[r].at != NULL || (p.runs[r].last == NULL && p.runs[r].first_step <= o->step);
        if (!any)
            st = omni_fail(OMNI_ERR_USAGE,
                           "--step %lld: no run logged routing tables at or "
                           "before that step",
                           (long long)o->step);
    }
    if (!st) {
        p.x_first = INFINITY, p.x_last = -INFINITY;
        for (int r = 0; r < p.n_runs; r++) {
            p.x_first = fmin(p.x_first, (double)p.runs[r].first_step);
            p.x_last = fmax(p.x_last, (double)p.runs[r].last_step);
            for (int i = 0; i < p.runs[r].n_series; i++)
                if (!strcmp(p.runs[r].series[i].key, "task_loss"))
                    task_color(&p, p.runs[r].series[i].group);
        }
        rtext t;
        rtext_init(&t);
        build(&p, &t);
        st = t.ok ? write_atomic(o->out, &t) : omni_fail(OMNI_ERR_NOMEM, "report: out of memory");
        rtext_free(&t);
    }
    for (int r = 0; r < p.n_runs; r++)
        rrun_free(&p.runs[r]);
    free(p.runs);
    return st;
}
