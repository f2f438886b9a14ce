/*
 * ops — the numeric kit that the model, the experts and the router share: the BLAS
 * library's thread setting (and, as they move here, the matrix product and the
 * activation primitives). One place, so a change of GEMM backend or of precision is
 * made once.
 */
#ifndef OMNI_OPS_H
#define OMNI_OPS_H

#include "base.h"
#include "experiment.h"

/*
 * Collective over comm: set the OpenBLAS threads and the OpenMP threads of this process
 * (the same number: the model never calls BLAS inside its OpenMP regions) from
 * parallel.threads; 0 (auto) = online cores / processes on this node (ranks sharing
 * memory, MPI_Comm_split_type SHARED), at least 1. *threads (may be NULL) gets it.
 */
omni_status omni_blas_set_threads(const omni_experiment *x, MPI_Comm comm, int *threads);

#endif /* OMNI_OPS_H */
