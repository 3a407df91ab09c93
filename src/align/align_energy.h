/* The aligner's energy of one hypothesis (METHOD.md 5.3; docs/ALIGN.md), cut into steps over independent items:
 * points, active cells, appended anchors, used anchors. The CPU (align.c) runs each step as a plain loop; the
 * CUDA backend (cuda/align_cuda.cu) runs the same functions with one thread per item, and adds only the thread
 * layout and the sums. The math lives here once, and the CPU tests check every line the GPU runs except those.
 *
 * No step scatters into another item's output, so neither backend needs atomics and both are deterministic:
 *   1. point i:   X_i = rig . Y, depth, grid projection                          (sa3d_ae_project)
 *   2. cell q:    reading (a)'s soft-max over the cell's candidates; the
 *                 weight r of each candidate in the gradient                      (sa3d_ae_rec_cell)
 *      anchor a:  L_sparse around the anchor's projection; its gradient           (sa3d_ae_sparse_*)
 *   3. point i:   dE/dproj_i, gathered from step 2 through the point's cell slots (pt_slot) and its anchor
 *                 (pt_anc), plus reading (b) and L_bg; then back through the projection: gX_i, dE/dphi share
 *                 (sa3d_ae_point)
 *   4. anchor k:  dE/dY_k = sum over the rig's transpose (rigT) of w gX_i           (sa3d_ae_anchor)
 *   5. once:      L_depth and its gradient                                        (sa3d_ae_depth)
 * Each point sums its cell slots in (cell, candidate) order and each anchor its rig entries in point order,
 * the order in which a serial scatter would add them.
 *
 * Included by align_internal.h after the context type; compiles as C and as CUDA C++. */
#ifndef SA3D_ALIGN_ENERGY_H
#define SA3D_ALIGN_ENERGY_H

#include <float.h>
#include <math.h>
#include <stddef.h>

#include "base/hd.h"

#define SA3D_TWO_PI 6.283185307179586

/* log p_sem of similarity s for a point with attn mean mu and sd sd: one-sided Gaussian,
 * -0.5 max(0, (mu - s) / sd)^2; *dlp (may be NULL) = d/ds. */
SA3D_HD double sa3d_align_lp(double s, double mu, double sd, double *dlp) {
    double z = (mu - s) / sd;
    if (z <= 0.0) { if (dlp) *dlp = 0.0; return 0.0; }
    if (dlp) *dlp = z / sd;
    return -0.5 * z * z;
}

/* Reading (a)'s candidate list of cell q: the K points of highest log p_sem at the cell (ties: higher similarity,
 * then lower index), best first, from the similarity maps S[N][cells]. id[K], lp[K] out (id -1 and lp -DBL_MAX
 * where N < K); sv[K] is scratch. Only comparisons and sa3d_align_lp's IEEE arithmetic, so the CPU (a loop over
 * cells) and the GPU (a thread per cell) build the same lists from the same S, bit for bit. */
SA3D_HD void sa3d_align_cell_candidates(const float *S, size_t cells, size_t q, int N, const double *mu,
                                        const double *sd, int K, int *id, double *lp, float *sv) {
    int cnt = 0;
    for (int k = 0; k < K; k++) { id[k] = -1; lp[k] = -DBL_MAX; }
    for (int i = 0; i < N; i++) {
        float s = S[(size_t)i * cells + q];
        double l = sa3d_align_lp((double)s, mu[i], sd[i], NULL);
        int pos = cnt;   /* insertion point in the list kept sorted */
        while (pos > 0 && (lp[pos - 1] < l || (lp[pos - 1] == l && sv[pos - 1] < s))) pos--;
        if (pos >= K) continue;
        for (int r = cnt < K ? cnt : K - 1; r > pos; r--) { id[r] = id[r - 1]; lp[r] = lp[r - 1]; sv[r] = sv[r - 1]; }
        id[pos] = i;
        lp[pos] = l;
        sv[pos] = s;
        if (cnt < K) cnt++;
    }
}

/* Bilinear sample of a [g][g] map at grid coordinates (x, y) (cell centres at c + 0.5). zero_pad: outside the
 * grid reads 0 (the mask: off the image is background); else the border value (similarity maps). d/dx, d/dy
 * into dx, dy. */
SA3D_HD double sa3d_ae_bilinear(const float *m, int g, double x, double y, int zero_pad, double *dx, double *dy) {
    double u = x - 0.5, v = y - 0.5;
    double fu = floor(u), fv = floor(v);
    double a = u - fu, b = v - fv;
    long i0 = (long)fu, j0 = (long)fv;
    double val[4];
    for (int q = 0; q < 4; q++) {
        long i = i0 + (q & 1), j = j0 + (q >> 1);
        if (i < 0 || i >= g || j < 0 || j >= g) {
            if (zero_pad) { val[q] = 0.0; continue; }
            i = i < 0 ? 0 : (i >= g ? g - 1 : i);
            j = j < 0 ? 0 : (j >= g ? g - 1 : j);
        }
        val[q] = (double)m[(size_t)j * g + (size_t)i];
    }
    *dx = (1.0 - b) * (val[1] - val[0]) + b * (val[3] - val[2]);
    *dy = (1.0 - a) * (val[2] - val[0]) + a * (val[3] - val[1]);
    return (1.0 - a) * (1.0 - b) * val[0] + a * (1.0 - b) * val[1] + (1.0 - a) * b * val[2] + a * b * val[3];
}

/* One view's scratch (sa3d_ae_work_doubles(c) doubles), carved by sa3d_ae_layout. */
typedef struct sa3d_ae_work {
    double *X;     /* [N][3] dense points; step 3 overwrites X_i with dE/dX_i */
    double *pr;    /* [N][2] grid projections */
    double *zc;    /* [N] depth, clamped to SA3D_ALIGN_ZMIN */
    double *zcl;   /* [N] 1 where it was clamped */
    double *r;     /* [n_act][K] reading (a): each candidate's weight in the gradient */
    double *sg;    /* [n_anc][2] L_sparse: dE/dproj of each appended anchor */
    double *lsp;   /* [n_anc] L_sparse of each appended anchor */
} sa3d_ae_work;

SA3D_HD size_t sa3d_ae_work_doubles(const sa3d_align_ctx *c) {
    return (size_t)c->N * 7 + (size_t)c->n_act * c->K + (size_t)c->n_anc * 3;
}

SA3D_HD sa3d_ae_work sa3d_ae_layout(const sa3d_align_ctx *c, double *w) {
    sa3d_ae_work s;
    size_t N = (size_t)c->N;
    s.X = w;
    s.pr = s.X + 3 * N;
    s.zc = s.pr + 2 * N;
    s.zcl = s.zc + N;
    s.r = s.zcl + N;
    s.sg = s.r + (size_t)c->n_act * c->K;
    s.lsp = s.sg + 2 * (size_t)c->n_anc;
    return s;
}

/* The stage's constants, computed once per evaluation. */
typedef struct sa3d_ae_stage {
    double sigma, w_rec, w_sparse;
    double is2, lnorm;   /* 1 / sigma^2, log(2 pi sigma^2): the spatial Gaussian of L_rec and L_sparse */
    double it, lo;       /* 1 / tau and the outlier level over tau (reading (a)) */
    double inv_N;        /* 1 / N: L_bg's mean over the points */
    double r_sparse;     /* L_sparse's window radius (sa3d_ae_stage_make) */
    int lvl;             /* reading (b) with blur: S_lvl levels lvl and lvl + 1 ... */
    double beta;         /* ... mixed (1 - beta, beta); beta 0 reads level lvl alone */
} sa3d_ae_stage;

SA3D_HD sa3d_ae_stage sa3d_ae_stage_make(const sa3d_align_ctx *c, const sa3d_align_stage *s) {
    sa3d_ae_stage k;
    k.sigma = s->sigma;
    k.w_rec = s->w_rec;
    k.w_sparse = s->w_sparse;
    k.is2 = 1.0 / (s->sigma * s->sigma);
    k.lnorm = log(SA3D_TWO_PI * s->sigma * s->sigma);
    k.it = 1.0 / c->p.tau;
    k.lo = c->p.outlier_logp * k.it;
    k.inv_N = 1.0 / c->N;
    /* L_sparse drops the cells beyond R. A cell's term is at most exp(-R^2 / (2 sigma^2) - lnorm) (log p_sem <= 0),
     * so R^2 / (2 sigma^2) >= 8 - o - lnorm keeps it below exp(o - 8), negligible next to the outlier floor exp(o)
     * that an anchor with no evidence near it pays, and >= 8 below the Gaussian's peak. Crossing the window's edge
     * then changes L_sparse_a by at most log(1 + e^-8) = 3.4e-4 (4 sigma, at o = -12 and sigma = 1, let it jump
     * by 2.3). At o = -12: 6.0 sigma at sigma = 1, 5.6 at 3.75. */
    double q = 8.0 - c->p.sparse_outlier - k.lnorm;
    k.r_sparse = s->sigma * sqrt(2.0 * (q > 8.0 ? q : 8.0));
    /* the stage's sigma on the levels' log scale: between levels lvl and lvl + 1 at fraction beta */
    double u = c->n_lvl > 1 ? log(s->sigma / c->lvl_s0) / c->lvl_step : 0.0;
    u = u > 0.0 ? (u < c->n_lvl - 1 ? u : c->n_lvl - 1) : 0.0;
    k.lvl = (int)u;
    k.beta = u - k.lvl;
    return k;
}

/* out[3] = sum over CSR row r of w_e v[idx_e] (3-vectors), in entry order: X_i = rig . Y and its transpose. */
SA3D_HD void sa3d_ae_csr_sum3(const int *ptr, const int *idx, const double *w, int r, const double *v,
                              double out[3]) {
    double s0 = 0.0, s1 = 0.0, s2 = 0.0;
    for (int e = ptr[r]; e < ptr[r + 1]; e++) {
        const double *x = v + 3 * idx[e];
        s0 += w[e] * x[0];
        s1 += w[e] * x[1];
        s2 += w[e] * x[2];
    }
    out[0] = s0;
    out[1] = s1;
    out[2] = s2;
}

/* Step 1, point i: X_i = rig . Y, its depth (METHOD.md 2.3's 1e-9, clamped at SA3D_ALIGN_ZMIN) and projection
 * gx = g X / (phi Z) + g/2. */
SA3D_HD void sa3d_ae_project(const sa3d_align_ctx *c, const double *Y, double phi, int i, sa3d_ae_work w) {
    double gd = (double)c->g, half = 0.5 * gd;
    sa3d_ae_csr_sum3(c->rig_ptr, c->rig_idx, c->rig_w, i, Y, w.X + 3 * i);
    double x0 = w.X[3 * i], x1 = w.X[3 * i + 1], x2 = w.X[3 * i + 2];
    double z = x2 + 1e-9;
    w.zcl[i] = 0.0;
    if (!(z >= SA3D_ALIGN_ZMIN)) { z = SA3D_ALIGN_ZMIN; w.zcl[i] = 1.0; }
    w.zc[i] = z;
    w.pr[2 * i] = gd * x0 / (phi * z) + half;
    w.pr[2 * i + 1] = gd * x1 / (phi * z) + half;
}

/* Step 2, active cell q of reading (a): -tau log(exp(o / tau) + sum_k exp(l_k / tau)) with
 * l_k = lp_k - |cell - proj_k|^2 / (2 sigma^2) - log(2 pi sigma^2), o the outlier level. Returns the cell's
 * weight x tau x the log-sum-exp (L_rec gets minus it) and stores r_k = w_rec x weight x softmax_k / sigma^2 in
 * w.r: d(-tau lse)/dproj_k = -r_k (cell - proj_k). */
SA3D_HD double sa3d_ae_rec_cell(const sa3d_align_ctx *c, int q, const sa3d_ae_stage *k, sa3d_ae_work w) {
    int K = c->K;
    double cx = c->act_cxy[2 * q], cy = c->act_cxy[2 * q + 1];
    const int *id = c->cand + (size_t)q * K;
    const double *lp = c->cand_lp + (size_t)q * K;
    double *a = w.r + (size_t)q * K;
    double mx = k->lo;
    for (int j = 0; j < K; j++) {
        if (id[j] < 0) { a[j] = -HUGE_VAL; continue; }
        double ex = cx - w.pr[2 * id[j]], ey = cy - w.pr[2 * id[j] + 1];
        a[j] = (lp[j] - 0.5 * (ex * ex + ey * ey) * k->is2 - k->lnorm) * k->it;
        if (a[j] > mx) mx = a[j];
    }
    double sum = exp(k->lo - mx);
    for (int j = 0; j < K; j++) { a[j] = exp(a[j] - mx); sum += a[j]; }   /* a_j -> exp(a_j - mx) */
    double lse = mx + log(sum);
    double wq = c->act_w[q];
    double rs = wq * k->w_rec * k->is2 / sum;
    for (int j = 0; j < K; j++) a[j] = a[j] * rs;
    return wq * c->p.tau * lse;
}

/* Step 2, appended anchor a: L_sparse_a = -log(exp(o) + sum_c exp(lp_a(c)) N(c; proj, sigma^2)) over the cells
 * within R = k->r_sparse of the projection (the rest weigh < exp(o - 8)), o = sparse_outlier. A stable log-sum-exp in
 * two passes over the window, without a buffer: the largest term, then the sum relative to it. The window
 * (clamped to the grid; empty when x1 < x0 or y1 < y0): */
SA3D_HD void sa3d_ae_sparse_window(int g, double px, double py, double R, long win[4]) {
    long x0 = (long)floor(px - R), x1 = (long)ceil(px + R), y0 = (long)floor(py - R), y1 = (long)ceil(py + R);
    win[0] = x0 < 0 ? 0 : x0;
    win[1] = x1 > g - 1 ? g - 1 : x1;
    win[2] = y0 < 0 ? 0 : y0;
    win[3] = y1 > g - 1 ? g - 1 : y1;
}

/* Cell (x, y) of the window: 0 outside the disc, else 1 with its log term *l and offset (ex, ey) from the
 * projection. */
SA3D_HD int sa3d_ae_sparse_term(const double *lp, int g, long x, long y, double px, double py, double R,
                                const sa3d_ae_stage *k, double *l, double *ex, double *ey) {
    *ex = (double)x + 0.5 - px;
    *ey = (double)y + 0.5 - py;
    double d2 = *ex * *ex + *ey * *ey;
    if (d2 >= R * R) return 0;
    *l = lp[y * g + x] - 0.5 * d2 * k->is2 - k->lnorm;
    return 1;
}

/* From the window's maximum mx (>= o), sum = exp(o - mx) + sum_c exp(l_c - mx) and the offsets' weighted sums:
 * L_sparse_a, and sg = kk x dL_sparse_a / dproj with d(-lse)/dproj = -sum_c r_c (c - proj) / sigma^2. */
SA3D_HD double sa3d_ae_sparse_finish(double mx, double sum, double sx, double sy, double kk, const sa3d_ae_stage *k,
                                     double *sg) {
    sg[0] = kk * k->is2 * sx / sum;
    sg[1] = kk * k->is2 * sy / sum;
    return -(mx + log(sum));
}

/* Step 3, point i: dE/dproj_i from reading (a)'s cells (gathered from w.r), reading (b) (the similarity
 * sampled at the projection), L_sparse (w.sg) and L_bg (mask sampled at the projection); *l_rec (reading (b):
 * L_rec gets minus it) and *l_bg get the point's shares. Then back through the projection: X_i is overwritten by
 * dE/dX_i and the point's share s k / phi of -dE/dphi is returned. */
SA3D_HD double sa3d_ae_point(const sa3d_align_ctx *c, int i, double phi, const sa3d_ae_stage *k, sa3d_ae_work w,
                             double *l_rec, double *l_bg) {
    const sa3d_align_params *p = &c->p;
    int g = c->g;
    double px = w.pr[2 * i], py = w.pr[2 * i + 1], gx = 0.0, gy = 0.0;
    *l_rec = 0.0;
    *l_bg = 0.0;
    if (k->w_rec != 0.0) {
        if (p->rec_mode == SA3D_REC_POINT) {
            double sx, sy, dlp;
            size_t plane = (size_t)c->N * c->cells;
            const float *Si = c->S_lvl ? c->S_lvl + k->lvl * plane + (size_t)i * c->cells : c->S + (size_t)i * c->cells;
            double s = sa3d_ae_bilinear(Si, g, px, py, 0, &sx, &sy);
            if (c->S_lvl && k->beta > 0.0) {   /* the next (wider) level's share */
                double tx, ty, t = sa3d_ae_bilinear(Si + plane, g, px, py, 0, &tx, &ty);
                s += k->beta * (t - s);
                sx += k->beta * (tx - sx);
                sy += k->beta * (ty - sy);
            }
            double lp = sa3d_align_lp(s, c->sem_mu[i], c->sem_sd[i], &dlp);
            *l_rec = c->pt_w[i] * lp;
            double kk = -k->w_rec * c->pt_w[i] * dlp;
            gx += kk * sx;
            gy += kk * sy;
        } else {
            for (int e = c->pt_slot_ptr[i]; e < c->pt_slot_ptr[i + 1]; e++) {
                const double *cc = c->act_cxy + 2 * c->pt_slot_q[e];
                double r = w.r[c->pt_slot[e]];
                gx -= r * (cc[0] - px);
                gy -= r * (cc[1] - py);
            }
        }
    }
    int a = c->pt_anc[i];
    if (k->w_sparse != 0.0 && a >= 0) {
        gx -= w.sg[2 * a];
        gy -= w.sg[2 * a + 1];
    }
    if (p->w_bg != 0.0 && c->mask) {
        double inv = k->inv_N, mx, my;
        double m = sa3d_ae_bilinear(c->mask, g, px, py, 1, &mx, &my);
        *l_bg = (1.0 - m) * inv;
        gx -= p->w_bg * inv * mx;
        gy -= p->w_bg * inv * my;
    }
    double *X = w.X + 3 * i;
    if (gx == 0.0 && gy == 0.0) { X[0] = X[1] = X[2] = 0.0; return 0.0; }
    double z = w.zc[i], kz = (double)g / (phi * z);
    double s = gx * X[0] + gy * X[1];   /* d(proj)/d(phi, z) share this */
    X[0] = gx * kz;
    X[1] = gy * kz;
    X[2] = w.zcl[i] != 0.0 ? 0.0 : -s * kz / z;
    return s * kz / phi;
}

/* Step 4, used anchor k: dE/dY_k (3 values into gYk) = sum over the points rigged to it of w dE/dX_i. */
SA3D_HD void sa3d_ae_anchor(const sa3d_align_ctx *c, int k, const double *gX, double *gYk) {
    sa3d_ae_csr_sum3(c->rigT_ptr, c->rigT_pt, c->rigT_w, k, gX, gYk);
}

/* Step 5: L_depth = (mean anchor z - d*)^2; its gradient is added to gY (may be NULL). 0 when w_depth is 0. */
SA3D_HD double sa3d_ae_depth(const sa3d_align_ctx *c, const double *Y, double *gY) {
    if (c->p.w_depth == 0.0) return 0.0;
    int n = c->n;
    double mz = 0.0;
    for (int k = 0; k < n; k++) mz += Y[3 * k + 2];
    mz /= n;
    if (gY) {
        double d = c->p.w_depth * 2.0 * (mz - c->d_star) / n;
        for (int k = 0; k < n; k++) gY[3 * k + 2] += d;
    }
    return (mz - c->d_star) * (mz - c->d_star);
}

/* The mirrored pose of Y for the mirror's anchor k: x -> -x (the grid's x -> g - x), at its twin's place. */
SA3D_HD void sa3d_ae_mirror_anchor(const int *twin, const double *Y, int k, double *Ym) {
    const double *y = Y + 3 * twin[k];
    Ym[3 * k] = -y[0];
    Ym[3 * k + 1] = y[1];
    Ym[3 * k + 2] = y[2];
}

#endif
