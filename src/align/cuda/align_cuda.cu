/* CUDA backend of the aligner (align_gpu.h): the similarity maps, and align_energy.h's steps for every
 * (hypothesis, view) of one iteration in one kernel launch.
 *
 *   - Per image and view, once: the similarity maps by one cuBLAS SGEMM and reading (a)'s candidate lists by a
 *     thread per cell (sa3d_align_gpu_similarity). Then the context of the image and of its mirror (rig and its
 *     transpose, reading (a)'s cells and candidates with each point's slots, the anchors' log p_sem maps, the
 *     mask; the similarity maps only for reading (b)) is uploaded, and the two contexts are copied to the device
 *     with their pointers replaced.
 *   - Per iteration: one host-to-device copy of the poses, one launch, one device-to-host copy of energies and
 *     gradients, all on one stream from pinned buffers.
 *   - L_geom in the same launch: view 0's blocks run geom.h's relation steps after the energy, a thread per
 *     relation, each anchor's gradient gathered over its relations' slots.
 *   - A block of AK_THREADS threads per (hypothesis, view); between the steps a barrier. Points, cells and
 *     anchors are spread over the threads; L_sparse's window over the 32 lanes of a warp per anchor. The block's
 *     partial sums are reduced in a fixed tree, L_sparse serially in anchor order: deterministic, no atomics. */
#ifndef SA3D_CUDA_EMU   /* tests/cuda_emu.hh stands in for the runtime and cuBLAS: the test_align_emu build */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
extern "C" {
#include "align/align_gpu.h"
}
#include "base/cuda_util.cuh"

#include "align_kernel.cuh"

/* ---- host side ---- */

struct sa3d_align_gpu {
    dmem mem;
    cudaStream_t stream;
    int views, n, max_hyp;
    int started;               /* B of the launch in flight, 0 when none */
    size_t wd;                 /* work doubles per row */
    sa3d_align_ctx *dctx;      /* [views] on the device */
    int *twin;
    double *Ym, *work;
    unsigned char *d_in, *d_out, *h_in, *h_out;   /* poses in, results out; h_: pinned */
    int geom;                  /* L_geom on the device (w_geom != 0) */
    double *gr;                /* [max_hyp][grd] its relations' slot gradients */
    size_t grd;
    int *vptr, *vent;          /* each used anchor's slots, in relation order */
};

/* Uploads count elements of src (NULL stays NULL); failures are kept in g->mem.first. */
template <typename T> static T *up(sa3d_align_gpu *g, const T *src, size_t count) {
    if (!src) return NULL;
    T *d = (T *)dalloc(&g->mem, count * sizeof(T));
    if (!d) return NULL;
    cudaError_t e = cudaMemcpy(d, src, count * sizeof(T), cudaMemcpyHostToDevice);
    if (e != cudaSuccess && g->mem.first == cudaSuccess) g->mem.first = e;
    return d;
}

/* dv = c with every array the energy reads on the device; the rest (L_geom's terms, the mirror) cleared. */
static void ctx_upload(sa3d_align_gpu *g, const sa3d_align_ctx *c, sa3d_align_ctx *dv) {
    size_t N = (size_t)c->N, n = (size_t)c->n, cells = (size_t)c->cells, nnz = (size_t)c->rig_ptr[c->N];
    size_t nk = (size_t)c->n_act * c->K, anc = (size_t)c->n_anc;
    *dv = *c;
    dv->rig_ptr = up(g, c->rig_ptr, N + 1);
    dv->rig_idx = up(g, c->rig_idx, nnz);
    dv->rig_w = up(g, c->rig_w, nnz);
    dv->rigT_ptr = up(g, c->rigT_ptr, n + 1);
    dv->rigT_pt = up(g, c->rigT_pt, nnz);
    dv->rigT_w = up(g, c->rigT_w, nnz);
    /* reading (b): the raw maps (14 MB at N 1000, g 60) or the blurred levels (4 x 14 MB) */
    dv->S = c->p.rec_mode == SA3D_REC_POINT && !c->S_lvl ? up(g, c->S, N * cells) : NULL;
    dv->S_lvl = up(g, c->S_lvl, (size_t)c->n_lvl * N * cells);
    dv->sem_mu = up(g, c->sem_mu, N);
    dv->sem_sd = up(g, c->sem_sd, N);
    dv->pt_w = up(g, c->pt_w, N);
    dv->act_cell = up(g, c->act_cell, (size_t)c->n_act);
    dv->act_w = up(g, c->act_w, (size_t)c->n_act);
    dv->cand = up(g, c->cand, nk);
    dv->cand_lp = up(g, c->cand_lp, nk);
    dv->pt_slot_ptr = up(g, c->pt_slot_ptr, N + 1);
    dv->pt_slot = up(g, c->pt_slot, (size_t)c->pt_slot_ptr[c->N]);
    dv->pt_slot_q = up(g, c->pt_slot_q, (size_t)c->pt_slot_ptr[c->N]);
    dv->act_cxy = up(g, c->act_cxy, 2 * (size_t)c->n_act);
    dv->anc_pt = up(g, c->anc_pt, anc);
    dv->anc_lp = up(g, c->anc_lp, anc * cells);
    dv->pt_anc = up(g, c->pt_anc, N);
    dv->mask = up(g, c->mask, cells);
    memset(&dv->gt, 0, sizeof dv->gt);   /* geom_upload fills it for view 0 */
    dv->g_e1 = dv->g_e2 = dv->g_t = dv->g_v = NULL;
    dv->g_beta = NULL;
    dv->mirror = NULL;
    dv->twin = NULL;
}

/* L_geom's terms into dv->gt, the slot gather lists and the slot buffers. Host-side failures: 0. */
static int geom_upload(sa3d_align_gpu *g, const sa3d_align_ctx *c, sa3d_align_ctx *dv, int max_hyp) {
    const sa3d_geom_terms *t = &c->gt;
    size_t np = t->n_pairs, nt = c->p.use_tets ? t->n_tets : 0, ns = 4 * (np + nt);
    dv->gt.n_pairs = np;
    dv->gt.e1 = up(g, t->e1, 2 * np);
    dv->gt.e2 = up(g, t->e2, 2 * np);
    dv->gt.ratio = up(g, t->ratio, np);
    dv->gt.cosang = up(g, t->cosang, np);
    dv->gt.n_tets = nt;
    dv->gt.t = up(g, t->t, 3 * nt);
    dv->gt.v = up(g, t->v, nt);
    dv->gt.cx = up(g, t->cx, nt);
    dv->gt.cy = up(g, t->cy, nt);
    dv->gt.cz = up(g, t->cz, nt);
    /* vertex j -> its slots (relation x 4 + slot), pairs then tets, each in order: sa3d_geom_energy's order */
    int n = c->n;
    int *ptr = (int *)calloc((size_t)n + 1, sizeof(int)), *cur = (int *)malloc(((size_t)n + 1) * sizeof(int));
    int *ent = (int *)malloc((ns + 1) * sizeof(int));
    if (!ptr || !cur || !ent) {
        free(ptr); free(cur); free(ent);
        return 0;
    }
    for (int pass = 0; pass < 2; pass++) {   /* count, then fill */
        for (size_t r = 0; r < np + nt; r++)
            for (int s = 0; s < 4; s++) {
                int j = sa3d_geom_slot_vertex(t, r, s);
                if (pass == 0) ptr[j + 1]++;
                else ent[cur[j]++] = (int)(4 * r + (size_t)s);
            }
        if (pass == 0) {
            for (int j = 0; j < n; j++) ptr[j + 1] += ptr[j];
            memcpy(cur, ptr, (size_t)n * sizeof(int));
        }
    }
    g->vptr = up(g, ptr, (size_t)n + 1);
    g->vent = up(g, ent, ns);
    free(ptr); free(cur); free(ent);
    g->grd = 12 * (np + nt);
    g->gr = (double *)dalloc(&g->mem, (size_t)max_hyp * g->grd * sizeof(double));
    return 1;
}

static size_t in_bytes(const sa3d_align_gpu *g, int B) { return ((size_t)B * 3 * g->n + B) * sizeof(double) + B; }
/* rows x (E, 4 terms, gY, gphi), then per hypothesis L_geom and its gradient */
static size_t out_bytes(const sa3d_align_gpu *g, int B) {
    return ((size_t)g->views * B * (6 + 3 * (size_t)g->n) + (size_t)B * (1 + 3 * (size_t)g->n)) * sizeof(double);
}

extern "C" void sa3d_align_gpu_free(sa3d_align_gpu *g) {
    if (!g) return;
    if (g->stream) {
        cudaStreamSynchronize(g->stream);
        cudaStreamDestroy(g->stream);
    }
    cudaFreeHost(g->h_in);
    cudaFreeHost(g->h_out);
    dmem_free(&g->mem);
    free(g);
}

extern "C" sa3d_status sa3d_align_gpu_check(sa3d_error *err) { return cuda_device_check(err, "align"); }

extern "C" sa3d_status sa3d_align_gpu_similarity(sa3d_align_ctx *c, const float *feat, const float *F,
                                                 sa3d_error *err) {
    sa3d_status st = sa3d_align_gpu_check(err);
    if (st != SA3D_OK) return st;
    int N = c->N, C = c->C, cells = c->cells, K = c->K;
    size_t nf = (size_t)C * cells, nx = (size_t)N * C, ns = (size_t)N * cells, nk = (size_t)cells * K;
    dmem mem;
    memset(&mem, 0, sizeof mem);
    float *dF = (float *)dalloc(&mem, nf * sizeof(float)), *dX = (float *)dalloc(&mem, nx * sizeof(float));
    float *dS = (float *)dalloc(&mem, ns * sizeof(float)), *dsv = (float *)dalloc(&mem, nk * sizeof(float));
    double *dmu = (double *)dalloc(&mem, N * sizeof(double)), *dsd = (double *)dalloc(&mem, N * sizeof(double));
    double *dlp = (double *)dalloc(&mem, nk * sizeof(double));
    int *dcand = (int *)dalloc(&mem, nk * sizeof(int));
    cudaError_t e = mem.first;
    if (e == cudaSuccess) e = cudaMemcpy(dF, F, nf * sizeof(float), cudaMemcpyHostToDevice);
    if (e == cudaSuccess) e = cudaMemcpy(dX, feat, nx * sizeof(float), cudaMemcpyHostToDevice);
    if (e == cudaSuccess) e = cudaMemcpy(dmu, c->sem_mu, N * sizeof(double), cudaMemcpyHostToDevice);
    if (e == cudaSuccess) e = cudaMemcpy(dsd, c->sem_sd, N * sizeof(double), cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
        dmem_free(&mem);
        return cuda_fail(err, "align", "uploading the features", e);
    }
    /* column-major: S^T [cells][N] = F^T [cells][C] . feat^T [C][N], i.e. row-major S = feat . F */
    cublasHandle_t h = NULL;
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t cs = cublasCreate(&h);
    if (cs == CUBLAS_STATUS_SUCCESS) cs = cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);   /* fp32, not TF32 */
    if (cs == CUBLAS_STATUS_SUCCESS)
        cs = cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, cells, N, C, &one, dF, cells, dX, C, &zero, dS, cells);
    if (cs == CUBLAS_STATUS_SUCCESS) {   /* cuBLAS ran on the default stream, as does the launch */
        SA3D_LAUNCH(candidates_kernel, dim3((unsigned)((cells + 127) / 128)), 128, 0, dS, N, cells, dmu, dsd, K,
                    dcand, dlp, dsv);
        e = cudaGetLastError();
    }
    if (cs == CUBLAS_STATUS_SUCCESS && e == cudaSuccess)
        e = cudaMemcpy(c->S, dS, ns * sizeof(float), cudaMemcpyDeviceToHost);
    if (cs == CUBLAS_STATUS_SUCCESS && e == cudaSuccess)
        e = cudaMemcpy(c->cand, dcand, nk * sizeof(int), cudaMemcpyDeviceToHost);
    if (cs == CUBLAS_STATUS_SUCCESS && e == cudaSuccess)
        e = cudaMemcpy(c->cand_lp, dlp, nk * sizeof(double), cudaMemcpyDeviceToHost);
    if (h) cublasDestroy(h);
    dmem_free(&mem);
    if (cs != CUBLAS_STATUS_SUCCESS)
        return sa3d_fail(err, SA3D_ERR_IO, "align: cuda: similarity product: cuBLAS status %d", (int)cs);
    if (e != cudaSuccess) return cuda_fail(err, "align", "similarity maps and candidates", e);
    return SA3D_OK;
}

extern "C" sa3d_status sa3d_align_gpu_new(sa3d_align_gpu **out, const sa3d_align_ctx *c, int max_hyp,
                                          sa3d_error *err) {
    *out = NULL;
    sa3d_status st = sa3d_align_gpu_check(err);
    if (st != SA3D_OK) return st;
    if (max_hyp < 1) return sa3d_fail(err, SA3D_ERR_ARG, "align: device cuda: %d hypotheses", max_hyp);
    sa3d_align_gpu *g = (sa3d_align_gpu *)calloc(1, sizeof *g);
    if (!g) return sa3d_fail(err, SA3D_ERR_NOMEM, "align: out of memory");
    g->views = sa3d_align_views(c);
    g->n = c->n;
    g->max_hyp = max_hyp;
    sa3d_align_ctx hv[2];
    cudaError_t e;
    ctx_upload(g, c, &hv[0]);
    g->geom = c->p.w_geom != 0.0;
    if (g->geom && !geom_upload(g, c, &hv[0], max_hyp)) {
        sa3d_align_gpu_free(g);
        return sa3d_fail(err, SA3D_ERR_NOMEM, "align: out of memory");
    }
    g->wd = sa3d_ae_work_doubles(c);
    if (c->mirror) {
        ctx_upload(g, c->mirror, &hv[1]);
        size_t wm = sa3d_ae_work_doubles(c->mirror);
        if (wm > g->wd) g->wd = wm;
        g->twin = up(g, c->twin, (size_t)c->n);
        g->Ym = (double *)dalloc(&g->mem, (size_t)max_hyp * 3 * c->n * sizeof(double));
    }
    g->dctx = up(g, hv, (size_t)g->views);
    size_t work;
    if (!sa3d_mul3_ok((size_t)g->views * max_hyp, g->wd, sizeof(double), &work)) {
        sa3d_align_gpu_free(g);
        return sa3d_fail(err, SA3D_ERR_ARG, "align: device cuda: %d hypotheses need too much memory", max_hyp);
    }
    g->work = (double *)dalloc(&g->mem, work);
    g->d_in = (unsigned char *)dalloc(&g->mem, in_bytes(g, max_hyp));
    g->d_out = (unsigned char *)dalloc(&g->mem, out_bytes(g, max_hyp));
    e = g->mem.first;
    if (e == cudaSuccess) e = cudaMallocHost((void **)&g->h_in, in_bytes(g, max_hyp));
    if (e == cudaSuccess) e = cudaMallocHost((void **)&g->h_out, out_bytes(g, max_hyp));
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking);
    /* the uploads above ran on the default stream, which a non-blocking stream does not wait for */
    if (e == cudaSuccess) e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
        sa3d_align_gpu_free(g);
        return cuda_fail(err, "align", "uploading the image's context", e);
    }
    *out = g;
    return SA3D_OK;
}

extern "C" sa3d_status sa3d_align_gpu_start(sa3d_align_gpu *g, int B, const double *Y, const double *phi,
                                            const uint8_t *alive, const sa3d_align_stage *s, sa3d_error *err) {
    if (B < 1 || B > g->max_hyp || g->started)
        return sa3d_fail(err, SA3D_ERR_ARG, "align: device cuda: start of %d hypotheses (room for %d%s)", B,
                         g->max_hyp, g->started ? ", one already started" : "");
    size_t P3 = 3 * (size_t)g->n, rows = (size_t)g->views * B;
    double *hY = (double *)g->h_in, *hphi = hY + B * P3;
    memcpy(hY, Y, B * P3 * sizeof(double));
    memcpy(hphi, phi, (size_t)B * sizeof(double));
    memcpy(hphi + B, alive, (size_t)B);
    double *dY = (double *)g->d_in, *dE = (double *)g->d_out;
    kparams P;
    P.B = B;
    P.stage = *s;
    P.Y = dY;
    P.phi = dY + B * P3;
    P.alive = (const uint8_t *)(dY + B * P3 + B);
    P.twin = g->twin;
    P.Ym = g->Ym;
    P.work = g->work;
    P.wd = g->wd;
    P.E = dE;
    P.terms = dE + rows;
    P.gY = dE + 5 * rows;
    P.gphi = dE + 5 * rows + rows * P3;
    P.eg = P.gphi + rows;
    P.gg = P.eg + B;
    P.geom = g->geom;
    P.gr = g->gr;
    P.grd = g->grd;
    P.vptr = g->vptr;
    P.vent = g->vent;
    cudaError_t e = cudaMemcpyAsync(g->d_in, g->h_in, in_bytes(g, B), cudaMemcpyHostToDevice, g->stream);
    if (e == cudaSuccess) {
        SA3D_LAUNCH(energy_kernel, dim3((unsigned)B, (unsigned)g->views), AK_THREADS, g->stream, g->dctx, P);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaMemcpyAsync(g->h_out, g->d_out, out_bytes(g, B), cudaMemcpyDeviceToHost, g->stream);
    if (e != cudaSuccess) return cuda_fail(err, "align", "energy launch", e);
    g->started = B;
    return SA3D_OK;
}

extern "C" sa3d_status sa3d_align_gpu_finish(sa3d_align_gpu *g, double *E, double *terms, double *gY, double *gphi,
                                             double *eg, double *gg, sa3d_error *err) {
    int B = g->started;
    if (!B) return sa3d_fail(err, SA3D_ERR_ARG, "align: device cuda: nothing started");
    g->started = 0;
    cudaError_t e = cudaStreamSynchronize(g->stream);
    if (e != cudaSuccess) return cuda_fail(err, "align", "energy kernel", e);
    size_t P3 = 3 * (size_t)g->n, rows = (size_t)g->views * B;
    const uint8_t *alive = (const uint8_t *)((const double *)g->h_in + B * P3 + B);
    const double *hE = (const double *)g->h_out, *hT = hE + rows, *hG = hE + 5 * rows, *hP = hG + rows * P3;
    const double *hEg = hP + rows, *hGg = hEg + B;
    for (size_t r = 0; r < rows; r++) {
        if (!alive[r % B]) continue;
        E[r] = hE[r];
        memcpy(terms + 4 * r, hT + 4 * r, 4 * sizeof(double));
        memcpy(gY + P3 * r, hG + P3 * r, P3 * sizeof(double));
        gphi[r] = hP[r];
    }
    for (int b = 0; b < B; b++) {
        if (!alive[b]) continue;
        eg[b] = hEg[b];
        memcpy(gg + P3 * b, hGg + P3 * b, P3 * sizeof(double));
    }
    return SA3D_OK;
}
