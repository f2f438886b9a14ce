/*
 * The inference session: the model (dense part replicated, experts sharded as in training,
 * dropless), its KV cache and decoding scratch, all sized at creation from the batch, and
 * the reading of a checkpoint's parameters into it.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

static void *grab(bool *ok, int64_t n, size_t size, const char *what)
{
    void *p = omni_alloc(n > 0 ? n : 1, size, what);
    if (!p)
        *ok = false;
    return p;
}

omni_status omni_infer_create(MPI_Comm comm, const omni_experiment *x, const omni_data_dims *dims,
                              int n_tasks, const infer_task *tasks, int64_t max_batch,
                              omni_infer **out)
{
    *out = NULL;
    if (max_batch < 1 || n_tasks < 0 || n_tasks > OMNI_MAX_TASKS)
        return omni_fail(OMNI_ERR_USAGE, "inference: a batch of %lld sequences, %d tasks",
                         (long long)max_batch, n_tasks);
    omni_infer *s = omni_alloc(1, sizeof *s, "inference session");
    if (!s)
        return OMNI_ERR_NOMEM;
    omni_status st = OMNI_OK;
    s->comm = comm;
    MPI_Comm_rank(comm, &s->rank);
    MPI_Comm_size(comm, &s->size);
    s->x = *x;
    s->x.moe.capacity_factor = 0.0; /* dropless at inference */
    s->x.moe.jitter = 0.0;
    s->dims = *dims;
    s->n_tasks = n_tasks;
    memcpy(s->tasks, tasks, (size_t)n_tasks * sizeof *tasks);
    s->max_batch = max_batch;
    s->T = x->model.context;
    s->V = dims->vocab;
    const int64_t T = s->T, V = s->V;
    int64_t patch_dim = dims->image_patch_dim > dims->audio_patch_dim ? dims->image_patch_dim
                                                                      : dims->audio_patch_dim;
    if ((st = omni_model_create(&s->model, &s->x, dims, 1)))
        goto fail;
    if (s->x.moe.every > 0) {
        if ((st = omni_moe_placement_check(s->x.moe.num_experts, s->size)))
            goto fail;
        if ((st = omni_mpi_moe_comm_init(&s->mpi, comm, &s->ops)))
            goto fail;
        if ((st = omni_moe_create(&s->moe, &s->x, max_batch * T, n_tasks, &s->ops)))
            goto fail;
        omni_moe_set_step(s->moe, 0, 0, false);
        omni_ffn_hook hook = {
            .ctx = s->moe, .forward = omni_moe_forward, .backward = omni_moe_backward};
        omni_model_set_moe(s->model, &hook);
    }
    omni_model_init_params(s->model);
    if (s->moe)
        omni_moe_init_params(s->moe);
    if ((st = omni_kv_cache_create(&s->cache, s->model, max_batch, T)))
        goto fail;
    if ((st = omni_batch_alloc(&s->step, max_batch, T, patch_dim)))
        goto fail;
    bool ok = true;
    s->probs = grab(&ok, V, sizeof *s->probs, "decoding scratch");
    s->order = grab(&ok, V, sizeof *s->order, "decoding scratch");
    s->legal = grab(&ok, V, sizeof *s->legal, "decoding scratch");
    s->from = grab(&ok, max_batch, sizeof *s->from, "decoding scratch");
    s->plen = grab(&ok, max_batch, sizeof *s->plen, "decoding scratch");
    s->last = grab(&ok, max_batch, sizeof *s->last, "decoding scratch");
    s->beam_score = grab(&ok, max_batch, sizeof *s->beam_score, "beam scratch");
    s->beam_len = grab(&ok, max_batch, sizeof *s->beam_len, "beam scratch");
    s->beam_tok = grab(&ok, max_batch * T, sizeof *s->beam_tok, "beam scratch");
    s->beam_tmp = grab(&ok, max_batch * T, sizeof *s->beam_tmp, "beam scratch");
    s->cand = grab(&ok, max_batch * V, sizeof *s->cand, "beam scratch");
    s->beam_next = grab(&ok, max_batch, sizeof *s->beam_next, "beam scratch");
    s->beam_next_len = grab(&ok, max_batch, sizeof *s->beam_next_len, "beam scratch");
    s->done_score = grab(&ok, max_batch, sizeof *s->done_score, "beam scratch");
    s->done_count = grab(&ok, max_batch, sizeof *s->done_count, "beam scratch");
    s->done = grab(&ok, max_batch, sizeof *s->done, "beam scratch");
    if (!ok) {
        st = OMNI_ERR_NOMEM;
        goto fail;
    }
    *out = s;
    return OMNI_OK;
fail:
    omni_infer_close(s);
    return st;
}

void omni_infer_close(omni_infer *s)
{
    if (!s)
        return;
    omni_kv_cache_free(s->cache);
    if (s->step.kind)
        omni_batch_free(&s->step);
    omni_moe_free(s->moe);
    if (s->mpi.sc)
        omni_mpi_moe_comm_free(&s->mpi);
    omni_model_free(s->model);
    void *bufs[] = {s->probs,         s->order,      s->legal,      s->from,
                    s->plen,          s->last,       s->beam_score, s->beam_len,
                    s->beam_tok,      s->beam_tmp,   s->cand,       s->beam_next,
                    s->beam_next_len, s->done_score, s->done_count, s->done};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        omni_free(bufs[i]);
    omni_free(s);
}

const omni_experiment *omni_infer_experiment(const omni_infer *s)
{
    return &s->x;
}

int64_t omni_infer_vocab(const omni_infer *s)
{
    return s->V;
}

int64_t omni_infer_context(const omni_infer *s)
{
    return s->T;
}

int omni_infer_n_tasks(const omni_infer *s)
{
    return s->n_tasks;
}

int omni_infer_find_task(const omni_infer *s, const char *name)
{
    for (int i = 0; i < s->n_tasks; i++)
        if (!strcmp(s->tasks[i].name, name))
            return i;
    return -1;
}

const char *omni_infer_task_name(const omni_infer *s, int task)
{
    OMNI_ASSERT(task >= 0 && task < s->n_tasks);
    return s->tasks[task].name;
}

omni_task_kind omni_infer_task_kind(const omni_infer *s, int task)
{
    OMNI_ASSERT(task >= 0 && task < s->n_tasks);
    return s->tasks[task].kind;
}

omni_status omni_infer_open(MPI_Comm comm, const char *path, int64_t max_batch, omni_infer **out)
{
    (void)max_batch;
    *out = NULL;
    omni_status st = omni_fail(
        OMNI_ERR_CKPT, "%s: checkpoints do not carry their tokenization yet (issue 10)", path);
    return omni_mpi_agree(comm, st);
}
