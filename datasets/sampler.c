/*
 * The sampler: the dataset files of an experiment, opened and checked at open and read in
 * windows (one sample at a time, through a block cache of data.cache_mb MiB, each sample
 * checked as it is read), and the packing of context windows for the batch plan. Filling a window
 * is a pure function of (data, weights, seed, split, step, slot), so any process can fill any slot
 * and the global batch does not depend on the number of processes.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* One shard of a task: the task's group in one file. */
typedef struct {
    ds_split_store *split[OMNI_SPLIT_COUNT]; /* its arrays, read in windows */
    const char *path;                        /* its file */
    int file;                                /* in data.files */
    int64_t first[OMNI_SPLIT_COUNT];         /* its first sample in the task's sample space */
} s_shard;

/* A task: the union of its shards, in data.files order (one sample space per split). */
typedef struct {
    omni_task_info info;
    const ds_task *t; /* the first shard's: kind and geometry (every shard's agree) */
    s_shard *shards;
    int n_shards;
    int32_t token;      /* the experiment's <task> token: OMNI_TOK_TASK0 + index */
    uint8_t pos_kind;   /* OMNI_POS_IMAGE or OMNI_POS_AUDIO for patch kinds */
    float lut[256];     /* stored patch byte -> normalised value */
    int64_t *val_start; /* [n_val_windows + 1] first validation sample of each window */
} s_task;

/* What reading changes: the cache, the sample being packed, the first failure, and which
 * files are open (at most DS_OPEN_FILES, the least recently used closed first). */
typedef struct {
    ds_cache *cache;
    ds_sample_buf buf;
    omni_status err;
    int64_t tick, *used; /* [n_files] last use of each file; 0: closed */
    int n_open;
} s_io;

struct omni_sampler {
    int n_files;
    ds_store *files;
    s_io *io;
    char (*paths)[OMNI_PATH_MAX];
    int n_tasks;
    s_task tasks[OMNI_MAX_TASKS];
    double cum[OMNI_SPLIT_COUNT][OMNI_MAX_TASKS]; /* cumulative task probabilities */
    omni_data_dims dims;
    int64_t context;
    omni_tokenization tok;
    const char *image_file, *audio_file; /* where tok's image / audio settings come from */
};

void omni_sampler_close(omni_sampler *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n_tasks; i++) {
        free(s->tasks[i].val_start);
        free(s->tasks[i].shards);
    }
    for (int f = 0; f < s->n_files; f++)
        ds_store_close(&s->files[f]);
    free(s->files);
    if (s->io) {
        ds_sample_buf_free(&s->io->buf);
        ds_cache_free(s->io->cache);
        free(s->io->used);
        free(s->io);
    }
    free(s->paths);
    free(s);
}

omni_data_dims omni_sampler_dims(const omni_sampler *s)
{
    return s->dims;
}

int omni_sampler_n_tasks(const omni_sampler *s)
{
    return s->n_tasks;
}

const omni_task_info *omni_sampler_task(const omni_sampler *s, int task)
{
    OMNI_ASSERT(task >= 0 && task < s->n_tasks);
    return &s->tasks[task].info;
}

const omni_tokenization *omni_sampler_tokenization(const omni_sampler *s)
{
    return &s->tok;
}

/* Close the least recently used open file when DS_OPEN_FILES are open. */
static void make_room(const omni_sampler *s)
{
    s_io *io = s->io;
    if (io->n_open < DS_OPEN_FILES)
        return;
    int lru = -1;
    for (int g = 0; g < s->n_files; g++)
        if (io->used[g] && (lru < 0 || io->used[g] < io->used[lru]))
            lru = g;
    ds_store_suspend(&s->files[lru]);
    io->used[lru] = 0;
    io->n_open--;
}

/* File f open for reading: reopened if it was closed (closing the least recently used one). */
static omni_status ensure_open(const omni_sampler *s, int f)
{
    s_io *io = s->io;
    if (!io->used[f]) {
        make_room(s);
        omni_status st = ds_store_resume(&s->files[f]);
        if (st)
            return st;
        io->n_open++;
    }
    io->used[f] = ++io->tick;
    return OMNI_OK;
}

/* The shard holding sample i of a task's split (binary search over the shards' firsts). */
static const s_shard *shard_of(const s_task *st, omni_split split, int64_t i)
{
    int lo = 0, hi = st->n_shards - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (st->shards[mid].first[split] <= i)
            lo = mid;
        else
            hi = mid - 1;
    }
    return &st->shards[lo];
}

/* The lengths of validation samples in order, their offsets read in pieces (of one shard). */
typedef struct {
    ds_split_store *v;
    int64_t off[4097], base;
    const char *path;
} val_reader;

static omni_status val_len(val_reader *r, int64_t i, int64_t *len)
{
    if (r->base < 0 || i + 1 >= r->base + 4097) {
        r->base = i;
        int64_t hi = i + 4097 < r->v->n + 1 ? i + 4097 : r->v->n + 1;
        omni_status st = ds_split_offsets(r->v, i, hi, r->off);
        if (st)
            return st;
    }
    *len = r->off[i + 1 - r->base] - r->off[i - r->base];
    if (*len < 0)
        return omni_fail(OMNI_ERR_DATA, "%s: %soffsets decreases at sample %lld", r->path,
                         r->v->where, (long long)i);
    return OMNI_OK;
}

static omni_status add_task(omni_sampler *s, int file, const ds_task *t, double weight,
                            double loss_weight)
{
    omni_status rc = ds_tokenization_add(&s->tok, &s->files[file].meta, t, s->paths[file],
                                         s->image_file, s->audio_file);
    if (rc)
        return rc;
    bool image = omni_kind_image(t->kind) || (t->kind == OMNI_KIND_CONTROL && t->images);
    if (image && !s->image_file)
        s->image_file = s->paths[file];
    if (omni_kind_audio(t->kind) && !s->audio_file)
        s->audio_file = s->paths[file];
    s_task *st = &s->tasks[s->n_tasks];
    memset(st, 0, sizeof *st);
    st->t = t;
    st->shards = calloc(1, sizeof *st->shards);
    if (!st->shards)
        return omni_fail(OMNI_ERR_NOMEM, "cannot allocate the sampler");
    st->n_shards = 1;
    st->shards[0].path = s->paths[file];
    st->shards[0].file = file;
    for (int sp = 0; sp < OMNI_SPLIT_COUNT; sp++)
        st->shards[0].split[sp] = &s->files[file].split[t->index][sp];
    st->token = OMNI_TOK_TASK0 + s->n_tasks;
    snprintf(st->info.name, sizeof st->info.name, "%s", t->name);
    st->info.kind = t->kind;
    st->info.file = s->paths[file];
    st->info.weight = weight;
    st->info.loss_weight = loss_weight;
    if (t->patch_dim > 0) {
        st->pos_kind = image ? OMNI_POS_IMAGE : OMNI_POS_AUDIO;
        for (int v = 0; v < 256; v++)
            st->lut[v] = omni_patch_value((uint8_t)v, t->patch);
        int32_t *dim =
            st->pos_kind == OMNI_POS_IMAGE ? &s->dims.image_patch_dim : &s->dims.audio_patch_dim;
        if (*dim && *dim != t->patch_dim)
            return omni_fail(OMNI_ERR_DATA,
                             "%s: task %s has patches of %d values, but another "
                             "file's %s patches have %d; expected the same",
                             s->paths[file], t->name, t->patch_dim,
                             st->pos_kind == OMNI_POS_IMAGE ? "image" : "audio", *dim);
        *dim = t->patch_dim;
        if (t->rows > s->dims.max_rows)
            s->dims.max_rows = t->rows;
        if (t->cols > s->dims.max_cols)
            s->dims.max_cols = t->cols;
    }
    s->n_tasks++;
    return OMNI_OK;
}

/* Another shard of task k: the same task name in another file, its samples following those of
 * the shards before it. Its kind, geometry and image or audio settings must be the first
 * shard's. */
static omni_status add_shard(omni_sampler *s, int k, int file, const ds_task *t)
{
    s_task *st = &s->tasks[k];
    const ds_task *a = st->t;
    const char *first = st->shards[0].path;
    if (a->kind != t->kind || a->patch_dim != t->patch_dim || a->rows != t->rows ||
        a->cols != t->cols || a->obs_dim != t->obs_dim || a->act_dim != t->act_dim ||
        a->discrete != t->discrete || a->images != t->images)
        return omni_fail(OMNI_ERR_DATA,
                         "%s: task %s is %s (patches of %d values, %dx%d; obs_dim %d, act_dim "
                         "%d, discrete %d, images %d) but in %s it is %s (%d values, %dx%d; %d, "
                         "%d, %d, %d): the shards of a task must hold the same kind of samples",
                         s->paths[file], t->name, omni_task_kind_name(t->kind), t->patch_dim,
                         t->rows, t->cols, t->obs_dim, t->act_dim, t->discrete, t->images, first,
                         omni_task_kind_name(a->kind), a->patch_dim, a->rows, a->cols, a->obs_dim,
                         a->act_dim, a->discrete, a->images);
    /* The image and audio settings: checked as the tokenization would take them. */
    omni_tokenization *probe = malloc(sizeof *probe);
    if (!probe)
        return omni_fail(OMNI_ERR_NOMEM, "cannot allocate the sampler");
    *probe = s->tok;
    probe->n_tasks = 0;
    omni_status rc =
        ds_tokenization_add(probe, &s->files[file].meta, t, s->paths[file], first, first);
    free(probe);
    if (rc)
        return rc;
    s_shard *sh = realloc(st->shards, sizeof *sh * (size_t)(st->n_shards + 1));
    if (!sh)
        return omni_fail(OMNI_ERR_NOMEM, "cannot allocate the sampler");
    st->shards = sh;
    s_shard *n = &sh[st->n_shards++];
    memset(n, 0, sizeof *n);
    n->path = s->paths[file];
    n->file = file;
    for (int sp = 0; sp < OMNI_SPLIT_COUNT; sp++)
        n->split[sp] = &s->files[file].split[t->index][sp];
    return OMNI_OK;
}

/* Validation lengths in the task's order, across its shards (i never decreases). */
typedef struct {
    const omni_sampler *s;
    const s_task *st;
    int shard;
    val_reader r;
} val_walk;

static omni_status walk_len(val_walk *w, int64_t i, int64_t *len)
{
    const s_shard *sh = &w->st->shards[w->shard];
    while (i >= sh->first[OMNI_SPLIT_VAL] + sh->split[OMNI_SPLIT_VAL]->n) {
        sh = &w->st->shards[++w->shard];
        w->r.v = sh->split[OMNI_SPLIT_VAL];
        w->r.base = -1;
        w->r.path = sh->path;
    }
    omni_status st = ensure_open(w->s, sh->file);
    return st ? st : val_len(&w->r, i - sh->first[OMNI_SPLIT_VAL], len);
}

/* A task's sample space (its shards' counts) and its fixed validation windows: whole samples
 * packed greedily in order across the shards (offsets read in pieces; only the window starts
 * are kept). */
static omni_status finish_task(omni_sampler *s, s_task *st)
{
    for (int sp = 0; sp < OMNI_SPLIT_COUNT; sp++) {
        int64_t n = 0, el = 0;
        for (int k = 0; k < st->n_shards; k++) {
            st->shards[k].first[sp] = n;
            n += st->shards[k].split[sp]->n;
            el += st->shards[k].split[sp]->tok.rows;
        }
        st->info.n_samples[sp] = n;
        st->info.n_elements[sp] = el;
    }
    /* A shard may lack training samples of its task (a rank's share of a sharded build),
     * the task may not. */
    if (st->info.n_samples[OMNI_SPLIT_TRAIN] == 0)
        return omni_fail(OMNI_ERR_DATA, "%s%s: task %s has no training samples", st->shards[0].path,
                         st->n_shards > 1 ? " and its other shards" : "", st->info.name);
    int64_t n_val = st->info.n_samples[OMNI_SPLIT_VAL];
    st->val_start = malloc(sizeof *st->val_start * (size_t)(n_val + 1));
    if (!st->val_start)
        return omni_fail(OMNI_ERR_NOMEM, "cannot allocate validation windows");
    val_walk vw = {
        .s = s,
        .st = st,
        .r = {.v = st->shards[0].split[OMNI_SPLIT_VAL], .base = -1, .path = st->shards[0].path}};
    int64_t w = 0, i = 0, len;
    omni_status rc2 = OMNI_OK;
    while (i < n_val) {
        st->val_start[w++] = i;
        int64_t used = 0;
        do {
            if ((rc2 = walk_len(&vw, i, &len)))
                return rc2;
            used += len;
            i++;
        } while (i < n_val && !(rc2 = walk_len(&vw, i, &len)) && used + len <= s->context);
        if (rc2)
            return rc2;
    }
    st->val_start[w] = n_val;
    st->info.n_val_windows = w;
    return OMNI_OK;
}

/* Read data file f of the experiment; a file that is not there is named with its key. */
static omni_status read_file(omni_sampler *s, int f)
{
    if (access(s->paths[f], F_OK) != 0) {
        char cwd[OMNI_PATH_MAX];
        if (!getcwd(cwd, sizeof cwd))
            snprintf(cwd, sizeof cwd, "?");
        return omni_fail(OMNI_ERR_DATA,
                         "data.files[%d] = %s: no such file; paths in data.files are relative "
                         "to the working directory (%s), not to the experiment file",
                         f, s->paths[f], cwd);
    }
    /* A file listed twice would count its samples twice. */
    struct stat a, b;
    if (stat(s->paths[f], &a) == 0)
        for (int g = 0; g < f; g++)
            if (stat(s->paths[g], &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
                return omni_fail(OMNI_ERR_DATA,
                                 "data.files[%d] = %s is the file of data.files[%d] (%s) again: "
                                 "list each file once (a task found in several files is one "
                                 "task, their samples one after another)",
                                 f, s->paths[f], g, s->paths[g]);
    s_io *io = s->io;
    make_room(s);
    omni_status st = ds_store_open(&s->files[f], s->paths[f], io->cache);
    if (!st) {
        io->n_open++;
        io->used[f] = ++io->tick;
    }
    return st;
}

omni_status omni_sampler_open(omni_sampler **out, const omni_experiment *x)
{
    *out = NULL;
    omni_status st = OMNI_OK;
    omni_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return omni_fail(OMNI_ERR_NOMEM, "cannot allocate the sampler");
    s->context = x->model.context;
    omni_tokenization_init(&s->tok);
    s->files = calloc((size_t)(x->data.n_files ? x->data.n_files : 1), sizeof *s->files);
    s->paths = calloc((size_t)(x->data.n_files ? x->data.n_files : 1), sizeof *s->paths);
    if (!s->files || !s->paths) {
        st = omni_fail(OMNI_ERR_NOMEM, "cannot allocate the sampler");
        goto fail;
    }
    if (x->data.n_files < 1) {
        st = omni_fail(OMNI_ERR_CONFIG, "data.files is empty, expected dataset files");
        goto fail;
    }
    s->io = calloc(1, sizeof *s->io);
    if (!s->io) {
        st = omni_fail(OMNI_ERR_NOMEM, "cannot allocate the sampler");
        goto fail;
    }
    s->io->used = calloc((size_t)x->data.n_files, sizeof *s->io->used);
    if (!s->io->used) {
        st = omni_fail(OMNI_ERR_NOMEM, "cannot allocate the sampler");
        goto fail;
    }
    if ((st = ds_cache_create(&s->io->cache, (size_t)(x->data.cache_mb > 0 ? x->data.cache_mb : 64)
                                                 << 20)))
        goto fail;
    for (int f = 0; f < x->data.n_files; f++) {
        snprintf(s->paths[f], OMNI_PATH_MAX, "%s", x->data.files[f]);
        if ((st = read_file(s, f)))
            goto fail;
        s->n_files++;
    }
    /* Tasks: a name found in several files is one task whose shards are those files' groups,
     * in data.files order. */
    if (x->data.n_tasks == 0) {
        for (int f = 0; f < s->n_files; f++)
            for (int t = 0; t < s->files[f].meta.n_tasks; t++) {
                const ds_task *dt = &s->files[f].meta.tasks[t];
                int k = 0;
                while (k < s->n_tasks && strcmp(s->tasks[k].info.name, dt->name))
                    k++;
                if (k < s->n_tasks) {
                    if ((st = add_shard(s, k, f, dt)))
                        goto fail;
                    continue;
                }
                if (s->n_tasks == OMNI_MAX_TASKS) {
                    st = omni_fail(OMNI_ERR_DATA, "the data files hold more than %d tasks",
                                   OMNI_MAX_TASKS);
                    goto fail;
                }
                if ((st = add_task(s, f, dt, 1.0, 1.0)))
                    goto fail;
            }
    } else {
        for (int k = 0; k < x->data.n_tasks; k++) {
            const omni_task_weight *w = &x->data.tasks[k];
            bool found = false;
            for (int f = 0; f < s->n_files; f++)
                for (int t = 0; t < s->files[f].meta.n_tasks; t++) {
                    const ds_task *dt = &s->files[f].meta.tasks[t];
                    if (strcmp(dt->name, w->name))
                        continue;
                    st = found ? add_shard(s, s->n_tasks - 1, f, dt)
                               : add_task(s, f, dt, w->weight, w->loss_weight);
                    if (st)
                        goto fail;
                    found = true;
                }
            if (!found) {
                st = omni_fail(OMNI_ERR_DATA,
                               "task %s of data.tasks is in none of the data "
                               "files (%s%s)",
                               w->name, s->paths[0], s->n_files > 1 ? ", ..." : "");
                goto fail;
            }
        }
    }
    for (int k = 0; k < s->n_tasks; k++)
        if ((st = finish_task(s, &s->tasks[k])))
            goto fail;
    s->dims.n_tasks = s->n_tasks;
    s->dims.vocab = OMNI_TOK_TASK0 + s->n_tasks;
    for (int sp = 0; sp < OMNI_SPLIT_COUNT; sp++) {
        double total = 0, acc = 0;
        double p[OMNI_MAX_TASKS];
        for (int k = 0; k < s->n_tasks; k++) {
            p[k] = s->tasks[k].info.n_samples[sp] > 0
                       ? pow(s->tasks[k].info.weight, 1.0 / x->data.temperature)
                       : 0.0;
            total += p[k];
        }
        for (int k = 0; k < s->n_tasks; k++) {
            acc += total > 0 ? p[k] / total : 0.0;
            s->cum[sp][k] = acc;
        }
    }
    *out = s;
    return OMNI_OK;
fail:
    omni_sampler_close(s);
    return st;
}

/* ---- batches ------------------------------------------------------------------ */

omni_status omni_batch_alloc(omni_batch *b, int64_t n_seq, int64_t context, int64_t patch_dim)
{
    memset(b, 0, sizeof *b);
    int64_t n = n_seq * context;
    b->n_seq = n_seq;
    b->context = context;
    b->patch_dim = patch_dim;
    b->kind = omni_alloc(n, 1, "batch kind");
    b->token = omni_alloc(n, sizeof *b->token, "batch tokens");
    b->patch = omni_alloc(n * (patch_dim ? patch_dim : 1), sizeof *b->patch, "batch patches");
    b->patch_row = omni_alloc(n, sizeof *b->patch_row, "batch patch rows");
    b->patch_col = omni_alloc(n, sizeof *b->patch_col, "batch patch cols");
    b->pos = omni_alloc(n, sizeof *b->pos, "batch positions");
    b->segment = omni_alloc(n, sizeof *b->segment, "batch segments");
    b->in_prefix = omni_alloc(n, 1, "batch prefix flags");
    b->target = omni_alloc(n, sizeof *b->target, "batch targets");
    b->loss_mask = omni_alloc(n, 1, "batch loss mask");
    b->task = omni_alloc(n, sizeof *b->task, "batch tasks");
    if (!b->kind || !b->token || !b->patch || !b->patch_row || !b->patch_col || !b->pos ||
        !b->segment || !b->in_prefix || !b->target || !b->loss_mask || !b->task) {
        omni_batch_free(b);
        return OMNI_ERR_NOMEM;
    }
    return OMNI_OK;
}

void omni_batch_free(omni_batch *b)
{
    omni_free(b->kind);
    omni_free(b->token);
    omni_free(b->patch);
    omni_free(b->patch_row);
    omni_free(b->patch_col);
    omni_free(b->pos);
    omni_free(b->segment);
    omni_free(b->in_prefix);
    omni_free(b->target);
    omni_free(b->loss_mask);
    omni_free(b->task);
    memset(b, 0, sizeof *b);
}

static void clear_window(omni_batch *b, int64_t row)
{
    int64_t p0 = row * b->context, n = b->context;
    memset(b->kind + p0, OMNI_POS_PAD, (size_t)n);
    for (int64_t p = p0; p < p0 + n; p++) {
        b->token[p] = OMNI_TOK_PAD;
        b->segment[p] = -1;
        b->target[p] = -1;
        b->task[p] = -1;
    }
    memset(b->patch + p0 * b->patch_dim, 0, (size_t)(n * b->patch_dim) * sizeof *b->patch);
    memset(b->patch_row + p0, 0, (size_t)n * sizeof *b->patch_row);
    memset(b->patch_col + p0, 0, (size_t)n * sizeof *b->patch_col);
    memset(b->pos + p0, 0, (size_t)n * sizeof *b->pos);
    memset(b->in_prefix + p0, 0, (size_t)n);
    memset(b->loss_mask + p0, 0, (size_t)n);
}

/*
 * Put sample i of a task's split at window position *at: its <task> token, then its
 * elements from body element `skip` on (0: the whole sample), as many as fit in the
 * window. Returns the loss-bearing positions written.
 */
/* Sample i of a task's split, read and checked, as a one-sample pool (valid until the next
 * read); NULL on a failure, which is kept for omni_sampler_status (the first one). */
static const ds_pool *read_sample(const omni_sampler *s, int task, omni_split split, int64_t i)
{
    s_io *io = s->io;
    if (io->err)
        return NULL;
    const s_shard *sh = shard_of(&s->tasks[task], split, i);
    io->err = ensure_open(s, sh->file);
    if (!io->err)
        io->err = ds_split_sample(sh->split[split], i - sh->first[split], &io->buf, sh->path);
    return io->err ? NULL : &io->buf.pool;
}

omni_status omni_sampler_status(const omni_sampler *s)
{
    return s->io->err;
}

void omni_sampler_cache_stats(const omni_sampler *s, int64_t *hits, int64_t *misses, size_t *bytes)
{
    ds_cache_stats(s->io->cache, hits, misses, bytes);
}

static int64_t put_sample(const omni_sampler *s, int task, const ds_pool *pool, int64_t i,
                          int64_t skip, int32_t segment, omni_batch *b, int64_t row, int64_t *at)
{
    const s_task *st = &s->tasks[task];
    const ds_task *t = st->t;
    int64_t a = pool->off[i], e = pool->off[i + 1];
    int64_t body = a + 1 + skip; /* first element after the task token */
    int64_t room = b->context - *at;
    int64_t n = 1 + (e - body);
    if (n > room)
        n = room;
    int64_t p0 = row * b->context + *at;
    /* The patch index of the first emitted body element. */
    int64_t patch = 0;
    if (t->patch_dim > 0) {
        patch = pool->poff[i];
        for (int64_t j = a + 1; j < body; j++)
            patch += pool->tok[j] == OMNI_DS_PATCH;
    }
    /* The prefix ends at the first loss-bearing element emitted. */
    int64_t first_loss = n;
    for (int64_t q = 1; q < n; q++)
        if (pool->loss[body + q - 1]) {
            first_loss = q;
            break;
        }
    int64_t losses = 0;
    for (int64_t q = 0; q < n; q++) {
        int64_t p = p0 + q;
        int32_t v = q == 0 ? st->token : pool->tok[body + q - 1];
        b->pos[p] = (int32_t)q;
        b->segment[p] = segment;
        b->task[p] = task;
        b->in_prefix[p] = q < first_loss;
        if (v == OMNI_DS_PATCH) {
            /* Its place in its own image or spectrogram: positions restart at each image of
             * a sample (several images; a control step's picture). */
            int64_t k = (patch - pool->poff[i]) % ((int64_t)t->rows * t->cols);
            b->kind[p] = st->pos_kind;
            b->token[p] = OMNI_TOK_PAD;
            b->patch_row[p] = (int32_t)(k / t->cols);
            b->patch_col[p] = (int32_t)(k % t->cols);
            const uint8_t *src = pool->patch + patch * t->patch_dim;
            float *dst = b->patch + p * b->patch_dim;
            for (int32_t d = 0; d < t->patch_dim; d++)
                dst[d] = st->lut[src[d]];
            patch++;
        } else {
            b->kind[p] = OMNI_POS_TOKEN;
            b->token[p] = v;
        }
        b->target[p] = -1;
        b->loss_mask[p] = 0;
        if (q + 1 < n) {
            int32_t next = pool->tok[body + q];
            if (next != OMNI_DS_PATCH) {
                b->target[p] = next;
                b->loss_mask[p] = pool->loss[body + q];
                losses += b->loss_mask[p];
            }
        }
    }
    *at += n;
    return losses;
}

/* A uniform integer in [0, n) from two stream words. */
static int64_t draw_index(const omni_rng *r, uint64_t w, int64_t n)
{
    uint64_t v = (uint64_t)omni_rng_u32(r, w) << 32 | omni_rng_u32(r, w + 1);
    return (int64_t)(v % (uint64_t)n);
}

int64_t omni_sampler_fill(const omni_sampler *s, omni_split split, uint64_t seed, int64_t step,
                          int64_t slot, omni_batch *b, int64_t row)
{
    OMNI_ASSERT(b->context == s->context && row >= 0 && row < b->n_seq);
    OMNI_ASSERT(b->patch_dim >= s->dims.image_patch_dim && b->patch_dim >= s->dims.audio_patch_dim);
    clear_window(b, row);
    if (s->n_tasks == 0 || s->cum[split][s->n_tasks - 1] <= 0)
        return 0;
    omni_rng r;
    omni_rng_init(&r, seed, split == OMNI_SPLIT_TRAIN ? "plan/train" : "plan/val", (uint64_t)step);
    uint64_t w = (uint64_t)slot << 24;
    int64_t at = 0, losses = 0;
    int32_t segment = 0;
    while (at < b->context) {
        double u = omni_rng_u32(&r, w) * (1.0 / 4294967296.0);
        int task = 0;
        while (task < s->n_tasks - 1 &&
               (u >= s->cum[split][task] || s->tasks[task].info.n_samples[split] == 0))
            task++;
        while (s->tasks[task].info.n_samples[split] == 0) /* rounding at the top end */
            task--;
        const s_task *st = &s->tasks[task];
        int64_t i = draw_index(&r, w + 1, st->info.n_samples[split]);
        const ds_pool *pool = read_sample(s, task, split, i);
        if (!pool)
            break; /* the failure is kept: omni_sampler_status */
        int64_t len = pool->off[1];
        int64_t skip = 0;
        if (len > b->context) {
            /* A long sample: a random window of it (at a step boundary for control). */
            if (st->info.kind == OMNI_KIND_CONTROL) {
                int64_t step_len = (st->t->images ? (int64_t)st->t->rows * st->t->cols : 0) +
                                   st->t->obs_dim + 1 + st->t->act_dim;
                skip = draw_index(&r, w + 3, (len - 1) / step_len) * step_len;
            } else {
                skip = draw_index(&r, w + 3, len - b->context + 1);
            }
        }
        w += 5;
        losses += put_sample(s, task, pool, 0, skip, segment++, b, row, &at);
    }
    return losses;
}

int64_t omni_sampler_fill_val(const omni_sampler *s, int task, int64_t i, omni_batch *b,
                              int64_t row)
{
    OMNI_ASSERT(task >= 0 && task < s->n_tasks);
    const s_task *st = &s->tasks[task];
    OMNI_ASSERT(i >= 0 && i < st->info.n_val_windows && b->context == s->context);
    OMNI_ASSERT(b->patch_dim >= s->dims.image_patch_dim && b->patch_dim >= s->dims.audio_patch_dim);
    clear_window(b, row);
    int64_t at = 0, losses = 0;
    int32_t segment = 0;
    for (int64_t k = st->val_start[i]; k < st->val_start[i + 1] && at < b->context; k++) {
        const ds_pool *pool = read_sample(s, task, OMNI_SPLIT_VAL, k);
        if (!pool)
            break;
        losses += put_sample(s, task, pool, 0, 0, segment++, b, row, &at);
    }
    return losses;
}

void omni_sampler_sample(const omni_sampler *s, int task, omni_split split, int64_t i,
                         omni_sample *out)
{
    OMNI_ASSERT(task >= 0 && task < s->n_tasks && split >= 0 && split < OMNI_SPLIT_COUNT);
    const ds_task *t = s->tasks[task].t;
    OMNI_ASSERT(i >= 0 && i < s->tasks[task].info.n_samples[split]);
    const ds_pool *pool = read_sample(s, task, split, i);
    if (!pool) { /* the failure is kept: omni_sampler_status */
        static const int32_t none_tok[1] = {OMNI_TOK_EOS};
        static const uint8_t none_loss[1] = {0};
        out->n = 0;
        out->tok = none_tok;
        out->loss = none_loss;
        out->patches = NULL;
        return;
    }
    out->n = pool->off[1] - 1; /* after the <task> token */
    out->tok = pool->tok + 1;
    out->loss = pool->loss + 1;
    out->patches = t->patch_dim > 0 ? pool->patch : NULL;
}
