/* Internal to src/eval: one parser for a predictions line, shared by pck scoring and eval's resume files. */
#ifndef SA3D_EVAL_INTERNAL_H
#define SA3D_EVAL_INTERNAL_H

#include "semalign3d/eval.h"

/* Parses {"pair": ..., "trg_kps": [[x, y], ...]} into pts (one finite point per src keypoint of the pair).
 * Returns the pair, or NULL with err naming path:lineno (err may be NULL). */
const sa3d_pair *sa3d_pred_parse_line(const sa3d_dataset *ds, const char *split, const char *path, long lineno,
                                      const char *line, float (*pts)[2], sa3d_error *err);

#endif
