/*
 * The dataset file (docs/datasets.md): writing it (to a temporary name, renamed when
 * complete) and reading it back with every attribute, offset, id and size checked.
 * The reader trusts nothing: a file may come from anyone's h5py script.
 */
#include "internal.h"

#include <ctype.h>
#include <hdf5.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "h5.h"

/* ---- writing ------------------------------------------------------------------ */

static omni_status w_i32(hid_t obj, const char *name, int32_t v, const char *path)
{
    return omni_h5_attr_write(obj, name, H5T_STD_I32LE, H5T_NATIVE_INT32, &v, path);
}

static omni_status w_f64(hid_t obj, const char *name, double v, const char *path)
{
    return omni_h5_attr_write(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v, path);
}

omni_status ds_write_attrs(hid_t f, const ds_file *df, const char *path)
{
    omni_status st;
    bool image = false, audio = false;
    for (int t = 0; t < df->n_tasks; t++) {
        image |= omni_kind_image(df->tasks[t].kind) || df->tasks[t].images;
        audio |= omni_kind_audio(df->tasks[t].kind);
    }
    if ((st = omni_h5_attr_write_str(f, "format", OMNI_DS_FORMAT, path)) ||
        (st = w_i32(f, "format_version", OMNI_DS_FORMAT_VERSION, path)) ||
        (st = w_i32(f, "text_vocab", OMNI_TEXT_VOCAB, path)) ||
        (st = w_i32(f, "bins", OMNI_BINS, path)) ||
        (st = w_i32(f, "tok_bin0", OMNI_TOK_BIN0, path)) ||
        (st = w_i32(f, "tok_pad", OMNI_TOK_PAD, path)) ||
        (st = w_i32(f, "tok_eos", OMNI_TOK_EOS, path)) ||
        (st = w_i32(f, "tok_sep", OMNI_TOK_SEP, path)) ||
        (st = w_i32(f, "tok_task0", OMNI_TOK_TASK0, path)) ||
        (st = w_i32(f, "n_tasks", df->n_tasks, path)) ||
        (st = w_f64(f, "mulaw_mu", (double)OMNI_MULAW_MU, path)) ||
        (st = w_f64(f, "mulaw_m", (double)OMNI_MULAW_M, path)) ||
        (st = omni_h5_attr_write(f, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, &df->seed, path)))
        return st;
    if (image && ((st = w_i32(f, "image_size", df->image_size, path)) ||
                  (st = w_i32(f, "image_channels", df->image_channels, path)) ||
                  (st = w_i32(f, "image_patch", df->image_patch, path)) ||
                  (st = omni_h5_attr_write_str(f, "image_resize",
                                               omni_resize_mode_name(df->image_resize), path))))
        return st;
    if (audio && ((st = w_i32(f, "audio_sample_rate", df->audio.sample_rate, path)) ||
                  (st = w_i32(f, "audio_mels", df->audio.mels, path)) ||
                  (st = w_i32(f, "audio_frames", df->audio.frames, path)) ||
                  (st = w_i32(f, "audio_patch", df->audio.patch, path)) ||
                  (st = w_i32(f, "audio_n_fft", df->audio.n_fft, path)) ||
                  (st = w_i32(f, "audio_hop", df->audio.hop, path)) ||
                  (st = w_f64(f, "audio_top_db", (double)df->audio.top_db, path))))
        return st;
    hid_t tasks = H5Gopen2(f, "tasks", H5P_DEFAULT);
    if (tasks < 0)
        return omni_fail(OMNI_ERR_IO, "%s: cannot open group /tasks", path);
    for (int i = 0; i < df->n_tasks && !st; i++) {
        const ds_task *t = &df->tasks[i];
        hid_t g = H5Gopen2(tasks, t->name, H5P_DEFAULT);
        if (g < 0) {
            st = omni_fail(OMNI_ERR_IO, "%s: cannot open group /tasks/%s", path, t->name);
            break;
        }
        st = omni_h5_attr_write_str(g, "kind", omni_task_kind_name(t->kind), path);
        if (!st)
            st = w_i32(g, "index", t->index, path);
        if (!st)
            st = w_f64(g, "val_fraction", t->val_fraction, path);
        if (!st && t->kind == OMNI_KIND_CONTROL) {
            if (!(st = w_i32(g, "obs_dim", t->obs_dim, path)) &&
                !(st = w_i32(g, "act_dim", t->act_dim, path)))
                st = w_i32(g, "discrete", t->discrete, path);
            if (!st && t->images)
                st = w_i32(g, "images", 1, path);
        }
        H5Gclose(g);
    }
    H5Gclose(tasks);
    return st;
}

/* Write a whole in-memory file (the demo, tests) through the streaming writer. */
omni_status ds_write(const ds_file *df, const char *path)
{
    ds_writer *w;
    omni_status st = ds_writer_open(&w, df, path, 0);
    if (st)
        return st;
    for (int t = 0; t < df->n_tasks && !st; t++)
        for (int s = 0; s < OMNI_SPLIT_COUNT && !st; s++)
            for (int64_t i = 0; i < df->tasks[t].split[s].n && !st; i++)
                st = ds_writer_append_pool(w, t, (omni_split)s, &df->tasks[t].split[s], i);
    if (st) {
        ds_writer_close(w, NULL);
        return st;
    }
    return ds_writer_close(w, df);
}

/* ---- reading ------------------------------------------------------------------ */

static omni_status bad(const char *path, const char *fmt, ...) OMNI_PRINTF(2, 3);

static omni_status bad(const char *path, const char *fmt, ...)
{
    char what[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return omni_fail(OMNI_ERR_DATA, "%s: %s", path, what);
}

/* An integer or float scalar attribute, converted to double; `required` or not. (`where`
 * is kept by the callers for their own messages; the h5 layer names the object.) */
static omni_status r_num(hid_t obj, const char *where, const char *name, bool required, double *v,
                         bool *present, const char *path)
{
    (void)where;
    return omni_h5_attr_read_num(obj, name, required, v, present, OMNI_ERR_DATA, path);
}

static omni_status r_int(hid_t obj, const char *where, const char *name, int64_t lo, int64_t hi,
                         int32_t *v, const char *path)
{
    double d;
    omni_status st = r_num(obj, where, name, true, &d, NULL, path);
    if (st)
        return st;
    if (d != floor(d) || d < (double)lo || d > (double)hi)
        return bad(path, "attribute %s%s = %g, expected an integer in [%lld, %lld]", where, name, d,
                   (long long)lo, (long long)hi);
    *v = (int32_t)d;
    return OMNI_OK;
}

static omni_status r_str(hid_t obj, const char *where, const char *name, char *out, size_t cap,
                         const char *path)
{
    (void)where;
    char *s = NULL;
    omni_status st = omni_h5_attr_read_str(obj, name, cap - 1, &s, OMNI_ERR_DATA, path);
    if (!st)
        snprintf(out, cap, "%s", s);
    free(s);
    return st;
}

/* Check the samples of a pool against the rules of its kind (docs/datasets.md). */
omni_status ds_check_pool(const ds_task *t, const ds_pool *p, const char *where, const char *path)
{
    const long long s0 = (long long)p->first, e0 = (long long)p->first_el;
    int32_t task_tok = OMNI_TOK_TASK0 + t->index;
    int32_t grid = t->rows * t->cols;
    int32_t step =
        (t->kind == OMNI_KIND_CONTROL && t->images ? grid : 0) + t->obs_dim + 1 + t->act_dim;
    for (int64_t i = 0; i < p->n; i++) {
        int64_t a = p->off[i], b = p->off[i + 1];
        if (b - a < 2)
            return bad(path,
                       "%ssample %lld has %lld elements, expected at least 2 (<task> and "
                       "more)",
                       where, s0 + (long long)i, (long long)(b - a));
        if (p->tok[a] != task_tok)
            return bad(path, "%ssample %lld starts with token %d, expected its task token %d",
                       where, s0 + (long long)i, p->tok[a], task_tok);
        int64_t patches = 0, losses = 0;
        for (int64_t j = a; j < b; j++) {
            int32_t v = p->tok[j];
            uint8_t l = p->loss[j];
            if (l > 1)
                return bad(path, "%sloss[%lld] = %u, expected 0 or 1", where, e0 + (long long)j, l);
            if (j == a) {
                if (l)
                    return bad(path, "%ssample %lld: loss on its <task> token", where,
                               s0 + (long long)i);
                continue;
            }
            if (v == OMNI_DS_PATCH) {
                if (t->patch_dim == 0)
                    return bad(path, "%stokens[%lld] is a patch element in a %s task", where,
                               e0 + (long long)j, omni_task_kind_name(t->kind));
                if (l)
                    return bad(path, "%sloss[%lld] = 1 on a patch, expected 0", where,
                               e0 + (long long)j);
                patches++;
            } else if (v < 0 || v >= OMNI_TOK_TASK0 || v == OMNI_TOK_PAD) {
                return bad(path,
                           "%stokens[%lld] = %d is outside the vocabulary (0..%d, or -1 for "
                           "a patch; <pad> and <task> tokens only where documented)",
                           where, e0 + (long long)j, v, OMNI_TOK_TASK0 - 1);
            }
            losses += l;
        }
        if (losses == 0)
            return bad(path, "%ssample %lld has no loss-bearing element", where, s0 + (long long)i);
        if (t->patch_dim > 0 && t->kind != OMNI_KIND_IMAGE_TO_TEXT &&
            t->kind != OMNI_KIND_AUDIO_TO_TEXT) {
            /* Whole grids: several images (image_text_to_text), a step's image (control). */
            int64_t np = p->poff[i + 1] - p->poff[i];
            int64_t most = t->kind == OMNI_KIND_IMAGE_TEXT_TO_TEXT ? DS_MAX_IMAGES : 1;
            bool control = t->kind == OMNI_KIND_CONTROL;
            if (control)
                most = (b - a - 1) / step;
            if (np != patches || np % grid || np < grid || np > most * grid ||
                (control && np != most * grid))
                return bad(path,
                           "%ssample %lld has %lld patch tokens and %lld patches, expected "
                           "whole grids of %d (%d x %d), %lld at most",
                           where, s0 + (long long)i, (long long)patches, (long long)np, grid,
                           t->rows, t->cols, (long long)most);
        } else if (t->patch_dim > 0) {
            int64_t np = p->poff[i + 1] - p->poff[i];
            if (np != patches || np != (int64_t)t->rows * t->cols)
                return bad(path,
                           "%ssample %lld has %lld patch tokens and %lld patches, expected "
                           "%d (%d x %d)",
                           where, s0 + (long long)i, (long long)patches, (long long)np,
                           t->rows * t->cols, t->rows, t->cols);
        }
        if (t->kind == OMNI_KIND_CONTROL) {
            if ((b - a - 1) % step != 0)
                return bad(path,
                           "%ssample %lld: %lld elements after <task> are not whole steps "
                           "of %d (patches + obs_dim + 1 + act_dim)",
                           where, s0 + (long long)i, (long long)(b - a - 1), step);
            int64_t g = t->images ? grid : 0;
            for (int64_t j = a + 1; j < b; j++) {
                int64_t k = (j - a - 1) % step - g;
                int32_t v = p->tok[j];
                bool is_act = k > t->obs_dim, is_sep = k == t->obs_dim;
                if ((k < 0) != (v == OMNI_DS_PATCH))
                    return bad(path, "%stokens[%lld] = %d, expected %s in a control step", where,
                               e0 + (long long)j, v, k < 0 ? "a patch (-1)" : "no patch");
                if (k < 0)
                    continue;
                if (is_sep ? v != OMNI_TOK_SEP
                           : (v < OMNI_TOK_BIN0 || v >= OMNI_TOK_BIN0 + OMNI_BINS))
                    return bad(path, "%stokens[%lld] = %d, expected %s in a control step", where,
                               e0 + (long long)j, v, is_sep ? "<sep>" : "a value bin");
                if (p->loss[j] != (is_act ? 1 : 0))
                    return bad(path, "%sloss[%lld] = %u, expected loss on action tokens only",
                               where, e0 + (long long)j, p->loss[j]);
            }
        }
    }
    return OMNI_OK;
}

static omni_status read_root(hid_t f, ds_file *df, bool image, bool audio, const char *path)
{
    omni_status st;
    int32_t v;
    char fmt[64];
    if ((st = r_str(f, "/", "format", fmt, sizeof fmt, path)))
        return st;
    if (strcmp(fmt, OMNI_DS_FORMAT))
        return bad(path, "attribute /format is \"%s\", expected \"%s\"", fmt, OMNI_DS_FORMAT);
    if ((st = r_int(f, "/", "format_version", 0, INT32_MAX, &v, path)))
        return st;
    if (v != OMNI_DS_FORMAT_VERSION)
        return bad(path, "format_version %d is not supported, expected %d", v,
                   OMNI_DS_FORMAT_VERSION);
    static const struct {
        const char *name;
        int32_t value;
    } layout[] = {
        {"text_vocab", OMNI_TEXT_VOCAB}, {"bins", OMNI_BINS},       {"tok_bin0", OMNI_TOK_BIN0},
        {"tok_pad", OMNI_TOK_PAD},       {"tok_eos", OMNI_TOK_EOS}, {"tok_sep", OMNI_TOK_SEP},
        {"tok_task0", OMNI_TOK_TASK0},
    };
    for (size_t i = 0; i < sizeof layout / sizeof layout[0]; i++) {
        if ((st = r_int(f, "/", layout[i].name, INT32_MIN, INT32_MAX, &v, path)))
            return st;
        if (v != layout[i].value)
            return bad(path, "attribute /%s = %d, expected %d (the vocabulary layout)",
                       layout[i].name, v, layout[i].value);
    }
    double mu, m, seed = 0;
    bool has_seed;
    if ((st = r_num(f, "/", "mulaw_mu", true, &mu, NULL, path)) ||
        (st = r_num(f, "/", "mulaw_m", true, &m, NULL, path)) ||
        (st = r_num(f, "/", "seed", false, &seed, &has_seed, path)))
        return st;
    if (mu != (double)OMNI_MULAW_MU || m != (double)OMNI_MULAW_M)
        return bad(path, "mu-law constants mu = %g, M = %g, expected %g and %g", mu, m,
                   (double)OMNI_MULAW_MU, (double)OMNI_MULAW_M);
    df->seed = seed >= 0 ? (uint64_t)seed : 0;
    df->has_seed = has_seed;
    if (image) {
        if ((st = r_int(f, "/", "image_size", 1, 4096, &df->image_size, path)) ||
            (st = r_int(f, "/", "image_channels", 1, 3, &df->image_channels, path)) ||
            (st = r_int(f, "/", "image_patch", 1, 256, &df->image_patch, path)))
            return st;
        if (df->image_channels == 2)
            return bad(path, "attribute /image_channels = 2, expected 1 or 3");
        if (df->image_size % df->image_patch)
            return bad(path, "image_size %d is not a multiple of image_patch %d", df->image_size,
                       df->image_patch);
        /* Optional (files written by h5py may lack it): stretch. */
        char mode[16] = "stretch";
        int rm;
        if (H5Aexists(f, "image_resize") > 0 &&
            (st = r_str(f, "/", "image_resize", mode, sizeof mode, path)))
            return st;
        if ((rm = omni_resize_mode_parse(mode)) < 0)
            return bad(path, "attribute /image_resize = \"%s\", expected stretch, pad or error",
                       mode);
        df->image_resize = (omni_resize_mode)rm;
    }
    if (audio) {
        omni_audio_cfg *a = &df->audio;
        double top = 80;
        if ((st = r_int(f, "/", "audio_sample_rate", 1, 1000000, &a->sample_rate, path)) ||
            (st = r_int(f, "/", "audio_mels", 1, 4096, &a->mels, path)) ||
            (st = r_int(f, "/", "audio_frames", 1, 65536, &a->frames, path)) ||
            (st = r_int(f, "/", "audio_patch", 1, 256, &a->patch, path)) ||
            (st = r_num(f, "/", "audio_top_db", false, &top, NULL, path)))
            return st;
        /* STFT parameters are informative for the reader; missing ones read as 0. */
        double d;
        bool has;
        if (!r_num(f, "/", "audio_n_fft", false, &d, &has, path) && has)
            a->n_fft = (int32_t)d;
        if (!r_num(f, "/", "audio_hop", false, &d, &has, path) && has)
            a->hop = (int32_t)d;
        a->top_db = (float)top;
        if (a->mels % a->patch || a->frames % a->patch)
            return bad(path,
                       "audio_mels %d and audio_frames %d must be multiples of audio_patch "
                       "%d",
                       a->mels, a->frames, a->patch);
    }
    return OMNI_OK;
}

void ds_task_geometry(const ds_file *f, ds_task *t)
{
    t->patch = t->patch_dim = t->rows = t->cols = 0;
    if (omni_kind_image(t->kind) || (t->kind == OMNI_KIND_CONTROL && t->images)) {
        t->patch = f->image_patch;
        t->rows = t->cols = f->image_size / f->image_patch;
        t->patch_dim = f->image_patch * f->image_patch * f->image_channels;
    } else if (omni_kind_audio(t->kind)) {
        t->patch = f->audio.patch;
        t->rows = f->audio.mels / f->audio.patch;
        t->cols = f->audio.frames / f->audio.patch;
        t->patch_dim = f->audio.patch * f->audio.patch;
    }
}

static omni_status read_tasks(hid_t f, ds_file *df, const char *path)
{
    omni_status st;
    int32_t n_tasks;
    if ((st = r_int(f, "/", "n_tasks", 1, OMNI_MAX_TASKS, &n_tasks, path)))
        return st;
    if (H5Lexists(f, "tasks", H5P_DEFAULT) <= 0)
        return bad(path, "missing group /tasks");
    hid_t tg = H5Gopen2(f, "tasks", H5P_DEFAULT);
    if (tg < 0)
        return bad(path, "/tasks is not a group");
    char names[OMNI_MAX_TASKS][OMNI_NAME_MAX];
    omni_h5_names listed;
    if (!omni_h5_list_names(tg, names[0], OMNI_MAX_TASKS, OMNI_NAME_MAX, &listed)) {
        H5Gclose(tg);
        return bad(path, "cannot list /tasks");
    }
    if (listed.bad_name) {
        H5Gclose(tg);
        return bad(path, "/tasks/%s: a task name must be letters, digits, '-', '_', '.'",
                   listed.bad);
    }
    if (listed.overflow || listed.n != n_tasks) {
        H5Gclose(tg);
        return bad(path, "/tasks has %s%d groups, but attribute /n_tasks = %d",
                   listed.overflow ? "more than " : "", listed.n, n_tasks);
    }
    /* Kinds first: the root attributes needed depend on them. */
    ds_task tmp[OMNI_MAX_TASKS];
    memset(tmp, 0, sizeof tmp);
    bool seen[OMNI_MAX_TASKS] = {false}, image = false, audio = false;
    for (int i = 0; i < n_tasks && !st; i++) {
        char where[OMNI_NAME_MAX + 16], kind[32];
        snprintf(where, sizeof where, "/tasks/%s/", names[i]);
        hid_t g = H5Gopen2(tg, names[i], H5P_DEFAULT);
        if (g < 0) {
            st = bad(path, "%s is not a group", where);
            break;
        }
        ds_task *t = &tmp[i];
        snprintf(t->name, sizeof t->name, "%s", names[i]);
        int32_t idx = 0;
        if (!(st = r_str(g, where, "kind", kind, sizeof kind, path)) &&
            !(st = r_int(g, where, "index", 0, n_tasks - 1, &idx, path))) {
            int k = omni_task_kind_parse(kind);
            if (k < 0)
                st = bad(path, "%skind is \"%s\", expected %s", where, kind, omni_task_kind_list());
            else if (seen[idx])
                st = bad(path, "%sindex %d is used by two tasks", where, idx);
            t->kind = (omni_task_kind)k;
            t->index = idx;
            seen[idx] = true;
            audio |= omni_kind_audio(t->kind);
        }
        double vf;
        bool has;
        if (!st && !(st = r_num(g, where, "val_fraction", false, &vf, &has, path)))
            t->val_fraction = has ? vf : 0.0;
        if (!st && t->kind == OMNI_KIND_CONTROL) {
            /* Optional: 1 when each step has image patches (then obs_dim may be 0). */
            if (H5Aexists(g, "images") > 0)
                st = r_int(g, where, "images", 0, 1, &t->images, path);
            if (!st &&
                !(st = r_int(g, where, "obs_dim", t->images ? 0 : 1, 65536, &t->obs_dim, path)) &&
                !(st = r_int(g, where, "act_dim", 1, 65536, &t->act_dim, path)))
                st = r_int(g, where, "discrete", 0, 1, &t->discrete, path);
        }
        image |= omni_kind_image(t->kind) || t->images;
        H5Gclose(g);
    }
    if (!st)
        st = read_root(f, df, image, audio, path);
    /* Samples: in index order, so df->tasks[i].index == i. */
    for (int i = 0; i < n_tasks && !st; i++) {
        ds_task *t = &df->tasks[tmp[i].index];
        *t = tmp[i];
        df->n_tasks++;
        ds_task_geometry(df, t);
    }
    H5Gclose(tg);
    return st;
}

/* What a file without our format attribute looks like, for the message. */
static omni_status not_a_dataset(hid_t f, const char *path)
{
    char fmt[64] = "";
    if (H5Aexists(f, "format") > 0 && r_str(f, "/", "format", fmt, sizeof fmt, path) == OMNI_OK &&
        !strcmp(fmt, "omnimoe checkpoint"))
        return bad(path, "not an omnimoe dataset: it looks like a checkpoint (attribute "
                         "format = \"omnimoe checkpoint\"); data.files and `data info` take "
                         "dataset files made by `omnimoe data build` (docs/datasets.md)");
    omni_error_clear();
    if (H5Lexists(f, "episode_offsets", H5P_DEFAULT) > 0 ||
        H5Lexists(f, "actions", H5P_DEFAULT) > 0)
        return bad(path, "not an omnimoe dataset: it looks like a control episodes file "
                         "(episode_offsets, actions); name it as `episodes:` of a control task "
                         "in a build spec and run `omnimoe data build` (docs/datasets.md)");
    if (fmt[0])
        return bad(path, "not an omnimoe dataset: attribute /format is \"%s\", expected \"%s\"",
                   fmt, OMNI_DS_FORMAT);
    return bad(path,
               "not an omnimoe dataset: its root has no attribute format = \"%s\" "
               "(docs/datasets.md describes the file)",
               OMNI_DS_FORMAT);
}

/* Open a dataset file read-only with a small metadata cache: a job may open many shards. */
static hid_t open_h5(const char *path)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0) {
        H5AC_cache_config_t mdc = {.version = H5AC__CURR_CACHE_CONFIG_VERSION};
        if (H5Pget_mdc_config(fapl, &mdc) >= 0) {
            mdc.set_initial_size = true;
            mdc.initial_size = 1 << 20;
            mdc.max_size = 4 << 20;
            mdc.min_size = 1 << 20;
            H5Pset_mdc_config(fapl, &mdc);
        }
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl >= 0 ? fapl : H5P_DEFAULT);
    if (fapl >= 0)
        H5Pclose(fapl);
    return f;
}

omni_status ds_store_open(ds_store *s, const char *path, ds_cache *cache)
{
    memset(s, 0, sizeof *s);
    s->h5 = -1;
    ds_file *df = &s->meta;
    snprintf(s->path, sizeof s->path, "%s", path);
    if (access(path, R_OK) != 0)
        return bad(path, "cannot open the file (missing or unreadable)");
    htri_t is = H5Fis_hdf5(path);
    if (is <= 0)
        return bad(path, "not an HDF5 file");
    s->h5 = open_h5(path);
    if (s->h5 < 0)
        return bad(path, "cannot open the HDF5 file");
    char fmt[64] = "";
    int32_t version = 0;
    omni_status st = OMNI_OK;
    if (H5Aexists(s->h5, "format") <= 0 || r_str(s->h5, "/", "format", fmt, sizeof fmt, path) ||
        strcmp(fmt, OMNI_DS_FORMAT))
        st = not_a_dataset(s->h5, path);
    if (!st && !(st = r_int(s->h5, "/", "format_version", 0, INT32_MAX, &version, path)) &&
        version != OMNI_DS_FORMAT_VERSION)
        st = bad(path,
                 "dataset format_version %d is not read by this omnimoe, which reads version "
                 "%d%s (docs/datasets.md)",
                 version, OMNI_DS_FORMAT_VERSION,
                 version == 1 ? ": version 1 stored whole int32 arrays that every process had to "
                                "load; rebuild the file with `omnimoe data build` (or `data demo`)"
                              : "");
    if (!st)
        st = read_tasks(s->h5, df, path);
    static const char *const split_names[OMNI_SPLIT_COUNT] = {"train", "val"};
    for (int i = 0; i < df->n_tasks && !st; i++) {
        ds_task *t = &df->tasks[i];
        for (int sp = 0; sp < OMNI_SPLIT_COUNT && !st; sp++) {
            char where[OMNI_NAME_MAX + 24], gname[OMNI_NAME_MAX + 24];
            snprintf(where, sizeof where, "/tasks/%s/%s/", t->name, split_names[sp]);
            snprintf(gname, sizeof gname, "tasks/%s/%s", t->name, split_names[sp]);
            if (!omni_h5_path_exists(s->h5, gname)) {
                st = bad(path, "missing group %.*s", (int)strlen(where) - 1, where);
                break;
            }
            hid_t g = H5Gopen2(s->h5, gname, H5P_DEFAULT);
            if (g < 0) {
                st = bad(path, "%s is not a group", where);
                break;
            }
            st = ds_split_open(&s->split[i][sp], g, where, t, cache, path);
            H5Gclose(g);
            if (!st) {
                t->split[sp].n = s->split[i][sp].n;
                const char *u = ds_split_unchecked(&s->split[i][sp]);
                if (u && !df->unchecked++)
                    snprintf(df->first_unchecked, sizeof df->first_unchecked, "%s", u);
            }
        }
    }
    if (st) {
        ds_store_close(s);
        return st;
    }
    if (df->unchecked)
        omni_log(OMNI_LOG_WARN,
                 "%s: arrays of %lld split%s carry no checksum (first: %s): read "
                 "unverified (a file written by h5py adds them with fletcher32=True: "
                 "docs/datasets.md)",
                 path, (long long)df->unchecked, df->unchecked == 1 ? "" : "s",
                 df->first_unchecked);
    return OMNI_OK;
}

void ds_store_close(ds_store *s)
{
    ds_store_suspend(s);
    for (int i = 0; i < s->meta.n_tasks; i++)
        for (int sp = 0; sp < OMNI_SPLIT_COUNT; sp++)
            s->meta.tasks[i].split[sp].n = 0; /* no pools behind these counts */
    ds_file_free(&s->meta);
}

void ds_store_suspend(ds_store *s)
{
    for (int i = 0; i < OMNI_MAX_TASKS; i++)
        for (int sp = 0; sp < OMNI_SPLIT_COUNT; sp++)
            ds_split_close(&s->split[i][sp]);
    if (s->h5 >= 0)
        H5Fclose(s->h5);
    s->h5 = -1;
}

omni_status ds_store_resume(ds_store *s)
{
    if (s->h5 >= 0)
        return OMNI_OK;
    s->h5 = open_h5(s->path);
    if (s->h5 < 0)
        return bad(s->path, "cannot open the HDF5 file again (removed or replaced while in use?)");
    omni_status st = OMNI_OK;
    for (int i = 0; i < s->meta.n_tasks && !st; i++)
        for (int sp = 0; sp < OMNI_SPLIT_COUNT && !st; sp++)
            st = ds_split_reopen(&s->split[i][sp], s->h5, s->path);
    if (st)
        ds_store_suspend(s);
    return st;
}

omni_status ds_read(const char *path, ds_file *df)
{
    memset(df, 0, sizeof *df);
    ds_cache *cache;
    omni_status st = ds_cache_create(&cache, 4 << 20);
    if (st)
        return st;
    ds_store *s = malloc(sizeof *s);
    if (!s) {
        ds_cache_free(cache);
        return omni_fail(OMNI_ERR_NOMEM, "cannot allocate a dataset reader");
    }
    st = ds_store_open(s, path, cache);
    ds_sample_buf b = {0};
    if (!st) {
        *df = s->meta;
        for (int i = 0; i < df->n_tasks; i++)
            for (int sp = 0; sp < OMNI_SPLIT_COUNT; sp++)
                df->tasks[i].split[sp] = (ds_pool){0};
    }
    for (int i = 0; i < df->n_tasks && !st; i++) {
        ds_task *t = &df->tasks[i];
        for (int sp = 0; sp < OMNI_SPLIT_COUNT && !st; sp++) {
            ds_split_store *ss = &s->split[i][sp];
            ss->t = t;
            for (int64_t k = 0; k < ss->n && !st; k++) {
                if (!(st = ds_split_sample(ss, k, &b, path)))
                    st = ds_pool_append(&t->split[sp], b.pool.tok, b.pool.loss, b.pool.off[1],
                                        b.pool.patch, b.pool.poff[1], t->patch_dim);
            }
        }
    }
    ds_sample_buf_free(&b);
    if (s->h5 >= 0) {
        for (int i = 0; i < OMNI_MAX_TASKS; i++)
            for (int sp = 0; sp < OMNI_SPLIT_COUNT; sp++)
                ds_split_close(&s->split[i][sp]);
        H5Fclose(s->h5);
    }
    free(s);
    ds_cache_free(cache);
    if (st)
        ds_file_free(df);
    return st;
}
