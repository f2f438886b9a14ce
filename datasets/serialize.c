/*
 * Serialization of samples (docs/design.md §3): the token layout of each task kind, the
 * growable sample pools, the train/validation split, mu-law value bins, and the small
 * helpers the part shares (kind names, paths, progress).
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const kind_names[] = {
    [OMNI_KIND_TEXT] = "text",
    [OMNI_KIND_TEXT_TO_TEXT] = "text_to_text",
    [OMNI_KIND_IMAGE_TO_TEXT] = "image_to_text",
    [OMNI_KIND_AUDIO_TO_TEXT] = "audio_to_text",
    [OMNI_KIND_CONTROL] = "control",
    [OMNI_KIND_IMAGE_TEXT_TO_TEXT] = "image_text_to_text",
    [OMNI_KIND_AUDIO_TEXT_TO_TEXT] = "audio_text_to_text",
};
_Static_assert(sizeof kind_names / sizeof kind_names[0] == OMNI_KIND_COUNT,
               "a name for every task kind");

const char *omni_task_kind_name(omni_task_kind k)
{
    if ((int)k < 0 || k >= OMNI_KIND_COUNT)
        return "unknown";
    return kind_names[k];
}

int omni_task_kind_parse(const char *name)
{
    for (int k = 0; k < OMNI_KIND_COUNT; k++)
        if (!strcmp(name, kind_names[k]))
            return k;
    return -1;
}

bool omni_kind_image(omni_task_kind k)
{
    return k == OMNI_KIND_IMAGE_TO_TEXT || k == OMNI_KIND_IMAGE_TEXT_TO_TEXT;
}

bool omni_kind_audio(omni_task_kind k)
{
    return k == OMNI_KIND_AUDIO_TO_TEXT || k == OMNI_KIND_AUDIO_TEXT_TO_TEXT;
}

bool omni_kind_to_text(omni_task_kind k)
{
    return k == OMNI_KIND_TEXT_TO_TEXT || omni_kind_image(k) || omni_kind_audio(k);
}

bool omni_kind_prompted(omni_task_kind k)
{
    return k == OMNI_KIND_IMAGE_TEXT_TO_TEXT || k == OMNI_KIND_AUDIO_TEXT_TO_TEXT;
}

const char *omni_task_kind_list(void)
{
    return "text, text_to_text, image_to_text, audio_to_text, control, image_text_to_text or "
           "audio_text_to_text";
}

/* ---- mu-law and bins ---------------------------------------------------------- */

float omni_mulaw(float x)
{
    float a = fabsf(x);
    float y = log1pf(a * OMNI_MULAW_MU) / logf(OMNI_MULAW_M * OMNI_MULAW_MU + 1.0f);
    return x < 0 ? -y : y;
}

float omni_mulaw_inverse(float y)
{
    float a = fabsf(y);
    float x = (powf(OMNI_MULAW_M * OMNI_MULAW_MU + 1.0f, a) - 1.0f) / OMNI_MULAW_MU;
    return y < 0 ? -x : x;
}

int32_t omni_value_bin(float x)
{
    if (isnan(x))
        return OMNI_BINS / 2;
    float y = omni_mulaw(x);
    if (y < -1.0f)
        y = -1.0f;
    if (y > 1.0f)
        y = 1.0f;
    int32_t b = (int32_t)floorf((y + 1.0f) * 0.5f * (float)OMNI_BINS);
    if (b < 0)
        b = 0;
    if (b >= OMNI_BINS)
        b = OMNI_BINS - 1;
    return b;
}

float omni_bin_value(int32_t bin)
{
    float y = ((float)bin + 0.5f) / (float)OMNI_BINS * 2.0f - 1.0f;
    return omni_mulaw_inverse(y);
}

void omni_control_obs_tokens(const float *obs, int32_t obs_dim, int32_t *out)
{
    for (int32_t j = 0; j < obs_dim; j++)
        out[j] = OMNI_TOK_BIN0 + omni_value_bin(obs[j]);
}

void omni_control_act_tokens(const float *act_f, const int32_t *act_i, int32_t act_dim,
                             int32_t *out)
{
    for (int32_t j = 0; j < act_dim; j++)
        out[j] = OMNI_TOK_BIN0 + (act_i ? act_i[j] : omni_value_bin(act_f[j]));
}

bool omni_control_act_values(const int32_t *tok, int32_t act_dim, bool discrete, float *act_f,
                             int32_t *act_i)
{
    for (int32_t j = 0; j < act_dim; j++)
        if (tok[j] < OMNI_TOK_BIN0 || tok[j] >= OMNI_TOK_BIN0 + OMNI_BINS)
            return false;
    for (int32_t j = 0; j < act_dim; j++) {
        if (discrete)
            act_i[j] = tok[j] - OMNI_TOK_BIN0;
        else
            act_f[j] = omni_bin_value(tok[j] - OMNI_TOK_BIN0);
    }
    return true;
}

float omni_patch_value(uint8_t v, int32_t patch)
{
    return ((float)v / 255.0f * 2.0f - 1.0f) / sqrtf((float)patch);
}

/* ---- pools -------------------------------------------------------------------- */

static omni_status grow(void **p, int64_t *cap, int64_t need, size_t elem, const char *what)
{
    if (need <= *cap)
        return OMNI_OK;
    int64_t c = *cap ? *cap : 256;
    while (c < need)
        c *= 2;
    size_t bytes;
    if (!omni_mul_size(c, elem, &bytes))
        return omni_fail(OMNI_ERR_NOMEM, "%s: %lld elements overflow", what, (long long)c);
    void *q = realloc(*p, bytes);
    if (!q)
        return omni_fail(OMNI_ERR_NOMEM, "%s: cannot allocate %zu bytes", what, bytes);
    *p = q;
    *cap = c;
    return OMNI_OK;
}

omni_status ds_pool_append(ds_pool *p, const int32_t *tok, const uint8_t *loss, int64_t n_el,
                           const uint8_t *patch, int64_t n_patch, int32_t patch_dim)
{
    omni_status st;
    int64_t cap_off = p->cap_n, cap_poff = p->cap_n;
    if ((st = grow((void **)&p->off, &cap_off, p->n + 2, sizeof *p->off, "sample offsets")))
        return st;
    if (patch_dim > 0 &&
        (st = grow((void **)&p->poff, &cap_poff, p->n + 2, sizeof *p->poff, "patch offsets")))
        return st;
    p->cap_n = patch_dim > 0 && cap_poff < cap_off ? cap_poff : cap_off;
    if (p->n == 0) {
        p->off[0] = 0;
        if (patch_dim > 0)
            p->poff[0] = 0;
    }
    int64_t el = p->off[p->n], cap_tok = p->cap_el, cap_loss = p->cap_el;
    if ((st = grow((void **)&p->tok, &cap_tok, el + n_el, sizeof *p->tok, "tokens")) ||
        (st = grow((void **)&p->loss, &cap_loss, el + n_el, sizeof *p->loss, "loss flags")))
        return st;
    p->cap_el = cap_tok < cap_loss ? cap_tok : cap_loss;
    memcpy(p->tok + el, tok, (size_t)n_el * sizeof *tok);
    memcpy(p->loss + el, loss, (size_t)n_el);
    p->off[p->n + 1] = el + n_el;
    if (patch_dim > 0) {
        int64_t pe = p->poff[p->n];
        if ((st =
                 grow((void **)&p->patch, &p->cap_patch, (pe + n_patch) * patch_dim, 1, "patches")))
            return st;
        memcpy(p->patch + pe * patch_dim, patch, (size_t)(n_patch * patch_dim));
        p->poff[p->n + 1] = pe + n_patch;
    }
    p->n++;
    return OMNI_OK;
}

void ds_pool_free(ds_pool *p)
{
    free(p->off);
    free(p->tok);
    free(p->loss);
    free(p->poff);
    free(p->patch);
    memset(p, 0, sizeof *p);
}

void ds_file_free(ds_file *f)
{
    for (int t = 0; t < f->n_tasks; t++)
        for (int s = 0; s < OMNI_SPLIT_COUNT; s++)
            ds_pool_free(&f->tasks[t].split[s]);
    f->n_tasks = 0;
}

typedef struct {
    uint32_t key;
    int64_t i;
} split_key;

static int cmp_key(const void *a, const void *b)
{
    const split_key *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

omni_status ds_split(ds_task *t, ds_pool *all, uint64_t seed, int32_t patch_dim)
{
    omni_status st = OMNI_OK;
    int64_t n = all->n;
    int64_t n_val = (int64_t)llround((double)n * t->val_fraction);
    if (n_val >= n)
        n_val = n - 1;
    if (n_val < 0)
        n_val = 0;
    char name[OMNI_NAME_MAX + 8];
    snprintf(name, sizeof name, "split/%s", t->name);
    omni_rng r;
    omni_rng_init(&r, seed, name, 0);
    split_key *keys = omni_alloc(n, sizeof *keys, "split keys");
    uint8_t *is_val = omni_alloc(n, 1, "split flags");
    if (!keys || !is_val) {
        st = OMNI_ERR_NOMEM;
        goto out;
    }
    for (int64_t i = 0; i < n; i++)
        keys[i] = (split_key){omni_rng_u32(&r, (uint64_t)i), i};
    qsort(keys, (size_t)n, sizeof *keys, cmp_key);
    for (int64_t i = 0; i < n_val; i++)
        is_val[keys[i].i] = 1;
    for (int64_t i = 0; i < n; i++) {
        ds_pool *dst = &t->split[is_val[i] ? OMNI_SPLIT_VAL : OMNI_SPLIT_TRAIN];
        int64_t a = all->off[i], b = all->off[i + 1];
        const uint8_t *pp = NULL;
        int64_t np = 0;
        if (patch_dim > 0) {
            pp = all->patch + all->poff[i] * patch_dim;
            np = all->poff[i + 1] - all->poff[i];
        }
        if ((st = ds_pool_append(dst, all->tok + a, all->loss + a, b - a, pp, np, patch_dim)))
            goto out;
    }
out:
    omni_free(keys);
    omni_free(is_val);
    ds_pool_free(all);
    return st;
}

/* The same split without holding the samples (a streaming build): the n_val smallest
 * (key, index) pairs found by a radix selection over the keys, which are recomputed
 * rather than stored: top 16 bits, then low 16 bits, then the index among equal keys. */
omni_status ds_split_plan_make(ds_split_plan *p, const char *task, int64_t n, double val_fraction,
                               uint64_t seed)
{
    memset(p, 0, sizeof *p);
    p->n = n;
    p->n_val = (int64_t)llround((double)n * val_fraction);
    if (p->n_val >= n)
        p->n_val = n - 1;
    if (p->n_val < 0)
        p->n_val = 0;
    char name[OMNI_NAME_MAX + 8];
    snprintf(name, sizeof name, "split/%s", task);
    omni_rng_init(&p->rng, seed, name, 0);
    if (p->n_val == 0)
        return OMNI_OK;
    int64_t *hist = omni_alloc(65536, sizeof *hist, "split histogram");
    if (!hist)
        return OMNI_ERR_NOMEM;
    int64_t need = p->n_val; /* the rank (1-based) of the last validation pair */
    memset(hist, 0, 65536 * sizeof *hist);
    for (int64_t i = 0; i < n; i++)
        hist[omni_rng_u32(&p->rng, (uint64_t)i) >> 16]++;
    uint32_t hi = 0;
    while (need > hist[hi])
        need -= hist[hi++];
    memset(hist, 0, 65536 * sizeof *hist);
    for (int64_t i = 0; i < n; i++) {
        uint32_t k = omni_rng_u32(&p->rng, (uint64_t)i);
        if (k >> 16 == hi)
            hist[k & 0xffff]++;
    }
    uint32_t lo = 0;
    while (need > hist[lo])
        need -= hist[lo++];
    p->key = hi << 16 | lo;
    for (int64_t i = 0; i < n; i++)
        if (omni_rng_u32(&p->rng, (uint64_t)i) == p->key && --need == 0) {
            p->last = i;
            break;
        }
    omni_free(hist);
    return OMNI_OK;
}

bool ds_split_plan_is_val(const ds_split_plan *p, int64_t i)
{
    if (p->n_val == 0)
        return false;
    uint32_t k = omni_rng_u32(&p->rng, (uint64_t)i);
    return k < p->key || (k == p->key && i <= p->last);
}

/* ---- the task kinds ----------------------------------------------------------- */

/* A per-thread scratch sequence: the builder is single-threaded, but keep it simple
 * and reentrant by growing a buffer owned by the call. */
typedef struct {
    int32_t *tok;
    uint8_t *loss;
    int64_t n, cap;
} seq;

static omni_status seq_push(seq *s, int32_t tok, uint8_t loss)
{
    if (s->n == s->cap) {
        int64_t c = s->cap ? s->cap * 2 : 1024;
        int32_t *t = realloc(s->tok, (size_t)c * sizeof *t);
        if (!t)
            return omni_fail(OMNI_ERR_NOMEM, "cannot allocate a sample of %lld elements",
                             (long long)c);
        s->tok = t;
        uint8_t *l = realloc(s->loss, (size_t)c);
        if (!l)
            return omni_fail(OMNI_ERR_NOMEM, "cannot allocate a sample of %lld elements",
                             (long long)c);
        s->loss = l;
        s->cap = c;
    }
    s->tok[s->n] = tok;
    s->loss[s->n] = loss;
    s->n++;
    return OMNI_OK;
}

static void seq_free(seq *s)
{
    free(s->tok);
    free(s->loss);
}

omni_status ds_emit_text(ds_pool *pool, int32_t task_tok, const uint8_t *bytes, int64_t n, bool eos)
{
    seq s = {0};
    omni_status st = seq_push(&s, task_tok, 0);
    for (int64_t i = 0; !st && i < n; i++)
        st = seq_push(&s, bytes[i], 1);
    if (!st && eos)
        st = seq_push(&s, OMNI_TOK_EOS, 1);
    if (!st)
        st = ds_pool_append(pool, s.tok, s.loss, s.n, NULL, 0, 0);
    seq_free(&s);
    return st;
}

omni_status ds_emit_text_to_text(ds_pool *pool, int32_t task_tok, const uint8_t *in, int64_t n_in,
                                 const uint8_t *out, int64_t n_out)
{
    seq s = {0};
    omni_status st = seq_push(&s, task_tok, 0);
    for (int64_t i = 0; !st && i < n_in; i++)
        st = seq_push(&s, in[i], 0);
    if (!st)
        st = seq_push(&s, OMNI_TOK_SEP, 0);
    for (int64_t i = 0; !st && i < n_out; i++)
        st = seq_push(&s, out[i], 1);
    if (!st)
        st = seq_push(&s, OMNI_TOK_EOS, 1);
    if (!st)
        st = ds_pool_append(pool, s.tok, s.loss, s.n, NULL, 0, 0);
    seq_free(&s);
    return st;
}

omni_status ds_emit_patches_to_text(ds_pool *pool, int32_t task_tok, const uint8_t *patches,
                                    int64_t n_patch, int32_t patch_dim, const uint8_t *text,
                                    int64_t n_text)
{
    seq s = {0};
    omni_status st = seq_push(&s, task_tok, 0);
    for (int64_t i = 0; !st && i < n_patch; i++)
        st = seq_push(&s, OMNI_DS_PATCH, 0);
    if (!st)
        st = seq_push(&s, OMNI_TOK_SEP, 0);
    for (int64_t i = 0; !st && i < n_text; i++)
        st = seq_push(&s, text[i], 1);
    if (!st)
        st = seq_push(&s, OMNI_TOK_EOS, 1);
    if (!st)
        st = ds_pool_append(pool, s.tok, s.loss, s.n, patches, n_patch, patch_dim);
    seq_free(&s);
    return st;
}

omni_status ds_emit_control(ds_pool *pool, int32_t task_tok, int64_t T, int32_t obs_dim,
                            const float *obs, int32_t act_dim, const float *act_f,
                            const int32_t *act_i)
{
    return ds_emit_control_steps(pool, task_tok, T, 0, 0, NULL, obs_dim, obs, act_dim, act_f,
                                 act_i);
}

/* ---- paths and progress ------------------------------------------------------- */

omni_status ds_path_join(const char *base, const char *rel, char *out, size_t cap)
{
    int n;
    const char *slash = strrchr(base, '/');
    if (rel[0] == '/' || !slash)
        n = snprintf(out, cap, "%s", rel);
    else
        n = snprintf(out, cap, "%.*s/%s", (int)(slash - base), base, rel);
    if (n < 0 || (size_t)n >= cap)
        return omni_fail(OMNI_ERR_DATA, "%s: path '%s' is too long", base, rel);
    return OMNI_OK;
}

void ds_progress_start(ds_progress *p, FILE *f, const char *what)
{
    memset(p, 0, sizeof *p);
    p->f = f;
    p->tty = f && isatty(fileno(f));
    p->t0 = p->last = omni_now();
    snprintf(p->what, sizeof p->what, "%s", what);
}

void ds_progress_update(ds_progress *p, int64_t done, int64_t total)
{
    if (!p->f)
        return;
    double now = omni_now();
    double every = p->tty ? 0.1 : 5.0;
    if (now - p->last < every)
        return;
    p->last = now;
    double frac = total > 0 ? (double)done / (double)total : 0.0;
    if (p->tty) {
        int w = (int)(frac * 30.0);
        fprintf(p->f, "\r%-12s [%.*s%*s] %lld/%lld", p->what, w, "##############################",
                30 - w, "", (long long)done, (long long)total);
    } else {
        fprintf(p->f, "%s: %lld/%lld (%.0f%%), %.1f s\n", p->what, (long long)done,
                (long long)total, 100.0 * frac, now - p->t0);
    }
    fflush(p->f);
}

void ds_progress_bytes(ds_progress *p, int64_t bytes, int64_t total, int64_t samples)
{
    if (!p->f)
        return;
    double now = omni_now();
    if (now - p->last < (p->tty ? 0.1 : 5.0))
        return;
    p->last = now;
    double frac = total > 0 ? (double)bytes / (double)total : 0.0, mib = 1.0 / 1048576.0;
    double rate = now > p->t0 ? (double)bytes * mib / (now - p->t0) : 0.0;
    if (p->tty) {
        int w = (int)(frac * 30.0);
        fprintf(p->f, "\r%-12s [%.*s%*s] %.0f/%.0f MiB, %lld samples, %.0f MiB/s", p->what, w,
                "##############################", 30 - w, "", (double)bytes * mib,
                (double)total * mib, (long long)samples, rate);
    } else {
        fprintf(p->f, "%s: %.0f/%.0f MiB (%.0f%%), %lld samples, %.0f MiB/s, %.1f s\n", p->what,
                (double)bytes * mib, (double)total * mib, 100.0 * frac, (long long)samples, rate,
                now - p->t0);
    }
    fflush(p->f);
}

void ds_progress_end(ds_progress *p, int64_t total)
{
    if (!p->f)
        return;
    if (p->tty)
        fputs("\r\033[K", p->f);
    fprintf(p->f, "%s: %lld done in %.2f s\n", p->what, (long long)total, omni_now() - p->t0);
    fflush(p->f);
}
