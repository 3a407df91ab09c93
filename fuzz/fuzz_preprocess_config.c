/* Fuzz target: the Depth Anything processor_config.json reader (sa3d_dpt_preprocess_params_parse in
 * src/nn/preprocess.c) on arbitrary bytes. An accepted config must give a processor the resizer can run: sizes
 * and the multiple inside [1, SA3D_IMAGE_MAX_SIDE], a finite positive rescale factor, finite means, finite
 * positive standard deviations, a resampling filter the C code implements and, on a small image, finite pixels.
 * A rejected one must name the file. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "nn/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1); /* the reader takes text: a NUL-terminated copy */
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    sa3d_dpt_preprocess_params p;
    sa3d_error err = { 0 };
    if (sa3d_dpt_preprocess_params_parse(&p, text, "fuzz/processor_config.json", &err) == SA3D_OK) {
        if (p.target_h < 1 || p.target_h > SA3D_IMAGE_MAX_SIDE || p.target_w < 1 ||
            p.target_w > SA3D_IMAGE_MAX_SIDE || p.multiple < 1 || p.multiple > SA3D_IMAGE_MAX_SIDE)
            abort();
        if (!(isfinite(p.rescale_factor) && p.rescale_factor > 0.0) || (unsigned)p.keep_aspect_ratio > 1) abort();
        for (int c = 0; c < 3; c++)
            if (!isfinite(p.mean[c]) || !(isfinite(p.std[c]) && p.std[c] > 0.0f)) abort();
        if (p.resample != SA3D_RESAMPLE_BICUBIC && p.resample != SA3D_RESAMPLE_BILINEAR &&
            p.resample != SA3D_RESAMPLE_LANCZOS && p.resample != SA3D_RESAMPLE_BOX &&
            p.resample != SA3D_RESAMPLE_HAMMING)
            abort();
        int w = 0, h = 0; /* the size it gives must be usable or say it is not (0 x 0) */
        sa3d_dpt_preprocess_size(&p, 640, 480, &w, &h);
        if (w < 0 || h < 0 || (w == 0) != (h == 0)) abort();
        static uint8_t rgb[3 * 3 * 3] = { 0, 255, 1, 254, 128, 127, 0, 0, 0, 255, 255, 255, 7, 9, 11, 3, 5, 200 };
        sa3d_image img = { .w = 3, .h = 3, .rgb = rgb };
        sa3d_dpt_preprocess_size(&p, img.w, img.h, &w, &h);
        for (int impl = SA3D_DPT_TORCHVISION; impl <= SA3D_DPT_PIL && w > 0 && (long)w * h <= 4096; impl++) {
            float *px = NULL; /* small outputs only: every pixel the network would get is finite */
            p.impl = (sa3d_dpt_impl)impl;
            sa3d_status st = sa3d_dpt_preprocess(&img, &p, &px, &w, &h, &err);
            if (st == SA3D_ERR_UNSUPPORTED && impl == SA3D_DPT_TORCHVISION &&
                (p.resample == SA3D_RESAMPLE_BOX || p.resample == SA3D_RESAMPLE_HAMMING))
                continue; /* documented: torch's uint8 resize has no box or hamming filter */
            if (st != SA3D_OK) abort();
            for (long i = 0; i < 3L * w * h; i++)
                if (!isfinite(px[i])) abort();
            sa3d_pixels_free(px);
        }
    } else if (!memchr(err.msg, '\0', sizeof err.msg) || !strstr(err.msg, "fuzz/processor_config.json")) {
        abort();
    }
    free(text);
    return 0;
}
