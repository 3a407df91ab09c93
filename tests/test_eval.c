/* Evaluation: window soft-argmax parity with the authors' function (every case file found), PCK variants
 * against hand-computed values, the JSON report keys, and predictions-file validation. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "base/base.h"
#include "semalign3d/eval.h"
#include "t.h"

/* semalign3d-reference/README.md: window_soft_argmax.json, tolerance abs 1e-4 (cell units). */
#define SOFTARGMAX_TOL 1e-4

static cJSON *load_json(const char *path) {
    char *text = NULL;
    sa3d_error err;
    if (sa3d_read_file(path, 64u << 20, &text, NULL, &err) != SA3D_OK) { T_FAIL("%s", err.msg); return NULL; }
    cJSON *j = cJSON_Parse(text);
    sa3d_free(text);
    if (!j) T_FAIL("%s: bad JSON", path);
    return j;
}

static void case_soft_argmax(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/semalign3d-reference/window_soft_argmax.json", t_fixtures_root());
    cJSON *j = load_json(path);
    if (!j) return;
    const cJSON *maps = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "inputs"), "similarity_maps_x128");
    const cJSON *out = cJSON_GetObjectItem(j, "outputs");
    const cJSON *am = cJSON_GetObjectItem(out, "argmax_xy"), *sm = cJSON_GetObjectItem(out, "soft_argmax_xy");
    int n = cJSON_GetArraySize(maps);
    T_CHECK(n > 0);
    for (int m = 0; m < n; m++) {
        const cJSON *mp = cJSON_GetArrayItem(maps, m);
        int h = cJSON_GetArraySize(mp), w = cJSON_GetArraySize(cJSON_GetArrayItem(mp, 0));
        float *S = malloc((size_t)w * h * sizeof(float));
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                S[y * w + x] = (float)(cJSON_GetArrayItem(cJSON_GetArrayItem(mp, y), x)->valuedouble / 128.0);
        int ax, ay;
        float sx, sy;
        sa3d_window_soft_argmax(S, w, h, 7, 0.02f, &ax, &ay, &sx, &sy);
        const cJSON *ra = cJSON_GetArrayItem(am, m), *rs = cJSON_GetArrayItem(sm, m);
        T_CHECK(ax == cJSON_GetArrayItem(ra, 0)->valueint && ay == cJSON_GetArrayItem(ra, 1)->valueint);
        double ex = fabs((double)sx - cJSON_GetArrayItem(rs, 0)->valuedouble);
        double ey = fabs((double)sy - cJSON_GetArrayItem(rs, 1)->valuedouble);
        printf("  map %d: argmax (%d, %d), soft (%.5f, %.5f), |err| %.2g %.2g (bound %g)\n", m, ax, ay, (double)sx,
               (double)sy, ex, ey, SOFTARGMAX_TOL);
        T_CHECK(ex <= SOFTARGMAX_TOL && ey <= SOFTARGMAX_TOL);
        free(S);
    }
    cJSON_Delete(j);
}

static sa3d_pair make_pair(const char *id, const char *cat, int n, float thr, int vp) {
    sa3d_pair p;
    memset(&p, 0, sizeof p);
    snprintf(p.id, sizeof p.id, "%s", id);
    snprintf(p.category, sizeof p.category, "%s", cat);
    p.n_kps = n;
    p.threshold_base = thr;
    p.viewpoint_variation = vp;
    p.scale_variation = p.truncation = p.occlusion = p.mirror = -1;
    for (int i = 0; i < n; i++) { p.trg_kps[i][0] = 10.0f * (float)i; p.trg_kps[i][1] = 5.0f; }
    return p;
}

/* Hand-computed: threshold base 100 -> bounds 10, 5, 1 pixels (strict). */
static void case_pck_variants(void) {
    sa3d_pck_report r;
    sa3d_pck_init(&r);
    sa3d_error err;
    /* cat "b", pair 1: 4 kps at distances 0, 0.999, 5 (not < 5), 9.99 -> @0.1: 4/4... */
    sa3d_pair p1 = make_pair("p1", "b", 4, 100.0f, 0);
    float d1[4] = { 0.0f, 0.999f, 5.0f, 9.99f };
    float pr1[4][2];
    for (int i = 0; i < 4; i++) { pr1[i][0] = p1.trg_kps[i][0] + d1[i]; pr1[i][1] = p1.trg_kps[i][1]; }
    /* @0.1 (<10): 4 correct; @0.05 (<5): 2; @0.01 (<1): 2 */
    T_OK(sa3d_pck_add(&r, &p1, (const float (*)[2])pr1, &err), &err);
    /* cat "a", pair 2: 1 kp at distance 10 (not < 10) -> 0 everywhere */
    sa3d_pair p2 = make_pair("p2", "a", 1, 100.0f, 2);
    float pr2[1][2] = { { p2.trg_kps[0][0], p2.trg_kps[0][1] + 10.0f } };
    T_OK(sa3d_pck_add(&r, &p2, (const float (*)[2])pr2, &err), &err);
    /* cat "a", pair 3: 2 kps exact -> 1 */
    sa3d_pair p3 = make_pair("p3", "a", 2, 50.0f, 2);
    float pr3[2][2] = { { p3.trg_kps[0][0], p3.trg_kps[0][1] }, { p3.trg_kps[1][0], p3.trg_kps[1][1] } };
    T_OK(sa3d_pck_add(&r, &p3, (const float (*)[2])pr3, &err), &err);
    sa3d_pair p4 = make_pair("p4", "a", 0, 50.0f, 2);   /* no keypoints: not counted */
    T_OK(sa3d_pck_add(&r, &p4, NULL, &err), &err);
    sa3d_pck_finish(&r);
    T_CHECK(r.n_categories == 2 && !strcmp(r.category[0], "a") && !strcmp(r.category[1], "b"));
    T_CHECK(r.skipped_empty == 1);
    /* category a: per-image @0.1 = (0 + 1)/2 = 50; per-keypoint = 2/3 */
    T_NEAR(sa3d_pck_per_image(&r.cat[0], 0), 50.0, 1e-9);
    T_NEAR(sa3d_pck_per_keypoint(&r.cat[0], 0), 200.0 / 3.0, 1e-9);
    /* category b: per-image @0.1 = 100, @0.05 = 50, @0.01 = 50 */
    T_NEAR(sa3d_pck_per_image(&r.cat[1], 0), 100.0, 1e-9);
    T_NEAR(sa3d_pck_per_image(&r.cat[1], 1), 50.0, 1e-9);
    T_NEAR(sa3d_pck_per_image(&r.cat[1], 2), 50.0, 1e-9);
    /* All: category mean @0.1 = (50 + 100)/2 = 75; pair-weighted = (1 + 0 + 1)/3 = 66.67; per-keypoint 6/7 */
    T_NEAR(sa3d_pck_category_mean(&r, 0), 75.0, 1e-9);
    T_NEAR(sa3d_pck_per_image(&r.overall, 0), 200.0 / 3.0, 1e-9);
    T_NEAR(sa3d_pck_per_keypoint(&r.overall, 0), 600.0 / 7.0, 1e-9);
    /* @0.05 overall per-keypoint: b 2 + a (0 + 2 of threshold 2.5: exact -> 2) = 4/7 */
    T_NEAR(sa3d_pck_per_keypoint(&r.overall, 1), 400.0 / 7.0, 1e-9);
    /* viewpoint 2 holds pairs 2 and 3 */
    T_CHECK(r.by_flag[0][2].pairs == 2 && r.by_flag[0][0].pairs == 1);
    /* text and JSON */
    char *text = sa3d_pck_format(&r, "test");
    T_CHECK(text && strstr(text, "All: category mean") && strstr(text, "All: pair-weighted") &&
            strstr(text, "viewpoint_variation=2"));
    if (text) printf("%s", text);
    free(text);
    char path[] = "/tmp/sa3d_pck_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    const char *meta[] = { "method", "test", NULL };
    T_OK(sa3d_pck_write_json(&r, path, meta, &err), &err);
    cJSON *j = load_json(path);
    const cJSON *o = cJSON_GetObjectItem(j, "overall");
    T_NEAR(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "per_image"), "category_mean"), "0.1")->valuedouble, 75.0, 1e-9);
    T_NEAR(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "per_image"), "pair_weighted"), "0.1")->valuedouble, 200.0 / 3.0, 1e-9);
    T_NEAR(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "per_keypoint"), "0.05")->valuedouble, 400.0 / 7.0, 1e-9);
    const cJSON *a = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "categories"), "a");
    T_CHECK(cJSON_GetObjectItem(a, "pairs")->valueint == 2 && cJSON_GetObjectItem(a, "keypoints")->valueint == 3);
    T_NEAR(cJSON_GetObjectItem(cJSON_GetObjectItem(a, "per_image"), "0.01")->valuedouble, 50.0, 1e-9);
    cJSON_Delete(j);
    unlink(path);
    /* non-finite prediction */
    float bad[4][2] = { { NAN, 0 } };
    T_STATUS(sa3d_pck_add(&r, &p1, (const float (*)[2])bad, &err), SA3D_ERR_NUMERIC, &err);
    T_CONTAINS(err.msg, "p1");
}

int main(int argc, char **argv) {
    static const t_case cases[] = {
        { "1.1", "window soft-argmax equals the authors' function", case_soft_argmax },
        { "2.1", "PCK per-image/per-keypoint, category mean/pair-weighted, flags", case_pck_variants },
    };
    return t_run(cases, (int)(sizeof cases / sizeof cases[0]), argc, argv);
}
