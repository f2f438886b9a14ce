/* ops: the GEMM backend, and the threads of the GEMM library and of OpenMP, per process,
 * from the experiment and the node. */
#include <omp.h>
#include <unistd.h>

#include "ops.h"

omni_status omni_blas_set_threads(const omni_experiment *x, MPI_Comm comm, int *threads)
{
    int n = (int)x->parallel.threads;
    if (n <= 0) {
        MPI_Comm node;
        int local = 1;
        omni_status st =
            omni_mpi_check(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node),
                           "splitting the communicator by node");
        if (st)
            return st;
        st = omni_mpi_check(MPI_Comm_size(node, &local), "sizing the node communicator");
        MPI_Comm_free(&node);
        if (st)
            return st;
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        n = cores > 0 ? (int)(cores / local) : 1;
        if (n < 1)
            n = 1;
    }
    omni_status st = omni_gemm_choose(x->parallel.gemm);
    if (st)
        return st;
    omni_gemm_set_threads(n);
    omp_set_num_threads(n); /* the same cores: GEMM and OpenMP regions never overlap */
    if (threads)
        *threads = n;
    return OMNI_OK;
}
