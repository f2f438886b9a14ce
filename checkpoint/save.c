/*
 * checkpoint: saving. One collective HDF5 file per checkpoint, written under a
 * temporary name and made visible by rename only once complete and on disk, then the
 * `latest` pointer replaced, then old checkpoints rotated out.
 */
/* fallocate(2) */
#define _GNU_SOURCE
#include "ckpt_private.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

/* ---- checks that every rank describes the same tensors ------------------------- */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * UINT64_C(1099511628211);
    return h;
}

/* Collective: the tensor lists agree in count, names, types, shapes and meanings. */
static omni_status check_same_list(MPI_Comm comm, const omni_ckpt_tensor *t, int n)
{
    uint64_t h = UINT64_C(14695981039346656037);
    h = fnv(h, &n, sizeof n);
    for (int i = 0; i < n; i++) {
        h = fnv(h, t[i].name, strlen(t[i].name) + 1);
        int type = (int)t[i].type;
        h = fnv(h, &type, sizeof type);
        h = fnv(h, &t[i].rank, sizeof t[i].rank);
        h = fnv(h, t[i].dims, sizeof(int64_t) * (size_t)t[i].rank);
        const char *m = t[i].meaning ? t[i].meaning : "";
        h = fnv(h, m, strlen(m) + 1);
    }
    unsigned long long v[2] = {h, ~h}, r[2];
    omni_status st = omni_mpi_check(MPI_Allreduce(v, r, 2, MPI_UNSIGNED_LONG_LONG, MPI_MAX, comm),
                                    "MPI_Allreduce");
    if (st)
        return st;
    if (r[0] != h || r[1] != ~h)
        st = omni_fail(OMNI_ERR_INTERNAL,
                       "checkpoint: the ranks describe different tensor lists (names, "
                       "shapes, types or meanings differ)");
    return st;
}

static int cmp_range(const void *a, const void *b)
{
    const int64_t *x = a, *y = b;
    return (x[0] > y[0]) - (x[0] < y[0]);
}

/* Collective (result on rank 0 only; the caller agrees): the writers' row ranges of
 * each tensor cover [0, dims[0]) exactly once. */
static omni_status check_coverage(MPI_Comm comm, const omni_ckpt_tensor *t, int n)
{
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    omni_status st = OMNI_OK;
    int64_t *mine = omni_alloc(2 * (int64_t)n + 1, sizeof(int64_t), "checkpoint row ranges");
    int64_t *all = NULL, *ranges = NULL;
    if (!mine)
        return OMNI_ERR_NOMEM;
    for (int i = 0; i < n; i++) {
        bool w = t[i].writer && t[i].row_hi > t[i].row_lo;
        mine[2 * i] = w ? t[i].row_lo : 0;
        mine[2 * i + 1] = w ? t[i].row_hi : 0;
    }
    if (rank == 0) {
        all = omni_alloc((2 * (int64_t)n + 1) * size, sizeof(int64_t), "checkpoint row ranges");
        ranges = omni_alloc(2 * (int64_t)size, sizeof(int64_t), "checkpoint row ranges");
        if (!all || !ranges)
            st = OMNI_ERR_NOMEM; /* still enter the gather, then fail */
    }
    int count = 2 * n + 1;
    omni_status mst = omni_mpi_check(
        MPI_Gather(mine, count, MPI_INT64_T, all, count, MPI_INT64_T, 0, comm), "MPI_Gather");
    if (!st)
        st = mst;
    if (rank == 0 && !st) {
        for (int i = 0; i < n && !st; i++) {
            int k = 0;
            for (int r = 0; r < size; r++) {
                const int64_t *p = all + (size_t)r * (size_t)count + 2 * (size_t)i;
                if (p[1] > p[0]) {
                    ranges[2 * k] = p[0];
                    ranges[2 * k + 1] = p[1];
                    k++;
                }
            }
            qsort(ranges, (size_t)k, 2 * sizeof(int64_t), cmp_range);
            int64_t next = 0;
            for (int j = 0; j < k && !st; j++) {
                if (ranges[2 * j] != next)
                    st = omni_fail(OMNI_ERR_INTERNAL,
                                   "checkpoint tensor %s: rows [%" PRId64 ", %" PRId64
                                   ") are %s by the writers",
                                   t[i].name, ranges[2 * j] < next ? ranges[2 * j] : next,
                                   ranges[2 * j] < next ? next : ranges[2 * j],
                                   ranges[2 * j] < next ? "written twice" : "not written");
                next = ranges[2 * j + 1] > next ? ranges[2 * j + 1] : next;
            }
            if (!st && next != t[i].dims[0])
                st = omni_fail(OMNI_ERR_INTERNAL,
                               "checkpoint tensor %s: rows [%" PRId64 ", %" PRId64
                               ") are not written by the writers",
                               t[i].name, next, t[i].dims[0]);
        }
    }
    omni_free(ranges);
    omni_free(all);
    omni_free(mine);
    return st;
}

/* ---- the metadata, as rank 0 has it ------------------------------------------- */

typedef struct {
    omni_ckpt_meta m;
    char *yaml;
    int64_t *steps;
    float *load;
    omni_tokenization tok;
} meta_copy;

static void meta_copy_free(meta_copy *c)
{
    free(c->yaml);
    omni_free(c->steps);
    omni_free(c->load);
}

static bool counter_name_ok(const char *s)
{
    size_t n = strnlen(s, OMNI_CKPT_NAME_MAX);
    if (n == 0 || n == OMNI_CKPT_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

static omni_status check_meta(const omni_ckpt_meta *m)
{
    if (!m->experiment_yaml)
        return omni_fail(OMNI_ERR_INTERNAL, "checkpoint: no experiment text in the metadata");
    if (m->step < 0 || m->tokens_seen < 0)
        return omni_fail(OMNI_ERR_INTERNAL, "checkpoint: negative step or tokens seen");
    if (m->load_rows < 0 || m->load_layers < 0 || m->load_experts < 0 ||
        (m->load_rows > 0 &&
         (!m->load || !m->load_steps || m->load_layers < 1 || m->load_experts < 1)) ||
        m->load_rows * m->load_layers > (INT64_C(1) << 40) / (m->load_experts + 1))
        return omni_fail(OMNI_ERR_INTERNAL, "checkpoint: bad expert-load table");
    if (m->n_counters < 0 || m->n_counters > OMNI_CKPT_MAX_COUNTERS)
        return omni_fail(OMNI_ERR_INTERNAL, "checkpoint: %d counters, at most %d", m->n_counters,
                         OMNI_CKPT_MAX_COUNTERS);
    for (int i = 0; i < m->n_counters; i++) {
        if (!counter_name_ok(m->counters[i].name))
            return omni_fail(OMNI_ERR_INTERNAL, "checkpoint: bad counter name '%.*s'",
                             OMNI_CKPT_NAME_MAX, m->counters[i].name);
        for (int j = 0; j < i; j++)
            if (!strcmp(m->counters[i].name, m->counters[j].name))
                return omni_fail(OMNI_ERR_INTERNAL, "checkpoint: counter %s given twice",
                                 m->counters[i].name);
    }
    return OMNI_OK;
}

/* Collective: every rank gets rank 0's metadata (so the attributes, written
 * collectively, are the same everywhere). */
static omni_status bcast_meta(MPI_Comm comm, const omni_ckpt_meta *in, meta_copy *out)
{
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    memset(out, 0, sizeof *out);
    omni_status st = rank == 0 ? check_meta(in) : OMNI_OK;
    st = omni_mpi_agree(comm, st);
    if (st)
        return st;
    if (rank == 0)
        out->m = *in;
    st = omni_mpi_check(MPI_Bcast(&out->m, (int)sizeof out->m, MPI_BYTE, 0, comm), "MPI_Bcast");
    if (st)
        return st;
    out->m.world_size = size;
    long long ylen = rank == 0 ? (long long)strlen(in->experiment_yaml) : 0;
    st = omni_mpi_check(MPI_Bcast(&ylen, 1, MPI_LONG_LONG, 0, comm), "MPI_Bcast");
    if (st)
        return st;
    if (ylen > INT32_MAX - 1)
        return omni_fail(OMNI_ERR_INTERNAL, "checkpoint: experiment text too long");
    int64_t cells = out->m.load_rows * out->m.load_layers * out->m.load_experts;
    out->yaml = malloc((size_t)ylen + 1);
    out->steps = omni_alloc(out->m.load_rows + 1, sizeof(int64_t), "checkpoint load steps");
    out->load = omni_alloc(cells + 1, sizeof(float), "checkpoint expert loads");
    st = (!out->yaml || !out->steps || !out->load) ? OMNI_ERR_NOMEM : OMNI_OK;
    if (!out->yaml)
        omni_fail(st, "checkpoint: out of memory");
    st = omni_mpi_agree(comm, st);
    if (st)
        goto out_free;
    if (rank == 0) {
        memcpy(out->yaml, in->experiment_yaml, (size_t)ylen);
        if (out->m.load_rows > 0) {
            memcpy(out->steps, in->load_steps, sizeof(int64_t) * (size_t)out->m.load_rows);
            memcpy(out->load, in->load, sizeof(float) * (size_t)cells);
        }
    }
    out->yaml[ylen] = '\0';
    st = omni_mpi_check(MPI_Bcast(out->yaml, (int)ylen, MPI_CHAR, 0, comm), "MPI_Bcast");
    if (!st && out->m.load_rows > 0)
        st = omni_mpi_check(MPI_Bcast(out->steps, (int)out->m.load_rows, MPI_INT64_T, 0, comm),
                            "MPI_Bcast");
    if (!st && cells > 0)
        st = omni_mpi_check(MPI_Bcast(out->load, (int)cells, MPI_FLOAT, 0, comm), "MPI_Bcast");
    /* The tokenization is plain values: its bytes travel as they are. */
    if (rank == 0 && in->tokenization)
        out->tok = *in->tokenization;
    if (!st && out->m.tokenization)
        st = omni_mpi_check(MPI_Bcast(&out->tok, (int)sizeof out->tok, MPI_BYTE, 0, comm),
                            "MPI_Bcast");
    if (st)
        goto out_free;
    if (out->m.tokenization)
        out->m.tokenization = &out->tok;
    out->m.experiment_yaml = out->yaml;
    out->m.load_steps = out->steps;
    out->m.load = out->load;
    return OMNI_OK;
out_free:
    meta_copy_free(out);
    memset(out, 0, sizeof *out);
    return st;
}

/* ---- file system steps (rank 0) ------------------------------------------------ */

static omni_status fsync_path(const char *path, bool dir)
{
    int fd = open(path, O_RDONLY | (dir ? O_DIRECTORY : 0));
    if (fd < 0)
        return omni_fail(OMNI_ERR_IO, "%s: cannot open to sync: %s", path, strerror(errno));
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    /* Some file systems cannot sync a directory (EINVAL); the rename is then as
     * durable as they make it. */
    if (rc != 0 && !(dir && (err == EINVAL || err == ENOTSUP)))
        return omni_fail(OMNI_ERR_IO, "%s: cannot sync to disk: %s", path, strerror(err));
    return OMNI_OK;
}

/* Replace DIR/latest by a file naming `name`, atomically. */
static omni_status write_latest(const char *dir, const char *name)
{
    char tmp[OMNI_PATH_MAX + 32], dst[OMNI_PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, CKPT_LATEST);
    snprintf(dst, sizeof dst, "%s/%s", dir, CKPT_LATEST);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return omni_fail(OMNI_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    bool ok = fprintf(f, "%s\n", name) > 0;
    ok = fflush(f) == 0 && ok;
    ok = fsync(fileno(f)) == 0 && ok;
    int err = errno;
    ok = fclose(f) == 0 && ok;
    if (!ok) {
        unlink(tmp);
        return omni_fail(OMNI_ERR_IO, "%s: cannot write: %s", tmp, strerror(err));
    }
    if (rename(tmp, dst) != 0) {
        err = errno;
        unlink(tmp);
        return omni_fail(OMNI_ERR_IO, "%s: cannot rename to %s: %s", tmp, dst, strerror(err));
    }
    return fsync_path(dir, true);
}

static int cmp_step_desc(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x < y) - (x > y);
}

/* Remove stale .tmp files and all complete checkpoints but `current` and the newest
 * keep - 1 others. A failure to remove is a warning: the new checkpoint is safe. */
static void rotate(const char *dir, int64_t current, int64_t keep)
{
    DIR *d = opendir(dir);
    if (!d) {
        omni_log(OMNI_LOG_WARN, "%s: cannot list to remove old checkpoints: %s", dir,
                 strerror(errno));
        return;
    }
    int64_t *steps = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    char path[OMNI_PATH_MAX + 300];
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (!strncmp(e->d_name, "ckpt-", 5) && len > 4 && !strcmp(e->d_name + len - 4, ".tmp")) {
            char base[256];
            snprintf(base, sizeof base, "%.*s", (int)(len - 4), e->d_name);
            if (ckpt_name_step(base) >= 0) {
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                if (unlink(path) != 0)
                    omni_log(OMNI_LOG_WARN, "%s: cannot remove: %s", path, strerror(errno));
            }
            continue;
        }
        int64_t s = ckpt_name_step(e->d_name);
        if (s < 0 || s == current)
            continue;
        if (n == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            int64_t *p = realloc(steps, ncap * sizeof *p);
            if (!p)
                break;
            steps = p;
            cap = ncap;
        }
        steps[n++] = s;
    }
    closedir(d);
    if (n)
        qsort(steps, n, sizeof *steps, cmp_step_desc);
    for (size_t i = (size_t)(keep - 1); i < n; i++) {
        char name[64];
        omni_ckpt_file_name(steps[i], name, sizeof name);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        if (unlink(path) != 0)
            omni_log(OMNI_LOG_WARN, "%s: cannot remove old checkpoint: %s", path, strerror(errno));
    }
    free(steps);
}

/* ---- writing the HDF5 file (collective) ---------------------------------------- */

static omni_status write_root(hid_t file, const omni_ckpt_meta *m, const char *path)
{
    omni_status st = omni_h5_attr_write_str(file, "format", CKPT_FORMAT_NAME, path);
    if (!st)
        st = omni_h5_attr_write_i64(file, "format_version", OMNI_CKPT_FORMAT, path);
    if (!st)
        st = omni_h5_attr_write_str(file, "omnimoe_version", OMNI_VERSION, path);
    if (!st)
        st = omni_h5_attr_write_i64(file, "step", m->step, path);
    if (!st)
        st = omni_h5_attr_write_i64(file, "tokens_seen", m->tokens_seen, path);
    if (!st)
        st = omni_h5_attr_write_i64(file, "world_size", m->world_size, path);
    if (!st)
        st = omni_h5_attr_write_i64(file, "seed", m->seed, path);
    if (!st)
        st = omni_h5_attr_write_str(file, "experiment_yaml", m->experiment_yaml, path);
    return st;
}

/* Create dataset t->name (and its groups) and its "meaning": collective metadata
 * operations, the same on every rank. */
static omni_status create_tensor(hid_t file, const omni_ckpt_tensor *t, const char *path,
                                 hid_t *dset)
{
    omni_status st = OMNI_OK;
    hsize_t dims[OMNI_CKPT_MAX_RANK];
    for (int d = 0; d < t->rank; d++)
        dims[d] = (hsize_t)t->dims[d];
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t space = H5Screate_simple(t->rank, dims, NULL);
    /* Contiguous storage allocated at creation (so the file's final size is known
     * before any data is written), never filled (every element is written). */
    bool ok = lcpl >= 0 && dcpl >= 0 && space >= 0;
    if (ok && omni_ckpt_sum_mode == CKPT_SUM_FLETCHER32) {
        hsize_t chunk[OMNI_CKPT_MAX_RANK];
        for (int d = 0; d < t->rank; d++)
            chunk[d] = dims[d];
        chunk[0] = (hsize_t)omni_h5_slab_rows(t->rank, t->dims);
        ok = H5Pset_chunk(dcpl, t->rank, chunk) >= 0 && H5Pset_fletcher32(dcpl) >= 0;
    }
    if (ok && H5Pset_create_intermediate_group(lcpl, 1) >= 0 &&
        H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY) >= 0 &&
        H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) >= 0)
        *dset = H5Dcreate2(file, t->name, ckpt_file_type(t->type), space, lcpl, dcpl, H5P_DEFAULT);
    if (*dset < 0) {
        char why[512];
        omni_h5_reason(why, sizeof why);
        st = omni_fail(OMNI_ERR_IO, "%s: cannot create dataset %s (%s)", path, t->name, why);
    }
    if (!st && t->meaning)
        st = omni_h5_attr_write_str(*dset, "meaning", t->meaning, path);
    if (space >= 0)
        H5Sclose(space);
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (lcpl >= 0)
        H5Pclose(lcpl);
    return st;
}

/* The counters, as int64 attributes of one group (collective); no group without any. */
static omni_status write_counters(hid_t file, const omni_ckpt_meta *m, const char *path)
{
    omni_status st = OMNI_OK;
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    hid_t group = -1;
    if (lcpl >= 0 && H5Pset_create_intermediate_group(lcpl, 1) >= 0)
        group = H5Gcreate2(file, CKPT_COUNTERS, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    if (group < 0)
        st = omni_fail(OMNI_ERR_IO, "%s: cannot create group %s", path, CKPT_COUNTERS);
    for (int i = 0; i < m->n_counters && !st; i++)
        st = omni_h5_attr_write_i64(group, m->counters[i].name, m->counters[i].value, path);
    if (group >= 0)
        H5Gclose(group);
    if (lcpl >= 0)
        H5Pclose(lcpl);
    return st;
}

/* Bytes the checkpoint will take, roughly: the data plus a little per dataset. */
static int64_t estimate_bytes(const omni_ckpt_tensor *t, int n, const meta_copy *mc)
{
    int64_t bytes = (int64_t)1 << 20;
    for (int i = 0; i < n; i++)
        bytes += ckpt_elems(&t[i]) * (int64_t)ckpt_type_size(t[i].type) + 2048;
    bytes += (int64_t)strlen(mc->yaml);
    return bytes;
}

/*
 * Not collective. Fail early, before HDF5 makes the file, when this process may not
 * write a file of the checkpoint's size (ulimit -f) or, on rank 0, when the disk has
 * not that much space left. (Writing on regardless would fail late, and a file that
 * HDF5 cannot extend to its size at close is one it cannot close cleanly.)
 */
static omni_status preflight(const char *dir, const char *tmp, int64_t need, int rank)
{
    struct rlimit lim;
    if (getrlimit(RLIMIT_FSIZE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY &&
        (int64_t)lim.rlim_cur < need)
        return omni_fail(OMNI_ERR_IO,
                         "%s: cannot write: the file size limit (ulimit -f) is %lld bytes, the "
                         "checkpoint needs about %" PRId64,
                         tmp, (long long)lim.rlim_cur, need);
    struct statvfs fs;
    if (rank == 0 && statvfs(dir, &fs) == 0 &&
        (double)fs.f_bavail * (double)fs.f_frsize < (double)need)
        return omni_fail(OMNI_ERR_IO,
                         "%s: cannot write: disk full (%.0f bytes free, the checkpoint needs "
                         "about %" PRId64 ")",
                         tmp, (double)fs.f_bavail * (double)fs.f_frsize, need);
    return OMNI_OK;
}

/*
 * Rank 0: reserve the blocks of the whole file (its size is known once every dataset
 * exists), so that a disk that fills up meanwhile fails here, cleanly, instead of in
 * the middle of the data, where MPI-IO may report a short write as a success.
 * File systems without fallocate are left to the writes.
 */
static omni_status reserve(const char *tmp, hid_t file)
{
    hsize_t size = 0;
    if (H5Fget_filesize(file, &size) < 0 || size == 0)
        return OMNI_OK;
    int fd = open(tmp, O_WRONLY);
    if (fd < 0)
        return omni_fail(OMNI_ERR_IO, "%s: cannot open: %s", tmp, strerror(errno));
    omni_status st = OMNI_OK;
    if (fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)size) != 0 && errno != EOPNOTSUPP &&
        errno != ENOSYS)
        st = omni_fail(OMNI_ERR_IO, "%s: cannot reserve %llu bytes: %s", tmp,
                       (unsigned long long)size, strerror(errno));
    close(fd);
    return st;
}

/* Fault-injection hook of the kill tests (docs/checkpoints.md, "Testing"): with
 * OMNI_TEST_CKPT_STALL_MS=N in the environment, every rank pauses N ms halfway through the
 * tensor data of each save, so a test can kill a process while the .tmp is half-written
 * instead of racing a save that takes milliseconds on an idle machine. Unset, it costs one
 * getenv per save. */
static void test_stall(void)
{
    const char *v = getenv("OMNI_TEST_CKPT_STALL_MS");
    if (!v || !*v)
        return;
    char *end;
    long ms = strtol(v, &end, 10);
    if (*end || ms <= 0 || ms > 600000)
        return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Collective: write the whole checkpoint into the open file. */
static omni_status write_file(MPI_Comm comm, hid_t file, const meta_copy *mc,
                              const omni_ckpt_tensor *tensors, int n_tensors, const char *tmp)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    const omni_ckpt_meta *m = &mc->m;
    /* The caller's tensors, then the coordinator's expert-load table (rank 0's). */
    int n = n_tensors + (m->load_rows > 0 ? 2 : 0);
    omni_ckpt_tensor *all = omni_alloc(n + 1, sizeof *all, "checkpoint tensor list");
    hid_t *dsets = omni_alloc(n + 1, sizeof *dsets, "checkpoint datasets");
    omni_status st = (!all || !dsets) ? OMNI_ERR_NOMEM : OMNI_OK;
    st = omni_mpi_agree(comm, st);
    if (st)
        goto out_free;
    memcpy(all, tensors, sizeof *all * (size_t)n_tensors);
    if (m->load_rows > 0) {
        all[n_tensors] = (omni_ckpt_tensor){
            .name = CKPT_LOAD_PATH,
            .type = OMNI_CKPT_F32,
            .rank = 3,
            .dims = {m->load_rows, m->load_layers, m->load_experts},
            .data = mc->load,
            .row_lo = 0,
            .row_hi = m->load_rows,
            .writer = rank == 0,
            .meaning = "[logged step, moe layer, expert]: fraction of token->expert assignments",
        };
        all[n_tensors + 1] = (omni_ckpt_tensor){
            .name = CKPT_STEPS_PATH,
            .type = OMNI_CKPT_I64,
            .rank = 1,
            .dims = {m->load_rows},
            .data = mc->steps,
            .row_lo = 0,
            .row_hi = m->load_rows,
            .writer = rank == 0,
            .meaning = "[logged step]: the step of each row of expert_load",
        };
    }
    for (int i = 0; i < n; i++)
        dsets[i] = -1;

    st = omni_mpi_agree(comm, write_root(file, m, tmp));
    for (int i = 0; i < n && !st; i++)
        st = omni_mpi_agree(comm, create_tensor(file, &all[i], tmp, &dsets[i]));
    if (!st && m->n_counters > 0)
        st = omni_mpi_agree(comm, write_counters(file, m, tmp));
    if (!st && m->tokenization)
        st = omni_mpi_agree(comm, ckpt_write_tokenization(file, m->tokenization, tmp));
    if (!st)
        st = omni_mpi_agree(comm, rank == 0 ? reserve(tmp, file) : OMNI_OK);
    /* Every rank enters every transfer; a writer moves its rows, the others nothing. */
    for (int i = 0; i < n && !st; i++) {
        if (i == n / 2)
            test_stall();
        st = omni_mpi_agree(comm,
                            ckpt_transfer(comm, dsets[i], &all[i], all[i].writer, true, tmp, NULL));
    }
    for (int i = 0; i < n; i++)
        if (dsets[i] >= 0)
            H5Dclose(dsets[i]);
    if (!st && H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) {
        char why[512];
        omni_h5_reason(why, sizeof why);
        st = omni_fail(OMNI_ERR_IO, "%s: cannot flush (%s)", tmp, why);
    }
    st = omni_mpi_agree(comm, st);
out_free:
    omni_free(dsets);
    omni_free(all);
    return st;
}

omni_status omni_ckpt_save(MPI_Comm comm, const char *dir, const omni_ckpt_meta *meta,
                           const omni_ckpt_tensor *tensors, int n_tensors, int64_t keep, char *path,
                           size_t path_len)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    meta_copy mc = {0};
    hid_t fapl = -1, file = -1;
    char name[64], tmp[OMNI_PATH_MAX + 80], final[OMNI_PATH_MAX + 80];
    bool created = false;

    omni_status st = OMNI_OK;
    if (n_tensors < 0 || (n_tensors > 0 && !tensors) || keep < 1)
        st = omni_fail(OMNI_ERR_INTERNAL, "checkpoint: bad arguments to save");
    for (int i = 0; i < n_tensors && !st; i++)
        st = ckpt_check_descriptor(&tensors[i]);
    st = omni_mpi_agree(comm, st);
    if (st)
        return st;
    st = omni_mpi_agree(comm, check_same_list(comm, tensors, n_tensors));
    if (!st)
        st = omni_mpi_agree(comm, check_coverage(comm, tensors, n_tensors));
    if (!st)
        st = bcast_meta(comm, meta, &mc);
    if (st)
        return st;

    omni_ckpt_file_name(mc.m.step, name, sizeof name);
    snprintf(final, sizeof final, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, name);
    if (strlen(dir) >= OMNI_PATH_MAX)
        st = omni_fail(OMNI_ERR_IO, "%s: directory name too long", dir);
    else if (rank == 0)
        st = omni_make_dirs(dir);
    if (!st)
        st = preflight(dir, tmp, estimate_bytes(tensors, n_tensors, &mc), rank);
    st = omni_mpi_agree(comm, st);
    if (st)
        goto out_free;

    H5E_BEGIN_TRY
    {
        fapl = H5Pcreate(H5P_FILE_ACCESS);
        if (fapl >= 0 && H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL) >= 0 &&
            H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST) >= 0)
            file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
        if (file < 0) {
            char why[512];
            omni_h5_reason(why, sizeof why);
            st = omni_fail(OMNI_ERR_IO, "%s: cannot create checkpoint file (%s)", tmp, why);
        }
        created = true; /* a failed create may still have left a file behind */
        st = omni_mpi_agree(comm, st);
        if (!st)
            st = write_file(comm, file, &mc, tensors, n_tensors, tmp);
        if (file >= 0) {
            omni_status cst = OMNI_OK;
            if (H5Fclose(file) < 0) {
                char why[512];
                omni_h5_reason(why, sizeof why);
                cst = omni_fail(OMNI_ERR_IO, "%s: cannot close (%s)", tmp, why);
            }
            file = -1;
            cst = omni_mpi_agree(comm, cst);
            if (!st)
                st = cst;
        }
    }
    H5E_END_TRY;
    if (st)
        goto out_remove;

    /* Rank 0 makes the complete file durable and visible, then points `latest` at it. */
    if (rank == 0) {
        st = fsync_path(tmp, false);
        if (!st && rename(tmp, final) != 0)
            st = omni_fail(OMNI_ERR_IO, "%s: cannot rename to %s: %s", tmp, final, strerror(errno));
        if (!st)
            st = fsync_path(dir, true);
        if (!st)
            st = write_latest(dir, name);
        if (!st)
            rotate(dir, mc.m.step, keep);
    }
    st = omni_mpi_agree(comm, st);
    if (st)
        goto out_remove;
    if (path)
        snprintf(path, path_len, "%s", final);
    goto out_free;

out_remove:
    if (rank == 0 && created)
        unlink(tmp);
out_free:
    if (fapl >= 0)
        H5Pclose(fapl);
    meta_copy_free(&mc);
    return st;
}
