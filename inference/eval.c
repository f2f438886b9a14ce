/*
 * Evaluation of a model on a dataset file (docs/design.md §8, `omnimoe eval`): per task,
 * teacher-forced loss and accuracy over every sample (in windows of the context), bits
 * per byte for text, action accuracy for control, and for *_to_text the greedy caption
 * from the input alone against the reference (exact match, character error rate).
 * Samples are split over the ranks in contiguous ranges; each rank's per-sample results
 * are gathered on rank 0 in sample order and summed there, so the numbers are those of
 * one process.
 */
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Per-sample sums (doubles, gathered as a flat array). */
enum {
    R_CE = 0,   /* cross-entropy summed over loss tokens (nats) */
    R_TOKENS,   /* loss tokens */
    R_CORRECT,  /* loss tokens predicted by the argmax */
    R_BITS,     /* text: -log2 p over byte targets */
    R_BYTES,    /* text: byte targets */
    R_STEPS_OK, /* control: steps whose action tokens are all correct */
    R_STEPS,    /* control: steps */
    R_GEN,      /* 1 when a caption was generated for the sample */
    R_EXACT,    /* 1 when it equals the reference */
    R_EDITS,    /* edit distance to the reference (bytes) */
    R_REF,      /* reference bytes */
    R_COUNT
};

typedef struct {
    int64_t sample, a, n; /* window: elements [a, a + n) of sample `sample` (local index) */
} window;

/* Edit distance between token strings (one row of the table, [m + 1] scratch). */
static int64_t edit_distance(const int32_t *a, int64_t n, const int32_t *b, int64_t m, int64_t *row)
{
    for (int64_t j = 0; j <= m; j++)
        row[j] = j;
    for (int64_t i = 1; i <= n; i++) {
        int64_t diag = row[0];
        row[0] = i;
        for (int64_t j = 1; j <= m; j++) {
            int64_t up = row[j];
            int64_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[m];
}

static bool to_text(omni_task_kind k)
{
    return omni_kind_to_text(k);
}

/* The windows of one sample: whole when it fits; else a *_to_text sample is cut at the
 * context (as training's validation windows cut it), text and control are scored in
 * consecutive windows (control's at step boundaries). */
static int64_t windows_of(const omni_infer *s, const infer_task *t, const omni_sample *sm,
                          int64_t sample, window *w)
{
    const int64_t room = s->T - 1;
    if (sm->n <= room) {
        if (w)
            w[0] = (window){sample, 0, sm->n};
        return 1;
    }
    if (to_text(t->kind)) { /* the input, then as much of the answer as fits */
        if (w)
            w[0] = (window){sample, 0, room};
        return 1;
    }
    int64_t len = room;
    if (t->kind == OMNI_KIND_CONTROL) {
        int64_t step = (t->images ? t->grid : 0) + t->obs_dim + 1 + t->act_dim;
        if (step > 0 && room >= step)
            len = room / step * step;
    }
    int64_t k = 0;
    for (int64_t a = 0; a < sm->n; a += len, k++)
        if (w)
            w[k] = (window){sample, a, sm->n - a < len ? sm->n - a : len};
    return k;
}

static const uint8_t *patches_at(const infer_task *t, const omni_sample *sm, int64_t a)
{
    if (!sm->patches)
        return NULL;
    int64_t k = 0;
    for (int64_t j = 0; j < a; j++)
        k += sm->tok[j] == OMNI_DS_PATCH;
    return sm->patches + k * t->patch_dim;
}

typedef struct {
    omni_infer *s;
    const omni_sampler *sp;
    int64_t show; /* captions to print (rank 0) */
    omni_split split;
    int ft, mt; /* task index in the sampler, in the model */
    int64_t lo, hi;
    double *res; /* [hi - lo, R_COUNT] */
} task_run;

/* Collective: teacher forcing over this rank's samples, in rounds of max_batch windows
 * (every rank makes the same number of rounds). */
static omni_status score_task(task_run *r)
{
    omni_infer *s = r->s;
    const infer_task *t = &s->tasks[r->mt];
    const int64_t B = s->max_batch, T = s->T;
    int64_t n_win = 0;
    omni_sample sm;
    for (int64_t i = r->lo; i < r->hi; i++) {
        omni_sampler_sample(r->sp, r->ft, r->split, i, &sm);
        n_win += windows_of(s, t, &sm, 0, NULL);
    }
    window *w = omni_alloc(n_win > 0 ? n_win : 1, sizeof *w, "eval windows");
    omni_prompt *p = omni_alloc(B, sizeof *p, "eval prompts");
    const uint8_t **loss = omni_alloc(B, sizeof *loss, "eval prompts");
    double **logp = omni_alloc(B, sizeof *logp, "eval prompts");
    uint8_t **correct = omni_alloc(B, sizeof *correct, "eval prompts");
    double *lp = omni_alloc(B * T, sizeof *lp, "eval scores");
    uint8_t *ok = omni_alloc(B * T, 1, "eval scores");
    /* The sampler reads samples in windows: its views last until its next read, so the
     * windows of a round are copied here. */
    int32_t *tok_of = omni_alloc(B * T, sizeof *tok_of, "eval windows");
    uint8_t *loss_of = omni_alloc(B * T, 1, "eval windows");
    uint8_t *patch_of = omni_alloc(t->patch_dim > 0 ? B * T * t->patch_dim : 1, 1, "eval windows");
    omni_status st = w && p && loss && logp && correct && lp && ok && tok_of && loss_of && patch_of
                         ? OMNI_OK
                         : OMNI_ERR_NOMEM;
    int64_t nw = 0;
    for (int64_t i = r->lo; !st && i < r->hi; i++) {
        omni_sampler_sample(r->sp, r->ft, r->split, i, &sm);
        nw += windows_of(s, t, &sm, i - r->lo, w + nw);
    }
    int64_t rounds = (nw + B - 1) / B, all = 0;
    if (!st)
        st = omni_mpi_check(MPI_Allreduce(&rounds, &all, 1, MPI_INT64_T, MPI_MAX, s->comm),
                            "MPI_Allreduce of eval rounds");
    for (int64_t k = 0; !st && k < all; k++) {
        int64_t c0 = k * B < nw ? k * B : nw, c1 = c0 + B < nw ? c0 + B : nw;
        for (int64_t q = c0; q < c1; q++) {
            omni_sampler_sample(r->sp, r->ft, r->split, r->lo + w[q].sample, &sm);
            int64_t n = sm.n - w[q].a < w[q].n ? sm.n - w[q].a : w[q].n, np = 0;
            int32_t *tq = tok_of + (q - c0) * T;
            uint8_t *lq = loss_of + (q - c0) * T, *pq = patch_of + (q - c0) * T * t->patch_dim;
            memcpy(tq, sm.tok + w[q].a, (size_t)(n > 0 ? n : 0) * sizeof *tq);
            memcpy(lq, sm.loss + w[q].a, (size_t)(n > 0 ? n : 0));
            for (int64_t j = 0; j < n; j++)
                np += tq[j] == OMNI_DS_PATCH;
            const uint8_t *src = patches_at(t, &sm, w[q].a);
            if (src && np > 0)
                memcpy(pq, src, (size_t)(np * t->patch_dim));
            p[q - c0] = (omni_prompt){.task = r->mt,
                                      .id = (uint64_t)(r->lo + w[q].sample),
                                      .n = n > 0 ? n : 0,
                                      .tok = tq,
                                      .patches = src ? pq : NULL};
            loss[q - c0] = lq;
            logp[q - c0] = lp + (q - c0) * T;
            correct[q - c0] = ok + (q - c0) * T;
        }
        if ((st = omni_infer_score(s, p, c1 - c0, loss, logp, correct)))
            break;
        for (int64_t q = c0; q < c1; q++) {
            double *res = r->res + w[q].sample * R_COUNT;
            const omni_prompt *pq = &p[q - c0];
            int64_t run = 0;
            bool run_ok = true;
            for (int64_t j = 0; j < pq->n; j++) {
                if (!loss[q - c0][j])
                    continue;
                double l = logp[q - c0][j];
                res[R_CE] -= l;
                res[R_TOKENS] += 1;
                res[R_CORRECT] += correct[q - c0][j];
                if (t->kind == OMNI_KIND_TEXT && pq->tok[j] < OMNI_TEXT_VOCAB) {
                    res[R_BITS] -= l / log(2.0);
                    res[R_BYTES] += 1;
                }
                if (t->kind == OMNI_KIND_CONTROL && t->act_dim > 0) {
                    run_ok = run_ok && correct[q - c0][j];
                    if (++run == t->act_dim) {
                        res[R_STEPS] += 1;
                        res[R_STEPS_OK] += run_ok;
                        run = 0;
                        run_ok = true;
                    }
                }
            }
        }
    }
    omni_free(w), omni_free(p), omni_free(loss), omni_free(logp), omni_free(correct);
    omni_free(lp), omni_free(ok), omni_free(tok_of), omni_free(loss_of), omni_free(patch_of);
    return st;
}

/* Collective: the greedy caption of each of this rank's first samples (global index below
 * `limit`) from its input alone, against the reference. */
static omni_status generate_task(task_run *r, int64_t limit)
{
    omni_infer *s = r->s;
    const int64_t T = s->T;
    int64_t hi = r->hi < limit ? r->hi : limit, n = hi > r->lo ? hi - r->lo : 0;
    omni_prompt *p = omni_alloc(n > 0 ? n : 1, sizeof *p, "eval prompts");
    int32_t *out = omni_alloc((n > 0 ? n : 1) * T, sizeof *out, "eval captions");
    int64_t *n_out = omni_alloc(n > 0 ? n : 1, sizeof *n_out, "eval captions");
    int64_t *row = omni_alloc(T + 1, sizeof *row, "eval scratch");
    int32_t *ref = omni_alloc(T + 1, sizeof *ref, "eval scratch");
    /* Copies of the prompts (the sampler's views last until its next read). */
    const infer_task *t = &s->tasks[r->mt];
    int32_t *tok_of = omni_alloc((n > 0 ? n : 1) * T, sizeof *tok_of, "eval prompts");
    uint8_t *patch_of =
        omni_alloc(t->patch_dim > 0 ? (n > 0 ? n : 1) * T * t->patch_dim : 1, 1, "eval prompts");
    omni_status st =
        p && out && n_out && row && ref && tok_of && patch_of ? OMNI_OK : OMNI_ERR_NOMEM;
    omni_sample sm;
    for (int64_t i = 0; !st && i < n; i++) {
        omni_sampler_sample(r->sp, r->ft, r->split, r->lo + i, &sm);
        int64_t first = 0;
        while (first < sm.n && !sm.loss[first])
            first++;
        if (first > T - 1)
            first = T - 1; /* an input longer than the context: cut (counts as a miss) */
        int64_t np = 0;
        memcpy(tok_of + i * T, sm.tok, (size_t)first * sizeof *tok_of);
        for (int64_t j = 0; j < first; j++)
            np += sm.tok[j] == OMNI_DS_PATCH;
        if (sm.patches && np > 0)
            memcpy(patch_of + i * T * t->patch_dim, sm.patches, (size_t)(np * t->patch_dim));
        p[i] = (omni_prompt){.task = r->mt,
                             .id = (uint64_t)(r->lo + i),
                             .n = first,
                             .tok = tok_of + i * T,
                             .patches = sm.patches ? patch_of + i * T * t->patch_dim : NULL};
    }
    omni_decode_opts o;
    omni_decode_defaults(&o);
    if (!st)
        st = omni_infer_generate(s, p, n, &o, out, T, n_out);
    for (int64_t i = 0; !st && i < n; i++) {
        omni_sampler_sample(r->sp, r->ft, r->split, r->lo + i, &sm);
        int64_t m = 0;
        for (int64_t j = p[i].n; j < sm.n && m < T; j++)
            if (sm.loss[j] && sm.tok[j] != OMNI_TOK_EOS)
                ref[m++] = sm.tok[j];
        double *res = r->res + i * R_COUNT;
        res[R_GEN] = 1;
        res[R_EXACT] = n_out[i] == m && !memcmp(out + i * T, ref, (size_t)m * sizeof *ref);
        res[R_EDITS] = (double)edit_distance(out + i * T, n_out[i], ref, m, row);
        res[R_REF] = (double)m;
        if (s->rank == 0 && i < r->show) {
            printf("  %-10s %s  \"", s->tasks[r->mt].name, res[R_EXACT] ? "=" : "x");
            for (int64_t j = 0; j < n_out[i]; j++)
                putchar(out[i * T + j] < OMNI_TEXT_VOCAB ? out[i * T + j] : '?');
            printf("\"  (reference \"");
            for (int64_t j = 0; j < m; j++)
                putchar(ref[j]);
            printf("\")\n");
        }
    }
    omni_free(p), omni_free(out), omni_free(n_out), omni_free(row), omni_free(ref);
    omni_free(tok_of), omni_free(patch_of);
    return st;
}

/* Collective: every rank's per-sample rows onto rank 0, in rank (= sample) order, summed
 * there in that order. */
static omni_status gather_sums(omni_infer *s, const double *res, int64_t mine, int64_t total,
                               double *sum)
{
    double *all = NULL;
    int *counts = NULL, *displ = NULL;
    omni_status st = OMNI_OK;
    if (s->rank == 0) {
        all = omni_alloc(total > 0 ? total * R_COUNT : 1, sizeof *all, "eval results");
        counts = omni_alloc(s->size, sizeof *counts, "eval results");
        displ = omni_alloc(s->size, sizeof *displ, "eval results");
        if (!all || !counts || !displ)
            st = OMNI_ERR_NOMEM;
        for (int q = 0; !st && q < s->size; q++) {
            int64_t lo = total * q / s->size, hi = total * (q + 1) / s->size;
            counts[q] = (int)((hi - lo) * R_COUNT);
            displ[q] = (int)(lo * R_COUNT);
        }
    }
    if ((st = omni_mpi_agree(s->comm, st)))
        goto out;
    st = omni_mpi_check(MPI_Gatherv(res, (int)(mine * R_COUNT), MPI_DOUBLE, all, counts, displ,
                                    MPI_DOUBLE, 0, s->comm),
                        "MPI_Gatherv of eval results");
    memset(sum, 0, R_COUNT * sizeof *sum);
    if (!st && s->rank == 0)
        for (int64_t i = 0; i < total; i++)
            for (int k = 0; k < R_COUNT; k++)
                sum[k] += all[i * R_COUNT + k];
out:
    omni_free(all), omni_free(counts), omni_free(displ);
    return st;
}

static void fill_result(omni_eval_task *e, const infer_task *t, int64_t samples, const double *v)
{
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", t->name);
    e->kind = t->kind;
    e->samples = samples;
    e->loss = v[R_TOKENS] > 0 ? v[R_CE] / v[R_TOKENS] : 0.0;
    e->accuracy = v[R_TOKENS] > 0 ? v[R_CORRECT] / v[R_TOKENS] : 0.0;
    if (v[R_GEN] > 0) {
        e->has_generation = true;
        e->exact_match = v[R_EXACT] / v[R_GEN];
        e->cer = v[R_REF] > 0 ? v[R_EDITS] / v[R_REF] : 0.0;
    }
    if (t->kind == OMNI_KIND_TEXT && v[R_BYTES] > 0) {
        e->has_bpb = true;
        e->bits_per_byte = v[R_BITS] / v[R_BYTES];
    }
    if (t->kind == OMNI_KIND_CONTROL && v[R_STEPS] > 0) {
        e->has_action = true;
        e->action_accuracy = v[R_STEPS_OK] / v[R_STEPS];
    }
}

omni_status omni_infer_eval_sampler(omni_infer *s, const omni_sampler *sp, const int *model_task,
                                    int n, const omni_eval_opts *o, omni_eval_task *out)
{
    omni_status st = OMNI_OK;
    for (int k = 0; k < n && !st; k++) {
        task_run r = {
            .s = s, .sp = sp, .show = o->show, .split = o->split, .ft = k, .mt = model_task[k]};
        if (r.mt < 0)
            continue;
        int64_t total = omni_sampler_task(sp, k)->n_samples[o->split];
        if (o->limit > 0 && total > o->limit)
            total = o->limit;
        r.lo = total * s->rank / s->size;
        r.hi = total * (s->rank + 1) / s->size;
        r.res = omni_alloc((r.hi - r.lo) * R_COUNT + 1, sizeof *r.res, "eval results");
        st = omni_mpi_agree(s->comm, r.res ? OMNI_OK : OMNI_ERR_NOMEM);
        if (!st)
            st = score_task(&r);
        int64_t gen = o->generate < 0 ? total : o->generate;
        if (!st && to_text(s->tasks[r.mt].kind) && gen > 0)
            st = generate_task(&r, gen);
        /* A sample that could not be read (the sampler keeps the failure) ends it all. */
        if (!st)
            st = omni_mpi_agree(s->comm, omni_sampler_status(sp));
        double sum[R_COUNT];
        if (!st)
            st = gather_sums(s, r.res, r.hi - r.lo, total, sum);
        if (!st)
            fill_result(&out[k], &s->tasks[r.mt], total, sum);
        omni_free(r.res);
    }
    return st;
}

/* Whether name is in the comma-separated list. */
static bool in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, name, n))
            return true;
        p += len + (e != NULL);
    }
    return false;
}

/* The data's task for each model task, checked: kinds and patch settings agree, and every
 * task named in the list exists in both. */
static omni_status match_tasks(const omni_infer *s, const omni_sampler *sp, const char *path,
                               const char *list, int *model_task, int *n_selected)
{
    int nt = omni_sampler_n_tasks(sp);
    *n_selected = 0;
    const omni_tokenization *now = omni_sampler_tokenization(sp), *then = &s->tokenization;
    for (int k = 0; k < nt; k++) {
        const omni_task_info *ti = omni_sampler_task(sp, k);
        model_task[k] = -1;
        if (list && !in_list(list, ti->name))
            continue;
        int mt = omni_infer_find_task(s, ti->name);
        if (mt < 0) {
            if (list)
                return omni_fail(OMNI_ERR_DATA, "task %s of --tasks: the model has no such task",
                                 ti->name);
            continue;
        }
        if (s->tasks[mt].kind != ti->kind)
            return omni_fail(OMNI_ERR_DATA, "%s: task %s is %s, the model's task %s is %s", path,
                             ti->name, omni_task_kind_name(ti->kind), ti->name,
                             omni_task_kind_name(s->tasks[mt].kind));
        const omni_tokenization_task *nt_task = omni_tokenization_find(now, ti->name);
        bool image = omni_kind_image(ti->kind) || (nt_task && nt_task->images),
             audio = omni_kind_audio(ti->kind);
        if (then->vocab && nt_task && nt_task->images != s->tasks[mt].images)
            return omni_fail(OMNI_ERR_DATA,
                             "%s: task %s %s image observations, the model's task %s %s", path,
                             ti->name, nt_task->images ? "has" : "has no", ti->name,
                             s->tasks[mt].images ? "has them" : "has none");
        if (then->vocab && image &&
            (now->image_size != then->image_size || now->image_channels != then->image_channels ||
             now->image_patch != then->image_patch || now->image_resize != then->image_resize))
            return omni_fail(OMNI_ERR_DATA,
                             "%s: task %s has other image settings than the model was trained "
                             "with: size %d, %d channel(s), patch %d, resize %s in the data; size "
                             "%d, %d channel(s), patch %d, resize %s in the model",
                             path, ti->name, now->image_size, now->image_channels, now->image_patch,
                             omni_resize_mode_name(now->image_resize), then->image_size,
                             then->image_channels, then->image_patch,
                             omni_resize_mode_name(then->image_resize));
        if (then->vocab && audio && memcmp(&now->audio, &then->audio, sizeof now->audio))
            return omni_fail(OMNI_ERR_DATA,
                             "%s: task %s has other audio settings than the model was trained with",
                             path, ti->name);
        model_task[k] = mt;
        (*n_selected)++;
    }
    if (list)
        for (const char *p = list; *p;) {
            const char *e = strchr(p, ',');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            bool found = false;
            for (int k = 0; k < nt; k++)
                found |= strlen(omni_sampler_task(sp, k)->name) == len &&
                         !strncmp(omni_sampler_task(sp, k)->name, p, len);
            if (!found)
                return omni_fail(OMNI_ERR_DATA, "task %.*s of --tasks is not in %s", (int)len, p,
                                 path);
            p += len + (e != NULL);
        }
    if (*n_selected == 0)
        return omni_fail(OMNI_ERR_DATA, "%s: none of its tasks is a task of the model", path);
    return OMNI_OK;
}

omni_status omni_infer_eval(omni_infer *s, const char *data_path, const omni_eval_opts *o,
                            omni_eval_task *out, int *n_out)
{
    *n_out = 0;
    omni_experiment x = s->x;
    x.data.n_files = 1;
    snprintf(x.data.files[0], sizeof x.data.files[0], "%s", data_path);
    x.data.n_tasks = 0;
    omni_sampler *sp = NULL;
    int model_task[OMNI_MAX_TASKS], n_sel = 0;
    omni_status st = omni_sampler_open(&sp, &x);
    if (!st)
        st = match_tasks(s, sp, data_path, o->tasks, model_task, &n_sel);
    if ((st = omni_mpi_agree(s->comm, st))) {
        omni_sampler_close(sp);
        return st;
    }
    omni_eval_task all[OMNI_MAX_TASKS];
    int nt = omni_sampler_n_tasks(sp);
    st = omni_infer_eval_sampler(s, sp, model_task, nt, o, all);
    for (int k = 0; !st && k < nt; k++)
        if (model_task[k] >= 0)
            out[(*n_out)++] = all[k];
    omni_sampler_close(sp);
    return st;
}

void omni_eval_print(FILE *f, const omni_eval_task *r, int n)
{
    fprintf(f, "%-12s %-14s %8s %8s %9s %8s %8s %8s %8s\n", "task", "kind", "samples", "loss",
            "accuracy", "exact", "cer", "bpb", "action");
    for (int i = 0; i < n; i++) {
        const omni_eval_task *e = &r[i];
        char ex[16] = "-", ce[16] = "-", bp[16] = "-", ac[16] = "-";
        if (e->has_generation) {
            snprintf(ex, sizeof ex, "%.4f", e->exact_match);
            snprintf(ce, sizeof ce, "%.4f", e->cer);
        }
        if (e->has_bpb)
            snprintf(bp, sizeof bp, "%.4f", e->bits_per_byte);
        if (e->has_action)
            snprintf(ac, sizeof ac, "%.4f", e->action_accuracy);
        fprintf(f, "%-12s %-14s %8lld %8.4f %9.4f %8s %8s %8s %8s\n", e->name,
                omni_task_kind_name(e->kind), (long long)e->samples, e->loss, e->accuracy, ex, ce,
                bp, ac);
    }
}

omni_status omni_eval_write_json(const char *path, const omni_eval_task *r, int n)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return omni_fail(OMNI_ERR_IO, "%s: cannot write (%s)", path, strerror(errno));
    fprintf(f, "{\"tasks\": {");
    for (int i = 0; i < n; i++) {
        const omni_eval_task *e = &r[i];
        fprintf(f,
                "%s\n  \"%s\": {\"kind\": \"%s\", \"samples\": %lld, \"loss\": %.6f, "
                "\"accuracy\": %.6f",
                i ? "," : "", e->name, omni_task_kind_name(e->kind), (long long)e->samples, e->loss,
                e->accuracy);
        if (e->has_generation)
            fprintf(f, ", \"exact_match\": %.6f, \"cer\": %.6f", e->exact_match, e->cer);
        if (e->has_bpb)
            fprintf(f, ", \"bits_per_byte\": %.6f", e->bits_per_byte);
        if (e->has_action)
            fprintf(f, ", \"action_accuracy\": %.6f", e->action_accuracy);
        fprintf(f, "}");
    }
    fprintf(f, "\n}}\n");
    if (fclose(f))
        return omni_fail(OMNI_ERR_IO, "%s: cannot write (%s)", path, strerror(errno));
    return OMNI_OK;
}

omni_status omni_infer_exact_match(omni_infer *s, const omni_sampler *sp, int64_t n, double *exact)
{
    int nt = omni_sampler_n_tasks(sp), model_task[OMNI_MAX_TASKS] = {0};
    for (int k = 0; k < nt; k++) {
        model_task[k] = k < s->n_tasks && to_text(s->tasks[k].kind) ? k : -1;
        exact[k] = -1.0;
    }
    omni_eval_opts o = {.split = OMNI_SPLIT_VAL, .limit = n, .generate = n};
    omni_eval_task r[OMNI_MAX_TASKS];
    omni_status st = omni_infer_eval_sampler(s, sp, model_task, nt, &o, r);
    for (int k = 0; !st && k < nt; k++)
        if (model_task[k] >= 0 && r[k].has_generation)
            exact[k] = r[k].exact_match;
    return st;
}
