/*
 * bench_data: how fast the data part is.
 *   1. build: 10,000 PNG images (48x48 RGB, resized to 32x32, patch 8) and 1,000 WAV
 *      files (1 s at 22,050 Hz, resampled to 16 kHz, 32 mels x 64 frames) generated into
 *      a temporary directory, then `omni_data_build` timed (input generation is not);
 *   2. sampling: windows of the medium config (context 256) filled from that file,
 *      printed as windows/s and positions (tokens)/s, to compare with the positions/s
 *      training consumes (bench of the model).
 *   3. with --data FILE: no build; sampling from FILE (any dataset file, e.g. the 1 GiB
 *      text corpus of docs/bench.md), through a cache of --cache-mb MiB (default 64).
 *   Peak RSS (getrusage) is printed after each part.
 *   bench_data [--images N] [--wavs N] [--windows N] [--context N] [--keep 1]
 *              [--data FILE.h5] [--cache-mb N]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "datasets.h"

static int64_t arg(int argc, char **argv, const char *name, int64_t def)
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

static double peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

static int generate(const char *dir, int64_t n_img, int64_t n_wav)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/images.csv", dir);
    FILE *mi = fopen(path, "w");
    snprintf(path, sizeof path, "%s/audio.csv", dir);
    FILE *ma = fopen(path, "w");
    if (!mi || !ma)
        return 1;
    omni_rng r;
    omni_rng_init(&r, 1, "bench/data", 0);
    omni_image img = {.h = 48, .w = 48, .c = 3};
    img.px = omni_alloc(48 * 48 * 3, 1, "bench image");
    for (int64_t i = 0; i < n_img; i++) {
        uint32_t c = omni_rng_u32(&r, (uint64_t)i);
        for (int p = 0; p < 48 * 48 * 3; p++)
            img.px[p] = ((p / 3) % 48 < 24) == ((p / 3) / 48 < 24) ? (uint8_t)(c >> (8 * (p % 3)))
                                                                   : (uint8_t)(255 - p % 251);
        snprintf(path, sizeof path, "%s/img%05lld.png", dir, (long long)i);
        if (omni_png_write(path, &img))
            return 1;
        fprintf(mi, "img%05lld.png,picture %lld\n", (long long)i, (long long)i);
    }
    omni_free(img.px);
    const int64_t n = 22050;
    float *x = omni_alloc(n, sizeof *x, "bench audio");
    for (int64_t i = 0; i < n_wav; i++) {
        float hz = 200.0f + 10.0f * (float)(i % 300);
        for (int64_t j = 0; j < n; j++)
            x[j] = 0.5f * sinf(6.2831853f * hz * (float)j / 22050.0f);
        snprintf(path, sizeof path, "%s/snd%04lld.wav", dir, (long long)i);
        if (omni_wav_write(path, x, n, 22050, 1))
            return 1;
        fprintf(ma, "snd%04lld.wav,tone %lld\n", (long long)i, (long long)i);
    }
    omni_free(x);
    fclose(mi);
    fclose(ma);
    snprintf(path, sizeof path, "%s/spec.yaml", dir);
    FILE *s = fopen(path, "w");
    fputs("seed: 1\n"
          "image: {size: 32, channels: 3, patch: 8}\n"
          "audio: {sample_rate: 16000, mels: 32, frames: 64, patch: 8, n_fft: 512, hop: 160}\n"
          "tasks:\n"
          "  - {name: pics, kind: image_to_text, manifest: images.csv, val_fraction: 0.1}\n"
          "  - {name: sounds, kind: audio_to_text, manifest: audio.csv, val_fraction: 0.1}\n",
          s);
    fclose(s);
    return 0;
}

int main(int argc, char **argv)
{
    int64_t n_img = arg(argc, argv, "--images", 10000), n_wav = arg(argc, argv, "--wavs", 1000);
    int64_t n_win = arg(argc, argv, "--windows", 20000),
            context = arg(argc, argv, "--context", 256);
    const char *data = sarg(argc, argv, "--data");
    int64_t cache_mb = arg(argc, argv, "--cache-mb", 64);
    char dir[] = "/tmp/omni-bench-data-XXXXXX";
    char spec[1024], out[1024];
    if (data) {
        snprintf(out, sizeof out, "%s", data);
        goto sample;
    }
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    printf("generating %lld PNG images and %lld WAV files in %s ...\n", (long long)n_img,
           (long long)n_wav, dir);
    fflush(stdout);
    if (generate(dir, n_img, n_wav)) {
        fprintf(stderr, "bench_data: cannot write the inputs: %s\n", omni_error_message());
        return 1;
    }
    snprintf(spec, sizeof spec, "%s/spec.yaml", dir);
    snprintf(out, sizeof out, "%s/bench.h5", dir);
    double t0 = omni_now();
    omni_status st = omni_data_build(spec, out, -1, stdout); /* per-task times */
    double t_build = omni_now() - t0;
    if (st) {
        fprintf(stderr, "bench_data: %s\n", omni_error_message());
        return 1;
    }
    printf("build: %lld images + %lld WAV files in %.2f s (%.0f files/s); peak RSS so far "
           "%.0f MiB\n",
           (long long)n_img, (long long)n_wav, t_build, (double)(n_img + n_wav) / t_build,
           peak_rss_mib());
sample:;

    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "experiment: {name: bench}\nmodel: {context: %lld}\ndata: {files: [%s], cache_mb: "
             "%lld}\n",
             (long long)context, out, (long long)cache_mb);
    omni_experiment x;
    omni_sampler *s = NULL;
    if (omni_experiment_parse(&x, yaml, strlen(yaml), "bench", NULL, 0) ||
        omni_sampler_open(&s, &x)) {
        fprintf(stderr, "bench_data: %s\n", omni_error_message());
        return 1;
    }
    omni_data_dims d = omni_sampler_dims(s);
    omni_batch b;
    int64_t patch_dim =
        d.image_patch_dim > d.audio_patch_dim ? d.image_patch_dim : d.audio_patch_dim;
    if (omni_batch_alloc(&b, 16, context, patch_dim))
        return 1;
    int64_t losses = 0;
    t0 = omni_now();
    for (int64_t w = 0; w < n_win; w++)
        losses += omni_sampler_fill(s, OMNI_SPLIT_TRAIN, 1, w / 16, w % 16, &b, w % 16);
    double t_fill = omni_now() - t0;
    if (omni_sampler_status(s)) {
        fprintf(stderr, "bench_data: %s\n", omni_error_message());
        return 1;
    }
    int64_t hits, misses;
    size_t cache_bytes;
    omni_sampler_cache_stats(s, &hits, &misses, &cache_bytes);
    printf("sampling: %lld windows of %lld positions in %.3f s: %.0f windows/s, %.3g tokens/s "
           "(one thread; %.1f loss tokens per window); cache %.0f MiB, %.1f%% of chunk reads "
           "hit; peak RSS %.0f MiB\n",
           (long long)n_win, (long long)context, t_fill, (double)n_win / t_fill,
           (double)(n_win * context) / t_fill, (double)losses / (double)n_win,
           (double)cache_bytes / 1048576.0,
           hits + misses ? 100.0 * (double)hits / (double)(hits + misses) : 0.0, peak_rss_mib());
    omni_batch_free(&b);
    omni_sampler_close(s);
    if (!data && arg(argc, argv, "--keep", 0) == 0) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "bench_data: could not remove %s\n", dir);
    }
    return 0;
}
