/*
 * Routing statistics by group of tokens (task, modality): local sums that the worker adds
 * into its metrics. One pass over the routed tokens for both tables; the entropy of a
 * token comes from its logits (H = lse - sum_e p_e l_e), so it costs E multiply-adds, not
 * E logarithms.
 */
#include "gating.h"

const char *omni_modality_name(omni_modality m)
{
    static const char *const names[] = {"text", "image", "audio", "control"};
    _Static_assert(sizeof names / sizeof names[0] == OMNI_MOD_COUNT, "one name per modality");
    return m >= 0 && m < OMNI_MOD_COUNT ? names[m] : "?";
}

int64_t omni_route_table_len(int64_t n_groups, int64_t n_experts)
{
    return (3 * n_experts + 2) * n_groups;
}

void omni_route_table_bind(omni_route_table *t, double *buf, int64_t n_groups, int64_t n_experts)
{
    const int64_t G = n_groups, E = n_experts;
    t->n_groups = G;
    t->n_experts = E;
    t->kept = buf;
    t->dropped = buf + G * E;
    t->prob = buf + 2 * G * E;
    t->entropy = buf + 3 * G * E;
    t->tokens = buf + 3 * G * E + G;
}

/* Add one token's row to group g of t. */
static void add_row(omni_route_table *t, int32_t g, const float *p, double h, const int32_t *ex,
                    const int32_t *sl, int64_t k)
{
    if (g < 0 || g >= t->n_groups)
        return;
    const int64_t E = t->n_experts;
    double *prob = t->prob + (int64_t)g * E;
    for (int64_t e = 0; e < E; e++)
        prob[e] += (double)p[e];
    for (int64_t c = 0; c < k; c++) {
        int64_t i = (int64_t)g * E + ex[c];
        if (sl[c] >= 0)
            t->kept[i] += 1.0;
        else
            t->dropped[i] += 1.0;
    }
    t->entropy[g] += h;
    t->tokens[g] += 1.0;
}

void omni_route_tables_add(omni_route_table *a, const int32_t *a_group, omni_route_table *b,
                           const int32_t *b_group, const float *logits, const float *probs,
                           const float *lse, const int32_t *expert, const int32_t *slot, int64_t n,
                           int64_t k)
{
    const int64_t E = a->n_experts;
    for (int64_t t = 0; t < n; t++) {
        const float *p = probs + t * E, *l = logits + t * E;
        double pl = 0.0;
        for (int64_t e = 0; e < E; e++)
            pl += (double)p[e] * (double)l[e];
        double h = (double)lse[t] - pl;
        h = h > 0.0 ? h : 0.0; /* rounding of a one-hot router */
        add_row(a, a_group[t], p, h, expert + t * k, slot + t * k, k);
        add_row(b, b_group[t], p, h, expert + t * k, slot + t * k, k);
    }
}
