/*
 * The dense transformer of DESIGN.md §2: the parameter layout and its tensor table,
 * initialisation, the activation buffers (sized once, at creation), and the forward
 * and backward passes that chain the layers of layers.c and attention.c.
 */
#include "model_private.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

/* ---- layout ------------------------------------------------------------------ */

static omni_status add_tensor(omni_model *m, const char *name, int rank, const int64_t *dims,
                              bool decay, init_kind init)
{
    if (m->n_tensors == OMNI_MAX_TENSORS)
        return omni_fail(OMNI_ERR_CONFIG, "model: more than %d parameter tensors (n_layers %lld)",
                         OMNI_MAX_TENSORS, (long long)m->L);
    omni_tensor_info *t = &m->tensors[m->n_tensors];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->rank = rank;
    t->numel = 1;
    for (int i = 0; i < 4; i++)
        t->dims[i] = i < rank ? dims[i] : 1;
    for (int i = 0; i < rank; i++)
        t->numel *= dims[i];
    t->offset = m->n_params;
    t->decay = decay;
    m->init[m->n_tensors] = init;
    m->n_params += (t->numel + 15) / 16 * 16; /* next tensor 64-byte aligned */
    m->n_tensors++;
    return OMNI_OK;
}

#define ADD(name, decay, init, ...)                                                                \
    do {                                                                                           \
        const int64_t dims_[] = {__VA_ARGS__};                                                     \
        if ((st = add_tensor(m, name, (int)(sizeof dims_ / sizeof dims_[0]), dims_, decay, init))) \
            return st;                                                                             \
    } while (0)

/* The tensor table. Decay: the linear maps (patch projections, attention, FFN, head);
 * not the embedding tables, norm gains or biases. */
static omni_status build_table(omni_model *m)
{
    omni_status st;
    int64_t d = m->d, ff = m->ff;
    char name[OMNI_TENSOR_NAME_MAX];
    ADD("params/embed/tok", false, INIT_NORMAL, m->V, d);
    if (m->img_dim > 0) {
        ADD("params/embed/img_w", true, INIT_NORMAL, m->img_dim, d);
        ADD("params/embed/img_b", false, INIT_ZEROS, d);
    }
    if (m->aud_dim > 0) {
        ADD("params/embed/aud_w", true, INIT_NORMAL, m->aud_dim, d);
        ADD("params/embed/aud_b", false, INIT_ZEROS, d);
    }
    if (m->img_dim > 0 || m->aud_dim > 0) {
        ADD("params/embed/row", false, INIT_NORMAL, m->dims.max_rows, d);
        ADD("params/embed/col", false, INIT_NORMAL, m->dims.max_cols, d);
    }
    ADD("params/embed/pos", false, INIT_NORMAL, m->T, d);
    for (int64_t l = 0; l < m->L; l++) {
#define LNAME(s) (snprintf(name, sizeof name, "params/layers/%02lld/" s, (long long)l), name)
        ADD(LNAME("attn/norm"), false, INIT_ONES, d);
        ADD(LNAME("attn/wqkv"), true, INIT_NORMAL, d, 3 * d);
        ADD(LNAME("attn/wo"), true, INIT_RESIDUAL, d, d);
        ADD(LNAME("ffn/norm"), false, INIT_ONES, d);
        if (!omni_experiment_is_moe_block(&m->x, l)) {
            ADD(LNAME("ffn/w1"), true, INIT_NORMAL, d, ff);
            ADD(LNAME("ffn/w3"), true, INIT_NORMAL, d, ff);
            ADD(LNAME("ffn/w2"), true, INIT_RESIDUAL, ff, d);
        }
#undef LNAME
    }
    ADD("params/head/norm", false, INIT_ONES, d);
    ADD("params/head/w", true, INIT_NORMAL, d, m->V);
    return OMNI_OK;
}
#undef ADD

/* Point the named views of one flat buffer at its tensors. */
static void bind_views(omni_model *m, float *flat, omni_param_view *v, omni_block_view *lv)
{
    memset(v, 0, sizeof *v);
    memset(lv, 0, (size_t)m->L * sizeof *lv);
    v->layers = lv;
    for (int i = 0; i < m->n_tensors; i++) {
        const char *n = m->tensors[i].name;
        float *p = flat + m->tensors[i].offset;
        long long l;
        int used = 0;
        char part[32] = "";
        if (sscanf(n, "params/layers/%lld/%31s%n", &l, part, &used) == 2) {
            omni_block_view *b = &lv[l];
            float **slot = !strcmp(part, "attn/norm")   ? &b->attn_norm
                           : !strcmp(part, "attn/wqkv") ? &b->wqkv
                           : !strcmp(part, "attn/wo")   ? &b->wo
                           : !strcmp(part, "ffn/norm")  ? &b->ffn_norm
                           : !strcmp(part, "ffn/w1")    ? &b->w1
                           : !strcmp(part, "ffn/w3")    ? &b->w3
                                                        : &b->w2;
            *slot = p;
            continue;
        }
        float **slot = !strcmp(n, "params/embed/tok")     ? &v->tok
                       : !strcmp(n, "params/embed/img_w") ? &v->img_w
                       : !strcmp(n, "params/embed/img_b") ? &v->img_b
                       : !strcmp(n, "params/embed/aud_w") ? &v->aud_w
                       : !strcmp(n, "params/embed/aud_b") ? &v->aud_b
                       : !strcmp(n, "params/embed/row")   ? &v->row
                       : !strcmp(n, "params/embed/col")   ? &v->col
                       : !strcmp(n, "params/embed/pos")   ? &v->pos
                       : !strcmp(n, "params/head/norm")   ? &v->out_norm
                                                          : &v->out_w;
        *slot = p;
    }
}

static float *take(omni_model *m, int64_t n, const char *what)
{
    OMNI_ASSERT(m->n_bufs < OMNI_MODEL_MAX_BUFS);
    float *p = omni_alloc(n > 0 ? n : 1, sizeof(float), what);
    if (p)
        m->bufs[m->n_bufs++] = p;
    return p;
}

/* a * b * c with an overflow check against int32 sizes that cblas takes. */
static bool fits(int64_t a, int64_t b)
{
    return a >= 0 && b >= 0 && (b == 0 || a <= INT32_MAX / b);
}

omni_status omni_model_create(omni_model **out, const omni_experiment *x,
                              const omni_data_dims *dims, int64_t max_seq)
{
    *out = NULL;
    const int64_t d = x->model.d_model, H = x->model.n_heads, T = x->model.context;
    if (d <= 0 || H <= 0 || d % H != 0 || x->model.n_layers <= 0 || T <= 0 || x->model.d_ff <= 0)
        return omni_fail(OMNI_ERR_CONFIG,
                         "model: d_model %lld must be a positive multiple of n_heads %lld, "
                         "and n_layers, d_ff, context positive",
                         (long long)d, (long long)H);
    if (dims->n_tasks < 0 || dims->vocab < OMNI_TOK_TASK0 + dims->n_tasks ||
        dims->image_patch_dim < 0 || dims->audio_patch_dim < 0 ||
        ((dims->image_patch_dim > 0 || dims->audio_patch_dim > 0) &&
         (dims->max_rows <= 0 || dims->max_cols <= 0)))
        return omni_fail(OMNI_ERR_DATA,
                         "model: data dims out of range (vocab %d for %d tasks, patch dims "
                         "%d/%d, rows %d, cols %d)",
                         dims->vocab, dims->n_tasks, dims->image_patch_dim, dims->audio_patch_dim,
                         dims->max_rows, dims->max_cols);
    if (max_seq <= 0 || !fits(max_seq, T) || !fits(max_seq * T, 3 * d) ||
        !fits(max_seq * T, dims->vocab) || !fits(max_seq * T, x->model.d_ff))
        return omni_fail(OMNI_ERR_CONFIG, "model: %lld sequences of %lld positions is too large",
                         (long long)max_seq, (long long)T);

    omni_model *m = omni_alloc(1, sizeof *m, "model");
    if (!m)
        return OMNI_ERR_NOMEM;
    omni_status st = OMNI_OK;
    m->x = *x;
    m->dims = *dims;
    m->d = d, m->L = x->model.n_layers, m->H = H, m->ff = x->model.d_ff, m->T = T;
    m->V = dims->vocab, m->max_seq = max_seq;
    m->img_dim = dims->image_patch_dim, m->aud_dim = dims->audio_patch_dim;
    m->patch_dim = m->img_dim > m->aud_dim ? m->img_dim : m->aud_dim;
    m->prefix = x->model.attention == OMNI_ATTN_PREFIX;
    m->last_n_seq = -1;
    for (int i = 0; i < OMNI_MAX_TASKS; i++)
        m->loss_weight[i] = i < x->data.n_tasks ? (float)x->data.tasks[i].loss_weight : 1.0f;
    for (int64_t l = 0; l < m->L; l++) {
        m->any_moe |= omni_experiment_is_moe_block(x, l);
        m->n_dense += !omni_experiment_is_moe_block(x, l);
    }
    if ((st = build_table(m)))
        goto out_free;

    const int64_t L = m->L, N = max_seq * T, V = m->V, ff = m->ff;
    /* one attention tile scratch per thread this process may run */
    m->ws.slots =
        omp_get_max_threads() > omp_get_num_procs() ? omp_get_max_threads() : omp_get_num_procs();
    st = OMNI_ERR_NOMEM;
    m->params = take(m, m->n_params, "model parameters");
    m->grads = m->params ? take(m, m->n_params, "model gradients") : NULL;
    m->adam_m = m->grads ? take(m, m->n_params, "AdamW m") : NULL;
    m->adam_v = m->adam_m ? take(m, m->n_params, "AdamW v") : NULL;
    m->pl = m->adam_v ? omni_alloc(2 * L, sizeof *m->pl, "model views") : NULL;
    if (!m->pl)
        goto out_free;
    m->gl = m->pl + L;
    bind_views(m, m->params, &m->pv, m->pl);
    bind_views(m, m->grads, &m->gv, m->gl);

    if (!(m->res = take(m, (L + 1) * N * d, "activations")) ||
        !(m->mid = take(m, L * N * d, "activations")) ||
        !(m->ln1 = take(m, L * N * d, "activations")) ||
        !(m->rstd1 = take(m, L * N, "activations")) ||
        !(m->qkv = take(m, L * N * 3 * d, "activations")) ||
        !(m->lse = take(m, L * max_seq * H * T, "attention statistics")) ||
        !(m->atty = take(m, L * N * d, "activations")) ||
        !(m->ln2 = take(m, L * N * d, "activations")) ||
        !(m->rstd2 = take(m, L * N, "activations")) ||
        !(m->h1 = take(m, m->n_dense * N * ff, "FFN activations")) ||
        !(m->h3 = take(m, m->n_dense * N * ff, "FFN activations")) ||
        !(m->lnf = take(m, N * d, "activations")) || !(m->rstdf = take(m, N, "activations")) ||
        !(m->ffa = take(m, m->n_dense * N * ff, "FFN activations")) ||
        !(m->logits = take(m, N * V, "logits")) || !(m->probs = take(m, N * V, "probabilities")) ||
        !(m->ffs = take(m, N * ff, "scratch")) || !(m->ffd = take(m, N * ff, "scratch")) ||
        !(m->moe_out = take(m, N * d, "scratch")) || !(m->dres = take(m, N * d, "scratch")) ||
        !(m->dln = take(m, N * d, "scratch")) || !(m->datty = take(m, N * d, "scratch")) ||
        !(m->dqkv = take(m, N * 3 * d, "scratch")) ||
        !(m->ws.tile = take(m, m->ws.slots * omni_attention_scratch_floats(d / H), "scratch")) ||
        !(m->es.xg = take(m, N * m->patch_dim, "scratch")) ||
        !(m->es.yg = take(m, N * d, "scratch")))
        goto out_free;
    m->es.idx = omni_alloc(N, sizeof(int64_t), "scratch");
    if (!m->es.idx)
        goto out_free;
    m->bufs[m->n_bufs++] = m->es.idx;
    m->xent_rows = omni_alloc(2 * N, sizeof(double), "scratch");
    if (!m->xent_rows)
        goto out_free;
    m->bufs[m->n_bufs++] = m->xent_rows;
    m->ws.lo = omni_alloc(2 * N, sizeof(int32_t), "scratch");
    if (!m->ws.lo)
        goto out_free;
    m->bufs[m->n_bufs++] = m->ws.lo;
    m->ws.hi = m->ws.lo + N;
    *out = m;
    return OMNI_OK;
out_free:
    omni_model_free(m);
    return st;
}

void omni_model_free(omni_model *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_bufs; i++)
        omni_free(m->bufs[i]);
    omni_free(m->pl);
    omni_free(m);
}

void omni_model_init_params(omni_model *m)
{
    float resid = 0.02f / sqrtf(2.0f * (float)m->L);
    for (int i = 0; i < m->n_tensors; i++) {
        const omni_tensor_info *t = &m->tensors[i];
        float *p = m->params + t->offset;
        omni_rng r;
        omni_rng_init(&r, (uint64_t)m->x.experiment.seed, t->name, 0);
        switch (m->init[i]) {
        case INIT_NORMAL:
            omni_rng_fill_normal(&r, 0, t->numel, 0.0f, 0.02f, p);
            break;
        case INIT_RESIDUAL:
            omni_rng_fill_normal(&r, 0, t->numel, 0.0f, resid, p);
            break;
        case INIT_ONES:
            for (int64_t j = 0; j < t->numel; j++)
                p[j] = 1.0f;
            break;
        default:
            memset(p, 0, (size_t)t->numel * sizeof(float));
            break;
        }
    }
    omni_model_zero_grad(m);
    memset(m->adam_m, 0, (size_t)m->n_params * sizeof(float));
    memset(m->adam_v, 0, (size_t)m->n_params * sizeof(float));
}

void omni_model_set_moe(omni_model *m, const omni_ffn_hook *hook)
{
    m->moe = *hook;
    m->has_moe_hook = hook->forward && hook->backward;
}

void omni_model_zero_grad(omni_model *m)
{
    memset(m->grads, 0, (size_t)m->n_params * sizeof(float));
}

/* ---- accessors --------------------------------------------------------------- */

int omni_model_n_tensors(const omni_model *m)
{
    return m->n_tensors;
}

const omni_tensor_info *omni_model_tensor(const omni_model *m, int i)
{
    return i >= 0 && i < m->n_tensors ? &m->tensors[i] : NULL;
}

int omni_model_find_tensor(const omni_model *m, const char *name)
{
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name))
            return i;
    return -1;
}

int64_t omni_model_n_params(const omni_model *m)
{
    return m->n_params;
}

float *omni_model_params(omni_model *m)
{
    return m->params;
}

float *omni_model_grads(omni_model *m)
{
    return m->grads;
}

float *omni_model_adam_m(omni_model *m)
{
    return m->adam_m;
}

float *omni_model_adam_v(omni_model *m)
{
    return m->adam_v;
}

const omni_param_view *omni_model_param_view(const omni_model *m)
{
    return &m->pv;
}

const omni_param_view *omni_model_grad_view(const omni_model *m)
{
    return &m->gv;
}

const float *omni_model_logits(const omni_model *m)
{
    return m->logits;
}

int64_t omni_model_vocab(const omni_model *m)
{
    return m->V;
}

/* ---- forward and backward ------------------------------------------------------ */

/* The place of dense block l among the dense blocks (their FFN activations are kept;
 * an MoE block's are the MoE layer's). */
static int64_t dense_index(const omni_model *m, int64_t l)
{
    int64_t f = 0;
    for (int64_t j = 0; j < l; j++)
        f += !omni_experiment_is_moe_block(&m->x, j);
    return f;
}

/* Every id, place and size of a batch checked before use (it comes from data files). */
static omni_status check_batch(const omni_model *m, const omni_batch *b)
{
    if (b->n_seq < 0 || b->n_seq > m->max_seq || b->context != m->T)
        return omni_fail(OMNI_ERR_DATA,
                         "model: batch of %lld windows of %lld positions, the model takes up to "
                         "%lld of %lld",
                         (long long)b->n_seq, (long long)b->context, (long long)m->max_seq,
                         (long long)m->T);
    if (!(b->loss_norm >= 0.0) || isinf(b->loss_norm))
        return omni_fail(OMNI_ERR_DATA, "model: batch loss_norm %g is not a count", b->loss_norm);
    int64_t n = b->n_seq * b->context;
    for (int64_t p = 0; p < n; p++) {
        const char *bad = NULL;
        uint8_t k = b->kind[p];
        if (k >= OMNI_POS_KIND_COUNT)
            bad = "kind";
        else if (k == OMNI_POS_TOKEN && (b->token[p] < 0 || b->token[p] >= m->V))
            bad = "token id";
        else if (k == OMNI_POS_IMAGE && (m->img_dim == 0 || b->patch_dim < m->img_dim))
            bad = "image patch (the model has no image patches of this size)";
        else if (k == OMNI_POS_AUDIO && (m->aud_dim == 0 || b->patch_dim < m->aud_dim))
            bad = "audio patch (the model has no audio patches of this size)";
        else if ((k == OMNI_POS_IMAGE || k == OMNI_POS_AUDIO) &&
                 (b->patch_row[p] < 0 || b->patch_row[p] >= m->dims.max_rows ||
                  b->patch_col[p] < 0 || b->patch_col[p] >= m->dims.max_cols))
            bad = "patch row or column";
        else if (b->pos[p] < 0 || b->pos[p] >= m->T)
            bad = "position";
        else if (b->segment[p] < -1 || b->task[p] < -1 || b->task[p] >= OMNI_MAX_TASKS)
            bad = "segment or task";
        else if (b->loss_mask[p] &&
                 (b->target[p] < 0 || b->target[p] >= m->V || b->task[p] < 0 || k == OMNI_POS_PAD))
            bad = "loss-bearing target or task";
        if (bad)
            return omni_fail(OMNI_ERR_DATA, "model: batch window %lld position %lld: bad %s",
                             (long long)(p / b->context), (long long)(p % b->context), bad);
    }
    return OMNI_OK;
}

omni_status omni_model_forward(omni_model *m, const omni_batch *b, omni_model_metrics *metrics)
{
    omni_status st = check_batch(m, b);
    if (st)
        return st;
    if (m->any_moe && !m->has_moe_hook)
        return omni_fail(OMNI_ERR_INTERNAL,
                         "model: the experiment has MoE blocks (moe.every %lld) but no MoE "
                         "layer is attached (omni_model_set_moe)",
                         (long long)m->x.moe.every);
    if (metrics)
        memset(metrics, 0, sizeof *metrics);
    const int64_t d = m->d, ff = m->ff, T = b->context, ns = b->n_seq, N = ns * T, V = m->V;
    const int64_t NM = m->max_seq * m->T; /* stride of the per-layer buffers */
    m->last_n_seq = -1;

    omni_embed_forward(m->res, b, &m->pv, N, d, m->img_dim, m->aud_dim, &m->es);
    for (int64_t l = 0; l < m->L; l++) {
        const omni_block_view *w = &m->pl[l];
        float *h = m->res + l * NM * d, *hn = m->res + (l + 1) * NM * d, *mid = m->mid + l * NM * d;
        float *ln1 = m->ln1 + l * NM * d, *ln2 = m->ln2 + l * NM * d;
        float *qkv = m->qkv + l * NM * 3 * d, *atty = m->atty + l * NM * d;
        float *lse = m->lse + l * m->max_seq * m->H * T;
        omni_rmsnorm_forward(ln1, m->rstd1 + l * NM, h, w->attn_norm, N, d);
        omni_matmul_forward(qkv, ln1, w->wqkv, N, d, 3 * d, 0.0f);
        omni_attention_forward(atty, lse, qkv, b, ns, T, d, m->H, m->prefix, &m->ws);
        memcpy(mid, h, (size_t)(N * d) * sizeof(float));
        omni_matmul_forward(mid, atty, w->wo, N, d, d, 1.0f);
        omni_rmsnorm_forward(ln2, m->rstd2 + l * NM, mid, w->ffn_norm, N, d);
        memcpy(hn, mid, (size_t)(N * d) * sizeof(float));
        if (w->w1) {
            const int64_t f = dense_index(m, l) * NM * ff;
            omni_swiglu_forward(hn, m->h1 + f, m->h3 + f, m->ffa + f, ln2, w->w1, w->w3, w->w2, N,
                                d, ff);
        } else {
            if ((st = m->moe.forward(m->moe.ctx, l, m->moe_out, ln2, b, N)))
                return st;
#pragma omp parallel for schedule(static)
            for (int64_t i = 0; i < N * d; i++)
                hn[i] += m->moe_out[i];
        }
    }
    omni_rmsnorm_forward(m->lnf, m->rstdf, m->res + m->L * NM * d, m->pv.out_norm, N, d);
    omni_matmul_forward(m->logits, m->lnf, m->pv.out_w, N, d, V, 0.0f);
    double loss = 0.0;
    omni_xent_forward(&loss, m->probs, m->xent_rows, m->logits, b, m->loss_weight, N, V, metrics);
    if (metrics)
        metrics->loss = loss;
    m->last_n_seq = ns;
    return OMNI_OK;
}

omni_status omni_model_backward(omni_model *m, const omni_batch *b)
{
    if (m->last_n_seq != b->n_seq || b->context != m->T)
        return omni_fail(OMNI_ERR_INTERNAL, "model: backward without the forward of its batch");
    omni_status st;
    const int64_t d = m->d, ff = m->ff, T = b->context, ns = b->n_seq, N = ns * T, V = m->V;
    const int64_t NM = m->max_seq * m->T;
    const omni_param_view *p = &m->pv, *g = &m->gv;

    /* the gradient of the logits takes the probabilities' place (they are not needed after) */
    float *dlogits = m->probs;
    omni_xent_backward(dlogits, m->probs, b, m->loss_weight, N, V);
    memset(m->dln, 0, (size_t)(N * d) * sizeof(float));
    omni_matmul_backward(m->dln, g->out_w, dlogits, m->lnf, p->out_w, N, d, V);
    memset(m->dres, 0, (size_t)(N * d) * sizeof(float));
    omni_rmsnorm_backward(m->dres, g->out_norm, m->dln, m->res + m->L * NM * d, p->out_norm,
                          m->rstdf, N, d);
    if (m->grads_ready && (st = m->grads_ready(m->grads_ready_ctx, OMNI_GRADS_HEAD)))
        return st;
    for (int64_t l = m->L - 1; l >= 0; l--) {
        const omni_block_view *w = &m->pl[l], *gw = &m->gl[l];
        float *h = m->res + l * NM * d, *mid = m->mid + l * NM * d;
        float *ln1 = m->ln1 + l * NM * d, *ln2 = m->ln2 + l * NM * d;
        float *qkv = m->qkv + l * NM * 3 * d, *atty = m->atty + l * NM * d;
        const float *lse = m->lse + l * m->max_seq * m->H * T;
        /* FFN: dres is d/d(h_{l+1}) and passes through the residual unchanged. */
        memset(m->dln, 0, (size_t)(N * d) * sizeof(float));
        if (w->w1) {
            omni_swiglu_backward(
                m->dln, gw->w1, gw->w3, gw->w2, m->ffs, m->ffd, m->dres, ln2,
                m->h1 + dense_index(m, l) * NM * ff, m->h3 + dense_index(m, l) * NM * ff,
                m->ffa + dense_index(m, l) * NM * ff, w->w1, w->w3, w->w2, N, d, ff);
        } else if ((st = m->moe.backward(m->moe.ctx, l, m->dln, m->dres, b, N))) {
            return st;
        }
        omni_rmsnorm_backward(m->dres, gw->ffn_norm, m->dln, mid, w->ffn_norm, m->rstd2 + l * NM, N,
                              d);
        /* Attention: dres is now d/d(mid). */
        memset(m->datty, 0, (size_t)(N * d) * sizeof(float));
        omni_matmul_backward(m->datty, gw->wo, m->dres, atty, w->wo, N, d, d);
        memset(m->dqkv, 0, (size_t)(N * 3 * d) * sizeof(float));
        omni_attention_backward(m->dqkv, m->datty, atty, qkv, lse, b, ns, T, d, m->H, m->prefix,
                                &m->ws);
        memset(m->dln, 0, (size_t)(N * d) * sizeof(float));
        omni_matmul_backward(m->dln, gw->wqkv, m->dqkv, ln1, w->wqkv, N, d, 3 * d);
        omni_rmsnorm_backward(m->dres, gw->attn_norm, m->dln, h, w->attn_norm, m->rstd1 + l * NM, N,
                              d);
        if (m->grads_ready && (st = m->grads_ready(m->grads_ready_ctx, l)))
            return st;
    }
    omni_embed_backward(g, m->dres, b, N, d, m->img_dim, m->aud_dim, &m->es);
    if (m->grads_ready && (st = m->grads_ready(m->grads_ready_ctx, OMNI_GRADS_EMBED)))
        return st;
    return OMNI_OK;
}

void omni_model_set_grads_ready(omni_model *m, omni_grads_ready_fn fn, void *ctx)
{
    m->grads_ready = fn;
    m->grads_ready_ctx = ctx;
}

void omni_model_group_range(const omni_model *m, int64_t group, int64_t *first, int64_t *count)
{
    char prefix[32];
    if (group == OMNI_GRADS_HEAD)
        snprintf(prefix, sizeof prefix, "params/head/");
    else if (group == OMNI_GRADS_EMBED)
        snprintf(prefix, sizeof prefix, "params/embed/");
    else
        snprintf(prefix, sizeof prefix, "params/layers/%02lld/", (long long)group);
    int64_t lo = -1, hi = -1;
    for (int i = 0; i < m->n_tensors; i++) {
        const omni_tensor_info *t = &m->tensors[i];
        if (strncmp(t->name, prefix, strlen(prefix)))
            continue;
        if (lo < 0 || t->offset < lo)
            lo = t->offset;
        if (t->offset + t->numel > hi)
            hi = t->offset + t->numel;
    }
    *first = lo < 0 ? 0 : lo;
    *count = lo < 0 ? 0 : hi - lo;
}
