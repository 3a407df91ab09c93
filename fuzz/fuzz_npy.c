/* Fuzz target: the .npy reader on arbitrary bytes. */
#include <stdint.h>
#include <stdlib.h>
#include "semalign3d/providers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    float *out = NULL;
    int nd;
    long long dims[4];
    if (sa3d_npy_parse(data, size, "fuzz", &out, &nd, dims, NULL) == SA3D_OK) free(out);
    return 0;
}
