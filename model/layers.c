/*
 * The layers of the transformer other than attention: embeddings, RMSNorm, the SwiGLU
 * FFN and the cross-entropy loss. See layers.h for the conventions.
 */
#include "layers.h"

#include <math.h>
#include <omp.h>
#include <string.h>

/* ---- embeddings -------------------------------------------------------------- */

/* Positions of one patch kind, and their patch rows gathered into s->xg [m, dim]. */
static int64_t gather_patches(omni_embed_scratch *s, const omni_batch *b, int64_t n, uint8_t kind,
                              int64_t dim)
{
    int64_t m = 0;
    for (int64_t p = 0; p < n; p++) {
        if (b->kind[p] != kind)
            continue;
        s->idx[m] = p;
        memcpy(s->xg + m * dim, b->patch + p * b->patch_dim, (size_t)dim * sizeof(float));
        m++;
    }
    return m;
}

static void add_row(float *out, const float *row, int64_t d)
{
    for (int64_t i = 0; i < d; i++)
        out[i] += row[i];
}

static void embed_patches(float *out, const omni_batch *b, const float *w, const float *bias,
                          int64_t n, int64_t d, int64_t dim, uint8_t kind, omni_embed_scratch *s)
{
    int64_t m = gather_patches(s, b, n, kind, dim);
    omni_matmul_forward_mp(s->yg, s->xg, w, m, dim, d, 0.0f);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < m; i++) {
        float *o = out + s->idx[i] * d;
        const float *y = s->yg + i * d;
        for (int64_t c = 0; c < d; c++)
            o[c] += y[c] + bias[c];
    }
}

void omni_embed_forward(float *out, const omni_batch *b, const omni_param_view *p, int64_t n,
                        int64_t d, int64_t img_dim, int64_t aud_dim, omni_embed_scratch *s)
{
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < n; t++) {
        float *o = out + t * d;
        const float *pe = p->pos + (int64_t)b->pos[t] * d;
        uint8_t kind = b->kind[t];
        if (kind == OMNI_POS_TOKEN || kind == OMNI_POS_PAD) {
            int64_t id = kind == OMNI_POS_TOKEN ? b->token[t] : OMNI_TOK_PAD;
            const float *te = p->tok + id * d;
            for (int64_t c = 0; c < d; c++)
                o[c] = te[c] + pe[c];
        } else {
            const float *re = p->row + (int64_t)b->patch_row[t] * d;
            const float *ce = p->col + (int64_t)b->patch_col[t] * d;
            for (int64_t c = 0; c < d; c++)
                o[c] = pe[c] + re[c] + ce[c];
        }
    }
    if (img_dim > 0)
        embed_patches(out, b, p->img_w, p->img_b, n, d, img_dim, OMNI_POS_IMAGE, s);
    if (aud_dim > 0)
        embed_patches(out, b, p->aud_w, p->aud_b, n, d, aud_dim, OMNI_POS_AUDIO, s);
}

static void embed_patches_backward(float *dw, float *dbias, const float *dout, const omni_batch *b,
                                   int64_t n, int64_t d, int64_t dim, uint8_t kind,
                                   omni_embed_scratch *s)
{
    int64_t m = gather_patches(s, b, n, kind, dim);
    for (int64_t i = 0; i < m; i++) {
        const float *g = dout + s->idx[i] * d;
        memcpy(s->yg + i * d, g, (size_t)d * sizeof(float));
        add_row(dbias, g, d);
    }
    omni_matmul_backward_mp(NULL, dw, s->yg, s->xg, NULL, m, dim, d);
}

void omni_embed_backward(const omni_param_view *dp, const float *dout, const omni_batch *b,
                         int64_t n, int64_t d, int64_t img_dim, int64_t aud_dim,
                         omni_embed_scratch *s)
{
    /* Rows of the tables are shared by positions: each thread takes a slice of the
     * columns and adds every position into it in position order, as one thread would. */
#pragma omp parallel
    {
        int nt = omp_get_num_threads(), me = omp_get_thread_num();
        int64_t c0 = d * me / nt, c1 = d * (me + 1) / nt, w = c1 - c0;
        for (int64_t t = 0; t < n; t++) {
            const float *g = dout + t * d + c0;
            add_row(dp->pos + (int64_t)b->pos[t] * d + c0, g, w);
            uint8_t kind = b->kind[t];
            if (kind == OMNI_POS_TOKEN || kind == OMNI_POS_PAD) {
                int64_t id = kind == OMNI_POS_TOKEN ? b->token[t] : OMNI_TOK_PAD;
                add_row(dp->tok + id * d + c0, g, w);
            } else {
                add_row(dp->row + (int64_t)b->patch_row[t] * d + c0, g, w);
                add_row(dp->col + (int64_t)b->patch_col[t] * d + c0, g, w);
            }
        }
    }
    if (img_dim > 0)
        embed_patches_backward(dp->img_w, dp->img_b, dout, b, n, d, img_dim, OMNI_POS_IMAGE, s);
    if (aud_dim > 0)
        embed_patches_backward(dp->aud_w, dp->aud_b, dout, b, n, d, aud_dim, OMNI_POS_AUDIO, s);
}

/* ---- RMSNorm ----------------------------------------------------------------- */

void omni_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *g, int64_t n,
                          int64_t d)
{
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < n; t++) {
        const float *x = inp + t * d;
        float *o = out + t * d;
        float ss = 0.0f;
        for (int64_t i = 0; i < d; i++)
            ss += x[i] * x[i];
        float r = 1.0f / sqrtf(ss / (float)d + OMNI_RMS_EPS);
        for (int64_t i = 0; i < d; i++)
            o[i] = x[i] * r * g[i];
        rstd[t] = r;
    }
}

/* Rows per block of the bf16 norm: computed as the fp32 function computes them, into a
 * block of fp32 on the thread's stack, then rounded by the vector code. */
#define NORM_BLOCK 1024

void omni_rmsnorm_forward_bf16(uint16_t *out, float *rstd, const float *inp, const float *g,
                               int64_t n, int64_t d)
{
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < n; t++) {
        const float *x = inp + t * d;
        float ss = 0.0f;
        for (int64_t i = 0; i < d; i++)
            ss += x[i] * x[i];
        float r = 1.0f / sqrtf(ss / (float)d + OMNI_RMS_EPS);
        for (int64_t c = 0; c < d; c += NORM_BLOCK) {
            float o[NORM_BLOCK];
            const int64_t w = d - c < NORM_BLOCK ? d - c : NORM_BLOCK;
            for (int64_t i = 0; i < w; i++)
                o[i] = x[c + i] * r * g[c + i];
            omni_bf16_round(out + t * d + c, o, w);
        }
        rstd[t] = r;
    }
}

/* With y = g x r, r = (mean(x^2) + eps)^-1/2:
 * dx_j = r (g_j dy_j - x_j r^2 mean_i(g_i dy_i x_i)), dg_i += dy_i x_i r. */
void omni_rmsnorm_backward(float *dinp, float *dg, const float *dout, const float *inp,
                           const float *g, const float *rstd, int64_t n, int64_t d)
{
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int64_t t = 0; t < n; t++) {
            const float *x = inp + t * d;
            const float *dy = dout + t * d;
            float *dx = dinp + t * d;
            float r = rstd[t];
            float dot = 0.0f;
            for (int64_t i = 0; i < d; i++)
                dot += g[i] * dy[i] * x[i];
            float c = r * r * dot / (float)d;
            for (int64_t i = 0; i < d; i++)
                dx[i] += r * (g[i] * dy[i] - x[i] * c);
        }
        /* dg: each thread a slice of the columns, rows in order */
        int nt = omp_get_num_threads(), me = omp_get_thread_num();
        int64_t c0 = d * me / nt, c1 = d * (me + 1) / nt;
        for (int64_t t = 0; t < n; t++) {
            const float *x = inp + t * d, *dy = dout + t * d;
            float r = rstd[t];
            for (int64_t i = c0; i < c1; i++)
                dg[i] += dy[i] * x[i] * r;
        }
    }
}

/* ---- SwiGLU ------------------------------------------------------------------ */

void omni_swiglu_forward(float *out, float *h1, float *h3, float *a, const float *inp,
                         const float *w1, const float *w3, const float *w2, int64_t n, int64_t d,
                         int64_t ff)
{
    omni_matmul_forward_mp(h1, inp, w1, n, d, ff, 0.0f);
    omni_matmul_forward_mp(h3, inp, w3, n, d, ff, 0.0f);
    omni_swiglu_gate_forward(a, h1, h3, n * ff);
    if (out)
        omni_matmul_forward_mp(out, a, w2, n, ff, d, 1.0f);
}

void omni_swiglu_backward(float *dinp, float *dw1, float *dw3, float *dw2, float *scratch_a,
                          float *scratch_d, const float *dout, const float *inp, const float *h1,
                          const float *h3, const float *a, const float *w1, const float *w3,
                          const float *w2, int64_t n, int64_t d, int64_t ff)
{
    if (n == 0)
        return;
    float *dh1 = scratch_a, *da = scratch_d;
    /* dw2 += a^T dout; da = dout W2^T */
    omni_matmul_mp(true, false, ff, d, n, 1.0f, a, ff, dout, d, 1.0f, dw2, d, false);
    omni_matmul_mp(false, true, n, ff, d, 1.0f, dout, d, w2, d, 0.0f, da, ff, true);
    /* da's buffer then takes dh3 */
    omni_swiglu_gate_backward(dh1, da, da, h1, h3, n * ff);
    omni_matmul_backward_mp(dinp, dw1, dh1, inp, w1, n, d, ff);
    omni_matmul_backward_mp(dinp, dw3, da, inp, w3, n, d, ff);
}

void omni_swiglu_forward_bf16(float *out, float *h1, float *h3, uint16_t *a, const uint16_t *inp,
                              const float *w1, const float *w3, const float *w2, int64_t n,
                              int64_t d, int64_t ff)
{
    omni_matmul_forward_bf16(h1, inp, w1, n, d, ff, 0.0f);
    omni_matmul_forward_bf16(h3, inp, w3, n, d, ff, 0.0f);
    omni_swiglu_gate_forward_bf16(a, h1, h3, n * ff);
    if (out)
        omni_matmul_forward_bf16(out, a, w2, n, ff, d, 1.0f);
}

void omni_swiglu_backward_bf16(float *dinp, float *dw1, float *dw3, float *dw2, uint16_t *scratch_h,
                               float *scratch_d, const float *dout, const uint16_t *inp,
                               const float *h1, const float *h3, const uint16_t *a, const float *w1,
                               const float *w3, const float *w2, int64_t n, int64_t d, int64_t ff)
{
    if (n == 0)
        return;
    float *da = scratch_d;
    uint16_t *dh1 = scratch_h, *dh3 = scratch_h + n * ff;
    /* dout rounded once for both products: dw2 += a^T dout; da = dout W2^T */
    uint16_t *g = omni_bf16_scratch(OMNI_BF16_SLOT_DY, n * d);
    omni_bf16_round_rows(g, dout, n, d, d);
    omni_matmul_bf16(true, false, ff, d, n, 1.0f, a, ff, g, d, 1.0f, dw2, d);
    omni_matmul_bf16(false, true, n, ff, d, 1.0f, g, d, omni_bf16_weight(w2, ff, d, d), d, 0.0f, da,
                     ff);
    omni_swiglu_gate_backward_bf16(dh1, dh3, da, h1, h3, n * ff);
    omni_matmul_backward_bf16(dinp, dw1, dh1, inp, w1, n, d, ff);
    omni_matmul_backward_bf16(dinp, dw3, dh3, inp, w3, n, d, ff);
}

/* ---- cross-entropy ------------------------------------------------------------- */

static float weight_of(const omni_batch *b, const float *loss_weight, int64_t t)
{
    return b->task[t] >= 0 ? loss_weight[b->task[t]] : 1.0f;
}

void omni_xent_forward(double *loss, float *probs, double *rows, const float *logits,
                       const omni_batch *b, const float *loss_weight, int64_t n, int64_t V,
                       omni_model_metrics *metrics)
{
    /* rows in parallel, each row's CE and hit kept; then summed in row order */
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < n; t++) {
        if (!b->loss_mask[t])
            continue; /* no loss, no metric: skip the softmax */
        const float *z = logits + t * V;
        float *pr = probs + t * V;
        float mx = z[0];
        int64_t arg = 0;
        for (int64_t v = 1; v < V; v++)
            if (z[v] > mx)
                mx = z[v], arg = v;
        float se = 0.0f;
        for (int64_t v = 0; v < V; v++) {
            pr[v] = expf(z[v] - mx);
            se += pr[v];
        }
        float inv = 1.0f / se;
        for (int64_t v = 0; v < V; v++)
            pr[v] *= inv;
        rows[2 * t] = (double)mx + log((double)se) - (double)z[b->target[t]];
        rows[2 * t + 1] = arg == b->target[t];
    }
    double sum = 0.0;
    for (int64_t t = 0; t < n; t++) {
        if (!b->loss_mask[t])
            continue;
        double ce = rows[2 * t];
        sum += (double)weight_of(b, loss_weight, t) * ce;
        if (metrics && b->task[t] >= 0) {
            int32_t k = b->task[t];
            metrics->ce_sum[k] += ce;
            metrics->tokens[k]++;
            metrics->correct[k] += rows[2 * t + 1] > 0.0;
        }
    }
    *loss = b->loss_norm > 0.0 ? sum / b->loss_norm : 0.0;
}

void omni_xent_backward(float *dlogits, const float *probs, const omni_batch *b,
                        const float *loss_weight, int64_t n, int64_t V)
{
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < n; t++) {
        float *dz = dlogits + t * V;
        if (!b->loss_mask[t] || b->loss_norm <= 0.0) {
            memset(dz, 0, (size_t)V * sizeof(float));
            continue;
        }
        const float *pr = probs + t * V;
        float scale = (float)((double)weight_of(b, loss_weight, t) / b->loss_norm);
        for (int64_t v = 0; v < V; v++)
            dz[v] = scale * pr[v];
        dz[b->target[t]] -= scale;
    }
}
