/*
 * gating — the router of an MoE layer (docs/design.md §2, "MoE layer", "Auxiliary losses"):
 * logits = x W_r in fp32, softmax, top-k choice (optionally through a per-expert balancing
 * bias), gates, the capacity limit with batch-priority drops, the Switch load-balance and
 * z-losses with their gradients, auxiliary-loss-free bias updates, and routing statistics.
 *
 * Everything here is local to one worker and free of MPI. The statistics that the losses
 * need are SUMS over tokens (omni_router_sums), so the distributed part all-reduces one
 * array of doubles and every rank then sees the loss of the global batch; the gradients
 * are taken with those global sums, so the per-rank gradients add up to the gradient of the
 * global loss. The math is written out in docs/moe.md.
 *
 * Layouts: x [n, d], W_r [d, E], logits/probs [n, E] row-major; a token's k choices are
 * stored at [t * k + c], c = 0 the first choice.
 */
#ifndef OMNI_GATING_H
#define OMNI_GATING_H

#include <stdbool.h>
#include <stdint.h>

#include "base.h"

/* Capacity per expert for the n tokens of one worker: ceil(k * capacity_factor * n / E);
 * capacity_factor <= 0 is dropless and gives n (a token picks an expert at most once). */
int64_t omni_moe_capacity(int64_t k, double capacity_factor, int64_t n, int64_t n_experts);

/*
 * Multiplicative router jitter: xr[t, i] = x[t, i] * u, u uniform in [1 - jitter, 1 + jitter]
 * from the stream (seed, "jitter/<layer>", step), element (token_offset + row_t) * d + i, where
 * token_offset is the global position of this worker's first token and row_t = rows[t] the
 * worker-local position of row t (rows NULL: row_t = t), so the noise of a token does not
 * depend on the number of processes. jitter_backward adds dxr * u to dx.
 */
void omni_router_jitter(float *xr, const float *x, float jitter, uint64_t seed, int64_t layer,
                        int64_t step, int64_t token_offset, const int64_t *rows, int64_t n,
                        int64_t d);
void omni_router_jitter_backward(float *dx, const float *dxr, float jitter, uint64_t seed,
                                 int64_t layer, int64_t step, int64_t token_offset,
                                 const int64_t *rows, int64_t n, int64_t d);

/* logits = x W_r (sgemm), probs = softmax(logits), lse = logsumexp(logits), per token. */
void omni_router_forward(float *logits, float *probs, float *lse, const float *x, const float *w,
                         int64_t n, int64_t d, int64_t n_experts);

/*
 * Top-k choice: per token the k experts with the largest logits + bias (bias may be NULL),
 * in descending order (ties: lower expert index first). prob[t*k+c] = probs[t, expert]
 * (the UNBIASED probability); gate = prob, divided by the sum over the k when normalize.
 */
void omni_router_topk(int32_t *expert, float *prob, float *gate, const float *logits,
                      const float *probs, const float *bias, int64_t n, int64_t n_experts,
                      int64_t k, bool normalize);

/* int64 words of scratch that omni_router_assign needs. */
int64_t omni_router_assign_scratch(int64_t n, int64_t n_experts, int64_t k);

/*
 * Capacity and drops. An expert chosen by more than `capacity` assignments keeps them by
 * priority: every first choice before any second choice (c ascending), within one choice by
 * router probability descending, ties by token index ascending. slot[t*k+c] = the place of
 * the assignment among the kept rows of its expert, which are in token order, or -1 when
 * dropped; kept[e] = rows kept by expert e. No allocation: `scratch` holds
 * omni_router_assign_scratch(n, E, k) words.
 */
void omni_router_assign(int32_t *slot, int64_t *kept, const int32_t *expert, const float *prob,
                        int64_t n, int64_t n_experts, int64_t k, int64_t capacity,
                        int64_t *scratch);

/*
 * Sums over tokens: one array of doubles (`buf`, `len` entries) with named views, so one
 * all-reduce makes them global. Counted per layer and per step.
 */
typedef struct {
    int64_t n_experts, n_tasks, len;
    double *buf;
    double *assigned;      /* [E] token->expert assignments, k per token, BEFORE drops */
    double *prob;          /* [E] sum over tokens of the router probability */
    double *kept;          /* [E] assignments kept after the capacity limit */
    double *zsum;          /* [1] sum over tokens of logsumexp(logits)^2 */
    double *tokens;        /* [1] tokens routed */
    double *entropy;       /* [1] sum over tokens of the router entropy (nats) */
    double *dropped;       /* [1] assignments dropped by the capacity limit */
    double *task_assigned; /* [n_tasks, E] assignments by the task of the token */
    /* by modality, for the entropy losses (n_modalities 0: none) */
    int64_t n_modalities;
    double *mod_prob;    /* [n_modalities, E] sum over the modality's tokens of the probability */
    double *mod_entropy; /* [n_modalities] sum over its tokens of the router entropy (nats) */
    double *mod_tokens;  /* [n_modalities] its tokens routed */
    double *faults;      /* [1] routed rows that could not be routed (task routing: a row
                          * without a task); after the all-reduce every rank sees them */
} omni_router_sums;

/* Sums for E experts, n_tasks tasks, and n_modalities groups of the entropy losses (0 when
 * they are off: the array is then that of a model without them). */
omni_status omni_router_sums_create(omni_router_sums *s, int64_t n_experts, int64_t n_tasks,
                                    int64_t n_modalities);
void omni_router_sums_free(omni_router_sums *s);
void omni_router_sums_zero(omni_router_sums *s);
/* Add the statistics of n routed tokens; task may be NULL (not counted in the table), a
 * task < 0 or >= n_tasks is not counted in the table either. */
void omni_router_sums_add(omni_router_sums *s, const float *probs, const float *lse,
                          const int32_t *expert, const int32_t *slot, const int32_t *task,
                          int64_t n, int64_t k);

/*
 * Routing statistics by group of tokens, for seeing what the experts do (docs/metrics.md):
 * per task and per modality, kept and dropped assignments per expert, the router's
 * probabilities and the routing entropy. Unlike omni_router_sums these are LOCAL sums over
 * one worker's tokens, accumulated without MPI; the caller sums them over ranks (with the
 * metrics) and over steps. A table is a view into omni_route_table_len(G, E) doubles.
 */
typedef enum {
    OMNI_MOD_TEXT = 0, /* token positions of every task but control ones */
    OMNI_MOD_IMAGE,    /* image patches (of any task, control included) */
    OMNI_MOD_AUDIO,    /* audio-spectrogram patches */
    OMNI_MOD_CONTROL,  /* token positions of control tasks: observations and actions */
    OMNI_MOD_COUNT
} omni_modality;

/* "text", "image", "audio", "control": the keys of the modality tables in metrics.jsonl. */
const char *omni_modality_name(omni_modality m);

typedef struct {
    int64_t n_groups, n_experts;
    double *kept;    /* [G, E] assignments kept after the capacity limit */
    double *dropped; /* [G, E] assignments dropped over capacity */
    double *prob;    /* [G, E] sum over the group's tokens of the router probability */
    double *entropy; /* [G] sum over the group's tokens of the router entropy (nats) */
    double *tokens;  /* [G] tokens routed */
} omni_route_table;

/* Doubles of one table: (3 E + 2) G. */
int64_t omni_route_table_len(int64_t n_groups, int64_t n_experts);
/* Point the views of t at buf (omni_route_table_len doubles, not cleared). */
void omni_route_table_bind(omni_route_table *t, double *buf, int64_t n_groups, int64_t n_experts);

/*
 * Add n routed tokens to two tables at once: token t counts in group a_group[t] of `a` and
 * b_group[t] of `b`; a group outside [0, n_groups) is not counted. logits, probs [n, E] and
 * lse [n] as omni_router_forward gives them (a token's entropy is lse - sum_e p_e l_e, no
 * logarithm per expert), expert/slot [n, k] as omni_router_topk and omni_router_assign
 * give them. No allocation.
 */
void omni_route_tables_add(omni_route_table *a, const int32_t *a_group, omni_route_table *b,
                           const int32_t *b_group, const float *logits, const float *probs,
                           const float *lse, const int32_t *expert, const int32_t *slot, int64_t n,
                           int64_t k);

/*
 * The losses from (global) sums, T = tokens, A = k T assignments:
 *   aux = E * sum_i f_i P_i,  f_i = assigned_i / (k T),  P_i = prob_i / T
 *   z   = zsum / T
 * Unscaled: the layer multiplies by moe.aux_loss and moe.z_loss.
 */
void omni_router_losses(const omni_router_sums *s, int64_t k, double *aux, double *z);
/* max over experts of assigned_i divided by their mean (1 = perfect balance). */
double omni_router_load_ratio(const omni_router_sums *s);

/*
 * Backward pieces, for n local tokens with GLOBAL sums s:
 * gate_backward: dprobs[t, e] += d(gates)/d(probs) dgate (through the renormalisation).
 * aux_backward:  dprobs[t, i] += coef * E * f_i / T   (f_i held constant: counts are not
 *                differentiable, as in Switch).
 * softmax_backward: dlogits[t, j] = p_j (dprobs_j - sum_i p_i dprobs_i)   (overwrites).
 * z_backward:    dlogits[t, j] += coef * 2 lse_t p_j / T.
 * backward:      dw += xr^T dlogits, dxr = dlogits W_r^T (overwrites dxr).
 */
void omni_router_gate_backward(float *dprobs, const float *dgate, const int32_t *expert,
                               const float *prob, int64_t n, int64_t n_experts, int64_t k,
                               bool normalize);
void omni_router_aux_backward(float *dprobs, const omni_router_sums *s, double coef, int64_t k,
                              int64_t n);
void omni_router_softmax_backward(float *dlogits, const float *dprobs, const float *probs,
                                  int64_t n, int64_t n_experts);
void omni_router_z_backward(float *dlogits, const float *probs, const float *lse,
                            const omni_router_sums *s, double coef, int64_t n);
void omni_router_backward(float *dxr, float *dw, const float *dlogits, const float *xr,
                          const float *w, int64_t n, int64_t d, int64_t n_experts);

/*
 * LIMoE's entropy losses (moe.entropy; Mustafa et al. 2022), per modality m over the global
 * batch, from the modality sums (T_m tokens, p_m = sum of their probabilities / T_m):
 *   local_m  = mean over the modality's tokens of the entropy H(p_t) of their routing
 *   global_m = -H(p_m), counted only while H(p_m) < threshold
 * omni_router_sums_add_modality adds n tokens (modality mod[t]; outside [0, n_modalities): not
 * counted). omni_router_entropy_losses sums local_m and global_m over the modalities that
 * have tokens (unscaled; *local, *global). entropy_backward adds, for n local tokens,
 *   dprobs[t, i] += c_local / T_m * -(log p_t,i + 1) + c_global / T_m * (log p_m,i + 1)
 * (the global term only where it is active), log p_t,i = logits - lse: finite for any p;
 * scratch holds E doubles.
 */
void omni_router_sums_add_modality(omni_router_sums *s, const float *logits, const float *probs,
                                   const float *lse, const int32_t *mod, int64_t n);
void omni_router_entropy_losses(const omni_router_sums *s, double threshold, double *local,
                                double *global);
void omni_router_entropy_backward(float *dprobs, const float *logits, const float *lse,
                                  const int32_t *mod, const omni_router_sums *s, double c_local,
                                  double c_global, double threshold, int64_t n, double *scratch);

/*
 * Task-level routing (moe.router: task): the router runs on the task embeddings, one row
 * per task (probs, lse [n_tasks, E], expert [n_tasks, k] from omni_router_forward and
 * omni_router_topk), and every token of a task takes its task's row. Its losses count the
 * TASKS present in the global batch (those with a token in s->task_assigned), each once:
 *   T = tasks present,  f_i = (present tasks choosing i) / (k T),  P_i = sum_present p_t,i / T
 *   aux = E * sum_i f_i P_i,   z = sum_present lse_t^2 / T
 * Backward for one worker: `local[t]` = this worker's tokens of task t; it adds the share
 * local[t] / (global tokens of t) of task t's gradient, so that the replicated gradients
 * summed over ranks are those of the global loss. dprobs/dlogits are [n_tasks, E].
 */
double omni_router_task_count(const omni_router_sums *s, int64_t k);
void omni_router_task_losses(const omni_router_sums *s, const float *probs, const float *lse,
                             const int32_t *expert, int64_t k, double *aux, double *z);
void omni_router_task_aux_backward(float *dprobs, const omni_router_sums *s, const int32_t *expert,
                                   const double *local, double coef, int64_t k);
void omni_router_task_z_backward(float *dlogits, const float *probs, const float *lse,
                                 const omni_router_sums *s, const double *local, double coef,
                                 int64_t k);

/*
 * Expert choice (moe.router: expert_choice; Zhou et al. 2022). Each expert takes the
 * `capacity` = ceil(capacity_factor * k * T / E) tokens (at most T, at least 1) of the T
 * tokens of the global batch with the highest router probability for it; k (moe.top_k) is
 * so the average number of experts per token at capacity_factor 1.
 * choice_select: chosen[i] = 1 for the `capacity` tokens of highest score[i] (score
 *   descending, ties to the lower index: a total order), else 0; scratch holds capacity words.
 * choice_fallback: the per-token rule of inference (no batch to choose from):
 *   chosen[t, e] = 1 for the token's k largest logits (ties to the lower expert), else 0.
 * choice_layout: from chosen [n, E], the E-wide routing that the dispatch takes: for token
 *   t and c = e, expert[t*E+e] = e, prob = gate = probs[t, e] (not renormalised), slot =
 *   the token's place among e's chosen tokens in token order, or -1; kept[e] = its tokens.
 * choice_sums_add: as omni_router_sums_add, with assigned = kept = the choices and
 *   `dropped` = tokens chosen by no expert (they pass through the residual).
 * route_tables_add_choice: as omni_route_tables_add; a token chosen by no expert counts one
 *   drop at its most probable expert.
 */
int64_t omni_router_choice_capacity(int64_t k, double capacity_factor, int64_t tokens,
                                    int64_t n_experts);
void omni_router_choice_select(float *chosen, const float *score, int64_t n, int64_t capacity,
                               int64_t *scratch);
void omni_router_choice_fallback(float *chosen, const float *logits, int64_t n, int64_t n_experts,
                                 int64_t k);
void omni_router_choice_layout(int32_t *expert, int32_t *slot, float *prob, float *gate,
                               int64_t *kept, const float *chosen, const float *probs, int64_t n,
                               int64_t n_experts);
void omni_router_choice_sums_add(omni_router_sums *s, const float *probs, const float *lse,
                                 const float *chosen, const int32_t *task, int64_t n);
void omni_route_tables_add_choice(omni_route_table *a, const int32_t *a_group, omni_route_table *b,
                                  const int32_t *b_group, const float *logits, const float *probs,
                                  const float *lse, const float *chosen, int64_t n);

/* Auxiliary-loss-free balancing: bias_i += rate * sign(mean_j load_j - load_i), from the
 * global loads (assignments per expert). */
void omni_router_bias_update(float *bias, const double *load, int64_t n_experts, double rate);

#endif /* OMNI_GATING_H */
