/*
 * ops: the matrix product against a plain triple loop in every transpose case with
 * leading dimensions wider than the rows, the SwiGLU gate's backward against central
 * differences, and the backend and thread settings.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "ops.h"

static void fill(float *p, int64_t n, const char *name)
{
    omni_rng r;
    omni_rng_init(&r, 5, name, 0);
    omni_rng_fill_normal(&r, 0, n, 0.0f, 1.0f, p);
}

/* C = alpha op(A) op(B) + beta C by definition, in double. */
static void reference(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                      const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                      float *C, int64_t ldc)
{
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0.0;
            for (int64_t k = 0; k < K; k++) {
                double a = ta ? A[k * lda + i] : A[i * lda + k];
                double b = tb ? B[j * ldb + k] : B[k * ldb + j];
                s += a * b;
            }
            C[i * ldc + j] = (float)((double)alpha * s + (double)beta * (double)C[i * ldc + j]);
        }
}

Test(ops, matmul_matches_the_definition_in_every_transpose_case)
{
    enum { M = 5, N = 7, K = 3, PAD = 2 };
    for (int c = 0; c < 4; c++) {
        bool ta = c & 1, tb = c & 2;
        int64_t lda = (ta ? M : K) + PAD, ldb = (tb ? K : N) + PAD, ldc = N + PAD;
        float A[(M + PAD) * (K + PAD)], B[(N + PAD) * (K + PAD)], C[M * (N + PAD)],
            R[M * (N + PAD)];
        fill(A, (int64_t)(sizeof A / sizeof A[0]), "A");
        fill(B, (int64_t)(sizeof B / sizeof B[0]), "B");
        fill(C, M * ldc, "C");
        memcpy(R, C, sizeof C);
        omni_matmul(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, 2.0f, C, ldc);
        reference(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, 2.0f, R, ldc);
        for (int64_t i = 0; i < M * ldc; i++)
            cr_assert_float_eq(C[i], R[i], 1e-5f, "trans %d/%d element %lld: %g vs %g", ta, tb,
                               (long long)i, (double)C[i], (double)R[i]);
    }
}

Test(ops, matmul_of_no_rows_leaves_the_output_alone)
{
    float c[4] = {1, 2, 3, 4};
    omni_matmul(false, false, 0, 2, 2, 1.0f, NULL, 2, NULL, 2, 0.0f, c, 2);
    omni_matmul_forward(c, NULL, NULL, 0, 2, 2, 0.0f);
    cr_assert(c[0] == 1 && c[3] == 4);
}

Test(ops, linear_backward_is_the_transpose_of_forward)
{
    enum { n = 4, in = 3, k = 5 };
    float x[n * in], w[in * k], dy[n * k], dx[n * in] = {0}, dw[in * k] = {0};
    fill(x, n * in, "x");
    fill(w, in * k, "w");
    fill(dy, n * k, "dy");
    omni_matmul_backward(dx, dw, dy, x, w, n, in, k);
    for (int64_t t = 0; t < n; t++)
        for (int64_t i = 0; i < in; i++) {
            double s = 0.0;
            for (int64_t j = 0; j < k; j++)
                s += (double)dy[t * k + j] * (double)w[i * k + j];
            cr_assert_float_eq(dx[t * in + i], (float)s, 1e-5f);
        }
    for (int64_t i = 0; i < in; i++)
        for (int64_t j = 0; j < k; j++) {
            double s = 0.0;
            for (int64_t t = 0; t < n; t++)
                s += (double)x[t * in + i] * (double)dy[t * k + j];
            cr_assert_float_eq(dw[i * k + j], (float)s, 1e-5f);
        }
}

/* f = sum_i r_i silu(h1_i) h3_i; its derivatives by central differences in double. */
Test(ops, swiglu_gate_backward_matches_finite_differences)
{
    enum { n = 64 };
    float h1[n], h3[n], r[n], a[n], dh1[n], dh3[n];
    fill(h1, n, "h1");
    fill(h3, n, "h3");
    fill(r, n, "r");
    omni_swiglu_gate_forward(a, h1, h3, n);
    omni_swiglu_gate_backward(dh1, dh3, r, h1, h3, n);
    for (int64_t i = 0; i < n; i++) {
        const double h = 1e-3, z = h1[i], u = h3[i];
        double silu_p = (z + h) / (1.0 + exp(-(z + h))), silu_m = (z - h) / (1.0 + exp(-(z - h)));
        double num1 = (double)r[i] * u * (silu_p - silu_m) / (2 * h);
        double num3 = (double)r[i] * z / (1.0 + exp(-z));
        cr_assert_float_eq(a[i], (float)(u * z / (1.0 + exp(-z))), 1e-5f);
        cr_assert(fabs((double)dh1[i] - num1) <= 1e-4 + 1e-3 * fabs(num1), "dh1[%lld] %g vs %g",
                  (long long)i, (double)dh1[i], num1);
        cr_assert(fabs((double)dh3[i] - num3) <= 1e-5 + 1e-5 * fabs(num3));
    }
    /* In place, as the experts call it: dh1 over h1, dh3 over h3. */
    float g1[n], g3[n];
    memcpy(g1, h1, sizeof h1);
    memcpy(g3, h3, sizeof h3);
    omni_swiglu_gate_backward(g1, g3, r, g1, g3, n);
    cr_assert(!memcmp(g1, dh1, sizeof g1) && !memcmp(g3, dh3, sizeof g3));
}

Test(ops, gemm_backend_refuses_one_not_built)
{
    cr_assert_eq(omni_gemm_backend_of(), OMNI_GEMM_OPENBLAS);
    cr_assert_str_eq(omni_gemm_backend_name(OMNI_GEMM_OPENBLAS), "openblas");
    cr_assert_eq(omni_gemm_set_backend(OMNI_GEMM_BACKEND_COUNT), OMNI_ERR_CONFIG);
    cr_assert_eq(omni_gemm_backend_of(), OMNI_GEMM_OPENBLAS);
}

Test(ops, blas_threads_follow_an_explicit_setting)
{
    omni_experiment x;
    omni_experiment_defaults(&x);
    x.parallel.threads = 1;
    int n = 0;
    cr_assert_eq(omni_blas_set_threads(&x, MPI_COMM_NULL, &n), OMNI_OK); /* no MPI needed */
    cr_assert_eq(n, 1);
}
