/*
 * bench_window: the two ways issue 15 names for ranks to read their samples, side by side
 * on the same file, under mpirun (docs/scale.md, "Node-shared copy"):
 *   cache   each rank's sampler reads its windows through its own block cache of
 *           --cache-mb MiB (what omnimoe does: omni_sampler_fill);
 *   window  one copy per node: the first rank of each node reads the tokens and offsets
 *           of one task's training split whole into an MPI-3 shared window
 *           (MPI_Win_allocate_shared), and every rank of the node packs its windows from it
 *           (random samples, their tokens decoded into token and loss arrays; no checks and
 *           no batch fields: an upper bound on its rate).
 * Printed per rank: windows/s and positions/s; per node: the memory each way (the growth of
 * the ranks' proportional set size, PSS, summed over the node's ranks, which counts a shared
 * page once).
 *   mpirun -np N bench_window --data FILE.h5 --task NAME [--windows N] [--context N]
 *                             [--cache-mb N]
 */
#include <hdf5.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datasets.h"

static long long arg(int argc, char **argv, const char *name, long long def)
{
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name))
            return atoll(argv[i + 1]);
    return def;
}

static const char *sarg(int argc, char **argv, const char *name)
{
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name))
            return argv[i + 1];
    return NULL;
}

/* This process's proportional set size in KiB (shared pages divided among their users). */
static long long pss_kib(void)
{
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    long long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Pss: %lld kB", &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

static int read_all(hid_t f, const char *name, hid_t type, void **buf, hsize_t *n, MPI_Win *win,
                    MPI_Comm node, size_t elem)
{
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0)
        return 1;
    hid_t sp = H5Dget_space(d);
    H5Sget_simple_extent_dims(sp, n, NULL);
    int me;
    MPI_Comm_rank(node, &me);
    MPI_Aint size = me == 0 ? (MPI_Aint)(*n * elem) : 0;
    MPI_Win_allocate_shared(size, (int)elem, MPI_INFO_NULL, node, buf, win);
    MPI_Aint got;
    int disp;
    MPI_Win_shared_query(*win, 0, &got, &disp, buf);
    int rc = 0;
    if (me == 0 && *n > 0)
        rc = H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, *buf) < 0;
    H5Sclose(sp);
    H5Dclose(d);
    MPI_Barrier(node);
    return rc;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
    const char *data = sarg(argc, argv, "--data"), *task = sarg(argc, argv, "--task");
    long long n_win = arg(argc, argv, "--windows", 20000),
              context = arg(argc, argv, "--context", 256);
    long long cache_mb = arg(argc, argv, "--cache-mb", 64);
    if (!data || !task) {
        if (rank == 0)
            fprintf(stderr, "usage: bench_window --data FILE.h5 --task NAME [--windows N] "
                            "[--context N] [--cache-mb N]\n");
        MPI_Finalize();
        return 2;
    }

    /* 1. per-rank cache: the sampler. */
    long long pss0 = pss_kib();
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "experiment: {name: bench}\nmodel: {context: %lld}\ndata: {files: [%s], tasks: "
             "{%s: 1}, cache_mb: %lld}\n",
             context, data, task, cache_mb);
    omni_experiment x;
    omni_sampler *s = NULL;
    omni_batch b;
    if (omni_experiment_parse(&x, yaml, strlen(yaml), "bench", NULL, 0) ||
        omni_sampler_open(&s, &x) || omni_batch_alloc(&b, 16, context, 0)) {
        fprintf(stderr, "bench_window: %s\n", omni_error_message());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (long long w = rank; w < n_win * size; w += size)
        omni_sampler_fill(s, OMNI_SPLIT_TRAIN, 1, w / 16, w % 16, &b, w % 16);
    double t_cache = MPI_Wtime() - t0;
    long long d_cache = pss_kib() - pss0, node_cache = 0;
    MPI_Reduce(&d_cache, &node_cache, 1, MPI_LONG_LONG, MPI_SUM, 0, node);
    omni_batch_free(&b);
    omni_sampler_close(s);

    /* 2. node-shared window: one copy of the split per node. */
    long long pss1 = pss_kib();
    char path[512];
    hid_t f = H5Fopen(data, H5F_ACC_RDONLY, H5P_DEFAULT);
    uint16_t *tok = NULL;
    int64_t *off = NULL;
    hsize_t n_tok = 0, n_off = 0;
    MPI_Win wt, wo;
    snprintf(path, sizeof path, "tasks/%s/train/tokens", task);
    int bad = f < 0 || read_all(f, path, H5T_NATIVE_UINT16, (void **)&tok, &n_tok, &wt, node, 2);
    snprintf(path, sizeof path, "tasks/%s/train/offsets", task);
    bad |= read_all(f, path, H5T_NATIVE_INT64, (void **)&off, &n_off, &wo, node, 8);
    if (f >= 0)
        H5Fclose(f);
    if (bad) {
        fprintf(stderr, "bench_window: cannot read task %s of %s\n", task, data);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int32_t *wtok = malloc(sizeof *wtok * (size_t)context);
    uint8_t *wloss = malloc((size_t)context);
    omni_rng r;
    omni_rng_init(&r, 1, "bench/window", (uint64_t)rank);
    uint64_t word = 0;
    long long sum = 0;
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = MPI_Wtime();
    for (long long w = 0; w < n_win; w++) {
        for (long long at = 0; at < context;) {
            uint64_t i = omni_rng_u32(&r, word++) % (n_off - 1);
            int64_t a = off[i], e = off[i + 1];
            for (int64_t j = a; j < e && at < context; j++, at++) {
                wtok[at] = tok[j] & 0x7fff;
                wloss[at] = (uint8_t)(tok[j] >> 15);
            }
        }
        sum += wtok[context - 1] + wloss[0];
    }
    double t_win = MPI_Wtime() - t0;
    long long d_win = pss_kib() - pss1, node_win = 0;
    MPI_Reduce(&d_win, &node_win, 1, MPI_LONG_LONG, MPI_SUM, 0, node);
    int node_rank, node_size;
    MPI_Comm_rank(node, &node_rank);
    MPI_Comm_size(node, &node_size);
    printf("rank %d: cache  %.0f windows/s, %.3g positions/s\n", rank, (double)n_win / t_cache,
           (double)(n_win * context) / t_cache);
    printf("rank %d: window %.0f windows/s, %.3g positions/s (checksum %lld)\n", rank,
           (double)n_win / t_win, (double)(n_win * context) / t_win, sum);
    if (node_rank == 0)
        printf("node of %d ranks: memory grown by %.0f MiB with per-rank caches of %lld MiB, by "
               "%.0f MiB with one shared copy of %s's training split (%.0f MiB of tokens and "
               "offsets)\n",
               node_size, (double)node_cache / 1024.0, cache_mb, (double)node_win / 1024.0, task,
               (double)(n_tok * 2 + n_off * 8) / 1048576.0);
    free(wtok);
    free(wloss);
    MPI_Win_free(&wt);
    MPI_Win_free(&wo);
    MPI_Comm_free(&node);
    MPI_Finalize();
    return 0;
}
