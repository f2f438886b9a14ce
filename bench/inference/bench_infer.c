/*
 * bench_infer — decoding speed with the KV cache on the demo model (configs/demo.yaml:
 * d_model 128, 4 blocks of which 2 MoE with 4 experts top-2, context 128, the demo's four
 * tasks), random weights, one process, one BLAS thread:
 *
 *   bench_infer [EXP.yaml] [--new N] [--reps R]
 *
 * - greedy decoding tokens/s at batch 1 and batch 64: prompts of 12 text tokens of the
 *   text_to_text task, N new tokens each (default 64, <eos> not stopping, so every row
 *   decodes N tokens), prefill included; best of R runs (default 3);
 * - the training forward pass (omni_model_forward, MoE layers, no backward) in
 *   positions/s on data.batch windows of model.context positions, best of R;
 * - the ratio of batch-64 decoding tokens/s to the forward's positions/s (target >= 0.30).
 *
 * Prints one line per figure and a RESULT line. Not a test: speed is measured here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../inference/internal.h"
#include "ops.h"

static void die(const char *what)
{
    fprintf(stderr, "bench_infer: %s: %s\n", what, omni_error_message());
    exit(1);
}

/* The demo data's dims and task table (datasets/demo.c: 32x32x3 images in 8x8 patches,
 * 32 mels x 64 frames in 8x8 patches). */
static void demo_tasks(omni_data_dims *dims, infer_task *t)
{
    *dims = (omni_data_dims){.n_tasks = 4,
                             .vocab = OMNI_TOK_TASK0 + 4,
                             .image_patch_dim = 192,
                             .audio_patch_dim = 64,
                             .max_rows = 4,
                             .max_cols = 8};
    memset(t, 0, 4 * sizeof *t);
    t[0] = (infer_task){
        .name = "shapes", .kind = OMNI_KIND_IMAGE_TO_TEXT, .patch = 8, .patch_dim = 192, .cols = 4};
    t[1] = (infer_task){
        .name = "tones", .kind = OMNI_KIND_AUDIO_TO_TEXT, .patch = 8, .patch_dim = 64, .cols = 8};
    t[2] = (infer_task){.name = "arith", .kind = OMNI_KIND_TEXT_TO_TEXT};
    t[3] = (infer_task){
        .name = "cartpole", .kind = OMNI_KIND_CONTROL, .obs_dim = 4, .act_dim = 1, .discrete = 1};
}

static double decode_rate(omni_infer *s, int64_t batch, int64_t new_tokens, int reps)
{
    enum { P = 12 };
    int32_t *tok = malloc(sizeof *tok * (size_t)(batch * P));
    omni_prompt *p = malloc(sizeof *p * (size_t)batch);
    int32_t *out = malloc(sizeof *out * (size_t)(batch * s->T));
    int64_t *n_out = malloc(sizeof *n_out * (size_t)batch);
    for (int64_t i = 0; i < batch; i++) {
        for (int j = 0; j < P - 1; j++)
            tok[i * P + j] = '0' + (int32_t)((i * 7 + j * 3) % 10);
        tok[i * P + P - 1] = OMNI_TOK_SEP;
        p[i] = (omni_prompt){.task = 2, .id = (uint64_t)i, .n = P, .tok = tok + i * P};
    }
    omni_decode_opts o;
    omni_decode_defaults(&o);
    o.max_new = new_tokens;
    o.stop_at_eos = false;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = omni_now();
        if (omni_infer_generate(s, p, batch, &o, out, s->T, n_out))
            die("generate");
        double t = omni_now() - t0;
        best = t < best ? t : best;
    }
    int64_t total = 0;
    for (int64_t i = 0; i < batch; i++)
        total += n_out[i];
    free(tok), free(p), free(out), free(n_out);
    return (double)total / best;
}

static double forward_rate(const omni_experiment *x, const omni_data_dims *dims, int reps)
{
    const int64_t S = x->data.batch, T = x->model.context;
    omni_model *m;
    omni_moe *moe = NULL;
    omni_moe_comm local;
    omni_moe_comm_local(&local);
    if (omni_model_create(&m, x, dims, S))
        die("model");
    omni_model_init_params(m);
    if (x->moe.every > 0) {
        if (omni_moe_create(&moe, x, S * T, dims->n_tasks, &local))
            die("moe");
        omni_moe_init_params(moe);
        omni_moe_set_step(moe, 0, 0, false);
        omni_ffn_hook hook = {
            .ctx = moe, .forward = omni_moe_forward, .backward = omni_moe_backward};
        omni_model_set_moe(m, &hook);
    }
    omni_batch b;
    if (omni_batch_alloc(&b, S, T, 192))
        die("batch");
    for (int64_t p = 0; p < S * T; p++) {
        b.kind[p] = OMNI_POS_TOKEN, b.token[p] = (int32_t)(p * 31 % 256);
        b.pos[p] = (int32_t)(p % T), b.segment[p] = 0, b.task[p] = 2;
        b.in_prefix[p] = p % T < 12;
        b.target[p] = (int32_t)((p + 1) * 31 % 256), b.loss_mask[p] = p % T >= 12;
    }
    b.loss_norm = (double)(S * (T - 12));
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = omni_now();
        if (omni_model_forward(m, &b, NULL))
            die("forward");
        double t = omni_now() - t0;
        if (r > 0) /* the first is a warm-up */
            best = t < best ? t : best;
    }
    omni_batch_free(&b);
    omni_moe_free(moe);
    omni_model_free(m);
    return (double)(S * T) / best;
}

int main(int argc, char **argv)
{
    MPI_Comm comm;
    if (omni_mpi_init(&argc, &argv, &comm))
        return 1;
    const char *path = OMNI_BENCH_SRC "/configs/demo.yaml";
    int64_t new_tokens = 64;
    int reps = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--new") && i + 1 < argc)
            new_tokens = atol(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else
            path = argv[i];
    }
    omni_experiment x;
    if (omni_experiment_load(comm, path, NULL, 0, &x))
        die(path);
    x.parallel.threads = 1; /* one core: figures that a shared machine does not scramble */
    int threads = 1;
    if (omni_blas_set_threads(&x, comm, &threads))
        die("threads");
    omni_data_dims dims;
    infer_task tasks[4];
    demo_tasks(&dims, tasks);
    omni_infer *s;
    if (omni_infer_create(comm, &x, &dims, 4, tasks, 64, &s))
        die("session");
    double fwd = forward_rate(&x, &dims, reps);
    double d1 = decode_rate(s, 1, new_tokens, reps);
    double d64 = decode_rate(s, 64, new_tokens, reps);
    printf("model: %s (d_model %lld, %lld blocks, context %lld), %d BLAS thread%s\n", path,
           (long long)x.model.d_model, (long long)x.model.n_layers, (long long)x.model.context,
           threads, threads == 1 ? "" : "s");
    printf("training forward pass: %.0f positions/s (batch %lld x %lld)\n", fwd,
           (long long)x.data.batch, (long long)x.model.context);
    printf("greedy decoding, batch 1:  %.0f tokens/s (%lld new tokens after 12)\n", d1,
           (long long)new_tokens);
    printf("greedy decoding, batch 64: %.0f tokens/s\n", d64);
    printf("RESULT fwd_pos_per_s=%.0f decode_b1=%.0f decode_b64=%.0f ratio_b64_fwd=%.3f "
           "(target >= 0.30)\n",
           fwd, d1, d64, d64 / fwd);
    omni_infer_close(s);
    MPI_Comm_free(&comm);
    MPI_Finalize();
    return 0;
}
