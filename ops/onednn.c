/*
 * ops: the oneDNN backend of omni_matmul. One f32 matmul primitive per (transposes,
 * alpha, beta), created on first use and kept for the life of the process, with every
 * size and leading dimension left to run time (DNNL_RUNTIME_DIM_VAL): the rows of a
 * product change with the micro-batch and with every expert's share of the tokens, and a
 * primitive per exact shape would be JIT-compiled again for each new row count (0.3-25 ms
 * each, measured). Which kernel runs is therefore a function of the call's arguments
 * alone, never of the calls before it, so a resumed run repeats a straight one to the bit.
 *
 * alpha is the primitive's output scale, beta its sum post-op (dst = beta dst + result);
 * K = 0 is done here (C = beta C), as BLAS does. oneDNN runs on the OpenMP threads: the
 * count of omni_gemm_set_threads is set around each execution.
 *
 * Signals: oneDNN 2.6's own sgemm kernels (gemm:jit, jit_avx512_common_gemm_f32) point the
 * stack pointer into a heap workspace while they run, so the kernel's frame for a signal
 * handled on that thread (a few KiB with the AVX-512 state) is written over the heap below
 * it: glibc later aborts with "corrupted size vs. prev_size" in a free inside
 * dnnl_primitive_execute (oneDNN issue 4845, fixed upstream in 2026; seen here when
 * SIGTERM/SIGUSR1 stopped training). So the asynchronous signals are blocked on the
 * calling thread for the time of each execution (one that arrives meanwhile is handled
 * just after, on the real stack), and for good on the OpenMP worker threads that run
 * oneDNN's work (a signal for the process goes to a thread that takes it: the caller
 * outside a product, or MPI's own threads). tests/ops signals the products thousands of
 * times a second.
 */
#include <dnnl.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "ops_private.h"

#define RT        DNNL_RUNTIME_DIM_VAL
#define CACHE_MAX 64

typedef struct {
    bool ta, tb;
    bool bf16; /* bf16 inputs (A, B), else f32; C is f32 either way */
    float alpha, beta;
    dnnl_primitive_t prim;
} entry;

static struct {
    bool ready, failed;
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    int n;
    entry e[CACHE_MAX];
    char impl[32];  /* implementation of the first primitive, e.g. "gemm:jit" */
    sigset_t async; /* every signal but those a fault raises on the faulting thread */
} dn;

/* Whether this thread already blocks dn.async for good (the OpenMP workers). */
static _Thread_local bool worker_blocked;

static const char *status_text(dnnl_status_t s)
{
    switch (s) {
    case dnnl_out_of_memory:
        return "out of memory";
    case dnnl_invalid_arguments:
        return "invalid arguments";
    case dnnl_unimplemented:
        return "no implementation";
    case dnnl_runtime_error:
        return "runtime error";
    default:
        return "failure";
    }
}

/* The descriptor of a row-major [rows, cols] operand, stored transposed when trans;
 * rows, cols and ld of RT leave them to run time. */
static dnnl_status_t desc(dnnl_memory_desc_t *md, int64_t rows, int64_t cols, int64_t ld,
                          bool trans, bool bf16)
{
    dnnl_dims_t dims = {rows, cols};
    dnnl_dims_t strides = {trans ? 1 : ld, trans ? ld : 1};
    return dnnl_memory_desc_init_by_strides(md, 2, dims, bf16 ? dnnl_bf16 : dnnl_f32, strides);
}

static dnnl_status_t create(entry *en)
{
    dnnl_memory_desc_t a, b, c;
    dnnl_status_t s;
    if ((s = desc(&a, RT, RT, RT, en->ta, en->bf16)) ||
        (s = desc(&b, RT, RT, RT, en->tb, en->bf16)) || (s = desc(&c, RT, RT, RT, false, false)))
        return s;
    dnnl_matmul_desc_t md;
    if ((s = dnnl_matmul_desc_init(&md, &a, &b, NULL, &c)))
        return s;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t post = NULL;
    dnnl_primitive_desc_t pd = NULL;
    if ((s = dnnl_primitive_attr_create(&attr)))
        return s;
    if (en->alpha != 1.0f && (s = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &en->alpha)))
        goto out_attr;
    if (en->beta != 0.0f) {
        if ((s = dnnl_post_ops_create(&post)))
            goto out_attr;
        if ((s = dnnl_post_ops_append_sum(post, en->beta)) ||
            (s = dnnl_primitive_attr_set_post_ops(attr, post)))
            goto out_post;
    }
    if ((s = dnnl_primitive_desc_create(&pd, &md, attr, dn.engine, NULL)))
        goto out_post;
    if (!dn.impl[0] && !en->bf16) {
        const char *impl = NULL;
        if (!dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) && impl)
            snprintf(dn.impl, sizeof dn.impl, "%s", impl);
    }
    s = dnnl_primitive_create(&en->prim, pd);
    dnnl_primitive_desc_destroy(pd);
out_post:
    if (post)
        dnnl_post_ops_destroy(post);
out_attr:
    dnnl_primitive_attr_destroy(attr);
    return s;
}

omni_status omni_onednn_init(void)
{
    if (dn.ready)
        return OMNI_OK;
    if (dn.failed)
        return omni_fail(OMNI_ERR_CONFIG, "ops: oneDNN could not be set up on this machine");
    dnnl_status_t s = dnnl_engine_create(&dn.engine, dnnl_cpu, 0);
    if (!s && (s = dnnl_stream_create(&dn.stream, dn.engine, dnnl_stream_default_flags)))
        dnnl_engine_destroy(dn.engine);
    if (s) {
        dn.failed = true;
        return omni_fail(OMNI_ERR_CONFIG, "ops: oneDNN: cannot create a CPU engine and stream (%s)",
                         status_text(s));
    }
    sigfillset(&dn.async);
    static const int faults[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT};
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++)
        sigdelset(&dn.async, faults[i]);
    dn.ready = true;
    /* one primitive now, so that a machine where oneDNN has no f32 matmul says so here */
    entry probe = {.ta = false, .tb = false, .alpha = 1.0f, .beta = 0.0f};
    if ((s = create(&probe))) {
        dnnl_stream_destroy(dn.stream);
        dnnl_engine_destroy(dn.engine);
        dn.ready = false, dn.failed = true;
        return omni_fail(OMNI_ERR_CONFIG, "ops: oneDNN: cannot create an f32 matmul (%s)",
                         status_text(s));
    }
    dn.e[dn.n++] = probe;
    return OMNI_OK;
}

bool omni_onednn_preferred(void)
{
    const unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    const unsigned avx512 = (unsigned)dnnl_cpu_isa_avx512_core;
    return (isa & avx512) == avx512;
}

const char *omni_onednn_kernel(void)
{
    const char *isa;
    const unsigned v = (unsigned)dnnl_get_effective_cpu_isa();
    if ((v & (unsigned)dnnl_cpu_isa_avx512_core_amx) == (unsigned)dnnl_cpu_isa_avx512_core_amx)
        isa = "avx512_core_amx";
    else if ((v & (unsigned)dnnl_cpu_isa_avx512_core_bf16) ==
             (unsigned)dnnl_cpu_isa_avx512_core_bf16)
        isa = "avx512_core_bf16";
    else if ((v & (unsigned)dnnl_cpu_isa_avx512_core_vnni) ==
             (unsigned)dnnl_cpu_isa_avx512_core_vnni)
        isa = "avx512_core_vnni";
    else if ((v & (unsigned)dnnl_cpu_isa_avx512_core) == (unsigned)dnnl_cpu_isa_avx512_core)
        isa = "avx512_core";
    else if ((v & (unsigned)dnnl_cpu_isa_avx2) == (unsigned)dnnl_cpu_isa_avx2)
        isa = "avx2";
    else
        isa = "sse41";
    static char name[64];
    snprintf(name, sizeof name, "%s, %s", dn.impl[0] ? dn.impl : "not created yet", isa);
    return name;
}

/* The primitive of (ta, tb, bf16, alpha, beta), made on first use. */
static dnnl_primitive_t lookup(bool ta, bool tb, bool bf16, float alpha, float beta)
{
    for (int i = 0; i < dn.n; i++) {
        const entry *en = &dn.e[i];
        if (en->ta == ta && en->tb == tb && en->bf16 == bf16 && en->alpha == alpha &&
            en->beta == beta)
            return en->prim;
    }
    /* the model's alphas and betas are a handful of constants */
    OMNI_ASSERT(dn.n < CACHE_MAX);
    entry en = {.ta = ta, .tb = tb, .bf16 = bf16, .alpha = alpha, .beta = beta};
    dnnl_status_t s = create(&en);
    if (s) {
        omni_log_any_rank(OMNI_LOG_ERROR, "ops: oneDNN cannot create a matmul (%s)",
                          status_text(s));
        OMNI_ASSERT(s == dnnl_success);
    }
    dn.e[dn.n++] = en;
    return en.prim;
}

/* C = alpha op(A) op(B) + beta C with A and B of f32 or bf16 (bf16), C f32. */
static void matmul(bool ta, bool tb, bool bf16, int64_t M, int64_t N, int64_t K, float alpha,
                   const void *A, int64_t lda, const void *B, int64_t ldb, float beta, float *C,
                   int64_t ldc, int threads)
{
    if (K == 0) {
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++)
                C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
        return;
    }
    OMNI_ASSERT(dn.ready && !omp_in_parallel());
    dnnl_primitive_t prim = lookup(ta, tb, bf16, alpha, beta);
    dnnl_memory_desc_t a, b, c;
    dnnl_memory_t ma = NULL, mb = NULL, mc = NULL;
    dnnl_status_t s;
    if ((s = desc(&a, M, K, lda, ta, bf16)) || (s = desc(&b, K, N, ldb, tb, bf16)) ||
        (s = desc(&c, M, N, ldc, false, false)) ||
        (s = dnnl_memory_create(&ma, &a, dn.engine, (void *)(uintptr_t)A)) ||
        (s = dnnl_memory_create(&mb, &b, dn.engine, (void *)(uintptr_t)B)) ||
        (s = dnnl_memory_create(&mc, &c, dn.engine, C)))
        goto out;
    dnnl_exec_arg_t args[3] = {{.arg = DNNL_ARG_SRC, .memory = ma},
                               {.arg = DNNL_ARG_WEIGHTS, .memory = mb},
                               {.arg = DNNL_ARG_DST, .memory = mc}};
    const int saved = omp_get_max_threads();
    if (threads > 0 && threads != saved)
        omp_set_num_threads(threads);
    sigset_t before;
    pthread_sigmask(SIG_BLOCK, &dn.async, &before);
    if (omp_get_max_threads() > 1) {
        /* the workers that will run this product block the signals too (threads made
         * now inherit the caller's blocked mask; older ones block here, once) */
#pragma omp parallel
        if (omp_get_thread_num() > 0 && !worker_blocked) {
            pthread_sigmask(SIG_BLOCK, &dn.async, NULL);
            worker_blocked = true;
        }
    }
    s = dnnl_primitive_execute(prim, dn.stream, 3, args);
    if (!s)
        s = dnnl_stream_wait(dn.stream);
    pthread_sigmask(SIG_SETMASK, &before, NULL);
    if (threads > 0 && threads != saved)
        omp_set_num_threads(saved);
out:
    dnnl_memory_destroy(ma), dnnl_memory_destroy(mb), dnnl_memory_destroy(mc);
    if (s) {
        omni_log_any_rank(OMNI_LOG_ERROR,
                          "ops: oneDNN %s matmul %lld x %lld x %lld (trans %d/%d) failed (%s)",
                          bf16 ? "bf16" : "f32", (long long)M, (long long)N, (long long)K, ta, tb,
                          status_text(s));
        OMNI_ASSERT(s == dnnl_success);
    }
}

void omni_onednn_matmul(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                        const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                        float *C, int64_t ldc, int threads)
{
    matmul(ta, tb, false, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, threads);
}

void omni_onednn_matmul_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                             const uint16_t *A, int64_t lda, const uint16_t *B, int64_t ldb,
                             float beta, float *C, int64_t ldc, int threads)
{
    matmul(ta, tb, true, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, threads);
}

bool omni_onednn_has_bf16(void)
{
    const unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    const unsigned bf16 = (unsigned)dnnl_cpu_isa_avx512_core_bf16;
    return (isa & bf16) == bf16;
}
