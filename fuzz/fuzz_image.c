/* fuzz: the PNG and PGM/PPM decoders, then the resize and patch cut that data build
 * applies to every image. */
#include "fuzz_util.h"
#include "datasets.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    omni_image img = {0}, small = {0};
    if (omni_image_load(&img, fuzz_file(data, size, ".img")) == OMNI_OK) {
        if (omni_image_resize(&img, 16, 1, &small) == OMNI_OK) {
            uint8_t patches[16 * 16];
            omni_image_patches(&small, 4, patches);
            omni_image_free(&small);
        }
        omni_image_free(&img);
    }
    omni_error_clear();
    return 0;
}
