/* Tetrahedral warp of METHOD.md 4.6 (utils/point_cloud_transforms.py): tetrahedra of the anchors,
 * generalised barycentric coordinates with the 1e-7 I regulariser, the inside / hull tests, the
 * distance-based tet weights and the warp by moved anchors; staged (arrays over points x tets, as the
 * authors compute them) and fused (one point at a time, no scratch, parallel over points). */
#include <math.h>
#include <string.h>
#include "base/base.h"
#include "geom/geom.h"

#define W_EPS 1e-6    /* tetrahedron_weights: d_min / (d_T + 1e-6) */
#define SUM_EPS 1e-9  /* tetrahedron_weights: w / (sum w + 1e-9) */

size_t sa3d_tet_count(int n) {
    if (n < 4) return 0;
    size_t m = (size_t)n;
    return m * (m - 1) / 2 * (m - 2) / 3 * (m - 3) / 4;
}

void sa3d_tets_generate(int32_t *tets /* [C(n,4)][4] */, int n) {
    size_t k = 0;
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++)
            for (int c = b + 1; c < n; c++)
                for (int d = c + 1; d < n; d++) {
                    tets[4 * k] = a; tets[4 * k + 1] = b; tets[4 * k + 2] = c; tets[4 * k + 3] = d;
                    k++;
                }
}

/* Fields of a prepared tet: q0, the inverse of M (row-major), the centroid. */
enum { TI_Q0 = 0, TI_INV = 3, TI_CEN = 12 };

void sa3d_tet_prepare(double *info /* [SA3D_TET_INFO][T] */, const double *anchors /* [n][3] */,
                      const int32_t *tets /* [T][4] */, size_t n_tets) {
    const size_t T = n_tets;
    for (size_t t = 0; t < n_tets; t++) {
        const double *q0 = anchors + 3 * tets[4 * t], *q1 = anchors + 3 * tets[4 * t + 1];
        const double *q2 = anchors + 3 * tets[4 * t + 2], *q3 = anchors + 3 * tets[4 * t + 3];
        double M[3][3];
        for (int r = 0; r < 3; r++) {   /* columns q1 - q0, q2 - q0, q3 - q0, plus 1e-7 I */
            M[r][0] = q1[r] - q0[r];
            M[r][1] = q2[r] - q0[r];
            M[r][2] = q3[r] - q0[r];
            M[r][r] += SA3D_TET_REG;
        }
        double c00 = M[1][1] * M[2][2] - M[1][2] * M[2][1];
        double c01 = M[1][2] * M[2][0] - M[1][0] * M[2][2];
        double c02 = M[1][0] * M[2][1] - M[1][1] * M[2][0];
        double det = M[0][0] * c00 + M[0][1] * c01 + M[0][2] * c02;
        double id = 1.0 / det;
        double inv[9];   /* row-major inverse = adjugate / det */
        inv[0] = c00 * id;
        inv[1] = (M[0][2] * M[2][1] - M[0][1] * M[2][2]) * id;
        inv[2] = (M[0][1] * M[1][2] - M[0][2] * M[1][1]) * id;
        inv[3] = c01 * id;
        inv[4] = (M[0][0] * M[2][2] - M[0][2] * M[2][0]) * id;
        inv[5] = (M[0][2] * M[1][0] - M[0][0] * M[1][2]) * id;
        inv[6] = c02 * id;
        inv[7] = (M[0][1] * M[2][0] - M[0][0] * M[2][1]) * id;
        inv[8] = (M[0][0] * M[1][1] - M[0][1] * M[1][0]) * id;
        for (int k = 0; k < 9; k++) info[(TI_INV + k) * T + t] = inv[k];
        for (int r = 0; r < 3; r++) {
            info[(TI_Q0 + r) * T + t] = q0[r];
            info[(TI_CEN + r) * T + t] = (q0[r] + q1[r] + q2[r] + q3[r]) / 4.0;   /* torch.mean over the 4 vertices */
        }
    }
}

/* Barycentric coordinates (b0, b1, b2, b3) of p in prepared tet t of T. */
static inline void bary_one(double *b /* [4] */, const double *p, const double *info, size_t T, size_t t) {
    const double *inv = info + TI_INV * T + t;
    double r0 = p[0] - info[TI_Q0 * T + t], r1 = p[1] - info[(TI_Q0 + 1) * T + t], r2 = p[2] - info[(TI_Q0 + 2) * T + t];
    b[1] = inv[0] * r0 + inv[T] * r1 + inv[2 * T] * r2;
    b[2] = inv[3 * T] * r0 + inv[4 * T] * r1 + inv[5 * T] * r2;
    b[3] = inv[6 * T] * r0 + inv[7 * T] * r1 + inv[8 * T] * r2;
    b[0] = 1.0 - (b[1] + b[2] + b[3]);
}

/* bary_coords_in_convex_hull for one tet; NaN coordinates fail. */
static inline int inside_one(const double *b, double thresh) {
    return b[0] >= -thresh && b[1] >= -thresh && b[2] >= -thresh && b[3] >= -thresh &&
           fabs(b[0] + b[1] + b[2] + b[3] - 1.0) < thresh;
}

static inline double centroid_dist2(const double *p, const double *info, size_t T, size_t t) {
    double d0 = p[0] - info[TI_CEN * T + t], d1 = p[1] - info[(TI_CEN + 1) * T + t];
    double d2 = p[2] - info[(TI_CEN + 2) * T + t];
    return d0 * d0 + d1 * d1 + d2 * d2;
}

static inline double centroid_dist(const double *p, const double *info, size_t T, size_t t) {
    return sqrt(centroid_dist2(p, info, T, t));
}

void sa3d_tet_bary(double *bary /* [n_pts][T][4] */, const double *pts /* [n_pts][3] */, size_t n_pts,
                   const double *info /* [SA3D_TET_INFO][T] */, size_t n_tets) {
    for (size_t p = 0; p < n_pts; p++)
        for (size_t t = 0; t < n_tets; t++)
            bary_one(bary + (p * n_tets + t) * 4, pts + 3 * p, info, n_tets, t);
}

void sa3d_tet_inside(uint8_t *inside /* [n_pts][T] */, uint8_t *in_hull /* [n_pts] */,
                     const double *bary /* [n_pts][T][4] */, size_t n_pts, size_t n_tets, double thresh) {
    for (size_t p = 0; p < n_pts; p++) {
        uint8_t any = 0;
        for (size_t t = 0; t < n_tets; t++) {
            uint8_t in = (uint8_t)inside_one(bary + (p * n_tets + t) * 4, thresh);
            inside[p * n_tets + t] = in;
            any |= in;
        }
        if (in_hull) in_hull[p] = any;
    }
}

void sa3d_tet_weights(double *w /* [n_pts][T] */, const double *pts /* [n_pts][3] */, size_t n_pts,
                      const double *info /* [SA3D_TET_INFO][T] */, const uint8_t *inside /* [n_pts][T] */,
                      size_t n_tets) {
    for (size_t p = 0; p < n_pts; p++) {
        double *wp = w + p * n_tets;
        double dmin = (double)INFINITY, s = 0.0;
        for (size_t t = 0; t < n_tets; t++) {
            wp[t] = centroid_dist(pts + 3 * p, info, n_tets, t);
            if (wp[t] < dmin) dmin = wp[t];
        }
        for (size_t t = 0; t < n_tets; t++) {
            wp[t] = inside[p * n_tets + t] ? dmin / (wp[t] + W_EPS) : 0.0;
            s += wp[t];
        }
        for (size_t t = 0; t < n_tets; t++) wp[t] /= s + SUM_EPS;
    }
}

void sa3d_tet_transform(double *out /* [n_pts][3] */, const double *bary /* [n_pts][T][4] */,
                        const double *w /* [n_pts][T] */, const double *new_anchors /* [n][3] */,
                        const int32_t *tets /* [T][4] */, size_t n_pts, size_t n_tets) {
    for (size_t p = 0; p < n_pts; p++) {
        double acc[3] = { 0, 0, 0 };
        for (size_t t = 0; t < n_tets; t++) {
            double wt = w[p * n_tets + t];
            if (wt == 0.0) continue;
            const double *b = bary + (p * n_tets + t) * 4;
            for (int j = 0; j < 4; j++) {
                const double *y = new_anchors + 3 * tets[4 * t + j];
                for (int a = 0; a < 3; a++) acc[a] += wt * b[j] * y[a];
            }
        }
        memcpy(out + 3 * p, acc, sizeof acc);
    }
}

#define TET_CHUNK 128   /* tets whose weights one vectorised pass computes before the sparse accumulation */

size_t sa3d_tet_warp(double *out /* [n_pts][3] */, uint8_t *covered /* [n_pts] */, const double *pts /* [n_pts][3] */,
                     size_t n_pts, const double *info /* [SA3D_TET_INFO][T] */, const double *new_anchors /* [n][3] */,
                     const int32_t *tets /* [T][4] */, size_t n_tets, double thresh) {
    const size_t T = n_tets;
    size_t n_cov = 0;
    #pragma omp parallel for schedule(static) reduction(+ : n_cov)
    for (size_t p = 0; p < n_pts; p++) {
        const double *x = pts + 3 * p;
        /* The nearest centroid from squared distances, a chunk at a time: an omp simd min reduction over a
         * sqrt vectorises in neither gcc 12 nor clang 14. sqrt is monotonic and correctly rounded, so
         * sqrt(min d^2) is bit for bit the min of the distances. */
        double d2min = HUGE_VAL, dist2[TET_CHUNK];
        for (size_t t0 = 0; t0 < T; t0 += TET_CHUNK) {
            size_t m = T - t0 < TET_CHUNK ? T - t0 : TET_CHUNK;
            #pragma omp simd
            for (size_t i = 0; i < m; i++) dist2[i] = centroid_dist2(x, info, T, t0 + i);
            for (size_t i = 0; i < m; i++) d2min = dist2[i] < d2min ? dist2[i] : d2min;
        }
        double dmin = sqrt(d2min);
        /* Per chunk of tets: the weight of every tet (0 outside) in one vectorised loop, then the few tets that
         * contain the point are accumulated in tet order. */
        double s = 0.0, acc[3] = { 0, 0, 0 }, wt[TET_CHUNK], bc[4][TET_CHUNK];
        int any = 0;
        const double *q0 = info + TI_Q0 * T, *iv = info + TI_INV * T, *ce = info + TI_CEN * T;
        for (size_t t0 = 0; t0 < T; t0 += TET_CHUNK) {
            size_t m = T - t0 < TET_CHUNK ? T - t0 : TET_CHUNK;
            /* bary_one, inside_one and centroid_dist written out without branches, so that the loop vectorises */
            #pragma omp simd
            for (size_t i = 0; i < m; i++) {
                size_t t = t0 + i;
                double r0 = x[0] - q0[t], r1 = x[1] - q0[T + t], r2 = x[2] - q0[2 * T + t];
                double b1 = iv[t] * r0 + iv[T + t] * r1 + iv[2 * T + t] * r2;
                double b2 = iv[3 * T + t] * r0 + iv[4 * T + t] * r1 + iv[5 * T + t] * r2;
                double b3 = iv[6 * T + t] * r0 + iv[7 * T + t] * r1 + iv[8 * T + t] * r2;
                double b0 = 1.0 - (b1 + b2 + b3);
                int in = (b0 >= -thresh) & (b1 >= -thresh) & (b2 >= -thresh) & (b3 >= -thresh) &
                         (fabs(b0 + b1 + b2 + b3 - 1.0) < thresh);
                double d0 = x[0] - ce[t], d1 = x[1] - ce[T + t], d2 = x[2] - ce[2 * T + t];
                double d = sqrt(d0 * d0 + d1 * d1 + d2 * d2);
                double q = dmin / (d + W_EPS);   /* computed for every tet: a select, not a branch */
                bc[0][i] = b0; bc[1][i] = b1; bc[2][i] = b2; bc[3][i] = b3;
                wt[i] = in ? q : 0.0;
            }
            for (size_t i = 0; i < m; i++) {
                if (wt[i] == 0.0) continue;
                any = 1;
                s += wt[i];
                for (int j = 0; j < 4; j++) {
                    const double *y = new_anchors + 3 * tets[4 * (t0 + i) + j];
                    for (int a = 0; a < 3; a++) acc[a] += wt[i] * bc[j][i] * y[a];
                }
            }
        }
        double inv = 1.0 / (s + SUM_EPS);   /* all weights 0: the origin, as transform_pc gives it */
        for (int a = 0; a < 3; a++) out[3 * p + a] = acc[a] * inv;
        if (covered) covered[p] = (uint8_t)any;
        n_cov += (size_t)any;
    }
    return n_cov;
}

size_t sa3d_tet_in_hull(uint8_t *in_hull /* [n_pts] */, const double *pts /* [n_pts][3] */, size_t n_pts,
                        const double *info /* [SA3D_TET_INFO][T] */, size_t n_tets, double thresh) {
    size_t n_in = 0;
    #pragma omp parallel for schedule(static) reduction(+ : n_in)
    for (size_t p = 0; p < n_pts; p++) {
        int any = 0;
        for (size_t t0 = 0; t0 < n_tets && !any; t0 += TET_CHUNK) {   /* vectorised chunks, stop at the first hit */
            size_t m = n_tets - t0 < TET_CHUNK ? n_tets - t0 : TET_CHUNK;
            #pragma omp simd reduction(| : any)
            for (size_t i = 0; i < m; i++) {
                double b[4];
                bary_one(b, pts + 3 * p, info, n_tets, t0 + i);
                any |= inside_one(b, thresh);
            }
        }
        in_hull[p] = (uint8_t)any;
        n_in += any;
    }
    return n_in;
}
