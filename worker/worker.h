/*
 * worker — the data plane (docs/design.md §1), one per rank: it fills its slice of the
 * global batch, runs the dense layers data-parallel and its shard of the experts of every
 * MoE layer, exchanges tokens with MPI_Alltoallv, and sums dense gradients with
 * MPI_Allreduce in buckets started as soon as a layer's backward is done.
 */
#ifndef OMNI_WORKER_H
#define OMNI_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include "base.h"
#include "checkpoint.h"
#include "datasets.h"
#include "experiment.h"
#include "experts.h"

/* ---- dense gradient reduction in buckets --------------------------------------- */

#define OMNI_MAX_BUCKETS 1024

/*
 * Buckets are contiguous float ranges of gradient buffers (e.g. one per transformer
 * block) summed over the ranks of `comm` in place with MPI_Iallreduce. A bucket is started
 * when its gradients are final; omni_grad_reducer_progress lets MPI move them while
 * backward goes on; omni_grad_reducer_wait completes all. Collective in the order of
 * starts: every rank starts the same buckets in the same order.
 */
typedef struct {
    MPI_Comm comm;
    int size;
    int n_buckets;
    float *ptr[OMNI_MAX_BUCKETS];
    int64_t len[OMNI_MAX_BUCKETS];
    MPI_Request req[OMNI_MAX_BUCKETS];
    double seconds_waiting; /* time spent inside MPI calls of this reducer */
} omni_grad_reducer;

void omni_grad_reducer_init(omni_grad_reducer *r, MPI_Comm comm);
/* Add a bucket; returns its index, or -1 when OMNI_MAX_BUCKETS are in use. Buckets of more
 * than INT_MAX floats are split. */
int omni_grad_reducer_add(omni_grad_reducer *r, float *p, int64_t n);
/* Start summing bucket i (no-op with one rank). */
omni_status omni_grad_reducer_start(omni_grad_reducer *r, int i);
/* Give MPI a chance to progress the started buckets (non-blocking). */
omni_status omni_grad_reducer_progress(omni_grad_reducer *r);
/* Complete every started bucket. */
omni_status omni_grad_reducer_wait(omni_grad_reducer *r);

/* ---- metrics ------------------------------------------------------------------- */

/*
 * What the workers report for one step, as sums over their tokens: reduced with one
 * MPI_Reduce onto rank 0. Arrays are sized at creation (tasks, MoE layers, experts).
 */
typedef struct {
    int n_tasks, n_moe_layers, n_experts;
    int64_t n_values;     /* doubles in `v` */
    double *v;            /* the flat storage of the views below */
    double *loss;         /* [1] the batch loss (sum of rank parts, each already / loss_norm) */
    double *aux;          /* [1] weighted aux (load balance) loss, summed over MoE layers */
    double *z;            /* [1] weighted z-loss, summed over MoE layers */
    double *entropy;      /* [1] weighted entropy losses (moe.entropy), summed over MoE layers */
    double *tokens;       /* [1] positions that are not padding */
    double *task_loss;    /* [n_tasks] sum of unweighted CE over loss tokens */
    double *task_count;   /* [n_tasks] loss tokens */
    double *task_correct; /* [n_tasks] argmax == target */
    double *load;         /* [n_moe_layers, n_experts] token assignments kept */
    double *dropped;      /* [n_moe_layers] assignments dropped over capacity */
    double *assigned;     /* [n_moe_layers] assignments routed (kept + dropped) */
    /* [n_moe_layers, route_len]: per layer, the routing statistics by task then by
     * modality (gating.h omni_route_table), summed over ranks like the rest; views by
     * omni_metrics_tables. */
    int64_t route_len;
    double *route;
} omni_metrics;

omni_status omni_metrics_create(omni_metrics *m, int n_tasks, int n_moe_layers, int n_experts);
void omni_metrics_free(omni_metrics *m);
void omni_metrics_zero(omni_metrics *m);
/* Collective: sum every rank's values onto rank 0 (in place there). */
omni_status omni_metrics_reduce(MPI_Comm comm, omni_metrics *m);
/* The routing tables of MoE layer l: by task [n_tasks, E] and by modality [OMNI_MOD_COUNT, E]. */
void omni_metrics_tables(const omni_metrics *m, int l, omni_route_table *by_task,
                         omni_route_table *by_modality);
/* max / mean expert load of MoE layer l (1.0 when perfectly even; 0 when no tokens). */
double omni_metrics_load_ratio(const omni_metrics *m, int l);

/* ---- the MoE token exchange over MPI ---------------------------------------- */

/* The MPI implementation of the MoE exchange interface (experts.h omni_moe_comm). */
typedef struct {
    MPI_Comm comm;
    int rank, size;
    int *sc, *sd, *rc, *rd; /* [size] int counts and displacements, sized once */
    MPI_Datatype row;       /* row_len contiguous floats, committed once */
    int64_t row_len;        /* 0: no type made yet */
    double seconds;         /* time inside the exchange's MPI calls */
    double bytes_sent;      /* token bytes sent to other ranks */
} omni_mpi_moe_comm;

/* Fill `ops` with the MPI exchange over comm, its state in c (which must outlive ops). */
omni_status omni_mpi_moe_comm_init(omni_mpi_moe_comm *c, MPI_Comm comm, omni_moe_comm *ops);
void omni_mpi_moe_comm_free(omni_mpi_moe_comm *c);

/* ---- the worker of a training job ------------------------------------------- */

typedef struct omni_worker omni_worker;

/*
 * Collective: open the experiment's data (every rank checks every file; failures agreed),
 * check the expert placement for this number of processes, create the model and its MoE
 * layers for this rank's largest slice, and initialise parameters from the seed.
 */
/* Whether micro-batches of experiment x need the routing pre-pass: its MoE layers make a
 * decision (capacity drops, expert choice) or take a loss or bias step from statistics of
 * the whole batch. Without (a dense model; dropless token or task choice with no aux, z,
 * entropy or bias term) each pass routes its own tokens, which is the same. */
bool omni_worker_needs_prepass(const omni_experiment *x);
omni_status omni_worker_create(omni_worker **w, MPI_Comm comm, const omni_experiment *x);
void omni_worker_free(omni_worker *w);

/* Sizes for the coordinator's metrics: tasks, MoE layers, experts per layer. */
void omni_worker_shape(const omni_worker *w, int *n_tasks, int *n_moe_layers, int *n_experts);
/* The tokenization the model is trained with: its task table names task t of every
 * per-task metric (tasks[t].name, index t). Lives as long as the worker. */
const omni_tokenization *omni_worker_tokenization(const omni_worker *w);

/*
 * Collective: one training step on slots [slot_lo, slot_hi) of step `step`: fill, forward,
 * backward, gradient reduction (dense summed over all ranks, replicated experts within
 * their group), global-norm clipping, AdamW, balancing-bias update. Adds this rank's part
 * of the step's metrics into `m` (global router statistics on rank 0 only). A non-finite
 * loss or gradient norm is OMNI_ERR_NUMERIC on every rank, with the step and the task
 * named, and leaves the parameters as they were.
 */
omni_status omni_worker_train_step(omni_worker *w, int64_t step, int64_t slot_lo, int64_t slot_hi,
                                   omni_metrics *m);

/* Collective: forward passes over the fixed validation windows of every task (at most
 * eval.batches batches of data.batch windows per task), adding per-task loss, token
 * and correct counts into `m` (this rank's part). */
omni_status omni_worker_eval(omni_worker *w, omni_metrics *m);

/*
 * The training state as checkpoint tensors (params/, optim/m/, optim/v/, state/), built
 * from the parts' tensor tables when the worker is created: *t points at the list (valid
 * until the worker is freed); returns its length.
 */
int omni_worker_state(omni_worker *w, const omni_ckpt_tensor **t);

/* Seconds spent inside MPI calls by this worker (token exchange, reductions) since the
 * last call, which resets it. */
double omni_worker_mpi_seconds(omni_worker *w);
/* Token bytes sent to other ranks by the MoE exchange since the last call (resets). */
double omni_worker_exchange_bytes(omni_worker *w);
/* Where a training step's time goes on this rank, accumulated since the last reset (s). */
typedef enum {
    OMNI_WORKER_T_FILL = 0, /* sampling the slice's windows, and the loss-token all-reduce */
    OMNI_WORKER_T_FORWARD,  /* model forward (MoE layers and their exchanges included) */
    OMNI_WORKER_T_BACKWARD, /* model backward (likewise) */
    OMNI_WORKER_T_REDUCE,   /* gradient all-reduces, squared norms, the norm all-reduce */
    OMNI_WORKER_T_UPDATE,   /* AdamW of dense parameters and experts, balancing bias */
    OMNI_WORKER_T_COUNT
} omni_worker_timer;
void omni_worker_timers(const omni_worker *w, double out[OMNI_WORKER_T_COUNT]);
void omni_worker_timers_reset(omni_worker *w);
/* The MoE layers of this worker (routing, statistics, timers), NULL for a dense model. */
omni_moe *omni_worker_moe(omni_worker *w);
/* The dense model of this worker, and the sampler of its data (for evaluations that decode:
 * inference/). */
omni_model *omni_worker_model(omni_worker *w);
const omni_sampler *omni_worker_sampler(const omni_worker *w);

#endif /* OMNI_WORKER_H */
