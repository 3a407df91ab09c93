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

typedef struct sa3d_baseline_params {
    int window_radius;    /* 7 (15 x 15 window) */
    float temperature;    /* 0.02 */
    size_t max_cache_bytes;   /* 2 GiB: decoded feature maps the batch matcher keeps in memory at once
                                 (11 MB each for C = 768, g = 60); results do not depend on it */
} sa3d_baseline_params;
SA3D_API sa3d_baseline_params sa3d_baseline_params_default(void);

/* Scratch floats for n keypoints: n * (C + g*g). */
SA3D_API size_t sa3d_baseline_work_floats(int C, int g, int n);
/* pred[i] = match of src_kps[i] (original source pixels) in original target pixels. src and trg must share C
 * and g. One fixed-order product (sa3d_gemm_fixed_order) for all n keypoints. */
SA3D_API sa3d_status sa3d_match_baseline(const sa3d_feature_map *src, const sa3d_feature_map *trg,
                                         const float (*src_kps)[2], int n, const sa3d_baseline_params *p,
                                         float (*pred)[2], float *work, sa3d_error *err);

/* The baseline as a pair matcher for sa3d_eval_run: features from a provider, kept in memory for the current
 * category (pairs come category by category). input_size: the square side the features were computed at. */
typedef struct sa3d_baseline_matcher sa3d_baseline_matcher;
SA3D_API sa3d_status sa3d_baseline_matcher_new(sa3d_baseline_matcher **out, sa3d_provider *features, int input_size,
                                               const sa3d_baseline_params *p, sa3d_error *err);
SA3D_API void sa3d_baseline_matcher_free(sa3d_baseline_matcher *bm);
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
 * order, with err naming it; pred is then unspecified. Does not use the per-pair map cache. */
SA3D_API sa3d_status sa3d_baseline_matcher_match_batch(void *bm, const sa3d_pair *const *pairs, int n,
                                                       float (*pred)[SA3D_MAX_KPS][2], sa3d_error *err);
/* Counters of the batch path since creation: feature maps loaded, and wall seconds spent loading (including
 * the query gather) and matching (similarity product + soft-argmax). */
typedef struct sa3d_baseline_batch_stats { long maps_loaded; double load_s, match_s; } sa3d_baseline_batch_stats;
SA3D_API sa3d_baseline_batch_stats sa3d_baseline_matcher_batch_stats(const sa3d_baseline_matcher *bm);

#ifdef __cplusplus
}
#endif
#endif
