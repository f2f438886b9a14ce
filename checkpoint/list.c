/*
 * checkpoint: the tensors a checkpoint holds, as descriptors (name, type, shape, meaning)
 * read from the file, for tools that rewrite a checkpoint (`omnimoe ckpt extract`)
 * without knowing the model that wrote it.
 */
#include "ckpt_private.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    omni_ckpt *c;
    const char *root;
    omni_ckpt_tensor *t;
    int n, cap;
    omni_status st;
} list_walk;

/* The element type of dataset d (f32, f64 or i64), or -1. */
static int dataset_type(hid_t d)
{
    hid_t type = H5Dget_type(d);
    if (type < 0)
        return -1;
    H5T_class_t cls = H5Tget_class(type);
    size_t size = H5Tget_size(type);
    H5Tclose(type);
    if (cls == H5T_FLOAT && size == 4)
        return OMNI_CKPT_F32;
    if (cls == H5T_FLOAT && size == 8)
        return OMNI_CKPT_F64;
    if (cls == H5T_INTEGER && size == 8)
        return OMNI_CKPT_I64;
    return -1;
}

static herr_t add_dataset(hid_t loc, const char *name, const H5O_info_t *info, void *arg)
{
    list_walk *w = arg;
    if (info->type != H5O_TYPE_DATASET)
        return 0;
    char full[OMNI_PATH_MAX];
    snprintf(full, sizeof full, "%s/%s", w->root, name);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 64;
        omni_ckpt_tensor *t = realloc(w->t, (size_t)cap * sizeof *t);
        if (!t) {
            w->st = omni_fail(OMNI_ERR_NOMEM, "out of memory listing %s", w->c->path);
            return -1;
        }
        w->t = t, w->cap = cap;
    }
    omni_ckpt_tensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    hid_t space = d < 0 ? -1 : H5Dget_space(d);
    int rank = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
    hsize_t dims[OMNI_CKPT_MAX_RANK];
    int type = d < 0 ? -1 : dataset_type(d);
    if (rank < 1 || rank > OMNI_CKPT_MAX_RANK || type < 0 ||
        H5Sget_simple_extent_dims(space, dims, NULL) < 0) {
        w->st = omni_fail(OMNI_ERR_CKPT,
                          "%s: dataset /%s is not a tensor of 1 to %d dimensions of f32, f64 or "
                          "i64",
                          w->c->path, full, OMNI_CKPT_MAX_RANK);
    } else {
        t->rank = rank;
        t->type = (omni_ckpt_type)type;
        for (int i = 0; i < rank; i++)
            t->dims[i] = (int64_t)dims[i];
        t->row_hi = t->dims[0];
        char *meaning = NULL;
        if (H5Aexists(d, "meaning") > 0)
            w->st = omni_h5_attr_read_str(d, "meaning", 4096, &meaning, OMNI_ERR_CKPT, w->c->path);
        t->meaning = meaning;
        t->name = strdup(full);
        if (!w->st && !t->name)
            w->st = omni_fail(OMNI_ERR_NOMEM, "out of memory listing %s", w->c->path);
        w->n++; /* freed with the list even on failure */
    }
    if (space >= 0)
        H5Sclose(space);
    if (d >= 0)
        H5Dclose(d);
    return w->st ? -1 : 0;
}

omni_status omni_ckpt_list(omni_ckpt *c, const char *group, omni_ckpt_tensor **tensors, int *n)
{
    list_walk w = {.c = c, .root = group};
    *tensors = NULL;
    *n = 0;
    H5E_BEGIN_TRY
    {
        if (omni_h5_path_exists(c->file, group)) {
            hid_t g = H5Gopen2(c->file, group, H5P_DEFAULT);
            if (g < 0 ||
                H5Ovisit2(g, H5_INDEX_NAME, H5_ITER_INC, add_dataset, &w, H5O_INFO_BASIC) < 0) {
                if (!w.st)
                    w.st = omni_fail(OMNI_ERR_CKPT, "%s: /%s is unreadable", c->path, group);
            }
            if (g >= 0)
                H5Gclose(g);
        }
    }
    H5E_END_TRY;
    if (w.st) {
        omni_ckpt_list_free(w.t, w.n);
        return w.st;
    }
    *tensors = w.t;
    *n = w.n;
    return OMNI_OK;
}

void omni_ckpt_list_free(omni_ckpt_tensor *tensors, int n)
{
    for (int i = 0; tensors && i < n; i++) {
        free((char *)tensors[i].name);
        free((char *)tensors[i].meaning);
    }
    free(tensors);
}
