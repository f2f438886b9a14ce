/* omnimoe ckpt info: what a checkpoint holds, in a few lines and one table. */
#include "cli.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "coordinator.h"
#include "experiment.h"
#include "gating.h"

static const char usage[] = "usage: omnimoe ckpt info CKPT.h5 [--verify]\n"
                            "       omnimoe ckpt extract CKPT.h5 --task NAME --out FILE.h5\n"
                            "\n"
                            "  info   step, tokens seen, world size, the experiment's model, "
                            "parameter\n"
                            "         counts (total and active per token), and the expert load "
                            "of the\n"
                            "         last logged steps of each MoE layer, and its routing by "
                            "task and\n"
                            "         by modality (assignments kept per expert, tokens, "
                            "entropy); --verify\n"
                            "         also reads every dataset and checks its checksums (exit 2 on "
                            "a mismatch\n"
                            "         or a dataset without one)\n"
                            "  extract  (a model trained with moe.router: task) a checkpoint "
                            "holding\n"
                            "         only the experts that task NAME uses in each MoE layer: "
                            "a smaller\n"
                            "         model that generates for that task as the full one does\n";

#define EXPERTS_PER_LINE 16

static const char *ordinal_suffix(int64_t n)
{
    if (n % 100 >= 11 && n % 100 <= 13)
        return "th";
    switch (n % 10) {
    case 1:
        return "st";
    case 2:
        return "nd";
    case 3:
        return "rd";
    default:
        return "th";
    }
}

/* The expert-load table: per MoE layer, one row per logged step, experts in columns
 * (EXPERTS_PER_LINE at a time, so a wide layer wraps instead of running off). */
static void print_loads(const omni_ckpt_meta *m, const omni_experiment *x)
{
    if (m->load_rows == 0) {
        printf("\nexpert load  none logged\n");
        return;
    }
    printf("\nexpert load (fraction of token->expert assignments), last %" PRId64
           " logged step%s\n",
           m->load_rows, m->load_rows == 1 ? "" : "s");
    int64_t block = -1;
    for (int64_t l = 0; l < m->load_layers; l++) {
        /* The block of the l-th MoE layer, when the experiment says so. */
        do
            block++;
        while (block < x->model.n_layers && !omni_experiment_is_moe_block(x, block));
        if (block < x->model.n_layers)
            printf("  MoE layer %" PRId64 " (block %" PRId64 ")\n", l, block);
        else
            printf("  MoE layer %" PRId64 "\n", l);
        for (int64_t e0 = 0; e0 < m->load_experts; e0 += EXPERTS_PER_LINE) {
            int64_t e1 =
                e0 + EXPERTS_PER_LINE < m->load_experts ? e0 + EXPERTS_PER_LINE : m->load_experts;
            printf("    %10s", "step");
            for (int64_t e = e0; e < e1; e++) {
                char head[32];
                snprintf(head, sizeof head, "e%" PRId64, e);
                printf(" %7s", head);
            }
            printf("\n");
            for (int64_t r = 0; r < m->load_rows; r++) {
                printf("    %10" PRId64, m->load_steps[r]);
                const float *row = m->load + (r * m->load_layers + l) * m->load_experts;
                for (int64_t e = e0; e < e1; e++)
                    printf(" %7.3f", (double)row[e]);
                printf("\n");
            }
        }
    }
}

/* The routing tables of the last logged window (state/coordinator/routing, absent in a
 * dense model's checkpoints and in those written before any step was logged). */
typedef struct {
    int64_t steps[2];
    int64_t L, T, E;
    double *task_load, *task_drop, *task_tokens, *task_entropy;
    double *mod_load, *mod_tokens, *mod_entropy;
} routing;

static void routing_free(routing *r)
{
    double *p[] = {r->task_load, r->task_drop,  r->task_tokens, r->task_entropy,
                   r->mod_load,  r->mod_tokens, r->mod_entropy};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
        omni_free(p[i]);
    memset(r, 0, sizeof *r);
}

/* Read one f64 table of the routing group into *out. */
static omni_status routing_table(omni_ckpt *c, const char *leaf, int rank, int64_t *dims,
                                 double **out)
{
    char name[128];
    snprintf(name, sizeof name, OMNI_CKPT_ROUTING "/%s", leaf);
    void *p = NULL;
    omni_status st = omni_ckpt_read_whole(c, name, OMNI_CKPT_F64, rank, dims, &p);
    *out = p;
    return st;
}

/* Every rank reads (the caller agrees on the status); *found false when there is none.
 * The tables must fit the checkpoint: a row per task of its task table (when it has one),
 * a layer per MoE layer and a column per expert of its experiment. */
static omni_status routing_read(omni_ckpt *c, const omni_experiment *x,
                                const omni_tokenization *tok, routing *r, bool *found)
{
    memset(r, 0, sizeof *r);
    omni_status st = omni_ckpt_has(c, OMNI_CKPT_ROUTING "/steps", found);
    if (st || !*found)
        return st;
    int64_t s1[1] = {2}, d3[3] = {-1, -1, -1};
    void *p = NULL;
    st = omni_ckpt_read_whole(c, OMNI_CKPT_ROUTING "/steps", OMNI_CKPT_I64, 1, s1, &p);
    if (!st) {
        memcpy(r->steps, p, sizeof r->steps);
        omni_free(p);
        st = routing_table(c, "task_expert_load", 3, d3, &r->task_load);
    }
    r->L = d3[0], r->T = d3[1], r->E = d3[2];
    int64_t n_moe = 0;
    for (int64_t b = 0; b < x->model.n_layers; b++)
        n_moe += omni_experiment_is_moe_block(x, b);
    if (!st && (r->L != n_moe || r->E != x->moe.num_experts))
        st = omni_fail(OMNI_ERR_CKPT,
                       "%s: " OMNI_CKPT_ROUTING "/task_expert_load is [%" PRId64 ", %" PRId64
                       ", %" PRId64 "], but its experiment has %" PRId64 " MoE layers of %" PRId64
                       " experts",
                       omni_ckpt_path(c), r->L, r->T, r->E, n_moe, x->moe.num_experts);
    if (!st && tok && r->T != tok->n_tasks)
        st = omni_fail(OMNI_ERR_CKPT,
                       "%s: " OMNI_CKPT_ROUTING "/task_expert_load has %" PRId64
                       " task rows, its task table (/tokenization) %d tasks",
                       omni_ckpt_path(c), r->T, tok->n_tasks);
    int64_t t2[2] = {r->L, r->T};
    int64_t m3[3] = {r->L, OMNI_MOD_COUNT, r->E}, m2[2] = {r->L, OMNI_MOD_COUNT};
    if (!st)
        st = routing_table(c, "task_expert_drop", 3, d3, &r->task_drop);
    if (!st)
        st = routing_table(c, "task_tokens", 2, t2, &r->task_tokens);
    if (!st)
        st = routing_table(c, "task_entropy", 2, t2, &r->task_entropy);
    if (!st)
        st = routing_table(c, "modality_expert_load", 3, m3, &r->mod_load);
    if (!st)
        st = routing_table(c, "modality_tokens", 2, m2, &r->mod_tokens);
    if (!st)
        st = routing_table(c, "modality_entropy", 2, m2, &r->mod_entropy);
    if (st) {
        routing_free(r);
        *found = false;
    }
    return st;
}

/* One table: a row per group, experts in columns (EXPERTS_PER_LINE at a time), then the
 * group's tokens and mean routing entropy; a row of drops under a group that dropped. The
 * name column is as wide as the longest name (12 at least): names are never cut. */
static void print_route_rows(const char *what, int64_t G, int64_t E, const double *load,
                             const double *drop, const double *tokens, const double *entropy,
                             const char *(*name)(const omni_tokenization *, int64_t, char *,
                                                 size_t),
                             const omni_tokenization *tok)
{
    int w = 12;
    for (int64_t g = 0; g < G; g++) {
        char buf[64];
        int n = (int)strlen(name(tok, g, buf, sizeof buf));
        w = n > w ? n : w;
    }
    for (int64_t e0 = 0; e0 < E; e0 += EXPERTS_PER_LINE) {
        int64_t e1 = e0 + EXPERTS_PER_LINE < E ? e0 + EXPERTS_PER_LINE : E;
        printf("    %-*s", w, what);
        for (int64_t e = e0; e < e1; e++) {
            char head[32];
            snprintf(head, sizeof head, "e%" PRId64, e);
            printf(" %7s", head);
        }
        printf(" %8s %8s\n", "tokens", "entropy");
        for (int64_t g = 0; g < G; g++) {
            char buf[64];
            printf("    %-*s", w, name(tok, g, buf, sizeof buf));
            for (int64_t e = e0; e < e1; e++)
                printf(" %7.1f", load[g * E + e]);
            printf(" %8.1f %8.3f\n", tokens[g], entropy[g]);
            double d = 0;
            for (int64_t e = e0; drop && e < e1; e++)
                d += drop[g * E + e];
            if (d > 0) {
                printf("    %-*s", w, "  dropped");
                for (int64_t e = e0; e < e1; e++)
                    printf(" %7.1f", drop[g * E + e]);
                printf("\n");
            }
        }
    }
}

/* A task row is named by the checkpoint's own task table (its index is the row), never by
 * the experiment's data.tasks, whose order is the YAML's and may be empty. */
static const char *task_row_name(const omni_tokenization *tok, int64_t g, char *buf, size_t len)
{
    if (tok && g < tok->n_tasks)
        return tok->tasks[g].name;
    snprintf(buf, len, "task %" PRId64, g);
    return buf;
}

static const char *modality_row_name(const omni_tokenization *tok, int64_t g, char *buf, size_t len)
{
    (void)tok, (void)buf, (void)len;
    return omni_modality_name((omni_modality)g);
}

static void print_routing(const routing *r, bool found, const omni_experiment *x,
                          const omni_tokenization *tok)
{
    if (!found) {
        printf("\nrouting      none logged\n");
        return;
    }
    printf("\nrouting (token->expert assignments kept per step, by task and by modality; "
           "entropy in nats), steps %" PRId64 "..%" PRId64 "\n",
           r->steps[0], r->steps[1]);
    int64_t block = -1;
    for (int64_t l = 0; l < r->L; l++) {
        do
            block++;
        while (block < x->model.n_layers && !omni_experiment_is_moe_block(x, block));
        printf("  MoE layer %" PRId64 " (block %" PRId64 ")\n", l, block);
        print_route_rows("task", r->T, r->E, r->task_load + l * r->T * r->E,
                         r->task_drop + l * r->T * r->E, r->task_tokens + l * r->T,
                         r->task_entropy + l * r->T, task_row_name, tok);
        print_route_rows("modality", OMNI_MOD_COUNT, r->E, r->mod_load + l * OMNI_MOD_COUNT * r->E,
                         NULL, r->mod_tokens + l * OMNI_MOD_COUNT,
                         r->mod_entropy + l * OMNI_MOD_COUNT, modality_row_name, tok);
    }
}

static void print_info(const omni_ckpt *c, const omni_experiment *x, const omni_tokenization *tok,
                       int64_t total, double active)
{
    const omni_ckpt_meta *m = omni_ckpt_meta_of(c);
    int64_t n_moe = 0;
    for (int64_t l = 0; l < x->model.n_layers; l++)
        n_moe += omni_experiment_is_moe_block(x, l);
    printf("checkpoint   %s (format %" PRId64 ", written by omnimoe %s)\n", omni_ckpt_path(c),
           m->format_version, m->omnimoe_version);
    printf("step         %" PRId64 "\n", m->step);
    printf("tokens seen  %" PRId64 "\n", m->tokens_seen);
    printf("world size   %" PRId64 " process%s\n", m->world_size, m->world_size == 1 ? "" : "es");
    printf("seed         %" PRId64 "\n", m->seed);
    printf("experiment   %s\n", x->experiment.name);
    printf("model        d_model %" PRId64 ", %" PRId64 " layers, %" PRId64 " heads, d_ff %" PRId64
           ", context %" PRId64 ", attention %s\n",
           x->model.d_model, x->model.n_layers, x->model.n_heads, x->model.d_ff, x->model.context,
           x->model.attention == OMNI_ATTN_PREFIX ? "prefix" : "causal");
    if (n_moe > 0)
        printf("moe          %" PRId64 " experts, top-%" PRId64 ", every %" PRId64
               "%s block (%" PRId64 " MoE layer%s), expert_ff %" PRId64 ", %" PRId64
               " shared%s%s\n",
               x->moe.num_experts, x->moe.top_k, x->moe.every, ordinal_suffix(x->moe.every), n_moe,
               n_moe == 1 ? "" : "s", x->moe.expert_ff, x->moe.shared_experts,
               x->moe.router == OMNI_ROUTER_TOPK ? "" : ", router ",
               x->moe.router == OMNI_ROUTER_TOPK ? "" : omni_router_name(x->moe.router));
    else
        printf("moe          none (dense model)\n");
    if (tok) {
        printf("tasks        %d, <task> tokens %d..%d of a vocabulary of %d\n", tok->n_tasks,
               tok->tok_task0, tok->vocab - 1, tok->vocab);
        for (int i = 0; i < tok->n_tasks; i++) {
            const omni_tokenization_task *k = &tok->tasks[i];
            printf("  %2d %-16s %-14s token %d", k->index, k->name, omni_task_kind_name(k->kind),
                   k->token);
            if (k->kind == OMNI_KIND_CONTROL)
                printf(", obs_dim %d, act_dim %d, %s actions%s", k->obs_dim, k->act_dim,
                       k->discrete ? "discrete" : "continuous",
                       k->images ? ", images (control from pixels)" : "");
            printf("\n");
        }
        if (tok->image_size)
            printf("images       %dx%d, %d channel%s, patch %d, resize %s\n", tok->image_size,
                   tok->image_size, tok->image_channels, tok->image_channels == 1 ? "" : "s",
                   tok->image_patch, omni_resize_mode_name(tok->image_resize));
        if (tok->audio.sample_rate)
            printf("audio        %d Hz, %d mels x %d frames, patch %d\n", tok->audio.sample_rate,
                   tok->audio.mels, tok->audio.frames, tok->audio.patch);
    } else {
        printf("tasks        no task table (format %" PRId64 "); data.tasks: ", m->format_version);
        if (x->data.n_tasks == 0)
            printf("every task of the data files");
        for (int i = 0; i < x->data.n_tasks; i++)
            printf("%s%s", i ? ", " : "", x->data.tasks[i].name);
        printf("\n");
    }
    printf("parameters   %" PRId64 " total, %.0f active per token (%.1f%%)\n", total, active,
           total > 0 ? 100.0 * active / (double)total : 0.0);
    if (m->n_counters > 0) {
        printf("counters    ");
        for (int i = 0; i < m->n_counters; i++)
            printf(" %s %" PRId64 "%s", m->counters[i].name, m->counters[i].value,
                   i + 1 < m->n_counters ? "," : "");
        printf("\n");
    }
    print_loads(m, x);
}

/* Collective: open, check, print on rank 0. */
static omni_status info(MPI_Comm comm, const char *path, bool verify)
{
    omni_ckpt *c;
    omni_status st = omni_ckpt_open(comm, path, &c);
    if (st)
        return st;
    omni_experiment *x = malloc(sizeof *x);
    if (!x) {
        st = omni_fail(OMNI_ERR_NOMEM, "out of memory");
    } else {
        const char *yaml = omni_ckpt_meta_of(c)->experiment_yaml;
        st = omni_experiment_parse(x, yaml, strlen(yaml), path, NULL, 0);
        if (st)
            st = omni_fail_context(OMNI_ERR_CKPT, "%s: its experiment text is invalid: ", path);
    }
    st = omni_mpi_agree(comm, st);
    int64_t total = 0;
    double active = 0.0;
    if (!st)
        st = omni_ckpt_param_counts(c, &total, &active);
    /* Format 1 has no tokenization: described without it. */
    omni_tokenization *tok = NULL;
    if (!st && omni_ckpt_meta_of(c)->format_version >= 2) {
        tok = malloc(sizeof *tok);
        st = omni_mpi_agree(comm, tok ? OMNI_OK : omni_fail(OMNI_ERR_NOMEM, "out of memory"));
        if (!st)
            st = omni_ckpt_read_tokenization(c, tok);
    }
    routing r;
    bool found = false;
    if (!st)
        st = omni_mpi_agree(comm, routing_read(c, x, tok, &r, &found));
    /* an extracted task's checkpoint (ckpt extract) says which task and experts */
    bool extracted = false;
    int64_t *ex = NULL, *ex_task = NULL, ex_dims[2] = {-1, -1}, one = 1;
    if (!st)
        st = omni_ckpt_has(c, "state/extract/experts", &extracted);
    if (!st && extracted) {
        st = omni_ckpt_read_whole(c, "state/extract/experts", OMNI_CKPT_I64, 2, ex_dims,
                                  (void **)&ex);
        if (!st)
            st = omni_ckpt_read_whole(c, "state/extract/task", OMNI_CKPT_I64, 1, &one,
                                      (void **)&ex_task);
        st = omni_mpi_agree(comm, st);
    }
    if (!st && omni_log_rank() == 0) {
        print_info(c, x, tok, total, active);
        if (extracted) {
            int64_t t = ex_task[0];
            printf("extracted    task %s: experts of the source checkpoint per MoE layer:",
                   tok && t >= 0 && t < tok->n_tasks ? tok->tasks[t].name : "?");
            for (int64_t l = 0; l < ex_dims[0]; l++) {
                printf("%s", l ? " |" : "");
                for (int64_t j = 0; j < ex_dims[1]; j++)
                    printf(" %" PRId64, ex[l * ex_dims[1] + j]);
            }
            printf("\n");
        }
        print_routing(&r, found, x, tok);
    }
    if (found && !st)
        routing_free(&r);
    omni_free(ex);
    omni_free(ex_task);
    free(tok);
    if (!st && verify) {
        int64_t datasets = 0, unchecked = 0;
        const char *first = NULL;
        double bytes = 0;
        st = omni_ckpt_verify(c, &datasets, &unchecked, &first, &bytes);
        if (!st && unchecked)
            st = omni_fail(OMNI_ERR_CKPT,
                           "%s: %" PRId64 " of %" PRId64 " datasets carry no checksum (first: "
                           "%s), so they cannot be verified",
                           path, unchecked, datasets, first);
        if (!st && omni_log_rank() == 0)
            printf("\nverified     %" PRId64 " datasets, %.1f MiB: every checksum matches\n",
                   datasets, bytes / 1048576.0);
    }
    free(x);
    omni_ckpt_close(c);
    return st;
}

omni_status omni_cmd_ckpt(MPI_Comm comm, int argc, char **argv)
{
    if (argc < 2)
        return omni_usage_error(usage, "ckpt: no subcommand given");
    if (!strcmp(argv[1], "--help"))
        return omni_usage_help(usage);
    if (!strcmp(argv[1], "info")) {
        if (argc == 3 && !strcmp(argv[2], "--help"))
            return omni_usage_help(usage);
        const char *path = NULL;
        bool verify = false;
        for (int i = 2; i < argc; i++) {
            if (!strcmp(argv[i], "--verify"))
                verify = true;
            else if (!path && (argv[i][0] != '-' || !argv[i][1]))
                path = argv[i];
            else
                return omni_usage_error(usage, "ckpt info: unexpected argument '%s'", argv[i]);
        }
        if (!path)
            return omni_usage_error(usage, "ckpt info: no checkpoint file given");
        return info(comm, path, verify);
    }
    if (!strcmp(argv[1], "extract")) {
        const char *path = NULL, *task = NULL, *out = NULL;
        for (int i = 2; i < argc; i++) {
            if (!strcmp(argv[i], "--help")) {
                return omni_usage_help(usage);
            } else if (!strcmp(argv[i], "--task") && i + 1 < argc) {
                task = argv[++i];
            } else if (!strcmp(argv[i], "--out") && i + 1 < argc) {
                out = argv[++i];
            } else if (!path && argv[i][0] != '-') {
                path = argv[i];
            } else {
                return omni_usage_error(usage, "ckpt extract: unexpected argument '%s'", argv[i]);
            }
        }
        if (!path || !task || !out)
            return omni_usage_error(usage, "ckpt extract: expected CKPT --task NAME --out FILE");
        return omni_ckpt_extract(comm, path, task, out);
    }
    return omni_usage_error(usage, "ckpt: unknown subcommand '%s'", argv[1]);
}
