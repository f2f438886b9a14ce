/*
 * experts — the expert side of an MoE layer and the layer itself (docs/design.md §1, §2):
 *
 *  - the placement of experts on ranks and the DISPATCH PLAN: pure functions, no MPI, that
 *    say from one worker's routing which (token, choice) row goes to which expert on which
 *    rank, in which order, so that one all-to-all carries the rows and its mirror brings the
 *    results back;
 *  - SwiGLU experts W2 (silu(W1 x) * (W3 x)) over rows that are contiguous per expert,
 *    through sgemm, forward and backward;
 *  - omni_moe: every MoE layer of a model (router + routed experts + optional shared
 *    experts), their parameters, gradients and AdamW moments, forward and backward behind
 *    the model's FFN hook, with the token exchange behind omni_moe_comm so the distributed
 *    part only supplies an MPI implementation of four calls.
 *
 * Row order, fixed and tested: a worker's send buffer holds its kept assignments by expert
 * ascending (so by destination rank ascending), within an expert by token ascending. An
 * expert's input block on its owner holds the rows by source rank ascending, then in the
 * source's order.
 */
#ifndef OMNI_EXPERTS_H
#define OMNI_EXPERTS_H

#include <stdbool.h>
#include <stdint.h>

#include "base.h"
#include "experiment.h"
#include "gating.h"
#include "model.h"

/* ---- the token exchange ------------------------------------------------------ */

/*
 * What an MoE layer needs from the job. All four calls are collective over the ranks of
 * the expert-parallel group (every rank calls them in the same order). Counts and
 * displacements are in rows; rank q's part of a send buffer starts at send_displ[q].
 */
typedef struct {
    void *ctx;
    int rank, size;
    /* Each rank sends per_rank int64 to every rank: send[q * per_rank ...] goes to rank q,
     * recv[s * per_rank ...] came from rank s. */
    omni_status (*alltoall_counts)(void *ctx, const int64_t *send, int64_t *recv, int64_t per_rank);
    /* Rows of row_len floats: an MPI_Alltoallv. */
    omni_status (*alltoallv_rows)(void *ctx, const float *send, const int64_t *send_count,
                                  const int64_t *send_displ, float *recv, const int64_t *recv_count,
                                  const int64_t *recv_displ, int64_t row_len);
    /* buf[i] = sum over ranks of buf[i], in place. */
    omni_status (*allreduce_sum)(void *ctx, double *buf, int64_t n);
    /* On rank root, buf[i] = sum over ranks of buf[i] (an MPI_Reduce in place); the other
     * ranks' buf is left as it was. In a fixed order for a given number of ranks. */
    omni_status (*reduce_sum_to)(void *ctx, float *buf, int64_t n, int root);
} omni_moe_comm;

/* The single-process exchange (rank 0 of 1): every call is the identity. */
void omni_moe_comm_local(omni_moe_comm *c);

/* ---- placement ----------------------------------------------------------------- */

/*
 * Experts of `rank` among n_ranks: with E >= N the experts e with e * N / E == rank; with
 * N > E (N % E == 0, checked by omni_moe_placement_check) the expert rank % E, one replica
 * per group of E ranks.
 */
void omni_expert_shard(int64_t n_experts, int n_ranks, int rank, int64_t *first, int64_t *count);
/* The rank that `rank` sends expert e's rows to: the owner of e, or with replication the
 * replica in the sender's own group, (rank / E) * E + e. */
int omni_expert_dest(int64_t e, int64_t n_experts, int n_ranks, int rank);
/* The placements a job may use: OMNI_ERR_CONFIG unless E % N == 0 (each rank owns E/N
 * experts) or N % E == 0 (experts replicated over N/E groups). The functions above also
 * handle uneven shards (E > N, E % N != 0), which the job refuses so that every rank
 * carries the same expert work. */
omni_status omni_moe_placement_check(int64_t n_experts, int n_ranks);

/* ---- the dispatch plan ------------------------------------------------------- */

typedef struct {
    int n_ranks, rank;
    int64_t n_experts, k, e_first, e_count; /* this rank's experts [e_first, +e_count) */
    int64_t max_tokens, max_recv;
    /* sender side: from this worker's routing */
    int64_t n_send;        /* rows sent (kept assignments) */
    int64_t n_local;       /* rows that stay here (shadowed experts), after the sent ones */
    int32_t *pos;          /* [max_tokens * k] row of assignment (t, c) in the send buffer, -1 */
    int64_t *expert_start; /* [E] first send row of expert e */
    int64_t *send_count;   /* [N] rows to rank q */
    int64_t *send_displ;   /* [N] */
    int64_t *count_msg;    /* [N, E] rows for expert e on rank q (the counts message) */
    /* receiver side: from the counts every rank sent here */
    int64_t n_recv;       /* rows received */
    int64_t *recv_counts; /* [N, E] as received: rows from source s for expert e */
    int64_t *recv_count;  /* [N] rows from source s */
    int64_t *recv_displ;  /* [N] */
    int64_t *expert_off;  /* [e_count + 1] expert blocks of the expert-major buffer */
    int64_t *recv_to_exp; /* [max_recv] row i of the receive buffer -> expert-major row */
} omni_dispatch_plan;

/* Buffers for n_ranks ranks, up to max_tokens tokens of k choices sent and max_recv rows
 * received by this rank. */
omni_status omni_dispatch_plan_create(omni_dispatch_plan *p, int64_t n_experts, int64_t k,
                                      int n_ranks, int rank, int64_t max_tokens, int64_t max_recv);
void omni_dispatch_plan_free(omni_dispatch_plan *p);
/* Sender side from the routing of n tokens: expert/slot [n * k] and kept [E] as given by
 * omni_router_topk / omni_router_assign. Fills pos, send counts and count_msg. The rows of
 * the experts shared in this pass (shadow [E], NULL: none) that this rank does not own are
 * not sent: their send-buffer rows [n_send, n_send + n_local) follow the sent ones, by
 * expert ascending then slot, and expert_start[e] is where each expert's block begins. */
void omni_dispatch_plan_send(omni_dispatch_plan *p, const int32_t *expert, const int32_t *slot,
                             const int64_t *kept, const bool *shadow, int64_t n);
/* Receiver side from recv_counts (which the caller filled by exchanging count_msg with
 * alltoall_counts, E per rank). OMNI_ERR_INTERNAL when a row arrives for an expert that
 * this rank does not hold or more than max_recv rows arrive. */
omni_status omni_dispatch_plan_recv(omni_dispatch_plan *p);

/* Receiver side without a counts message, from the kept rows of every rank for every expert
 * (kept_all [N, E], the same on every rank) and the experts shadowed in this pass (shadow
 * [E], NULL: none), whose rows stay on each sender but their owner's own. Then as
 * omni_dispatch_plan_recv. */
omni_status omni_dispatch_plan_recv_all(omni_dispatch_plan *p, const int64_t *kept_all,
                                        const bool *shadow);

/*
 * Shadow experts (parallel.shadow; FasterMoE's "shadowing"). When a pass's routing leaves
 * one rank with more expert rows than the others, every other rank can compute its own rows
 * of one of that rank's experts itself with a copy of the expert's weights, sent for the
 * pass, and send back the gradient it made of them. omni_shadow_choose decides which from
 * the kept rows of every rank for every expert (kept_all [N, E]; placement E >= N): at
 * most max_shadow experts, greedily, each time the expert of the busiest rank that lowers
 * the busiest rank's load the most, counting cost_rows of expert rows against every rank
 * for the copy (its weights in, its gradient out), as long as the busiest load falls.
 * Deterministic: every rank chooses alike. Flags them in shadow [E], returns how many, and
 * leaves the rows each rank will compute, with the costs, in load [N].
 */
int64_t omni_shadow_choose(const int64_t *kept_all, int64_t n_experts, int n_ranks,
                           int64_t max_shadow, int64_t cost_rows, int64_t *load, bool *shadow);

/* send[pos(t, c)] = x[t] for every kept assignment. */
void omni_dispatch_gather(float *send, const float *x, const omni_dispatch_plan *p, int64_t n,
                          int64_t d);
/* to_expert: dst[recv_to_exp[i]] = src[i]; from_expert: dst[i] = src[recv_to_exp[i]]. */
void omni_dispatch_to_expert(float *dst, const float *src, const omni_dispatch_plan *p, int64_t d);
void omni_dispatch_from_expert(float *dst, const float *src, const omni_dispatch_plan *p,
                               int64_t d);

/* ---- SwiGLU experts -------------------------------------------------------------- */

/*
 * Expert j of n_local transforms rows [off[j], off[j+1]) of x [rows, d]:
 *   h1 = x W1_j, h3 = x W3_j, a = silu(h1) * h3, y = a W2_j
 * with W1, W3 [n_local, d, ff] and W2 [n_local, ff, d]; h1, h3 [rows, ff] are kept for the
 * backward pass, act [rows, ff] is scratch. y is overwritten, or accumulated when accumulate.
 */
void omni_experts_forward(float *y, float *h1, float *h3, float *act, const float *x,
                          const float *w1, const float *w3, const float *w2, const int64_t *off,
                          int64_t n_local, int64_t d, int64_t ff, bool accumulate);
/*
 * Backward of omni_experts_forward given dy: dw1, dw3, dw2 accumulate (+=); dx is
 * overwritten and may alias x (each block of x is read before its dx is written); h1 and
 * h3 are destroyed; act is scratch [rows, ff].
 */
void omni_experts_backward(float *dx, float *dw1, float *dw3, float *dw2, float *h1, float *h3,
                           float *act, const float *dy, const float *x, const float *w1,
                           const float *w3, const float *w2, const int64_t *off, int64_t n_local,
                           int64_t d, int64_t ff);

/* ---- the MoE layers of a model ------------------------------------------------- */

typedef struct omni_moe omni_moe;

/*
 * The MoE layers of experiment x (blocks with omni_experiment_is_moe_block), for up to
 * max_tokens tokens per call on this worker, exchanging tokens through comm (copied;
 * comm->ctx must outlive the object). n_tasks sizes the task-by-expert table. Buffers for
 * every forward/backward are allocated here. Not collective.
 */
omni_status omni_moe_create(omni_moe **out, const omni_experiment *x, int64_t max_tokens,
                            int64_t n_tasks, const omni_moe_comm *comm);
/*
 * The same for micro-batches (data.micro_batch): routing decided over up to
 * max_route_tokens tokens at once (omni_moe_route), and forward/backward passes of up to
 * max_pass_tokens tokens, whose expert buffers are sized by it. omni_moe_create is this
 * with both sizes max_tokens.
 */
omni_status omni_moe_create_passes(omni_moe **out, const omni_experiment *x,
                                   int64_t max_route_tokens, int64_t max_pass_tokens,
                                   int64_t n_tasks, const omni_moe_comm *comm);
void omni_moe_free(omni_moe *m);
/* Parameters by each tensor's rule (omni_tensor_init): router and experts normal(0, 0.02)
 * from the (seed, tensor name, expert index) streams, the experts' W2 scaled by
 * 1/sqrt(2 n_layers); bias 0. */
void omni_moe_init_params(omni_moe *m);

int64_t omni_moe_n_layers(const omni_moe *m);
/* The MoE index of model block `layer`, or -1 when it is dense. */
int64_t omni_moe_layer_index(const omni_moe *m, int64_t layer);

/* Set before a forward: the optimizer step (keys the jitter), the global index of this
 * worker's first token, and whether this is training (jitter on). Ends the forced routing
 * of the last omni_moe_route. */
void omni_moe_set_step(omni_moe *m, int64_t step, int64_t token_offset, bool training);

/*
 * Micro-batches (docs/training.md). omni_moe_route decides the routing of block `layer` for
 * a whole batch b of n tokens (up to max_route_tokens; the rank's share of the global
 * batch): the choices, the capacity drops, the statistics of the global batch (all-reduced:
 * collective), the aux/z/entropy losses and the routing tables, as a forward would; it
 * computes no expert and writes no output. From then on (until omni_moe_set_step) every
 * forward of that block takes those decisions for its tokens, which are windows
 * first_seq, first_seq + 1, ... of b (set by omni_moe_window), and its backward takes the
 * loss gradients with the whole batch's statistics: the passes of b's windows in any split
 * give the gradient of one pass over b. Both are shaped as omni_ffn_hook's route and window.
 */
omni_status omni_moe_route(void *ctx, int64_t layer, const float *in, const omni_batch *b,
                           int64_t n);
void omni_moe_window(void *ctx, int64_t first_seq);

/*
 * The model's FFN hook (ctx is the omni_moe). forward: out[n, d] = F(in) of block `layer`,
 * caching what backward needs, and the layer's aux/z losses. backward: din += dF^T dout,
 * including the gradients of the aux/z losses (scaled by their coefficients), gradients
 * accumulated (+=). Collective over the comm (exchanges and one all-reduce of sums).
 * n <= max_tokens (max_pass_tokens); b may be NULL (no per-task statistics). One backward
 * per forward.
 */
omni_status omni_moe_forward(void *ctx, int64_t layer, float *out, const float *in,
                             const omni_batch *b, int64_t n);
omni_status omni_moe_backward(void *ctx, int64_t layer, float *din, const float *dout,
                              const omni_batch *b, int64_t n);

/* Sum over MoE layers of aux_loss * aux + z_loss * z (+ the moe.entropy terms) from the last
 * forward: the value to add
 * to the total loss. It is already global (identical on every rank): do not sum it over
 * ranks. aux/z of one MoE layer, unscaled: omni_moe_layer_losses. */
double omni_moe_loss(const omni_moe *m);
void omni_moe_layer_losses(const omni_moe *m, int64_t index, double *aux, double *z);
/* LIMoE's entropy losses of one MoE layer's last forward, unscaled (moe.entropy; 0 when
 * off): the local and global terms summed over modalities (gating.h). */
void omni_moe_layer_entropy(const omni_moe *m, int64_t index, double *local, double *global);
/* The global routing statistics of one MoE layer's last forward. */
const omni_router_sums *omni_moe_layer_stats(const omni_moe *m, int64_t index);
/* The routing of one MoE layer's last forward (after omni_moe_route: of the routed batch):
 * expert and slot [n, k] (see gating.h) of its n routed rows, which are the non-padding
 * positions in order (padding is not routed). With
 * moe.router: expert_choice the rows are E wide ([n, E], omni_router_choice_layout). */
void omni_moe_layer_routing(const omni_moe *m, int64_t index, const int32_t **expert,
                            const int32_t **slot, int64_t *n);
/* This worker's routing statistics of one MoE layer's last TRAINING forward, by task and by
 * modality (gating.h omni_route_table; local sums, not summed over ranks; zero after a
 * forward that is not training). */
void omni_moe_layer_tables(const omni_moe *m, int64_t index, omni_route_table *by_task,
                           omni_route_table *by_modality);
/* The modality of the token positions of `task` (patches go by their kind): text by
 * default; control for control tasks. Set once after create. */
void omni_moe_set_task_modality(omni_moe *m, int64_t task, omni_modality mod);
/* The balancing bias [E] of one MoE layer (state: read, or set when resuming). */
float *omni_moe_layer_bias(omni_moe *m, int64_t index);
/* After a step: nudge every layer's bias from its last global loads (moe.bias_rate; a no-op
 * when it is 0). Deterministic and identical on every rank. */
void omni_moe_update_bias(omni_moe *m);

/* Where the time of forward/backward goes, accumulated since the last reset (seconds). */
typedef enum {
    OMNI_MOE_T_ROUTE = 0, /* router forward: jitter, logits, softmax, top-k, capacity, sums */
    OMNI_MOE_T_MOVE,      /* gathering, permuting, exchanging and combining rows */
    OMNI_MOE_T_EXPERTS,   /* routed experts forward and backward (the sgemms) */
    OMNI_MOE_T_SHARED,    /* shared experts forward and backward */
    OMNI_MOE_T_ROUTER_BW, /* router backward: gates, losses, softmax, W_r */
    OMNI_MOE_T_COUNT
} omni_moe_timer;
void omni_moe_timers(const omni_moe *m, double out[OMNI_MOE_T_COUNT]);
void omni_moe_timers_reset(omni_moe *m);
/* Shadow experts (parallel.shadow) since the last omni_moe_timers_reset: experts shared, and
 * MoE layer passes that decided (every forward of a layer when shadowing is on). */
void omni_moe_shadow_counts(const omni_moe *m, int64_t *shared, int64_t *passes);
/* What one shared expert is counted as, in rows of expert work on every rank (its weights
 * in, its gradient out): OMNI_SHADOW_COST_ROWS unless set (tests set 0 to share whenever
 * sharing lowers the busiest load at all). */
#define OMNI_SHADOW_COST_ROWS 32
void omni_moe_set_shadow_cost(omni_moe *m, int64_t rows);
/* The experts that the last forward of one MoE layer shared [E], or NULL when shadowing is
 * off for this job (one rank, expert choice, replicated experts, parallel.shadow 0). */
const bool *omni_moe_layer_shadow(const omni_moe *m, int64_t index);

/* The tensor table (tensor.h descriptors, parameters then biases): the replicated tensors
 * of every layer (router, shared experts), then this rank's routed experts (sharded: rows
 * [row_lo, row_hi) of dim 0, the expert), then the balancing biases (state/..., not
 * trainable). data points at this rank's values. */
int64_t omni_moe_n_tensors(const omni_moe *m);
const omni_tensor *omni_moe_tensor_at(const omni_moe *m, int64_t i);
/* The range of the gradient buffer that holds the replicated tensors of model block
 * `block` (its router and shared experts; *count 0 for none), one all-reduce bucket. */
void omni_moe_group_range(const omni_moe *m, int64_t block, int64_t *first, int64_t *count);
/*
 * The flat buffers (one allocation each, the same layout): n_params elements, of which the
 * first n_dense are replicated (routers, shared experts: their gradients must be
 * all-reduced) and the rest this rank's experts (gradients stay local).
 */
void omni_moe_buffers(omni_moe *m, float **params, float **grads, float **adam_m, float **adam_v,
                      int64_t *n_params, int64_t *n_dense);
void omni_moe_zero_grad(omni_moe *m);
/* Sums of squared gradients: of the replicated part (the same on every rank, count it
 * once) and of this rank's experts (add over ranks). */
void omni_moe_grad_sumsq(const omni_moe *m, double *dense, double *experts);
/* One AdamW update of every trainable tensor (model.h omni_adamw, the optimizer shared
 * with the dense model). */
void omni_moe_step(omni_moe *m, const omni_adamw *a);

#endif /* OMNI_EXPERTS_H */
