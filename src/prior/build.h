/* Internal stages of the prior builder (METHOD.md 3.3, 4.1-4.3, 4.5.5): the training instances of a category
 * (each image and its mirror) with keypoints snapped into the eroded object mask and lifted to 3D with the
 * pseudo depth and the flip-averaged focal length, the seeded noise augmentation, the Beta statistics of every
 * geometric relation and the relation filter, and the sparse keypoints' mean features. The sparse cloud
 * (sparse.c) and the dense cloud (dense.c) consume these; build.c strings the stages together. */
#ifndef SA3D_PRIOR_BUILD_H
#define SA3D_PRIOR_BUILD_H

#include <stdint.h>
#include "geom/geom.h"
#include "semalign3d/data.h"
#include "semalign3d/prior.h"
#include "semalign3d/providers.h"
#include "semalign3d/status.h"

/* ---- training instances (train.c) ---- */

typedef struct sa3d_train_params {
    int erode_iterations;          /* 2: cv2.erode with a 2 x 2 ones kernel (METHOD.md 4.1) */
    int focal_iterations;          /* 1000 (METHOD.md 3.3) */
    double phi_init;               /* 0.2 (f = 5) */
} sa3d_train_params;
sa3d_train_params sa3d_train_params_default(void);

/* 2N instances: the N images of the split that show the category (sorted ids), then their mirrors; instance
 * i + N mirrors instance i. Keypoints of a mirror are at x' = W - 1 - x under the flipped label. */
typedef struct sa3d_train_set {
    int n_slots, n_img, n_inst;    /* n, N, 2N */
    char (*id)[64];                /* [N] image ids */
    int (*size)[2];                /* [2N] (W, H) */
    uint8_t *vis;                  /* [2N][n] */
    float (*kp)[2];                /* [2N][n] annotated pixels (mirrored for mirrors), (0, 0) where not visible */
    float (*snap)[2];              /* [2N][n] the nearest pixel of the eroded mask (METHOD.md 4.1.1) */
    double *z;                     /* [2N][n] pseudo depth at the snapped pixel */
    double *phi;                   /* [2N] 1/f, optimised then averaged with the mirror's */
    double *P;                     /* [2N][n][3] keypoints lifted to the camera frame */
    uint8_t used[SA3D_MAX_KPS];    /* slot visible in at least one instance */
    double focal_loss;             /* variance loss at the optimised phi */
} sa3d_train_set;

/* Reads the instances of `category` in `split` ("trn") through the mask and depth providers (mirror maps from
 * the providers with flip = 1), snaps, optimises the focal lengths and lifts. n_slots, flip_map: the
 * category's slot count and left-right label map (sa3d_flip_map). progress (may be NULL) is called after each image. Errors name the
 * image. Free with sa3d_train_set_free. */
sa3d_status sa3d_train_set_collect(sa3d_train_set *ts, sa3d_dataset *ds, const char *split, const char *category,
                                   int n_slots, const int flip_map[SA3D_MAX_KPS], sa3d_provider *masks,
                                   sa3d_provider *depth,
                                   const sa3d_train_params *p, void (*progress)(void *user, int done, int total),
                                   void *user, sa3d_error *err);
void sa3d_train_set_free(sa3d_train_set *ts);

/* METHOD.md 4.1.1: cv2.erode(mask, ones(2, 2), iterations) - each pass keeps a pixel when it and its left, upper
 * and upper-left neighbours (those inside the image) are set - then the nearest set pixel (Euclidean; the
 * first in row-major order on ties) to the integer pixel (round(x), round(y)) clamped into the image. A pixel
 * already in the eroded mask stays. An empty eroded mask falls back to the mask itself, an empty mask to the
 * keypoint. mask: [H][W] (non-zero = object); tmp: 2 W H bytes. */
void sa3d_snap_to_mask(float (*snap)[2], const float (*kp)[2], const uint8_t *vis, int n, const float *mask, int W,
                       int H, int iterations, uint8_t *tmp);

/* METHOD.md 4.1.3: `copies` noisy copies of every instance, coordinates + N(0, (rate d_min)^2) with d_min the
 * smallest distance between the instance's visible keypoints; stream (seed, instance). out: [2N copies][n][3],
 * vis_out: [2N copies][n]. */
void sa3d_augment(double *out, uint8_t *vis_out, const double *P, const uint8_t *vis, int n_inst, int n,
                  int copies, double rate, uint64_t seed);

/* ---- relation statistics and the filter (stats.c) ---- */

/* Beta fits of every relation over n slots from M samples (METHOD.md 4.2): for each edge pair its ratio and
 * cosine, for each triangle + vertex relation its three direction cosines, over the samples where all its
 * vertices are visible. A relation with no sample, or whose values do not vary, keeps (1, 1). */
typedef struct sa3d_relation_stats {
    sa3d_geom_relations rel;
    double (*pair_ratio)[2], (*pair_cos)[2];      /* [n_pairs] (alpha, beta) */
    double (*tet_c)[3][2];                        /* [n_tets] cx, cy, cz */
    int32_t *pair_count, *tet_count;              /* visible samples */
} sa3d_relation_stats;

sa3d_status sa3d_relation_stats_fit(sa3d_relation_stats *st, const double *P /* [M][n][3] */,
                                    const uint8_t *vis /* [M][n] */, int M, int n, sa3d_error *err);
void sa3d_relation_stats_free(sa3d_relation_stats *st);

typedef struct sa3d_filter_params {
    int min_samples;               /* 40: 4 instances x 10 samples (METHOD.md 4.3) */
    double ratio_mode_lo, ratio_mode_hi;   /* 0.01, 0.99 */
} sa3d_filter_params;
sa3d_filter_params sa3d_filter_params_default(void);

/* The relations kept by METHOD.md 4.3 (all Betas with alpha, beta > 1; enough samples; ratio mode inside
 * [lo, hi]; every vertex a used slot): counts in *n_pairs, *n_tets, and, when keep_pair / keep_tet are not
 * NULL, a 0/1 flag per relation. */
void sa3d_relation_filter(const sa3d_relation_stats *st, const uint8_t used[SA3D_MAX_KPS],
                          const sa3d_filter_params *p, uint8_t *keep_pair, uint8_t *keep_tet, size_t *n_pairs,
                          size_t *n_tets);

/* Copies the kept relations and their Beta parameters into the prior's arrays (sized for the kept counts). */
void sa3d_relation_store(sa3d_prior *prior, const sa3d_relation_stats *st, const uint8_t *keep_pair,
                         const uint8_t *keep_tet);

/* ---- sparse keypoint features (stats.c; METHOD.md 4.5.5) ---- */

/* Feature samples per slot, added instance by instance; then the normalised mean and the statistics of the
 * samples' cosines with it. */
typedef struct sa3d_feature_acc {
    int n_slots, C, cap;           /* cap: samples per slot */
    int *count;                    /* [n_slots] */
    float *samples;                /* [n_slots][cap][C] */
} sa3d_feature_acc;

sa3d_status sa3d_feature_acc_init(sa3d_feature_acc *fa, int n_slots, int C, int cap, sa3d_error *err);
/* Adds, for each visible slot k, the unit feature of F [C][g][g] at the cell of kp[k] (GeoAware square of
 * side input_size, as the baseline matcher picks a query cell). */
void sa3d_feature_acc_add(sa3d_feature_acc *fa, const float *F, int g, int input_size, int W, int H,
                          const float (*kp)[2], const uint8_t *vis);
/* prior->anchor_feat / anchor_attn_mean / anchor_attn_sd: mean over samples, normalised; mean and unbiased sd
 * of the samples' cosines with it; a slot without samples gets the zero vector, 0.5 and 0.01. */
void sa3d_feature_acc_finish(const sa3d_feature_acc *fa, sa3d_prior *prior);
void sa3d_feature_acc_free(sa3d_feature_acc *fa);

#endif
