/*
 * bench_model — speed of full dense training steps (forward, backward, AdamW) on
 * synthetic batches, against the rate of cblas_sgemm at the model's own sizes.
 *
 *   bench_model [EXP.yaml]...     (default: configs/bench-small.yaml, bench-medium.yaml)
 *
 * Each experiment is read with moe.every=0 (MoE off). A batch holds data.batch windows
 * of model.context text tokens, two samples packed per window, loss on every token.
 *
 * FLOPs counted: 2 m n k for every matrix product the step issues. Forward, per block:
 * QKV 2 N d 3d, scores and P V 2 x 2 S H T T hd (S windows, the full T x T computed
 * even where the causal mask zeroes it), output projection 2 N d d, SwiGLU 3 x 2 N d ff;
 * head 2 N d V. Backward issues two products of the same size per forward product, so
 * a step is 3 x forward. Elementwise work (norms, softmax, SiLU, AdamW) is not counted:
 * it is the overhead the ratio to the sgemm rate measures.
 *
 * The sgemm rate: each product shape of the step timed alone with cblas_sgemm (same
 * m, n, k and transposition as the forward call), the step's FLOPs divided by the sum
 * over shapes of count x time. The ratio printed is the model's GFLOP/s over that.
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiment.h"
#include "model.h"
#include "ops.h"

typedef struct {
    const char *what;
    int64_t m, n, k, count; /* count per forward */
    bool trans_b;
} shape;

/* Seconds per call of sgemm of one shape, best of a few repetitions. */
static double time_sgemm(const shape *s, float *a, float *b, float *c)
{
    double best = 1e30;
    int reps = 1;
    double flops = 2.0 * (double)s->m * (double)s->n * (double)s->k;
    if (flops < 1e9)
        reps = (int)(1e9 / flops) + 1;
    for (int trial = 0; trial < 3; trial++) {
        double t0 = omni_now();
        for (int r = 0; r < reps; r++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, s->trans_b ? CblasTrans : CblasNoTrans,
                        (int)s->m, (int)s->n, (int)s->k, 1.0f, a, (int)s->k, b,
                        s->trans_b ? (int)s->k : (int)s->n, 0.0f, c, (int)s->n);
        double t = (omni_now() - t0) / reps;
        if (t < best)
            best = t;
    }
    return best;
}

static omni_status bench_one(const char *path)
{
    omni_experiment x;
    char *text = NULL;
    size_t len = 0;
    const char *sets[] = {"moe.every=0"};
    omni_status st = omni_read_file(path, &text, &len);
    if (st)
        return st;
    st = omni_experiment_parse(&x, text, len, path, sets, 1);
    free(text);
    if (st)
        return st;
    int threads = 1;
    if ((st = omni_blas_set_threads(&x, MPI_COMM_WORLD, &threads)))
        return st;

    const int64_t S = x.data.batch, T = x.model.context, N = S * T, d = x.model.d_model;
    const int64_t H = x.model.n_heads, hd = d / H, ff = x.model.d_ff, L = x.model.n_layers;
    omni_data_dims dims = {.n_tasks = 4,
                           .vocab = OMNI_TOK_TASK0 + 4,
                           .image_patch_dim = 64,
                           .audio_patch_dim = 64,
                           .max_rows = 8,
                           .max_cols = 8};
    const int64_t V = dims.vocab;
    omni_model *m = NULL;
    if ((st = omni_model_create(&m, &x, &dims, S)))
        return st;
    omni_model_init_params(m);

    /* The synthetic batch. */
    omni_batch b = {.n_seq = S, .context = T, .patch_dim = 64};
    b.kind = calloc((size_t)N, 1), b.in_prefix = calloc((size_t)N, 1);
    b.loss_mask = calloc((size_t)N, 1), b.patch = calloc((size_t)N * 64, sizeof(float));
    int32_t **ints[] = {&b.token,   &b.patch_row, &b.patch_col, &b.pos,
                        &b.segment, &b.target,    &b.task};
    for (int i = 0; i < 7; i++)
        *ints[i] = calloc((size_t)N, sizeof(int32_t));
    omni_rng r;
    omni_rng_init(&r, 1, "bench/tokens", 0);
    for (int64_t p = 0; p < N; p++)
        b.token[p] = (int32_t)(omni_rng_u32(&r, (uint64_t)p) % 256);
    for (int64_t p = 0; p < N; p++) {
        int64_t t = p % T, half = T / 2;
        b.pos[p] = (int32_t)(t < half ? t : t - half);
        b.segment[p] = t < half ? 0 : 1;
        b.target[p] = (t + 1) % half ? b.token[p + 1] : -1;
        b.loss_mask[p] = b.target[p] >= 0;
        b.loss_norm += b.loss_mask[p];
    }

    /* The step's products (forward shapes). */
    shape shapes[] = {
        {"qkv", N, 3 * d, d, L, false},     {"scores", T, T, hd, L * S * H, true},
        {"PV", T, hd, T, L * S * H, false}, {"attn out", N, d, d, L, false},
        {"ffn up", N, ff, d, 2 * L, false}, {"ffn down", N, d, ff, L, false},
        {"head", N, V, d, 1, false},
    };
    const int n_shapes = (int)(sizeof shapes / sizeof shapes[0]);
    double flops = 0.0;
    for (int i = 0; i < n_shapes; i++)
        flops += 3.0 * 2.0 * (double)shapes[i].m * (double)shapes[i].n * (double)shapes[i].k *
                 (double)shapes[i].count;

    /* Time the training steps: one to warm up, then several; the best step is reported
     * (the machine may be shared), the mean beside it. */
    int steps = flops > 1e11 ? 3 : 10;
    double t_step = 0.0, t_best = 1e30;
    for (int s = -1; s < steps; s++) {
        double t0 = omni_now();
        omni_model_metrics met;
        omni_model_zero_grad(m);
        if ((st = omni_model_forward(m, &b, &met)) || (st = omni_model_backward(m, &b)) ||
            (st = omni_model_step(m, s < 0 ? 0 : s, sqrt(omni_model_grad_sumsq(m)))))
            goto out;
        double t = omni_now() - t0;
        if (s >= 0)
            t_step += t, t_best = t < t_best ? t : t_best;
    }
    t_step /= steps;

    /* sgemm alone at the same shapes. */
    int64_t big = 0;
    for (int i = 0; i < n_shapes; i++) {
        int64_t sz[3] = {shapes[i].m * shapes[i].k, shapes[i].k * shapes[i].n,
                         shapes[i].m * shapes[i].n};
        for (int j = 0; j < 3; j++)
            big = sz[j] > big ? sz[j] : big;
    }
    float *A = omni_alloc(big, sizeof(float), "bench"),
          *B = omni_alloc(big, sizeof(float), "bench");
    float *C = omni_alloc(big, sizeof(float), "bench");
    if (!A || !B || !C) {
        st = OMNI_ERR_NOMEM;
        goto out_free;
    }
    omni_rng_fill_normal(&r, 0, big, 0.0f, 1.0f, A);
    omni_rng_fill_normal(&r, (uint64_t)big, big, 0.0f, 1.0f, B);
    double t_gemm = 0.0;
    printf("%s: d %lld, layers %lld, heads %lld, ff %lld, context %lld, batch %lld, vocab %lld,"
           " %d BLAS thread(s)\n",
           x.experiment.name, (long long)d, (long long)L, (long long)H, (long long)ff, (long long)T,
           (long long)S, (long long)V, threads);
    for (int i = 0; i < n_shapes; i++) {
        double t = time_sgemm(&shapes[i], A, B, C);
        double f = 2.0 * (double)shapes[i].m * (double)shapes[i].n * (double)shapes[i].k;
        printf("  sgemm %-9s %5lld x %5lld x %5lld  x%-5lld %7.1f GFLOP/s\n", shapes[i].what,
               (long long)shapes[i].m, (long long)shapes[i].n, (long long)shapes[i].k,
               (long long)shapes[i].count, f / t * 1e-9);
        t_gemm += 3.0 * (double)shapes[i].count * t;
    }
    double model_rate = flops / t_best * 1e-9, gemm_rate = flops / t_gemm * 1e-9;
    printf("  step %.3f s (mean of %d: %.3f s), %.0f tokens/s, %.1f GFLOP/s (%.2f GFLOP per "
           "step); sgemm at these shapes %.1f GFLOP/s; ratio %.2f\n",
           t_best, steps, t_step, (double)N / t_best, model_rate, flops * 1e-9, gemm_rate,
           model_rate / gemm_rate);
    fflush(stdout);
out_free:
    omni_free(A), omni_free(B), omni_free(C);
out:
    free(b.kind), free(b.in_prefix), free(b.loss_mask), free(b.patch);
    for (int i = 0; i < 7; i++)
        free(*ints[i]);
    omni_model_free(m);
    return st;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    omni_log_setup(0, OMNI_LOG_INFO);
    const char *src = getenv("OMNI_SOURCE_DIR");
    char def[2][4096];
    snprintf(def[0], sizeof def[0], "%s/configs/bench-small.yaml", src ? src : OMNI_BENCH_SRC);
    snprintf(def[1], sizeof def[1], "%s/configs/bench-medium.yaml", src ? src : OMNI_BENCH_SRC);
    const char *paths[2] = {def[0], def[1]};
    int n = argc > 1 ? argc - 1 : 2;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        omni_status st = bench_one(argc > 1 ? argv[i + 1] : paths[i]);
        if (st) {
            fprintf(stderr, "bench_model: %s\n", omni_error_message());
            rc = omni_exit_code(st);
        }
    }
    MPI_Finalize();
    return rc;
}
