/*
 * checkpoint: reading a checkpoint into a model whose task set changed (`train --resume
 * CKPT --remap-tasks`). A tensor whose descriptor marks a dimension as indexed by token id
 * (vocab_dims; the <task> tokens are the vocabulary's last entries) is read in the
 * checkpoint's size and carried over by task name: the entry of task NAME moves from its
 * token in the checkpoint to its token now; the entries of tasks new to the model keep
 * what the buffers held (a fresh initialisation, zero moments); those of dropped tasks
 * are left behind. Every other tensor is read as it is.
 */
#include "ckpt_private.h"

#include <stdlib.h>
#include <string.h>

/* The one dimension of t indexed by token id, or -1 (none, or more than one: refused). */
static int vocab_dim(const omni_ckpt_tensor *t, bool *several)
{
    int dim = -1, n = 0;
    for (int d = 0; d < t->rank; d++)
        if (t->vocab_dims & (1u << d)) {
            dim = d;
            n++;
        }
    *several = n > 1 || (t->vocab_dims >> t->rank) != 0;
    return dim;
}

/* Where token j now comes from in the checkpoint (-1: nowhere, a new task's token). */
static void vocab_map(const omni_tokenization *then, const omni_tokenization *now, int64_t *map)
{
    for (int64_t j = 0; j < now->tok_task0; j++)
        map[j] = j;
    for (int i = 0; i < now->n_tasks; i++) {
        const omni_tokenization_task *old = omni_tokenization_find(then, now->tasks[i].name);
        map[now->tok_task0 + i] = old ? then->tok_task0 + old->index : -1;
    }
}

omni_status omni_ckpt_read_remapped(omni_ckpt *c, const omni_ckpt_tensor *tensors, int n_tensors,
                                    const omni_tokenization *then, const omni_tokenization *now)
{
    omni_ckpt_tensor *read = omni_alloc(n_tensors + 1, sizeof *read, "checkpoint remap list");
    int *axis = omni_alloc(n_tensors + 1, sizeof *axis, "checkpoint remap axes");
    int64_t *map = omni_alloc(now->vocab, sizeof *map, "vocabulary map");
    omni_status st = read && axis && map ? OMNI_OK : OMNI_ERR_NOMEM;
    for (int i = 0; axis && i < n_tensors; i++)
        axis[i] = -1;
    if (!st) {
        vocab_map(then, now, map);
        memcpy(read, tensors, sizeof *read * (size_t)n_tensors);
    }
    /* The tensors with a vocabulary dimension are read whole, in the checkpoint's size,
     * into buffers of their own. */
    for (int i = 0; i < n_tensors && !st; i++) {
        omni_ckpt_tensor *t = &read[i];
        bool several;
        axis[i] = vocab_dim(t, &several);
        t->data = NULL;
        if (axis[i] < 0 && !several) {
            t->data = tensors[i].data;
            continue;
        }
        if (several || t->row_lo != 0 || t->row_hi != t->dims[0] ||
            t->dims[axis[i]] != now->vocab) {
            st = omni_fail(OMNI_ERR_INTERNAL,
                           "checkpoint remap: tensor %s is not whole, or has not exactly one "
                           "dimension of the vocabulary's size %lld",
                           t->name, (long long)now->vocab);
            break;
        }
        t->dims[axis[i]] = then->vocab;
        t->row_hi = t->dims[0];
        if (!(t->data = omni_alloc(ckpt_elems(t), ckpt_type_size(t->type), t->name)))
            st = OMNI_ERR_NOMEM;
    }
    st = omni_mpi_agree(c->comm, st);
    if (!st)
        st = omni_ckpt_read(c, read, n_tensors);
    for (int i = 0; i < n_tensors && !st; i++) {
        if (axis[i] < 0)
            continue;
        const omni_ckpt_tensor *src = &read[i], *dst = &tensors[i];
        size_t elem = ckpt_type_size(dst->type);
        int64_t outer = 1, inner = 1;
        for (int d = 0; d < axis[i]; d++)
            outer *= dst->dims[d];
        for (int d = axis[i] + 1; d < dst->rank; d++)
            inner *= dst->dims[d];
        int64_t n_now = dst->dims[axis[i]], n_then = src->dims[axis[i]];
        for (int64_t o = 0; o < outer; o++)
            for (int64_t j = 0; j < n_now; j++)
                if (map[j] >= 0)
                    memcpy((char *)dst->data + (size_t)((o * n_now + j) * inner) * elem,
                           (const char *)src->data + (size_t)((o * n_then + map[j]) * inner) * elem,
                           (size_t)inner * elem);
    }
    for (int i = 0; read && axis && i < n_tensors; i++)
        if (axis[i] >= 0)
            omni_free(read[i].data);
    omni_free(map);
    omni_free(axis);
    omni_free(read);
    return st;
}
