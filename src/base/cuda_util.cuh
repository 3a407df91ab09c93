/* What the CUDA backends (src/nn/cuda/, src/align/cuda/) share: device memory freed as one set, with the first
 * failure kept (sticky) so that a run of uploads is checked once, and a CUDA error as an sa3d_error. Built only
 * with -DSEMALIGN3D_CUDA=ON; include after base/base.h. */
#ifndef SA3D_CUDA_UTIL_CUH
#define SA3D_CUDA_UTIL_CUH

#ifndef SA3D_CUDA_EMU   /* tests/cuda_emu.hh stands in for the runtime */
#include <cuda_runtime.h>
#endif
#include <stdlib.h>
#include <string.h>

/* kernel<<<grid, threads, 0, stream>>>(args...), written as a call so that tests/cuda_emu.hh (which defines its
 * own SA3D_LAUNCH) can run the same line on the CPU. A kernel with several template arguments goes through a
 * function pointer (the commas would split the macro's arguments). */
#ifndef SA3D_LAUNCH
#define SA3D_LAUNCH(kernel, grid, threads, stream, ...) kernel<<<grid, threads, 0, stream>>>(__VA_ARGS__)
#endif

/* Every device allocation of an owner (a model's weights, a workspace's activations), freed together; bytes is
 * what they hold now, the device memory figure the API reports. */
typedef struct dmem {
    void **p;
    size_t *sz;
    int n, cap;
    size_t bytes;
    unsigned long n_made;   /* allocations made so far: a change means some pointer may have changed */
    cudaError_t first;      /* first failure, sticky */
} dmem;

/* bytes of device memory, owned by d; NULL (and d->first set) on failure or after an earlier one */
static inline void *dalloc(dmem *d, size_t bytes) {
    if (d->first != cudaSuccess) return NULL;
    if (d->n == d->cap) {
        int cap = d->cap ? 2 * d->cap : 64;
        void **np = (void **)realloc(d->p, (size_t)cap * sizeof *np);
        if (np) d->p = np;
        size_t *ns = np ? (size_t *)realloc(d->sz, (size_t)cap * sizeof *ns) : NULL;
        if (!ns) { d->first = cudaErrorMemoryAllocation; return NULL; }
        d->sz = ns;
        d->cap = cap;
    }
    void *ptr = NULL;
    size_t n = bytes ? bytes : 16;
    cudaError_t e = cudaMalloc(&ptr, n);
    if (e != cudaSuccess) { d->first = e; return NULL; }
    d->p[d->n] = ptr;
    d->sz[d->n++] = n;
    d->bytes += n;
    d->n_made++;
    return ptr;
}

/* Frees one allocation of d before the others (a scratch needed only while setting up); NULL: nothing. */
static inline void dfree(dmem *d, void *ptr) {
    for (int i = 0; ptr && i < d->n; i++)
        if (d->p[i] == ptr) {
            cudaFree(ptr);
            d->bytes -= d->sz[i];
            d->n--;
            d->p[i] = d->p[d->n];
            d->sz[i] = d->sz[d->n];
            return;
        }
}

/* A device buffer of at least `bytes` owned by d (contents not kept): p when it is one of d's allocations and large
 * enough, else a new one in its place (p is freed first, so the two are never held together). NULL on failure. */
static inline void *dfit(dmem *d, void *p, size_t bytes) {
    for (int i = 0; p && i < d->n; i++)
        if (d->p[i] == p && d->sz[i] >= bytes) return p;
    dfree(d, p);
    return dalloc(d, bytes);
}

static inline void dmem_free(dmem *d) {
    for (int i = 0; i < d->n; i++) cudaFree(d->p[i]);
    free(d->p);
    free(d->sz);
    memset(d, 0, sizeof *d);
}

static inline sa3d_status cuda_fail(sa3d_error *err, const char *where, const char *what, cudaError_t e) {
    return sa3d_fail(err, e == cudaErrorMemoryAllocation ? SA3D_ERR_NOMEM : SA3D_ERR_IO, "%s: cuda: %s: %s", where,
                     what, cudaGetErrorString(e));
}

/* A GPU the kernels run on: one present, of compute capability 8.0 or later (the build's architectures, 80 and 90:
 * mma.sync tiles, cp.async, bf16). An older GPU would open and then fail at the first launch with "no kernel
 * image is available"; this says so at open. SA3D_ERR_UNSUPPORTED naming `what` otherwise. */
static inline sa3d_status cuda_device_check(sa3d_error *err, const char *what) {
    int n_dev = 0, dev = 0, major = 0, minor = 0;
    cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess || n_dev == 0)
        return sa3d_fail(err, SA3D_ERR_UNSUPPORTED, "%s: device cuda: no usable GPU (%s)", what,
                         e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
        return sa3d_fail(err, SA3D_ERR_UNSUPPORTED, "%s: device cuda: cannot read the GPU's compute capability", what);
    if (major < 8)
        return sa3d_fail(err, SA3D_ERR_UNSUPPORTED, "%s: device cuda: the GPU has compute capability %d.%d; the "
                         "kernels need 8.0 or later (Ampere, Ada, Hopper)", what, major, minor);
    return SA3D_OK;
}

#endif
