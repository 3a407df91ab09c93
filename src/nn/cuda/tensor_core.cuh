/* The warp-level PTX instructions the fused attention and the implicit-GEMM convolution are built from (sm_80 and
 * later), as small functions so that the kernels read as math and tests/cuda_emu.hh can stand in for them on the
 * CPU (it defines SA3D_CUDA_EMU and its own versions of the same names, with the fragment layouts of the PTX ISA
 * manual).
 *
 *   mma16816<A>(c, a, b0, b1)   c[16x8] += a[16x16] b[16x8], A = __half or __nv_bfloat16, fp32 accumulators.
 *                               Lane l = 4 g + t holds a's rows g, g + 8 and b's column g (PTX ISA,
 *                               "mma.m16n8k16": a0..a3 = (g, 2t), (g + 8, 2t), (g, 2t + 8), (g + 8, 2t + 8), each
 *                               register two consecutive columns; b0, b1 = rows 2t and 2t + 8, two consecutive
 *                               rows each; c = (g, 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1)).
 *   mma1688_tf32(c, a, b0, b1)  c[16x8] += a[16x8] b[8x8] on TF32 operands (fp32 bit patterns of which the tensor
 *                               core reads the sign, exponent and top 10 significand bits: round them first with
 *                               round_tf32). a0..a3 = (g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4); b0, b1 =
 *                               rows t and t + 4 of column g; c as above ("mma.m16n8k8", .tf32).
 *   round_tf32(x)               x rounded to TF32's 10-bit significand, to nearest, ties away from zero
 *                               (cvt.rna.tf32.f32), still as a float.
 *   ldsm_x4(r, row)             four 8 x 8 16-bit matrices from shared memory: lane l passes the address of row
 *                               l % 8 of matrix l / 8 (16 bytes, 16-byte aligned); r[i] receives matrix i's
 *                               elements (g, 2t) and (g, 2t + 1). ldsm_x4_trans: (2t, g) and (2t + 1, g).
 *   cp_async16(dst, src, ok)    copies 16 bytes global -> shared without passing through registers, or writes 16
 *                               zero bytes when !ok (src is then not read); it completes only at a
 *                               cp_async_wait<n>() that leaves at most n of this thread's committed groups
 *                               pending.
 *   exp2_ftz(x)                 2^x by one special-function-unit instruction (ex2.approx.ftz: about 2 ulp,
 *                               results below 2^-126 flushed to zero). exp2f compiles to the non-ftz form, which
 *                               takes extra instructions for subnormal results, which a softmax's weights never
 *                               need. The fused attention takes one per score: 32 MT per thread and key tile,
 *                               beside 64 MT tensor-core instructions per warp, so their issue cost counts. */
#ifndef SA3D_CUDA_TENSOR_CORE_CUH
#define SA3D_CUDA_TENSOR_CORE_CUH

#ifndef SA3D_CUDA_EMU
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

template <typename A>
__device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__half>(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <> __device__ __forceinline__ void mma16816<__nv_bfloat16>(float c[4], const uint32_t a[4], uint32_t b0,
                                                                     uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma1688_tf32(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float round_tf32(float x) {
    uint32_t u;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(u) : "f"(x));
    return __uint_as_float(u);
}

__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void *row) {
    unsigned s = (unsigned)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}

__device__ __forceinline__ void ldsm_x4_trans(uint32_t r[4], const void *row) {
    unsigned s = (unsigned)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}

__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool ok) {
    unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(s), "l"(src), "r"(ok ? 16 : 0));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int n> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" :: "n"(n));
}

__device__ __forceinline__ float exp2_ftz(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
#endif

#endif
