/* The MPI conventions of base.h: errors returned, failures agreed on, config bytes
 * read once and broadcast. */
#include "base.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

omni_status omni_mpi_check(int rc, const char *what)
{
    if (rc == MPI_SUCCESS)
        return OMNI_OK;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS)
        strcpy(text, "unknown MPI error");
    return omni_fail(OMNI_ERR_MPI, "%s failed: %s", what, text);
}

omni_status omni_mpi_init(int *argc, char ***argv, MPI_Comm *comm)
{
    int inited = 0, rank = 0;
    MPI_Initialized(&inited);
    if (!inited && MPI_Init(argc, argv) != MPI_SUCCESS)
        return omni_fail(OMNI_ERR_MPI, "MPI_Init failed");
    omni_status st = omni_mpi_check(MPI_Comm_dup(MPI_COMM_WORLD, comm), "MPI_Comm_dup");
    if (st)
        return st;
    st = omni_mpi_check(MPI_Comm_set_errhandler(*comm, MPI_ERRORS_RETURN),
                        "MPI_Comm_set_errhandler");
    if (st)
        return st;
    MPI_Comm_rank(*comm, &rank);
    omni_log_setup(rank, OMNI_LOG_INFO);
    return OMNI_OK;
}

static bool failure_agreed;

bool omni_mpi_failure_agreed(void)
{
    return failure_agreed;
}

omni_status omni_mpi_agree(MPI_Comm comm, omni_status local)
{
    failure_agreed = false;
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    /* The lowest failing rank wins: reduce (failed ? rank : size) with MIN. */
    int mine = local != OMNI_OK ? rank : size, first = size;
    omni_status st =
        omni_mpi_check(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm), "MPI_Allreduce");
    if (st)
        return st;
    if (first == size)
        return OMNI_OK;
    int code = (int)local;
    st = omni_mpi_check(MPI_Bcast(&code, 1, MPI_INT, first, comm), "MPI_Bcast");
    if (st)
        return st;
    if (first != 0) {
        /* Bring the failing rank's message to rank 0, which prints it. */
        char msg[4096];
        if (rank == first) {
            snprintf(msg, sizeof msg, "[rank %d] %s", rank, omni_error_message());
            st = omni_mpi_check(MPI_Send(msg, (int)sizeof msg, MPI_CHAR, 0, 77, comm), "MPI_Send");
        } else if (rank == 0) {
            st = omni_mpi_check(
                MPI_Recv(msg, (int)sizeof msg, MPI_CHAR, first, 77, comm, MPI_STATUS_IGNORE),
                "MPI_Recv");
            if (!st)
                omni_fail((omni_status)code, "%s", msg);
        }
        if (st)
            return st;
    }
    failure_agreed = true;
    return (omni_status)code;
}

omni_status omni_mpi_read_file(MPI_Comm comm, const char *path, char **bytes, size_t *len)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    omni_status st = OMNI_OK;
    char *buf = NULL;
    size_t n = 0;
    if (rank == 0) {
        st = omni_read_file(path, &buf, &n);
        if (!st && n > INT_MAX - 1) {
            free(buf);
            buf = NULL;
            st = omni_fail(OMNI_ERR_CONFIG, "%s: file too large (%zu bytes)", path, n);
        }
    }
    st = omni_mpi_agree(comm, st);
    if (st)
        return st;
    int count = (int)n;
    st = omni_mpi_check(MPI_Bcast(&count, 1, MPI_INT, 0, comm), "MPI_Bcast");
    if (st)
        goto out_free;
    if (rank != 0) {
        buf = malloc((size_t)count + 1);
        if (!buf) {
            st = omni_fail(OMNI_ERR_NOMEM, "%s: out of memory", path);
            goto out_free; /* not agreed: main aborts on an unagreed local failure */
        }
    }
    st = omni_mpi_check(MPI_Bcast(buf, count, MPI_CHAR, 0, comm), "MPI_Bcast");
    if (st)
        goto out_free;
    buf[count] = '\0';
    *bytes = buf;
    *len = (size_t)count;
    return OMNI_OK;
out_free:
    free(buf);
    return st;
}
