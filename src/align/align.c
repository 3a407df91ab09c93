/* Alignment of the 3D object-class representation with one image (METHOD.md 5; issue 5 part B).
 *
 * Per image: similarity maps S_i(c) = f_i . F(c) once (one fixed-order product), p_sem from them, and for
 * reading (a) the top_k candidate points of every active cell. Per hypothesis b: anchors Y_b (camera frame)
 * and phi_b = 1/f_b; dense X_b = rig . Y_b; grid projection gx = g X / (phi Z) + g/2 (METHOD.md 2.8). The
 * energy E = w_rec(t) L_rec + w_geom L_geom + w_bg L_bg + w_depth L_depth + w_sparse(t) L_sparse has an exact
 * analytic gradient (tests/test_align.c checks every term against central differences); (t) marks the
 * weights of [NOTE2]'s dense/sparse schedule (sa3d_align_stage_at). Adam over all hypotheses at once; the
 * best by final energy wins. Unconfirmed choices: docs/ALIGN.md. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "align/align_gpu.h"
#include "align/align_internal.h"
#include "base/base.h"
#include "tensor/kernels.h"

sa3d_align_params sa3d_align_params_default(void) {
    sa3d_align_params p;
    memset(&p, 0, sizeof p);
    p.n_hyp = 100;
    p.n_iter = 100;
    p.lr = 0.01;
    p.seed = 0;
    p.n_threads = 0;
    p.device = SA3D_ALIGN_ON_CPU;
    p.rec_mode = SA3D_REC_MIXTURE;
    p.point_blur = 1;
    p.w_rec = 1.0;
    p.w_geom = 0.05;
    p.w_bg = 1.0;
    p.w_depth = 1.0;
    p.sigma_start = 0.0;     /* 0 = g / 8 */
    p.sigma_end = 1.0;
    p.tau = 1.0;
    p.top_k = 16;
    p.outlier_logp = -12.0;
    p.sem_sd_floor = 0.05;
    p.use_tets = 1;
    p.max_pairs = 400;
    p.max_tets = 400;
    p.init_scale = 1.0;
    p.focal_init = 0.0;
    p.depth_default = 1.0;
    p.prune_at = 0.3;
    p.prune_keep = 10;
    p.w_sparse = 1.0;
    p.sparse_from = 0.3;
    p.dense_end = 1.0;
    p.sparse_outlier = -12.0;
    p.w_mirror = 0.5;
    return p;
}

/* The first option out of its domain, named with its domain, or NULL. Every option is checked, whether or not
 * this run reads it, so that a typo'd value fails at once rather than in a later run that does read it. */
static const char *bad_option(const sa3d_align_params *p) {
#define FIN(x) isfinite(p->x)
    if (p->n_hyp < 1 || p->n_hyp > 1000000) return "n_hyp (1..1000000)";
    if (p->n_iter < 0 || p->n_iter > 1000000) return "n_iter (0..1000000)";
    /* bounds beyond which every hypothesis goes non-finite: refused up front, not after the work */
    if (!(p->lr > 0.0 && p->lr <= 10.0)) return "lr ((0, 10])";
    if (p->n_threads < 0) return "n_threads (0: all cores, or > 0)";
    if (p->rec_mode != SA3D_REC_MIXTURE && p->rec_mode != SA3D_REC_POINT) return "rec_mode (0 mixture, 1 point)";
    if (p->point_blur != 0 && p->point_blur != 1) return "point_blur (0 or 1)";
    if (p->use_tets != 0 && p->use_tets != 1) return "use_tets (0 or 1)";
    if (!(p->w_rec >= 0.0) || !FIN(w_rec)) return "w_rec (>= 0)";
    if (!(p->w_geom >= 0.0) || !FIN(w_geom)) return "w_geom (>= 0)";
    if (!(p->w_bg >= 0.0) || !FIN(w_bg)) return "w_bg (>= 0)";
    if (!(p->w_depth >= 0.0) || !FIN(w_depth)) return "w_depth (>= 0)";
    if (!(p->sigma_start == 0.0 || (p->sigma_start >= 1e-3 && p->sigma_start <= 1e3)))
        return "sigma_start (0: g/8, else in [0.001, 1000] cells)";
    if (!(p->sigma_end == 0.0 || (p->sigma_end >= 1e-3 && p->sigma_end <= 1e3)))
        return "sigma_end (0: 1, else in [0.001, 1000] cells)";
    if (!(p->tau > 0.0) || !FIN(tau)) return "tau (> 0)";
    if (p->top_k < 1 || p->top_k > 64) return "top_k (1..64)";
    if (!FIN(outlier_logp)) return "outlier_logp (finite)";
    if (!(p->sem_sd_floor > 0.0) || !FIN(sem_sd_floor)) return "sem_sd_floor (> 0)";
    if (p->max_pairs < 0) return "max_pairs (0: all, or > 0)";
    if (p->max_tets < 0) return "max_tets (0: all, or > 0)";
    if (!(p->init_scale >= 1e-6 && p->init_scale <= 1e6)) return "init_scale ([1e-6, 1e6])";
    if (!(p->focal_init == 0.0 || (p->focal_init >= 1e-3 && p->focal_init <= 1.0 / SA3D_ALIGN_PHI_MIN)))
        return "focal_init (0: the prior's, else in [0.001, 20])";
    if (!(p->depth_default >= 1e-6 && p->depth_default <= 1e6)) return "depth_default ([1e-6, 1e6])";
    if (!(p->prune_at >= 0.0 && p->prune_at <= 1.0)) return "prune_at ([0, 1])";
    if (p->prune_keep < 0) return "prune_keep (0: never, or > 0)";
    if (!(p->w_sparse >= 0.0) || !FIN(w_sparse)) return "w_sparse (>= 0)";
    if (!(p->sparse_from >= 0.0 && p->sparse_from < 1.0)) return "sparse_from ([0, 1))";
    if (!(p->dense_end >= 0.0) || !FIN(dense_end)) return "dense_end (>= 0)";
    /* it sets L_sparse's window radius */
    if (!(p->sparse_outlier >= -1000.0 && p->sparse_outlier <= 0.0)) return "sparse_outlier ([-1000, 0])";
    if (!(p->w_mirror >= 0.0 && p->w_mirror <= 1.0)) return "w_mirror ([0, 1])";
    return NULL;
#undef FIN
}

sa3d_status sa3d_align_params_check(const sa3d_align_params *p, sa3d_error *err) {
    const char *bad = bad_option(p);
    return bad ? sa3d_fail(err, SA3D_ERR_ARG, "align: option %s out of range", bad) : SA3D_OK;
}

sa3d_status sa3d_align_device_check(int device, sa3d_error *err) {
    if (device == SA3D_ALIGN_ON_CPU) return SA3D_OK;
    if (device == SA3D_ALIGN_ON_CUDA) return sa3d_align_gpu_check(err);
    return sa3d_fail(err, SA3D_ERR_ARG, "align: device %d unknown", device);
}

void sa3d_alignment_free(sa3d_alignment *a) {
    if (!a) return;
    sa3d_free(a->Y);
    sa3d_free(a->proj);
    sa3d_free(a->depth);
    sa3d_free(a->proj_anchor);
    sa3d_free(a->cell_depth);
    sa3d_free(a);
}

/* ---- context ------------------------------------------------------------------------------------------ */

void sa3d_align_ctx_free(sa3d_align_ctx *c) {
    if (!c) return;
    sa3d_free(c->rig_ptr);
    sa3d_free(c->rig_idx);
    sa3d_free(c->rig_w);
    sa3d_free(c->rigT_ptr);
    sa3d_free(c->rigT_pt);
    sa3d_free(c->rigT_w);
    sa3d_free(c->S);
    sa3d_free(c->S_lvl);
    sa3d_free(c->sem_mu);
    sa3d_free(c->sem_sd);
    sa3d_free(c->pt_w);
    sa3d_free(c->act_cell);
    sa3d_free(c->act_w);
    sa3d_free(c->cand);
    sa3d_free(c->cand_lp);
    sa3d_free(c->pt_slot_ptr);
    sa3d_free(c->pt_slot);
    sa3d_free(c->pt_slot_q);
    sa3d_free(c->act_cxy);
    sa3d_free(c->anc_pt);
    sa3d_free(c->pt_anc);
    sa3d_free(c->anc_lp);
    sa3d_free(c->g_e1);
    sa3d_free(c->g_e2);
    sa3d_free(c->g_t);
    sa3d_free(c->g_v);
    sa3d_free(c->g_beta);
    if (c->mirror) sa3d_align_ctx_free(c->mirror);
    sa3d_free(c->mirror);
    sa3d_free(c->twin);
    memset(c, 0, sizeof *c);
}

/* Relations of the prior whose vertices are all used, renumbered to used indices, then an evenly strided
 * subset of at most max of them (L_geom is a mean, so a uniform subset estimates the same energy at a fraction
 * of the cost; the stride keeps it deterministic). */
static size_t pick_stride(size_t n_valid, int max, size_t k) {
    if (max <= 0 || n_valid <= (size_t)max) return k;
    return (size_t)((double)k * (double)n_valid / (double)max);
}

static sa3d_status ctx_geom(sa3d_align_ctx *c, const sa3d_prior *pr, const int *slot2used, sa3d_error *err) {
    size_t nv_p = 0, nv_t = 0;
    size_t *vp = sa3d_malloc((pr->n_pairs + 1) * sizeof *vp), *vt = sa3d_malloc((pr->n_tets + 1) * sizeof *vt);
    if (!vp || !vt) { sa3d_free(vp); sa3d_free(vt); return sa3d_fail(err, SA3D_ERR_NOMEM, "align: out of memory"); }
#define SLOT_OK(s) ((s) >= 0 && (s) < pr->n_slots && slot2used[(s)] >= 0)
    for (size_t j = 0; j < pr->n_pairs; j++)
        if (SLOT_OK(pr->pair_e1[2 * j]) && SLOT_OK(pr->pair_e1[2 * j + 1]) && SLOT_OK(pr->pair_e2[2 * j]) &&
            SLOT_OK(pr->pair_e2[2 * j + 1]))
            vp[nv_p++] = j;
    if (c->p.use_tets)
        for (size_t j = 0; j < pr->n_tets; j++)
            if (SLOT_OK(pr->tet_t[3 * j]) && SLOT_OK(pr->tet_t[3 * j + 1]) && SLOT_OK(pr->tet_t[3 * j + 2]) &&
                SLOT_OK(pr->tet_v[j]))
                vt[nv_t++] = j;
#undef SLOT_OK
    size_t np = (c->p.max_pairs > 0 && nv_p > (size_t)c->p.max_pairs) ? (size_t)c->p.max_pairs : nv_p;
    size_t nt = (c->p.max_tets > 0 && nv_t > (size_t)c->p.max_tets) ? (size_t)c->p.max_tets : nv_t;
    c->g_e1 = sa3d_malloc((np * 2 + 1) * sizeof(int32_t));
    c->g_e2 = sa3d_malloc((np * 2 + 1) * sizeof(int32_t));
    c->g_t = sa3d_malloc((nt * 3 + 1) * sizeof(int32_t));
    c->g_v = sa3d_malloc((nt + 1) * sizeof(int32_t));
    c->g_beta = sa3d_malloc((2 * np + 3 * nt + 1) * sizeof(sa3d_beta_term));
    if (!c->g_e1 || !c->g_e2 || !c->g_t || !c->g_v || !c->g_beta) {
        sa3d_free(vp);
        sa3d_free(vt);
        return sa3d_fail(err, SA3D_ERR_NOMEM, "align: out of memory");
    }
    sa3d_beta_term *br = c->g_beta, *ba = br + np, *bx = ba + np, *by = bx + nt, *bz = by + nt;
    for (size_t k = 0; k < np; k++) {
        size_t j = vp[pick_stride(nv_p, c->p.max_pairs, k)];
        for (int e = 0; e < 2; e++) {
            c->g_e1[2 * k + e] = slot2used[pr->pair_e1[2 * j + e]];
            c->g_e2[2 * k + e] = slot2used[pr->pair_e2[2 * j + e]];
        }
        br[k] = sa3d_beta_term_make(pr->pair_ratio[2 * j], pr->pair_ratio[2 * j + 1]);
        ba[k] = sa3d_beta_term_make(pr->pair_cos[2 * j], pr->pair_cos[2 * j + 1]);
    }
    for (size_t k = 0; k < nt; k++) {
        size_t j = vt[pick_stride(nv_t, c->p.max_tets, k)];
        for (int e = 0; e < 3; e++) c->g_t[3 * k + e] = slot2used[pr->tet_t[3 * j + e]];
        c->g_v[k] = slot2used[pr->tet_v[j]];
        bx[k] = sa3d_beta_term_make(pr->tet_cx[2 * j], pr->tet_cx[2 * j + 1]);
        by[k] = sa3d_beta_term_make(pr->tet_cy[2 * j], pr->tet_cy[2 * j + 1]);
        bz[k] = sa3d_beta_term_make(pr->tet_cz[2 * j], pr->tet_cz[2 * j + 1]);
    }
    sa3d_free(vp);
    sa3d_free(vt);
    c->gt = (sa3d_geom_terms){ .n_pairs = np, .e1 = c->g_e1, .e2 = c->g_e2, .ratio = br, .cosang = ba,
                               .n_tets = nt, .t = c->g_t, .v = c->g_v, .cx = bx, .cy = by, .cz = bz };
    return sa3d_geom_terms_check(&c->gt, c->n, err);
}

/* A CSR transpose is filled through its row pointers, each advanced to the next row's start: shift them back. */
static void csr_unshift(int *ptr, int rows) {
    for (int r = rows; r > 0; r--) ptr[r] = ptr[r - 1];
    ptr[0] = 0;
}

/* The sigma schedule's ends for grid g: sigma_start (0: g / 8) at the first iteration, sigma_end (0: 1) at the
 * last. */
static void sigma_ends(const sa3d_align_params *p, int g, double *s0, double *s1) {
    *s0 = p->sigma_start > 0.0 ? p->sigma_start : g / 8.0;
    *s1 = p->sigma_end > 0.0 ? p->sigma_end : 1.0;
}

void sa3d_align_blur(const float *in, float *out, int g, double sigma, float *tmp) {
    float w[2 * SA3D_ALIGN_BLUR_MAX_R + 1];
    double wd[2 * SA3D_ALIGN_BLUR_MAX_R + 1], sum = 0.0;
    int R = (int)ceil(3.0 * sigma);
    R = R < g ? R : g;
    R = R < SA3D_ALIGN_BLUR_MAX_R ? R : SA3D_ALIGN_BLUR_MAX_R;
    for (int j = -R; j <= R; j++) sum += wd[j + R] = exp(-0.5 * j * j / (sigma * sigma));
    for (int j = 0; j <= 2 * R; j++) w[j] = (float)(wd[j] / sum);
    /* Float sums with the taps in a fixed order; the loops run along x, so they vectorise without reordering any
     * element's sum. Rows: each padded with its border values (pad), then the taps along x into tmp. */
    float *pad = tmp + (size_t)g * g;
    for (int y = 0; y < g; y++) {
        const float *r = in + (size_t)y * g;
        float *t = tmp + (size_t)y * g;
        for (int k = 0; k < g + 2 * R; k++) pad[k] = r[k < R ? 0 : (k - R >= g ? g - 1 : k - R)];
        for (int x = 0; x < g; x++) t[x] = 0.0f;
        for (int j = 0; j <= 2 * R; j++)
#pragma omp simd
            for (int x = 0; x < g; x++) t[x] += w[j] * pad[x + j];
    }
    for (int y = 0; y < g; y++) {   /* columns: the taps along y, rows outside the grid read the border row */
        float *o = out + (size_t)y * g;
        for (int x = 0; x < g; x++) o[x] = 0.0f;
        for (int j = 0; j <= 2 * R; j++) {
            int yy = y + j - R < 0 ? 0 : (y + j - R >= g ? g - 1 : y + j - R);
            const float *t = tmp + (size_t)yy * g;
#pragma omp simd
            for (int x = 0; x < g; x++) o[x] += w[j] * t[x];
        }
    }
}

/* Reading (b)'s blurred maps (point_blur): S_lvl at sds from the schedule's smallest sigma to its largest, at
 * most a factor 2 apart (4 levels for g = 60: 1, 1.96, 3.83, 7.5 cells). */
static sa3d_status blur_levels(sa3d_align_ctx *c, sa3d_error *err) {
    double s0, s1;
    sigma_ends(&c->p, c->g, &s0, &s1);
    double lo = s0 < s1 ? s0 : s1, hi = s0 < s1 ? s1 : s0;
    int L = 1 + (int)ceil(log2(hi / lo) - 1e-9);
    L = L < 1 ? 1 : (L > 8 ? 8 : L);
    c->n_lvl = L;
    c->lvl_s0 = lo;
    c->lvl_step = L > 1 ? log(hi / lo) / (L - 1) : 0.0;
    int N = c->N, cells = c->cells;
    size_t plane = (size_t)N * cells;
    if (!(c->S_lvl = sa3d_malloc((size_t)L * plane * sizeof(float))))
        return sa3d_fail(err, SA3D_ERR_NOMEM, "align: out of memory for %d blurred similarity maps of %d points",
                         L, N);
    int failed = 0;
#pragma omp parallel
    {
        float *tmp = sa3d_malloc(SA3D_ALIGN_BLUR_TMP(c->g) * sizeof(float));
        if (!tmp) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (long e = 0; e < (long)L * N; e++) {
            if (!tmp) continue;
            int l = (int)(e / N), i = (int)(e % N);
            sa3d_align_blur(c->S + (size_t)i * cells, c->S_lvl + l * plane + (size_t)i * cells, c->g,
                            lo * exp(l * c->lvl_step), tmp);
        }
        sa3d_free(tmp);
    }
    return failed ? sa3d_fail(err, SA3D_ERR_NOMEM, "align: out of memory") : SA3D_OK;
}

sa3d_status sa3d_align_ctx_init(sa3d_align_ctx *c, const sa3d_prior *pr, const sa3d_align_input *in,
                                const sa3d_align_params *p, sa3d_error *err) {
    memset(c, 0, sizeof *c);
    c->p = *p;
    const sa3d_feature_map *F = in ? in->F : NULL;
    if (!pr || !F || !F->data) return sa3d_fail(err, SA3D_ERR_ARG, "align: missing prior or feature map");
    if (pr->C != F->C)
        return sa3d_fail(err, SA3D_ERR_ARG, "align: feature channels differ; prior %d, image %d", pr->C, F->C);
    if (pr->n_used < 2 || pr->n_dense < 1 || F->g < 2)
        return sa3d_fail(err, SA3D_ERR_ARG, "align: prior has %d used anchors and %d dense points, grid %d",
                         pr->n_used, pr->n_dense, F->g);
    if (sa3d_align_params_check(p, err) != SA3D_OK) return SA3D_ERR_ARG;
    /* one bad cell would otherwise pass silently: a NaN weight leaves d* at depth_default and a NaN depth under a
     * zero weight makes d* NaN (0 x NaN), which fails every hypothesis as if the optimiser had diverged; depth 0
     * puts the whole model at the camera centre and still "succeeds" */
    for (int q = 0; q < F->g * F->g; q++) {
        if (in->mask && !(in->mask[q] >= 0.0f && in->mask[q] <= 1.0f))
            return sa3d_fail(err, SA3D_ERR_ARG, "align: mask cell %d is %g (a foreground fraction in [0, 1])", q,
                             (double)in->mask[q]);
        if (in->depth && !(in->depth[q] > 0.0f && isfinite(in->depth[q])))
            return sa3d_fail(err, SA3D_ERR_ARG, "align: depth cell %d is %g (finite and positive)", q,
                             (double)in->depth[q]);
    }
    c->N = pr->n_dense;
    c->n = pr->n_used;
    c->g = F->g;
    c->cells = F->g * F->g;
    c->C = F->C;
    c->mask = in->mask;
    int N = c->N, n = c->n, cells = c->cells;
    sa3d_status st = SA3D_OK;
    int *slot2used = sa3d_malloc((size_t)pr->n_slots * sizeof(int));
    c->rig_ptr = sa3d_malloc((size_t)(N + 1) * sizeof(int));
    c->rig_idx = sa3d_malloc((size_t)N * n * sizeof(int));
    c->rig_w = sa3d_malloc((size_t)N * n * sizeof(double));
    c->S = sa3d_malloc((size_t)N * cells * sizeof(float));
    c->sem_mu = sa3d_malloc((size_t)N * sizeof(double));
    c->sem_sd = sa3d_malloc((size_t)N * sizeof(double));
    c->pt_w = sa3d_malloc((size_t)N * sizeof(double));
    if (!slot2used || !c->rig_ptr || !c->rig_idx || !c->rig_w || !c->S || !c->sem_mu || !c->sem_sd || !c->pt_w) {
        st = sa3d_fail(err, SA3D_ERR_NOMEM, "align: out of memory");
        goto done;
    }
    for (int s = 0; s < pr->n_slots; s++) slot2used[s] = -1;
    for (int k = 0; k < n; k++) {
        int s = pr->used[k];
        if (s < 0 || s >= pr->n_slots) {
            st = sa3d_fail(err, SA3D_ERR_ARG, "align: prior used[%d] = %d out of range", k, s);
            goto done;
        }
        slot2used[s] = k;
    }
    /* rig restricted to the used slots, exact zeros dropped */
    int nnz = 0;
    for (int i = 0; i < N; i++) {
        c->rig_ptr[i] = nnz;
        for (int k = 0; k < n; k++) {
            float w = pr->rig[(size_t)i * pr->n_slots + pr->used[k]];
            if (w != 0.0f) { c->rig_idx[nnz] = k; c->rig_w[nnz] = (double)w; nnz++; }
        }
    }
    c->rig_ptr[N] = nnz;
    /* its transpose, for the gradient's gather (align_energy.h step 4) */
    c->rigT_ptr = sa3d_calloc((size_t)n + 1, sizeof(int));
    c->rigT_pt = sa3d_malloc(((size_t)nnz + 1) * sizeof(int));
    c->rigT_w = sa3d_malloc(((size_t)nnz + 1) * sizeof(double));
    if (!c->rigT_ptr || !c->rigT_pt || !c->rigT_w) {
        st = sa3d_fail(err, SA3D_ERR_NOMEM, "align: out of memory");
        goto done;
    }
    for (int j = 0; j < nnz; j++) c->rigT_ptr[c->rig_idx[j] + 1]++;
    for (int k = 0; k < n; k++) c->rigT_ptr[k + 1] += c->rigT_ptr[k];
    for (int i = 0; i < N; i++)
        for (int j = c->rig_ptr[i]; j < c->rig_ptr[i + 1]; j++) {
            int e = c->rigT_ptr[c->rig_idx[j]]++;
            c->rigT_pt[e] = i;
            c->rigT_w[e] = c->rig_w[j];
        }
    csr_unshift(c->rigT_ptr, n);
    double wsum = 0.0;
    for (int i = 0; i < N; i++) {
        c->sem_mu[i] = (double)pr->dense_attn_mean[i];
        double sd = (double)pr->dense_attn_sd[i];
        c->sem_sd[i] = sd > p->sem_sd_floor ? sd : p->sem_sd_floor;
        double w = pr->dense_weight ? (double)pr->dense_weight[i] : 1.0;
        c->pt_w[i] = w > 0.0 ? w : 0.0;
        wsum += c->pt_w[i];
    }
    for (int i = 0; i < N; i++) c->pt_w[i] = wsum > 0.0 ? c->pt_w[i] / wsum : 1.0 / N;
    /* S[N][cells] = dense_feat[N][C] . F[C][cells] and reading (a)'s top_k candidates per cell. On the CPU the
     * fixed-order product, so that S (and everything after it) is bit-identical at any thread count; cblas_sgemm
     * is not guaranteed to be. On the GPU: cuBLAS, and the candidate lists by the same cell function. */
    int K = p->top_k < N ? p->top_k : N;
    c->K = K;
    c->cand = sa3d_malloc((size_t)cells * K * sizeof(int));
    c->cand_lp = sa3d_malloc((size_t)cells * K * sizeof(double));
    if (!c->cand || !c->cand_lp) {
        st = sa3d_fail(err, SA3D_ERR_NOMEM, "align: out of memory");
        goto done;
    }
    if (p->device == SA3D_ALIGN_ON_CUDA) {
        if ((st = sa3d_align_gpu_similarity(c, pr->dense_feat, F->data, err)) != SA3D_OK) goto done;
    } else {
        float *sv = sa3d_malloc((size_t)cells * K * sizeof(float));
        if (!sv) {
            st = sa3d_fail(err, SA3D_ERR_NOMEM, "align: out of memory");
            goto done;
        }
        sa3d_gemm_fixed_order(c->S, pr->dense_feat, F->data, N, F->C, cells);
#pragma omp parallel for schedule(static)
        for (int q = 0; q < cells; q++)
            sa3d_align_cell_candidates(c->S, (size_t)cells, (size_t)q, N, c->sem_mu, c->sem_sd, K,
                                       c->cand + (size_t)q * K, c->cand_lp + (size_t)q * K, sv + (size_t)q * K);
        sa3d_free(sv);
    }

    if (p->rec_mode == SA3D_REC_POINT && p->point_blur && (st = blur_levels(c, err)) != SA3D_OK) goto done;

    /* L_sparse: the appended anchors (dense points that move with one slot) and their log p_sem maps */
    c->anc_pt = sa3d_malloc((size_t)(n + 1) * sizeof(int));
    c->anc_lp = sa3d_malloc(((size_t)n * cells + 1) * sizeof(double));
    c->pt_anc = sa3d_malloc((size_t)N * sizeof(int));
    if (!c->anc_pt || !c->anc_lp || !c->pt_anc) {
        st = sa3d_fail(err, SA3D_ERR_NOMEM, "align: out of memory");
        goto done;
    }
    for (int i = 0; i < N; i++) c->pt_anc[i] = -1;
    for (int i = 0; i < N && pr->dense_anchor; i++) {
        int s = pr->dense_anchor[i];
        if (s < 0 || s >= pr->n_slots || slot2used[s] < 0 || c->n_anc == n) continue;
        double *lp = c->anc_lp + (size_t)c->n_anc * cells;
        const float *Si = c->S + (size_t)i * cells;
        for (int q = 0; q < cells; q++) lp[q] = sa3d_align_lp((double)Si[q], c->sem_mu[i], c->sem_sd[i], NULL);
        c->pt_anc[i] = c->n_anc;
        c->anc_pt[c->n_anc++] = i;
    }

    /* L_depth target: mask-weighted mean depth of the cells, else depth_default */
    c->d_star = p->depth_default;
    if (in->depth) {
        double sw = 0.0, sz = 0.0;
        for (int q = 0; q < cells; q++) {
            double w = in->mask ? (double)in->mask[q] : 1.0;
            sw += w;
            sz += w * (double)in->depth[q];
        }
        if (sw > 0.0) c->d_star = sz / sw;
    }

    if ((st = ctx_geom(c, pr, slot2used, err)) != SA3D_OK) goto done;

    /* reading (a)'s active cells: weight (mask or 1) positive and best candidate's log p_sem above the outlier
     * level (else the outlier explains the cell whatever the pose); their lists are moved to the front */
    c->act_cell = sa3d_malloc((size_t)cells * sizeof(int));
    c->act_w = sa3d_malloc((size_t)cells * sizeof(double));
    if (!c->act_cell || !c->act_w) {
        st = sa3d_fail(err, SA3D_ERR_NOMEM, "align: out of memory");
        goto done;
    }
    double aw = 0.0;
    int na = 0;
    for (int q = 0; q < cells; q++) {
        double w = in->mask ? (double)in->mask[q] : 1.0;
        if (!(w > 0.0) || !(c->cand_lp[(size_t)q * K] > p->outlier_logp)) continue;
        if (na != q) {
            memcpy(c->cand + (size_t)na * K, c->cand + (size_t)q * K, (size_t)K * sizeof(int));
            memcpy(c->cand_lp + (size_t)na * K, c->cand_lp + (size_t)q * K, (size_t)K * sizeof(double));
        }
        c->act_cell[na] = q;
        c->act_w[na] = w;
        aw += w;
        na++;
    }
    for (int a = 0; a < na; a++) c->act_w[a] /= aw;
    c->n_act = na;
    /* each point's candidate slots, for the gradient's gather (align_energy.h step 3) */
    c->pt_slot_ptr = sa3d_calloc((size_t)N + 1, sizeof(int));
    c->pt_slot = sa3d_malloc(((size_t)na * K + 1) * sizeof(int));
    c->pt_slot_q = sa3d_malloc(((size_t)na * K + 1) * sizeof(int));
    c->act_cxy = sa3d_malloc(((size_t)na + 1) * 2 * sizeof(double));
    if (!c->pt_slot_ptr || !c->pt_slot || !c->pt_slot_q || !c->act_cxy) {
        st = sa3d_fail(err, SA3D_ERR_NOMEM, "align: out of memory");
        goto done;
    }
    for (size_t e = 0; e < (size_t)na * K; e++)
        if (c->cand[e] >= 0) c->pt_slot_ptr[c->cand[e] + 1]++;
    for (int i = 0; i < N; i++) c->pt_slot_ptr[i + 1] += c->pt_slot_ptr[i];
    for (size_t e = 0; e < (size_t)na * K; e++)
        if (c->cand[e] >= 0) {
            int at = c->pt_slot_ptr[c->cand[e]]++;
            c->pt_slot[at] = (int)e;
            c->pt_slot_q[at] = (int)(e / (size_t)K);
        }
    csr_unshift(c->pt_slot_ptr, N);
    for (int q = 0; q < na; q++) {
        c->act_cxy[2 * q] = (double)(c->act_cell[q] % c->g) + 0.5;
        c->act_cxy[2 * q + 1] = (double)(c->act_cell[q] / c->g) + 0.5;
    }

    /* the mirrored image: its own context (without a mirror of its own) and the twin of each used anchor */
    if (p->w_mirror > 0.0) {
        const sa3d_align_input *mi = in->mirror;
        if (!mi || !mi->F || !mi->F->data || mi->F->g != F->g || mi->F->C != F->C) {
            st = sa3d_fail(err, SA3D_ERR_ARG, "align: w_mirror %g needs the mirrored image's features, with the same "
                           "grid and channels", p->w_mirror);
            goto done;
        }
        if (!pr->slot_flip) {
            st = sa3d_fail(err, SA3D_ERR_ARG, "align: w_mirror %g needs the prior's flip map (slot_flip), which this "
                           "%s prior lacks: rebuild it", p->w_mirror, pr->category);
            goto done;
        }
        c->twin = sa3d_malloc((size_t)n * sizeof(int));
        c->mirror = sa3d_calloc(1, sizeof *c->mirror);   /* zeroed: ctx_free may see it before its init */
        if (!c->twin || !c->mirror) {
            sa3d_free(c->mirror);
            c->mirror = NULL;
            st = sa3d_fail(err, SA3D_ERR_NOMEM, "align: out of memory");
            goto done;
        }
        for (int k = 0; k < n; k++) {
            int s = pr->used[k], t = pr->slot_flip[s];
            c->twin[k] = t >= 0 && t < pr->n_slots ? slot2used[t] : -1;
            if (c->twin[k] < 0) {
                st = sa3d_fail(err, SA3D_ERR_ARG, "align: keypoint %d's mirror twin %d is not among the prior's "
                               "used anchors", s, t);
                goto done;
            }
        }
        sa3d_align_params pm = *p;
        pm.w_mirror = 0.0;
        sa3d_align_input im = { .F = mi->F, .mask = mi->mask, .depth = mi->depth };   /* no mirror of its own */
        if ((st = sa3d_align_ctx_init(c->mirror, pr, &im, &pm, err)) != SA3D_OK) {
            sa3d_free(c->mirror);
            c->mirror = NULL;
            sa3d_error_prefix(err, "mirrored image");
            goto done;
        }
    }
done:
    sa3d_free(slot2used);
    if (st != SA3D_OK) sa3d_align_ctx_free(c);
    return st;
}

/* ---- energy ------------------------------------------------------------------------------------------- */

size_t sa3d_align_work_doubles(const sa3d_align_ctx *c) {
    size_t one = sa3d_ae_work_doubles(c);
    /* the mirror: its own, and its Y and gY */
    return c->mirror ? one + sa3d_ae_work_doubles(c->mirror) + (size_t)6 * c->n : one;
}

sa3d_align_stage sa3d_align_stage_at(const sa3d_align_params *p, int g, int t) {
    double s0, s1;
    sigma_ends(p, g, &s0, &s1);
    int T = p->n_iter;
    /* sigma: geometric from s0 at t = 0 to s1 at t = T - 1; the final evaluation (t = T) is at s1 */
    int ramping = T > 1 && t < T;
    double u = ramping ? (double)t / (double)(T - 1) : 1.0;
    double ramp = (u - p->sparse_from) / (1.0 - p->sparse_from);
    ramp = ramp < 0.0 ? 0.0 : (ramp > 1.0 ? 1.0 : ramp);
    return (sa3d_align_stage){ .sigma = ramping ? s0 * pow(s1 / s0, u) : s1,
                               .w_rec = p->w_rec * (1.0 - (1.0 - p->dense_end) * ramp),
                               .w_sparse = p->w_sparse * ramp };
}

/* Step 2 of L_sparse for appended anchor a, on one thread (the CUDA backend splits the window over a warp). */
static double sparse_one(const sa3d_align_ctx *c, int a, const sa3d_ae_stage *k, sa3d_ae_work w) {
    const double *lp = c->anc_lp + (size_t)a * c->cells;
    int i = c->anc_pt[a], g = c->g;
    double px = w.pr[2 * i], py = w.pr[2 * i + 1], R = k->r_sparse, o = c->p.sparse_outlier;
    long win[4];
    sa3d_ae_sparse_window(g, px, py, R, win);
    double mx = o, l, ex, ey;
    for (long y = win[2]; y <= win[3]; y++)
        for (long x = win[0]; x <= win[1]; x++)
            if (sa3d_ae_sparse_term(lp, g, x, y, px, py, R, k, &l, &ex, &ey) && l > mx) mx = l;
    double sum = exp(o - mx), sx = 0.0, sy = 0.0;
    for (long y = win[2]; y <= win[3]; y++)
        for (long x = win[0]; x <= win[1]; x++)
            if (sa3d_ae_sparse_term(lp, g, x, y, px, py, R, k, &l, &ex, &ey)) {
                double e = exp(l - mx);
                sum += e;
                sx += e * ex;
                sy += e * ey;
            }
    return sa3d_ae_sparse_finish(mx, sum, sx, sy, k->w_sparse * (1.0 / c->n_anc), k, w.sg + 2 * a);
}

/* The steps of align_energy.h as serial loops. */
double sa3d_align_energy_one(const sa3d_align_ctx *c, const double *Y, double phi, const sa3d_align_stage *stage,
                             double *gY, double *gphi, double terms[4], double *proj_out, double *work) {
    sa3d_ae_work w = sa3d_ae_layout(c, work);
    sa3d_ae_stage k = sa3d_ae_stage_make(c, stage);
    int N = c->N, n = c->n;
    for (int i = 0; i < N; i++) sa3d_ae_project(c, Y, phi, i, w);
    double L_rec = 0.0, L_bg = 0.0, L_sparse = 0.0, gp = 0.0;
    if (k.w_rec != 0.0 && c->p.rec_mode != SA3D_REC_POINT)
        for (int q = 0; q < c->n_act; q++) L_rec -= sa3d_ae_rec_cell(c, q, &k, w);
    if (k.w_sparse != 0.0 && c->n_anc > 0) {
        double inv = 1.0 / c->n_anc;
        for (int a = 0; a < c->n_anc; a++) L_sparse += inv * sparse_one(c, a, &k, w);
    }
    for (int i = 0; i < N; i++) {
        double lr, lb;
        gp -= sa3d_ae_point(c, i, phi, &k, w, &lr, &lb);
        L_rec -= lr;
        L_bg += lb;
    }
    if (gY)
        for (int a = 0; a < n; a++) sa3d_ae_anchor(c, a, w.X, gY + 3 * a);
    double L_depth = sa3d_ae_depth(c, Y, gY);
    if (gphi) *gphi = gp;
    if (terms) { terms[0] = L_rec; terms[1] = L_bg; terms[2] = L_depth; terms[3] = L_sparse; }
    if (proj_out) memcpy(proj_out, w.pr, (size_t)2 * N * sizeof(double));
    return k.w_rec * L_rec + c->p.w_bg * L_bg + c->p.w_depth * L_depth + k.w_sparse * L_sparse;
}

/* The mirror term's blend of the image's energy (e1, terms t1, dE/dphi gp1; its dE/dY already in gY) and the
 * mirror's (e2, t2, gp2, gYm over the mirrored pose): (1 - w) image + w mirror, with d/dY_twin(k) = M d/dYm_k.
 * gY and gYm, gphi and terms may be NULL. */
static double mirror_blend(const sa3d_align_ctx *c, double e1, const double t1[4], double gp1, double e2,
                           const double t2[4], double gp2, const double *gYm, double *gY, double *gphi,
                           double terms[4]) {
    int n = c->n;
    double w = c->p.w_mirror;
    if (gY) {
        for (int k = 0; k < 3 * n; k++) gY[k] *= 1.0 - w;
        for (int k = 0; k < n; k++) {
            double *o = gY + 3 * c->twin[k];
            o[0] -= w * gYm[3 * k];
            o[1] += w * gYm[3 * k + 1];
            o[2] += w * gYm[3 * k + 2];
        }
    }
    if (gphi) *gphi = (1.0 - w) * gp1 + w * gp2;
    if (terms)
        for (int k = 0; k < 4; k++) terms[k] = (1.0 - w) * t1[k] + w * t2[k];
    return (1.0 - w) * e1 + w * e2;
}

double sa3d_align_energy_pose(const sa3d_align_ctx *c, const double *Y, double phi, const sa3d_align_stage *s,
                              double *gY, double *gphi, double terms[4], double *work) {
    const sa3d_align_ctx *m = c->mirror;
    if (!m) return sa3d_align_energy_one(c, Y, phi, s, gY, gphi, terms, NULL, work);
    int n = c->n;
    double *Ym = work + sa3d_ae_work_doubles(c), *gYm = Ym + 3 * n, *wm = gYm + 3 * n;
    for (int k = 0; k < n; k++) sa3d_ae_mirror_anchor(c->twin, Y, k, Ym);
    double t1[4], t2[4], gp1, gp2;
    double e1 = sa3d_align_energy_one(c, Y, phi, s, gY, &gp1, t1, NULL, work);
    double e2 = sa3d_align_energy_one(m, Ym, phi, s, gY ? gYm : NULL, &gp2, t2, NULL, wm);
    return mirror_blend(c, e1, t1, gp1, e2, t2, gp2, gYm, gY, gphi, terms);
}

/* energy_pose of hypothesis b from the per-view rows of align_gpu.h (B hypotheses per view). */
static double pose_from_views(const sa3d_align_ctx *c, int B, int b, const double *vE, const double *vT,
                              const double *vG, const double *vP, double *gY, double *gphi, double terms[4]) {
    size_t P3 = 3 * (size_t)c->n, r1 = (size_t)B + b;
    memcpy(gY, vG + P3 * b, P3 * sizeof(double));
    if (!c->mirror) {
        *gphi = vP[b];
        if (terms) memcpy(terms, vT + 4 * b, 4 * sizeof(double));
        return vE[b];
    }
    return mirror_blend(c, vE[b], vT + 4 * b, vP[b], vE[r1], vT + 4 * r1, vP[r1], vG + P3 * r1, gY, gphi, terms);
}

double sa3d_align_energy_total(const sa3d_align_ctx *c, const double *Y, double phi, const sa3d_align_stage *s,
                               double *gY, double *gphi, double terms[5], double *work) {
    double t4[4], eg = 0.0;
    double E = sa3d_align_energy_pose(c, Y, phi, s, gY, gphi, t4, work);
    double *gg = gY ? work + sa3d_align_work_doubles(c) : NULL;   /* caller sized work for n*3 more */
    if (c->p.w_geom != 0.0) {
        sa3d_geom_energy(&eg, gg, Y, 1, c->n, &c->gt, c->p.use_tets);
        if (gY)
            for (int k = 0; k < 3 * c->n; k++) gY[k] += c->p.w_geom * gg[k];
    }
    if (terms) { terms[0] = t4[0]; terms[1] = eg; terms[2] = t4[1]; terms[3] = t4[2]; terms[4] = t4[3]; }
    return E + c->p.w_geom * eg;
}

/* ---- optimisation ------------------------------------------------------------------------------------- */

/* splitmix64: one independent stream per hypothesis, seeded from (seed, b) (STYLE.md 6) */
static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rng_unit(uint64_t *s) { return (double)(splitmix(s) >> 11) * (1.0 / 9007199254740992.0); }

/* Uniform random rotation (Shoemake's unit quaternion from three uniforms), as a row-major 3x3 matrix. */
static void random_rotation(double R[9], uint64_t seed, int b) {
    uint64_t s = seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(b + 1));
    splitmix(&s);
    double u1 = rng_unit(&s), u2 = rng_unit(&s), u3 = rng_unit(&s);
    double a = sqrt(1.0 - u1), bb = sqrt(u1);
    double x = a * sin(SA3D_TWO_PI * u2), y = a * cos(SA3D_TWO_PI * u2);
    double z = bb * sin(SA3D_TWO_PI * u3), w = bb * cos(SA3D_TWO_PI * u3);
    R[0] = 1 - 2 * (y * y + z * z); R[1] = 2 * (x * y - z * w);     R[2] = 2 * (x * z + y * w);
    R[3] = 2 * (x * y + z * w);     R[4] = 1 - 2 * (x * x + z * z); R[5] = 2 * (y * z - x * w);
    R[6] = 2 * (x * z - y * w);     R[7] = 2 * (y * z + x * w);     R[8] = 1 - 2 * (x * x + y * y);
}

static double max_pair_dist(const double *P, int m) {
    double best = 0.0;
    for (int i = 0; i < m; i++)
        for (int j = i + 1; j < m; j++) {
            double dx = P[3 * i] - P[3 * j], dy = P[3 * i + 1] - P[3 * j + 1], dz = P[3 * i + 2] - P[3 * j + 2];
            double d = dx * dx + dy * dy + dz * dz;
            if (d > best) best = d;
        }
    return sqrt(best);
}

static int cmp_energy(const void *a, const void *b) {
    const double *x = a, *y = b;   /* (energy, index) pairs */
    if (x[0] < y[0]) return -1;
    if (x[0] > y[0]) return 1;
    return (x[1] > y[1]) - (x[1] < y[1]);
}

sa3d_status sa3d_align_image(sa3d_alignment **out, const sa3d_prior *prior, const sa3d_align_input *in,
                             const sa3d_align_params *p, sa3d_error *err) {
    *out = NULL;
    sa3d_status st = sa3d_align_params_check(p, err);
    if (st == SA3D_OK) st = sa3d_align_device_check(p->device, err);
    if (st != SA3D_OK) return st;
    sa3d_set_threads(p->n_threads);
    sa3d_align_ctx c;
    st = sa3d_align_ctx_init(&c, prior, in, p, err);
    if (st != SA3D_OK) return st;
    int N = c.N, n = c.n, g = c.g, B = p->n_hyp, P3 = 3 * n;
    size_t wd = sa3d_align_work_doubles(&c);
    double *Y = sa3d_malloc((size_t)B * P3 * sizeof(double)), *phi = sa3d_malloc((size_t)B * sizeof(double));
    double *mY = sa3d_calloc((size_t)B * P3, sizeof(double)), *vY = sa3d_calloc((size_t)B * P3, sizeof(double));
    double *mp = sa3d_calloc((size_t)B, sizeof(double)), *vp = sa3d_calloc((size_t)B, sizeof(double));
    double *gY = sa3d_malloc((size_t)B * P3 * sizeof(double)), *gg = sa3d_malloc((size_t)B * P3 * sizeof(double));
    double *E = sa3d_malloc((size_t)B * sizeof(double)), *eg = sa3d_malloc((size_t)B * sizeof(double));
    /* a work area per hypothesis on the CPU, one for the final evaluation; + P3: energy_total */
    int on_gpu = p->device == SA3D_ALIGN_ON_CUDA;
    double *work = sa3d_malloc(((size_t)(on_gpu ? 1 : B) * wd + (size_t)P3) * sizeof(double));
    double *ref = sa3d_malloc((size_t)c.cells * 3 * sizeof(double));
    double *dense = sa3d_malloc((size_t)N * 3 * sizeof(double));
    double *order = sa3d_malloc((size_t)B * 2 * sizeof(double));
    int *orig = sa3d_malloc((size_t)B * sizeof(int)), *sel = sa3d_malloc((size_t)B * sizeof(int));
    uint8_t *alive = sa3d_malloc((size_t)B);
    sa3d_alignment *A = NULL;
    /* on the GPU: each view's energy, terms, dE/dY and dE/dphi per hypothesis (align_gpu.h's rows) */
    sa3d_align_gpu *gpu = NULL;
    int V = sa3d_align_views(&c);
    double *vE = NULL, *vT = NULL, *vG = NULL, *vP = NULL;
    if (on_gpu) {
        vE = sa3d_malloc((size_t)V * B * sizeof(double));
        vT = sa3d_malloc((size_t)V * B * 4 * sizeof(double));
        vG = sa3d_malloc((size_t)V * B * P3 * sizeof(double));
        vP = sa3d_malloc((size_t)V * B * sizeof(double));
    }
    if (!Y || !phi || !mY || !vY || !mp || !vp || !gY || !gg || !E || !eg || !work || !ref || !dense || !order ||
        !orig || !sel || !alive || (on_gpu && (!vE || !vT || !vG || !vP))) {
        st = sa3d_fail(err, SA3D_ERR_NOMEM, "align: out of memory");
        goto done;
    }
    if (on_gpu && (st = sa3d_align_gpu_new(&gpu, &c, B, err)) != SA3D_OK) goto done;

    /* METHOD.md 5.2 initialisation. Reference set: the foreground cells (mask >= 0.5, else cells whose best
     * point's similarity is within one sd of its attn mean) back-projected at their depth with phi0. */
    double phi0 = 1.0 / (p->focal_init > 0.0 ? p->focal_init : (prior->focal_mean > 0.0 ? prior->focal_mean : 1.5));
    if (phi0 < SA3D_ALIGN_PHI_MIN) phi0 = SA3D_ALIGN_PHI_MIN;   /* a prior's focal_mean past f = 20 starts at 20 */
    int m = 0;
    double mean_ref[3] = { 0, 0, 0 };
    for (int q = 0; q < c.cells; q++) {
        int fg;
        if (in->mask) fg = in->mask[q] >= 0.5f;
        else {
            int i0 = -1;
            double best = -DBL_MAX;
            for (int i = 0; i < N; i++) {
                double l = sa3d_align_lp((double)c.S[(size_t)i * c.cells + q], c.sem_mu[i], c.sem_sd[i], NULL);
                if (l > best) { best = l; i0 = i; }
            }
            fg = i0 >= 0 && best >= -0.5;
        }
        if (!fg) continue;
        double z = in->depth ? (double)in->depth[q] : p->depth_default;
        double gx = (double)(q % g) + 0.5, gyc = (double)(q / g) + 0.5;
        ref[3 * m] = (gx - 0.5 * g) * phi0 * z / g;
        ref[3 * m + 1] = (gyc - 0.5 * g) * phi0 * z / g;
        ref[3 * m + 2] = z;
        for (int d = 0; d < 3; d++) mean_ref[d] += ref[3 * m + d];
        m++;
    }
    double D_ref;
    if (m >= 2) {
        for (int d = 0; d < 3; d++) mean_ref[d] /= m;
        /* the extent in the image plane: depth differences of a pseudo-depth map are not metric */
        for (int k = 0; k < m; k++) ref[3 * k + 2] = mean_ref[2];
        D_ref = max_pair_dist(ref, m);
    } else {   /* nothing looks like the object: centre of the image, half its width */
        mean_ref[0] = mean_ref[1] = 0.0;
        mean_ref[2] = c.d_star;
        D_ref = 0.5 * phi0 * c.d_star;
    }
    double c0[3] = { 0, 0, 0 };
    for (int k = 0; k < n; k++)
        for (int d = 0; d < 3; d++) c0[d] += prior->anchors[3 * prior->used[k] + d] / n;
    for (int i = 0; i < 3 * N; i++) dense[i] = (double)prior->dense_xyz[i];
    double D_can = max_pair_dist(dense, N);
    double scale = D_can > 0.0 ? p->init_scale * D_ref / D_can : 1.0;
    for (int b = 0; b < B; b++) {
        double R[9];
        random_rotation(R, p->seed, b);
        for (int k = 0; k < n; k++) {
            const double *a = prior->anchors + 3 * prior->used[k];
            double v[3] = { a[0] - c0[0], a[1] - c0[1], a[2] - c0[2] };
            for (int d = 0; d < 3; d++)
                Y[(size_t)b * P3 + 3 * k + d] = scale * (R[3 * d] * v[0] + R[3 * d + 1] * v[1] + R[3 * d + 2] * v[2]) +
                                                mean_ref[d];
        }
        phi[b] = phi0;
        orig[b] = b;
        alive[b] = 1;
    }

    /* Adam over all hypotheses; sigma annealed geometrically from sigma_start to sigma_end */
    sa3d_adamw_params ad = sa3d_adamw_params_default();
    ad.lr = p->lr;
    ad.weight_decay = 0.0;   /* a decay would pull the anchors toward the camera centre */
    int Bc = B;
    int prune_iter = (p->prune_keep > 0 && p->prune_keep < B) ? (int)(p->prune_at * p->n_iter) : -1;
    for (int t = 0; t <= p->n_iter; t++) {
        int last = t == p->n_iter;   /* the final pass only evaluates, at the schedule's end */
        sa3d_align_stage stage = sa3d_align_stage_at(p, g, t);
        if (t == prune_iter && t > 0) {
            for (int b = 0; b < Bc; b++) { order[2 * b] = alive[b] ? E[b] : (double)INFINITY; order[2 * b + 1] = b; }
            qsort(order, (size_t)Bc, 2 * sizeof(double), cmp_energy);
            int keep = p->prune_keep;
            /* keep the survivors in their original order so the result is independent of ties in E */
            for (int k = 0; k < keep; k++) sel[k] = (int)order[2 * k + 1];
            for (int k = 1; k < keep; k++)
                for (int j = k; j > 0 && sel[j - 1] > sel[j]; j--) {
                    int tmp = sel[j];
                    sel[j] = sel[j - 1];
                    sel[j - 1] = tmp;
                }
            for (int k = 0; k < keep; k++) {
                int b = sel[k];
                memmove(Y + (size_t)k * P3, Y + (size_t)b * P3, (size_t)P3 * sizeof(double));
                memmove(mY + (size_t)k * P3, mY + (size_t)b * P3, (size_t)P3 * sizeof(double));
                memmove(vY + (size_t)k * P3, vY + (size_t)b * P3, (size_t)P3 * sizeof(double));
                phi[k] = phi[b]; mp[k] = mp[b]; vp[k] = vp[b]; orig[k] = orig[b]; alive[k] = alive[b];
            }
            Bc = keep;
        }
        if (gpu) {   /* every term on the GPU, L_geom into eg and gg */
            if ((st = sa3d_align_gpu_start(gpu, Bc, Y, phi, alive, &stage, err)) != SA3D_OK ||
                (st = sa3d_align_gpu_finish(gpu, vE, vT, vG, vP, eg, gg, err)) != SA3D_OK)
                goto done;
        } else if (p->w_geom != 0.0) {
            sa3d_geom_energy(eg, gg, Y, Bc, n, &c.gt, p->use_tets);
        } else {   /* zeros, not whatever the buffers held: the loop below adds 0 x gg */
            memset(eg, 0, (size_t)Bc * sizeof(double));
            memset(gg, 0, (size_t)Bc * P3 * sizeof(double));
        }
#pragma omp parallel for schedule(static)
        for (int b = 0; b < Bc; b++) {
            if (!alive[b]) continue;
            double *yb = Y + (size_t)b * P3, *gb = gY + (size_t)b * P3, gphi;
            double e = gpu ? pose_from_views(&c, Bc, b, vE, vT, vG, vP, gb, &gphi, NULL)
                           : sa3d_align_energy_pose(&c, yb, phi[b], &stage, gb, &gphi, NULL, work + (size_t)b * wd);
            e += p->w_geom * eg[b];
            for (int k = 0; k < P3; k++) gb[k] += p->w_geom * gg[(size_t)b * P3 + k];
            int ok = isfinite(e) && isfinite(gphi);
            for (int k = 0; k < P3 && ok; k++) ok = isfinite(gb[k]);
            E[b] = ok ? e : (double)INFINITY;
            if (!ok) { alive[b] = 0; continue; }
            if (last) continue;
            sa3d_adamw_step(yb, mY + (size_t)b * P3, vY + (size_t)b * P3, gb, (size_t)P3, t + 1, &ad);
            sa3d_adamw_step(phi + b, mp + b, vp + b, &gphi, 1, t + 1, &ad);
            /* f = 1/phi stays in (0, 20]: phi <= 0 would mirror or blow up the projection */
            if (phi[b] < SA3D_ALIGN_PHI_MIN) phi[b] = SA3D_ALIGN_PHI_MIN;
        }
    }
    int best = -1;
    for (int b = 0; b < Bc; b++)
        if (alive[b] && (best < 0 || E[b] < E[best])) best = b;
    if (best < 0) {
        st = sa3d_fail(err, SA3D_ERR_NUMERIC, "align: every hypothesis became non-finite");
        goto done;
    }

    A = sa3d_calloc(1, sizeof *A);
    if (!A || !(A->Y = sa3d_malloc((size_t)P3 * sizeof(double))) ||
        !(A->proj = sa3d_malloc((size_t)N * 2 * sizeof(float))) ||
        !(A->depth = sa3d_malloc((size_t)N * sizeof(float))) ||
        !(A->proj_anchor = sa3d_malloc((size_t)n * 2 * sizeof(float))) ||
        (in->depth && !(A->cell_depth = sa3d_malloc((size_t)g * g * sizeof(float))))) {
        st = sa3d_fail(err, SA3D_ERR_NOMEM, "align: out of memory");
        goto done;
    }
    A->n_used = n;
    A->n_dense = N;
    A->g = g;
    A->img_w = in->F->img_w;
    A->img_h = in->F->img_h;
    A->input_size = in->F->input_size;
    if (in->depth) memcpy(A->cell_depth, in->depth, (size_t)g * g * sizeof(float));
    memcpy(A->Y, Y + (size_t)best * P3, (size_t)P3 * sizeof(double));
    A->phi = phi[best];
    A->f = 1.0 / phi[best];
    A->best_hyp = orig[best];
    double terms[5];
    double *pj = dense;   /* [N][3] >= [N][2] */
    sa3d_align_stage end = sa3d_align_stage_at(p, g, p->n_iter);
    A->energy = sa3d_align_energy_total(&c, A->Y, A->phi, &end, NULL, NULL, terms, work);
    sa3d_align_energy_one(&c, A->Y, A->phi, &end, NULL, NULL, NULL, pj, work);
    A->e_rec = terms[0];
    A->e_geom = terms[1];
    A->e_bg = terms[2];
    A->e_depth = terms[3];
    A->e_sparse = terms[4];
    int on = 0;
    for (int i = 0; i < N; i++) {
        A->proj[2 * i] = (float)pj[2 * i];
        A->proj[2 * i + 1] = (float)pj[2 * i + 1];
        double dx, dy;
        if (in->mask) on += sa3d_ae_bilinear(in->mask, g, pj[2 * i], pj[2 * i + 1], 1, &dx, &dy) >= 0.5;
        else on += pj[2 * i] >= 0.0 && pj[2 * i] < g && pj[2 * i + 1] >= 0.0 && pj[2 * i + 1] < g;
    }
    A->fg_frac = (double)on / N;
    for (int i = 0; i < N; i++) {   /* Z of X = rig . Y */
        double z = 0.0;
        for (int j = c.rig_ptr[i]; j < c.rig_ptr[i + 1]; j++) z += c.rig_w[j] * A->Y[3 * c.rig_idx[j] + 2];
        A->depth[i] = (float)z;
    }
    for (int k = 0; k < n; k++) {
        const double *y = A->Y + 3 * k;
        double z = y[2] + 1e-9;
        if (!(z >= SA3D_ALIGN_ZMIN)) z = SA3D_ALIGN_ZMIN;
        A->proj_anchor[2 * k] = (float)(g * y[0] / (A->phi * z) + 0.5 * g);
        A->proj_anchor[2 * k + 1] = (float)(g * y[1] / (A->phi * z) + 0.5 * g);
    }
    *out = A;
    A = NULL;
done:
    sa3d_alignment_free(A);
    sa3d_free(Y); sa3d_free(phi); sa3d_free(mY); sa3d_free(vY); sa3d_free(mp); sa3d_free(vp);
    sa3d_free(gY); sa3d_free(gg); sa3d_free(E); sa3d_free(eg); sa3d_free(work); sa3d_free(ref);
    sa3d_free(dense); sa3d_free(order); sa3d_free(orig); sa3d_free(sel); sa3d_free(alive);
    sa3d_align_gpu_free(gpu);
    sa3d_free(vE); sa3d_free(vT); sa3d_free(vG); sa3d_free(vP);
    sa3d_align_ctx_free(&c);
    return st;
}
