/* Matching through two alignments (METHOD.md 6.2; issue 5 part C). A query of image 1 picks the representation
 * point i* with the highest p_sem,i(q) x N(q; g1_i, sigma^2) - or, when an appended anchor projects within
 * anchor_snap of it, that anchor; image 2's cells are scored by p_sem,i*(u) x N(u; g2_i*, sigma^2) x the direct
 * 2D likelihood softmax_u(F1(q) . F2(u) / T)^w_direct, and the window soft-argmax of that score gives the sub-cell
 * position. p_sem is the aligner's one-sided Gaussian of the similarity (align_internal.h). Options (docs/ALIGN.md):
 * other semantic evidence for step 2 (cosine, normalised density), each point's evidence normalised over image 1,
 * a posterior mixture over the best points instead of the argmax, only the points image 1 sees (a z-buffer on
 * the grid), and, instead of steps 2-3, METHOD 6.2.5's geometric transfer through the k nearest projected points or
 * its lift of the query to 3D with image 1's point map (lift_query).
 * Fallback to the GeoAware baseline: whole pair when an alignment is implausible, single query when it lies off
 * the projected object. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "align/align_internal.h"
#include "align/baseline_internal.h"
#include "base/base.h"
#include "semalign3d/eval.h"

#define MAX_SOFT 16   /* most points step 3 mixes (soft_points) */

sa3d_match_params sa3d_match_params_default(void) {
    sa3d_match_params p;
    memset(&p, 0, sizeof p);
    p.sigma = 1.5;
    p.sem_sd_floor = 0.05;
    p.max_query_dist = 3.0;
    p.max_energy = 1e30;
    p.min_fg_frac = 0.5;
    p.knn = 0;
    p.lift = 0;
    p.lift_k = 5;
    p.vis_radius = 1.5;
    p.vis_tol = -1.0;   /* off: on the val split (seeds 0-7) neither variant beat it; docs/ALIGN.md */
    p.query_sem = SA3D_QUERY_PSEM;
    p.query_temp = 0.05;
    p.anchor_snap = 1.5;   /* these three: val split, seeds 0-15 (docs/ALIGN.md) */
    p.snap_front = 1;
    p.w_direct = 0.35;
    p.soft_points = 1;
    p.baseline = sa3d_baseline_params_default();
    return p;
}

/* out[u] = f . F(:, u) for every cell u; channel-major, so that the walk through F is contiguous */
static void sim_map(double *out, const float *f, const sa3d_feature_map *F) {
    size_t cells = (size_t)F->g * F->g;
    for (size_t u = 0; u < cells; u++) out[u] = 0.0;
    for (int c = 0; c < F->C; c++) {
        const float *row = F->data + (size_t)c * cells;
        double fc = (double)f[c];
        for (size_t u = 0; u < cells; u++) out[u] += fc * (double)row[u];
    }
}

static double dot(const float *a, const float *b, int C) {
    double s = 0.0;
    for (int c = 0; c < C; c++) s += (double)a[c] * (double)b[c];
    return s;
}

static double point_sd(const sa3d_prior *prior, int i, double floor) {
    double sd = (double)prior->dense_attn_sd[i];
    return sd < floor ? floor : sd;
}

/* Step 2's semantic evidence of point i given its similarity s to the query's feature (query_sem). */
static double query_evidence(const sa3d_prior *prior, int i, double s, const sa3d_match_params *p) {
    if (p->query_sem == SA3D_QUERY_COSINE) return s / p->query_temp;
    double sd = point_sd(prior, i, p->sem_sd_floor);
    double lp = sa3d_align_lp(s, (double)prior->dense_attn_mean[i], sd, NULL);
    return p->query_sem == SA3D_QUERY_DENSITY ? lp - log(sd) : lp;
}

/* floor(v) as an int, clamped to [-2 lim, 2 lim]: far enough out that every test against [0, lim) and every
 * window of a few cells around it sees the same as with the exact value, while a projection beyond int's range
 * (an implausible but finite alignment: a point just in front of the camera) has no defined conversion. */
static int floor_clamped(double v, int lim) {
    return !(v > -2.0 * lim) ? -2 * lim : v >= 2.0 * lim ? 2 * lim : (int)floor(v);
}

/* zbuf[g][g]: the front-most depth of alignment a's dense points at each cell, each point claiming the cells whose
 * centre lies within `radius` of its projection; +inf where none does. A point behind the camera (depth below
 * SA3D_ALIGN_ZMIN) claims nothing: its projection, through the clamped depth, is no place on the image. */
static void zbuffer(float *zbuf, const sa3d_alignment *a, double radius) {
    int g = a->g, R = (int)ceil(radius);
    for (int u = 0; u < g * g; u++) zbuf[u] = INFINITY;
    for (int i = 0; i < a->n_dense; i++) {
        if (!((double)a->depth[i] >= SA3D_ALIGN_ZMIN)) continue;
        double px = (double)a->proj[2 * i], py = (double)a->proj[2 * i + 1];
        int cx = floor_clamped(px, g + R), cy = floor_clamped(py, g + R);
        for (int y = cy - R; y <= cy + R; y++)
            for (int x = cx - R; x <= cx + R; x++) {
                if (x < 0 || y < 0 || x >= g || y >= g) continue;
                double dx = x + 0.5 - px, dy = y + 0.5 - py;
                if (dx * dx + dy * dy > radius * radius) continue;
                if (a->depth[i] < zbuf[y * g + x]) zbuf[y * g + x] = a->depth[i];
            }
    }
}

/* Which dense points alignment a sees. Self-occlusion matters most for the query -> point step: in a side view the
 * left and right legs of an animal project onto the same cells and their features are alike (mirror-ambiguous),
 * so without a test the hidden twin can win the query and send it to the wrong side in image 2. A point is
 * visible when its depth is within tol x the anchors' RMS radius of the nearest depth claimed at its own cell
 * (zbuf: zbuffer(a)). METHOD.md 5.4 leaves self-occlusion open; this is the matcher's reading. */
static void visible_points(uint8_t *vis, const sa3d_alignment *a, double tol, const float *zbuf) {
    int g = a->g, N = a->n_dense;
    double m[3] = { 0, 0, 0 }, r2 = 0.0;
    for (int k = 0; k < a->n_used; k++)
        for (int j = 0; j < 3; j++) m[j] += a->Y[3 * k + j] / a->n_used;
    for (int k = 0; k < a->n_used; k++)
        for (int j = 0; j < 3; j++) r2 += (a->Y[3 * k + j] - m[j]) * (a->Y[3 * k + j] - m[j]) / a->n_used;
    double slack = tol * sqrt(r2);
    for (int i = 0; i < N; i++) {
        int cx = floor_clamped((double)a->proj[2 * i], g), cy = floor_clamped((double)a->proj[2 * i + 1], g);
        vis[i] = (double)a->depth[i] >= SA3D_ALIGN_ZMIN &&   /* behind the camera: hidden */
                 (cx < 0 || cy < 0 || cx >= g || cy >= g || (double)a->depth[i] <= (double)zbuf[cy * g + cx] + slack);
    }
}

/* Keeps the K smallest values offered so far in val[0..*n), ascending, with their ids (ties: the earlier first). */
static void keep_smallest(double *val, int *id, int *n, int K, double v, int i) {
    if (*n == K && v >= val[K - 1]) return;
    int j = *n < K ? (*n)++ : K - 1;
    while (j > 0 && val[j - 1] > v) { val[j] = val[j - 1]; id[j] = id[j - 1]; j--; }
    val[j] = v;
    id[j] = i;
}

/* ---- METHOD 6.2.5: the query lifted to 3D with image 1's point map ---- */

#define LIFT_WINDOW_PX 10     /* query_img_coords_to_xyz_with_correction: the pixels within 10 of the query ... */
#define LIFT_SIM_RATIO 0.8    /* ... whose similarity to it exceeds 0.8 x its own are the candidates */
#define LIFT_MAX_K 16

/* m[g][g] at continuous grid coordinates (x, y) (cell c covers [c, c + 1)), bilinear between cell centres with
 * the edges clamped: what torch's upsampling (align_corners false, METHOD.md 2.7) gives there. */
static double cell_bilinear(const double *m, int g, double x, double y) {
    x -= 0.5;
    y -= 0.5;
    x = x < 0.0 ? 0.0 : x > g - 1 ? g - 1 : x;
    y = y < 0.0 ? 0.0 : y > g - 1 ? g - 1 : y;
    int x0 = (int)x, y0 = (int)y, x1 = x0 + 1 < g ? x0 + 1 : x0, y1 = y0 + 1 < g ? y0 + 1 : y0;
    double fx = x - x0, fy = y - y0;
    return (1 - fy) * ((1 - fx) * m[y0 * g + x0] + fx * m[y0 * g + x1]) +
           fy * ((1 - fx) * m[y1 * g + x0] + fx * m[y1 * g + x1]);
}

/* Camera-frame position of dense point i of alignment a (units of S): its projection and depth undone. */
static void dense_xyz(double X[3], const sa3d_alignment *a, int i) {
    double Z = (double)a->depth[i], s = Z * a->phi / a->g;
    X[0] = ((double)a->proj[2 * i] - 0.5 * a->g) * s;
    X[1] = ((double)a->proj[2 * i + 1] - 0.5 * a->g) * s;
    X[2] = Z;
}

/* Original pixel (u, v) of F's image -> continuous grid coordinates of its GeoAware square. */
static void pixel_to_grid(const sa3d_feature_map *F, double u, double v, double *x, double *y) {
    float xs, ys, cell = (float)F->input_size / (float)F->g;
    sa3d_geoaware_to_square(F->img_w, F->img_h, F->input_size, (float)u, (float)v, &xs, &ys);
    *x = (double)(xs / cell);
    *y = (double)(ys / cell);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The shift that puts image 1's pseudo depth z onto the aligned model's depth Z: the median, over the cells the
 * model covers, of (front-most model depth - z). Only a shift: Part 1 builds the cloud from point maps of the
 * same pseudo depths, so their relief is already in the model's units, and L_depth ties the means only loosely
 * (a mask-weighted mean against the anchors'). zbuf: zbuffer(a); tmp: [g][g]. */
static double lift_depth_shift(const sa3d_alignment *a, const float *zbuf, double *tmp) {
    int n = 0;
    for (int u = 0; u < a->g * a->g; u++)
        if (isfinite(zbuf[u]) && isfinite(a->cell_depth[u])) tmp[n++] = (double)zbuf[u] - (double)a->cell_depth[u];
    if (n == 0) return 0.0;
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_double);
    return n % 2 ? tmp[n / 2] : 0.5 * (tmp[n / 2 - 1] + tmp[n / 2]);
}

/* What the lifts of one pair share: image 1's pseudo depth per cell, its shift onto the model's depth, the model's
 * front-most depth per cell (zbuffer), the options. */
typedef struct lift_ctx {
    const double *z1;
    const float *zbuf;
    double shift;
    int mode, K;
} lift_ctx;

/* The lift of the query at original pixel (u, v) of image 1: 1 with (*gx, *gy) its image-2 grid position, 0 when it
 * cannot be made (a transfer behind image 2's camera). sim: the query feature's similarity with every cell of image
 * 1; z1: image 1's pseudo depth per cell (both [g][g]); shift: lift_depth_shift. The window is taken in original
 * pixels, as the authors' helper does on the maps upsampled to the image; each pixel is sampled at its centre. */
static int lift_query(double *gx, double *gy, const sa3d_alignment *a1, const sa3d_alignment *a2,
                      const sa3d_feature_map *F1, float u, float v, const double *sim, const lift_ctx *L) {
    const double *z1 = L->z1;
    int g = a1->g, W = F1->img_w, H = F1->img_h, qu = floor_clamped((double)u, W + H), bu = qu;
    int qv = floor_clamped((double)v, W + H), bv = qv;
    double x, y;
    pixel_to_grid(F1, qu + 0.5, qv + 0.5, &x, &y);
    double s_q = cell_bilinear(sim, g, x, y), z_q = cell_bilinear(z1, g, x, y), z_best = HUGE_VAL;
    for (int r = qv - LIFT_WINDOW_PX < 0 ? 0 : qv - LIFT_WINDOW_PX; r < qv + LIFT_WINDOW_PX && r < H; r++)
        for (int c = qu - LIFT_WINDOW_PX < 0 ? 0 : qu - LIFT_WINDOW_PX; c < qu + LIFT_WINDOW_PX && c < W; c++) {
            pixel_to_grid(F1, c + 0.5, r + 0.5, &x, &y);
            if (!(cell_bilinear(sim, g, x, y) > LIFT_SIM_RATIO * s_q)) continue;
            double z = cell_bilinear(z1, g, x, y);
            if (z < z_best) { z_best = z; bu = c; bv = r; }
        }
    if (!isfinite(z_best)) z_best = z_q;   /* no candidate (a query off the image): the query itself */
    /* the candidate's 3D point, back-projected at its pixel (no half-pixel offset, METHOD.md 2.1) with its shifted
     * pseudo depth or (SA3D_LIFT_MODEL) the model's front-most depth at its cell */
    pixel_to_grid(F1, bu, bv, &x, &y);
    double Z = z_best + L->shift;
    int cx = floor_clamped(x, g), cy = floor_clamped(y, g);
    if (L->mode == SA3D_LIFT_MODEL && cx >= 0 && cy >= 0 && cx < g && cy < g && isfinite(L->zbuf[cy * g + cx]))
        Z = (double)L->zbuf[cy * g + cx];
    double s = Z * a1->phi / g, q[3] = { (x - 0.5 * g) * s, (y - 0.5 * g) * s, Z };
    /* its K nearest dense points in 3D, weights dmin / d (cluster_utils.compute_k_nearest_neighbours), carried to
     * their positions in image 2 */
    double dk[LIFT_MAX_K], X[3], T[3] = { 0, 0, 0 }, ws = 0.0;
    int id[LIFT_MAX_K], nk = 0;
    for (int i = 0; i < a1->n_dense; i++) {
        dense_xyz(X, a1, i);
        double d2 = (X[0] - q[0]) * (X[0] - q[0]) + (X[1] - q[1]) * (X[1] - q[1]) + (X[2] - q[2]) * (X[2] - q[2]);
        keep_smallest(dk, id, &nk, L->K, sqrt(d2), i);
    }
    for (int j = 0; j < nk; j++) {
        double w = (dk[0] + 1e-9) / (dk[j] + 1e-9);
        dense_xyz(X, a2, id[j]);
        for (int c = 0; c < 3; c++) T[c] += w * X[c];
        ws += w;
    }
    if (nk == 0 || !(T[2] / ws >= SA3D_ALIGN_ZMIN)) return 0;
    *gx = g * T[0] / (a2->phi * T[2]) + 0.5 * g;
    *gy = g * T[1] / (a2->phi * T[2]) + 0.5 * g;
    return 1;
}

/* log Z_i = log sum_u exp(evidence_i(u) - |u - g1_i|^2 / (2 sigma^2)) over the cells u of image 1 within 3 sigma of
 * point i's projection (further cells add < 1 %); +inf when no cell is in reach (the point cannot explain a
 * query). query_norm's normaliser. */
static void query_log_norms(double *logZ, const sa3d_prior *prior, const sa3d_alignment *a1,
                            const sa3d_feature_map *F1, const uint8_t *vis, const sa3d_match_params *p) {
    int g = F1->g, C = prior->C;
    size_t cells = (size_t)g * g;
    double r = 3.0 * p->sigma, is2 = 1.0 / (p->sigma * p->sigma);
    for (int i = 0; i < prior->n_dense; i++) {
        logZ[i] = HUGE_VAL;
        if (!vis[i]) continue;
        const float *f = prior->dense_feat + (size_t)i * C;
        double px = (double)a1->proj[2 * i], py = (double)a1->proj[2 * i + 1], mx = -HUGE_VAL, sum = 0.0;
        int x0 = floor_clamped(px - r, g), x1 = -floor_clamped(-(px + r), g), y0 = floor_clamped(py - r, g),
            y1 = -floor_clamped(-(py + r), g);   /* ceil */
        for (int y = y0 < 0 ? 0 : y0; y <= y1 && y < g; y++)
            for (int x = x0 < 0 ? 0 : x0; x <= x1 && x < g; x++) {
                double dx = x + 0.5 - px, dy = y + 0.5 - py, d2 = dx * dx + dy * dy;
                if (d2 > r * r) continue;
                double s = 0.0;
                for (int c = 0; c < C; c++) s += (double)f[c] * (double)F1->data[(size_t)c * cells + (size_t)y * g + x];
                double t = query_evidence(prior, i, s, p) - 0.5 * d2 * is2;
                if (t > mx) { sum = sum * exp(mx - t) + 1.0; mx = t; }   /* one-pass log-sum-exp */
                else sum += exp(t - mx);
            }
        if (sum > 0.0) logZ[i] = mx + log(sum);
    }
}

/* The match in image 2 (original pixels) from the score mix[g][g] (log domain, overwritten): the direct 2D likelihood
 * added with weight w_direct (query feature qf), then the window soft-argmax. sim, score: [g][g] scratch. */
static void image2_pick(float out[2], double *mix, double *sim, float *score, const float *qf,
                        const sa3d_feature_map *F2, const sa3d_match_params *p) {
    int g = F2->g, cells = g * g;
    if (p->w_direct > 0.0) {   /* + w_direct log softmax_u(F1(q) . F2(u) / temperature), up to a constant */
        sim_map(sim, qf, F2);
        double wt = p->w_direct / (double)p->baseline.temperature;
        for (int u = 0; u < cells; u++) mix[u] += wt * sim[u];
    }
    double mx = -DBL_MAX;
    for (int u = 0; u < cells; u++) if (mix[u] > mx) mx = mix[u];
    /* sa3d_window_soft_argmax takes softmax(S / beta) with the cells outside the window at 0: feed it
     * beta (score - max) + 60 beta so that softmax(S / beta) = softmax(score) inside the window and the
     * outside cells weigh exp(-60) of the peak (negligible, as -inf would be). */
    float beta = p->baseline.temperature, cell = (float)F2->input_size / (float)g;
    for (int u = 0; u < cells; u++) score[u] = beta * (float)(mix[u] - mx) + 60.0f * beta;
    int ax, ay;
    float sx, sy;
    sa3d_window_soft_argmax(score, g, g, p->baseline.window_radius, beta, &ax, &ay, &sx, &sy);
    sa3d_geoaware_from_square(F2->img_w, F2->img_h, F2->input_size, (sx + 0.5f) * cell, (sy + 0.5f) * cell, &out[0],
                              &out[1]);
}

/* The name of the first option out of its domain, or NULL. */
static const char *bad_option(const sa3d_match_params *p) {
    if (!(p->sigma > 0.0) || !isfinite(p->sigma)) return "sigma (> 0)";
    if (!(p->sem_sd_floor > 0.0) || !isfinite(p->sem_sd_floor)) return "sem_sd_floor (> 0)";
    if (p->query_sem < SA3D_QUERY_PSEM || p->query_sem > SA3D_QUERY_DENSITY) return "query_sem (0, 1 or 2)";
    if (!(p->query_temp > 0.0) || !isfinite(p->query_temp)) return "query_temp (> 0)";
    if (!(p->w_direct >= 0.0) || !isfinite(p->w_direct)) return "w_direct (>= 0)";
    const char *bad = sa3d_baseline_bad_option(&p->baseline);
    if (bad) return bad;
    if (p->lift < SA3D_LIFT_OFF || p->lift > SA3D_LIFT_MODEL) return "lift (0 off, 1 pseudo depth, 2 model depth)";
    if (p->lift_k < 1 || p->lift_k > LIFT_MAX_K) return "lift_k (1..16)";
    if (p->lift && p->knn > 0) return "knn (0 with lift: both replace steps 2-3)";
    if (p->knn < 0 || p->knn > 16) return "knn (0 off, or 1..16)";
    if (p->soft_points < 1 || p->soft_points > MAX_SOFT) return "soft_points (1..16)";
    if (p->query_norm != 0 && p->query_norm != 1) return "query_norm (0 or 1)";
    if (p->snap_front != 0 && p->snap_front != 1) return "snap_front (0 or 1)";
    if (!(p->anchor_snap >= 0.0)) return "anchor_snap (0 off, or > 0)";
    if (!(p->max_query_dist >= 0.0)) return "max_query_dist (>= 0; inf: never)";
    if (!(p->vis_radius >= 0.0) || !isfinite(p->vis_radius)) return "vis_radius (>= 0)";
    if (isnan(p->vis_tol)) return "vis_tol (< 0 off, or >= 0)";
    if (isnan(p->max_energy)) return "max_energy (not NaN)";
    if (isnan(p->min_fg_frac)) return "min_fg_frac (not NaN)";
    return NULL;
}

sa3d_status sa3d_match_params_check(const sa3d_match_params *p, sa3d_error *err) {
    const char *bad = bad_option(p);
    return bad ? sa3d_fail(err, SA3D_ERR_ARG, "match sa3d: option %s out of range", bad) : SA3D_OK;
}

static int plausible(const sa3d_alignment *a, const sa3d_match_params *p) {
    return isfinite(a->energy) && a->energy <= p->max_energy && a->fg_frac >= p->min_fg_frac;
}

sa3d_status sa3d_match_sa3d(const sa3d_prior *prior, const sa3d_alignment *a1, const sa3d_feature_map *F1,
                            const sa3d_alignment *a2, const sa3d_feature_map *F2, const float (*src_kps)[2], int n,
                            const sa3d_match_params *p, float (*pred)[2], uint8_t *fallback, sa3d_error *err) {
    if (n < 0 || !prior || !a1 || !a2 || !F1 || !F2)
        return sa3d_fail(err, SA3D_ERR_ARG, "match sa3d: missing argument or n = %d", n);
    if (sa3d_match_params_check(p, err) != SA3D_OK) return SA3D_ERR_ARG;
    if (n == 0) return SA3D_OK;
    sa3d_status qs = sa3d_queries_check(src_kps, n, "match sa3d", err);
    if (qs) return qs;
    if (F1->C != prior->C || F2->C != prior->C || F1->g != F2->g || a1->g != F1->g || a2->g != F2->g ||
        a1->n_dense != prior->n_dense || a2->n_dense != prior->n_dense)
        return sa3d_fail(err, SA3D_ERR_ARG, "match sa3d: prior (C %d, %d points), maps (C %d/%d, grid %d/%d) and "
                         "alignments (grid %d/%d, %d/%d points) disagree", prior->C, prior->n_dense, F1->C, F2->C,
                         F1->g, F2->g, a1->g, a2->g, a1->n_dense, a2->n_dense);
    int g = F1->g, cells = g * g, N = prior->n_dense, C = prior->C;
    int M = p->soft_points;
    float *score = sa3d_malloc((size_t)cells * sizeof(float)), *qf = sa3d_malloc((size_t)C * sizeof(float));
    double *sim = sa3d_malloc((size_t)cells * sizeof(double)), *mix = sa3d_malloc((size_t)cells * sizeof(double));
    double *logZ = p->query_norm ? sa3d_malloc((size_t)N * sizeof(double)) : NULL;
    double *z1 = p->lift ? sa3d_malloc((size_t)cells * sizeof(double)) : NULL;
    int use_zbuf = p->lift || p->vis_tol >= 0.0;   /* the lift and the visibility test share one z-buffer */
    float *zbuf = use_zbuf ? sa3d_malloc((size_t)cells * sizeof(float)) : NULL;
    uint8_t *fb = sa3d_malloc((size_t)n), *vis = sa3d_malloc((size_t)N);
    float *work = NULL;
    sa3d_status st = SA3D_OK;
    if (!score || !qf || !sim || !mix || !fb || !vis || (p->query_norm && !logZ) || (p->lift && !z1) ||
        (use_zbuf && !zbuf)) {
        st = sa3d_fail(err, SA3D_ERR_NOMEM, "match sa3d: out of memory");
        goto done;
    }
    if (p->lift && !a1->cell_depth) {
        st = sa3d_fail(err, SA3D_ERR_ARG, "match sa3d: lift needs image 1's depth map (aligned without one)");
        goto done;
    }
    int pair_ok = plausible(a1, p) && plausible(a2, p);
    if (use_zbuf) zbuffer(zbuf, a1, p->vis_radius);
    lift_ctx lift = { z1, zbuf, 0.0, p->lift, p->lift_k };
    if (p->lift && pair_ok) {
        lift.shift = lift_depth_shift(a1, zbuf, z1);
        for (int u = 0; u < cells; u++) z1[u] = (double)a1->cell_depth[u];
    }
    if (p->vis_tol >= 0.0) visible_points(vis, a1, p->vis_tol, zbuf);
    else   /* no occlusion test; a point behind the camera (a diverged pose) is still not seen */
        for (int i = 0; i < N; i++) vis[i] = (double)a1->depth[i] >= SA3D_ALIGN_ZMIN;
    if (logZ && pair_ok) query_log_norms(logZ, prior, a1, F1, vis, p);
    double is2 = 1.0 / (p->sigma * p->sigma), qmax2 = p->max_query_dist * p->max_query_dist;
    float cell1 = (float)F1->input_size / (float)g, cell2 = (float)F2->input_size / (float)g;
    for (int k = 0; k < n; k++) {
        fb[k] = 1;
        if (!pair_ok) continue;
        /* query in image 1, grid coordinates and cell */
        float xs, ys;
        sa3d_geoaware_to_square(F1->img_w, F1->img_h, F1->input_size, src_kps[k][0], src_kps[k][1], &xs, &ys);
        double qx = (double)(xs / cell1), qy = (double)(ys / cell1);
        size_t qcell = sa3d_baseline_query_cell(xs, ys, F1->input_size, g);   /* the cell the baseline reads */
        for (int c = 0; c < C; c++) qf[c] = F1->data[(size_t)c * cells + qcell];
        /* the nearest projection (a query farther than max_query_dist from all is off the object) and the anchor
         * snap: of the visible appended anchors within anchor_snap cells, the front-most (snap_front) or the
         * nearest */
        int ja = -1;
        double dmin2 = DBL_MAX, snap2 = p->anchor_snap * p->anchor_snap, da = snap2, za = HUGE_VAL;
        for (int i = 0; i < N; i++) {
            double dx = qx - (double)a1->proj[2 * i], dy = qy - (double)a1->proj[2 * i + 1], d2 = dx * dx + dy * dy;
            if (d2 < dmin2) dmin2 = d2;
            if (p->anchor_snap <= 0.0 || !prior->dense_anchor || prior->dense_anchor[i] < 0 || !vis[i]) continue;
            if (p->snap_front) {
                if (d2 <= snap2 && (double)a1->depth[i] < za) { za = (double)a1->depth[i]; ja = i; }
            } else if (d2 <= da) { da = d2; ja = i; }
        }
        if (dmin2 > qmax2) continue;
        if (p->lift) {   /* METHOD 6.2.5 in place of steps 2-3: a Gaussian around the lifted query's image-2 position */
            double tx, ty;
            sim_map(sim, qf, F1);
            if (!lift_query(&tx, &ty, a1, a2, F1, src_kps[k][0], src_kps[k][1], sim, &lift)) continue;
            for (int u = 0; u < cells; u++) {
                double dx = (u % g) + 0.5 - tx, dy = (u / g) + 0.5 - ty;
                mix[u] = -0.5 * (dx * dx + dy * dy) * is2;
            }
            image2_pick(pred[k], mix, sim, score, qf, F2, p);
            fb[k] = 0;
            continue;
        }
        /* step 2: the snapped anchor, else the M best points by semantic evidence + log N(q; g1_i, sigma^2), best
         * first (ties: lower index); neg holds minus their scores */
        int top[MAX_SOFT], nt = 0;
        double neg[MAX_SOFT];
        if (ja >= 0) {
            top[0] = ja;
            neg[0] = 0.0;
            nt = 1;
        } else {
            for (int i = 0; i < N; i++) {
                if (!vis[i]) continue;
                double dx = qx - (double)a1->proj[2 * i], dy = qy - (double)a1->proj[2 * i + 1];
                double t = query_evidence(prior, i, dot(prior->dense_feat + (size_t)i * C, qf, C), p) -
                           0.5 * (dx * dx + dy * dy) * is2;
                if (logZ) t -= logZ[i];
                if (!(t > -(double)INFINITY)) continue;   /* no cell of image 1 in the point's reach */
                keep_smallest(neg, top, &nt, M, -t, i);
            }
            if (nt == 0) continue;
        }
        if (p->knn > 0) {   /* METHOD 6.2.5: the k nearest visible projections, inverse-distance weights */
            int K = p->knn, nk = 0, id[16];
            double dk[16];
            for (int i = 0; i < N; i++) {
                if (!vis[i]) continue;
                double dx = qx - (double)a1->proj[2 * i], dy = qy - (double)a1->proj[2 * i + 1];
                keep_smallest(dk, id, &nk, K, sqrt(dx * dx + dy * dy), i);
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
        /* step 3: image 2's score, log sum_m w_m p_sem,m(u) N(u; g2_m, sigma^2) with w the posterior of step 2 over
         * its M best points (M = 1: the argmax point alone) */
        for (int u = 0; u < cells; u++) mix[u] = -HUGE_VAL;
        for (int m = 0; m < nt; m++) {
            int i = top[m];
            double sd = point_sd(prior, i, p->sem_sd_floor), mu = (double)prior->dense_attn_mean[i];
            double px = (double)a2->proj[2 * i], py = (double)a2->proj[2 * i + 1], lw = neg[0] - neg[m];
            sim_map(sim, prior->dense_feat + (size_t)i * C, F2);
            for (int u = 0; u < cells; u++) {
                double dx = (u % g) + 0.5 - px, dy = (u / g) + 0.5 - py;
                double s = lw + sa3d_align_lp(sim[u], mu, sd, NULL) - 0.5 * (dx * dx + dy * dy) * is2;
                double hi = s > mix[u] ? s : mix[u], lo = s > mix[u] ? mix[u] : s;
                mix[u] = hi + log1p(exp(lo - hi));   /* log(e^s + e^mix) */
            }
        }
        image2_pick(pred[k], mix, sim, score, qf, F2, p);
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
    sa3d_free(qf);
    sa3d_free(sim);
    sa3d_free(mix);
    sa3d_free(logZ);
    sa3d_free(fb);
    sa3d_free(vis);
    sa3d_free(z1);
    sa3d_free(zbuf);
    sa3d_free(work);
    return st;
}
