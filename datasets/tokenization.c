/*
 * The tokenization of a trained model (datasets.h): made from the dataset files the
 * sampler opened, one task at a time, and compared with another (a checkpoint's) task
 * by task, so that a difference can be named.
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void omni_tokenization_init(omni_tokenization *t)
{
    memset(t, 0, sizeof *t);
    t->text_vocab = OMNI_TEXT_VOCAB;
    t->bins = OMNI_BINS;
    t->tok_bin0 = OMNI_TOK_BIN0;
    t->tok_pad = OMNI_TOK_PAD;
    t->tok_eos = OMNI_TOK_EOS;
    t->tok_sep = OMNI_TOK_SEP;
    t->tok_task0 = OMNI_TOK_TASK0;
    t->vocab = OMNI_TOK_TASK0;
    t->mulaw_mu = (double)OMNI_MULAW_MU;
    t->mulaw_m = (double)OMNI_MULAW_M;
}

omni_status ds_tokenization_add(omni_tokenization *t, const ds_file *f, const ds_task *dt,
                                const char *path, const char *first_image, const char *first_audio)
{
    OMNI_ASSERT(t->n_tasks < OMNI_MAX_TASKS);
    if (omni_kind_image(dt->kind) || (dt->kind == OMNI_KIND_CONTROL && dt->images)) {
        if (t->image_size == 0) {
            t->image_size = f->image_size;
            t->image_channels = f->image_channels;
            t->image_patch = f->image_patch;
            t->image_resize = f->image_resize;
        } else if (t->image_size != f->image_size || t->image_channels != f->image_channels ||
                   t->image_patch != f->image_patch || t->image_resize != f->image_resize) {
            return omni_fail(OMNI_ERR_DATA,
                             "%s: task %s has images of size %d, %d channel(s), patch %d, "
                             "resize %s, but %s has size %d, %d channel(s), patch %d, resize %s; "
                             "the tasks of one experiment share the image settings: rebuild one "
                             "file with the other's `image:` spec",
                             path, dt->name, f->image_size, f->image_channels, f->image_patch,
                             omni_resize_mode_name(f->image_resize), first_image, t->image_size,
                             t->image_channels, t->image_patch,
                             omni_resize_mode_name(t->image_resize));
        }
    }
    if (omni_kind_audio(dt->kind)) {
        const omni_audio_cfg *a = &f->audio, *b = &t->audio;
        if (b->sample_rate == 0) {
            t->audio = *a;
        } else if (a->sample_rate != b->sample_rate || a->mels != b->mels ||
                   a->frames != b->frames || a->patch != b->patch || a->n_fft != b->n_fft ||
                   a->hop != b->hop || a->top_db != b->top_db) {
            return omni_fail(OMNI_ERR_DATA,
                             "%s: task %s has audio settings (rate %d, %d mels, %d frames, "
                             "patch %d) other than %s's (rate %d, %d mels, %d frames, patch "
                             "%d); the tasks of one experiment share the audio settings: "
                             "rebuild one file with the other's `audio:` spec",
                             path, dt->name, a->sample_rate, a->mels, a->frames, a->patch,
                             first_audio, b->sample_rate, b->mels, b->frames, b->patch);
        }
    }
    omni_tokenization_task *k = &t->tasks[t->n_tasks];
    memset(k, 0, sizeof *k);
    snprintf(k->name, sizeof k->name, "%s", dt->name);
    k->kind = dt->kind;
    k->index = t->n_tasks;
    k->token = t->tok_task0 + k->index;
    if (dt->kind == OMNI_KIND_CONTROL) {
        k->obs_dim = dt->obs_dim;
        k->act_dim = dt->act_dim;
        k->discrete = dt->discrete;
        k->images = dt->images;
    }
    t->n_tasks++;
    t->vocab = t->tok_task0 + t->n_tasks;
    return OMNI_OK;
}

const omni_tokenization_task *omni_tokenization_find(const omni_tokenization *t, const char *name)
{
    for (int i = 0; i < t->n_tasks; i++)
        if (!strcmp(t->tasks[i].name, name))
            return &t->tasks[i];
    return NULL;
}

/* Append to a "; "-separated list of differences. */
static void note(char *why, size_t cap, const char *fmt, ...) OMNI_PRINTF(3, 4);

static void note(char *why, size_t cap, const char *fmt, ...)
{
    if (!why || cap == 0)
        return;
    size_t len = strlen(why);
    if (len + 1 >= cap)
        return;
    if (len > 0) {
        snprintf(why + len, cap - len, "; ");
        len = strlen(why);
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why + len, cap - len, fmt, ap);
    va_end(ap);
}

bool omni_tokenization_same(const omni_tokenization *then, const omni_tokenization *now, char *why,
                            size_t why_len)
{
    if (why && why_len)
        why[0] = '\0';
    bool same = true;
    const struct {
        const char *label;
        int32_t a, b;
    } ints[] = {
        {"text_vocab", then->text_vocab, now->text_vocab},
        {"bins", then->bins, now->bins},
        {"tok_bin0", then->tok_bin0, now->tok_bin0},
        {"tok_pad", then->tok_pad, now->tok_pad},
        {"tok_eos", then->tok_eos, now->tok_eos},
        {"tok_sep", then->tok_sep, now->tok_sep},
        {"tok_task0", then->tok_task0, now->tok_task0},
        {"image_size", then->image_size, now->image_size},
        {"image_channels", then->image_channels, now->image_channels},
        {"image_patch", then->image_patch, now->image_patch},
        {"audio_sample_rate", then->audio.sample_rate, now->audio.sample_rate},
        {"audio_mels", then->audio.mels, now->audio.mels},
        {"audio_frames", then->audio.frames, now->audio.frames},
        {"audio_patch", then->audio.patch, now->audio.patch},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (ints[i].a != ints[i].b) {
            note(why, why_len, "%s %d in the checkpoint, %d in the data", ints[i].label, ints[i].a,
                 ints[i].b);
            same = false;
        }
    if (then->image_resize != now->image_resize) {
        note(why, why_len, "image_resize %s in the checkpoint, %s in the data",
             omni_resize_mode_name(then->image_resize), omni_resize_mode_name(now->image_resize));
        same = false;
    }
    if (then->mulaw_mu != now->mulaw_mu || then->mulaw_m != now->mulaw_m) {
        note(why, why_len, "mu-law mu %g, M %g in the checkpoint, mu %g, M %g in the data",
             then->mulaw_mu, then->mulaw_m, now->mulaw_mu, now->mulaw_m);
        same = false;
    }
    for (int i = 0; i < then->n_tasks; i++) {
        const omni_tokenization_task *a = &then->tasks[i];
        const omni_tokenization_task *b = omni_tokenization_find(now, a->name);
        if (!b) {
            note(why, why_len, "task %s (index %d) is not in the data", a->name, a->index);
            same = false;
            continue;
        }
        if (a->index != b->index) {
            note(why, why_len, "task %s has index %d in the checkpoint, %d in the data", a->name,
                 a->index, b->index);
            same = false;
        }
        if (a->kind != b->kind) {
            note(why, why_len, "task %s is %s in the checkpoint, %s in the data", a->name,
                 omni_task_kind_name(a->kind), omni_task_kind_name(b->kind));
            same = false;
        }
        if (a->images != b->images) {
            note(why, why_len, "task %s %s image observations in the checkpoint, %s in the data",
                 a->name, a->images ? "has" : "has no", b->images ? "has them" : "not");
            same = false;
        }
        if (a->obs_dim != b->obs_dim || a->act_dim != b->act_dim || a->discrete != b->discrete) {
            note(why, why_len,
                 "task %s has obs_dim %d, act_dim %d, discrete %d in the checkpoint, %d, %d, "
                 "%d in the data",
                 a->name, a->obs_dim, a->act_dim, a->discrete, b->obs_dim, b->act_dim, b->discrete);
            same = false;
        }
    }
    for (int i = 0; i < now->n_tasks; i++)
        if (!omni_tokenization_find(then, now->tasks[i].name)) {
            note(why, why_len, "task %s (index %d) is not in the checkpoint", now->tasks[i].name,
                 now->tasks[i].index);
            same = false;
        }
    return same;
}
