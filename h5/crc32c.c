/*
 * h5: CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every stored
 * array, by the fastest of three paths this CPU can run (crc32c_path.h), chosen once:
 *
 * - vpclmul (AVX-512 with VPCLMULQDQ, 256 bytes and up): carry-less multiplication
 *   folding (the method of Gopal et al., "Fast CRC computation for generic polynomials
 *   using PCLMULQDQ", Intel 2009, on 512-bit registers). The message is read 128 bytes at
 *   a time into two 512-bit accumulators; each 128-bit lane is moved ("folded") forward by
 *   multiplying its two 64-bit halves by x^k mod P and added to the data that far ahead.
 *   At the end the accumulators are folded into one 128-bit value whose CRC the crc32
 *   instruction finishes, and the tail (< 64 bytes) goes by the sse4.2 path. Folding
 *   alone is limited by the multiplier's throughput, ~2-2.3x the crc32 path's speed on
 *   this AMD Zen 5 (docs/bench.md, bench_crc); so inputs of 16000 bytes and more go in
 *   blocks that also keep three crc32 streams busy on the block's last 36% (they use
 *   other execution units), the pieces joined as below: ~3x in all.
 * - sse4.2: the crc32 instruction, three independent streams at a time (its latency is
 *   three cycles, its throughput one), the streams joined by multiplying a CRC by
 *   x^(8 * bytes) modulo the polynomial.
 * - bitwise: one bit at a time, anywhere else.
 *
 * Every constant is computed from the polynomial at first use (x_pow below).
 */
#include "h5.h"
#include "crc32c_path.h"

#include <assert.h>
#include <pthread.h>
#include <string.h>

#define POLY 0x82F63B78u

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_X86 1 /* the sse4.2 and vpclmul paths are built (and run if the CPU can) */
#endif

#ifdef HAVE_X86
/* Reflected bit order: bit i of a 32-bit value is the coefficient of x^(31 - i), so
 * 0x80000000 is 1 and 0x40000000 is x. */

/* a * b modulo the polynomial. */
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

/* x^k modulo the polynomial, by squaring. */
static uint32_t x_pow(uint64_t k)
{
    uint32_t result = 0x80000000u, sq = 0x40000000u; /* x^0, and x^1 */
    while (k) {
        if (k & 1)
            result = mul_mod(result, sq);
        sq = mul_mod(sq, sq);
        k >>= 1;
    }
    return result;
}

#endif /* HAVE_X86 */

static uint32_t crc_bits(uint32_t c, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
    }
    return c;
}

/* The pair of 64-bit multipliers that folds a 128-bit lane forward (see fold_by). */
typedef struct {
    uint64_t lo, hi; /* multipliers of the lane's low and high halves */
} fold_pair;

/* What tab_init finds out and computes, once. */
static struct {
    bool path[OMNI_CRC32C_PATH_COUNT];
    omni_crc32c_path chosen;            /* the last available path */
    uint32_t shift_block, shift_2block; /* sse4.2: x^(8 * BLOCK), x^(8 * 2 * BLOCK) */
    fold_pair by_stride, by_64;         /* vpclmul: fold by FOLD_STRIDE bytes, by 64 bytes */
    uint64_t mix_shift[3];              /* x^(8 k MIX_STREAM - 33), k = 1, 2, 3 */
    fold_pair by_48, by_32, by_16;      /* the lanes of a 512-bit register into its last */
} tab;

#ifdef HAVE_X86
#include <immintrin.h>

#define BLOCK 4096 /* bytes of each of the three streams per round (sse4.2) */
/* vpclmul: two 512-bit accumulators, folded FOLD_STRIDE bytes at a time; inputs of
 * MIX_BLOCK bytes and more go by blocks that also feed three crc32 streams. */
#define FOLD_STRIDE 128
#define MIX_QWORDS  3  /* qwords of each crc32 stream per round of folding */
#define MIX_ROUNDS  80 /* rounds per block */
#define MIX_STREAM  (8 * MIX_QWORDS * MIX_ROUNDS)               /* 1920 bytes */
#define MIX_BLOCK   (FOLD_STRIDE * MIX_ROUNDS + 3 * MIX_STREAM) /* 16000 bytes */
_Static_assert(MIX_STREAM % 64 == 0 && MIX_BLOCK % 64 == 0, "blocks keep loads aligned");

/*
 * Folding a 128-bit lane X forward by d bytes. X, loaded little-endian, holds message bits
 * in order: its low half L (X's first 8 bytes) and high half H (the next 8), each with
 * bit i the coefficient of x^(63 - i), make X = L x^64 + H, and the lane d bytes later
 * must receive X x^(8d) = L x^(8d + 64) + H x^(8d) (mod P). A carry-less product of a
 * 64-bit half (bit i: x^(63 - i)) and a constant whose bit j stands for x^(64 - j) puts
 * bit i + j at x^(127 - (i + j)), the order of the lane. A constant c(x) of degree < 32 in
 * reflected form, placed in the low 32 bits, stands there for x^33 c(x); so the constant
 * for L is x^(8d + 31) mod P and for H x^(8d - 33) mod P, and the products (< 95 bits)
 * fit in the lane.
 */
static fold_pair fold_by(uint64_t bytes)
{
    return (fold_pair){x_pow(8 * bytes + 31), x_pow(8 * bytes - 33)};
}

__attribute__((target("sse4.2"))) static uint32_t crc_sse42(uint32_t c, const unsigned char *p,
                                                            size_t n)
{
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
        c = mul_mod((uint32_t)c0, tab.shift_2block) ^ mul_mod((uint32_t)c1, tab.shift_block) ^
            (uint32_t)c2;
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

#define VPCLMUL_TARGET __attribute__((target("sse4.2,pclmul,avx2,avx512f,avx512vl,vpclmulqdq")))

/* The pair k in each 128-bit lane. */
VPCLMUL_TARGET static inline __m512i fold_const(fold_pair k)
{
    return _mm512_broadcast_i32x4(_mm_set_epi64x((long long)k.hi, (long long)k.lo));
}

/* Each lane of x folded forward by k's distance, plus next. */
VPCLMUL_TARGET static inline __m512i fold(__m512i x, __m512i k, __m512i next)
{
    return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00),
                                     _mm512_clmulepi64_epi128(x, k, 0x11), next, 0x96);
}

/* The CRC (from 0) of the 64 bytes x stands for: lanes 0, 1, 2 folded by 48, 32, 16 bytes
 * onto lane 3 (whose multiplier, 0, drops it from the products), then two crc32s. */
VPCLMUL_TARGET static uint32_t reduce(__m512i x)
{
    __m512i k = _mm512_set_epi64(0, 0, (long long)tab.by_16.hi, (long long)tab.by_16.lo,
                                 (long long)tab.by_32.hi, (long long)tab.by_32.lo,
                                 (long long)tab.by_48.hi, (long long)tab.by_48.lo);
    __m512i t = fold(x, k, _mm512_maskz_mov_epi64(0xC0, x));
    __m256i t2 = _mm256_xor_si256(_mm512_castsi512_si256(t), _mm512_extracti64x4_epi64(t, 1));
    __m128i t1 = _mm_xor_si128(_mm256_castsi256_si128(t2), _mm256_extracti128_si256(t2, 1));
    uint64_t c = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(t1));
    return (uint32_t)_mm_crc32_u64(c, (uint64_t)_mm_extract_epi64(t1, 1));
}

/* v x^(8d) mod P, given k = x^(8d - 33) mod P. The carry-less product of v and k (bits i
 * and j standing for x^(31 - i) and x^(31 - j)) has bit i + j for x^(62 - i - j): read as
 * 64 message bits (bit m: x^(63 - m)) it is x v k, which the crc32 instruction multiplies
 * by x^32 and reduces: v k x^33 = v x^(8d). */
VPCLMUL_TARGET static inline uint32_t shift(uint32_t v, uint64_t k)
{
    __m128i prod =
        _mm_clmulepi64_si128(_mm_cvtsi32_si128((int)v), _mm_cvtsi64_si128((long long)k), 0x00);
    return (uint32_t)_mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(prod));
}

/* One block of MIX_BLOCK bytes (p aligned to 64) continuing c: its first FOLD_STRIDE *
 * MIX_ROUNDS bytes by folding and the three streams of MIX_STREAM bytes after them by the
 * crc32 instruction, in the same loop, since the two use different execution units. */
VPCLMUL_TARGET static uint32_t crc_block(uint32_t c, const unsigned char *p)
{
    const unsigned char *s = p + FOLD_STRIDE * MIX_ROUNDS;
    uint64_t c0 = 0, c1 = 0, c2 = 0, w0, w1, w2;
    /* The CRC so far is added to the block's first 32 bits, as the crc32 instruction does. */
    __m512i x0 = _mm512_xor_si512(_mm512_load_si512(p), _mm512_maskz_set1_epi32(1, (int)c));
    __m512i x1 = _mm512_load_si512(p + 64);
    __m512i k = fold_const(tab.by_stride);
    for (int r = 0; r < MIX_ROUNDS; r++) {
        if (r > 0) {
            p += FOLD_STRIDE;
            x0 = fold(x0, k, _mm512_load_si512(p));
            x1 = fold(x1, k, _mm512_load_si512(p + 64));
        }
        for (int q = 0; q < MIX_QWORDS; q++, s += 8) {
            memcpy(&w0, s, 8);
            memcpy(&w1, s + MIX_STREAM, 8);
            memcpy(&w2, s + 2 * MIX_STREAM, 8);
            c0 = _mm_crc32_u64(c0, w0);
            c1 = _mm_crc32_u64(c1, w1);
            c2 = _mm_crc32_u64(c2, w2);
        }
    }
    uint32_t cf = reduce(fold(x0, fold_const(tab.by_64), x1));
    /* As in crc_sse42: each piece's CRC moved past the pieces after it. */
    return shift(cf, tab.mix_shift[2]) ^ shift((uint32_t)c0, tab.mix_shift[1]) ^
           shift((uint32_t)c1, tab.mix_shift[0]) ^ (uint32_t)c2;
}

VPCLMUL_TARGET static uint32_t crc_vpclmul(uint32_t c, const unsigned char *p, size_t n)
{
    /* The first aligned address, so that no load crosses a cache line. */
    size_t head = (64 - ((uintptr_t)p & 63)) & 63;
    if (n < head + 2 * FOLD_STRIDE)
        return crc_sse42(c, p, n);
    c = crc_sse42(c, p, head);
    p += head;
    n -= head;
    for (; n >= MIX_BLOCK; n -= MIX_BLOCK, p += MIX_BLOCK)
        c = crc_block(c, p);
    /* The rest by folding alone, to the last 64 bytes; its tail by the crc32 instruction. */
    if (n >= FOLD_STRIDE) {
        __m512i x0 = _mm512_xor_si512(_mm512_load_si512(p), _mm512_maskz_set1_epi32(1, (int)c));
        __m512i x1 = _mm512_load_si512(p + 64);
        p += FOLD_STRIDE;
        n -= FOLD_STRIDE;
        __m512i k = fold_const(tab.by_stride);
        for (; n >= FOLD_STRIDE; n -= FOLD_STRIDE, p += FOLD_STRIDE) {
            x0 = fold(x0, k, _mm512_load_si512(p));
            x1 = fold(x1, k, _mm512_load_si512(p + 64));
        }
        k = fold_const(tab.by_64);
        x0 = fold(x0, k, x1);
        if (n >= 64) {
            x0 = fold(x0, k, _mm512_load_si512(p));
            p += 64;
            n -= 64;
        }
        c = reduce(x0);
    }
    return crc_sse42(c, p, n);
}
#endif /* HAVE_X86 */

static pthread_once_t tab_once = PTHREAD_ONCE_INIT;

static void tab_init(void)
{
    tab.path[OMNI_CRC32C_BITWISE] = true;
#ifdef HAVE_X86
    tab.shift_2block = x_pow(8 * 2 * BLOCK);
    tab.shift_block = x_pow(8 * BLOCK);
    tab.by_stride = fold_by(FOLD_STRIDE);
    for (int k = 0; k < 3; k++)
        tab.mix_shift[k] = x_pow(8 * (uint64_t)(k + 1) * MIX_STREAM - 33);
    tab.by_64 = fold_by(64);
    tab.by_48 = fold_by(48);
    tab.by_32 = fold_by(32);
    tab.by_16 = fold_by(16);
    __builtin_cpu_init();
    bool sse42 = __builtin_cpu_supports("sse4.2");
    tab.path[OMNI_CRC32C_SSE42] = sse42;
    tab.path[OMNI_CRC32C_VPCLMUL] =
        sse42 && __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("vpclmulqdq");
#endif /* HAVE_X86 */
    for (int p = 0; p < OMNI_CRC32C_PATH_COUNT; p++)
        if (tab.path[p])
            tab.chosen = (omni_crc32c_path)p;
}

static uint32_t crc_by(omni_crc32c_path path, uint32_t crc, const unsigned char *p, size_t n)
{
    switch (path) {
#ifdef HAVE_X86
    case OMNI_CRC32C_VPCLMUL:
        return ~crc_vpclmul(~crc, p, n);
    case OMNI_CRC32C_SSE42:
        return ~crc_sse42(~crc, p, n);
#endif /* HAVE_X86 */
    default:
        return ~crc_bits(~crc, p, n);
    }
}

static const char *const path_names[] = {"bitwise", "sse4.2", "vpclmul"};
_Static_assert(sizeof path_names / sizeof path_names[0] == OMNI_CRC32C_PATH_COUNT,
               "a name for each CRC32C path");

const char *omni_crc32c_path_name(omni_crc32c_path path)
{
    return (unsigned)path < OMNI_CRC32C_PATH_COUNT ? path_names[path] : "?";
}

bool omni_crc32c_path_available(omni_crc32c_path path)
{
    pthread_once(&tab_once, tab_init);
    return (unsigned)path < OMNI_CRC32C_PATH_COUNT && tab.path[path];
}

omni_crc32c_path omni_crc32c_path_chosen(void)
{
    pthread_once(&tab_once, tab_init);
    return tab.chosen;
}

uint32_t omni_crc32c_by(omni_crc32c_path path, uint32_t crc, const void *p, size_t n)
{
    bool ok = omni_crc32c_path_available(path);
    assert(ok && "the CRC32C path runs on this CPU");
    (void)ok;
    return crc_by(path, crc, p, n);
}

uint32_t omni_crc32c(uint32_t crc, const void *p, size_t n)
{
    pthread_once(&tab_once, tab_init);
    return crc_by(tab.chosen, crc, p, n);
}
