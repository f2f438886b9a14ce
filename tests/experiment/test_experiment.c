/* experiment: the strict loader — good files give the documented defaults, and every bad
 * file or --set flag stops with FILE:LINE:COL (or the flag), the key, and what was expected. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiment.h"

#define MINIMAL "experiment: {name: t}\ndata: {files: [a.h5]}\n"

static omni_status parse(omni_experiment *x, const char *text, const char *const *sets, int n)
{
    return omni_experiment_parse(x, text, strlen(text), "exp.yaml", sets, n);
}

Test(experiment, minimal_file_gets_documented_defaults)
{
    omni_experiment x;
    cr_assert_eq(parse(&x, MINIMAL, NULL, 0), OMNI_OK, "%s", omni_error_message());
    cr_assert_str_eq(x.experiment.name, "t");
    cr_assert_str_eq(x.experiment.out_dir, "runs/t");
    cr_assert_eq(x.experiment.seed, 1);
    cr_assert_eq(x.model.d_model, 256);
    cr_assert_eq(x.model.n_layers, 4);
    cr_assert_eq(x.model.n_heads, 4);
    cr_assert_eq(x.model.d_ff, 1024);
    cr_assert_eq(x.model.context, 256);
    cr_assert_eq(x.model.attention, OMNI_ATTN_CAUSAL);
    cr_assert_eq(x.moe.num_experts, 8);
    cr_assert_eq(x.moe.top_k, 2);
    cr_assert_eq(x.moe.every, 2);
    cr_assert_eq(x.moe.expert_ff, 1024);
    cr_assert_eq(x.moe.capacity_factor, 1.25);
    cr_assert(x.moe.normalize_topk);
    cr_assert_eq(x.moe.aux_loss, 0.01);
    cr_assert_eq(x.moe.z_loss, 0.001);
    cr_assert_eq(x.moe.bias_rate, 0.0);
    cr_assert_eq(x.moe.shared_experts, 0);
    cr_assert_eq(x.moe.router, OMNI_ROUTER_TOPK);
    cr_assert_eq(x.moe.entropy.local + x.moe.entropy.global + x.moe.entropy.threshold, 0.0);
    cr_assert_eq(x.data.n_files, 1);
    cr_assert_str_eq(x.data.files[0], "a.h5");
    cr_assert_eq(x.data.n_tasks, 0);
    cr_assert_eq(x.data.temperature, 1.0);
    cr_assert_eq(x.data.batch, 16);
    cr_assert_eq(x.optim.steps, 2000);
    cr_assert_eq(x.optim.lr, 3.0e-4);
    cr_assert_eq(x.optim.min_lr, 3.0e-5);
    cr_assert_eq(x.optim.warmup, 100);
    cr_assert_eq(x.optim.beta1, 0.9);
    cr_assert_eq(x.optim.beta2, 0.95);
    cr_assert_eq(x.optim.eps, 1.0e-8);
    cr_assert_eq(x.optim.weight_decay, 0.1);
    cr_assert_eq(x.optim.grad_clip, 1.0);
    cr_assert_eq(x.parallel.threads, 0);
    cr_assert_eq(x.checkpoint.every, 500);
    cr_assert_eq(x.checkpoint.keep, 3);
    cr_assert_eq(x.log.every, 10);
    cr_assert_eq(x.eval.every, 200);
    cr_assert_eq(x.eval.batches, 8);
}

Test(experiment, design_example_parses_with_its_values)
{
    const char *text =
        "experiment: {name: demo, out_dir: runs/demo, seed: 1}\n"
        "model:      {d_model: 256, n_layers: 4, n_heads: 4, d_ff: 1024, context: 256, "
        "attention: prefix}\n"
        "moe:        {num_experts: 8, top_k: 2, every: 2, expert_ff: 1024, capacity_factor: 1.25,\n"
        "             normalize_topk: true, aux_loss: 0.01, z_loss: 0.001, bias_rate: 0.0, "
        "shared_experts: 0}\n"
        "data:       {files: [demo.h5], tasks: {shapes: 1.0, tones: {weight: 2, loss_weight: "
        "0.5}, arith: 1.0, cartpole: 1.0},\n"
        "             temperature: 1.0, batch: 16}\n"
        "optim:      {steps: 2000, lr: 3.0e-4, min_lr: 3.0e-5, warmup: 100, beta1: 0.9, beta2: "
        "0.95,\n"
        "             eps: 1.0e-8, weight_decay: 0.1, grad_clip: 1.0}\n"
        "parallel:   {threads: 3}\n"
        "checkpoint: {every: 500, keep: 3}\n"
        "log:        {every: 10}\n"
        "eval:       {every: 200, batches: 8}\n";
    omni_experiment x;
    cr_assert_eq(parse(&x, text, NULL, 0), OMNI_OK, "%s", omni_error_message());
    cr_assert_eq(x.model.attention, OMNI_ATTN_PREFIX);
    cr_assert_eq(x.data.n_tasks, 4);
    cr_assert_str_eq(x.data.tasks[1].name, "tones");
    cr_assert_eq(x.data.tasks[1].weight, 2.0);
    cr_assert_eq(x.data.tasks[1].loss_weight, 0.5);
    cr_assert_eq(x.data.tasks[0].loss_weight, 1.0);
    cr_assert_eq(omni_experiment_task(&x, "cartpole"), 3);
    cr_assert_eq(omni_experiment_task(&x, "nope"), -1);
    cr_assert_eq(x.parallel.threads, 3);
}

Test(experiment, set_overrides_scalars_and_lists)
{
    const char *sets[] = {"model.d_model=128",        "data.files=[a.h5, b.h5]",
                          "moe.normalize_topk=false", "parallel.threads=auto",
                          "data.tasks={x: 2}",        "moe.router=task"};
    omni_experiment x;
    cr_assert_eq(parse(&x, MINIMAL, sets, 6), OMNI_OK, "%s", omni_error_message());
    cr_assert_eq(x.moe.router, OMNI_ROUTER_TASK);
    cr_assert_eq(x.model.d_model, 128);
    cr_assert_eq(x.data.n_files, 2);
    cr_assert_str_eq(x.data.files[1], "b.h5");
    cr_assert(!x.moe.normalize_topk);
    cr_assert_eq(x.parallel.threads, 0);
    cr_assert_eq(x.data.n_tasks, 1);
    cr_assert_eq(x.data.tasks[0].weight, 2.0);
}

Test(experiment, effective_yaml_reads_back_to_the_same_values)
{
    const char *sets[] = {
        "optim.lr=0.1",           "data.tasks={a: 0.3, b: {weight: 1, loss_weight: 2}}",
        "model.attention=prefix", "experiment.out_dir=some dir/with \"quotes\"",
        "moe.router=task",        "moe.entropy={local: 0.01, global: 0.003, threshold: 0.6931}"};
    omni_experiment x, y;
    cr_assert_eq(parse(&x, MINIMAL, sets, 6), OMNI_OK, "%s", omni_error_message());
    cr_assert_eq(x.moe.entropy.global, 0.003);
    cr_assert_eq(x.moe.entropy.threshold, 0.6931);
    char *yaml;
    cr_assert_eq(omni_experiment_to_yaml(&x, &yaml), OMNI_OK);
    cr_assert_eq(omni_experiment_parse(&y, yaml, strlen(yaml), "effective", NULL, 0), OMNI_OK,
                 "%s\n%s", omni_error_message(), yaml);
    cr_assert_eq(memcmp(&x, &y, sizeof x), 0, "round trip differs:\n%s", yaml);
    free(yaml);
}

Test(experiment, moe_blocks_are_every_nth)
{
    omni_experiment x;
    const char *sets[] = {"moe.every=2"};
    cr_assert_eq(parse(&x, MINIMAL, sets, 1), OMNI_OK);
    cr_assert(!omni_experiment_is_moe_block(&x, 0));
    cr_assert(omni_experiment_is_moe_block(&x, 1));
    cr_assert(!omni_experiment_is_moe_block(&x, 2));
    cr_assert(omni_experiment_is_moe_block(&x, 3));
    x.moe.every = 0;
    cr_assert(!omni_experiment_is_moe_block(&x, 1));
}

/* A bad experiment: the text (or MINIMAL plus --set flags) and the exact message. */
typedef struct {
    const char *text;
    const char *set; /* one --set flag, or NULL */
    const char *message;
} bad_case;

static const bad_case bad_cases[] = {
    /* 1 unknown key with a suggestion */
    {MINIMAL "moe: {topk: 2}\n", NULL,
     "exp.yaml:3:7: unknown key moe.topk, did you mean moe.top_k?"},
    /* 2 unknown key without a close match lists the keys */
    {MINIMAL "log: {colour: red}\n", NULL,
     "exp.yaml:3:7: unknown key log.colour, expected one of: every"},
    /* 3 unknown section with a suggestion */
    {MINIMAL "optimizer: {lr: 1}\n", NULL,
     "exp.yaml:3:1: unknown section optimizer, did you mean optim?"},
    /* 4 wrong type: string for an integer */
    {MINIMAL "model:\n  d_model: wide\n", NULL,
     "exp.yaml:4:12: model.d_model is \"wide\", expected an integer"},
    /* 5 wrong type: float for an integer */
    {MINIMAL "model: {n_layers: 2.5}\n", NULL,
     "exp.yaml:3:19: model.n_layers is \"2.5\", expected an integer"},
    /* 6 wrong type: quoted number */
    {MINIMAL "optim: {lr: \"0.1\"}\n", NULL,
     "exp.yaml:3:13: optim.lr is \"0.1\", expected a number"},
    /* 7 wrong type: a list for a number */
    {MINIMAL "optim: {lr: [1, 2]}\n", NULL, "exp.yaml:3:13: optim.lr is a list, expected number"},
    /* 8 wrong type: bool */
    {MINIMAL "moe: {normalize_topk: yes please}\n", NULL,
     "exp.yaml:3:23: moe.normalize_topk is \"yes please\", expected true or false"},
    /* 9 out of range below */
    {MINIMAL "model: {context: 1}\n", NULL,
     "exp.yaml:3:18: model.context = 1 is out of range, expected integer in [2, 65536]"},
    /* 10 out of range above */
    {MINIMAL "optim: {beta1: 1.5}\n", NULL,
     "exp.yaml:3:16: optim.beta1 = 1.5 is out of range, expected number in [0, "
     "0.99999899999999997]"},
    /* 12 duplicate section */
    {"experiment: {name: t}\ndata: {files: [a.h5]}\ndata: {batch: 2}\n", NULL,
     "exp.yaml:3:1: duplicate section data (first at line 2), expected each section once"},
    /* 13 duplicate key */
    {"experiment: {name: t, seed: 1, seed: 2}\ndata: {files: [a.h5]}\n", NULL,
     "exp.yaml:1:32: duplicate key experiment.seed (first at line 1), expected each key once"},
    /* 14 missing required key */
    {"experiment: {name: t}\n", NULL,
     "exp.yaml:1:1: missing required key data.files, expected list of paths"},
    /* 15 missing required experiment name */
    {"data: {files: [a.h5]}\n", NULL,
     "exp.yaml:1:1: missing required key experiment.name, expected string"},
    /* 16 contradiction top_k > num_experts, blamed on top_k */
    {MINIMAL "moe: {num_experts: 4, top_k: 6}\n", NULL,
     "exp.yaml:3:30: moe.top_k = 6 exceeds moe.num_experts = 4, expected top_k <= num_experts"},
    /* 17 contradiction heads do not divide d_model */
    {MINIMAL "model: {d_model: 100, n_heads: 3}\n", NULL,
     "exp.yaml:3:32: model.n_heads = 3 does not divide model.d_model = 100, expected a divisor"},
    /* 18 contradiction min_lr > lr */
    {MINIMAL "optim: {lr: 1.0e-4, min_lr: 1.0e-3}\n", NULL,
     "exp.yaml:3:29: optim.min_lr = 0.001 exceeds optim.lr = 0.0001, expected min_lr <= lr"},
    /* 19 contradiction warmup > steps */
    {MINIMAL "optim: {steps: 10, warmup: 20}\n", NULL,
     "exp.yaml:3:28: optim.warmup = 20 exceeds optim.steps = 10, expected warmup <= steps"},
    /* 20 contradiction every > n_layers */
    {MINIMAL "model: {n_layers: 2}\nmoe: {every: 3}\n", NULL,
     "exp.yaml:4:14: moe.every = 3 exceeds model.n_layers = 2, so no block would be MoE"},
    /* 21 YAML syntax error carries libyaml's position */
    {"experiment: {name: t\ndata: [\n", NULL,
     "exp.yaml:2:5: YAML syntax error: did not find expected ',' or '}'"},
    /* 22 a section that is not a mapping */
    {MINIMAL "model: 5\n", NULL,
     "exp.yaml:3:8: section model is a plain scalar, expected a mapping of keys"},
    /* 23 a document that is a list */
    {"- a\n- b\n", NULL, "exp.yaml:1:1: the document is a list, expected a mapping of sections"},
    /* 24 empty file */
    {"", NULL, "exp.yaml:1:1: the file is empty, expected an experiment"},
    /* 25 bad attention */
    {MINIMAL "model: {attention: sliding}\n", NULL,
     "exp.yaml:3:20: model.attention is \"sliding\", expected causal or prefix"},
    /* 26 bad threads */
    {MINIMAL "parallel: {threads: many}\n", NULL,
     "exp.yaml:3:21: parallel.threads is \"many\", expected auto or an integer"},
    /* 28 bad task name */
    {"experiment: {name: t}\ndata: {files: [a.h5], tasks: {\"a b\": 1}}\n", NULL,
     "exp.yaml:2:31: data.tasks: a task name must be a short name"},
    /* 29 zero task weight */
    {"experiment: {name: t}\ndata: {files: [a.h5], tasks: {a: 0}}\n", NULL,
     "exp.yaml:2:34: data.tasks.a weight 0 is out of range, expected (0, 1e6]"},
    /* 30 unknown key inside a task */
    {"experiment: {name: t}\ndata: {files: [a.h5], tasks: {a: {wieght: 1}}}\n", NULL,
     "exp.yaml:2:35: unknown key data.tasks.a.wieght, expected weight or loss_weight"},
    /* 31 empty file list */
    {"experiment: {name: t}\ndata: {files: []}\n", NULL,
     "exp.yaml:2:15: data.files is empty, expected at least one dataset file"},
    /* 32 files not a list */
    {"experiment: {name: t}\ndata: {files: a.h5}\n", NULL,
     "exp.yaml:2:15: data.files is a plain scalar, expected list of paths"},
    /* 33 bad experiment name */
    {"experiment: {name: \"my run\"}\ndata: {files: [a.h5]}\n", NULL,
     "exp.yaml:1:20: experiment.name is \"my run\", expected a name of the experiment"},
    /* 34 tabs/bad indentation: syntax error position */
    {"experiment:\n  name: t\n data: 1\n", NULL, "exp.yaml:3:2: YAML syntax error"},
    /* --set flags */
    /* 35 unknown key in a flag with suggestion */
    {MINIMAL, "moe.topk=3", "--set moe.topk=3: unknown key moe.topk, did you mean moe.top_k?"},
    /* 36 flag without a dot */
    {MINIMAL, "steps=3", "--set steps=3: expected section.key=value"},
    /* 37 flag without a value part */
    {MINIMAL, "optim.steps", "--set optim.steps: expected section.key=value"},
    /* 38 flag with wrong type */
    {MINIMAL, "optim.steps=many",
     "--set optim.steps=many: optim.steps is \"many\", expected an integer"},
    /* 39 flag out of range */
    {MINIMAL, "moe.top_k=0", "--set moe.top_k=0: moe.top_k = 0 is out of range"},
    /* 40 flag creating a contradiction is blamed on the flag */
    {MINIMAL, "moe.top_k=9", "--set moe.top_k=9: moe.top_k = 9 exceeds moe.num_experts = 8"},
    /* 41 flag with unknown section */
    {MINIMAL, "modle.d_model=8",
     "--set modle.d_model=8: unknown section modle, did you mean model?"},
    /* 42 flag with empty value */
    {MINIMAL,
     "model.d_model=", "--set model.d_model=: model.d_model has no value, expected integer"},
    /* 43 flag with a YAML syntax error */
    {MINIMAL, "data.files=[a.h5", "--set data.files=[a.h5: YAML syntax error"},
    /* 45 bad router */
    {MINIMAL "moe: {router: expert}\n", NULL,
     "exp.yaml:3:15: moe.router is \"expert\", expected topk, task or expert_choice"},
    /* 46 task routing in a dense model */
    {MINIMAL "moe: {router: task, every: 0}\n", NULL,
     "exp.yaml:3:15: moe.router = task with moe.every = 0: a dense model has no router"},
    /* 47 task routing with jitter, blamed on the flag that set the jitter */
    {MINIMAL "moe: {router: task}\n", "moe.jitter=0.1",
     "--set moe.jitter=0.1: moe.jitter = 0.1 with moe.router = task: the task router sees the "
     "task embedding"},
    /* 48 entropy: unknown key inside */
    {MINIMAL "moe: {entropy: {locale: 0.1}}\n", NULL,
     "exp.yaml:3:17: unknown key moe.entropy.locale, expected local, global or threshold"},
    /* 49 entropy: not a mapping */
    {MINIMAL "moe: {entropy: 0.1}\n", NULL,
     "exp.yaml:3:16: moe.entropy is a plain scalar, expected map {local, global, threshold}"},
    /* 50 entropy: negative coefficient */
    {MINIMAL "moe: {entropy: {global: -1}}\n", NULL,
     "exp.yaml:3:25: moe.entropy.global = -1 is out of range, expected [0, 100]"},
    /* 51 entropy on a dense model */
    {MINIMAL "moe: {every: 0, entropy: {local: 0.01}}\n", NULL,
     "exp.yaml:3:26: moe.entropy is on with moe.every = 0: a dense model has no routing"},
    /* 52 a global loss that can never count */
    {MINIMAL, "moe.entropy={global: 0.01}",
     "--set moe.entropy={global: 0.01}: moe.entropy.global = 0.01 with threshold 0: the global "
     "loss counts only while"},
    /* 53 one key of the entropy mapping: unknown, not a number, out of range */
    {MINIMAL, "moe.entropy.locl=0.1",
     "--set moe.entropy.locl=0.1: unknown key moe.entropy.locl, expected local, global or "
     "threshold"},
    {MINIMAL, "moe.entropy.local=[1]",
     "--set moe.entropy.local=[1]: moe.entropy.local is a list, expected a number"},
    {MINIMAL, "moe.entropy.threshold=101",
     "--set moe.entropy.threshold=101: moe.entropy.threshold = 101 is out of range"},
    /* 56 a dotted key into a field that is not a mapping */
    {MINIMAL, "moe.top_k.x=1",
     "--set moe.top_k.x=1: moe.top_k is integer, not a mapping of keys: set it whole"},
    /* 57 expert choice contradictions */
    {MINIMAL "moe: {router: expert_choice, aux_loss: 0, capacity_factor: 0}\n", NULL,
     "exp.yaml:3:60: moe.capacity_factor = 0 with moe.router = expert_choice"},
    {MINIMAL "moe: {router: expert_choice}\n", NULL,
     "exp.yaml:3:15: moe.aux_loss = 0.01 with moe.router = expert_choice"},
    {MINIMAL "moe: {router: expert_choice, aux_loss: 0, bias_rate: 0.01}\n", NULL,
     "exp.yaml:3:54: moe.bias_rate = 0.01 with moe.router = expert_choice"},
    /* 44 flag with a list where a scalar is expected */
    {MINIMAL, "model.d_model=[1,2]",
     "--set model.d_model=[1,2]: model.d_model is a list, expected integer"},
};

#define N_BAD ((int)(sizeof bad_cases / sizeof bad_cases[0]))

/* The parameters are indices: Criterion runs each test in a new process image, where
 * pointers into static data (with ASLR) would not survive. */
ParameterizedTestParameters(experiment, bad_input_names_place_key_and_expectation)
{
    static int idx[N_BAD];
    for (int i = 0; i < N_BAD; i++)
        idx[i] = i;
    return cr_make_param_array(int, idx, N_BAD);
}

ParameterizedTest(int *i, experiment, bad_input_names_place_key_and_expectation)
{
    const bad_case *c = &bad_cases[*i];
    omni_experiment x;
    const char *sets[1] = {c->set};
    omni_status st = parse(&x, c->text, sets, c->set ? 1 : 0);
    cr_assert_eq(st, OMNI_ERR_CONFIG, "accepted:\n%s%s", c->text, c->set ? c->set : "");
    cr_assert(strncmp(omni_error_message(), c->message, strlen(c->message)) == 0,
              "got:      %s\nexpected: %s", omni_error_message(), c->message);
}

Test(experiment, negative_batch_and_bad_task_weight_name_the_key)
{
    omni_experiment x;
    cr_assert_eq(parse(&x, MINIMAL "optim: {steps: -4}\n", NULL, 0), OMNI_ERR_CONFIG);
    cr_assert_str_eq(omni_error_message(),
                     "exp.yaml:3:16: optim.steps = -4 is out of range, expected integer in [1, "
                     "1000000000000]");
    cr_assert_eq(
        parse(&x, "experiment: {name: t}\ndata: {files: [a], tasks: {shapes: heavy}}\n", NULL, 0),
        OMNI_ERR_CONFIG);
    cr_assert_str_eq(
        omni_error_message(),
        "exp.yaml:2:36: data.tasks.shapes is \"heavy\", expected a number (the weight)");
}

Test(experiment, describe_lists_every_key_and_readme_documents_them)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    omni_experiment_describe(f);
    fclose(f);
    const char *src = getenv("OMNI_SOURCE_DIR");
    cr_assert_not_null(src, "OMNI_SOURCE_DIR is set by CTest");
    char path[4096];
    snprintf(path, sizeof path, "%s/configs/README.md", src);
    char *readme;
    size_t rlen;
    cr_assert_eq(omni_read_file(path, &readme, &rlen), OMNI_OK, "%s", omni_error_message());
    /* Every `section.key` in the generated table appears in the README. */
    int keys = 0;
    for (char *p = strstr(buf, "| `"); p; p = strstr(p + 1, "| `")) {
        char key[128];
        if (sscanf(p, "| `%127[^`]`", key) != 1)
            continue;
        char needle[140];
        snprintf(needle, sizeof needle, "`%s`", key);
        cr_assert(strstr(readme, needle) != NULL, "configs/README.md does not document %s", key);
        keys++;
    }
    cr_assert_geq(keys, 39);
    free(readme);
    free(buf);
}

/* --set moe.entropy.KEY=V changes one key of the mapping; the others keep the file's. */
Test(experiment, set_one_key_of_the_entropy_mapping)
{
    const char *sets[] = {"moe.entropy.local=0.05", "moe.entropy.threshold=1.5"};
    omni_experiment x;
    cr_assert_eq(parse(&x, MINIMAL "moe: {entropy: {global: 0.02, threshold: 1.0}}\n", sets, 2),
                 OMNI_OK, "%s", omni_error_message());
    cr_assert_eq(x.moe.entropy.local, 0.05);
    cr_assert_eq(x.moe.entropy.global, 0.02);
    cr_assert_eq(x.moe.entropy.threshold, 1.5);
}
