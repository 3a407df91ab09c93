/* Relation features of METHOD.md 4.2 (geom_features.compute_geom_features_for_edge_pairs / _for_tets): the
 * edge-pair cosine and length ratio, and the triangle-frame direction cosines with the authors' eps placement
 * (nrm(w) = w / (|w| + 1e-6)) and double normalisation of x and z. Also the exact reverse passes of both
 * (chain rule through every nrm and cross product), used by the energy gradient of METHOD.md 4.4. */
#include <math.h>
#include "geom/geom.h"

#define EPS SA3D_GEOM_EPS

static inline void sub3(double *o, const double *a, const double *b) {
    o[0] = a[0] - b[0]; o[1] = a[1] - b[1]; o[2] = a[2] - b[2];
}
/* o = u / (|u| + eps); returns |u|. */
static inline double nrm3(double *o, const double *u) {
    double l = sa3d_norm3(u), d = l + EPS;
    o[0] = u[0] / d; o[1] = u[1] / d; o[2] = u[2] / d;
    return l;
}
/* Reverse pass of n = u / (|u| + eps): gu = gn / (|u| + eps) - u (u . gn) / (|u| (|u| + eps)^2).
 * At u = 0 the second term is 0, as torch's norm backward gives it. */
static inline void nrm3_vjp(double *gu, const double *u, double l, const double *gn) {
    double d = l + EPS;
    double k = l > 0.0 ? sa3d_dot3(u, gn) / (l * d * d) : 0.0;
    gu[0] = gn[0] / d - k * u[0];
    gu[1] = gn[1] / d - k * u[1];
    gu[2] = gn[2] / d - k * u[2];
}

void sa3d_edge_pair_fwd(double *cosang, double *ratio, const double a[3], const double b[3]) {
    double ah[3], bh[3];
    double la = nrm3(ah, a), lb = nrm3(bh, b);
    *cosang = ah[0] * bh[0] + ah[1] * bh[1] + ah[2] * bh[2];
    *ratio = la / (la + lb + EPS);
}

void sa3d_edge_pair_bwd(double ga[3], double gb[3], const double a[3], const double b[3], double gA, double gR) {
    double la = sa3d_norm3(a), lb = sa3d_norm3(b);
    double da = la + EPS, db = lb + EPS, D = la + lb + EPS;
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

void sa3d_tet_fwd(sa3d_tet_frame *f, double *cx, double *cy, double *cz, const double p0[3], const double p1[3],
                  const double p2[3], const double pv[3]) {
    sub3(f->e1, p1, p0);
    sub3(f->e2, p2, p0);
    sa3d_cross3(f->c, f->e1, f->e2);
    f->nc = nrm3(f->z1, f->c);        /* z' = nrm(e1 x e2) */
    f->ne1 = nrm3(f->x1, f->e1);      /* x' = nrm(e1) */
    sa3d_cross3(f->y1, f->z1, f->x1);      /* y' = z' x x' */
    f->nx1 = nrm3(f->x, f->x1);
    f->ny1 = nrm3(f->y, f->y1);
    f->nz1 = nrm3(f->z, f->z1);
    sub3(f->w, pv, p0);
    f->nw = nrm3(f->d, f->w);
    *cx = f->d[0] * f->x[0] + f->d[1] * f->x[1] + f->d[2] * f->x[2];
    *cy = f->d[0] * f->y[0] + f->d[1] * f->y[1] + f->d[2] * f->y[2];
    *cz = f->d[0] * f->z[0] + f->d[1] * f->z[1] + f->d[2] * f->z[2];
}

void sa3d_tet_bwd(double g0[3], double g1[3], double g2[3], double gv[3], const sa3d_tet_frame *f, double gcx,
                  double gcy, double gcz) {
    double gd[3], gx[3], gy[3], gz[3], gx1[3], gy1[3], gz1[3], gc[3], ge1[3], ge2[3], gw[3], t[3];
    for (int i = 0; i < 3; i++) {
        gd[i] = gcx * f->x[i] + gcy * f->y[i] + gcz * f->z[i];
        gx[i] = gcx * f->d[i];
        gy[i] = gcy * f->d[i];
        gz[i] = gcz * f->d[i];
    }
    nrm3_vjp(gz1, f->z1, f->nz1, gz);   /* z = nrm(z') */
    nrm3_vjp(gx1, f->x1, f->nx1, gx);   /* x = nrm(x') */
    nrm3_vjp(gy1, f->y1, f->ny1, gy);   /* y = nrm(y') */
    sa3d_cross3(t, f->x1, gy1);              /* y' = z' x x' */
    for (int i = 0; i < 3; i++) gz1[i] += t[i];
    sa3d_cross3(t, gy1, f->z1);
    for (int i = 0; i < 3; i++) gx1[i] += t[i];
    nrm3_vjp(gc, f->c, f->nc, gz1);     /* z' = nrm(c) */
    nrm3_vjp(ge1, f->e1, f->ne1, gx1);  /* x' = nrm(e1) */
    sa3d_cross3(t, f->e2, gc);               /* c = e1 x e2 */
    for (int i = 0; i < 3; i++) ge1[i] += t[i];
    sa3d_cross3(ge2, gc, f->e1);
    nrm3_vjp(gw, f->w, f->nw, gd);      /* d = nrm(w) */
    for (int i = 0; i < 3; i++) {
        g1[i] += ge1[i];
        g2[i] += ge2[i];
        gv[i] += gw[i];
        g0[i] -= ge1[i] + ge2[i] + gw[i];
    }
}

void sa3d_edge_pair_features(double *cosang /* [B][P] */, double *ratio /* [B][P] */,
                             const double *Y /* [B][n][3] */, int B, int n, const int32_t *e1 /* [P][2] */,
                             const int32_t *e2 /* [P][2] */, size_t n_pairs) {
    for (int b = 0; b < B; b++) {
        const double *P = Y + (size_t)b * (size_t)n * 3;
        for (size_t e = 0; e < n_pairs; e++) {
            double va[3], vb[3];
            sub3(va, P + 3 * e1[2 * e], P + 3 * e1[2 * e + 1]);
            sub3(vb, P + 3 * e2[2 * e], P + 3 * e2[2 * e + 1]);
            sa3d_edge_pair_fwd(cosang + (size_t)b * n_pairs + e, ratio + (size_t)b * n_pairs + e, va, vb);
        }
    }
}

void sa3d_tet_features(double *cx /* [B][T] */, double *cy /* [B][T] */, double *cz /* [B][T] */,
                       const double *Y /* [B][n][3] */, int B, int n, const int32_t *t /* [T][3] */,
                       const int32_t *v /* [T] */, size_t n_tets) {
    for (int b = 0; b < B; b++) {
        const double *P = Y + (size_t)b * (size_t)n * 3;
        for (size_t k = 0; k < n_tets; k++) {
            sa3d_tet_frame f;
            size_t o = (size_t)b * n_tets + k;
            sa3d_tet_fwd(&f, cx + o, cy + o, cz + o, P + 3 * t[3 * k], P + 3 * t[3 * k + 1], P + 3 * t[3 * k + 2],
                         P + 3 * v[k]);
        }
    }
}
