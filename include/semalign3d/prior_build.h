/* semalign3d: building the 3D object-class representation of one category (METHOD.md 4), the prior of prior.h.
 *
 *     sa3d_prior_build_params p = sa3d_prior_build_params_default();     // faithful settings, seed 0
 *     sa3d_prior *prior;  sa3d_error err;
 *     if (sa3d_prior_build(&prior, "car", n_slots, flip, images, n_images, &src, &p, NULL, &err)) { ... }
 *     sa3d_prior_save(prior, "out/car.prior.safetensors", NULL, &err);
 *
 * Inputs: the N training images of a category (their annotations: size, keypoint pixels, visibility) and a source
 * of per-image maps, asked for one image at a time so that no more than one feature map is held at once:
 *   maps(i):        disparity d [H][W] at the image size (METHOD.md 3.2) and the object mask [H][W] (non-zero =
 *                   object; METHOD.md 3.4; SPair Segmentation or the bbox stand in for SAM);
 *   features(i, f): unit feature map [C][g][g] over GeoAware's padded square (METHOD.md 3.1) of the image
 *                   (f = 0) or of its left-right mirror (f = 1).
 * `semalign3d build-prior` wires these to the dataset readers and providers (providers.h).
 *
 * The stages (METHOD.md 4.1-4.6; docs/PRIOR.md says where and why we differ from the released code):
 *   1 keypoints  every image and its mirror (2N instances; the mirror's labels go through the flip map): the
 *                keypoint snapped to the eroded mask, its pseudo-depth z = 1 - 0.3 d / max d
 *   2 focal      per-instance focal lengths by the variance loss (sa3d_focal_optimize), averaged over each
 *                image and its mirror; keypoints lifted to 3D; 10 noisy copies per instance (seeded)
 *   3 relations  Beta fits of every edge-pair and tet relation over the noisy samples, and the filter (4.2-4.3)
 *   4 sparse     seed edge, order, grid placement, AdamW refinement (4.5)
 *   5 dense      per instance: tetrahedral warp of the mask pixels into the canonical frame, hull filter, at most
 *                1000 points with their features; keypoint features (4.5 step 5)
 *   6 cluster    k-means (seeded k-means++ then Lloyd), anchors appended, 1000-NN feature statistics, the
 *                collapsed rig, the weight cutoff (4.6 b)
 *
 * Determinism: every random draw comes from streams of params.seed keyed by stage and item (base/rng.h), and
 * every parallel loop writes per-item results or sums fixed chunks in order: the same inputs and seed give a
 * bit-identical prior at any thread count.
 *
 * Thread safety: the build uses OpenMP with params.n_threads (process-wide via sa3d_set_threads); the source
 * callbacks are called from the calling thread only, one at a time. */
#ifndef SEMALIGN3D_PRIOR_BUILD_H
#define SEMALIGN3D_PRIOR_BUILD_H

#include <stddef.h>
#include <stdint.h>
#include "semalign3d/data.h"
#include "semalign3d/prior.h"
#include "semalign3d/providers.h"
#include "semalign3d/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The per-image maps, one image at a time. Each callback fills the caller's buffer and returns a status; err
 * names the file or image on failure. */
typedef struct sa3d_prior_source {
    void *user;
    sa3d_status (*maps)(void *user, int image, float *disparity /* [H][W] */, uint8_t *mask /* [H][W] */,
                        sa3d_error *err);
    sa3d_status (*features)(void *user, int image, int flip, float *feat /* [C][g][g] */, sa3d_error *err);
} sa3d_prior_source;

/* Progress: stage name, items done and total. A non-zero return cancels the build (SA3D_ERR_CANCELLED). */
typedef int (*sa3d_prior_progress_fn)(void *user, const char *stage, long done, long total);

#define SA3D_PRIOR_MAX_GRID 512   /* cube_n: 512^3 floats = 0.5 GiB of grid energies */
#define SA3D_PRIOR_MIN_GRID 8     /* a coarser grid places slots on a handful of points: a flat or collinear cloud */

typedef struct sa3d_prior_build_params {
    uint64_t seed;           /* 0: noise augmentation, pixel subsampling, k-means++ */
    int n_threads;           /* 0 = all cores */
    int feat_channels;       /* C: 768 */
    int feat_grid;           /* g: 60 */
    int focal_iters;         /* 1000 (METHOD.md 3.3) */
    double focal_init;       /* 0.2 = 1/f */
    int noise_samples;       /* 10 noisy copies per instance (4.1) */
    double noise_rate;       /* 0.2 x the smallest keypoint distance */
    int min_sample_imgs;     /* 4: a relation needs 4 x noise_samples samples (4.3) */
    double cube_size;        /* 1.0 (4.5) */
    int cube_n;              /* 100, SA3D_PRIOR_MIN_GRID..SA3D_PRIOR_MAX_GRID (cube_n^3 floats of energies per
                                placement) */
    int n_max_comb;          /* 100 */
    int grid_exhaustive;     /* 0: branch and bound over the grid; 1: screen every point (same answer, slower) */
    int refine_iters;        /* 20000 */
    double refine_tol;       /* 1e-6: stop once L_geom falls by less than tol (1 + |L|) over 250 steps; 0 = never */
    double refine_lr;        /* 1e-3 */
    double refine_wd;        /* 0.01 (PyTorch AdamW default; METHOD.md 10.6) */
    int dense_max_src;       /* 10000 mask pixels considered per instance (4.6 a.1) */
    int dense_max_pts;       /* 1000 points kept per instance (4.6 a.9) */
    int kmeans_k;            /* 1000 */
    int kmeans_iters;        /* 300 */
    double kmeans_tol;       /* 1e-4 */
    int knn;                 /* 1000 nearest merged points per centre */
    double cutoff;           /* 0.0005: dense points need a weight above this */
    sa3d_prior_progress_fn progress;   /* NULL: silent */
    void *progress_user;
} sa3d_prior_build_params;
SA3D_API sa3d_prior_build_params sa3d_prior_build_params_default(void);
/* SA3D_OK when every setting is in its range, else SA3D_ERR_ARG naming it with its range. The builds check too
 * (sa3d_prior_build_dataset before reading any image). */
SA3D_API sa3d_status sa3d_prior_build_params_check(const sa3d_prior_build_params *p, sa3d_error *err);

/* The build's settings as a JSON object of strings (for sa3d_prior_save's extra metadata); malloc'd, free()
 * it; NULL when out of memory. */
SA3D_API char *sa3d_prior_build_params_json(const sa3d_prior_build_params *p);

/* What happened, for reports and benchmarks. */
#define SA3D_PRIOR_N_STAGES 6
typedef struct sa3d_prior_build_report {
    double stage_s[SA3D_PRIOR_N_STAGES];   /* wall seconds of the stages listed above */
    const char *stage_name[SA3D_PRIOR_N_STAGES];
    int n_instances;                       /* 2N */
    size_t n_pairs_all, n_tets_all;        /* relations before the filter */
    double refine_energy[2];               /* L_geom before and after the refinement */
    int refine_steps;                      /* refinement steps run (< refine_iters when it converged) */
    long grid_screened, grid_total;        /* grid points screened by the placement, of steps x cube_n^3 */
    size_t n_merged;                       /* warped points over all instances */
    int kmeans_iters;                      /* Lloyd iterations run */
    int n_centres_kept;                    /* k-means centres inside the hull with weight > cutoff */
} sa3d_prior_build_report;

/* Builds the prior of `category` (n_slots keypoint slots, flip map flip[n_slots] as sa3d_spair_flip_map gives it)
 * from n_images training images. Each image record must have width, height >= 1 and keypoints inside
 * [0, W] x [0, H] (as the dataset readers guarantee); slots >= n_slots are ignored. On failure *out is NULL:
 * SA3D_ERR_ARG (bad parameters or records, naming the image), SA3D_ERR_NUMERIC (no relation survives the filter,
 * or an optimisation diverges, naming the stage), SA3D_ERR_NOMEM, SA3D_ERR_CANCELLED, or a status from the
 * source callbacks. report may be NULL. */
SA3D_API sa3d_status sa3d_prior_build(sa3d_prior **out, const char *category, int n_slots, const int *flip,
                                      const sa3d_image_anno *const *images, int n_images,
                                      const sa3d_prior_source *src, const sa3d_prior_build_params *p,
                                      sa3d_prior_build_report *report, sa3d_error *err);

/* The same over a dataset: the first max_images (0 = all) sorted images of `category` in `split`, the flip map
 * of the dataset's kind, and the per-image maps from the providers (features with their mirrors, depth as
 * disparity, masks > 0.5). bp->feat_channels and feat_grid are set from the first feature map. */
SA3D_API sa3d_status sa3d_prior_build_dataset(sa3d_prior **out, sa3d_dataset *ds, const char *split,
                                              const char *category, int max_images, sa3d_provider *features,
                                              sa3d_provider *depth, sa3d_provider *masks,
                                              sa3d_prior_build_params *bp, sa3d_prior_build_report *report,
                                              sa3d_error *err);

#ifdef __cplusplus
}
#endif
#endif
