/*
 * base — what every part of omnimoe stands on: status codes and error messages,
 * logging, checked aligned allocation, the counter-based random generator, and the
 * MPI conventions (errors returned, failures agreed on at phase boundaries).
 *
 * Error convention: a function that can fail returns omni_status. At the point of
 * failure it calls omni_fail(), which records one message (naming the file and the
 * fault) and returns the status, so the caller writes `return omni_fail(...)`.
 * Callers pass the status up unchanged; only main prints the message and decides the
 * exit code (omni_exit_code) and, in an MPI job, whether to MPI_Abort.
 */
#ifndef OMNI_BASE_H
#define OMNI_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mpi.h>

/* ---- status ------------------------------------------------------------------ */

typedef enum {
    OMNI_OK = 0,
    OMNI_ERR_USAGE,    /* bad command line                              -> exit 2 */
    OMNI_ERR_CONFIG,   /* bad experiment file or --set                  -> exit 2 */
    OMNI_ERR_DATA,     /* bad data file, spec or raw input              -> exit 2 */
    OMNI_ERR_CKPT,     /* bad checkpoint                                -> exit 2 */
    OMNI_ERR_IO,       /* an I/O failure while running (disk full, ...) -> exit 1 */
    OMNI_ERR_NOMEM,    /* out of memory                                 -> exit 1 */
    OMNI_ERR_MPI,      /* an MPI call failed                            -> exit 1 */
    OMNI_ERR_NUMERIC,  /* a non-finite loss or gradient                 -> exit 1 */
    OMNI_ERR_INTERNAL, /* a bug: an invariant did not hold              -> exit 1 */
    OMNI_STATUS_COUNT
} omni_status;

/* Short name of a status ("config error", ...). */
const char *omni_status_name(omni_status s);
/* The process exit code docs/design.md §6 gives a status: 0, 2 for bad input, else 1. */
int omni_exit_code(omni_status s);

#if defined(__GNUC__)
#define OMNI_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define OMNI_PRINTF(a, b)
#endif

/* Record the message of a failure and return s. The message is kept until the next
 * omni_fail or omni_error_clear; a message already recorded for the same failure is
 * replaced (the innermost caller knows the most, so callers that add context use
 * omni_fail_context). */
omni_status omni_fail(omni_status s, const char *fmt, ...) OMNI_PRINTF(2, 3);
/* Prefix the recorded message with context ("reading data.h5: ") and return s. */
omni_status omni_fail_context(omni_status s, const char *fmt, ...) OMNI_PRINTF(2, 3);
/* The message of the last failure ("" if none). */
const char *omni_error_message(void);
void omni_error_clear(void);

/* An assertion that stays on in release builds, for invariants of our own code, never
 * for input. On failure it prints the place and aborts. */
#define OMNI_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond))                                                                               \
            omni_assert_fail(#cond, __FILE__, __LINE__);                                           \
    } while (0)
_Noreturn void omni_assert_fail(const char *cond, const char *file, int line);

/* ---- logging ----------------------------------------------------------------- */

typedef enum {
    OMNI_LOG_ERROR = 0,
    OMNI_LOG_WARN,
    OMNI_LOG_INFO,
    OMNI_LOG_DEBUG,
    OMNI_LOG_LEVEL_COUNT
} omni_log_level;

/* Set this process's rank (for prefixes and rank-0-only printing) and the most
 * verbose level printed. Not collective. */
void omni_log_setup(int rank, omni_log_level level);
int omni_log_rank(void);
/* Print on rank 0 only: errors and warnings to stderr, the rest to stdout. */
void omni_log(omni_log_level level, const char *fmt, ...) OMNI_PRINTF(2, 3);
/* Print on this rank, to stderr, prefixed with "[rank R]" when R > 0. */
void omni_log_any_rank(omni_log_level level, const char *fmt, ...) OMNI_PRINTF(2, 3);

/* ---- memory ------------------------------------------------------------------ */

#define OMNI_ALIGN 64

/* Zeroed, 64-byte aligned array of n elements of size bytes each; NULL on overflow
 * or exhaustion, with the failure recorded (OMNI_ERR_NOMEM) naming `what`. */
void *omni_alloc(int64_t n, size_t size, const char *what);
/* Release a block of omni_alloc, or a buffer that a function of this project returns for
 * the caller to free (it says so): one rule for every block, NULL is fine. */
void omni_free(void *p);
/*
 * The buffers an object owns, allocated with omni_alloc_in and freed together by
 * omni_alloc_list_free. A failed allocation sets `failed` (and returns NULL), so a run
 * of allocations is checked once at its end. Zero-initialise the list before use.
 */
typedef struct {
    void **blocks;
    int64_t n, cap;
    bool failed;
} omni_alloc_list;
void *omni_alloc_in(omni_alloc_list *l, int64_t n, size_t size, const char *what);
void omni_alloc_list_free(omni_alloc_list *l);
/* n * size in bytes, or false when it does not fit in size_t or n < 0. */
bool omni_mul_size(int64_t n, size_t size, size_t *bytes);

/* ---- random numbers ---------------------------------------------------------- */

/*
 * Philox4x32-10 (Salmon et al., SC'11): a counter-based generator. A stream is keyed
 * by (seed, name, index) — e.g. (experiment seed, "layers/03/attn/wqkv", expert) —
 * and element i of a stream depends on nothing else, so a rank that owns a slice of a
 * tensor draws exactly the values that a single process would draw for that slice.
 */
typedef struct {
    uint32_t key[2];
    uint64_t index; /* stream index (e.g. expert), the high half of the counter */
} omni_rng;

/* The raw block function: four 32-bit words from a 128-bit counter and 64-bit key. */
void omni_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
void omni_rng_init(omni_rng *r, uint64_t seed, const char *name, uint64_t index);
/* Word i (i >= 0) of the stream. */
uint32_t omni_rng_u32(const omni_rng *r, uint64_t i);
/* Element i of the stream as a uniform float in [0, 1) / a standard normal. */
float omni_rng_uniform(const omni_rng *r, uint64_t i);
float omni_rng_normal(const omni_rng *r, uint64_t i);
/* out[j] = mean + std * normal(first + j), j < n. */
void omni_rng_fill_normal(const omni_rng *r, uint64_t first, int64_t n, float mean, float std,
                          float *out);

/* ---- MPI --------------------------------------------------------------------- */

/* Initialise MPI (if not yet) and the program's communicator: a duplicate of
 * MPI_COMM_WORLD with MPI_ERRORS_RETURN. Sets up logging for this rank. */
omni_status omni_mpi_init(int *argc, char ***argv, MPI_Comm *comm);
/* Turn an MPI return code into a status with the MPI error string. */
omni_status omni_mpi_check(int rc, const char *what);
/*
 * Collective: every rank brings its status; all get back the first failure's status
 * (the failing rank with the lowest number), and that rank's message is sent to rank 0
 * so main can print it. Called at phase boundaries, so that all ranks fail together.
 */
omni_status omni_mpi_agree(MPI_Comm comm, omni_status local);
/* True when the last failure was agreed on by every rank (omni_mpi_agree returned it),
 * so all ranks are leaving together; false means this rank failed alone and main must
 * MPI_Abort so the others do not hang. */
bool omni_mpi_failure_agreed(void);
/* Collective: rank 0 reads `path` whole and every rank receives the same bytes (NUL
 * terminated). On failure every rank gets the same status. */
omni_status omni_mpi_read_file(MPI_Comm comm, const char *path, char **bytes, size_t *len);

/* Create directory `path` and its missing parents (mkdir -p); OMNI_ERR_IO naming the one
 * that cannot be made. Not collective. */
omni_status omni_make_dirs(const char *path);

/* Whether s is a short name of letters, digits, '-', '_' and '.' (task and experiment
 * names: safe in file names, HDF5 paths and log lines). */
bool omni_valid_name(const char *s);

/* Read a whole file (not collective). The buffer is NUL terminated; free with omni_free. */
omni_status omni_read_file(const char *path, char **bytes, size_t *len);

/* Seconds from a monotonic clock. */
double omni_now(void);

#endif /* OMNI_BASE_H */
