/* The geometric energy L_geom of METHOD.md 4.4 (core/losses/geom_loss.calculate_geom_loss) over a batch of
 * keypoint configurations, and its exact gradient w.r.t. the keypoints: the Beta log-density derivative
 * (0 where t is clamped) chained through the relation features' reverse passes (features.c), which include
 * the eps terms and the double normalisation. Owns nothing; allocates nothing. */
#include <math.h>
#include <string.h>
#include "base/base.h"
#include "geom/geom.h"

static int term_ok(const sa3d_beta_term *b) {
    return isfinite(b->alpha) && isfinite(b->beta) && b->alpha > 0.0 && b->beta > 0.0 && isfinite(b->lnb);
}

sa3d_status sa3d_geom_terms_check(const sa3d_geom_terms *g, int n, sa3d_error *err) {
    for (size_t e = 0; e < g->n_pairs; e++) {
        for (int k = 0; k < 2; k++)
            if (g->e1[2 * e + k] < 0 || g->e1[2 * e + k] >= n || g->e2[2 * e + k] < 0 || g->e2[2 * e + k] >= n)
                return sa3d_fail(err, SA3D_ERR_ARG, "geom terms: edge pair %zu: vertex id outside [0, %d)", e, n);
        if (!term_ok(&g->ratio[e]) || !term_ok(&g->cosang[e]))
            return sa3d_fail(err, SA3D_ERR_ARG, "geom terms: edge pair %zu: bad Beta parameters", e);
    }
    for (size_t k = 0; k < g->n_tets; k++) {
        for (int j = 0; j < 3; j++)
            if (g->t[3 * k + j] < 0 || g->t[3 * k + j] >= n)
                return sa3d_fail(err, SA3D_ERR_ARG, "geom terms: tet relation %zu: vertex id outside [0, %d)", k, n);
        if (g->v[k] < 0 || g->v[k] >= n)
            return sa3d_fail(err, SA3D_ERR_ARG, "geom terms: tet relation %zu: vertex id outside [0, %d)", k, n);
        if (!term_ok(&g->cx[k]) || !term_ok(&g->cy[k]) || !term_ok(&g->cz[k]))
            return sa3d_fail(err, SA3D_ERR_ARG, "geom terms: tet relation %zu: bad Beta parameters", k);
    }
    return SA3D_OK;
}

/* One configuration P [n][3]; G [n][3] (may be NULL) receives the gradient. */
static double energy_one(double *G, const double *P, int n, const sa3d_geom_terms *g, int use_tets) {
    if (G) memset(G, 0, (size_t)n * 3 * sizeof(double));
    double l_pairs = 0.0, l_tets = 0.0;
    if (g->n_pairs > 0) {
        double sr = 0.0, sa = 0.0;
        double w = -1.0 / (5.0 * (double)g->n_pairs);   /* dL / dlogB for each edge-pair term */
        for (size_t e = 0; e < g->n_pairs; e++) {
            const int32_t *i1 = g->e1 + 2 * e, *i2 = g->e2 + 2 * e;
            double a[3], b[3], A, R, dR, dA;
            for (int k = 0; k < 3; k++) {
                a[k] = P[3 * i1[0] + k] - P[3 * i1[1] + k];
                b[k] = P[3 * i2[0] + k] - P[3 * i2[1] + k];
            }
            sa3d_edge_pair_fwd(&A, &R, a, b);
            sr += sa3d_beta_logpdf(R, 0.0, 1.0, &g->ratio[e], G ? &dR : NULL);
            sa += sa3d_beta_logpdf(A, -1.0, 1.0, &g->cosang[e], G ? &dA : NULL);
            if (G) {
                double ga[3] = { 0, 0, 0 }, gb[3] = { 0, 0, 0 };
                sa3d_edge_pair_bwd(ga, gb, a, b, w * dA, w * dR);
                for (int k = 0; k < 3; k++) {
                    G[3 * i1[0] + k] += ga[k];
                    G[3 * i1[1] + k] -= ga[k];
                    G[3 * i2[0] + k] += gb[k];
                    G[3 * i2[1] + k] -= gb[k];
                }
            }
        }
        double np = (double)g->n_pairs;
        l_pairs = -(sr / np) + -(sa / np);   /* l1 + l2 of calculate_geom_loss_for_edge_pair_ratios */
    }
    if (use_tets && g->n_tets > 0) {
        double sx = 0.0, sy = 0.0, sz = 0.0;
        double w = -1.0 / (5.0 * (double)g->n_tets);
        for (size_t k = 0; k < g->n_tets; k++) {
            const int32_t *t = g->t + 3 * k;
            int32_t v = g->v[k];
            sa3d_tet_frame f;
            double cx, cy, cz, dx, dy, dz;
            sa3d_tet_fwd(&f, &cx, &cy, &cz, P + 3 * t[0], P + 3 * t[1], P + 3 * t[2], P + 3 * v);
            sx += sa3d_beta_logpdf(cx, -1.0, 1.0, &g->cx[k], G ? &dx : NULL);
            sy += sa3d_beta_logpdf(cy, -1.0, 1.0, &g->cy[k], G ? &dy : NULL);
            sz += sa3d_beta_logpdf(cz, -1.0, 1.0, &g->cz[k], G ? &dz : NULL);
            if (G)
                sa3d_tet_bwd(G + 3 * t[0], G + 3 * t[1], G + 3 * t[2], G + 3 * v, &f, w * dx, w * dy, w * dz);
        }
        double nt = (double)g->n_tets;
        l_tets = -(sx / nt) + -(sy / nt) + -(sz / nt);
    }
    return (l_pairs + l_tets) / 5.0;
}

void sa3d_geom_energy(double *energy /* [B] */, double *grad /* [B][n][3] or NULL */,
                      const double *Y /* [B][n][3] */, int B, int n, const sa3d_geom_terms *g, int use_tets) {
    size_t stride = (size_t)n * 3;
    #pragma omp parallel for schedule(static) if (B > 1)
    for (int b = 0; b < B; b++)
        energy[b] = energy_one(grad ? grad + (size_t)b * stride : NULL, Y + (size_t)b * stride, n, g, use_tets);
}
