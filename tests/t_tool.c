/* TEST HELPER for the CLI scripts (tests/cli_*.sh), not library code:
 *   t_tool mirror IN OUT.png              writes the left-right mirror of image IN as a PNG (lossless)
 *   t_tool same FILE_A KEY_A FILE_B KEY_B  exit 0 when the two safetensors tensors have the same shape and bytes,
 *                                          1 when they differ, 2 when a file or tensor cannot be read (so a check
 *                                          that expects 1 does not pass on a missing file)
 *   t_tool poison IN KEY INDEX OUT         copies safetensors IN (every tensor and metadata entry) to OUT with
 *                                          element INDEX of F32 tensor KEY set to NaN
 *   t_tool damage IN.jpg OUT.jpg           writes a copy of JPEG IN with 32 one bits (ff 00 ff 00, stuffed: no
 *                                          Huffman code is that long) over its scan at the first place, in
 *                                          steps of 7 bytes, where the decoder repairs the data with a warning
 * so a script can check `features --flip`'s mirror map against the features of a mirrored copy of the image. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "semalign3d/image.h"
#include "semalign3d/safetensors.h"

static int mirror(const char *in, const char *out) {
    sa3d_error err = { 0 };
    sa3d_image img = { 0 };
    int ok = sa3d_image_load(&img, in, &err) == SA3D_OK;
    if (ok) {
        sa3d_image_flip_lr(&img);
        ok = sa3d_png_write(out, img.rgb, img.w, img.h, 3, &err) == SA3D_OK;
    }
    sa3d_image_free(&img);
    if (!ok) fprintf(stderr, "t_tool mirror: %s\n", err.msg);
    return ok ? 0 : 1;
}

static int same(const char *fa, const char *ka, const char *fb, const char *kb) {
    sa3d_error err = { 0 };
    sa3d_safetensors *a = NULL, *b = NULL;
    int rc = 2;
    if (sa3d_st_open(&a, fa, &err) || sa3d_st_open(&b, fb, &err)) {
        fprintf(stderr, "t_tool same: %s\n", err.msg);
    } else {
        const sa3d_st_tensor *x = sa3d_st_find(a, ka), *y = sa3d_st_find(b, kb);
        rc = 1;
        if (!x || !y) {
            fprintf(stderr, "t_tool same: %s missing\n", !x ? ka : kb);
            rc = 2;
        } else if (x->ndim != y->ndim || memcmp(x->shape, y->shape, (size_t)x->ndim * sizeof x->shape[0]) ||
                   x->nbytes != y->nbytes || memcmp(x->data, y->data, x->nbytes)) {
            fprintf(stderr, "t_tool same: %s:%s and %s:%s differ\n", fa, ka, fb, kb);
        } else {
            rc = 0;
        }
    }
    if (a) sa3d_st_close(a);
    if (b) sa3d_st_close(b);
    return rc;
}

static int poison(const char *in, const char *key, const char *index, const char *out) {
    sa3d_error err = { 0 };
    sa3d_safetensors *st = NULL;
    sa3d_st_writer *w = sa3d_st_writer_new();
    float *copy = NULL;
    int ok = w && sa3d_st_open(&st, in, &err) == SA3D_OK;
    for (int i = 0; ok && i < sa3d_st_metadata_count(st); i++) {
        const char *k = sa3d_st_metadata_key(st, i);
        ok = sa3d_st_writer_set_metadata(w, k, sa3d_st_metadata(st, k), &err) == SA3D_OK;
    }
    for (int i = 0; ok && i < sa3d_st_count(st); i++) {
        const sa3d_st_tensor *t = sa3d_st_get(st, i);
        size_t at = strtoul(index, NULL, 10);
        if (!strcmp(t->name, key)) {
            ok = t->dtype == SA3D_DTYPE_F32 && at < t->numel && !copy && (copy = malloc(t->nbytes));
            if (ok) {
                memcpy(copy, t->data, t->nbytes);
                copy[at] = NAN;
                ok = sa3d_st_writer_add_f32(w, t->name, t->ndim, t->shape, copy, &err) == SA3D_OK;
            } else {
                snprintf(err.msg, sizeof err.msg, "%s: %s is not F32 or has no element %s", in, key, index);
            }
        } else {
            ok = sa3d_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, &err) == SA3D_OK;
        }
    }
    if (ok && !copy) snprintf(err.msg, sizeof err.msg, "%s: no tensor %s", in, key), ok = 0;
    if (ok) ok = sa3d_st_writer_write(w, out, &err) == SA3D_OK;
    if (!ok) fprintf(stderr, "t_tool poison: %s\n", err.msg);
    free(copy);
    sa3d_st_writer_free(w);
    sa3d_st_close(st);
    return ok ? 0 : 1;
}

static int damage(const char *in, const char *out) {
    sa3d_error err = { 0 };
    char *b = NULL;
    size_t n = 0;
    if (sa3d_read_file(in, SA3D_IMAGE_MAX_FILE_BYTES, &b, &n, &err)) {
        fprintf(stderr, "t_tool damage: %s\n", err.msg);
        return 2;
    }
    size_t sos = 0;
    for (size_t i = 0; i + 1 < n && !sos; i++) sos = (uint8_t)b[i] == 0xff && (uint8_t)b[i + 1] == 0xda ? i : 0;
    int rc = 1;
    for (size_t i = sos + 20; sos && i + 8 < n && rc == 1; i += 7) {
        char keep[4];
        memcpy(keep, b + i, 4);
        memcpy(b + i, "\xff\x00\xff\x00", 4);
        sa3d_image img;
        if (sa3d_image_load_memory(&img, b, n, in, &err) == SA3D_OK) {
            if (img.warning[0]) rc = sa3d_write_file_atomic(out, b, n, &err) == SA3D_OK ? 0 : 2;
            sa3d_image_free(&img);
        }
        memcpy(b + i, keep, 4);
    }
    if (rc) fprintf(stderr, "t_tool damage: %s: no place found (%s)\n", in, err.msg);
    sa3d_free(b);
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "mirror")) return mirror(argv[2], argv[3]);
    if (argc == 6 && !strcmp(argv[1], "same")) return same(argv[2], argv[3], argv[4], argv[5]);
    if (argc == 6 && !strcmp(argv[1], "poison")) return poison(argv[2], argv[3], argv[4], argv[5]);
    if (argc == 4 && !strcmp(argv[1], "damage")) return damage(argv[2], argv[3]);
    fprintf(stderr, "usage: t_tool mirror IN OUT.png | t_tool same FILE_A KEY_A FILE_B KEY_B | "
            "t_tool poison IN KEY INDEX OUT | t_tool damage IN.jpg OUT.jpg\n");
    return 3;
}
