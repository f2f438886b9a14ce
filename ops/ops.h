/*
 * ops — the numeric kit that the model, the experts and the router share: one matrix
 * product behind which the GEMM library is chosen, the dense-layer product pair built on
 * it, the SwiGLU gate and the logistic function, and the BLAS library's thread setting.
 * A change of GEMM backend or of precision is made here once; callers do not change.
 *
 * Conventions: row-major, sizes in int64_t (checked against the int32 that BLAS takes
 * when a model is created, see omni_matmul_fits), outputs before inputs.
 */
#ifndef OMNI_OPS_H
#define OMNI_OPS_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "base.h"
#include "experiment.h"

/* ---- the matrix product --------------------------------------------------------- */

/* The library that computes omni_matmul (fp32); bf16 products (omni_matmul_mp) always
 * run on oneDNN. */
typedef enum {
    OMNI_GEMM_OPENBLAS = 0, /* cblas_sgemm; the tests' reference */
    OMNI_GEMM_ONEDNN,       /* oneDNN's matmul primitive (ops/onednn.c) */
    OMNI_GEMM_BACKEND_COUNT
} omni_gemm_backend;

/* Select the backend of every later omni_matmul of this process (not thread-safe: call
 * before training starts). OMNI_ERR_CONFIG for a backend this build or machine lacks. */
omni_status omni_gemm_set_backend(omni_gemm_backend b);
/*
 * Select it from a parallel.gemm setting: onednn or openblas as given; auto takes the
 * environment's OMNI_GEMM (onednn, openblas or auto) and else oneDNN where it is the
 * faster (AVX-512 CPUs, docs/bench.md), OpenBLAS elsewhere. OMNI_ERR_CONFIG for a bad
 * OMNI_GEMM or a oneDNN that cannot start.
 */
omni_status omni_gemm_choose(omni_gemm_choice c);
/* The backend in use; before any selection, the choice of auto (as omni_gemm_choose). */
omni_gemm_backend omni_gemm_backend_of(void);
/* "openblas", "onednn": the name a log line shows. */
const char *omni_gemm_backend_name(omni_gemm_backend b);
/* The kernels a backend runs on this machine: OpenBLAS's core ("Haswell"), oneDNN's
 * implementation and instruction set ("gemm:jit, avx512_core"). */
const char *omni_gemm_kernel(omni_gemm_backend b);
/* Threads of every later product, on either backend (n >= 1). OpenBLAS's own pool;
 * oneDNN's OpenMP threads, set around each product. */
void omni_gemm_set_threads(int n);

/*
 * C = alpha op(A) op(B) + beta C, with op(A) [M, K], op(B) [K, N], C [M, N], each
 * row-major with the given leading dimension; op transposes when trans_*. M, N or K of
 * 0 is a no-op on C only when beta is 1 (as BLAS: with K = 0, C = beta C). The one
 * entry point of every matrix product in the model, the experts and the router.
 */
void omni_matmul(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                 int64_t ldc);

/* Whether a * b fits the int32 sizes a GEMM call takes (both non-negative). */
bool omni_matmul_fits(int64_t a, int64_t b);

/* A linear map over rows: out = beta * out + inp W, with inp [n, in], W [in, k],
 * out [n, k]. */
void omni_matmul_forward(float *out, const float *inp, const float *w, int64_t n, int64_t in,
                         int64_t k, float beta);
/* Its backward: dinp += dout W^T (skipped when dinp is NULL); dw += inp^T dout. */
void omni_matmul_backward(float *dinp, float *dw, const float *dout, const float *inp,
                          const float *w, int64_t n, int64_t in, int64_t k);

/* ---- the model's products: the compute precision (ops/bf16.c) ------------------ */

/* Whether this machine runs bf16 products: the CPU has avx512_bf16 (and AVX-512 BW/VL)
 * and oneDNN uses it. */
bool omni_bf16_available(void);
/*
 * Set the precision of omni_matmul_mp and its linear pair (not thread-safe: call before
 * training): fp32 (the default), or bf16 inputs with fp32 sums on oneDNN whatever the
 * backend of omni_matmul. OMNI_ERR_CONFIG naming the CPU flag avx512_bf16 where bf16 is not
 * available. omni_matmul itself (the router, the tests' references) stays fp32.
 */
omni_status omni_gemm_set_precision(omni_precision p);
omni_precision omni_gemm_precision(void);
/*
 * The model's products (dense layers, attention projections, experts, head): omni_matmul
 * in the precision set. In bf16, A and B are rounded to bf16 (nearest even) and the
 * products summed in fp32. b_is_weight: B is a parameter unchanged since the last
 * omni_bf16_weights_changed, whose bf16 copy is made once and reused.
 */
void omni_matmul_mp(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                    const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                    int64_t ldc, bool b_is_weight);
/* The parameters may have changed (an update, a load): bf16 copies are remade on use. */
void omni_bf16_weights_changed(void);
/* The n floats at w changed (a buffer that holds different weights from one use to the next,
 * as the MoE layer's shadow copies): the bf16 copies made from them are remade on use. */
void omni_bf16_weight_changed(const float *w, int64_t n);
/* omni_matmul_forward and omni_matmul_backward in the precision set (w a weight). */
void omni_matmul_forward_mp(float *out, const float *inp, const float *w, int64_t n, int64_t in,
                            int64_t k, float beta);
void omni_matmul_backward_mp(float *dinp, float *dw, const float *dout, const float *inp,
                             const float *w, int64_t n, int64_t in, int64_t k);

/*
 * Activations rounded once (bf16 precision only). An activation that enters several
 * products (a norm's output, a gradient entering a backward pair, the SwiGLU gate) is
 * rounded where it is made, and the products below take it as it is: the result is that of
 * omni_matmul_mp on the fp32 activation, to the bit, with one rounding instead of one per
 * product. A bf16 operand has its own leading dimension; weights stay fp32 masters whose
 * copies omni_bf16_weight returns (made once per omni_bf16_weights_changed).
 */
void omni_matmul_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                      const uint16_t *A, int64_t lda, const uint16_t *B, int64_t ldb, float beta,
                      float *C, int64_t ldc);
/* The bf16 copy of the weight [rows, cols] at w (leading dimension ld), stored dense. */
const uint16_t *omni_bf16_weight(const float *w, int64_t rows, int64_t cols, int64_t ld);
/* omni_matmul_forward_mp and omni_matmul_backward_mp with the activations inp and dout
 * already rounded (dense, leading dimensions in and k). */
void omni_matmul_forward_bf16(float *out, const uint16_t *inp, const float *w, int64_t n,
                              int64_t in, int64_t k, float beta);
void omni_matmul_backward_bf16(float *dinp, float *dw, const uint16_t *dout, const uint16_t *inp,
                               const float *w, int64_t n, int64_t in, int64_t k);
/* Scratch for the rounded activations of a layer that has no buffer of its own for them
 * (the experts): n elements that stay until the next call for the same slot; it grows to
 * the largest n asked for and stays (the first step's sizes). */
typedef enum {
    OMNI_BF16_SLOT_X = 0, /* a layer's input rows */
    OMNI_BF16_SLOT_DY,    /* the gradient entering it */
    OMNI_BF16_SLOT_A,     /* the SwiGLU gate's output */
    OMNI_BF16_SLOT_DH,    /* the gate's two input gradients, side by side */
    OMNI_BF16_SLOT_COUNT
} omni_bf16_slot;
uint16_t *omni_bf16_scratch(omni_bf16_slot slot, int64_t n);

/* bf16 of f (nearest even; subnormals to signed zero, NaN stays NaN) and back. */
uint16_t omni_bf16_of(float f);
float omni_bf16_to_f32(uint16_t h);
/* dst[i] = omni_bf16_of(src[i]), with AVX-512-BF16 where available. */
void omni_bf16_round(uint16_t *dst, const float *src, int64_t n);
/* The [rows, cols] matrix at src (leading dimension ld) rounded into dense dst, on the
 * OpenMP threads when it is large (no thread count changes it). */
void omni_bf16_round_rows(uint16_t *dst, const float *src, int64_t rows, int64_t cols, int64_t ld);

/* ---- activations -------------------------------------------------------------- */

/* The logistic function 1 / (1 + e^-z). */
static inline float omni_sigmoid(float z)
{
    return 1.0f / (1.0f + expf(-z));
}

/* The SwiGLU gate over n elements: a = silu(h1) * h3, silu(z) = z sigmoid(z). */
void omni_swiglu_gate_forward(float *a, const float *h1, const float *h3, int64_t n);
/*
 * Its backward given da: dh1 = da h3 silu'(h1), dh3 = da silu(h1), written (not
 * accumulated), with silu'(z) = s (1 + z (1 - s)), s = sigmoid(z). Element i is read
 * before it is written, so dh1 may alias h1 and dh3 may alias h3 or da.
 */
void omni_swiglu_gate_backward(float *dh1, float *dh3, const float *da, const float *h1,
                               const float *h3, int64_t n);
/* The same with bf16 outputs (the inputs of products only): each element computed as the
 * fp32 functions do, then rounded (omni_bf16_of), in one pass. */
void omni_swiglu_gate_forward_bf16(uint16_t *a, const float *h1, const float *h3, int64_t n);
void omni_swiglu_gate_backward_bf16(uint16_t *dh1, uint16_t *dh3, const float *da, const float *h1,
                                    const float *h3, int64_t n);

/* ---- threads ------------------------------------------------------------------ */

/*
 * Collective over comm: set the OpenBLAS threads and the OpenMP threads of this process
 * (the same number: the model never calls BLAS inside its OpenMP regions) from
 * parallel.threads; 0 (auto) = online cores / processes on this node (ranks sharing
 * memory, MPI_Comm_split_type SHARED), at least 1. *threads (may be NULL) gets it.
 */
omni_status omni_blas_set_threads(const omni_experiment *x, MPI_Comm comm, int *threads);

/* The sum of x[i]^2 in double, in a fixed order (eight interleaved running sums): the
 * gradient norm's squares. */
double omni_sumsq(const float *x, int64_t n);

#endif /* OMNI_OPS_H */
