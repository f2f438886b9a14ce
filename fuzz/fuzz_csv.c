/* fuzz: the RFC 4180 CSV manifest parser; every field handed to the row callback is
 * read whole, so an unterminated field shows as an overread. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static omni_status row(void *ctx, char **fields, int n_fields, int64_t line)
{
    size_t *total = ctx;
    for (int i = 0; i < n_fields; i++)
        *total += strlen(fields[i]);
    return line > 0 ? OMNI_OK : omni_fail(OMNI_ERR_INTERNAL, "line %lld", (long long)line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    size_t total = 0;
    ds_csv_parse("fuzz.csv", text, size, row, &total);
    free(text);
    omni_error_clear();
    return 0;
}
