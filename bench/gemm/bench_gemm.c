/*
 * bench_gemm — the fp32 matrix-product rate of this machine at the model's shapes, by
 * both backends: OpenBLAS's cblas_sgemm and oneDNN's matmul primitive (created once per
 * shape before timing, as a training step would use it).
 *
 *   bench_gemm [EXP.yaml] [--threads N] [--seconds S]
 *
 * (default configs/bench-medium.yaml, 1 thread, 0.2 s per measurement). For every
 * product of a training step — forward y = x W, backward dx = dy W^T and dW = x^T dy —
 * at the dense, expert and head shapes of the experiment (rows = batch x context of one
 * process; an expert's rows = its share of the top-k assignments), it prints each
 * backend's GFLOP/s (best of 3 measurements, interleaved so both see the same load)
 * and their ratio, the kernel oneDNN chose (its implementation name, e.g.
 * brg:avx512_core), and at the end the FLOP-weighted rate of each backend over the
 * step's products: the faster is "the machine's GEMM rate" of docs/bench.md. A third
 * column times omni_matmul on its oneDNN backend, the primitive with run-time sizes that
 * training uses (ops/onednn.c), against the fastest of the three per shape.
 *
 * bf16 (issue 19), where the CPU has avx512_bf16: a fourth column times omni_matmul_mp in
 * bf16 as training runs it (activations rounded to bf16 in each call, the weight's bf16
 * copy made once), against the fastest fp32 way per shape; and the CPU's own peaks,
 * measured by a loop of independent AVX-512 FMAs (fp32) and VDPBF16PS (bf16) on this
 * core, against which the achieved rates are stated. With one thread every rate is timed
 * by the thread's CPU time, not the wall clock, so that other jobs on a shared machine do
 * not count against it (with more threads, the wall clock).
 */
#include <cblas.h>
#include <dnnl.h>
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "experiment.h"
#include "experts.h"
#include "layers.h"
#include "model.h"
#include "ops.h"

/* --threads: 1 times by the thread's CPU time (see cpu_now), more by the wall clock. */
static int bench_threads = 1;

typedef struct {
    const char *what;
    int64_t m, n, k;
    bool ta, tb;   /* op(A) = A^T, op(B) = B^T (row-major storage of A, B as given) */
    double weight; /* how many such products one training step issues */
} shape;

typedef struct {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
} dnnl_ctx;

static void dnnl_check(dnnl_status_t s, const char *what)
{
    if (s != dnnl_success) {
        fprintf(stderr, "bench_gemm: oneDNN failed in %s (status %d)\n", what, (int)s);
        exit(1);
    }
}

/* A row-major [rows, cols] matrix, or the transpose of a stored [cols, rows] one. */
static void md_of(dnnl_memory_desc_t *md, int64_t rows, int64_t cols, bool trans)
{
    dnnl_dims_t dims = {rows, cols};
    dnnl_dims_t strides = {trans ? 1 : cols, trans ? rows : 1};
    dnnl_check(dnnl_memory_desc_init_by_strides(md, 2, dims, dnnl_f32, strides), "memory desc");
}

typedef struct {
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, c;
    const char *impl;
} dnnl_mm;

static void dnnl_mm_make(dnnl_mm *g, dnnl_ctx *x, const shape *s, float *A, float *B, float *C)
{
    dnnl_memory_desc_t amd, bmd, cmd;
    md_of(&amd, s->m, s->k, s->ta);
    md_of(&bmd, s->k, s->n, s->tb);
    md_of(&cmd, s->m, s->n, false);
    dnnl_matmul_desc_t desc;
    dnnl_check(dnnl_matmul_desc_init(&desc, &amd, &bmd, NULL, &cmd), "matmul desc");
    dnnl_primitive_desc_t pd;
    dnnl_check(dnnl_primitive_desc_create(&pd, &desc, NULL, x->engine, NULL), "primitive desc");
    dnnl_check(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &g->impl), "impl");
    dnnl_check(dnnl_primitive_create(&g->prim, pd), "primitive");
    dnnl_check(dnnl_memory_create(&g->a, &amd, x->engine, A), "memory");
    dnnl_check(dnnl_memory_create(&g->b, &bmd, x->engine, B), "memory");
    dnnl_check(dnnl_memory_create(&g->c, &cmd, x->engine, C), "memory");
    dnnl_primitive_desc_destroy(pd);
}

static void dnnl_mm_run(dnnl_mm *g, dnnl_ctx *x)
{
    dnnl_exec_arg_t args[3] = {{.arg = DNNL_ARG_SRC, .memory = g->a},
                               {.arg = DNNL_ARG_WEIGHTS, .memory = g->b},
                               {.arg = DNNL_ARG_DST, .memory = g->c}};
    dnnl_check(dnnl_primitive_execute(g->prim, x->stream, 3, args), "execute");
    dnnl_check(dnnl_stream_wait(x->stream), "stream wait");
}

static void dnnl_mm_free(dnnl_mm *g)
{
    dnnl_memory_destroy(g->a), dnnl_memory_destroy(g->b), dnnl_memory_destroy(g->c);
    dnnl_primitive_destroy(g->prim);
}

static void blas_run(const shape *s, const float *A, const float *B, float *C)
{
    cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans,
                (int)s->m, (int)s->n, (int)s->k, 1.0f, A, s->ta ? (int)s->m : (int)s->k, B,
                s->tb ? (int)s->k : (int)s->n, 0.0f, C, (int)s->n);
}

/* The training path: omni_matmul on its oneDNN backend (sizes at run time, ops/onednn.c). */
static void ours_run(const shape *s, const float *A, const float *B, float *C)
{
    omni_matmul(s->ta, s->tb, s->m, s->n, s->k, 1.0f, A, s->ta ? s->m : s->k, B,
                s->tb ? s->k : s->n, 0.0f, C, s->n);
}

/* The training path in bf16: omni_matmul_mp, B a weight in the forward and dx products. */
static void bf16_run(const shape *s, const float *A, const float *B, float *C)
{
    omni_matmul_mp(s->ta, s->tb, s->m, s->n, s->k, 1.0f, A, s->ta ? s->m : s->k, B,
                   s->tb ? s->k : s->n, 0.0f, C, s->n, !s->ta);
}

/* CPU seconds of this thread: on a shared, loaded machine a single-threaded measurement
 * must not count the time other processes held the core. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The peak rates of one core in GFLOP/s: 16 independent chains (more than latency x
 * throughput of either instruction) of 512-bit fp32 FMAs (32 flops each) or of VDPBF16PS
 * (32 bf16 pairs summed into 16 fp32: 64 flops each), in named registers; best of 5. */
#define ALL(op)                                                                                    \
    op(a0), op(a1), op(a2), op(a3), op(a4), op(a5), op(a6), op(a7), op(a8), op(a9), op(a10),       \
        op(a11), op(a12), op(a13), op(a14), op(a15)
#define KEEP()                                                                                     \
    __asm__ volatile(""                                                                            \
                     : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6),       \
                       "+v"(a7));                                                                  \
    __asm__ volatile(""                                                                            \
                     : "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11), "+v"(a12), "+v"(a13), "+v"(a14),  \
                       "+v"(a15))
__attribute__((target("avx512f,avx512bf16"))) static double peak(bool bf16)
{
    const long iters = 3000000;
    double best = 0.0;
    volatile float xv = 1.1e-3f, yv = 0.9f; /* not constants: no multiplication is folded */
    const __m512 x = _mm512_set1_ps(xv), y = _mm512_set1_ps(yv);
    const __m512bh xb = _mm512_cvtne2ps_pbh(x, x), yb = _mm512_cvtne2ps_pbh(y, y);
    for (int run = 0; run < 5; run++) {
        float k = 0.0f; /* distinct chains: none may merge with another */
#define INIT(a) a = _mm512_set1_ps(k++)
        __m512 a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15;
        ALL(INIT);
        double t0 = cpu_now();
#define FMA(a)  a = _mm512_fmadd_ps(x, y, a)
#define DPBF(a) a = _mm512_dpbf16_ps(a, xb, yb)
        if (bf16)
            for (long i = 0; i < iters; i++) {
                ALL(DPBF);
                KEEP();
            }
        else
            for (long i = 0; i < iters; i++) {
                ALL(FMA);
                KEEP();
            }
        double t = cpu_now() - t0;
        __m512 sum = _mm512_set1_ps(0.0f);
#define SUM(a) sum = _mm512_add_ps(sum, a)
        ALL(SUM);
        if (_mm512_reduce_add_ps(sum) == 42.0f) /* never: keeps the chains */
            printf(" ");
        double r = (double)iters * 16.0 * (bf16 ? 64.0 : 32.0) / t * 1e-9;
        best = r > best ? r : best;
    }
    return best;
}
#undef INIT
#undef FMA
#undef DPBF
#undef SUM
#undef KEEP
#undef ALL

/* Seconds per call of one way (0 OpenBLAS, 1 the exact-shape oneDNN primitive, 2
 * omni_matmul on oneDNN), over at least `secs` seconds of calls. */
static double time_one(int way, const shape *s, dnnl_mm *g, dnnl_ctx *x, const float *A,
                       const float *B, float *C, double secs)
{
    int reps = 0;
    double (*clock)(void) = bench_threads == 1 ? cpu_now : omni_now;
    double t0 = clock(), t;
    do {
        if (way == 1)
            dnnl_mm_run(g, x);
        else if (way == 2)
            ours_run(s, A, B, C);
        else if (way == 3)
            bf16_run(s, A, B, C);
        else
            blas_run(s, A, B, C);
        reps++;
        t = clock() - t0;
    } while (t < secs);
    return t / reps;
}

/* The layers whose share of the GEMM rate issue 18 targets, forward and backward as a
 * training step calls them, in fp32: a dense SwiGLU FFN over all rows (omni_swiglu_forward
 * and _backward: three products forward, six backward, and the SwiGLU gate) and the
 * experts of one MoE layer over their rows (omni_experts_forward and _backward, E blocks
 * of er rows: the same products per expert, the gate, and the gate's recomputation in
 * backward). Attention's projections and the head are products alone (the table above).
 * Returns seconds per forward + backward, best of `reps` runs of at least secs / reps
 * and 2 calls each. */
typedef struct {
    float *x, *w1, *w3, *w2, *h1, *h3, *a, *sa, *sd, *dy, *dx, *dw1, *dw3, *dw2, *y;
    int64_t *off;
} layer_bufs;

static double time_layer(bool experts, const layer_bufs *b, int64_t rows, int64_t n_exp, int64_t d,
                         int64_t ff, double secs, int reps)
{
    double (*clock)(void) = bench_threads == 1 ? cpu_now : omni_now;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        int n = 0;
        double t0 = clock(), t;
        do {
            if (experts) {
                omni_experts_forward(b->y, b->h1, b->h3, b->a, b->x, b->w1, b->w3, b->w2, b->off,
                                     n_exp, d, ff, false);
                omni_experts_backward(b->dx, b->dw1, b->dw3, b->dw2, b->h1, b->h3, b->a, b->dy,
                                      b->x, b->w1, b->w3, b->w2, b->off, n_exp, d, ff);
            } else {
                memset(b->y, 0, (size_t)(rows * d) * sizeof(float));
                omni_swiglu_forward(b->y, b->h1, b->h3, b->a, b->x, b->w1, b->w3, b->w2, rows, d,
                                    ff);
                memset(b->dx, 0, (size_t)(rows * d) * sizeof(float));
                omni_swiglu_backward(b->dx, b->dw1, b->dw3, b->dw2, b->sa, b->sd, b->dy, b->x,
                                     b->h1, b->h3, b->a, b->w1, b->w3, b->w2, rows, d, ff);
            }
            n++;
            t = clock() - t0;
        } while (t < secs / reps || n < 2);
        best = t / n < best ? t / n : best;
    }
    return best;
}

/* Both layers on both backends; prints each rate and its share of the GEMM rate `rm`. */
static int bench_layers(int64_t N, int64_t d, int64_t ff, int64_t E, int64_t er, int64_t eff,
                        double rm, double secs, double *dense_share, double *moe_share)
{
    const int64_t rows = N > E * er ? N : E * er, f = ff > eff ? ff : eff;
    const int64_t wsz = (E > 1 ? E : 1) * d * f;
    layer_bufs b;
    float **act[] = {&b.x, &b.dy, &b.dx, &b.y};
    float **hid[] = {&b.h1, &b.h3, &b.a, &b.sa, &b.sd};
    float **wts[] = {&b.w1, &b.w3, &b.w2, &b.dw1, &b.dw3, &b.dw2};
    bool ok = true;
    omni_rng r;
    omni_rng_init(&r, 3, "bench/gemm/layers", 0);
    uint64_t at = 0;
    for (size_t i = 0; i < sizeof act / sizeof act[0]; i++) {
        ok &= (*act[i] = omni_alloc(rows * d, sizeof(float), "bench")) != NULL;
        if (*act[i])
            omni_rng_fill_normal(&r, at, rows * d, 0.0f, 1.0f, *act[i]), at += (uint64_t)(rows * d);
    }
    for (size_t i = 0; i < sizeof hid / sizeof hid[0]; i++)
        ok &= (*hid[i] = omni_alloc(rows * f, sizeof(float), "bench")) != NULL;
    for (size_t i = 0; i < sizeof wts / sizeof wts[0]; i++) {
        ok &= (*wts[i] = omni_alloc(wsz, sizeof(float), "bench")) != NULL;
        if (*wts[i])
            omni_rng_fill_normal(&r, at, wsz, 0.0f, 0.05f, *wts[i]), at += (uint64_t)wsz;
    }
    ok &= (b.off = omni_alloc(E + 1, sizeof(int64_t), "bench")) != NULL;
    if (!ok)
        return 1;
    for (int64_t j = 0; j <= E; j++)
        b.off[j] = j * er;
    const double f_dense = 18.0 * (double)N * (double)d * (double)ff;
    const double f_moe = 18.0 * (double)(E * er) * (double)d * (double)eff;
    printf("  layers, forward + backward in fp32 (GFLOP/s; share of the GEMM rate %.1f):\n", rm);
    double best_dense = 0.0, best_moe = 0.0;
    for (int g = 0; g < OMNI_GEMM_BACKEND_COUNT; g++) {
        if (omni_gemm_set_backend((omni_gemm_backend)g)) {
            omni_error_clear();
            continue;
        }
        double td = time_layer(false, &b, N, 1, d, ff, secs, 5);
        double te = time_layer(true, &b, E * er, E, d, eff, secs, 5);
        double rd = f_dense / td * 1e-9, re = f_moe / te * 1e-9;
        printf("    %-8s dense FFN [%lld x %lld x %lld] %.1f = %.0f%%; experts %lld x [%lld x %lld "
               "x %lld] %.1f = %.0f%%\n",
               omni_gemm_backend_name((omni_gemm_backend)g), (long long)N, (long long)d,
               (long long)ff, rd, 100.0 * rd / rm, (long long)E, (long long)er, (long long)d,
               (long long)eff, re, 100.0 * re / rm);
        best_dense = rd > best_dense ? rd : best_dense;
        best_moe = re > best_moe ? re : best_moe;
    }
    *dense_share = best_dense / rm, *moe_share = best_moe / rm;
    for (size_t i = 0; i < sizeof act / sizeof act[0]; i++)
        omni_free(*act[i]);
    for (size_t i = 0; i < sizeof hid / sizeof hid[0]; i++)
        omni_free(*hid[i]);
    for (size_t i = 0; i < sizeof wts / sizeof wts[0]; i++)
        omni_free(*wts[i]);
    omni_free(b.off);
    return 0;
}

int main(int argc, char **argv)
{
    const char *src = getenv("OMNI_SOURCE_DIR");
    char def[4096];
    snprintf(def, sizeof def, "%s/configs/bench-medium.yaml", src ? src : OMNI_BENCH_SRC);
    const char *path = def;
    int threads = 1;
    double secs = 0.2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            secs = atof(argv[++i]);
        else if (argv[i][0] != '-')
            path = argv[i];
        else {
            fprintf(stderr, "usage: bench_gemm [EXP.yaml] [--threads N] [--seconds S]\n");
            return 2;
        }
    }
    if (threads < 1 || !(secs > 0.0)) {
        fprintf(stderr, "bench_gemm: --threads must be >= 1 and --seconds > 0\n");
        return 2;
    }
    omni_log_setup(0, OMNI_LOG_INFO);
    omni_experiment ex;
    char *text = NULL;
    size_t len = 0;
    omni_status st = omni_read_file(path, &text, &len);
    if (!st)
        st = omni_experiment_parse(&ex, text, len, path, NULL, 0);
    free(text);
    if (st) {
        fprintf(stderr, "bench_gemm: %s\n", omni_error_message());
        return omni_exit_code(st);
    }
    omni_gemm_set_threads(threads);
    omp_set_num_threads(threads);
    bench_threads = threads;
    if ((st = omni_gemm_set_backend(OMNI_GEMM_ONEDNN))) {
        fprintf(stderr, "bench_gemm: %s\n", omni_error_message());
        return omni_exit_code(st);
    }

    const int64_t d = ex.model.d_model, ff = ex.model.d_ff, T = ex.model.context;
    const int64_t N = ex.data.batch * T, V = OMNI_TOK_TASK0 + 4;
    const int64_t E = ex.moe.num_experts > 0 ? ex.moe.num_experts : 1;
    const int64_t eff = ex.moe.expert_ff > 0 ? ex.moe.expert_ff : ff;
    const int64_t er = N * (ex.moe.top_k > 0 ? ex.moe.top_k : 1) / E; /* rows per expert */
    const double L = (double)ex.model.n_layers;
    const double nmoe = ex.moe.every > 0 ? (double)(ex.model.n_layers / ex.moe.every) : 0.0;
    const double ndense = L - nmoe;
    /* forward y = x W, backward dx = dy W^T and dW = x^T dy, for each weight */
    typedef struct {
        const char *what;
        int64_t rows, in, out;
        double count;
    } weight;
    const weight ws[] = {{"qkv", N, d, 3 * d, L},
                         {"attn out", N, d, d, L},
                         {"ffn up", N, d, ff, 2 * ndense},
                         {"ffn down", N, ff, d, ndense},
                         {"expert up", er, d, eff, 2 * nmoe * (double)E},
                         {"expert dn", er, eff, d, nmoe * (double)E},
                         {"head", N, d, V, 1}};
    const int nw = (int)(sizeof ws / sizeof ws[0]);
    shape sh[3 * 8];
    int ns = 0;
    for (int i = 0; i < nw; i++) {
        if (ws[i].count <= 0.0)
            continue;
        sh[ns++] = (shape){ws[i].what, ws[i].rows, ws[i].out, ws[i].in, false, false, ws[i].count};
        sh[ns++] = (shape){ws[i].what, ws[i].rows, ws[i].in, ws[i].out, false, true, ws[i].count};
        sh[ns++] = (shape){ws[i].what, ws[i].in, ws[i].out, ws[i].rows, true, false, ws[i].count};
    }
    int64_t big = 0;
    for (int i = 0; i < ns; i++) {
        int64_t sz[3] = {sh[i].m * sh[i].k, sh[i].k * sh[i].n, sh[i].m * sh[i].n};
        for (int j = 0; j < 3; j++)
            big = sz[j] > big ? sz[j] : big;
    }
    float *A = omni_alloc(big, sizeof(float), "bench"),
          *B = omni_alloc(big, sizeof(float), "bench");
    float *C = omni_alloc(big, sizeof(float), "bench");
    if (!A || !B || !C)
        return 1;
    omni_rng r;
    omni_rng_init(&r, 1, "bench/gemm", 0);
    omni_rng_fill_normal(&r, 0, big, 0.0f, 1.0f, A);
    omni_rng_fill_normal(&r, (uint64_t)big, big, 0.0f, 1.0f, B);
    memset(C, 0, (size_t)big * sizeof(float));

    dnnl_ctx x;
    dnnl_check(dnnl_engine_create(&x.engine, dnnl_cpu, 0), "engine");
    dnnl_check(dnnl_stream_create(&x.stream, x.engine, dnnl_stream_default_flags), "stream");
    const char *core = getenv("OPENBLAS_CORETYPE");
    printf("%s: rows %lld (batch %lld x context %lld), expert rows %lld, %d thread(s); "
           "OpenBLAS core %s (%s)\n",
           ex.experiment.name, (long long)N, (long long)ex.data.batch, (long long)T, (long long)er,
           threads, openblas_get_corename(), core ? core : "auto");
    printf("  GFLOP/s: OpenBLAS cblas_sgemm; oneDNN's primitive made for the exact shape; ours: "
           "omni_matmul on oneDNN (%s), as training runs it\n",
           omni_gemm_kernel(OMNI_GEMM_ONEDNN));
    const bool bf16 = omni_bf16_available() && !omni_gemm_set_precision(OMNI_PREC_BF16);
    if (!bf16)
        omni_error_clear();
    printf("  %-9s %-6s %5s %5s %5s  %9s %9s %9s  %6s  %9s %6s  %s\n", "product", "op", "m", "n",
           "k", "OpenBLAS", "oneDNN", "ours", "ours/", "bf16", "bf16/", "exact-shape kernel");
    printf("  %-9s %-6s %5s %5s %5s  %9s %9s %9s  %6s  %9s %6s\n", "", "", "", "", "", "", "exact",
           "", "best", "ours", "best");
    double f_all = 0.0, t_blas = 0.0, t_dnnl = 0.0, t_ours = 0.0, t_best = 0.0, t_bf16 = 0.0;
    for (int i = 0; i < ns; i++) {
        const shape *s = &sh[i];
        dnnl_mm g;
        dnnl_mm_make(&g, &x, s, A, B, C);
        double tb = 1e30, td = 1e30, to = 1e30, th = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            double a = time_one(0, s, NULL, &x, A, B, C, secs / 3);
            double b = time_one(1, s, &g, &x, A, B, C, secs / 3);
            double c = time_one(2, s, NULL, &x, A, B, C, secs / 3);
            double h = bf16 ? time_one(3, s, NULL, &x, A, B, C, secs / 3) : 1e30;
            tb = a < tb ? a : tb, td = b < td ? b : td, to = c < to ? c : to;
            th = h < th ? h : th;
        }
        double tm = tb < td ? tb : td;
        tm = to < tm ? to : tm;
        double f = 2.0 * (double)s->m * (double)s->n * (double)s->k;
        const char *op = !s->ta && !s->tb ? "x W" : s->tb ? "dy W^T" : "x^T dy";
        printf("  %-9s %-6s %5lld %5lld %5lld  %9.1f %9.1f %9.1f  %6.2f  %9.1f %6.2f  %s\n",
               s->what, op, (long long)s->m, (long long)s->n, (long long)s->k, f / tb * 1e-9,
               f / td * 1e-9, f / to * 1e-9, tm / to, bf16 ? f / th * 1e-9 : 0.0,
               bf16 ? tm / th : 0.0, g.impl);
        t_bf16 += th * s->weight;
        f_all += f * s->weight;
        t_blas += tb * s->weight, t_dnnl += td * s->weight, t_ours += to * s->weight;
        t_best += tm * s->weight;
        dnnl_mm_free(&g);
    }
    double rb = f_all / t_blas * 1e-9, rd = f_all / t_dnnl * 1e-9, ro = f_all / t_ours * 1e-9;
    double rm = f_all / t_best * 1e-9;
    printf("  step's products: OpenBLAS %.1f GFLOP/s, oneDNN exact-shape %.1f, ours %.1f; the "
           "fastest per shape (the machine's GEMM rate) %.1f; ours/OpenBLAS %.2f, ours/best "
           "%.2f\n",
           rb, rd, ro, rm, ro / rb, ro / rm);
    double rh = 0.0, pf = 0.0, ph = 0.0;
    if (bf16) {
        rh = f_all / t_bf16 * 1e-9;
        pf = peak(false), ph = peak(true);
        printf("  bf16: the step's products %.1f GFLOP/s, %.2fx the fastest fp32 per shape; "
               "peaks of this core (measured): fp32 FMA %.1f, bf16 VDPBF16PS %.1f GFLOP/s; "
               "achieved %.0f%% of the bf16 peak (fp32 fastest: %.0f%% of the fp32 peak)\n",
               rh, rh / rm, pf, ph, 100.0 * rh / ph, 100.0 * rm / pf);
    }
    double share_dense = 0.0, share_moe = 0.0;
    if (bf16 && omni_gemm_set_precision(OMNI_PREC_FP32))
        return 1;
    if (bench_layers(N, d, ff, E, er, eff, rm, secs, &share_dense, &share_moe))
        return 1;
    printf("RESULT gemm threads=%d openblas=%.2f onednn_exact=%.2f ours=%.2f best=%.2f bf16=%.2f "
           "peak_fp32=%.2f peak_bf16=%.2f dense_layer=%.3f moe_layer=%.3f\n",
           threads, rb, rd, ro, rm, rh, pf, ph, share_dense, share_moe);
    dnnl_stream_destroy(x.stream);
    dnnl_engine_destroy(x.engine);
    omni_free(A), omni_free(B), omni_free(C);
    return 0;
}
