/* ops: the SwiGLU gate, forward and backward (the dense FFN and every expert use it),
 * split over OpenMP threads per element (no sums, so no thread count changes a result). */
#include <immintrin.h>

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

/*
 * The bf16 variants. Their outputs are rounded to 8 significant bits, so the logistic
 * function need not be libm's to the last fp32 bit: on CPUs with AVX-512-BF16 (the only
 * ones that run bf16) e^x is computed 16 lanes at a time (x = n ln 2 + r, |r| <= ln2 / 2,
 * a degree-6 polynomial for e^r, then 2^n: a relative error of a few 1e-7, against 2^-9
 * for the bf16 rounding that follows), and each 32 results are rounded by one
 * vcvtne2ps2bf16. Elsewhere (the tests' reference machines) the fp32 formula, then
 * omni_bf16_round. Element by element: no thread count changes a result.
 */
#define GATE_BLOCK 4096

#define VEC_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

VEC_TARGET static inline __m512 exp_vec(__m512 x)
{
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(100.0f)), _mm512_set1_ps(-103.5f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* 1 / (1 + e^-z) */
VEC_TARGET static inline __m512 sigmoid_vec(__m512 z)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(one, _mm512_add_ps(one, exp_vec(_mm512_sub_ps(_mm512_setzero_ps(), z))));
}

static inline __mmask16 tail_mask(int64_t left)
{
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* a = silu(h1) h3 for 32 elements at i (m of them valid), rounded */
VEC_TARGET static inline __m512i gate32(const float *h1, const float *h3, int64_t i, int64_t m)
{
    __m512 a[2];
    for (int k = 0; k < 2; k++) {
        const __mmask16 mk = tail_mask(m - 16 * k);
        const __m512 z = _mm512_maskz_loadu_ps(mk, h1 + i + 16 * k);
        const __m512 u = _mm512_maskz_loadu_ps(mk, h3 + i + 16 * k);
        a[k] = _mm512_mul_ps(_mm512_mul_ps(z, sigmoid_vec(z)), u);
    }
    return (__m512i)_mm512_cvtne2ps_pbh(a[1], a[0]);
}

VEC_TARGET static void gate_forward_vec(uint16_t *a, const float *h1, const float *h3, int64_t n)
{
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < n; b += GATE_BLOCK) {
        const int64_t end = n - b < GATE_BLOCK ? n : b + GATE_BLOCK;
        int64_t i = b;
        for (; i + 32 <= end; i += 32)
            _mm512_storeu_si512((void *)(a + i), gate32(h1, h3, i, 32));
        if (i < end) {
            const int64_t m = end - i;
            const __mmask32 mk = m >= 32 ? ~(__mmask32)0 : (((__mmask32)1 << m) - 1);
            _mm512_mask_storeu_epi16((void *)(a + i), mk, gate32(h1, h3, i, m));
        }
    }
}

VEC_TARGET static void gate_backward_vec(uint16_t *dh1, uint16_t *dh3, const float *da,
                                         const float *h1, const float *h3, int64_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f);
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < n; b += GATE_BLOCK) {
        const int64_t end = n - b < GATE_BLOCK ? n : b + GATE_BLOCK;
        for (int64_t i = b; i < end; i += 32) {
            const int64_t m = end - i < 32 ? end - i : 32;
            __m512 d1[2], d3[2];
            for (int k = 0; k < 2; k++) {
                const __mmask16 mk = tail_mask(m - 16 * k);
                const __m512 z = _mm512_maskz_loadu_ps(mk, h1 + i + 16 * k);
                const __m512 u = _mm512_maskz_loadu_ps(mk, h3 + i + 16 * k);
                const __m512 g = _mm512_maskz_loadu_ps(mk, da + i + 16 * k);
                const __m512 s = sigmoid_vec(z), gs = _mm512_mul_ps(g, s);
                /* dh1 = g u s (1 + z (1 - s)), dh3 = g z s */
                const __m512 t = _mm512_fmadd_ps(z, _mm512_sub_ps(one, s), one);
                d1[k] = _mm512_mul_ps(_mm512_mul_ps(gs, u), t);
                d3[k] = _mm512_mul_ps(gs, z);
            }
            const __mmask32 mk = m >= 32 ? ~(__mmask32)0 : (((__mmask32)1 << m) - 1);
            _mm512_mask_storeu_epi16((void *)(dh1 + i), mk,
                                     (__m512i)_mm512_cvtne2ps_pbh(d1[1], d1[0]));
            _mm512_mask_storeu_epi16((void *)(dh3 + i), mk,
                                     (__m512i)_mm512_cvtne2ps_pbh(d3[1], d3[0]));
        }
    }
}

void omni_swiglu_gate_forward_bf16(uint16_t *a, const float *h1, const float *h3, int64_t n)
{
    if (omni_bf16_available()) {
        gate_forward_vec(a, h1, h3, n);
        return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < n; b += GATE_BLOCK) {
        float t[256];
        for (int64_t c = b; c < b + GATE_BLOCK && c < n; c += 256) {
            const int64_t m = n - c < 256 ? n - c : 256;
            for (int64_t i = 0; i < m; i++)
                t[i] = h1[c + i] * omni_sigmoid(h1[c + i]) * h3[c + i];
            omni_bf16_round(a + c, t, m);
        }
    }
}

void omni_swiglu_gate_backward_bf16(uint16_t *dh1, uint16_t *dh3, const float *da, const float *h1,
                                    const float *h3, int64_t n)
{
    if (omni_bf16_available()) {
        gate_backward_vec(dh1, dh3, da, h1, h3, n);
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        float z = h1[i], u = h3[i], g = da[i], s = omni_sigmoid(z);
        dh1[i] = omni_bf16_of(g * u * s * (1.0f + z * (1.0f - s)));
        dh3[i] = omni_bf16_of(g * z * s);
    }
}
