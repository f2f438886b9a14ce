/*
 * bench_moe — forward + backward of one MoE layer at the sizes of an experiment file
 * (default configs/bench-medium.yaml: d 512, E 8, k 2, expert_ff 2048, capacity 1.25,
 * tokens = data.batch * model.context = 16 * 256), on one process.
 *
 * FLOPs counted are those of the routed tokens only: every kept (token, expert) row costs
 * 2 d ff for each of the 3 products forward and 6 backward (dW1, dW3, dW2, da, and dx
 * through W1 and W3): 18 d ff per row, plus the shared experts' 18 d ff per token when
 * moe.shared_experts > 0. Router FLOPs are not counted (they are overhead). The sgemm rate
 * is measured in the same run on one expert's forward product, [n k / E, d] x [d, ff], best
 * of three; the layer's rate is that of its best step (the machine may be shared). Phase
 * times are means over the steps.
 *
 * Run single-threaded for the stated target: OPENBLAS_NUM_THREADS=1 build/bench/moe/bench_moe
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experts.h"

static double sgemm_rate(int64_t m, int64_t n, int64_t kk, int reps)
{
    float *a = omni_alloc(m * kk, sizeof(float), "bench");
    float *b = omni_alloc(kk * n, sizeof(float), "bench");
    float *c = omni_alloc(m * n, sizeof(float), "bench");
    for (int64_t i = 0; i < m * kk; i++)
        a[i] = (float)(i % 7) * 0.01f;
    for (int64_t i = 0; i < kk * n; i++)
        b[i] = (float)(i % 5) * 0.01f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)kk, 1.0f, a,
                (int)kk, b, (int)n, 0.0f, c, (int)n);
    double t0 = omni_now();
    for (int r = 0; r < reps; r++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)kk, 1.0f, a,
                    (int)kk, b, (int)n, 0.0f, c, (int)n);
    double dt = omni_now() - t0;
    omni_free(a), omni_free(b), omni_free(c);
    return 2.0 * (double)m * (double)n * (double)kk * reps / dt / 1e9;
}

/*
 * The cost of the routing statistics by task and modality (gating.h omni_route_tables_add,
 * issue 13) for the n tokens of one layer's forward, beside the layer's fwd+bwd time: the
 * same routing as a real step (router of random weights, top-k, capacity), best of 20.
 */
static void table_cost(const float *x, int64_t n, int64_t d, int64_t E, int64_t k, double cf,
                       double layer_ms)
{
    float *w = omni_alloc(d * E, sizeof(float), "bench"), *logits = omni_alloc(n * E, 4, "bench");
    float *probs = omni_alloc(n * E, 4, "bench"), *lse = omni_alloc(n, 4, "bench");
    float *prob = omni_alloc(n * k, 4, "bench"), *gate = omni_alloc(n * k, 4, "bench");
    int32_t *ex = omni_alloc(n * k, 4, "bench"), *slot = omni_alloc(n * k, 4, "bench");
    int32_t *task = omni_alloc(n, 4, "bench"), *mod = omni_alloc(n, 4, "bench");
    int64_t *kept = omni_alloc(E, 8, "bench");
    int64_t *scratch = omni_alloc(omni_router_assign_scratch(n, E, k), 8, "bench");
    const int64_t G = 8;
    double *buf = omni_alloc(omni_route_table_len(G, E) + omni_route_table_len(OMNI_MOD_COUNT, E),
                             sizeof(double), "bench");
    omni_rng r;
    omni_rng_init(&r, 1, "bench/router", 0);
    omni_rng_fill_normal(&r, 0, d * E, 0.0f, 0.1f, w);
    omni_router_forward(logits, probs, lse, x, w, n, d, E);
    omni_router_topk(ex, prob, gate, logits, probs, NULL, n, E, k, true);
    omni_router_assign(slot, kept, ex, prob, n, E, k, omni_moe_capacity(k, cf, n, E), scratch);
    for (int64_t t = 0; t < n; t++)
        task[t] = (int32_t)(t / 97 % G), mod[t] = (int32_t)(t / 31 % OMNI_MOD_COUNT);
    omni_route_table a, b;
    omni_route_table_bind(&a, buf, G, E);
    omni_route_table_bind(&b, buf + omni_route_table_len(G, E), OMNI_MOD_COUNT, E);
    double best = 1e30;
    for (int rep = 0; rep < 20; rep++) {
        double t0 = omni_now();
        omni_route_tables_add(&a, task, &b, mod, logits, probs, lse, ex, slot, n, k);
        best = fmin(best, omni_now() - t0);
    }
    printf("  routing tables (%lld tasks + modalities, per layer forward)  %.3f ms = %.3f%% of "
           "fwd+bwd\n",
           (long long)G, 1e3 * best, 100.0 * 1e3 * best / layer_ms);
    void *all[] = {w, logits, probs, lse, prob, gate, ex, slot, task, mod, kept, scratch, buf};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        omni_free(all[i]);
}

int main(int argc, char **argv)
{
    const char *cfg = OMNI_SOURCE_DIR "/configs/bench-medium.yaml";
    int iters = 3;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc)
            iters = atoi(argv[++i]);
        else
            cfg = argv[i];
    }
    char *text;
    size_t len;
    omni_experiment x;
    omni_status st = omni_read_file(cfg, &text, &len);
    if (st == OMNI_OK) {
        st = omni_experiment_parse(&x, text, len, cfg, NULL, 0);
        free(text);
    }
    if (st != OMNI_OK) {
        fprintf(stderr, "bench_moe: %s\n", omni_error_message());
        return omni_exit_code(st);
    }
    /* one MoE layer standing alone */
    x.model.n_layers = 1;
    x.moe.every = 1;
    const int64_t n = x.data.batch * x.model.context, d = x.model.d_model;
    const int64_t E = x.moe.num_experts, k = x.moe.top_k, ff = x.moe.expert_ff;

    omni_moe_comm comm;
    omni_moe_comm_local(&comm);
    omni_moe *m;
    if ((st = omni_moe_create(&m, &x, n, 0, &comm)) != OMNI_OK) {
        fprintf(stderr, "bench_moe: %s\n", omni_error_message());
        return omni_exit_code(st);
    }
    omni_moe_init_params(m);
    float *in = omni_alloc(n * d, sizeof(float), "bench input");
    float *out = omni_alloc(n * d, sizeof(float), "bench output");
    float *dout = omni_alloc(n * d, sizeof(float), "bench output gradient");
    float *din = omni_alloc(n * d, sizeof(float), "bench input gradient");
    if (!in || !out || !dout || !din) {
        fprintf(stderr, "bench_moe: %s\n", omni_error_message());
        return 1;
    }
    omni_rng r;
    omni_rng_init(&r, 1, "bench/input", 0);
    omni_rng_fill_normal(&r, 0, n * d, 0.0f, 1.0f, in);
    omni_rng_fill_normal(&r, n * d, n * d, 0.0f, 1.0f, dout);

    double rows = 0.0, t_total = 0.0, t_best = 1e30, rows_best = 0.0;
    for (int it = -1; it < iters; it++) { /* iteration -1 warms up */
        if (it == 0)
            omni_moe_timers_reset(m);
        double t0 = omni_now();
        if (omni_moe_forward(m, 0, out, in, NULL, n) != OMNI_OK ||
            omni_moe_backward(m, 0, din, dout, NULL, n) != OMNI_OK) {
            fprintf(stderr, "bench_moe: %s\n", omni_error_message());
            return 1;
        }
        double dt = omni_now() - t0;
        if (it >= 0) {
            t_total += dt;
            const omni_router_sums *s = omni_moe_layer_stats(m, 0);
            double kept = 0.0;
            for (int64_t e = 0; e < E; e++)
                kept += s->kept[e];
            rows += kept;
            if (dt < t_best)
                t_best = dt, rows_best = kept;
        }
    }
    double tm[OMNI_MOE_T_COUNT];
    omni_moe_timers(m, tm);
    /* rates from the best step (the machine may be shared), sgemm best of 3 runs */
    double flops = 18.0 * (double)d * (double)ff * (rows_best + (double)(x.moe.shared_experts * n));
    double gemm = 0.0;
    for (int rep = 0; rep < 3; rep++)
        gemm = fmax(gemm, sgemm_rate((n * k) / E, ff, d, 2));
    double rate = flops / t_best / 1e9;
    double expert_rate = 18.0 * (double)d * (double)ff * rows / tm[OMNI_MOE_T_EXPERTS] / 1e9;
    printf("bench_moe: %s: tokens %lld, d %lld, E %lld, k %lld, expert_ff %lld, capacity %.2f, "
           "shared %lld\n",
           cfg, (long long)n, (long long)d, (long long)E, (long long)k, (long long)ff,
           x.moe.capacity_factor, (long long)x.moe.shared_experts);
    printf("  routed rows per step  %.0f of %lld assignments\n", rows / iters, (long long)(n * k));
    printf("  fwd+bwd per step      %.1f ms mean, %.1f ms best\n", 1e3 * t_total / iters,
           1e3 * t_best);
    printf("    routing (router fwd, top-k, capacity, stats)  %7.2f ms\n",
           1e3 * tm[OMNI_MOE_T_ROUTE] / iters);
    printf("    gather/permute/exchange/combine               %7.2f ms\n",
           1e3 * tm[OMNI_MOE_T_MOVE] / iters);
    printf("    routed experts (sgemm + SwiGLU)               %7.2f ms\n",
           1e3 * tm[OMNI_MOE_T_EXPERTS] / iters);
    printf("    shared experts                                %7.2f ms\n",
           1e3 * tm[OMNI_MOE_T_SHARED] / iters);
    printf("    router backward                               %7.2f ms\n",
           1e3 * tm[OMNI_MOE_T_ROUTER_BW] / iters);
    printf("  sgemm [%lld x %lld] x [%lld x %lld]  %.2f GFLOP/s\n", (long long)((n * k) / E),
           (long long)d, (long long)d, (long long)ff, gemm);
    printf("  MoE layer (best step) %.2f GFLOP/s = %.1f%% of sgemm (target >= 55%%)\n", rate,
           100.0 * rate / gemm);
    printf("  experts alone (mean)  %.2f GFLOP/s = %.1f%% of sgemm\n", expert_rate,
           100.0 * expert_rate / gemm);
    table_cost(in, n, d, E, k, x.moe.capacity_factor, 1e3 * t_total / iters);
    omni_free(in), omni_free(out), omni_free(dout), omni_free(din);
    omni_moe_free(m);
    return 0;
}
