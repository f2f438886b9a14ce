/* base: status codes, checked allocation, the Philox generator and its keyed streams. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "base.h"

Test(base, status_exit_codes_follow_the_design)
{
    cr_assert_eq(omni_exit_code(OMNI_OK), 0);
    cr_assert_eq(omni_exit_code(OMNI_ERR_USAGE), 2);
    cr_assert_eq(omni_exit_code(OMNI_ERR_CONFIG), 2);
    cr_assert_eq(omni_exit_code(OMNI_ERR_DATA), 2);
    cr_assert_eq(omni_exit_code(OMNI_ERR_CKPT), 2);
    cr_assert_eq(omni_exit_code(OMNI_ERR_IO), 1);
    cr_assert_eq(omni_exit_code(OMNI_ERR_NUMERIC), 1);
    cr_assert_eq(omni_exit_code(OMNI_ERR_MPI), 1);
    for (int s = 0; s < OMNI_STATUS_COUNT; s++)
        cr_assert_neq(strcmp(omni_status_name((omni_status)s), "unknown status"), 0);
}

Test(base, fail_records_message_and_context_prefixes_it)
{
    omni_status st = omni_fail(OMNI_ERR_DATA, "row %d: bad", 7);
    cr_assert_eq(st, OMNI_ERR_DATA);
    cr_assert_str_eq(omni_error_message(), "row 7: bad");
    omni_fail_context(st, "%s: ", "x.csv");
    cr_assert_str_eq(omni_error_message(), "x.csv: row 7: bad");
    omni_error_clear();
    cr_assert_str_eq(omni_error_message(), "");
}

Test(base, alloc_is_aligned_zeroed_and_rejects_overflow)
{
    float *p = omni_alloc(1001, sizeof(float), "test");
    cr_assert_not_null(p);
    cr_assert_eq((uintptr_t)p % OMNI_ALIGN, 0);
    for (int i = 0; i < 1001; i++)
        cr_assert_eq(p[i], 0.0f);
    omni_free(p);
    cr_assert_null(omni_alloc(INT64_MAX / 2, 16, "huge"));
    cr_assert(strstr(omni_error_message(), "huge") != NULL);
    cr_assert_null(omni_alloc(-1, 4, "negative"));
    size_t bytes;
    cr_assert(!omni_mul_size(INT64_MAX, 4, &bytes));
    cr_assert(omni_mul_size(3, 4, &bytes) && bytes == 12);
}

/* Known answers of Philox4x32-10 from the Random123 distribution (kat_vectors). */
Test(base, philox_known_answers)
{
    static const uint32_t cases[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
         0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
         0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int c = 0; c < 3; c++) {
        uint32_t out[4];
        omni_philox4x32(cases[c], cases[c] + 4, out);
        for (int i = 0; i < 4; i++)
            cr_assert_eq(out[i], cases[c][6 + i], "case %d word %d: %08x != %08x", c, i, out[i],
                         cases[c][6 + i]);
    }
}

Test(base, streams_differ_by_seed_name_and_index)
{
    omni_rng a, b, c, d;
    omni_rng_init(&a, 1, "layers/00/attn/wqkv", 0);
    omni_rng_init(&b, 2, "layers/00/attn/wqkv", 0);
    omni_rng_init(&c, 1, "layers/00/attn/wo", 0);
    omni_rng_init(&d, 1, "layers/00/attn/wqkv", 1);
    uint32_t x = omni_rng_u32(&a, 5);
    cr_assert_neq(x, omni_rng_u32(&b, 5));
    cr_assert_neq(x, omni_rng_u32(&c, 5));
    cr_assert_neq(x, omni_rng_u32(&d, 5));
    omni_rng a2;
    omni_rng_init(&a2, 1, "layers/00/attn/wqkv", 0);
    cr_assert_eq(x, omni_rng_u32(&a2, 5));
}

/* A tensor split into any number of slices, each drawn by its own "rank" from the
 * offset it owns, gives the same values as one draw of the whole. */
Test(base, fill_normal_is_independent_of_how_the_tensor_is_split)
{
    enum { N = 1003 };
    static float whole[N], parts[N];
    omni_rng r;
    omni_rng_init(&r, 42, "experts/w1", 3);
    omni_rng_fill_normal(&r, 0, N, 0.0f, 0.02f, whole);
    for (int ranks = 1; ranks <= 7; ranks++) {
        memset(parts, 0, sizeof parts);
        for (int k = 0; k < ranks; k++) {
            int64_t lo = (int64_t)N * k / ranks, hi = (int64_t)N * (k + 1) / ranks;
            omni_rng_fill_normal(&r, (uint64_t)lo, hi - lo, 0.0f, 0.02f, parts + lo);
        }
        cr_assert_eq(memcmp(whole, parts, sizeof whole), 0, "split over %d ranks differs", ranks);
    }
    for (int i = 0; i < N; i++)
        cr_assert_eq(whole[i], 0.02f * omni_rng_normal(&r, (uint64_t)i));
}

Test(base, normal_and_uniform_have_the_right_moments)
{
    enum { N = 200000 };
    omni_rng r;
    omni_rng_init(&r, 7, "moments", 0);
    double s = 0, s2 = 0, u = 0, umin = 1, umax = 0;
    for (int i = 0; i < N; i++) {
        double z = omni_rng_normal(&r, (uint64_t)i);
        s += z;
        s2 += z * z;
        double v = omni_rng_uniform(&r, (uint64_t)i);
        u += v;
        umin = v < umin ? v : umin;
        umax = v > umax ? v : umax;
        cr_assert(isfinite(z));
    }
    /* Standard errors: mean 1/sqrt(N) = 0.0022, variance sqrt(2/N) = 0.0032. */
    cr_assert(fabs(s / N) < 0.01, "normal mean %g", s / N);
    cr_assert(fabs(s2 / N - 1.0) < 0.015, "normal variance %g", s2 / N);
    cr_assert(fabs(u / N - 0.5) < 0.005, "uniform mean %g", u / N);
    cr_assert(umin >= 0.0 && umax < 1.0);
}

Test(base, read_file_names_a_missing_file)
{
    char *bytes;
    size_t len;
    omni_status st = omni_read_file("/nonexistent/omni.yaml", &bytes, &len);
    cr_assert_eq(st, OMNI_ERR_IO);
    cr_assert(strstr(omni_error_message(), "/nonexistent/omni.yaml") != NULL);
}
