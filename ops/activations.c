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
