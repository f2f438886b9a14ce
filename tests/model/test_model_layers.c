/*
 * model: finite-difference checks of every layer's backward. Each check perturbs float32
 * inputs by +-h, evaluates the layer in float32 with the scalar objective
 * f = sum_i r_i out_i (r fixed, random) accumulated in double, and compares the central
 * difference with the analytic gradient from backward (called with dout = r).
 * Tolerances (stated per check): |analytic - numeric| <= atol + rtol * max(|.|): h is
 * 1e-2 for O(1) inputs, so float32 rounding of f (about 1e-7 * |f| / h) and the O(h^2)
 * truncation both stay below 1e-3 relative; we allow 2e-2 relative plus 1e-3 absolute
 * for the layers with exp/rsqrt and 1e-2 relative for the linear ones.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "layers.h"

static void fill(float *p, int64_t n, const char *name, float scale)
{
    omni_rng r;
    omni_rng_init(&r, 11, name, 0);
    omni_rng_fill_normal(&r, 0, n, 0.0f, scale, p);
}

static double dot(const float *a, const float *r, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += (double)a[i] * (double)r[i];
    return s;
}

/* ---- RMSNorm ------------------------------------------------------------------ */

typedef struct {
    int64_t n, d;
    float *x, *g, *out, *rstd, *r;
} norm_case;

static double norm_f(void *ctx)
{
    norm_case *c = ctx;
    omni_rmsnorm_forward(c->out, c->rstd, c->x, c->g, c->n, c->d);
    return dot(c->out, c->r, c->n * c->d);
}

Test(model, rmsnorm_backward_matches_finite_differences)
{
    norm_case c = {.n = 3, .d = 8};
    int64_t nd = c.n * c.d;
    float buf[5 * 24 + 8];
    c.x = buf, c.out = buf + nd, c.r = buf + 2 * nd, c.rstd = buf + 3 * nd, c.g = buf + 4 * nd;
    fill(c.x, nd, "x", 1.0f), fill(c.r, nd, "r", 1.0f), fill(c.g, c.d, "g", 1.0f);
    float dx[24] = {0}, dg[8] = {0};
    norm_f(&c);
    omni_rmsnorm_backward(dx, dg, c.r, c.x, c.g, c.rstd, c.n, c.d);
    fixture_check_grad("rmsnorm dx", c.x, dx, nd, 1, norm_f, &c, 1e-2f, 1e-3, 2e-2);
    fixture_check_grad("rmsnorm dg", c.g, dg, c.d, 1, norm_f, &c, 1e-2f, 1e-3, 2e-2);
}

/* ---- SwiGLU ------------------------------------------------------------------- */

typedef struct {
    int64_t n, d, ff;
    float *x, *w1, *w3, *w2, *out, *h1, *h3, *a, *r;
} ffn_case;

static double ffn_f(void *ctx)
{
    ffn_case *c = ctx;
    memset(c->out, 0, (size_t)(c->n * c->d) * sizeof(float));
    omni_swiglu_forward(c->out, c->h1, c->h3, c->a, c->x, c->w1, c->w3, c->w2, c->n, c->d, c->ff);
    return dot(c->out, c->r, c->n * c->d);
}

Test(model, swiglu_backward_matches_finite_differences)
{
    ffn_case c = {.n = 4, .d = 6, .ff = 10};
    int64_t nd = c.n * c.d, df = c.d * c.ff, nf = c.n * c.ff;
    float *m = calloc((size_t)(3 * nd + 3 * df + 5 * nf + nd + 3 * df), sizeof(float));
    c.x = m, c.out = m + nd, c.r = m + 2 * nd, c.w1 = m + 3 * nd, c.w3 = c.w1 + df;
    c.w2 = c.w3 + df, c.h1 = c.w2 + df, c.h3 = c.h1 + nf, c.a = c.h3 + nf;
    float *sa = c.a + nf, *sd = sa + nf, *dx = sd + nf, *dw1 = dx + nd, *dw3 = dw1 + df;
    float *dw2 = dw3 + df;
    fill(c.x, nd, "x", 1.0f), fill(c.r, nd, "r", 1.0f);
    fill(c.w1, df, "w1", 0.5f), fill(c.w3, df, "w3", 0.5f), fill(c.w2, df, "w2", 0.5f);
    ffn_f(&c);
    omni_swiglu_backward(dx, dw1, dw3, dw2, sa, sd, c.r, c.x, c.h1, c.h3, c.a, c.w1, c.w3, c.w2,
                         c.n, c.d, c.ff);
    fixture_check_grad("swiglu dx", c.x, dx, nd, 1, ffn_f, &c, 1e-2f, 1e-3, 2e-2);
    fixture_check_grad("swiglu dw1", c.w1, dw1, df, 1, ffn_f, &c, 1e-2f, 1e-3, 2e-2);
    fixture_check_grad("swiglu dw3", c.w3, dw3, df, 1, ffn_f, &c, 1e-2f, 1e-3, 2e-2);
    fixture_check_grad("swiglu dw2", c.w2, dw2, df, 1, ffn_f, &c, 1e-2f, 1e-3, 1e-2);
    free(m);
}

/* ---- attention ---------------------------------------------------------------- */

/* A tile scratch for the attention calls of these tests (freed by attn_scratch_free). */
static omni_attention_scratch attn_scratch(int64_t n, int64_t hd)
{
    omni_attention_scratch w = {.slots = omp_get_num_procs() > omp_get_max_threads()
                                             ? omp_get_num_procs()
                                             : omp_get_max_threads()};
    w.tile = calloc((size_t)(w.slots * omni_attention_scratch_floats(hd)), sizeof(float));
    w.lo = calloc((size_t)(2 * n), sizeof(int32_t));
    cr_assert(w.tile && w.lo);
    w.hi = w.lo + n;
    return w;
}

static void attn_scratch_free(omni_attention_scratch *w)
{
    free(w->tile), free(w->lo);
}

/*
 * The reference: the whole T x T probability matrix of each (window, head) in double,
 * straight from the definition (omni_attention_allowed, softmax, P V), and its backward.
 * p [n_seq, H, T, T] gets the probabilities.
 */
static void naive_attention(double *out, double *dqkv, double *p, const float *qkv,
                            const float *dout, const omni_batch *b, int64_t d, int64_t H,
                            bool prefix)
{
    const int64_t T = b->context, hd = d / H, ld = 3 * d;
    const double scale = 1.0 / sqrt((double)hd);
    double *dp = calloc((size_t)T, sizeof(double));
    cr_assert(dp);
    for (int64_t s = 0; s < b->n_seq; s++)
        for (int64_t h = 0; h < H; h++) {
            const float *q = qkv + s * T * ld + h * hd, *k = q + d, *v = q + 2 * d;
            double *pr = p + (s * H + h) * T * T;
            for (int64_t i = 0; i < T; i++) {
                double mx = -HUGE_VAL, sum = 0.0;
                for (int64_t j = 0; j < T; j++) {
                    double sc = 0.0;
                    for (int64_t c = 0; c < hd; c++)
                        sc += (double)q[i * ld + c] * (double)k[j * ld + c];
                    pr[i * T + j] =
                        omni_attention_allowed(b, s, i, j, prefix) ? sc * scale : -HUGE_VAL;
                    mx = fmax(mx, pr[i * T + j]);
                }
                for (int64_t j = 0; j < T; j++)
                    sum += pr[i * T + j] = exp(pr[i * T + j] - mx);
                for (int64_t j = 0; j < T; j++)
                    pr[i * T + j] /= sum;
                for (int64_t c = 0; c < hd; c++) {
                    double y = 0.0;
                    for (int64_t j = 0; j < T; j++)
                        y += pr[i * T + j] * (double)v[j * ld + c];
                    out[(s * T + i) * d + h * hd + c] = y;
                }
            }
            if (!dqkv)
                continue;
            double *dq = dqkv + s * T * ld + h * hd, *dk = dq + d, *dv = dq + 2 * d;
            const float *dy = dout + s * T * d + h * hd;
            for (int64_t i = 0; i < T; i++) {
                double dot = 0.0;
                for (int64_t j = 0; j < T; j++) {
                    dp[j] = 0.0;
                    for (int64_t c = 0; c < hd; c++)
                        dp[j] += (double)dy[i * d + c] * (double)v[j * ld + c];
                    dot += pr[i * T + j] * dp[j];
                }
                for (int64_t j = 0; j < T; j++) {
                    double ds = pr[i * T + j] * (dp[j] - dot) * scale;
                    for (int64_t c = 0; c < hd; c++) {
                        dv[j * ld + c] += pr[i * T + j] * (double)dy[i * d + c];
                        dq[i * ld + c] += ds * (double)k[j * ld + c];
                        dk[j * ld + c] += ds * (double)q[i * ld + c];
                    }
                }
            }
        }
    free(dp);
}

typedef struct {
    const omni_batch *b;
    int64_t d, H;
    bool prefix;
    float *qkv, *out, *lse, *r;
    omni_attention_scratch w;
} attn_case;

static double attn_f(void *ctx)
{
    attn_case *c = ctx;
    omni_attention_forward(c->out, c->lse, c->qkv, c->b, c->b->n_seq, c->b->context, c->d, c->H,
                           c->prefix, &c->w);
    return dot(c->out, c->r, c->b->n_seq * c->b->context * c->d);
}

/* max |a - ref| / max |ref| */
static double rel_err(const float *a, const double *ref, int64_t n)
{
    double err = 0.0, mag = 0.0;
    for (int64_t i = 0; i < n; i++) {
        err = fmax(err, fabs((double)a[i] - ref[i]));
        mag = fmax(mag, fabs(ref[i]));
    }
    return err / fmax(mag, 1e-30);
}

/* Forward and backward against the reference (float32 against double: 1e-5 relative to
 * the largest entry; a wrong mask or scale is off by 1e-2 or more). */
static void check_against_naive(attn_case *c, const float *dqkv)
{
    const omni_batch *b = c->b;
    int64_t n = b->n_seq * b->context, T = b->context;
    double *ro = calloc((size_t)(n * c->d), sizeof(double));
    double *rd = calloc((size_t)(n * 3 * c->d), sizeof(double));
    double *rp = calloc((size_t)(b->n_seq * c->H * T * T), sizeof(double));
    cr_assert(ro && rd && rp);
    naive_attention(ro, rd, rp, c->qkv, c->r, b, c->d, c->H, c->prefix);
    double eo = rel_err(c->out, ro, n * c->d), ed = rel_err(dqkv, rd, n * 3 * c->d);
    cr_assert_lt(eo, 1e-5, "attention output off the reference by %g", eo);
    cr_assert_lt(ed, 1e-5, "attention dqkv off the reference by %g", ed);
    free(ro), free(rd), free(rp);
}

static void check_attention(bool prefix)
{
    omni_batch b = fixture_mixed_batch(); /* two packed samples, a prefix, padding */
    attn_case c = {.b = &b, .d = 8, .H = 2, .prefix = prefix};
    int64_t n = b.n_seq * b.context;
    float *m =
        calloc((size_t)(n * 3 * c.d * 2 + 2 * n * c.d + b.n_seq * c.H * b.context), sizeof(float));
    cr_assert(m);
    c.w = attn_scratch(n, c.d / c.H);
    c.qkv = m, c.out = m + n * 3 * c.d, c.r = c.out + n * c.d, c.lse = c.r + n * c.d;
    float *dqkv = c.lse + b.n_seq * c.H * b.context;
    fill(c.qkv, n * 3 * c.d, "qkv", 1.0f), fill(c.r, n * c.d, "r", 1.0f);
    attn_f(&c);
    omni_attention_backward(dqkv, c.r, c.out, c.qkv, c.lse, &b, b.n_seq, b.context, c.d, c.H,
                            prefix, &c.w);
    check_against_naive(&c, dqkv);
    fixture_check_grad(prefix ? "prefix attention dqkv" : "causal attention dqkv", c.qkv, dqkv,
                       n * 3 * c.d, 1, attn_f, &c, 1e-2f, 1e-3, 2e-2);
    attn_scratch_free(&c.w);
    free(m);
    fixture_batch_free(&b);
}

Test(model, attention_causal_packed_padding_matches_finite_differences)
{
    check_attention(false);
}

Test(model, attention_prefix_matches_finite_differences)
{
    check_attention(true);
}

/*
 * A long batch whose tiles matter: windows of 150 positions (3 tiles, the last partial)
 * packing samples of 70, 1, 50 and 29 positions with prefixes of various lengths (one
 * crossing a tile border), a window of one long sample, and a window whose samples
 * are out of order and whose padding sits in the middle.
 */
static omni_batch long_batch(void)
{
    const int64_t T = 150;
    omni_batch b = fixture_batch_alloc(3, T, 0);
    const int64_t len0[] = {70, 1, 50, 29}, pre0[] = {66, 0, 3, 29};
    int64_t t = 0;
    for (int k = 0; k < 4; k++)
        for (int64_t i = 0; i < len0[k]; i++, t++) {
            b.kind[t] = OMNI_POS_TOKEN, b.segment[t] = k, b.pos[t] = (int32_t)i;
            b.in_prefix[t] = i < pre0[k];
        }
    for (int64_t i = 0; i < T; i++) {
        int64_t p = T + i;
        b.kind[p] = OMNI_POS_TOKEN, b.segment[p] = 0, b.pos[p] = (int32_t)i;
        b.in_prefix[p] = i < 100;
    }
    for (int64_t i = 0; i < T; i++) {
        int64_t p = 2 * T + i;
        bool pad = i >= 60 && i < 80;
        b.kind[p] = pad ? OMNI_POS_PAD : OMNI_POS_TOKEN;
        b.segment[p] = pad ? -1 : i < 60 ? 1 : i < 120 ? 0 : 2;
        b.in_prefix[p] = !pad && (i % 60) < 10;
    }
    return b;
}

static void check_long_attention(bool prefix)
{
    omni_batch b = long_batch();
    attn_case c = {.b = &b, .d = 32, .H = 2, .prefix = prefix};
    int64_t n = b.n_seq * b.context;
    float *m =
        calloc((size_t)(n * 3 * c.d * 2 + 2 * n * c.d + b.n_seq * c.H * b.context), sizeof(float));
    cr_assert(m);
    c.w = attn_scratch(n, c.d / c.H);
    c.qkv = m, c.out = m + n * 3 * c.d, c.r = c.out + n * c.d, c.lse = c.r + n * c.d;
    float *dqkv = c.lse + b.n_seq * c.H * b.context;
    fill(c.qkv, n * 3 * c.d, "qkv", 1.0f), fill(c.r, n * c.d, "r", 1.0f);
    attn_f(&c);
    omni_attention_backward(dqkv, c.r, c.out, c.qkv, c.lse, &b, b.n_seq, b.context, c.d, c.H,
                            prefix, &c.w);
    check_against_naive(&c, dqkv);
    attn_scratch_free(&c.w);
    free(m);
    fixture_batch_free(&b);
}

Test(model, attention_tiles_match_the_full_matrix_causal)
{
    check_long_attention(false);
}

Test(model, attention_tiles_match_the_full_matrix_prefix)
{
    check_long_attention(true);
}

Test(model, attention_mask_follows_segments_prefix_and_padding)
{
    omni_batch b = fixture_mixed_batch();
    /* window 0: image sample at 0..8 (prefix 0..5), text sample at 9..11 (prefix 9) */
    cr_assert(omni_attention_allowed(&b, 0, 3, 1, false));
    cr_assert(!omni_attention_allowed(&b, 0, 1, 3, false));
    cr_assert(omni_attention_allowed(&b, 0, 1, 3, true));  /* both in the prefix */
    cr_assert(omni_attention_allowed(&b, 0, 0, 5, true));  /* SEP ends the prefix */
    cr_assert(!omni_attention_allowed(&b, 0, 1, 6, true)); /* 6 carries loss */
    cr_assert(!omni_attention_allowed(&b, 0, 6, 7, true));
    cr_assert(!omni_attention_allowed(&b, 0, 10, 8, false)); /* never across samples */
    cr_assert(!omni_attention_allowed(&b, 0, 10, 8, true));
    cr_assert(omni_attention_allowed(&b, 0, 10, 9, false));
    /* window 1: padding from 7 on sees only itself and is seen by no one */
    cr_assert(omni_attention_allowed(&b, 1, 8, 8, false));
    cr_assert(!omni_attention_allowed(&b, 1, 8, 7, false));
    cr_assert(!omni_attention_allowed(&b, 1, 9, 8, true));
    for (int64_t j = 7; j < 12; j++)
        cr_assert(!omni_attention_allowed(&b, 1, 6, j, true));
    fixture_batch_free(&b);
}

/* ---- embeddings --------------------------------------------------------------- */

typedef struct {
    const omni_batch *b;
    omni_param_view p;
    int64_t d;
    omni_embed_scratch s;
    float *out, *r;
} embed_case;

static double embed_f(void *ctx)
{
    embed_case *c = ctx;
    int64_t n = c->b->n_seq * c->b->context;
    omni_embed_forward(c->out, c->b, &c->p, n, c->d, 4, 4, &c->s);
    return dot(c->out, c->r, n * c->d);
}

Test(model, embeddings_backward_matches_finite_differences)
{
    omni_batch b = fixture_mixed_batch();
    omni_data_dims dims = fixture_dims();
    const int64_t d = 6, n = b.n_seq * b.context, V = dims.vocab;
    /* Tables sized like the model's: tok [V,d], img/aud [4,d] + [d], row/col [2,d],
     * pos [12,d]. */
    const int64_t sizes[8] = {V * d, 4 * d, d, 4 * d, d, 2 * d, 2 * d, 12 * d};
    int64_t total = 0;
    for (int i = 0; i < 8; i++)
        total += sizes[i];
    float *w = calloc((size_t)total, sizeof(float)), *g = calloc((size_t)total, sizeof(float));
    float *io = calloc((size_t)(2 * n * d + n * 4 + n * d), sizeof(float));
    int64_t *idx = calloc((size_t)n, sizeof(int64_t));
    fill(w, total, "embed", 1.0f);
    embed_case c = {.b = &b, .d = d};
    float **pw[8] = {&c.p.tok,   &c.p.img_w, &c.p.img_b, &c.p.aud_w,
                     &c.p.aud_b, &c.p.row,   &c.p.col,   &c.p.pos};
    omni_param_view gv = {0};
    float **pg[8] = {&gv.tok,   &gv.img_w, &gv.img_b, &gv.aud_w,
                     &gv.aud_b, &gv.row,   &gv.col,   &gv.pos};
    const char *names[8] = {"tok", "img_w", "img_b", "aud_w", "aud_b", "row", "col", "pos"};
    for (int i = 0, off = 0; i < 8; off += (int)sizes[i], i++)
        *pw[i] = w + off, *pg[i] = g + off;
    c.out = io, c.r = io + n * d, c.s.xg = io + 2 * n * d, c.s.yg = c.s.xg + n * 4, c.s.idx = idx;
    fill(c.r, n * d, "r", 1.0f);
    embed_f(&c);
    omni_embed_backward(&gv, c.r, &b, n, d, 4, 4, &c.s);
    for (int i = 0; i < 8; i++)
        fixture_check_grad(names[i], *pw[i], *pg[i], sizes[i], 1, embed_f, &c, 1e-2f, 1e-3, 1e-2);
    /* An unused token row gets no gradient; <pad> gets the padding's. */
    cr_assert_eq(gv.tok['c' * d], 0.0f);
    cr_assert_neq(gv.tok[OMNI_TOK_PAD * d], 0.0f);
    free(w), free(g), free(io), free(idx);
    fixture_batch_free(&b);
}

/* ---- head and loss ------------------------------------------------------------ */

typedef struct {
    const omni_batch *b;
    int64_t V;
    float *logits, *probs;
    double *rows;
    float w[OMNI_MAX_TASKS];
} xent_case;

static double xent_f(void *ctx)
{
    xent_case *c = ctx;
    double loss;
    omni_xent_forward(&loss, c->probs, c->rows, c->logits, c->b, c->w, c->b->n_seq * c->b->context,
                      c->V, NULL);
    return loss;
}

Test(model, cross_entropy_with_loss_weights_matches_finite_differences)
{
    omni_batch b = fixture_mixed_batch();
    const int64_t n = b.n_seq * b.context, V = fixture_dims().vocab;
    xent_case c = {.b = &b, .V = V, .w = {1.0f, 0.5f}};
    c.logits = calloc((size_t)(n * V), sizeof(float));
    c.probs = calloc((size_t)(n * V), sizeof(float));
    c.rows = calloc((size_t)(2 * n), sizeof(double));
    float *dl = calloc((size_t)(n * V), sizeof(float));
    fill(c.logits, n * V, "logits", 2.0f);
    omni_model_metrics met;
    memset(&met, 0, sizeof met);
    double loss;
    omni_xent_forward(&loss, c.probs, c.rows, c.logits, &b, c.w, n, V, &met);
    cr_assert_eq(met.tokens[0], 3);
    cr_assert_eq(met.tokens[1], 4);
    cr_assert_float_eq(loss, (met.ce_sum[0] + 0.5 * met.ce_sum[1]) / 7.0, 1e-9);
    omni_xent_backward(dl, c.probs, &b, c.w, n, V);
    /* Positions without loss have no gradient; check the loss rows densely around the
     * target and sparsely elsewhere (V is 1285). */
    for (int64_t p = 0; p < n; p++) {
        float *row = c.logits + p * V;
        if (!b.loss_mask[p]) {
            for (int64_t v = 0; v < V; v++)
                cr_assert_eq(dl[p * V + v], 0.0f);
            continue;
        }
        fixture_check_grad("xent dlogits", row, dl + p * V, V, 37, xent_f, &c, 1e-2f, 1e-5, 2e-2);
        int64_t tgt = b.target[p];
        fixture_check_grad("xent dlogits[target]", row + tgt, dl + p * V + tgt, 1, 1, xent_f, &c,
                           1e-2f, 1e-5, 2e-2);
    }
    free(c.logits), free(c.probs), free(c.rows), free(dl);
    fixture_batch_free(&b);
}
