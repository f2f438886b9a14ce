/*
 * datasets: the OFA and Gato kinds (issue 17). Known answers of the builder for
 * image_text_to_text (one image and several joined by ';'), audio_text_to_text and control
 * from pixels (images instead of and beside observations); the order of the elements; the
 * sampler's windows (patch positions restart at each image and each step; a long pixel
 * episode is cut at a step boundary); the cart-pole picture.
 */
#include <criterion/criterion.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#include "test_util.h"

TestSuite(prompt, .fini = remove_temp_dir);

#define T0   OMNI_TOK_TASK0
#define SEP  OMNI_TOK_SEP
#define EOS  OMNI_TOK_EOS
#define P    OMNI_DS_PATCH
#define B(x) (OMNI_TOK_BIN0 + (x))

static char dir[64];

static void put_text(const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

/* A 4x4 grey PGM whose pixel i is base + i. */
static void put_pgm(const char *name, int base)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    fprintf(f, "P5\n4 4\n255\n");
    for (int i = 0; i < 16; i++)
        fputc(base + i, f);
    fclose(f);
}

/* An episodes file of two episodes (3 and 2 steps): images [5, 4, 4] (step t's pixel i is
 * 10 t + i), actions [5, 1] int32 (t % 2), observations [5, 1] f32 (0) when with_obs. */
static void put_pixel_episodes(const char *name, bool with_obs, int64_t T_images)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    uint8_t px[6][4][4];
    int32_t act[5];
    float obs[5] = {0};
    int64_t off[3] = {0, 3, 5};
    for (int t = 0; t < 6; t++)
        for (int i = 0; i < 16; i++)
            px[t][i / 4][i % 4] = (uint8_t)(10 * t + i);
    for (int t = 0; t < 5; t++)
        act[t] = t % 2;
    hsize_t di[3] = {(hsize_t)T_images, 4, 4}, d2[2] = {5, 1}, d1 = 3;
    hid_t si = H5Screate_simple(3, di, NULL), s2 = H5Screate_simple(2, d2, NULL),
          s1 = H5Screate_simple(1, &d1, NULL);
    hid_t d = H5Dcreate2(f, "images", H5T_STD_U8LE, si, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, px);
    H5Dclose(d);
    d = H5Dcreate2(f, "actions", H5T_STD_I32LE, s2, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, act);
    H5Dclose(d);
    if (with_obs) {
        d = H5Dcreate2(f, "observations", H5T_IEEE_F32LE, s2, H5P_DEFAULT, H5P_DEFAULT,
                       H5P_DEFAULT);
        H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, obs);
        H5Dclose(d);
    }
    d = H5Dcreate2(f, "episode_offsets", H5T_STD_I64LE, s1, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, off);
    H5Dclose(d);
    H5Sclose(si);
    H5Sclose(s2);
    H5Sclose(s1);
    H5Fclose(f);
}

static void expect_sample(const ds_pool *p, int64_t i, const int32_t *tok, const uint8_t *loss,
                          int64_t n)
{
    cr_assert_eq(p->off[i + 1] - p->off[i], n, "sample %lld has %lld elements, expected %lld",
                 (long long)i, (long long)(p->off[i + 1] - p->off[i]), (long long)n);
    for (int64_t j = 0; j < n; j++) {
        cr_assert_eq(p->tok[p->off[i] + j], tok[j], "sample %lld element %lld: %d, expected %d",
                     (long long)i, (long long)j, p->tok[p->off[i] + j], tok[j]);
        cr_assert_eq(p->loss[p->off[i] + j], loss[j], "loss of sample %lld element %lld",
                     (long long)i, (long long)j);
    }
}

/* The fixtures of every new path, built into dir/out.h5 and read back. */
static void build_all(ds_file *f)
{
    temp_dir(dir, sizeof dir);
    put_pgm("a.pgm", 0);
    put_pgm("b.pgm", 100);
    put_text("vqa.csv", "path,prompt,text\n"
                        "a.pgm,colour?,red\n"
                        "a.pgm;b.pgm,which?,b\n");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp '%s/tests/data/wav/tone.wav' '%s/tone.wav'", source_dir(), dir);
    cr_assert_eq(system(cmd), 0);
    put_text("aqa.csv", "tone.wav,pitch?,k\n");
    put_pixel_episodes("pix.h5", false, 5);
    put_pixel_episodes("both.h5", true, 5);
    put_text("spec.yaml",
             "seed: 3\nimage: {size: 4, channels: 1, patch: 2}\n"
             "audio: {sample_rate: 8000, mels: 4, frames: 4, patch: 2, n_fft: 64, hop: 32}\n"
             "tasks:\n"
             "  - {name: vqa, kind: image_text_to_text, manifest: vqa.csv, val_fraction: 0}\n"
             "  - {name: aqa, kind: audio_text_to_text, manifest: aqa.csv, val_fraction: 0}\n"
             "  - {name: pix, kind: control, episodes: pix.h5, val_fraction: 0}\n"
             "  - {name: both, kind: control, episodes: both.h5, val_fraction: 0}\n");
    char spec[128], out[128];
    snprintf(spec, sizeof spec, "%s/spec.yaml", dir);
    snprintf(out, sizeof out, "%s/out.h5", dir);
    cr_assert_eq(omni_data_build(spec, out, -1, NULL), OMNI_OK, "%s", omni_error_message());
    cr_assert_eq(ds_read(out, f), OMNI_OK, "%s", omni_error_message());
}

Test(prompt, image_text_to_text_is_patches_prompt_sep_answer)
{
    ds_file f;
    build_all(&f);
    const ds_pool *p = &f.tasks[0].split[OMNI_SPLIT_TRAIN];
    cr_assert_eq(f.tasks[0].kind, OMNI_KIND_IMAGE_TEXT_TO_TEXT);
    cr_assert_eq(p->n, 2);
    const int32_t t0[] = {T0,  P,   P,   P,   P,   'c', 'o', 'l', 'o',
                          'u', 'r', '?', SEP, 'r', 'e', 'd', EOS};
    const uint8_t l0[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1};
    expect_sample(p, 0, t0, l0, 17);
    /* Two images joined by ';': 8 patches, a's then b's, then the prompt. */
    const int32_t t1[] = {T0, P, P, P, P, P, P, P, P, 'w', 'h', 'i', 'c', 'h', '?', SEP, 'b', EOS};
    const uint8_t l1[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1};
    expect_sample(p, 1, t1, l1, 18);
    cr_assert_eq(p->poff[1], 4);
    cr_assert_eq(p->poff[2], 12);
    /* a.pgm's first patch is its pixels 0, 1, 4, 5; b's the same plus 100. */
    const uint8_t a0[4] = {0, 1, 4, 5}, b0[4] = {100, 101, 104, 105};
    cr_assert_arr_eq(p->patch + 4 * 4, a0, 4);
    cr_assert_arr_eq(p->patch + 8 * 4, b0, 4);
    ds_file_free(&f);
}

Test(prompt, audio_text_to_text_is_patches_prompt_sep_answer)
{
    ds_file f;
    build_all(&f);
    const ds_pool *p = &f.tasks[1].split[OMNI_SPLIT_TRAIN];
    const int32_t t[] = {T0 + 1, P, P, P, P, 'p', 'i', 't', 'c', 'h', '?', SEP, 'k', EOS};
    const uint8_t l[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1};
    expect_sample(p, 0, t, l, 14);
    cr_assert_eq(f.tasks[1].patch_dim, 4);
    ds_file_free(&f);
}

Test(prompt, pixel_control_steps_are_patches_obs_sep_action)
{
    ds_file f;
    build_all(&f);
    const ds_task *pix = &f.tasks[2], *both = &f.tasks[3];
    cr_assert_eq(pix->images, 1);
    cr_assert_eq(pix->obs_dim, 0);
    cr_assert_eq(pix->discrete, 1);
    cr_assert_eq(both->images, 1);
    cr_assert_eq(both->obs_dim, 1);
    /* Episode 0, three steps: images instead of observations. */
    const int32_t t[] = {T0 + 2, P,   P,    P, P, SEP, B(0), P,   P,   P,
                         P,      SEP, B(1), P, P, P,   P,    SEP, B(0)};
    uint8_t l[19] = {0};
    l[6] = l[12] = l[18] = 1;
    expect_sample(&pix->split[0], 0, t, l, 19);
    /* Step t's first patch is pixels 0, 1, 4, 5 of image t (10 t + i); episode 1 starts at
     * step 3. */
    for (int s = 0; s < 3; s++) {
        const uint8_t want[4] = {(uint8_t)(10 * s), (uint8_t)(10 * s + 1), (uint8_t)(10 * s + 4),
                                 (uint8_t)(10 * s + 5)};
        cr_assert_arr_eq(pix->split[0].patch + s * 4 * 4, want, 4, "step %d", s);
    }
    cr_assert_eq(pix->split[0].patch[pix->split[0].poff[1] * 4], 30, "episode 1 starts at step 3");
    /* Beside observations: patches, the observation's bin, <sep>, the action. */
    const int32_t t2[] = {T0 + 3, P, P, P, P, B(512), SEP, B(1), P, P, P, P, B(512), SEP, B(0)};
    uint8_t l2[15] = {0};
    l2[7] = l2[14] = 1;
    expect_sample(&both->split[0], 1, t2, l2, 15);
    ds_file_free(&f);
}

Test(prompt, tokenization_carries_pixel_control_and_the_kinds)
{
    ds_file f;
    build_all(&f);
    char path[128], yaml[512];
    snprintf(path, sizeof path, "%s/out.h5", dir);
    snprintf(yaml, sizeof yaml,
             "experiment: {name: t}\nmodel: {context: 32}\ndata: {files: [%s]}\n", path);
    omni_experiment x;
    cr_assert_eq(omni_experiment_parse(&x, yaml, strlen(yaml), "t.yaml", NULL, 0), OMNI_OK);
    omni_sampler *s;
    cr_assert_eq(omni_sampler_open(&s, &x), OMNI_OK, "%s", omni_error_message());
    const omni_tokenization *tk = omni_sampler_tokenization(s);
    cr_assert_eq(tk->tasks[0].kind, OMNI_KIND_IMAGE_TEXT_TO_TEXT);
    cr_assert_eq(tk->tasks[1].kind, OMNI_KIND_AUDIO_TEXT_TO_TEXT);
    cr_assert_eq(tk->tasks[2].images, 1);
    cr_assert_eq(tk->tasks[2].obs_dim, 0);
    cr_assert_eq(tk->tasks[0].images, 0);
    cr_assert_eq(tk->image_size, 4);
    cr_assert_eq(tk->audio.mels, 4);
    omni_data_dims d = omni_sampler_dims(s);
    cr_assert_eq(d.image_patch_dim, 4);
    cr_assert_eq(d.audio_patch_dim, 4);
    omni_sampler_close(s);
    ds_file_free(&f);
}

/* The window of `task` in a sampler over out.h5 with only that task. */
static omni_sampler *open_one(const char *task, int64_t context)
{
    char path[128], yaml[512];
    snprintf(path, sizeof path, "%s/out.h5", dir);
    snprintf(yaml, sizeof yaml,
             "experiment: {name: t}\nmodel: {context: %lld}\ndata: {files: [%s], tasks: {%s: "
             "1.0}}\n",
             (long long)context, path, task);
    omni_experiment x;
    cr_assert_eq(omni_experiment_parse(&x, yaml, strlen(yaml), "t.yaml", NULL, 0), OMNI_OK, "%s",
                 omni_error_message());
    omni_sampler *s;
    cr_assert_eq(omni_sampler_open(&s, &x), OMNI_OK, "%s", omni_error_message());
    return s;
}

Test(prompt, sampler_restarts_patch_positions_at_each_image)
{
    ds_file f;
    build_all(&f);
    ds_file_free(&f);
    omni_sampler *s = open_one("vqa", 64);
    omni_batch b;
    cr_assert_eq(omni_batch_alloc(&b, 1, 64, 4), OMNI_OK);
    /* Fill windows until one starts with the two-image sample (18 elements). */
    bool seen = false;
    for (int64_t step = 0; step < 50 && !seen; step++) {
        omni_sampler_fill(s, OMNI_SPLIT_TRAIN, 1, step, 0, &b, 0);
        if (b.kind[8] != OMNI_POS_IMAGE)
            continue;
        seen = true;
        static const int32_t row[8] = {0, 0, 1, 1, 0, 0, 1, 1}, col[8] = {0, 1, 0, 1, 0, 1, 0, 1};
        for (int q = 1; q <= 8; q++) {
            cr_assert_eq(b.kind[q], OMNI_POS_IMAGE);
            cr_assert_eq(b.patch_row[q], row[q - 1], "position %d", q);
            cr_assert_eq(b.patch_col[q], col[q - 1], "position %d", q);
            cr_assert(b.in_prefix[q], "the images are in the prefix");
        }
        /* The prompt is in the prefix too; the answer is not, and bears the loss. */
        cr_assert_eq(b.token[9], 'w');
        cr_assert(b.in_prefix[15] && b.token[15] == SEP);
        cr_assert_eq(b.target[15], 'b');
        cr_assert(b.loss_mask[15]);
        cr_assert(!b.loss_mask[14], "no loss on the prompt");
        cr_assert(!b.in_prefix[16]);
    }
    cr_assert(seen, "no window started with the two-image sample");
    omni_batch_free(&b);
    omni_sampler_close(s);
}

Test(prompt, sampler_cuts_a_long_pixel_episode_at_a_step_boundary)
{
    ds_file f;
    build_all(&f);
    ds_file_free(&f);
    /* A context of 13: <task> and two steps of 6 (4 patches, <sep>, action) fit; episode 0
     * (1 + 18 elements) is longer, so it starts at a random step. */
    omni_sampler *s = open_one("pix", 13);
    omni_batch b;
    cr_assert_eq(omni_batch_alloc(&b, 1, 13, 4), OMNI_OK);
    int starts[3] = {0};
    for (int64_t step = 0; step < 200; step++) {
        omni_sampler_fill(s, OMNI_SPLIT_TRAIN, 1, step, 0, &b, 0);
        cr_assert_eq(b.token[0], T0);
        /* After <task>: a whole step, its first patch at row 0, col 0. */
        for (int q = 1; q <= 4; q++) {
            cr_assert_eq(b.kind[q], OMNI_POS_IMAGE, "step %lld position %d", (long long)step, q);
            cr_assert_eq(b.patch_row[q], (q - 1) / 2);
            cr_assert_eq(b.patch_col[q], (q - 1) % 2);
        }
        cr_assert_eq(b.token[5], SEP);
        cr_assert(b.target[5] == B(0) || b.target[5] == B(1), "<sep> predicts the action");
        cr_assert(b.loss_mask[5], "the action bears the loss");
        if (b.segment[7] == 0) {
            cr_assert_eq(b.kind[7], OMNI_POS_IMAGE, "the next step's patches restart");
            cr_assert_eq(b.patch_row[7], 0);
            cr_assert_eq(b.patch_col[7], 0);
        }
        /* Which step it starts at: the first patch byte is 10 t, normalised. */
        float v = b.patch[1 * 4];
        for (int t = 0; t < 3; t++)
            if (fabsf(v - omni_patch_value((uint8_t)(10 * t), 2)) < 1e-6f)
                starts[t]++;
    }
    cr_assert(starts[0] > 0 && starts[1] > 0, "windows start at steps 0 and 1 (%d, %d, %d)",
              starts[0], starts[1], starts[2]);
    omni_batch_free(&b);
    omni_sampler_close(s);
}

Test(prompt, cartpole_picture_shows_the_pole_lean)
{
    omni_cartpole env;
    omni_cartpole_reset(&env, 1, 0);
    env.x = 0, env.theta = 0.1;
    uint8_t right[16 * 16], left[16 * 16], upright[16 * 16 * 3];
    omni_cartpole_render(&env, 16, 1, right);
    env.theta = -0.1;
    omni_cartpole_render(&env, 16, 1, left);
    env.theta = 0.0;
    omni_cartpole_render(&env, 16, 3, upright);
    /* The top rows: more ink right of the centre when the pole leans right. */
    double r = 0, l = 0;
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 16; x++) {
            double w = x < 8 ? -1.0 : 1.0;
            r += w * right[y * 16 + x];
            l += w * left[y * 16 + x];
        }
    cr_assert_gt(r, 0.0);
    cr_assert_lt(l, 0.0);
    /* Symmetric when upright; the three channels are equal. */
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 16; x++) {
            cr_assert_eq(upright[(y * 16 + x) * 3], upright[(y * 16 + 15 - x) * 3], "(%d, %d)", x,
                         y);
            cr_assert_eq(upright[(y * 16 + x) * 3 + 2], upright[(y * 16 + x) * 3]);
        }
}
