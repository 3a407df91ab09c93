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

/* G += the 4 slot gradients of relation r (geom.h's numbering: pairs, then tets), in slot order. */
static void add_slots(double *G, const sa3d_geom_terms *g, size_t r, const double gr[4][3]) {
    for (int s = 0; s < 4; s++) {
        double *o = G + 3 * sa3d_geom_slot_vertex(g, r, s);
        o[0] += gr[s][0];
        o[1] += gr[s][1];
        o[2] += gr[s][2];
    }
}

/* One configuration P [n][3]; G [n][3] (may be NULL) receives the gradient: the relation steps of geom.h, their
 * slots added in relation order. */
static double energy_one(double *G, const double *P, int n, const sa3d_geom_terms *g, int use_tets) {
    if (G) memset(G, 0, (size_t)n * 3 * sizeof(double));
    double l_pairs = 0.0, l_tets = 0.0, gr[4][3];
    if (g->n_pairs > 0) {
        double sr = 0.0, sa = 0.0, lp[2];
        double w = -1.0 / (5.0 * (double)g->n_pairs);   /* dL / dlogB for each edge-pair term */
        for (size_t e = 0; e < g->n_pairs; e++) {
            sa3d_geom_pair(g, P, e, w, lp, G ? gr : NULL);
            sr += lp[0];
            sa += lp[1];
            if (G) add_slots(G, g, e, (const double (*)[3])gr);
        }
        double np = (double)g->n_pairs;
        l_pairs = -(sr / np) + -(sa / np);   /* l1 + l2 of calculate_geom_loss_for_edge_pair_ratios */
    }
    if (use_tets && g->n_tets > 0) {
        double sx = 0.0, sy = 0.0, sz = 0.0, lp[3];
        double w = -1.0 / (5.0 * (double)g->n_tets);
        for (size_t k = 0; k < g->n_tets; k++) {
            sa3d_geom_tet(g, P, k, w, lp, G ? gr : NULL);
            sx += lp[0];
            sy += lp[1];
            sz += lp[2];
            if (G) add_slots(G, g, g->n_pairs + k, (const double (*)[3])gr);
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
