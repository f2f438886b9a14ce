/*
 * The experiment loader: libyaml builds a node tree (with line and column marks); the key
 * table of keys.c drives type checks, ranges and defaults, so that each key is described
 * once.
 */
#include "experiment.h"
#include "keys.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

/* Where a value came from, for messages: a place in a file, or a --set flag. */
typedef struct {
    const char *source; /* file name, or the whole --set flag */
    bool is_flag;
    long line, col; /* 1-based; for a flag, unused */
} origin;

typedef struct {
    omni_experiment *x;
    origin where[N_FIELDS];
    bool set[N_FIELDS];
} loader;

static omni_status fail_at(const origin *o, const char *fmt, ...) OMNI_PRINTF(2, 3);

static omni_status fail_at(const origin *o, const char *fmt, ...)
{
    char what[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (o->is_flag)
        return omni_fail(OMNI_ERR_CONFIG, "--set %s: %s", o->source, what);
    return omni_fail(OMNI_ERR_CONFIG, "%s:%ld:%ld: %s", o->source, o->line, o->col, what);
}

static origin node_origin(const origin *base, const yaml_node_t *n)
{
    origin o = *base;
    if (!o.is_flag) {
        o.line = (long)n->start_mark.line + 1;
        o.col = (long)n->start_mark.column + 1;
    }
    return o;
}

/* ---- scalar conversion ------------------------------------------------------- */

static const char *scalar(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static bool is_plain(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static const char *node_kind(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_MAPPING_NODE:
        return "a mapping";
    case YAML_SEQUENCE_NODE:
        return "a list";
    default:
        return is_plain(n) ? "a plain scalar" : "a quoted string";
    }
}

static bool parse_int(const char *s, int64_t *v)
{
    if (!*s)
        return false;
    errno = 0;
    char *end;
    long long r = strtoll(s, &end, 10);
    if (errno || *end)
        return false;
    *v = r;
    return true;
}

static bool parse_float(const char *s, double *v)
{
    if (!*s || isspace((unsigned char)*s))
        return false;
    errno = 0;
    char *end;
    double r = strtod(s, &end);
    if (errno || *end || !isfinite(r))
        return false;
    /* strtod also reads hex and "inf"/"nan", which YAML does not mean as numbers. */
    for (const char *p = s; *p; p++)
        if (isalpha((unsigned char)*p) && *p != 'e' && *p != 'E')
            return false;
    *v = r;
    return true;
}

static omni_status check_range(const field *f, const origin *o, double v)
{
    bool has_max = f->max >= f->min;
    if (v < f->min || (has_max && v > f->max)) {
        if (has_max)
            return fail_at(o, "%s.%s = %.17g is out of range, expected %s in [%.17g, %.17g]",
                           f->section, f->key, v, omni_exp_type_names[f->type], f->min, f->max);
        return fail_at(o, "%s.%s = %.17g is out of range, expected %s >= %.17g", f->section, f->key,
                       v, omni_exp_type_names[f->type], f->min);
    }
    return OMNI_OK;
}

static omni_status expect_scalar(const field *f, const origin *o, const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE)
        return fail_at(o, "%s.%s is %s, expected %s", f->section, f->key, node_kind(n),
                       omni_exp_type_names[f->type]);
    return OMNI_OK;
}

static omni_status set_tasks(omni_experiment *x, const field *f, const origin *base,
                             yaml_document_t *doc, const yaml_node_t *n)
{
    origin o = node_origin(base, n);
    if (n->type == YAML_SCALAR_NODE && is_plain(n) && !*scalar(n)) {
        x->data.n_tasks = 0; /* `tasks:` with nothing */
        return OMNI_OK;
    }
    if (n->type != YAML_MAPPING_NODE)
        return fail_at(&o, "%s.%s is %s, expected %s", f->section, f->key, node_kind(n),
                       omni_exp_type_names[f->type]);
    int count = 0;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        yaml_node_t *v = yaml_document_get_node(doc, p->value);
        origin ko = node_origin(base, k), vo = node_origin(base, v);
        if (k->type != YAML_SCALAR_NODE || !omni_valid_name(scalar(k)) ||
            strlen(scalar(k)) >= OMNI_NAME_MAX)
            return fail_at(&ko, "data.tasks: a task name must be a short name of letters, "
                                "digits, '-', '_', '.'");
        if (count == OMNI_MAX_TASKS)
            return fail_at(&ko, "data.tasks: more than %d tasks", OMNI_MAX_TASKS);
        for (int i = 0; i < count; i++)
            if (!strcmp(x->data.tasks[i].name, scalar(k)))
                return fail_at(&ko, "duplicate key data.tasks.%s, expected each task once",
                               scalar(k));
        omni_task_weight *t = &x->data.tasks[count];
        snprintf(t->name, sizeof t->name, "%s", scalar(k));
        t->weight = 1.0;
        t->loss_weight = 1.0;
        if (v->type == YAML_SCALAR_NODE) {
            if (!is_plain(v) || !parse_float(scalar(v), &t->weight))
                return fail_at(&vo, "data.tasks.%s is \"%s\", expected a number (the weight)",
                               t->name, scalar(v));
        } else if (v->type == YAML_MAPPING_NODE) {
            bool seen_w = false, seen_l = false;
            for (yaml_node_pair_t *q = v->data.mapping.pairs.start; q < v->data.mapping.pairs.top;
                 q++) {
                yaml_node_t *kk = yaml_document_get_node(doc, q->key);
                yaml_node_t *vv = yaml_document_get_node(doc, q->value);
                origin kko = node_origin(base, kk), vvo = node_origin(base, vv);
                const char *key = kk->type == YAML_SCALAR_NODE ? scalar(kk) : "";
                double *dst;
                bool *seen;
                if (!strcmp(key, "weight"))
                    dst = &t->weight, seen = &seen_w;
                else if (!strcmp(key, "loss_weight"))
                    dst = &t->loss_weight, seen = &seen_l;
                else
                    return fail_at(&kko,
                                   "unknown key data.tasks.%s.%s, expected weight or "
                                   "loss_weight",
                                   t->name, key);
                if (*seen)
                    return fail_at(&kko, "duplicate key data.tasks.%s.%s", t->name, key);
                *seen = true;
                if (!is_plain(vv) || !parse_float(scalar(vv), dst))
                    return fail_at(&vvo, "data.tasks.%s.%s is %s, expected a number", t->name, key,
                                   node_kind(vv));
            }
        } else {
            return fail_at(&vo, "data.tasks.%s is %s, expected a weight or {weight, loss_weight}",
                           t->name, node_kind(v));
        }
        if (!(t->weight > 0) || t->weight > 1e6)
            return fail_at(&vo, "data.tasks.%s weight %.17g is out of range, expected (0, 1e6]",
                           t->name, t->weight);
        if (t->loss_weight < 0 || t->loss_weight > 1e6)
            return fail_at(&vo,
                           "data.tasks.%s loss_weight %.17g is out of range, expected "
                           "[0, 1e6]",
                           t->name, t->loss_weight);
        count++;
    }
    x->data.n_tasks = count;
    return OMNI_OK;
}

/* moe.entropy: a mapping of local, global and threshold (each a number in the field's
 * range); the keys left out are 0. */
static omni_status set_entropy(omni_experiment *x, const field *f, const origin *base,
                               yaml_document_t *doc, const yaml_node_t *n)
{
    origin o = node_origin(base, n);
    if (n->type != YAML_MAPPING_NODE)
        return fail_at(&o, "%s.%s is %s, expected %s", f->section, f->key, node_kind(n),
                       omni_exp_type_names[f->type]);
    double v[3] = {0.0, 0.0, 0.0};
    bool seen[3] = {false, false, false};
    static const char *const names[3] = {"local", "global", "threshold"};
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(doc, p->value);
        origin ko = node_origin(base, k), vo = node_origin(base, vn);
        const char *key = k->type == YAML_SCALAR_NODE ? scalar(k) : "?";
        int i = 0;
        while (i < 3 && strcmp(key, names[i]))
            i++;
        if (i == 3)
            return fail_at(&ko, "unknown key moe.entropy.%s, expected local, global or threshold",
                           key);
        if (seen[i])
            return fail_at(&ko, "duplicate key moe.entropy.%s", key);
        seen[i] = true;
        if (vn->type != YAML_SCALAR_NODE || !is_plain(vn) || !parse_float(scalar(vn), &v[i]))
            return fail_at(&vo, "moe.entropy.%s is %s, expected a number", key, node_kind(vn));
        if (v[i] < f->min || v[i] > f->max)
            return fail_at(&vo, "moe.entropy.%s = %.17g is out of range, expected [%g, %g]", key,
                           v[i], f->min, f->max);
    }
    x->moe.entropy.local = v[0];
    x->moe.entropy.global = v[1];
    x->moe.entropy.threshold = v[2];
    return OMNI_OK;
}

/* --set moe.entropy.KEY=NUMBER: one of local, global, threshold; the others keep their
 * values (from the file or the defaults). */
static omni_status set_entropy_key(omni_experiment *x, const field *f, const origin *o,
                                   const char *key, const yaml_node_t *vn)
{
    static const char *const names[3] = {"local", "global", "threshold"};
    int i = 0;
    while (i < 3 && strcmp(key, names[i]))
        i++;
    if (i == 3)
        return fail_at(o, "unknown key moe.entropy.%s, expected local, global or threshold", key);
    double v;
    if (vn->type != YAML_SCALAR_NODE || !is_plain(vn) || !parse_float(scalar(vn), &v))
        return fail_at(o, "moe.entropy.%s is %s, expected a number", key, node_kind(vn));
    if (v < f->min || v > f->max)
        return fail_at(o, "moe.entropy.%s = %.17g is out of range, expected [%g, %g]", key, v,
                       f->min, f->max);
    double *dst[3] = {&x->moe.entropy.local, &x->moe.entropy.global, &x->moe.entropy.threshold};
    *dst[i] = v;
    return OMNI_OK;
}

static omni_status set_files(omni_experiment *x, const field *f, const origin *base,
                             yaml_document_t *doc, const yaml_node_t *n)
{
    origin o = node_origin(base, n);
    if (n->type != YAML_SEQUENCE_NODE)
        return fail_at(&o, "%s.%s is %s, expected %s", f->section, f->key, node_kind(n),
                       omni_exp_type_names[f->type]);
    int count = 0;
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
         it++) {
        yaml_node_t *v = yaml_document_get_node(doc, *it);
        origin vo = node_origin(base, v);
        if (v->type != YAML_SCALAR_NODE || !*scalar(v))
            return fail_at(&vo, "data.files entry is %s, expected a path", node_kind(v));
        if (count == OMNI_MAX_FILES)
            return fail_at(&vo, "data.files has more than %d files", OMNI_MAX_FILES);
        if (strlen(scalar(v)) >= OMNI_PATH_MAX)
            return fail_at(&vo, "data.files entry is longer than %d bytes", OMNI_PATH_MAX - 1);
        snprintf(x->data.files[count], OMNI_PATH_MAX, "%s", scalar(v));
        count++;
    }
    if (count == 0)
        return fail_at(&o, "data.files is empty, expected at least one dataset file");
    x->data.n_files = count;
    return OMNI_OK;
}

/* Set field f from node n. */
static omni_status set_field(omni_experiment *x, const field *f, const origin *base,
                             yaml_document_t *doc, const yaml_node_t *n)
{
    origin o = node_origin(base, n);
    char *dst = (char *)x + f->offset;
    omni_status st;
    switch (f->type) {
    case FT_INT: {
        int64_t v;
        if ((st = expect_scalar(f, &o, n)))
            return st;
        if (!is_plain(n) || !parse_int(scalar(n), &v))
            return fail_at(&o, "%s.%s is \"%s\", expected an integer", f->section, f->key,
                           scalar(n));
        if ((st = check_range(f, &o, (double)v)))
            return st;
        memcpy(dst, &v, sizeof v);
        return OMNI_OK;
    }
    case FT_FLOAT: {
        double v;
        if ((st = expect_scalar(f, &o, n)))
            return st;
        if (!is_plain(n) || !parse_float(scalar(n), &v))
            return fail_at(&o, "%s.%s is \"%s\", expected a number", f->section, f->key, scalar(n));
        if ((st = check_range(f, &o, v)))
            return st;
        memcpy(dst, &v, sizeof v);
        return OMNI_OK;
    }
    case FT_BOOL: {
        if ((st = expect_scalar(f, &o, n)))
            return st;
        const char *s = scalar(n);
        bool v;
        if (is_plain(n) && (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")))
            v = true;
        else if (is_plain(n) && (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")))
            v = false;
        else
            return fail_at(&o, "%s.%s is \"%s\", expected true or false", f->section, f->key, s);
        memcpy(dst, &v, sizeof v);
        return OMNI_OK;
    }
    case FT_STRING:
    case FT_PATH: {
        if ((st = expect_scalar(f, &o, n)))
            return st;
        const char *s = scalar(n);
        size_t cap = f->type == FT_STRING ? OMNI_NAME_MAX : OMNI_PATH_MAX;
        if (strlen(s) >= cap)
            return fail_at(&o, "%s.%s is longer than %zu bytes", f->section, f->key, cap - 1);
        /* A string key whose least length is 0 may be empty (its "unset"). */
        if (f->type == FT_STRING && (*s || f->min > 0) && !omni_valid_name(s))
            return fail_at(&o, "%s.%s is \"%s\", expected a %s", f->section, f->key, s, f->doc);
        snprintf(dst, cap, "%s", s);
        return OMNI_OK;
    }
    case FT_ATTENTION: {
        if ((st = expect_scalar(f, &o, n)))
            return st;
        omni_attention v;
        if (!strcmp(scalar(n), "causal"))
            v = OMNI_ATTN_CAUSAL;
        else if (!strcmp(scalar(n), "prefix"))
            v = OMNI_ATTN_PREFIX;
        else
            return fail_at(&o, "%s.%s is \"%s\", expected causal or prefix", f->section, f->key,
                           scalar(n));
        memcpy(dst, &v, sizeof v);
        return OMNI_OK;
    }
    case FT_ROUTER: {
        if ((st = expect_scalar(f, &o, n)))
            return st;
        int r = 0;
        while (r < OMNI_ROUTER_COUNT && strcmp(scalar(n), omni_router_name((omni_router_kind)r)))
            r++;
        if (r == OMNI_ROUTER_COUNT)
            return fail_at(&o, "%s.%s is \"%s\", expected topk, task or expert_choice", f->section,
                           f->key, scalar(n));
        omni_router_kind v = (omni_router_kind)r;
        memcpy(dst, &v, sizeof v);
        return OMNI_OK;
    }
    case FT_PRECISION: {
        if ((st = expect_scalar(f, &o, n)))
            return st;
        omni_precision v;
        if (!omni_precision_parse(scalar(n), &v))
            return fail_at(&o, "%s.%s is \"%s\", expected fp32 or bf16", f->section, f->key,
                           scalar(n));
        memcpy(dst, &v, sizeof v);
        return OMNI_OK;
    }
    case FT_GEMM: {
        if ((st = expect_scalar(f, &o, n)))
            return st;
        omni_gemm_choice v;
        if (!omni_gemm_choice_parse(scalar(n), &v))
            return fail_at(&o, "%s.%s is \"%s\", expected auto, onednn or openblas", f->section,
                           f->key, scalar(n));
        memcpy(dst, &v, sizeof v);
        return OMNI_OK;
    }
    case FT_THREADS: {
        int64_t v;
        if ((st = expect_scalar(f, &o, n)))
            return st;
        if (!strcmp(scalar(n), "auto"))
            v = 0;
        else if (!is_plain(n) || !parse_int(scalar(n), &v))
            return fail_at(&o, "%s.%s is \"%s\", expected auto or an integer", f->section, f->key,
                           scalar(n));
        else if ((st = check_range(f, &o, (double)v)))
            return st;
        memcpy(dst, &v, sizeof v);
        return OMNI_OK;
    }
    case FT_FILES:
        return set_files(x, f, base, doc, n);
    case FT_TASKS:
        return set_tasks(x, f, base, doc, n);
    case FT_ENTROPY:
        return set_entropy(x, f, base, doc, n);
    default:
        OMNI_ASSERT(!"unknown field type");
    }
}

/* ---- names and suggestions --------------------------------------------------- */

static int edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return 99;
    int d[64][64];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            int del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
            d[i][j] = c < del ? (c < ins ? c : ins) : (del < ins ? del : ins);
        }
    return d[la][lb];
}

/* The closest of names[] to s when close enough to be a likely typo, else NULL. */
static const char *closest(const char *s, const char *const *names, int n)
{
    const char *best = NULL;
    int best_d = 3;
    for (int i = 0; i < n; i++) {
        size_t ls = strlen(s), ln = strlen(names[i]);
        /* A longer or shorter spelling of the same word: optimizer -> optim. */
        if (ls >= 4 && ln >= 4 && !strncmp(s, names[i], ls < ln ? ls : ln))
            return names[i];
        int d = edit_distance(s, names[i]);
        int limit = strlen(names[i]) <= 4 ? 1 : 2;
        if (d <= limit && d < best_d)
            best = names[i], best_d = d;
    }
    return best;
}

static int find_section(const char *s)
{
    for (int i = 0; i < N_SECTIONS; i++)
        if (!strcmp(s, omni_exp_sections[i]))
            return i;
    return -1;
}

static int find_field(const char *section, const char *key)
{
    for (int i = 0; i < N_FIELDS; i++)
        if (!strcmp(omni_exp_fields[i].section, section) && !strcmp(omni_exp_fields[i].key, key))
            return i;
    return -1;
}

static omni_status unknown_key(const origin *o, const char *section, const char *key)
{
    const char *names[N_FIELDS];
    int n = 0;
    for (int i = 0; i < N_FIELDS; i++)
        if (!strcmp(omni_exp_fields[i].section, section))
            names[n++] = omni_exp_fields[i].key;
    const char *near = closest(key, names, n);
    if (near)
        return fail_at(o, "unknown key %s.%s, did you mean %s.%s?", section, key, section, near);
    char list[1024] = "";
    for (int i = 0; i < n; i++) {
        strncat(list, names[i], sizeof list - strlen(list) - 1);
        if (i + 1 < n)
            strncat(list, ", ", sizeof list - strlen(list) - 1);
    }
    return fail_at(o, "unknown key %s.%s, expected one of: %s", section, key, list);
}

static omni_status unknown_section(const origin *o, const char *section)
{
    const char *near = closest(section, omni_exp_sections, N_SECTIONS);
    if (near)
        return fail_at(o, "unknown section %s, did you mean %s?", section, near);
    return fail_at(o,
                   "unknown section %s, expected one of: experiment, model, moe, data, "
                   "optim, parallel, checkpoint, log, eval",
                   section);
}

/* ---- documents --------------------------------------------------------------- */

static omni_status load_document(yaml_document_t *doc, const char *text, size_t len,
                                 const origin *o)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return omni_fail(OMNI_ERR_NOMEM, "cannot initialise the YAML parser");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    omni_status st = OMNI_OK;
    if (!yaml_parser_load(&parser, doc)) {
        origin at = *o;
        yaml_mark_t m = parser.problem ? parser.problem_mark : parser.context_mark;
        at.line = (long)m.line + 1;
        at.col = (long)m.column + 1;
        st = fail_at(&at, "YAML syntax error: %s%s%s, expected valid YAML",
                     parser.problem ? parser.problem : "unknown problem", parser.context ? " " : "",
                     parser.context ? parser.context : "");
    }
    yaml_parser_delete(&parser);
    return st;
}

/* Apply one `section: {key: value}` mapping of the file. */
static omni_status apply_section(loader *ld, const origin *base, yaml_document_t *doc,
                                 const char *section, const yaml_node_t *n)
{
    origin o = node_origin(base, n);
    if (n->type != YAML_MAPPING_NODE)
        return fail_at(&o, "section %s is %s, expected a mapping of keys", section, node_kind(n));
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        yaml_node_t *v = yaml_document_get_node(doc, p->value);
        origin ko = node_origin(base, k);
        const char *key = k->type == YAML_SCALAR_NODE ? scalar(k) : "?";
        int fi = find_field(section, key);
        if (fi < 0)
            return unknown_key(&ko, section, key);
        for (yaml_node_pair_t *q = n->data.mapping.pairs.start; q < p; q++) {
            yaml_node_t *kq = yaml_document_get_node(doc, q->key);
            if (kq->type == YAML_SCALAR_NODE && !strcmp(scalar(kq), key))
                return fail_at(&ko,
                               "duplicate key %s.%s (first at line %ld), expected each key "
                               "once",
                               section, key, (long)kq->start_mark.line + 1);
        }
        omni_status st = set_field(ld->x, &omni_exp_fields[fi], base, doc, v);
        if (st)
            return st;
        ld->set[fi] = true;
        ld->where[fi] = node_origin(base, v);
    }
    return OMNI_OK;
}

static omni_status apply_file(loader *ld, const char *text, size_t len, const char *source)
{
    origin base = {.source = source, .is_flag = false, .line = 1, .col = 1};
    yaml_document_t doc;
    omni_status st = load_document(&doc, text, len, &base);
    if (st)
        return st;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        st = fail_at(&base, "the file is empty, expected an experiment (see configs/README.md)");
        goto out_doc;
    }
    if (root->type != YAML_MAPPING_NODE) {
        origin o = node_origin(&base, root);
        st = fail_at(&o, "the document is %s, expected a mapping of sections", node_kind(root));
        goto out_doc;
    }
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(&doc, p->key);
        origin ko = node_origin(&base, k);
        const char *name = k->type == YAML_SCALAR_NODE ? scalar(k) : "?";
        if (find_section(name) < 0) {
            st = unknown_section(&ko, name);
            goto out_doc;
        }
        for (yaml_node_pair_t *q = root->data.mapping.pairs.start; q < p; q++) {
            yaml_node_t *kq = yaml_document_get_node(&doc, q->key);
            if (kq->type == YAML_SCALAR_NODE && !strcmp(scalar(kq), name)) {
                st = fail_at(&ko,
                             "duplicate section %s (first at line %ld), expected each "
                             "section once",
                             name, (long)kq->start_mark.line + 1);
                goto out_doc;
            }
        }
        st = apply_section(ld, &base, &doc, name, yaml_document_get_node(&doc, p->value));
        if (st)
            goto out_doc;
    }
out_doc:
    yaml_document_delete(&doc);
    return st;
}

static omni_status apply_flag(loader *ld, const char *flag)
{
    origin o = {.source = flag, .is_flag = true};
    const char *eq = strchr(flag, '=');
    const char *dot = strchr(flag, '.');
    if (!eq || !dot || dot > eq)
        return fail_at(&o, "expected section.key=value");
    char section[64], key[64];
    size_t ls = (size_t)(dot - flag), lk = (size_t)(eq - dot - 1);
    if (ls == 0 || ls >= sizeof section || lk == 0 || lk >= sizeof key)
        return fail_at(&o, "expected section.key=value");
    memcpy(section, flag, ls);
    section[ls] = '\0';
    memcpy(key, dot + 1, lk);
    key[lk] = '\0';
    /* section.key.part: one key inside a mapping-valued field (moe.entropy.local) */
    char *part = strchr(key, '.');
    if (part)
        *part++ = '\0';
    if (find_section(section) < 0)
        return unknown_section(&o, section);
    int fi = find_field(section, key);
    if (fi < 0)
        return unknown_key(&o, section, key);
    if (part && omni_exp_fields[fi].type != FT_ENTROPY)
        return fail_at(&o, "%s.%s is %s, not a mapping of keys: set it whole, %s.%s=VALUE", section,
                       key, omni_exp_type_names[omni_exp_fields[fi].type], section, key);
    const char *value = eq + 1;
    yaml_document_t doc;
    omni_status st = load_document(&doc, value, strlen(value), &o);
    if (st)
        return st;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root)
        st = fail_at(&o, "%s.%s has no value, expected %s", section, key,
                     omni_exp_type_names[omni_exp_fields[fi].type]);
    else if (part)
        st = set_entropy_key(ld->x, &omni_exp_fields[fi], &o, part, root);
    else
        st = set_field(ld->x, &omni_exp_fields[fi], &o, &doc, root);
    if (!st) {
        ld->set[fi] = true;
        ld->where[fi] = o;
    }
    yaml_document_delete(&doc);
    return st;
}

/* ---- defaults, contradictions ------------------------------------------------ */

void omni_experiment_defaults(omni_experiment *x)
{
    memset(x, 0, sizeof *x);
    origin o = {.source = "(defaults)", .is_flag = false, .line = 0, .col = 0};
    for (int i = 0; i < N_FIELDS; i++) {
        if (!omni_exp_fields[i].def)
            continue;
        yaml_document_t doc;
        omni_status st =
            load_document(&doc, omni_exp_fields[i].def, strlen(omni_exp_fields[i].def), &o);
        OMNI_ASSERT(st == OMNI_OK);
        st = set_field(x, &omni_exp_fields[i], &o, &doc, yaml_document_get_root_node(&doc));
        OMNI_ASSERT(st == OMNI_OK);
        yaml_document_delete(&doc);
    }
}

static int field_index(const char *section, const char *key)
{
    int i = find_field(section, key);
    OMNI_ASSERT(i >= 0);
    return i;
}

/* The place to blame for a contradiction: where `a` was set, else where `b` was, else
 * the top of the file. */
static const origin *blame(const loader *ld, const char *source, origin *fallback, const char *sa,
                           const char *ka, const char *sb, const char *kb)
{
    int a = field_index(sa, ka), b = field_index(sb, kb);
    if (ld->set[a])
        return &ld->where[a];
    if (ld->set[b])
        return &ld->where[b];
    fallback->source = source;
    fallback->is_flag = false;
    fallback->line = 1;
    fallback->col = 1;
    return fallback;
}

static omni_status check_consistency(const loader *ld, const char *source)
{
    const omni_experiment *x = ld->x;
    origin fb;
    for (int i = 0; i < N_FIELDS; i++)
        if (!omni_exp_fields[i].def && !ld->set[i]) {
            fb = (origin){.source = source, .is_flag = false, .line = 1, .col = 1};
            return fail_at(&fb, "missing required key %s.%s, expected %s (%s)",
                           omni_exp_fields[i].section, omni_exp_fields[i].key,
                           omni_exp_type_names[omni_exp_fields[i].type], omni_exp_fields[i].doc);
        }
    if (x->moe.top_k > x->moe.num_experts)
        return fail_at(blame(ld, source, &fb, "moe", "top_k", "moe", "num_experts"),
                       "moe.top_k = %lld exceeds moe.num_experts = %lld, expected top_k <= "
                       "num_experts",
                       (long long)x->moe.top_k, (long long)x->moe.num_experts);
    if (x->model.d_model % x->model.n_heads != 0)
        return fail_at(blame(ld, source, &fb, "model", "n_heads", "model", "d_model"),
                       "model.n_heads = %lld does not divide model.d_model = %lld, expected a "
                       "divisor",
                       (long long)x->model.n_heads, (long long)x->model.d_model);
    if (x->moe.every > x->model.n_layers)
        return fail_at(blame(ld, source, &fb, "moe", "every", "model", "n_layers"),
                       "moe.every = %lld exceeds model.n_layers = %lld, so no block would be MoE; "
                       "expected every <= n_layers, or 0 for a dense model",
                       (long long)x->moe.every, (long long)x->model.n_layers);
    if (x->moe.router == OMNI_ROUTER_TASK && x->moe.every == 0)
        return fail_at(blame(ld, source, &fb, "moe", "router", "moe", "every"),
                       "moe.router = task with moe.every = 0: a dense model has no router, "
                       "expected moe.every >= 1 or moe.router left out");
    if (x->moe.router == OMNI_ROUTER_TASK && x->moe.jitter > 0.0)
        return fail_at(blame(ld, source, &fb, "moe", "jitter", "moe", "router"),
                       "moe.jitter = %g with moe.router = task: the task router sees the task "
                       "embedding, not the tokens, so there is nothing to jitter; expected "
                       "moe.jitter = 0",
                       x->moe.jitter);
    if (x->moe.router == OMNI_ROUTER_EXPERT_CHOICE) {
        if (x->moe.every == 0)
            return fail_at(blame(ld, source, &fb, "moe", "router", "moe", "every"),
                           "moe.router = expert_choice with moe.every = 0: a dense model has no "
                           "router, expected moe.every >= 1 or moe.router left out");
        if (x->moe.capacity_factor <= 0.0)
            return fail_at(blame(ld, source, &fb, "moe", "capacity_factor", "moe", "router"),
                           "moe.capacity_factor = %g with moe.router = expert_choice: each expert "
                           "takes ceil(capacity_factor * top_k * tokens / num_experts) tokens, so "
                           "there is no dropless expert choice; expected capacity_factor > 0 "
                           "(1.0: on average top_k experts per token)",
                           x->moe.capacity_factor);
        if (x->moe.aux_loss > 0.0)
            return fail_at(blame(ld, source, &fb, "moe", "aux_loss", "moe", "router"),
                           "moe.aux_loss = %g with moe.router = expert_choice: every expert takes "
                           "exactly its capacity, so the balance loss is a constant without "
                           "gradient; expected moe.aux_loss = 0",
                           x->moe.aux_loss);
        if (x->moe.bias_rate > 0.0)
            return fail_at(blame(ld, source, &fb, "moe", "bias_rate", "moe", "router"),
                           "moe.bias_rate = %g with moe.router = expert_choice: the load is "
                           "balanced by construction, there is nothing for the bias to balance; "
                           "expected moe.bias_rate = 0",
                           x->moe.bias_rate);
    }
    bool entropy_on = x->moe.entropy.local > 0.0 || x->moe.entropy.global > 0.0;
    if (entropy_on && x->moe.every == 0)
        return fail_at(blame(ld, source, &fb, "moe", "entropy", "moe", "every"),
                       "moe.entropy is on with moe.every = 0: a dense model has no routing to "
                       "take the entropy of, expected moe.every >= 1 or moe.entropy left out");
    if (x->moe.entropy.global > 0.0 && x->moe.entropy.threshold <= 0.0)
        return fail_at(blame(ld, source, &fb, "moe", "entropy", "moe", "entropy"),
                       "moe.entropy.global = %g with threshold 0: the global loss counts only "
                       "while the entropy is below the threshold, so it never would; expected a "
                       "threshold > 0 (nats; e.g. log 2 = 0.69 for at least about 2 experts)",
                       x->moe.entropy.global);
    if (x->optim.min_lr > x->optim.lr)
        return fail_at(blame(ld, source, &fb, "optim", "min_lr", "optim", "lr"),
                       "optim.min_lr = %g exceeds optim.lr = %g, expected min_lr <= lr",
                       x->optim.min_lr, x->optim.lr);
    if (x->optim.warmup > x->optim.steps) {
        /* A short run that leaves warmup unset meets the default: say so. */
        bool warmup_default = !ld->set[field_index("optim", "warmup")];
        return fail_at(blame(ld, source, &fb, "optim", "warmup", "optim", "steps"),
                       "optim.warmup = %lld%s exceeds optim.steps = %lld, expected warmup <= "
                       "steps%s",
                       (long long)x->optim.warmup, warmup_default ? " (the default)" : "",
                       (long long)x->optim.steps,
                       warmup_default ? ": set optim.warmup (e.g. --set optim.warmup=0)" : "");
    }
    if (x->eval.env_task[0] && !x->eval.env[0])
        return fail_at(blame(ld, source, &fb, "eval", "env_task", "eval", "env"),
                       "eval.env_task = %s names a task to play, but eval.env is empty; expected "
                       "eval.env: cartpole or a command",
                       x->eval.env_task);
    return OMNI_OK;
}

omni_status omni_experiment_parse(omni_experiment *x, const char *text, size_t len,
                                  const char *source, const char *const *sets, int n_sets)
{
    loader ld;
    memset(&ld, 0, sizeof ld);
    omni_experiment_defaults(x);
    ld.x = x;
    omni_status st = apply_file(&ld, text, len, source);
    if (st)
        return st;
    for (int i = 0; i < n_sets; i++)
        if ((st = apply_flag(&ld, sets[i])))
            return st;
    if ((st = check_consistency(&ld, source)))
        return st;
    if (!x->experiment.out_dir[0])
        snprintf(x->experiment.out_dir, sizeof x->experiment.out_dir, "runs/%s",
                 x->experiment.name);
    return OMNI_OK;
}

omni_status omni_experiment_load(MPI_Comm comm, const char *path, const char *const *sets,
                                 int n_sets, omni_experiment *x)
{
    char *text = NULL;
    size_t len = 0;
    omni_status st = omni_mpi_read_file(comm, path, &text, &len);
    if (st)
        return st == OMNI_ERR_IO ? OMNI_ERR_CONFIG : st;
    /* Every rank parses the same bytes: all accept or all reject, no agreement needed. */
    st = omni_experiment_parse(x, text, len, path, sets, n_sets);
    free(text);
    return st;
}

int omni_experiment_task(const omni_experiment *x, const char *name)
{
    for (int i = 0; i < x->data.n_tasks; i++)
        if (!strcmp(x->data.tasks[i].name, name))
            return i;
    return -1;
}

bool omni_experiment_is_moe_block(const omni_experiment *x, int64_t layer)
{
    return x->moe.every > 0 && (layer + 1) % x->moe.every == 0;
}

static const char *const precision_names[] = {"fp32", "bf16"};
_Static_assert(sizeof precision_names / sizeof precision_names[0] == OMNI_PREC_COUNT,
               "a name for every precision");

const char *omni_precision_name(omni_precision p)
{
    return (int)p >= 0 && p < OMNI_PREC_COUNT ? precision_names[p] : "unknown";
}

bool omni_precision_parse(const char *s, omni_precision *p)
{
    for (int i = 0; i < OMNI_PREC_COUNT; i++)
        if (!strcmp(s, precision_names[i])) {
            *p = (omni_precision)i;
            return true;
        }
    return false;
}

static const char *const gemm_choice_names[] = {"auto", "onednn", "openblas"};
_Static_assert(sizeof gemm_choice_names / sizeof gemm_choice_names[0] == OMNI_GEMM_CHOICE_COUNT,
               "a name for every GEMM choice");

const char *omni_gemm_choice_name(omni_gemm_choice c)
{
    return (int)c >= 0 && c < OMNI_GEMM_CHOICE_COUNT ? gemm_choice_names[c] : "unknown";
}

bool omni_gemm_choice_parse(const char *s, omni_gemm_choice *c)
{
    for (int i = 0; i < OMNI_GEMM_CHOICE_COUNT; i++)
        if (!strcmp(s, gemm_choice_names[i])) {
            *c = (omni_gemm_choice)i;
            return true;
        }
    return false;
}
