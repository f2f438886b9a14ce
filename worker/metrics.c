/* The per-step sums that workers report and their reduction onto rank 0. */
#include "worker.h"

#include <string.h>

omni_status omni_metrics_create(omni_metrics *m, int n_tasks, int n_moe_layers, int n_experts)
{
    memset(m, 0, sizeof *m);
    m->n_tasks = n_tasks, m->n_moe_layers = n_moe_layers, m->n_experts = n_experts;
    m->route_len =
        omni_route_table_len(n_tasks, n_experts) + omni_route_table_len(OMNI_MOD_COUNT, n_experts);
    int64_t n = 5 + 3 * (int64_t)n_tasks + (int64_t)n_moe_layers * (n_experts + 2) +
                (int64_t)n_moe_layers * m->route_len;
    m->v = omni_alloc(n, sizeof *m->v, "metrics");
    if (!m->v)
        return OMNI_ERR_NOMEM;
    m->n_values = n;
    double *p = m->v;
    m->loss = p++, m->aux = p++, m->z = p++, m->entropy = p++, m->tokens = p++;
    m->task_loss = p, p += n_tasks;
    m->task_count = p, p += n_tasks;
    m->task_correct = p, p += n_tasks;
    m->load = p, p += (int64_t)n_moe_layers * n_experts;
    m->dropped = p, p += n_moe_layers;
    m->assigned = p, p += n_moe_layers;
    m->route = p, p += (int64_t)n_moe_layers * m->route_len;
    OMNI_ASSERT(p == m->v + n);
    return OMNI_OK;
}

void omni_metrics_free(omni_metrics *m)
{
    omni_free(m->v);
    memset(m, 0, sizeof *m);
}

void omni_metrics_zero(omni_metrics *m)
{
    memset(m->v, 0, (size_t)m->n_values * sizeof *m->v);
}

omni_status omni_metrics_reduce(MPI_Comm comm, omni_metrics *m)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    void *send = rank == 0 ? MPI_IN_PLACE : m->v;
    return omni_mpi_check(MPI_Reduce(send, m->v, (int)m->n_values, MPI_DOUBLE, MPI_SUM, 0, comm),
                          "MPI_Reduce of metrics");
}

void omni_metrics_tables(const omni_metrics *m, int l, omni_route_table *by_task,
                         omni_route_table *by_modality)
{
    double *base = m->route + (int64_t)l * m->route_len;
    omni_route_table_bind(by_task, base, m->n_tasks, m->n_experts);
    omni_route_table_bind(by_modality, base + omni_route_table_len(m->n_tasks, m->n_experts),
                          OMNI_MOD_COUNT, m->n_experts);
}

double omni_metrics_load_ratio(const omni_metrics *m, int l)
{
    const double *load = m->load + (int64_t)l * m->n_experts;
    double max = 0, sum = 0;
    for (int e = 0; e < m->n_experts; e++) {
        sum += load[e];
        max = load[e] > max ? load[e] : max;
    }
    return sum > 0 ? max / (sum / m->n_experts) : 0.0;
}
