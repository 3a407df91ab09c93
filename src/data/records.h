/* Internal to src/data: record parsers that work on bytes in memory (so the fuzz targets and tests reach them
 * without files), the dataset handle shared by the per-dataset loaders, and small helpers (directory
 * listing, the strict/lenient record rule). Not part of the public API. */
#ifndef SA3D_DATA_RECORDS_H
#define SA3D_DATA_RECORDS_H

#include <stddef.h>
#include "semalign3d/data.h"

#define SA3D_MAX_IMAGE_SIDE 100000 /* image sizes in [1, this] (data.h) */
#define SA3D_CSV_MAX_BYTES (SA3D_RECORD_MAX_BYTES * 64)

/* ---- record parsers (text need not be NUL-terminated; file names the record in messages) ---- */

/* SPair pair record. pair_id (may be NULL) is the file name without .json: when given it becomes out->id and
 * must agree with the record's src_imname, trg_imname, category and filename. On failure *out is zeroed and
 * err says "<file>: <field>: <problem>" (SA3D_ERR_FORMAT). */
sa3d_status sa3d_spair_parse_pair(const char *text, size_t len, const char *file, const char *pair_id,
                                  sa3d_pair *out, sa3d_error *err);
/* SPair image record. category and id (either may be NULL) are the folder and the file name without .json;
 * when given they must agree with the record's category and filename fields. */
sa3d_status sa3d_spair_parse_image(const char *text, size_t len, const char *file, const char *category,
                                   const char *id, sa3d_image_anno *out, sa3d_error *err);
/* AP-10K image record (COCO annotation + image fields). family, species, id as for the SPair one. */
sa3d_status sa3d_ap10k_parse_image(const char *text, size_t len, const char *file, const char *family,
                                   const char *species, const char *id, sa3d_image_anno *out,
                                   sa3d_error *err);
/* AP-10K pair record: the two image-record paths, reduced to "<family>/<species>/<id>" (no extension) after
 * their last "ImageAnnotation/". src and trg receive at most cap bytes each. */
sa3d_status sa3d_ap10k_parse_pair(const char *text, size_t len, const char *file, char *src, char *trg,
                                  size_t cap, sa3d_error *err);

/* One data row of a PF-PASCAL pair list, split into fields (no quotes inside fields; surrounding double
 * quotes are removed). line need not be NUL-terminated. */
typedef struct sa3d_pf_row {
    char src[64], trg[64]; /* image ids: the file names without directory and extension */
    int class_index;       /* 1..20 */
    int n_kps;             /* -1 when the row has no keypoint columns (trn lists) */
    double src_kps[SA3D_MAX_KPS][2],
        trg_kps[SA3D_MAX_KPS][2]; /* as written, checked against the sizes later */
} sa3d_pf_row;
sa3d_status sa3d_pfpascal_parse_row(const char *line, size_t len, const char *where, sa3d_pf_row *out,
                                    sa3d_error *err);
const char *sa3d_pfpascal_category(int class_index); /* 1..20 -> name, else NULL */

/* MATLAB level-5 MAT file: finds the top-level numeric 2-D variable `name` (any numeric storage type, stored
 * plain or in a zlib-compressed element) and returns its values as doubles, row-major [rows][cols], in
 * *out (sa3d_malloc, caller frees). SA3D_ERR_FORMAT for a corrupt file or a missing/non-numeric variable,
 * SA3D_ERR_UNSUPPORTED for big-endian files or complex data, SA3D_ERR_NOMEM. max_values caps rows x cols. */
sa3d_status sa3d_mat_read_matrix(const unsigned char *buf, size_t len, const char *file, const char *name,
                                 size_t max_values, double **out, int *rows, int *cols, sa3d_error *err);

/* Image size from a JPEG (SOF marker) or PNG (IHDR) header without decoding. */
sa3d_status sa3d_image_header_size(const char *path, int *width, int *height, sa3d_error *err);

/* ---- the dataset handle ---- */

typedef struct ds_cat_images {
    char category[32];
    char **ids; /* [n] pointers into block */
    char *block;
    int n;
} ds_cat_images;

typedef struct ds_split {
    char name[32];
    sa3d_pair *pairs; /* [n], sorted by id */
    int n;
    ds_cat_images *cats; /* per-category image lists, filled on demand */
    int n_cats;
    int skipped; /* pair records skipped in lenient mode */
} ds_split;

typedef struct ds_image {
    char key[160]; /* "<category>/<id>" (AP-10K: "<id>") */
    char dir[160]; /* AP-10K: "<family>/<species>" */
    sa3d_image_anno anno;
} ds_image;

struct sa3d_dataset {
    sa3d_dataset_kind kind;
    char *root; /* PF-PASCAL: the PF-dataset-PASCAL folder */
    int strict;
    sa3d_warning_fn warn;
    void *warn_user;
    char *layout;
    char (*cats)[32]; /* category filter, or NULL for all */
    int n_cats;
    ds_split *splits;
    int n_splits;
    int load_skipped; /* sa3d_ds_bad_record's count while a split loads */
    ds_image **imgs; /* open-addressing hash table of cached image records, cap_imgs slots */
    size_t n_imgs, cap_imgs;
};

/* 1 when the category passes the filter of params.categories. */
int sa3d_ds_category_selected(const sa3d_dataset *ds, const char *category);
/* The strict/lenient rule (data.h) for one bad record whose problem is in rec: returns SA3D_OK after calling
 * the warning callback when the record is to be skipped; otherwise copies rec into err and returns its code
 * (strict mode, or SA3D_ERR_NOMEM in any mode). */
sa3d_status sa3d_ds_bad_record(sa3d_dataset *ds, const sa3d_error *rec, sa3d_error *err);
/* Cached image record lookup and insertion (the record is copied). */
const ds_image *sa3d_ds_image_find(const sa3d_dataset *ds, const char *key);
sa3d_status sa3d_ds_image_add(sa3d_dataset *ds, const ds_image *img, const ds_image **out, sa3d_error *err);

/* Sorted (strcmp) names in dir: files ending in suffix (suffix may be "") or, with dirs = 1, subfolders.
 * Names starting with '.' are left out. Free with sa3d_ds_free_names. */
sa3d_status sa3d_ds_list_dir(const char *dir, const char *suffix, int dirs, char ***names, int *n,
                             sa3d_error *err);
void sa3d_ds_free_names(char **names, int n);
/* sa3d_malloc'ed "a/b/c..." (NULL-terminated list of parts); NULL when out of memory. */
char *sa3d_ds_path(const char *first, ...);
/* 1 when s is a usable single path component and JSON string: non-empty, shorter than cap, no '/', '\\', '"' or
 * control byte, not "." or "..". */
int sa3d_ds_safe_name(const char *s, size_t cap);
/* Copies at most cap - 1 bytes of s and terminates; returns 0 when s did not fit. */
int sa3d_ds_copy(char *dst, size_t cap, const char *s);

/* Per-dataset split loaders: fill *pairs (sa3d_malloc'ed, unsorted) and *n. */
sa3d_status sa3d_spair_load_split(sa3d_dataset *ds, const char *split, sa3d_pair **pairs, int *n,
                                  sa3d_error *err);
sa3d_status sa3d_pfpascal_load_split(sa3d_dataset *ds, const char *split, sa3d_pair **pairs, int *n,
                                     sa3d_error *err);
sa3d_status sa3d_ap10k_load_split(sa3d_dataset *ds, const char *split, sa3d_pair **pairs, int *n,
                                  sa3d_error *err);
/* Per-dataset image record readers (uncached; the caller caches). */
sa3d_status sa3d_spair_read_image(const sa3d_dataset *ds, const char *category, const char *id, ds_image *out,
                                  sa3d_error *err);
sa3d_status sa3d_pfpascal_read_image(const sa3d_dataset *ds, const char *category, const char *id,
                                     ds_image *out, sa3d_error *err);
sa3d_status sa3d_ap10k_read_image(const sa3d_dataset *ds, const char *category, const char *id, ds_image *out,
                                  sa3d_error *err);
/* AP-10K: "<family>/<species>" holding ImageAnnotation/.../<id>.json, searched as data.h says. */
sa3d_status sa3d_ap10k_find_dir(const char *root, const char *category, const char *id, char *dir, size_t cap,
                                sa3d_error *err);

/* Shared JSON field readers (cJSON items; file and field name the problem in err). */
struct cJSON;
sa3d_status sa3d_json_int(const struct cJSON *obj, const char *key, const char *file, int required, long lo,
                          long hi, int *out, sa3d_error *err);
sa3d_status sa3d_json_string(const struct cJSON *obj, const char *key, const char *file, int required,
                             char *out, size_t cap, sa3d_error *err);
sa3d_status sa3d_json_numbers(const struct cJSON *arr, const char *field, const char *file, int n_min,
                              int n_max, double *out, int *n, sa3d_error *err);
/* Checks a box (finite, ordered) and a keypoint (finite, inside [0, W] x [0, H]). */
sa3d_status sa3d_check_bbox(const double b[4], const char *file, const char *field, sa3d_error *err);
sa3d_status sa3d_check_point(double x, double y, int w, int h, const char *file, const char *field,
                             sa3d_error *err);

#endif
