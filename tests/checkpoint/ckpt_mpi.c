/*
 * The checkpoint tests that need MPI, one program with a mode per test, run under
 * mpiexec with 1, 2 and 4 processes:
 *   reshard DIR   write with 1, 2, 4 ranks (sub-communicators of the job) and read back
 *                 on 1, 2, 4: every value exact, experts sharded or replicated in groups,
 *                 dense tensors written once, metadata intact
 *   atomic DIR    keep-N rotation, a full disk (RLIMIT_FSIZE) failing a save cleanly,
 *                 find-latest falling back past a bad `latest`, .tmp leftovers ignored
 *   bad DIR       bad checkpoints fail with OMNI_ERR_CKPT naming the file and the fault;
 *                 leaves the bad files in DIR for the `omnimoe ckpt info` script test
 *   loop DIR      save steps 1, 2, 3, ... until killed (kill_during_save.sh)
 *   verify DIR    load the latest complete checkpoint, check every value, print its
 *                 step, save the next one, check no .tmp is left
 * A failed expectation prints its line and aborts the job (exit status non-zero).
 */
#include <dirent.h>
#include <hdf5.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "ckpt_private.h"
#include "synth.h"

static int world_rank, world_size;

static void expect_at(bool ok, int line, const char *fmt, ...) OMNI_PRINTF(3, 4);
static void expect_at(bool ok, int line, const char *fmt, ...)
{
    if (ok)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[rank %d] FAIL ckpt_mpi.c:%d: ", world_rank, line);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n  last error: %s\n", omni_error_message());
    va_end(ap);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
}
#define EXPECT(cond, ...) expect_at((cond), __LINE__, __VA_ARGS__)

/* The status is `want` and the message names `file` and says `fault`. */
static void expect_fault(omni_status st, omni_status want, const char *file, const char *fault,
                         int line)
{
    const char *msg = omni_error_message();
    expect_at(st == want, line, "status %s, expected %s", omni_status_name(st),
              omni_status_name(want));
    if (world_rank == 0) {
        expect_at(strstr(msg, file) != NULL, line, "message does not name %s: %s", file, msg);
        expect_at(strstr(msg, fault) != NULL, line, "message does not say '%s': %s", fault, msg);
        printf("  ok: %s\n", msg);
    }
}
#define EXPECT_FAULT(st, want, file, fault) expect_fault((st), (want), (file), (fault), __LINE__)

static MPI_Comm sub_comm(int n)
{
    MPI_Comm c;
    MPI_Comm_split(MPI_COMM_WORLD, world_rank < n ? 0 : MPI_UNDEFINED, world_rank, &c);
    if (c != MPI_COMM_NULL)
        MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN);
    return c;
}

static bool exists(const char *dir, const char *name)
{
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat sb;
    return stat(p, &sb) == 0;
}

static void ckpt_name(const char *dir, int64_t step, char *out, size_t len)
{
    char name[64];
    omni_ckpt_file_name(step, name, sizeof name);
    snprintf(out, len, "%s/%s", dir, name);
}

static void fresh_dir(const char *dir)
{
    if (world_rank == 0) {
        char cmd[2100];
        snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
        EXPECT(system(cmd) == 0, "cannot make %s", dir);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

static omni_status save(MPI_Comm comm, const char *dir, int64_t experts, int64_t big, int64_t step,
                        int64_t keep)
{
    int r, n;
    MPI_Comm_rank(comm, &r);
    MPI_Comm_size(comm, &n);
    synth s;
    EXPECT(synth_make(&s, r, n, experts, big, step, true) == 0, "synth_make");
    omni_ckpt_meta m;
    synth_meta(&m, step, experts);
    char path[2048];
    omni_status st = omni_ckpt_save(comm, dir, &m, s.t, s.n, keep, path, sizeof path);
    if (!st) {
        char want[2048];
        ckpt_name(dir, step, want, sizeof want);
        EXPECT(!strcmp(path, want), "saved as %s, expected %s", path, want);
    }
    synth_free(&s);
    return st;
}

/* Load `path` on comm and check every value and the metadata of `step`. */
static void load_and_check(MPI_Comm comm, const char *path, int64_t experts, int64_t big,
                           int64_t step, int64_t written_by)
{
    int r, n;
    MPI_Comm_rank(comm, &r);
    MPI_Comm_size(comm, &n);
    omni_ckpt *c;
    omni_status st = omni_ckpt_open(comm, path, &c);
    EXPECT(!st, "open %s", path);
    const omni_ckpt_meta *m = omni_ckpt_meta_of(c);
    omni_ckpt_meta want;
    synth_meta(&want, step, experts);
    EXPECT(m->format_version == OMNI_CKPT_FORMAT, "format version %" PRId64, m->format_version);
    EXPECT(m->step == step && m->tokens_seen == want.tokens_seen && m->seed == want.seed,
           "step %" PRId64 " tokens %" PRId64 " seed %" PRId64, m->step, m->tokens_seen, m->seed);
    EXPECT(written_by < 0 || m->world_size == written_by,
           "world size %" PRId64 ", expected %" PRId64, m->world_size, written_by);
    EXPECT(!strcmp(m->experiment_yaml, want.experiment_yaml), "experiment text differs");
    EXPECT(!strcmp(m->omnimoe_version, OMNI_VERSION), "omnimoe version %s", m->omnimoe_version);
    EXPECT(m->load_rows == 3 && m->load_layers == 2 && m->load_experts == experts,
           "expert load table %" PRId64 "x%" PRId64 "x%" PRId64, m->load_rows, m->load_layers,
           m->load_experts);
    for (int64_t i = 0; i < 3; i++)
        EXPECT(m->load_steps[i] == want.load_steps[i], "load step %" PRId64, i);
    for (int64_t i = 0; i < 3 * 2 * experts; i++)
        EXPECT(m->load[i] == want.load[i], "load cell %" PRId64, i);
    int64_t v;
    EXPECT(m->n_counters == 2, "%d counters", m->n_counters);
    EXPECT(omni_ckpt_counter_get(m, "sampler.position", &v) && v == step * 16 + 3, "counter");
    EXPECT(omni_ckpt_counter_get(m, "rng_draws", &v) && v == INT64_MAX - step, "counter");
    EXPECT(!omni_ckpt_counter_get(m, "nope", &v), "absent counter found");
    omni_tokenization tok, want_tok;
    char why[256];
    EXPECT(!omni_ckpt_read_tokenization(c, &tok), "read tokenization");
    synth_tokenization(&want_tok);
    EXPECT(omni_tokenization_same(&want_tok, &tok, why, sizeof why), "tokenization: %s", why);
    EXPECT(!memcmp(&tok, &want_tok, sizeof tok), "tokenization differs in a byte");

    synth s;
    EXPECT(synth_make(&s, r, n, experts, big, step, false) == 0, "synth_make");
    st = omni_ckpt_read(c, s.t, s.n);
    EXPECT(!st, "read %s", path);
    int64_t bad = synth_check(&s, step, why, sizeof why);
    EXPECT(bad == 0, "%s: %" PRId64 " values differ, first: %s", path, bad, why);
    synth_free(&s);

    int64_t total, want_total;
    double active, want_active;
    EXPECT(!omni_ckpt_param_counts(c, &total, &active), "param counts");
    synth_param_counts(experts, big, &want_total, &want_active);
    EXPECT(total == want_total && fabs(active - want_active) < 1e-6,
           "params %" PRId64 " active %.1f, expected %" PRId64 " %.1f", total, active, want_total,
           want_active);
    bool has;
    EXPECT(!omni_ckpt_has(c, "state/moe/01/bias", &has) && has, "has bias");
    EXPECT(!omni_ckpt_has(c, "state/moe/07/bias", &has) && !has, "has no such tensor");
    EXPECT(!omni_ckpt_has(c, "nothing/at/all", &has) && !has, "has no such group");
    omni_ckpt_close(c);
}

static int mode_reshard(const char *base)
{
    static const int sizes[] = {1, 2, 4};
    static const int64_t experts[] = {8, 2};
    omni_ckpt_piece_bytes = 1000; /* several transfers per tensor, uneven across ranks */
    for (int ei = 0; ei < 2; ei++) {
        int64_t E = experts[ei];
        for (int wi = 0; wi < 3 && sizes[wi] <= world_size; wi++) {
            int w = sizes[wi];
            if (E < w && w % E)
                continue;
            char dir[1024];
            snprintf(dir, sizeof dir, "%s/E%" PRId64 "-w%d", base, E, w);
            int64_t step = 100 * w + E;
            fresh_dir(dir);
            MPI_Comm wc = sub_comm(w);
            if (wc != MPI_COMM_NULL) {
                EXPECT(!save(wc, dir, E, 3, step - 1, 2), "save on %d", w);
                EXPECT(!save(wc, dir, E, 3, step, 2), "save on %d", w);
                MPI_Comm_free(&wc);
            }
            MPI_Barrier(MPI_COMM_WORLD);
            for (int ri = 0; ri < 3 && sizes[ri] <= world_size; ri++) {
                int r = sizes[ri];
                if (E < r && r % E)
                    continue;
                MPI_Comm rc = sub_comm(r);
                if (rc != MPI_COMM_NULL) {
                    char path[2048], want[2048];
                    EXPECT(!omni_ckpt_find_latest(rc, dir, path, sizeof path), "find latest");
                    ckpt_name(dir, step, want, sizeof want);
                    EXPECT(!strcmp(path, want), "latest is %s, expected %s", path, want);
                    load_and_check(rc, path, E, 3, step, w);
                    /* The checksums taken piece by piece as the save passed (pieces of
                     * 1000 bytes cut the single-slab tensors) are those of the stored
                     * bytes, summed again apart from any transfer. */
                    omni_ckpt *vc = NULL;
                    int64_t nd = 0, nu = 0;
                    double vb = 0;
                    const char *first_unchecked = NULL;
                    EXPECT(!omni_ckpt_open(rc, path, &vc) &&
                               !omni_ckpt_verify(vc, &nd, &nu, &first_unchecked, &vb) && nd > 0 &&
                               nu == 0,
                           "verify %s: %s", path, omni_error_message());
                    omni_ckpt_close(vc);
                    ckpt_name(dir, step - 1, want, sizeof want);
                    load_and_check(rc, want, E, 3, step - 1, w);
                    if (world_rank == 0)
                        printf("E=%" PRId64 ": written by %d, read by %d: exact\n", E, w, r);
                    MPI_Comm_free(&rc);
                }
                MPI_Barrier(MPI_COMM_WORLD);
            }
        }
    }
    /* A misdescribed state is refused before any file is made. */
    synth s;
    EXPECT(synth_make(&s, world_rank, world_size, 8, 0, 1, true) == 0, "synth_make");
    omni_ckpt_meta m;
    synth_meta(&m, 1, 8);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/misdescribed", base);
    fresh_dir(dir);
    s.t[0].writer = true; /* every rank writes the embedding */
    omni_status st = omni_ckpt_save(MPI_COMM_WORLD, dir, &m, s.t, s.n, 2, NULL, 0);
    EXPECT(world_size == 1 ? st == OMNI_OK : st == OMNI_ERR_INTERNAL, "two writers accepted");
    if (world_size > 1 && world_rank == 0)
        EXPECT(strstr(omni_error_message(), "written twice") != NULL, "%s", omni_error_message());
    s.t[0].writer = world_rank == 0;
    bool was = s.t[3].writer;
    if (world_rank == 0)
        s.t[3].writer = false; /* nobody writes rank 0's experts */
    st = omni_ckpt_save(MPI_COMM_WORLD, dir, &m, s.t, s.n, 2, NULL, 0);
    s.t[3].writer = was;
    EXPECT(st == OMNI_ERR_INTERNAL, "rows nobody writes accepted");
    if (world_rank == 0)
        EXPECT(strstr(omni_error_message(), "not written") != NULL, "%s", omni_error_message());
    if (world_size > 1) {
        s.t[1].dims[1] = world_rank ? 47 : 48;
        st = omni_ckpt_save(MPI_COMM_WORLD, dir, &m, s.t, s.n, 2, NULL, 0);
        EXPECT(st == OMNI_ERR_INTERNAL, "different shapes on different ranks accepted");
        s.t[1].dims[1] = 48;
    }
    EXPECT(!exists(dir, "ckpt-00000001.h5.tmp") && (world_size == 1 || !exists(dir, "latest")),
           "a refused save left files behind");
    synth_free(&s);
    return 0;
}

static void read_latest_name(const char *dir, char *out, size_t len)
{
    char p[2048];
    snprintf(p, sizeof p, "%s/latest", dir);
    FILE *f = fopen(p, "r");
    out[0] = '\0';
    if (f) {
        if (!fgets(out, (int)len, f))
            out[0] = '\0';
        fclose(f);
    }
    out[strcspn(out, "\n")] = '\0';
}

static void copy_file(const char *from, const char *to, double fraction)
{
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    EXPECT(a && b, "copy %s to %s", from, to);
    fseek(a, 0, SEEK_END);
    long size = ftell(a);
    fseek(a, 0, SEEK_SET);
    long n = (long)((double)size * fraction);
    char *buf = malloc((size_t)size + 1);
    EXPECT(buf && fread(buf, 1, (size_t)size, a) == (size_t)size, "read %s", from);
    EXPECT(fwrite(buf, 1, (size_t)n, b) == (size_t)n, "write %s", to);
    free(buf);
    fclose(a);
    fclose(b);
}

static void expect_latest(MPI_Comm comm, const char *dir, int64_t step)
{
    char path[2048], want[2048];
    EXPECT(!omni_ckpt_find_latest(comm, dir, path, sizeof path), "find latest in %s", dir);
    ckpt_name(dir, step, want, sizeof want);
    EXPECT(!strcmp(path, want), "latest is %s, expected %s", path, want);
}

static int mode_atomic(const char *dir)
{
    const int64_t E = 8, big = 64; /* 2 MiB of experts */
    fresh_dir(dir);
    /* Rotation: keep the newest two. */
    for (int64_t step = 10; step <= 40; step += 10)
        EXPECT(!save(MPI_COMM_WORLD, dir, E, big, step, 2), "save %" PRId64, step);
    EXPECT(!exists(dir, "ckpt-00000010.h5") && !exists(dir, "ckpt-00000020.h5"),
           "old checkpoints kept");
    EXPECT(exists(dir, "ckpt-00000030.h5") && exists(dir, "ckpt-00000040.h5"),
           "newest checkpoints removed");
    char latest[256];
    read_latest_name(dir, latest, sizeof latest);
    EXPECT(!strcmp(latest, "ckpt-00000040.h5"), "latest names '%s'", latest);

    /* A full disk: files may not grow past 600 kB while saving step 50. */
    struct rlimit old, lim;
    EXPECT(getrlimit(RLIMIT_FSIZE, &old) == 0, "getrlimit");
    signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = 600000;
    EXPECT(setrlimit(RLIMIT_FSIZE, &lim) == 0, "setrlimit");
    omni_status st = save(MPI_COMM_WORLD, dir, E, big, 50, 2);
    EXPECT(setrlimit(RLIMIT_FSIZE, &old) == 0, "setrlimit back");
    EXPECT_FAULT(st, OMNI_ERR_IO, "ckpt-00000050.h5.tmp", "cannot");
    EXPECT(!exists(dir, "ckpt-00000050.h5") && !exists(dir, "ckpt-00000050.h5.tmp"),
           "the failed save left its file");
    read_latest_name(dir, latest, sizeof latest);
    EXPECT(!strcmp(latest, "ckpt-00000040.h5"), "latest names '%s' after a failed save", latest);
    expect_latest(MPI_COMM_WORLD, dir, 40);
    char p40[2048], p30[2048];
    ckpt_name(dir, 40, p40, sizeof p40);
    ckpt_name(dir, 30, p30, sizeof p30);
    load_and_check(MPI_COMM_WORLD, p40, E, big, 40, world_size);
    load_and_check(MPI_COMM_WORLD, p30, E, big, 30, world_size);

    /* find-latest past a bad `latest`, a truncated newest file and a .tmp leftover. */
    char p[2048];
    snprintf(p, sizeof p, "%s/latest", dir);
    if (world_rank == 0) {
        FILE *f = fopen(p, "w");
        fputs("../../etc/passwd\n", f);
        fclose(f);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    expect_latest(MPI_COMM_WORLD, dir, 40);
    if (world_rank == 0) {
        unlink(p);
        char q[2048];
        snprintf(q, sizeof q, "%s/ckpt-00000060.h5.tmp", dir);
        copy_file(p40, q, 1.0);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    expect_latest(MPI_COMM_WORLD, dir, 40);
    if (world_rank == 0) {
        char q[2048];
        snprintf(q, sizeof q, "%s/ckpt-00000045.h5", dir);
        copy_file(p40, q, 0.5);
        FILE *f = fopen(p, "w");
        fputs("ckpt-00000045.h5\n", f);
        fclose(f);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    expect_latest(MPI_COMM_WORLD, dir, 40);
    if (world_rank == 0) {
        char q[2048];
        snprintf(q, sizeof q, "%s/ckpt-00000045.h5", dir);
        unlink(q);
    }
    MPI_Barrier(MPI_COMM_WORLD);

    /* The next save succeeds, rotates, and sweeps the leftover .tmp. */
    EXPECT(!save(MPI_COMM_WORLD, dir, E, big, 50, 2), "save 50");
    EXPECT(!exists(dir, "ckpt-00000060.h5.tmp"), "stale .tmp kept");
    EXPECT(!exists(dir, "ckpt-00000030.h5") && exists(dir, "ckpt-00000040.h5"), "rotation");
    expect_latest(MPI_COMM_WORLD, dir, 50);
    char empty[1100];
    snprintf(empty, sizeof empty, "%s/empty", dir);
    fresh_dir(empty);
    char path[2048];
    st = omni_ckpt_find_latest(MPI_COMM_WORLD, empty, path, sizeof path);
    EXPECT_FAULT(st, OMNI_ERR_CKPT, empty, "no complete checkpoint");
    EXPECT(!omni_ckpt_resolve(MPI_COMM_WORLD, "auto", dir, path, sizeof path), "resolve auto");
    EXPECT(strstr(path, "ckpt-00000050.h5") != NULL, "resolve auto gave %s", path);
    st = omni_ckpt_resolve(MPI_COMM_WORLD, "no/such.h5", dir, path, sizeof path);
    EXPECT_FAULT(st, OMNI_ERR_CKPT, "no/such.h5", "No such file");
    if (world_rank == 0)
        printf("rotation, full disk, fallbacks: ok\n");
    return 0;
}

/* Open `path` serially (rank 0) to damage it. */
static hid_t open_rw(const char *path)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    EXPECT(f >= 0, "open %s for writing", path);
    return f;
}

static void make_bad_files(const char *dir, const char *good)
{
    char p[2048];
    snprintf(p, sizeof p, "%s/truncated.h5", dir);
    copy_file(good, p, 0.6);
    snprintf(p, sizeof p, "%s/notes.h5", dir);
    FILE *f = fopen(p, "w");
    fputs("these are notes, not a checkpoint\n", f);
    fclose(f);

    snprintf(p, sizeof p, "%s/version.h5", dir);
    copy_file(good, p, 1.0);
    hid_t h = open_rw(p);
    hid_t a = H5Aopen(h, "format_version", H5P_DEFAULT);
    int64_t v = 99;
    EXPECT(a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0, "write version");
    H5Aclose(a);
    H5Fclose(h);

    snprintf(p, sizeof p, "%s/foreign.h5", dir);
    h = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t n = 4;
    hid_t sp = H5Screate_simple(1, &n, NULL);
    hid_t d = H5Dcreate2(h, "x", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    float x[4] = {1, 2, 3, 4};
    EXPECT(d >= 0 && H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0,
           "foreign file");
    H5Dclose(d);
    H5Sclose(sp);
    H5Fclose(h);

    snprintf(p, sizeof p, "%s/missing.h5", dir);
    copy_file(good, p, 1.0);
    h = open_rw(p);
    EXPECT(H5Ldelete(h, "params/layers/01/moe/experts/w2", H5P_DEFAULT) >= 0, "delete");
    H5Fclose(h);

    snprintf(p, sizeof p, "%s/shape.h5", dir);
    copy_file(good, p, 1.0);
    h = open_rw(p);
    EXPECT(H5Ldelete(h, "params/layers/01/moe/experts/w2", H5P_DEFAULT) >= 0, "delete");
    hsize_t dims[3] = {8, 24, 17};
    sp = H5Screate_simple(3, dims, NULL);
    d = H5Dcreate2(h, "params/layers/01/moe/experts/w2", H5T_IEEE_F32LE, sp, H5P_DEFAULT,
                   H5P_DEFAULT, H5P_DEFAULT);
    EXPECT(d >= 0, "reshaped dataset");
    H5Dclose(d);
    H5Sclose(sp);
    H5Fclose(h);

    /* Format 1: no tokenization. It opens (ckpt info), but cannot give a task table. */
    snprintf(p, sizeof p, "%s/format1.h5", dir);
    copy_file(good, p, 1.0);
    h = open_rw(p);
    EXPECT(H5Ldelete(h, "tokenization", H5P_DEFAULT) >= 0, "delete tokenization");
    a = H5Aopen(h, "format_version", H5P_DEFAULT);
    v = 1;
    EXPECT(a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0, "write version");
    H5Aclose(a);
    H5Fclose(h);

    /* Two tasks with one index. */
    snprintf(p, sizeof p, "%s/taskindex.h5", dir);
    copy_file(good, p, 1.0);
    h = open_rw(p);
    hid_t g = H5Gopen2(h, "tokenization/tasks/a", H5P_DEFAULT);
    a = H5Aopen(g, "index", H5P_DEFAULT);
    v = 0;
    EXPECT(a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0, "write index");
    H5Aclose(a);
    a = H5Aopen(g, "token", H5P_DEFAULT);
    v = OMNI_TOK_TASK0;
    EXPECT(a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0, "write token");
    H5Aclose(a);
    H5Gclose(g);
    H5Fclose(h);

    snprintf(p, sizeof p, "%s/nan.h5", dir);
    copy_file(good, p, 1.0);
    h = open_rw(p);
    d = H5Dopen2(h, "params/embed/tok", H5P_DEFAULT);
    sp = H5Dget_space(d);
    hsize_t start[2] = {3, 4}, count[2] = {1, 1}, one = 1;
    H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, NULL, count, NULL);
    hid_t ms = H5Screate_simple(1, &one, NULL);
    float nan = NAN;
    EXPECT(H5Dwrite(d, H5T_NATIVE_FLOAT, ms, sp, H5P_DEFAULT, &nan) >= 0, "write NaN");
    /* An edit that drops the checksum: read unverified (with a warning), so the value
     * check below it is what finds the NaN. */
    EXPECT(H5Adelete(d, "crc32c") >= 0, "drop the checksum");
    H5Sclose(ms);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(h);

    /* One byte flipped inside expert 5 of a weight, behind HDF5's back (silent corruption
     * on disk): the checksum of that expert's rows no longer matches. */
    snprintf(p, sizeof p, "%s/flip.h5", dir);
    copy_file(good, p, 1.0);
    h = open_rw(p);
    d = H5Dopen2(h, "params/layers/01/moe/experts/w1", H5P_DEFAULT);
    haddr_t at = H5Dget_offset(d);
    EXPECT(at != HADDR_UNDEF, "offset of the expert weight");
    H5Dclose(d);
    H5Fclose(h);
    FILE *raw = fopen(p, "r+b");
    unsigned char byte = 0;
    long where = (long)at + 5 * 16 * 24 * 4 + 101;
    EXPECT(raw && fseek(raw, where, SEEK_SET) == 0 && fread(&byte, 1, 1, raw) == 1,
           "read the byte");
    byte ^= 0x10;
    EXPECT(fseek(raw, where, SEEK_SET) == 0 && fwrite(&byte, 1, 1, raw) == 1 && fclose(raw) == 0,
           "flip the byte");
}

/* Open `name` in dir expecting the fault. */
static void expect_open_fault(const char *dir, const char *name, const char *fault, int line)
{
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    omni_ckpt *c = (omni_ckpt *)&c;
    omni_status st = omni_ckpt_open(MPI_COMM_WORLD, p, &c);
    expect_at(c == NULL, line, "a handle returned for a bad file");
    expect_fault(st, OMNI_ERR_CKPT, p, fault, line);
}

/* Read `name` in dir with the synthetic tensors (after `tweak`), expecting the fault. */
static void expect_read_fault(const char *dir, const char *name, int tweak, const char *fault,
                              bool untouched, int line)
{
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    omni_ckpt *c;
    expect_at(!omni_ckpt_open(MPI_COMM_WORLD, p, &c), line, "open %s", p);
    synth s;
    expect_at(!synth_make(&s, world_rank, world_size, 8, 0, 5, false), line, "synth_make");
    omni_ckpt_tensor extra = s.t[0];
    extra.name = "params/extra";
    if (tweak == 1)
        s.t[s.n - 1].dims[1] = 3; /* the last tensor: wrong shape */
    if (tweak == 2) {
        s.t[s.n - 2].type = OMNI_CKPT_F32; /* an f64 tensor read as f32 */
    }
    if (tweak == 3)
        s.t[s.n++] = extra;
    omni_status st = omni_ckpt_read(c, s.t, s.n);
    expect_fault(st, OMNI_ERR_CKPT, p, fault, line);
    /* Undo the tweak, so the check sees the buffers as they were allocated. */
    if (tweak == 1)
        s.t[s.n - 1].dims[1] = 2;
    if (tweak == 2)
        s.t[s.n - 2].type = OMNI_CKPT_F64;
    if (tweak == 3)
        s.n--;
    if (untouched)
        expect_at(synth_untouched(&s), line, "a failed load wrote into the buffers");
    synth_free(&s);
    omni_ckpt_close(c);
}

/* Open `name` in dir and read its tokenization, expecting the fault. */
static void expect_tokenization_fault(const char *dir, const char *name, const char *fault,
                                      int line)
{
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    omni_ckpt *c;
    expect_at(!omni_ckpt_open(MPI_COMM_WORLD, p, &c), line, "open %s", p);
    omni_tokenization t;
    expect_fault(omni_ckpt_read_tokenization(c, &t), OMNI_ERR_CKPT, p, fault, line);
    omni_ckpt_close(c);
}

static int mode_bad(const char *dir)
{
    fresh_dir(dir);
    EXPECT(!save(MPI_COMM_WORLD, dir, 8, 0, 5, 2), "save the good checkpoint");
    char good[2048];
    ckpt_name(dir, 5, good, sizeof good);
    if (world_rank == 0)
        make_bad_files(dir, good);
    MPI_Barrier(MPI_COMM_WORLD);

    expect_open_fault(dir, "truncated.h5", "truncated", __LINE__);
    expect_open_fault(dir, "notes.h5", "not an HDF5 file", __LINE__);
    expect_open_fault(dir, "version.h5", "format version 99", __LINE__);
    expect_open_fault(dir, "foreign.h5", "not an omnimoe checkpoint", __LINE__);
    expect_open_fault(dir, "absent.h5", "No such file", __LINE__);
    expect_read_fault(dir, "missing.h5", 0, "tensor params/layers/01/moe/experts/w2 is missing",
                      true, __LINE__);
    expect_read_fault(dir, "shape.h5", 0,
                      "tensor params/layers/01/moe/experts/w2 has shape [8, 24, 17], expected "
                      "[8, 24, 16]",
                      true, __LINE__);
    expect_read_fault(dir, "ckpt-00000005.h5", 1, "has shape [3, 2], expected [3, 3]", true,
                      __LINE__);
    expect_read_fault(dir, "ckpt-00000005.h5", 2, "expected f32", true, __LINE__);
    expect_read_fault(dir, "ckpt-00000005.h5", 3, "tensor params/extra is missing", true, __LINE__);
    expect_tokenization_fault(dir, "format1.h5",
                              "has no /tokenization (the dataset's tokenization and task table): "
                              "it was written by an older omnimoe (format 1)",
                              __LINE__);
    expect_tokenization_fault(dir, "taskindex.h5", "two tasks of /tokenization/tasks have index 0",
                              __LINE__);
    expect_read_fault(dir, "nan.h5", 0,
                      "tensor params/embed/tok has a non-finite value at element 52", false,
                      __LINE__);
    expect_read_fault(dir, "flip.h5", 0,
                      "params/layers/01/moe/experts/w1: checksum mismatch in rows [5, 6)", false,
                      __LINE__);

    /* Another model: the first key that shapes it is named. */
    omni_ckpt *c;
    EXPECT(!omni_ckpt_open(MPI_COMM_WORLD, good, &c), "open good");
    const char *yaml = omni_ckpt_meta_of(c)->experiment_yaml;
    omni_experiment now;
    char changed[512];
    const char *const d_model[] = {"model.d_model=32"};
    EXPECT(!omni_experiment_parse(&now, yaml, strlen(yaml), "x", d_model, 1), "parse");
    EXPECT_FAULT(omni_ckpt_check_experiment(good, yaml, &now, changed, sizeof changed),
                 OMNI_ERR_CKPT, good,
                 "model.d_model is 16 in the checkpoint, 32 in the experiment");
    const char *const steps[] = {"optim.steps=200", "log.every=5"};
    EXPECT(!omni_experiment_parse(&now, yaml, strlen(yaml), "x", steps, 2), "parse");
    EXPECT(!omni_ckpt_check_experiment(good, yaml, &now, changed, sizeof changed), "same model");
    EXPECT(!strcmp(changed, "optim.steps 100 -> 200; log.every 10 -> 5"), "changed: %s", changed);
    omni_ckpt_close(c);
    if (world_rank == 0)
        printf("bad checkpoints: ok\n");
    return 0;
}

static int mode_loop(const char *dir)
{
    char p[2048];
    snprintf(p, sizeof p, "%s/pid.%d", dir, world_rank);
    FILE *f = fopen(p, "w");
    EXPECT(f != NULL, "pid file");
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
    for (int64_t step = 1; step < 100000; step++)
        EXPECT(!save(MPI_COMM_WORLD, dir, 8, 512, step, 2), "save %" PRId64, step);
    return 0;
}

static int mode_verify(const char *dir)
{
    char path[2048];
    EXPECT(!omni_ckpt_find_latest(MPI_COMM_WORLD, dir, path, sizeof path), "find latest");
    omni_ckpt *c;
    EXPECT(!omni_ckpt_open(MPI_COMM_WORLD, path, &c), "open");
    int64_t step = omni_ckpt_meta_of(c)->step;
    omni_ckpt_close(c);
    load_and_check(MPI_COMM_WORLD, path, 8, 512, step, -1);
    if (world_rank == 0)
        printf("verified step %" PRId64 "\n", step);
    EXPECT(!save(MPI_COMM_WORLD, dir, 8, 512, step + 1, 2), "save after the crash");
    if (world_rank == 0) {
        DIR *d = opendir(dir);
        struct dirent *e;
        while ((e = readdir(d)))
            EXPECT(!strstr(e->d_name, ".tmp"), "%s left after a save", e->d_name);
        closedir(d);
    }
    return 0;
}

int main(int argc, char **argv)
{
    MPI_Comm comm;
    if (omni_mpi_init(&argc, &argv, &comm)) {
        fprintf(stderr, "%s\n", omni_error_message());
        return 1;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (argc != 3) {
        fprintf(stderr, "usage: ckpt_mpi reshard|atomic|bad|loop|verify DIR\n");
        return 2;
    }
    const char *mode = argv[1], *dir = argv[2];
    int rc = 2;
    if (!strcmp(mode, "reshard"))
        rc = mode_reshard(dir);
    else if (!strcmp(mode, "atomic"))
        rc = mode_atomic(dir);
    else if (!strcmp(mode, "bad"))
        rc = mode_bad(dir);
    else if (!strcmp(mode, "loop"))
        rc = mode_loop(dir);
    else if (!strcmp(mode, "verify"))
        rc = mode_verify(dir);
    fflush(stdout);
    MPI_Comm_free(&comm);
    MPI_Finalize();
    return rc;
}
