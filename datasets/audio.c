/*
 * Audio: RIFF/WAVE PCM 16-bit reading and writing, band-limited resampling, and the
 * log-mel spectrogram (FFTW3 single precision) quantized to bytes like an image.
 */
#include "datasets.h"

#include <fftw3.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DS_PI 3.14159265358979323846

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

omni_status omni_wav_load(const char *path, float **samples, int64_t *n, int32_t *rate)
{
    *samples = NULL;
    *n = 0;
    char *bytes = NULL;
    size_t len = 0;
    if (omni_read_file(path, &bytes, &len))
        return omni_fail(OMNI_ERR_DATA, "%s: cannot read the WAV file (missing or unreadable)",
                         path);
    const uint8_t *b = (const uint8_t *)bytes;
    omni_status st = OMNI_OK;
    if (len < 12 || memcmp(b, "RIFF", 4) || memcmp(b + 8, "WAVE", 4)) {
        st = omni_fail(OMNI_ERR_DATA, "%s: not a RIFF/WAVE file", path);
        goto out;
    }
    const uint8_t *fmt = NULL, *data = NULL;
    size_t fmt_len = 0, data_len = 0, at = 12;
    while (at + 8 <= len) {
        uint32_t sz = le32(b + at + 4);
        size_t body = at + 8;
        if (sz > len - body) {
            if (!memcmp(b + at, "data", 4)) {
                st = omni_fail(OMNI_ERR_DATA,
                               "%s: data chunk at byte %zu claims %u bytes, the "
                               "file has %zu after it (truncated)",
                               path, at, sz, len - body);
                goto out;
            }
            break;
        }
        if (!memcmp(b + at, "fmt ", 4))
            fmt = b + body, fmt_len = sz;
        else if (!memcmp(b + at, "data", 4))
            data = b + body, data_len = sz;
        at = body + sz + (sz & 1);
    }
    if (!fmt || fmt_len < 16) {
        st = omni_fail(OMNI_ERR_DATA, "%s: no fmt chunk", path);
        goto out;
    }
    uint16_t format = le16(fmt), channels = le16(fmt + 2), bits = le16(fmt + 14);
    uint32_t sr = le32(fmt + 4);
    if (format == 0xFFFE && fmt_len >= 26)
        format = le16(fmt + 24); /* WAVE_FORMAT_EXTENSIBLE: the sub-format GUID's start */
    if (format != 1 || bits != 16) {
        st = omni_fail(OMNI_ERR_DATA,
                       "%s: WAV format %u with %u bits per sample, expected PCM "
                       "(1) 16-bit",
                       path, format, bits);
        goto out;
    }
    if (channels < 1 || sr < 1 || sr > 1000000) {
        st = omni_fail(OMNI_ERR_DATA,
                       "%s: WAV with %u channels at %u Hz, expected >= 1 "
                       "channel, 1..1000000 Hz",
                       path, channels, sr);
        goto out;
    }
    if (!data) {
        st = omni_fail(OMNI_ERR_DATA, "%s: no data chunk", path);
        goto out;
    }
    int64_t frames = (int64_t)(data_len / (2u * channels));
    float *x = omni_alloc(frames ? frames : 1, sizeof *x, "audio samples");
    if (!x) {
        st = OMNI_ERR_NOMEM;
        goto out;
    }
    for (int64_t i = 0; i < frames; i++) {
        int32_t acc = 0;
        for (int c = 0; c < channels; c++)
            acc += (int16_t)le16(data + ((size_t)i * channels + (size_t)c) * 2);
        x[i] = (float)acc / (32768.0f * (float)channels);
    }
    *samples = x;
    *n = frames;
    *rate = (int32_t)sr;
out:
    free(bytes);
    return st;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16),
    p[3] = (uint8_t)(v >> 24);
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8);
}

omni_status omni_wav_write(const char *path, const float *samples, int64_t n, int32_t rate,
                           int32_t channels)
{
    uint8_t h[44];
    uint32_t data = (uint32_t)(n * channels * 2);
    memcpy(h, "RIFF", 4);
    put32(h + 4, 36 + data);
    memcpy(h + 8, "WAVEfmt ", 8);
    put32(h + 16, 16);
    put16(h + 20, 1);
    put16(h + 22, (uint16_t)channels);
    put32(h + 24, (uint32_t)rate);
    put32(h + 28, (uint32_t)(rate * channels * 2));
    put16(h + 32, (uint16_t)(channels * 2));
    put16(h + 34, 16);
    memcpy(h + 36, "data", 4);
    put32(h + 40, data);
    FILE *f = fopen(path, "wb");
    if (!f)
        return omni_fail(OMNI_ERR_IO, "%s: cannot create the WAV file", path);
    bool ok = fwrite(h, 1, sizeof h, f) == sizeof h;
    for (int64_t i = 0; ok && i < n; i++) {
        float v = samples[i] * 32767.0f;
        int16_t s = (int16_t)lrintf(fminf(fmaxf(v, -32768.0f), 32767.0f));
        uint8_t p[2];
        put16(p, (uint16_t)s);
        for (int32_t c = 0; c < channels && ok; c++)
            ok = fwrite(p, 1, 2, f) == 2;
    }
    if (fclose(f) != 0 || !ok)
        return omni_fail(OMNI_ERR_IO, "%s: cannot write the WAV file", path);
    return OMNI_OK;
}

#define SINC_ZEROS 16   /* zero crossings of the windowed sinc on each side */
#define SINC_TABLE 8192 /* kernel samples over its half-width (512 per crossing) */

omni_status omni_resample(const float *in, int64_t n, int32_t from, int32_t to, float **out,
                          int64_t *n_out)
{
    int64_t m = (n * to + from - 1) / from;
    float *y = omni_alloc(m ? m : 1, sizeof *y, "resampled audio");
    if (!y)
        return OMNI_ERR_NOMEM;
    *out = y;
    *n_out = m;
    if (from == to) {
        memcpy(y, in, (size_t)n * sizeof *in);
        return OMNI_OK;
    }
    /* Low-pass at the lower Nyquist frequency: cutoff fc (cycles per input sample); the
     * Hann-windowed sinc is tabulated once and interpolated linearly (error ~1e-5). */
    float *table = omni_alloc(SINC_TABLE + 2, sizeof *table, "resampling kernel");
    if (!table) {
        omni_free(y);
        *out = NULL;
        return OMNI_ERR_NOMEM;
    }
    double fc = to < from ? 0.5 * to / from : 0.5;
    double half = SINC_ZEROS / (2.0 * fc); /* kernel half-width in input samples */
    for (int k = 0; k <= SINC_TABLE + 1; k++) {
        double d = half * k / SINC_TABLE;
        double x = 2.0 * fc * d;
        double s = k == 0 ? 1.0 : sin(DS_PI * x) / (DS_PI * x);
        double w = d < half ? 0.5 + 0.5 * cos(DS_PI * d / half) : 0.0;
        table[k] = (float)(2.0 * fc * s * w);
    }
    double scale = SINC_TABLE / half;
    for (int64_t j = 0; j < m; j++) {
        double t = (double)j * from / to;
        int64_t lo = (int64_t)ceil(t - half), hi = (int64_t)floor(t + half);
        if (lo < 0)
            lo = 0;
        if (hi > n - 1)
            hi = n - 1;
        double acc = 0;
        for (int64_t i = lo; i <= hi; i++) {
            double u = fabs(t - (double)i) * scale;
            int64_t k = (int64_t)u;
            if (k >= SINC_TABLE)
                continue;
            double f = u - (double)k;
            acc += (double)in[i] * ((double)table[k] + f * (double)(table[k + 1] - table[k]));
        }
        y[j] = (float)acc;
    }
    omni_free(table);
    return OMNI_OK;
}

struct omni_logmel {
    omni_audio_cfg cfg;
    float *frame;        /* [n_fft] FFTW input */
    fftwf_complex *spec; /* [n_fft / 2 + 1] */
    fftwf_plan plan;
    float *window; /* [n_fft] Hann */
    float *fb;     /* [mels, n_fft / 2 + 1] triangular mel filters */
    float *power;  /* [n_fft / 2 + 1] */
    float scale;   /* 1 / (sum of the window)^2 */
};

static double hz_to_mel(double f)
{
    return 2595.0 * log10(1.0 + f / 700.0);
}

static double mel_to_hz(double m)
{
    return 700.0 * (pow(10.0, m / 2595.0) - 1.0);
}

float omni_mel_band_hz(const omni_audio_cfg *cfg, int32_t m)
{
    double top = hz_to_mel(cfg->sample_rate / 2.0);
    return (float)mel_to_hz(top * (m + 1) / (cfg->mels + 1));
}

void omni_logmel_free(omni_logmel *lm)
{
    if (!lm)
        return;
    if (lm->plan)
        fftwf_destroy_plan(lm->plan);
    fftwf_free(lm->frame);
    fftwf_free(lm->spec);
    omni_free(lm->window);
    omni_free(lm->fb);
    omni_free(lm->power);
    free(lm);
}

omni_status omni_logmel_create(omni_logmel **out, const omni_audio_cfg *cfg)
{
    *out = NULL;
    omni_logmel *lm = calloc(1, sizeof *lm);
    if (!lm)
        return omni_fail(OMNI_ERR_NOMEM, "cannot allocate the log-mel transform");
    lm->cfg = *cfg;
    int32_t nf = cfg->n_fft, nb = nf / 2 + 1;
    lm->frame = fftwf_malloc(sizeof(float) * (size_t)nf);
    lm->spec = fftwf_malloc(sizeof(fftwf_complex) * (size_t)nb);
    lm->window = omni_alloc(nf, sizeof(float), "window");
    lm->fb = omni_alloc((int64_t)cfg->mels * nb, sizeof(float), "mel filters");
    lm->power = omni_alloc(nb, sizeof(float), "power spectrum");
    if (!lm->frame || !lm->spec || !lm->window || !lm->fb || !lm->power) {
        omni_logmel_free(lm);
        return omni_fail(OMNI_ERR_NOMEM, "cannot allocate the log-mel transform");
    }
    lm->plan = fftwf_plan_dft_r2c_1d(nf, lm->frame, lm->spec, FFTW_ESTIMATE);
    if (!lm->plan) {
        omni_logmel_free(lm);
        return omni_fail(OMNI_ERR_INTERNAL, "FFTW cannot plan an FFT of %d points", nf);
    }
    double wsum = 0;
    for (int32_t i = 0; i < nf; i++) {
        lm->window[i] = (float)(0.5 - 0.5 * cos(2.0 * DS_PI * i / nf)); /* periodic Hann */
        wsum += (double)lm->window[i];
    }
    lm->scale = (float)(1.0 / (wsum * wsum));
    double top = hz_to_mel(cfg->sample_rate / 2.0);
    for (int32_t m = 0; m < cfg->mels; m++) {
        double lo = mel_to_hz(top * m / (cfg->mels + 1));
        double mid = mel_to_hz(top * (m + 1) / (cfg->mels + 1));
        double hi = mel_to_hz(top * (m + 2) / (cfg->mels + 1));
        for (int32_t k = 0; k < nb; k++) {
            double f = (double)k * cfg->sample_rate / nf, w = 0;
            if (f > lo && f <= mid)
                w = (f - lo) / (mid - lo);
            else if (f > mid && f < hi)
                w = (hi - f) / (hi - mid);
            lm->fb[(int64_t)m * nb + k] = (float)w;
        }
    }
    *out = lm;
    return OMNI_OK;
}

void omni_logmel_db(omni_logmel *lm, const float *x, int64_t n, float *out)
{
    const omni_audio_cfg *c = &lm->cfg;
    int32_t nf = c->n_fft, nb = nf / 2 + 1;
    for (int32_t t = 0; t < c->frames; t++) {
        int64_t start = (int64_t)t * c->hop;
        for (int32_t i = 0; i < nf; i++) {
            int64_t k = start + i;
            lm->frame[i] = k < n ? x[k] * lm->window[i] : 0.0f;
        }
        fftwf_execute(lm->plan);
        for (int32_t k = 0; k < nb; k++) {
            float re = lm->spec[k][0], im = lm->spec[k][1];
            /* One-sided: double every bin but DC and Nyquist, so a sine of amplitude A
             * has power A^2 / 4 * 2 = A^2 / 2 spread over its window lobe. */
            float two = (k == 0 || 2 * k == nf) ? 1.0f : 2.0f;
            lm->power[k] = (re * re + im * im) * lm->scale * two;
        }
        for (int32_t m = 0; m < c->mels; m++) {
            const float *w = lm->fb + (int64_t)m * nb;
            float acc = 0;
            for (int32_t k = 0; k < nb; k++)
                acc += w[k] * lm->power[k];
            out[(int64_t)m * c->frames + t] = 10.0f * log10f(acc + 1e-10f);
        }
    }
}

void omni_logmel_quantize(const omni_audio_cfg *cfg, const float *db, uint8_t *out)
{
    int64_t n = (int64_t)cfg->mels * cfg->frames;
    float top = -60.0f;
    for (int64_t i = 0; i < n; i++)
        if (db[i] > top)
            top = db[i];
    float range = cfg->top_db > 0 ? cfg->top_db : 80.0f;
    for (int64_t i = 0; i < n; i++) {
        float v = (db[i] - (top - range)) / range * 255.0f;
        out[i] = (uint8_t)lrintf(fminf(fmaxf(v, 0.0f), 255.0f));
    }
}

omni_status omni_audio_file_patches(const char *path, const omni_audio_cfg *a, omni_logmel *lm,
                                    float *db, uint8_t *spec_bytes, uint8_t *out)
{
    float *x = NULL, *y = NULL;
    int64_t n = 0, m = 0;
    int32_t rate = 0;
    omni_status st = omni_wav_load(path, &x, &n, &rate);
    if (st)
        return st;
    st = omni_resample(x, n, rate, a->sample_rate, &y, &m);
    omni_free(x);
    if (st)
        return st;
    omni_logmel_db(lm, y, m, db);
    omni_free(y);
    omni_logmel_quantize(a, db, spec_bytes);
    omni_image sp = {.h = a->mels, .w = a->frames, .c = 1, .px = spec_bytes};
    omni_image_patches(&sp, a->patch, out);
    return OMNI_OK;
}
