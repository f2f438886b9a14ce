/*
 * experiment, private: the key table shared by the loader (experiment.c) and the table
 * itself with the YAML writer and the key documentation (keys.c). Each key is described
 * once, in keys.c.
 */
#ifndef OMNI_EXPERIMENT_KEYS_H
#define OMNI_EXPERIMENT_KEYS_H

#include <stddef.h>

#include "experiment.h"

typedef enum {
    FT_INT,
    FT_FLOAT,
    FT_BOOL,
    FT_STRING,
    FT_PATH,
    FT_ATTENTION,
    FT_ROUTER,
    FT_ENTROPY,
    FT_THREADS,
    FT_GEMM,
    FT_PRECISION,
    FT_FILES,
    FT_TASKS,
    FT_COUNT
} field_type;

typedef struct {
    const char *section, *key;
    field_type type;
    size_t offset;
    const char *def; /* default as YAML text; NULL: required */
    double min, max; /* inclusive range for numbers; max < min: no upper bound */
    const char *doc;
} field;

/* Rows of the key table and sections (checked against the tables in keys.c). */
#define N_FIELDS   52
#define N_SECTIONS 9

extern const field omni_exp_fields[N_FIELDS];
extern const char *const omni_exp_sections[N_SECTIONS];
extern const char *const omni_exp_type_names[FT_COUNT];

#endif /* OMNI_EXPERIMENT_KEYS_H */
