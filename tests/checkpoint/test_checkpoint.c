/* checkpoint: file names, and whether a checkpoint's experiment matches the current one
 * (no MPI needed; the parallel parts are in ckpt_mpi.c). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "ckpt_private.h"

static const char base_yaml[] =
    "experiment: {name: t, seed: 3}\n"
    "model: {d_model: 64, n_layers: 4, n_heads: 4, d_ff: 128, context: 32}\n"
    "moe: {num_experts: 8, top_k: 2, every: 2, expert_ff: 96}\n"
    "data: {files: [d.h5], tasks: {a: 1.0, b: 2.0}, batch: 8}\n"
    "optim: {steps: 100, lr: 1.0e-3}\n";

/* The effective YAML of base_yaml with `sets` applied: what a checkpoint stores. */
static char *effective(const char *const *sets, int n)
{
    omni_experiment x;
    cr_assert_eq(omni_experiment_parse(&x, base_yaml, strlen(base_yaml), "t.yaml", sets, n),
                 OMNI_OK, "%s", omni_error_message());
    char *text;
    cr_assert_eq(omni_experiment_to_yaml(&x, &text), OMNI_OK);
    return text;
}

static void current(omni_experiment *x, const char *const *sets, int n)
{
    cr_assert_eq(omni_experiment_parse(x, base_yaml, strlen(base_yaml), "t.yaml", sets, n), OMNI_OK,
                 "%s", omni_error_message());
}

Test(checkpoint, file_name_is_zero_padded_and_parses_back)
{
    char name[64];
    omni_ckpt_file_name(200, name, sizeof name);
    cr_assert_str_eq(name, "ckpt-00000200.h5");
    cr_assert_eq(ckpt_name_step(name), 200);
    omni_ckpt_file_name(123456789012, name, sizeof name);
    cr_assert_str_eq(name, "ckpt-123456789012.h5");
    cr_assert_eq(ckpt_name_step(name), 123456789012);
}

Test(checkpoint, name_step_rejects_tmp_and_other_names)
{
    cr_assert_eq(ckpt_name_step("ckpt-00000200.h5.tmp"), -1);
    cr_assert_eq(ckpt_name_step("ckpt-.h5"), -1);
    cr_assert_eq(ckpt_name_step("ckpt-12x.h5"), -1);
    cr_assert_eq(ckpt_name_step("latest"), -1);
    cr_assert_eq(ckpt_name_step("ckpt-99999999999999999999999.h5"), -1);
    cr_assert_eq(ckpt_name_step("xckpt-1.h5"), -1);
}

Test(checkpoint, format_dims_lists_the_shape)
{
    char s[64];
    int64_t d[3] = {8, 16, 24};
    ckpt_format_dims(s, sizeof s, 3, d);
    cr_assert_str_eq(s, "[8, 16, 24]");
}

Test(checkpoint, descriptor_checks_catch_bad_rows_and_names)
{
    float x[4];
    omni_ckpt_tensor t = {
        .name = "params/a", .rank = 2, .dims = {2, 2}, .data = x, .row_lo = 0, .row_hi = 2};
    cr_assert_eq(ckpt_check_descriptor(&t), OMNI_OK);
    t.row_hi = 3;
    cr_assert_eq(ckpt_check_descriptor(&t), OMNI_ERR_INTERNAL);
    t.row_hi = 2;
    t.name = "/params/a";
    cr_assert_eq(ckpt_check_descriptor(&t), OMNI_ERR_INTERNAL);
    t.name = "params/a";
    t.dims[1] = 0;
    cr_assert_eq(ckpt_check_descriptor(&t), OMNI_ERR_INTERNAL);
    t.dims[1] = 2;
    t.rank = 5;
    cr_assert_eq(ckpt_check_descriptor(&t), OMNI_ERR_INTERNAL);
}

Test(checkpoint, same_experiment_matches_with_nothing_changed)
{
    char *ck = effective(NULL, 0);
    omni_experiment now;
    current(&now, NULL, 0);
    char changed[256] = "junk";
    cr_assert_eq(omni_ckpt_check_experiment("c.h5", ck, &now, changed, sizeof changed), OMNI_OK);
    cr_assert_str_eq(changed, "");
    free(ck);
}

Test(checkpoint, model_key_mismatch_names_the_first_key)
{
    static const struct {
        const char *set, *says;
    } cases[] = {
        {"model.d_model=128", "model.d_model is 64 in the checkpoint, 128 in the experiment"},
        {"model.attention=prefix", "model.attention is causal in the checkpoint, prefix"},
        {"model.context=64", "model.context is 32"},
        {"moe.num_experts=4", "moe.num_experts is 8 in the checkpoint, 4 in the experiment"},
        {"moe.top_k=1", "moe.top_k is 2"},
        {"moe.every=1", "moe.every is 2"},
        {"moe.expert_ff=32", "moe.expert_ff is 96"},
        {"moe.shared_experts=1", "moe.shared_experts is 0"},
    };
    char *ck = effective(NULL, 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        omni_experiment now;
        const char *sets[] = {cases[i].set, "optim.steps=500"};
        current(&now, sets, 2);
        omni_status st = omni_ckpt_check_experiment("runs/x/c.h5", ck, &now, NULL, 0);
        cr_assert_eq(st, OMNI_ERR_CKPT, "%s accepted", cases[i].set);
        cr_assert(strstr(omni_error_message(), "runs/x/c.h5: checkpoint of another model") != NULL,
                  "%s", omni_error_message());
        cr_assert(strstr(omni_error_message(), cases[i].says) != NULL, "%s: %s", cases[i].set,
                  omni_error_message());
    }
    free(ck);
}

Test(checkpoint, task_list_is_left_to_the_task_table_weights_are_training_keys)
{
    char *ck = effective(NULL, 0);
    omni_experiment now;
    /* The order of data.tasks makes the task table, which resume compares itself. */
    const char *swapped = "experiment: {name: t, seed: 3}\n"
                          "model: {d_model: 64, n_layers: 4, n_heads: 4, d_ff: 128, context: 32}\n"
                          "moe: {num_experts: 8, top_k: 2, every: 2, expert_ff: 96}\n"
                          "data: {files: [d.h5], tasks: {b: 2.0, a: 1.0}, batch: 8}\n"
                          "optim: {steps: 100, lr: 1.0e-3}\n";
    cr_assert_eq(omni_experiment_parse(&now, swapped, strlen(swapped), "s.yaml", NULL, 0), OMNI_OK);
    cr_assert_eq(omni_ckpt_check_experiment("c.h5", ck, &now, NULL, 0), OMNI_OK, "%s",
                 omni_error_message());

    const char *weights = "experiment: {name: t, seed: 3}\n"
                          "model: {d_model: 64, n_layers: 4, n_heads: 4, d_ff: 128, context: 32}\n"
                          "moe: {num_experts: 8, top_k: 2, every: 2, expert_ff: 96}\n"
                          "data: {files: [d.h5], tasks: {a: 5.0, b: 2.0}, batch: 8}\n"
                          "optim: {steps: 100, lr: 1.0e-3}\n";
    cr_assert_eq(omni_experiment_parse(&now, weights, strlen(weights), "w.yaml", NULL, 0), OMNI_OK);
    char changed[256];
    cr_assert_eq(omni_ckpt_check_experiment("c.h5", ck, &now, changed, sizeof changed), OMNI_OK,
                 "%s", omni_error_message());
    cr_assert(strstr(changed, "data.tasks") != NULL, "%s", changed);
    free(ck);
}

Test(checkpoint, training_keys_that_changed_are_listed)
{
    char *ck = effective(NULL, 0);
    omni_experiment now;
    const char *sets[] = {"optim.steps=300", "optim.lr=0.002", "moe.aux_loss=0.1",
                          "checkpoint.keep=5"};
    current(&now, sets, 4);
    char changed[512];
    cr_assert_eq(omni_ckpt_check_experiment("c.h5", ck, &now, changed, sizeof changed), OMNI_OK,
                 "%s", omni_error_message());
    cr_assert_str_eq(changed, "moe.aux_loss 0.01 -> 0.1; optim.steps 100 -> 300; optim.lr 0.001 "
                              "-> 0.002; checkpoint.keep 3 -> 5");
    /* A short buffer is cut, never overrun. */
    char small[16];
    cr_assert_eq(omni_ckpt_check_experiment("c.h5", ck, &now, small, sizeof small), OMNI_OK);
    cr_assert_eq(strlen(small), sizeof small - 1);
    free(ck);
}

Test(checkpoint, unparsable_checkpoint_experiment_is_a_checkpoint_error)
{
    omni_experiment now;
    current(&now, NULL, 0);
    omni_status st = omni_ckpt_check_experiment("c.h5", "model: {d_model: [", &now, NULL, 0);
    cr_assert_eq(st, OMNI_ERR_CKPT);
    cr_assert(strstr(omni_error_message(), "c.h5: its experiment text is invalid") != NULL, "%s",
              omni_error_message());
}
