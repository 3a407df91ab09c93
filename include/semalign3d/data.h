/* semalign3d: datasets - SPair-71k in its official layout (METHOD.md section 1), PF-PASCAL and AP-10K behind
 * the same interface: per-image and per-pair annotations, sorted deterministic lists per split, the
 * left-right keypoint flip map, and the PCK threshold base of each dataset.
 *
 *     sa3d_dataset *ds;  sa3d_error err;
 *     sa3d_dataset_params p = sa3d_dataset_params_default();          // SPair-71k, lenient
 *     if (sa3d_dataset_open(&ds, "SPair-71k", &p, &err)) { ... }
 *     int n = sa3d_dataset_load_split(ds, "test", &err);               // -1 on failure
 *     for (int i = 0; i < n; i++) { const sa3d_pair *pr = sa3d_dataset_pair(ds, "test", i); ... }
 *     sa3d_dataset_close(ds);
 *
 * Coordinates are pixels of the original image as stored in the annotation, x = column, y = row
 * (METHOD.md 2.1); nothing is shifted or rescaled.
 *
 * Layouts read (root = the folder passed to sa3d_dataset_open):
 *   SPair-71k (SA3D_DATASET_SPAIR), the official release:
 *     PairAnnotation/<split>/<pair id>.json   pair id "<num>-<src id>-<trg id>:<category>"
 *     ImageAnnotation/<category>/<id>.json, JPEGImages/<category>/<id>.jpg, Segmentation/<category>/<id>.png
 *     Layout/{large,small}/<split>.txt        one pair id per line; read only when params.layout is set.
 *   The pairs of a split are the files of PairAnnotation/<split>/. There is no fallback to the Layout lists:
 *   they name files of that folder, so without it there is nothing to read and the load fails with
 *   SA3D_ERR_IO. With params.layout = "small" (or "large") only the pairs listed in
 *   Layout/<layout>/<split>.txt are read; a listed pair whose file is missing is a malformed record (below).
 *   A pair's threshold_base is max(x_max - x_min, y_max - y_min) of trg_bndbox, no +1 ([CODE]
 *   raw_data_utils.get_threshold_from_annotation, [GEO] load_spair_data).
 *   PF-PASCAL (SA3D_DATASET_PFPASCAL), as GeoAware-SC's data/prepare_pfpascal.sh leaves it (the Proposal
 *   Flow PF-dataset-PASCAL folder plus the weakalign/NCNet pair lists); root is that folder, or its parent
 *   when the parent holds PF-dataset-PASCAL/:
 *     <split>_pairs_pf_pascal.csv  (split "trn" also finds train_pairs_pf_pascal.csv), a header row, then
 *        source_image,target_image,class,XA,YA,XB,YB  (val, test: keypoints inline, XA = "x1;x2;...", class
 *                                                      1..20 in the PASCAL VOC order), or
 *        source_image,target_image,class[,flip]        (trn: keypoints from the .mat files; flip is ignored)
 *     JPEGImages/<id>.jpg            image paths in the CSV are reduced to their file name
 *     Annotations/<category>/<id>.mat   MATLAB level-5 file (compressed or not) with kps = [n][2] numbers,
 *                                       NaN rows not annotated; keypoint id = row index
 *   Sizes come from the JPEG headers. bbox is the whole image [0, 0, W, H] and threshold_base is
 *   max(W, H) of the target image, as GeoAware evaluates PF-PASCAL (alpha x image size) and as SemAlign3D's
 *   load_normalized_img_anno_pfpascal sets the box. Pair ids are "<row>-<src id>-<trg id>:<category>" with
 *   the 1-based data row zero-padded to 6 digits, so the sorted order is the CSV order. Keypoint ids of the
 *   val/test lists are the positions in XA (GeoAware's get_points).
 *   AP-10K (SA3D_DATASET_AP10K), the SPair-like benchmark GeoAware-SC's prepare_ap10k.ipynb writes:
 *     PairAnnotation/<split>/<src>-<trg>:<category>.json  {"src_json_path": ".../ImageAnnotation/<family>/
 *        <species>/<id>.json", "trg_json_path": ...}; the path is resolved from its "ImageAnnotation/" part
 *        on, under root. <category> is the species (or the family in *_cross_species splits, "all" in
 *        *_cross_family splits).
 *     ImageAnnotation/<family>/<species>/<id>.json   COCO fields: width, height, bbox [x, y, w, h],
 *        keypoints [x, y, v] x 17 (visible when v > 0, as GeoAware's v / 2 > 0), file_name;
 *        JPEGImages/<family>/<species>/<id>.jpg.
 *   bbox is stored as [x, y, x + w, y + h]; threshold_base is max(w, h) of the target box ([GEO]
 *   load_ap10k_data). AP-10K image ids are unique, so sa3d_dataset_image accepts the species, the family or
 *   "all" as category.
 *
 * Validation, for every kind: each required field present with its type; image sizes are integers in
 * [1, 100000]; boxes are 4 finite numbers with x_min <= x_max and y_min <= y_max (a box may reach past the
 * image), and a pair's target box must not be empty; a keypoint must lie in the closed rectangle
 * [0, W] x [0, H] - SPair's boxes come from VOC's 1-based ones, so x == W occurs (trg_bndbox x_max == 500 ==
 * width in the sample) and is accepted (read, like every coordinate, as 0-based, METHOD.md 2.1; clamped where a
 * pixel is needed), while x < 0 or x > W is an error; keypoint ids are integers in
 * [0, SA3D_MAX_KPS), no id twice; src_kps, trg_kps and kps_ids have equal lengths of at most SA3D_MAX_KPS;
 * SPair categories are the 18 of METHOD.md 1.4 (PF-PASCAL: the 20 VOC classes); a SPair pair file's name
 * agrees with its src_imname, trg_imname, category and filename fields, an image record's with its filename
 * and category; difficulty flags, when present, are integers in their ranges (sa3d_pair); an image record's
 * truncated, occluded and difficult are 0 or 1 (PASCAL VOC). A record file
 * larger than SA3D_RECORD_MAX_BYTES is refused unread. Fields not listed in the structs (src_database,
 * image_depth, pose, pair_id, src_pose, ...) are not read.
 *
 * Malformed records (strict/lenient rule): while a split is loaded, a record that fails validation, or whose
 * file (or referenced image, .mat or JPEG file) cannot be read, is handled by params.strict:
 *   strict = 0 (default): the record is skipped and params.warn(warn_user, message) is called once for it;
 *   strict = 1: sa3d_dataset_load_split fails with the record's status - SA3D_ERR_FORMAT for a bad record,
 *               SA3D_ERR_IO for a file that cannot be read - and err names the file and the field.
 * Messages have the form "<path>: <field>: <problem>", e.g. ".../test/000001-a-b:cat.json: src_kps[3]:
 * expected [x, y] numbers". Running out of memory (SA3D_ERR_NOMEM) always fails the call. A single image
 * record asked for with sa3d_dataset_image is never skipped: a bad one returns SA3D_ERR_FORMAT. Nothing
 * crashes on any input; the record parsers are fuzzed.
 *
 * Thread safety: a dataset is not locked. Calls that read files (open, load_split, split_images, image) must
 * not run concurrently with any other call on the same dataset; once the splits and images a program needs
 * are loaded, the getters (n_pairs, pair, find_pair, the paths) may be called from several threads. */
#ifndef SEMALIGN3D_DATA_H
#define SEMALIGN3D_DATA_H

#include <stddef.h>
#include "semalign3d/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SA3D_MAX_KPS 64          /* keypoint slots per category (SPair has at most 30) */
#define SA3D_N_SPAIR_CATEGORIES 18
#define SA3D_RECORD_MAX_BYTES ((size_t)1 << 20)   /* cap on one annotation file (JSON, .mat); lists: 64x */

typedef enum sa3d_dataset_kind { SA3D_DATASET_SPAIR, SA3D_DATASET_PFPASCAL, SA3D_DATASET_AP10K } sa3d_dataset_kind;

/* One image record (SPair ImageAnnotation/<category>/<id>.json; AP-10K likewise one level deeper; PF-PASCAL
 * Annotations/<category>/<id>.mat plus the JPEG header). */
typedef struct sa3d_image_anno {
    char id[64];                 /* file name without extension ("2008_002719") */
    char filename[80];           /* "2008_002719.jpg" */
    char category[32];           /* SPair, PF-PASCAL: the category folder; AP-10K: the species folder */
    int width, height;
    float bbox[4];               /* x_min, y_min, x_max, y_max (PF-PASCAL: 0, 0, W, H) */
    int n_slots;                 /* keypoint slots: SPair keys "0".."n-1" (30), AP-10K 17, PF-PASCAL rows */
    float kps[SA3D_MAX_KPS][2];  /* (x, y) where visible, else (0, 0) */
    unsigned char visible[SA3D_MAX_KPS];
    int truncated, occluded, difficult;   /* SPair; -1 when absent */
    int azimuth_id;                       /* SPair; -1 when absent */
    char supercategory[32];      /* AP-10K: the family folder; "" for the other datasets */
} sa3d_image_anno;

/* One pair record (SPair PairAnnotation/<split>/<pair>.json). The keypoints are those annotated in both
 * images, in the record's order (AP-10K, PF-PASCAL trn: increasing id): src_kps[i] and trg_kps[i] carry the
 * id kp_ids[i]. */
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
    int strict;                  /* 0: skip malformed records with a warning; 1: fail (see the rule above) */
    const char *categories;      /* comma-separated subset, or NULL for all; copied at open */
    sa3d_warning_fn warn;        /* called once per skipped record, and by the providers for an image decoded
                                    despite damaged data (sa3d_image.warning; each time it is decoded, from any
                                    thread, one call at a time); NULL = silent */
    void *warn_user;
    const char *layout;          /* SPair only: NULL = every file of PairAnnotation/<split>; "large" or
                                    "small" = the pairs listed in Layout/<layout>/<split>.txt; copied */
} sa3d_dataset_params;
SA3D_API sa3d_dataset_params sa3d_dataset_params_default(void);

typedef struct sa3d_dataset sa3d_dataset;   /* opaque: owns every record it read */

/* Opens a dataset root: checks that it is a directory holding the kind's annotation folder
 * (ImageAnnotation/ for SPair and AP-10K, JPEGImages/ for PF-PASCAL) and that every name in p->categories
 * is known (SPair's and PF-PASCAL's lists; for AP-10K a species or family folder of the dataset, or "all").
 * Reads no record: pair lists are read per split on first use. p may be NULL (defaults). On failure *out is NULL: SA3D_ERR_IO (root or folder missing), SA3D_ERR_ARG (unknown
 * category, layout other than "large"/"small" or for another kind than SPair, strict not 0 or 1),
 * SA3D_ERR_NOMEM. */
SA3D_API sa3d_status sa3d_dataset_open(sa3d_dataset **out, const char *root, const sa3d_dataset_params *p,
                                       sa3d_error *err);
SA3D_API void sa3d_dataset_close(sa3d_dataset *ds);     /* NULL is a no-op */
SA3D_API sa3d_dataset_kind sa3d_dataset_get_kind(const sa3d_dataset *ds);

/* Reads the pairs of a split ("trn", "val", "test"; AP-10K also "test_cross_species" etc.: any name of
 * letters, digits, '_' and '-'), keeps those of the selected categories, sorts them by pair id (strcmp) and
 * returns their count. A loaded split is kept: a second call returns the count at once. On failure returns
 * -1, fills err (SA3D_ERR_ARG bad split name, SA3D_ERR_IO split folder or list missing, SA3D_ERR_FORMAT /
 * SA3D_ERR_IO from a record in strict mode, SA3D_ERR_NOMEM) and keeps nothing of the split. */
SA3D_API int sa3d_dataset_load_split(sa3d_dataset *ds, const char *split, sa3d_error *err);
SA3D_API int sa3d_dataset_n_pairs(const sa3d_dataset *ds, const char *split);          /* 0 if not loaded */
/* Pair records that lenient mode skipped while the split was loaded (0 if not loaded): a protocol's pair count
 * (SPair-71k test: 12,234) then falls short by as many, which eval and pck print and record. */
SA3D_API int sa3d_dataset_n_skipped(const sa3d_dataset *ds, const char *split);
/* Pair i of a loaded split in sorted order, or NULL (split not loaded, i out of range). Borrowed: valid until
 * sa3d_dataset_close. */
SA3D_API const sa3d_pair *sa3d_dataset_pair(const sa3d_dataset *ds, const char *split, int i);
/* 1 when category passes the dataset's selection (params.categories; every category passes without one). */
SA3D_API int sa3d_dataset_category_selected(const sa3d_dataset *ds, const char *category);
/* Category i of the selection (params.categories as parsed: trimmed, repeats dropped, in the order given), or NULL
 * past its end and for a dataset opened without one. Borrowed: valid until sa3d_dataset_close. */
SA3D_API const char *sa3d_dataset_selected_category(const sa3d_dataset *ds, int i);
/* 1 when category names one of the dataset kind's categories (SPair's 18, PF-PASCAL's 20; for AP-10K a species or
 * family folder of the dataset, or "all"), selected or not. */
SA3D_API int sa3d_dataset_category_known(const sa3d_dataset *ds, const char *category);
/* The pair with this id in a loaded split (binary search), or NULL. */
SA3D_API const sa3d_pair *sa3d_dataset_find_pair(const sa3d_dataset *ds, const char *split, const char *pair_id);

/* Sorted, distinct ids of the images appearing (as source or target) in the split's pairs of one category
 * (METHOD.md 1.4; the released code keeps Python-set order, we sort with strcmp). Loads the split if needed.
 * Returns the count (0 with *ids = NULL when the category has no pair) or -1 with err filled. The array and
 * strings are owned by the dataset and valid until sa3d_dataset_close. */
SA3D_API int sa3d_dataset_split_images(sa3d_dataset *ds, const char *split, const char *category,
                                       const char *const **ids, sa3d_error *err);
/* The image record of category/id, read on first use and cached. *out is borrowed (valid until close); NULL
 * on failure: SA3D_ERR_IO (no such record), SA3D_ERR_FORMAT (malformed, whatever params.strict says),
 * SA3D_ERR_ARG (id or category with '/' or empty), SA3D_ERR_NOMEM. */
SA3D_API sa3d_status sa3d_dataset_image(sa3d_dataset *ds, const char *category, const char *id,
                                        const sa3d_image_anno **out, sa3d_error *err);
/* SA3D_ERR_FORMAT naming the pair when its src_imsize or trg_imsize differs from the width and height of the
 * image's record: matchers map the pair's keypoints to feature cells through the pair's size, features are made
 * at the image's, and the difference would move every match with no other sign. A record that cannot be read
 * passes (the caller meets it where it needs it). */
SA3D_API sa3d_status sa3d_dataset_pair_check_sizes(sa3d_dataset *ds, const sa3d_pair *pair, sa3d_error *err);
/* Paths, allocated with malloc (free with free()); NULL when out of memory or an argument is NULL. The files
 * need not exist.
 * SPair: JPEGImages/<cat>/<id>.jpg and Segmentation/<cat>/<id>.png. PF-PASCAL: JPEGImages/<id>.jpg and
 * Segmentation/<cat>/<id>.png (not part of the release). AP-10K: JPEGImages/<family>/<species>/<id>.jpg and
 * Segmentation/<family>/<species>/<id>.png, the family found from a cached record or the folder tree. */
SA3D_API char *sa3d_dataset_image_path(const sa3d_dataset *ds, const char *category, const char *id);
SA3D_API char *sa3d_dataset_mask_path(const sa3d_dataset *ds, const char *category, const char *id);

/* PCK threshold base of a box [x_min, y_min, x_max, y_max]: max(x_max - x_min, y_max - y_min), no +1
 * (METHOD.md 7.1). */
SA3D_API float sa3d_bbox_threshold_base(const float bbox[4]);

/* SPair categories in sorted order (METHOD.md 1.4); name, or NULL when i is outside [0, 18). */
SA3D_API const char *sa3d_spair_category(int i);
/* Index of a SPair category name, or -1. */
SA3D_API int sa3d_spair_category_index(const char *name);
/* Left-right flip map of a SPair category (METHOD.md 1.6, the SPAIR_FLIP table): map[k] is the keypoint
 * that k becomes in the mirrored image (k itself on the symmetry plane and for ids the table leaves unused,
 * such as bus 8 and 9). Returns the slot count (largest id in the table + 1, as METHOD.md 1.5) and fills
 * map[0..slots); or -1 for an unknown category (map untouched). map[k] for k >= slots is set to k. */
SA3D_API int sa3d_spair_flip_map(const char *category, int map[SA3D_MAX_KPS]);
/* The same for any dataset kind: SPair as above; PF-PASCAL per VOC class (SemAlign3D's PF_PASCAL_FLIP
 * table, aeroplane made an involution, see spair.c); AP-10K one map for every category (17 keypoints: eyes,
 * shoulders, elbows, front paws, hips, knees, back paws swap; nose, neck, tail root stay). Returns the slot
 * count, or -1 for an unknown category or kind (map untouched). */
SA3D_API int sa3d_flip_map(sa3d_dataset_kind kind, const char *category, int map[SA3D_MAX_KPS]);

#ifdef __cplusplus
}
#endif
#endif
