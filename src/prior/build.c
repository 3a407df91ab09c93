/* The whole build of one category's prior (METHOD.md 4.1-4.6, scripts/generate.py): keypoints of every training
 * instance (image and mirror) snapped into the eroded mask and lifted with the pseudo-depth and the flip-averaged
 * focal length; noisy copies; Beta fits of every relation and the filter; the sparse cloud (sparse.c); the
 * streamed tetrahedral warp of every instance into the canonical frame; keypoint features; k-means, neighbourhood
 * statistics and the collapsed rig (dense.c). Owns every intermediate array; the result is a sa3d_prior.
 * Deliberate departures from the released code are marked "METHOD.md 10.x" and listed in docs/PRIOR.md. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "base/rng.h"
#include "geom/geom.h"
#include "tensor/kernels.h"
#include "prior/prior_internal.h"
#include "semalign3d/prior_build.h"

#define TAG_NOISE 0x6e6f697365ull    /* random streams: noise augmentation per (instance, copy) */
#define TAG_PIXELS 0x706978656cull   /* random order of an instance's mask pixels */
#define WARP_BLOCK 256               /* mask pixels warped per call */
#define RATIO_MODE_LO 0.01f          /* filter_valid_stats: ratio mode in [0.01, 0.99] */
#define RATIO_MODE_HI 0.99f

sa3d_prior_build_params sa3d_prior_build_params_default(void) {
    sa3d_prior_build_params p;
    memset(&p, 0, sizeof p);
    p.feat_channels = 768;
    p.feat_grid = 60;
    p.focal_iters = 1000;
    p.focal_init = 0.2;
    p.noise_samples = 10;
    p.noise_rate = 0.2;
    p.min_sample_imgs = 4;
    p.cube_size = 1.0;
    p.cube_n = 100;
    p.n_max_comb = 100;
    p.refine_iters = 20000;
    p.refine_tol = 1e-6;
    p.refine_lr = 1e-3;
    p.refine_wd = 0.01;
    p.dense_max_src = 10000;
    p.dense_max_pts = 1000;
    p.kmeans_k = 1000;
    p.kmeans_iters = 300;
    p.kmeans_tol = 1e-4;
    p.knn = 1000;
    p.cutoff = 0.0005;
    return p;
}

char *sa3d_prior_build_params_json(const sa3d_prior_build_params *p) {
    char *s = malloc(1024);
    if (!s) return NULL;
    snprintf(s, 1024,
             "{\"seed\": \"%llu\", \"feat_channels\": \"%d\", \"feat_grid\": \"%d\", \"focal_iters\": \"%d\", "
             "\"focal_init\": \"%.17g\", \"noise_samples\": \"%d\", \"noise_rate\": \"%.17g\", \"min_sample_imgs\": "
             "\"%d\", \"cube_size\": \"%.17g\", \"cube_n\": \"%d\", \"n_max_comb\": \"%d\", \"refine_iters\": \"%d\", "
             "\"refine_tol\": \"%.17g\", \"refine_lr\": \"%.17g\", \"refine_wd\": \"%.17g\", \"dense_max_src\": \"%d\", \"dense_max_pts\": "
             "\"%d\", \"kmeans_k\": \"%d\", \"kmeans_iters\": \"%d\", \"kmeans_tol\": \"%.17g\", \"knn\": \"%d\", "
             "\"cutoff\": \"%.17g\"}",
             (unsigned long long)p->seed, p->feat_channels, p->feat_grid, p->focal_iters, p->focal_init,
             p->noise_samples, p->noise_rate, p->min_sample_imgs, p->cube_size, p->cube_n, p->n_max_comb,
             p->refine_iters, p->refine_tol, p->refine_lr, p->refine_wd, p->dense_max_src, p->dense_max_pts, p->kmeans_k,
             p->kmeans_iters, p->kmeans_tol, p->knn, p->cutoff);
    return s;
}

/* ---- per-image keypoint processing (METHOD.md 4.1) -------------------------------------------------------------- */

/* cv2.erode with a 2x2 ones kernel (anchor (1, 1)), once: out(x, y) = min of in over (x-1..x, y-1..y); pixels
 * outside the image do not count (OpenCV's default border for erosion). */
static void erode2x2(uint8_t *out, const uint8_t *in, int w, int h) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t v = in[(size_t)y * w + x];
            if (x > 0) v &= in[(size_t)y * w + x - 1];
            if (y > 0) v &= in[(size_t)(y - 1) * w + x];
            if (x > 0 && y > 0) v &= in[(size_t)(y - 1) * w + x - 1];
            out[(size_t)y * w + x] = v;
        }
}

/* Keypoint snapping (correct_query_coords): a pixel inside m stays; otherwise the nearest pixel of m (squared
 * distance; ties to the first in row-major order). Returns 0 when m is empty (pixel untouched). */
static int snap(int *u, int *v, const uint8_t *m, int w, int h) {
    if (m[(size_t)*v * w + *u]) return 1;
    long best = -1, bu = 0, bv = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            if (m[(size_t)y * w + x]) {
                long dx = x - *u, dy = y - *v, d = dx * dx + dy * dy;
                if (best < 0 || d < best) { best = d; bu = x; bv = y; }
            }
    if (best < 0) return 0;
    *u = (int)bu;
    *v = (int)bv;
    return 1;
}

/* One instance (image `img`, mirrored when flip) of the 2N. Pixel arrays are in the instance's own frame. */
typedef struct instance {
    int img, flip, w, h;
    int32_t raw[SA3D_PRIOR_MAX_SLOTS][2];    /* keypoint pixel as annotated (clamped into the image) */
    int32_t snap[SA3D_PRIOR_MAX_SLOTS][2];   /* snapped into the eroded mask */
    uint8_t vis[SA3D_PRIOR_MAX_SLOTS];
} instance;

typedef struct build {
    const sa3d_prior_build_params *p;
    const sa3d_image_anno *const *images;   /* [N] */
    int n, N, I, C, g;                 /* slots, images, instances (2N), channels, grid */
    instance *inst;                    /* [I] */
    float **zmap;                      /* [N] pseudo-depth [H][W] of the original image */
    uint8_t **mask;                    /* [N] object mask [H][W] in {0, 1} */
    double *phi;                       /* [I] 1/f, flip-averaged */
    double *P;                         /* [I][n][3] lifted keypoints */
    uint8_t used[SA3D_PRIOR_MAX_SLOTS];
    double anchors[SA3D_PRIOR_MAX_SLOTS * 3];
} build;

/* Reports a stage's progress; SA3D_ERR_CANCELLED when the callback asks to stop. */
static sa3d_status progress(const build *b, const char *stage, long done, long total, sa3d_error *err) {
    if (b->p->progress && b->p->progress(b->p->progress_user, stage, done, total))
        return sa3d_fail(err, SA3D_ERR_CANCELLED, "cancelled");
    return SA3D_OK;
}

static float zat(const build *b, const instance *in, int u, int v) {
    int x = in->flip ? in->w - 1 - u : u;
    return b->zmap[in->img][(size_t)v * in->w + x];
}

/* METHOD.md 2.3: back-projection of pixel (u, v) of an instance with depth z and 1/f = phi. */
static void lift(double *X, const instance *in, double phi, int u, int v, double z) {
    double S = in->w > in->h ? in->w : in->h;
    X[0] = fabs(phi) * z * ((double)u / S - in->w / (2.0 * S));
    X[1] = fabs(phi) * z * ((double)v / S - in->h / (2.0 * S));
    X[2] = z;
}

static sa3d_status stage_keypoints(build *b, const sa3d_image_anno *const *images, const int *flip,
                                   const sa3d_prior_source *src, sa3d_error *err) {
    size_t max_px = 0;
    for (int i = 0; i < b->N; i++) {
        size_t px = (size_t)images[i]->width * (size_t)images[i]->height;
        if (px > max_px) max_px = px;
    }
    float *disp = sa3d_malloc(max_px * sizeof(float));
    uint8_t *m = sa3d_malloc(max_px), *e1 = sa3d_malloc(max_px), *e2 = sa3d_malloc(max_px);
    sa3d_status st = SA3D_OK;
    if (!disp || !m || !e1 || !e2) { st = sa3d_fail(err, SA3D_ERR_NOMEM, "keypoints: out of memory"); goto done; }
    for (int i = 0; i < b->N; i++) {
        const sa3d_image_anno *a = images[i];
        int w = a->width, h = a->height;
        size_t px = (size_t)w * (size_t)h;
        b->zmap[i] = sa3d_malloc(px * sizeof(float));
        b->mask[i] = sa3d_malloc(px);
        if (!b->zmap[i] || !b->mask[i]) { st = sa3d_fail(err, SA3D_ERR_NOMEM, "keypoints: out of memory"); goto done; }
        if ((st = src->maps(src->user, i, disp, b->mask[i], err))) goto done;
        for (size_t q = 0; q < px; q++) b->mask[i][q] = b->mask[i][q] != 0;
        if ((st = sa3d_pseudo_depth_f32(b->zmap[i], disp, h, w, 0, err))) {
            sa3d_error_prefix(err, "image %s: depth", a->id);
            goto done;
        }
        for (int f = 0; f < 2; f++) {
            instance *in = &b->inst[i + f * b->N];
            in->img = i;
            in->flip = f;
            in->w = w;
            in->h = h;
            for (int y = 0; y < h; y++)   /* the instance's mask, mirrored for the mirror copy */
                for (int x = 0; x < w; x++) m[(size_t)y * w + x] = b->mask[i][(size_t)y * w + (f ? w - 1 - x : x)];
            erode2x2(e1, m, w, h);   /* METHOD.md 4.1: 2x2 kernel, 2 iterations */
            erode2x2(e2, e1, w, h);
            for (int k = 0; k < b->n && k < a->n_slots; k++) {
                if (!a->visible[k]) continue;
                int slot = f ? flip[k] : k;   /* the mirror's label goes through the flip map (METHOD.md 1.7) */
                /* SPair pixels lie in [0, W] x [0, H]: x == W occurs, so clamp into the image (docs/PRIOR.md) */
                double x = f ? (double)w - 1.0 - (double)a->kps[k][0] : (double)a->kps[k][0], y = (double)a->kps[k][1];
                int u = (int)floor(x), v = (int)floor(y);
                u = u < 0 ? 0 : u >= w ? w - 1 : u;
                v = v < 0 ? 0 : v >= h ? h - 1 : v;
                in->raw[slot][0] = u;
                in->raw[slot][1] = v;
                /* empty eroded mask: the raw mask; no mask at all: the pixel as annotated (docs/PRIOR.md) */
                if (!snap(&u, &v, e2, w, h)) snap(&u, &v, m, w, h);
                in->snap[slot][0] = u;
                in->snap[slot][1] = v;
                in->vis[slot] = 1;
            }
        }
        if ((st = progress(b, "keypoints", i + 1, b->N, err))) goto done;
    }
done:
    sa3d_free(disp); sa3d_free(m); sa3d_free(e1); sa3d_free(e2);
    return st;
}

/* METHOD.md 3.3 and 4.1.2: focal lengths, flip-averaged, then the lifted keypoints. */
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_sorted(const double *x, int n) { return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]); }

static sa3d_status stage_focal(build *b, double *focal_mean, double *focal_sd, sa3d_error *err) {
    int I = b->I, n = b->n;
    double *hw = sa3d_malloc((size_t)I * 2 * sizeof(double)), *xy = sa3d_malloc((size_t)I * n * 2 * sizeof(double));
    double *z = sa3d_malloc((size_t)I * n * sizeof(double));
    uint8_t *vis = sa3d_malloc((size_t)I * n);
    sa3d_status st = SA3D_OK;
    if (!hw || !xy || !z || !vis) { st = sa3d_fail(err, SA3D_ERR_NOMEM, "focal lengths: out of memory"); goto done; }
    for (int i = 0; i < I; i++) {
        const instance *in = &b->inst[i];
        double S = in->w > in->h ? in->w : in->h;
        hw[2 * i] = in->h;
        hw[2 * i + 1] = in->w;
        for (int k = 0; k < n; k++) {
            size_t o = (size_t)i * n + k;
            vis[o] = in->vis[k];
            xy[2 * o] = in->vis[k] ? in->snap[k][0] / S : 0.0;   /* the authors pass 0 for missing keypoints */
            xy[2 * o + 1] = in->vis[k] ? in->snap[k][1] / S : 0.0;
            z[o] = in->vis[k] ? (double)zat(b, in, in->snap[k][0], in->snap[k][1]) : 0.0;
        }
        b->phi[i] = b->p->focal_init;
    }
    sa3d_focal_opt_params fp = sa3d_focal_opt_params_default();
    fp.n_iter = b->p->focal_iters;
    fp.progress = b->p->progress;
    fp.progress_user = b->p->progress_user;
    if ((st = sa3d_focal_optimize(b->phi, NULL, hw, xy, z, vis, I, n, &fp, err))) {
        sa3d_error_prefix(err, "focal lengths");
        goto done;
    }
    /* METHOD.md 3.3: an image and its mirror share the average (of |phi|: the loss and the lifting use |phi|) */
    double *f = sa3d_malloc((size_t)b->N * sizeof(double));
    if (!f) { st = sa3d_fail(err, SA3D_ERR_NOMEM, "focal lengths: out of memory"); goto done; }
    for (int i = 0; i < b->N; i++) {
        double a = 0.5 * (fabs(b->phi[i]) + fabs(b->phi[i + b->N]));
        if (!(a > 0.0) || !isfinite(a)) {
            sa3d_free(f);
            st = sa3d_fail(err, SA3D_ERR_NUMERIC, "focal lengths: image %d: 1/f = %g after optimisation", i, a);
            goto done;
        }
        b->phi[i] = b->phi[i + b->N] = a;
        f[i] = 1.0 / a;
    }
    /* The category's typical focal length for the aligner's start: the median and 1.4826 x the median absolute
     * deviation, not the mean and sd - an image whose keypoints barely constrain it can drive 1/f to ~0 (f in
     * the millions), and one such image would make the mean meaningless. */
    qsort(f, (size_t)b->N, sizeof *f, cmp_double);
    *focal_mean = median_sorted(f, b->N);
    for (int i = 0; i < b->N; i++) f[i] = fabs(f[i] - *focal_mean);
    qsort(f, (size_t)b->N, sizeof *f, cmp_double);
    *focal_sd = 1.4826 * median_sorted(f, b->N);
    *focal_mean = fmin(*focal_mean, SA3D_PRIOR_MAX_FOCAL);   /* few images, most of them degenerate */
    *focal_sd = fmin(*focal_sd, SA3D_PRIOR_MAX_FOCAL);
    sa3d_free(f);
    for (int i = 0; i < I; i++)
        for (int k = 0; k < n; k++)
            if (b->inst[i].vis[k])
                lift(b->P + ((size_t)i * n + k) * 3, &b->inst[i], b->phi[i], b->inst[i].snap[k][0],
                     b->inst[i].snap[k][1], z[(size_t)i * n + k]);
done:
    sa3d_free(hw); sa3d_free(xy); sa3d_free(z); sa3d_free(vis);
    return st;
}

/* ---- relations, Beta fits, filter (METHOD.md 4.1.3, 4.2, 4.3) ------------------------------------------------------- */

typedef struct fitted {
    size_t n_pairs, n_tets;
    int32_t *e1, *e2, *t, *v;          /* kept relations */
    sa3d_beta_term *R, *A, *cx, *cy, *cz;
    float *mode;                       /* [n_pairs] float32 mode of R */
} fitted;

static void fitted_free(fitted *f) {
    sa3d_free(f->e1); sa3d_free(f->e2); sa3d_free(f->t); sa3d_free(f->v);
    sa3d_free(f->R); sa3d_free(f->A); sa3d_free(f->cx); sa3d_free(f->cy); sa3d_free(f->cz); sa3d_free(f->mode);
    memset(f, 0, sizeof *f);
}

/* Keeps the relations whose vertices are all used slots, in order: the others reach a slot the sparse stage never
 * placed (+inf), so the aligner could not evaluate them (prior.h). Every slot placed keeps them all. */
static void fitted_keep_used(fitted *f, const uint8_t *used) {
    size_t np = 0, nt = 0;
    for (size_t i = 0; i < f->n_pairs; i++) {
        const int32_t *a = f->e1 + 2 * i, *c = f->e2 + 2 * i;
        if (!(used[a[0]] && used[a[1]] && used[c[0]] && used[c[1]])) continue;
        memmove(f->e1 + 2 * np, a, 2 * sizeof(int32_t));
        memmove(f->e2 + 2 * np, c, 2 * sizeof(int32_t));
        f->R[np] = f->R[i];
        f->A[np] = f->A[i];
        f->mode[np] = f->mode[i];
        np++;
    }
    for (size_t i = 0; i < f->n_tets; i++) {
        const int32_t *t = f->t + 3 * i;
        if (!(used[t[0]] && used[t[1]] && used[t[2]] && used[f->v[i]])) continue;
        memmove(f->t + 3 * nt, t, 3 * sizeof(int32_t));
        f->v[nt] = f->v[i];
        f->cx[nt] = f->cx[i];
        f->cy[nt] = f->cy[i];
        f->cz[nt] = f->cz[i];
        nt++;
    }
    f->n_pairs = np;
    f->n_tets = nt;
}

/* A fit that fails (zero variance: no MLE) is left at (1, 1) and so filtered out, for this relation alone
 * (METHOD.md 10.3). */
static void fit(double *ab, const double *x, size_t m, double lo, double hi) {
    sa3d_error e;
    if (sa3d_beta_fit(&ab[0], &ab[1], x, m, lo, hi, &e) != SA3D_OK) ab[0] = ab[1] = 1.0;
}

static int beta_ok(const double *ab) { return ab[0] > 1.0 && ab[1] > 1.0 && isfinite(ab[0]) && isfinite(ab[1]); }

/* Relations fitted between two polls of the progress callback: about 0.5 s at real size (2 x 10^5 in 7 s). */
#define RELATION_CHUNK ((size_t)16384)

/* Edge pair e of rel: its ratio and angle over the samples X where its four vertices are visible, Beta fits into
 * par_p[4e..], kept when both fits hold and the ratio's mode is in range. f1, f2: [M] scratch. */
static void fit_edge_pair(const build *b, const sa3d_geom_relations *rel, size_t e, const double *X, double *f1,
                          double *f2, size_t min_samples, double *par_p, uint8_t *keep_p) {
    int I = b->I, n = b->n, S = b->p->noise_samples;
    const int32_t *a = rel->e1 + 2 * e, *c = rel->e2 + 2 * e;
    size_t m = 0;
    for (int i = 0; i < I; i++) {
        const uint8_t *v = b->inst[i].vis;
        if (!(v[a[0]] && v[a[1]] && v[c[0]] && v[c[1]])) continue;
        for (int s = 0; s < S; s++, m++) {
            const double *x = X + ((size_t)i * S + s) * (size_t)n * 3;
            double va[3], vb[3];
            for (int d = 0; d < 3; d++) {
                va[d] = x[3 * a[0] + d] - x[3 * a[1] + d];
                vb[d] = x[3 * c[0] + d] - x[3 * c[1] + d];
            }
            sa3d_edge_pair_fwd(&f2[m], &f1[m], va, vb);   /* f1 = R, f2 = A */
        }
    }
    if (m < min_samples) return;
    double *pp = par_p + 4 * e;
    fit(pp, f1, m, 0.0, 1.0);
    fit(pp + 2, f2, m, -1.0, 1.0);
    float mode = sa3d_beta_mode_f32((float)pp[0], (float)pp[1]);
    keep_p[e] = beta_ok(pp) && beta_ok(pp + 2) && mode >= RATIO_MODE_LO && mode <= RATIO_MODE_HI;
}

/* Tet relation k of rel likewise: its three frame coordinates, fits into par_t[6k..]. f1..f3: [M] scratch. */
static void fit_tet(const build *b, const sa3d_geom_relations *rel, size_t k, const double *X, double *f1,
                    double *f2, double *f3, size_t min_samples, double *par_t, uint8_t *keep_t) {
    int I = b->I, n = b->n, S = b->p->noise_samples;
    const int32_t *t = rel->t + 3 * k;
    int32_t vv = rel->v[k];
    size_t m = 0;
    for (int i = 0; i < I; i++) {
        const uint8_t *v = b->inst[i].vis;
        if (!(v[t[0]] && v[t[1]] && v[t[2]] && v[vv])) continue;
        for (int s = 0; s < S; s++, m++) {
            const double *x = X + ((size_t)i * S + s) * (size_t)n * 3;
            sa3d_tet_frame fr;
            sa3d_tet_fwd(&fr, &f1[m], &f2[m], &f3[m], x + 3 * t[0], x + 3 * t[1], x + 3 * t[2], x + 3 * vv);
        }
    }
    if (m < min_samples) return;
    double *pt = par_t + 6 * k;
    fit(pt, f1, m, -1.0, 1.0);
    fit(pt + 2, f2, m, -1.0, 1.0);
    fit(pt + 4, f3, m, -1.0, 1.0);
    keep_t[k] = beta_ok(pt) && beta_ok(pt + 2) && beta_ok(pt + 4);
}

static sa3d_status stage_relations(build *b, fitted *out, size_t *n_pairs_all, size_t *n_tets_all, sa3d_error *err) {
    int I = b->I, n = b->n, S = b->p->noise_samples;
    size_t M = (size_t)I * (size_t)S, min_samples = (size_t)b->p->min_sample_imgs * (size_t)S;
    sa3d_geom_relations rel;
    sa3d_status st = sa3d_geom_relations_make(&rel, n, err);
    if (st) return st;
    *n_pairs_all = rel.n_pairs;
    *n_tets_all = rel.n_tets;
    double *X = sa3d_malloc(M * (size_t)n * 3 * sizeof(double));          /* [M][n][3] noisy samples */
    double *par_p = sa3d_malloc((rel.n_pairs + 1) * 4 * sizeof(double));  /* R (a, b), A (a, b) */
    double *par_t = sa3d_malloc((rel.n_tets + 1) * 6 * sizeof(double));
    uint8_t *keep_p = sa3d_calloc(rel.n_pairs + 1, 1), *keep_t = sa3d_calloc(rel.n_tets + 1, 1);
    int fail = 0;
    if (!X || !par_p || !par_t || !keep_p || !keep_t) {
        st = sa3d_fail(err, SA3D_ERR_NOMEM, "relations: out of memory (%zu samples)", M);
        goto done;
    }
    /* METHOD.md 4.1.3: S copies per instance, N(0, (rate d_min)^2) on every coordinate of the visible keypoints */
    for (int i = 0; i < I; i++) {
        const double *P = b->P + (size_t)i * n * 3;
        double dmin = HUGE_VAL;
        for (int k = 0; k < n; k++)
            for (int l = k + 1; l < n; l++)
                if (b->inst[i].vis[k] && b->inst[i].vis[l]) {
                    double d = sqrt((P[3 * k] - P[3 * l]) * (P[3 * k] - P[3 * l]) +
                                    (P[3 * k + 1] - P[3 * l + 1]) * (P[3 * k + 1] - P[3 * l + 1]) +
                                    (P[3 * k + 2] - P[3 * l + 2]) * (P[3 * k + 2] - P[3 * l + 2]));
                    if (d < dmin) dmin = d;
                }
        double sigma = isfinite(dmin) ? b->p->noise_rate * dmin : 0.0;
        for (int s = 0; s < S; s++) {
            sa3d_rng r = sa3d_rng_for(b->p->seed, TAG_NOISE, (uint64_t)i * (uint64_t)S + (uint64_t)s);
            double *x = X + ((size_t)i * S + s) * (size_t)n * 3;
            for (int k = 0; k < n; k++)
                for (int a = 0; a < 3; a++)
                    x[3 * k + a] = b->inst[i].vis[k] ? P[3 * k + a] + sigma * sa3d_rng_normal(&r) : 0.0;
        }
    }
    /* every relation on its own: gather the samples where all its vertices are visible, fit, filter. In chunks,
     * between which the progress callback may cancel (the whole loop takes seconds at real size). */
    size_t total = rel.n_pairs + rel.n_tets;
    for (size_t c0 = 0; c0 < total && !fail; c0 += RELATION_CHUNK) {
        size_t c1 = total - c0 < RELATION_CHUNK ? total : c0 + RELATION_CHUNK;
        #pragma omp parallel
        {
            double *f = sa3d_malloc(3 * (M + 1) * sizeof(double));   /* one relation's samples, 3 features */
            if (!f) {
                #pragma omp atomic write
                fail = 1;
            }
            #pragma omp for schedule(dynamic, 256)
            for (size_t q = c0; q < c1; q++) {
                if (!f) continue;
                if (q < rel.n_pairs) fit_edge_pair(b, &rel, q, X, f, f + M + 1, min_samples, par_p, keep_p);
                else fit_tet(b, &rel, q - rel.n_pairs, X, f, f + M + 1, f + 2 * (M + 1), min_samples, par_t, keep_t);
            }
            sa3d_free(f);
        }
        if (!fail && (st = progress(b, "relations", (long)c1, (long)total, err))) goto done;
    }
    if (fail) { st = sa3d_fail(err, SA3D_ERR_NOMEM, "relations: out of memory"); goto done; }
    /* kept relations in index order. A kept relation has >= 40 samples, so each of its ids is annotated somewhere:
     * remove_unused_keypoints has nothing left to drop. */
    size_t np = 0, nt = 0;
    for (size_t e = 0; e < rel.n_pairs; e++) np += keep_p[e];
    for (size_t k = 0; k < rel.n_tets; k++) nt += keep_t[k];
    out->e1 = sa3d_malloc((np + 1) * 2 * sizeof(int32_t));
    out->e2 = sa3d_malloc((np + 1) * 2 * sizeof(int32_t));
    out->R = sa3d_malloc((np + 1) * sizeof(sa3d_beta_term));
    out->A = sa3d_malloc((np + 1) * sizeof(sa3d_beta_term));
    out->mode = sa3d_malloc((np + 1) * sizeof(float));
    out->t = sa3d_malloc((nt + 1) * 3 * sizeof(int32_t));
    out->v = sa3d_malloc((nt + 1) * sizeof(int32_t));
    out->cx = sa3d_malloc((nt + 1) * sizeof(sa3d_beta_term));
    out->cy = sa3d_malloc((nt + 1) * sizeof(sa3d_beta_term));
    out->cz = sa3d_malloc((nt + 1) * sizeof(sa3d_beta_term));
    if (!out->e1 || !out->e2 || !out->R || !out->A || !out->mode || !out->t || !out->v || !out->cx || !out->cy ||
        !out->cz) {
        st = sa3d_fail(err, SA3D_ERR_NOMEM, "relations: out of memory");
        goto done;
    }
    for (size_t e = 0; e < rel.n_pairs; e++) {
        if (!keep_p[e]) continue;
        size_t o = out->n_pairs++;
        memcpy(out->e1 + 2 * o, rel.e1 + 2 * e, 2 * sizeof(int32_t));
        memcpy(out->e2 + 2 * o, rel.e2 + 2 * e, 2 * sizeof(int32_t));
        out->R[o] = sa3d_beta_term_make(par_p[4 * e], par_p[4 * e + 1]);
        out->A[o] = sa3d_beta_term_make(par_p[4 * e + 2], par_p[4 * e + 3]);
        out->mode[o] = sa3d_beta_mode_f32((float)par_p[4 * e], (float)par_p[4 * e + 1]);
    }
    for (size_t k = 0; k < rel.n_tets; k++) {
        if (!keep_t[k]) continue;
        size_t o = out->n_tets++;
        memcpy(out->t + 3 * o, rel.t + 3 * k, 3 * sizeof(int32_t));
        out->v[o] = rel.v[k];
        out->cx[o] = sa3d_beta_term_make(par_t[6 * k], par_t[6 * k + 1]);
        out->cy[o] = sa3d_beta_term_make(par_t[6 * k + 2], par_t[6 * k + 3]);
        out->cz[o] = sa3d_beta_term_make(par_t[6 * k + 4], par_t[6 * k + 5]);
    }
done:
    sa3d_geom_relations_free(&rel);
    sa3d_free(X); sa3d_free(par_p); sa3d_free(par_t); sa3d_free(keep_p); sa3d_free(keep_t);
    return st;
}

/* ---- dense: per-instance warp and features (METHOD.md 4.5.5, 4.6 a) ------------------------------------------------- */

typedef struct merged {
    size_t n, cap;
    double *xyz;     /* [cap][3] canonical positions */
    float *feat;     /* [cap][C] */
    float *kfeat;    /* [I][n][C] features at the keypoint cells */
} merged;

/* The 60x60 cell of pixel (u, v) of an instance: sa3d_pixel_to_cell for keypoints and dense points alike
 * (METHOD.md 10.8). */
static const float *cell_feat(const build *b, const float *F, const instance *in, int u, int v, float *tmp) {
    int32_t px[2] = { u, v }, cell[2];
    sa3d_pixel_to_cell(cell, px, 1, in->h, in->w, b->g);
    size_t gg = (size_t)b->g * (size_t)b->g, off = (size_t)cell[1] * (size_t)b->g + (size_t)cell[0];
    for (int c = 0; c < b->C; c++) tmp[c] = F[(size_t)c * gg + off];
    return tmp;
}

static sa3d_status warp_instance(build *b, merged *mg, const instance *in, const float *F, const double *info_c,
                                 size_t Tc, double *scratch, sa3d_error *err) {
    const sa3d_prior_build_params *p = b->p;
    int n = b->n, w = in->w, h = in->h;
    /* anchors: visible and placed slots; image side at the raw keypoint pixel (METHOD.md 4.6 a.2) */
    int ids[SA3D_PRIOR_MAX_SLOTS], kv = 0;
    for (int k = 0; k < n; k++)
        if (in->vis[k] && b->used[k]) ids[kv++] = k;
    if (kv < 4) return SA3D_OK;   /* METHOD.md 4.6 a: fewer than 4 anchors, no tetrahedron */
    double Q[SA3D_PRIOR_MAX_SLOTS * 3], Y[SA3D_PRIOR_MAX_SLOTS * 3];
    double phi = b->phi[in->img + in->flip * b->N];
    for (int j = 0; j < kv; j++) {
        int u = in->raw[ids[j]][0], v = in->raw[ids[j]][1];
        lift(Q + 3 * j, in, phi, u, v, (double)zat(b, in, u, v));
        memcpy(Y + 3 * j, b->anchors + 3 * ids[j], 3 * sizeof(double));
    }
    size_t T = sa3d_tet_count(kv);
    int32_t *tets = sa3d_malloc(T * 4 * sizeof(int32_t));
    double *info = sa3d_malloc(T * SA3D_TET_INFO * sizeof(double));
    size_t np = 0;
    for (size_t q = 0; q < (size_t)w * h; q++) np += b->mask[in->img][q];
    uint32_t *order = sa3d_malloc((np + 1) * sizeof(uint32_t));
    sa3d_status st = SA3D_OK;
    if (!tets || !info || !order) { st = sa3d_fail(err, SA3D_ERR_NOMEM, "dense warp: out of memory"); goto done; }
    sa3d_tets_generate(tets, kv);
    sa3d_tet_prepare(info, Q, tets, T);
    np = 0;
    for (int y = 0; y < h; y++)   /* mask pixels of the instance, row-major in its own frame */
        for (int x = 0; x < w; x++)
            if (b->mask[in->img][(size_t)y * w + (in->flip ? w - 1 - x : x)])
                order[np++] = (uint32_t)((size_t)y * (size_t)w + (size_t)x);
    /* A uniform random subset of at most dense_max_src pixels, visited in random order, keeping the first
     * dense_max_pts that survive: the same distribution as the authors' 10,000-pixel sample, warp, hull filter,
     * then a random 1,000 of the survivors, without warping pixels that would be thrown away (docs/PRIOR.md). */
    sa3d_rng r = sa3d_rng_for(p->seed, TAG_PIXELS, (uint64_t)(in->img + in->flip * b->N));
    size_t limit = np < (size_t)p->dense_max_src ? np : (size_t)p->dense_max_src, done_px = 0, kept = 0;
    double *pts = scratch, *out = scratch + 3 * WARP_BLOCK;
    uint8_t cov[WARP_BLOCK], hull[WARP_BLOCK];
    int32_t src_px[WARP_BLOCK][2];
    float *ftmp = (float *)(scratch + 6 * WARP_BLOCK);
    while (done_px < limit && kept < (size_t)p->dense_max_pts) {
        size_t m = limit - done_px < WARP_BLOCK ? limit - done_px : WARP_BLOCK;
        for (size_t j = 0; j < m; j++) {   /* partial Fisher-Yates: the next random pixel */
            size_t q = done_px + j, pick = q + (size_t)(sa3d_rng_uniform(&r) * (double)(np - q));
            if (pick >= np) pick = np - 1;
            uint32_t t = order[q]; order[q] = order[pick]; order[pick] = t;
            int u = (int)(order[q] % (uint32_t)w), v = (int)(order[q] / (uint32_t)w);
            src_px[j][0] = u;
            src_px[j][1] = v;
            lift(pts + 3 * j, in, phi, u, v, (double)zat(b, in, u, v));
        }
        sa3d_tet_warp(out, cov, pts, m, info, Y, tets, T, SA3D_TET_THRESH);
        sa3d_tet_in_hull(hull, out, m, info_c, Tc, SA3D_TET_THRESH);
        for (size_t j = 0; j < m && kept < (size_t)p->dense_max_pts; j++) {
            if (!cov[j] || !hull[j]) continue;   /* uncovered points are dropped, not sent to the origin (10.2) */
            memcpy(mg->xyz + 3 * mg->n, out + 3 * j, 3 * sizeof(double));
            memcpy(mg->feat + mg->n * (size_t)b->C, cell_feat(b, F, in, src_px[j][0], src_px[j][1], ftmp),
                   (size_t)b->C * sizeof(float));
            mg->n++;
            kept++;
        }
        done_px += m;
    }
done:
    sa3d_free(tets); sa3d_free(info); sa3d_free(order);
    return st;
}

static sa3d_status stage_dense(build *b, merged *mg, const sa3d_prior_source *src, sa3d_error *err) {
    int n = b->n, I = b->I, C = b->C;
    size_t gg = (size_t)b->g * (size_t)b->g;
    int ids[SA3D_PRIOR_MAX_SLOTS], nu = 0;
    for (int k = 0; k < n; k++)
        if (b->used[k]) ids[nu++] = k;
    size_t Tc = sa3d_tet_count(nu);
    int32_t *tc = sa3d_malloc((Tc + 1) * 4 * sizeof(int32_t));
    double *info_c = sa3d_malloc((Tc + 1) * SA3D_TET_INFO * sizeof(double)), Yu[SA3D_PRIOR_MAX_SLOTS * 3];
    float *F = sa3d_malloc(gg * (size_t)C * sizeof(float));
    double *scratch = sa3d_malloc((6 * WARP_BLOCK + (size_t)C) * sizeof(double));
    mg->cap = (size_t)I * (size_t)b->p->dense_max_pts;
    mg->xyz = sa3d_malloc((mg->cap + 1) * 3 * sizeof(double));
    mg->feat = sa3d_malloc((mg->cap + 1) * (size_t)C * sizeof(float));
    mg->kfeat = sa3d_calloc((size_t)I * n * (size_t)C, sizeof(float));
    sa3d_status st = SA3D_OK;
    if (!tc || !info_c || !F || !scratch || !mg->xyz || !mg->feat || !mg->kfeat) {
        st = sa3d_fail(err, SA3D_ERR_NOMEM, "dense cloud: out of memory (%zu points of %d channels)", mg->cap, C);
        goto done;
    }
    for (int j = 0; j < nu; j++) memcpy(Yu + 3 * j, b->anchors + 3 * ids[j], 3 * sizeof(double));
    sa3d_tets_generate(tc, nu);
    sa3d_tet_prepare(info_c, Yu, tc, Tc);   /* the canonical hull: tetrahedra of the placed anchors (4.6 a.8) */
    for (int i = 0; i < I; i++) {
        const instance *in = &b->inst[i];
        if ((st = src->features(src->user, in->img, in->flip, F, err))) goto done;
        long q = sa3d_first_nonfinite(F, gg * (size_t)C);   /* as depth is checked: a NaN voids every statistic */
        if (q >= 0) {
            st = sa3d_fail(err, SA3D_ERR_NUMERIC, "image %s%s: feature map: value %ld (channel %ld) is not finite",
                           b->images[in->img]->id, in->flip ? " (mirrored)" : "", q, q / (long)gg);
            goto done;
        }
        for (int k = 0; k < n; k++)   /* keypoint features at the raw keypoint cell (4.5 step 5) */
            if (in->vis[k])
                cell_feat(b, F, in, in->raw[k][0], in->raw[k][1], mg->kfeat + ((size_t)i * n + k) * (size_t)C);
        if (nu >= 4 && (st = warp_instance(b, mg, in, F, info_c, Tc, scratch, err))) goto done;
        if ((st = progress(b, "dense warp", i + 1, I, err))) goto done;
    }
done:
    sa3d_free(tc); sa3d_free(info_c); sa3d_free(F); sa3d_free(scratch);
    return st;
}

/* METHOD.md 4.5 step 5: per slot, the normalised mean keypoint feature and the cosine statistics. */
static sa3d_status keypoint_features(sa3d_prior *pr, const build *b, const merged *mg, sa3d_error *err) {
    int n = b->n, C = b->C;
    double *acc = sa3d_calloc((size_t)C, sizeof(double));
    if (!acc) return sa3d_fail(err, SA3D_ERR_NOMEM, "keypoint features: out of memory");
    for (int k = 0; k < n; k++) {
        float *mu = pr->anchor_feat + (size_t)k * C;
        int cnt = 0;
        memset(acc, 0, (size_t)C * sizeof(double));
        for (int i = 0; i < b->I; i++)
            if (b->inst[i].vis[k]) {
                const float *f = mg->kfeat + ((size_t)i * n + k) * (size_t)C;
                for (int c = 0; c < C; c++) acc[c] += (double)f[c];
                cnt++;
            }
        double nrm = 0.0;
        for (int c = 0; c < C; c++) nrm += acc[c] * acc[c];
        nrm = sqrt(nrm);
        if (cnt == 0 || !(nrm > 0.0)) {   /* missing label: the zero vector, 0.5, 0.01 */
            memset(mu, 0, (size_t)C * sizeof(float));
            pr->anchor_attn_mean[k] = 0.5f;
            pr->anchor_attn_sd[k] = 0.01f;
            continue;
        }
        for (int c = 0; c < C; c++) mu[c] = (float)(acc[c] / nrm);
        double s = 0.0, s2 = 0.0;
        for (int i = 0; i < b->I; i++)
            if (b->inst[i].vis[k]) {
                const float *f = mg->kfeat + ((size_t)i * n + k) * (size_t)C;
                double dot = 0.0, ff = 0.0;
                for (int c = 0; c < C; c++) {
                    dot += (double)mu[c] * (double)f[c];
                    ff += (double)f[c] * (double)f[c];
                }
                double a = ff > 0.0 ? dot / sqrt(ff) : 0.0;
                s += a;
                s2 += a * a;
            }
        double m = s / cnt;
        pr->anchor_attn_mean[k] = (float)m;
        /* unbiased sd; one sample has none (torch gives NaN): the missing-label 0.01 (docs/PRIOR.md) */
        pr->anchor_attn_sd[k] = cnt > 1 ? (float)sqrt(fmax(0.0, (s2 - s * m) / (cnt - 1))) : 0.01f;
    }
    sa3d_free(acc);
    return SA3D_OK;
}

/* ---- the whole build ----------------------------------------------------------------------------------------------- */

sa3d_status sa3d_prior_build_params_check(const sa3d_prior_build_params *p, sa3d_error *err) {
    struct { const char *name; long v, lo, hi; } iv[] = {
        { "feat_channels", p->feat_channels, 1, 65536 }, { "feat_grid", p->feat_grid, 1, 1024 },
        { "focal_iters", p->focal_iters, 0, 10000000 }, { "noise_samples", p->noise_samples, 1, 1000 },
        { "min_sample_imgs", p->min_sample_imgs, 1, 100000 },
        { "cube_n", p->cube_n, SA3D_PRIOR_MIN_GRID, SA3D_PRIOR_MAX_GRID },
        { "n_max_comb", p->n_max_comb, 1, 1000000 },
        { "grid_exhaustive", p->grid_exhaustive, 0, 1 }, { "refine_iters", p->refine_iters, 0, 100000000 },
        { "dense_max_src", p->dense_max_src, 1, 100000000 }, { "dense_max_pts", p->dense_max_pts, 1, 100000000 },
        { "kmeans_k", p->kmeans_k, 1, 1000000 }, { "kmeans_iters", p->kmeans_iters, 0, 1000000 },
        { "knn", p->knn, 1, 100000000 }, { "n_threads", p->n_threads, 0, 4096 } };
    for (size_t i = 0; i < sizeof iv / sizeof iv[0]; i++)
        if (iv[i].v < iv[i].lo || iv[i].v > iv[i].hi)
            return sa3d_fail(err, SA3D_ERR_ARG, "prior build: %s = %ld; expected %ld to %ld", iv[i].name, iv[i].v,
                             iv[i].lo, iv[i].hi);
    /* reals: lo < v (lo_open) or lo <= v, v <= hi (hi_open: v < hi); NaN fails every comparison */
    struct { const char *name; double v, lo, hi; int lo_open, hi_open; } rv[] = {
        { "focal_init", p->focal_init, 0.0, 1e6, 1, 0 }, { "noise_rate", p->noise_rate, 0.0, 10.0, 0, 0 },
        { "cube_size", p->cube_size, 0.0, 1e6, 1, 0 }, { "refine_lr", p->refine_lr, 0.0, 1e3, 1, 0 },
        { "refine_wd", p->refine_wd, 0.0, 1e3, 0, 0 }, { "refine_tol", p->refine_tol, 0.0, 1e6, 0, 0 },
        { "kmeans_tol", p->kmeans_tol, 0.0, 1e6, 0, 0 },
        { "cutoff", p->cutoff, 0.0, 1.0, 0, 1 } };   /* a share of the merged points: 1 would keep none */
    for (size_t i = 0; i < sizeof rv / sizeof rv[0]; i++) {
        double v = rv[i].v, lo = rv[i].lo, hi = rv[i].hi;
        if (!((rv[i].lo_open ? v > lo : v >= lo) && (rv[i].hi_open ? v < hi : v <= hi)))
            return sa3d_fail(err, SA3D_ERR_ARG, "prior build: %s = %g; expected %s%g, %g%s", rv[i].name, v,
                             rv[i].lo_open ? "(" : "[", lo, hi, rv[i].hi_open ? ")" : "]");
    }
    return SA3D_OK;
}

sa3d_status sa3d_prior_build(sa3d_prior **out, const char *category, int n_slots, const int *flip,
                             const sa3d_image_anno *const *images, int n_images, const sa3d_prior_source *src,
                             const sa3d_prior_build_params *p, sa3d_prior_build_report *report, sa3d_error *err) {
    if (!out) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_prior_build: out is NULL");
    *out = NULL;
    sa3d_prior_build_report rep_local;
    sa3d_prior_build_report *rep = report ? report : &rep_local;
    memset(rep, 0, sizeof *rep);
    static const char *names[SA3D_PRIOR_N_STAGES] = { "keypoints", "focal", "relations", "sparse", "dense warp",
                                                      "cluster" };
    for (int s = 0; s < SA3D_PRIOR_N_STAGES; s++) rep->stage_name[s] = names[s];
    if (!category || !flip || !images || !src || !src->maps || !src->features || !p)
        return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_prior_build: a required argument is NULL");
    if (!sa3d_prior_category_ok(category))
        return sa3d_fail(err, SA3D_ERR_ARG, "prior build: category name '%s': expected 1 to %zu printable ASCII "
                         "characters without '\"', '\\' or '/'", category, sizeof(((sa3d_prior *)0)->category) - 1);
    if (n_slots < 4 || n_slots > SA3D_PRIOR_MAX_SLOTS || n_slots > SA3D_MAX_KPS)
        return sa3d_fail(err, SA3D_ERR_ARG, "prior build: %s: %d keypoint slots; expected 4 to %d", category, n_slots,
                         SA3D_PRIOR_MAX_SLOTS);
    if (n_images < 2)
        return sa3d_fail(err, SA3D_ERR_ARG, "prior build: %s: %d training images; expected at least 2", category,
                         n_images);
    sa3d_status st = sa3d_prior_build_params_check(p, err);
    if (st) return st;
    for (int k = 0; k < n_slots; k++)
        if (flip[k] < 0 || flip[k] >= n_slots || flip[flip[k]] != k)
            return sa3d_fail(err, SA3D_ERR_ARG, "prior build: %s: flip map entry %d -> %d is not an involution on "
                             "[0, %d)", category, k, flip[k], n_slots);
    for (int i = 0; i < n_images; i++) {
        const sa3d_image_anno *a = images[i];
        /* pixel indices are 32-bit (the dense stage's sampling order) */
        if (!a || a->width < 1 || a->height < 1 || a->width > 100000 || a->height > 100000 ||
            (int64_t)a->width * a->height > INT32_MAX)
            return sa3d_fail(err, SA3D_ERR_ARG, "prior build: image %d (%s): bad size", i, a ? a->id : "NULL");
        for (int k = 0; k < a->n_slots && k < n_slots; k++)
            if (a->visible[k] && (!(a->kps[k][0] >= 0.0f && a->kps[k][0] <= (float)a->width) ||
                                  !(a->kps[k][1] >= 0.0f && a->kps[k][1] <= (float)a->height)))
                return sa3d_fail(err, SA3D_ERR_ARG, "prior build: image %s: keypoint %d outside the image", a->id, k);
    }
    sa3d_set_threads(p->n_threads);

    build b;
    memset(&b, 0, sizeof b);
    b.p = p;
    b.images = images;
    b.n = n_slots;
    b.N = n_images;
    b.I = 2 * n_images;
    b.C = p->feat_channels;
    b.g = p->feat_grid;
    fitted fr;
    memset(&fr, 0, sizeof fr);
    merged mg;
    memset(&mg, 0, sizeof mg);
    sa3d_prior *pr = NULL;
    double *centres = NULL, *info = NULL;
    int32_t *assign = NULL, *tets = NULL;
    float *cfeat = NULL, *cmean = NULL, *csd = NULL, *crig = NULL;
    uint8_t *chull = NULL;
    b.inst = sa3d_calloc((size_t)b.I, sizeof(instance));
    b.zmap = sa3d_calloc((size_t)b.N, sizeof(float *));
    b.mask = sa3d_calloc((size_t)b.N, sizeof(uint8_t *));
    b.phi = sa3d_malloc((size_t)b.I * sizeof(double));
    b.P = sa3d_calloc((size_t)b.I * n_slots * 3, sizeof(double));
    if (!b.inst || !b.zmap || !b.mask || !b.phi || !b.P) { st = sa3d_fail(err, SA3D_ERR_NOMEM, "out of memory"); goto fail; }
    rep->n_instances = b.I;

    double t0 = sa3d_now(), focal_mean = 0.0, focal_sd = 0.0;
    if ((st = stage_keypoints(&b, images, flip, src, err))) goto fail;
    double t1 = sa3d_now();
    rep->stage_s[0] = t1 - t0;
    if ((st = progress(&b, "focal", 0, 1, err))) goto fail;
    if ((st = stage_focal(&b, &focal_mean, &focal_sd, err))) goto fail;
    double t2 = sa3d_now();
    rep->stage_s[1] = t2 - t1;
    if ((st = progress(&b, "relations", 0, 1, err))) goto fail;
    if ((st = stage_relations(&b, &fr, &rep->n_pairs_all, &rep->n_tets_all, err))) goto fail;
    double t3 = sa3d_now();
    rep->stage_s[2] = t3 - t2;
    if ((st = progress(&b, "sparse", 0, 1, err))) goto fail;
    sa3d_geom_terms g = { fr.n_pairs, fr.e1, fr.e2, fr.R, fr.A, fr.n_tets, fr.t, fr.v, fr.cx, fr.cy, fr.cz };
    sa3d_sparse_params sp = sa3d_sparse_params_default();
    sp.cube_size = p->cube_size;
    sp.cube_n = p->cube_n;
    sp.n_max_comb = p->n_max_comb;
    sp.grid_exhaustive = p->grid_exhaustive;
    sp.refine_iters = p->refine_iters;
    sp.refine_tol = p->refine_tol;
    sp.adam.lr = p->refine_lr;
    sp.adam.weight_decay = p->refine_wd;
    sp.progress = p->progress;
    sp.progress_user = p->progress_user;
    sa3d_sparse_trace trace;
    if ((st = sa3d_prior_sparse(b.anchors, &g, fr.mode, b.n, &sp, &trace, err))) goto fail;
    rep->grid_screened = rep->grid_total = 0;
    for (int s = 0; s < trace.n_order; s++) {
        rep->grid_screened += trace.n_screened[s];
        rep->grid_total += (long)p->cube_n * p->cube_n * p->cube_n;
    }
    int nu = 0;
    for (int k = 0; k < b.n; k++) {
        b.used[k] = isfinite(b.anchors[3 * k]);
        nu += b.used[k];
    }
    /* step 4 over the relations among placed slots: a slot the order never reached stays at +inf (METHOD.md
     * 4.5.4), and a relation through it would make L_geom NaN. With every slot placed they are all kept. */
    fitted_keep_used(&fr, b.used);
    rep->refine_energy[0] = rep->refine_energy[1] = 0.0;
    rep->refine_steps = 0;
    if (p->refine_iters > 0) {
        sa3d_geom_terms among = { fr.n_pairs, fr.e1, fr.e2, fr.R, fr.A, fr.n_tets, fr.t, fr.v, fr.cx, fr.cy, fr.cz };
        if ((st = sa3d_prior_refine(b.anchors, b.used, b.n, &among, &sp, &rep->refine_energy[0], &rep->refine_energy[1],
                                    &rep->refine_steps, err)))
            goto fail;
    }
    double t4 = sa3d_now();
    rep->stage_s[3] = t4 - t3;
    if ((st = stage_dense(&b, &mg, src, err))) goto fail;
    double t5 = sa3d_now();
    rep->stage_s[4] = t5 - t4;
    rep->n_merged = mg.n;
    if (mg.n == 0) {   /* the dense cloud would be the bare anchors, with no features: a prior in name only */
        st = sa3d_fail(err, SA3D_ERR_NUMERIC, "prior build: %s: no dense points: %s", category,
                       nu < 4 ? "fewer than 4 keypoint slots were placed (METHOD.md 4.6 a warps by tetrahedra of them)"
                              : "no training instance has 4 visible placed keypoints and object pixels in its mask");
        goto fail;
    }

    /* METHOD.md 4.6 b: k-means, anchors appended, statistics, rig, hull filter, weight cutoff */
    int k = (size_t)p->kmeans_k < mg.n ? p->kmeans_k : (int)mg.n;
    int m = k + nu;
    centres = sa3d_malloc(((size_t)m + 1) * 3 * sizeof(double));
    assign = sa3d_malloc((mg.n + 1) * sizeof(int32_t));
    cfeat = sa3d_malloc(((size_t)m + 1) * (size_t)b.C * sizeof(float));
    cmean = sa3d_malloc(((size_t)m + 1) * sizeof(float));
    csd = sa3d_malloc(((size_t)m + 1) * sizeof(float));
    crig = sa3d_calloc(((size_t)m + 1) * (size_t)b.n, sizeof(float));
    chull = sa3d_calloc((size_t)m + 1, 1);
    size_t Tc = sa3d_tet_count(nu);
    tets = sa3d_malloc((Tc + 1) * 4 * sizeof(int32_t));
    info = sa3d_malloc((Tc + 1) * SA3D_TET_INFO * sizeof(double));
    if (!centres || !assign || !cfeat || !cmean || !csd || !crig || !chull || !tets || !info) {
        st = sa3d_fail(err, SA3D_ERR_NOMEM, "clustering: out of memory");
        goto fail;
    }
    if ((st = progress(&b, "cluster", 0, 2, err))) goto fail;
    rep->kmeans_iters = sa3d_kmeans(centres, assign, mg.xyz, mg.n, k, p->seed, p->kmeans_iters, p->kmeans_tol, err);
    if (rep->kmeans_iters < 0) { st = err ? err->code : SA3D_ERR_NOMEM; goto fail; }
    if ((st = progress(&b, "cluster", 1, 2, err))) goto fail;
    int ids[SA3D_PRIOR_MAX_SLOTS], j = 0;
    for (int s = 0; s < b.n; s++)
        if (b.used[s]) {
            ids[j] = s;
            memcpy(centres + 3 * (size_t)(k + j), b.anchors + 3 * s, 3 * sizeof(double));
            j++;
        }
    if ((st = sa3d_dense_stats(cfeat, cmean, csd, centres, m, mg.xyz, mg.feat, mg.n, b.C, p->knn, err)))
        goto fail;
    /* the rig over the canonical tetrahedra of the used slots (tets hold slot ids) */
    {
        double Yu[SA3D_PRIOR_MAX_SLOTS * 3];
        for (int q = 0; q < nu; q++) memcpy(Yu + 3 * q, b.anchors + 3 * ids[q], 3 * sizeof(double));
        sa3d_tets_generate(tets, nu);
        sa3d_tet_prepare(info, Yu, tets, Tc);
        for (size_t t = 0; t < 4 * Tc; t++) tets[t] = ids[tets[t]];
    }
    if ((st = sa3d_dense_rig(crig, chull, centres, k, info, tets, Tc, b.n, err))) goto fail;
    double *cnt = sa3d_calloc((size_t)k + 1, sizeof(double));
    if (!cnt) { st = sa3d_fail(err, SA3D_ERR_NOMEM, "clustering: out of memory"); goto fail; }
    for (size_t i = 0; i < mg.n; i++) cnt[assign[i]] += 1.0;
    int n_keep = 0;
    for (int c = 0; c < k; c++) {   /* weight = share of the merged points; keep inside the hull, above cutoff */
        cnt[c] /= (double)mg.n;
        chull[c] = chull[c] && (float)cnt[c] > (float)p->cutoff;
        n_keep += chull[c];
    }
    rep->n_centres_kept = n_keep;
    if (n_keep == 0) {   /* as with no merged point: the anchors alone would be the dense cloud */
        sa3d_free(cnt);
        st = sa3d_fail(err, SA3D_ERR_NUMERIC, "prior build: %s: no dense points: none of the %d cluster centres has a "
                       "weight above the cutoff %g inside the hull (kmeans_k too large for %zu merged points?)",
                       category, k, p->cutoff, mg.n);
        goto fail;
    }
    st = sa3d_prior_alloc(&pr, b.n, b.C, fr.n_pairs, fr.n_tets, n_keep + nu, err);
    if (st) { sa3d_free(cnt); goto fail; }
    snprintf(pr->category, sizeof pr->category, "%s", category);
    pr->seed = p->seed;
    pr->n_used = nu;
    pr->focal_mean = focal_mean;
    pr->focal_sd = focal_sd;
    for (int q = 0; q < nu; q++) pr->used[q] = ids[q];
    if (!(pr->slot_flip = sa3d_malloc((size_t)b.n * sizeof(int32_t)))) {
        sa3d_free(cnt);
        st = sa3d_fail(err, SA3D_ERR_NOMEM, "prior build: out of memory");
        goto fail;
    }
    for (int s = 0; s < b.n; s++) pr->slot_flip[s] = flip[s];   /* the aligner's mirror term pairs anchors by it */
    memcpy(pr->anchors, b.anchors, (size_t)b.n * 3 * sizeof(double));
    if ((st = keypoint_features(pr, &b, &mg, err))) { sa3d_free(cnt); goto fail; }
    for (size_t e = 0; e < fr.n_pairs; e++) {
        memcpy(pr->pair_e1 + 2 * e, fr.e1 + 2 * e, 2 * sizeof(int32_t));
        memcpy(pr->pair_e2 + 2 * e, fr.e2 + 2 * e, 2 * sizeof(int32_t));
        pr->pair_ratio[2 * e] = fr.R[e].alpha; pr->pair_ratio[2 * e + 1] = fr.R[e].beta;
        pr->pair_cos[2 * e] = fr.A[e].alpha; pr->pair_cos[2 * e + 1] = fr.A[e].beta;
    }
    for (size_t t = 0; t < fr.n_tets; t++) {
        memcpy(pr->tet_t + 3 * t, fr.t + 3 * t, 3 * sizeof(int32_t));
        pr->tet_v[t] = fr.v[t];
        pr->tet_cx[2 * t] = fr.cx[t].alpha; pr->tet_cx[2 * t + 1] = fr.cx[t].beta;
        pr->tet_cy[2 * t] = fr.cy[t].alpha; pr->tet_cy[2 * t + 1] = fr.cy[t].beta;
        pr->tet_cz[2 * t] = fr.cz[t].alpha; pr->tet_cz[2 * t + 1] = fr.cz[t].beta;
    }
    int d = 0;
    for (int c = 0; c < m; c++) {
        int anchor = c >= k;
        if (!anchor && !chull[c]) continue;
        float *row = pr->rig + (size_t)d * b.n;
        if (anchor) row[ids[c - k]] = 1.0f;   /* an appended anchor moves with its own slot */
        else memcpy(row, crig + (size_t)c * b.n, (size_t)b.n * sizeof(float));
        for (int a = 0; a < 3; a++) {   /* dense_xyz = rig . anchors (prior.h) */
            double x = 0.0;
            for (int s = 0; s < b.n; s++)
                if (row[s] != 0.0f) x += (double)row[s] * b.anchors[3 * s + a];
            pr->dense_xyz[3 * d + a] = (float)x;
        }
        memcpy(pr->dense_feat + (size_t)d * b.C, cfeat + (size_t)c * b.C, (size_t)b.C * sizeof(float));
        pr->dense_attn_mean[d] = cmean[c];
        pr->dense_attn_sd[d] = csd[c];
        pr->dense_weight[d] = anchor ? 1.0f : (float)cnt[c];
        pr->dense_anchor[d] = anchor ? ids[c - k] : -1;
        d++;
    }
    sa3d_free(cnt);
    char label[160];
    snprintf(label, sizeof label, "prior build: %s: the built prior", category);
    if ((st = sa3d_prior_check_values(pr, label, err))) goto fail;
    rep->stage_s[5] = sa3d_now() - t5;
    (void)progress(&b, "done", 1, 1, NULL);
    *out = pr;
    pr = NULL;
    st = SA3D_OK;
fail:
    sa3d_prior_free(pr);
    fitted_free(&fr);
    for (int i = 0; b.zmap && i < b.N; i++) sa3d_free(b.zmap[i]);
    for (int i = 0; b.mask && i < b.N; i++) sa3d_free(b.mask[i]);
    sa3d_free(b.zmap); sa3d_free(b.mask); sa3d_free(b.inst); sa3d_free(b.phi); sa3d_free(b.P);
    sa3d_free(mg.xyz); sa3d_free(mg.feat); sa3d_free(mg.kfeat);
    sa3d_free(centres); sa3d_free(assign); sa3d_free(cfeat); sa3d_free(cmean); sa3d_free(csd); sa3d_free(crig);
    sa3d_free(chull); sa3d_free(tets); sa3d_free(info);
    return st;
}
