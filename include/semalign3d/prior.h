/* semalign3d: the 3D object-class representation of one category (METHOD.md 4), the contract between the
 * builder (src/prior, `semalign3d build-prior`) and the aligner/matcher (src/align).
 *
 *     sa3d_prior *p;  sa3d_error err;
 *     if (sa3d_prior_load(&p, "out/car.prior.safetensors", &err)) { fprintf(stderr, "%s\n", err.msg); ... }
 *     // p->anchors [n_slots][3], p->dense_xyz [n_dense][3], p->rig [n_dense][n_slots], ...
 *     sa3d_prior_free(p);
 *
 * Frames and units: every position is in the canonical frame of METHOD.md 4.5 (the seed edge fixes the scale;
 * L_geom is invariant to similarity transforms, so only shape matters). Slots are the category's keypoint
 * labels 0..n_slots-1; a slot with no position (never placed: unused in SPair, or not connected) holds +inf
 * in anchors and has no column weight in rig.
 *
 * The rig. METHOD.md 4.6 (b.4) parametrises each dense point by barycentric coordinates in every anchor
 * tetrahedron and per-tet weights; the warp X_i = sum_T w_iT sum_j b_iTj Y_{T_j} is linear in the anchors Y,
 * so it collapses exactly to one row of weights over the slots: X_i = sum_k rig[i][k] Y_k with
 * rig[i][k] = sum_T sum_j [T_j = k] w_iT b_iTj. Storing that [n_dense][n_slots] matrix instead of
 * [n_dense][C(n,4)][4] coordinates is the same deformation model at a fraction of the size (30 floats per point
 * instead of 27,405 x 5 for a 30-slot category) and turns the deformation of B hypotheses into one small GEMM.
 * Each row sums to 1 (an affine combination), up to rounding.
 *
 * The geometric prior: the filtered relations (METHOD.md 4.3) with their Beta parameters, in the order the
 * builder kept them; the aligner rebuilds an L_geom term list from these arrays. */
#ifndef SEMALIGN3D_PRIOR_H
#define SEMALIGN3D_PRIOR_H

#include <stddef.h>
#include <stdint.h>
#include "semalign3d/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SA3D_PRIOR_FORMAT "semalign3d-prior-1"   /* metadata "format" of a prior file */

typedef struct sa3d_prior {
    char category[64];
    uint64_t seed;                 /* the builder's seed (metadata) */

    /* Sparse keypoint cloud (METHOD.md 4.5) */
    int n_slots;                   /* keypoint slots of the category (n) */
    int n_used;                    /* slots with a position */
    int32_t *used;                 /* [n_used] slot ids, increasing */
    double *anchors;               /* [n_slots][3] canonical positions, +inf for unused slots */
    int C;                         /* feature channels */
    float *anchor_feat;            /* [n_slots][C] unit mean feature (zero vector for a slot never seen) */
    float *anchor_attn_mean;       /* [n_slots] mean cosine of the samples with anchor_feat (0.5 if unseen) */
    float *anchor_attn_sd;         /* [n_slots] unbiased sd of those cosines (0.01 if unseen) */
    int32_t *slot_flip;            /* [n_slots] the flip map the prior was built with (slot_flip[k]: the slot k
                                    * becomes in the mirrored image; an involution), or NULL when the file has none
                                    * (older files): the aligner's mirror term needs it */

    /* Geometric prior (METHOD.md 4.2-4.4): relations over slot ids, Beta (alpha, beta) per feature */
    size_t n_pairs;
    int32_t *pair_e1, *pair_e2;    /* [n_pairs][2] vertex ids of the two edges */
    double *pair_ratio;            /* [n_pairs][2] (alpha, beta) of the length ratio R on [0, 1] */
    double *pair_cos;              /* [n_pairs][2] (alpha, beta) of the angle cosine A on [-1, 1] */
    size_t n_tets;
    int32_t *tet_t;                /* [n_tets][3] triangle */
    int32_t *tet_v;                /* [n_tets] vertex */
    double *tet_cx, *tet_cy, *tet_cz;   /* [n_tets][2] (alpha, beta) on [-1, 1] */

    /* Dense cloud (METHOD.md 4.6): k-means centres inside the canonical hull with weight > cutoff, then the
     * used anchors appended as extra points (weight 1) */
    int n_dense;
    float *dense_xyz;              /* [n_dense][3] canonical positions (= rig . anchors) */
    float *dense_feat;             /* [n_dense][C] unit features */
    float *dense_attn_mean;        /* [n_dense] mean cosine of the neighbourhood with dense_feat */
    float *dense_attn_sd;          /* [n_dense] population sd of those cosines */
    float *dense_weight;           /* [n_dense] cluster weight (share of the merged points), 1 for anchors */
    int32_t *dense_anchor;         /* [n_dense] slot id for the appended anchors, -1 for cluster centres */
    float *rig;                    /* [n_dense][n_slots] X = rig . Y (see above) */

    /* Camera statistics of the training images (METHOD.md 3.3), robust: an image whose keypoints barely constrain
     * its focal length can send 1/f to ~0, so these are the median and 1.4826 x the median absolute deviation */
    double focal_mean;             /* typical (median) optimised focal length f (units of max(W, H)) */
    double focal_sd;               /* its robust spread */
} sa3d_prior;

/* Allocates a prior with every array sized for the given counts and zero-filled, slot_flip excepted (NULL;
 * category and seed set by the caller). SA3D_ERR_ARG for counts out of range, SA3D_ERR_NOMEM. */
SA3D_API sa3d_status sa3d_prior_alloc(sa3d_prior **out, int n_slots, int C, size_t n_pairs, size_t n_tets,
                                      int n_dense, sa3d_error *err);
SA3D_API void sa3d_prior_free(sa3d_prior *p);   /* NULL is a no-op */

/* Writes <path> atomically as safetensors: one tensor per array above under its field name (slot_flip only when
 * set), and metadata {"format": SA3D_PRIOR_FORMAT, "category", "seed", "focal_mean", "focal_sd", "n_used", plus
 * the caller's extra_json_meta pairs (a JSON object text of string values, or NULL) such as the build
 * settings}. */
SA3D_API sa3d_status sa3d_prior_save(const sa3d_prior *p, const char *path, const char *extra_json_meta,
                                     sa3d_error *err);
/* Reads and validates a prior file: format tag, every tensor with the exact shape implied by the counts,
 * finite values (anchors of unused slots excepted), slot ids in range, Beta parameters positive, slot_flip (if
 * present) an involution on the slots. Errors name the file and the tensor. */
SA3D_API sa3d_status sa3d_prior_load(sa3d_prior **out, const char *path, sa3d_error *err);

/* Looking at a prior. PLY (ASCII): the dense points coloured by the first three principal components of their
 * features, then the used anchors in black. PNG: an orthographic rendering (azimuth 35, elevation 20 degrees)
 * of the same, size x size pixels, anchors as white discs with black rims. Both written atomically. */
SA3D_API sa3d_status sa3d_prior_write_ply(const sa3d_prior *p, const char *path, sa3d_error *err);
SA3D_API sa3d_status sa3d_prior_render_png(const sa3d_prior *p, const char *path, int size, sa3d_error *err);

#ifdef __cplusplus
}
#endif
#endif
