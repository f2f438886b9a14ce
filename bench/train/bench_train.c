/*
 * bench_train — full training steps of an experiment (default configs/bench-small.yaml and
 * bench-medium.yaml), MoE on, through the worker (omni_worker_train_step) on batches
 * sampled from real data, on however many processes it is launched with:
 *
 *   mpirun -np N bench_train [EXP.yaml]... [--data FILE.h5] [--steps S] [--warmup W]
 *                            [--windows N] [--ranks] [--set key=value]...
 *
 * --ranks prints each rank's phases of every timed step on stderr (where a rank waits).
 *
 * Without --data, rank 0 makes the demo dataset (omni_data_demo) in a temporary directory,
 * removed at the end. The experiment's data.files and data.tasks are replaced by that one
 * file and all of its tasks. The global batch is data.batch whatever N is, split over the
 * ranks as the coordinator splits it (omni_plan_slice), so runs on 1 and 2 processes do the
 * same work and their step times give the speed-up (bench/train/speedup.sh).
 *
 * What a step is: train_step (fill, forward, backward, gradient reduction, clipping, AdamW,
 * bias) plus the metrics reduction onto rank 0, between two barriers; its time is the
 * slowest rank's. The best of the timed steps is reported (the machine may be shared) and
 * the mean beside it; the per-step figures below come from the timed steps.
 *
 * FLOPs counted, over the global batch, 2 m n k per matrix product actually issued:
 *  - dense (all batch x context positions, padding included, as the sgemms run over them):
 *    per block QKV 2 N d 3d, scores and P V 2 x 2 S H T T hd (the full T x T, as issued),
 *    output projection 2 N d d, dense SwiGLU blocks 3 x 2 N d ff; head 2 N d V; backward
 *    issues two products per forward product, so dense work is 3 x forward;
 *  - routed: 18 d expert_ff per kept (token, expert) row (3 products forward, 6 backward),
 *    and 18 d expert_ff per routed token for each shared expert. Dropped assignments and
 *    padding (not routed) cost nothing and are not counted.
 * Not counted (overhead): router products, patch embeddings, norms, softmax, SiLU, AdamW.
 * The GEMM rate is omni_matmul at one expert's forward shape [batch context k / E, d] x
 * [d, expert_ff] on each backend (OpenBLAS, oneDNN), best of 3 before the steps and 3 after,
 * timed on every rank at once (so under the same sharing of the cores as the step); the
 * faster backend's is "the machine's GEMM rate", and the step's GFLOP/s per process divided
 * by it is the ratio printed. The step itself runs on the backend parallel.gemm selects.
 *
 * Bytes of the MoE exchange: per layer and step, a rank's dispatch (forward and backward)
 * sends its kept rows whose expert lives on another rank; its combine (forward and
 * backward) sends back the rows other ranks sent it. Summed over ranks that is
 *   tokens x k x d x 4 bytes x 4 exchanges
 * minus what does not travel: dropped assignments (not sent), and kept assignments whose
 * expert is on the token's own rank (omni_expert_dest == rank: copied locally by the
 * MPI_Alltoallv, not sent), where tokens are the routed (non-padding) positions. The
 * formula is evaluated from each layer's routing and compared with the bytes the MPI
 * exchange counted (omni_worker_exchange_bytes).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "coordinator.h"
#include "datasets.h"
#include "experts.h"
#include "model.h"
#include "ops.h"
#include "worker.h"

#define MAX_SETS    32
#define MAX_CONFIGS 8
#define MAX_LAYERS  64
#define MAX_STEPS   256

typedef struct {
    const char *configs[MAX_CONFIGS];
    int n_configs;
    const char *sets[MAX_SETS];
    int n_sets;
    const char *data;
    int steps, warmup;
    int64_t windows; /* windows sampled for the sampling rate */
    bool ranks;      /* each rank's phases of each timed step, on stderr */
} options;

static const char usage[] =
    "usage: mpirun -np N bench_train [EXP.yaml]... [--data FILE.h5] [--steps S] [--warmup W]\n"
    "                               [--windows N] [--ranks] [--set key=value]...\n";

static omni_status parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->steps = 3;
    o->warmup = 1;
    o->windows = 512;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "--data") && has)
            o->data = argv[++i];
        else if (!strcmp(a, "--steps") && has)
            o->steps = atoi(argv[++i]);
        else if (!strcmp(a, "--warmup") && has)
            o->warmup = atoi(argv[++i]);
        else if (!strcmp(a, "--windows") && has)
            o->windows = atoll(argv[++i]);
        else if (!strcmp(a, "--ranks"))
            o->ranks = true;
        else if (!strcmp(a, "--set") && has && o->n_sets < MAX_SETS)
            o->sets[o->n_sets++] = argv[++i];
        else if (a[0] != '-' && o->n_configs < MAX_CONFIGS)
            o->configs[o->n_configs++] = a;
        else
            return omni_fail(OMNI_ERR_USAGE, "bad argument '%s'\n%s", a, usage);
    }
    if (o->steps < 1 || o->warmup < 0 || o->windows < 1)
        return omni_fail(OMNI_ERR_USAGE, "--steps >= 1, --warmup >= 0, --windows >= 1\n%s", usage);
    return OMNI_OK;
}

/* GFLOP/s of omni_matmul [m, k] x [k, n] on backend b, best of 3 runs of calls for at
 * least 0.1 s each (the selected backend is restored). */
static double gemm_rate(omni_gemm_backend b, int64_t m, int64_t n, int64_t k)
{
    const omni_gemm_backend was = omni_gemm_backend_of();
    if (omni_gemm_set_backend(b)) {
        omni_error_clear();
        return 0.0;
    }
    float *a = omni_alloc(m * k, sizeof(float), "bench sgemm");
    float *bm = omni_alloc(k * n, sizeof(float), "bench sgemm");
    float *c = omni_alloc(m * n, sizeof(float), "bench sgemm");
    if (!a || !bm || !c) {
        omni_free(a), omni_free(bm), omni_free(c);
        omni_gemm_set_backend(was);
        return 0.0;
    }
    omni_rng r;
    omni_rng_init(&r, 1, "bench/sgemm", 0);
    omni_rng_fill_normal(&r, 0, m * k, 0.0f, 1.0f, a);
    omni_rng_fill_normal(&r, (uint64_t)(m * k), k * n, 0.0f, 1.0f, bm);
    double flops = 2.0 * (double)m * (double)n * (double)k, best = 0.0;
    for (int trial = 0; trial < 3; trial++) {
        double t0 = omni_now(), dt;
        int calls = 0;
        do {
            omni_matmul(false, false, m, n, k, 1.0f, a, k, bm, n, 0.0f, c, n);
            calls++;
        } while ((dt = omni_now() - t0) < 0.1);
        best = fmax(best, flops * calls / dt / 1e9);
    }
    omni_free(a), omni_free(bm), omni_free(c);
    omni_gemm_set_backend(was);
    return best;
}

/* Dense FLOPs of one training step over the global batch (see the head comment). */
static double dense_flops(const omni_experiment *x, int64_t vocab)
{
    const double S = (double)x->data.batch, T = (double)x->model.context, N = S * T;
    const double d = (double)x->model.d_model, H = (double)x->model.n_heads, hd = d / H;
    const double ff = (double)x->model.d_ff;
    double fwd = 0.0;
    for (int64_t l = 0; l < x->model.n_layers; l++) {
        fwd += 2.0 * N * d * 3.0 * d + 2.0 * 2.0 * S * H * T * T * hd + 2.0 * N * d * d;
        if (!omni_experiment_is_moe_block(x, l))
            fwd += 3.0 * 2.0 * N * d * ff;
    }
    fwd += 2.0 * N * d * (double)vocab;
    return 3.0 * fwd;
}

/* Per MoE layer, after a step: this rank's routed rows, kept rows sent off-rank (r_out),
 * kept rows other ranks sent here (r_in), dropped and local assignments (including the rows
 * of shared experts computed here by a copy), and the bytes of shared experts' weights and
 * gradients this rank sent. */
typedef struct {
    double tokens, dropped, local, r_out, r_in, rows_here, shadow_bytes, shared;
} layer_traffic;

static omni_status traffic(MPI_Comm comm, const omni_moe *moe, int rank, int size,
                           int64_t n_experts, int64_t k, double expert_bytes, layer_traffic *out,
                           int n_layers)
{
    double *cnt = omni_alloc(2 * (int64_t)size, sizeof(double), "bench counts");
    if (!cnt)
        return OMNI_ERR_NOMEM;
    double *tot = cnt + size;
    omni_status st = OMNI_OK;
    for (int l = 0; l < n_layers && !st; l++) {
        const int32_t *expert, *slot;
        int64_t n;
        omni_moe_layer_routing(moe, l, &expert, &slot, &n);
        memset(cnt, 0, (size_t)size * sizeof(double));
        layer_traffic *t = &out[l];
        memset(t, 0, sizeof *t);
        t->tokens = (double)n;
        /* a shared expert's rows stay on their rank; its owner sends the weights to every
         * other rank, and each other rank sends back a gradient */
        const bool *shared = omni_moe_layer_shadow(moe, l);
        for (int64_t e = 0; shared && e < n_experts; e++) {
            if (!shared[e])
                continue;
            int owner = omni_expert_dest(e, n_experts, size, rank);
            t->shadow_bytes += (owner == rank ? size - 1 : 1) * expert_bytes;
            t->shared += 1.0;
        }
        for (int64_t a = 0; a < n * k; a++) {
            if (slot[a] < 0) {
                t->dropped += 1.0;
                continue;
            }
            int q = omni_expert_dest(expert[a], n_experts, size, rank);
            cnt[shared && shared[expert[a]] ? rank : q] += 1.0;
        }
        t->local = cnt[rank];
        for (int q = 0; q < size; q++)
            t->r_out += q == rank ? 0.0 : cnt[q];
        st = omni_mpi_check(MPI_Allreduce(cnt, tot, size, MPI_DOUBLE, MPI_SUM, comm),
                            "MPI_Allreduce of bench counts");
        t->r_in = tot[rank] - cnt[rank];
        t->rows_here = tot[rank]; /* rows this rank's experts transform */
    }
    omni_free(cnt);
    return st;
}

/* CPU seconds of this process (all its threads): against wall time it shows how much of a
 * step the process had a core for, on a machine shared with other jobs. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Sum (op MPI_SUM) or max of one double over the ranks, the result on every rank. */
static double all(MPI_Comm comm, double v, MPI_Op op)
{
    double r = v;
    MPI_Allreduce(&v, &r, 1, MPI_DOUBLE, op, comm);
    return r;
}

/* Rank 0: positions per second that omni_sampler_fill produces on one thread, and the
 * vocabulary size of the data (which sizes the model's head). */
static omni_status sampling_rate(const omni_experiment *x, int64_t windows, double *rate,
                                 double *vocab)
{
    omni_sampler *s = NULL;
    omni_status st = omni_sampler_open(&s, x);
    if (st)
        return st;
    omni_data_dims dims = omni_sampler_dims(s);
    *vocab = (double)dims.vocab;
    int64_t pd =
        dims.image_patch_dim > dims.audio_patch_dim ? dims.image_patch_dim : dims.audio_patch_dim;
    int64_t rows = x->data.batch;
    omni_batch b;
    if ((st = omni_batch_alloc(&b, rows, x->model.context, pd))) {
        omni_sampler_close(s);
        return st;
    }
    double t0 = omni_now();
    for (int64_t w = 0; w < windows; w++)
        omni_sampler_fill(s, OMNI_SPLIT_TRAIN, (uint64_t)x->experiment.seed, w / rows, w % rows, &b,
                          w % rows);
    *rate = (double)(windows * x->model.context) / (omni_now() - t0);
    omni_batch_free(&b);
    omni_sampler_close(s);
    return OMNI_OK;
}

typedef struct {
    MPI_Comm comm;
    int rank, size;
    const options *o;
} bench;

static omni_status bench_one(bench *B, const char *path, const char *data)
{
    const int rank = B->rank, size = B->size;
    MPI_Comm comm = B->comm;
    omni_experiment x;
    omni_status st = omni_experiment_load(comm, path, B->o->sets, B->o->n_sets, &x);
    if (st)
        return st;
    snprintf(x.data.files[0], sizeof x.data.files[0], "%s", data);
    x.data.n_files = 1;
    x.data.n_tasks = 0;
    int threads = 1;
    if ((st = omni_blas_set_threads(&x, comm, &threads)) ||
        (st = omni_gemm_set_precision(x.model.precision)))
        return st;

    double sample_rate = 0.0, vocab = 0.0;
    if (rank == 0)
        st = sampling_rate(&x, B->o->windows, &sample_rate, &vocab);
    if ((st = omni_mpi_agree(comm, st)))
        return st;
    MPI_Bcast(&vocab, 1, MPI_DOUBLE, 0, comm);

    omni_worker *w = NULL;
    omni_metrics m;
    memset(&m, 0, sizeof m);
    layer_traffic *tr = NULL;
    if ((st = omni_worker_create(&w, comm, &x)))
        return st;
    int n_tasks, n_layers, n_experts;
    omni_worker_shape(w, &n_tasks, &n_layers, &n_experts);
    omni_moe *moe = omni_worker_moe(w);
    st = omni_metrics_create(&m, n_tasks, n_layers, n_experts);
    if (!st && (n_layers > MAX_LAYERS || !moe))
        st = omni_fail(OMNI_ERR_CONFIG, "%s: bench_train wants 1 to %d MoE layers (moe.every > 0)",
                       path, MAX_LAYERS);
    if (!st && !(tr = omni_alloc(n_layers, sizeof *tr, "bench traffic")))
        st = OMNI_ERR_NOMEM;
    if ((st = omni_mpi_agree(comm, st)))
        goto out;

    /* each GEMM backend at one expert's shape, every rank at once; the faster is the
     * reference of the ratios */
    const int64_t d = x.model.d_model, ff = x.moe.expert_ff, k = x.moe.top_k, E = n_experts;
    const int64_t positions = x.data.batch * x.model.context;
    MPI_Barrier(comm);
    const int64_t em = positions * k / E;
    double rate_b[OMNI_GEMM_BACKEND_COUNT];
    for (int b = 0; b < OMNI_GEMM_BACKEND_COUNT; b++)
        rate_b[b] = all(comm, gemm_rate((omni_gemm_backend)b, em, ff, d), MPI_SUM) / size;

    /* the steps */
    const int n_steps = B->o->warmup + B->o->steps;
    double step_t[MAX_STEPS], step_cpu[MAX_STEPS]; /* timed steps: time, lowest CPU/wall */
    double t_best = 1e30, t_sum = 0.0, mpi_sum = 0.0, mpi_max_share = 0.0, bytes_sum = 0.0;
    double formula_sum = 0.0, kept_sum = 0.0, kept_best = 0.0, tokens_sum = 0.0;
    double dropped_sum = 0.0, local_sum = 0.0, routed_sum = 0.0, shared_sum = 0.0;
    double cpu_share_mean = 0.0, cpu_share_min = 1e30, rows_max = 0.0, rows_mean = 0.0;
    double gross_layer[MAX_LAYERS] = {0}, formula_layer[MAX_LAYERS] = {0};
    double tm[OMNI_MOE_T_COUNT] = {0}, tw[OMNI_WORKER_T_COUNT] = {0};
    int mismatches = 0;
    for (int s = 0; s < n_steps && !st; s++) {
        bool timed = s >= B->o->warmup;
        omni_slice sl = omni_plan_slice(s, x.data.batch, rank, size);
        omni_metrics_zero(&m);
        omni_worker_mpi_seconds(w); /* reset the counters */
        omni_worker_exchange_bytes(w);
        omni_moe_timers_reset(moe);
        omni_worker_timers_reset(w);
        MPI_Barrier(comm);
        double t0 = omni_now(), c0 = cpu_now();
        st = omni_worker_train_step(w, s, sl.slot_lo, sl.slot_hi, &m);
        double t1 = omni_now();
        if (!st)
            st = omni_metrics_reduce(comm, &m);
        double t_rank = omni_now() - t0, t_reduce = omni_now() - t1, c_rank = cpu_now() - c0;
        if ((st = omni_mpi_agree(comm, st)))
            break;
        double dt = all(comm, t_rank, MPI_MAX);
        double mpi_s = omni_worker_mpi_seconds(w) + t_reduce;
        double bytes = all(comm, omni_worker_exchange_bytes(w), MPI_SUM);
        double tmr[OMNI_MOE_T_COUNT], twr[OMNI_WORKER_T_COUNT];
        omni_moe_timers(moe, tmr);
        omni_worker_timers(w, twr);
        if ((st = traffic(comm, moe, rank, size, E, k, 3.0 * (double)(d * ff) * 4.0, tr, n_layers)))
            break;
        if (B->o->ranks && timed) {
            double rows_here = 0.0;
            for (int l = 0; l < n_layers; l++)
                rows_here += tr[l].rows_here;
            fprintf(stderr,
                    "rank %d step %d: %.0f ms: fill %.0f, forward %.0f, backward %.0f, reduction "
                    "%.0f, update %.0f; MoE routing %.0f, moving %.0f, experts %.0f (%.0f rows); "
                    "in MPI %.0f\n",
                    rank, s, 1e3 * t_rank, 1e3 * twr[OMNI_WORKER_T_FILL],
                    1e3 * twr[OMNI_WORKER_T_FORWARD], 1e3 * twr[OMNI_WORKER_T_BACKWARD],
                    1e3 * twr[OMNI_WORKER_T_REDUCE], 1e3 * twr[OMNI_WORKER_T_UPDATE],
                    1e3 * tmr[OMNI_MOE_T_ROUTE], 1e3 * tmr[OMNI_MOE_T_MOVE],
                    1e3 * tmr[OMNI_MOE_T_EXPERTS], rows_here, 1e3 * mpi_s);
        }
        /* kept rows from the global statistics on rank 0, sent to all */
        double kept = 0.0, tokens = *m.tokens;
        for (int64_t i = 0; i < (int64_t)n_layers * n_experts; i++)
            kept += m.load[i];
        double pair[2] = {kept, tokens};
        MPI_Bcast(pair, 2, MPI_DOUBLE, 0, comm);
        kept = pair[0], tokens = pair[1];
        double formula = 0.0;
        for (int l = 0; l < n_layers; l++) {
            double routed = all(comm, tr[l].tokens, MPI_SUM);
            double dropped = all(comm, tr[l].dropped, MPI_SUM);
            double local = all(comm, tr[l].local, MPI_SUM);
            double unit = (double)d * 4.0 * 4.0; /* bytes of one row over the 4 exchanges */
            /* plus each shared expert's weights out to, and gradients back from, N - 1 ranks */
            double expert_bytes = 3.0 * (double)(d * ff) * 4.0;
            double f = (routed * (double)k - dropped - local) * unit +
                       tr[l].shared * 2.0 * (size - 1) * expert_bytes;
            /* the same from the rows each rank actually sends: 2 (r_out + r_in) per rank,
             * and the weights and gradients it sends */
            double per_rank =
                2.0 * (tr[l].r_out + tr[l].r_in) * (double)d * 4.0 + tr[l].shadow_bytes;
            double summed = all(comm, per_rank, MPI_SUM);
            if (fabs(summed - f) > 0.5)
                mismatches++;
            formula += f;
            if (timed) {
                gross_layer[l] += routed * (double)k * unit;
                formula_layer[l] += f;
                routed_sum += routed * (double)k;
                dropped_sum += dropped;
                local_sum += local;
                shared_sum += tr[l].shared;
            }
        }
        if (fabs(bytes - formula) > 0.5)
            mismatches++;
        if (!timed)
            continue;
        step_t[s - B->o->warmup] = dt;
        step_cpu[s - B->o->warmup] = -all(comm, -c_rank / t_rank, MPI_MAX);
        t_sum += dt;
        if (dt < t_best)
            t_best = dt, kept_best = kept;
        kept_sum += kept;
        tokens_sum += tokens;
        mpi_sum += all(comm, mpi_s, MPI_SUM) / size;
        mpi_max_share = fmax(mpi_max_share, all(comm, mpi_s, MPI_MAX) / dt);
        bytes_sum += bytes;
        formula_sum += formula;
        for (int i = 0; i < OMNI_MOE_T_COUNT; i++)
            tm[i] += all(comm, tmr[i], MPI_SUM) / size;
        for (int i = 0; i < OMNI_WORKER_T_COUNT; i++)
            tw[i] += all(comm, twr[i], MPI_SUM) / size;
        cpu_share_mean += all(comm, c_rank / t_rank, MPI_SUM) / size;
        cpu_share_min = fmin(cpu_share_min, -all(comm, -c_rank / t_rank, MPI_MAX));
        double rows = 0.0;
        for (int l = 0; l < n_layers; l++)
            rows += tr[l].rows_here;
        rows_max += all(comm, rows, MPI_MAX);
        rows_mean += all(comm, rows, MPI_SUM) / size;
    }
    if (st)
        goto out;
    /* the sgemm reference again after the steps, the best of both (the clock of a shared,
     * virtualised core moves) */
    MPI_Barrier(comm);
    double gemm = 0.0;
    for (int b = 0; b < OMNI_GEMM_BACKEND_COUNT; b++) {
        rate_b[b] =
            fmax(rate_b[b], all(comm, gemm_rate((omni_gemm_backend)b, em, ff, d), MPI_SUM) / size);
        gemm = fmax(gemm, rate_b[b]);
    }

    const int S = B->o->steps;
    double f_dense = dense_flops(&x, (int64_t)vocab);
    double per_row = 18.0 * (double)d * (double)ff;
    double f_shared = per_row * (double)x.moe.shared_experts * tokens_sum / S;
    double f_best = f_dense + per_row * kept_best + f_shared;
    double f_mean = f_dense + per_row * kept_sum / S + f_shared;
    double t_mean = t_sum / S;
    double rate = f_best / t_best / 1e9, rate_proc = rate / size;
    double moe_time = 0.0;
    for (int i = 0; i < OMNI_MOE_T_COUNT; i++)
        moe_time += tm[i] / S;
    double f_moe = per_row * kept_sum / S + f_shared; /* per step, global */
    double moe_rate = f_moe / size / moe_time / 1e9;
    double exp_rate = per_row * kept_sum / S / size / (tm[OMNI_MOE_T_EXPERTS] / S) / 1e9;
    double train_pos = (double)positions / t_best;

    if (rank == 0) {
        const char *core = getenv("OPENBLAS_CORETYPE");
        printf("bench_train: %s on %d process%s x %d thread%s (OPENBLAS_CORETYPE=%s)\n",
               x.experiment.name, size, size == 1 ? "" : "es", threads, threads == 1 ? "" : "s",
               core ? core : "unset");
        printf("  model d %lld, layers %lld, heads %lld, d_ff %lld, context %lld, batch %lld, "
               "vocab %.0f; MoE %d layers, E %d, k %lld, expert_ff %lld, capacity %.2f\n",
               (long long)d, (long long)x.model.n_layers, (long long)x.model.n_heads,
               (long long)x.model.d_ff, (long long)x.model.context, (long long)x.data.batch, vocab,
               n_layers, n_experts, (long long)k, (long long)ff, x.moe.capacity_factor);
        printf("  step            %.3f s best, %.3f s mean of %d (+%d warm-up)\n", t_best, t_mean,
               S, B->o->warmup);
        printf("  phases/step     %.1f ms per process: fill %.1f, forward %.1f, backward %.1f, "
               "gradient reduction and norm %.1f, AdamW and bias %.1f\n",
               1e3 * (tw[0] + tw[1] + tw[2] + tw[3] + tw[4]) / S, 1e3 * tw[OMNI_WORKER_T_FILL] / S,
               1e3 * tw[OMNI_WORKER_T_FORWARD] / S, 1e3 * tw[OMNI_WORKER_T_BACKWARD] / S,
               1e3 * tw[OMNI_WORKER_T_REDUCE] / S, 1e3 * tw[OMNI_WORKER_T_UPDATE] / S);
        printf("  tokens/s        %.0f positions/s (%.0f non-padding tokens/s)\n", train_pos,
               tokens_sum / S / t_mean);
        printf("  FLOPs per step  %.2f GFLOP: dense %.2f + routed experts %.2f (%.0f kept rows) "
               "+ shared %.2f\n",
               f_mean / 1e9, f_dense / 1e9, per_row * kept_sum / S / 1e9, kept_sum / S,
               f_shared / 1e9);
        printf("  achieved        %.2f GFLOP/s (%.2f per process)\n", rate, rate_proc);
        printf("  GEMM            %.2f GFLOP/s per process at [%lld x %lld] x [%lld x %lld], the "
               "faster of openblas %.2f (%s) and onednn %.2f (%s); the step runs on %s\n",
               gemm, (long long)em, (long long)d, (long long)d, (long long)ff,
               rate_b[OMNI_GEMM_OPENBLAS], omni_gemm_kernel(OMNI_GEMM_OPENBLAS),
               rate_b[OMNI_GEMM_ONEDNN], omni_gemm_kernel(OMNI_GEMM_ONEDNN),
               omni_gemm_backend_name(omni_gemm_backend_of()));
        printf("  ratio           %.1f%% of GEMM\n", 100.0 * rate_proc / gemm);
        printf("  MPI share       %.1f%% of step time (mean over ranks; max rank %.1f%%)\n",
               100.0 * mpi_sum / t_sum, 100.0 * mpi_max_share);
        printf("  CPU/wall        %.0f%% of each step on a core (mean over ranks; lowest %.0f%%; "
               "MPI waits spin, so they count as CPU)\n",
               100.0 * cpu_share_mean / S, 100.0 * cpu_share_min);
        printf("  expert rows     %.0f per rank per step, max rank %.0f (imbalance %.2f)\n",
               rows_mean / S, rows_max / S, rows_mean > 0 ? rows_max / rows_mean : 0.0);
        printf("  MoE layers      %.2f GFLOP/s per process over routed FLOPs = %.1f%% of GEMM "
               "(target >= 55%%); experts alone %.2f GFLOP/s = %.1f%%\n",
               moe_rate, 100.0 * moe_rate / gemm, exp_rate, 100.0 * exp_rate / gemm);
        printf("  MoE time/step   %.1f ms per process: routing %.1f, gather/exchange/combine "
               "%.1f, experts %.1f, shared %.1f, router backward %.1f\n",
               1e3 * moe_time, 1e3 * tm[OMNI_MOE_T_ROUTE] / S, 1e3 * tm[OMNI_MOE_T_MOVE] / S,
               1e3 * tm[OMNI_MOE_T_EXPERTS] / S, 1e3 * tm[OMNI_MOE_T_SHARED] / S,
               1e3 * tm[OMNI_MOE_T_ROUTER_BW] / S);
        printf("  exchange bytes per step (all ranks): measured %.0f, formula %.0f (%s)\n",
               bytes_sum / S, formula_sum / S, mismatches ? "MISMATCH" : "equal");
        printf("    = tokens x k x d x 4 B x 4 (%.0f) - dropped (%.0f rows) - same-rank "
               "(%.0f rows), x %lld B per row\n",
               routed_sum / S * (double)d * 16.0, dropped_sum / S, local_sum / S,
               (long long)(d * 16));
        printf("      + shared experts (%.2f per MoE layer and step, parallel.shadow %lld) x "
               "%d ranks x 2 (weights out, gradients back) x %lld B\n",
               shared_sum / S / n_layers, (long long)x.parallel.shadow, size - 1,
               (long long)(3 * d * ff * 4));
        for (int l = 0; l < n_layers; l++)
            printf("    MoE layer %d: %.0f bytes sent per step (%.0f per rank) of %.0f gross\n", l,
                   formula_layer[l] / S, formula_layer[l] / S / size, gross_layer[l] / S);
        printf("  sampling        %.3g positions/s (one thread) vs training %.3g positions/s: "
               "ratio %.1f (target >= 10)\n",
               sample_rate, train_pos, sample_rate / train_pos);
        printf("RESULT config=%s np=%d gemm_backend=%s step_best=%.4f step_mean=%.4f "
               "tokens_per_s=%.1f gflops=%.3f gemm_best=%.3f gemm_openblas=%.3f gemm_onednn=%.3f "
               "moe_gflops=%.3f mpi_share=%.4f bytes_ok=%d steps=",
               x.experiment.name, size, omni_gemm_backend_name(omni_gemm_backend_of()), t_best,
               t_mean, train_pos, rate, gemm, rate_b[OMNI_GEMM_OPENBLAS], rate_b[OMNI_GEMM_ONEDNN],
               moe_rate, mpi_sum / t_sum, mismatches == 0);
        for (int i = 0; i < S; i++)
            printf("%s%.4f", i ? "," : "", step_t[i]);
        printf(" cpu=");
        for (int i = 0; i < S; i++)
            printf("%s%.2f", i ? "," : "", step_cpu[i]);
        printf("\n");
        fflush(stdout);
    }
    if (mismatches)
        st = omni_fail(OMNI_ERR_INTERNAL, "%s: exchange bytes differ from the formula", path);
out:
    omni_free(tr);
    omni_metrics_free(&m);
    omni_worker_free(w);
    return st;
}

/* Rank 0 makes the demo dataset in a fresh temporary directory; every rank gets its path. */
static omni_status make_demo(MPI_Comm comm, int rank, char *dir, char *file, size_t cap)
{
    omni_status st = OMNI_OK;
    if (rank == 0) {
        snprintf(dir, cap, "/tmp/omni-bench-train-XXXXXX");
        if (!mkdtemp(dir))
            st = omni_fail(OMNI_ERR_IO, "%s: cannot make a temporary directory", dir);
        else {
            snprintf(file, cap, "%s/demo.h5", dir);
            st = omni_data_demo(file, 1, NULL);
        }
    }
    if ((st = omni_mpi_agree(comm, st)))
        return st;
    return omni_mpi_check(MPI_Bcast(file, (int)cap, MPI_CHAR, 0, comm), "MPI_Bcast of the path");
}

int main(int argc, char **argv)
{
    MPI_Comm comm;
    omni_status st = omni_mpi_init(&argc, &argv, &comm);
    if (st) {
        fprintf(stderr, "bench_train: %s\n", omni_error_message());
        return omni_exit_code(st);
    }
    bench B = {.comm = comm};
    MPI_Comm_rank(comm, &B.rank);
    MPI_Comm_size(comm, &B.size);
    options o;
    st = parse_args(argc, argv, &o);
    B.o = &o;
    char dir[OMNI_PATH_MAX] = "", file[OMNI_PATH_MAX] = "";
    if (!st && o.data)
        snprintf(file, sizeof file, "%s", o.data);
    else if (!st)
        st = make_demo(comm, B.rank, dir, file, sizeof file);
    char def[2][OMNI_PATH_MAX];
    snprintf(def[0], sizeof def[0], "%s/configs/bench-small.yaml", OMNI_SOURCE_DIR);
    snprintf(def[1], sizeof def[1], "%s/configs/bench-medium.yaml", OMNI_SOURCE_DIR);
    if (!st && o.n_configs == 0) {
        o.configs[0] = def[0], o.configs[1] = def[1];
        o.n_configs = 2;
    }
    for (int i = 0; i < o.n_configs && !st; i++)
        st = omni_mpi_agree(comm, bench_one(&B, o.configs[i], file));
    if (B.rank == 0 && dir[0]) {
        unlink(file);
        rmdir(dir);
    }
    if (st && B.rank == 0)
        fprintf(stderr, "bench_train: %s\n", omni_error_message());
    MPI_Finalize();
    return st ? omni_exit_code(st) : 0;
}
