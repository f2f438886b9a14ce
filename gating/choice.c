/*
 * Expert choice (moe.router: expert_choice; Zhou et al. 2022): each expert takes the C tokens
 * of the global batch with the highest router probability for it, C = ceil(capacity_factor *
 * top_k * tokens / E). The selection of one expert over the scores of the whole batch, the
 * per-token fallback that inference uses, the E-wide routing layout that the dispatch takes,
 * and the statistics. The exchange of scores between ranks is in experts/moe.c; the math and
 * the orders are written out in docs/moe.md.
 */
#include "gating.h"

#include <math.h>

int64_t omni_router_choice_capacity(int64_t k, double capacity_factor, int64_t tokens,
                                    int64_t n_experts)
{
    if (tokens <= 0 || n_experts <= 0)
        return 0;
    double c = ceil(capacity_factor * (double)k * (double)tokens / (double)n_experts);
    if (!(c >= 1.0))
        return 1;
    return c >= (double)tokens ? tokens : (int64_t)c;
}

/* True when token a comes before token b in an expert's choice: score descending, then
 * token index ascending (a total order, so the choice is deterministic). */
static bool first(const float *score, int64_t a, int64_t b)
{
    if (score[a] != score[b])
        return score[a] > score[b];
    return a < b;
}

/* Max-heap under "comes later", so the heap's root is the last of the kept set. */
static void sift_down(const float *score, int64_t *v, int64_t root, int64_t n)
{
    for (;;) {
        int64_t child = 2 * root + 1;
        if (child >= n)
            return;
        if (child + 1 < n && first(score, v[child], v[child + 1]))
            child++;
        if (!first(score, v[root], v[child]))
            return;
        int64_t tmp = v[root];
        v[root] = v[child];
        v[child] = tmp;
        root = child;
    }
}

void omni_router_choice_select(float *chosen, const float *score, int64_t n, int64_t capacity,
                               int64_t *scratch)
{
    for (int64_t i = 0; i < n; i++)
        chosen[i] = 0.0f;
    int64_t C = capacity < n ? capacity : n;
    if (C <= 0)
        return;
    /* Keep the best C seen so far in a heap whose root is the worst of them; a token that
     * comes before the root replaces it. O(n log C), no allocation. */
    int64_t *heap = scratch;
    for (int64_t i = 0; i < C; i++)
        heap[i] = i;
    for (int64_t i = C / 2 - 1; i >= 0; i--)
        sift_down(score, heap, i, C);
    for (int64_t i = C; i < n; i++)
        if (first(score, i, heap[0])) {
            heap[0] = i;
            sift_down(score, heap, 0, C);
        }
    for (int64_t i = 0; i < C; i++)
        chosen[heap[i]] = 1.0f;
}

void omni_router_choice_fallback(float *chosen, const float *logits, int64_t n, int64_t n_experts,
                                 int64_t k)
{
    const int64_t E = n_experts;
    for (int64_t t = 0; t < n; t++) {
        float *c = chosen + t * E;
        const float *l = logits + t * E;
        for (int64_t e = 0; e < E; e++)
            c[e] = 0.0f;
        for (int64_t j = 0; j < k && j < E; j++) {
            int64_t best = -1;
            for (int64_t e = 0; e < E; e++)
                if (c[e] == 0.0f && (best < 0 || l[e] > l[best]))
                    best = e;
            c[best] = 1.0f;
        }
    }
}

void omni_router_choice_layout(int32_t *expert, int32_t *slot, float *prob, float *gate,
                               int64_t *kept, const float *chosen, const float *probs, int64_t n,
                               int64_t n_experts)
{
    const int64_t E = n_experts;
    for (int64_t e = 0; e < E; e++)
        kept[e] = 0;
    for (int64_t t = 0; t < n; t++)
        for (int64_t e = 0; e < E; e++) {
            int64_t a = t * E + e;
            expert[a] = (int32_t)e;
            prob[a] = probs[a];
            gate[a] = probs[a];
            slot[a] = chosen[a] != 0.0f ? (int32_t)kept[e]++ : -1;
        }
}

void omni_router_choice_sums_add(omni_router_sums *s, const float *probs, const float *lse,
                                 const float *chosen, const int32_t *task, int64_t n)
{
    const int64_t E = s->n_experts;
    /* probabilities, entropy, z and tokens as for token choice (no assignment counted) */
    static const int32_t none = 0; /* k = 0: no choice is read */
    omni_router_sums_add(s, probs, lse, &none, &none, task, n, 0);
    for (int64_t t = 0; t < n; t++) {
        int32_t tk = task ? task[t] : -1;
        int64_t picked = 0;
        for (int64_t e = 0; e < E; e++) {
            if (chosen[t * E + e] == 0.0f)
                continue;
            picked++;
            s->assigned[e] += 1.0;
            s->kept[e] += 1.0;
            if (tk >= 0 && tk < s->n_tasks)
                s->task_assigned[(int64_t)tk * E + e] += 1.0;
        }
        if (picked == 0)
            *s->dropped += 1.0;
    }
}

/* Add one token's choice to group g of t: kept per choosing expert, or, chosen by none, one
 * drop at its most probable expert (lower index on a tie). */
static void add_choice(omni_route_table *t, int32_t g, const float *c, const float *p)
{
    if (g < 0 || g >= t->n_groups)
        return;
    const int64_t E = t->n_experts;
    int64_t picked = 0, best = 0;
    for (int64_t e = 0; e < E; e++) {
        if (c[e] != 0.0f) {
            t->kept[(int64_t)g * E + e] += 1.0;
            picked++;
        }
        if (p[e] > p[best])
            best = e;
    }
    if (picked == 0)
        t->dropped[(int64_t)g * E + best] += 1.0;
}

void omni_route_tables_add_choice(omni_route_table *a, const int32_t *a_group, omni_route_table *b,
                                  const int32_t *b_group, const float *logits, const float *probs,
                                  const float *lse, const float *chosen, int64_t n)
{
    const int64_t E = a->n_experts;
    static const int32_t none = 0; /* k = 0: no choice is read */
    omni_route_tables_add(a, a_group, b, b_group, logits, probs, lse, &none, &none, n, 0);
    for (int64_t t = 0; t < n; t++) {
        add_choice(a, a_group[t], chosen + t * E, probs + t * E);
        add_choice(b, b_group[t], chosen + t * E, probs + t * E);
    }
}
