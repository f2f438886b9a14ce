/*
 * The inference session: the model (dense part replicated, experts sharded as in training,
 * dropless), its KV cache and decoding scratch, all sized at creation from the batch, and
 * the reading of a checkpoint's parameters into it.
 */
#include "internal.h"

#include "checkpoint.h"
#include "ops.h"

#include <stdio.h>
#include <string.h>

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
    omni_alloc_list *mem = &s->mem;
    s->probs = omni_alloc_in(mem, V, sizeof *s->probs, "decoding scratch");
    s->order = omni_alloc_in(mem, V, sizeof *s->order, "decoding scratch");
    s->legal = omni_alloc_in(mem, V, sizeof *s->legal, "decoding scratch");
    s->from = omni_alloc_in(mem, max_batch, sizeof *s->from, "decoding scratch");
    s->plen = omni_alloc_in(mem, max_batch, sizeof *s->plen, "decoding scratch");
    s->last = omni_alloc_in(mem, max_batch, sizeof *s->last, "decoding scratch");
    s->row_task = omni_alloc_in(mem, max_batch, sizeof *s->row_task, "decoding scratch");
    s->beam_score = omni_alloc_in(mem, max_batch, sizeof *s->beam_score, "beam scratch");
    s->beam_len = omni_alloc_in(mem, max_batch, sizeof *s->beam_len, "beam scratch");
    s->beam_tok = omni_alloc_in(mem, max_batch * T, sizeof *s->beam_tok, "beam scratch");
    s->beam_tmp = omni_alloc_in(mem, max_batch * T, sizeof *s->beam_tmp, "beam scratch");
    s->cand = omni_alloc_in(mem, max_batch * V, sizeof *s->cand, "beam scratch");
    s->beam_next = omni_alloc_in(mem, max_batch, sizeof *s->beam_next, "beam scratch");
    s->beam_next_len = omni_alloc_in(mem, max_batch, sizeof *s->beam_next_len, "beam scratch");
    s->done_score = omni_alloc_in(mem, max_batch, sizeof *s->done_score, "beam scratch");
    s->done_count = omni_alloc_in(mem, max_batch, sizeof *s->done_count, "beam scratch");
    s->done = omni_alloc_in(mem, max_batch, sizeof *s->done, "beam scratch");
    if (mem->failed) {
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
    omni_alloc_list_free(&s->mem);
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

/* The model's data dims and the decoder's task table from a tokenization (the sampler's
 * rule: a patch kind's grid is size / patch square for images, mels / patch by frames /
 * patch for spectrograms). */
static void from_tokenization(const omni_tokenization *tk, omni_data_dims *dims, infer_task *tasks)
{
    memset(dims, 0, sizeof *dims);
    dims->n_tasks = tk->n_tasks;
    dims->vocab = tk->vocab;
    int32_t ip = tk->image_patch, ap = tk->audio.patch;
    if (ip > 0) {
        dims->image_patch_dim = ip * ip * tk->image_channels;
        dims->max_rows = dims->max_cols = tk->image_size / ip;
    }
    if (ap > 0) {
        dims->audio_patch_dim = ap * ap;
        if (tk->audio.mels / ap > dims->max_rows)
            dims->max_rows = tk->audio.mels / ap;
        if (tk->audio.frames / ap > dims->max_cols)
            dims->max_cols = tk->audio.frames / ap;
    }
    for (int i = 0; i < tk->n_tasks; i++) {
        const omni_tokenization_task *t = &tk->tasks[i];
        infer_task *it = &tasks[i];
        memset(it, 0, sizeof *it);
        snprintf(it->name, sizeof it->name, "%s", t->name);
        it->kind = t->kind;
        it->obs_dim = t->obs_dim, it->act_dim = t->act_dim, it->discrete = t->discrete;
        it->images = t->images;
        if ((omni_kind_image(t->kind) || t->images) && ip > 0) {
            it->patch = ip, it->patch_dim = dims->image_patch_dim, it->cols = tk->image_size / ip;
            it->grid = it->cols * it->cols;
        } else if (omni_kind_audio(t->kind) && ap > 0) {
            it->patch = ap, it->patch_dim = dims->audio_patch_dim, it->cols = tk->audio.frames / ap;
            it->grid = it->cols * (tk->audio.mels / ap);
        }
    }
}

/* Collective: the parameters (and balancing biases) of the session's model from an open
 * checkpoint, each rank reading its own experts. */
static omni_status read_params(omni_infer *s, omni_ckpt *c)
{
    /* The parts' descriptors are checkpoint tensors already: name, shape, this rank's rows
     * and data (the balancing biases named state/...). */
    int64_t nm = omni_model_n_tensors(s->model), ne = s->moe ? omni_moe_n_tensors(s->moe) : 0;
    omni_ckpt_tensor *t = omni_alloc(nm + ne, sizeof *t, "checkpoint tensor list");
    omni_status st = t ? OMNI_OK : OMNI_ERR_NOMEM;
    for (int64_t i = 0; !st && i < nm; i++)
        t[i] = *omni_model_tensor(s->model, i);
    for (int64_t i = 0; !st && i < ne; i++)
        t[nm + i] = *omni_moe_tensor_at(s->moe, i);
    st = omni_mpi_agree(s->comm, st);
    if (!st)
        st = omni_ckpt_read(c, t, (int)(nm + ne));
    omni_free(t);
    return st;
}

omni_status omni_infer_open(MPI_Comm comm, const char *path, int64_t max_batch, omni_infer **out)
{
    *out = NULL;
    omni_ckpt *c = NULL;
    omni_status st = omni_ckpt_open(comm, path, &c);
    if (st)
        return st;
    const omni_ckpt_meta *meta = omni_ckpt_meta_of(c);
    omni_experiment x;
    omni_tokenization tk;
    omni_data_dims dims;
    infer_task tasks[OMNI_MAX_TASKS];
    omni_infer *s = NULL;
    /* The same text on every rank: the same verdict. */
    st = omni_experiment_parse(&x, meta->experiment_yaml, strlen(meta->experiment_yaml), path, NULL,
                               0);
    if (st)
        st = omni_fail_context(OMNI_ERR_CKPT, "%s: its experiment text: ", path);
    if (!st)
        st = omni_ckpt_read_tokenization(c, &tk);
    if (!st && (tk.vocab != OMNI_TOK_TASK0 + tk.n_tasks || tk.tok_eos != OMNI_TOK_EOS ||
                tk.tok_sep != OMNI_TOK_SEP || tk.tok_bin0 != OMNI_TOK_BIN0))
        st = omni_fail(OMNI_ERR_CKPT,
                       "%s: a vocabulary layout this program does not decode (vocab %d, "
                       "%d tasks)",
                       path, tk.vocab, tk.n_tasks);
    st = omni_mpi_agree(comm, st);
    if (!st) {
        from_tokenization(&tk, &dims, tasks);
        st = omni_infer_create(comm, &x, &dims, tk.n_tasks, tasks, max_batch, &s);
        st = omni_mpi_agree(comm, st);
    }
    if (!st)
        st = omni_blas_set_threads(&x, comm, NULL);
    if (!st)
        st = read_params(s, c);
    omni_ckpt_close(c);
    if (st) {
        omni_infer_close(s);
        return st;
    }
    s->tokenization = tk;
    *out = s;
    return OMNI_OK;
}

const omni_tokenization *omni_infer_tokenization(const omni_infer *s)
{
    return &s->tokenization;
}

omni_status omni_infer_create_like(MPI_Comm comm, const omni_experiment *x,
                                   const omni_data_dims *dims, const omni_tokenization *tk,
                                   int64_t max_batch, omni_infer **out)
{
    omni_data_dims unused;
    infer_task tasks[OMNI_MAX_TASKS];
    from_tokenization(tk, &unused, tasks);
    omni_status st = omni_infer_create(comm, x, dims, tk->n_tasks, tasks, max_batch, out);
    if (!st)
        (*out)->tokenization = *tk;
    return st;
}

void omni_infer_set_params(omni_infer *s, omni_model *m, omni_moe *moe)
{
    OMNI_ASSERT(omni_model_n_params(m) == omni_model_n_params(s->model));
    memcpy(omni_model_params(s->model), omni_model_params(m),
           (size_t)omni_model_n_params(m) * sizeof(float));
    if (!moe || !s->moe)
        return;
    float *p, *g, *am, *av, *q;
    int64_t n, nd, n2, nd2;
    omni_moe_buffers(moe, &p, &g, &am, &av, &n, &nd);
    omni_moe_buffers(s->moe, &q, &g, &am, &av, &n2, &nd2);
    OMNI_ASSERT(n == n2 && nd == nd2);
    memcpy(q, p, (size_t)n * sizeof(float));
    for (int64_t l = 0; l < omni_moe_n_layers(moe); l++)
        memcpy(omni_moe_layer_bias(s->moe, l), omni_moe_layer_bias(moe, l),
               (size_t)s->x.moe.num_experts * sizeof(float));
}
