/*
 * The collective writer of a build shared among MPI ranks (`mpirun -np N omnimoe data
 * build`, docs/datasets.md §5a): one dataset file written by every rank through HDF5's
 * MPI-IO driver, with the storage of the serial writer (store.c): 64 KiB chunks, each with
 * its Fletcher32 checksum, and deflate when asked.
 *
 * Each task is written in one go: the build has counted every rank's share of the task
 * (samples, elements and patches per split) and knows where that share goes in the file (an
 * exclusive prefix sum over the ranks), so the arrays are created at their final size and
 * every rank writes the rows of its share. Filtered datasets can only be written collectively
 * in parallel HDF5 (1.10.2 on), so writing goes in *rounds*: every rank enters every round,
 * which first agrees on failure and completion (one MPI_Allreduce) and then writes each
 * array of the task once (H5Dwrite, collective; a rank with nothing to write selects none).
 * A round writes whole chunks of the file (a chunk that two ranks share is the only one
 * written twice), so the chunks are compressed and checksummed once.
 *
 * Every function here is collective over the writer's communicator.
 */
#include "internal.h"

#include <hdf5.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "h5.h"

/* Bytes a rank buffers per array between rounds: CWRITE_MB MiB, or the environment's
 * OMNI_DATA_WRITE_MB (1 ... 1024). Every round synchronises the ranks and costs HDF5 a
 * collective update of the chunk index: 16 MiB rounds built 128 MiB of text on 2 ranks 17%
 * faster than 1 MiB ones (docs/bench.md, issue 15). */
#define CWRITE_MB 16

static int64_t cwrite_bytes(void)
{
    const char *e = getenv("OMNI_DATA_WRITE_MB");
    long long mb = e ? atoll(e) : CWRITE_MB;
    return (int64_t)(mb >= 1 && mb <= 1024 ? mb : CWRITE_MB) << 20;
}

/* One array of the task being written: the rows of this rank's share, buffered. */
typedef struct {
    hid_t d; /* -1: the task has no such array */
    const char *name;
    hid_t mem_type;
    size_t row_bytes;
    int rank;
    int64_t row_elems, chunk_rows;
    int64_t pos, end; /* global rows: the first buffered one, and the end of this share */
    uint8_t *buf;
    int64_t n_buf, cap; /* rows */
} c_array;

enum { A_OFF, A_TOK, A_POFF, A_PATCH, A_COUNT };

struct ds_cwriter {
    MPI_Comm comm;
    int rank, size;
    char path[OMNI_PATH_MAX], tmp[OMNI_PATH_MAX + 32];
    hid_t f, dxpl;
    int deflate;
    hid_t split_g[OMNI_MAX_TASKS][OMNI_SPLIT_COUNT];
    int n_tasks;
    /* The task being written. */
    int task;
    int32_t patch_dim;
    c_array a[OMNI_SPLIT_COUNT][A_COUNT];
    ds_share mine, base; /* this rank's counts and where its share starts */
    int64_t n[OMNI_SPLIT_COUNT], n_el[OMNI_SPLIT_COUNT], n_patch[OMNI_SPLIT_COUNT];
    bool done;    /* this rank has appended all of its share */
    bool aborted; /* a round agreed on a failure: no more rounds */
    bool failed;  /* this rank failed (its own work) */
};

static omni_status h5_fail(const char *path, const char *what, const char *name)
{
    char why[512];
    omni_h5_reason(why, sizeof why);
    return omni_fail(OMNI_ERR_IO, "%s: cannot %s %s (%s)", path, what, name, why);
}

omni_status ds_cwriter_open(ds_cwriter **out, MPI_Comm comm, const ds_file *df, const char *path,
                            int deflate)
{
    *out = NULL;
    ds_cwriter *w = calloc(1, sizeof *w);
    omni_status st = w ? OMNI_OK : omni_fail(OMNI_ERR_NOMEM, "cannot allocate the writer");
    if (!st) {
        w->comm = comm;
        MPI_Comm_rank(comm, &w->rank);
        MPI_Comm_size(comm, &w->size);
        w->deflate = deflate;
        w->f = w->dxpl = -1;
        w->task = -1;
        /* Rank 0's process id names the temporary file, as in a 1-process build. */
        long pid = (long)getpid();
        MPI_Bcast(&pid, 1, MPI_LONG, 0, comm);
        int n = snprintf(w->tmp, sizeof w->tmp, "%s.tmp-%ld", path, pid);
        snprintf(w->path, sizeof w->path, "%s", path);
        if (n < 0 || (size_t)n >= sizeof w->tmp || strlen(path) >= sizeof w->path)
            st = omni_fail(OMNI_ERR_USAGE, "%s: output path too long", path);
    }
    hid_t fapl = -1;
    if (!st) {
        fapl = H5Pcreate(H5P_FILE_ACCESS);
        if (fapl < 0 || H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL) < 0 ||
            H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST) < 0)
            st = omni_fail(OMNI_ERR_IO, "%s: cannot set up MPI-IO", path);
    }
    if (!st) {
        w->f = H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
        if (w->f < 0)
            st = omni_fail(OMNI_ERR_IO,
                           "%s: cannot create the file (is the directory there and writable?)",
                           path);
    }
    if (fapl >= 0)
        H5Pclose(fapl);
    if (!st) {
        w->dxpl = H5Pcreate(H5P_DATASET_XFER);
        if (w->dxpl < 0 || H5Pset_dxpl_mpio(w->dxpl, H5FD_MPIO_COLLECTIVE) < 0)
            st = omni_fail(OMNI_ERR_IO, "%s: cannot set up collective transfers", path);
    }
    /* The groups, in the serial writer's order (all ranks alike: creation is collective). */
    hid_t tasks = -1;
    if (!st && (tasks = H5Gcreate2(w->f, "tasks", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)) < 0)
        st = h5_fail(path, "create group", "/tasks");
    static const char *const split_names[OMNI_SPLIT_COUNT] = {"train", "val"};
    for (int i = 0; i < df->n_tasks && !st; i++) {
        hid_t g = H5Gcreate2(tasks, df->tasks[i].name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0) {
            st = h5_fail(path, "create group for task", df->tasks[i].name);
            break;
        }
        for (int s = 0; s < OMNI_SPLIT_COUNT && !st; s++) {
            w->split_g[i][s] = H5Gcreate2(g, split_names[s], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            if (w->split_g[i][s] < 0)
                st = h5_fail(path, "create the split groups of task", df->tasks[i].name);
        }
        H5Gclose(g);
        w->n_tasks++;
    }
    if (tasks >= 0)
        H5Gclose(tasks);
    *out = w;
    return st;
}

/* Create one array of the current task at its final size (rows x row_elems); this rank's
 * rows are [lo, hi). */
static omni_status c_create(ds_cwriter *w, c_array *a, hid_t g, const char *name, hid_t type,
                            int rank, int64_t row_elems, int64_t rows, int64_t lo, int64_t hi,
                            bool deflate)
{
    memset(a, 0, sizeof *a);
    a->name = name;
    a->mem_type = type;
    a->rank = rank;
    a->row_elems = row_elems;
    a->row_bytes = H5Tget_size(type) * (size_t)row_elems;
    a->chunk_rows = ds_chunk_rows(a->row_bytes);
    a->pos = lo;
    a->end = hi;
    /* every row is written: no fill values */
    a->d = ds_array_create(g, name, type, rank, rows, row_elems, deflate ? w->deflate : 0, true);
    if (a->d < 0)
        return h5_fail(w->path, "create dataset", name);
    /* cwrite_bytes() of rows (no more than this rank's share), and at least two chunks, so that a
     * round always has a whole chunk to write. */
    int64_t cap = (cwrite_bytes() / (int64_t)a->row_bytes) / a->chunk_rows * a->chunk_rows;
    int64_t share = (hi - lo + a->chunk_rows - 1) / a->chunk_rows * a->chunk_rows;
    cap = cap < share ? cap : share;
    a->cap = cap > 2 * a->chunk_rows ? cap : 2 * a->chunk_rows;
    a->buf = omni_alloc(a->cap, a->row_bytes, name);
    return a->buf ? OMNI_OK : OMNI_ERR_NOMEM;
}

/* Write the buffered rows: those up to the last chunk boundary of the file, or all of them
 * once this rank's share is complete. Collective: a rank with nothing to write selects none. */
static omni_status c_flush(ds_cwriter *w, c_array *a)
{
    int64_t n = a->n_buf;
    if (!w->done)
        n = (a->pos + a->n_buf) / a->chunk_rows * a->chunk_rows - a->pos;
    if (n < 0)
        n = 0;
    hsize_t start[2] = {(hsize_t)a->pos, 0}, count[2] = {(hsize_t)n, (hsize_t)a->row_elems};
    hsize_t one[2] = {1, (hsize_t)a->row_elems};
    hid_t fs = H5Dget_space(a->d), ms = H5Screate_simple(a->rank, n ? count : one, NULL);
    bool ok = fs >= 0 && ms >= 0;
    if (ok && n)
        ok = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0;
    else if (ok)
        ok = H5Sselect_none(fs) >= 0 && H5Sselect_none(ms) >= 0;
    ok = ok && H5Dwrite(a->d, a->mem_type, ms, fs, w->dxpl, a->buf) >= 0;
    if (fs >= 0)
        H5Sclose(fs);
    if (ms >= 0)
        H5Sclose(ms);
    if (!ok)
        return h5_fail(w->path, "write dataset", a->name);
    a->pos += n;
    memmove(a->buf, a->buf + (size_t)n * a->row_bytes, (size_t)(a->n_buf - n) * a->row_bytes);
    a->n_buf -= n;
    return OMNI_OK;
}

/* One round: agree on failure and completion, then write every array of the task once.
 * *all_done: every rank has appended its whole share (the last round has been written). */
static omni_status c_round(ds_cwriter *w, bool *all_done)
{
    int in[2] = {w->failed, !w->done}, out[2] = {0, 0};
    if (MPI_Allreduce(in, out, 2, MPI_INT, MPI_MAX, w->comm) != MPI_SUCCESS) {
        w->aborted = true;
        return omni_fail(OMNI_ERR_MPI, "%s: MPI_Allreduce failed in the collective write", w->path);
    }
    if (out[0]) {
        w->aborted = true;
        return w->failed ? OMNI_ERR_DATA
                         : omni_fail(OMNI_ERR_DATA, "%s: another rank failed", w->path);
    }
    omni_status st = OMNI_OK;
    for (int s = 0; s < OMNI_SPLIT_COUNT; s++)
        for (int k = 0; k < A_COUNT; k++)
            if (w->a[s][k].d >= 0) {
                omni_status r = c_flush(w, &w->a[s][k]);
                if (r && !st) {
                    st = r;
                    w->failed = true;
                }
            }
    if (all_done)
        *all_done = !out[1];
    return st;
}

static omni_status c_append(ds_cwriter *w, c_array *a, const void *rows, int64_t n)
{
    const uint8_t *src = rows;
    if (a->pos + a->n_buf + n > a->end)
        return omni_fail(OMNI_ERR_INTERNAL,
                         "%s: %s: this rank's share overflows its %" PRId64 " counted rows",
                         w->path, a->name, a->end);
    while (n > 0) {
        int64_t k = a->cap - a->n_buf < n ? a->cap - a->n_buf : n;
        memcpy(a->buf + (size_t)a->n_buf * a->row_bytes, src, (size_t)k * a->row_bytes);
        a->n_buf += k;
        src += (size_t)k * a->row_bytes;
        n -= k;
        if (a->n_buf == a->cap) {
            omni_status st = c_round(w, NULL);
            if (st)
                return st;
        }
    }
    return OMNI_OK;
}

omni_status ds_cwriter_task_begin(ds_cwriter *w, int task, int32_t patch_dim, const ds_share *mine,
                                  const ds_share *base, const ds_share *total)
{
    w->task = task;
    w->patch_dim = patch_dim;
    w->mine = *mine;
    w->base = *base;
    w->done = false;
    memset(w->n, 0, sizeof w->n);
    memset(w->n_el, 0, sizeof w->n_el);
    memset(w->n_patch, 0, sizeof w->n_patch);
    for (int s = 0; s < OMNI_SPLIT_COUNT; s++)
        for (int k = 0; k < A_COUNT; k++)
            w->a[s][k].d = -1;
    omni_status st = OMNI_OK;
    for (int s = 0; s < OMNI_SPLIT_COUNT && !st; s++) {
        hid_t g = w->split_g[task][s];
        /* offsets: rank 0 writes entry 0, every rank entries 1 + its samples. */
        int64_t o_lo = base->n[s] + (w->rank == 0 ? 0 : 1), o_hi = base->n[s] + mine->n[s] + 1;
        if ((st = c_create(w, &w->a[s][A_OFF], g, "offsets", H5T_STD_I64LE, 1, 1, total->n[s] + 1,
                           o_lo, o_hi, false)) ||
            (st = c_create(w, &w->a[s][A_TOK], g, "tokens", H5T_STD_U16LE, 1, 1, total->n_el[s],
                           base->n_el[s], base->n_el[s] + mine->n_el[s], true)))
            break;
        if (patch_dim > 0 && ((st = c_create(w, &w->a[s][A_POFF], g, "patch_offsets", H5T_STD_I64LE,
                                             1, 1, total->n[s] + 1, o_lo, o_hi, false)) ||
                              (st = c_create(w, &w->a[s][A_PATCH], g, "patches", H5T_STD_U8LE, 2,
                                             patch_dim, total->n_patch[s], base->n_patch[s],
                                             base->n_patch[s] + mine->n_patch[s], true))))
            break;
        if (w->rank == 0) {
            int64_t zero = 0;
            if (!(st = c_append(w, &w->a[s][A_OFF], &zero, 1)) && patch_dim > 0)
                st = c_append(w, &w->a[s][A_POFF], &zero, 1);
        }
    }
    if (st)
        w->failed = true;
    return st;
}

omni_status ds_cwriter_append(ds_cwriter *w, omni_split split, const int32_t *tok,
                              const uint8_t *loss, int64_t n_el, const uint8_t *patch,
                              int64_t n_patch)
{
    c_array *a = w->a[split];
    uint16_t buf[1024];
    omni_status st = OMNI_OK;
    for (int64_t j = 0; j < n_el && !st; j += 1024) {
        int64_t k = n_el - j < 1024 ? n_el - j : 1024;
        if ((st = ds_pack_tokens(buf, tok + j, loss + j, k, w->path)))
            return st;
        st = c_append(w, &a[A_TOK], buf, k);
    }
    w->n[split]++;
    w->n_el[split] += n_el;
    int64_t end = w->base.n_el[split] + w->n_el[split];
    if (!st)
        st = c_append(w, &a[A_OFF], &end, 1);
    if (!st && w->patch_dim > 0) {
        w->n_patch[split] += n_patch;
        int64_t pend = w->base.n_patch[split] + w->n_patch[split];
        if (!(st = c_append(w, &a[A_PATCH], patch, n_patch)))
            st = c_append(w, &a[A_POFF], &pend, 1);
    }
    return st;
}

omni_status ds_cwriter_task_end(ds_cwriter *w, omni_status local)
{
    omni_status st = local;
    if (!st)
        for (int s = 0; s < OMNI_SPLIT_COUNT && !st; s++)
            if (w->n[s] != w->mine.n[s] || w->n_el[s] != w->mine.n_el[s] ||
                w->n_patch[s] != w->mine.n_patch[s])
                st = omni_fail(OMNI_ERR_INTERNAL,
                               "%s: task %d: this rank wrote %" PRId64 " samples, %" PRId64
                               " elements, %" PRId64 " patches of split %d, but counted %" PRId64
                               ", %" PRId64 ", %" PRId64,
                               w->path, w->task, w->n[s], w->n_el[s], w->n_patch[s], s,
                               w->mine.n[s], w->mine.n_el[s], w->mine.n_patch[s]);
    if (st)
        w->failed = true;
    w->done = true;
    bool all_done = false;
    /* Rounds until every rank has written its share (or one has failed). */
    while (!w->aborted && !all_done) {
        omni_status r = c_round(w, &all_done);
        if (r && !st)
            st = r;
    }
    for (int s = 0; s < OMNI_SPLIT_COUNT; s++)
        for (int k = 0; k < A_COUNT; k++) {
            c_array *a = &w->a[s][k];
            if (a->d >= 0)
                H5Dclose(a->d);
            a->d = -1;
            omni_free(a->buf);
            a->buf = NULL;
        }
    w->task = -1;
    return st;
}

bool ds_cwriter_peer_failed(const ds_cwriter *w)
{
    return w->aborted && !w->failed;
}

omni_status ds_cwriter_close(ds_cwriter *w, const ds_file *df)
{
    omni_status st = OMNI_OK;
    if (w->task >= 0)
        ds_cwriter_task_end(w, omni_fail(OMNI_ERR_INTERNAL, "%s: a task left open", w->path));
    /* Every rank finishes or abandons the file alike. */
    int bad = !df, any = 0;
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, w->comm);
    if (df && !any && w->f >= 0)
        st = ds_write_attrs(w->f, df, w->path);
    for (int i = 0; i < w->n_tasks; i++)
        for (int s = 0; s < OMNI_SPLIT_COUNT; s++)
            if (w->split_g[i][s] > 0)
                H5Gclose(w->split_g[i][s]);
    if (w->dxpl >= 0)
        H5Pclose(w->dxpl);
    if (w->f >= 0 && H5Fclose(w->f) < 0 && !st)
        st = omni_fail(OMNI_ERR_IO, "%s: cannot close the file", w->path);
    /* Rank 0 renames (or removes) once every rank has closed. */
    int ok = !any && !st, all_ok = 0;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, w->comm);
    if (w->rank == 0) {
        if (all_ok && rename(w->tmp, w->path) != 0)
            st = omni_fail(OMNI_ERR_IO, "%s: cannot rename %s into place", w->path, w->tmp);
        if (!all_ok || st)
            remove(w->tmp);
    }
    if (!st && !all_ok && df)
        st = omni_fail(OMNI_ERR_DATA, "%s: another rank failed", w->path);
    free(w);
    return st;
}
