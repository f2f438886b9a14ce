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

#endif /* OMNI_OPS_PRIVATE_H */
