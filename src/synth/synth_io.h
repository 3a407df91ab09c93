/* What the synthetic dataset writers (spair_synth.c, synth3d.c) share, so that each only computes its
 * own geometry: a growing text buffer, atomic text files, bounded path formatting, the new-or-empty root
 * check, the SPair-71k layout (folders, file names, directory tree), the SPair records, the pair sampler,
 * the feature-map file, and the parallel write of a whole dataset. */
#ifndef SA3D_SYNTH_IO_H
#define SA3D_SYNTH_IO_H

#include <stddef.h>
#include <stdint.h>
#include "base/base.h"

typedef struct sa3d_sbuf { char *s; size_t len, cap; int failed; } sa3d_sbuf;

/* Appends formatted text; on allocation failure the buffer is marked failed and later appends do nothing. */
void sa3d_sb_printf(sa3d_sbuf *b, const char *fmt, ...) SA3D_PRINTF(2, 3);
/* Writes the buffer to path atomically (SA3D_ERR_NOMEM if an append failed); the buffer is not freed. */
sa3d_status sa3d_sb_write(const char *path, const sa3d_sbuf *b, sa3d_error *err);
/* snprintf into buf[n]; SA3D_ERR_ARG when the path does not fit. */
sa3d_status sa3d_path_fmt(char *buf, size_t n, sa3d_error *err, const char *fmt, ...) SA3D_PRINTF(4, 5);
/* A dataset is written only into a new or empty directory: SA3D_ERR_ARG (not a directory, not empty) or
 * SA3D_ERR_IO; SA3D_OK when root does not exist. */
sa3d_status sa3d_synth_check_root(const char *root, sa3d_error *err);

/* ---- the SPair-71k layout ------------------------------------------------------------------------------ */

/* The per-category folders of the layout; an image's file is root/<folder>/<category>/<id><suffix>. */
typedef enum sa3d_synth_folder {
    SA3D_SYNTH_IMAGE_ANNOTATION,    /* ImageAnnotation/<cat>/<id>.json */
    SA3D_SYNTH_JPEG_IMAGES,         /* JPEGImages/<cat>/<id>.jpg */
    SA3D_SYNTH_SEGMENTATION,        /* Segmentation/<cat>/<id>.png */
    SA3D_SYNTH_FEATURES,            /* Features/<cat>/<id>.features.safetensors */
    SA3D_SYNTH_DEPTH,               /* Depth/<cat>/<id>.depth.safetensors (synth3d) */
    SA3D_SYNTH_GROUND_TRUTH,        /* GroundTruth/<cat>/<id>.json (synth3d) */
    SA3D_SYNTH_N_FOLDERS
} sa3d_synth_folder;
#define SA3D_SYNTH_FOLDER_BIT(f) (1u << (f))   /* a set of folders, for sa3d_synth_make_tree */
#define SA3D_SYNTH_ALL_FOLDERS (SA3D_SYNTH_FOLDER_BIT(SA3D_SYNTH_N_FOLDERS) - 1)

/* The splits of PairAnnotation/ and Layout/large/, indexed 0 trn, 1 val, 2 test. */
#define SA3D_SYNTH_N_SPLITS 3
extern const char *const sa3d_synth_split_names[SA3D_SYNTH_N_SPLITS];

/* buf = root/<folder>, the folder itself; SA3D_ERR_ARG when it does not fit buf[n]. */
sa3d_status sa3d_synth_folder_path(char *buf, size_t n, const char *root, sa3d_synth_folder folder,
                                   sa3d_error *err);
/* buf = root/<folder>/<category>/<id><suffix>; SA3D_ERR_ARG when it does not fit buf[n]. */
sa3d_status sa3d_synth_image_path(char *buf, size_t n, const char *root, sa3d_synth_folder folder,
                                  const char *category, const char *id, sa3d_error *err);
/* Creates root/<folder>/<category> for every folder in `folders` (SA3D_SYNTH_FOLDER_BIT) and every category
 * 0 .. n_categories - 1 (named by category_name), root/PairAnnotation/<split> and root/Layout/large. */
sa3d_status sa3d_synth_make_tree(const char *root, unsigned folders, const char *(*category_name)(int index),
                                 int n_categories, sa3d_error *err);

/* ---- SPair records ------------------------------------------------------------------------------------- */

/* One image as its SPair records describe it (its ImageAnnotation file, and either side of a PairAnnotation
 * file), filled by each generator from its own geometry. Every pointer is borrowed. */
typedef struct sa3d_synth_image_record {
    const char *id, *category;
    const char *database, *annotation;   /* src_database, src_annotation: which generator made the image */
    const char *pose;                    /* "Left", "Right", "Frontal" or "Rear" */
    int width, height;
    int bbox[4];                         /* x_min, y_min, x_max, y_max */
    int azimuth_id;                      /* 0..7 */
    int truncated, occluded;             /* 0 or 1 */
    int n_kps;                           /* the record lists keys "0" .. n_kps - 1 */
    const int *kp;                       /* [n_kps][2] pixel positions, read where vis */
    const unsigned char *vis;            /* [n_kps] 1 = visible; an invisible key is written as null */
} sa3d_synth_image_record;

/* One PairAnnotation record. The mirror flag is each generator's own rule; the other flags follow from the
 * two image records (sa3d_synth_write_pair_record). */
typedef struct sa3d_synth_pair_record {
    int num;                             /* pair_id: numbered from 1 within its split */
    sa3d_synth_image_record src, trg;
    int mirror;
} sa3d_synth_pair_record;

/* "<num, 6 digits>-<src id>-<trg id>:<category>": the pair's file name and its line in Layout/large. */
void sa3d_synth_pair_id(char *buf, size_t n, const sa3d_synth_pair_record *pr);
/* root/ImageAnnotation/<category>/<id>.json, fields in the release's order (METHOD.md 1.1-1.2). */
sa3d_status sa3d_synth_write_image_record(const char *root, const sa3d_synth_image_record *im,
                                          sa3d_error *err);
/* root/PairAnnotation/<split>/<pair id>.json, fields in the release's order. The keypoints are those visible
 * in both images, by increasing id. viewpoint_variation from the circular azimuth difference d (0..4): 0 if
 * d = 0, 1 if d <= 2, else 2; scale_variation from the ratio r of bbox areas: 0 if r < 1.5, 1 if r < 2.5,
 * else 2; truncation and occlusion: 0 none, 1 src, 2 trg, 3 both. */
sa3d_status sa3d_synth_write_pair_record(const char *root, int split, const sa3d_synth_pair_record *pr,
                                         sa3d_error *err);

/* ---- pairs --------------------------------------------------------------------------------------------- */

typedef struct sa3d_synth_pair { int num, src, trg; } sa3d_synth_pair;   /* src, trg: global image indices */

/* How a generator's pairs are drawn; the images of category c are c * images_per_category + 0, 1, ... */
typedef struct sa3d_synth_pair_plan {
    const char *label;                 /* "synthetic SPair": starts the out-of-memory messages */
    int totals[SA3D_SYNTH_N_SPLITS];   /* pairs per split over all categories */
    int n_categories, images_per_category;
    uint64_t seed, tag;                /* split s, category c: sa3d_rng_for(seed, tag, s * 64 + c) */
    void *ctx;
    /* The ordered pairs of category c that split s may use, as codes a * n + b (images a and b of the
     * category, n = images_per_category), into valid[n * n]. Returns their count, or -1 with err set, also
     * when there is none (the generator says why). Called only for a category that takes a pair. */
    int (*candidates)(void *ctx, int split, int category, int *valid, sa3d_error *err);
} sa3d_synth_pair_plan;

/* For each split s, pairs[s] (free with sa3d_free; NULL when the split is empty) and n_pairs[s]: the split's
 * total spread evenly over the categories (the first ones take one more), category by category, each
 * category's pairs drawn from its candidates without replacement until all are used, then again; numbered
 * from 1 within the split. */
sa3d_status sa3d_synth_make_pairs(const sa3d_synth_pair_plan *plan,
                                  sa3d_synth_pair *pairs[SA3D_SYNTH_N_SPLITS],
                                  int n_pairs[SA3D_SYNTH_N_SPLITS], sa3d_error *err);

/* ---- feature maps -------------------------------------------------------------------------------------- */

/* root/Features/<category>/<id>.features.safetensors as `semalign3d features` writes it: "feature_map" F
 * and, when Ff is not NULL, "feature_map_flip" Ff (the mirrored image), both [C][g][g] float32, with that
 * command's metadata (model_id "synthetic", the image's JPEG path, input_size, the flip flag, the GeoAware
 * convention); `note` goes into the "synthetic" entry and says how the maps were made. */
sa3d_status sa3d_synth_write_features(const char *root, const char *category, const char *id, const float *F,
                                      const float *Ff, int C, int g, int input_size, const char *note,
                                      sa3d_error *err);

/* ---- writing a dataset --------------------------------------------------------------------------------- */

/* A generator's dataset in memory as sa3d_synth_write_dataset sees it. */
typedef struct sa3d_synth_writer {
    const char *root;
    unsigned folders;                  /* the per-category folders the images fill (SA3D_SYNTH_FOLDER_BIT) */
    const char *(*category_name)(int index);
    int n_categories;
    void *ctx;                         /* the generator's dataset, passed to both callbacks */
    int n_images;
    /* Writes every file of image i, its ImageAnnotation record included. Runs on several threads at once,
     * one image each, so it may change only image i's own data. */
    sa3d_status (*write_image)(void *ctx, int i, sa3d_error *err);
    int n_pairs[SA3D_SYNTH_N_SPLITS];
    /* The record of pair i of a split; called only after every image is written, so what write_image fills
     * in (synth3d: the bbox from the rendered mask) is final. */
    void (*pair_record)(const void *ctx, int split, int i, sa3d_synth_pair_record *out);
    const char *manifest;              /* synth_params.json: written last, it marks a complete dataset */
    int (*cancel)(void *user);         /* NULL, or polled before each file (from several threads at once) */
    void *cancel_user;
} sa3d_synth_writer;

/* Creates root and its tree (sa3d_synth_make_tree), writes the images, then the pair records (both in
 * parallel with OpenMP; every file depends only on its own item, so the output does not depend on the thread
 * count), then the Layout/large lists and last the manifest. After a failure no new item starts, and err is
 * that of the failed item with the smallest index. */
sa3d_status sa3d_synth_write_dataset(const sa3d_synth_writer *w, sa3d_error *err);

/* A dataset appears whole or not at all: a generator writes into a staging folder root/.partial-XXXXXX (inside
 * root, so the moves below are renames on one file system whatever root is: ".", a link, a mount point) and moves
 * its entries up into root at the end, synth_params.json last. sa3d_synth_stage_begin: creates root (with its
 * parents) and stage, after removing staging folders that killed runs left in root (sa3d_synth_check_root does
 * not count them); *created: root did not exist. sa3d_synth_stage_end with the write's status s: on SA3D_OK moves
 * stage's entries up, else (or when a move fails) takes out what it moved; removes stage, and a root it created
 * when the write failed; returns s, or the move's error. */
sa3d_status sa3d_synth_stage_begin(char *stage, size_t n, const char *root, int *created, sa3d_error *err);
sa3d_status sa3d_synth_stage_end(const char *stage, const char *root, int created, sa3d_status s, sa3d_error *err);

#endif
