/*
 * CRC32C throughput of each path this CPU can run (h5/crc32c_path.h), on random bytes of
 * 64 KiB and 1 MiB (cache-resident: the same bytes summed again and again) and 256 MiB
 * (from DRAM):
 *   bench_crc [rounds, default 5]
 * The paths take turns within each round (so each sees the same machine load); prints the
 * best round of each in GB/s and its ratio to the sse4.2 path. The bitwise path (~30 MB/s)
 * is timed on 1 MiB per round, in cache only. Exit 1 if the paths disagree.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "base.h"
#include "crc32c_path.h"

#define BIG ((size_t)256 << 20)

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 5;
    if (rounds < 1 || rounds > 1000) {
        fprintf(stderr, "usage: bench_crc [rounds, 1..1000]\n");
        return 2;
    }
    unsigned char *buf = aligned_alloc(64, BIG);
    if (!buf) {
        fprintf(stderr, "bench_crc: no memory for %zu bytes\n", BIG);
        return 1;
    }
    uint64_t x = 0x9E3779B97F4A7C15ull; /* xorshift64: any bytes will do */
    for (size_t i = 0; i < BIG; i += 8) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        for (int b = 0; b < 8; b++)
            buf[i + b] = (unsigned char)(x >> (8 * b));
    }
    printf("chosen path: %s\n", omni_crc32c_path_name(omni_crc32c_path_chosen()));
    printf("%-10s %-8s %10s %12s\n", "bytes", "path", "GB/s", "x sse4.2");
    const size_t sizes[] = {64 << 10, 1 << 20, BIG};
    int bad = 0;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        /* At least 64 MiB per timing, so that one timing lasts milliseconds. */
        int reps = n < ((size_t)64 << 20) ? (int)(((size_t)64 << 20) / n) : 1;
        int bit_reps = n < ((size_t)1 << 20) ? (int)(((size_t)1 << 20) / n) : 1; /* bitwise */
        double best[OMNI_CRC32C_PATH_COUNT] = {0};
        uint32_t sum[OMNI_CRC32C_PATH_COUNT] = {0};
        for (int r = 0; r < rounds; r++)
            for (int k = 0; k < OMNI_CRC32C_PATH_COUNT; k++) {
                /* Alternate the order of the paths from round to round. */
                omni_crc32c_path p = (omni_crc32c_path)(r % 2 ? OMNI_CRC32C_PATH_COUNT - 1 - k : k);
                if (!omni_crc32c_path_available(p) || (p == OMNI_CRC32C_BITWISE && n == BIG))
                    continue;
                sum[p] = omni_crc32c_by(p, 0, buf, n); /* and warm the cache */
                double t0 = omni_now();
                int m = p == OMNI_CRC32C_BITWISE ? bit_reps : reps;
                for (int i = 0; i < m; i++)
                    bad |= omni_crc32c_by(p, 0, buf, n) != sum[p];
                double gbs = (double)n * m / (omni_now() - t0) / 1e9;
                if (gbs > best[p])
                    best[p] = gbs;
            }
        for (int p = 0; p < OMNI_CRC32C_PATH_COUNT; p++) {
            if (best[p] == 0)
                continue;
            if (sum[p] != sum[OMNI_CRC32C_SSE42] && best[OMNI_CRC32C_SSE42] > 0) {
                fprintf(stderr, "bench_crc: %s gives %08" PRIx32 ", sse4.2 %08" PRIx32 "\n",
                        omni_crc32c_path_name((omni_crc32c_path)p), sum[p], sum[OMNI_CRC32C_SSE42]);
                bad = 1;
            }
            double ratio = best[OMNI_CRC32C_SSE42] > 0 ? best[p] / best[OMNI_CRC32C_SSE42] : 0;
            printf("%-10zu %-8s %10.2f %12.2f\n", n, omni_crc32c_path_name((omni_crc32c_path)p),
                   best[p], ratio);
        }
    }
    if (bad)
        fprintf(stderr, "bench_crc: the paths disagree\n");
    free(buf);
    return bad;
}
