/* semalign3d: datasets - SPair-71k in its official layout (METHOD.md section 1), PF-PASCAL and AP-10K behind
 * the same interface: per-image and per-pair annotations, sorted deterministic lists per split, the
 * left-right keypoint flip map, and the PCK threshold base of each dataset.
 *
 *     sa3d_dataset *ds;  sa3d_error err;
 *     sa3d_dataset_params p = sa3d_dataset_params_default();          // SPair-71k, lenient
 *     if (sa3d_dataset_open(&ds, "SPair-71k", &p, &err)) { ... }
 *     int n = sa3d_dataset_n_pairs(ds, "test");
 *     for (int i = 0; i < n; i++) { const sa3d_pair *pr = sa3d_dataset_pair(ds, "test", i); ... }
 *     sa3d_dataset_close(ds);
 *
 * Coordinates are pixels of the original image, x = column, y = row (METHOD.md 2.1).
 *
 * Malformed records: with params.strict = 0 (default) a record with a missing or mistyped field, a keypoint
 * outside its image, or an unknown category is skipped and reported through the warning callback (file name
 * and field); with strict = 1 the first such record fails the open with SA3D_ERR_FORMAT. Nothing crashes. */
#ifndef SEMALIGN3D_DATA_H
#define SEMALIGN3D_DATA_H

#include <stddef.h>
#include "semalign3d/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SA3D_MAX_KPS 64          /* keypoint slots per category (SPair has at most 30) */
#define SA3D_N_SPAIR_CATEGORIES 18

typedef enum sa3d_dataset_kind { SA3D_DATASET_SPAIR, SA3D_DATASET_PFPASCAL, SA3D_DATASET_AP10K } sa3d_dataset_kind;

/* One image record (SPair ImageAnnotation/<category>/<id>.json). */
typedef struct sa3d_image_anno {
    char id[64];                 /* file name without extension ("2008_002719") */
    char filename[80];           /* "2008_002719.jpg" */
    char category[32];
    int width, height;
    float bbox[4];               /* x_min, y_min, x_max, y_max */
    int n_slots;                 /* keypoint slots (keys "0".."n-1") */
    float kps[SA3D_MAX_KPS][2];  /* (x, y); valid where visible */
    unsigned char visible[SA3D_MAX_KPS];
    int truncated, occluded, difficult;   /* -1 when absent */
    int azimuth_id;                       /* -1 when absent */
} sa3d_image_anno;

/* One pair record (SPair PairAnnotation/<split>/<pair>.json). The keypoints are those annotated in both
 * images, in the record's order: src_kps[i] and trg_kps[i] carry the id kp_ids[i]. */
typedef struct sa3d_pair {
    char id[160];                /* file name without .json: "000001-2008_002719-2008_004100:aeroplane" */
    char category[32];
    char src[64], trg[64];       /* image ids (no extension) */
    int src_size[2], trg_size[2];   /* width, height */
    float src_bbox[4], trg_bbox[4];
    int n_kps;
    int kp_ids[SA3D_MAX_KPS];
    float src_kps[SA3D_MAX_KPS][2], trg_kps[SA3D_MAX_KPS][2];
    /* difficulty flags (SPair; -1 when absent): viewpoint and scale variation 0/1/2 (easy/medium/hard),
     * truncation and occlusion 0..3 (none/src/trg/both), mirror 0/1 */
    int viewpoint_variation, scale_variation, truncation, occlusion, mirror;
    float threshold_base;        /* PCK: alpha x this is the distance bound (SPair: max(w, h) of trg_bbox) */
} sa3d_pair;

typedef void (*sa3d_warning_fn)(void *user, const char *message);

typedef struct sa3d_dataset_params {
    sa3d_dataset_kind kind;      /* SA3D_DATASET_SPAIR */
    int strict;                  /* 0: skip malformed records with a warning; 1: fail */
    const char *categories;      /* comma-separated subset, or NULL for all */
    sa3d_warning_fn warn;        /* called once per skipped record; NULL = silent */
    void *warn_user;
} sa3d_dataset_params;
SA3D_API sa3d_dataset_params sa3d_dataset_params_default(void);

typedef struct sa3d_dataset sa3d_dataset;   /* opaque: owns every record it read */

/* Opens a dataset root. Pair lists are read lazily per split on first use. */
SA3D_API sa3d_status sa3d_dataset_open(sa3d_dataset **out, const char *root, const sa3d_dataset_params *p,
                                       sa3d_error *err);
SA3D_API void sa3d_dataset_close(sa3d_dataset *ds);

/* Pairs of a split ("trn", "val", "test"), sorted by pair id. Loads the split on first call; on failure
 * returns -1 and fills err. */
SA3D_API int sa3d_dataset_load_split(sa3d_dataset *ds, const char *split, sa3d_error *err);
SA3D_API int sa3d_dataset_n_pairs(const sa3d_dataset *ds, const char *split);          /* 0 if not loaded */
SA3D_API const sa3d_pair *sa3d_dataset_pair(const sa3d_dataset *ds, const char *split, int i);
SA3D_API const sa3d_pair *sa3d_dataset_find_pair(const sa3d_dataset *ds, const char *split, const char *pair_id);

/* Sorted ids of the images appearing in the split's pairs of one category (METHOD.md 1.4). The array is owned
 * by the dataset. */
SA3D_API int sa3d_dataset_split_images(sa3d_dataset *ds, const char *split, const char *category,
                                       const char *const **ids, sa3d_error *err);
/* The image record of category/id (read on first use, cached). */
SA3D_API sa3d_status sa3d_dataset_image(sa3d_dataset *ds, const char *category, const char *id,
                                        const sa3d_image_anno **out, sa3d_error *err);
/* Paths (owned by the caller, free with free()): JPEGImages/<cat>/<id>.jpg and Segmentation/<cat>/<id>.png. */
SA3D_API char *sa3d_dataset_image_path(const sa3d_dataset *ds, const char *category, const char *id);
SA3D_API char *sa3d_dataset_mask_path(const sa3d_dataset *ds, const char *category, const char *id);

/* SPair categories in sorted order (METHOD.md 1.4); index or -1. */
SA3D_API const char *sa3d_spair_category(int i);
SA3D_API int sa3d_spair_category_index(const char *name);
/* Left-right flip map of a SPair category (METHOD.md 1.6): map[k] is the keypoint that k becomes in the
 * mirrored image (k itself for keypoints on the symmetry plane). Returns the slot count, or -1. */
SA3D_API int sa3d_spair_flip_map(const char *category, int map[SA3D_MAX_KPS]);

#ifdef __cplusplus
}
#endif
#endif
