/*
 * Images: PNG (libpng's simplified API) and binary PGM/PPM, 8-bit; resizing to the
 * spec's square size; cutting into patches in raster order.
 */
#include "datasets.h"

#include <ctype.h>
#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>

void omni_image_free(omni_image *img)
{
    omni_free(img->px);
    memset(img, 0, sizeof *img);
}

static omni_status load_png(omni_image *img, const char *path, const uint8_t *b, size_t len)
{
    png_image pi;
    memset(&pi, 0, sizeof pi);
    pi.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&pi, b, len))
        return omni_fail(OMNI_ERR_DATA, "%s: not a readable PNG (%s)", path, pi.message);
    if (pi.format & PNG_FORMAT_FLAG_LINEAR) {
        png_image_free(&pi);
        return omni_fail(OMNI_ERR_DATA, "%s: a 16-bit PNG, expected 8-bit grey or RGB", path);
    }
    int c = (pi.format & PNG_FORMAT_FLAG_COLOR) ? 3 : 1;
    pi.format = c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    if (pi.width == 0 || pi.height == 0 || pi.width > 16384 || pi.height > 16384) {
        png_image_free(&pi);
        return omni_fail(OMNI_ERR_DATA, "%s: PNG of %ux%u pixels, expected 1..16384 a side", path,
                         pi.width, pi.height);
    }
    img->h = (int32_t)pi.height;
    img->w = (int32_t)pi.width;
    img->c = c;
    img->px = omni_alloc((int64_t)img->h * img->w * c, 1, "image pixels");
    if (!img->px) {
        png_image_free(&pi);
        return OMNI_ERR_NOMEM;
    }
    if (!png_image_finish_read(&pi, NULL, img->px, 0, NULL)) {
        omni_status st = omni_fail(OMNI_ERR_DATA, "%s: corrupt PNG (%s)", path, pi.message);
        png_image_free(&pi);
        omni_image_free(img);
        return st;
    }
    return OMNI_OK;
}

/* One whitespace-separated decimal header field of a PNM file, skipping comments. */
static bool pnm_field(const uint8_t *b, size_t len, size_t *at, long *v)
{
    size_t i = *at;
    for (;;) {
        while (i < len && isspace(b[i]))
            i++;
        if (i < len && b[i] == '#') {
            while (i < len && b[i] != '\n')
                i++;
            continue;
        }
        break;
    }
    if (i >= len || !isdigit(b[i]))
        return false;
    long r = 0;
    while (i < len && isdigit(b[i])) {
        r = r * 10 + (b[i] - '0');
        if (r > 1000000)
            return false;
        i++;
    }
    *v = r;
    *at = i;
    return true;
}

static omni_status load_pnm(omni_image *img, const char *path, const uint8_t *b, size_t len)
{
    int c = b[1] == '5' ? 1 : 3;
    size_t at = 2;
    long w, h, maxval;
    if (!pnm_field(b, len, &at, &w) || !pnm_field(b, len, &at, &h) ||
        !pnm_field(b, len, &at, &maxval) || at >= len || !isspace(b[at]))
        return omni_fail(OMNI_ERR_DATA, "%s: bad PGM/PPM header", path);
    at++;
    if (maxval < 1 || maxval > 255)
        return omni_fail(OMNI_ERR_DATA, "%s: PGM/PPM maxval %ld, expected 8-bit (1..255)", path,
                         maxval);
    if (w < 1 || h < 1 || w > 16384 || h > 16384)
        return omni_fail(OMNI_ERR_DATA, "%s: PGM/PPM of %ldx%ld pixels, expected 1..16384 a side",
                         path, w, h);
    size_t need = (size_t)w * (size_t)h * (size_t)c;
    if (len - at < need)
        return omni_fail(OMNI_ERR_DATA,
                         "%s: PGM/PPM pixel data truncated at byte %zu (%zu of %zu "
                         "bytes)",
                         path, len, len - at, need);
    img->h = (int32_t)h;
    img->w = (int32_t)w;
    img->c = c;
    img->px = omni_alloc((int64_t)need, 1, "image pixels");
    if (!img->px)
        return OMNI_ERR_NOMEM;
    for (size_t i = 0; i < need; i++)
        img->px[i] = (uint8_t)(maxval == 255 ? b[at + i] : (b[at + i] * 255 + maxval / 2) / maxval);
    return OMNI_OK;
}

omni_status omni_image_load(omni_image *img, const char *path)
{
    memset(img, 0, sizeof *img);
    char *bytes = NULL;
    size_t len = 0;
    omni_status st = omni_read_file(path, &bytes, &len);
    if (st)
        return omni_fail(OMNI_ERR_DATA, "%s: cannot read the image (missing or unreadable)", path);
    const uint8_t *b = (const uint8_t *)bytes;
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len >= 8 && !memcmp(b, png_sig, 8))
        st = load_png(img, path, b, len);
    else if (len >= 3 && b[0] == 'P' && (b[1] == '5' || b[1] == '6'))
        st = load_pnm(img, path, b, len);
    else
        st = omni_fail(OMNI_ERR_DATA, "%s: not a PNG or binary PGM/PPM (P5/P6) image", path);
    free(bytes);
    return st;
}

/* Resampling weights along one axis: for each output index, the input span and weights.
 * Shrinking: the fraction of each input pixel under the output pixel (area average);
 * enlarging: linear interpolation between the two nearest input pixel centres. */
typedef struct {
    int32_t first, count;
    float w[64];
} taps;

static void axis_taps(int32_t in, int32_t out, int32_t o, taps *t)
{
    double s = (double)in / (double)out;
    if (s > 1.0) {
        double a = o * s, b = (o + 1) * s;
        int32_t i0 = (int32_t)floor(a), i1 = (int32_t)ceil(b);
        if (i1 > in)
            i1 = in;
        if (i1 - i0 > 64)
            i1 = i0 + 64; /* only for shrinking by more than 64x: approximate */
        t->first = i0;
        t->count = i1 - i0;
        double sum = 0;
        for (int32_t i = i0; i < i1; i++) {
            double lo = i > a ? i : a, hi = i + 1 < b ? i + 1 : b;
            t->w[i - i0] = (float)(hi - lo);
            sum += hi - lo;
        }
        for (int32_t k = 0; k < t->count; k++)
            t->w[k] = (float)((double)t->w[k] / sum);
    } else {
        double x = (o + 0.5) * s - 0.5;
        if (x < 0)
            x = 0;
        int32_t i0 = (int32_t)floor(x);
        if (i0 > in - 1)
            i0 = in - 1;
        double f = x - i0;
        t->first = i0;
        if (i0 + 1 < in) {
            t->count = 2;
            t->w[0] = (float)(1 - f);
            t->w[1] = (float)f;
        } else {
            t->count = 1;
            t->w[0] = 1.0f;
        }
    }
}

omni_status omni_image_resize(const omni_image *src, int32_t size, int32_t channels,
                              omni_image *dst)
{
    memset(dst, 0, sizeof *dst);
    dst->h = dst->w = size;
    dst->c = channels;
    dst->px = omni_alloc((int64_t)size * size * channels, 1, "resized image");
    float *row = omni_alloc((int64_t)src->w * 3, sizeof *row, "resize row");
    taps *tx = omni_alloc(size, sizeof *tx, "resize taps");
    if (!dst->px || !row || !tx) {
        omni_free(row);
        omni_free(tx);
        omni_image_free(dst);
        return OMNI_ERR_NOMEM;
    }
    for (int32_t x = 0; x < size; x++)
        axis_taps(src->w, size, x, &tx[x]);
    for (int32_t y = 0; y < size; y++) {
        taps ty;
        axis_taps(src->h, size, y, &ty);
        /* Vertical pass into one float row of the source's channels. */
        for (int64_t i = 0; i < (int64_t)src->w * src->c; i++) {
            float acc = 0;
            for (int32_t k = 0; k < ty.count; k++)
                acc += ty.w[k] * src->px[((int64_t)(ty.first + k) * src->w) * src->c + i];
            row[i] = acc;
        }
        for (int32_t x = 0; x < size; x++) {
            float v[3] = {0, 0, 0};
            for (int32_t k = 0; k < tx[x].count; k++)
                for (int32_t ch = 0; ch < src->c; ch++)
                    v[ch] += tx[x].w[k] * row[(int64_t)(tx[x].first + k) * src->c + ch];
            uint8_t *o = dst->px + ((int64_t)y * size + x) * channels;
            if (channels == src->c) {
                for (int32_t ch = 0; ch < channels; ch++)
                    o[ch] = (uint8_t)lrintf(fminf(fmaxf(v[ch], 0.0f), 255.0f));
            } else if (channels == 1) {
                float g = 0.299f * v[0] + 0.587f * v[1] + 0.114f * v[2];
                o[0] = (uint8_t)lrintf(fminf(fmaxf(g, 0.0f), 255.0f));
            } else {
                for (int32_t ch = 0; ch < 3; ch++)
                    o[ch] = (uint8_t)lrintf(fminf(fmaxf(v[0], 0.0f), 255.0f));
            }
        }
    }
    omni_free(row);
    omni_free(tx);
    return OMNI_OK;
}

void omni_image_patches(const omni_image *img, int32_t patch, uint8_t *out)
{
    int32_t rows = img->h / patch, cols = img->w / patch, c = img->c;
    int64_t dim = (int64_t)patch * patch * c;
    for (int32_t r = 0; r < rows; r++)
        for (int32_t q = 0; q < cols; q++) {
            uint8_t *o = out + ((int64_t)r * cols + q) * dim;
            for (int32_t y = 0; y < patch; y++)
                memcpy(o + (int64_t)y * patch * c,
                       img->px + (((int64_t)r * patch + y) * img->w + (int64_t)q * patch) * c,
                       (size_t)patch * (size_t)c);
        }
}

omni_status omni_png_write(const char *path, const omni_image *img)
{
    png_image pi;
    memset(&pi, 0, sizeof pi);
    pi.version = PNG_IMAGE_VERSION;
    pi.width = (png_uint_32)img->w;
    pi.height = (png_uint_32)img->h;
    pi.format = img->c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    if (!png_image_write_to_file(&pi, path, 0, img->px, 0, NULL))
        return omni_fail(OMNI_ERR_IO, "%s: cannot write PNG (%s)", path, pi.message);
    return OMNI_OK;
}

omni_status omni_image_file_patches(const char *path, int32_t size, int32_t channels, int32_t patch,
                                    uint8_t *out)
{
    omni_image img, rs;
    omni_status st = omni_image_load(&img, path);
    if (st)
        return st;
    st = omni_image_resize(&img, size, channels, &rs);
    omni_image_free(&img);
    if (st)
        return st;
    omni_image_patches(&rs, patch, out);
    omni_image_free(&rs);
    return OMNI_OK;
}
