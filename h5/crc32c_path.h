/*
 * h5 (private): the ways omni_crc32c can compute a CRC32C, for the tests and the benchmark
 * that compare them. omni_crc32c itself picks the fastest one the CPU can run, once.
 */
#ifndef OMNI_H5_CRC32C_PATH_H
#define OMNI_H5_CRC32C_PATH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    OMNI_CRC32C_BITWISE, /* one bit at a time: any CPU */
    OMNI_CRC32C_SSE42,   /* the crc32 instruction, three streams (x86-64 with SSE4.2) */
    OMNI_CRC32C_VPCLMUL, /* carry-less multiplication folding on 512-bit registers
                          * (AVX-512 F and VL, VPCLMULQDQ), 256 bytes and up */
    OMNI_CRC32C_PATH_COUNT
} omni_crc32c_path;

/* The path's short name ("bitwise", "sse4.2", "vpclmul"). */
const char *omni_crc32c_path_name(omni_crc32c_path path);
/* Whether this CPU (and this build) can run the path. */
bool omni_crc32c_path_available(omni_crc32c_path path);
/* The path omni_crc32c uses: the last available one of the enum. */
omni_crc32c_path omni_crc32c_path_chosen(void);
/* omni_crc32c by the given path, which must be available (asserted). */
uint32_t omni_crc32c_by(omni_crc32c_path path, uint32_t crc, const void *p, size_t n);

#endif /* OMNI_H5_CRC32C_PATH_H */
