/* Status names, exit codes and the recorded error message of base.h. */
#include "base.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const status_names[] = {
    [OMNI_OK] = "ok",
    [OMNI_ERR_USAGE] = "usage error",
    [OMNI_ERR_CONFIG] = "config error",
    [OMNI_ERR_DATA] = "data error",
    [OMNI_ERR_CKPT] = "checkpoint error",
    [OMNI_ERR_IO] = "I/O error",
    [OMNI_ERR_NOMEM] = "out of memory",
    [OMNI_ERR_MPI] = "MPI error",
    [OMNI_ERR_NUMERIC] = "numerical error",
    [OMNI_ERR_INTERNAL] = "internal error",
};
_Static_assert(sizeof status_names / sizeof status_names[0] == OMNI_STATUS_COUNT,
               "a name for every status");

#define MESSAGE_MAX 4096
static _Thread_local char message[MESSAGE_MAX];

const char *omni_status_name(omni_status s)
{
    if ((int)s < 0 || s >= OMNI_STATUS_COUNT)
        return "unknown status";
    return status_names[s];
}

int omni_exit_code(omni_status s)
{
    switch (s) {
    case OMNI_OK:
        return 0;
    case OMNI_ERR_USAGE:
    case OMNI_ERR_CONFIG:
    case OMNI_ERR_DATA:
    case OMNI_ERR_CKPT:
        return 2;
    default:
        return 1;
    }
}

omni_status omni_fail(omni_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    return s;
}

omni_status omni_fail_context(omni_status s, const char *fmt, ...)
{
    char prefix[MESSAGE_MAX], old[MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, message, sizeof old);
    size_t lp = strlen(prefix), lo = strlen(old);
    if (lp > sizeof message - 1)
        lp = sizeof message - 1;
    if (lo > sizeof message - 1 - lp)
        lo = sizeof message - 1 - lp;
    memcpy(message, prefix, lp);
    memcpy(message + lp, old, lo);
    message[lp + lo] = '\0';
    return s;
}

const char *omni_error_message(void)
{
    return message;
}

void omni_error_clear(void)
{
    message[0] = '\0';
}

void omni_assert_fail(const char *cond, const char *file, int line)
{
    fprintf(stderr, "omnimoe: [rank %d] internal error: %s:%d: assertion failed: %s\n",
            omni_log_rank(), file, line, cond);
    fflush(stderr);
    abort();
}
