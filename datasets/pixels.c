/*
 * Control from pixels, Gato-style (docs/design.md §3): the steps of a control sample
 * with image patches in front of the observation tokens, the `images` array of an
 * episodes file, and the cart-pole drawn as a small picture (the demo's pixel task and
 * `act --env cartpole` for a task trained on pixels).
 */
#include "internal.h"

#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

omni_status ds_emit_control_steps(ds_pool *pool, int32_t task_tok, int64_t T, int64_t grid,
                                  int32_t patch_dim, const uint8_t *patches, int32_t obs_dim,
                                  const float *obs, int32_t act_dim, const float *act_f,
                                  const int32_t *act_i)
{
    int64_t step_len = grid + obs_dim + 1 + act_dim, n = 1 + T * step_len;
    int32_t *tok = omni_alloc(n, sizeof *tok, "control sample");
    uint8_t *loss = omni_alloc(n, 1, "control sample");
    omni_status st = tok && loss ? OMNI_OK : OMNI_ERR_NOMEM;
    if (!st) {
        int64_t k = 0;
        tok[k] = task_tok, loss[k++] = 0;
        for (int64_t t = 0; t < T; t++) {
            for (int64_t j = 0; j < grid; j++)
                tok[k] = OMNI_DS_PATCH, loss[k++] = 0;
            omni_control_obs_tokens(obs + t * obs_dim, obs_dim, tok + k);
            memset(loss + k, 0, (size_t)obs_dim);
            k += obs_dim;
            tok[k] = OMNI_TOK_SEP, loss[k++] = 0;
            omni_control_act_tokens(act_f ? act_f + t * act_dim : NULL,
                                    act_i ? act_i + t * act_dim : NULL, act_dim, tok + k);
            memset(loss + k, 1, (size_t)act_dim);
            k += act_dim;
        }
        st = ds_pool_append(pool, tok, loss, k, grid ? patches : NULL, T * grid,
                            grid ? patch_dim : 0);
    }
    omni_free(tok);
    omni_free(loss);
    return st;
}

omni_status ds_episode_images(int64_t file, const char *path, const ds_spec *spec, int64_t T,
                              int64_t lo, int64_t hi, uint8_t **patches, bool *has_images)
{
    hid_t f = (hid_t)file;
    *patches = NULL;
    *has_images = false;
    if (H5Lexists(f, "images", H5P_DEFAULT) <= 0)
        return OMNI_OK;
    hid_t d = H5Dopen2(f, "images", H5P_DEFAULT);
    if (d < 0)
        return omni_fail(OMNI_ERR_DATA, "%s: images is not a dataset", path);
    hid_t sp = H5Dget_space(d), ty = H5Dget_type(d);
    hsize_t dims[4] = {0, 0, 0, 1};
    int rank = H5Sget_simple_extent_ndims(sp);
    uint8_t *px = NULL;
    omni_status st = OMNI_OK;
    if (rank < 3 || rank > 4) {
        st = omni_fail(OMNI_ERR_DATA,
                       "%s: images has rank %d, expected [T, H, W] or [T, H, W, C] (uint8)", path,
                       rank);
        goto out;
    }
    H5Sget_simple_extent_dims(sp, dims, NULL);
    if (H5Tget_class(ty) != H5T_INTEGER || H5Tget_size(ty) != 1 ||
        H5Tget_sign(ty) != H5T_SGN_NONE) {
        st =
            omni_fail(OMNI_ERR_DATA, "%s: images is not uint8, expected 8-bit pixels 0..255", path);
        goto out;
    }
    if ((int64_t)dims[0] != T) {
        st = omni_fail(OMNI_ERR_DATA,
                       "%s: images has %llu steps but actions has %lld: expected one image per "
                       "step",
                       path, (unsigned long long)dims[0], (long long)T);
        goto out;
    }
    if (dims[3] != 1 && dims[3] != 3) {
        st = omni_fail(OMNI_ERR_DATA, "%s: images has %llu channels, expected 1 (grey) or 3 (RGB)",
                       path, (unsigned long long)dims[3]);
        goto out;
    }
    if (dims[1] < 1 || dims[2] < 1 || dims[1] > 4096 || dims[2] > 4096) {
        st = omni_fail(OMNI_ERR_DATA, "%s: images are %llux%llu pixels, expected 1..4096 a side",
                       path, (unsigned long long)dims[2], (unsigned long long)dims[1]);
        goto out;
    }
    int64_t per = (int64_t)dims[1] * (int64_t)dims[2] * (int64_t)dims[3];
    int32_t size = spec->image_size, ch = spec->image_channels, p = spec->image_patch;
    int64_t grid = (int64_t)(size / p) * (size / p), dim = (int64_t)p * p * ch;
    /* Steps [lo, hi) only: a build reads its episodes a block at a time. */
    OMNI_ASSERT(lo >= 0 && lo <= hi && hi <= T);
    int64_t n = hi - lo;
    px = omni_alloc(per * n > 0 ? per * n : 1, 1, "episode images");
    *patches = omni_alloc(n * grid * dim > 0 ? n * grid * dim : 1, 1, "episode image patches");
    if (!px || !*patches) {
        st = OMNI_ERR_NOMEM;
        goto out;
    }
    if (n > 0) {
        hsize_t start[4] = {(hsize_t)lo, 0, 0, 0},
                count[4] = {(hsize_t)n, dims[1], dims[2], dims[3]};
        hid_t ms = H5Screate_simple(rank, count, NULL);
        bool ok = ms >= 0 &&
                  H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, NULL, count, NULL) >= 0 &&
                  H5Dread(d, H5T_NATIVE_UINT8, ms, sp, H5P_DEFAULT, px) >= 0;
        if (ms >= 0)
            H5Sclose(ms);
        if (!ok) {
            st = omni_fail(OMNI_ERR_DATA, "%s: cannot read images", path);
            goto out;
        }
    }
    for (int64_t t = 0; t < n && !st; t++) {
        omni_image src = {.h = (int32_t)dims[1],
                          .w = (int32_t)dims[2],
                          .c = (int32_t)dims[3],
                          .px = px + t * per},
                   fit;
        char where[OMNI_PATH_MAX + 32];
        snprintf(where, sizeof where, "%s: images[%lld]", path, (long long)(lo + t));
        if ((st = omni_image_fit(&src, size, ch, spec->image_resize, where, &fit, NULL)))
            break;
        omni_image_patches(&fit, p, *patches + t * grid * dim);
        omni_image_free(&fit);
    }
    if (!st)
        *has_images = true;
out:
    omni_free(px);
    if (st) {
        omni_free(*patches);
        *patches = NULL;
    }
    H5Tclose(ty);
    H5Sclose(sp);
    H5Dclose(d);
    return st;
}

/* ---- the cart-pole as a picture ------------------------------------------------- */

void omni_cartpole_render(const omni_cartpole *env, int32_t size, int32_t channels, uint8_t *px)
{
    /* A chase view: the camera follows the cart, which sits at the bottom centre; the pole
     * rises from it, 0.7 of the picture long, drawn at 5 times its angle (the episode ends
     * at 12 degrees: drawn at 60, a lean of a degree moves the tip by a pixel or more in a
     * 32-pixel picture); a mark on the ground shows where the track's centre is (so the
     * cart's position is seen too). 4 x 4 samples a pixel, so smaller tilts still show in
     * the grey levels. */
    const float s = (float)size;
    const float base_x = 0.5f * s, base_y = 0.8f * s, len = 0.7f * s, half_w = 0.025f * s + 0.5f;
    const float st = sinf(5.0f * (float)env->theta), ct = cosf(5.0f * (float)env->theta);
    const float mark = 0.5f * s - (float)env->x / 2.4f * 0.5f * s;
    for (int32_t y = 0; y < size; y++)
        for (int32_t x = 0; x < size; x++) {
            float v = 0.0f;
            for (int sy = 0; sy < 4; sy++)
                for (int sx = 0; sx < 4; sx++) {
                    float fx = (float)x + (0.5f + (float)sx) / 4.0f;
                    float fy = (float)y + (0.5f + (float)sy) / 4.0f;
                    float dx = fx - base_x, dy = base_y - fy;
                    float along = dx * st + dy * ct, across = dx * ct - dy * st;
                    float c = 0.1f; /* sky */
                    if (fy >= base_y + 0.1f * s)
                        c = 0.35f; /* ground */
                    if (fy >= base_y + 0.1f * s && fabsf(fx - mark) < 0.04f * s + 0.5f)
                        c = 0.7f; /* the track's centre */
                    if (fabsf(dx) < 0.15f * s && fy >= base_y && fy < base_y + 0.1f * s)
                        c = 0.55f; /* the cart */
                    if (along >= 0 && along <= len && fabsf(across) <= half_w)
                        c = 1.0f; /* the pole */
                    v += c;
                }
            uint8_t g = (uint8_t)lrintf(v / 16.0f * 255.0f);
            for (int32_t k = 0; k < channels; k++)
                px[((int64_t)y * size + x) * channels + k] = g;
        }
}
