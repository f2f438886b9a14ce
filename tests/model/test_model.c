/*
 * model: the whole model — parameter table and initialisation, batch checks, the MoE
 * hook, the learning-rate schedule and AdamW, a finite-difference check through the
 * whole model, and a learning test on a copying task.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "model.h"
#include "ops.h"

static omni_model *make(omni_experiment *x, omni_attention mode, int64_t max_seq)
{
    fixture_experiment(x, mode);
    omni_data_dims dims = fixture_dims();
    omni_model *m = NULL;
    cr_assert_eq(omni_model_create(&m, x, &dims, max_seq), OMNI_OK, "%s", omni_error_message());
    return m;
}

Test(model, tensor_table_is_aligned_disjoint_and_named_for_checkpoints)
{
    omni_experiment x;
    omni_model *m = make(&x, OMNI_ATTN_CAUSAL, 2);
    int64_t end = 0;
    for (int64_t i = 0; i < omni_model_n_tensors(m); i++) {
        const omni_tensor *t = omni_model_tensor(m, i);
        cr_assert_eq(t->offset % 16, 0, "%s is not 64-byte aligned", t->name);
        cr_assert_geq(t->offset, end, "%s overlaps", t->name);
        int64_t numel = 1;
        for (int k = 0; k < t->rank; k++)
            numel *= t->dims[k];
        cr_assert_eq(numel, t->numel);
        end = t->offset + t->numel;
        cr_assert_eq(omni_model_find_tensor(m, t->name), i);
    }
    cr_assert_leq(end, omni_model_n_params(m));
    const char *decay[] = {"params/layers/01/attn/wqkv", "params/layers/00/ffn/w2", "params/head/w",
                           "params/embed/img_w"};
    const char *no_decay[] = {"params/embed/tok", "params/embed/pos", "params/embed/img_b",
                              "params/layers/00/attn/norm", "params/head/norm"};
    for (int i = 0; i < 4; i++)
        cr_assert(omni_model_tensor(m, omni_model_find_tensor(m, decay[i]))->decay, "%s", decay[i]);
    for (int i = 0; i < 5; i++)
        cr_assert(!omni_model_tensor(m, omni_model_find_tensor(m, no_decay[i]))->decay, "%s",
                  no_decay[i]);
    const omni_tensor *q = omni_model_tensor(m, omni_model_find_tensor(m, decay[0]));
    cr_assert_eq(q->rank, 2);
    cr_assert_eq(q->dims[0], 16);
    cr_assert_eq(q->dims[1], 48);
    /* The named views point at the table's tensors. */
    cr_assert_eq(omni_model_param_view(m)->layers[1].wqkv, omni_model_params(m) + q->offset);
    cr_assert_eq(omni_model_grad_view(m)->layers[1].wqkv, omni_model_grads(m) + q->offset);
    /* The dimensions indexed by token id (what --remap-tasks moves by task): the rows of
     * the token embedding, the columns of the head, nothing else. */
    for (int64_t i = 0; i < omni_model_n_tensors(m); i++) {
        const omni_tensor *t = omni_model_tensor(m, i);
        unsigned want = !strcmp(t->name, "params/embed/tok") ? 1u
                        : !strcmp(t->name, "params/head/w")  ? 2u
                                                             : 0u;
        cr_assert_eq(t->vocab_dims, want, "%s: vocab_dims %u", t->name, (unsigned)t->vocab_dims);
    }
    omni_model_free(m);
}

static double stddev(const float *p, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += (double)p[i] * (double)p[i];
    return sqrt(s / (double)n);
}

Test(model, init_is_keyed_by_seed_and_scales_residual_projections)
{
    omni_experiment x, y;
    omni_model *a = make(&x, OMNI_ATTN_CAUSAL, 1), *b = make(&y, OMNI_ATTN_CAUSAL, 1);
    omni_model_init_params(a);
    omni_model_init_params(b);
    int64_t n = omni_model_n_params(a);
    cr_assert(memcmp(omni_model_params(a), omni_model_params(b), (size_t)n * sizeof(float)) == 0);
    const omni_param_view *p = omni_model_param_view(a);
    int64_t V = fixture_dims().vocab;
    cr_assert_float_eq(stddev(p->tok, V * 16), 0.02, 0.002);
    /* attn wo and ffn w2 of a 2-layer model: 0.02 / sqrt(4) */
    cr_assert_float_eq(stddev(p->layers[0].wo, 256), 0.01, 0.002);
    cr_assert_float_eq(stddev(p->layers[1].w2, 32 * 16), 0.01, 0.0015);
    cr_assert_float_eq(stddev(p->layers[1].w1, 32 * 16), 0.02, 0.003);
    for (int i = 0; i < 16; i++) {
        cr_assert_eq(p->layers[0].attn_norm[i], 1.0f);
        cr_assert_eq(p->out_norm[i], 1.0f);
        cr_assert_eq(p->img_b[i], 0.0f);
    }
    /* Tensors draw from their own streams: wqkv of layers 0 and 1 differ. */
    cr_assert_neq(p->layers[0].wqkv[0], p->layers[1].wqkv[0]);
    omni_model_free(b);
    y.experiment.seed = 8;
    omni_data_dims dims = fixture_dims();
    cr_assert_eq(omni_model_create(&b, &y, &dims, 1), OMNI_OK);
    omni_model_init_params(b);
    cr_assert_neq(omni_model_param_view(b)->tok[0], p->tok[0]);
    omni_model_free(a);
    omni_model_free(b);
}

Test(model, forward_rejects_bad_batches_with_a_data_error)
{
    omni_experiment x;
    omni_model *m = make(&x, OMNI_ATTN_CAUSAL, 2);
    omni_model_init_params(m);
    omni_batch b = fixture_mixed_batch();
    cr_assert_eq(omni_model_forward(m, &b, NULL), OMNI_OK);
    b.token[3 * 0 + 0] = 99999;
    cr_assert_eq(omni_model_forward(m, &b, NULL), OMNI_ERR_DATA);
    cr_assert(strstr(omni_error_message(), "token id") != NULL, "%s", omni_error_message());
    b.token[0] = OMNI_TOK_TASK0;
    b.patch_row[1] = 2; /* an image patch: rows 0..1 */
    cr_assert_eq(omni_model_forward(m, &b, NULL), OMNI_ERR_DATA);
    b.patch_row[1] = 0;
    b.pos[5] = 12;
    cr_assert_eq(omni_model_forward(m, &b, NULL), OMNI_ERR_DATA);
    b.pos[5] = 5;
    b.n_seq = 3; /* more windows than the model was sized for */
    cr_assert_eq(omni_model_forward(m, &b, NULL), OMNI_ERR_DATA);
    b.n_seq = 2;
    cr_assert_eq(omni_model_forward(m, &b, NULL), OMNI_OK);
    fixture_batch_free(&b);
    omni_model_free(m);
}

/* A stand-in MoE FFN: out = 2 in; backward din += 2 dout. */
typedef struct {
    int forwards, backwards;
} fake_moe;

static omni_status fake_forward(void *ctx, int64_t layer, float *out, const float *in,
                                const omni_batch *b, int64_t n_tokens)
{
    (void)layer, (void)b;
    ((fake_moe *)ctx)->forwards++;
    for (int64_t i = 0; i < n_tokens * 16; i++)
        out[i] = 2.0f * in[i];
    return OMNI_OK;
}

static omni_status fake_backward(void *ctx, int64_t layer, float *din, const float *dout,
                                 const omni_batch *b, int64_t n_tokens)
{
    (void)layer, (void)b;
    ((fake_moe *)ctx)->backwards++;
    for (int64_t i = 0; i < n_tokens * 16; i++)
        din[i] += 2.0f * dout[i];
    return OMNI_OK;
}

Test(model, moe_blocks_need_the_hook_and_use_it)
{
    omni_experiment x;
    fixture_experiment(&x, OMNI_ATTN_CAUSAL);
    x.moe.every = 2; /* block 1 is MoE */
    omni_data_dims dims = fixture_dims();
    omni_model *m = NULL;
    cr_assert_eq(omni_model_create(&m, &x, &dims, 2), OMNI_OK);
    cr_assert_eq(omni_model_find_tensor(m, "params/layers/01/ffn/w1"), -1);
    cr_assert_geq(omni_model_find_tensor(m, "params/layers/01/ffn/norm"), 0);
    cr_assert_geq(omni_model_find_tensor(m, "params/layers/00/ffn/w1"), 0);
    omni_model_init_params(m);
    omni_batch b = fixture_mixed_batch();
    cr_assert_eq(omni_model_forward(m, &b, NULL), OMNI_ERR_INTERNAL);
    cr_assert(strstr(omni_error_message(), "omni_model_set_moe") != NULL);
    fake_moe ctx = {0};
    omni_ffn_hook hook = {.ctx = &ctx, .forward = fake_forward, .backward = fake_backward};
    omni_model_set_moe(m, &hook);
    omni_model_metrics met;
    cr_assert_eq(omni_model_forward(m, &b, &met), OMNI_OK, "%s", omni_error_message());
    cr_assert(isfinite(met.loss));
    cr_assert_eq(omni_model_backward(m, &b), OMNI_OK);
    cr_assert_eq(ctx.forwards, 1);
    cr_assert_eq(ctx.backwards, 1);
    cr_assert_gt(omni_model_grad_sumsq(m), 0.0);
    fixture_batch_free(&b);
    omni_model_free(m);
}

Test(model, lr_warms_up_linearly_then_decays_by_cosine_to_min_lr)
{
    omni_experiment x;
    omni_experiment_defaults(&x);
    x.optim.lr = 1.0, x.optim.min_lr = 0.1, x.optim.warmup = 4, x.optim.steps = 14;
    cr_assert_float_eq(omni_lr_at(&x, 0), 0.25, 1e-12);
    cr_assert_float_eq(omni_lr_at(&x, 3), 1.0, 1e-12);
    cr_assert_float_eq(omni_lr_at(&x, 4), 1.0, 1e-12);
    cr_assert_float_eq(omni_lr_at(&x, 9), 0.55, 1e-12); /* halfway: (1 + 0.1) / 2 */
    cr_assert_float_eq(omni_lr_at(&x, 14), 0.1, 1e-12);
    cr_assert_float_eq(omni_lr_at(&x, 100), 0.1, 1e-12);
    x.optim.grad_clip = 2.0;
    cr_assert_float_eq(omni_clip_scale(&x, 1.0), 1.0, 1e-12);
    cr_assert_float_eq(omni_clip_scale(&x, 4.0), 0.5, 1e-6);
    x.optim.grad_clip = 0.0;
    cr_assert_float_eq(omni_clip_scale(&x, 4.0), 1.0, 1e-12);
}

Test(model, adamw_step_matches_hand_computation_and_rejects_nan_norm)
{
    omni_experiment x;
    omni_model *m = make(&x, OMNI_ATTN_CAUSAL, 1);
    omni_model_init_params(m);
    int iw = omni_model_find_tensor(m, "params/head/w");
    int in = omni_model_find_tensor(m, "params/head/norm");
    int64_t ow = omni_model_tensor(m, iw)->offset, on = omni_model_tensor(m, in)->offset;
    float *p = omni_model_params(m), *g = omni_model_grads(m);
    float w0 = p[ow], n0 = p[on];
    g[ow] = 0.5f, g[on] = -0.25f;
    double lr = omni_lr_at(&x, 0), wd = x.optim.weight_decay;
    cr_assert_eq(omni_model_step(m, 0, 0.1), OMNI_OK);
    /* First step: m_hat = g, v_hat = g^2, so the update is lr * sign(g) (eps aside),
     * plus decay on the matrix only. */
    cr_assert_float_eq((double)p[ow], (double)w0 * (1.0 - lr * wd) - lr, 1e-6);
    cr_assert_float_eq((double)p[on], (double)n0 + lr, 1e-6);
    cr_assert_eq(omni_model_step(m, 1, NAN), OMNI_ERR_NUMERIC);
    omni_model_free(m);
}

/* ---- finite differences through the whole model ----------------------------- */

typedef struct {
    omni_model *m;
    const omni_batch *b;
} whole;

static double whole_f(void *ctx)
{
    whole *w = ctx;
    omni_model_metrics met;
    cr_assert_eq(omni_model_forward(w->m, w->b, &met), OMNI_OK);
    return met.loss;
}

static void check_whole(omni_attention mode)
{
    omni_experiment x;
    omni_model *m = make(&x, mode, 2);
    omni_model_init_params(m);
    /* Larger weights than the init so that every path carries signal. */
    float *p = omni_model_params(m);
    for (int64_t i = 0; i < omni_model_n_tensors(m); i++) {
        const omni_tensor *t = omni_model_tensor(m, i);
        for (int64_t j = 0; j < t->numel; j++)
            p[t->offset + j] *= strstr(t->name, "norm") ? 1.0f : 20.0f;
    }
    omni_batch b = fixture_mixed_batch();
    whole w = {m, &b};
    whole_f(&w);
    omni_model_zero_grad(m);
    cr_assert_eq(omni_model_backward(m, &b), OMNI_OK);
    float *g = omni_model_grads(m);
    float *gcopy = malloc((size_t)omni_model_n_params(m) * sizeof(float));
    memcpy(gcopy, g, (size_t)omni_model_n_params(m) * sizeof(float));
    for (int64_t i = 0; i < omni_model_n_tensors(m); i++) {
        const omni_tensor *t = omni_model_tensor(m, i);
        int64_t off = t->offset, n = t->numel;
        int64_t stride = n > 64 ? n / 32 + 1 : 1;
        if (!strcmp(t->name, "params/embed/tok")) /* the row of 'a', in use */
            off += 'a' * 16, n = 16, stride = 1;
        fixture_check_grad(t->name, p + off, gcopy + off, n, stride, whole_f, &w, 1e-2f, 2e-4,
                           3e-2);
    }
    free(gcopy);
    fixture_batch_free(&b);
    omni_model_free(m);
}

/* Tolerance: 3e-2 relative + 2e-4 absolute on a loss of order 1 evaluated in float32
 * with h = 1e-2 on weights of order 0.4. */
Test(model, whole_model_gradients_match_finite_differences_causal)
{
    check_whole(OMNI_ATTN_CAUSAL);
}

Test(model, whole_model_gradients_match_finite_differences_prefix)
{
    check_whole(OMNI_ATTN_PREFIX);
}

/* ---- learning ---------------------------------------------------------------- */

/* A window of 16: <task> then 7 random letters of 8, <sep>, the same 7 letters; loss
 * on the copy (the letters after <sep>), drawn from the keyed stream at `step`. */
static void copy_batch(omni_batch *b, const omni_rng *r, int64_t step)
{
    b->loss_norm = 0.0;
    for (int64_t s = 0; s < b->n_seq; s++) {
        int32_t letters[7];
        for (int i = 0; i < 7; i++)
            letters[i] = 'a' + (int32_t)(omni_rng_u32(r, (uint64_t)(step * 64 + s * 8 + i)) % 8);
        for (int64_t t = 0; t < 16; t++) {
            int64_t p = s * 16 + t;
            int32_t tok = t == 0   ? OMNI_TOK_TASK0
                          : t < 8  ? letters[t - 1]
                          : t == 8 ? OMNI_TOK_SEP
                                   : letters[t - 9];
            b->kind[p] = OMNI_POS_TOKEN, b->token[p] = tok, b->pos[p] = (int32_t)t;
            b->segment[p] = 0, b->task[p] = 0, b->in_prefix[p] = t < 9;
            b->target[p] = t < 15 ? (t + 1 < 8    ? letters[t]
                                     : t + 1 == 8 ? OMNI_TOK_SEP
                                                  : letters[t - 8])
                                  : -1;
            b->loss_mask[p] = t >= 8 && t < 15;
            b->loss_norm += b->loss_mask[p];
        }
    }
}

/* 200 AdamW steps of 8 windows on a 2-layer model (d 64, 4 heads): the loss on the
 * copied half falls from about ln(vocab) = 7.2 to well under ln(8) = 2.1, the loss of
 * guessing letters without copying (measured when written: 7.17 -> 0.02 in 3 s). We
 * assert that the mean loss of the last 10 steps is < 0.05 x the first (0.36). */
Test(model, learns_to_copy_the_first_half_of_a_window)
{
    omni_experiment x;
    fixture_experiment(&x, OMNI_ATTN_CAUSAL);
    x.model.d_model = 64, x.model.n_heads = 4, x.model.d_ff = 128, x.model.context = 16;
    x.optim.lr = 3e-3, x.optim.min_lr = 3e-4, x.optim.warmup = 20, x.optim.steps = 200;
    x.optim.weight_decay = 0.0, x.optim.grad_clip = 1.0;
    omni_data_dims dims = fixture_dims();
    omni_model *m = NULL;
    cr_assert_eq(omni_model_create(&m, &x, &dims, 8), OMNI_OK, "%s", omni_error_message());
    omni_model_init_params(m);
    omni_batch b = fixture_batch_alloc(8, 16, 4);
    omni_rng r;
    omni_rng_init(&r, 3, "test/copy", 0);
    double first = 0.0, last = 0.0;
    for (int64_t step = 0; step < x.optim.steps; step++) {
        copy_batch(&b, &r, step);
        omni_model_metrics met;
        omni_model_zero_grad(m);
        cr_assert_eq(omni_model_forward(m, &b, &met), OMNI_OK);
        cr_assert_eq(omni_model_backward(m, &b), OMNI_OK);
        cr_assert_eq(omni_model_step(m, step, sqrt(omni_model_grad_sumsq(m))), OMNI_OK);
        if (step == 0)
            first = met.loss;
        if (step >= x.optim.steps - 10)
            last += met.loss / 10.0;
    }
    cr_log_info("copy: loss %.4f -> %.4f", first, last);
    cr_assert_lt(last, 0.05 * first, "loss %.4f -> %.4f", first, last);
    fixture_batch_free(&b);
    omni_model_free(m);
}

/* Records the gradient groups backward announces, and checks each is final then. */
typedef struct {
    omni_model *m;
    int64_t groups[64];
    int n;
    float *snapshot; /* the gradient buffer at the first announcement of each group */
} grads_log;

static omni_status on_grads(void *ctx, int64_t group)
{
    grads_log *log = ctx;
    int64_t first, count;
    omni_model_group_range(log->m, group, &first, &count);
    memcpy(log->snapshot + first, omni_model_grads(log->m) + first, (size_t)count * sizeof(float));
    log->groups[log->n++] = group;
    return OMNI_OK;
}

Test(model, backward_announces_each_gradient_group_once_when_final)
{
    omni_experiment x;
    omni_model *m = make(&x, OMNI_ATTN_CAUSAL, 2);
    omni_model_init_params(m);
    omni_batch b = fixture_mixed_batch();
    int64_t n = omni_model_n_params(m);
    grads_log log = {.m = m, .n = 0, .snapshot = calloc((size_t)n, sizeof(float))};
    omni_model_set_grads_ready(m, on_grads, &log);
    omni_model_zero_grad(m);
    cr_assert_eq(omni_model_forward(m, &b, NULL), OMNI_OK);
    cr_assert_eq(omni_model_backward(m, &b), OMNI_OK);
    /* Head first, blocks from the last, embeddings last. */
    int64_t L = x.model.n_layers;
    cr_assert_eq(log.n, L + 2);
    cr_assert_eq(log.groups[0], OMNI_GRADS_HEAD);
    for (int64_t l = 0; l < L; l++)
        cr_assert_eq(log.groups[1 + l], L - 1 - l);
    cr_assert_eq(log.groups[L + 1], OMNI_GRADS_EMBED);
    /* The groups tile every tensor, and each was final when announced. */
    char *covered = calloc((size_t)n, 1);
    for (int i = 0; i < log.n; i++) {
        int64_t first, count;
        omni_model_group_range(m, log.groups[i], &first, &count);
        cr_assert_gt(count, 0);
        for (int64_t j = first; j < first + count; j++) {
            cr_assert_eq(covered[j], 0, "element %lld in two groups", (long long)j);
            covered[j] = 1;
        }
    }
    for (int64_t i = 0; i < omni_model_n_tensors(m); i++) {
        const omni_tensor *t = omni_model_tensor(m, i);
        for (int64_t j = t->offset; j < t->offset + t->numel; j++)
            cr_assert_eq(covered[j], 1, "%s not in any group", t->name);
    }
    cr_assert_eq(memcmp(log.snapshot, omni_model_grads(m), (size_t)n * sizeof(float)), 0,
                 "a gradient changed after its group was announced");
    free(covered);
    free(log.snapshot);
    fixture_batch_free(&b);
    omni_model_free(m);
}

/*
 * OpenMP threads change nothing: a forward, backward and AdamW step of a model whose
 * attention spans several tiles (context 150, packed samples with prefixes, padding)
 * gives the same loss, logits, gradients and parameters to the bit with 1, 2 and 3
 * threads. OpenBLAS stays on one thread here: its own multi-threaded sgemm can change
 * the last bits of a product (docs/model.md, Threads).
 */
Test(model, results_do_not_depend_on_the_thread_count)
{
    omni_experiment x;
    fixture_experiment(&x, OMNI_ATTN_PREFIX);
    x.model.context = 150, x.model.d_model = 32, x.model.d_ff = 48;
    omni_data_dims dims = fixture_dims();
    omni_batch b = fixture_batch_alloc(3, 150, 4);
    omni_rng r;
    omni_rng_init(&r, 5, "thread-batch", 0);
    for (int64_t p = 0; p < 3 * 150; p++) {
        int64_t t = p % 150, s = p / 150;
        int64_t len = s == 0 ? 70 : s == 1 ? 150 : 100; /* then a second sample or padding */
        bool second = t >= len;
        if (s == 2 && second) {
            b.kind[p] = OMNI_POS_PAD, b.segment[p] = -1, b.task[p] = -1;
            continue;
        }
        b.kind[p] = OMNI_POS_TOKEN;
        b.token[p] = (int32_t)(omni_rng_u32(&r, (uint64_t)p) % 256);
        b.segment[p] = second, b.task[p] = (int32_t)(s % 2);
        b.pos[p] = (int32_t)(second ? t - len : t);
        b.in_prefix[p] = b.pos[p] < 20;
        if (!b.in_prefix[p] && t + 1 < 150) {
            b.target[p] = (int32_t)(omni_rng_u32(&r, (uint64_t)p + 1000) % 256);
            b.loss_mask[p] = 1;
            b.loss_norm += 1.0;
        }
    }
    float *ref = NULL;
    double ref_loss = 0.0;
    int64_t np = 0, nl = 0;
    for (int threads = 1; threads <= 3; threads++) {
        x.parallel.threads = threads;
        cr_assert_eq(omni_blas_set_threads(&x, MPI_COMM_NULL, NULL), OMNI_OK);
        cr_assert_eq(omp_get_max_threads(), threads);
        omni_gemm_set_threads(1);
        omni_model *m = NULL;
        cr_assert_eq(omni_model_create(&m, &x, &dims, 3), OMNI_OK, "%s", omni_error_message());
        omni_model_init_params(m);
        omni_model_metrics met;
        cr_assert_eq(omni_model_forward(m, &b, &met), OMNI_OK, "%s", omni_error_message());
        cr_assert_eq(omni_model_backward(m, &b), OMNI_OK);
        np = omni_model_n_params(m), nl = 3 * 150 * omni_model_vocab(m);
        float *now = malloc((size_t)(2 * np + nl) * sizeof(float));
        cr_assert(now);
        memcpy(now, omni_model_grads(m), (size_t)np * sizeof(float));
        memcpy(now + np, omni_model_logits(m), (size_t)nl * sizeof(float));
        cr_assert_eq(omni_model_step(m, 0, sqrt(omni_model_grad_sumsq(m))), OMNI_OK);
        memcpy(now + np + nl, omni_model_params(m), (size_t)np * sizeof(float));
        if (!ref) {
            ref = now, ref_loss = met.loss;
            cr_assert(met.loss > 0.0);
        } else {
            cr_assert_eq(met.loss, ref_loss, "loss with %d threads differs", threads);
            cr_assert(!memcmp(now, ref, (size_t)np * sizeof(float)),
                      "gradients with %d threads differ", threads);
            cr_assert(!memcmp(now + np, ref + np, (size_t)nl * sizeof(float)),
                      "logits with %d threads differ", threads);
            cr_assert(!memcmp(now + np + nl, ref + np + nl, (size_t)np * sizeof(float)),
                      "parameters after a step with %d threads differ", threads);
            free(now);
        }
        omni_model_free(m);
    }
    free(ref);
    x.parallel.threads = 1;
    omni_blas_set_threads(&x, MPI_COMM_NULL, NULL);
    fixture_batch_free(&b);
}
