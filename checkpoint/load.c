/*
 * checkpoint: loading. Open a checkpoint on every rank with parallel HDF5, check that
 * it is one (format, version, metadata), check every requested tensor's presence,
 * type and shape before reading anything, then read each rank's rows by hyperslab.
 * Also: finding the newest complete checkpoint of a directory.
 */
#include "ckpt_private.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const omni_ckpt_meta *omni_ckpt_meta_of(const omni_ckpt *c)
{
    return &c->meta;
}

const char *omni_ckpt_path(const omni_ckpt *c)
{
    return c->path;
}

bool omni_ckpt_counter_get(const omni_ckpt_meta *m, const char *name, int64_t *value)
{
    for (int i = 0; i < m->n_counters; i++)
        if (!strcmp(m->counters[i].name, name)) {
            *value = m->counters[i].value;
            return true;
        }
    return false;
}

/* Why `path` does not open as HDF5, in words a user can act on. Not collective. */
static omni_status open_fault(const char *path)
{
    char why[512];
    omni_h5_reason(why, sizeof why);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return omni_fail(OMNI_ERR_CKPT, "%s: cannot open checkpoint: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return omni_fail(OMNI_ERR_CKPT, "%s: not a regular file", path);
    if (H5Fis_hdf5(path) <= 0)
        return omni_fail(OMNI_ERR_CKPT, "%s: not an HDF5 file (no HDF5 signature)", path);
    return omni_fail(OMNI_ERR_CKPT, "%s: damaged or truncated HDF5 file (%s)", path, why);
}

/* Read a small whole dataset on this rank (independent read). Checks its type class
 * and its shape against `rank`/`dims` (dims[d] < 0: any, returned). */
static omni_status read_small(hid_t file, const char *name, omni_ckpt_type type, int rank,
                              int64_t *dims, void **data, const char *path)
{
    omni_status st = OMNI_OK;
    hid_t dset = H5Dopen2(file, name, H5P_DEFAULT);
    hid_t space = dset < 0 ? -1 : H5Dget_space(dset);
    hid_t ftype = dset < 0 ? -1 : H5Dget_type(dset);
    hsize_t hd[OMNI_CKPT_MAX_RANK] = {0};
    if (space < 0 || ftype < 0) {
        st = omni_fail(OMNI_ERR_CKPT, "%s: dataset %s is unreadable", path, name);
        goto out_close;
    }
    if (H5Sget_simple_extent_ndims(space) != rank ||
        H5Sget_simple_extent_dims(space, hd, NULL) != rank) {
        st = omni_fail(OMNI_ERR_CKPT, "%s: dataset %s is not of rank %d", path, name, rank);
        goto out_close;
    }
    int64_t n = 1;
    for (int d = 0; d < rank; d++) {
        if (dims[d] >= 0 && (int64_t)hd[d] != dims[d]) {
            st = omni_fail(OMNI_ERR_CKPT,
                           "%s: dataset %s has dimension %d of %llu, expected %" PRId64, path, name,
                           d, (unsigned long long)hd[d], dims[d]);
            goto out_close;
        }
        dims[d] = (int64_t)hd[d];
        if (hd[d] > (hsize_t)1 << 30 || n > ((int64_t)1 << 30) / (dims[d] + 1)) {
            st = omni_fail(OMNI_ERR_CKPT, "%s: dataset %s is implausibly large", path, name);
            goto out_close;
        }
        n *= dims[d];
    }
    H5T_class_t want = type == OMNI_CKPT_I64 ? H5T_INTEGER : H5T_FLOAT;
    if (H5Tget_class(ftype) != want) {
        st = omni_fail(OMNI_ERR_CKPT, "%s: dataset %s is not of type %s", path, name,
                       ckpt_type_name(type));
        goto out_close;
    }
    *data = omni_alloc(n + 1, ckpt_type_size(type), name);
    if (!*data) {
        st = OMNI_ERR_NOMEM;
        goto out_close;
    }
    if (n > 0 && H5Dread(dset, ckpt_mem_type(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, *data) < 0) {
        st = omni_fail(OMNI_ERR_CKPT, "%s: dataset %s is unreadable", path, name);
        goto out_close;
    }
    omni_ckpt_tensor t = {
        .name = name, .type = type, .rank = rank, .row_hi = dims[0], .data = *data};
    memcpy(t.dims, dims, sizeof(int64_t) * (size_t)rank);
    omni_h5_rows r = ckpt_rows(&t);
    omni_h5_sum_kind kind;
    st = omni_h5_sum_check(dset, &r, &kind, OMNI_ERR_CKPT, path);
out_close:
    if (ftype >= 0)
        H5Tclose(ftype);
    if (space >= 0)
        H5Sclose(space);
    if (dset >= 0)
        H5Dclose(dset);
    return st;
}

typedef struct {
    omni_ckpt_meta *m;
    const char *path;
    omni_status st;
} counter_walk;

static herr_t read_counter(hid_t loc, const char *name, const H5A_info_t *info, void *data)
{
    (void)info;
    counter_walk *w = data;
    if (w->m->n_counters == OMNI_CKPT_MAX_COUNTERS) {
        w->st = omni_fail(OMNI_ERR_CKPT, "%s: more than %d counters in /%s", w->path,
                          OMNI_CKPT_MAX_COUNTERS, CKPT_COUNTERS);
        return -1;
    }
    omni_ckpt_counter *c = &w->m->counters[w->m->n_counters];
    if (strlen(name) >= sizeof c->name) {
        w->st =
            omni_fail(OMNI_ERR_CKPT, "%s: counter name too long in /%s", w->path, CKPT_COUNTERS);
        return -1;
    }
    w->st = omni_h5_attr_read_i64(loc, name, &c->value, OMNI_ERR_CKPT, w->path);
    if (w->st)
        return -1;
    snprintf(c->name, sizeof c->name, "%s", name);
    w->m->n_counters++;
    return 0;
}

/* Read and check the metadata of an open checkpoint (this rank, independently). */
static omni_status read_meta(omni_ckpt *c)
{
    omni_ckpt_meta *m = &c->meta;
    const char *p = c->path;
    omni_status st = ckpt_check_format(c->file, p, &m->format_version);
    if (!st)
        st = omni_h5_attr_read_i64(c->file, "step", &m->step, OMNI_ERR_CKPT, p);
    if (!st)
        st = omni_h5_attr_read_i64(c->file, "tokens_seen", &m->tokens_seen, OMNI_ERR_CKPT, p);
    if (!st)
        st = omni_h5_attr_read_i64(c->file, "world_size", &m->world_size, OMNI_ERR_CKPT, p);
    if (!st)
        st = omni_h5_attr_read_i64(c->file, "seed", &m->seed, OMNI_ERR_CKPT, p);
    if (!st)
        st = omni_h5_attr_read_str(c->file, "experiment_yaml", (size_t)1 << 24, &c->yaml,
                                   OMNI_ERR_CKPT, p);
    if (!st)
        st = omni_h5_attr_read_str(c->file, "omnimoe_version", 256, &c->version, OMNI_ERR_CKPT, p);
    if (st)
        return st;
    if (m->step < 0 || m->tokens_seen < 0 || m->world_size < 1)
        return omni_fail(OMNI_ERR_CKPT,
                         "%s: impossible metadata (step %" PRId64 ", tokens seen %" PRId64
                         ", world size %" PRId64 ")",
                         p, m->step, m->tokens_seen, m->world_size);
    m->experiment_yaml = c->yaml;
    m->omnimoe_version = c->version;

    if (omni_h5_path_exists(c->file, CKPT_LOAD_PATH)) {
        int64_t dims[3] = {-1, -1, -1}, sdims[1] = {-1};
        void *load = NULL, *steps = NULL;
        st = read_small(c->file, CKPT_LOAD_PATH, OMNI_CKPT_F32, 3, dims, &load, p);
        c->load = load;
        if (!st) {
            sdims[0] = dims[0];
            st = read_small(c->file, CKPT_STEPS_PATH, OMNI_CKPT_I64, 1, sdims, &steps, p);
            c->load_steps = steps;
        }
        if (st)
            return st;
        m->load_rows = dims[0];
        m->load_layers = dims[1];
        m->load_experts = dims[2];
        m->load = c->load;
        m->load_steps = c->load_steps;
    }
    if (omni_h5_path_exists(c->file, CKPT_COUNTERS)) {
        counter_walk w = {m, p, OMNI_OK};
        hid_t g = H5Gopen2(c->file, CKPT_COUNTERS, H5P_DEFAULT);
        if (g < 0)
            return omni_fail(OMNI_ERR_CKPT, "%s: group /%s is unreadable", p, CKPT_COUNTERS);
        herr_t rc = H5Aiterate2(g, H5_INDEX_NAME, H5_ITER_INC, NULL, read_counter, &w);
        H5Gclose(g);
        if (w.st)
            return w.st;
        if (rc < 0)
            return omni_fail(OMNI_ERR_CKPT, "%s: counters in /%s are unreadable", p, CKPT_COUNTERS);
    }
    return OMNI_OK;
}

static void free_handle(omni_ckpt *c)
{
    free(c->yaml);
    free(c->version);
    omni_free(c->load_steps);
    omni_free(c->load);
    free(c);
}

omni_status omni_ckpt_open(MPI_Comm comm, const char *path, omni_ckpt **out)
{
    *out = NULL;
    omni_status st = OMNI_OK;
    omni_ckpt *c = calloc(1, sizeof *c);
    if (!c)
        st = omni_fail(OMNI_ERR_NOMEM, "%s: out of memory", path);
    else if (snprintf(c->path, sizeof c->path, "%s", path) >= (int)sizeof c->path)
        st = omni_fail(OMNI_ERR_CKPT, "%s: path too long", path);
    st = omni_mpi_agree(comm, st);
    if (st) {
        free(c);
        return st;
    }
    c->comm = comm;
    c->file = -1;
    H5E_BEGIN_TRY
    {
        hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
        if (fapl >= 0 && H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL) >= 0)
            c->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
        if (c->file < 0)
            st = open_fault(path);
        if (fapl >= 0)
            H5Pclose(fapl);
        st = omni_mpi_agree(comm, st);
        if (!st)
            st = omni_mpi_agree(comm, read_meta(c));
    }
    H5E_END_TRY;
    if (st) {
        omni_ckpt_close(c);
        return st;
    }
    *out = c;
    return OMNI_OK;
}

void omni_ckpt_close(omni_ckpt *c)
{
    if (!c)
        return;
    if (c->file >= 0) {
        H5E_BEGIN_TRY
        {
            H5Fclose(c->file);
        }
        H5E_END_TRY;
    }
    free_handle(c);
}

omni_status omni_ckpt_read_whole(omni_ckpt *c, const char *name, omni_ckpt_type type, int rank,
                                 int64_t *dims, void **data)
{
    *data = NULL;
    if (rank < 1 || rank > OMNI_CKPT_MAX_RANK || (int)type < 0 || type >= OMNI_CKPT_TYPE_COUNT)
        return omni_fail(OMNI_ERR_INTERNAL, "checkpoint: bad request for %s", name);
    if (!ckpt_path_exists(c->file, name))
        return omni_fail(OMNI_ERR_CKPT, "%s: dataset %s is missing", c->path, name);
    omni_status st = read_small(c->file, name, type, rank, dims, data, c->path);
    if (st) {
        omni_free(*data);
        *data = NULL;
    }
    return st;
}

omni_status omni_ckpt_read_tokenization(omni_ckpt *c, omni_tokenization *t)
{
    omni_status st;
    H5E_BEGIN_TRY
    {
        st = ckpt_read_tokenization(c->file, c->path, c->meta.format_version, t);
    }
    H5E_END_TRY;
    return omni_mpi_agree(c->comm, st);
}

omni_status omni_ckpt_has(omni_ckpt *c, const char *name, bool *has)
{
    H5E_BEGIN_TRY
    {
        *has = omni_h5_path_exists(c->file, name);
    }
    H5E_END_TRY;
    return OMNI_OK;
}

/* Open tensor t and check it against its descriptor. Not collective. */
static omni_status open_checked(omni_ckpt *c, const omni_ckpt_tensor *t, hid_t *dset)
{
    const char *p = c->path;
    char want[128], got[128];
    if (!omni_h5_path_exists(c->file, t->name))
        return omni_fail(OMNI_ERR_CKPT, "%s: tensor %s is missing", p, t->name);
    *dset = H5Dopen2(c->file, t->name, H5P_DEFAULT);
    if (*dset < 0)
        return omni_fail(OMNI_ERR_CKPT, "%s: %s is not a readable dataset", p, t->name);
    omni_status st = OMNI_OK;
    hid_t space = H5Dget_space(*dset), type = H5Dget_type(*dset);
    if (space < 0 || type < 0) {
        st = omni_fail(OMNI_ERR_CKPT, "%s: tensor %s is unreadable", p, t->name);
        goto out_close;
    }
    H5T_class_t cls = H5Tget_class(type);
    size_t size = H5Tget_size(type);
    bool type_ok = size == ckpt_type_size(t->type) &&
                   cls == (t->type == OMNI_CKPT_I64 ? H5T_INTEGER : H5T_FLOAT);
    if (!type_ok) {
        st = omni_fail(OMNI_ERR_CKPT, "%s: tensor %s is a %s of %zu bytes, expected %s", p, t->name,
                       cls == H5T_INTEGER ? "integer"
                       : cls == H5T_FLOAT ? "float"
                                          : "non-number",
                       size, ckpt_type_name(t->type));
        goto out_close;
    }
    int rank = H5Sget_simple_extent_ndims(space);
    hsize_t hd[OMNI_CKPT_MAX_RANK] = {0};
    int64_t fd[OMNI_CKPT_MAX_RANK] = {0};
    bool shape_ok = rank == t->rank && H5Sget_simple_extent_dims(space, hd, NULL) == rank;
    for (int d = 0; shape_ok && d < rank; d++) {
        fd[d] = (int64_t)hd[d];
        shape_ok = fd[d] == t->dims[d];
    }
    if (!shape_ok) {
        ckpt_format_dims(want, sizeof want, t->rank, t->dims);
        if (rank >= 1 && rank <= OMNI_CKPT_MAX_RANK) {
            H5Sget_simple_extent_dims(space, hd, NULL);
            for (int d = 0; d < rank; d++)
                fd[d] = (int64_t)hd[d];
            ckpt_format_dims(got, sizeof got, rank, fd);
        } else {
            snprintf(got, sizeof got, "rank %d", rank);
        }
        st = omni_fail(OMNI_ERR_CKPT, "%s: tensor %s has shape %s, expected %s", p, t->name, got,
                       want);
    }
out_close:
    if (type >= 0)
        H5Tclose(type);
    if (space >= 0)
        H5Sclose(space);
    if (st) {
        H5Dclose(*dset);
        *dset = -1;
    }
    return st;
}

/* The first non-finite value of this rank's rows of t, or -1. */
static int64_t first_nonfinite(const omni_ckpt_tensor *t)
{
    int64_t n = (t->row_hi - t->row_lo) * ckpt_row_elems(t);
    if (t->type == OMNI_CKPT_F32) {
        const float *x = t->data;
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(x[i]))
                return i;
    } else if (t->type == OMNI_CKPT_F64) {
        const double *x = t->data;
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(x[i]))
                return i;
    }
    return -1;
}

omni_status omni_ckpt_read(omni_ckpt *c, const omni_ckpt_tensor *tensors, int n_tensors)
{
    omni_status st = OMNI_OK;
    hid_t *dsets = omni_alloc(n_tensors + 1, sizeof(hid_t), "checkpoint datasets");
    if (!dsets)
        st = OMNI_ERR_NOMEM;
    for (int i = 0; i < n_tensors && !st; i++)
        st = ckpt_check_descriptor(&tensors[i]);
    st = omni_mpi_agree(c->comm, st);
    if (st) {
        omni_free(dsets);
        return st;
    }
    for (int i = 0; i < n_tensors; i++)
        dsets[i] = -1;
    H5E_BEGIN_TRY
    {
        /* Phase 1: everything present and of the right type and shape. */
        for (int i = 0; i < n_tensors && !st; i++)
            st = open_checked(c, &tensors[i], &dsets[i]);
        st = omni_mpi_agree(c->comm, st);
        /* Phase 2: each rank's rows, collectively, then checked against their checksums
         * and to be finite. */
        for (int i = 0; i < n_tensors && !st; i++) {
            const omni_ckpt_tensor *t = &tensors[i];
            omni_h5_sum_kind sum = OMNI_H5_SUM_NONE;
            st = ckpt_transfer(c->comm, dsets[i], t, true, false, c->path, &sum);
            if (!st && sum == OMNI_H5_SUM_NONE && t->row_hi > t->row_lo) {
                if (!c->unchecked++)
                    snprintf(c->first_unchecked, sizeof c->first_unchecked, "%s", t->name);
            }
            int64_t bad = st ? -1 : first_nonfinite(t);
            if (bad >= 0)
                st = omni_fail(OMNI_ERR_CKPT,
                               "%s: tensor %s has a non-finite value at element %" PRId64, c->path,
                               t->name, t->row_lo * ckpt_row_elems(t) + bad);
            st = omni_mpi_agree(c->comm, st);
        }
        for (int i = 0; i < n_tensors; i++)
            if (dsets[i] >= 0)
                H5Dclose(dsets[i]);
    }
    H5E_END_TRY;
    omni_free(dsets);
    if (!st && c->unchecked && !c->warned) {
        c->warned = true;
        omni_log(OMNI_LOG_WARN,
                 "%s: tensor %s%s carries no checksum (written before omnimoe stored "
                 "checksums, or edited and its crc32c attribute removed): read unverified",
                 c->path, c->first_unchecked, c->unchecked > 1 ? " (and others)" : "");
    }
    return st;
}

omni_status omni_ckpt_verify(omni_ckpt *c, int64_t *datasets, int64_t *unchecked,
                             const char **first_unchecked, double *bytes)
{
    int rank, size;
    MPI_Comm_rank(c->comm, &rank);
    MPI_Comm_size(c->comm, &size);
    static omni_h5_verify_report rep;
    omni_status st;
    H5E_BEGIN_TRY
    {
        st = omni_h5_verify(c->file, rank, size, &rep, OMNI_ERR_CKPT, c->path);
    }
    H5E_END_TRY;
    st = omni_mpi_agree(c->comm, st);
    double mine = rep.bytes, all = 0;
    if (!st)
        st = omni_mpi_check(MPI_Allreduce(&mine, &all, 1, MPI_DOUBLE, MPI_SUM, c->comm),
                            "MPI_Allreduce");
    if (st)
        return st;
    *datasets = rep.datasets;
    *unchecked = rep.unchecked;
    *first_unchecked = rep.first_unchecked;
    *bytes = all;
    return OMNI_OK;
}

int64_t omni_ckpt_unchecked(const omni_ckpt *c, const char **first)
{
    if (first)
        *first = c->unchecked ? c->first_unchecked : NULL;
    return c->unchecked;
}

/* ---- parameter counts --------------------------------------------------------- */

typedef struct {
    int64_t total, routed;
} count_walk;

static herr_t count_dataset(hid_t obj, const char *name, const H5O_info_t *info, void *data)
{
    count_walk *w = data;
    if (info->type != H5O_TYPE_DATASET)
        return 0;
    hid_t dset = H5Dopen2(obj, name, H5P_DEFAULT);
    if (dset < 0)
        return -1;
    hid_t space = H5Dget_space(dset);
    hssize_t n = space < 0 ? -1 : H5Sget_simple_extent_npoints(space);
    if (space >= 0)
        H5Sclose(space);
    H5Dclose(dset);
    if (n < 0)
        return -1;
    w->total += (int64_t)n;
    /* `name` is relative to /params: "layers/01/moe/experts/w1". */
    char full[OMNI_PATH_MAX];
    snprintf(full, sizeof full, "/%s", name);
    if (strstr(full, "/moe/experts/"))
        w->routed += (int64_t)n;
    return 0;
}

omni_status omni_ckpt_param_counts(omni_ckpt *c, int64_t *total, double *active)
{
    omni_experiment *x = malloc(sizeof *x);
    omni_status st = x ? OMNI_OK : omni_fail(OMNI_ERR_NOMEM, "out of memory");
    if (!st) {
        st = omni_experiment_parse(x, c->yaml, strlen(c->yaml), c->path, NULL, 0);
        if (st)
            st = omni_fail_context(OMNI_ERR_CKPT, "%s: its experiment text is invalid: ", c->path);
    }
    count_walk w = {0, 0};
    if (!st) {
        H5E_BEGIN_TRY
        {
            if (omni_h5_path_exists(c->file, "params")) {
                hid_t g = H5Gopen2(c->file, "params", H5P_DEFAULT);
                if (g < 0 ||
                    H5Ovisit2(g, H5_INDEX_NAME, H5_ITER_INC, count_dataset, &w, H5O_INFO_BASIC) < 0)
                    st = omni_fail(OMNI_ERR_CKPT, "%s: /params is unreadable", c->path);
                if (g >= 0)
                    H5Gclose(g);
            }
        }
        H5E_END_TRY;
    }
    st = omni_mpi_agree(c->comm, st);
    if (!st) {
        *total = w.total;
        *active = (double)(w.total - w.routed) +
                  (double)w.routed * (double)x->moe.top_k / (double)x->moe.num_experts;
    }
    free(x);
    return st;
}

/* ---- finding the newest complete checkpoint ----------------------------------- */

/* Whether `path` opens (serially) as a checkpoint of our format. Not collective. */
static omni_status quick_check(const char *path)
{
    omni_status st = OMNI_OK;
    H5E_BEGIN_TRY
    {
        hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (f < 0) {
            st = open_fault(path);
        } else {
            int64_t v;
            st = ckpt_check_format(f, path, &v);
            H5Fclose(f);
        }
    }
    H5E_END_TRY;
    return st;
}

static int cmp_desc(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x < y) - (x > y);
}

/* Rank 0's search, see omni_ckpt_find_latest. */
static omni_status find_latest_local(const char *dir, char *path, size_t len)
{
    char latest[OMNI_PATH_MAX + 32], name[256] = "";
    snprintf(latest, sizeof latest, "%s/%s", dir, CKPT_LATEST);
    FILE *f = fopen(latest, "r");
    if (f) {
        if (!fgets(name, sizeof name, f))
            name[0] = '\0';
        fclose(f);
        name[strcspn(name, "\r\n")] = '\0';
        if (ckpt_name_step(name) >= 0) {
            snprintf(path, len, "%s/%s", dir, name);
            if (!quick_check(path))
                return OMNI_OK;
            omni_log(OMNI_LOG_WARN,
                     "%s names %s, which is not usable (%s); looking for the "
                     "newest complete checkpoint",
                     latest, name, omni_error_message());
        } else {
            omni_log(OMNI_LOG_WARN,
                     "%s does not name a checkpoint; looking for the newest "
                     "complete checkpoint",
                     latest);
        }
    }
    DIR *d = opendir(dir);
    if (!d)
        return omni_fail(OMNI_ERR_CKPT, "%s: cannot list checkpoint directory: %s", dir,
                         strerror(errno));
    int64_t *steps = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    omni_status st = OMNI_OK;
    while ((e = readdir(d))) {
        int64_t s = ckpt_name_step(e->d_name);
        if (s < 0)
            continue;
        if (n == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            int64_t *p = realloc(steps, ncap * sizeof *p);
            if (!p) {
                st = omni_fail(OMNI_ERR_NOMEM, "%s: out of memory listing checkpoints", dir);
                break;
            }
            steps = p;
            cap = ncap;
        }
        steps[n++] = s;
    }
    closedir(d);
    if (!st) {
        st = omni_fail(OMNI_ERR_CKPT, "%s: no complete checkpoint", dir);
        if (n)
            qsort(steps, n, sizeof *steps, cmp_desc);
        for (size_t i = 0; i < n; i++) {
            char fname[64];
            omni_ckpt_file_name(steps[i], fname, sizeof fname);
            snprintf(path, len, "%s/%s", dir, fname);
            if (!quick_check(path)) {
                st = OMNI_OK;
                break;
            }
            omni_log(OMNI_LOG_WARN, "skipping %s", omni_error_message());
        }
        if (st)
            omni_fail(OMNI_ERR_CKPT, "%s: no complete checkpoint", dir);
    }
    free(steps);
    return st;
}

omni_status omni_ckpt_find_latest(MPI_Comm comm, const char *dir, char *path, size_t len)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    char buf[OMNI_PATH_MAX + 80] = "";
    omni_status st = OMNI_OK;
    if (rank == 0) {
        st = find_latest_local(dir, buf, sizeof buf);
        if (!st && strlen(buf) >= len)
            st = omni_fail(OMNI_ERR_CKPT, "%s: path too long", buf);
    }
    st = omni_mpi_agree(comm, st);
    if (st)
        return st;
    st = omni_mpi_check(MPI_Bcast(buf, (int)sizeof buf, MPI_CHAR, 0, comm), "MPI_Bcast");
    if (!st)
        snprintf(path, len, "%s", buf);
    return st;
}

omni_status omni_ckpt_resolve(MPI_Comm comm, const char *arg, const char *out_dir, char *path,
                              size_t len)
{
    if (!strcmp(arg, "auto"))
        return omni_ckpt_find_latest(comm, out_dir, path, len);
    int rank;
    MPI_Comm_rank(comm, &rank);
    omni_status st = OMNI_OK;
    struct stat sb;
    if (strlen(arg) >= len)
        st = omni_fail(OMNI_ERR_CKPT, "%s: path too long", arg);
    else if (rank == 0 && stat(arg, &sb) != 0)
        st = omni_fail(OMNI_ERR_CKPT, "%s: cannot open checkpoint: %s", arg, strerror(errno));
    st = omni_mpi_agree(comm, st);
    if (!st)
        snprintf(path, len, "%s", arg);
    return st;
}
