// TEST HELPER (C++20), not library code: runs a CUDA backend's source on the CPU, so that its kernels' thread
// layout, barriers and warp shuffles, and its host code's buffers and offsets, are tested where no GPU is at hand
// (tests/align_cuda_emu.cc builds src/align/cuda/align_cuda.cu with it: the test_align_emu program).
//
// Kernels: one fiber per CUDA thread of a block, the grid's blocks one after another. __syncthreads is a barrier
// of the block's fibers; __shfl_xor_sync a store, a barrier of the warp's 32 fibers and a load (alternate buffers).
// __shared__ becomes `static`: one copy, which is the block's shared memory because one block runs at a time.
// Runtime and cuBLAS: the calls the backends make, on host memory (device memory is malloc'd, copies are memcpy,
// a stream runs everything at once, in order; SGEMM is three loops).
// Half types and tensor-core instructions (for src/nn/cuda/kernels.cuh's fused attention, test_nn_kernels_emu):
// __half and __nv_bfloat16 as 16-bit patterns with round-to-nearest-even conversions; mma.sync, ldmatrix and
// cp.async (tensor_core.cuh's functions) as warp-wide exchanges with the PTX ISA's fragment layouts, so a wrong
// lane or register index gives wrong numbers here.
// Orders: a GPU leaves the order of warps and the landing time of cp.async copies open, so a test runs a kernel
// under both emu_order modes: EMU_LOCKSTEP (threads take turns at every barrier, so warps advance together;
// copies land at the cp_async_wait that covers them, so reading a tile before waiting for it reads stale data) and
// EMU_RUN_AHEAD (the lowest-numbered thread that can run does, so warp 0 runs as far ahead as the barriers let it;
// copies land at once, so refilling a buffer that other warps still read, without a barrier, corrupts it).
// What it cannot show: host code that reads device memory directly works here and not on a GPU; races between
// warps that a GPU's timing would expose and this schedule (round robin at barriers) does not; GPU performance.
#ifndef SA3D_CUDA_EMU_HH
#define SA3D_CUDA_EMU_HH

#define SA3D_CUDA_EMU 1

#include <functional>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <unordered_map>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

inline uint32_t emu_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
inline float emu_float(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- runtime ---- */

typedef enum cudaError { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2 } cudaError_t;
typedef enum cudaMemcpyKind {
    cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3
} cudaMemcpyKind;
typedef struct emu_stream *cudaStream_t;
enum { cudaStreamNonBlocking = 1 };

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}
inline const char *cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated error"; }
inline cudaError_t cudaGetLastError(void) { return cudaSuccess; }
// Device allocations are counted (emu_device_live: bytes held now), so that a test can hold the backends' own
// accounting (sa3d_model_device_bytes, ...) to what they really allocate. Page-locked host memory is tracked too
// (emu_pinned): cudaFreeHost of anything else aborts, as the real one fails.
inline std::unordered_map<void *, size_t> emu_device_sizes;
inline size_t emu_device_live;
inline cudaError_t cudaMalloc(void **p, size_t n) {
    *p = malloc(n);
    if (!*p) return cudaErrorMemoryAllocation;
    emu_device_sizes[*p] = n;
    emu_device_live += n;
    return cudaSuccess;
}
inline std::unordered_map<void *, size_t> emu_pinned;
inline cudaError_t cudaMallocHost(void **p, size_t n) {
    *p = malloc(n);
    if (!*p) return cudaErrorMemoryAllocation;
    emu_pinned[*p] = n;
    return cudaSuccess;
}
inline cudaError_t cudaFree(void *p) {
    auto it = emu_device_sizes.find(p);
    if (p && it == emu_device_sizes.end()) {
        fprintf(stderr, "cuda_emu: cudaFree of %p, which cudaMalloc did not return\n", p);
        abort();
    }
    if (p) {
        emu_device_live -= it->second;
        emu_device_sizes.erase(it);
    }
    free(p);
    return cudaSuccess;
}
inline cudaError_t cudaFreeHost(void *p) {
    if (p && !emu_pinned.erase(p)) {
        fprintf(stderr, "cuda_emu: cudaFreeHost of %p, which cudaMallocHost did not return\n", p);
        abort();
    }
    free(p);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
    (void)kind;
    memcpy(dst, src, n);
    return cudaSuccess;
}
// Work queued on a stream runs at once, in order, unless the stream is being captured into a graph: then it is
// recorded (by value: the arguments a call had, as a real capture takes them) and runs when the graph is launched.
inline bool emu_capturing;
inline std::vector<std::function<void()>> emu_captured;
inline void emu_async(std::function<void()> op) {
    if (emu_capturing) emu_captured.push_back(std::move(op));
    else op();
}
inline cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s) {
    (void)s;
    (void)kind;
    emu_async([=] { memcpy(dst, src, n); });
    return cudaSuccess;
}
inline cudaError_t cudaMemset(void *p, int v, size_t n) {
    memset(p, v, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s) {
    (void)s;
    emu_async([=] { memset(p, v, n); });
    return cudaSuccess;
}
inline cudaError_t cudaMemcpy2D(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                                cudaMemcpyKind kind) {
    (void)kind;
    if (width > dpitch || width > spitch) return cudaErrorInvalidValue;
    for (size_t r = 0; r < height; r++) memcpy((char *)dst + r * dpitch, (const char *)src + r * spitch, width);
    return cudaSuccess;
}
enum { cudaHostAllocDefault = 0 };
inline cudaError_t cudaHostAlloc(void **p, size_t n, unsigned flags) {
    (void)flags;
    return cudaMallocHost(p, n);
}
inline int emu_multiprocessors = 6;   // what cudaDeviceGetAttribute reports: few, so small grids count as full
inline int emu_cc_major = 9, emu_cc_minor = 0;   // compute capability: a Hopper, unless a test says otherwise
typedef enum cudaDeviceAttr {
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76
} cudaDeviceAttr;
inline cudaError_t cudaGetDevice(int *d) {
    *d = 0;
    return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr attr, int dev) {
    (void)dev;
    *v = attr == cudaDevAttrComputeCapabilityMajor   ? emu_cc_major
         : attr == cudaDevAttrComputeCapabilityMinor ? emu_cc_minor
                                                     : emu_multiprocessors;
    return cudaSuccess;
}

typedef struct emu_event *cudaEvent_t;   // events time nothing here
inline cudaError_t cudaEventCreate(cudaEvent_t *e) {
    *e = (cudaEvent_t)malloc(1);
    return cudaSuccess;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t e) {
    free(e);
    return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    (void)e;
    (void)s;
    return cudaSuccess;
}
inline cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    (void)a;
    (void)b;
    *ms = 0.0f;
    return cudaSuccess;
}

struct emu_graph {
    std::vector<std::function<void()>> ops;
};
typedef emu_graph *cudaGraph_t;
typedef emu_graph *cudaGraphExec_t;
typedef enum cudaStreamCaptureMode { cudaStreamCaptureModeThreadLocal = 1 } cudaStreamCaptureMode;
inline cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
    (void)s;
    (void)mode;
    if (emu_capturing) return cudaErrorInvalidValue;
    emu_capturing = true;
    emu_captured.clear();
    return cudaSuccess;
}
inline cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g) {
    (void)s;
    if (!emu_capturing) return cudaErrorInvalidValue;
    emu_capturing = false;
    *g = new emu_graph{ std::move(emu_captured) };
    emu_captured.clear();
    return cudaSuccess;
}
inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long flags) {
    (void)flags;
    *e = new emu_graph(*g);
    return cudaSuccess;
}
inline cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s) {
    (void)s;
    for (auto &op : e->ops) op();
    return cudaSuccess;
}
inline cudaError_t cudaGraphDestroy(cudaGraph_t g) {
    delete g;
    return cudaSuccess;
}
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) {
    delete e;
    return cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    (void)flags;
    static int token;
    *s = (cudaStream_t)(void *)&token;
    return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    (void)s;
    return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
inline cudaError_t cudaStreamDestroy(cudaStream_t s) {
    (void)s;
    return cudaSuccess;
}

/* ---- device math and types the kernels use beyond libm ---- */

inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
struct uint4 {
    unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{ x, y, z, w }; }
inline unsigned long long atomicMin(unsigned long long *p, unsigned long long v) {   // one thread at a time here
    unsigned long long old = *p;
    if (v < old) *p = v;
    return old;
}

/* ---- half types: 16-bit patterns, conversions rounded to nearest even as the device's _rn intrinsics ---- */

struct __half {
    uint16_t x;
};
struct __half2 {
    __half x, y;
};
struct __nv_bfloat16 {
    uint16_t x;
};
struct __nv_bfloat162 {
    __nv_bfloat16 x, y;
};

inline __half __float2half_rn(float f) {
    uint32_t u = emu_bits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    uint16_t h;
    if (a > 0x7f800000u) h = 0x7e00;                       // NaN
    else if (a >= 0x477ff000u) h = 0x7c00;                 // >= 65520 (and inf): inf
    else if (a < 0x38800000u)                              // below 2^-14: a multiple of 2^-24, ties to even
        h = (uint16_t)nearbyintf(emu_float(a) * 16777216.0f);
    else h = (uint16_t)((a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u) >> 13);
    return __half{ (uint16_t)(sign | h) };
}
inline float __half2float(__half h) {
    uint32_t sign = (uint32_t)(h.x & 0x8000u) << 16, e = (h.x >> 10) & 0x1fu, m = h.x & 0x3ffu;
    if (e == 0) return emu_float(sign) + (sign ? -1.0f : 1.0f) * ldexpf((float)m, -24);
    if (e == 31) return emu_float(sign | 0x7f800000u | (m << 13));
    return emu_float(sign | ((e + 112u) << 23) | (m << 13));
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u = emu_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{ (uint16_t)((u >> 16) | 0x40u) };
    return __nv_bfloat16{ (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16) };
}
inline float __bfloat162float(__nv_bfloat16 b) { return emu_float((uint32_t)b.x << 16); }
inline __half2 __floats2half2_rn(float lo, float hi) { return __half2{ __float2half_rn(lo), __float2half_rn(hi) }; }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
    return __nv_bfloat162{ __float2bfloat16_rn(lo), __float2bfloat16_rn(hi) };
}
inline float emu_to_float(uint16_t v, __half) { return __half2float(__half{ v }); }
inline float emu_to_float(uint16_t v, __nv_bfloat16) { return __bfloat162float(__nv_bfloat16{ v }); }

/* ---- cuBLAS: column-major products, fp32 (SGEMM, GemmEx) and fp16 / bf16 inputs (GemmEx); TF32 rounds the
 * inputs' significands to 10 bits as the tensor cores do; sums in fp32 in k order ---- */

typedef enum cublasStatus { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_INVALID_VALUE = 7 } cublasStatus_t;
typedef enum cublasOperation { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum cublasMath { CUBLAS_DEFAULT_MATH = 0 } cublasMath_t;
typedef struct emu_cublas *cublasHandle_t;

inline cublasStatus_t cublasCreate(cublasHandle_t *h) {
    static int token;
    *h = (cublasHandle_t)(void *)&token;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasDestroy(cublasHandle_t h) {
    (void)h;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m) {
    (void)h;
    (void)m;
    return CUBLAS_STATUS_SUCCESS;
}
typedef enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 } cudaDataType_t;
typedef enum cublasComputeType_t { CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_32F_FAST_TF32 = 77 } cublasComputeType_t;
typedef enum cublasGemmAlgo_t { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;
inline cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
    (void)h;
    (void)s;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *p, size_t n) {
    (void)h;
    (void)p;
    (void)n;
    return CUBLAS_STATUS_SUCCESS;
}

inline size_t emu_type_size(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }
inline float emu_tf32(float x) {   // round to nearest even at significand bit 13
    uint32_t u = emu_bits(x);
    if ((u & 0x7f800000u) == 0x7f800000u) return x;
    return emu_float((u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu);
}
// Element i of a float, fp16 or bf16 array, as a float; and stored, rounded to the array's type.
inline float emu_load(const void *p, cudaDataType_t t, size_t i) {
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    uint16_t v = ((const uint16_t *)p)[i];
    return t == CUDA_R_16F ? __half2float(__half{ v }) : __bfloat162float(__nv_bfloat16{ v });
}
inline void emu_store(void *p, cudaDataType_t t, size_t i, float v) {
    if (t == CUDA_R_32F) ((float *)p)[i] = v;
    else ((uint16_t *)p)[i] = t == CUDA_R_16F ? __float2half_rn(v).x : __float2bfloat16_rn(v).x;
}
// C (m x n, ldc) = alpha op(A) op(B) + beta C, column-major, element types per operand.
inline void emu_gemm(int ta, int tb, int m, int n, int k, float alpha, const void *A, cudaDataType_t at, int lda,
                     const void *B, cudaDataType_t bt, int ldb, float beta, void *C, cudaDataType_t ct, int ldc,
                     bool tf32) {
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            float acc = 0.0f;
            for (int p = 0; p < k; p++) {
                float a = emu_load(A, at, ta == CUBLAS_OP_N ? (size_t)p * lda + i : (size_t)i * lda + p);
                float b = emu_load(B, bt, tb == CUBLAS_OP_N ? (size_t)j * ldb + p : (size_t)p * ldb + j);
                if (tf32) {
                    a = emu_tf32(a);
                    b = emu_tf32(b);
                }
                acc += a * b;
            }
            size_t ci = (size_t)j * ldc + i;
            float c = beta == 0.0f ? 0.0f : beta * emu_load(C, ct, ci);
            emu_store(C, ct, ci, alpha * acc + c);
        }
}
// Leading dimensions checked as cuBLAS does.
inline bool emu_gemm_args_ok(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, int lda, int ldb,
                             int ldc) {
    return m >= 0 && n >= 0 && k >= 0 && lda >= (ta == CUBLAS_OP_N ? m : k) && ldb >= (tb == CUBLAS_OP_N ? k : n) &&
           ldc >= m && lda >= 1 && ldb >= 1 && ldc >= 1;
}
inline cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                  const float *alpha, const float *A, int lda, const float *B, int ldb,
                                  const float *beta, float *C, int ldc) {
    (void)h;
    if (!emu_gemm_args_ok(ta, tb, m, n, k, lda, ldb, ldc)) return CUBLAS_STATUS_INVALID_VALUE;
    float al = *alpha, be = *beta;
    emu_async([=] {
        emu_gemm(ta, tb, m, n, k, al, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, be, C, CUDA_R_32F, ldc, false);
    });
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                   const void *alpha, const void *A, cudaDataType_t at, int lda, const void *B,
                                   cudaDataType_t bt, int ldb, const void *beta, void *C, cudaDataType_t ct, int ldc,
                                   cublasComputeType_t comp, cublasGemmAlgo_t algo) {
    (void)h;
    (void)algo;
    if (!emu_gemm_args_ok(ta, tb, m, n, k, lda, ldb, ldc)) return CUBLAS_STATUS_INVALID_VALUE;
    float al = *(const float *)alpha, be = *(const float *)beta;
    bool tf32 = comp == CUBLAS_COMPUTE_32F_FAST_TF32 && at == CUDA_R_32F;
    emu_async([=] { emu_gemm(ta, tb, m, n, k, al, A, at, lda, B, bt, ldb, be, C, ct, ldc, tf32); });
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                                                 int n, int k, const void *alpha, const void *A, cudaDataType_t at,
                                                 int lda, long long sa, const void *B, cudaDataType_t bt, int ldb,
                                                 long long sb, const void *beta, void *C, cudaDataType_t ct, int ldc,
                                                 long long sc, int batch, cublasComputeType_t comp,
                                                 cublasGemmAlgo_t algo) {
    (void)h;
    (void)algo;
    if (!emu_gemm_args_ok(ta, tb, m, n, k, lda, ldb, ldc) || batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
    float al = *(const float *)alpha, be = *(const float *)beta;
    bool tf32 = comp == CUBLAS_COMPUTE_32F_FAST_TF32 && at == CUDA_R_32F;
    emu_async([=] {
        for (int q = 0; q < batch; q++)
            emu_gemm(ta, tb, m, n, k, al, (const char *)A + q * sa * (long long)emu_type_size(at), at, lda,
                     (const char *)B + q * sb * (long long)emu_type_size(bt), bt, ldb, be,
                     (char *)C + q * sc * (long long)emu_type_size(ct), ct, ldc, tf32);
    });
    return CUBLAS_STATUS_SUCCESS;
}

/* ---- threads ---- */

// Each CUDA thread of a block is a fiber on the calling OS thread. A fiber runs until it waits at a
// barrier, then the next one runs: deterministic, and cheap on a busy machine (one OS thread, no lock). A
// missing barrier shows reliably: thread 0 runs on into the next step before the others have done this one.
struct emu_copy {
    void *dst;
    const void *src;   // NULL: zero fill
};
struct emu_fiber {
    ucontext_t ctx;                              // the portable switch
    void *sp;                                    // the x86-64 one: its saved stack pointer
    std::vector<char> stack;
    dim3 idx;
    bool done;
    const struct emu_barrier *wait_on;           // the barrier it waits at (generation wait_gen), or NULL
    unsigned wait_gen;
    unsigned exchange_half;                      // which half of emu_lanes its next warp exchange uses
    std::vector<emu_copy> open;                  // cp.async copies not yet committed
    std::vector<std::vector<emu_copy>> groups;   // committed, not yet waited for; oldest first
};
inline std::vector<emu_fiber> emu_fibers;
inline unsigned emu_cur;
inline ucontext_t emu_main;
inline std::function<void()> emu_body;
inline dim3 blockIdx, blockDim, gridDim;
#define threadIdx (emu_fibers[emu_cur].idx)


// Switching fibers: swapcontext saves and restores the signal mask, a system call each way, which made a
// network pass take minutes. On x86-64 (without AddressSanitizer, which must be told of stack switches) a
// six-register switch does the same work in user space: callee-saved registers, the SSE and x87 control words,
// the stack pointer. Elsewhere, ucontext.
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define EMU_FAST_SWITCH 1
// emu_switch(save, load): pushes this context's registers, stores its stack pointer in *save, continues the
// context whose stack pointer is `load`. Weak: every program that includes this file defines it the same way.
asm(R"(
    .text
    .weak emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");
extern "C" void emu_switch(void **save, void *load);
inline void *emu_main_sp;
inline void emu_yield() { emu_switch(&emu_fibers[emu_cur].sp, emu_main_sp); }
#else
inline void emu_yield() { swapcontext(&emu_fibers[emu_cur].ctx, &emu_main); }
#endif

// A barrier of n fibers: the last to arrive goes on, the others yield until it has.
inline unsigned long long emu_waits;   // barrier arrivals so far (a kernel that makes none needs no fibers)
inline bool emu_direct;                // threads run as plain calls: no barrier may be reached

struct emu_barrier {
    unsigned n = 0, count = 0, gen = 0;
    void arrive_and_wait() {
        if (emu_direct) {
            fprintf(stderr, "cuda_emu: a barrier in a kernel whose block 0 ran without one\n");
            abort();
        }
        emu_waits++;
        unsigned g = gen;
        if (++count == n) {
            count = 0;
            gen++;
            return;
        }
        emu_fiber &f = emu_fibers[emu_cur];
        f.wait_on = this;
        f.wait_gen = g;
        while (gen == g) emu_yield();
        f.wait_on = nullptr;
    }
};
inline bool emu_can_run(const emu_fiber &f) { return !f.done && !(f.wait_on && f.wait_on->gen == f.wait_gen); }

enum emu_order { EMU_LOCKSTEP, EMU_RUN_AHEAD };
inline emu_order emu_order_mode = getenv("SA3D_EMU_ORDER") && !strcmp(getenv("SA3D_EMU_ORDER"), "run-ahead")
                                      ? EMU_RUN_AHEAD : EMU_LOCKSTEP;   // a program's default: SA3D_EMU_ORDER
inline emu_barrier emu_block_bar;
inline std::vector<emu_barrier> emu_warp_bar;
// What each lane of a warp hands in to a warp-wide instruction: a shuffled value, an mma's A and B fragments,
// an ldmatrix row address.
struct emu_lane {
    double v;
    uint32_t a[4], b[2];
    const uint16_t *row;
};
inline std::vector<emu_lane> emu_lanes;   // [2][threads]: exchanges alternate between the halves

inline void __syncthreads() { emu_block_bar.arrive_and_wait(); }

// Every lane of the warp stores its part, all wait, `use` reads what the warp stored. Successive exchanges use
// alternate halves of emu_lanes, so one barrier is enough: a lane writes a half again only two exchanges later,
// after the barrier of the one between, which no lane passes before it has read this one.
template <class F> void emu_warp_exchange(const emu_lane &mine, F use) {
    unsigned t = threadIdx.x, w = t / 32;
    emu_fiber &f = emu_fibers[emu_cur];
    emu_lane *half = emu_lanes.data() + (size_t)f.exchange_half * blockDim.x;
    f.exchange_half ^= 1u;
    half[t] = mine;
    emu_warp_bar[w].arrive_and_wait();
    use(half + 32 * w, t % 32);
}

template <class T> T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
    (void)mask;   // every lane of the warp takes part (the kernels here use 0xffffffff)
    T r = v;
    emu_warp_exchange(emu_lane{ (double)v, {}, {}, nullptr },
                      [&](const emu_lane *x, unsigned lane) { r = (T)x[lane ^ (unsigned)lane_mask].v; });
    return r;
}

/* ---- tensor-core instructions (tensor_core.cuh), fragment layouts as in the PTX ISA manual ---- */

inline uint16_t emu_half_of(uint32_t reg, int hi) { return (uint16_t)(hi ? reg >> 16 : reg & 0xffffu); }

// c[16x8] += a[16xK] b[Kx8] over the fragments of a warp: a_at(x, r, k) and b_at(x, k, n) read element (r, k) of a
// and (k, n) of b from the lanes' registers x; c of lane 4g + t is (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1).
// Products are exact in fp32 (11- or 8-bit significands) and summed in k order.
template <typename FA, typename FB>
void emu_mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1, unsigned K, FA a_at, FB b_at) {
    emu_lane mine{ 0.0, { a[0], a[1], a[2], a[3] }, { b0, b1 }, nullptr };
    emu_warp_exchange(mine, [&](const emu_lane *x, unsigned lane) {
        unsigned g = lane / 4, t = lane % 4;
        for (int i = 0; i < 4; i++) {
            unsigned r = g + (i >= 2 ? 8 : 0), n = 2 * t + (i & 1);
            float acc = 0.0f;
            for (unsigned k = 0; k < K; k++) acc += a_at(x, r, k) * b_at(x, k, n);
            c[i] += acc;
        }
    });
}

// m16n8k16: lane 4g + t holds a's (g | g+8, 2t | 2t+1 | 2t+8 | 2t+9) and b's (2t | 2t+1 | 2t+8 | 2t+9, g), two
// 16-bit values a register.
template <typename A> void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    emu_mma(c, a, b0, b1, 16, [](const emu_lane *x, unsigned r, unsigned k) {
        return emu_to_float(emu_half_of(x[(r % 8) * 4 + (k % 8) / 2].a[(r >= 8) + 2 * (k >= 8)], k & 1), A{});
    }, [](const emu_lane *x, unsigned k, unsigned n) {
        return emu_to_float(emu_half_of(x[n * 4 + (k % 8) / 2].b[k >= 8], k & 1), A{});
    });
}

// m16n8k8 on TF32 operands: lane 4g + t holds a's (g | g+8, t | t+4) and b's (t | t+4, g), each an fp32 bit pattern
// of which the tensor core reads the top 19 bits (the low 13 significand bits are dropped, as an unrounded operand
// would lose them).
inline void mma1688_tf32(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    emu_mma(c, a, b0, b1, 8, [](const emu_lane *x, unsigned r, unsigned k) {
        return emu_float(x[(r % 8) * 4 + k % 4].a[(r >= 8) + 2 * (k >= 4)] & ~0x1fffu);
    }, [](const emu_lane *x, unsigned k, unsigned n) {
        return emu_float(x[n * 4 + k % 4].b[k >= 4] & ~0x1fffu);
    });
}
// cvt.rna.tf32.f32: to nearest at significand bit 13, ties away from zero (Inf and NaN as they are).
inline float round_tf32(float x) {
    uint32_t u = emu_bits(x);
    if ((u & 0x7f800000u) == 0x7f800000u) return x;
    return emu_float((u + 0x1000u) & ~0x1fffu);
}

inline void emu_ldsm(uint32_t r[4], const void *row, bool trans) {
    if ((uintptr_t)row % 16) {
        fprintf(stderr, "cuda_emu: ldmatrix row address %p is not 16-byte aligned\n", row);
        abort();
    }
    emu_warp_exchange(emu_lane{ 0.0, {}, {}, (const uint16_t *)row }, [&](const emu_lane *x, unsigned lane) {
        unsigned g = lane / 4, t = lane % 4;
        for (int i = 0; i < 4; i++) {   // matrix i: rows from lanes 8i .. 8i + 7
            uint16_t lo = trans ? x[8 * i + 2 * t].row[g] : x[8 * i + g].row[2 * t];
            uint16_t hi = trans ? x[8 * i + 2 * t + 1].row[g] : x[8 * i + g].row[2 * t + 1];
            r[i] = (uint32_t)lo | (uint32_t)hi << 16;
        }
    });
}
inline void ldsm_x4(uint32_t r[4], const void *row) { emu_ldsm(r, row, false); }
inline void ldsm_x4_trans(uint32_t r[4], const void *row) { emu_ldsm(r, row, true); }

inline void cp_async16(void *dst, const void *src, bool ok) {
    if ((uintptr_t)dst % 16 || (ok && (uintptr_t)src % 16)) {
        fprintf(stderr, "cuda_emu: cp.async of 16 bytes %p -> %p is not 16-byte aligned\n", src, dst);
        abort();
    }
    if (emu_order_mode == EMU_RUN_AHEAD) {
        if (ok) memcpy(dst, src, 16);
        else memset(dst, 0, 16);
    } else emu_fibers[emu_cur].open.push_back(emu_copy{ dst, ok ? src : nullptr });
}
inline void cp_async_commit() {
    emu_fiber &f = emu_fibers[emu_cur];
    f.groups.push_back(std::move(f.open));
    f.open.clear();
}
template <int n> void cp_async_wait() {
    emu_fiber &f = emu_fibers[emu_cur];
    while (f.groups.size() > (size_t)n) {
        for (const emu_copy &c : f.groups.front())
            if (c.src) memcpy(c.dst, c.src, 16);
            else memset(c.dst, 0, 16);
        f.groups.erase(f.groups.begin());
    }
}
// ex2.approx.ftz: 2^x with results below the smallest normal float flushed to zero.
inline float exp2_ftz(float x) {
    float y = exp2f(x);
    return y < 1.17549435e-38f ? 0.0f : y;
}

inline void emu_trampoline() {
    emu_body();
    emu_fibers[emu_cur].done = true;
#ifdef EMU_FAST_SWITCH
    emu_yield();   // never resumed
    abort();
#endif
}   // ucontext: returns to uc_link, the scheduler

// Makes f start at emu_trampoline on its own stack when first resumed.
inline void emu_fiber_prepare(emu_fiber &f) {
#ifdef EMU_FAST_SWITCH
    uintptr_t top = ((uintptr_t)(f.stack.data() + f.stack.size())) & ~(uintptr_t)15;
    uint64_t *sp = (uint64_t *)top;
    *--sp = 0;                                  // emu_trampoline's return address: it never returns
    *--sp = (uint64_t)(uintptr_t)emu_trampoline;   // where emu_switch's ret goes (then rsp = 8 mod 16, as at a call)
    for (int i = 0; i < 6; i++) *--sp = 0;      // rbp rbx r12-r15
    *--sp = 0x037f00001f80ull;                  // MXCSR 0x1f80 (low word), x87 control word 0x037f
    f.sp = sp;
#else
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.data();
    f.ctx.uc_stack.ss_size = f.stack.size();
    f.ctx.uc_link = &emu_main;
    makecontext(&f.ctx, emu_trampoline, 0);
#endif
}

inline void emu_resume(emu_fiber &f) {
#ifdef EMU_FAST_SWITCH
    emu_switch(&emu_main_sp, f.sp);
#else
    swapcontext(&emu_main, &f.ctx);
#endif
}

// Runs body() as the kernel's grid x threads (threads a multiple of 32), one block after another. A kernel whose
// block 0 reaches no barrier (an element-wise one) runs its other blocks' threads as plain calls, without fibers.
template <class F> void emu_launch(dim3 grid, unsigned threads, F body) {
    // the hardware's limits, which a real launch would fail on: gridDim.y and z at most 65535, 1024 threads a block
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535u || grid.z > 65535u ||
        threads == 0 || threads > 1024u) {
        fprintf(stderr, "cuda_emu: invalid launch grid (%u, %u, %u) x %u threads\n", grid.x, grid.y, grid.z, threads);
        abort();
    }
    blockDim = dim3(threads);
    gridDim = grid;
    emu_body = body;
    emu_fibers.resize(threads);
    emu_warp_bar.assign(threads / 32, emu_barrier());
    for (auto &b : emu_warp_bar) b.n = 32;
    emu_lanes.assign(2 * (size_t)threads, emu_lane{});
    unsigned long long waits0 = emu_waits;
    for (unsigned b = 0; b < grid.x * grid.y * grid.z; b++) {
        blockIdx = dim3(b % grid.x, b / grid.x % grid.y, b / grid.x / grid.y);
        if (b > 0 && emu_waits == waits0) {
            emu_direct = true;
            for (emu_cur = 0; emu_cur < threads; emu_cur++) {
                emu_fibers[emu_cur].idx = dim3(emu_cur);
                emu_body();
            }
            emu_direct = false;
            continue;
        }
        emu_block_bar = emu_barrier();
        emu_block_bar.n = threads;
        for (unsigned t = 0; t < threads; t++) {
            emu_fiber &f = emu_fibers[t];
            f.stack.resize(1 << 18);   // 256 KiB: room for a sanitizer's red zones
            f.idx = dim3(t);
            f.done = false;
            f.wait_on = nullptr;
            f.exchange_half = 0;
            f.open.clear();
            f.groups.clear();
            emu_fiber_prepare(f);
        }
        for (unsigned left = threads; left > 0;) {   // each pass runs fibers until they wait or end
            bool ran = false;
            for (emu_cur = 0; emu_cur < threads; emu_cur++) {
                if (!emu_can_run(emu_fibers[emu_cur])) continue;
                emu_resume(emu_fibers[emu_cur]);
                ran = true;
                if (emu_fibers[emu_cur].done) left--;
                if (emu_order_mode == EMU_RUN_AHEAD) break;   // back to thread 0
            }
            if (!ran) {
                fprintf(stderr, "cuda_emu: deadlock: every thread left waits at a barrier the others do not reach\n");
                abort();
            }
        }
    }
}

#define SA3D_LAUNCH(kernel, grid, threads, stream, ...) \
    emu_async([=] { emu_launch(grid, threads, [=] { kernel(__VA_ARGS__); }); })

#endif
