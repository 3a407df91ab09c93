// TEST HELPER (the test_nn_emu program: tests/test_nn_cuda.c linked with this), not library code: the networks'
// CUDA backend, src/nn/cuda/backend_cuda.cu, host code and kernels alike, built for the CPU against the emulated
// runtime, cuBLAS and threads of tests/cuda_emu.hh. Its sa3d_backend_cuda is the definition the library's weak
// reference finds (src/nn/backend.c), so `--device cuda` runs the backend's own code where no GPU is at hand.
#include "cuda_emu.hh"
#include "nn/cuda/backend_cuda.cu"
