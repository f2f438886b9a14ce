/* `omnimoe data info`: a dataset file described, after the reader has checked it. */
#include "internal.h"

#include "h5.h"

#include <stdlib.h>
#include <string.h>

/* Print one sample's elements in a readable form: text as text, bins as b<n>, runs of
 * patches as their count, and a '|' where the loss-bearing part starts. */
static void print_sample(FILE *out, const ds_task *t, const ds_pool *p, int64_t i)
{
    int64_t a = p->off[i], e = p->off[i + 1];
    bool in_text = false, loss = false;
    int64_t shown = 0;
    fprintf(out, "    ");
    for (int64_t j = a; j < e; j++) {
        int32_t v = p->tok[j];
        if (p->loss[j] && !loss) {
            fputs(in_text ? "\"|" : " |", out);
            in_text = false;
            loss = true;
        }
        if (shown > 120 && j + 1 < e) {
            fprintf(out, "%s ... (%lld more)", in_text ? "\"" : "", (long long)(e - j));
            in_text = false;
            break;
        }
        if (v >= 0 && v < OMNI_TEXT_VOCAB) {
            if (!in_text)
                fputs(" \"", out);
            in_text = true;
            if (v >= 32 && v < 127 && v != '"' && v != '\\')
                fputc(v, out);
            else
                fprintf(out, "\\x%02x", v);
            shown++;
            continue;
        }
        if (in_text)
            fputc('"', out);
        in_text = false;
        shown++;
        if (v == OMNI_DS_PATCH) {
            int64_t k = j;
            while (k < e && p->tok[k] == OMNI_DS_PATCH)
                k++;
            fprintf(out, " [%lld %s patches %dx%d of %d values]", (long long)(k - j),
                    omni_kind_audio(t->kind) ? "audio" : "image", t->patch, t->patch, t->patch_dim);
            j = k - 1;
        } else if (v >= OMNI_TOK_BIN0 && v < OMNI_TOK_BIN0 + OMNI_BINS) {
            fprintf(out, " b%d", v - OMNI_TOK_BIN0);
        } else if (v == OMNI_TOK_EOS) {
            fputs(" <eos>", out);
        } else if (v == OMNI_TOK_SEP) {
            fputs(" <sep>", out);
        } else if (v == OMNI_TOK_PAD) {
            fputs(" <pad>", out);
        } else {
            fprintf(out, " <task:%s>", t->name);
        }
    }
    if (in_text)
        fputc('"', out);
    fputc('\n', out);
}

/* A dataset file read whole: its store, the store's cache, and per task its train sample
 * 0 (a copy). */
typedef struct {
    ds_store *s;
    ds_cache *cache;
    ds_file *first;
} whole_file;

static void read_close(whole_file *r)
{
    ds_file_free(r->first);
    free(r->first);
    ds_store_close(r->s);
    free(r->s);
    ds_cache_free(r->cache);
}

/* Open a file and read every sample of it (each checked as training would), in windows.
 * On success r holds the open file, for read_close. */
static omni_status read_all(const char *path, whole_file *r)
{
    ds_file *first = calloc(1, sizeof *first);
    if (!first)
        return omni_fail(OMNI_ERR_NOMEM, "cannot allocate the dataset");
    ds_cache *cache;
    omni_status st = ds_cache_create(&cache, 16 << 20);
    if (st) {
        free(first);
        return st;
    }
    ds_store *s = malloc(sizeof *s);
    if (!s) {
        ds_cache_free(cache);
        free(first);
        return omni_fail(OMNI_ERR_NOMEM, "cannot allocate a dataset reader");
    }
    if ((st = ds_store_open(s, path, cache))) {
        free(s);
        ds_cache_free(cache);
        free(first);
        return st;
    }
    *r = (whole_file){.s = s, .cache = cache, .first = first};
    ds_sample_buf b = {0};
    for (int i = 0; i < s->meta.n_tasks && !st; i++) {
        ds_task *t = &s->meta.tasks[i];
        first->tasks[i] = *t;
        memset(first->tasks[i].split, 0, sizeof first->tasks[i].split);
        for (int k = 0; k < OMNI_SPLIT_COUNT && !st; k++)
            for (int64_t j = 0; j < s->split[i][k].n && !st; j++) {
                st = ds_split_sample(&s->split[i][k], j, &b, path);
                if (!st && k == OMNI_SPLIT_TRAIN && j == 0)
                    st = ds_pool_append(&first->tasks[i].split[0], b.pool.tok, b.pool.loss,
                                        b.pool.off[1], b.pool.patch, b.pool.poff[1], t->patch_dim);
            }
        first->n_tasks++;
    }
    ds_sample_buf_free(&b);
    if (st)
        read_close(r);
    return st;
}

omni_status omni_data_info(const char *path, FILE *out)
{
    whole_file r;
    omni_status st = read_all(path, &r);
    if (st)
        return st;
    const ds_store *s = r.s;
    const ds_file *f = &s->meta, *ex = r.first;
    char seed[48] = "no seed recorded";
    if (f->has_seed)
        snprintf(seed, sizeof seed, "seed %llu", (unsigned long long)f->seed);
    fprintf(out, "%s: %s version %d, %d task%s, %s\n", path, OMNI_DS_FORMAT, OMNI_DS_FORMAT_VERSION,
            f->n_tasks, f->n_tasks == 1 ? "" : "s", seed);
    fprintf(out,
            "vocabulary: text 0..%d, value bins %d..%d (mu-law mu %g, M %g), <pad> %d, "
            "<eos> %d, <sep> %d, <task> %d..%d\n",
            OMNI_TEXT_VOCAB - 1, OMNI_TOK_BIN0, OMNI_TOK_BIN0 + OMNI_BINS - 1,
            (double)OMNI_MULAW_MU, (double)OMNI_MULAW_M, OMNI_TOK_PAD, OMNI_TOK_EOS, OMNI_TOK_SEP,
            OMNI_TOK_TASK0, OMNI_TOK_TASK0 + f->n_tasks - 1);
    if (f->image_size)
        fprintf(out, "images: %dx%d, %d channel%s, patch %d, resize %s\n", f->image_size,
                f->image_size, f->image_channels, f->image_channels == 1 ? "" : "s", f->image_patch,
                omni_resize_mode_name(f->image_resize));
    if (f->audio.mels)
        fprintf(out, "audio: %d Hz, %d mels x %d frames (n_fft %d, hop %d), patch %d\n",
                f->audio.sample_rate, f->audio.mels, f->audio.frames, f->audio.n_fft, f->audio.hop,
                f->audio.patch);
    fprintf(out, "\n%-16s %-18s %6s %10s %12s %10s %12s\n", "task", "kind", "token", "train",
            "train elems", "val", "val elems");
    for (int i = 0; i < f->n_tasks; i++) {
        const ds_task *t = &f->tasks[i];
        const ds_split_store *tr = &s->split[i][OMNI_SPLIT_TRAIN],
                             *va = &s->split[i][OMNI_SPLIT_VAL];
        fprintf(out, "%-16s %-18s %6d %10lld %12lld %10lld %12lld\n", t->name,
                omni_task_kind_name(t->kind), OMNI_TOK_TASK0 + t->index, (long long)tr->n,
                (long long)tr->tok.rows, (long long)va->n, (long long)va->tok.rows);
    }
    for (int i = 0; i < f->n_tasks; i++) {
        const ds_task *t = &ex->tasks[i];
        fprintf(out, "\nexample of %s (train sample 0", t->name);
        if (t->kind == OMNI_KIND_CONTROL)
            fprintf(out, "; steps of %s%d observation bins, <sep>, %d %s action bin%s",
                    t->images ? "image patches, " : "", t->obs_dim, t->act_dim,
                    t->discrete ? "discrete" : "continuous", t->act_dim == 1 ? "" : "s");
        if (omni_kind_prompted(t->kind))
            fprintf(out, "; %s patches, the prompt, <sep>, the answer",
                    omni_kind_audio(t->kind) ? "audio" : "image");
        fprintf(out, "):\n");
        print_sample(out, t, &t->split[OMNI_SPLIT_TRAIN], 0);
    }
    read_close(&r);
    return OMNI_OK;
}

omni_status omni_data_verify(const char *path, FILE *out)
{
    /* The reader checks every sample it reads; the walk then covers every dataset of the
     * file, including any the reader does not use. */
    whole_file r;
    omni_status st = read_all(path, &r);
    if (st)
        return st;
    read_close(&r);
    omni_h5_verify_report rep;
    hid_t h = -1;
    H5E_BEGIN_TRY
    {
        h = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        st = h < 0 ? omni_fail(OMNI_ERR_DATA, "%s: cannot open the HDF5 file", path)
                   : omni_h5_verify(h, 0, 1, &rep, OMNI_ERR_DATA, path);
        if (h >= 0)
            H5Fclose(h);
    }
    H5E_END_TRY;
    if (st)
        return st;
    if (rep.unchecked)
        return omni_fail(OMNI_ERR_DATA,
                         "%s: %lld of %lld datasets carry no checksum (first: %s), so they "
                         "cannot be verified",
                         path, (long long)rep.unchecked, (long long)rep.datasets,
                         rep.first_unchecked);
    fprintf(out, "\nverified: %lld datasets, %.1f MiB: every checksum matches\n",
            (long long)rep.datasets, rep.bytes / 1048576.0);
    return OMNI_OK;
}
