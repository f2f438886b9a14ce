/*
 * experts: a tiny model — one MoE layer and nothing else — learns a synthetic task, and
 * the balancing mechanisms keep the experts in use.
 *
 * Task: tokens x in R^8 come from 4 clusters (feature 0 is a constant 1); the target is a
 * cluster-specific linear map y = A_j x, a natural split over 4 experts. Loss: mean over tokens of
 * |out - y|^2 / 2, plus the layer's aux/z losses. The router starts biased: a weight of 1.5 from
 * the constant feature to expert 0, so every token first goes to expert 0. Top-1, dropless, gate =
 * router probability.
 *
 * Assertions (300 AdamW steps of 64 tokens, fixed seeds):
 *  - with aux_loss = 1: the loss falls below 25% of its start, and the max/mean expert
 *    load over the last 20 steps is under 1.5;
 *  - with aux_loss = 0 (same setup): routing stays collapsed, max/mean load above 2.5
 *    (4 would be every token on one expert);
 *  - with aux_loss = 0 and bias_rate = 0.01 (auxiliary-loss-free): max/mean load under 1.5.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "experts.h"

enum { NT = 64, D = 8, E = 4, STEPS = 300 };

typedef struct {
    double first_loss, last_loss, load_ratio;
} learn_result;

static learn_result train(double aux, double bias_rate)
{
    omni_experiment x;
    omni_experiment_defaults(&x);
    x.experiment.seed = 5;
    x.model.d_model = D;
    x.model.n_layers = 1;
    x.moe.every = 1;
    x.moe.num_experts = E;
    x.moe.top_k = 1;
    x.moe.expert_ff = 16;
    x.moe.capacity_factor = 0.0;
    x.moe.normalize_topk = false;
    x.moe.aux_loss = aux;
    x.moe.z_loss = 0.0;
    x.moe.bias_rate = bias_rate;
    x.optim.weight_decay = 0.0;
    omni_moe_comm comm;
    omni_moe_comm_local(&comm);
    omni_moe *m;
    cr_assert_eq(omni_moe_create(&m, &x, NT, 0, &comm), OMNI_OK);
    omni_moe_init_params(m);
    const omni_tensor *wr = omni_moe_tensor_at(m, 0);
    cr_assert(strstr(wr->name, "router/w") != NULL);
    ((float *)wr->data)[0 * E + 0] = 1.5f; /* the constant feature votes for expert 0 */

    /* clusters and their maps */
    float center[E][D], A[E][D * D];
    omni_rng r;
    omni_rng_init(&r, 9, "test/task", 0);
    omni_rng_fill_normal(&r, 0, E * D, 0.0f, 1.5f, &center[0][0]);
    omni_rng_fill_normal(&r, 1000, E * D * D, 0.0f, 1.0f / sqrtf((float)D), &A[0][0]);

    float in[NT * D], y[NT * D], out[NT * D], dout[NT * D], din[NT * D];
    learn_result res = {0};
    double ratio_sum = 0.0;
    int ratio_n = 0;
    for (int step = 0; step < STEPS; step++) {
        omni_rng b;
        omni_rng_init(&b, 9, "test/batch", (uint64_t)step);
        for (int t = 0; t < NT; t++) {
            int j = (int)(omni_rng_u32(&b, (uint64_t)t) % E);
            for (int i = 0; i < D; i++)
                in[t * D + i] =
                    center[j][i] + 0.2f * omni_rng_normal(&b, (uint64_t)(1000 + t * D + i));
            in[t * D + 0] = 1.0f;
            for (int i = 0; i < D; i++) {
                float acc = 0.0f;
                for (int q = 0; q < D; q++)
                    acc += A[j][i * D + q] * in[t * D + q];
                y[t * D + i] = acc;
            }
        }
        omni_moe_set_step(m, step, 0, true);
        cr_assert_eq(omni_moe_forward(m, 0, out, in, NULL, NT), OMNI_OK);
        double loss = 0.0;
        for (int i = 0; i < NT * D; i++) {
            double e = (double)out[i] - (double)y[i];
            loss += 0.5 * e * e / NT;
            dout[i] = (float)(e / NT);
        }
        if (step == 0)
            res.first_loss = loss;
        if (step >= STEPS - 20) {
            res.last_loss += loss / 20.0;
            ratio_sum += omni_router_load_ratio(omni_moe_layer_stats(m, 0));
            ratio_n++;
        }
        omni_moe_zero_grad(m);
        memset(din, 0, sizeof din);
        cr_assert_eq(omni_moe_backward(m, 0, din, dout, NULL, NT), OMNI_OK);
        omni_adamw a = omni_adamw_at(&x, step, 1e-2, 1.0);
        omni_moe_step(m, &a);
        omni_moe_update_bias(m);
    }
    res.load_ratio = ratio_sum / ratio_n;
    omni_moe_free(m);
    return res;
}

Test(experts, moe_learns_with_aux_loss_and_stays_balanced)
{
    learn_result r = train(1.0, 0.0);
    cr_log_info("aux on: loss %.4f -> %.4f, max/mean load %.3f", r.first_loss, r.last_loss,
                r.load_ratio);
    cr_assert_lt(r.last_loss, 0.25 * r.first_loss, "loss %.4f -> %.4f", r.first_loss, r.last_loss);
    cr_assert_lt(r.load_ratio, 1.5, "max/mean load %.3f", r.load_ratio);
}

Test(experts, moe_without_aux_loss_collapses_onto_few_experts)
{
    learn_result r = train(0.0, 0.0);
    cr_log_info("aux off: loss %.4f -> %.4f, max/mean load %.3f", r.first_loss, r.last_loss,
                r.load_ratio);
    cr_assert_gt(r.load_ratio, 2.5, "max/mean load %.3f", r.load_ratio);
}

Test(experts, moe_bias_balancing_without_aux_loss_stays_balanced)
{
    learn_result r = train(0.0, 0.01);
    cr_log_info("bias: loss %.4f -> %.4f, max/mean load %.3f", r.first_loss, r.last_loss,
                r.load_ratio);
    cr_assert_lt(r.load_ratio, 1.5, "max/mean load %.3f", r.load_ratio);
}
