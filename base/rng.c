/*
 * Philox4x32-10 and the keyed streams of base.h. Word i of a stream is lane i % 4 of
 * the block with counter (i / 4, index); uniforms take the top 24 bits of a word;
 * element i of a normal stream is Box-Muller on the pair of words (2*(i/2), 2*(i/2)+1),
 * the cosine branch for even i and the sine branch for odd i.
 */
#include "base.h"

#include <math.h>
#include <string.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void omni_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0, c1 = n1, c2 = n2, c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

void omni_rng_init(omni_rng *r, uint64_t seed, const char *name, uint64_t index)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a of the stream name */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    uint64_t k = splitmix64(splitmix64(seed) ^ h);
    r->key[0] = (uint32_t)k;
    r->key[1] = (uint32_t)(k >> 32);
    r->index = index;
}

static void block(const omni_rng *r, uint64_t b, uint32_t out[4])
{
    uint32_t ctr[4] = {(uint32_t)b, (uint32_t)(b >> 32), (uint32_t)r->index,
                       (uint32_t)(r->index >> 32)};
    omni_philox4x32(ctr, r->key, out);
}

uint32_t omni_rng_u32(const omni_rng *r, uint64_t i)
{
    uint32_t out[4];
    block(r, i / 4, out);
    return out[i % 4];
}

static float to_uniform(uint32_t w)
{
    return (float)(w >> 8) * (1.0f / 16777216.0f);
}

float omni_rng_uniform(const omni_rng *r, uint64_t i)
{
    return to_uniform(omni_rng_u32(r, i));
}

static void box_muller(uint32_t a, uint32_t b, float *z0, float *z1)
{
    /* u1 in (0, 1] so the log is finite; computed in double, rounded once. */
    double u1 = ((double)(a >> 8) + 1.0) / 16777216.0;
    double u2 = (double)(b >> 8) / 16777216.0;
    double rad = sqrt(-2.0 * log(u1));
    double th = 6.283185307179586 * u2;
    *z0 = (float)(rad * cos(th));
    *z1 = (float)(rad * sin(th));
}

float omni_rng_normal(const omni_rng *r, uint64_t i)
{
    uint32_t out[4];
    block(r, i / 4, out);
    int pair = (int)(i % 4) / 2;
    float z0, z1;
    box_muller(out[2 * pair], out[2 * pair + 1], &z0, &z1);
    return i % 2 == 0 ? z0 : z1;
}

void omni_rng_fill_normal(const omni_rng *r, uint64_t first, int64_t n, float mean, float std,
                          float *out)
{
    int64_t j = 0;
    while (j < n && (first + (uint64_t)j) % 4 != 0) {
        out[j] = mean + std * omni_rng_normal(r, first + (uint64_t)j);
        j++;
    }
    for (; j + 4 <= n; j += 4) {
        uint32_t w[4];
        block(r, (first + (uint64_t)j) / 4, w);
        float z[4];
        box_muller(w[0], w[1], &z[0], &z[1]);
        box_muller(w[2], w[3], &z[2], &z[3]);
        for (int q = 0; q < 4; q++)
            out[j + q] = mean + std * z[q];
    }
    for (; j < n; j++)
        out[j] = mean + std * omni_rng_normal(r, first + (uint64_t)j);
}
