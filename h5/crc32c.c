/*
 * h5: CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every stored
 * array. On x86-64 with SSE4.2 the crc32 instruction does the work, three independent
 * streams at a time (the instruction's latency is three cycles, its throughput one), the
 * streams joined by multiplying a CRC by x^(8 * bytes) modulo the polynomial; elsewhere
 * a bitwise loop gives the same values more slowly.
 */
#include "h5.h"

#include <string.h>

#define POLY 0x82F63B78u

/* a * b modulo the polynomial, in the reflected bit order. */
static uint32_t mul_mod(uint32_t a, uint32_t b)
{
    uint32_t prod = 0;
    for (int i = 0; i < 32; i++) {
        if (a & 0x80000000u)
            prod ^= b;
        a <<= 1;
        b = (b & 1) ? (b >> 1) ^ POLY : b >> 1;
    }
    return prod;
}

/* x^(8 * n) modulo the polynomial, by squaring. */
static uint32_t x_pow_8n(uint64_t n)
{
    uint32_t result = 0x80000000u, sq = 0x00800000u; /* x^0, and x^8 */
    while (n) {
        if (n & 1)
            result = mul_mod(result, sq);
        sq = mul_mod(sq, sq);
        n >>= 1;
    }
    return result;
}

static uint32_t crc_bits(uint32_t c, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
    }
    return c;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>

#define BLOCK 4096 /* bytes of each of the three streams per round */

__attribute__((target("sse4.2"))) static uint32_t crc_sse42(uint32_t c, const unsigned char *p,
                                                            size_t n)
{
    static uint32_t shift_block, shift_2block; /* x^(8 * BLOCK), x^(8 * 2 * BLOCK) */
    if (!shift_block) {
        shift_2block = x_pow_8n(2 * BLOCK);
        shift_block = x_pow_8n(BLOCK);
    }
    while (n && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8(c, *p++);
        n--;
    }
    while (n >= 3 * BLOCK) {
        uint64_t c0 = c, c1 = 0, c2 = 0, w0, w1, w2;
        for (size_t i = 0; i < BLOCK; i += 8) {
            memcpy(&w0, p + i, 8);
            memcpy(&w1, p + BLOCK + i, 8);
            memcpy(&w2, p + 2 * BLOCK + i, 8);
            c0 = _mm_crc32_u64(c0, w0);
            c1 = _mm_crc32_u64(c1, w1);
            c2 = _mm_crc32_u64(c2, w2);
        }
        /* crc(A B C) = crc(A) x^(8|BC|) + crc(B) x^(8|C|) + crc(C), with crc(B), crc(C)
         * begun from 0 (the pre- and post-inversions cancel in the middle). */
        c = mul_mod((uint32_t)c0, shift_2block) ^ mul_mod((uint32_t)c1, shift_block) ^ (uint32_t)c2;
        p += 3 * BLOCK;
        n -= 3 * BLOCK;
    }
    uint64_t c64 = c, w;
    for (; n >= 8; n -= 8, p += 8) {
        memcpy(&w, p, 8);
        c64 = _mm_crc32_u64(c64, w);
    }
    c = (uint32_t)c64;
    for (; n; n--)
        c = _mm_crc32_u8(c, *p++);
    return c;
}

static int have_sse42 = -1;
#endif

uint32_t omni_crc32c(uint32_t crc, const void *data, size_t n)
{
    const unsigned char *p = data;
    uint32_t c = ~crc;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (have_sse42 < 0)
        have_sse42 = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    if (have_sse42)
        return ~crc_sse42(c, p, n);
#endif
    return ~crc_bits(c, p, n);
}
