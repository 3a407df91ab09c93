/* TEST HELPER (tests/test_align.c, test_align_cuda.c, bench/bench_align.c), not library code: a synthetic
 * category with a known 3D shape, a renderer of its features into a g x g map with a known pose and focal length,
 * and the tests' scenes (a rendering and its mirror).
 *
 * The prior is the library's own (sa3d_prior_alloc; release it with sa3d_prior_free). */
#ifndef SA3D_ALIGN_SYNTH_H
#define SA3D_ALIGN_SYNTH_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "geom/geom.h"
#include "semalign3d/align.h"
#include "semalign3d/prior.h"

static uint64_t synth_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double synth_unif(uint64_t *s) { return (double)(synth_next(s) >> 11) * (1.0 / 9007199254740992.0); }
static double synth_gauss(uint64_t *s) {
    double u = synth_unif(s), v = synth_unif(s);
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}
static void synth_unit(float *f, int C, uint64_t *s) {
    double n2 = 0.0;
    for (int c = 0; c < C; c++) { f[c] = (float)synth_gauss(s); n2 += (double)f[c] * (double)f[c]; }
    float inv = (float)(1.0 / sqrt(n2));
    for (int c = 0; c < C; c++) f[c] *= inv;
}

/* The shape: a car-like box, 12 slots; slot 5 is unused (+inf, no rig column). Slots (0,1), (2,3), (6,7) and
 * (8,9) are left/right mirror pairs (x -> -x; the prior's slot_flip); with mirror_feat they share one feature,
 * so that the baseline cannot tell them apart. n_dense_extra cluster points are random convex combinations of 4
 * used anchors; the used anchors are appended last (METHOD.md 4.6). Relations: all pairs and tets of the used
 * anchors, with Beta (1 + k t, 1 + k (1 - t)) peaked at the true value t. */
#define SYNTH_SLOTS 12
static const double synth_shape[SYNTH_SLOTS][3] = {
    { -0.15, 0.08, 0.30 },  { 0.15, 0.08, 0.30 },   /* 0,1 front bottom L/R */
    { -0.15, -0.06, 0.22 }, { 0.15, -0.06, 0.22 },  /* 2,3 front top L/R */
    { 0.0, -0.16, 0.0 },    { 0.0, 0.0, 0.0 },      /* 4 roof centre, 5 unused */
    { -0.15, 0.08, -0.30 }, { 0.15, 0.08, -0.30 },  /* 6,7 back bottom L/R */
    { -0.13, -0.12, -0.18 },{ 0.13, -0.12, -0.18 }, /* 8,9 back top L/R */
    { 0.0, 0.02, 0.36 },    { 0.0, -0.02, -0.36 },  /* 10 nose, 11 tail */
};

static sa3d_prior *synth_make_prior(int C, int n_dense_extra, int mirror_feat, double focal, uint64_t seed) {
    int n_used = SYNTH_SLOTS - 1;
    size_t n_edges = (size_t)n_used * (n_used - 1) / 2;
    size_t n_pairs = n_edges * (n_edges - 1) / 2, n_tets = 4 * sa3d_tet_count(n_used);
    int N = n_dense_extra + n_used;
    sa3d_prior *p = NULL;
    sa3d_error err;
    if (sa3d_prior_alloc(&p, SYNTH_SLOTS, C, n_pairs, n_tets, N, &err) != SA3D_OK ||
        !(p->slot_flip = sa3d_malloc(SYNTH_SLOTS * sizeof(int32_t))))
        abort();
    uint64_t s = seed;
    strcpy(p->category, "synthcar");
    p->seed = seed;
    p->n_used = n_used;
    for (int k = 0, u = 0; k < SYNTH_SLOTS; k++) {
        if (k == 5) {
            for (int d = 0; d < 3; d++) p->anchors[3 * k + d] = HUGE_VAL;
            continue;
        }
        p->used[u++] = k;
        for (int d = 0; d < 3; d++) p->anchors[3 * k + d] = synth_shape[k][d];
        synth_unit(p->anchor_feat + (size_t)k * C, C, &s);
        p->anchor_attn_mean[k] = 0.9f;
        p->anchor_attn_sd[k] = 0.05f;
    }
    static const int mir[4][2] = { { 0, 1 }, { 2, 3 }, { 6, 7 }, { 8, 9 } };
    for (int k = 0; k < SYNTH_SLOTS; k++) p->slot_flip[k] = k;
    for (int q = 0; q < 4; q++) {
        p->slot_flip[mir[q][0]] = mir[q][1];
        p->slot_flip[mir[q][1]] = mir[q][0];
        if (mirror_feat)
            memcpy(p->anchor_feat + (size_t)mir[q][1] * C, p->anchor_feat + (size_t)mir[q][0] * C,
                   (size_t)C * sizeof(float));
    }
    /* dense points */
    for (int i = 0; i < N; i++) {
        float *row = p->rig + (size_t)i * SYNTH_SLOTS;
        if (i < n_dense_extra) {
            int pick[4], m = 0;
            while (m < 4) {
                int k = p->used[synth_next(&s) % (uint64_t)n_used], dup = 0;
                for (int j = 0; j < m; j++) dup |= pick[j] == k;
                if (!dup) pick[m++] = k;
            }
            double w[4], ws = 0.0;
            for (int j = 0; j < 4; j++) { w[j] = -log(synth_unif(&s) + 1e-12); ws += w[j]; }
            for (int j = 0; j < 4; j++) row[pick[j]] = (float)(w[j] / ws);
            synth_unit(p->dense_feat + (size_t)i * C, C, &s);
            p->dense_anchor[i] = -1;
        } else {
            int k = p->used[i - n_dense_extra];
            row[k] = 1.0f;
            memcpy(p->dense_feat + (size_t)i * C, p->anchor_feat + (size_t)k * C, (size_t)C * sizeof(float));
            p->dense_anchor[i] = k;
        }
        for (int d = 0; d < 3; d++) {
            double x = 0.0;
            for (int k = 0; k < SYNTH_SLOTS; k++)
                if (row[k] != 0.0f) x += (double)row[k] * synth_shape[k][d];
            p->dense_xyz[3 * i + d] = (float)x;
        }
        p->dense_attn_mean[i] = 0.9f;
        p->dense_attn_sd[i] = 0.05f;
        p->dense_weight[i] = 1.0f;
    }
    /* relations over the used anchors, in slot ids, Beta peaked at the true shape */
    sa3d_geom_relations rel;
    if (sa3d_geom_relations_make(&rel, n_used, &err) != SA3D_OK) abort();
    double Yu[SYNTH_SLOTS * 3];
    for (int u = 0; u < n_used; u++)
        for (int d = 0; d < 3; d++) Yu[3 * u + d] = synth_shape[p->used[u]][d];
    double *A = malloc(n_pairs * sizeof(double)), *R = malloc(n_pairs * sizeof(double));
    double *cx = malloc(n_tets * sizeof(double)), *cy = malloc(n_tets * sizeof(double)),
           *cz = malloc(n_tets * sizeof(double));
    sa3d_edge_pair_features(A, R, Yu, 1, n_used, rel.e1, rel.e2, n_pairs);
    sa3d_tet_features(cx, cy, cz, Yu, 1, n_used, rel.t, rel.v, n_tets);
    const double kap = 30.0;
#define SYNTH_BETA(dst, x, lo, hi) do { double t_ = ((x) - (lo)) / ((hi) - (lo)); \
        (dst)[0] = 1.0 + kap * t_; (dst)[1] = 1.0 + kap * (1.0 - t_); } while (0)
    for (size_t j = 0; j < n_pairs; j++) {
        for (int e = 0; e < 2; e++) {
            p->pair_e1[2 * j + e] = p->used[rel.e1[2 * j + e]];
            p->pair_e2[2 * j + e] = p->used[rel.e2[2 * j + e]];
        }
        SYNTH_BETA(p->pair_ratio + 2 * j, R[j], 0.0, 1.0);
        SYNTH_BETA(p->pair_cos + 2 * j, A[j], -1.0, 1.0);
    }
    for (size_t j = 0; j < n_tets; j++) {
        for (int e = 0; e < 3; e++) p->tet_t[3 * j + e] = p->used[rel.t[3 * j + e]];
        p->tet_v[j] = p->used[rel.v[j]];
        SYNTH_BETA(p->tet_cx + 2 * j, cx[j], -1.0, 1.0);
        SYNTH_BETA(p->tet_cy + 2 * j, cy[j], -1.0, 1.0);
        SYNTH_BETA(p->tet_cz + 2 * j, cz[j], -1.0, 1.0);
    }
#undef SYNTH_BETA
    free(A); free(R); free(cx); free(cy); free(cz);
    sa3d_geom_relations_free(&rel);
    p->focal_mean = focal;
    p->focal_sd = 0.1;
    return p;
}

/* A [g][g] map mirrored left-right (cell x -> g - 1 - x): the cells of the mirrored image. */
static void synth_flip_cells(float *dst, const float *src, int g) {
    for (int y = 0; y < g; y++)
        for (int x = 0; x < g; x++) dst[y * g + x] = src[y * g + g - 1 - x];
}

/* A pose: camera = R(yaw about y, then pitch about x) . canonical + t. */
typedef struct synth_pose { double yaw, pitch, t[3], f; } synth_pose;

static void synth_cam(const synth_pose *ps, const double x[3], double out[3]) {
    double cyw = cos(ps->yaw), syw = sin(ps->yaw), cp = cos(ps->pitch), sp = sin(ps->pitch);
    double a[3] = { cyw * x[0] + syw * x[2], x[1], -syw * x[0] + cyw * x[2] };
    out[0] = a[0] + ps->t[0];
    out[1] = cp * a[1] - sp * a[2] + ps->t[1];
    out[2] = sp * a[1] + cp * a[2] + ps->t[2];
}
static void synth_project(const synth_pose *ps, int g, const double x[3], double *gx, double *gy) {
    double c[3];
    synth_cam(ps, x, c);
    *gx = g * ps->f * c[0] / (c[2] + 1e-9) + 0.5 * g;
    *gy = g * ps->f * c[1] / (c[2] + 1e-9) + 0.5 * g;
}

/* Renders the prior's dense features into F[C][g][g] (unit cells), mask[g][g] and depth[g][g]: a cell shows
 * the dense point projecting nearest its centre within one cell (anchors preferred by half a cell), else a
 * random background feature. Cells showing an anchor carry its exact feature (no noise); the others get
 * noise of sd `noise` per channel before normalisation. */
static void synth_render(const sa3d_prior *p, const synth_pose *ps, int g, double noise, uint64_t seed, float *F,
                         float *mask, float *depth) {
    int C = p->C, N = p->n_dense, cells = g * g;
    uint64_t s = seed;
    double *pj = malloc((size_t)N * 3 * sizeof(double));
    for (int i = 0; i < N; i++) {
        double x[3] = { (double)p->dense_xyz[3 * i], (double)p->dense_xyz[3 * i + 1], (double)p->dense_xyz[3 * i + 2] }, c[3];
        synth_project(ps, g, x, &pj[3 * i], &pj[3 * i + 1]);
        synth_cam(ps, x, c);
        pj[3 * i + 2] = c[2];
    }
    float *f = malloc((size_t)C * sizeof(float));
    for (int q = 0; q < cells; q++) {
        double cx = (q % g) + 0.5, cy = (q / g) + 0.5, best = 1e30;
        int bi = -1;
        for (int i = 0; i < N; i++) {
            double dx = pj[3 * i] - cx, dy = pj[3 * i + 1] - cy;
            if (fabs(dx) >= 1.0 || fabs(dy) >= 1.0) continue;
            double d = sqrt(dx * dx + dy * dy) - (p->dense_anchor[i] >= 0 ? 0.5 : 0.0);
            if (d < best) { best = d; bi = i; }
        }
        if (bi < 0) {
            synth_unit(f, C, &s);
            mask[q] = 0.0f;
            depth[q] = 1.0f;
        } else {
            double n2 = 0.0, sd = p->dense_anchor[bi] >= 0 ? 0.0 : noise;
            for (int c = 0; c < C; c++) {
                f[c] = p->dense_feat[(size_t)bi * C + c] + (float)(sd * synth_gauss(&s));
                n2 += (double)f[c] * (double)f[c];
            }
            for (int c = 0; c < C; c++) f[c] = (float)((double)f[c] / sqrt(n2));
            mask[q] = 1.0f;
            depth[q] = (float)pj[3 * bi + 2];
        }
        for (int c = 0; c < C; c++) F[(size_t)c * cells + q] = f[c];
    }
    free(f);
    free(pj);
}

/* A scene for the tests: a prior, its rendering at a known pose (features, mask, depth) and the feature map. */
typedef struct scene {
    sa3d_prior *prior;
    int g, C;
    float *F, *mask, *depth;
    sa3d_feature_map fm;
    synth_pose pose;
} scene;

static inline void scene_make(scene *s, int g, int C, int n_extra, int mirror, const synth_pose *pose,
                              uint64_t seed) {
    s->g = g;
    s->C = C;
    s->pose = *pose;
    s->prior = synth_make_prior(C, n_extra, mirror, pose->f, 1234);
    s->F = malloc((size_t)C * g * g * sizeof(float));
    s->mask = malloc((size_t)g * g * sizeof(float));
    s->depth = malloc((size_t)g * g * sizeof(float));
    synth_render(s->prior, pose, g, 0.05, seed, s->F, s->mask, s->depth);
    s->fm = (sa3d_feature_map){ .C = C, .g = g, .data = s->F, .img_w = 14 * g, .img_h = 14 * g,
                                .input_size = 14 * g };
}
static inline void scene_free(scene *s) {
    sa3d_prior_free(s->prior);
    free(s->F);
    free(s->mask);
    free(s->depth);
}

/* The scene's mirrored image: every map flipped left-right, cell x -> g - 1 - x. mirror_free releases it. */
typedef struct mirrored { float *F, *mask, *depth; sa3d_feature_map fm; } mirrored;
static inline void mirror_make(mirrored *m, const scene *s) {
    int g = s->g, cells = g * g;
    m->F = malloc((size_t)s->C * cells * sizeof(float));
    m->mask = malloc((size_t)cells * sizeof(float));
    m->depth = malloc((size_t)cells * sizeof(float));
    for (int c = 0; c < s->C; c++) synth_flip_cells(m->F + (size_t)c * cells, s->F + (size_t)c * cells, g);
    synth_flip_cells(m->mask, s->mask, g);
    synth_flip_cells(m->depth, s->depth, g);
    m->fm = s->fm;
    m->fm.data = m->F;
}
static inline void mirror_free(mirrored *m) {
    free(m->F);
    free(m->mask);
    free(m->depth);
}

/* Y near the true pose, perturbed so that projections sit between cell centres. */
static inline void true_anchors(const scene *s, double *Y, uint64_t seed, double jitter) {
    uint64_t r = seed;
    for (int k = 0; k < s->prior->n_used; k++) {
        const double *a = s->prior->anchors + 3 * s->prior->used[k];
        synth_cam(&s->pose, a, Y + 3 * k);
        for (int d = 0; d < 3; d++) Y[3 * k + d] += jitter * synth_gauss(&r);
    }
}

#endif
