/*
 * The training loop: the coordinator's decisions (plan, log, evaluate, checkpoint, stop)
 * around the workers' steps. Every rank runs this loop; only rank 0 decides and prints,
 * and its decisions reach the others by broadcast, so all ranks make the same collective
 * calls in the same order.
 */
#include "coordinator.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "inference.h"
#include "model.h"
#include "ops.h"

#define LOAD_ROWS 16 /* logged expert loads kept for checkpoints (ckpt info) */

typedef struct {
    MPI_Comm comm;
    int rank, size;
    const omni_experiment *x;
    omni_worker *w;
    omni_metrics step_m, sum_m, eval_m;
    omni_metrics_log log;
    const omni_ckpt_tensor *state; /* the worker's */
    int n_state;
    char *yaml;
    int64_t step, last_saved, last_eval, steps_in_sum;
    int64_t tokens_seen; /* kept on rank 0, whose meta a checkpoint writes */
    /* the coordinator's running statistics: recent expert-load fractions */
    int64_t load_rows, load_steps[LOAD_ROWS];
    float *load;       /* [LOAD_ROWS, moe layers, E] */
    int64_t *plan;     /* [3 * size] rank 0's scratch for the batch plan */
    omni_infer *infer; /* decoding for exact match at evaluations; made at the first */
} trainer;

static omni_status save(trainer *t)
{
    omni_ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.step = t->step;
    meta.tokens_seen = t->tokens_seen;
    meta.seed = t->x->experiment.seed;
    meta.experiment_yaml = t->yaml;
    meta.load_rows = t->load_rows;
    meta.load_layers = t->step_m.n_moe_layers;
    meta.load_experts = t->step_m.n_experts;
    meta.load_steps = t->load_steps;
    meta.load = t->load;
    meta.tokenization = omni_worker_tokenization(t->w);
    char path[OMNI_PATH_MAX + 64];
    double t0 = omni_now();
    omni_status st = omni_ckpt_save(t->comm, t->x->experiment.out_dir, &meta, t->state, t->n_state,
                                    t->x->checkpoint.keep, path, sizeof path);
    if (st)
        return st;
    t->last_saved = t->step;
    omni_log(OMNI_LOG_INFO, "checkpoint %s (%.1f s)", path, omni_now() - t0);
    return OMNI_OK;
}

/* Rank 0: whether `dir` holds anything a checkpoint leaves (ckpt-*.h5 or `latest`). */
static bool has_checkpoint_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return false;
    bool found = false;
    for (struct dirent *e; !found && (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        found = !strcmp(e->d_name, "latest") ||
                (!strncmp(e->d_name, "ckpt-", 5) && n > 3 && !strcmp(e->d_name + n - 3, ".h5"));
    }
    closedir(d);
    return found;
}

static omni_status resume(trainer *t, const char *arg)
{
    char path[OMNI_PATH_MAX + 64];
    if (!strcmp(arg, "auto")) {
        /* A job script may always pass --resume auto: the first run of an experiment
         * starts from step 0. A directory with checkpoint files of which none is complete
         * is an error below, never a silent restart. */
        int any = t->rank == 0 && has_checkpoint_files(t->x->experiment.out_dir);
        omni_status bst = omni_mpi_check(MPI_Bcast(&any, 1, MPI_INT, 0, t->comm),
                                         "MPI_Bcast of the checkpoint look-up");
        if (bst)
            return bst;
        if (!any) {
            omni_log(OMNI_LOG_INFO, "--resume auto: no checkpoint in %s yet, starting at step 0",
                     t->x->experiment.out_dir);
            return OMNI_OK;
        }
    }
    omni_status st = omni_ckpt_resolve(t->comm, arg, t->x->experiment.out_dir, path, sizeof path);
    if (st)
        return st;
    omni_ckpt *c = NULL;
    if ((st = omni_ckpt_open(t->comm, path, &c)))
        return st;
    const omni_ckpt_meta *meta = omni_ckpt_meta_of(c);
    char changed[2048] = "";
    /* The same text on every rank, so every rank reaches the same verdict. */
    st = omni_ckpt_check_experiment(path, meta->experiment_yaml, t->x, changed, sizeof changed);
    if (!st && meta->seed != t->x->experiment.seed)
        st = omni_fail(OMNI_ERR_CKPT,
                       "%s: written with experiment.seed %lld, the experiment has %lld", path,
                       (long long)meta->seed, (long long)t->x->experiment.seed);
    /* Every rank reached the same verdict; agreeing on it makes it one failure of the job,
     * printed once by rank 0, rather than one per rank and an MPI_Abort. */
    st = omni_mpi_agree(t->comm, st);
    if (!st)
        st = omni_ckpt_read(c, t->state, t->n_state);
    if (!st) {
        t->step = meta->step;
        t->tokens_seen = meta->tokens_seen;
        t->last_saved = t->step;
        int64_t rows = meta->load_rows;
        if (rows > LOAD_ROWS)
            rows = LOAD_ROWS;
        if (meta->load_layers == t->step_m.n_moe_layers &&
            meta->load_experts == t->step_m.n_experts && rows > 0) {
            int64_t per = meta->load_layers * meta->load_experts;
            memcpy(t->load, meta->load + (meta->load_rows - rows) * per,
                   (size_t)(rows * per) * sizeof *t->load);
            memcpy(t->load_steps, meta->load_steps + (meta->load_rows - rows),
                   (size_t)rows * sizeof *t->load_steps);
            t->load_rows = rows;
        }
        omni_log(OMNI_LOG_INFO, "resumed from %s at step %lld (written by %lld process%s)", path,
                 (long long)meta->step, (long long)meta->world_size,
                 meta->world_size == 1 ? "" : "es");
        if (changed[0])
            omni_log(OMNI_LOG_INFO, "training keys changed since the checkpoint: %s", changed);
    }
    omni_ckpt_close(c);
    return st;
}

/* Rank 0: remember the load fractions of a logged interval for checkpoints. */
static void keep_loads(trainer *t)
{
    const omni_metrics *m = &t->sum_m;
    int64_t per = (int64_t)m->n_moe_layers * m->n_experts;
    if (per == 0)
        return;
    if (t->load_rows == LOAD_ROWS) {
        memmove(t->load, t->load + per, (size_t)((LOAD_ROWS - 1) * per) * sizeof *t->load);
        memmove(t->load_steps, t->load_steps + 1, (LOAD_ROWS - 1) * sizeof *t->load_steps);
        t->load_rows--;
    }
    float *row = t->load + t->load_rows * per;
    for (int l = 0; l < m->n_moe_layers; l++) {
        double sum = 0;
        for (int e = 0; e < m->n_experts; e++)
            sum += m->load[l * m->n_experts + e];
        for (int e = 0; e < m->n_experts; e++)
            row[l * m->n_experts + e] =
                sum > 0 ? (float)(m->load[l * m->n_experts + e] / sum) : 0.0f;
    }
    t->load_steps[t->load_rows++] = t->step;
}

/* Collective: the exact match of greedy captions of the first eval.generate validation
 * samples of each *_to_text task (exact[t] = -1 for the others), decoded by a session that
 * holds a copy of the current parameters. */
static omni_status exact_match(trainer *t, double *exact, bool *any)
{
    const omni_sampler *sp = omni_worker_sampler(t->w);
    int n = omni_sampler_n_tasks(sp);
    *any = false;
    for (int k = 0; k < n; k++) {
        omni_task_kind kind = omni_sampler_task(sp, k)->kind;
        exact[k] = -1.0;
        *any |= kind != OMNI_KIND_TEXT && kind != OMNI_KIND_CONTROL;
    }
    if (t->x->eval.generate <= 0 || !*any)
        return OMNI_OK;
    omni_status st = OMNI_OK;
    if (!t->infer) {
        omni_data_dims dims = omni_sampler_dims(sp);
        int64_t batch = t->x->eval.generate < 32 ? t->x->eval.generate : 32;
        st = omni_infer_create_like(t->comm, t->x, &dims, omni_worker_tokenization(t->w), batch,
                                    &t->infer);
        if ((st = omni_mpi_agree(t->comm, st)))
            return st;
    }
    omni_infer_set_params(t->infer, omni_worker_model(t->w), omni_worker_moe(t->w));
    return omni_infer_exact_match(t->infer, sp, t->x->eval.generate, exact);
}

static omni_status evaluate(trainer *t)
{
    omni_metrics_zero(&t->eval_m);
    double exact[OMNI_MAX_TASKS];
    bool any = false;
    omni_status st = omni_worker_eval(t->w, &t->eval_m);
    if (!st)
        st = omni_metrics_reduce(t->comm, &t->eval_m);
    if (!st)
        st = exact_match(t, exact, &any);
    if (!st && t->rank == 0)
        st = omni_metrics_log_eval(&t->log, t->x, t->step, &t->eval_m, any ? exact : NULL);
    t->last_eval = t->step;
    return omni_mpi_agree(t->comm, st);
}

static omni_status loop(trainer *t)
{
    const omni_experiment *x = t->x;
    omni_status st;
    for (;;) {
        omni_next next;
        if ((st = omni_decide_next(t->comm, t->step, x->optim.steps, &next)))
            return st;
        if (next == OMNI_NEXT_STOP_SIGNAL) {
            omni_log(OMNI_LOG_INFO, "signal %d: stopping after step %lld", omni_signal_number(),
                     (long long)t->step);
            return t->last_saved == t->step ? OMNI_OK : save(t);
        }
        if (next == OMNI_NEXT_STOP_DONE)
            break;
        omni_slice slice;
        if ((st = omni_plan_scatter(t->comm, t->step, x->data.batch, t->plan, &slice)))
            return st;
        omni_metrics_zero(&t->step_m);
        if ((st = omni_worker_train_step(t->w, t->step, slice.slot_lo, slice.slot_hi, &t->step_m)))
            return st;
        if ((st = omni_metrics_reduce(t->comm, &t->step_m)))
            return st;
        t->step++;
        if (t->rank == 0) {
            /* Tokens seen: rank 0's count is the one checkpoints record and logs print. */
            t->tokens_seen += (int64_t)*t->step_m.tokens;
            for (int64_t i = 0; i < t->sum_m.n_values; i++)
                t->sum_m.v[i] += t->step_m.v[i];
            t->steps_in_sum++;
        }
        if (t->step % x->log.every == 0 || t->step == x->optim.steps) {
            st = OMNI_OK;
            if (t->rank == 0) {
                st = omni_metrics_log_train(&t->log, x, t->step, omni_lr_at(x, t->step - 1),
                                            &t->sum_m, t->steps_in_sum);
                keep_loads(t);
                omni_metrics_zero(&t->sum_m);
                t->steps_in_sum = 0;
            }
            if ((st = omni_mpi_agree(t->comm, st)))
                return st;
        }
        if (x->eval.every > 0 && t->step % x->eval.every == 0 && (st = evaluate(t)))
            return st;
        if (x->checkpoint.every > 0 && t->step % x->checkpoint.every == 0 && (st = save(t)))
            return st;
    }
    if (t->last_eval != t->step && (st = evaluate(t)))
        return st;
    if (t->last_saved != t->step && (st = save(t)))
        return st;
    return OMNI_OK;
}

omni_status omni_train(MPI_Comm comm, const omni_experiment *x, const char *resume_arg)
{
    trainer t;
    memset(&t, 0, sizeof t);
    t.comm = comm;
    t.x = x;
    t.last_saved = -1;
    t.last_eval = -1;
    MPI_Comm_rank(comm, &t.rank);
    MPI_Comm_size(comm, &t.size);
    omni_signals_install();
    int threads = 1;
    omni_status st = omni_blas_set_threads(x, comm, &threads);
    if (st)
        return st;
    if ((st = omni_experiment_to_yaml(x, &t.yaml)))
        return omni_mpi_agree(comm, st);
    if ((st = omni_worker_create(&t.w, comm, x)))
        goto out;
    int n_tasks, n_layers, n_experts;
    omni_worker_shape(t.w, &n_tasks, &n_layers, &n_experts);
    st = omni_metrics_create(&t.step_m, n_tasks, n_layers, n_experts);
    if (!st)
        st = omni_metrics_create(&t.sum_m, n_tasks, n_layers, n_experts);
    if (!st)
        st = omni_metrics_create(&t.eval_m, n_tasks, n_layers, n_experts);
    if (!st) {
        t.load = omni_alloc((int64_t)LOAD_ROWS * n_layers * (n_experts ? n_experts : 1),
                            sizeof *t.load, "expert load history");
        t.plan = omni_alloc(3 * (int64_t)t.size, sizeof *t.plan, "batch plan");
        if (!t.load || !t.plan)
            st = OMNI_ERR_NOMEM;
    }
    if (!st)
        t.n_state = omni_worker_state(t.w, &t.state);
    if ((st = omni_mpi_agree(comm, st)))
        goto out;
    if (resume_arg && (st = resume(&t, resume_arg)))
        goto out;
    if (t.rank == 0)
        st = omni_metrics_log_open(&t.log, x, omni_worker_tokenization(t.w), t.step);
    if ((st = omni_mpi_agree(comm, st)))
        goto out;
    omni_log(OMNI_LOG_INFO,
             "training %s on %d process%s x %d thread%s (GEMM %s, %s): %lld steps of %lld "
             "sequences of %lld tokens, %d tasks, %d MoE layers of %d experts",
             x->experiment.name, t.size, t.size == 1 ? "" : "es", threads, threads == 1 ? "" : "s",
             omni_gemm_backend_name(omni_gemm_backend_of()),
             omni_gemm_kernel(omni_gemm_backend_of()), (long long)x->optim.steps,
             (long long)x->data.batch, (long long)x->model.context, n_tasks, n_layers, n_experts);
    st = loop(&t);
    if (!st)
        omni_log(OMNI_LOG_INFO, "done: %lld steps, %lld tokens", (long long)t.step,
                 (long long)t.tokens_seen);
out:
    if (t.rank == 0)
        omni_metrics_log_close(&t.log);
    omni_free(t.load);
    omni_free(t.plan);
    omni_metrics_free(&t.step_m);
    omni_metrics_free(&t.sum_m);
    omni_metrics_free(&t.eval_m);
    omni_infer_close(t.infer);
    omni_worker_free(t.w);
    free(t.yaml);
    return st;
}
