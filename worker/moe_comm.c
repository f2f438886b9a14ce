/* The MPI implementation of the MoE layer's token exchange (experts.h omni_moe_comm):
 * counts by MPI_Alltoall, rows by MPI_Alltoallv over a contiguous row type so that counts
 * stay in rows, statistics by MPI_Allreduce, a shadow expert's gradient by MPI_Reduce. Time inside
 * MPI is accumulated for the bench. */
#include "worker.h"

#include <limits.h>

#include "experts.h"

static omni_status alltoall_counts(void *ctx, const int64_t *send, int64_t *recv, int64_t per_rank)
{
    omni_mpi_moe_comm *c = ctx;
    double t = omni_now();
    omni_status st = omni_mpi_check(
        MPI_Alltoall(send, (int)per_rank, MPI_INT64_T, recv, (int)per_rank, MPI_INT64_T, c->comm),
        "MPI_Alltoall of expert counts");
    c->seconds += omni_now() - t;
    return st;
}

static omni_status to_int(const int64_t *v, int *out, int n, const char *what)
{
    for (int i = 0; i < n; i++) {
        if (v[i] < 0 || v[i] > INT_MAX)
            return omni_fail(OMNI_ERR_INTERNAL, "%s: count %lld does not fit an MPI count", what,
                             (long long)v[i]);
        out[i] = (int)v[i];
    }
    return OMNI_OK;
}

static omni_status alltoallv_rows(void *ctx, const float *send, const int64_t *send_count,
                                  const int64_t *send_displ, float *recv, const int64_t *recv_count,
                                  const int64_t *recv_displ, int64_t row_len)
{
    omni_mpi_moe_comm *c = ctx;
    int n = c->size;
    omni_status st;
    if ((st = to_int(send_count, c->sc, n, "token dispatch")) ||
        (st = to_int(send_displ, c->sd, n, "token dispatch")) ||
        (st = to_int(recv_count, c->rc, n, "token dispatch")) ||
        (st = to_int(recv_displ, c->rd, n, "token dispatch")))
        return st;
    double t = omni_now();
    if (c->row_len != row_len) {
        /* One row type per row length, made on first use (rows are d_model floats). */
        if (c->row_len)
            MPI_Type_free(&c->row);
        c->row_len = 0;
        st = omni_mpi_check(MPI_Type_contiguous((int)row_len, MPI_FLOAT, &c->row),
                            "MPI_Type_contiguous");
        if (!st)
            st = omni_mpi_check(MPI_Type_commit(&c->row), "MPI_Type_commit");
        if (st)
            return st;
        c->row_len = row_len;
    }
    st = omni_mpi_check(
        MPI_Alltoallv(send, c->sc, c->sd, c->row, recv, c->rc, c->rd, c->row, c->comm),
        "MPI_Alltoallv of tokens");
    int64_t sent = 0;
    for (int q = 0; q < n; q++)
        if (q != c->rank)
            sent += send_count[q];
    c->bytes_sent += (double)sent * (double)row_len * sizeof(float);
    c->seconds += omni_now() - t;
    return st;
}

static omni_status allreduce_sum(void *ctx, double *buf, int64_t n)
{
    omni_mpi_moe_comm *c = ctx;
    if (n > INT_MAX)
        return omni_fail(OMNI_ERR_INTERNAL, "router statistics: %lld values", (long long)n);
    double t = omni_now();
    omni_status st =
        omni_mpi_check(MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, c->comm),
                       "MPI_Allreduce of router statistics");
    c->seconds += omni_now() - t;
    return st;
}

static omni_status reduce_sum_to(void *ctx, float *buf, int64_t n, int root)
{
    omni_mpi_moe_comm *c = ctx;
    if (n > INT_MAX)
        return omni_fail(OMNI_ERR_INTERNAL, "shadow expert gradient: %lld values", (long long)n);
    double t = omni_now();
    omni_status st = omni_mpi_check(MPI_Reduce(c->rank == root ? MPI_IN_PLACE : buf, buf, (int)n,
                                               MPI_FLOAT, MPI_SUM, root, c->comm),
                                    "MPI_Reduce of a shadow expert's gradient");
    /* a binomial tree: every rank but the root sends its (partial) sum once */
    if (c->rank != root)
        c->bytes_sent += (double)n * sizeof(float);
    c->seconds += omni_now() - t;
    return st;
}

omni_status omni_mpi_moe_comm_init(omni_mpi_moe_comm *c, MPI_Comm comm, omni_moe_comm *ops)
{
    c->comm = comm;
    MPI_Comm_rank(comm, &c->rank);
    MPI_Comm_size(comm, &c->size);
    c->seconds = 0;
    c->bytes_sent = 0;
    c->row_len = 0;
    c->sc = omni_alloc(4 * (int64_t)c->size, sizeof(int), "MPI counts");
    if (!c->sc)
        return OMNI_ERR_NOMEM;
    c->sd = c->sc + c->size, c->rc = c->sd + c->size, c->rd = c->rc + c->size;
    ops->ctx = c;
    ops->rank = c->rank;
    ops->size = c->size;
    ops->alltoall_counts = alltoall_counts;
    ops->alltoallv_rows = alltoallv_rows;
    ops->allreduce_sum = allreduce_sum;
    ops->reduce_sum_to = reduce_sum_to;
    return OMNI_OK;
}

void omni_mpi_moe_comm_free(omni_mpi_moe_comm *c)
{
    omni_free(c->sc);
    c->sc = NULL;
    if (c->row_len)
        MPI_Type_free(&c->row);
    c->row_len = 0;
}
