// TEST HELPER (the test_nn_emu program: tests/test_nn_cuda.c linked with this), not library code: the networks'
// CUDA backend, src/nn/cuda/backend_cuda.cu, host code and kernels alike, built for the CPU against the emulated
// runtime, cuBLAS and threads of tests/cuda_emu.hh. Its sa3d_backend_cuda is the definition the library's weak
// reference finds (src/nn/backend.c), so `--device cuda` runs the backend's own code where no GPU is at hand.
#include "cuda_emu.hh"
#include "nn/cuda/backend_cuda.cu"

// The emulator's device bytes held now, for test_nn_cuda.c's memory case (a weak reference there: absent, and
// that check skipped, in the GPU build).
extern "C" size_t t_device_live_bytes(void) { return emu_device_live; }

// The emulated GPU's compute capability, for test_nn_cuda.c's check that an older GPU is refused at open.
extern "C" void t_set_compute_capability(int major, int minor) {
    emu_cc_major = major;
    emu_cc_minor = minor;
}
