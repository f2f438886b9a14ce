/*
 * report: reading a run. metrics.jsonl is parsed with jansson, line by line; every line
 * must be a JSON object with an integer "step" (a truncated or foreign line stops the
 * report with FILE:LINE). Known fields of the wrong type stop it too; fields it does not
 * know are skipped, and fields a run lacks (older runs) are simply not drawn. The
 * effective experiment comes from the run's newest checkpoint, when it has one.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "report_private.h"

static rseries *series_get(rrun *r, const char *key, const char *group)
{
    for (int i = 0; i < r->n_series; i++)
        if (!strcmp(r->series[i].key, key) && !strcmp(r->series[i].group, group))
            return &r->series[i];
    if (r->n_series == r->cap_series) {
        int cap = r->cap_series ? 2 * r->cap_series : 32;
        rseries *s = realloc(r->series, (size_t)cap * sizeof *s);
        if (!s)
            return NULL;
        r->series = s;
        r->cap_series = cap;
    }
    rseries *s = &r->series[r->n_series++];
    memset(s, 0, sizeof *s);
    snprintf(s->key, sizeof s->key, "%s", key);
    snprintf(s->group, sizeof s->group, "%s", group);
    return s;
}

/* Append (step, v) to series (key, group); false when out of memory. */
static bool add_point(rrun *r, const char *key, const char *group, int64_t step, double v)
{
    rseries *s = series_get(r, key, group);
    if (!s)
        return false;
    if (s->n == s->cap) {
        int64_t cap = s->cap ? 2 * s->cap : 64;
        double *x = realloc(s->x, (size_t)cap * sizeof *x);
        if (x)
            s->x = x;
        double *y = x ? realloc(s->y, (size_t)cap * sizeof *y) : NULL;
        if (!y)
            return false;
        s->y = y;
        s->cap = cap;
    }
    s->x[s->n] = (double)step;
    s->y[s->n] = v;
    s->n++;
    return true;
}

const rseries *rrun_find(const rrun *r, const char *key, const char *group)
{
    for (int i = 0; i < r->n_series; i++)
        if (!strcmp(r->series[i].key, key) && !strcmp(r->series[i].group, group))
            return &r->series[i];
    return NULL;
}

typedef struct {
    const char *file;
    int64_t line;
} where;

static omni_status bad_field(const where *w, const char *key, const char *want)
{
    return omni_fail(OMNI_ERR_DATA, "%s:%lld: field \"%s\" is not %s", w->file, (long long)w->line,
                     key, want);
}

/* A number or null (NAN). */
static bool number_of(const json_t *v, double *out)
{
    if (json_is_null(v)) {
        *out = (double)NAN;
        return true;
    }
    if (!json_is_number(v))
        return false;
    *out = json_number_value(v);
    return true;
}

/* A scalar field, when present. */
static omni_status scalar(rrun *r, const where *w, const json_t *o, const char *key,
                          const char *series, int64_t step)
{
    const json_t *v = json_object_get(o, key);
    double d;
    if (!v)
        return OMNI_OK;
    if (!number_of(v, &d))
        return bad_field(w, key, "a number or null");
    return add_point(r, series, "", step, d) ? OMNI_OK : OMNI_ERR_NOMEM;
}

/* {group: number or null}, when present: one point per group. */
static omni_status per_group(rrun *r, const where *w, const json_t *v, const char *key,
                             const char *series, int64_t step)
{
    if (!v)
        return OMNI_OK;
    if (!json_is_object(v))
        return bad_field(w, key, "an object of numbers");
    const char *g;
    json_t *x;
    json_object_foreach((json_t *)v, g, x)
    {
        double d;
        if (!number_of(x, &d))
            return bad_field(w, key, "an object of numbers");
        if (!add_point(r, series, g, step, d))
            return OMNI_ERR_NOMEM;
    }
    return OMNI_OK;
}

static omni_status train_object(rrun *r, const where *w, json_t *o, int64_t step, int64_t chosen)
{
    omni_status st;
    if ((st = scalar(r, w, o, "loss", "loss", step)) || (st = scalar(r, w, o, "lr", "lr", step)) ||
        (st = scalar(r, w, o, "drop_share", "drop_share", step)) ||
        (st = per_group(r, w, json_object_get(o, "task_loss"), "task_loss", "task_loss", step)))
        return st;
    const json_t *lm = json_object_get(o, "load_max_over_mean");
    if (lm) {
        if (!json_is_array(lm))
            return bad_field(w, "load_max_over_mean", "a list of numbers");
        for (size_t l = 0; l < json_array_size(lm); l++) {
            double d;
            char group[32];
            if (!number_of(json_array_get(lm, l), &d))
                return bad_field(w, "load_max_over_mean", "a list of numbers");
            snprintf(group, sizeof group, "layer %zu", l);
            if (!add_point(r, "load_max_over_mean", group, step, d))
                return OMNI_ERR_NOMEM;
        }
        if ((int)json_array_size(lm) > r->n_moe_layers)
            r->n_moe_layers = (int)json_array_size(lm);
    }
    /* Routing tables: each a list (one per MoE layer) of {group: [one number per expert]};
     * checked here so that drawing can trust them. */
    static const char *const tables[] = {"task_expert_load", "modality_expert_load",
                                         "task_mean_entropy", "modality_mean_entropy",
                                         "dead_experts"};
    bool has_tables = false;
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        const json_t *t = json_object_get(o, tables[i]);
        if (!t)
            continue;
        if (!json_is_array(t))
            return bad_field(w, tables[i], "a list (one entry per MoE layer)");
        for (size_t l = 0; l < json_array_size(t); l++) {
            const json_t *layer = json_array_get(t, l);
            if (i == 4) { /* dead_experts: lists of integers */
                if (!json_is_array(layer))
                    return bad_field(w, tables[i], "a list of lists of experts");
                for (size_t e = 0; e < json_array_size(layer); e++)
                    if (!json_is_integer(json_array_get(layer, e)))
                        return bad_field(w, tables[i], "a list of lists of experts");
                continue;
            }
            if (!json_is_object(layer))
                return bad_field(w, tables[i], "a list of objects");
            const char *g;
            json_t *row;
            json_object_foreach((json_t *)layer, g, row)
            {
                if (i >= 2) { /* entropies: numbers */
                    double d;
                    if (!number_of(row, &d))
                        return bad_field(w, tables[i], "a list of objects of numbers");
                    continue;
                }
                if (!json_is_array(row))
                    return bad_field(w, tables[i], "a list of objects of lists of numbers");
                for (size_t e = 0; e < json_array_size(row); e++) {
                    double d;
                    if (!number_of(json_array_get(row, e), &d))
                        return bad_field(w, tables[i], "a list of objects of lists of numbers");
                }
            }
        }
        has_tables |= i == 0;
    }
    if (has_tables) {
        json_decref(r->last);
        r->last = json_incref(o);
        if (chosen >= 0 && step <= chosen) {
            json_decref(r->at);
            r->at = json_incref(o);
        }
    }
    if (r->lines == 0 || step < r->first_step)
        r->first_step = step;
    if (step > r->last_step)
        r->last_step = step;
    r->lines++;
    return OMNI_OK;
}

/*
 * An evaluation object: every field but "eval" and "step" that is a number (one series),
 * an object of numbers ({task: value}: a series per task), or an object of objects of
 * numbers ({task: {metric: value}}: a series per metric and task) is an evaluation metric.
 */
static omni_status eval_object(rrun *r, const where *w, json_t *o, int64_t step)
{
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        char series[64];
        if (!strcmp(key, "eval") || !strcmp(key, "step"))
            continue;
        snprintf(series, sizeof series, "eval/%s", key);
        double d;
        if (number_of(v, &d)) {
            if (!add_point(r, series, "", step, d))
                return OMNI_ERR_NOMEM;
            continue;
        }
        if (!json_is_object(v))
            continue; /* a list or a string: not a metric we draw */
        const char *task;
        json_t *x;
        json_object_foreach(v, task, x)
        {
            if (number_of(x, &d)) {
                if (!add_point(r, series, task, step, d))
                    return OMNI_ERR_NOMEM;
                continue;
            }
            if (!json_is_object(x))
                return bad_field(w, key, "an object of numbers or of objects of numbers");
            const char *metric;
            json_t *y;
            json_object_foreach(x, metric, y)
            {
                snprintf(series, sizeof series, "eval/%s", metric);
                if (number_of(y, &d) && !add_point(r, series, task, step, d))
                    return OMNI_ERR_NOMEM;
            }
        }
    }
    return OMNI_OK;
}

/* The effective experiment from the newest checkpoint of the run (none: NULL, no error). */
static void read_experiment(rrun *r)
{
    char path[OMNI_PATH_MAX + 64];
    omni_ckpt *c = NULL;
    if (omni_ckpt_find_latest(MPI_COMM_SELF, r->dir, path, sizeof path) ||
        omni_ckpt_open(MPI_COMM_SELF, path, &c)) {
        omni_error_clear();
        return;
    }
    const char *yaml = omni_ckpt_meta_of(c)->experiment_yaml;
    r->yaml = yaml ? strdup(yaml) : NULL;
    snprintf(r->yaml_from, sizeof r->yaml_from, "%s", path);
    omni_ckpt_close(c);
}

omni_status rrun_read(rrun *r, const char *dir, int64_t chosen)
{
    memset(r, 0, sizeof *r);
    snprintf(r->dir, sizeof r->dir, "%s", dir);
    /* the label: the last part of the path, trailing slashes ignored */
    char tmp[OMNI_PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", dir);
    size_t n = strlen(tmp);
    while (n > 1 && tmp[n - 1] == '/')
        tmp[--n] = '\0';
    const char *slash = strrchr(tmp, '/');
    snprintf(r->label, sizeof r->label, "%s", slash && slash[1] ? slash + 1 : tmp);

    char path[OMNI_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return omni_fail(OMNI_ERR_DATA, "%s: cannot read: %s (is %s a training output directory?)",
                         path, strerror(errno), dir);
    omni_status st = OMNI_OK;
    char *line = NULL;
    size_t cap = 0;
    where w = {path, 0};
    for (ssize_t len; !st && (len = getline(&line, &cap, f)) >= 0;) {
        w.line++;
        bool blank = true;
        for (ssize_t i = 0; i < len && blank; i++)
            blank = line[i] == ' ' || line[i] == '\n' || line[i] == '\r' || line[i] == '\t';
        if (blank)
            continue;
        json_error_t err;
        json_t *o = json_loadb(line, (size_t)len, 0, &err);
        if (!o) {
            st = omni_fail(OMNI_ERR_DATA,
                           "%s:%lld: not JSON (%s, column %d): a truncated or "
                           "foreign line",
                           path, (long long)w.line, err.text, err.column);
            break;
        }
        const json_t *step = json_object_get(o, "step");
        if (!json_is_object(o) || !json_is_integer(step) || json_integer_value(step) < 0) {
            st = omni_fail(OMNI_ERR_DATA,
                           "%s:%lld: not a metrics object (an object with an integer \"step\")",
                           path, (long long)w.line);
        } else if (json_is_true(json_object_get(o, "eval"))) {
            st = eval_object(r, &w, o, json_integer_value(step));
        } else {
            st = train_object(r, &w, o, json_integer_value(step), chosen);
        }
        json_decref(o);
    }
    if (!st && ferror(f))
        st = omni_fail(OMNI_ERR_DATA, "%s: read error: %s", path, strerror(errno));
    free(line);
    fclose(f);
    if (!st && r->lines == 0)
        st = omni_fail(OMNI_ERR_DATA, "%s: no training step logged", path);
    if (!st)
        read_experiment(r);
    return st;
}

void rrun_free(rrun *r)
{
    for (int i = 0; i < r->n_series; i++) {
        free(r->series[i].x);
        free(r->series[i].y);
    }
    free(r->series);
    json_decref(r->last);
    json_decref(r->at);
    free(r->yaml);
    memset(r, 0, sizeof *r);
}
