/* Scoring a predictions file made by anyone (JSON lines, one pair per line; format in eval.h): every line is
 * validated (pair known, one finite point per src keypoint, no duplicates) and errors name file:line. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "base/base.h"
#include "eval/eval_internal.h"
#include "semalign3d/eval.h"

const sa3d_pair *sa3d_pred_parse_line(const sa3d_dataset *ds, const char *split, const char *path, long lineno,
                                   const char *line, float (*pts)[2], int *other_category, sa3d_error *err) {
    /* nothing but white space after the object: a second record on the line would otherwise go unread */
    cJSON *o = cJSON_ParseWithOpts(line, NULL, 1);
    if (other_category) *other_category = 0;
    const sa3d_pair *pair = NULL;
    if (!cJSON_IsObject(o)) {
        sa3d_fail(err, SA3D_ERR_FORMAT, "%s:%ld: not one JSON object", path, lineno);
        goto done;
    }
    int n_pair = 0, n_kps = 0;   /* cJSON would take the first of a repeated key */
    for (const cJSON *c = o->child; c; c = c->next) {
        n_pair += c->string && !strcmp(c->string, "pair");
        n_kps += c->string && !strcmp(c->string, "trg_kps");
    }
    if (n_pair > 1 || n_kps > 1) {
        sa3d_fail(err, SA3D_ERR_FORMAT, "%s:%ld: \"%s\" given twice", path, lineno, n_pair > 1 ? "pair" : "trg_kps");
        goto done;
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "pair"), *kps = cJSON_GetObjectItemCaseSensitive(o, "trg_kps");
    if (!cJSON_IsString(id)) { sa3d_fail(err, SA3D_ERR_FORMAT, "%s:%ld: \"pair\": expected a string", path, lineno); goto done; }
    const sa3d_pair *p = sa3d_dataset_find_pair(ds, split, id->valuestring);
    /* a pair of a category the dataset was opened without (and one its kind has): checked, then counted */
    const char *cat = strrchr(id->valuestring, ':');
    int other = !p && other_category && cat && cat[1] && !sa3d_dataset_category_selected(ds, cat + 1) &&
                sa3d_dataset_category_known(ds, cat + 1);
    if (!p && !other) {
        int skipped = sa3d_dataset_n_skipped(ds, split);
        sa3d_fail(err, SA3D_ERR_FORMAT, "%s:%ld: pair '%.160s' is not in split %s%s", path, lineno, id->valuestring,
                  split, skipped ? " (or its record is one of those skipped as malformed, named in the warnings "
                                   "above; remove its line to score the rest)" : "");
        goto done;
    }
    if (p && (!cJSON_IsArray(kps) || cJSON_GetArraySize(kps) != p->n_kps)) {
        sa3d_fail(err, SA3D_ERR_FORMAT, "%s:%ld: \"trg_kps\": expected %d points (one per src_kps entry of %s)",
                  path, lineno, p->n_kps, p->id);
        goto done;
    }
    if (!p && (!cJSON_IsArray(kps) || cJSON_GetArraySize(kps) > SA3D_MAX_KPS)) {
        sa3d_fail(err, SA3D_ERR_FORMAT, "%s:%ld: \"trg_kps\": expected at most %d points", path, lineno,
                  SA3D_MAX_KPS);
        goto done;
    }
    int i = 0;
    const cJSON *pt;
    cJSON_ArrayForEach(pt, kps) {
        const cJSON *x = cJSON_GetArrayItem(pt, 0), *y = cJSON_GetArrayItem(pt, 1);
        if (!cJSON_IsArray(pt) || cJSON_GetArraySize(pt) != 2 || !cJSON_IsNumber(x) || !cJSON_IsNumber(y) ||
            !isfinite(x->valuedouble) || !isfinite(y->valuedouble) || fabs(x->valuedouble) > SA3D_PRED_MAX_ABS ||
            fabs(y->valuedouble) > SA3D_PRED_MAX_ABS) {
            sa3d_fail(err, SA3D_ERR_FORMAT, "%s:%ld: \"trg_kps\"[%d]: expected [x, y] finite numbers", path, lineno, i);
            goto done;
        }
        if (p) {
            pts[i][0] = (float)x->valuedouble;
            pts[i][1] = (float)y->valuedouble;
        }
        i++;
    }
    if (other) *other_category = 1;
    pair = p;
done:
    cJSON_Delete(o);
    return pair;
}

sa3d_status sa3d_pck_score_file(sa3d_pck_report *r, const sa3d_dataset *ds, const char *split, const char *path,
                                int allow_missing, long *missing, sa3d_error *err) {
    *missing = 0;
    int n = sa3d_dataset_n_pairs(ds, split);
    if (n <= 0)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: split %s has no pairs of the selected categories (or is not loaded)",
                         path, split);
    struct stat sb;
    FILE *f = sa3d_open_regular(path, &sb, err);   /* a folder would read as empty, a FIFO block */
    if (!f) return SA3D_ERR_IO;
    unsigned char *seen = sa3d_calloc((size_t)n, 1);
    const sa3d_pair **by_index = sa3d_calloc((size_t)n, sizeof *by_index);
    float (*preds)[SA3D_MAX_KPS][2] = sa3d_calloc((size_t)n, sizeof *preds);
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    sa3d_status s = SA3D_OK;
    if (!seen || !by_index || !preds) { s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", path); goto done; }
    for (int i = 0; i < n; i++) by_index[i] = sa3d_dataset_pair(ds, split, i);
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (len > (1 << 20)) { s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s:%ld: line longer than 1 MiB", path, lineno); goto done; }
        if ((size_t)len != strlen(line)) { s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s:%ld: NUL byte in line", path, lineno); goto done; }
        int blank = 1;
        for (ssize_t k = 0; k < len && blank; k++) blank = line[k] == ' ' || line[k] == '\t' || line[k] == '\n' || line[k] == '\r';
        if (blank) continue;
        float pts[SA3D_MAX_KPS][2];
        int other = 0;
        const sa3d_pair *p = sa3d_pred_parse_line(ds, split, path, lineno, line, pts, &other, err);
        if (other) { r->other_categories++; continue; }
        if (!p) { s = err ? err->code : SA3D_ERR_FORMAT; goto done; }
        int lo = 0, hi = n - 1, idx = -1;   /* a split's pairs are sorted by id (data.h) */
        while (lo <= hi && idx < 0) {
            int mid = (lo + hi) / 2, c = strcmp(by_index[mid]->id, p->id);
            if (c == 0) idx = mid;
            else if (c < 0) lo = mid + 1;
            else hi = mid - 1;
        }
        if (idx < 0) { s = sa3d_fail(err, SA3D_ERR_ARG, "%s: split %s is not sorted by pair id", path, split); goto done; }
        if (seen[idx]) { s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s:%ld: pair %s predicted twice", path, lineno, p->id); goto done; }
        seen[idx] = 1;
        memcpy(preds[idx], pts, sizeof pts);
    }
    if (ferror(f)) {   /* getline's -1 is also a read error, not only the end */
        s = sa3d_fail(err, SA3D_ERR_IO, "%s: read failed after line %ld: %s", path, lineno, strerror(errno));
        goto done;
    }
    for (int i = 0; i < n; i++) {   /* split order, so the report does not depend on line order */
        if (!seen[i]) {
            (*missing)++;
            continue;
        }
        if ((s = sa3d_pck_add(r, by_index[i], (const float (*)[2])preds[i], err))) goto done;
    }
    if (*missing && !allow_missing)
        s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %ld of %d pairs of split %s have no prediction", path, *missing, n,
                      split);
    sa3d_pck_finish(r);
done:
    free(line);
    fclose(f);
    sa3d_free(seen);
    sa3d_free(by_index);
    sa3d_free(preds);
    return s;
}

sa3d_status sa3d_pred_check(const sa3d_pair *pair, const float (*pts)[2], sa3d_error *err) {
    for (int i = 0; i < pair->n_kps; i++)
        if (!(fabs((double)pts[i][0]) <= SA3D_PRED_MAX_ABS && fabs((double)pts[i][1]) <= SA3D_PRED_MAX_ABS))
            return sa3d_fail(err, SA3D_ERR_NUMERIC, "%s: the matcher predicted (%g, %g) for keypoint %d: not a finite "
                             "pixel position within %g", pair->id, (double)pts[i][0], (double)pts[i][1], i,
                             SA3D_PRED_MAX_ABS);
    return SA3D_OK;
}
