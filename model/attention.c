/*
 * Multi-head attention core, tiled with an online softmax (flash-style), forward and
 * backward. The mask of docs/design.md §2 (causal, never across packed samples, both ways
 * inside a prefix under attention: prefix, padding sees only itself) is applied exactly,
 * element by element, inside the tiles that can hold an allowed key; tiles that cannot
 * (above the causal diagonal, or in another packed sample) are never computed. Nothing
 * T x T is stored: forward keeps the log-sum-exp of each row, backward recomputes the
 * probabilities tile by tile from it (FlashAttention-2's scheme).
 *
 * Work is split over (window, head) pairs by OpenMP; each pair writes only its own
 * columns, and every sum runs in a fixed order inside one thread, so the result does not
 * depend on the number of threads. The tile products are written as row updates
 * (y[0..n) += a * x[0..n)), which vectorise without reordering any sum.
 */
#include "layers.h"

#include <math.h>
#include <omp.h>
#include <string.h>

/*
 * The tile code is compiled twice, for the baseline x86-64 the build targets (SSE2) and for
 * AVX-512, and the CPU picks at run time (GCC's target_clones). Both clones run the same
 * element-by-element operations in the same order: the build is ISO C (-std=c11, so no
 * contraction of a * b + c into a fused multiply-add), sums over an index are never
 * vectorised (no -ffast-math) and expf is libm's; so the clones agree to the bit, and the
 * wider one only does 16 lanes where the other does 4.
 */
#define TILE_CODE __attribute__((target_clones("avx512f", "default")))
#define TILE_STEP static inline __attribute__((always_inline))

#define BQ OMNI_ATTN_TILE /* query rows per tile */
#define BK OMNI_ATTN_TILE /* keys per tile */

/* 16 sums kept in a register (GCC vector extension: a zmm, or 4 xmm), updated lane by lane
 * as the scalar loops do (acc[j] = acc[j] + a * x[j]); a row of a tile's BK keys is KV of
 * them. Where a loop over rows adds into one output row, the vector code keeps 16 columns
 * of it in a register across the rows (the rows still in order), instead of storing and
 * reloading it for each row; the head size must then be a multiple of 16. */
typedef float keys_vec __attribute__((vector_size(4 * 16)));
_Static_assert(BK % 16 == 0 && BK / 16 <= 8, "a tile's keys are whole vectors of 16, at most 8");
#define KV (BK / 16)

/* *acc += a * x[0..16) */
TILE_STEP void add16(keys_vec *acc, float a, const float *x)
{
    keys_vec xv;
    memcpy(&xv, x, sizeof xv);
    *acc += a * xv;
}

/* acc[0..KV) += a * x[0..BK) */
TILE_STEP void keys_update(keys_vec *acc, float a, const float *x)
{
#pragma GCC unroll 8 /* whole: acc then lives in registers */
    for (int v = 0; v < KV; v++) {
        keys_vec xv;
        memcpy(&xv, x + 16 * v, sizeof xv);
        acc[v] += a * xv;
    }
}

static bool is_pad(const omni_batch *b, int64_t p)
{
    return b->kind[p] == OMNI_POS_PAD || b->segment[p] < 0;
}

bool omni_attention_allowed(const omni_batch *b, int64_t s, int64_t i, int64_t j, bool prefix)
{
    int64_t pi = s * b->context + i, pj = s * b->context + j;
    if (i == j)
        return true;
    if (is_pad(b, pi) || is_pad(b, pj) || b->segment[pi] != b->segment[pj])
        return false;
    if (j < i)
        return true;
    return prefix && b->in_prefix[pi] && b->in_prefix[pj];
}

int64_t omni_attention_scratch_floats(int64_t hd)
{
    /* S, P (or dP), K^T and V^T tiles, the output accumulator, row max, sum and D */
    return 2 * BQ * BK + 2 * hd * BK + BQ * hd + 3 * BQ;
}

/*
 * For every row p of window s, a range [lo[p], hi[p]) of keys outside which nothing is
 * allowed (inside it omni_attention_allowed decides). Packed samples are numbered in
 * increasing order along a window (the sampler's layout): a row's keys lie in its sample,
 * from its first position to the row (causal) or to the sample's last prefix position
 * (a prefix row under attention: prefix). A window whose sample numbers are not in
 * order gets whole-window ranges, which are slower but as exact.
 */
static void key_bounds(int32_t *lo, int32_t *hi, const omni_batch *b, int64_t s, bool prefix)
{
    const int64_t T = b->context, o = s * T;
    int32_t last = -1;
    bool ordered = true;
    for (int64_t i = 0; i < T; i++) {
        if (is_pad(b, o + i))
            continue;
        if (b->segment[o + i] < last)
            ordered = false;
        last = b->segment[o + i];
    }
    int64_t start = 0;
    while (start < T) {
        if (is_pad(b, o + start)) {
            lo[o + start] = (int32_t)start, hi[o + start] = (int32_t)start + 1;
            start++;
            continue;
        }
        /* one sample: [start, end), pads inside it only see themselves */
        int32_t seg = b->segment[o + start];
        int64_t end = start, pre_end = start;
        for (int64_t j = start; j < T && (is_pad(b, o + j) || b->segment[o + j] == seg); j++) {
            if (!is_pad(b, o + j)) {
                end = j + 1;
                if (b->in_prefix[o + j])
                    pre_end = j + 1;
            }
        }
        for (int64_t i = start; i < end; i++) {
            if (is_pad(b, o + i)) {
                lo[o + i] = (int32_t)i, hi[o + i] = (int32_t)i + 1;
            } else if (!ordered) {
                lo[o + i] = 0, hi[o + i] = (int32_t)T;
            } else {
                bool wide = prefix && b->in_prefix[o + i] && pre_end > i + 1;
                lo[o + i] = (int32_t)start, hi[o + i] = (int32_t)(wide ? pre_end : i + 1);
            }
        }
        start = end;
    }
}

/* The keys of a query tile [i0, i1): from the smallest lo to the largest hi. */
static void tile_keys(const int32_t *lo, const int32_t *hi, int64_t i0, int64_t i1, int64_t *k0,
                      int64_t *k1)
{
    int64_t a = lo[i0], z = hi[i0];
    for (int64_t i = i0 + 1; i < i1; i++) {
        if (lo[i] < a)
            a = lo[i];
        if (hi[i] > z)
            z = hi[i];
    }
    *k0 = a, *k1 = z;
}

/* dst[c * BK + j] = src[(j0 + j) * ld + c]: a K or V tile, transposed, zero-padded. */
TILE_STEP void load_transposed(float *dst, const float *src, int64_t ld, int64_t j0, int64_t nj,
                               int64_t hd)
{
    for (int64_t c = 0; c < hd; c++) {
        float *row = dst + c * BK;
        for (int64_t j = 0; j < nj; j++)
            row[j] = src[(j0 + j) * ld + c];
        for (int64_t j = nj; j < BK; j++)
            row[j] = 0.0f;
    }
}

/* s[r * BK + j] = scale * q_r . k_j for the nq rows of a tile (kt: K^T tile). */
TILE_STEP void tile_scores(float *s, const float *q, int64_t ld, const float *kt, int64_t nq,
                           int64_t hd, float scale)
{
    for (int64_t r = 0; r < nq; r++) {
        keys_vec acc[KV] = {{0}};
        const float *qr = q + r * ld;
        for (int64_t c = 0; c < hd; c++)
            keys_update(acc, qr[c], kt + c * BK);
        float *sr = s + r * BK;
#pragma GCC unroll 8
        for (int v = 0; v < KV; v++) {
            const keys_vec sv = scale * acc[v];
            memcpy(sr + 16 * v, &sv, sizeof sv);
        }
    }
}

/* Set the masked entries of a score tile to -inf. Rows [i0, i0 + nq), keys [j0, j0 + nk)
 * of window s. */
TILE_STEP void tile_mask(float *sc, const omni_batch *b, const int32_t *lo, const int32_t *hi,
                         int64_t s, int64_t i0, int64_t nq, int64_t j0, int64_t nk, bool prefix)
{
    const int64_t o = s * b->context;
    for (int64_t r = 0; r < nq; r++) {
        const int64_t i = i0 + r, pi = o + i;
        float *row = sc + r * BK;
        const bool pad = is_pad(b, pi);
        const int32_t seg = b->segment[pi];
        const bool wide = prefix && !pad && b->in_prefix[pi];
        for (int64_t c = 0; c < BK; c++) {
            const int64_t j = j0 + c, pj = o + j;
            bool ok;
            if (c >= nk || j < lo[pi] || j >= hi[pi])
                ok = false;
            else if (pad || j == i)
                ok = j == i;
            else
                ok = !is_pad(b, pj) && b->segment[pj] == seg &&
                     (j < i || (wide && b->in_prefix[pj]));
            if (!ok)
                row[c] = -INFINITY;
        }
    }
}

/* Forward of one (window, head): out rows of the head's columns, lse [T]. */
TILE_CODE static void head_forward(float *out, float *lse, const float *qkv, const omni_batch *b,
                                   const int32_t *lo, const int32_t *hi, int64_t s, int64_t h,
                                   int64_t T, int64_t d, int64_t hd, bool prefix, float *scratch)
{
    const int64_t ld = 3 * d;
    const float scale = 1.0f / sqrtf((float)hd);
    const float *q = qkv + s * T * ld + h * hd, *k = q + d, *v = q + 2 * d;
    float *sc = scratch, *kt = sc + 2 * BQ * BK, *vt = kt + hd * BK;
    float *acc = vt + hd * BK, *mx = acc + BQ * hd, *sum = mx + BQ;
    const int32_t *lw = lo + s * T, *hw = hi + s * T;
    for (int64_t i0 = 0; i0 < T; i0 += BQ) {
        const int64_t nq = T - i0 < BQ ? T - i0 : BQ;
        int64_t k0, k1;
        tile_keys(lw, hw, i0, i0 + nq, &k0, &k1);
        memset(acc, 0, (size_t)(nq * hd) * sizeof(float));
        for (int64_t r = 0; r < nq; r++)
            mx[r] = -INFINITY, sum[r] = 0.0f;
        for (int64_t j0 = k0; j0 < k1; j0 += BK) {
            const int64_t nk = k1 - j0 < BK ? k1 - j0 : BK;
            load_transposed(kt, k, ld, j0, nk, hd);
            tile_scores(sc, q + i0 * ld, ld, kt, nq, hd, scale);
            tile_mask(sc, b, lo, hi, s, i0, nq, j0, nk, prefix);
            for (int64_t r = 0; r < nq; r++) {
                float *row = sc + r * BK;
                float m = -INFINITY;
                for (int64_t c = 0; c < nk; c++)
                    if (row[c] > m)
                        m = row[c];
                if (m == -INFINITY)
                    continue; /* nothing allowed in this tile for this row */
                const float mnew = m > mx[r] ? m : mx[r];
                const float alpha = expf(mx[r] - mnew); /* 0 when mx[r] was -inf */
                float add = 0.0f;
                for (int64_t c = 0; c < BK; c++) {
                    const float e = row[c] == -INFINITY ? 0.0f : expf(row[c] - mnew);
                    row[c] = e;
                    add += e;
                }
                sum[r] = sum[r] * alpha + add;
                mx[r] = mnew;
                float *ar = acc + r * hd;
                if (alpha != 1.0f) {
#pragma omp simd
                    for (int64_t c = 0; c < hd; c++)
                        ar[c] *= alpha;
                }
                if (hd % 16 == 0) {
                    for (int64_t e = 0; e < hd; e += 16) {
                        keys_vec a;
                        memcpy(&a, ar + e, sizeof a);
                        for (int64_t c = 0; c < nk; c++)
                            if (row[c] != 0.0f)
                                add16(&a, row[c], v + (j0 + c) * ld + e);
                        memcpy(ar + e, &a, sizeof a);
                    }
                    continue;
                }
                for (int64_t c = 0; c < nk; c++) {
                    const float p = row[c];
                    if (p == 0.0f)
                        continue;
                    const float *vr = v + (j0 + c) * ld;
#pragma omp simd
                    for (int64_t e = 0; e < hd; e++)
                        ar[e] += p * vr[e];
                }
            }
        }
        for (int64_t r = 0; r < nq; r++) {
            /* every row sees at least itself, so sum[r] >= 1 */
            const float inv = 1.0f / sum[r];
            float *orow = out + (s * T + i0 + r) * d + h * hd;
            const float *ar = acc + r * hd;
            for (int64_t c = 0; c < hd; c++)
                orow[c] = ar[c] * inv;
            lse[i0 + r] = mx[r] + logf(sum[r]);
        }
    }
}

void omni_attention_forward(float *out, float *lse, const float *qkv, const omni_batch *b,
                            int64_t n_seq, int64_t T, int64_t d, int64_t n_heads, bool prefix,
                            const omni_attention_scratch *ws)
{
    const int64_t hd = d / n_heads, per = omni_attention_scratch_floats(hd);
    for (int64_t s = 0; s < n_seq; s++)
        key_bounds(ws->lo, ws->hi, b, s, prefix);
    const int64_t pairs = n_seq * n_heads;
    int nt = omp_get_max_threads();
    if (nt > ws->slots)
        nt = (int)ws->slots;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t ph = 0; ph < pairs; ph++) {
        const int64_t s = ph / n_heads, h = ph % n_heads;
        head_forward(out, lse + ph * T, qkv, b, ws->lo, ws->hi, s, h, T, d, hd, prefix,
                     ws->tile + (int64_t)omp_get_thread_num() * per);
    }
}

/*
 * Backward of one (window, head). With P = softmax(S) (recomputed from lse), S = scale
 * Q K^T, Y = P V and D_i = dY_i . Y_i: dV += P^T dY; dP = dY V^T; dS = P (dP - D);
 * dQ += scale dS K; dK += scale dS^T Q. Masked entries have P = 0, so dS = 0 there.
 */
TILE_CODE static void head_backward(float *dqkv, const float *dout, const float *out,
                                    const float *qkv, const float *lse, const omni_batch *b,
                                    const int32_t *lo, const int32_t *hi, int64_t s, int64_t h,
                                    int64_t T, int64_t d, int64_t hd, bool prefix, float *scratch)
{
    const int64_t ld = 3 * d;
    const float scale = 1.0f / sqrtf((float)hd);
    const float *q = qkv + s * T * ld + h * hd, *k = q + d, *v = q + 2 * d;
    float *dq = dqkv + s * T * ld + h * hd, *dk = dq + d, *dv = dq + 2 * d;
    const float *dy = dout + s * T * d + h * hd, *y = out + s * T * d + h * hd;
    float *sc = scratch, *dp = sc + BQ * BK, *kt = dp + BQ * BK, *vt = kt + hd * BK;
    float *dd = vt + hd * BK + BQ * hd;
    const int32_t *lw = lo + s * T, *hw = hi + s * T;
    for (int64_t i0 = 0; i0 < T; i0 += BQ) {
        const int64_t nq = T - i0 < BQ ? T - i0 : BQ;
        int64_t k0, k1;
        tile_keys(lw, hw, i0, i0 + nq, &k0, &k1);
        for (int64_t r = 0; r < nq; r++) {
            const float *a = dy + (i0 + r) * d, *c = y + (i0 + r) * d;
            float dot = 0.0f;
            for (int64_t e = 0; e < hd; e++)
                dot += a[e] * c[e];
            dd[r] = dot;
        }
        for (int64_t j0 = k0; j0 < k1; j0 += BK) {
            const int64_t nk = k1 - j0 < BK ? k1 - j0 : BK;
            load_transposed(kt, k, ld, j0, nk, hd);
            load_transposed(vt, v, ld, j0, nk, hd);
            tile_scores(sc, q + i0 * ld, ld, kt, nq, hd, scale);
            tile_mask(sc, b, lo, hi, s, i0, nq, j0, nk, prefix);
            /* P, then dP = dY V^T (as row updates over V^T) and dS in place of dP */
            for (int64_t r = 0; r < nq; r++) {
                float *pr = sc + r * BK, *dr = dp + r * BK;
                const float l = lse[i0 + r];
                bool any = false;
                for (int64_t c = 0; c < BK; c++) {
                    pr[c] = pr[c] == -INFINITY ? 0.0f : expf(pr[c] - l);
                    any |= pr[c] != 0.0f;
                }
                if (!any) {
                    memset(dr, 0, BK * sizeof(float));
                    continue;
                }
                keys_vec accv[KV] = {{0}};
                const float *dyr = dy + (i0 + r) * d;
                for (int64_t e = 0; e < hd; e++)
                    keys_update(accv, dyr[e], vt + e * BK);
                float accp[BK];
                memcpy(accp, accv, sizeof accp);
                for (int64_t c = 0; c < BK; c++)
                    dr[c] = pr[c] * (accp[c] - dd[r]);
            }
            /* dV_j += sum_r P_rj dY_r; dK_j += scale sum_r dS_rj Q_r, r in order */
            for (int64_t c = 0; c < nk && hd % 16 == 0; c++) {
                float *dvr = dv + (j0 + c) * ld, *dkr = dk + (j0 + c) * ld;
                for (int64_t e = 0; e < hd; e += 16) {
                    keys_vec av, ak;
                    memcpy(&av, dvr + e, sizeof av), memcpy(&ak, dkr + e, sizeof ak);
                    for (int64_t r = 0; r < nq; r++) {
                        const float p = sc[r * BK + c], g = scale * dp[r * BK + c];
                        if (p == 0.0f)
                            continue;
                        add16(&av, p, dy + (i0 + r) * d + e);
                        add16(&ak, g, q + (i0 + r) * ld + e);
                    }
                    memcpy(dvr + e, &av, sizeof av), memcpy(dkr + e, &ak, sizeof ak);
                }
            }
            for (int64_t c = 0; c < nk && hd % 16 != 0; c++) {
                float *dvr = dv + (j0 + c) * ld, *dkr = dk + (j0 + c) * ld;
                for (int64_t r = 0; r < nq; r++) {
                    const float p = sc[r * BK + c], g = scale * dp[r * BK + c];
                    if (p == 0.0f)
                        continue;
                    const float *dyr = dy + (i0 + r) * d, *qr = q + (i0 + r) * ld;
#pragma omp simd
                    for (int64_t e = 0; e < hd; e++) {
                        dvr[e] += p * dyr[e];
                        dkr[e] += g * qr[e];
                    }
                }
            }
            /* dQ_r += scale sum_j dS_rj K_j, j in order */
            for (int64_t r = 0; r < nq && hd % 16 == 0; r++) {
                float *dqr = dq + (i0 + r) * ld;
                for (int64_t e = 0; e < hd; e += 16) {
                    keys_vec aq;
                    memcpy(&aq, dqr + e, sizeof aq);
                    for (int64_t c = 0; c < nk; c++) {
                        const float g = scale * dp[r * BK + c];
                        if (sc[r * BK + c] != 0.0f)
                            add16(&aq, g, k + (j0 + c) * ld + e);
                    }
                    memcpy(dqr + e, &aq, sizeof aq);
                }
            }
            for (int64_t r = 0; r < nq && hd % 16 != 0; r++) {
                float *dqr = dq + (i0 + r) * ld;
                for (int64_t c = 0; c < nk; c++) {
                    const float g = scale * dp[r * BK + c];
                    if (sc[r * BK + c] == 0.0f)
                        continue;
                    const float *kr = k + (j0 + c) * ld;
#pragma omp simd
                    for (int64_t e = 0; e < hd; e++)
                        dqr[e] += g * kr[e];
                }
            }
        }
    }
}

void omni_attention_backward(float *dqkv, const float *dout, const float *out, const float *qkv,
                             const float *lse, const omni_batch *b, int64_t n_seq, int64_t T,
                             int64_t d, int64_t n_heads, bool prefix,
                             const omni_attention_scratch *ws)
{
    const int64_t hd = d / n_heads, per = omni_attention_scratch_floats(hd);
    for (int64_t s = 0; s < n_seq; s++)
        key_bounds(ws->lo, ws->hi, b, s, prefix);
    const int64_t pairs = n_seq * n_heads;
    int nt = omp_get_max_threads();
    if (nt > ws->slots)
        nt = (int)ws->slots;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t ph = 0; ph < pairs; ph++) {
        const int64_t s = ph / n_heads, h = ph % n_heads;
        head_backward(dqkv, dout, out, qkv, lse + ph * T, b, ws->lo, ws->hi, s, h, T, d, hd, prefix,
                      ws->tile + (int64_t)omp_get_thread_num() * per);
    }
}
