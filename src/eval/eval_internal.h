/* Internal to src/eval: one parser for a predictions line, shared by pck scoring and eval's resume files. */
#ifndef SA3D_EVAL_INTERNAL_H
#define SA3D_EVAL_INTERNAL_H

#include "semalign3d/eval.h"

/* A prediction is a finite pixel coordinate with |x|, |y| <= SA3D_PRED_MAX_ABS (larger is surely wrong, and would
 * not fit the line that eval writes for it). */
#define SA3D_PRED_MAX_ABS 1e9

/* SA3D_ERR_NUMERIC naming the pair and the point when a matcher's prediction breaks that rule. */
sa3d_status sa3d_pred_check(const sa3d_pair *pair, const float (*pts)[2], sa3d_error *err);

/* Parses {"pair": ..., "trg_kps": [[x, y], ...]} into pts (one finite point per src keypoint of the pair).
 * Returns the pair, or NULL with err naming path:lineno (err may be NULL). When other_category is given, a pair
 * that is not in the split because its id's category (after the last ':') is outside the dataset's selection
 * returns NULL with *other_category = 1 and err untouched. */
const sa3d_pair *sa3d_pred_parse_line(const sa3d_dataset *ds, const char *split, const char *path, long lineno,
                                      const char *line, float (*pts)[2], int *other_category, sa3d_error *err);

#endif
