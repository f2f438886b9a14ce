/* experts: micro-batches (data.micro_batch). omni_moe_route of a whole batch, then forward and
 * backward window by window with its decisions, equal one forward and backward of the whole
 * batch: outputs, input gradients, parameter gradients, statistics and losses, with capacity
 * drops, the aux, z and entropy losses, jitter and a shared expert on; for each router. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "experts.h"

enum { D = 8, W = 3, C = 6, N = W * C, N_TASKS = 3 };

static void setup(omni_experiment *x, omni_router_kind router)
{
    omni_experiment_defaults(x);
    x->experiment.seed = 5;
    x->model.d_model = D;
    x->model.n_layers = 2;
    x->model.context = C;
    x->moe.every = 2; /* block 1 */
    x->moe.num_experts = 4;
    x->moe.top_k = 2;
    x->moe.expert_ff = 6;
    x->moe.capacity_factor = 0.75; /* drops */
    x->moe.shared_experts = 1;
    x->moe.router = router;
    x->moe.aux_loss = router == OMNI_ROUTER_EXPERT_CHOICE ? 0.0 : 0.5;
    x->moe.z_loss = 0.1;
    x->moe.jitter = router == OMNI_ROUTER_TASK ? 0.0 : 0.2;
    x->moe.entropy.local = 0.3;
    x->moe.entropy.global = 0.3;
    x->moe.entropy.threshold = 5.0;
}

static omni_moe *make(const omni_experiment *x, int64_t pass_tokens)
{
    omni_moe_comm c;
    omni_moe_comm_local(&c);
    omni_moe *m;
    cr_assert_eq(omni_moe_create_passes(&m, x, N, pass_tokens, N_TASKS, &c), OMNI_OK, "%s",
                 omni_error_message());
    omni_moe_init_params(m);
    omni_moe_zero_grad(m);
    omni_moe_set_step(m, 3, 40, true);
    return m;
}

static void close_to(const float *a, const float *b, int64_t n, float tol, const char *what)
{
    for (int64_t i = 0; i < n; i++)
        cr_assert(fabsf(a[i] - b[i]) <= tol * (1.0f + fabsf(b[i])), "%s[%lld]: %g vs %g", what,
                  (long long)i, (double)a[i], (double)b[i]);
}

static void check_router(omni_router_kind router)
{
    omni_experiment x;
    setup(&x, router);
    uint8_t kind[N];
    int32_t task[N];
    for (int t = 0; t < N; t++) {
        kind[t] = t % 5 == 1 ? OMNI_POS_IMAGE : OMNI_POS_TOKEN;
        task[t] = (t / C + t) % N_TASKS;
    }
    kind[C - 1] = kind[2 * C + 4] = kind[2 * C + 5] = OMNI_POS_PAD; /* padding in two windows */
    task[C - 1] = task[2 * C + 4] = task[2 * C + 5] = -1;
    omni_batch b = {.n_seq = W, .context = C, .kind = kind, .task = task};
    float in[N * D], dout[N * D], out[N * D], din[N * D] = {0}, mout[N * D], mdin[N * D] = {0};
    omni_rng r;
    omni_rng_init(&r, 1, "test/micro", 0);
    omni_rng_fill_normal(&r, 0, N * D, 0.0f, 1.0f, in);
    omni_rng_fill_normal(&r, N * D, N * D, 0.0f, 1.0f, dout);

    omni_moe *whole = make(&x, N), *micro = make(&x, C);
    cr_assert_eq(omni_moe_forward(whole, 1, out, in, &b, N), OMNI_OK, "%s", omni_error_message());
    cr_assert_eq(omni_moe_backward(whole, 1, din, dout, &b, N), OMNI_OK);

    cr_assert_eq(omni_moe_route(micro, 1, in, &b, N), OMNI_OK, "%s", omni_error_message());
    for (int q = W - 1; q >= 0; q--) { /* any order of the passes */
        omni_batch v = omni_batch_windows(&b, q, 1);
        omni_moe_window(micro, q);
        cr_assert_eq(omni_moe_forward(micro, 1, mout + q * C * D, in + q * C * D, &v, C), OMNI_OK,
                     "%s", omni_error_message());
        cr_assert_eq(omni_moe_backward(micro, 1, mdin + q * C * D, dout + q * C * D, &v, C),
                     OMNI_OK);
    }
    close_to(mout, out, N * D, 1e-5f, "output");
    close_to(mdin, din, N * D, 1e-5f, "input gradient");
    float *p, *g, *mp, *mg, *am, *av;
    int64_t n, nd, mn, mnd;
    omni_moe_buffers(whole, &p, &g, &am, &av, &n, &nd);
    omni_moe_buffers(micro, &mp, &mg, &am, &av, &mn, &mnd);
    cr_assert_eq(n, mn);
    close_to(mg, g, n, 1e-5f, "parameter gradient");
    double gsum = 0.0;
    for (int64_t i = 0; i < n; i++)
        gsum += fabs((double)g[i]);
    cr_assert(gsum > 0.0);

    const omni_router_sums *s = omni_moe_layer_stats(whole, 0),
                           *ms = omni_moe_layer_stats(micro, 0);
    cr_assert_eq(s->len, ms->len);
    for (int64_t i = 0; i < s->len; i++)
        cr_assert_eq(s->buf[i], ms->buf[i], "statistic %lld", (long long)i);
    cr_assert(*s->dropped > 0.0 || router == OMNI_ROUTER_EXPERT_CHOICE, "no drops to test");
    cr_assert_eq(omni_moe_loss(whole), omni_moe_loss(micro));
    omni_moe_free(whole);
    omni_moe_free(micro);
}

Test(experts_micro, windows_after_a_route_equal_the_whole_batch_topk)
{
    check_router(OMNI_ROUTER_TOPK);
}

Test(experts_micro, windows_after_a_route_equal_the_whole_batch_expert_choice)
{
    check_router(OMNI_ROUTER_EXPERT_CHOICE);
}

Test(experts_micro, windows_after_a_route_equal_the_whole_batch_task_routing)
{
    check_router(OMNI_ROUTER_TASK);
}

Test(experts_micro, a_window_outside_the_routed_batch_is_refused)
{
    omni_experiment x;
    setup(&x, OMNI_ROUTER_TOPK);
    uint8_t kind[N] = {0};
    int32_t task[N] = {0};
    omni_batch b = {.n_seq = W, .context = C, .kind = kind, .task = task};
    float in[N * D] = {0}, out[N * D];
    omni_moe *m = make(&x, C);
    omni_batch two = omni_batch_windows(&b, 0, 2);
    cr_assert_eq(omni_moe_route(m, 1, in, &two, 2 * C), OMNI_OK);
    omni_batch v = omni_batch_windows(&b, 2, 1);
    omni_moe_window(m, 2);
    cr_assert_eq(omni_moe_forward(m, 1, out, in, &v, C), OMNI_ERR_INTERNAL);
    /* a pass larger than the pass buffers */
    omni_moe_window(m, 0);
    cr_assert_eq(omni_moe_forward(m, 1, out, in, &two, 2 * C), OMNI_ERR_INTERNAL);
    omni_moe_free(m);
}
