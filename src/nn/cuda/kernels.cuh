/* CUDA kernels of the networks: the element-wise, row-wise and layout steps between the cuBLAS matrix products.
 * Each mirrors the CPU kernel named beside it (src/tensor/kernels.c); `A` is the activation type (float, __half
 * or __nv_bfloat16), and every reduction and transcendental is evaluated in fp32. Shapes are written
 * [outer]...[inner], row-major, as on the CPU. */
#ifndef SA3D_CUDA_KERNELS_CUH
#define SA3D_CUDA_KERNELS_CUH

#include <stdint.h>
#include "tensor_core.cuh"   /* with cuda_fp16.h and cuda_bf16.h, unless tests/cuda_emu.hh stands in */

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename A> __device__ __forceinline__ A from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

#define SA3D_GRID_STRIDE(i, n) for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); \
                                    i += (size_t)gridDim.x * blockDim.x)

enum { ACT_NONE = -1 };   /* besides sa3d_activation's values */

__device__ __forceinline__ float activate(float v, int act) {
    switch (act) {
    case 0: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));                            /* GELU */
    case 1: return 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));  /* tanh */
    case 2: return v > 0.0f ? v : 0.0f;                                                           /* ReLU */
    case 3: return v / (1.0f + expf(-v));                                                         /* SiLU */
    default: return v;
    }
}

/* Row-wise kernels run one block (or warp) per row and loop over its columns, so no thread computes a 64-bit
 * modulo. */

/* Patch im2col (the CPU embed's copy): row bp = b gh gw + p of patches is patch p = py gw + px of image b, its
 * elements (ch, y, x) from pixels[b][ch][py P + y][px P + x], then zeros up to Kp (>= C P P). A block per row. */
template <typename A>
__global__ void k_patches(A *patches, const float *pixels, int C, int H, int W, int P, int gh, int gw, int Kp) {
    int bp = (int)blockIdx.x, p = bp % (gh * gw), b = bp / (gh * gw), py = p / gw, px = p % gw, K = C * P * P;
    A *row = patches + (size_t)bp * Kp;
    for (int k = threadIdx.x; k < Kp; k += blockDim.x) {
        int x = k % P, y = k / P % P, ch = k / (P * P);
        row[k] = from_f<A>(k < K ? pixels[(((size_t)b * C + ch) * H + py * P + y) * W + px * P + x] : 0.0f);
    }
}

/* Dinov2Embeddings: x[b] = [cls + pos0, registers..., tok_p + patch_b + pos_p]; x fp32 [B][T][D]. A block per
 * token row bt = b T + t. */
template <typename A>
__global__ void k_embed(float *x, const A *tok, const float *patch_b, const float *cls, const float *reg,
                        const float *pos, int T, int D, int n_prefix, int n_reg) {
    int bt = (int)blockIdx.x, t = bt % T, b = bt / T, p = t - n_prefix;
    float *xr = x + (size_t)bt * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        if (t == 0) xr[d] = cls[d] + pos[d];
        else if (t < 1 + n_reg) xr[d] = reg[(size_t)(t - 1) * D + d];
        else xr[d] = to_f(tok[((size_t)b * (T - n_prefix) + p) * D + d]) + patch_b[d] + pos[(size_t)(1 + p) * D + d];
    }
}

/* Row kernels move V consecutive elements per access: V = 4 where the row length is a multiple of 4 (every real
 * model), so a thread reads 16 bytes of fp32 or 8 of fp16/bf16 per instruction instead of 4 or 2; V = 1 otherwise.
 * vec is that access: an aligned aggregate, which the compiler loads and stores as one vector instruction. */
template <typename T, int V> struct alignas(sizeof(T) * V) vec { T e[V]; };

template <int V, typename T> __device__ __forceinline__ void load_f(float *f, const T *p) {
    vec<T, V> v = *(const vec<T, V> *)p;
#pragma unroll
    for (int k = 0; k < V; k++) f[k] = to_f(v.e[k]);
}
template <int V, typename T> __device__ __forceinline__ void store_f(T *p, const float *f) {
    vec<T, V> v;
#pragma unroll
    for (int k = 0; k < V; k++) v.e[k] = from_f<T>(f[k]);
    *(vec<T, V> *)p = v;
}

/* The residual stream's row kernel, one warp per row of x fp32 [rows][D]:
 *   x += s * (y + bias)   when y is given: layer scale + residual with the Linear bias fused (sa3d_add_scaled);
 *   out = LN(x) g + b     when g is given: nn.LayerNorm into out (A or fp32), two passes (the mean, then the
 *                         centred variance), as torch computes it.
 * Every residual add is followed by the next block's norm, so doing both here reads x from memory once; the
 * variance and output passes re-read the row this warp just wrote, from cache. */
template <typename A, typename O, int V>
__global__ void k_residual_norm(float *x, const A *y, const float *bias, const float *s, O *out, const float *g,
                                const float *b, int rows, int D, float eps) {
    int row = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32), lane = threadIdx.x % 32;
    if (row >= rows) return;
    float *xr = x + (size_t)row * D, sum = 0.0f;
    for (int d = lane * V; d < D; d += 32 * V) {
        float xv[V];
        load_f<V>(xv, xr + d);
        if (y) {
            float yv[V], bv[V], sv[V];
            load_f<V>(yv, y + (size_t)row * D + d);
            load_f<V>(bv, bias + d);
            load_f<V>(sv, s + d);
#pragma unroll
            for (int k = 0; k < V; k++) xv[k] += sv[k] * (yv[k] + bv[k]);
            store_f<V>(xr + d, xv);
        }
#pragma unroll
        for (int k = 0; k < V; k++) sum += xv[k];
    }
    if (!g) return;
    for (int o = 16; o; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    float mean = sum / (float)D, var = 0.0f;
    for (int d = lane * V; d < D; d += 32 * V) {
        float xv[V];
        load_f<V>(xv, xr + d);
#pragma unroll
        for (int k = 0; k < V; k++) var += (xv[k] - mean) * (xv[k] - mean);
    }
    for (int o = 16; o; o >>= 1) var += __shfl_xor_sync(0xffffffffu, var, o);
    float rstd = rsqrtf(var / (float)D + eps);
    for (int d = lane * V; d < D; d += 32 * V) {
        float xv[V], gv[V], bv[V];
        load_f<V>(xv, xr + d);
        load_f<V>(gv, g + d);
        load_f<V>(bv, b + d);
#pragma unroll
        for (int k = 0; k < V; k++) xv[k] = (xv[k] - mean) * rstd * gv[k] + bv[k];
        store_f<V>(out + (size_t)row * D + d, xv);
    }
}

/* y[rows][N] = act(y + bias) in place (bias may be NULL): the Linear bias and the MLP activation fused. */
template <typename A, int V>
__global__ void k_bias_act(A *y, const float *bias, int N, int act) {
    A *row = y + (size_t)blockIdx.x * N;
    for (int j = threadIdx.x * V; j < N; j += blockDim.x * V) {
        float v[V], bv[V] = {};
        load_f<V>(v, row + j);
        if (bias) load_f<V>(bv, bias + j);
#pragma unroll
        for (int k = 0; k < V; k++) v[k] = activate(v[k] + bv[k], act);
        store_f<V>(row + j, v);
    }
}

/* SwiGLU with the bias of weights_in fused: out[r][j] = silu(a + ba) * (g + bg), in [rows][2M]. */
template <typename A, int V>
__global__ void k_swiglu(A *out, const A *in, const float *bias, int M) {
    const A *a = in + (size_t)blockIdx.x * 2 * M, *g = a + M;
    A *o = out + (size_t)blockIdx.x * M;
    for (int j = threadIdx.x * V; j < M; j += blockDim.x * V) {
        float u[V], v[V], bu[V], bv[V];
        load_f<V>(u, a + j);
        load_f<V>(v, g + j);
        load_f<V>(bu, bias + j);
        load_f<V>(bv, bias + M + j);
#pragma unroll
        for (int k = 0; k < V; k++) {
            u[k] += bu[k];
            u[k] = u[k] / (1.0f + expf(-u[k])) * (v[k] + bv[k]);
        }
        store_f<V>(o + j, u);
    }
}

/* Block-wide max or sum of one value per thread (blockDim.x a multiple of 32, at most 1024). */
__device__ __forceinline__ float block_reduce(float v, int is_max, float *red) {
    for (int o = 16; o; o >>= 1) {
        float u = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, u) : v + u;
    }
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    __syncthreads();   /* red may still be read from the previous reduction */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : (is_max ? -INFINITY : 0.0f);
    for (int o = 16; o; o >>= 1) {
        float u = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, u) : v + u;
    }
    return v;
}

/* Row softmax of fp32 scores into probabilities of the pass type P, over the first n of every pitch scores, zeros
 * in [n, pitch) (the padding columns the next product reads). The scores were scaled by the GEMM's alpha. Row r's
 * probabilities overwrite its own scores: they start at the row's first byte, so for 16-bit P they fill its first
 * half and the next product reads them with a pitch of 2 pitch elements. One block per row; a row of up to
 * SOFTMAX_CACHE x blockDim.x scores is read once into registers (every read before the reductions' barriers, every
 * write after), longer rows are re-read: then in chunks of blockDim.x with a barrier between a chunk's reads and its
 * writes, since chunk k's 16-bit writes cover scores [k nt / 2, (k + 1) nt / 2), which chunks <= k have read.
 * Why the scores stay fp32: in bf16 a logit of 10 is off by up to 0.03, 3 % on its probability. */
#define SOFTMAX_CACHE 16
template <typename P>
__global__ void k_softmax(float *s, int n, int pitch) {
    __shared__ float red[32];
    const float *row = s + (size_t)blockIdx.x * pitch;
    P *out = (P *)(s + (size_t)blockIdx.x * pitch);
    int tid = threadIdx.x, nt = blockDim.x;
    if (n <= SOFTMAX_CACHE * nt) {
        float v[SOFTMAX_CACHE];
        float mx = -INFINITY;
#pragma unroll
        for (int k = 0; k < SOFTMAX_CACHE; k++) {
            int j = tid + k * nt;
            v[k] = j < n ? row[j] : -INFINITY;
            mx = fmaxf(mx, v[k]);
        }
        mx = block_reduce(mx, 1, red);
        float sum = 0.0f;
#pragma unroll
        for (int k = 0; k < SOFTMAX_CACHE; k++) {
            v[k] = expf(v[k] - mx);   /* exp(-inf) = 0 beyond n */
            sum += v[k];
        }
        float inv = 1.0f / block_reduce(sum, 0, red);
#pragma unroll
        for (int k = 0; k < SOFTMAX_CACHE; k++) {
            int j = tid + k * nt;
            if (j < pitch) out[j] = from_f<P>(v[k] * inv);
        }
        for (int j = tid + SOFTMAX_CACHE * nt; j < pitch; j += nt) out[j] = from_f<P>(0.0f);
        return;
    }
    float mx = -INFINITY;
    for (int j = tid; j < n; j += nt) mx = fmaxf(mx, row[j]);
    mx = block_reduce(mx, 1, red);
    float sum = 0.0f;
    for (int j = tid; j < n; j += nt) sum += expf(row[j] - mx);
    float inv = 1.0f / block_reduce(sum, 0, red);
    for (int base = 0; base < pitch; base += nt) {   /* every thread passes every barrier */
        int j = base + tid;
        float p = j < n ? expf(row[j] - mx) * inv : 0.0f;
        __syncthreads();
        if (j < pitch) out[j] = from_f<P>(p);
    }
}

/* ---- fused attention for fp16/bf16, head size 64 (every DINOv2 size) ----
 *
 * softmax(q k^T scale) v without materialising the scores (the FlashAttention-2 scheme): a block of 4 warps takes
 * 64 MT query rows of one head of one image; each warp keeps its 16 MT rows' running max m, sum l and output O
 * (fp32) in registers while 64-key tiles of K and V pass through shared memory. Products are mma.sync m16n8k16
 * with fp32 accumulation (tensor_core.cuh); the score accumulators are reused directly as the A operand of P V
 * (their register layout is the A layout), so P never leaves registers.
 *
 * Why it is shaped so:
 *   - Tiles arrive by cp.async into two stages: tile i + 1 is in flight while tile i is multiplied, so the
 *     warps do not stall on global memory at every tile.
 *   - Operands leave shared memory by ldmatrix (one instruction gives a lane its fragments of four 8 x 8
 *     matrices; V transposed on the way), not element by element.
 *   - With MT = 2 every K and V fragment read from shared memory serves two 16-row tiles: half the shared
 *     memory traffic per tensor-core instruction. MT = 1 gives twice the blocks, for short sequences and few
 *     heads, where 128-row blocks would leave multiprocessors idle.
 *   - Exponentials are base 2 with the scale folded into one FMA, one special-function instruction each
 *     (exp2_ftz); masked keys (past T) are -inf. */
#define FA_KEYS 64      /* keys per tile */
#define FA_LD 72        /* shared row pitch in elements: 144 bytes, so the 8 rows of an ldmatrix hit distinct banks */

template <typename A> __device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <> __device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *(uint32_t *)&h;
}
template <> __device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&h;
}
template <typename A> __device__ __forceinline__ float lo_f(uint32_t u) { return to_f(((const A *)&u)[0]); }
template <typename A> __device__ __forceinline__ float hi_f(uint32_t u) { return to_f(((const A *)&u)[1]); }

/* rows [r0, r0 + rows) x 64 columns of src (row pitch ld elements) into sm [rows][FA_LD] by cp.async (16-byte
 * pieces, 8 per row); rows >= T are zeros. Not complete before the caller's cp_async_wait. */
template <typename A>
__device__ __forceinline__ void fa_tile_async(A *sm, const A *src, int ld, int r0, int rows, int T) {
    for (int i = threadIdx.x; i < rows * 8; i += blockDim.x) {
        int r = i / 8, c = (i % 8) * 8;
        bool ok = r0 + r < T;
        cp_async16(sm + r * FA_LD + c, src + (size_t)(ok ? r0 + r : 0) * ld + c, ok);
    }
}

/* qkv: one image's [T][3D] (q, k, v of head h at columns h*64, D + h*64, 2D + h*64), without their biases;
 * ctx: its [T][D]. grid (ceil(T / (64 MT)), heads, images), 128 threads; per image the pointers advance by T*3D
 * and T*D.
 *
 * The query/key/value biases bqkv [3D] (NULL: none) are applied here, which spares a pass over qkv:
 *   - q + bq is formed on the query fragments, rounded to A as the separate bias pass rounded it;
 *   - k's bias is left out: it adds q . bk to every score of a query row, and softmax is invariant to that;
 *   - v's bias is added to the output: the weights of a row sum to 1, so P (v + bv) = P v + bv. */
template <typename A, int MT>
__global__ void __launch_bounds__(128) k_flash_attn(A *ctx, const A *qkv, const float *bqkv, int T, int D,
                                                     float scale) {
    /* [stage][K, V]; the query tile (64 MT rows) is staged in stage 1 before the first key tile needs it */
    __shared__ __align__(16) A kv[2][2][FA_KEYS * FA_LD];
    const int h = blockIdx.y, b = blockIdx.z, q0 = blockIdx.x * 64 * MT;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int ld = 3 * D, n_tiles = (T + FA_KEYS - 1) / FA_KEYS;
    const A *q = qkv + (size_t)b * T * ld + h * 64, *k = q + D, *v = q + 2 * D;
    ctx += (size_t)b * T * D;

    A *qs = &kv[1][0][0];
    fa_tile_async(qs, q, ld, q0, 64 * MT, T);
    cp_async_commit();
    fa_tile_async(kv[0][0], k, ld, 0, FA_KEYS, T);
    fa_tile_async(kv[0][1], v, ld, 0, FA_KEYS, T);
    cp_async_commit();
    cp_async_wait<1>();   /* the query tile */
    __syncthreads();
    uint32_t qa[MT][4][4];   /* A fragments of this warp's rows: MT tiles of 16, 4 k-steps over the head */
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int kk = 0; kk < 4; kk++)
            ldsm_x4(qa[mt][kk], qs + ((warp * MT + mt) * 16 + lane % 16) * FA_LD + kk * 16 + lane / 16 * 8);
    if (bqkv)   /* fragment r holds columns kk*16 + (r / 2)*8 + 2t and the next (rows g, g + 8 alternate) */
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int kk = 0; kk < 4; kk++)
#pragma unroll
                for (int r = 0; r < 4; r++) {
                    const float *bq = bqkv + h * 64 + kk * 16 + (r / 2) * 8 + 2 * t;
                    uint32_t u = qa[mt][kk][r];
                    qa[mt][kk][r] = pack2<A>(lo_f<A>(u) + bq[0], hi_f<A>(u) + bq[1]);
                }
    __syncthreads();   /* stage 1 is free for key tile 1 */

    const float sl2 = scale * 1.4426950408889634f;   /* scores to log2 units */
    float o[MT][8][4], m[MT][2], l[MT][2];   /* per tile: rows g and g + 8 */
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; j++) o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.0f;
    }
    for (int it = 0; it < n_tiles; it++) {
        const int k0 = it * FA_KEYS;
        if (it + 1 < n_tiles) {
            fa_tile_async(kv[(it + 1) & 1][0], k, ld, k0 + FA_KEYS, FA_KEYS, T);
            fa_tile_async(kv[(it + 1) & 1][1], v, ld, k0 + FA_KEYS, FA_KEYS, T);
        }
        cp_async_commit();   /* possibly empty: the group count stays one per tile */
        cp_async_wait<1>();   /* this thread's part of tile it */
        __syncthreads();      /* everyone's */
        const A *ks = kv[it & 1][0], *vs = kv[it & 1][1];

        float s[MT][8][4];   /* S = Q K^T: 8 tiles of 8 keys per row tile */
#pragma unroll
        for (int j = 0; j < 8; j++) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.0f;
#pragma unroll
            for (int kp = 0; kp < 2; kp++) {   /* k-steps 2kp, 2kp + 1: K rows as B fragments, b0 b1 each */
                uint32_t kb[4];
                ldsm_x4(kb, ks + (j * 8 + lane % 8) * FA_LD + kp * 32 + lane / 8 * 8);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma16816<A>(s[mt][j], qa[mt][2 * kp], kb[0], kb[1]);
                    mma16816<A>(s[mt][j], qa[mt][2 * kp + 1], kb[2], kb[3]);
                }
            }
        }
        if (k0 + FA_KEYS > T) {   /* the last tile: keys past T take no weight */
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int j = 0; j < 8; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        if (k0 + j * 8 + 2 * t + (e & 1) >= T) s[mt][j][e] = -INFINITY;
        }
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                mx0 = fmaxf(mx0, fmaxf(s[mt][j][0], s[mt][j][1]));
                mx1 = fmaxf(mx1, fmaxf(s[mt][j][2], s[mt][j][3]));
            }
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            float n0 = fmaxf(m[mt][0], mx0), n1 = fmaxf(m[mt][1], mx1);   /* finite: key k0 < T is in every tile */
            float a0 = exp2_ftz((m[mt][0] - n0) * sl2), a1 = exp2_ftz((m[mt][1] - n1) * sl2);
            float b0 = n0 * sl2, b1 = n1 * sl2;
            m[mt][0] = n0;
            m[mt][1] = n1;
            l[mt][0] *= a0;
            l[mt][1] *= a1;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                s[mt][j][0] = exp2_ftz(fmaf(s[mt][j][0], sl2, -b0));
                s[mt][j][1] = exp2_ftz(fmaf(s[mt][j][1], sl2, -b0));
                s[mt][j][2] = exp2_ftz(fmaf(s[mt][j][2], sl2, -b1));
                s[mt][j][3] = exp2_ftz(fmaf(s[mt][j][3], sl2, -b1));
                l[mt][0] += s[mt][j][0] + s[mt][j][1];
                l[mt][1] += s[mt][j][2] + s[mt][j][3];
                o[mt][j][0] *= a0; o[mt][j][1] *= a0; o[mt][j][2] *= a1; o[mt][j][3] *= a1;
            }
        }
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {   /* O += P V over keys kk*16 .. +16 */
            uint32_t pa[MT][4];   /* P's A fragment straight from the score registers */
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                pa[mt][0] = pack2<A>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                pa[mt][1] = pack2<A>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                pa[mt][2] = pack2<A>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                pa[mt][3] = pack2<A>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
            }
#pragma unroll
            for (int jp = 0; jp < 4; jp++) {   /* output columns 16 jp .. +16: V transposed as B fragments */
                uint32_t vb[4];
                ldsm_x4_trans(vb, vs + (kk * 16 + lane % 16) * FA_LD + (2 * jp + lane / 16) * 8);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma16816<A>(o[mt][2 * jp], pa[mt], vb[0], vb[1]);
                    mma16816<A>(o[mt][2 * jp + 1], pa[mt], vb[2], vb[3]);
                }
            }
        }
        __syncthreads();   /* this stage is read; the next iteration's copies may overwrite it */
    }
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        float l0 = l[mt][0], l1 = l[mt][1];
        l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
        l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
        float i0 = 1.0f / l0, i1 = 1.0f / l1;
        int r0 = q0 + (warp * MT + mt) * 16 + g, r1 = r0 + 8;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            int col = h * 64 + j * 8 + 2 * t;
            float bv0 = bqkv ? bqkv[2 * D + col] : 0.0f, bv1 = bqkv ? bqkv[2 * D + col + 1] : 0.0f;
            uint32_t p0 = pack2<A>(fmaf(o[mt][j][0], i0, bv0), fmaf(o[mt][j][1], i0, bv1));
            uint32_t p1 = pack2<A>(fmaf(o[mt][j][2], i1, bv0), fmaf(o[mt][j][3], i1, bv1));
            if (r0 < T) *(uint32_t *)(ctx + (size_t)r0 * D + col) = p0;
            if (r1 < T) *(uint32_t *)(ctx + (size_t)r1 * D + col) = p1;
        }
    }
}

/* DINOv2 feature map: fmap[b][d][p] = x[b][n_prefix + p][d] (channel-first patch tokens), a transpose by 32 x 32
 * tiles through shared memory so that both the reads (along d) and the writes (along p) are contiguous. grid
 * (ceil(Np / 32), ceil(D / 32), B), 32 x 8 threads. */
__global__ void k_tokens_to_channels(float *fmap, const float *x, int T, int D, int n_prefix, int Np) {
    __shared__ float tile[32][33];   /* 33: the column reads below hit distinct banks */
    int p0 = (int)blockIdx.x * 32, d0 = (int)blockIdx.y * 32, b = (int)blockIdx.z, tx = threadIdx.x % 32;
    const float *xb = x + ((size_t)b * T + n_prefix) * D;
    for (int r = threadIdx.x / 32; r < 32; r += blockDim.x / 32)   /* row r: token p0 + r */
        if (p0 + r < Np && d0 + tx < D) tile[r][tx] = xb[(size_t)(p0 + r) * D + d0 + tx];
    __syncthreads();
    float *fb = fmap + (size_t)b * D * Np;
    for (int r = threadIdx.x / 32; r < 32; r += blockDim.x / 32)   /* row r: channel d0 + r */
        if (d0 + r < D && p0 + tx < Np) fb[(size_t)(d0 + r) * Np + p0 + tx] = tile[tx][r];
}

/* pooler_output[b] = last_hidden_state[b][0]. */
__global__ void k_cls_rows(float *pool, const float *last, int B, int T, int D) {
    size_t n = (size_t)B * D;
    SA3D_GRID_STRIDE(i, n) pool[i] = last[(i / D) * (size_t)T * D + i % D];
}

/* ---- DPT (fp32) ----
 * The batch runs at once: maps are [B][C][H][W]. They are large (the head works at full resolution: 32 x 518 x 686
 * values an image), so these kernels take 2-D or 3-D grids whose block rows are images, channels or map rows: a
 * thread divides at most once, in 32 bits. */

/* im2col of the `cols` outputs from output row y0 on, for a k x k convolution of image blockIdx.z (in + z
 * in_img, col + z col_img): col[(ci, ky, kx)][(y - y0) Wo + x] in T, rows pitch elements apart; relu(in) when relu_in
 * (a pre-activation residual unit's first ReLU, applied while gathering). grid (ceil(cols / blockDim), Ci k k, B). */
template <typename T>
__global__ void k_im2col(T *col, const float *in, int H, int W, int k, int stride, int pad, int Wo, int y0,
                         int cols, int pitch, int relu_in, size_t in_img, size_t col_img) {
    int c = (int)(blockIdx.x * blockDim.x + threadIdx.x), r = (int)blockIdx.y;
    if (c >= cols) return;
    in += blockIdx.z * in_img;
    col += blockIdx.z * col_img;
    int kx = r % k, ky = r / k % k, ci = r / (k * k), x = c % Wo, y = y0 + c / Wo;
    int iy = y * stride - pad + ky, ix = x * stride - pad + kx;
    float v = iy >= 0 && iy < H && ix >= 0 && ix < W ? in[((size_t)ci * H + iy) * W + ix] : 0.0f;
    col[(size_t)r * pitch + c] = from_f<T>(relu_in ? fmaxf(v, 0.0f) : v);
}

/* Implicit-GEMM convolution: the product W [Co][Kc] . col [Kc][Ho Wo] (Kc = Ci k k, in nn.Conv2d's (ci, ky, kx)
 * order) without im2col's matrix in memory. Each block gathers its [CV_BK][CV_BN] slice of col straight from the
 * fp32 maps into shared memory (ReLU when relu_in), the tensor cores accumulate in fp32, and k_conv_out's output
 * step is the epilogue:
 *     out[z][co][p] = act(acc + b[co]) + res[z][co][p]        (b, res may be NULL)
 * T is the pass dtype, the weights' type: fp16/bf16 operands (as k_im2col rounds them) through mma m16n8k16, or
 * for fp32 passes TF32 operands (both rounded by round_tf32) through mma m16n8k8.
 * A block: 32 MT output channels x CV_BN output positions of image blockIdx.z; 4 warps, 2 x 2, each 16 MT channels
 * x 64 positions (MT x 8 mma tiles of 16 x 8). Two small tables spare the gather its divisions: per position its
 * input corner (y stride - pad, x stride - pad), per k of the slice its channel offset and tap (ky, kx).
 * grid (ceil(Ho Wo / CV_BN), ceil(Co / (32 MT)), B), 128 threads. */
#define CV_BN 128
#define CV_BK 32
#define CV_FAR (-(1 << 28)) /* input corner of a position past the end: every tap reads as padding */

/* Shared-memory row pitch in elements: 20 words (16-bit) or 36 words (fp32), so that a warp's fragment reads
 * (8 rows x 4 words) and 16-byte stores (8 rows) hit distinct banks. */
template <typename T> struct conv_ld { enum { v = sizeof(T) == 2 ? CV_BK + 8 : CV_BK + 4 }; };

/* A map value (fp32) or a weight (already T) as the tensor cores take it: rounded to T, or for fp32 to TF32. */
template <typename T> __device__ __forceinline__ T to_operand(float x) { return from_f<T>(x); }
template <> __device__ __forceinline__ float to_operand<float>(float x) { return round_tf32(x); }
template <typename T> __device__ __forceinline__ T weight_operand(T w) {
    if constexpr (sizeof(T) == 4) return round_tf32(w);
    else return w;
}

/* n elements (a multiple of 16 bytes) of v as 16-byte stores to shared memory. */
template <typename T> __device__ __forceinline__ void store16(T *dst, const T *v, int n) {
#pragma unroll
    for (int i = 0; i < n; i += 16 / (int)sizeof(T)) *(uint4 *)(dst + i) = *(const uint4 *)(v + i);
}

template <typename T, int MT>
__global__ void __launch_bounds__(128) k_conv_mma(float *out, const float *in, const T *wt, const float *b,
                                                   const float *res, int Ci, int H, int W, int Co, int k, int stride,
                                                   int pad, int Ho, int Wo, int relu_in, int act) {
    enum { BM = 32 * MT, A_PER = BM * CV_BK / 128, LD = conv_ld<T>::v };   /* A_PER: weights a thread stages */
    __shared__ __align__(16) T sa[BM * LD];        /* weights [co][k] */
    __shared__ __align__(16) T sb[CV_BN * LD];     /* col [position][k] */
    __shared__ int corner_y[CV_BN], corner_x[CV_BN], tap_y[CV_BK], tap_x[CV_BK];
    __shared__ long long chan_off[CV_BK];
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int kk2 = k * k, Kc = Ci * kk2, HWo = Ho * Wo, p0 = (int)blockIdx.x * CV_BN, m0 = (int)blockIdx.y * BM;
    const int wm = warp / 2 * 16 * MT, wn = warp % 2 * 64;
    const size_t HWi = (size_t)H * W;
    in += blockIdx.z * Ci * HWi;
    {
        int p = p0 + tid;   /* CV_BN = 128 = blockDim */
        corner_y[tid] = p < HWo ? p / Wo * stride - pad : CV_FAR;
        corner_x[tid] = p % Wo * stride - pad;
    }
    float acc[MT][8][4] = {};
    for (int k0 = 0; k0 < Kc; k0 += CV_BK) {
        __syncthreads();   /* the previous slice's fragments are read */
        if (tid < CV_BK) {
            int kk = k0 + tid, r = kk % kk2;
            chan_off[tid] = kk < Kc ? (long long)(kk / kk2) * (long long)HWi : -1;
            tap_y[tid] = r / k;
            tap_x[tid] = r % k;
        }
        {   /* weights: A_PER consecutive k of one row; zeros past Co and Kc */
            int m = tid * A_PER / CV_BK, kb = tid * A_PER % CV_BK, co = m0 + m;
            __align__(16) T v[A_PER];   /* aligned: store16 reads it 16 bytes at a time */
#pragma unroll
            for (int j = 0; j < A_PER; j++) {
                int kk = k0 + kb + j;
                v[j] = co < Co && kk < Kc ? weight_operand(wt[(size_t)co * Kc + kk]) : from_f<T>(0.0f);
            }
            store16(sa + m * LD + kb, v, A_PER);
        }
        __syncthreads();   /* the tables */
        {   /* col: position tid, the slice's CV_BK values */
            int y0 = corner_y[tid], x0 = corner_x[tid];
            __align__(16) T v[CV_BK];
#pragma unroll
            for (int j = 0; j < CV_BK; j++) {
                long long o = chan_off[j];
                int iy = y0 + tap_y[j], ix = x0 + tap_x[j];
                float x = o >= 0 && iy >= 0 && iy < H && ix >= 0 && ix < W ? in[o + (long long)iy * W + ix] : 0.0f;
                v[j] = to_operand<T>(relu_in ? fmaxf(x, 0.0f) : x);
            }
            store16(sb + tid * LD, v, CV_BK);
        }
        __syncthreads();
        if constexpr (sizeof(T) == 2) {   /* k steps of 16: a register holds two consecutive k */
#pragma unroll
            for (int ks = 0; ks < CV_BK; ks += 16) {
                uint32_t a[MT][4], bf[8][2];
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    const T *r0 = sa + (wm + mt * 16 + g) * LD + ks + 2 * t, *r8 = r0 + 8 * LD;
                    a[mt][0] = *(const uint32_t *)r0;
                    a[mt][1] = *(const uint32_t *)r8;
                    a[mt][2] = *(const uint32_t *)(r0 + 8);
                    a[mt][3] = *(const uint32_t *)(r8 + 8);
                }
#pragma unroll
                for (int nt = 0; nt < 8; nt++) {
                    const T *c0 = sb + (wn + nt * 8 + g) * LD + ks + 2 * t;
                    bf[nt][0] = *(const uint32_t *)c0;
                    bf[nt][1] = *(const uint32_t *)(c0 + 8);
                }
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
#pragma unroll
                    for (int nt = 0; nt < 8; nt++) mma16816<T>(acc[mt][nt], a[mt], bf[nt][0], bf[nt][1]);
            }
        } else {   /* TF32, k steps of 8: a register holds one k */
#pragma unroll
            for (int ks = 0; ks < CV_BK; ks += 8) {
                uint32_t a[MT][4], bf[8][2];
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    const uint32_t *r0 = (const uint32_t *)sa + (wm + mt * 16 + g) * LD + ks + t, *r8 = r0 + 8 * LD;
                    a[mt][0] = r0[0];
                    a[mt][1] = r8[0];
                    a[mt][2] = r0[4];
                    a[mt][3] = r8[4];
                }
#pragma unroll
                for (int nt = 0; nt < 8; nt++) {
                    const uint32_t *c0 = (const uint32_t *)sb + (wn + nt * 8 + g) * LD + ks + t;
                    bf[nt][0] = c0[0];
                    bf[nt][1] = c0[4];
                }
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
#pragma unroll
                    for (int nt = 0; nt < 8; nt++) mma1688_tf32(acc[mt][nt], a[mt], bf[nt][0], bf[nt][1]);
            }
        }
    }
    /* accumulator (mt, nt)[2 h + e] is channel wm + 16 mt + g + 8 h, position wn + 8 nt + 2 t + e */
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int co = m0 + wm + mt * 16 + g + 8 * h;
            if (co >= Co) continue;
            float bias = b ? b[co] : 0.0f;
            size_t base = ((size_t)blockIdx.z * Co + co) * HWo;
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    int p = p0 + wn + nt * 8 + 2 * t + e;
                    if (p >= HWo) continue;
                    float v = activate(acc[mt][nt][2 * h + e] + bias, act);
                    out[base + p] = res ? v + res[base + p] : v;
                }
        }
}

/* A convolution's output from its GEMM result, channel c = blockIdx.y of image z = blockIdx.z:
 * out[z][c][off + j] = act(tmp[z][c][j] + b[c]) + res[z][c][off + j] for j < n (b, res may be NULL); tmp's
 * channels are pitch apart and its images tmp_img, out's and res's out_pitch and out_img. In place (tmp = out,
 * same pitches, off = 0) each element is read and written by the same thread. grid (ceil(n / blockDim), C, B). */
__global__ void k_conv_out(float *out, size_t out_pitch, size_t out_img, size_t off, const float *tmp, int pitch,
                           size_t tmp_img, int n, const float *b, int act, const float *res) {
    int j = (int)(blockIdx.x * blockDim.x + threadIdx.x), c = (int)blockIdx.y;
    if (j >= n) return;
    size_t o = blockIdx.z * out_img + c * out_pitch + off + j;
    float v = activate(tmp[blockIdx.z * tmp_img + (size_t)c * pitch + j] + (b ? b[c] : 0.0f), act);
    out[o] = res ? v + res[o] : v;
}

/* ConvTranspose2d (k = s = f) scatter, one block per output row oy = blockIdx.y of plane q = blockIdx.x (image
 * q / Co, channel co = q % Co): out[q][y f + i][x f + j] = tmp[q][(i, j)][y W + x] + b[co], tmp [B][Co f f][H W]. */
__global__ void k_convt_scatter(float *out, const float *tmp, const float *b, int Co, int H, int W, int f) {
    int q = (int)blockIdx.x, oy = (int)blockIdx.y, Wf = W * f, y = oy / f, i = oy % f;
    float bias = b ? b[q % Co] : 0.0f;
    const float *src = tmp + (size_t)q * f * f * H * W + (size_t)i * f * H * W + (size_t)y * W;
    float *dst = out + ((size_t)q * H * f + oy) * Wf;
    for (int ox = threadIdx.x; ox < Wf; ox += blockDim.x) dst[ox] = src[(size_t)(ox % f) * H * W + ox / f] + bias;
}

/* y = a + b. */
__global__ void k_add(float *y, const float *a, const float *b, size_t n) { SA3D_GRID_STRIDE(i, n) y[i] = a[i] + b[i]; }

/* F.interpolate(mode="bilinear", align_corners=True) of planes [H][W] to [Ho][Wo] (sa3d_resize_bilinear), one
 * block per output row y = blockIdx.y of plane blockIdx.x (every channel of every image). */
__global__ void k_resize_bilinear_ac(float *out, const float *in, int H, int W, int Ho, int Wo) {
    int y = (int)blockIdx.y;
    float sh = Ho > 1 ? (float)(H - 1) / (float)(Ho - 1) : 0.0f, sw = Wo > 1 ? (float)(W - 1) / (float)(Wo - 1) : 0.0f;
    float ry = sh * (float)y;
    int y0 = (int)ry, y1 = y0 + (y0 < H - 1);
    float ly1 = ry - (float)y0, ly0 = 1.0f - ly1;
    const float *r0 = in + ((size_t)blockIdx.x * H + y0) * W, *r1 = in + ((size_t)blockIdx.x * H + y1) * W;
    float *dst = out + ((size_t)blockIdx.x * Ho + y) * Wo;
    for (int x = threadIdx.x; x < Wo; x += blockDim.x) {
        float rx = sw * (float)x;
        int x0 = (int)rx, x1 = x0 + (x0 < W - 1);
        float lx1 = rx - (float)x0, lx0 = 1.0f - lx1;
        dst[x] = ly0 * (lx0 * r0[x0] + lx1 * r0[x1]) + ly1 * (lx0 * r1[x0] + lx1 * r1[x1]);
    }
}

/* Depth head output: ReLU (relative) or sigmoid (metric), times max_depth. */
__global__ void k_depth_out(float *d, size_t n, int metric, float max_depth) {
    SA3D_GRID_STRIDE(i, n) d[i] = metric ? max_depth / (1.0f + expf(-d[i])) : fmaxf(d[i], 0.0f) * max_depth;
}

/* first[0] = min index i with x[i] not finite (stays at ~0 when all are). */
__global__ void k_first_nonfinite(const float *x, size_t n, unsigned long long *first) {
    SA3D_GRID_STRIDE(i, n)
        if (!isfinite(x[i])) atomicMin(first, (unsigned long long)i);
}

#endif
