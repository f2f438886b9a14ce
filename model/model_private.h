/* Private to model/: the model struct shared by model.c (layout, forward, backward) and
 * optim.c (AdamW). */
#ifndef OMNI_MODEL_PRIVATE_H
#define OMNI_MODEL_PRIVATE_H

#include "layers.h"
#include "model.h"

/* Where the named view of a tensor lives: field `field` (a byte offset) of the
 * omni_param_view (block < 0) or of block `block`'s omni_block_view. */
typedef struct {
    int64_t block;
    size_t field;
} omni_view_slot;

struct omni_model {
    omni_experiment x;
    omni_data_dims dims;
    int64_t d, L, H, ff, T, V, max_seq, img_dim, aud_dim, patch_dim;
    bool prefix;
    bool recompute; /* model.recompute: one slot of block activations, made again in backward */

    omni_tensor_table tensors; /* every parameter, in buffer order */
    omni_view_slot *slots;     /* [tensors.n] */
    bool layout_failed;
    int64_t n_params;
    float *params, *grads, *adam_m, *adam_v; /* [n_params] each, the same layout */
    omni_param_view pv, gv;                  /* views into params and grads */
    omni_block_view *pl, *gl;                /* [L] block views behind pv.layers, gv.layers */
    float loss_weight[OMNI_MAX_TASKS];

    omni_ffn_hook moe;
    omni_grads_ready_fn grads_ready; /* NULL: nobody waits for gradient groups */
    void *grads_ready_ctx;
    bool has_moe_hook, any_moe;
    int64_t n_dense; /* blocks with a dense FFN */

    /* Activations of the last forward, N = max_seq * T rows at most; the [L, ...] and
     * [n_dense, ...] buffers hold one block's ([1, ...]) under model.recompute. */
    float *res;    /* [L+1, N, d] residual stream entering each block, and after the last */
    float *mid;    /* [L, N, d]   residual after attention */
    float *ln1;    /* [L, N, d]   RMSNorm output before attention */
    float *rstd1;  /* [L, N] */
    float *qkv;    /* [L, N, 3d] */
    float *lse;    /* [L, max_seq, H, T] attention log-sum-exp per row */
    float *atty;   /* [L, N, d]   attention output before the projection */
    float *ln2;    /* [L, N, d]   RMSNorm output before the FFN (the MoE input) */
    float *rstd2;  /* [L, N] */
    float *h1;     /* [n_dense, N, ff] x W1 (dense blocks only) */
    float *h3;     /* [n_dense, N, ff] x W3 */
    float *ffa;    /* [n_dense, N, ff] silu(x W1) * (x W3) */
    float *lnf;    /* [N, d] */
    float *rstdf;  /* [N] */
    float *logits; /* [N, V] */
    float *probs;  /* [N, V] softmax at the loss-bearing positions; backward: dlogits */
    /* Scratch. */
    float *ffs, *ffd;          /* [N, ff] */
    float *moe_out;            /* [N, d] */
    double *xent_rows;         /* [2N] per-row CE and hit of the loss */
    float *dres;               /* [N, d] gradient of the residual stream */
    float *dln;                /* [N, d] */
    float *datty;              /* [N, d] */
    float *dqkv;               /* [N, 3d] */
    omni_attention_scratch ws; /* attention tiles, per thread */
    omni_embed_scratch es;

    int64_t last_n_seq, last_T; /* shape of the last forward; -1: none */

    /* Block-by-block forward of a whole batch (micro-batches): its residual stream and,
     * at an MoE block, the FFN's input, for up to max_batch_seq windows */
    int64_t max_batch_seq; /* 0: not enabled */
    float *bw_h, *bw_ln;   /* [max_batch_seq * T, d] */

    omni_alloc_list mem; /* every buffer above */
};

#endif /* OMNI_MODEL_PRIVATE_H */
