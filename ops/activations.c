/*
 * ops: the SwiGLU gate, forward and backward (the dense FFN and every expert use it),
 * split over OpenMP threads per block of 16 elements (no sums, so no thread count changes
 * a result).
 *
 * The gate's sigmoid is 1 / (1 + e^-z) with e^x computed here rather than by libm's expf:
 * the gate runs over every hidden element of every FFN and expert, three times per step
 * (forward, the experts' recomputation, backward), and a scalar expf call per element took
 * about a fifth of the experts' time (perf, bench-torch config). e^x = 2^n e^r with
 * n = nearest(x log2 e), r = x - n ln 2 (ln 2 in two parts, Cody-Waite) and e^r by its
 * Taylor polynomial of degree 7 (|r| <= ln2 / 2: truncation below 1e-8 relative); x below
 * -87 is taken as -87 (the sigmoid is 1 for z > 87, as fp32 rounds it anyway) and e^x above
 * 88 is +inf (the sigmoid is 0 for z < -88: an error below 2e-36 in z s), so that 2^n stays
 * a normal float.
 * Within 2 ulp of e^x elsewhere; the gate's tests bound it against double.
 *
 * The paths compute the same operations in the same order, so they agree to the bit: 16
 * lanes of AVX-512 (tails by masked loads, so every element takes the same path), and on
 * CPUs without AVX-512 a scalar loop (fmaf, nearbyintf), compiled with FMA instructions
 * where the CPU has them (AVX2 machines) and for any x86-64 else. A NaN input is clamped like
 * -inf in the sigmoid; the gate still returns NaN, since z multiplies every output.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "ops_private.h"

#define EXP_LO -87.0f
#define EXP_HI 88.0f
#define LOG2E  1.44269504088896341f
#define LN2_HI 0.693359375f /* 8 significant bits: n LN2_HI is exact */
#define LN2_LO -2.12194440e-4f
#define C2     (1.0f / 2.0f)
#define C3     (1.0f / 6.0f)
#define C4     (1.0f / 24.0f)
#define C5     (1.0f / 120.0f)
#define C6     (1.0f / 720.0f)
#define C7     (1.0f / 5040.0f)
#define VEC    16

static bool force_scalar;

void omni_gate_force_scalar(bool on)
{
    force_scalar = on;
}

typedef enum { PATH_ANY, PATH_FMA, PATH_AVX512 } gate_path;

static gate_path path_of(void)
{
    __builtin_cpu_init();
    if (!force_scalar && __builtin_cpu_supports("avx512f"))
        return PATH_AVX512;
    if (__builtin_cpu_supports("fma") && __builtin_cpu_supports("sse4.1"))
        return PATH_FMA;
    return PATH_ANY;
}

/* ---- scalar ------------------------------------------------------------------- */

static inline float exp_scalar(float x)
{
    if (!(x >= EXP_LO)) /* NaN too */
        x = EXP_LO;
    if (x > EXP_HI)
        return INFINITY;
    const float n = nearbyintf(x * LOG2E);
    float r = fmaf(n, -LN2_HI, x);
    r = fmaf(n, -LN2_LO, r);
    float p = fmaf(C7, r, C6);
    p = fmaf(p, r, C5);
    p = fmaf(p, r, C4);
    p = fmaf(p, r, C3);
    p = fmaf(p, r, C2);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    const uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float sigmoid_scalar(float z)
{
    return 1.0f / (1.0f + exp_scalar(0.0f - z));
}

static inline void forward_scalar(float *a, const float *h1, const float *h3, int64_t i0,
                                  int64_t i1)
{
    for (int64_t i = i0; i < i1; i++)
        a[i] = h1[i] * sigmoid_scalar(h1[i]) * h3[i];
}

static inline void backward_scalar(float *dh1, float *dh3, const float *da, const float *h1,
                                   const float *h3, int64_t i0, int64_t i1)
{
    for (int64_t i = i0; i < i1; i++) {
        float z = h1[i], u = h3[i], g = da[i], s = sigmoid_scalar(z);
        dh1[i] = g * u * s * (1.0f + z * (1.0f - s));
        dh3[i] = g * z * s;
    }
}

/* The scalar loops compiled for CPUs with FMA (fmaf and nearbyintf become instructions;
 * the same results, since fmaf is exactly rounded either way) and for any x86-64. */
#define FMA __attribute__((target("fma,sse4.1")))

FMA static void forward_fma(float *a, const float *h1, const float *h3, int64_t i0, int64_t i1)
{
    forward_scalar(a, h1, h3, i0, i1);
}

FMA static void backward_fma(float *dh1, float *dh3, const float *da, const float *h1,
                             const float *h3, int64_t i0, int64_t i1)
{
    backward_scalar(dh1, dh3, da, h1, h3, i0, i1);
}

static void forward_any(float *a, const float *h1, const float *h3, int64_t i0, int64_t i1)
{
    forward_scalar(a, h1, h3, i0, i1);
}

static void backward_any(float *dh1, float *dh3, const float *da, const float *h1, const float *h3,
                         int64_t i0, int64_t i1)
{
    backward_scalar(dh1, dh3, da, h1, h3, i0, i1);
}

/* ---- AVX-512 ------------------------------------------------------------------ */

#define AVX512 __attribute__((target("avx512f")))

AVX512 static inline __m512 exp_avx512(__m512 x)
{
    x = _mm512_mask_mov_ps(x, _mm512_cmp_ps_mask(x, _mm512_set1_ps(EXP_LO), _CMP_NGE_UQ),
                           _mm512_set1_ps(EXP_LO));
    const __mmask16 big = _mm512_cmp_ps_mask(x, _mm512_set1_ps(EXP_HI), _CMP_GT_OQ);
    x = _mm512_mask_mov_ps(x, big, _mm512_set1_ps(EXP_HI));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_HI), x);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_LO), r);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(C7), r, _mm512_set1_ps(C6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    const __m512i bits =
        _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mask_mov_ps(_mm512_mul_ps(p, _mm512_castsi512_ps(bits)), big,
                              _mm512_set1_ps(INFINITY));
}

AVX512 static inline __m512 sigmoid_avx512(__m512 z)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 e = exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), z));
    return _mm512_div_ps(one, _mm512_add_ps(one, e));
}

static inline __mmask16 tail_mask(int64_t left)
{
    return left >= VEC ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
}

AVX512 static void forward_avx512(float *a, const float *h1, const float *h3, int64_t i0,
                                  int64_t i1)
{
    for (int64_t i = i0; i < i1; i += VEC) {
        const __mmask16 m = tail_mask(i1 - i);
        const __m512 z = _mm512_maskz_loadu_ps(m, h1 + i), u = _mm512_maskz_loadu_ps(m, h3 + i);
        const __m512 y = _mm512_mul_ps(_mm512_mul_ps(z, sigmoid_avx512(z)), u);
        _mm512_mask_storeu_ps(a + i, m, y);
    }
}

AVX512 static void backward_avx512(float *dh1, float *dh3, const float *da, const float *h1,
                                   const float *h3, int64_t i0, int64_t i1)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = i0; i < i1; i += VEC) {
        const __mmask16 m = tail_mask(i1 - i);
        const __m512 z = _mm512_maskz_loadu_ps(m, h1 + i), u = _mm512_maskz_loadu_ps(m, h3 + i);
        const __m512 g = _mm512_maskz_loadu_ps(m, da + i), s = sigmoid_avx512(z);
        /* g u s (1 + z (1 - s)) and g z s, multiplied left to right as the scalar path */
        const __m512 t = _mm512_add_ps(one, _mm512_mul_ps(z, _mm512_sub_ps(one, s)));
        const __m512 d1 = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(g, u), s), t);
        const __m512 d3 = _mm512_mul_ps(_mm512_mul_ps(g, z), s);
        _mm512_mask_storeu_ps(dh1 + i, m, d1);
        _mm512_mask_storeu_ps(dh3 + i, m, d3);
    }
}

/* ---- the gate ------------------------------------------------------------------ */

/* Blocks of this many elements per OpenMP iteration (a multiple of VEC). */
#define BLOCK 4096

void omni_swiglu_gate_forward(float *a, const float *h1, const float *h3, int64_t n)
{
    const gate_path path = path_of();
    const int64_t nb = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t i0 = b * BLOCK, i1 = i0 + BLOCK < n ? i0 + BLOCK : n;
        if (path == PATH_AVX512)
            forward_avx512(a, h1, h3, i0, i1);
        else if (path == PATH_FMA)
            forward_fma(a, h1, h3, i0, i1);
        else
            forward_any(a, h1, h3, i0, i1);
    }
}

void omni_swiglu_gate_backward(float *dh1, float *dh3, const float *da, const float *h1,
                               const float *h3, int64_t n)
{
    const gate_path path = path_of();
    const int64_t nb = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t i0 = b * BLOCK, i1 = i0 + BLOCK < n ? i0 + BLOCK : n;
        if (path == PATH_AVX512)
            backward_avx512(dh1, dh3, da, h1, h3, i0, i1);
        else if (path == PATH_FMA)
            backward_fma(dh1, dh3, da, h1, h3, i0, i1);
        else
            backward_any(dh1, dh3, da, h1, h3, i0, i1);
    }
}

/*
 * The bf16 variants: the same logistic function as the fp32 gate (sigmoid_avx512 on CPUs
 * with AVX-512-BF16, the only ones that run bf16; sigmoid_scalar elsewhere, the tests'
 * reference machines), the products in fp32, and each 32 results rounded by one
 * vcvtne2ps2bf16 (elsewhere omni_bf16_round). Element by element: no thread count changes
 * a result.
 */
#define GATE_BLOCK 4096

#define VEC_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* a = silu(h1) h3 for 32 elements at i (m of them valid), rounded */
VEC_TARGET static inline __m512i gate32(const float *h1, const float *h3, int64_t i, int64_t m)
{
    __m512 a[2];
    for (int k = 0; k < 2; k++) {
        const __mmask16 mk = tail_mask(m - 16 * k);
        const __m512 z = _mm512_maskz_loadu_ps(mk, h1 + i + 16 * k);
        const __m512 u = _mm512_maskz_loadu_ps(mk, h3 + i + 16 * k);
        a[k] = _mm512_mul_ps(_mm512_mul_ps(z, sigmoid_avx512(z)), u);
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
                const __m512 s = sigmoid_avx512(z), gs = _mm512_mul_ps(g, s);
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
                t[i] = h1[c + i] * sigmoid_scalar(h1[c + i]) * h3[c + i];
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
        float z = h1[i], u = h3[i], g = da[i], s = sigmoid_scalar(z);
        dh1[i] = omni_bf16_of(g * u * s * (1.0f + z * (1.0f - s)));
        dh3[i] = omni_bf16_of(g * z * s);
    }
}
