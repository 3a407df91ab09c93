/* semalign3d: evaluation - PCK exactly as the field computes it (METHOD.md 7.1), every variant reported and
 * labelled so no two protocols can be confused:
 *   - a keypoint is correct when |pred - gt| < alpha x threshold_base (strict), alpha in {0.10, 0.05, 0.01},
 *     threshold_base = max(w, h) of the target bbox for SPair (sa3d_pair.threshold_base);
 *   - per-image PCK: for each pair the fraction of its keypoints that are correct, then the mean over pairs;
 *   - per-keypoint PCK: all keypoints pooled;
 *   - "All" per-image both as the plain mean of the category scores (category_mean) and as the mean over all
 *     pairs (pair_weighted, GeoAware-SC's convention);
 *   - the same split by each SPair difficulty flag value.
 * Percentages are 0-100. The library formats text and JSON; the CLI prints. */
#ifndef SEMALIGN3D_EVAL_H
#define SEMALIGN3D_EVAL_H

#include <stddef.h>
#include "semalign3d/data.h"
#include "semalign3d/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SA3D_PCK_N_ALPHA 3
/* The alphas a dataset's PCK is reported at, as GeoAware-SC's compute_pck does: 0.10, 0.05, 0.01; PF-PASCAL 0.10,
 * 0.05, 0.15 (its field's convention, against the image size). */
SA3D_API const double *sa3d_pck_alphas(sa3d_dataset_kind kind);
/* alpha a of kind as the report's JSON keys write it: "0.1", "0.05", "0.01" / "0.15" */
SA3D_API const char *sa3d_pck_alpha_key(sa3d_dataset_kind kind, int a);

/* Counts for one group of pairs (a category, a difficulty value, or everything). */
typedef struct sa3d_pck_cell {
    long pairs;                                /* pairs with at least one keypoint */
    long keypoints;
    double per_image_sum[SA3D_PCK_N_ALPHA];   /* sum over pairs of the fraction correct */
    long correct[SA3D_PCK_N_ALPHA];           /* keypoints correct */
} sa3d_pck_cell;

#define SA3D_PCK_MAX_CATEGORIES 64
#define SA3D_PCK_N_FLAGS 5                      /* viewpoint, scale, truncation, occlusion, mirror */
#define SA3D_PCK_FLAG_VALUES 4

typedef struct sa3d_pck_report {
    int n_categories;                          /* in first-seen order; sorted by sa3d_pck_finish */
    char category[SA3D_PCK_MAX_CATEGORIES][32];
    sa3d_pck_cell cat[SA3D_PCK_MAX_CATEGORIES];
    sa3d_pck_cell overall;
    sa3d_pck_cell by_flag[SA3D_PCK_N_FLAGS][SA3D_PCK_FLAG_VALUES];
    long skipped_empty;                        /* pairs with no keypoint (not counted) */
    long other_categories;                     /* sa3d_pck_score_file: predicted pairs of categories outside the
                                                  dataset's selection (params.categories), not scored */
    sa3d_dataset_kind kind;                    /* names the threshold rule in the text and JSON (init: SPair) */
} sa3d_pck_report;
/* The threshold rule of a dataset kind, for reports: SPair and AP-10K "alpha x max(w, h) of the target bbox",
 * PF-PASCAL "alpha x max(W, H) of the target image" (data.h, threshold_base). Static, never NULL. */
SA3D_API const char *sa3d_pck_threshold_rule(sa3d_dataset_kind kind);

SA3D_API const char *sa3d_pck_flag_name(int flag);   /* "viewpoint_variation", ... */

SA3D_API void sa3d_pck_init(sa3d_pck_report *r);
/* Adds one pair: pred[i] is the prediction for pair->trg_kps[i] (original target pixels). Returns
 * SA3D_ERR_UNSUPPORTED when the category table is full, SA3D_ERR_NUMERIC for a non-finite prediction. */
SA3D_API sa3d_status sa3d_pck_add(sa3d_pck_report *r, const sa3d_pair *pair, const float (*pred)[2],
                                  sa3d_error *err);
/* Sorts categories by name. */
SA3D_API void sa3d_pck_finish(sa3d_pck_report *r);

/* Derived percentages (NaN for an empty cell). */
SA3D_API double sa3d_pck_per_image(const sa3d_pck_cell *c, int alpha_index);
SA3D_API double sa3d_pck_per_keypoint(const sa3d_pck_cell *c, int alpha_index);
SA3D_API double sa3d_pck_category_mean(const sa3d_pck_report *r, int alpha_index);

/* The human table (UTF-8 text, caller frees with free()). title heads it. */
SA3D_API char *sa3d_pck_format(const sa3d_pck_report *r, const char *title);
/* The JSON report (keys in eval.h's comment and the README), written atomically. meta: extra string pairs
 * (key, value, key, value, ..., NULL) recorded under "meta". */
SA3D_API sa3d_status sa3d_pck_write_json(const sa3d_pck_report *r, const char *path, const char *const *meta,
                                         sa3d_error *err);

/* Predictions file (JSON lines): {"pair": "<pair id>", "trg_kps": [[x, y], ...]} with one point per src_kps
 * entry of the pair, in original target pixels. Reads and scores every pair of the split; pairs with no line
 * are an error unless allow_missing (then they are left out and counted in *missing). A line for a pair of a
 * category outside the dataset's selection (params.categories) is skipped and counted in r->other_categories, so a
 * whole split's file scores against a subset. Errors name file:line. */
SA3D_API sa3d_status sa3d_pck_score_file(sa3d_pck_report *r, const sa3d_dataset *ds, const char *split,
                                         const char *path, int allow_missing, long *missing, sa3d_error *err);

/* Running a matcher over a split (the `eval` command). A matcher fills pred[i] for pair->src_kps[i]. */
typedef sa3d_status (*sa3d_pair_matcher)(void *ctx, const sa3d_pair *pair, float (*pred)[2], sa3d_error *err);
/* A matcher for many pairs at once: pred[i] for pairs[i] (the rows hold SA3D_MAX_KPS points). */
typedef sa3d_status (*sa3d_batch_matcher)(void *ctx, const sa3d_pair *const *pairs, int n,
                                          float (*pred)[SA3D_MAX_KPS][2], sa3d_error *err);
/* Progress: called after each pair (with a batch matcher: after each category); a non-zero return cancels the run
 * (SA3D_ERR_CANCELLED) unless every pair is done. A matcher may also return SA3D_ERR_CANCELLED itself (a provider's
 * hook, sa3d_provider_set_hook): the run stops the same way. */
typedef int (*sa3d_progress_fn)(void *user, long done, long total, const char *item);

typedef struct sa3d_eval_params {
    const char *split;            /* "test" */
    const char *out_dir;          /* predictions.jsonl, parts/<category>.jsonl (resume state); at most
                                     SA3D_EVAL_MAX_DIR bytes */
    const char *settings;         /* NULL, or everything else that changes the predictions (one line per setting):
                                     kept in out_dir/parts/settings.txt, and a rerun into the same out_dir with
                                     other settings fails instead of mixing their predictions with these */
    long limit;                   /* 0: every pair; else the first `limit` pairs of each category (a part file with
                                     more pairs, from a run with a larger limit, is reused, not cut) */
    sa3d_batch_matcher match_batch;   /* NULL: the pair matcher, pair by pair; else this, one call per category
                                         (same ctx); the outputs are the same either way */
    sa3d_progress_fn progress;
    void *progress_user;
    /* NULL, or what a category's predictions were made from beyond `settings` (`semalign3d eval`: the SemAlign3D
     * prior's file digest, the imported maps' sa3d_provider_stamp), kept as out_dir/parts/<category>.key beside
     * the part. A part whose key differs from this run's is recomputed (another category's is still reused); one
     * without a key file, from an earlier version, is reused. part_key returns NULL for no key. */
    const char *(*part_key)(void *user, const char *category);
    void *part_key_user;
} sa3d_eval_params;
SA3D_API sa3d_eval_params sa3d_eval_params_default(void);
#define SA3D_EVAL_MAX_DIR 1900   /* out_dir's longest name: its files' paths are built in fixed buffers */

/* Runs the matcher on every pair of the split, category by category (sorted). Each finished category is
 * written to out_dir/parts/<category>.jsonl atomically; a rerun reuses valid part files that hold the category's
 * pairs asked for (resume) and recomputes the rest. At the end all predictions go to out_dir/predictions.jsonl (atomically) and are
 * scored into r. The split must be loaded. */
SA3D_API sa3d_status sa3d_eval_run(sa3d_dataset *ds, const sa3d_eval_params *p, sa3d_pair_matcher match, void *ctx,
                                   sa3d_pck_report *r, long *resumed_pairs, sa3d_error *err);

/* Window soft-argmax on a similarity map S[h][w] (METHOD.md 6.2 step 4; GeoAware-SC / SemAlign3D flow utils):
 * argmax cell, keep S within |dx|,|dy| <= radius of it and set the rest to 0 (not -inf), softmax of S / beta
 * over all cells, expected position under linspace(-1, 1, n) per axis mapped back to cells and clamped.
 * Returns the argmax cell in (ax, ay) and the sub-cell position in (x, y), in cell units. A radius below 0 is
 * taken as 0, one past the grid as the grid. */
SA3D_API void sa3d_window_soft_argmax(const float *S, int w, int h, int radius, float beta, int *ax, int *ay,
                                      float *x, float *y);

#ifdef __cplusplus
}
#endif
#endif
