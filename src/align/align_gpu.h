/* The aligner's hypotheses evaluated on an NVIDIA GPU (align.params.device = SA3D_ALIGN_ON_CUDA; the commands'
 * --device cuda): the CUDA backend of align_energy.h's steps, in cuda/align_cuda.cu, built only with
 * -DSEMALIGN3D_CUDA=ON. The host keeps the rest of the optimisation (Adam, pruning, the mirror blend), so the
 * GPU's work per iteration is one kernel: a block per (hypothesis, view), a thread per item, the same item
 * functions as the CPU (align_energy.h, and geom.h's relation steps for L_geom). Sums run in a fixed order, so
 * results are deterministic; they equal the CPU's to rounding (libm and CUDA's exp and log differ in the last
 * bits), not bit for bit.
 *
 *     sa3d_align_gpu_similarity(&ctx, feat, F, &err);   // in the context's set-up: S and the candidates
 *     sa3d_align_gpu *g;
 *     sa3d_align_gpu_new(&g, &ctx, B, &err);            // uploads the context of the image and of its mirror
 *     sa3d_align_gpu_start(g, B, Y, phi, alive, &stage, &err);   // returns at once
 *     sa3d_align_gpu_finish(g, E, terms, gY, gphi, eg, gg, &err);   // waits; a row per view and hypothesis
 *     sa3d_align_gpu_free(g);
 * In a build without CUDA (align_gpu_none.c), sa3d_align_gpu_check and _new fail with SA3D_ERR_UNSUPPORTED and
 * say how to get one. */
#ifndef SA3D_ALIGN_GPU_H
#define SA3D_ALIGN_GPU_H

#include <stdint.h>
#include "align/align_internal.h"
#include "base/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sa3d_align_gpu sa3d_align_gpu;

/* Number of views the context evaluates: 2 with a mirror, else 1. */
static inline int sa3d_align_views(const sa3d_align_ctx *c) { return c->mirror ? 2 : 1; }

/* SA3D_OK when a GPU is there to use; else SA3D_ERR_UNSUPPORTED with the reason. */
sa3d_status sa3d_align_gpu_check(sa3d_error *err);
/* In the context's set-up: the similarity maps c->S[N][cells] = feat[N][C] . F[C][cells] on the GPU (cuBLAS SGEMM
 * in fp32, TF32 off), equal to sa3d_gemm_fixed_order's to float rounding, not bit for bit; then from them reading
 * (a)'s lists c->cand and c->cand_lp ([cells][K], before the active cells are picked), a thread per cell running
 * sa3d_align_cell_candidates: the CPU's lists from the same S, bit for bit. Reads c->N, C, cells, K, sem_mu, sem_sd;
 * host arrays in and out. */
sa3d_status sa3d_align_gpu_similarity(sa3d_align_ctx *c, const float *feat, const float *F, sa3d_error *err);
/* Uploads what the energy reads of c (and of c->mirror) and sizes the buffers for up to max_hyp hypotheses.
 * SA3D_ERR_UNSUPPORTED without a usable GPU, SA3D_ERR_NOMEM / SA3D_ERR_IO for device failures. */
sa3d_status sa3d_align_gpu_new(sa3d_align_gpu **out, const sa3d_align_ctx *c, int max_hyp, sa3d_error *err);
/* Starts energy_one of hypotheses 0..B-1 (Y [B][n][3], phi [B]; those with alive[b] = 0 are skipped) at stage s,
 * on the image and, with a mirror, on the mirrored image at the mirrored pose; returns without waiting. */
sa3d_status sa3d_align_gpu_start(sa3d_align_gpu *g, int B, const double *Y, const double *phi, const uint8_t *alive,
                                 const sa3d_align_stage *s, sa3d_error *err);
/* Waits for the started evaluation. Row r = view x B + b: E[r] = energy_one, terms[4 r ...] its unweighted
 * L_rec, L_bg, L_depth, L_sparse, gY[3 n r ...] dE/dY (of the pose the view saw: the mirrored one for view 1),
 * gphi[r] dE/dphi. Per hypothesis b: eg[b] = L_geom (sa3d_geom_energy) and gg[3 n b ...] its gradient, both 0
 * when w_geom is 0. Rows of hypotheses that were not alive are left as they were. */
sa3d_status sa3d_align_gpu_finish(sa3d_align_gpu *g, double *E, double *terms, double *gY, double *gphi,
                                  double *eg, double *gg, sa3d_error *err);
void sa3d_align_gpu_free(sa3d_align_gpu *g);   /* NULL is a no-op */

#ifdef __cplusplus
}
#endif

#endif
