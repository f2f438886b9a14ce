/*
 * model: the grad-ready hook of omni_model_backward (the worker starts summing a part's
 * gradients over ranks from it, while backward goes on). Each part is reported once, in
 * the order head, blocks last to first, embeddings; and when a part is reported its
 * gradients are final: equal to those at the end of backward.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "model.h"

typedef struct {
    omni_model *m;
    int64_t n_layers;
    int64_t order[16];
    int n_calls;
    float *snapshot; /* [n_params]: each part's gradients as they were when reported */
} listener;

static int64_t part_of(const char *name, int64_t n_layers)
{
    long long l;
    if (sscanf(name, "params/layers/%lld/", &l) == 1)
        return (int64_t)l;
    return strncmp(name, "params/head/", 12) ? -1 : n_layers;
}

static omni_status on_ready(void *ctx, int64_t part)
{
    listener *s = ctx;
    if (s->n_calls < 16)
        s->order[s->n_calls] = part;
    s->n_calls++;
    const float *g = omni_model_grads(s->m);
    for (int i = 0; i < omni_model_n_tensors(s->m); i++) {
        const omni_tensor_info *t = omni_model_tensor(s->m, i);
        if (part_of(t->name, s->n_layers) == part)
            memcpy(s->snapshot + t->offset, g + t->offset, (size_t)t->numel * sizeof(float));
    }
    return OMNI_OK;
}

static omni_status fail_on_block(void *ctx, int64_t part)
{
    (void)ctx;
    return part == 0 ? omni_fail(OMNI_ERR_MPI, "listener failed") : OMNI_OK;
}

Test(model, grad_ready_reports_each_part_once_in_order_with_final_gradients)
{
    omni_experiment x;
    fixture_experiment(&x, OMNI_ATTN_CAUSAL);
    omni_data_dims dims = fixture_dims();
    omni_model *m = NULL;
    cr_assert_eq(omni_model_create(&m, &x, &dims, 2), OMNI_OK, "%s", omni_error_message());
    omni_model_init_params(m);
    listener s = {.m = m, .n_layers = x.model.n_layers};
    s.snapshot = calloc((size_t)omni_model_n_params(m), sizeof(float));
    omni_model_set_grad_ready(m, on_ready, &s);
    omni_batch b = fixture_mixed_batch();
    omni_model_zero_grad(m);
    cr_assert_eq(omni_model_forward(m, &b, NULL), OMNI_OK, "%s", omni_error_message());
    cr_assert_eq(s.n_calls, 0, "forward must not report gradients");
    cr_assert_eq(omni_model_backward(m, &b), OMNI_OK, "%s", omni_error_message());

    cr_assert_eq(s.n_calls, x.model.n_layers + 2);
    cr_assert_eq(s.order[0], x.model.n_layers, "the head first");
    for (int64_t l = x.model.n_layers - 1; l >= 0; l--)
        cr_assert_eq(s.order[x.model.n_layers - l], l, "block %lld in order", (long long)l);
    cr_assert_eq(s.order[x.model.n_layers + 1], -1, "the embeddings last");
    const float *g = omni_model_grads(m);
    int64_t nonzero = 0;
    for (int i = 0; i < omni_model_n_tensors(m); i++) {
        const omni_tensor_info *t = omni_model_tensor(m, i);
        for (int64_t j = 0; j < t->numel; j++) {
            cr_assert_eq(s.snapshot[t->offset + j], g[t->offset + j],
                         "%s[%lld] changed after its part was reported", t->name, (long long)j);
            nonzero += g[t->offset + j] != 0.0f;
        }
    }
    cr_assert_gt(nonzero, 0);

    /* A failing listener stops backward with its status. */
    omni_model_set_grad_ready(m, fail_on_block, NULL);
    cr_assert_eq(omni_model_forward(m, &b, NULL), OMNI_OK);
    cr_assert_eq(omni_model_backward(m, &b), OMNI_ERR_MPI);
    free(s.snapshot);
    fixture_batch_free(&b);
    omni_model_free(m);
}
