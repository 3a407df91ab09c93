/* CPU float32 kernels for the networks: GEMM-backed linear layers and convolutions (OpenBLAS), layer norm,
 * activations, attention, and PyTorch-exact resizes. Each names the PyTorch op it mirrors. Shapes are written
 * [outer]...[inner], row-major. Kernels never allocate: callers pass scratch sized by the *_scratch functions. */
#ifndef SA3D_KERNELS_H
#define SA3D_KERNELS_H

#include <stddef.h>

/* nn.Linear: y[T][N] = x[T][K] . w[N][K]^T + b[N] (b may be NULL). */
void sa3d_linear(float *y, const float *x, const float *w, const float *b, int T, int K, int N);
/* 1x1 convolution (channel-first GEMM): out[Co][HW] = w[Co][Ci] . in[Ci][HW] + b[Co] (b may be NULL).
 * With in_tokens set, the input is token-major in[HW][Ci] (a transformer's output read as a feature map). */
void sa3d_conv1x1(float *out, const float *in, const float *w, const float *b, int Ci, int HW, int Co, int in_tokens);
/* nn.LayerNorm over the last dim: y[T][D] (may alias x). Two-pass mean/variance in double. */
void sa3d_layernorm(float *y, const float *x, const float *g, const float *b, int T, int D, float eps);
/* Activations, in place. gelu is the exact erf form (nn.GELU()), gelu_tanh the tanh approximation. */
void sa3d_gelu(float *x, size_t n);
void sa3d_gelu_tanh(float *x, size_t n);
void sa3d_relu(float *x, size_t n);
void sa3d_silu(float *x, size_t n);
/* SwiGLU gate: out[T][M] = silu(in[t][0..M)) * in[t][M..2M), in: [T][2M]. */
void sa3d_swiglu(float *out, const float *in, int T, int M);
/* Layer scale + residual: x[T][D] += s[D] * y[T][D]. */
void sa3d_add_scaled(float *x, const float *y, const float *s, int T, int D);
/* y = relu(x) (y may be x: sa3d_relu); y = a + b (y may be a or b). */
void sa3d_relu_copy(float *y, const float *x, size_t n);
void sa3d_add(float *y, const float *a, const float *b, size_t n);

/* S[M][N] = A[M][K] . B[K][N] with every element the fmaf chain over k = 0..K-1 in order: bit-identical for
 * any M, any row position, any thread count and the naive twin (OpenBLAS is not; see kernels.c). OpenMP over
 * 4 x 16 tiles; call it outside parallel regions. */
void sa3d_gemm_fixed_order(float *S, const float *A, const float *B, int M, int K, int N);
void sa3d_ref_gemm_fixed_order(float *S, const float *A, const float *B, int M, int K, int N);

/* Multi-head self-attention, eager PyTorch semantics: per head h, softmax(q_h k_h^T * scale) v_h.
 * q, k, v, ctx: [T][ld] with head h in columns [h*Dh, (h+1)*Dh). scores: sa3d_attention_scratch_floats(T,
 * blocks) with blocks = sa3d_attention_blocks(n_threads) for the thread count the caller will run with (0: all
 * cores); each thread fills its own block, so the pass runs on at most `blocks` threads whatever the thread count
 * in effect then. */
int sa3d_attention_blocks(int n_threads);
size_t sa3d_attention_scratch_floats(int T, int blocks);
void sa3d_attention(float *ctx, const float *q, const float *k, const float *v, int T, int n_heads, int Dh,
                    int ld, float scale, float *scores, int blocks);
/* Naive reference twin (tests). */
void sa3d_ref_attention(float *ctx, const float *q, const float *k, const float *v, int T, int n_heads, int Dh,
                        int ld, float scale);

/* nn.Conv2d (NCHW, one image): out[Co][Ho][Wo] from in[Ci][H][W], w[Co][Ci][k][k], b[Co] or NULL,
 * Ho = (H + 2 pad - k) / stride + 1. Im2col in row bands through col (sa3d_conv2d_scratch_floats). */
size_t sa3d_conv2d_scratch_floats(int Ci, int k, int Wo);
void sa3d_conv2d(float *out, const float *in, const float *w, const float *b, int Ci, int H, int W, int Co, int k,
                 int stride, int pad, float *col, size_t col_floats);
void sa3d_ref_conv2d(float *out, const float *in, const float *w, const float *b, int Ci, int H, int W, int Co,
                     int k, int stride, int pad);
/* nn.ConvTranspose2d with kernel == stride == f, padding 0: out[Co][H f][W f], w[Ci][Co][f][f].
 * tmp: Co*f*f*H*W floats. */
void sa3d_conv_transpose2d(float *out, const float *in, const float *w, const float *b, int Ci, int H, int W,
                           int Co, int f, float *tmp);

/* F.interpolate(mode="bilinear") on [C][H][W] -> [C][Ho][Wo]. */
void sa3d_resize_bilinear(float *out, const float *in, int C, int H, int W, int Ho, int Wo, int align_corners);
/* F.interpolate(mode="bicubic", align_corners=False[, antialias]) on [C][H][W] -> [C][Ho][Wo].
 * tmp (antialias only): C*H*Wo floats. */
void sa3d_resize_bicubic(float *out, const float *in, int C, int H, int W, int Ho, int Wo, int antialias,
                         float *tmp);
/* The same without antialias, sampling input (o + 0.5) s - 0.5 for output o with the given scales sh, sw (input
 * pixels per output pixel) instead of H / Ho, W / Wo: F.interpolate(scale_factor=...) samples by 1 / scale_factor. */
void sa3d_resize_bicubic_scaled(float *out, const float *in, int C, int H, int W, int Ho, int Wo, float sh, float sw);

/* Index of the first non-finite value in x[n], or -1. */
long sa3d_first_nonfinite(const float *x, size_t n);

#endif
