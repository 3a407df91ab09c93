/* Datasets (data.h): the real SPair-71k records of the fixtures checked field by field against their JSON,
 * the PCK threshold against the authors' value, the flip map against METHOD.md 1.5/1.6, synthetic SPair,
 * PF-PASCAL and AP-10K trees written here (sorting, split image lists, lookups), every kind of malformed
 * record in lenient and strict mode, and allocation-failure injection on open + load. */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cjson/cJSON.h>
#include <zlib.h>
#include "base/base.h"
#include "data/records.h"
#include "semalign3d/data.h"
#include "t.h"

/* ---- helpers ---- */

static char *read_text(const char *path, size_t *len) {
    char *buf = NULL;
    sa3d_error err;
    if (sa3d_read_file(path, (size_t)64 << 20, &buf, len, &err) != SA3D_OK) {
        T_FAIL("cannot read %s: %s", path, err.msg);
        return NULL;
    }
    return buf;
}

static cJSON *read_json(const char *path) {
    size_t len;
    char *text = read_text(path, &len);
    if (!text) return NULL;
    cJSON *j = cJSON_ParseWithLength(text, len);
    sa3d_free(text);
    if (!j) T_FAIL("%s: not valid JSON", path);
    return j;
}

static void mkdirs(const char *path) { /* mkdir -p of the folder part of path */
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(tmp, 0755);
            *p = '/';
        }
}

static void write_bytes(const char *root, const char *rel, const void *data, size_t n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    mkdirs(path);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) T_FAIL("cannot write %s", path);
    if (f) fclose(f);
}

static void write_text(const char *root, const char *rel, const char *text) {
    write_bytes(root, rel, text, strlen(text));
}

static void write_json(const char *root, const char *rel, const cJSON *j) {
    char *s = cJSON_PrintUnformatted(j);
    write_text(root, rel, s);
    free(s);
}

static void remove_tree(const char *path) { /* the test's own shallow trees only */
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char sub[1024];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            remove_tree(sub);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static char *make_tmp(void) {
    const char *base = getenv("TMPDIR");
    static char buf[8][512];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 512, "%s/sa3d_data_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(p)) T_FAIL("mkdtemp failed");
    return p;
}

typedef struct warnings {
    int n;
    char last[512];
} warnings;

static void collect(void *user, const char *msg) {
    warnings *w = user;
    w->n++;
    snprintf(w->last, sizeof w->last, "%s", msg);
}

static double jnum(const cJSON *o, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(it) ? it->valuedouble : (double)NAN;
}

static double jarr(const cJSON *o, const char *key, int i) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key);
    const cJSON *it = cJSON_GetArrayItem(a, i);
    return cJSON_IsNumber(it) ? it->valuedouble : (double)NAN;
}

static int jflag(const cJSON *o, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(it) ? (int)it->valuedouble : -1;
}

static void strip_ext(char *dst, size_t cap, const char *name) {
    snprintf(dst, cap, "%s", name);
    char *dot = strrchr(dst, '.');
    if (dot) *dot = '\0';
}

static char sample_root[1024];

static const char *sample(void) {
    snprintf(sample_root, sizeof sample_root, "%s/spair-sample", t_fixtures_root());
    return sample_root;
}

/* ---- 1. the real SPair records ---- */

static void check_pair_against_json(const sa3d_pair *p, const cJSON *j, const char *stem) {
    char id[64];
    T_CHECK(!strcmp(p->id, stem));
    T_CHECK(!strcmp(p->category, cJSON_GetObjectItemCaseSensitive(j, "category")->valuestring));
    strip_ext(id, sizeof id, cJSON_GetObjectItemCaseSensitive(j, "src_imname")->valuestring);
    T_CHECK(!strcmp(p->src, id));
    strip_ext(id, sizeof id, cJSON_GetObjectItemCaseSensitive(j, "trg_imname")->valuestring);
    T_CHECK(!strcmp(p->trg, id));
    for (int i = 0; i < 2; i++) {
        T_CHECK(p->src_size[i] == (int)jarr(j, "src_imsize", i));
        T_CHECK(p->trg_size[i] == (int)jarr(j, "trg_imsize", i));
    }
    for (int i = 0; i < 4; i++) {
        T_CHECK(p->src_bbox[i] == (float)jarr(j, "src_bndbox", i));
        T_CHECK(p->trg_bbox[i] == (float)jarr(j, "trg_bndbox", i));
    }
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(j, "kps_ids");
    const cJSON *sk = cJSON_GetObjectItemCaseSensitive(j, "src_kps"),
                *tk = cJSON_GetObjectItemCaseSensitive(j, "trg_kps");
    T_CHECK(p->n_kps == cJSON_GetArraySize(ids));
    for (int i = 0; i < p->n_kps && i < cJSON_GetArraySize(ids); i++) {
        T_CHECK(p->kp_ids[i] == atoi(cJSON_GetArrayItem(ids, i)->valuestring));
        for (int c = 0; c < 2; c++) {
            T_CHECK(p->src_kps[i][c] == (float)cJSON_GetArrayItem(cJSON_GetArrayItem(sk, i), c)->valuedouble);
            T_CHECK(p->trg_kps[i][c] == (float)cJSON_GetArrayItem(cJSON_GetArrayItem(tk, i), c)->valuedouble);
        }
    }
    T_CHECK(p->viewpoint_variation == jflag(j, "viewpoint_variation"));
    T_CHECK(p->scale_variation == jflag(j, "scale_variation"));
    T_CHECK(p->truncation == jflag(j, "truncation"));
    T_CHECK(p->occlusion == jflag(j, "occlusion"));
    T_CHECK(p->mirror == jflag(j, "mirror"));
    double w = jarr(j, "trg_bndbox", 2) - jarr(j, "trg_bndbox", 0),
           h = jarr(j, "trg_bndbox", 3) - jarr(j, "trg_bndbox", 1);
    T_NEAR((double)p->threshold_base, w > h ? w : h, 0.0);
}

static const char *const splits[3] = { "trn", "val", "test" };

/* METHOD.md 1.3: SemAlign3D reads boxes and keypoints from the image records, the evaluation from the pair record.
 * They must agree: the sizes and boxes, each pair keypoint at its id in both records, and the ids exactly those
 * visible in both images. */
static void check_pair_against_images(sa3d_dataset *ds, const sa3d_pair *p) {
    const sa3d_image_anno *im[2] = { NULL, NULL };
    sa3d_error err = { 0 };
    T_OK(sa3d_dataset_image(ds, p->category, p->src, &im[0], &err), &err);
    T_OK(sa3d_dataset_image(ds, p->category, p->trg, &im[1], &err), &err);
    if (!im[0] || !im[1]) return;
    const int *size[2] = { p->src_size, p->trg_size };
    const float *box[2] = { p->src_bbox, p->trg_bbox };
    const float (*kps[2])[2] = { (const float (*)[2])p->src_kps, (const float (*)[2])p->trg_kps };
    for (int s = 0; s < 2; s++) {
        T_CHECK(im[s]->width == size[s][0] && im[s]->height == size[s][1]);
        for (int c = 0; c < 4; c++) T_CHECK(im[s]->bbox[c] == box[s][c]);
        for (int i = 0; i < p->n_kps; i++) {
            int id = p->kp_ids[i];
            T_CHECK(id >= 0 && id < im[s]->n_slots && im[s]->visible[id]);
            if (id >= 0 && id < im[s]->n_slots)
                T_CHECK(im[s]->kps[id][0] == kps[s][i][0] && im[s]->kps[id][1] == kps[s][i][1]);
        }
    }
    int both = 0;
    for (int k = 0; k < im[0]->n_slots && k < im[1]->n_slots; k++) both += im[0]->visible[k] && im[1]->visible[k];
    T_CHECK(both == p->n_kps);
}

static void case_sample_pairs(void) {
    sa3d_dataset *ds = NULL;
    sa3d_error err = { 0 };
    sa3d_dataset_params p = sa3d_dataset_params_default();
    p.strict = 1;
    T_OK(sa3d_dataset_open(&ds, sample(), &p, &err), &err);
    if (!ds) return;
    int total = 0;
    for (int s = 0; s < 3; s++) {
        char dir[1200];
        snprintf(dir, sizeof dir, "%s/PairAnnotation/%s", sample(), splits[s]);
        DIR *d = opendir(dir);
        if (!d) continue;
        int n = sa3d_dataset_load_split(ds, splits[s], &err), files = 0;
        T_CHECK(n >= 0);
        if (n < 0) T_FAIL("%s", err.msg);
        struct dirent *e;
        while ((e = readdir(d))) {
            size_t ln = strlen(e->d_name);
            if (e->d_name[0] == '.' || ln < 6 || strcmp(e->d_name + ln - 5, ".json")) continue;
            char path[1500], stem[256];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            snprintf(stem, sizeof stem, "%.*s", (int)(ln - 5), e->d_name);
            cJSON *j = read_json(path);
            const sa3d_pair *pr = sa3d_dataset_find_pair(ds, splits[s], stem);
            if (!pr) T_FAIL("%s: pair %s not found", splits[s], stem);
            if (j && pr) check_pair_against_json(pr, j, stem);
            if (pr) check_pair_against_images(ds, pr);
            cJSON_Delete(j);
            files++;
        }
        closedir(d);
        T_CHECK(n == files);
        for (int i = 1; i < n; i++)
            T_CHECK(strcmp(sa3d_dataset_pair(ds, splits[s], i - 1)->id,
                           sa3d_dataset_pair(ds, splits[s], i)->id) < 0);
        printf("       %s: %d pairs checked field by field, and against their image records\n", splits[s], files);
        total += files;
    }
    T_CHECK(total > 0);
    sa3d_dataset_close(ds);
}

static void case_sample_images(void) {
    sa3d_dataset *ds = NULL;
    sa3d_error err = { 0 };
    T_OK(sa3d_dataset_open(&ds, sample(), NULL, &err), &err);
    if (!ds) return;
    char top[1200];
    snprintf(top, sizeof top, "%s/ImageAnnotation", sample());
    DIR *dc = opendir(top);
    int count = 0;
    struct dirent *ce;
    while (dc && (ce = readdir(dc))) {
        if (ce->d_name[0] == '.') continue;
        char cdir[1500];
        snprintf(cdir, sizeof cdir, "%s/%s", top, ce->d_name);
        DIR *d = opendir(cdir);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            size_t ln = strlen(e->d_name);
            if (e->d_name[0] == '.' || ln < 6) continue;
            char path[1800], id[256];
            snprintf(path, sizeof path, "%s/%s", cdir, e->d_name);
            snprintf(id, sizeof id, "%.*s", (int)(ln - 5), e->d_name);
            cJSON *j = read_json(path);
            const sa3d_image_anno *a = NULL;
            T_OK(sa3d_dataset_image(ds, ce->d_name, id, &a, &err), &err);
            if (j && a) {
                T_CHECK(!strcmp(a->id, id));
                T_CHECK(!strcmp(a->category, ce->d_name));
                T_CHECK(!strcmp(a->filename, cJSON_GetObjectItemCaseSensitive(j, "filename")->valuestring));
                T_CHECK(a->width == (int)jnum(j, "image_width") && a->height == (int)jnum(j, "image_height"));
                for (int i = 0; i < 4; i++) T_CHECK(a->bbox[i] == (float)jarr(j, "bndbox", i));
                T_CHECK(a->truncated == jflag(j, "truncated") && a->occluded == jflag(j, "occluded"));
                T_CHECK(a->difficult == jflag(j, "difficult") && a->azimuth_id == jflag(j, "azimuth_id"));
                const cJSON *kps = cJSON_GetObjectItemCaseSensitive(j, "kps");
                T_CHECK(a->n_slots == cJSON_GetArraySize(kps));
                for (const cJSON *k = kps ? kps->child : NULL; k; k = k->next) {
                    int id_k = atoi(k->string);
                    T_CHECK(a->visible[id_k] == !cJSON_IsNull(k));
                    if (!cJSON_IsNull(k)) {
                        T_CHECK(a->kps[id_k][0] == (float)cJSON_GetArrayItem(k, 0)->valuedouble);
                        T_CHECK(a->kps[id_k][1] == (float)cJSON_GetArrayItem(k, 1)->valuedouble);
                    }
                }
                const sa3d_image_anno *again = NULL; /* cached: the same record */
                T_OK(sa3d_dataset_image(ds, ce->d_name, id, &again, &err), &err);
                T_CHECK(again == a);
            }
            cJSON_Delete(j);
            count++;
        }
        if (d) closedir(d);
    }
    if (dc) closedir(dc);
    T_CHECK(count > 0);
    printf("       %d image records checked field by field\n", count);
    sa3d_dataset_close(ds);
}

static void case_pck_threshold(void) {
    char path[1200];
    snprintf(path, sizeof path, "%s/semalign3d-reference/pck_threshold.json", t_fixtures_root());
    cJSON *j = read_json(path);
    if (!j) return;
    const cJSON *rec =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "inputs"), "record");
    const cJSON *out = cJSON_GetObjectItemCaseSensitive(j, "outputs");
    char *text = cJSON_PrintUnformatted(rec);
    sa3d_image_anno a;
    sa3d_error err = { 0 };
    T_OK(
        sa3d_spair_parse_image(text, strlen(text), "pck_threshold.json: inputs.record", NULL, NULL, &a, &err),
        &err);
    free(text);
    double want = jnum(out, "threshold");
    float got = sa3d_bbox_threshold_base(a.bbox);
    T_NEAR((double)got, want, 0.0);
    T_CHECK(a.width == (int)jnum(out, "img_width") && a.height == (int)jnum(out, "img_height"));
    for (int i = 0; i < 4; i++) T_CHECK(a.bbox[i] == (float)jarr(out, "bbox", i));
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(out, "kp_ids"),
                *xy = cJSON_GetObjectItemCaseSensitive(out, "kp_xy");
    int k = 0;
    for (int s = 0; s < a.n_slots; s++) {
        if (!a.visible[s]) continue;
        const cJSON *p = cJSON_GetArrayItem(xy, k);
        T_CHECK(k < cJSON_GetArraySize(ids) && s == (int)cJSON_GetArrayItem(ids, k)->valuedouble);
        T_CHECK(p && a.kps[s][0] == (float)cJSON_GetArrayItem(p, 0)->valuedouble &&
                a.kps[s][1] == (float)cJSON_GetArrayItem(p, 1)->valuedouble);
        k++;
    }
    T_CHECK(k == cJSON_GetArraySize(ids));
    printf("       threshold %g (reference %g), %d keypoints\n", (double)got, want, k);
    /* the same record through the dataset, when the sample holds it */
    char fname[128];
    strip_ext(fname, sizeof fname, cJSON_GetObjectItemCaseSensitive(rec, "filename")->valuestring);
    const char *cat = cJSON_GetObjectItemCaseSensitive(rec, "category")->valuestring;
    char rpath[1500];
    snprintf(rpath, sizeof rpath, "%s/ImageAnnotation/%s/%s.json", sample(), cat, fname);
    if (sa3d_file_exists(rpath)) {
        sa3d_dataset *ds = NULL;
        const sa3d_image_anno *b = NULL;
        T_OK(sa3d_dataset_open(&ds, sample(), NULL, &err), &err);
        if (ds) T_OK(sa3d_dataset_image(ds, cat, fname, &b, &err), &err);
        if (b) T_NEAR((double)sa3d_bbox_threshold_base(b->bbox), want, 0.0);
        sa3d_dataset_close(ds);
    }
    cJSON_Delete(j);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void case_sample_split_images(void) {
    sa3d_dataset *ds = NULL;
    sa3d_error err = { 0 };
    T_OK(sa3d_dataset_open(&ds, sample(), NULL, &err), &err);
    if (!ds) return;
    for (int s = 0; s < 3; s++) {
        char dir[1200];
        snprintf(dir, sizeof dir, "%s/PairAnnotation/%s", sample(), splits[s]);
        if (!sa3d_dir_exists(dir)) continue;
        for (int c = 0; c < SA3D_N_SPAIR_CATEGORIES; c++) {
            const char *cat = sa3d_spair_category(c);
            char *names[4096];
            int n = 0;
            DIR *d = opendir(dir);
            struct dirent *e;
            while (d && (e = readdir(d))) {
                char suffix[64];
                snprintf(suffix, sizeof suffix, ":%s.json", cat);
                size_t ln = strlen(e->d_name), ls = strlen(suffix);
                if (ln < ls || strcmp(e->d_name + ln - ls, suffix)) continue;
                char path[1500];
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                cJSON *j = read_json(path);
                for (int k = 0; j && k < 2 && n < 4096; k++) {
                    char id[128];
                    strip_ext(
                        id, sizeof id,
                        cJSON_GetObjectItemCaseSensitive(j, k ? "trg_imname" : "src_imname")->valuestring);
                    int dup = 0;
                    for (int q = 0; q < n; q++) dup |= !strcmp(names[q], id);
                    if (!dup) names[n++] = strdup(id);
                }
                cJSON_Delete(j);
            }
            if (d) closedir(d);
            qsort(names, (size_t)n, sizeof *names, cmp_str);
            const char *const *ids = NULL;
            int m = sa3d_dataset_split_images(ds, splits[s], cat, &ids, &err);
            T_CHECK(m == n);
            for (int q = 0; q < n && q < m; q++) T_CHECK(!strcmp(ids[q], names[q]));
            for (int q = 0; q < n; q++) free(names[q]);
        }
    }
    sa3d_dataset_close(ds);
}

/* ---- 2. flip map and categories ---- */

static const struct {
    const char *cat;
    int slots;
    int unused[2];
} slot_table[18] = {
    /* METHOD.md 1.5 */
    { "aeroplane", 25, { -1, -1 } }, { "bicycle", 14, { 11, 12 } }, { "bird", 17, { -1, -1 } },
    { "boat", 14, { -1, -1 } },      { "bottle", 10, { -1, -1 } },  { "bus", 30, { 8, 9 } },
    { "car", 30, { -1, -1 } },       { "cat", 15, { -1, -1 } },     { "chair", 14, { -1, -1 } },
    { "cow", 21, { -1, -1 } },       { "dog", 16, { -1, -1 } },     { "horse", 20, { -1, -1 } },
    { "motorbike", 13, { -1, -1 } }, { "person", 20, { -1, -1 } },  { "pottedplant", 9, { -1, -1 } },
    { "sheep", 21, { -1, -1 } },     { "train", 18, { -1, -1 } },   { "tvmonitor", 16, { -1, -1 } },
};

static void case_flip_involution(void) {
    for (int c = 0; c < 18; c++) {
        int map[SA3D_MAX_KPS];
        int slots = sa3d_spair_flip_map(slot_table[c].cat, map);
        if (slots != slot_table[c].slots)
            T_FAIL("%s: %d slots, METHOD.md 1.5 says %d", slot_table[c].cat, slots, slot_table[c].slots);
        for (int k = 0; k < SA3D_MAX_KPS; k++) {
            T_CHECK(map[k] >= 0 && map[k] < SA3D_MAX_KPS);
            if (map[map[k]] != k) T_FAIL("%s: map[map[%d]] = %d", slot_table[c].cat, k, map[map[k]]);
            if (k >= slots)
                T_CHECK(map[k] == k);
            else
                T_CHECK(map[k] < slots);
        }
        for (int u = 0; u < 2; u++)
            if (slot_table[c].unused[u] >= 0)
                T_CHECK(map[slot_table[c].unused[u]] == slot_table[c].unused[u]);
    }
}

static void case_flip_pairs(void) {
    static const struct {
        const char *cat;
        int a, b;
    } want[] = {
        { "aeroplane", 4, 5 },   { "aeroplane", 0, 0 }, { "aeroplane", 24, 24 }, { "aeroplane", 20, 21 },
        { "bicycle", 9, 10 },    { "bicycle", 13, 13 }, { "bus", 10, 20 },       { "bus", 28, 29 },
        { "car", 15, 25 },       { "car", 8, 8 },       { "pottedplant", 0, 2 }, { "pottedplant", 6, 8 },
        { "pottedplant", 7, 7 }, { "tvmonitor", 0, 2 }, { "tvmonitor", 3, 7 },   { "tvmonitor", 11, 15 },
        { "tvmonitor", 9, 9 },   { "person", 18, 19 },  { "motorbike", 12, 12 }, { "cow", 19, 20 },
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        int map[SA3D_MAX_KPS];
        T_CHECK(sa3d_spair_flip_map(want[i].cat, map) > 0);
        if (map[want[i].a] != want[i].b || map[want[i].b] != want[i].a)
            T_FAIL("%s: %d <-> %d expected, map gives %d, %d", want[i].cat, want[i].a, want[i].b,
                   map[want[i].a], map[want[i].b]);
    }
    int map[SA3D_MAX_KPS] = { 0 };
    map[0] = 77;
    T_CHECK(sa3d_spair_flip_map("diningtable", map) == -1 && map[0] == 77);
    T_CHECK(sa3d_spair_flip_map(NULL, map) == -1);
}

/* PF-PASCAL and AP-10K maps: involutions for every category, and the swaps their sources name */
static void case_flip_other_kinds(void) {
    int map[SA3D_MAX_KPS];
    static const char *const voc[20] = { "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
        "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
        "train", "tvmonitor" };
    static const int voc_slots[20] = { 16, 11, 12, 11, 8, 8, 14, 16, 10, 16, 8, 16, 16, 10, 17, 6, 7, 12, 7, 8 };
    for (int c = 0; c < 20; c++) {
        int slots = sa3d_flip_map(SA3D_DATASET_PFPASCAL, voc[c], map);
        T_CHECK(slots == voc_slots[c]);
        for (int k = 0; k < SA3D_MAX_KPS; k++) T_CHECK(map[k] >= 0 && map[k] < SA3D_MAX_KPS && map[map[k]] == k);
    }
    T_CHECK(sa3d_flip_map(SA3D_DATASET_PFPASCAL, "aeroplane", map) == 16 && map[12] == 14 && map[14] == 12 &&
            map[13] == 13 && map[9] == 10);
    T_CHECK(sa3d_flip_map(SA3D_DATASET_PFPASCAL, "person", map) == 17 && map[0] == 3 && map[8] == 11 &&
            map[16] == 16);
    T_CHECK(sa3d_flip_map(SA3D_DATASET_PFPASCAL, "chair", map) == 10 && map[0] == 2 && map[9] == 8);
    T_CHECK(sa3d_flip_map(SA3D_DATASET_PFPASCAL, "sofa", map) == 12 && sa3d_spair_flip_map("sofa", map) == -1);
    /* AP-10K: left/right eye, shoulder, elbow, front paw, hip, knee, back paw swap; nose, neck, tail root stay */
    static const int ap[17] = { 1, 0, 2, 3, 4, 8, 9, 10, 5, 6, 7, 14, 15, 16, 11, 12, 13 };
    static const char *const species[3] = { "antelope", "Canidae", "all" };
    for (int i = 0; i < 3; i++) {
        T_CHECK(sa3d_flip_map(SA3D_DATASET_AP10K, species[i], map) == 17);
        for (int k = 0; k < 17; k++) T_CHECK(map[k] == ap[k]);
    }
    /* SPair through the generic entry equals sa3d_spair_flip_map; unknown names leave map alone */
    int m2[SA3D_MAX_KPS];
    T_CHECK(sa3d_flip_map(SA3D_DATASET_SPAIR, "car", map) == sa3d_spair_flip_map("car", m2) &&
            !memcmp(map, m2, sizeof map));
    map[0] = 77;
    T_CHECK(sa3d_flip_map(SA3D_DATASET_PFPASCAL, "giraffe", map) == -1 && map[0] == 77);
    T_CHECK(sa3d_flip_map(SA3D_DATASET_AP10K, NULL, map) == -1 && map[0] == 77);
    T_CHECK(sa3d_flip_map((sa3d_dataset_kind)9, "car", map) == -1 && map[0] == 77);
}

static void case_categories(void) {
    for (int i = 0; i < 18; i++) {
        T_CHECK(!strcmp(sa3d_spair_category(i), slot_table[i].cat)); /* sorted, as METHOD.md 1.4 */
        T_CHECK(sa3d_spair_category_index(slot_table[i].cat) == i);
        if (i) T_CHECK(strcmp(sa3d_spair_category(i - 1), sa3d_spair_category(i)) < 0);
    }
    T_CHECK(sa3d_spair_category(-1) == NULL && sa3d_spair_category(18) == NULL);
    T_CHECK(sa3d_spair_category_index("sofa") == -1 && sa3d_spair_category_index(NULL) == -1);
}

/* ---- 3. synthetic SPair trees ---- */

/* A valid pair record: n keypoints with ids 2i, inside a (100 + num) x 80 source and a 120 x 90 target. */
static cJSON *pair_json(int num, const char *cat, const char *src, const char *trg, int n) {
    cJSON *j = cJSON_CreateObject();
    char name[256];
    snprintf(name, sizeof name, "%06d-%s-%s:%s", num, src, trg, cat);
    cJSON_AddNumberToObject(j, "pair_id", num);
    cJSON_AddStringToObject(j, "filename", name);
    snprintf(name, sizeof name, "%s.jpg", src);
    cJSON_AddStringToObject(j, "src_imname", name);
    snprintf(name, sizeof name, "%s.jpg", trg);
    cJSON_AddStringToObject(j, "trg_imname", name);
    int ss[3] = { 100 + num, 80, 3 }, ts[3] = { 120, 90, 3 };
    cJSON_AddItemToObject(j, "src_imsize", cJSON_CreateIntArray(ss, 3));
    cJSON_AddItemToObject(j, "trg_imsize", cJSON_CreateIntArray(ts, 3));
    int sb[4] = { 1, 2, 50 + num, 60 }, tb[4] = { 3, 4, 100, 70 + num % 10 };
    cJSON_AddItemToObject(j, "src_bndbox", cJSON_CreateIntArray(sb, 4));
    cJSON_AddItemToObject(j, "trg_bndbox", cJSON_CreateIntArray(tb, 4));
    cJSON_AddStringToObject(j, "category", cat);
    cJSON *sk = cJSON_CreateArray(), *tk = cJSON_CreateArray(), *ids = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        int a[2] = { 10 + i, 20 + num % 50 }, b[2] = { 30 + i, 40 + i % 40 };
        char id[8];
        snprintf(id, sizeof id, "%d", (2 * i) % SA3D_MAX_KPS);
        cJSON_AddItemToArray(sk, cJSON_CreateIntArray(a, 2));
        cJSON_AddItemToArray(tk, cJSON_CreateIntArray(b, 2));
        cJSON_AddItemToArray(ids, cJSON_CreateString(id));
    }
    cJSON_AddItemToObject(j, "src_kps", sk);
    cJSON_AddItemToObject(j, "trg_kps", tk);
    cJSON_AddItemToObject(j, "kps_ids", ids);
    cJSON_AddNumberToObject(j, "mirror", num % 2);
    cJSON_AddNumberToObject(j, "viewpoint_variation", num % 3);
    cJSON_AddNumberToObject(j, "scale_variation", (num + 1) % 3);
    cJSON_AddNumberToObject(j, "truncation", num % 4);
    cJSON_AddNumberToObject(j, "occlusion", (num + 2) % 4);
    return j;
}

static void put_pair(const char *root, const char *split, int num, const char *cat, const char *src,
                     const char *trg, int n) {
    char rel[512];
    snprintf(rel, sizeof rel, "PairAnnotation/%s/%06d-%s-%s:%s.json", split, num, src, trg, cat);
    cJSON *j = pair_json(num, cat, src, trg, n);
    write_json(root, rel, j);
    cJSON_Delete(j);
}

static cJSON *image_json(const char *cat, const char *id, int w, int h) {
    cJSON *j = cJSON_CreateObject();
    char name[128];
    snprintf(name, sizeof name, "%s.jpg", id);
    cJSON_AddStringToObject(j, "filename", name);
    cJSON_AddNumberToObject(j, "image_width", w);
    cJSON_AddNumberToObject(j, "image_height", h);
    cJSON_AddNumberToObject(j, "image_depth", 3);
    cJSON_AddStringToObject(j, "category", cat);
    cJSON_AddStringToObject(j, "pose", "Left");
    cJSON_AddNumberToObject(j, "truncated", 1);
    cJSON_AddNumberToObject(j, "occluded", 0);
    cJSON_AddNumberToObject(j, "difficult", 0);
    int b[4] = { 5, 6, w, h - 1 };
    cJSON_AddItemToObject(j, "bndbox", cJSON_CreateIntArray(b, 4));
    cJSON *k = cJSON_CreateObject();
    for (int i = 0; i < 30; i++) {
        char key[8];
        snprintf(key, sizeof key, "%d", i);
        int xy[2] = { (i * 7) % (w + 1), (i * 3) % (h + 1) };
        cJSON_AddItemToObject(k, key, i % 3 == 1 ? cJSON_CreateNull() : cJSON_CreateIntArray(xy, 2));
    }
    cJSON_AddItemToObject(j, "kps", k);
    cJSON_AddNumberToObject(j, "azimuth_id", 3);
    return j;
}

static void put_image(const char *root, const char *cat, const char *id, int w, int h) {
    char rel[512];
    snprintf(rel, sizeof rel, "ImageAnnotation/%s/%s.json", cat, id);
    cJSON *j = image_json(cat, id, w, h);
    write_json(root, rel, j);
    cJSON_Delete(j);
}

/* A tree with three categories over three splits, files written out of order. Returns the root. */
static const char *synthetic_spair(void) {
    const char *root = make_tmp();
    put_pair(root, "test", 3, "bus", "b2", "b1", 4);
    put_pair(root, "test", 1, "cat", "c1", "c2", 1);
    put_pair(root, "test", 2, "aeroplane", "a3", "a1", 5);
    put_pair(root, "test", 1, "aeroplane", "a1", "a2", 3);
    put_pair(root, "test", 1, "bus", "b1", "b3", 2);
    put_pair(root, "test", 3, "aeroplane", "a2", "a1", 2);
    put_pair(root, "trn", 7, "aeroplane", "a9", "a8", 6);
    put_pair(root, "trn", 5, "cat", "c5", "c4", 3);
    put_pair(root, "val", 1, "bus", "b7", "b6", 30);
    put_image(root, "aeroplane", "a1", 200, 150);
    put_image(root, "aeroplane", "a2", 120, 90);
    put_image(root, "bus", "b1", 300, 200);
    write_text(root, "Layout/small/test.txt",
               "000003-a2-a1:aeroplane\r\n\n000001-cat-c1-c2:cat\n000001-c1-c2:cat\n000001-c1-c2:cat\n");
    write_text(root, "Layout/large/test.txt", "000001-a1-a2:aeroplane\n000009-zz-yy:aeroplane\n");
    return root;
}

static void case_synthetic_lists(void) {
    const char *root = synthetic_spair();
    sa3d_dataset *ds = NULL;
    sa3d_error err = { 0 };
    sa3d_dataset_params p = sa3d_dataset_params_default();
    p.strict = 1;
    T_OK(sa3d_dataset_open(&ds, root, &p, &err), &err);
    if (!ds) return;
    T_CHECK(sa3d_dataset_n_pairs(ds, "test") == 0 && sa3d_dataset_pair(ds, "test", 0) == NULL);
    int n = sa3d_dataset_load_split(ds, "test", &err);
    static const char *const order[6] = {
        "000001-a1-a2:aeroplane", "000001-b1-b3:bus",       "000001-c1-c2:cat",
        "000002-a3-a1:aeroplane", "000003-a2-a1:aeroplane", "000003-b2-b1:bus",
    };
    T_CHECK(n == 6 && sa3d_dataset_n_pairs(ds, "test") == 6);
    for (int i = 0; i < n && i < 6; i++)
        if (strcmp(sa3d_dataset_pair(ds, "test", i)->id, order[i]))
            T_FAIL("pair %d is %s, expected %s", i, sa3d_dataset_pair(ds, "test", i)->id, order[i]);
    T_CHECK(sa3d_dataset_pair(ds, "test", 6) == NULL && sa3d_dataset_pair(ds, "test", -1) == NULL);
    T_CHECK(sa3d_dataset_load_split(ds, "test", &err) == 6); /* kept */
    const sa3d_pair *pr = sa3d_dataset_find_pair(ds, "test", "000002-a3-a1:aeroplane");
    T_CHECK(pr && pr == sa3d_dataset_pair(ds, "test", 3));
    if (pr) {
        T_CHECK(!strcmp(pr->src, "a3") && !strcmp(pr->trg, "a1") && !strcmp(pr->category, "aeroplane"));
        T_CHECK(pr->n_kps == 5 && pr->kp_ids[4] == 8 && pr->src_kps[4][0] == 14.0f &&
                pr->trg_kps[4][1] == 44.0f);
        T_CHECK(pr->src_size[0] == 102 && pr->src_size[1] == 80 && pr->trg_size[0] == 120 &&
                pr->trg_size[1] == 90);
        T_CHECK(pr->trg_bbox[0] == 3.0f && pr->trg_bbox[3] == 72.0f);
        T_NEAR((double)pr->threshold_base, 97.0, 0.0); /* max(100 - 3, 72 - 4) */
        T_CHECK(pr->mirror == 0 && pr->viewpoint_variation == 2 && pr->scale_variation == 0 &&
                pr->truncation == 2 && pr->occlusion == 0);
    }
    T_CHECK(sa3d_dataset_find_pair(ds, "test", "000002-a3-a1:aeroplanf") == NULL);
    T_CHECK(sa3d_dataset_find_pair(ds, "trn", "000007-a9-a8:aeroplane") == NULL); /* trn not loaded */
    const char *const *ids = NULL;
    int m = sa3d_dataset_split_images(ds, "test", "aeroplane", &ids, &err);
    T_CHECK(m == 3 && ids && !strcmp(ids[0], "a1") && !strcmp(ids[1], "a2") && !strcmp(ids[2], "a3"));
    m = sa3d_dataset_split_images(ds, "test", "bus", &ids, &err);
    T_CHECK(m == 3 && ids && !strcmp(ids[0], "b1") && !strcmp(ids[2], "b3"));
    m = sa3d_dataset_split_images(ds, "test", "dog", &ids, &err);
    T_CHECK(m == 0 && ids == NULL);
    m = sa3d_dataset_split_images(ds, "trn", "cat", &ids, &err); /* loads trn */
    T_CHECK(m == 2 && !strcmp(ids[0], "c4") && !strcmp(ids[1], "c5") && sa3d_dataset_n_pairs(ds, "trn") == 2);
    T_CHECK(sa3d_dataset_load_split(ds, "val", &err) == 1 && sa3d_dataset_pair(ds, "val", 0)->n_kps == 30);
    sa3d_dataset_close(ds);
    remove_tree(root);
}

static void case_synthetic_filter_layout(void) {
    const char *root = synthetic_spair();
    sa3d_dataset *ds = NULL;
    sa3d_error err = { 0 };
    sa3d_dataset_params p = sa3d_dataset_params_default();
    p.categories = " bus ,cat,bus";
    T_OK(sa3d_dataset_open(&ds, root, &p, &err), &err);
    T_CHECK(sa3d_dataset_load_split(ds, "test", &err) == 3);
    for (int i = 0; i < sa3d_dataset_n_pairs(ds, "test"); i++)
        T_CHECK(strcmp(sa3d_dataset_pair(ds, "test", i)->category, "aeroplane"));
    /* the selection as parsed: trimmed, the repeat dropped, in the order given */
    const char *sel0 = sa3d_dataset_selected_category(ds, 0), *sel1 = sa3d_dataset_selected_category(ds, 1);
    T_CHECK(sel0 && sel1 && !strcmp(sel0, "bus") && !strcmp(sel1, "cat"));
    T_CHECK(!sa3d_dataset_selected_category(ds, 2) && !sa3d_dataset_selected_category(ds, -1));
    sa3d_dataset_close(ds);

    warnings w = { 0 };
    p = sa3d_dataset_params_default();
    p.layout = "small";
    p.warn = collect;
    p.warn_user = &w;
    T_OK(sa3d_dataset_open(&ds, root, &p, &err), &err);
    T_CHECK(!sa3d_dataset_selected_category(ds, 0) && !sa3d_dataset_selected_category(NULL, 0));   /* no selection */
    int n = sa3d_dataset_load_split(ds, "test", &err); /* listed twice: kept once; the bad line warns */
    T_CHECK(n == 2 && w.n == 1);
    T_CHECK(n == 2 && !strcmp(sa3d_dataset_pair(ds, "test", 0)->id, "000001-c1-c2:cat") &&
            !strcmp(sa3d_dataset_pair(ds, "test", 1)->id, "000003-a2-a1:aeroplane"));
    T_CONTAINS(w.last, "000001-cat-c1-c2:cat.json");
    T_CHECK(sa3d_dataset_load_split(ds, "trn", &err) == -1 &&
            err.code == SA3D_ERR_IO); /* no Layout/small/trn.txt */
    T_CONTAINS(err.msg, "trn.txt");
    sa3d_dataset_close(ds);

    p.layout = "large"; /* a listed pair without its file: IO in strict mode */
    p.strict = 1;
    T_OK(sa3d_dataset_open(&ds, root, &p, &err), &err);
    T_CHECK(sa3d_dataset_load_split(ds, "test", &err) == -1 && err.code == SA3D_ERR_IO);
    T_CONTAINS(err.msg, "000009-zz-yy:aeroplane.json");
    sa3d_dataset_close(ds);
    remove_tree(root);
}

static void case_synthetic_images(void) {
    const char *root = synthetic_spair();
    sa3d_dataset *ds = NULL;
    sa3d_error err = { 0 };
    T_OK(sa3d_dataset_open(&ds, root, NULL, &err), &err);
    if (!ds) return;
    const sa3d_image_anno *a = NULL;
    T_OK(sa3d_dataset_image(ds, "aeroplane", "a1", &a, &err), &err);
    if (a) {
        T_CHECK(a->width == 200 && a->height == 150 && a->n_slots == 30 && a->bbox[2] == 200.0f);
        T_CHECK(a->visible[0] && !a->visible[1] && a->visible[29] &&
                a->kps[29][0] == (float)((29 * 7) % 201));
        T_CHECK(a->truncated == 1 && a->occluded == 0 && a->azimuth_id == 3 &&
                !strcmp(a->filename, "a1.jpg"));
        T_CHECK(a->supercategory[0] == '\0');
    }
    T_STATUS(sa3d_dataset_image(ds, "aeroplane", "a7", &a, &err), SA3D_ERR_IO, &err);
    T_CHECK(a == NULL);
    T_STATUS(sa3d_dataset_image(ds, "aeroplane", "../bus/b1", &a, &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_dataset_image(ds, "aeroplane", "a\"1", &a, &err), SA3D_ERR_ARG, &err);   /* no JSON string */
    T_STATUS(sa3d_dataset_image(ds, "aeroplane", "a\n1", &a, &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_dataset_image(ds, "", "a1", &a, &err), SA3D_ERR_ARG, &err);
    char *ip = sa3d_dataset_image_path(ds, "aeroplane", "a1"),
         *mp = sa3d_dataset_mask_path(ds, "aeroplane", "a1");
    char want[1024];
    snprintf(want, sizeof want, "%s/JPEGImages/aeroplane/a1.jpg", root);
    T_CHECK(ip && !strcmp(ip, want));
    snprintf(want, sizeof want, "%s/Segmentation/aeroplane/a1.png", root);
    T_CHECK(mp && !strcmp(mp, want));
    free(ip);
    free(mp);
    sa3d_dataset_close(ds);
    remove_tree(root);
}

/* ---- 4. malformed records ---- */

typedef struct bad_case {
    const char *what, *field;
    void (*edit)(cJSON *j);
    const char *raw;  /* instead of the JSON, this text */
    const char *name; /* file name stem, when not the default */
} bad_case;

static void set(cJSON *j, const char *key, cJSON *v) { cJSON_ReplaceItemInObjectCaseSensitive(j, key, v); }
static void e_missing(cJSON *j) { cJSON_DeleteItemFromObjectCaseSensitive(j, "trg_bndbox"); }
static void e_type(cJSON *j) { set(j, "src_imsize", cJSON_CreateString("500x333")); }
static void e_outside(cJSON *j) {
    int xy[2] = { 121, 5 };
    cJSON_ReplaceItemInArray(cJSON_GetObjectItemCaseSensitive(j, "trg_kps"), 1, cJSON_CreateIntArray(xy, 2));
}
static void e_negative(cJSON *j) {
    int xy[2] = { -1, 5 };
    cJSON_ReplaceItemInArray(cJSON_GetObjectItemCaseSensitive(j, "src_kps"), 0, cJSON_CreateIntArray(xy, 2));
}
static void e_below(cJSON *j) {
    int xy[2] = { 5, 91 };
    cJSON_ReplaceItemInArray(cJSON_GetObjectItemCaseSensitive(j, "trg_kps"), 2, cJSON_CreateIntArray(xy, 2));
}
static void e_category(cJSON *j) { set(j, "category", cJSON_CreateString("spaceship")); }
static void e_too_many(cJSON *j) {
    cJSON *fresh = pair_json(2, "aeroplane", "s", "t", SA3D_MAX_KPS + 1);
    for (int k = 0; k < 3; k++) {
        const char *key = k == 0 ? "src_kps" : k == 1 ? "trg_kps" : "kps_ids";
        set(j, key, cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(fresh, key), 1));
    }
    cJSON_Delete(fresh);
}
static void e_mismatch(cJSON *j) {
    cJSON_DeleteItemFromArray(cJSON_GetObjectItemCaseSensitive(j, "src_kps"), 0);
}
static void e_size0(cJSON *j) {
    int v[3] = { 0, 80, 3 };
    set(j, "trg_imsize", cJSON_CreateIntArray(v, 3));
}
static void e_size_huge(cJSON *j) {
    int v[3] = { 200000, 80, 3 };
    set(j, "trg_imsize", cJSON_CreateIntArray(v, 3));
}
static void e_size_frac(cJSON *j) {
    double v[3] = { 100.5, 80, 3 };
    set(j, "src_imsize", cJSON_CreateDoubleArray(v, 3));
}
static void e_kp_id(cJSON *j) {
    cJSON_ReplaceItemInArray(cJSON_GetObjectItemCaseSensitive(j, "kps_ids"), 0, cJSON_CreateString("x"));
}
static void e_kp_id_big(cJSON *j) {
    cJSON_ReplaceItemInArray(cJSON_GetObjectItemCaseSensitive(j, "kps_ids"), 0, cJSON_CreateString("64"));
}
static void e_dup_id(cJSON *j) {
    cJSON_ReplaceItemInArray(cJSON_GetObjectItemCaseSensitive(j, "kps_ids"), 1, cJSON_CreateString("0"));
}
static void e_short_point(cJSON *j) {
    int xy[1] = { 1 };
    cJSON_ReplaceItemInArray(cJSON_GetObjectItemCaseSensitive(j, "src_kps"), 2, cJSON_CreateIntArray(xy, 1));
}
static void e_null_point(cJSON *j) {
    cJSON_ReplaceItemInArray(cJSON_GetObjectItemCaseSensitive(j, "trg_kps"), 0, cJSON_CreateNull());
}
static void e_flag(cJSON *j) { set(j, "truncation", cJSON_CreateNumber(7)); }
static void e_flag_type(cJSON *j) { set(j, "mirror", cJSON_CreateString("no")); }
static void e_filename(cJSON *j) { set(j, "filename", cJSON_CreateString("000002-x-y:aeroplane")); }
static void e_src_name(cJSON *j) { set(j, "src_imname", cJSON_CreateString("other.jpg")); }
static void e_bbox_order(cJSON *j) {
    int b[4] = { 60, 2, 50, 60 };
    set(j, "src_bndbox", cJSON_CreateIntArray(b, 4));
}
static void e_bbox_empty(cJSON *j) {
    int b[4] = { 3, 4, 3, 4 };
    set(j, "trg_bndbox", cJSON_CreateIntArray(b, 4));
}
static void e_bbox_short(cJSON *j) {
    int b[3] = { 3, 4, 5 };
    set(j, "trg_bndbox", cJSON_CreateIntArray(b, 3));
}
static void e_bbox_float_overflow(cJSON *j) {   /* finite as double, inf as float: a threshold of inf */
    double b[4] = { -1e39, 0, 1e39, 10 };
    set(j, "trg_bndbox", cJSON_CreateDoubleArray(b, 4));
}
static void e_root_array(cJSON *j) { (void)j; }

static const bad_case bad_pairs[] = {
    { "missing field", "trg_bndbox", e_missing, NULL, NULL },
    { "wrong type", "src_imsize", e_type, NULL, NULL },
    { "keypoint right of the image", "trg_kps[1]", e_outside, NULL, NULL },
    { "keypoint left of the image", "src_kps[0]", e_negative, NULL, NULL },
    { "keypoint below the image", "trg_kps[2]", e_below, NULL, NULL },
    { "unknown category", "category", e_category, NULL, "000002-s-t:spaceship" },
    { "more than SA3D_MAX_KPS keypoints", "kps_ids", e_too_many, NULL, NULL },
    { "src_kps shorter than kps_ids", "src_kps", e_mismatch, NULL, NULL },
    { "zero width", "trg_imsize[0]", e_size0, NULL, NULL },
    { "absurd width", "trg_imsize[0]", e_size_huge, NULL, NULL },
    { "fractional width", "src_imsize[0]", e_size_frac, NULL, NULL },
    { "keypoint id not a number", "kps_ids[0]", e_kp_id, NULL, NULL },
    { "keypoint id too large", "kps_ids[0]", e_kp_id_big, NULL, NULL },
    { "keypoint id twice", "kps_ids[1]", e_dup_id, NULL, NULL },
    { "point with one coordinate", "src_kps[2]: expected [x, y] numbers", e_short_point, NULL, NULL },
    { "null point", "trg_kps[0]", e_null_point, NULL, NULL },
    { "flag out of range", "truncation", e_flag, NULL, NULL },
    { "flag of the wrong type", "mirror", e_flag_type, NULL, NULL },
    { "filename field disagrees", "filename", e_filename, NULL, NULL },
    { "file name disagrees with src_imname", "src_imname", e_src_name, NULL, NULL },
    { "box min > max", "src_bndbox", e_bbox_order, NULL, NULL },
    { "empty target box", "trg_bndbox", e_bbox_empty, NULL, NULL },
    { "box of three numbers", "trg_bndbox", e_bbox_short, NULL, NULL },
    { "box beyond float range", "trg_bndbox: coordinate", e_bbox_float_overflow, NULL, NULL },
    { "infinite box coordinate", "src_bndbox[0]", NULL,
      "{\"category\": \"aeroplane\", \"src_imname\": \"s.jpg\", \"trg_imname\": \"t.jpg\", "
      "\"src_imsize\": [9, 9], \"trg_imsize\": [9, 9], \"src_bndbox\": [1e999, 0, 1, 1]}",
      NULL },
    { "not JSON", "not valid JSON", NULL, "{\"category\": \"aeroplane\",", NULL },
    { "not an object", "expected a JSON object", e_root_array, "[1, 2]", NULL },
    { "name without category", "file name", NULL, "{}", "000002-s-t" },
};

/* A tree holding one good pair and one bad one in test. */
static const char *bad_tree(const bad_case *bc, char *bad_file, size_t cap) {
    const char *root = make_tmp();
    mkdir(root, 0755);
    put_pair(root, "test", 1, "aeroplane", "g1", "g2", 3);
    put_image(root, "aeroplane", "g1", 100, 100);
    const char *stem = bc->name ? bc->name : "000002-s-t:aeroplane";
    char rel[512];
    snprintf(rel, sizeof rel, "PairAnnotation/test/%s.json", stem);
    snprintf(bad_file, cap, "%s.json", stem);
    if (bc->raw) {
        write_text(root, rel, bc->raw);
    } else {
        cJSON *j =
            pair_json(2, bc->name && strstr(bc->name, "spaceship") ? "spaceship" : "aeroplane", "s", "t", 3);
        if (bc->edit) bc->edit(j);
        write_json(root, rel, j);
        cJSON_Delete(j);
    }
    return root;
}

static void case_bad_pairs_lenient(void) {
    for (size_t i = 0; i < sizeof bad_pairs / sizeof bad_pairs[0]; i++) {
        char bad_file[256];
        const char *root = bad_tree(&bad_pairs[i], bad_file, sizeof bad_file);
        warnings w = { 0 };
        sa3d_dataset *ds = NULL;
        sa3d_error err = { 0 };
        sa3d_dataset_params p = sa3d_dataset_params_default();
        p.warn = collect;
        p.warn_user = &w;
        T_OK(sa3d_dataset_open(&ds, root, &p, &err), &err);
        int n = ds ? sa3d_dataset_load_split(ds, "test", &err) : -1;
        if (n != 1 || w.n != 1) T_FAIL("%s: %d pairs, %d warnings (%s)", bad_pairs[i].what, n, w.n, err.msg);
        if (n == 1) T_CHECK(!strcmp(sa3d_dataset_pair(ds, "test", 0)->id, "000001-g1-g2:aeroplane"));
        if (!strstr(w.last, bad_file) || !strstr(w.last, bad_pairs[i].field))
            T_FAIL("%s: warning '%s' should name '%s' and '%s'", bad_pairs[i].what, w.last, bad_file,
                   bad_pairs[i].field);
        sa3d_dataset_close(ds);
        remove_tree(root);
    }
}

static void case_bad_pairs_strict(void) {
    for (size_t i = 0; i < sizeof bad_pairs / sizeof bad_pairs[0]; i++) {
        char bad_file[256];
        const char *root = bad_tree(&bad_pairs[i], bad_file, sizeof bad_file);
        warnings w = { 0 };
        sa3d_dataset *ds = NULL;
        sa3d_error err = { 0 };
        sa3d_dataset_params p = sa3d_dataset_params_default();
        p.strict = 1;
        p.warn = collect;
        p.warn_user = &w;
        T_OK(sa3d_dataset_open(&ds, root, &p, &err), &err);
        int n = ds ? sa3d_dataset_load_split(ds, "test", &err) : 0;
        if (n != -1 || err.code != SA3D_ERR_FORMAT)
            T_FAIL("%s: load_split gave %d, %s (%s)", bad_pairs[i].what, n, sa3d_status_name(err.code),
                   err.msg);
        if (!strstr(err.msg, bad_file) || !strstr(err.msg, bad_pairs[i].field))
            T_FAIL("%s: message '%s' should name '%s' and '%s'", bad_pairs[i].what, err.msg, bad_file,
                   bad_pairs[i].field);
        T_CHECK(w.n == 0 && sa3d_dataset_n_pairs(ds, "test") == 0);
        if (i == 14) printf("       e.g. %s\n", err.msg);
        sa3d_dataset_close(ds);
        remove_tree(root);
    }
}

static void case_boundaries(void) {
    const char *root = make_tmp();
    cJSON *j = pair_json(1, "aeroplane", "s", "t", 3);
    int a[2] = { 101, 80 }, b[2] = { 0, 0 }, c[2] = { 120, 90 }; /* x == W, y == H, the origin */
    cJSON_ReplaceItemInArray(cJSON_GetObjectItemCaseSensitive(j, "src_kps"), 0, cJSON_CreateIntArray(a, 2));
    cJSON_ReplaceItemInArray(cJSON_GetObjectItemCaseSensitive(j, "src_kps"), 1, cJSON_CreateIntArray(b, 2));
    cJSON_ReplaceItemInArray(cJSON_GetObjectItemCaseSensitive(j, "trg_kps"), 2, cJSON_CreateIntArray(c, 2));
    int bb[4] = { -5, 0, 130, 95 }; /* a box may reach past the image */
    cJSON_ReplaceItemInObjectCaseSensitive(j, "trg_bndbox", cJSON_CreateIntArray(bb, 4));
    cJSON_DeleteItemFromObjectCaseSensitive(j, "mirror"); /* absent flags read as -1 */
    cJSON_DeleteItemFromObjectCaseSensitive(j, "filename");
    write_json(root, "PairAnnotation/test/000001-s-t:aeroplane.json", j);
    cJSON_Delete(j);
    put_image(root, "aeroplane", "s", 10, 10);
    sa3d_dataset *ds = NULL;
    sa3d_error err = { 0 };
    sa3d_dataset_params p = sa3d_dataset_params_default();
    p.strict = 1;
    T_OK(sa3d_dataset_open(&ds, root, &p, &err), &err);
    int n = ds ? sa3d_dataset_load_split(ds, "test", &err) : -1;
    T_CHECK(n == 1);
    if (n == 1) {
        const sa3d_pair *pr = sa3d_dataset_pair(ds, "test", 0);
        T_CHECK(pr->src_kps[0][0] == 101.0f && pr->src_kps[0][1] == 80.0f && pr->trg_kps[2][0] == 120.0f);
        T_CHECK(pr->mirror == -1 && pr->truncation == 1);
        T_NEAR((double)pr->threshold_base, 135.0, 0.0);
    } else {
        T_FAIL("%s", err.msg);
    }
    sa3d_dataset_close(ds);
    remove_tree(root);
}

static void bad_image(const char *root, sa3d_dataset *ds, const char *id, void (*edit)(cJSON *),
                      const char *field) {
    cJSON *j = image_json("aeroplane", id, 50, 40);
    edit(j);
    char rel[256];
    snprintf(rel, sizeof rel, "ImageAnnotation/aeroplane/%s.json", id);
    write_json(root, rel, j);
    cJSON_Delete(j);
    const sa3d_image_anno *a = (const sa3d_image_anno *)1;
    sa3d_error err = { 0 };
    T_STATUS(sa3d_dataset_image(ds, "aeroplane", id, &a, &err), SA3D_ERR_FORMAT, &err);
    T_CHECK(a == NULL);
    char file[128];
    snprintf(file, sizeof file, "%s.json", id);
    if (!strstr(err.msg, file) || !strstr(err.msg, field))
        T_FAIL("'%s' should name '%s' and '%s'", err.msg, file, field);
}

static void i_width(cJSON *j) { cJSON_DeleteItemFromObjectCaseSensitive(j, "image_width"); }
static void i_key(cJSON *j) {
    cJSON_AddItemToObject(cJSON_GetObjectItemCaseSensitive(j, "kps"), "abc", cJSON_CreateNull());
}
static void i_point(cJSON *j) {
    int xy[3] = { 1, 2, 3 };
    cJSON_ReplaceItemInObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "kps"), "4",
                                           cJSON_CreateIntArray(xy, 3));
}
static void i_outside(cJSON *j) {
    int xy[2] = { 51, 2 };
    cJSON_ReplaceItemInObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "kps"), "5",
                                           cJSON_CreateIntArray(xy, 2));
}
static void i_category(cJSON *j) {
    cJSON_ReplaceItemInObjectCaseSensitive(j, "category", cJSON_CreateString("bus"));
}
static void i_filename(cJSON *j) {
    cJSON_ReplaceItemInObjectCaseSensitive(j, "filename", cJSON_CreateString("zz.jpg"));
}
static void i_kps_type(cJSON *j) { cJSON_ReplaceItemInObjectCaseSensitive(j, "kps", cJSON_CreateArray()); }
static void i_dup(cJSON *j) {
    cJSON_AddItemToObject(cJSON_GetObjectItemCaseSensitive(j, "kps"), "3", cJSON_CreateNull());
}
static void i_flag(cJSON *j) {
    cJSON_ReplaceItemInObjectCaseSensitive(j, "azimuth_id", cJSON_CreateNumber(-3));
}

static void case_bad_images(void) {
    const char *root = make_tmp();
    mkdir(root, 0755);
    put_image(root, "aeroplane", "ok", 50, 40);
    sa3d_dataset *ds = NULL;
    sa3d_error err = { 0 };
    T_OK(sa3d_dataset_open(&ds, root, NULL, &err), &err);
    if (!ds) return;
    bad_image(root, ds, "i1", i_width, "image_width");
    bad_image(root, ds, "i2", i_key, "kps");
    bad_image(root, ds, "i3", i_point, "kps.4");
    bad_image(root, ds, "i4", i_outside, "kps.5");
    bad_image(root, ds, "i5", i_category, "category");
    bad_image(root, ds, "i6", i_filename, "filename");
    bad_image(root, ds, "i7", i_kps_type, "kps");
    bad_image(root, ds, "i8", i_dup, "kps");
    bad_image(root, ds, "i9", i_flag, "azimuth_id");
    char *big = malloc(SA3D_RECORD_MAX_BYTES + 2); /* larger than the cap: refused unread */
    memset(big, ' ', SA3D_RECORD_MAX_BYTES + 1);
    big[SA3D_RECORD_MAX_BYTES + 1] = '\0';
    write_text(root, "ImageAnnotation/aeroplane/huge.json", big);
    free(big);
    const sa3d_image_anno *a;
    T_STATUS(sa3d_dataset_image(ds, "aeroplane", "huge", &a, &err), SA3D_ERR_FORMAT, &err);
    T_CONTAINS(err.msg, "huge.json");
    T_OK(sa3d_dataset_image(ds, "aeroplane", "ok", &a, &err), &err);
    sa3d_dataset_close(ds);
    remove_tree(root);
}

static void case_bad_roots(void) {
    sa3d_dataset *ds = (sa3d_dataset *)1;
    sa3d_error err = { 0 };
    T_STATUS(sa3d_dataset_open(&ds, "/nonexistent/SPair-71k", NULL, &err), SA3D_ERR_IO, &err);
    T_CHECK(ds == NULL);
    T_CONTAINS(err.msg, "/nonexistent/SPair-71k");
    const char *root = make_tmp();
    T_STATUS(sa3d_dataset_open(&ds, root, NULL, &err), SA3D_ERR_IO, &err); /* no ImageAnnotation/ */
    T_CONTAINS(err.msg, "ImageAnnotation");
    put_pair(root, "test", 1, "aeroplane", "g1", "g2", 3);
    put_image(root, "aeroplane", "g1", 100, 100);
    sa3d_dataset_params p = sa3d_dataset_params_default();
    p.categories = "aeroplane,sofa";
    T_STATUS(sa3d_dataset_open(&ds, root, &p, &err), SA3D_ERR_ARG, &err);
    T_CONTAINS(err.msg, "sofa");
    p.categories = " , ";
    T_STATUS(sa3d_dataset_open(&ds, root, &p, &err), SA3D_ERR_ARG, &err);
    p.categories = NULL;
    p.layout = "medium";
    T_STATUS(sa3d_dataset_open(&ds, root, &p, &err), SA3D_ERR_ARG, &err);
    p.layout = "small";   /* a layout is SPair's alone; strict is a flag */
    p.kind = SA3D_DATASET_PFPASCAL;
    T_STATUS(sa3d_dataset_open(&ds, root, &p, &err), SA3D_ERR_ARG, &err);
    T_CONTAINS(err.msg, "only SPair-71k");
    p = sa3d_dataset_params_default();
    p.strict = -7;
    T_STATUS(sa3d_dataset_open(&ds, root, &p, &err), SA3D_ERR_ARG, &err);
    T_CONTAINS(err.msg, "strict -7");
    T_STATUS(sa3d_dataset_open(&ds, NULL, NULL, &err), SA3D_ERR_ARG, &err);
    T_OK(sa3d_dataset_open(&ds, root, NULL, &err), &err);
    T_CHECK(sa3d_dataset_load_split(ds, "val", &err) == -1 && err.code == SA3D_ERR_IO);
    T_CONTAINS(err.msg, "PairAnnotation/val");
    T_CHECK(sa3d_dataset_load_split(ds, "../test", &err) == -1 && err.code == SA3D_ERR_ARG);
    T_CHECK(sa3d_dataset_load_split(ds, "", &err) == -1 && err.code == SA3D_ERR_ARG);
    T_CHECK(sa3d_dataset_load_split(NULL, "test", &err) == -1 && err.code == SA3D_ERR_ARG);
    const char *const *ids = (const char *const *)1;
    T_CHECK(sa3d_dataset_split_images(ds, "val", "aeroplane", &ids, &err) == -1 && ids == NULL);
    T_CHECK(sa3d_dataset_n_pairs(ds, "val") == 0 && sa3d_dataset_n_pairs(NULL, "val") == 0);
    T_CHECK(sa3d_dataset_load_split(ds, "test", &err) == 1);
    sa3d_dataset_close(ds);
    sa3d_dataset_close(NULL);
    remove_tree(root);
}

/* ---- 5. allocation failures ---- */

/* Runs fn (open + loads) with the Nth allocation failing, N = 1, 2, ... until it succeeds. */
static void fault_loop(const char *what, sa3d_status (*fn)(const char *root, sa3d_error *err),
                       const char *root) {
    long base = sa3d_alloc_live_blocks();
    int n_fail = 0;
    for (long n = 1; n < 100000; n++) {
        sa3d_error err = { 0 };
        sa3d_alloc_fail_after(n);
        sa3d_status s = fn(root, &err);
        sa3d_alloc_fail_after(0);
        if (sa3d_alloc_live_blocks() != base) {
            T_FAIL("%s: allocation %ld failing leaks %ld blocks (%s)", what, n,
                   sa3d_alloc_live_blocks() - base, err.msg);
            return;
        }
        if (s == SA3D_OK) {
            printf("       %s: %d injected failures, each a clean SA3D_ERR_NOMEM\n", what, n_fail);
            return;
        }
        if (s != SA3D_ERR_NOMEM || err.code != SA3D_ERR_NOMEM) {
            T_FAIL("%s: allocation %ld failing gives %s: %s", what, n, sa3d_status_name(s), err.msg);
            return;
        }
        n_fail++;
    }
    T_FAIL("%s: never succeeded", what);
}

static sa3d_status run_spair(const char *root, sa3d_error *err) {
    sa3d_dataset *ds = NULL;
    sa3d_dataset_params p = sa3d_dataset_params_default();
    p.categories = "aeroplane,bus,cat";
    sa3d_status s = sa3d_dataset_open(&ds, root, &p, err);
    const char *const *ids;
    const sa3d_image_anno *a;
    if (!s && sa3d_dataset_load_split(ds, "test", err) < 0) s = err->code;
    if (!s && sa3d_dataset_load_split(ds, "trn", err) < 0) s = err->code;
    if (!s && sa3d_dataset_split_images(ds, "test", "aeroplane", &ids, err) < 0) s = err->code;
    if (!s) s = sa3d_dataset_image(ds, "aeroplane", "a1", &a, err);
    if (!s) s = sa3d_dataset_image(ds, "bus", "b1", &a, err);
    if (!s && sa3d_dataset_n_pairs(ds, "test") != 6) s = sa3d_fail(err, SA3D_ERR_ARG, "wrong count");
    sa3d_dataset_close(ds);
    return s;
}

static sa3d_status run_layout(const char *root, sa3d_error *err) {
    sa3d_dataset *ds = NULL;
    sa3d_dataset_params p = sa3d_dataset_params_default();
    p.layout = "small";
    sa3d_status s = sa3d_dataset_open(&ds, root, &p, err);
    if (!s && sa3d_dataset_load_split(ds, "test", err) < 0) s = err->code;
    sa3d_dataset_close(ds);
    return s;
}

static void case_faults_spair(void) {
    const char *root = synthetic_spair();
    fault_loop("SPair open + load + images", run_spair, root);
    fault_loop("SPair Layout list", run_layout, root);
    remove_tree(root);
}

/* ---- 6. PF-PASCAL ---- */

/* Enough of a JPEG for the header probe: SOI, APP0, a dummy DQT, SOF0 with the size, EOI. */
static void put_jpeg(const char *root, const char *rel, int w, int h) {
    unsigned char b[128];
    size_t k = 0;
    static const unsigned char app0[] = { 0xff, 0xd8, 0xff, 0xe0, 0, 16, 'J', 'F', 'I', 'F',
                                          0,    1,    1,    0,    0, 1,  0,   1,   0,   0 };
    memcpy(b, app0, sizeof app0);
    k = sizeof app0;
    b[k++] = 0xff;
    b[k++] = 0xdb;
    b[k++] = 0;
    b[k++] = 6;
    b[k++] = 0;
    b[k++] = 1;
    b[k++] = 2;
    b[k++] = 3;
    unsigned char sof[] = { 0xff,
                            0xc0,
                            0,
                            11,
                            8,
                            (unsigned char)(h >> 8),
                            (unsigned char)h,
                            (unsigned char)(w >> 8),
                            (unsigned char)w,
                            1,
                            1,
                            0x11,
                            0 };
    memcpy(b + k, sof, sizeof sof);
    k += sizeof sof;
    b[k++] = 0xff;
    b[k++] = 0xd9;
    write_bytes(root, rel, b, k);
}

static size_t put32(unsigned char *b, uint32_t v) {
    b[0] = (unsigned char)v;
    b[1] = (unsigned char)(v >> 8);
    b[2] = (unsigned char)(v >> 16);
    b[3] = (unsigned char)(v >> 24);
    return 4;
}

/* A MATLAB level-5 miMATRIX element (tag included) holding a rows x cols double matrix named name; int16 = 1
 * stores the values as miINT16, as MATLAB does for small integers. Returns the length. */
static size_t mat_element(unsigned char *b, const char *name, const double *rowmajor, int rows, int cols,
                          int int16) {
    size_t k = 8;
    k += put32(b + k, 6);
    k += put32(b + k, 8);
    k += put32(b + k, 6);
    k += put32(b + k, 0); /* flags: mxDOUBLE */
    k += put32(b + k, 5);
    k += put32(b + k, 8);
    k += put32(b + k, (uint32_t)rows);
    k += put32(b + k, (uint32_t)cols);
    size_t ln = strlen(name);
    if (ln <= 4) { /* small data element */
        k += put32(b + k, (uint32_t)ln << 16 | 1);
        memset(b + k, 0, 4);
        memcpy(b + k, name, ln);
        k += 4;
    } else {
        k += put32(b + k, 1);
        k += put32(b + k, (uint32_t)ln);
        memset(b + k, 0, (ln + 7) & ~(size_t)7);
        memcpy(b + k, name, ln);
        k += (ln + 7) & ~(size_t)7;
    }
    size_t count = (size_t)rows * (size_t)cols, es = int16 ? 2 : 8;
    k += put32(b + k, int16 ? 3 : 9);
    k += put32(b + k, (uint32_t)(count * es));
    for (int c = 0; c < cols; c++)
        for (int r = 0; r < rows; r++) {
            double v = rowmajor[r * cols + c];
            if (int16) {
                int16_t s = (int16_t)v;
                memcpy(b + k, &s, 2);
            } else {
                memcpy(b + k, &v, 8);
            }
            k += es;
        }
    while (k % 8) b[k++] = 0;
    put32(b, 14);
    put32(b + 4, (uint32_t)(k - 8));
    return k;
}

/* A whole MAT file: a "bbox" variable, then "kps"; compressed = 1 wraps each in miCOMPRESSED. */
static size_t mat_file(unsigned char *b, const double *kps, int rows, int int16, int compressed) {
    memset(b, ' ', 116);
    memcpy(b, "MATLAB 5.0 MAT-file, written by test_data", 41);
    memset(b + 116, 0, 8);
    b[124] = 0x00;
    b[125] = 0x01;
    b[126] = 'I';
    b[127] = 'M';
    size_t k = 128;
    static unsigned char el[8192];
    double bbox[4] = { 1, 2, 30, 40 };
    for (int v = 0; v < 2; v++) {
        size_t n =
            v == 0 ? mat_element(el, "bbox", bbox, 1, 4, 0) : mat_element(el, "kps", kps, rows, 2, int16);
        if (!compressed) {
            memcpy(b + k, el, n);
            k += n;
        } else {
            uLongf cl = compressBound(n);
            compress2(b + k + 8, &cl, el, n, 6);
            put32(b + k, 15);
            put32(b + k + 4, (uint32_t)cl);
            k += 8 + cl;
        }
    }
    return k;
}

static const char *synthetic_pascal(void) {
    const char *root = make_tmp();
    put_jpeg(root, "PF-dataset-PASCAL/JPEGImages/2009_000001.jpg", 500, 375);
    put_jpeg(root, "PF-dataset-PASCAL/JPEGImages/2009_000002.jpg", 333, 500);
    put_jpeg(root, "PF-dataset-PASCAL/JPEGImages/2009_000003.jpg", 400, 300);
    put_jpeg(root, "PF-dataset-PASCAL/JPEGImages/2009_000004.jpg", 200, 100);
    write_text(root, "PF-dataset-PASCAL/test_pairs_pf_pascal.csv",
               "source_image,target_image,class,XA,YA,XB,YB\n"
               "PF-dataset-PASCAL/JPEGImages/2009_000003.jpg,PF-dataset-PASCAL/JPEGImages/2009_000004.jpg,5,"
               "10;20.5;400,5;6;300,1;2;3,4;5;100\r\n"
               "PF-dataset-PASCAL/JPEGImages/2009_000001.jpg,PF-dataset-PASCAL/JPEGImages/2009_000002.jpg,1,"
               "\"100;200\",\"50;60\",\"30;40\",\"70;80\"\n\n");
    write_text(
        root, "PF-dataset-PASCAL/train_pairs_pf_pascal.csv",
        "source_image,target_image,class,flip\n"
        "PF-dataset-PASCAL/JPEGImages/2009_000001.jpg,PF-dataset-PASCAL/JPEGImages/2009_000002.jpg,1,0\n"
        "PF-dataset-PASCAL/JPEGImages/2009_000002.jpg,PF-dataset-PASCAL/JPEGImages/2009_000001.jpg,1,2\n");
    unsigned char buf[16384];
    double k1[5 * 2] = {
        10, 20, (double)NAN, (double)NAN, 30, 40, 500, 375, 0, 0
    }; /* [5][2], row 1 not annotated */
    double k2[6 * 2] = { 1, 2, 3, 4, (double)NAN, (double)NAN, 7, 8, (double)NAN, 9, 11, 12 };
    size_t n = mat_file(buf, k1, 5, 0, 1);
    write_bytes(root, "PF-dataset-PASCAL/Annotations/aeroplane/2009_000001.mat", buf, n);
    n = mat_file(buf, k2, 6, 0, 0);
    write_bytes(root, "PF-dataset-PASCAL/Annotations/aeroplane/2009_000002.mat", buf, n);
    return root;
}

static void case_pascal_test(void) {
    const char *root = synthetic_pascal();
    sa3d_dataset *ds = NULL;
    sa3d_error err = { 0 };
    sa3d_dataset_params p = sa3d_dataset_params_default();
    p.kind = SA3D_DATASET_PFPASCAL;
    p.strict = 1;
    T_OK(sa3d_dataset_open(&ds, root, &p, &err), &err); /* the parent of PF-dataset-PASCAL */
    if (!ds) return;
    int n = sa3d_dataset_load_split(ds, "test", &err);
    T_CHECK(n == 2);
    if (n != 2) {
        T_FAIL("%s", err.msg);
        sa3d_dataset_close(ds);
        remove_tree(root);
        return;
    }
    const sa3d_pair *a = sa3d_dataset_pair(ds, "test", 0), *b = sa3d_dataset_pair(ds, "test", 1);
    T_CHECK(!strcmp(a->id, "000001-2009_000003-2009_000004:bottle") && !strcmp(a->category, "bottle"));
    T_CHECK(!strcmp(b->id, "000002-2009_000001-2009_000002:aeroplane"));
    T_CHECK(a->n_kps == 3 && a->kp_ids[2] == 2 && a->src_kps[1][0] == 20.5f && a->src_kps[2][1] == 300.0f &&
            a->trg_kps[2][0] == 3.0f && a->trg_kps[2][1] == 100.0f);
    T_CHECK(a->src_size[0] == 400 && a->src_size[1] == 300 && a->trg_size[0] == 200 && a->trg_size[1] == 100);
    T_CHECK(a->trg_bbox[0] == 0.0f && a->trg_bbox[2] == 200.0f && a->trg_bbox[3] == 100.0f);
    T_NEAR((double)a->threshold_base, 200.0, 0.0); /* max(W, H) of the target */
    T_NEAR((double)b->threshold_base, 500.0, 0.0);
    T_CHECK(b->n_kps == 2 && b->src_kps[1][0] == 200.0f && b->trg_kps[1][1] == 80.0f && a->mirror == -1);
    char *ip = sa3d_dataset_image_path(ds, "bottle", "2009_000003");
    T_CHECK(ip && strstr(ip, "PF-dataset-PASCAL/JPEGImages/2009_000003.jpg"));
    free(ip);
    sa3d_dataset_close(ds);
    p.categories = "aeroplane";
    T_OK(sa3d_dataset_open(&ds, root, &p, &err), &err);
    T_CHECK(sa3d_dataset_load_split(ds, "test", &err) == 1);
    sa3d_dataset_close(ds);
    p.categories = "spaceship";
    T_STATUS(sa3d_dataset_open(&ds, root, &p, &err), SA3D_ERR_ARG, &err);
    remove_tree(root);
}

static void case_pascal_trn(void) {
    const char *root = synthetic_pascal();
    sa3d_dataset *ds = NULL;
    sa3d_error err = { 0 };
    sa3d_dataset_params p = sa3d_dataset_params_default();
    p.kind = SA3D_DATASET_PFPASCAL;
    p.strict = 1;
    T_OK(sa3d_dataset_open(&ds, root, &p, &err), &err);
    if (!ds) return;
    const sa3d_image_anno *im = NULL;
    T_OK(sa3d_dataset_image(ds, "aeroplane", "2009_000001", &im, &err), &err); /* compressed .mat */
    if (im) {
        T_CHECK(im->n_slots == 5 && im->visible[0] && !im->visible[1] && im->visible[3] && im->visible[4]);
        T_CHECK(im->kps[2][0] == 30.0f && im->kps[2][1] == 40.0f && im->kps[3][0] == 500.0f &&
                im->width == 500);
        T_CHECK(im->bbox[2] == 500.0f && im->bbox[3] == 375.0f && !strcmp(im->filename, "2009_000001.jpg"));
    }
    T_OK(sa3d_dataset_image(ds, "aeroplane", "2009_000002", &im, &err), &err); /* plain .mat */
    if (im) T_CHECK(im->n_slots == 6 && im->visible[3] && !im->visible[4] && im->kps[5][1] == 12.0f);
    int n = sa3d_dataset_load_split(ds, "trn", &err); /* train_pairs_pf_pascal.csv */
    T_CHECK(n == 2);
    if (n == 2) {
        const sa3d_pair *a = sa3d_dataset_pair(ds, "trn", 0);
        T_CHECK(a->n_kps == 2 && a->kp_ids[0] == 0 && a->kp_ids[1] == 3); /* annotated in both (no NaN) */
        T_CHECK(a->src_kps[1][0] == 500.0f && a->src_kps[1][1] == 375.0f && a->trg_kps[1][0] == 7.0f &&
                a->trg_kps[1][1] == 8.0f && a->trg_kps[0][1] == 2.0f);
        T_NEAR((double)a->threshold_base, 500.0, 0.0);
    } else {
        T_FAIL("%s", err.msg);
    }
    sa3d_dataset_close(ds);
    remove_tree(root);
}

static void case_mat_reader(void) {
    unsigned char buf[16384];
    double k[3 * 2] = { 1, 2, -3, 4, 5, 6 };
    for (int v = 0; v < 3; v++) {
        size_t n = mat_file(buf, k, 3, v == 1, v == 2);
        double *out = NULL;
        int r, c;
        sa3d_error err = { 0 };
        T_OK(sa3d_mat_read_matrix(buf, n, "m.mat", "kps", 128, &out, &r, &c, &err), &err);
        T_CHECK(r == 3 && c == 2 && out && out[2] == -3.0 && out[5] == 6.0);
        sa3d_free(out);
        T_OK(sa3d_mat_read_matrix(buf, n, "m.mat", "bbox", 128, &out, &r, &c, &err), &err);
        T_CHECK(r == 1 && c == 4 && out && out[3] == 40.0);
        sa3d_free(out);
        T_STATUS(sa3d_mat_read_matrix(buf, n, "m.mat", "kpz", 128, &out, &r, &c, &err), SA3D_ERR_FORMAT,
                 &err);
        T_CONTAINS(err.msg, "m.mat");
        T_STATUS(sa3d_mat_read_matrix(buf, n, "m.mat", "kps", 5, &out, &r, &c, &err), SA3D_ERR_FORMAT, &err);
        for (size_t cut = 0; cut < n; cut++) { /* every truncation fails cleanly or finds bbox only */
            sa3d_status s = sa3d_mat_read_matrix(buf, cut, "m.mat", "kps", 128, &out, &r, &c, &err);
            T_CHECK(s == SA3D_ERR_FORMAT && out == NULL);
        }
        for (size_t i = 128; i < n; i++) { /* every flipped byte: an error or some values, never a crash */
            buf[i] ^= 0x5a;
            if (sa3d_mat_read_matrix(buf, n, "m.mat", "kps", 128, &out, &r, &c, &err) == SA3D_OK)
                sa3d_free(out);
            buf[i] ^= 0x5a;
        }
    }
    double *out;
    int r, c;
    sa3d_error err;
    size_t n = mat_file(buf, k, 3, 0, 0);
    size_t m = 128 + mat_element(buf + 128, "kps", k, 0, 0x42030240, 0); /* 0 x 1.1e9: found by fuzzing */
    T_STATUS(sa3d_mat_read_matrix(buf, m, "wide.mat", "kps", 128, &out, &r, &c, &err), SA3D_ERR_FORMAT, &err);
    n = mat_file(buf, k, 3, 0, 0);
    buf[126] = 'M';
    buf[127] = 'I';
    T_STATUS(sa3d_mat_read_matrix(buf, n, "be.mat", "kps", 128, &out, &r, &c, &err), SA3D_ERR_UNSUPPORTED,
             &err);
    memcpy(buf, "MATLAB 7.3 MAT-file", 19);
    T_STATUS(sa3d_mat_read_matrix(buf, n, "h5.mat", "kps", 128, &out, &r, &c, &err), SA3D_ERR_UNSUPPORTED,
             &err);
}

static void case_pascal_bad(void) {
    static const struct {
        const char *row, *field;
    } bad[] = {
        { "a.jpg,b.jpg,21,1,1,1,1", "class" },
        { "a.jpg,b.jpg,x,1,1,1,1", "class" },
        { "a.jpg,b.jpg,1,1;2,1,1,1", "YA" },
        { "a.jpg,b.jpg,1,1;q,1;2,1;2,1;2", "XA" },
        { "a.jpg,b.jpg,1,1,1,1", "fields" },
        { ",b.jpg,1", "source_image" },
        { "PF-dataset-PASCAL/JPEGImages/2009_000001.jpg,PF-dataset-PASCAL/JPEGImages/"
          "2009_000002.jpg,1,501,1,1,1",
          "XA[0]" },
        { "PF-dataset-PASCAL/JPEGImages/2009_000001.jpg,PF-dataset-PASCAL/JPEGImages/"
          "2009_000002.jpg,1,1,1,1,501",
          "YB[0]" },
        { "PF-dataset-PASCAL/JPEGImages/2009_000001.jpg,PF-dataset-PASCAL/JPEGImages/"
          "2009_000099.jpg,1,1,1,1,1",
          "2009_000099.jpg" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *root = synthetic_pascal();
        char csv[2048];
        snprintf(csv, sizeof csv,
                 "source_image,target_image,class,XA,YA,XB,YB\n%s\n"
                 "PF-dataset-PASCAL/JPEGImages/2009_000001.jpg,PF-dataset-PASCAL/JPEGImages/"
                 "2009_000002.jpg,1,1,1,1,1\n",
                 bad[i].row);
        write_text(root, "PF-dataset-PASCAL/val_pairs_pf_pascal.csv", csv);
        for (int strict = 0; strict < 2; strict++) {
            warnings w = { 0 };
            sa3d_dataset *ds = NULL;
            sa3d_error err = { 0 };
            sa3d_dataset_params p = sa3d_dataset_params_default();
            p.kind = SA3D_DATASET_PFPASCAL;
            p.strict = strict;
            p.warn = collect;
            p.warn_user = &w;
            T_OK(sa3d_dataset_open(&ds, root, &p, &err), &err);
            int n = ds ? sa3d_dataset_load_split(ds, "val", &err) : -2;
            const char *msg = strict ? err.msg : w.last;
            if (strict ? n != -1 : (n != 1 || w.n != 1))
                T_FAIL("row %zu strict %d: %d pairs, %d warnings (%s)", i, strict, n, w.n, err.msg);
            if (!strstr(msg, "val_pairs_pf_pascal.csv: line 2") || !strstr(msg, bad[i].field))
                T_FAIL("row %zu: '%s' should name the file, line 2 and '%s'", i, msg, bad[i].field);
            sa3d_dataset_close(ds);
        }
        remove_tree(root);
    }
}

static sa3d_status run_pascal(const char *root, sa3d_error *err) {
    sa3d_dataset *ds = NULL;
    sa3d_dataset_params p = sa3d_dataset_params_default();
    p.kind = SA3D_DATASET_PFPASCAL;
    sa3d_status s = sa3d_dataset_open(&ds, root, &p, err);
    if (!s && sa3d_dataset_load_split(ds, "test", err) < 0) s = err->code;
    if (!s && sa3d_dataset_load_split(ds, "trn", err) < 0) s = err->code;
    if (!s && sa3d_dataset_n_pairs(ds, "trn") != 2) s = sa3d_fail(err, SA3D_ERR_ARG, "wrong count");
    sa3d_dataset_close(ds);
    return s;
}

/* ---- 7. AP-10K ---- */

static void put_ap10k_image(const char *root, const char *fam, const char *spe, const char *id, int w, int h,
                            const int *kps /* [17][3] */) {
    cJSON *j = cJSON_CreateObject();
    double bbox[4] = { 10.5, 20, 100, 150.25 };
    cJSON_AddItemToObject(j, "bbox", cJSON_CreateDoubleArray(bbox, 4));
    cJSON_AddItemToObject(j, "keypoints", cJSON_CreateIntArray(kps, 51));
    cJSON_AddNumberToObject(j, "num_keypoints", 5);
    cJSON_AddNumberToObject(j, "width", w);
    cJSON_AddNumberToObject(j, "height", h);
    cJSON_AddNumberToObject(j, "id", atoi(id));
    cJSON_AddStringToObject(j, "file_name", "000000001234.jpg");
    cJSON_AddStringToObject(j, "name", spe);
    cJSON_AddStringToObject(j, "supercategory", fam);
    char rel[512];
    snprintf(rel, sizeof rel, "ImageAnnotation/%s/%s/%s.json", fam, spe, id);
    write_json(root, rel, j);
    cJSON_Delete(j);
}

static void put_ap10k_pair(const char *root, const char *split, const char *cat, const char *src_rel,
                           const char *trg_rel) {
    char rel[512], text[1024];
    const char *a = strrchr(src_rel, '/') + 1, *b = strrchr(trg_rel, '/') + 1;
    snprintf(rel, sizeof rel, "PairAnnotation/%s/%s-%s:%s.json", split, a, b, cat);
    snprintf(text, sizeof text,
             "{\"src_json_path\": \"data/ap-10k/ImageAnnotation/%s.json\", "
             "\"trg_json_path\": \"data/ap-10k/ImageAnnotation/%s.json\"}",
             src_rel, trg_rel);
    write_text(root, rel, text);
}

static const char *synthetic_ap10k(void) {
    const char *root = make_tmp();
    int k1[51] = { 0 }, k2[51] = { 0 }, k3[51] = { 0 };
    for (int i = 0; i < 17; i++) {
        k1[3 * i] = 10 + i;
        k1[3 * i + 1] = 20 + i;
        k1[3 * i + 2] = i % 2 ? 2 : 0;
        k2[3 * i] = 30 + i;
        k2[3 * i + 1] = 40 + i;
        k2[3 * i + 2] = i % 3 ? 2 : 1;
        k3[3 * i] = 50;
        k3[3 * i + 1] = 60;
        k3[3 * i + 2] = 2;
    }
    put_ap10k_image(root, "Canidae", "dog", "000000000011", 640, 480, k1);
    put_ap10k_image(root, "Canidae", "dog", "000000000012", 300, 200, k2);
    put_ap10k_image(root, "Canidae", "wolf", "000000000021", 400, 400, k3);
    put_ap10k_image(root, "Felidae", "cat", "000000000031", 400, 400, k3);
    put_ap10k_pair(root, "test", "dog", "Canidae/dog/000000000012", "Canidae/dog/000000000011");
    put_ap10k_pair(root, "test", "cat", "Felidae/cat/000000000031", "Felidae/cat/000000000031");
    put_ap10k_pair(root, "test_cross_species", "Canidae", "Canidae/dog/000000000011",
                   "Canidae/wolf/000000000021");
    return root;
}

static void case_ap10k(void) {
    const char *root = synthetic_ap10k();
    sa3d_dataset *ds = NULL;
    sa3d_error err = { 0 };
    sa3d_dataset_params p = sa3d_dataset_params_default();
    p.kind = SA3D_DATASET_AP10K;
    p.strict = 1;
    T_OK(sa3d_dataset_open(&ds, root, &p, &err), &err);
    if (!ds) return;
    int n = sa3d_dataset_load_split(ds, "test", &err);
    T_CHECK(n == 2);
    const sa3d_pair *pr = sa3d_dataset_find_pair(ds, "test", "000000000012-000000000011:dog");
    T_CHECK(pr != NULL);
    if (pr) {
        T_CHECK(!strcmp(pr->src, "000000000012") && !strcmp(pr->trg, "000000000011") &&
                !strcmp(pr->category, "dog"));
        /* visible in both: odd ids (k1) and v > 0 in k2 (all, v = 1 counts as GeoAware's v / 2 > 0) */
        T_CHECK(pr->n_kps == 8 && pr->kp_ids[0] == 1 && pr->kp_ids[7] == 15);
        T_CHECK(pr->src_kps[0][0] == 31.0f && pr->trg_kps[0][1] == 21.0f);
        T_CHECK(pr->trg_bbox[0] == 10.5f && pr->trg_bbox[2] == 110.5f && pr->trg_bbox[3] == 170.25f);
        T_NEAR((double)pr->threshold_base, 150.25, 0.0); /* max(w, h) of the target box */
        T_CHECK(pr->src_size[0] == 300 && pr->trg_size[1] == 480 && pr->truncation == -1);
    }
    T_CHECK(sa3d_dataset_load_split(ds, "test_cross_species", &err) == 1);
    const sa3d_image_anno *a = NULL;
    T_OK(sa3d_dataset_image(ds, "wolf", "000000000021", &a, &err), &err);
    if (a)
        T_CHECK(a->n_slots == 17 && a->visible[16] && !strcmp(a->supercategory, "Canidae") &&
                !strcmp(a->category, "wolf"));
    sa3d_dataset_close(ds);
    /* --categories names a species, a family or "all" of the dataset; a misspelt one is refused, named (it selected
     * nothing, silently) */
    p.categories = "dog,Felidae,all";
    T_OK(sa3d_dataset_open(&ds, root, &p, &err), &err);
    T_CHECK(sa3d_dataset_load_split(ds, "test", &err) == 1);   /* the dog pair: the cat pair is named by species */
    sa3d_dataset_close(ds);
    p.categories = "dog,wolff";
    T_STATUS(sa3d_dataset_open(&ds, root, &p, &err), SA3D_ERR_ARG, &err);
    T_CONTAINS(err.msg, "'wolff'");
    p.categories = NULL;
    T_OK(sa3d_dataset_open(&ds, root, &p, &err), &err); /* cold lookups by species, family, "all" */
    T_OK(sa3d_dataset_image(ds, "dog", "000000000011", &a, &err), &err);
    T_OK(sa3d_dataset_image(ds, "Felidae", "000000000031", &a, &err), &err);
    T_OK(sa3d_dataset_image(ds, "all", "000000000021", &a, &err), &err);
    T_STATUS(sa3d_dataset_image(ds, "dog", "000000000099", &a, &err), SA3D_ERR_IO, &err);
    char *ip = sa3d_dataset_image_path(ds, "Canidae", "000000000012");
    char want[1024];
    snprintf(want, sizeof want, "%s/JPEGImages/Canidae/dog/000000000012.jpg", root);
    T_CHECK(ip && !strcmp(ip, want));
    free(ip);
    const char *const *ids;
    T_CHECK(sa3d_dataset_split_images(ds, "test", "cat", &ids, &err) == 1 && !strcmp(ids[0], "000000000031"));
    sa3d_dataset_close(ds);

    /* malformed: a pair pointing nowhere, a bad image record, a bad pair record */
    put_ap10k_pair(root, "val", "dog", "Canidae/dog/000000000012", "Canidae/dog/000000000077");
    write_text(root, "PairAnnotation/val/x-y:dog.json",
               "{\"src_json_path\": \"nowhere.json\", \"trg_json_path\": 3}");
    write_text(root, "ImageAnnotation/Canidae/dog/000000000013.json",
               "{\"width\": 10, \"height\": 10, \"bbox\": [0, 0, 5, 5], "
               "\"keypoints\": [11, 1, 2]}");
    put_ap10k_pair(root, "val", "dog", "Canidae/dog/000000000013", "Canidae/dog/000000000011");
    put_ap10k_pair(root, "val", "dog", "Canidae/dog/000000000011", "Canidae/dog/000000000012");
    warnings w = { 0 };
    p.strict = 0;
    p.warn = collect;
    p.warn_user = &w;
    T_OK(sa3d_dataset_open(&ds, root, &p, &err), &err);
    T_CHECK(sa3d_dataset_load_split(ds, "val", &err) == 1 && w.n == 3);
    sa3d_dataset_close(ds);
    p.strict = 1;
    T_OK(sa3d_dataset_open(&ds, root, &p, &err), &err);
    T_CHECK(sa3d_dataset_load_split(ds, "val", &err) == -1);
    sa3d_dataset_close(ds);
    static const struct {
        const char *text, *field;
    } bad[] = {
        { "{\"src_json_path\": \"nowhere.json\", \"trg_json_path\": \"a/ImageAnnotation/F/s/1.json\"}",
          "src_json_path" },
        { "{\"src_json_path\": \"a/ImageAnnotation/F/s/1.json\"}", "trg_json_path" },
        { "{\"src_json_path\": \"ImageAnnotation/F/../1.json\", \"trg_json_path\": "
          "\"a/ImageAnnotation/F/s/1.json\"}",
          "src_json_path" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char s[200], t[200];
        T_STATUS(sa3d_ap10k_parse_pair(bad[i].text, strlen(bad[i].text), "p.json", s, t, sizeof s, &err),
                 SA3D_ERR_FORMAT, &err);
        T_CONTAINS(err.msg, bad[i].field);
    }
    const char *img = "{\"width\": 10, \"height\": 10, \"bbox\": [0, 0, 5, 5], \"keypoints\": [1, 1, 2, 3]}";
    sa3d_image_anno an;
    T_STATUS(sa3d_ap10k_parse_image(img, strlen(img), "i.json", NULL, NULL, NULL, &an, &err), SA3D_ERR_FORMAT,
             &err);
    T_CONTAINS(err.msg, "keypoints");
    img = "{\"width\": 10, \"height\": 10, \"bbox\": [0, 0, -5, 5], \"keypoints\": []}";
    T_STATUS(sa3d_ap10k_parse_image(img, strlen(img), "i.json", NULL, NULL, NULL, &an, &err), SA3D_ERR_FORMAT,
             &err);
    T_CONTAINS(err.msg, "bbox");
    remove_tree(root);
}

static sa3d_status run_ap10k(const char *root, sa3d_error *err) {
    sa3d_dataset *ds = NULL;
    sa3d_dataset_params p = sa3d_dataset_params_default();
    p.kind = SA3D_DATASET_AP10K;
    const sa3d_image_anno *a;
    sa3d_status s = sa3d_dataset_open(&ds, root, &p, err);
    if (!s && sa3d_dataset_load_split(ds, "test", err) < 0) s = err->code;
    if (!s && sa3d_dataset_load_split(ds, "test_cross_species", err) < 0) s = err->code;
    if (!s) s = sa3d_dataset_image(ds, "Felidae", "000000000031", &a, err);
    sa3d_dataset_close(ds);
    if (!s) { /* a cold lookup walks the folder tree */
        s = sa3d_dataset_open(&ds, root, &p, err);
        if (!s) s = sa3d_dataset_image(ds, "all", "000000000021", &a, err);
        sa3d_dataset_close(ds);
    }
    return s;
}

static void case_faults_other(void) {
    const char *root = synthetic_pascal();
    fault_loop("PF-PASCAL open + test + trn", run_pascal, root);
    remove_tree(root);
    root = synthetic_ap10k();
    fault_loop("AP-10K open + splits + images", run_ap10k, root);
    remove_tree(root);
}

int main(int argc, char **argv) {
    static const t_case cases[] = {
        { "1.1", "real SPair pair records: every field as in the JSON and the image records", case_sample_pairs },
        { "1.2", "real SPair image records: every field as in the JSON", case_sample_images },
        { "1.3", "PCK threshold and keypoints equal pck_threshold.json", case_pck_threshold },
        { "1.4", "split image lists of the sample: sorted src+trg set", case_sample_split_images },
        { "2.1", "flip maps: involutions with METHOD.md 1.5 slot counts", case_flip_involution },
        { "2.2", "flip maps: specific swaps of METHOD.md 1.6", case_flip_pairs },
        { "2.3", "the 18 SPair categories, sorted", case_categories },
        { "2.4", "flip maps of PF-PASCAL (per class) and AP-10K (17 keypoints)", case_flip_other_kinds },
        { "3.1", "synthetic SPair: sorted pairs, split images, find_pair", case_synthetic_lists },
        { "3.2", "synthetic SPair: category filter, Layout lists", case_synthetic_filter_layout },
        { "3.3", "synthetic SPair: image records and paths", case_synthetic_images },
        { "4.1", "malformed pair records, lenient: skipped with a warning", case_bad_pairs_lenient },
        { "4.2", "malformed pair records, strict: SA3D_ERR_FORMAT", case_bad_pairs_strict },
        { "4.3", "boundary values accepted (x == W, y == H, 0, wide box)", case_boundaries },
        { "4.4", "malformed image records: SA3D_ERR_FORMAT", case_bad_images },
        { "4.5", "missing roots and splits, bad arguments", case_bad_roots },
        { "5.1", "allocation failures on SPair open + load: clean, no leak", case_faults_spair },
        { "5.2", "allocation failures on PF-PASCAL and AP-10K", case_faults_other },
        { "6.1", "PF-PASCAL test list with inline keypoints", case_pascal_test },
        { "6.2", "PF-PASCAL trn list with .mat keypoints", case_pascal_trn },
        { "6.3", "MAT reader: storage types, compression, hostile bytes", case_mat_reader },
        { "6.4", "PF-PASCAL malformed rows, lenient and strict", case_pascal_bad },
        { "7.1", "AP-10K pairs, image records, malformed records", case_ap10k },
    };
    return t_run(cases, (int)(sizeof cases / sizeof cases[0]), argc, argv);
}
