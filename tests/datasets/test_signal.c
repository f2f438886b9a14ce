/*
 * datasets: known answers of the signal code: mu-law and bins, patching and
 * normalisation, resizing, the PNG/PGM fixtures, WAV parsing and resampling, the log-mel
 * of a pure tone.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "test_util.h"

TestSuite(signal, .fini = remove_temp_dir);

/* ---- values ------------------------------------------------------------------- */

Test(signal, mulaw_known_values_and_bins)
{
    cr_assert_float_eq(omni_mulaw(0.0f), 0.0f, 1e-7f);
    /* F(1) = log(101) / log(25601) */
    cr_assert_float_eq(omni_mulaw(1.0f), 0.454672f, 1e-5f);
    cr_assert_float_eq(omni_mulaw(-1.0f), -0.454672f, 1e-5f);
    cr_assert_float_eq(omni_mulaw(256.0f), 1.0f, 1e-5f);
    cr_assert_eq(omni_value_bin(0.0f), 512);
    cr_assert_eq(omni_value_bin(1.0f), 744);
    cr_assert_eq(omni_value_bin(0.5f), 710);
    cr_assert_eq(omni_value_bin(-0.5f), 313);
    cr_assert_eq(omni_value_bin(1e9f), OMNI_BINS - 1, "clipped at the top");
    cr_assert_eq(omni_value_bin(-1e9f), 0, "clipped at the bottom");
    for (float x = -300.0f; x <= 300.0f; x += 0.37f)
        cr_assert(omni_value_bin(x) <= omni_value_bin(x + 0.37f), "bins are monotone");
}

Test(signal, mulaw_round_trip_error_is_within_half_a_bin)
{
    /* Decoding returns the bin centre; in mu-law space the error is at most half a bin
     * (1/1024); in value space that is at most (1/1024) * dx/dF at the far edge, where
     * dx/dF = ln(M mu + 1) (mu |x| + 1) / mu. */
    const double lnk = log(256.0 * 100.0 + 1.0);
    for (int i = -20000; i <= 20000; i++) {
        float x = (float)i * 0.0125f; /* [-250, 250] */
        float y = omni_bin_value(omni_value_bin(x));
        double edge = fabs((double)x) > fabs((double)y) ? fabs((double)x) : fabs((double)y);
        double bound = (1.0 / 1024.0) * lnk * (100.0 * edge + 1.0) / 100.0 * 1.01 + 1e-6;
        cr_assert(fabs((double)(x - y)) <= bound, "x = %g decoded as %g (bound %g)", (double)x,
                  (double)y, bound);
    }
    cr_assert(fabsf(omni_bin_value(omni_value_bin(0.01f)) - 0.01f) < 2e-4f);
}

/* ---- images ------------------------------------------------------------------- */

Test(signal, patches_are_raster_order_and_normalised)
{
    uint8_t px[16];
    for (int i = 0; i < 16; i++)
        px[i] = (uint8_t)i;
    omni_image img = {.h = 4, .w = 4, .c = 1, .px = px};
    uint8_t out[16];
    omni_image_patches(&img, 2, out);
    static const uint8_t want[16] = {0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15};
    cr_assert_arr_eq(out, want, 16);
    /* RGB: channels stay interleaved inside a patch. */
    uint8_t rgb[2 * 2 * 3];
    for (int i = 0; i < 12; i++)
        rgb[i] = (uint8_t)(10 * i);
    omni_image c = {.h = 2, .w = 2, .c = 3, .px = rgb};
    uint8_t o3[12];
    omni_image_patches(&c, 2, o3);
    cr_assert_arr_eq(o3, rgb, 12);
    cr_assert_float_eq(omni_patch_value(0, 8), -1.0f / sqrtf(8.0f), 1e-7f);
    cr_assert_float_eq(omni_patch_value(255, 8), 1.0f / sqrtf(8.0f), 1e-7f);
    cr_assert_float_eq(omni_patch_value(255, 16), 0.25f, 1e-7f);
}

Test(signal, resize_averages_areas_and_converts_channels)
{
    uint8_t px[4 * 4 * 3];
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++)
            for (int ch = 0; ch < 3; ch++)
                px[(y * 4 + x) * 3 + ch] = (uint8_t)(ch == 0 ? 40 * (y / 2 * 2 + x / 2) : 0);
    omni_image src = {.h = 4, .w = 4, .c = 3, .px = px}, dst;
    cr_assert_eq(omni_image_resize(&src, 2, 3, &dst), OMNI_OK);
    cr_assert_eq(dst.px[0], 0);
    cr_assert_eq(dst.px[3], 40, "block (0,1) averaged");
    cr_assert_eq(dst.px[6], 80);
    cr_assert_eq(dst.px[9], 120);
    omni_image_free(&dst);
    /* To grey by BT.601 luma: a pure red 200 becomes round(0.299 * 200) = 60. */
    for (int i = 0; i < 16; i++)
        px[3 * i] = 200;
    cr_assert_eq(omni_image_resize(&src, 4, 1, &dst), OMNI_OK);
    cr_assert_eq(dst.c, 1);
    cr_assert_eq(dst.px[5], 60);
    omni_image_free(&dst);
}

Test(signal, png_and_pgm_fixtures_load_exactly)
{
    char path[1024];
    omni_image img;
    snprintf(path, sizeof path, "%s/tests/data/img/ramp.pgm", source_dir());
    cr_assert_eq(omni_image_load(&img, path), OMNI_OK, "%s", omni_error_message());
    cr_assert(img.h == 4 && img.w == 4 && img.c == 1);
    for (int i = 0; i < 16; i++)
        cr_assert_eq(img.px[i], 16 * i);
    omni_image_free(&img);
    snprintf(path, sizeof path, "%s/tests/data/img/inverse.png", source_dir());
    cr_assert_eq(omni_image_load(&img, path), OMNI_OK, "%s", omni_error_message());
    for (int i = 0; i < 16; i++)
        cr_assert_eq(img.px[i], 255 - 16 * i);
    omni_image_free(&img);
}

/* ---- audio -------------------------------------------------------------------- */

Test(signal, wav_parsing_mixes_channels_and_scales)
{
    char dir[64], path[128];
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/st.wav", dir);
    /* A stereo 16-bit file written byte by byte: frames (16384, 0), (-32768, -32768). */
    static const uint8_t wav[] = {'R',  'I',  'F', 'F', 44,   0,    0, 0, 'W',  'A',  'V',  'E',
                                  'f',  'm',  't', ' ', 16,   0,    0, 0, 1,    0,    2,    0,
                                  0x40, 0x1f, 0,   0,   0,    0x7d, 0, 0, 4,    0,    16,   0,
                                  'L',  'I',  'S', 'T', 0,    0,    0, 0, 'd',  'a',  't',  'a',
                                  8,    0,    0,   0,   0x00, 0x40, 0, 0, 0x00, 0x80, 0x00, 0x80};
    FILE *f = fopen(path, "wb");
    fwrite(wav, 1, sizeof wav, f);
    fclose(f);
    float *x;
    int64_t n;
    int32_t rate;
    cr_assert_eq(omni_wav_load(path, &x, &n, &rate), OMNI_OK, "%s", omni_error_message());
    cr_assert_eq(n, 2);
    cr_assert_eq(rate, 8000);
    cr_assert_float_eq(x[0], 0.25f, 1e-7f, "(0.5 + 0) / 2");
    cr_assert_float_eq(x[1], -1.0f, 1e-7f);
    omni_free(x);
    remove(path);
    rmdir(dir);
}

Test(signal, resampling_keeps_a_tone_and_removes_what_is_above_nyquist)
{
    const int64_t n = 16000;
    float *in = malloc(sizeof *in * (size_t)n), *out;
    int64_t m;
    for (int64_t i = 0; i < n; i++)
        in[i] = sinf(2.0f * 3.14159265f * 440.0f * (float)i / 16000.0f);
    cr_assert_eq(omni_resample(in, n, 16000, 8000, &out, &m), OMNI_OK);
    cr_assert_eq(m, 8000);
    for (int64_t j = 200; j < m - 200; j++) {
        float want = sinf(2.0f * 3.14159265f * 440.0f * (float)j / 8000.0f);
        cr_assert(fabsf(out[j] - want) < 0.01f, "sample %lld: %g vs %g", (long long)j,
                  (double)out[j], (double)want);
    }
    omni_free(out);
    /* 6 kHz is above the new Nyquist rate (4 kHz): it must nearly vanish. */
    for (int64_t i = 0; i < n; i++)
        in[i] = sinf(2.0f * 3.14159265f * 6000.0f * (float)i / 16000.0f);
    cr_assert_eq(omni_resample(in, n, 16000, 8000, &out, &m), OMNI_OK);
    double e = 0;
    for (int64_t j = 200; j < m - 200; j++)
        e += (double)(out[j] * out[j]);
    cr_assert(e / (double)(m - 400) < 1e-3, "aliased power %g", e / (double)(m - 400));
    omni_free(out);
    /* Upsampling 8k -> 11025 keeps length ceil(n * to / from). */
    cr_assert_eq(omni_resample(in, 1000, 8000, 11025, &out, &m), OMNI_OK);
    cr_assert_eq(m, 1379);
    omni_free(out);
    free(in);
}

Test(signal, logmel_of_a_pure_tone_peaks_in_its_band)
{
    omni_audio_cfg c = {.sample_rate = 16000,
                        .mels = 32,
                        .frames = 20,
                        .patch = 4,
                        .n_fft = 512,
                        .hop = 160,
                        .top_db = 80.0f};
    omni_logmel *lm;
    cr_assert_eq(omni_logmel_create(&lm, &c), OMNI_OK);
    const float hz[] = {300.0f, 1000.0f, 3000.0f};
    float *x = malloc(sizeof *x * 4000), *db = malloc(sizeof *db * 32 * 20);
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i < 4000; i++)
            x[i] = 0.5f * sinf(2.0f * 3.14159265f * hz[k] * (float)i / 16000.0f);
        omni_logmel_db(lm, x, 4000, db);
        int best = 0;
        for (int m = 0; m < 32; m++)
            if (db[m * 20 + 5] > db[best * 20 + 5])
                best = m;
        /* The band whose centre is closest to the tone holds the most energy. */
        int closest = 0;
        for (int m = 0; m < 32; m++)
            if (fabsf(omni_mel_band_hz(&c, m) - hz[k]) <
                fabsf(omni_mel_band_hz(&c, closest) - hz[k]))
                closest = m;
        cr_assert(abs(best - closest) <= 1, "tone %g Hz peaks in band %d, centre band %d",
                  (double)hz[k], best, closest);
        /* Far bands are at least 40 dB quieter. */
        int far = best < 16 ? 31 : 0;
        cr_assert(db[best * 20 + 5] - db[far * 20 + 5] > 40.0f);
        /* Amplitude 0.5: power in its band near A^2 / 2 = -9 dB (window spread aside). */
        cr_assert(db[best * 20 + 5] > -16.0f && db[best * 20 + 5] < -6.0f, "%g dB",
                  (double)db[best * 20 + 5]);
    }
    uint8_t q[32 * 20];
    omni_logmel_quantize(&c, db, q);
    int hi = 0;
    for (int i = 0; i < 32 * 20; i++)
        hi = q[i] > hi ? q[i] : hi;
    cr_assert_eq(hi, 255, "the loudest bin maps to 255");
    /* Frames past the end of the signal are silence: all quantized to 0. */
    omni_logmel_db(lm, x, 1000, db);
    omni_logmel_quantize(&c, db, q);
    cr_assert_eq(q[0 * 20 + 19], 0);
    free(x);
    free(db);
    omni_logmel_free(lm);
}
