/*
 * LIMoE's per-modality entropy losses (moe.entropy; Mustafa et al. 2022): the local loss
 * (mean entropy of a token's routing: pushes each token to few experts) and the global one
 * (minus the entropy of the modality's mean routing, while below a threshold: keeps a
 * modality from collapsing onto few experts), from sums over the global batch, and their
 * gradients. The modality of a token is the MoE layer's (omni_modality, gating.h).
 */
#include "gating.h"

#include <math.h>

void omni_router_sums_add_modality(omni_router_sums *s, const float *logits, const float *probs,
                                   const float *lse, const int32_t *mod, int64_t n)
{
    const int64_t E = s->n_experts;
    for (int64_t t = 0; t < n; t++) {
        int32_t m = mod[t];
        if (m < 0 || m >= s->n_modalities)
            continue;
        const float *p = probs + t * E, *l = logits + t * E;
        double pl = 0.0;
        for (int64_t e = 0; e < E; e++) {
            s->mod_prob[m * E + e] += (double)p[e];
            pl += (double)p[e] * (double)l[e];
        }
        /* H = lse - sum_e p_e l_e (no logarithm per expert); >= 0 up to rounding */
        double h = (double)lse[t] - pl;
        s->mod_entropy[m] += h > 0.0 ? h : 0.0;
        s->mod_tokens[m] += 1.0;
    }
}

/* The entropy of modality m's mean routing distribution; *mean gets log(p_m,e) per
 * expert when not NULL (log of a vanishing mean: of the smallest positive double). */
static double mean_entropy(const omni_router_sums *s, int64_t m, double *logmean)
{
    const int64_t E = s->n_experts;
    double T = s->mod_tokens[m], h = 0.0;
    for (int64_t e = 0; e < E; e++) {
        double p = s->mod_prob[m * E + e] / T;
        double lp = log(p > 0.0 ? p : 1e-300);
        if (logmean)
            logmean[e] = lp;
        h -= p > 0.0 ? p * lp : 0.0;
    }
    return h;
}

void omni_router_entropy_losses(const omni_router_sums *s, double threshold, double *local,
                                double *global)
{
    *local = 0.0;
    *global = 0.0;
    for (int64_t m = 0; m < s->n_modalities; m++) {
        double T = s->mod_tokens[m];
        if (!(T > 0.0))
            continue;
        *local += s->mod_entropy[m] / T;
        double h = mean_entropy(s, m, NULL);
        if (h < threshold)
            *global -= h;
    }
}

void omni_router_entropy_backward(float *dprobs, const float *logits, const float *lse,
                                  const int32_t *mod, const omni_router_sums *s, double c_local,
                                  double c_global, double threshold, int64_t n, double *scratch)
{
    const int64_t E = s->n_experts;
    for (int64_t m = 0; m < s->n_modalities; m++) {
        double T = s->mod_tokens[m];
        if (!(T > 0.0))
            continue;
        double *logmean = scratch;
        bool global = c_global != 0.0 && mean_entropy(s, m, logmean) < threshold;
        if (c_local == 0.0 && !global)
            continue;
        for (int64_t t = 0; t < n; t++) {
            if (mod[t] != m)
                continue;
            const float *l = logits + t * E;
            float *dp = dprobs + t * E;
            for (int64_t e = 0; e < E; e++) {
                double g = -c_local / T * ((double)l[e] - (double)lse[t] + 1.0);
                if (global)
                    g += c_global / T * (logmean[e] + 1.0);
                dp[e] += (float)g;
            }
        }
    }
}
