/* Running a matcher over a dataset split with per-category resume files, then scoring (eval.h). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "base/base.h"
#include "eval/eval_internal.h"
#include "semalign3d/eval.h"

sa3d_eval_params sa3d_eval_params_default(void) {
    sa3d_eval_params p = { .split = "test", .out_dir = "eval-out" };
    return p;
}

typedef struct pred_row { float kps[SA3D_MAX_KPS][2]; } pred_row;

/* Appends one JSON line for pair into buf (grown with realloc). %.9g writes each float exactly (nine significant
 * digits round-trip a float), so a resumed run and `pck` on predictions.jsonl score what the fresh run scored: a
 * prediction rounded across the strict PCK bound would change the result. The points are checked
 * (sa3d_pred_check), so each takes at most 2 x 15 + 6 characters. */
static int append_line(char **buf, size_t *len, size_t *cap, const sa3d_pair *pair, const float (*pred)[2]) {
    size_t need = 64 + strlen(pair->id) + (size_t)pair->n_kps * 40;
    if (*len + need > *cap) {
        size_t nc = (*cap + need) * 2;
        char *nb = realloc(*buf, nc);
        if (!nb) return 0;
        *buf = nb;
        *cap = nc;
    }
    size_t at = *len, end = *len + need;   /* snprintf returns the length it wanted: stop once that overshoots */
    at += (size_t)snprintf(*buf + at, end - at, "{\"pair\": \"%s\", \"trg_kps\": [", pair->id);
    for (int i = 0; i < pair->n_kps && at < end; i++)
        at += (size_t)snprintf(*buf + at, end - at, "%s[%.9g, %.9g]", i ? ", " : "", (double)pred[i][0],
                               (double)pred[i][1]);
    if (at < end) at += (size_t)snprintf(*buf + at, end - at, "]}\n");
    if (at >= end) return 0;   /* not for checked points */
    *len = at;
    return 1;
}

/* Loads a part file whose first lines are the pairs idx[0..n) in order; returns 1 when they are there and valid.
 * Lines past n are the rest of the category, from a run with a larger limit (or none): a --limit rerun reuses them
 * and leaves the file as it is. */
static int load_part(const char *path, const sa3d_dataset *ds, const char *split, const int *idx, int n, pred_row *rows) {
    char *text = NULL;
    size_t len;
    if (!sa3d_file_exists(path) || sa3d_read_file(path, (size_t)1 << 30, &text, &len, NULL) != SA3D_OK) return 0;
    int k = 0, ok = 1;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && ok && k < n; line = strtok_r(NULL, "\n", &save)) {
        /* the same validation as a scored predictions file, and the pairs in the expected order */
        ok = sa3d_pred_parse_line(ds, split, path, k + 1, line, rows[k].kps, NULL, NULL) ==
             sa3d_dataset_pair(ds, split, idx[k]);
        k++;
    }
    sa3d_free(text);
    return ok && k == n;
}

/* Whether a part may be reused under this run's key (sa3d_eval_params.part_key): no key, no key file beside the
 * part (an earlier version wrote none), or the same key. */
static int part_key_ok(const char *key_path, const char *key) {
    if (!key || !sa3d_file_exists(key_path)) return 1;
    char *old = NULL;
    size_t len;
    int same = sa3d_read_file(key_path, 4096, &old, &len, NULL) == SA3D_OK && !strcmp(old, key);
    sa3d_free(old);
    return same;
}

/* A finished category: the old part goes, then the new key (part_key; none: the old one goes too), then the new
 * lines, each file written atomically. Stopped anywhere in between, no part is left beside a key it was not made
 * under (the part first, then the key, left the new part beside the old key when stopped between the two). */
static sa3d_status write_part(const char *part, const char *buf, size_t len, const char *key_path, const char *key,
                              sa3d_error *err) {
    if (remove(part) != 0 && errno != ENOENT)
        return sa3d_fail(err, SA3D_ERR_IO, "%s: cannot replace: %s", part, strerror(errno));
    sa3d_status s = SA3D_OK;
    if (key) s = sa3d_write_file_atomic(key_path, key, strlen(key), err);
    else if (remove(key_path) != 0 && errno != ENOENT)
        s = sa3d_fail(err, SA3D_ERR_IO, "%s: cannot remove: %s", key_path, strerror(errno));
    return s ? s : sa3d_write_file_atomic(part, buf ? buf : "", len, err);
}

/* Whether the parts folder holds a category's predictions (<category>.jsonl). */
static int has_part_files(const char *parts) {
    DIR *d = opendir(parts);
    if (!d) return 1;   /* unreadable: assume it does */
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        found = n > 6 && !strcmp(e->d_name + n - 6, ".jsonl");
    }
    closedir(d);
    return found;
}

sa3d_status sa3d_eval_run(sa3d_dataset *ds, const sa3d_eval_params *p, sa3d_pair_matcher match, void *ctx,
                          sa3d_pck_report *r, long *resumed_pairs, sa3d_error *err) {
    *resumed_pairs = 0;
    if (!p->split || !p->out_dir || (!match && !p->match_batch))
        return sa3d_fail(err, SA3D_ERR_ARG, "eval: split, out_dir and a matcher are required");
    if (!p->out_dir[0]) return sa3d_fail(err, SA3D_ERR_ARG, "eval: empty output directory name");
    if (strlen(p->out_dir) > SA3D_EVAL_MAX_DIR)
        return sa3d_fail(err, SA3D_ERR_ARG, "eval: output directory name of %zu bytes (at most %d): %.60s...",
                         strlen(p->out_dir), SA3D_EVAL_MAX_DIR, p->out_dir);
    if (p->limit < 0) return sa3d_fail(err, SA3D_ERR_ARG, "eval: limit %ld (0: every pair, or > 0)", p->limit);
    int n = sa3d_dataset_n_pairs(ds, p->split);
    if (n <= 0) return sa3d_fail(err, SA3D_ERR_ARG, "split %s has no pairs", p->split);
    char parts[2048];
    snprintf(parts, sizeof parts, "%s/parts", p->out_dir);
    sa3d_status ms = sa3d_mkdirs(parts, err);   /* with the parents of out_dir, as the other commands' --out */
    if (ms) return ms;
    if (p->settings) {   /* resume only what these settings made */
        char path[2100], *old = NULL;
        size_t len;
        snprintf(path, sizeof path, "%s/settings.txt", parts);
        int same = 0;
        if (sa3d_file_exists(path)) {   /* one that cannot be read is an error, not a fresh start */
            sa3d_status rs = sa3d_read_file(path, (size_t)1 << 20, &old, &len, err);
            if (rs) return rs;
            same = !strcmp(old, p->settings);
            sa3d_free(old);
            /* other settings guard only predictions: a run that failed before its first category (a wrong
             * --features folder, --size) left none, and its settings must not block the corrected run */
            if (!same && has_part_files(parts))
                return sa3d_fail(err, SA3D_ERR_ARG, "%s: the predictions there were made with other settings (see "
                                 "that file); give another output folder or delete it", path);
        }
        if (!same) {
            sa3d_status ws = sa3d_write_file_atomic(path, p->settings, strlen(p->settings), err);
            if (ws) return ws;
        }
    }

    int *idx = sa3d_malloc((size_t)n * sizeof *idx);
    pred_row *rows = sa3d_malloc((size_t)n * sizeof *rows);
    unsigned char *done = sa3d_calloc((size_t)n, 1);
    char *all = NULL, *buf = NULL;
    size_t all_len = 0, all_cap = 0, len = 0, cap = 0;
    sa3d_status s = SA3D_OK;
    if (!idx || !rows || !done) { s = sa3d_fail(err, SA3D_ERR_NOMEM, "eval: out of memory for %d pairs", n); goto out; }
    long total = 0, progressed = 0;
    /* the split's categories, sorted; total work = per category min(limit, pairs) */
    char cats[SA3D_PCK_MAX_CATEGORIES][32];
    int n_cats = 0;
    for (int i = 0; i < n; i++) {
        const sa3d_pair *pr = sa3d_dataset_pair(ds, p->split, i);
        int found = 0;
        for (int c = 0; c < n_cats && !found; c++) found = !strcmp(cats[c], pr->category);
        if (!found) {
            if (n_cats == SA3D_PCK_MAX_CATEGORIES) { s = sa3d_fail(err, SA3D_ERR_UNSUPPORTED, "eval: too many categories"); goto out; }
            snprintf(cats[n_cats++], sizeof cats[0], "%s", pr->category);
        }
    }
    for (int a = 1; a < n_cats; a++)   /* sorted category order */
        for (int b = a; b > 0 && strcmp(cats[b - 1], cats[b]) > 0; b--) {
            char t[32];
            memcpy(t, cats[b], 32); memcpy(cats[b], cats[b - 1], 32); memcpy(cats[b - 1], t, 32);
        }
    for (int c = 0; c < n_cats; c++) {
        long k = 0;
        for (int i = 0; i < n; i++) k += !strcmp(sa3d_dataset_pair(ds, p->split, i)->category, cats[c]);
        total += p->limit > 0 && k > p->limit ? p->limit : k;
    }
    /* every pair the run will score, before any work: one whose image sizes disagree with its images' records
     * fails now, not hours in */
    for (int c = 0; c < n_cats && !s; c++)
        for (int i = 0, k = 0; i < n && !s && (p->limit <= 0 || k < p->limit); i++) {
            const sa3d_pair *pr = sa3d_dataset_pair(ds, p->split, i);
            if (strcmp(pr->category, cats[c])) continue;
            k++;
            s = sa3d_dataset_pair_check_sizes(ds, pr, err);
        }
    if (s) goto out;
    for (int c = 0; c < n_cats; c++) {
        int m = 0;
        for (int i = 0; i < n && (p->limit <= 0 || m < p->limit); i++)
            if (!strcmp(sa3d_dataset_pair(ds, p->split, i)->category, cats[c])) idx[m++] = i;
        char part[4096], key_path[4096];
        snprintf(part, sizeof part, "%.2047s/%.31s.jsonl", parts, cats[c]);
        snprintf(key_path, sizeof key_path, "%.2047s/%.31s.key", parts, cats[c]);
        const char *key = p->part_key ? p->part_key(p->part_key_user, cats[c]) : NULL;
        pred_row *stage = sa3d_malloc((size_t)m * sizeof *stage);
        if (!stage) { s = sa3d_fail(err, SA3D_ERR_NOMEM, "eval: out of memory"); goto out; }
        if (part_key_ok(key_path, key) && load_part(part, ds, p->split, idx, m, stage)) {
            *resumed_pairs += m;
            progressed += m;
            if (p->progress && p->progress(p->progress_user, progressed, total, cats[c]) && progressed < total) {
                sa3d_free(stage);
                s = sa3d_fail(err, SA3D_ERR_CANCELLED, "cancelled");
                goto out;
            }
        } else if (p->match_batch) {   /* the whole category in one call, then its lines in pair order */
            const sa3d_pair **prs = sa3d_malloc((size_t)(m > 0 ? m : 1) * sizeof *prs);
            if (!prs) { sa3d_free(stage); s = sa3d_fail(err, SA3D_ERR_NOMEM, "eval: out of memory"); goto out; }
            for (int j = 0; j < m; j++) prs[j] = sa3d_dataset_pair(ds, p->split, idx[j]);
            s = p->match_batch(ctx, prs, m, (float (*)[SA3D_MAX_KPS][2])stage, err);
            sa3d_free(prs);
            for (int j = 0; j < m && !s; j++)
                s = sa3d_pred_check(sa3d_dataset_pair(ds, p->split, idx[j]), (const float (*)[2])stage[j].kps, err);
            if (s == SA3D_ERR_CANCELLED)   /* by the matcher's own hooks, inside the category */
                s = sa3d_fail(err, s, "cancelled during %s after %ld pairs (finished categories are kept)",
                              cats[c], progressed);
            else if (s)
                sa3d_error_prefix(err, "%s", cats[c]);
            if (s) { sa3d_free(stage); goto out; }
            len = 0;
            for (int j = 0; j < m; j++)
                if (!append_line(&buf, &len, &cap, sa3d_dataset_pair(ds, p->split, idx[j]),
                                 (const float (*)[2])stage[j].kps)) {
                    sa3d_free(stage);
                    s = sa3d_fail(err, SA3D_ERR_NOMEM, "eval: out of memory");
                    goto out;
                }
            if ((s = write_part(part, buf, len, key_path, key, err))) { sa3d_free(stage); goto out; }
            progressed += m;   /* after the part file, so a cancel here keeps this category */
            if (p->progress && p->progress(p->progress_user, progressed, total, cats[c]) && progressed < total) {
                sa3d_free(stage);
                s = sa3d_fail(err, SA3D_ERR_CANCELLED, "cancelled after %ld pairs (finished categories are kept)",
                              progressed);
                goto out;
            }
        } else {
            len = 0;
            for (int j = 0; j < m; j++) {
                const sa3d_pair *pr = sa3d_dataset_pair(ds, p->split, idx[j]);
                if ((s = match(ctx, pr, stage[j].kps, err)) == SA3D_OK)
                    s = sa3d_pred_check(pr, (const float (*)[2])stage[j].kps, err);   /* names the pair */
                else if (s == SA3D_ERR_CANCELLED)
                    s = sa3d_fail(err, s, "cancelled after %ld pairs (finished categories are kept)", progressed);
                else
                    sa3d_error_prefix(err, "%s", pr->id);
                if (s) {
                    sa3d_free(stage);
                    goto out;
                }
                if (!append_line(&buf, &len, &cap, pr, (const float (*)[2])stage[j].kps)) {
                    sa3d_free(stage);
                    s = sa3d_fail(err, SA3D_ERR_NOMEM, "eval: out of memory");
                    goto out;
                }
                progressed++;
                if (p->progress && p->progress(p->progress_user, progressed, total, pr->id) && progressed < total) {
                    sa3d_free(stage);
                    s = sa3d_fail(err, SA3D_ERR_CANCELLED, "cancelled after %ld pairs (finished categories are kept)",
                                  progressed);
                    goto out;
                }
            }
            if ((s = write_part(part, buf, len, key_path, key, err))) { sa3d_free(stage); goto out; }
        }
        for (int j = 0; j < m; j++) {
            rows[idx[j]] = stage[j];
            done[idx[j]] = 1;
        }
        sa3d_free(stage);
    }
    /* all predictions in split order, then the score */
    for (int i = 0; i < n; i++) {
        if (!done[i]) continue;
        const sa3d_pair *pr = sa3d_dataset_pair(ds, p->split, i);
        if (!append_line(&all, &all_len, &all_cap, pr, (const float (*)[2])rows[i].kps)) {
            s = sa3d_fail(err, SA3D_ERR_NOMEM, "eval: out of memory");
            goto out;
        }
        if ((s = sa3d_pck_add(r, pr, (const float (*)[2])rows[i].kps, err))) goto out;
    }
    sa3d_pck_finish(r);
    char path[2200];
    snprintf(path, sizeof path, "%s/predictions.jsonl", p->out_dir);
    s = sa3d_write_file_atomic(path, all ? all : "", all_len, err);
out:
    free(all);
    free(buf);
    sa3d_free(idx);
    sa3d_free(rows);
    sa3d_free(done);
    return s;
}
