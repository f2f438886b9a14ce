/*
 * The build spec (docs/design.md §3; every key in docs/datasets.md): a strict libyaml
 * reader. Every fault is "SPEC:LINE:COL: what is wrong, what was expected".
 */
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

typedef struct {
    const char *path;
    yaml_document_t *doc;
} ctx;

static omni_status fail_at(const ctx *c, const yaml_node_t *n, const char *fmt, ...)
    OMNI_PRINTF(3, 4);

static omni_status fail_at(const ctx *c, const yaml_node_t *n, const char *fmt, ...)
{
    char what[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    long line = n ? (long)n->start_mark.line + 1 : 1, col = n ? (long)n->start_mark.column + 1 : 1;
    return omni_fail(OMNI_ERR_DATA, "%s:%ld:%ld: %s", c->path, line, col, what);
}

static const char *scalar(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static bool is_plain(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static omni_status get_int(const ctx *c, const yaml_node_t *n, const char *key, int64_t lo,
                           int64_t hi, int64_t *v)
{
    if (!is_plain(n))
        return fail_at(c, n, "%s is not a plain scalar, expected an integer", key);
    errno = 0;
    char *end;
    long long r = strtoll(scalar(n), &end, 10);
    if (errno || *end || !*scalar(n))
        return fail_at(c, n, "%s is \"%s\", expected an integer", key, scalar(n));
    if (r < lo || r > hi)
        return fail_at(c, n, "%s = %lld is out of range, expected an integer in [%lld, %lld]", key,
                       r, (long long)lo, (long long)hi);
    *v = r;
    return OMNI_OK;
}

static omni_status get_i32(const ctx *c, const yaml_node_t *n, const char *key, int64_t lo,
                           int64_t hi, int32_t *v)
{
    int64_t r;
    omni_status st = get_int(c, n, key, lo, hi, &r);
    if (!st)
        *v = (int32_t)r;
    return st;
}

static omni_status get_float(const ctx *c, const yaml_node_t *n, const char *key, double lo,
                             double hi, double *v)
{
    if (!is_plain(n))
        return fail_at(c, n, "%s is not a plain scalar, expected a number", key);
    errno = 0;
    char *end;
    double r = strtod(scalar(n), &end);
    if (errno || *end || !*scalar(n) || !isfinite(r))
        return fail_at(c, n, "%s is \"%s\", expected a number", key, scalar(n));
    if (r < lo || r > hi)
        return fail_at(c, n, "%s = %g is out of range, expected a number in [%g, %g]", key, r, lo,
                       hi);
    *v = r;
    return OMNI_OK;
}

static omni_status get_path(const ctx *c, const yaml_node_t *n, const char *key, char *out)
{
    if (n->type != YAML_SCALAR_NODE || !*scalar(n))
        return fail_at(c, n, "%s is not a path", key);
    return ds_path_join(c->path, scalar(n), out, OMNI_PATH_MAX);
}

/* Iterate a mapping, rejecting unknown and duplicate keys. */
typedef omni_status (*key_fn)(const ctx *c, void *dst, const char *key, const yaml_node_t *k,
                              const yaml_node_t *v);

static omni_status each_key(const ctx *c, const yaml_node_t *map, const char *what,
                            const char *const *keys, void *dst, key_fn fn)
{
    if (map->type != YAML_MAPPING_NODE)
        return fail_at(c, map, "%s is not a mapping, expected {key: value, ...}", what);
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        const char *key = k->type == YAML_SCALAR_NODE ? scalar(k) : "?";
        bool known = false;
        for (int i = 0; keys[i]; i++)
            known |= !strcmp(keys[i], key);
        if (!known) {
            char list[512] = "";
            for (int i = 0; keys[i]; i++) {
                strncat(list, keys[i], sizeof list - strlen(list) - 1);
                if (keys[i + 1])
                    strncat(list, ", ", sizeof list - strlen(list) - 1);
            }
            return fail_at(c, k, "unknown key %s in %s, expected one of: %s", key, what, list);
        }
        for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
            yaml_node_t *kq = yaml_document_get_node(c->doc, q->key);
            if (kq->type == YAML_SCALAR_NODE && !strcmp(scalar(kq), key))
                return fail_at(c, k, "duplicate key %s in %s, expected each key once", key, what);
        }
        omni_status st = fn(c, dst, key, k, v);
        if (st)
            return st;
    }
    return OMNI_OK;
}

static omni_status image_key(const ctx *c, void *dst, const char *key, const yaml_node_t *k,
                             const yaml_node_t *v)
{
    (void)k;
    ds_spec *s = dst;
    if (!strcmp(key, "size"))
        return get_i32(c, v, "image.size", 1, 1024, &s->image_size);
    if (!strcmp(key, "channels")) {
        omni_status st = get_i32(c, v, "image.channels", 1, 3, &s->image_channels);
        if (!st && s->image_channels == 2)
            return fail_at(c, v, "image.channels = 2, expected 1 (grey) or 3 (RGB)");
        return st;
    }
    if (!strcmp(key, "resize")) {
        int m = v->type == YAML_SCALAR_NODE ? omni_resize_mode_parse(scalar(v)) : -1;
        if (m < 0)
            return fail_at(c, v,
                           "image.resize is \"%s\", expected stretch (the default), pad or "
                           "error",
                           v->type == YAML_SCALAR_NODE ? scalar(v) : "not a word");
        s->image_resize = (omni_resize_mode)m;
        return OMNI_OK;
    }
    return get_i32(c, v, "image.patch", 1, 64, &s->image_patch);
}

static omni_status audio_key(const ctx *c, void *dst, const char *key, const yaml_node_t *k,
                             const yaml_node_t *v)
{
    (void)k;
    omni_audio_cfg *a = &((ds_spec *)dst)->audio;
    if (!strcmp(key, "sample_rate"))
        return get_i32(c, v, "audio.sample_rate", 1000, 192000, &a->sample_rate);
    if (!strcmp(key, "mels"))
        return get_i32(c, v, "audio.mels", 1, 512, &a->mels);
    if (!strcmp(key, "frames"))
        return get_i32(c, v, "audio.frames", 1, 8192, &a->frames);
    if (!strcmp(key, "patch"))
        return get_i32(c, v, "audio.patch", 1, 64, &a->patch);
    if (!strcmp(key, "n_fft"))
        return get_i32(c, v, "audio.n_fft", 16, 65536, &a->n_fft);
    if (!strcmp(key, "hop"))
        return get_i32(c, v, "audio.hop", 1, 65536, &a->hop);
    double d;
    omni_status st = get_float(c, v, "audio.top_db", 1, 200, &d);
    if (!st)
        a->top_db = (float)d;
    return st;
}

typedef struct {
    ds_spec_task *t;
    bool has_name, has_kind, has_val;
} task_ctx;

static omni_status task_key(const ctx *c, void *dst, const char *key, const yaml_node_t *k,
                            const yaml_node_t *v)
{
    (void)k;
    task_ctx *tc = dst;
    ds_spec_task *t = tc->t;
    if (!strcmp(key, "name")) {
        if (v->type != YAML_SCALAR_NODE || !omni_valid_name(scalar(v)) ||
            strlen(scalar(v)) >= OMNI_NAME_MAX)
            return fail_at(c, v,
                           "task name must be a short name of letters, digits, '-', '_', "
                           "'.'");
        snprintf(t->name, sizeof t->name, "%s", scalar(v));
        tc->has_name = true;
        return OMNI_OK;
    }
    if (!strcmp(key, "kind")) {
        int kind = v->type == YAML_SCALAR_NODE ? omni_task_kind_parse(scalar(v)) : -1;
        if (kind < 0)
            return fail_at(c, v, "kind is \"%s\", expected %s",
                           v->type == YAML_SCALAR_NODE ? scalar(v) : "?", omni_task_kind_list());
        t->kind = (omni_task_kind)kind;
        tc->has_kind = true;
        return OMNI_OK;
    }
    if (!strcmp(key, "manifest") || !strcmp(key, "episodes")) {
        if (t->input[0])
            return fail_at(c, v, "a task has one manifest or episodes key, not both");
        return get_path(c, v, key, t->input);
    }
    if (!strcmp(key, "val_fraction")) {
        tc->has_val = true;
        return get_float(c, v, "val_fraction", 0, 0.9, &t->val_fraction);
    }
    if (!strcmp(key, "chunk"))
        return get_int(c, v, "chunk", 16, 1 << 24, &t->chunk);
    /* files */
    if (v->type != YAML_SEQUENCE_NODE)
        return fail_at(c, v, "files is not a list, expected [path, ...]");
    int n = (int)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (n < 1)
        return fail_at(c, v, "files is empty, expected at least one text file");
    t->files = calloc((size_t)n, sizeof *t->files);
    if (!t->files)
        return omni_fail(OMNI_ERR_NOMEM, "cannot allocate the file list");
    t->n_files = n;
    for (int i = 0; i < n; i++) {
        yaml_node_t *f = yaml_document_get_node(c->doc, v->data.sequence.items.start[i]);
        omni_status st = get_path(c, f, "files entry", t->files[i]);
        if (st)
            return st;
    }
    return OMNI_OK;
}

static omni_status root_key(const ctx *c, void *dst, const char *key, const yaml_node_t *k,
                            const yaml_node_t *v)
{
    (void)k;
    ds_spec *s = dst;
    if (!strcmp(key, "seed")) {
        int64_t seed;
        omni_status st = get_int(c, v, "seed", 0, 4294967295LL, &seed);
        s->seed = (uint64_t)seed;
        return st;
    }
    if (!strcmp(key, "deflate")) {
        int64_t level;
        omni_status st = get_int(c, v, "deflate", 0, 9, &level);
        s->deflate = (int)level;
        return st;
    }
    if (!strcmp(key, "image")) {
        static const char *const keys[] = {"size", "channels", "patch", "resize", NULL};
        return each_key(c, v, "image", keys, s, image_key);
    }
    if (!strcmp(key, "audio")) {
        static const char *const keys[] = {"sample_rate", "mels", "frames", "patch",
                                           "n_fft",       "hop",  "top_db", NULL};
        return each_key(c, v, "audio", keys, s, audio_key);
    }
    /* tasks */
    if (v->type != YAML_SEQUENCE_NODE)
        return fail_at(c, v, "tasks is not a list, expected a list of {name, kind, ...}");
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
         it++) {
        yaml_node_t *tn = yaml_document_get_node(c->doc, *it);
        if (s->n_tasks == OMNI_MAX_TASKS)
            return fail_at(c, tn, "more than %d tasks", OMNI_MAX_TASKS);
        ds_spec_task *t = &s->tasks[s->n_tasks++];
        t->line = (long)tn->start_mark.line + 1;
        t->chunk = 2048;
        task_ctx tc = {.t = t};
        static const char *const keys[] = {"name",     "kind",         "manifest", "files",
                                           "episodes", "val_fraction", "chunk",    NULL};
        omni_status st = each_key(c, tn, "a task", keys, &tc, task_key);
        if (st)
            return st;
        if (!tc.has_name || !tc.has_kind)
            return fail_at(c, tn, "a task needs name and kind");
        if (!tc.has_val)
            return fail_at(c, tn, "task %s has no val_fraction, expected a number in [0, 0.9]",
                           t->name);
        for (int i = 0; i < s->n_tasks - 1; i++)
            if (!strcmp(s->tasks[i].name, t->name))
                return fail_at(c, tn, "task %s appears twice, expected unique names", t->name);
        bool wants_files = t->kind == OMNI_KIND_TEXT;
        if (wants_files && (!t->n_files || t->input[0]))
            return fail_at(c, tn, "task %s (text) needs files: [...] and no manifest", t->name);
        if (!wants_files && (t->n_files || !t->input[0]))
            return fail_at(
                c, tn, "task %s (%s) needs %s and no files", t->name, omni_task_kind_name(t->kind),
                t->kind == OMNI_KIND_CONTROL ? "episodes: FILE.h5" : "manifest: FILE.csv");
    }
    return OMNI_OK;
}

void ds_spec_free(ds_spec *spec)
{
    for (int i = 0; i < spec->n_tasks; i++)
        free(spec->tasks[i].files);
    spec->n_tasks = 0;
}

omni_status ds_spec_parse(ds_spec *spec, const char *path)
{
    memset(spec, 0, sizeof *spec);
    spec->seed = 1;
    spec->image_size = 32, spec->image_channels = 1, spec->image_patch = 8;
    spec->audio = (omni_audio_cfg){.sample_rate = 16000,
                                   .mels = 32,
                                   .frames = 64,
                                   .patch = 8,
                                   .n_fft = 512,
                                   .hop = 160,
                                   .top_db = 80.0f};
    char *text = NULL;
    size_t len = 0;
    if (omni_read_file(path, &text, &len))
        return omni_fail(OMNI_ERR_DATA, "%s: cannot read the spec (missing or unreadable)", path);
    yaml_parser_t parser;
    yaml_document_t doc;
    omni_status st = OMNI_OK;
    if (!yaml_parser_initialize(&parser)) {
        free(text);
        return omni_fail(OMNI_ERR_NOMEM, "cannot initialise the YAML parser");
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    ctx c = {.path = path, .doc = &doc};
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_mark_t m = parser.problem ? parser.problem_mark : parser.context_mark;
        st = omni_fail(OMNI_ERR_DATA, "%s:%ld:%ld: YAML syntax error: %s, expected valid YAML",
                       path, (long)m.line + 1, (long)m.column + 1,
                       parser.problem ? parser.problem : "unknown problem");
        yaml_parser_delete(&parser);
        free(text);
        return st;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    static const char *const keys[] = {"seed", "deflate", "image", "audio", "tasks", NULL};
    if (!root)
        st = omni_fail(OMNI_ERR_DATA, "%s:1:1: the spec is empty, expected tasks: [...]", path);
    else
        st = each_key(&c, root, "the spec", keys, spec, root_key);
    if (!st && spec->n_tasks == 0)
        st = omni_fail(OMNI_ERR_DATA, "%s:1:1: no tasks, expected tasks: [...]", path);
    if (!st && spec->image_size % spec->image_patch)
        st = omni_fail(OMNI_ERR_DATA, "%s: image.size %d is not a multiple of image.patch %d", path,
                       spec->image_size, spec->image_patch);
    omni_audio_cfg *a = &spec->audio;
    if (!st && (a->mels % a->patch || a->frames % a->patch))
        st = omni_fail(OMNI_ERR_DATA,
                       "%s: audio.mels %d and audio.frames %d must be multiples "
                       "of audio.patch %d",
                       path, a->mels, a->frames, a->patch);
    if (!st && a->hop > a->n_fft)
        st = omni_fail(OMNI_ERR_DATA, "%s: audio.hop %d exceeds audio.n_fft %d", path, a->hop,
                       a->n_fft);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    free(text);
    if (st)
        ds_spec_free(spec);
    return st;
}
