/* The synthetic training state of the checkpoint tests (see synth.h). */
#include "synth.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiment.h"

enum { DENSE, EXPERT };
#define E_DIM (-1) /* stands for the number of experts */

static const struct {
    const char *name;
    omni_ckpt_type type;
    int rank;
    int64_t dims[OMNI_CKPT_MAX_RANK];
    int layout;
    const char *meaning;
} specs[] = {
    {"params/embed/tok", OMNI_CKPT_F32, 2, {50, 16}, DENSE, "[vocab, d_model]"},
    {"params/layers/00/attn/wqkv", OMNI_CKPT_F32, 2, {16, 48}, DENSE, "[d_model, 3 * d_model]"},
    {"params/layers/01/moe/router", OMNI_CKPT_F32, 2, {16, E_DIM}, DENSE, "[d_model, expert]"},
    {"params/layers/01/moe/experts/w1",
     OMNI_CKPT_F32,
     3,
     {E_DIM, 16, 24},
     EXPERT,
     "[expert, d_model, expert_ff]"},
    {"params/layers/01/moe/experts/w2",
     OMNI_CKPT_F32,
     3,
     {E_DIM, 24, 16},
     EXPERT,
     "[expert, expert_ff, d_model]"},
    {"optim/m/layers/01/moe/experts/w1",
     OMNI_CKPT_F32,
     3,
     {E_DIM, 16, 24},
     EXPERT,
     "[expert, d_model, expert_ff]"},
    {"optim/v/embed/tok", OMNI_CKPT_F32, 2, {50, 16}, DENSE, "[vocab, d_model]"},
    {"state/moe/01/bias", OMNI_CKPT_F32, 1, {E_DIM}, DENSE, "[expert]"},
    {"state/coordinator/loss_ema", OMNI_CKPT_F64, 1, {5}, DENSE, "[task]"},
    {"state/coordinator/sampler", OMNI_CKPT_I64, 2, {3, 2}, DENSE, "[stream, (position, draws)]"},
};
#define N_SPECS ((int)(sizeof specs / sizeof specs[0]))

static const char big_name[] = "params/layers/05/moe/experts/big";

/* The value of element i (global, row-major) of tensor t at `step`, as a double. */
static double value(const omni_ckpt_tensor *t, int64_t step, int64_t i)
{
    omni_rng r;
    omni_rng_init(&r, (uint64_t)step, t->name, 0);
    switch (t->type) {
    case OMNI_CKPT_F64:
        return (double)omni_rng_normal(&r, (uint64_t)i) / 3.0 + (double)step;
    case OMNI_CKPT_I64:
        return (double)(step * 1000 + i * 7 + (int64_t)(omni_rng_u32(&r, (uint64_t)i) % 5));
    default:
        return (double)omni_rng_normal(&r, (uint64_t)i);
    }
}

static void put(omni_ckpt_tensor *t, int64_t j, double v)
{
    switch (t->type) {
    case OMNI_CKPT_F64:
        ((double *)t->data)[j] = v;
        break;
    case OMNI_CKPT_I64:
        ((int64_t *)t->data)[j] = (int64_t)v;
        break;
    default:
        ((float *)t->data)[j] = (float)v;
    }
}

static bool same(const omni_ckpt_tensor *t, int64_t j, double v)
{
    switch (t->type) {
    case OMNI_CKPT_F64:
        return ((const double *)t->data)[j] == v;
    case OMNI_CKPT_I64:
        return ((const int64_t *)t->data)[j] == (int64_t)v;
    default:
        return ((const float *)t->data)[j] == (float)v;
    }
}

static int64_t row_elems(const omni_ckpt_tensor *t)
{
    int64_t n = 1;
    for (int d = 1; d < t->rank; d++)
        n *= t->dims[d];
    return n;
}

static size_t elem_size(omni_ckpt_type type)
{
    return type == OMNI_CKPT_F32 ? 4 : 8;
}

int synth_make(synth *s, int rank, int nranks, int64_t experts, int64_t big, int64_t step,
               bool fill)
{
    memset(s, 0, sizeof *s);
    s->experts = experts;
    s->step = step;
    int n = N_SPECS + (big > 0);
    for (int k = 0; k < n; k++) {
        omni_ckpt_tensor *t = &s->t[k];
        int layout;
        if (k < N_SPECS) {
            t->name = specs[k].name;
            t->type = specs[k].type;
            t->rank = specs[k].rank;
            for (int d = 0; d < t->rank; d++)
                t->dims[d] = specs[k].dims[d] == E_DIM ? experts : specs[k].dims[d];
            t->meaning = specs[k].meaning;
            layout = specs[k].layout;
        } else {
            t->name = big_name;
            t->type = OMNI_CKPT_F32;
            t->rank = 3;
            t->dims[0] = experts;
            t->dims[1] = big;
            t->dims[2] = 1024;
            t->meaning = "[expert, big, 1024]";
            layout = EXPERT;
        }
        if (layout == DENSE) {
            t->row_lo = 0;
            t->row_hi = t->dims[0];
            t->writer = rank == 0;
        } else if (experts >= nranks) {
            /* Expert e lives on rank e * N / E. */
            t->row_lo = (rank * experts + nranks - 1) / nranks;
            t->row_hi = ((rank + 1) * experts + nranks - 1) / nranks;
            t->writer = true;
        } else {
            /* Groups of E ranks each hold every expert; group 0 writes. */
            if (nranks % experts)
                return -1;
            t->row_lo = rank % experts;
            t->row_hi = t->row_lo + 1;
            t->writer = rank < experts;
        }
        int64_t cnt = (t->row_hi - t->row_lo) * row_elems(t);
        t->data = omni_alloc(cnt + 1, elem_size(t->type), t->name);
        if (!t->data)
            return -1;
        s->n = k + 1;
        if (!fill) {
            memset(t->data, 0x7f, (size_t)(cnt + 1) * elem_size(t->type));
            continue;
        }
        int64_t first = t->row_lo * row_elems(t);
        for (int64_t j = 0; j < cnt; j++)
            put(t, j, value(t, step, first + j) + (t->writer ? 0.0 : 1000.0));
    }
    return 0;
}

void synth_free(synth *s)
{
    for (int k = 0; k < s->n; k++)
        omni_free(s->t[k].data);
    s->n = 0;
}

int64_t synth_check(const synth *s, int64_t step, char *why, size_t len)
{
    int64_t bad = 0;
    why[0] = '\0';
    for (int k = 0; k < s->n; k++) {
        const omni_ckpt_tensor *t = &s->t[k];
        int64_t cnt = (t->row_hi - t->row_lo) * row_elems(t);
        int64_t first = t->row_lo * row_elems(t);
        for (int64_t j = 0; j < cnt; j++)
            if (!same(t, j, value(t, step, first + j))) {
                if (!bad++)
                    snprintf(why, len, "%s element %" PRId64 " differs", t->name, first + j);
            }
    }
    return bad;
}

bool synth_untouched(const synth *s)
{
    for (int k = 0; k < s->n; k++) {
        const omni_ckpt_tensor *t = &s->t[k];
        size_t bytes = (size_t)((t->row_hi - t->row_lo) * row_elems(t)) * elem_size(t->type);
        const unsigned char *b = t->data;
        for (size_t i = 0; i < bytes; i++)
            if (b[i] != 0x7f)
                return false;
    }
    return true;
}

void synth_tokenization(omni_tokenization *t)
{
    omni_tokenization_init(t);
    t->image_size = 16, t->image_channels = 1, t->image_patch = 4;
    t->image_resize = OMNI_RESIZE_PAD; /* not the default: the checkpoint must keep it */
    t->n_tasks = 2;
    t->vocab = OMNI_TOK_TASK0 + 2;
    /* Not in name order: the table is by index. */
    snprintf(t->tasks[0].name, sizeof t->tasks[0].name, "b");
    t->tasks[0].kind = OMNI_KIND_IMAGE_TO_TEXT;
    snprintf(t->tasks[1].name, sizeof t->tasks[1].name, "a");
    t->tasks[1].kind = OMNI_KIND_CONTROL;
    t->tasks[1].obs_dim = 4, t->tasks[1].act_dim = 1, t->tasks[1].discrete = 1;
    for (int i = 0; i < 2; i++) {
        t->tasks[i].index = i;
        t->tasks[i].token = OMNI_TOK_TASK0 + i;
    }
}

void synth_meta(omni_ckpt_meta *m, int64_t step, int64_t experts)
{
    static omni_tokenization tok;
    static char *yaml;
    static int64_t steps[3];
    static float load[3 * 2 * 64];
    char text[512];
    snprintf(text, sizeof text,
             "experiment: {name: synth, seed: 7}\n"
             "model: {d_model: 16, n_layers: 4, n_heads: 2, d_ff: 32, context: 16}\n"
             "moe: {num_experts: %" PRId64 ", top_k: 2, every: 2, expert_ff: 24}\n"
             "data: {files: [synth.h5], tasks: {a: 1.0, b: 2.0}}\n"
             "optim: {steps: 100}\n",
             experts);
    omni_experiment x;
    free(yaml);
    yaml = NULL;
    if (omni_experiment_parse(&x, text, strlen(text), "synth.yaml", NULL, 0) ||
        omni_experiment_to_yaml(&x, &yaml)) {
        fprintf(stderr, "synth_meta: %s\n", omni_error_message());
        abort();
    }
    memset(m, 0, sizeof *m);
    m->step = step;
    m->tokens_seen = step * 256;
    m->seed = 7;
    m->experiment_yaml = yaml;
    m->load_rows = 3;
    m->load_layers = 2;
    m->load_experts = experts;
    for (int r = 0; r < 3; r++) {
        steps[r] = step - 2 + r;
        for (int64_t c = 0; c < 2 * experts; c++)
            load[r * 2 * experts + c] = (float)(r + 1) / (float)(c + 2);
    }
    m->load_steps = steps;
    m->load = load;
    m->n_counters = 2;
    snprintf(m->counters[0].name, sizeof m->counters[0].name, "sampler.position");
    m->counters[0].value = step * 16 + 3;
    snprintf(m->counters[1].name, sizeof m->counters[1].name, "rng_draws");
    m->counters[1].value = INT64_MAX - step;
    synth_tokenization(&tok);
    m->tokenization = &tok;
}

void synth_param_counts(int64_t experts, int64_t big, int64_t *total, double *active)
{
    int64_t dense = 0, routed = 0;
    for (int k = 0; k < N_SPECS; k++) {
        if (strncmp(specs[k].name, "params/", 7))
            continue;
        int64_t n = 1;
        for (int d = 0; d < specs[k].rank; d++)
            n *= specs[k].dims[d] == E_DIM ? experts : specs[k].dims[d];
        if (specs[k].layout == EXPERT)
            routed += n;
        else
            dense += n;
    }
    routed += experts * big * 1024;
    *total = dense + routed;
    *active = (double)dense + (double)routed * 2.0 / (double)experts;
}
