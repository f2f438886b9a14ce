/*
 * The worker of a training job: its slice of every batch, the dense model data-parallel,
 * its shard of the experts, and the reductions that make the step that of the global
 * batch (docs/design.md §1).
 */
#include "worker.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "datasets.h"
#include "experts.h"
#include "model.h"

struct omni_worker {
    MPI_Comm comm;
    int rank, size;
    const omni_experiment *x;
    omni_sampler *sampler;
    omni_data_dims dims;
    int n_tasks;
    int64_t max_seq; /* the largest slice: ceil(batch / size) windows */
    /* micro-batches (data.micro_batch): windows per forward pass, passes per step (every
     * rank makes as many), whether a routing pre-pass decides the MoE layers' routing over
     * the whole slice first, and whether the gradient buckets wait for the last pass */
    int64_t pass_seq, n_pass;
    bool prepass, defer_reduce;
    omni_batch batch;
    omni_model *model;
    omni_moe *moe; /* NULL for a dense model */
    omni_moe_comm ops;
    omni_mpi_moe_comm mpi;
    MPI_Comm expert_group; /* ranks holding replicas of the same experts (N > E), else NULL */
    omni_grad_reducer dense_grads;
    /* Buckets of dense gradients, started as backward finishes each group: the head's,
     * each block's (its model tensors, and its MoE router and shared experts), the
     * embeddings'. -1: an empty group. */
    int bucket_head, bucket_embed;
    int *bucket_block;       /* [2 * n_layers]: the model's bucket of block l at l, the MoE
                                layer's at n_layers + l */
    double *scratch;         /* [2 + n_tasks] the step's small all-reduce */
    omni_tensor_table state; /* the training state as checkpoint tensors */
    double mpi_seconds;
    double timer[OMNI_WORKER_T_COUNT];
};

/* Add the time since *t0 to timer `which` and restart the clock. */
static void lap(omni_worker *w, omni_worker_timer which, double *t0)
{
    double t = omni_now();
    w->timer[which] += t - *t0;
    *t0 = t;
}

/* The bucket of the gradients of group `group` (a block, OMNI_GRADS_HEAD or
 * OMNI_GRADS_EMBED) of the model, or with moe of the MoE layers' replicated tensors; -1
 * when the group has none. */
static int bucket(omni_worker *w, int64_t group, bool moe)
{
    int64_t first, count;
    float *g;
    if (moe) {
        float *p, *m, *v;
        int64_t n, n_dense;
        omni_moe_buffers(w->moe, &p, &g, &m, &v, &n, &n_dense);
        omni_moe_group_range(w->moe, group, &first, &count);
    } else {
        g = omni_model_grads(w->model);
        omni_model_group_range(w->model, group, &first, &count);
    }
    return count > 0 ? omni_grad_reducer_add(&w->dense_grads, g + first, count) : -1;
}

static omni_status start_bucket(omni_worker *w, int b)
{
    return b < 0 ? OMNI_OK : omni_grad_reducer_start(&w->dense_grads, b);
}

/* omni_model's gradient-group callback: start summing what is final, let MPI progress. */
static omni_status on_grads_ready(void *ctx, int64_t group)
{
    omni_worker *w = ctx;
    if (w->defer_reduce)
        return OMNI_OK; /* a micro-batch before the last: the gradients still grow */
    double t = omni_now();
    omni_status st;
    if (group == OMNI_GRADS_HEAD)
        st = start_bucket(w, w->bucket_head);
    else if (group == OMNI_GRADS_EMBED)
        st = start_bucket(w, w->bucket_embed);
    else if (!(st = start_bucket(w, w->bucket_block[group])))
        st = start_bucket(w, w->bucket_block[w->x->model.n_layers + group]);
    if (!st)
        st = omni_grad_reducer_progress(&w->dense_grads);
    w->mpi_seconds += omni_now() - t;
    return st;
}

static omni_status add_buckets(omni_worker *w)
{
    int64_t L = w->x->model.n_layers;
    w->bucket_block = omni_alloc(2 * L, sizeof *w->bucket_block, "gradient buckets");
    if (!w->bucket_block)
        return OMNI_ERR_NOMEM;
    omni_grad_reducer_init(&w->dense_grads, w->comm);
    w->bucket_head = bucket(w, OMNI_GRADS_HEAD, false);
    for (int64_t l = L - 1; l >= 0; l--) {
        w->bucket_block[l] = bucket(w, l, false);
        w->bucket_block[L + l] = w->moe ? bucket(w, l, true) : -1;
    }
    w->bucket_embed = bucket(w, OMNI_GRADS_EMBED, false);
    omni_model_set_grads_ready(w->model, on_grads_ready, w);
    return OMNI_OK;
}

/* One checkpoint entry: tensor t's values in buf (params, AdamW m or v; NULL: t->data),
 * named prefix + its name. A replicated tensor is written by rank 0, a routed expert's rows
 * by their owner in group 0 (ranks < E; replicas elsewhere hold the same values). */
static omni_status add_state(omni_worker *w, const omni_tensor *t, const char *prefix, float *buf)
{
    omni_tensor d = *t;
    d.data = buf ? buf + t->offset : t->data;
    d.writer = t->sharded ? w->rank < w->x->moe.num_experts : w->rank == 0;
    return omni_tensor_table_add(&w->state, &d, "%s%s", prefix, t->name) ? OMNI_OK : OMNI_ERR_NOMEM;
}

/* The training state as checkpoint tensors, from the parts' tensor tables: each trainable
 * tensor, then its AdamW moments under optim/m/ and optim/v/; each state tensor (the
 * balancing biases, already named state/...) once. */
static omni_status build_state(omni_worker *w)
{
    static const char *const prefix[3] = {"", "optim/m/", "optim/v/"};
    omni_status st = OMNI_OK;
    float *buf[3] = {omni_model_params(w->model), omni_model_adam_m(w->model),
                     omni_model_adam_v(w->model)};
    for (int k = 0; k < 3; k++)
        for (int64_t i = 0; i < omni_model_n_tensors(w->model) && !st; i++)
            st = add_state(w, omni_model_tensor(w->model, i), prefix[k], buf[k]);
    if (!w->moe)
        return st;
    float *p, *g, *m, *v;
    int64_t np, n_dense;
    omni_moe_buffers(w->moe, &p, &g, &m, &v, &np, &n_dense);
    float *mbuf[3] = {p, m, v};
    for (int k = 0; k < 3; k++)
        for (int64_t i = 0; i < omni_moe_n_tensors(w->moe) && !st; i++) {
            const omni_tensor *t = omni_moe_tensor_at(w->moe, i);
            if (t->trainable)
                st = add_state(w, t, prefix[k], mbuf[k]);
            else if (k == 0)
                st = add_state(w, t, "", NULL);
        }
    return st;
}

static omni_status open_parts(omni_worker *w)
{
    const omni_experiment *x = w->x;
    omni_status st = omni_sampler_open(&w->sampler, x);
    st = omni_mpi_agree(w->comm, st);
    if (st)
        return st;
    w->dims = omni_sampler_dims(w->sampler);
    w->n_tasks = omni_sampler_n_tasks(w->sampler);
    for (int t = 0; t < w->n_tasks; t++) {
        /* Samples longer than the window are cut: their targets may never be seen. */
        const omni_task_info *ti = omni_sampler_task(w->sampler, t);
        int64_t n = ti->n_samples[OMNI_SPLIT_TRAIN];
        double mean = n > 0 ? (double)ti->n_elements[OMNI_SPLIT_TRAIN] / (double)n : 0.0;
        if (ti->kind != OMNI_KIND_TEXT && ti->kind != OMNI_KIND_CONTROL &&
            mean > (double)x->model.context)
            omni_log(OMNI_LOG_WARN,
                     "task %s: its samples average %.0f positions, more than model.context = "
                     "%lld; windows cut them, so many of their targets are never trained or "
                     "evaluated",
                     ti->name, mean, (long long)x->model.context);
    }
    bool has_moe = x->moe.every > 0;
    if (has_moe) {
        st = omni_moe_placement_check(x->moe.num_experts, w->size);
        if (st)
            return st; /* the same on every rank */
    }
    w->max_seq = (x->data.batch + w->size - 1) / w->size;
    w->pass_seq = x->data.micro_batch > 0 && x->data.micro_batch < w->max_seq ? x->data.micro_batch
                                                                              : w->max_seq;
    w->n_pass = (w->max_seq + w->pass_seq - 1) / w->pass_seq;
    w->prepass = w->n_pass > 1 && has_moe && omni_worker_needs_prepass(x);
    int64_t patch_dim = w->dims.image_patch_dim > w->dims.audio_patch_dim ? w->dims.image_patch_dim
                                                                          : w->dims.audio_patch_dim;
    st = omni_batch_alloc(&w->batch, w->max_seq, x->model.context, patch_dim);
    if (!st)
        st = omni_model_create(&w->model, x, &w->dims, w->pass_seq);
    if (!st && w->n_pass > 1)
        st = omni_model_enable_blockwise(w->model, w->max_seq);
    if (!st && has_moe) {
        st = omni_mpi_moe_comm_init(&w->mpi, w->comm, &w->ops);
        if (!st)
            st = omni_moe_create_passes(&w->moe, x, w->max_seq * x->model.context,
                                        w->pass_seq * x->model.context, w->n_tasks, &w->ops);
        if (!st) {
            for (int t = 0; t < w->n_tasks; t++)
                if (omni_sampler_task(w->sampler, t)->kind == OMNI_KIND_CONTROL)
                    omni_moe_set_task_modality(w->moe, t, OMNI_MOD_CONTROL);
            omni_ffn_hook hook = {.ctx = w->moe,
                                  .forward = omni_moe_forward,
                                  .backward = omni_moe_backward,
                                  .route = omni_moe_route,
                                  .window = omni_moe_window};
            omni_model_set_moe(w->model, &hook);
        }
    }
    if (!st) {
        w->scratch = omni_alloc(2 + w->n_tasks, sizeof *w->scratch, "worker scratch");
        if (!w->scratch)
            st = OMNI_ERR_NOMEM;
    }
    st = omni_mpi_agree(w->comm, st);
    if (st)
        return st;
    if (has_moe && w->size > x->moe.num_experts) {
        /* Replicas of an expert: ranks with the same rank % E. */
        st = omni_mpi_check(
            MPI_Comm_split(w->comm, (int)(w->rank % x->moe.num_experts), w->rank, &w->expert_group),
            "MPI_Comm_split of expert groups");
        if (st)
            return st;
    }
    omni_model_init_params(w->model);
    if (w->moe)
        omni_moe_init_params(w->moe);
    st = build_state(w);
    if (!st)
        st = add_buckets(w);
    return omni_mpi_agree(w->comm, st);
}

bool omni_worker_needs_prepass(const omni_experiment *x)
{
    return x->moe.every > 0 &&
           (x->moe.capacity_factor > 0.0 || x->moe.router == OMNI_ROUTER_EXPERT_CHOICE ||
            x->moe.aux_loss > 0.0 || x->moe.z_loss > 0.0 || x->moe.bias_rate > 0.0 ||
            x->moe.entropy.local > 0.0 || x->moe.entropy.global > 0.0);
}

omni_status omni_worker_create(omni_worker **out, MPI_Comm comm, const omni_experiment *x)
{
    omni_worker *w = omni_alloc(1, sizeof *w, "worker");
    omni_status st = omni_mpi_agree(comm, w ? OMNI_OK : OMNI_ERR_NOMEM);
    if (st) {
        omni_free(w);
        return st;
    }
    w->comm = comm;
    w->x = x;
    w->expert_group = MPI_COMM_NULL;
    MPI_Comm_rank(comm, &w->rank);
    MPI_Comm_size(comm, &w->size);
    st = open_parts(w);
    if (st) {
        omni_worker_free(w);
        return st;
    }
    *out = w;
    return OMNI_OK;
}

void omni_worker_free(omni_worker *w)
{
    if (!w)
        return;
    if (w->expert_group != MPI_COMM_NULL)
        MPI_Comm_free(&w->expert_group);
    omni_moe_free(w->moe);
    if (w->mpi.sc)
        omni_mpi_moe_comm_free(&w->mpi);
    omni_model_free(w->model);
    omni_batch_free(&w->batch);
    omni_sampler_close(w->sampler);
    omni_free(w->scratch);
    omni_free(w->bucket_block);
    omni_tensor_table_free(&w->state);
    omni_free(w);
}

void omni_worker_shape(const omni_worker *w, int *n_tasks, int *n_moe_layers, int *n_experts)
{
    *n_tasks = w->n_tasks;
    *n_moe_layers = w->moe ? (int)omni_moe_n_layers(w->moe) : 0;
    *n_experts = w->moe ? (int)w->x->moe.num_experts : 0;
}

const omni_tokenization *omni_worker_tokenization(const omni_worker *w)
{
    return omni_sampler_tokenization(w->sampler);
}

static void add_routing(omni_worker *w, omni_metrics *m);

/* Add this rank's model metrics, and with routing its routing metrics (add_routing). */
static void add_metrics(omni_worker *w, const omni_model_metrics *mm, omni_metrics *m, bool routing)
{
    const omni_batch *b = &w->batch;
    *m->loss += mm->loss;
    for (int t = 0; t < w->n_tasks; t++) {
        m->task_loss[t] += mm->ce_sum[t];
        m->task_count[t] += (double)mm->tokens[t];
        m->task_correct[t] += (double)mm->correct[t];
    }
    int64_t n = b->n_seq * b->context, tokens = 0;
    for (int64_t p = 0; p < n; p++)
        tokens += b->kind[p] != OMNI_POS_PAD;
    *m->tokens += (double)tokens;
    if (routing)
        add_routing(w, m);
}

/* Add this rank's routing tables, and on rank 0 the (already global) router statistics, of
 * the MoE layers' last forward or route. */
static void add_routing(omni_worker *w, omni_metrics *m)
{
    if (!w->moe)
        return;
    /* This rank's routing tables (local sums): every rank adds, the reduce sums them. */
    for (int l = 0; l < (int)omni_moe_n_layers(w->moe); l++) {
        omni_route_table wt, wm, lt, lm;
        omni_metrics_tables(m, l, &wt, &wm);
        omni_moe_layer_tables(w->moe, l, &lt, &lm);
        int64_t nt = omni_route_table_len(lt.n_groups, lt.n_experts);
        int64_t nm = omni_route_table_len(lm.n_groups, lm.n_experts);
        for (int64_t i = 0; i < nt; i++)
            wt.kept[i] += lt.kept[i];
        for (int64_t i = 0; i < nm; i++)
            wm.kept[i] += lm.kept[i];
    }
    if (w->rank != 0)
        return;
    for (int64_t l = 0; l < omni_moe_n_layers(w->moe); l++) {
        double aux, z;
        omni_moe_layer_losses(w->moe, l, &aux, &z);
        *m->aux += w->x->moe.aux_loss * aux;
        *m->z += w->x->moe.z_loss * z;
        double el, eg;
        omni_moe_layer_entropy(w->moe, l, &el, &eg);
        *m->entropy += w->x->moe.entropy.local * el + w->x->moe.entropy.global * eg;
        const omni_router_sums *s = omni_moe_layer_stats(w->moe, l);
        for (int e = 0; e < m->n_experts; e++)
            m->load[l * m->n_experts + e] += s->kept[e];
        m->dropped[l] += *s->dropped;
        for (int e = 0; e < m->n_experts; e++)
            m->assigned[l] += s->assigned[e];
    }
}

static omni_status fill_slice(omni_worker *w, omni_split split, int64_t step, int64_t lo,
                              int64_t hi, double *loss_tokens)
{
    omni_batch *b = &w->batch;
    b->n_seq = hi - lo;
    int64_t count = 0;
    for (int64_t slot = lo; slot < hi; slot++)
        count += omni_sampler_fill(w->sampler, split, (uint64_t)w->x->experiment.seed, step, slot,
                                   b, slot - lo);
    /* A sample that could not be read or failed its checks ends the job on every rank. */
    omni_status st = omni_mpi_agree(w->comm, omni_sampler_status(w->sampler));
    if (st)
        return st;
    double c = (double)count, total = 0;
    st = omni_mpi_check(MPI_Allreduce(&c, &total, 1, MPI_DOUBLE, MPI_SUM, w->comm),
                        "MPI_Allreduce of loss tokens");
    *loss_tokens = total;
    b->loss_norm = total > 0 ? total : 1.0;
    return st;
}

/* Add the metrics of one pass to the step's. */
static void add_pass(omni_model_metrics *sum, const omni_model_metrics *q)
{
    sum->loss += q->loss;
    for (int t = 0; t < OMNI_MAX_TASKS; t++) {
        sum->ce_sum[t] += q->ce_sum[t];
        sum->tokens[t] += q->tokens[t];
        sum->correct[t] += q->correct[t];
    }
}

/*
 * The forward and backward of the step's slice, accumulating the gradients: one pass, or
 * with micro-batches n_pass passes of pass_seq windows (empty ones on a rank whose slice is
 * shorter: MoE exchanges are collective), after the routing pre-pass when the MoE layers
 * need the whole batch's decisions or statistics. The gradient buckets start during the
 * last pass's backward. Without a pre-pass the routing metrics are added pass by pass.
 */
static omni_status forward_backward(omni_worker *w, omni_metrics *m, omni_model_metrics *mm,
                                    double *t0)
{
    omni_status st;
    if (w->n_pass == 1) {
        if ((st = omni_model_forward(w->model, &w->batch, mm)))
            return st;
        lap(w, OMNI_WORKER_T_FORWARD, t0);
        if ((st = omni_model_backward(w->model, &w->batch)))
            return st;
        lap(w, OMNI_WORKER_T_BACKWARD, t0);
        return OMNI_OK;
    }
    if (w->prepass && (st = omni_model_forward_blockwise(w->model, &w->batch, NULL)))
        return st;
    lap(w, OMNI_WORKER_T_FORWARD, t0);
    for (int64_t q = 0; q < w->n_pass; q++) {
        int64_t n = w->batch.n_seq;
        int64_t lo = q * w->pass_seq < n ? q * w->pass_seq : n;
        int64_t hi = lo + w->pass_seq < n ? lo + w->pass_seq : n;
        omni_batch pb = omni_batch_windows(&w->batch, lo, hi - lo);
        omni_model_metrics qm;
        if (w->moe)
            omni_moe_window(w->moe, lo);
        if ((st = omni_model_forward(w->model, &pb, &qm)))
            return st;
        add_pass(mm, &qm);
        if (w->moe && !w->prepass)
            add_routing(w, m);
        lap(w, OMNI_WORKER_T_FORWARD, t0);
        w->defer_reduce = q + 1 < w->n_pass;
        st = omni_model_backward(w->model, &pb);
        w->defer_reduce = false;
        if (st)
            return st;
        lap(w, OMNI_WORKER_T_BACKWARD, t0);
    }
    return OMNI_OK;
}

static omni_status reduce_gradients(omni_worker *w, double *sumsq)
{
    /* Every bucket was started by on_grads_ready during backward. */
    double t = omni_now();
    omni_status st = omni_grad_reducer_wait(&w->dense_grads);
    float *p, *g, *m, *v;
    int64_t n = 0, n_dense = 0;
    if (!st && w->moe) {
        omni_moe_buffers(w->moe, &p, &g, &m, &v, &n, &n_dense);
        if (w->expert_group != MPI_COMM_NULL && n > n_dense)
            st = omni_mpi_check(MPI_Allreduce(MPI_IN_PLACE, g + n_dense, (int)(n - n_dense),
                                              MPI_FLOAT, MPI_SUM, w->expert_group),
                                "MPI_Allreduce of replicated expert gradients");
    }
    w->mpi_seconds += omni_now() - t;
    double dense = omni_model_grad_sumsq(w->model), experts = 0;
    if (!st && w->moe) {
        double md, me;
        omni_moe_grad_sumsq(w->moe, &md, &me);
        dense += md;
        /* A replicated expert counts once: only its replica in group 0 adds it. */
        experts = w->rank < w->x->moe.num_experts ? me : 0.0;
    }
    *sumsq = dense;
    w->scratch[0] = experts;
    return st;
}

static const char *first_bad_task(const omni_worker *w, const double *task_loss)
{
    for (int t = 0; t < w->n_tasks; t++)
        if (!isfinite(task_loss[t]))
            return omni_sampler_task(w->sampler, t)->name;
    return "(none: the gradient norm)";
}

omni_status omni_worker_train_step(omni_worker *w, int64_t step, int64_t slot_lo, int64_t slot_hi,
                                   omni_metrics *m)
{
    const omni_experiment *x = w->x;
    double loss_tokens, t0 = omni_now();
    omni_status st = fill_slice(w, OMNI_SPLIT_TRAIN, step, slot_lo, slot_hi, &loss_tokens);
    if (st)
        return st;
    lap(w, OMNI_WORKER_T_FILL, &t0);
    omni_model_zero_grad(w->model);
    if (w->moe) {
        omni_moe_zero_grad(w->moe);
        omni_moe_set_step(w->moe, step, slot_lo * x->model.context, true);
    }
    omni_model_metrics mm;
    memset(&mm, 0, sizeof mm);
    if ((st = forward_backward(w, m, &mm, &t0)))
        return st;
    double dense_sumsq;
    if ((st = reduce_gradients(w, &dense_sumsq)))
        return st;
    /* One small all-reduce: expert squares, the loss, and per-task CE to name a bad task. */
    w->scratch[1] = mm.loss;
    for (int t = 0; t < w->n_tasks; t++)
        w->scratch[2 + t] = mm.ce_sum[t];
    double t1 = omni_now();
    st = omni_mpi_check(
        MPI_Allreduce(MPI_IN_PLACE, w->scratch, 2 + w->n_tasks, MPI_DOUBLE, MPI_SUM, w->comm),
        "MPI_Allreduce of the gradient norm");
    w->mpi_seconds += omni_now() - t1;
    if (st)
        return st;
    lap(w, OMNI_WORKER_T_REDUCE, &t0);
    double norm = sqrt(dense_sumsq + w->scratch[0]);
    double loss = w->scratch[1] + (w->moe ? omni_moe_loss(w->moe) : 0.0);
    if (!isfinite(loss) || !isfinite(norm)) {
        /* Every rank holds the same sums, so every rank fails alike: agreed. */
        omni_fail(OMNI_ERR_NUMERIC,
                  "step %lld: the loss is not finite (loss %g, gradient norm %g, task %s); "
                  "stopping without applying this step",
                  (long long)step + 1, loss, norm, first_bad_task(w, w->scratch + 2));
        return omni_mpi_agree(w->comm, OMNI_ERR_NUMERIC);
    }
    if ((st = omni_model_step(w->model, step, norm)))
        return st;
    if (w->moe) {
        omni_adamw a = omni_adamw_at(x, step, omni_lr_at(x, step), omni_clip_scale(x, norm));
        omni_moe_step(w->moe, &a);
        omni_moe_update_bias(w->moe);
    }
    lap(w, OMNI_WORKER_T_UPDATE, &t0);
    add_metrics(w, &mm, m, !w->moe || w->n_pass == 1 || w->prepass);
    return OMNI_OK;
}

omni_status omni_worker_eval(omni_worker *w, omni_metrics *m)
{
    const omni_experiment *x = w->x;
    omni_status st = OMNI_OK;
    omni_batch *b = &w->batch;
    for (int task = 0; task < w->n_tasks && !st; task++) {
        int64_t n_win = omni_sampler_task(w->sampler, task)->n_val_windows;
        int64_t cap = x->eval.batches * x->data.batch;
        if (n_win > cap)
            n_win = cap;
        /* Chunks of data.batch windows, each split over the ranks like a training batch,
         * so that every rank makes the same number of forward calls. */
        for (int64_t c0 = 0; c0 < n_win && !st; c0 += x->data.batch) {
            int64_t len = n_win - c0 < x->data.batch ? n_win - c0 : x->data.batch;
            int64_t lo = c0 + len * w->rank / w->size, hi = c0 + len * (w->rank + 1) / w->size;
            b->n_seq = hi - lo;
            int64_t count = 0;
            for (int64_t i = lo; i < hi; i++)
                count += omni_sampler_fill_val(w->sampler, task, i, b, i - lo);
            if ((st = omni_mpi_agree(w->comm, omni_sampler_status(w->sampler))))
                break;
            b->loss_norm = count > 0 ? (double)count : 1.0;
            if (w->moe)
                omni_moe_set_step(w->moe, 0, lo * x->model.context, false);
            omni_model_metrics mm;
            memset(&mm, 0, sizeof mm);
            st = w->n_pass > 1 ? omni_model_forward_blockwise(w->model, b, &mm)
                               : omni_model_forward(w->model, b, &mm);
            if (!st) {
                mm.loss = 0; /* eval reports per-task means only */
                add_metrics(w, &mm, m, false);
            }
        }
    }
    return st;
}

int omni_worker_state(omni_worker *w, const omni_ckpt_tensor **t)
{
    *t = w->state.t;
    return (int)w->state.n;
}

double omni_worker_mpi_seconds(omni_worker *w)
{
    double s = w->mpi_seconds + (w->moe ? w->mpi.seconds : 0.0);
    w->mpi_seconds = 0;
    w->mpi.seconds = 0;
    return s;
}

double omni_worker_exchange_bytes(omni_worker *w)
{
    double b = w->moe ? w->mpi.bytes_sent : 0.0;
    w->mpi.bytes_sent = 0;
    return b;
}

omni_moe *omni_worker_moe(omni_worker *w)
{
    return w->moe;
}

omni_model *omni_worker_model(omni_worker *w)
{
    return w->model;
}

const omni_sampler *omni_worker_sampler(const omni_worker *w)
{
    return w->sampler;
}

void omni_worker_timers(const omni_worker *w, double out[OMNI_WORKER_T_COUNT])
{
    memcpy(out, w->timer, sizeof w->timer);
}

void omni_worker_timers_reset(omni_worker *w)
{
    memset(w->timer, 0, sizeof w->timer);
}
