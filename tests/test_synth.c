/* Synthetic SPair-71k generator (synth.h): parameter checks, the records against the release's field layout (the
 * spair-sample fixture), images, masks and feature files, byte-for-byte determinism (also across thread counts
 * and write flags), and the end-to-end path it exists for: dataset reader -> feature provider (import) ->
 * sa3d_match_baseline -> PCK, whose answer the features make known (100%), and scrambled or mirrored features
 * whose answer is known too. */
#define _XOPEN_SOURCE 700
#include <cjson/cJSON.h>
#include <ftw.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "base/base.h"
#include "semalign3d/data.h"
#include "semalign3d/eval.h"
#include "semalign3d/image.h"
#include "semalign3d/match.h"
#include "semalign3d/providers.h"
#include "semalign3d/safetensors.h"
#include "semalign3d/synth.h"
#include "t.h"
#include "t_files.h"

/* A prediction of sa3d_match_baseline is the centre of the argmax cell up to the soft-argmax's weight on the
 * other cells, below e^-20 of a cell here (background cosine <= 0.6 vs >= 0.98 at the code, beta 0.02), and
 * float rounding of the pixel <-> square maps: 1e-3 original pixels is far above both. */
#define CELL_CENTRE_TOL 1e-3

/* ---- helpers ---------------------------------------------------------------------------------------------- */

static int same_file(const char *a, const char *b);

static cJSON *load_json(const char *path) {
    char *text = slurp(path, NULL);
    if (!text) return NULL;
    cJSON *j = cJSON_Parse(text);
    sa3d_free(text);
    if (!j) T_FAIL("%s: bad JSON", path);
    return j;
}

/* "k1,k2,..." of an object's keys, in file order. */
static void key_sequence(const cJSON *o, char *buf, size_t n) {
    buf[0] = '\0';
    for (const cJSON *c = o ? o->child : NULL; c; c = c->next) {
        strncat(buf, c->string, n - strlen(buf) - 1);
        strncat(buf, ",", n - strlen(buf) - 1);
    }
}

static int json_int(const cJSON *o, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(it) || it->valuedouble != (double)(int)it->valuedouble) {
        T_FAIL("%s: not an integer", key);
        return -1;
    }
    return it->valueint;
}

/* The dataset most cases read: 6 categories (bus with its unused ids 8, 9), generated once. */
static char g_root[512];
static sa3d_synth_spair_params main_params(void) {
    sa3d_synth_spair_params p = sa3d_synth_spair_params_default();
    p.seed = 7;
    p.n_categories = 6;
    p.images_per_category = 5;
    p.pairs_trn = 20;
    p.pairs_val = 6;
    p.pairs_test = 30;
    return p;
}
static const char *main_root(void) {
    if (g_root[0]) return g_root;
    make_tmp(g_root, sizeof g_root);
    sa3d_error err;
    sa3d_synth_spair_params p = main_params();
    double t0 = sa3d_now();
    sa3d_status s = sa3d_synth_spair_write(g_root, &p, &err);
    if (s) T_FAIL("sa3d_synth_spair_write: %s", err.msg);
    else printf("  generated %s in %.2f s\n", g_root, sa3d_now() - t0);
    return g_root;
}

/* ---- 1. parameters ----------------------------------------------------------------------------------------- */

static void case_params(void) {
    sa3d_synth_spair_params p = sa3d_synth_spair_params_default();
    T_CHECK(p.n_categories == 2 && p.feature_channels == 32 && p.feature_grid == 60 && p.input_size == 840);
    T_CHECK(p.write_images && p.write_segmentations && p.write_features && p.write_flip_features);
    char dir[512];
    make_tmp(dir, sizeof dir);
    char sub[600];
    snprintf(sub, sizeof sub, "%s/new", dir);
    sa3d_error err;
    struct { const char *field; sa3d_synth_spair_params p; } bad[8];
    for (int i = 0; i < 8; i++) bad[i].p = p;
    bad[0].field = "n_categories"; bad[0].p.n_categories = 19;
    bad[1].field = "images_per_category"; bad[1].p.images_per_category = 1;
    bad[2].field = "max_side"; bad[2].p.max_side = p.min_side - 1;
    bad[3].field = "input_size"; bad[3].p.input_size = 10;
    bad[4].field = "kp_visible"; bad[4].p.kp_visible = 0.0f;
    bad[5].field = "feature_noise"; bad[5].p.feature_noise = -1.0f;
    bad[6].field = "n_threads"; bad[6].p.n_threads = -1;
    bad[7].field = "write_images"; bad[7].p.write_images = 7;
    for (int i = 0; i < 8; i++) {
        T_STATUS(sa3d_synth_spair_write(sub, &bad[i].p, &err), SA3D_ERR_ARG, &err);
        T_CONTAINS(err.msg, bad[i].field);
    }
    T_CHECK(!sa3d_dir_exists(sub));   /* nothing created for bad parameters */
    /* a non-empty root is refused, and named */
    char file[700];
    snprintf(file, sizeof file, "%s/other.txt", dir);
    FILE *f = fopen(file, "w");
    if (f) fclose(f);
    T_STATUS(sa3d_synth_spair_write(dir, &p, &err), SA3D_ERR_ARG, &err);
    T_CONTAINS(err.msg, dir);
    T_CHECK(!sa3d_dir_exists(sub));
    char *j = sa3d_synth_spair_params_json(&p);
    cJSON *o = j ? cJSON_Parse(j) : NULL;
    T_CHECK(o && json_int(o, "feature_channels") == 32 && cJSON_GetArraySize(cJSON_GetObjectItem(o, "categories")) == 2);
    cJSON_Delete(o);
    free(j);
    rm_tree(dir);
}

/* Fault injection: fail the Nth allocation, N = 1, 2, ... until the run succeeds; each failure is a clean
 * SA3D_ERR_NOMEM with a message, leaks nothing and leaves no synth_params.json (the completion marker). */
static void case_faults(void) {
    sa3d_synth_spair_params p = sa3d_synth_spair_params_default();
    p.n_categories = 1;
    p.images_per_category = 2;
    p.pairs_trn = p.pairs_val = p.pairs_test = 1;
    p.min_side = 32;
    p.max_side = 40;
    p.feature_channels = 4;
    p.feature_grid = 4;
    p.input_size = 56;
    p.n_threads = 1;
    sa3d_error err;
    int n, ok = 0;
    for (n = 1; n < 10000 && !ok; n++) {
        char dir[512], marker[600];
        make_tmp(dir, sizeof dir);
        snprintf(marker, sizeof marker, "%s/synth_params.json", dir);
        long live = sa3d_alloc_live_blocks();
        sa3d_alloc_fail_after(n);
        sa3d_status s = sa3d_synth_spair_write(dir, &p, &err);
        sa3d_alloc_fail_after(0);
        if (s == SA3D_OK) {
            ok = 1;
            T_CHECK(sa3d_file_exists(marker));
        } else {
            if (s != SA3D_ERR_NOMEM || !err.msg[0]) T_FAIL("allocation %d: %s (%s)", n, sa3d_status_name(s), err.msg);
            T_CHECK(!sa3d_file_exists(marker));
        }
        if (sa3d_alloc_live_blocks() != live) T_FAIL("allocation %d: %ld blocks leaked", n, sa3d_alloc_live_blocks() - live);
        rm_tree(dir);
    }
    printf("  succeeded once allocation %d no longer failed\n", n - 1);
    T_CHECK(ok);
}

/* sa3d_jpeg_write (added for the generator): RGB and grey decode back at their size and close to the input,
 * the same input gives the same bytes, bad arguments are SA3D_ERR_ARG, an unwritable path SA3D_ERR_IO with no
 * file left. */
static void case_jpeg_write(void) {
    char dir[512], path[700], path2[700];
    make_tmp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/a.jpg", dir);
    snprintf(path2, sizeof path2, "%s/b.jpg", dir);
    enum { W = 37, H = 23 };
    static uint8_t rgb[H][W][3], grey[H][W];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            rgb[y][x][0] = (uint8_t)(4 * x);
            rgb[y][x][1] = (uint8_t)(8 * y);
            rgb[y][x][2] = 128;
            grey[y][x] = (uint8_t)(3 * x + 2 * y);
        }
    sa3d_error err;
    for (int ch = 1; ch <= 3; ch += 2) {
        const uint8_t *px = ch == 3 ? &rgb[0][0][0] : &grey[0][0];
        T_OK(sa3d_jpeg_write(path, px, W, H, ch, 95, &err), &err);
        T_OK(sa3d_jpeg_write(path2, px, W, H, ch, 95, &err), &err);
        T_CHECK(same_file(path, path2));
        sa3d_image img = { 0 };
        T_OK(sa3d_image_load(&img, path, &err), &err);
        T_CHECK(img.w == W && img.h == H);
        double max_d = 0.0;
        for (int i = 0; img.rgb && i < W * H; i++)
            for (int c = 0; c < 3; c++) {
                double d = fabs((double)img.rgb[3 * i + c] - (double)px[ch * i + (ch == 3 ? c : 0)]);
                if (d > max_d) max_d = d;
            }
        printf("  %d channel(s): max |decoded - input| %.0f levels (quality 95)\n", ch, max_d);
        T_CHECK(max_d <= 16.0);
        sa3d_image_free(&img);
    }
    T_STATUS(sa3d_jpeg_write(path, &grey[0][0], W, H, 2, 90, &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_jpeg_write(path, &grey[0][0], 0, H, 1, 90, &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_jpeg_write(path, &grey[0][0], W, H, 1, 0, &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_jpeg_write(path, NULL, W, H, 1, 90, &err), SA3D_ERR_ARG, &err);
    char bad[800];
    snprintf(bad, sizeof bad, "%s/missing/c.jpg", dir);
    T_STATUS(sa3d_jpeg_write(bad, &grey[0][0], W, H, 1, 90, &err), SA3D_ERR_IO, &err);
    T_CONTAINS(err.msg, "missing/c.jpg");
    T_CHECK(!sa3d_file_exists(bad));
    rm_tree(dir);
}

/* ---- 2. the files ---------------------------------------------------------------------------------------------- */

static void case_tree(void) {
    const char *root = main_root();
    sa3d_synth_spair_params p = main_params();
    int n;
    char **files = list_files(root, &n);
    int counts[8] = { 0 };
    const char *prefixes[8] = { "ImageAnnotation/", "JPEGImages/", "Segmentation/", "Features/", "PairAnnotation/trn/",
                                "PairAnnotation/val/", "PairAnnotation/test/", "Layout/large/" };
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 8; k++) counts[k] += !strncmp(files[i], prefixes[k], strlen(prefixes[k]));
    int imgs = p.n_categories * p.images_per_category;
    printf("  %d files: %d image records, %d jpg, %d png, %d features, pairs %d/%d/%d\n", n, counts[0], counts[1],
           counts[2], counts[3], counts[4], counts[5], counts[6]);
    T_CHECK(counts[0] == imgs && counts[1] == imgs && counts[2] == imgs && counts[3] == imgs);
    T_CHECK(counts[4] == p.pairs_trn && counts[5] == p.pairs_val && counts[6] == p.pairs_test && counts[7] == 3);
    T_CHECK(n == 4 * imgs + p.pairs_trn + p.pairs_val + p.pairs_test + 3 + 1);   /* + synth_params.json */
    for (int i = 0; i < n; i++) T_CHECK(!strstr(files[i], ".tmp."));            /* no temp file left */
    free_list(files, n);
    char path[1024];
    snprintf(path, sizeof path, "%s/Layout/large/test.txt", root);
    char *text = slurp(path, NULL);
    int lines = 0;
    for (char *c = text; c && *c; c++) lines += *c == '\n';
    T_CHECK(lines == p.pairs_test);
    T_CHECK(text && !strncmp(text, "000001-synth_", 13) && strstr(text, ":aeroplane\n"));
    sa3d_free(text);
}

/* Every image record: the fixture's keys in the fixture's order, 30 kps keys, values in range. */
static void case_image_records(void) {
    const char *root = main_root();
    sa3d_synth_spair_params p = main_params();
    char path[1024], want[1024], got[1024];
    snprintf(path, sizeof path, "%s/spair-sample/ImageAnnotation/aeroplane/2008_002719.json", t_fixtures_root());
    cJSON *ref = load_json(path);
    if (!ref) return;
    key_sequence(ref, want, sizeof want);
    int visible = 0, slots_seen = 0;
    for (int c = 0; c < p.n_categories; c++) {
        const char *cat = sa3d_spair_category(c);
        int flip[SA3D_MAX_KPS], slots = sa3d_spair_flip_map(cat, flip);
        for (int i = 0; i < p.images_per_category; i++) {
            char id[32];
            snprintf(id, sizeof id, "synth_%06d", c * p.images_per_category + i + 1);
            snprintf(path, sizeof path, "%s/ImageAnnotation/%s/%s.json", root, cat, id);
            cJSON *o = load_json(path);
            if (!o) continue;
            key_sequence(o, got, sizeof got);
            if (strcmp(want, got)) T_FAIL("%s: keys\n  %s\nexpected\n  %s", path, got, want);
            char fn[64];
            snprintf(fn, sizeof fn, "%s.jpg", id);
            const cJSON *fnj = cJSON_GetObjectItem(o, "filename"), *catj = cJSON_GetObjectItem(o, "category");
            T_CHECK(cJSON_IsString(fnj) && !strcmp(fnj->valuestring, fn));
            T_CHECK(cJSON_IsString(catj) && !strcmp(catj->valuestring, cat));
            int W = json_int(o, "image_width"), H = json_int(o, "image_height"), S = W > H ? W : H;
            T_CHECK(W >= p.min_side && W <= p.max_side && H >= p.min_side && H <= p.max_side);
            T_CHECK(json_int(o, "image_depth") == 3);
            const cJSON *bb = cJSON_GetObjectItem(o, "bndbox");
            int b[4];
            for (int k = 0; k < 4; k++) b[k] = cJSON_GetArrayItem(bb, k)->valueint;
            T_CHECK(b[0] >= 0 && b[1] >= 0 && b[2] <= W && b[3] <= H && b[0] < b[2] && b[1] < b[3]);
            int side = b[2] - b[0] > b[3] - b[1] ? b[2] - b[0] : b[3] - b[1];
            T_CHECK(2 * side >= S);                                              /* bbox >= 50% of S */
            T_CHECK(0.1 * side > 2.0 * S / 60.0);                               /* a cell << 0.1 bbox */
            T_CHECK(json_int(o, "truncated") == (b[0] == 0 || b[1] == 0 || b[2] == W || b[3] == H));
            const cJSON *pose = cJSON_GetObjectItem(o, "pose");
            T_CHECK(cJSON_IsString(pose) && (!strcmp(pose->valuestring, "Left") || !strcmp(pose->valuestring, "Right")));
            int az = json_int(o, "azimuth_id");
            T_CHECK(az >= 0 && az <= 7);
            const cJSON *kps = cJSON_GetObjectItem(o, "kps");
            T_CHECK(cJSON_GetArraySize(kps) == 30);
            int k = 0, n_vis = 0;
            for (const cJSON *it = kps ? kps->child : NULL; it; it = it->next, k++) {
                char key[16];
                snprintf(key, sizeof key, "%d", k);
                T_CHECK(!strcmp(it->string, key));
                if (cJSON_IsNull(it)) continue;
                n_vis++;
                T_CHECK(k < slots && !(c == 5 && (k == 8 || k == 9)));           /* bus 8, 9 unused */
                int x = cJSON_GetArrayItem(it, 0)->valueint, y = cJSON_GetArrayItem(it, 1)->valueint;
                T_CHECK(cJSON_GetArraySize(it) == 2 && x >= b[0] && x <= b[2] && y >= b[1] && y <= b[3]);
                T_CHECK(x >= 0 && x < W && y >= 0 && y < H);
            }
            T_CHECK(n_vis > 0);
            visible += n_vis;
            slots_seen += slots;
            cJSON_Delete(o);
        }
    }
    printf("  %d of %d slots visible\n", visible, slots_seen);
    cJSON_Delete(ref);
}

/* Every pair record: the fixture's keys in order; kps_ids = ids visible in both images, increasing. */
static void case_pair_records(void) {
    const char *root = main_root();
    char path[2048], want[1024], got[1024];
    snprintf(path, sizeof path, "%s/spair-sample/PairAnnotation/test/000001-2008_002719-2008_004100:aeroplane.json",
             t_fixtures_root());
    cJSON *ref = load_json(path);
    if (!ref) return;
    key_sequence(ref, want, sizeof want);
    static const char *splits[3] = { "trn", "val", "test" };
    long kps_total = 0, pairs = 0;
    for (int sp = 0; sp < 3; sp++) {
        snprintf(path, sizeof path, "%s/Layout/large/%s.txt", root, splits[sp]);
        char *list = slurp(path, NULL), *save = NULL;
        int num = 0;
        for (char *line = list ? strtok_r(list, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
            num++;
            snprintf(path, sizeof path, "%s/PairAnnotation/%s/%s.json", root, splits[sp], line);
            cJSON *o = load_json(path);
            if (!o) continue;
            key_sequence(o, got, sizeof got);
            if (strcmp(want, got)) T_FAIL("%s: keys\n  %s\nexpected\n  %s", path, got, want);
            T_CHECK(json_int(o, "pair_id") == num);
            T_CHECK(!strcmp(cJSON_GetObjectItem(o, "filename")->valuestring, line));
            const char *cat = cJSON_GetObjectItem(o, "category")->valuestring;
            char src[64], trg[64];
            snprintf(src, sizeof src, "%s", cJSON_GetObjectItem(o, "src_imname")->valuestring);
            snprintf(trg, sizeof trg, "%s", cJSON_GetObjectItem(o, "trg_imname")->valuestring);
            char expect[200];
            *strrchr(src, '.') = '\0';
            *strrchr(trg, '.') = '\0';
            snprintf(expect, sizeof expect, "%06d-%s-%s:%s", num, src, trg, cat);
            T_CHECK(!strcmp(expect, line) && strcmp(src, trg));
            /* against the two image records */
            cJSON *im[2];
            for (int s = 0; s < 2; s++) {
                snprintf(path, sizeof path, "%s/ImageAnnotation/%s/%s.json", root, cat, s ? trg : src);
                im[s] = load_json(path);
            }
            if (im[0] && im[1]) {
                const char *side[2] = { "src", "trg" };
                for (int s = 0; s < 2; s++) {
                    char key[32];
                    snprintf(key, sizeof key, "%s_imsize", side[s]);
                    const cJSON *sz = cJSON_GetObjectItem(o, key);
                    T_CHECK(cJSON_GetArraySize(sz) == 3 && cJSON_GetArrayItem(sz, 0)->valueint == json_int(im[s], "image_width") &&
                            cJSON_GetArrayItem(sz, 1)->valueint == json_int(im[s], "image_height") &&
                            cJSON_GetArrayItem(sz, 2)->valueint == 3);
                    snprintf(key, sizeof key, "%s_bndbox", side[s]);
                    char *a = cJSON_PrintUnformatted(cJSON_GetObjectItem(o, key));
                    char *b = cJSON_PrintUnformatted(cJSON_GetObjectItem(im[s], "bndbox"));
                    T_CHECK(a && b && !strcmp(a, b));
                    free(a);
                    free(b);
                    snprintf(key, sizeof key, "%s_pose", side[s]);
                    T_CHECK(!strcmp(cJSON_GetObjectItem(o, key)->valuestring, cJSON_GetObjectItem(im[s], "pose")->valuestring));
                }
                const cJSON *ids = cJSON_GetObjectItem(o, "kps_ids"), *sk = cJSON_GetObjectItem(o, "src_kps"),
                            *tk = cJSON_GetObjectItem(o, "trg_kps");
                const cJSON *k0 = cJSON_GetObjectItem(im[0], "kps"), *k1 = cJSON_GetObjectItem(im[1], "kps");
                int n = cJSON_GetArraySize(ids), j = 0;
                T_CHECK(n > 0 && cJSON_GetArraySize(sk) == n && cJSON_GetArraySize(tk) == n);
                for (int k = 0; k < 30; k++) {
                    char key[16];
                    snprintf(key, sizeof key, "%d", k);
                    const cJSON *a = cJSON_GetObjectItem(k0, key), *b = cJSON_GetObjectItem(k1, key);
                    if (cJSON_IsNull(a) || cJSON_IsNull(b)) continue;
                    const cJSON *id = cJSON_GetArrayItem(ids, j);
                    T_CHECK(cJSON_IsString(id) && !strcmp(id->valuestring, key));
                    char *x = cJSON_PrintUnformatted(a), *y = cJSON_PrintUnformatted(cJSON_GetArrayItem(sk, j));
                    char *u = cJSON_PrintUnformatted(b), *v = cJSON_PrintUnformatted(cJSON_GetArrayItem(tk, j));
                    T_CHECK(x && y && u && v && !strcmp(x, y) && !strcmp(u, v));
                    free(x); free(y); free(u); free(v);
                    j++;
                }
                T_CHECK(j == n);
                kps_total += n;
                int tr = json_int(im[0], "truncated") + 2 * json_int(im[1], "truncated");
                int oc = json_int(im[0], "occluded") + 2 * json_int(im[1], "occluded");
                T_CHECK(json_int(o, "truncation") == tr && json_int(o, "occlusion") == oc);
                int mirror = strcmp(cJSON_GetObjectItem(im[0], "pose")->valuestring,
                                    cJSON_GetObjectItem(im[1], "pose")->valuestring) != 0;
                T_CHECK(json_int(o, "mirror") == mirror);
                int vp = json_int(o, "viewpoint_variation"), sc = json_int(o, "scale_variation");
                T_CHECK(vp >= 0 && vp <= 2 && sc >= 0 && sc <= 2);
            }
            cJSON_Delete(im[0]);
            cJSON_Delete(im[1]);
            cJSON_Delete(o);
            pairs++;
        }
        sa3d_free(list);
    }
    printf("  %ld pairs, %.1f keypoints per pair\n", pairs, pairs ? (double)kps_total / (double)pairs : 0.0);
    T_CHECK(pairs == 56);
    cJSON_Delete(ref);
}

/* JPEG and PNG decode to the record's size; keypoints lie on the object; feature files have the shape and
 * metadata of `semalign3d features`. */
static void case_pixels_and_features(void) {
    const char *root = main_root();
    sa3d_synth_spair_params p = main_params();
    sa3d_error err;
    for (int c = 0; c < p.n_categories; c++) {
        const char *cat = sa3d_spair_category(c);
        for (int i = 0; i < p.images_per_category; i++) {
            char id[32], path[1024];
            snprintf(id, sizeof id, "synth_%06d", c * p.images_per_category + i + 1);
            snprintf(path, sizeof path, "%s/ImageAnnotation/%s/%s.json", root, cat, id);
            cJSON *o = load_json(path);
            if (!o) continue;
            int W = json_int(o, "image_width"), H = json_int(o, "image_height");
            sa3d_image img = { 0 }, mask = { 0 };
            snprintf(path, sizeof path, "%s/JPEGImages/%s/%s.jpg", root, cat, id);
            T_OK(sa3d_image_load(&img, path, &err), &err);
            T_CHECK(img.w == W && img.h == H);
            snprintf(path, sizeof path, "%s/Segmentation/%s/%s.png", root, cat, id);
            T_OK(sa3d_image_load(&mask, path, &err), &err);
            T_CHECK(mask.w == W && mask.h == H);
            long object = 0;
            for (long q = 0; mask.rgb && q < (long)W * H; q++) {
                T_CHECK(mask.rgb[3 * q] <= 1);
                object += mask.rgb[3 * q];
            }
            T_CHECK(object > (long)W * H / 10);
            const cJSON *kps = cJSON_GetObjectItem(o, "kps");
            for (const cJSON *it = kps ? kps->child : NULL; it && mask.rgb; it = it->next) {
                if (cJSON_IsNull(it)) continue;
                int x = cJSON_GetArrayItem(it, 0)->valueint, y = cJSON_GetArrayItem(it, 1)->valueint;
                T_CHECK(mask.rgb[3 * ((size_t)y * W + x)] == 1);
            }
            sa3d_image_free(&img);
            sa3d_image_free(&mask);
            cJSON_Delete(o);

            snprintf(path, sizeof path, "%s/Features/%s/%s.features.safetensors", root, cat, id);
            sa3d_safetensors *st = NULL;
            T_OK(sa3d_st_open(&st, path, &err), &err);
            if (!st) continue;
            for (int f = 0; f < 2; f++) {
                const sa3d_st_tensor *t = sa3d_st_find(st, f ? "feature_map_flip" : "feature_map");
                T_CHECK(t && t->dtype == SA3D_DTYPE_F32 && t->ndim == 3 && t->shape[0] == p.feature_channels &&
                        t->shape[1] == p.feature_grid && t->shape[2] == p.feature_grid);
            }
            const char *size = sa3d_st_metadata(st, "size"), *flip = sa3d_st_metadata(st, "flip");
            T_CHECK(size && !strcmp(size, "840") && flip && !strcmp(flip, "1") && sa3d_st_metadata(st, "model_id") &&
                    sa3d_st_metadata(st, "semalign3d_version") && sa3d_st_metadata(st, "convention"));
            sa3d_st_close(st);
        }
    }
}

/* ---- 3. determinism ---------------------------------------------------------------------------------------------- */

static int same_file(const char *a, const char *b) {
    size_t la, lb;
    char *x = slurp(a, &la), *y = slurp(b, &lb);
    int same = x && y && la == lb && !memcmp(x, y, la);
    sa3d_free(x);
    sa3d_free(y);
    return same;
}

/* Two runs, 1 and 2 threads: the same file list and every file byte-identical. */
static void case_determinism(void) {
    char a[512], b[512];
    make_tmp(a, sizeof a);
    make_tmp(b, sizeof b);
    sa3d_error err;
    sa3d_synth_spair_params p = sa3d_synth_spair_params_default();
    p.seed = 42;
    p.n_threads = 1;
    T_OK(sa3d_synth_spair_write(a, &p, &err), &err);
    p.n_threads = 2;
    T_OK(sa3d_synth_spair_write(b, &p, &err), &err);
    int na, nb, differ = 0;
    char **la = list_files(a, &na);
    char **lb = list_files(b, &nb);
    T_CHECK(na == nb && na > 0);
    for (int i = 0; i < na && i < nb; i++) {
        char pa[1024], pb[1024];
        snprintf(pa, sizeof pa, "%s/%s", a, la[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, lb[i]);
        if (strcmp(la[i], lb[i]) || !same_file(pa, pb)) {
            if (!differ) T_FAIL("%s differs from %s", pa, pb);
            differ++;
        }
    }
    printf("  %d files compared, %d differ\n", na, differ);
    free_list(la, na);
    free_list(lb, nb);
    /* another seed changes the content */
    char c[512];
    make_tmp(c, sizeof c);
    p.seed = 43;
    T_OK(sa3d_synth_spair_write(c, &p, &err), &err);
    char pa[1024], pc[1024];
    snprintf(pa, sizeof pa, "%s/ImageAnnotation/aeroplane/synth_000001.json", a);
    snprintf(pc, sizeof pc, "%s/ImageAnnotation/aeroplane/synth_000001.json", c);
    T_CHECK(!same_file(pa, pc));
    rm_tree(a);
    rm_tree(b);
    rm_tree(c);
}

/* The write flags change which files exist, not what the others hold. */
static void case_flags(void) {
    char a[512], b[512];
    make_tmp(a, sizeof a);
    make_tmp(b, sizeof b);
    sa3d_error err;
    sa3d_synth_spair_params p = sa3d_synth_spair_params_default();
    T_OK(sa3d_synth_spair_write(a, &p, &err), &err);
    p.write_images = p.write_segmentations = 0;
    p.write_flip_features = 0;
    T_OK(sa3d_synth_spair_write(b, &p, &err), &err);
    int na, nb, checked = 0;
    char **la = list_files(a, &na);
    char **lb = list_files(b, &nb);
    for (int i = 0; i < nb; i++) {
        T_CHECK(strncmp(lb[i], "JPEGImages", 10) && strncmp(lb[i], "Segmentation", 12));
        char pa[1024], pb[1024];
        snprintf(pa, sizeof pa, "%s/%s", a, lb[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, lb[i]);
        if (strstr(lb[i], ".features.safetensors")) {   /* the same feature_map, no flip map */
            sa3d_safetensors *sa = NULL, *sb = NULL;
            T_OK(sa3d_st_open(&sa, pa, &err), &err);
            T_OK(sa3d_st_open(&sb, pb, &err), &err);
            if (sa && sb) {
                const sa3d_st_tensor *ta = sa3d_st_find(sa, "feature_map"), *tb = sa3d_st_find(sb, "feature_map");
                T_CHECK(ta && tb && ta->nbytes == tb->nbytes && !memcmp(ta->data, tb->data, ta->nbytes));
                T_CHECK(!sa3d_st_find(sb, "feature_map_flip"));
                checked++;
            }
            sa3d_st_close(sa);
            sa3d_st_close(sb);
        } else if (strcmp(lb[i], "synth_params.json")) {
            T_CHECK(same_file(pa, pb));
            checked++;
        }
    }
    T_CHECK(nb == na - 2 * p.n_categories * p.images_per_category && checked == nb - 1);
    free_list(la, na);
    free_list(lb, nb);
    rm_tree(a);
    rm_tree(b);
}

/* ---- 4. reader, provider, matcher, PCK ------------------------------------------------------------------------------ */

static void warn_cb(void *user, const char *msg) {
    (void)user;
    T_FAIL("dataset warning: %s", msg);
}

/* The reader takes every record (strict) and agrees with the files; the Layout list gives the same pairs. */
static void case_reader(void) {
    const char *root = main_root();
    sa3d_synth_spair_params sp = main_params();
    sa3d_error err;
    sa3d_dataset *ds = NULL, *dl = NULL;
    sa3d_dataset_params p = sa3d_dataset_params_default();
    p.strict = 1;
    p.warn = warn_cb;
    T_OK(sa3d_dataset_open(&ds, root, &p, &err), &err);
    p.layout = "large";
    T_OK(sa3d_dataset_open(&dl, root, &p, &err), &err);
    if (!ds || !dl) { sa3d_dataset_close(ds); sa3d_dataset_close(dl); return; }
    static const char *splits[3] = { "trn", "val", "test" };
    const int want[3] = { sp.pairs_trn, sp.pairs_val, sp.pairs_test };
    for (int s = 0; s < 3; s++) {
        int n = sa3d_dataset_load_split(ds, splits[s], &err), m = sa3d_dataset_load_split(dl, splits[s], &err);
        if (n != want[s] || m != want[s]) T_FAIL("split %s: %d and %d pairs, expected %d (%s)", splits[s], n, m, want[s], err.msg);
    }
    int n = sa3d_dataset_n_pairs(ds, "test");
    for (int i = 0; i < n; i++) {
        const sa3d_pair *pr = sa3d_dataset_pair(ds, "test", i), *pl = sa3d_dataset_pair(dl, "test", i);
        T_CHECK(pr && pl && !strcmp(pr->id, pl->id));
        const sa3d_image_anno *a = NULL, *b = NULL;
        T_OK(sa3d_dataset_image(ds, pr->category, pr->src, &a, &err), &err);
        T_OK(sa3d_dataset_image(ds, pr->category, pr->trg, &b, &err), &err);
        if (!a || !b) continue;
        T_CHECK(a->n_slots == 30 && a->width == pr->src_size[0] && b->height == pr->trg_size[1]);
        float tw = pr->trg_bbox[2] - pr->trg_bbox[0], th = pr->trg_bbox[3] - pr->trg_bbox[1];
        T_CHECK(pr->threshold_base == (tw > th ? tw : th));
        for (int k = 0; k < pr->n_kps; k++) {
            int id = pr->kp_ids[k];
            T_CHECK(a->visible[id] && b->visible[id] && a->kps[id][0] == pr->src_kps[k][0] &&
                    b->kps[id][1] == pr->trg_kps[k][1]);
        }
    }
    const char *const *ids = NULL;
    int ni = sa3d_dataset_split_images(ds, "test", "aeroplane", &ids, &err);
    T_CHECK(ni >= 2 && ni <= sp.images_per_category);
    sa3d_dataset_close(ds);
    sa3d_dataset_close(dl);
}

/* The cell centre (original pixels) of the cell holding pixel (u, v): what the baseline returns for a query whose
 * code sits there. */
static void cell_centre(int w, int h, int size, int g, float u, float v, float out[2]) {
    float x, y, cp = (float)size / (float)g;
    sa3d_geoaware_to_square(w, h, size, u, v, &x, &y);
    int cx = (int)floorf(x / cp), cy = (int)floorf(y / cp);
    cx = cx < 0 ? 0 : (cx >= g ? g - 1 : cx);
    cy = cy < 0 ? 0 : (cy >= g ? g - 1 : cy);
    sa3d_geoaware_from_square(w, h, size, ((float)cx + 0.5f) * cp, ((float)cy + 0.5f) * cp, &out[0], &out[1]);
}

static int cell_index(int w, int h, int size, int g, float u, float v) {
    float x, y, cp = (float)size / (float)g;
    sa3d_geoaware_to_square(w, h, size, u, v, &x, &y);
    int cx = (int)floorf(x / cp), cy = (int)floorf(y / cp);
    cx = cx < 0 ? 0 : (cx >= g ? g - 1 : cx);
    cy = cy < 0 ? 0 : (cy >= g ? g - 1 : cy);
    return cy * g + cx;
}

typedef enum { RUN_PLAIN, RUN_SWAP, RUN_CROSS_FLIP, RUN_BOTH_FLIP } run_mode;

/* Runs the baseline over the test split in one mode and checks every prediction against the known answer;
 * fills the actual report r and the report of the expected predictions e. */
static void run_split(run_mode mode, sa3d_pck_report *r, sa3d_pck_report *e, long *n_checked) {
    const char *root = main_root();
    sa3d_error err;
    sa3d_dataset *ds = NULL;
    sa3d_provider *fp = NULL;
    sa3d_dataset_params dp = sa3d_dataset_params_default();
    dp.strict = 1;
    sa3d_pck_init(r);
    sa3d_pck_init(e);
    *n_checked = 0;
    T_OK(sa3d_dataset_open(&ds, root, &dp, &err), &err);
    if (!ds) return;
    int n = sa3d_dataset_load_split(ds, "test", &err);
    T_CHECK(n > 0);
    char fdir[600];
    snprintf(fdir, sizeof fdir, "%s/Features", root);
    sa3d_provider_params pp = sa3d_provider_params_default();
    pp.kind = SA3D_SOURCE_IMPORT;
    pp.import_dir = fdir;
    pp.input_size = 840;
    T_OK(sa3d_feature_provider_new(&fp, ds, &pp, &err), &err);
    sa3d_baseline_params bp = sa3d_baseline_params_default();
    double max_dev = 0.0;
    for (int i = 0; i < n && fp; i++) {
        const sa3d_pair *pr = sa3d_dataset_pair(ds, "test", i);
        const sa3d_image_anno *ta = NULL;
        sa3d_map ms = { 0 }, mt = { 0 };
        int src_flip = mode == RUN_BOTH_FLIP, trg_flip = mode == RUN_BOTH_FLIP || mode == RUN_CROSS_FLIP;
        T_OK(sa3d_provider_get(fp, pr->category, pr->src, src_flip, &ms, &err), &err);
        T_OK(sa3d_provider_get(fp, pr->category, pr->trg, trg_flip, &mt, &err), &err);
        T_OK(sa3d_dataset_image(ds, pr->category, pr->trg, &ta, &err), &err);
        if (!ms.data || !mt.data || !ta) { free(ms.data); free(mt.data); continue; }
        int W = pr->trg_size[0], H = pr->trg_size[1], g = mt.h, cells = g * g;
        float q[SA3D_MAX_KPS][2], pred[SA3D_MAX_KPS][2], want[SA3D_MAX_KPS][2];
        int flip[SA3D_MAX_KPS];
        sa3d_spair_flip_map(pr->category, flip);
        sa3d_pair scored = *pr;   /* the pair as scored: ground truth in the frame the target features are in */
        int m = 0;
        for (int k = 0; k < pr->n_kps; k++) {
            int id = pr->kp_ids[k];
            float tx = pr->trg_kps[k][0], ty = pr->trg_kps[k][1];
            q[m][0] = pr->src_kps[k][0];
            q[m][1] = pr->src_kps[k][1];
            if (mode == RUN_BOTH_FLIP) {   /* both images mirrored: keypoint k is label flip(k) at (W - 1 - x, y) */
                q[m][0] = (float)(pr->src_size[0] - 1) - q[m][0];
                tx = (float)(W - 1) - tx;
            } else if (mode == RUN_CROSS_FLIP) {   /* code c_id sits at the mirror of keypoint flip(id) */
                int f = flip[id];
                if (!ta->visible[f]) continue;
                tx = (float)(W - 1) - ta->kps[f][0];
                ty = ta->kps[f][1];
            }
            scored.kp_ids[m] = id;
            scored.src_kps[m][0] = q[m][0];
            scored.src_kps[m][1] = q[m][1];
            scored.trg_kps[m][0] = tx;
            scored.trg_kps[m][1] = ty;
            m++;
        }
        scored.n_kps = m;
        if (mode == RUN_BOTH_FLIP) {   /* mirrored box for the threshold (same size) */
            scored.trg_bbox[0] = (float)W - pr->trg_bbox[2];
            scored.trg_bbox[2] = (float)W - pr->trg_bbox[0];
        }
        for (int k = 0; k < m; k++)
            cell_centre(W, H, 840, g, scored.trg_kps[k][0], scored.trg_kps[k][1], want[k]);
        if (mode == RUN_SWAP && m >= 2) {   /* swap the target cells of the first two keypoints */
            int c0 = cell_index(W, H, 840, g, scored.trg_kps[0][0], scored.trg_kps[0][1]);
            int c1 = cell_index(W, H, 840, g, scored.trg_kps[1][0], scored.trg_kps[1][1]);
            for (int c = 0; c < mt.c; c++) {
                float t = mt.data[(size_t)c * cells + c0];
                mt.data[(size_t)c * cells + c0] = mt.data[(size_t)c * cells + c1];
                mt.data[(size_t)c * cells + c1] = t;
            }
            float t0 = want[0][0], t1 = want[0][1];
            want[0][0] = want[1][0];
            want[0][1] = want[1][1];
            want[1][0] = t0;
            want[1][1] = t1;
        }
        sa3d_feature_map fs = { ms.c, ms.h, ms.data, pr->src_size[0], pr->src_size[1], 840 };
        sa3d_feature_map ft = { mt.c, mt.h, mt.data, W, H, 840 };
        float *work = malloc(sa3d_baseline_work_floats(ms.c, g, m > 0 ? m : 1) * sizeof(float));
        T_OK(sa3d_match_baseline(&fs, &ft, (const float (*)[2])q, m, &bp, pred, work, &err), &err);
        for (int k = 0; k < m; k++) {
            double d = hypot((double)(pred[k][0] - want[k][0]), (double)(pred[k][1] - want[k][1]));
            if (d > max_dev) max_dev = d;
            if (d > CELL_CENTRE_TOL)
                T_FAIL("%s keypoint %d: predicted (%g, %g), expected the cell centre (%g, %g)", pr->id,
                       scored.kp_ids[k], (double)pred[k][0], (double)pred[k][1], (double)want[k][0], (double)want[k][1]);
        }
        *n_checked += m;
        if (m > 0) {
            T_OK(sa3d_pck_add(r, &scored, (const float (*)[2])pred, &err), &err);
            T_OK(sa3d_pck_add(e, &scored, (const float (*)[2])want, &err), &err);
        }
        free(work);
        free(ms.data);
        free(mt.data);
    }
    sa3d_pck_finish(r);
    sa3d_pck_finish(e);
    printf("  %ld keypoints, max |pred - expected cell centre| %.2g px (bound %g)\n", *n_checked, max_dev,
           CELL_CENTRE_TOL);
    sa3d_provider_free(fp);
    sa3d_dataset_close(ds);
}

static void print_pck(const char *what, const sa3d_pck_report *r) {
    printf("  %s: PCK@0.10 per-image %.2f per-keypoint %.2f, PCK@0.05 per-image %.2f (%ld pairs, %ld keypoints)\n",
           what, sa3d_pck_per_image(&r->overall, 0), sa3d_pck_per_keypoint(&r->overall, 0),
           sa3d_pck_per_image(&r->overall, 1), r->overall.pairs, r->overall.keypoints);
}

/* The features make the answer known: every query lands in the cell of the same keypoint, PCK@0.1 = 100%. */
static void case_baseline_pck(void) {
    sa3d_pck_report r, e;
    long n;
    run_split(RUN_PLAIN, &r, &e, &n);
    print_pck("baseline", &r);
    T_CHECK(n > 0 && r.overall.keypoints == n);
    T_NEAR(sa3d_pck_per_image(&r.overall, 0), 100.0, 1e-9);
    T_NEAR(sa3d_pck_per_keypoint(&r.overall, 0), 100.0, 1e-9);
    T_NEAR(sa3d_pck_per_image(&r.overall, 1), 100.0, 1e-9);   /* a cell is below 0.05 x bbox too */
    T_CHECK(r.n_categories == main_params().n_categories);
}

/* Swapping the target cells of two keypoints sends each to the other: PCK drops to exactly what those
 * predictions score. */
static void case_scrambled(void) {
    sa3d_pck_report r, e;
    long n;
    run_split(RUN_SWAP, &r, &e, &n);
    print_pck("swapped", &r);
    print_pck("expected", &e);
    for (int a = 0; a < SA3D_PCK_N_ALPHA; a++) {
        T_CHECK(r.overall.correct[a] == e.overall.correct[a]);
        T_NEAR(r.overall.per_image_sum[a], e.overall.per_image_sum[a], 1e-9);
    }
    T_CHECK(sa3d_pck_per_image(&r.overall, 0) < 95.0);
    T_CHECK(r.overall.correct[0] < r.overall.keypoints);
}

/* Mirrored features: the source against the mirrored target finds each code at the mirror of its flip partner;
 * both mirrored is again a 100% match. */
static void case_flip_features(void) {
    sa3d_pck_report r, e;
    long n;
    run_split(RUN_CROSS_FLIP, &r, &e, &n);
    print_pck("src vs mirrored trg", &r);
    T_CHECK(n > 0);
    T_NEAR(sa3d_pck_per_image(&r.overall, 0), 100.0, 1e-9);
    run_split(RUN_BOTH_FLIP, &r, &e, &n);
    print_pck("both mirrored", &r);
    T_CHECK(n > 0);
    T_NEAR(sa3d_pck_per_image(&r.overall, 0), 100.0, 1e-9);
}

/* The feature geometry behind the 100%: code cells agree across images, background is far from every code. */
static void case_feature_similarity(void) {
    const char *root = main_root();
    sa3d_error err;
    sa3d_dataset *ds = NULL;
    T_OK(sa3d_dataset_open(&ds, root, NULL, &err), &err);
    if (!ds || sa3d_dataset_load_split(ds, "test", &err) <= 0) { sa3d_dataset_close(ds); T_FAIL("%s", err.msg); return; }
    char fdir[600];
    snprintf(fdir, sizeof fdir, "%s/Features", root);
    sa3d_provider_params pp = sa3d_provider_params_default();
    pp.import_dir = fdir;
    sa3d_provider *fp = NULL;
    T_OK(sa3d_feature_provider_new(&fp, ds, &pp, &err), &err);
    double min_same = 1.0, max_other = -1.0, max_bg = -1.0;
    int n = sa3d_dataset_n_pairs(ds, "test");
    for (int i = 0; i < n && fp; i++) {
        const sa3d_pair *pr = sa3d_dataset_pair(ds, "test", i);
        sa3d_map ms = { 0 }, mt = { 0 };
        T_OK(sa3d_provider_get(fp, pr->category, pr->src, 0, &ms, &err), &err);
        T_OK(sa3d_provider_get(fp, pr->category, pr->trg, 0, &mt, &err), &err);
        if (ms.data && mt.data) {
            int g = ms.h, cells = g * g, C = ms.c;
            int cs[SA3D_MAX_KPS], ct[SA3D_MAX_KPS];
            unsigned char is_kp[4096] = { 0 };
            for (int k = 0; k < pr->n_kps; k++) {
                cs[k] = cell_index(pr->src_size[0], pr->src_size[1], 840, g, pr->src_kps[k][0], pr->src_kps[k][1]);
                ct[k] = cell_index(pr->trg_size[0], pr->trg_size[1], 840, g, pr->trg_kps[k][0], pr->trg_kps[k][1]);
                is_kp[ct[k]] = 1;
            }
            for (int k = 0; k < pr->n_kps; k++) {
                for (int j = 0; j < pr->n_kps; j++) {
                    double d = 0.0;
                    for (int c = 0; c < C; c++)
                        d += (double)ms.data[(size_t)c * cells + cs[k]] * (double)mt.data[(size_t)c * cells + ct[j]];
                    if (j == k && d < min_same) min_same = d;
                    if (j != k && d > max_other) max_other = d;
                }
                for (int cell = 0; cell < cells; cell++) {
                    if (cell < 4096 && is_kp[cell]) continue;
                    double d = 0.0;
                    for (int c = 0; c < C; c++)
                        d += (double)ms.data[(size_t)c * cells + cs[k]] * (double)mt.data[(size_t)c * cells + cell];
                    if (d > max_bg) max_bg = d;
                }
            }
        }
        free(ms.data);
        free(mt.data);
    }
    printf("  cosine: same keypoint >= %.3f, other keypoints <= %.3f, background <= %.3f\n", min_same, max_other, max_bg);
    T_CHECK(min_same > 0.95 && max_other < min_same - 0.2 && max_bg < min_same - 0.15);
    sa3d_provider_free(fp);
    sa3d_dataset_close(ds);
}

int main(int argc, char **argv) {
    static const t_case cases[] = {
        { "1.1", "parameters: defaults, range checks, non-empty root", case_params },
        { "1.2", "fault injection: each allocation failure is clean", case_faults },
        { "1.3", "sa3d_jpeg_write: round trip, determinism, errors", case_jpeg_write },
        { "2.1", "file tree: counts, Layout lists, no temp files", case_tree },
        { "2.2", "image records: fixture key order, 30 kps keys, ranges", case_image_records },
        { "2.3", "pair records: fixture key order, kps_ids, flags", case_pair_records },
        { "2.4", "JPEG, PNG mask and feature files", case_pixels_and_features },
        { "3.1", "determinism: byte-identical at 1 and 2 threads", case_determinism },
        { "3.2", "write flags leave the other files unchanged", case_flags },
        { "4.1", "dataset reader takes every record (strict, layout)", case_reader },
        { "4.2", "feature cosine: codes agree, background is far", case_feature_similarity },
        { "4.3", "baseline + PCK on known features: 100%", case_baseline_pck },
        { "4.4", "swapped codes: PCK drops to the expected value", case_scrambled },
        { "4.5", "mirrored feature maps follow the flip map", case_flip_features },
    };
    int rc = t_run(cases, (int)(sizeof cases / sizeof cases[0]), argc, argv);
    if (g_root[0]) rm_tree(g_root);
    return rc;
}
