/* ops, private: the oneDNN backend (onednn.c) as matmul.c calls it. */
#ifndef OMNI_OPS_PRIVATE_H
#define OMNI_OPS_PRIVATE_H

#include "ops.h"

/* Create the engine and stream and one primitive; OMNI_ERR_CONFIG naming the fault. */
omni_status omni_onednn_init(void);
/* Whether oneDNN is the faster backend on this CPU (measured on AVX-512: docs/bench.md). */
bool omni_onednn_preferred(void);
/* "gemm:jit, avx512_core": the implementation of its matmul and the instruction set. */
const char *omni_onednn_kernel(void);
/* omni_matmul on oneDNN (M, N > 0), on `threads` OpenMP threads (0: the current count). */
void omni_onednn_matmul(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                        const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                        float *C, int64_t ldc, int threads);

/* The same with bf16 A and B (f32 sums and C): oneDNN's bf16 matmul. */
void omni_onednn_matmul_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                             const uint16_t *A, int64_t lda, const uint16_t *B, int64_t ldb,
                             float beta, float *C, int64_t ldc, int threads);
/* Whether oneDNN runs bf16 kernels here (its ISA includes avx512_core_bf16; ONEDNN_MAX_CPU_ISA
 * may lower it). */
bool omni_onednn_has_bf16(void);
/* The threads of every product (0: the libraries' default), set by omni_gemm_set_threads. */
int omni_gemm_threads(void);

/* The SwiGLU gate on its scalar path even where AVX-512 is (tests: the paths agree to the
 * bit). Not thread-safe: set it between products. */
void omni_gate_force_scalar(bool on);

#endif /* OMNI_OPS_PRIVATE_H */
