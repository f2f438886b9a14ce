/* Test fixtures of the model suites: batches built by hand, tiny experiments, and a
 * finite-difference gradient check. */
#ifndef OMNI_TEST_MODEL_FIXTURE_H
#define OMNI_TEST_MODEL_FIXTURE_H

#include "experiment.h"
#include "model.h"

/* A batch with its own arrays (freed by fixture_batch_free). */
omni_batch fixture_batch_alloc(int64_t n_seq, int64_t context, int64_t patch_dim);
void fixture_batch_free(omni_batch *b);
/* Fill every position of window s as padding. */
void fixture_pad_window(omni_batch *b, int64_t s);

/* Data dims of the fixtures: 2 tasks, image and audio patches of 4 values, 2 x 2. */
omni_data_dims fixture_dims(void);
/* A tiny experiment: d 16, 2 layers, 2 heads, ff 32, context 12, no MoE, tasks with
 * loss weights 1 and 0.5. */
void fixture_experiment(omni_experiment *x, omni_attention mode);
/*
 * The mixed batch of the tests (2 windows of 12), the same as the PyTorch twin's:
 * window 0 packs an image_to_text sample (task 0) and a cut text sample (task 1);
 * window 1 holds an audio_to_text sample (task 1) then padding. Patch values from
 * a fixed formula.
 */
omni_batch fixture_mixed_batch(void);

/* d f / d x[i] by double-precision central differences around the float32 values of
 * x, compared with analytic[i] for every `stride`-th i: |a - n| <= atol + rtol *
 * max(|a|, |n|). Fails the Criterion test naming `what` and i on a mismatch. Returns
 * the number of entries compared. */
typedef double (*fixture_fn)(void *ctx);
int64_t fixture_check_grad(const char *what, float *x, const float *analytic, int64_t n,
                           int64_t stride, fixture_fn f, void *ctx, float h, double atol,
                           double rtol);

#endif /* OMNI_TEST_MODEL_FIXTURE_H */
