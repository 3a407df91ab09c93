/* semalign3d: per-image inputs behind one interface each (ARCHITECTURE.md "providers"), with an on-disk cache.
 *
 *   features: F [C][g][g], every cell a unit vector, over GeoAware's padded square (METHOD.md 2.4, 3.1)
 *             - computed by our DINOv2 (sa3d_model) from the dataset's JPEG, or
 *             - imported: <dir>/<category>/<id>.features.safetensors or <dir>/<id>.features.safetensors
 *               (key "feature_map", and "feature_map_flip" for the mirrored image: what `semalign3d features`
 *               writes), or NumPy files <dir>[/<category>]/<id>.npy and <id>_flip.npy holding [C][g][g] or
 *               [1][C][g][g] float32/float16 (scripts/convert_geoaware_features.py makes them from GeoAware-SC's
 *               .pt files);
 *   depth:    disparity d [H][W] at image size (METHOD.md 3.2) - computed by Depth Anything V2, or imported
 *             (<dir>[/<category>]/<id>.depth.safetensors, key "depth"); the mirrored image uses the flipped map;
 *   masks:    object mask [H][W] in {0, 1} - SPair Segmentation/<cat>/<id>.png (non-zero = object), the
 *             annotation's bounding box, or imported PNG files (<dir>[/<category>]/<id>.png).
 *
 * Cache: with a cache directory, every computed map is stored as <cache>/<kind>/<category>/<id>[.flip].safetensors
 * with the full key (image, mirror flag, model identity and dtype, settings) in its metadata. An entry is used only
 * when its key matches and its tensor has the right shape and finite values; a stale or corrupt entry is recomputed
 * and replaced (atomically), never silently used. Interrupted runs therefore resume without recomputation. */
#ifndef SEMALIGN3D_PROVIDERS_H
#define SEMALIGN3D_PROVIDERS_H

#include <stddef.h>
#include <stdint.h>
#include "semalign3d/data.h"
#include "semalign3d/image.h"
#include "semalign3d/nn.h"
#include "semalign3d/safetensors.h"
#include "semalign3d/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sa3d_source_kind { SA3D_SOURCE_COMPUTE, SA3D_SOURCE_IMPORT, SA3D_SOURCE_SEGMENTATION, SA3D_SOURCE_BBOX }
    sa3d_source_kind;

typedef struct sa3d_provider_params {
    sa3d_source_kind kind;
    const char *import_dir;       /* SA3D_SOURCE_IMPORT */
    const sa3d_model *model;      /* SA3D_SOURCE_COMPUTE: DINOv2 (features) or Depth Anything (depth); borrowed */
    int input_size;               /* features: GeoAware square side (840), which imported files that record one
                                     must match (sa3d_features_check_size); 0 with SA3D_SOURCE_IMPORT: any, for a
                                     caller that maps keypoints to cells without it (build-prior) */
    const char *cache_dir;        /* NULL: no cache */
    int batch;                    /* computed features: images per network pass in sa3d_provider_get_many; 0: 2 on
                                     a GPU (an image and its mirror), 1 on the CPU, which gains nothing by more */
    const sa3d_dpt_preprocess_params *depth_processor; /* computed depth: the model's processor (copied;
                                     sa3d_dpt_preprocess_params_find reads a folder's); NULL: the default */
} sa3d_provider_params;
SA3D_API sa3d_provider_params sa3d_provider_params_default(void);

typedef struct sa3d_provider sa3d_provider;   /* opaque; one thread at a time unless sa3d_provider_concurrent */

SA3D_API sa3d_status sa3d_feature_provider_new(sa3d_provider **out, sa3d_dataset *ds, const sa3d_provider_params *p,
                                               sa3d_error *err);
SA3D_API sa3d_status sa3d_depth_provider_new(sa3d_provider **out, sa3d_dataset *ds, const sa3d_provider_params *p,
                                             sa3d_error *err);
SA3D_API sa3d_status sa3d_mask_provider_new(sa3d_provider **out, sa3d_dataset *ds, const sa3d_provider_params *p,
                                            sa3d_error *err);
SA3D_API void sa3d_provider_free(sa3d_provider *pr);

/* A map for one image: data is owned by the caller (free with free()). Features: shape (C, g, g); depth and
 * masks: (1, H, W) at the annotation's image size. flip: the left-right mirrored image. */
typedef struct sa3d_map {
    int c, h, w;
    float *data;
} sa3d_map;
SA3D_API sa3d_status sa3d_provider_get(sa3d_provider *pr, const char *category, const char *id, int flip,
                                       sa3d_map *out, sa3d_error *err);

/* One image of sa3d_provider_get_many: what to get (category, id, flip) and what came of it. */
typedef struct sa3d_provider_item {
    const char *category, *id;
    int flip;
    sa3d_map map;                 /* out: owned by the caller (free with free()); zeros on failure */
    sa3d_status status;           /* out */
    sa3d_error err;               /* out: why, when status != SA3D_OK */
} sa3d_provider_item;
/* sa3d_provider_get for each of items[0..n), giving the same maps and cache entries, but sooner where the work
 * allows: a provider that may be called concurrently serves the items on every core; a feature provider that
 * computes decodes and preprocesses the images on every core (an image asked for with and without flip is decoded
 * once), then runs the network on them in order, `batch` images per pass. For a GPU, which would otherwise wait for
 * the decoder, and for an image and its mirror, which then share one pass. Every item gets its own status; returns
 * the first failure in item order, its message in err (SA3D_OK when every item succeeded). One thread at a time,
 * as sa3d_provider_get. The counters may count an item repeated in the list as computed twice. */
SA3D_API sa3d_status sa3d_provider_get_many(sa3d_provider *pr, sa3d_provider_item *items, int n, sa3d_error *err);

/* Progress and cancellation over the minutes a network takes on many images: fn(user, category, id, flip) is
 * called on the calling thread after each map a computing provider's network made; a non-zero return cancels the
 * rest of that sa3d_provider_get / sa3d_provider_get_many call (the items not yet computed fail with
 * SA3D_ERR_CANCELLED; a map already made is kept, cached and returned). fn NULL: none. Imports never call it. */
typedef int (*sa3d_provider_hook)(void *user, const char *category, const char *id, int flip);
SA3D_API void sa3d_provider_set_hook(sa3d_provider *pr, sa3d_provider_hook fn, void *user);

/* 1 when sa3d_provider_get may be called from several threads at once on this provider (imported features,
 * depth or masks: each call reads its own file), 0 otherwise (a computing provider owns one workspace). */
SA3D_API int sa3d_provider_concurrent(const sa3d_provider *pr);

/* h (start: SA3D_STAMP_START) folded with a stamp of the files an importing provider may read for category/id: the
 * size and modification time of each, or its absence. sa3d_eval_run keys a category's resumable predictions with
 * it (sa3d_eval_params.part_key), so maps written again into the same folder are not taken for the ones those
 * predictions were made from. Providers that read no files of their own return h: computed maps (the network's
 * id is in the run's settings) and the dataset's segmentations and boxes. */
#define SA3D_STAMP_START 1469598103934665603ull
SA3D_API uint64_t sa3d_provider_stamp(const sa3d_provider *pr, const char *category, const char *id, uint64_t h);

/* Counters since creation: maps served from the cache, computed (or imported), and cache entries rejected as
 * stale or corrupt. */
typedef struct sa3d_provider_stats { long cache_hits, computed, rejected; } sa3d_provider_stats;
SA3D_API sa3d_provider_stats sa3d_provider_get_stats(const sa3d_provider *pr);

/* SA3D_ERR_ARG naming both sizes when the features file at path (open as st) records an input size ("size"
 * metadata, as `semalign3d features` and synth-spair write it) other than input_size: keypoints go to cells
 * through it, and at another size they land on other cells with no other sign of it. Files that record none
 * (GeoAware's .npy, other tools' files) pass. The importing provider and `match --features1/2` check it. */
SA3D_API sa3d_status sa3d_features_check_size(const sa3d_safetensors *st, const char *path, int input_size,
                                              sa3d_error *err);

/* NumPy .npy reader (format versions 1-3, little-endian f4/f2/f8, C order). dims: shape, ndim <= 4. Hostile
 * headers give SA3D_ERR_FORMAT naming the file. data: caller frees with free(). */
SA3D_API sa3d_status sa3d_npy_read(const char *path, float **data, int *ndim, long long dims[4], sa3d_error *err);
SA3D_API sa3d_status sa3d_npy_parse(const void *buf, size_t len, const char *label, float **data, int *ndim,
                                    long long dims[4], sa3d_error *err);

#ifdef __cplusplus
}
#endif
#endif
