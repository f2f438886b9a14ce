/*
 * Incremental decoding: the KV cache and the forward pass of new positions through it
 * (model.h omni_model_forward_cached). The layers are those of layers.c; attention here
 * reads the cached keys and values of earlier positions instead of recomputing them, with
 * the mask of docs/design.md §2 for one sample per sequence (causal, and both ways inside the
 * prefix under attention: prefix).
 */
#include "model_private.h"

#include <math.h>
#include <string.h>

struct omni_kv_cache {
    int64_t n_seq, max_step, T, L, d, H, ff, V, patch_dim;
    int64_t *len;   /* [n_seq] cached positions per sequence */
    int64_t *from;  /* [n_seq] scratch of reorder */
    float *k, *v;   /* [L, n_seq, T, d] keys and values, head h at columns h*hd.. */
    float *tmp;     /* [n_seq, T, d] scratch of reorder */
    int64_t *valid; /* [n_seq] new positions of each row in the current step */
    /* scratch of one step, N = n_seq * max_step rows */
    float *h;      /* [N, d] residual stream */
    float *ln;     /* [N, d] */
    float *rstd;   /* [N] */
    float *qkv;    /* [N, 3d] */
    float *atty;   /* [N, d] */
    float *ffo;    /* [N, d] MoE output */
    float *h1;     /* [N, ff] */
    float *h3;     /* [N, ff] */
    float *ffa;    /* [N, ff] */
    float *logits; /* [N, V] */
    float *scores; /* [max_step, T] */
    omni_embed_scratch es;
    omni_alloc_list mem; /* every buffer above */
};

omni_status omni_kv_cache_create(omni_kv_cache **out, const omni_model *m, int64_t n_seq,
                                 int64_t max_step)
{
    omni_bf16_weights_changed(); /* a new decode: the weights may have moved since */
    *out = NULL;
    if (n_seq <= 0 || max_step <= 0 || max_step > m->T || n_seq > INT32_MAX / m->T)
        return omni_fail(OMNI_ERR_CONFIG,
                         "KV cache: %lld sequences with steps of %lld positions (context %lld)",
                         (long long)n_seq, (long long)max_step, (long long)m->T);
    omni_kv_cache *c = omni_alloc(1, sizeof *c, "KV cache");
    if (!c)
        return OMNI_ERR_NOMEM;
    c->n_seq = n_seq, c->max_step = max_step, c->T = m->T, c->L = m->L, c->d = m->d;
    c->H = m->H, c->ff = m->ff, c->V = m->V, c->patch_dim = m->patch_dim;
    const int64_t N = n_seq * max_step, d = m->d, ff = m->ff;
    omni_alloc_list *mem = &c->mem;
    c->len = omni_alloc_in(mem, n_seq, sizeof *c->len, "KV cache");
    c->from = omni_alloc_in(mem, n_seq, sizeof *c->from, "KV cache");
    c->valid = omni_alloc_in(mem, n_seq, sizeof *c->valid, "KV cache");
    c->k = omni_alloc_in(mem, m->L * n_seq * m->T * d, sizeof(float), "KV cache keys");
    c->v = omni_alloc_in(mem, m->L * n_seq * m->T * d, sizeof(float), "KV cache values");
    c->tmp = omni_alloc_in(mem, n_seq * m->T * d, sizeof(float), "KV cache scratch");
    c->h = omni_alloc_in(mem, N * d, sizeof(float), "decoding activations");
    c->ln = omni_alloc_in(mem, N * d, sizeof(float), "decoding activations");
    c->rstd = omni_alloc_in(mem, N, sizeof(float), "decoding activations");
    c->qkv = omni_alloc_in(mem, N * 3 * d, sizeof(float), "decoding activations");
    c->atty = omni_alloc_in(mem, N * d, sizeof(float), "decoding activations");
    c->ffo = omni_alloc_in(mem, N * d, sizeof(float), "decoding activations");
    c->h1 = omni_alloc_in(mem, N * ff, sizeof(float), "decoding activations");
    c->h3 = omni_alloc_in(mem, N * ff, sizeof(float), "decoding activations");
    c->ffa = omni_alloc_in(mem, N * ff, sizeof(float), "decoding activations");
    c->logits = omni_alloc_in(mem, N * m->V, sizeof(float), "decoding logits");
    c->scores = omni_alloc_in(mem, max_step * m->T, sizeof(float), "decoding scores");
    c->es.idx = omni_alloc_in(mem, N, sizeof(int64_t), "decoding scratch");
    c->es.xg = omni_alloc_in(mem, N * (m->patch_dim > 0 ? m->patch_dim : 1), sizeof(float),
                             "decoding scratch");
    c->es.yg = omni_alloc_in(mem, N * d, sizeof(float), "decoding scratch");
    if (mem->failed) {
        omni_kv_cache_free(c);
        return OMNI_ERR_NOMEM;
    }
    *out = c;
    return OMNI_OK;
}

void omni_kv_cache_free(omni_kv_cache *c)
{
    if (!c)
        return;
    omni_alloc_list_free(&c->mem);
    omni_free(c);
}

void omni_kv_cache_clear(omni_kv_cache *c)
{
    omni_bf16_weights_changed(); /* a new decode: the weights may have moved since */
    memset(c->len, 0, (size_t)c->n_seq * sizeof *c->len);
}

int64_t omni_kv_cache_len(const omni_kv_cache *c, int64_t s)
{
    OMNI_ASSERT(s >= 0 && s < c->n_seq);
    return c->len[s];
}

const float *omni_kv_cache_logits(const omni_kv_cache *c)
{
    return c->logits;
}

void omni_kv_cache_reorder(omni_kv_cache *c, const int64_t *from, int64_t n)
{
    OMNI_ASSERT(n >= 0 && n <= c->n_seq);
    const int64_t T = c->T, d = c->d;
    for (int64_t i = 0; i < n; i++) {
        OMNI_ASSERT(from[i] >= 0 && from[i] < c->n_seq);
        c->from[i] = c->len[from[i]];
    }
    for (int k = 0; k < 2; k++) {
        float *base = k == 0 ? c->k : c->v;
        for (int64_t l = 0; l < c->L; l++) {
            float *layer = base + l * c->n_seq * T * d;
            for (int64_t i = 0; i < n; i++)
                memcpy(c->tmp + i * T * d, layer + from[i] * T * d,
                       (size_t)(c->from[i] * d) * sizeof(float));
            for (int64_t i = 0; i < n; i++)
                memcpy(layer + i * T * d, c->tmp + i * T * d,
                       (size_t)(c->from[i] * d) * sizeof(float));
        }
    }
    for (int64_t i = 0; i < n; i++)
        c->len[i] = c->from[i];
}

/* The new positions of each row, and every id, place and size checked before use. */
static omni_status check_step(const omni_model *m, omni_kv_cache *c, const omni_batch *b)
{
    if (b->n_seq < 0 || b->n_seq > c->n_seq || b->context < 1 || b->context > c->max_step)
        return omni_fail(OMNI_ERR_INTERNAL,
                         "decoding: a step of %lld rows of %lld positions, the cache takes up "
                         "to %lld of %lld",
                         (long long)b->n_seq, (long long)b->context, (long long)c->n_seq,
                         (long long)c->max_step);
    if (b->n_seq > 0 && b->patch_dim < m->patch_dim)
        return omni_fail(OMNI_ERR_INTERNAL, "decoding: batch patch rows of %lld values, not %lld",
                         (long long)b->patch_dim, (long long)m->patch_dim);
    for (int64_t s = 0; s < b->n_seq; s++) {
        int64_t n = 0;
        for (int64_t i = 0; i < b->context; i++) {
            int64_t p = s * b->context + i;
            uint8_t k = b->kind[p];
            const char *bad = NULL;
            if (k >= OMNI_POS_KIND_COUNT)
                bad = "kind";
            else if (b->pos[p] < 0 || b->pos[p] >= m->T)
                bad = "position (past the context)";
            else if (k == OMNI_POS_PAD)
                ;
            else if (n < i)
                bad = "position after padding";
            else if (b->pos[p] != c->len[s] + i)
                bad = "position (not the next of its sequence)";
            else if (k == OMNI_POS_TOKEN && (b->token[p] < 0 || b->token[p] >= m->V))
                bad = "token id";
            else if (k == OMNI_POS_IMAGE && m->img_dim == 0)
                bad = "image patch (the model has no image patches)";
            else if (k == OMNI_POS_AUDIO && m->aud_dim == 0)
                bad = "audio patch (the model has no audio patches)";
            else if ((k == OMNI_POS_IMAGE || k == OMNI_POS_AUDIO) &&
                     (b->patch_row[p] < 0 || b->patch_row[p] >= m->dims.max_rows ||
                      b->patch_col[p] < 0 || b->patch_col[p] >= m->dims.max_cols))
                bad = "patch row or column";
            else if (m->prefix && b->in_prefix[p] && c->len[s] > 0)
                bad = "prefix position after the sequence's first step";
            if (bad)
                return omni_fail(OMNI_ERR_DATA, "decoding: sequence %lld position %lld: bad %s",
                                 (long long)s, (long long)(c->len[s] + i), bad);
            if (k != OMNI_POS_PAD)
                n++;
        }
        c->valid[s] = n;
    }
    return OMNI_OK;
}

/* Softmax of one score row over its allowed keys (the row already holds -INFINITY at the
 * masked ones, and at least one key is allowed: the position itself). */
static void softmax_row(float *row, int64_t n)
{
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; j++)
        if (row[j] > mx)
            mx = row[j];
    float sum = 0.0f;
    for (int64_t j = 0; j < n; j++) {
        float e = row[j] == -INFINITY ? 0.0f : expf(row[j] - mx);
        row[j] = e;
        sum += e;
    }
    float inv = 1.0f / sum;
    for (int64_t j = 0; j < n; j++)
        row[j] *= inv;
}

/* Attention of block l: write the new keys and values into the cache, then each row's new
 * queries against its cached and new keys. */
static void attention_cached(const omni_model *m, omni_kv_cache *c, const omni_batch *b, int64_t l)
{
    const int64_t d = c->d, H = c->H, hd = d / H, T = c->T, W = b->context;
    const float scale = 1.0f / sqrtf((float)hd);
    float *K = c->k + l * c->n_seq * T * d, *V = c->v + l * c->n_seq * T * d;
    memset(c->atty, 0, (size_t)(b->n_seq * W * d) * sizeof(float));
    for (int64_t s = 0; s < b->n_seq; s++) {
        const int64_t len = c->len[s], n = c->valid[s], keys = len + n;
        if (n == 0)
            continue;
        float *ks = K + s * T * d, *vs = V + s * T * d;
        const float *q = c->qkv + s * W * 3 * d;
        for (int64_t i = 0; i < n; i++) {
            memcpy(ks + (len + i) * d, q + i * 3 * d + d, (size_t)d * sizeof(float));
            memcpy(vs + (len + i) * d, q + i * 3 * d + 2 * d, (size_t)d * sizeof(float));
        }
        const uint8_t *pre = b->in_prefix + s * W;
        if (n == 1) { /* one new position: plain loops beat the BLAS calls' overhead */
            for (int64_t h = 0; h < H; h++) {
                const float *qh = q + h * hd;
                float *row = c->scores, *y = c->atty + s * W * d + h * hd;
                for (int64_t j = 0; j < keys; j++) {
                    const float *kj = ks + j * d + h * hd;
                    float dot = 0.0f;
                    for (int64_t e = 0; e < hd; e++)
                        dot += qh[e] * kj[e];
                    row[j] = dot * scale;
                }
                softmax_row(row, keys);
                for (int64_t j = 0; j < keys; j++) {
                    const float *vj = vs + j * d + h * hd;
                    for (int64_t e = 0; e < hd; e++)
                        y[e] += row[j] * vj[e];
                }
            }
            continue;
        }
        for (int64_t h = 0; h < H; h++) {
            float *p = c->scores;
            omni_matmul(false, true, n, keys, hd, scale, q + h * hd, 3 * d, ks + h * hd, d, 0.0f, p,
                        keys);
            for (int64_t i = 0; i < n; i++) {
                float *row = p + i * keys;
                bool wide = m->prefix && pre[i];
                for (int64_t j = len + i + 1; j < keys; j++)
                    if (!(wide && pre[j - len]))
                        row[j] = -INFINITY;
                softmax_row(row, keys);
            }
            omni_matmul(false, false, n, hd, keys, 1.0f, p, keys, vs + h * hd, d, 0.0f,
                        c->atty + s * W * d + h * hd, d);
        }
    }
}

omni_status omni_model_forward_cached(omni_model *m, omni_kv_cache *c, const omni_batch *b)
{
    omni_status st = check_step(m, c, b);
    if (st)
        return st;
    if (m->any_moe && !m->has_moe_hook)
        return omni_fail(OMNI_ERR_INTERNAL,
                         "model: the experiment has MoE blocks but no MoE layer is attached");
    const int64_t d = c->d, ff = c->ff, N = b->n_seq * b->context;
    omni_embed_forward(c->h, b, &m->pv, N, d, m->img_dim, m->aud_dim, &c->es);
    for (int64_t l = 0; l < m->L; l++) {
        const omni_block_view *w = &m->pl[l];
        omni_rmsnorm_forward(c->ln, c->rstd, c->h, w->attn_norm, N, d);
        omni_matmul_forward_mp(c->qkv, c->ln, w->wqkv, N, d, 3 * d, 0.0f);
        attention_cached(m, c, b, l);
        omni_matmul_forward_mp(c->h, c->atty, w->wo, N, d, d, 1.0f);
        omni_rmsnorm_forward(c->ln, c->rstd, c->h, w->ffn_norm, N, d);
        if (w->w1) {
            omni_swiglu_forward(c->h, c->h1, c->h3, c->ffa, c->ln, w->w1, w->w3, w->w2, N, d, ff);
        } else {
            if ((st = m->moe.forward(m->moe.ctx, l, c->ffo, c->ln, b, N)))
                return st;
            for (int64_t i = 0; i < N * d; i++)
                c->h[i] += c->ffo[i];
        }
    }
    for (int64_t s = 0; s < b->n_seq; s++)
        c->len[s] += c->valid[s];
    omni_rmsnorm_forward(c->ln, c->rstd, c->h, m->pv.out_norm, N, d);
    omni_matmul_forward_mp(c->logits, c->ln, m->pv.out_w, N, d, c->V, 0.0f);
    return OMNI_OK;
}
