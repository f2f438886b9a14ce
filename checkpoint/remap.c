/*
 * checkpoint: reading a checkpoint into a model whose task set changed (`train --resume
 * CKPT --remap-tasks`). A tensor with an axis of tasks — one named `vocab` (the <task>
 * tokens are its last entries) or `task` in its "meaning" — is read in the checkpoint's
 * size and carried over by task name: the entry of task NAME moves from its index in the
 * checkpoint to its index now; the entries of tasks new to the model keep what the
 * buffers held (a fresh initialisation, zero moments); those of dropped tasks are left
 * behind. Every other tensor is read as it is.
 */
#include "ckpt_private.h"

#include <stdlib.h>
#include <string.h>

/* The axis of a meaning "[a, b, c]: ..." called `name`, or -1. */
static int named_axis(const char *meaning, const char *name)
{
    if (!meaning || meaning[0] != '[')
        return -1;
    size_t n = strlen(name);
    const char *p = meaning + 1;
    for (int axis = 0; *p && *p != ']'; axis++) {
        size_t len = strcspn(p, ",]");
        if (len == n && !strncmp(p, name, n))
            return axis;
        p += len;
        if (*p == ',')
            p++;
        while (*p == ' ')
            p++;
    }
    return -1;
}

/* Where entry j of an axis now comes from in the checkpoint (-1: nowhere, a new task). */
static void axis_map(const omni_tokenization *then, const omni_tokenization *now, bool vocab,
                     int64_t *map)
{
    int64_t base = vocab ? now->tok_task0 : 0;
    for (int64_t j = 0; j < base; j++)
        map[j] = j;
    for (int i = 0; i < now->n_tasks; i++) {
        const omni_tokenization_task *old = omni_tokenization_find(then, now->tasks[i].name);
        map[base + i] = old ? base + old->index : -1;
    }
}

omni_status omni_ckpt_read_remapped(omni_ckpt *c, const omni_ckpt_tensor *tensors, int n_tensors,
                                    const omni_tokenization *then, const omni_tokenization *now)
{
    omni_ckpt_tensor *read = omni_alloc(n_tensors + 1, sizeof *read, "checkpoint remap list");
    int *axis = omni_alloc(n_tensors + 1, sizeof *axis, "checkpoint remap axes");
    int64_t *map[2] = {omni_alloc(now->vocab, sizeof(int64_t), "vocabulary map"),
                       omni_alloc(now->n_tasks, sizeof(int64_t), "task map")};
    omni_status st = read && axis && map[0] && map[1] ? OMNI_OK : OMNI_ERR_NOMEM;
    for (int i = 0; axis && i < n_tensors; i++)
        axis[i] = -1;
    if (!st) {
        axis_map(then, now, true, map[0]);
        axis_map(then, now, false, map[1]);
        memcpy(read, tensors, sizeof *read * (size_t)n_tensors);
    }
    /* The tensors with a task axis are read whole, in the checkpoint's size, into
     * buffers of their own. */
    for (int i = 0; i < n_tensors && !st; i++) {
        omni_ckpt_tensor *t = &read[i];
        int v = named_axis(t->meaning, "vocab"), k = named_axis(t->meaning, "task");
        axis[i] = v >= 0 ? v : k;
        t->data = NULL;
        if (axis[i] < 0) {
            t->data = tensors[i].data;
            continue;
        }
        if (t->row_lo != 0 || t->row_hi != t->dims[0] ||
            t->dims[axis[i]] != (v >= 0 ? now->vocab : now->n_tasks)) {
            st = omni_fail(OMNI_ERR_INTERNAL,
                           "checkpoint remap: tensor %s is not whole or its %s axis is not "
                           "the task table's",
                           t->name, v >= 0 ? "vocab" : "task");
            break;
        }
        t->dims[axis[i]] = v >= 0 ? then->vocab : then->n_tasks;
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
        const int64_t *m = map[named_axis(dst->meaning, "vocab") >= 0 ? 0 : 1];
        size_t elem = ckpt_type_size(dst->type);
        int64_t outer = 1, inner = 1;
        for (int d = 0; d < axis[i]; d++)
            outer *= dst->dims[d];
        for (int d = axis[i] + 1; d < dst->rank; d++)
            inner *= dst->dims[d];
        int64_t n_now = dst->dims[axis[i]], n_then = src->dims[axis[i]];
        for (int64_t o = 0; o < outer; o++)
            for (int64_t j = 0; j < n_now; j++)
                if (m[j] >= 0)
                    memcpy((char *)dst->data + (size_t)((o * n_now + j) * inner) * elem,
                           (const char *)src->data + (size_t)((o * n_then + m[j]) * inner) * elem,
                           (size_t)inner * elem);
    }
    for (int i = 0; read && axis && i < n_tensors; i++)
        if (axis[i] >= 0)
            omni_free(read[i].data);
    omni_free(map[0]);
    omni_free(map[1]);
    omni_free(axis);
    omni_free(read);
    return st;
}
