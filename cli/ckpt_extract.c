/*
 * omnimoe ckpt extract CKPT --task NAME --out FILE.h5: the sub-network of one task of a
 * model trained with moe.router: task. In each MoE layer the task's router row chooses the
 * same top_k experts for every token of the task, so a checkpoint holding only those k
 * experts (and the router's columns and biases of them; their AdamW moments too) generates
 * for that task as the full model does. The new checkpoint's experiment has
 * moe.num_experts = top_k; its dense tensors, tokenization and counters are the source's,
 * and it records the task in state/extract/task and the source's expert numbers in
 * state/extract/experts (ckpt info prints them). Docs: docs/moe.md.
 */
#include "cli.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "experiment.h"
#include "experts.h"
#include "gating.h"

/* The MoE descriptor whose checkpoint dataset (itself, or an AdamW moment of it) is
 * `name`, or NULL. */
static const omni_tensor *moe_tensor_of(const omni_moe *m, const char *name)
{
    for (int64_t i = 0; i < omni_moe_n_tensors(m); i++) {
        const omni_tensor *t = omni_moe_tensor_at(m, i);
        const char *n = name;
        if (!strncmp(n, "optim/m/", 8) || !strncmp(n, "optim/v/", 8))
            n += 8;
        if (!strcmp(n, t->name))
            return t;
    }
    return NULL;
}

static const omni_tensor *moe_tensor_named(const omni_moe *m, const char *fmt, int64_t block)
{
    char name[256];
    snprintf(name, sizeof name, fmt, (long long)block);
    return moe_tensor_of(m, name);
}

/* Read tensor t of the checkpoint whole into a new buffer *data. Collective. */
static omni_status read_whole(MPI_Comm comm, omni_ckpt *c, const omni_tensor *t, void **data)
{
    omni_ckpt_tensor r = *t;
    r.row_lo = 0;
    r.row_hi = r.dims[0];
    int64_t n = 1;
    for (int d = 0; d < r.rank; d++)
        n *= r.dims[d];
    r.data = *data = omni_alloc(n > 0 ? n : 1, r.type == OMNI_CKPT_F32 ? 4 : 8, r.name);
    omni_status st = omni_mpi_agree(comm, r.data ? OMNI_OK : OMNI_ERR_NOMEM);
    return st ? st : omni_ckpt_read(c, &r, 1);
}

/* The experts of task `task` in every MoE layer, ascending, into keep [n_moe, k]. */
static omni_status choose(MPI_Comm comm, omni_ckpt *c, const omni_moe *m, const omni_experiment *x,
                          int64_t n_tasks, int task, int64_t *keep)
{
    const int64_t d = x->model.d_model, E = x->moe.num_experts, k = x->moe.top_k;
    omni_status st = OMNI_OK;
    for (int64_t i = 0; i < omni_moe_n_layers(m) && !st; i++) {
        int64_t block = -1;
        for (int64_t b = 0; b < x->model.n_layers; b++)
            if (omni_moe_layer_index(m, b) == i)
                block = b;
        const omni_tensor *tw = moe_tensor_named(m, "params/layers/%02lld/moe/router/w", block);
        const omni_tensor *te = moe_tensor_named(m, "params/layers/%02lld/moe/router/task", block);
        const omni_tensor *tb = moe_tensor_named(m, "state/layers/%02lld/moe/router/bias", block);
        if (!tw || !te || !tb)
            return omni_fail(OMNI_ERR_INTERNAL,
                             "ckpt extract: MoE block %lld lacks a router tensor",
                             (long long)block);
        void *w = NULL, *emb = NULL, *bias = NULL;
        st = read_whole(comm, c, tw, &w);
        if (!st)
            st = read_whole(comm, c, te, &emb);
        if (!st)
            st = read_whole(comm, c, tb, &bias);
        /* the router on every task row, as the layer computes it, then task `task`'s choice */
        const int64_t T = n_tasks;
        float *logits = omni_alloc(2 * T * E + T + 2 * k, sizeof(float), "router rows");
        int32_t *ex = omni_alloc(k, sizeof(int32_t), "router row");
        if (!st && (!logits || !ex))
            st = OMNI_ERR_NOMEM;
        if (!st) {
            float *probs = logits + T * E, *lse = probs + T * E, *prob = lse + T, *gate = prob + k;
            omni_router_forward(logits, probs, lse, emb, w, T, d, E);
            omni_router_topk(ex, prob, gate, logits + (int64_t)task * E, probs + (int64_t)task * E,
                             bias, 1, E, k, true);
            for (int64_t a = 0; a < k; a++) /* ascending: ties break as in the full model */
                for (int64_t b = a + 1; b < k; b++)
                    if (ex[b] < ex[a]) {
                        int32_t s = ex[a];
                        ex[a] = ex[b], ex[b] = s;
                    }
            for (int64_t j = 0; j < k; j++)
                keep[i * k + j] = ex[j];
        }
        omni_free(logits);
        omni_free(ex);
        omni_free(w);
        omni_free(emb);
        omni_free(bias);
    }
    return st;
}

/*
 * The output tensor for listed tensor `in`: whole, or, when it has an expert dimension,
 * only the kept experts (routed experts' rows read one by one, so no process holds
 * every expert). Collective.
 */
static omni_status carry(MPI_Comm comm, omni_ckpt *c, const omni_moe *m, const omni_ckpt_tensor *in,
                         const int64_t *keep, int64_t k, omni_ckpt_tensor *out)
{
    *out = *in;
    out->writer = omni_log_rank() == 0;
    const omni_tensor *d = moe_tensor_of(m, in->name);
    int dim = -1;
    for (int b = 0; d && b < in->rank; b++)
        if (d->expert_dims & (1u << b))
            dim = b;
    if (dim < 0)
        return read_whole(comm, c, in, &out->data);
    const int64_t *kp = keep + omni_moe_layer_index(m, d->group) * k;
    size_t elem = in->type == OMNI_CKPT_F32 ? 4 : 8;
    int64_t outer = 1, inner = 1, E = in->dims[dim];
    for (int b = 0; b < dim; b++)
        outer *= in->dims[b];
    for (int b = dim + 1; b < in->rank; b++)
        inner *= in->dims[b];
    out->dims[dim] = k;
    out->row_hi = out->dims[0];
    out->data = omni_alloc(outer * k * inner, elem, in->name);
    omni_status st = omni_mpi_agree(comm, out->data ? OMNI_OK : OMNI_ERR_NOMEM);
    if (st)
        return st;
    if (dim == 0) {
        omni_ckpt_tensor *rows = omni_alloc(k, sizeof *rows, "extract rows");
        if ((st = omni_mpi_agree(comm, rows ? OMNI_OK : OMNI_ERR_NOMEM)))
            return st;
        for (int64_t j = 0; j < k; j++) {
            rows[j] = *in;
            rows[j].row_lo = kp[j];
            rows[j].row_hi = kp[j] + 1;
            rows[j].data = (char *)out->data + (size_t)(j * inner) * elem;
        }
        st = omni_ckpt_read(c, rows, (int)k);
        omni_free(rows);
        return st;
    }
    void *all = NULL;
    if ((st = read_whole(comm, c, in, &all)))
        return st;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < k; j++)
            memcpy((char *)out->data + (size_t)((o * k + j) * inner) * elem,
                   (const char *)all + (size_t)((o * E + kp[j]) * inner) * elem,
                   (size_t)inner * elem);
    omni_free(all);
    return OMNI_OK;
}

/* Why this checkpoint has no per-task sub-network, or OMNI_OK. Not collective. */
static omni_status extractable(const char *path, const omni_experiment *x)
{
    if (x->moe.every == 0)
        return omni_fail(OMNI_ERR_CKPT,
                         "%s: a dense model (moe.every = 0) has no experts to "
                         "extract",
                         path);
    if (x->moe.router != OMNI_ROUTER_TASK)
        return omni_fail(OMNI_ERR_CKPT,
                         "%s: trained with moe.router: %s, so each token picks its own experts "
                         "and a task has no sub-network of its own; expected a model trained "
                         "with moe.router: task",
                         path, omni_router_name(x->moe.router));
    if (!x->moe.normalize_topk)
        return omni_fail(OMNI_ERR_CKPT,
                         "%s: trained with moe.normalize_topk: false, so its gates are "
                         "probabilities over all experts and depend on those left out; "
                         "expected a model with normalize_topk: true",
                         path);
    return OMNI_OK;
}

omni_status omni_ckpt_extract(MPI_Comm comm, const char *path, const char *task, const char *out)
{
    omni_ckpt *c = NULL;
    omni_moe *m = NULL;
    omni_experiment *x = malloc(sizeof *x);
    omni_tokenization *tok = malloc(sizeof *tok);
    omni_ckpt_tensor *in = NULL, *outs = NULL;
    int n_in = 0, n_out = 0;
    int64_t *keep = NULL;
    char *yaml = NULL;
    omni_status st = omni_mpi_agree(comm, x && tok ? OMNI_OK : OMNI_ERR_NOMEM);
    if (!st)
        st = omni_ckpt_open(comm, path, &c);
    if (!st) {
        const char *text = omni_ckpt_meta_of(c)->experiment_yaml;
        st = omni_experiment_parse(x, text, strlen(text), path, NULL, 0);
        if (st)
            st = omni_fail_context(OMNI_ERR_CKPT, "%s: its experiment text is invalid: ", path);
        else
            st = extractable(path, x);
        st = omni_mpi_agree(comm, st);
    }
    if (!st)
        st = omni_ckpt_read_tokenization(c, tok);
    int index = -1;
    if (!st) {
        const omni_tokenization_task *t = omni_tokenization_find(tok, task);
        if (t)
            index = t->index;
        else {
            char names[1024] = "";
            for (int i = 0; i < tok->n_tasks; i++)
                snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
                         tok->tasks[i].name);
            st = omni_fail(OMNI_ERR_CKPT, "%s: no task %s; its tasks: %s", path, task, names);
        }
    }
    const int64_t E = x ? x->moe.num_experts : 0, k = x ? x->moe.top_k : 0;
    if (!st) {
        /* the model's MoE tensor descriptors, as one rank of E would hold them (one expert) */
        omni_moe_comm one;
        omni_moe_comm_local(&one);
        one.size = (int)E;
        st = omni_mpi_agree(comm, omni_moe_create(&m, x, 1, tok->n_tasks, &one));
    }
    if (!st) {
        keep = omni_alloc(omni_moe_n_layers(m) * k + 1, sizeof *keep, "kept experts");
        st = omni_mpi_agree(comm, keep ? OMNI_OK : OMNI_ERR_NOMEM);
    }
    if (!st)
        st = choose(comm, c, m, x, tok->n_tasks, index, keep);
    static const char *const groups[] = {"params", "optim", "state"};
    for (int g = 0; g < 3 && !st; g++) {
        omni_ckpt_tensor *part = NULL;
        int n = 0;
        st = omni_mpi_agree(comm, omni_ckpt_list(c, groups[g], &part, &n));
        if (st)
            break;
        omni_ckpt_tensor *grown = realloc(in, (size_t)(n_in + n + 1) * sizeof *in);
        if (grown) {
            in = grown;
            memcpy(in + n_in, part, (size_t)n * sizeof *in);
            n_in += n;
            free(part); /* the names and meanings now belong to `in` */
        } else {
            omni_ckpt_list_free(part, n);
        }
        st = omni_mpi_agree(comm, grown ? OMNI_OK : OMNI_ERR_NOMEM);
    }
    if (!st) {
        outs = calloc((size_t)n_in + 2, sizeof *outs);
        st = omni_mpi_agree(comm, outs ? OMNI_OK : OMNI_ERR_NOMEM);
    }
    for (int i = 0; i < n_in && !st; i++) {
        /* the full model's training statistics do not describe the extracted one */
        if (!strncmp(in[i].name, "state/coordinator/", 18) ||
            !strncmp(in[i].name, "state/extract/", 14))
            continue;
        st = carry(comm, c, m, &in[i], keep, k, &outs[n_out]);
        n_out++;
    }
    omni_ckpt_tensor kept = {.name = "state/extract/experts",
                             .type = OMNI_CKPT_I64,
                             .rank = 2,
                             .dims = {m ? omni_moe_n_layers(m) : 0, k},
                             .meaning = "[moe layer, kept expert]: the expert of the source "
                                        "checkpoint (ckpt extract --task)",
                             .data = keep,
                             .row_hi = m ? omni_moe_n_layers(m) : 0,
                             .writer = omni_log_rank() == 0};
    int64_t task_index = index;
    omni_ckpt_tensor which = {.name = "state/extract/task",
                              .type = OMNI_CKPT_I64,
                              .rank = 1,
                              .dims = {1},
                              .meaning = "[1]: the task (its index in the task table) whose "
                                         "experts these are (ckpt extract --task)",
                              .data = &task_index,
                              .row_hi = 1,
                              .writer = omni_log_rank() == 0};
    if (!st) {
        omni_experiment y = *x;
        y.moe.num_experts = k;
        st = omni_mpi_agree(comm, omni_experiment_to_yaml(&y, &yaml));
    }
    if (!st) {
        omni_ckpt_meta meta = *omni_ckpt_meta_of(c);
        meta.experiment_yaml = yaml;
        meta.load_rows = meta.load_layers = meta.load_experts = 0;
        meta.load_steps = NULL;
        meta.load = NULL;
        meta.tokenization = tok;
        outs[n_out] = kept;
        outs[n_out + 1] = which;
        char dir[OMNI_PATH_MAX + 16], written[OMNI_PATH_MAX + 64];
        snprintf(dir, sizeof dir, "%s.extract.d", out);
        st = omni_ckpt_save(comm, dir, &meta, outs, n_out + 2, 1, written, sizeof written);
        if (!st && omni_log_rank() == 0) {
            char latest[OMNI_PATH_MAX + 32];
            snprintf(latest, sizeof latest, "%s/latest", dir);
            if (rename(written, out) != 0)
                st = omni_fail(OMNI_ERR_IO, "%s: cannot move the extracted checkpoint here from %s",
                               out, written);
            unlink(latest);
            rmdir(dir);
        }
        st = omni_mpi_agree(comm, st);
    }
    if (!st && omni_log_rank() == 0) {
        printf("extracted task %s (index %d) of %s into %s: %" PRId64 " of %" PRId64
               " experts in each of %" PRId64 " MoE layers\n",
               task, index, path, out, k, E, omni_moe_n_layers(m));
        for (int64_t i = 0; i < omni_moe_n_layers(m); i++) {
            printf("  MoE layer %" PRId64 ": experts", i);
            for (int64_t j = 0; j < k; j++)
                printf(" %" PRId64, keep[i * k + j]);
            printf("\n");
        }
    }
    for (int i = 0; outs && i < n_out; i++)
        omni_free(outs[i].data);
    free(outs);
    omni_ckpt_list_free(in, n_in);
    omni_free(keep);
    free(yaml);
    omni_moe_free(m);
    omni_ckpt_close(c);
    free(tok);
    free(x);
    return st;
}
