/*
 * The training loop: the coordinator's decisions (plan, log, evaluate, checkpoint, stop)
 * around the workers' steps. Every rank runs this loop; only rank 0 decides and prints,
 * and its decisions reach the others by broadcast, so all ranks make the same collective
 * calls in the same order.
 */
#include "coordinator.h"

#include <dirent.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "inference.h"
#include "model.h"
#include "ops.h"

#define LOAD_ROWS 16 /* logged expert loads kept for checkpoints (ckpt info) */

typedef struct {
    MPI_Comm comm;
    int rank, size;
    const omni_experiment *x;
    bool remap_tasks;                   /* --remap-tasks: resume into a changed task set */
    int stop_signal;                    /* the signal that stopped the run, 0 if none */
    char last_path[OMNI_PATH_MAX + 64]; /* the newest checkpoint saved or resumed from */
    omni_worker *w;
    omni_metrics step_m, sum_m, eval_m;
    omni_metrics_log log;
    const omni_ckpt_tensor *state; /* the worker's */
    int n_state;
    char *yaml;
    int64_t step, last_saved, last_eval, steps_in_sum;
    int64_t tokens_seen; /* kept on rank 0, whose meta a checkpoint writes */
    /* the coordinator's running statistics: recent expert-load fractions */
    int64_t load_rows, load_steps[LOAD_ROWS];
    /* The routing tables of the last logged window (docs/checkpoints.md), values on rank 0,
     * descriptors on every rank: saved after the training state once a window is logged. */
    bool route_logged;
    double *route;          /* the tensors' values, in the order of route_tensors */
    int64_t route_steps[2]; /* first and last step of the window */
    omni_tensor_table save; /* what a checkpoint writes: the worker's state, then the
                               routing tensors (MoE models), built once */
    float *load;            /* [LOAD_ROWS, moe layers, E] */
    int64_t *plan;          /* [3 * size] rank 0's scratch for the batch plan */
    omni_infer *infer;      /* decoding for exact match and rollouts at evaluations; made at the
                               first */
    int env_task;           /* the task index eval.env plays; -1: no rollouts */
} trainer;

/* The routing tensors: for tasks then modalities, load, drop, prob [L, G, E] and tokens,
 * entropy [L, G] (f64), then the window's steps [2] (i64), laid end to end in t->route.
 * Their values live on rank 0, which writes them; every rank holds the descriptors, since
 * a checkpoint's tensor list is the same on all ranks. */
static omni_status add_route_tensors(trainer *t)
{
    static const char *const what[5] = {"expert_load", "expert_drop", "expert_prob", "tokens",
                                        "entropy"};
    static const char *const meanings[2][5] = {
        {"[moe layer, task, expert]: token->expert assignments kept per step (task: the index "
         "of /tokenization/tasks)",
         "[moe layer, task, expert]: assignments dropped over capacity per step",
         "[moe layer, task, expert]: mean router probability over the task's tokens",
         "[moe layer, task]: tokens routed per step",
         "[moe layer, task]: mean routing entropy of the task's tokens (nats)"},
        {"[moe layer, modality, expert]: token->expert assignments kept per step (modality: "
         "text, image, audio, control)",
         "[moe layer, modality, expert]: assignments dropped over capacity per step",
         "[moe layer, modality, expert]: mean router probability over the modality's tokens",
         "[moe layer, modality]: tokens routed per step",
         "[moe layer, modality]: mean routing entropy of the modality's tokens (nats)"}};
    const omni_metrics *m = &t->step_m;
    const int64_t L = m->n_moe_layers, E = m->n_experts;
    double *p = t->route;
    for (int q = 0; q < 10; q++) {
        int64_t G = q < 5 ? m->n_tasks : OMNI_MOD_COUNT;
        omni_tensor d;
        memset(&d, 0, sizeof d);
        d.type = OMNI_CKPT_F64;
        d.rank = q % 5 < 3 ? 3 : 2;
        d.dims[0] = L, d.dims[1] = G, d.dims[2] = E;
        d.data = p;
        d.row_hi = L;
        d.writer = t->rank == 0;
        d.meaning = meanings[q / 5][q % 5];
        p += L * G * (q % 5 < 3 ? E : 1);
        if (!omni_tensor_table_add(&t->save, &d, OMNI_CKPT_ROUTING "/%s_%s",
                                   q < 5 ? "task" : "modality", what[q % 5]))
            return OMNI_ERR_NOMEM;
    }
    omni_tensor d;
    memset(&d, 0, sizeof d);
    d.type = OMNI_CKPT_I64;
    d.rank = 1;
    d.dims[0] = 2;
    d.data = t->route_steps;
    d.row_hi = 2;
    d.writer = t->rank == 0;
    d.meaning = "[2]: the first and last step of the logged window of these tables";
    return omni_tensor_table_add(&t->save, &d, OMNI_CKPT_ROUTING "/steps") ? OMNI_OK
                                                                           : OMNI_ERR_NOMEM;
}

/* The checkpoint's tensor list: the worker's state, then the routing tensors. */
static omni_status save_table(trainer *t)
{
    for (int i = 0; i < t->n_state; i++)
        if (!omni_tensor_table_add(&t->save, &t->state[i], "%s", t->state[i].name))
            return OMNI_ERR_NOMEM;
    return t->step_m.n_moe_layers > 0 ? add_route_tensors(t) : OMNI_OK;
}

static int64_t route_values(const omni_metrics *m)
{
    return (int64_t)m->n_moe_layers * (m->n_tasks + OMNI_MOD_COUNT) * (3 * m->n_experts + 2);
}

/* Rank 0: keep the routing tables of the window just logged (n steps) for checkpoints. */
static void keep_routing(trainer *t, int64_t n)
{
    const omni_metrics *m = &t->sum_m;
    const int64_t L = m->n_moe_layers, E = m->n_experts;
    double *p = t->route, steps = n > 0 ? (double)n : 1;
    for (int by_task = 1; by_task >= 0; by_task--) {
        const int64_t G = by_task ? m->n_tasks : OMNI_MOD_COUNT;
        double *load = p, *drop = load + L * G * E, *prob = drop + L * G * E;
        double *tokens = prob + L * G * E, *entropy = tokens + L * G;
        for (int l = 0; l < L; l++) {
            omni_route_table tt, tm;
            omni_metrics_tables(m, l, &tt, &tm);
            const omni_route_table *r = by_task ? &tt : &tm;
            for (int64_t g = 0; g < G; g++) {
                double tok = r->tokens[g];
                for (int64_t e = 0; e < E; e++) {
                    int64_t i = g * E + e, o = (l * G + g) * E + e;
                    load[o] = r->kept[i] / steps;
                    drop[o] = r->dropped[i] / steps;
                    prob[o] = tok > 0 ? r->prob[i] / tok : 0.0;
                }
                tokens[l * G + g] = tok / steps;
                entropy[l * G + g] = tok > 0 ? r->entropy[g] / tok : 0.0;
            }
        }
        p = entropy + L * G;
    }
    t->route_steps[0] = t->step - n + 1;
    t->route_steps[1] = t->step;
}

static omni_status save(trainer *t)
{
    omni_ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.step = t->step;
    meta.tokens_seen = t->tokens_seen;
    meta.seed = t->x->experiment.seed;
    meta.experiment_yaml = t->yaml;
    meta.load_rows = t->load_rows;
    meta.load_layers = t->step_m.n_moe_layers;
    meta.load_experts = t->step_m.n_experts;
    meta.load_steps = t->load_steps;
    meta.load = t->load;
    meta.tokenization = omni_worker_tokenization(t->w);
    char path[OMNI_PATH_MAX + 64];
    double t0 = omni_now();
    /* The training state, and the routing tables once a window of an MoE model is logged
     * (the same decision on every rank: logging follows the step count). */
    int n = t->route_logged ? (int)t->save.n : t->n_state;
    omni_status st = omni_ckpt_save(t->comm, t->x->experiment.out_dir, &meta, t->save.t, n,
                                    t->x->checkpoint.keep, path, sizeof path);
    if (st)
        return st;
    t->last_saved = t->step;
    snprintf(t->last_path, sizeof t->last_path, "%s", path);
    omni_log(OMNI_LOG_INFO, "checkpoint %s (%.1f s)", path, omni_now() - t0);
    return OMNI_OK;
}

/* Rank 0: whether `dir` holds anything a checkpoint leaves (ckpt-*.h5 or `latest`). */
static bool has_checkpoint_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return false;
    bool found = false;
    for (struct dirent *e; !found && (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        found = !strcmp(e->d_name, "latest") ||
                (!strncmp(e->d_name, "ckpt-", 5) && n > 3 && !strcmp(e->d_name + n - 3, ".h5"));
    }
    closedir(d);
    return found;
}

/*
 * Not collective (every rank holds the same tables). The checkpoint's tasks must be the
 * data's: the same names with the same index (their <task> tokens), kind and control
 * dimensions. With --remap-tasks a different task set is accepted (*remap set) when the
 * tasks it shares with the checkpoint kept their kind and dimensions and the vocabulary
 * layout and image/audio settings are the same.
 */
static omni_status check_tasks(const char *path, const omni_tokenization *then,
                               const omni_tokenization *now, bool remap_tasks, bool *remap)
{
    char why[1536];
    *remap = false;
    if (omni_tokenization_same(then, now, why, sizeof why))
        return OMNI_OK;
    if (!remap_tasks)
        return omni_fail(OMNI_ERR_CKPT,
                         "%s: the tasks of the data are not the checkpoint's: %s. Resume with the "
                         "data.files and data.tasks of the run that wrote it, or add "
                         "--remap-tasks to carry its tasks over by name and start new ones "
                         "afresh (docs/training.md)",
                         path, why);
    /* Only the task set may change: compare the rest with the tables' tasks removed. */
    omni_tokenization a = *then, b = *now;
    a.n_tasks = b.n_tasks = 0;
    if (!omni_tokenization_same(&a, &b, why, sizeof why))
        return omni_fail(OMNI_ERR_CKPT,
                         "%s: --remap-tasks carries tasks over, but the data differ from the "
                         "checkpoint's in more than their tasks: %s",
                         path, why);
    for (int i = 0; i < now->n_tasks; i++) {
        const omni_tokenization_task *k = &now->tasks[i];
        const omni_tokenization_task *old = omni_tokenization_find(then, k->name);
        if (old && (old->kind != k->kind || old->obs_dim != k->obs_dim ||
                    old->act_dim != k->act_dim || old->discrete != k->discrete))
            return omni_fail(OMNI_ERR_CKPT,
                             "%s: task %s is a %s task (obs_dim %d, act_dim %d) in the "
                             "checkpoint, a %s task (obs_dim %d, act_dim %d) in the data; "
                             "--remap-tasks carries a task over only as it was: give the new "
                             "one another name",
                             path, k->name, omni_task_kind_name(old->kind), old->obs_dim,
                             old->act_dim, omni_task_kind_name(k->kind), k->obs_dim, k->act_dim);
    }
    *remap = true;
    return OMNI_OK;
}

/* The task table change of a --remap-tasks resume, for the log. */
static void log_remap(const omni_tokenization *then, const omni_tokenization *now)
{
    char line[2048] = "";
    for (int i = 0; i < now->n_tasks; i++) {
        const omni_tokenization_task *old = omni_tokenization_find(then, now->tasks[i].name);
        size_t len = strlen(line);
        if (old)
            snprintf(line + len, sizeof line - len, "%s%s %d -> %d", len ? ", " : "",
                     now->tasks[i].name, old->index, i);
        else
            snprintf(line + len, sizeof line - len, "%s%s new (index %d)", len ? ", " : "",
                     now->tasks[i].name, i);
    }
    for (int i = 0; i < then->n_tasks; i++)
        if (!omni_tokenization_find(now, then->tasks[i].name)) {
            size_t len = strlen(line);
            snprintf(line + len, sizeof line - len, "%s%s dropped", len ? ", " : "",
                     then->tasks[i].name);
        }
    omni_log(OMNI_LOG_INFO, "--remap-tasks: %s", line);
}

static omni_status resume(trainer *t, const char *arg)
{
    char path[OMNI_PATH_MAX + 64];
    if (!strcmp(arg, "auto")) {
        /* A job script may always pass --resume auto: the first run of an experiment
         * starts from step 0. A directory with checkpoint files of which none is complete
         * is an error below, never a silent restart. */
        int any = t->rank == 0 && has_checkpoint_files(t->x->experiment.out_dir);
        omni_status bst = omni_mpi_check(MPI_Bcast(&any, 1, MPI_INT, 0, t->comm),
                                         "MPI_Bcast of the checkpoint look-up");
        if (bst)
            return bst;
        if (!any) {
            omni_log(OMNI_LOG_INFO, "--resume auto: no checkpoint in %s yet, starting at step 0",
                     t->x->experiment.out_dir);
            return OMNI_OK;
        }
    }
    omni_status st = omni_ckpt_resolve(t->comm, arg, t->x->experiment.out_dir, path, sizeof path);
    if (st)
        return st;
    omni_ckpt *c = NULL;
    if ((st = omni_ckpt_open(t->comm, path, &c)))
        return st;
    const omni_ckpt_meta *meta = omni_ckpt_meta_of(c);
    char changed[2048] = "";
    /* The same text on every rank, so every rank reaches the same verdict. */
    st = omni_ckpt_check_experiment(path, meta->experiment_yaml, t->x, changed, sizeof changed);
    if (!st && meta->seed != t->x->experiment.seed)
        st = omni_fail(OMNI_ERR_CKPT,
                       "%s: written with experiment.seed %lld, the experiment has %lld", path,
                       (long long)meta->seed, (long long)t->x->experiment.seed);
    /* Every rank reached the same verdict; agreeing on it makes it one failure of the job,
     * printed once by rank 0, rather than one per rank and an MPI_Abort. */
    st = omni_mpi_agree(t->comm, st);
    omni_tokenization *then = NULL;
    bool remapped = false;
    if (!st) {
        then = malloc(sizeof *then);
        st = omni_mpi_agree(t->comm, then ? OMNI_OK : omni_fail(OMNI_ERR_NOMEM, "out of memory"));
    }
    if (!st)
        st = omni_ckpt_read_tokenization(c, then);
    if (!st)
        st = omni_mpi_agree(t->comm, check_tasks(path, then, omni_worker_tokenization(t->w),
                                                 t->remap_tasks, &remapped));
    if (!st && remapped)
        st = omni_ckpt_read_remapped(c, t->state, t->n_state, then, omni_worker_tokenization(t->w));
    else if (!st)
        st = omni_ckpt_read(c, t->state, t->n_state);
    if (!st && remapped)
        log_remap(then, omni_worker_tokenization(t->w));
    free(then);
    if (!st) {
        t->step = meta->step;
        t->tokens_seen = meta->tokens_seen;
        t->last_saved = t->step;
        snprintf(t->last_path, sizeof t->last_path, "%s", path);
        int64_t rows = meta->load_rows;
        if (rows > LOAD_ROWS)
            rows = LOAD_ROWS;
        if (meta->load_layers == t->step_m.n_moe_layers &&
            meta->load_experts == t->step_m.n_experts && rows > 0) {
            int64_t per = meta->load_layers * meta->load_experts;
            memcpy(t->load, meta->load + (meta->load_rows - rows) * per,
                   (size_t)(rows * per) * sizeof *t->load);
            memcpy(t->load_steps, meta->load_steps + (meta->load_rows - rows),
                   (size_t)rows * sizeof *t->load_steps);
            t->load_rows = rows;
        }
        omni_log(OMNI_LOG_INFO, "resumed from %s at step %lld (written by %lld process%s)", path,
                 (long long)meta->step, (long long)meta->world_size,
                 meta->world_size == 1 ? "" : "es");
        if (changed[0])
            omni_log(OMNI_LOG_INFO, "training keys changed since the checkpoint: %s", changed);
    }
    /* The routing tables of the window logged before the checkpoint, so that a checkpoint
     * written before the resumed run logs again still carries them. Statistics, not
     * training state: tables that cannot be read are a warning, not a failed resume.
     * Tables keyed by another task table (--remap-tasks) are not carried over: the next
     * logged window writes new ones. */
    bool has_routing = false;
    if (!st && t->save.n > t->n_state && !remapped)
        st = omni_ckpt_has(c, OMNI_CKPT_ROUTING "/steps", &has_routing);
    if (!st && has_routing) {
        omni_status rst = omni_mpi_agree(
            t->comm, omni_ckpt_read(c, t->save.t + t->n_state, (int)(t->save.n - t->n_state)));
        if (rst) {
            omni_log(OMNI_LOG_WARN, "%s: its routing tables are not restored: %s", path,
                     omni_error_message());
            omni_error_clear();
        }
        t->route_logged = !rst;
    }
    omni_ckpt_close(c);
    return st;
}

/* Rank 0: remember the load fractions of a logged interval for checkpoints. */
static void keep_loads(trainer *t)
{
    const omni_metrics *m = &t->sum_m;
    int64_t per = (int64_t)m->n_moe_layers * m->n_experts;
    if (per == 0)
        return;
    if (t->load_rows == LOAD_ROWS) {
        memmove(t->load, t->load + per, (size_t)((LOAD_ROWS - 1) * per) * sizeof *t->load);
        memmove(t->load_steps, t->load_steps + 1, (LOAD_ROWS - 1) * sizeof *t->load_steps);
        t->load_rows--;
    }
    float *row = t->load + t->load_rows * per;
    for (int l = 0; l < m->n_moe_layers; l++) {
        double sum = 0;
        for (int e = 0; e < m->n_experts; e++)
            sum += m->load[l * m->n_experts + e];
        for (int e = 0; e < m->n_experts; e++)
            row[l * m->n_experts + e] =
                sum > 0 ? (float)(m->load[l * m->n_experts + e] / sum) : 0.0f;
    }
    t->load_steps[t->load_rows++] = t->step;
}

/* Collective: the decoding session of evaluations, made at the first, given a copy of the
 * current parameters. */
static omni_status session(trainer *t)
{
    if (!t->infer) {
        const omni_sampler *sp = omni_worker_sampler(t->w);
        omni_data_dims dims = omni_sampler_dims(sp);
        int64_t batch = t->x->eval.generate < 32 ? t->x->eval.generate : 32;
        omni_status st = omni_infer_create_like(
            t->comm, t->x, &dims, omni_worker_tokenization(t->w), batch > 0 ? batch : 1, &t->infer);
        if ((st = omni_mpi_agree(t->comm, st)))
            return st;
    }
    omni_infer_set_params(t->infer, omni_worker_model(t->w), omni_worker_moe(t->w));
    return OMNI_OK;
}

/* The rollouts of eval.env: the same eval.episodes starts (drawn from experiment.seed) at
 * every evaluation, so returns over steps compare like with like. */
static omni_act_options rollout_options(const omni_experiment *x)
{
    return (omni_act_options){.env = x->eval.env,
                              .episodes = x->eval.episodes,
                              .max_steps = x->eval.max_steps,
                              .seed = (uint64_t)x->experiment.seed * 1000003u + 17u,
                              .timeout = OMNI_ENV_TIMEOUT,
                              .progress = NULL};
}

/*
 * Collective: find the control task eval.env plays (env_task, or the dataset's only control
 * task) and start the environment once, from rank 0, for one reset: a task that does not
 * exist or is not control, or a command that does not start or does not fit the task, is
 * refused before step 1 (OMNI_ERR_CONFIG naming eval.env), not at the first evaluation.
 */
static omni_status env_setup(trainer *t)
{
    const omni_experiment *x = t->x;
    t->env_task = -1;
    if (!x->eval.env[0])
        return OMNI_OK;
    const omni_tokenization *tk = omni_worker_tokenization(t->w);
    int n_control = 0, found = -1;
    char names[512] = "";
    size_t used = 0;
    for (int i = 0; i < tk->n_tasks; i++) {
        if (tk->tasks[i].kind != OMNI_KIND_CONTROL)
            continue;
        if (used < sizeof names)
            used += (size_t)snprintf(names + used, sizeof names - used, "%s%s",
                                     n_control ? ", " : "", tk->tasks[i].name);
        n_control++;
        if (x->eval.env_task[0] ? !strcmp(tk->tasks[i].name, x->eval.env_task) : found < 0)
            found = i;
    }
    if (n_control == 0)
        return omni_fail(OMNI_ERR_CONFIG,
                         "eval.env = %s, but the data has no control task to play in it",
                         x->eval.env);
    if (x->eval.env_task[0] && found < 0)
        return omni_fail(
            OMNI_ERR_CONFIG,
            "eval.env_task = %s is not a control task of the data (its control tasks: %s)",
            x->eval.env_task, names);
    if (!x->eval.env_task[0] && n_control > 1)
        return omni_fail(OMNI_ERR_CONFIG,
                         "eval.env = %s, and the data has %d control tasks (%s): name the one to "
                         "play with eval.env_task",
                         x->eval.env, n_control, names);
    const omni_tokenization_task *task = &tk->tasks[found];
    omni_status st = OMNI_OK;
    if (t->rank == 0) {
        omni_env *env = NULL;
        float *obs = omni_alloc(task->obs_dim, sizeof *obs, "eval.env observation");
        st = obs ? omni_env_open(&env, x->eval.env, task->obs_dim, task->act_dim,
                                 task->discrete != 0, OMNI_ENV_TIMEOUT)
                 : OMNI_ERR_NOMEM;
        if (!st)
            st = omni_env_reset(env, 0, obs);
        omni_env_close(env);
        omni_free(obs);
        if (st && st != OMNI_ERR_NOMEM) {
            char why[768];
            snprintf(why, sizeof why, "%s", omni_error_message());
            st = omni_fail(OMNI_ERR_CONFIG, "eval.env = %s does not work for task %s: %s",
                           x->eval.env, task->name, why);
        }
    }
    if (!st)
        t->env_task = found;
    return st;
}

/* Collective: the mean return of eval.episodes rollouts of the eval.env task (ret[t] NaN
 * for the other tasks). */
static omni_status rollouts(trainer *t, double *ret, int n_tasks)
{
    for (int k = 0; k < n_tasks; k++)
        ret[k] = (double)NAN;
    if (t->env_task < 0)
        return OMNI_OK;
    omni_status st = session(t);
    if (st)
        return st;
    omni_act_options opt = rollout_options(t->x);
    omni_act_result res;
    const char *name = omni_worker_tokenization(t->w)->tasks[t->env_task].name;
    if (!(st = omni_infer_act(t->comm, t->infer, name, &opt, &res)))
        ret[t->env_task] = res.mean_return;
    omni_act_result_free(&res);
    return st;
}

/* Collective: the exact match of greedy captions of the first eval.generate validation
 * samples of each *_to_text task (exact[t] = -1 for the others), decoded by a session that
 * holds a copy of the current parameters. */
static omni_status exact_match(trainer *t, double *exact, bool *any)
{
    const omni_sampler *sp = omni_worker_sampler(t->w);
    int n = omni_sampler_n_tasks(sp);
    *any = false;
    for (int k = 0; k < n; k++) {
        omni_task_kind kind = omni_sampler_task(sp, k)->kind;
        exact[k] = -1.0;
        *any |= kind != OMNI_KIND_TEXT && kind != OMNI_KIND_CONTROL;
    }
    if (t->x->eval.generate <= 0 || !*any)
        return OMNI_OK;
    omni_status st = session(t);
    return st ? st : omni_infer_exact_match(t->infer, sp, t->x->eval.generate, exact);
}

static omni_status evaluate(trainer *t)
{
    omni_metrics_zero(&t->eval_m);
    double exact[OMNI_MAX_TASKS], ret[OMNI_MAX_TASKS];
    bool any = false;
    omni_status st = omni_worker_eval(t->w, &t->eval_m);
    if (!st)
        st = omni_metrics_reduce(t->comm, &t->eval_m);
    if (!st)
        st = exact_match(t, exact, &any);
    if (!st)
        st = rollouts(t, ret, t->eval_m.n_tasks);
    if (!st && t->rank == 0)
        st = omni_metrics_log_eval(&t->log, t->x, t->step, &t->eval_m, any ? exact : NULL,
                                   t->env_task >= 0 ? ret : NULL);
    t->last_eval = t->step;
    return omni_mpi_agree(t->comm, st);
}

static omni_status loop(trainer *t)
{
    const omni_experiment *x = t->x;
    omni_status st;
    for (;;) {
        omni_next next;
        if ((st = omni_decide_next(t->comm, t->step, x->optim.steps, &next)))
            return st;
        if (next == OMNI_NEXT_STOP_SIGNAL) {
            /* Rank 0 may not have had the signal itself (it went to another rank). */
            t->stop_signal = omni_signal_number() ? omni_signal_number() : -1;
            omni_log(OMNI_LOG_INFO, "signal %d: stopping after step %lld", omni_signal_number(),
                     (long long)t->step);
            return t->last_saved == t->step ? OMNI_OK : save(t);
        }
        if (next == OMNI_NEXT_STOP_DONE)
            break;
        omni_slice slice;
        if ((st = omni_plan_scatter(t->comm, t->step, x->data.batch, t->plan, &slice)))
            return st;
        omni_metrics_zero(&t->step_m);
        if ((st = omni_worker_train_step(t->w, t->step, slice.slot_lo, slice.slot_hi, &t->step_m)))
            return st;
        if ((st = omni_metrics_reduce(t->comm, &t->step_m)))
            return st;
        t->step++;
        if (t->rank == 0) {
            /* Tokens seen: rank 0's count is the one checkpoints record and logs print. */
            t->tokens_seen += (int64_t)*t->step_m.tokens;
            for (int64_t i = 0; i < t->sum_m.n_values; i++)
                t->sum_m.v[i] += t->step_m.v[i];
            t->steps_in_sum++;
        }
        if (t->step % x->log.every == 0 || t->step == x->optim.steps) {
            st = OMNI_OK;
            if (t->rank == 0) {
                st = omni_metrics_log_train(&t->log, x, t->step, omni_lr_at(x, t->step - 1),
                                            &t->sum_m, t->steps_in_sum);
                keep_loads(t);
                keep_routing(t, t->steps_in_sum);
                omni_metrics_zero(&t->sum_m);
                t->steps_in_sum = 0;
            }
            t->route_logged = true;
            if ((st = omni_mpi_agree(t->comm, st)))
                return st;
        }
        if (x->eval.every > 0 && t->step % x->eval.every == 0 && (st = evaluate(t)))
            return st;
        if (x->checkpoint.every > 0 && t->step % x->checkpoint.every == 0 && (st = save(t)))
            return st;
    }
    if (t->last_eval != t->step && (st = evaluate(t)))
        return st;
    if (t->last_saved != t->step && (st = save(t)))
        return st;
    return OMNI_OK;
}

/* "SIGTERM" for the signals that stop a run. */
static const char *signal_name(int sig)
{
    return sig == SIGTERM   ? "SIGTERM"
           : sig == SIGINT  ? "SIGINT"
           : sig == SIGUSR1 ? "SIGUSR1"
                            : "a signal";
}

omni_status omni_train(MPI_Comm comm, const omni_experiment *x, const omni_train_opts *opts)
{
    trainer t;
    memset(&t, 0, sizeof t);
    t.comm = comm;
    t.x = x;
    t.remap_tasks = opts->remap_tasks;
    const char *resume_arg = opts->resume;
    t.last_saved = -1;
    t.last_eval = -1;
    MPI_Comm_rank(comm, &t.rank);
    MPI_Comm_size(comm, &t.size);
    omni_signals_install();
    int threads = 1;
    omni_status st = omni_blas_set_threads(x, comm, &threads);
    if (!st) /* every rank runs the same CPU check: a refusal is the job's, before any work */
        st = omni_gemm_set_precision(x->model.precision);
    if (st)
        return st;
    if ((st = omni_experiment_to_yaml(x, &t.yaml)))
        return omni_mpi_agree(comm, st);
    if ((st = omni_worker_create(&t.w, comm, x)))
        goto out;
    int n_tasks, n_layers, n_experts;
    omni_worker_shape(t.w, &n_tasks, &n_layers, &n_experts);
    st = omni_metrics_create(&t.step_m, n_tasks, n_layers, n_experts);
    if (!st)
        st = omni_metrics_create(&t.sum_m, n_tasks, n_layers, n_experts);
    if (!st)
        st = omni_metrics_create(&t.eval_m, n_tasks, n_layers, n_experts);
    if (!st) {
        t.load = omni_alloc((int64_t)LOAD_ROWS * n_layers * (n_experts ? n_experts : 1),
                            sizeof *t.load, "expert load history");
        t.plan = omni_alloc(3 * (int64_t)t.size, sizeof *t.plan, "batch plan");
        t.route = omni_alloc(route_values(&t.step_m) + 1, sizeof *t.route, "routing tables");
        if (t.route)
            memset(t.route, 0, (size_t)(route_values(&t.step_m) + 1) * sizeof *t.route);
        if (!t.load || !t.plan || !t.route)
            st = OMNI_ERR_NOMEM;
    }
    if (!st) {
        t.n_state = omni_worker_state(t.w, &t.state);
        st = save_table(&t);
    }
    if ((st = omni_mpi_agree(comm, st)))
        goto out;
    if ((st = omni_mpi_agree(comm, env_setup(&t))))
        goto out;
    if (resume_arg && (st = resume(&t, resume_arg)))
        goto out;
    if (t.rank == 0)
        st = omni_metrics_log_open(&t.log, x, omni_worker_tokenization(t.w), t.step);
    if ((st = omni_mpi_agree(comm, st)))
        goto out;
    /* Only now, with the data checked and the checkpoint read, is the run under way: the
     * configuration goes above its first line (a run that fails before shows its error
     * alone). */
    omni_log(OMNI_LOG_INFO, "# omnimoe %s, experiment %s (%s)\n%s", OMNI_VERSION,
             x->experiment.name, opts->source ? opts->source : "-", t.yaml);
    omni_log(OMNI_LOG_INFO,
             "training %s on %d process%s x %d thread%s (GEMM %s, %s%s): %lld steps of %lld "
             "sequences of %lld tokens, %d task%s, %d MoE layer%s of %d experts",
             x->experiment.name, t.size, t.size == 1 ? "" : "es", threads, threads == 1 ? "" : "s",
             omni_gemm_backend_name(omni_gemm_backend_of()),
             omni_gemm_kernel(omni_gemm_backend_of()),
             x->model.precision == OMNI_PREC_BF16 ? "; model products in bf16 on onednn" : "",
             (long long)x->optim.steps, (long long)x->data.batch, (long long)x->model.context,
             n_tasks, n_tasks == 1 ? "" : "s", n_layers, n_layers == 1 ? "" : "s", n_experts);
    st = loop(&t);
    if (!st && t.stop_signal)
        omni_log(OMNI_LOG_INFO,
                 "stopped at step %lld of %lld by %s; checkpoint %s; resume with "
                 "--resume auto",
                 (long long)t.step, (long long)x->optim.steps, signal_name(t.stop_signal),
                 t.last_path);
    else if (!st)
        omni_log(OMNI_LOG_INFO, "done: %lld steps, %lld tokens", (long long)t.step,
                 (long long)t.tokens_seen);
out:
    if (t.rank == 0)
        omni_metrics_log_close(&t.log);
    omni_free(t.load);
    omni_free(t.plan);
    omni_tensor_table_free(&t.save);
    omni_free(t.route);
    omni_metrics_free(&t.step_m);
    omni_metrics_free(&t.sum_m);
    omni_metrics_free(&t.eval_m);
    omni_infer_close(t.infer);
    omni_worker_free(t.w);
    free(t.yaml);
    return st;
}
