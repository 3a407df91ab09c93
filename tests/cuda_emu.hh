// TEST HELPER (C++20), not library code: runs a CUDA backend's source on the CPU, so that its kernels' thread
// layout, barriers and warp shuffles, and its host code's buffers and offsets, are tested where no GPU is at hand
// (tests/align_cuda_emu.cc builds src/align/cuda/align_cuda.cu with it: the test_align_emu program).
//
// Kernels: one fiber per CUDA thread of a block, the grid's blocks one after another. __syncthreads is a barrier
// of the block's fibers; __shfl_xor_sync a store, a barrier of the warp's 32 fibers, a load and a second barrier.
// __shared__ becomes `static`: one copy, which is the block's shared memory because one block runs at a time.
// Runtime and cuBLAS: the calls the backends make, on host memory (device memory is malloc'd, copies are memcpy,
// a stream runs everything at once, in order; SGEMM is three loops).
// What it cannot show: host code that reads device memory directly works here and not on a GPU; races between
// warps that a GPU's timing would expose and this schedule (round robin at barriers) does not; GPU performance.
#ifndef SA3D_CUDA_EMU_HH
#define SA3D_CUDA_EMU_HH

#define SA3D_CUDA_EMU 1

#include <functional>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __launch_bounds__(n)
#define __shared__ static

/* ---- runtime ---- */

typedef enum cudaError { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2 } cudaError_t;
typedef enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2 } cudaMemcpyKind;
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
inline cudaError_t cudaMalloc(void **p, size_t n) {
    *p = malloc(n);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaMallocHost(void **p, size_t n) { return cudaMalloc(p, n); }
inline cudaError_t cudaFree(void *p) {
    free(p);
    return cudaSuccess;
}
inline cudaError_t cudaFreeHost(void *p) { return cudaFree(p); }
inline cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
    (void)kind;
    memcpy(dst, src, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s) {
    (void)s;
    return cudaMemcpy(dst, src, n, kind);
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

/* ---- cuBLAS: column-major SGEMM, the one call the aligner makes ---- */

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
// C (m x n, ldc) = alpha op(A) (m x k) op(B) (k x n) + beta C, column-major; leading dimensions checked as cuBLAS
// does.
inline cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                  const float *alpha, const float *A, int lda, const float *B, int ldb,
                                  const float *beta, float *C, int ldc) {
    (void)h;
    if (m < 0 || n < 0 || k < 0 || lda < (ta == CUBLAS_OP_N ? m : k) || ldb < (tb == CUBLAS_OP_N ? k : n) ||
        ldc < m || lda < 1 || ldb < 1 || ldc < 1)
        return CUBLAS_STATUS_INVALID_VALUE;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            float acc = 0.0f;
            for (int p = 0; p < k; p++) {
                float a = ta == CUBLAS_OP_N ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p];
                float b = tb == CUBLAS_OP_N ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j];
                acc += a * b;
            }
            float *c = C + (size_t)j * ldc + i;
            *c = *alpha * acc + (*beta == 0.0f ? 0.0f : *beta * *c);
        }
    return CUBLAS_STATUS_SUCCESS;
}

/* ---- threads ---- */

// Each CUDA thread of a block is a fiber (ucontext) on the calling OS thread. A fiber runs until it waits at a
// barrier, then the next one runs: deterministic, and cheap on a busy machine (one OS thread, no lock). A
// missing barrier shows reliably: thread 0 runs on into the next step before the others have done this one.
struct emu_fiber {
    ucontext_t ctx;
    std::vector<char> stack;
    dim3 idx;
    bool done;
};
inline std::vector<emu_fiber> emu_fibers;
inline unsigned emu_cur;
inline ucontext_t emu_main;
inline std::function<void()> emu_body;
inline dim3 blockIdx, blockDim, gridDim;
#define threadIdx (emu_fibers[emu_cur].idx)

inline void emu_yield() { swapcontext(&emu_fibers[emu_cur].ctx, &emu_main); }

// A barrier of n fibers: the last to arrive goes on, the others yield until it has.
struct emu_barrier {
    unsigned n = 0, count = 0, gen = 0;
    void arrive_and_wait() {
        unsigned g = gen;
        if (++count == n) {
            count = 0;
            gen++;
            return;
        }
        while (gen == g) emu_yield();
    }
};
inline emu_barrier emu_block_bar;
inline std::vector<emu_barrier> emu_warp_bar;
inline std::vector<double> emu_lanes;   // [warps][32] the values being shuffled

inline void __syncthreads() { emu_block_bar.arrive_and_wait(); }

inline double __shfl_xor_sync(unsigned mask, double v, int lane_mask) {
    (void)mask;   // every lane of the warp takes part (the kernels here use 0xffffffff)
    unsigned t = threadIdx.x, w = t / 32, lane = t % 32;
    double *x = emu_lanes.data() + 32 * w;
    x[lane] = v;
    emu_warp_bar[w].arrive_and_wait();
    double r = x[lane ^ (unsigned)lane_mask];
    emu_warp_bar[w].arrive_and_wait();
    return r;
}

inline void emu_trampoline() {
    emu_body();
    emu_fibers[emu_cur].done = true;   // returns to uc_link: the scheduler
}

// Runs body() as the kernel's grid x threads (threads a multiple of 32), one block after another.
template <class F> void emu_launch(dim3 grid, unsigned threads, F body) {
    blockDim = dim3(threads);
    gridDim = grid;
    emu_body = body;
    emu_fibers.resize(threads);
    emu_warp_bar.assign(threads / 32, emu_barrier());
    for (auto &b : emu_warp_bar) b.n = 32;
    emu_lanes.assign(threads, 0.0);
    for (unsigned by = 0; by < grid.y; by++)
        for (unsigned bx = 0; bx < grid.x; bx++) {
            blockIdx = dim3(bx, by);
            emu_block_bar = emu_barrier();
            emu_block_bar.n = threads;
            for (unsigned t = 0; t < threads; t++) {
                emu_fiber &f = emu_fibers[t];
                f.stack.resize(1 << 18);   // 256 KiB: room for a sanitizer's red zones
                f.idx = dim3(t);
                f.done = false;
                getcontext(&f.ctx);
                f.ctx.uc_stack.ss_sp = f.stack.data();
                f.ctx.uc_stack.ss_size = f.stack.size();
                f.ctx.uc_link = &emu_main;
                makecontext(&f.ctx, emu_trampoline, 0);
            }
            for (unsigned left = threads; left > 0;)
                for (emu_cur = 0; emu_cur < threads; emu_cur++)
                    if (!emu_fibers[emu_cur].done) {
                        swapcontext(&emu_main, &emu_fibers[emu_cur].ctx);
                        if (emu_fibers[emu_cur].done) left--;
                    }
        }
}

#define AK_LAUNCH(kernel, grid, threads, stream, ...) emu_launch(grid, threads, [&] { kernel(__VA_ARGS__); })

#endif
