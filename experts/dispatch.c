/*
 * Expert placement and the dispatch plan: which row goes where, as pure functions of one
 * worker's routing and of the counts the other workers announce. No MPI here.
 */
#include "experts.h"

#include <string.h>

void omni_expert_shard(int64_t n_experts, int n_ranks, int rank, int64_t *first, int64_t *count)
{
    const int64_t E = n_experts, N = n_ranks;
    if (N > E) {
        *first = rank % E;
        *count = 1;
        return;
    }
    /* e * N / E == rank  <=>  rank * E / N <= e < (rank + 1) * E / N */
    int64_t lo = ((int64_t)rank * E + N - 1) / N;
    int64_t hi = (((int64_t)rank + 1) * E + N - 1) / N;
    *first = lo;
    *count = hi - lo;
}

int omni_expert_dest(int64_t e, int64_t n_experts, int n_ranks, int rank)
{
    const int64_t E = n_experts, N = n_ranks;
    if (N > E)
        return (int)((rank / E) * E + e);
    return (int)(e * N / E);
}

omni_status omni_moe_placement_check(int64_t n_experts, int n_ranks)
{
    if (n_experts % n_ranks == 0 || n_ranks % n_experts == 0)
        return OMNI_OK;
    return omni_fail(OMNI_ERR_CONFIG,
                     "moe.num_experts = %lld on %d processes: expected num_experts to be a "
                     "multiple of the number of processes, or the number of processes a "
                     "multiple of num_experts (replicated experts)",
                     (long long)n_experts, n_ranks);
}

omni_status omni_dispatch_plan_create(omni_dispatch_plan *p, int64_t n_experts, int64_t k,
                                      int n_ranks, int rank, int64_t max_tokens, int64_t max_recv)
{
    const int64_t E = n_experts, N = n_ranks;
    memset(p, 0, sizeof *p);
    p->n_ranks = n_ranks;
    p->rank = rank;
    p->n_experts = E;
    p->k = k;
    p->max_tokens = max_tokens;
    p->max_recv = max_recv;
    omni_expert_shard(E, n_ranks, rank, &p->e_first, &p->e_count);
    p->pos = omni_alloc(max_tokens * k, sizeof(int32_t), "dispatch plan");
    p->expert_start = omni_alloc(E, sizeof(int64_t), "dispatch plan");
    p->send_count = omni_alloc(N, sizeof(int64_t), "dispatch plan");
    p->send_displ = omni_alloc(N, sizeof(int64_t), "dispatch plan");
    p->count_msg = omni_alloc(N * E, sizeof(int64_t), "dispatch plan");
    p->recv_counts = omni_alloc(N * E, sizeof(int64_t), "dispatch plan");
    p->recv_count = omni_alloc(N, sizeof(int64_t), "dispatch plan");
    p->recv_displ = omni_alloc(N, sizeof(int64_t), "dispatch plan");
    p->expert_off = omni_alloc(p->e_count + 1, sizeof(int64_t), "dispatch plan");
    p->recv_to_exp = omni_alloc(max_recv, sizeof(int64_t), "dispatch plan");
    if (!p->pos || !p->expert_start || !p->send_count || !p->send_displ || !p->count_msg ||
        !p->recv_counts || !p->recv_count || !p->recv_displ || !p->expert_off || !p->recv_to_exp) {
        omni_dispatch_plan_free(p);
        return OMNI_ERR_NOMEM;
    }
    return OMNI_OK;
}

void omni_dispatch_plan_free(omni_dispatch_plan *p)
{
    omni_free(p->pos);
    omni_free(p->expert_start);
    omni_free(p->send_count);
    omni_free(p->send_displ);
    omni_free(p->count_msg);
    omni_free(p->recv_counts);
    omni_free(p->recv_count);
    omni_free(p->recv_displ);
    omni_free(p->expert_off);
    omni_free(p->recv_to_exp);
    memset(p, 0, sizeof *p);
}

/* Expert e's rows stay on this rank: e is shared (shadow) and this rank is not its owner. */
static bool stays(const omni_dispatch_plan *p, const bool *shadow, int64_t e)
{
    return shadow && shadow[e] && omni_expert_dest(e, p->n_experts, p->n_ranks, p->rank) != p->rank;
}

void omni_dispatch_plan_send(omni_dispatch_plan *p, const int32_t *expert, const int32_t *slot,
                             const int64_t *kept, const bool *shadow, int64_t n)
{
    const int64_t E = p->n_experts, N = p->n_ranks, k = p->k;
    /* Experts ascending are destinations ascending (both placements are monotone in e), so
     * the block of expert e starts after the kept rows of every lower expert; the rows that
     * stay here follow all the sent ones, experts ascending. */
    int64_t start = 0;
    memset(p->send_count, 0, (size_t)N * sizeof(int64_t));
    memset(p->count_msg, 0, (size_t)(N * E) * sizeof(int64_t));
    for (int64_t e = 0; e < E; e++) {
        if (stays(p, shadow, e))
            continue;
        int q = omni_expert_dest(e, E, p->n_ranks, p->rank);
        p->count_msg[(int64_t)q * E + e] = kept[e];
        p->send_count[q] += kept[e];
    }
    for (int64_t q = 0; q < N; q++) {
        p->send_displ[q] = start;
        start += p->send_count[q];
    }
    p->n_send = start;
    start = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int64_t e = 0; e < E; e++)
            if (stays(p, shadow, e) == (pass == 1)) {
                p->expert_start[e] = start;
                start += kept[e];
            }
    p->n_local = start - p->n_send;
    for (int64_t a = 0; a < n * k; a++)
        p->pos[a] = slot[a] < 0 ? -1 : (int32_t)(p->expert_start[expert[a]] + slot[a]);
}

omni_status omni_dispatch_plan_recv_all(omni_dispatch_plan *p, const int64_t *kept_all,
                                        const bool *shadow)
{
    const int64_t E = p->n_experts, N = p->n_ranks;
    for (int64_t s = 0; s < N; s++)
        for (int64_t e = 0; e < E; e++) {
            bool mine = omni_expert_dest(e, E, p->n_ranks, (int)s) == p->rank;
            bool kept_there = shadow && shadow[e] && s != p->rank; /* a copy's rows */
            p->recv_counts[s * E + e] = mine && !kept_there ? kept_all[s * E + e] : 0;
        }
    return omni_dispatch_plan_recv(p);
}

int64_t omni_shadow_choose(const int64_t *kept_all, int64_t n_experts, int n_ranks,
                           int64_t max_shadow, int64_t cost_rows, int64_t *load, bool *shadow)
{
    const int64_t E = n_experts, N = n_ranks;
    memset(shadow, 0, (size_t)E * sizeof(bool));
    for (int64_t r = 0; r < N; r++)
        load[r] = 0;
    if (E < N) /* replicated experts: not shadowed */
        return 0;
    /* with E >= N an expert's destination is its owner, whoever sends */
    for (int64_t e = 0; e < E; e++)
        for (int64_t s = 0; s < N; s++)
            load[omni_expert_dest(e, E, n_ranks, 0)] += kept_all[s * E + e];
    int64_t chosen = 0;
    while (chosen < max_shadow) {
        int64_t h = 0, most = load[0];
        for (int64_t r = 1; r < N; r++)
            if (load[r] > most)
                h = r, most = load[r];
        /* the expert of the busiest rank whose sharing lowers the busiest load the most */
        int64_t best = -1, best_most = most;
        for (int64_t e = 0; e < E; e++) {
            if (shadow[e] || omni_expert_dest(e, E, n_ranks, 0) != h)
                continue;
            int64_t moved = 0;
            for (int64_t s = 0; s < N; s++)
                moved += s == h ? 0 : kept_all[s * E + e];
            if (moved == 0)
                continue;
            int64_t m = load[h] - moved + cost_rows;
            for (int64_t s = 0; s < N; s++)
                if (s != h && load[s] + kept_all[s * E + e] + cost_rows > m)
                    m = load[s] + kept_all[s * E + e] + cost_rows;
            if (m < best_most)
                best = e, best_most = m;
        }
        if (best < 0)
            break;
        shadow[best] = true;
        chosen++;
        for (int64_t s = 0; s < N; s++)
            if (s != h) {
                load[h] -= kept_all[s * E + best];
                load[s] += kept_all[s * E + best] + cost_rows;
            }
        load[h] += cost_rows;
    }
    return chosen;
}

omni_status omni_dispatch_plan_recv(omni_dispatch_plan *p)
{
    const int64_t E = p->n_experts, N = p->n_ranks;
    int64_t total = 0;
    for (int64_t s = 0; s < N; s++) {
        int64_t c = 0;
        for (int64_t e = 0; e < E; e++) {
            int64_t v = p->recv_counts[s * E + e];
            if (v < 0 || (v > 0 && (e < p->e_first || e >= p->e_first + p->e_count)))
                return omni_fail(OMNI_ERR_INTERNAL,
                                 "dispatch: rank %d got %lld rows for expert %lld from rank "
                                 "%lld, which it does not hold",
                                 p->rank, (long long)v, (long long)e, (long long)s);
            c += v;
        }
        p->recv_count[s] = c;
        p->recv_displ[s] = total;
        total += c;
    }
    if (total > p->max_recv)
        return omni_fail(OMNI_ERR_INTERNAL, "dispatch: rank %d got %lld rows, buffers hold %lld",
                         p->rank, (long long)total, (long long)p->max_recv);
    p->n_recv = total;
    p->expert_off[0] = 0;
    for (int64_t j = 0; j < p->e_count; j++) {
        int64_t c = 0;
        for (int64_t s = 0; s < N; s++)
            c += p->recv_counts[s * E + p->e_first + j];
        p->expert_off[j + 1] = p->expert_off[j] + c;
    }
    /* Source s's block holds its rows for our experts in expert order; in the expert-major
     * buffer, expert j's block holds the sources in rank order. */
    for (int64_t j = 0; j < p->e_count; j++) {
        int64_t dst = p->expert_off[j];
        for (int64_t s = 0; s < N; s++) {
            int64_t src = p->recv_displ[s];
            for (int64_t j2 = 0; j2 < j; j2++)
                src += p->recv_counts[s * E + p->e_first + j2];
            int64_t c = p->recv_counts[s * E + p->e_first + j];
            for (int64_t r = 0; r < c; r++)
                p->recv_to_exp[src + r] = dst + r;
            dst += c;
        }
    }
    return OMNI_OK;
}

void omni_dispatch_gather(float *send, const float *x, const omni_dispatch_plan *p, int64_t n,
                          int64_t d)
{
    for (int64_t a = 0; a < n * p->k; a++)
        if (p->pos[a] >= 0)
            memcpy(send + (int64_t)p->pos[a] * d, x + (a / p->k) * d, (size_t)d * sizeof(float));
}

void omni_dispatch_to_expert(float *dst, const float *src, const omni_dispatch_plan *p, int64_t d)
{
    for (int64_t i = 0; i < p->n_recv; i++)
        memcpy(dst + p->recv_to_exp[i] * d, src + i * d, (size_t)d * sizeof(float));
}

void omni_dispatch_from_expert(float *dst, const float *src, const omni_dispatch_plan *p, int64_t d)
{
    for (int64_t i = 0; i < p->n_recv; i++)
        memcpy(dst + i * d, src + p->recv_to_exp[i] * d, (size_t)d * sizeof(float));
}
