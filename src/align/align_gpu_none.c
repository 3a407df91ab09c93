/* align_gpu.h in a build without the CUDA backend (no -DSEMALIGN3D_CUDA=ON): no GPU, and a message saying how to
 * get one. The CUDA build compiles src/align/cuda/align_cuda.cu instead. */
#ifndef SEMALIGN3D_CUDA
#include "align/align_gpu.h"

sa3d_status sa3d_align_gpu_check(sa3d_error *err) {
    return sa3d_fail(err, SA3D_ERR_UNSUPPORTED, "align: device cuda: this build has no CUDA backend (configure "
                     "with cmake -DSEMALIGN3D_CUDA=ON)");
}

sa3d_status sa3d_align_gpu_similarity(sa3d_align_ctx *c, const float *feat, const float *F, sa3d_error *err) {
    (void)c; (void)feat; (void)F;
    return sa3d_align_gpu_check(err);
}

sa3d_status sa3d_align_gpu_new(sa3d_align_gpu **out, const sa3d_align_ctx *c, int max_hyp, sa3d_error *err) {
    (void)c;
    (void)max_hyp;
    *out = NULL;
    return sa3d_align_gpu_check(err);
}

sa3d_status sa3d_align_gpu_start(sa3d_align_gpu *g, int B, const double *Y, const double *phi, const uint8_t *alive,
                                 const sa3d_align_stage *s, sa3d_error *err) {
    (void)g; (void)B; (void)Y; (void)phi; (void)alive; (void)s;
    return sa3d_align_gpu_check(err);
}

sa3d_status sa3d_align_gpu_finish(sa3d_align_gpu *g, double *E, double *terms, double *gY, double *gphi,
                                  double *eg, double *gg, sa3d_error *err) {
    (void)g; (void)E; (void)terms; (void)gY; (void)gphi; (void)eg; (void)gg;
    return sa3d_align_gpu_check(err);
}

void sa3d_align_gpu_free(sa3d_align_gpu *g) { (void)g; }
#else
typedef int sa3d_align_gpu_none_empty;   /* ISO C: a translation unit is not empty */
#endif
