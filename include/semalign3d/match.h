/* semalign3d: matching keypoints between two images.
 *
 * The GeoAware-SC baseline (METHOD.md 6.2 step 4, 7.1): a source keypoint's feature (the 60 x 60 cell it falls
 * in, GeoAware's padded-square frame) is compared by cosine similarity with every target cell; the window
 * soft-argmax (radius 7, temperature 0.02) gives a sub-cell position, mapped back to original target pixels. */
#ifndef SEMALIGN3D_MATCH_H
#define SEMALIGN3D_MATCH_H

#include <stddef.h>
#include "semalign3d/data.h"
#include "semalign3d/providers.h"
#include "semalign3d/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A feature map over the GeoAware padded square of one image: data [C][g][g], every cell a unit vector
 * (sa3d_features_normalize), computed from an input_size x input_size square (840 for g = 60). */
typedef struct sa3d_feature_map {
    int C, g;
    const float *data;
    int img_w, img_h;     /* original image size */
    int input_size;       /* side of the square the network saw */
} sa3d_feature_map;

/* L2-normalises each cell vector of F[C][g*g] in place (eps 1e-10, as GeoAware). */
SA3D_API void sa3d_features_normalize(float *F, int C, int n_cells);
/* dst[C][n_cells] = src normalised as sa3d_features_normalize would (bit-identical), in one read of src and
 * one write of dst (src may be a read-only mapping). Returns -1 when every value of dst is finite, else the
 * index of the first non-finite one. src and dst must not overlap. Thread-safe. */
SA3D_API long sa3d_features_normalize_copy(float *dst, const float *src, int C, int n_cells);

/* Original-image pixel <-> GeoAware square coordinates (GeoAware-SC preprocess_kps_pad): the image is scaled by
 * size / max(w, h) and the shorter side is centred with offset (size - round(size * short / long)) / 2. */
SA3D_API void sa3d_geoaware_to_square(int w, int h, int size, float u, float v, float *x, float *y);
SA3D_API void sa3d_geoaware_from_square(int w, int h, int size, float x, float y, float *u, float *v);

/* GeoAware-SC's test-time adaptive pose alignment (its ADAPT_FLIP option, used by its zero-shot evaluation):
 * how the source image and its mirror are compared with the target. */
typedef enum {
    SA3D_FLIP_OFF = 0,            /* the plain baseline */
    SA3D_FLIP_MASK = 1,           /* GeoAware's default: the masked nearest-neighbour distance (needs masks) */
    SA3D_FLIP_MUTUAL_NN = 2       /* its MUTUAL_NN option: the mean distance of mutual nearest neighbours */
} sa3d_flip_metric;

typedef struct sa3d_baseline_params {
    int window_radius;    /* 7 (15 x 15 window) */
    float temperature;    /* 0.02 */
    size_t max_cache_bytes;   /* 2 GiB: decoded feature maps the batch matcher keeps in memory at once
                                 (11 MB each for C = 768, g = 60); results do not depend on it */
    int adapt_flip;       /* sa3d_flip_metric; SA3D_FLIP_OFF (default). The baseline method only: SemAlign3D's
                             fallback queries never flip */
} sa3d_baseline_params;
SA3D_API sa3d_baseline_params sa3d_baseline_params_default(void);
/* SA3D_OK when window_radius is in 0..SA3D_WINDOW_MAX_RADIUS, temperature in [1e-6, 1e6] and adapt_flip a
 * sa3d_flip_metric; else SA3D_ERR_ARG naming the first option that is not. Every function taking these
 * parameters checks them. */
#define SA3D_WINDOW_MAX_RADIUS 1000
SA3D_API sa3d_status sa3d_baseline_params_check(const sa3d_baseline_params *p, sa3d_error *err);

/* Scratch floats for n keypoints: n * (C + g*g). */
SA3D_API size_t sa3d_baseline_work_floats(int C, int g, int n);
/* pred[i] = match of src_kps[i] (original source pixels) in original target pixels. src and trg must share C
 * and g. One fixed-order product (sa3d_gemm_fixed_order) for all n keypoints. */
SA3D_API sa3d_status sa3d_match_baseline(const sa3d_feature_map *src, const sa3d_feature_map *trg,
                                         const float (*src_kps)[2], int n, const sa3d_baseline_params *p,
                                         float (*pred)[2], float *work, sa3d_error *err);

/* ---- GeoAware-SC's adaptive flip (pck_train.compute_pck with ADAPT_FLIP) ----
 *
 * The source image and its mirror are each compared with the target as a whole (a pose distance); when the
 * mirror is closer, every keypoint k whose left-right twin t (the dataset's flip map; t = k on the symmetry
 * plane) is also a keypoint of the pair takes its match from the mirror: the query is t's source position
 * mirrored in the square frame (x -> input_size - x, as GeoAware's flip_keypoints), matched from the mirror's
 * features into the target. The other keypoints keep the plain match. docs/ALIGN.md, "The baseline's adaptive
 * flip", lists where this follows GeoAware's code and where it cannot. */

#define SA3D_FLIP_MASK_RES 64     /* GeoAware's get_distance compares features upsampled to 64 x 64 cells */

/* out[SA3D_FLIP_MASK_RES^2] = 1 where the image's mask is foreground, in the padded-square frame of the
 * features: cell (i, j) is the square's pixel (floor(j S / 64), floor(i S / 64)), S = input_size (nearest
 * resampling, as torch's interpolate 'nearest'), which is the image pixel under its centre (nearest, as PIL);
 * foreground when the mask there is > 0.5; the padding is background. mask: [H][W]. */
SA3D_API void sa3d_flip_mask_cells(unsigned char *out, const float *mask, int W, int H, int input_size);

/* GeoAware's get_distance: both unit feature maps bilinearly upsampled to 64 x 64 (align_corners false); for
 * each foreground cell of a, the Euclidean distance to its nearest foreground cell of b; *out = their mean.
 * A background cell is GeoAware's -1e5 vector: with no foreground in b every cell of a is measured to it, and
 * with none in a *out is NaN (the flip is then never taken, as in GeoAware, where NaN < x is false). Nearest
 * cells are found by a fixed-order product (the same bits at any thread count); the distance to the one found
 * is then taken directly, in double. a and b share C. Fails only for lack of memory (or differing C). */
SA3D_API sa3d_status sa3d_flip_distance_masked(const sa3d_feature_map *a, const unsigned char *mask_a,
                                               const sa3d_feature_map *b, const unsigned char *mask_b, double *out,
                                               sa3d_error *err);
/* GeoAware's get_distance_mutual_nn: over all g x g cells (no masks, no resampling), the nearest cell of b for
 * each cell of a and of a for each of b (the first on ties); *out = the mean distance of the cells of a whose
 * nearest neighbour has them as its own. Same contract as above. */
SA3D_API sa3d_status sa3d_flip_distance_mutual_nn(const sa3d_feature_map *a, const sa3d_feature_map *b, double *out,
                                                  sa3d_error *err);

/* One pair's inputs to the adaptive flip. src_flip: the mirrored source image's features (same sizes as src).
 * Masks: sa3d_flip_mask_cells of the source, the mirrored source and the target (SA3D_FLIP_MASK only). */
typedef struct sa3d_flip_inputs {
    const sa3d_feature_map *src, *src_flip, *trg;
    const unsigned char *mask_src, *mask_src_flip, *mask_trg;
    const float (*src_kps)[2];    /* [n] original source pixels */
    const int *kp_ids;            /* [n] keypoint ids of the pair (sa3d_pair.kp_ids) */
    int n;
    const int *flip_map;          /* [SA3D_MAX_KPS] sa3d_flip_map of the pair's category */
} sa3d_flip_inputs;
typedef struct sa3d_flip_decision {
    double dist, dist_flip;       /* pose distance of the source and of its mirror to the target */
    int flipped;                  /* dist_flip < dist */
    int n_replaced;               /* keypoints that took the mirror's match */
} sa3d_flip_decision;
/* pred[0..n) holds sa3d_match_baseline's matches of in->src_kps on entry; when the mirror is closer (metric:
 * p->adapt_flip, which must not be SA3D_FLIP_OFF), the keypoints with a twin in the pair are matched again
 * from the mirror, as above. work: sa3d_baseline_work_floats(C, g, n) floats. *d (may be NULL) says what was
 * decided. Errors: SA3D_ERR_ARG for differing maps, a missing mask or flip map; SA3D_ERR_NOMEM. */
SA3D_API sa3d_status sa3d_baseline_adapt_flip(const sa3d_flip_inputs *in, const sa3d_baseline_params *p,
                                              float (*pred)[2], float *work, sa3d_flip_decision *d, sa3d_error *err);

/* The baseline as a pair matcher for sa3d_eval_run: features from a provider, kept in memory for the current
 * category (pairs come category by category). input_size: the square side the features were computed at. */
typedef struct sa3d_baseline_matcher sa3d_baseline_matcher;
SA3D_API sa3d_status sa3d_baseline_matcher_new(sa3d_baseline_matcher **out, sa3d_provider *features, int input_size,
                                               const sa3d_baseline_params *p, sa3d_error *err);
SA3D_API void sa3d_baseline_matcher_free(sa3d_baseline_matcher *bm);
/* What p.adapt_flip needs beyond the features: the flip maps of the dataset kind and, for SA3D_FLIP_MASK, a mask
 * provider (sa3d_mask_provider_new; borrowed, must outlive the matcher). Without this call a matcher with
 * adapt_flip on fails its first pair with SA3D_ERR_ARG. The mirrored source's features come from the feature
 * provider (flip = 1: `features --flip` files, or computed). */
SA3D_API sa3d_status sa3d_baseline_matcher_use_flip(sa3d_baseline_matcher *bm, sa3d_dataset_kind kind,
                                                    sa3d_provider *masks, sa3d_error *err);
/* sa3d_pair_matcher signature (ctx = the matcher). */
SA3D_API sa3d_status sa3d_baseline_matcher_match(void *bm, const sa3d_pair *pair, float (*pred)[2], sa3d_error *err);

/* sa3d_batch_matcher signature: pred[i][k] for pairs[i]->src_kps[k] (entries past n_kps are zeroed), equal
 * byte for byte to sa3d_baseline_matcher_match on each pair, at any thread count. Pairs are grouped by
 * target image: every distinct image (category, id) is loaded once - in parallel (OpenMP) when
 * sa3d_provider_concurrent says the provider allows it - its query features are handed to the pairs that
 * use it as source, and each target runs one product [Q][C] x [C][g*g] over all queries that map onto
 * it. Target maps stay in memory between the two passes up to p.max_cache_bytes; the rest are read again.
 * Memory: that budget + queries (total keypoints x C floats) + 1024 x (C + g*g) floats. Any pair may be in
 * any category; sa3d_eval_run calls it once per category. Failure: the first failing image in (category, id)
 * order, with err naming it; pred is then unspecified. Does not use the per-pair map cache. With p.adapt_flip on
 * it runs sa3d_baseline_matcher_match on each pair in turn (the flip's costs are the pose distances, per pair). */
SA3D_API sa3d_status sa3d_baseline_matcher_match_batch(void *bm, const sa3d_pair *const *pairs, int n,
                                                       float (*pred)[SA3D_MAX_KPS][2], sa3d_error *err);
/* Counters since creation: of the batch path, feature maps loaded and wall seconds spent loading (including the
 * query gather) and matching (similarity product + soft-argmax); of the adaptive flip, pairs decided and pairs
 * that took the mirror. */
typedef struct sa3d_baseline_batch_stats {
    long maps_loaded;
    double load_s, match_s;
    long flip_pairs, flipped;
} sa3d_baseline_batch_stats;
SA3D_API sa3d_baseline_batch_stats sa3d_baseline_matcher_batch_stats(const sa3d_baseline_matcher *bm);

#ifdef __cplusplus
}
#endif
#endif
