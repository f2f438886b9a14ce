/* fuzz: the checkpoint reader (parallel HDF5 on one process): open, metadata, then the
 * tensors that the file lists under /params read as f32 by their stored shapes. */
#include "fuzz_util.h"
#include "checkpoint.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static MPI_Comm comm;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    if (omni_mpi_init(argc, argv, &comm))
        abort();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    omni_log_setup(0, OMNI_LOG_ERROR); /* no warnings per input */
    return 0;
}

/* The tensors the file lists under /params (at most 64, each at most 2^16 elements, a
 * limit of this harness), as the trainer would describe them: f32 of the stored shape. */
typedef struct {
    int n;
    char names[64][256];
    int rank[64];
    int64_t dims[64][OMNI_CKPT_MAX_RANK];
} listing;

static herr_t list_tensor(hid_t g, const char *name, const H5O_info_t *info, void *data)
{
    listing *l = data;
    if (info->type != H5O_TYPE_DATASET || l->n == 64 || strlen(name) >= 200)
        return 0;
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    hid_t sp = d < 0 ? -1 : H5Dget_space(d);
    int rank = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
    hsize_t dims[OMNI_CKPT_MAX_RANK];
    int64_t n = 1;
    if (rank >= 1 && rank <= OMNI_CKPT_MAX_RANK &&
        H5Sget_simple_extent_dims(sp, dims, NULL) == rank) {
        for (int k = 0; k < rank; k++) {
            l->dims[l->n][k] = (int64_t)dims[k];
            n = dims[k] > 0 && dims[k] <= 65536 ? n * (int64_t)dims[k] : INT64_MAX / 2;
            if (n > 65536)
                n = INT64_MAX / 2;
        }
        if (n <= 65536) {
            snprintf(l->names[l->n], sizeof l->names[0], "params/%s", name);
            l->rank[l->n++] = rank;
        }
    }
    if (sp >= 0)
        H5Sclose(sp);
    if (d >= 0)
        H5Dclose(d);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    omni_ckpt *c = NULL;
    const char *path = fuzz_file(data, size, ".h5");
    if (omni_ckpt_open(comm, path, &c) == OMNI_OK) {
        int64_t total;
        double active;
        omni_ckpt_param_counts(c, &total, &active);
        static listing l;
        l.n = 0;
        hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        hid_t g = f < 0 ? -1 : H5Gopen2(f, "params", H5P_DEFAULT);
        if (g >= 0)
            H5Ovisit2(g, H5_INDEX_NAME, H5_ITER_INC, list_tensor, &l, H5O_INFO_BASIC);
        if (g >= 0)
            H5Gclose(g);
        if (f >= 0)
            H5Fclose(f);
        for (int i = 0; i < l.n; i++) {
            omni_ckpt_tensor t = {.name = l.names[i], .rank = l.rank[i], .row_lo = 0};
            int64_t n = 1;
            for (int d = 0; d < t.rank; d++) {
                t.dims[d] = l.dims[i][d];
                n *= t.dims[d];
            }
            t.row_hi = t.dims[0];
            t.data = omni_alloc(n, sizeof(float), "fuzz tensor");
            if (t.data)
                omni_ckpt_read(c, &t, 1);
            omni_free(t.data);
        }
        omni_ckpt_close(c);
    }
    omni_error_clear();
    fuzz_h5_done();
    return 0;
}
