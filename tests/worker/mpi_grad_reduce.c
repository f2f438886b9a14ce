/* worker under MPI (1, 2, 4 processes): bucketed gradient sums equal the plain sum over
 * ranks, whatever order the buckets start in and with empty buckets. */
#include <math.h>
#include <stdio.h>

#include "worker.h"

int main(int argc, char **argv)
{
    MPI_Comm comm;
    if (omni_mpi_init(&argc, &argv, &comm))
        return 1;
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    enum { N = 10007 };
    static float g[N];
    for (int i = 0; i < N; i++)
        g[i] = (float)(rank + 1) * 0.5f + (float)i;
    omni_grad_reducer r;
    omni_grad_reducer_init(&r, comm);
    int b0 = omni_grad_reducer_add(&r, g, 5000);
    int b1 = omni_grad_reducer_add(&r, g + 5000, 0);
    int b2 = omni_grad_reducer_add(&r, g + 5000, N - 5000);
    int bad = 0;
    /* Started last-to-first, as backward does. */
    bad |= omni_grad_reducer_start(&r, b2) != OMNI_OK;
    bad |= omni_grad_reducer_progress(&r) != OMNI_OK;
    bad |= omni_grad_reducer_start(&r, b1) != OMNI_OK;
    bad |= omni_grad_reducer_start(&r, b0) != OMNI_OK;
    bad |= omni_grad_reducer_wait(&r) != OMNI_OK;
    double ranks_sum = 0.5 * size * (size + 1) / 2.0;
    for (int i = 0; i < N; i++) {
        double want = ranks_sum + (double)size * i;
        if (fabs((double)g[i] - want) > 1e-6 * fabs(want) + 1e-6) {
            fprintf(stderr, "[rank %d] g[%d] = %g, want %g\n", rank, i, (double)g[i], want);
            bad = 1;
            break;
        }
    }
    int any = 0;
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, comm);
    if (rank == 0)
        printf("grad_reduce on %d processes: %s\n", size, any ? "FAILED" : "ok");
    MPI_Comm_free(&comm);
    MPI_Finalize();
    return any;
}
