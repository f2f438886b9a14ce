/* SwiGLU experts over contiguous row blocks, one matrix product per expert and
 * product (the op kit's omni_matmul and SwiGLU gate, as the dense FFN). */
#include "experts.h"

#include "ops.h"

void omni_experts_forward(float *y, float *h1, float *h3, float *act, const float *x,
                          const float *w1, const float *w3, const float *w2, const int64_t *off,
                          int64_t n_local, int64_t d, int64_t ff, bool accumulate)
{
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

void omni_experts_backward(float *dx, float *dw1, float *dw3, float *dw2, float *h1, float *h3,
                           float *act, const float *dy, const float *x, const float *w1,
                           const float *w3, const float *w2, const int64_t *off, int64_t n_local,
                           int64_t d, int64_t ff)
{
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
