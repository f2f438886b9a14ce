/* SwiGLU experts over contiguous row blocks, one matrix product per expert and
 * product (the op kit's omni_matmul and SwiGLU gate, as the dense FFN).
 *
 * In bf16 (model.precision) every activation that enters a product is rounded once, where
 * it is made, into the op kit's bf16 scratch: the input rows x and the incoming gradient
 * dy once for all experts, the gate's output and its two input gradients by the gate
 * itself. The products see the same bf16 numbers as when each call rounded its own
 * inputs, so the results are those of omni_matmul_mp to the bit. */
#include "experts.h"

#include "ops.h"

/* The rows of the largest of the n_local blocks. */
static int64_t largest_block(const int64_t *off, int64_t n_local)
{
    int64_t most = 0;
    for (int64_t j = 0; j < n_local; j++)
        if (off[j + 1] - off[j] > most)
            most = off[j + 1] - off[j];
    return most;
}

static void forward_bf16(float *y, float *h1, float *h3, const float *x, const float *w1,
                         const float *w3, const float *w2, const int64_t *off, int64_t n_local,
                         int64_t d, int64_t ff, bool accumulate)
{
    const int64_t rows = off[n_local] - off[0];
    uint16_t *xh = omni_bf16_scratch(OMNI_BF16_SLOT_X, rows * d);
    uint16_t *ah = omni_bf16_scratch(OMNI_BF16_SLOT_A, largest_block(off, n_local) * ff);
    omni_bf16_round_rows(xh, x + off[0] * d, rows, d, d);
    for (int64_t j = 0; j < n_local; j++) {
        const int64_t r0 = off[j], m = off[j + 1] - off[j];
        if (m == 0)
            continue;
        float *h1j = h1 + r0 * ff, *h3j = h3 + r0 * ff;
        omni_matmul_bf16(false, false, m, ff, d, 1.0f, xh + (r0 - off[0]) * d, d,
                         omni_bf16_weight(w1 + j * d * ff, d, ff, ff), ff, 0.0f, h1j, ff);
        omni_matmul_bf16(false, false, m, ff, d, 1.0f, xh + (r0 - off[0]) * d, d,
                         omni_bf16_weight(w3 + j * d * ff, d, ff, ff), ff, 0.0f, h3j, ff);
        omni_swiglu_gate_forward_bf16(ah, h1j, h3j, m * ff);
        omni_matmul_bf16(false, false, m, d, ff, 1.0f, ah, ff,
                         omni_bf16_weight(w2 + j * ff * d, ff, d, d), d, accumulate ? 1.0f : 0.0f,
                         y + r0 * d, d);
    }
}

void omni_experts_forward(float *y, float *h1, float *h3, float *act, const float *x,
                          const float *w1, const float *w3, const float *w2, const int64_t *off,
                          int64_t n_local, int64_t d, int64_t ff, bool accumulate)
{
    if (omni_gemm_precision() == OMNI_PREC_BF16) {
        forward_bf16(y, h1, h3, x, w1, w3, w2, off, n_local, d, ff, accumulate);
        return;
    }
    for (int64_t j = 0; j < n_local; j++) {
        int64_t r0 = off[j], m = off[j + 1] - off[j];
        if (m == 0)
            continue;
        const float *xj = x + r0 * d;
        float *h1j = h1 + r0 * ff, *h3j = h3 + r0 * ff, *aj = act + r0 * ff;
        omni_matmul_mp(false, false, m, ff, d, 1.0f, xj, d, w1 + j * d * ff, ff, 0.0f, h1j, ff,
                       true);
        omni_matmul_mp(false, false, m, ff, d, 1.0f, xj, d, w3 + j * d * ff, ff, 0.0f, h3j, ff,
                       true);
        omni_swiglu_gate_forward(aj, h1j, h3j, m * ff);
        omni_matmul_mp(false, false, m, d, ff, 1.0f, aj, ff, w2 + j * ff * d, d,
                       accumulate ? 1.0f : 0.0f, y + r0 * d, d, true);
    }
}

static void backward_bf16(float *dx, float *dw1, float *dw3, float *dw2, const float *h1,
                          const float *h3, float *act, const float *dy, const float *x,
                          const float *w1, const float *w3, const float *w2, const int64_t *off,
                          int64_t n_local, int64_t d, int64_t ff)
{
    const int64_t rows = off[n_local] - off[0];
    /* x and dy rounded before any dx is written (dx may alias x) */
    uint16_t *xh = omni_bf16_scratch(OMNI_BF16_SLOT_X, rows * d);
    uint16_t *dyh = omni_bf16_scratch(OMNI_BF16_SLOT_DY, rows * d);
    const int64_t most = largest_block(off, n_local);
    uint16_t *ah = omni_bf16_scratch(OMNI_BF16_SLOT_A, most * ff);
    uint16_t *dh = omni_bf16_scratch(OMNI_BF16_SLOT_DH, 2 * most * ff);
    omni_bf16_round_rows(xh, x + off[0] * d, rows, d, d);
    omni_bf16_round_rows(dyh, dy + off[0] * d, rows, d, d);
    for (int64_t j = 0; j < n_local; j++) {
        const int64_t r0 = off[j], m = off[j + 1] - off[j];
        if (m == 0)
            continue;
        const uint16_t *xj = xh + (r0 - off[0]) * d, *dyj = dyh + (r0 - off[0]) * d;
        const float *h1j = h1 + r0 * ff, *h3j = h3 + r0 * ff;
        float *da = act + r0 * ff;
        const uint16_t *w1h = omni_bf16_weight(w1 + j * d * ff, d, ff, ff);
        const uint16_t *w3h = omni_bf16_weight(w3 + j * d * ff, d, ff, ff);
        const uint16_t *w2h = omni_bf16_weight(w2 + j * ff * d, ff, d, d);
        /* dW2 += a^T dy with a recomputed from the kept h1, h3; da = dy W2^T */
        omni_swiglu_gate_forward_bf16(ah, h1j, h3j, m * ff);
        omni_matmul_bf16(true, false, ff, d, m, 1.0f, ah, ff, dyj, d, 1.0f, dw2 + j * ff * d, d);
        omni_matmul_bf16(false, true, m, ff, d, 1.0f, dyj, d, w2h, d, 0.0f, da, ff);
        uint16_t *dh1 = dh, *dh3 = dh + m * ff;
        omni_swiglu_gate_backward_bf16(dh1, dh3, da, h1j, h3j, m * ff);
        omni_matmul_bf16(true, false, d, ff, m, 1.0f, xj, d, dh1, ff, 1.0f, dw1 + j * d * ff, ff);
        omni_matmul_bf16(true, false, d, ff, m, 1.0f, xj, d, dh3, ff, 1.0f, dw3 + j * d * ff, ff);
        float *dxj = dx + r0 * d;
        omni_matmul_bf16(false, true, m, d, ff, 1.0f, dh1, ff, w1h, ff, 0.0f, dxj, d);
        omni_matmul_bf16(false, true, m, d, ff, 1.0f, dh3, ff, w3h, ff, 1.0f, dxj, d);
    }
}

void omni_experts_backward(float *dx, float *dw1, float *dw3, float *dw2, float *h1, float *h3,
                           float *act, const float *dy, const float *x, const float *w1,
                           const float *w3, const float *w2, const int64_t *off, int64_t n_local,
                           int64_t d, int64_t ff)
{
    if (omni_gemm_precision() == OMNI_PREC_BF16) {
        backward_bf16(dx, dw1, dw3, dw2, h1, h3, act, dy, x, w1, w3, w2, off, n_local, d, ff);
        return;
    }
    for (int64_t j = 0; j < n_local; j++) {
        int64_t r0 = off[j], m = off[j + 1] - off[j];
        if (m == 0)
            continue;
        const float *xj = x + r0 * d, *dyj = dy + r0 * d;
        float *h1j = h1 + r0 * ff, *h3j = h3 + r0 * ff, *aj = act + r0 * ff;
        /* dW2 += a^T dy with a recomputed from the kept h1, h3 */
        omni_swiglu_gate_forward(aj, h1j, h3j, m * ff);
        omni_matmul_mp(true, false, ff, d, m, 1.0f, aj, ff, dyj, d, 1.0f, dw2 + j * ff * d, d,
                       false);
        /* da = dy W2^T, then dh1 (into h1) and dh3 (into h3) */
        omni_matmul_mp(false, true, m, ff, d, 1.0f, dyj, d, w2 + j * ff * d, d, 0.0f, aj, ff, true);
        omni_swiglu_gate_backward(h1j, h3j, aj, h1j, h3j, m * ff);
        omni_matmul_mp(true, false, d, ff, m, 1.0f, xj, d, h1j, ff, 1.0f, dw1 + j * d * ff, ff,
                       false);
        omni_matmul_mp(true, false, d, ff, m, 1.0f, xj, d, h3j, ff, 1.0f, dw3 + j * d * ff, ff,
                       false);
        /* x is no longer needed: dx may overwrite it */
        float *dxj = dx + r0 * d;
        omni_matmul_mp(false, true, m, d, ff, 1.0f, h1j, ff, w1 + j * d * ff, ff, 0.0f, dxj, d,
                       true);
        omni_matmul_mp(false, true, m, d, ff, 1.0f, h3j, ff, w3 + j * d * ff, ff, 1.0f, dxj, d,
                       true);
    }
}
