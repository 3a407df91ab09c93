/* Relation features of METHOD.md 4.2 (geom_features.compute_geom_features_for_edge_pairs / _for_tets): the
 * edge-pair cosine and length ratio, and the triangle-frame direction cosines with the authors' eps placement
 * (nrm(w) = w / (|w| + 1e-6)) and double normalisation of x and z. Also the exact reverse passes of both
 * (chain rule through every nrm and cross product), used by the energy gradient of METHOD.md 4.4; those per-relation
 * passes are in geom.h, shared with the CUDA backend. */
#include <math.h>
#include "geom/geom.h"

void sa3d_edge_pair_features(double *cosang /* [B][P] */, double *ratio /* [B][P] */,
                             const double *Y /* [B][n][3] */, int B, int n, const int32_t *e1 /* [P][2] */,
                             const int32_t *e2 /* [P][2] */, size_t n_pairs) {
    for (int b = 0; b < B; b++) {
        const double *P = Y + (size_t)b * (size_t)n * 3;
        for (size_t e = 0; e < n_pairs; e++) {
            double va[3], vb[3];
            sa3d_sub3(va, P + 3 * e1[2 * e], P + 3 * e1[2 * e + 1]);
            sa3d_sub3(vb, P + 3 * e2[2 * e], P + 3 * e2[2 * e + 1]);
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
