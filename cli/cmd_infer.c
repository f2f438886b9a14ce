/*
 * omnimoe generate and omnimoe eval: using a trained model from its checkpoint alone
 * (docs/design.md §8). Raw inputs go through the same code as `data build` (datasets/); the
 * decoding and the evaluation are inference/'s. Every rank opens the session (experts
 * sharded); rank 0 holds the prompt and prints.
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inference.h"

static const char usage_generate[] =
    "usage: omnimoe generate CKPT --task NAME [--image FILE | --audio FILE | --text STR] "
    "[options]\n"
    "\n"
    "  --task NAME        the task to run (its kind says which input it takes)\n"
    "  --image FILE       image_to_text: a PNG or binary PGM/PPM; image_text_to_text: the\n"
    "                     same, several joined by ';', with --text\n"
    "  --audio FILE       audio_to_text: a WAV (PCM 16-bit); audio_text_to_text: with --text\n"
    "  --text STR         text_to_text: the input; text: the start of the text to continue;\n"
    "                     image_text_to_text, audio_text_to_text: the prompt (the question)\n"
    "  --max-new N        tokens to generate at most (default: until <eos>, within the "
    "context)\n"
    "  --temperature T    0 = greedy (default); > 0 samples from softmax(logits / T)\n"
    "  --top-k K          with a temperature: sample among the K likeliest tokens\n"
    "  --beam B           beam search of width B (length-normalised)\n"
    "  --seed S           the random stream of sampling (default 1)\n"
    "  --json             print the tokens as JSON instead of the text\n"
    "\n"
    "Prints the generated text (UTF-8). Runs on one process or under mpirun -np N.\n";

static const char usage_eval[] =
    "usage: omnimoe eval CKPT DATA.h5 [--tasks A,B] [--split val|train] [--limit N] "
    "[--json FILE]\n"
    "\n"
    "  --tasks A,B        evaluate these tasks (default: every task of DATA the model knows)\n"
    "  --split val|train  the split to evaluate (default val)\n"
    "  --limit N          the first N samples of each task (default: all)\n"
    "  --generate N       caption at most N samples per *_to_text task (default: all)\n"
    "  --show N           print the first N captions of each task next to their references\n"
    "  --json FILE        also write the results as JSON\n"
    "\n"
    "Per task: loss and next-token accuracy; *_to_text: exact match and character error\n"
    "rate of the greedy caption from the input alone; text: bits per byte; control: action\n"
    "accuracy under teacher forcing. Same numbers on any number of processes.\n";

/* The prompt of a task from a raw input (rank 0), exactly as `data build` serializes the
 * input part of a sample. */
typedef struct {
    int32_t *tok;
    uint8_t *patches;
    int64_t n;
} prompt_storage;

/* The patches of an --image (with `list`, several joined by ';') or an --audio clip into
 * ps->patches, as `data build` cuts them; *np: how many. */
static omni_status input_patches(const omni_tokenization *tk, const char *image, const char *audio,
                                 bool list, prompt_storage *ps, int64_t *np)
{
    omni_status st;
    if (image) {
        int32_t side = tk->image_size / tk->image_patch, n_img = 1;
        int32_t max_images = list ? omni_path_list_count(image) : 1;
        int64_t dim = (int64_t)tk->image_patch * tk->image_patch * tk->image_channels;
        if (!(ps->patches =
                  omni_alloc((int64_t)max_images * side * side * dim, 1, "image patches")))
            return OMNI_ERR_NOMEM;
        if (list) {
            st = omni_image_list_patches(image, NULL, tk->image_size, tk->image_channels,
                                         tk->image_patch, tk->image_resize, max_images, ps->patches,
                                         &n_img, NULL);
            if (st)
                return omni_fail_context(st, "--image: ");
        } else {
            st = omni_image_file_patches(image, tk->image_size, tk->image_channels, tk->image_patch,
                                         tk->image_resize, ps->patches, NULL);
            if (st)
                return st;
        }
        *np = (int64_t)n_img * side * side;
        return OMNI_OK;
    }
    const omni_audio_cfg *a = &tk->audio;
    *np = (int64_t)(a->mels / a->patch) * (a->frames / a->patch);
    float *db = omni_alloc((int64_t)a->mels * a->frames, sizeof *db, "spectrogram");
    uint8_t *bytes = omni_alloc((int64_t)a->mels * a->frames, 1, "spectrogram");
    ps->patches = omni_alloc(*np * a->patch * a->patch, 1, "audio patches");
    omni_logmel *lm = NULL;
    st = db && bytes && ps->patches ? omni_logmel_create(&lm, a) : OMNI_ERR_NOMEM;
    if (!st)
        st = omni_audio_file_patches(audio, a, lm, db, bytes, ps->patches);
    omni_logmel_free(lm);
    omni_free(db);
    omni_free(bytes);
    return st;
}

/* The prompt's tokens: np patches, the bytes of `text` (NULL: none), and <sep> if `sep`.
 * The caller has checked that they fit the context of T. */
static omni_status put_prompt(prompt_storage *ps, int64_t T, int64_t np, const char *text, bool sep)
{
    if (!(ps->tok = omni_alloc(T + 1, sizeof *ps->tok, "prompt")))
        return OMNI_ERR_NOMEM;
    ps->n = 0;
    for (int64_t i = 0; i < np; i++)
        ps->tok[ps->n++] = OMNI_PROMPT_PATCH;
    for (const char *c = text; c && *c; c++)
        ps->tok[ps->n++] = (uint8_t)*c; /* every byte is a text token (0..255) */
    if (sep)
        ps->tok[ps->n++] = OMNI_TOK_SEP;
    return OMNI_OK;
}

/* image_text_to_text, audio_text_to_text: the patches of the image(s) or clip, the prompt
 * bytes and <sep>, as `data build` serializes a sample's input. */
static omni_status make_prompted(const omni_infer *s, const char *image, const char *audio,
                                 const char *text, prompt_storage *ps)
{
    int64_t T = omni_infer_context(s), np = 0;
    omni_status st = input_patches(omni_infer_tokenization(s), image, audio, true, ps, &np);
    if (st)
        return st;
    int64_t len = (int64_t)strlen(text);
    if (1 + np + len + 1 > T)
        return omni_fail(OMNI_ERR_DATA,
                         "%lld patches and a prompt of %lld bytes do not fit the model's "
                         "context of %lld positions",
                         (long long)np, (long long)len, (long long)T);
    return put_prompt(ps, T, np, text, true);
}

static omni_status make_prompt(const omni_infer *s, int task, const char *image, const char *audio,
                               const char *text, prompt_storage *ps)
{
    const omni_tokenization *tk = omni_infer_tokenization(s);
    omni_task_kind kind = omni_infer_task_kind(s, task);
    const char *name = omni_infer_task_name(s, task);
    const char *want = kind == OMNI_KIND_IMAGE_TO_TEXT   ? "--image FILE"
                       : kind == OMNI_KIND_AUDIO_TO_TEXT ? "--audio FILE"
                       : kind == OMNI_KIND_CONTROL       ? NULL
                                                         : "--text STR";
    const char *given = image ? "--image" : audio ? "--audio" : text ? "--text" : NULL;
    if (!want)
        return omni_usage_error(
            usage_generate, "task %s is control: it acts in an environment (omnimoe act)", name);
    if (omni_kind_prompted(kind)) {
        bool img = kind == OMNI_KIND_IMAGE_TEXT_TO_TEXT;
        if ((img ? !image || audio : !audio || image) || !text)
            return omni_usage_error(
                usage_generate, "task %s is %s: it takes %s and --text STR (the prompt)", name,
                omni_task_kind_name(kind), img ? "--image FILE" : "--audio FILE");
        if (!*text)
            return omni_usage_error(usage_generate,
                                    "--text: the prompt is empty (task %s answers a question "
                                    "about its input: ask one)",
                                    name);
        return make_prompted(s, img ? image : NULL, img ? NULL : audio, text, ps);
    }
    if (text && (image || audio))
        return omni_usage_error(usage_generate,
                                "task %s is %s: it takes %s alone (no prompt beside it)", name,
                                omni_task_kind_name(kind), want);
    if (!given || strncmp(want, given, strlen(given)))
        return omni_usage_error(usage_generate, "task %s is %s: it takes %s%s%s", name,
                                omni_task_kind_name(kind), want, given ? ", not " : "",
                                given ? given : "");
    int64_t T = omni_infer_context(s);
    if (text) {
        int64_t len = (int64_t)strlen(text);
        if (1 + len + (kind == OMNI_KIND_TEXT_TO_TEXT) > T)
            return omni_fail(OMNI_ERR_DATA,
                             "--text: %lld bytes do not fit the model's context of %lld "
                             "positions",
                             (long long)len, (long long)T);
        return put_prompt(ps, T, 0, text, kind == OMNI_KIND_TEXT_TO_TEXT);
    }
    int64_t np = 0;
    omni_status st = input_patches(tk, image, audio, false, ps, &np);
    if (st)
        return st;
    if (1 + np + 1 > T)
        return omni_fail(OMNI_ERR_DATA, "%s: %lld patches do not fit the context of %lld",
                         image ? image : audio, (long long)np, (long long)T);
    return put_prompt(ps, T, np, NULL, true);
}

/* The generated tokens as text: bytes as they are, other tokens as <name>. */
static void print_text(const int32_t *tok, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        if (tok[i] < OMNI_TEXT_VOCAB)
            putchar(tok[i]);
        else if (tok[i] < OMNI_TOK_PAD)
            printf("<bin %d>", tok[i] - OMNI_TOK_BIN0);
        else
            printf("<%d>", tok[i]);
    }
    putchar('\n');
}

static void print_json(const char *task, const int32_t *tok, int64_t n)
{
    printf("{\"task\": \"%s\", \"tokens\": [", task);
    for (int64_t i = 0; i < n; i++)
        printf("%s%d", i ? ", " : "", tok[i]);
    printf("], \"text\": \"");
    for (int64_t i = 0; i < n; i++) {
        int c = tok[i];
        if (c >= OMNI_TEXT_VOCAB)
            continue;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c); /* bytes >= 0x80 pass through: the text is UTF-8 */
    }
    printf("\"}\n");
}

omni_status omni_cmd_generate(MPI_Comm comm, int argc, char **argv)
{
    static const struct option opts[] = {
        {"task", required_argument, NULL, 't'},    {"image", required_argument, NULL, 'i'},
        {"audio", required_argument, NULL, 'a'},   {"text", required_argument, NULL, 'x'},
        {"max-new", required_argument, NULL, 'm'}, {"temperature", required_argument, NULL, 'T'},
        {"top-k", required_argument, NULL, 'k'},   {"beam", required_argument, NULL, 'b'},
        {"seed", required_argument, NULL, 's'},    {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    const char *task = NULL, *image = NULL, *audio = NULL, *text = NULL;
    bool json = false;
    omni_decode_opts o;
    omni_decode_defaults(&o);
    int64_t v;
    omni_status st = OMNI_OK;
    opterr = 0;
    optind = 0;
    int c, inputs = 0;
    while (!st && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            task = optarg;
            break;
        case 'i':
            image = optarg, inputs++;
            break;
        case 'a':
            audio = optarg, inputs++;
            break;
        case 'x':
            text = optarg, inputs++;
            break;
        case 'm':
            if (!(st = omni_parse_int(usage_generate, "--max-new", optarg, 1, INT64_MAX, &v)))
                o.max_new = v;
            break;
        case 'T':
            st = omni_parse_real(usage_generate, "--temperature", optarg, 0.0, &o.temperature);
            break;
        case 'k':
            if (!(st = omni_parse_int(usage_generate, "--top-k", optarg, 0, INT64_MAX, &v)))
                o.top_k = v;
            break;
        case 'b':
            if (!(st = omni_parse_int(usage_generate, "--beam", optarg, 1, INT64_MAX, &v)))
                o.beam = v;
            break;
        case 's':
            if (!(st = omni_parse_int(usage_generate, "--seed", optarg, 0, INT64_MAX, &v)))
                o.seed = (uint64_t)v;
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            return omni_usage_help(usage_generate);
        default:
            return omni_option_error(usage_generate, "generate", argv);
        }
    }
    if (st)
        return st;
    if (optind >= argc)
        return omni_usage_error(usage_generate, "generate: no checkpoint given");
    if (optind + 1 < argc)
        return omni_usage_error(usage_generate, "generate: unexpected argument '%s'",
                                argv[optind + 1]);
    if (!task)
        return omni_usage_error(usage_generate, "generate: --task NAME is required");
    if (inputs > 2 || (inputs == 2 && !text) || (image && audio))
        return omni_usage_error(usage_generate,
                                "generate: give one input (--image, --audio or --text), or an "
                                "image or audio with --text for a prompted task");
    if (o.beam > 0 && o.temperature > 0)
        return omni_usage_error(usage_generate,
                                "generate: --beam searches greedily; it takes no --temperature");
    const char *path = argv[optind];
    omni_infer *s = NULL;
    if ((st = omni_infer_open(comm, path, o.beam > 0 ? o.beam : 1, &s)))
        return st;
    int t = omni_infer_find_task(s, task);
    prompt_storage ps = {0};
    int64_t T = omni_infer_context(s);
    int32_t *out = omni_alloc(T, sizeof *out, "generated tokens");
    int64_t n_out = 0;
    if (t < 0) {
        char names[1024] = "";
        for (int i = 0; i < omni_infer_n_tasks(s); i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
                     omni_infer_task_name(s, i));
        st = omni_usage_error(usage_generate, "generate: %s has no task '%s' (its tasks: %s)", path,
                              task, names);
    } else if (!out) {
        st = OMNI_ERR_NOMEM;
    } else if (omni_log_rank() == 0) {
        st = make_prompt(s, t, image, audio, text, &ps);
    }
    /* The prompt is rank 0's: a fault in it (a missing file) is every rank's failure. */
    st = omni_mpi_agree(comm, st);
    if (!st) {
        omni_prompt p = {.task = t, .id = 0, .n = ps.n, .tok = ps.tok, .patches = ps.patches};
        st = omni_infer_generate(s, &p, omni_log_rank() == 0 ? 1 : 0, &o, out, T, &n_out);
    }
    if (!st && omni_log_rank() == 0) {
        if (json)
            print_json(task, out, n_out);
        else
            print_text(out, n_out);
        fflush(stdout);
    }
    omni_free(out);
    omni_free(ps.tok);
    omni_free(ps.patches);
    omni_infer_close(s);
    return st;
}

omni_status omni_cmd_eval(MPI_Comm comm, int argc, char **argv)
{
    static const struct option opts[] = {
        {"tasks", required_argument, NULL, 't'},
        {"split", required_argument, NULL, 's'},
        {"limit", required_argument, NULL, 'l'},
        {"generate", required_argument, NULL, 'g'},
        {"json", required_argument, NULL, 'j'},
        {"batch", required_argument, NULL, 'b'},
        {"show", required_argument, NULL, 'w'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    omni_eval_opts o = {
        .tasks = NULL, .split = OMNI_SPLIT_VAL, .limit = 0, .generate = -1, .show = 0};
    const char *json = NULL;
    int64_t batch = 32, v;
    omni_status st = OMNI_OK;
    opterr = 0;
    optind = 0;
    int c;
    while (!st && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            o.tasks = optarg;
            break;
        case 's':
            if (!strcmp(optarg, "val"))
                o.split = OMNI_SPLIT_VAL;
            else if (!strcmp(optarg, "train"))
                o.split = OMNI_SPLIT_TRAIN;
            else
                return omni_usage_error(usage_eval, "--split '%s': expected val or train", optarg);
            break;
        case 'l':
            if (!(st = omni_parse_int(usage_eval, "--limit", optarg, 1, INT64_MAX, &v)))
                o.limit = v;
            break;
        case 'g':
            if (!(st = omni_parse_int(usage_eval, "--generate", optarg, 0, INT64_MAX, &v)))
                o.generate = v;
            break;
        case 'b':
            st = omni_parse_int(usage_eval, "--batch", optarg, 1, INT64_MAX, &batch);
            break;
        case 'w':
            if (!(st = omni_parse_int(usage_eval, "--show", optarg, 0, INT64_MAX, &v)))
                o.show = v;
            break;
        case 'j':
            json = optarg;
            break;
        case 'h':
            return omni_usage_help(usage_eval);
        default:
            return omni_option_error(usage_eval, "eval", argv);
        }
    }
    if (st)
        return st;
    if (optind + 2 > argc)
        return omni_usage_error(usage_eval, "eval: expected CKPT and DATA.h5");
    if (optind + 2 < argc)
        return omni_usage_error(usage_eval, "eval: unexpected argument '%s'", argv[optind + 2]);
    omni_infer *s = NULL;
    if ((st = omni_infer_open(comm, argv[optind], batch, &s)))
        return st;
    omni_eval_task r[OMNI_MAX_TASKS];
    int n = 0;
    double t0 = omni_now();
    st = omni_infer_eval(s, argv[optind + 1], &o, r, &n);
    if (!st && omni_log_rank() == 0) {
        omni_eval_print(stdout, r, n);
        printf("(%s split of %s, %.1f s)\n", o.split == OMNI_SPLIT_VAL ? "val" : "train",
               argv[optind + 1], omni_now() - t0);
        fflush(stdout);
        if (json)
            st = omni_eval_write_json(json, r, n);
    }
    st = omni_mpi_agree(comm, st);
    omni_infer_close(s);
    return st;
}
