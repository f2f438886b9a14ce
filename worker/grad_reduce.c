/* Bucketed, overlapped summation of dense gradients across ranks. */
#include "worker.h"

#include <limits.h>

void omni_grad_reducer_init(omni_grad_reducer *r, MPI_Comm comm)
{
    r->comm = comm;
    MPI_Comm_size(comm, &r->size);
    r->n_buckets = 0;
    r->seconds_waiting = 0;
}

int omni_grad_reducer_add(omni_grad_reducer *r, float *p, int64_t n)
{
    int first = r->n_buckets;
    do {
        if (r->n_buckets == OMNI_MAX_BUCKETS)
            return -1;
        int64_t part = n > INT_MAX ? INT_MAX : n;
        r->ptr[r->n_buckets] = p;
        r->len[r->n_buckets] = part;
        r->req[r->n_buckets] = MPI_REQUEST_NULL;
        r->n_buckets++;
        p += part;
        n -= part;
    } while (n > 0);
    return first;
}

omni_status omni_grad_reducer_start(omni_grad_reducer *r, int i)
{
    OMNI_ASSERT(i >= 0 && i < r->n_buckets);
    if (r->size == 1 || r->len[i] == 0)
        return OMNI_OK;
    double t = omni_now();
    /* A bucket split at INT_MAX continues in the following indices: start them too. */
    int last = i;
    while (last + 1 < r->n_buckets && r->ptr[last] + r->len[last] == r->ptr[last + 1] &&
           r->len[last] == INT_MAX)
        last++;
    omni_status st = OMNI_OK;
    for (int j = i; j <= last && !st; j++)
        st = omni_mpi_check(MPI_Iallreduce(MPI_IN_PLACE, r->ptr[j], (int)r->len[j], MPI_FLOAT,
                                           MPI_SUM, r->comm, &r->req[j]),
                            "MPI_Iallreduce of gradients");
    r->seconds_waiting += omni_now() - t;
    return st;
}

omni_status omni_grad_reducer_progress(omni_grad_reducer *r)
{
    if (r->size == 1)
        return OMNI_OK;
    double t = omni_now();
    int done;
    omni_status st = omni_mpi_check(MPI_Testall(r->n_buckets, r->req, &done, MPI_STATUSES_IGNORE),
                                    "MPI_Testall of gradients");
    r->seconds_waiting += omni_now() - t;
    return st;
}

omni_status omni_grad_reducer_wait(omni_grad_reducer *r)
{
    if (r->size == 1)
        return OMNI_OK;
    double t = omni_now();
    omni_status st = omni_mpi_check(MPI_Waitall(r->n_buckets, r->req, MPI_STATUSES_IGNORE),
                                    "MPI_Waitall of gradients");
    r->seconds_waiting += omni_now() - t;
    return st;
}
