/*
 * experts: the MoE layer under MPI with 1, 2 and 4 processes against one process holding
 * the whole batch. Each rank routes its slice of a 32-token global batch (dropless, so no
 * capacity depends on the split; router jitter on, keyed by global token positions); the
 * tokens travel through an MPI implementation of omni_moe_comm (MPI_Alltoall /
 * MPI_Alltoallv / MPI_Allreduce — a model for the distributed part's). Checked, with
 * tolerance 1e-5 * max(1, |ref|):
 *  - every rank's outputs and input gradients equal the single-process ones for its tokens;
 *  - the aux and z losses equal the single-process (global-batch) values;
 *  - replicated gradients (router, shared expert) summed over ranks equal the single-process
 *    ones, and each rank's expert gradients (summed over the replicas of an expert when
 *    processes > experts) equal the single-process gradients of those experts.
 * Run for E = 4 (sharded) and E = 2 (replicated on 4 processes), with token choice and with
 * expert choice (moe.router: expert_choice, capacity factor 0.5: each expert selects over
 * the whole 32-token batch from scores sent by every rank, some tokens taken by none).
 * Task routing with a position that carries no task on the last rank only: the forward fails
 * on EVERY rank (no rank left waiting in a collective), naming the position on that rank.
 * Exit 0 on success, 1 with a message naming the mismatch.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experts.h"

enum { NT = 32, D = 8 };

static omni_status mpi_counts(void *ctx, const int64_t *send, int64_t *recv, int64_t per_rank)
{
    MPI_Comm comm = *(MPI_Comm *)ctx;
    return omni_mpi_check(
        MPI_Alltoall(send, (int)per_rank, MPI_INT64_T, recv, (int)per_rank, MPI_INT64_T, comm),
        "MPI_Alltoall of MoE counts");
}

static omni_status mpi_rows(void *ctx, const float *send, const int64_t *send_count,
                            const int64_t *send_displ, float *recv, const int64_t *recv_count,
                            const int64_t *recv_displ, int64_t row_len)
{
    MPI_Comm comm = *(MPI_Comm *)ctx;
    int size;
    MPI_Comm_size(comm, &size);
    int sc[64], sd[64], rc[64], rd[64];
    if (size > 64)
        return omni_fail(OMNI_ERR_INTERNAL, "test exchange: at most 64 ranks");
    for (int q = 0; q < size; q++) {
        sc[q] = (int)(send_count[q] * row_len), sd[q] = (int)(send_displ[q] * row_len);
        rc[q] = (int)(recv_count[q] * row_len), rd[q] = (int)(recv_displ[q] * row_len);
    }
    return omni_mpi_check(MPI_Alltoallv(send, sc, sd, MPI_FLOAT, recv, rc, rd, MPI_FLOAT, comm),
                          "MPI_Alltoallv of MoE rows");
}

static omni_status mpi_sum(void *ctx, double *buf, int64_t n)
{
    MPI_Comm comm = *(MPI_Comm *)ctx;
    return omni_mpi_check(MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, comm),
                          "MPI_Allreduce of MoE sums");
}

static omni_status mpi_reduce(void *ctx, float *buf, int64_t n, int root)
{
    MPI_Comm comm = *(MPI_Comm *)ctx;
    int rank;
    MPI_Comm_rank(comm, &rank);
    return omni_mpi_check(
        MPI_Reduce(rank == root ? MPI_IN_PLACE : buf, buf, (int)n, MPI_FLOAT, MPI_SUM, root, comm),
        "MPI_Reduce of MoE gradients");
}

static int failures;

static void expect_close(const char *what, int rank, const float *a, const float *ref, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double tol = 1e-5 * fmax(1.0, fabs((double)ref[i]));
        if (fabs((double)a[i] - (double)ref[i]) > tol) {
            fprintf(stderr, "rank %d: %s[%lld] = %.8g, single process %.8g\n", rank, what,
                    (long long)i, (double)a[i], (double)ref[i]);
            failures++;
            return;
        }
    }
}

static void setup(omni_experiment *x, int64_t E, bool expert_choice)
{
    omni_experiment_defaults(x);
    x->experiment.seed = 17;
    x->model.d_model = D;
    x->model.n_layers = 2;
    x->moe.every = 2; /* block 1 is the MoE block */
    x->moe.num_experts = E;
    x->moe.top_k = 2;
    x->moe.expert_ff = 6;
    x->moe.capacity_factor = 0.0;
    x->moe.aux_loss = 0.1;
    x->moe.z_loss = 0.01;
    x->moe.jitter = 0.1;
    x->moe.shared_experts = 1;
    if (expert_choice) {
        x->moe.router = OMNI_ROUTER_EXPERT_CHOICE;
        x->moe.capacity_factor = 0.5;
        x->moe.aux_loss = 0.0;
    }
}

static void run(MPI_Comm world, int64_t E, bool expert_choice, bool shadow)
{
    int rank, size;
    MPI_Comm_rank(world, &rank);
    MPI_Comm_size(world, &size);
    omni_experiment x;
    setup(&x, E, expert_choice);
    x.parallel.shadow = shadow ? E : 0;
    const int64_t n = NT / size, first = rank * n;

    float in[NT * D], dout[NT * D], out[NT * D], din[NT * D] = {0};
    float ref_out[NT * D], ref_din[NT * D] = {0};
    omni_rng r;
    omni_rng_init(&r, 3, "test/mpi", 0);
    omni_rng_fill_normal(&r, 0, NT * D, 0.0f, 1.0f, in);
    omni_rng_fill_normal(&r, NT * D, NT * D, 0.0f, 1.0f, dout);

    /* the single-process reference, on every rank */
    omni_moe_comm local;
    omni_moe_comm_local(&local);
    omni_moe *ref;
    OMNI_ASSERT(omni_moe_create(&ref, &x, NT, 0, &local) == OMNI_OK);
    omni_moe_init_params(ref);
    /* the shadow case: expert 0 chosen by every token (its balancing bias), so its owner is
     * the busiest rank */
    if (shadow)
        omni_moe_layer_bias(ref, 0)[0] = 1.0f;
    omni_moe_set_step(ref, 4, 0, true);
    OMNI_ASSERT(omni_moe_forward(ref, 1, ref_out, in, NULL, NT) == OMNI_OK);
    /* with 4 experts the case leaves tokens to the residual (with 2, each taking half the
     * batch by p and 1 - p, the choice is a partition) */
    if (expert_choice && E == 4)
        OMNI_ASSERT(*omni_moe_layer_stats(ref, 0)->dropped > 0.0);
    omni_moe_zero_grad(ref);
    OMNI_ASSERT(omni_moe_backward(ref, 1, ref_din, dout, NULL, NT) == OMNI_OK);

    MPI_Comm dup;
    MPI_Comm_dup(world, &dup);
    omni_moe_comm mc = {.ctx = &dup,
                        .rank = rank,
                        .size = size,
                        .alltoall_counts = mpi_counts,
                        .alltoallv_rows = mpi_rows,
                        .allreduce_sum = mpi_sum,
                        .reduce_sum_to = mpi_reduce};
    omni_moe *m;
    OMNI_ASSERT(omni_moe_create(&m, &x, n, 0, &mc) == OMNI_OK);
    omni_moe_init_params(m);
    if (shadow)
        omni_moe_layer_bias(m, 0)[0] = 1.0f;
    omni_moe_set_shadow_cost(m, 0);
    omni_moe_set_step(m, 4, first, true);
    omni_status st = omni_moe_forward(m, 1, out, in + first * D, NULL, n);
    int64_t shared, passes;
    omni_moe_shadow_counts(m, &shared, &passes);
    /* with 4 experts the busiest rank holds expert 0 and must share it (with 2 experts of
     * top 2 every rank has the same load) */
    if (shadow && size > 1 && E == 4 && (shared < 1 || passes != 1)) {
        fprintf(stderr, "rank %d: E%lld shadow: %lld experts shared in %lld passes\n", rank,
                (long long)E, (long long)shared, (long long)passes);
        failures++;
    }
    if (!shadow && passes != 0) {
        fprintf(stderr, "rank %d: parallel.shadow 0 but %lld passes shared\n", rank,
                (long long)passes);
        failures++;
    }
    omni_moe_zero_grad(m);
    if (st == OMNI_OK)
        st = omni_moe_backward(m, 1, din, dout + first * D, NULL, n);
    if (st != OMNI_OK) {
        fprintf(stderr, "rank %d: %s\n", rank, omni_error_message());
        MPI_Abort(world, 1);
    }
    char what[160];
    const char *mode = expert_choice ? "choice " : shadow ? "shadow " : "";
    snprintf(what, sizeof what, "%sE%lld out", mode, (long long)E);
    expect_close(what, rank, out, ref_out + first * D, n * D);
    snprintf(what, sizeof what, "%sE%lld din", mode, (long long)E);
    expect_close(what, rank, din, ref_din + first * D, n * D);
    double aux, z, raux, rz;
    omni_moe_layer_losses(m, 0, &aux, &z);
    omni_moe_layer_losses(ref, 0, &raux, &rz);
    if (fabs(aux - raux) > 1e-6 || fabs(z - rz) > 1e-5) {
        fprintf(stderr, "rank %d: E%lld losses aux %.8g z %.8g, single process %.8g %.8g\n", rank,
                (long long)E, aux, z, raux, rz);
        failures++;
    }

    float *p, *g, *am, *av, *rp, *rg;
    int64_t np, nd, rnp, rnd;
    omni_moe_buffers(m, &p, &g, &am, &av, &np, &nd);
    omni_moe_buffers(ref, &rp, &rg, &am, &av, &rnp, &rnd);
    OMNI_ASSERT(nd == rnd);
    MPI_Allreduce(MPI_IN_PLACE, g, (int)nd, MPI_FLOAT, MPI_SUM, world);
    snprintf(what, sizeof what, "%sE%lld replicated grads", mode, (long long)E);
    expect_close(what, rank, g, rg, nd);
    /* replicas of one expert (processes > experts) sum their gradients */
    MPI_Comm replicas;
    MPI_Comm_split(world, size > E ? (int)(rank % E) : rank, rank, &replicas);
    MPI_Allreduce(MPI_IN_PLACE, g + nd, (int)(np - nd), MPI_FLOAT, MPI_SUM, replicas);
    MPI_Comm_free(&replicas);
    for (int64_t i = 0; i < omni_moe_n_tensors(m); i++) {
        const omni_tensor *t = omni_moe_tensor_at(m, i), *rt = omni_moe_tensor_at(ref, i);
        if (!t->sharded)
            continue;
        int64_t per = t->dims[1] * t->dims[2];
        OMNI_ASSERT(strcmp(t->name, rt->name) == 0);
        snprintf(what, sizeof what, "%sE%lld %s", mode, (long long)E, t->name);
        expect_close(what, rank, p + t->offset, rp + rt->offset + t->row_lo * per, t->numel);
        expect_close(what, rank, g + t->offset, rg + rt->offset + t->row_lo * per, t->numel);
    }
    omni_moe_free(m);
    omni_moe_free(ref);
    MPI_Comm_free(&dup);
}

/* Task routing, the last rank's position 3 carrying no task: every rank's forward fails. */
static void run_taskless(MPI_Comm world)
{
    int rank, size;
    MPI_Comm_rank(world, &rank);
    MPI_Comm_size(world, &size);
    omni_experiment x;
    setup(&x, 4, false);
    x.moe.router = OMNI_ROUTER_TASK;
    x.moe.jitter = 0.0;
    const int64_t n = NT / size;
    MPI_Comm dup;
    MPI_Comm_dup(world, &dup);
    omni_moe_comm mc = {.ctx = &dup,
                        .rank = rank,
                        .size = size,
                        .alltoall_counts = mpi_counts,
                        .alltoallv_rows = mpi_rows,
                        .allreduce_sum = mpi_sum,
                        .reduce_sum_to = mpi_reduce};
    omni_moe *m;
    OMNI_ASSERT(omni_moe_create(&m, &x, n, 2, &mc) == OMNI_OK);
    omni_moe_init_params(m);
    omni_moe_set_step(m, 1, rank * n, true);
    uint8_t kind[NT];
    int32_t task[NT];
    for (int64_t i = 0; i < n; i++)
        kind[i] = OMNI_POS_TOKEN, task[i] = (int32_t)(i % 2);
    if (rank == size - 1)
        task[3] = -1;
    omni_batch b = {.n_seq = 1, .context = n, .kind = kind, .task = task};
    float in[NT * D] = {0}, out[NT * D];
    omni_status st = omni_moe_forward(m, 1, out, in, &b, n);
    const char *want = rank == size - 1 ? "moe: task routing: position 3 of this rank carries "
                                          "task -1"
                                        : "moe: task routing: 1 positions of another rank";
    if (st != OMNI_ERR_INTERNAL || strncmp(omni_error_message(), want, strlen(want)) != 0) {
        fprintf(stderr, "rank %d: a position without a task: status %d, message \"%s\"\n", rank,
                (int)st, st ? omni_error_message() : "");
        failures++;
    }
    omni_moe_free(m);
    MPI_Comm_free(&dup);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int size;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    for (int ec = 0; ec < 2; ec++) {
        run(MPI_COMM_WORLD, 4, ec, false);
        if (size <= 2 || size % 2 == 0)
            run(MPI_COMM_WORLD, 2, ec, false);
    }
    /* shadow experts (parallel.shadow), sharing whenever it lowers the busiest load */
    run(MPI_COMM_WORLD, 4, false, true);
    if (size <= 2 || size % 2 == 0)
        run(MPI_COMM_WORLD, 2, false, true);
    run_taskless(MPI_COMM_WORLD);
    int total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    MPI_Finalize();
    if (total > 0) {
        fprintf(stderr, "test_moe_mpi: %d mismatches\n", total);
        return 1;
    }
    return 0;
}
