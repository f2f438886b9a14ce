/*
 * `omnimoe data build`: raw files of each task kind to serialized samples, split into
 * train and validation, written as one dataset file. Also the RFC 4180 CSV reader of
 * the manifests.
 */
#include "internal.h"

#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- CSV ---------------------------------------------------------------------- */

#define CSV_MAX_FIELDS 16

/* Records of text that starts at line `first_line` of the file (1: its start, where a byte
 * order mark may be). */
static omni_status csv_parse_at(const char *path, const char *text, size_t len, int64_t first_line,
                                ds_csv_row_fn row, void *ctx)
{
    char *buf = malloc(len + 1);
    if (!buf)
        return omni_fail(OMNI_ERR_NOMEM, "%s: cannot allocate the CSV buffer", path);
    omni_status st = OMNI_OK;
    size_t i = 0;
    int64_t line = first_line;
    if (first_line == 1 && len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3))
        i = 3; /* a UTF-8 byte order mark */
    while (i < len && !st) {
        char *fields[CSV_MAX_FIELDS];
        int nf = 0;
        size_t o = 0;
        int64_t start_line = line;
        bool blank = true;
        for (;;) {
            /* One field, starting at text[i]. */
            if (nf == CSV_MAX_FIELDS) {
                st = omni_fail(OMNI_ERR_DATA, "%s:%lld: more than %d columns", path,
                               (long long)start_line, CSV_MAX_FIELDS);
                break;
            }
            fields[nf++] = buf + o;
            if (i < len && text[i] == '"') {
                blank = false;
                i++;
                for (;;) {
                    if (i >= len) {
                        st = omni_fail(OMNI_ERR_DATA, "%s:%lld: unterminated quoted field", path,
                                       (long long)start_line);
                        break;
                    }
                    if (text[i] == '"') {
                        if (i + 1 < len && text[i + 1] == '"') {
                            buf[o++] = '"';
                            i += 2;
                            continue;
                        }
                        i++;
                        break;
                    }
                    if (text[i] == '\n')
                        line++;
                    buf[o++] = text[i++];
                }
                if (st)
                    break;
                if (i < len && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
                    st = omni_fail(OMNI_ERR_DATA, "%s:%lld: text after a closing quote", path,
                                   (long long)line);
                    break;
                }
            } else {
                while (i < len && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
                    if (text[i] == '"') {
                        st = omni_fail(OMNI_ERR_DATA,
                                       "%s:%lld: a quote inside an unquoted "
                                       "field",
                                       path, (long long)line);
                        break;
                    }
                    blank = false;
                    buf[o++] = text[i++];
                }
                if (st)
                    break;
            }
            buf[o++] = '\0';
            if (i < len && text[i] == ',') {
                blank = false;
                i++;
                continue;
            }
            if (i < len && text[i] == '\r')
                i++;
            if (i < len && text[i] == '\n')
                i++;
            line++;
            break;
        }
        if (!st && !blank)
            st = row(ctx, fields, nf, start_line);
        o = 0;
    }
    free(buf);
    return st;
}

omni_status ds_csv_parse(const char *path, const char *text, size_t len, ds_csv_row_fn row,
                         void *ctx)
{
    return csv_parse_at(path, text, len, 1, row, ctx);
}

/* A CSV file read in blocks of CSV_BLOCK bytes (larger when one record is), each cut
 * after the last newline outside quotes (a quote inside a quoted field is doubled, so the
 * parity of the quotes seen says whether a newline is inside one). *bytes counts the
 * bytes parsed so far, for progress. */
#define CSV_BLOCK ((size_t)4 << 20)

static omni_status csv_stream(const char *path, ds_csv_row_fn row, void *ctx, int64_t *bytes)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return omni_fail(OMNI_ERR_DATA, "%s: cannot read the manifest (missing or unreadable)",
                         path);
    size_t cap = CSV_BLOCK, len = 0;
    char *buf = malloc(cap);
    omni_status st = buf ? OMNI_OK : omni_fail(OMNI_ERR_NOMEM, "%s: cannot allocate", path);
    int64_t line = 1;
    bool eof = false;
    while (!st) {
        while (!eof && len < cap) {
            size_t n = fread(buf + len, 1, cap - len, f);
            len += n;
            if (n == 0) {
                if (ferror(f))
                    st = omni_fail(OMNI_ERR_DATA, "%s: read error", path);
                eof = true;
            }
        }
        if (st || (eof && len == 0))
            break;
        size_t cut = 0;
        int quoted = 0;
        for (size_t i = 0; i < len; i++) {
            if (buf[i] == '"')
                quoted ^= 1;
            else if (buf[i] == '\n' && !quoted)
                cut = i + 1;
        }
        if (eof)
            cut = len;
        if (cut == 0) { /* one record longer than the buffer */
            char *q = realloc(buf, cap * 2);
            if (!q) {
                st = omni_fail(OMNI_ERR_NOMEM, "%s: a record of more than %zu bytes", path, cap);
                break;
            }
            buf = q;
            cap *= 2;
            continue;
        }
        st = csv_parse_at(path, buf, cut, line, row, ctx);
        for (size_t i = 0; i < cut; i++)
            line += buf[i] == '\n';
        if (bytes)
            *bytes += (int64_t)cut;
        memmove(buf, buf + cut, len - cut);
        len -= cut;
    }
    free(buf);
    fclose(f);
    return st;
}

/* ---- building ----------------------------------------------------------------- */

/*
 * Samples stream: each kind emits its samples into a small pool, which is routed to the
 * writer (train or validation, by the split plan of the task) whenever it holds more than
 * BUILD_POOL elements or bytes of patches, or 65536 samples. The plan needs the number of samples
 * first: a first pass counts them (b->emit false: text is chunked, manifest rows checked and
 * counted, nothing decoded), the second emits them.
 */
#define BUILD_POOL ((int64_t)4 << 20)

typedef struct {
    const ds_spec *spec;
    const ds_file *df;
    const ds_spec_task *st;
    ds_task *task;
    ds_pool *all;
    ds_writer *w;
    ds_split_plan plan;
    bool emit;     /* false: the counting pass */
    int64_t count; /* samples counted (first pass) or routed (second) */
    const char *manifest;
    omni_logmel *lm;
    float *db;
    uint8_t *spec_bytes, *patches;
    ds_prompted *prompted; /* the prompted kinds' rows (prompt.c) */
    int64_t rows, done, bytes, total_bytes;
    int64_t images, resized; /* image tasks: images read, and of them not image.size square */
    ds_progress *progress;
} builder;

/* Send the pooled samples to the writer (all of them, or once the pool is large). */
static omni_status route(builder *b, bool all)
{
    ds_pool *p = b->all;
    int64_t patch_bytes = b->task->patch_dim > 0 && p->n ? p->poff[p->n] * b->task->patch_dim : 0;
    if (p->n == 0 ||
        (!all && p->off[p->n] < BUILD_POOL && patch_bytes < BUILD_POOL && p->n < 65536))
        return OMNI_OK;
    omni_status st = OMNI_OK;
    for (int64_t i = 0; i < p->n && !st; i++) {
        omni_split sp =
            ds_split_plan_is_val(&b->plan, b->count) ? OMNI_SPLIT_VAL : OMNI_SPLIT_TRAIN;
        st = ds_writer_append_pool(b->w, b->task->index, sp, p, i);
        b->count++;
    }
    p->n = 0;
    return st;
}

/* The count is known: make the split plan, and go on to emit. */
static omni_status begin_emit(builder *b, int64_t n)
{
    b->emit = true;
    b->count = 0;
    b->done = 0;
    b->bytes = 0;
    return ds_split_plan_make(&b->plan, b->task->name, n, b->task->val_fraction, b->spec->seed);
}

static bool is_header(char **f, const char *a, const char *b)
{
    return !strcmp(f[0], a) && !strcmp(f[1], b);
}

static omni_status row_text_to_text(void *vctx, char **f, int nf, int64_t line)
{
    builder *b = vctx;
    if (nf != 2)
        return omni_fail(OMNI_ERR_DATA, "%s:%lld: %d columns, expected 2 (input,target)",
                         b->manifest, (long long)line, nf);
    if (line == 1 && is_header(f, "input", "target"))
        return OMNI_OK;
    if (!b->emit) {
        b->count++;
        return OMNI_OK;
    }
    ds_progress_update(b->progress, ++b->done, b->rows);
    omni_status st =
        ds_emit_text_to_text(b->all, OMNI_TOK_TASK0 + b->task->index, (const uint8_t *)f[0],
                             (int64_t)strlen(f[0]), (const uint8_t *)f[1], (int64_t)strlen(f[1]));
    return st ? st : route(b, false);
}

static omni_status row_media(void *vctx, char **f, int nf, int64_t line)
{
    builder *b = vctx;
    if (nf != 2)
        return omni_fail(OMNI_ERR_DATA, "%s:%lld: %d columns, expected 2 (path,text)", b->manifest,
                         (long long)line, nf);
    if (line == 1 && is_header(f, "path", "text"))
        return OMNI_OK;
    if (!b->emit) {
        b->count++;
        return OMNI_OK;
    }
    char path[OMNI_PATH_MAX];
    omni_status st = ds_path_join(b->manifest, f[0], path, sizeof path);
    if (st)
        return st;
    const ds_spec *sp = b->spec;
    bool resized = false;
    st = b->task->kind == OMNI_KIND_IMAGE_TO_TEXT
             ? omni_image_file_patches(path, sp->image_size, sp->image_channels, sp->image_patch,
                                       sp->image_resize, b->patches, &resized)
             : omni_audio_file_patches(path, &sp->audio, b->lm, b->db, b->spec_bytes, b->patches);
    if (st)
        return omni_fail_context(st, "%s:%lld: ", b->manifest, (long long)line);
    if (b->task->kind == OMNI_KIND_IMAGE_TO_TEXT) {
        b->images++;
        b->resized += resized;
    }
    ds_progress_update(b->progress, ++b->done, b->rows);
    int64_t np = (int64_t)b->task->rows * b->task->cols;
    st = ds_emit_patches_to_text(b->all, OMNI_TOK_TASK0 + b->task->index, b->patches, np,
                                 b->task->patch_dim, (const uint8_t *)f[1], (int64_t)strlen(f[1]));
    return st ? st : route(b, false);
}

/* The prompted kinds: prompt.c checks a row in both passes and decodes it in the second. */
static omni_status row_prompted(void *vctx, char **f, int nf, int64_t line)
{
    builder *b = vctx;
    bool sample = false;
    omni_status st = ds_prompted_row(b->prompted, f, nf, line, b->emit ? b->all : NULL, &sample);
    if (st || !sample)
        return st;
    if (!b->emit) {
        b->count++;
        return OMNI_OK;
    }
    ds_progress_update(b->progress, ++b->done, b->rows);
    return route(b, false);
}

static omni_status build_manifest(builder *b)
{
    bool prompted = omni_kind_prompted(b->task->kind);
    ds_csv_row_fn row = prompted                                  ? row_prompted
                        : b->task->kind == OMNI_KIND_TEXT_TO_TEXT ? row_text_to_text
                                                                  : row_media;
    omni_status st = OMNI_OK;
    if (prompted && (st = ds_prompted_open(&b->prompted, b->spec, b->task, b->manifest)))
        return st;
    b->emit = false;
    if (!(st = csv_stream(b->manifest, row, b, NULL))) {
        b->rows = b->count;
        st = begin_emit(b, b->rows);
    }
    if (st || prompted || b->task->kind == OMNI_KIND_TEXT_TO_TEXT) {
        if (!st)
            st = csv_stream(b->manifest, row, b, &b->bytes);
        if (prompted)
            ds_prompted_close(b->prompted, &b->images, &b->resized);
        b->prompted = NULL;
        return st;
    }
    const omni_audio_cfg *a = &b->spec->audio;
    int64_t np = (int64_t)b->task->rows * b->task->cols;
    b->patches = omni_alloc(np * b->task->patch_dim, 1, "patches");
    b->db = omni_alloc((int64_t)a->mels * a->frames, sizeof *b->db, "spectrogram");
    b->spec_bytes = omni_alloc((int64_t)a->mels * a->frames, 1, "spectrogram bytes");
    st = b->patches && b->db && b->spec_bytes ? OMNI_OK : OMNI_ERR_NOMEM;
    if (!st && b->task->kind == OMNI_KIND_AUDIO_TO_TEXT)
        st = omni_logmel_create(&b->lm, a);
    if (!st)
        st = csv_stream(b->manifest, row, b, &b->bytes);
    omni_free(b->patches);
    omni_free(b->db);
    omni_free(b->spec_bytes);
    omni_logmel_free(b->lm);
    b->lm = NULL;
    return st;
}

static int64_t file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (int64_t)sb.st_size : -1;
}

/* One text file cut into samples of at most `chunk` bytes, each ending after its last
 * newline when that keeps at least half of it; only the file's last sample ends with
 * <eos>. Read in blocks: memory is TEXT_BLOCK + chunk bytes whatever the file's size. */
#define TEXT_BLOCK ((size_t)8 << 20)

static omni_status text_file(builder *b, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return omni_fail(OMNI_ERR_DATA, "%s: cannot read the text file (missing or unreadable)",
                         path);
    size_t chunk = (size_t)b->st->chunk, cap = TEXT_BLOCK + chunk + 1, pos = 0, end = 0;
    char *buf = malloc(cap);
    omni_status st = buf ? OMNI_OK : omni_fail(OMNI_ERR_NOMEM, "%s: cannot allocate", path);
    bool eof = false;
    while (!st) {
        if (!eof && end - pos <= chunk) {
            memmove(buf, buf + pos, end - pos);
            end -= pos;
            pos = 0;
            while (!eof && end < cap) {
                size_t n = fread(buf + end, 1, cap - end, f);
                end += n;
                if (n == 0) {
                    if (ferror(f))
                        st = omni_fail(OMNI_ERR_DATA, "%s: read error", path);
                    eof = true;
                }
            }
            if (st)
                break;
        }
        size_t avail = end - pos, n = avail;
        if (avail == 0)
            break;
        if (n > chunk) {
            n = chunk;
            for (size_t k = n; k > n / 2; k--)
                if (buf[pos + k - 1] == '\n') {
                    n = k;
                    break;
                }
        }
        if (b->emit) {
            st = ds_emit_text(b->all, OMNI_TOK_TASK0 + b->task->index, (const uint8_t *)buf + pos,
                              (int64_t)n, eof && n == avail);
            if (!st)
                st = route(b, false);
            b->bytes += (int64_t)n;
            b->done++;
            ds_progress_bytes(b->progress, b->bytes, b->total_bytes, b->done);
        } else {
            b->count++;
        }
        pos += n;
    }
    free(buf);
    fclose(f);
    return st;
}

static omni_status build_text(builder *b)
{
    omni_status st = OMNI_OK;
    b->emit = false;
    b->total_bytes = 0;
    for (int i = 0; i < b->st->n_files && !st; i++) {
        int64_t size = file_size(b->st->files[i]);
        b->total_bytes += size > 0 ? size : 0;
        st = text_file(b, b->st->files[i]);
    }
    if (!st)
        st = begin_emit(b, b->count);
    for (int i = 0; i < b->st->n_files && !st; i++)
        st = text_file(b, b->st->files[i]);
    return st;
}

/* Read a dataset of the episodes file as floats (or ints), with its shape. */
static omni_status read_episode_array(hid_t f, const char *path, const char *name, bool as_int,
                                      void **buf, hsize_t dims[2], int *rank, bool *is_int)
{
    *buf = NULL;
    if (H5Lexists(f, name, H5P_DEFAULT) <= 0)
        return omni_fail(OMNI_ERR_DATA, "%s: missing dataset %s", path, name);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0)
        return omni_fail(OMNI_ERR_DATA, "%s: %s is not a dataset", path, name);
    hid_t sp = H5Dget_space(d), t = H5Dget_type(d);
    omni_status st = OMNI_OK;
    *rank = H5Sget_simple_extent_ndims(sp);
    H5T_class_t cls = H5Tget_class(t);
    if (*rank < 1 || *rank > 2 || (cls != H5T_FLOAT && cls != H5T_INTEGER)) {
        st = omni_fail(OMNI_ERR_DATA, "%s: %s must be a 1-D or 2-D numeric array", path, name);
        goto out;
    }
    dims[1] = 1;
    H5Sget_simple_extent_dims(sp, dims, NULL);
    if (is_int)
        *is_int = cls == H5T_INTEGER;
    bool ints = as_int || (is_int && *is_int);
    int64_t n = (int64_t)dims[0] * (int64_t)dims[1];
    *buf = omni_alloc(n ? n : 1, ints ? 8 : 4, name);
    if (!*buf) {
        st = OMNI_ERR_NOMEM;
        goto out;
    }
    hid_t mt = as_int ? H5T_NATIVE_INT64 : (ints ? H5T_NATIVE_INT64 : H5T_NATIVE_FLOAT);
    if (n > 0 && H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, *buf) < 0) {
        st = omni_fail(OMNI_ERR_DATA, "%s: cannot read %s", path, name);
        omni_free(*buf);
        *buf = NULL;
    }
out:
    H5Tclose(t);
    H5Sclose(sp);
    H5Dclose(d);
    return st;
}

static omni_status build_control(builder *b)
{
    const char *path = b->st->input;
    if (H5Fis_hdf5(path) <= 0)
        return omni_fail(OMNI_ERR_DATA, "%s: missing, unreadable or not an HDF5 episodes file",
                         path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        return omni_fail(OMNI_ERR_DATA, "%s: cannot open the episodes file", path);
    float *obs = NULL;
    void *act = NULL;
    int64_t *off = NULL;
    hsize_t od[2], ad[2], fd[2];
    int orank, arank, frank;
    bool act_int = false;
    int32_t *act_i = NULL;
    float *act_f = NULL;
    omni_status st;
    uint8_t *img = NULL;
    bool has_img = false, has_obs = H5Lexists(f, "observations", H5P_DEFAULT) > 0;
    if ((st = read_episode_array(f, path, "actions", false, &act, ad, &arank, &act_int)) ||
        (has_obs && (st = read_episode_array(f, path, "observations", false, (void **)&obs, od,
                                             &orank, NULL))) ||
        (st =
             read_episode_array(f, path, "episode_offsets", true, (void **)&off, fd, &frank, NULL)))
        goto out;
    int64_t T = (int64_t)ad[0], act_dim = (int64_t)ad[1];
    int64_t obs_dim = has_obs ? (int64_t)od[1] : 0;
    int64_t n_ep = (int64_t)fd[0] - 1;
    if (frank != 1 || n_ep < 1) {
        st = omni_fail(OMNI_ERR_DATA, "%s: episode_offsets must be 1-D with n + 1 >= 2 entries",
                       path);
        goto out;
    }
    if (has_obs && (int64_t)od[0] != T) {
        st = omni_fail(OMNI_ERR_DATA, "%s: observations has %lld steps but actions has %lld", path,
                       (long long)od[0], (long long)T);
        goto out;
    }
    /* Pixel observations (Gato): beside or instead of the vectors. */
    if ((st = ds_episode_images(f, path, b->spec, T, &img, &has_img)))
        goto out;
    if (!has_obs && !has_img) {
        st = omni_fail(OMNI_ERR_DATA,
                       "%s: missing dataset observations (a control episodes file needs "
                       "observations [T, obs], images [T, H, W(, C)] uint8, or both)",
                       path);
        goto out;
    }
    if (off[0] != 0 || off[n_ep] != T) {
        st = omni_fail(OMNI_ERR_DATA,
                       "%s: episode_offsets runs from %lld to %lld, expected 0 to "
                       "%lld (the number of steps)",
                       path, (long long)off[0], (long long)off[n_ep], (long long)T);
        goto out;
    }
    for (int64_t e = 0; e < n_ep; e++)
        if (off[e + 1] <= off[e]) {
            st = omni_fail(OMNI_ERR_DATA,
                           "%s: episode_offsets[%lld..%lld] = %lld, %lld: "
                           "episodes must be non-empty and in order",
                           path, (long long)e, (long long)e + 1, (long long)off[e],
                           (long long)off[e + 1]);
            goto out;
        }
    for (int64_t i = 0; i < T * obs_dim; i++)
        if (!isfinite(obs[i])) {
            st = omni_fail(OMNI_ERR_DATA, "%s: observations[%lld][%lld] is not finite", path,
                           (long long)(i / obs_dim), (long long)(i % obs_dim));
            goto out;
        }
    act_f = act_int ? NULL : act;
    if (act_int) {
        const int64_t *a64 = act;
        act_i = omni_alloc(T * act_dim > 0 ? T * act_dim : 1, sizeof *act_i, "actions");
        if (!act_i) {
            st = OMNI_ERR_NOMEM;
            goto out;
        }
        for (int64_t i = 0; i < T * act_dim; i++) {
            if (a64[i] < 0 || a64[i] >= OMNI_BINS) {
                st = omni_fail(OMNI_ERR_DATA,
                               "%s: actions[%lld][%lld] = %lld, a discrete action "
                               "must be in [0, %d)",
                               path, (long long)(i / act_dim), (long long)(i % act_dim),
                               (long long)a64[i], OMNI_BINS);
                goto out;
            }
            act_i[i] = (int32_t)a64[i];
        }
    } else {
        for (int64_t i = 0; i < T * act_dim; i++)
            if (!isfinite(act_f[i])) {
                st = omni_fail(OMNI_ERR_DATA, "%s: actions[%lld][%lld] is not finite", path,
                               (long long)(i / act_dim), (long long)(i % act_dim));
                goto out;
            }
    }
    b->task->obs_dim = (int32_t)obs_dim;
    b->task->act_dim = (int32_t)act_dim;
    b->task->discrete = act_int;
    b->task->images = has_img;
    ds_task_geometry(b->df, b->task);
    int64_t grid = (int64_t)b->task->rows * b->task->cols;
    /* The writer learns only now that this task's steps carry patches. */
    if (has_img)
        st = ds_writer_add_patches(b->w, b->task->index, b->task->patch_dim);
    if (!st)
        st = begin_emit(b, n_ep);
    for (int64_t e = 0; e < n_ep && !st; e++) {
        int64_t a = off[e], len = off[e + 1] - off[e];
        st = ds_emit_control_steps(
            b->all, OMNI_TOK_TASK0 + b->task->index, len, grid, b->task->patch_dim,
            img ? img + a * grid * b->task->patch_dim : NULL, (int32_t)obs_dim,
            obs ? obs + a * obs_dim : NULL, (int32_t)act_dim, act_f ? act_f + a * act_dim : NULL,
            act_i ? act_i + a * act_dim : NULL);
        if (!st)
            st = route(b, false);
        ds_progress_update(b->progress, e + 1, n_ep);
    }
out:
    omni_free(img);
    omni_free(obs);
    omni_free(act);
    omni_free(off);
    omni_free(act_i);
    H5Fclose(f);
    return st;
}

/* The summary line of an image task: how many of its images were not image.size square
 * and what image.resize did with them (under `error` there are none: the build stopped). */
static void report_resized(FILE *out, const char *task, const ds_spec *spec, int64_t images,
                           int64_t resized)
{
    int32_t n = spec->image_size;
    if (resized == 0)
        fprintf(out, "%s: %lld image%s, all %dx%d: none resized\n", task, (long long)images,
                images == 1 ? "" : "s", n, n);
    else if (spec->image_resize == OMNI_RESIZE_PAD)
        fprintf(out,
                "%s: %lld of %lld images are not %dx%d: resized to fit and padded with black "
                "to %dx%d, aspect ratio kept (image.resize: pad)\n",
                task, (long long)resized, (long long)images, n, n, n, n);
    else
        fprintf(out,
                "%s: %lld of %lld images are not %dx%d: stretched to %dx%d (image.resize: "
                "stretch; pad keeps the aspect ratio, error refuses them)\n",
                task, (long long)resized, (long long)images, n, n, n, n);
}

omni_status omni_data_build(const char *spec_path, const char *out_path, int64_t seed,
                            FILE *progress)
{
    ds_spec spec;
    omni_status st = ds_spec_parse(&spec, spec_path);
    if (st)
        return st;
    if (seed >= 0)
        spec.seed = (uint64_t)seed;
    ds_file *df = calloc(1, sizeof *df);
    if (!df) {
        ds_spec_free(&spec);
        return omni_fail(OMNI_ERR_NOMEM, "cannot allocate the dataset");
    }
    df->seed = spec.seed;
    df->image_size = spec.image_size;
    df->image_channels = spec.image_channels;
    df->image_patch = spec.image_patch;
    df->image_resize = spec.image_resize;
    df->audio = spec.audio;
    for (int i = 0; i < spec.n_tasks; i++) {
        const ds_spec_task *s = &spec.tasks[i];
        ds_task *t = &df->tasks[i];
        snprintf(t->name, sizeof t->name, "%s", s->name);
        t->kind = s->kind;
        t->index = i;
        t->val_fraction = s->val_fraction;
        ds_task_geometry(df, t);
        df->n_tasks++;
    }
    ds_writer *w = NULL;
    st = ds_writer_open(&w, df, out_path, spec.deflate);
    ds_pool all = {0};
    for (int i = 0; i < spec.n_tasks && !st; i++) {
        const ds_spec_task *s = &spec.tasks[i];
        ds_task *t = &df->tasks[i];
        ds_progress pr;
        ds_progress_start(&pr, progress, t->name);
        builder b = {.spec = &spec,
                     .df = df,
                     .st = s,
                     .task = t,
                     .all = &all,
                     .w = w,
                     .manifest = s->input,
                     .progress = &pr};
        if (s->kind == OMNI_KIND_TEXT)
            st = build_text(&b);
        else if (s->kind == OMNI_KIND_CONTROL)
            st = build_control(&b);
        else
            st = build_manifest(&b);
        if (!st)
            st = route(&b, true);
        if (!st && b.count == 0)
            st = omni_fail(OMNI_ERR_DATA, "%s:%ld: task %s is empty (no samples in %s)", spec_path,
                           s->line, t->name, s->kind == OMNI_KIND_TEXT ? s->files[0] : s->input);
        ds_pool_free(&all); /* a pool per task: its arrays depend on the kind */
        if (st)
            break;
        ds_progress_end(&pr, b.count);
        if (progress && omni_kind_image(s->kind))
            report_resized(progress, t->name, &spec, b.images, b.resized);
    }
    ds_pool_free(&all);
    if (w)
        st = st ? (ds_writer_close(w, NULL), st) : ds_writer_close(w, df);
    free(df);
    ds_spec_free(&spec);
    return st;
}
