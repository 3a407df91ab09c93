/* Tests for src/nn/preprocess.c: Pillow-exact resampling (hand-checked values and hashes of Pillow 9.4 output
 * on seeded noise), the Depth Anything (DPTImageProcessor) output sizes and the parity of its pixel_values
 * against every preprocess fixture, the GeoAware-SC DINOv2 input layout and values, and allocation faults. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "base/base.h"
#include "semalign3d/image.h"
#include "t.h"

/* STYLE.md section 7: preprocessing vs HF processor, max|d| <= (2/255)/std and mean|d| <= 1e-3. */
#define PREPROC_MAX_ERR_PIXELS (2.0 / 255.0)
#define PREPROC_MEAN_ERR 1e-3

static const sa3d_resample all_filters[] = { SA3D_RESAMPLE_BILINEAR, SA3D_RESAMPLE_BICUBIC,
                                             SA3D_RESAMPLE_LANCZOS, SA3D_RESAMPLE_BOX,
                                             SA3D_RESAMPLE_HAMMING };
#define N_FILTERS ((int)(sizeof all_filters / sizeof all_filters[0]))

/* Seeded noise, the same LCG as the Python script that produced the expected hashes below. */
static uint8_t *pattern(int w, int h, int ch, uint32_t seed) {
    size_t n = (size_t)w * (size_t)h * (size_t)ch;
    uint8_t *p = malloc(n);
    uint32_t s = seed;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = (uint8_t)(s >> 24);
    }
    return p;
}

static uint32_t fnv1a(const uint8_t *b, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 16777619u;
    }
    return h;
}

/* 1.1 */
static void test_resize_identity(void) {
    sa3d_error err = { 0 };
    uint8_t *src = pattern(13, 9, 3, 7);
    uint8_t dst[13 * 9 * 3];
    for (int f = 0; f < N_FILTERS; f++) {
        memset(dst, 0, sizeof dst);
        T_OK(sa3d_resize_u8(dst, 13, 9, src, 13, 9, 3, all_filters[f], &err), &err);
        T_CHECK(memcmp(dst, src, sizeof dst) == 0);
    }
    free(src);
}

/* 1.2 */
static void test_resize_constant(void) {
    sa3d_error err = { 0 };
    static const int sizes[][4] = {
        { 17, 11, 5, 3 }, { 5, 3, 17, 11 }, { 9, 9, 31, 4 }, { 1, 1, 7, 5 }, { 64, 1, 3, 1 }
    };
    for (int s = 0; s < 5; s++) {
        int sw = sizes[s][0], sh = sizes[s][1], dw = sizes[s][2], dh = sizes[s][3];
        for (int f = 0; f < N_FILTERS; f++) {
            for (int v = 0; v < 256; v += 51) {
                uint8_t *src = malloc((size_t)sw * sh * 3), *dst = malloc((size_t)dw * dh * 3);
                memset(src, v, (size_t)sw * sh * 3);
                T_OK(sa3d_resize_u8(dst, dw, dh, src, sw, sh, 3, all_filters[f], &err), &err);
                int bad = 0;
                for (int i = 0; i < dw * dh * 3; i++) bad += dst[i] != v;
                if (bad)
                    T_FAIL("%dx%d -> %dx%d filter %d value %d: %d pixels changed", sw, sh, dw, dh, f, v, bad);
                free(src);
                free(dst);
            }
        }
    }
}

/* 1.3 Hand-computed bilinear 2x downscale of one row [0 100 200 250]: support 2, centres 1 and 3, weights
 * (3, 3, 1)/7 and (1, 3, 3)/7 -> 500/7 = 71.4 and 1450/7 = 207.1. Bicubic upscale of a step keeps the
 * overshoot clipped; box 2x downscale is the pair mean rounded half up. */
static void test_resize_hand(void) {
    sa3d_error err = { 0 };
    const uint8_t row[4] = { 0, 100, 200, 250 };
    uint8_t out[4];
    T_OK(sa3d_resize_u8(out, 2, 1, row, 4, 1, 1, SA3D_RESAMPLE_BILINEAR, &err), &err);
    T_CHECK(out[0] == 71 && out[1] == 207);
    T_OK(sa3d_resize_u8(out, 2, 1, row, 4, 1, 1, SA3D_RESAMPLE_BOX, &err), &err);
    T_CHECK(out[0] == 50 && out[1] == 225);
    /* Vertical only: a 1x4 column behaves as the row. */
    T_OK(sa3d_resize_u8(out, 1, 2, row, 1, 4, 1, SA3D_RESAMPLE_BILINEAR, &err), &err);
    T_CHECK(out[0] == 71 && out[1] == 207);
    /* Bicubic 2 -> 4 on [0 255], support 2. Output 1: centre 0.75, window [0, 2), distances 0.25 and 0.75
     * give weights 0.8671875 and 0.2265625, normalised: 255 * 0.2265625 / 1.09375 = 52.8 -> 53. Output 0:
     * centre 0.25, weights 0.8671875 and -0.0703125: 255 * -0.088 < 0 -> clipped to 0. Symmetric on the
     * right. */
    const uint8_t step[2] = { 0, 255 };
    uint8_t up[4];
    T_OK(sa3d_resize_u8(up, 4, 1, step, 2, 1, 1, SA3D_RESAMPLE_BICUBIC, &err), &err);
    T_CHECK(up[0] == 0 && up[1] == 53 && up[2] == 202 && up[3] == 255);
}

/* 1.4 Pillow 9.4 Image.resize output hashes (FNV-1a of the bytes) and middle byte on seeded noise. */
static void test_resize_pillow(void) {
    static const struct {
        int sw, sh, dw, dh, ch;
        sa3d_resample f;
        uint32_t hash;
        int mid;
    } ref[] = {
        { 7, 5, 3, 4, 3, SA3D_RESAMPLE_BILINEAR, 0x3995cd4bu, 167 },
        { 7, 5, 3, 4, 3, SA3D_RESAMPLE_BICUBIC, 0x1ccc8de4u, 173 },
        { 7, 5, 3, 4, 3, SA3D_RESAMPLE_LANCZOS, 0xe655e719u, 180 },
        { 7, 5, 3, 4, 3, SA3D_RESAMPLE_BOX, 0x4fa2fa58u, 181 },
        { 7, 5, 3, 4, 3, SA3D_RESAMPLE_HAMMING, 0x2840e6fbu, 172 },
        { 5, 3, 11, 7, 3, SA3D_RESAMPLE_BILINEAR, 0x1fd25697u, 147 },
        { 5, 3, 11, 7, 3, SA3D_RESAMPLE_BICUBIC, 0x7afeca08u, 147 },
        { 5, 3, 11, 7, 3, SA3D_RESAMPLE_LANCZOS, 0xaa4a21eeu, 147 },
        { 5, 3, 11, 7, 3, SA3D_RESAMPLE_BOX, 0xee59660bu, 147 },
        { 5, 3, 11, 7, 3, SA3D_RESAMPLE_HAMMING, 0xafda9ef8u, 147 },
        { 23, 17, 28, 21, 3, SA3D_RESAMPLE_BILINEAR, 0x14af7569u, 176 },
        { 23, 17, 28, 21, 3, SA3D_RESAMPLE_BICUBIC, 0xe9791862u, 194 },
        { 23, 17, 28, 21, 3, SA3D_RESAMPLE_LANCZOS, 0xf1afe8e2u, 205 },
        { 23, 17, 28, 21, 3, SA3D_RESAMPLE_BOX, 0x690384e1u, 220 },
        { 23, 17, 28, 21, 3, SA3D_RESAMPLE_HAMMING, 0x7b8d1394u, 187 },
        { 40, 30, 13, 9, 1, SA3D_RESAMPLE_BILINEAR, 0x8ea50822u, 113 },
        { 40, 30, 13, 9, 1, SA3D_RESAMPLE_BICUBIC, 0x001e8f59u, 108 },
        { 40, 30, 13, 9, 1, SA3D_RESAMPLE_LANCZOS, 0xdcf098ecu, 107 },
        { 40, 30, 13, 9, 1, SA3D_RESAMPLE_BOX, 0xb4c98e66u, 115 },
        { 40, 30, 13, 9, 1, SA3D_RESAMPLE_HAMMING, 0x1cdfdf95u, 99 },
        { 9, 9, 9, 20, 3, SA3D_RESAMPLE_BILINEAR, 0xd9f8684fu, 163 },
        { 9, 9, 9, 20, 3, SA3D_RESAMPLE_BICUBIC, 0x5e4456adu, 168 },
        { 9, 9, 9, 20, 3, SA3D_RESAMPLE_LANCZOS, 0xeaac7eecu, 177 },
        { 9, 9, 9, 20, 3, SA3D_RESAMPLE_BOX, 0x2fd4a0f9u, 152 },
        { 9, 9, 9, 20, 3, SA3D_RESAMPLE_HAMMING, 0x2cf9e699u, 155 },
        { 31, 7, 31, 3, 3, SA3D_RESAMPLE_BILINEAR, 0xd82ea19cu, 162 },
        { 31, 7, 31, 3, 3, SA3D_RESAMPLE_BICUBIC, 0xd4306faau, 165 },
        { 31, 7, 31, 3, 3, SA3D_RESAMPLE_LANCZOS, 0x7d42ff1au, 168 },
        { 31, 7, 31, 3, 3, SA3D_RESAMPLE_BOX, 0x2b3b873cu, 157 },
        { 31, 7, 31, 3, 3, SA3D_RESAMPLE_HAMMING, 0x5ba61959u, 166 },
        { 6, 10, 6, 10, 3, SA3D_RESAMPLE_BICUBIC, 0x98261341u, 71 },
        { 300, 200, 97, 61, 3, SA3D_RESAMPLE_BILINEAR, 0x1851d530u, 114 },
        { 300, 200, 97, 61, 3, SA3D_RESAMPLE_BICUBIC, 0x70b5bec7u, 118 },
        { 300, 200, 97, 61, 3, SA3D_RESAMPLE_LANCZOS, 0x59ed9774u, 123 },
        { 300, 200, 97, 61, 3, SA3D_RESAMPLE_BOX, 0xdc4482f1u, 113 },
        { 300, 200, 97, 61, 3, SA3D_RESAMPLE_HAMMING, 0x5ffa43e9u, 113 },
    };
    sa3d_error err = { 0 };
    for (size_t i = 0; i < sizeof ref / sizeof ref[0]; i++) {
        uint8_t *src = pattern(ref[i].sw, ref[i].sh, ref[i].ch, (uint32_t)(ref[i].sw * 1000 + ref[i].sh));
        size_t n = (size_t)ref[i].dw * ref[i].dh * ref[i].ch;
        uint8_t *dst = malloc(n);
        T_OK(sa3d_resize_u8(dst, ref[i].dw, ref[i].dh, src, ref[i].sw, ref[i].sh, ref[i].ch, ref[i].f, &err),
             &err);
        uint32_t h = fnv1a(dst, n);
        if (h != ref[i].hash || dst[n / 2] != ref[i].mid)
            T_FAIL("%dx%dx%d -> %dx%d filter %d: hash %08x mid %d, Pillow %08x mid %d", ref[i].sw, ref[i].sh,
                   ref[i].ch, ref[i].dw, ref[i].dh, (int)ref[i].f, h, dst[n / 2], ref[i].hash, ref[i].mid);
        free(src);
        free(dst);
    }
}

/* 1.12 torch flavour: hashes from a Python transcription of torch's uint8 antialias path (weights in double,
 * int16 coefficients with dynamic precision), the transcription that reproduces the Depth Anything fixture's
 * 609168 resized values exactly; plus identity and constant images. */
static void test_resize_torch(void) {
    static const struct {
        int sw, sh, dw, dh, ch;
        sa3d_resample f;
        uint32_t hash;
        int mid;
    } ref[] = {
        { 7, 5, 3, 4, 3, SA3D_RESAMPLE_BILINEAR, 0x2c70eff7u, 166 },
        { 7, 5, 3, 4, 3, SA3D_RESAMPLE_BICUBIC, 0x1ccc8de4u, 173 },
        { 5, 3, 11, 7, 3, SA3D_RESAMPLE_BILINEAR, 0x1fd25697u, 147 },
        { 5, 3, 11, 7, 3, SA3D_RESAMPLE_BICUBIC, 0x7afeca08u, 147 },
        { 40, 30, 13, 9, 1, SA3D_RESAMPLE_BILINEAR, 0x8ea50822u, 113 },
        { 40, 30, 13, 9, 1, SA3D_RESAMPLE_BICUBIC, 0x001e8f59u, 108 },
        { 300, 200, 97, 61, 3, SA3D_RESAMPLE_BILINEAR, 0x5d969385u, 114 },
        { 300, 200, 97, 61, 3, SA3D_RESAMPLE_BICUBIC, 0xb4bc3327u, 118 },
        { 31, 7, 31, 3, 3, SA3D_RESAMPLE_BILINEAR, 0xd82ea19cu, 162 },
        { 31, 7, 31, 3, 3, SA3D_RESAMPLE_BICUBIC, 0xd82f951du, 165 },
    };
    sa3d_error err = { 0 };
    for (size_t i = 0; i < sizeof ref / sizeof ref[0]; i++) {
        uint8_t *src = pattern(ref[i].sw, ref[i].sh, ref[i].ch, (uint32_t)(ref[i].sw * 1000 + ref[i].sh));
        size_t n = (size_t)ref[i].dw * ref[i].dh * ref[i].ch;
        uint8_t *dst = malloc(n);
        T_OK(sa3d_resize_u8_torch(dst, ref[i].dw, ref[i].dh, src, ref[i].sw, ref[i].sh, ref[i].ch, ref[i].f,
                                  &err),
             &err);
        uint32_t h = fnv1a(dst, n);
        if (h != ref[i].hash || dst[n / 2] != ref[i].mid)
            T_FAIL("%dx%dx%d -> %dx%d filter %d: hash %08x mid %d, expected %08x mid %d", ref[i].sw,
                   ref[i].sh, ref[i].ch, ref[i].dw, ref[i].dh, (int)ref[i].f, h, dst[n / 2], ref[i].hash,
                   ref[i].mid);
        free(src);
        free(dst);
    }
    uint8_t *src = pattern(13, 9, 3, 7), dst[31 * 20 * 3];
    T_OK(sa3d_resize_u8_torch(dst, 13, 9, src, 13, 9, 3, SA3D_RESAMPLE_BICUBIC, &err), &err);
    T_CHECK(memcmp(dst, src, 13 * 9 * 3) == 0);
    memset(src, 77, 13 * 9 * 3);
    for (int f = 0; f < 3; f++) {
        T_OK(sa3d_resize_u8_torch(dst, 31, 20, src, 13, 9, 3, all_filters[f], &err), &err);
        int bad = 0;
        for (int i = 0; i < 31 * 20 * 3; i++) bad += dst[i] != 77;
        T_CHECK(bad == 0);
        T_OK(sa3d_resize_u8_torch(dst, 5, 4, src, 13, 9, 3, all_filters[f], &err), &err);
        for (int i = 0; i < 5 * 4 * 3; i++) bad += dst[i] != 77;
        T_CHECK(bad == 0);
    }
    T_STATUS(sa3d_resize_u8_torch(dst, 5, 4, src, 13, 9, 3, SA3D_RESAMPLE_BOX, &err), SA3D_ERR_UNSUPPORTED,
             &err);
    free(src);
}

/* 1.5 */
static void test_resize_args(void) {
    sa3d_error err = { 0 };
    uint8_t a[12] = { 0 }, b[12];
    T_STATUS(sa3d_resize_u8(b, 2, 2, a, 2, 2, 5, SA3D_RESAMPLE_BICUBIC, &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_resize_u8(b, 0, 2, a, 2, 2, 3, SA3D_RESAMPLE_BICUBIC, &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_resize_u8(b, 2, 2, a, 2, SA3D_IMAGE_MAX_SIDE + 1, 3, SA3D_RESAMPLE_BICUBIC, &err),
             SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_resize_u8(b, 2, 2, a, 2, 2, 3, (sa3d_resample)99, &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_resize_u8(NULL, 2, 2, a, 2, 2, 3, SA3D_RESAMPLE_BICUBIC, &err), SA3D_ERR_ARG, &err);
}

/* 1.6 Output sizes from transformers' DPT get_resize_output_image_size (checked in Python): 74 x 51 and
 * 74 x 65 hit exact halves (25.5 -> 26, 32.5 -> 32: round half to even). */
static void test_dpt_sizes(void) {
    static const int cases[][4] = {
        { 500, 375, 518, 392 },  { 375, 500, 392, 518 },  { 518, 518, 518, 518 }, { 1000, 1000, 518, 518 },
        { 640, 480, 686, 518 },  { 74, 51, 518, 364 },    { 74, 65, 518, 448 },   { 1, 1, 518, 518 },
        { 300, 1000, 154, 518 }, { 2000, 37, 518, 14 },   { 333, 500, 350, 518 }, { 500, 333, 518, 350 },
        { 14, 14, 518, 518 },    { 1024, 768, 686, 518 },
    };
    sa3d_dpt_preprocess_params p = sa3d_dpt_preprocess_params_default();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int w, h;
        sa3d_dpt_preprocess_size(&p, cases[i][0], cases[i][1], &w, &h);
        if (w != cases[i][2] || h != cases[i][3])
            T_FAIL("%d x %d -> %d x %d, expected %d x %d", cases[i][0], cases[i][1], w, h, cases[i][2],
                   cases[i][3]);
    }
    int w, h;
    sa3d_dpt_preprocess_size(&p, 0, 10, &w, &h);
    T_CHECK(w == 0 && h == 0);
    /* A 5000 x 1 image: width fits (scale 0.1036), height 0.1 rounds to 0 -> no valid output. */
    sa3d_dpt_preprocess_size(&p, 5000, 1, &w, &h);
    T_CHECK(h == 0);
    sa3d_image img = { .w = 5000, .h = 1, .rgb = calloc(5000 * 3, 1) };
    float *px = (float *)1;
    sa3d_error err = { 0 };
    T_STATUS(sa3d_dpt_preprocess(&img, &p, &px, &w, &h, &err), SA3D_ERR_ARG, &err);
    T_CHECK(px == NULL && w == 0 && h == 0);
    free(img.rgb);
}

/* -- fixture parity ------------------------------------------------------------------------------------- */

/* Reads a float32 tensor from a safetensors file: 8-byte little-endian header length, JSON header, data. */
static float *read_st_f32(const char *path, const char *key, int64_t *shape, int *ndim) {
    char *buf = NULL;
    size_t len = 0;
    sa3d_error err = { 0 };
    *ndim = 0;
    if (sa3d_read_file(path, (size_t)1 << 31, &buf, &len, &err) != SA3D_OK) {
        T_FAIL("%s", err.msg);
        return NULL;
    }
    float *out = NULL;
    uint64_t hl = 0;
    for (int i = 7; i >= 0 && len >= 8; i--) hl = (hl << 8) | (uint8_t)buf[i];
    if (len < 8 || hl > len - 8) {
        T_FAIL("%s: bad safetensors header length", path);
        sa3d_free(buf);
        return NULL;
    }
    cJSON *root = cJSON_ParseWithLength(buf + 8, (size_t)hl);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, key);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(t, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(t, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
    if (!cJSON_IsString(dt) || strcmp(dt->valuestring, "F32") != 0 || !cJSON_IsArray(sh) ||
        !cJSON_IsArray(off) || cJSON_GetArraySize(sh) > 8 || cJSON_GetArraySize(off) != 2) {
        T_FAIL("%s: tensor '%s' missing or not F32", path, key);
        goto done;
    }
    size_t numel = 1;
    *ndim = cJSON_GetArraySize(sh);
    for (int i = 0; i < *ndim; i++) {
        shape[i] = (int64_t)cJSON_GetArrayItem(sh, i)->valuedouble;
        numel *= (size_t)shape[i];
    }
    size_t b = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble,
           e = (size_t)cJSON_GetArrayItem(off, 1)->valuedouble;
    if (e < b || e - b != numel * 4 || 8 + hl + e > len) {
        T_FAIL("%s: tensor '%s' data offsets [%zu, %zu) bad for %zu floats", path, key, b, e, numel);
        *ndim = 0;
        goto done;
    }
    out = malloc(numel * 4 + 1);
    memcpy(out, buf + 8 + hl + b, numel * 4); /* little-endian host assumed (x86-64, aarch64) */
done:
    cJSON_Delete(root);
    sa3d_free(buf);
    return out;
}

static int has_file(const char *dir, const char *name) {
    char *p = sa3d_path_join(dir, name);
    int ok = p && sa3d_file_exists(p);
    sa3d_free(p);
    return ok;
}

static void check_fixture(const char *dir, const char *name) {
    sa3d_error err = { 0 };
    char *cfg = sa3d_path_join(dir, "processor_config.json"), *png = sa3d_path_join(dir, "input.png"),
         *ref = sa3d_path_join(dir, "reference.safetensors");
    sa3d_dpt_preprocess_params p;
    sa3d_image img = { 0 };
    float *px = NULL, *want = NULL;
    int w = 0, h = 0, ndim = 0;
    int64_t shape[8] = { 0 };
    if (sa3d_dpt_preprocess_params_load(&p, cfg, &err) != SA3D_OK) {
        T_FAIL("%s: %s", name, err.msg);
        goto done;
    }
    if (sa3d_image_load(&img, png, &err) != SA3D_OK) {
        T_FAIL("%s: %s", name, err.msg);
        goto done;
    }
    if (sa3d_dpt_preprocess(&img, &p, &px, &w, &h, &err) != SA3D_OK) {
        T_FAIL("%s: %s", name, err.msg);
        goto done;
    }
    want = read_st_f32(ref, "pixel_values", shape, &ndim);
    if (!want) goto done;
    if (ndim != 4 || shape[0] != 1 || shape[1] != 3 || shape[2] != h || shape[3] != w) {
        T_FAIL("%s: pixel_values shape [%lld,%lld,%lld,%lld], ours [1,3,%d,%d]", name, (long long)shape[0],
               (long long)shape[1], (long long)shape[2], (long long)shape[3], h, w);
        goto done;
    }
    size_t n = (size_t)w * h, worst = 0;
    double max_err = 0.0, sum = 0.0, bound = 0.0;
    int exact = 1;
    for (int c = 0; c < 3; c++) {
        double b = PREPROC_MAX_ERR_PIXELS / (double)p.std[c];
        if (c == 0 || b < bound) bound = b;
    }
    for (size_t i = 0; i < 3 * n; i++) {
        double d = fabs((double)px[i] - (double)want[i]);
        if (px[i] != want[i]) exact = 0;
        sum += d;
        if (d > max_err) {
            max_err = d;
            worst = i;
        }
    }
    double mean_err = sum / (double)(3 * n);
    printf(
        "       %s: %dx%d -> pixel_values [1,3,%d,%d]: max|d| %.3g at [0,%zu,%zu,%zu], mean|d| %.3g, bound "
        "%.3g / %.3g%s\n",
        name, img.w, img.h, h, w, max_err, worst / n, worst % n / (size_t)w, worst % (size_t)w, mean_err,
        bound, PREPROC_MEAN_ERR, exact ? " (bit-exact)" : "");
    if (!(max_err <= bound) || !(mean_err <= PREPROC_MEAN_ERR))
        T_FAIL("%s: max|d| %.3g (bound %.3g), mean|d| %.3g (bound %.3g)", name, max_err, bound, mean_err,
               PREPROC_MEAN_ERR);
    /* For information: the PIL backend (transformers 4) on the same input; not checked against the bound. */
    sa3d_dpt_preprocess_params q = p;
    q.impl = SA3D_DPT_PIL;
    float *pil = NULL;
    int pw, ph;
    if (sa3d_dpt_preprocess(&img, &q, &pil, &pw, &ph, &err) == SA3D_OK && pw == w && ph == h) {
        double pmax = 0.0, psum = 0.0;
        size_t ndiff = 0;
        for (size_t i = 0; i < 3 * n; i++) {
            double d = fabs((double)pil[i] - (double)want[i]);
            psum += d;
            ndiff += d > 1e-6;
            if (d > pmax) pmax = d;
        }
        printf("       %s: (info) PIL impl: max|d| %.3g, mean|d| %.3g, %zu of %zu values differ\n", name,
               pmax, psum / (double)(3 * n), ndiff, 3 * n);
    }
    sa3d_pixels_free(pil);
done:
    free(want);
    sa3d_pixels_free(px);
    sa3d_image_free(&img);
    sa3d_free(cfg);
    sa3d_free(png);
    sa3d_free(ref);
}

/* 1.7 Every fixture directory holding processor_config.json + input.png + reference.safetensors. */
static void test_dpt_fixtures(void) {
    const char *root = t_fixtures_root();
    DIR *d = opendir(root);
    if (!d) {
        T_FAIL("cannot open fixture root %s", root);
        return;
    }
    char *names[256];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 256) {
        if (e->d_name[0] == '.') continue;
        char *dir = sa3d_path_join(root, e->d_name);
        if (sa3d_dir_exists(dir) && has_file(dir, "processor_config.json") && has_file(dir, "input.png") &&
            has_file(dir, "reference.safetensors"))
            names[n++] = strdup(e->d_name);
        sa3d_free(dir);
    }
    closedir(d);
    /* sorted, so the output order is stable */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char *t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
        }
    if (n == 0)
        T_FAIL("no preprocessing fixture (processor_config.json + input.png + reference.safetensors) "
               "under %s",
               root);
    for (int i = 0; i < n; i++) {
        char *dir = sa3d_path_join(root, names[i]);
        check_fixture(dir, names[i]);
        sa3d_free(dir);
        free(names[i]);
    }
}

/* 1.8 processor_config.json: class defaults for absent keys, what the C code cannot reproduce refused as
 * unsupported, bad types and ranges and values that overflow the pixels refused naming the file and key. */
static void test_dpt_params_load(void) {
    char tmpl[] = "/tmp/sa3d_pre_XXXXXX";
    char *dir = mkdtemp(tmpl);
    if (!dir) {
        T_FAIL("mkdtemp failed");
        return;
    }
    static const struct {
        const char *json;
        sa3d_status want;
        const char *key;
    } cases[] = {
        { "{\"size\":{\"height\":518,\"width\":518},\"keep_aspect_ratio\":true,\"ensure_multiple_of\":14,"
          "\"resample\":3}",
          SA3D_OK, NULL },
        { "{\"resample\":0}", SA3D_ERR_UNSUPPORTED, "resample" },
        { "{\"do_pad\":true}", SA3D_ERR_UNSUPPORTED, "do_pad" },
        { "{\"do_resize\":false}", SA3D_ERR_UNSUPPORTED, "do_resize" },
        { "{\"image_processor_type\":\"BitImageProcessor\"}", SA3D_ERR_UNSUPPORTED, "image_processor_type" },
        { "{\"size\":{\"height\":-1,\"width\":518}}", SA3D_ERR_FORMAT, "size.height" },
        { "{\"size\":\"big\"}", SA3D_ERR_FORMAT, "size" },
        { "{\"image_std\":[0.2,0,0.2]}", SA3D_ERR_FORMAT, "image_std" },
        { "{\"image_mean\":[0.2,0.3]}", SA3D_ERR_FORMAT, "image_mean" },
        { "{\"keep_aspect_ratio\":1}", SA3D_ERR_FORMAT, "keep_aspect_ratio" },
        { "{\"ensure_multiple_of\":14.5}", SA3D_ERR_FORMAT, "ensure_multiple_of" },
        { "[1,2]", SA3D_ERR_FORMAT, "JSON object" },
        /* each value is finite, but (v - mean / r) / (std / r) overflows float: inf pixels */
        { "{\"image_mean\":[1e38,0.5,0.5]}", SA3D_ERR_FORMAT, "infinite pixel values" },
        { "{\"image_std\":[1e-44,0.5,0.5]}", SA3D_ERR_FORMAT, "infinite pixel values" },
        { "{\"rescale_factor\":1e300}", SA3D_ERR_FORMAT, "infinite pixel values" },
        { "{\"size\":", SA3D_ERR_FORMAT, "JSON object" },
    };
    char path[512];
    snprintf(path, sizeof path, "%s/processor_config.json", dir);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        FILE *f = fopen(path, "w");
        fputs(cases[i].json, f);
        fclose(f);
        sa3d_dpt_preprocess_params p;
        sa3d_error err = { 0 };
        T_STATUS(sa3d_dpt_preprocess_params_load(&p, path, &err), cases[i].want, &err);
        if (cases[i].want != SA3D_OK) {
            T_CONTAINS(err.msg, path);
            T_CONTAINS(err.msg, cases[i].key);
        } else {
            T_CHECK(p.target_h == 518 && p.target_w == 518 && p.multiple == 14 && p.keep_aspect_ratio == 1);
            T_CHECK(p.resample == SA3D_RESAMPLE_BICUBIC && p.mean[0] == 0.5f && p.std[2] == 0.5f);
        }
    }
    sa3d_dpt_preprocess_params p = sa3d_dpt_preprocess_params_default();
    sa3d_error err = { 0 };
    sa3d_image img = { .w = 4, .h = 3, .rgb = pattern(4, 3, 3, 7) };
    float *px = (float *)1;
    int w, h;
    p.mean[1] = 1e38f; /* params made in code get the same check as a file's */
    T_STATUS(sa3d_dpt_preprocess(&img, &p, &px, &w, &h, &err), SA3D_ERR_ARG, &err);
    T_CONTAINS(err.msg, "infinite pixel values");
    T_CHECK(px == NULL);
    p = sa3d_dpt_preprocess_params_default();
    p.resample = SA3D_RESAMPLE_BOX; /* a file may ask for it; torch's uint8 resize has no box filter */
    T_STATUS(sa3d_dpt_preprocess(&img, &p, &px, &w, &h, &err), SA3D_ERR_UNSUPPORTED, &err);
    T_CONTAINS(err.msg, "resample box is not available with the torchvision backend");
    p.impl = SA3D_DPT_PIL;
    T_OK(sa3d_dpt_preprocess(&img, &p, &px, &w, &h, &err), &err);
    T_CHECK(px && w == 518 && h == 392); /* 4 x 3 scaled least: 518 x 388.5 -> multiple of 14 */
    sa3d_pixels_free(px);
    /* settings made in code out of their domains: refused by the check and by the processor, naming them */
    const char *want[7] = { "rescale_factor", "rescale_factor", "impl 7", "keep_aspect_ratio 5", "resample 99",
                            "multiple 0", "target" };
    for (int k = 0; k < 7; k++) {
        p = sa3d_dpt_preprocess_params_default();
        if (k == 0) p.rescale_factor = -1.0 / 255.0;
        if (k == 1) p.rescale_factor = 0.0;
        if (k == 2) p.impl = (sa3d_dpt_impl)7;
        if (k == 3) p.keep_aspect_ratio = 5;
        if (k == 4) p.resample = (sa3d_resample)99;
        if (k == 5) p.multiple = 0;
        if (k == 6) p.target_w = SA3D_IMAGE_MAX_SIDE + 1;
        T_STATUS(sa3d_dpt_preprocess_params_check(&p, &err), SA3D_ERR_ARG, &err);
        T_CONTAINS(err.msg, want[k]);
        px = (float *)1;
        T_STATUS(sa3d_dpt_preprocess(&img, &p, &px, &w, &h, &err), SA3D_ERR_ARG, &err);
        T_CHECK(px == NULL);
    }
    free(img.rgb);
    snprintf(path, sizeof path, "%s/missing.json", dir);
    T_STATUS(sa3d_dpt_preprocess_params_load(&p, path, &err), SA3D_ERR_IO, &err);
    T_CONTAINS(err.msg, path);
    snprintf(path, sizeof path, "%s/processor_config.json", dir);
    remove(path);
    rmdir(dir);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) { T_FAIL("cannot write %s", path); return; }
    fputs(text, f);
    fclose(f);
}

/* 1.14 A model folder's processor: preprocessor_config.json before processor_config.json, the default without
 * either, a broken file an error naming it; the settings' text differs exactly when a setting does. */
static void test_dpt_params_find(void) {
    char tmpl[] = "/tmp/sa3d_pre_XXXXXX";
    char *dir = mkdtemp(tmpl);
    if (!dir) { T_FAIL("mkdtemp failed"); return; }
    char pre[512], proc[512], used[600], a[512], b[512];
    snprintf(pre, sizeof pre, "%s/preprocessor_config.json", dir);
    snprintf(proc, sizeof proc, "%s/processor_config.json", dir);
    sa3d_dpt_preprocess_params p, d = sa3d_dpt_preprocess_params_default();
    sa3d_error err = { 0 };
    T_OK(sa3d_dpt_preprocess_params_find(&p, dir, used, sizeof used, &err), &err);
    T_CHECK(used[0] == 0 && !strcmp(sa3d_dpt_preprocess_params_text(&p, a, sizeof a),
                                    sa3d_dpt_preprocess_params_text(&d, b, sizeof b)));
    write_text(proc, "{\"size\": 266}");
    T_OK(sa3d_dpt_preprocess_params_find(&p, dir, used, sizeof used, &err), &err);
    T_CHECK(!strcmp(used, proc) && p.target_h == 266 && p.target_w == 266 && p.multiple == 1);
    write_text(pre, "{\"size\": {\"height\": 518, \"width\": 392}, \"ensure_multiple_of\": 14}");
    T_OK(sa3d_dpt_preprocess_params_find(&p, dir, used, sizeof used, &err), &err);
    T_CHECK(!strcmp(used, pre) && p.target_h == 518 && p.target_w == 392 && p.multiple == 14);
    write_text(pre, "{\"size\": {\"height\": 518}}");
    T_STATUS(sa3d_dpt_preprocess_params_find(&p, dir, used, sizeof used, &err), SA3D_ERR_FORMAT, &err);
    T_CONTAINS(err.msg, pre);
    T_CHECK(used[0] == 0 && p.target_h == d.target_h && p.multiple == d.multiple);
    remove(pre);
    remove(proc);
    rmdir(dir);
    T_STATUS(sa3d_dpt_preprocess_params_find(&p, NULL, used, sizeof used, &err), SA3D_ERR_ARG, &err);

    /* the text: the default's, then every field changed alone gives a new text (and is not the default) */
    T_CHECK(sa3d_dpt_preprocess_params_is_default(&d));
    sa3d_dpt_preprocess_params_text(&d, a, sizeof a);
    if (strcmp(a, "size=518x518 multiple=14 keep_aspect=1 resample=bicubic rescale=0.0039215686274509803 "
                  "mean=0.485000014,0.456,0.405999988 std=0.229000002,0.224000007,0.224999994 "
                  "impl=torchvision"))
        T_FAIL("default text: %s", a);
    for (int f = 0; f < 9; f++) {
        sa3d_dpt_preprocess_params q = d;
        switch (f) {
        case 0: q.target_h = 519; break;
        case 1: q.target_w = 517; break;
        case 2: q.multiple = 7; break;
        case 3: q.keep_aspect_ratio = 0; break;
        case 4: q.resample = SA3D_RESAMPLE_BILINEAR; break;
        case 5: q.rescale_factor = nextafter(q.rescale_factor, 1.0); break;
        case 6: q.mean[2] = nextafterf(q.mean[2], 1.0f); break;
        case 7: q.std[1] = nextafterf(q.std[1], 0.0f); break;
        case 8: q.impl = SA3D_DPT_PIL; break;
        }
        if (!strcmp(sa3d_dpt_preprocess_params_text(&q, b, sizeof b), a)) T_FAIL("field %d changed, same text", f);
        T_CHECK(!sa3d_dpt_preprocess_params_is_default(&q));
    }
}

/* 1.9 GeoAware layout (numpy.around half to even: 840 / 16 = 52.5 -> 52, 840 / 48 = 17.5 -> 18). */
static void test_geoaware_layout(void) {
    static const int cases[][6] = {
        { 500, 375, 840, 630, 0, 105 }, { 375, 500, 630, 840, 105, 0 }, { 16, 1, 840, 52, 0, 394 },
        { 48, 1, 840, 18, 0, 411 },     { 1, 16, 52, 840, 394, 0 },     { 500, 500, 840, 840, 0, 0 },
        { 333, 500, 559, 840, 140, 0 }, { 500, 332, 840, 558, 0, 141 },
    };
    sa3d_error err = { 0 };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rw, rh, ox, oy;
        T_OK(sa3d_geoaware_layout(cases[i][0], cases[i][1], 840, &rw, &rh, &ox, &oy, &err), &err);
        if (rw != cases[i][2] || rh != cases[i][3] || ox != cases[i][4] || oy != cases[i][5])
            T_FAIL("%d x %d: %d x %d at (%d, %d), expected %d x %d at (%d, %d)", cases[i][0], cases[i][1], rw,
                   rh, ox, oy, cases[i][2], cases[i][3], cases[i][4], cases[i][5]);
    }
    int rw, rh, ox, oy;
    T_STATUS(sa3d_geoaware_layout(500, 375, 841, &rw, &rh, &ox, &oy, &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_geoaware_layout(5000, 1, 840, &rw, &rh, &ox, &oy, &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_geoaware_layout(0, 1, 840, &rw, &rh, &ox, &oy, &err), SA3D_ERR_ARG, &err);
}

/* 1.10 GeoAware pixels: padding is (0 - mean) / std, the content is the Lanczos resize (Pillow-checked in 1.4
 * for 23 x 17 -> 28 x 21) normalised in float32. */
static void test_geoaware_pixels(void) {
    static const float mean[3] = { 0.485f, 0.456f, 0.406f }, std[3] = { 0.229f, 0.224f, 0.225f };
    sa3d_error err = { 0 };
    sa3d_image img = { .w = 23, .h = 17, .rgb = pattern(23, 17, 3, 23 * 1000 + 17) };
    float *px = NULL;
    T_OK(sa3d_geoaware_preprocess(&img, 28, &px, &err), &err);
    uint8_t rs[28 * 21 * 3];
    T_OK(sa3d_resize_u8(rs, 28, 21, img.rgb, 23, 17, 3, SA3D_RESAMPLE_LANCZOS, &err), &err);
    T_CHECK(fnv1a(rs, sizeof rs) == 0xf1afe8e2u);
    int bad = 0;
    for (int c = 0; c < 3 && px; c++)
        for (int y = 0; y < 28; y++)
            for (int x = 0; x < 28; x++) {
                int iy = y - 3; /* (28 - 21) / 2 */
                uint8_t v = (iy >= 0 && iy < 21) ? rs[(iy * 28 + x) * 3 + c] : 0;
                float want = ((float)v / 255.0f - mean[c]) / std[c];
                bad += px[(c * 28 + y) * 28 + x] != want;
            }
    T_CHECK(bad == 0);
    sa3d_pixels_free(px);
    /* flipped input gives the mirrored content */
    sa3d_image_flip_lr(&img);
    T_OK(sa3d_geoaware_preprocess(&img, 28, &px, &err), &err);
    uint8_t rf[28 * 21 * 3];
    T_OK(sa3d_resize_u8(rf, 28, 21, img.rgb, 23, 17, 3, SA3D_RESAMPLE_LANCZOS, &err), &err);
    T_CHECK(px && px[(0 * 28 + 3) * 28 + 0] == ((float)rf[0] / 255.0f - mean[0]) / std[0]);
    sa3d_pixels_free(px);
    px = (float *)1;
    T_STATUS(sa3d_geoaware_preprocess(&img, 30, &px, &err), SA3D_ERR_ARG, &err);
    T_CHECK(px == NULL);
    free(img.rgb);
}

/* 1.11 Every allocation failing in turn gives SA3D_ERR_NOMEM and no leak, then success. */
static void test_alloc_faults(void) {
    sa3d_image img = { .w = 50, .h = 37, .rgb = pattern(50, 37, 3, 5) };
    sa3d_dpt_preprocess_params p = sa3d_dpt_preprocess_params_default();
    long live = sa3d_alloc_live_blocks();
    for (int which = 0; which < 2; which++) {
        int done = 0;
        for (long n = 1; n < 100 && !done; n++) {
            sa3d_error err = { 0 };
            float *px = NULL;
            int w, h;
            sa3d_alloc_fail_after(n);
            sa3d_status s = which == 0 ? sa3d_dpt_preprocess(&img, &p, &px, &w, &h, &err)
                                       : sa3d_geoaware_preprocess(&img, 56, &px, &err);
            sa3d_alloc_fail_after(0);
            if (s == SA3D_OK)
                done = 1;
            else if (s != SA3D_ERR_NOMEM)
                T_FAIL("fault %ld: %s (%s)", n, sa3d_status_name(s), err.msg);
            else if (px)
                T_FAIL("fault %ld: output not NULL", n);
            sa3d_pixels_free(px);
            if (sa3d_alloc_live_blocks() != live)
                T_FAIL("fault %ld: %ld blocks leaked", n, sa3d_alloc_live_blocks() - live);
        }
        T_CHECK(done);
    }
    free(img.rgb);
}

/* 1.13 Determinism: 1 and 2 OpenMP threads give byte-identical resizes (integer arithmetic, rows split). */
static void test_threads(void) {
    sa3d_error err = { 0 };
    uint8_t *src = pattern(301, 203, 3, 11);
    uint8_t *a = malloc(517 * 389 * 3), *b = malloc(517 * 389 * 3);
    for (int fl = 0; fl < 2; fl++) {
        sa3d_set_threads(1);
        T_OK(fl ? sa3d_resize_u8_torch(a, 517, 389, src, 301, 203, 3, SA3D_RESAMPLE_BICUBIC, &err)
                : sa3d_resize_u8(a, 517, 389, src, 301, 203, 3, SA3D_RESAMPLE_LANCZOS, &err),
             &err);
        sa3d_set_threads(2);
        T_OK(fl ? sa3d_resize_u8_torch(b, 517, 389, src, 301, 203, 3, SA3D_RESAMPLE_BICUBIC, &err)
                : sa3d_resize_u8(b, 517, 389, src, 301, 203, 3, SA3D_RESAMPLE_LANCZOS, &err),
             &err);
        T_CHECK(memcmp(a, b, 517 * 389 * 3) == 0);
    }
    sa3d_set_threads(0);
    free(src);
    free(a);
    free(b);
}

int main(int argc, char **argv) {
    static const t_case cases[] = {
        { "1.1", "resize: same size returns the input", test_resize_identity },
        { "1.2", "resize: constant image stays constant", test_resize_constant },
        { "1.3", "resize: hand-computed values", test_resize_hand },
        { "1.4", "resize: Pillow 9.4 hashes on noise, every filter", test_resize_pillow },
        { "1.5", "resize: bad arguments", test_resize_args },
        { "1.6", "dpt: output sizes (round half to even)", test_dpt_sizes },
        { "1.7", "dpt: pixel_values parity on every fixture", test_dpt_fixtures },
        { "1.8", "dpt: processor config reading and errors", test_dpt_params_load },
        { "1.9", "geoaware: layout", test_geoaware_layout },
        { "1.10", "geoaware: pixels", test_geoaware_pixels },
        { "1.11", "allocation faults", test_alloc_faults },
        { "1.12", "resize: torch uint8 antialias flavour", test_resize_torch },
        { "1.13", "resize: 1 and 2 threads give identical bytes", test_threads },
        { "1.14", "dpt: a model folder's processor, the settings' text", test_dpt_params_find },
    };
    return t_run(cases, (int)(sizeof cases / sizeof cases[0]), argc, argv);
}
