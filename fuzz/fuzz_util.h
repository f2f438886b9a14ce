/* fuzz: what the targets share: the input written to a temporary file, for readers
 * that take a path (the HDF5 ones, images, sounds, specs). */
#ifndef OMNI_FUZZ_UTIL_H
#define OMNI_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Write data to this process's temporary file ending in `suffix` and return its path
 * (a static buffer); aborts when the file cannot be written (a harness fault). */
const char *fuzz_file(const uint8_t *data, size_t size, const char *suffix);

/* After an input: abort (a finding) if the reader left an HDF5 object open, and let HDF5
 * release its free lists (so a leak check sees only real leaks). */
void fuzz_h5_done(void);

#endif /* OMNI_FUZZ_UTIL_H */
