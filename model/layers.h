/*
 * Private to model/ and its tests: the layers of the transformer, each a pair of free
 * functions in the manner of llm.c. Arguments run outputs, inputs, saved statistics,
 * sizes. Backward functions accumulate (+=) into every gradient they are given, except
 * omni_xent_backward, which writes dlogits. The matrix products are the op kit's
 * (ops.h: omni_matmul_forward/backward). n is the number of positions (n_seq * T);
 * every [n, k] array is row-major, position-major. Nothing here allocates.
 */
#ifndef OMNI_MODEL_LAYERS_H
#define OMNI_MODEL_LAYERS_H

#include <stdbool.h>
#include <stdint.h>

#include "model.h"
#include "ops.h"

#define OMNI_RMS_EPS 1e-5f

/* Scratch of the embedding: gathered patch rows and their outputs. */
typedef struct {
    int64_t *idx; /* [n] positions of one patch kind */
    float *xg;    /* [n, patch_dim] their patch rows */
    float *yg;    /* [n, d] their projections / gradients */
} omni_embed_scratch;

/* out [n, d] = token or patch embedding (+ row/col at patches) + E_pos[pos], see
 * docs/design.md §2. Padding embeds as the token OMNI_TOK_PAD. Ids must be checked before. */
void omni_embed_forward(float *out, const omni_batch *b, const omni_param_view *p, int64_t n,
                        int64_t d, int64_t img_dim, int64_t aud_dim, omni_embed_scratch *s);
void omni_embed_backward(const omni_param_view *dp, const float *dout, const omni_batch *b,
                         int64_t n, int64_t d, int64_t img_dim, int64_t aud_dim,
                         omni_embed_scratch *s);

/* out = inp / sqrt(mean(inp^2) + 1e-5) * g per row; rstd [n] keeps 1/sqrt(...). */
void omni_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *g, int64_t n,
                          int64_t d);
void omni_rmsnorm_backward(float *dinp, float *dg, const float *dout, const float *inp,
                           const float *g, const float *rstd, int64_t n, int64_t d);
/* omni_rmsnorm_forward with out in bf16 only (where only products read it): each element
 * the bf16 rounding of the fp32 function's. */
void omni_rmsnorm_forward_bf16(uint16_t *out, float *rstd, const float *inp, const float *g,
                               int64_t n, int64_t d);

/* May position j be seen from position i of window s of batch b? Causal within a
 * segment; with prefix, both ways inside a segment's prefix; padding sees itself. */
bool omni_attention_allowed(const omni_batch *b, int64_t s, int64_t i, int64_t j, bool prefix);

/*
 * Multi-head attention core over qkv [n_seq * T, 3d] (per position Q | K | V, head h
 * at columns h*hd..): out [n_seq * T, d] = softmax(Q K^T / sqrt(hd) + mask) V per
 * window and head, computed in tiles of OMNI_ATTN_TILE x OMNI_ATTN_TILE with an online
 * softmax; tiles wholly masked are skipped and nothing T x T is stored. lse
 * [n_seq, H, T] keeps each row's log-sum-exp of the scaled, masked scores, from which
 * backward recomputes the probabilities. Work is split over (window, head) by OpenMP;
 * the result does not depend on the number of threads.
 */
#define OMNI_ATTN_TILE 64
typedef struct {
    int64_t slots;    /* threads that may work at once: one tile scratch each */
    float *tile;      /* [slots, omni_attention_scratch_floats(hd)] */
    int32_t *lo, *hi; /* [n_seq * T] the key range of each query row */
} omni_attention_scratch;
/* Floats of one thread's tile scratch for head size hd. */
int64_t omni_attention_scratch_floats(int64_t hd);
void omni_attention_forward(float *out, float *lse, const float *qkv, const omni_batch *b,
                            int64_t n_seq, int64_t T, int64_t d, int64_t n_heads, bool prefix,
                            const omni_attention_scratch *ws);
/* dqkv += the gradient for dout, given the forward's out, qkv and lse (same batch and
 * mode). */
void omni_attention_backward(float *dqkv, const float *dout, const float *out, const float *qkv,
                             const float *lse, const omni_batch *b, int64_t n_seq, int64_t T,
                             int64_t d, int64_t n_heads, bool prefix,
                             const omni_attention_scratch *ws);

/*
 * SwiGLU: out += W2 (silu(W1 x) * (W3 x)) per row x of inp [n, d] (added, so the
 * residual stream can be passed); h1, h3, a [n, ff] keep x W1, x W3 and the gated
 * silu(x W1) * (x W3). out NULL makes only h1, h3 and a (backward's recomputation).
 */
void omni_swiglu_forward(float *out, float *h1, float *h3, float *a, const float *inp,
                         const float *w1, const float *w3, const float *w2, int64_t n, int64_t d,
                         int64_t ff);
/* dinp, dw1, dw3, dw2 +=; scratch_a and scratch_d are [n, ff]. */
void omni_swiglu_backward(float *dinp, float *dw1, float *dw3, float *dw2, float *scratch_a,
                          float *scratch_d, const float *dout, const float *inp, const float *h1,
                          const float *h3, const float *a, const float *w1, const float *w3,
                          const float *w2, int64_t n, int64_t d, int64_t ff);

/*
 * The same in bf16 (model.precision), with the activations that only products read kept in
 * bf16: the input inp [n, d] and the gate's output a [n, ff] (h1, h3 stay fp32 for the
 * gate's backward). Backward rounds dout once for its two products and writes the gate's
 * two input gradients in bf16 into scratch_h [2 n ff]; scratch_d is [n, ff] fp32. The
 * results are those of the fp32-input functions in bf16, to the bit.
 */
void omni_swiglu_forward_bf16(float *out, float *h1, float *h3, uint16_t *a, const uint16_t *inp,
                              const float *w1, const float *w3, const float *w2, int64_t n,
                              int64_t d, int64_t ff);
void omni_swiglu_backward_bf16(float *dinp, float *dw1, float *dw3, float *dw2, uint16_t *scratch_h,
                               float *scratch_d, const float *dout, const uint16_t *inp,
                               const float *h1, const float *h3, const uint16_t *a, const float *w1,
                               const float *w3, const float *w2, int64_t n, int64_t d, int64_t ff);

/*
 * Cross-entropy of logits [n, V] against b->target where b->loss_mask is 1, each term
 * times loss_weight[b->task], summed and divided by b->loss_norm into *loss. probs
 * [n, V] keeps the softmax of the loss-bearing rows (other rows are not computed).
 * rows [2n] is scratch (each row's CE and hit, summed in row order after the rows are
 * computed in parallel). metrics (may be NULL) gets the per-task sums.
 */
void omni_xent_forward(double *loss, float *probs, double *rows, const float *logits,
                       const omni_batch *b, const float *loss_weight, int64_t n, int64_t V,
                       omni_model_metrics *metrics);
/* dlogits [n, V] = d loss / d logits (written, not accumulated; may be probs itself). */
void omni_xent_backward(float *dlogits, const float *probs, const omni_batch *b,
                        const float *loss_weight, int64_t n, int64_t V);

#endif /* OMNI_MODEL_LAYERS_H */
