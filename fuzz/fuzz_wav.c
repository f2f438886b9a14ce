/* fuzz: the WAV decoder, then the resampling and log-mel steps of data build. */
#include "fuzz_util.h"
#include "datasets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    float *x = NULL, *y = NULL;
    int64_t n = 0, m = 0;
    int32_t rate = 0;
    if (omni_wav_load(fuzz_file(data, size, ".wav"), &x, &n, &rate) == OMNI_OK) {
        /* Resampling a long sound is slow under the sanitizers: the first second. */
        if (n > rate)
            n = rate;
        if (omni_resample(x, n, rate, 8000, &y, &m) == OMNI_OK)
            omni_free(y);
        omni_free(x);
    }
    omni_error_clear();
    return 0;
}
