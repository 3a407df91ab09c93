/* The backend seam of the networks (STYLE.md section 8, as amended in docs/STYLE.md): a backend runs a whole
 * forward pass of an opened model into a workspace. The CPU backend is the reference (src/nn/vit.c, dpt.c over
 * the kernels of src/tensor); the CUDA backend (src/nn/cuda/, built only with -DSEMALIGN3D_CUDA=ON) mirrors the
 * same steps on the GPU. The seam is one pass, not one op, because a GPU pass keeps its activations in device
 * memory and in fp16/bf16, and replays the whole pass as one CUDA graph: none of that fits float* kernels.
 *
 * Lifecycle: model_init after the weights are bound (the CUDA backend uploads them once), workspace_fit each time
 * the host-side workspace fields are set for an input size (sizes, batch, output views: at creation and on every
 * sa3d_workspace_resize), forward per batch of images, then the release functions. The registry (backend.c) is
 * the only place that knows which backends were built. */
#ifndef SA3D_NN_BACKEND_H
#define SA3D_NN_BACKEND_H

#include "nn/model.h"

typedef struct sa3d_backend {
    const char *name;
    sa3d_status (*model_init)(sa3d_model *m, sa3d_error *err);
    void (*model_release)(sa3d_model *m);
    /* Makes the backend's buffers fit the workspace's current size: the first call allocates them, later ones keep
     * what is large enough and grow the rest. A failure leaves the state workspace_release frees (or a later fit
     * completes). */
    sa3d_status (*workspace_fit)(sa3d_workspace *ws, sa3d_error *err);
    void (*workspace_release)(sa3d_workspace *ws);
    /* pixels: [batch][C][H][W] host floats, checked finite. Fills the output views (or, with
     * SA3D_WS_NO_DOWNLOAD, leaves them on the device until download). SA3D_ERR_NUMERIC if an output is not
     * finite, SA3D_ERR_IO for a device failure. */
    sa3d_status (*forward)(const sa3d_model *m, sa3d_workspace *ws, const float *pixels, sa3d_error *err);
    /* Copies output view `which` (-1: every view) of the last pass to the host if it is still on the device (its
     * ws->out_stale flag). NULL: outputs are always on the host. */
    sa3d_status (*download)(sa3d_workspace *ws, int which, sa3d_error *err);
    /* Host memory for the pixels and the output views (required; the CPU's: sa3d_malloc / sa3d_free). The GPU's is
     * page-locked, so that each upload and download is one DMA at full speed instead of a copy through a staging
     * buffer. */
    void *(*host_alloc)(size_t bytes);
    void (*host_free)(void *p);
} sa3d_backend;

/* NULL when the name is unknown or that backend was not built. */
const sa3d_backend *sa3d_backend_find(const char *name);
/* Comma-separated names of the backends in this build ("cpu" or "cpu, cuda"). */
const char *sa3d_backend_names(void);

extern const sa3d_backend sa3d_backend_cpu;

#endif
