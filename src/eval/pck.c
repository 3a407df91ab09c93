/* PCK (METHOD.md 7.1): accumulation per category, overall and per difficulty flag value; the labelled text
 * table and the JSON report; scoring of a predictions file; the window soft-argmax shared by the matchers. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "semalign3d/eval.h"

static const double alphas[2][SA3D_PCK_N_ALPHA] = { { 0.10, 0.05, 0.01 }, { 0.10, 0.05, 0.15 } };
static const char *alpha_keys[2][SA3D_PCK_N_ALPHA] = { { "0.1", "0.05", "0.01" }, { "0.1", "0.05", "0.15" } };

const double *sa3d_pck_alphas(sa3d_dataset_kind kind) { return alphas[kind == SA3D_DATASET_PFPASCAL]; }
const char *sa3d_pck_alpha_key(sa3d_dataset_kind kind, int a) {
    return a >= 0 && a < SA3D_PCK_N_ALPHA ? alpha_keys[kind == SA3D_DATASET_PFPASCAL][a] : "?";
}
static const char *flag_names[SA3D_PCK_N_FLAGS] = { "viewpoint_variation", "scale_variation", "truncation",
                                                    "occlusion", "mirror" };

const char *sa3d_pck_flag_name(int flag) { return flag >= 0 && flag < SA3D_PCK_N_FLAGS ? flag_names[flag] : "?"; }

void sa3d_pck_init(sa3d_pck_report *r) { memset(r, 0, sizeof *r); r->kind = SA3D_DATASET_SPAIR; }

const char *sa3d_pck_threshold_rule(sa3d_dataset_kind kind) {
    /* GeoAware-SC evaluates PF-PASCAL against the image size (load_pascal_data), SPair and AP-10K against the
     * target box (load_spair_data, load_ap10k_data); the readers store the matching threshold_base */
    return kind == SA3D_DATASET_PFPASCAL ? "alpha x max(W, H) of the target image"
                                         : "alpha x max(w, h) of the target bbox";
}

static int category_slot(sa3d_pck_report *r, const char *name) {
    for (int i = 0; i < r->n_categories; i++)
        if (!strcmp(r->category[i], name)) return i;
    if (r->n_categories == SA3D_PCK_MAX_CATEGORIES) return -1;
    snprintf(r->category[r->n_categories], sizeof r->category[0], "%s", name);
    return r->n_categories++;
}

static void cell_add(sa3d_pck_cell *c, int n, const long *correct) {
    c->pairs++;
    c->keypoints += n;
    for (int a = 0; a < SA3D_PCK_N_ALPHA; a++) {
        c->correct[a] += correct[a];
        c->per_image_sum[a] += (double)correct[a] / (double)n;
    }
}

sa3d_status sa3d_pck_add(sa3d_pck_report *r, const sa3d_pair *pair, const float (*pred)[2], sa3d_error *err) {
    if (pair->n_kps <= 0) {
        r->skipped_empty++;
        return SA3D_OK;
    }
    int slot = category_slot(r, pair->category);
    if (slot < 0)
        return sa3d_fail(err, SA3D_ERR_UNSUPPORTED, "%s: more than %d categories", pair->id, SA3D_PCK_MAX_CATEGORIES);
    long correct[SA3D_PCK_N_ALPHA] = { 0 };
    const double *alpha = sa3d_pck_alphas(r->kind);
    for (int i = 0; i < pair->n_kps; i++) {
        if (!isfinite(pred[i][0]) || !isfinite(pred[i][1]))
            return sa3d_fail(err, SA3D_ERR_NUMERIC, "%s: prediction %d is not finite", pair->id, i);
        double dx = (double)pred[i][0] - (double)pair->trg_kps[i][0];
        double dy = (double)pred[i][1] - (double)pair->trg_kps[i][1];
        double d = sqrt(dx * dx + dy * dy);
        for (int a = 0; a < SA3D_PCK_N_ALPHA; a++)
            if (d < alpha[a] * (double)pair->threshold_base) correct[a]++;   /* strict < */
    }
    cell_add(&r->cat[slot], pair->n_kps, correct);
    cell_add(&r->overall, pair->n_kps, correct);
    int flags[SA3D_PCK_N_FLAGS] = { pair->viewpoint_variation, pair->scale_variation, pair->truncation,
                                    pair->occlusion, pair->mirror };
    for (int f = 0; f < SA3D_PCK_N_FLAGS; f++)
        if (flags[f] >= 0 && flags[f] < SA3D_PCK_FLAG_VALUES) cell_add(&r->by_flag[f][flags[f]], pair->n_kps, correct);
    return SA3D_OK;
}

void sa3d_pck_finish(sa3d_pck_report *r) {
    for (int i = 1; i < r->n_categories; i++)   /* insertion sort by name: at most 64 entries */
        for (int j = i; j > 0 && strcmp(r->category[j - 1], r->category[j]) > 0; j--) {
            char name[32];
            sa3d_pck_cell c = r->cat[j];
            memcpy(name, r->category[j], sizeof name);
            memcpy(r->category[j], r->category[j - 1], sizeof name);
            memcpy(r->category[j - 1], name, sizeof name);
            r->cat[j] = r->cat[j - 1];
            r->cat[j - 1] = c;
        }
}

double sa3d_pck_per_image(const sa3d_pck_cell *c, int a) {
    return c->pairs ? 100.0 * c->per_image_sum[a] / (double)c->pairs : (double)NAN;
}

double sa3d_pck_per_keypoint(const sa3d_pck_cell *c, int a) {
    return c->keypoints ? 100.0 * (double)c->correct[a] / (double)c->keypoints : (double)NAN;
}

double sa3d_pck_category_mean(const sa3d_pck_report *r, int a) {
    double s = 0.0;
    int n = 0;
    for (int i = 0; i < r->n_categories; i++)
        if (r->cat[i].pairs) { s += sa3d_pck_per_image(&r->cat[i], a); n++; }
    return n ? s / n : (double)NAN;
}

/* ---- text ---- */

typedef struct strbuf { char *s; size_t n, cap; int oom; } strbuf;

static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) { b->oom = 1; return; }
        if (b->s && b->n + (size_t)k < b->cap) { b->n += (size_t)k; return; }
        size_t cap = (b->cap + (size_t)k + 1) * 2;
        char *ns = realloc(b->s, cap);
        if (!ns) { b->oom = 1; return; }
        b->s = ns;
        b->cap = cap;
    }
}

static void sb_pct(strbuf *b, double v) {
    if (isnan(v)) sb_printf(b, " %6s", "-");
    else sb_printf(b, " %6.2f", v);
}

static void row(strbuf *b, const char *name, const sa3d_pck_cell *c) {
    sb_printf(b, "%-22s %7ld %8ld |", name, c->pairs, c->keypoints);
    for (int a = 0; a < SA3D_PCK_N_ALPHA; a++) sb_pct(b, sa3d_pck_per_image(c, a));
    sb_printf(b, " |");
    for (int a = 0; a < SA3D_PCK_N_ALPHA; a++) sb_pct(b, sa3d_pck_per_keypoint(c, a));
    sb_printf(b, "\n");
}

char *sa3d_pck_format(const sa3d_pck_report *r, const char *title) {
    strbuf b = { 0 };
    sb_printf(&b, "%s\n", title ? title : "PCK");
    sb_printf(&b, "correct: |pred - gt| < %s; values in %%\n", sa3d_pck_threshold_rule(r->kind));
    sb_printf(&b, "per-image: mean over pairs of each pair's fraction correct; per-keypoint: all keypoints pooled\n\n");
    sb_printf(&b, "%-22s %7s %8s | %-20s | %-20s\n", "", "", "", "per-image PCK @", "per-keypoint PCK @");
    const double *alpha = sa3d_pck_alphas(r->kind);
    sb_printf(&b, "%-22s %7s %8s |", "category", "pairs", "keypts");
    for (int k = 0; k < 2 * SA3D_PCK_N_ALPHA; k++)
        sb_printf(&b, "  %5.2f%s", alpha[k % SA3D_PCK_N_ALPHA], k == SA3D_PCK_N_ALPHA - 1 ? " |" : "");
    sb_printf(&b, "\n");
    for (int i = 0; i < r->n_categories; i++) row(&b, r->category[i], &r->cat[i]);
    sb_printf(&b, "\n");
    sb_printf(&b, "%-22s %7s %8s |", "All: category mean", "-", "-");   /* its pairs differ by category */
    for (int a = 0; a < SA3D_PCK_N_ALPHA; a++) sb_pct(&b, sa3d_pck_category_mean(r, a));
    sb_printf(&b, " |  %5s  %5s  %5s\n", "-", "-", "-");
    row(&b, "All: pair-weighted", &r->overall);
    sb_printf(&b, "(category mean: the mean of the %d categories' per-image PCK, each category counting once)\n",
              r->n_categories);
    int any_flag = 0;
    for (int f = 0; f < SA3D_PCK_N_FLAGS; f++)
        for (int v = 0; v < SA3D_PCK_FLAG_VALUES; v++) any_flag |= r->by_flag[f][v].pairs > 0;
    if (any_flag) {
        sb_printf(&b, "\nby difficulty flag (all categories pooled, pair-weighted):\n");
        for (int f = 0; f < SA3D_PCK_N_FLAGS; f++)
            for (int v = 0; v < SA3D_PCK_FLAG_VALUES; v++) {
                if (!r->by_flag[f][v].pairs) continue;
                char name[40];
                snprintf(name, sizeof name, "%s=%d", flag_names[f], v);
                row(&b, name, &r->by_flag[f][v]);
            }
    }
    if (r->skipped_empty) sb_printf(&b, "\n%ld pairs without keypoints were not counted\n", r->skipped_empty);
    if (r->other_categories)
        sb_printf(&b, "\n%ld predicted pairs of categories outside the selection were not scored\n",
                  r->other_categories);
    if (b.oom) { free(b.s); return NULL; }
    return b.s;
}

/* ---- JSON ---- */

static cJSON *num_or_null(double v) { return isnan(v) ? cJSON_CreateNull() : cJSON_CreateNumber(v); }

static cJSON *alpha_obj(const sa3d_pck_cell *c, int per_image, sa3d_dataset_kind kind) {
    cJSON *o = cJSON_CreateObject();
    for (int a = 0; a < SA3D_PCK_N_ALPHA; a++)
        cJSON_AddItemToObject(o, sa3d_pck_alpha_key(kind, a),
                              num_or_null(per_image ? sa3d_pck_per_image(c, a) : sa3d_pck_per_keypoint(c, a)));
    return o;
}

static cJSON *cell_obj(const sa3d_pck_cell *c, sa3d_dataset_kind kind) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "pairs", (double)c->pairs);
    cJSON_AddNumberToObject(o, "keypoints", (double)c->keypoints);
    cJSON_AddItemToObject(o, "per_image", alpha_obj(c, 1, kind));
    cJSON_AddItemToObject(o, "per_keypoint", alpha_obj(c, 0, kind));
    return o;
}

sa3d_status sa3d_pck_write_json(const sa3d_pck_report *r, const char *path, const char *const *meta, sa3d_error *err) {
    cJSON *root = cJSON_CreateObject();
    cJSON *overall = cJSON_AddObjectToObject(root, "overall");
    cJSON *pi = cJSON_AddObjectToObject(overall, "per_image");
    cJSON *cm = cJSON_CreateObject();
    for (int a = 0; a < SA3D_PCK_N_ALPHA; a++)
        cJSON_AddItemToObject(cm, sa3d_pck_alpha_key(r->kind, a), num_or_null(sa3d_pck_category_mean(r, a)));
    cJSON_AddItemToObject(pi, "category_mean", cm);
    cJSON_AddItemToObject(pi, "pair_weighted", alpha_obj(&r->overall, 1, r->kind));
    cJSON_AddItemToObject(overall, "per_keypoint", alpha_obj(&r->overall, 0, r->kind));
    cJSON_AddNumberToObject(overall, "pairs", (double)r->overall.pairs);
    cJSON_AddNumberToObject(overall, "keypoints", (double)r->overall.keypoints);
    cJSON_AddNumberToObject(overall, "pairs_without_keypoints", (double)r->skipped_empty);
    cJSON_AddNumberToObject(overall, "pairs_of_other_categories", (double)r->other_categories);
    cJSON *cats = cJSON_AddObjectToObject(root, "categories");
    for (int i = 0; i < r->n_categories; i++) cJSON_AddItemToObject(cats, r->category[i], cell_obj(&r->cat[i], r->kind));
    cJSON *diff = cJSON_AddObjectToObject(root, "difficulty");
    for (int f = 0; f < SA3D_PCK_N_FLAGS; f++) {
        cJSON *fo = NULL;
        for (int v = 0; v < SA3D_PCK_FLAG_VALUES; v++) {
            if (!r->by_flag[f][v].pairs) continue;
            if (!fo) fo = cJSON_AddObjectToObject(diff, flag_names[f]);
            char key[8];
            snprintf(key, sizeof key, "%d", v);
            cJSON_AddItemToObject(fo, key, cell_obj(&r->by_flag[f][v], r->kind));
        }
    }
    cJSON *m = cJSON_AddObjectToObject(root, "meta");
    cJSON_AddStringToObject(m, "semalign3d_version", sa3d_version());
    char rule[128];
    snprintf(rule, sizeof rule, "%s, strict <", sa3d_pck_threshold_rule(r->kind));
    cJSON_AddStringToObject(m, "threshold", rule);
    cJSON_AddStringToObject(m, "dataset_kind", r->kind == SA3D_DATASET_PFPASCAL ? "pfpascal"
                                               : r->kind == SA3D_DATASET_AP10K  ? "ap10k" : "spair");
    for (int i = 0; meta && meta[i] && meta[i + 1]; i += 2) cJSON_AddStringToObject(m, meta[i], meta[i + 1]);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory formatting the report", path);
    size_t n = strlen(text);
    char *line = realloc(text, n + 2);   /* the report ends with a newline */
    if (!line) {
        free(text);
        return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory formatting the report", path);
    }
    line[n] = '\n';
    line[n + 1] = '\0';
    sa3d_status s = sa3d_write_file_atomic(path, line, n + 1, err);
    free(line);
    return s;
}

/* ---- window soft-argmax ---- */

void sa3d_window_soft_argmax(const float *S, int w, int h, int radius, float beta, int *ax, int *ay, float *x,
                             float *y) {
    int best = 0;
    for (int i = 1; i < w * h; i++)
        if (S[i] > S[best]) best = i;
    int bx = best % w, by = best / w;
    radius = radius < 0 ? 0 : (radius > w + h ? w + h : radius);   /* beyond the grid: the same window */
    int x0 = bx - radius < 0 ? 0 : bx - radius, x1 = bx + radius > w - 1 ? w - 1 : bx + radius;
    int y0 = by - radius < 0 ? 0 : by - radius, y1 = by + radius > h - 1 ? h - 1 : by + radius;
    long n_in = (long)(x1 - x0 + 1) * (y1 - y0 + 1), n_out = (long)w * h - n_in;
    /* softmax over all cells of S' / beta with S' = S in the window and 0 outside. The outside cells share one
     * weight, so they are summed in closed form: the cost is the window's, not the grid's. */
    double mx = (double)S[best];
    if (n_out > 0 && mx < 0.0) mx = 0.0;
    /* grid coordinates: linspace(-1, 1, n) in float32 */
#define GX(c) (w > 1 ? (double)(-1.0f + 2.0f * (float)(c) / (float)(w - 1)) : 0.0)
#define GY(c) (h > 1 ? (double)(-1.0f + 2.0f * (float)(c) / (float)(h - 1)) : 0.0)
    double sum = 0.0, ex = 0.0, ey = 0.0, in_gx = 0.0, in_gy = 0.0, all_gx = 0.0, all_gy = 0.0;
    for (int cy = y0; cy <= y1; cy++)
        for (int cx = x0; cx <= x1; cx++) {
            double q = exp(((double)S[cy * w + cx] - mx) / (double)beta);
            sum += q;
            ex += q * GX(cx);
            ey += q * GY(cy);
            in_gx += GX(cx);
            in_gy += GY(cy);
        }
    if (n_out > 0) {
        for (int c = 0; c < w; c++) all_gx += GX(c) * h;
        for (int c = 0; c < h; c++) all_gy += GY(c) * w;
        double q = exp((0.0 - mx) / (double)beta);
        sum += q * (double)n_out;
        ex += q * (all_gx - in_gx);
        ey += q * (all_gy - in_gy);
    }
#undef GX
#undef GY
    float fx = (float)(ex / sum), fy = (float)(ey / sum);
    fx = (fx + 1.0f) * (float)(w - 1) / 2.0f;
    fy = (fy + 1.0f) * (float)(h - 1) / 2.0f;
    *x = fx < 0.0f ? 0.0f : (fx > (float)(w - 1) ? (float)(w - 1) : fx);
    *y = fy < 0.0f ? 0.0f : (fy > (float)(h - 1) ? (float)(h - 1) : fy);
    *ax = bx;
    *ay = by;
}
