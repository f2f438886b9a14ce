/*
 * Checkpoint throughput: save (write, flush, close, fsync, rename) and load (open,
 * check, read) of a state of MoE layers with experts sharded over the ranks.
 *   mpiexec -n N bench_checkpoint DIR [MiB of experts, default 256] [experts, default 8]
 *                                     [checksums: crc32c (default), none, fletcher32, all,
 *                                      both] [rounds, default 3]
 *                                     [KiB per checksummed piece, default 1 GiB]
 * Prints seconds and GB/s (of the whole checkpoint) for each, the best of the rounds; with
 * "all", the three checksum choices in turn, round-robin, and each one's cost over none;
 * "both" is crc32c and none only (Fletcher32's slow saves leave the disk busy for the
 * next one).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hdf5.h>

#include "checkpoint.h"
#include "ckpt_private.h"

#define N_LAYERS 4

int main(int argc, char **argv)
{
    MPI_Comm comm;
    if (omni_mpi_init(&argc, &argv, &comm)) {
        fprintf(stderr, "%s\n", omni_error_message());
        return 1;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    if (argc < 2) {
        if (rank == 0)
            fprintf(stderr, "usage: bench_checkpoint DIR [MiB] [experts] [checksums] [rounds]\n");
        MPI_Finalize();
        return 2;
    }
    const char *dir = argv[1];
    int64_t mib = argc > 2 ? atoll(argv[2]) : 256, E = argc > 3 ? atoll(argv[3]) : 8;
    if (mib < 1 || E < size || E % size) {
        if (rank == 0)
            fprintf(stderr, "bench_checkpoint: need MiB >= 1 and experts a multiple of ranks\n");
        MPI_Finalize();
        return 2;
    }
    /* N_LAYERS tensors [E, d, ff] f32 with d * ff chosen for the requested size, plus a
     * dense [1024, 1024] tensor written by rank 0. */
    int64_t d = 256, ff = (mib << 20) / (int64_t)sizeof(float) / N_LAYERS / E / d;
    if (ff < 1)
        ff = 1;
    omni_ckpt_tensor t[N_LAYERS + 1];
    char names[N_LAYERS][64];
    int64_t lo = rank * E / size, hi = (rank + 1) * E / size;
    for (int l = 0; l < N_LAYERS; l++) {
        snprintf(names[l], sizeof names[l], "params/layers/%02d/moe/experts/w1", 2 * l + 1);
        t[l] = (omni_ckpt_tensor){.name = names[l],
                                  .rank = 3,
                                  .dims = {E, d, ff},
                                  .row_lo = lo,
                                  .row_hi = hi,
                                  .writer = true,
                                  .meaning = "[expert, d_model, expert_ff]"};
        t[l].data = omni_alloc((hi - lo) * d * ff, sizeof(float), "bench");
    }
    t[N_LAYERS] = (omni_ckpt_tensor){.name = "params/embed/tok",
                                     .rank = 2,
                                     .dims = {1024, 1024},
                                     .row_lo = 0,
                                     .row_hi = 1024,
                                     .writer = rank == 0,
                                     .meaning = "[vocab, d_model]"};
    t[N_LAYERS].data = omni_alloc(1024 * 1024, sizeof(float), "bench");
    for (int l = 0; l <= N_LAYERS; l++) {
        if (!t[l].data) {
            fprintf(stderr, "out of memory\n");
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        int64_t n = (t[l].row_hi - t[l].row_lo) * t[l].dims[1] * (l < N_LAYERS ? ff : 1);
        for (int64_t i = 0; i < n; i++)
            ((float *)t[l].data)[i] = (float)(i % 1000) * 0.001f;
    }
    double bytes = 4.0 * ((double)N_LAYERS * (double)(E * d * ff) + 1024.0 * 1024.0);
    omni_ckpt_meta m = {.step = 1, .experiment_yaml = "experiment: {name: bench}\n"};
    static const char *const mode_names[] = {"crc32c", "none", "fletcher32"};
    const char *which = argc > 4 ? argv[4] : "crc32c";
    int first = 0, last = 0;
    const int rounds = argc > 5 ? atoi(argv[5]) : 3;
    if (argc > 6) {
        long long kib = atoll(argv[6]);
        if (kib < 4 || kib > (1LL << 30)) {
            if (rank == 0)
                fprintf(stderr, "bench_checkpoint: piece %s KiB, expected 4 to 2^30\n", argv[6]);
            MPI_Finalize();
            return 2;
        }
        omni_ckpt_sum_piece_bytes = (size_t)kib << 10;
    }
    if (rounds < 1 || rounds > 1000) {
        if (rank == 0)
            fprintf(stderr, "bench_checkpoint: rounds %s, expected 1 to 1000\n", argv[5]);
        MPI_Finalize();
        return 2;
    }
    if (!strcmp(which, "all") || !strcmp(which, "both")) {
        first = 0;
        last = !strcmp(which, "all") ? 2 : 1;
    } else {
        first = last = -1;
        for (int k = 0; k < 3; k++)
            if (!strcmp(which, mode_names[k]))
                first = last = k;
        if (first < 0) {
            if (rank == 0)
                fprintf(stderr,
                        "bench_checkpoint: checksums %s, expected crc32c, none, "
                        "fletcher32, all or both\n",
                        which);
            MPI_Finalize();
            return 2;
        }
    }
    /* Rounds alternate between the modes, so each sees the same machine load. */
    double best_save[3] = {1e30, 1e30, 1e30}, best_load[3] = {1e30, 1e30, 1e30};
    /* The checksums' own CPU time in each save and load (the most of any rank), the
     * least over the rounds: unlike the times above, hardly moved by the machine's load. */
    double sum_save[3] = {1e30, 1e30, 1e30}, sum_load[3] = {1e30, 1e30, 1e30};
    for (int round = 0; round < rounds; round++) {
        /* Odd rounds run the modes in reverse order: neither always follows the other. */
        for (int j = 0; j <= last - first; j++) {
            int k = round % 2 ? last - j : first + j;
            omni_ckpt_sum_mode = (ckpt_sum_mode)k;
            m.step = m.step + 1;
            char path[2048];
            MPI_Barrier(comm);
            double t0 = omni_now(), c0 = omni_h5_sum_cpu_seconds;
            omni_status st = omni_ckpt_save(comm, dir, &m, t, N_LAYERS + 1, 1, path, sizeof path);
            MPI_Barrier(comm);
            double t1 = omni_now(), c1 = omni_h5_sum_cpu_seconds;
            omni_ckpt *c = NULL;
            if (!st)
                st = omni_ckpt_open(comm, path, &c);
            if (!st)
                st = omni_ckpt_read(c, t, N_LAYERS + 1);
            omni_ckpt_close(c);
            MPI_Barrier(comm);
            double t2 = omni_now(), cost[2] = {c1 - c0, omni_h5_sum_cpu_seconds - c1};
            MPI_Allreduce(MPI_IN_PLACE, cost, 2, MPI_DOUBLE, MPI_MAX, comm);
            sum_save[k] = cost[0] < sum_save[k] ? cost[0] : sum_save[k];
            sum_load[k] = cost[1] < sum_load[k] ? cost[1] : sum_load[k];
            if (st) {
                if (rank == 0)
                    fprintf(stderr, "bench_checkpoint: %s\n", omni_error_message());
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            best_save[k] = t1 - t0 < best_save[k] ? t1 - t0 : best_save[k];
            best_load[k] = t2 - t1 < best_load[k] ? t2 - t1 : best_load[k];
        }
    }
    for (int k = first; k <= last && rank == 0; k++) {
        printf("checkpoint of %.1f MiB on %d rank%s (%" PRId64
               " experts, checksum pieces %zu KiB), "
               "checksums %s: save "
               "%.3f s (%.2f GB/s), load %.3f s (%.2f GB/s)",
               bytes / 1048576.0, size, size == 1 ? "" : "s", E, omni_ckpt_sum_piece_bytes >> 10,
               mode_names[k], best_save[k], bytes / best_save[k] / 1e9, best_load[k],
               bytes / best_load[k] / 1e9);
        if (k == CKPT_SUM_CRC32C)
            printf("; checksum CPU: save %.3f s (%.1f%% of the save), load %.3f s (%.1f%% of the "
                   "load)",
                   sum_save[k], 100.0 * sum_save[k] / best_save[k], sum_load[k],
                   100.0 * sum_load[k] / best_load[k]);
        if (first != last && k != CKPT_SUM_NONE)
            printf("; over none: save %+.1f%%, load %+.1f%%",
                   100.0 * (best_save[k] / best_save[CKPT_SUM_NONE] - 1.0),
                   100.0 * (best_load[k] / best_load[CKPT_SUM_NONE] - 1.0));
        printf("\n");
    }
    for (int l = 0; l <= N_LAYERS; l++)
        omni_free(t[l].data);
    MPI_Comm_free(&comm);
    MPI_Finalize();
    return 0;
}
