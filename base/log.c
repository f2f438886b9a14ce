/* Logging with levels: rank 0 speaks for the job; other ranks only for their faults. */
#include "base.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static int log_rank;
static omni_log_level log_level = OMNI_LOG_INFO;

static const char *const level_prefix[] = {
    [OMNI_LOG_ERROR] = "error: ",
    [OMNI_LOG_WARN] = "warning: ",
    [OMNI_LOG_INFO] = "",
    [OMNI_LOG_DEBUG] = "debug: ",
};
_Static_assert(sizeof level_prefix / sizeof level_prefix[0] == OMNI_LOG_LEVEL_COUNT,
               "a prefix for every level");

void omni_log_setup(int rank, omni_log_level level)
{
    log_rank = rank;
    log_level = level;
}

int omni_log_rank(void)
{
    return log_rank;
}

static void vlog(omni_log_level level, bool with_rank, const char *fmt, va_list ap)
{
    FILE *f = level <= OMNI_LOG_WARN || with_rank ? stderr : stdout;
    if (level > OMNI_LOG_INFO || level < OMNI_LOG_INFO)
        fputs("omnimoe: ", f);
    if (with_rank && log_rank > 0)
        fprintf(f, "[rank %d] ", log_rank);
    fputs(level_prefix[level], f);
    vfprintf(f, fmt, ap);
    fputc('\n', f);
    fflush(f);
}

void omni_log(omni_log_level level, const char *fmt, ...)
{
    if (log_rank != 0 || level > log_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, false, fmt, ap);
    va_end(ap);
}

void omni_log_any_rank(omni_log_level level, const char *fmt, ...)
{
    if (level > log_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, true, fmt, ap);
    va_end(ap);
}

double omni_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
