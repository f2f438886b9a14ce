/* SwiGLU experts over contiguous row blocks, one sgemm per expert and product. */
#include "experts.h"

#include <cblas.h>
#include <math.h>

static inline float sigmoidf(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

/* C[m, n] = alpha A op B + beta C, row-major, with A [m, kk] or its transpose. */
static void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t kk, const float *a, const float *b,
                 float beta, float *c)
{
    if (m == 0 || n == 0)
        return;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)m, (int)n, (int)kk, 1.0f, a, ta ? (int)m : (int)kk, b, tb ? (int)kk : (int)n,
                beta, c, (int)n);
}

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
        gemm(false, false, m, ff, d, xj, w1 + j * d * ff, 0.0f, h1j);
        gemm(false, false, m, ff, d, xj, w3 + j * d * ff, 0.0f, h3j);
        for (int64_t i = 0; i < m * ff; i++)
            aj[i] = h1j[i] * sigmoidf(h1j[i]) * h3j[i];
        gemm(false, false, m, d, ff, aj, w2 + j * ff * d, accumulate ? 1.0f : 0.0f, y + r0 * d);
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
        for (int64_t i = 0; i < m * ff; i++)
            aj[i] = h1j[i] * sigmoidf(h1j[i]) * h3j[i];
        gemm(true, false, ff, d, m, aj, dyj, 1.0f, dw2 + j * ff * d);
        /* da = dy W2^T, then dh1 (into h1) and dh3 (into h3) */
        gemm(false, true, m, ff, d, dyj, w2 + j * ff * d, 0.0f, aj);
        for (int64_t i = 0; i < m * ff; i++) {
            float a1 = h1j[i], s = sigmoidf(a1), silu = a1 * s;
            float da = aj[i];
            h1j[i] = da * h3j[i] * (s + a1 * s * (1.0f - s));
            h3j[i] = da * silu;
        }
        gemm(true, false, d, ff, m, xj, h1j, 1.0f, dw1 + j * d * ff);
        gemm(true, false, d, ff, m, xj, h3j, 1.0f, dw3 + j * d * ff);
        /* x is no longer needed: dx may overwrite it */
        float *dxj = dx + r0 * d;
        gemm(false, true, m, d, ff, h1j, w1 + j * d * ff, 0.0f, dxj);
        gemm(false, true, m, d, ff, h3j, w3 + j * d * ff, 1.0f, dxj);
    }
}
