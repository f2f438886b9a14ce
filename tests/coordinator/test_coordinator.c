/* coordinator: plan slices, metrics sums and their log. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coordinator.h"

Test(coordinator, slices_cover_every_slot_once_for_any_world_size)
{
    for (int64_t batch = 1; batch <= 40; batch += 3)
        for (int size = 1; size <= 9; size++) {
            int64_t next = 0;
            for (int r = 0; r < size; r++) {
                omni_slice s = omni_plan_slice(7, batch, r, size);
                cr_assert_eq(s.step, 7);
                cr_assert_eq(s.slot_lo, next, "batch %lld size %d rank %d", (long long)batch, size,
                             r);
                cr_assert_geq(s.slot_hi, s.slot_lo);
                cr_assert_leq(s.slot_hi - s.slot_lo, batch / size + 1);
                next = s.slot_hi;
            }
            cr_assert_eq(next, batch);
        }
}

Test(coordinator, load_ratio_is_max_over_mean)
{
    omni_metrics m;
    cr_assert_eq(omni_metrics_create(&m, 2, 2, 4), OMNI_OK);
    double l0[4] = {1, 1, 1, 1}, l1[4] = {4, 0, 0, 0};
    memcpy(m.load, l0, sizeof l0);
    memcpy(m.load + 4, l1, sizeof l1);
    cr_assert_float_eq(omni_metrics_load_ratio(&m, 0), 1.0, 1e-12);
    cr_assert_float_eq(omni_metrics_load_ratio(&m, 1), 4.0, 1e-12);
    omni_metrics_zero(&m);
    cr_assert_eq(omni_metrics_load_ratio(&m, 1), 0.0);
    cr_assert_eq(m.v + m.n_values, m.route + 2 * m.route_len, "views tile the storage");
    cr_assert_eq(m.route, m.assigned + 2);
    omni_metrics_free(&m);
}

Test(coordinator, log_writes_one_json_object_per_line_with_per_task_values)
{
    omni_experiment x;
    const char *text = "experiment: {name: t}\ndata: {files: [a.h5], tasks: {b: 1, a: 1}}\n";
    char dir[] = "/tmp/omni_coord_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char sets[256];
    snprintf(sets, sizeof sets, "experiment.out_dir=%s/run", dir);
    const char *s[] = {sets};
    cr_assert_eq(omni_experiment_parse(&x, text, strlen(text), "t.yaml", s, 1), OMNI_OK, "%s",
                 omni_error_message());
    omni_metrics m;
    cr_assert_eq(omni_metrics_create(&m, 2, 1, 2), OMNI_OK);
    *m.loss = 2.0, *m.tokens = 100;
    m.task_loss[0] = 3.0, m.task_count[0] = 2, m.task_correct[0] = 1;
    m.load[0] = 3, m.load[1] = 1, m.assigned[0] = 5, m.dropped[0] = 1;
    omni_route_table tt, tm;
    omni_metrics_tables(&m, 0, &tt, &tm);
    tt.kept[0] = 2, tt.kept[1] = 1, tt.kept[2] = 1, tt.dropped[2] = 1; /* a: [2, 1], b: [1, 0] */
    tt.prob[0] = 1.2, tt.prob[1] = 0.8, tt.tokens[0] = 2, tt.entropy[0] = 1.0;
    tm.kept[OMNI_MOD_IMAGE * 2 + 1] = 4, tm.prob[OMNI_MOD_IMAGE * 2] = 1,
                                 tm.tokens[OMNI_MOD_IMAGE] = 1;
    /* The task table, not data.tasks, names the values. */
    omni_tokenization tok = {.n_tasks = 2};
    snprintf(tok.tasks[0].name, sizeof tok.tasks[0].name, "a");
    snprintf(tok.tasks[1].name, sizeof tok.tasks[1].name, "b");
    tok.tasks[1].index = 1;
    omni_metrics_log log;
    cr_assert_eq(omni_metrics_log_open(&log, &x, &tok, 0), OMNI_OK, "%s", omni_error_message());
    cr_assert_eq(omni_metrics_log_train(&log, &x, 10, 1e-3, &m, 1), OMNI_OK);
    cr_assert_eq(omni_metrics_log_eval(&log, &x, 10, &m, NULL), OMNI_OK);
    omni_metrics_log_close(&log);
    char path[512];
    snprintf(path, sizeof path, "%s/run/metrics.jsonl", dir);
    char *buf;
    size_t len;
    cr_assert_eq(omni_read_file(path, &buf, &len), OMNI_OK);
    cr_assert(strstr(buf, "{\"step\": 10, \"lr\": 0.001, \"loss\": 2, \"task_loss\": {\"a\": 1.5, "
                          "\"b\": null}") == buf,
              "%s", buf);
    cr_assert(strstr(buf, "\"drop_share\": 0.2, \"load_max_over_mean\": [1.5], \"expert_load\": "
                          "[[3, 1]]") != NULL,
              "%s", buf);
    const char *routing[] = {
        "\"task_expert_load\": [{\"a\": [2, 1], \"b\": [1, 0]}]",
        "\"task_expert_drop\": [{\"a\": [0, 0], \"b\": [1, 0]}]",
        "\"task_expert_prob\": [{\"a\": [0.6, 0.4], \"b\": [null, null]}]",
        "\"task_entropy\": [{\"a\": 0.5, \"b\": null}]",
        "\"task_mean_entropy\": [{\"a\": 0.67301166700925", /* -(.6 ln .6 + .4 ln .4) */
        "\"task_tokens\": {\"a\": 2, \"b\": 0}",
        "\"modality_expert_load\": [{\"text\": [0, 0], \"image\": [0, 4], \"audio\": [0, 0], "
        "\"control\": [0, 0]}]",
        "\"modality_expert_prob\": [{\"text\": [null, null], \"image\": [1, 0]",
        "\"modality_mean_entropy\": [{\"text\": null, \"image\": 0, ",
        "\"dead_experts\": [[]]"};
    for (size_t i = 0; i < sizeof routing / sizeof routing[0]; i++)
        cr_assert(strstr(buf, routing[i]) != NULL, "no %s in %s", routing[i], buf);
    cr_assert(strstr(buf, "{\"eval\": true, \"step\": 10, \"task_loss\": {\"a\": 1.5, \"b\": "
                          "null}, \"task_accuracy\": {\"a\": 0.5, \"b\": null}}\n") != NULL,
              "%s", buf);
    int lines = 0;
    for (char *p = buf; *p; p++)
        lines += *p == '\n';
    cr_assert_eq(lines, 2);
    free(buf);
    omni_metrics_free(&m);
    unlink(path);
    snprintf(path, sizeof path, "%s/run", dir);
    rmdir(path);
    rmdir(dir);
}

Test(coordinator, log_open_names_a_directory_it_cannot_create)
{
    omni_experiment x;
    const char *text = "experiment: {name: t, out_dir: /proc/omni/run}\ndata: {files: [a.h5]}\n";
    cr_assert_eq(omni_experiment_parse(&x, text, strlen(text), "t.yaml", NULL, 0), OMNI_OK);
    omni_metrics_log log;
    omni_tokenization tok = {.n_tasks = 0};
    cr_assert_eq(omni_metrics_log_open(&log, &x, &tok, 0), OMNI_ERR_IO);
    cr_assert(strstr(omni_error_message(), "/proc/omni") != NULL, "%s", omni_error_message());
}
