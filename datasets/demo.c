/*
 * `omnimoe data demo`: a small multimodal dataset made from nothing, deterministic
 * from a seed, through the same serialization as `data build`:
 *   shapes   image_to_text  a coloured shape drawn in one of five places -> "red circle top left"
 *   tones    audio_to_text  two to four tones from seven pitches -> their letters, "c a f"
 *   arith    text_to_text   "17+25" -> "42"
 *   cartpole control        episodes of the expert controller in the built-in cart-pole
 *   shapes_qa image_text_to_text  the shapes pictures asked "what colour is it?", "what shape
 *                           is it?", "where is it?" separately -> "red", "circle", "top left"
 *   gridworld control       walk to the goal on a 4x4 grid seen as a 32x32 picture (no
 *                           state vector; control from pixels, Gato-style)
 *   gridworld_vec control   the same episodes seen as the agent's (row, column) instead
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DEMO_SHAPES        3000
#define DEMO_TONES         1500
#define DEMO_ARITH         6000
#define DEMO_EPISODES      160
#define DEMO_STEPS         200
#define DEMO_QA_PICTURES   1200
#define DEMO_GRID_EPISODES 2000

static const char *const colour_names[] = {"red", "green", "blue", "yellow", "white"};
static const uint8_t colour_rgb[][3] = {
    {220, 40, 40}, {40, 200, 60}, {50, 80, 230}, {230, 210, 40}, {235, 235, 235}};
static const char *const shape_names[] = {"circle", "square", "triangle", "cross"};
static const char *const place_names[] = {"top left", "top right", "bottom left", "bottom right",
                                          "center"};

/* Is pixel (x, y) inside shape k of radius r centred at (cx, cy)? */
static bool inside(int k, float x, float y, float cx, float cy, float r)
{
    float dx = x - cx, dy = y - cy;
    switch (k) {
    case 0:
        return dx * dx + dy * dy <= r * r;
    case 1:
        return fabsf(dx) <= r * 0.85f && fabsf(dy) <= r * 0.85f;
    case 2: /* apex up */
        return dy >= -r && dy <= r * 0.8f && fabsf(dx) <= (dy + r) * 0.6f;
    default:
        return (fabsf(dx) <= r * 0.3f && fabsf(dy) <= r) ||
               (fabsf(dy) <= r * 0.3f && fabsf(dx) <= r);
    }
}

/* Draw picture i of stream r (words from w on): a shape of one of five colours in one of
 * five places, on a dark noisy background. */
static void draw_shape(const omni_rng *r, uint64_t w, omni_image *img, int *colour, int *shape,
                       int *place)
{
    const int32_t size = img->w, c = img->c;
    *colour = (int)(omni_rng_u32(r, w) % 5), *shape = (int)(omni_rng_u32(r, w + 1) % 4);
    *place = (int)(omni_rng_u32(r, w + 2) % 5);
    float cx = *place == 4 ? 16.0f : (*place % 2 ? 24.0f : 8.0f);
    float cy = *place == 4 ? 16.0f : (*place < 2 ? 8.0f : 24.0f);
    cx += 3.0f * omni_rng_uniform(r, w + 3) - 1.5f;
    cy += 3.0f * omni_rng_uniform(r, w + 4) - 1.5f;
    float rad = 4.5f + 2.0f * omni_rng_uniform(r, w + 5);
    uint8_t bg = (uint8_t)(20 + omni_rng_u32(r, w + 6) % 40);
    for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++) {
            bool in = inside(*shape, (float)x + 0.5f, (float)y + 0.5f, cx, cy, rad);
            for (int ch = 0; ch < c; ch++) {
                float noise = 16.0f * omni_rng_uniform(r, w + 16 + (uint64_t)(y * size + x) * 3 +
                                                              (uint64_t)ch);
                float v = (in ? colour_rgb[*colour][ch] : bg) + noise - 8.0f;
                img->px[(y * size + x) * c + ch] = (uint8_t)fminf(fmaxf(v, 0.0f), 255.0f);
            }
        }
}

/* A picture of the shapes tasks (32 x 32 RGB), its 8 x 8 patches, and what it shows. */
typedef struct {
    omni_image img;
    uint8_t *patches;
    int colour, shape, place;
} shape_picture;

static omni_status picture_alloc(shape_picture *p)
{
    const int32_t size = 32, c = 3;
    *p = (shape_picture){.img = {.h = size, .w = size, .c = c}};
    p->img.px = omni_alloc(size * size * c, 1, "demo image");
    p->patches = omni_alloc(size * size * c, 1, "demo patches");
    return p->img.px && p->patches ? OMNI_OK : OMNI_ERR_NOMEM;
}

static void picture_free(shape_picture *p)
{
    omni_free(p->img.px);
    omni_free(p->patches);
}

/* Picture i of stream r (words from w on, as draw_shape), and its patches. */
static void picture_draw(shape_picture *p, const omni_rng *r, uint64_t w)
{
    draw_shape(r, w, &p->img, &p->colour, &p->shape, &p->place);
    omni_image_patches(&p->img, 8, p->patches);
}

static omni_status demo_shapes(ds_pool *all, ds_task *t, uint64_t seed, ds_progress *pr)
{
    shape_picture p;
    omni_status st = picture_alloc(&p);
    omni_rng r;
    omni_rng_init(&r, seed, "demo/shapes", 0);
    for (int64_t i = 0; i < DEMO_SHAPES && !st; i++) {
        picture_draw(&p, &r, (uint64_t)i * 4096);
        char caption[64];
        snprintf(caption, sizeof caption, "%s %s %s", colour_names[p.colour], shape_names[p.shape],
                 place_names[p.place]);
        st = ds_emit_patches_to_text(all, OMNI_TOK_TASK0 + t->index, p.patches, t->rows * t->cols,
                                     t->patch_dim, (const uint8_t *)caption,
                                     (int64_t)strlen(caption));
        ds_progress_update(pr, i + 1, DEMO_SHAPES);
    }
    picture_free(&p);
    return st;
}

/* The questions of shapes_qa, asked separately of the same picture (OFA-style). */
static const char *const qa_questions[3] = {"what colour is it?", "what shape is it?",
                                            "where is it?"};

/* shapes_qa: pictures drawn as for shapes (another stream), each with its three questions;
 * the three samples of a picture go to the same split (val_fraction of the pictures), so
 * validation asks about pictures never seen in training. Fills t->split directly. */
static omni_status demo_shapes_qa(ds_task *t, uint64_t seed, ds_progress *pr)
{
    shape_picture p;
    omni_status st = picture_alloc(&p);
    omni_rng r;
    omni_rng_init(&r, seed, "demo/shapes_qa", 0);
    for (int64_t i = 0; i < DEMO_QA_PICTURES && !st; i++) {
        picture_draw(&p, &r, (uint64_t)i * 4096);
        bool val = omni_rng_uniform(&r, (uint64_t)i * 4096 + 4095) < (float)t->val_fraction;
        ds_pool *pool = &t->split[val ? OMNI_SPLIT_VAL : OMNI_SPLIT_TRAIN];
        const char *answers[3] = {colour_names[p.colour], shape_names[p.shape],
                                  place_names[p.place]};
        for (int q = 0; q < 3 && !st; q++)
            st = ds_emit_prompted(pool, OMNI_TOK_TASK0 + t->index, p.patches, t->rows * t->cols,
                                  t->patch_dim, (const uint8_t *)qa_questions[q],
                                  (int64_t)strlen(qa_questions[q]), (const uint8_t *)answers[q],
                                  (int64_t)strlen(answers[q]));
        ds_progress_update(pr, i + 1, DEMO_QA_PICTURES);
    }
    if (!st && t->split[OMNI_SPLIT_TRAIN].n == 0)
        st = omni_fail(OMNI_ERR_INTERNAL, "demo: shapes_qa drew no training picture");
    picture_free(&p);
    return st;
}

static const float tone_hz[7] = {250, 400, 630, 1000, 1600, 2500, 3500};

static omni_status demo_tones(ds_pool *all, ds_task *t, const omni_audio_cfg *a, uint64_t seed,
                              ds_progress *pr)
{
    int64_t n = (int64_t)a->frames * a->hop; /* the clip the spectrogram covers */
    float *x = omni_alloc(n, sizeof *x, "demo audio");
    float *db = omni_alloc((int64_t)a->mels * a->frames, sizeof *db, "demo spectrogram");
    uint8_t *bytes = omni_alloc((int64_t)a->mels * a->frames, 1, "demo spectrogram bytes");
    uint8_t *patches = omni_alloc((int64_t)a->mels * a->frames, 1, "demo patches");
    omni_logmel *lm = NULL;
    omni_status st = x && db && bytes && patches ? omni_logmel_create(&lm, a) : OMNI_ERR_NOMEM;
    omni_rng r, noise;
    omni_rng_init(&r, seed, "demo/tones", 0);
    omni_rng_init(&noise, seed, "demo/tones/noise", 0);
    for (int64_t i = 0; i < DEMO_TONES && !st; i++) {
        uint64_t w = (uint64_t)i * 64;
        int count = 2 + (int)(omni_rng_u32(&r, w) % 3);
        int64_t seg = n / count;
        char caption[16] = "";
        memset(x, 0, (size_t)n * sizeof *x);
        for (int k = 0; k < count; k++) {
            int note = (int)(omni_rng_u32(&r, w + 1 + (uint64_t)k) % 7);
            float amp = 0.2f + 0.6f * omni_rng_uniform(&r, w + 8 + (uint64_t)k);
            float phase = 6.2831853f * omni_rng_uniform(&r, w + 16 + (uint64_t)k);
            int64_t fade = a->sample_rate / 100;
            for (int64_t j = 0; j < seg; j++) {
                float env = 1.0f;
                if (j < fade)
                    env = (float)j / (float)fade;
                else if (seg - j < fade)
                    env = (float)(seg - j) / (float)fade;
                x[k * seg + j] =
                    amp * env *
                    sinf(phase + 6.2831853f * tone_hz[note] * (float)j / (float)a->sample_rate);
            }
            size_t l = strlen(caption);
            snprintf(caption + l, sizeof caption - l, "%s%c", k ? " " : "", 'a' + note);
        }
        for (int64_t j = 0; j < n; j++)
            x[j] += 0.01f * omni_rng_normal(&noise, (uint64_t)(i * n + j));
        omni_logmel_db(lm, x, n, db);
        omni_logmel_quantize(a, db, bytes);
        omni_image sp = {.h = a->mels, .w = a->frames, .c = 1, .px = bytes};
        omni_image_patches(&sp, a->patch, patches);
        st = ds_emit_patches_to_text(all, OMNI_TOK_TASK0 + t->index, patches, t->rows * t->cols,
                                     t->patch_dim, (const uint8_t *)caption,
                                     (int64_t)strlen(caption));
        ds_progress_update(pr, i + 1, DEMO_TONES);
    }
    omni_logmel_free(lm);
    omni_free(x);
    omni_free(db);
    omni_free(bytes);
    omni_free(patches);
    return st;
}

static omni_status demo_arith(ds_pool *all, ds_task *t, uint64_t seed)
{
    omni_rng r;
    omni_rng_init(&r, seed, "demo/arith", 0);
    omni_status st = OMNI_OK;
    for (int64_t i = 0; i < DEMO_ARITH && !st; i++) {
        int a = (int)(omni_rng_u32(&r, 2 * (uint64_t)i) % 100);
        int b = (int)(omni_rng_u32(&r, 2 * (uint64_t)i + 1) % 100);
        char in[16], out[16];
        snprintf(in, sizeof in, "%d+%d", a, b);
        snprintf(out, sizeof out, "%d", a + b);
        st = ds_emit_text_to_text(all, OMNI_TOK_TASK0 + t->index, (const uint8_t *)in,
                                  (int64_t)strlen(in), (const uint8_t *)out, (int64_t)strlen(out));
    }
    return st;
}

static int32_t expert_policy(void *ctx, const float *obs, int64_t t)
{
    (void)ctx;
    (void)t;
    return omni_cartpole_expert(obs);
}

static omni_status demo_cartpole(ds_pool *all, ds_task *t, uint64_t seed, ds_progress *pr)
{
    float *obs = omni_alloc(DEMO_STEPS * OMNI_CARTPOLE_OBS, sizeof *obs, "demo observations");
    int32_t *act = omni_alloc(DEMO_STEPS, sizeof *act, "demo actions");
    omni_status st = obs && act ? OMNI_OK : OMNI_ERR_NOMEM;
    for (int64_t e = 0; e < DEMO_EPISODES && !st; e++) {
        int64_t steps =
            omni_cartpole_rollout(seed, (uint64_t)e, DEMO_STEPS, expert_policy, NULL, obs, act);
        st = ds_emit_control(all, OMNI_TOK_TASK0 + t->index, steps, OMNI_CARTPOLE_OBS, obs, 1, NULL,
                             act);
        ds_progress_update(pr, e + 1, DEMO_EPISODES);
    }
    omni_free(obs);
    omni_free(act);
    return st;
}

/* gridworld, gridworld_vec: the grid world's expert episodes, the same ones for both tasks,
 * each step observed as the 32 x 32 picture of the grid (one patch a cell) when the task
 * has images, and as the agent's row and column when it has observations. */
static omni_status demo_gridworld(ds_pool *all, ds_task *t, uint64_t seed, ds_progress *pr)
{
    const int32_t size = 32, c = 3, patch = 8;
    const int64_t T = OMNI_GRIDWORLD_STEPS;
    int64_t grid = t->images ? (int64_t)t->rows * t->cols : 0, dim = t->patch_dim;
    uint8_t *px = omni_alloc(size * size * c, 1, "demo picture");
    uint8_t *patches = grid ? omni_alloc(T * grid * dim, 1, "demo grid patches") : NULL;
    float *obs = omni_alloc(T * OMNI_GRIDWORLD_OBS, sizeof *obs, "demo observations");
    int32_t *act = omni_alloc(T, sizeof *act, "demo actions");
    omni_status st = px && (patches || !grid) && obs && act ? OMNI_OK : OMNI_ERR_NOMEM;
    for (int64_t e = 0; e < DEMO_GRID_EPISODES && !st; e++) {
        omni_gridworld g;
        omni_gridworld_reset(&g, seed ^ 0x9e3779b97f4a7c15ULL, (uint64_t)e);
        int64_t n = 0;
        while (!g.done && n < T) {
            if (grid) {
                omni_gridworld_render(&g, size, c, px);
                omni_image img = {.h = size, .w = size, .c = c, .px = px};
                omni_image_patches(&img, patch, patches + n * grid * dim);
            }
            omni_gridworld_observe(&g, obs + n * OMNI_GRIDWORLD_OBS);
            act[n] = omni_gridworld_expert(&g);
            omni_gridworld_step(&g, act[n++]);
        }
        st = ds_emit_control_steps(all, OMNI_TOK_TASK0 + t->index, n, grid, t->patch_dim, patches,
                                   t->obs_dim, t->obs_dim ? obs : NULL, 1, NULL, act);
        ds_progress_update(pr, e + 1, DEMO_GRID_EPISODES);
    }
    omni_free(px);
    omni_free(patches);
    omni_free(obs);
    omni_free(act);
    return st;
}

omni_status omni_data_demo(const char *out_path, uint64_t seed, FILE *progress)
{
    ds_file *df = calloc(1, sizeof *df);
    if (!df)
        return omni_fail(OMNI_ERR_NOMEM, "cannot allocate the demo dataset");
    df->seed = seed;
    df->image_size = 32, df->image_channels = 3, df->image_patch = 8;
    df->audio = (omni_audio_cfg){.sample_rate = 8000,
                                 .mels = 32,
                                 .frames = 64,
                                 .patch = 8,
                                 .n_fft = 256,
                                 .hop = 80,
                                 .top_db = 80.0f};
    static const struct {
        const char *name;
        omni_task_kind kind;
    } tasks[] = {{"shapes", OMNI_KIND_IMAGE_TO_TEXT},         {"tones", OMNI_KIND_AUDIO_TO_TEXT},
                 {"arith", OMNI_KIND_TEXT_TO_TEXT},           {"cartpole", OMNI_KIND_CONTROL},
                 {"shapes_qa", OMNI_KIND_IMAGE_TEXT_TO_TEXT}, {"gridworld", OMNI_KIND_CONTROL},
                 {"gridworld_vec", OMNI_KIND_CONTROL}};
    omni_status st = OMNI_OK;
    for (int i = 0; i < (int)(sizeof tasks / sizeof tasks[0]) && !st; i++) {
        ds_task *t = &df->tasks[i];
        snprintf(t->name, sizeof t->name, "%s", tasks[i].name);
        t->kind = tasks[i].kind;
        t->index = i;
        t->val_fraction = 0.1;
        if (t->kind == OMNI_KIND_CONTROL)
            t->obs_dim = OMNI_CARTPOLE_OBS, t->act_dim = 1, t->discrete = 1;
        if (i == 5)
            t->obs_dim = 0, t->images = 1; /* gridworld: pictures, no state vector */
        if (i == 6)
            t->obs_dim = OMNI_GRIDWORLD_OBS; /* gridworld_vec: the state vector */
        ds_task_geometry(df, t);
        df->n_tasks++;
        ds_pool all = {0};
        ds_progress pr;
        ds_progress_start(&pr, progress, t->name);
        if (t->kind == OMNI_KIND_IMAGE_TEXT_TO_TEXT) {
            st = demo_shapes_qa(t, seed, &pr);
            if (!st)
                ds_progress_end(&pr, t->split[0].n + t->split[1].n);
            continue;
        }
        switch (t->kind) {
        case OMNI_KIND_IMAGE_TO_TEXT:
            st = demo_shapes(&all, t, seed, &pr);
            break;
        case OMNI_KIND_AUDIO_TO_TEXT:
            st = demo_tones(&all, t, &df->audio, seed, &pr);
            break;
        case OMNI_KIND_TEXT_TO_TEXT:
            st = demo_arith(&all, t, seed);
            break;
        default:
            st = i >= 5 ? demo_gridworld(&all, t, seed, &pr) : demo_cartpole(&all, t, seed, &pr);
        }
        if (st) {
            ds_pool_free(&all);
            break;
        }
        ds_progress_end(&pr, all.n);
        st = ds_split(t, &all, seed, t->patch_dim);
    }
    if (!st)
        st = ds_write(df, out_path);
    ds_file_free(df);
    free(df);
    return st;
}
