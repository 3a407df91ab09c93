/* Matching through two alignments (METHOD.md 6.2; issue 5 part C). A query of image 1 picks the representation
 * point i* with the highest p_sem,i(q) x N(q; g1_i, sigma^2); image 2's cells are scored by
 * p_sem,i*(u) x N(u; g2_i*, sigma^2) and the window soft-argmax of that score gives the sub-cell position.
 * p_sem is the aligner's one-sided Gaussian of the similarity (align_internal.h). Options: only points that image 1
 * sees answer a query (a z-buffer on the grid), and METHOD 6.2.5's geometric transfer through the k nearest
 * projected points instead of steps 2-3. Fallback to the GeoAware baseline: whole pair when an alignment is
 * implausible, single query when it lies off the projected object. */
#include <float.h>
#include <math.h>
#include <string.h>
#include "align/align_internal.h"
#include "base/base.h"
#include "semalign3d/eval.h"

sa3d_match_params sa3d_match_params_default(void) {
    sa3d_match_params p;
    memset(&p, 0, sizeof p);
    p.sigma = 1.5;
    p.sem_sd_floor = 0.05;
    p.max_query_dist = 3.0;
    p.max_energy = 1e30;
    p.min_fg_frac = 0.5;
    p.knn = 0;
    p.vis_radius = 1.5;
    p.vis_tol = -1.0;   /* off: on the val split (seeds 0-7) neither variant beat it; docs/ALIGN.md */
    p.baseline = sa3d_baseline_params_default();
    return p;
}

/* f_i . F(:, cell) */
static double dot_cell(const float *f, const sa3d_feature_map *F, int cell) {
    size_t cells = (size_t)F->g * F->g;
    double s = 0.0;
    for (int c = 0; c < F->C; c++) s += (double)f[c] * (double)F->data[(size_t)c * cells + cell];
    return s;
}

/* Which dense points alignment a sees. Self-occlusion matters most for the query -> point step: in a side view the
 * left and right legs of an animal project onto the same cells and their features are alike (mirror-ambiguous),
 * so without a test the hidden twin can win the query and send it to the wrong side in image 2. A z-buffer on
 * the grid: every point claims the cells whose centre lies within `radius` of its projection, at its depth; a
 * point is visible when its depth is within tol x the anchors' RMS radius of the nearest depth claimed at its
 * own cell. zbuf: [g][g] scratch. METHOD.md 5.4 leaves self-occlusion open; this is the matcher's reading. */
static void visible_points(uint8_t *vis, const sa3d_alignment *a, double radius, double tol, float *zbuf) {
    int g = a->g, N = a->n_dense, R = (int)ceil(radius);
    for (int u = 0; u < g * g; u++) zbuf[u] = INFINITY;
    for (int i = 0; i < N; i++) {
        double px = (double)a->proj[2 * i], py = (double)a->proj[2 * i + 1];
        int cx = (int)floor(px), cy = (int)floor(py);
        for (int y = cy - R; y <= cy + R; y++)
            for (int x = cx - R; x <= cx + R; x++) {
                if (x < 0 || y < 0 || x >= g || y >= g) continue;
                double dx = x + 0.5 - px, dy = y + 0.5 - py;
                if (dx * dx + dy * dy > radius * radius) continue;
                if (a->depth[i] < zbuf[y * g + x]) zbuf[y * g + x] = a->depth[i];
            }
    }
    double m[3] = { 0, 0, 0 }, r2 = 0.0;
    for (int k = 0; k < a->n_used; k++)
        for (int j = 0; j < 3; j++) m[j] += a->Y[3 * k + j] / a->n_used;
    for (int k = 0; k < a->n_used; k++)
        for (int j = 0; j < 3; j++) r2 += (a->Y[3 * k + j] - m[j]) * (a->Y[3 * k + j] - m[j]) / a->n_used;
    double slack = tol * sqrt(r2);
    for (int i = 0; i < N; i++) {
        int cx = (int)floor((double)a->proj[2 * i]), cy = (int)floor((double)a->proj[2 * i + 1]);
        vis[i] = cx < 0 || cy < 0 || cx >= g || cy >= g || (double)a->depth[i] <= (double)zbuf[cy * g + cx] + slack;
    }
}

static int plausible(const sa3d_alignment *a, const sa3d_match_params *p) {
    return isfinite(a->energy) && a->energy <= p->max_energy && a->fg_frac >= p->min_fg_frac;
}

sa3d_status sa3d_match_sa3d(const sa3d_prior *prior, const sa3d_alignment *a1, const sa3d_feature_map *F1,
                            const sa3d_alignment *a2, const sa3d_feature_map *F2, const float (*src_kps)[2], int n,
                            const sa3d_match_params *p, float (*pred)[2], uint8_t *fallback, sa3d_error *err) {
    if (n < 0 || !prior || !a1 || !a2 || !F1 || !F2)
        return sa3d_fail(err, SA3D_ERR_ARG, "match sa3d: missing argument or n = %d", n);
    if (n == 0) return SA3D_OK;
    if (F1->C != prior->C || F2->C != prior->C || F1->g != F2->g || a1->g != F1->g || a2->g != F2->g ||
        a1->n_dense != prior->n_dense || a2->n_dense != prior->n_dense)
        return sa3d_fail(err, SA3D_ERR_ARG, "match sa3d: prior (C %d, %d points), maps (C %d/%d, grid %d/%d) and "
                         "alignments (grid %d/%d, %d/%d points) disagree", prior->C, prior->n_dense, F1->C, F2->C,
                         F1->g, F2->g, a1->g, a2->g, a1->n_dense, a2->n_dense);
    int g = F1->g, cells = g * g, N = prior->n_dense;
    float *score = sa3d_malloc((size_t)cells * sizeof(float));
    uint8_t *fb = sa3d_malloc((size_t)n), *vis = sa3d_malloc((size_t)N);
    float *work = NULL;
    sa3d_status st = SA3D_OK;
    if (!score || !fb || !vis) { st = sa3d_fail(err, SA3D_ERR_NOMEM, "match sa3d: out of memory"); goto done; }
    int pair_ok = plausible(a1, p) && plausible(a2, p);
    if (p->vis_tol >= 0.0) visible_points(vis, a1, p->vis_radius, p->vis_tol, score);
    else memset(vis, 1, (size_t)N);
    double is2 = 1.0 / (p->sigma * p->sigma), qmax2 = p->max_query_dist * p->max_query_dist;
    float cell1 = (float)F1->input_size / (float)g, cell2 = (float)F2->input_size / (float)g;
    for (int k = 0; k < n; k++) {
        fb[k] = 1;
        if (!pair_ok) continue;
        /* query in image 1, grid coordinates and cell */
        float xs, ys;
        sa3d_geoaware_to_square(F1->img_w, F1->img_h, F1->input_size, src_kps[k][0], src_kps[k][1], &xs, &ys);
        double qx = (double)(xs / cell1), qy = (double)(ys / cell1);
        int cx = (int)floor(qx), cy = (int)floor(qy);
        cx = cx < 0 ? 0 : (cx >= g ? g - 1 : cx);
        cy = cy < 0 ? 0 : (cy >= g ? g - 1 : cy);
        int qc = cy * g + cx;
        /* i* = argmax_i log p_sem,i(q) + log N(q; g1_i, sigma^2) (ties: lower index) */
        int best = -1;
        double bs = -DBL_MAX, dmin2 = DBL_MAX;
        for (int i = 0; i < N; i++) {
            double dx = qx - (double)a1->proj[2 * i], dy = qy - (double)a1->proj[2 * i + 1], d2 = dx * dx + dy * dy;
            if (d2 < dmin2) dmin2 = d2;
            if (!vis[i]) continue;
            double sd = (double)prior->dense_attn_sd[i];
            if (sd < p->sem_sd_floor) sd = p->sem_sd_floor;
            double lp = sa3d_align_lp(dot_cell(prior->dense_feat + (size_t)i * prior->C, F1, qc),
                                      (double)prior->dense_attn_mean[i], sd, NULL);
            double s = lp - 0.5 * d2 * is2;
            if (s > bs) { bs = s; best = i; }
        }
        if (best < 0 || dmin2 > qmax2) continue;
        if (p->knn > 0) {   /* METHOD 6.2.5: the k nearest visible projections, inverse-distance weights */
            int K = p->knn < 16 ? p->knn : 16, nk = 0, id[16];
            double dk[16];
            for (int i = 0; i < N; i++) {
                if (!vis[i]) continue;
                double dx = qx - (double)a1->proj[2 * i], dy = qy - (double)a1->proj[2 * i + 1];
                double d = sqrt(dx * dx + dy * dy);
                int j = nk < K ? nk++ : K;
                if (j == K && d >= dk[K - 1]) continue;
                if (j == K) j = K - 1;
                while (j > 0 && dk[j - 1] > d) { dk[j] = dk[j - 1]; id[j] = id[j - 1]; j--; }
                dk[j] = d;
                id[j] = i;
            }
            double ws = 0.0, tx = 0.0, ty = 0.0;
            for (int j = 0; j < nk; j++) {
                double w = (dk[0] + 1e-3) / (dk[j] + 1e-3);
                ws += w;
                tx += w * (double)a2->proj[2 * id[j]];
                ty += w * (double)a2->proj[2 * id[j] + 1];
            }
            if (nk == 0) continue;
            sa3d_geoaware_from_square(F2->img_w, F2->img_h, F2->input_size, (float)(tx / ws) * cell2,
                                      (float)(ty / ws) * cell2, &pred[k][0], &pred[k][1]);
            fb[k] = 0;
            continue;
        }
        /* image 2: log p_sem,i*(u) + log N(u; g2_i*, sigma^2) over all cells */
        const float *fi = prior->dense_feat + (size_t)best * prior->C;
        double sd = (double)prior->dense_attn_sd[best];
        if (sd < p->sem_sd_floor) sd = p->sem_sd_floor;
        double mu = (double)prior->dense_attn_mean[best], px = (double)a2->proj[2 * best],
               py = (double)a2->proj[2 * best + 1];
        double mx = -DBL_MAX;
        for (int u = 0; u < cells; u++) {
            double dx = (u % g) + 0.5 - px, dy = (u / g) + 0.5 - py;
            double s = sa3d_align_lp(dot_cell(fi, F2, u), mu, sd, NULL) - 0.5 * (dx * dx + dy * dy) * is2;
            score[u] = (float)s;
            if (s > mx) mx = s;
        }
        /* sa3d_window_soft_argmax takes softmax(S / beta) with the cells outside the window at 0: feed it
         * beta (score - max) + 60 beta so that softmax(S / beta) = softmax(score) inside the window and the
         * outside cells weigh exp(-60) of the peak (negligible, as -inf would be). */
        float beta = p->baseline.temperature;
        for (int u = 0; u < cells; u++) score[u] = beta * (float)((double)score[u] - mx) + 60.0f * beta;
        int ax, ay;
        float sx, sy;
        sa3d_window_soft_argmax(score, g, g, p->baseline.window_radius, beta, &ax, &ay, &sx, &sy);
        sa3d_geoaware_from_square(F2->img_w, F2->img_h, F2->input_size, (sx + 0.5f) * cell2, (sy + 0.5f) * cell2,
                                  &pred[k][0], &pred[k][1]);
        fb[k] = 0;
    }
    int n_fb = 0;
    for (int k = 0; k < n; k++) n_fb += fb[k];
    if (n_fb > 0) {
        /* the baseline for the fallback queries, in one call */
        size_t wf = sa3d_baseline_work_floats(F1->C, g, n_fb);
        float(*kp)[2] = sa3d_malloc((size_t)n_fb * sizeof *kp);
        float(*bp)[2] = sa3d_malloc((size_t)n_fb * sizeof *bp);
        work = sa3d_malloc(wf * sizeof(float));
        if (!kp || !bp || !work) {
            sa3d_free(kp);
            sa3d_free(bp);
            st = sa3d_fail(err, SA3D_ERR_NOMEM, "match sa3d: out of memory");
            goto done;
        }
        for (int k = 0, j = 0; k < n; k++)
            if (fb[k]) { kp[j][0] = src_kps[k][0]; kp[j][1] = src_kps[k][1]; j++; }
        st = sa3d_match_baseline(F1, F2, (const float(*)[2])kp, n_fb, &p->baseline, bp, work, err);
        if (st == SA3D_OK)
            for (int k = 0, j = 0; k < n; k++)
                if (fb[k]) { pred[k][0] = bp[j][0]; pred[k][1] = bp[j][1]; j++; }
        sa3d_free(kp);
        sa3d_free(bp);
    }
    if (fallback && st == SA3D_OK) memcpy(fallback, fb, (size_t)n);
done:
    sa3d_free(score);
    sa3d_free(fb);
    sa3d_free(vis);
    sa3d_free(work);
    return st;
}
