/*
 * ops: the matrix product against a plain triple loop in every transpose case with
 * leading dimensions wider than the rows, the SwiGLU gate's backward against central
 * differences, oneDNN against OpenBLAS, and the backend and thread settings.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ops.h"
#include "ops_private.h"

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
    for (int c = 0; c < 4 * OMNI_GEMM_BACKEND_COUNT; c++) {
        bool ta = c & 1, tb = c & 2;
        cr_assert_eq(omni_gemm_set_backend((omni_gemm_backend)(c / 4)), OMNI_OK, "%s",
                     omni_error_message());
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
            cr_assert_float_eq(C[i], R[i], 1e-5f, "%s trans %d/%d element %lld: %g vs %g",
                               omni_gemm_backend_name(omni_gemm_backend_of()), ta, tb, (long long)i,
                               (double)C[i], (double)R[i]);
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

/* The gate's two paths (AVX-512 where the CPU has it, scalar) agree to the bit on every
 * element, tails and extremes included, and both are within a few ulp of the gate in
 * double. */
Test(ops, swiglu_gate_paths_agree_and_are_accurate)
{
    enum { n = 4099 }; /* not a multiple of the 16 lanes */
    static float h1[n], h3[n], r[n], a[2][n], d1[2][n], d3[2][n];
    fill(h1, n, "h1");
    fill(h3, n, "h3");
    fill(r, n, "r");
    for (int64_t i = 0; i < n; i++)
        h1[i] *= i % 3 == 0 ? 30.0f : 3.0f; /* the sigmoid's tails too */
    static const float special[] = {0.0f,  -0.0f,  1e-30f, -1e-30f, 20.0f,    -20.0f,
                                    87.0f, -87.0f, 88.5f,  -88.5f,  100.0f,   -100.0f,
                                    1e30f, -1e30f, 1e-40f, -1e-40f, 0.34657f, -0.34658f};
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
        h1[n - 1 - i] = special[i];
    for (int path = 0; path < 2; path++) {
        omni_gate_force_scalar(path == 1);
        omni_swiglu_gate_forward(a[path], h1, h3, n);
        omni_swiglu_gate_backward(d1[path], d3[path], r, h1, h3, n);
    }
    omni_gate_force_scalar(false);
    cr_assert(!memcmp(a[0], a[1], sizeof a[0]), "forward differs between the two paths");
    cr_assert(!memcmp(d1[0], d1[1], sizeof d1[0]) && !memcmp(d3[0], d3[1], sizeof d3[0]),
              "backward differs between the two paths");
    for (int64_t i = 0; i < n; i++) {
        const double z = h1[i], u = h3[i], g = r[i], s = 1.0 / (1.0 + exp(-z));
        const double ya = z * s * u, y1 = g * u * s * (1.0 + z * (1.0 - s)), y3 = g * z * s;
        /* a few ulp of each factor: 1e-6 relative; plus 1e-35 absolute, since the sigmoid
         * below z = -88 is e^-88 (3e-39) rather than e^z */
        cr_assert(fabs((double)a[0][i] - ya) <= 1e-6 * fabs(ya) + 1e-35, "a[%lld] %g vs %g",
                  (long long)i, (double)a[0][i], ya);
        cr_assert(fabs((double)d1[0][i] - y1) <= 1e-6 * (fabs(g * u * s) * (1.0 + fabs(z))) + 1e-35,
                  "dh1[%lld] %g vs %g (z %g)", (long long)i, (double)d1[0][i], y1, z);
        cr_assert(fabs((double)d3[0][i] - y3) <= 1e-6 * fabs(y3) + 1e-35, "dh3[%lld] %g vs %g",
                  (long long)i, (double)d3[0][i], y3);
    }
}

/*
 * oneDNN and OpenBLAS on the model's kinds of product (forward, both backward products,
 * a row count that is no multiple of any block, leading dimensions wider than the rows,
 * alpha and beta as the layers use them): each within fp32 rounding of the product in
 * double, and so of each other. The bound is 1e-6 sqrt(K) sum_k |a_ik b_kj|: float32
 * rounding of a K-term sum is ~6e-8 sqrt(K) of that; a wrong element, transpose or
 * stride is off by the order of the sum itself.
 */
Test(ops, onednn_agrees_with_openblas_within_fp32_rounding)
{
    enum { PAD = 3 };
    static const int64_t shapes[][3] = {{131, 96, 64}, {67, 300, 129}, {200, 8, 48}, {1, 33, 17}};
    static const float ab[][2] = {{1.0f, 0.0f}, {1.0f, 1.0f}, {0.125f, 2.0f}};
    float *buf[6];
    const int64_t cap = 400 * 400;
    for (int i = 0; i < 6; i++) {
        buf[i] = omni_alloc(cap, sizeof(float), "test");
        cr_assert(buf[i]);
    }
    float *A = buf[0], *B = buf[1], *C0 = buf[2], *Cb = buf[3], *Cd = buf[4], *Abs = buf[5];
    fill(A, cap, "A");
    fill(B, cap, "B");
    fill(C0, cap, "C");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int c = 0; c < 4; c++)
            for (size_t v = 0; v < sizeof ab / sizeof ab[0]; v++) {
                const int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                const bool ta = c & 1, tb = c & 2;
                const float alpha = ab[v][0], beta = ab[v][1];
                const int64_t lda = (ta ? M : K) + PAD, ldb = (tb ? K : N) + PAD, ldc = N + PAD;
                memcpy(Cb, C0, (size_t)(M * ldc) * sizeof(float));
                memcpy(Cd, C0, (size_t)(M * ldc) * sizeof(float));
                memcpy(Abs, C0, (size_t)(M * ldc) * sizeof(float));
                cr_assert_eq(omni_gemm_set_backend(OMNI_GEMM_OPENBLAS), OMNI_OK);
                omni_matmul(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, Cb, ldc);
                cr_assert_eq(omni_gemm_set_backend(OMNI_GEMM_ONEDNN), OMNI_OK, "%s",
                             omni_error_message());
                omni_matmul(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, Cd, ldc);
                for (int64_t i = 0; i < M; i++)
                    for (int64_t j = 0; j < ldc; j++) {
                        const int64_t at = i * ldc + j;
                        if (j >= N) { /* the padding of C is never written */
                            cr_assert(Cb[at] == C0[at] && Cd[at] == C0[at]);
                            continue;
                        }
                        double exact = 0.0, size = 0.0;
                        for (int64_t k = 0; k < K; k++) {
                            double a = ta ? A[k * lda + i] : A[i * lda + k];
                            double b = tb ? B[j * ldb + k] : B[k * ldb + j];
                            exact += a * b, size += fabs(a * b);
                        }
                        exact = (double)alpha * exact + (double)beta * (double)C0[at];
                        size = fabs((double)alpha) * size + fabs((double)beta * (double)C0[at]);
                        const double tol = 1e-6 * sqrt((double)K) * size + 1e-7;
                        cr_assert(fabs((double)Cb[at] - exact) <= tol &&
                                      fabs((double)Cd[at] - exact) <= tol &&
                                      fabs((double)Cd[at] - (double)Cb[at]) <= tol,
                                  "%lldx%lldx%lld trans %d/%d alpha %g beta %g [%lld,%lld]: "
                                  "openblas %.9g onednn %.9g exact %.9g (tolerance %.3g)",
                                  (long long)M, (long long)N, (long long)K, ta, tb, (double)alpha,
                                  (double)beta, (long long)i, (long long)j, (double)Cb[at],
                                  (double)Cd[at], exact, tol);
                    }
            }
    for (int i = 0; i < 6; i++)
        omni_free(buf[i]);
}

/* With K = 0 each backend leaves C = beta C, as BLAS defines it (beta 0: zeros, even
 * over a NaN). */
Test(ops, matmul_with_no_inner_dimension_scales_the_output)
{
    for (int b = 0; b < OMNI_GEMM_BACKEND_COUNT; b++) {
        cr_assert_eq(omni_gemm_set_backend((omni_gemm_backend)b), OMNI_OK);
        float c[4] = {1, 2, 3, NAN}, d[4] = {1, 2, 3, 4};
        omni_matmul(false, false, 2, 2, 0, 1.0f, NULL, 1, NULL, 2, 0.0f, c, 2);
        omni_matmul(false, false, 2, 2, 0, 1.0f, NULL, 1, NULL, 2, 2.0f, d, 2);
        cr_assert(c[0] == 0 && c[3] == 0 && d[0] == 2 && d[3] == 8, "%s",
                  omni_gemm_backend_name((omni_gemm_backend)b));
    }
}

/* oneDNN on 1 and 2 threads: the same product within rounding (the split of the work may
 * change the order of the sums, as OpenBLAS's does). */
Test(ops, onednn_products_agree_across_thread_counts)
{
    enum { M = 96, N = 160, K = 256 };
    static float A[M * K], B[K * N], C1[M * N], C2[M * N];
    fill(A, M * K, "A");
    fill(B, K * N, "B");
    cr_assert_eq(omni_gemm_set_backend(OMNI_GEMM_ONEDNN), OMNI_OK);
    omni_gemm_set_threads(1);
    omni_matmul(false, false, M, N, K, 1.0f, A, K, B, N, 0.0f, C1, N);
    omni_gemm_set_threads(2);
    omni_matmul(false, false, M, N, K, 1.0f, A, K, B, N, 0.0f, C2, N);
    for (int64_t i = 0; i < M * N; i++)
        cr_assert_float_eq(C1[i], C2[i], 1e-4f * (1.0f + fabsf(C1[i])));
}

/* A thread that sends SIGUSR2 to the process every 20 microseconds until told to stop. */
static volatile sig_atomic_t signals_seen;
static atomic_bool stop_signalling;

static void count_signal(int sig)
{
    (void)sig;
    signals_seen++;
}

static void *signal_often(void *arg)
{
    (void)arg;
    const struct timespec gap = {0, 20000};
    while (!atomic_load(&stop_signalling)) {
        kill(getpid(), SIGUSR2);
        nanosleep(&gap, NULL);
    }
    return NULL;
}

/*
 * Signals during oneDNN's products (ops/onednn.c, "Signals"): oneDNN 2.6's sgemm kernels run
 * with the stack pointer in a heap workspace, and a signal frame written there corrupted
 * the heap ("corrupted size vs. prev_size" in a free inside dnnl_primitive_execute, within
 * a second at these shapes before the fix). 20,000 signals to the process while it
 * multiplies (however long a loaded machine takes to deliver them, up to 30 s), on 1 and 2
 * threads, with the heap in use: every product equals the one made without signals, the
 * process survives, and the signals were handled.
 */
Test(ops, onednn_products_survive_signals_during_the_kernels)
{
    enum { D = 32, F = 64, R = 100 }; /* the tiny test model's expert backward */
    /* on the heap, as the model's buffers: the signal frame lands on heap chunks */
    float *x = calloc(R * D, sizeof *x), *h = calloc(R * F, sizeof *h);
    float *ref = calloc(D * F, sizeof *ref), *dw = calloc(D * F, sizeof *dw);
    cr_assert(x && h && ref && dw);
    fill(x, R * D, "x");
    fill(h, R * F, "h");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = count_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGUSR2, &sa, NULL), 0);
    cr_assert_eq(omni_gemm_set_backend(OMNI_GEMM_ONEDNN), OMNI_OK, "%s", omni_error_message());
    for (int threads = 1; threads <= 2; threads++) {
        omni_gemm_set_threads(threads);
        omni_matmul(true, false, D, F, R, 1.0f, x, D, h, F, 0.0f, ref, F);
        signals_seen = 0;
        atomic_store(&stop_signalling, false);
        pthread_t killer;
        cr_assert_eq(pthread_create(&killer, NULL, signal_often, NULL), 0);
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        long products = 0, wrong = 0;
        do {
            omni_matmul(true, false, D, F, R, 1.0f, x, D, h, F, 0.0f, dw, F);
            wrong += memcmp(dw, ref, D * F * sizeof *dw) != 0;
            free(malloc(3000 + (size_t)(products % 5000))); /* the heap in use meanwhile */
            products++;
            clock_gettime(CLOCK_MONOTONIC, &t);
        } while ((signals_seen < 20000 || products < 100) &&
                 (double)(t.tv_sec - t0.tv_sec) + 1e-9 * (double)(t.tv_nsec - t0.tv_nsec) < 30.0);
        atomic_store(&stop_signalling, true);
        pthread_join(killer, NULL);
        cr_assert_eq(wrong, 0, "%ld of %ld products changed under signals (%d threads)", wrong,
                     products, threads);
        cr_assert_geq(signals_seen, 20000, "only %d signals handled in 30 s (%ld products)",
                      (int)signals_seen, products);
    }
    free(x), free(h), free(ref), free(dw);
}

/* ---- bf16 (model.precision, ops/bf16.c) ---------------------------------------- */

/* bf16 rounding: nearest even to 8 significant bits (7 stored and the implicit one), so
 * a relative error of at most u = 2^-8 for normal numbers; ties to even, subnormals to
 * signed zero, inf kept, NaN kept a NaN; the AVX-512-BF16 path equals the scalar
 * definition bit for bit. */
Test(ops, bf16_rounding_is_nearest_even_and_the_vector_path_agrees)
{
    cr_assert_eq(omni_bf16_of(1.0f), 0x3f80);
    cr_assert_eq(omni_bf16_of(1.0f + 0x1p-8f), 0x3f80);            /* tie: down to even */
    cr_assert_eq(omni_bf16_of(1.0f + 3 * 0x1p-8f), 0x3f82);        /* tie: up to even */
    cr_assert_eq(omni_bf16_of(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81); /* above the tie */
    cr_assert_eq(omni_bf16_of(-2.5f), 0xc020);
    cr_assert_eq(omni_bf16_of(1e-40f), 0x0000);
    cr_assert_eq(omni_bf16_of(-1e-40f), 0x8000);
    cr_assert_eq(omni_bf16_of(INFINITY), 0x7f80);
    cr_assert(isnan(omni_bf16_to_f32(omni_bf16_of(NAN))));
    cr_assert_eq(omni_bf16_of(3.4e38f), 0x7f80); /* above the largest bf16: inf */
    enum { n = 4099 };                           /* no multiple of 16 or 32 */
    static float x[n];
    static uint16_t v[n];
    fill(x, n, "bf16");
    for (int i = 0; i < n; i += 7)
        x[i] *= ldexpf(1.0f, (i % 200) - 100); /* many exponents */
    x[5] = 1e-40f, x[6] = -0.0f, x[8] = INFINITY, x[9] = -INFINITY;
    omni_bf16_round(v, x, n);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(v[i], omni_bf16_of(x[i]), "element %d (%a): %#x vs %#x", i, (double)x[i], v[i],
                     omni_bf16_of(x[i]));
        if (isfinite(x[i]) && fabsf(x[i]) >= 0x1p-126f)
            cr_assert(fabs((double)omni_bf16_to_f32(v[i]) - (double)x[i]) <=
                          0x1p-8 * fabs((double)x[i]),
                      "element %d rounds too far", i);
    }
}

/*
 * The SwiGLU gate with bf16 outputs (model.precision bf16): each output is the bf16
 * rounding of the gate computed in double, to within one bf16 step: the vector logistic
 * function's few 1e-7 of relative error (plus fp32 rounding) can move a value across a
 * rounding boundary, never further; and almost all outputs are exactly that rounding
 * (measured: all but 1 of 5002; the test asks 99%). Large |z| (the exponential's overflow
 * and underflow), a length that is no multiple of 16 or 32, and a NaN are covered.
 */
static bool within_one_bf16_step(uint16_t got, double want)
{
    const uint16_t w = omni_bf16_of((float)want);
    return got == w || got == (uint16_t)(w + 1) || got == (uint16_t)(w - 1) ||
           (fabs(want) < 0x1p-120 && (got & 0x7fff) == 0);
}

Test(ops, bf16_swiglu_gate_is_the_rounded_gate)
{
    enum { n = 5003 };
    static float h1[n], h3[n], da[n];
    static uint16_t a[n], dh1[n], dh3[n];
    fill(h1, n, "gate h1"), fill(h3, n, "gate h3"), fill(da, n, "gate da");
    for (int i = 0; i < n; i += 11)
        h1[i] *= 40.0f; /* saturated logistic both ways, and e^-z overflowing */
    h1[3] = 120.0f, h1[4] = -120.0f, h1[7] = 0.0f, h1[n - 1] = NAN;
    omni_swiglu_gate_forward_bf16(a, h1, h3, n);
    omni_swiglu_gate_backward_bf16(dh1, dh3, da, h1, h3, n);
    int exact = 0;
    for (int i = 0; i < n - 1; i++) {
        const double z = h1[i], u = h3[i], g = da[i], s = 1.0 / (1.0 + exp(-z));
        const double wa = z * s * u, w1 = g * u * s * (1.0 + z * (1.0 - s)), w3 = g * z * s;
        cr_assert(within_one_bf16_step(a[i], wa), "a[%d] = %a (z %a): %#x, want %#x", i,
                  (double)omni_bf16_to_f32(a[i]), z, a[i], omni_bf16_of((float)wa));
        cr_assert(within_one_bf16_step(dh1[i], w1), "dh1[%d] (z %a): %#x, want %#x", i, z, dh1[i],
                  omni_bf16_of((float)w1));
        cr_assert(within_one_bf16_step(dh3[i], w3), "dh3[%d] (z %a): %#x, want %#x", i, z, dh3[i],
                  omni_bf16_of((float)w3));
        exact += a[i] == omni_bf16_of((float)wa);
    }
    cr_assert_geq(exact, (n - 1) * 99 / 100, "only %d of %d gate outputs are the rounded gate",
                  exact, n - 1);
    cr_assert(isnan(omni_bf16_to_f32(a[n - 1])) && isnan(omni_bf16_to_f32(dh1[n - 1])));
}

/*
 * bf16 products against the fp32 definition. With a' = bf16(a), b' = bf16(b) (each within
 * a relative u = 2^-8 of its input: 8 significant bits), a'b' is exact in fp32 (8 x 8 bits
 * fit in 24) and within (2u + u^2) |ab| = (2^-7 + 2^-16) |ab| of ab; the fp32 sum of K such
 * terms adds at most ~1e-6 sqrt(K) of sum |a'b'| (as the fp32 test). So, element by element:
 *   |C - exact(a, b)|   <= (2^-7 + 2^-16 + 1e-6 sqrt(K)) sum |ab|    (the bf16 bound)
 *   |C - exact(a', b')| <= 1e-6 sqrt(K) sum |a'b'|                   (only the inputs round)
 * An fp32 product fails the second (it misses a'b' by the inputs' rounding, ~2^-9 of a
 * typical term times sqrt(K)); a bf16 path with a wrong transpose, stride, weight copy or
 * beta fails both. Every transpose case, padded leading dimensions, alpha and beta as the
 * layers use them, B as an activation and as a weight.
 */
Test(ops, bf16_products_round_only_their_inputs)
{
    if (!omni_bf16_available())
        cr_skip_test("this CPU has no avx512_bf16");
    enum { PAD = 3 };
    static const int64_t shapes[][3] = {{131, 96, 64}, {67, 300, 129}, {1, 33, 17}, {40, 8, 700}};
    static const float ab[][2] = {{1.0f, 0.0f}, {1.0f, 1.0f}, {0.125f, 2.0f}};
    const int64_t cap = 800 * 400;
    float *A = omni_alloc(cap, sizeof(float), "A"), *B = omni_alloc(cap, sizeof(float), "B");
    float *C0 = omni_alloc(cap, sizeof(float), "C0"), *C = omni_alloc(cap, sizeof(float), "C");
    cr_assert(A && B && C0 && C);
    fill(A, cap, "A");
    fill(B, cap, "B");
    fill(C0, cap, "C");
    cr_assert_eq(omni_gemm_set_precision(OMNI_PREC_BF16), OMNI_OK, "%s", omni_error_message());
    cr_assert_eq(omni_gemm_set_backend(OMNI_GEMM_OPENBLAS), OMNI_OK); /* bf16 is oneDNN anyway */
    for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++)
        for (int c = 0; c < 8; c++)
            for (size_t v = 0; v < sizeof ab / sizeof ab[0]; v++) {
                const int64_t M = shapes[sh][0], N = shapes[sh][1], K = shapes[sh][2];
                const bool ta = c & 1, tb = c & 2, weight = c & 4;
                const float alpha = ab[v][0], beta = ab[v][1];
                const int64_t lda = (ta ? M : K) + PAD, ldb = (tb ? K : N) + PAD, ldc = N + PAD;
                memcpy(C, C0, (size_t)(M * ldc) * sizeof(float));
                omni_bf16_weights_changed();
                omni_matmul_mp(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, weight);
                for (int64_t i = 0; i < M; i++)
                    for (int64_t j = 0; j < ldc; j++) {
                        const int64_t at = i * ldc + j;
                        if (j >= N) {
                            cr_assert(C[at] == C0[at], "the padding of C was written");
                            continue;
                        }
                        double exact = 0.0, size = 0.0, exact_r = 0.0, size_r = 0.0;
                        for (int64_t k = 0; k < K; k++) {
                            float a = ta ? A[k * lda + i] : A[i * lda + k];
                            float b = tb ? B[j * ldb + k] : B[k * ldb + j];
                            double ar = omni_bf16_to_f32(omni_bf16_of(a));
                            double br = omni_bf16_to_f32(omni_bf16_of(b));
                            exact += (double)a * (double)b, size += fabs((double)a * (double)b);
                            exact_r += ar * br, size_r += fabs(ar * br);
                        }
                        const double cb = (double)beta * (double)C0[at];
                        exact = (double)alpha * exact + cb, exact_r = (double)alpha * exact_r + cb;
                        size = fabs((double)alpha) * size + fabs(cb);
                        size_r = fabs((double)alpha) * size_r + fabs(cb);
                        const double fp32 = 1e-6 * sqrt((double)K);
                        const double tol = (0x1p-7 + 0x1p-16 + fp32) * size + 1e-7;
                        const double tol_r = fp32 * size_r + 1e-7;
                        cr_assert(fabs((double)C[at] - exact) <= tol &&
                                      fabs((double)C[at] - exact_r) <= tol_r,
                                  "%lldx%lldx%lld trans %d/%d weight %d alpha %g beta %g "
                                  "[%lld,%lld]: %.9g, exact %.9g (tolerance %.3g), of the "
                                  "rounded inputs %.9g (tolerance %.3g)",
                                  (long long)M, (long long)N, (long long)K, ta, tb, weight,
                                  (double)alpha, (double)beta, (long long)i, (long long)j,
                                  (double)C[at], exact, tol, exact_r, tol_r);
                    }
            }
    omni_free(A), omni_free(B), omni_free(C0), omni_free(C);
}

/* A weight's bf16 copy is made once and reused until omni_bf16_weights_changed: a product
 * after the weights changed, without it, still uses the old copy (the contract the model
 * keeps by calling it at each forward pass); after it, the new weights. In fp32 the mp
 * products are omni_matmul's, bit for bit. */
Test(ops, bf16_weight_copies_are_remade_when_the_weights_change)
{
    if (!omni_bf16_available())
        cr_skip_test("this CPU has no avx512_bf16");
    enum { M = 9, N = 24, K = 40 };
    static float x[M * K], w[K * N], c1[M * N], c2[M * N], c3[M * N], r[M * N];
    fill(x, M * K, "x");
    fill(w, K * N, "w");
    cr_assert_eq(omni_gemm_set_precision(OMNI_PREC_FP32), OMNI_OK);
    omni_matmul_forward_mp(c1, x, w, M, K, N, 0.0f);
    omni_matmul_forward(r, x, w, M, K, N, 0.0f);
    cr_assert_arr_eq(c1, r, sizeof r);
    cr_assert_eq(omni_gemm_set_precision(OMNI_PREC_BF16), OMNI_OK);
    cr_assert_eq(omni_gemm_precision(), OMNI_PREC_BF16);
    omni_bf16_weights_changed();
    omni_matmul_forward_mp(c1, x, w, M, K, N, 0.0f);
    for (int i = 0; i < K * N; i++)
        w[i] *= 2.0f; /* exact in bf16 too: the product doubles */
    omni_matmul_forward_mp(c2, x, w, M, K, N, 0.0f);
    cr_assert_arr_eq(c2, c1, sizeof c1, "the weight copy was remade without being told");
    omni_bf16_weights_changed();
    omni_matmul_forward_mp(c3, x, w, M, K, N, 0.0f);
    for (int i = 0; i < M * N; i++)
        cr_assert_eq(c3[i], 2.0f * c1[i], "element %d: %g vs 2 x %g", i, (double)c3[i],
                     (double)c1[i]);
}

Test(ops, gemm_backend_refuses_one_not_built)
{
    omni_gemm_backend before = omni_gemm_backend_of();
    cr_assert_str_eq(omni_gemm_backend_name(OMNI_GEMM_OPENBLAS), "openblas");
    cr_assert_str_eq(omni_gemm_backend_name(OMNI_GEMM_ONEDNN), "onednn");
    cr_assert_eq(omni_gemm_set_backend(OMNI_GEMM_BACKEND_COUNT), OMNI_ERR_CONFIG);
    cr_assert_eq(omni_gemm_backend_of(), before);
}

/* parallel.gemm as given; auto defers to OMNI_GEMM, and a bad OMNI_GEMM is a config error
 * naming it. */
Test(ops, gemm_choice_follows_the_setting_then_the_environment)
{
    cr_assert_eq(omni_gemm_choose(OMNI_GEMM_CHOICE_OPENBLAS), OMNI_OK);
    cr_assert_eq(omni_gemm_backend_of(), OMNI_GEMM_OPENBLAS);
    cr_assert_eq(omni_gemm_choose(OMNI_GEMM_CHOICE_ONEDNN), OMNI_OK);
    cr_assert_eq(omni_gemm_backend_of(), OMNI_GEMM_ONEDNN);
    cr_assert_eq(setenv("OMNI_GEMM", "openblas", 1), 0);
    cr_assert_eq(omni_gemm_choose(OMNI_GEMM_CHOICE_AUTO), OMNI_OK);
    cr_assert_eq(omni_gemm_backend_of(), OMNI_GEMM_OPENBLAS);
    cr_assert_eq(omni_gemm_choose(OMNI_GEMM_CHOICE_ONEDNN), OMNI_OK); /* the setting wins */
    cr_assert_eq(omni_gemm_backend_of(), OMNI_GEMM_ONEDNN);
    cr_assert_eq(setenv("OMNI_GEMM", "mkl", 1), 0);
    cr_assert_eq(omni_gemm_choose(OMNI_GEMM_CHOICE_AUTO), OMNI_ERR_CONFIG);
    cr_assert(strstr(omni_error_message(), "OMNI_GEMM") && strstr(omni_error_message(), "mkl"));
    omni_error_clear();
    cr_assert_eq(setenv("OMNI_GEMM", "auto", 1), 0);
    cr_assert_eq(omni_gemm_choose(OMNI_GEMM_CHOICE_AUTO), OMNI_OK);
    cr_assert_str_neq(omni_gemm_kernel(omni_gemm_backend_of()), "unknown");
    /* auto with nothing in the environment: oneDNN where the CPU has AVX-512 (this
     * machine's oneDNN reports avx512_core or better), OpenBLAS elsewhere. */
    cr_assert_eq(unsetenv("OMNI_GEMM"), 0);
    cr_assert_eq(omni_gemm_choose(OMNI_GEMM_CHOICE_OPENBLAS), OMNI_OK);
    cr_assert_eq(omni_gemm_choose(OMNI_GEMM_CHOICE_AUTO), OMNI_OK);
    __builtin_cpu_init();
    cr_assert_eq(omni_gemm_backend_of(),
                 __builtin_cpu_supports("avx512f") ? OMNI_GEMM_ONEDNN : OMNI_GEMM_OPENBLAS);
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

Test(ops, sumsq_is_the_sum_of_squares_for_every_tail_length)
{
    float x[67];
    fill(x, 67, "sumsq");
    for (int64_t n = 0; n <= 67; n++) {
        long double ref = 0.0L;
        for (int64_t i = 0; i < n; i++)
            ref += (long double)x[i] * (long double)x[i];
        double got = omni_sumsq(x, n);
        cr_assert(fabs(got - (double)ref) <= 1e-14 * fmax(1.0, (double)ref),
                  "n %lld: %.17g, expected %.17Lg", (long long)n, got, ref);
    }
    /* the order is fixed: the same numbers give the same bits */
    cr_assert_eq(omni_sumsq(x, 67), omni_sumsq(x, 67));
    x[66] = ldexpf(1.0f, 60); /* an element far larger than the rest dominates, in the tail */
    cr_assert(fabs(omni_sumsq(x, 67) / ldexp(1.0, 120) - 1.0) < 1e-12);
}
