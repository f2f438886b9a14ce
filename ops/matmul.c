/* ops: the matrix product (one entry point over the selected GEMM library: OpenBLAS, or
 * oneDNN in onednn.c), its backend and threads, and the linear-map pair built on it. */
#include <cblas.h>
#include <stdlib.h>

#include "ops_private.h"

/* -1 until the first selection, or the first product, resolves it */
static int backend = -1;
static int gemm_threads; /* 0: the libraries' own default */

static const char *const backend_names[] = {"openblas", "onednn"};
_Static_assert(sizeof backend_names / sizeof backend_names[0] == OMNI_GEMM_BACKEND_COUNT,
               "one name per GEMM backend");

omni_status omni_gemm_set_backend(omni_gemm_backend b)
{
    if ((int)b < 0 || b >= OMNI_GEMM_BACKEND_COUNT)
        return omni_fail(OMNI_ERR_CONFIG, "ops: GEMM backend %d is not in this build", (int)b);
    omni_status st = b == OMNI_GEMM_ONEDNN ? omni_onednn_init() : OMNI_OK;
    if (st)
        return st;
    backend = (int)b;
    return OMNI_OK;
}

omni_status omni_gemm_choose(omni_gemm_choice c)
{
    if (c == OMNI_GEMM_CHOICE_AUTO) {
        const char *env = getenv("OMNI_GEMM");
        if (env && *env && !omni_gemm_choice_parse(env, &c))
            return omni_fail(OMNI_ERR_CONFIG,
                             "ops: the environment's OMNI_GEMM is \"%s\", expected auto, onednn "
                             "or openblas",
                             env);
    }
    switch (c) {
    case OMNI_GEMM_CHOICE_ONEDNN:
        return omni_gemm_set_backend(OMNI_GEMM_ONEDNN);
    case OMNI_GEMM_CHOICE_OPENBLAS:
        return omni_gemm_set_backend(OMNI_GEMM_OPENBLAS);
    default:
        return omni_gemm_set_backend(omni_onednn_preferred() ? OMNI_GEMM_ONEDNN
                                                             : OMNI_GEMM_OPENBLAS);
    }
}

omni_gemm_backend omni_gemm_backend_of(void)
{
    if (backend < 0 && omni_gemm_choose(OMNI_GEMM_CHOICE_AUTO)) {
        omni_log_any_rank(OMNI_LOG_WARN, "%s; the products use OpenBLAS", omni_error_message());
        omni_error_clear();
        backend = OMNI_GEMM_OPENBLAS;
    }
    return (omni_gemm_backend)backend;
}

const char *omni_gemm_backend_name(omni_gemm_backend b)
{
    return (int)b >= 0 && b < OMNI_GEMM_BACKEND_COUNT ? backend_names[b] : "unknown";
}

const char *omni_gemm_kernel(omni_gemm_backend b)
{
    switch (b) {
    case OMNI_GEMM_OPENBLAS:
        return openblas_get_corename();
    case OMNI_GEMM_ONEDNN:
        return omni_onednn_kernel();
    default:
        return "unknown";
    }
}

int omni_gemm_threads(void)
{
    return gemm_threads;
}

void omni_gemm_set_threads(int n)
{
    OMNI_ASSERT(n >= 1);
    gemm_threads = n;
    openblas_set_num_threads(n);
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
    switch (omni_gemm_backend_of()) {
    case OMNI_GEMM_ONEDNN:
        omni_onednn_matmul(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
                           gemm_threads);
        break;
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
