/*
 * Capacity drops by batch priority. The assignments of each expert are grouped by a
 * counting sort (stable, so in token order); an over-full expert's group is copied and
 * heap-sorted by priority, its first `capacity` entries are kept. Heap sort needs no
 * allocation (glibc's qsort may allocate) and, the order being total, gives the same
 * result as any other correct sort.
 */
#include "gating.h"

int64_t omni_router_assign_scratch(int64_t n, int64_t n_experts, int64_t k)
{
    return 2 * n * k + n_experts + 1;
}

typedef struct {
    const float *prob;
    int64_t k;
} prio_ctx;

/* True when assignment a = t*k+c comes before b: choice ascending, probability
 * descending, token ascending. */
static bool before(const prio_ctx *p, int64_t a, int64_t b)
{
    int64_t ca = a % p->k, cb = b % p->k;
    if (ca != cb)
        return ca < cb;
    float pa = p->prob[a], pb = p->prob[b];
    if (pa != pb)
        return pa > pb;
    return a / p->k < b / p->k;
}

static void sift_down(const prio_ctx *p, int64_t *v, int64_t root, int64_t n)
{
    for (;;) {
        int64_t child = 2 * root + 1;
        if (child >= n)
            return;
        /* max-heap under "comes later", so the heap sort yields priority order */
        if (child + 1 < n && before(p, v[child], v[child + 1]))
            child++;
        if (!before(p, v[root], v[child]))
            return;
        int64_t tmp = v[root];
        v[root] = v[child];
        v[child] = tmp;
        root = child;
    }
}

static void heap_sort(const prio_ctx *p, int64_t *v, int64_t n)
{
    for (int64_t i = n / 2 - 1; i >= 0; i--)
        sift_down(p, v, i, n);
    for (int64_t end = n - 1; end > 0; end--) {
        int64_t tmp = v[0];
        v[0] = v[end];
        v[end] = tmp;
        sift_down(p, v, 0, end);
    }
}

void omni_router_assign(int32_t *slot, int64_t *kept, const int32_t *expert, const float *prob,
                        int64_t n, int64_t n_experts, int64_t k, int64_t capacity, int64_t *scratch)
{
    const int64_t E = n_experts, A = n * k;
    int64_t *grouped = scratch;       /* [A] assignments grouped by expert, token order */
    int64_t *sorted = scratch + A;    /* [A] one over-full group, by priority */
    int64_t *start = scratch + 2 * A; /* [E + 1] group offsets */
    for (int64_t e = 0; e <= E; e++)
        start[e] = 0;
    for (int64_t a = 0; a < A; a++)
        start[expert[a] + 1]++;
    for (int64_t e = 0; e < E; e++)
        start[e + 1] += start[e];
    for (int64_t e = 0; e < E; e++)
        kept[e] = start[e]; /* fill cursor, reset below */
    for (int64_t a = 0; a < A; a++)
        grouped[kept[expert[a]]++] = a;

    const prio_ctx p = {prob, k};
    for (int64_t e = 0; e < E; e++) {
        int64_t m = start[e + 1] - start[e];
        const int64_t *g = grouped + start[e];
        for (int64_t j = 0; j < m; j++)
            slot[g[j]] = 0; /* kept, place assigned below */
        if (m > capacity) {
            for (int64_t j = 0; j < m; j++)
                sorted[j] = g[j];
            heap_sort(&p, sorted, m);
            for (int64_t j = capacity; j < m; j++)
                slot[sorted[j]] = -1;
        }
        int64_t place = 0;
        for (int64_t j = 0; j < m; j++)
            if (slot[g[j]] == 0)
                slot[g[j]] = (int32_t)place++;
        kept[e] = place;
    }
}
