/*
 * experts: what moe.c and table.c share about omni_moe (not a public header): the layer
 * and the object, the tensor table's construction and binding.
 */
#ifndef OMNI_EXPERTS_MOE_PRIVATE_H
#define OMNI_EXPERTS_MOE_PRIVATE_H

#include "experts.h"

typedef struct {
    int64_t block; /* the model block this layer replaces the FFN of */
    /* parameters and gradients (views into the flat buffers) */
    float *wr, *dwr;        /* [d, E] router */
    float *sw1, *sw3, *sw2; /* [S, d, ff], [S, d, ff], [S, ff, d] shared experts */
    float *dsw1, *dsw3, *dsw2;
    float *w1, *w3, *w2; /* [E_local, d, ff], ..., [E_local, ff, d] */
    float *dw1, *dw3, *dw2;
    float *bias;         /* [E] balancing bias (state) */
    float *temb, *dtemb; /* [n_tasks, d] task embeddings (moe.router: task) */
    /* the cache of the last forward: na routed rows of n positions */
    int64_t n, na;
    int64_t *tok; /* [na] position of routed row i (padding is not routed) */
    bool jittered;
    int64_t step, token_offset;
    float *x;               /* [n, d] layer input */
    float *xr;              /* [n, d] jittered router input (jitter > 0 only) */
    float *logits, *probs;  /* [n, E] */
    float *lse;             /* [n] */
    int32_t *expert, *slot; /* [n, k] */
    float *prob, *gate;     /* [n, k] */
    int64_t *kept;          /* [E] */
    omni_dispatch_plan plan;
    float *xe, *h1, *h3;   /* [R, d], [R, ff], [R, ff] expert-major rows on this rank */
    float *ret;            /* [n k, d] expert outputs back in send order */
    float *sh1, *sh3;      /* [S, n, ff] shared experts */
    omni_router_sums sums; /* global after forward */
    double aux, z;
    /* task routing (moe.router: task): the router's rows of the tasks, and this worker's
     * tokens of each task in the last forward */
    float *t_logits, *t_probs;    /* [n_tasks, E] */
    float *t_lse;                 /* [n_tasks] */
    int32_t *t_expert;            /* [n_tasks, k] */
    float *t_prob, *t_gate;       /* [n_tasks, k] */
    double *t_local;              /* [n_tasks] */
    int32_t *rtask;               /* [n] task of routed row i */
    int32_t *rmod;                /* [n] modality of routed row i (entropy losses on) */
    double ent_local, ent_global; /* LIMoE's losses of the last forward, unscaled */
    double *route; /* [route_len] this worker's task then modality tables (training only) */
    omni_route_table by_task, by_mod;
    /* shadow experts (parallel.shadow) of the last forward: the experts shared [E], how
     * many, and the copies this rank computed (experts it does not own, ascending): their
     * weights [n_copy, 3, d * ff] (W1, W3, W2), rows [copy_rows, d] and activations
     * [copy_rows, ff], kept for backward */
    bool *shadow;
    int64_t n_shadow, n_copy;
    int64_t *copy_e; /* [max_shadow] */
    float *cw, *cx, *ch1, *ch3;
    /* micro-batches: the decisions of the last omni_moe_route, for its route_na rows */
    bool forced;                    /* forwards take them (until omni_moe_set_step) */
    int64_t route_na;               /* rows routed by it */
    int32_t *rec_expert, *rec_slot; /* [max_tokens, kr] its choices; slot < 0: dropped */
} moe_layer;

/* The layer fields that point at a tensor's values and gradients (NULL: none). */
typedef struct {
    float **view, **grad_view;
} moe_slot;

struct omni_moe {
    omni_experiment x;
    omni_moe_comm comm;
    int64_t d, E, k, ff, S, n_blocks, n_moe, max_tokens, max_recv, e_first, e_count;
    int64_t *block_to_moe; /* [n_blocks] */
    moe_layer *layers;     /* [n_moe] */
    float *params, *grads, *adam_m, *adam_v;
    int64_t n_params, n_dense;
    float *state;              /* [n_moe, E] biases */
    omni_tensor_table tensors; /* every parameter and bias, described where it is made */
    moe_slot *slots;           /* [tensors.n] */
    bool layout_failed;
    /* scratch shared by the layers */
    float *send;             /* [n k, d] */
    float *recv, *ye;        /* [R, d] */
    float *act;              /* [max(R, n), ff] */
    float *dprobs, *dlogits; /* [n, E] */
    float *dgate;            /* [n k] */
    float *dxr;              /* [n, d] */
    float *yc, *dxc;         /* [n, d] compact outputs or output gradients; input gradients */
    int32_t *task_c;         /* [n] task of routed row i */
    int32_t *mod_c;          /* [n] modality of routed row i */
    int8_t *task_mod;        /* [n_tasks] modality of the token positions of each task */
    int64_t n_tasks, route_len;
    bool task_router;   /* moe.router: task */
    bool expert_choice; /* moe.router: expert_choice */
    int64_t kr; /* routing width: choices per token in expert/slot/gate (k; E for expert choice) */
    /* expert choice: counts [6, N] (na sent, na of every rank, score counts and displacements
     * sent and received), scores sent [n * max(E, N)] and received [E_local * n N], one
     * expert's scores and choice over the global batch [n N], the choice [n, E], heap [n N] */
    int64_t *ec_cnt;
    float *ec_send, *ec_recv, *ec_col, *ec_flag, *ec_chosen;
    int64_t *ec_heap;
    bool entropy;                 /* moe.entropy on */
    double *ent_scratch;          /* [E] */
    double *dprobs_t;             /* [n_tasks, E] task routing: dprobs summed over a task's rows */
    float *dprobs_tf, *dlogits_t; /* [n_tasks, E] */
    float *demb;                  /* [n_tasks, d] */
    int64_t *assign_scratch;
    int64_t step, token_offset;
    bool training;
    /* micro-batches: tokens per forward pass (<= max_tokens, which is the most that one
     * omni_moe_route decides), the route's first token offset, its windows and the routed
     * rows before each, and the first window of the current pass */
    int64_t max_pass, base_offset, route_seq, window;
    int64_t *seq_row0; /* [max_tokens / context + 1] */
    /* shadow experts: at most max_shadow per layer and pass (0: off), each counted as
     * shadow_cost rows of expert work; the kept rows of every rank [N, E] (as all-reduced,
     * and as counts), the busiest load, the copies' gradients or an owner's weights to send,
     * then an owner's sum of one gradient [max_shadow + 1, 3, d * ff], the weights'
     * counts and displacements [4, N], and what the last passes shared */
    int64_t max_shadow, shadow_cost, copy_rows;
    double *kept_sum;
    int64_t *kept_all, *rank_load;
    float *cbuf;
    int64_t *ccnt;
    int64_t shadowed, shadow_passes;
    double timer[OMNI_MOE_T_COUNT];
    omni_alloc_list mem; /* every buffer above and of the layers */
};

static inline int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

static inline int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* table.c: build the descriptor of every parameter and bias of the layers (names, shapes,
 * meanings, init rules, places in the flat buffers; failures in m->layout_failed), and
 * point the descriptors and the layers' views at the buffers once they exist. */
omni_status moe_build_table(omni_moe *m);
void moe_bind_views(omni_moe *m);

#endif /* OMNI_EXPERTS_MOE_PRIVATE_H */
