/*
 * checkpoint: does a checkpoint belong to the current experiment's model? Both
 * experiments are parsed and written back as effective YAML (omni_experiment_to_yaml),
 * whose lines "  key: value" under "section:" are compared key by key. A key that
 * shapes the model must agree; any other key (and any key added to the experiment
 * later) is training-only and merely reported when it changed.
 */
#include "checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Keys that shape the model (its parameters or its function). The tasks are checked
 * apart, by the task tables of the checkpoint and the data (omni_tokenization_same):
 * data.tasks may be empty, and then only the data files say what the tasks are. */
static const char *const model_keys[] = {
    "model.*",       "moe.num_experts",    "moe.top_k",          "moe.every",
    "moe.expert_ff", "moe.shared_experts", "moe.normalize_topk",
};

/* Keys under model.* that change how the model is computed, not what it computes: a run
 * resumes with them changed (a bf16 run in fp32 and the reverse: docs/model.md, "bf16"). */
static const char *const training_model_keys[] = {"model.recompute", "model.precision"};

static bool is_model_key(const char *key)
{
    for (size_t i = 0; i < sizeof training_model_keys / sizeof training_model_keys[0]; i++)
        if (!strcmp(key, training_model_keys[i]))
            return false;
    for (size_t i = 0; i < sizeof model_keys / sizeof model_keys[0]; i++) {
        const char *k = model_keys[i];
        size_t n = strlen(k);
        if (k[n - 1] == '*' ? !strncmp(key, k, n - 1) : !strcmp(key, k))
            return true;
    }
    return false;
}

/* Next "section.key" and value of effective YAML text at *p; false at the end. */
static bool next_entry(const char **p, char *section, size_t slen, char *key, size_t klen,
                       const char **value, size_t *vlen)
{
    while (**p) {
        const char *line = *p;
        const char *end = strchr(line, '\n');
        if (!end)
            end = line + strlen(line);
        *p = *end ? end + 1 : end;
        if (line[0] != ' ') {
            size_t n = (size_t)(end - line);
            if (n && line[n - 1] == ':')
                n--;
            snprintf(section, slen, "%.*s", (int)n, line);
            continue;
        }
        const char *k = line;
        while (*k == ' ')
            k++;
        const char *colon = strstr(k, ": ");
        if (!colon || colon > end)
            continue;
        snprintf(key, klen, "%s.%.*s", section, (int)(colon - k), k);
        *value = colon + 2;
        *vlen = (size_t)(end - *value);
        return true;
    }
    return false;
}

/* Add "key old -> new" to the list of changed training keys. */
static void append_change(char *out, size_t len, const char *key, const char *old, size_t olen,
                          const char *now, size_t nlen)
{
    if (!out || !len)
        return;
    size_t used = strlen(out);
    if (used + 1 < len)
        snprintf(out + used, len - used, "%s%s %.*s -> %.*s", used ? "; " : "", key, (int)olen, old,
                 (int)nlen, now);
}

omni_status omni_ckpt_check_experiment(const char *ckpt_path, const char *ckpt_yaml,
                                       const omni_experiment *now, char *changed,
                                       size_t changed_len)
{
    if (changed && changed_len)
        changed[0] = '\0';
    omni_status st = OMNI_OK;
    char *then_text = NULL, *now_text = NULL;
    omni_experiment *then = malloc(sizeof *then);
    if (!then)
        return omni_fail(OMNI_ERR_NOMEM, "out of memory");
    st = omni_experiment_parse(then, ckpt_yaml, strlen(ckpt_yaml), ckpt_path, NULL, 0);
    if (st) {
        st = omni_fail_context(OMNI_ERR_CKPT, "%s: its experiment text is invalid: ", ckpt_path);
        goto out_free;
    }
    st = omni_experiment_to_yaml(then, &then_text);
    if (!st)
        st = omni_experiment_to_yaml(now, &now_text);
    if (st)
        goto out_free;

    const char *p = then_text, *q = now_text;
    char sp[64] = "", sq[64] = "", kp[160], kq[160];
    const char *vp, *vq;
    size_t lp, lq;
    /* Both texts list the same keys in the same order (one writer, one key table). */
    while (next_entry(&p, sp, sizeof sp, kp, sizeof kp, &vp, &lp) &&
           next_entry(&q, sq, sizeof sq, kq, sizeof kq, &vq, &lq)) {
        if (strcmp(kp, kq)) {
            st = omni_fail(OMNI_ERR_INTERNAL, "effective experiments list keys %s and %s", kp, kq);
            goto out_free;
        }
        if (lp == lq && !memcmp(vp, vq, lp))
            continue;
        if (is_model_key(kp)) {
            st = omni_fail(OMNI_ERR_CKPT,
                           "%s: checkpoint of another model: %s is %.*s in the checkpoint, %.*s "
                           "in the experiment",
                           ckpt_path, kp, (int)lp, vp, (int)lq, vq);
            goto out_free;
        }
        append_change(changed, changed_len, kp, vp, lp, vq, lq);
    }
out_free:
    free(now_text);
    free(then_text);
    free(then);
    return st;
}
