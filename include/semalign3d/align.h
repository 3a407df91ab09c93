/* semalign3d: aligning the 3D object-class representation with one image (METHOD.md 5) and matching through
 * two alignments (METHOD.md 6.2). Every choice the sources leave open is listed with its default in
 * docs/ALIGN.md.
 *
 *     sa3d_align_input in = { &F, mask, depth };           // F: [C][g][g] unit cells, GeoAware square
 *     sa3d_align_params ap = sa3d_align_params_default();
 *     sa3d_alignment *a1, *a2;
 *     sa3d_align_image(&a1, prior, &in1, &ap, &err);       // and a2 for the second image
 *     sa3d_match_params mp = sa3d_match_params_default();
 *     sa3d_match_sa3d(prior, a1, &F1, a2, &F2, src_kps, n, &mp, pred, NULL, &err);
 *
 * Frames. The optimisation runs in the camera frame of the image, in units of S = max(W, H) (METHOD.md 2.3).
 * Points project straight onto the g x g grid over the GeoAware padded square with K_embd (METHOD.md 2.8):
 * gx = g f X / Z + g/2, gy = g f Y / Z + g/2 ("grid coordinates": continuous, cell c covers [c, c + 1), its
 * centre is c + 0.5; a square pixel x maps to x / (input_size / g)). The focal length is optimised as
 * phi = 1 / f, as the authors store it. */
#ifndef SEMALIGN3D_ALIGN_H
#define SEMALIGN3D_ALIGN_H

#include <stddef.h>
#include <stdint.h>
#include "semalign3d/data.h"
#include "semalign3d/match.h"
#include "semalign3d/prior.h"
#include "semalign3d/providers.h"
#include "semalign3d/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What one image brings. F is required; mask and depth may be NULL. */
typedef struct sa3d_align_input {
    const sa3d_feature_map *F;   /* [C][g][g] unit cell features over the GeoAware padded square */
    const float *mask;           /* [g][g] object foreground fraction of each cell in [0, 1], or NULL */
    const float *depth;          /* [g][g] relative depth z of each cell (METHOD.md 3.2: about 0.7 - 1), or NULL */
    /* The left-right mirrored image (its own F, mask and depth; its mirror field unused), or NULL. With
     * params.w_mirror > 0 the energy of a pose also scores the mirrored pose on it (the prior's slot_flip pairs
     * the anchors). */
    const struct sa3d_align_input *mirror;
} sa3d_align_input;

enum { SA3D_ALIGN_ON_CPU = 0, SA3D_ALIGN_ON_CUDA = 1 };

enum { SA3D_REC_MIXTURE = 0,     /* METHOD.md 5.3 reading (a): per-cell soft-max mixture over points (default) */
       SA3D_REC_POINT = 1 };     /* reading (b): per-point likelihood of the similarity sampled at its projection */

typedef struct sa3d_align_params {
    int n_hyp;              /* B = 100 random rotations (METHOD.md 5.2); 1..1e6 */
    int n_iter;             /* 100 Adam iterations (opt_data's default); 0..1e6 */
    double lr;              /* 0.01: Adam step on Y (units of S) and on phi; (0, 10] */
    uint64_t seed;          /* 0: the rotations; stream b of the seed for hypothesis b */
    int n_threads;          /* 0 = all cores; results do not depend on it */
    int device;             /* SA3D_ALIGN_ON_CPU; SA3D_ALIGN_ON_CUDA evaluates the hypotheses' energies on the GPU
                               (a -DSEMALIGN3D_CUDA=ON build; the commands' --device cuda): deterministic, equal
                               to the CPU's to rounding, not bit for bit (docs/ALIGN.md) */
    int rec_mode;           /* SA3D_REC_MIXTURE */
    int point_blur;         /* 1: reading (b) samples each similarity map blurred by a Gaussian of sd sigma_s, so
                               its annealing widens the basin as (a)'s does (METHOD.md 5.3; docs/ALIGN.md);
                               0: the raw maps */
    double w_rec, w_geom, w_bg, w_depth;   /* 1, 0.05, 1, 1 (0 switches a term off) */
    double sigma_start, sigma_end;         /* p_spatial sd in cells, annealed geometrically: g/8 -> 1 (0 means
                                              these defaults; else in [0.001, 1000]) */
    double tau;             /* 1: soft-max temperature over points (1 = log of the sum, -> 0 = max) */
    int top_k;              /* 16: candidate points per cell (the best p_sem) in reading (a) */
    double outlier_logp;    /* -12: log density of the per-cell outlier component (background cells) */
    double sem_sd_floor;    /* 0.05: floor on a point's attn sd in p_sem */
    int use_tets;           /* 1: L_geom includes the tetrahedron relations */
    int max_pairs, max_tets;   /* 400, 400: evenly strided subset of the prior's relations (0 = all) */
    double init_scale;      /* 1.0: canonical extent = init_scale x the extent of the back-projected mask;
                               [1e-6, 1e6] */
    double focal_init;      /* 0: start at the prior's focal_mean (1.5 when the prior has none), else in [0.001, 20]:
                               f = 1/phi stays <= 20 throughout (docs/ALIGN.md) */
    double depth_default;   /* 1.0: depth of every cell when no depth map is given, and then d*; [1e-6, 1e6] */
    double prune_at;        /* 0.3: after this share of the iterations keep only ... */
    int prune_keep;         /* 10 ... the best hypotheses (0 = never prune) */
    /* [NOTE2]'s schedule, "dense weight down, sparse weight up": from sparse_from of the iterations on, the
     * sparse term L_sparse (each appended anchor's own semantic x spatial likelihood around its projection)
     * ramps linearly from 0 to w_sparse and w_rec from w_rec to dense_end x w_rec (docs/ALIGN.md) */
    double w_sparse;        /* 1 (0: off; chosen on val, docs/ALIGN.md) */
    double sparse_from;     /* 0.3 */
    double dense_end;       /* 1 */
    double sparse_outlier;  /* -12, in [-1000, 0]: log density of L_sparse's outlier component (an anchor with
                               no evidence near it costs this, and is not pulled) */
    /* 0.5: the mirror-consistent energy (1 - w_mirror) E_image(Y) + w_mirror E_mirror(M Y'), M Y' the pose
     * mirrored through the image's vertical axis with each anchor under its twin's label (prior->slot_flip):
     * where the mirrored image's object is if Y is right. Where the features tell the sides apart better in one
     * of the two views, that view decides for both (docs/ALIGN.md; chosen on val). Needs the input's mirror;
     * 0 = off (one image, half the time). */
    double w_mirror;
} sa3d_align_params;
SA3D_API sa3d_align_params sa3d_align_params_default(void);
/* SA3D_OK when every option is in its domain (the comments above; weights, scales and temperatures finite, NaN
 * nowhere), else SA3D_ERR_ARG naming the first that is not. sa3d_align_image checks too; this is to check before
 * long work. */
SA3D_API sa3d_status sa3d_align_params_check(const sa3d_align_params *p, sa3d_error *err);
/* SA3D_OK when params.device can run here (the CPU always; CUDA with a -DSEMALIGN3D_CUDA=ON build and a GPU),
 * else SA3D_ERR_UNSUPPORTED saying why (SA3D_ERR_ARG for an unknown device): to check before long work. */
SA3D_API sa3d_status sa3d_align_device_check(int device, sa3d_error *err);

/* The result for one image: the best hypothesis. Owned by the caller (sa3d_alignment_free). */
typedef struct sa3d_alignment {
    int n_used, n_dense, g;
    double *Y;              /* [n_used][3] anchors in the camera frame (slots prior->used) */
    double phi, f;          /* focal length f = 1 / phi, units of S */
    double energy;          /* total at the schedule's end (sigma_end, full w_sparse), and its terms (unweighted;
                               with the mirror term, each the w_mirror blend of the image's and the mirror's) */
    double e_rec, e_geom, e_bg, e_depth, e_sparse;
    float *proj;            /* [n_dense][2] dense points in grid coordinates */
    float *depth;           /* [n_dense] their camera-frame depth Z (units of S), for visibility */
    float *proj_anchor;     /* [n_used][2] anchors in grid coordinates */
    float *cell_depth;      /* [g][g] a copy of the input's pseudo depth, or NULL without one: the point map of
                               the matcher's lift (sa3d_match_params.lift) */
    double fg_frac;         /* share of dense points projecting onto the mask (>= 0.5; inside the grid if
                               there is no mask) */
    int best_hyp;           /* index of the winning hypothesis */
    int img_w, img_h, input_size;
} sa3d_alignment;
SA3D_API void sa3d_alignment_free(sa3d_alignment *a);   /* NULL is a no-op */

/* Aligns the prior with one image: similarity maps once (one fixed-order product [N][C] x [C][g*g]), then
 * params.n_hyp hypotheses optimised together with Adam, the best by final energy. Deterministic for a seed
 * and bit-identical at any thread count; sets the process-wide thread count to params.n_threads
 * (sa3d_set_threads), so call it from one thread at a time. SA3D_ERR_ARG for mismatched sizes (prior C vs F C,
 * n_used < 2), SA3D_ERR_NUMERIC when every hypothesis ends non-finite, SA3D_ERR_NOMEM; with device
 * SA3D_ALIGN_ON_CUDA, SA3D_ERR_UNSUPPORTED without a CUDA build or a GPU and SA3D_ERR_IO for a device failure.
 * *out is NULL on failure. */
SA3D_API sa3d_status sa3d_align_image(sa3d_alignment **out, const sa3d_prior *prior, const sa3d_align_input *in,
                                      const sa3d_align_params *p, sa3d_error *err);

typedef struct sa3d_match_params {
    double sigma;           /* 1.5 cells: p_spatial sd when picking the point and the target cell */
    double sem_sd_floor;    /* 0.05, as in sa3d_align_params */
    double max_query_dist;  /* 3 cells: a query farther than this from every projected point of alignment 1
                               goes to the baseline */
    double max_energy;      /* 1e30 (off): an alignment with a larger energy is implausible */
    double min_fg_frac;     /* 0.5: an alignment with fewer dense points on the mask is implausible */
    int knn;                /* 0: the query -> point -> cell path of METHOD 6.2 steps 2-3; k in 1..16: the
                               geometric transfer of 6.2.5 - the query tied to the k (visible) points projecting
                               nearest to it in image 1 (weights dmin / d), carried to their image-2 projections */
    int lift;               /* SA3D_LIFT_OFF; else METHOD 6.2.5's lift in place of steps 2-3: of image 1's pixels within
                               10 of the query whose similarity to it exceeds 0.8 x its own, the front-most by pseudo
                               depth is back-projected - at its pseudo depth shifted onto the aligned model's
                               (SA3D_LIFT_PSEUDO) or at the model's own front-most depth there (SA3D_LIFT_MODEL) -,
                               tied to the lift_k dense points nearest it in 3D (weights dmin / d), carried to their
                               3D positions in image 2 and projected; the image-2 score is then a Gaussian (sigma)
                               there x the direct 2D likelihood^w_direct. Needs the alignments' depth maps */
    int lift_k;             /* 5 (1..16): the nearest dense points of the lift */
    double vis_radius;      /* 1.5 cells: each dense point occludes the cells within this radius of its projection */
    double vis_tol;         /* -1 (off): >= 0 makes only the points image 1 sees answer a query - a point is
                               visible when its depth is within vis_tol x the anchors' RMS radius of the nearest
                               depth at its cell (docs/ALIGN.md) */
    int query_sem;          /* semantic evidence of point i at the query, step 2: SA3D_QUERY_PSEM (log p_sem,i,
                               the aligner's one-sided Gaussian), SA3D_QUERY_COSINE (f_i . F1(q) / query_temp,
                               METHOD 6.2's alternative) or SA3D_QUERY_DENSITY (log p_sem,i - log sd_i: the
                               normalised density, which trusts tight statistics more) */
    double query_temp;      /* 0.05: the cosine's temperature (SA3D_QUERY_COSINE) */
    int query_norm;         /* 0: step 2 compares the points' semantic x spatial evidence at q as it is; 1: each
                               point's evidence is first normalised over image 1's cells (within 3 sigma of its
                               projection), so that it is the likelihood of q under the point's own distribution
                               over the image and a point with loose statistics, likely everywhere, does not beat a
                               sharp one that peaks at q */
    double anchor_snap;     /* 1.5 cells: a query with an appended anchor projecting within this distance goes
                               through that anchor, whatever the dense points' evidence: the sparse keypoints are
                               the best-placed points of an alignment (0: off) */
    int snap_front;         /* 1: of the (visible) anchors within anchor_snap, the front-most in image 1 (a query
                               sits on a visible point, and in a side view its hidden twin projects next to it);
                               0: the nearest */
    int soft_points;        /* 1: step 3 follows the argmax point; M in 2..16: the posterior mixture over the M best
                               points of step 2 (METHOD 6.2's soft version) */
    double w_direct;        /* 0.35: adds w_direct x F1(q) . F2(u) / temperature, the log of GeoAware's direct 2D
                               likelihood up to a constant, to the image-2 score (METHOD 6.2 step 3 variant; the
                               alignment says where, the query's own feature says which cell there; 0: off) */
    sa3d_baseline_params baseline;   /* window radius 7, temperature 0.02 (also the fallback) */
} sa3d_match_params;
enum { SA3D_QUERY_PSEM = 0, SA3D_QUERY_COSINE = 1, SA3D_QUERY_DENSITY = 2 };
enum { SA3D_LIFT_OFF = 0, SA3D_LIFT_PSEUDO = 1, SA3D_LIFT_MODEL = 2 };
SA3D_API sa3d_match_params sa3d_match_params_default(void);
/* As sa3d_align_params_check, for the matcher's options (sa3d_match_sa3d checks too). */
SA3D_API sa3d_status sa3d_match_params_check(const sa3d_match_params *p, sa3d_error *err);

/* METHOD.md 6.2: each query pixel of image 1 (original pixels) -> the representation point with the highest
 * p_sem x p_spatial under a1 (or the appended anchor within anchor_snap) -> the cell of image 2 with the highest
 * p_sem x p_spatial of that point under a2 x the direct 2D likelihood^w_direct, window soft-argmax, original pixels
 * of image 2. When either alignment is implausible (energy above
 * max_energy or fg_frac below min_fg_frac) every query, and when a query lies off the projected object only
 * that query, takes the baseline result (sa3d_match_baseline); fallback[i] (may be NULL) says which. The
 * feature maps must be the ones the alignments were computed on. Thread-safe; allocates its scratch. */
SA3D_API sa3d_status sa3d_match_sa3d(const sa3d_prior *prior, const sa3d_alignment *a1, const sa3d_feature_map *F1,
                                     const sa3d_alignment *a2, const sa3d_feature_map *F2,
                                     const float (*src_kps)[2], int n, const sa3d_match_params *p,
                                     float (*pred)[2], uint8_t *fallback, sa3d_error *err);

/* ---- SemAlign3D over a dataset: the `eval --method semalign3d` matcher ---- */

/* The mean of an image-size map img [H][W] over each cell of the GeoAware square (input_size, g x g cells; the
 * pixel (u, v) falls in the cell of sa3d_geoaware_to_square(u, v)); cells no pixel reaches (the padding) get
 * `outside`. Used for the aligner's mask (foreground share) and depth (pseudo depth) inputs. */
SA3D_API sa3d_status sa3d_image_to_cells(float *out /* [g][g] */, const float *img, int W, int H, int input_size,
                                         int g, float outside, sa3d_error *err);

typedef struct sa3d_sa3d_matcher_params {
    sa3d_align_params align;
    sa3d_match_params match;
    int input_size;         /* 840: the square the feature maps were computed on */
} sa3d_sa3d_matcher_params;
SA3D_API sa3d_sa3d_matcher_params sa3d_sa3d_matcher_params_default(void);
/* Every aligner and matcher option by name, for command lines and sweeps: "align.n_hyp", "match.w_direct",
 * "match.baseline.temperature", ... (the field names above; n_threads, device and input_size excepted, which
 * the commands set from --threads, --device and --size). Sets one field from "NAME=VALUE"; SA3D_ERR_ARG names
 * the problem for an unknown name or a value that is not a number of the field's type (integers in range, reals
 * finite). */
/* sa3d_align_params_check, then sa3d_match_params_check (the device is sa3d_align_device_check's). */
SA3D_API sa3d_status sa3d_sa3d_matcher_params_check(const sa3d_sa3d_matcher_params *p, sa3d_error *err);
SA3D_API sa3d_status sa3d_sa3d_matcher_params_set(sa3d_sa3d_matcher_params *p, const char *assignment,
                                                  sa3d_error *err);
/* The i-th option's name, with its value in p written into value[cap]; NULL past the last one. */
SA3D_API const char *sa3d_sa3d_matcher_params_field(const sa3d_sa3d_matcher_params *p, int i, char *value,
                                                    size_t cap);

typedef struct sa3d_sa3d_matcher sa3d_sa3d_matcher;   /* opaque; one thread at a time */
typedef struct sa3d_sa3d_matcher_stats { long alignments, queries, fallbacks; } sa3d_sa3d_matcher_stats;

/* features: required; masks, depth: optional providers (without them the aligner runs without L_background /
 * with its default depth). priors: one per category, matched by prior->category; borrowed, as are the
 * providers. Each image is aligned once, on its first pair, and the alignment kept for the matcher's life. */
SA3D_API sa3d_status sa3d_sa3d_matcher_new(sa3d_sa3d_matcher **out, sa3d_provider *features, sa3d_provider *masks,
                                           sa3d_provider *depth, const sa3d_prior *const *priors, int n_priors,
                                           const sa3d_sa3d_matcher_params *p, sa3d_error *err);
SA3D_API void sa3d_sa3d_matcher_free(sa3d_sa3d_matcher *m);
/* sa3d_pair_matcher signature (ctx = the matcher): pred[i] for pair->src_kps[i] in original target pixels. */
SA3D_API sa3d_status sa3d_sa3d_matcher_match(void *ctx, const sa3d_pair *pair, float (*pred)[2], sa3d_error *err);
SA3D_API sa3d_sa3d_matcher_stats sa3d_sa3d_matcher_get_stats(const sa3d_sa3d_matcher *m);
/* The cached alignment of category/id (NULL when that image has not been aligned); valid until the matcher is
 * freed. */
SA3D_API const sa3d_alignment *sa3d_sa3d_matcher_alignment(const sa3d_sa3d_matcher *m, const char *cat,
                                                            const char *id);

#ifdef __cplusplus
}
#endif
#endif
