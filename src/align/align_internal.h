/* Internal view of the aligner (src/align/align.c) for the matcher and the tests: the per-image context
 * (similarity maps, reading (a) candidates, rig, relations) and the energy of one hypothesis with its exact
 * gradient. Not part of the public API. */
#ifndef SA3D_ALIGN_INTERNAL_H
#define SA3D_ALIGN_INTERNAL_H

#include "semalign3d/align.h"
#include "geom/geom.h"

#define SA3D_ALIGN_PHI_MIN 0.05  /* phi = 1/f is kept above this after each Adam step */
#define SA3D_ALIGN_ZMIN 1e-3   /* depths below this are clamped (a point behind the camera projects nowhere) */

typedef struct sa3d_align_ctx {
    sa3d_align_params p;
    int N, n, g, cells, C;      /* dense points, used anchors, grid side, g*g, channels */
    /* rig over the used anchors as CSR: X_i = sum_{j in [ptr_i, ptr_i+1)} w_j Y_{idx_j} (exact zeros dropped) */
    int *rig_ptr, *rig_idx;     /* [N + 1], [nnz] */
    double *rig_w;              /* [nnz] */
    int *rigT_ptr, *rigT_pt;    /* its transpose: used anchor k -> [rigT_ptr_k, rigT_ptr_k+1) of point ids ... */
    double *rigT_w;             /* ... and weights, in point order */
    float *S;                   /* [N][cells] similarity of dense point i with cell c */
    double *sem_mu, *sem_sd;    /* [N] attn mean and floored sd */
    double *pt_w;               /* [N] dense weight normalised to sum 1 (reading (b)) */
    /* reading (b) with point_blur: S blurred at n_lvl sds lvl_s0 e^(l lvl_step), spanning the sigma schedule;
     * a stage's sigma samples the two levels around it, mixed linearly in log sigma (sa3d_ae_stage_make) */
    float *S_lvl;               /* [n_lvl][N][cells], or NULL: reading (b) samples S */
    int n_lvl;
    double lvl_s0, lvl_step;
    /* reading (a): active cells, their centre and weight, and top_k candidates each */
    int n_act, K;
    int *act_cell;              /* [n_act] */
    double *act_w;              /* [n_act] weights summing to 1 */
    int *cand;                  /* [n_act][K] point ids (-1 = none) */
    double *cand_lp;            /* [n_act][K] log p_sem of the candidate at the cell */
    int *pt_slot_ptr, *pt_slot; /* point i -> its slots q K + k among cand, in (q, k) order: [N + 1], [<= n_act K] */
    int *pt_slot_q;             /* ... and each slot's active cell q (no division in the gather) */
    double *act_cxy;            /* [n_act][2] grid coordinates of each active cell's centre */
    /* L_sparse: the appended anchors among the dense points and their log p_sem over the cells */
    int n_anc;
    int *anc_pt;                /* [n_anc] dense index */
    int *pt_anc;                /* [N] appended anchor of each point, or -1 */
    double *anc_lp;             /* [n_anc][cells] */
    const float *mask;          /* [cells] borrowed, or NULL */
    double d_star;              /* L_depth target */
    /* L_geom over the used anchors */
    sa3d_geom_terms gt;
    int32_t *g_e1, *g_e2, *g_t, *g_v;
    sa3d_beta_term *g_beta;     /* ratio, cosang ([n_pairs] each), cx, cy, cz ([n_tets] each) */
    /* the mirrored image (params.w_mirror > 0), owned, and each used anchor's twin among the used anchors */
    struct sa3d_align_ctx *mirror;
    int *twin;                  /* [n] */
} sa3d_align_ctx;

/* out = in [g][g] blurred by a Gaussian of sd sigma (cells): separable, truncated at ceil(3 sigma) cells (at most
 * g and SA3D_ALIGN_BLUR_MAX_R), the border value repeated outside the grid as sa3d_ae_bilinear reads similarity
 * maps; weights normalised to sum 1, so a constant map stays constant (to float rounding). Float sums in a fixed
 * order: deterministic. tmp: SA3D_ALIGN_BLUR_TMP(g) floats. */
#define SA3D_ALIGN_BLUR_MAX_R 256
#define SA3D_ALIGN_BLUR_TMP(g) ((size_t)(g) * (size_t)(g) + (size_t)(g) + 2 * SA3D_ALIGN_BLUR_MAX_R)
void sa3d_align_blur(const float *in, float *out, int g, double sigma, float *tmp);

/* What changes over the iterations: the spatial sd (cells) and the weights of the dense and sparse terms. */
typedef struct sa3d_align_stage {
    double sigma, w_rec, w_sparse;
} sa3d_align_stage;
/* The stage at iteration t of n_iter (t = n_iter: the final evaluation, at the schedule's end) for grid g. */
sa3d_align_stage sa3d_align_stage_at(const sa3d_align_params *p, int g, int t);

#include "align/align_energy.h"   /* the energy's steps, shared with the CUDA backend */

/* The aligner's per-cell inputs of one image (flip: its mirror) from the mask and depth providers, exactly as the
 * dataset matcher builds them: *mask_c [g][g] the mask's foreground share of each cell, *depth_c [g][g]
 * METHOD.md 3.2's pseudo depth averaged per cell. Both maps must have the image's size W x H (the annotation's):
 * another size would be registered to the wrong cells (SA3D_ERR_FORMAT). A NULL provider leaves its output NULL.
 * The outputs are malloc'd and the caller's to free, also on failure; errors are prefixed with category/id. */
sa3d_status sa3d_align_cells(sa3d_provider *masks, sa3d_provider *depth, const char *cat, const char *id, int flip,
                             int W, int H, int input_size, int g, float **mask_c, float **depth_c, sa3d_error *err);

sa3d_status sa3d_align_ctx_init(sa3d_align_ctx *c, const sa3d_prior *prior, const sa3d_align_input *in,
                                const sa3d_align_params *p, sa3d_error *err);
void sa3d_align_ctx_free(sa3d_align_ctx *c);

/* Doubles of scratch for sa3d_align_energy_one and sa3d_align_energy_pose. */
size_t sa3d_align_work_doubles(const sa3d_align_ctx *c);
/* w_rec L_rec + w_bg L_bg + w_depth L_depth + w_sparse L_sparse of one hypothesis (Y [n][3], phi) at stage s
 * (sigma and the two scheduled weights); gY [n][3] and gphi (may both be NULL) get the exact gradient
 * (overwritten); terms[4] (may be NULL) the unweighted L_rec, L_bg, L_depth, L_sparse; proj [N][2] (may be
 * NULL) the grid coordinates. No allocation; safe to call concurrently with distinct outputs and work. */
double sa3d_align_energy_one(const sa3d_align_ctx *c, const double *Y, double phi, const sa3d_align_stage *s,
                             double *gY, double *gphi, double terms[4], double *proj, double *work);
/* energy_one of the image, or with a mirror (1 - w_mirror) energy_one(Y) + w_mirror energy_one of the mirrored
 * pose on the mirrored image; terms blended alike. Same contract as energy_one (no proj). */
double sa3d_align_energy_pose(const sa3d_align_ctx *c, const double *Y, double phi, const sa3d_align_stage *s,
                              double *gY, double *gphi, double terms[4], double *work);
/* energy_pose plus w_geom L_geom (terms[5]: rec, geom, bg, depth, sparse). work: sa3d_align_work_doubles
 * + 3 n doubles when gY is given. Calls sa3d_geom_energy: not from inside a parallel region. */
double sa3d_align_energy_total(const sa3d_align_ctx *c, const double *Y, double phi, const sa3d_align_stage *s,
                               double *gY, double *gphi, double terms[5], double *work);

#endif
