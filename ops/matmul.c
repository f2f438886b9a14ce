/* ops: the matrix product (one entry point over the selected GEMM library) and the
 * linear-map pair built on it. */
#include <cblas.h>

#include "ops.h"

static omni_gemm_backend backend = OMNI_GEMM_OPENBLAS;

static const char *const backend_names[] = {"openblas"};
_Static_assert(sizeof backend_names / sizeof backend_names[0] == OMNI_GEMM_BACKEND_COUNT,
               "one name per GEMM backend");

omni_status omni_gemm_set_backend(omni_gemm_backend b)
{
    if ((int)b < 0 || b >= OMNI_GEMM_BACKEND_COUNT)
        return omni_fail(OMNI_ERR_CONFIG, "ops: GEMM backend %d is not in this build", (int)b);
    backend = b;
    return OMNI_OK;
}

omni_gemm_backend omni_gemm_backend_of(void)
{
    return backend;
}

const char *omni_gemm_backend_name(omni_gemm_backend b)
{
    return (int)b >= 0 && b < OMNI_GEMM_BACKEND_COUNT ? backend_names[b] : "unknown";
}

bool omni_matmul_fits(int64_t a, int64_t b)
{
    return a >= 0 && b >= 0 && (b == 0 || a <= INT32_MAX / b);
}

void omni_matmul(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                 int64_t ldc)
{
    if (M == 0 || N == 0)
        return;
    switch (backend) {
    case OMNI_GEMM_OPENBLAS:
    default:
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                    trans_b ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K, alpha, A, (int)lda,
                    B, (int)ldb, beta, C, (int)ldc);
        break;
    }
}

void omni_matmul_forward(float *out, const float *inp, const float *w, int64_t n, int64_t in,
                         int64_t k, float beta)
{
    omni_matmul(false, false, n, k, in, 1.0f, inp, in, w, k, beta, out, k);
}

void omni_matmul_backward(float *dinp, float *dw, const float *dout, const float *inp,
                          const float *w, int64_t n, int64_t in, int64_t k)
{
    if (n == 0)
        return;
    if (dinp)
        omni_matmul(false, true, n, in, k, 1.0f, dout, k, w, k, 1.0f, dinp, in);
    omni_matmul(true, false, in, k, n, 1.0f, inp, in, dout, k, 1.0f, dw, k);
}
