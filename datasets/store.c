/*
 * The sample arrays of a dataset file, format 2 (docs/datasets.md): written as a stream
 * into chunked, extendible HDF5 datasets, and read back in windows — one sample at a
 * time, through a block cache of whole chunks with a fixed budget — so that neither a
 * build nor a training process ever holds a dataset whole.
 *
 * Storage of one split of one task (group /tasks/NAME/train or /val):
 *   offsets       int64  [n + 1]          element offsets of the samples
 *   tokens        uint16 [offsets[n]]     bits 0-14 the id (32767: a patch), bit 15 the
 *                                         loss flag
 *   patch_offsets int64  [n + 1]          (kinds with patches) patch offsets
 *   patches       uint8  [P, patch_dim]   (kinds with patches)
 * Every array is chunked (DS_CHUNK_BYTES per chunk) with HDF5's Fletcher32 checksum on
 * each chunk, which HDF5 checks whenever the chunk is read: a window read checks just
 * the chunks it touches. `tokens` may also be deflated (data build --deflate).
 */
#include "internal.h"

#include <hdf5.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "h5.h"

/* ---- the block cache ---------------------------------------------------------- */

typedef struct {
    int64_t array; /* -1: empty */
    int64_t block;
    int64_t rows; /* rows held (the last chunk of an array may be short) */
    uint8_t *data;
    bool ref; /* CLOCK's second chance */
} cache_slot;

struct ds_cache {
    int64_t n_slots, hand, next_array;
    cache_slot *slots;
    int64_t *table; /* open addressing: slot index + 1, 0 empty; 2 * n_slots entries */
    int64_t table_n;
    uint8_t *mem;
    int64_t hits, misses;
};

omni_status ds_cache_create(ds_cache **out, size_t bytes)
{
    *out = NULL;
    ds_cache *c = calloc(1, sizeof *c);
    if (!c)
        return omni_fail(OMNI_ERR_NOMEM, "cannot allocate the data cache");
    c->n_slots = (int64_t)(bytes / DS_CHUNK_BYTES);
    if (c->n_slots < 8)
        c->n_slots = 8;
    c->table_n = 2 * c->n_slots;
    c->slots = calloc((size_t)c->n_slots, sizeof *c->slots);
    c->table = calloc((size_t)c->table_n, sizeof *c->table);
    c->mem = omni_alloc(c->n_slots, DS_CHUNK_BYTES, "data cache");
    if (!c->slots || !c->table || !c->mem) {
        ds_cache_free(c);
        return omni_fail(OMNI_ERR_NOMEM, "cannot allocate a data cache of %zu bytes", bytes);
    }
    for (int64_t i = 0; i < c->n_slots; i++) {
        c->slots[i].array = -1;
        c->slots[i].data = c->mem + (size_t)i * DS_CHUNK_BYTES;
    }
    *out = c;
    return OMNI_OK;
}

void ds_cache_free(ds_cache *c)
{
    if (!c)
        return;
    free(c->slots);
    free(c->table);
    omni_free(c->mem);
    free(c);
}

void ds_cache_stats(const ds_cache *c, int64_t *hits, int64_t *misses, size_t *bytes)
{
    *hits = c->hits;
    *misses = c->misses;
    *bytes = (size_t)c->n_slots * DS_CHUNK_BYTES;
}

static uint64_t key_hash(int64_t array, int64_t block)
{
    uint64_t h = (uint64_t)array * 0x9e3779b97f4a7c15u ^ (uint64_t)block * 0xc2b2ae3d27d4eb4fu;
    return h ^ (h >> 29);
}

/* The table position holding (array, block), or the empty position where it would go. */
static int64_t table_find(const ds_cache *c, int64_t array, int64_t block)
{
    int64_t p = (int64_t)(key_hash(array, block) % (uint64_t)c->table_n);
    for (;;) {
        int64_t s = c->table[p];
        if (s == 0)
            return p;
        const cache_slot *sl = &c->slots[s - 1];
        if (sl->array == array && sl->block == block)
            return p;
        p = (p + 1) % c->table_n;
    }
}

/* Remove the table entry of slot s (linear probing: re-insert the run after it). */
static void table_remove(ds_cache *c, int64_t s)
{
    cache_slot *sl = &c->slots[s];
    int64_t p = table_find(c, sl->array, sl->block);
    if (c->table[p] == 0)
        return;
    c->table[p] = 0;
    for (int64_t q = (p + 1) % c->table_n; c->table[q]; q = (q + 1) % c->table_n) {
        int64_t t = c->table[q];
        c->table[q] = 0;
        const cache_slot *o = &c->slots[t - 1];
        c->table[table_find(c, o->array, o->block)] = t;
    }
}

/* ---- arrays ------------------------------------------------------------------- */

int64_t ds_chunk_rows(size_t row_bytes)
{
    int64_t r = (int64_t)(DS_CHUNK_BYTES / (row_bytes ? row_bytes : 1));
    return r > 0 ? r : 1;
}

hid_t ds_array_create(hid_t g, const char *name, hid_t type, int rank, int64_t rows,
                      int64_t row_elems, int deflate, bool no_fill)
{
    size_t row_bytes = H5Tget_size(type) * (size_t)row_elems;
    hsize_t dims[2] = {(hsize_t)rows, (hsize_t)row_elems},
            max[2] = {H5S_UNLIMITED, (hsize_t)row_elems};
    hsize_t chunk[2] = {(hsize_t)ds_chunk_rows(row_bytes), (hsize_t)row_elems};
    hid_t sp = H5Screate_simple(rank, dims, max);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    bool ok = sp >= 0 && dcpl >= 0 && H5Pset_chunk(dcpl, rank, chunk) >= 0 &&
              H5Pset_fletcher32(dcpl) >= 0;
    if (ok && no_fill)
        ok = H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) >= 0;
    if (ok && deflate > 0)
        ok = H5Pset_shuffle(dcpl) >= 0 && H5Pset_deflate(dcpl, (unsigned)deflate) >= 0;
    hid_t d = ok ? H5Dcreate2(g, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT) : -1;
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (sp >= 0)
        H5Sclose(sp);
    return d;
}

/* Rows [lo, lo + n) of dataset d (rank 1 or 2, row_elems elements a row) read into or
 * written from buf as mem_type: whether HDF5 did it (the caller says why not). The
 * memory space has the selection's shape: HDF5 then copies rows, where a 1-D memory
 * space for a 2-D selection costs it a callback per element. */
static bool rows_io(hid_t d, int rank, hid_t mem_type, int64_t lo, int64_t n, int64_t row_elems,
                    void *buf, bool write)
{
    hsize_t start[2] = {(hsize_t)lo, 0}, count[2] = {(hsize_t)n, (hsize_t)row_elems};
    hid_t fs = H5Dget_space(d), ms = H5Screate_simple(rank, count, NULL);
    bool ok = fs >= 0 && ms >= 0 &&
              H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0;
    if (ok && write)
        ok = H5Dwrite(d, mem_type, ms, fs, H5P_DEFAULT, buf) >= 0;
    else if (ok)
        ok = H5Dread(d, mem_type, ms, fs, H5P_DEFAULT, buf) >= 0;
    if (fs >= 0)
        H5Sclose(fs);
    if (ms >= 0)
        H5Sclose(ms);
    return ok;
}

/* Block `block` of array a, from the cache or read from the file. */
static omni_status get_block(ds_array *a, int64_t block, const uint8_t **data)
{
    ds_cache *c = a->cache;
    int64_t p = table_find(c, a->id, block);
    if (c->table[p]) {
        cache_slot *sl = &c->slots[c->table[p] - 1];
        sl->ref = true;
        c->hits++;
        *data = sl->data;
        return OMNI_OK;
    }
    c->misses++;
    /* CLOCK: the first slot without a second chance. */
    cache_slot *sl;
    int64_t s;
    for (;;) {
        s = c->hand;
        c->hand = (c->hand + 1) % c->n_slots;
        sl = &c->slots[s];
        if (!sl->ref || sl->array < 0)
            break;
        sl->ref = false;
    }
    if (sl->array >= 0)
        table_remove(c, s);
    sl->array = -1;
    int64_t lo = block * a->chunk_rows;
    int64_t rows = a->rows - lo < a->chunk_rows ? a->rows - lo : a->chunk_rows;
    if (!rows_io(a->d, a->rank, a->mem_type, lo, rows, a->row_elems, sl->data, false)) {
        char why[512];
        omni_h5_reason(why, sizeof why);
        return omni_fail(OMNI_ERR_DATA,
                         "%s: %s: cannot read rows [%" PRId64 ", %" PRId64 ") (%s)%s", a->file,
                         a->name, lo, lo + rows, why,
                         a->sum ? ": a chunk failed its checksum or is unreadable, the file is "
                                  "corrupt"
                                : "");
    }
    sl->array = a->id;
    sl->block = block;
    sl->rows = rows;
    sl->ref = true;
    c->table[table_find(c, a->id, block)] = s + 1;
    *data = sl->data;
    return OMNI_OK;
}

omni_status ds_array_read(ds_array *a, int64_t lo, int64_t hi, void *out)
{
    OMNI_ASSERT(lo >= 0 && lo <= hi && hi <= a->rows);
    size_t rb = a->elem_size * (size_t)a->row_elems;
    uint8_t *dst = out;
    for (int64_t r = lo; r < hi;) {
        int64_t block = r / a->chunk_rows, b0 = block * a->chunk_rows;
        int64_t end = b0 + a->chunk_rows < hi ? b0 + a->chunk_rows : hi;
        const uint8_t *data;
        omni_status st = get_block(a, block, &data);
        if (st)
            return st;
        memcpy(dst, data + (size_t)(r - b0) * rb, (size_t)(end - r) * rb);
        dst += (size_t)(end - r) * rb;
        r = end;
    }
    return OMNI_OK;
}

/* Open array `name` of group g: its type class and size must be those of format 2
 * (elem_size bytes, signed or not), rank 1 or 2 (row_elems columns); with no HDF5 chunk
 * cache of its own (the block cache is the one). */
static omni_status array_open(ds_array *a, hid_t g, const char *where, const char *name,
                              hid_t mem_type, int rank, int64_t row_elems, ds_cache *cache,
                              const char *path)
{
    memset(a, 0, sizeof *a);
    a->d = -1;
    snprintf(a->name, sizeof a->name, "%s%s", where, name);
    a->file = path;
    if (H5Lexists(g, name, H5P_DEFAULT) <= 0)
        return omni_fail(OMNI_ERR_DATA, "%s: missing dataset %s", path, a->name);
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (dapl >= 0)
        H5Pset_chunk_cache(dapl, 0, 0, 1.0);
    a->d = H5Dopen2(g, name, dapl >= 0 ? dapl : H5P_DEFAULT);
    if (dapl >= 0)
        H5Pclose(dapl);
    if (a->d < 0)
        return omni_fail(OMNI_ERR_DATA, "%s: %s is not a dataset", path, a->name);
    omni_status st = OMNI_OK;
    hid_t t = H5Dget_type(a->d), sp = H5Dget_space(a->d), dcpl = H5Dget_create_plist(a->d);
    hsize_t dims[2] = {0, 1};
    size_t esize = H5Tget_size(mem_type);
    bool want_signed = H5Tget_sign(mem_type) == H5T_SGN_2;
    if (H5Tget_class(t) != H5T_INTEGER || H5Tget_size(t) != esize ||
        (H5Tget_sign(t) == H5T_SGN_2) != want_signed) {
        st = omni_fail(OMNI_ERR_DATA,
                       "%s: dataset %s is a %zu-byte %s %s, expected a %zu-byte %s "
                       "integer (format 2)",
                       path, a->name, H5Tget_size(t),
                       H5Tget_sign(t) == H5T_SGN_2 ? "signed" : "unsigned",
                       H5Tget_class(t) == H5T_INTEGER ? "integer" : "non-integer", esize,
                       want_signed ? "signed" : "unsigned");
        goto out;
    }
    if (H5Sget_simple_extent_ndims(sp) != rank) {
        st = omni_fail(OMNI_ERR_DATA, "%s: dataset %s has rank %d, expected %d", path, a->name,
                       H5Sget_simple_extent_ndims(sp), rank);
        goto out;
    }
    H5Sget_simple_extent_dims(sp, dims, NULL);
    if (rank == 2 && dims[1] != (hsize_t)row_elems) {
        st = omni_fail(OMNI_ERR_DATA, "%s: %s rows have %llu values, expected %lld", path, a->name,
                       (unsigned long long)dims[1], (long long)row_elems);
        goto out;
    }
    if (dims[0] > (hsize_t)1 << 48) {
        st = omni_fail(OMNI_ERR_DATA, "%s: dataset %s is implausibly large", path, a->name);
        goto out;
    }
    a->rows = (int64_t)dims[0];
    a->rank = rank;
    a->row_elems = row_elems;
    a->elem_size = esize;
    a->mem_type = mem_type;
    /* Blocks of the cache: DS_CHUNK_BYTES of rows, whatever the file's chunks (omnimoe
     * writes chunks of that size, so that one block is one chunk, read and checked once). */
    a->chunk_rows = ds_chunk_rows(esize * (size_t)row_elems);
    if (esize * (size_t)row_elems > DS_CHUNK_BYTES) {
        st = omni_fail(OMNI_ERR_DATA, "%s: %s rows have %zu bytes, more than omnimoe reads (%d)",
                       path, a->name, esize * (size_t)row_elems, DS_CHUNK_BYTES);
        goto out;
    }
    H5E_BEGIN_TRY
    {
        a->sum = dcpl >= 0 && H5Pget_filter_by_id2(dcpl, H5Z_FILTER_FLETCHER32, NULL, NULL, NULL, 0,
                                                   NULL, NULL) >= 0;
    }
    H5E_END_TRY;
    a->cache = cache;
    a->id = cache ? cache->next_array++ : -1;
out:
    if (dcpl >= 0)
        H5Pclose(dcpl);
    H5Sclose(sp);
    H5Tclose(t);
    if (st) {
        H5Dclose(a->d);
        a->d = -1;
    }
    return st;
}

static void array_close(ds_array *a)
{
    if (a->d > 0)
        H5Dclose(a->d);
    a->d = -1;
}

/* ---- reading ------------------------------------------------------------------ */

omni_status ds_split_open(ds_split_store *s, hid_t g, const char *where, const ds_task *t,
                          ds_cache *cache, const char *path)
{
    memset(s, 0, sizeof *s);
    s->off.d = s->tok.d = s->poff.d = s->patch.d = -1;
    s->t = t;
    snprintf(s->where, sizeof s->where, "%s", where);
    omni_status st;
    if ((st = array_open(&s->off, g, where, "offsets", H5T_NATIVE_INT64, 1, 1, cache, path)) ||
        (st = array_open(&s->tok, g, where, "tokens", H5T_NATIVE_UINT16, 1, 1, cache, path)))
        goto fail;
    if (s->off.rows < 1) {
        st =
            omni_fail(OMNI_ERR_DATA, "%s: %soffsets is empty, expected n + 1 entries", path, where);
        goto fail;
    }
    s->n = s->off.rows - 1;
    int64_t ends[2];
    if ((st = ds_array_read(&s->off, 0, 1, ends)) ||
        (st = ds_array_read(&s->off, s->n, s->n + 1, ends + 1)))
        goto fail;
    if (ends[0] != 0 || ends[1] != s->tok.rows) {
        st = omni_fail(OMNI_ERR_DATA,
                       "%s: %soffsets runs from %lld to %lld, but tokens has %lld entries "
                       "(expected 0 to %lld)",
                       path, where, (long long)ends[0], (long long)ends[1], (long long)s->tok.rows,
                       (long long)s->tok.rows);
        goto fail;
    }
    if (t->patch_dim > 0) {
        if ((st = array_open(&s->poff, g, where, "patch_offsets", H5T_NATIVE_INT64, 1, 1, cache,
                             path)) ||
            (st = array_open(&s->patch, g, where, "patches", H5T_NATIVE_UINT8, 2, t->patch_dim,
                             cache, path)))
            goto fail;
        if (s->poff.rows != s->off.rows) {
            st = omni_fail(OMNI_ERR_DATA,
                           "%s: %spatch_offsets has %lld entries, expected %lld (like offsets)",
                           path, where, (long long)s->poff.rows, (long long)s->off.rows);
            goto fail;
        }
        if ((st = ds_array_read(&s->poff, 0, 1, ends)) ||
            (st = ds_array_read(&s->poff, s->n, s->n + 1, ends + 1)))
            goto fail;
        if (ends[0] != 0 || ends[1] != s->patch.rows) {
            st = omni_fail(OMNI_ERR_DATA,
                           "%s: %spatch_offsets runs from %lld to %lld, expected 0 to %lld (the "
                           "rows of patches)",
                           path, where, (long long)ends[0], (long long)ends[1],
                           (long long)s->patch.rows);
            goto fail;
        }
    }
    return OMNI_OK;
fail:
    ds_split_close(s);
    return st;
}

void ds_split_close(ds_split_store *s)
{
    array_close(&s->off);
    array_close(&s->tok);
    array_close(&s->poff);
    array_close(&s->patch);
}

omni_status ds_split_reopen(ds_split_store *s, hid_t f, const char *path)
{
    ds_array *a[4] = {&s->off, &s->tok, &s->poff, &s->patch};
    for (int k = 0; k < 4; k++) {
        if (!a[k]->file || a[k]->d >= 0)
            continue; /* never opened (no patches), or open */
        hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
        if (dapl >= 0)
            H5Pset_chunk_cache(dapl, 0, 0, 1.0);
        a[k]->d = H5Dopen2(f, a[k]->name, dapl >= 0 ? dapl : H5P_DEFAULT);
        if (dapl >= 0)
            H5Pclose(dapl);
        hsize_t dims[2] = {0, 0};
        hid_t sp = a[k]->d >= 0 ? H5Dget_space(a[k]->d) : -1;
        if (sp >= 0) {
            H5Sget_simple_extent_dims(sp, dims, NULL);
            H5Sclose(sp);
        }
        if (a[k]->d < 0 || (int64_t)dims[0] != a[k]->rows)
            return omni_fail(OMNI_ERR_DATA,
                             "%s: %s is gone or has changed (%llu rows, expected %lld) since the "
                             "file was opened",
                             path, a[k]->name, (unsigned long long)dims[0], (long long)a[k]->rows);
    }
    return OMNI_OK;
}

const char *ds_split_unchecked(const ds_split_store *s)
{
    const ds_array *a[4] = {&s->off, &s->tok, &s->poff, &s->patch};
    for (int k = 0; k < (s->t->patch_dim > 0 ? 4 : 2); k++)
        if (!a[k]->sum)
            return a[k]->name;
    return NULL;
}

static omni_status grow_to(void **p, int64_t *cap, int64_t need, size_t elem)
{
    if (need <= *cap)
        return OMNI_OK;
    int64_t c = *cap > 0 ? *cap : 1024;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, (size_t)c * elem);
    if (!q)
        return omni_fail(OMNI_ERR_NOMEM, "cannot allocate %lld bytes for a sample",
                         (long long)c * (long long)elem);
    *p = q;
    *cap = c;
    return OMNI_OK;
}

void ds_sample_buf_free(ds_sample_buf *b)
{
    free(b->raw);
    ds_pool_free(&b->pool);
    memset(b, 0, sizeof *b);
}

omni_status ds_split_offsets(ds_split_store *s, int64_t lo, int64_t hi, int64_t *out)
{
    return ds_array_read(&s->off, lo, hi, out);
}

omni_status ds_split_sample(ds_split_store *s, int64_t i, ds_sample_buf *b, const char *path)
{
    OMNI_ASSERT(i >= 0 && i < s->n);
    ds_pool *p = &b->pool;
    omni_status st;
    int64_t off[2], poff[2] = {0, 0};
    if ((st = ds_array_read(&s->off, i, i + 2, off)))
        return st;
    if (off[1] < off[0])
        return omni_fail(OMNI_ERR_DATA, "%s: %soffsets decreases at sample %lld (%lld then %lld)",
                         path, s->where, (long long)i, (long long)off[0], (long long)off[1]);
    if (off[0] < 0 || off[1] > s->tok.rows)
        return omni_fail(OMNI_ERR_DATA,
                         "%s: %soffsets[%lld..%lld] = %lld, %lld: outside the %lld entries of "
                         "tokens",
                         path, s->where, (long long)i, (long long)i + 1, (long long)off[0],
                         (long long)off[1], (long long)s->tok.rows);
    int64_t n = off[1] - off[0];
    if (n > DS_SAMPLE_MAX)
        return omni_fail(OMNI_ERR_DATA,
                         "%s: %ssample %lld has %lld elements, more than omnimoe reads (%d)", path,
                         s->where, (long long)i, (long long)n, DS_SAMPLE_MAX);
    if (s->t->patch_dim > 0) {
        if ((st = ds_array_read(&s->poff, i, i + 2, poff)))
            return st;
        if (poff[0] < 0 || poff[1] < poff[0] || poff[1] > s->patch.rows || poff[1] - poff[0] > n)
            return omni_fail(OMNI_ERR_DATA,
                             "%s: %spatch_offsets[%lld..%lld] = %lld, %lld: decreasing, beyond "
                             "the %lld patches, or more patches than elements",
                             path, s->where, (long long)i, (long long)i + 1, (long long)poff[0],
                             (long long)poff[1], (long long)s->patch.rows);
    }
    int64_t np = poff[1] - poff[0];
    int64_t cap_off = p->cap_n, cap_poff = p->cap_n, cap_el = p->cap_el, cap_el2 = p->cap_el;
    if ((st = grow_to((void **)&p->off, &cap_off, 2, sizeof *p->off)) ||
        (st = grow_to((void **)&p->poff, &cap_poff, 2, sizeof *p->poff)) ||
        (st = grow_to((void **)&p->tok, &cap_el, n, sizeof *p->tok)) ||
        (st = grow_to((void **)&p->loss, &cap_el2, n, sizeof *p->loss)) ||
        (st = grow_to((void **)&b->raw, &b->cap_raw, n, sizeof *b->raw)) ||
        (st = grow_to((void **)&p->patch, &p->cap_patch, np * s->t->patch_dim + 1, 1)))
        return st;
    p->cap_n = cap_off < cap_poff ? cap_off : cap_poff;
    p->cap_el = cap_el < cap_el2 ? cap_el : cap_el2;
    if ((st = ds_array_read(&s->tok, off[0], off[1], b->raw)))
        return st;
    for (int64_t j = 0; j < n; j++) {
        uint16_t v = b->raw[j] & DS_TOK_ID;
        p->tok[j] = v == DS_TOK_PATCH ? OMNI_DS_PATCH : (int32_t)v;
        p->loss[j] = (uint8_t)(b->raw[j] >> 15);
    }
    if (np > 0 && (st = ds_array_read(&s->patch, poff[0], poff[1], p->patch)))
        return st;
    p->n = 1;
    p->off[0] = 0;
    p->off[1] = n;
    p->poff[0] = 0;
    p->poff[1] = np;
    p->first = i;
    p->first_el = off[0];
    return ds_check_pool(s->t, p, s->where, path);
}

/* ---- writing ------------------------------------------------------------------ */

/* One array being appended to: rows buffered up to a whole number of chunks. */
typedef struct {
    hid_t d;
    const char *name;
    hid_t mem_type;
    size_t row_bytes;
    int rank;
    int64_t row_elems, chunk_rows;
    int64_t rows;       /* rows in the file */
    uint8_t *buf;       /* rows not yet written */
    int64_t n_buf, cap; /* in rows */
} w_array;

/* One split of one task being written. */
typedef struct {
    hid_t g;
    w_array off, tok, poff, patch;
    int64_t n, n_el, n_patch;
    int32_t patch_dim;
} w_split;

struct ds_writer {
    char path[OMNI_PATH_MAX], tmp[OMNI_PATH_MAX + 32];
    hid_t f;
    int n_tasks;
    w_split s[OMNI_MAX_TASKS][OMNI_SPLIT_COUNT];
    int deflate;
};

static omni_status w_create(w_array *a, hid_t g, const char *name, hid_t type, int rank,
                            int64_t row_elems, int deflate, const char *path)
{
    memset(a, 0, sizeof *a);
    a->name = name;
    a->mem_type = type;
    a->rank = rank;
    a->row_elems = row_elems;
    a->row_bytes = H5Tget_size(type) * (size_t)row_elems;
    a->chunk_rows = ds_chunk_rows(a->row_bytes);
    a->d = ds_array_create(g, name, type, rank, 0, row_elems, deflate, false);
    if (a->d < 0) {
        char why[512];
        omni_h5_reason(why, sizeof why);
        return omni_fail(OMNI_ERR_IO, "%s: cannot create dataset %s (%s)", path, name, why);
    }
    return OMNI_OK;
}

/* Write the buffered rows: whole chunks only, unless `all`. */
static omni_status w_flush(w_array *a, bool all, const char *path)
{
    int64_t n = all ? a->n_buf : a->n_buf / a->chunk_rows * a->chunk_rows;
    if (n == 0)
        return OMNI_OK;
    hsize_t dims[2] = {(hsize_t)(a->rows + n), (hsize_t)a->row_elems};
    if (H5Dset_extent(a->d, dims) < 0 ||
        !rows_io(a->d, a->rank, a->mem_type, a->rows, n, a->row_elems, a->buf, true)) {
        char why[512];
        omni_h5_reason(why, sizeof why);
        return omni_fail(OMNI_ERR_IO, "%s: cannot write dataset %s (%s)", path, a->name, why);
    }
    a->rows += n;
    memmove(a->buf, a->buf + (size_t)n * a->row_bytes, (size_t)(a->n_buf - n) * a->row_bytes);
    a->n_buf -= n;
    return OMNI_OK;
}

/* Append rows; buffer at most DS_WRITE_BUF bytes (rounded to whole chunks) before writing. */
static omni_status w_append(w_array *a, const void *rows, int64_t n, const char *path)
{
    const uint8_t *src = rows;
    while (n > 0) {
        if (a->cap == 0) {
            int64_t cap = (DS_WRITE_BUF / (int64_t)a->row_bytes) / a->chunk_rows * a->chunk_rows;
            a->cap = cap > a->chunk_rows ? cap : a->chunk_rows;
            a->buf = omni_alloc(a->cap, a->row_bytes, a->name);
            if (!a->buf)
                return OMNI_ERR_NOMEM;
        }
        int64_t k = a->cap - a->n_buf < n ? a->cap - a->n_buf : n;
        memcpy(a->buf + (size_t)a->n_buf * a->row_bytes, src, (size_t)k * a->row_bytes);
        a->n_buf += k;
        src += (size_t)k * a->row_bytes;
        n -= k;
        if (a->n_buf == a->cap) {
            omni_status st = w_flush(a, false, path);
            if (st)
                return st;
        }
    }
    return OMNI_OK;
}

static void w_close(w_array *a)
{
    if (a->d > 0)
        H5Dclose(a->d);
    a->d = 0;
    omni_free(a->buf);
    a->buf = NULL;
}

omni_status ds_writer_open(ds_writer **out, const ds_file *df, const char *path, int deflate)
{
    *out = NULL;
    ds_writer *w = calloc(1, sizeof *w);
    if (!w)
        return omni_fail(OMNI_ERR_NOMEM, "cannot allocate the dataset writer");
    snprintf(w->path, sizeof w->path, "%s", path);
    int n = snprintf(w->tmp, sizeof w->tmp, "%s.tmp-%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof w->tmp || strlen(path) >= sizeof w->path) {
        free(w);
        return omni_fail(OMNI_ERR_USAGE, "%s: output path too long", path);
    }
    w->deflate = deflate;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0)
        H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
    w->f = H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl >= 0 ? fapl : H5P_DEFAULT);
    if (fapl >= 0)
        H5Pclose(fapl);
    if (w->f < 0) {
        free(w);
        return omni_fail(OMNI_ERR_IO,
                         "%s: cannot create the file (is the directory there and writable?)", path);
    }
    omni_status st = OMNI_OK;
    hid_t tasks = H5Gcreate2(w->f, "tasks", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (tasks < 0)
        st = omni_fail(OMNI_ERR_IO, "%s: cannot create group /tasks", path);
    static const char *const split_names[OMNI_SPLIT_COUNT] = {"train", "val"};
    for (int i = 0; i < df->n_tasks && !st; i++) {
        const ds_task *t = &df->tasks[i];
        hid_t g = H5Gcreate2(tasks, t->name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0) {
            st = omni_fail(OMNI_ERR_IO, "%s: cannot create group /tasks/%s", path, t->name);
            break;
        }
        for (int s = 0; s < OMNI_SPLIT_COUNT && !st; s++) {
            w_split *ws = &w->s[i][s];
            ws->patch_dim = t->patch_dim;
            ws->g = H5Gcreate2(g, split_names[s], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            if (ws->g < 0) {
                st = omni_fail(OMNI_ERR_IO, "%s: cannot create /tasks/%s/%s", path, t->name,
                               split_names[s]);
                break;
            }
            if ((st = w_create(&ws->off, ws->g, "offsets", H5T_STD_I64LE, 1, 1, 0, path)) ||
                (st = w_create(&ws->tok, ws->g, "tokens", H5T_STD_U16LE, 1, 1, deflate, path)))
                break;
            if (t->patch_dim > 0 &&
                ((st = w_create(&ws->poff, ws->g, "patch_offsets", H5T_STD_I64LE, 1, 1, 0, path)) ||
                 (st = w_create(&ws->patch, ws->g, "patches", H5T_STD_U8LE, 2, t->patch_dim,
                                deflate, path))))
                break;
            int64_t zero = 0;
            if ((st = w_append(&ws->off, &zero, 1, path)))
                break;
            if (t->patch_dim > 0 && (st = w_append(&ws->poff, &zero, 1, path)))
                break;
        }
        H5Gclose(g);
        w->n_tasks++;
    }
    if (tasks >= 0)
        H5Gclose(tasks);
    *out = w;
    if (st) {
        ds_writer_close(w, NULL);
        *out = NULL;
    }
    return st;
}

omni_status ds_writer_add_patches(ds_writer *w, int task, int32_t patch_dim)
{
    omni_status st = OMNI_OK;
    for (int s = 0; s < OMNI_SPLIT_COUNT && !st; s++) {
        w_split *ws = &w->s[task][s];
        if (ws->patch_dim == patch_dim)
            continue;
        if (ws->patch_dim > 0 || ws->n > 0)
            return omni_fail(OMNI_ERR_INTERNAL, "%s: task %d: patches added too late", w->path,
                             task);
        int64_t zero = 0;
        if (!(st = w_create(&ws->poff, ws->g, "patch_offsets", H5T_STD_I64LE, 1, 1, 0, w->path)) &&
            !(st = w_create(&ws->patch, ws->g, "patches", H5T_STD_U8LE, 2, patch_dim, w->deflate,
                            w->path)))
            st = w_append(&ws->poff, &zero, 1, w->path);
        ws->patch_dim = patch_dim;
    }
    return st;
}

omni_status ds_pack_tokens(uint16_t *out, const int32_t *tok, const uint8_t *loss, int64_t k,
                           const char *path)
{
    for (int64_t q = 0; q < k; q++) {
        int32_t v = tok[q];
        if (v != OMNI_DS_PATCH && (v < 0 || v >= DS_TOK_PATCH))
            return omni_fail(OMNI_ERR_INTERNAL, "%s: token %d does not fit format 2", path, v);
        out[q] = (uint16_t)((v == OMNI_DS_PATCH ? DS_TOK_PATCH : (uint16_t)v) |
                            (loss[q] ? DS_TOK_LOSS : 0));
    }
    return OMNI_OK;
}

omni_status ds_writer_append(ds_writer *w, int task, omni_split split, const int32_t *tok,
                             const uint8_t *loss, int64_t n_el, const uint8_t *patch,
                             int64_t n_patch)
{
    w_split *ws = &w->s[task][split];
    uint16_t buf[1024];
    omni_status st = OMNI_OK;
    for (int64_t j = 0; j < n_el && !st; j += 1024) {
        int64_t k = n_el - j < 1024 ? n_el - j : 1024;
        if ((st = ds_pack_tokens(buf, tok + j, loss + j, k, w->path)))
            return st;
        st = w_append(&ws->tok, buf, k, w->path);
    }
    ws->n++;
    ws->n_el += n_el;
    if (!st)
        st = w_append(&ws->off, &ws->n_el, 1, w->path);
    if (!st && ws->patch_dim > 0) {
        ws->n_patch += n_patch;
        if (!(st = w_append(&ws->patch, patch, n_patch, w->path)))
            st = w_append(&ws->poff, &ws->n_patch, 1, w->path);
    }
    return st;
}

omni_status ds_writer_append_pool(ds_writer *w, int task, omni_split split, const ds_pool *p,
                                  int64_t i)
{
    int64_t a = p->off[i], b = p->off[i + 1];
    int32_t pd = w->s[task][split].patch_dim;
    const uint8_t *pp = pd > 0 ? p->patch + p->poff[i] * pd : NULL;
    int64_t np = pd > 0 ? p->poff[i + 1] - p->poff[i] : 0;
    return ds_writer_append(w, task, split, p->tok + a, p->loss + a, b - a, pp, np);
}

void ds_writer_counts(const ds_writer *w, int task, omni_split split, int64_t *n, int64_t *n_el)
{
    *n = w->s[task][split].n;
    *n_el = w->s[task][split].n_el;
}

omni_status ds_writer_close(ds_writer *w, const ds_file *df)
{
    omni_status st = OMNI_OK;
    for (int i = 0; i < w->n_tasks; i++)
        for (int s = 0; s < OMNI_SPLIT_COUNT; s++) {
            w_split *ws = &w->s[i][s];
            w_array *arr[4] = {&ws->off, &ws->tok, &ws->poff, &ws->patch};
            for (int k = 0; k < 4; k++) {
                if (df && !st && arr[k]->d > 0)
                    st = w_flush(arr[k], true, w->path);
                w_close(arr[k]);
            }
            if (ws->g > 0)
                H5Gclose(ws->g);
        }
    if (df && !st)
        st = ds_write_attrs(w->f, df, w->path);
    if (H5Fclose(w->f) < 0 && df && !st)
        st = omni_fail(OMNI_ERR_IO, "%s: cannot close the file", w->path);
    if (df && !st && rename(w->tmp, w->path) != 0)
        st = omni_fail(OMNI_ERR_IO, "%s: cannot rename %s into place", w->path, w->tmp);
    if (!df || st)
        remove(w->tmp);
    free(w);
    return st;
}
