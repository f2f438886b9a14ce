/*
 * experts: the dispatch plan with several "ranks" simulated in one process. Each rank
 * routes its own tokens; the test carries the counts and rows between the ranks' plans by
 * hand, as the all-to-alls would, and checks that every expert on every rank receives
 * exactly the rows assigned to it, in the documented order (source rank, then token), and
 * that the combine brings every row back to its token.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "experts.h"

#define MAXR 8
#define D    3 /* a row: (source rank, token, expert that transformed it) */

typedef struct {
    int64_t n;
    int32_t *expert, *slot;
    float *prob, *x, *send, *recv, *xe, *ret;
    int64_t kept[16];
    omni_dispatch_plan plan;
} sim_rank;

static uint32_t lcg(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

static void run(int64_t E, int N, int64_t k, double cf)
{
    sim_rank rk[MAXR];
    int64_t total_dropped = 0;
    uint32_t seed = (uint32_t)(E * 131 + N * 7 + k);
    const int64_t max_tokens = 40;
    for (int r = 0; r < N; r++) {
        sim_rank *s = &rk[r];
        s->n = 10 + (int64_t)(lcg(&seed) % 30); /* ranks hold different token counts */
        s->expert = calloc((size_t)(max_tokens * k), sizeof(int32_t));
        s->slot = calloc((size_t)(max_tokens * k), sizeof(int32_t));
        s->prob = calloc((size_t)(max_tokens * k), sizeof(float));
        s->x = calloc((size_t)(max_tokens * D), sizeof(float));
        s->send = calloc((size_t)(max_tokens * k * D), sizeof(float));
        s->ret = calloc((size_t)(max_tokens * k * D), sizeof(float));
        int64_t max_recv = (int64_t)N * max_tokens * k;
        s->recv = calloc((size_t)(max_recv * D), sizeof(float));
        s->xe = calloc((size_t)(max_recv * D), sizeof(float));
        cr_assert_eq(omni_dispatch_plan_create(&s->plan, E, k, N, r, max_tokens, max_recv),
                     OMNI_OK);
        /* skewed random routing: distinct experts per token, expert 0 popular */
        for (int64_t t = 0; t < s->n; t++) {
            for (int64_t c = 0; c < k; c++) {
                int32_t e;
                bool dup;
                do {
                    e = (lcg(&seed) % 3 == 0) ? 0 : (int32_t)(lcg(&seed) % (uint32_t)E);
                    dup = false;
                    for (int64_t q = 0; q < c; q++)
                        dup |= s->expert[t * k + q] == e;
                } while (dup);
                s->expert[t * k + c] = e;
                s->prob[t * k + c] = (float)(lcg(&seed) % 1000) / 1000.0f;
            }
            s->x[t * D + 0] = (float)r;
            s->x[t * D + 1] = (float)t;
            s->x[t * D + 2] = -1.0f;
        }
        int64_t cap = omni_moe_capacity(k, cf, s->n, E);
        int64_t *scratch = calloc((size_t)omni_router_assign_scratch(s->n, E, k), 8);
        omni_router_assign(s->slot, s->kept, s->expert, s->prob, s->n, E, k, cap, scratch);
        free(scratch);
        omni_dispatch_plan_send(&s->plan, s->expert, s->slot, s->kept, NULL, s->n);
        omni_dispatch_gather(s->send, s->x, &s->plan, s->n, D);
    }
    /* the counts all-to-all: E counts from every rank to every rank */
    for (int q = 0; q < N; q++)
        for (int s = 0; s < N; s++)
            memcpy(rk[q].plan.recv_counts + (int64_t)s * E, rk[s].plan.count_msg + (int64_t)q * E,
                   (size_t)E * sizeof(int64_t));
    for (int q = 0; q < N; q++)
        cr_assert_eq(omni_dispatch_plan_recv(&rk[q].plan), OMNI_OK, "%s", omni_error_message());
    /* the rows all-to-all */
    for (int q = 0; q < N; q++)
        for (int s = 0; s < N; s++) {
            cr_assert_eq(rk[s].plan.send_count[q], rk[q].plan.recv_count[s]);
            memcpy(rk[q].recv + rk[q].plan.recv_displ[s] * D,
                   rk[s].send + rk[s].plan.send_displ[q] * D,
                   (size_t)(rk[s].plan.send_count[q] * D) * sizeof(float));
        }
    /* every local expert's block: exactly its rows, by source rank then token */
    for (int q = 0; q < N; q++) {
        sim_rank *R = &rk[q];
        omni_dispatch_to_expert(R->xe, R->recv, &R->plan, D);
        for (int64_t j = 0; j < R->plan.e_count; j++) {
            int64_t e = R->plan.e_first + j;
            int64_t row = R->plan.expert_off[j];
            for (int s = 0; s < N; s++) {
                if (omni_expert_dest(e, E, N, s) != q)
                    continue;
                for (int64_t t = 0; t < rk[s].n; t++)
                    for (int64_t c = 0; c < k; c++) {
                        int64_t a = t * k + c;
                        if (rk[s].expert[a] != e || rk[s].slot[a] < 0)
                            continue;
                        cr_assert_lt(row, R->plan.expert_off[j + 1]);
                        cr_assert_eq(R->xe[row * D + 0], (float)s, "rank %d expert %lld row %lld",
                                     q, (long long)e, (long long)row);
                        cr_assert_eq(R->xe[row * D + 1], (float)t);
                        R->xe[row * D + 2] = (float)e; /* the "expert" marks the row */
                        row++;
                    }
            }
            cr_assert_eq(row, R->plan.expert_off[j + 1], "expert %lld got extra rows",
                         (long long)e);
        }
        cr_assert_eq(R->plan.expert_off[R->plan.e_count], R->plan.n_recv);
        omni_dispatch_from_expert(R->recv, R->xe, &R->plan, D);
    }
    /* the combine: the mirror all-to-all */
    for (int s = 0; s < N; s++)
        for (int q = 0; q < N; q++)
            memcpy(rk[s].ret + rk[s].plan.send_displ[q] * D,
                   rk[q].recv + rk[q].plan.recv_displ[s] * D,
                   (size_t)(rk[s].plan.send_count[q] * D) * sizeof(float));
    for (int s = 0; s < N; s++) {
        sim_rank *S = &rk[s];
        int64_t kept = 0, dropped = 0;
        for (int64_t a = 0; a < S->n * k; a++) {
            if (S->slot[a] < 0) {
                cr_assert_eq(S->plan.pos[a], -1);
                dropped++;
                continue;
            }
            kept++;
            const float *r = S->ret + (int64_t)S->plan.pos[a] * D;
            cr_assert_eq(r[0], (float)s);
            cr_assert_eq(r[1], (float)(a / k));
            cr_assert_eq(r[2], (float)S->expert[a]);
        }
        cr_assert_eq(kept, S->plan.n_send);
        if (cf > 0.0)
            total_dropped += dropped;
        else
            cr_assert_eq(dropped, 0);
    }
    if (cf > 0.0) /* the skewed routing over-fills expert 0: the drops are exercised */
        cr_assert_gt(total_dropped, 0);
    for (int r = 0; r < N; r++) {
        sim_rank *s = &rk[r];
        omni_dispatch_plan_free(&s->plan);
        free(s->expert), free(s->slot), free(s->prob), free(s->x), free(s->send);
        free(s->recv), free(s->xe), free(s->ret);
    }
}

Test(experts, placement_follows_the_design)
{
    int64_t first, count;
    omni_expert_shard(8, 2, 1, &first, &count);
    cr_assert_eq(first, 4);
    cr_assert_eq(count, 4);
    omni_expert_shard(8, 3, 1, &first, &count); /* e * 3 / 8 == 1: e = 3, 4, 5 */
    cr_assert_eq(first, 3);
    cr_assert_eq(count, 3);
    for (int64_t e = 0; e < 8; e++)
        cr_assert_eq(omni_expert_dest(e, 8, 3, 0), (int)(e * 3 / 8));
    /* 8 ranks, 4 experts: rank 5 (group 1) sends expert 2 to rank 6, which holds it */
    cr_assert_eq(omni_expert_dest(2, 4, 8, 5), 6);
    omni_expert_shard(4, 8, 6, &first, &count);
    cr_assert_eq(first, 2);
    cr_assert_eq(count, 1);
    cr_assert_eq(omni_moe_placement_check(4, 8), OMNI_OK);
    cr_assert_eq(omni_moe_placement_check(4, 6), OMNI_ERR_CONFIG);
    cr_assert_eq(omni_moe_placement_check(8, 2), OMNI_OK);
    cr_assert_eq(omni_moe_placement_check(8, 3), OMNI_ERR_CONFIG);
    cr_assert_eq(omni_moe_placement_check(3, 3), OMNI_OK);
}

Test(experts, dispatch_one_rank_capacity_and_dropless)
{
    run(4, 1, 2, 1.0);
    run(4, 1, 1, 0.0);
}

Test(experts, dispatch_two_and_four_ranks_deliver_every_row)
{
    run(4, 2, 2, 1.25);
    run(8, 4, 2, 1.0);
    run(8, 4, 1, 0.0);
}

Test(experts, dispatch_uneven_shards_three_ranks)
{
    run(8, 3, 2, 1.0);
    run(5, 3, 3, 0.0);
}

Test(experts, dispatch_replicated_experts_eight_ranks_four_experts)
{
    run(4, 8, 2, 1.0);
    run(2, 4, 1, 0.0);
}

Test(experts, dispatch_rejects_rows_for_an_expert_the_rank_does_not_hold)
{
    omni_dispatch_plan p;
    cr_assert_eq(omni_dispatch_plan_create(&p, 4, 1, 2, 0, 4, 8), OMNI_OK);
    memset(p.recv_counts, 0, 8 * sizeof(int64_t));
    p.recv_counts[1 * 4 + 3] = 1; /* rank 1 sends a row for expert 3 to rank 0 */
    cr_assert_eq(omni_dispatch_plan_recv(&p), OMNI_ERR_INTERNAL);
    omni_dispatch_plan_free(&p);
}

/* Shadow experts: 2 ranks, experts 0-1 on rank 0 and 2-3 on rank 1; rank 1 sends 30 rows
 * to expert 0, so rank 0 would compute 55 rows and rank 1 4. */
static const int64_t skewed[2 * 4] = {10, 10, 1, 1, 30, 5, 1, 1};

Test(experts, shadow_choose_shares_the_busiest_ranks_best_expert)
{
    int64_t load[2];
    bool shadow[4];
    /* free sharing, one expert: expert 0 (55, 4 -> 25, 34); expert 1 would give 50, 9 */
    cr_assert_eq(omni_shadow_choose(skewed, 4, 2, 1, 0, load, shadow), 1);
    cr_assert(shadow[0] && !shadow[1] && !shadow[2] && !shadow[3]);
    cr_assert_eq(load[0], 25);
    cr_assert_eq(load[1], 34);
    /* a cost of 10 rows each: 55 -> 35 and 44, still lower */
    cr_assert_eq(omni_shadow_choose(skewed, 4, 2, 1, 10, load, shadow), 1);
    cr_assert_eq(load[0], 35);
    cr_assert_eq(load[1], 44);
    /* a cost of 32: every choice raises the busiest load (57, 66): none */
    cr_assert_eq(omni_shadow_choose(skewed, 4, 2, 4, 32, load, shadow), 0);
    cr_assert(!shadow[0] && !shadow[1]);
    cr_assert_eq(load[0], 55);
    cr_assert_eq(load[1], 4);
    /* balanced loads: nothing to gain */
    const int64_t even[2 * 4] = {5, 5, 5, 5, 5, 5, 5, 5};
    cr_assert_eq(omni_shadow_choose(even, 4, 2, 4, 0, load, shadow), 0);
    /* replicated experts (N > E): never */
    const int64_t rep[4 * 2] = {9, 0, 9, 0, 9, 0, 9, 0};
    int64_t load4[4];
    cr_assert_eq(omni_shadow_choose(rep, 2, 4, 2, 0, load4, shadow), 0);
}

Test(experts, shadow_rows_stay_on_the_sender)
{
    /* rank 1 of the case above, expert 0 shared: its 30 rows of expert 0 stay, after the 7
     * rows it sends (5 to expert 1 on rank 0, 2 to its own experts 2 and 3) */
    omni_dispatch_plan p;
    cr_assert_eq(omni_dispatch_plan_create(&p, 4, 1, 2, 1, 64, 64), OMNI_OK);
    int32_t expert[37], slot[37];
    int64_t kept[4] = {30, 5, 1, 1}, next[4] = {0};
    for (int i = 0; i < 37; i++) {
        expert[i] = i < 30 ? 0 : i < 35 ? 1 : i == 35 ? 2 : 3;
        slot[i] = (int32_t)next[expert[i]]++;
    }
    bool shadow[4] = {true, false, false, false};
    omni_dispatch_plan_send(&p, expert, slot, kept, shadow, 37);
    cr_assert_eq(p.n_send, 7);
    cr_assert_eq(p.n_local, 30);
    cr_assert_eq(p.send_count[0], 5);
    cr_assert_eq(p.send_count[1], 2);
    cr_assert_eq(p.count_msg[0 * 4 + 0], 0, "a shared expert's rows are not announced");
    cr_assert_eq(p.expert_start[1], 0);
    cr_assert_eq(p.expert_start[0], 7);
    cr_assert_eq(p.pos[0], 7);
    cr_assert_eq(p.pos[29], 36);
    cr_assert_eq(p.pos[30], 0);
    /* its receive side: its own rows of experts 2 and 3, and rank 0's 1 + 1 */
    cr_assert_eq(omni_dispatch_plan_recv_all(&p, skewed, shadow), OMNI_OK);
    cr_assert_eq(p.n_recv, 4);
    cr_assert_eq(p.recv_count[0], 2);
    cr_assert_eq(p.recv_count[1], 2);
    omni_dispatch_plan_free(&p);
    /* rank 0, the owner: its own 10 rows of expert 0 arrive through the exchange, rank 1's
     * 30 do not */
    cr_assert_eq(omni_dispatch_plan_create(&p, 4, 1, 2, 0, 64, 64), OMNI_OK);
    cr_assert_eq(omni_dispatch_plan_recv_all(&p, skewed, shadow), OMNI_OK);
    cr_assert_eq(p.recv_count[0], 20);
    cr_assert_eq(p.recv_count[1], 5);
    cr_assert_eq(p.expert_off[1] - p.expert_off[0], 10);
    omni_dispatch_plan_free(&p);
}
