/*
 * omni_moe: the MoE layers of a model. Per layer: router (replicated), optional shared
 * experts (replicated), this rank's routed experts (sharded), the balancing bias (state),
 * and the cache of the last forward. One flat allocation each for parameters, gradients
 * and the two AdamW moments, replicated tensors first, so the distributed part all-reduces
 * one prefix of the gradient buffer. The data flow of one forward and backward is written
 * out in docs/moe.md.
 */
#include "moe_private.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ops.h"

/* Add the time since *t0 to timer `which` and restart the clock. */
static void lap(omni_moe *m, omni_moe_timer which, double *t0)
{
    double t = omni_now();
    m->timer[which] += t - *t0;
    *t0 = t;
}

void omni_moe_timers(const omni_moe *m, double out[OMNI_MOE_T_COUNT])
{
    memcpy(out, m->timer, sizeof m->timer);
}

void omni_moe_timers_reset(omni_moe *m)
{
    memset(m->timer, 0, sizeof m->timer);
    m->shadowed = m->shadow_passes = 0;
}

void omni_moe_shadow_counts(const omni_moe *m, int64_t *shared, int64_t *passes)
{
    *shared = m->shadowed;
    *passes = m->shadow_passes;
}

void omni_moe_set_shadow_cost(omni_moe *m, int64_t rows)
{
    m->shadow_cost = rows;
}

const bool *omni_moe_layer_shadow(const omni_moe *m, int64_t index)
{
    return m->max_shadow > 0 ? m->layers[index].shadow : NULL;
}

omni_status omni_moe_create(omni_moe **out, const omni_experiment *x, int64_t max_tokens,
                            int64_t n_tasks, const omni_moe_comm *comm)
{
    return omni_moe_create_passes(out, x, max_tokens, max_tokens, n_tasks, comm);
}

omni_status omni_moe_create_passes(omni_moe **out, const omni_experiment *x, int64_t max_tokens,
                                   int64_t max_pass, int64_t n_tasks, const omni_moe_comm *comm)
{
    *out = NULL;
    if (max_pass <= 0 || max_pass > max_tokens)
        max_pass = max_tokens;
    omni_status st = omni_moe_placement_check(x->moe.num_experts, comm->size);
    if (st != OMNI_OK)
        return st;
    omni_moe *m = omni_alloc(1, sizeof *m, "moe");
    if (!m)
        return OMNI_ERR_NOMEM;
    m->x = *x;
    m->comm = *comm;
    m->d = x->model.d_model;
    m->E = x->moe.num_experts;
    m->k = x->moe.top_k;
    m->ff = x->moe.expert_ff;
    m->S = x->moe.shared_experts;
    m->n_blocks = x->model.n_layers;
    m->max_tokens = max_tokens;
    m->max_pass = max_pass;
    m->n_tasks = n_tasks;
    m->task_router = x->moe.router == OMNI_ROUTER_TASK;
    m->expert_choice = x->moe.router == OMNI_ROUTER_EXPERT_CHOICE;
    m->kr = m->expert_choice ? x->moe.num_experts : x->moe.top_k;
    m->entropy = x->moe.entropy.local > 0.0 || x->moe.entropy.global > 0.0;
    if (m->task_router && n_tasks < 1) {
        omni_free(m);
        return omni_fail(OMNI_ERR_CONFIG, "moe.router: task needs the task table of the data, "
                                          "and the model has no tasks");
    }
    m->route_len = omni_route_table_len(n_tasks, x->moe.num_experts) +
                   omni_route_table_len(OMNI_MOD_COUNT, x->moe.num_experts);
    /* n: rows that one route decides (routing arrays); np: rows of one pass (experts) */
    const int64_t d = m->d, E = m->E, k = m->k, kr = m->kr, ff = m->ff, S = m->S, n = max_tokens,
                  np = max_pass;
    omni_expert_shard(E, comm->size, comm->rank, &m->e_first, &m->e_count);

    /* Rows that can reach this rank: from each source at most one row per token and local
     * expert, at most the capacity per local expert. */
    int64_t cap = omni_moe_capacity(k, x->moe.capacity_factor, n, E);
    int64_t per_src = min64(np * min64(k, m->e_count), m->e_count * min64(cap, np));
    int64_t n_src = comm->size > E ? E : comm->size;
    m->max_recv = max64(1, n_src * per_src);
    if (m->expert_choice) {
        /* training: each local expert at most its capacity over the global batch (at most
         * n N tokens); evaluation and inference: the per-token fallback, k rows a token */
        int64_t T = n * comm->size;
        int64_t c = x->moe.capacity_factor > 0.0
                        ? omni_router_choice_capacity(k, x->moe.capacity_factor, T, E)
                        : 0;
        m->max_recv = max64(max64(1, m->e_count * min64(c, np * comm->size)),
                            n_src * np * min64(k, m->e_count));
    }
    const int64_t R = m->max_recv;

    m->block_to_moe = omni_alloc_in(&m->mem, m->n_blocks, sizeof(int64_t), "moe layer map");
    if (m->mem.failed)
        goto out_nomem;
    for (int64_t b = 0; b < m->n_blocks; b++)
        m->block_to_moe[b] = omni_experiment_is_moe_block(x, b) ? m->n_moe++ : -1;
    m->layers = omni_alloc_in(&m->mem, max64(1, m->n_moe), sizeof(moe_layer), "moe layers");
    if (m->mem.failed)
        goto out_nomem;
    for (int64_t b = 0; b < m->n_blocks; b++)
        if (m->block_to_moe[b] >= 0)
            m->layers[m->block_to_moe[b]].block = b;

    if ((st = moe_build_table(m)))
        goto out_fail;
    m->params = omni_alloc_in(&m->mem, max64(1, m->n_params), sizeof(float), "moe parameters");
    m->grads = omni_alloc_in(&m->mem, max64(1, m->n_params), sizeof(float), "moe gradients");
    m->adam_m = omni_alloc_in(&m->mem, max64(1, m->n_params), sizeof(float), "moe AdamW moments");
    m->adam_v = omni_alloc_in(&m->mem, max64(1, m->n_params), sizeof(float), "moe AdamW moments");
    m->state = omni_alloc_in(&m->mem, max64(1, m->n_moe * E), sizeof(float), "moe balancing bias");
    if (m->mem.failed)
        goto out_nomem;
    moe_bind_views(m);

    for (int64_t i = 0; i < m->n_moe; i++) {
        moe_layer *L = &m->layers[i];
        L->x = omni_alloc_in(&m->mem, n * d, sizeof(float), "moe cache");
        L->tok = omni_alloc_in(&m->mem, n, sizeof(int64_t), "moe cache");
        if (x->moe.jitter > 0.0)
            L->xr = omni_alloc_in(&m->mem, n * d, sizeof(float), "moe cache");
        L->logits = omni_alloc_in(&m->mem, n * E, sizeof(float), "moe cache");
        L->probs = omni_alloc_in(&m->mem, n * E, sizeof(float), "moe cache");
        L->lse = omni_alloc_in(&m->mem, n, sizeof(float), "moe cache");
        L->expert = omni_alloc_in(&m->mem, n * kr, sizeof(int32_t), "moe cache");
        L->slot = omni_alloc_in(&m->mem, n * kr, sizeof(int32_t), "moe cache");
        L->prob = omni_alloc_in(&m->mem, n * kr, sizeof(float), "moe cache");
        L->gate = omni_alloc_in(&m->mem, n * kr, sizeof(float), "moe cache");
        L->kept = omni_alloc_in(&m->mem, E, sizeof(int64_t), "moe cache");
        if (np < n) {
            L->rec_expert = omni_alloc_in(&m->mem, n * kr, sizeof(int32_t), "moe route record");
            L->rec_slot = omni_alloc_in(&m->mem, n * kr, sizeof(int32_t), "moe route record");
        }
        L->xe = omni_alloc_in(&m->mem, R * d, sizeof(float), "moe expert rows");
        L->h1 = omni_alloc_in(&m->mem, R * ff, sizeof(float), "moe expert activations");
        L->h3 = omni_alloc_in(&m->mem, R * ff, sizeof(float), "moe expert activations");
        L->ret = omni_alloc_in(&m->mem, np * kr * d, sizeof(float), "moe expert outputs");
        if (S > 0) {
            L->sh1 = omni_alloc_in(&m->mem, S * np * ff, sizeof(float), "moe shared activations");
            L->sh3 = omni_alloc_in(&m->mem, S * np * ff, sizeof(float), "moe shared activations");
        }
        st = omni_dispatch_plan_create(&L->plan, E, kr, comm->size, comm->rank, np, R);
        if (st != OMNI_OK)
            goto out_fail;
        st = omni_router_sums_create(&L->sums, E, n_tasks, m->entropy ? OMNI_MOD_COUNT : 0);
        if (st != OMNI_OK)
            goto out_fail;
        L->route = omni_alloc_in(&m->mem, m->route_len, sizeof(double), "moe routing statistics");
        if (m->mem.failed)
            goto out_nomem;
        if (m->entropy)
            L->rmod = omni_alloc_in(&m->mem, n, sizeof(int32_t), "moe entropy losses");
        if (m->task_router) {
            L->t_logits = omni_alloc_in(&m->mem, n_tasks * E, sizeof(float), "moe task routing");
            L->t_probs = omni_alloc_in(&m->mem, n_tasks * E, sizeof(float), "moe task routing");
            L->t_lse = omni_alloc_in(&m->mem, n_tasks, sizeof(float), "moe task routing");
            L->t_expert = omni_alloc_in(&m->mem, n_tasks * k, sizeof(int32_t), "moe task routing");
            L->t_prob = omni_alloc_in(&m->mem, n_tasks * k, sizeof(float), "moe task routing");
            L->t_gate = omni_alloc_in(&m->mem, n_tasks * k, sizeof(float), "moe task routing");
            L->t_local = omni_alloc_in(&m->mem, n_tasks, sizeof(double), "moe task routing");
            L->rtask = omni_alloc_in(&m->mem, n, sizeof(int32_t), "moe task routing");
            if (m->mem.failed)
                goto out_nomem;
        }
        omni_route_table_bind(&L->by_task, L->route, n_tasks, E);
        omni_route_table_bind(&L->by_mod, L->route + omni_route_table_len(n_tasks, E),
                              OMNI_MOD_COUNT, E);
    }
    /* shadow experts: token choice over E >= N experts on N > 1 ranks. A rank computes at
     * most max_shadow copies, each of at most one row per token and the capacity. */
    const int64_t N = comm->size;
    if (x->parallel.shadow > 0 && N > 1 && E >= N && !m->expert_choice) {
        const int64_t blk = 3 * d * ff;
        m->max_shadow = min64(x->parallel.shadow, E);
        m->shadow_cost = OMNI_SHADOW_COST_ROWS;
        m->copy_rows = min64(m->max_shadow, E - m->e_count) * min64(cap, np);
        for (int64_t i = 0; i < m->n_moe; i++) {
            moe_layer *L = &m->layers[i];
            L->shadow = omni_alloc_in(&m->mem, E, sizeof(bool), "moe shadow experts");
            L->copy_e =
                omni_alloc_in(&m->mem, m->max_shadow, sizeof(int64_t), "moe shadow experts");
            L->cw = omni_alloc_in(&m->mem, min64(m->max_shadow, E - m->e_count) * blk,
                                  sizeof(float), "moe shadow expert weights");
            L->cx = omni_alloc_in(&m->mem, m->copy_rows * d, sizeof(float), "moe shadow rows");
            L->ch1 = omni_alloc_in(&m->mem, m->copy_rows * ff, sizeof(float), "moe shadow rows");
            L->ch3 = omni_alloc_in(&m->mem, m->copy_rows * ff, sizeof(float), "moe shadow rows");
        }
        m->kept_sum = omni_alloc_in(&m->mem, N * E, sizeof(double), "moe shadow experts");
        m->kept_all = omni_alloc_in(&m->mem, N * E, sizeof(int64_t), "moe shadow experts");
        m->rank_load = omni_alloc_in(&m->mem, N, sizeof(int64_t), "moe shadow experts");
        m->ccnt = omni_alloc_in(&m->mem, 4 * N, sizeof(int64_t), "moe shadow experts");
        m->cbuf = omni_alloc_in(&m->mem, (m->max_shadow + 1) * blk, sizeof(float),
                                "moe shadow gradients");
    }
    m->send = omni_alloc_in(&m->mem, np * kr * d, sizeof(float), "moe dispatch buffer");
    m->recv = omni_alloc_in(&m->mem, R * d, sizeof(float), "moe dispatch buffer");
    m->ye = omni_alloc_in(&m->mem, R * d, sizeof(float), "moe dispatch buffer");
    m->act = omni_alloc_in(&m->mem, max64(R, np) * ff, sizeof(float), "moe expert scratch");
    m->dprobs = omni_alloc_in(&m->mem, np * E, sizeof(float), "moe router scratch");
    m->dlogits = omni_alloc_in(&m->mem, np * E, sizeof(float), "moe router scratch");
    m->dgate = omni_alloc_in(&m->mem, np * kr, sizeof(float), "moe router scratch");
    if (m->expert_choice) {
        const int64_t T = n * N;
        m->ec_cnt = omni_alloc_in(&m->mem, 6 * N, sizeof(int64_t), "moe expert choice");
        m->ec_send = omni_alloc_in(&m->mem, n * max64(E, N), sizeof(float), "moe expert choice");
        m->ec_recv = omni_alloc_in(&m->mem, m->e_count * T, sizeof(float), "moe expert choice");
        m->ec_col = omni_alloc_in(&m->mem, T, sizeof(float), "moe expert choice");
        m->ec_flag = omni_alloc_in(&m->mem, T, sizeof(float), "moe expert choice");
        m->ec_chosen = omni_alloc_in(&m->mem, n * E, sizeof(float), "moe expert choice");
        m->ec_heap = omni_alloc_in(&m->mem, T, sizeof(int64_t), "moe expert choice");
    }
    m->dxr = omni_alloc_in(&m->mem, np * d, sizeof(float), "moe router scratch");
    m->yc = omni_alloc_in(&m->mem, np * d, sizeof(float), "moe scratch");
    m->dxc = omni_alloc_in(&m->mem, np * d, sizeof(float), "moe scratch");
    if (np < n)
        m->seq_row0 = omni_alloc_in(&m->mem, n / max64(1, x->model.context) + 2, sizeof(int64_t),
                                    "moe route record");
    m->task_c = omni_alloc_in(&m->mem, n, sizeof(int32_t), "moe scratch");
    if (m->entropy)
        m->ent_scratch = omni_alloc_in(&m->mem, E, sizeof(double), "moe entropy losses");
    if (m->task_router) {
        m->dprobs_t = omni_alloc_in(&m->mem, n_tasks * E, sizeof(double), "moe router scratch");
        m->dprobs_tf = omni_alloc_in(&m->mem, n_tasks * E, sizeof(float), "moe router scratch");
        m->dlogits_t = omni_alloc_in(&m->mem, n_tasks * E, sizeof(float), "moe router scratch");
        m->demb = omni_alloc_in(&m->mem, n_tasks * d, sizeof(float), "moe router scratch");
    }
    m->mod_c = omni_alloc_in(&m->mem, n, sizeof(int32_t), "moe scratch");
    m->task_mod = omni_alloc_in(&m->mem, max64(1, n_tasks), sizeof(int8_t), "moe task modalities");
    m->assign_scratch = omni_alloc_in(&m->mem, omni_router_assign_scratch(n, E, k), sizeof(int64_t),
                                      "moe router scratch");
    if (m->mem.failed)
        goto out_nomem;
    memset(m->task_mod, OMNI_MOD_TEXT, (size_t)max64(1, n_tasks));
    *out = m;
    return OMNI_OK;
out_nomem:
    st = OMNI_ERR_NOMEM;
out_fail:
    omni_moe_free(m);
    return st;
}

void omni_moe_free(omni_moe *m)
{
    if (!m)
        return;
    if (m->layers)
        for (int64_t i = 0; i < m->n_moe; i++) {
            moe_layer *L = &m->layers[i];
            if (L->plan.pos)
                omni_dispatch_plan_free(&L->plan);
            if (L->sums.buf)
                omni_router_sums_free(&L->sums);
        }
    omni_alloc_list_free(&m->mem);
    omni_tensor_table_free(&m->tensors);
    omni_free(m);
}

void omni_moe_init_params(omni_moe *m)
{
    for (int64_t i = 0; i < m->tensors.n; i++)
        omni_tensor_init(&m->tensors.t[i], (uint64_t)m->x.experiment.seed, m->n_blocks);
}

int64_t omni_moe_n_layers(const omni_moe *m)
{
    return m->n_moe;
}

int64_t omni_moe_layer_index(const omni_moe *m, int64_t layer)
{
    if (layer < 0 || layer >= m->n_blocks)
        return -1;
    return m->block_to_moe[layer];
}

void omni_moe_set_step(omni_moe *m, int64_t step, int64_t token_offset, bool training)
{
    m->step = step;
    m->token_offset = token_offset;
    m->base_offset = token_offset;
    m->training = training;
    m->window = 0;
    for (int64_t i = 0; i < m->n_moe; i++)
        m->layers[i].forced = false;
}

void omni_moe_window(void *ctx, int64_t first_seq)
{
    omni_moe *m = ctx;
    m->window = first_seq;
    m->token_offset = m->base_offset + first_seq * m->x.model.context;
}

static omni_status exchange(omni_moe *m, const float *send, const int64_t *scount,
                            const int64_t *sdispl, float *recv, const int64_t *rcount,
                            const int64_t *rdispl)
{
    return m->comm.alltoallv_rows(m->comm.ctx, send, scount, sdispl, recv, rcount, rdispl, m->d);
}

void omni_moe_set_task_modality(omni_moe *m, int64_t task, omni_modality mod)
{
    if (task >= 0 && task < m->n_tasks)
        m->task_mod[task] = (int8_t)mod;
}

/* The modality of position t: patches by their kind, tokens by their task's kind. */
static int32_t modality_of(const omni_moe *m, const omni_batch *b, int64_t t)
{
    if (!b || !b->kind)
        return -1;
    if (b->kind[t] == OMNI_POS_IMAGE)
        return OMNI_MOD_IMAGE;
    if (b->kind[t] == OMNI_POS_AUDIO)
        return OMNI_MOD_AUDIO;
    int32_t task = b->task ? b->task[t] : -1;
    return task >= 0 && task < m->n_tasks ? m->task_mod[task] : OMNI_MOD_TEXT;
}

/* Whether position t of the batch is routed: every position but padding. */
static bool routed(const omni_batch *b, int64_t t)
{
    return !b || !b->kind || b->kind[t] != OMNI_POS_PAD;
}

/* The router's logits, probabilities and lse on each routed row (jittered in training). */
static void router_rows(omni_moe *m, moe_layer *L)
{
    const int64_t d = m->d, E = m->E, na = L->na;
    L->jittered = m->training && m->x.moe.jitter > 0.0;
    L->step = m->step;
    L->token_offset = m->token_offset;
    const float *xr = L->x;
    if (L->jittered) {
        omni_router_jitter(L->xr, L->x, (float)m->x.moe.jitter, (uint64_t)m->x.experiment.seed,
                           L->block, L->step, L->token_offset, L->tok, na, d);
        xr = L->xr;
    }
    omni_router_forward(L->logits, L->probs, L->lse, xr, L->wr, na, d, E);
}

/* Token choice (moe.router: topk): each routed row its top-k experts. */
static void route_by_token(omni_moe *m, moe_layer *L)
{
    router_rows(m, L);
    omni_router_topk(L->expert, L->prob, L->gate, L->logits, L->probs, L->bias, L->na, m->E, m->k,
                     m->x.moe.normalize_topk);
}

/*
 * Expert choice (moe.router: expert_choice), in training: each expert takes its capacity
 * of the global batch's tokens by router probability. Collective. The ranks learn each
 * other's row counts (the global token order is rank order, then row order: the order of the
 * global batch, whatever the number of processes); every rank sends each expert's column of
 * probabilities to the ranks that hold it (scores, not activations); there, the expert
 * selects over the whole batch and the 0/1 choice goes back by the mirror exchange. With
 * replicated experts every replica receives all the scores and selects alike. Outside
 * training (evaluation, inference), the per-token fallback: a token's top-k experts.
 * Leaves the choice [na, E] in m->ec_chosen and the E-wide routing in the layer.
 */
static omni_status route_by_expert_choice(omni_moe *m, moe_layer *L)
{
    const int64_t E = m->E, na = L->na, N = m->comm.size;
    int64_t *nsend = m->ec_cnt, *nall = nsend + N, *sc = nall + N, *sd = sc + N, *rc = sd + N,
            *rd = rc + N;
    omni_status st;
    router_rows(m, L);
    if (!m->training) {
        omni_router_choice_fallback(m->ec_chosen, L->logits, na, E, m->k);
        goto layout;
    }
    for (int64_t q = 0; q < N; q++)
        nsend[q] = na;
    if ((st = m->comm.alltoall_counts(m->comm.ctx, nsend, nall, 1)) != OMNI_OK)
        return st;
    int64_t T = 0, off = 0;
    for (int64_t q = 0; q < N; q++) {
        int64_t first, count;
        omni_expert_shard(E, (int)N, (int)q, &first, &count);
        sc[q] = count * na;
        sd[q] = off;
        for (int64_t j = 0; j < count; j++)
            for (int64_t t = 0; t < na; t++)
                m->ec_send[off + j * na + t] = L->probs[t * E + first + j];
        off += sc[q];
        rc[q] = m->e_count * nall[q];
        rd[q] = T * m->e_count;
        T += nall[q];
    }
    st = m->comm.alltoallv_rows(m->comm.ctx, m->ec_send, sc, sd, m->ec_recv, rc, rd, 1);
    if (st != OMNI_OK)
        return st;
    const int64_t C = omni_router_choice_capacity(m->k, m->x.moe.capacity_factor, T, E);
    for (int64_t j = 0; j < m->e_count; j++) {
        /* expert j's scores in global token order, its choice, written back in place */
        for (int64_t s = 0, g = 0; s < N; g += nall[s], s++)
            for (int64_t i = 0; i < nall[s]; i++)
                m->ec_col[g + i] = m->ec_recv[rd[s] + j * nall[s] + i];
        omni_router_choice_select(m->ec_flag, m->ec_col, T, C, m->ec_heap);
        for (int64_t s = 0, g = 0; s < N; g += nall[s], s++)
            for (int64_t i = 0; i < nall[s]; i++)
                m->ec_recv[rd[s] + j * nall[s] + i] = m->ec_flag[g + i];
    }
    st = m->comm.alltoallv_rows(m->comm.ctx, m->ec_recv, rc, rd, m->ec_send, sc, sd, 1);
    if (st != OMNI_OK)
        return st;
    for (int64_t q = 0; q < N; q++) {
        int64_t first, count;
        omni_expert_shard(E, (int)N, (int)q, &first, &count);
        for (int64_t j = 0; j < count; j++)
            for (int64_t t = 0; t < na; t++)
                m->ec_chosen[t * E + first + j] = m->ec_send[sd[q] + j * na + t];
    }
layout:
    omni_router_choice_layout(L->expert, L->slot, L->prob, L->gate, L->kept, m->ec_chosen, L->probs,
                              na, E);
    return OMNI_OK;
}

/*
 * Task routing (moe.router: task): the router on the task embeddings, one row per task
 * (choice through the balancing bias as for tokens), then every routed row takes the
 * logits, probabilities, choice and gates of its task's row. Counts this worker's rows of
 * each task for the losses' backward. Every row must carry a task: a row that does not is
 * routed as task 0 and counted in the sums' `faults` (with its position in *bad), so that
 * after the all-reduce every rank fails the forward together instead of one rank alone.
 */
static void route_by_task(omni_moe *m, moe_layer *L, int64_t *bad)
{
    const int64_t E = m->E, k = m->k, T = m->n_tasks;
    omni_router_forward(L->t_logits, L->t_probs, L->t_lse, L->temb, L->wr, T, m->d, E);
    omni_router_topk(L->t_expert, L->t_prob, L->t_gate, L->t_logits, L->t_probs, L->bias, T, E, k,
                     m->x.moe.normalize_topk);
    memset(L->t_local, 0, (size_t)T * sizeof(double));
    L->jittered = false;
    *bad = -1;
    for (int64_t i = 0; i < L->na; i++) {
        int32_t t = m->task_c[i];
        if (t < 0 || t >= T) {
            if (*bad < 0)
                *bad = i;
            *L->sums.faults += 1.0;
            t = 0;
        }
        L->rtask[i] = t;
        L->t_local[t] += 1.0;
        memcpy(L->logits + i * E, L->t_logits + t * E, (size_t)E * sizeof(float));
        memcpy(L->probs + i * E, L->t_probs + t * E, (size_t)E * sizeof(float));
        L->lse[i] = L->t_lse[t];
        memcpy(L->expert + i * k, L->t_expert + t * k, (size_t)k * sizeof(int32_t));
        memcpy(L->prob + i * k, L->t_prob + t * k, (size_t)k * sizeof(float));
        memcpy(L->gate + i * k, L->t_gate + t * k, (size_t)k * sizeof(float));
    }
}

/*
 * Backward of task routing, from the per-row dprobs (gate gradients): summed by task, plus
 * this worker's share of the task-level losses, through the softmax of each task's row to
 * the router and the task embeddings. The router does not see the tokens: no input
 * gradient.
 */
static void task_router_backward(omni_moe *m, moe_layer *L)
{
    const int64_t E = m->E, k = m->k, T = m->n_tasks;
    memset(m->dprobs_t, 0, (size_t)(T * E) * sizeof(double));
    for (int64_t i = 0; i < L->na; i++) {
        double *dst = m->dprobs_t + (int64_t)L->rtask[i] * E;
        const float *src = m->dprobs + i * E;
        for (int64_t e = 0; e < E; e++)
            dst[e] += (double)src[e];
    }
    for (int64_t i = 0; i < T * E; i++)
        m->dprobs_tf[i] = (float)m->dprobs_t[i];
    omni_router_task_aux_backward(m->dprobs_tf, &L->sums, L->t_expert, L->t_local,
                                  m->x.moe.aux_loss, k);
    omni_router_softmax_backward(m->dlogits_t, m->dprobs_tf, L->t_probs, T, E);
    omni_router_task_z_backward(m->dlogits_t, L->t_probs, L->t_lse, &L->sums, L->t_local,
                                m->x.moe.z_loss, k);
    omni_router_backward(m->demb, L->dwr, m->dlogits_t, L->temb, L->wr, T, m->d, E);
    for (int64_t i = 0; i < T * m->d; i++)
        L->dtemb[i] += m->demb[i];
}

/* The routed rows of the n positions of b: every position but padding, compacted into
 * L->x with their tasks and modalities (L->tok maps row -> position). */
static void compact_rows(omni_moe *m, moe_layer *L, const float *in, const omni_batch *b, int64_t n)
{
    const int64_t d = m->d;
    int64_t na = 0;
    for (int64_t t = 0; t < n; t++) {
        if (!routed(b, t))
            continue;
        L->tok[na] = t;
        m->task_c[na] = b && b->task ? b->task[t] : -1;
        m->mod_c[na] = modality_of(m, b, t);
        memcpy(L->x + na * d, in + t * d, (size_t)d * sizeof(float));
        na++;
    }
    L->n = n;
    L->na = na;
}

/* Route L's rows and take the statistics of the global batch: the choices, the capacity
 * drops, the sums (all-reduced), the losses and the routing tables. Collective. */
static omni_status route_batch(omni_moe *m, moe_layer *L)
{
    const int64_t E = m->E, k = m->k, na = L->na;
    omni_status st;
    /* route */
    int64_t bad = -1;
    omni_router_sums_zero(&L->sums);
    if (m->task_router) {
        route_by_task(m, L, &bad);
    } else if (m->expert_choice) {
        if ((st = route_by_expert_choice(m, L)) != OMNI_OK)
            return st;
    } else {
        route_by_token(m, L);
    }
    if (!m->expert_choice) {
        int64_t cap = omni_moe_capacity(k, m->x.moe.capacity_factor, na, E);
        omni_router_assign(L->slot, L->kept, L->expert, L->prob, na, E, k, cap, m->assign_scratch);
    }

    /* statistics and losses over the global batch */
    if (m->expert_choice)
        omni_router_choice_sums_add(&L->sums, L->probs, L->lse, m->ec_chosen, m->task_c, na);
    else
        omni_router_sums_add(&L->sums, L->probs, L->lse, L->expert, L->slot, m->task_c, na, k);
    if (m->entropy) {
        omni_router_sums_add_modality(&L->sums, L->logits, L->probs, L->lse, m->mod_c, na);
        memcpy(L->rmod, m->mod_c, (size_t)na * sizeof(int32_t));
    }
    st = m->comm.allreduce_sum(m->comm.ctx, L->sums.buf, L->sums.len);
    if (st != OMNI_OK)
        return st;
    if (*L->sums.faults > 0.0) {
        if (bad >= 0)
            return omni_fail(OMNI_ERR_INTERNAL,
                             "moe: task routing: position %lld of this rank carries task %d, "
                             "expected a task of the model's %lld (%.0f such positions in the "
                             "batch)",
                             (long long)L->tok[bad], (int)m->task_c[bad], (long long)m->n_tasks,
                             *L->sums.faults);
        return omni_fail(OMNI_ERR_INTERNAL,
                         "moe: task routing: %.0f positions of another rank carry no task of "
                         "the model",
                         *L->sums.faults);
    }
    if (m->task_router)
        omni_router_task_losses(&L->sums, L->t_probs, L->t_lse, L->t_expert, k, &L->aux, &L->z);
    else
        omni_router_losses(&L->sums, k, &L->aux, &L->z);
    if (m->entropy)
        omni_router_entropy_losses(&L->sums, m->x.moe.entropy.threshold, &L->ent_local,
                                   &L->ent_global);
    memset(L->route, 0, (size_t)m->route_len * sizeof(double));
    if (m->training && m->expert_choice)
        omni_route_tables_add_choice(&L->by_task, m->task_c, &L->by_mod, m->mod_c, L->logits,
                                     L->probs, L->lse, m->ec_chosen, na);
    else if (m->training)
        omni_route_tables_add(&L->by_task, m->task_c, &L->by_mod, m->mod_c, L->logits, L->probs,
                              L->lse, L->expert, L->slot, na, k);
    return OMNI_OK;
}

/*
 * The routing of the last omni_moe_route for this pass's rows (windows m->window, ... of
 * the routed batch): its choices and drops, with the gates of this pass's probabilities
 * (the same function of them as route_batch's). The statistics, losses and tables stay the
 * route's: backward takes the loss gradients of the whole batch. Not collective.
 */
static omni_status route_forced(omni_moe *m, moe_layer *L)
{
    const int64_t E = m->E, kr = m->kr, na = L->na;
    int64_t r0 = m->window >= 0 && m->window <= m->route_seq ? m->seq_row0[m->window] : -1;
    if (r0 < 0 || r0 + na > L->route_na)
        return omni_fail(OMNI_ERR_INTERNAL,
                         "moe: a pass of %lld rows from window %lld is not inside the routed "
                         "batch of %lld rows",
                         (long long)na, (long long)m->window, (long long)L->route_na);
    if (m->task_router) {
        int64_t bad;
        route_by_task(m, L, &bad); /* its rows were checked by the route */
    } else {
        router_rows(m, L);
    }
    const int32_t *ex = L->rec_expert + r0 * kr, *sl = L->rec_slot + r0 * kr;
    bool normalize = m->x.moe.normalize_topk && !m->expert_choice;
    for (int64_t e = 0; e < E; e++)
        L->kept[e] = 0;
    for (int64_t t = 0; t < na; t++) {
        double sum = 0.0;
        for (int64_t c = 0; c < kr; c++) {
            int64_t a = t * kr + c;
            L->expert[a] = ex[a];
            L->prob[a] = L->probs[t * E + ex[a]];
            sum += (double)L->prob[a];
            L->slot[a] = sl[a] >= 0 ? (int32_t)L->kept[ex[a]]++ : -1;
        }
        for (int64_t c = 0; c < kr; c++) {
            int64_t a = t * kr + c;
            L->gate[a] = normalize ? (float)((double)L->prob[a] / sum) : L->prob[a];
        }
    }
    if (m->entropy)
        memcpy(L->rmod, m->mod_c, (size_t)na * sizeof(int32_t));
    return OMNI_OK;
}

omni_status omni_moe_route(void *ctx, int64_t layer, const float *in, const omni_batch *b,
                           int64_t n)
{
    omni_moe *m = ctx;
    int64_t li = omni_moe_layer_index(m, layer);
    if (li < 0 || !b || n != b->n_seq * b->context || n > m->max_tokens || !m->seq_row0)
        return omni_fail(OMNI_ERR_INTERNAL,
                         "moe: route of block %lld with %lld tokens (routes hold %lld, passes "
                         "%lld)",
                         (long long)layer, (long long)n, (long long)m->max_tokens,
                         (long long)m->max_pass);
    moe_layer *L = &m->layers[li];
    double t0 = omni_now();
    omni_moe_window(m, 0); /* the whole batch, from its first window */
    compact_rows(m, L, in, b, n);
    omni_status st = route_batch(m, L);
    if (st != OMNI_OK)
        return st;
    memcpy(L->rec_expert, L->expert, (size_t)(L->na * m->kr) * sizeof(int32_t));
    memcpy(L->rec_slot, L->slot, (size_t)(L->na * m->kr) * sizeof(int32_t));
    L->route_na = L->na;
    L->forced = true;
    m->route_seq = b->n_seq;
    m->seq_row0[0] = 0;
    for (int64_t q = 0; q < b->n_seq; q++) {
        int64_t c = 0;
        for (int64_t t = q * b->context; t < (q + 1) * b->context; t++)
            c += routed(b, t);
        m->seq_row0[q + 1] = m->seq_row0[q] + c;
    }
    lap(m, OMNI_MOE_T_ROUTE, &t0);
    return OMNI_OK;
}

/* The owner of expert e (shadowing runs with E >= N, where it is the destination). */
static int owner(const omni_moe *m, int64_t e)
{
    return omni_expert_dest(e, m->E, m->comm.size, 0);
}

/*
 * Shadow experts, forward (collective): the kept rows of every rank (one all-reduce, which
 * stands in for the counts all-to-all), the experts to share (omni_shadow_choose, alike on
 * every rank), this rank's copies of them, and their weights from their owners: each owner
 * sends its shared experts (W1, W3, W2 of each, ascending) to every other rank, so the
 * copies arrive by owner and then expert ascending, which is expert order.
 */
static omni_status shadow_plan(omni_moe *m, moe_layer *L)
{
    const int64_t E = m->E, N = m->comm.size, rank = m->comm.rank, d = m->d, ff = m->ff;
    const int64_t blk = 3 * d * ff;
    memset(m->kept_sum, 0, (size_t)(N * E) * sizeof(double));
    for (int64_t e = 0; e < E; e++)
        m->kept_sum[rank * E + e] = (double)L->kept[e];
    omni_status st = m->comm.allreduce_sum(m->comm.ctx, m->kept_sum, N * E);
    if (st != OMNI_OK)
        return st;
    for (int64_t i = 0; i < N * E; i++)
        m->kept_all[i] = (int64_t)m->kept_sum[i];
    L->n_shadow = omni_shadow_choose(m->kept_all, E, (int)N, m->max_shadow, m->shadow_cost,
                                     m->rank_load, L->shadow);
    L->n_copy = 0;
    for (int64_t e = 0; e < E; e++)
        if (L->shadow[e] && owner(m, e) != rank)
            L->copy_e[L->n_copy++] = e;
    m->shadow_passes++;
    if (L->n_shadow == 0)
        return OMNI_OK;
    m->shadowed += L->n_shadow;
    int64_t own = 0;
    for (int64_t j = 0; j < m->e_count; j++) {
        if (!L->shadow[m->e_first + j])
            continue;
        float *b = m->cbuf + own++ * blk;
        memcpy(b, L->w1 + j * d * ff, (size_t)(d * ff) * sizeof(float));
        memcpy(b + d * ff, L->w3 + j * d * ff, (size_t)(d * ff) * sizeof(float));
        memcpy(b + 2 * d * ff, L->w2 + j * ff * d, (size_t)(ff * d) * sizeof(float));
    }
    /* Rows of d floats: 3 ff rows an expert. Every destination reads the same block. */
    int64_t *sc = m->ccnt, *sd = sc + N, *rc = sd + N, *rd = rc + N, at = 0;
    for (int64_t q = 0; q < N; q++) {
        int64_t from_q = 0;
        for (int64_t e = 0; e < E; e++)
            from_q += L->shadow[e] && owner(m, e) == q;
        sc[q] = q == rank ? 0 : own * 3 * ff;
        sd[q] = 0;
        rc[q] = q == rank ? 0 : from_q * 3 * ff;
        rd[q] = at;
        at += rc[q];
    }
    st = exchange(m, m->cbuf, sc, sd, L->cw, rc, rd);
    omni_bf16_weight_changed(L->cw, L->n_copy * blk);
    return st;
}

/* The rows of copy j: where they start in the send buffer, and in the copies' buffers. */
static void copy_place(const moe_layer *L, int64_t j, int64_t *start, int64_t *r0)
{
    *start = L->plan.expert_start[L->copy_e[j]];
    *r0 = *start - L->plan.n_send;
}

/* This rank's rows of the shared experts it does not own, through its copies: the inputs
 * from the send buffer (kept for backward), the outputs where the exchange would have
 * brought them back. */
static void shadow_forward(omni_moe *m, moe_layer *L)
{
    const int64_t d = m->d, ff = m->ff, blk = 3 * d * ff;
    for (int64_t j = 0; j < L->n_copy; j++) {
        int64_t start, r0, c = L->kept[L->copy_e[j]];
        copy_place(L, j, &start, &r0);
        memcpy(L->cx + r0 * d, m->send + start * d, (size_t)(c * d) * sizeof(float));
        const float *w = L->cw + j * blk;
        const int64_t off[2] = {0, c};
        omni_experts_forward(L->ret + start * d, L->ch1 + r0 * ff, L->ch3 + r0 * ff, m->act,
                             L->cx + r0 * d, w, w + d * ff, w + 2 * d * ff, off, 1, d, ff, false);
    }
}

/* Backward of shadow_forward from the rows' output gradients in the send buffer: their
 * input gradients in their place, the copies' weight gradients in cbuf. */
static void shadow_backward(omni_moe *m, moe_layer *L)
{
    const int64_t d = m->d, ff = m->ff, blk = 3 * d * ff;
    if (L->n_copy > 0)
        memset(m->cbuf, 0, (size_t)(L->n_copy * blk) * sizeof(float));
    for (int64_t j = 0; j < L->n_copy; j++) {
        int64_t start, r0, c = L->kept[L->copy_e[j]];
        copy_place(L, j, &start, &r0);
        const float *w = L->cw + j * blk;
        float *g = m->cbuf + j * blk;
        const int64_t off[2] = {0, c};
        omni_experts_backward(L->cx + r0 * d, g, g + d * ff, g + 2 * d * ff, L->ch1 + r0 * ff,
                              L->ch3 + r0 * ff, m->act, m->send + start * d, L->cx + r0 * d, w,
                              w + d * ff, w + 2 * d * ff, off, 1, d, ff);
        memcpy(m->send + start * d, L->cx + r0 * d, (size_t)(c * d) * sizeof(float));
    }
}

/* The copies' weight gradients to their owners (collective): per shared expert, ascending,
 * one sum over the ranks to its owner (comm.reduce_sum_to), to which the owner gives zeros;
 * it adds the sum to its own gradient. The same order on every run of this world size, and
 * memory for one expert's gradient whatever the number of ranks. */
static omni_status shadow_gradients(omni_moe *m, moe_layer *L)
{
    const int64_t rank = m->comm.rank, d = m->d, ff = m->ff, blk = 3 * d * ff;
    float *sum = m->cbuf + m->max_shadow * blk; /* the owner's block */
    for (int64_t e = 0, j = 0; e < m->E; e++) {
        if (!L->shadow[e])
            continue;
        const int o = owner(m, e);
        float *g = o == rank ? sum : m->cbuf + j++ * blk;
        if (o == rank)
            memset(sum, 0, (size_t)blk * sizeof(float));
        omni_status st = m->comm.reduce_sum_to(m->comm.ctx, g, blk, o);
        if (st != OMNI_OK)
            return st;
        if (o != rank)
            continue;
        const int64_t jl = e - m->e_first;
        float *dw[3] = {L->dw1 + jl * d * ff, L->dw3 + jl * d * ff, L->dw2 + jl * ff * d};
        for (int part = 0; part < 3; part++)
            for (int64_t i = 0; i < d * ff; i++)
                dw[part][i] += sum[part * d * ff + i];
    }
    return OMNI_OK;
}

omni_status omni_moe_forward(void *ctx, int64_t layer, float *out, const float *in,
                             const omni_batch *b, int64_t n)
{
    omni_moe *m = ctx;
    const int64_t d = m->d, E = m->E, kr = m->kr, ff = m->ff;
    int64_t li = omni_moe_layer_index(m, layer);
    if (li < 0)
        return omni_fail(OMNI_ERR_INTERNAL, "moe: block %lld is not an MoE block",
                         (long long)layer);
    if (n < 0 || n > m->max_pass)
        return omni_fail(OMNI_ERR_INTERNAL, "moe: %lld tokens, buffers hold %lld", (long long)n,
                         (long long)m->max_pass);
    moe_layer *L = &m->layers[li];
    omni_dispatch_plan *p = &L->plan;
    omni_status st;

    double t0 = omni_now();
    compact_rows(m, L, in, b, n);
    const int64_t na = L->na;
    st = L->forced ? route_forced(m, L) : route_batch(m, L);
    if (st != OMNI_OK)
        return st;
    lap(m, OMNI_MOE_T_ROUTE, &t0);

    /* dispatch, experts, combine */
    if (m->max_shadow > 0) {
        if ((st = shadow_plan(m, L)) != OMNI_OK)
            return st;
        omni_dispatch_plan_send(p, L->expert, L->slot, L->kept, L->shadow, na);
        if ((st = omni_dispatch_plan_recv_all(p, m->kept_all, L->shadow)) != OMNI_OK)
            return st;
    } else {
        omni_dispatch_plan_send(p, L->expert, L->slot, L->kept, NULL, na);
        st = m->comm.alltoall_counts(m->comm.ctx, p->count_msg, p->recv_counts, E);
        if (st != OMNI_OK)
            return st;
        if ((st = omni_dispatch_plan_recv(p)) != OMNI_OK)
            return st;
    }
    omni_dispatch_gather(m->send, L->x, p, na, d);
    st = exchange(m, m->send, p->send_count, p->send_displ, m->recv, p->recv_count, p->recv_displ);
    if (st != OMNI_OK)
        return st;
    omni_dispatch_to_expert(L->xe, m->recv, p, d);
    lap(m, OMNI_MOE_T_MOVE, &t0);
    omni_experts_forward(m->ye, L->h1, L->h3, m->act, L->xe, L->w1, L->w3, L->w2, p->expert_off,
                         m->e_count, d, ff, false);
    if (m->max_shadow > 0)
        shadow_forward(m, L);
    lap(m, OMNI_MOE_T_EXPERTS, &t0);
    omni_dispatch_from_expert(m->recv, m->ye, p, d);
    st = exchange(m, m->recv, p->recv_count, p->recv_displ, L->ret, p->send_count, p->send_displ);
    if (st != OMNI_OK)
        return st;
    for (int64_t t = 0; t < na; t++) {
        float *o = m->yc + t * d;
        memset(o, 0, (size_t)d * sizeof(float));
        for (int64_t c = 0; c < kr; c++) {
            int32_t pos = p->pos[t * kr + c];
            if (pos < 0)
                continue;
            float g = L->gate[t * kr + c];
            const float *r = L->ret + (int64_t)pos * d;
            for (int64_t i = 0; i < d; i++)
                o[i] += g * r[i];
        }
    }
    lap(m, OMNI_MOE_T_MOVE, &t0);
    const int64_t off[2] = {0, na};
    for (int64_t s = 0; s < m->S; s++)
        omni_experts_forward(m->yc, L->sh1 + s * m->max_pass * ff, L->sh3 + s * m->max_pass * ff,
                             m->act, L->x, L->sw1 + s * d * ff, L->sw3 + s * d * ff,
                             L->sw2 + s * ff * d, off, 1, d, ff, true);
    lap(m, OMNI_MOE_T_SHARED, &t0);
    /* padding positions output 0 */
    if (na < n)
        memset(out, 0, (size_t)(n * d) * sizeof(float));
    for (int64_t t = 0; t < na; t++)
        memcpy(out + L->tok[t] * d, m->yc + t * d, (size_t)d * sizeof(float));
    lap(m, OMNI_MOE_T_MOVE, &t0);
    return OMNI_OK;
}

omni_status omni_moe_backward(void *ctx, int64_t layer, float *din, const float *dout,
                              const omni_batch *b, int64_t n)
{
    omni_moe *m = ctx;
    const int64_t d = m->d, E = m->E, k = m->k, kr = m->kr, ff = m->ff;
    (void)b; /* the routed positions are those of the forward */
    int64_t li = omni_moe_layer_index(m, layer);
    if (li < 0)
        return omni_fail(OMNI_ERR_INTERNAL, "moe: block %lld is not an MoE block",
                         (long long)layer);
    moe_layer *L = &m->layers[li];
    if (n != L->n)
        return omni_fail(OMNI_ERR_INTERNAL, "moe: backward of %lld tokens after a forward of %lld",
                         (long long)n, (long long)L->n);
    omni_dispatch_plan *p = &L->plan;
    const int64_t na = L->na;
    float *dy = m->yc, *dx = m->dxc; /* compact [na, d] */
    omni_status st;

    double t0 = omni_now();
    for (int64_t t = 0; t < na; t++)
        memcpy(dy + t * d, dout + L->tok[t] * d, (size_t)d * sizeof(float));
    memset(dx, 0, (size_t)(na * d) * sizeof(float));
    /* gate gradients, and the rows of g dy in send order */
    for (int64_t a = 0; a < na * kr; a++) {
        int32_t pos = p->pos[a];
        if (pos < 0) {
            m->dgate[a] = 0.0f;
            continue;
        }
        const float *dyt = dy + (a / kr) * d, *r = L->ret + (int64_t)pos * d;
        float *s = m->send + (int64_t)pos * d, g = L->gate[a];
        double dot = 0.0;
        for (int64_t i = 0; i < d; i++) {
            dot += (double)dyt[i] * (double)r[i];
            s[i] = g * dyt[i];
        }
        m->dgate[a] = (float)dot;
    }
    st = exchange(m, m->send, p->send_count, p->send_displ, m->recv, p->recv_count, p->recv_displ);
    if (st != OMNI_OK)
        return st;
    omni_dispatch_to_expert(m->ye, m->recv, p, d);
    lap(m, OMNI_MOE_T_MOVE, &t0);
    omni_experts_backward(L->xe, L->dw1, L->dw3, L->dw2, L->h1, L->h3, m->act, m->ye, L->xe, L->w1,
                          L->w3, L->w2, p->expert_off, m->e_count, d, ff);
    if (m->max_shadow > 0)
        shadow_backward(m, L);
    lap(m, OMNI_MOE_T_EXPERTS, &t0);
    omni_dispatch_from_expert(m->recv, L->xe, p, d);
    st = exchange(m, m->recv, p->recv_count, p->recv_displ, m->send, p->send_count, p->send_displ);
    if (st != OMNI_OK)
        return st;
    if (m->max_shadow > 0 && L->n_shadow > 0 && (st = shadow_gradients(m, L)) != OMNI_OK)
        return st;
    for (int64_t a = 0; a < na * kr; a++) {
        int32_t pos = p->pos[a];
        if (pos < 0)
            continue;
        float *dxt = dx + (a / kr) * d;
        const float *r = m->send + (int64_t)pos * d;
        for (int64_t i = 0; i < d; i++)
            dxt[i] += r[i];
    }
    lap(m, OMNI_MOE_T_MOVE, &t0);

    /* shared experts */
    const int64_t off[2] = {0, na};
    for (int64_t s = 0; s < m->S; s++) {
        omni_experts_backward(m->dxr, L->dsw1 + s * d * ff, L->dsw3 + s * d * ff,
                              L->dsw2 + s * ff * d, L->sh1 + s * m->max_pass * ff,
                              L->sh3 + s * m->max_pass * ff, m->act, dy, L->x, L->sw1 + s * d * ff,
                              L->sw3 + s * d * ff, L->sw2 + s * ff * d, off, 1, d, ff);
        for (int64_t i = 0; i < na * d; i++)
            dx[i] += m->dxr[i];
    }
    lap(m, OMNI_MOE_T_SHARED, &t0);

    /* router: gates, load-balance and z-losses, softmax, logits = xr W_r */
    memset(m->dprobs, 0, (size_t)(na * E) * sizeof(float));
    omni_router_gate_backward(m->dprobs, m->dgate, L->expert, L->prob, na, E, kr,
                              m->x.moe.normalize_topk && !m->expert_choice);
    if (m->entropy)
        omni_router_entropy_backward(m->dprobs, L->logits, L->lse, L->rmod, &L->sums,
                                     m->x.moe.entropy.local, m->x.moe.entropy.global,
                                     m->x.moe.entropy.threshold, na, m->ent_scratch);
    if (m->task_router) {
        task_router_backward(m, L);
    } else {
        omni_router_aux_backward(m->dprobs, &L->sums, m->x.moe.aux_loss, k, na);
        omni_router_softmax_backward(m->dlogits, m->dprobs, L->probs, na, E);
        omni_router_z_backward(m->dlogits, L->probs, L->lse, &L->sums, m->x.moe.z_loss, na);
        omni_router_backward(m->dxr, L->dwr, m->dlogits, L->jittered ? L->xr : L->x, L->wr, na, d,
                             E);
        if (L->jittered)
            omni_router_jitter_backward(dx, m->dxr, (float)m->x.moe.jitter,
                                        (uint64_t)m->x.experiment.seed, L->block, L->step,
                                        L->token_offset, L->tok, na, d);
        else
            for (int64_t i = 0; i < na * d; i++)
                dx[i] += m->dxr[i];
    }
    lap(m, OMNI_MOE_T_ROUTER_BW, &t0);
    for (int64_t t = 0; t < na; t++) {
        float *o = din + L->tok[t] * d;
        const float *r = dx + t * d;
        for (int64_t i = 0; i < d; i++)
            o[i] += r[i];
    }
    lap(m, OMNI_MOE_T_MOVE, &t0);
    return OMNI_OK;
}

double omni_moe_loss(const omni_moe *m)
{
    double sum = 0.0;
    for (int64_t i = 0; i < m->n_moe; i++)
        sum += m->x.moe.aux_loss * m->layers[i].aux + m->x.moe.z_loss * m->layers[i].z +
               m->x.moe.entropy.local * m->layers[i].ent_local +
               m->x.moe.entropy.global * m->layers[i].ent_global;
    return sum;
}

void omni_moe_layer_losses(const omni_moe *m, int64_t index, double *aux, double *z)
{
    *aux = m->layers[index].aux;
    *z = m->layers[index].z;
}

void omni_moe_layer_entropy(const omni_moe *m, int64_t index, double *local, double *global)
{
    *local = m->layers[index].ent_local;
    *global = m->layers[index].ent_global;
}

const omni_router_sums *omni_moe_layer_stats(const omni_moe *m, int64_t index)
{
    return &m->layers[index].sums;
}

void omni_moe_layer_routing(const omni_moe *m, int64_t index, const int32_t **expert,
                            const int32_t **slot, int64_t *n)
{
    const moe_layer *L = &m->layers[index];
    /* after a route (micro-batches): the whole batch's choices, not the last pass's */
    *expert = L->forced ? L->rec_expert : L->expert;
    *slot = L->forced ? L->rec_slot : L->slot;
    *n = L->forced ? L->route_na : L->na; /* routed rows: padding positions are not routed */
}

void omni_moe_layer_tables(const omni_moe *m, int64_t index, omni_route_table *by_task,
                           omni_route_table *by_modality)
{
    *by_task = m->layers[index].by_task;
    *by_modality = m->layers[index].by_mod;
}

float *omni_moe_layer_bias(omni_moe *m, int64_t index)
{
    return m->layers[index].bias;
}

void omni_moe_update_bias(omni_moe *m)
{
    if (m->x.moe.bias_rate <= 0.0)
        return;
    for (int64_t i = 0; i < m->n_moe; i++)
        omni_router_bias_update(m->layers[i].bias, m->layers[i].sums.assigned, m->E,
                                m->x.moe.bias_rate);
}

int64_t omni_moe_n_tensors(const omni_moe *m)
{
    return m->tensors.n;
}

const omni_tensor *omni_moe_tensor_at(const omni_moe *m, int64_t i)
{
    return i >= 0 && i < m->tensors.n ? &m->tensors.t[i] : NULL;
}

void omni_moe_group_range(const omni_moe *m, int64_t block, int64_t *first, int64_t *count)
{
    omni_tensor_table_group_range(&m->tensors, block, first, count);
}

void omni_moe_buffers(omni_moe *m, float **params, float **grads, float **adam_m, float **adam_v,
                      int64_t *n_params, int64_t *n_dense)
{
    *params = m->params;
    *grads = m->grads;
    *adam_m = m->adam_m;
    *adam_v = m->adam_v;
    *n_params = m->n_params;
    *n_dense = m->n_dense;
}

void omni_moe_zero_grad(omni_moe *m)
{
    memset(m->grads, 0, (size_t)m->n_params * sizeof(float));
}

void omni_moe_grad_sumsq(const omni_moe *m, double *dense, double *experts)
{
    *dense = omni_sumsq(m->grads, m->n_dense);
    *experts = omni_sumsq(m->grads + m->n_dense, m->n_params - m->n_dense);
}

void omni_moe_step(omni_moe *m, const omni_adamw *a)
{
    for (int64_t i = 0; i < m->tensors.n; i++) {
        const omni_tensor *t = &m->tensors.t[i];
        if (!t->trainable)
            continue;
        int64_t o = t->offset;
        omni_adamw_update(a, m->params + o, m->grads + o, m->adam_m + o, m->adam_v + o, t->numel,
                          t->decay);
    }
}
