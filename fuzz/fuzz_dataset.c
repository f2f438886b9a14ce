/* fuzz: the dataset file reader (HDF5): the input is the file. */
#include "fuzz_util.h"
#include "internal.h"

#include <hdf5.h>
#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    omni_log_setup(0, OMNI_LOG_ERROR); /* no warnings per input */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ds_file *f = calloc(1, sizeof *f);
    if (!f)
        return 0;
    if (ds_read(fuzz_file(data, size, ".h5"), f) == OMNI_OK)
        ds_file_free(f);
    free(f);
    omni_error_clear();
    fuzz_h5_done();
    return 0;
}
