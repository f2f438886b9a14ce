/* The batch plan's slices and the stop decisions of the coordinator. */
#include "coordinator.h"

#include <signal.h>
#include <string.h>

omni_slice omni_plan_slice(int64_t step, int64_t batch, int rank, int size)
{
    omni_slice s = {
        .step = step, .slot_lo = batch * rank / size, .slot_hi = batch * (rank + 1) / size};
    return s;
}

omni_status omni_plan_scatter(MPI_Comm comm, int64_t step, int64_t batch, int64_t *scratch,
                              omni_slice *mine)
{
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    if (rank == 0)
        for (int r = 0; r < size; r++) {
            omni_slice s = omni_plan_slice(step, batch, r, size);
            scratch[3 * r] = s.step, scratch[3 * r + 1] = s.slot_lo, scratch[3 * r + 2] = s.slot_hi;
        }
    int64_t v[3];
    omni_status st = omni_mpi_check(
        MPI_Scatter(scratch, 3, MPI_INT64_T, v, 3, MPI_INT64_T, 0, comm), "MPI_Scatter");
    if (st)
        return st;
    mine->step = v[0], mine->slot_lo = v[1], mine->slot_hi = v[2];
    return OMNI_OK;
}

static volatile sig_atomic_t signal_seen;

static void on_signal(int sig)
{
    signal_seen = sig;
}

void omni_signals_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* Open MPI's mpirun turns a SIGTERM/SIGINT of its own into killing the job (SIGTERM to
     * the ranks, SIGKILL one second later), but forwards SIGUSR1 to every rank: so
     * `kill -USR1 <mpirun>` is how a user stops an mpirun job with a checkpoint. */
    sigaction(SIGUSR1, &sa, NULL);
}

bool omni_signal_received(void)
{
    return signal_seen != 0;
}

int omni_signal_number(void)
{
    return (int)signal_seen;
}

omni_status omni_decide_next(MPI_Comm comm, int64_t steps_done, int64_t steps_total,
                             omni_next *next)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    /* Any rank may have received the signal (mpirun forwards it to all, srun too); rank
     * 0 decides for everyone from the OR of the flags. */
    int flag = omni_signal_received(), any = 0;
    omni_status st =
        omni_mpi_check(MPI_Allreduce(&flag, &any, 1, MPI_INT, MPI_MAX, comm), "MPI_Allreduce");
    if (st)
        return st;
    int decision = OMNI_NEXT_CONTINUE;
    if (rank == 0) {
        if (steps_done >= steps_total)
            decision = OMNI_NEXT_STOP_DONE;
        else if (any)
            decision = OMNI_NEXT_STOP_SIGNAL;
    }
    st = omni_mpi_check(MPI_Bcast(&decision, 1, MPI_INT, 0, comm), "MPI_Bcast");
    *next = (omni_next)decision;
    return st;
}
