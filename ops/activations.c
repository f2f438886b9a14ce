/* ops: the SwiGLU gate, forward and backward (the dense FFN and every expert use it),
 * split over OpenMP threads per element (no sums, so no thread count changes a result). */
#include "ops.h"

void omni_swiglu_gate_forward(float *a, const float *h1, const float *h3, int64_t n)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        a[i] = h1[i] * omni_sigmoid(h1[i]) * h3[i];
}

void omni_swiglu_gate_backward(float *dh1, float *dh3, const float *da, const float *h1,
                               const float *h3, int64_t n)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float z = h1[i], u = h3[i], g = da[i], s = omni_sigmoid(z);
        dh1[i] = g * u * s * (1.0f + z * (1.0f - s));
        dh3[i] = g * z * s;
    }
}

/* Elements per block of the bf16 variants: computed into a small fp32 block on the
 * thread's stack, then rounded by the vector code. */
#define GATE_BLOCK 256

void omni_swiglu_gate_forward_bf16(uint16_t *a, const float *h1, const float *h3, int64_t n)
{
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < n; b += GATE_BLOCK) {
        float t[GATE_BLOCK];
        const int64_t m = n - b < GATE_BLOCK ? n - b : GATE_BLOCK;
        for (int64_t i = 0; i < m; i++)
            t[i] = h1[b + i] * omni_sigmoid(h1[b + i]) * h3[b + i];
        omni_bf16_round(a + b, t, m);
    }
}

void omni_swiglu_gate_backward_bf16(uint16_t *dh1, uint16_t *dh3, const float *da, const float *h1,
                                    const float *h3, int64_t n)
{
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < n; b += GATE_BLOCK) {
        float t1[GATE_BLOCK], t3[GATE_BLOCK];
        const int64_t m = n - b < GATE_BLOCK ? n - b : GATE_BLOCK;
        for (int64_t i = 0; i < m; i++) {
            float z = h1[b + i], u = h3[b + i], g = da[b + i], s = omni_sigmoid(z);
            t1[i] = g * u * s * (1.0f + z * (1.0f - s));
            t3[i] = g * z * s;
        }
        omni_bf16_round(dh1 + b, t1, m);
        omni_bf16_round(dh3 + b, t3, m);
    }
}
