/* Model input preprocessing (METHOD.md 2.4, 3.1, 3.2): Pillow-exact 8-bit resampling (Image.resize, mirroring
 * libImaging/Resample.c: double-precision filter weights, 22-bit fixed-point coefficients, uint8 rounding
 * after the horizontal and then the vertical pass), the Hugging Face DPTImageProcessor used by Depth Anything
 * V2, and GeoAware-SC's DINOv2 input (pad-to-square LANCZOS resize + ImageNet normalisation). Every pixel
 * convention of the model inputs lives here. */
#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "base/base.h"
#include "nn/model.h"
#include "semalign3d/image.h"

/* ---- Pillow and torch uint8 resampling ----------------------------------------------------------------- */

/* Pillow's 8-bit path: 8 bits of result, 2 spare bits for the filters' negative lobes and overshoot. */
#define PIL_PRECISION_BITS (32 - 8 - 2)
#define PI 3.14159265358979323846 /* M_PI, which strict C11 headers do not declare */

/* Which library's arithmetic to mirror: the filters differ only in operation order, the coefficients in
 * their fixed-point format (Pillow: 22 fraction bits; torch: int16 with the most fraction bits that keep the
 * largest weight below 2^15, as Pillow-SIMD). */
typedef enum flavor { FLAVOR_PIL, FLAVOR_TORCH } flavor;

static double filter_box(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }

static double filter_bilinear(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Pillow's Hamming window keeps its float constants (0.54f, 0.46f) promoted to double. */
static double filter_hamming(double x) {
    if (x < 0.0) x = -x;
    if (x == 0.0) return 1.0;
    if (x >= 1.0) return 0.0;
    x = x * PI;
    return sin(x) / x * ((double)0.54f + (double)0.46f * cos(x));
}

/* Keys' cubic convolution with a = -0.5, in Pillow's operation order (Resample.c bicubic_filter). */
static double filter_bicubic(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* The same cubic in torch's order (UpSample.h cubic_convolution1/2, HelperInterpCubic::aa_filter). */
static double filter_bicubic_torch(double x) {
    const double a = -0.5;
    x = fabs(x);
    if (x < 1.0) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2.0) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
    return 0.0;
}

static double sinc(double x) {
    if (x == 0.0) return 1.0;
    x = x * PI;
    return sin(x) / x;
}

/* Lanczos-3: sinc windowed by a 3-lobe sinc, zero outside [-3, 3) (Pillow) or outside (-3, 3) (torch). */
static double filter_lanczos(double x) {
    if (-3.0 <= x && x < 3.0) return sinc(x) * sinc(x / 3);
    return 0.0;
}

static double filter_lanczos_torch(double x) {
    x = fabs(x);
    if (x < 3.0) return sinc(x) * sinc(x / 3.0);
    return 0.0;
}

typedef struct resample_filter {
    double (*fn)(double x);
    double support;
} resample_filter;

static const resample_filter *filter_of(sa3d_resample f, flavor fl) {
    static const resample_filter bilinear = { filter_bilinear, 1.0 }, bicubic = { filter_bicubic, 2.0 },
                                 lanczos = { filter_lanczos, 3.0 }, box = { filter_box, 0.5 },
                                 hamming = { filter_hamming, 1.0 }, bicubic_t = { filter_bicubic_torch, 2.0 },
                                 lanczos_t = { filter_lanczos_torch, 3.0 };
    switch (f) {
    case SA3D_RESAMPLE_BILINEAR: return &bilinear;
    case SA3D_RESAMPLE_BICUBIC: return fl == FLAVOR_PIL ? &bicubic : &bicubic_t;
    case SA3D_RESAMPLE_LANCZOS: return fl == FLAVOR_PIL ? &lanczos : &lanczos_t;
    case SA3D_RESAMPLE_BOX: return fl == FLAVOR_PIL ? &box : NULL;
    case SA3D_RESAMPLE_HAMMING: return fl == FLAVOR_PIL ? &hamming : NULL;
    }
    return NULL;
}

static const char *filter_name(sa3d_resample f) {
    switch (f) {
    case SA3D_RESAMPLE_BILINEAR: return "bilinear";
    case SA3D_RESAMPLE_BICUBIC: return "bicubic";
    case SA3D_RESAMPLE_LANCZOS: return "lanczos";
    case SA3D_RESAMPLE_BOX: return "box";
    case SA3D_RESAMPLE_HAMMING: return "hamming";
    }
    return "unknown";
}

/* One axis' coefficients: output i reads inputs [first[i], first[i] + count[i]) with weights k[i][..]. */
typedef struct axis_coeffs {
    int ksize;
    int prec;           /* fraction bits of k */
    int *first, *count; /* [out] */
    int32_t *k;         /* [out][ksize] fixed point */
} axis_coeffs;

static void axis_free(axis_coeffs *a) {
    sa3d_free(a->first);
    sa3d_free(a->count);
    sa3d_free(a->k);
    memset(a, 0, sizeof *a);
}

/* Pillow's precompute_coeffs for the box [0, in_size) (torch's _compute_weights_aa is the same computation):
 * the filter is stretched by the downscale factor (never shrunk), each output centre is (i + 0.5) * scale in
 * input pixels, the window bounds are rounded by truncating x + 0.5 and clamped to the input, and the double
 * weights are normalised to sum 1. Then fixed point, rounding half away from zero: Pillow's
 * normalize_coeffs_8bpc with 22 bits, or torch's int16 weights whose precision is the largest p < 22 with
 * (int)(0.5 + w_max * 2^(p + 1)) < 2^15 (w_max: the largest weight of the axis). */
static sa3d_status axis_init(axis_coeffs *a, int in_size, int out_size, const resample_filter *f, flavor fl,
                             sa3d_error *err) {
    memset(a, 0, sizeof *a);
    double scale = (double)in_size / out_size; /* Pillow: (double)(float box width) / out; exact here */
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = f->support * filterscale;
    a->ksize = (int)ceil(support) * 2 + 1;
    size_t nk;
    double *w = NULL;
    if (!sa3d_mul_ok((size_t)out_size, (size_t)a->ksize, &nk)) goto nomem;
    a->first = sa3d_malloc((size_t)out_size * sizeof(int));
    a->count = sa3d_malloc((size_t)out_size * sizeof(int));
    a->k = sa3d_calloc(nk, sizeof(int32_t));
    w = sa3d_calloc(nk, sizeof(double));
    if (!a->first || !a->count || !a->k || !w) goto nomem;
    double ss = 1.0 / filterscale, w_max = 0.0;
    for (int i = 0; i < out_size; i++) {
        double center = (i + 0.5) * scale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        int n = xmax - xmin;
        if (n < 0) n = 0;
        /* cannot happen (window width <= 2 * support + 1); keeps the writes bounded */
        if (n > a->ksize) n = a->ksize;
        double *wi = w + (size_t)i * (size_t)a->ksize, ww = 0.0;
        for (int x = 0; x < n; x++) {
            wi[x] = f->fn((x + xmin - center + 0.5) * ss);
            ww += wi[x];
        }
        for (int x = 0; x < n; x++) {
            if (ww != 0.0) wi[x] /= ww;
            if (wi[x] > w_max) w_max = wi[x];
        }
        a->first[i] = xmin;
        a->count[i] = n;
    }
    a->prec = PIL_PRECISION_BITS;
    if (fl == FLAVOR_TORCH)
        for (a->prec = 0; a->prec < 22; a->prec++)
            if ((int)(0.5 + w_max * (1 << (a->prec + 1))) >= (1 << 15)) break;
    for (size_t j = 0; j < nk; j++) {
        double fx = w[j] * (1 << a->prec);
        a->k[j] = (int32_t)(w[j] < 0 ? -0.5 + fx : 0.5 + fx);
    }
    sa3d_free(w);
    return SA3D_OK;
nomem:
    sa3d_free(w);
    axis_free(a);
    return sa3d_fail(err, SA3D_ERR_NOMEM, "resize: cannot allocate coefficients for %d -> %d", in_size,
                     out_size);
}

/* Rounds a fixed-point sum (which started at one half) to uint8 with clipping, as Pillow's clip8 and torch's
 * saturating pack after an arithmetic shift. */
static inline uint8_t clip8(int32_t ss, int prec) {
    if (ss < 0) return 0;
    ss >>= prec;
    return (uint8_t)(ss > 255 ? 255 : ss);
}

/* Horizontal pass: dst [rows][dw][C] from src rows [row0, row0 + rows) of [..][sw][C]. */
static void pass_horizontal(uint8_t *dst, const uint8_t *src, int sw, int dw, int row0, int rows, int C,
                            const axis_coeffs *a) {
    const int32_t half = (int32_t)1 << (a->prec - 1);
#pragma omp parallel for schedule(static)
    for (int y = 0; y < rows; y++) {
        const uint8_t *in = src + (size_t)(row0 + y) * (size_t)sw * (size_t)C;
        uint8_t *out = dst + (size_t)y * (size_t)dw * (size_t)C;
        for (int x = 0; x < dw; x++) {
            const int32_t *k = a->k + (size_t)x * (size_t)a->ksize;
            const uint8_t *p = in + (size_t)a->first[x] * (size_t)C;
            int n = a->count[x];
            for (int c = 0; c < C; c++) {
                int32_t ss = half;
                for (int i = 0; i < n; i++) ss += (int32_t)p[(size_t)i * (size_t)C + (size_t)c] * k[i];
                out[(size_t)x * (size_t)C + (size_t)c] = clip8(ss, a->prec);
            }
        }
    }
}

/* Vertical pass: dst [dh][w][C] from src [..][w][C], whose row 0 is input row row0. */
static void pass_vertical(uint8_t *dst, const uint8_t *src, int w, int dh, int row0, int C,
                          const axis_coeffs *a) {
    const int32_t half = (int32_t)1 << (a->prec - 1);
    size_t stride = (size_t)w * (size_t)C;
#pragma omp parallel for schedule(static)
    for (int y = 0; y < dh; y++) {
        const int32_t *k = a->k + (size_t)y * (size_t)a->ksize;
        const uint8_t *in = src + (size_t)(a->first[y] - row0) * stride;
        int n = a->count[y];
        uint8_t *out = dst + (size_t)y * stride;
        for (size_t j = 0; j < stride; j++) {
            int32_t ss = half;
            for (int i = 0; i < n; i++) ss += (int32_t)in[(size_t)i * stride + j] * k[i];
            out[j] = clip8(ss, a->prec);
        }
    }
}

static sa3d_status resize_u8(uint8_t *dst, int dw, int dh, const uint8_t *src, int sw, int sh, int channels,
                             sa3d_resample filter, flavor fl, sa3d_error *err) {
    const resample_filter *f = filter_of(filter, fl);
    if (!dst || !src) return sa3d_fail(err, SA3D_ERR_ARG, "resize: dst or src is NULL");
    if (!f)
        return sa3d_fail(err, fl == FLAVOR_PIL ? SA3D_ERR_ARG : SA3D_ERR_UNSUPPORTED,
                         "resize: filter %d (%s) is not available%s", (int)filter, filter_name(filter),
                         fl == FLAVOR_PIL ? "" : " in torch's antialiased uint8 resize (bilinear, bicubic, lanczos)");
    if (channels < 1 || channels > 4)
        return sa3d_fail(err, SA3D_ERR_ARG, "resize: %d channels; expected 1 to 4", channels);
    if (sw < 1 || sh < 1 || dw < 1 || dh < 1 || sw > SA3D_IMAGE_MAX_SIDE || sh > SA3D_IMAGE_MAX_SIDE ||
        dw > SA3D_IMAGE_MAX_SIDE || dh > SA3D_IMAGE_MAX_SIDE)
        return sa3d_fail(err, SA3D_ERR_ARG, "resize: %d x %d -> %d x %d; each side must be in [1, %d]", sw,
                         sh, dw, dh, SA3D_IMAGE_MAX_SIDE);
    const int C = channels;
    int need_h = dw != sw, need_v = dh != sh;
    if (!need_h && !need_v) {
        memcpy(dst, src, (size_t)sw * (size_t)sh * (size_t)C);
        return SA3D_OK;
    }
    axis_coeffs ax = { 0 }, ay = { 0 };
    uint8_t *tmp = NULL;
    sa3d_status s = SA3D_OK;
    int row0 = 0, rows = sh;
    if (need_v) {
        if ((s = axis_init(&ay, sh, dh, f, fl, err)) != SA3D_OK) goto done;
        /* Pillow runs the horizontal pass only over the input rows the vertical pass reads (torch runs it
         * over all rows); the values are the same. */
        row0 = ay.first[0];
        rows = ay.first[dh - 1] + ay.count[dh - 1] - row0;
    }
    if (need_h) {
        if ((s = axis_init(&ax, sw, dw, f, fl, err)) != SA3D_OK) goto done;
        if (!need_v) {
            pass_horizontal(dst, src, sw, dw, 0, sh, C, &ax);
            goto done;
        }
        tmp = sa3d_malloc((size_t)dw * (size_t)rows * (size_t)C);
        if (!tmp) {
            s = sa3d_fail(err, SA3D_ERR_NOMEM, "resize: cannot allocate the %d x %d intermediate image", dw,
                          rows);
            goto done;
        }
        pass_horizontal(tmp, src, sw, dw, row0, rows, C, &ax);
        pass_vertical(dst, tmp, dw, dh, row0, C, &ay);
    } else {
        pass_vertical(dst, src, sw, dh, 0, C, &ay);
    }
done:
    sa3d_free(tmp);
    axis_free(&ax);
    axis_free(&ay);
    return s;
}

sa3d_status sa3d_resize_u8(uint8_t *dst, int dw, int dh, const uint8_t *src, int sw, int sh, int channels,
                           sa3d_resample filter, sa3d_error *err) {
    return resize_u8(dst, dw, dh, src, sw, sh, channels, filter, FLAVOR_PIL, err);
}

sa3d_status sa3d_resize_u8_torch(uint8_t *dst, int dw, int dh, const uint8_t *src, int sw, int sh,
                                 int channels, sa3d_resample filter, sa3d_error *err) {
    return resize_u8(dst, dw, dh, src, sw, sh, channels, filter, FLAVOR_TORCH, err);
}

/* ---- Depth Anything V2 (Hugging Face DPTImageProcessor; METHOD.md 3.2)
 * ------------------------------------------------ */

sa3d_dpt_preprocess_params sa3d_dpt_preprocess_params_default(void) {
    sa3d_dpt_preprocess_params p = {
        .target_h = 518,
        .target_w = 518,
        .multiple = 14,
        .keep_aspect_ratio = 1,
        .mean = { 0.485f, 0.456f, 0.406f },
        .std = { 0.229f, 0.224f, 0.225f },
        .rescale_factor = 1.0 / 255.0,
        .resample = SA3D_RESAMPLE_BICUBIC,
        .impl = SA3D_DPT_TORCHVISION,
    };
    return p;
}

/* DPT's constrain_to_multiple_of with min_val 0 and no max: round(val / m) * m with Python's round (half to
 * even; rint in the default rounding mode), or the ceiling when that falls below 0. */
static double constrain_to_multiple(double val, int m) {
    double x = rint(val / m) * m;
    if (x < 0) x = ceil(val / m) * m;
    return x;
}

void sa3d_dpt_preprocess_size(const sa3d_dpt_preprocess_params *p, int w, int h, int *out_w, int *out_h) {
    *out_w = *out_h = 0;
    if (!p || w < 1 || h < 1 || p->target_w < 1 || p->target_h < 1 || p->multiple < 1) return;
    /* transformers DPT get_resize_output_image_size: scale as little as possible when keeping the aspect. */
    double scale_h = (double)p->target_h / h, scale_w = (double)p->target_w / w;
    if (p->keep_aspect_ratio) {
        if (fabs(1 - scale_w) < fabs(1 - scale_h))
            scale_h = scale_w;
        else
            scale_w = scale_h;
    }
    double nh = constrain_to_multiple(scale_h * h, p->multiple);
    double nw = constrain_to_multiple(scale_w * w, p->multiple);
    if (nh < 1 || nw < 1 || nh > INT_MAX || nw > INT_MAX) return;
    *out_w = (int)nw;
    *out_h = (int)nh;
}

/* The float value of channel c's uint8 level v, for every v, as the processor computes it (p->impl). */
static void pixel_lut(const sa3d_dpt_preprocess_params *p, int c, float lut[256]) {
    if (p->impl == SA3D_DPT_PIL) {
        /* transformers rescale: float64 product stored as float32; normalize: (x - mean) / std */
        for (int v = 0; v < 256; v++) lut[v] = ((float)(v * p->rescale_factor) - p->mean[c]) / p->std[c];
    } else if (p->mean[c] == 0.0f && p->std[c] == 1.0f) {
        /* no normalisation: torch uint8 tensor * python float -> float32 product */
        for (int v = 0; v < 256; v++) lut[v] = (float)v * (float)p->rescale_factor;
    } else {
        /* _fuse_mean_std_and_rescale_factor: float32 mean and std times float(1 / r), then
         * (x - mean') / std' on the float32 image */
        float inv = (float)(1.0 / p->rescale_factor), m = p->mean[c] * inv, sd = p->std[c] * inv;
        for (int v = 0; v < 256; v++) lut[v] = ((float)v - m) / sd;
    }
}

/* 1 when every level of every channel maps to a finite value: a mean, std or rescale factor far outside
 * the usual [0, 1] can overflow float (1e38 x 255) and would feed inf to the network. */
static int pixel_lut_finite(const sa3d_dpt_preprocess_params *p) {
    for (int c = 0; c < 3; c++) {
        float lut[256];
        pixel_lut(p, c, lut);
        for (int v = 0; v < 256; v++)
            if (!isfinite(lut[v])) return 0;
    }
    return 1;
}

static sa3d_status check_image(const sa3d_image *img, const char *who, sa3d_error *err) {
    if (!img || !img->rgb || img->w < 1 || img->h < 1 || img->w > SA3D_IMAGE_MAX_SIDE ||
        img->h > SA3D_IMAGE_MAX_SIDE)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: no image or bad image size", who);
    return SA3D_OK;
}

sa3d_status sa3d_dpt_preprocess_params_check(const sa3d_dpt_preprocess_params *p, sa3d_error *err) {
    if (!p) return sa3d_fail(err, SA3D_ERR_ARG, "dpt preprocess: no parameters");
    if (p->target_h < 1 || p->target_w < 1 || p->target_h > SA3D_IMAGE_MAX_SIDE || p->target_w > SA3D_IMAGE_MAX_SIDE ||
        p->multiple < 1 || p->multiple > SA3D_IMAGE_MAX_SIDE)
        return sa3d_fail(err, SA3D_ERR_ARG, "dpt preprocess: target %d x %d, multiple %d (each in [1, %d])",
                         p->target_w, p->target_h, p->multiple, SA3D_IMAGE_MAX_SIDE);
    if (p->keep_aspect_ratio != 0 && p->keep_aspect_ratio != 1)
        return sa3d_fail(err, SA3D_ERR_ARG, "dpt preprocess: keep_aspect_ratio %d (0 or 1)", p->keep_aspect_ratio);
    if (p->impl != SA3D_DPT_TORCHVISION && p->impl != SA3D_DPT_PIL)
        return sa3d_fail(err, SA3D_ERR_ARG, "dpt preprocess: impl %d (SA3D_DPT_TORCHVISION or SA3D_DPT_PIL)",
                         (int)p->impl);
    if (!filter_of(p->resample, FLAVOR_PIL))
        return sa3d_fail(err, SA3D_ERR_ARG, "dpt preprocess: resample %d unknown", (int)p->resample);
    for (int c = 0; c < 3; c++)
        if (!(p->std[c] != 0.0f) || !isfinite(p->std[c]) || !isfinite(p->mean[c]))
            return sa3d_fail(err, SA3D_ERR_ARG, "dpt preprocess: mean/std[%d] = %g/%g", c, (double)p->mean[c],
                             (double)p->std[c]);
    if (!(p->rescale_factor > 0.0) || !isfinite(p->rescale_factor))
        return sa3d_fail(err, SA3D_ERR_ARG, "dpt preprocess: rescale_factor %g (> 0)", p->rescale_factor);
    if (p->impl != SA3D_DPT_PIL && !filter_of(p->resample, FLAVOR_TORCH)) /* torchvision refuses it too */
        return sa3d_fail(err, SA3D_ERR_UNSUPPORTED, "dpt preprocess: resample %s is not available with the "
                         "torchvision backend (impl SA3D_DPT_TORCHVISION); only with SA3D_DPT_PIL",
                         filter_name(p->resample));
    if (!pixel_lut_finite(p))
        return sa3d_fail(err, SA3D_ERR_ARG, "dpt preprocess: mean, std and rescale factor %g give infinite pixel "
                         "values", p->rescale_factor);
    return SA3D_OK;
}

sa3d_status sa3d_dpt_preprocess(const sa3d_image *img, const sa3d_dpt_preprocess_params *p, float **pixels,
                                int *out_w, int *out_h, sa3d_error *err) {
    if (pixels) *pixels = NULL;
    if (out_w) *out_w = 0;
    if (out_h) *out_h = 0;
    if (!pixels || !out_w || !out_h || !p)
        return sa3d_fail(err, SA3D_ERR_ARG, "dpt preprocess: NULL argument");
    sa3d_status s = check_image(img, "dpt preprocess", err);
    if (s != SA3D_OK || (s = sa3d_dpt_preprocess_params_check(p, err)) != SA3D_OK) return s;
    int w, h;
    sa3d_dpt_preprocess_size(p, img->w, img->h, &w, &h);
    if (w < 1 || h < 1 || w > SA3D_IMAGE_MAX_SIDE || h > SA3D_IMAGE_MAX_SIDE) {
        char got[48] = "a side of 0";   /* the size function gives 0 x 0 when a side rounds below 1 */
        if (w > 0 && h > 0) snprintf(got, sizeof got, "%d x %d", w, h);
        return sa3d_fail(err, SA3D_ERR_ARG, "dpt preprocess: a %d x %d image resized towards %d x %d in multiples "
                         "of %d gives %s; each side must be in [1, %d]", img->w, img->h, p->target_w, p->target_h,
                         p->multiple, got, SA3D_IMAGE_MAX_SIDE);
    }
    size_t n = (size_t)w * (size_t)h;
    uint8_t *rs = sa3d_malloc(n * 3);
    float *out = sa3d_malloc(n * 3 * sizeof(float));
    if (!rs || !out) {
        sa3d_free(rs);
        sa3d_free(out);
        return sa3d_fail(err, SA3D_ERR_NOMEM, "dpt preprocess: cannot allocate a %d x %d input", w, h);
    }
    if (p->impl == SA3D_DPT_PIL)
        s = sa3d_resize_u8(rs, w, h, img->rgb, img->w, img->h, 3, p->resample, err);
    else
        s = sa3d_resize_u8_torch(rs, w, h, img->rgb, img->w, img->h, 3, p->resample, err);
    if (s != SA3D_OK) {
        sa3d_free(rs);
        sa3d_free(out);
        return s;
    }
    for (int c = 0; c < 3; c++) {
        float lut[256];
        pixel_lut(p, c, lut);
        float *o = out + (size_t)c * n;
        for (size_t i = 0; i < n; i++) o[i] = lut[rs[i * 3 + (size_t)c]];
    }
    sa3d_free(rs);
    *pixels = out;
    *out_w = w;
    *out_h = h;
    return SA3D_OK;
}

/* -- processor config ------------------------------------------------------------------------------------ */

typedef struct pcfg {
    const char *path;
    const cJSON *root;
    sa3d_error *err;
} pcfg;

static sa3d_status pcfg_bad(const pcfg *c, const char *key, const char *what) {
    return sa3d_fail(c->err, SA3D_ERR_FORMAT, "%s: %s: %s", c->path, key, what);
}

static sa3d_status pcfg_bool(const pcfg *c, const char *key, int def, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, key);
    *out = def;
    if (!v || cJSON_IsNull(v)) return SA3D_OK;
    if (!cJSON_IsBool(v)) return pcfg_bad(c, key, "expected true or false");
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return SA3D_OK;
}

/* Integer o[key] in [lo, hi]; label is the key path used in messages ("size.height"). */
static sa3d_status pcfg_int(const pcfg *c, const cJSON *o, const char *key, const char *label, int def,
                            int lo, int hi, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = def;
    if (!v || cJSON_IsNull(v)) return SA3D_OK;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi) {
        char msg[96];
        snprintf(msg, sizeof msg, "expected an integer in [%d, %d]", lo, hi);
        return pcfg_bad(c, label, msg);
    }
    *out = (int)v->valuedouble;
    return SA3D_OK;
}

static sa3d_status pcfg_triple(const pcfg *c, const char *key, const float def[3], int positive,
                               float out[3]) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, key);
    for (int i = 0; i < 3; i++) out[i] = def[i];
    if (!v || cJSON_IsNull(v)) return SA3D_OK;
    if (cJSON_IsNumber(v)) { /* a single number applies to every channel, as transformers allows */
        for (int i = 0; i < 3; i++) out[i] = (float)v->valuedouble;
    } else if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 3) {
        for (int i = 0; i < 3; i++) {
            const cJSON *e = cJSON_GetArrayItem(v, i);
            if (!cJSON_IsNumber(e)) return pcfg_bad(c, key, "expected 3 numbers");
            out[i] = (float)e->valuedouble; /* transformers converts to the float32 image dtype */
        }
    } else {
        return pcfg_bad(c, key, "expected 3 numbers");
    }
    for (int i = 0; i < 3; i++)
        if (!isfinite(out[i]) || (positive && !(out[i] > 0.0f)))
            return pcfg_bad(c, key, "values must be finite (and positive for a std)");
    return SA3D_OK;
}

/* PIL numbering: 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming (1 to 5 here). */
static sa3d_resample resample_from_pil(int code) {
    switch (code) {
    case 1: return SA3D_RESAMPLE_LANCZOS;
    case 2: return SA3D_RESAMPLE_BILINEAR;
    case 4: return SA3D_RESAMPLE_BOX;
    case 5: return SA3D_RESAMPLE_HAMMING;
    default: return SA3D_RESAMPLE_BICUBIC;
    }
}

sa3d_status sa3d_dpt_preprocess_params_load(sa3d_dpt_preprocess_params *p, const char *path,
                                            sa3d_error *err) {
    if (!p || !path) return sa3d_fail(err, SA3D_ERR_ARG, "dpt params: NULL argument");
    *p = sa3d_dpt_preprocess_params_default();
    char *text = NULL;
    sa3d_status s = sa3d_read_file(path, (size_t)16 << 20, &text, NULL, err);
    if (s != SA3D_OK) return s;
    s = sa3d_dpt_preprocess_params_parse(p, text, path, err);
    sa3d_free(text);
    return s;
}

/* transformers saves an image processor as preprocessor_config.json; processor_config.json is the name of a
 * multi-modal processor's file, which some exports (and the fixture) use for the image processor alone. */
sa3d_status sa3d_dpt_preprocess_params_find(sa3d_dpt_preprocess_params *p, const char *dir, char *used,
                                            size_t n_used, sa3d_error *err) {
    static const char *const names[] = { "preprocessor_config.json", "processor_config.json" };
    if (used && n_used) used[0] = 0;
    if (!p || !dir) return sa3d_fail(err, SA3D_ERR_ARG, "dpt params: NULL argument");
    *p = sa3d_dpt_preprocess_params_default();
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *path = sa3d_path_join(dir, names[i]);
        if (!path) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", dir);
        sa3d_status s = SA3D_OK;
        int found = sa3d_file_exists(path);
        if (found) {
            s = sa3d_dpt_preprocess_params_load(p, path, err);
            if (!s && used && n_used) snprintf(used, n_used, "%s", path);
        }
        sa3d_free(path);
        if (found) return s;
    }
    return SA3D_OK;
}

const char *sa3d_dpt_preprocess_params_text(const sa3d_dpt_preprocess_params *p, char *buf, size_t n) {
    if (!buf || !n) return buf;
    /* %.9g and %.17g print every float and double exactly, so two settings that differ never share a text */
    snprintf(buf, n,
             "size=%dx%d multiple=%d keep_aspect=%d resample=%s rescale=%.17g mean=%.9g,%.9g,%.9g "
             "std=%.9g,%.9g,%.9g impl=%s",
             p->target_h, p->target_w, p->multiple, p->keep_aspect_ratio, filter_name(p->resample),
             p->rescale_factor, (double)p->mean[0], (double)p->mean[1], (double)p->mean[2], (double)p->std[0],
             (double)p->std[1], (double)p->std[2], p->impl == SA3D_DPT_PIL ? "pil" : "torchvision");
    return buf;
}

int sa3d_dpt_preprocess_params_is_default(const sa3d_dpt_preprocess_params *p) {
    sa3d_dpt_preprocess_params d = sa3d_dpt_preprocess_params_default();
    char a[512], b[512];
    return !strcmp(sa3d_dpt_preprocess_params_text(p, a, sizeof a), sa3d_dpt_preprocess_params_text(&d, b, sizeof b));
}

sa3d_status sa3d_dpt_preprocess_params_parse(sa3d_dpt_preprocess_params *p, const char *text, const char *path,
                                             sa3d_error *err) {
    *p = sa3d_dpt_preprocess_params_default();
    sa3d_status s = SA3D_OK;
    cJSON *root = cJSON_Parse(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: not a JSON object", path);
    }
    pcfg c = { path, root, err };
    sa3d_dpt_preprocess_params q = sa3d_dpt_preprocess_params_default();
    /* DPTImageProcessor class defaults for absent keys. */
    q.target_h = q.target_w = 384;
    q.multiple = 1;
    q.keep_aspect_ratio = 0;
    static const float half[3] = { 0.5f, 0.5f, 0.5f };
    int do_resize, do_rescale, do_normalize, do_pad, resample;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "image_processor_type");
    if (type && !cJSON_IsNull(type) &&
        (!cJSON_IsString(type) || (strcmp(type->valuestring, "DPTImageProcessor") != 0 &&
                                   strcmp(type->valuestring, "DPTImageProcessorFast") != 0))) {
        s = sa3d_fail(err, SA3D_ERR_UNSUPPORTED,
                      "%s: image_processor_type: '%s' is not supported; expected %s", path,
                      cJSON_IsString(type) ? type->valuestring : "(not a string)", "DPTImageProcessor");
        goto done;
    }
    if ((s = pcfg_bool(&c, "do_resize", 1, &do_resize)) != SA3D_OK) goto done;
    if ((s = pcfg_bool(&c, "do_rescale", 1, &do_rescale)) != SA3D_OK) goto done;
    if ((s = pcfg_bool(&c, "do_normalize", 1, &do_normalize)) != SA3D_OK) goto done;
    if ((s = pcfg_bool(&c, "do_pad", 0, &do_pad)) != SA3D_OK) goto done;
    if ((s = pcfg_bool(&c, "keep_aspect_ratio", 0, &q.keep_aspect_ratio)) != SA3D_OK) goto done;
    if (!do_resize || do_pad) {
        s = sa3d_fail(err, SA3D_ERR_UNSUPPORTED, "%s: %s: %s is not supported", path,
                      do_pad ? "do_pad" : "do_resize", do_pad ? "true" : "false");
        goto done;
    }
    const cJSON *size = cJSON_GetObjectItemCaseSensitive(root, "size");
    if (cJSON_IsNumber(size)) {
        if ((s = pcfg_int(&c, root, "size", "size", 384, 1, SA3D_IMAGE_MAX_SIDE, &q.target_h)) != SA3D_OK)
            goto done;
        q.target_w = q.target_h;
    } else if (cJSON_IsObject(size)) {
        if (!cJSON_GetObjectItemCaseSensitive(size, "height") ||
            !cJSON_GetObjectItemCaseSensitive(size, "width")) {
            s = pcfg_bad(&c, "size", "expected keys height and width");
            goto done;
        }
        s = pcfg_int(&c, size, "height", "size.height", 384, 1, SA3D_IMAGE_MAX_SIDE, &q.target_h);
        if (s == SA3D_OK)
            s = pcfg_int(&c, size, "width", "size.width", 384, 1, SA3D_IMAGE_MAX_SIDE, &q.target_w);
        if (s != SA3D_OK) goto done;
    } else if (size && !cJSON_IsNull(size)) {
        s = pcfg_bad(&c, "size", "expected an object {height, width} or a number");
        goto done;
    }
    if ((s = pcfg_int(&c, root, "ensure_multiple_of", "ensure_multiple_of", 1, 1, SA3D_IMAGE_MAX_SIDE,
                      &q.multiple)) != SA3D_OK)
        goto done;
    if ((s = pcfg_int(&c, root, "resample", "resample", 3, 0, 5, &resample)) != SA3D_OK) goto done;
    if (resample == 0) {
        s = sa3d_fail(err, SA3D_ERR_UNSUPPORTED, "%s: resample: 0 (nearest) is not supported", path);
        goto done;
    }
    q.resample = resample_from_pil(resample);
    q.rescale_factor = 1.0 / 255.0;
    if (do_rescale) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(root, "rescale_factor");
        if (r && !cJSON_IsNull(r)) {
            if (!cJSON_IsNumber(r) || !isfinite(r->valuedouble) || r->valuedouble <= 0) {
                s = pcfg_bad(&c, "rescale_factor", "expected a positive number");
                goto done;
            }
            q.rescale_factor = r->valuedouble;
        }
    } else {
        q.rescale_factor = 1.0;
    }
    if (do_normalize) {
        if ((s = pcfg_triple(&c, "image_mean", half, 0, q.mean)) != SA3D_OK) goto done;
        if ((s = pcfg_triple(&c, "image_std", half, 1, q.std)) != SA3D_OK) goto done;
    } else {
        for (int i = 0; i < 3; i++) {
            q.mean[i] = 0.0f;
            q.std[i] = 1.0f;
        }
    }
    for (int impl = SA3D_DPT_TORCHVISION; impl <= SA3D_DPT_PIL && s == SA3D_OK; impl++) {
        sa3d_dpt_preprocess_params t = q;
        t.impl = (sa3d_dpt_impl)impl;
        if (!pixel_lut_finite(&t))
            s = pcfg_bad(&c, "image_mean, image_std, rescale_factor", "give infinite pixel values");
    }
    if (s == SA3D_OK) *p = q;
done:
    cJSON_Delete(root);
    return s;
}

/* ---- GeoAware-SC DINOv2 input (METHOD.md 2.4, 3.1)
 * -------------------------------------------------------------------------- */

/* GeoAware-SC, utils/utils_correspondence.py `resize(img, target_res, resize=True, to_pil=True, edge=False)`:
 * when h <= w the image is resized to (target_res, int(np.around(target_res * h / w))) and its rows are
 * pasted into a zero canvas at row (target_res - new_h) // 2; otherwise the roles of width and height swap
 * and the columns start at (target_res - new_w) // 2. np.around rounds half to even; the quotient is a
 * correctly rounded double in Python as here. preprocess_map.py applies it to the (optionally mirrored) RGB
 * image with img_size 840 for DINOv2 (and 960 for SD), and the DINO extractor's preprocess_pil applies
 * ToTensor and Normalize with ImageNet mean/std. */
sa3d_status sa3d_geoaware_layout(int w, int h, int size, int *rw, int *rh, int *ox, int *oy,
                                 sa3d_error *err) {
    *rw = *rh = *ox = *oy = 0;
    if (w < 1 || h < 1 || w > SA3D_IMAGE_MAX_SIDE || h > SA3D_IMAGE_MAX_SIDE)
        return sa3d_fail(err, SA3D_ERR_ARG, "geoaware: image is %d x %d; each side must be in [1, %d]", w, h,
                         SA3D_IMAGE_MAX_SIDE);
    if (size < 14 || size % 14 != 0 || size > SA3D_IMAGE_MAX_SIDE)
        return sa3d_fail(err, SA3D_ERR_ARG, "geoaware: size %d must be a positive multiple of 14 up to %d",
                         size, SA3D_IMAGE_MAX_SIDE);
    int a, b;
    if (h <= w) {
        a = size;
        b = (int)rint((double)size * h / w);
    } else {
        a = (int)rint((double)size * w / h);
        b = size;
    }
    if (a < 1 || b < 1)
        return sa3d_fail(err, SA3D_ERR_ARG,
                         "geoaware: a %d x %d image fitted into %d x %d has a side of 0 pixels", w, h, size,
                         size);
    *rw = a;
    *rh = b;
    *ox = (size - a) / 2;
    *oy = (size - b) / 2;
    return SA3D_OK;
}

sa3d_status sa3d_geoaware_preprocess(const sa3d_image *img, int size, float **pixels, sa3d_error *err) {
    if (!pixels) return sa3d_fail(err, SA3D_ERR_ARG, "geoaware preprocess: pixels is NULL");
    *pixels = NULL;
    sa3d_status s = check_image(img, "geoaware preprocess", err);
    if (s != SA3D_OK) return s;
    int rw, rh, ox, oy;
    if ((s = sa3d_geoaware_layout(img->w, img->h, size, &rw, &rh, &ox, &oy, err)) != SA3D_OK) return s;
    size_t n = (size_t)size * (size_t)size;
    uint8_t *rs = sa3d_malloc((size_t)rw * (size_t)rh * 3);
    float *out = sa3d_malloc(n * 3 * sizeof(float));
    if (!rs || !out) {
        sa3d_free(rs);
        sa3d_free(out);
        return sa3d_fail(err, SA3D_ERR_NOMEM, "geoaware preprocess: cannot allocate a %d x %d input", size,
                         size);
    }
    if ((s = sa3d_resize_u8(rs, rw, rh, img->rgb, img->w, img->h, 3, SA3D_RESAMPLE_LANCZOS, err)) !=
        SA3D_OK) {
        sa3d_free(rs);
        sa3d_free(out);
        return s;
    }
    static const float mean[3] = { 0.485f, 0.456f, 0.406f }, std[3] = { 0.229f, 0.224f, 0.225f };
    for (int c = 0; c < 3; c++) {
        /* torchvision ToTensor (float32 x / 255) then Normalize ((x - mean) / std, float32). */
        float lut[256];
        for (int v = 0; v < 256; v++) lut[v] = ((float)v / 255.0f - mean[c]) / std[c];
        float *o = out + (size_t)c * n;
        for (int y = 0; y < size; y++) {
            float *row = o + (size_t)y * (size_t)size;
            int iy = y - oy;
            for (int x = 0; x < size; x++) {
                int ix = x - ox;
                row[x] = (iy >= 0 && iy < rh && ix >= 0 && ix < rw)
                             ? lut[rs[((size_t)iy * (size_t)rw + (size_t)ix) * 3 + (size_t)c]]
                             : lut[0];
            }
        }
    }
    sa3d_free(rs);
    *pixels = out;
    return SA3D_OK;
}

void sa3d_pixels_free(float *pixels) { sa3d_free(pixels); }
