/* Test fixtures of the model suites (see fixture.h). */
#include "fixture.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

omni_batch fixture_batch_alloc(int64_t n_seq, int64_t context, int64_t patch_dim)
{
    int64_t n = n_seq * context;
    omni_batch b = {.n_seq = n_seq, .context = context, .patch_dim = patch_dim};
    b.kind = calloc((size_t)n, 1);
    b.token = calloc((size_t)n, sizeof(int32_t));
    b.patch = calloc((size_t)(n * (patch_dim > 0 ? patch_dim : 1)), sizeof(float));
    b.patch_row = calloc((size_t)n, sizeof(int32_t));
    b.patch_col = calloc((size_t)n, sizeof(int32_t));
    b.pos = calloc((size_t)n, sizeof(int32_t));
    b.segment = calloc((size_t)n, sizeof(int32_t));
    b.in_prefix = calloc((size_t)n, 1);
    b.target = calloc((size_t)n, sizeof(int32_t));
    b.loss_mask = calloc((size_t)n, 1);
    b.task = calloc((size_t)n, sizeof(int32_t));
    cr_assert(b.kind && b.token && b.patch && b.patch_row && b.patch_col && b.pos && b.segment &&
              b.in_prefix && b.target && b.loss_mask && b.task);
    for (int64_t p = 0; p < n; p++)
        b.target[p] = -1, b.token[p] = OMNI_TOK_PAD;
    return b;
}

void fixture_batch_free(omni_batch *b)
{
    free(b->kind), free(b->token), free(b->patch), free(b->patch_row), free(b->patch_col);
    free(b->pos), free(b->segment), free(b->in_prefix), free(b->target), free(b->loss_mask);
    free(b->task);
}

void fixture_pad_window(omni_batch *b, int64_t s)
{
    for (int64_t t = 0; t < b->context; t++) {
        int64_t p = s * b->context + t;
        b->kind[p] = OMNI_POS_PAD, b->token[p] = OMNI_TOK_PAD, b->pos[p] = 0;
        b->segment[p] = -1, b->task[p] = -1, b->target[p] = -1, b->loss_mask[p] = 0;
        b->in_prefix[p] = 0;
    }
}

omni_data_dims fixture_dims(void)
{
    omni_data_dims d = {.n_tasks = 2,
                        .vocab = OMNI_TOK_TASK0 + 2,
                        .image_patch_dim = 4,
                        .audio_patch_dim = 4,
                        .max_rows = 2,
                        .max_cols = 2};
    return d;
}

void fixture_experiment(omni_experiment *x, omni_attention mode)
{
    omni_experiment_defaults(x);
    x->experiment.seed = 7;
    x->model.d_model = 16, x->model.n_layers = 2, x->model.n_heads = 2, x->model.d_ff = 32;
    x->model.context = 12, x->model.attention = mode;
    x->moe.every = 0;
    x->data.n_tasks = 2;
    strcpy(x->data.tasks[0].name, "pics");
    x->data.tasks[0].weight = 1.0, x->data.tasks[0].loss_weight = 1.0;
    strcpy(x->data.tasks[1].name, "words");
    x->data.tasks[1].weight = 1.0, x->data.tasks[1].loss_weight = 0.5;
}

/* One position of a sample: token id (>= 0) or patch kind with its place. */
typedef struct {
    int kind, token, row, col;
} item;

/* Write sample `it` (n items, loss on the targets of items >= first_loss) at window s,
 * offset t0, as segment seg of task `task`; items past the window are cut. */
static int64_t put_sample(omni_batch *b, int64_t s, int64_t t0, const item *it, int n,
                          int first_loss, int seg, int task)
{
    for (int i = 0; i < n && t0 + i < b->context; i++) {
        int64_t p = s * b->context + t0 + i;
        b->kind[p] = (uint8_t)it[i].kind;
        b->token[p] = it[i].kind == OMNI_POS_TOKEN ? it[i].token : OMNI_TOK_PAD;
        b->patch_row[p] = it[i].row, b->patch_col[p] = it[i].col;
        for (int64_t c = 0; c < b->patch_dim; c++)
            b->patch[p * b->patch_dim + c] =
                it[i].kind == OMNI_POS_TOKEN ? 0.0f
                                             : sinf(0.7f * (float)(p * b->patch_dim + c) + 0.3f);
        b->pos[p] = i, b->segment[p] = seg, b->task[p] = task;
        b->in_prefix[p] = i < first_loss;
        bool next = i + 1 < n && t0 + i + 1 < b->context;
        b->target[p] = next && it[i + 1].kind == OMNI_POS_TOKEN ? it[i + 1].token : -1;
        b->loss_mask[p] = next && i + 1 >= first_loss;
        if (b->loss_mask[p])
            b->loss_norm += 1.0;
    }
    return t0 + n;
}

omni_batch fixture_mixed_batch(void)
{
    omni_batch b = fixture_batch_alloc(2, 12, 4);
    const int T = OMNI_POS_TOKEN, I = OMNI_POS_IMAGE, A = OMNI_POS_AUDIO;
    const item pic[] = {{T, OMNI_TOK_TASK0, 0, 0},
                        {I, 0, 0, 0},
                        {I, 0, 0, 1},
                        {I, 0, 1, 0},
                        {I, 0, 1, 1},
                        {T, OMNI_TOK_SEP, 0, 0},
                        {T, 'a', 0, 0},
                        {T, 'b', 0, 0},
                        {T, OMNI_TOK_EOS, 0, 0}};
    const item words[] = {
        {T, OMNI_TOK_TASK0 + 1, 0, 0}, {T, 'x', 0, 0}, {T, 'y', 0, 0}, {T, 'z', 0, 0}};
    const item sound[] = {
        {T, OMNI_TOK_TASK0 + 1, 0, 0}, {A, 0, 0, 0},   {A, 0, 0, 1},           {A, 0, 1, 0},
        {T, OMNI_TOK_SEP, 0, 0},       {T, 'q', 0, 0}, {T, OMNI_TOK_EOS, 0, 0}};
    fixture_pad_window(&b, 1);
    put_sample(&b, 0, 0, pic, 9, 6, 0, 0);
    put_sample(&b, 0, 9, words, 4, 1, 1, 1); /* cut after 'y' by the window's end */
    put_sample(&b, 1, 0, sound, 7, 5, 0, 1);
    return b;
}

int64_t fixture_check_grad(const char *what, float *x, const float *analytic, int64_t n,
                           int64_t stride, fixture_fn f, void *ctx, float h, double atol,
                           double rtol)
{
    int64_t checked = 0;
    for (int64_t i = 0; i < n; i += stride) {
        float x0 = x[i];
        float xp = x0 + h, xm = x0 - h;
        x[i] = xp;
        double fp = f(ctx);
        x[i] = xm;
        double fm = f(ctx);
        x[i] = x0;
        double num = (fp - fm) / ((double)xp - (double)xm);
        double a = analytic[i];
        double tol = atol + rtol * fmax(fabs(a), fabs(num));
        cr_assert(fabs(a - num) <= tol, "%s[%lld]: analytic %.8g, numeric %.8g (tolerance %.3g)",
                  what, (long long)i, a, num, tol);
        checked++;
    }
    return checked;
}
