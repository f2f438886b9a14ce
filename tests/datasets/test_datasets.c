/*
 * datasets: the exact serialization of each task kind from the fixtures of tests/data,
 * the sampler's packing and task frequencies, the cart-pole expert, a file written by
 * h5py, the tokenization and CSV (the signal known answers are in test_signal.c).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#include "test_util.h"

TestSuite(datasets, .fini = remove_temp_dir);

/* ---- serialization of the fixtures ------------------------------------------- */

static void build_fixtures(char *dir, size_t cap, char *out, size_t out_cap, ds_file *f)
{
    temp_dir(dir, cap);
    snprintf(out, out_cap, "%s/fx.h5", dir);
    char spec[1024];
    snprintf(spec, sizeof spec, "%s/tests/data/spec.yaml", source_dir());
    cr_assert_eq(omni_data_build(spec, out, -1, NULL), OMNI_OK, "%s", omni_error_message());
    cr_assert_eq(ds_read(out, f), OMNI_OK, "%s", omni_error_message());
}

static void expect_sample(const ds_pool *p, int64_t i, const int32_t *tok, const uint8_t *loss,
                          int64_t n)
{
    cr_assert_eq(p->off[i + 1] - p->off[i], n, "sample %lld has %lld elements, expected %lld",
                 (long long)i, (long long)(p->off[i + 1] - p->off[i]), (long long)n);
    for (int64_t j = 0; j < n; j++) {
        cr_assert_eq(p->tok[p->off[i] + j], tok[j], "element %lld: %d, expected %d", (long long)j,
                     p->tok[p->off[i] + j], tok[j]);
        cr_assert_eq(p->loss[p->off[i] + j], loss[j], "loss of element %lld", (long long)j);
    }
}

#define T0   OMNI_TOK_TASK0
#define SEP  OMNI_TOK_SEP
#define EOS  OMNI_TOK_EOS
#define P    OMNI_DS_PATCH
#define B(x) (OMNI_TOK_BIN0 + (x))

Test(datasets, each_kind_serializes_to_the_documented_tokens)
{
    char dir[64], out[128];
    ds_file f;
    build_fixtures(dir, sizeof dir, out, sizeof out, &f);
    cr_assert_eq(f.n_tasks, 5);
    {
        const int32_t t[] = {T0 + 0, 'h', 'i', '\n', EOS};
        const uint8_t l[] = {0, 1, 1, 1, 1};
        expect_sample(&f.tasks[0].split[0], 0, t, l, 5);
    }
    {
        const int32_t t[] = {T0 + 1, '1', '+', '1', SEP, '2', EOS};
        const uint8_t l[] = {0, 0, 0, 0, 0, 1, 1};
        expect_sample(&f.tasks[1].split[0], 0, t, l, 7);
        /* An RFC 4180 quoted field with a comma and doubled quotes. */
        const int32_t t2[] = {T0 + 1, 'a', ',', '"', 'b', '"', SEP, 'c', EOS};
        const uint8_t l2[] = {0, 0, 0, 0, 0, 0, 0, 1, 1};
        expect_sample(&f.tasks[1].split[0], 1, t2, l2, 9);
    }
    {
        const int32_t t[] = {T0 + 2, P, P, P, P, SEP, 'u', 'p', EOS};
        const uint8_t l[] = {0, 0, 0, 0, 0, 0, 1, 1, EOS ? 1 : 0};
        expect_sample(&f.tasks[2].split[0], 0, t, l, 9);
        /* ramp.pgm is already 4x4: its patches are its pixels in patch raster order. */
        static const uint8_t want[16] = {0,   16,  64,  80,  32,  48,  96,  112,
                                         128, 144, 192, 208, 160, 176, 224, 240};
        cr_assert_arr_eq(f.tasks[2].split[0].patch, want, 16);
        cr_assert_eq(f.tasks[2].split[0].patch[16], 255, "inverse.png starts at 255");
    }
    {
        const int32_t t[] = {T0 + 3, P, P, P, P, SEP, 'k', EOS};
        const uint8_t l[] = {0, 0, 0, 0, 0, 0, 1, 1};
        expect_sample(&f.tasks[3].split[0], 0, t, l, 8);
    }
    {
        /* Episode 0: obs 0 -> bin 512, action 0.5 -> 710; obs 1 -> 744, action -0.5 -> 313. */
        const int32_t t[] = {T0 + 4, B(512), SEP, B(710), B(744), SEP, B(313)};
        const uint8_t l[] = {0, 0, 0, 1, 0, 0, 1};
        expect_sample(&f.tasks[4].split[0], 0, t, l, 7);
        const int32_t t2[] = {T0 + 4, B(omni_value_bin(-1.0f)), SEP, B(512)};
        const uint8_t l2[] = {0, 0, 0, 1};
        expect_sample(&f.tasks[4].split[0], 1, t2, l2, 4);
        cr_assert_eq(f.tasks[4].obs_dim, 1);
        cr_assert_eq(f.tasks[4].discrete, 0);
    }
    ds_file_free(&f);
    remove(out);
    rmdir(dir);
}

Test(datasets, audio_fixture_spectrogram_has_the_tone_in_its_band)
{
    char dir[64], out[128];
    ds_file f;
    build_fixtures(dir, sizeof dir, out, sizeof out, &f);
    /* 4 mels at 8 kHz: centres ~ 370, 820, 1380, 2100 Hz (HTK); a 1 kHz tone is loudest in
     * band 1. Patch layout: patch (r, c) holds mels 2r..2r+1, frames 2c..2c+1. */
    const uint8_t *pt = f.tasks[3].split[0].patch;
    int band_val[4];
    for (int m = 0; m < 4; m++) {
        int r = m / 2, y = m % 2;
        band_val[m] = pt[(r * 2 + 0) * 4 + y * 2 + 0]; /* frame 0 */
    }
    cr_assert(band_val[1] == 255, "1 kHz band at full scale, got %d", band_val[1]);
    cr_assert(band_val[3] < band_val[1]);
    ds_file_free(&f);
    remove(out);
    rmdir(dir);
}

Test(datasets, split_is_deterministic_and_has_the_requested_fraction)
{
    ds_task t = {.val_fraction = 0.25};
    snprintf(t.name, sizeof t.name, "x");
    ds_pool all = {0};
    for (int i = 0; i < 100; i++) {
        int32_t tok[2] = {T0, i};
        uint8_t l[2] = {0, 1};
        cr_assert_eq(ds_pool_append(&all, tok, l, 2, NULL, 0, 0), OMNI_OK);
    }
    cr_assert_eq(ds_split(&t, &all, 3, 0), OMNI_OK);
    cr_assert_eq(t.split[OMNI_SPLIT_VAL].n, 25);
    cr_assert_eq(t.split[OMNI_SPLIT_TRAIN].n, 75);
    /* Order inside a split is input order. */
    for (int64_t i = 1; i < 75; i++)
        cr_assert(t.split[0].tok[2 * i + 1] > t.split[0].tok[2 * i - 1]);
    int32_t first_val = t.split[1].tok[1];
    for (int s = 0; s < 2; s++)
        ds_pool_free(&t.split[s]);
    for (int i = 0; i < 100; i++) {
        int32_t tok[2] = {T0, i};
        uint8_t l[2] = {0, 1};
        ds_pool_append(&all, tok, l, 2, NULL, 0, 0);
    }
    cr_assert_eq(ds_split(&t, &all, 3, 0), OMNI_OK);
    cr_assert_eq(t.split[1].tok[1], first_val, "same seed, same split");
    for (int s = 0; s < 2; s++)
        ds_pool_free(&t.split[s]);
}

/* ---- the sampler -------------------------------------------------------------- */

/* A synthetic dataset: text samples of 3..80 bytes, text_to_text, images (4x4 grey, patch
 * 2), and control episodes of 20 steps (obs 2, act 1: 81 elements > a 32 context). */
static void write_synthetic(const char *path)
{
    ds_file *f = calloc(1, sizeof *f);
    f->seed = 5;
    f->image_size = 4, f->image_channels = 1, f->image_patch = 2;
    const char *names[] = {"a", "b", "c", "d"};
    omni_task_kind kinds[] = {OMNI_KIND_TEXT, OMNI_KIND_TEXT_TO_TEXT, OMNI_KIND_IMAGE_TO_TEXT,
                              OMNI_KIND_CONTROL};
    omni_rng r;
    omni_rng_init(&r, 9, "synthetic", 0);
    for (int k = 0; k < 4; k++) {
        ds_task *t = &f->tasks[k];
        snprintf(t->name, sizeof t->name, "%s", names[k]);
        t->kind = kinds[k];
        t->index = k;
        t->val_fraction = 0.2;
        if (t->kind == OMNI_KIND_CONTROL)
            t->obs_dim = 2, t->act_dim = 1, t->discrete = 1;
        ds_task_geometry(f, t);
        f->n_tasks++;
        ds_pool all = {0};
        for (int i = 0; i < 50; i++) {
            uint8_t bytes[80];
            int len = 3 + (int)(omni_rng_u32(&r, (uint64_t)(k * 1000 + i)) % 78);
            for (int j = 0; j < len; j++)
                bytes[j] = (uint8_t)('a' + (i + j) % 26);
            if (k == 0) {
                ds_emit_text(&all, T0 + k, bytes, len, true);
            } else if (k == 1) {
                ds_emit_text_to_text(&all, T0 + k, bytes, len % 7 + 1, bytes + 1, len % 5 + 1);
            } else if (k == 2) {
                uint8_t patches[16];
                for (int j = 0; j < 16; j++)
                    patches[j] = (uint8_t)(i * 16 + j);
                ds_emit_patches_to_text(&all, T0 + k, patches, 4, 4, bytes, 3);
            } else {
                float obs[40];
                int32_t act[20];
                for (int j = 0; j < 40; j++)
                    obs[j] = (float)(j - 20) * 0.01f;
                for (int j = 0; j < 20; j++)
                    act[j] = (i + j) % 2;
                ds_emit_control(&all, T0 + k, 20, 2, obs, 1, NULL, act);
            }
        }
        cr_assert_eq(ds_split(t, &all, f->seed, t->patch_dim), OMNI_OK);
    }
    cr_assert_eq(ds_write(f, path), OMNI_OK, "%s", omni_error_message());
    ds_file_free(f);
    free(f);
}

static omni_sampler *open_synthetic(const char *dir, const char *tasks, int64_t context,
                                    double temperature)
{
    char path[256], yaml[1024];
    snprintf(path, sizeof path, "%s/syn.h5", dir);
    if (access(path, F_OK) != 0)
        write_synthetic(path);
    snprintf(yaml, sizeof yaml,
             "experiment: {name: t}\nmodel: {context: %lld}\n"
             "data: {files: [%s], tasks: %s, temperature: %g}\n",
             (long long)context, path, tasks, temperature);
    omni_experiment x;
    cr_assert_eq(omni_experiment_parse(&x, yaml, strlen(yaml), "test.yaml", NULL, 0), OMNI_OK, "%s",
                 omni_error_message());
    omni_sampler *s;
    cr_assert_eq(omni_sampler_open(&s, &x), OMNI_OK, "%s", omni_error_message());
    return s;
}

/* Check every invariant of a filled window; returns its loss positions. */
static int64_t check_window(const omni_sampler *s, const omni_batch *b, int64_t row)
{
    omni_data_dims d = omni_sampler_dims(s);
    int64_t p0 = row * b->context, losses = 0;
    bool padding = false;
    for (int64_t q = 0; q < b->context; q++) {
        int64_t p = p0 + q;
        if (b->kind[p] == OMNI_POS_PAD) {
            padding = true;
            cr_assert(b->segment[p] == -1 && b->task[p] == -1 && b->target[p] == -1 &&
                      !b->loss_mask[p] && b->token[p] == OMNI_TOK_PAD);
            continue;
        }
        cr_assert(!padding, "padding only at the end of a window");
        bool starts = q == 0 || b->segment[p] != b->segment[p - 1];
        cr_assert(b->task[p] >= 0 && b->task[p] < d.n_tasks);
        if (starts) {
            cr_assert_eq(b->segment[p], q == 0 ? 0 : b->segment[p - 1] + 1);
            cr_assert_eq(b->pos[p], 0);
            cr_assert_eq(b->kind[p], OMNI_POS_TOKEN);
            cr_assert_eq(b->token[p], OMNI_TOK_TASK0 + b->task[p], "a sample starts with <task>");
            cr_assert(b->in_prefix[p]);
        } else {
            cr_assert_eq(b->pos[p], b->pos[p - 1] + 1, "positions count up in a sample");
            cr_assert_eq(b->task[p], b->task[p - 1]);
            cr_assert(b->in_prefix[p] <= b->in_prefix[p - 1], "the prefix is a head");
            if (b->loss_mask[p - 1])
                cr_assert(!b->in_prefix[p], "a loss-bearing token is not in the prefix");
        }
        if (b->kind[p] == OMNI_POS_TOKEN) {
            cr_assert(b->token[p] >= 0 && b->token[p] < d.vocab && b->token[p] != OMNI_TOK_PAD);
        } else {
            cr_assert(b->kind[p] == OMNI_POS_IMAGE || b->kind[p] == OMNI_POS_AUDIO);
            cr_assert(b->patch_row[p] >= 0 && b->patch_row[p] < d.max_rows);
            cr_assert(b->patch_col[p] >= 0 && b->patch_col[p] < d.max_cols);
            int64_t dim = b->kind[p] == OMNI_POS_IMAGE ? d.image_patch_dim : d.audio_patch_dim;
            for (int64_t k = 0; k < dim; k++)
                cr_assert(fabsf(b->patch[p * b->patch_dim + k]) <= 1.0f / sqrtf(2.0f) + 1e-6f);
        }
        bool next_same = q + 1 < b->context && b->segment[p + 1] == b->segment[p] &&
                         b->kind[p + 1] != OMNI_POS_PAD;
        if (next_same && b->kind[p + 1] == OMNI_POS_TOKEN)
            cr_assert_eq(b->target[p], b->token[p + 1], "target is the next token");
        else
            cr_assert(b->target[p] == -1 && !b->loss_mask[p]);
        losses += b->loss_mask[p];
    }
    return losses;
}

/* The streaming build's split (a plan from the count alone) is ds_split's, sample for
 * sample, including ties of the 32-bit keys (n = 300000 has some). */
Test(datasets, split_plan_matches_the_split_of_a_whole_pool)
{
    const int64_t ns[] = {1, 2, 7, 100, 3001, 300000};
    const double fr[] = {0.0, 0.1, 0.5, 0.9};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (size_t c = 0; c < sizeof fr / sizeof fr[0]; c++) {
            int64_t n = ns[a];
            ds_task t = {.name = "plan", .val_fraction = fr[c]};
            ds_pool all = {0};
            for (int64_t i = 0; i < n; i++) {
                int32_t tok[3] = {(int32_t)(i & 0xff), (int32_t)(i >> 8 & 0xff),
                                  (int32_t)(i >> 16 & 0xff)};
                uint8_t loss[3] = {0, 1, 1};
                cr_assert_eq(ds_pool_append(&all, tok, loss, 3, NULL, 0, 0), OMNI_OK);
            }
            cr_assert_eq(ds_split(&t, &all, 7, 0), OMNI_OK);
            ds_split_plan p;
            cr_assert_eq(ds_split_plan_make(&p, "plan", n, fr[c], 7), OMNI_OK);
            int64_t k[OMNI_SPLIT_COUNT] = {0, 0};
            for (int64_t i = 0; i < n; i++) {
                int sp = ds_split_plan_is_val(&p, i) ? OMNI_SPLIT_VAL : OMNI_SPLIT_TRAIN;
                const ds_pool *q = &t.split[sp];
                cr_assert(k[sp] < q->n, "n %lld fraction %g: sample %lld", (long long)n, fr[c],
                          (long long)i);
                int64_t o = q->off[k[sp]++];
                cr_assert(q->tok[o] == (int32_t)(i & 0xff) &&
                              q->tok[o + 1] == (int32_t)(i >> 8 & 0xff),
                          "n %lld fraction %g: sample %lld went to the other split", (long long)n,
                          fr[c], (long long)i);
            }
            cr_assert_eq(k[OMNI_SPLIT_VAL], t.split[OMNI_SPLIT_VAL].n);
            ds_pool_free(&t.split[0]);
            ds_pool_free(&t.split[1]);
        }
}

Test(datasets, sampler_windows_are_valid_and_counted)
{
    char dir[64];
    temp_dir(dir, sizeof dir);
    omni_sampler *s = open_synthetic(dir, "{}", 32, 1.0);
    omni_data_dims d = omni_sampler_dims(s);
    cr_assert_eq(d.n_tasks, 4);
    cr_assert_eq(d.vocab, OMNI_TOK_TASK0 + 4);
    cr_assert_eq(d.image_patch_dim, 4);
    cr_assert_eq(d.max_rows, 2);
    omni_batch b;
    cr_assert_eq(omni_batch_alloc(&b, 4, 32, d.image_patch_dim), OMNI_OK);
    int64_t total = 0;
    for (int64_t step = 0; step < 200; step++)
        for (int64_t row = 0; row < 4; row++) {
            int64_t n = omni_sampler_fill(s, OMNI_SPLIT_TRAIN, 1, step, row, &b, row);
            cr_assert_eq(n, check_window(s, &b, row), "returned loss count matches the mask");
            total += n;
        }
    cr_assert(total > 0);
    for (int t = 0; t < 4; t++) {
        const omni_task_info *ti = omni_sampler_task(s, t);
        int64_t covered = 0;
        for (int64_t i = 0; i < ti->n_val_windows; i++) {
            omni_sampler_fill_val(s, t, i, &b, 0);
            check_window(s, &b, 0);
            for (int64_t q = 0; q < 32; q++)
                covered += b.pos[q] == 0 && b.segment[q] >= 0;
        }
        cr_assert_eq(covered, ti->n_samples[OMNI_SPLIT_VAL], "each val sample once (task %d)", t);
    }
    omni_batch_free(&b);
    omni_sampler_close(s);
}

Test(datasets, sampler_plan_is_a_pure_function_of_step_and_slot)
{
    char dir[64];
    temp_dir(dir, sizeof dir);
    omni_sampler *s = open_synthetic(dir, "{}", 32, 1.0);
    omni_batch a, b;
    omni_data_dims d = omni_sampler_dims(s);
    cr_assert_eq(omni_batch_alloc(&a, 8, 32, d.image_patch_dim), OMNI_OK);
    cr_assert_eq(omni_batch_alloc(&b, 8, 32, d.image_patch_dim), OMNI_OK);
    /* "One process" fills slots 0..7 into rows 0..7; "two processes" fill slots 4..7 into
     * rows 0..3 of their own batch: the same windows. */
    for (int64_t slot = 0; slot < 8; slot++)
        omni_sampler_fill(s, OMNI_SPLIT_TRAIN, 11, 42, slot, &a, slot);
    for (int64_t slot = 4; slot < 8; slot++)
        omni_sampler_fill(s, OMNI_SPLIT_TRAIN, 11, 42, slot, &b, slot - 4);
    for (int64_t slot = 4; slot < 8; slot++) {
        int64_t pa = slot * 32, pb = (slot - 4) * 32;
        cr_assert_arr_eq(a.token + pa, b.token + pb, 32 * sizeof(int32_t));
        cr_assert_arr_eq(a.target + pa, b.target + pb, 32 * sizeof(int32_t));
        cr_assert_arr_eq(a.patch + pa * a.patch_dim, b.patch + pb * b.patch_dim,
                         32 * (size_t)a.patch_dim * sizeof(float));
    }
    cr_assert(memcmp(a.token, a.token + 32, 32 * sizeof(int32_t)) != 0, "slots differ");
    omni_sampler_fill(s, OMNI_SPLIT_TRAIN, 11, 43, 0, &b, 0);
    cr_assert(memcmp(a.token, b.token, 32 * sizeof(int32_t)) != 0, "steps differ");
    omni_batch_free(&a);
    omni_batch_free(&b);
    omni_sampler_close(s);
}

/* Over many draws each task's share of samples is within 4 standard deviations of
 * weight^(1/T) / sum (binomial: sqrt(p (1 - p) / N)); N here is about 9,000. */
static void check_frequencies(const char *tasks, double temperature, const double *want)
{
    char dir[64];
    temp_dir(dir, sizeof dir);
    omni_sampler *s = open_synthetic(dir, tasks, 32, temperature);
    omni_batch b;
    cr_assert_eq(omni_batch_alloc(&b, 1, 32, omni_sampler_dims(s).image_patch_dim), OMNI_OK);
    int64_t count[4] = {0}, n = 0;
    for (int64_t step = 0; step < 4000; step++) {
        omni_sampler_fill(s, OMNI_SPLIT_TRAIN, 3, step, 0, &b, 0);
        for (int64_t q = 0; q < 32; q++)
            if (b.segment[q] >= 0 && b.pos[q] == 0)
                count[b.task[q]]++, n++;
    }
    cr_assert(n > 5000, "%lld draws", (long long)n);
    for (int t = 0; t < 4; t++) {
        double f = (double)count[t] / (double)n;
        double tol = 4.0 * sqrt(want[t] * (1.0 - want[t]) / (double)n);
        cr_assert(fabs(f - want[t]) <= tol, "task %d: frequency %.4f, expected %.4f +- %.4f", t, f,
                  want[t], tol);
    }
    omni_batch_free(&b);
    omni_sampler_close(s);
}

Test(datasets, sampler_task_frequencies_follow_weights)
{
    /* Draw frequencies are per sample, so long samples (d: control) do not crowd out
     * short ones. */
    const double want[4] = {0.1, 0.2, 0.3, 0.4};
    check_frequencies("{a: 1, b: 2, c: 3, d: 4}", 1.0, want);
}

Test(datasets, sampler_temperature_flattens_weights)
{
    /* weights 1, 4, 9, 16 at T = 2 -> 1, 2, 3, 4. */
    const double want[4] = {0.1, 0.2, 0.3, 0.4};
    check_frequencies("{a: 1, b: 4, c: 9, d: 16}", 2.0, want);
}

Test(datasets, sampler_remaps_task_tokens_to_experiment_order)
{
    char dir[64];
    temp_dir(dir, sizeof dir);
    omni_sampler *s = open_synthetic(dir, "{d: 1, a: 1}", 32, 1.0);
    cr_assert_eq(omni_sampler_n_tasks(s), 2);
    cr_assert_str_eq(omni_sampler_task(s, 0)->name, "d");
    omni_batch b;
    cr_assert_eq(omni_batch_alloc(&b, 1, 32, 4), OMNI_OK);
    bool saw[2] = {false, false};
    for (int64_t step = 0; step < 50; step++) {
        omni_sampler_fill(s, OMNI_SPLIT_TRAIN, 1, step, 0, &b, 0);
        check_window(s, &b, 0);
        for (int64_t q = 0; q < 32; q++)
            if (b.segment[q] >= 0 && b.pos[q] == 0) {
                cr_assert_eq(b.token[q], OMNI_TOK_TASK0 + b.task[q]);
                saw[b.task[q]] = true;
                /* Control windows start at step boundaries: position 1 is an
                 * observation bin, and every 4th after it a <sep>. */
                if (b.task[q] == 0 && q + 3 < 32 && b.segment[q + 3] == b.segment[q])
                    cr_assert_eq(b.token[q + 3], OMNI_TOK_SEP);
            }
    }
    cr_assert(saw[0] && saw[1]);
    omni_batch_free(&b);
    omni_sampler_close(s);
}

/* ---- cart-pole ---------------------------------------------------------------- */

static int32_t expert(void *ctx, const float *obs, int64_t t)
{
    (void)ctx, (void)t;
    return omni_cartpole_expert(obs);
}

static int32_t always_left(void *ctx, const float *obs, int64_t t)
{
    (void)ctx, (void)obs, (void)t;
    return 0;
}

Test(datasets, cartpole_expert_balances_and_a_bad_policy_falls)
{
    for (uint64_t e = 0; e < 20; e++)
        cr_assert_eq(omni_cartpole_rollout(1, e, 500, expert, NULL, NULL, NULL), 500,
                     "episode %llu", (unsigned long long)e);
    int64_t t = omni_cartpole_rollout(1, 0, 500, always_left, NULL, NULL, NULL);
    cr_assert(t < 50, "always-left lasted %lld steps", (long long)t);
    omni_cartpole a, b;
    omni_cartpole_reset(&a, 1, 3);
    omni_cartpole_reset(&b, 1, 3);
    cr_assert(a.x == b.x && a.theta_dot == b.theta_dot, "resets are deterministic");
    cr_assert(fabs(a.x) <= 0.05 && fabs(a.theta) <= 0.05);
}

/* ---- a file written by h5py --------------------------------------------------- */

Test(datasets, reads_the_file_written_by_h5py)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/h5py_written.h5", source_dir());
    ds_file f;
    cr_assert_eq(ds_read(path, &f), OMNI_OK, "%s", omni_error_message());
    cr_assert_eq(f.n_tasks, 2);
    cr_assert_str_eq(f.tasks[0].name, "echo");
    cr_assert_eq(f.tasks[0].kind, OMNI_KIND_TEXT_TO_TEXT);
    const int32_t t[] = {T0, 'h', 'i', SEP, 'h', 'i', EOS};
    const uint8_t l[] = {0, 0, 0, 0, 1, 1, 1};
    expect_sample(&f.tasks[0].split[OMNI_SPLIT_TRAIN], 0, t, l, 7);
    cr_assert_eq(f.tasks[1].kind, OMNI_KIND_IMAGE_TO_TEXT);
    cr_assert_eq(f.tasks[1].patch_dim, 4);
    ds_file_free(&f);
}

/* ---- the demo, through the demo experiment ----------------------------------- */

/* The demo dataset, made in a new temporary directory (dir; the file's path in out), and a
 * sampler over it with the demo experiment (configs/demo.yaml, parsed into *x). */
static omni_sampler *open_demo(char *dir, size_t dir_cap, char *out, size_t out_cap,
                               omni_experiment *x)
{
    char cfg[1024], set[256];
    temp_dir(dir, dir_cap);
    snprintf(out, out_cap, "%s/demo.h5", dir);
    cr_assert_eq(omni_data_demo(out, 1, NULL), OMNI_OK, "%s", omni_error_message());
    snprintf(cfg, sizeof cfg, "%s/configs/demo.yaml", source_dir());
    char *text;
    size_t len;
    cr_assert_eq(omni_read_file(cfg, &text, &len), OMNI_OK);
    snprintf(set, sizeof set, "data.files=[%s]", out);
    const char *sets[] = {set};
    cr_assert_eq(omni_experiment_parse(x, text, len, cfg, sets, 1), OMNI_OK, "%s",
                 omni_error_message());
    free(text);
    omni_sampler *s;
    cr_assert_eq(omni_sampler_open(&s, x), OMNI_OK, "%s", omni_error_message());
    return s;
}

Test(datasets, demo_feeds_the_demo_experiment, .timeout = 60)
{
    char dir[64], out[128];
    omni_experiment x;
    omni_sampler *s = open_demo(dir, sizeof dir, out, sizeof out, &x);
    omni_data_dims d = omni_sampler_dims(s);
    cr_assert_eq(d.n_tasks, 6);
    cr_assert_eq(d.vocab, OMNI_TOK_TASK0 + 6);
    cr_assert_eq(d.image_patch_dim, 8 * 8 * 3);
    cr_assert_eq(d.audio_patch_dim, 8 * 8);
    cr_assert_eq(d.max_rows, 4);
    cr_assert_eq(d.max_cols, 8);
    cr_assert_str_eq(omni_sampler_task(s, 3)->name, "cartpole");
    omni_batch b;
    cr_assert_eq(omni_batch_alloc(&b, x.data.batch, x.model.context, d.image_patch_dim), OMNI_OK);
    double loss_norm = 0;
    for (int64_t slot = 0; slot < b.n_seq; slot++)
        loss_norm += (double)omni_sampler_fill(s, OMNI_SPLIT_TRAIN, 1, 0, slot, &b, slot);
    for (int64_t slot = 0; slot < b.n_seq; slot++)
        check_window(s, &b, slot);
    cr_assert(loss_norm > 0);
    for (int t = 0; t < 6; t++) {
        const omni_task_info *ti = omni_sampler_task(s, t);
        cr_assert(ti->n_val_windows > 0);
        omni_sampler_fill_val(s, t, ti->n_val_windows - 1, &b, 0);
        check_window(s, &b, 0);
    }
    omni_batch_free(&b);
    omni_sampler_close(s);
    remove(out);
    rmdir(dir);
}

/* FNV-1a over bytes, continuing h. */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

static uint64_t hash_window(uint64_t h, const omni_batch *b, int64_t row)
{
    int64_t p0 = row * b->context, n = b->context;
    h = fnv(h, b->kind + p0, (size_t)n);
    h = fnv(h, b->token + p0, (size_t)n * sizeof *b->token);
    h = fnv(h, b->patch + p0 * b->patch_dim, (size_t)(n * b->patch_dim) * sizeof *b->patch);
    h = fnv(h, b->patch_row + p0, (size_t)n * sizeof *b->patch_row);
    h = fnv(h, b->patch_col + p0, (size_t)n * sizeof *b->patch_col);
    h = fnv(h, b->pos + p0, (size_t)n * sizeof *b->pos);
    h = fnv(h, b->segment + p0, (size_t)n * sizeof *b->segment);
    h = fnv(h, b->in_prefix + p0, (size_t)n);
    h = fnv(h, b->target + p0, (size_t)n * sizeof *b->target);
    h = fnv(h, b->loss_mask + p0, (size_t)n);
    return fnv(h, b->task + p0, (size_t)n * sizeof *b->task);
}

/* The windows of the demo experiment (train: 40 steps of its batch; every validation
 * window), hashed: their value before the dataset file became windowed reads
 * (issue 15), so the demo's training trajectory is unchanged by the file format. The
 * figures are those of format 1 with the demo of issue 17 (six tasks, shapes_qa and
 * gridworld added): measured on branch ofa with this test, before the merge; the training
 * windows' hash and the count of loss-bearing positions again when configs/demo.yaml's task
 * weights changed (branch ofa2; the validation windows, which do not depend on the weights,
 * kept their hash). */
Test(datasets, demo_windows_are_those_of_format_1, .timeout = 60)
{
    char dir[64], out[128];
    omni_experiment x;
    omni_sampler *s = open_demo(dir, sizeof dir, out, sizeof out, &x);
    omni_data_dims d = omni_sampler_dims(s);
    omni_batch b;
    cr_assert_eq(omni_batch_alloc(&b, x.data.batch, x.model.context, d.image_patch_dim), OMNI_OK);
    uint64_t h_train = 14695981039346656037ull, h_val = h_train;
    int64_t losses = 0;
    for (int64_t step = 0; step < 40; step++)
        for (int64_t slot = 0; slot < b.n_seq; slot++) {
            losses += omni_sampler_fill(s, OMNI_SPLIT_TRAIN, 1, step, slot, &b, slot);
            h_train = hash_window(h_train, &b, slot);
        }
    for (int t = 0; t < omni_sampler_n_tasks(s); t++)
        for (int64_t i = 0; i < omni_sampler_task(s, t)->n_val_windows; i++) {
            losses += omni_sampler_fill_val(s, t, i, &b, 0);
            h_val = hash_window(h_val, &b, 0);
        }
    cr_assert_eq(h_train, UINT64_C(0xc7b62fc71b9e38a9), "train windows hash to %016llx",
                 (unsigned long long)h_train);
    cr_assert_eq(h_val, UINT64_C(0x88a2c1299f9f571b), "validation windows hash to %016llx",
                 (unsigned long long)h_val);
    cr_assert_eq(losses, 32362, "%lld loss-bearing positions", (long long)losses);
    omni_batch_free(&b);
    omni_sampler_close(s);
    remove(out);
    rmdir(dir);
}

Test(datasets, sampler_takes_tasks_from_several_files)
{
    char dir[64], fx[128], yaml[1024], spec[1024];
    temp_dir(dir, sizeof dir);
    omni_sampler_close(open_synthetic(dir, "{}", 32, 1.0)); /* writes dir/syn.h5 */
    snprintf(fx, sizeof fx, "%s/fx.h5", dir);
    snprintf(spec, sizeof spec, "%s/tests/data/spec.yaml", source_dir());
    cr_assert_eq(omni_data_build(spec, fx, -1, NULL), OMNI_OK, "%s", omni_error_message());
    snprintf(yaml, sizeof yaml,
             "experiment: {name: t}\nmodel: {context: 32}\n"
             "data: {files: [%s/syn.h5, %s], tasks: {qa: 1, a: 1, ctrl: 1}}\n",
             dir, fx);
    omni_experiment x;
    cr_assert_eq(omni_experiment_parse(&x, yaml, strlen(yaml), "t.yaml", NULL, 0), OMNI_OK);
    omni_sampler *s;
    cr_assert_eq(omni_sampler_open(&s, &x), OMNI_OK, "%s", omni_error_message());
    cr_assert_eq(omni_sampler_n_tasks(s), 3);
    cr_assert_str_eq(omni_sampler_task(s, 1)->name, "a");
    cr_assert_str_eq(omni_sampler_task(s, 0)->file, fx);
    omni_sampler_close(s);
    /* A task in none of the files, and a file listed twice, are data errors. */
    snprintf(yaml, sizeof yaml,
             "experiment: {name: t}\ndata: {files: [%s/syn.h5], tasks: {nope: 1}}\n", dir);
    cr_assert_eq(omni_experiment_parse(&x, yaml, strlen(yaml), "t.yaml", NULL, 0), OMNI_OK);
    cr_assert_eq(omni_sampler_open(&s, &x), OMNI_ERR_DATA);
    cr_assert(strstr(omni_error_message(), "task nope of data.tasks is in none"));
    snprintf(yaml, sizeof yaml, "experiment: {name: t}\ndata: {files: [%s/syn.h5, %s/syn.h5]}\n",
             dir, dir);
    cr_assert_eq(omni_experiment_parse(&x, yaml, strlen(yaml), "t.yaml", NULL, 0), OMNI_OK);
    cr_assert_eq(omni_sampler_open(&s, &x), OMNI_ERR_DATA);
    cr_assert(strstr(omni_error_message(), "is the file of data.files[0]"), "%s",
              omni_error_message());
}

/* ---- the tokenization ------------------------------------------------------------ */

Test(datasets, tokenization_is_the_task_table_in_sampler_order)
{
    char dir[64];
    temp_dir(dir, sizeof dir);
    omni_sampler *s = open_synthetic(dir, "{d: 1, a: 1}", 32, 1.0);
    const omni_tokenization *t = omni_sampler_tokenization(s);
    cr_assert_eq(t->n_tasks, 2);
    cr_assert_eq(t->vocab, OMNI_TOK_TASK0 + 2);
    cr_assert_eq(t->tok_task0, OMNI_TOK_TASK0);
    cr_assert_eq(t->tok_eos, OMNI_TOK_EOS);
    cr_assert_eq(t->bins, OMNI_BINS);
    cr_assert_str_eq(t->tasks[0].name, "d");
    cr_assert_eq(t->tasks[0].kind, OMNI_KIND_CONTROL);
    cr_assert_eq(t->tasks[0].index, 0);
    cr_assert_eq(t->tasks[0].token, OMNI_TOK_TASK0);
    cr_assert(t->tasks[0].obs_dim == 2 && t->tasks[0].act_dim == 1 && t->tasks[0].discrete == 1);
    cr_assert_str_eq(t->tasks[1].name, "a");
    cr_assert_eq(t->tasks[1].token, OMNI_TOK_TASK0 + 1);
    cr_assert(t->tasks[1].obs_dim == 0 && t->tasks[1].act_dim == 0);
    cr_assert_eq(t->image_size, 0, "no image task selected: no image settings");
    cr_assert_eq(omni_tokenization_find(t, "a"), &t->tasks[1]);
    cr_assert_null(omni_tokenization_find(t, "b"));
    omni_tokenization d_a = *t;
    omni_sampler_close(s);

    /* All tasks, in file order: the image settings come with task c. */
    s = open_synthetic(dir, "{}", 32, 1.0);
    t = omni_sampler_tokenization(s);
    cr_assert_eq(t->n_tasks, 4);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(t->tasks[i].index, i);
        cr_assert_str_eq(t->tasks[i].name, omni_sampler_task(s, i)->name);
    }
    cr_assert(t->image_size == 4 && t->image_channels == 1 && t->image_patch == 2);
    char why[512];
    cr_assert(omni_tokenization_same(t, t, why, sizeof why));
    cr_assert_str_eq(why, "");
    cr_assert_not(omni_tokenization_same(&d_a, t, why, sizeof why));
    cr_assert(strstr(why, "task d has index 0 in the checkpoint, 3 in the data"), "%s", why);
    cr_assert(strstr(why, "task b (index 1) is not in the checkpoint"), "%s", why);
    cr_assert(strstr(why, "image_size 0 in the checkpoint, 4 in the data"), "%s", why);
    /* Images fitted another way (image.resize) are other data. */
    omni_tokenization padded = *t;
    padded.image_resize = OMNI_RESIZE_PAD;
    cr_assert_not(omni_tokenization_same(&padded, t, why, sizeof why));
    cr_assert_str_eq(why, "image_resize pad in the checkpoint, stretch in the data");
    omni_sampler_close(s);
}

Test(datasets, tasks_of_two_files_with_other_image_settings_are_refused)
{
    char dir[64], path[128], yaml[1024];
    temp_dir(dir, sizeof dir);
    omni_sampler_close(open_synthetic(dir, "{}", 32, 1.0)); /* writes dir/syn.h5 */
    /* Images of 2x2 in one patch of 2x2: patches as long as syn.h5's (4x4 in 2x2). */
    ds_file *f = calloc(1, sizeof *f);
    f->image_size = 2, f->image_channels = 1, f->image_patch = 2;
    ds_task *t = &f->tasks[0];
    snprintf(t->name, sizeof t->name, "small");
    t->kind = OMNI_KIND_IMAGE_TO_TEXT;
    ds_task_geometry(f, t);
    f->n_tasks = 1;
    ds_pool all = {0};
    const uint8_t patch[4] = {1, 2, 3, 4}, text[3] = {'a', 'b', 'c'};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(ds_emit_patches_to_text(&all, T0, patch, 1, 4, text, 3), OMNI_OK);
    cr_assert_eq(ds_split(t, &all, 1, t->patch_dim), OMNI_OK);
    snprintf(path, sizeof path, "%s/small.h5", dir);
    cr_assert_eq(ds_write(f, path), OMNI_OK, "%s", omni_error_message());
    ds_file_free(f);
    free(f);
    snprintf(yaml, sizeof yaml, "experiment: {name: t}\ndata: {files: [%s/syn.h5, %s]}\n", dir,
             path);
    omni_experiment x;
    cr_assert_eq(omni_experiment_parse(&x, yaml, strlen(yaml), "t.yaml", NULL, 0), OMNI_OK);
    omni_sampler *s;
    cr_assert_eq(omni_sampler_open(&s, &x), OMNI_ERR_DATA);
    cr_assert(strstr(omni_error_message(), "small.h5: task small has images of size 2"), "%s",
              omni_error_message());
    cr_assert(strstr(omni_error_message(), "share the image settings"), "%s", omni_error_message());
}

Test(datasets, tasks_of_two_files_with_other_image_resize_are_refused)
{
    char dir[64], path[128], yaml[1024];
    temp_dir(dir, sizeof dir);
    omni_sampler_close(open_synthetic(dir, "{}", 32, 1.0)); /* writes dir/syn.h5 (stretch) */
    /* The same image settings as syn.h5 (4x4 in 2x2), padded instead of stretched. */
    ds_file *f = calloc(1, sizeof *f);
    f->image_size = 4, f->image_channels = 1, f->image_patch = 2;
    f->image_resize = OMNI_RESIZE_PAD;
    ds_task *t = &f->tasks[0];
    snprintf(t->name, sizeof t->name, "padded");
    t->kind = OMNI_KIND_IMAGE_TO_TEXT;
    ds_task_geometry(f, t);
    f->n_tasks = 1;
    ds_pool all = {0};
    const uint8_t patches[16] = {0}, text[3] = {'a', 'b', 'c'};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(ds_emit_patches_to_text(&all, T0, patches, 4, 4, text, 3), OMNI_OK);
    cr_assert_eq(ds_split(t, &all, 1, t->patch_dim), OMNI_OK);
    snprintf(path, sizeof path, "%s/padded.h5", dir);
    cr_assert_eq(ds_write(f, path), OMNI_OK, "%s", omni_error_message());
    ds_file_free(f);
    free(f);
    snprintf(yaml, sizeof yaml, "experiment: {name: t}\ndata: {files: [%s/syn.h5, %s]}\n", dir,
             path);
    omni_experiment x;
    cr_assert_eq(omni_experiment_parse(&x, yaml, strlen(yaml), "t.yaml", NULL, 0), OMNI_OK);
    omni_sampler *s;
    cr_assert_eq(omni_sampler_open(&s, &x), OMNI_ERR_DATA);
    cr_assert(strstr(omni_error_message(), "padded.h5: task padded has images of size 4, 1 "
                                           "channel(s), patch 2, resize pad, but"),
              "%s", omni_error_message());
    cr_assert(strstr(omni_error_message(), "resize stretch; the tasks of one experiment share"),
              "%s", omni_error_message());
}

/* ---- CSV ---------------------------------------------------------------------- */

typedef struct {
    char got[8][2][32];
    int64_t lines[8];
    int n;
} csv_rows;

static omni_status collect(void *ctx, char **f, int nf, int64_t line)
{
    csv_rows *r = ctx;
    cr_assert_eq(nf, 2);
    snprintf(r->got[r->n][0], 32, "%s", f[0]);
    snprintf(r->got[r->n][1], 32, "%s", f[1]);
    r->lines[r->n++] = line;
    return OMNI_OK;
}

Test(datasets, csv_follows_rfc4180)
{
    const char text[] = "\xef\xbb\xbfpath,text\r\n"
                        "a.png,\"two\nlines\"\r\n"
                        "\r\n"
                        "\"q\"\"uote\",\"x,y\"\n"
                        "last,row";
    csv_rows r = {0};
    cr_assert_eq(ds_csv_parse("m.csv", text, sizeof text - 1, collect, &r), OMNI_OK, "%s",
                 omni_error_message());
    cr_assert_eq(r.n, 4);
    cr_assert_str_eq(r.got[0][0], "path", "the byte order mark is skipped");
    cr_assert_str_eq(r.got[1][1], "two\nlines");
    cr_assert_str_eq(r.got[2][0], "q\"uote");
    cr_assert_str_eq(r.got[2][1], "x,y");
    cr_assert_str_eq(r.got[3][1], "row");
    cr_assert_eq(r.lines[2], 5, "line numbers count the newline inside quotes");
    cr_assert_eq(ds_csv_parse("m.csv", "a,\"b\n", 5, collect, &r), OMNI_ERR_DATA);
    cr_assert(strstr(omni_error_message(), "m.csv:1: unterminated quoted field"));
}
