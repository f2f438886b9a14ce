/* Checked, aligned, zeroed allocation, and the small file-system helpers of base.h. */
#include "base.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

bool omni_mul_size(int64_t n, size_t size, size_t *bytes)
{
    if (n < 0)
        return false;
    if (size != 0 && (uint64_t)n > SIZE_MAX / size)
        return false;
    *bytes = (size_t)n * size;
    return true;
}

void *omni_alloc(int64_t n, size_t size, const char *what)
{
    size_t bytes;
    if (!omni_mul_size(n, size, &bytes)) {
        omni_fail(OMNI_ERR_NOMEM, "%s: size %lld x %zu bytes overflows", what, (long long)n, size);
        return NULL;
    }
    /* aligned_alloc wants a multiple of the alignment, and never 0 bytes. */
    size_t rounded = (bytes + OMNI_ALIGN - 1) / OMNI_ALIGN * OMNI_ALIGN;
    if (rounded < bytes) {
        omni_fail(OMNI_ERR_NOMEM, "%s: %zu bytes overflows", what, bytes);
        return NULL;
    }
    if (rounded == 0)
        rounded = OMNI_ALIGN;
    void *p = aligned_alloc(OMNI_ALIGN, rounded);
    if (!p) {
        omni_fail(OMNI_ERR_NOMEM, "%s: cannot allocate %zu bytes", what, rounded);
        return NULL;
    }
    memset(p, 0, rounded);
    return p;
}

void omni_free(void *p)
{
    free(p);
}

void *omni_alloc_in(omni_alloc_list *l, int64_t n, size_t size, const char *what)
{
    if (l->n == l->cap) {
        int64_t cap = l->cap ? 2 * l->cap : 32;
        void **blocks = realloc(l->blocks, (size_t)cap * sizeof *blocks);
        if (!blocks) {
            omni_fail(OMNI_ERR_NOMEM, "%s: cannot grow the buffer list", what);
            l->failed = true;
            return NULL;
        }
        l->blocks = blocks;
        l->cap = cap;
    }
    void *p = omni_alloc(n, size, what);
    if (!p) {
        l->failed = true;
        return NULL;
    }
    l->blocks[l->n++] = p;
    return p;
}

void omni_alloc_list_free(omni_alloc_list *l)
{
    for (int64_t i = 0; i < l->n; i++)
        omni_free(l->blocks[i]);
    free(l->blocks);
    memset(l, 0, sizeof *l);
}

omni_status omni_read_file(const char *path, char **bytes, size_t *len)
{
    omni_status st = OMNI_OK;
    *bytes = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return omni_fail(OMNI_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        st = omni_fail(OMNI_ERR_NOMEM, "%s: out of memory", path);
        goto out_close;
    }
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
            if (!nb) {
                st = omni_fail(OMNI_ERR_NOMEM, "%s: file too large to read", path);
                goto out_free;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) {
                st = omni_fail(OMNI_ERR_IO, "%s: read failed: %s", path, strerror(errno));
                goto out_free;
            }
            break;
        }
    }
    buf[n] = '\0';
    *bytes = buf;
    *len = n;
    goto out_close;
out_free:
    free(buf);
out_close:
    fclose(f);
    return st;
}

omni_status omni_make_dirs(const char *path)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return omni_fail(OMNI_ERR_IO, "%s: directory name too long", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return omni_fail(OMNI_ERR_IO, "%s: cannot create directory: %s", buf,
                                 strerror(errno));
            if (c == '\0')
                break;
            *p = c;
        }
    }
    return OMNI_OK;
}

bool omni_valid_name(const char *s)
{
    if (!*s)
        return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
            return false;
    return true;
}
