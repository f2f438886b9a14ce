/*
 * Task-level routing (moe.router: task; Kudugunta et al. 2021): the losses of a router
 * that decides once per task, over the tasks of the global batch rather than its tokens,
 * and their gradients. The router itself is omni_router_forward/omni_router_topk applied
 * to the task embeddings (one row per task); the MoE layer copies a task's row to each
 * of its tokens. docs/moe.md, "Task routing", writes the definitions out.
 */
#include "gating.h"

/* Tokens of task t in the global batch: its row of task_assigned counts k per token. */
static double task_tokens(const omni_router_sums *s, int64_t t, int64_t k)
{
    const int64_t E = s->n_experts;
    double n = 0.0;
    for (int64_t e = 0; e < E; e++)
        n += s->task_assigned[t * E + e];
    return n / (double)k;
}

double omni_router_task_count(const omni_router_sums *s, int64_t k)
{
    double n = 0.0;
    for (int64_t t = 0; t < s->n_tasks; t++)
        n += task_tokens(s, t, k) > 0.0 ? 1.0 : 0.0;
    return n;
}

void omni_router_task_losses(const omni_router_sums *s, const float *probs, const float *lse,
                             const int32_t *expert, int64_t k, double *aux, double *z)
{
    const int64_t E = s->n_experts;
    *aux = 0.0;
    *z = 0.0;
    double T = omni_router_task_count(s, k);
    if (T <= 0.0)
        return;
    double acc = 0.0;
    for (int64_t i = 0; i < E; i++) {
        double chosen = 0.0, p = 0.0;
        for (int64_t t = 0; t < s->n_tasks; t++) {
            if (!(task_tokens(s, t, k) > 0.0))
                continue;
            p += (double)probs[t * E + i];
            for (int64_t c = 0; c < k; c++)
                chosen += expert[t * k + c] == (int32_t)i ? 1.0 : 0.0;
        }
        acc += (chosen / ((double)k * T)) * (p / T);
    }
    *aux = (double)E * acc;
    double zs = 0.0;
    for (int64_t t = 0; t < s->n_tasks; t++)
        if (task_tokens(s, t, k) > 0.0)
            zs += (double)lse[t] * (double)lse[t];
    *z = zs / T;
}

/* The share of task t's gradient that this worker adds: its tokens of t over the global
 * batch's, so the per-rank gradients of the replicated router add up to the whole. */
static double task_share(const omni_router_sums *s, const double *local, int64_t t, int64_t k)
{
    double all = task_tokens(s, t, k);
    return all > 0.0 ? local[t] / all : 0.0;
}

void omni_router_task_aux_backward(float *dprobs, const omni_router_sums *s, const int32_t *expert,
                                   const double *local, double coef, int64_t k)
{
    const int64_t E = s->n_experts;
    double T = omni_router_task_count(s, k);
    if (coef == 0.0 || T <= 0.0)
        return;
    for (int64_t i = 0; i < E; i++) {
        double chosen = 0.0;
        for (int64_t t = 0; t < s->n_tasks; t++)
            if (task_tokens(s, t, k) > 0.0)
                for (int64_t c = 0; c < k; c++)
                    chosen += expert[t * k + c] == (int32_t)i ? 1.0 : 0.0;
        double g = coef * (double)E * (chosen / ((double)k * T)) / T;
        for (int64_t t = 0; t < s->n_tasks; t++)
            dprobs[t * E + i] += (float)(g * task_share(s, local, t, k));
    }
}

void omni_router_task_z_backward(float *dlogits, const float *probs, const float *lse,
                                 const omni_router_sums *s, const double *local, double coef,
                                 int64_t k)
{
    const int64_t E = s->n_experts;
    double T = omni_router_task_count(s, k);
    if (coef == 0.0 || T <= 0.0)
        return;
    for (int64_t t = 0; t < s->n_tasks; t++) {
        float g = (float)(coef * 2.0 * (double)lse[t] / T * task_share(s, local, t, k));
        for (int64_t e = 0; e < E; e++)
            dlogits[t * E + e] += g * probs[t * E + e];
    }
}
