/*
 * Routing statistics as sums over tokens, the load-balance and z-losses computed from them
 * and their gradients, and the auxiliary-loss-free bias update.
 */
#include "gating.h"

#include <math.h>
#include <string.h>

omni_status omni_router_sums_create(omni_router_sums *s, int64_t n_experts, int64_t n_tasks,
                                    int64_t n_modalities)
{
    const int64_t E = n_experts, M = n_modalities;
    memset(s, 0, sizeof *s);
    s->n_experts = E;
    s->n_tasks = n_tasks;
    s->n_modalities = M;
    s->len = 3 * E + 4 + n_tasks * E + M * (E + 2) + 1;
    s->buf = omni_alloc(s->len, sizeof(double), "router statistics");
    if (!s->buf)
        return OMNI_ERR_NOMEM;
    s->assigned = s->buf;
    s->prob = s->buf + E;
    s->kept = s->buf + 2 * E;
    s->zsum = s->buf + 3 * E;
    s->tokens = s->zsum + 1;
    s->entropy = s->zsum + 2;
    s->dropped = s->zsum + 3;
    s->task_assigned = s->zsum + 4;
    s->mod_prob = s->task_assigned + n_tasks * E;
    s->mod_entropy = s->mod_prob + M * E;
    s->mod_tokens = s->mod_entropy + M;
    s->faults = s->mod_tokens + M;
    return OMNI_OK;
}

void omni_router_sums_free(omni_router_sums *s)
{
    omni_free(s->buf);
    memset(s, 0, sizeof *s);
}

void omni_router_sums_zero(omni_router_sums *s)
{
    memset(s->buf, 0, (size_t)s->len * sizeof(double));
}

void omni_router_sums_add(omni_router_sums *s, const float *probs, const float *lse,
                          const int32_t *expert, const int32_t *slot, const int32_t *task,
                          int64_t n, int64_t k)
{
    const int64_t E = s->n_experts;
    for (int64_t t = 0; t < n; t++) {
        const float *p = probs + t * E;
        double h = 0.0;
        for (int64_t e = 0; e < E; e++) {
            s->prob[e] += (double)p[e];
            if (p[e] > 0.0f)
                h -= (double)p[e] * log((double)p[e]);
        }
        *s->entropy += h;
        *s->zsum += (double)lse[t] * (double)lse[t];
        *s->tokens += 1.0;
        int32_t tk = task ? task[t] : -1;
        for (int64_t c = 0; c < k; c++) {
            int32_t e = expert[t * k + c];
            s->assigned[e] += 1.0;
            if (slot[t * k + c] >= 0)
                s->kept[e] += 1.0;
            else
                *s->dropped += 1.0;
            if (tk >= 0 && tk < s->n_tasks)
                s->task_assigned[(int64_t)tk * E + e] += 1.0;
        }
    }
}

void omni_router_losses(const omni_router_sums *s, int64_t k, double *aux, double *z)
{
    const int64_t E = s->n_experts;
    double T = *s->tokens;
    *aux = 0.0;
    *z = 0.0;
    if (T <= 0.0)
        return;
    double acc = 0.0;
    for (int64_t e = 0; e < E; e++)
        acc += (s->assigned[e] / ((double)k * T)) * (s->prob[e] / T);
    *aux = (double)E * acc;
    *z = *s->zsum / T;
}

double omni_router_load_ratio(const omni_router_sums *s)
{
    const int64_t E = s->n_experts;
    double mx = 0.0, sum = 0.0;
    for (int64_t e = 0; e < E; e++) {
        sum += s->assigned[e];
        mx = s->assigned[e] > mx ? s->assigned[e] : mx;
    }
    return sum > 0.0 ? mx / (sum / (double)E) : 0.0;
}

void omni_router_aux_backward(float *dprobs, const omni_router_sums *s, double coef, int64_t k,
                              int64_t n)
{
    const int64_t E = s->n_experts;
    double T = *s->tokens;
    if (coef == 0.0 || T <= 0.0)
        return;
    for (int64_t e = 0; e < E; e++) {
        float g = (float)(coef * (double)E * (s->assigned[e] / ((double)k * T)) / T);
        for (int64_t t = 0; t < n; t++)
            dprobs[t * E + e] += g;
    }
}

void omni_router_z_backward(float *dlogits, const float *probs, const float *lse,
                            const omni_router_sums *s, double coef, int64_t n)
{
    const int64_t E = s->n_experts;
    double T = *s->tokens;
    if (coef == 0.0 || T <= 0.0)
        return;
    for (int64_t t = 0; t < n; t++) {
        float g = (float)(coef * 2.0 * (double)lse[t] / T);
        for (int64_t e = 0; e < E; e++)
            dlogits[t * E + e] += g * probs[t * E + e];
    }
}

void omni_router_bias_update(float *bias, const double *load, int64_t n_experts, double rate)
{
    const int64_t E = n_experts;
    double mean = 0.0;
    for (int64_t e = 0; e < E; e++)
        mean += load[e];
    mean /= (double)E;
    for (int64_t e = 0; e < E; e++) {
        double diff = mean - load[e];
        double sign = diff > 0.0 ? 1.0 : (diff < 0.0 ? -1.0 : 0.0);
        bias[e] += (float)(rate * sign);
    }
}
