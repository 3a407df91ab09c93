// The networks' CUDA kernels (src/nn/cuda/kernels.cuh) on the CPU through tests/cuda_emu.hh, so their indexing,
// tile loads, masking and barriers are checked in every build. tests/test_nn_cuda checks the same kernels on a GPU,
// inside whole passes.
//   - The fused attention (mma.sync, ldmatrix, cp.async double buffering; 64 and 128 query rows per block; fp16
//     and bf16; the query/key/value biases folded in) against the library's double-precision attention. Each
//     launch runs in both of the emulator's orders: late copies in lockstep, early copies with warp 0 running
//     ahead.
//   - The row kernels (residual + layer norm, bias + activation, SwiGLU), 4 elements per access and 1, and the
//     unfused attention's softmax, against double precision.
//   - The DPT's implicit-GEMM convolution (fp16, bf16 and TF32; 32 and 64 channels a block; strides 1 and 2)
//     against a double-precision convolution.
//
// Attention bound, from the kernel's arithmetic: with the inputs already rounded to the 16-bit type (q + bq as
// the kernel rounds it), the two roundings left are P (to the 16-bit type before P V) and the output; each costs
// at most u = 2^-11 (fp16) or 2^-8 (bf16) relative, of at most max |v| (P v) or max |v + bv| (the output). So
// |ours - exact| <= 2 u max(|v|, |v + bv|), with 10 % for the fp32 sums. A wrong lane, register or tile index
// gives errors of order max |v|.
#include "cuda_emu.hh"
#include "nn/cuda/kernels.cuh"

extern "C" {
#include "base/rng.h"
#include "tensor/kernels.h"
}
#include "t.h"

// 1.1: the emulator's conversions, which every other case relies on.
static void case_half_conversions(void) {
    struct { float f; uint16_t h; } fp16[] = {
        { 1.0f, 0x3c00 },       { -2.0f, 0xc000 },     { 65504.0f, 0x7bff },  { 65520.0f, 0x7c00 },
        { 65519.0f, 0x7bff },   { 5.9604645e-8f, 0x0001 }, { 2.9802322e-8f, 0x0000 },   // 2^-24; 2^-25 ties to 0
        { 1.00048828125f, 0x3c00 },   // 1 + 2^-11: a tie, to even
        { 1.00146484375f, 0x3c02 },   // 1 + 3 2^-11: a tie, to even (up)
        { 6.097555e-5f, 0x03ff },     // largest subnormal
        { 0.0f, 0x0000 },
    };
    for (auto &c : fp16) {
        __half h = __float2half_rn(c.f);
        if (h.x != c.h) T_FAIL("fp16(%.9g) = 0x%04x, expected 0x%04x", (double)c.f, h.x, c.h);
        if (c.h != 0x7c00 && __half2float(__half{ c.h }) != __half2float(h)) T_FAIL("fp16 round trip of 0x%04x", c.h);
    }
    T_CHECK(__half2float(__half{ 0x0001 }) == ldexpf(1.0f, -24));
    T_CHECK(__half2float(__half{ 0x8400 }) == -ldexpf(1.0f, -14));
    T_CHECK(isinf(__half2float(__half{ 0xfc00 })) && __half2float(__half{ 0xfc00 }) < 0.0f);
    T_CHECK(__float2bfloat16_rn(1.0f).x == 0x3f80);
    T_CHECK(__float2bfloat16_rn(1.00390625f).x == 0x3f80);   // 1 + 2^-8: a tie, to even
    T_CHECK(__float2bfloat16_rn(1.01171875f).x == 0x3f82);   // 1 + 3 2^-8: a tie, to even (up)
    T_CHECK(__bfloat162float(__nv_bfloat16{ 0xc040 }) == -3.0f);
    // TF32 (cvt.rna): 10-bit significand, ties away from zero
    T_CHECK(round_tf32(1.0f + ldexpf(1.0f, -11)) == 1.0f + ldexpf(1.0f, -10));
    T_CHECK(round_tf32(-(1.0f + ldexpf(1.0f, -11))) == -(1.0f + ldexpf(1.0f, -10)));
    T_CHECK(round_tf32(1.0f + ldexpf(1.0f, -11) - ldexpf(1.0f, -20)) == 1.0f);
    T_CHECK(round_tf32(1.0f + 3 * ldexpf(1.0f, -11)) == 1.0f + ldexpf(1.0f, -9));
    T_CHECK(round_tf32(3.0f) == 3.0f && isinf(round_tf32(INFINITY)) && isnan(round_tf32(NAN)));
}

// One attention problem: B images of T tokens, H heads of 64, random q, k, v in [-amp, amp] rounded to A and,
// when bias_amp > 0, biases in [-bias_amp, bias_amp]; the kernel with MT row tiles per warp against
// sa3d_ref_attention (double) on q + bq, k + bk, v + bv.
// Runs f in each of the emulator's orders, lockstep and run-ahead (a copy waited for too late, or a shared slice
// refilled too early, shows in one of them), and restores the mode.
template <typename F> static void in_both_orders(F f) {
    emu_order before = emu_order_mode;
    for (emu_order order : { EMU_LOCKSTEP, EMU_RUN_AHEAD }) {
        emu_order_mode = order;
        f();
    }
    emu_order_mode = before;
}

template <typename A, int MT>
static void check_attention(int B, int T, int H, float amp, float bias_amp, double u, const char *what) {
    int D = 64 * H, ld = 3 * D;
    size_t n = (size_t)B * T * ld;
    std::vector<A> qkv(n), ctx((size_t)B * T * D);
    std::vector<float> qkv_f(n), bias(3 * (size_t)D), ref((size_t)T * ld);
    sa3d_rng rng = sa3d_rng_for(6, (uint64_t)T, (uint64_t)(H * 16 + B));
    for (auto &b : bias) b = bias_amp * (2.0f * (float)sa3d_rng_uniform(&rng) - 1.0f);
    double vmax = 0.0;
    for (size_t i = 0; i < n; i++) {
        size_t c = i % ld;
        qkv[i] = from_f<A>(amp * (2.0f * (float)sa3d_rng_uniform(&rng) - 1.0f));
        qkv_f[i] = c < (size_t)D ? to_f(from_f<A>(to_f(qkv[i]) + bias[c])) : to_f(qkv[i]) + bias[c];
        if (c >= (size_t)2 * D) vmax = fmax(vmax, fmax(fabs((double)to_f(qkv[i])), fabs((double)qkv_f[i])));
    }
    float scale = 0.125f;   // 1 / sqrt(64)
    dim3 grid((unsigned)((T + 64 * MT - 1) / (64 * MT)), (unsigned)H, (unsigned)B);
    double worst = 0.0, bound = 2.0 * u * vmax * 1.1;
    in_both_orders([&] {
        for (auto &c : ctx) c = from_f<A>(NAN);   // every element must be written
        const float *bp = bias_amp > 0.0f ? bias.data() : NULL;
        emu_launch(grid, 128, [&] { k_flash_attn<A, MT>(ctx.data(), qkv.data(), bp, T, D, scale); });
        for (int b = 0; b < B; b++) {
            const float *q = qkv_f.data() + (size_t)b * T * ld;
            sa3d_ref_attention(ref.data(), q, q + D, q + 2 * D, T, H, 64, ld, scale);
            for (int t = 0; t < T; t++)
                for (int d = 0; d < D; d++) {
                    double got = to_f(ctx[((size_t)b * T + t) * D + d]), want = ref[(size_t)t * ld + d];
                    double e = fabs(got - want);
                    if (!(e <= worst)) worst = e;   // NaN (an element never written) counts as the worst
                }
        }
    });
    printf("       %-44s max |err| %.3g (bound %.3g)\n", what, worst, bound);
    if (!(worst <= bound)) T_FAIL("%s: max |err| %.3g > bound %.3g", what, worst, bound);
}

// 2.1 / 2.2: shapes that cover one partial tile, exact multiples of the tile and the block, a last key tile of
// one key, several heads and images (the per-image offsets), 64 and 128 rows per block.
template <typename A> static void attention_shapes(double u) {
    check_attention<A, 1>(1, 1, 1, 1.0f, 0.0f, u, "T 1, 1 head, 64 rows a block");
    check_attention<A, 1>(1, 64, 1, 1.0f, 1.0f, u, "T 64, 1 head, 64 rows, biases");
    check_attention<A, 1>(2, 65, 2, 1.0f, 1.0f, u, "T 65 x 2 images, 2 heads, 64 rows, biases");
    check_attention<A, 2>(1, 1, 1, 1.0f, 1.0f, u, "T 1, 1 head, 128 rows, biases");
    check_attention<A, 2>(1, 128, 1, 1.0f, 0.0f, u, "T 128, 1 head, 128 rows");
    check_attention<A, 2>(2, 150, 3, 1.0f, 1.0f, u, "T 150 x 2 images, 3 heads, 128 rows, biases");
    check_attention<A, 2>(1, 257, 1, 1.0f, 0.0f, u, "T 257 (last key tile: 1 key), 128 rows");
}
static void case_attention_fp16(void) { attention_shapes<__half>(ldexp(1.0, -11)); }
static void case_attention_bf16(void) { attention_shapes<__nv_bfloat16>(ldexp(1.0, -8)); }

// 2.3: large scores (|q k| scale up to 64 * 16 / 8 = 128, exp of 185 in fp32 would overflow): the running max
// keeps every exponential <= 1, so the outputs stay finite and within the bound.
static void case_attention_large_scores(void) {
    check_attention<__half, 1>(1, 100, 1, 4.0f, 0.0f, ldexp(1.0, -11), "fp16, |q|, |k|, |v| <= 4, 64 rows");
    check_attention<__half, 2>(1, 200, 2, 4.0f, 4.0f, ldexp(1.0, -11), "fp16, |q|, |k|, |v|, |b| <= 4, 128 rows");
}

// ---- row kernels ----

static float uniform(sa3d_rng *r, float amp) { return amp * (2.0f * (float)sa3d_rng_uniform(r) - 1.0f); }

// k_residual_norm with V elements per access: rows x D (rows not a multiple of the 8 a block takes), x fp32 and y
// in A. Three uses: residual + norm into A (every later norm of a layer), norm alone into fp32 (the final and
// stage norms), residual alone (the last layer). Reference in double from the same rounded inputs: the residual
// within 1e-6 relative (one fp32 multiply-add), the norm within u of its value plus 1e-5 (fp32 sums).
template <typename A, int V> static void check_residual_norm(int rows, int D, double u) {
    size_t n = (size_t)rows * D;
    sa3d_rng rng = sa3d_rng_for(7, (uint64_t)D, (uint64_t)V);
    std::vector<float> x(n), bias(D), s(D), g(D), b(D), x_ref(n), out32(n);
    std::vector<A> y(n), out(n);
    for (auto &v : x) v = 3.0f + uniform(&rng, 2.0f);   // an offset: the centred variance matters
    for (auto &v : y) v = from_f<A>(uniform(&rng, 1.0f));
    for (int d = 0; d < D; d++) {
        bias[d] = uniform(&rng, 0.5f), s[d] = uniform(&rng, 1.0f), g[d] = 1.0f + uniform(&rng, 0.5f);
        b[d] = uniform(&rng, 0.5f);
    }
    for (size_t i = 0; i < n; i++)
        x_ref[i] = (float)((double)x[i] + (double)s[i % D] * ((double)to_f(y[i]) + (double)bias[i % D]));
    auto norm = [&](const std::vector<float> &xs, size_t r, int d) {   // in double
        double mean = 0.0, var = 0.0;
        for (int k = 0; k < D; k++) mean += (double)xs[r * D + k];
        mean /= D;
        for (int k = 0; k < D; k++) var += ((double)xs[r * D + k] - mean) * ((double)xs[r * D + k] - mean);
        return ((double)xs[r * D + d] - mean) / sqrt(var / D + 1e-6) * (double)g[d] + (double)b[d];
    };
    dim3 grid((unsigned)((rows + 7) / 8));
    std::vector<float> x0 = x;
    // residual + norm into A
    for (auto &o : out) o = from_f<A>(NAN);
    emu_launch(grid, 256, [&] {
        k_residual_norm<A, A, V>(x.data(), y.data(), bias.data(), s.data(), out.data(), g.data(), b.data(), rows, D,
                                 1e-6f);
    });
    auto residual_err = [&] {   // worst relative error of x against x_ref
        double worst = 0.0;
        for (size_t i = 0; i < n; i++) {
            double e = fabs((double)x[i] - (double)x_ref[i]) / fmax(1.0, fabs((double)x_ref[i]));
            if (!(e <= worst)) worst = e;
        }
        return worst;
    };
    double worst_x = residual_err(), worst_n = 0.0, worst_f = 0.0;
    for (size_t i = 0; i < n; i++) {
        double want = norm(x_ref, i / D, (int)(i % D)), bnd = u * fabs(want) + 1e-5;
        double e = fabs((double)to_f(out[i]) - want) / bnd;
        if (!(e <= worst_n)) worst_n = e;
    }
    // norm alone, fp32 out, x unchanged
    std::vector<float> x_before = x;
    for (auto &o : out32) o = NAN;
    emu_launch(grid, 256, [&] {
        k_residual_norm<A, float, V>(x.data(), NULL, NULL, NULL, out32.data(), g.data(), b.data(), rows, D, 1e-6f);
    });
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)out32[i] - norm(x_ref, i / D, (int)(i % D)));
        if (!(e <= worst_f)) worst_f = e;
    }
    T_CHECK(x == x_before);
    // residual alone, from the first x again
    x = x0;
    emu_launch(grid, 256, [&] {
        k_residual_norm<A, A, V>(x.data(), y.data(), bias.data(), s.data(), (A *)NULL, NULL, NULL, rows, D, 1e-6f);
    });
    double worst_r = residual_err();
    printf("       rows %d, D %d, V %d: residual %.2g, %.2g; norm %.2g of bound; fp32 norm %.2g\n", rows, D, V, worst_x,
           worst_r, worst_n, worst_f);
    if (!(worst_x <= 1e-6) || !(worst_r <= 1e-6)) T_FAIL("residual: rel. err %.3g / %.3g > 1e-6", worst_x, worst_r);
    if (!(worst_n <= 1.0)) T_FAIL("norm into A: %.3g of the bound", worst_n);
    if (!(worst_f <= 1e-5)) T_FAIL("norm into fp32: err %.3g > 1e-5", worst_f);
}

// k_bias_act (GELU, and no bias with no activation) and k_swiglu with V elements per access; bound u |out| plus
// 4e-6 for the fp32 evaluation of GELU / SiLU (a few ulp of values up to 5).
template <typename A, int V> static void check_bias_act_swiglu(int rows, int N, double u) {
    size_t n = (size_t)rows * N;
    sa3d_rng rng = sa3d_rng_for(8, (uint64_t)N, (uint64_t)V);
    std::vector<float> bias(2 * (size_t)N);
    std::vector<A> y(n), y0, in(2 * n), out(n);
    for (auto &v : bias) v = uniform(&rng, 1.0f);
    for (auto &v : y) v = from_f<A>(uniform(&rng, 3.0f));
    for (auto &v : in) v = from_f<A>(uniform(&rng, 3.0f));
    y0 = y;
    double worst = 0.0;
    auto err = [&](A got, double want) {
        double e = fabs((double)to_f(got) - want) / (u * fabs(want) + 4e-6);
        if (!(e <= worst)) worst = e;
    };
    emu_launch(dim3((unsigned)rows), 256, [&] { k_bias_act<A, V>(y.data(), bias.data(), N, 0 /* GELU */); });
    for (size_t i = 0; i < n; i++) {
        double v = (double)to_f(y0[i]) + (double)bias[i % N];
        err(y[i], 0.5 * v * (1.0 + erf(v / sqrt(2.0))));
    }
    y = y0;
    emu_launch(dim3((unsigned)rows), 256, [&] { k_bias_act<A, V>(y.data(), NULL, N, ACT_NONE); });
    T_CHECK(!memcmp(y.data(), y0.data(), n * sizeof(A)));
    for (auto &o : out) o = from_f<A>(NAN);
    emu_launch(dim3((unsigned)rows), 256, [&] { k_swiglu<A, V>(out.data(), in.data(), bias.data(), N); });
    for (size_t i = 0; i < n; i++) {
        size_t r = i / N, j = i % N;
        double a = (double)to_f(in[r * 2 * N + j]) + (double)bias[j];
        double gt = (double)to_f(in[r * 2 * N + N + j]) + (double)bias[N + j];
        err(out[i], a / (1.0 + exp(-a)) * gt);
    }
    printf("       rows %d, N %d, V %d: bias + GELU, SwiGLU %.2g of bound\n", rows, N, V, worst);
    if (!(worst <= 1.0)) T_FAIL("bias + act / SwiGLU: %.3g of the bound", worst);
}

// 3.1 / 3.2: D = N = 36 (V = 4 and V = 1 on the same rows), 30 (V = 1: the launchers' choice), 1040 (several
// accesses per lane); 300 rows for bias_act (more columns than a block has threads at 1040 / 4 ... 1040).
template <typename A> static void row_kernels(double u) {
    check_residual_norm<A, 4>(13, 36, u);
    check_residual_norm<A, 1>(13, 36, u);
    check_residual_norm<A, 1>(9, 30, u);
    check_residual_norm<A, 4>(17, 1040, u);
    check_bias_act_swiglu<A, 4>(3, 36, u);
    check_bias_act_swiglu<A, 1>(3, 30, u);
    check_bias_act_swiglu<A, 4>(2, 1040, u);
    check_bias_act_swiglu<A, 1>(2, 1040, u);
}
static void case_rows_fp16(void) { row_kernels<__half>(ldexp(1.0, -11)); }
static void case_rows_bf16(void) { row_kernels<__nv_bfloat16>(ldexp(1.0, -8)); }
static void case_rows_fp32(void) { row_kernels<float>(ldexp(1.0, -23) * 4); }

// k_softmax (the unfused attention's): rows of fp32 scores in [-20, 20] (logits of real attention reach that) into
// probabilities of type P written over the scores, with pitch > n. Each probability within one rounding to P of
// the double-precision softmax of the same fp32 scores, plus 64 fp32 ulps for the exponentials and sums and, in
// fp16, half its smallest subnormal; the padding columns [n, pitch) exactly 0. Rows of 300 take the registers
// path, rows of 5000 the re-reading path, whose in-place writes need a barrier per chunk (both emulator orders).
// Scores rounded to the 16-bit type before the softmax, as the path once did, miss the bound 16-20 fold.
template <typename P> static void check_softmax(int rows, int n, int pitch, double u, double floor_abs) {
    size_t per_row = (size_t)pitch * sizeof(float) / sizeof(P);   // the probabilities' pitch in P elements
    sa3d_rng rng = sa3d_rng_for(10, (uint64_t)n, (uint64_t)sizeof(P));
    std::vector<float> scores((size_t)rows * pitch), buf;
    for (auto &v : scores) v = uniform(&rng, 20.0f);
    double worst = 0.0;
    in_both_orders([&] {
        buf = scores;
        emu_launch(dim3((unsigned)rows), 256, [&] { k_softmax<P>(buf.data(), n, pitch); });
        const P *out = (const P *)buf.data();
        for (int r = 0; r < rows; r++) {
            const float *sr = scores.data() + (size_t)r * pitch;
            double mx = -INFINITY, sum = 0.0;
            for (int j = 0; j < n; j++) mx = fmax(mx, (double)sr[j]);
            for (int j = 0; j < n; j++) sum += exp((double)sr[j] - mx);
            for (int j = 0; j < pitch; j++) {
                double want = j < n ? exp((double)sr[j] - mx) / sum : 0.0;
                double got = to_f(out[(size_t)r * per_row + j]);
                double e = j < n ? fabs(got - want) / ((u + 64 * ldexp(1.0, -24)) * want + floor_abs)
                                 : (got == 0.0 ? 0.0 : HUGE_VAL);
                if (!(e <= worst)) worst = e;
            }
        }
    });
    printf("       rows %d, n %4d, pitch %4d: %.2g of bound\n", rows, n, pitch, worst);
    if (!(worst <= 1.0)) T_FAIL("k_softmax, n %d: %.3g of the bound", n, worst);
}
template <typename P> static void softmax_shapes(double u, double floor_abs) {
    check_softmax<P>(3, 300, 304, u, floor_abs);
    check_softmax<P>(2, 5000, 5008, u, floor_abs);
}
static void case_softmax(void) {
    softmax_shapes<__half>(ldexp(1.0, -11), ldexp(1.0, -25));
    softmax_shapes<__nv_bfloat16>(ldexp(1.0, -8), 1e-38);
    softmax_shapes<float>(ldexp(1.0, -24), 1e-38);
}

// k_conv_mma (the DPT's k x k convolutions) against a double-precision convolution of the same rounded operands:
// weights in T, inputs relu'd (relu_in) then rounded to T, as the kernel gathers them; for T = float both rounded to
// TF32 (round_tf32; the emulated tensor core truncates what is not). The products are exact in fp32 and only the
// fp32 sums round: |ours - exact| <= (Kc + 3) 2^-24 (sum |w x| + |b| + |res|). A wrong tap, channel, lane or tile
// index, or an operand left unrounded, gives errors far above that.
template <typename T>
static void check_conv(int B, int Ci, int H, int W, int Co, int k, int stride, int pad, int relu_in, int act,
                       bool bias, bool residual) {
    int Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1, Kc = Ci * k * k, HWo = Ho * Wo;
    sa3d_rng rng = sa3d_rng_for(9, (uint64_t)(Ci * 1000 + Co), (uint64_t)(H * 100 + W));
    std::vector<float> in((size_t)B * Ci * H * W), b(Co), res((size_t)B * Co * HWo), out((size_t)B * Co * HWo, NAN);
    std::vector<T> wt((size_t)Co * Kc);
    for (auto &v : in) v = uniform(&rng, 2.0f);
    for (auto &v : wt) v = from_f<T>(uniform(&rng, 1.0f));
    for (auto &v : b) v = uniform(&rng, 1.0f);
    for (auto &v : res) v = uniform(&rng, 1.0f);
    int mt = Co <= 32 ? 1 : 2;
    dim3 grid((unsigned)((HWo + CV_BN - 1) / CV_BN), (unsigned)((Co + 32 * mt - 1) / (32 * mt)), (unsigned)B);
    // the reference, and the bound's magnitude, per output
    std::vector<double> want(out.size()), bound(out.size());
    for (int z = 0; z < B; z++)
        for (int co = 0; co < Co; co++)
            for (int p = 0; p < HWo; p++) {
                int y = p / Wo, x = p % Wo;
                double sum = bias ? (double)b[co] : 0.0, mag = fabs(sum);
                for (int ci = 0; ci < Ci; ci++)
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            int iy = y * stride - pad + ky, ix = x * stride - pad + kx;
                            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                            float v = in[(((size_t)z * Ci + ci) * H + iy) * W + ix];
                            double xv = (double)to_f(to_operand<T>(relu_in ? fmaxf(v, 0.0f) : v));
                            double t = (double)to_f(weight_operand(wt[(size_t)co * Kc + (ci * k + ky) * k + kx])) * xv;
                            sum += t;
                            mag += fabs(t);
                        }
                size_t o = ((size_t)z * Co + co) * HWo + p;
                want[o] = (act == 2 ? fmax(sum, 0.0) : sum) + (residual ? (double)res[o] : 0.0);
                bound[o] = (Kc + 3) * ldexp(1.0, -24) * (mag + (residual ? fabs((double)res[o]) : 0.0)) + 1e-30;
            }
    const float *bp = bias ? b.data() : nullptr, *rp = residual ? res.data() : nullptr;
    double worst = 0.0;
    in_both_orders([&] {
        for (auto &v : out) v = NAN;   // every element must be written
        emu_launch(grid, 128, [&] {
            if (mt == 1)
                k_conv_mma<T, 1>(out.data(), in.data(), wt.data(), bp, rp, Ci, H, W, Co, k, stride, pad, Ho, Wo,
                                 relu_in, act);
            else
                k_conv_mma<T, 2>(out.data(), in.data(), wt.data(), bp, rp, Ci, H, W, Co, k, stride, pad, Ho, Wo,
                                 relu_in, act);
        });
        for (size_t o = 0; o < out.size(); o++) {
            double e = fabs((double)out[o] - want[o]) / bound[o];
            if (!(e <= worst)) worst = e;   // NaN (an output never written) counts as the worst
        }
    });
    printf("       B %d, Ci %2d, %2dx%2d -> Co %2d, %dx%d stride %d pad %d (%d position blocks, %d channel blocks "
           "of %d), relu_in %d, act %2d%s%s: %.2g of bound\n", B, Ci, H, W, Co, k, k, stride, pad, (int)grid.x,
           (int)grid.y, 32 * mt, relu_in, act, bias ? ", bias" : "", residual ? ", residual" : "", worst);
    if (!(worst <= 1.0)) T_FAIL("k_conv_mma: %.3g of the bound", worst);
}

// 4.1 / 4.2: partial position blocks (143 and 30 positions); partial slices (Kc 45, 27, 144) and a long run of
// them (864 in 27); partial channel blocks (20 of 32, 40 of 64, 72 = 64 + 8); stride 2 (the reassemble stage's);
// both MT; the pre-activation unit's two uses.
template <typename T> static void conv_shapes(void) {
    check_conv<T>(2, 5, 13, 11, 20, 3, 1, 1, 1, 2, true, false);
    check_conv<T>(1, 16, 9, 12, 40, 3, 2, 1, 0, ACT_NONE, false, false);
    check_conv<T>(1, 3, 20, 30, 64, 3, 1, 1, 0, ACT_NONE, true, true);
    check_conv<T>(2, 16, 7, 9, 33, 3, 1, 1, 1, ACT_NONE, true, true);
    check_conv<T>(3, 8, 10, 14, 72, 3, 1, 1, 0, 2, true, false);
    check_conv<T>(1, 96, 5, 7, 64, 3, 1, 1, 0, ACT_NONE, false, false);   // 27 slices: a neck convolution's depth
}
static void case_conv_fp16(void) { conv_shapes<__half>(); }
static void case_conv_bf16(void) { conv_shapes<__nv_bfloat16>(); }
static void case_conv_tf32(void) { conv_shapes<float>(); }

int main(int argc, char **argv) {
    static const t_case cases[] = {
        { "1.1", "emulator: fp16 / bf16 conversions (nearest even), TF32 rounding (ties away)", case_half_conversions },
        { "2.1", "fused attention, fp16: shapes, tiles, masking, images", case_attention_fp16 },
        { "2.2", "fused attention, bf16", case_attention_bf16 },
        { "2.3", "fused attention: large scores stay finite", case_attention_large_scores },
        { "3.1", "row kernels, fp16: residual + norm, bias + GELU, SwiGLU; 4 and 1 per access", case_rows_fp16 },
        { "3.2", "row kernels, bf16", case_rows_bf16 },
        { "3.3", "row kernels, fp32", case_rows_fp32 },
        { "3.4", "softmax of fp32 scores into fp16 / bf16 / fp32 in place; long rows; padding", case_softmax },
        { "4.1", "implicit-GEMM convolution, fp16: shapes, strides, partial tiles, epilogue", case_conv_fp16 },
        { "4.2", "implicit-GEMM convolution, bf16", case_conv_bf16 },
        { "4.3", "implicit-GEMM convolution, fp32 maps and weights by TF32 tensor cores", case_conv_tf32 },
    };
    return t_run(cases, (int)(sizeof cases / sizeof cases[0]), argc, argv);
}
