/*
 * The experiment's keys: one table row per key (section, key, type, place in
 * omni_experiment, default, range, meaning) that drives the loader's checks
 * (experiment.c), the defaults, the YAML writer and the key documentation below.
 */
#include "keys.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const omni_exp_type_names[] = {
    [FT_INT] = "integer",
    [FT_FLOAT] = "number",
    [FT_BOOL] = "boolean (true or false)",
    [FT_STRING] = "string",
    [FT_PATH] = "path",
    [FT_ATTENTION] = "causal or prefix",
    [FT_ROUTER] = "topk or task",
    [FT_ENTROPY] = "map {local, global, threshold} of numbers >= 0",
    [FT_THREADS] = "auto or an integer",
    [FT_GEMM] = "auto, onednn or openblas",
    [FT_PRECISION] = "fp32 or bf16",
    [FT_FILES] = "list of paths",
    [FT_TASKS] = "map task: weight or task: {weight, loss_weight}",
};
_Static_assert(sizeof omni_exp_type_names / sizeof omni_exp_type_names[0] == FT_COUNT,
               "a name for every type");

#define OFF(member) offsetof(omni_experiment, member)

const field omni_exp_fields[] = {
    {"experiment", "name", FT_STRING, OFF(experiment.name), NULL, 1, OMNI_NAME_MAX - 1,
     "name of the experiment (letters, digits, '-', '_', '.')"},
    {"experiment", "out_dir", FT_PATH, OFF(experiment.out_dir), "\"\"", 0, 0,
     "where checkpoints and metrics go; empty means runs/<name>"},
    {"experiment", "seed", FT_INT, OFF(experiment.seed), "1", 0, 4294967295.0,
     "seed of every random stream (initialisation, batch plan, jitter)"},
    {"model", "d_model", FT_INT, OFF(model.d_model), "256", 8, 65536,
     "width of the residual stream"},
    {"model", "n_layers", FT_INT, OFF(model.n_layers), "4", 1, 256, "number of transformer blocks"},
    {"model", "n_heads", FT_INT, OFF(model.n_heads), "4", 1, 1024,
     "attention heads; must divide d_model"},
    {"model", "d_ff", FT_INT, OFF(model.d_ff), "1024", 1, 1048576,
     "hidden width of the dense SwiGLU FFN"},
    {"model", "context", FT_INT, OFF(model.context), "256", 2, 65536,
     "tokens per sequence (context window)"},
    {"model", "attention", FT_ATTENTION, OFF(model.attention), "causal", 0, 0,
     "causal, or prefix: a sample's prefix attends both ways (OFA style)"},
    {"model", "recompute", FT_BOOL, OFF(model.recompute), "false", 0, 0,
     "keep only each block's input and make its activations again in backward: less memory "
     "for long contexts, one more forward of attention and dense FFNs per step"},
    {"model", "precision", FT_PRECISION, OFF(model.precision), "fp32", 0, 0,
     "inputs of the matrix products: fp32, or bf16 (fp32 sums; needs avx512_bf16)"},
    {"moe", "num_experts", FT_INT, OFF(moe.num_experts), "8", 1, 4096,
     "routed experts in each MoE layer"},
    {"moe", "top_k", FT_INT, OFF(moe.top_k), "2", 1, 4096,
     "experts per token; at most num_experts"},
    {"moe", "every", FT_INT, OFF(moe.every), "2", 0, 256,
     "every n-th block has an MoE FFN (blocks n-1, 2n-1, ...); 0: dense model"},
    {"moe", "expert_ff", FT_INT, OFF(moe.expert_ff), "1024", 1, 1048576,
     "hidden width of each SwiGLU expert"},
    {"moe", "capacity_factor", FT_FLOAT, OFF(moe.capacity_factor), "1.25", -1, 64,
     "expert capacity C = ceil(k * factor * tokens / E) per worker; <= 0: dropless"},
    {"moe", "normalize_topk", FT_BOOL, OFF(moe.normalize_topk), "true", 0, 0,
     "renormalise the k selected probabilities to sum to 1"},
    {"moe", "aux_loss", FT_FLOAT, OFF(moe.aux_loss), "0.01", 0, 100,
     "coefficient of the Switch load-balancing loss"},
    {"moe", "z_loss", FT_FLOAT, OFF(moe.z_loss), "0.001", 0, 100,
     "coefficient of the router z-loss"},
    {"moe", "bias_rate", FT_FLOAT, OFF(moe.bias_rate), "0.0", 0, 1,
     "step of auxiliary-loss-free balancing biases; 0: off"},
    {"moe", "jitter", FT_FLOAT, OFF(moe.jitter), "0.0", 0, 1,
     "multiplicative router input jitter in training, uniform in [1-j, 1+j]; 0: off"},
    {"moe", "shared_experts", FT_INT, OFF(moe.shared_experts), "0", 0, 64,
     "always-on shared experts added to the routed output"},
    {"moe", "router", FT_ROUTER, OFF(moe.router), "topk", 0, 0,
     "topk: each token picks its experts; task: each task does, for all its tokens, from a "
     "learned task embedding (Kudugunta et al. 2021); expert_choice: each expert picks its "
     "ceil(capacity_factor * top_k * tokens / num_experts) tokens of the global batch (Zhou et "
     "al. 2022)"},
    {"moe", "entropy", FT_ENTROPY, OFF(moe.entropy), "{local: 0.0, global: 0.0, threshold: 0.0}", 0,
     100,
     "LIMoE's per-modality losses: local * mean token routing entropy + global * -(entropy of "
     "the mean routing), the latter only while that entropy < threshold (nats); 0: off"},
    {"data", "files", FT_FILES, OFF(data.files), NULL, 0, 0,
     "dataset files (omnimoe data build/demo), relative to the working directory"},
    {"data", "tasks", FT_TASKS, OFF(data.tasks), "{}", 0, 0,
     "task sampling weights (and loss weights); empty: every task, weight 1"},
    {"data", "temperature", FT_FLOAT, OFF(data.temperature), "1.0", 0.01, 100,
     "task probabilities proportional to weight^(1/temperature)"},
    {"data", "batch", FT_INT, OFF(data.batch), "16", 1, 1048576,
     "sequences in the global batch (independent of the number of processes)"},
    {"data", "cache_mb", FT_INT, OFF(data.cache_mb), "64", 1, 1048576,
     "MiB of dataset chunks each process keeps in memory (its read cache; the dataset files "
     "are read in windows, never whole)"},
    {"data", "micro_batch", FT_INT, OFF(data.micro_batch), "0", 0, 1048576,
     "sequences per forward pass on each rank; gradients accumulate over the passes to the "
     "global batch's exact step; 0: the rank's whole share in one pass"},
    {"optim", "steps", FT_INT, OFF(optim.steps), "2000", 1, 1e12, "training steps"},
    {"optim", "lr", FT_FLOAT, OFF(optim.lr), "3.0e-4", 0, 10, "peak learning rate"},
    {"optim", "min_lr", FT_FLOAT, OFF(optim.min_lr), "3.0e-5", 0, 10,
     "learning rate at the end of the cosine decay"},
    {"optim", "warmup", FT_INT, OFF(optim.warmup), "100", 0, 1e12, "steps of linear warm-up"},
    {"optim", "beta1", FT_FLOAT, OFF(optim.beta1), "0.9", 0, 0.999999, "AdamW beta1"},
    {"optim", "beta2", FT_FLOAT, OFF(optim.beta2), "0.95", 0, 0.999999999, "AdamW beta2"},
    {"optim", "eps", FT_FLOAT, OFF(optim.eps), "1.0e-8", 1e-30, 1, "AdamW epsilon"},
    {"optim", "weight_decay", FT_FLOAT, OFF(optim.weight_decay), "0.1", 0, 10,
     "decoupled weight decay, on matrices only"},
    {"optim", "grad_clip", FT_FLOAT, OFF(optim.grad_clip), "1.0", 0, 1e9,
     "clip the global gradient norm to this; 0: off"},
    {"parallel", "threads", FT_THREADS, OFF(parallel.threads), "auto", 1, 1024,
     "BLAS threads per process; auto: cores of the node / processes on it"},
    {"parallel", "gemm", FT_GEMM, OFF(parallel.gemm), "auto", 0, 0,
     "matrix-product library; auto: oneDNN on AVX-512 CPUs, else OpenBLAS (env OMNI_GEMM)"},
    {"parallel", "shadow", FT_INT, OFF(parallel.shadow), "2", 0, 1024,
     "experts per MoE layer and pass whose busy owner shares them: the other ranks compute "
     "their own rows of them with a copy of the weights (docs/moe.md); 0: off"},
    {"checkpoint", "every", FT_INT, OFF(checkpoint.every), "500", 0, 1e12,
     "steps between checkpoints; 0: only at the end and on SIGTERM/SIGINT"},
    {"checkpoint", "keep", FT_INT, OFF(checkpoint.keep), "3", 1, 1000,
     "checkpoints kept; older ones are removed once a new one is complete"},
    {"log", "every", FT_INT, OFF(log.every), "10", 1, 1e12, "steps between log lines"},
    {"eval", "every", FT_INT, OFF(eval.every), "200", 0, 1e12,
     "steps between evaluations; 0: only at the end"},
    {"eval", "batches", FT_INT, OFF(eval.batches), "8", 1, 1e6,
     "validation batches per evaluation"},
    {"eval", "generate", FT_INT, OFF(eval.generate), "0", 0, 1e6,
     "validation samples per *_to_text task captioned (greedy) for exact match; 0: none"},
    {"eval", "env", FT_PATH, OFF(eval.env), "\"\"", 0, 0,
     "environment of the control task's rollouts at each evaluation: cartpole (built in) or a "
     "command spoken to in JSON lines (docs/act.md); \"\": no rollouts"},
    {"eval", "env_task", FT_STRING, OFF(eval.env_task), "\"\"", 0, OMNI_NAME_MAX - 1,
     "control task played in eval.env; \"\": the dataset's only control task"},
    {"eval", "episodes", FT_INT, OFF(eval.episodes), "10", 1, 1e5,
     "episodes per evaluation in eval.env (starts drawn from experiment.seed: the same each time)"},
    {"eval", "max_steps", FT_INT, OFF(eval.max_steps), "500", 1, 1e9,
     "steps at most per eval.env episode"},
};
_Static_assert(sizeof omni_exp_fields / sizeof omni_exp_fields[0] == N_FIELDS,
               "N_FIELDS in keys.h counts the rows of the key table");

const char *const omni_exp_sections[] = {"experiment", "model",      "moe", "data", "optim",
                                         "parallel",   "checkpoint", "log", "eval"};
_Static_assert(sizeof omni_exp_sections / sizeof omni_exp_sections[0] == N_SECTIONS,
               "N_SECTIONS in keys.h counts the sections");

const char *omni_router_name(omni_router_kind r)
{
    static const char *const names[] = {"topk", "task", "expert_choice"};
    _Static_assert(sizeof names / sizeof names[0] == OMNI_ROUTER_COUNT, "a name per router");
    return r >= 0 && r < OMNI_ROUTER_COUNT ? names[r] : "?";
}

/* ---- output ------------------------------------------------------------------ */

typedef struct {
    char *buf;
    size_t len, cap;
    bool failed;
} strbuf;

static void sb_printf(strbuf *b, const char *fmt, ...) OMNI_PRINTF(2, 3);

static void sb_printf(strbuf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n + 64;
        char *nb = realloc(b->buf, cap);
        if (!nb) {
            b->failed = true;
            return;
        }
        b->buf = nb;
        b->cap = cap;
    }
}

/* Shortest decimal that reads back to the same double. */
static void format_double(char *out, size_t cap, double v)
{
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(out, cap, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            break;
    }
    /* Keep it a YAML float-looking number for readers: 1 -> 1.0 */
    if (!strpbrk(out, ".eEn") && strlen(out) + 3 < cap)
        strcat(out, ".0");
}

static void quote(strbuf *b, const char *s)
{
    sb_printf(b, "\"");
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\')
            sb_printf(b, "\\%c", *p);
        else if ((unsigned char)*p < 0x20)
            sb_printf(b, "\\x%02x", (unsigned char)*p);
        else
            sb_printf(b, "%c", *p);
    }
    sb_printf(b, "\"");
}

static void write_value(strbuf *b, const omni_experiment *x, const field *f)
{
    const char *src = (const char *)x + f->offset;
    char num[64];
    switch (f->type) {
    case FT_INT: {
        int64_t v;
        memcpy(&v, src, sizeof v);
        sb_printf(b, "%lld", (long long)v);
        break;
    }
    case FT_FLOAT: {
        double v;
        memcpy(&v, src, sizeof v);
        format_double(num, sizeof num, v);
        sb_printf(b, "%s", num);
        break;
    }
    case FT_BOOL: {
        bool v;
        memcpy(&v, src, sizeof v);
        sb_printf(b, "%s", v ? "true" : "false");
        break;
    }
    case FT_STRING:
    case FT_PATH:
        quote(b, src);
        break;
    case FT_ATTENTION:
        sb_printf(b, "%s", x->model.attention == OMNI_ATTN_PREFIX ? "prefix" : "causal");
        break;
    case FT_ROUTER:
        sb_printf(b, "%s", omni_router_name(x->moe.router));
        break;
    case FT_ENTROPY: {
        char l[64], g[64], t[64];
        format_double(l, sizeof l, x->moe.entropy.local);
        format_double(g, sizeof g, x->moe.entropy.global);
        format_double(t, sizeof t, x->moe.entropy.threshold);
        sb_printf(b, "{local: %s, global: %s, threshold: %s}", l, g, t);
        break;
    }
    case FT_THREADS:
        if (x->parallel.threads == 0)
            sb_printf(b, "auto");
        else
            sb_printf(b, "%lld", (long long)x->parallel.threads);
        break;
    case FT_GEMM:
        sb_printf(b, "%s", omni_gemm_choice_name(x->parallel.gemm));
        break;
    case FT_PRECISION:
        sb_printf(b, "%s", omni_precision_name(x->model.precision));
        break;
    case FT_FILES:
        sb_printf(b, "[");
        for (int i = 0; i < x->data.n_files; i++) {
            quote(b, x->data.files[i]);
            sb_printf(b, "%s", i + 1 < x->data.n_files ? ", " : "");
        }
        sb_printf(b, "]");
        break;
    case FT_TASKS:
        sb_printf(b, "{");
        for (int i = 0; i < x->data.n_tasks; i++) {
            char w[64], l[64];
            format_double(w, sizeof w, x->data.tasks[i].weight);
            format_double(l, sizeof l, x->data.tasks[i].loss_weight);
            sb_printf(b, "%s: {weight: %s, loss_weight: %s}%s", x->data.tasks[i].name, w, l,
                      i + 1 < x->data.n_tasks ? ", " : "");
        }
        sb_printf(b, "}");
        break;
    default:
        OMNI_ASSERT(!"unknown field type");
    }
}

omni_status omni_experiment_to_yaml(const omni_experiment *x, char **text)
{
    strbuf b = {.buf = malloc(1024), .len = 0, .cap = 1024};
    if (!b.buf)
        return omni_fail(OMNI_ERR_NOMEM, "out of memory writing the configuration");
    b.buf[0] = '\0';
    const char *section = "";
    for (int i = 0; i < N_FIELDS; i++) {
        const field *f = &omni_exp_fields[i];
        if (strcmp(section, f->section)) {
            section = f->section;
            sb_printf(&b, "%s:\n", section);
        }
        sb_printf(&b, "  %s: ", f->key);
        write_value(&b, x, f);
        sb_printf(&b, "\n");
    }
    if (b.failed) {
        free(b.buf);
        return omni_fail(OMNI_ERR_NOMEM, "out of memory writing the configuration");
    }
    *text = b.buf;
    return OMNI_OK;
}

void omni_experiment_describe(FILE *out)
{
    fprintf(out, "| key | type | default | range | meaning |\n|---|---|---|---|---|\n");
    for (int i = 0; i < N_FIELDS; i++) {
        const field *f = &omni_exp_fields[i];
        char range[96] = "";
        if (f->type == FT_INT || f->type == FT_FLOAT || f->type == FT_THREADS) {
            if (f->max >= f->min)
                snprintf(range, sizeof range, "%.10g .. %.10g", f->min, f->max);
            else
                snprintf(range, sizeof range, ">= %.10g", f->min);
        }
        fprintf(out, "| `%s.%s` | %s | %s | %s | %s |\n", f->section, f->key,
                omni_exp_type_names[f->type], f->def ? f->def : "(required)", range, f->doc);
    }
}
