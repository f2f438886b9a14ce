/*
 * Multi-head attention core: scores by omni_matmul per (window, head), the mask of
 * docs/design.md §2 (causal, never across packed samples, both ways inside a prefix under
 * attention: prefix, padding sees only itself), a row softmax over the allowed keys,
 * and the weighted sum of values by omni_matmul.
 */
#include "layers.h"

#include <math.h>
#include <string.h>

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

/* Softmax of row i of the scores over the allowed keys; masked entries become 0. The
 * scores are already scaled by 1/sqrt(hd). */
static void masked_softmax_row(float *row, const omni_batch *b, int64_t s, int64_t i, int64_t T,
                               bool prefix)
{
    int64_t pi = s * T + i;
    if (is_pad(b, pi)) { /* only itself */
        memset(row, 0, (size_t)T * sizeof(float));
        row[i] = 1.0f;
        return;
    }
    /* The allowed keys are j <= i of the same segment, and with prefix the later keys of
     * the same prefix; walk them once for the max, once for exp, once to normalise. */
    int32_t seg = b->segment[pi];
    bool wide = prefix && b->in_prefix[pi];
    float mx = -INFINITY;
    for (int64_t j = 0; j < T; j++) {
        int64_t pj = s * T + j;
        bool ok = b->segment[pj] == seg && b->kind[pj] != OMNI_POS_PAD &&
                  (j <= i || (wide && b->in_prefix[pj]));
        if (ok) {
            if (row[j] > mx)
                mx = row[j];
        } else {
            row[j] = -INFINITY;
        }
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < T; j++) {
        float e = row[j] == -INFINITY ? 0.0f : expf(row[j] - mx);
        row[j] = e;
        sum += e;
    }
    float inv = 1.0f / sum;
    for (int64_t j = 0; j < T; j++)
        row[j] *= inv;
}

void omni_attention_forward(float *out, float *att, const float *qkv, const omni_batch *b,
                            int64_t n_seq, int64_t T, int64_t d, int64_t n_heads, bool prefix)
{
    int64_t hd = d / n_heads, ld = 3 * d;
    float scale = 1.0f / sqrtf((float)hd);
    for (int64_t s = 0; s < n_seq; s++) {
        const float *base = qkv + s * T * ld;
        for (int64_t h = 0; h < n_heads; h++) {
            const float *q = base + h * hd, *k = base + d + h * hd, *v = base + 2 * d + h * hd;
            float *p = att + (s * n_heads + h) * T * T;
            omni_matmul(false, true, T, T, hd, scale, q, ld, k, ld, 0.0f, p, T);
            for (int64_t i = 0; i < T; i++)
                masked_softmax_row(p + i * T, b, s, i, T, prefix);
            omni_matmul(false, false, T, hd, T, 1.0f, p, T, v, ld, 0.0f, out + s * T * d + h * hd,
                        d);
        }
    }
}

/*
 * With Y = P V, P = softmax(S), S = scale Q K^T:
 * dV += P^T dY; dP = dY V^T; dS = P * (dP - rowsum(P * dP)); dQ += scale dS K;
 * dK += scale dS^T Q. Masked entries have P = 0, so dS is 0 there.
 */
void omni_attention_backward(float *dqkv, float *dscratch, const float *dout, const float *qkv,
                             const float *att, int64_t n_seq, int64_t T, int64_t d, int64_t n_heads)
{
    int64_t hd = d / n_heads, ld = 3 * d;
    float scale = 1.0f / sqrtf((float)hd);
    for (int64_t s = 0; s < n_seq; s++) {
        const float *base = qkv + s * T * ld;
        float *dbase = dqkv + s * T * ld;
        for (int64_t h = 0; h < n_heads; h++) {
            const float *q = base + h * hd, *k = base + d + h * hd, *v = base + 2 * d + h * hd;
            float *dq = dbase + h * hd, *dk = dbase + d + h * hd, *dv = dbase + 2 * d + h * hd;
            const float *p = att + (s * n_heads + h) * T * T;
            const float *dy = dout + s * T * d + h * hd;
            float *dp = dscratch;
            omni_matmul(true, false, T, hd, T, 1.0f, p, T, dy, d, 1.0f, dv, ld);
            omni_matmul(false, true, T, T, hd, 1.0f, dy, d, v, ld, 0.0f, dp, T);
            for (int64_t i = 0; i < T; i++) {
                const float *pr = p + i * T;
                float *dr = dp + i * T;
                float dot = 0.0f;
                for (int64_t j = 0; j < T; j++)
                    dot += pr[j] * dr[j];
                for (int64_t j = 0; j < T; j++)
                    dr[j] = pr[j] * (dr[j] - dot);
            }
            omni_matmul(false, false, T, hd, T, scale, dp, T, k, ld, 1.0f, dq, ld);
            omni_matmul(true, false, T, hd, T, scale, dp, T, q, ld, 1.0f, dk, ld);
        }
    }
}
