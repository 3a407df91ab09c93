/* Internal interface of the prior builder (src/prior): the stages of METHOD.md 4.5 exposed for the parity tests,
 * the fuzz target's in-memory loader, and helpers shared between the builder's files. Not public API. */
#ifndef SA3D_PRIOR_INTERNAL_H
#define SA3D_PRIOR_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "geom/geom.h"
#include "semalign3d/data.h"
#include "semalign3d/prior.h"
#include "semalign3d/prior_build.h"
#include "semalign3d/status.h"

#define SA3D_PRIOR_MAX_SLOTS SA3D_GEOM_MAX_KPTS   /* 64, the most keypoint slots a prior may have */

/* sa3d_prior_load on a file already in memory (buf borrowed); label names it in messages. prior_io.c */
sa3d_status sa3d_prior_load_memory(sa3d_prior **out, const void *buf, size_t len, const char *label,
                                   sa3d_error *err);

/* ---- sparse keypoint cloud, METHOD.md 4.5 steps 1-4 (sparse.c) -------------------------------------------------- */

/* Step 1 (topology.find_longest_shortest_edge): an n x n matrix M at -1; for each edge pair in order with
 * r = 1 - mode (find_farthest = 0) or r = mode (find_farthest = 1): r < 0.5 marks e1 with 0 and, where still -1,
 * e2 with 1; r > 0.5 the other way round (both orders of each edge). (*v1, *v2) = the first maximum of M in
 * row-major order. mode [P] holds float32 modes of the ratio Betas; 1 - mode is formed in float32. Returns 0
 * when there is no edge pair or every mode is exactly 0.5 (no seed), else 1. */
int sa3d_prior_seed_edge(int *v1, int *v2, const float *mode /* [P] */, const int32_t *e1 /* [P][2] */,
                         const int32_t *e2 /* [P][2] */, size_t n_pairs, int n, int find_farthest);

/* Step 2 (sort_by_distance_to_set): ids placed after the seed pair, in order; returns their count. Candidates are
 * the ids in e1 or e2 other than v1, v2, visited in ascending order; see sparse.c for the score. */
int sa3d_prior_order(int32_t *order /* [n] */, const float *mode, const int32_t *e1, const int32_t *e2,
                     size_t n_pairs, int n, int v1, int v2);

/* Step 3.1 (filter_geom_relations_chosen_connected_with_next): indices of the edge pairs with e_count >= 3 over
 * the placed ids and next in e1 or e2, and of the tet relations with sum over placed p of ([p in t] + [p = v])
 * >= 3 and next in t or next = v, each cut to its first n_max_comb in index order. */
void sa3d_prior_subset(size_t *pair_idx /* [<= n_max_comb] */, size_t *n_pair_idx, size_t *tet_idx,
                       size_t *n_tet_idx, const uint8_t *placed /* [n] */, int next, const sa3d_geom_terms *g,
                       int n_max_comb);

typedef struct sa3d_sparse_params {
    double cube_size;       /* 1.0 (DEFAULT_SPARSE_PC_CONSTRUCTION_PARAMS) */
    int cube_n;             /* 100 grid points per axis */
    int n_max_comb;         /* 100 relations of each kind per step */
    int refine_iters;       /* 20000 (GeomOptimizer n_iter) steps of step 4, sa3d_prior_refine; 0 skips it */
    double refine_tol;      /* convergence stop of step 4 (sa3d_prior_refine); 0 runs every step */
    sa3d_adamw_params adam; /* lr 1e-3, PyTorch AdamW defaults (weight decay 0.01, METHOD.md 10.6) */
    int grid_exhaustive;    /* 1: screen every grid point; 0 (default): branch and bound, the same answer */
    /* NULL, or told ("sparse", keypoints placed, to place) after each placement and ("refine", step, refine_iters)
     * every SA3D_REFINE_WINDOW steps; a non-zero return stops the build (SA3D_ERR_CANCELLED) */
    int (*progress)(void *user, const char *stage, long done, long total);
    void *progress_user;
} sa3d_sparse_params;
sa3d_sparse_params sa3d_sparse_params_default(void);

/* What the grid placement did, for tests and reports (may be NULL in sa3d_prior_sparse). */
typedef struct sa3d_sparse_trace {
    int v1, v2;                       /* seed edge */
    int n_order;
    int32_t order[SA3D_PRIOR_MAX_SLOTS];
    long flat[SA3D_PRIOR_MAX_SLOTS];  /* per step: argmin flat index (x slowest), -1 when placed at the centre */
    double emin[SA3D_PRIOR_MAX_SLOTS];/* per step: the minimum energy (double) */
    size_t n_recheck[SA3D_PRIOR_MAX_SLOTS]; /* per step: candidates re-evaluated in double */
    long n_screened[SA3D_PRIOR_MAX_SLOTS];  /* per step: grid points screened in float32 */
} sa3d_sparse_trace;

/* Step 3.3: puts `next` on the candidate of least L_geom (the subset sub; tets when use_tets) of the N^3 grid of
 * side cube_size centred at the mean of the placed points (float32 linspace, end points included, flat index
 * (ix N + iy) N + iz). Energies are screened in float32 (vectorised, in blocks of one grid line), then every
 * candidate within a safe margin of the float32 minimum is re-evaluated exactly in double; the pick is the lowest
 * flat index among those within SA3D_GRID_TIE_REL of the double minimum (*n_recheck, may be NULL, gets how many
 * were re-evaluated). Y [n][3]: placed rows finite, the row
 * of next is written. Allocates its scratch (SA3D_ERR_NOMEM). OpenMP over grid lines: any thread count gives the
 * same answer. */
#define SA3D_GRID_TIE_REL 1e-6
sa3d_status sa3d_prior_grid_place(double *Y /* [n][3] */, long *flat, double *emin, int n, const uint8_t *placed,
                                  int next, const sa3d_geom_terms *sub, int use_tets, double cube_size, int cube_n,
                                  int exhaustive, size_t *n_recheck, long *n_screened, sa3d_error *err);

/* Steps 1-3: anchors [n][3] (unplaced slots +inf) from the relations g and their float32 ratio modes; the
 * builder then runs step 4 (sa3d_prior_refine) over the relations among the placed slots. */
sa3d_status sa3d_prior_sparse(double *anchors /* [n][3] */, const sa3d_geom_terms *g, const float *mode /* [P] */,
                              int n, const sa3d_sparse_params *p, sa3d_sparse_trace *trace, sa3d_error *err);

/* Step 4: AdamW (p->adam) on the used rows of Y over all relations of g, at most p->refine_iters steps. L_geom is
 * evaluated in fixed chunks of relations (parallel, summed in chunk order: bit-identical at any thread count).
 * Every SA3D_REFINE_WINDOW steps, when L_geom fell by less than p->refine_tol (1 + |L|) over the window (tol > 0),
 * it stops and applies the remaining steps' decoupled weight decay in closed form (see sparse.c); p->progress is
 * told then too. e0, e1 (may be NULL): the energy before and after; *steps (may be NULL): the steps run.
 * SA3D_ERR_NUMERIC names the iteration when the energy stops being finite. */
#define SA3D_REFINE_WINDOW 250
sa3d_status sa3d_prior_refine(double *Y /* [n][3] */, const uint8_t *used, int n, const sa3d_geom_terms *g,
                              const sa3d_sparse_params *p, double *e0, double *e1, int *steps, sa3d_error *err);

/* L_geom of one configuration over all of g with its gradient (may be NULL), chunked as in sa3d_prior_refine. */
double sa3d_prior_energy(double *grad /* [n][3] or NULL */, const double *Y /* [n][3] */, int n,
                         const sa3d_geom_terms *g, double *chunk_buf);
/* Doubles of scratch sa3d_prior_energy needs for g (one [n][3] gradient per chunk plus energies). */
size_t sa3d_prior_energy_scratch(const sa3d_geom_terms *g, int n);

/* ---- the file's value checks (prior_io.c) ---------------------------------------------------------------------- */

/* What sa3d_prior_load requires of the values once the shapes agree (finite, in range, ids valid, the rig's
 * contract); SA3D_ERR_FORMAT with "label: tensor 'name': element i: what". The builder runs it on what it built, so
 * it never saves a prior the loader would refuse. */
sa3d_status sa3d_prior_check_values(const sa3d_prior *p, const char *label, sa3d_error *err);

/* The largest focal length (units of max(W, H)) a prior records; the builder clamps its median there (one image
 * that barely constrains f can reach 1e6, and the aligner starts at f <= 20 whatever the prior says). */
#define SA3D_PRIOR_MAX_FOCAL 1e4

/* A category name a prior may carry: 1 to 63 printable ASCII characters without '"', '\\' or '/', since it
 * becomes part of file names (<category>.prior.safetensors) and of JSON that commands print. */
int sa3d_prior_category_ok(const char *name);

/* ---- dense cloud helpers (dense.c) -------------------------------------------------------------------------------- */

/* Seeded k-means++ then Lloyd (Hamerly's bounds: the same fixed point as plain Lloyd) on pts [N][3]. centres
 * [k][3], assign [N]. Stops after max_iter or when the summed squared centre shift is <= tol x the mean
 * per-axis variance of the points (sklearn's rule). An empty cluster keeps its centre. Bit-identical for the same
 * seed at any thread count. Returns the iterations run, or -1 (SA3D_ERR_NOMEM / SA3D_ERR_ARG in err). */
int sa3d_kmeans(double *centres /* [k][3] */, int32_t *assign /* [N] */, const double *pts /* [N][3] */, size_t N,
                int k, uint64_t seed, int max_iter, double tol, sa3d_error *err);

/* Per centre: the Kz = min(K, N) merged points nearest to it (3D distance; ties to the lower index), their mean
 * feature normalised (feat), and the mean and population sd of the cosines f_c . f_i (METHOD.md 4.6 b.3).
 * X [N][3] merged positions, F [N][C] their unit features. Parallel over centres. */
sa3d_status sa3d_dense_stats(float *feat /* [m][C] */, float *attn_mean /* [m] */, float *attn_sd /* [m] */,
                             const double *centres /* [m][3] */, int m, const double *X /* [N][3] */,
                             const float *F /* [N][C] */, size_t N, int C, int K, sa3d_error *err);

/* The rig row of each canonical point (prior.h): barycentric coordinates in every canonical tetrahedron (info from
 * sa3d_tet_prepare over tets [T][4] of slot ids), inside test at SA3D_TET_THRESH, distance weights, collapsed to
 * rig[i][k] = sum_T w_T sum_j [T_j = k] b_Tj. in_hull[i] = 0 (row zero) for a point inside no tetrahedron (the
 * canonical-hull filter of METHOD.md 4.6 b.4). Parallel over points. */
sa3d_status sa3d_dense_rig(float *rig /* [m][n] */, uint8_t *in_hull /* [m] */, const double *pts /* [m][3] */,
                           int m, const double *info /* [SA3D_TET_INFO][T] */, const int32_t *tets /* [T][4] */,
                           size_t T, int n, sa3d_error *err);

/* ---- a synthetic category of known 3D shape, in memory (synth_category.c; tests and bench_prior) ----------------- */

typedef struct sa3d_prior_synth_params {
    uint64_t seed;
    int n_slots;          /* 10 keypoint slots: mirror pairs (2j, 2j + 1), flip map swapping them */
    int n_images;         /* 12 */
    int w, h;             /* 200 x 150 image size */
    int C, g;             /* 16 channels on a 60 x 60 grid */
    double focal;         /* 1.5: the true f (units of max(W, H)) of every image */
    double shape_noise;   /* 0.01: per-image Gaussian noise on the unit-size shape */
    double p_hidden;      /* 0.15: chance that a keypoint is not annotated (at least 4 stay) */
} sa3d_prior_synth_params;
void sa3d_prior_synth_params_default(sa3d_prior_synth_params *p);

typedef struct sa3d_prior_synth {
    sa3d_prior_synth_params p;
    int flip[SA3D_MAX_KPS];
    double shape[SA3D_MAX_KPS][3];           /* the true canonical shape */
    sa3d_image_anno *annos;                  /* [n_images] */
    const sa3d_image_anno **anno_ptrs;       /* [n_images] for sa3d_prior_build */
    float **disp;                            /* [n_images] disparity [H][W] */
    uint8_t **mask;                          /* [n_images] mask [H][W] */
    float *codes;                            /* [n_slots + 61][C] unit vectors */
} sa3d_prior_synth;
sa3d_status sa3d_prior_synth_make(sa3d_prior_synth **out, const sa3d_prior_synth_params *p, sa3d_error *err);
void sa3d_prior_synth_free(sa3d_prior_synth *s);
/* The source callbacks of sa3d_prior_build over s (borrowed). */
sa3d_prior_source sa3d_prior_synth_source(sa3d_prior_synth *s);

#endif
