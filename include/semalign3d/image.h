/* semalign3d: images - decoding (JPEG via libjpeg-turbo, PNG via libpng), PNG writing, mirroring, and the
 * model input preprocessing of METHOD.md sections 2 and 3 (one place for every pixel convention).
 *
 * Pixels are 8-bit RGB, row-major [h][w][3], x to the right and y down. Decoders reject truncated or corrupt
 * files and images larger than SA3D_IMAGE_MAX_SIDE on a side with SA3D_ERR_FORMAT naming the file.
 *
 *     sa3d_image img;  sa3d_error err;  float *px;  int w, h;
 *     if (sa3d_image_load(&img, "2008_000123.jpg", &err) != SA3D_OK) { puts(err.msg); return 1; }
 *     sa3d_dpt_preprocess_params p = sa3d_dpt_preprocess_params_default();
 *     if (sa3d_dpt_preprocess(&img, &p, &px, &w, &h, &err) == SA3D_OK) { ... px is [3][h][w] ... }
 *     sa3d_pixels_free(px);
 *     sa3d_image_free(&img);
 *
 * Thread safety: every function here works only on its arguments; distinct images may be processed from
 * several threads at once. */
#ifndef SEMALIGN3D_IMAGE_H
#define SEMALIGN3D_IMAGE_H

#include <stddef.h>
#include <stdint.h>
#include "semalign3d/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SA3D_IMAGE_MAX_SIDE 16384
#define SA3D_IMAGE_MAX_FILE_BYTES ((size_t)1 << 30) /* sa3d_image_load refuses larger files */
#define SA3D_JPEG_MAX_SCANS 500 /* libjpeg's simple progression has 10; each scan is a pass over the image */

typedef struct sa3d_image {
    int w, h;
    uint8_t *rgb;      /* [h][w][3], owned; free with sa3d_image_free */
    char warning[200]; /* "" or, for a JPEG decoded despite damaged data, "FILE: ..." naming libjpeg's first
                          complaint and their count, for the caller to show (the pixels may be partly grey) */
} sa3d_image;

/* Decodes a JPEG or PNG file (chosen by its first bytes, not by its name). Grey, palette, 16-bit and alpha
 * inputs become 8-bit RGB as Pillow's Image.open(...).convert("RGB") gives them: alpha and tRNS are dropped
 * (no compositing), grey is replicated, 16-bit samples keep their high byte (as Pillow for RGB, RGBA and LA;
 * for 16-bit grey Pillow clips the value to 255 instead, which is not copied), gamma/ICC/EXIF orientation are
 * ignored. JPEG uses libjpeg's defaults (integer slow DCT, fancy upsampling), as Pillow does; CMYK/YCCK JPEGs
 * are read as Adobe-inverted CMYK and converted with Pillow's formula.
 * Failure contract: on entry img is zeroed; on failure it stays zeroed, nothing leaks, and err names the file
 * (path or label). Statuses: SA3D_ERR_IO (cannot open/read), SA3D_ERR_FORMAT (neither JPEG nor PNG, corrupt,
 * truncated - including a JPEG that ends before its EOI marker and a PNG without IEND - or a side of 0 or
 * more than SA3D_IMAGE_MAX_SIDE), SA3D_ERR_NOMEM, SA3D_ERR_UNSUPPORTED (a progressive JPEG whose coefficient
 * buffer would exceed 512 MiB, or a JPEG of more than SA3D_JPEG_MAX_SCANS scans: each scan costs a pass over
 * the coefficients, so a few MB of repeated scans would take minutes). A JPEG whose entropy-coded data ends
 * inside a scan (cut file, with or without an EOI appended) is SA3D_ERR_FORMAT, where Pillow pads it with grey;
 * so is a multi-scan JPEG in which no scan holds some component, or (progressive) its DC coefficients: a file cut
 * before them, grey in that component (libjpeg's encoder refuses to write one). A progressive JPEG whose last
 * refinement scans are missing is complete by the standard (as libjpeg and Pillow decode it, coarser). Other
 * damaged entropy data that libjpeg repairs is accepted, as Pillow accepts it, and named in img->warning.
 * Arithmetic-coded JPEGs (rare) are decoded, but libjpeg does not report their entropy data ending early: a cut
 * one decodes with the rest grey. A multi-scan JPEG is also refused (UNSUPPORTED) past 2^27 scans x blocks. */
SA3D_API sa3d_status sa3d_image_load(sa3d_image *img, const char *path, sa3d_error *err);
/* Same from memory (buf borrowed, len bytes). label names the data in messages (may be NULL: "<memory>"). */
SA3D_API sa3d_status sa3d_image_load_memory(sa3d_image *img, const void *buf, size_t len, const char *label,
                                            sa3d_error *err);
SA3D_API void sa3d_image_free(sa3d_image *img); /* zeroes img; NULL rgb is fine */
/* In place left-right mirror: pixel (x, y) moves to (w - 1 - x, y). As PIL's FLIP_LEFT_RIGHT. NULL-safe. */
SA3D_API void sa3d_image_flip_lr(sa3d_image *img);
/* Writes an 8-bit PNG with 1 (grey) or 3 (RGB) channels; pixels is [h][w][channels]. Atomic: the file is
 * written to a temp file in the same directory and renamed into place, so on any failure (SA3D_ERR_ARG for
 * bad arguments, SA3D_ERR_IO naming the path, SA3D_ERR_NOMEM) no partial file exists and an old file at path
 * is unchanged. */
SA3D_API sa3d_status sa3d_png_write(const char *path, const uint8_t *pixels, int w, int h, int channels,
                                    sa3d_error *err);
/* Writes a baseline 8-bit JPEG (libjpeg defaults: YCbCr 4:2:0, integer slow DCT, no optimised Huffman tables)
 * with 1 (grey) or 3 (RGB) channels; pixels is [h][w][channels]; quality in [1, 100]. The bytes depend only on
 * the arguments and the libjpeg build. Atomic and with the same failure contract as sa3d_png_write. */
SA3D_API sa3d_status sa3d_jpeg_write(const char *path, const uint8_t *pixels, int w, int h, int channels,
                                     int quality, sa3d_error *err);

/* Pillow-exact 8-bit resampling (Image.resize on an RGB/L image): separable, horizontal pass then vertical,
 * fixed-point coefficients and uint8 rounding after each pass, exactly as Pillow's Resample.c. A pass whose
 * size is unchanged is skipped (same size both ways copies). BOX and HAMMING are Pillow's filters 4 and 5.
 * dst: [dh][dw][channels], src: [sh][sw][channels], channels 1 to 4 (each resampled independently; no alpha
 * premultiplication). Sides in (0, SA3D_IMAGE_MAX_SIDE]. dst must not overlap src. Statuses: SA3D_ERR_ARG,
 * SA3D_ERR_NOMEM (dst then undefined). Uses OpenMP over rows; output is identical at any thread count. */
typedef enum sa3d_resample {
    SA3D_RESAMPLE_BILINEAR,
    SA3D_RESAMPLE_BICUBIC,
    SA3D_RESAMPLE_LANCZOS,
    SA3D_RESAMPLE_BOX,
    SA3D_RESAMPLE_HAMMING
} sa3d_resample;
SA3D_API sa3d_status sa3d_resize_u8(uint8_t *dst, int dw, int dh, const uint8_t *src, int sw, int sh,
                                    int channels, sa3d_resample filter, sa3d_error *err);
/* torch-exact 8-bit resampling: torch.nn.functional.interpolate(antialias=True) on a uint8 tensor, the path
 * torchvision's resize takes for uint8 bilinear/bicubic on a CPU with AVX2 (and the one Hugging Face's
 * torchvision-backed image processors use). Same windows and uint8 rounding after each pass as Pillow, but
 * torch's cubic operation order and int16 coefficients whose fraction bits depend on the largest weight, so
 * about 1% of outputs differ from Pillow by 1 (rarely 2). BILINEAR, BICUBIC, LANCZOS; BOX and HAMMING are
 * SA3D_ERR_UNSUPPORTED. Otherwise as sa3d_resize_u8. */
SA3D_API sa3d_status sa3d_resize_u8_torch(uint8_t *dst, int dw, int dh, const uint8_t *src, int sw, int sh,
                                          int channels, sa3d_resample filter, sa3d_error *err);

/* Depth Anything V2 processor (Hugging Face DPTImageProcessor as configured for Depth-Anything-V2-*-hf):
 * keep the aspect ratio with the side scaled least (target 518 x 518), round each side to a multiple of 14
 * (round half to even as Python's round), bicubic, rescale 1/255, ImageNet mean/std normalisation.
 * METHOD.md 3.2. Two implementations of the resize and arithmetic exist in transformers and differ by up to 2
 * uint8 levels on ~0.7% of values:
 *   SA3D_DPT_TORCHVISION (default): the torchvision backend, transformers' default from version 5 (the
 *     fixtures were made with it): uint8 antialiased torch bicubic (sa3d_resize_u8_torch), then rescale and
 *     normalise fused as (x - mean / r) / (std / r) in float32 (r = rescale_factor);
 *   SA3D_DPT_PIL: the PIL backend (transformers 4 "slow" processor): Pillow bicubic (sa3d_resize_u8), then
 *     float32(x * r) and (x - mean) / std in float32. */
typedef enum sa3d_dpt_impl { SA3D_DPT_TORCHVISION, SA3D_DPT_PIL } sa3d_dpt_impl;
typedef struct sa3d_dpt_preprocess_params {
    int target_h, target_w; /* 518, 518 ("size") */
    int multiple;           /* 14 ("ensure_multiple_of") */
    int keep_aspect_ratio;  /* 1 */
    float mean[3], std[3];  /* ImageNet ("image_mean", "image_std"); 0 and 1 when do_normalize is false */
    double rescale_factor;  /* 1/255 ("rescale_factor"); 1 when do_rescale is false */
    sa3d_resample resample; /* SA3D_RESAMPLE_BICUBIC ("resample": 3 in PIL numbering) */
    sa3d_dpt_impl impl;     /* SA3D_DPT_TORCHVISION */
} sa3d_dpt_preprocess_params;
SA3D_API sa3d_dpt_preprocess_params sa3d_dpt_preprocess_params_default(void);
/* SA3D_OK when every setting is in its domain (sides and multiple in [1, SA3D_IMAGE_MAX_SIDE], flags 0 or 1,
 * enums known, std non-zero, rescale factor > 0, all finite, pixels finite), else SA3D_ERR_ARG naming it;
 * SA3D_ERR_UNSUPPORTED for a box or Hamming resample under SA3D_DPT_TORCHVISION. sa3d_dpt_preprocess checks too. */
SA3D_API sa3d_status sa3d_dpt_preprocess_params_check(const sa3d_dpt_preprocess_params *p, sa3d_error *err);
/* Reads a Hugging Face preprocessor_config.json / processor_config.json of a DPTImageProcessor into *p.
 * Keys that are absent take DPTImageProcessor's class defaults (size 384, multiple 1, no aspect keeping,
 * bicubic, 1/255, mean = std = 0.5). Settings the C code cannot reproduce (do_resize false, do_pad true,
 * resample 0 = nearest, another image_processor_type) are SA3D_ERR_UNSUPPORTED naming the key and value;
 * wrong types or ranges, and a mean, std and rescale factor that would give infinite pixels, are SA3D_ERR_FORMAT
 * naming "<path>: <key>". On failure *p is the default. impl is
 * left at SA3D_DPT_TORCHVISION (the file does not say which backend ran; set it afterwards to choose). */
SA3D_API sa3d_status sa3d_dpt_preprocess_params_load(sa3d_dpt_preprocess_params *p, const char *path,
                                                     sa3d_error *err);
/* The processor a model folder ships: <dir>/preprocessor_config.json, else <dir>/processor_config.json, read
 * as sa3d_dpt_preprocess_params_load (its failures, naming the file); a folder with neither gets the default
 * (the settings every Depth-Anything-V2-*-hf ships). used (may be NULL): the path read, "" for the default. */
SA3D_API sa3d_status sa3d_dpt_preprocess_params_find(sa3d_dpt_preprocess_params *p, const char *dir, char *used,
                                                     size_t n_used, sa3d_error *err);
/* Every setting as one line ("size=518x518 multiple=14 ... impl=torchvision") into buf[n], returned: settings
 * that differ give different texts. For cache keys and output metadata; 512 bytes always suffice. */
SA3D_API const char *sa3d_dpt_preprocess_params_text(const sa3d_dpt_preprocess_params *p, char *buf, size_t n);
/* 1 when p's text is the default's: the settings every Depth-Anything-V2-*-hf ships. */
SA3D_API int sa3d_dpt_preprocess_params_is_default(const sa3d_dpt_preprocess_params *p);
/* Output size the processor gives for an input of w x h (0 x 0 when a side rounds to 0 or w, h < 1). */
SA3D_API void sa3d_dpt_preprocess_size(const sa3d_dpt_preprocess_params *p, int w, int h, int *out_w,
                                       int *out_h);
/* pixels: [3][out_h][out_w] float32, owned by the caller, freed with sa3d_pixels_free. On failure *pixels is
 * NULL and *out_w = *out_h = 0; SA3D_ERR_ARG when the output size would be 0 or above SA3D_IMAGE_MAX_SIDE or
 * when mean, std and rescale factor would give infinite pixels, SA3D_ERR_UNSUPPORTED for a box or Hamming
 * resample under SA3D_DPT_TORCHVISION (torch's uint8 resize has neither; SA3D_DPT_PIL does). */
SA3D_API sa3d_status sa3d_dpt_preprocess(const sa3d_image *img, const sa3d_dpt_preprocess_params *p,
                                         float **pixels, int *out_w, int *out_h, sa3d_error *err);

/* GeoAware-SC DINOv2 input: the image fitted into a size x size square (longer side = size, aspect kept,
 * centred, zero padding), resized as GeoAware does, then ImageNet normalisation. size must be a multiple of
 * 14 (840 gives the 60 x 60 feature grid). pixels: [3][size][size]. METHOD.md 2.4 and 3.1.
 * Mirrors GeoAware-SC utils/utils_correspondence.py `resize` (edge=False) followed by the DINO extractor's
 * ToTensor + Normalize (model_utils/extractor_dino.py `preprocess_pil`), as preprocess_map.py calls them:
 * the longer side becomes size, the shorter side round_half_even(size * short / long) (numpy.around), the
 * resize is Pillow LANCZOS, and the resized image is pasted at offset ((size - rw) / 2, (size - rh) / 2)
 * (floor) into a black square; then (x / 255 - mean) / std in float32. On failure *pixels is NULL. */
SA3D_API sa3d_status sa3d_geoaware_preprocess(const sa3d_image *img, int size, float **pixels,
                                              sa3d_error *err);
/* Where sa3d_geoaware_preprocess puts the image: resized to rw x rh at offset (ox, oy) inside the square
 * (pixels of the square). An image pixel centre (u, v) maps to (ox + (u + 0.5) * rw / w - 0.5, ...). Returns
 * SA3D_ERR_ARG (outputs 0) for sides < 1, a size that is not a positive multiple of 14 or above
 * SA3D_IMAGE_MAX_SIDE, or a shorter side that rounds to 0. */
SA3D_API sa3d_status sa3d_geoaware_layout(int w, int h, int size, int *rw, int *rh, int *ox, int *oy,
                                          sa3d_error *err);
SA3D_API void sa3d_pixels_free(float *pixels); /* NULL is a no-op */

#ifdef __cplusplus
}
#endif
#endif
