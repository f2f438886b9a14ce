/*
 * tensor — the one descriptor of a tensor of the training state, and the table that
 * holds them. Each part fills a descriptor where it creates the tensor (model/ its dense
 * parameters, experts/ the MoE layers' parameters and biases) with everything anyone
 * else needs to know: its checkpoint name, its global shape and what each dimension
 * means, the rows of dim 0 this rank holds (routed experts are split over ranks), whether
 * it trains and decays, its initialisation rule and its gradient bucket. The optimizer,
 * the worker's gradient buckets and checkpoint lists, and the checkpoint layer read the
 * descriptor; nobody reads meaning into a name. Adding a tensor is one call where it is
 * created (docs/design.md shows it with a bias).
 */
#ifndef OMNI_TENSOR_H
#define OMNI_TENSOR_H

#include <stdbool.h>
#include <stdint.h>

#include "base.h"

#define OMNI_TENSOR_MAX_RANK 4

/* Element type, in memory and in a checkpoint file (little-endian IEEE / two's
 * complement). Zero is f32, so a zero-initialised descriptor is a float tensor. */
typedef enum {
    OMNI_CKPT_F32 = 0,
    OMNI_CKPT_F64,
    OMNI_CKPT_I64,
    OMNI_CKPT_TYPE_COUNT
} omni_ckpt_type;

/* How a parameter starts (omni_tensor_init), drawn from the stream (seed, name, expert)
 * of each expert of a per-expert tensor, else from (seed, name, 0). */
typedef enum {
    OMNI_INIT_NORMAL = 0, /* normal(0, 0.02) */
    OMNI_INIT_RESIDUAL,   /* normal(0, 0.02 / sqrt(2 n_layers)): projections into the residual */
    OMNI_INIT_ONES,       /* norm gains */
    OMNI_INIT_ZEROS,      /* biases, balancing state */
    OMNI_INIT_UNIT,       /* normal(0, 1): a learned input standing in for a normalised
                             activation (the task embedding of the task router) */
    OMNI_INIT_COUNT
} omni_init_rule;

/* Gradient buckets: a block index (0 .. n_layers-1) for the tensors whose gradients are
 * final when backward leaves that block, or one of these. */
#define OMNI_GRADS_HEAD  (-1) /* final norm and head: final first */
#define OMNI_GRADS_EMBED (-2) /* embeddings: final last */

/* One tensor, as seen by one rank. */
typedef struct {
    const char *name;    /* checkpoint path without the leading '/': "params/embed/tok" */
    omni_ckpt_type type; /* element type (f32 when zero-initialised) */
    int rank;            /* 1..OMNI_TENSOR_MAX_RANK; a scalar is [1] */
    int64_t dims[OMNI_TENSOR_MAX_RANK]; /* GLOBAL shape, e.g. [E, d_model, expert_ff] */
    const char *meaning;    /* what the dimensions are: "[expert, d_model, expert_ff]: SwiGLU
                               gate of each expert"; the checkpoint's "meaning" attribute */
    uint8_t vocab_dims;     /* bit d set: dimension d is indexed by token id (the vocabulary,
                               whose last entries are the <task> tokens); a resume into
                               another task set (--remap-tasks) moves those entries by task
                               name */
    uint8_t task_dims;      /* bit d set: dimension d is indexed by task (the task table's
                               order, e.g. task embeddings); --remap-tasks moves its entries
                               by task name like those of vocab_dims */
    uint8_t expert_dims;    /* bit d set: dimension d is indexed by routed expert (experts'
                               rows, the router's columns, the balancing bias): what
                               `omnimoe ckpt extract` keeps a task's entries of */
    void *data;             /* this rank's rows [row_lo, row_hi) of dim 0, row-major */
    int64_t row_lo, row_hi; /* the whole tensor: 0, dims[0]; none: row_lo == row_hi */
    bool writer;            /* checkpoint save: this rank writes its rows. The writers' row
                               ranges of a tensor must cover dims[0] exactly once (checked): a
                               dense replica is written by rank 0 only, a replicated expert
                               group by group 0 only. Ignored by load. */
    /* Training: set by the part that creates a parameter; the checkpoint ignores them. */
    bool per_expert; /* dim 0 is the expert (routed or shared experts): each expert
                        has its own initialisation stream */
    bool sharded;    /* rows of dim 0 split over ranks (routed experts): its gradient
                        stays on this rank, and one token uses top_k of them; otherwise
                        replicated and all-reduced */
    bool trainable;  /* has a gradient and AdamW moments (false: state, e.g. a bias
                        that is nudged, not trained) */
    bool decay;      /* AdamW weight decay applies (linear maps) */
    omni_init_rule init;
    int64_t group;  /* gradient bucket: a block, OMNI_GRADS_HEAD or OMNI_GRADS_EMBED */
    int64_t offset; /* trainable: in floats, in the owner's flat params/grads/m/v */
    int64_t numel;  /* elements held by this rank */
} omni_tensor;

/*
 * A table of descriptors that owns their names, growing as tensors are added (no limit
 * but memory). Zero-initialise before use.
 */
typedef struct {
    omni_tensor *t;
    int64_t n, cap;
    char **names; /* [n] owned copies, t[i].name points at names[i] */
} omni_tensor_table;

/* Append a copy of *proto named by the printf format; returns the new entry (valid until
 * the next add) or NULL with OMNI_ERR_NOMEM recorded. */
omni_tensor *omni_tensor_table_add(omni_tensor_table *tab, const omni_tensor *proto,
                                   const char *fmt, ...) OMNI_PRINTF(3, 4);
void omni_tensor_table_free(omni_tensor_table *tab);
/* Index of the tensor named `name`, or -1 (for tests and tools, not for dispatch). */
int64_t omni_tensor_table_find(const omni_tensor_table *tab, const char *name);

/* Elements of one row of dim 0 (the product of the other dims). */
int64_t omni_tensor_row_elems(const omni_tensor *t);

/*
 * Fill a float tensor's data (this rank's rows) from its rule, with n_layers for
 * OMNI_INIT_RESIDUAL: expert e of a per-expert tensor from the stream (seed, name, e),
 * any other from (seed, name, 0), so the values do not depend on the number of processes.
 */
void omni_tensor_init(const omni_tensor *t, uint64_t seed, int64_t n_layers);

/* The range [*first, *first + *count) of the owner's flat gradient buffer that holds the
 * trainable, unsharded tensors of bucket `group` (*count 0: none). */
void omni_tensor_table_group_range(const omni_tensor_table *tab, int64_t group, int64_t *first,
                                   int64_t *count);

#endif /* OMNI_TENSOR_H */
