/*
 * ops: the model's products in its compute precision (model.precision). In fp32 they are
 * omni_matmul. In bf16 both inputs are rounded to bfloat16 (round to nearest even, as the
 * CPU's vcvtneps2bf16: subnormal inputs become zero) and oneDNN's bf16 matmul multiplies
 * them with fp32 sums into an fp32 C, whatever parallel.gemm says (OpenBLAS 0.3.21 has no
 * bf16 GEMM). A product of two bf16 numbers is exact in fp32, so a bf16 product differs
 * from the fp32 one only by the rounding of its inputs (8 significant bits: relative
 * 2^-8 at most, each).
 *
 * Activations are rounded per call, by AVX-512-BF16 code, into two scratch buffers that
 * grow to the largest product of the first step and stay. A B operand that the caller
 * marks as a weight is rounded once into a copy kept per (address, shape), until
 * omni_bf16_weights_changed says the weights moved (the model says so at the start of
 * each forward pass, after any update or load): once per step for forward and backward.
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "ops_private.h"

#define WEIGHTS_MAX 4096

typedef struct {
    const float *src;
    int64_t rows, cols, ld;
    uint64_t generation; /* of the weights it was rounded from */
    uint16_t *copy;      /* [rows, cols], dense */
} weight_copy;

static struct {
    omni_precision precision;
    uint16_t *a, *b; /* scratch of the rounded activations */
    int64_t a_cap, b_cap;
    uint16_t *slot[OMNI_BF16_SLOT_COUNT]; /* the callers' scratch (omni_bf16_scratch) */
    int64_t slot_cap[OMNI_BF16_SLOT_COUNT];
    uint64_t generation;
    int n;
    weight_copy w[WEIGHTS_MAX];
} bf;

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static void
round_avx512(uint16_t *dst, const float *src, int64_t n)
{
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
        _mm512_storeu_si512((void *)(dst + i), (__m512i)h);
    }
    for (; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
        _mm256_mask_storeu_epi16((void *)(dst + i), m, (__m256i)h);
    }
}

uint16_t omni_bf16_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7f800000u) == 0x7f800000u) /* inf stays, NaN stays a (quiet) NaN */
        return (uint16_t)((u >> 16) | ((u & 0x007fffffu) ? 0x40u : 0u));
    if ((u & 0x7f800000u) == 0) /* zero and subnormals: signed zero, as the instruction */
        return (uint16_t)((u >> 16) & 0x8000u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float omni_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

void omni_bf16_round(uint16_t *dst, const float *src, int64_t n)
{
    if (omni_bf16_available()) {
        round_avx512(dst, src, n);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        dst[i] = omni_bf16_of(src[i]);
}

bool omni_bf16_available(void)
{
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && omni_onednn_has_bf16();
    }
    return known;
}

omni_status omni_gemm_set_precision(omni_precision p)
{
    if ((int)p < 0 || p >= OMNI_PREC_COUNT)
        return omni_fail(OMNI_ERR_CONFIG, "ops: precision %d is not in this build", (int)p);
    if (p == OMNI_PREC_BF16) {
        if (!omni_bf16_available()) {
            __builtin_cpu_init();
            if (__builtin_cpu_supports("avx512bf16"))
                return omni_fail(OMNI_ERR_CONFIG,
                                 "model.precision bf16: this CPU has avx512_bf16 but oneDNN does "
                                 "not use it (ONEDNN_MAX_CPU_ISA=%s); use model.precision fp32",
                                 getenv("ONEDNN_MAX_CPU_ISA") ? getenv("ONEDNN_MAX_CPU_ISA")
                                                              : "unset");
            return omni_fail(OMNI_ERR_CONFIG,
                             "model.precision bf16 needs a CPU with the avx512_bf16 flag "
                             "(AVX-512 BF16: Zen 4, Cooper Lake, Sapphire Rapids and later), "
                             "which this CPU lacks; use model.precision fp32");
        }
        omni_status st = omni_onednn_init();
        if (st)
            return st;
    }
    bf.precision = p;
    return OMNI_OK;
}

omni_precision omni_gemm_precision(void)
{
    return bf.precision;
}

void omni_bf16_weights_changed(void)
{
    bf.generation++;
}

void omni_bf16_weight_changed(const float *w, int64_t n)
{
    for (int i = 0; i < bf.n; i++)
        if (bf.w[i].src >= w && bf.w[i].src < w + n)
            bf.w[i].generation = bf.generation - 1;
}

/* Scratch of at least n elements (grown, never shrunk); NULL when out of memory. It grows
 * by half again at least: the rows of the experts vary from step to step, and a new
 * allocation (its pages faulted in) for each new largest count would recur for a while. */
static uint16_t *scratch(uint16_t **buf, int64_t *cap, int64_t n)
{
    if (n > *cap) {
        int64_t grown = *cap + *cap / 2 > n ? *cap + *cap / 2 : n;
        uint16_t *p = omni_alloc(grown, sizeof *p, "bf16 products");
        if (!p && grown > n)
            p = omni_alloc(grown = n, sizeof *p, "bf16 products");
        if (!p)
            return NULL;
        omni_free(*buf);
        *buf = p, *cap = grown;
    }
    return *buf;
}

/* The stored [rows, cols] matrix at src (leading dimension ld) rounded into dense dst, on
 * the OpenMP threads when it is large (element by element: no thread count changes it). */
static void round_matrix(uint16_t *dst, const float *src, int64_t rows, int64_t cols, int64_t ld)
{
    const int64_t n = rows * cols, chunk = 16384;
    if (ld == cols) {
#pragma omp parallel for schedule(static) if (n > 4 * chunk)
        for (int64_t c = 0; c < n; c += chunk)
            omni_bf16_round(dst + c, src + c, n - c < chunk ? n - c : chunk);
        return;
    }
#pragma omp parallel for schedule(static) if (n > 4 * chunk)
    for (int64_t r = 0; r < rows; r++)
        omni_bf16_round(dst + r * cols, src + r * ld, cols);
}

/* The bf16 copy of the weight matrix at src, rounded now if the weights changed since. */
static const uint16_t *weight(const float *src, int64_t rows, int64_t cols, int64_t ld)
{
    weight_copy *w = NULL;
    for (int i = 0; i < bf.n && !w; i++)
        if (bf.w[i].src == src && bf.w[i].rows == rows && bf.w[i].cols == cols && bf.w[i].ld == ld)
            w = &bf.w[i];
    if (!w) {
        if (bf.n == WEIGHTS_MAX) { /* a model this size is not expected: start again */
            for (int i = 0; i < bf.n; i++)
                omni_free(bf.w[i].copy);
            bf.n = 0;
        }
        uint16_t *copy = omni_alloc(rows * cols, sizeof *copy, "bf16 weights");
        if (!copy)
            return NULL;
        w = &bf.w[bf.n++];
        *w = (weight_copy){.src = src, .rows = rows, .cols = cols, .ld = ld, .copy = copy};
        w->generation = bf.generation - 1;
    }
    if (w->generation != bf.generation) {
        round_matrix(w->copy, src, rows, cols, ld);
        w->generation = bf.generation;
    }
    return w->copy;
}

void omni_matmul_mp(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                    const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                    int64_t ldc, bool b_is_weight)
{
    if (bf.precision == OMNI_PREC_FP32 || M == 0 || N == 0 || K == 0) {
        omni_matmul(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* stored shapes: A is [M, K] or, transposed, [K, M]; B is [K, N] or [N, K] */
    const int64_t ar = trans_a ? K : M, ac = trans_a ? M : K;
    const int64_t br = trans_b ? N : K, bc = trans_b ? K : N;
    uint16_t *a = scratch(&bf.a, &bf.a_cap, ar * ac);
    const uint16_t *b = b_is_weight ? weight(B, br, bc, ldb) : scratch(&bf.b, &bf.b_cap, br * bc);
    if (!a || !b) {
        omni_log_any_rank(OMNI_LOG_ERROR, "ops: out of memory for a bf16 product");
        OMNI_ASSERT(a && b);
    }
    round_matrix(a, A, ar, ac, lda);
    if (!b_is_weight)
        round_matrix(bf.b, B, br, bc, ldb);
    omni_onednn_matmul_bf16(trans_a, trans_b, M, N, K, alpha, a, ac, b, bc, beta, C, ldc,
                            omni_gemm_threads());
}

void omni_matmul_forward_mp(float *out, const float *inp, const float *w, int64_t n, int64_t in,
                            int64_t k, float beta)
{
    omni_matmul_mp(false, false, n, k, in, 1.0f, inp, in, w, k, beta, out, k, true);
}

void omni_matmul_backward_mp(float *dinp, float *dw, const float *dout, const float *inp,
                             const float *w, int64_t n, int64_t in, int64_t k)
{
    if (n == 0)
        return;
    if (bf.precision == OMNI_PREC_FP32 || in == 0 || k == 0) {
        omni_matmul_backward(dinp, dw, dout, inp, w, n, in, k);
        return;
    }
    /* dout [n, k] enters both products: rounded once */
    uint16_t *g = scratch(&bf.b, &bf.b_cap, n * k), *x = scratch(&bf.a, &bf.a_cap, n * in);
    const uint16_t *wb = dinp ? weight(w, in, k, k) : NULL;
    if (!g || !x || (dinp && !wb)) {
        omni_log_any_rank(OMNI_LOG_ERROR, "ops: out of memory for a bf16 product");
        OMNI_ASSERT(g && x && (wb || !dinp));
    }
    round_matrix(g, dout, n, k, k);
    if (dinp) /* dinp += dout W^T, W stored [in, k] */
        omni_onednn_matmul_bf16(false, true, n, in, k, 1.0f, g, k, wb, k, 1.0f, dinp, in,
                                omni_gemm_threads());
    round_matrix(x, inp, n, in, in); /* dw += inp^T dout */
    omni_onednn_matmul_bf16(true, false, in, k, n, 1.0f, x, in, g, k, 1.0f, dw, k,
                            omni_gemm_threads());
}

void omni_bf16_round_rows(uint16_t *dst, const float *src, int64_t rows, int64_t cols, int64_t ld)
{
    round_matrix(dst, src, rows, cols, ld);
}

const uint16_t *omni_bf16_weight(const float *w, int64_t rows, int64_t cols, int64_t ld)
{
    const uint16_t *copy = weight(w, rows, cols, ld);
    if (!copy) {
        omni_log_any_rank(OMNI_LOG_ERROR, "ops: out of memory for a bf16 weight copy");
        OMNI_ASSERT(copy);
    }
    return copy;
}

uint16_t *omni_bf16_scratch(omni_bf16_slot slot, int64_t n)
{
    OMNI_ASSERT((int)slot >= 0 && slot < OMNI_BF16_SLOT_COUNT);
    uint16_t *p = scratch(&bf.slot[slot], &bf.slot_cap[slot], n > 0 ? n : 1);
    if (!p) {
        omni_log_any_rank(OMNI_LOG_ERROR, "ops: out of memory for bf16 activations");
        OMNI_ASSERT(p);
    }
    return p;
}

void omni_matmul_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                      const uint16_t *A, int64_t lda, const uint16_t *B, int64_t ldb, float beta,
                      float *C, int64_t ldc)
{
    OMNI_ASSERT(bf.precision == OMNI_PREC_BF16);
    if (M == 0 || N == 0)
        return;
    omni_onednn_matmul_bf16(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
                            omni_gemm_threads());
}

void omni_matmul_forward_bf16(float *out, const uint16_t *inp, const float *w, int64_t n,
                              int64_t in, int64_t k, float beta)
{
    if (n == 0 || k == 0)
        return;
    omni_matmul_bf16(false, false, n, k, in, 1.0f, inp, in, omni_bf16_weight(w, in, k, k), k, beta,
                     out, k);
}

void omni_matmul_backward_bf16(float *dinp, float *dw, const uint16_t *dout, const uint16_t *inp,
                               const float *w, int64_t n, int64_t in, int64_t k)
{
    if (n == 0 || in == 0 || k == 0)
        return;
    if (dinp) /* dinp += dout W^T, W stored [in, k] */
        omni_matmul_bf16(false, true, n, in, k, 1.0f, dout, k, omni_bf16_weight(w, in, k, k), k,
                         1.0f, dinp, in);
    omni_matmul_bf16(true, false, in, k, n, 1.0f, inp, in, dout, k, 1.0f, dw, k); /* inp^T dout */
}
