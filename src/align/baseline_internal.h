/* Internal view of the baseline matcher (baseline.c) for its adaptive flip (baseline_flip.c). */
#ifndef SA3D_BASELINE_INTERNAL_H
#define SA3D_BASELINE_INTERNAL_H

#include "semalign3d/match.h"

/* sa3d_match_baseline with the queries given as cells of src's grid (cy * g + cx) instead of source pixels:
 * pred[i] = the window soft-argmax match of src's cell cells_q[i] in trg, in original target pixels. work:
 * sa3d_baseline_work_floats(C, g, n). */
sa3d_status sa3d_match_baseline_cells(const sa3d_feature_map *src, const sa3d_feature_map *trg, const size_t *cells_q,
                                      int n, const sa3d_baseline_params *p, float (*pred)[2], float *work,
                                      sa3d_error *err);
/* The first baseline option out of its domain ("baseline.NAME (domain)"), or NULL. */
const char *sa3d_baseline_bad_option(const sa3d_baseline_params *p);
/* The cell of square-frame point (x, y) on a g x g grid over an input_size square, clamped to the grid. */
size_t sa3d_baseline_query_cell(float x, float y, int input_size, int g);
/* SA3D_ERR_ARG naming the first query of kps[0..n) that is not finite (who: the caller, for the message): cells
 * come from (int)floor of a query, which NaN or infinity leave undefined. */
sa3d_status sa3d_queries_check(const float (*kps)[2], int n, const char *who, sa3d_error *err);

#endif
