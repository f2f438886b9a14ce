/* h5: the CRC32C checksum and the slab rule of stored arrays. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

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
