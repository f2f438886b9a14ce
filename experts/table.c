/*
 * experts: the tensor table of the MoE layers, built where the tensors are made (the
 * registry of docs/design.md §7): each parameter's and bias's descriptor and the views
 * that point into the flat buffers of moe.c.
 */
#include "moe_private.h"

#include <stdio.h>
#include <string.h>

/*
 * Add one tensor of MoE layer i: its descriptor (name "params/layers/<block>/moe/" + part,
 * or "state/..." for state that does not train), the layer's view fields that point at its
 * values and (trainable) its gradients, and its place in the flat buffers at *off. A
 * failure is kept in m->layout_failed, checked once after the table.
 */
static void add(omni_moe *m, int64_t i, const char *part, const omni_tensor *proto, float **view,
                float **grad_view, int64_t *off)
{
    omni_tensor d = *proto;
    d.group = m->layers[i].block;
    d.row_hi = d.row_hi ? d.row_hi : d.dims[0];
    d.numel = (d.row_hi - d.row_lo) * omni_tensor_row_elems(&d);
    d.offset = d.trainable ? *off : -1;
    const char *root = d.trainable ? "params" : "state";
    omni_tensor *t = omni_tensor_table_add(&m->tensors, &d, "%s/layers/%02lld/moe/%s", root,
                                           (long long)d.group, part);
    if (!t) {
        m->layout_failed = true;
        return;
    }
    m->slots[m->tensors.n - 1] = (moe_slot){view, grad_view};
    if (d.trainable)
        *off += d.numel;
}

/*
 * Add the SwiGLU triple w1, w3, w2 of MoE layer i: of the routed experts (sharded by
 * expert, this rank's rows lo..hi of n) or of the shared experts (replicated, n of them).
 */
static void add_swiglu(omni_moe *m, int64_t i, bool routed, int64_t n, int64_t lo, int64_t hi,
                       float **views[3], float **grad_views[3], int64_t *off)
{
    static const char *const part[2][3] = {{"shared/w1", "shared/w3", "shared/w2"},
                                           {"experts/w1", "experts/w3", "experts/w2"}};
    static const char *const meaning[2][3] = {
        {"[shared, d_model, expert_ff]: SwiGLU gate of each shared expert",
         "[shared, d_model, expert_ff]: SwiGLU up of each shared expert",
         "[shared, expert_ff, d_model]: SwiGLU down of each shared expert"},
        {"[expert, d_model, expert_ff]: SwiGLU gate of each expert",
         "[expert, d_model, expert_ff]: SwiGLU up of each expert",
         "[expert, expert_ff, d_model]: SwiGLU down of each expert"}};
    for (int j = 0; j < 3; j++) {
        const bool down = j == 2;
        add(m, i, part[routed][j],
            &(omni_tensor){.rank = 3,
                           .dims = {n, down ? m->ff : m->d, down ? m->d : m->ff},
                           .row_lo = lo,
                           .row_hi = hi,
                           .trainable = true,
                           .decay = true,
                           .per_expert = true,
                           .sharded = routed,
                           .expert_dims = routed ? 1u << 0 : 0,
                           .init = down ? OMNI_INIT_RESIDUAL : OMNI_INIT_NORMAL,
                           .meaning = meaning[routed][j]},
            views[j], grad_views[j], off);
    }
}

/* The tensor table: replicated tensors of every layer (router, shared experts), then this
 * rank's routed experts, then the balancing biases (state). */
omni_status moe_build_table(omni_moe *m)
{
    const int64_t d = m->d, E = m->E, S = m->S;
    int64_t off = 0;
    m->slots = omni_alloc_in(&m->mem, max64(1, 9 * m->n_moe), sizeof *m->slots, "moe tensors");
    if (!m->slots)
        return OMNI_ERR_NOMEM;
    for (int64_t i = 0; i < m->n_moe; i++) {
        moe_layer *L = &m->layers[i];
        add(m, i, "router/w",
            &(omni_tensor){.rank = 2,
                           .dims = {d, E},
                           .trainable = true,
                           .decay = true,
                           .expert_dims = 1u << 1,
                           .meaning = "[d_model, num_experts]: router"},
            &L->wr, &L->dwr, &off);
        if (m->task_router)
            add(m, i, "router/task",
                &(omni_tensor){.rank = 2,
                               .dims = {m->n_tasks, d},
                               .trainable = true,
                               .init = OMNI_INIT_UNIT,
                               .task_dims = 1u << 0,
                               .meaning = "[task, d_model]: the task embedding that the router "
                                          "sees (moe.router: task), one row per task of the "
                                          "task table"},
                &L->temb, &L->dtemb, &off);
        if (S > 0)
            add_swiglu(m, i, false, S, 0, 0, (float **[]){&L->sw1, &L->sw3, &L->sw2},
                       (float **[]){&L->dsw1, &L->dsw3, &L->dsw2}, &off);
    }
    m->n_dense = off;
    const int64_t lo = m->e_first, hi = m->e_first + m->e_count;
    for (int64_t i = 0; i < m->n_moe; i++) {
        moe_layer *L = &m->layers[i];
        add_swiglu(m, i, true, E, lo, hi, (float **[]){&L->w1, &L->w3, &L->w2},
                   (float **[]){&L->dw1, &L->dw3, &L->dw2}, &off);
    }
    m->n_params = off;
    for (int64_t i = 0; i < m->n_moe; i++)
        add(m, i, "router/bias",
            &(omni_tensor){.rank = 1,
                           .dims = {E},
                           .init = OMNI_INIT_ZEROS,
                           .expert_dims = 1u << 0,
                           .meaning = "[num_experts]: auxiliary-loss-free balancing bias"},
            &m->layers[i].bias, NULL, &off);
    return m->layout_failed ? OMNI_ERR_NOMEM : OMNI_OK;
}

/* Point every tensor's data and the layers' views at the buffers: trainable tensors at
 * their offset in params (and grads), the biases one after another in state. */
void moe_bind_views(omni_moe *m)
{
    int64_t state = 0;
    for (int64_t i = 0; i < m->tensors.n; i++) {
        omni_tensor *t = &m->tensors.t[i];
        float *p = t->trainable ? m->params + t->offset : m->state + state;
        if (!t->trainable)
            state += t->numel;
        t->data = *m->slots[i].view = p;
        if (m->slots[i].grad_view)
            *m->slots[i].grad_view = m->grads + t->offset;
    }
}
