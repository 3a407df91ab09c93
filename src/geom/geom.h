/* Geometry core of the per-category 3D prior (internal header): the normalised pinhole camera and the
 * pixel <-> 60x60 cell maps (METHOD.md 2), pseudo-depth (3.2), the focal-length variance loss with its
 * gradient and AdamW (3.3), the relation sets, their features, Beta fits and the energy L_geom with its
 * analytic gradient (4.2-4.4), and the tetrahedral warp (4.6). Every value mirrors the authors' function
 * named beside it; fixtures/semalign3d-reference/README.md gives the exact conventions checked in tests.
 *
 * Conventions: arrays are row-major doubles unless said; each array parameter carries its shape. Outputs
 * come first. Hot functions allocate nothing: callers pass scratch sized by the *_work_bytes() function.
 * Functions without a status return are total on valid shapes (indices in range, counts >= 0); the
 * checked entry points (sa3d_geom_terms_check, sa3d_geom_relations_make, ...) validate untrusted data.
 * Thread safety: no globals; every function is safe to call concurrently on distinct outputs and scratch
 * (the special functions avoid libm's lgamma, which writes signgam). */
#ifndef SA3D_GEOM_H
#define SA3D_GEOM_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include "base/hd.h"
#include "semalign3d/status.h"

/* ---------------------------------------------------------------------------------------------------------
 * Camera (METHOD.md 2, 3.2)                                                                      camera.c
 * ------------------------------------------------------------------------------------------------------- */

/* METHOD.md 2.3 (get_normalized_calibration_matrix_np): K = [[f, 0, p_x], [0, f, p_y], [0, 0, 1]] with
 * p_x = W / (2S), p_y = H / (2S), S = max(W, H). Image sizes in pixels, f in units of S. */
void sa3d_calib_normalized(double *K /* [3][3] */, double img_h, double img_w, double f);

/* METHOD.md 2.3, 3.3 (back_project_kpts): P = (|phi| z (x_n - p_x), |phi| z (y_n - p_y), z) per keypoint of
 * each image, phi = 1/f; x_n = u / S. Camera frame, units of S. */
void sa3d_backproject_kpts(double *xyz /* [N][K][3] */, const double *phi /* [N] */,
                           const double *img_hw /* [N][2] (H, W) */, const double *xy_norm /* [N][K][2] */,
                           const double *depth /* [N][K] */, int n_img, int n_kpts);

/* METHOD.md 2.3 (project_to_img_plane_batched): h = K X; (x_n, y_n) = (h0, h1) / (h2 + 1e-9). */
void sa3d_project_batched(double *xy /* [B][n][2] */, const double *xyz /* [B][n][3] camera frame */,
                          const double *K /* [B][3][3] */, int B, int n);

/* METHOD.md 3.2 (back_project_depth_image): every pixel (column c, row r) at x_n = c / S, y_n = r / S (no
 * half-pixel offset), depth z, back-projected with focal length f through a float64 K. */
void sa3d_backproject_depth(double *xyz /* [H][W][3] */, const double *depth /* [H][W] */, int img_h,
                            int img_w, double f);

/* METHOD.md 2.5 (img_coords_to_embd_coords): pixel (u, v) -> cell of the grid x grid map over the padded
 * square, in float32 exactly as torch does it: c = trunc(((u + pad_x) / S) * grid), clamped to
 * [0, grid - 1]; pad_x = (S - W) div 2, pad_y = (S - H) div 2. */
void sa3d_pixel_to_cell(int32_t *cells /* [n][2] (cx, cy) */, const int32_t *pix /* [n][2] (u, v) */, int n,
                        int img_h, int img_w, int grid);

/* METHOD.md 2.6 (embd_coords_to_img_coords): cell -> pixel, float32: u = trunc(((c + 0.5) / grid) * S -
 * pad_x); no clamping (cells in the padding give negative or out-of-image pixels). */
void sa3d_cell_to_pixel(int32_t *pix /* [n][2] (u, v) */, const int32_t *cells /* [n][2] */, int n, int img_h,
                        int img_w, int grid);

/* METHOD.md 3.2 (load_depth): z = 1 - 0.3 d / max d, mirrored left-right when flip != 0. The double version
 * mirrors a float64 .npy, the _f32 one a float32 .npy (numpy then works in float32). SA3D_ERR_NUMERIC when
 * max d is not finite and positive or a value is not finite; z is untouched then. */
sa3d_status sa3d_pseudo_depth(double *z /* [H][W] */, const double *disp /* [H][W] */, int img_h, int img_w,
                              int flip, sa3d_error *err);
sa3d_status sa3d_pseudo_depth_f32(float *z /* [H][W] */, const float *disp /* [H][W] */, int img_h, int img_w,
                                  int flip, sa3d_error *err);

/* ---------------------------------------------------------------------------------------------------------
 * Relations (METHOD.md 4.2; generate_geometric_relation_combinations(n, full=False))          relations.c
 * ------------------------------------------------------------------------------------------------------- */

#define SA3D_GEOM_MAX_KPTS 64

typedef struct sa3d_geom_relations {
    int n;               /* keypoint slots */
    size_t n_edges;      /* C(n, 2) */
    size_t n_pairs;      /* C(n_edges, 2) */
    size_t n_tets;       /* 4 C(n, 4) triangle + vertex relations */
    int32_t *edges;      /* [n_edges][2] (i, j), i < j, lexicographic; vector P[i] - P[j] */
    int32_t *pair_edges; /* [n_pairs][2] edge indices (a, b), a < b, lexicographic */
    int32_t *e1, *e2;    /* [n_pairs][2] vertex ids of edges a and b */
    int32_t *t;          /* [n_tets][3] triangle (a,b,c | d), (b,c,d | a), (c,d,a | b), (d,a,b | c) */
    int32_t *v;          /* [n_tets] the fourth vertex */
} sa3d_geom_relations;

/* Builds all relations over n slots (1 <= n <= SA3D_GEOM_MAX_KPTS) in the authors' order. One allocation per
 * array, owned by *out (free with sa3d_geom_relations_free). On failure *out is zeroed. */
sa3d_status sa3d_geom_relations_make(sa3d_geom_relations *out, int n, sa3d_error *err);
void sa3d_geom_relations_free(sa3d_geom_relations *r);   /* NULL and zeroed structs are no-ops */

/* 3-vectors of doubles: the small helpers every geometry file uses. */
SA3D_HD double sa3d_dot3(const double *a, const double *b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
SA3D_HD double sa3d_norm3(const double *a) { return sqrt(sa3d_dot3(a, a)); }
SA3D_HD void sa3d_cross3(double *o, const double *a, const double *b) {   /* o = a x b; o may not alias */
    o[0] = a[1] * b[2] - a[2] * b[1];
    o[1] = a[2] * b[0] - a[0] * b[2];
    o[2] = a[0] * b[1] - a[1] * b[0];
}

/* ---------------------------------------------------------------------------------------------------------
 * Relation features (METHOD.md 4.2; compute_geom_features_for_edge_pairs / _for_tets)          features.c
 * nrm(w) = w / (|w| + 1e-6).
 * ------------------------------------------------------------------------------------------------------- */

#define SA3D_GEOM_EPS 1e-6

/* A = nrm(a) . nrm(b), R = |a| / (|a| + |b| + eps), a = Y[e1[0]] - Y[e1[1]], b = Y[e2[0]] - Y[e2[1]]. */
void sa3d_edge_pair_features(double *cosang /* [B][P] */, double *ratio /* [B][P] */,
                             const double *Y /* [B][n][3] */, int B, int n, const int32_t *e1 /* [P][2] */,
                             const int32_t *e2 /* [P][2] */, size_t n_pairs);

/* Direction cosines of nrm(Y[v] - Y[t0]) in the triangle frame: z' = nrm(e1 x e2), x' = nrm(e1),
 * y' = z' x x', then x = nrm(x'), y = nrm(y'), z = nrm(z') (x, z normalised twice), e1 = Y[t1] - Y[t0],
 * e2 = Y[t2] - Y[t0]. */
void sa3d_tet_features(double *cx /* [B][T] */, double *cy /* [B][T] */, double *cz /* [B][T] */,
                       const double *Y /* [B][n][3] */, int B, int n, const int32_t *t /* [T][3] */,
                       const int32_t *v /* [T] */, size_t n_tets);

/* Per-relation forward and reverse passes shared by the feature and energy code and the CUDA backend (SA3D_HD).
 * The frame keeps the intermediates of one triangle + vertex relation for its backward pass. sa3d_edge_pair_bwd
 * adds dL/da, dL/db for upstream gA = dL/dA, gR = dL/dR; sa3d_tet_bwd adds dL/dp0, dL/dp1, dL/dp2, dL/dpv for
 * upstream gradients of cx, cy, cz. */
typedef struct sa3d_tet_frame {
    double e1[3], e2[3], c[3], z1[3], x1[3], y1[3], x[3], y[3], z[3], w[3], d[3];
    double ne1, nc, nz1, nx1, ny1, nw;   /* norms of e1, c, z1, x1, y1, w */
} sa3d_tet_frame;

SA3D_HD void sa3d_sub3(double *o, const double *a, const double *b) {
    o[0] = a[0] - b[0]; o[1] = a[1] - b[1]; o[2] = a[2] - b[2];
}
/* o = u / (|u| + eps); returns |u|. */
SA3D_HD double sa3d_nrm3(double *o, const double *u) {
    double l = sa3d_norm3(u), d = l + SA3D_GEOM_EPS;
    o[0] = u[0] / d; o[1] = u[1] / d; o[2] = u[2] / d;
    return l;
}
/* Reverse pass of n = u / (|u| + eps): gu = gn / (|u| + eps) - u (u . gn) / (|u| (|u| + eps)^2).
 * At u = 0 the second term is 0, as torch's norm backward gives it. */
SA3D_HD void sa3d_nrm3_vjp(double *gu, const double *u, double l, const double *gn) {
    double d = l + SA3D_GEOM_EPS;
    double k = l > 0.0 ? sa3d_dot3(u, gn) / (l * d * d) : 0.0;
    gu[0] = gn[0] / d - k * u[0];
    gu[1] = gn[1] / d - k * u[1];
    gu[2] = gn[2] / d - k * u[2];
}

SA3D_HD void sa3d_edge_pair_fwd(double *cosang, double *ratio, const double a[3], const double b[3]) {
    double ah[3], bh[3];
    double la = sa3d_nrm3(ah, a), lb = sa3d_nrm3(bh, b);
    *cosang = ah[0] * bh[0] + ah[1] * bh[1] + ah[2] * bh[2];
    *ratio = la / (la + lb + SA3D_GEOM_EPS);
}

SA3D_HD void sa3d_edge_pair_bwd(double ga[3], double gb[3], const double a[3], const double b[3], double gA,
                                double gR) {
    double la = sa3d_norm3(a), lb = sa3d_norm3(b);
    double da = la + SA3D_GEOM_EPS, db = lb + SA3D_GEOM_EPS, D = la + lb + SA3D_GEOM_EPS;
    double A = sa3d_dot3(a, b) / (da * db);
    double ua = la > 0.0 ? 1.0 / la : 0.0, ub = lb > 0.0 ? 1.0 / lb : 0.0;   /* a-hat = a / |a| (0 at 0) */
    /* dA/da = (b/db - A a-hat) / da;  dR/d|a| = (|b| + eps) / D^2, dR/d|b| = -|a| / D^2. */
    double ka = gR * db / (D * D) - gA * A / da;
    double kb = -gR * la / (D * D) - gA * A / db;
    for (int i = 0; i < 3; i++) {
        ga[i] += gA * b[i] / (db * da) + ka * a[i] * ua;
        gb[i] += gA * a[i] / (da * db) + kb * b[i] * ub;
    }
}

SA3D_HD void sa3d_tet_fwd(sa3d_tet_frame *f, double *cx, double *cy, double *cz, const double p0[3],
                          const double p1[3], const double p2[3], const double pv[3]) {
    sa3d_sub3(f->e1, p1, p0);
    sa3d_sub3(f->e2, p2, p0);
    sa3d_cross3(f->c, f->e1, f->e2);
    f->nc = sa3d_nrm3(f->z1, f->c);       /* z' = nrm(e1 x e2) */
    f->ne1 = sa3d_nrm3(f->x1, f->e1);     /* x' = nrm(e1) */
    sa3d_cross3(f->y1, f->z1, f->x1);     /* y' = z' x x' */
    f->nx1 = sa3d_nrm3(f->x, f->x1);
    f->ny1 = sa3d_nrm3(f->y, f->y1);
    f->nz1 = sa3d_nrm3(f->z, f->z1);
    sa3d_sub3(f->w, pv, p0);
    f->nw = sa3d_nrm3(f->d, f->w);
    *cx = f->d[0] * f->x[0] + f->d[1] * f->x[1] + f->d[2] * f->x[2];
    *cy = f->d[0] * f->y[0] + f->d[1] * f->y[1] + f->d[2] * f->y[2];
    *cz = f->d[0] * f->z[0] + f->d[1] * f->z[1] + f->d[2] * f->z[2];
}

SA3D_HD void sa3d_tet_bwd(double g0[3], double g1[3], double g2[3], double gv[3], const sa3d_tet_frame *f,
                          double gcx, double gcy, double gcz) {
    double gd[3], gx[3], gy[3], gz[3], gx1[3], gy1[3], gz1[3], gc[3], ge1[3], ge2[3], gw[3], t[3];
    for (int i = 0; i < 3; i++) {
        gd[i] = gcx * f->x[i] + gcy * f->y[i] + gcz * f->z[i];
        gx[i] = gcx * f->d[i];
        gy[i] = gcy * f->d[i];
        gz[i] = gcz * f->d[i];
    }
    sa3d_nrm3_vjp(gz1, f->z1, f->nz1, gz);    /* z = nrm(z') */
    sa3d_nrm3_vjp(gx1, f->x1, f->nx1, gx);    /* x = nrm(x') */
    sa3d_nrm3_vjp(gy1, f->y1, f->ny1, gy);    /* y = nrm(y') */
    sa3d_cross3(t, f->x1, gy1);               /* y' = z' x x' */
    for (int i = 0; i < 3; i++) gz1[i] += t[i];
    sa3d_cross3(t, gy1, f->z1);
    for (int i = 0; i < 3; i++) gx1[i] += t[i];
    sa3d_nrm3_vjp(gc, f->c, f->nc, gz1);      /* z' = nrm(c) */
    sa3d_nrm3_vjp(ge1, f->e1, f->ne1, gx1);   /* x' = nrm(e1) */
    sa3d_cross3(t, f->e2, gc);                /* c = e1 x e2 */
    for (int i = 0; i < 3; i++) ge1[i] += t[i];
    sa3d_cross3(ge2, gc, f->e1);
    sa3d_nrm3_vjp(gw, f->w, f->nw, gd);       /* d = nrm(w) */
    for (int i = 0; i < 3; i++) {
        g1[i] += ge1[i];
        g2[i] += ge2[i];
        gv[i] += gw[i];
        g0[i] -= ge1[i] + ge2[i] + gw[i];
    }
}

/* ---------------------------------------------------------------------------------------------------------
 * Beta distributions (METHOD.md 4.2, 4.4; utils/stats/beta_dist.py)                                beta.c
 * ------------------------------------------------------------------------------------------------------- */

/* Special functions for x > 0, double, thread-safe (no signgam): digamma psi, trigamma psi', ln Gamma.
 * Recurrence up to x >= 10, then the asymptotic series; absolute error about 1e-15 (psi, ln Gamma) and
 * relative about 1e-15 (psi'). NaN for x <= 0 or NaN. */
double sa3d_digamma(double x);
double sa3d_trigamma(double x);
double sa3d_lgamma_pos(double x);

/* ln B(alpha, beta) = lnGamma(alpha) + lnGamma(beta) - lnGamma(alpha + beta). */
double sa3d_beta_lnb(double alpha, double beta);

/* One Beta-distributed feature of one relation; lnb = sa3d_beta_lnb(alpha, beta), cached. */
typedef struct sa3d_beta_term {
    double alpha, beta, lnb;
} sa3d_beta_term;
sa3d_beta_term sa3d_beta_term_make(double alpha, double beta);

#define SA3D_BETA_T_CLAMP 1e-6   /* compute_log_prob_beta_fast: t clamped to [1e-6, 1 - 1e-6] */
#define SA3D_BETA_FIT_CLAMP 1e-8 /* fit_beta_distribution: x clamped to [lo + 1e-8, hi - 1e-8] */

/* METHOD.md 4.4 (compute_log_prob_beta_fast): t = clamp((x - lo) / (hi - lo), 1e-6, 1 - 1e-6);
 * (alpha - 1) log t + (beta - 1) log(1 - t) - lnB. When dlogp_dx is not NULL it receives the derivative
 * w.r.t. x (0 where t is clamped). */
SA3D_HD double sa3d_beta_logpdf(double x, double lo, double hi, const sa3d_beta_term *b, double *dlogp_dx) {
    double span = hi - lo;
    double t = (x - lo) / span;
    int clamped = 0;
    if (t < SA3D_BETA_T_CLAMP) { t = SA3D_BETA_T_CLAMP; clamped = 1; }
    else if (t > 1.0 - SA3D_BETA_T_CLAMP) { t = 1.0 - SA3D_BETA_T_CLAMP; clamped = 1; }
    double u = 1.0 - t;
    if (dlogp_dx) *dlogp_dx = clamped ? 0.0 : ((b->alpha - 1.0) / t - (b->beta - 1.0) / u) / span;
    double term1 = (b->alpha - 1.0) * log(t), term2 = (b->beta - 1.0) * log(u);   /* log_prob_beta order */
    return term1 + term2 - b->lnb;
}

/* Mode in float32 (compute_beta_mode_torch): (a - 1) / (a + b - 2) if a > 1 and b > 1; 0.5 if a = b = 1;
 * 0 if a <= 1 < b; 1 if b <= 1 < a; 0 otherwise (both < 1: tie of infinite densities goes to 0). */
float sa3d_beta_mode_f32(float alpha, float beta);

/* METHOD.md 4.2 step 2-4 (fit_beta_distribution = scipy beta.fit(t, floc=0, fscale=1)): clamps x to
 * [lo + 1e-8, hi - 1e-8], maps to t = (x - lo) / (hi - lo), starts from the method of moments (population
 * variance) and solves psi(a) - psi(a + b) = mean log t, psi(b) - psi(a + b) = mean log(1 - t) by Newton
 * with trigamma in log-parameters (safeguarded: each step reduces the residual or is halved), to full double
 * precision. n = 0 gives (1, 1) and SA3D_OK (METHOD.md 4.2.4). Zero variance (all t equal, or n = 1) has no
 * MLE: SA3D_ERR_NUMERIC, (1, 1). Non-finite samples or lo >= hi: SA3D_ERR_ARG, (1, 1). No scratch needed. */
sa3d_status sa3d_beta_fit(double *alpha, double *beta, const double *x /* [n] */, size_t n, double lo, double hi,
                          sa3d_error *err);

/* ---------------------------------------------------------------------------------------------------------
 * Geometric energy L_geom (METHOD.md 4.4; calculate_geom_loss)                                   energy.c
 * ------------------------------------------------------------------------------------------------------- */

/* A view of the relations in use and their Beta terms; all pointers are borrowed. Ratios live on [0, 1],
 * all cosines on [-1, 1]. */
typedef struct sa3d_geom_terms {
    size_t n_pairs;
    const int32_t *e1, *e2;        /* [n_pairs][2] */
    const sa3d_beta_term *ratio;   /* [n_pairs] R */
    const sa3d_beta_term *cosang;  /* [n_pairs] A */
    size_t n_tets;
    const int32_t *t;              /* [n_tets][3] */
    const int32_t *v;              /* [n_tets] */
    const sa3d_beta_term *cx, *cy, *cz; /* [n_tets] */
} sa3d_geom_terms;

/* Checks every vertex id against [0, n) and every Beta term (alpha, beta > 0, finite, lnb finite).
 * SA3D_ERR_ARG names the first bad relation. */
sa3d_status sa3d_geom_terms_check(const sa3d_geom_terms *g, int n, sa3d_error *err);

/* L_geom(Y_b) = (1/5) [-mean_e logB(R_e) - mean_e logB(A_e) - mean_t logB(cx_t) - mean_t logB(cy_t)
 * - mean_t logB(cz_t)] for each configuration; the tet terms only when use_tets (the sum is still divided by
 * 5). An empty relation list contributes 0 (METHOD.md 4.5.3 step 6; the authors' mean would be NaN).
 * grad (may be NULL) receives dL/dY exactly (the eps terms and the double normalisation included; 0 where t
 * is clamped), overwriting it. Parallel over B with OpenMP; each b is independent, so output does not
 * depend on the thread count. No allocation. */
void sa3d_geom_energy(double *energy /* [B] */, double *grad /* [B][n][3] or NULL */,
                      const double *Y /* [B][n][3] */, int B, int n, const sa3d_geom_terms *g, int use_tets);

/* One relation of L_geom at configuration P, the steps sa3d_geom_energy adds up (shared with the aligner's CUDA
 * backend). Edge pair e: lp = the Beta log densities of its ratio and cosine; tet relation k: of its cx, cy, cz.
 * gr (may be NULL) gets w x d(sum of lp)/dP for each of the relation's 4 vertex slots, the vertex of slot s being
 * sa3d_geom_slot_vertex; adding the slots to the gradient in order adds them as the reverse passes do.
 * w: dL/dlogB of each term, -1 / (5 x the relation count). */
SA3D_HD void sa3d_geom_pair(const sa3d_geom_terms *g, const double *P, size_t e, double w, double lp[2],
                            double gr[4][3]) {
    const int32_t *i1 = g->e1 + 2 * e, *i2 = g->e2 + 2 * e;
    double a[3], b[3], A, R, dR = 0.0, dA = 0.0;
    for (int k = 0; k < 3; k++) {
        a[k] = P[3 * i1[0] + k] - P[3 * i1[1] + k];
        b[k] = P[3 * i2[0] + k] - P[3 * i2[1] + k];
    }
    sa3d_edge_pair_fwd(&A, &R, a, b);
    lp[0] = sa3d_beta_logpdf(R, 0.0, 1.0, &g->ratio[e], gr ? &dR : NULL);
    lp[1] = sa3d_beta_logpdf(A, -1.0, 1.0, &g->cosang[e], gr ? &dA : NULL);
    if (!gr) return;
    double ga[3] = { 0, 0, 0 }, gb[3] = { 0, 0, 0 };
    sa3d_edge_pair_bwd(ga, gb, a, b, w * dA, w * dR);
    for (int k = 0; k < 3; k++) {
        gr[0][k] = ga[k];
        gr[1][k] = -ga[k];
        gr[2][k] = gb[k];
        gr[3][k] = -gb[k];
    }
}
SA3D_HD void sa3d_geom_tet(const sa3d_geom_terms *g, const double *P, size_t k, double w, double lp[3],
                           double gr[4][3]) {
    const int32_t *t = g->t + 3 * k;
    sa3d_tet_frame f;
    double cx, cy, cz, dx = 0.0, dy = 0.0, dz = 0.0;
    sa3d_tet_fwd(&f, &cx, &cy, &cz, P + 3 * t[0], P + 3 * t[1], P + 3 * t[2], P + 3 * g->v[k]);
    lp[0] = sa3d_beta_logpdf(cx, -1.0, 1.0, &g->cx[k], gr ? &dx : NULL);
    lp[1] = sa3d_beta_logpdf(cy, -1.0, 1.0, &g->cy[k], gr ? &dy : NULL);
    lp[2] = sa3d_beta_logpdf(cz, -1.0, 1.0, &g->cz[k], gr ? &dz : NULL);
    if (!gr) return;
    for (int s = 0; s < 4; s++) gr[s][0] = gr[s][1] = gr[s][2] = 0.0;
    /* slots in the order sa3d_tet_bwd adds to its vertices: t1, t2, v, t0 */
    sa3d_tet_bwd(gr[3], gr[0], gr[1], gr[2], &f, w * dx, w * dy, w * dz);
}
/* The vertex of slot s of relation r, numbering the edge pairs first (r < n_pairs: pair r) then the tet
 * relations (tet r - n_pairs). A pair's slots: e1[0], e1[1], e2[0], e2[1]; a tet's: t1, t2, v, t0. */
SA3D_HD int sa3d_geom_slot_vertex(const sa3d_geom_terms *g, size_t r, int s) {
    if (r < g->n_pairs) return s < 2 ? g->e1[2 * r + s] : g->e2[2 * r + s - 2];
    size_t k = r - g->n_pairs;
    return s == 0 ? g->t[3 * k + 1] : s == 1 ? g->t[3 * k + 2] : s == 2 ? g->v[k] : g->t[3 * k];
}

/* ---------------------------------------------------------------------------------------------------------
 * Focal lengths (METHOD.md 3.3; calculate_focal_length_loss, opt_data)                             focal.c
 * ------------------------------------------------------------------------------------------------------- */

/* Scratch bytes for sa3d_focal_loss; 0 when the size overflows. */
size_t sa3d_focal_loss_work_bytes(int n_img, int n_kpts);

/* METHOD.md 3.3: back-projects every image's keypoints with |phi_n|, then for each ordered triple (i, j, k)
 * (repeated indices included) with e_ij = P_j - P_i: c = (e_ij . e_ik) / (|e_ij| |e_ik| + 1e-6),
 * r = |e_ij| / (|e_ij| + |e_ik| + 1e-6); over the images where i, j, k are visible (m of them), the unbiased
 * variance with divisor max(m - 1, 1) (0 when m <= 1). *loss = sum of all variances of c and r.
 * grad_phi (may be NULL): dloss/dphi (sign(phi) d/d|phi|; 0 at phi = 0). cos_var, ratio_var (may be NULL):
 * the per-triple variances. work: sa3d_focal_loss_work_bytes(n_img, n_kpts) bytes, 8-byte aligned.
 * Parallel over i in fixed chunks summed in order: bit-identical at any thread count. */
void sa3d_focal_loss(double *loss, double *grad_phi /* [N] */, double *cos_var /* [K][K][K] */,
                     double *ratio_var /* [K][K][K] */, const double *phi /* [N] */,
                     const double *img_hw /* [N][2] */, const double *xy_norm /* [N][K][2] */,
                     const double *depth /* [N][K] */, const uint8_t *visible /* [N][K] */, int n_img,
                     int n_kpts, void *work);

/* PyTorch AdamW (torch.optim.AdamW, amsgrad off): x *= 1 - lr wd; m = b1 m + (1 - b1) g;
 * v = b2 v + (1 - b2) g^2; x -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps). */
typedef struct sa3d_adamw_params {
    double lr, beta1, beta2, eps, weight_decay;
} sa3d_adamw_params;
sa3d_adamw_params sa3d_adamw_params_default(void);   /* 1e-3, 0.9, 0.999, 1e-8, 0.01 (PyTorch defaults) */

/* One step; step counts from 1. m and v start at 0 and belong to the caller. */
void sa3d_adamw_step(double *x /* [n] */, double *m /* [n] */, double *v /* [n] */, const double *g /* [n] */,
                     size_t n, long step, const sa3d_adamw_params *p);

typedef struct sa3d_focal_opt_params {
    int n_iter;               /* 1000 (METHOD.md 3.3) */
    sa3d_adamw_params adam;   /* PyTorch AdamW defaults, lr 1e-3 */
    /* NULL, or called as ("focal", iterations done, n_iter) every SA3D_FOCAL_POLL iterations: a non-zero return
     * stops the optimisation with SA3D_ERR_CANCELLED (phi then holds the last iterate) */
    int (*progress)(void *user, const char *stage, long done, long total);
    void *progress_user;
} sa3d_focal_opt_params;
#define SA3D_FOCAL_POLL 50   /* 0.25 s at real size (1000 iterations in 5 s) */
sa3d_focal_opt_params sa3d_focal_opt_params_default(void);

/* METHOD.md 3.3 (opt_data): minimises sa3d_focal_loss over phi (in/out; start 0.2 in the authors' code) with
 * AdamW, full batch. *final_loss (may be NULL) gets the loss at the returned phi. Allocates its own scratch.
 * SA3D_ERR_NUMERIC names the iteration if a loss or gradient is not finite (phi then holds the last finite
 * iterate); SA3D_ERR_ARG for bad sizes; SA3D_ERR_NOMEM. */
sa3d_status sa3d_focal_optimize(double *phi /* [N] */, double *final_loss, const double *img_hw /* [N][2] */,
                                const double *xy_norm /* [N][K][2] */, const double *depth /* [N][K] */,
                                const uint8_t *visible /* [N][K] */, int n_img, int n_kpts,
                                const sa3d_focal_opt_params *p, sa3d_error *err);

/* ---------------------------------------------------------------------------------------------------------
 * Tetrahedral warp (METHOD.md 4.6; utils/point_cloud_transforms.py)                            tet_warp.c
 * ------------------------------------------------------------------------------------------------------- */

#define SA3D_TET_REG 1e-7        /* barycentric_coordinates: M + 1e-7 I */
#define SA3D_TET_THRESH 0.1      /* transform_point_cloud / points_in_convex_hull thresh (METHOD.md 4.6) */
#define SA3D_TET_INFO 15         /* doubles per prepared tet: q0[3], inverse of M [3][3], centroid[3]; field-major */

/* C(n, 4), the number of tetrahedra of n anchors (0 for n < 4). */
size_t sa3d_tet_count(int n);
/* All 4-subsets of [0, n), lexicographic (generate_tetrahedrons). */
void sa3d_tets_generate(int32_t *tets /* [C(n,4)][4] */, int n);

/* Per tet: q0, inverse of M = [q1 - q0, q2 - q0, q3 - q0] (columns) + 1e-7 I (3x3 adjugate in double), and
 * the centroid. Non-finite anchors (unused +inf slots) give NaN entries, and every test against them fails. */
void sa3d_tet_prepare(double *info /* [SA3D_TET_INFO][T] */, const double *anchors /* [n][3] */,
                      const int32_t *tets /* [T][4] */, size_t n_tets);

/* (b1, b2, b3) = M^-1 (p - q0), b0 = 1 - b1 - b2 - b3; stored (b0, b1, b2, b3). */
void sa3d_tet_bary(double *bary /* [n_pts][T][4] */, const double *pts /* [n_pts][3] */, size_t n_pts,
                   const double *info /* [SA3D_TET_INFO][T] */, size_t n_tets);

/* bary_coords_in_convex_hull: inside[p][T] = all b >= -thresh and |sum b - 1| < thresh; in_hull[p] = any. */
void sa3d_tet_inside(uint8_t *inside /* [n_pts][T] */, uint8_t *in_hull /* [n_pts] or NULL */,
                     const double *bary /* [n_pts][T][4] */, size_t n_pts, size_t n_tets, double thresh);

/* tetrahedron_weights: d_T = |p - centroid_T|, w_T = min_T' d_T' / (d_T + 1e-6) for inside tets, else 0,
 * then w_T / (sum w + 1e-9). */
void sa3d_tet_weights(double *w /* [n_pts][T] */, const double *pts /* [n_pts][3] */, size_t n_pts,
                      const double *info /* [SA3D_TET_INFO][T] */, const uint8_t *inside /* [n_pts][T] */,
                      size_t n_tets);

/* transform_pc: p' = sum_T w_T sum_j b_Tj new_anchors[tets[T][j]]. */
void sa3d_tet_transform(double *out /* [n_pts][3] */, const double *bary /* [n_pts][T][4] */,
                        const double *w /* [n_pts][T] */, const double *new_anchors /* [n][3] */,
                        const int32_t *tets /* [T][4] */, size_t n_pts, size_t n_tets);

/* Fused warp (the four steps above without the [n_pts][T] arrays; no scratch): out[p] as transform_pc gives
 * it. A point inside no tet maps to the origin, as in the reference (METHOD.md 10.2); covered[p] (may be
 * NULL) is 0 for such points so the builder can drop them. Returns the number of covered points. Parallel
 * over points. */
size_t sa3d_tet_warp(double *out /* [n_pts][3] */, uint8_t *covered /* [n_pts] or NULL */,
                     const double *pts /* [n_pts][3] */, size_t n_pts, const double *info /* [T][INFO] */,
                     const double *new_anchors /* [n][3] */, const int32_t *tets /* [T][4] */, size_t n_tets,
                     double thresh);

/* points_in_convex_hull without the barycentric array: in_hull[p] = some tet has all b >= -thresh. Used for
 * the canonical-hull filter of warped points (METHOD.md 4.6 a.8). Returns the count inside. Parallel. */
size_t sa3d_tet_in_hull(uint8_t *in_hull /* [n_pts] */, const double *pts /* [n_pts][3] */, size_t n_pts,
                        const double *info /* [SA3D_TET_INFO][T] */, size_t n_tets, double thresh);

#endif
