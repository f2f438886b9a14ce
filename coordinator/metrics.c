/* Metrics: the per-step sums the workers report, their reduction, and the log lines and
 * JSON objects the coordinator writes. The JSON fields are documented in docs/metrics.md. */
#include "coordinator.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A job killed while writing an object may leave a last line without its newline: cut
 * the file back to its last whole line (the resumed run logs that step again), so the
 * next object starts a line of its own and every line stays one JSON object. */
static omni_status drop_partial_line(const char *path)
{
    FILE *f = fopen(path, "r+b");
    if (!f)
        return OMNI_OK; /* not there yet: fopen "a" makes it */
    omni_status st = OMNI_OK;
    long end = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1, keep = end;
    int c = 0;
    while (keep > 0 && fseek(f, keep - 1, SEEK_SET) == 0 && (c = fgetc(f)) != EOF && c != '\n')
        keep--;
    if (end > 0 && keep != end) {
        if (ftruncate(fileno(f), (off_t)keep) != 0)
            st = omni_fail(OMNI_ERR_IO, "%s: cannot cut its unfinished last line: %s", path,
                           strerror(errno));
        else
            omni_log(OMNI_LOG_WARN, "%s: removed an unfinished last line (%ld bytes)", path,
                     end - keep);
    }
    fclose(f);
    return st;
}

omni_status omni_metrics_log_open(omni_metrics_log *log, const omni_experiment *x,
                                  const omni_tokenization *tok, int64_t first_step)
{
    memset(log, 0, sizeof *log);
    log->tok = tok;
    omni_status st = omni_make_dirs(x->experiment.out_dir);
    if (st)
        return st;
    char path[OMNI_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/metrics.jsonl", x->experiment.out_dir);
    if ((st = drop_partial_line(path)))
        return st;
    log->jsonl = fopen(path, "a");
    if (!log->jsonl)
        return omni_fail(OMNI_ERR_IO, "%s: cannot open for appending: %s", path, strerror(errno));
    log->t_start = omni_now();
    log->t_since = log->t_start;
    log->first_step = first_step;
    return OMNI_OK;
}

void omni_metrics_log_close(omni_metrics_log *log)
{
    if (log->jsonl)
        fclose(log->jsonl);
    log->jsonl = NULL;
}

/* The name of task t of the metrics: the task table's (the sampler's task t). */
static const char *task_name(const omni_metrics_log *log, int t)
{
    OMNI_ASSERT(t >= 0 && t < log->tok->n_tasks && log->tok->tasks[t].index == t);
    return log->tok->tasks[t].name;
}

static void hms(char *out, size_t cap, double s)
{
    if (!isfinite(s) || s < 0)
        s = 0;
    long t = (long)(s + 0.5);
    snprintf(out, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

/* Push the object just written to the file: a failure (a full disk) names the file and
 * the system's reason. */
static omni_status flush_jsonl(FILE *f, const omni_experiment *x)
{
    errno = 0;
    if (fflush(f) != 0 || ferror(f))
        return omni_fail(OMNI_ERR_IO, "%s/metrics.jsonl: write failed: %s", x->experiment.out_dir,
                         errno ? strerror(errno) : "stream error");
    return OMNI_OK;
}

/* JSON has no NaN or Infinity: write null for them. A finite value is written with the
 * fewest significant digits (up to 17) that read back as the same double, so runs can be
 * compared to the bit from their metrics.jsonl (resume exactness) and the text stays short. */
static void json_num(FILE *f, double v)
{
    if (!isfinite(v)) {
        fputs("null", f);
        return;
    }
    char buf[32];
    for (int digits = 6; digits <= 17; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    fputs(buf, f);
}

/* The JSON key of group g of a routing table: the task's name, or the modality's. */
static const char *group_name(const omni_metrics_log *log, bool by_task, int g)
{
    return by_task ? task_name(log, g) : omni_modality_name((omni_modality)g);
}

typedef enum { ROUTE_KEPT, ROUTE_DROPPED, ROUTE_PROB } route_field;

/* "KEY": one object per MoE layer, {GROUP: [one value per expert]}: assignments kept or
 * dropped per step (over n steps), or the mean router probability over the group's tokens
 * (null for a group without tokens). */
static void json_route_matrix(FILE *f, const char *key, const omni_metrics_log *log,
                              const omni_metrics *sum, bool by_task, route_field what, double n)
{
    fprintf(f, ", \"%s\": [", key);
    for (int l = 0; l < sum->n_moe_layers; l++) {
        omni_route_table tt, tm;
        omni_metrics_tables(sum, l, &tt, &tm);
        const omni_route_table *t = by_task ? &tt : &tm;
        fputs(l ? ", {" : "{", f);
        for (int g = 0; g < t->n_groups; g++) {
            fprintf(f, "%s\"%s\": [", g ? ", " : "", group_name(log, by_task, g));
            const int64_t E = t->n_experts;
            for (int64_t e = 0; e < E; e++) {
                int64_t i = (int64_t)g * E + e;
                double v = what == ROUTE_KEPT      ? t->kept[i] / n
                           : what == ROUTE_DROPPED ? t->dropped[i] / n
                           : t->tokens[g] > 0      ? t->prob[i] / t->tokens[g]
                                                   : (double)NAN;
                fputs(e ? ", " : "", f);
                json_num(f, v);
            }
            fputs("]", f);
        }
        fputs("}", f);
    }
    fputs("]", f);
}

/* The entropy (nats) of a group's mean routing distribution, prob[E] / tokens. */
static double mean_entropy(const double *prob, double tokens, int64_t E)
{
    if (tokens <= 0)
        return NAN;
    double h = 0;
    for (int64_t e = 0; e < E; e++) {
        double p = prob[e] / tokens;
        if (p > 0)
            h -= p * log(p);
    }
    return h;
}

/* "PREFIX_entropy" and "PREFIX_mean_entropy" per MoE layer {GROUP: nats}, and
 * "PREFIX_tokens" {GROUP: tokens per step} (the same in every layer). */
static void json_route_entropies(FILE *f, const char *prefix, const omni_metrics_log *log,
                                 const omni_metrics *sum, bool by_task, double n)
{
    for (int which = 0; which < 2; which++) {
        fprintf(f, ", \"%s_%s\": [", prefix, which ? "mean_entropy" : "entropy");
        for (int l = 0; l < sum->n_moe_layers; l++) {
            omni_route_table tt, tm;
            omni_metrics_tables(sum, l, &tt, &tm);
            const omni_route_table *t = by_task ? &tt : &tm;
            fputs(l ? ", {" : "{", f);
            for (int g = 0; g < t->n_groups; g++) {
                fprintf(f, "%s\"%s\": ", g ? ", " : "", group_name(log, by_task, g));
                double tok = t->tokens[g];
                json_num(
                    f, which ? mean_entropy(t->prob + (int64_t)g * t->n_experts, tok, t->n_experts)
                       : tok > 0 ? t->entropy[g] / tok
                                 : (double)NAN);
            }
            fputs("}", f);
        }
        fputs("]", f);
    }
    fprintf(f, ", \"%s_tokens\": {", prefix);
    if (sum->n_moe_layers > 0) {
        omni_route_table tt, tm;
        omni_metrics_tables(sum, 0, &tt, &tm);
        const omni_route_table *t = by_task ? &tt : &tm;
        for (int g = 0; g < t->n_groups; g++) {
            fprintf(f, "%s\"%s\": ", g ? ", " : "", group_name(log, by_task, g));
            json_num(f, t->tokens[g] / n);
        }
    }
    fputs("}", f);
}

/* The routing statistics of the logged steps (docs/metrics.md): nothing for a dense model. */
static void json_routing(FILE *f, const omni_metrics_log *log, const omni_metrics *sum, double n)
{
    if (sum->n_moe_layers == 0)
        return;
    json_route_matrix(f, "task_expert_load", log, sum, true, ROUTE_KEPT, n);
    json_route_matrix(f, "task_expert_drop", log, sum, true, ROUTE_DROPPED, n);
    json_route_matrix(f, "task_expert_prob", log, sum, true, ROUTE_PROB, n);
    json_route_entropies(f, "task", log, sum, true, n);
    json_route_matrix(f, "modality_expert_load", log, sum, false, ROUTE_KEPT, n);
    json_route_matrix(f, "modality_expert_drop", log, sum, false, ROUTE_DROPPED, n);
    json_route_matrix(f, "modality_expert_prob", log, sum, false, ROUTE_PROB, n);
    json_route_entropies(f, "modality", log, sum, false, n);
    fputs(", \"dead_experts\": [", f);
    for (int l = 0; l < sum->n_moe_layers; l++) {
        fputs(l ? ", [" : "[", f);
        int dead = 0;
        for (int e = 0; e < sum->n_experts; e++)
            if (sum->load[(int64_t)l * sum->n_experts + e] == 0)
                fprintf(f, "%s%d", dead++ ? ", " : "", e);
        fputs("]", f);
    }
    fputs("]", f);
}

omni_status omni_metrics_log_train(omni_metrics_log *log, const omni_experiment *x, int64_t step,
                                   double lr, const omni_metrics *sum, int64_t n_steps)
{
    double now = omni_now();
    double dt = now - log->t_since;
    double tok_s = dt > 0 ? *sum->tokens / dt : 0;
    double elapsed = now - log->t_start;
    double per_step = step > log->first_step ? elapsed / (double)(step - log->first_step) : 0;
    double eta = per_step * (double)(x->optim.steps - step);
    double n = n_steps > 0 ? (double)n_steps : 1;
    double drop = 0, assigned = 0;
    for (int l = 0; l < sum->n_moe_layers; l++)
        drop += sum->dropped[l], assigned += sum->assigned[l];
    double drop_share = assigned > 0 ? drop / assigned : 0;
    const bool entropy_on = x->moe.entropy.local > 0.0 || x->moe.entropy.global > 0.0;

    char line[4096], el[32], et[32];
    int len = snprintf(line, sizeof line, "step %lld/%lld | lr %.3e | loss %.4f |", (long long)step,
                       (long long)x->optim.steps, lr, *sum->loss / n);
    for (int t = 0; t < sum->n_tasks && len < (int)sizeof line - 64; t++) {
        double c = sum->task_count[t];
        if (c > 0)
            len += snprintf(line + len, sizeof line - (size_t)len, " %s %.3f", task_name(log, t),
                            sum->task_loss[t] / c);
        else /* no loss token of this task in these steps */
            len += snprintf(line + len, sizeof line - (size_t)len, " %s -", task_name(log, t));
    }
    if (sum->n_moe_layers > 0 && len < (int)sizeof line - 128) {
        len += snprintf(line + len, sizeof line - (size_t)len,
                        " | aux %.4f z %.4f | drop %.1f%% | load", *sum->aux / n, *sum->z / n,
                        100 * drop_share);
        for (int l = 0; l < sum->n_moe_layers && len < (int)sizeof line - 32; l++)
            len += snprintf(line + len, sizeof line - (size_t)len, " %.2f",
                            omni_metrics_load_ratio(sum, l));
        if (entropy_on && len < (int)sizeof line - 32)
            len += snprintf(line + len, sizeof line - (size_t)len, " | entropy %.4f",
                            *sum->entropy / n);
    }
    hms(el, sizeof el, elapsed);
    hms(et, sizeof et, eta);
    if (len < (int)sizeof line)
        snprintf(line + len, sizeof line - (size_t)len, " | %.0f tok/s | %s eta %s", tok_s, el, et);
    omni_log(OMNI_LOG_INFO, "%s", line);

    FILE *f = log->jsonl;
    fprintf(f, "{\"step\": %lld, \"lr\": ", (long long)step);
    json_num(f, lr);
    fputs(", \"loss\": ", f);
    json_num(f, *sum->loss / n);
    fputs(", \"task_loss\": {", f);
    for (int t = 0; t < sum->n_tasks; t++) {
        double c = sum->task_count[t];
        fprintf(f, "%s\"%s\": ", t ? ", " : "", task_name(log, t));
        json_num(f, c > 0 ? sum->task_loss[t] / c : (double)NAN);
    }
    fputs("}, \"aux_loss\": ", f);
    json_num(f, *sum->aux / n);
    fputs(", \"z_loss\": ", f);
    json_num(f, *sum->z / n);
    if (entropy_on) {
        fputs(", \"entropy_loss\": ", f);
        json_num(f, *sum->entropy / n);
    }
    fputs(", \"tokens_per_s\": ", f);
    json_num(f, tok_s);
    fputs(", \"drop_share\": ", f);
    json_num(f, drop_share);
    fputs(", \"load_max_over_mean\": [", f);
    for (int l = 0; l < sum->n_moe_layers; l++) {
        fputs(l ? ", " : "", f);
        json_num(f, omni_metrics_load_ratio(sum, l));
    }
    fputs("], \"expert_load\": [", f);
    for (int l = 0; l < sum->n_moe_layers; l++) {
        fputs(l ? ", [" : "[", f);
        for (int e = 0; e < sum->n_experts; e++) {
            fputs(e ? ", " : "", f);
            json_num(f, sum->load[(int64_t)l * sum->n_experts + e] / n);
        }
        fputs("]", f);
    }
    fputs("]", f);
    json_routing(f, log, sum, n);
    fputs(", \"elapsed_s\": ", f);
    json_num(f, elapsed);
    fputs(", \"eta_s\": ", f);
    json_num(f, eta);
    fputs("}\n", f);
    log->t_since = now;
    return flush_jsonl(f, x);
}

omni_status omni_metrics_log_eval(omni_metrics_log *log, const omni_experiment *x, int64_t step,
                                  const omni_metrics *sum, const double *exact, const double *ret)
{
    char line[4096];
    int len = snprintf(line, sizeof line, "eval step %lld |", (long long)step);
    for (int t = 0; t < sum->n_tasks && len < (int)sizeof line - 128; t++) {
        double c = sum->task_count[t];
        size_t room = sizeof line - (size_t)len;
        if (c > 0)
            len += snprintf(line + len, room, " %s loss %.3f acc %.3f", task_name(log, t),
                            sum->task_loss[t] / c, sum->task_correct[t] / c);
        else
            len += snprintf(line + len, room, " %s -", task_name(log, t));
        room = sizeof line - (size_t)len;
        if (c > 0 && exact && exact[t] >= 0.0)
            len += snprintf(line + len, room, " exact %.3f", exact[t]);
        else if (ret && !isnan(ret[t]))
            len += snprintf(line + len, room, " return %.1f", ret[t]);
        len += snprintf(line + len, sizeof line - (size_t)len, " |");
    }
    omni_log(OMNI_LOG_INFO, "%s", line);
    FILE *f = log->jsonl;
    fprintf(f, "{\"eval\": true, \"step\": %lld, \"task_loss\": {", (long long)step);
    for (int t = 0; t < sum->n_tasks; t++) {
        double c = sum->task_count[t];
        fprintf(f, "%s\"%s\": ", t ? ", " : "", task_name(log, t));
        json_num(f, c > 0 ? sum->task_loss[t] / c : (double)NAN);
    }
    fputs("}, \"task_accuracy\": {", f);
    for (int t = 0; t < sum->n_tasks; t++) {
        double c = sum->task_count[t];
        fprintf(f, "%s\"%s\": ", t ? ", " : "", task_name(log, t));
        json_num(f, c > 0 ? sum->task_correct[t] / c : (double)NAN);
    }
    fputs("}", f);
    bool any = false;
    for (int t = 0; exact && t < sum->n_tasks; t++) {
        if (exact[t] < 0.0)
            continue;
        fprintf(f, "%s\"%s\": ", any ? ", " : ", \"task_exact_match\": {", task_name(log, t));
        json_num(f, exact[t]);
        any = true;
    }
    if (any)
        fputs("}", f);
    any = false;
    for (int t = 0; ret && t < sum->n_tasks; t++) {
        if (isnan(ret[t]))
            continue;
        fprintf(f, "%s\"%s\": ", any ? ", " : ", \"task_return\": {", task_name(log, t));
        json_num(f, ret[t]);
        any = true;
    }
    fputs(any ? "}}\n" : "}\n", f);
    return flush_jsonl(f, x);
}
