/* tensor: the descriptor table, initialisation rules and gradient-bucket ranges. */
#include "tensor.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

omni_tensor *omni_tensor_table_add(omni_tensor_table *tab, const omni_tensor *proto,
                                   const char *fmt, ...)
{
    if (tab->n == tab->cap) {
        int64_t cap = tab->cap ? 2 * tab->cap : 64;
        omni_tensor *t = omni_alloc(cap, sizeof *t, "tensor table");
        char **names = omni_alloc(cap, sizeof *names, "tensor table");
        if (!t || !names) {
            omni_free(t);
            omni_free(names);
            return NULL;
        }
        if (tab->n) {
            memcpy(t, tab->t, (size_t)tab->n * sizeof *t);
            memcpy(names, tab->names, (size_t)tab->n * sizeof *names);
        }
        omni_free(tab->t);
        omni_free(tab->names);
        tab->t = t;
        tab->names = names;
        tab->cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *name = len < 0 ? NULL : omni_alloc(len + 1, 1, "tensor name");
    if (!name)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(name, (size_t)len + 1, fmt, ap);
    va_end(ap);
    omni_tensor *t = &tab->t[tab->n];
    *t = *proto;
    t->name = tab->names[tab->n] = name;
    tab->n++;
    return t;
}

void omni_tensor_table_free(omni_tensor_table *tab)
{
    for (int64_t i = 0; i < tab->n; i++)
        omni_free(tab->names[i]);
    omni_free(tab->names);
    omni_free(tab->t);
    memset(tab, 0, sizeof *tab);
}

int64_t omni_tensor_table_find(const omni_tensor_table *tab, const char *name)
{
    for (int64_t i = 0; i < tab->n; i++)
        if (!strcmp(tab->t[i].name, name))
            return i;
    return -1;
}

int64_t omni_tensor_row_elems(const omni_tensor *t)
{
    int64_t n = 1;
    for (int i = 1; i < t->rank; i++)
        n *= t->dims[i];
    return n;
}

void omni_tensor_init(const omni_tensor *t, uint64_t seed, int64_t n_layers)
{
    float *p = t->data;
    switch (t->init) {
    case OMNI_INIT_NORMAL:
    case OMNI_INIT_RESIDUAL: {
        float std = t->init == OMNI_INIT_RESIDUAL ? 0.02f / sqrtf(2.0f * (float)n_layers) : 0.02f;
        omni_rng r;
        if (!t->per_expert) {
            omni_rng_init(&r, seed, t->name, 0);
            omni_rng_fill_normal(&r, 0, t->numel, 0.0f, std, p);
            break;
        }
        int64_t per = omni_tensor_row_elems(t);
        for (int64_t e = t->row_lo; e < t->row_hi; e++) {
            omni_rng_init(&r, seed, t->name, (uint64_t)e);
            omni_rng_fill_normal(&r, 0, per, 0.0f, std, p + (e - t->row_lo) * per);
        }
        break;
    }
    case OMNI_INIT_ONES:
        for (int64_t j = 0; j < t->numel; j++)
            p[j] = 1.0f;
        break;
    default:
        memset(p, 0, (size_t)t->numel * sizeof(float));
        break;
    }
}

void omni_tensor_table_group_range(const omni_tensor_table *tab, int64_t group, int64_t *first,
                                   int64_t *count)
{
    int64_t lo = -1, hi = -1;
    for (int64_t i = 0; i < tab->n; i++) {
        const omni_tensor *t = &tab->t[i];
        if (!t->trainable || t->sharded || t->group != group)
            continue;
        if (lo < 0 || t->offset < lo)
            lo = t->offset;
        if (t->offset + t->numel > hi)
            hi = t->offset + t->numel;
    }
    *first = lo < 0 ? 0 : lo;
    *count = lo < 0 ? 0 : hi - lo;
}
