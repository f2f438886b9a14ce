/*
 * The dense transformer of docs/design.md §2: the parameter layout and its tensor table,
 * initialisation, the activation buffers (sized once, at creation), and the forward
 * and backward passes that chain the layers of layers.c and attention.c.
 */
#include "model_private.h"

#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* ---- layout ------------------------------------------------------------------ */

/*
 * Add one parameter tensor: its descriptor (the name "params/" + part, under
 * "layers/<block>/" for a block's tensor), and the field of the named views that points at
 * it (a field of omni_param_view, or of block `block`'s omni_block_view). Offsets are
 * multiples of 16 floats, so every tensor starts 64-byte aligned. A failure is kept in
 * m->layout_failed, checked once after the table.
 */
static omni_tensor *add(omni_model *m, int64_t block, const char *part, size_t field, int64_t group,
                        bool decay, omni_init_rule init, const char *meaning, int64_t d0,
                        int64_t d1)
{
    omni_tensor proto = {
        .rank = d1 > 0 ? 2 : 1,
        .dims = {d0, d1 > 0 ? d1 : 1, 1, 1},
        .meaning = meaning,
        .row_hi = d0,
        .trainable = true,
        .decay = decay,
        .init = init,
        .group = group,
        .offset = m->n_params,
        .numel = d0 * (d1 > 0 ? d1 : 1),
    };
    omni_tensor *t = block < 0
                         ? omni_tensor_table_add(&m->tensors, &proto, "params/%s", part)
                         : omni_tensor_table_add(&m->tensors, &proto, "params/layers/%02lld/%s",
                                                 (long long)block, part);
    if (!t) {
        m->layout_failed = true;
        return NULL;
    }
    m->slots[m->tensors.n - 1] = (omni_view_slot){block, field};
    m->n_params += (t->numel + 15) / 16 * 16;
    return t;
}

#define VIEW(f)  offsetof(omni_param_view, f)
#define BLOCK(f) offsetof(omni_block_view, f)

/* The tensor table: every parameter of the dense model, described where it is made.
 * Decay: the linear maps; not the embedding tables, norm gains or biases. */
static omni_status build_table(omni_model *m)
{
    const int64_t d = m->d, ff = m->ff, E = OMNI_GRADS_EMBED;
    m->slots = omni_alloc(10 + 7 * m->L, sizeof *m->slots, "model tensor table");
    if (!m->slots)
        return OMNI_ERR_NOMEM;
    omni_tensor *t = add(m, -1, "embed/tok", VIEW(tok), E, false, OMNI_INIT_NORMAL,
                         "[vocab, d_model]: token embedding", m->V, d);
    if (t)
        t->vocab_dims = 1u << 0;
    if (m->img_dim > 0) {
        add(m, -1, "embed/img_w", VIEW(img_w), E, true, OMNI_INIT_NORMAL,
            "[image_patch_dim, d_model]: image patch projection", m->img_dim, d);
        add(m, -1, "embed/img_b", VIEW(img_b), E, false, OMNI_INIT_ZEROS,
            "[d_model]: image patch projection bias", d, 0);
    }
    if (m->aud_dim > 0) {
        add(m, -1, "embed/aud_w", VIEW(aud_w), E, true, OMNI_INIT_NORMAL,
            "[audio_patch_dim, d_model]: audio patch projection", m->aud_dim, d);
        add(m, -1, "embed/aud_b", VIEW(aud_b), E, false, OMNI_INIT_ZEROS,
            "[d_model]: audio patch projection bias", d, 0);
    }
    if (m->img_dim > 0 || m->aud_dim > 0) {
        add(m, -1, "embed/row", VIEW(row), E, false, OMNI_INIT_NORMAL,
            "[max_rows, d_model]: patch row embedding", m->dims.max_rows, d);
        add(m, -1, "embed/col", VIEW(col), E, false, OMNI_INIT_NORMAL,
            "[max_cols, d_model]: patch column embedding", m->dims.max_cols, d);
    }
    add(m, -1, "embed/pos", VIEW(pos), E, false, OMNI_INIT_NORMAL,
        "[context, d_model]: position-in-sample embedding", m->T, d);
    for (int64_t l = 0; l < m->L; l++) {
        add(m, l, "attn/norm", BLOCK(attn_norm), l, false, OMNI_INIT_ONES,
            "[d_model]: RMSNorm gain before attention", d, 0);
        add(m, l, "attn/wqkv", BLOCK(wqkv), l, true, OMNI_INIT_NORMAL,
            "[d_model, 3 d_model]: fused Q | K | V projection", d, 3 * d);
        add(m, l, "attn/wo", BLOCK(wo), l, true, OMNI_INIT_RESIDUAL,
            "[d_model, d_model]: attention output projection", d, d);
        add(m, l, "ffn/norm", BLOCK(ffn_norm), l, false, OMNI_INIT_ONES,
            "[d_model]: RMSNorm gain before the FFN", d, 0);
        if (omni_experiment_is_moe_block(&m->x, l))
            continue; /* the MoE layer (experts/) describes its own tensors */
        add(m, l, "ffn/w1", BLOCK(w1), l, true, OMNI_INIT_NORMAL, "[d_model, d_ff]: SwiGLU gate", d,
            ff);
        add(m, l, "ffn/w3", BLOCK(w3), l, true, OMNI_INIT_NORMAL, "[d_model, d_ff]: SwiGLU up", d,
            ff);
        add(m, l, "ffn/w2", BLOCK(w2), l, true, OMNI_INIT_RESIDUAL, "[d_ff, d_model]: SwiGLU down",
            ff, d);
    }
    add(m, -1, "head/norm", VIEW(out_norm), OMNI_GRADS_HEAD, false, OMNI_INIT_ONES,
        "[d_model]: final RMSNorm gain", d, 0);
    t = add(m, -1, "head/w", VIEW(out_w), OMNI_GRADS_HEAD, true, OMNI_INIT_NORMAL,
            "[d_model, vocab]: output head", d, m->V);
    if (t)
        t->vocab_dims = 1u << 1;
    return m->layout_failed ? OMNI_ERR_NOMEM : OMNI_OK;
}
#undef VIEW
#undef BLOCK

/* Point the named views of one flat buffer at its tensors. */
static void bind_views(omni_model *m, float *flat, omni_param_view *v, omni_block_view *lv)
{
    memset(v, 0, sizeof *v);
    memset(lv, 0, (size_t)m->L * sizeof *lv);
    v->layers = lv;
    for (int64_t i = 0; i < m->tensors.n; i++) {
        const omni_view_slot *s = &m->slots[i];
        char *view = s->block < 0 ? (char *)v : (char *)&lv[s->block];
        float *p = flat + m->tensors.t[i].offset;
        memcpy(view + s->field, &p, sizeof p);
    }
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
    if (max_seq <= 0 || !omni_matmul_fits(max_seq, T) || !omni_matmul_fits(max_seq * T, 3 * d) ||
        !omni_matmul_fits(max_seq * T, dims->vocab) ||
        !omni_matmul_fits(max_seq * T, x->model.d_ff))
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
    m->recompute = x->model.recompute;
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
    m->params = omni_alloc_in(&m->mem, m->n_params, sizeof(float), "model parameters");
    m->grads = omni_alloc_in(&m->mem, m->n_params, sizeof(float), "model gradients");
    m->adam_m = omni_alloc_in(&m->mem, m->n_params, sizeof(float), "AdamW m");
    m->adam_v = omni_alloc_in(&m->mem, m->n_params, sizeof(float), "AdamW v");
    m->pl = omni_alloc_in(&m->mem, 2 * L, sizeof *m->pl, "model views");
    if (m->mem.failed)
        goto out_free;
    m->gl = m->pl + L;
    bind_views(m, m->params, &m->pv, m->pl);
    bind_views(m, m->grads, &m->gv, m->gl);
    for (int64_t i = 0; i < m->tensors.n; i++)
        m->tensors.t[i].data = m->params + m->tensors.t[i].offset;

    /* Under model.recompute one slot of per-block activations serves every block. */
    const int64_t Ls = m->recompute ? 1 : L;
    const int64_t nd = m->recompute ? (m->n_dense > 0) : m->n_dense;
    m->res = omni_alloc_in(&m->mem, (L + 1) * N * d, sizeof(float), "activations");
    m->mid = omni_alloc_in(&m->mem, Ls * N * d, sizeof(float), "activations");
    m->ln1 = omni_alloc_in(&m->mem, Ls * N * d, sizeof(float), "activations");
    m->rstd1 = omni_alloc_in(&m->mem, Ls * N, sizeof(float), "activations");
    m->qkv = omni_alloc_in(&m->mem, Ls * N * 3 * d, sizeof(float), "activations");
    m->lse = omni_alloc_in(&m->mem, Ls * max_seq * H * T, sizeof(float), "attention statistics");
    m->atty = omni_alloc_in(&m->mem, Ls * N * d, sizeof(float), "activations");
    m->ln2 = omni_alloc_in(&m->mem, Ls * N * d, sizeof(float), "activations");
    m->rstd2 = omni_alloc_in(&m->mem, Ls * N, sizeof(float), "activations");
    m->h1 = omni_alloc_in(&m->mem, nd * N * ff, sizeof(float), "FFN activations");
    m->h3 = omni_alloc_in(&m->mem, nd * N * ff, sizeof(float), "FFN activations");
    m->lnf = omni_alloc_in(&m->mem, N * d, sizeof(float), "activations");
    m->rstdf = omni_alloc_in(&m->mem, N, sizeof(float), "activations");
    m->ffa = omni_alloc_in(&m->mem, nd * N * ff, sizeof(float), "FFN activations");
    m->logits = omni_alloc_in(&m->mem, N * V, sizeof(float), "logits");
    m->probs = omni_alloc_in(&m->mem, N * V, sizeof(float), "probabilities");
    m->ffs = omni_alloc_in(&m->mem, N * ff, sizeof(float), "scratch");
    m->ffd = omni_alloc_in(&m->mem, N * ff, sizeof(float), "scratch");
    m->moe_out = omni_alloc_in(&m->mem, N * d, sizeof(float), "scratch");
    m->dres = omni_alloc_in(&m->mem, N * d, sizeof(float), "scratch");
    m->dln = omni_alloc_in(&m->mem, N * d, sizeof(float), "scratch");
    m->datty = omni_alloc_in(&m->mem, N * d, sizeof(float), "scratch");
    m->dqkv = omni_alloc_in(&m->mem, N * 3 * d, sizeof(float), "scratch");
    m->ws.tile = omni_alloc_in(&m->mem, m->ws.slots * omni_attention_scratch_floats(d / H),
                               sizeof(float), "scratch");
    m->ws.lo = omni_alloc_in(&m->mem, 2 * N, sizeof(int32_t), "scratch");
    m->xent_rows = omni_alloc_in(&m->mem, 2 * N, sizeof(double), "scratch");
    m->es.xg = omni_alloc_in(&m->mem, N * m->patch_dim, sizeof(float), "scratch");
    m->es.yg = omni_alloc_in(&m->mem, N * d, sizeof(float), "scratch");
    m->es.idx = omni_alloc_in(&m->mem, N, sizeof(int64_t), "scratch");
    if (m->mem.failed)
        goto out_free;
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
    omni_alloc_list_free(&m->mem);
    omni_tensor_table_free(&m->tensors);
    omni_free(m->slots);
    omni_free(m);
}

void omni_model_init_params(omni_model *m)
{
    for (int64_t i = 0; i < m->tensors.n; i++)
        omni_tensor_init(&m->tensors.t[i], (uint64_t)m->x.experiment.seed, m->L);
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

int64_t omni_model_n_tensors(const omni_model *m)
{
    return m->tensors.n;
}

const omni_tensor *omni_model_tensor(const omni_model *m, int64_t i)
{
    return i >= 0 && i < m->tensors.n ? &m->tensors.t[i] : NULL;
}

int64_t omni_model_find_tensor(const omni_model *m, const char *name)
{
    return omni_tensor_table_find(&m->tensors, name);
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

/*
 * Where block l's activations live: its own slot of the per-block buffers, or, with
 * model.recompute, the one slot that every block shares (filled again in backward).
 *
 * In bf16 (model.precision) an activation that only products read is made in bf16 once,
 * where it is computed, and kept only so (in the first half of its fp32 buffer): the
 * norms' outputs ln1, ln2 of a dense block and lnf, and the SwiGLU gate's output. The
 * attention output is read by attention's backward too, so it stays fp32 and its bf16
 * copy lives in the second half of ln1's buffer. An MoE block's ln2 stays fp32 (the
 * router's products are fp32; the experts round their rows once).
 */
typedef struct {
    float *h, *mid, *ln1, *rstd1, *qkv, *lse, *atty, *ln2, *rstd2;
    float *h1, *h3, *ffa;                 /* dense blocks only */
    uint16_t *ln1h, *attyh, *ln2h, *ffah; /* bf16: views of ln1 (both), ln2, ffa */
} block_acts;

static bool bf16_products(void)
{
    return omni_gemm_precision() == OMNI_PREC_BF16;
}

static block_acts acts_of(const omni_model *m, int64_t l)
{
    const int64_t NM = m->max_seq * m->T, d = m->d;
    const int64_t s = m->recompute ? 0 : l;
    block_acts a = {.h = m->res + l * NM * d,
                    .mid = m->mid + s * NM * d,
                    .ln1 = m->ln1 + s * NM * d,
                    .rstd1 = m->rstd1 + s * NM,
                    .qkv = m->qkv + s * NM * 3 * d,
                    .lse = m->lse + s * m->max_seq * m->H * m->T,
                    .atty = m->atty + s * NM * d,
                    .ln2 = m->ln2 + s * NM * d,
                    .rstd2 = m->rstd2 + s * NM};
    a.ln1h = (uint16_t *)a.ln1, a.attyh = a.ln1h + NM * d, a.ln2h = (uint16_t *)a.ln2;
    if (m->pl[l].w1) {
        const int64_t f = (m->recompute ? 0 : dense_index(m, l)) * NM * m->ff;
        a.h1 = m->h1 + f, a.h3 = m->h3 + f, a.ffa = m->ffa + f;
        a.ffah = (uint16_t *)a.ffa;
    }
    return a;
}

/* Block l up to its FFN's input: attention, the residual after it (mid) and the FFN's
 * RMSNorm (ln2). Run by forward, and again by backward under model.recompute: the same
 * calls on the same inputs, so the recomputed values are the stored ones to the bit. */
static void block_front(const omni_model *m, const omni_batch *b, int64_t l, const block_acts *a)
{
    const omni_block_view *w = &m->pl[l];
    const int64_t d = m->d, T = b->context, ns = b->n_seq, N = ns * T;
    if (bf16_products()) {
        omni_rmsnorm_forward_bf16(a->ln1h, a->rstd1, a->h, w->attn_norm, N, d);
        omni_matmul_forward_bf16(a->qkv, a->ln1h, w->wqkv, N, d, 3 * d, 0.0f);
        omni_attention_forward(a->atty, a->lse, a->qkv, b, ns, T, d, m->H, m->prefix, &m->ws);
        omni_bf16_round_rows(a->attyh, a->atty, N, d, d);
        memcpy(a->mid, a->h, (size_t)(N * d) * sizeof(float));
        omni_matmul_forward_bf16(a->mid, a->attyh, w->wo, N, d, d, 1.0f);
        if (w->w1)
            omni_rmsnorm_forward_bf16(a->ln2h, a->rstd2, a->mid, w->ffn_norm, N, d);
        else
            omni_rmsnorm_forward(a->ln2, a->rstd2, a->mid, w->ffn_norm, N, d);
        return;
    }
    omni_rmsnorm_forward(a->ln1, a->rstd1, a->h, w->attn_norm, N, d);
    omni_matmul_forward_mp(a->qkv, a->ln1, w->wqkv, N, d, 3 * d, 0.0f);
    omni_attention_forward(a->atty, a->lse, a->qkv, b, ns, T, d, m->H, m->prefix, &m->ws);
    memcpy(a->mid, a->h, (size_t)(N * d) * sizeof(float));
    omni_matmul_forward_mp(a->mid, a->atty, w->wo, N, d, d, 1.0f);
    omni_rmsnorm_forward(a->ln2, a->rstd2, a->mid, w->ffn_norm, N, d);
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
    omni_bf16_weights_changed(); /* bf16 copies of the weights: once per forward pass */
    const bool bf16 = bf16_products();

    omni_embed_forward(m->res, b, &m->pv, N, d, m->img_dim, m->aud_dim, &m->es);
    for (int64_t l = 0; l < m->L; l++) {
        const omni_block_view *w = &m->pl[l];
        const block_acts a = acts_of(m, l);
        float *hn = m->res + (l + 1) * NM * d;
        block_front(m, b, l, &a);
        memcpy(hn, a.mid, (size_t)(N * d) * sizeof(float));
        if (w->w1 && bf16) {
            omni_swiglu_forward_bf16(hn, a.h1, a.h3, a.ffah, a.ln2h, w->w1, w->w3, w->w2, N, d, ff);
        } else if (w->w1) {
            omni_swiglu_forward(hn, a.h1, a.h3, a.ffa, a.ln2, w->w1, w->w3, w->w2, N, d, ff);
        } else {
            if ((st = m->moe.forward(m->moe.ctx, l, m->moe_out, a.ln2, b, N)))
                return st;
#pragma omp parallel for schedule(static)
            for (int64_t i = 0; i < N * d; i++)
                hn[i] += m->moe_out[i];
        }
    }
    if (bf16) {
        uint16_t *lnfh = (uint16_t *)m->lnf;
        omni_rmsnorm_forward_bf16(lnfh, m->rstdf, m->res + m->L * NM * d, m->pv.out_norm, N, d);
        omni_matmul_forward_bf16(m->logits, lnfh, m->pv.out_w, N, d, V, 0.0f);
    } else {
        omni_rmsnorm_forward(m->lnf, m->rstdf, m->res + m->L * NM * d, m->pv.out_norm, N, d);
        omni_matmul_forward_mp(m->logits, m->lnf, m->pv.out_w, N, d, V, 0.0f);
    }
    double loss = 0.0;
    omni_xent_forward(&loss, m->probs, m->xent_rows, m->logits, b, m->loss_weight, N, V, metrics);
    if (metrics)
        metrics->loss = loss;
    m->last_n_seq = ns;
    return OMNI_OK;
}

omni_status omni_model_enable_blockwise(omni_model *m, int64_t max_batch_seq)
{
    if (max_batch_seq <= m->max_batch_seq)
        return OMNI_OK;
    if (!omni_matmul_fits(max_batch_seq * m->T, m->d))
        return omni_fail(OMNI_ERR_CONFIG, "model: %lld sequences of %lld positions is too large",
                         (long long)max_batch_seq, (long long)m->T);
    const int64_t n = max_batch_seq * m->T * m->d;
    m->bw_h = omni_alloc_in(&m->mem, n, sizeof(float), "block-by-block activations");
    m->bw_ln = omni_alloc_in(&m->mem, n, sizeof(float), "block-by-block activations");
    if (m->mem.failed)
        return OMNI_ERR_NOMEM;
    m->max_batch_seq = max_batch_seq;
    return OMNI_OK;
}

/* Pass q of the block-by-block forward of b: its windows as a batch, in *first. Passes after
 * the end of b are empty (every rank makes the same number). */
static omni_batch blockwise_pass(const omni_model *m, const omni_batch *b, int64_t q,
                                 int64_t *first)
{
    int64_t lo = q * m->max_seq < b->n_seq ? q * m->max_seq : b->n_seq;
    int64_t hi = lo + m->max_seq < b->n_seq ? lo + m->max_seq : b->n_seq;
    *first = lo;
    return omni_batch_windows(b, lo, hi - lo);
}

omni_status omni_model_forward_blockwise(omni_model *m, const omni_batch *b,
                                         omni_model_metrics *metrics)
{
    if (b->n_seq < 0 || b->n_seq > m->max_batch_seq || b->context != m->T)
        return omni_fail(OMNI_ERR_INTERNAL,
                         "model: block-by-block forward of %lld windows, room for %lld",
                         (long long)b->n_seq, (long long)m->max_batch_seq);
    if (m->any_moe && !(m->has_moe_hook && m->moe.route && m->moe.window))
        return omni_fail(OMNI_ERR_INTERNAL,
                         "model: block-by-block forward without an MoE layer that routes a "
                         "whole batch");
    omni_status st;
    for (int64_t q = 0, first; q * m->max_seq < b->n_seq; q++) {
        omni_batch pb = blockwise_pass(m, b, q, &first);
        if ((st = check_batch(m, &pb)))
            return st;
    }
    if (metrics)
        memset(metrics, 0, sizeof *metrics);
    const int64_t d = m->d, ff = m->ff, T = m->T, V = m->V;
    const int64_t n_pass = (m->max_batch_seq + m->max_seq - 1) / m->max_seq;
    int64_t last_moe = -1;
    for (int64_t l = 0; l < m->L; l++)
        if (!m->pl[l].w1)
            last_moe = l;
    const int64_t L_run = metrics ? m->L : last_moe + 1;
    m->last_n_seq = -1;
    omni_bf16_weights_changed();
    const bool bf16 = bf16_products();

    for (int64_t q = 0, first; q < n_pass; q++) {
        omni_batch pb = blockwise_pass(m, b, q, &first);
        omni_embed_forward(m->bw_h + first * T * d, &pb, &m->pv, pb.n_seq * T, d, m->img_dim,
                           m->aud_dim, &m->es);
    }
    for (int64_t l = 0; l < L_run; l++) {
        const omni_block_view *w = &m->pl[l];
        const block_acts a = acts_of(m, l);
        for (int64_t q = 0, first; q < n_pass; q++) {
            omni_batch pb = blockwise_pass(m, b, q, &first);
            const int64_t N = pb.n_seq * T;
            float *h = m->bw_h + first * T * d;
            memcpy(a.h, h, (size_t)(N * d) * sizeof(float));
            block_front(m, &pb, l, &a);
            memcpy(h, a.mid, (size_t)(N * d) * sizeof(float));
            if (w->w1 && bf16)
                omni_swiglu_forward_bf16(h, a.h1, a.h3, a.ffah, a.ln2h, w->w1, w->w3, w->w2, N, d,
                                         ff);
            else if (w->w1)
                omni_swiglu_forward(h, a.h1, a.h3, a.ffa, a.ln2, w->w1, w->w3, w->w2, N, d, ff);
            else
                memcpy(m->bw_ln + first * T * d, a.ln2, (size_t)(N * d) * sizeof(float));
        }
        if (w->w1)
            continue;
        /* the MoE block: the whole batch's routing, then its passes with it */
        if ((st = m->moe.route(m->moe.ctx, l, m->bw_ln, b, b->n_seq * T)))
            return st;
        for (int64_t q = 0, first; q < n_pass; q++) {
            omni_batch pb = blockwise_pass(m, b, q, &first);
            const int64_t N = pb.n_seq * T;
            float *h = m->bw_h + first * T * d;
            m->moe.window(m->moe.ctx, first);
            if ((st = m->moe.forward(m->moe.ctx, l, m->moe_out, m->bw_ln + first * T * d, &pb, N)))
                return st;
            for (int64_t i = 0; i < N * d; i++)
                h[i] += m->moe_out[i];
        }
    }
    if (!metrics)
        return OMNI_OK;
    double total = 0.0;
    for (int64_t q = 0, first; q < n_pass; q++) {
        omni_batch pb = blockwise_pass(m, b, q, &first);
        const int64_t N = pb.n_seq * T;
        double loss = 0.0;
        if (bf16) {
            uint16_t *lnfh = (uint16_t *)m->lnf;
            omni_rmsnorm_forward_bf16(lnfh, m->rstdf, m->bw_h + first * T * d, m->pv.out_norm, N,
                                      d);
            omni_matmul_forward_bf16(m->logits, lnfh, m->pv.out_w, N, d, V, 0.0f);
        } else {
            omni_rmsnorm_forward(m->lnf, m->rstdf, m->bw_h + first * T * d, m->pv.out_norm, N, d);
            omni_matmul_forward_mp(m->logits, m->lnf, m->pv.out_w, N, d, V, 0.0f);
        }
        omni_xent_forward(&loss, m->probs, m->xent_rows, m->logits, &pb, m->loss_weight, N, V,
                          metrics);
        total += loss;
    }
    metrics->loss = total;
    return OMNI_OK;
}

/* A linear map's backward in bf16 with its input kept in bf16: the gradient dout [n, k]
 * rounded once, for both products. */
static void backward_pair_bf16(float *dinp, float *dw, const float *dout, const uint16_t *inp,
                               const float *w, int64_t n, int64_t in, int64_t k)
{
    uint16_t *g = omni_bf16_scratch(OMNI_BF16_SLOT_DY, n * k);
    omni_bf16_round_rows(g, dout, n, k, k);
    omni_matmul_backward_bf16(dinp, dw, g, inp, w, n, in, k);
}

omni_status omni_model_backward(omni_model *m, const omni_batch *b)
{
    if (m->last_n_seq != b->n_seq || b->context != m->T)
        return omni_fail(OMNI_ERR_INTERNAL, "model: backward without the forward of its batch");
    omni_status st;
    const int64_t d = m->d, ff = m->ff, T = b->context, ns = b->n_seq, N = ns * T, V = m->V;
    const int64_t NM = m->max_seq * m->T;
    const omni_param_view *p = &m->pv, *g = &m->gv;
    const bool bf16 = bf16_products();

    /* the gradient of the logits takes the probabilities' place (they are not needed after) */
    float *dlogits = m->probs;
    omni_xent_backward(dlogits, m->probs, b, m->loss_weight, N, V);
    memset(m->dln, 0, (size_t)(N * d) * sizeof(float));
    if (bf16)
        backward_pair_bf16(m->dln, g->out_w, dlogits, (const uint16_t *)m->lnf, p->out_w, N, d, V);
    else
        omni_matmul_backward_mp(m->dln, g->out_w, dlogits, m->lnf, p->out_w, N, d, V);
    memset(m->dres, 0, (size_t)(N * d) * sizeof(float));
    omni_rmsnorm_backward(m->dres, g->out_norm, m->dln, m->res + m->L * NM * d, p->out_norm,
                          m->rstdf, N, d);
    if (m->grads_ready && (st = m->grads_ready(m->grads_ready_ctx, OMNI_GRADS_HEAD)))
        return st;
    for (int64_t l = m->L - 1; l >= 0; l--) {
        const omni_block_view *w = &m->pl[l], *gw = &m->gl[l];
        const block_acts a = acts_of(m, l);
        if (m->recompute) {
            /* The block's activations again, from its input res[l] (kept); the MoE layer
             * keeps its own, so only a dense FFN's hidden rows are made again. */
            block_front(m, b, l, &a);
            if (w->w1 && bf16)
                omni_swiglu_forward_bf16(NULL, a.h1, a.h3, a.ffah, a.ln2h, w->w1, w->w3, w->w2, N,
                                         d, ff);
            else if (w->w1)
                omni_swiglu_forward(NULL, a.h1, a.h3, a.ffa, a.ln2, w->w1, w->w3, w->w2, N, d, ff);
        }
        /* FFN: dres is d/d(h_{l+1}) and passes through the residual unchanged. */
        memset(m->dln, 0, (size_t)(N * d) * sizeof(float));
        if (w->w1 && bf16) {
            omni_swiglu_backward_bf16(m->dln, gw->w1, gw->w3, gw->w2, (uint16_t *)m->ffs, m->ffd,
                                      m->dres, a.ln2h, a.h1, a.h3, a.ffah, w->w1, w->w3, w->w2, N,
                                      d, ff);
        } else if (w->w1) {
            omni_swiglu_backward(m->dln, gw->w1, gw->w3, gw->w2, m->ffs, m->ffd, m->dres, a.ln2,
                                 a.h1, a.h3, a.ffa, w->w1, w->w3, w->w2, N, d, ff);
        } else if ((st = m->moe.backward(m->moe.ctx, l, m->dln, m->dres, b, N))) {
            return st;
        }
        omni_rmsnorm_backward(m->dres, gw->ffn_norm, m->dln, a.mid, w->ffn_norm, a.rstd2, N, d);
        /* Attention: dres is now d/d(mid). */
        memset(m->datty, 0, (size_t)(N * d) * sizeof(float));
        if (bf16)
            backward_pair_bf16(m->datty, gw->wo, m->dres, a.attyh, w->wo, N, d, d);
        else
            omni_matmul_backward_mp(m->datty, gw->wo, m->dres, a.atty, w->wo, N, d, d);
        memset(m->dqkv, 0, (size_t)(N * 3 * d) * sizeof(float));
        omni_attention_backward(m->dqkv, m->datty, a.atty, a.qkv, a.lse, b, ns, T, d, m->H,
                                m->prefix, &m->ws);
        memset(m->dln, 0, (size_t)(N * d) * sizeof(float));
        if (bf16)
            backward_pair_bf16(m->dln, gw->wqkv, m->dqkv, a.ln1h, w->wqkv, N, d, 3 * d);
        else
            omni_matmul_backward_mp(m->dln, gw->wqkv, m->dqkv, a.ln1, w->wqkv, N, d, 3 * d);
        omni_rmsnorm_backward(m->dres, gw->attn_norm, m->dln, a.h, w->attn_norm, a.rstd1, N, d);
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
    omni_tensor_table_group_range(&m->tensors, group, first, count);
}
