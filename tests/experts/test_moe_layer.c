/* experts: the MoE layers' bookkeeping — padding, per-task statistics, the tensor table,
 * keyed initialisation across process counts, and errors. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "experts.h"

enum { D = 8 };

static void setup(omni_experiment *x)
{
    omni_experiment_defaults(x);
    x->experiment.seed = 21;
    x->model.d_model = D;
    x->model.n_layers = 4;
    x->moe.every = 2; /* blocks 1 and 3 */
    x->moe.num_experts = 4;
    x->moe.top_k = 2;
    x->moe.expert_ff = 6;
    x->moe.capacity_factor = 0.0;
    x->moe.shared_experts = 1;
}

static omni_moe *make(const omni_experiment *x, int64_t max_tokens, int rank, int size)
{
    omni_moe_comm c;
    omni_moe_comm_local(&c);
    c.rank = rank;
    c.size = size;
    omni_moe *m;
    cr_assert_eq(omni_moe_create(&m, x, max_tokens, 3, &c), OMNI_OK, "%s", omni_error_message());
    omni_moe_init_params(m);
    return m;
}

Test(experts, padding_positions_are_not_routed_and_output_zero)
{
    omni_experiment x;
    setup(&x);
    enum { N = 10 };
    omni_moe *m = make(&x, N, 0, 1), *ref = make(&x, N, 0, 1);
    uint8_t kind[N] = {0};
    int32_t task[N];
    for (int t = 0; t < N; t++)
        task[t] = t % 3;
    kind[3] = kind[7] = kind[8] = OMNI_POS_PAD;
    task[3] = task[7] = task[8] = -1;
    omni_batch b = {.n_seq = 1, .context = N, .kind = kind, .task = task};
    float in[N * D], out[N * D], dout[N * D], din[N * D] = {0};
    omni_rng r;
    omni_rng_init(&r, 1, "test/pad", 0);
    omni_rng_fill_normal(&r, 0, N * D, 0.0f, 1.0f, in);
    omni_rng_fill_normal(&r, N * D, N * D, 0.0f, 1.0f, dout);
    memset(out, 0x7f, sizeof out);
    cr_assert_eq(omni_moe_forward(m, 1, out, in, &b, N), OMNI_OK);
    omni_moe_zero_grad(m);
    cr_assert_eq(omni_moe_backward(m, 1, din, dout, &b, N), OMNI_OK);
    /* the same tokens without the padding, no batch */
    const int keep[7] = {0, 1, 2, 4, 5, 6, 9};
    float cin[7 * D], cout[7 * D], cdout[7 * D], cdin[7 * D] = {0};
    for (int i = 0; i < 7; i++) {
        memcpy(cin + i * D, in + keep[i] * D, sizeof(float) * D);
        memcpy(cdout + i * D, dout + keep[i] * D, sizeof(float) * D);
    }
    cr_assert_eq(omni_moe_forward(ref, 1, cout, cin, NULL, 7), OMNI_OK);
    omni_moe_zero_grad(ref);
    cr_assert_eq(omni_moe_backward(ref, 1, cdin, cdout, NULL, 7), OMNI_OK);
    for (int i = 0; i < 7; i++)
        for (int j = 0; j < D; j++) {
            cr_assert_eq(out[keep[i] * D + j], cout[i * D + j]);
            cr_assert_eq(din[keep[i] * D + j], cdin[i * D + j]);
        }
    for (int t = 3; t < N; t += 4)
        for (int j = 0; j < D; j++)
            cr_assert_eq(out[t * D + j], 0.0f);
    for (int j = 0; j < D; j++)
        cr_assert_eq(din[8 * D + j], 0.0f);
    const omni_router_sums *s = omni_moe_layer_stats(m, 0);
    cr_assert_eq(*s->tokens, 7.0);
    /* per task: tokens 0..9 minus padding have tasks 0,1,2,1,2,0,0 -> 3, 2, 2 tokens */
    double per_task[3] = {0};
    for (int q = 0; q < 3; q++)
        for (int e = 0; e < 4; e++)
            per_task[q] += s->task_assigned[q * 4 + e];
    cr_assert_eq(per_task[0], 3.0 * 2);
    cr_assert_eq(per_task[1], 2.0 * 2);
    cr_assert_eq(per_task[2], 2.0 * 2);
    omni_moe_free(m);
    omni_moe_free(ref);
}

Test(experts, routing_tables_count_tasks_and_modalities_of_training_forwards)
{
    omni_experiment x;
    setup(&x);
    enum { N = 8 };
    omni_moe *m = make(&x, N, 0, 1);
    omni_moe_set_task_modality(m, 2, OMNI_MOD_CONTROL); /* task 2 is a control task */
    /* t0 token of task 0, t1 image patch of 0, t2 audio patch of 1, t3 token of 1,
     * t4 padding, t5 token of 2, t6 image patch of 2, t7 token of 2 */
    uint8_t kind[N] = {OMNI_POS_TOKEN, OMNI_POS_IMAGE, OMNI_POS_AUDIO, OMNI_POS_TOKEN,
                       OMNI_POS_PAD,   OMNI_POS_TOKEN, OMNI_POS_IMAGE, OMNI_POS_TOKEN};
    int32_t task[N] = {0, 0, 1, 1, -1, 2, 2, 2};
    omni_batch b = {.n_seq = 1, .context = N, .kind = kind, .task = task};
    float in[N * D], out[N * D];
    omni_rng r;
    omni_rng_init(&r, 1, "test/modality", 0);
    omni_rng_fill_normal(&r, 0, N * D, 0.0f, 1.0f, in);
    omni_moe_set_step(m, 0, 0, true);
    cr_assert_eq(omni_moe_forward(m, 1, out, in, &b, N), OMNI_OK);
    omni_route_table bt, bm;
    omni_moe_layer_tables(m, 0, &bt, &bm);
    const double want_task[3] = {2, 2, 3}, want_mod[OMNI_MOD_COUNT] = {2, 2, 1, 2};
    for (int g = 0; g < 3; g++)
        cr_assert_eq(bt.tokens[g], want_task[g], "task %d: %g tokens", g, bt.tokens[g]);
    for (int g = 0; g < OMNI_MOD_COUNT; g++)
        cr_assert_eq(bm.tokens[g], want_mod[g], "%s: %g tokens", omni_modality_name(g),
                     bm.tokens[g]);
    /* every kept assignment is in the tables, k per token (dropless), probabilities sum to
     * one per token */
    double kept = 0, prob = 0;
    for (int i = 0; i < 3 * 4; i++)
        kept += bt.kept[i], prob += bt.prob[i];
    cr_assert_eq(kept, 7.0 * 2);
    cr_assert_float_eq(prob, 7.0, 1e-5);
    const int32_t *ex, *sl;
    int64_t n;
    omni_moe_layer_routing(m, 0, &ex, &sl, &n);
    cr_assert_eq(n, 7);
    /* the image patch of task 2 (row 5: t6) counts under image, its tokens under control */
    for (int c = 0; c < 2; c++)
        cr_assert_geq(bm.kept[OMNI_MOD_IMAGE * 4 + ex[5 * 2 + c]], 1.0);
    /* an evaluation forward leaves the tables empty */
    omni_moe_set_step(m, 0, 0, false);
    cr_assert_eq(omni_moe_forward(m, 1, out, in, &b, N), OMNI_OK);
    omni_moe_layer_tables(m, 0, &bt, &bm);
    for (int g = 0; g < 3; g++)
        cr_assert_eq(bt.tokens[g], 0.0);
    omni_moe_free(m);
}

Test(experts, tensor_table_names_shapes_and_dense_prefix)
{
    omni_experiment x;
    setup(&x);
    omni_moe *m = make(&x, 4, 1, 2); /* rank 1 of 2: experts 2 and 3 */
    cr_assert_eq(omni_moe_n_layers(m), 2);
    cr_assert_eq(omni_moe_layer_index(m, 1), 0);
    cr_assert_eq(omni_moe_layer_index(m, 2), -1);
    cr_assert_eq(omni_moe_layer_index(m, 3), 1);
    float *p, *g, *am, *av;
    int64_t np, nd;
    omni_moe_buffers(m, &p, &g, &am, &av, &np, &nd);
    const int64_t dense_per_layer = D * 4 + 3 * 1 * D * 6, experts_per_layer = 3 * 2 * D * 6;
    cr_assert_eq(nd, 2 * dense_per_layer);
    cr_assert_eq(np, nd + 2 * experts_per_layer);
    bool seen_w2 = false, seen_bias = false;
    for (int64_t i = 0; i < omni_moe_n_tensors(m); i++) {
        const omni_tensor *t = omni_moe_tensor_at(m, i);
        if (t->trainable)
            cr_assert_eq(t->offset < nd, !t->sharded, "%s", t->name);
        if (strcmp(t->name, "params/layers/03/moe/experts/w2") == 0) {
            seen_w2 = true;
            cr_assert_eq(t->dims[0], 4);
            cr_assert_eq(t->dims[1], 6);
            cr_assert_eq(t->dims[2], D);
            cr_assert_eq(t->row_lo, 2);
            cr_assert_eq(t->row_hi, 4);
            cr_assert(t->sharded && t->per_expert);
            cr_assert_eq(t->group, 3);
            cr_assert_eq(t->numel, 2 * 6 * D);
            cr_assert(t->decay);
        }
        if (strcmp(t->name, "state/layers/01/moe/router/bias") == 0) {
            seen_bias = true;
            cr_assert(!t->trainable);
            cr_assert_eq(t->data, omni_moe_layer_bias(m, 0));
        }
    }
    cr_assert(seen_w2 && seen_bias);
    omni_moe_free(m);
}

Test(experts, initialisation_does_not_depend_on_the_number_of_processes)
{
    omni_experiment x;
    setup(&x);
    omni_moe *one = make(&x, 4, 0, 1), *shard = make(&x, 4, 1, 2);
    for (int64_t i = 0; i < omni_moe_n_tensors(one); i++) {
        const omni_tensor *a = omni_moe_tensor_at(one, i), *b = omni_moe_tensor_at(shard, i);
        cr_assert_str_eq(a->name, b->name);
        int64_t per = a->numel / (a->row_hi - a->row_lo);
        cr_assert_eq(memcmp((const float *)a->data + b->row_lo * per, b->data,
                            (size_t)b->numel * sizeof(float)),
                     0, "%s", a->name);
    }
    /* and the values look like normal(0, 0.02) */
    const omni_tensor *w = omni_moe_tensor_at(one, 0);
    double ss = 0.0;
    for (int64_t i = 0; i < w->numel; i++)
        ss += (double)((const float *)w->data)[i] * (double)((const float *)w->data)[i];
    cr_assert(sqrt(ss / (double)w->numel) > 0.01 && sqrt(ss / (double)w->numel) < 0.03);
    omni_moe_free(one);
    omni_moe_free(shard);
}

Test(experts, hook_rejects_dense_blocks_oversized_calls_and_bad_placements)
{
    omni_experiment x;
    setup(&x);
    omni_moe *m = make(&x, 4, 0, 1);
    float buf[5 * D] = {0};
    cr_assert_eq(omni_moe_forward(m, 0, buf, buf, NULL, 4), OMNI_ERR_INTERNAL);
    cr_assert_eq(omni_moe_forward(m, 1, buf, buf, NULL, 5), OMNI_ERR_INTERNAL);
    cr_assert_eq(omni_moe_forward(m, 1, buf, buf, NULL, 4), OMNI_OK);
    cr_assert_eq(omni_moe_backward(m, 1, buf, buf, NULL, 3), OMNI_ERR_INTERNAL);
    omni_moe_free(m);
    omni_moe_comm c;
    omni_moe_comm_local(&c);
    c.size = 6; /* 4 experts on 6 processes */
    omni_moe *bad = NULL;
    cr_assert_eq(omni_moe_create(&bad, &x, 4, 0, &c), OMNI_ERR_CONFIG);
    cr_assert_null(bad);
    cr_assert(strstr(omni_error_message(), "num_experts") != NULL);
}

Test(experts, adamw_step_moves_parameters_against_the_gradient)
{
    omni_experiment x;
    setup(&x);
    x.optim.weight_decay = 0.0;
    omni_moe *m = make(&x, 4, 0, 1);
    float *p, *g, *am, *av;
    int64_t np, nd;
    omni_moe_buffers(m, &p, &g, &am, &av, &np, &nd);
    float p0 = p[0], p1 = p[nd];
    omni_moe_zero_grad(m);
    g[0] = 2.0f;
    g[nd] = -3.0f;
    omni_adamw a = omni_adamw_at(&x, 0, 0.1, 1.0);
    omni_moe_step(m, &a);
    /* the first bias-corrected Adam step is lr * sign(g) */
    cr_assert_float_eq(p[0], p0 - 0.1f, 1e-5f);
    cr_assert_float_eq(p[nd], p1 + 0.1f, 1e-5f);
    double dense, experts;
    omni_moe_grad_sumsq(m, &dense, &experts);
    cr_assert_float_eq(dense, 4.0, 1e-12);
    cr_assert_float_eq(experts, 9.0, 1e-12);
    omni_moe_free(m);
}
