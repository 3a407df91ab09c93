/* GeoAware-SC's test-time adaptive pose alignment for the baseline (its ADAPT_FLIP, pck_train.compute_pck with
 * utils_correspondence.get_distance / get_distance_mutual_nn and utils_geoware.optimized_kps_1_to_2): a pose
 * distance of the source and of its mirror to the target, and the mirror's matches for the keypoints whose twin
 * is in the pair when the mirror is closer. match.h states the contract; docs/ALIGN.md the differences. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "semalign3d/match.h"
#include "tensor/kernels.h"
#include "baseline_internal.h"

#define R SA3D_FLIP_MASK_RES
#define ROW_BLOCK 256          /* rows of a distance product: bounds its scratch at 256 x cells floats */
#define BACKGROUND (-100000.0) /* GeoAware's value for every channel of a cell outside the mask */

void sa3d_flip_mask_cells(unsigned char *out, const float *mask, int W, int H, int input_size) {
    for (int i = 0; i < R; i++)
        for (int j = 0; j < R; j++) {
            /* torch 'nearest' from an S x S square: source pixel floor(dst * S / 64) (exact for any S < 2^24) */
            int y = (int)((long)i * input_size / R), x = (int)((long)j * input_size / R);
            float u, v;
            sa3d_geoaware_from_square(W, H, input_size, (float)x + 0.5f, (float)y + 0.5f, &u, &v);
            int iu = (int)floorf(u), iv = (int)floorf(v);
            out[i * R + j] = iu >= 0 && iv >= 0 && iu < W && iv < H && mask[(size_t)iv * W + iu] > 0.5f;
        }
}

/* out[C][R*R]: the [C][g][g] map bilinearly resized to R x R, torch's interpolate(mode='bilinear',
 * align_corners=False): source coordinate (o + 0.5) g / R - 0.5, clamped at 0, the far neighbour clamped to the
 * grid; float weights combined in torch's order. */
static void upsample_bilinear(float *out, const float *in, int C, int g) {
    int i0[R], i1[R];
    float l0[R], l1[R];
    float scale = (float)g / (float)R;
    for (int o = 0; o < R; o++) {
        float src = scale * ((float)o + 0.5f) - 0.5f;
        if (src < 0.0f) src = 0.0f;
        i0[o] = (int)src;
        i1[o] = i0[o] + (i0[o] < g - 1);
        l1[o] = src - (float)i0[o];
        l0[o] = 1.0f - l1[o];
    }
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const float *m = in + (size_t)c * g * g;
        float *o = out + (size_t)c * R * R;
        for (int y = 0; y < R; y++)
            for (int x = 0; x < R; x++)
                o[y * R + x] = l0[y] * (l0[x] * m[i0[y] * g + i0[x]] + l1[x] * m[i0[y] * g + i1[x]]) +
                               l1[y] * (l0[x] * m[i1[y] * g + i0[x]] + l1[x] * m[i1[y] * g + i1[x]]);
    }
}

/* Nearest neighbours between the cells of two maps, both [C][cells] channel-major: for each of the na cells
 * ia[] of A, the cell of ib[] (nb of them) of B at the smallest squared distance |a|^2 + |b|^2 - 2 a.b (the
 * first on ties) into row_nn[]; with col_nn, also each ib cell's nearest ia cell. The products are fixed-order
 * (sa3d_gemm_fixed_order), ROW_BLOCK rows at a time, and every minimum is scanned in index order, so the result
 * does not depend on the thread count. */
static sa3d_status nearest_cells(const float *A, int cells_a, const int *ia, int na, const float *B, int cells_b,
                                 const int *ib, int nb, int C, int *row_nn, int *col_nn, sa3d_error *err) {
    float *a = sa3d_malloc((size_t)ROW_BLOCK * C * sizeof *a), *b = sa3d_malloc((size_t)C * nb * sizeof *b);
    float *G = sa3d_malloc((size_t)ROW_BLOCK * nb * sizeof *G), *na2 = sa3d_malloc((size_t)na * sizeof *na2);
    float *nb2 = sa3d_malloc((size_t)nb * sizeof *nb2), *colv = col_nn ? sa3d_malloc((size_t)nb * sizeof *colv) : NULL;
    sa3d_status s = SA3D_OK;
    if (!a || !b || !G || !na2 || !nb2 || (col_nn && !colv)) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "adaptive flip: out of memory for %d x %d cell distances", na, nb);
        goto out;
    }
    for (int c = 0; c < C; c++)
        for (int q = 0; q < nb; q++) b[(size_t)c * nb + q] = B[(size_t)c * cells_b + ib[q]];
    for (int q = 0; q < nb; q++) {
        float ss = 0.0f;
        for (int c = 0; c < C; c++) ss += b[(size_t)c * nb + q] * b[(size_t)c * nb + q];
        nb2[q] = ss;
        if (col_nn) { colv[q] = INFINITY; col_nn[q] = 0; }
    }
    for (int r0 = 0; r0 < na; r0 += ROW_BLOCK) {
        int rows = na - r0 < ROW_BLOCK ? na - r0 : ROW_BLOCK;
        for (int r = 0; r < rows; r++) {
            float ss = 0.0f;
            for (int c = 0; c < C; c++) {
                float v = A[(size_t)c * cells_a + ia[r0 + r]];
                a[(size_t)r * C + c] = v;
                ss += v * v;
            }
            na2[r0 + r] = ss;
        }
        sa3d_gemm_fixed_order(G, a, b, rows, C, nb);
        #pragma omp parallel for schedule(static)
        for (int r = 0; r < rows; r++) {
            const float *gr = G + (size_t)r * nb;
            float best = INFINITY;
            int arg = 0;
            for (int q = 0; q < nb; q++) {
                float d2 = na2[r0 + r] + nb2[q] - 2.0f * gr[q];
                if (d2 < best) { best = d2; arg = q; }
            }
            row_nn[r0 + r] = arg;
        }
        if (col_nn) {
            #pragma omp parallel for schedule(static)
            for (int q = 0; q < nb; q++)
                for (int r = 0; r < rows; r++) {
                    float d2 = na2[r0 + r] + nb2[q] - 2.0f * G[(size_t)r * nb + q];
                    if (d2 < colv[q]) { colv[q] = d2; col_nn[q] = r0 + r; }
                }
        }
    }
out:
    sa3d_free(a);
    sa3d_free(b);
    sa3d_free(G);
    sa3d_free(na2);
    sa3d_free(nb2);
    sa3d_free(colv);
    return s;
}

/* |A[:, p] - B[:, q]| in double, both [C][cells]. */
static double cell_distance(const float *A, int cells_a, int p, const float *B, int cells_b, int q, int C) {
    double ss = 0.0;
    for (int c = 0; c < C; c++) {
        double d = (double)A[(size_t)c * cells_a + p] - (double)B[(size_t)c * cells_b + q];
        ss += d * d;
    }
    return sqrt(ss);
}

static sa3d_status check_pair(const sa3d_feature_map *a, const sa3d_feature_map *b, sa3d_error *err) {
    if (a->C != b->C || a->C <= 0 || a->g <= 0 || b->g <= 0)
        return sa3d_fail(err, SA3D_ERR_ARG, "adaptive flip: feature maps differ (C %d vs %d, grid %d and %d)", a->C,
                         b->C, a->g, b->g);
    return SA3D_OK;
}

sa3d_status sa3d_flip_distance_masked(const sa3d_feature_map *a, const unsigned char *mask_a,
                                      const sa3d_feature_map *b, const unsigned char *mask_b, double *out,
                                      sa3d_error *err) {
    *out = (double)NAN;
    sa3d_status s = check_pair(a, b, err);
    if (s) return s;
    int C = a->C, np = 0, nq = 0;
    float *A = sa3d_malloc((size_t)C * R * R * sizeof *A), *B = sa3d_malloc((size_t)C * R * R * sizeof *B);
    int *P = sa3d_malloc(R * R * sizeof *P), *Q = sa3d_malloc(R * R * sizeof *Q), *nn = sa3d_malloc(R * R * sizeof *nn);
    if (!A || !B || !P || !Q || !nn) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "adaptive flip: out of memory");
        goto out;
    }
    for (int i = 0; i < R * R; i++) {
        if (mask_a[i]) P[np++] = i;
        if (mask_b[i]) Q[nq++] = i;
    }
    if (np == 0) goto out;   /* the mean of nothing: NaN, as torch's mean of an empty tensor */
    upsample_bilinear(A, a->data, C, a->g);
    double sum = 0.0;
    if (nq == 0) {   /* every target cell is the background vector */
        for (int i = 0; i < np; i++) {
            double ss = 0.0;
            for (int c = 0; c < C; c++) {
                double d = (double)A[(size_t)c * R * R + P[i]] - BACKGROUND;
                ss += d * d;
            }
            sum += sqrt(ss);
        }
    } else {
        upsample_bilinear(B, b->data, C, b->g);
        if ((s = nearest_cells(A, R * R, P, np, B, R * R, Q, nq, C, nn, NULL, err))) goto out;
        for (int i = 0; i < np; i++) sum += cell_distance(A, R * R, P[i], B, R * R, Q[nn[i]], C);
    }
    *out = sum / np;
out:
    sa3d_free(A);
    sa3d_free(B);
    sa3d_free(P);
    sa3d_free(Q);
    sa3d_free(nn);
    return s;
}

sa3d_status sa3d_flip_distance_mutual_nn(const sa3d_feature_map *a, const sa3d_feature_map *b, double *out,
                                         sa3d_error *err) {
    *out = (double)NAN;
    sa3d_status s = check_pair(a, b, err);
    if (s) return s;
    int ca = a->g * a->g, cb = b->g * b->g;
    int *ia = sa3d_malloc((size_t)ca * sizeof *ia), *ib = sa3d_malloc((size_t)cb * sizeof *ib);
    int *nn12 = sa3d_malloc((size_t)ca * sizeof *nn12), *nn21 = sa3d_malloc((size_t)cb * sizeof *nn21);
    if (!ia || !ib || !nn12 || !nn21) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "adaptive flip: out of memory");
        goto out;
    }
    for (int i = 0; i < ca; i++) ia[i] = i;
    for (int i = 0; i < cb; i++) ib[i] = i;
    if ((s = nearest_cells(a->data, ca, ia, ca, b->data, cb, ib, cb, a->C, nn12, nn21, err))) goto out;
    double sum = 0.0;
    int n = 0;
    for (int i = 0; i < ca; i++)
        if (nn21[nn12[i]] == i) {
            sum += cell_distance(a->data, ca, i, b->data, cb, nn12[i], a->C);
            n++;
        }
    *out = n ? sum / n : (double)NAN;
out:
    sa3d_free(ia);
    sa3d_free(ib);
    sa3d_free(nn12);
    sa3d_free(nn21);
    return s;
}

sa3d_status sa3d_baseline_adapt_flip(const sa3d_flip_inputs *in, const sa3d_baseline_params *p, float (*pred)[2],
                                     float *work, sa3d_flip_decision *d, sa3d_error *err) {
    sa3d_flip_decision dec = { (double)NAN, (double)NAN, 0, 0 };
    if (d) *d = dec;
    const sa3d_feature_map *src = in->src, *fl = in->src_flip, *trg = in->trg;
    if (p->adapt_flip != SA3D_FLIP_MASK && p->adapt_flip != SA3D_FLIP_MUTUAL_NN)
        return sa3d_fail(err, SA3D_ERR_ARG, "adaptive flip: metric %d (expected 1 mask or 2 mutual-nn)", p->adapt_flip);
    if (sa3d_baseline_params_check(p, err) != SA3D_OK) return SA3D_ERR_ARG;
    if (!src || !fl || !trg || !in->flip_map || in->n < 0 || in->n > SA3D_MAX_KPS || (in->n && !in->kp_ids))
        return sa3d_fail(err, SA3D_ERR_ARG, "adaptive flip: missing input (maps, flip map or %d keypoints)", in->n);
    sa3d_status qs = sa3d_queries_check(in->src_kps, in->n, "adaptive flip", err);
    if (qs) return qs;
    if (fl->C != src->C || fl->g != src->g || fl->input_size != src->input_size)
        return sa3d_fail(err, SA3D_ERR_ARG, "adaptive flip: the mirrored source's map (%d x %d) differs from the "
                         "source's (%d x %d)", fl->C, fl->g, src->C, src->g);
    sa3d_status s;
    if (p->adapt_flip == SA3D_FLIP_MASK) {
        if (!in->mask_src || !in->mask_src_flip || !in->mask_trg)
            return sa3d_fail(err, SA3D_ERR_ARG, "adaptive flip: the mask metric needs the three masks");
        if ((s = sa3d_flip_distance_masked(src, in->mask_src, trg, in->mask_trg, &dec.dist, err)) ||
            (s = sa3d_flip_distance_masked(fl, in->mask_src_flip, trg, in->mask_trg, &dec.dist_flip, err)))
            return s;
    } else if ((s = sa3d_flip_distance_mutual_nn(src, trg, &dec.dist, err)) ||
               (s = sa3d_flip_distance_mutual_nn(fl, trg, &dec.dist_flip, err))) {
        return s;
    }
    dec.flipped = dec.dist_flip < dec.dist;   /* false with a NaN, as in GeoAware */
    if (dec.flipped) {
        /* keypoint k = slot s takes the mirror's match of its twin t's source position mirrored: in the mirrored
         * image that point is where s is (optimized_kps_1_to_2 with permute_indices: pairs swap when both are
         * in the pair, else the keypoint keeps the plain match) */
        size_t cells_q[SA3D_MAX_KPS];
        int which[SA3D_MAX_KPS], m = 0;
        float fp[SA3D_MAX_KPS][2];
        for (int k = 0; k < in->n; k++) {
            int slot = in->kp_ids[k];
            int twin = slot >= 0 && slot < SA3D_MAX_KPS ? in->flip_map[slot] : slot, j = -1;
            for (int i = 0; i < in->n && j < 0; i++)
                if (in->kp_ids[i] == twin) j = i;
            if (j < 0) continue;
            float x, y;
            sa3d_geoaware_to_square(src->img_w, src->img_h, src->input_size, in->src_kps[j][0], in->src_kps[j][1], &x,
                                    &y);
            cells_q[m] = sa3d_baseline_query_cell((float)src->input_size - x, y, src->input_size, src->g);
            which[m++] = k;
        }
        if ((s = sa3d_match_baseline_cells(fl, trg, cells_q, m, p, fp, work, err))) return s;
        for (int i = 0; i < m; i++) {
            pred[which[i]][0] = fp[i][0];
            pred[which[i]][1] = fp[i][1];
        }
        dec.n_replaced = m;
    }
    if (d) *d = dec;
    return SA3D_OK;
}
