/*
 * experiment — the experiment file (docs/design.md §4): a strict, typed YAML loader with
 * defaults, `--set section.key=value` overrides, and the effective configuration as
 * YAML text (printed at start, stored in checkpoints). Every key, its type, default,
 * range and meaning is listed in configs/README.md and by omni_experiment_describe().
 *
 * Errors are OMNI_ERR_CONFIG with "FILE:LINE:COL: what is wrong, what was expected"
 * (or "--set KEY=VALUE: ..." for an override).
 */
#ifndef OMNI_EXPERIMENT_H
#define OMNI_EXPERIMENT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base.h"

#define OMNI_MAX_FILES 256
#define OMNI_MAX_TASKS 32
#define OMNI_NAME_MAX  64
#define OMNI_PATH_MAX  1024

typedef enum { OMNI_ATTN_CAUSAL = 0, OMNI_ATTN_PREFIX, OMNI_ATTN_COUNT } omni_attention;
/* model.precision: the inputs of the model's matrix products (ops/ops.h); fp32 always
 * accumulates, and everything else (weights, moments, norms, router, losses) is fp32. */
typedef enum { OMNI_PREC_FP32 = 0, OMNI_PREC_BF16, OMNI_PREC_COUNT } omni_precision;
/* parallel.gemm: the library of the matrix products (ops/ops.h); auto: the faster one on
 * this CPU, or the environment's OMNI_GEMM. */
typedef enum {
    OMNI_GEMM_CHOICE_AUTO = 0,
    OMNI_GEMM_CHOICE_ONEDNN,
    OMNI_GEMM_CHOICE_OPENBLAS,
    OMNI_GEMM_CHOICE_COUNT
} omni_gemm_choice;

/* moe.router: who decides a token's experts (docs/moe.md). */
typedef enum {
    OMNI_ROUTER_TOPK = 0, /* token choice: each token its top-k of x W_r */
    OMNI_ROUTER_TASK,     /* task routing: each task its top-k of e_task W_r, for all its tokens */
    OMNI_ROUTER_EXPERT_CHOICE, /* expert choice: each expert its top-C tokens of the global batch */
    OMNI_ROUTER_COUNT
} omni_router_kind;

/* "topk", "task", "expert_choice": the values of moe.router. */
const char *omni_router_name(omni_router_kind r);

/* One entry of data.tasks: `name: weight` or `name: {weight: w, loss_weight: l}`. */
typedef struct {
    char name[OMNI_NAME_MAX];
    double weight;      /* sampling weight (> 0), before the temperature */
    double loss_weight; /* multiplies this task's tokens in the loss */
} omni_task_weight;

typedef struct omni_experiment {
    struct {
        char name[OMNI_NAME_MAX];
        char out_dir[OMNI_PATH_MAX]; /* "" until loaded: then runs/<name> by default */
        int64_t seed;
    } experiment;
    struct {
        int64_t d_model, n_layers, n_heads, d_ff, context;
        omni_attention attention;
        bool recompute; /* make block activations again in backward instead of keeping them */
        omni_precision precision;
    } model;
    struct {
        int64_t num_experts, top_k;
        int64_t every; /* every n-th block is MoE (blocks every-1, 2*every-1, ...); 0: none */
        int64_t expert_ff;
        double capacity_factor; /* <= 0: dropless */
        bool normalize_topk;
        double aux_loss, z_loss;
        double bias_rate; /* auxiliary-loss-free balancing step; 0: off */
        double jitter;    /* multiplicative router jitter in training; 0: off */
        int64_t shared_experts;
        omni_router_kind router;
        struct {
            double local;     /* coefficient of the mean per-token routing entropy */
            double global;    /* coefficient of -entropy of the mean routing */
            double threshold; /* the global term counts only while that entropy is below */
        } entropy;            /* LIMoE's losses, per modality; 0, 0: off */
    } moe;
    struct {
        int n_files;
        char files[OMNI_MAX_FILES][OMNI_PATH_MAX];
        int n_tasks; /* 0: every task of the files, weight 1 */
        omni_task_weight tasks[OMNI_MAX_TASKS];
        double temperature;
        int64_t batch;       /* sequences in the global batch */
        int64_t cache_mb;    /* MiB of dataset chunks cached per process */
        int64_t micro_batch; /* sequences per forward pass on a rank; 0: its whole share */
    } data;
    struct {
        int64_t steps;
        double lr, min_lr;
        int64_t warmup;
        double beta1, beta2, eps, weight_decay, grad_clip; /* grad_clip <= 0: off */
    } optim;
    struct {
        int64_t threads; /* BLAS threads per process; 0 = auto (cores / processes per node) */
        omni_gemm_choice gemm;
        int64_t shadow; /* experts per MoE layer and pass shared by their busy owner; 0: off */
    } parallel;
    struct {
        int64_t every, keep; /* every 0: only at the end and on signals */
    } checkpoint;
    struct {
        int64_t every;
    } log;
    struct {
        int64_t every, batches;  /* every 0: only at the end */
        int64_t generate;        /* greedy captions per *_to_text task for exact match; 0: none */
        char env[OMNI_PATH_MAX]; /* rollouts' environment: "cartpole" or a command; "": none */
        char env_task[OMNI_NAME_MAX]; /* the control task played; "": the only control task */
        int64_t episodes, max_steps;  /* rollouts per evaluation, and steps per episode at most */
    } eval;
} omni_experiment;

/* Fill every key with its documented default (data.files and experiment.name empty). */
void omni_experiment_defaults(omni_experiment *x);

/*
 * Parse an experiment from YAML text, named `source` in messages, then apply the
 * `--set` overrides in order, then check ranges and contradictions. Not collective.
 */
omni_status omni_experiment_parse(omni_experiment *x, const char *text, size_t len,
                                  const char *source, const char *const *sets, int n_sets);

/* Collective: rank 0 reads `path`, every rank parses the same bytes and overrides, so
 * all ranks accept or reject together. */
omni_status omni_experiment_load(MPI_Comm comm, const char *path, const char *const *sets,
                                 int n_sets, omni_experiment *x);

/* The effective configuration as YAML text that omni_experiment_parse reads back to
 * the same values. Free with omni_free. */
omni_status omni_experiment_to_yaml(const omni_experiment *x, char **text);

/* Print the table of keys: key, type, default, range, meaning. */
void omni_experiment_describe(FILE *f);

/* Index of task `name` in data.tasks, or -1. */
int omni_experiment_task(const omni_experiment *x, const char *name);

/* Whether block `layer` (0-based) is an MoE block: every moe.every-th, none when 0. */
bool omni_experiment_is_moe_block(const omni_experiment *x, int64_t layer);

/* "auto", "onednn", "openblas"; and back (false for any other text). */
const char *omni_gemm_choice_name(omni_gemm_choice c);
bool omni_gemm_choice_parse(const char *s, omni_gemm_choice *c);
/* "fp32", "bf16"; and back (false for any other text). */
const char *omni_precision_name(omni_precision p);
bool omni_precision_parse(const char *s, omni_precision *p);

#endif /* OMNI_EXPERIMENT_H */
