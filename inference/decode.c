/*
 * Decoding with the session's KV cache: prompts packed one per row and run through the
 * model in one step (their prefixes whole), then one position per step; greedy,
 * temperature + top-k sampling, and length-normalised beam search; constrained to the
 * task's legal tokens. Every rank runs the same number of model steps (the MoE layers
 * exchange tokens), agreeing after each step whether any rank still has work.
 */
#include "internal.h"

#include "inference.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void omni_decode_defaults(omni_decode_opts *o)
{
    memset(o, 0, sizeof *o);
    o->seed = 1;
    o->stop_at_eos = true;
}

static bool text_output(omni_task_kind k)
{
    return k != OMNI_KIND_CONTROL;
}

void omni_infer_legal_tokens(const omni_infer *s, int task, uint8_t *legal)
{
    OMNI_ASSERT(task >= 0 && task < s->n_tasks);
    memset(legal, 0, (size_t)s->V);
    if (text_output(s->tasks[task].kind)) {
        memset(legal, 1, OMNI_TEXT_VOCAB);
        legal[OMNI_TOK_EOS] = 1;
    } else {
        memset(legal + OMNI_TOK_BIN0, 1, OMNI_BINS);
    }
}

/* Positions of a prompt's prefix (docs/design.md §2: before its first loss-bearing element),
 * from its loss flags when given, else from its task kind. */
static int64_t prefix_len(const infer_task *t, const omni_prompt *p, const uint8_t *loss)
{
    if (loss) {
        for (int64_t j = 0; j < p->n; j++)
            if (loss[j])
                return j + 1;
        return 1 + p->n;
    }
    switch (t->kind) {
    case OMNI_KIND_TEXT:
        return 1;
    case OMNI_KIND_CONTROL:
        for (int64_t j = 0; j < p->n; j++)
            if (p->tok[j] == OMNI_TOK_SEP)
                return j + 2;
        return 1 + p->n;
    default:
        return 1 + p->n;
    }
}

static void pad_position(omni_batch *b, int64_t q)
{
    b->kind[q] = OMNI_POS_PAD, b->token[q] = OMNI_TOK_PAD, b->pos[q] = 0;
    b->segment[q] = -1, b->task[q] = -1, b->in_prefix[q] = 0;
    b->patch_row[q] = b->patch_col[q] = 0;
    b->target[q] = -1, b->loss_mask[q] = 0;
}

/* Row `row` of the step batch (width W) = the prompt's <task> token and elements, then
 * padding. */
static void put_prompt(omni_infer *s, int64_t row, const omni_prompt *p, const uint8_t *loss)
{
    omni_batch *b = &s->step;
    const int64_t W = b->context, n = 1 + p->n;
    const infer_task *t = &s->tasks[p->task];
    const int64_t n_prefix = prefix_len(t, p, loss);
    int64_t patch = 0;
    for (int64_t q = 0; q < W; q++) {
        int64_t at = row * W + q;
        pad_position(b, at);
        if (q >= n)
            continue;
        b->pos[at] = (int32_t)q, b->segment[at] = 0, b->task[at] = p->task;
        b->in_prefix[at] = q < n_prefix;
        int32_t v = q == 0 ? OMNI_TOK_TASK0 + p->task : p->tok[q - 1];
        if (v != OMNI_PROMPT_PATCH) {
            b->kind[at] = OMNI_POS_TOKEN, b->token[at] = v;
            continue;
        }
        b->kind[at] = omni_kind_audio(t->kind) ? OMNI_POS_AUDIO : OMNI_POS_IMAGE;
        /* Positions restart at each image (several images, a control step's picture). */
        int64_t in_grid = t->grid > 0 ? patch % t->grid : patch;
        b->patch_row[at] = (int32_t)(in_grid / t->cols);
        b->patch_col[at] = (int32_t)(in_grid % t->cols);
        float *dst = b->patch + at * b->patch_dim;
        const uint8_t *src = p->patches + patch * t->patch_dim;
        for (int64_t k = 0; k < b->patch_dim; k++)
            dst[k] = k < t->patch_dim ? omni_patch_value(src[k], t->patch) : 0.0f;
        patch++;
    }
}

/* Every prompt checked before any collective work, so that ranks fail together. */
static omni_status check_prompts(const omni_infer *s, const omni_prompt *p, int64_t n,
                                 int64_t max_new, const char *what)
{
    for (int64_t i = 0; i < n; i++) {
        if (p[i].task < 0 || p[i].task >= s->n_tasks)
            return omni_fail(OMNI_ERR_DATA, "%s %lld: task index %d, the model has %d tasks", what,
                             (long long)i, p[i].task, s->n_tasks);
        const infer_task *t = &s->tasks[p[i].task];
        if (p[i].n < 0 || 1 + p[i].n > s->T || (max_new > 0 && p[i].n + max_new > s->T))
            return omni_fail(OMNI_ERR_DATA,
                             "%s %lld (task %s): %lld positions%s do not fit the model's "
                             "context of %lld",
                             what, (long long)i, t->name, (long long)(1 + p[i].n),
                             max_new > 0 ? " and the tokens to generate" : "", (long long)s->T);
        for (int64_t j = 0; j < p[i].n; j++) {
            int32_t v = p[i].tok[j];
            if (v == OMNI_PROMPT_PATCH) {
                if (t->patch_dim == 0 || !p[i].patches)
                    return omni_fail(OMNI_ERR_DATA,
                                     "%s %lld: element %lld is a patch, but task %s (%s) has no "
                                     "patches",
                                     what, (long long)i, (long long)j, t->name,
                                     omni_task_kind_name(t->kind));
                continue;
            }
            if (v < 0 || v >= s->V)
                return omni_fail(OMNI_ERR_DATA,
                                 "%s %lld: element %lld is token %d, outside the vocabulary "
                                 "(0..%lld)",
                                 what, (long long)i, (long long)j, v, (long long)(s->V - 1));
        }
    }
    return OMNI_OK;
}

/* Collective: whether any rank has `mine` true. */
static omni_status any_rank(omni_infer *s, bool mine, bool *any)
{
    int v = mine, all = 0;
    omni_status st = omni_mpi_check(MPI_Allreduce(&v, &all, 1, MPI_INT, MPI_MAX, s->comm),
                                    "MPI_Allreduce of decoding progress");
    *any = all != 0;
    return st;
}

/* Collective: the largest of every rank's value. */
static omni_status max_rank(omni_infer *s, int64_t mine, int64_t *most)
{
    return omni_mpi_check(MPI_Allreduce(&mine, most, 1, MPI_INT64_T, MPI_MAX, s->comm),
                          "MPI_Allreduce of decoding work");
}

/* Run the model on the n prompts as rows of one step (collective). */
static omni_status prefill(omni_infer *s, const omni_prompt *p, int64_t n,
                           const uint8_t *const *loss)
{
    int64_t W = 1;
    for (int64_t i = 0; i < n; i++)
        W = 1 + p[i].n > W ? 1 + p[i].n : W;
    omni_kv_cache_clear(s->cache);
    s->step.n_seq = n;
    s->step.context = W;
    for (int64_t i = 0; i < n; i++) {
        put_prompt(s, i, &p[i], loss ? loss[i] : NULL);
        s->plen[i] = 1 + p[i].n;
    }
    return omni_model_forward_cached(s->model, s->cache, &s->step);
}

/* One step of one new token per row (rows with last[r] < 0 are padding); collective. */
static omni_status step_tokens(omni_infer *s, int64_t rows)
{
    omni_batch *b = &s->step;
    b->n_seq = rows;
    b->context = 1;
    for (int64_t r = 0; r < rows; r++) {
        pad_position(b, r);
        if (s->last[r] < 0)
            continue;
        b->kind[r] = OMNI_POS_TOKEN, b->token[r] = s->last[r];
        b->pos[r] = (int32_t)omni_kv_cache_len(s->cache, r);
        b->segment[r] = 0;
        b->task[r] = s->row_task[r];
    }
    return omni_model_forward_cached(s->model, s->cache, b);
}

/* The next token from one row of logits: argmax of the legal ones (the lowest id on a
 * tie), or a draw from softmax(logits / T) over the top_k likeliest legal ones. */
static int32_t pick(omni_infer *s, const float *z, const uint8_t *legal, const omni_decode_opts *o,
                    uint64_t id, int64_t t)
{
    const int64_t V = s->V;
    int64_t m = 0;
    for (int64_t v = 0; v < V; v++)
        if (legal[v])
            s->order[m++] = (int32_t)v;
    if (m == 0)
        return -1;
    if (o->temperature <= 0.0) {
        int32_t best = s->order[0];
        for (int64_t i = 1; i < m; i++)
            if (z[s->order[i]] > z[best])
                best = s->order[i];
        return best;
    }
    if (o->top_k > 0 && o->top_k < m) { /* the k likeliest first (selection; k is small) */
        for (int64_t i = 0; i < o->top_k; i++) {
            int64_t b = i;
            for (int64_t j = i + 1; j < m; j++)
                if (z[s->order[j]] > z[s->order[b]] ||
                    (z[s->order[j]] == z[s->order[b]] && s->order[j] < s->order[b]))
                    b = j;
            int32_t tmp = s->order[i];
            s->order[i] = s->order[b], s->order[b] = tmp;
        }
        m = o->top_k;
    }
    float mx = -INFINITY;
    for (int64_t i = 0; i < m; i++)
        mx = z[s->order[i]] > mx ? z[s->order[i]] : mx;
    double sum = 0.0;
    for (int64_t i = 0; i < m; i++) {
        s->probs[i] = expf((z[s->order[i]] - mx) / (float)o->temperature);
        sum += (double)s->probs[i];
    }
    omni_rng r;
    omni_rng_init(&r, o->seed, "decode", id);
    double u = (double)omni_rng_uniform(&r, (uint64_t)t) * sum, acc = 0.0;
    for (int64_t i = 0; i < m; i++) {
        acc += (double)s->probs[i];
        if (u < acc)
            return s->order[i];
    }
    return s->order[m - 1];
}

static const uint8_t *legal_of(omni_infer *s, const omni_decode_opts *o, int task)
{
    if (o->legal)
        return o->legal;
    omni_infer_legal_tokens(s, task, s->legal);
    return s->legal;
}

/* Tokens a row may still generate: max_new, or up to the end of the context. */
static int64_t budget(const omni_infer *s, const omni_decode_opts *o, int64_t plen)
{
    int64_t room = s->T - plen + 1;
    return o->max_new > 0 && o->max_new < room ? o->max_new : room;
}

/* Greedy or sampled decoding of n <= max_batch prompts (n may be 0: this rank only
 * follows the others' steps). */
static omni_status generate_chunk(omni_infer *s, const omni_prompt *p, int64_t n,
                                  const omni_decode_opts *o, int32_t *out, int64_t stride,
                                  int64_t *n_out)
{
    omni_status st = prefill(s, p, n, NULL);
    if (st)
        return st;
    for (int64_t r = 0; r < n; r++)
        s->row_task[r] = p[r].task;
    int64_t W = s->step.context;
    const float *lg = omni_kv_cache_logits(s->cache);
    for (int64_t t = 0;; t++) {
        bool mine = false;
        for (int64_t r = 0; r < n; r++) {
            if (t > 0 && s->last[r] < 0)
                continue;
            const float *z = t == 0 ? lg + (r * W + s->plen[r] - 1) * s->V : lg + r * s->V;
            int32_t v = pick(s, z, legal_of(s, o, p[r].task), o, p[r].id, t);
            if (t == 0)
                n_out[r] = 0;
            if (v < 0 || (o->stop_at_eos && v == OMNI_TOK_EOS)) {
                s->last[r] = -1;
                continue;
            }
            out[r * stride + n_out[r]++] = v;
            s->last[r] = n_out[r] < budget(s, o, s->plen[r]) ? v : -1;
            mine |= s->last[r] >= 0;
        }
        bool any;
        if ((st = any_rank(s, mine, &any)) || !any)
            return st;
        if ((st = step_tokens(s, n)))
            return st;
    }
}

/* ---- beam search ------------------------------------------------------------- */

/* log-softmax over the legal tokens of one row of logits, into s->probs [V] (-inf where
 * not legal). */
static void legal_logp(omni_infer *s, const float *z, const uint8_t *legal)
{
    float mx = -INFINITY;
    for (int64_t v = 0; v < s->V; v++)
        if (legal[v] && z[v] > mx)
            mx = z[v];
    double sum = 0.0;
    for (int64_t v = 0; v < s->V; v++)
        if (legal[v])
            sum += exp((double)(z[v] - mx));
    double lse = (double)mx + log(sum);
    for (int64_t v = 0; v < s->V; v++)
        s->probs[v] = legal[v] ? (float)((double)z[v] - lse) : -INFINITY;
}

/* Beam search of n prompts, B beams each in rows i * B + b. A candidate (beam, token)
 * scores the beam's sum of log-probabilities (over the legal tokens) plus the token's;
 * <eos> ends a hypothesis, ranked by its sum divided by its length (tokens, <eos>
 * included). A prompt is done when B hypotheses have ended, or its beams reach the length
 * limit (then they are ranked alike). */
static omni_status beam_chunk(omni_infer *s, const omni_prompt *p, int64_t n,
                              const omni_decode_opts *o, int32_t *out, int64_t stride,
                              int64_t *n_out)
{
    const int64_t B = o->beam, V = s->V, T = s->T, rows = n * B;
    omni_status st = prefill(s, p, n, NULL);
    if (st)
        return st;
    for (int64_t r = 0; r < rows; r++)
        s->row_task[r] = p[r / B].task;
    const int64_t W = s->step.context;
    const float *lg = omni_kv_cache_logits(s->cache);
    for (int64_t i = 0; i < n; i++)
        n_out[i] = 0, s->done_score[i] = -(double)INFINITY, s->done_count[i] = 0, s->done[i] = 0;
    for (int64_t r = 0; r < rows; r++)
        s->beam_score[r] = -(double)INFINITY, s->beam_len[r] = 0;
    for (int64_t t = 0;; t++) {
        bool mine = false;
        for (int64_t r = 0; r < rows; r++)
            s->from[r] = t == 0 ? r / B : r, s->last[r] = -1;
        for (int64_t i = 0; i < n; i++) {
            if (s->done[i])
                continue;
            const uint8_t *legal = legal_of(s, o, p[i].task);
            double *cand = s->cand + i * B * V;
            const int64_t nb = t == 0 ? 1 : B, lim = budget(s, o, s->plen[i]);
            for (int64_t b = 0; b < nb; b++) {
                int64_t r = i * B + b;
                double base = t == 0 ? 0.0 : s->beam_score[r];
                if (base == -(double)INFINITY) {
                    for (int64_t v = 0; v < V; v++)
                        cand[b * V + v] = -(double)INFINITY;
                    continue;
                }
                legal_logp(s, t == 0 ? lg + (i * W + s->plen[i] - 1) * V : lg + r * V, legal);
                for (int64_t v = 0; v < V; v++)
                    cand[b * V + v] = base + (double)s->probs[v];
            }
            /* candidates best first (the lowest beam and token on a tie) */
            int64_t live = 0;
            while (live < B) {
                int64_t arg = -1;
                double top = -(double)INFINITY;
                for (int64_t k = 0; k < nb * V; k++)
                    if (cand[k] > top)
                        top = cand[k], arg = k;
                if (arg < 0)
                    break;
                cand[arg] = -(double)INFINITY;
                int64_t r = i * B + arg / V, v = arg % V;
                int64_t len = (t == 0 ? 0 : s->beam_len[r]) + 1;
                const int32_t *toks = s->beam_tok + r * T;
                if (o->stop_at_eos && v == OMNI_TOK_EOS) {
                    if (top / (double)len > s->done_score[i]) {
                        s->done_score[i] = top / (double)len;
                        n_out[i] = len - 1;
                        memcpy(out + i * stride, toks, (size_t)(len - 1) * sizeof *out);
                    }
                    s->done_count[i]++;
                    continue;
                }
                int64_t nr = i * B + live++;
                s->from[nr] = t == 0 ? i : r;
                memcpy(s->beam_tmp + nr * T, toks, (size_t)(len - 1) * sizeof *toks);
                s->beam_tmp[nr * T + len - 1] = (int32_t)v;
                s->beam_next[nr] = top;
                s->beam_next_len[nr] = len;
            }
            for (int64_t b = live; b < B; b++)
                s->beam_next[i * B + b] = -(double)INFINITY, s->beam_next_len[i * B + b] = 0;
            bool at_limit = t + 1 >= lim;
            if (at_limit) /* the live beams end here too */
                for (int64_t b = 0; b < live; b++) {
                    int64_t r = i * B + b, len = s->beam_next_len[r];
                    if (s->beam_next[r] / (double)len > s->done_score[i]) {
                        s->done_score[i] = s->beam_next[r] / (double)len;
                        n_out[i] = len;
                        memcpy(out + i * stride, s->beam_tmp + r * T, (size_t)len * sizeof *out);
                    }
                }
            if (at_limit || live == 0 || s->done_count[i] >= B) {
                s->done[i] = 1;
                continue;
            }
            for (int64_t b = 0; b < B; b++) {
                int64_t r = i * B + b;
                s->beam_score[r] = s->beam_next[r];
                s->beam_len[r] = s->beam_next_len[r];
                memcpy(s->beam_tok + r * T, s->beam_tmp + r * T,
                       (size_t)s->beam_len[r] * sizeof *s->beam_tok);
                s->last[r] = b < live ? s->beam_tok[r * T + s->beam_len[r] - 1] : -1;
            }
            mine = true;
        }
        omni_kv_cache_reorder(s->cache, s->from, rows);
        bool any;
        if ((st = any_rank(s, mine, &any)) || !any)
            return st;
        if ((st = step_tokens(s, rows)))
            return st;
    }
}

omni_status omni_infer_generate(omni_infer *s, const omni_prompt *prompts, int64_t n,
                                const omni_decode_opts *o, int32_t *out, int64_t out_stride,
                                int64_t *n_out)
{
    omni_status st = OMNI_OK;
    if (o->beam < 0 || o->beam > s->max_batch)
        st = omni_fail(OMNI_ERR_USAGE, "beam width %lld: expected 0..%lld (the batch)",
                       (long long)o->beam, (long long)s->max_batch);
    else if (o->max_new < 0 || (o->max_new > 0 ? o->max_new > out_stride : s->T > out_stride))
        st = omni_fail(OMNI_ERR_USAGE,
                       "generate: room for %lld tokens per prompt, %lld may be generated",
                       (long long)out_stride, (long long)(o->max_new > 0 ? o->max_new : s->T));
    else if (o->temperature < 0.0 || o->top_k < 0)
        st = omni_fail(OMNI_ERR_USAGE, "generate: temperature %g and top-k %lld must be >= 0",
                       o->temperature, (long long)o->top_k);
    if (!st)
        st = check_prompts(s, prompts, n, o->max_new, "prompt");
    if ((st = omni_mpi_agree(s->comm, st)))
        return st;
    const int64_t per = s->max_batch / (o->beam > 0 ? o->beam : 1);
    int64_t chunks = (n + per - 1) / per, all;
    if ((st = max_rank(s, chunks, &all)))
        return st;
    for (int64_t c = 0; c < all && !st; c++) {
        int64_t lo = c * per < n ? c * per : n, hi = lo + per < n ? lo + per : n;
        if (o->beam > 0)
            st = beam_chunk(s, prompts + lo, hi - lo, o, out + lo * out_stride, out_stride,
                            n_out + lo);
        else
            st = generate_chunk(s, prompts + lo, hi - lo, o, out + lo * out_stride, out_stride,
                                n_out + lo);
    }
    return st;
}

/* ---- teacher forcing ------------------------------------------------------------ */

omni_status omni_infer_score(omni_infer *s, const omni_prompt *prompts, int64_t n,
                             const uint8_t *const *loss, double *const *logp,
                             uint8_t *const *correct)
{
    omni_status st = OMNI_OK;
    if (n > s->max_batch)
        st = omni_fail(OMNI_ERR_INTERNAL, "score: %lld prompts, the session takes %lld",
                       (long long)n, (long long)s->max_batch);
    if (!st)
        st = check_prompts(s, prompts, n, 0, "sample");
    for (int64_t i = 0; i < n && !st; i++)
        for (int64_t j = 0; j < prompts[i].n; j++)
            if (loss[i][j] && prompts[i].tok[j] == OMNI_PROMPT_PATCH)
                st = omni_fail(OMNI_ERR_DATA, "sample %lld: element %lld is a patch with loss",
                               (long long)i, (long long)j);
    if ((st = omni_mpi_agree(s->comm, st)))
        return st;
    if ((st = prefill(s, prompts, n, loss)))
        return st;
    const int64_t W = s->step.context, V = s->V;
    const float *lg = omni_kv_cache_logits(s->cache);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < prompts[i].n; j++) {
            logp[i][j] = 0.0;
            correct[i][j] = 0;
            if (!loss[i][j])
                continue;
            const float *z = lg + (i * W + j) * V; /* position j predicts element j */
            int64_t arg = 0;
            for (int64_t v = 1; v < V; v++)
                if (z[v] > z[arg])
                    arg = v;
            double se = 0.0;
            for (int64_t v = 0; v < V; v++)
                se += exp((double)(z[v] - z[arg]));
            int32_t target = prompts[i].tok[j];
            logp[i][j] = (double)(z[target] - z[arg]) - log(se);
            correct[i][j] = arg == target;
        }
    return OMNI_OK;
}

/* ---- the act policy -------------------------------------------------------------- */

static omni_status act_with_session(void *ctx, const int32_t *prompt, int64_t n_prompt,
                                    int64_t n_prefix, const uint8_t *patches, int32_t n_act,
                                    int32_t tok_lo, int32_t tok_hi, int32_t *out)
{
    omni_infer *s = ctx;
    (void)n_prefix; /* the control rule of prefix_len: up to the first <sep> */
    omni_status st = OMNI_OK;
    int task = n_prompt > 0 ? prompt[0] - OMNI_TOK_TASK0 : -1;
    if (task < 0 || task >= s->n_tasks || tok_lo < 0 || tok_hi > s->V || tok_lo >= tok_hi)
        st = omni_fail(OMNI_ERR_INTERNAL, "act: a prompt without its <task> token or a bad range");
    if ((st = omni_mpi_agree(s->comm, st)))
        return st;
    memset(s->legal, 0, (size_t)s->V);
    memset(s->legal + tok_lo, 1, (size_t)(tok_hi - tok_lo));
    /* legal_of would overwrite s->legal: keep the range in a copy the options point at */
    uint8_t *legal = omni_alloc(s->V, 1, "act legal tokens");
    if (!legal)
        return omni_mpi_agree(s->comm, OMNI_ERR_NOMEM);
    memcpy(legal, s->legal, (size_t)s->V);
    omni_decode_opts o;
    omni_decode_defaults(&o);
    o.max_new = n_act;
    o.stop_at_eos = false;
    o.legal = legal;
    omni_prompt p = {
        .task = task, .id = 0, .n = n_prompt - 1, .tok = prompt + 1, .patches = patches};
    int64_t n_out = 0;
    int32_t *buf = omni_alloc(n_act > 0 ? n_act : 1, sizeof *buf, "act tokens");
    st = buf ? OMNI_OK : OMNI_ERR_NOMEM;
    if (!(st = omni_mpi_agree(s->comm, st)))
        st = omni_infer_generate(s, &p, s->rank == 0 ? 1 : 0, &o, buf, n_act, &n_out);
    if (!st && s->rank == 0) {
        for (int32_t i = 0; i < n_act; i++)
            out[i] = i < n_out ? buf[i] : tok_lo;
    }
    omni_free(buf);
    omni_free(legal);
    return st;
}

void omni_infer_act_policy(omni_infer *s, omni_act_policy *p)
{
    p->ctx = s;
    p->act = act_with_session;
}
