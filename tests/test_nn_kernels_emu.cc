// The networks' CUDA kernels (src/nn/cuda/kernels.cuh) on the CPU through tests/cuda_emu.hh: the fused attention
// (mma.sync, ldmatrix, cp.async double buffering; 64 and 128 query rows per block; fp16 and bf16) against the
// library's double-precision attention, so the kernel's fragment layouts, tile loads, masking and barriers are
// checked in every build (each launch runs in both of the emulator's orders: late copies in lockstep, early
// copies with warp 0 running ahead). tests/test_nn_cuda checks the same kernel on a GPU, inside whole passes.
//
// Bound, from the kernel's arithmetic: with the inputs already rounded to the 16-bit type, the two roundings
// left are P (to the 16-bit type before P V) and the output; each costs at most u = 2^-11 (fp16) or 2^-8 (bf16)
// relative, of at most max |v|. So |ours - exact| <= 2 u max |v|, with 10 % for the fp32 sums. A wrong lane,
// register or tile index gives errors of order max |v|.
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
}

// One attention problem: B images of T tokens, H heads of 64, random q, k, v in [-amp, amp] rounded to A; the
// kernel with MT row tiles per warp against sa3d_ref_attention (double) on the same rounded values.
template <typename A, int MT>
static void check_attention(int B, int T, int H, float amp, double u, const char *what) {
    int D = 64 * H, ld = 3 * D;
    size_t n = (size_t)B * T * ld;
    std::vector<A> qkv(n), ctx((size_t)B * T * D);
    std::vector<float> qkv_f(n), ref((size_t)T * ld);
    sa3d_rng rng = sa3d_rng_for(6, (uint64_t)T, (uint64_t)(H * 16 + B));
    double vmax = 0.0;
    for (size_t i = 0; i < n; i++) {
        qkv[i] = from_f<A>(amp * (2.0f * (float)sa3d_rng_uniform(&rng) - 1.0f));
        qkv_f[i] = to_f(qkv[i]);
        if ((i % ld) >= (size_t)2 * D) vmax = fmax(vmax, fabs((double)qkv_f[i]));
    }
    float scale = 0.125f;   // 1 / sqrt(64)
    dim3 grid((unsigned)((T + 64 * MT - 1) / (64 * MT)), (unsigned)H, (unsigned)B);
    double worst = 0.0, bound = 2.0 * u * vmax * 1.1;
    emu_order before = emu_order_mode;
    for (emu_order order : { EMU_LOCKSTEP, EMU_RUN_AHEAD }) {
        emu_order_mode = order;
        for (auto &c : ctx) c = from_f<A>(NAN);   // every element must be written
        emu_launch(grid, 128, [&] { k_flash_attn<A, MT>(ctx.data(), qkv.data(), T, D, scale); });
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
    }
    emu_order_mode = before;
    printf("       %-44s max |err| %.3g (bound %.3g)\n", what, worst, bound);
    if (!(worst <= bound)) T_FAIL("%s: max |err| %.3g > bound %.3g", what, worst, bound);
}

// 2.1 / 2.2: shapes that cover one partial tile, exact multiples of the tile and the block, a last key tile of
// one key, several heads and images (the per-image offsets), 64 and 128 rows per block.
template <typename A> static void attention_shapes(double u) {
    check_attention<A, 1>(1, 1, 1, 1.0f, u, "T 1, 1 head, 64 rows a block");
    check_attention<A, 1>(1, 64, 1, 1.0f, u, "T 64, 1 head, 64 rows");
    check_attention<A, 1>(2, 65, 2, 1.0f, u, "T 65 x 2 images, 2 heads, 64 rows");
    check_attention<A, 2>(1, 1, 1, 1.0f, u, "T 1, 1 head, 128 rows");
    check_attention<A, 2>(1, 128, 1, 1.0f, u, "T 128, 1 head, 128 rows");
    check_attention<A, 2>(2, 150, 3, 1.0f, u, "T 150 x 2 images, 3 heads, 128 rows");
    check_attention<A, 2>(1, 257, 1, 1.0f, u, "T 257 (last key tile: 1 key), 128 rows");
}
static void case_attention_fp16(void) { attention_shapes<__half>(ldexp(1.0, -11)); }
static void case_attention_bf16(void) { attention_shapes<__nv_bfloat16>(ldexp(1.0, -8)); }

// 2.3: large scores (|q k| scale up to 64 * 16 / 8 = 128, exp of 185 in fp32 would overflow): the running max
// keeps every exponential <= 1, so the outputs stay finite and within the bound.
static void case_attention_large_scores(void) {
    check_attention<__half, 1>(1, 100, 1, 4.0f, ldexp(1.0, -11), "fp16, |q|, |k|, |v| <= 4, 64 rows");
    check_attention<__half, 2>(1, 200, 2, 4.0f, ldexp(1.0, -11), "fp16, |q|, |k|, |v| <= 4, 128 rows");
}

int main(int argc, char **argv) {
    static const t_case cases[] = {
        { "1.1", "emulator: fp16 / bf16 conversions round to nearest even", case_half_conversions },
        { "2.1", "fused attention, fp16: shapes, tiles, masking, images", case_attention_fp16 },
        { "2.2", "fused attention, bf16", case_attention_bf16 },
        { "2.3", "fused attention: large scores stay finite", case_attention_large_scores },
    };
    return t_run(cases, (int)(sizeof cases / sizeof cases[0]), argc, argv);
}
