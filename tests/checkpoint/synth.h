/*
 * A synthetic training state for the checkpoint tests: the tensors of a small MoE
 * model laid out over `nranks` ranks as the trainer lays them out (dense tensors
 * replicated, experts sharded e * N / E == rank, or replicated in groups of E ranks
 * when E < N), filled with values that depend on (step, tensor, element) only, so a
 * reader with any number of ranks can check every value it reads.
 */
#ifndef OMNI_TEST_SYNTH_H
#define OMNI_TEST_SYNTH_H

#include "checkpoint.h"

#define SYNTH_MAX 16

typedef struct {
    int n;
    omni_ckpt_tensor t[SYNTH_MAX];
    int64_t experts; /* E of the routed expert tensors */
    int64_t step;
} synth;

/*
 * Describe the tensors that rank `rank` of `nranks` holds, with E experts, and
 * allocate them. `big` > 0 adds a tensor params/layers/05/moe/experts/big of
 * [E, big, 1024] f32. With `fill`, write the values of `step` (and on replicas that
 * are not writers, different "poison" values, so a replica that wrote would show);
 * without, fill with a sentinel (for reading).
 */
int synth_make(synth *s, int rank, int nranks, int64_t experts, int64_t big, int64_t step,
               bool fill);
void synth_free(synth *s);
/* The number of values of this rank's rows that differ from those of `step`; the
 * first is described in `why`. */
int64_t synth_check(const synth *s, int64_t step, char *why, size_t len);
/* Every byte of the rank's buffers still holds the sentinel. */
bool synth_untouched(const synth *s);

/* The tokenization of the synthetic checkpoints: tasks b (image_to_text, index 0) and a
 * (control, index 1). */
void synth_tokenization(omni_tokenization *t);
/* The metadata of step `step` (YAML text and tokenization owned by static buffers). */
void synth_meta(omni_ckpt_meta *m, int64_t step, int64_t experts);
/* Parameter counts the synthetic model must have: total and active per token. */
void synth_param_counts(int64_t experts, int64_t big, int64_t *total, double *active);

#endif /* OMNI_TEST_SYNTH_H */
