/* CPU float32 kernels (see kernels.h). GEMMs go to OpenBLAS (multi-threaded inside BLAS); element-wise and
 * row-wise loops are split across OpenMP threads by rows, so results do not depend on the thread count. */
#include <cblas.h>
#include <math.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>
#include "tensor/kernels.h"
#include "tensor/vmath.h"
#ifdef _OPENMP
#include <omp.h>
#endif

void sa3d_linear(float *y, const float *x, const float *w, const float *b, int T, int K, int N) {
    float beta = 0.0f;
    if (b) {   /* as torch.addmm: the bias is the GEMM's C operand with beta = 1 */
        #pragma omp parallel for schedule(static)
        for (int t = 0; t < T; t++) memcpy(y + (size_t)t * N, b, (size_t)N * sizeof(float));
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, N, K, 1.0f, x, K, w, K, beta, y, N);
}

void sa3d_conv1x1(float *out, const float *in, const float *w, const float *b, int Ci, int HW, int Co, int in_tokens) {
    float beta = 0.0f;
    if (b) {
        #pragma omp parallel for schedule(static)
        for (int c = 0; c < Co; c++)
            for (int i = 0; i < HW; i++) out[(size_t)c * HW + i] = b[c];
        beta = 1.0f;
    }
    if (in_tokens)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Co, HW, Ci, 1.0f, w, Ci, in, Ci, beta, out, HW);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Co, HW, Ci, 1.0f, w, Ci, in, HW, beta, out, HW);
}

void sa3d_layernorm(float *y, const float *x, const float *g, const float *b, int T, int D, float eps) {
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * D;
        float *yr = y + (size_t)t * D;
        double s = 0.0;
        for (int d = 0; d < D; d++) s += (double)xr[d];
        double mean = s / D, v = 0.0;
        for (int d = 0; d < D; d++) { double c = (double)xr[d] - mean; v += c * c; }
        float rstd = (float)(1.0 / sqrt(v / D + (double)eps));
        float m = (float)mean;
        for (int d = 0; d < D; d++) yr[d] = (xr[d] - m) * rstd * g[d] + b[d];
    }
}

/* Element-wise loops work in chunks of 4096 so the OpenMP split never depends on the thread count. */
#define EW_CHUNK 4096

void sa3d_gelu(float *x, size_t n) {
    size_t chunks = (n + EW_CHUNK - 1) / EW_CHUNK;
    #pragma omp parallel for schedule(static)
    for (size_t c = 0; c < chunks; c++) {
        size_t i = c * EW_CHUNK, end = i + EW_CHUNK < n ? i + EW_CHUNK : n;
#ifdef SA3D_VMATH_AVX2
        const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f), rs2 = _mm256_set1_ps(0.70710678118654752f);
        for (; i + 8 <= end; i += 8) {
            __m256 v = _mm256_loadu_ps(x + i);
            __m256 e = sa3d_erf8(_mm256_mul_ps(v, rs2));
            _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, e)));
        }
#endif
        for (; i < end; i++) x[i] = 0.5f * x[i] * (1.0f + sa3d_erff(x[i] * 0.70710678118654752f));
    }
}

void sa3d_gelu_tanh(float *x, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    }
}

void sa3d_relu_copy(float *y, const float *x, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void sa3d_relu(float *x, size_t n) { sa3d_relu_copy(x, x, n); }   /* each element read before it is written */

void sa3d_add(float *y, const float *a, const float *b, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void sa3d_silu(float *x, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-x[i]));
}

void sa3d_swiglu(float *out, const float *in, int T, int M) {
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *a = in + (size_t)t * 2 * M, *g = a + M;
        float *o = out + (size_t)t * M;
        for (int j = 0; j < M; j++) o[j] = a[j] / (1.0f + expf(-a[j])) * g[j];
    }
}

void sa3d_add_scaled(float *x, const float *y, const float *s, int T, int D) {
    #pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        float *xr = x + (size_t)t * D;
        const float *yr = y + (size_t)t * D;
        for (int d = 0; d < D; d++) xr[d] = yr[d] * s[d] + xr[d];
    }
}

/* softmax over one row of n scores, in place (max subtracted first, as torch.softmax). */
static void softmax_row(float *row, int n) {
    int j = 0;
    float mx = row[0], sum = 0.0f;
#ifdef SA3D_VMATH_AVX2
    __m256 vmx = _mm256_set1_ps(row[0]);
    for (; j + 8 <= n; j += 8) vmx = _mm256_max_ps(vmx, _mm256_loadu_ps(row + j));
    mx = sa3d_hmax8(vmx);
#endif
    for (; j < n; j++) mx = row[j] > mx ? row[j] : mx;
    j = 0;
#ifdef SA3D_VMATH_AVX2
    __m256 vsum = _mm256_setzero_ps(), vm = _mm256_set1_ps(mx);
    for (; j + 8 <= n; j += 8) {
        __m256 e = sa3d_exp8(_mm256_sub_ps(_mm256_loadu_ps(row + j), vm));
        _mm256_storeu_ps(row + j, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    sum = sa3d_hsum8(vsum);
#endif
    for (; j < n; j++) { row[j] = sa3d_expf(row[j] - mx); sum += row[j]; }
    float inv = 1.0f / sum;
    j = 0;
#ifdef SA3D_VMATH_AVX2
    __m256 vinv = _mm256_set1_ps(inv);
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(row + j, _mm256_mul_ps(_mm256_loadu_ps(row + j), vinv));
#endif
    for (; j < n; j++) row[j] *= inv;
}

/* Attention works on tasks (head, block of ATT_QB query rows), each with its own scores block [ATT_QB][T]
 * that stays in cache between the two GEMMs. With the OpenMP OpenBLAS build, tasks run in parallel and each GEMM
 * runs single-threaded inside its task (OpenBLAS does so inside a parallel region), so every output element is
 * computed the same way whatever the thread count. With another BLAS, tasks run in order and BLAS threads. */
#define ATT_QB 128

static int attention_threads(void) {
#if defined(SA3D_BLAS_OPENMP) && defined(_OPENMP)
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* One block per thread that will run tasks; never more than the cores (more threads than cores would only
 * allocate more scratch for no speed). */
int sa3d_attention_blocks(int n_threads) {
#if defined(SA3D_BLAS_OPENMP) && defined(_OPENMP)
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int n = n_threads > 0 ? n_threads : (int)(cores > 0 ? cores : 1);
    return cores > 0 && n > cores ? (int)cores : n;
#else
    (void)n_threads;
    return 1;
#endif
}

size_t sa3d_attention_scratch_floats(int T, int blocks) { return (size_t)blocks * ATT_QB * (size_t)T; }

static void attention_task(float *ctx, const float *q, const float *k, const float *v, int T, int Dh, int ld,
                           float scale, int h, int q0, float *scores) {
    int rows = T - q0 < ATT_QB ? T - q0 : ATT_QB;
    const float *qh = q + (size_t)h * Dh, *kh = k + (size_t)h * Dh, *vh = v + (size_t)h * Dh;
    /* scores[rows][T] = scale * q_h[q0..] k_h^T  (torch: matmul(q, k^T) * scaling) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, T, Dh, scale, qh + (size_t)q0 * ld, ld, kh, ld, 0.0f,
                scores, T);
    for (int r = 0; r < rows; r++) softmax_row(scores + (size_t)r * T, T);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, Dh, T, 1.0f, scores, T, vh, ld, 0.0f,
                ctx + (size_t)q0 * ld + (size_t)h * Dh, ld);
}

void sa3d_attention(float *ctx, const float *q, const float *k, const float *v, int T, int n_heads, int Dh,
                    int ld, float scale, float *scores, int scratch_blocks) {
    int blocks = (T + ATT_QB - 1) / ATT_QB, tasks = n_heads * blocks, nt = attention_threads();
    if (nt > scratch_blocks) nt = scratch_blocks;   /* a thread beyond the scratch would write past it */
    (void)nt;   /* read only by the pragma, which a build without OpenMP ignores */
    #pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int tid = 0;
#if defined(SA3D_BLAS_OPENMP) && defined(_OPENMP)
        tid = omp_get_thread_num();
#endif
        float *sc = scores + (size_t)tid * ATT_QB * T;
        #pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < tasks; task++)
            attention_task(ctx, q, k, v, T, Dh, ld, scale, task / blocks, (task % blocks) * ATT_QB, sc);
    }
}

void sa3d_ref_attention(float *ctx, const float *q, const float *k, const float *v, int T, int n_heads, int Dh,
                        int ld, float scale) {
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < T; i++) {
            const float *qi = q + (size_t)i * ld + (size_t)h * Dh;
            double mx = -HUGE_VAL, sum = 0.0;
            for (int j = 0; j < T; j++) {
                double s = 0.0;
                for (int d = 0; d < Dh; d++) s += (double)qi[d] * (double)k[(size_t)j * ld + (size_t)h * Dh + d];
                mx = fmax(mx, s * (double)scale);
            }
            float *o = ctx + (size_t)i * ld + (size_t)h * Dh;
            for (int d = 0; d < Dh; d++) o[d] = 0.0f;
            double acc[1024];
            for (int d = 0; d < Dh && d < 1024; d++) acc[d] = 0.0;
            for (int j = 0; j < T; j++) {
                double s = 0.0;
                for (int d = 0; d < Dh; d++) s += (double)qi[d] * (double)k[(size_t)j * ld + (size_t)h * Dh + d];
                double p = exp(s * (double)scale - mx);
                sum += p;
                for (int d = 0; d < Dh && d < 1024; d++) acc[d] += p * (double)v[(size_t)j * ld + (size_t)h * Dh + d];
            }
            for (int d = 0; d < Dh && d < 1024; d++) o[d] = (float)(acc[d] / sum);
        }
}

/* ---- convolutions ---- */

/* Output rows per im2col band: enough to keep the GEMM efficient, bounded so col stays near 8 MiB. */
static int conv_band_rows(int Ci, int k, int Wo) {
    size_t per_row = (size_t)Ci * k * k * (size_t)Wo;
    size_t rows = ((size_t)2 << 20) / (per_row ? per_row : 1);
    return rows < 1 ? 1 : (int)(rows > 1u << 20 ? 1u << 20 : rows);
}

size_t sa3d_conv2d_scratch_floats(int Ci, int k, int Wo) {
    return (size_t)conv_band_rows(Ci, k, Wo) * (size_t)Ci * k * k * (size_t)Wo;
}

void sa3d_conv2d(float *out, const float *in, const float *w, const float *b, int Ci, int H, int W, int Co, int k,
                 int stride, int pad, float *col, size_t col_floats) {
    int Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
    int K = Ci * k * k;
    int band = (int)(col_floats / ((size_t)K * Wo));
    if (band < 1) band = 1;
    if (band > Ho) band = Ho;
    size_t plane = (size_t)Ho * Wo;
    for (int y0 = 0; y0 < Ho; y0 += band) {
        int rows = Ho - y0 < band ? Ho - y0 : band;
        int n = rows * Wo;
        /* col[K][n]: row (ci, ky, kx), column (y, x) of the band */
        #pragma omp parallel for schedule(static)
        for (int r = 0; r < K; r++) {
            int ci = r / (k * k), ky = (r / k) % k, kx = r % k;
            float *dst = col + (size_t)r * n;
            const float *src = in + (size_t)ci * H * W;
            /* the output columns [xa, xb) read inside the image (ix = x stride - pad + kx in [0, W)); the rest is
             * zero padding, so the inner loop needs no bounds test (and is a copy at stride 1) */
            int xa = pad - kx > 0 ? (pad - kx + stride - 1) / stride : 0;
            int xb = W - 1 + pad - kx >= 0 ? (W - 1 + pad - kx) / stride + 1 : 0;
            if (xa > Wo) xa = Wo;   /* a kernel wider than the padded input reaches past every output column */
            if (xb > Wo) xb = Wo;
            if (xb < xa) xb = xa;
            for (int y = 0; y < rows; y++) {
                int iy = (y0 + y) * stride - pad + ky;
                float *d = dst + (size_t)y * Wo;
                if (iy < 0 || iy >= H) { memset(d, 0, (size_t)Wo * sizeof(float)); continue; }
                ptrdiff_t at = (ptrdiff_t)iy * W - pad + kx;   /* src[at + x stride]: input column ix */
                memset(d, 0, (size_t)xa * sizeof(float));
                if (stride == 1) memcpy(d + xa, src + at + xa, (size_t)(xb - xa) * sizeof(float));
                else
                    for (int x = xa; x < xb; x++) d[x] = src[at + (ptrdiff_t)x * stride];
                memset(d + xb, 0, (size_t)(Wo - xb) * sizeof(float));
            }
        }
        float *o = out + (size_t)y0 * Wo;
        float beta = 0.0f;
        if (b) {
            #pragma omp parallel for schedule(static)
            for (int c = 0; c < Co; c++)
                for (int i = 0; i < n; i++) o[(size_t)c * plane + i] = b[c];
            beta = 1.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Co, n, K, 1.0f, w, K, col, n, beta, o, (int)plane);
    }
}

void sa3d_ref_conv2d(float *out, const float *in, const float *w, const float *b, int Ci, int H, int W, int Co,
                     int k, int stride, int pad) {
    int Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
    for (int co = 0; co < Co; co++)
        for (int y = 0; y < Ho; y++)
            for (int x = 0; x < Wo; x++) {
                double s = b ? (double)b[co] : 0.0;
                for (int ci = 0; ci < Ci; ci++)
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            int iy = y * stride - pad + ky, ix = x * stride - pad + kx;
                            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                            s += (double)w[(((size_t)co * Ci + ci) * k + ky) * k + kx] *
                                 (double)in[((size_t)ci * H + iy) * W + ix];
                        }
                out[((size_t)co * Ho + y) * Wo + x] = (float)s;
            }
}

void sa3d_conv_transpose2d(float *out, const float *in, const float *w, const float *b, int Ci, int H, int W,
                           int Co, int f, float *tmp) {
    int HW = H * W, R = Co * f * f;
    /* tmp[(co, i, j)][HW] = sum_ci w[ci][(co, i, j)] in[ci][HW] */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, R, HW, Ci, 1.0f, w, R, in, HW, 0.0f, tmp, HW);
    int Wf = W * f;
    #pragma omp parallel for schedule(static)
    for (int co = 0; co < Co; co++)
        for (int i = 0; i < f; i++)
            for (int j = 0; j < f; j++) {
                const float *t = tmp + ((size_t)(co * f + i) * f + j) * HW;
                float bias = b ? b[co] : 0.0f;
                for (int y = 0; y < H; y++)
                    for (int x = 0; x < W; x++)
                        out[((size_t)co * H * f + (size_t)y * f + i) * Wf + (size_t)x * f + j] = t[y * W + x] + bias;
            }
}

/* ---- resizes (PyTorch UpSample semantics) ---- */

/* Source coordinate of output index i (area_pixel_compute_source_index). */
static float src_index(float scale, int i, int align_corners, int cubic) {
    if (align_corners) return scale * (float)i;
    float s = scale * ((float)i + 0.5f) - 0.5f;
    return (!cubic && s < 0.0f) ? 0.0f : s;
}

static float compute_scale(int in, int out, int align_corners) {
    if (align_corners) return out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f;
    return (float)in / (float)out;
}

/* Output columns per chunk of precomputed source columns and weights (on the stack; reused by every row). */
#define RESIZE_CHUNK 256

void sa3d_resize_bilinear(float *out, const float *in, int C, int H, int W, int Ho, int Wo, int align_corners) {
    float sh = compute_scale(H, Ho, align_corners), sw = compute_scale(W, Wo, align_corners);
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const float *src = in + (size_t)c * H * W;
        float *dst = out + (size_t)c * Ho * Wo;
        int x0[RESIZE_CHUNK], x1[RESIZE_CHUNK];
        float lx0[RESIZE_CHUNK], lx1[RESIZE_CHUNK];
        for (int xc = 0; xc < Wo; xc += RESIZE_CHUNK) {
            int nx = Wo - xc < RESIZE_CHUNK ? Wo - xc : RESIZE_CHUNK;
            for (int j = 0; j < nx; j++) {
                float rx = src_index(sw, xc + j, align_corners, 0);
                x0[j] = (int)rx;
                x1[j] = x0[j] + (x0[j] < W - 1);
                lx1[j] = rx - (float)x0[j];
                lx0[j] = 1.0f - lx1[j];
            }
            for (int y = 0; y < Ho; y++) {
                float ry = src_index(sh, y, align_corners, 0);
                int y0 = (int)ry, y1 = y0 + (y0 < H - 1);
                float ly1 = ry - (float)y0, ly0 = 1.0f - ly1;
                const float *r0 = src + (size_t)y0 * W, *r1 = src + (size_t)y1 * W;
                float *d = dst + (size_t)y * Wo + xc;
                for (int j = 0; j < nx; j++)
                    d[j] = ly0 * (lx0[j] * r0[x0[j]] + lx1[j] * r0[x1[j]]) + ly1 * (lx0[j] * r1[x0[j]] + lx1[j] * r1[x1[j]]);
            }
        }
    }
}

static float cubic1(float x, float A) { return ((A + 2.0f) * x - (A + 3.0f)) * x * x + 1.0f; }
static float cubic2(float x, float A) { return ((A * x - 5.0f * A) * x + 8.0f * A) * x - 4.0f * A; }

static void cubic_coeffs(float c[4], float t) {
    const float A = -0.75f;
    c[0] = cubic2(t + 1.0f, A);
    c[1] = cubic1(t, A);
    c[2] = cubic1(1.0f - t, A);
    c[3] = cubic2(2.0f - t, A);
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* Antialiased bicubic filter (a = -0.5, as PIL): PyTorch's _upsample_bicubic2d_aa. */
static float aa_cubic(float x) {
    const float a = -0.5f;
    if (x < 0.0f) x = -x;
    if (x < 1.0f) return ((a + 2.0f) * x - (a + 3.0f)) * x * x + 1.0f;
    if (x < 2.0f) return (((x - 5.0f) * x + 8.0f) * x - 4.0f) * a;
    return 0.0f;
}

/* One antialiased pass along an axis of length n_in -> n_out for `lines` lines with element stride `stride`
 * and line stride in_ls/out_ls. */
static void aa_pass(float *out, const float *in, int n_in, int n_out, int lines, size_t in_ls, size_t out_ls,
                    size_t stride) {
    float scale = (float)n_in / (float)n_out;
    float support = scale >= 1.0f ? 2.0f * scale : 2.0f;
    float invscale = scale >= 1.0f ? 1.0f / scale : 1.0f;
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < n_out; i++) {
        float center = scale * ((float)i + 0.5f);
        int xmin = (int)(center - support + 0.5f);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5f);
        if (xmax > n_in) xmax = n_in;
        float wts[512];
        int n = xmax - xmin;
        if (n > 512) n = 512;   /* callers keep n_in <= 512 (position grids are ~37) */
        float total = 0.0f;
        for (int j = 0; j < n; j++) { wts[j] = aa_cubic(((float)(j + xmin) - center + 0.5f) * invscale); total += wts[j]; }
        for (int j = 0; j < n; j++) wts[j] = total != 0.0f ? wts[j] / total : 0.0f;
        for (int l = 0; l < lines; l++) {
            const float *src = in + (size_t)l * in_ls + (size_t)xmin * stride;
            float s = 0.0f;
            for (int j = 0; j < n; j++) s += wts[j] * src[(size_t)j * stride];
            out[(size_t)l * out_ls + (size_t)i * stride] = s;
        }
    }
}

void sa3d_resize_bicubic(float *out, const float *in, int C, int H, int W, int Ho, int Wo, int antialias,
                         float *tmp) {
    if (antialias) {
        /* width first into tmp[C][H][Wo], then height */
        for (int c = 0; c < C; c++) {
            aa_pass(tmp + (size_t)c * H * Wo, in + (size_t)c * H * W, W, Wo, H, (size_t)W, (size_t)Wo, 1);
            aa_pass(out + (size_t)c * Ho * Wo, tmp + (size_t)c * H * Wo, H, Ho, Wo, 1, 1, (size_t)Wo);
        }
        return;
    }
    sa3d_resize_bicubic_scaled(out, in, C, H, W, Ho, Wo, compute_scale(H, Ho, 0), compute_scale(W, Wo, 0));
}

void sa3d_resize_bicubic_scaled(float *out, const float *in, int C, int H, int W, int Ho, int Wo, float sh, float sw) {
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const float *src = in + (size_t)c * H * W;
        float *dst = out + (size_t)c * Ho * Wo;
        for (int y = 0; y < Ho; y++) {
            float ry = src_index(sh, y, 0, 1);
            int iy = (int)floorf(ry);
            float cy[4];
            cubic_coeffs(cy, ry - (float)iy);
            for (int x = 0; x < Wo; x++) {
                float rx = src_index(sw, x, 0, 1);
                int ix = (int)floorf(rx);
                float cx[4];
                cubic_coeffs(cx, rx - (float)ix);
                float rows[4];
                for (int a = 0; a < 4; a++) {
                    const float *r = src + (size_t)clampi(iy - 1 + a, 0, H - 1) * W;
                    rows[a] = r[clampi(ix - 1, 0, W - 1)] * cx[0] + r[clampi(ix, 0, W - 1)] * cx[1] +
                              r[clampi(ix + 1, 0, W - 1)] * cx[2] + r[clampi(ix + 2, 0, W - 1)] * cx[3];
                }
                dst[(size_t)y * Wo + x] = rows[0] * cy[0] + rows[1] * cy[1] + rows[2] * cy[2] + rows[3] * cy[3];
            }
        }
    }
}

long sa3d_first_nonfinite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return (long)i;
    return -1;
}

/* ---- fixed-order product (the baseline matcher's similarity, METHOD.md 6.2 step 4) ----
 * OpenBLAS rounds an element of A.B differently depending on where its row falls in the product (its tail
 * kernels and thread split change the order): a 1-row product differs from the same row inside a 64-row one
 * in 137 of 3,600 elements (OpenBLAS 0.3.21, Zen). The batched matcher must equal the per-pair one, so both
 * use this: every element is the chain acc = fmaf(a[k], b[k], acc) for k = 0..K-1 from 0, the same whatever
 * M, the tiling, the vector width or the thread count (fmaf rounds once, like the FMA instruction). */
#if defined(__AVX__) && defined(__FMA__)
#include <immintrin.h>
#endif

#define FO_MR 4    /* rows of A per tile */
#define FO_NR 16   /* columns of B per tile: 4 x 2 AVX accumulators + 2 loads + 1 broadcast in 16 registers */

static void fo_tile(float *S, const float *A, const float *B, int i0, int j0, int mr, int nr, int K, int N) {
#if defined(__AVX__) && defined(__FMA__)
    if (mr == FO_MR && nr == FO_NR) {
        __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
               c31 = c00;
        const float *a0 = A + (size_t)i0 * K, *a1 = a0 + K, *a2 = a1 + K, *a3 = a2 + K;
        for (int k = 0; k < K; k++) {
            const float *b = B + (size_t)k * N + j0;
            __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), a;
            a = _mm256_broadcast_ss(a0 + k); c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
            a = _mm256_broadcast_ss(a1 + k); c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
            a = _mm256_broadcast_ss(a2 + k); c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
            a = _mm256_broadcast_ss(a3 + k); c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
        }
        float *s = S + (size_t)i0 * N + j0;
        _mm256_storeu_ps(s, c00); _mm256_storeu_ps(s + 8, c01); s += N;
        _mm256_storeu_ps(s, c10); _mm256_storeu_ps(s + 8, c11); s += N;
        _mm256_storeu_ps(s, c20); _mm256_storeu_ps(s + 8, c21); s += N;
        _mm256_storeu_ps(s, c30); _mm256_storeu_ps(s + 8, c31);
        return;
    }
#endif
    float acc[FO_MR][FO_NR] = { { 0.0f } };
    for (int k = 0; k < K; k++) {
        const float *b = B + (size_t)k * N + j0;
        for (int r = 0; r < mr; r++) {
            float a = A[(size_t)(i0 + r) * K + k];
            for (int j = 0; j < nr; j++) acc[r][j] = fmaf(a, b[j], acc[r][j]);
        }
    }
    for (int r = 0; r < mr; r++) memcpy(S + (size_t)(i0 + r) * N + j0, acc[r], (size_t)nr * sizeof(float));
}

void sa3d_gemm_fixed_order(float *S, const float *A, const float *B, int M, int K, int N) {
    int mb = (M + FO_MR - 1) / FO_MR, nb = (N + FO_NR - 1) / FO_NR;
    /* column block outer: a thread's consecutive tiles share B's K x 16 column block (48 KB for K = 768) */
    #pragma omp parallel for schedule(static)
    for (long t = 0; t < (long)mb * nb; t++) {
        int i0 = (int)(t % mb) * FO_MR, j0 = (int)(t / mb) * FO_NR;
        fo_tile(S, A, B, i0, j0, M - i0 < FO_MR ? M - i0 : FO_MR, N - j0 < FO_NR ? N - j0 : FO_NR, K, N);
    }
}

void sa3d_ref_gemm_fixed_order(float *S, const float *A, const float *B, int M, int K, int N) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++) acc = fmaf(A[(size_t)i * K + k], B[(size_t)k * N + j], acc);
            S[(size_t)i * N + j] = acc;
        }
}
