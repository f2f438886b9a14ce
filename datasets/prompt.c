/*
 * The prompted kinds, OFA-style (docs/design.md §3): image_text_to_text and
 * audio_text_to_text. A manifest row `path,prompt,text` becomes
 *     <task> patches of each image (or of the clip), prompt bytes, <sep>, text, <eos>
 * with the loss on the text and <eos> only. Several images of one sample are given as
 * paths joined by ';'; their patches follow one another, each image's grid whole (the
 * sampler restarts the row/col positions at each image).
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static const char *const prompted_header[3] = {"path", "prompt", "text"};

omni_status ds_emit_prompted(ds_pool *pool, int32_t task_tok, const uint8_t *patches,
                             int64_t n_patch, int32_t patch_dim, const uint8_t *prompt,
                             int64_t n_prompt, const uint8_t *text, int64_t n_text)
{
    int64_t n = 1 + n_patch + n_prompt + 1 + n_text + 1;
    int32_t *tok = omni_alloc(n, sizeof *tok, "sample tokens");
    uint8_t *loss = omni_alloc(n, 1, "sample loss flags");
    omni_status st = tok && loss ? OMNI_OK : OMNI_ERR_NOMEM;
    if (!st) {
        int64_t k = 0;
        tok[k] = task_tok, loss[k++] = 0;
        for (int64_t i = 0; i < n_patch; i++)
            tok[k] = OMNI_DS_PATCH, loss[k++] = 0;
        for (int64_t i = 0; i < n_prompt; i++)
            tok[k] = prompt[i], loss[k++] = 0;
        tok[k] = OMNI_TOK_SEP, loss[k++] = 0;
        for (int64_t i = 0; i < n_text; i++)
            tok[k] = text[i], loss[k++] = 1;
        tok[k] = OMNI_TOK_EOS, loss[k++] = 1;
        st = ds_pool_append(pool, tok, loss, k, patches, n_patch, patch_dim);
    }
    omni_free(tok);
    omni_free(loss);
    return st;
}

int32_t omni_path_list_count(const char *list)
{
    int32_t n = 1;
    for (const char *p = list; *p; p++)
        n += *p == ';';
    return n;
}

omni_status omni_image_list_patches(const char *list, const char *base, int32_t size,
                                    int32_t channels, int32_t patch, omni_resize_mode mode,
                                    int32_t max_images, uint8_t *out, int32_t *n_images,
                                    int64_t *resized)
{
    int32_t n = omni_path_list_count(list);
    int64_t per = (int64_t)(size / patch) * (size / patch) * patch * patch * channels;
    *n_images = 0;
    if (n > max_images)
        return omni_fail(OMNI_ERR_DATA, "%d images joined by ';', at most %d fit", n, max_images);
    const char *p = list;
    for (int32_t i = 0; i < n; i++) {
        const char *e = strchr(p, ';');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0)
            return omni_fail(OMNI_ERR_DATA,
                             "image path %d of %d in '%s' is empty (paths are joined by ';', "
                             "none may be missing)",
                             i + 1, n, list);
        char rel[OMNI_PATH_MAX], path[OMNI_PATH_MAX];
        if (len >= sizeof rel)
            return omni_fail(OMNI_ERR_DATA, "image path %d of %d is too long", i + 1, n);
        memcpy(rel, p, len);
        rel[len] = '\0';
        omni_status st = base ? ds_path_join(base, rel, path, sizeof path)
                              : (snprintf(path, sizeof path, "%s", rel), OMNI_OK);
        if (st)
            return st;
        bool rs = false;
        st = omni_image_file_patches(path, size, channels, patch, mode, out + i * per, &rs);
        if (st)
            return n > 1 ? omni_fail_context(st, "image %d of %d: ", i + 1, n) : st;
        if (resized)
            *resized += rs;
        (*n_images)++;
        p = e ? e + 1 : p + len;
    }
    return OMNI_OK;
}

/* ---- building from a manifest -------------------------------------------------- */

struct ds_prompted {
    const ds_spec *spec;
    const ds_task *task;
    const char *manifest;
    omni_logmel *lm;
    float *db;
    uint8_t *spec_bytes, *patches;
    int32_t max_images;
    int64_t images, resized;
};

omni_status ds_prompted_row(ds_prompted *b, char **f, int nf, int64_t line, ds_pool *pool,
                            bool *sample)
{
    *sample = false;
    if (nf != 3)
        return omni_fail(OMNI_ERR_DATA, "%s:%lld: %d column%s, expected 3 (path,prompt,text)",
                         b->manifest, (long long)line, nf, nf == 1 ? "" : "s");
    if (line == 1 && !strcmp(f[0], prompted_header[0]) && !strcmp(f[1], prompted_header[1]) &&
        !strcmp(f[2], prompted_header[2]))
        return OMNI_OK;
    if (!f[0][0])
        return omni_fail(OMNI_ERR_DATA, "%s:%lld: the path is empty", b->manifest, (long long)line);
    if (!f[1][0])
        return omni_fail(OMNI_ERR_DATA,
                         "%s:%lld: the prompt is empty (a %s task asks something of each "
                         "input: give the question in the prompt column)",
                         b->manifest, (long long)line, omni_task_kind_name(b->task->kind));
    const ds_spec *sp = b->spec;
    const ds_task *t = b->task;
    if (omni_kind_audio(t->kind) && strchr(f[0], ';'))
        return omni_fail(OMNI_ERR_DATA,
                         "%s:%lld: '%s': an audio_text_to_text sample takes one WAV file, "
                         "not a ';'-joined list",
                         b->manifest, (long long)line, f[0]);
    *sample = true;
    if (!pool) /* the counting pass: nothing decoded */
        return OMNI_OK;
    int64_t grid = (int64_t)t->rows * t->cols;
    int64_t n_patch = grid;
    omni_status st;
    if (omni_kind_image(t->kind)) {
        int32_t n_img = 0;
        st = omni_image_list_patches(f[0], b->manifest, sp->image_size, sp->image_channels,
                                     sp->image_patch, sp->image_resize, b->max_images, b->patches,
                                     &n_img, &b->resized);
        b->images += n_img;
        n_patch = grid * n_img;
    } else {
        char path[OMNI_PATH_MAX];
        st = ds_path_join(b->manifest, f[0], path, sizeof path);
        if (!st)
            st = omni_audio_file_patches(path, &sp->audio, b->lm, b->db, b->spec_bytes, b->patches);
    }
    if (st)
        return omni_fail_context(st, "%s:%lld: ", b->manifest, (long long)line);
    return ds_emit_prompted(pool, OMNI_TOK_TASK0 + t->index, b->patches, n_patch, t->patch_dim,
                            (const uint8_t *)f[1], (int64_t)strlen(f[1]), (const uint8_t *)f[2],
                            (int64_t)strlen(f[2]));
}

omni_status ds_prompted_open(ds_prompted **out, const ds_spec *spec, const ds_task *t,
                             const char *manifest)
{
    ds_prompted *b = calloc(1, sizeof *b);
    *out = b;
    if (!b)
        return omni_fail(OMNI_ERR_NOMEM, "cannot allocate a manifest reader");
    b->spec = spec;
    b->task = t;
    b->manifest = manifest;
    b->max_images = DS_MAX_IMAGES;
    const omni_audio_cfg *a = &spec->audio;
    int64_t grid = (int64_t)t->rows * t->cols;
    int64_t n_img = omni_kind_image(t->kind) ? b->max_images : 1;
    b->patches = omni_alloc(n_img * grid * t->patch_dim, 1, "patches");
    omni_status st = b->patches ? OMNI_OK : OMNI_ERR_NOMEM;
    if (!st && omni_kind_audio(t->kind)) {
        b->db = omni_alloc((int64_t)a->mels * a->frames, sizeof *b->db, "spectrogram");
        b->spec_bytes = omni_alloc((int64_t)a->mels * a->frames, 1, "spectrogram bytes");
        st = b->db && b->spec_bytes ? omni_logmel_create(&b->lm, a) : OMNI_ERR_NOMEM;
    }
    if (st) {
        ds_prompted_close(b, NULL, NULL);
        *out = NULL;
    }
    return st;
}

void ds_prompted_close(ds_prompted *b, int64_t *images, int64_t *resized)
{
    if (!b)
        return;
    if (images)
        *images = b->images;
    if (resized)
        *resized = b->resized;
    omni_free(b->patches);
    omni_free(b->db);
    omni_free(b->spec_bytes);
    omni_logmel_free(b->lm);
    free(b);
}
