/* fuzz: the build spec parser (a YAML file). */
#include "fuzz_util.h"
#include "internal.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ds_spec *spec = calloc(1, sizeof *spec);
    if (!spec)
        return 0;
    if (!ds_spec_parse(spec, fuzz_file(data, size, ".yaml")))
        ds_spec_free(spec);
    free(spec);
    omni_error_clear();
    return 0;
}
