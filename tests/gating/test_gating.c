/* gating: capacity, top-k, the batch-priority drop order, loss values, the bias update and
 * the jitter, as known answers on hand-made router outputs. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "gating.h"

Test(gating, capacity_rounds_up_and_dropless_is_unbounded)
{
    cr_assert_eq(omni_moe_capacity(2, 1.25, 10, 4), 7); /* ceil(6.25) */
    cr_assert_eq(omni_moe_capacity(1, 1.0, 8, 4), 2);
    cr_assert_eq(omni_moe_capacity(2, 1.25, 4096, 8), 1280);
    cr_assert_eq(omni_moe_capacity(2, 0.0, 10, 4), 10);
    cr_assert_eq(omni_moe_capacity(2, -1.0, 10, 4), 10);
}

Test(gating, topk_orders_choices_breaks_ties_low_and_bias_only_changes_the_choice)
{
    /* token 0: logits (1, 3, 3, 0): experts 1 then 2 (tie -> lower index) */
    const float w[4] = {1.0f, 3.0f, 3.0f, 0.0f};
    float logits[4], probs[4], lse[1];
    float x[1] = {1.0f};
    /* softmax through the forward with d = 1 and W_r = logits */
    omni_router_forward(logits, probs, lse, x, w, 1, 1, 4);
    int32_t ex[2];
    float prob[2], gate[2];
    omni_router_topk(ex, prob, gate, logits, probs, NULL, 1, 4, 2, true);
    cr_assert_eq(ex[0], 1);
    cr_assert_eq(ex[1], 2);
    cr_assert_float_eq(gate[0], 0.5f, 1e-6f);
    cr_assert_float_eq(prob[0], probs[1], 0.0f);
    /* a bias of +5 on expert 3 makes it the first choice; its gate is its UNBIASED prob */
    float bias[4] = {0.0f, 0.0f, 0.0f, 5.0f};
    omni_router_topk(ex, prob, gate, logits, probs, bias, 1, 4, 2, false);
    cr_assert_eq(ex[0], 3);
    cr_assert_eq(ex[1], 1);
    cr_assert_float_eq(gate[0], probs[3], 0.0f);
    cr_assert_float_eq(gate[1], probs[1], 0.0f);
    double sum = 0.0;
    for (int e = 0; e < 4; e++)
        sum += (double)probs[e];
    cr_assert_float_eq(sum, 1.0, 1e-6);
    cr_assert_float_eq(lse[0], logf(expf(1) + 2 * expf(3) + 1), 1e-5f);
}

/*
 * Five tokens, three experts, k = 2, capacity 2:
 *   t0: e0 .50, e1 .30    t1: e1 .60, e0 .30    t2: e0 .70, e2 .20
 *   t3: e0 .50, e1 .40    t4: e2 .50, e0 .45
 * Expert 0 is chosen 5 times: it keeps the first choices t2 (.7) and t0 (.5, tied with t3:
 * the lower token wins); the second choices t4 (.45) and t1 (.3) come after every first
 * choice. Expert 1 keeps t1 (a first choice), then t3 (.4) over t0 (.3). Expert 2 keeps both.
 */
Test(gating, over_full_expert_keeps_first_choices_then_probability_then_token)
{
    const int32_t expert[10] = {0, 1, 1, 0, 0, 2, 0, 1, 2, 0};
    const float prob[10] = {.5f, .3f, .6f, .3f, .7f, .2f, .5f, .4f, .5f, .45f};
    int32_t slot[10];
    int64_t kept[3];
    int64_t scratch[2 * 10 + 4];
    cr_assert_eq(omni_router_assign_scratch(5, 3, 2), 24);
    omni_router_assign(slot, kept, expert, prob, 5, 3, 2, 2, scratch);
    /* kept rows are placed in token order within their expert */
    const int32_t want[10] = {0, -1, 0, -1, 1, 0, -1, 1, 1, -1};
    for (int a = 0; a < 10; a++)
        cr_assert_eq(slot[a], want[a], "assignment %d (token %d choice %d): slot %d, want %d", a,
                     a / 2, a % 2, slot[a], want[a]);
    cr_assert_eq(kept[0], 2);
    cr_assert_eq(kept[1], 2);
    cr_assert_eq(kept[2], 2);
    /* dropless keeps everything, in token order */
    omni_router_assign(slot, kept, expert, prob, 5, 3, 2, 5, scratch);
    const int32_t all[10] = {0, 0, 1, 1, 2, 0, 3, 2, 1, 4};
    for (int a = 0; a < 10; a++)
        cr_assert_eq(slot[a], all[a]);
    cr_assert_eq(kept[0], 5);
}

Test(gating, second_choice_with_high_probability_loses_to_any_first_choice)
{
    /* expert 0: t0 first choice with .1, t1 second choice with .9; capacity 1 */
    const int32_t expert[4] = {0, 1, 1, 0};
    const float prob[4] = {.1f, .05f, .95f, .9f};
    int32_t slot[4];
    int64_t kept[2], scratch[16];
    omni_router_assign(slot, kept, expert, prob, 2, 2, 2, 1, scratch);
    cr_assert_eq(slot[0], 0);
    cr_assert_eq(slot[3], -1);
    cr_assert_eq(slot[2], 0); /* expert 1: t1's first choice beats t0's second */
    cr_assert_eq(slot[1], -1);
}

static void sums_of(omni_router_sums *s, const float *probs, const float *lse,
                    const int32_t *expert, const int32_t *slot, const int32_t *task, int64_t n,
                    int64_t k)
{
    omni_router_sums_zero(s);
    omni_router_sums_add(s, probs, lse, expert, slot, task, n, k);
}

Test(gating, losses_match_hand_computed_values)
{
    omni_router_sums s;
    cr_assert_eq(omni_router_sums_create(&s, 2, 2, 0), OMNI_OK);
    const float probs[4] = {0.8f, 0.2f, 0.4f, 0.6f};
    const float lse[2] = {1.0f, 2.0f};
    const int32_t slot[2] = {0, 0}, task[2] = {1, 0};
    /* balanced choices: f = (.5, .5), P = (.6, .4): aux = 2 (.5 .6 + .5 .4) = 1 */
    const int32_t ex_bal[2] = {0, 1};
    sums_of(&s, probs, lse, ex_bal, slot, task, 2, 1);
    double aux, z;
    omni_router_losses(&s, 1, &aux, &z);
    cr_assert_float_eq(aux, 1.0, 1e-6);
    cr_assert_float_eq(z, 2.5, 1e-9); /* (1 + 4) / 2 */
    cr_assert_float_eq(omni_router_load_ratio(&s), 1.0, 1e-12);
    cr_assert_eq(s.task_assigned[1 * 2 + 0], 1.0);
    cr_assert_eq(s.task_assigned[0 * 2 + 1], 1.0);
    double h = -(0.8 * log(0.8) + 0.2 * log(0.2) + 0.4 * log(0.4) + 0.6 * log(0.6));
    cr_assert_float_eq(*s.entropy, h, 1e-6);
    /* collapsed: f = (1, 0): aux = 2 * .6 = 1.2, load ratio 2 */
    const int32_t ex_col[2] = {0, 0};
    sums_of(&s, probs, lse, ex_col, slot, task, 2, 1);
    omni_router_losses(&s, 1, &aux, &z);
    cr_assert_float_eq(aux, 1.2, 1e-6);
    cr_assert_float_eq(omni_router_load_ratio(&s), 2.0, 1e-12);
    /* a dropped assignment still counts in f (counted before the capacity limit) */
    const int32_t slot_drop[2] = {0, -1};
    sums_of(&s, probs, lse, ex_col, slot_drop, NULL, 2, 1);
    omni_router_losses(&s, 1, &aux, &z);
    cr_assert_float_eq(aux, 1.2, 1e-6);
    cr_assert_eq(*s.dropped, 1.0);
    cr_assert_eq(s.kept[0], 1.0);
    omni_router_sums_free(&s);
}

Test(gating, uniform_router_gives_aux_loss_one_and_sums_split_exactly)
{
    /* 6 tokens, 3 experts, k = 1, round-robin choices, uniform probs: aux = 1. Splitting the
     * tokens into two "ranks" and adding their sums gives the same loss. */
    enum { N = 6, E = 3 };
    float probs[N * E], lse[N];
    int32_t ex[N], slot[N];
    for (int t = 0; t < N; t++) {
        for (int e = 0; e < E; e++)
            probs[t * E + e] = 1.0f / 3.0f;
        lse[t] = 0.1f * (float)t;
        ex[t] = t % E;
        slot[t] = 0;
    }
    omni_router_sums all, a, b;
    cr_assert_eq(omni_router_sums_create(&all, E, 0, 0), OMNI_OK);
    cr_assert_eq(omni_router_sums_create(&a, E, 0, 0), OMNI_OK);
    cr_assert_eq(omni_router_sums_create(&b, E, 0, 0), OMNI_OK);
    sums_of(&all, probs, lse, ex, slot, NULL, N, 1);
    sums_of(&a, probs, lse, ex, slot, NULL, 2, 1);
    sums_of(&b, probs + 2 * E, lse + 2, ex + 2, slot + 2, NULL, N - 2, 1);
    for (int64_t i = 0; i < a.len; i++)
        a.buf[i] += b.buf[i];
    double aux, z, aux2, z2;
    omni_router_losses(&all, 1, &aux, &z);
    omni_router_losses(&a, 1, &aux2, &z2);
    cr_assert_float_eq(aux, 1.0, 1e-6);
    cr_assert_float_eq(aux2, aux, 1e-12);
    cr_assert_float_eq(z2, z, 1e-12);
    omni_router_sums_free(&all);
    omni_router_sums_free(&a);
    omni_router_sums_free(&b);
}

Test(gating, loss_gradients_match_finite_differences_of_the_losses)
{
    /* aux + z as a function of the logits of 3 tokens, with the counts held fixed */
    enum { N = 3, E = 4, K = 2 };
    const float logits0[N * E] = {0.3f, -0.2f, 1.1f, 0.4f, -0.7f, 0.2f,
                                  0.5f, 0.9f,  1.3f, 0.1f, -0.4f, 0.0f};
    const int32_t ex[N * K] = {2, 3, 3, 2, 0, 3};
    const int32_t slot[N * K] = {0, 0, 0, 0, 0, 0};
    const double ca = 0.7, cz = 0.3;
    omni_router_sums s;
    cr_assert_eq(omni_router_sums_create(&s, E, 0, 0), OMNI_OK);
    float probs[N * E], lse[N], dprobs[N * E] = {0}, dlogits[N * E];
    /* forward through d = N "features" with x = identity rows: logits = W_r rows */
    float eye[N * N] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    float logits[N * E];
    omni_router_forward(logits, probs, lse, eye, logits0, N, N, E);
    sums_of(&s, probs, lse, ex, slot, NULL, N, K);
    omni_router_aux_backward(dprobs, &s, ca, K, N);
    omni_router_softmax_backward(dlogits, dprobs, probs, N, E);
    omni_router_z_backward(dlogits, probs, lse, &s, cz, N);
    for (int i = 0; i < N * E; i++) {
        double f[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            float w[N * E];
            memcpy(w, logits0, sizeof w);
            w[i] += sgn ? -1e-3f : 1e-3f;
            omni_router_forward(logits, probs, lse, eye, w, N, N, E);
            sums_of(&s, probs, lse, ex, slot, NULL, N, K);
            double aux, z;
            omni_router_losses(&s, K, &aux, &z);
            f[sgn] = ca * aux + cz * z;
        }
        double fd = (f[0] - f[1]) / 2e-3;
        cr_assert(fabs(fd - (double)dlogits[i]) < 1e-3 + 1e-2 * fabs(fd), "logit %d: fd %g, %g", i,
                  fd, (double)dlogits[i]);
    }
    omni_router_sums_free(&s);
}

Test(gating, gate_backward_through_renormalisation_matches_finite_differences)
{
    const float p0[3] = {0.5f, 0.2f, 0.3f};
    const int32_t ex[2] = {2, 0};
    const float dg[2] = {0.7f, -1.3f};
    float dprobs[3] = {0};
    float prob[2] = {p0[2], p0[0]};
    omni_router_gate_backward(dprobs, dg, ex, prob, 1, 3, 2, true);
    for (int e = 0; e < 3; e++) {
        double f[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            double p[3] = {p0[0], p0[1], p0[2]};
            p[e] += sgn ? -1e-4 : 1e-4;
            double S = p[2] + p[0];
            f[sgn] = (double)dg[0] * p[2] / S + (double)dg[1] * p[0] / S;
        }
        double fd = (f[0] - f[1]) / 2e-4;
        cr_assert_float_eq((double)dprobs[e], fd, 1e-4);
    }
}

Test(gating, bias_update_moves_toward_underloaded_experts)
{
    float bias[4] = {0.0f, 0.5f, 0.0f, -0.25f};
    const double load[4] = {10.0, 2.0, 6.0, 6.0}; /* mean 6 */
    omni_router_bias_update(bias, load, 4, 0.01);
    cr_assert_float_eq(bias[0], -0.01f, 1e-7f);
    cr_assert_float_eq(bias[1], 0.51f, 1e-7f);
    cr_assert_float_eq(bias[2], 0.0f, 0.0f);
    cr_assert_float_eq(bias[3], -0.25f, 0.0f);
}

Test(gating, jitter_is_bounded_and_independent_of_how_tokens_are_split)
{
    enum { N = 6, D = 5 };
    float x[N * D], whole[N * D], part[N * D];
    for (int i = 0; i < N * D; i++)
        x[i] = 1.0f + 0.1f * (float)i;
    omni_router_jitter(whole, x, 0.1f, 7, 1, 3, 100, NULL, N, D);
    omni_router_jitter(part, x, 0.1f, 7, 1, 3, 100, NULL, 2, D);
    omni_router_jitter(part + 2 * D, x + 2 * D, 0.1f, 7, 1, 3, 102, NULL, N - 2, D);
    bool differs = false;
    for (int i = 0; i < N * D; i++) {
        cr_assert_eq(whole[i], part[i]);
        float u = whole[i] / x[i];
        cr_assert(u >= 0.9f - 1e-6f && u <= 1.1f + 1e-6f);
        differs |= fabsf(u - 1.0f) > 1e-3f;
    }
    cr_assert(differs);
    /* a row map: rows 1 and 4 alone, at their own positions */
    const int64_t rows[2] = {1, 4};
    float xs[2 * D], sel[2 * D];
    memcpy(xs, x + 1 * D, D * sizeof(float));
    memcpy(xs + D, x + 4 * D, D * sizeof(float));
    omni_router_jitter(sel, xs, 0.1f, 7, 1, 3, 100, rows, 2, D);
    cr_assert_eq(memcmp(sel, whole + 1 * D, D * sizeof(float)), 0);
    cr_assert_eq(memcmp(sel + D, whole + 4 * D, D * sizeof(float)), 0);
    /* another step draws other noise */
    omni_router_jitter(part, x, 0.1f, 7, 1, 4, 100, NULL, N, D);
    cr_assert_neq(memcmp(part, whole, sizeof whole), 0);
}

/* The entropy of a distribution, written out with logarithms (the code uses lse - p.l). */
static double entropy_of(const float *p, int n)
{
    double h = 0;
    for (int i = 0; i < n; i++)
        h -= (double)p[i] * log((double)p[i]);
    return h;
}

Test(gating, route_tables_equal_a_hand_count_by_task_and_modality)
{
    /* 4 tokens, 3 experts, top-2. logits = log p, so lse = 0 and the probabilities are
     * exact. t1 loses its second choice (expert 2), t2 its second (expert 1). */
    enum { N = 4, E = 3, K = 2 };
    const float probs[N * E] = {.5f, .3f, .2f, .1f, .6f, .3f, .7f, .2f, .1f, .25f, .25f, .5f};
    float logits[N * E], lse[N] = {0};
    for (int i = 0; i < N * E; i++)
        logits[i] = logf(probs[i]);
    const int32_t expert[N * K] = {0, 1, 1, 2, 0, 1, 2, 0};
    const int32_t slot[N * K] = {0, 0, 1, -1, 1, -1, 0, 2};
    const int32_t task[N] = {0, 1, 0, -1}; /* t3: none */
    const int32_t mod[N] = {OMNI_MOD_TEXT, OMNI_MOD_TEXT, OMNI_MOD_AUDIO, OMNI_MOD_CONTROL};
    double tbuf[64], mbuf[64];
    cr_assert_eq(omni_route_table_len(2, E), 22);
    cr_assert_eq(omni_route_table_len(OMNI_MOD_COUNT, E), 44);
    memset(tbuf, 0, sizeof tbuf);
    memset(mbuf, 0, sizeof mbuf);
    omni_route_table bt, bm;
    omni_route_table_bind(&bt, tbuf, 2, E);
    omni_route_table_bind(&bm, mbuf, OMNI_MOD_COUNT, E);
    omni_route_tables_add(&bt, task, &bm, mod, logits, probs, lse, expert, slot, N, K);

    /* by task: task 0 = t0, t2; task 1 = t1 */
    const double t_kept[2 * E] = {2, 1, 0, 0, 1, 0};
    const double t_drop[2 * E] = {0, 1, 0, 0, 0, 1};
    const double t_prob[2 * E] = {1.2, .5, .3, .1, .6, .3};
    for (int i = 0; i < 2 * E; i++) {
        cr_assert_eq(bt.kept[i], t_kept[i], "task kept[%d] = %g", i, bt.kept[i]);
        cr_assert_eq(bt.dropped[i], t_drop[i], "task dropped[%d] = %g", i, bt.dropped[i]);
        cr_assert_float_eq(bt.prob[i], t_prob[i], 1e-6, "task prob[%d] = %g", i, bt.prob[i]);
    }
    cr_assert_eq(bt.tokens[0], 2.0);
    cr_assert_eq(bt.tokens[1], 1.0);
    cr_assert_float_eq(bt.entropy[0], entropy_of(probs, E) + entropy_of(probs + 2 * E, E), 1e-6);
    cr_assert_float_eq(bt.entropy[1], entropy_of(probs + E, E), 1e-6);

    /* by modality: text = t0, t1; image none; audio = t2; control = t3 */
    const double m_kept[OMNI_MOD_COUNT * E] = {1, 2, 0, 0, 0, 0, 1, 0, 0, 1, 0, 1};
    const double m_drop[OMNI_MOD_COUNT * E] = {0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0};
    const double m_prob[OMNI_MOD_COUNT * E] = {.6, .9, .5, 0, 0, 0, .7, .2, .1, .25, .25, .5};
    for (int i = 0; i < OMNI_MOD_COUNT * E; i++) {
        cr_assert_eq(bm.kept[i], m_kept[i], "modality kept[%d] = %g", i, bm.kept[i]);
        cr_assert_eq(bm.dropped[i], m_drop[i], "modality dropped[%d] = %g", i, bm.dropped[i]);
        cr_assert_float_eq(bm.prob[i], m_prob[i], 1e-6, "modality prob[%d] = %g", i, bm.prob[i]);
    }
    const double m_tok[OMNI_MOD_COUNT] = {2, 0, 1, 1};
    for (int g = 0; g < OMNI_MOD_COUNT; g++)
        cr_assert_eq(bm.tokens[g], m_tok[g]);
    cr_assert_eq(bm.entropy[OMNI_MOD_IMAGE], 0.0);
    cr_assert_float_eq(bm.entropy[OMNI_MOD_CONTROL], entropy_of(probs + 3 * E, E), 1e-6);
    cr_assert_str_eq(omni_modality_name(OMNI_MOD_CONTROL), "control");

    /* adding the same tokens again doubles every sum (tables accumulate) */
    omni_route_tables_add(&bt, task, &bm, mod, logits, probs, lse, expert, slot, N, K);
    cr_assert_eq(bt.kept[0], 4.0);
    cr_assert_eq(bm.dropped[OMNI_MOD_AUDIO * E + 1], 2.0);
}

/*
 * Task routing: three tasks, four experts, k = 1. Task 0 has 2 tokens in the batch, task 1
 * none, task 2 one. The losses count the two present tasks once each, whatever their
 * token counts: choices e1 (task 0) and e1 (task 2), so f = (0, 1, 0, 0),
 * P_1 = (p_0,1 + p_2,1) / 2, aux = 4 P_1; z = (lse_0^2 + lse_2^2) / 2. Task 1's row (choice
 * e0, large lse) is absent and counts nowhere.
 */
Test(gating, task_losses_count_present_tasks_once)
{
    enum { T = 3, E = 4 };
    const float probs[T * E] = {0.1f, 0.6f, 0.2f, 0.1f, 0.7f, 0.1f,
                                0.1f, 0.1f, 0.3f, 0.4f, 0.2f, 0.1f};
    const float lse[T] = {1.0f, 9.0f, 2.0f};
    const int32_t t_expert[T] = {1, 0, 1};
    omni_router_sums s;
    cr_assert_eq(omni_router_sums_create(&s, E, T, 0), OMNI_OK);
    omni_router_sums_zero(&s);
    /* the token-level sums of the batch: 2 tokens of task 0, 1 of task 2 */
    const int32_t tok_task[3] = {0, 0, 2}, tok_ex[3] = {1, 1, 1}, slot[3] = {0, 1, 2};
    float tok_probs[3 * E], tok_lse[3];
    for (int i = 0; i < 3; i++) {
        memcpy(tok_probs + i * E, probs + tok_task[i] * E, sizeof(float) * E);
        tok_lse[i] = lse[tok_task[i]];
    }
    omni_router_sums_add(&s, tok_probs, tok_lse, tok_ex, slot, tok_task, 3, 1);
    cr_assert_float_eq(omni_router_task_count(&s, 1), 2.0, 0.0);
    double aux, z;
    omni_router_task_losses(&s, probs, lse, t_expert, 1, &aux, &z);
    cr_assert_float_eq(aux, 4.0 * (0.6 + 0.4) / 2.0, 1e-6);
    cr_assert_float_eq(z, (1.0 + 4.0) / 2.0, 1e-6);
    omni_router_sums_free(&s);
}

/* aux + z of task routing as functions of the task logits (choices and counts held), and
 * the split of the gradient over two "ranks" by their tokens of each task. */
Test(gating, task_loss_gradients_match_finite_differences_and_split_over_ranks)
{
    enum { T = 3, E = 4, K = 2, N = 7 };
    const float logits0[T * E] = {0.3f, -0.2f, 1.1f, 0.4f, -0.7f, 0.2f,
                                  0.5f, 0.9f,  1.3f, 0.1f, -0.4f, 0.0f};
    /* tokens: tasks of 7 tokens; rank A holds the first 3, rank B the other 4 */
    const int32_t tok_task[N] = {0, 2, 0, 2, 2, 0, 2};
    const double ca = 0.7, cz = 0.3;
    float eye[T * T] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    float logits[T * E], probs[T * E], lse[T], prob[T * K], gate[T * K];
    int32_t t_ex[T * K];
    omni_router_sums s;
    cr_assert_eq(omni_router_sums_create(&s, E, T, 0), OMNI_OK);
    /* the sums of the batch's tokens, from the task rows */
    omni_router_forward(logits, probs, lse, eye, logits0, T, T, E);
    omni_router_topk(t_ex, prob, gate, logits, probs, NULL, T, E, K, false);
    omni_router_sums_zero(&s);
    for (int i = 0; i < N; i++) {
        int32_t slot[K] = {0, 0};
        omni_router_sums_add(&s, probs + tok_task[i] * E, lse + tok_task[i], t_ex + tok_task[i] * K,
                             slot, &tok_task[i], 1, K);
    }
    double all[T] = {3, 0, 4}, part_a[T] = {2, 0, 1}, part_b[T] = {1, 0, 3};
    float dprobs[T * E] = {0}, dlogits[T * E];
    omni_router_task_aux_backward(dprobs, &s, t_ex, all, ca, K);
    omni_router_softmax_backward(dlogits, dprobs, probs, T, E);
    omni_router_task_z_backward(dlogits, probs, lse, &s, all, cz, K);
    for (int i = 0; i < T * E; i++) {
        double f[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            float w[T * E], pl[T * E], pp[T * E], pls[T];
            memcpy(w, logits0, sizeof w);
            w[i] += sgn ? -1e-3f : 1e-3f;
            omni_router_forward(pl, pp, pls, eye, w, T, T, E);
            double aux, z;
            omni_router_task_losses(&s, pp, pls, t_ex, K, &aux, &z);
            f[sgn] = ca * aux + cz * z;
        }
        double fd = (f[0] - f[1]) / 2e-3;
        cr_assert(fabs(fd - (double)dlogits[i]) < 1e-3 + 1e-2 * fabs(fd), "logit %d: fd %g, %g", i,
                  fd, (double)dlogits[i]);
        if (i / E == 1)
            cr_assert_eq(dlogits[i], 0.0f, "task 1 is not in the batch: no gradient");
    }
    /* two ranks' shares add up to the whole */
    float da[T * E] = {0}, db[T * E] = {0}, la[T * E], lb[T * E];
    omni_router_task_aux_backward(da, &s, t_ex, part_a, ca, K);
    omni_router_softmax_backward(la, da, probs, T, E);
    omni_router_task_z_backward(la, probs, lse, &s, part_a, cz, K);
    omni_router_task_aux_backward(db, &s, t_ex, part_b, ca, K);
    omni_router_softmax_backward(lb, db, probs, T, E);
    omni_router_task_z_backward(lb, probs, lse, &s, part_b, cz, K);
    for (int i = 0; i < T * E; i++)
        cr_assert_float_eq(la[i] + lb[i], dlogits[i], 1e-6f, "logit %d", i);
    omni_router_sums_free(&s);
}

/*
 * LIMoE's entropy losses on hand-made routing, two experts: text tokens with logits (0, 0)
 * and (ln 3, 0) (p = (.5, .5), (.75, .25)), an image patch with (0, 0), and a token of no
 * modality (-1, not counted). local = (H(.5) + H(.75)) / 2 + H(.5); the text mean (.625,
 * .375) has entropy 0.6616 < 0.68, the image mean ln 2 = 0.6931 > 0.68: global = -0.6616.
 */
Test(gating, entropy_losses_match_hand_values_and_the_threshold)
{
    enum { N = 4, E = 2 };
    const float w[N * E] = {0.0f, 0.0f, logf(3.0f), 0.0f, 0.0f, 0.0f, 5.0f, -5.0f};
    const float eye[N * N] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
    const int32_t mod[N] = {OMNI_MOD_TEXT, OMNI_MOD_TEXT, OMNI_MOD_IMAGE, -1};
    float logits[N * E], probs[N * E], lse[N];
    omni_router_forward(logits, probs, lse, eye, w, N, N, E);
    omni_router_sums s;
    cr_assert_eq(omni_router_sums_create(&s, E, 0, OMNI_MOD_COUNT), OMNI_OK);
    omni_router_sums_zero(&s);
    omni_router_sums_add_modality(&s, logits, probs, lse, mod, N);
    cr_assert_eq(s.mod_tokens[OMNI_MOD_TEXT], 2.0);
    cr_assert_eq(s.mod_tokens[OMNI_MOD_IMAGE], 1.0);
    cr_assert_eq(s.mod_tokens[OMNI_MOD_AUDIO] + s.mod_tokens[OMNI_MOD_CONTROL], 0.0);
    double h5 = log(2.0), h75 = -(0.75 * log(0.75) + 0.25 * log(0.25));
    double hmean = -(0.625 * log(0.625) + 0.375 * log(0.375));
    double local, global;
    omni_router_entropy_losses(&s, 0.68, &local, &global);
    cr_assert_float_eq(local, (h5 + h75) / 2.0 + h5, 1e-6);
    cr_assert_float_eq(global, -hmean, 1e-6);
    omni_router_entropy_losses(&s, 0.7, &local, &global); /* both below: both count */
    cr_assert_float_eq(global, -hmean - h5, 1e-6);
    omni_router_entropy_losses(&s, 0.5, &local, &global); /* none below */
    cr_assert_eq(global, 0.0);
    /* the token of no modality gets no gradient, the image patch none from the inactive
     * global term */
    float dprobs[N * E] = {0};
    double scratch[E];
    omni_router_entropy_backward(dprobs, logits, lse, mod, &s, 0.0, 1.0, 0.68, N, scratch);
    cr_assert_eq(dprobs[3 * E] + dprobs[3 * E + 1], 0.0f);
    cr_assert_eq(dprobs[2 * E] + dprobs[2 * E + 1], 0.0f);
    cr_assert_float_eq(dprobs[0], (float)((log(0.625) + 1.0) / 2.0), 1e-6f);
    omni_router_sums_free(&s);
}

Test(gating, expert_choice_capacity_over_the_batch)
{
    cr_assert_eq(omni_router_choice_capacity(2, 1.0, 10, 4), 5);  /* ceil(5.0) */
    cr_assert_eq(omni_router_choice_capacity(2, 1.25, 10, 4), 7); /* ceil(6.25) */
    cr_assert_eq(omni_router_choice_capacity(1, 0.01, 10, 4), 1); /* at least one */
    cr_assert_eq(omni_router_choice_capacity(4, 2.0, 10, 4), 10); /* at most every token */
    cr_assert_eq(omni_router_choice_capacity(2, 1.0, 0, 4), 0);
}

/*
 * One expert over 7 tokens, capacity 3: scores .2 .9 .5 .9 .1 .5 .5 -> tokens 1 and 3 (.9,
 * tied: both), then .5 three times: the lowest index, token 2. Capacity 0 takes none and a
 * capacity above the batch takes all.
 */
Test(gating, expert_choice_selects_top_scores_ties_to_the_lower_token)
{
    const float score[7] = {.2f, .9f, .5f, .9f, .1f, .5f, .5f};
    float chosen[7];
    int64_t heap[7];
    omni_router_choice_select(chosen, score, 7, 3, heap);
    const float want[7] = {0, 1, 1, 1, 0, 0, 0};
    for (int i = 0; i < 7; i++)
        cr_assert_eq(chosen[i], want[i], "token %d", i);
    omni_router_choice_select(chosen, score, 7, 4, heap);
    cr_assert(chosen[5] == 1.0f && chosen[6] == 0.0f);
    omni_router_choice_select(chosen, score, 7, 0, heap);
    for (int i = 0; i < 7; i++)
        cr_assert_eq(chosen[i], 0.0f);
    omni_router_choice_select(chosen, score, 7, 9, heap);
    for (int i = 0; i < 7; i++)
        cr_assert_eq(chosen[i], 1.0f);
}

/*
 * Three tokens, three experts: t0 chosen by e0 and e2, t1 by none, t2 by e0. The layout is
 * E wide (choice c = expert c), slots count each expert's tokens in token order, gates are
 * the probabilities; the sums count the choices as assigned and kept and t1 as one drop; the
 * tables put t1's drop at its most probable expert (e1). The fallback picks the top-k logits.
 */
Test(gating, expert_choice_layout_sums_tables_and_fallback)
{
    const float chosen[9] = {1, 0, 1, 0, 0, 0, 1, 0, 0};
    const float probs[9] = {.5f, .2f, .3f, .3f, .4f, .3f, .6f, .3f, .1f};
    const float logits[9] = {0, -1, -.5f, 0, .3f, 0, 1, 0, -1};
    const float lse[3] = {1, 1, 1};
    int32_t ex[9], sl[9];
    float pr[9], g[9];
    int64_t kept[3];
    omni_router_choice_layout(ex, sl, pr, g, kept, chosen, probs, 3, 3);
    const int32_t want_slot[9] = {0, -1, 0, -1, -1, -1, 1, -1, -1};
    for (int a = 0; a < 9; a++) {
        cr_assert_eq(ex[a], a % 3);
        cr_assert_eq(sl[a], want_slot[a], "assignment %d", a);
        cr_assert_eq(g[a], probs[a]);
        cr_assert_eq(pr[a], probs[a]);
    }
    cr_assert(kept[0] == 2 && kept[1] == 0 && kept[2] == 1);

    omni_router_sums s;
    cr_assert_eq(omni_router_sums_create(&s, 3, 2, 0), OMNI_OK);
    omni_router_sums_zero(&s);
    const int32_t task[3] = {0, 1, 1};
    omni_router_choice_sums_add(&s, probs, lse, chosen, task, 3);
    cr_assert(s.assigned[0] == 2 && s.assigned[1] == 0 && s.assigned[2] == 1);
    cr_assert(s.kept[0] == 2 && s.kept[1] == 0 && s.kept[2] == 1);
    cr_assert_eq(*s.dropped, 1.0);
    cr_assert_eq(*s.tokens, 3.0);
    cr_assert(s.task_assigned[0] == 1 && s.task_assigned[2] == 1 && s.task_assigned[3] == 1);
    omni_router_sums_free(&s);

    double buf_a[3 * 3 + 2 * 3], buf_b[3 * 3 + 2 * 1];
    omni_route_table a, b;
    omni_route_table_bind(&a, buf_a, 3, 3);
    omni_route_table_bind(&b, buf_b, 1, 3);
    memset(buf_a, 0, sizeof buf_a);
    memset(buf_b, 0, sizeof buf_b);
    const int32_t ga[3] = {0, 1, 2}, gb[3] = {0, 0, 0};
    omni_route_tables_add_choice(&a, ga, &b, gb, logits, probs, lse, chosen, 3);
    cr_assert(a.kept[0] == 1 && a.kept[2] == 1 && a.kept[6] == 1);
    cr_assert_eq(a.dropped[3 + 1], 1.0); /* t1 (group 1): its most probable expert, e1 */
    cr_assert(b.kept[0] == 2 && b.kept[2] == 1 && b.dropped[1] == 1 && b.tokens[0] == 3);

    float fb[9];
    omni_router_choice_fallback(fb, logits, 3, 3, 2);
    const float want_fb[9] = {1, 0, 1, 1, 1, 0, 1, 1, 0}; /* t1: .3 then 0 (tie -> e0) */
    for (int a2 = 0; a2 < 9; a2++)
        cr_assert_eq(fb[a2], want_fb[a2], "fallback %d", a2);
}
