/* SPair-71k (METHOD.md section 1): the 18 sorted categories (1.4), the left-right flip table (1.6), the pair
 * and image record parsers with their validation (1.2, 1.3; data.h states the rules), and the split loader
 * over PairAnnotation/<split>/ or a Layout list. Also the JSON field readers the AP-10K parser shares. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "base/base.h"
#include "data/records.h"

/* ---- categories and flip map ---- */

static const char *const spair_categories[SA3D_N_SPAIR_CATEGORIES] = {
    "aeroplane", "bicycle", "bird",  "boat",      "bottle", "bus",         "car",   "cat",   "chair",
    "cow",       "dog",     "horse", "motorbike", "person", "pottedplant", "sheep", "train", "tvmonitor"
};

const char *sa3d_spair_category(int i) {
    return i >= 0 && i < SA3D_N_SPAIR_CATEGORIES ? spair_categories[i] : NULL;
}

int sa3d_spair_category_index(const char *name) {
    if (!name) return -1;
    for (int i = 0; i < SA3D_N_SPAIR_CATEGORIES; i++)
        if (!strcmp(spair_categories[i], name)) return i;
    return -1;
}

/* METHOD.md 1.6, transcribed as printed there ([CODE] spair_dataset_utils.SPAIR_FLIP, from GeoAware): a bare
 * id maps to itself, [a b] swap. Same order as spair_categories. */
static const char *const spair_flip[SA3D_N_SPAIR_CATEGORIES] = {
    /* aeroplane   */ "0 1 2 3 [4 5] [6 7] [8 9] [10 11] [12 13] [14 15] [16 17] [18 19] [20 21] 22 23 24",
    /* bicycle     */ "0 1 [2 3] 4 5 [6 7] 8 [9 10] 13",
    /* bird        */ "0 [1 2] 3 [4 5] 6 [7 8] 9 [10 11] [12 13] [14 15] 16",
    /* boat        */ "0 [1 2] [3 4] [5 6] [7 8] [9 10] [11 12] 13",
    /* bottle      */ "[0 1] [2 3] [4 5] [6 7] [8 9]",
    /* bus         */
    "[0 1] [2 3] 4 [5 6] 7 [10 20] [11 21] [12 22] [13 23] [14 24] [15 25] [16 17] [18 19] "
    "[26 27] [28 29]",
    /* car         */
    "[0 1] [2 3] 4 5 [6 7] 8 9 [10 20] [11 21] [12 22] [13 23] [14 24] [15 25] [16 17] [18 19] "
    "[26 27] [28 29]",
    /* cat         */ "[0 1] [2 3] [4 5] [6 7] 8 [9 10] [11 12] 13 14",
    /* chair       */ "[0 1] [2 3] [4 5] [6 7] [8 9] [10 11] [12 13]",
    /* cow         */ "[0 1] [2 3] [4 5] [6 7] 8 [9 10] [11 12] 13 14 [15 16] [17 18] [19 20]",
    /* dog         */ "[0 1] [2 3] [4 5] 6 7 8 [9 10] [11 12] 13 14 15",
    /* horse       */ "[0 1] [2 3] [4 5] [6 7] 8 9 [10 11] [12 13] 14 15 [16 17] [18 19]",
    /* motorbike   */ "[0 1] [2 3] 4 5 6 7 8 9 10 11 12",
    /* person      */ "[0 1] [2 3] 4 5 6 7 [8 9] [10 11] [12 13] [14 15] [16 17] [18 19]",
    /* pottedplant */ "[0 2] 1 3 [4 5] [6 8] 7",
    /* sheep       */ "[0 1] [2 3] [4 5] [6 7] 8 [9 10] [11 12] 13 14 [15 16] [17 18] [19 20]",
    /* train       */ "[0 1] [2 3] [4 5] [6 7] [8 9] [10 11] [12 13] [14 15] [16 17]",
    /* tvmonitor   */ "[0 2] [4 6] 1 5 [3 7] [8 10] [12 14] 9 13 [11 15]",
};

/* PF-PASCAL, the 20 VOC classes in PASCAL order (the class numbers 1..20 of the pair lists). Source: the
 * PF_PASCAL_FLIP table of SemAlign3D's released code (its PF-PASCAL dataset utilities, marked "Our
 * contribution"); PF-PASCAL keypoint ids are the rows of each class's Annotations .mat (the PASCAL
 * keypoint definitions of Proposal Flow), which the release does not name, so the table is transcribed, not
 * re-derived from names. One deviation: its aeroplane row lists [12 14] and then 14 alone, which in its
 * loop leaves 12 -> 14 but 14 -> 14; a mirror is an involution, so here 12 <-> 14. */
static const char *const pfpascal_flip[20] = {
    /* aeroplane   */ "0 1 [2 3] [4 5] 6 7 8 [9 10] 11 [12 14] 13 15",
    /* bicycle     */ "[0 1] 2 3 4 5 6 7 8 9 10",
    /* bird        */ "[0 1] 2 3 4 5 6 [7 8] [9 10] 11",
    /* boat        */ "0 1 2 3 [4 6] [5 7] 8 9 10",
    /* bottle      */ "[0 1] [2 3] [4 5] [6 7]",
    /* bus         */ "[0 1] [2 3] [4 5] [6 7]",
    /* car         */ "[0 1] [2 3] [4 5] [6 7] [8 9] [10 11] [12 13]",
    /* cat         */ "[0 1] 2 [3 4] 5 6 7 [8 9] [10 11] [12 13] [14 15]",
    /* chair       */ "[0 2] [1 3] [4 6] [5 7] [8 9]",
    /* cow         */ "[0 1] 2 [3 4] 5 6 7 [8 9] [10 11] [12 13] [14 15]",
    /* diningtable */ "[0 2] [1 3] [4 6] [5 7]",
    /* dog         */ "[0 1] 2 [3 4] 5 6 7 [8 9] [10 11] [12 13] [14 15]",
    /* horse       */ "[0 1] 2 [3 4] 5 6 7 [8 9] [10 11] [12 13] [14 15]",
    /* motorbike   */ "[0 1] 2 3 4 5 6 7 8 9",
    /* person      */ "[0 3] [1 4] [2 5] [6 9] [7 10] [8 11] [12 13] [14 15] 16",
    /* pottedplant */ "[0 1] 2 3 [4 5]",
    /* sheep       */ "[0 1] 2 [3 4] 5 6",
    /* sofa        */ "[0 1] [2 3] [4 5] [6 7] [8 9] [10 11]",
    /* train       */ "[0 1] 2 [3 5] [4 6]",
    /* tvmonitor   */ "[0 1] [2 3] [4 5] [6 7]",
};

/* AP-10K: one skeleton for every species, the 17 keypoints of the AP-10K paper (Yu et al., NeurIPS 2021
 * Datasets, Table 1; the order of the COCO-style "keypoints" array in its annotations): 0 left eye, 1 right
 * eye, 2 nose, 3 neck, 4 root of tail, 5 left shoulder, 6 left elbow, 7 left front paw, 8 right shoulder,
 * 9 right elbow, 10 right front paw, 11 left hip, 12 left knee, 13 left back paw, 14 right hip, 15 right
 * knee, 16 right back paw. Mirroring swaps each left with its right; nose, neck and tail root stay. */
static const char ap10k_flip[] = "[0 1] 2 3 4 [5 8] [6 9] [7 10] [11 14] [12 15] [13 16]";

/* Parses a flip table ("k" maps to itself, "[a b]" swap) into map; returns the largest id + 1. */
static int parse_flip(const char *table, int map[SA3D_MAX_KPS]) {
    for (int k = 0; k < SA3D_MAX_KPS; k++) map[k] = k;
    int slots = 0, group[2], ng = 0, open = 0;
    for (const char *s = table; *s;) {
        if (*s == '[') {
            open = 1;
            ng = 0;
            s++;
            continue;
        }
        if (*s == ']') {
            if (ng == 2) {
                map[group[0]] = group[1];
                map[group[1]] = group[0];
            }
            open = 0;
            s++;
            continue;
        }
        if (*s >= '0' && *s <= '9') {
            int v = 0;
            while (*s >= '0' && *s <= '9') v = v * 10 + (*s++ - '0');
            if (v >= SA3D_MAX_KPS) continue; /* the table has none; keeps map in bounds */
            if (open && ng < 2) group[ng++] = v;
            if (v + 1 > slots) slots = v + 1;
            continue;
        }
        s++;
    }
    return slots;
}

int sa3d_spair_flip_map(const char *category, int map[SA3D_MAX_KPS]) {
    int c = sa3d_spair_category_index(category);
    if (c < 0 || !map) return -1;
    return parse_flip(spair_flip[c], map);
}

int sa3d_flip_map(sa3d_dataset_kind kind, const char *category, int map[SA3D_MAX_KPS]) {
    if (!map || !category) return -1;
    if (kind == SA3D_DATASET_SPAIR) return sa3d_spair_flip_map(category, map);
    if (kind == SA3D_DATASET_AP10K) return parse_flip(ap10k_flip, map);   /* every species, family or "all" */
    if (kind == SA3D_DATASET_PFPASCAL)
        for (int c = 0; c < 20; c++)
            if (!strcmp(sa3d_pfpascal_category(c + 1), category)) return parse_flip(pfpascal_flip[c], map);
    return -1;
}

/* ---- JSON field readers ---- */

static const char *json_type(const cJSON *it) {
    if (!it) return "nothing";
    if (cJSON_IsNull(it)) return "null";
    if (cJSON_IsBool(it)) return "a boolean";
    if (cJSON_IsNumber(it)) return "a number";
    if (cJSON_IsString(it)) return "a string";
    if (cJSON_IsArray(it)) return "an array";
    if (cJSON_IsObject(it)) return "an object";
    return "an invalid value";
}

sa3d_status sa3d_json_int(const cJSON *obj, const char *key, const char *file, int required, long lo, long hi,
                          int *out, sa3d_error *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it) {
        if (required) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: missing", file, key);
        *out = -1;
        return SA3D_OK;
    }
    if (!cJSON_IsNumber(it))
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: expected an integer, got %s", file, key,
                         json_type(it));
    double v = it->valuedouble;
    if (!(v >= (double)lo && v <= (double)hi) || v != floor(v))
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: expected an integer in [%ld, %ld], got %g", file, key,
                         lo, hi, v);
    *out = (int)v;
    return SA3D_OK;
}

sa3d_status sa3d_json_string(const cJSON *obj, const char *key, const char *file, int required, char *out,
                             size_t cap, sa3d_error *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    out[0] = '\0';
    if (!it) return required ? sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: missing", file, key) : SA3D_OK;
    if (!cJSON_IsString(it) || !it->valuestring)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: expected a string, got %s", file, key, json_type(it));
    if (!sa3d_ds_copy(out, cap, it->valuestring))
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: string longer than %zu bytes", file, key, cap - 1);
    return SA3D_OK;
}

sa3d_status sa3d_json_numbers(const cJSON *arr, const char *field, const char *file, int n_min, int n_max,
                              double *out, int *n, sa3d_error *err) {
    if (!arr) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: missing", file, field);
    if (!cJSON_IsArray(arr))
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: expected an array of numbers, got %s", file, field,
                         json_type(arr));
    int k = 0;
    for (const cJSON *it = arr->child; it; it = it->next, k++) {
        if (k >= n_max)
            return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: more than %d numbers", file, field, n_max);
        if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
            return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s[%d]: expected a finite number, got %s", file,
                             field, k, json_type(it));
        out[k] = it->valuedouble;
    }
    if (k < n_min)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: %d numbers; expected %s%d", file, field, k,
                         n_min == n_max ? "" : "at least ", n_min);
    if (n) *n = k;
    return SA3D_OK;
}

sa3d_status sa3d_check_bbox(const double b[4], const char *file, const char *field, sa3d_error *err) {
    if (!(b[0] <= b[2] && b[1] <= b[3]))
        return sa3d_fail(err, SA3D_ERR_FORMAT,
                         "%s: %s: [%g, %g, %g, %g] is not [x_min, y_min, x_max, y_max] with "
                         "min <= max",
                         file, field, b[0], b[1], b[2], b[3]);
    for (int i = 0; i < 4; i++)   /* stored as float, and x_max - x_min sets the PCK threshold: no overflow */
        if (fabs(b[i]) > 10.0 * SA3D_MAX_IMAGE_SIDE)
            return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: coordinate %g beyond +-%g", file, field, b[i],
                             10.0 * SA3D_MAX_IMAGE_SIDE);
    return SA3D_OK;
}

sa3d_status sa3d_check_point(double x, double y, int w, int h, const char *file, const char *field,
                             sa3d_error *err) {
    if (!(x >= 0.0 && x <= (double)w && y >= 0.0 && y <= (double)h))
        return sa3d_fail(err, SA3D_ERR_FORMAT,
                         "%s: %s: (%g, %g) outside the %d x %d image; expected 0 <= x <= %d, "
                         "0 <= y <= %d",
                         file, field, x, y, w, h, w, h);
    return SA3D_OK;
}

/* Image size from an [W, H(, C)] array. */
static sa3d_status read_imsize(const cJSON *obj, const char *key, const char *file, int size[2],
                               sa3d_error *err) {
    double v[4];
    int n;
    sa3d_status s =
        sa3d_json_numbers(cJSON_GetObjectItemCaseSensitive(obj, key), key, file, 2, 4, v, &n, err);
    if (s) return s;
    for (int i = 0; i < 2; i++) {
        if (!(v[i] >= 1.0 && v[i] <= SA3D_MAX_IMAGE_SIDE) || v[i] != floor(v[i]))
            return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s[%d]: %s %g; expected an integer in [1, %d]", file,
                             key, i, i ? "height" : "width", v[i], SA3D_MAX_IMAGE_SIDE);
        size[i] = (int)v[i];
    }
    return SA3D_OK;
}

static sa3d_status read_bbox(const cJSON *obj, const char *key, const char *file, float out[4],
                             sa3d_error *err) {
    double b[4];
    sa3d_status s =
        sa3d_json_numbers(cJSON_GetObjectItemCaseSensitive(obj, key), key, file, 4, 4, b, NULL, err);
    if (!s) s = sa3d_check_bbox(b, file, key, err);
    if (s) return s;
    for (int i = 0; i < 4; i++) out[i] = (float)b[i];
    return SA3D_OK;
}

/* Strips the extension of an image name ("2008_002719.jpg" -> "2008_002719") into id; checks it is a safe
 * path component. */
static sa3d_status image_stem(const char *name, const char *file, const char *field, char *id, size_t cap,
                              sa3d_error *err) {
    const char *dot = strrchr(name, '.');
    size_t n = dot && dot != name ? (size_t)(dot - name) : strlen(name);
    if (n == 0 || n >= cap)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: '%s' is not an image file name", file, field, name);
    memcpy(id, name, n);
    id[n] = '\0';
    if (!sa3d_ds_safe_name(id, cap))
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: '%s' is not an image file name", file, field, name);
    return SA3D_OK;
}

/* Keypoint id from a string of 1 to 3 decimal digits ("0".."63"), or -1. */
static int parse_id_str(const char *s) {
    if (!s || !*s || strlen(s) > 3) return -1;
    int k = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        k = k * 10 + (*s - '0');
    }
    return k < SA3D_MAX_KPS ? k : -1;
}

/* Keypoint id from a kps_ids entry: an id string (SPair) or an integer number. */
static int parse_kp_id(const cJSON *it) {
    if (cJSON_IsString(it)) return parse_id_str(it->valuestring);
    if (!cJSON_IsNumber(it)) return -1;
    double v = it->valuedouble;
    return v >= 0.0 && v < SA3D_MAX_KPS && v == floor(v) ? (int)v : -1;
}

static sa3d_status read_kps_list(const cJSON *obj, const char *key, const char *file, int n, int size[2],
                                 float out[][2], sa3d_error *err) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!arr) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: missing", file, key);
    if (!cJSON_IsArray(arr))
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: expected an array of [x, y], got %s", file, key,
                         json_type(arr));
    int m = cJSON_GetArraySize(arr);
    if (m != n)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: %d keypoints but kps_ids has %d", file, key, m, n);
    int i = 0;
    for (const cJSON *it = arr->child; it; it = it->next, i++) {
        char field[48];
        double xy[2];
        snprintf(field, sizeof field, "%s[%d]", key, i);
        if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) != 2 || !cJSON_IsNumber(it->child) ||
            !cJSON_IsNumber(it->child->next))
            return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: expected [x, y] numbers", file, field);
        xy[0] = it->child->valuedouble;
        xy[1] = it->child->next->valuedouble;
        sa3d_status s = sa3d_check_point(xy[0], xy[1], size[0], size[1], file, field, err);
        if (s) return s;
        out[i][0] = (float)xy[0];
        out[i][1] = (float)xy[1];
    }
    return SA3D_OK;
}

/* ---- records ---- */

static sa3d_status parse_pair(const cJSON *root, const char *file, const char *pair_id, sa3d_pair *out,
                              sa3d_error *err) {
    sa3d_status s;
    char name[128], fname[160];
    if (!cJSON_IsObject(root)) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: expected a JSON object", file);
    if ((s = sa3d_json_string(root, "category", file, 1, out->category, sizeof out->category, err))) return s;
    if (sa3d_spair_category_index(out->category) < 0)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: category: unknown category '%s'", file, out->category);
    if ((s = sa3d_json_string(root, "src_imname", file, 1, name, sizeof name, err)) ||
        (s = image_stem(name, file, "src_imname", out->src, sizeof out->src, err)) ||
        (s = sa3d_json_string(root, "trg_imname", file, 1, name, sizeof name, err)) ||
        (s = image_stem(name, file, "trg_imname", out->trg, sizeof out->trg, err)) ||
        (s = read_imsize(root, "src_imsize", file, out->src_size, err)) ||
        (s = read_imsize(root, "trg_imsize", file, out->trg_size, err)) ||
        (s = read_bbox(root, "src_bndbox", file, out->src_bbox, err)) ||
        (s = read_bbox(root, "trg_bndbox", file, out->trg_bbox, err)))
        return s;
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(root, "kps_ids");
    if (!ids) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: kps_ids: missing", file);
    if (!cJSON_IsArray(ids))
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: kps_ids: expected an array of id strings, got %s", file,
                         json_type(ids));
    int n = cJSON_GetArraySize(ids);
    if (n > SA3D_MAX_KPS)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: kps_ids: %d keypoints; at most SA3D_MAX_KPS = %d", file,
                         n, SA3D_MAX_KPS);
    unsigned char seen[SA3D_MAX_KPS] = { 0 };
    int i = 0;
    for (const cJSON *it = ids->child; it; it = it->next, i++) {
        int k = parse_kp_id(it);
        if (k < 0)
            return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: kps_ids[%d]: expected an id \"0\"..\"%d\"", file, i,
                             SA3D_MAX_KPS - 1);
        if (seen[k])
            return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: kps_ids[%d]: id %d appears twice", file, i, k);
        seen[k] = 1;
        out->kp_ids[i] = k;
    }
    out->n_kps = n;
    if ((s = read_kps_list(root, "src_kps", file, n, out->src_size, out->src_kps, err)) ||
        (s = read_kps_list(root, "trg_kps", file, n, out->trg_size, out->trg_kps, err)) ||
        (s = sa3d_json_int(root, "viewpoint_variation", file, 0, 0, 2, &out->viewpoint_variation, err)) ||
        (s = sa3d_json_int(root, "scale_variation", file, 0, 0, 2, &out->scale_variation, err)) ||
        (s = sa3d_json_int(root, "truncation", file, 0, 0, 3, &out->truncation, err)) ||
        (s = sa3d_json_int(root, "occlusion", file, 0, 0, 3, &out->occlusion, err)) ||
        (s = sa3d_json_int(root, "mirror", file, 0, 0, 1, &out->mirror, err)) ||
        (s = sa3d_json_string(root, "filename", file, 0, fname, sizeof fname, err)))
        return s;
    out->threshold_base = sa3d_bbox_threshold_base(out->trg_bbox);
    if (!(out->threshold_base > 0.0f))
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: trg_bndbox: empty box; the PCK threshold would be 0",
                         file);
    if (pair_id) {
        if (!sa3d_ds_copy(out->id, sizeof out->id, pair_id))
            return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: pair id longer than %zu bytes", file,
                             sizeof out->id - 1);
        char tail[200];
        snprintf(tail, sizeof tail, "-%s-%s:%s", out->src, out->trg, out->category);
        size_t lp = strlen(pair_id), lt = strlen(tail);
        if (lp <= lt || strcmp(pair_id + lp - lt, tail) != 0)
            return sa3d_fail(err, SA3D_ERR_FORMAT,
                             "%s: src_imname, trg_imname, category: the file name does not "
                             "end in '%s'",
                             file, tail);
        if (fname[0] && strcmp(fname, pair_id) != 0)
            return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: filename: '%s' differs from the file name", file,
                             fname);
    } else if (!sa3d_ds_copy(out->id, sizeof out->id, fname[0] ? fname : "")) {
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: filename: longer than %zu bytes", file,
                         sizeof out->id - 1);
    }
    return SA3D_OK;
}

static sa3d_status parse_json(const char *text, size_t len, const char *file, cJSON **root, sa3d_error *err) {
    *root = cJSON_ParseWithLength(text, len);
    if (!*root) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: not valid JSON", file);
    return SA3D_OK;
}

sa3d_status sa3d_spair_parse_pair(const char *text, size_t len, const char *file, const char *pair_id,
                                  sa3d_pair *out, sa3d_error *err) {
    memset(out, 0, sizeof *out);
    cJSON *root;
    sa3d_status s = parse_json(text, len, file, &root, err);
    if (s) return s;
    s = parse_pair(root, file, pair_id, out, err);
    cJSON_Delete(root);
    if (s) memset(out, 0, sizeof *out);
    return s;
}

static sa3d_status parse_image(const cJSON *root, const char *file, const char *category, const char *id,
                               sa3d_image_anno *out, sa3d_error *err) {
    sa3d_status s;
    char cat[64], stem[64];
    int size[2];
    if (!cJSON_IsObject(root)) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: expected a JSON object", file);
    if ((s = sa3d_json_string(root, "filename", file, 1, out->filename, sizeof out->filename, err)) ||
        (s = image_stem(out->filename, file, "filename", stem, sizeof stem, err)))
        return s;
    if (id && strcmp(id, stem) != 0)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: filename: '%s' does not match the record name '%s'", file,
                         out->filename, id);
    memcpy(out->id, stem, sizeof stem);
    if ((s = sa3d_json_string(root, "category", file, 0, cat, sizeof cat, err))) return s;
    if (cat[0] && sa3d_spair_category_index(cat) < 0)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: category: unknown category '%s'", file, cat);
    if (category && cat[0] && strcmp(category, cat) != 0)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: category: '%s' but the record is in the folder '%s'",
                         file, cat, category);
    if (!cat[0] && !category) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: category: missing", file);
    if (!sa3d_ds_copy(out->category, sizeof out->category, category ? category : cat))
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: category: longer than %zu bytes", file,
                         sizeof out->category - 1);
    if ((s = sa3d_json_int(root, "image_width", file, 1, 1, SA3D_MAX_IMAGE_SIDE, &size[0], err)) ||
        (s = sa3d_json_int(root, "image_height", file, 1, 1, SA3D_MAX_IMAGE_SIDE, &size[1], err)) ||
        (s = read_bbox(root, "bndbox", file, out->bbox, err)) ||
        /* PASCAL VOC's truncated, occluded and difficult are 0/1 */
        (s = sa3d_json_int(root, "truncated", file, 0, 0, 1, &out->truncated, err)) ||
        (s = sa3d_json_int(root, "occluded", file, 0, 0, 1, &out->occluded, err)) ||
        (s = sa3d_json_int(root, "difficult", file, 0, 0, 1, &out->difficult, err)) ||
        (s = sa3d_json_int(root, "azimuth_id", file, 0, 0, 1000, &out->azimuth_id, err)))
        return s;
    out->width = size[0];
    out->height = size[1];
    const cJSON *kps = cJSON_GetObjectItemCaseSensitive(root, "kps");
    if (!kps) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: kps: missing", file);
    if (!cJSON_IsObject(kps))
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: kps: expected an object of id -> [x, y] or null, got %s",
                         file, json_type(kps));
    unsigned char seen[SA3D_MAX_KPS] = { 0 };
    for (const cJSON *it = kps->child; it; it = it->next) {
        int k = parse_id_str(it->string);
        if (k < 0)
            return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: kps: key '%.20s' is not an id \"0\"..\"%d\"", file,
                             it->string ? it->string : "", SA3D_MAX_KPS - 1);
        if (seen[k]) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: kps: key \"%d\" appears twice", file, k);
        seen[k] = 1;
        if (k + 1 > out->n_slots) out->n_slots = k + 1;
        if (cJSON_IsNull(it)) continue;
        char field[32];
        snprintf(field, sizeof field, "kps.%d", k);
        if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) != 2 || !cJSON_IsNumber(it->child) ||
            !cJSON_IsNumber(it->child->next))
            return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: expected [x, y] numbers or null", file, field);
        double x = it->child->valuedouble, y = it->child->next->valuedouble;
        if ((s = sa3d_check_point(x, y, size[0], size[1], file, field, err))) return s;
        out->kps[k][0] = (float)x;
        out->kps[k][1] = (float)y;
        out->visible[k] = 1;
    }
    return SA3D_OK;
}

sa3d_status sa3d_spair_parse_image(const char *text, size_t len, const char *file, const char *category,
                                   const char *id, sa3d_image_anno *out, sa3d_error *err) {
    memset(out, 0, sizeof *out);
    cJSON *root;
    sa3d_status s = parse_json(text, len, file, &root, err);
    if (s) return s;
    s = parse_image(root, file, category, id, out, err);
    cJSON_Delete(root);
    if (s) memset(out, 0, sizeof *out);
    return s;
}

/* ---- files ---- */

sa3d_status sa3d_spair_read_image(const sa3d_dataset *ds, const char *category, const char *id, ds_image *out,
                                  sa3d_error *err) {
    char name[80];
    snprintf(name, sizeof name, "%s.json", id);
    char *path = sa3d_ds_path(ds->root, "ImageAnnotation", category, name, (const char *)NULL);
    if (!path) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", ds->root);
    char *text = NULL;
    size_t len = 0;
    sa3d_status s = sa3d_read_file(path, SA3D_RECORD_MAX_BYTES, &text, &len, err);
    if (!s) s = sa3d_spair_parse_image(text, len, path, category, id, &out->anno, err);
    sa3d_free(text);
    sa3d_free(path);
    return s;
}

/* The pair ids of a split: the files of PairAnnotation/<split>/ or the lines of a Layout list. */
static sa3d_status split_ids(sa3d_dataset *ds, const char *split, const char *dir, char ***ids, int *n,
                             sa3d_error *err) {
    *ids = NULL;
    *n = 0;
    if (!ds->layout) {
        sa3d_status s = sa3d_ds_list_dir(dir, ".json", 0, ids, n, err);
        if (s) return s;
        for (int i = 0; i < *n; i++) (*ids)[i][strlen((*ids)[i]) - 5] = '\0';
        return SA3D_OK;
    }
    char fname[48];
    snprintf(fname, sizeof fname, "%s.txt", split);
    char *list = sa3d_ds_path(ds->root, "Layout", ds->layout, fname, (const char *)NULL);
    if (!list) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", ds->root);
    char *text = NULL;
    size_t len = 0;
    sa3d_status s = sa3d_read_file(list, SA3D_CSV_MAX_BYTES, &text, &len, err);
    int cap = 0, cnt = 0;
    char **v = NULL;
    for (size_t i = 0; !s && i < len;) {
        size_t e = i;
        while (e < len && text[e] != '\n') e++;
        size_t a = i, b = e;
        while (a < b && (text[a] == ' ' || text[a] == '\t' || text[a] == '\r')) a++;
        while (b > a && (text[b - 1] == ' ' || text[b - 1] == '\t' || text[b - 1] == '\r')) b--;
        i = e + 1;
        if (a == b) continue;
        if (cnt == cap) {
            int nc = cap ? cap * 2 : 256;
            char **nv = sa3d_realloc(v, (size_t)nc * sizeof *nv);
            if (!nv) {
                s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", list);
                break;
            }
            v = nv;
            cap = nc;
        }
        if (!(v[cnt] = sa3d_malloc(b - a + 1))) {
            s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", list);
            break;
        }
        memcpy(v[cnt], text + a, b - a);
        v[cnt][b - a] = '\0';
        cnt++;
    }
    sa3d_free(text);
    sa3d_free(list);
    if (s) {
        sa3d_ds_free_names(v, cnt);
        return s;
    }
    *ids = v;
    *n = cnt;
    return SA3D_OK;
}

sa3d_status sa3d_spair_load_split(sa3d_dataset *ds, const char *split, sa3d_pair **pairs, int *n,
                                  sa3d_error *err) {
    *pairs = NULL;
    *n = 0;
    char *dir = sa3d_ds_path(ds->root, "PairAnnotation", split, (const char *)NULL);
    if (!dir) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", ds->root);
    char **ids = NULL;
    int n_ids = 0, m = 0;
    sa3d_pair *v = NULL;
    sa3d_status s;
    if (!sa3d_dir_exists(dir)) {
        s = sa3d_fail(err, SA3D_ERR_IO, "%s: no such split folder", dir);
        goto done;
    }
    if ((s = split_ids(ds, split, dir, &ids, &n_ids, err))) goto done;
    if (!(v = sa3d_malloc((size_t)(n_ids ? n_ids : 1) * sizeof *v))) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory for %d pairs", dir, n_ids);
        goto done;
    }
    for (int i = 0; i < n_ids; i++) {
        sa3d_error rec = { 0 };
        const char *id = ids[i];
        const char *colon = strrchr(id, ':');
        if (colon && !sa3d_ds_category_selected(ds, colon + 1)) continue;
        char *path = sa3d_ds_path(dir, id, (const char *)NULL), *text = NULL;
        size_t len = 0, lp = path ? strlen(path) : 0;
        char *file = path ? sa3d_malloc(lp + 6) : NULL;
        if (!file) {
            sa3d_free(path);
            s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", dir);
            goto done;
        }
        snprintf(file, lp + 6, "%s.json", path);
        sa3d_free(path);
        if (!sa3d_ds_safe_name(id, sizeof v->id) || !colon)
            sa3d_fail(&rec, SA3D_ERR_FORMAT, "%s: file name: expected <num>-<src>-<trg>:<category>.json",
                      file);
        else if (!sa3d_read_file(file, SA3D_RECORD_MAX_BYTES, &text, &len, &rec))
            sa3d_spair_parse_pair(text, len, file, id, &v[m], &rec);
        sa3d_free(text);
        sa3d_free(file);
        if (rec.code == SA3D_OK)
            m++;
        else if ((s = sa3d_ds_bad_record(ds, &rec, err)))
            goto done;
    }
    s = SA3D_OK;
done:
    sa3d_ds_free_names(ids, n_ids);
    sa3d_free(dir);
    if (s) {
        sa3d_free(v);
        return s;
    }
    *pairs = v;
    *n = m;
    return SA3D_OK;
}
