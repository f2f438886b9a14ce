/*
 * datasets, bad input: each corrupted raw input or dataset file is run through the
 * omnimoe binary ($OMNIMOE); the command must exit with status 2, print a message that
 * names the file and the fault, and leave no output file (nor its temporary).
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <hdf5.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bad_util.h"
#include "datasets.h"

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/omni-bad-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

#define QA_SPEC "tasks:\n  - {name: qa, kind: text_to_text, manifest: qa.csv, val_fraction: 0.1}\n"
#define IMG_SPEC                                                                                   \
    "image: {size: 4, channels: 1, patch: 2}\n"                                                    \
    "tasks:\n  - {name: pics, kind: image_to_text, manifest: images.csv, val_fraction: 0}\n"
#define WAV_SPEC                                                                                   \
    "audio: {sample_rate: 8000, mels: 4, frames: 4, patch: 2, n_fft: 64, hop: 32}\n"               \
    "tasks:\n  - {name: snd, kind: audio_to_text, manifest: audio.csv, val_fraction: 0}\n"
#define CTRL_SPEC "tasks:\n  - {name: ctrl, kind: control, episodes: ep.h5, val_fraction: 0}\n"

TestSuite(datasets, .init = setup, .fini = teardown);

Test(datasets, build_missing_manifest)
{
    expect_build_fails(QA_SPEC, "qa.csv", "cannot read the manifest");
}

Test(datasets, build_manifest_row_with_wrong_column_count)
{
    put_text("qa.csv", "1+1,2\n2+2,4,extra\n");
    expect_build_fails(QA_SPEC, "qa.csv:2:", "3 columns, expected 2");
}

Test(datasets, build_manifest_unterminated_quote)
{
    put_text("qa.csv", "1+1,2\n\"2+2,4\n3+3,6\n");
    expect_build_fails(QA_SPEC, "qa.csv:2:", "unterminated quoted field");
}

Test(datasets, build_empty_task)
{
    put_text("qa.csv", "input,target\n");
    expect_build_fails(QA_SPEC, "task qa is empty", "qa.csv");
}

Test(datasets, build_image_that_is_not_an_image)
{
    put_text("x.png", "hello, I am text\n");
    put_text("images.csv", "x.png,a cat\n");
    expect_build_fails(IMG_SPEC, "x.png", "not a PNG or binary PGM/PPM");
}

Test(datasets, build_image_missing)
{
    put_text("images.csv", "path,text\nnowhere.png,a cat\n");
    expect_build_fails(IMG_SPEC, "images.csv:2:", "nowhere.png: cannot read the image");
}

Test(datasets, build_pgm_that_is_16_bit)
{
    const char hdr[] = "P5\n2 2\n65535\n";
    char buf[64];
    memcpy(buf, hdr, sizeof hdr - 1);
    memset(buf + sizeof hdr - 1, 0x7f, 8);
    put("deep.pgm", buf, sizeof hdr - 1 + 8);
    put_text("images.csv", "deep.pgm,deep\n");
    expect_build_fails(IMG_SPEC, "deep.pgm", "expected 8-bit");
}

Test(datasets, build_png_that_is_16_bit)
{
    png_image pi;
    memset(&pi, 0, sizeof pi);
    pi.version = PNG_IMAGE_VERSION;
    pi.width = pi.height = 2;
    pi.format = PNG_FORMAT_LINEAR_Y;
    uint16_t px[4] = {0, 1000, 20000, 65535};
    char path[256];
    snprintf(path, sizeof path, "%s/deep.png", dir);
    cr_assert(png_image_write_to_file(&pi, path, 0, px, 0, NULL));
    put_text("images.csv", "deep.png,deep\n");
    expect_build_fails(IMG_SPEC, "deep.png", "16-bit PNG");
}

Test(datasets, build_truncated_pgm)
{
    put_text("short.pgm", "P5\n4 4\n255\nabc");
    put_text("images.csv", "short.pgm,short\n");
    expect_build_fails(IMG_SPEC, "short.pgm", "truncated");
}

/* A WAV header with the given format tag and bits per sample, and 8 data bytes. */
static void put_wav(const char *name, uint16_t format, uint16_t bits, uint32_t data_len)
{
    uint8_t h[52] = {'R',  'I',  'F', 'F', 44, 0, 0, 0, 'W', 'A', 'V',  'E',  'f', 'm',
                     't',  ' ',  16,  0,   0,  0, 0, 0, 1,   0,   0x40, 0x1f, 0,   0,
                     0x80, 0x3e, 0,   0,   2,  0, 0, 0, 'd', 'a', 't',  'a'};
    h[20] = (uint8_t)format, h[21] = (uint8_t)(format >> 8);
    h[34] = (uint8_t)bits;
    h[40] = (uint8_t)data_len, h[41] = (uint8_t)(data_len >> 8);
    put(name, h, sizeof h);
}

Test(datasets, build_wav_that_is_8_bit)
{
    put_wav("b8.wav", 1, 8, 8);
    put_text("audio.csv", "b8.wav,x\n");
    expect_build_fails(WAV_SPEC, "b8.wav", "expected PCM (1) 16-bit");
}

Test(datasets, build_wav_that_is_float)
{
    put_wav("f32.wav", 3, 32, 8);
    put_text("audio.csv", "f32.wav,x\n");
    expect_build_fails(WAV_SPEC, "f32.wav", "WAV format 3");
}

Test(datasets, build_wav_truncated)
{
    put_wav("cut.wav", 1, 16, 4000);
    put_text("audio.csv", "cut.wav,x\n");
    expect_build_fails(WAV_SPEC, "cut.wav", "truncated");
}

Test(datasets, build_wav_that_is_not_riff)
{
    put_text("no.wav", "ID3 this is an mp3, honest");
    put_text("audio.csv", "no.wav,x\n");
    expect_build_fails(WAV_SPEC, "no.wav", "not a RIFF/WAVE file");
}

/* An episodes file: obs [T, 1], actions [T, 1] float, offsets as given. */
static void put_episodes(const float *obs, int64_t T, const int64_t *off, int64_t n_off)
{
    char path[256];
    snprintf(path, sizeof path, "%s/ep.h5", dir);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t d2[2] = {(hsize_t)T, 1}, d1 = (hsize_t)n_off;
    hid_t s2 = H5Screate_simple(2, d2, NULL), s1 = H5Screate_simple(1, &d1, NULL);
    hid_t a =
        H5Dcreate2(f, "observations", H5T_IEEE_F32LE, s2, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(a, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, obs);
    H5Dclose(a);
    a = H5Dcreate2(f, "actions", H5T_IEEE_F32LE, s2, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(a, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, obs);
    H5Dclose(a);
    a = H5Dcreate2(f, "episode_offsets", H5T_STD_I64LE, s1, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(a, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, off);
    H5Dclose(a);
    H5Sclose(s1);
    H5Sclose(s2);
    H5Fclose(f);
}

Test(datasets, build_episode_with_nan)
{
    float obs[3] = {0.1f, NAN, 0.2f};
    int64_t off[2] = {0, 3};
    put_episodes(obs, 3, off, 2);
    expect_build_fails(CTRL_SPEC, "ep.h5", "observations[1][0] is not finite");
}

Test(datasets, build_episode_with_infinity)
{
    float obs[3] = {0.1f, 0.2f, -INFINITY};
    int64_t off[2] = {0, 3};
    put_episodes(obs, 3, off, 2);
    expect_build_fails(CTRL_SPEC, "ep.h5", "observations[2][0] is not finite");
}

Test(datasets, build_episode_offsets_that_do_not_match_the_arrays)
{
    float obs[3] = {0.1f, 0.2f, 0.3f};
    int64_t off[3] = {0, 2, 5};
    put_episodes(obs, 3, off, 3);
    expect_build_fails(CTRL_SPEC, "ep.h5", "episode_offsets runs from 0 to 5, expected 0 to 3");
}

Test(datasets, build_spec_with_unknown_key)
{
    put_text("qa.csv", "1+1,2\n");
    expect_build_fails("seed: 1\ntasks:\n  - {name: qa, kind: text_to_text, manifest: qa.csv, "
                       "val_fraction: 0.1, shuffle: true}\n",
                       "spec.yaml:3:", "unknown key shuffle");
}

Test(datasets, build_spec_with_unknown_kind)
{
    expect_build_fails("tasks:\n  - {name: v, kind: video, manifest: v.csv, val_fraction: 0}\n",
                       "spec.yaml:2:", "kind is \"video\"");
}

Test(datasets, build_spec_with_bad_yaml)
{
    expect_build_fails("tasks: [\n", "spec.yaml:", "YAML syntax error");
}

/* ---- image.resize: images of another size than image.size ----------------------- */

/* A grey w x h PGM, every pixel 200. */
static void put_pgm(const char *name, int w, int h)
{
    char buf[256];
    int n = snprintf(buf, sizeof buf, "P5\n%d %d\n255\n", w, h);
    cr_assert(n > 0 && n + w * h <= (int)sizeof buf);
    memset(buf + n, 200, (size_t)(w * h));
    put(name, buf, (size_t)(n + w * h));
}

/* Three images for a 4x4 spec (patch 2): one 4x4, one 8x4 (wide), one 2x6 (tall). */
static void put_three_images(void)
{
    put_pgm("ok.pgm", 4, 4);
    put_pgm("wide.pgm", 8, 4);
    put_pgm("tall.pgm", 2, 6);
    put_text("images.csv", "path,text\nok.pgm,ok\nwide.pgm,wide\ntall.pgm,tall\n");
}

#define RESIZE_SPEC(mode)                                                                          \
    "image: {size: 4, channels: 1, patch: 2" mode "}\n"                                            \
    "tasks:\n  - {name: pics, kind: image_to_text, manifest: images.csv, val_fraction: 0}\n"

/* Build spec.yaml into out.h5 (expecting success); its stdout, malloc'ed. */
static char *build_ok(const char *spec)
{
    put_text("spec.yaml", spec);
    const char *err;
    int rc = run("data build spec.yaml --out out.h5", &err);
    cr_assert_eq(rc, 0, "exit status %d; stderr: %s", rc, err);
    char path[256], *out;
    size_t len;
    snprintf(path, sizeof path, "%s/stdout.txt", dir);
    cr_assert_eq(omni_read_file(path, &out, &len), OMNI_OK);
    return out;
}

/* The 3 images' pixels back from out.h5 (4 patches of 2x2 each, raster order), as
 * px[image][y][x]. */
static void read_pixels(uint8_t px[3][4][4])
{
    char path[256];
    snprintf(path, sizeof path, "%s/out.h5", dir);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(f >= 0);
    hid_t d = H5Dopen2(f, "/tasks/pics/train/patches", H5P_DEFAULT);
    cr_assert(d >= 0);
    uint8_t patches[12][4];
    cr_assert(H5Dread(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, patches) >= 0);
    H5Dclose(d);
    H5Fclose(f);
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 4; k++)
            for (int j = 0; j < 4; j++)
                px[i][(k / 2) * 2 + j / 2][(k % 2) * 2 + j % 2] = patches[i * 4 + k][j];
}

static void expect_info_says(const char *want)
{
    const char *err;
    cr_assert_eq(run("data info out.h5", &err), 0, "%s", err);
    char path[256], *out;
    size_t len;
    snprintf(path, sizeof path, "%s/stdout.txt", dir);
    cr_assert_eq(omni_read_file(path, &out, &len), OMNI_OK);
    cr_assert(strstr(out, want), "data info lacks \"%s\": %s", want, out);
    free(out);
}

Test(datasets, build_image_resize_stretch_is_the_default_and_counted)
{
    put_three_images();
    char *out = build_ok(RESIZE_SPEC(""));
    cr_assert(strstr(out, "pics: 2 of 3 images are not 4x4: stretched to 4x4 (image.resize: "
                          "stretch;"),
              "%s", out);
    free(out);
    uint8_t px[3][4][4];
    read_pixels(px);
    for (int i = 0; i < 3; i++)
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 4; x++)
                cr_assert_eq(px[i][y][x], 200, "image %d pixel (%d, %d)", i, x, y);
    expect_info_says("images: 4x4, 1 channel, patch 2, resize stretch\n");
}

Test(datasets, build_image_resize_pad_keeps_the_aspect_ratio)
{
    put_three_images();
    char *out = build_ok(RESIZE_SPEC(", resize: pad"));
    cr_assert(strstr(out, "pics: 2 of 3 images are not 4x4: resized to fit and padded with black "
                          "to 4x4, aspect ratio kept (image.resize: pad)"),
              "%s", out);
    free(out);
    uint8_t px[3][4][4];
    read_pixels(px);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++) {
            cr_assert_eq(px[0][y][x], 200, "ok.pgm is untouched");
            /* 8x4 -> 4x2, rows 1..2 of the canvas; 2x6 -> 1x4 (1.33 rounded), column 1. */
            cr_assert_eq(px[1][y][x], y == 1 || y == 2 ? 200 : 0, "wide.pgm (%d, %d)", x, y);
            cr_assert_eq(px[2][y][x], x == 1 ? 200 : 0, "tall.pgm (%d, %d)", x, y);
        }
    expect_info_says("images: 4x4, 1 channel, patch 2, resize pad\n");
}

Test(datasets, build_image_resize_error_names_the_file_and_its_size)
{
    put_three_images();
    expect_build_fails(RESIZE_SPEC(", resize: error"),
                       "images.csv:3: wide.pgm: image is 8x4 (width x height), expected 4x4 "
                       "(image.size), and image.resize is error: resize the image to 4x4, or "
                       "build the data with image.resize: stretch or pad",
                       NULL);
}

Test(datasets, build_image_resize_error_accepts_images_of_the_right_size)
{
    put_pgm("ok.pgm", 4, 4);
    put_text("images.csv", "ok.pgm,ok\n");
    char *out = build_ok(RESIZE_SPEC(", resize: error"));
    cr_assert(strstr(out, "pics: 1 image, all 4x4: none resized"), "%s", out);
    free(out);
    expect_info_says("resize error\n");
}

Test(datasets, build_image_resize_unknown_mode)
{
    put_three_images();
    expect_build_fails(RESIZE_SPEC(", resize: crop"), "spec.yaml:1:",
                       "image.resize is \"crop\", expected stretch (the default), pad or error");
}

/* ---- dataset files ------------------------------------------------------------ */

/* A good dataset file (from the fixtures of tests/data) at dir/data.h5. */
static void good_dataset(void)
{
    char spec[1024], out[256];
    snprintf(spec, sizeof spec, "%s/tests/data/spec.yaml", getenv("OMNI_SOURCE_DIR"));
    snprintf(out, sizeof out, "%s/data.h5", dir);
    cr_assert_eq(omni_data_build(spec, out, -1, NULL), OMNI_OK, "%s", omni_error_message());
}

static void poke(const char *dset, hid_t mtype, int64_t index, const void *value)
{
    char path[256];
    snprintf(path, sizeof path, "%s/data.h5", dir);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, dset, H5P_DEFAULT);
    cr_assert(d >= 0, "no dataset %s", dset);
    hid_t fs = H5Dget_space(d);
    hsize_t at = (hsize_t)index, one = 1;
    H5Sselect_elements(fs, H5S_SELECT_SET, 1, &at);
    hid_t ms = H5Screate_simple(1, &one, NULL);
    /* HDF5 recomputes the chunk's checksum (as an h5py edit would), so the check of the
     * value itself is what the test sees. */
    cr_assert(H5Dwrite(d, mtype, ms, fs, H5P_DEFAULT, value) >= 0);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(d);
    H5Fclose(f);
}

/* Set the loss flag of tokens[index] of a format 2 split. */
static void poke_loss(const char *dset, int64_t index)
{
    char path[256];
    snprintf(path, sizeof path, "%s/data.h5", dir);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, dset, H5P_DEFAULT);
    cr_assert(d >= 0, "no dataset %s", dset);
    hid_t fs = H5Dget_space(d);
    hsize_t at = (hsize_t)index, one = 1;
    H5Sselect_elements(fs, H5S_SELECT_SET, 1, &at);
    hid_t ms = H5Screate_simple(1, &one, NULL);
    uint16_t v = 0;
    cr_assert(H5Dread(d, H5T_NATIVE_UINT16, ms, fs, H5P_DEFAULT, &v) >= 0);
    v |= 0x8000;
    cr_assert(H5Dwrite(d, H5T_NATIVE_UINT16, ms, fs, H5P_DEFAULT, &v) >= 0);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(d);
    H5Fclose(f);
}

/* Replace array `dset` by a copy of it stored without any checksum (contiguous). */
static void strip_checksum(const char *dset)
{
    char path[256];
    snprintf(path, sizeof path, "%s/data.h5", dir);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, dset, H5P_DEFAULT);
    cr_assert(d >= 0, "no dataset %s", dset);
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    void *buf = malloc((size_t)n * H5Tget_size(t) + 1);
    cr_assert(H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Dclose(d);
    cr_assert(H5Ldelete(f, dset, H5P_DEFAULT) >= 0);
    hid_t sp2 = H5Scopy(sp);
    hsize_t dims[2];
    int rank = H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sset_extent_simple(sp2, rank, dims, NULL);
    d = H5Dcreate2(f, dset, t, sp2, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(d >= 0 && H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    free(buf);
    H5Dclose(d);
    H5Sclose(sp2);
    H5Sclose(sp);
    H5Tclose(t);
    H5Fclose(f);
}

static void expect_info_fails(const char *want1, const char *want2)
{
    const char *err;
    int rc = run("data info data.h5", &err);
    cr_assert_eq(rc, 2, "exit status %d, expected 2; stderr: %s", rc, err);
    cr_assert(strstr(err, want1), "message lacks \"%s\": %s", want1, err);
    cr_assert(!want2 || strstr(err, want2), "message lacks \"%s\": %s", want2, err);
}

Test(datasets, file_good_one_is_accepted)
{
    good_dataset();
    const char *err;
    cr_assert_eq(run("data info data.h5", &err), 0, "%s", err);
}

Test(datasets, file_good_one_verifies)
{
    good_dataset();
    const char *err;
    cr_assert_eq(run("data info data.h5 --verify", &err), 0, "%s", err);
}

/* One byte of an array changed behind HDF5's back (silent corruption on disk): found by
 * its checksum, exit 2 naming the file and the array, with or without --verify. */
Test(datasets, file_flipped_byte_fails_its_checksum)
{
    good_dataset();
    char path[256];
    snprintf(path, sizeof path, "%s/data.h5", dir);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "/tasks/qa/train/tokens", H5P_DEFAULT);
    hsize_t chunk_at[1];
    unsigned mask;
    haddr_t at = HADDR_UNDEF;
    hsize_t size;
    hid_t fs = H5Dget_space(d);
    cr_assert(H5Dget_chunk_info(d, fs, 0, chunk_at, &mask, &at, &size) >= 0);
    H5Sclose(fs);
    H5Dclose(d);
    H5Fclose(f);
    cr_assert(at != HADDR_UNDEF);
    FILE *raw = fopen(path, "r+b");
    unsigned char byte = 0;
    cr_assert(raw && fseek(raw, (long)at + 9, SEEK_SET) == 0 && fread(&byte, 1, 1, raw) == 1);
    byte ^= 0x01;
    cr_assert(fseek(raw, (long)at + 9, SEEK_SET) == 0 && fwrite(&byte, 1, 1, raw) == 1);
    cr_assert(fclose(raw) == 0);
    expect_info_fails("data.h5", "/tasks/qa/train/tokens: cannot read rows [0, 16)");
    expect_info_fails("data.h5", "failed its checksum");
    const char *err;
    cr_assert_eq(run("data info --verify data.h5", &err), 2, "%s", err);
    cr_assert(strstr(err, "failed its checksum"), "%s", err);
}

/* An array without a checksum (an h5py edit, an older file) is read with a warning, and
 * --verify refuses to vouch for it. */
Test(datasets, file_without_checksum_warns_and_fails_verify)
{
    good_dataset();
    strip_checksum("/tasks/qa/train/tokens");
    const char *err;
    cr_assert_eq(run("data info data.h5", &err), 0, "%s", err);
    cr_assert(strstr(err, "carry no checksum (first: /tasks/qa/train/tokens)"), "%s", err);
    cr_assert_eq(run("data info data.h5 --verify", &err), 2, "%s", err);
    cr_assert(strstr(err, "data.h5: 1 of"), "%s", err);
    cr_assert(strstr(err, "carry no checksum (first: /tasks/qa/train/tokens)"), "%s", err);
}

/* An array that claims 2^40 elements (a sparse chunked dataset: the file stays small) is
 * refused before anything is allocated, exit 2, not killed for want of memory. */
Test(datasets, file_claiming_2_pow_40_elements)
{
    good_dataset();
    char path[256];
    snprintf(path, sizeof path, "%s/data.h5", dir);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(H5Ldelete(f, "tasks/qa/train/tokens", H5P_DEFAULT) >= 0);
    hsize_t n = (hsize_t)1 << 40, chunk = 1024;
    hid_t sp = H5Screate_simple(1, &n, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &chunk);
    hid_t d =
        H5Dcreate2(f, "tasks/qa/train/tokens", H5T_STD_U16LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    cr_assert(d >= 0);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
    H5Fclose(f);
    expect_info_fails("data.h5", "/tasks/qa/train/offsets runs from 0 to 16, but tokens has "
                                 "1099511627776 entries");
}

Test(datasets, file_token_outside_the_vocabulary)
{
    good_dataset();
    uint16_t v = 5000;
    poke("/tasks/qa/train/tokens", H5T_NATIVE_UINT16, 2, &v);
    expect_info_fails("data.h5", "/tasks/qa/train/tokens[2] = 5000 is outside the vocabulary");
}

Test(datasets, file_patch_element_in_a_text_task)
{
    good_dataset();
    uint16_t v = 0x7fff;
    poke("/tasks/qa/train/tokens", H5T_NATIVE_UINT16, 2, &v);
    expect_info_fails("data.h5", "tokens[2] is a patch element in a text_to_text task");
}

Test(datasets, file_sample_without_its_task_token)
{
    good_dataset();
    uint16_t v = 'x';
    poke("/tasks/qa/train/tokens", H5T_NATIVE_UINT16, 0, &v);
    expect_info_fails("data.h5", "sample 0 starts with token 120, expected its task token");
}

Test(datasets, file_decreasing_offsets)
{
    good_dataset();
    int64_t v = -1;
    poke("/tasks/qa/train/offsets", H5T_NATIVE_INT64, 1, &v);
    expect_info_fails("data.h5", "/tasks/qa/train/offsets decreases at sample 0 (0 then -1)");
}

Test(datasets, file_offsets_beyond_the_arrays)
{
    good_dataset();
    int64_t v = 1000;
    poke("/tasks/qa/train/offsets", H5T_NATIVE_INT64, 2, &v);
    expect_info_fails("data.h5", "offsets runs from 0 to 1000, but tokens has 16 entries");
}

Test(datasets, file_patch_offsets_that_disagree_with_the_tokens)
{
    good_dataset();
    int64_t v = 3;
    poke("/tasks/pics/train/patch_offsets", H5T_NATIVE_INT64, 1, &v);
    expect_info_fails("data.h5", "sample 0 has 4 patch tokens and 3 patches");
}

Test(datasets, file_loss_on_the_task_token)
{
    good_dataset();
    poke_loss("/tasks/corpus/train/tokens", 0);
    expect_info_fails("data.h5", "/tasks/corpus/train/sample 0: loss on its <task> token");
}

Test(datasets, file_control_loss_on_an_observation)
{
    good_dataset();
    poke_loss("/tasks/ctrl/train/tokens", 1);
    expect_info_fails("data.h5", "expected loss on action tokens only");
}

Test(datasets, file_that_is_not_a_dataset_says_what_it_looks_like)
{
    char path[256];
    snprintf(path, sizeof path, "%s/ckpt.h5", dir);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t t = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
    H5Tset_size(t, 18);
    hid_t a = H5Acreate2(f, "format", t, sp, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(a >= 0 && H5Awrite(a, t, "omnimoe checkpoint") >= 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    H5Fclose(f);
    const char *err;
    cr_assert_eq(run("data info ckpt.h5", &err), 2, "%s", err);
    cr_assert(strstr(err, "ckpt.h5: not an omnimoe dataset: it looks like a checkpoint"), "%s",
              err);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "data info '%s/tests/data/episodes.h5'", getenv("OMNI_SOURCE_DIR"));
    cr_assert_eq(run(cmd, &err), 2, "%s", err);
    cr_assert(strstr(err, "episodes.h5: not an omnimoe dataset: it looks like a control episodes "
                          "file"),
              "%s", err);
}

Test(datasets, info_of_a_file_without_a_seed_says_so)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "data info '%s/tests/data/h5py_written.h5'",
             getenv("OMNI_SOURCE_DIR"));
    const char *err;
    cr_assert_eq(run(cmd, &err), 0, "%s", err);
    char *out;
    size_t len;
    char path[256];
    snprintf(path, sizeof path, "%s/stdout.txt", dir);
    cr_assert_eq(omni_read_file(path, &out, &len), OMNI_OK);
    cr_assert(strstr(out, "2 tasks, no seed recorded\n"), "%s", out);
    cr_assert_null(strstr(out, "seed 0"), "%s", out);
    free(out);
}

Test(datasets, build_seed_flag_replaces_the_specs_seed)
{
    char cmd[1024], path[256];
    snprintf(cmd, sizeof cmd, "data build '%s/tests/data/spec.yaml' --out seeded.h5 --seed 99",
             getenv("OMNI_SOURCE_DIR"));
    const char *err;
    cr_assert_eq(run(cmd, &err), 0, "%s", err);
    snprintf(path, sizeof path, "%s/stdout.txt", dir);
    char *out;
    size_t len;
    cr_assert_eq(omni_read_file(path, &out, &len), OMNI_OK);
    cr_assert(strstr(out, "seed 99 (--seed, in place of the spec's)"), "%s", out);
    free(out);
    cr_assert_eq(run("data info seeded.h5", &err), 0, "%s", err);
    cr_assert_eq(omni_read_file(path, &out, &len), OMNI_OK);
    cr_assert(strstr(out, "5 tasks, seed 99\n"), "%s", out);
    free(out);
}

/* The tokens of /tasks/qa/val of dir/NAME, malloc'ed, with their count. */
static int32_t *val_tokens(const char *name, int64_t *n)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(f >= 0, "%s", path);
    hid_t d = H5Dopen2(f, "/tasks/qa/val/tokens", H5P_DEFAULT);
    cr_assert(d >= 0);
    hid_t sp = H5Dget_space(d);
    hsize_t len;
    H5Sget_simple_extent_dims(sp, &len, NULL);
    int32_t *tok = malloc(sizeof *tok * (len ? len : 1));
    cr_assert(H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, tok) >= 0);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(f);
    *n = (int64_t)len;
    return tok;
}

Test(datasets, build_seed_flag_draws_the_validation_split)
{
    /* 20 questions, half of them drawn for validation by the seed. */
    char csv[1024] = "input,target\n";
    for (int i = 0; i < 20; i++)
        snprintf(csv + strlen(csv), sizeof csv - strlen(csv), "%d+%d,%d\n", i, i, 2 * i);
    put_text("qa.csv", csv);
    put_text("spec.yaml", "seed: 7\ntasks:\n  - {name: qa, kind: text_to_text, manifest: qa.csv, "
                          "val_fraction: 0.5}\n");
    const char *err;
    cr_assert_eq(run("data build spec.yaml --out spec7.h5", &err), 0, "%s", err);
    cr_assert_eq(run("data build spec.yaml --out flag7.h5 --seed 7", &err), 0, "%s", err);
    cr_assert_eq(run("data build spec.yaml --out flag99.h5 --seed 99", &err), 0, "%s", err);
    int64_t n7, nf7, n99;
    int32_t *a = val_tokens("spec7.h5", &n7), *b = val_tokens("flag7.h5", &nf7),
            *c = val_tokens("flag99.h5", &n99);
    cr_assert(n7 == nf7 && !memcmp(a, b, sizeof *a * (size_t)n7),
              "--seed 7 drew another split than the spec's seed 7");
    cr_assert(n7 != n99 || memcmp(a, c, sizeof *a * (size_t)n7),
              "--seed 99 drew the split of seed 7: the flag is ignored");
    free(a);
    free(b);
    free(c);
}

Test(datasets, file_missing_attribute)
{
    good_dataset();
    char path[256];
    snprintf(path, sizeof path, "%s/data.h5", dir);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(H5Adelete(f, "tok_sep") >= 0);
    H5Fclose(f);
    expect_info_fails("data.h5", "missing attribute /tok_sep");
}

Test(datasets, file_missing_task_kind)
{
    good_dataset();
    char path[256];
    snprintf(path, sizeof path, "%s/data.h5", dir);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(H5Adelete_by_name(f, "tasks/qa", "kind", H5P_DEFAULT) >= 0);
    H5Fclose(f);
    expect_info_fails("data.h5", "missing attribute /tasks/qa/kind");
}

Test(datasets, file_wrong_vocabulary_layout)
{
    good_dataset();
    char path[256];
    snprintf(path, sizeof path, "%s/data.h5", dir);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t a = H5Aopen(f, "bins", H5P_DEFAULT);
    int32_t v = 512;
    H5Awrite(a, H5T_NATIVE_INT32, &v);
    H5Aclose(a);
    H5Fclose(f);
    expect_info_fails("data.h5", "attribute /bins = 512, expected 1024");
}

Test(datasets, file_tokens_stored_as_int32)
{
    good_dataset();
    char path[256];
    snprintf(path, sizeof path, "%s/data.h5", dir);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert(H5Ldelete(f, "tasks/corpus/train/tokens", H5P_DEFAULT) >= 0);
    hsize_t n = 5;
    int32_t tok[5] = {1283, 'a', 'b', 'c', 1281};
    hid_t sp = H5Screate_simple(1, &n, NULL);
    hid_t d = H5Dcreate2(f, "tasks/corpus/train/tokens", H5T_STD_I32LE, sp, H5P_DEFAULT,
                         H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, tok);
    H5Dclose(d);
    H5Sclose(sp);
    H5Fclose(f);
    expect_info_fails("data.h5", "/tasks/corpus/train/tokens is a 4-byte signed integer, expected "
                                 "a 2-byte unsigned integer (format 2)");
}

/* A file of format 1 (whole int32 arrays, before issue 15) is refused, exit 2, naming the
 * file and its version and what to do. */
Test(datasets, file_of_format_1_is_refused_naming_its_version)
{
    char src[1024], cmd[2048];
    snprintf(src, sizeof src, "%s/tests/data/h5py_written_v1.h5", getenv("OMNI_SOURCE_DIR"));
    snprintf(cmd, sizeof cmd, "cp '%s' '%s/data.h5'", src, dir);
    cr_assert_eq(system(cmd), 0);
    expect_info_fails("data.h5: dataset format_version 1 is not read by this omnimoe, which "
                      "reads version 2",
                      "rebuild the file with `omnimoe data build`");
}

Test(datasets, file_that_is_not_hdf5)
{
    put_text("data.h5", "just text\n");
    expect_info_fails("data.h5", "not an HDF5 file");
}

Test(datasets, file_missing)
{
    expect_info_fails("data.h5", "cannot open the file");
}

/* Training reads samples in windows: a damaged sample is found when it is read, and the
 * sampler keeps the failure for the worker (which ends the job on every rank). */
Test(datasets, file_bad_sample_is_reported_when_read)
{
    good_dataset();
    uint16_t v = 5000;
    poke("/tasks/ctrl/train/tokens", H5T_NATIVE_UINT16, 1, &v);
    char yaml[512];
    snprintf(yaml, sizeof yaml, "experiment: {name: t}\ndata: {files: [%s/data.h5]}\n", dir);
    omni_experiment x;
    cr_assert_eq(omni_experiment_parse(&x, yaml, strlen(yaml), "t.yaml", NULL, 0), OMNI_OK);
    omni_sampler *s = NULL;
    cr_assert_eq(omni_sampler_open(&s, &x), OMNI_OK, "%s", omni_error_message());
    cr_assert_eq(omni_sampler_status(s), OMNI_OK);
    int ctrl = -1;
    for (int t = 0; t < omni_sampler_n_tasks(s); t++)
        if (!strcmp(omni_sampler_task(s, t)->name, "ctrl"))
            ctrl = t;
    cr_assert(ctrl >= 0);
    omni_sample sm;
    omni_sampler_sample(s, ctrl, OMNI_SPLIT_TRAIN, 0, &sm);
    cr_assert_eq(sm.n, 0);
    cr_assert_eq(omni_sampler_status(s), OMNI_ERR_DATA);
    cr_assert(strstr(omni_error_message(), "data.h5: /tasks/ctrl/train/tokens[1] = 5000"), "%s",
              omni_error_message());
    omni_sampler_close(s);
}
