/* Fuzz target: JPEG/PNG decoding from memory (sa3d_image_load_memory). Any input must give either a valid
 * image or an error with a zeroed image; sanitizers catch the rest. ctest replays corpus/fuzz_image. */
#include <stddef.h>
#include <stdint.h>
#include "semalign3d/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sa3d_image img;
    sa3d_error err;
    if (sa3d_image_load_memory(&img, data, size, "fuzz", &err) == SA3D_OK) {
        /* touch the corners so a wrong size shows up under ASan */
        volatile uint8_t s = (uint8_t)(img.rgb[0] + img.rgb[(size_t)img.w * (size_t)img.h * 3 - 1]);
        (void)s;
    } else if (img.rgb || img.w || img.h) {
        __builtin_trap(); /* the failure contract: img zeroed */
    }
    sa3d_image_free(&img);
    return 0;
}
