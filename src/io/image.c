/* Image files: JPEG decoding through libjpeg-turbo and PNG decoding/encoding through libpng, both behind
 * setjmp error handlers so a corrupt or truncated file becomes SA3D_ERR_FORMAT naming the file (the
 * libraries' default handlers print and exit). Output is 8-bit RGB [h][w][3] matching Pillow's
 * convert("RGB"); PNG and JPEG output go through sa3d_atomic_* so a failed write leaves no partial file.
 * Also the left-right mirror. */
#include <limits.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include "base/base.h"
#include "semalign3d/image.h"

/* Progressive and other multi-scan JPEGs keep every DCT coefficient of the image (2 bytes per sample, for
 * all components) until the last scan. libjpeg-turbo 2.1 ignores max_memory_to_use in its default memory
 * manager, so the size is checked here before jpeg_start_decompress allocates it: a forged header cannot
 * claim gigabytes. 512 MiB allows e.g. 9000 x 9000 4:4:4 or 16384 x 10000 4:2:0. */
#define JPEG_COEF_LIMIT ((size_t)512 << 20)
/* Scans x blocks of a multi-scan JPEG: a small file can repeat a scan over a large image (500 scans over
 * 16384^2 took 132 s). 2^27 lets libjpeg's 10-scan progression cover a 16384^2 4:4:4 image (12.6 M blocks) and
 * costs at most about 8 s. */
#define JPEG_BLOCK_PASSES ((size_t)1 << 27)
#define JPEG_MEMORY_LIMIT \
    ((long)1 << 30) /* also set as max_memory_to_use, for libjpeg builds that honour it */

static const uint8_t png_magic[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };

void sa3d_image_free(sa3d_image *img) {
    if (!img) return;
    sa3d_free(img->rgb);
    memset(img, 0, sizeof *img);
}

void sa3d_image_flip_lr(sa3d_image *img) {
    if (!img || !img->rgb || img->w < 2) return;
    size_t w = (size_t)img->w;
    for (size_t y = 0; y < (size_t)img->h; y++) {
        uint8_t *row = img->rgb + y * w * 3;
        for (size_t a = 0, b = w - 1; a < b; a++, b--) {
            for (int c = 0; c < 3; c++) {
                uint8_t t = row[a * 3 + c];
                row[a * 3 + c] = row[b * 3 + c];
                row[b * 3 + c] = t;
            }
        }
    }
}

/* Allocates the [h][w][3] output after checking both sides are in (0, SA3D_IMAGE_MAX_SIDE]. */
static sa3d_status alloc_rgb(uint8_t **out, long w, long h, const char *label, const char *kind,
                             sa3d_error *err) {
    *out = NULL;
    if (w <= 0 || h <= 0 || w > SA3D_IMAGE_MAX_SIDE || h > SA3D_IMAGE_MAX_SIDE)
        return sa3d_fail(err, SA3D_ERR_FORMAT,
                         "%s: %s header: image is %ld x %ld; each side must be in [1, %d]", label, kind, w, h,
                         SA3D_IMAGE_MAX_SIDE);
    size_t n;
    if (!sa3d_mul3_ok((size_t)w, (size_t)h, 3, &n))
        return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: %ld x %ld RGB image size overflows", label, w, h);
    *out = sa3d_malloc(n);
    if (!*out)
        return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: cannot allocate %zu bytes for the pixels", label, n);
    return SA3D_OK;
}

/* ---- JPEG ---------------------------------------------------------------------------------------------- */

typedef struct jpeg_state {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_mgr mgr; /* first-class member: cinfo.err points here */
    struct jpeg_progress_mgr progress;
    jmp_buf jmp;
    char msg[JMSG_LENGTH_MAX];
    char first_warning[JMSG_LENGTH_MAX];
    int msg_code;              /* libjpeg's, or MSG_TOO_MANY_SCANS */
    unsigned comps_seen;       /* bit c: component c was in a scan read so far */
    size_t blocks;             /* DCT blocks of a multi-scan image (every scan passes over them), else 0 */
    uint8_t *rgb; /* [h][w][3] output being filled */
    uint8_t *row; /* [w][4] CMYK scanline */
} jpeg_state;

static jpeg_state *jpeg_state_of(j_common_ptr c) {
    return (jpeg_state *)((char *)c->err - offsetof(jpeg_state, mgr));
}

static void jpeg_on_error(j_common_ptr c) {
    jpeg_state *st = jpeg_state_of(c);
    st->msg_code = c->err->msg_code;
    c->err->format_message(c, st->msg);
    longjmp(st->jmp, 1);
}

/* Warnings (level -1) about damaged entropy data are tolerated as Pillow tolerates them, except the two that
 * mean the data ran out: "Premature end of JPEG file" (the file is cut) and "premature end of data segment"
 * (a marker, such as an EOI appended to a cut file, came before the image data was complete). libjpeg would
 * fill the rest with grey; here they are errors. Trace messages (level >= 0) are dropped; nothing prints. */
static void jpeg_on_message(j_common_ptr c, int level) {
    if (level < 0) {
        int code = c->err->msg_code;
        if (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER) jpeg_on_error(c);
        /* counted: what libjpeg repaired in the image data; not its notes on metadata (a JFIF revision, a
         * thumbnail size, an ICC profile) or on junk bytes between segments, which leave the pixels exact */
        if (code == JWRN_HUFF_BAD_CODE || code == JWRN_ARITH_BAD_CODE || code == JWRN_MUST_RESYNC ||
            code == JWRN_NOT_SEQUENTIAL || code == JWRN_BOGUS_PROGRESSION)
            if (c->err->num_warnings++ == 0) c->err->format_message(c, jpeg_state_of(c)->first_warning);
    }
}

/* Bit c set for each component of the scan whose header was read last. */
static unsigned scan_components(j_decompress_ptr d) {
    unsigned bits = 0;
    for (int i = 0; i < d->comps_in_scan; i++) bits |= 1u << d->cur_comp_info[i]->component_index;
    return bits;
}

/* Called by libjpeg as it consumes input (before each step, so after each scan header): notes the scan's
 * components; stops a file of more than SA3D_JPEG_MAX_SCANS scans (djpeg's -maxscans check; repeated scans are
 * legal and each costs a pass over the whole coefficient buffer). */
#define MSG_TOO_MANY_SCANS (-1)
static void jpeg_on_progress(j_common_ptr c) {
    jpeg_state *st = jpeg_state_of(c);
    int scan = ((j_decompress_ptr)c)->input_scan_number;
    st->comps_seen |= scan_components((j_decompress_ptr)c);
    if (scan <= SA3D_JPEG_MAX_SCANS && (size_t)scan * st->blocks <= JPEG_BLOCK_PASSES) return;
    st->msg_code = MSG_TOO_MANY_SCANS;
    if (scan > SA3D_JPEG_MAX_SCANS) snprintf(st->msg, sizeof st->msg, "more than %d scans", SA3D_JPEG_MAX_SCANS);
    else snprintf(st->msg, sizeof st->msg, "%d scans over %zu blocks, more than %zu block passes", scan, st->blocks,
                  JPEG_BLOCK_PASSES);
    longjmp(st->jmp, 1);
}

static void jpeg_no_output(j_common_ptr c) { (void)c; }

/* Pillow's cmyk2rgb on Adobe-inverted data ("CMYK;I"): channel = (255 - k) - (c * (255 - k)) / 255 with
 * Pillow's rounding division by 255. libjpeg returns the stored (inverted) bytes; invert them first. */
static uint8_t cmyk_channel(uint8_t stored_c, uint8_t stored_k) {
    int c = 255 - stored_c, nk = stored_k; /* nk = 255 - k where k = 255 - stored_k */
    int t = c * nk + 128;
    int v = nk - (((t >> 8) + t) >> 8);
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Runs the decoder; the only function calling setjmp. st is not modified here except through libjpeg and
 * its own members, so no local needs to survive the longjmp. */
static sa3d_status jpeg_run(jpeg_state *st, const uint8_t *buf, size_t len, const char *label, int *w_out,
                            int *h_out, sa3d_error *err) {
    struct jpeg_decompress_struct *ci = &st->cinfo;
    ci->err = jpeg_std_error(&st->mgr);
    st->mgr.error_exit = jpeg_on_error;
    st->mgr.emit_message = jpeg_on_message;
    st->mgr.output_message = jpeg_no_output;
    st->progress.progress_monitor = jpeg_on_progress;
    if (setjmp(st->jmp)) {
        if (st->msg_code == MSG_TOO_MANY_SCANS)
            return sa3d_fail(err, SA3D_ERR_UNSUPPORTED, "%s: JPEG of %s (a progressive file has about 10 scans; "
                             "each costs a pass over the image)", label, st->msg);
        if (st->msg_code == JERR_NO_BACKING_STORE || st->msg_code == JERR_OUT_OF_MEMORY)
            return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: JPEG decoder out of memory (limit %ld MiB): %s", label,
                             JPEG_MEMORY_LIMIT >> 20, st->msg);
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: corrupt or truncated JPEG: %s", label, st->msg);
    }
    jpeg_create_decompress(ci);
    ci->progress = &st->progress;
    ci->mem->max_memory_to_use = JPEG_MEMORY_LIMIT;
    jpeg_mem_src(ci, buf, (unsigned long)len);
    jpeg_read_header(ci, TRUE);
    st->comps_seen = scan_components(ci);   /* the first scan's header came with the frame's */
    long w = (long)ci->image_width, h = (long)ci->image_height;
    int cmyk = ci->jpeg_color_space == JCS_CMYK || ci->jpeg_color_space == JCS_YCCK;
    ci->out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    int sides_ok = w > 0 && h > 0 && w <= SA3D_IMAGE_MAX_SIDE && h <= SA3D_IMAGE_MAX_SIDE;   /* else alloc_rgb says */
    if (sides_ok && (ci->progressive_mode || ci->comps_in_scan < ci->num_components)) {   /* before the pixels */
        /* whole-image coefficient buffer: blocks of each component, padded to its sampling factors */
        size_t blocks = 0;
        for (int c = 0; c < ci->num_components; c++) {
            const jpeg_component_info *comp = &ci->comp_info[c];
            size_t bw = comp->width_in_blocks, bh = comp->height_in_blocks;
            size_t hs = (size_t)comp->h_samp_factor, vs = (size_t)comp->v_samp_factor;
            blocks += (bw + hs - 1) / hs * hs * ((bh + vs - 1) / vs * vs);
        }
        size_t need = blocks * DCTSIZE2 * sizeof(JCOEF);
        if (need > JPEG_COEF_LIMIT)
            return sa3d_fail(err, SA3D_ERR_UNSUPPORTED,
                             "%s: multi-scan JPEG of %ld x %ld needs %zu MiB of "
                             "coefficient memory, more than the %zu MiB allowed",
                             label, w, h, need >> 20, JPEG_COEF_LIMIT >> 20);
        st->blocks = blocks;   /* each scan is a pass over them: the monitor bounds scans x blocks */
    }
    sa3d_status s = alloc_rgb(&st->rgb, w, h, label, "JPEG", err);
    if (s != SA3D_OK) return s;
    if (cmyk) {
        st->row = sa3d_malloc((size_t)w * 4);
        if (!st->row) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: cannot allocate a JPEG scanline", label);
    }
    jpeg_start_decompress(ci);   /* a multi-scan file is read to its end here, the monitor seeing every scan */
    for (int c = 0; c < ci->num_components; c++)
        if (!(st->comps_seen >> c & 1u))   /* a file cut before that component's scans: all grey */
            return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: truncated JPEG: no scan holds component %d", label, c);
    if ((long)ci->output_width != w || (long)ci->output_height != h ||
        ci->output_components != (cmyk ? 4 : 3))
        return sa3d_fail(err, SA3D_ERR_UNSUPPORTED,
                         "%s: JPEG: decoder output %u x %u x %d, expected %ld x %ld x %d", label,
                         ci->output_width, ci->output_height, ci->output_components, w, h, cmyk ? 4 : 3);
    while (ci->output_scanline < ci->output_height) {
        size_t y = ci->output_scanline;
        uint8_t *dst = st->rgb + y * (size_t)w * 3;
        JSAMPROW rows[1] = { cmyk ? st->row : dst };
        if (jpeg_read_scanlines(ci, rows, 1) != 1)
            return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: truncated JPEG: no data for row %zu", label, y);
        if (cmyk) {
            for (long x = 0; x < w; x++) {
                const uint8_t *p = st->row + x * 4;
                for (int c = 0; c < 3; c++) dst[x * 3 + c] = cmyk_channel(p[c], p[3]);
            }
        }
    }
    if (ci->progressive_mode && ci->coef_bits) {
        /* The standard lets a progressive file stop before every coefficient has all its bits (jpegtran -scans
         * writes such files; libjpeg and Pillow decode them coarser), but libjpeg's encoder insists on some DC
         * data for every component (jcmaster.c validate_script): a component without any (coef_bits -1) is a
         * file cut before its first scan, all grey. */
        for (int c = 0; c < ci->num_components; c++)
            if (ci->coef_bits[c][0] < 0)
                return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: progressive JPEG: no scan holds component %d's DC "
                                 "coefficients (a file cut before them)", label, c);
    }
    jpeg_finish_decompress(ci); /* reads up to EOI: a missing tail is JWRN_JPEG_EOF, made fatal above */
    *w_out = (int)w;
    *h_out = (int)h;
    return SA3D_OK;
}

static sa3d_status decode_jpeg(sa3d_image *img, const uint8_t *buf, size_t len, const char *label,
                               sa3d_error *err) {
    jpeg_state *st = sa3d_calloc(1, sizeof *st);
    if (!st) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: cannot allocate the JPEG decoder", label);
    int w = 0, h = 0;
    sa3d_status s = jpeg_run(st, buf, len, label, &w, &h, err);
    jpeg_destroy_decompress(&st->cinfo); /* safe on the zeroed struct if creation failed */
    sa3d_free(st->row);
    if (s == SA3D_OK) {
        img->w = w;
        img->h = h;
        img->rgb = st->rgb;
        long n = st->mgr.num_warnings;
        if (n > 0)
            snprintf(img->warning, sizeof img->warning, "%s: damaged JPEG data decoded as libjpeg repairs it (%ld "
                     "warning%s; first: %.80s)", label, n, n == 1 ? "" : "s", st->first_warning);
    } else {
        sa3d_free(st->rgb);
    }
    sa3d_free(st);
    return s;
}

/* ---- PNG ----------------------------------------------------------------------------------------------- */

typedef struct png_state {
    const uint8_t *buf;
    size_t len, pos;
    char msg[256];
    uint8_t *rgb;
    png_structp png;
    png_infop info;
} png_state;

static void png_on_error(png_structp png, png_const_charp msg) {
    png_state *st = png_get_error_ptr(png);
    snprintf(st->msg, sizeof st->msg, "%s", msg ? msg : "unknown libpng error");
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void png_read_mem(png_structp png, png_bytep out, size_t n) {
    png_state *st = png_get_io_ptr(png);
    if (n > st->len - st->pos) {   /* (how much is missing is unknown: libpng asks for one piece at a time) */
        snprintf(st->msg, sizeof st->msg, "file ends at byte %zu, inside the image data or a chunk", st->len);
        png_longjmp(png, 2);
    }
    memcpy(out, st->buf + st->pos, n);
    st->pos += n;
}

/* libpng allocates a chunk's declared length before it reads the chunk (a text chunk claiming 1.67 GB in an
 * 84-byte file: 1.67 GB), and inflates compressed text and ICC profiles without bound unless told: so the chunk
 * lengths are checked against the bytes there before libpng runs, and libpng's per-chunk allocations and
 * ancillary chunk count are capped (we read none of those chunks; above the caps they are skipped). */
#define PNG_CHUNK_MALLOC_MAX 8000000
#define PNG_CHUNK_CACHE_MAX 1000

static sa3d_status png_check_chunks(const uint8_t *buf, size_t len, const char *label, sa3d_error *err) {
    for (size_t pos = 8; len - pos >= 8;) {   /* after the signature: [length][type][data][crc] */
        const uint8_t *c = buf + pos;
        uint32_t n = (uint32_t)c[0] << 24 | (uint32_t)c[1] << 16 | (uint32_t)c[2] << 8 | c[3];
        char type[5];
        for (int i = 0; i < 4; i++) type[i] = c[4 + i] >= 0x20 && c[4 + i] < 0x7f ? (char)c[4 + i] : '?';
        type[4] = '\0';
        if ((uint64_t)n + 12 > len - pos)
            return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: truncated PNG: chunk '%s' at byte %zu declares %lu bytes of "
                             "data; the file has %zu after its header", label, type, pos, (unsigned long)n,
                             len - pos - 8);
        if (!memcmp(type, "IEND", 4)) break;
        pos += 12 + (size_t)n;
    }
    return SA3D_OK;   /* a file that ends between chunks or without IEND: libpng says so */
}

static sa3d_status png_run(png_state *st, const char *label, int *w_out, int *h_out, sa3d_error *err) {
    sa3d_status cs = png_check_chunks(st->buf, st->len, label, err);
    if (cs) return cs;
    png_set_chunk_malloc_max(st->png, PNG_CHUNK_MALLOC_MAX);
    png_set_chunk_cache_max(st->png, PNG_CHUNK_CACHE_MAX);
    int jumped = setjmp(png_jmpbuf(st->png));
    if (jumped == 2) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: truncated PNG: %s", label, st->msg);
    if (jumped) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: corrupt PNG: %s", label, st->msg);
    png_set_read_fn(st->png, st, png_read_mem);
    png_read_info(st->png, st->info);
    png_uint_32 w = png_get_image_width(st->png, st->info), h = png_get_image_height(st->png, st->info);
    int depth = png_get_bit_depth(st->png, st->info), type = png_get_color_type(st->png, st->info);
    sa3d_status s = alloc_rgb(&st->rgb, (long)w, (long)h, label, "PNG", err);
    if (s != SA3D_OK) return s;
    /* Transforms to 8-bit RGB without alpha, as Pillow's convert("RGB"): palette and low-bit grey expand,
     * 16-bit keeps the high byte (Pillow's "RGB;16B" raw mode), alpha/tRNS go, grey is replicated. */
    if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(st->png);
    if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(st->png);
    if (depth == 16) png_set_strip_16(st->png);
    png_set_strip_alpha(st->png);
    if (type == PNG_COLOR_TYPE_GRAY || type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(st->png);
    int passes = png_set_interlace_handling(st->png);
    png_read_update_info(st->png, st->info);
    if (png_get_channels(st->png, st->info) != 3 || png_get_bit_depth(st->png, st->info) != 8 ||
        png_get_rowbytes(st->png, st->info) != (size_t)w * 3)
        return sa3d_fail(err, SA3D_ERR_UNSUPPORTED,
                         "%s: PNG colour type %d, depth %d: conversion to 8-bit RGB "
                         "gave %d channels of %d bits",
                         label, type, depth, png_get_channels(st->png, st->info),
                         png_get_bit_depth(st->png, st->info));
    for (int pass = 0; pass < passes; pass++)
        for (png_uint_32 y = 0; y < h; y++) png_read_row(st->png, st->rgb + (size_t)y * w * 3, NULL);
    png_read_end(st->png, NULL); /* requires the rest of the file up to IEND: a cut tail is an error */
    *w_out = (int)w;
    *h_out = (int)h;
    return SA3D_OK;
}

static sa3d_status decode_png(sa3d_image *img, const uint8_t *buf, size_t len, const char *label,
                              sa3d_error *err) {
    png_state *st = sa3d_calloc(1, sizeof *st);
    if (!st) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: cannot allocate the PNG decoder", label);
    st->buf = buf;
    st->len = len;
    sa3d_status s;
    int w = 0, h = 0;
    st->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, st, png_on_error, png_on_warning);
    if (st->png) st->info = png_create_info_struct(st->png);
    if (!st->png || !st->info)
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: cannot create the PNG decoder", label);
    else
        s = png_run(st, label, &w, &h, err);
    png_destroy_read_struct(st->png ? &st->png : NULL, st->info ? &st->info : NULL, NULL);
    if (s == SA3D_OK) {
        img->w = w;
        img->h = h;
        img->rgb = st->rgb;
    } else {
        sa3d_free(st->rgb);
    }
    sa3d_free(st);
    return s;
}

/* ---- entry points -------------------------------------------------------------------------------------- */

sa3d_status sa3d_image_load_memory(sa3d_image *img, const void *buf, size_t len, const char *label,
                                   sa3d_error *err) {
    if (!img) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_image_load_memory: img is NULL");
    memset(img, 0, sizeof *img);
    if (!label) label = "<memory>";
    if (!buf && len) return sa3d_fail(err, SA3D_ERR_ARG, "%s: buffer is NULL", label);
    const uint8_t *b = buf;
    if (len >= 8 && memcmp(b, png_magic, 8) == 0) return decode_png(img, b, len, label, err);
    if (len >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff) return decode_jpeg(img, b, len, label, err);
    if (len == 0)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: empty file; expected a JPEG or PNG image", label);
    if ((len < 8 && memcmp(b, png_magic, len) == 0) || (len < 3 && b[0] == 0xff && (len < 2 || b[1] == 0xd8)))
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: truncated %s: the file ends after %zu bytes", label,
                         b[0] == 0xff ? "JPEG" : "PNG", len);
    char hex[3 * 8 + 1] = "";
    for (size_t i = 0, at = 0; i < len && i < 8; i++) at += (size_t)snprintf(hex + at, sizeof hex - at, "%s%02x",
                                                                              i ? " " : "", b[i]);
    return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: not a JPEG or PNG file (first bytes: %s)", label, hex);
}

sa3d_status sa3d_image_load(sa3d_image *img, const char *path, sa3d_error *err) {
    if (!img) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_image_load: img is NULL");
    memset(img, 0, sizeof *img);
    if (!path) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_image_load: path is NULL");
    char *data = NULL;
    size_t len = 0;
    sa3d_status s = sa3d_read_file(path, SA3D_IMAGE_MAX_FILE_BYTES, &data, &len, err);
    if (s != SA3D_OK) return s;
    s = sa3d_image_load_memory(img, data, len, path, err);
    sa3d_free(data);
    return s;
}

/* ---- PNG writing --------------------------------------------------------------------------------------- */

typedef struct png_writer {
    sa3d_atomic_file af;
    sa3d_error *err;
    sa3d_status write_status;
    char msg[256];
    png_structp png;
    png_infop info;
} png_writer;

static void png_write_mem(png_structp png, png_bytep data, size_t n) {
    png_writer *pw = png_get_io_ptr(png);
    pw->write_status = sa3d_atomic_write(&pw->af, data, n, pw->err);
    if (pw->write_status != SA3D_OK) png_longjmp(png, 2);
}

static void png_flush_noop(png_structp png) { (void)png; }

static void png_write_on_error(png_structp png, png_const_charp msg) {
    png_writer *pw = png_get_error_ptr(png);
    snprintf(pw->msg, sizeof pw->msg, "%s", msg ? msg : "unknown libpng error");
    png_longjmp(png, 1);
}

static sa3d_status png_write_run(png_writer *pw, const char *path, const uint8_t *pixels, int w, int h,
                                 int channels, sa3d_error *err) {
    int jumped = setjmp(png_jmpbuf(pw->png));
    if (jumped == 2) return pw->write_status; /* sa3d_atomic_write already filled err */
    if (jumped) return sa3d_fail(err, SA3D_ERR_IO, "%s: PNG encoder: %s", path, pw->msg);
    png_set_write_fn(pw->png, pw, png_write_mem, png_flush_noop);
    png_set_IHDR(pw->png, pw->info, (png_uint_32)w, (png_uint_32)h, 8,
                 channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(pw->png, pw->info);
    size_t stride = (size_t)w * (size_t)channels;
    for (int y = 0; y < h; y++) png_write_row(pw->png, pixels + (size_t)y * stride);
    png_write_end(pw->png, pw->info);
    return SA3D_OK;
}

sa3d_status sa3d_png_write(const char *path, const uint8_t *pixels, int w, int h, int channels,
                           sa3d_error *err) {
    if (!path || !pixels) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_png_write: path or pixels is NULL");
    if (w <= 0 || h <= 0 || w > SA3D_IMAGE_MAX_SIDE || h > SA3D_IMAGE_MAX_SIDE)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: image is %d x %d; each side must be in [1, %d]", path, w, h,
                         SA3D_IMAGE_MAX_SIDE);
    if (channels != 1 && channels != 3)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: %d channels; expected 1 or 3", path, channels);
    png_writer *pw = sa3d_calloc(1, sizeof *pw);
    if (!pw) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: cannot allocate the PNG encoder", path);
    pw->err = err;
    sa3d_status s = sa3d_atomic_open(&pw->af, path, err);
    if (s == SA3D_OK) {
        pw->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, pw, png_write_on_error, png_on_warning);
        if (pw->png) pw->info = png_create_info_struct(pw->png);
        if (!pw->png || !pw->info)
            s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: cannot create the PNG encoder", path);
        else
            s = png_write_run(pw, path, pixels, w, h, channels, err);
        png_destroy_write_struct(pw->png ? &pw->png : NULL, pw->info ? &pw->info : NULL);
        if (s == SA3D_OK)
            s = sa3d_atomic_commit(&pw->af, err);
        else
            sa3d_atomic_abort(&pw->af);
    }
    sa3d_free(pw);
    return s;
}

/* ---- JPEG writing: encode into a growing memory buffer we own, then one atomic file write ----------------- */

typedef struct jpeg_writer {
    struct jpeg_compress_struct cinfo;
    struct jpeg_error_mgr mgr;
    struct jpeg_destination_mgr dest;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
    unsigned char *buf; /* sa3d_malloc'd: the encoded bytes */
    size_t cap, len;    /* len is set when the encoder finishes */
} jpeg_writer;

#define JPEG_WRITE_CHUNK ((size_t)64 << 10)

static jpeg_writer *jpeg_writer_of(j_compress_ptr c) {
    return (jpeg_writer *)((char *)c - offsetof(jpeg_writer, cinfo));
}

static void jpeg_dest_init(j_compress_ptr c) {
    jpeg_writer *jw = jpeg_writer_of(c);
    if (!(jw->buf = sa3d_malloc(JPEG_WRITE_CHUNK))) ERREXIT(c, JERR_OUT_OF_MEMORY);
    jw->cap = JPEG_WRITE_CHUNK;
    jw->dest.next_output_byte = jw->buf;
    jw->dest.free_in_buffer = jw->cap;
}

static boolean jpeg_dest_empty(j_compress_ptr c) { /* the whole buffer is full: double it */
    jpeg_writer *jw = jpeg_writer_of(c);
    unsigned char *nb = sa3d_realloc(jw->buf, 2 * jw->cap);
    if (!nb) ERREXIT(c, JERR_OUT_OF_MEMORY);
    jw->buf = nb;
    jw->dest.next_output_byte = nb + jw->cap;
    jw->dest.free_in_buffer = jw->cap;
    jw->cap *= 2;
    return TRUE;
}

static void jpeg_dest_term(j_compress_ptr c) {
    jpeg_writer *jw = jpeg_writer_of(c);
    jw->len = jw->cap - jw->dest.free_in_buffer;
}

static void jpeg_write_on_error(j_common_ptr c) {
    jpeg_writer *jw = (jpeg_writer *)((char *)c->err - offsetof(jpeg_writer, mgr));
    c->err->format_message(c, jw->msg);
    longjmp(jw->jump, 1);
}

static sa3d_status jpeg_encode(jpeg_writer *jw, const char *path, const uint8_t *pixels, int w, int h,
                               int channels, int quality, sa3d_error *err) {
    struct jpeg_compress_struct *ci = &jw->cinfo;
    ci->err = jpeg_std_error(&jw->mgr);
    jw->mgr.error_exit = jpeg_write_on_error;
    jw->mgr.output_message = jpeg_no_output;
    if (setjmp(jw->jump))
        return sa3d_fail(err, jw->mgr.msg_code == JERR_OUT_OF_MEMORY ? SA3D_ERR_NOMEM : SA3D_ERR_IO,
                         "%s: JPEG encoder: %s", path, jw->msg);
    jpeg_create_compress(ci);
    jw->dest.init_destination = jpeg_dest_init;
    jw->dest.empty_output_buffer = jpeg_dest_empty;
    jw->dest.term_destination = jpeg_dest_term;
    ci->dest = &jw->dest;
    ci->image_width = (JDIMENSION)w;
    ci->image_height = (JDIMENSION)h;
    ci->input_components = channels;
    ci->in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(ci);
    jpeg_set_quality(ci, quality, TRUE);
    jpeg_start_compress(ci, TRUE);
    size_t stride = (size_t)w * (size_t)channels;
    while (ci->next_scanline < ci->image_height) {
        JSAMPROW row = (JSAMPROW)(pixels + (size_t)ci->next_scanline * stride);
        jpeg_write_scanlines(ci, &row, 1);
    }
    jpeg_finish_compress(ci);
    return SA3D_OK;
}

sa3d_status sa3d_jpeg_write(const char *path, const uint8_t *pixels, int w, int h, int channels, int quality,
                            sa3d_error *err) {
    if (!path || !pixels) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_jpeg_write: path or pixels is NULL");
    if (w <= 0 || h <= 0 || w > SA3D_IMAGE_MAX_SIDE || h > SA3D_IMAGE_MAX_SIDE)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: image is %d x %d; each side must be in [1, %d]", path, w, h,
                         SA3D_IMAGE_MAX_SIDE);
    if (channels != 1 && channels != 3)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: %d channels; expected 1 or 3", path, channels);
    if (quality < 1 || quality > 100)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: JPEG quality %d; expected 1 to 100", path, quality);
    jpeg_writer *jw = sa3d_calloc(1, sizeof *jw);
    if (!jw) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: cannot allocate the JPEG encoder", path);
    sa3d_status s = jpeg_encode(jw, path, pixels, w, h, channels, quality, err);
    jpeg_destroy_compress(&jw->cinfo); /* safe on the zeroed struct if creation failed */
    if (s == SA3D_OK) s = sa3d_write_file_atomic(path, jw->buf, jw->len, err);
    sa3d_free(jw->buf);
    sa3d_free(jw);
    return s;
}
