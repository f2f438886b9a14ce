/*
 * base under MPI (run with 1, 2 and 4 processes): omni_mpi_agree brings the lowest failing
 * rank's status and message to every rank / rank 0; omni_mpi_read_file gives every rank
 * the same bytes; an experiment read that way is accepted or rejected by all together.
 * Exits non-zero on the first mismatch, naming it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "experiment.h"

static int failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "[rank %d] %s:%d: check failed: %s: ", omni_log_rank(), __FILE__,      \
                    __LINE__, #cond);                                                              \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

int main(int argc, char **argv)
{
    MPI_Comm comm;
    if (omni_mpi_init(&argc, &argv, &comm)) {
        fprintf(stderr, "%s\n", omni_error_message());
        return 1;
    }
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);

    /* Nobody fails. */
    CHECK(omni_mpi_agree(comm, OMNI_OK) == OMNI_OK, "all ok");

    /* The last rank fails with a data error; every rank learns it, rank 0 gets the text. */
    omni_status local = OMNI_OK;
    omni_error_clear();
    if (rank == size - 1)
        local = omni_fail(OMNI_ERR_DATA, "bad sample 17 in slice");
    omni_status st = omni_mpi_agree(comm, local);
    CHECK(st == OMNI_ERR_DATA, "status %d", (int)st);
    CHECK(omni_mpi_failure_agreed(), "agreed");
    if (rank == 0) {
        char want[128];
        if (size > 1)
            snprintf(want, sizeof want, "[rank %d] bad sample 17 in slice", size - 1);
        else
            snprintf(want, sizeof want, "bad sample 17 in slice");
        CHECK(!strcmp(omni_error_message(), want), "message '%s'", omni_error_message());
    }

    /* Two ranks fail: the lowest one wins. */
    local = OMNI_OK;
    if (rank >= size / 2)
        local = omni_fail(rank == size / 2 ? OMNI_ERR_CKPT : OMNI_ERR_IO, "rank %d failed", rank);
    st = omni_mpi_agree(comm, local);
    CHECK(st == (size == 1 ? OMNI_ERR_CKPT : OMNI_ERR_CKPT), "lowest failing rank's status %d",
          (int)st);

    /* The same config bytes on every rank. */
    char path[] = "/tmp/omni_mpi_agree_XXXXXX";
    if (rank == 0) {
        int fd = mkstemp(path);
        const char *text = "experiment: {name: mpi}\ndata: {files: [x.h5]}\nmoe: {top_k: 3}\n";
        CHECK(fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text), "temp file");
        close(fd);
    }
    MPI_Bcast(path, (int)sizeof path, MPI_CHAR, 0, comm);
    omni_experiment x;
    const char *ok_sets[] = {"model.d_model=64"};
    st = omni_experiment_load(comm, path, ok_sets, 1, &x);
    CHECK(st == OMNI_OK && x.moe.top_k == 3 && x.model.d_model == 64, "load: %s",
          omni_error_message());
    const char *bad_sets[] = {"moe.top_k=99"};
    st = omni_experiment_load(comm, path, bad_sets, 1, &x);
    int rejected = st == OMNI_ERR_CONFIG, all_rejected = 0;
    MPI_Allreduce(&rejected, &all_rejected, 1, MPI_INT, MPI_MIN, comm);
    CHECK(all_rejected, "every rank rejects a bad --set");
    st = omni_experiment_load(comm, "/nonexistent/exp.yaml", NULL, 0, &x);
    CHECK(st == OMNI_ERR_CONFIG, "a missing file is a config error on every rank (%d)", (int)st);
    if (rank == 0) {
        CHECK(strstr(omni_error_message(), "/nonexistent/exp.yaml") != NULL, "names the file: %s",
              omni_error_message());
        unlink(path);
    }

    int total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, comm);
    if (rank == 0)
        printf("mpi_agree on %d processes: %s\n", size, total ? "FAILED" : "ok");
    MPI_Comm_free(&comm);
    MPI_Finalize();
    return total ? 1 : 0;
}
