/*
 * inference: decoding on 1 and 2 processes with a small MoE model (random weights, seed
 * fixed), prompts of a text task, an image_to_text task and a control task, several per
 * rank (more than one batch, so chunks and idle ranks are exercised). Checked:
 *  - greedy decoding is deterministic (two runs give the same tokens);
 *  - beam search of width 1 gives exactly the greedy tokens;
 *  - no decoder ever emits a token outside the legal set: text bytes and <eos> for text
 *    outputs, value bins for control, and a caller's own set (5 letters) — for greedy,
 *    sampled (temperature 1.5, top-k 0 and 7) and beam (width 3) decoding;
 *  - sampling is reproducible with its seed and changes with it;
 *  - a prompt with a token outside the vocabulary is OMNI_ERR_DATA on every rank.
 * Exit 0 on success, 1 naming the first failure.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inference.h"
#include "../../inference/internal.h"

enum { N = 5, T = 40, MAXNEW = 12 };

static int failures;

#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static void die(const char *what)
{
    fprintf(stderr, "%s: %s\n", what, omni_error_message());
    MPI_Abort(MPI_COMM_WORLD, 1);
}

typedef struct {
    int32_t tok[T];
    uint8_t patches[4 * 4];
    omni_prompt p;
} prompt_buf;

/* Prompt g of this test: task g % 3 (text, image_to_text with 4 patches, control). */
static void make_prompt(prompt_buf *b, int64_t g)
{
    int task = (int)(g % 3);
    int64_t n = 0;
    if (task == 0) {
        for (int64_t j = 0; j < 3 + g % 5; j++)
            b->tok[n++] = (int32_t)('a' + (g + j) % 26);
    } else if (task == 1) {
        for (int k = 0; k < 4; k++)
            b->tok[n++] = OMNI_PROMPT_PATCH;
        b->tok[n++] = OMNI_TOK_SEP;
        for (int k = 0; k < 16; k++)
            b->patches[k] = (uint8_t)((g * 37 + k * 11) % 256);
    } else {
        for (int step = 0; step < 2; step++) {
            for (int k = 0; k < 3; k++)
                b->tok[n++] = OMNI_TOK_BIN0 + (int32_t)((g * 101 + k * 7 + step) % OMNI_BINS);
            b->tok[n++] = OMNI_TOK_SEP;
            if (step == 0)
                b->tok[n++] = OMNI_TOK_BIN0 + 1;
        }
    }
    b->p = (omni_prompt){.task = task,
                         .id = (uint64_t)g,
                         .n = n,
                         .tok = b->tok,
                         .patches = task == 1 ? b->patches : NULL};
}

static void run_decode(omni_infer *s, const omni_prompt *p, int64_t n, const omni_decode_opts *o,
                       int32_t *out, int64_t *n_out)
{
    if (omni_infer_generate(s, p, n, o, out, T, n_out))
        die("generate");
}

static void check_legal(omni_infer *s, const char *what, const omni_prompt *p, int64_t n,
                        const int32_t *out, const int64_t *n_out, const uint8_t *own)
{
    uint8_t legal[OMNI_TOK_TASK0 + 3];
    for (int64_t i = 0; i < n; i++) {
        if (own)
            memcpy(legal, own, sizeof legal);
        else
            omni_infer_legal_tokens(s, p[i].task, legal);
        for (int64_t j = 0; j < n_out[i]; j++)
            EXPECT(legal[out[i * T + j]], "%s: prompt %llu emitted illegal token %d", what,
                   (unsigned long long)p[i].id, out[i * T + j]);
        EXPECT(n_out[i] >= 0 && n_out[i] <= MAXNEW, "%s: prompt %llu: %lld tokens", what,
               (unsigned long long)p[i].id, (long long)n_out[i]);
    }
}

int main(int argc, char **argv)
{
    MPI_Comm comm;
    if (omni_mpi_init(&argc, &argv, &comm))
        return 1;
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    omni_experiment x;
    omni_experiment_defaults(&x);
    x.experiment.seed = 3;
    x.model.d_model = 32, x.model.n_layers = 2, x.model.n_heads = 2, x.model.d_ff = 32;
    x.model.context = T, x.model.attention = OMNI_ATTN_PREFIX;
    x.moe.every = 2, x.moe.num_experts = 2, x.moe.top_k = 1, x.moe.expert_ff = 16;
    omni_data_dims dims = {.n_tasks = 3,
                           .vocab = OMNI_TOK_TASK0 + 3,
                           .image_patch_dim = 4,
                           .max_rows = 2,
                           .max_cols = 2};
    infer_task tasks[3] = {
        {.name = "story", .kind = OMNI_KIND_TEXT},
        {.name = "shapes", .kind = OMNI_KIND_IMAGE_TO_TEXT, .patch = 2, .patch_dim = 4, .cols = 2},
        {.name = "pole", .kind = OMNI_KIND_CONTROL, .obs_dim = 3, .act_dim = 1, .discrete = 1},
    };
    omni_infer *s;
    if (omni_infer_create(comm, &x, &dims, 3, tasks, 4, &s))
        die("create");

    prompt_buf bufs[N];
    omni_prompt p[N];
    for (int64_t i = 0; i < N; i++) {
        make_prompt(&bufs[i], rank * N + i);
        p[i] = bufs[i].p;
    }
    int32_t *a = calloc(N * T, sizeof *a), *b = calloc(N * T, sizeof *b);
    int64_t na[N], nb[N];
    omni_decode_opts o;
    omni_decode_defaults(&o);
    o.max_new = MAXNEW;

    run_decode(s, p, N, &o, a, na);
    run_decode(s, p, N, &o, b, nb);
    for (int64_t i = 0; i < N; i++)
        EXPECT(na[i] == nb[i] && !memcmp(a + i * T, b + i * T, (size_t)na[i] * sizeof *a),
               "greedy: prompt %lld differs between two runs", (long long)(rank * N + i));
    check_legal(s, "greedy", p, N, a, na, NULL);

    omni_decode_opts ob = o;
    ob.beam = 1;
    run_decode(s, p, N, &ob, b, nb);
    for (int64_t i = 0; i < N; i++)
        EXPECT(na[i] == nb[i] && !memcmp(a + i * T, b + i * T, (size_t)na[i] * sizeof *a),
               "beam 1: prompt %lld: %lld tokens, greedy %lld (or different tokens)",
               (long long)(rank * N + i), (long long)nb[i], (long long)na[i]);
    ob.beam = 2;
    run_decode(s, p, N, &ob, b, nb);
    check_legal(s, "beam 2", p, N, b, nb, NULL);

    o.temperature = 1.5;
    o.seed = 11;
    run_decode(s, p, N, &o, a, na);
    check_legal(s, "sampled", p, N, a, na, NULL);
    run_decode(s, p, N, &o, b, nb);
    for (int64_t i = 0; i < N; i++)
        EXPECT(na[i] == nb[i] && !memcmp(a + i * T, b + i * T, (size_t)na[i] * sizeof *a),
               "sampling: prompt %lld differs with the same seed", (long long)(rank * N + i));
    o.seed = 12;
    run_decode(s, p, N, &o, b, nb);
    int same = 0;
    for (int64_t i = 0; i < N; i++)
        same += na[i] == nb[i] && !memcmp(a + i * T, b + i * T, (size_t)na[i] * sizeof *a);
    EXPECT(same < N, "sampling: every prompt gave the same tokens with seeds 11 and 12");
    o.top_k = 7;
    run_decode(s, p, N, &o, a, na);
    check_legal(s, "top-k", p, N, a, na, NULL);

    uint8_t own[OMNI_TOK_TASK0 + 3] = {0};
    for (int c = 'v'; c <= 'z'; c++)
        own[c] = 1;
    o.legal = own;
    o.top_k = 0;
    run_decode(s, p, N, &o, a, na);
    check_legal(s, "own set, sampled", p, N, a, na, own);
    o.temperature = 0;
    run_decode(s, p, N, &o, a, na);
    check_legal(s, "own set, greedy", p, N, a, na, own);
    o.beam = 3;
    run_decode(s, p, N, &o, a, na);
    check_legal(s, "own set, beam 3", p, N, a, na, own);

    /* the act policy: the loop's prompt (<task> first), 1 action token in the given range */
    omni_act_policy pol;
    omni_infer_act_policy(s, &pol);
    int32_t hist[8] = {OMNI_TOK_TASK0 + 2, OMNI_TOK_BIN0 + 5, OMNI_TOK_BIN0 + 700,
                       OMNI_TOK_BIN0 + 9, OMNI_TOK_SEP};
    int32_t act[2] = {-1, -1};
    omni_status pst = pol.act(pol.ctx, hist, 5, 5, NULL, 2, OMNI_TOK_BIN0, OMNI_TOK_BIN0 + 2, act);
    EXPECT(pst == OMNI_OK, "act policy: %s", omni_error_message());
    for (int k = 0; rank == 0 && k < 2; k++)
        EXPECT(act[k] >= OMNI_TOK_BIN0 && act[k] < OMNI_TOK_BIN0 + 2,
               "act policy: token %d outside [BIN0, BIN0 + 2)", act[k]);

    /* a bad token on rank 0 only: every rank fails alike */
    omni_decode_defaults(&o);
    o.max_new = MAXNEW;
    if (rank == 0)
        bufs[0].tok[0] = OMNI_TOK_TASK0 + 3;
    omni_status st = omni_infer_generate(s, p, N, &o, a, T, na);
    EXPECT(st == OMNI_ERR_DATA, "a token outside the vocabulary: status %d", (int)st);
    EXPECT(rank != 0 || strstr(omni_error_message(), "outside the vocabulary"), "message: %s",
           omni_error_message());

    free(a);
    free(b);
    omni_infer_close(s);
    int total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, comm);
    MPI_Comm_free(&comm);
    MPI_Finalize();
    if (total) {
        fprintf(stderr, "test_generate_mpi: %d failures\n", total);
        return 1;
    }
    return 0;
}
