// TEST HELPER (the test_align_emu program: tests/test_align_cuda.c linked with this), not library code: the
// aligner's CUDA backend, src/align/cuda/align_cuda.cu, host code and kernel alike, built for the CPU against the
// emulated runtime, cuBLAS and threads of tests/cuda_emu.hh. Its sa3d_align_gpu_* functions stand in for the
// library's, so the aligner runs the backend's own code on `device cuda` where no GPU is at hand.
#include "cuda_emu.hh"
#define AK_THREADS 64   // 2 warps: every loop still strides over several items per thread, at a quarter of the cost
#include "align/cuda/align_cuda.cu"
