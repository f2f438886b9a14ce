/*
 * inference: logits from the KV cache (omni_model_forward_cached) equal the full forward
 * pass (omni_model_forward) on 1, 2 and 4 processes, under causal and prefix attention, for
 * a model of 3 blocks whose middle one is an MoE layer (4 experts, top-2, dropless at
 * inference) sharded over the ranks and exchanged by the worker's MPI exchange.
 *
 * Each rank holds 3 samples of its own (keyed by global sample number, lengths 9..23 of a
 * context of 24, image patches and tokens, prefixes of different lengths). The full pass
 * puts one sample per window. The cached pass feeds each sample's prefix in one step, then
 * one position per step; rows whose sample is done are padding, and every rank makes the
 * same number of steps (the MoE layer is collective). Tolerance: |cached - full| <=
 * 1e-4 * max(1, |full|) for every logit of every position.
 * Exit 0 on success, 1 naming the first mismatch.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets.h"
#include "experts.h"
#include "model.h"
#include "worker.h"

enum { S = 3, T = 24, PD = 4 };

static int failures;

static void setup(omni_experiment *x, omni_attention mode)
{
    omni_experiment_defaults(x);
    x->experiment.seed = 5;
    x->model.d_model = 32;
    x->model.n_layers = 3;
    x->model.n_heads = 4;
    x->model.d_ff = 48;
    x->model.context = T;
    x->model.attention = mode;
    x->moe.every = 2; /* block 1 */
    x->moe.num_experts = 4;
    x->moe.top_k = 2;
    x->moe.expert_ff = 24;
    x->moe.capacity_factor = 0.0;
    x->moe.shared_experts = 0;
}

/* Sample g: <task>, 4 image patches (a 2 x 2 grid), <sep> and text bytes; its prefix runs
 * to the <sep>, so the first step is 6 positions, then 3 + g % 15 more. */
static int64_t fill_sample(omni_batch *b, int64_t row, int64_t g)
{
    int64_t n = 9 + g % 15;
    for (int64_t t = 0; t < T; t++) {
        int64_t p = row * T + t;
        b->pos[p] = 0, b->segment[p] = -1, b->task[p] = -1, b->target[p] = -1;
        b->loss_mask[p] = 0, b->in_prefix[p] = 0, b->kind[p] = OMNI_POS_PAD;
        b->token[p] = OMNI_TOK_PAD, b->patch_row[p] = b->patch_col[p] = 0;
        memset(b->patch + p * PD, 0, PD * sizeof(float));
        if (t >= n)
            continue;
        b->pos[p] = (int32_t)t, b->segment[p] = 0, b->task[p] = (int32_t)(g % 2);
        b->in_prefix[p] = t < 6;
        if (t >= 1 && t <= 4) {
            b->kind[p] = OMNI_POS_IMAGE;
            b->patch_row[p] = (int32_t)((t - 1) / 2), b->patch_col[p] = (int32_t)((t - 1) % 2);
            for (int k = 0; k < PD; k++)
                b->patch[p * PD + k] = sinf((float)(g * 7 + t * 3 + k));
        } else {
            b->kind[p] = OMNI_POS_TOKEN;
            b->token[p] = t == 0   ? OMNI_TOK_TASK0 + (int32_t)(g % 2)
                          : t == 5 ? OMNI_TOK_SEP
                                   : (int32_t)((g * 31 + t * 17) % 256);
        }
    }
    return n;
}

/* Copy positions [a, a + n) of row `src` of the full batch into row `dst` of the step
 * batch (width w), padding the rest of it. */
static void copy_step(omni_batch *st, int64_t dst, int64_t w, const omni_batch *full, int64_t src,
                      int64_t a, int64_t n)
{
    for (int64_t i = 0; i < w; i++) {
        int64_t q = dst * w + i, p = src * T + a + i;
        if (i >= n) {
            st->kind[q] = OMNI_POS_PAD, st->token[q] = OMNI_TOK_PAD, st->pos[q] = 0;
            st->in_prefix[q] = 0, st->task[q] = -1, st->segment[q] = -1;
            st->patch_row[q] = st->patch_col[q] = 0;
            continue;
        }
        st->kind[q] = full->kind[p], st->token[q] = full->token[p], st->pos[q] = full->pos[p];
        st->in_prefix[q] = full->in_prefix[p], st->task[q] = full->task[p];
        st->segment[q] = 0, st->patch_row[q] = full->patch_row[p];
        st->patch_col[q] = full->patch_col[p];
        memcpy(st->patch + q * PD, full->patch + p * PD, PD * sizeof(float));
    }
    for (int64_t i = 0; i < w; i++)
        st->target[dst * w + i] = -1, st->loss_mask[dst * w + i] = 0;
}

static void die(int rank, omni_status st)
{
    fprintf(stderr, "rank %d: %s\n", rank, omni_error_message());
    (void)st;
    MPI_Abort(MPI_COMM_WORLD, 1);
}

static void run(MPI_Comm comm, omni_attention mode)
{
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    omni_experiment x;
    setup(&x, mode);
    omni_data_dims dims = {.n_tasks = 2,
                           .vocab = OMNI_TOK_TASK0 + 2,
                           .image_patch_dim = PD,
                           .audio_patch_dim = 0,
                           .max_rows = 2,
                           .max_cols = 2};
    omni_model *m;
    omni_status st = omni_model_create(&m, &x, &dims, S);
    if (st)
        die(rank, st);
    omni_model_init_params(m);
    omni_mpi_moe_comm mpi;
    omni_moe_comm ops;
    omni_moe *moe;
    if ((st = omni_mpi_moe_comm_init(&mpi, comm, &ops)) ||
        (st = omni_moe_create(&moe, &x, S * T, 2, &ops)))
        die(rank, st);
    omni_moe_init_params(moe);
    omni_moe_set_step(moe, 0, 0, false);
    omni_ffn_hook hook = {.ctx = moe, .forward = omni_moe_forward, .backward = omni_moe_backward};
    omni_model_set_moe(m, &hook);

    omni_batch full, step;
    if (omni_batch_alloc(&full, S, T, PD) || omni_batch_alloc(&step, S, T, PD))
        die(rank, OMNI_ERR_NOMEM);
    int64_t len[S], most = 0;
    for (int64_t s = 0; s < S; s++) {
        len[s] = fill_sample(&full, s, rank * S + s);
        most = len[s] > most ? len[s] : most;
    }
    full.loss_norm = 1.0;
    if ((st = omni_model_forward(m, &full, NULL)))
        die(rank, st);
    const int64_t V = dims.vocab;
    float *ref = malloc(sizeof(float) * S * T * V);
    memcpy(ref, omni_model_logits(m), sizeof(float) * S * T * V);

    omni_kv_cache *c;
    if ((st = omni_kv_cache_create(&c, m, S, T)))
        die(rank, st);
    /* step 0: every prefix (6 positions); then one position per step */
    int64_t steps = most - 6 + 1, all_steps;
    MPI_Allreduce(&steps, &all_steps, 1, MPI_INT64_T, MPI_MAX, comm);
    int64_t checked = 0;
    for (int64_t k = 0; k < all_steps; k++) {
        int64_t w = k == 0 ? 6 : 1, a = k == 0 ? 0 : 5 + k;
        step.n_seq = S, step.context = w;
        for (int64_t s = 0; s < S; s++)
            copy_step(&step, s, w, &full, s, a, a < len[s] ? (len[s] - a < w ? len[s] - a : w) : 0);
        if ((st = omni_model_forward_cached(m, c, &step)))
            die(rank, st);
        const float *lg = omni_kv_cache_logits(c);
        for (int64_t s = 0; s < S && !failures; s++)
            for (int64_t i = 0; i < w && a + i < len[s] && !failures; i++) {
                const float *got = lg + (s * w + i) * V, *want = ref + (s * T + a + i) * V;
                for (int64_t v = 0; v < V; v++) {
                    double tol = 1e-4 * fmax(1.0, fabs((double)want[v]));
                    if (fabs((double)got[v] - (double)want[v]) > tol) {
                        fprintf(stderr,
                                "rank %d, %s attention: sample %lld position %lld logit %lld: "
                                "cached %.7g, full forward %.7g\n",
                                rank, mode == OMNI_ATTN_PREFIX ? "prefix" : "causal",
                                (long long)(rank * S + s), (long long)(a + i), (long long)v,
                                (double)got[v], (double)want[v]);
                        failures++;
                        break;
                    }
                }
                checked++;
            }
    }
    int64_t total = 0, want_total = 0, mine = 0;
    for (int64_t s = 0; s < S; s++)
        mine += len[s];
    MPI_Allreduce(&checked, &total, 1, MPI_INT64_T, MPI_SUM, comm);
    MPI_Allreduce(&mine, &want_total, 1, MPI_INT64_T, MPI_SUM, comm);
    if (!failures && total != want_total) {
        fprintf(stderr, "rank %d: %lld positions compared, expected %lld\n", rank, (long long)total,
                (long long)want_total);
        failures++;
    }
    /* a prefix position after the first step is refused */
    step.n_seq = S, step.context = 1;
    for (int64_t s = 0; s < S; s++)
        copy_step(&step, s, 1, &full, s, 0, 0);
    if (mode == OMNI_ATTN_PREFIX) {
        copy_step(&step, 0, 1, &full, 0, len[0] - 1, 1);
        step.in_prefix[0] = 1;
        step.pos[0] = (int32_t)len[0];
        if (omni_model_forward_cached(m, c, &step) != OMNI_ERR_DATA) {
            fprintf(stderr, "rank %d: a late prefix position was accepted\n", rank);
            failures++;
        }
    }
    free(ref);
    omni_kv_cache_free(c);
    omni_batch_free(&full);
    omni_batch_free(&step);
    omni_moe_free(moe);
    omni_mpi_moe_comm_free(&mpi);
    omni_model_free(m);
}

int main(int argc, char **argv)
{
    MPI_Comm comm;
    if (omni_mpi_init(&argc, &argv, &comm))
        return 1;
    run(comm, OMNI_ATTN_CAUSAL);
    run(comm, OMNI_ATTN_PREFIX);
    int total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, comm);
    MPI_Comm_free(&comm);
    MPI_Finalize();
    if (total > 0) {
        fprintf(stderr, "test_decode_mpi: %d mismatches\n", total);
        return 1;
    }
    return 0;
}
