/*
 * tests/datasets: the helpers its Criterion files share (the source tree, one temporary
 * directory per test). Each test runs in its own process, so one static name suffices.
 */
#ifndef OMNI_TESTS_DATASETS_UTIL_H
#define OMNI_TESTS_DATASETS_UTIL_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

static const char *source_dir(void)
{
    const char *d = getenv("OMNI_SOURCE_DIR");
    cr_assert_not_null(d, "OMNI_SOURCE_DIR must be set (CTest sets it)");
    return d;
}

/* A fresh temporary directory for one test, removed when the test ends. */
static char made_dir[64];

static void temp_dir(char *out, size_t cap)
{
    snprintf(out, cap, "/tmp/omni-ds-XXXXXX");
    cr_assert_not_null(mkdtemp(out));
    snprintf(made_dir, sizeof made_dir, "%s", out);
}

static void remove_temp_dir(void)
{
    if (!made_dir[0])
        return;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", made_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", made_dir);
}

#endif /* OMNI_TESTS_DATASETS_UTIL_H */
