// TEST HELPER (C++20), not library code: runs a CUDA backend's source on the CPU, so that its kernels' thread
// layout, barriers and warp shuffles, and its host code's buffers and offsets, are tested where no GPU is at hand
// (tests/align_cuda_emu.cc builds src/align/cuda/align_cuda.cu with it: the test_align_emu program).
//
// Kernels: one std::thread per CUDA thread of a block; the same threads run the grid's blocks one after another,
// with a barrier between blocks. __syncthreads is a barrier of the block's threads; __shfl_xor_sync a store, a
// barrier of the warp's 32 threads, a load and a second barrier. __shared__ becomes `static`: one copy, which is
// the block's shared memory because one block runs at a time.
// Runtime: the calls the backends make, on host memory (device memory is malloc'd, copies are memcpy, a stream
// runs everything at once, in order).
// What it cannot show: a race that a missing barrier leaves shows only when the threads happen to interleave
// badly; host code that reads device memory directly works here and not on a GPU; GPU performance.
#ifndef SA3D_CUDA_EMU_HH
#define SA3D_CUDA_EMU_HH

#define SA3D_CUDA_EMU 1

#include <atomic>
#include <memory>
#include <stdlib.h>
#include <string.h>
#include <thread>
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
inline cudaError_t cudaStreamDestroy(cudaStream_t s) {
    (void)s;
    return cudaSuccess;
}

/* ---- threads ---- */

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

// A barrier of n threads: a counter and a generation; waiters yield the core (more threads than cores here, so
// spinning would starve the ones still on their way; measured 5x faster than std::barrier's futex waits).
struct emu_barrier {
    explicit emu_barrier(unsigned n) : n_(n) {}
    void arrive_and_wait() {
        unsigned gen = gen_.load(std::memory_order_acquire);
        if (count_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
            count_.store(0, std::memory_order_relaxed);
            gen_.store(gen + 1, std::memory_order_release);
            return;
        }
        while (gen_.load(std::memory_order_acquire) == gen) std::this_thread::yield();
    }
    unsigned n_;
    std::atomic<unsigned> count_{ 0 }, gen_{ 0 };
};

struct emu_block {
    std::unique_ptr<emu_barrier> all;
    std::vector<std::unique_ptr<emu_barrier>> warp;
    std::vector<double> lanes;   // [warps][32] the values being shuffled
};
inline emu_block *emu_current;

inline void __syncthreads() { emu_current->all->arrive_and_wait(); }

inline double __shfl_xor_sync(unsigned mask, double v, int lane_mask) {
    (void)mask;   // every lane of the warp takes part (the kernels here use 0xffffffff)
    unsigned t = threadIdx.x, w = t / 32, lane = t % 32;
    double *x = emu_current->lanes.data() + 32 * w;
    x[lane] = v;
    emu_current->warp[w]->arrive_and_wait();
    double r = x[lane ^ (unsigned)lane_mask];
    emu_current->warp[w]->arrive_and_wait();
    return r;
}

// Runs body() as the kernel's grid x threads (threads a multiple of 32).
template <class F> void emu_launch(dim3 grid, unsigned threads, F body) {
    blockDim = dim3(threads);
    gridDim = grid;
    emu_block blk;
    blk.all = std::make_unique<emu_barrier>(threads);
    for (unsigned w = 0; w < threads / 32; w++) blk.warp.push_back(std::make_unique<emu_barrier>(32));
    blk.lanes.assign(threads, 0.0);
    emu_current = &blk;
    std::vector<std::thread> th;
    for (unsigned t = 0; t < threads; t++)
        th.emplace_back([=, &blk] {
            threadIdx = dim3(t);
            for (unsigned by = 0; by < grid.y; by++)
                for (unsigned bx = 0; bx < grid.x; bx++) {
                    blockIdx = dim3(bx, by);
                    body();
                    blk.all->arrive_and_wait();
                }
        });
    for (auto &x : th) x.join();
    emu_current = nullptr;
}

#define AK_LAUNCH(kernel, grid, threads, stream, ...) emu_launch(grid, threads, [&] { kernel(__VA_ARGS__); })

#endif
