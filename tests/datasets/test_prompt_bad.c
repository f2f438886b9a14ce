/*
 * datasets, bad input of the OFA and Gato kinds (issue 17), through the omnimoe binary
 * ($OMNIMOE): each must exit with status 2, name the file, the row (or step) and the
 * fault, and leave no output file. (The helpers are
 * bad_util.h's, shared with test_datasets_bad.c.)
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bad_util.h"

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/omni-pbad-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(prompt_bad, .init = setup, .fini = teardown);

static void put_pgm(const char *name, int side)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    fprintf(f, "P5\n%d %d\n255\n", side, side);
    for (int i = 0; i < side * side; i++)
        fputc(i * 7 % 256, f);
    fclose(f);
}

#define VQA_SPEC(resize)                                                                           \
    "image: {size: 4, channels: 1, patch: 2" resize "}\n"                                          \
    "tasks:\n  - {name: vqa, kind: image_text_to_text, manifest: vqa.csv, val_fraction: 0}\n"
#define PIX_SPEC(resize)                                                                           \
    "image: {size: 4, channels: 1, patch: 2" resize "}\n"                                          \
    "tasks:\n  - {name: pix, kind: control, episodes: ep.h5, val_fraction: 0}\n"

Test(prompt_bad, empty_prompt)
{
    put_pgm("a.pgm", 4);
    put_text("vqa.csv", "a.pgm,colour?,red\na.pgm,,red\n");
    expect_build_fails(VQA_SPEC(""), "vqa.csv:2:", "the prompt is empty");
}

Test(prompt_bad, manifest_with_the_columns_of_image_to_text)
{
    put_pgm("a.pgm", 4);
    put_text("vqa.csv", "path,text\na.pgm,red\n");
    expect_build_fails(VQA_SPEC(""), "vqa.csv:1:", "2 columns, expected 3 (path,prompt,text)");
}

Test(prompt_bad, joined_paths_with_one_missing)
{
    put_pgm("a.pgm", 4);
    put_pgm("b.pgm", 4);
    put_text("vqa.csv", "a.pgm;b.pgm,which?,b\na.pgm;;b.pgm,which?,a\n");
    expect_build_fails(VQA_SPEC(""), "vqa.csv:2:", "image path 2 of 3 in 'a.pgm;;b.pgm' is empty");
}

Test(prompt_bad, joined_paths_naming_a_file_that_is_not_there)
{
    put_pgm("a.pgm", 4);
    put_text("vqa.csv", "a.pgm;gone.pgm,which?,b\n");
    expect_build_fails(VQA_SPEC(""),
                       "vqa.csv:1: image 2 of 2: ", "gone.pgm: cannot read the image");
}

Test(prompt_bad, image_of_another_size_under_resize_error)
{
    put_pgm("a.pgm", 4);
    put_pgm("big.pgm", 6);
    put_text("vqa.csv", "a.pgm,q?,a\nbig.pgm,q?,b\n");
    expect_build_fails(VQA_SPEC(", resize: error"), "vqa.csv:2: big.pgm: image is 6x6",
                       "expected 4x4 (image.size)");
}

/* An episodes file with images [T_img, side, side] uint8 and actions [5, 1] int32. */
static void put_pixel_episodes(int64_t T_img, int side)
{
    char path[256];
    snprintf(path, sizeof path, "%s/ep.h5", dir);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    uint8_t px[8 * 8 * 8] = {0};
    int32_t act[5] = {0, 1, 0, 1, 0};
    int64_t off[2] = {0, 5};
    hsize_t di[3] = {(hsize_t)T_img, (hsize_t)side, (hsize_t)side}, d2[2] = {5, 1}, d1 = 2;
    hid_t si = H5Screate_simple(3, di, NULL), s2 = H5Screate_simple(2, d2, NULL),
          s1 = H5Screate_simple(1, &d1, NULL);
    hid_t d = H5Dcreate2(f, "images", H5T_STD_U8LE, si, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, px);
    H5Dclose(d);
    d = H5Dcreate2(f, "actions", H5T_STD_I32LE, s2, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, act);
    H5Dclose(d);
    d = H5Dcreate2(f, "episode_offsets", H5T_STD_I64LE, s1, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, off);
    H5Dclose(d);
    H5Sclose(si);
    H5Sclose(s2);
    H5Sclose(s1);
    H5Fclose(f);
}

Test(prompt_bad, images_whose_steps_differ_from_actions)
{
    put_pixel_episodes(6, 4);
    expect_build_fails(PIX_SPEC(""), "ep.h5: images has 6 steps but actions has 5", NULL);
}

Test(prompt_bad, episode_images_of_another_size_under_resize_error)
{
    put_pixel_episodes(5, 8);
    expect_build_fails(PIX_SPEC(", resize: error"), "ep.h5: images[0]: image is 8x8",
                       "expected 4x4 (image.size)");
}

Test(prompt_bad, episodes_with_neither_observations_nor_images)
{
    put_pixel_episodes(5, 4);
    char path[256];
    snprintf(path, sizeof path, "%s/ep.h5", dir);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "images", H5P_DEFAULT);
    H5Fclose(f);
    expect_build_fails(PIX_SPEC(""), "ep.h5: missing dataset observations", "images");
}

Test(prompt_bad, episode_images_of_another_size_are_stretched_by_default)
{
    put_pixel_episodes(5, 8);
    put_text("spec.yaml", PIX_SPEC(""));
    const char *err;
    int rc = run("data build spec.yaml --out out.h5", &err);
    cr_assert_eq(rc, 0, "%s", err);
    rc = run("data info out.h5 > info.txt", &err);
    cr_assert_eq(rc, 0, "%s", err);
}
