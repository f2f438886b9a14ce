/* The single-process token exchange: rank 0 of 1, every call the identity. */
#include "experts.h"

#include <string.h>

static omni_status local_counts(void *ctx, const int64_t *send, int64_t *recv, int64_t per_rank)
{
    (void)ctx;
    memmove(recv, send, (size_t)per_rank * sizeof(int64_t));
    return OMNI_OK;
}

static omni_status local_rows(void *ctx, const float *send, const int64_t *send_count,
                              const int64_t *send_displ, float *recv, const int64_t *recv_count,
                              const int64_t *recv_displ, int64_t row_len)
{
    (void)ctx;
    if (send_count[0] != recv_count[0])
        return omni_fail(OMNI_ERR_INTERNAL, "local exchange: %lld rows sent, %lld expected",
                         (long long)send_count[0], (long long)recv_count[0]);
    memmove(recv + recv_displ[0] * row_len, send + send_displ[0] * row_len,
            (size_t)(send_count[0] * row_len) * sizeof(float));
    return OMNI_OK;
}

static omni_status local_allreduce(void *ctx, double *buf, int64_t n)
{
    (void)ctx, (void)buf, (void)n;
    return OMNI_OK;
}

static omni_status local_reduce(void *ctx, float *buf, int64_t n, int root)
{
    (void)ctx, (void)buf, (void)n, (void)root;
    return OMNI_OK;
}

void omni_moe_comm_local(omni_moe_comm *c)
{
    c->ctx = NULL;
    c->rank = 0;
    c->size = 1;
    c->alltoall_counts = local_counts;
    c->alltoallv_rows = local_rows;
    c->allreduce_sum = local_allreduce;
    c->reduce_sum_to = local_reduce;
}
