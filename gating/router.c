/* The router, forward and backward: jitter, logits = x W_r, softmax, top-k, gates. */
#include "gating.h"

#include <math.h>
#include <stdio.h>

#include "ops.h"

int64_t omni_moe_capacity(int64_t k, double capacity_factor, int64_t n, int64_t n_experts)
{
    if (capacity_factor <= 0.0)
        return n;
    double c = ceil((double)k * capacity_factor * (double)n / (double)n_experts);
    return (int64_t)c;
}

static void jitter_stream(omni_rng *r, uint64_t seed, int64_t layer, int64_t step)
{
    char name[48];
    snprintf(name, sizeof name, "jitter/%02lld", (long long)layer);
    omni_rng_init(r, seed, name, (uint64_t)step);
}

void omni_router_jitter(float *xr, const float *x, float jitter, uint64_t seed, int64_t layer,
                        int64_t step, int64_t token_offset, const int64_t *rows, int64_t n,
                        int64_t d)
{
    omni_rng r;
    jitter_stream(&r, seed, layer, step);
    for (int64_t t = 0; t < n; t++)
        for (int64_t i = 0; i < d; i++) {
            uint64_t e = (uint64_t)((token_offset + (rows ? rows[t] : t)) * d + i);
            float u = 1.0f - jitter + 2.0f * jitter * omni_rng_uniform(&r, e);
            xr[t * d + i] = x[t * d + i] * u;
        }
}

void omni_router_jitter_backward(float *dx, const float *dxr, float jitter, uint64_t seed,
                                 int64_t layer, int64_t step, int64_t token_offset,
                                 const int64_t *rows, int64_t n, int64_t d)
{
    omni_rng r;
    jitter_stream(&r, seed, layer, step);
    for (int64_t t = 0; t < n; t++)
        for (int64_t i = 0; i < d; i++) {
            uint64_t e = (uint64_t)((token_offset + (rows ? rows[t] : t)) * d + i);
            float u = 1.0f - jitter + 2.0f * jitter * omni_rng_uniform(&r, e);
            dx[t * d + i] += dxr[t * d + i] * u;
        }
}

void omni_router_forward(float *logits, float *probs, float *lse, const float *x, const float *w,
                         int64_t n, int64_t d, int64_t n_experts)
{
    const int64_t E = n_experts;
    if (n == 0)
        return;
    omni_matmul_forward(logits, x, w, n, d, E, 0.0f);
    for (int64_t t = 0; t < n; t++) {
        const float *l = logits + t * E;
        float *p = probs + t * E;
        float mx = l[0];
        for (int64_t e = 1; e < E; e++)
            mx = l[e] > mx ? l[e] : mx;
        double sum = 0.0;
        for (int64_t e = 0; e < E; e++) {
            p[e] = expf(l[e] - mx);
            sum += (double)p[e];
        }
        float inv = (float)(1.0 / sum);
        for (int64_t e = 0; e < E; e++)
            p[e] *= inv;
        lse[t] = mx + (float)log(sum);
    }
}

void omni_router_topk(int32_t *expert, float *prob, float *gate, const float *logits,
                      const float *probs, const float *bias, int64_t n, int64_t n_experts,
                      int64_t k, bool normalize)
{
    const int64_t E = n_experts;
    for (int64_t t = 0; t < n; t++) {
        const float *l = logits + t * E;
        int32_t *ex = expert + t * k;
        /* Selection by repeated arg-max over the experts not yet chosen: k is small. A
         * strictly larger score wins, so ties go to the lower expert index. */
        for (int64_t c = 0; c < k; c++) {
            int32_t best = -1;
            float best_score = 0.0f;
            for (int64_t e = 0; e < E; e++) {
                bool taken = false;
                for (int64_t q = 0; q < c; q++)
                    taken |= ex[q] == (int32_t)e;
                if (taken)
                    continue;
                float s = l[e] + (bias ? bias[e] : 0.0f);
                if (best < 0 || s > best_score) {
                    best = (int32_t)e;
                    best_score = s;
                }
            }
            ex[c] = best;
        }
        double sum = 0.0;
        for (int64_t c = 0; c < k; c++) {
            prob[t * k + c] = probs[t * E + ex[c]];
            sum += (double)prob[t * k + c];
        }
        for (int64_t c = 0; c < k; c++)
            gate[t * k + c] = normalize ? (float)((double)prob[t * k + c] / sum) : prob[t * k + c];
    }
}

/* ---- backward --------------------------------------------------------------- */

void omni_router_gate_backward(float *dprobs, const float *dgate, const int32_t *expert,
                               const float *prob, int64_t n, int64_t n_experts, int64_t k,
                               bool normalize)
{
    const int64_t E = n_experts;
    for (int64_t t = 0; t < n; t++) {
        const float *dg = dgate + t * k, *p = prob + t * k;
        const int32_t *ex = expert + t * k;
        if (!normalize) {
            for (int64_t c = 0; c < k; c++)
                dprobs[t * E + ex[c]] += dg[c];
            continue;
        }
        /* g_c = p_c / S, S = sum_c p_c: dp_c = (dg_c - sum_c' dg_c' g_c') / S */
        double S = 0.0, dot = 0.0;
        for (int64_t c = 0; c < k; c++)
            S += (double)p[c];
        for (int64_t c = 0; c < k; c++)
            dot += (double)dg[c] * ((double)p[c] / S);
        for (int64_t c = 0; c < k; c++)
            dprobs[t * E + ex[c]] += (float)(((double)dg[c] - dot) / S);
    }
}

void omni_router_softmax_backward(float *dlogits, const float *dprobs, const float *probs,
                                  int64_t n, int64_t n_experts)
{
    const int64_t E = n_experts;
    for (int64_t t = 0; t < n; t++) {
        const float *p = probs + t * E, *dp = dprobs + t * E;
        double dot = 0.0;
        for (int64_t e = 0; e < E; e++)
            dot += (double)p[e] * (double)dp[e];
        for (int64_t e = 0; e < E; e++)
            dlogits[t * E + e] = p[e] * (dp[e] - (float)dot);
    }
}

void omni_router_backward(float *dxr, float *dw, const float *dlogits, const float *xr,
                          const float *w, int64_t n, int64_t d, int64_t n_experts)
{
    const int64_t E = n_experts;
    if (n == 0)
        return;
    omni_matmul(true, false, d, E, n, 1.0f, xr, d, dlogits, E, 1.0f, dw, E);
    omni_matmul(false, true, n, d, E, 1.0f, dlogits, E, w, E, 0.0f, dxr, d);
}
