/* h5: the CRC32C checksum and the slab rule of stored arrays. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c_path.h"
#include "h5.h"

/* The textbook bitwise CRC32C, to compare the fast paths against. */
static uint32_t crc_reference(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

Test(h5, crc32c_check_value)
{
    cr_assert_eq(omni_crc32c(0, "123456789", 9), 0xE3069283u);
    cr_assert_eq(omni_crc32c(0, "", 0), 0u);
}

/* Lengths around the three-stream rounds (3 x 4096 bytes) and odd alignments. */
Test(h5, crc32c_matches_reference_at_every_length_and_offset)
{
    size_t n = 3 * 4096 * 3 + 100;
    unsigned char *buf = malloc(n + 8);
    cr_assert(buf);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < n + 8; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[i] = (unsigned char)x;
    }
    size_t lens[] = {1, 7, 8, 9, 4095, 12287, 12288, 12289, 24576 + 5, n};
    for (size_t off = 0; off < 8; off += 3)
        for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++)
            cr_assert_eq(omni_crc32c(0, buf + off, lens[k]), crc_reference(buf + off, lens[k]),
                         "length %zu at offset %zu", lens[k], off);
    free(buf);
}

Test(h5, crc32c_continues_across_pieces)
{
    unsigned char buf[50000];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)(i * 7 + 3);
    uint32_t whole = omni_crc32c(0, buf, sizeof buf);
    uint32_t c = omni_crc32c(0, buf, 12345);
    c = omni_crc32c(c, buf + 12345, sizeof buf - 12345);
    cr_assert_eq(c, whole);
}

/* n random bytes (the project's generator, keyed by `name`) into a new buffer aligned to
 * 64 bytes. */
static unsigned char *random_bytes(const char *name, size_t n)
{
    unsigned char *buf = aligned_alloc(64, (n + 63) / 64 * 64);
    cr_assert(buf);
    omni_rng r;
    omni_rng_init(&r, 12, name, 0);
    for (size_t i = 0; i < n; i++)
        buf[i] = (unsigned char)omni_rng_u32(&r, i);
    return buf;
}

/* Every path, every alignment 0..63 (the buffer is aligned to 64), every length up to 1100
 * (the vpclmul path starts at 256 bytes after 0..63 to align, and folds 128 then 64 bytes
 * at a time), every length within 64 bytes of one and two of its 16000-byte blocks (which
 * mix folding and crc32 streams), and lengths around the sse4.2 path's 3 x 4096 rounds;
 * the reference grows one byte at a time along each offset. The bitwise path (slow) is
 * compared up to 1100 bytes only. */
static bool threshold_length(size_t n)
{
    size_t sparse[] = {2047, 2048, 2049, 4095, 4096, 4097, 12287, 12288, 12289, 3 * 4096 * 3 + 100,
                       65553};
    if (n <= 1100 || (n >= 16000 - 64 && n <= 16000 + 128) || (n >= 32000 - 64 && n <= 32000 + 128))
        return true;
    for (size_t i = 0; i < sizeof sparse / sizeof sparse[0]; i++)
        if (n == sparse[i])
            return true;
    return false;
}

Test(h5, crc32c_every_path_matches_reference_across_fold_thresholds)
{
    size_t max = 65553;
    unsigned char *buf = random_bytes("crc32c/thresholds", max + 64);
    int checked = 0;
    for (size_t off = 0; off < 64; off++) {
        uint32_t c = 0xFFFFFFFFu;
        for (size_t n = 0; n <= max; n++) {
            for (int p = 0; p < OMNI_CRC32C_PATH_COUNT && threshold_length(n); p++) {
                if (!omni_crc32c_path_available((omni_crc32c_path)p) ||
                    (p == OMNI_CRC32C_BITWISE && n > 1100))
                    continue;
                cr_assert_eq(omni_crc32c_by((omni_crc32c_path)p, 0, buf + off, n), ~c,
                             "%s path, length %zu at offset %zu",
                             omni_crc32c_path_name((omni_crc32c_path)p), n, off);
                checked++;
            }
            if (n < max) {
                c ^= buf[off + n];
                for (int k = 0; k < 8; k++)
                    c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
            }
        }
    }
    cr_assert_geq(checked, 64 * (1101 + 2 * 193 + 11));
    free(buf);
}

/* crc(A B) = omni_crc32c(crc(A), B) at every split point, each path continuing each
 * (the vpclmul path takes the CRC so far into its first register). */
Test(h5, crc32c_continues_at_every_split_on_every_path)
{
    size_t lens[] = {300, 1000, 4500, 33000}; /* 33000: two of vpclmul's blocks and a rest */
    unsigned char *buf = random_bytes("crc32c/splits", 33000 + 13);
    for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++)
        for (size_t off = 0; off <= 13; off += 13) {
            const unsigned char *p = buf + off;
            size_t n = lens[l];
            uint32_t whole = crc_reference(p, n);
            for (int a = 0; a < OMNI_CRC32C_PATH_COUNT; a++)
                for (int b = 0; b < OMNI_CRC32C_PATH_COUNT; b++) {
                    omni_crc32c_path pa = (omni_crc32c_path)a, pb = (omni_crc32c_path)b;
                    if (!omni_crc32c_path_available(pa) || !omni_crc32c_path_available(pb))
                        continue;
                    /* Mixed paths and the bitwise path on the shorter buffers only. */
                    if (n > 1000 && (a != b || a == OMNI_CRC32C_BITWISE))
                        continue;
                    for (size_t k = 0; k <= n; k++) {
                        uint32_t c = omni_crc32c_by(pa, 0, p, k);
                        cr_assert_eq(omni_crc32c_by(pb, c, p + k, n - k), whole,
                                     "%s then %s, %zu bytes split at %zu (offset %zu)",
                                     omni_crc32c_path_name(pa), omni_crc32c_path_name(pb), n, k,
                                     off);
                    }
                }
        }
    free(buf);
}

/* Random lengths (up to 256 KiB), offsets and starting CRCs: all paths give one value. */
Test(h5, crc32c_paths_agree_on_random_pieces)
{
    size_t max = 256 << 10;
    unsigned char *buf = random_bytes("crc32c/random", max + 64);
    omni_rng r;
    omni_rng_init(&r, 12, "crc32c/random-pieces", 0);
    for (uint64_t t = 0; t < 100; t++) {
        size_t n = omni_rng_u32(&r, 3 * t) % (max + 1), off = omni_rng_u32(&r, 3 * t + 1) % 64;
        uint32_t start = omni_rng_u32(&r, 3 * t + 2);
        uint32_t want = omni_crc32c_by(OMNI_CRC32C_BITWISE, start, buf + off, n);
        for (int p = 1; p < OMNI_CRC32C_PATH_COUNT; p++)
            if (omni_crc32c_path_available((omni_crc32c_path)p))
                cr_assert_eq(omni_crc32c_by((omni_crc32c_path)p, start, buf + off, n), want,
                             "%s path, %zu bytes at offset %zu from %08x",
                             omni_crc32c_path_name((omni_crc32c_path)p), n, off, start);
        cr_assert_eq(omni_crc32c(start, buf + off, n), want);
    }
    free(buf);
}

/* omni_crc32c takes the last path of the enum that the CPU can run. */
Test(h5, crc32c_chooses_the_fastest_path_the_cpu_runs)
{
    omni_crc32c_path want = OMNI_CRC32C_BITWISE;
    cr_assert(omni_crc32c_path_available(OMNI_CRC32C_BITWISE));
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    bool sse42 = __builtin_cpu_supports("sse4.2");
    cr_assert_eq(omni_crc32c_path_available(OMNI_CRC32C_SSE42), sse42);
    if (sse42)
        want = OMNI_CRC32C_SSE42;
    bool vpclmul = sse42 && __builtin_cpu_supports("avx512f") &&
                   __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("vpclmulqdq");
    cr_assert_eq(omni_crc32c_path_available(OMNI_CRC32C_VPCLMUL), vpclmul);
    if (vpclmul)
        want = OMNI_CRC32C_VPCLMUL;
#endif
    cr_assert_eq(omni_crc32c_path_chosen(), want, "chose %s, not %s",
                 omni_crc32c_path_name(omni_crc32c_path_chosen()), omni_crc32c_path_name(want));
    cr_assert_str_eq(omni_crc32c_path_name(OMNI_CRC32C_VPCLMUL), "vpclmul");
}

/* One slab per row for tensors of 2+ dimensions up to 4096 rows (one expert each);
 * else the whole array is one slab. */
Test(h5, slab_rule)
{
    int64_t experts[3] = {8, 16, 24}, big[2] = {5000, 3}, vec[1] = {64}, empty[1] = {0};
    cr_assert_eq(omni_h5_slab_rows(3, experts), 1);
    cr_assert_eq(omni_h5_slabs(3, experts), 8);
    cr_assert_eq(omni_h5_slab_rows(2, big), 5000);
    cr_assert_eq(omni_h5_slabs(2, big), 1);
    cr_assert_eq(omni_h5_slabs(1, vec), 1);
    cr_assert_eq(omni_h5_slabs(1, empty), 1);
}

/* A writer whose rows cut a slab is a bug of the caller, said as one. */
Test(h5, sum_rows_refuses_rows_that_cut_a_slab)
{
    int64_t dims[2] = {5000, 2};
    float data[4] = {0};
    omni_h5_rows r = {.name = "x",
                      .mem_type = H5T_NATIVE_FLOAT,
                      .elem_size = 4,
                      .rank = 2,
                      .dims = dims,
                      .row_lo = 0,
                      .row_hi = 2,
                      .data = data};
    uint32_t crc[1] = {0};
    cr_assert_eq(omni_h5_sum_rows(&r, crc), OMNI_ERR_INTERNAL);
}
