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
 * BUILD_POOL elements or bytes of patches, or 65536 samples. The plan needs the number of
 * samples first: a first pass counts them (text is chunked, manifest rows checked and
 * counted, episode offsets checked; nothing decoded), the last emits them.
 *
 * Shared among the N ranks of a communicator (`mpirun -np N omnimoe data build`), each
 * task's samples are cut into N contiguous shares in input order — text by files (balanced
 * by bytes), manifest rows and episodes by index — and rank r builds share r. The counting
 * pass gives the task's count and the rank's first sample (text: each rank counts its
 * files, then a sum and an exclusive prefix sum; manifests and episodes: every rank counts
 * all, which decodes nothing). A measuring pass then takes the elements and patches of each
 * sample of the share, per split, from the sample's structure (nothing decoded either); their
 * exclusive prefix sum over the ranks says where each share goes in each array, and the
 * emitting pass writes it there collectively (pwrite.c). The split plan is a function of the
 * global sample index, so the file's content is that of a 1-process build whatever N.
 */
#define BUILD_POOL ((int64_t)4 << 20)

typedef enum { PASS_COUNT, PASS_MEASURE, PASS_EMIT } build_pass;

/* A control task's episodes file, open for the passes (read a block of episodes at a time). */
typedef struct {
    hid_t f, act, obs, off;
    int64_t T, n_ep, obs_dim, act_dim, grid;
    bool act_int, has_img;
    int64_t *o;   /* [EP_BLOCK + 1] episode offsets */
    float *obs_b; /* [steps, obs_dim] */
    void *act_b;  /* [steps, act_dim], int64 or float */
    int32_t *act_i;
    int64_t cap; /* steps the buffers hold */
} episodes;

typedef struct {
    const ds_spec *spec;
    const ds_file *df;
    const ds_spec_task *st;
    const char *spec_path;
    ds_task *task;
    ds_pool *all;
    ds_writer *w;   /* one process */
    ds_cwriter *cw; /* shared among ranks */
    MPI_Comm comm;
    int rank, size;
    bool *peer_failed; /* set when another rank's failure stopped this one */
    ds_split_plan plan;
    build_pass pass;
    int64_t count;  /* samples of this rank's share counted, measured or routed in this pass */
    int64_t base;   /* the global index of this rank's first sample */
    int64_t lo, hi; /* manifests, episodes: this rank's share by sample index */
    int64_t idx;    /* manifests: sample rows seen in this pass */
    int f_lo, f_hi; /* text: this rank's files */
    ds_share mine;  /* measured */
    const char *manifest;
    omni_logmel *lm;
    float *db;
    uint8_t *spec_bytes, *patches;
    ds_prompted *prompted; /* the prompted kinds' rows (prompt.c) */
    episodes ep;
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
            ds_split_plan_is_val(&b->plan, b->base + b->count) ? OMNI_SPLIT_VAL : OMNI_SPLIT_TRAIN;
        if (b->cw) {
            int32_t pd = b->task->patch_dim;
            int64_t a = p->off[i];
            st = ds_cwriter_append(b->cw, sp, p->tok + a, p->loss + a, p->off[i + 1] - a,
                                   pd > 0 ? p->patch + p->poff[i] * pd : NULL,
                                   pd > 0 ? p->poff[i + 1] - p->poff[i] : 0);
        } else {
            st = ds_writer_append_pool(b->w, b->task->index, sp, p, i);
        }
        b->count++;
    }
    p->n = 0;
    return st;
}

/* The measuring pass: the next sample of the share has n_el elements and n_patch patches. */
static void measure(builder *b, int64_t n_el, int64_t n_patch)
{
    int sp =
        ds_split_plan_is_val(&b->plan, b->base + b->count++) ? OMNI_SPLIT_VAL : OMNI_SPLIT_TRAIN;
    b->mine.n[sp]++;
    b->mine.n_el[sp] += n_el;
    b->mine.n_patch[sp] += n_patch;
}

/* Manifests: whether this pass does more with the next sample row. Counting counts it
 * (and does no more); measuring and emitting take the rows of this rank's share. */
static bool take_row(builder *b)
{
    if (b->pass == PASS_COUNT) {
        b->count++;
        return false;
    }
    int64_t i = b->idx++;
    return i >= b->lo && i < b->hi;
}

/* A row of a two-column manifest (columns col0,col1): an error unless it has two
 * fields; *header when it is line 1 naming the columns, which is no sample. */
static omni_status two_columns(const builder *b, char **f, int nf, int64_t line, const char *col0,
                               const char *col1, bool *header)
{
    if (nf != 2)
        return omni_fail(OMNI_ERR_DATA, "%s:%lld: %d columns, expected 2 (%s,%s)", b->manifest,
                         (long long)line, nf, col0, col1);
    *header = line == 1 && !strcmp(f[0], col0) && !strcmp(f[1], col1);
    return OMNI_OK;
}

static omni_status row_text_to_text(void *vctx, char **f, int nf, int64_t line)
{
    builder *b = vctx;
    bool header = false;
    omni_status st = two_columns(b, f, nf, line, "input", "target", &header);
    if (st || header || !take_row(b))
        return st;
    int64_t n_in = (int64_t)strlen(f[0]), n_out = (int64_t)strlen(f[1]);
    if (b->pass == PASS_MEASURE) {
        measure(b, 1 + n_in + 1 + n_out + 1, 0);
        return OMNI_OK;
    }
    ds_progress_update(b->progress, ++b->done, b->rows);
    st = ds_emit_text_to_text(b->all, OMNI_TOK_TASK0 + b->task->index, (const uint8_t *)f[0], n_in,
                              (const uint8_t *)f[1], n_out);
    return st ? st : route(b, false);
}

static omni_status row_media(void *vctx, char **f, int nf, int64_t line)
{
    builder *b = vctx;
    bool header = false;
    omni_status st = two_columns(b, f, nf, line, "path", "text", &header);
    if (st || header || !take_row(b))
        return st;
    int64_t np = (int64_t)b->task->rows * b->task->cols;
    if (b->pass == PASS_MEASURE) {
        measure(b, 1 + np + 1 + (int64_t)strlen(f[1]) + 1, np);
        return OMNI_OK;
    }
    char path[OMNI_PATH_MAX];
    st = ds_path_join(b->manifest, f[0], path, sizeof path);
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
    st = ds_emit_patches_to_text(b->all, OMNI_TOK_TASK0 + b->task->index, b->patches, np,
                                 b->task->patch_dim, (const uint8_t *)f[1], (int64_t)strlen(f[1]));
    return st ? st : route(b, false);
}

/* The prompted kinds: prompt.c checks a row in every pass and decodes it when emitting. */
static omni_status row_prompted(void *vctx, char **f, int nf, int64_t line)
{
    builder *b = vctx;
    bool sample = false;
    omni_status st = ds_prompted_row(b->prompted, f, nf, line, NULL, &sample);
    if (st || !sample || !take_row(b))
        return st;
    if (b->pass == PASS_MEASURE) {
        int64_t np = (int64_t)b->task->rows * b->task->cols *
                     (omni_kind_image(b->task->kind) ? omni_path_list_count(f[0]) : 1);
        measure(b, 1 + np + (int64_t)strlen(f[1]) + 1 + (int64_t)strlen(f[2]) + 1, np);
        return OMNI_OK;
    }
    if ((st = ds_prompted_row(b->prompted, f, nf, line, b->all, &sample)))
        return st;
    ds_progress_update(b->progress, ++b->done, b->rows);
    return route(b, false);
}

static omni_status manifest_pass(builder *b)
{
    ds_csv_row_fn row = omni_kind_prompted(b->task->kind)         ? row_prompted
                        : b->task->kind == OMNI_KIND_TEXT_TO_TEXT ? row_text_to_text
                                                                  : row_media;
    return csv_stream(b->manifest, row, b, b->pass == PASS_EMIT ? &b->bytes : NULL);
}

/* The decoders of a manifest task (all passes check rows; only emitting decodes). */
static omni_status manifest_open(builder *b)
{
    if (omni_kind_prompted(b->task->kind))
        return ds_prompted_open(&b->prompted, b->spec, b->task, b->manifest);
    if (b->task->kind == OMNI_KIND_TEXT_TO_TEXT)
        return OMNI_OK;
    const omni_audio_cfg *a = &b->spec->audio;
    int64_t np = (int64_t)b->task->rows * b->task->cols;
    b->patches = omni_alloc(np * b->task->patch_dim, 1, "patches");
    b->db = omni_alloc((int64_t)a->mels * a->frames, sizeof *b->db, "spectrogram");
    b->spec_bytes = omni_alloc((int64_t)a->mels * a->frames, 1, "spectrogram bytes");
    omni_status st = b->patches && b->db && b->spec_bytes ? OMNI_OK : OMNI_ERR_NOMEM;
    if (!st && b->task->kind == OMNI_KIND_AUDIO_TO_TEXT)
        st = omni_logmel_create(&b->lm, a);
    return st;
}

static void manifest_close(builder *b)
{
    if (b->prompted)
        ds_prompted_close(b->prompted, &b->images, &b->resized);
    b->prompted = NULL;
    omni_free(b->patches);
    omni_free(b->db);
    omni_free(b->spec_bytes);
    omni_logmel_free(b->lm);
    b->patches = b->spec_bytes = NULL;
    b->db = NULL;
    b->lm = NULL;
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
        bool eos = eof && n == avail;
        if (b->pass == PASS_EMIT) {
            st = ds_emit_text(b->all, OMNI_TOK_TASK0 + b->task->index, (const uint8_t *)buf + pos,
                              (int64_t)n, eos);
            if (!st)
                st = route(b, false);
            b->bytes += (int64_t)n;
            b->done++;
            ds_progress_bytes(b->progress, b->bytes, b->total_bytes, b->done);
        } else if (b->pass == PASS_MEASURE) {
            measure(b, 1 + (int64_t)n + eos, 0);
        } else {
            b->count++;
        }
        pos += n;
    }
    free(buf);
    fclose(f);
    return st;
}

/* Text: this rank's files, [f_lo, f_hi): file i goes to the rank where the middle of its
 * bytes falls when the task's bytes are cut into `size` equal parts (contiguous ranges). */
static void text_share(builder *b)
{
    int n = b->st->n_files;
    int64_t total = 0, before = 0;
    for (int i = 0; i < n; i++) {
        int64_t s = file_size(b->st->files[i]);
        total += s > 0 ? s : 0;
    }
    b->f_lo = b->f_hi = 0;
    bool any = false;
    for (int i = 0; i < n; i++) {
        int64_t s = file_size(b->st->files[i]);
        s = s > 0 ? s : 0;
        int owner = total > 0 ? (int)((double)(before + s / 2) * b->size / (double)total)
                              : (int)((int64_t)i * b->size / n);
        if (owner >= b->size)
            owner = b->size - 1;
        before += s;
        if (owner == b->rank) {
            if (!any)
                b->f_lo = i;
            b->f_hi = i + 1;
            any = true;
        }
    }
    b->total_bytes = 0;
    for (int i = b->f_lo; i < b->f_hi; i++) {
        int64_t s = file_size(b->st->files[i]);
        b->total_bytes += s > 0 ? s : 0;
    }
}

static omni_status text_pass(builder *b)
{
    omni_status st = OMNI_OK;
    for (int i = b->f_lo; i < b->f_hi && !st; i++)
        st = text_file(b, b->st->files[i]);
    return st;
}

/* ---- control episodes, streamed -------------------------------------------------- */

#define EP_BLOCK   4096  /* episode offsets read at a time */
#define STEP_BLOCK 65536 /* steps read at a time (more when one episode is longer) */

/* Open dataset `name` of the episodes file: a 1-D or 2-D numeric array; its shape. */
static omni_status episode_array(hid_t f, const char *path, const char *name, hid_t *d,
                                 hsize_t dims[2], int *rank, bool *is_int)
{
    *d = -1;
    if (H5Lexists(f, name, H5P_DEFAULT) <= 0)
        return omni_fail(OMNI_ERR_DATA, "%s: missing dataset %s", path, name);
    *d = H5Dopen2(f, name, H5P_DEFAULT);
    if (*d < 0)
        return omni_fail(OMNI_ERR_DATA, "%s: %s is not a dataset", path, name);
    hid_t sp = H5Dget_space(*d), t = H5Dget_type(*d);
    omni_status st = OMNI_OK;
    *rank = H5Sget_simple_extent_ndims(sp);
    H5T_class_t cls = H5Tget_class(t);
    if (*rank < 1 || *rank > 2 || (cls != H5T_FLOAT && cls != H5T_INTEGER))
        st = omni_fail(OMNI_ERR_DATA, "%s: %s must be a 1-D or 2-D numeric array", path, name);
    dims[1] = 1;
    if (!st)
        H5Sget_simple_extent_dims(sp, dims, NULL);
    if (is_int)
        *is_int = cls == H5T_INTEGER;
    H5Tclose(t);
    H5Sclose(sp);
    return st;
}

/* Rows [lo, hi) of a 1-D or 2-D array of `cols` columns into buf, as mem_type. */
static omni_status episode_rows(hid_t d, const char *path, const char *name, hid_t mem_type,
                                int64_t lo, int64_t hi, int64_t cols, void *buf)
{
    if (hi <= lo)
        return OMNI_OK;
    hid_t fs = H5Dget_space(d);
    int rank = fs >= 0 ? H5Sget_simple_extent_ndims(fs) : 0;
    hsize_t start[2] = {(hsize_t)lo, 0}, count[2] = {(hsize_t)(hi - lo), (hsize_t)cols};
    hid_t ms = H5Screate_simple(rank, count, NULL);
    bool ok = fs >= 0 && ms >= 0 &&
              H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0 &&
              H5Dread(d, mem_type, ms, fs, H5P_DEFAULT, buf) >= 0;
    if (ms >= 0)
        H5Sclose(ms);
    if (fs >= 0)
        H5Sclose(fs);
    return ok ? OMNI_OK : omni_fail(OMNI_ERR_DATA, "%s: cannot read %s", path, name);
}

static void control_close(builder *b)
{
    episodes *e = &b->ep;
    hid_t ds[3] = {e->act, e->obs, e->off};
    for (int i = 0; i < 3; i++)
        if (ds[i] > 0)
            H5Dclose(ds[i]);
    if (e->f > 0)
        H5Fclose(e->f);
    free(e->o);
    free(e->obs_b);
    free(e->act_b);
    free(e->act_i);
    memset(e, 0, sizeof *e);
    e->f = e->act = e->obs = e->off = -1;
}

/* Open the episodes file and check its arrays' shapes (no data read but the images' header):
 * the task learns its dimensions. */
static omni_status control_open(builder *b)
{
    episodes *e = &b->ep;
    memset(e, 0, sizeof *e);
    e->f = e->act = e->obs = e->off = -1;
    const char *path = b->st->input;
    if (H5Fis_hdf5(path) <= 0)
        return omni_fail(OMNI_ERR_DATA, "%s: missing, unreadable or not an HDF5 episodes file",
                         path);
    e->f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (e->f < 0)
        return omni_fail(OMNI_ERR_DATA, "%s: cannot open the episodes file", path);
    hsize_t od[2] = {0, 0}, ad[2], fd[2];
    int orank, arank, frank;
    bool has_obs = H5Lexists(e->f, "observations", H5P_DEFAULT) > 0, off_int;
    omni_status st;
    if ((st = episode_array(e->f, path, "actions", &e->act, ad, &arank, &e->act_int)) ||
        (has_obs && (st = episode_array(e->f, path, "observations", &e->obs, od, &orank, NULL))) ||
        (st = episode_array(e->f, path, "episode_offsets", &e->off, fd, &frank, &off_int)))
        return st;
    e->T = (int64_t)ad[0];
    e->act_dim = (int64_t)ad[1];
    e->obs_dim = has_obs ? (int64_t)od[1] : 0;
    e->n_ep = (int64_t)fd[0] - 1;
    if (frank != 1 || e->n_ep < 1)
        return omni_fail(OMNI_ERR_DATA, "%s: episode_offsets must be 1-D with n + 1 >= 2 entries",
                         path);
    if (has_obs && (int64_t)od[0] != e->T)
        return omni_fail(OMNI_ERR_DATA, "%s: observations has %lld steps but actions has %lld",
                         path, (long long)od[0], (long long)e->T);
    /* Pixel observations (Gato): beside or instead of the vectors. */
    uint8_t *none = NULL;
    st = ds_episode_images(e->f, path, b->spec, e->T, 0, 0, &none, &e->has_img);
    omni_free(none);
    if (st)
        return st;
    if (!has_obs && !e->has_img)
        return omni_fail(OMNI_ERR_DATA,
                         "%s: missing dataset observations (a control episodes file needs "
                         "observations [T, obs], images [T, H, W(, C)] uint8, or both)",
                         path);
    e->o = malloc(sizeof *e->o * (EP_BLOCK + 1));
    if (!e->o)
        return omni_fail(OMNI_ERR_NOMEM, "%s: cannot allocate", path);
    b->task->obs_dim = (int32_t)e->obs_dim;
    b->task->act_dim = (int32_t)e->act_dim;
    b->task->discrete = e->act_int;
    b->task->images = e->has_img;
    ds_task_geometry(b->df, b->task);
    e->grid = e->has_img ? (int64_t)b->task->rows * b->task->cols : 0;
    return OMNI_OK;
}

/* Episode offsets [e0, e1] into ep->o (e1 - e0 <= EP_BLOCK). */
static omni_status episode_offsets(builder *b, int64_t e0, int64_t e1)
{
    return episode_rows(b->ep.off, b->st->input, "episode_offsets", H5T_NATIVE_INT64, e0, e1 + 1, 1,
                        b->ep.o);
}

/* Counting: every rank checks all the offsets (8 bytes an episode, a block at a time). */
static omni_status control_count(builder *b)
{
    episodes *e = &b->ep;
    const char *path = b->st->input;
    int64_t ends[2];
    omni_status st;
    if ((st = episode_offsets(b, 0, 0)))
        return st;
    ends[0] = e->o[0];
    if ((st = episode_offsets(b, e->n_ep, e->n_ep)))
        return st;
    ends[1] = e->o[0];
    if (ends[0] != 0 || ends[1] != e->T)
        return omni_fail(OMNI_ERR_DATA,
                         "%s: episode_offsets runs from %lld to %lld, expected 0 to "
                         "%lld (the number of steps)",
                         path, (long long)ends[0], (long long)ends[1], (long long)e->T);
    for (int64_t e0 = 0; e0 < e->n_ep; e0 += EP_BLOCK) {
        int64_t e1 = e0 + EP_BLOCK < e->n_ep ? e0 + EP_BLOCK : e->n_ep;
        if ((st = episode_offsets(b, e0, e1)))
            return st;
        for (int64_t k = e0; k < e1; k++)
            if (e->o[k + 1 - e0] <= e->o[k - e0])
                return omni_fail(OMNI_ERR_DATA,
                                 "%s: episode_offsets[%lld..%lld] = %lld, %lld: "
                                 "episodes must be non-empty and in order",
                                 path, (long long)k, (long long)k + 1, (long long)e->o[k - e0],
                                 (long long)e->o[k + 1 - e0]);
    }
    b->count = e->n_ep;
    return OMNI_OK;
}

static omni_status grow_steps(episodes *e, int64_t steps, const char *path)
{
    if (steps <= e->cap)
        return OMNI_OK;
    int64_t c = steps;
    float *o = realloc(e->obs_b, sizeof *o * (size_t)(c * e->obs_dim + 1));
    if (o)
        e->obs_b = o;
    void *a = realloc(e->act_b, 8 * (size_t)(c * e->act_dim + 1));
    if (a)
        e->act_b = a;
    int32_t *ai = realloc(e->act_i, sizeof *ai * (size_t)(c * e->act_dim + 1));
    if (ai)
        e->act_i = ai;
    if (!o || !a || !ai)
        return omni_fail(OMNI_ERR_NOMEM, "%s: cannot allocate %lld steps", path, (long long)c);
    e->cap = c;
    return OMNI_OK;
}

/* Steps [s0, s1) read and checked (finite observations, actions in range). */
static omni_status control_steps(builder *b, int64_t s0, int64_t s1, uint8_t **img)
{
    episodes *e = &b->ep;
    const char *path = b->st->input;
    int64_t n = s1 - s0;
    omni_status st;
    if ((st = grow_steps(e, n, path)) ||
        (e->obs_dim > 0 && (st = episode_rows(e->obs, path, "observations", H5T_NATIVE_FLOAT, s0,
                                              s1, e->obs_dim, e->obs_b))) ||
        (st =
             episode_rows(e->act, path, "actions", e->act_int ? H5T_NATIVE_INT64 : H5T_NATIVE_FLOAT,
                          s0, s1, e->act_dim, e->act_b)))
        return st;
    if (e->has_img && (st = ds_episode_images(e->f, path, b->spec, e->T, s0, s1, img, &e->has_img)))
        return st;
    for (int64_t i = 0; i < n * e->obs_dim; i++)
        if (!isfinite(e->obs_b[i]))
            return omni_fail(OMNI_ERR_DATA, "%s: observations[%lld][%lld] is not finite", path,
                             (long long)(s0 + i / e->obs_dim), (long long)(i % e->obs_dim));
    for (int64_t i = 0; i < n * e->act_dim; i++) {
        if (e->act_int) {
            int64_t v = ((const int64_t *)e->act_b)[i];
            if (v < 0 || v >= OMNI_BINS)
                return omni_fail(OMNI_ERR_DATA,
                                 "%s: actions[%lld][%lld] = %lld, a discrete action "
                                 "must be in [0, %d)",
                                 path, (long long)(s0 + i / e->act_dim),
                                 (long long)(i % e->act_dim), (long long)v, OMNI_BINS);
            e->act_i[i] = (int32_t)v;
        } else if (!isfinite(((const float *)e->act_b)[i])) {
            return omni_fail(OMNI_ERR_DATA, "%s: actions[%lld][%lld] is not finite", path,
                             (long long)(s0 + i / e->act_dim), (long long)(i % e->act_dim));
        }
    }
    return OMNI_OK;
}

/* Measuring and emitting: the episodes [lo, hi) of this rank, a block of steps at a time. */
static omni_status control_pass(builder *b)
{
    if (b->pass == PASS_COUNT)
        return control_count(b);
    episodes *e = &b->ep;
    int64_t step = e->grid + e->obs_dim + 1 + e->act_dim;
    omni_status st = OMNI_OK;
    for (int64_t e0 = b->lo; e0 < b->hi && !st; e0 += EP_BLOCK) {
        int64_t e1 = e0 + EP_BLOCK < b->hi ? e0 + EP_BLOCK : b->hi;
        if ((st = episode_offsets(b, e0, e1)))
            break;
        const int64_t *o = e->o;
        for (int64_t g0 = e0; g0 < e1 && !st;) {
            /* A group of whole episodes of at most STEP_BLOCK steps (one at least). */
            int64_t g1 = g0 + 1;
            while (g1 < e1 && o[g1 + 1 - e0] - o[g0 - e0] <= STEP_BLOCK)
                g1++;
            int64_t s0 = o[g0 - e0], s1 = o[g1 - e0];
            if (b->pass == PASS_MEASURE) {
                for (int64_t k = g0; k < g1; k++) {
                    int64_t len = o[k + 1 - e0] - o[k - e0];
                    measure(b, 1 + len * step, len * e->grid);
                }
                g0 = g1;
                continue;
            }
            uint8_t *img = NULL;
            st = control_steps(b, s0, s1, &img);
            const float *act_f = e->act_int ? NULL : e->act_b;
            for (int64_t k = g0; k < g1 && !st; k++) {
                int64_t a = o[k - e0] - s0, len = o[k + 1 - e0] - o[k - e0];
                st = ds_emit_control_steps(
                    b->all, OMNI_TOK_TASK0 + b->task->index, len, e->grid, b->task->patch_dim,
                    img ? img + a * e->grid * b->task->patch_dim : NULL, (int32_t)e->obs_dim,
                    e->obs_dim ? e->obs_b + a * e->obs_dim : NULL, (int32_t)e->act_dim,
                    act_f ? act_f + a * e->act_dim : NULL,
                    e->act_int ? e->act_i + a * e->act_dim : NULL);
                if (!st)
                    st = route(b, false);
                ds_progress_update(b->progress, k + 1 - b->lo, b->hi - b->lo);
            }
            omni_free(img);
            g0 = g1;
        }
    }
    return st;
}

/* ---- the passes of a task ----------------------------------------------------------- */

/* Collective (shared builds): a failure on any rank fails every rank. */
static omni_status agree(builder *b, omni_status st)
{
    if (b->size == 1)
        return st;
    int bad = st != OMNI_OK, any = 0;
    if (MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, b->comm) != MPI_SUCCESS)
        return omni_fail(OMNI_ERR_MPI, "MPI_Allreduce failed in data build");
    if (any && !st) {
        *b->peer_failed = true;
        return omni_fail(OMNI_ERR_DATA, "another rank failed");
    }
    return st;
}

static omni_status run_pass(builder *b, build_pass pass)
{
    b->pass = pass;
    b->count = b->idx = b->done = b->bytes = 0;
    if (b->st->kind == OMNI_KIND_TEXT)
        return text_pass(b);
    if (b->st->kind == OMNI_KIND_CONTROL)
        return control_pass(b);
    return manifest_pass(b);
}

static omni_status sum_i64(builder *b, int64_t *v, int n, int64_t *total, int64_t *before)
{
    if (MPI_Allreduce(v, total, n, MPI_INT64_T, MPI_SUM, b->comm) != MPI_SUCCESS ||
        MPI_Exscan(v, before, n, MPI_INT64_T, MPI_SUM, b->comm) != MPI_SUCCESS)
        return omni_fail(OMNI_ERR_MPI, "MPI_Allreduce/MPI_Exscan failed in data build");
    if (b->rank == 0) /* MPI_Exscan leaves rank 0's result undefined */
        memset(before, 0, sizeof *before * (size_t)n);
    return OMNI_OK;
}

/* One task: count, plan the split, (shared: measure and place), emit. Collective when shared. */
static omni_status build_task(builder *b)
{
    const ds_spec_task *s = b->st;
    bool shared = b->size > 1; /* collective (b->cw) or one shard file per rank (b->w) */
    omni_status st = s->kind == OMNI_KIND_TEXT      ? (text_share(b), OMNI_OK)
                     : s->kind == OMNI_KIND_CONTROL ? control_open(b)
                                                    : manifest_open(b);
    if (!st)
        st = run_pass(b, PASS_COUNT);
    st = agree(b, st);
    int64_t total = b->count;
    if (!st && s->kind == OMNI_KIND_TEXT && shared)
        st = sum_i64(b, &b->count, 1, &total, &b->base);
    if (!st && s->kind != OMNI_KIND_TEXT) {
        b->lo = total * b->rank / b->size;
        b->hi = total * (b->rank + 1) / b->size;
        b->base = b->lo;
    }
    b->rows = b->hi - b->lo;
    if (!st && total == 0)
        st = omni_fail(OMNI_ERR_DATA, "%s:%ld: task %s is empty (no samples in %s)", b->spec_path,
                       s->line, s->name, s->kind == OMNI_KIND_TEXT ? s->files[0] : s->input);
    if (!st)
        st = ds_split_plan_make(&b->plan, b->task->name, total, b->task->val_fraction,
                                b->spec->seed);
    if (!st && b->w && b->task->images)
        st = ds_writer_add_patches(b->w, b->task->index, b->task->patch_dim);
    bool begun = false;
    if (!st && b->cw) {
        memset(&b->mine, 0, sizeof b->mine);
        st = agree(b, run_pass(b, PASS_MEASURE));
        ds_share base = {0}, sum = {0};
        if (!st)
            st = sum_i64(b, b->mine.n, 3 * OMNI_SPLIT_COUNT, sum.n, base.n);
        if (!st) {
            begun = true;
            st = ds_cwriter_task_begin(b->cw, b->task->index, b->task->patch_dim, &b->mine, &base,
                                       &sum);
        }
    }
    if (!st)
        st = run_pass(b, PASS_EMIT);
    if (!st)
        st = route(b, true);
    if (b->w && shared) /* one shard file per rank: agree on this task */
        st = agree(b, st);
    if (begun) {
        st = ds_cwriter_task_end(b->cw, st);
        if (ds_cwriter_peer_failed(b->cw))
            *b->peer_failed = true;
    }
    if (s->kind == OMNI_KIND_CONTROL)
        control_close(b);
    else if (s->kind != OMNI_KIND_TEXT)
        manifest_close(b);
    if (!st && shared) {
        int64_t v[3] = {b->count, b->images, b->resized}, sum[3], before[3];
        if (!(st = sum_i64(b, v, 3, sum, before))) {
            b->count = sum[0];
            b->images = sum[1];
            b->resized = sum[2];
        }
    }
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

/* The build on the ranks of comm (MPI_COMM_NULL: this process alone, the serial writer). */
static omni_status build(MPI_Comm comm, const char *spec_path, const char *out_path, int64_t seed,
                         FILE *progress, bool shards, bool *peer_failed)
{
    int rank = 0, size = 1;
    if (comm != MPI_COMM_NULL) {
        MPI_Comm_rank(comm, &rank);
        MPI_Comm_size(comm, &size);
    }
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
    ds_cwriter *cw = NULL;
    char shard_path[OMNI_PATH_MAX];
    if (shards) {
        /* Rank r of N writes OUT-0000r-of-0000N.h5 (before OUT's .h5, if any) by itself. */
        size_t n = strlen(out_path);
        int ext = n > 3 && !strcmp(out_path + n - 3, ".h5") ? 3 : 0;
        int k = snprintf(shard_path, sizeof shard_path, "%.*s-%05d-of-%05d.h5", (int)(n - ext),
                         out_path, rank, size);
        st = k < 0 || (size_t)k >= sizeof shard_path
                 ? omni_fail(OMNI_ERR_USAGE, "%s: output path too long", out_path)
                 : ds_writer_open(&w, df, shard_path, spec.deflate);
        bool mine = st != OMNI_OK;
        st = (comm != MPI_COMM_NULL && size > 1)
                 ? agree(&(builder){.comm = comm, .size = size, .peer_failed = peer_failed}, st)
                 : st;
        if (st && !mine && w) {
            ds_writer_close(w, NULL);
            w = NULL;
        }
    } else if (size > 1) {
        st = ds_cwriter_open(&cw, comm, df, out_path, spec.deflate);
        if (!cw) /* nothing to close: agree and stop */
            st = st ? st : OMNI_ERR_NOMEM;
        else if (comm != MPI_COMM_NULL) {
            int bad = st != OMNI_OK, any = 0;
            MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, comm);
            if (any && !st) {
                *peer_failed = true;
                st = omni_fail(OMNI_ERR_DATA, "another rank failed");
            }
        }
    } else {
        st = ds_writer_open(&w, df, out_path, spec.deflate);
    }
    ds_pool all = {0};
    for (int i = 0; i < spec.n_tasks && !st; i++) {
        const ds_spec_task *s = &spec.tasks[i];
        ds_task *t = &df->tasks[i];
        ds_progress pr;
        ds_progress_start(&pr, progress, t->name);
        builder b = {.spec = &spec,
                     .df = df,
                     .st = s,
                     .spec_path = spec_path,
                     .task = t,
                     .all = &all,
                     .w = w,
                     .cw = cw,
                     .comm = comm,
                     .rank = rank,
                     .size = size,
                     .peer_failed = peer_failed,
                     .manifest = s->input,
                     .progress = &pr};
        st = build_task(&b);
        ds_pool_free(&all); /* a pool per task: its arrays depend on the kind */
        if (st)
            break;
        ds_progress_end(&pr, b.count);
        if (progress && omni_kind_image(s->kind))
            report_resized(progress, t->name, &spec, b.images, b.resized);
    }
    ds_pool_free(&all);
    if (w && shards && size > 1) {
        /* Every shard is complete before any is renamed into place: agree, close, agree. */
        builder ab = {.comm = comm, .size = size, .peer_failed = peer_failed};
        st = agree(&ab, st);
        omni_status c = st ? (ds_writer_close(w, NULL), st) : ds_writer_close(w, df);
        omni_status all_ok = agree(&ab, c);
        if (all_ok && !c)
            remove(shard_path); /* another rank's shard failed: none is left */
        st = st ? st : all_ok;
    } else if (w) {
        st = st ? (ds_writer_close(w, NULL), st) : ds_writer_close(w, df);
    }
    if (cw) {
        omni_status c = ds_cwriter_close(cw, st ? NULL : df);
        st = st ? st : c;
    }
    free(df);
    ds_spec_free(&spec);
    return st;
}

omni_status omni_data_build(const char *spec_path, const char *out_path, int64_t seed,
                            FILE *progress)
{
    bool peer = false;
    return build(MPI_COMM_NULL, spec_path, out_path, seed, progress, false, &peer);
}

omni_status omni_data_build_shared(MPI_Comm comm, const char *spec_path, const char *out_path,
                                   int64_t seed, FILE *progress, bool shards)
{
    int size = 1;
    MPI_Comm_size(comm, &size);
    if (size == 1 && !shards)
        return omni_data_build(spec_path, out_path, seed, progress);
    bool peer = false;
    omni_status st = build(comm, spec_path, out_path, seed, progress, shards, &peer);
    if (size == 1)
        return st;
    /* The message of the lowest rank that failed by itself, on every rank. */
    omni_status agreed = omni_mpi_agree(comm, peer ? OMNI_OK : st);
    return agreed ? agreed : st;
}
