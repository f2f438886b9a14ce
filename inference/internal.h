/*
 * inference, private: the session struct shared by session.c (opening, parameters) and
 * decode.c (generation, scoring), and the constructor the tests use.
 */
#ifndef OMNI_INFERENCE_INTERNAL_H
#define OMNI_INFERENCE_INTERNAL_H

#include "experts.h"
#include "inference.h"
#include "worker.h"

/* What decoding needs to know of a task: from the checkpoint's tokenization. */
typedef struct {
    char name[OMNI_NAME_MAX];
    omni_task_kind kind;
    int32_t patch;     /* patch side (patch kinds): patch values are normalised with it */
    int32_t patch_dim; /* values per patch; 0: no patches */
    int32_t cols;      /* patch columns of the task's image or spectrogram grid */
    int32_t grid;      /* patches of one image or spectrogram (positions restart at each) */
    int32_t obs_dim, act_dim, discrete;
    int32_t images; /* control: each step starts with `grid` image patches */
} infer_task;

struct omni_infer {
    MPI_Comm comm;
    int rank, size;
    omni_experiment x;              /* as trained, but dropless */
    omni_tokenization tokenization; /* from the checkpoint (zeros for omni_infer_create) */
    omni_data_dims dims;
    int n_tasks;
    infer_task tasks[OMNI_MAX_TASKS];
    int64_t max_batch, T, V;
    omni_model *model;
    omni_moe *moe; /* NULL: a dense model */
    omni_moe_comm ops;
    omni_mpi_moe_comm mpi;
    omni_kv_cache *cache; /* max_batch sequences, steps of up to T positions */
    omni_batch step;      /* [max_batch, T] */
    /* decoding scratch, every buffer in mem */
    omni_alloc_list mem;
    float *probs;           /* [V] */
    int32_t *order;         /* [V] */
    uint8_t *legal;         /* [V] */
    int64_t *from;          /* [max_batch] */
    int64_t *plen;          /* [max_batch] positions of each row's prompt */
    int32_t *last;          /* [max_batch] each row's last token */
    int32_t *row_task;      /* [max_batch] each row's task (a task router routes by it) */
    double *beam_score;     /* [max_batch] */
    int64_t *beam_len;      /* [max_batch] */
    int32_t *beam_tok;      /* [max_batch, T] tokens of each live beam */
    int32_t *beam_tmp;      /* [max_batch, T] */
    double *cand;           /* [max_batch * V] candidate scores (beam) */
    double *beam_next;      /* [max_batch] scores of the next beams */
    int64_t *beam_next_len; /* [max_batch] */
    double *done_score;     /* [max_batch] best finished hypothesis of each prompt */
    int64_t *done_count;    /* [max_batch] finished hypotheses of each prompt */
    uint8_t *done;          /* [max_batch] */
};

/*
 * Not collective on its own, but every rank must call it alike: a session for a model of
 * experiment x (dims and the task table given), with parameters initialised from the seed
 * (tests overwrite them, or omni_infer_open reads a checkpoint into them).
 */
omni_status omni_infer_create(MPI_Comm comm, const omni_experiment *x, const omni_data_dims *dims,
                              int n_tasks, const infer_task *tasks, int64_t max_batch,
                              omni_infer **out);

/* Collective: omni_infer_eval over an open sampler; model_task[k] is the model's task for
 * the sampler's task k (-1: skip it); out[k] gets task k's results (rank 0). */
omni_status omni_infer_eval_sampler(omni_infer *s, const omni_sampler *sp, const int *model_task,
                                    int n, const omni_eval_opts *o, omni_eval_task *out);

#endif /* OMNI_INFERENCE_INTERNAL_H */
