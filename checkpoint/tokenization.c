/*
 * checkpoint: the tokenization a model was trained with, stored beside its weights so a
 * checkpoint alone is enough for inference and resume can check the task table.
 *
 *   /tokenization                 attributes: text_vocab, bins, tok_bin0, tok_pad,
 *                                 tok_eos, tok_sep, tok_task0, vocab, n_tasks (int64),
 *                                 mulaw_mu, mulaw_m (f64), image_size, image_channels,
 *                                 image_patch, audio_sample_rate, audio_mels,
 *                                 audio_frames, audio_patch, audio_n_fft, audio_hop
 *                                 (int64, 0 when unused), audio_top_db (f64),
 *                                 image_resize (string: stretch, pad or error; read as
 *                                 stretch when absent, as in files of older omnimoe)
 *   /tokenization/tasks/<name>    one group per task, attributes kind (string), index,
 *                                 token, obs_dim, act_dim, discrete (int64; 0 unless
 *                                 the kind is control), images (int64, control tasks
 *                                 whose steps start with image patches; absent: 0)
 */
#include "ckpt_private.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TASKS_GROUP CKPT_TOKENIZATION "/tasks"

/* The int32 attributes of /tokenization, with the range a reader accepts. */
typedef struct {
    const char *name;
    size_t offset;
    int64_t lo, hi;
} int_attr;

#define AT(field) offsetof(omni_tokenization, field)
static const int_attr int_attrs[] = {
    {"text_vocab", AT(text_vocab), 1, 1 << 20},
    {"bins", AT(bins), 1, 1 << 20},
    {"tok_bin0", AT(tok_bin0), 0, 1 << 20},
    {"tok_pad", AT(tok_pad), 0, 1 << 20},
    {"tok_eos", AT(tok_eos), 0, 1 << 20},
    {"tok_sep", AT(tok_sep), 0, 1 << 20},
    {"tok_task0", AT(tok_task0), 0, 1 << 20},
    {"vocab", AT(vocab), 1, 1 << 20},
    {"n_tasks", AT(n_tasks), 1, OMNI_MAX_TASKS},
    {"image_size", AT(image_size), 0, 4096},
    {"image_channels", AT(image_channels), 0, 3},
    {"image_patch", AT(image_patch), 0, 256},
    {"audio_sample_rate", AT(audio.sample_rate), 0, 1000000},
    {"audio_mels", AT(audio.mels), 0, 4096},
    {"audio_frames", AT(audio.frames), 0, 65536},
    {"audio_patch", AT(audio.patch), 0, 256},
    {"audio_n_fft", AT(audio.n_fft), 0, 1 << 20},
    {"audio_hop", AT(audio.hop), 0, 1 << 20},
};
#undef AT

static int32_t get_int(const omni_tokenization *t, const int_attr *a)
{
    int32_t v;
    memcpy(&v, (const char *)t + a->offset, sizeof v);
    return v;
}

static void set_int(omni_tokenization *t, const int_attr *a, int32_t v)
{
    memcpy((char *)t + a->offset, &v, sizeof v);
}

static omni_status make_group(hid_t loc, const char *name, hid_t *g, const char *path)
{
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    *g = -1;
    if (lcpl >= 0 && H5Pset_create_intermediate_group(lcpl, 1) >= 0)
        *g = H5Gcreate2(loc, name, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    if (lcpl >= 0)
        H5Pclose(lcpl);
    if (*g < 0)
        return omni_fail(OMNI_ERR_IO, "%s: cannot create group /%s", path, name);
    return OMNI_OK;
}

static omni_status write_task(hid_t tasks, const omni_tokenization_task *k, const char *path)
{
    hid_t g;
    omni_status st = make_group(tasks, k->name, &g, path);
    if (st)
        return st;
    st = omni_h5_attr_write_str(g, "kind", omni_task_kind_name(k->kind), path);
    if (!st)
        st = omni_h5_attr_write_i64(g, "index", k->index, path);
    if (!st)
        st = omni_h5_attr_write_i64(g, "token", k->token, path);
    if (!st)
        st = omni_h5_attr_write_i64(g, "obs_dim", k->obs_dim, path);
    if (!st)
        st = omni_h5_attr_write_i64(g, "act_dim", k->act_dim, path);
    if (!st)
        st = omni_h5_attr_write_i64(g, "discrete", k->discrete, path);
    if (!st && k->images)
        st = omni_h5_attr_write_i64(g, "images", k->images, path);
    H5Gclose(g);
    return st;
}

omni_status ckpt_write_tokenization(hid_t file, const omni_tokenization *t, const char *path)
{
    hid_t g, tasks = -1;
    omni_status st = make_group(file, CKPT_TOKENIZATION, &g, path);
    if (st)
        return st;
    for (size_t i = 0; i < sizeof int_attrs / sizeof int_attrs[0] && !st; i++)
        st = omni_h5_attr_write_i64(g, int_attrs[i].name, get_int(t, &int_attrs[i]), path);
    if (!st)
        st = omni_h5_attr_write_f64(g, "mulaw_mu", t->mulaw_mu, path);
    if (!st)
        st = omni_h5_attr_write_f64(g, "mulaw_m", t->mulaw_m, path);
    if (!st)
        st = omni_h5_attr_write_f64(g, "audio_top_db", (double)t->audio.top_db, path);
    if (!st)
        st =
            omni_h5_attr_write_str(g, "image_resize", omni_resize_mode_name(t->image_resize), path);
    if (!st)
        st = make_group(g, "tasks", &tasks, path);
    for (int i = 0; i < t->n_tasks && !st; i++)
        st = write_task(tasks, &t->tasks[i], path);
    if (tasks >= 0)
        H5Gclose(tasks);
    H5Gclose(g);
    return st;
}

/* ---- reading ------------------------------------------------------------------ */

static omni_status read_int(hid_t g, const char *where, const char *name, int64_t lo, int64_t hi,
                            int32_t *out, const char *path)
{
    int64_t v;
    if (H5Aexists(g, name) <= 0)
        return omni_fail(OMNI_ERR_CKPT, "%s: attribute %s of /%s is missing", path, name, where);
    if (omni_h5_attr_read_i64(g, name, &v, OMNI_ERR_CKPT, path))
        return omni_fail(OMNI_ERR_CKPT, "%s: attribute %s of /%s is not an integer", path, name,
                         where);
    if (v < lo || v > hi)
        return omni_fail(OMNI_ERR_CKPT,
                         "%s: attribute %s of /%s is %" PRId64 ", expected %" PRId64 "..%" PRId64,
                         path, name, where, v, lo, hi);
    *out = (int32_t)v;
    return OMNI_OK;
}

static omni_status read_num(hid_t g, const char *where, const char *name, double *out,
                            const char *path)
{
    if (H5Aexists(g, name) <= 0)
        return omni_fail(OMNI_ERR_CKPT, "%s: attribute %s of /%s is missing", path, name, where);
    if (omni_h5_attr_read_num(g, name, true, out, NULL, OMNI_ERR_CKPT, path))
        return omni_fail(OMNI_ERR_CKPT, "%s: attribute %s of /%s is not a number", path, name,
                         where);
    return OMNI_OK;
}

static omni_status read_task(hid_t tasks, const char *name, const omni_tokenization *t,
                             omni_tokenization_task *k, const char *path)
{
    char where[OMNI_NAME_MAX + 32];
    snprintf(where, sizeof where, "%s/%s", TASKS_GROUP, name);
    hid_t g = H5Gopen2(tasks, name, H5P_DEFAULT);
    if (g < 0)
        return omni_fail(OMNI_ERR_CKPT, "%s: /%s is not a group", path, where);
    memset(k, 0, sizeof *k);
    snprintf(k->name, sizeof k->name, "%s", name);
    char *kind = NULL;
    omni_status st = OMNI_OK;
    if (H5Aexists(g, "kind") <= 0 ||
        omni_h5_attr_read_str(g, "kind", OMNI_NAME_MAX, &kind, OMNI_ERR_CKPT, path))
        st = omni_fail(OMNI_ERR_CKPT, "%s: attribute kind of /%s is missing or not a string", path,
                       where);
    int parsed = st ? -1 : omni_task_kind_parse(kind);
    if (!st && parsed < 0)
        st = omni_fail(OMNI_ERR_CKPT, "%s: attribute kind of /%s is \"%s\", not a task kind", path,
                       where, kind);
    free(kind);
    k->kind = parsed < 0 ? OMNI_KIND_TEXT : (omni_task_kind)parsed;
    bool control = k->kind == OMNI_KIND_CONTROL;
    if (!st)
        st = read_int(g, where, "index", 0, t->n_tasks - 1, &k->index, path);
    if (!st)
        st = read_int(g, where, "token", 0, 1 << 20, &k->token, path);
    if (!st && control && H5Aexists(g, "images") > 0)
        st = read_int(g, where, "images", 0, 1, &k->images, path);
    if (!st)
        st = read_int(g, where, "obs_dim", control && !k->images ? 1 : 0, control ? 65536 : 0,
                      &k->obs_dim, path);
    if (!st)
        st = read_int(g, where, "act_dim", control ? 1 : 0, control ? 65536 : 0, &k->act_dim, path);
    if (!st)
        st = read_int(g, where, "discrete", 0, control ? 1 : 0, &k->discrete, path);
    if (!st && k->token != t->tok_task0 + k->index)
        st = omni_fail(OMNI_ERR_CKPT, "%s: /%s has token %d, expected tok_task0 + index = %d", path,
                       where, k->token, t->tok_task0 + k->index);
    H5Gclose(g);
    return st;
}

/* The values a model of this omnimoe is built on; a checkpoint with others is not one
 * this build can run. */
static omni_status check_layout(const omni_tokenization *t, const char *path)
{
    const struct {
        const char *name;
        int32_t got, want;
    } layout[] = {
        {"text_vocab", t->text_vocab, OMNI_TEXT_VOCAB}, {"bins", t->bins, OMNI_BINS},
        {"tok_bin0", t->tok_bin0, OMNI_TOK_BIN0},       {"tok_pad", t->tok_pad, OMNI_TOK_PAD},
        {"tok_eos", t->tok_eos, OMNI_TOK_EOS},          {"tok_sep", t->tok_sep, OMNI_TOK_SEP},
        {"tok_task0", t->tok_task0, OMNI_TOK_TASK0},
    };
    for (size_t i = 0; i < sizeof layout / sizeof layout[0]; i++)
        if (layout[i].got != layout[i].want)
            return omni_fail(OMNI_ERR_CKPT,
                             "%s: /%s attribute %s is %d, this omnimoe's vocabulary layout has %d",
                             path, CKPT_TOKENIZATION, layout[i].name, layout[i].got,
                             layout[i].want);
    if (t->vocab != t->tok_task0 + t->n_tasks)
        return omni_fail(OMNI_ERR_CKPT, "%s: /%s has vocab %d, expected tok_task0 + n_tasks = %d",
                         path, CKPT_TOKENIZATION, t->vocab, t->tok_task0 + t->n_tasks);
    if (t->mulaw_mu != (double)OMNI_MULAW_MU || t->mulaw_m != (double)OMNI_MULAW_M)
        return omni_fail(OMNI_ERR_CKPT, "%s: /%s has mu-law mu %g, M %g, expected %g and %g", path,
                         CKPT_TOKENIZATION, t->mulaw_mu, t->mulaw_m, (double)OMNI_MULAW_MU,
                         (double)OMNI_MULAW_M);
    bool image = false, audio = false;
    for (int i = 0; i < t->n_tasks; i++) {
        image |= omni_kind_image(t->tasks[i].kind) || t->tasks[i].images;
        audio |= omni_kind_audio(t->tasks[i].kind);
    }
    if (image && (t->image_size < 1 || t->image_patch < 1 || t->image_size % t->image_patch ||
                  (t->image_channels != 1 && t->image_channels != 3)))
        return omni_fail(OMNI_ERR_CKPT,
                         "%s: /%s has image_size %d, image_channels %d, image_patch %d, expected "
                         "a size that is a multiple of the patch, and 1 or 3 channels",
                         path, CKPT_TOKENIZATION, t->image_size, t->image_channels, t->image_patch);
    const omni_audio_cfg *a = &t->audio;
    if (audio && (a->sample_rate < 1 || a->patch < 1 || a->mels < 1 || a->frames < 1 ||
                  a->mels % a->patch || a->frames % a->patch))
        return omni_fail(OMNI_ERR_CKPT,
                         "%s: /%s has audio_sample_rate %d, audio_mels %d, audio_frames %d, "
                         "audio_patch %d, expected mels and frames that are multiples of the "
                         "patch",
                         path, CKPT_TOKENIZATION, a->sample_rate, a->mels, a->frames, a->patch);
    return OMNI_OK;
}

omni_status ckpt_read_tokenization(hid_t file, const char *path, int64_t version,
                                   omni_tokenization *t)
{
    memset(t, 0, sizeof *t);
    if (!omni_h5_path_exists(file, CKPT_TOKENIZATION))
        return omni_fail(OMNI_ERR_CKPT,
                         "%s: has no /%s (the dataset's tokenization and task table)%s; "
                         "a checkpoint without it cannot be resumed or used for inference: "
                         "train again, or continue from the experiment without --resume",
                         path, CKPT_TOKENIZATION,
                         version < 2 ? ": it was written by an older omnimoe (format 1)" : "");
    hid_t g = H5Gopen2(file, CKPT_TOKENIZATION, H5P_DEFAULT);
    if (g < 0)
        return omni_fail(OMNI_ERR_CKPT, "%s: /%s is not a group", path, CKPT_TOKENIZATION);
    omni_status st = OMNI_OK;
    for (size_t i = 0; i < sizeof int_attrs / sizeof int_attrs[0] && !st; i++) {
        int32_t v = 0;
        st = read_int(g, CKPT_TOKENIZATION, int_attrs[i].name, int_attrs[i].lo, int_attrs[i].hi, &v,
                      path);
        set_int(t, &int_attrs[i], v);
    }
    double top_db = 0;
    if (!st)
        st = read_num(g, CKPT_TOKENIZATION, "mulaw_mu", &t->mulaw_mu, path);
    if (!st)
        st = read_num(g, CKPT_TOKENIZATION, "mulaw_m", &t->mulaw_m, path);
    if (!st)
        st = read_num(g, CKPT_TOKENIZATION, "audio_top_db", &top_db, path);
    t->audio.top_db = (float)top_db;
    /* Optional: checkpoints of an older omnimoe stretched every image. */
    if (!st && H5Aexists(g, "image_resize") > 0) {
        char *mode = NULL;
        int m = -1;
        if (!(st = omni_h5_attr_read_str(g, "image_resize", OMNI_NAME_MAX, &mode, OMNI_ERR_CKPT,
                                         path)) &&
            (m = omni_resize_mode_parse(mode)) < 0)
            st = omni_fail(OMNI_ERR_CKPT,
                           "%s: attribute image_resize of /%s is \"%s\", expected stretch, pad "
                           "or error",
                           path, CKPT_TOKENIZATION, mode);
        free(mode);
        t->image_resize = m < 0 ? OMNI_RESIZE_STRETCH : (omni_resize_mode)m;
    }
    H5Gclose(g);
    if (st)
        return st;

    if (!omni_h5_path_exists(file, TASKS_GROUP))
        return omni_fail(OMNI_ERR_CKPT, "%s: group /%s is missing", path, TASKS_GROUP);
    hid_t tasks = H5Gopen2(file, TASKS_GROUP, H5P_DEFAULT);
    if (tasks < 0)
        return omni_fail(OMNI_ERR_CKPT, "%s: /%s is not a group", path, TASKS_GROUP);
    char(*names)[OMNI_NAME_MAX] = calloc(OMNI_MAX_TASKS, sizeof *names);
    if (!names) {
        H5Gclose(tasks);
        return omni_fail(OMNI_ERR_NOMEM, "%s: out of memory", path);
    }
    omni_h5_names listed;
    if (!omni_h5_list_names(tasks, names[0], OMNI_MAX_TASKS, OMNI_NAME_MAX, &listed))
        st = omni_fail(OMNI_ERR_CKPT, "%s: cannot list /%s", path, TASKS_GROUP);
    else if (listed.bad_name)
        st = omni_fail(OMNI_ERR_CKPT,
                       "%s: /%s holds a group whose name is not a task name (letters, digits, "
                       "'-', '_', '.')",
                       path, TASKS_GROUP);
    else if (listed.overflow || listed.n != t->n_tasks)
        st = omni_fail(OMNI_ERR_CKPT, "%s: /%s has %s%d groups, but n_tasks is %d", path,
                       TASKS_GROUP, listed.overflow ? "more than " : "", listed.n, t->n_tasks);
    bool seen[OMNI_MAX_TASKS] = {false};
    for (int i = 0; i < listed.n && !st; i++) {
        omni_tokenization_task k;
        st = read_task(tasks, names[i], t, &k, path);
        if (!st && seen[k.index])
            st = omni_fail(OMNI_ERR_CKPT, "%s: two tasks of /%s have index %d", path, TASKS_GROUP,
                           k.index);
        if (!st) {
            seen[k.index] = true;
            t->tasks[k.index] = k;
        }
    }
    free(names);
    H5Gclose(tasks);
    if (!st)
        st = check_layout(t, path);
    if (st)
        memset(t, 0, sizeof *t);
    return st;
}
