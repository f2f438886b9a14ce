/*
 * tokens — what the data part writes and the model reads, with no code behind it: the
 * vocabulary layout, the dimensions of the data that size the model, and a batch of
 * packed windows. Both datasets/ and model/ include it; neither depends on the other.
 */
#ifndef OMNI_TOKENS_H
#define OMNI_TOKENS_H

#include <stdint.h>

/*
 * Vocabulary layout (docs/design.md §3): text bytes 0..255, then OMNI_BINS value bins,
 * then <pad>, <eos>, <sep>, then one <task> token per task of the experiment, in the
 * order of the experiment's task list.
 */
#define OMNI_TEXT_VOCAB 256
#define OMNI_BINS       1024
#define OMNI_TOK_BIN0   OMNI_TEXT_VOCAB
#define OMNI_TOK_PAD    (OMNI_TOK_BIN0 + OMNI_BINS)
#define OMNI_TOK_EOS    (OMNI_TOK_PAD + 1)
#define OMNI_TOK_SEP    (OMNI_TOK_PAD + 2)
#define OMNI_TOK_TASK0  (OMNI_TOK_PAD + 3)

/* What the model needs to know of the data: set from the dataset files. */
typedef struct {
    int32_t n_tasks;
    int32_t vocab;           /* OMNI_TOK_TASK0 + n_tasks */
    int32_t image_patch_dim; /* patch * patch * channels of images; 0: no images */
    int32_t audio_patch_dim; /* patch * patch of spectrograms; 0: no audio */
    int32_t max_rows;        /* rows of E_row: the most patch rows of an image/spectrogram */
    int32_t max_cols;        /* columns of E_col */
} omni_data_dims;

/* What one sequence position holds. */
typedef enum {
    OMNI_POS_TOKEN = 0, /* a discrete token id */
    OMNI_POS_IMAGE,     /* an image patch */
    OMNI_POS_AUDIO,     /* an audio-spectrogram patch */
    OMNI_POS_PAD,       /* padding after the last sample of a window: no attention, no loss */
    OMNI_POS_KIND_COUNT
} omni_pos_kind;

/*
 * A batch of n_seq windows of `context` positions, packed with whole or cut samples.
 * Position p = s * context + t. Filled by the data sampler (or by tests); the model
 * never allocates it. Every array has n_seq * context entries unless said.
 */
typedef struct {
    int64_t n_seq, context;
    int64_t patch_dim;  /* row length of `patch`: max(image_patch_dim, audio_patch_dim) */
    uint8_t *kind;      /* omni_pos_kind */
    int32_t *token;     /* token id at OMNI_POS_TOKEN positions, OMNI_TOK_PAD elsewhere */
    float *patch;       /* [n_seq * context, patch_dim]: normalised patch values at patch
                           positions (first image/audio_patch_dim entries), 0 elsewhere */
    int32_t *patch_row; /* place of a patch in its image or spectrogram, 0 elsewhere */
    int32_t *patch_col;
    int32_t *pos;       /* position inside its sample: restarts at 0 in each packed sample */
    int32_t *segment;   /* sample number inside the window (0, 1, ...): attention never
                           crosses segments; -1 at padding */
    uint8_t *in_prefix; /* 1 where the position is in its sample's prefix (before its first
                           loss-bearing token): bidirectional under attention: prefix */
    int32_t *target;    /* next-token target id at this position, -1 where none */
    uint8_t *loss_mask; /* 1 where target[p] carries loss */
    int32_t *task;      /* task index of the sample at this position, -1 at padding */
    double loss_norm;   /* loss-bearing tokens in the whole global batch (the mean's
                           denominator), the same on every rank */
} omni_batch;

/* Windows first .. first + n - 1 of b as a batch of their own (views into b's arrays, the
 * same loss_norm): a micro-batch. */
static inline omni_batch omni_batch_windows(const omni_batch *b, int64_t first, int64_t n)
{
    const int64_t o = first * b->context;
    omni_batch v = *b;
    v.n_seq = n;
    v.kind = b->kind + o;
    v.token = b->token + o;
    v.patch = b->patch ? b->patch + o * b->patch_dim : NULL;
    v.patch_row = b->patch_row + o;
    v.patch_col = b->patch_col + o;
    v.pos = b->pos + o;
    v.segment = b->segment + o;
    v.in_prefix = b->in_prefix ? b->in_prefix + o : NULL;
    v.target = b->target + o;
    v.loss_mask = b->loss_mask + o;
    v.task = b->task + o;
    return v;
}

#endif /* OMNI_TOKENS_H */
