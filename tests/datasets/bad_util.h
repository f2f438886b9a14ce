/*
 * Helpers of the bad-input suites (test_datasets_bad.c, test_prompt_bad.c), which run the
 * omnimoe binary ($OMNIMOE) in a fresh directory `dir` (made by each suite's setup):
 * files put there, a command's exit status and stderr, and whether an output was left.
 */
#ifndef OMNI_TEST_BAD_UTIL_H
#define OMNI_TEST_BAD_UTIL_H

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static char dir[64];

static inline void put(const char *name, const void *bytes, size_t len)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot write %s", path);
    cr_assert_eq(fwrite(bytes, 1, len, f), len);
    fclose(f);
}

static inline void put_text(const char *name, const char *text)
{
    put(name, text, strlen(text));
}

/* Run `omnimoe ARGS` in dir; return its exit status, stderr in *err (static). */
static inline int run(const char *args, const char **err)
{
    static char out[8192];
    const char *bin = getenv("OMNIMOE");
    cr_assert_not_null(bin, "OMNIMOE must be set (CTest sets it)");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s >stdout.txt 2>stderr.txt", dir, bin, args);
    int rc = system(cmd);
    char path[256];
    snprintf(path, sizeof path, "%s/stderr.txt", dir);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(out, 1, sizeof out - 1, f) : 0;
    out[n] = '\0';
    if (f)
        fclose(f);
    *err = out;
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static inline bool no_output_left(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    bool clean = true;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, "out.h5", 6))
            clean = false;
    closedir(d);
    return clean;
}

/* Build spec.yaml (with `tasks` as its task list) and expect failure naming want1, want2. */
static inline void expect_build_fails(const char *spec, const char *want1, const char *want2)
{
    put_text("spec.yaml", spec);
    const char *err;
    int rc = run("data build spec.yaml --out out.h5", &err);
    cr_assert_eq(rc, 2, "exit status %d, expected 2; stderr: %s", rc, err);
    cr_assert(strstr(err, want1), "message lacks \"%s\": %s", want1, err);
    cr_assert(!want2 || strstr(err, want2), "message lacks \"%s\": %s", want2, err);
    cr_assert(no_output_left(), "an output file was left behind");
}

#endif /* OMNI_TEST_BAD_UTIL_H */
