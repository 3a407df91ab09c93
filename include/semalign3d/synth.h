/* semalign3d: synthetic datasets with a known answer, for tests and benchmarks of the readers, the feature
 * providers and caches, the matchers and PCK.
 *
 *     sa3d_synth_spair_params p = sa3d_synth_spair_params_default();
 *     p.n_categories = 3;  p.pairs_test = 30;
 *     if (sa3d_synth_spair_write("/tmp/spair-synth", &p, &err)) { puts(err.msg); return 1; }
 *     // then: sa3d_dataset_open(&ds, "/tmp/spair-synth", NULL, &err), features imported from
 *     //       "/tmp/spair-synth/Features" (sa3d_provider_params.import_dir)
 *
 * sa3d_synth_spair_write writes a small dataset in the exact layout and JSON field order of the SPair-71k
 * release (METHOD.md 1.1-1.3; the records in shared/fixtures/spair-sample), for the first n_categories of the
 * 18 sorted SPair categories, with their keypoint slot counts and flip maps (METHOD.md 1.5, 1.6):
 *
 *   JPEGImages/<cat>/<id>.jpg         a rendered object: an ellipse filling the bbox on a checkered,
 *                                     noisy background, each visible keypoint a 5 x 5 dot of its own colour
 *   Segmentation/<cat>/<id>.png       8-bit grey, 0 background, 1 inside the ellipse (instance id)
 *   ImageAnnotation/<cat>/<id>.json   every field of a real record, keys "0".."29" in kps (null where not
 *                                     visible or not a slot of the category)
 *   PairAnnotation/<split>/<NNNNNN>-<src>-<trg>:<cat>.json   every field of a real pair record; kps_ids are
 *                                     the ids visible in both images, increasing
 *   Layout/large/{trn,val,test}.txt   the pair ids of each split, one a line, in numbering order
 *   Features/<cat>/<id>.features.safetensors   "feature_map" [C][g][g] (and "feature_map_flip"), float32, unit
 *                                     cells, with the metadata `semalign3d features` writes
 *   synth_params.json                 the parameters and library version (sa3d_synth_spair_params_json),
 *                                     written last: its presence marks a complete dataset
 *
 * Image ids are "synth_NNNNNN", numbered from 1 over all categories. Pairs are numbered from 1 in each split,
 * category by category; the pairs of all three splits are drawn from the same images of the category (SPair
 * keeps its splits' images apart). Every split holds its total spread evenly over the categories (the first
 * categories take one more). Within a split and category an ordered (src, trg) pair repeats only when all
 * images x (images - 1) of them are used.
 *
 * Geometry. Width and height are drawn independently in [min_side, max_side]. The bbox [x_min, y_min, x_max,
 * y_max] (integer pixels, x_max <= W as in SPair) spans 55-95% of each side, so max(bbox w, h) >= 0.55 S (S =
 * max(W, H)) and one feature cell (S / g) is below 0.1 x that for g >= 19 (3.3 cells at g = 60). Each category
 * has a canonical layout of its slots in the unit disk of radius 0.40 around the box centre (slots at least
 * 0.1 apart); an image places them in its ellipse with a jitter of +-0.02 box units. Images with pose "Right"
 * are mirrored: slot k sits at the mirrored canonical position of flip(k), so mirroring a "Right" image gives
 * a "Left" one with consistent labels. Each slot is visible with probability kp_visible; more than half of the
 * used slots are always visible (so any two images of a category share one), except that a keypoint whose
 * feature cell (in the image or in its mirror) is taken by an earlier keypoint is jittered again or dropped.
 * Bus ids 8, 9 and bicycle ids 11, 12 are never visible (unused in SPair, METHOD.md 1.5).
 *
 * Flags. truncated: the bbox touches the image border (about 15% of images); occluded: drawn (20%);
 * difficult: 0; azimuth_id: drawn in 0..7; pose: "Left" or "Right" (mirrored). Pair flags: mirror = the two
 * poses differ; viewpoint_variation from the azimuth difference d (circular, 0..4): 0 if d = 0, 1 if d <= 2,
 * else 2; scale_variation from the ratio r of bbox areas: 0 if r < 1.5, 1 if r < 2.5, else 2; truncation and
 * occlusion 0 none, 1 src, 2 trg, 3 both, from the images' flags.
 *
 * Features, built so that the right answer is known. Each category has unit code vectors c_k, one per slot
 * (seeded by category and k). In an image's feature_map the cell holding visible keypoint k - GeoAware square
 * frame: sa3d_geoaware_to_square(W, H, input_size, x, y), then floor(x / (input_size / g)), clamped, exactly as
 * sa3d_match_baseline picks a query cell - holds c_k plus noise of norm feature_noise (drawn afresh for every
 * image), normalised; every other cell holds an independent random unit vector (expected |cosine| with a code
 * about 0.8 / sqrt(C): low for C >= 16). feature_map_flip is the map of the mirrored image: the background
 * mirrored column-wise, and c_flip(k) (plus fresh noise) in the cell of the mirrored position (W - 1 - x, y).
 * With these maps sa3d_match_baseline returns, for every query, the centre of the target cell holding the same
 * keypoint, so PCK@0.1 is 100%.
 *
 * Determinism: everything is drawn from explicit per-item random streams of `seed`, independent of the write
 * flags and the thread count, with integer rendering and IEEE float arithmetic: the same parameters give
 * byte-identical files (same libjpeg build).
 *
 * Thread safety: no shared state; distinct roots may be written from several threads at once. The write uses
 * OpenMP over images and pairs with n_threads threads (sa3d_set_threads, which is process-wide). */
#ifndef SEMALIGN3D_SYNTH_H
#define SEMALIGN3D_SYNTH_H

#include <stdint.h>
#include "semalign3d/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sa3d_synth_spair_params {
    uint64_t seed;                 /* 0 */
    int n_categories;              /* 2: the first n of the 18 sorted SPair categories, 1..18 */
    int images_per_category;       /* 6; 2..100000 */
    int pairs_trn, pairs_val, pairs_test;   /* 12, 4, 8: pairs per split over all categories; 0..999999 */
    int min_side, max_side;        /* 160, 320: image width and height in pixels, 32..4096 */
    float kp_visible;              /* 0.7: probability that a keypoint slot is visible, (0, 1] */
    int feature_channels;          /* C: 32; 1..4096 */
    int feature_grid;              /* g: 60; 1..512 */
    int input_size;                /* 840: the square side the features belong to; g..16384 */
    float feature_noise;           /* 0.1: norm of the noise added to a code before normalising; 0..10 */
    int write_images;              /* 1: JPEGImages */
    int write_segmentations;       /* 1: Segmentation */
    int write_features;            /* 1: Features (feature_map) */
    int write_flip_features;       /* 1: also feature_map_flip in each feature file */
    int n_threads;                 /* 0 = all cores */
    int (*cancel)(void *user);   /* NULL, or polled before each file, from several threads at once: non-zero
                                    stops the write (SA3D_ERR_CANCELLED) and nothing is left under root */
    void *cancel_user;
} sa3d_synth_spair_params;

SA3D_API sa3d_synth_spair_params sa3d_synth_spair_params_default(void);

/* Writes the dataset described above under root. root must not exist (it is created, with its parents) or be
 * an empty directory, so a generated split never mixes with other files. The whole dataset is written into
 * root/.partial-XXXXXX and moved up into root at the end, so it appears whole or not at all. Failure: SA3D_ERR_ARG
 * (a parameter out of range, naming it; root not empty), SA3D_ERR_IO (naming the file or directory),
 * SA3D_ERR_NOMEM, SA3D_ERR_CANCELLED (p->cancel); the staging folder is then removed. */
SA3D_API sa3d_status sa3d_synth_spair_write(const char *root, const sa3d_synth_spair_params *p, sa3d_error *err);

/* The content of synth_params.json for p: a one-line JSON object with every parameter, the category names
 * and the library version. Allocated with malloc (free with free()); NULL when out of memory. */
SA3D_API char *sa3d_synth_spair_params_json(const sa3d_synth_spair_params *p);

#ifdef __cplusplus
}
#endif
#endif
