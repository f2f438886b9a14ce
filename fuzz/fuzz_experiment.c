/* fuzz: the experiment loader. The input is YAML text, then optionally a NUL byte and
 * NUL-separated `--set key=value` overrides. */
#include <stdlib.h>
#include <string.h>

#include "experiment.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    size_t yaml_len = strnlen(buf, size);
    const char *sets[8];
    int n_sets = 0;
    for (size_t p = yaml_len + 1; p < size && n_sets < 8; p += strlen(buf + p) + 1)
        sets[n_sets++] = buf + p;
    omni_experiment *x = malloc(sizeof *x);
    if (x) {
        omni_experiment_parse(x, buf, yaml_len, "fuzz.yaml", sets, n_sets);
        free(x);
    }
    free(buf);
    omni_error_clear();
    return 0;
}
