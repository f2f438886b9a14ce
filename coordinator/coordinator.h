/*
 * coordinator — the control plane (docs/design.md §1), on rank 0 of the job: it hands each
 * worker its slice of the global batch plan, reduces the metrics the workers report,
 * prints them and appends them to OUT_DIR/metrics.jsonl, and decides when to evaluate,
 * checkpoint and stop (step limit, SIGTERM/SIGINT, non-finite loss). It never holds the
 * activations of other ranks.
 *
 * The plan of step s is the set of slots 0..batch-1; the content of a slot (which task
 * and which samples fill that window) is a pure function of (seed, split, s, slot) drawn
 * by the data sampler, so the plan — and the training trajectory — does not depend on the
 * number of processes. A worker's slice is a contiguous slot range.
 */
#ifndef OMNI_COORDINATOR_H
#define OMNI_COORDINATOR_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base.h"
#include "datasets.h"
#include "experiment.h"
#include "worker.h"

/* ---- the plan ------------------------------------------------------------------ */

/* One worker's part of a step: slots [slot_lo, slot_hi) of the global batch. */
typedef struct {
    int64_t step;
    int64_t slot_lo, slot_hi;
} omni_slice;

/* The slice of `rank` among `size` for a batch of `batch` slots (pure; balanced to one
 * slot, possibly empty when batch < size). */
omni_slice omni_plan_slice(int64_t step, int64_t batch, int rank, int size);

/* Collective: rank 0 draws the plan of `step` and sends every rank its slice. `scratch`
 * holds 3 * size int64 on rank 0 (allocated once by the caller; may be NULL elsewhere). */
omni_status omni_plan_scatter(MPI_Comm comm, int64_t step, int64_t batch, int64_t *scratch,
                              omni_slice *mine);

/* ---- stopping ------------------------------------------------------------------ */

/* Install SIGTERM/SIGINT/SIGUSR1 handlers that only set a flag (the step in flight
 * finishes; SIGUSR1 is the one mpirun forwards to the ranks). */
void omni_signals_install(void);
bool omni_signal_received(void);
/* The signal number received, 0 if none. */
int omni_signal_number(void);

/* What the job does after a step; decided on rank 0 and broadcast. */
typedef enum {
    OMNI_NEXT_CONTINUE = 0,
    OMNI_NEXT_STOP_DONE,   /* step limit reached */
    OMNI_NEXT_STOP_SIGNAL, /* SIGTERM/SIGINT/SIGUSR1: checkpoint, exit 0 */
    OMNI_NEXT_COUNT
} omni_next;

/* Collective: rank 0's decision after `step` (1-based count of steps done) reaches all. */
omni_status omni_decide_next(MPI_Comm comm, int64_t steps_done, int64_t steps_total,
                             omni_next *next);

/* ---- metrics ------------------------------------------------------------------- */

/* The metrics log of a run: lines on stdout (rank 0) and OUT_DIR/metrics.jsonl. Per-task
 * values are keyed by the names of the task table (task t: tok->tasks[t].name). */
typedef struct {
    FILE *jsonl;
    const omni_tokenization *tok;
    double t_start;
    int64_t first_step; /* step at start (after a resume), for the rate and ETA */
    double tokens_since, t_since;
} omni_metrics_log;

/* Rank 0 only: open OUT_DIR/metrics.jsonl for appending (creating OUT_DIR). `tok` names
 * the tasks (it must outlive the log). */
omni_status omni_metrics_log_open(omni_metrics_log *log, const omni_experiment *x,
                                  const omni_tokenization *tok, int64_t first_step);
void omni_metrics_log_close(omni_metrics_log *log);
/* Rank 0 only: print one training line and append one JSON object. `sum` holds the
 * metrics summed over `n_steps` steps since the last line. */
omni_status omni_metrics_log_train(omni_metrics_log *log, const omni_experiment *x, int64_t step,
                                   double lr, const omni_metrics *sum, int64_t n_steps);
/* Rank 0 only: print the evaluation lines (loss and next-token accuracy per task, the
 * exact match of greedy captions where exact[t] >= 0, and the mean return of eval.env
 * rollouts where ret[t] is not NaN; exact and ret may be NULL) and append one JSON object
 * with "eval": true. */
omni_status omni_metrics_log_eval(omni_metrics_log *log, const omni_experiment *x, int64_t step,
                                  const omni_metrics *sum, const double *exact, const double *ret);

/* ---- the run ----------------------------------------------------------------- */

/*
 * Collective: train experiment x on the ranks of comm, from scratch or from a checkpoint
 * (opts->resume: "auto", a file, or NULL): the loop of plan, worker step, metrics, log,
 * evaluation, checkpoints, and the stop decisions. A SIGTERM/SIGINT ends it after the
 * step in flight with a checkpoint and OMNI_OK; a non-finite loss with OMNI_ERR_NUMERIC.
 * A checkpoint whose task table is not the data's is refused (OMNI_ERR_CKPT naming the
 * tasks), unless opts->remap_tasks: then its tasks are carried over by name and new
 * tasks start from their initialisation (omni_ckpt_read_remapped). The effective
 * configuration is printed once the data and the checkpoint are checked, so a run that
 * fails before shows its error alone. A run stopped by a signal ends with "stopped at
 * step K of N by SIGTERM; checkpoint FILE; resume with --resume auto".
 */
typedef struct {
    const char *resume; /* --resume: "auto", a checkpoint file, or NULL */
    bool remap_tasks;   /* --remap-tasks */
    const char *source; /* the experiment file, named above the configuration */
} omni_train_opts;
omni_status omni_train(MPI_Comm comm, const omni_experiment *x, const omni_train_opts *opts);

/* The checkpoint group of the routing tables of the last logged window (MoE models, once
 * a step is logged): f64 TABLE_expert_load, _drop, _prob [moe layer, group, expert] and
 * TABLE_tokens, TABLE_entropy [moe layer, group] for TABLE task (rows: the index in
 * /tokenization/tasks) and modality (rows: omni_modality), and i64 steps [2], the first
 * and last step of the window (docs/checkpoints.md). */
#define OMNI_CKPT_ROUTING "state/coordinator/routing"

#endif /* OMNI_COORDINATOR_H */
