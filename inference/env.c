/*
 * Environments for acting: the built-in cart-pole, and a child process spoken to in JSON
 * lines (inference/inference.h, "acting", has the protocol). The child is started with posix_spawn
 * (no fork of an MPI process's address space) in its own process group, so that ending it also ends
 * whatever its shell started. Every read waits with poll() against a deadline.
 */
#include "inference.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "datasets.h"

extern char **environ;

#define SHOWN_MAX 80 /* bytes of a bad reply quoted in a message */

struct omni_env {
    bool builtin;
    int32_t obs_dim, act_dim;
    bool discrete;
    double timeout;
    char what[256]; /* the command (or "cartpole"), cut for messages */
    /* pixel observations (omni_env_want_images): the last picture, fitted */
    int32_t img_size, img_channels;
    omni_resize_mode img_mode;
    uint8_t *img; /* [img_size^2 * img_channels]; NULL: not wanted */
    /* built-in */
    bool grid; /* the grid world (else the cart-pole) */
    omni_cartpole cp;
    omni_gridworld gw;
    /* child */
    pid_t pid;           /* 0 when reaped */
    int wstatus;         /* its wait status once reaped */
    int to_child;        /* its stdin, -1 when closed */
    int from_child;      /* its stdout */
    char *buf;           /* bytes read and not yet consumed */
    size_t len, scanned; /* bytes in buf; of these, known to hold no newline */
};

/* ---- the child process -------------------------------------------------------- */

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

/* Reap the child if it has exited, waiting at most wait_ms. True when reaped. */
static bool reap(omni_env *e, long wait_ms)
{
    if (e->pid <= 0)
        return true;
    for (long waited = 0;; waited += 10) {
        int ws;
        pid_t r = waitpid(e->pid, &ws, WNOHANG);
        if (r == e->pid || (r < 0 && errno == ECHILD)) {
            e->wstatus = r == e->pid ? ws : 0;
            e->pid = 0;
            return true;
        }
        if (waited >= wait_ms)
            return false;
        sleep_ms(10);
    }
}

/* What became of a child that stopped talking: its exit, or that it closed its output. */
static omni_status child_gone(omni_env *e, const char *when)
{
    if (!reap(e, 1000))
        return omni_fail(OMNI_ERR_DATA, "environment '%s' closed its output %s", e->what, when);
    int ws = e->wstatus;
    if (WIFEXITED(ws) && (WEXITSTATUS(ws) == 127 || WEXITSTATUS(ws) == 126))
        return omni_fail(OMNI_ERR_DATA,
                         "environment '%s' did not start (the shell exited with status %d: "
                         "command %s)",
                         e->what, WEXITSTATUS(ws),
                         WEXITSTATUS(ws) == 127 ? "not found" : "not executable");
    if (WIFEXITED(ws))
        return omni_fail(OMNI_ERR_DATA, "environment '%s' exited with status %d %s", e->what,
                         WEXITSTATUS(ws), when);
    if (WIFSIGNALED(ws))
        return omni_fail(OMNI_ERR_DATA, "environment '%s' was killed by signal %d %s", e->what,
                         WTERMSIG(ws), when);
    return omni_fail(OMNI_ERR_DATA, "environment '%s' ended %s", e->what, when);
}

static omni_status spawn(omni_env *e, const char *command)
{
    int in[2] = {-1, -1}, out[2] = {-1, -1};
    omni_status st = OMNI_OK;
    if (pipe(in) || pipe(out)) {
        st = omni_fail(OMNI_ERR_IO, "environment '%s': cannot make pipes: %s", e->what,
                       strerror(errno));
        goto out_close;
    }
    /* Our ends are not inherited by the child (nor by a later child). */
    if (fcntl(in[1], F_SETFD, FD_CLOEXEC) || fcntl(out[0], F_SETFD, FD_CLOEXEC)) {
        st = omni_fail(OMNI_ERR_IO, "environment '%s': fcntl: %s", e->what, strerror(errno));
        goto out_close;
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&fa, in[0]);
    posix_spawn_file_actions_addclose(&fa, out[1]);
    /* Its own process group, so omni_env_close can end the shell and its children;
     * default signal handling (our SIGPIPE may be ignored while writing). */
    sigset_t none, dflt;
    sigemptyset(&none);
    sigemptyset(&dflt);
    sigaddset(&dflt, SIGPIPE);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &dflt);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF);
    char sh[] = "/bin/sh", dash_c[] = "-c";
    char *cmd = strdup(command);
    char *argv[] = {sh, dash_c, cmd, NULL};
    int rc = cmd ? posix_spawn(&e->pid, "/bin/sh", &fa, &attr, argv, environ) : ENOMEM;
    free(cmd);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc) {
        e->pid = 0;
        st = omni_fail(OMNI_ERR_DATA, "environment '%s' did not start: /bin/sh: %s", e->what,
                       strerror(rc));
        goto out_close;
    }
    close(in[0]);
    close(out[1]);
    e->to_child = in[1];
    e->from_child = out[0];
    return OMNI_OK;
out_close:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0)
            close(in[i]);
        if (out[i] >= 0)
            close(out[i]);
    }
    return st;
}

/* Write one line to the child; a child that has gone is reported as such. */
static omni_status send_line(omni_env *e, const char *line)
{
    /* A write to a child that has exited raises SIGPIPE; ignore it for the write and
     * see EPIPE instead (a pending SIGPIPE is discarded while ignored). */
    struct sigaction ign = {.sa_handler = SIG_IGN}, old;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, &old);
    size_t n = strlen(line), done = 0;
    int err = 0;
    while (done < n + 1) {
        const char *p = done < n ? line + done : "\n";
        size_t k = done < n ? n - done : 1;
        ssize_t w = write(e->to_child, p, k);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            err = errno;
            break;
        }
        done += (size_t)w;
    }
    sigaction(SIGPIPE, &old, NULL);
    if (err == EPIPE)
        return child_gone(e, "before reading its input");
    if (err)
        return omni_fail(OMNI_ERR_IO, "environment '%s': cannot write to it: %s", e->what,
                         strerror(err));
    return OMNI_OK;
}

/* Read one line (without its newline, NUL terminated, valid until the next read). */
static omni_status read_line(omni_env *e, char **line)
{
    double deadline = omni_now() + e->timeout;
    for (;;) {
        char *nl =
            e->len > e->scanned ? memchr(e->buf + e->scanned, '\n', e->len - e->scanned) : NULL;
        if (nl) {
            *nl = '\0';
            *line = e->buf;
            e->scanned = (size_t)(nl - e->buf) + 1; /* consumed up to here */
            return OMNI_OK;
        }
        e->scanned = e->len;
        if (e->len >= OMNI_ENV_LINE_MAX)
            return omni_fail(OMNI_ERR_DATA, "environment '%s': a reply longer than %d bytes",
                             e->what, OMNI_ENV_LINE_MAX);
        double left = deadline - omni_now();
        if (left <= 0)
            return omni_fail(OMNI_ERR_DATA, "environment '%s' did not answer within %g s", e->what,
                             e->timeout);
        struct pollfd pfd = {.fd = e->from_child, .events = POLLIN};
        int ms = left > 1e6 ? 1000000000 : (int)ceil(left * 1000.0);
        int r = poll(&pfd, 1, ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return omni_fail(OMNI_ERR_IO, "environment '%s': poll: %s", e->what, strerror(errno));
        if (r == 0)
            continue; /* the deadline check above reports it */
        ssize_t k = read(e->from_child, e->buf + e->len, OMNI_ENV_LINE_MAX - e->len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return omni_fail(OMNI_ERR_IO, "environment '%s': cannot read from it: %s", e->what,
                             strerror(errno));
        if (k == 0)
            return child_gone(e, e->len ? "in the middle of a line" : "instead of answering");
        e->len += (size_t)k;
        e->buf[e->len] = '\0';
    }
}

/* Forget the line that read_line returned. */
static void consume_line(omni_env *e)
{
    memmove(e->buf, e->buf + e->scanned, e->len - e->scanned);
    e->len -= e->scanned;
    e->scanned = 0;
    e->buf[e->len] = '\0';
}

/* A bad reply: the fault, and the start of the line. */
static omni_status bad_reply(omni_env *e, const char *line, const char *fault)
{
    size_t n = strlen(line);
    return omni_fail(OMNI_ERR_DATA, "environment '%s': %s in the reply '%.*s%s'", e->what, fault,
                     (int)(n > SHOWN_MAX ? SHOWN_MAX : n), line, n > SHOWN_MAX ? "..." : "");
}

/* The "image" of a reply: nested lists H x W (grey) or H x W x C (C = 1 or 3) of integers
 * 0..255, fitted to the task's image size by its resize mode (as `data build` fits the
 * images of an episodes file). On a fault, `fault` says what is wrong and OMNI_ERR_DATA is
 * returned without a message (the caller quotes the reply); a picture of another size
 * under resize: error has its message. */
static omni_status read_image(omni_env *e, json_t *im, char *fault, size_t cap)
{
    size_t h = json_is_array(im) ? json_array_size(im) : 0;
    json_t *row0 = h ? json_array_get(im, 0) : NULL;
    size_t w = json_is_array(row0) ? json_array_size(row0) : 0;
    json_t *px0 = w ? json_array_get(row0, 0) : NULL;
    size_t c = json_is_array(px0) ? json_array_size(px0) : 1;
    if (!h || !w || h > 4096 || w > 4096) {
        snprintf(fault, cap, "\"image\" is not a list of 1..4096 rows of 1..4096 pixels");
        return OMNI_ERR_DATA;
    }
    if (c != 1 && c != 3) {
        snprintf(fault, cap, "\"image\"[0][0] has %zu channels, expected 1 (grey) or 3 (RGB)", c);
        return OMNI_ERR_DATA;
    }
    omni_image src = {.h = (int32_t)h, .w = (int32_t)w, .c = (int32_t)c};
    src.px = omni_alloc((int64_t)(h * w * c), 1, "environment image");
    if (!src.px)
        return OMNI_ERR_NOMEM;
    omni_status st = OMNI_OK;
    for (size_t y = 0; y < h && !st; y++) {
        json_t *row = json_array_get(im, y);
        if (!json_is_array(row) || json_array_size(row) != w) {
            snprintf(fault, cap, "\"image\" row %zu has %zu pixels, row 0 has %zu (a ragged image)",
                     y, json_is_array(row) ? json_array_size(row) : 0, w);
            st = OMNI_ERR_DATA;
            break;
        }
        for (size_t x = 0; x < w && !st; x++) {
            json_t *p = json_array_get(row, x);
            if ((c == 1 && json_is_array(p) && json_array_size(p) != 1) ||
                (c == 3 && (!json_is_array(p) || json_array_size(p) != 3))) {
                snprintf(fault, cap, "\"image\"[%zu][%zu] has not %zu channel%s like [0][0]", y, x,
                         c, c == 1 ? "" : "s");
                st = OMNI_ERR_DATA;
                break;
            }
            for (size_t k = 0; k < c; k++) {
                json_t *v = json_is_array(p) ? json_array_get(p, k) : p;
                json_int_t iv = json_is_integer(v) ? json_integer_value(v) : -1;
                if (iv < 0 || iv > 255) {
                    snprintf(fault, cap, "\"image\"[%zu][%zu] is not an integer in 0..255", y, x);
                    st = OMNI_ERR_DATA;
                    break;
                }
                src.px[(y * w + x) * c + k] = (uint8_t)iv;
            }
        }
    }
    if (!st) {
        char where[320];
        snprintf(where, sizeof where, "environment '%s': its \"image\"", e->what);
        omni_image fit;
        st = omni_image_fit(&src, e->img_size, e->img_channels, e->img_mode, where, &fit, NULL);
        if (!st) {
            memcpy(e->img, fit.px,
                   (size_t)e->img_size * (size_t)e->img_size * (size_t)e->img_channels);
            omni_image_free(&fit);
        } else {
            fault[0] = '\0'; /* the message says it */
        }
    }
    omni_image_free(&src);
    return st;
}

/* Read a reply: {"obs": [...]} and, after a step, "reward" and "done". */
static omni_status read_reply(omni_env *e, bool step, float *obs, double *reward, bool *done)
{
    char *line = NULL;
    omni_status st = read_line(e, &line);
    if (st)
        return st;
    json_error_t jerr;
    json_t *root = json_loads(line, 0, &jerr);
    char fault[256];
    if (!root) {
        snprintf(fault, sizeof fault, "not JSON (%s at column %d)", jerr.text, jerr.column);
        st = bad_reply(e, line, fault);
        goto out;
    }
    if (!json_is_object(root)) {
        st = bad_reply(e, line, "not a JSON object");
        goto out;
    }
    json_t *o = json_object_get(root, "obs");
    if (e->img) {
        /* A task trained on pixels: the picture, and "obs" only when it has a state too. */
        json_t *im = json_object_get(root, "image");
        if (!im) {
            st = bad_reply(e, line, "no \"image\" (the task observes pictures)");
            goto out;
        }
        if ((st = read_image(e, im, fault, sizeof fault))) {
            if (fault[0])
                st = bad_reply(e, line, fault);
            goto out;
        }
        if (!o && e->obs_dim == 0)
            goto step;
    }
    if (!o || !json_is_array(o)) {
        st = bad_reply(e, line, o ? "\"obs\" is not an array" : "no \"obs\"");
        goto out;
    }
    if (json_array_size(o) != (size_t)e->obs_dim) {
        snprintf(fault, sizeof fault, "\"obs\" has %zu values, the task has %d", json_array_size(o),
                 (int)e->obs_dim);
        st = bad_reply(e, line, fault);
        goto out;
    }
    for (int32_t j = 0; j < e->obs_dim; j++) {
        json_t *v = json_array_get(o, (size_t)j);
        double x = json_is_number(v) ? json_number_value(v) : (double)NAN;
        if (!isfinite(x) || !isfinite((float)x)) {
            snprintf(fault, sizeof fault, "\"obs\"[%d] is not a finite number", (int)j);
            st = bad_reply(e, line, fault);
            goto out;
        }
        obs[j] = (float)x;
    }
step:
    if (step) {
        json_t *r = json_object_get(root, "reward"), *d = json_object_get(root, "done");
        if (!r || !json_is_number(r) || !isfinite(json_number_value(r))) {
            st = bad_reply(e, line, r ? "\"reward\" is not a finite number" : "no \"reward\"");
            goto out;
        }
        if (!d || !json_is_boolean(d)) {
            st = bad_reply(e, line, d ? "\"done\" is not true or false" : "no \"done\"");
            goto out;
        }
        *reward = json_number_value(r);
        *done = json_is_true(d);
    }
out:
    json_decref(root);
    consume_line(e);
    return st;
}

/* Encode and send a message. */
static omni_status send_json(omni_env *e, json_t *msg)
{
    if (!msg)
        return omni_fail(OMNI_ERR_NOMEM, "environment '%s': cannot make a message", e->what);
    char *text = json_dumps(msg, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(msg);
    if (!text)
        return omni_fail(OMNI_ERR_NOMEM, "environment '%s': cannot make a message", e->what);
    omni_status st = send_line(e, text);
    free(text);
    return st;
}

/* ---- the interface ----------------------------------------------------------- */

/* Whether a task of obs_dim observations and act_dim actions fits built-in environment
 * `name`, which has `obs` observations (`obs_note` says what they are) and one discrete
 * action; a task that sees pictures may have none. Else OMNI_ERR_DATA saying both. */
static omni_status builtin_fits(const char *name, int32_t obs, const char *obs_note,
                                int32_t obs_dim, int32_t act_dim, bool discrete)
{
    if ((obs_dim == obs || obs_dim == 0) && act_dim == 1 && discrete)
        return OMNI_OK;
    return omni_fail(OMNI_ERR_DATA,
                     "environment '%s' has %d observations (%s) and 1 discrete action; the task "
                     "has %d observations and %d %s action%s",
                     name, (int)obs, obs_note, (int)obs_dim, (int)act_dim,
                     discrete ? "discrete" : "continuous", act_dim == 1 ? "" : "s");
}

omni_status omni_env_open(omni_env **out, const char *what, int32_t obs_dim, int32_t act_dim,
                          bool discrete, double timeout)
{
    *out = NULL;
    if (!what || !*what)
        return omni_fail(OMNI_ERR_USAGE, "no environment given");
    if (obs_dim < 0 || act_dim < 1)
        return omni_fail(OMNI_ERR_INTERNAL, "environment: obs_dim %d, act_dim %d", (int)obs_dim,
                         (int)act_dim);
    if (!(timeout > 0))
        return omni_fail(OMNI_ERR_USAGE, "the environment timeout must be > 0 s");
    omni_env *e = calloc(1, sizeof *e);
    if (!e)
        return omni_fail(OMNI_ERR_NOMEM, "cannot allocate an environment");
    e->obs_dim = obs_dim, e->act_dim = act_dim, e->discrete = discrete, e->timeout = timeout;
    e->to_child = e->from_child = -1;
    size_t n = strlen(what);
    snprintf(e->what, sizeof e->what, "%.*s%s", (int)(n < 200 ? n : 200), what,
             n < 200 ? "" : "...");
    omni_status st;
    e->grid = !strcmp(what, OMNI_ENV_GRIDWORLD);
    e->builtin = e->grid || !strcmp(what, OMNI_ENV_CARTPOLE);
    if (e->builtin) {
        st = e->grid ? builtin_fits(what, OMNI_GRIDWORLD_OBS,
                                    "the agent's row and column; or none, for a task that sees "
                                    "only its pictures",
                                    obs_dim, act_dim, discrete)
                     : builtin_fits(what, OMNI_CARTPOLE_OBS,
                                    "or none, for a task that sees its pictures", obs_dim, act_dim,
                                    discrete);
        if (st)
            goto out_free;
        *out = e;
        return OMNI_OK;
    }
    e->buf = malloc(OMNI_ENV_LINE_MAX + 1);
    if (!e->buf) {
        st = omni_fail(OMNI_ERR_NOMEM, "cannot allocate an environment's buffer");
        goto out_free;
    }
    e->buf[0] = '\0';
    if ((st = spawn(e, what)))
        goto out_free;
    *out = e;
    return OMNI_OK;
out_free:
    free(e->buf);
    free(e);
    return st;
}

omni_status omni_env_want_images(omni_env *e, int32_t size, int32_t channels, omni_resize_mode mode)
{
    if (size < 1 || size > 4096 || (channels != 1 && channels != 3))
        return omni_fail(OMNI_ERR_INTERNAL, "environment: pictures of %d x %d x %d", (int)size,
                         (int)size, (int)channels);
    omni_free(e->img);
    e->img = omni_alloc((int64_t)size * size * channels, 1, "environment image");
    if (!e->img)
        return OMNI_ERR_NOMEM;
    e->img_size = size, e->img_channels = channels, e->img_mode = mode;
    return OMNI_OK;
}

const uint8_t *omni_env_image(const omni_env *e)
{
    return e->img;
}

/* The built-in grid world's picture when the task sees one, and its state when it has one. */
static void gridworld_observe(omni_env *e, float *obs)
{
    if (e->obs_dim > 0)
        omni_gridworld_observe(&e->gw, obs);
    if (e->img)
        omni_gridworld_render(&e->gw, e->img_size, e->img_channels, e->img);
}

/* The built-in cart-pole's picture, and its state when the task has one. */
static void cartpole_observe(omni_env *e, float *obs)
{
    if (e->obs_dim > 0)
        omni_cartpole_observe(&e->cp, obs);
    if (e->img)
        omni_cartpole_render(&e->cp, e->img_size, e->img_channels, e->img);
}

int32_t omni_env_discrete_actions(const omni_env *e)
{
    return e->grid ? OMNI_GRIDWORLD_ACTIONS : e->builtin ? OMNI_CARTPOLE_ACTIONS : OMNI_BINS;
}

omni_status omni_env_reset(omni_env *e, uint64_t seed, float *obs)
{
    if (e->grid) {
        if (!e->img && e->obs_dim == 0)
            return omni_fail(OMNI_ERR_DATA, "environment 'gridworld': the task sees neither "
                                            "pictures nor the state vector");
        omni_gridworld_reset(&e->gw, seed, 0);
        gridworld_observe(e, obs);
        return OMNI_OK;
    }
    if (e->builtin) {
        omni_cartpole_reset(&e->cp, seed, 0);
        cartpole_observe(e, obs);
        return OMNI_OK;
    }
    json_t *msg = json_pack("{s:I}", "reset", (json_int_t)(seed & INT64_MAX));
    omni_status st = send_json(e, msg);
    if (!st)
        st = read_reply(e, false, obs, NULL, NULL);
    return st;
}

omni_status omni_env_step(omni_env *e, const float *act_f, const int32_t *act_i, float *obs,
                          double *reward, bool *done)
{
    if (e->grid) {
        if (act_i[0] < 0 || act_i[0] >= OMNI_GRIDWORLD_ACTIONS)
            return omni_fail(OMNI_ERR_INTERNAL, "gridworld: action %d is not 0..3", (int)act_i[0]);
        *reward = omni_gridworld_step(&e->gw, act_i[0]);
        *done = e->gw.done;
        gridworld_observe(e, obs);
        return OMNI_OK;
    }
    if (e->builtin) {
        if (act_i[0] < 0 || act_i[0] >= OMNI_CARTPOLE_ACTIONS)
            return omni_fail(OMNI_ERR_INTERNAL, "cartpole: action %d is not 0 or 1", (int)act_i[0]);
        *done = omni_cartpole_step(&e->cp, act_i[0]);
        *reward = 1.0; /* as Gym's CartPole: 1 for every step, the last one too */
        cartpole_observe(e, obs);
        return OMNI_OK;
    }
    json_t *a = json_array();
    for (int32_t j = 0; a && j < e->act_dim; j++)
        if (json_array_append_new(a, e->discrete ? json_integer(act_i[j])
                                                 : json_real((double)act_f[j]))) {
            json_decref(a);
            a = NULL;
        }
    json_t *msg = a ? json_pack("{s:o}", "action", a) : NULL;
    omni_status st = send_json(e, msg);
    if (!st)
        st = read_reply(e, true, obs, reward, done);
    return st;
}

void omni_env_close(omni_env *e)
{
    if (!e)
        return;
    if (e->to_child >= 0)
        close(e->to_child);
    if (e->from_child >= 0)
        close(e->from_child);
    if (e->pid > 0 && !reap(e, 1000)) {
        kill(-e->pid, SIGKILL);
        kill(e->pid, SIGKILL);
        reap(e, 5000);
    }
    omni_free(e->img);
    free(e->buf);
    free(e);
}
