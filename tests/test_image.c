/* Tests for src/io/image.c: PNG and JPEG decoding (every colour type the decoders convert, written here with
 * libpng/libjpeg), PNG writing and its atomicity, mirroring, and the negative cases: every truncation length,
 * wrong magic, forged huge or zero dimensions, corrupt bytes, missing files and allocation faults. Each
 * failure must be a status with a message naming the file, a zeroed image and no leak. */
#include <dirent.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <jpeglib.h>
#include <png.h>
#include "base/base.h"
#include "semalign3d/image.h"
#include "t.h"

static char tmp_dir[64];

/* ---- helpers: growable buffer, PNG and JPEG writers into memory ---------------------------------------- */

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static void buf_put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void png_buf_write(png_structp png, png_bytep d, size_t n) { buf_put(png_get_io_ptr(png), d, n); }
static void png_buf_flush(png_structp png) { (void)png; }

/* rows: h rows of png_get_rowbytes bytes, in the PNG's own sample layout (16-bit big-endian). */
static buf make_png(int w, int h, int color_type, int depth, int interlace, const uint8_t *rows,
                    const png_color *palette, int n_palette, const uint8_t *trns, int n_trns,
                    const png_color_16 *trns_grey) {
    buf b = { 0 };
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) {
        T_FAIL("libpng failed writing a test image");
        png_destroy_write_struct(&png, &info);
        free(b.p);
        b.p = NULL;
        b.n = 0;
        return b;
    }
    png_set_write_fn(png, &b, png_buf_write, png_buf_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color_type, interlace,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (palette) png_set_PLTE(png, info, palette, n_palette);
    if (trns || trns_grey) png_set_tRNS(png, info, trns, n_trns, trns_grey);
    png_write_info(png, info);
    size_t rb = png_get_rowbytes(png, info);
    int passes = png_set_interlace_handling(png);
    for (int pass = 0; pass < passes; pass++)
        for (int y = 0; y < h; y++) png_write_row(png, rows + (size_t)y * rb);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    return b;
}

/* in_space JCS_RGB (3 bytes per pixel), JCS_GRAYSCALE (1) or JCS_CMYK (4); progressive by libjpeg's simple
 * script, or by the given one (scans: n_scans entries, which libjpeg validates). */
static buf make_jpeg_script(int w, int h, J_COLOR_SPACE in_space, const uint8_t *pix, int quality, int progressive,
                            const jpeg_scan_info *scans, int n_scans) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    unsigned char *mem = NULL;
    unsigned long len = 0;
    jpeg_mem_dest(&c, &mem, &len);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = in_space == JCS_RGB ? 3 : in_space == JCS_CMYK ? 4 : 1;
    c.in_color_space = in_space;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality, TRUE);
    if (in_space == JCS_RGB) { /* 4:4:4 so colours survive closely */
        c.comp_info[0].h_samp_factor = c.comp_info[0].v_samp_factor = 1;
    }
    if (progressive) jpeg_simple_progression(&c);
    if (scans) {
        c.scan_info = scans;
        c.num_scans = n_scans;
    }
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(pix + (size_t)c.next_scanline * (size_t)w * (size_t)c.input_components);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    buf b = { 0 };
    buf_put(&b, mem, len);
    free(mem);
    return b;
}

static buf make_jpeg(int w, int h, J_COLOR_SPACE in_space, const uint8_t *pix, int quality, int progressive) {
    return make_jpeg_script(w, h, in_space, pix, quality, progressive, NULL, 0);
}

static uint8_t *gradient_rgb(int w, int h) {
    uint8_t *p = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *q = p + ((size_t)y * w + x) * 3;
            q[0] = (uint8_t)(x * 255 / (w - 1));
            q[1] = (uint8_t)(y * 255 / (h - 1));
            q[2] = (uint8_t)((x + y) * 255 / (w + h - 2));
        }
    return p;
}

static uint32_t crc32_png(const uint8_t *d, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= d[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return c ^ 0xffffffffu;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Rewrites the IHDR width/height of a PNG in memory and fixes its CRC. */
static void forge_png_dims(uint8_t *png, uint32_t w, uint32_t h) {
    put_be32(png + 16, w);
    put_be32(png + 20, h);
    put_be32(png + 29, crc32_png(png + 12, 17));
}

/* Offset of the SOFn marker segment (FF C0..C2) in a JPEG, or 0. */
static size_t jpeg_sof(const uint8_t *j, size_t n) {
    for (size_t i = 2; i + 9 < n; i++)
        if (j[i] == 0xff && (j[i + 1] == 0xc0 || j[i + 1] == 0xc1 || j[i + 1] == 0xc2)) return i;
    return 0;
}

/* Offset just past the entropy-coded data of scan k (1 = the first): the next marker after that scan's SOS
 * segment (0xff followed by neither 0x00, a stuffed byte, nor a restart marker). 0 when there is no such scan. */
static size_t jpeg_scan_end(const uint8_t *j, size_t n, int k) {
    for (size_t i = 2; i + 3 < n; i++) {
        if (j[i] != 0xff || j[i + 1] != 0xda || --k > 0) continue;
        for (size_t e = i + 2 + ((size_t)j[i + 2] << 8 | j[i + 3]); e + 1 < n; e++)
            if (j[e] == 0xff && j[e + 1] != 0x00 && (j[e + 1] < 0xd0 || j[e + 1] > 0xd7)) return e;
        return 0;
    }
    return 0;
}

/* Offset of the k-th SOS marker (1 = the first), or 0. */
static size_t jpeg_sos(const uint8_t *j, size_t n, int k) {
    for (size_t i = 2; i + 1 < n; i++)
        if (j[i] == 0xff && j[i + 1] == 0xda && --k == 0) return i;
    return 0;
}

/* The first n bytes of a JPEG, then an EOI. */
static buf jpeg_cut(const buf *b, size_t n) {
    buf c = { 0 };
    buf_put(&c, b->p, n);
    buf_put(&c, "\xff\xd9", 2);
    return c;
}

/* Loads from memory and checks the failure contract: status want (or any failure if want is SA3D_OK... not
 * used), image zeroed, label in the message. Returns the status. */
static sa3d_status load_expect_fail(const uint8_t *d, size_t n, const char *label, sa3d_status want,
                                    int quiet) {
    sa3d_image img = { .w = 7, .h = 7, .rgb = (uint8_t *)1 };
    sa3d_error err = { 0 };
    sa3d_status s = sa3d_image_load_memory(&img, d, n, label, &err);
    if (s == SA3D_OK) {
        if (!quiet)
            T_FAIL("%s (%zu bytes): decoded as %d x %d, expected %s", label, n, img.w, img.h,
                   sa3d_status_name(want));
        sa3d_image_free(&img);
        return s;
    }
    if (s != want)
        T_FAIL("%s (%zu bytes): %s, expected %s: %s", label, n, sa3d_status_name(s), sa3d_status_name(want),
               err.msg);
    if (img.w || img.h || img.rgb) T_FAIL("%s: image not zeroed on failure", label);
    if (!strstr(err.msg, label)) T_FAIL("%s: message does not name it: %s", label, err.msg);
    return s;
}

/* ---- cases --------------------------------------------------------------------------------------------- */

/* 2.1 */
static void test_png_roundtrip(void) {
    sa3d_error err = { 0 };
    char path[128];
    snprintf(path, sizeof path, "%s/rt.png", tmp_dir);
    uint8_t *rgb = gradient_rgb(37, 23);
    T_OK(sa3d_png_write(path, rgb, 37, 23, 3, &err), &err);
    sa3d_image img;
    T_OK(sa3d_image_load(&img, path, &err), &err);
    T_CHECK(img.w == 37 && img.h == 23 && img.rgb && memcmp(img.rgb, rgb, 37 * 23 * 3) == 0);
    sa3d_image_free(&img);
    T_CHECK(img.rgb == NULL && img.w == 0);
    uint8_t grey[5 * 4];
    for (int i = 0; i < 20; i++) grey[i] = (uint8_t)(i * 13);
    T_OK(sa3d_png_write(path, grey, 5, 4, 1, &err), &err);
    T_OK(sa3d_image_load(&img, path, &err), &err);
    int bad = 0;
    for (int i = 0; i < 20 && img.rgb; i++)
        bad += img.rgb[i * 3] != grey[i] || img.rgb[i * 3 + 1] != grey[i] || img.rgb[i * 3 + 2] != grey[i];
    T_CHECK(img.w == 5 && img.h == 4 && bad == 0);
    sa3d_image_free(&img);
    T_STATUS(sa3d_png_write(path, grey, 5, 4, 2, &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_png_write(path, grey, 0, 4, 1, &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_png_write(path, NULL, 5, 4, 1, &err), SA3D_ERR_ARG, &err);
    remove(path);
    free(rgb);
}

/* 2.2 Colour types as Pillow's convert("RGB"): alpha and tRNS dropped, 16-bit high byte, grey replicated,
 * palette looked up, 1-bit grey expanded to 0/255, Adam7 interlace. */
static void test_png_variants(void) {
    sa3d_error err = { 0 };
    sa3d_image img;
    enum { W = 9, H = 7 };
    uint8_t rows[W * H * 8];
    /* RGBA 8 */
    for (int i = 0; i < W * H; i++) {
        rows[i * 4] = (uint8_t)i;
        rows[i * 4 + 1] = (uint8_t)(2 * i);
        rows[i * 4 + 2] = (uint8_t)(3 * i);
        rows[i * 4 + 3] = (uint8_t)(i * 4);
    }
    buf b = make_png(W, H, PNG_COLOR_TYPE_RGBA, 8, PNG_INTERLACE_NONE, rows, NULL, 0, NULL, 0, NULL);
    T_OK(sa3d_image_load_memory(&img, b.p, b.n, "rgba8", &err), &err);
    int bad = 0;
    for (int i = 0; i < W * H && img.rgb; i++)
        bad += img.rgb[i * 3] != (uint8_t)i || img.rgb[i * 3 + 1] != (uint8_t)(2 * i) ||
               img.rgb[i * 3 + 2] != (uint8_t)(3 * i);
    T_CHECK(img.w == W && img.h == H && bad == 0);
    sa3d_image_free(&img);
    free(b.p);
    /* RGB 16: sample v * 257 + 1 -> high byte v */
    for (int i = 0; i < W * H * 3; i++) {
        unsigned v = (unsigned)(i % 256) * 257u + 1u;
        if (v > 65535u) v = 65535u;
        rows[i * 2] = (uint8_t)(v >> 8);
        rows[i * 2 + 1] = (uint8_t)v;
    }
    b = make_png(W, H, PNG_COLOR_TYPE_RGB, 16, PNG_INTERLACE_NONE, rows, NULL, 0, NULL, 0, NULL);
    T_OK(sa3d_image_load_memory(&img, b.p, b.n, "rgb16", &err), &err);
    bad = 0;
    for (int i = 0; i < W * H * 3 && img.rgb; i++) bad += img.rgb[i] != rows[i * 2];
    T_CHECK(bad == 0);
    sa3d_image_free(&img);
    free(b.p);
    /* grey 1-bit: row bytes (W = 9 -> 2 bytes), alternating bits */
    memset(rows, 0, sizeof rows);
    for (int y = 0; y < H; y++) {
        rows[y * 2] = 0xaa;
        rows[y * 2 + 1] = 0x80;
    }
    b = make_png(W, H, PNG_COLOR_TYPE_GRAY, 1, PNG_INTERLACE_NONE, rows, NULL, 0, NULL, 0, NULL);
    T_OK(sa3d_image_load_memory(&img, b.p, b.n, "grey1", &err), &err);
    bad = 0;
    for (int y = 0; y < H && img.rgb; y++)
        for (int x = 0; x < W; x++) {
            uint8_t want = (x % 2 == 0) ? 255 : 0;
            for (int c = 0; c < 3; c++) bad += img.rgb[(y * W + x) * 3 + c] != want;
        }
    T_CHECK(bad == 0);
    sa3d_image_free(&img);
    free(b.p);
    /* grey 16-bit and grey+alpha 8 */
    for (int i = 0; i < W * H; i++) {
        rows[i * 2] = (uint8_t)(i * 3);
        rows[i * 2 + 1] = (uint8_t)(200 - i);
    }
    for (int t = 0; t < 2; t++) {
        b = make_png(W, H, t == 0 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_GRAY_ALPHA, t == 0 ? 16 : 8,
                     PNG_INTERLACE_NONE, rows, NULL, 0, NULL, 0, NULL);
        T_OK(sa3d_image_load_memory(&img, b.p, b.n, "grey16/ga8", &err), &err);
        bad = 0;
        for (int i = 0; i < W * H && img.rgb; i++)
            for (int c = 0; c < 3; c++) bad += img.rgb[i * 3 + c] != (uint8_t)(i * 3);
        T_CHECK(bad == 0);
        sa3d_image_free(&img);
        free(b.p);
    }
    /* palette 4-bit with tRNS, and grey 8 with a tRNS colour */
    png_color pal[16];
    uint8_t trns[16];
    for (int i = 0; i < 16; i++) {
        pal[i].red = (png_byte)(i * 16);
        pal[i].green = (png_byte)(255 - i);
        pal[i].blue = (png_byte)(i * 7);
        trns[i] = (uint8_t)(i * 10);
    }
    for (int y = 0; y < H; y++)
        for (int x = 0; x < 5; x++)
            rows[y * 5 + x] = (uint8_t)((((2 * x + y) % 16) << 4) | ((2 * x + 1 + y) % 16));
    b = make_png(W, H, PNG_COLOR_TYPE_PALETTE, 4, PNG_INTERLACE_NONE, rows, pal, 16, trns, 16, NULL);
    T_OK(sa3d_image_load_memory(&img, b.p, b.n, "palette4", &err), &err);
    bad = 0;
    for (int y = 0; y < H && img.rgb; y++)
        for (int x = 0; x < W; x++) {
            const png_color *c = &pal[(x + y) % 16];
            const uint8_t *q = img.rgb + (y * W + x) * 3;
            bad += q[0] != c->red || q[1] != c->green || q[2] != c->blue;
        }
    T_CHECK(bad == 0);
    sa3d_image_free(&img);
    free(b.p);
    png_color_16 tg = { 0 };
    tg.gray = 5;
    for (int i = 0; i < W * H; i++) rows[i] = (uint8_t)i;
    b = make_png(W, H, PNG_COLOR_TYPE_GRAY, 8, PNG_INTERLACE_NONE, rows, NULL, 0, NULL, 0, &tg);
    T_OK(sa3d_image_load_memory(&img, b.p, b.n, "grey8-trns", &err), &err);
    bad = 0;
    for (int i = 0; i < W * H && img.rgb; i++) bad += img.rgb[i * 3] != i || img.rgb[i * 3 + 2] != i;
    T_CHECK(bad == 0);
    sa3d_image_free(&img);
    free(b.p);
    /* Adam7 interlaced RGB */
    uint8_t *g = gradient_rgb(W, H);
    b = make_png(W, H, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_ADAM7, g, NULL, 0, NULL, 0, NULL);
    T_OK(sa3d_image_load_memory(&img, b.p, b.n, "adam7", &err), &err);
    T_CHECK(img.rgb && memcmp(img.rgb, g, W * H * 3) == 0);
    sa3d_image_free(&img);
    free(b.p);
    free(g);
}

/* 2.3 JPEG: RGB 4:4:4 at quality 100 decodes within a few levels; grey gives R = G = B; progressive decodes
 * like baseline; CMYK (written inverted, as Adobe does) converts with Pillow's formula. */
static void test_jpeg_decode(void) {
    sa3d_error err = { 0 };
    sa3d_image img, img2;
    enum { W = 24, H = 17 };
    uint8_t *g = gradient_rgb(W, H);
    buf b = make_jpeg(W, H, JCS_RGB, g, 100, 0);
    T_OK(sa3d_image_load_memory(&img, b.p, b.n, "rgb.jpg", &err), &err);
    int maxd = 0;
    for (int i = 0; i < W * H * 3 && img.rgb; i++) {
        int d = abs(img.rgb[i] - g[i]);
        if (d > maxd) maxd = d;
    }
    T_CHECK(img.w == W && img.h == H && maxd <= 4);
    buf bp = make_jpeg(W, H, JCS_RGB, g, 100, 1);
    T_OK(sa3d_image_load_memory(&img2, bp.p, bp.n, "progressive.jpg", &err), &err);
    maxd = 0;
    for (int i = 0; i < W * H * 3 && img.rgb && img2.rgb; i++) {
        int d = abs(img.rgb[i] - img2.rgb[i]);
        if (d > maxd) maxd = d;
    }
    T_CHECK(img2.w == W && maxd <= 2);
    sa3d_image_free(&img);
    sa3d_image_free(&img2);
    free(b.p);
    free(bp.p);
    uint8_t grey[W * H];
    for (int i = 0; i < W * H; i++) grey[i] = (uint8_t)(i % 200);
    b = make_jpeg(W, H, JCS_GRAYSCALE, grey, 95, 0);
    T_OK(sa3d_image_load_memory(&img, b.p, b.n, "grey.jpg", &err), &err);
    int bad = 0;
    for (int i = 0; i < W * H && img.rgb; i++)
        bad += img.rgb[i * 3] != img.rgb[i * 3 + 1] || img.rgb[i * 3] != img.rgb[i * 3 + 2];
    T_CHECK(img.w == W && bad == 0);
    sa3d_image_free(&img);
    free(b.p);
    /* CMYK: flat colour, stored inverted: stored = 255 - ink. Ink c=0, m=128, y=255, k=64 -> Pillow RGB
     * (255 - k) - ink * (255 - k) / 255: R = 191, G = 191 - 96 = 95 (rounded), B = 0. */
    uint8_t *cmyk = malloc(W * H * 4);
    for (int i = 0; i < W * H; i++) {
        cmyk[i * 4] = 255;
        cmyk[i * 4 + 1] = 127;
        cmyk[i * 4 + 2] = 0;
        cmyk[i * 4 + 3] = 191;
    }
    b = make_jpeg(W, H, JCS_CMYK, cmyk, 100, 0);
    T_OK(sa3d_image_load_memory(&img, b.p, b.n, "cmyk.jpg", &err), &err);
    if (img.rgb) {
        const uint8_t *q = img.rgb + (H / 2 * W + W / 2) * 3;
        if (abs(q[0] - 191) > 2 || abs(q[1] - 95) > 2 || q[2] > 2)
            T_FAIL("CMYK -> RGB %d %d %d", q[0], q[1], q[2]);
    }
    sa3d_image_free(&img);
    free(b.p);
    free(cmyk);
    free(g);
}

/* 2.4 Every truncation of valid PNG, baseline JPEG and progressive JPEG files is SA3D_ERR_FORMAT naming the
 * data, with the image zeroed and no leaked block. */
static void test_truncations(void) {
    uint8_t *g = gradient_rgb(20, 13);
    buf files[3] = {
        make_png(20, 13, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_NONE, g, NULL, 0, NULL, 0, NULL),
        make_jpeg(20, 13, JCS_RGB, g, 90, 0),
        make_jpeg(20, 13, JCS_RGB, g, 90, 1),
    };
    const char *names[3] = { "cut.png", "cut.jpg", "cut-progressive.jpg" };
    long live = sa3d_alloc_live_blocks();
    for (int f = 0; f < 3; f++) {
        sa3d_image img;
        sa3d_error err = { 0 };
        T_OK(sa3d_image_load_memory(&img, files[f].p, files[f].n, names[f], &err), &err);
        sa3d_image_free(&img);
        int fails = t_failures;
        for (size_t n = 0; n < files[f].n && t_failures - fails < 5; n++) {
            uint8_t *copy = malloc(n ? n : 1); /* exact-size copy so ASan sees any over-read */
            memcpy(copy, files[f].p, n);
            load_expect_fail(copy, n, names[f], SA3D_ERR_FORMAT, 0);
            free(copy);
        }
        /* cut files with an EOI marker appended: the entropy data ends early. A progressive file cut after a
         * whole scan is complete by the standard (coarser; test 2.12): only there may one decode, and then to
         * exactly the image of a cut at a scan boundary (the scan it fell in absent, or complete: the bytes cut
         * held no coefficient), never to a partly decoded scan. */
        size_t first_scan_end = f == 2 ? jpeg_scan_end(files[f].p, files[f].n, 1) : 0;
        sa3d_image at_scan[16];   /* [k]: cut at SOS k + 2 (scans k + 2.. absent); [n_at - 1]: the whole file */
        int n_at = 0, decoded = 0;
        for (int k = 2; f == 2 && n_at < 15 && jpeg_sos(files[f].p, files[f].n, k); k++) {
            buf c = jpeg_cut(&files[f], jpeg_sos(files[f].p, files[f].n, k));
            sa3d_error e = { 0 };
            T_OK(sa3d_image_load_memory(&at_scan[n_at++], c.p, c.n, "at-scan.jpg", &e), &e);
            free(c.p);
        }
        if (f == 2) {
            sa3d_error e = { 0 };
            T_OK(sa3d_image_load_memory(&at_scan[n_at++], files[f].p, files[f].n, "whole.jpg", &e), &e);
        }
        for (size_t n = 8; f > 0 && n + 2 < files[f].n; n += 7) {
            uint8_t *copy = malloc(n + 2);
            memcpy(copy, files[f].p, n);
            copy[n] = 0xff;
            copy[n + 1] = 0xd9;
            sa3d_image cut = { 0 };
            sa3d_error e = { 0 };
            if (f == 2 && n >= first_scan_end &&
                sa3d_image_load_memory(&cut, copy, n + 2, names[f], &e) == SA3D_OK) {
                int same = 0;
                for (int k = 0; k < n_at && !same; k++)
                    same = at_scan[k].rgb && cut.w == at_scan[k].w && cut.h == at_scan[k].h &&
                           !memcmp(cut.rgb, at_scan[k].rgb, (size_t)cut.w * cut.h * 3);
                if (!same) T_FAIL("%s cut at %zu + EOI: decoded to no scan boundary's image", names[f], n);
                decoded++;
                sa3d_image_free(&cut);
            } else {
                load_expect_fail(copy, n + 2, names[f], SA3D_ERR_FORMAT, 0);
            }
            free(copy);
        }
        for (int k = 0; k < n_at; k++) sa3d_image_free(&at_scan[k]);
        printf("       %s: %zu truncations rejected", names[f], files[f].n);
        if (f == 2) printf("; of the cuts + EOI, %d after a whole scan decoded", decoded);
        printf("\n");
    }
    T_CHECK(sa3d_alloc_live_blocks() == live);
    /* On disk: the message names the path */
    char path[128];
    snprintf(path, sizeof path, "%s/truncated.jpg", tmp_dir);
    FILE *fp = fopen(path, "wb");
    fwrite(files[1].p, 1, files[1].n / 2, fp);
    fclose(fp);
    sa3d_image img;
    sa3d_error err = { 0 };
    T_STATUS(sa3d_image_load(&img, path, &err), SA3D_ERR_FORMAT, &err);
    T_CONTAINS(err.msg, path);
    T_CHECK(img.rgb == NULL && img.w == 0 && img.h == 0);
    remove(path);
    for (int f = 0; f < 3; f++) free(files[f].p);
    free(g);
}

/* 2.5 */
static void test_wrong_magic(void) {
    static const uint8_t gif[] = "GIF89a\x01\x00\x01\x00";
    static const uint8_t bmp[] = "BM\x3a\x00\x00\x00";
    static const uint8_t almost_png[] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, 0x0a - 1, 0, 0 };
    static const uint8_t jpeg_soi_only[] = { 0xff, 0xd8, 0xff };
    load_expect_fail(gif, sizeof gif - 1, "image.gif", SA3D_ERR_FORMAT, 0);
    load_expect_fail(bmp, sizeof bmp - 1, "image.bmp", SA3D_ERR_FORMAT, 0);
    load_expect_fail(almost_png, sizeof almost_png, "almost.png", SA3D_ERR_FORMAT, 0);
    load_expect_fail(jpeg_soi_only, sizeof jpeg_soi_only, "soi.jpg", SA3D_ERR_FORMAT, 0);
    load_expect_fail(gif, 0, "empty.png", SA3D_ERR_FORMAT, 0);
    sa3d_image img;
    sa3d_error err = { 0 };
    T_STATUS(sa3d_image_load_memory(&img, gif, sizeof gif - 1, "x.gif", &err), SA3D_ERR_FORMAT, &err);
    T_CONTAINS(err.msg, "not a JPEG or PNG");
    T_CONTAINS(err.msg, "first bytes: 47 49 46 38 39 61");   /* "GIF89a", every byte shown (only the first was) */
    T_STATUS(sa3d_image_load_memory(&img, NULL, 0, NULL, &err), SA3D_ERR_FORMAT, &err);
    T_CONTAINS(err.msg, "<memory>");
    /* a file cut inside the signature is a truncated PNG or JPEG, not another format */
    T_STATUS(sa3d_image_load_memory(&img, almost_png, 7, "cut.png", &err), SA3D_ERR_FORMAT, &err);
    T_CONTAINS(err.msg, "cut.png: truncated PNG: the file ends after 7 bytes");
    T_STATUS(sa3d_image_load_memory(&img, jpeg_soi_only, 2, "cut.jpg", &err), SA3D_ERR_FORMAT, &err);
    T_CONTAINS(err.msg, "cut.jpg: truncated JPEG: the file ends after 2 bytes");
    T_STATUS(sa3d_image_load_memory(&img, jpeg_soi_only, 1, "cut1.jpg", &err), SA3D_ERR_FORMAT, &err);
    T_CONTAINS(err.msg, "truncated JPEG");
    T_STATUS(sa3d_image_load_memory(&img, bmp, 1, "b.bmp", &err), SA3D_ERR_FORMAT, &err);
    T_CONTAINS(err.msg, "not a JPEG or PNG");
    /* found by libFuzzer: an 84-byte PNG whose zTXt chunk declares 1.67 GB, which libpng allocated before reading
     * it; the chunk walk refuses it first, naming the chunk (fuzz corpus: png-chunk-length-1.6GB) */
    static const uint8_t huge_chunk[] = {
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00,
        0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x06, 0x01, 0x00, 0x00, 0x00, 0x00, 0xd6, 0x7e, 0xe2, 0x56, 0x00,
        0x00, 0x00, 0x14, 0x62, 0x4b, 0x47, 0x44, 0xff, 0xd7, 0x9f, 0x9d, 0x9c, 0x58, 0x0b, 0x5d, 0x00, 0x02,
        0xe7, 0x01, 0x0a, 0x0f, 0x44, 0xff, 0xd8, 0xff, 0x0d, 0x00, 0x00, 0x00, 0x00, 0x66, 0x63, 0x54, 0x4c,
        0x63, 0x7a, 0x54, 0x58, 0x74, 0x63, 0x63, 0x63, 0x63, 0x01, 0x3f, 0x10, 0x00, 0xae, 0x60, 0x82 };
    T_STATUS(sa3d_image_load_memory(&img, huge_chunk, sizeof huge_chunk, "text.png", &err), SA3D_ERR_FORMAT, &err);
    printf("       %s\n", err.msg);
    T_CONTAINS(err.msg, "text.png: truncated PNG: chunk 'zTXt' at byte 65 declares 1666468963 bytes of data; "
                           "the file has 11 after its header");
}

/* 2.6 Forged dimensions: above SA3D_IMAGE_MAX_SIDE, zero, and beyond 2^31, in PNG IHDR (CRC fixed) and JPEG
 * SOF; all rejected before the pixel buffer is allocated. */
static void test_forged_dims(void) {
    uint8_t *g = gradient_rgb(8, 8);
    buf p = make_png(8, 8, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_NONE, g, NULL, 0, NULL, 0, NULL);
    static const uint32_t dims[][2] = { { 20000, 8 },       { 8, SA3D_IMAGE_MAX_SIDE + 1 },
                                        { 0, 8 },           { 8, 0 },
                                        { 0x80000000u, 8 }, { 65535, 65535 } };
    sa3d_error err = { 0 };
    sa3d_image img;
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        forge_png_dims(p.p, dims[i][0], dims[i][1]);
        long live = sa3d_alloc_live_blocks();
        load_expect_fail(p.p, p.n, "forged.png", SA3D_ERR_FORMAT, 0);
        T_CHECK(sa3d_alloc_live_blocks() == live);
    }
    forge_png_dims(p.p, 20000, 8);
    T_STATUS(sa3d_image_load_memory(&img, p.p, p.n, "forged.png", &err), SA3D_ERR_FORMAT, &err);
    T_CONTAINS(err.msg, "20000");
    buf j = make_jpeg(8, 8, JCS_RGB, g, 90, 0);
    size_t sof = jpeg_sof(j.p, j.n);
    T_CHECK(sof > 0);
    static const uint16_t jd[][2] = { { 20000, 8 }, { 8, 65535 }, { 0, 8 }, { 8, 0 } };
    for (size_t i = 0; i < sizeof jd / sizeof jd[0] && sof; i++) {
        j.p[sof + 5] = (uint8_t)(jd[i][1] >> 8); /* height */
        j.p[sof + 6] = (uint8_t)jd[i][1];
        j.p[sof + 7] = (uint8_t)(jd[i][0] >> 8); /* width */
        j.p[sof + 8] = (uint8_t)jd[i][0];
        load_expect_fail(j.p, j.n, "forged.jpg", SA3D_ERR_FORMAT, 0);
    }
    /* progressive: the whole-image coefficient buffer (16000^2 * 3 * 2 bytes) is refused before allocation;
     * 2000 x 2000 fits but the data runs out: "premature end of data segment" */
    buf pj = make_jpeg(8, 8, JCS_RGB, g, 90, 1);
    size_t psof = jpeg_sof(pj.p, pj.n);
    T_CHECK(psof > 0 && pj.p[psof + 1] == 0xc2);
    static const uint16_t pd[][3] = { { 16000, 16000, SA3D_ERR_UNSUPPORTED },
                                      { 2000, 2000, SA3D_ERR_FORMAT } };
    for (size_t i = 0; i < 2 && psof; i++) {
        pj.p[psof + 5] = (uint8_t)(pd[i][1] >> 8);
        pj.p[psof + 6] = (uint8_t)pd[i][1];
        pj.p[psof + 7] = (uint8_t)(pd[i][0] >> 8);
        pj.p[psof + 8] = (uint8_t)pd[i][0];
        long live = sa3d_alloc_live_blocks();
        load_expect_fail(pj.p, pj.n, "forged-progressive.jpg", (sa3d_status)pd[i][2], 0);
        T_CHECK(sa3d_alloc_live_blocks() == live);
    }
    free(pj.p);
    free(p.p);
    free(j.p);
    free(g);
}

/* 2.7 */
static void test_missing_file(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/does-not-exist.png", tmp_dir);
    sa3d_image img = { .w = 3, .h = 3, .rgb = NULL };
    sa3d_error err = { 0 };
    T_STATUS(sa3d_image_load(&img, path, &err), SA3D_ERR_IO, &err);
    T_CONTAINS(err.msg, path);
    T_CHECK(img.w == 0 && img.h == 0 && img.rgb == NULL);
    T_STATUS(sa3d_image_load(&img, tmp_dir, &err), SA3D_ERR_IO, &err); /* a directory */
    T_CONTAINS(err.msg, tmp_dir);
    T_STATUS(sa3d_image_load(&img, NULL, &err), SA3D_ERR_ARG, &err);
}

static int dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    if (d) closedir(d);
    return n;
}

/* 2.8 A failed PNG write leaves no partial file and the old file intact: the directory does not exist, or
 * the file-size limit (RLIMIT_FSIZE, which binds root too) stops the write half-way. */
static void test_atomic_write(void) {
    sa3d_error err = { 0 };
    char sub[128], path[160];
    snprintf(sub, sizeof sub, "%s/atomic", tmp_dir);
    mkdir(sub, 0755);
    snprintf(path, sizeof path, "%s/missing-dir/out.png", tmp_dir);
    uint8_t *g = gradient_rgb(64, 64);
    T_STATUS(sa3d_png_write(path, g, 64, 64, 3, &err), SA3D_ERR_IO, &err);
    T_CONTAINS(err.msg, "out.png");
    snprintf(path, sizeof path, "%s/out.png", sub);
    FILE *f = fopen(path, "wb");
    fputs("old content", f);
    fclose(f);
    /* noise does not compress: the PNG is larger than the limit */
    uint8_t *noise = malloc(64 * 64 * 3);
    uint32_t s = 1;
    for (int i = 0; i < 64 * 64 * 3; i++) {
        s = s * 1664525u + 1013904223u;
        noise[i] = (uint8_t)(s >> 24);
    }
    struct rlimit old_lim, lim;
    getrlimit(RLIMIT_FSIZE, &old_lim);
    void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old_lim;
    lim.rlim_cur = 1000;
    if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
        sa3d_status st = sa3d_png_write(path, noise, 64, 64, 3, &err);
        setrlimit(RLIMIT_FSIZE, &old_lim);
        if (st != SA3D_ERR_IO) T_FAIL("write past RLIMIT_FSIZE: %s (%s)", sa3d_status_name(st), err.msg);
        T_CONTAINS(err.msg, "out.png");
    } else {
        T_FAIL("setrlimit failed");
    }
    signal(SIGXFSZ, old_sig);
    char text[32] = { 0 };
    f = fopen(path, "rb");
    if (f) {
        if (!fgets(text, sizeof text, f)) text[0] = 0;
        fclose(f);
    }
    T_CHECK(strcmp(text, "old content") == 0);
    T_CHECK(dir_entries(sub) == 1); /* no temp file left */
    /* and a good write replaces it */
    T_OK(sa3d_png_write(path, noise, 64, 64, 3, &err), &err);
    sa3d_image img;
    T_OK(sa3d_image_load(&img, path, &err), &err);
    T_CHECK(img.rgb && memcmp(img.rgb, noise, 64 * 64 * 3) == 0);
    sa3d_image_free(&img);
    T_CHECK(dir_entries(sub) == 1);
    /* what a SIGINT handler calls before the process ends: the temp files of writes in progress go, those of
     * finished writes are no longer listed (the finished file stays), and a later abort is still clean */
    sa3d_atomic_file a, b;
    char pa[200], pb[200];
    snprintf(pa, sizeof pa, "%s/a.bin", sub);
    snprintf(pb, sizeof pb, "%s/b.bin", sub);
    T_OK(sa3d_atomic_open(&a, pa, &err), &err);
    T_OK(sa3d_atomic_open(&b, pb, &err), &err);
    T_OK(sa3d_atomic_write(&a, "x", 1, &err), &err);
    T_OK(sa3d_atomic_write(&b, "y", 1, &err), &err);
    T_OK(sa3d_atomic_commit(&b, &err), &err);
    T_CHECK(dir_entries(sub) == 3);   /* out.png, a's temp file, b.bin */
    sa3d_atomic_remove_temps();
    T_CHECK(dir_entries(sub) == 2 && access(pb, F_OK) == 0);
    sa3d_atomic_abort(&a);
    T_CHECK(dir_entries(sub) == 2);
    remove(pb);
    remove(path);
    rmdir(sub);
    free(noise);
    free(g);
}

/* 2.9 */
static void test_flip(void) {
    sa3d_image img = { .w = 5, .h = 2, .rgb = malloc(5 * 2 * 3) };
    for (int i = 0; i < 30; i++) img.rgb[i] = (uint8_t)i;
    sa3d_image_flip_lr(&img);
    int bad = 0;
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 5; x++)
            for (int c = 0; c < 3; c++)
                bad += img.rgb[(y * 5 + x) * 3 + c] != (uint8_t)((y * 5 + 4 - x) * 3 + c);
    T_CHECK(bad == 0);
    sa3d_image_flip_lr(&img);
    for (int i = 0; i < 30; i++) bad += img.rgb[i] != i;
    T_CHECK(bad == 0);
    sa3d_image one = { .w = 1, .h = 1, .rgb = img.rgb };
    sa3d_image_flip_lr(&one);
    sa3d_image_flip_lr(NULL);
    free(img.rgb);
}

/* 2.10 Allocation N fails for N = 1, 2, ...: a clean SA3D_ERR_NOMEM, no leak, until it succeeds. */
static void test_alloc_faults(void) {
    uint8_t *g = gradient_rgb(16, 16);
    buf files[2] = { make_png(16, 16, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_NONE, g, NULL, 0, NULL, 0, NULL),
                     make_jpeg(16, 16, JCS_RGB, g, 90, 0) };
    for (int f = 0; f < 3; f++) {
        long live = sa3d_alloc_live_blocks();
        int done = 0;
        for (long n = 1; n < 50 && !done; n++) {
            sa3d_image img;
            sa3d_error err = { 0 };
            char path[128];
            snprintf(path, sizeof path, "%s/fault.png", tmp_dir);
            sa3d_alloc_fail_after(n);
            sa3d_status s = f < 2 ? sa3d_image_load_memory(&img, files[f].p, files[f].n, "fault", &err)
                                  : sa3d_png_write(path, g, 16, 16, 3, &err);
            sa3d_alloc_fail_after(0);
            if (s == SA3D_OK) {
                done = 1;
                if (f < 2) sa3d_image_free(&img);
            } else {
                if (s != SA3D_ERR_NOMEM) T_FAIL("fault %ld: %s: %s", n, sa3d_status_name(s), err.msg);
                if (f < 2 && (img.rgb || img.w)) T_FAIL("fault %ld: image not zeroed", n);
                if (f == 2 && sa3d_file_exists(path)) T_FAIL("fault %ld: file written", n);
            }
            if (sa3d_alloc_live_blocks() != live)
                T_FAIL("fault %ld: leaked %ld blocks", n, sa3d_alloc_live_blocks() - live);
            remove(path);
        }
        T_CHECK(done);
    }
    free(files[0].p);
    free(files[1].p);
    free(g);
}

/* 2.11 Corrupt bytes: every byte of small PNG and JPEG files replaced by 0x00 and 0xff in turn. PNG must
 * fail (CRC or zlib check) anywhere past the signature except in bytes libpng ignores; JPEG may decode (as
 * Pillow does on damaged entropy data) or fail. Either way: no crash, a valid image or a zeroed one. */
static void test_corrupt_bytes(void) {
    uint8_t *g = gradient_rgb(12, 9);
    buf files[2] = { make_png(12, 9, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_NONE, g, NULL, 0, NULL, 0, NULL),
                     make_jpeg(12, 9, JCS_RGB, g, 80, 0) };
    long live = sa3d_alloc_live_blocks();
    int png_ok = 0, png_fail = 0, jpg_ok = 0, jpg_fail = 0;
    for (int f = 0; f < 2; f++) {
        uint8_t *copy = malloc(files[f].n);
        for (size_t i = 0; i < files[f].n; i++)
            for (int v = 0; v < 2; v++) {
                memcpy(copy, files[f].p, files[f].n);
                uint8_t nv = v ? 0xff : 0x00;
                if (copy[i] == nv) continue;
                copy[i] = nv;
                sa3d_image img;
                sa3d_error err = { 0 };
                sa3d_status s = sa3d_image_load_memory(&img, copy, files[f].n, "corrupt", &err);
                if (s == SA3D_OK) {
                    if (img.w < 1 || img.h < 1 || !img.rgb) T_FAIL("OK with an empty image at byte %zu", i);
                    sa3d_image_free(&img);
                    *(f ? &jpg_ok : &png_ok) += 1;
                } else {
                    if (img.w || img.h || img.rgb) T_FAIL("failed but image not zeroed at byte %zu", i);
                    if (!strstr(err.msg, "corrupt")) T_FAIL("message without the label: %s", err.msg);
                    *(f ? &jpg_fail : &png_fail) += 1;
                }
            }
        free(copy);
    }
    printf("       corrupt PNG: %d rejected, %d decoded; corrupt JPEG: %d rejected, %d decoded\n", png_fail,
           png_ok, jpg_fail, jpg_ok);
    T_CHECK(sa3d_alloc_live_blocks() == live);
    T_CHECK(png_fail > png_ok);
    free(files[0].p);
    free(files[1].p);
    free(g);
}

/* 2.12 Multi-scan JPEGs as the standard allows them and as an attacker writes them: a progressive file cut after
 * any whole scan (the last scans missing) decodes, coarser, as libjpeg and Pillow decode it; a file, progressive
 * or sequential, in which no scan holds some component (cut before that component's first scan; libjpeg's encoder
 * refuses to write one) is FORMAT naming the component; a JFIF revision note is no damage; SA3D_JPEG_MAX_SCANS
 * scans decode, one more (the last scan repeated) is UNSUPPORTED before the decoder spends a pass on each;
 * damaged entropy data is decoded and named in img.warning. */
static void test_progressive_scans(void) {
    enum { W = 24, H = 17 };
    uint8_t *g = gradient_rgb(W, H);
    sa3d_image img;
    sa3d_error err = { 0 };
    buf full = make_jpeg(W, H, JCS_RGB, g, 90, 1);
    int n_scans = 0;
    while (jpeg_sos(full.p, full.n, n_scans + 1)) n_scans++;
    T_CHECK(n_scans == 10);   /* jpeg_simple_progression for 3 components */
    T_OK(sa3d_image_load_memory(&img, full.p, full.n, "full.jpg", &err), &err);
    T_CHECK(!img.warning[0]);
    sa3d_image whole = img;
    const uint8_t *want = whole.rgb;
    for (int k = 2; k <= n_scans; k++) {   /* scans k.. missing */
        buf c = jpeg_cut(&full, jpeg_sos(full.p, full.n, k));
        sa3d_image part;
        T_OK(sa3d_image_load_memory(&part, c.p, c.n, "cut.jpg", &err), &err);
        T_CHECK(part.w == W && part.h == H && part.rgb);
        if (k == n_scans) {   /* only the last refinement missing: within a few levels of the whole */
            int maxd = 0;
            for (int i = 0; i < W * H * 3 && part.rgb && want; i++)
                maxd = abs(part.rgb[i] - want[i]) > maxd ? abs(part.rgb[i] - want[i]) : maxd;
            T_CHECK(maxd <= 8);
        }
        sa3d_image_free(&part);
        free(c.p);
    }
    buf c = jpeg_cut(&full, jpeg_sos(full.p, full.n, 1));   /* no scan at all */
    load_expect_fail(c.p, c.n, "noscan.jpg", SA3D_ERR_FORMAT, 0);
    free(c.p);

    /* one component after the other: DC, then AC, of Y, Cb, Cr */
    jpeg_scan_info seq[6] = { { 1, { 0 }, 0, 0, 0, 0 }, { 1, { 0 }, 1, 63, 0, 0 }, { 1, { 1 }, 0, 0, 0, 0 },
                              { 1, { 1 }, 1, 63, 0, 0 }, { 1, { 2 }, 0, 0, 0, 0 }, { 1, { 2 }, 1, 63, 0, 0 } };
    buf bycomp = make_jpeg_script(W, H, JCS_RGB, g, 90, 0, seq, 6);
    T_OK(sa3d_image_load_memory(&img, bycomp.p, bycomp.n, "bycomp.jpg", &err), &err);
    sa3d_image_free(&img);
    for (int comp = 1; comp <= 2; comp++) {   /* cut at that component's DC scan */
        c = jpeg_cut(&bycomp, jpeg_sos(bycomp.p, bycomp.n, 2 * comp + 1));
        T_STATUS(sa3d_image_load_memory(&img, c.p, c.n, "nodc.jpg", &err), SA3D_ERR_FORMAT, &err);
        char want_msg[64];
        snprintf(want_msg, sizeof want_msg, "nodc.jpg: truncated JPEG: no scan holds component %d", comp);
        T_CONTAINS(err.msg, want_msg);
        T_CHECK(!img.rgb && !img.w);
        free(c.p);
    }

    /* the same in a sequential file of one scan per component (a baseline multi-scan file) */
    jpeg_scan_info seq3[3] = { { 1, { 0 }, 0, 63, 0, 0 }, { 1, { 1 }, 0, 63, 0, 0 }, { 1, { 2 }, 0, 63, 0, 0 } };
    buf seqf = make_jpeg_script(W, H, JCS_RGB, g, 90, 0, seq3, 3);
    T_OK(sa3d_image_load_memory(&img, seqf.p, seqf.n, "seq.jpg", &err), &err);
    sa3d_image_free(&img);
    c = jpeg_cut(&seqf, jpeg_sos(seqf.p, seqf.n, 3));
    T_STATUS(sa3d_image_load_memory(&img, c.p, c.n, "seqcut.jpg", &err), SA3D_ERR_FORMAT, &err);
    T_CONTAINS(err.msg, "seqcut.jpg: truncated JPEG: no scan holds component 2");
    free(c.p);
    free(seqf.p);

    /* the last scan (Cr's AC coefficients, to full precision) repeated: legal, each repeat a pass */
    size_t last = jpeg_sos(bycomp.p, bycomp.n, 6);
    for (int total = SA3D_JPEG_MAX_SCANS; total <= SA3D_JPEG_MAX_SCANS + 1; total++) {
        buf many = { 0 };
        buf_put(&many, bycomp.p, bycomp.n - 2);
        for (int r = 6; r < total; r++) buf_put(&many, bycomp.p + last, bycomp.n - 2 - last);
        buf_put(&many, "\xff\xd9", 2);
        sa3d_status s = sa3d_image_load_memory(&img, many.p, many.n, "many.jpg", &err);
        if (total == SA3D_JPEG_MAX_SCANS) {
            T_OK(s, &err);
            sa3d_image_free(&img);
        } else {
            T_STATUS(s, SA3D_ERR_UNSUPPORTED, &err);
            char want_msg[64];
            snprintf(want_msg, sizeof want_msg, "many.jpg: JPEG of more than %d scans", SA3D_JPEG_MAX_SCANS);
            T_CONTAINS(err.msg, want_msg);
        }
        free(many.p);
    }

    /* damaged entropy data in a baseline file: 16 one bits (ff 00 ff 00, stuffed), longer than any Huffman
     * code, written over the middle of the scan */
    buf base = make_jpeg(W, H, JCS_RGB, g, 90, 0);
    size_t data = jpeg_sos(base.p, base.n, 1) + 14, warned = 0, tried = 0;
    for (size_t i = data; i + 8 < base.n; i += 9, tried++) {
        uint8_t keep[4];
        memcpy(keep, base.p + i, 4);
        memcpy(base.p + i, "\xff\x00\xff\x00", 4);
        if (sa3d_image_load_memory(&img, base.p, base.n, "damaged.jpg", &err) == SA3D_OK) {
            warned += img.warning[0] != 0;
            if (img.warning[0] && !strstr(img.warning, "damaged.jpg: damaged JPEG data decoded as libjpeg repairs it"))
                T_FAIL("warning: %s", img.warning);
            sa3d_image_free(&img);
        }
        memcpy(base.p + i, keep, 4);
    }
    /* libjpeg's notes on metadata (here an unknown JFIF revision) are not damage: no warning */
    T_CHECK(!memcmp(base.p + 6, "JFIF", 4));
    base.p[11] = 2;
    T_OK(sa3d_image_load_memory(&img, base.p, base.n, "jfif2.jpg", &err), &err);
    T_CHECK(img.rgb && !img.warning[0]);
    sa3d_image_free(&img);
    printf("       %d scans; cuts after scans 1..9 decode; %d scans decode, %d refused; %zu of %zu damaged files "
           "named\n", n_scans, SA3D_JPEG_MAX_SCANS, SA3D_JPEG_MAX_SCANS + 1, warned, tried);
    T_CHECK(warned > 0);
    free(base.p);
    free(bycomp.p);
    sa3d_image_free(&whole);
    free(full.p);
    free(g);
}

int main(int argc, char **argv) {
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/sa3d_image_XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    (void)t_fixtures_root; /* t.h helper this program does not need */
    static const t_case cases[] = {
        { "2.1", "PNG write + read round trip (RGB, grey), bad arguments", test_png_roundtrip },
        { "2.2", "PNG colour types, 16-bit, palette, tRNS, interlace", test_png_variants },
        { "2.3", "JPEG RGB, progressive, grey, CMYK", test_jpeg_decode },
        { "2.4", "truncations FORMAT naming the file; cut + EOI too, or a scan boundary's image", test_truncations },
        { "2.5", "wrong magic and empty input", test_wrong_magic },
        { "2.6", "forged huge or zero dimensions", test_forged_dims },
        { "2.7", "missing file and directory", test_missing_file },
        { "2.8", "atomic PNG write leaves no partial file", test_atomic_write },
        { "2.9", "left-right flip", test_flip },
        { "2.10", "allocation faults", test_alloc_faults },
        { "2.11", "corrupt bytes never crash", test_corrupt_bytes },
        { "2.12", "progressive: missing last scans, no DC, scan limit; damage named", test_progressive_scans },
    };
    int rc = t_run(cases, (int)(sizeof cases / sizeof cases[0]), argc, argv);
    rmdir(tmp_dir);
    return rc;
}
