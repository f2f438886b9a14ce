/*
 * model — the transformer of docs/design.md §2, dense part: embeddings, blocks (RMSNorm,
 * attention, SwiGLU FFN), head and loss, each a _forward/_backward pair; parameters,
 * gradients and AdamW moments in one allocation each with named views.
 *
 * The batch and the data dimensions it reads are in tokens.h (shared with datasets/).
 */
#ifndef OMNI_MODEL_H
#define OMNI_MODEL_H

#include <stdint.h>

#include "base.h"
#include "experiment.h"
#include "tensor.h"
#include "tokens.h"

/* ---- the model ----------------------------------------------------------------- */

/*
 * Named views into one flat buffer (parameters, gradients, m or v: the same layout).
 * A matrix W [in, out] maps a row vector x [in] to x W [out]. Views of absent parts
 * (no images, no audio, an MoE block's dense FFN) are NULL.
 */
typedef struct {
    float *attn_norm; /* [d]       RMSNorm gain before attention */
    float *wqkv;      /* [d, 3d]   fused Q | K | V, head h in columns h*hd .. (h+1)*hd-1 */
    float *wo;        /* [d, d]    attention output projection */
    float *ffn_norm;  /* [d]       RMSNorm gain before the FFN (dense or MoE) */
    float *w1;        /* [d, ff]   SwiGLU gate; NULL in an MoE block */
    float *w3;        /* [d, ff]   SwiGLU up; NULL in an MoE block */
    float *w2;        /* [ff, d]   SwiGLU down; NULL in an MoE block */
} omni_block_view;

typedef struct {
    float *tok;              /* [vocab, d] token embedding */
    float *img_w;            /* [image_patch_dim, d] */
    float *img_b;            /* [d] */
    float *aud_w;            /* [audio_patch_dim, d] */
    float *aud_b;            /* [d] */
    float *row;              /* [max_rows, d] patch row embedding (NULL without patches) */
    float *col;              /* [max_cols, d] patch column embedding */
    float *pos;              /* [context, d] position-in-sample embedding */
    omni_block_view *layers; /* [n_layers] */
    float *out_norm;         /* [d] final RMSNorm gain */
    float *out_w;            /* [d, vocab] untied head */
} omni_param_view;

/*
 * The FFN of an MoE block, supplied by the MoE part (gating/, experts/); the model does
 * not own its parameters. `in` is the block's RMSNorm output [n_tokens, d], kept by the
 * model until backward. forward writes out = F(in) [n_tokens, d]; backward adds
 * dF/din^T dout to din (and accumulates its own parameter gradients).
 */
typedef struct {
    void *ctx;
    omni_status (*forward)(void *ctx, int64_t layer, float *out, const float *in,
                           const omni_batch *b, int64_t n_tokens);
    omni_status (*backward)(void *ctx, int64_t layer, float *din, const float *dout,
                            const omni_batch *b, int64_t n_tokens);
    /* Micro-batches (may be NULL when not used): route decides the routing of a whole
     * batch b at once, without computing the FFN; then every forward and backward takes those
     * decisions for its tokens, the windows first_seq, ... of b set by window
     * (omni_moe_route, omni_moe_window). */
    omni_status (*route)(void *ctx, int64_t layer, const float *in, const omni_batch *b,
                         int64_t n_tokens);
    void (*window)(void *ctx, int64_t first_seq);
} omni_ffn_hook;

/* What one forward pass reports, per task index of the batch (sums over this rank's
 * part; the caller reduces them over ranks). */
typedef struct {
    double loss;                     /* sum of weighted CE / b->loss_norm */
    double ce_sum[OMNI_MAX_TASKS];   /* unweighted CE summed over loss tokens */
    int64_t tokens[OMNI_MAX_TASKS];  /* loss-bearing tokens */
    int64_t correct[OMNI_MAX_TASKS]; /* loss tokens whose argmax is the target */
} omni_model_metrics;

typedef struct omni_model omni_model; /* opaque: sizes, buffers, activations */

/*
 * Create a model for experiment x and data dims, with activation buffers for up to
 * max_seq windows of x->model.context positions per forward. Parameters start at 0
 * (call omni_model_init_params or load them). Not collective.
 */
omni_status omni_model_create(omni_model **m, const omni_experiment *x, const omni_data_dims *dims,
                              int64_t max_seq);
void omni_model_free(omni_model *m);

/* docs/design.md §2 initialisation: each tensor from the stream (experiment.seed, its name,
 * 0): normal(0, 0.02), the residual projections (attn wo, ffn w2) scaled by
 * 1/sqrt(2 n_layers), norm gains 1, biases 0. Clears gradients and AdamW moments. */
void omni_model_init_params(omni_model *m);

/* Attach the FFN of the MoE blocks (copied). Required before forward when the
 * experiment has MoE blocks. */
void omni_model_set_moe(omni_model *m, const omni_ffn_hook *hook);

/*
 * Called by omni_model_backward as soon as a group of parameter gradients is final, so
 * the distributed part can start summing it across ranks while backward goes on: first
 * with OMNI_GRADS_HEAD (final norm and head), then with each block l from the last to the
 * first (its attention, norms and FFN, and for an MoE block whatever the FFN hook's
 * backward accumulated), then with OMNI_GRADS_EMBED (the embeddings).
 */
typedef omni_status (*omni_grads_ready_fn)(void *ctx, int64_t group);
void omni_model_set_grads_ready(omni_model *m, omni_grads_ready_fn fn, void *ctx);
/* The range of the flat gradient buffer [*first, *first + *count) that holds the tensors
 * of a group (a block index, OMNI_GRADS_HEAD or OMNI_GRADS_EMBED). */
void omni_model_group_range(const omni_model *m, int64_t group, int64_t *first, int64_t *count);

/* Forward pass over batch b (checked: ids, places and sizes out of range are
 * OMNI_ERR_DATA). Keeps the activations for backward. metrics may be NULL. */
omni_status omni_model_forward(omni_model *m, const omni_batch *b, omni_model_metrics *metrics);
/*
 * Micro-batches (data.micro_batch): make room for forward passes of up to max_batch_seq
 * windows (the rank's share of the global batch) block by block, in passes of at most the
 * model's max_seq (two [max_batch_seq * context, d] buffers). Not collective.
 */
omni_status omni_model_enable_blockwise(omni_model *m, int64_t max_batch_seq);
/*
 * The forward of batch b (up to max_batch_seq windows) one block at a time, each block in
 * passes of at most max_seq windows, keeping nothing for backward. An MoE block routes the
 * whole batch first (hook route, collective) and then runs each pass with those decisions
 * (hook window, forward): afterwards the MoE layers hold the routing of the whole batch for
 * the training passes that follow. With metrics, also the head and the loss (evaluation);
 * without, it stops after the last MoE block (the routing pre-pass of a training step).
 * Every rank calls it with the same number of passes (ceil(max_batch_seq / max_seq)).
 */
omni_status omni_model_forward_blockwise(omni_model *m, const omni_batch *b,
                                         omni_model_metrics *metrics);
/* Backward pass of the last forward (same batch): gradients accumulate (+=). */
omni_status omni_model_backward(omni_model *m, const omni_batch *b);
void omni_model_zero_grad(omni_model *m);

/* Sum of squares of this model's gradient buffer (double accumulation). The caller adds
 * other ranks' or parts' squares and passes sqrt of the total to omni_model_step. */
double omni_model_grad_sumsq(const omni_model *m);
/*
 * One optimizer step number `step` (0-based): scale gradients by
 * min(1, grad_clip / (global_norm + 1e-6)), then AdamW with the learning rate
 * omni_lr_at(x, step), bias correction for step + 1 updates, and decoupled decay
 * p -= lr * weight_decay * p on tensors with decay. A non-finite global_norm is
 * OMNI_ERR_NUMERIC and leaves the parameters unchanged.
 */
omni_status omni_model_step(omni_model *m, int64_t step, double global_norm);
/*
 * One AdamW update, shared by every part that owns parameters (the dense model here, the
 * MoE layers in experts/): the constants of optimizer step `step` (0-based) with learning
 * rate lr and gradient scale clip (from global-norm clipping), then the flat loop
 *   g' = clip g;  m = b1 m + (1-b1) g';  v = b2 v + (1-b2) g'^2;
 *   p = p (1 - lr wd [decay]) - lr/(1-b1^t) m / (sqrt(v/(1-b2^t)) + eps),  t = step + 1.
 */
typedef struct {
    float lr, b1, b2, eps, weight_decay, clip;
    float step_size;    /* lr / (1 - b1^t) */
    float inv_sqrt_bc2; /* 1 / sqrt(1 - b2^t) */
} omni_adamw;
omni_adamw omni_adamw_at(const omni_experiment *x, int64_t step, double lr, double clip);
void omni_adamw_update(const omni_adamw *a, float *p, const float *g, float *m, float *v, int64_t n,
                       bool decay);

/* The clipping scale that omni_model_step applies for a global norm. */
double omni_clip_scale(const omni_experiment *x, double global_norm);
/* Linear warm-up lr * (step + 1) / warmup for step < warmup, then cosine from lr to
 * min_lr reached at step = steps (and kept after). */
double omni_lr_at(const omni_experiment *x, int64_t step);

/* The tensor table (each parameter's descriptor, tensor.h; data points into the
 * parameters) and the flat buffers (each n_params floats, 64-byte aligned; a tensor is at
 * the same offset in each). */
int64_t omni_model_n_tensors(const omni_model *m);
const omni_tensor *omni_model_tensor(const omni_model *m, int64_t i);
/* Index of the tensor named `name`, or -1 (for tests and tools). */
int64_t omni_model_find_tensor(const omni_model *m, const char *name);
int64_t omni_model_n_params(const omni_model *m);
float *omni_model_params(omni_model *m);
float *omni_model_grads(omni_model *m);
float *omni_model_adam_m(omni_model *m);
float *omni_model_adam_v(omni_model *m);
const omni_param_view *omni_model_param_view(const omni_model *m);
const omni_param_view *omni_model_grad_view(const omni_model *m);
/* The logits [n_seq * context, vocab] of the last forward. */
const float *omni_model_logits(const omni_model *m);
int64_t omni_model_vocab(const omni_model *m);

/* ---- incremental decoding with a KV cache (used by inference/) ------------------ */

/*
 * The keys and values of every block for up to n_seq sequences of up to `context`
 * positions, each sequence one sample (positions 0, 1, ... of it), plus the scratch of a
 * forward step of up to max_step new positions per sequence, all allocated at creation.
 * Not collective.
 */
typedef struct omni_kv_cache omni_kv_cache;
omni_status omni_kv_cache_create(omni_kv_cache **c, const omni_model *m, int64_t n_seq,
                                 int64_t max_step);
void omni_kv_cache_free(omni_kv_cache *c);
/* Forget every sequence (all lengths 0). */
void omni_kv_cache_clear(omni_kv_cache *c);
/* Positions cached for sequence s. */
int64_t omni_kv_cache_len(const omni_kv_cache *c, int64_t s);
/* Reorder the sequences: sequence i becomes a copy of what sequence from[i] was, for
 * i < n (beam search). */
void omni_kv_cache_reorder(omni_kv_cache *c, const int64_t *from, int64_t n);
/* Logits [n_seq * step, vocab] of the last omni_model_forward_cached (row s * step + i). */
const float *omni_kv_cache_logits(const omni_kv_cache *c);

/*
 * Forward of new positions through the cache. b holds b->n_seq (<= the cache's n_seq)
 * rows of b->context (<= max_step) positions: in row s, a leading run of positions that
 * are not OMNI_POS_PAD continues sequence s of the cache (b->pos must be its cached length,
 * +1, ...), the rest is padding and is ignored; segment, target, loss_mask and task are
 * not used (task only for MoE statistics). Attention: each new position sees every cached
 * position of its sequence and the new ones before it; under model.attention: prefix the
 * new positions with in_prefix also see the later in_prefix positions of the same call,
 * so a sequence's prefix must come whole in its first call (checked: OMNI_ERR_DATA).
 * Equal to omni_model_forward on the whole sample (test: tests/inference/test_decode_mpi.c).
 * The MoE hook is called once per MoE block with n = n_seq * context positions (padding
 * is not routed), so the call is collective whenever the hook is: every rank calls it
 * the same number of times, with n_seq = 0 when it has nothing to do.
 */
omni_status omni_model_forward_cached(omni_model *m, omni_kv_cache *c, const omni_batch *b);

#endif /* OMNI_MODEL_H */
