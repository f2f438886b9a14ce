/*
 * experts: finite-difference gradient checks of the whole MoE layer — router, gates,
 * renormalisation, routed and shared experts, load-balance and z-losses — on
 * L = sum(out * R) + aux_loss * aux + z_loss * z, against omni_moe_backward.
 *
 * Central differences with step h = 2e-3 on float32 code, the loss summed in double.
 * Router jitter (training) is covered with its noise fixed by the step. Task routing
 * (moe.router: task) runs on a batch of three tasks and checks the task embeddings too;
 * LIMoE's entropy losses (moe.entropy) on a batch of text, image, audio and control
 * positions; expert choice (moe.router: expert_choice) in training, where each expert
 * takes its capacity of the batch's tokens, with tokens chosen by no expert.
 * Tolerance per coordinate: |fd - analytic| <= 2e-3 + 2e-2 * max(|fd|, |analytic|).
 * A coordinate whose perturbation changes any routing decision (top-k choice or drop) is
 * not differentiable there; such coordinates are skipped and must stay rare (< 2%).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "experts.h"

enum { NT = 12, D = 8, FF = 6 };

typedef struct {
    int64_t k;
    double cf;
    bool normalize;
    int64_t shared;
    int64_t experts;
    double jitter; /* training with router jitter (fixed step, so the noise is fixed) */
    bool task;     /* moe.router: task, positions of tasks t % N_TASKS */
    double ent_local, ent_global, ent_threshold; /* moe.entropy (a batch of 4 modalities) */
    bool ec; /* moe.router: expert_choice, in training (no aux loss: the config refuses it) */
} grad_case;

enum { N_TASKS = 3 };

/* The batch of the test: every position of task t % N_TASKS (only kind and task are read by
 * the MoE layer), a token; with the entropy losses positions 1, 5, 9 are image patches and
 * 2, 6, 10 audio patches, and task 2 is a control task (set in make). */
static uint8_t kinds[NT];
static int32_t tasks[NT];
static omni_batch batch = {.n_seq = 1, .context = NT, .kind = kinds, .task = tasks};

static const omni_batch *batch_of(const grad_case *gc)
{
    bool entropy = gc->ent_local > 0.0 || gc->ent_global > 0.0;
    if (!gc->task && !entropy)
        return NULL;
    for (int t = 0; t < NT; t++) {
        kinds[t] = OMNI_POS_TOKEN, tasks[t] = t % N_TASKS;
        if (entropy && t % 4 == 1)
            kinds[t] = OMNI_POS_IMAGE;
        if (entropy && t % 4 == 2)
            kinds[t] = OMNI_POS_AUDIO;
    }
    return &batch;
}

static omni_moe *make(const grad_case *gc, omni_experiment *x)
{
    omni_experiment_defaults(x);
    x->experiment.seed = 3;
    x->model.d_model = D;
    x->model.n_layers = 1;
    x->moe.every = 1;
    x->moe.num_experts = gc->experts;
    x->moe.top_k = gc->k;
    x->moe.expert_ff = FF;
    x->moe.capacity_factor = gc->cf;
    x->moe.normalize_topk = gc->normalize;
    x->moe.aux_loss = gc->ec ? 0.0 : 0.3;
    x->moe.z_loss = 0.05;
    x->moe.shared_experts = gc->shared;
    x->moe.jitter = gc->jitter;
    x->moe.router = gc->task ? OMNI_ROUTER_TASK
                    : gc->ec ? OMNI_ROUTER_EXPERT_CHOICE
                             : OMNI_ROUTER_TOPK;
    x->moe.entropy.local = gc->ent_local;
    x->moe.entropy.global = gc->ent_global;
    x->moe.entropy.threshold = gc->ent_threshold;
    omni_moe_comm comm;
    omni_moe_comm_local(&comm);
    omni_moe *m;
    cr_assert_eq(omni_moe_create(&m, x, NT, N_TASKS, &comm), OMNI_OK, "%s", omni_error_message());
    omni_moe_set_task_modality(m, 2, OMNI_MOD_CONTROL);
    /* weights large enough that the router is decisive and outputs are O(1) */
    float *p, *g, *am, *av;
    int64_t np, nd;
    omni_moe_buffers(m, &p, &g, &am, &av, &np, &nd);
    omni_rng r;
    omni_rng_init(&r, 11, "test/params", 0);
    omni_rng_fill_normal(&r, 0, np, 0.0f, 0.5f, p);
    omni_moe_set_step(m, 7, 100, gc->jitter > 0.0 || gc->ec);
    return m;
}

static double loss_of(omni_moe *m, const float *x, const float *R, float *out, const omni_batch *b)
{
    cr_assert_eq(omni_moe_forward(m, 0, out, x, b, NT), OMNI_OK, "%s", omni_error_message());
    double L = omni_moe_loss(m);
    for (int i = 0; i < NT * D; i++)
        L += (double)out[i] * (double)R[i];
    return L;
}

/* Routing decisions of the last forward, to detect a perturbation that flips one. */
static void routing(omni_moe *m, int32_t *buf, int64_t k)
{
    const int32_t *ex, *sl;
    int64_t n;
    omni_moe_layer_routing(m, 0, &ex, &sl, &n);
    for (int64_t a = 0; a < n * k; a++)
        buf[a] = ex[a] * 2 + (sl[a] >= 0);
}

static bool close_enough(double fd, double an)
{
    double mag = fabs(fd) > fabs(an) ? fabs(fd) : fabs(an);
    return fabs(fd - an) <= 2e-3 + 2e-2 * mag;
}

static void check(const grad_case *gc)
{
    omni_experiment xp;
    omni_moe *m = make(gc, &xp);
    const omni_batch *b = batch_of(gc);
    const int64_t k = gc->ec ? gc->experts : gc->k; /* the routing's width */
    float x[NT * D], R[NT * D], out[NT * D], din[NT * D] = {0};
    omni_rng r;
    omni_rng_init(&r, 5, "test/input", 0);
    omni_rng_fill_normal(&r, 0, NT * D, 0.0f, 1.0f, x);
    omni_rng_fill_normal(&r, NT * D, NT * D, 0.0f, 1.0f, R);
    int32_t base[NT * 8], now[NT * 8];

    loss_of(m, x, R, out, b);
    routing(m, base, k);
    const omni_router_sums *s = omni_moe_layer_stats(m, 0);
    double dropped = *s->dropped;
    if (gc->ec)
        cr_assert_gt(dropped, 0.0, "the expert-choice case must leave tokens unchosen");
    else if (gc->cf > 0.0)
        cr_assert_gt(dropped, 0.0, "the capacity case must drop assignments");
    else
        cr_assert_eq(dropped, 0.0);
    omni_moe_zero_grad(m);
    cr_assert_eq(omni_moe_backward(m, 0, din, R, b, NT), OMNI_OK);

    float *p, *g, *am, *av;
    int64_t np, nd;
    omni_moe_buffers(m, &p, &g, &am, &av, &np, &nd);
    float *grad = malloc((size_t)np * sizeof(float));
    memcpy(grad, g, (size_t)np * sizeof(float));
    const float h = 2e-3f;
    int checked = 0, skipped = 0, bad = 0;
    /* every input coordinate, then every parameter */
    for (int64_t i = 0; i < NT * D + np; i++) {
        float *v = i < NT * D ? &x[i] : &p[i - NT * D];
        double an = i < NT * D ? (double)din[i] : (double)grad[i - NT * D];
        float keep = *v;
        *v = keep + h;
        double lp = loss_of(m, x, R, out, b);
        routing(m, now, k);
        bool flipped = memcmp(now, base, (size_t)(NT * k) * sizeof(int32_t)) != 0;
        *v = keep - h;
        double lm = loss_of(m, x, R, out, b);
        routing(m, now, k);
        flipped |= memcmp(now, base, (size_t)(NT * k) * sizeof(int32_t)) != 0;
        *v = keep;
        if (flipped) {
            skipped++;
            continue;
        }
        double fd = (lp - lm) / (2.0 * (double)h);
        checked++;
        if (!close_enough(fd, an)) {
            bad++;
            cr_log_error("coordinate %lld (%s): fd %.6g analytic %.6g", (long long)i,
                         i < NT * D ? "input" : "param", fd, an);
        }
    }
    cr_log_info("%d checked, %d skipped", checked, skipped);
    cr_assert_eq(bad, 0, "%d of %d coordinates off", bad, checked);
    cr_assert_lt(skipped * 50, checked, "%d coordinates flip the routing", skipped);
    free(grad);
    omni_moe_free(m);
}

Test(experts, moe_gradient_top1_with_drops)
{
    grad_case gc = {.k = 1, .cf = 1.0, .normalize = false, .shared = 0, .experts = 4};
    check(&gc);
}

Test(experts, moe_gradient_top2_with_drops_normalized)
{
    grad_case gc = {.k = 2, .cf = 1.0, .normalize = true, .shared = 0, .experts = 4};
    check(&gc);
}

Test(experts, moe_gradient_top2_dropless_unnormalized)
{
    grad_case gc = {.k = 2, .cf = 0.0, .normalize = false, .shared = 0, .experts = 4};
    check(&gc);
}

Test(experts, moe_gradient_top1_dropless_with_shared_experts)
{
    grad_case gc = {.k = 1, .cf = 0.0, .normalize = false, .shared = 2, .experts = 3};
    check(&gc);
}

Test(experts, moe_gradient_top2_drops_with_shared_expert)
{
    grad_case gc = {.k = 2, .cf = 0.75, .normalize = true, .shared = 1, .experts = 4};
    check(&gc);
}

Test(experts, moe_gradient_top2_with_router_jitter)
{
    grad_case gc = {.k = 2, .cf = 1.0, .normalize = true, .experts = 4, .jitter = 0.2};
    check(&gc);
}

/* Task routing: every token of a task takes its task's experts; the gradients reach the
 * router and the task embeddings through the gates and the task-level aux and z-losses. */
Test(experts, moe_gradient_task_routing_top2_with_drops)
{
    grad_case gc = {.k = 2, .cf = 1.0, .normalize = true, .experts = 4, .task = true};
    check(&gc);
}

Test(experts, moe_gradient_task_routing_top1_dropless_with_shared_expert)
{
    grad_case gc = {.k = 1, .cf = 0.0, .normalize = false, .shared = 1, .experts = 3, .task = true};
    check(&gc);
}

/* LIMoE's entropy losses over text, image, audio and control positions: local and global,
 * the threshold high enough that the global term counts for every modality. */
Test(experts, moe_gradient_entropy_losses_local_and_global)
{
    grad_case gc = {.k = 2,
                    .cf = 1.0,
                    .normalize = true,
                    .experts = 4,
                    .ent_local = 0.4,
                    .ent_global = 0.7,
                    .ent_threshold = 10.0};
    check(&gc);
    omni_experiment xp;
    omni_moe *m = make(&gc, &xp);
    float x[NT * D], out[NT * D];
    omni_rng r;
    omni_rng_init(&r, 5, "test/input", 0);
    omni_rng_fill_normal(&r, 0, NT * D, 0.0f, 1.0f, x);
    cr_assert_eq(omni_moe_forward(m, 0, out, x, batch_of(&gc), NT), OMNI_OK);
    double local, global;
    omni_moe_layer_entropy(m, 0, &local, &global);
    /* four modalities, each entropy in (0, log 4] */
    cr_assert(local > 0.0 && local <= 4.0 * log(4.0) + 1e-9, "local %g", local);
    cr_assert(global < 0.0 && global >= -4.0 * log(4.0) - 1e-9, "global %g", global);
    omni_moe_free(m);
}

/* With the task router, and a threshold below every modality's mean entropy: the global
 * term is off (only local counts). */
Test(experts, moe_gradient_entropy_local_with_task_routing)
{
    grad_case gc = {.k = 1,
                    .cf = 0.0,
                    .experts = 4,
                    .task = true,
                    .ent_local = 0.5,
                    .ent_global = 0.5,
                    .ent_threshold = 1e-6};
    check(&gc);
    omni_experiment xp;
    omni_moe *m = make(&gc, &xp);
    float x[NT * D], out[NT * D];
    memset(x, 0, sizeof x);
    cr_assert_eq(omni_moe_forward(m, 0, out, x, batch_of(&gc), NT), OMNI_OK);
    double local, global;
    omni_moe_layer_entropy(m, 0, &local, &global);
    cr_assert(local > 0.0, "local %g", local);
    cr_assert_eq(global, 0.0, "the global term is off below the threshold");
    omni_moe_free(m);
}

/* Expert choice: each of 4 experts takes ceil(cf k 12 / 4) tokens of the 12 by its router
 * probability; gates are the probabilities (normalize_topk has no effect); tokens chosen by
 * no expert output 0 (plus shared experts). */
Test(experts, moe_gradient_expert_choice_k2)
{
    check(&(grad_case){.k = 2, .cf = 0.5, .normalize = true, .experts = 4, .ec = true});
}

Test(experts, moe_gradient_expert_choice_k1_with_shared_expert_and_entropy)
{
    check(&(grad_case){.k = 1,
                       .cf = 1.0,
                       .normalize = false,
                       .experts = 4,
                       .shared = 1,
                       .ec = true,
                       .ent_local = 0.1,
                       .ent_global = 0.2,
                       .ent_threshold = 3.0});
}
