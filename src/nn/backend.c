/* Backend registry and the CPU backend: one forward pass per image of the batch through vit.c / dpt.c, each
 * image's outputs copied into its slot of the batched views when the batch holds more than one. */
#include <string.h>
#include "nn/backend.h"
#include "tensor/kernels.h"

/* The CUDA backend (src/nn/cuda/). Without -DSEMALIGN3D_CUDA the reference is weak, so its address is NULL unless
 * a program links a definition of its own: tests/nn_cuda_emu.cc, the backend's source built for the CPU against
 * tests/cuda_emu.hh (the test_nn_emu program). */
#ifdef SEMALIGN3D_CUDA
extern const sa3d_backend sa3d_backend_cuda;
#else
extern const sa3d_backend sa3d_backend_cuda __attribute__((weak));
#endif

static const sa3d_backend *const backends[] = { &sa3d_backend_cpu, &sa3d_backend_cuda };

const sa3d_backend *sa3d_backend_find(const char *name) {
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++)
        if (backends[i] && !strcmp(backends[i]->name, name)) return backends[i];
    return NULL;
}

const char *sa3d_backend_names(void) { return backends[1] ? "cpu, cuda" : "cpu"; }

static sa3d_status cpu_model_init(sa3d_model *m, sa3d_error *err) { (void)m; (void)err; return SA3D_OK; }
static sa3d_status cpu_workspace_fit(sa3d_workspace *ws, sa3d_error *err) { (void)ws; (void)err; return SA3D_OK; }

static sa3d_status cpu_forward(const sa3d_model *m, sa3d_workspace *ws, const float *pixels, sa3d_error *err) {
    sa3d_set_threads(m->n_threads);
    size_t n_img = (size_t)m->vit.n_channels * ws->H * ws->W;
    long bad_in = sa3d_first_nonfinite(pixels, n_img * (size_t)ws->batch);
    if (bad_in >= 0)
        return sa3d_fail(err, SA3D_ERR_NUMERIC, "%s: pixel_values: non-finite value at index %ld", m->dir, bad_in);
    for (int b = 0; b < ws->batch; b++) {
        const float *px = pixels + (size_t)b * n_img;
        if (m->kind == SA3D_MODEL_DINOV2) {
            sa3d_vit_encode(m, ws, px, NULL, 0);
            sa3d_vit_finish(m, ws);
        } else {
            sa3d_vit_encode(m, ws, px, m->dpt.out_indices, 4);
            sa3d_dpt_forward(m, ws);
        }
        if (!ws->out_block) continue;   /* batch 1: the views are the per-image arrays */
        for (int i = 0; i < ws->n_out; i++) {
            size_t n = sa3d_output_floats_per_image(ws, i);
            memcpy((float *)ws->out[i].data + (size_t)b * n, ws->out_src[i], n * sizeof(float));
        }
    }
    for (int i = 0; i < ws->n_out; i++) {
        const sa3d_tensor_view *v = &ws->out[i];
        long bad_at = sa3d_first_nonfinite(v->data, sa3d_output_floats_per_image(ws, i) * (size_t)ws->batch);
        if (bad_at >= 0)
            return sa3d_fail(err, SA3D_ERR_NUMERIC, "%s: output %s: non-finite value at index %ld", m->dir, v->name,
                             bad_at);
    }
    return SA3D_OK;
}

const sa3d_backend sa3d_backend_cpu = {
    .name = "cpu",
    .model_init = cpu_model_init,
    .model_release = NULL,
    .workspace_fit = cpu_workspace_fit,
    .workspace_release = NULL,
    .forward = cpu_forward,
    .download = NULL,
    .host_alloc = sa3d_malloc,
    .host_free = sa3d_free,
};
