/* Evaluation: window soft-argmax parity with the authors' function (every case file found), PCK variants
 * against hand-computed values, the JSON report keys, and predictions-file validation; the batched baseline
 * (grouped by target image, parallel loads) against the per-pair path, byte for byte. */
#define _XOPEN_SOURCE 700
#include <cjson/cJSON.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "base/base.h"
#include "align/baseline_internal.h"
#include "base/rng.h"
#include "semalign3d/eval.h"
#include "semalign3d/match.h"
#include "semalign3d/providers.h"
#include "semalign3d/synth.h"
#include "tensor/kernels.h"
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
        /* radii past the grid are the whole grid (INT_MAX overflowed the window's bounds), below 0 are 0 */
        int bx, by, cx, cy;
        float tx, ty, ux, uy;
        sa3d_window_soft_argmax(S, w, h, INT_MAX, 0.02f, &bx, &by, &tx, &ty);
        sa3d_window_soft_argmax(S, w, h, w + h, 0.02f, &cx, &cy, &ux, &uy);
        T_CHECK(bx == cx && by == cy && tx == ux && ty == uy);
        sa3d_window_soft_argmax(S, w, h, -5, 0.02f, &bx, &by, &tx, &ty);
        sa3d_window_soft_argmax(S, w, h, 0, 0.02f, &cx, &cy, &ux, &uy);
        T_CHECK(bx == cx && by == cy && tx == ux && ty == uy);
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
    p1.scale_variation = 1; p1.truncation = 2; p1.occlusion = 3; p1.mirror = 1;   /* each flag its own value */
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
    /* the other flags, in the order sa3d_pck_flag_names gives them: pair 1 only */
    T_CHECK(r.by_flag[1][1].pairs == 1 && r.by_flag[2][2].pairs == 1 && r.by_flag[3][3].pairs == 1 &&
            r.by_flag[4][1].pairs == 1 && r.by_flag[4][1].keypoints == 4);
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
    /* PF-PASCAL is reported at 0.10, 0.05, 0.15 (GeoAware-SC's compute_pck, the field's convention): pair 1's
     * distances 0, 0.999, 5, 9.99 are all < 15, so its third column is 100, in the table and under "0.15" */
    sa3d_pck_report rp;
    sa3d_pck_init(&rp);
    rp.kind = SA3D_DATASET_PFPASCAL;
    T_OK(sa3d_pck_add(&rp, &p1, (const float (*)[2])pr1, &err), &err);
    sa3d_pck_finish(&rp);
    T_NEAR(sa3d_pck_per_image(&rp.cat[0], 2), 100.0, 1e-9);
    T_NEAR(sa3d_pck_per_image(&rp.cat[0], 1), 50.0, 1e-9);
    T_CHECK(sa3d_pck_alphas(SA3D_DATASET_PFPASCAL)[2] == 0.15 && sa3d_pck_alphas(SA3D_DATASET_AP10K)[2] == 0.01);
    text = sa3d_pck_format(&rp, "pfpascal");
    T_CHECK(text && strstr(text, "0.15") && !strstr(text, "0.01"));
    free(text);
    char path2[] = "/tmp/sa3d_pck_XXXXXX";
    fd = mkstemp(path2);
    if (fd >= 0) close(fd);
    T_OK(sa3d_pck_write_json(&rp, path2, meta, &err), &err);
    j = load_json(path2);
    a = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "categories"), "b");
    T_CHECK(a && cJSON_GetObjectItem(cJSON_GetObjectItem(a, "per_image"), "0.15") &&
            !cJSON_GetObjectItem(cJSON_GetObjectItem(a, "per_image"), "0.01"));
    cJSON_Delete(j);
    unlink(path2);
}

/* ---- the batched baseline equals the per-pair baseline ---------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

/* fused normalise-and-copy vs in-place normalise: bit-identical, and the first non-finite index found */
static void case_normalize_copy(void) {
    int C = 37, cells = 91;
    float *a = malloc((size_t)C * cells * sizeof(float)), *b = malloc((size_t)C * cells * sizeof(float));
    uint64_t x = 12345;
    for (int i = 0; i < C * cells; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        a[i] = (float)((double)(x >> 40) / (double)(1ULL << 24) - 0.5) * 7.0f;
    }
    for (int c = 0; c < C; c++) a[(size_t)c * cells + 5] = 0.0f;   /* an all-zero cell: eps, no NaN */
    long bad = sa3d_features_normalize_copy(b, a, C, cells);
    sa3d_features_normalize(a, C, cells);
    T_CHECK(bad == -1);
    T_CHECK(memcmp(a, b, (size_t)C * cells * sizeof(float)) == 0);
    a[3 * cells + 7] = INFINITY;
    T_CHECK(sa3d_features_normalize_copy(b, a, C, cells) == 3 * cells + 7);
    a[3 * cells + 7] = 1.0f;
    a[30 * cells + 2] = NAN;   /* a NaN poisons its whole cell: the first bad index is channel 0 of it */
    T_CHECK(sa3d_features_normalize_copy(b, a, C, cells) == 2);
    free(a);
    free(b);
}

/* the fixed-order product equals its naive twin bit for bit, for any row count and place, at 1 and 2 threads */
static void case_fixed_order_gemm(void) {
    int M = 23, K = 77, N = 131;
    float *A = malloc((size_t)M * K * sizeof(float)), *B = malloc((size_t)K * N * sizeof(float));
    float *S = malloc((size_t)M * N * sizeof(float)), *R = malloc((size_t)M * N * sizeof(float));
    uint64_t x = 99;
    for (int i = 0; i < M * K + K * N; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        float v = (float)((double)(x >> 40) / (double)(1ULL << 24) - 0.5);
        if (i < M * K) A[i] = v; else B[i - M * K] = v;
    }
    sa3d_ref_gemm_fixed_order(R, A, B, M, K, N);
    double maxd = 0.0;
    for (int th = 1; th <= 2; th++) {
        sa3d_set_threads(th);
        sa3d_gemm_fixed_order(S, A, B, M, K, N);
        T_CHECK(memcmp(S, R, (size_t)M * N * sizeof(float)) == 0);
        for (int off = 0; off < M; off += 5) {   /* rows off.. on their own: the same bits as inside the product */
            int m = M - off < 3 ? M - off : 3;
            sa3d_gemm_fixed_order(S, A + (size_t)off * K, B, m, K, N);
            T_CHECK(memcmp(S, R + (size_t)off * N, (size_t)m * N * sizeof(float)) == 0);
        }
    }
    for (int i = 0; i < M; i++)   /* and it is the product: against double sums */
        for (int j = 0; j < N; j++) {
            double d = 0.0;
            for (int k = 0; k < K; k++) d += (double)A[(size_t)i * K + k] * (double)B[(size_t)k * N + j];
            double e = fabs(d - (double)R[(size_t)i * N + j]);
            if (e > maxd) maxd = e;
        }
    printf("  max |fixed-order - double| = %.3g (bound 1e-4)\n", maxd);
    T_CHECK(maxd <= 1e-4);
    sa3d_set_threads(0);
    free(A); free(B); free(S); free(R);
}

static int same_preds(const float (*a)[SA3D_MAX_KPS][2], const float (*b)[SA3D_MAX_KPS][2], const sa3d_dataset *ds,
                      int n) {
    for (int i = 0; i < n; i++) {
        const sa3d_pair *pr = sa3d_dataset_pair(ds, "test", i);
        if (memcmp(a[i], b[i], (size_t)pr->n_kps * sizeof a[i][0]) != 0) {
            printf("  pair %s differs: (%.9g, %.9g) vs (%.9g, %.9g)\n", pr->id, (double)a[i][0][0],
                   (double)a[i][0][1], (double)b[i][0][0], (double)b[i][0][1]);
            return 0;
        }
    }
    return 1;
}

/* A synthetic SPair-layout dataset written by sp into a new folder under $TMPDIR (root[512] gets its path, name
 * starting with tag), opened, its test split loaded, and a feature provider importing its Features/. Returns the
 * number of test pairs, or -1 after reporting the failure. */
static int synth_split(char root[512], const char *tag, const sa3d_synth_spair_params *sp, sa3d_dataset **ds,
                       sa3d_provider **fp) {
    const char *t = getenv("TMPDIR");
    sa3d_error err = { 0 };
    *ds = NULL;
    *fp = NULL;
    snprintf(root, 512, "%s/%s_XXXXXX", t && *t ? t : "/tmp", tag);
    if (!mkdtemp(root)) { T_FAIL("mkdtemp failed"); return -1; }
    char fdir[600];
    snprintf(fdir, sizeof fdir, "%s/Features", root);
    sa3d_provider_params pp = sa3d_provider_params_default();
    pp.import_dir = fdir;
    int n = -1;
    if (sa3d_synth_spair_write(root, sp, &err) || sa3d_dataset_open(ds, root, NULL, &err) ||
        (n = sa3d_dataset_load_split(*ds, "test", &err)) < 0 || sa3d_feature_provider_new(fp, *ds, &pp, &err)) {
        T_FAIL("synthetic split in %s: %s", root, err.msg);
        return -1;
    }
    return n;
}

static void case_batch_equals_pairwise(void) {
    char root[512];
    sa3d_error err = { 0 };
    sa3d_synth_spair_params sp = sa3d_synth_spair_params_default();
    sp.n_categories = 3;
    sp.images_per_category = 7;
    sp.pairs_trn = sp.pairs_val = 0;
    sp.pairs_test = 90;
    sp.feature_channels = 48;
    sp.feature_noise = 1.5f;   /* noisy codes: soft-argmax weights spread over the window, not cell centres */
    sp.write_images = sp.write_segmentations = sp.write_flip_features = 0;
    sa3d_dataset *ds = NULL;
    sa3d_provider *fp = NULL;
    sa3d_baseline_matcher *bm = NULL;
    int n = synth_split(root, "sa3d_eval_batch", &sp, &ds, &fp);
    T_CHECK(n == 90);
    T_CHECK(fp && sa3d_provider_concurrent(fp) == 1);
    sa3d_baseline_params bp = sa3d_baseline_params_default();
    T_OK(sa3d_baseline_matcher_new(&bm, fp, sp.input_size, &bp, &err), &err);
    float (*ref)[SA3D_MAX_KPS][2] = calloc((size_t)n, sizeof *ref), (*got)[SA3D_MAX_KPS][2] = calloc((size_t)n, sizeof *got);
    const sa3d_pair **prs = calloc((size_t)n, sizeof *prs);
    for (int i = 0; i < n && bm; i++) {
        prs[i] = sa3d_dataset_pair(ds, "test", i);
        T_OK(sa3d_baseline_matcher_match(bm, prs[i], ref[i], &err), &err);
    }
    /* all categories in one call at 1 and 2 threads; per category; memory budgets of 0, 1 and 3 maps (reloads) */
    size_t map_bytes = (size_t)sp.feature_channels * sp.feature_grid * sp.feature_grid * sizeof(float);
    size_t budgets[4] = { bp.max_cache_bytes, 0, map_bytes, 3 * map_bytes };
    for (int th = 1; th <= 2 && bm; th++) {
        sa3d_set_threads(th);
        for (int b = 0; b < 4; b++) {
            sa3d_baseline_matcher_free(bm);
            bp.max_cache_bytes = budgets[b];
            T_OK(sa3d_baseline_matcher_new(&bm, fp, sp.input_size, &bp, &err), &err);
            memset(got, 0xff, (size_t)n * sizeof *got);
            T_OK(sa3d_baseline_matcher_match_batch(bm, prs, n, got, &err), &err);
            int same = same_preds((const float (*)[SA3D_MAX_KPS][2])ref, (const float (*)[SA3D_MAX_KPS][2])got, ds, n);
            sa3d_baseline_batch_stats st = sa3d_baseline_matcher_batch_stats(bm);
            printf("  threads %d, budget %zu bytes: %ld maps loaded for 21 images, predictions %s\n", th, budgets[b],
                   st.maps_loaded, same ? "identical" : "DIFFER");
            T_CHECK(same);
            if (b == 0) T_CHECK(st.maps_loaded == 21);   /* each image once */
            if (b == 1) T_CHECK(st.maps_loaded > 21);    /* targets read again */
        }
    }
    /* category by category through sa3d_eval_run: predictions.jsonl byte-identical to the pair-by-pair run */
    char out1[700], out2[700];
    snprintf(out1, sizeof out1, "%s/ev1", root);
    snprintf(out2, sizeof out2, "%s/ev2", root);
    sa3d_pck_report r1, r2;
    sa3d_pck_init(&r1);
    sa3d_pck_init(&r2);
    sa3d_eval_params ep = sa3d_eval_params_default();
    long resumed;
    ep.out_dir = out1;
    T_OK(sa3d_eval_run(ds, &ep, sa3d_baseline_matcher_match, bm, &r1, &resumed, &err), &err);
    ep.out_dir = out2;
    ep.match_batch = sa3d_baseline_matcher_match_batch;
    T_OK(sa3d_eval_run(ds, &ep, sa3d_baseline_matcher_match, bm, &r2, &resumed, &err), &err);
    char p1[800], p2[800], *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;
    snprintf(p1, sizeof p1, "%s/predictions.jsonl", out1);
    snprintf(p2, sizeof p2, "%s/predictions.jsonl", out2);
    T_OK(sa3d_read_file(p1, 1 << 24, &a, &la, &err), &err);
    T_OK(sa3d_read_file(p2, 1 << 24, &b, &lb, &err), &err);
    T_CHECK(a && b && la == lb && la > 0 && memcmp(a, b, la) == 0);
    sa3d_free(a);
    sa3d_free(b);
    /* a missing feature file: the failing image is named */
    char victim[900];
    snprintf(victim, sizeof victim, "%s/Features/%s/%s.features.safetensors", root, prs[n - 1]->category,
             prs[n - 1]->trg);
    remove(victim);
    T_STATUS(sa3d_baseline_matcher_match_batch(bm, prs, n, got, &err), SA3D_ERR_IO, &err);
    T_CONTAINS(err.msg, prs[n - 1]->trg);
    sa3d_set_threads(0);
    free(ref);
    free(got);
    free(prs);
    sa3d_baseline_matcher_free(bm);
    sa3d_provider_free(fp);
    sa3d_dataset_close(ds);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- eval's written predictions score what the run scored ---------------------------------------------- */

/* Predictions just inside the PCK@0.1 bound (the largest float offset along x with distance < 0.1 threshold, minus
 * a few 1e-4 px), or a non-finite / absurd value for one pair. */
typedef struct edge_matcher { const char *bad_pair; float bad_value; } edge_matcher;

static sa3d_status edge_match(void *ctx, const sa3d_pair *pair, float (*pred)[2], sa3d_error *err) {
    const edge_matcher *em = ctx;
    (void)err;
    for (int i = 0; i < pair->n_kps; i++) {
        double gx = (double)pair->trg_kps[i][0], bound = 0.1 * (double)pair->threshold_base;
        float x = (float)(gx + bound - 1e-4 * (i % 4));
        while ((double)x - gx >= bound) x = nextafterf(x, -INFINITY);
        pred[i][0] = x;
        pred[i][1] = pair->trg_kps[i][1];
        if (em->bad_pair && !strcmp(pair->id, em->bad_pair)) pred[i][0] = em->bad_value;
    }
    return SA3D_OK;
}

static sa3d_status edge_match_batch(void *ctx, const sa3d_pair *const *pairs, int n, float (*pred)[SA3D_MAX_KPS][2],
                                    sa3d_error *err) {
    for (int j = 0; j < n; j++) edge_match(ctx, pairs[j], pred[j], err);
    return SA3D_OK;
}

static int same_report(const sa3d_pck_report *a, const sa3d_pck_report *b) {
    for (int k = 0; k < SA3D_PCK_N_ALPHA; k++)
        if (a->overall.correct[k] != b->overall.correct[k] ||
            sa3d_pck_per_image(&a->overall, k) != sa3d_pck_per_image(&b->overall, k))
            return 0;
    return a->overall.pairs == b->overall.pairs;
}

/* A fresh run, a resumed run (from the part files) and `pck` on the run's predictions.jsonl give the same report,
 * for predictions a few 1e-4 px inside the strict bound (3 decimals would round some of them across it: the check
 * counts them, so that it has teeth). A matcher's non-finite or absurd prediction stops the run, naming the pair,
 * before predictions.jsonl is written. */
static void case_written_predictions(void) {
    char root[512];
    sa3d_synth_spair_params sp = sa3d_synth_spair_params_default();
    sp.pairs_test = 40;
    sp.write_images = sp.write_segmentations = sp.write_flip_features = 0;
    sa3d_dataset *ds = NULL;
    sa3d_provider *fp = NULL;
    int n = synth_split(root, "sa3d_eval_written", &sp, &ds, &fp);
    T_CHECK(n == 40);
    if (n <= 0) return;
    sa3d_error err;
    edge_matcher em = { NULL, 0.0f };
    long crossing = 0, resumed = 0, missing = 0;
    for (int i = 0; i < n; i++) {   /* how many would a 3-decimal file move onto or past the bound */
        const sa3d_pair *pr = sa3d_dataset_pair(ds, "test", i);
        float pred[SA3D_MAX_KPS][2];
        edge_match(&em, pr, pred, &err);
        for (int k = 0; k < pr->n_kps; k++) {
            char t[64];
            snprintf(t, sizeof t, "%.3f", (double)pred[k][0]);
            crossing += (double)(float)atof(t) - (double)pr->trg_kps[k][0] >= 0.1 * (double)pr->threshold_base;
        }
    }
    char out[700], path[800];
    snprintf(out, sizeof out, "%s/ev", root);
    sa3d_eval_params ep = sa3d_eval_params_default();
    ep.out_dir = out;
    sa3d_pck_report fresh, again, rescored;
    sa3d_pck_init(&fresh);
    sa3d_pck_init(&again);
    sa3d_pck_init(&rescored);
    {   /* bad parameters: refused before anything is written, naming the problem */
        char long_dir[SA3D_EVAL_MAX_DIR + 8];
        snprintf(long_dir, sizeof long_dir, "%s/", out);
        memset(long_dir + strlen(long_dir), 'x', sizeof long_dir - 1 - strlen(long_dir));
        long_dir[sizeof long_dir - 1] = '\0';
        for (size_t i = strlen(out) + 100; i < sizeof long_dir - 1; i += 100) long_dir[i] = '/';   /* real names */
        const char *want[4] = { "limit", "output directory", "required", "required" };
        for (int k = 0; k < 4; k++) {
            sa3d_eval_params bad = ep;
            if (k == 0) bad.limit = -1;
            if (k == 1) bad.out_dir = long_dir;
            if (k == 2) bad.out_dir = NULL;
            T_STATUS(sa3d_eval_run(ds, &bad, k == 3 ? NULL : edge_match, &em, &fresh, &resumed, &err), SA3D_ERR_ARG,
                     &err);
            T_CONTAINS(err.msg, want[k]);
        }
        T_CHECK(!sa3d_dir_exists(out));
    }
    T_OK(sa3d_eval_run(ds, &ep, edge_match, &em, &fresh, &resumed, &err), &err);
    T_CHECK(resumed == 0);
    T_OK(sa3d_eval_run(ds, &ep, edge_match, &em, &again, &resumed, &err), &err);
    T_CHECK(resumed == n);
    {   /* a --limit rerun takes the first pairs of each whole part and leaves the parts whole */
        char part[800];
        snprintf(part, sizeof part, "%s/parts/%s.jsonl", out, sa3d_dataset_pair(ds, "test", 0)->category);
        struct stat before, after;
        T_CHECK(stat(part, &before) == 0);
        sa3d_eval_params lim = ep;
        lim.limit = 3;
        sa3d_pck_report r3;
        sa3d_pck_init(&r3);
        T_OK(sa3d_eval_run(ds, &lim, edge_match, &em, &r3, &resumed, &err), &err);
        T_CHECK(resumed == 6 && r3.overall.pairs == 6 && stat(part, &after) == 0 && after.st_size == before.st_size);
        sa3d_pck_init(&r3);
        T_OK(sa3d_eval_run(ds, &ep, edge_match, &em, &r3, &resumed, &err), &err);   /* and whole again */
        T_CHECK(resumed == n && same_report(&fresh, &r3));
    }
    snprintf(path, sizeof path, "%s/predictions.jsonl", out);
    T_OK(sa3d_pck_score_file(&rescored, ds, "test", path, 0, &missing, &err), &err);
    sa3d_pck_finish(&rescored);
    printf("  %ld predictions a 3-decimal file would round onto the bound; PCK@0.1 fresh %.2f, resumed %.2f, "
           "rescored %.2f\n", crossing, sa3d_pck_per_image(&fresh.overall, 0), sa3d_pck_per_image(&again.overall, 0),
           sa3d_pck_per_image(&rescored.overall, 0));
    T_CHECK(crossing > 0);
    T_CHECK(sa3d_pck_per_image(&fresh.overall, 0) == 100.0);
    T_CHECK(same_report(&fresh, &again) && same_report(&fresh, &rescored));
    {   /* the whole split's file against a dataset opened for one category: the others' lines counted, skipped */
        const char *cat = sa3d_dataset_pair(ds, "test", 0)->category;
        long n_cat = 0;
        for (int i = 0; i < n; i++) n_cat += !strcmp(sa3d_dataset_pair(ds, "test", i)->category, cat);
        sa3d_dataset_params dp = sa3d_dataset_params_default();
        dp.categories = cat;
        sa3d_dataset *one = NULL;
        sa3d_pck_report sub;
        sa3d_pck_init(&sub);
        T_OK(sa3d_dataset_open(&one, root, &dp, &err), &err);
        T_CHECK(sa3d_dataset_load_split(one, "test", &err) == (int)n_cat);
        T_OK(sa3d_pck_score_file(&sub, one, "test", path, 0, &missing, &err), &err);
        printf("  scored against %s alone: %ld pairs, %ld of other categories skipped\n", cat, sub.overall.pairs,
               sub.other_categories);
        T_CHECK(n_cat > 0 && n_cat < n && sub.overall.pairs == n_cat && sub.other_categories == n - n_cat &&
                missing == 0 && sub.n_categories == 1);
        sa3d_dataset_close(one);
    }
    /* bad values, pair by pair and by category: refused with the pair named, no predictions.jsonl */
    const float bad[3] = { NAN, INFINITY, 3e38f };
    for (int v = 0; v < 6; v++) {
        snprintf(out, sizeof out, "%s/bad%d", root, v);
        ep.out_dir = out;
        ep.match_batch = v >= 3 ? edge_match_batch : NULL;
        em.bad_pair = sa3d_dataset_pair(ds, "test", n / 2)->id;
        em.bad_value = bad[v % 3];
        sa3d_pck_report r;
        sa3d_pck_init(&r);
        T_STATUS(sa3d_eval_run(ds, &ep, edge_match, &em, &r, &resumed, &err), SA3D_ERR_NUMERIC, &err);
        T_CONTAINS(err.msg, em.bad_pair);
        snprintf(path, sizeof path, "%s/predictions.jsonl", out);
        T_CHECK(!sa3d_file_exists(path));
    }
    sa3d_provider_free(fp);
    sa3d_dataset_close(ds);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- GeoAware-SC's adaptive flip (baseline_flip.c) ---- */

static float *random_unit_map(int C, int g, uint64_t seed) {   /* uniform components, then unit cells */
    float *F = malloc((size_t)C * g * g * sizeof *F);
    sa3d_rng r = sa3d_rng_for(seed, 0, 0);
    for (size_t i = 0; i < (size_t)C * g * g; i++) F[i] = (float)(sa3d_rng_uniform(&r) - 0.5);
    sa3d_features_normalize(F, C, g * g);
    return F;
}

/* GeoAware's get_distance written out as its torch code reads, in double: bilinear upsampling to 64 x 64
 * (align_corners false, each output from the four neighbours), features times the mask, zeros set to -1e5,
 * then for every source foreground cell the smallest norm over all 4096 target cells, averaged. */
static void ref_upsample(double *out, const float *in, int C, int g) {
    for (int c = 0; c < C; c++)
        for (int oy = 0; oy < 64; oy++)
            for (int ox = 0; ox < 64; ox++) {
                double sy = ((double)oy + 0.5) * g / 64.0 - 0.5, sx = ((double)ox + 0.5) * g / 64.0 - 0.5;
                if (sy < 0) sy = 0;
                if (sx < 0) sx = 0;
                int y0 = (int)sy, x0 = (int)sx, y1 = y0 < g - 1 ? y0 + 1 : y0, x1 = x0 < g - 1 ? x0 + 1 : x0;
                double ly = sy - y0, lx = sx - x0;
                const float *m = in + (size_t)c * g * g;
                double m00 = (double)m[y0 * g + x0], m01 = (double)m[y0 * g + x1], m10 = (double)m[y1 * g + x0], m11 = (double)m[y1 * g + x1];
                out[((size_t)c * 64 + oy) * 64 + ox] = (1 - ly) * ((1 - lx) * m00 + lx * m01) +
                                                       ly * ((1 - lx) * m10 + lx * m11);
            }
}

static double ref_masked_distance(const float *a, const unsigned char *ma, const float *b, const unsigned char *mb,
                                  int C, int g) {
    double *A = malloc((size_t)C * 4096 * sizeof *A), *B = malloc((size_t)C * 4096 * sizeof *B);
    ref_upsample(A, a, C, g);
    ref_upsample(B, b, C, g);
    for (int c = 0; c < C; c++)
        for (int i = 0; i < 4096; i++) {
            A[(size_t)c * 4096 + i] *= ma[i];
            B[(size_t)c * 4096 + i] *= mb[i];
            if (A[(size_t)c * 4096 + i] == 0) A[(size_t)c * 4096 + i] = -100000;
            if (B[(size_t)c * 4096 + i] == 0) B[(size_t)c * 4096 + i] = -100000;
        }
    double sum = 0;
    int n = 0;
    for (int p = 0; p < 4096; p++) {
        if (!ma[p]) continue;
        double best = HUGE_VAL;
        for (int q = 0; q < 4096; q++) {
            double ss = 0;
            for (int c = 0; c < C; c++) {
                double d = A[(size_t)c * 4096 + p] - B[(size_t)c * 4096 + q];
                ss += d * d;
            }
            if (sqrt(ss) < best) best = sqrt(ss);
        }
        sum += best;
        n++;
    }
    free(A);
    free(B);
    return sum / n;   /* NaN for an empty source mask, as torch's mean */
}

/* get_distance_mutual_nn in double: cdist, argmin both ways, mean over mutual pairs. */
static double ref_mutual_nn(const float *a, const float *b, int C, int g) {
    int n = g * g;
    double *D = malloc((size_t)n * n * sizeof *D);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double ss = 0;
            for (int c = 0; c < C; c++) {
                double d = (double)a[(size_t)c * n + i] - (double)b[(size_t)c * n + j];
                ss += d * d;
            }
            D[(size_t)i * n + j] = sqrt(ss);
        }
    double sum = 0;
    int m = 0;
    for (int i = 0; i < n; i++) {
        int j = 0;
        for (int k = 1; k < n; k++) if (D[(size_t)i * n + k] < D[(size_t)i * n + j]) j = k;
        int back = 0;
        for (int k = 1; k < n; k++) if (D[(size_t)k * n + j] < D[(size_t)back * n + j]) back = k;
        if (back == i) { sum += D[(size_t)i * n + j]; m++; }
    }
    free(D);
    return sum / m;
}

static void case_flip_distances(void) {
    sa3d_error err = { 0 };
    /* mask cells: a 30 x 20 image all foreground is the band of square rows 140 .. 699 (840 / 30 = 28 px a
     * pixel, 560 rows of content centred); a mask of pixel column 0 only is square columns 0 .. 27 */
    float full[30 * 20], col0[30 * 20];
    for (int i = 0; i < 600; i++) { full[i] = 1.0f; col0[i] = (i % 30) == 0 ? 1.0f : 0.0f; }
    unsigned char mc[4096], mc0[4096];
    sa3d_flip_mask_cells(mc, full, 30, 20, 840);
    sa3d_flip_mask_cells(mc0, col0, 30, 20, 840);
    int bad = 0;
    for (int i = 0; i < 64; i++)
        for (int j = 0; j < 64; j++) {
            int y = i * 840 / 64, x = j * 840 / 64;
            bad += mc[i * 64 + j] != (y >= 140 && y <= 699);
            bad += mc0[i * 64 + j] != (y >= 140 && y <= 699 && x <= 27);
        }
    T_CHECK(bad == 0);

    /* masked distance against the written-out reference: two masks (a disc and a box), both ways round, an
     * empty target mask (every cell the -1e5 vector) and an empty source mask (NaN) */
    int C = 8, g = 60;
    float *a = random_unit_map(C, g, 1), *b = random_unit_map(C, g, 2);
    unsigned char ma[4096], mb[4096], none[4096] = { 0 };
    for (int i = 0; i < 4096; i++) {
        int y = i / 64, x = i % 64;
        ma[i] = (x - 30) * (x - 30) + (y - 34) * (y - 34) < 15 * 15;
        mb[i] = x >= 10 && x < 40 && y >= 20 && y < 50;
    }
    sa3d_feature_map fa = { C, g, a, 840, 840, 840 }, fb = { C, g, b, 840, 840, 840 };
    double got, want;
    const unsigned char *m1[3] = { ma, mb, ma }, *m2[3] = { mb, ma, none };
    const sa3d_feature_map *f1[3] = { &fa, &fb, &fa }, *f2[3] = { &fb, &fa, &fb };
    for (int k = 0; k < 3; k++) {
        T_OK(sa3d_flip_distance_masked(f1[k], m1[k], f2[k], m2[k], &got, &err), &err);
        want = ref_masked_distance(f1[k]->data, m1[k], f2[k]->data, m2[k], C, g);
        printf("  masked distance %d: %.9g (reference %.9g, rel diff %.2g)\n", k, got, want, fabs(got - want) / want);
        T_CHECK(fabs(got - want) <= 1e-6 * fabs(want));
    }
    T_OK(sa3d_flip_distance_masked(&fa, none, &fb, mb, &got, &err), &err);
    T_CHECK(isnan(got));
    /* mutual nearest neighbours on a 20 x 20 grid */
    float *c20 = random_unit_map(C, 20, 3), *d20 = random_unit_map(C, 20, 4);
    sa3d_feature_map fc = { C, 20, c20, 280, 280, 280 }, fd = { C, 20, d20, 280, 280, 280 };
    T_OK(sa3d_flip_distance_mutual_nn(&fc, &fd, &got, &err), &err);
    want = ref_mutual_nn(c20, d20, C, 20);
    printf("  mutual-nn distance: %.9g (reference %.9g, rel diff %.2g)\n", got, want, fabs(got - want) / want);
    T_CHECK(fabs(got - want) <= 1e-6 * fabs(want));
    /* the same bits at 1 and 2 threads */
    double t1, t2, u1, u2;
    sa3d_set_threads(1);
    T_OK(sa3d_flip_distance_masked(&fa, ma, &fb, mb, &t1, &err), &err);
    T_OK(sa3d_flip_distance_mutual_nn(&fa, &fb, &u1, &err), &err);
    sa3d_set_threads(2);
    T_OK(sa3d_flip_distance_masked(&fa, ma, &fb, mb, &t2, &err), &err);
    T_OK(sa3d_flip_distance_mutual_nn(&fa, &fb, &u2, &err), &err);
    sa3d_set_threads(0);
    T_CHECK(memcmp(&t1, &t2, sizeof t1) == 0 && memcmp(&u1, &u2, sizeof u1) == 0);
    sa3d_feature_map f9 = fb;
    f9.C = 9;
    T_STATUS(sa3d_flip_distance_masked(&fa, ma, &f9, mb, &got, &err), SA3D_ERR_ARG, &err);
    free(a);
    free(b);
    free(c20);
    free(d20);
}

/* A target that is the source's mirror image, features and all: the mirror is at distance 0 (the pose distances
 * compare sets of cell features, so the mirror's features are drawn independently, as a network's would differ),
 * the flip is taken and every keypoint whose twin is in the pair lands exactly on its true place there (the twin's
 * mirrored source position); the one without keeps its plain match. A target equal to the source keeps every
 * plain match. */
static void case_adapt_flip(void) {
    sa3d_error err = { 0 };
    int C = 16, g = 16, S = 224, n = 6;   /* 14 px cells, a square image: the square frame is the image */
    float *F = random_unit_map(C, g, 7), *Ff = random_unit_map(C, g, 8);
    sa3d_feature_map src = { C, g, F, S, S, S }, fl = { C, g, Ff, S, S, S };
    /* slots 0-1 and 2-3 swap, 4 is on the symmetry plane, 5's twin 6 is not in the pair */
    int fmap[SA3D_MAX_KPS];
    for (int k = 0; k < SA3D_MAX_KPS; k++) fmap[k] = k;
    fmap[0] = 1; fmap[1] = 0; fmap[2] = 3; fmap[3] = 2; fmap[5] = 6; fmap[6] = 5;
    int ids[6] = { 0, 1, 2, 3, 4, 5 }, cell[6][2] = { { 2, 3 }, { 11, 4 }, { 5, 9 }, { 13, 12 }, { 7, 1 }, { 9, 14 } };
    float kps[6][2], truth[6][2];
    for (int k = 0; k < n; k++) { kps[k][0] = 14.0f * cell[k][0] + 7.0f; kps[k][1] = 14.0f * cell[k][1] + 7.0f; }
    for (int k = 0; k < n; k++) {   /* in the mirrored image slot s sits at the mirror of its twin's place */
        int j = fmap[ids[k]] == 6 ? k : fmap[ids[k]];
        truth[k][0] = (float)S - kps[j][0];
        truth[k][1] = kps[j][1];
    }
    unsigned char all[4096];
    memset(all, 1, sizeof all);
    float *work = malloc(sa3d_baseline_work_floats(C, g, n) * sizeof *work);
    sa3d_baseline_params p = sa3d_baseline_params_default();
    for (int metric = SA3D_FLIP_MASK; metric <= SA3D_FLIP_MUTUAL_NN; metric++) {
        p.adapt_flip = metric;
        float pred[6][2], plain5[2];
        sa3d_flip_decision d;
        T_OK(sa3d_match_baseline(&src, &fl, (const float (*)[2])kps, n, &p, pred, work, &err), &err);
        memcpy(plain5, pred[5], sizeof plain5);
        sa3d_flip_inputs in = { &src, &fl, &fl, all, all, all, (const float (*)[2])kps, ids, n, fmap };
        T_OK(sa3d_baseline_adapt_flip(&in, &p, pred, work, &d, &err), &err);
        printf("  metric %d: distance %.4g, mirrored %.4g, flipped %d, %d keypoints replaced\n", metric, d.dist,
               d.dist_flip, d.flipped, d.n_replaced);
        T_CHECK(d.flipped == 1 && d.n_replaced == 5 && d.dist_flip < 1e-6 && d.dist > 0.1);
        for (int k = 0; k < 5; k++)
            T_CHECK(fabsf(pred[k][0] - truth[k][0]) < 0.05f && fabsf(pred[k][1] - truth[k][1]) < 0.05f);
        T_CHECK(memcmp(pred[5], plain5, sizeof plain5) == 0);   /* no twin: the plain match stays */
        /* target = source: the plain matches stay, bit for bit */
        float plain[6][2], again[6][2];
        T_OK(sa3d_match_baseline(&src, &src, (const float (*)[2])kps, n, &p, plain, work, &err), &err);
        memcpy(again, plain, sizeof plain);
        sa3d_flip_inputs same = { &src, &fl, &src, all, all, all, (const float (*)[2])kps, ids, n, fmap };
        T_OK(sa3d_baseline_adapt_flip(&same, &p, again, work, &d, &err), &err);
        T_CHECK(d.flipped == 0 && d.n_replaced == 0 && memcmp(plain, again, sizeof plain) == 0);
    }
    /* every option out of its domain is refused by each function that takes them, naming it */
    float pred[6][2];
    {
        const char *names[] = { "window_radius", "window_radius", "temperature", "temperature", "temperature",
                                "adapt_flip" };
        for (int k = 0; k < 6; k++) {
            sa3d_baseline_params b = sa3d_baseline_params_default();
            if (k == 0) b.window_radius = -1;
            if (k == 1) b.window_radius = SA3D_WINDOW_MAX_RADIUS + 1;
            if (k >= 2 && k <= 4) b.temperature = k == 2 ? 0.0f : k == 3 ? NAN : INFINITY;
            if (k == 5) b.adapt_flip = 3;
            T_STATUS(sa3d_baseline_params_check(&b, &err), SA3D_ERR_ARG, &err);
            T_CONTAINS(err.msg, names[k]);
            T_STATUS(sa3d_match_baseline(&src, &fl, (const float (*)[2])kps, n, &b, pred, work, &err), SA3D_ERR_ARG,
                     &err);
            T_CONTAINS(err.msg, names[k]);
            if (k != 5) {   /* (adapt_flip 3 is refused as the metric it must name) */
                b.adapt_flip = SA3D_FLIP_MUTUAL_NN;
                sa3d_flip_inputs fi = { &src, &fl, &fl, all, all, all, (const float (*)[2])kps, ids, n, fmap };
                T_STATUS(sa3d_baseline_adapt_flip(&fi, &b, pred, work, NULL, &err), SA3D_ERR_ARG, &err);
                T_CONTAINS(err.msg, names[k]);
            }
        }
        T_STATUS(sa3d_match_baseline(&src, &fl, (const float (*)[2])kps, n, NULL, pred, work, &err), SA3D_ERR_ARG,
                 &err);
        /* a query that is not a number is refused, naming it (its cell came from (int)floor(NaN): undefined) */
        float keep = kps[1][1];
        kps[1][1] = NAN;
        sa3d_baseline_params b = sa3d_baseline_params_default();
        T_STATUS(sa3d_match_baseline(&src, &fl, (const float (*)[2])kps, n, &b, pred, work, &err), SA3D_ERR_ARG,
                 &err);
        T_CONTAINS(err.msg, "query 1 is");
        b.adapt_flip = SA3D_FLIP_MUTUAL_NN;
        sa3d_flip_inputs fi = { &src, &fl, &fl, all, all, all, (const float (*)[2])kps, ids, n, fmap };
        T_STATUS(sa3d_baseline_adapt_flip(&fi, &b, pred, work, NULL, &err), SA3D_ERR_ARG, &err);
        T_CONTAINS(err.msg, "query 1 is");
        kps[1][1] = keep;
        /* and a finite query far outside the image takes the border cell (it was cast to int unclamped) */
        T_CHECK(sa3d_baseline_query_cell(1e30f, -1e30f, 840, 60) == 59);
        T_CHECK(sa3d_baseline_query_cell(-1e30f, 1e30f, 840, 60) == 59 * 60);
    }
    /* contract: a metric must be chosen, the mask metric needs its masks */
    sa3d_flip_inputs in = { &src, &fl, &fl, NULL, all, all, (const float (*)[2])kps, ids, n, fmap };
    p.adapt_flip = SA3D_FLIP_OFF;
    T_STATUS(sa3d_baseline_adapt_flip(&in, &p, pred, work, NULL, &err), SA3D_ERR_ARG, &err);
    p.adapt_flip = SA3D_FLIP_MASK;
    T_STATUS(sa3d_baseline_adapt_flip(&in, &p, pred, work, NULL, &err), SA3D_ERR_ARG, &err);
    T_CONTAINS(err.msg, "mask");
    free(F);
    free(Ff);
    free(work);
}

/* The matcher over a dataset: without use_flip the first pair fails with a message; with it, every pair is
 * decided (some flipped, on the generator's mirrored features), the batch entry point equals the per-pair one,
 * and a missing mirrored feature map is named. */
static void case_adapt_flip_matcher(void) {
    char root[512];
    sa3d_error err = { 0 };
    sa3d_synth_spair_params sp = sa3d_synth_spair_params_default();
    sp.n_categories = 2;
    sp.images_per_category = 6;
    sp.pairs_trn = sp.pairs_val = 0;
    sp.pairs_test = 24;
    sp.feature_channels = 32;
    sp.write_images = 0;
    sp.write_segmentations = sp.write_flip_features = 1;
    sa3d_dataset *ds = NULL;
    sa3d_provider *fp = NULL, *mp = NULL;
    int n = synth_split(root, "sa3d_eval_flip", &sp, &ds, &fp);
    T_CHECK(n == 24);
    sa3d_provider_params mq = sa3d_provider_params_default();
    mq.kind = SA3D_SOURCE_SEGMENTATION;
    if (ds) T_OK(sa3d_mask_provider_new(&mp, ds, &mq, &err), &err);
    for (int metric = SA3D_FLIP_MASK; metric <= SA3D_FLIP_MUTUAL_NN && n == 24; metric++) {
        sa3d_baseline_params bp = sa3d_baseline_params_default();
        bp.adapt_flip = metric;
        sa3d_baseline_matcher *bm = NULL, *bm2 = NULL;
        T_OK(sa3d_baseline_matcher_new(&bm, fp, sp.input_size, &bp, &err), &err);
        float (*ref)[SA3D_MAX_KPS][2] = calloc((size_t)n, sizeof *ref), (*got)[SA3D_MAX_KPS][2] = calloc((size_t)n,
                                                                                                        sizeof *got);
        const sa3d_pair **prs = calloc((size_t)n, sizeof *prs);
        for (int i = 0; i < n; i++) prs[i] = sa3d_dataset_pair(ds, "test", i);
        T_STATUS(sa3d_baseline_matcher_match(bm, prs[0], ref[0], &err), SA3D_ERR_ARG, &err);
        T_CONTAINS(err.msg, "use_flip");
        if (metric == SA3D_FLIP_MASK)
            T_STATUS(sa3d_baseline_matcher_use_flip(bm, SA3D_DATASET_SPAIR, NULL, &err), SA3D_ERR_ARG, &err);
        T_OK(sa3d_baseline_matcher_use_flip(bm, SA3D_DATASET_SPAIR, mp, &err), &err);
        for (int i = 0; i < n; i++) T_OK(sa3d_baseline_matcher_match(bm, prs[i], ref[i], &err), &err);
        sa3d_baseline_batch_stats st = sa3d_baseline_matcher_batch_stats(bm);
        printf("  metric %d: %ld of %ld pairs flipped\n", metric, st.flipped, st.flip_pairs);
        T_CHECK(st.flip_pairs == n && st.flipped > 0 && st.flipped < n);
        T_OK(sa3d_baseline_matcher_new(&bm2, fp, sp.input_size, &bp, &err), &err);
        T_OK(sa3d_baseline_matcher_use_flip(bm2, SA3D_DATASET_SPAIR, mp, &err), &err);
        memset(got, 0xff, (size_t)n * sizeof *got);
        T_OK(sa3d_baseline_matcher_match_batch(bm2, prs, n, got, &err), &err);
        T_CHECK(same_preds((const float (*)[SA3D_MAX_KPS][2])ref, (const float (*)[SA3D_MAX_KPS][2])got, ds, n));
        sa3d_baseline_matcher_free(bm);
        sa3d_baseline_matcher_free(bm2);
        free(ref);
        free(got);
        free(prs);
    }
    sa3d_provider_free(fp);
    sa3d_provider_free(mp);
    sa3d_dataset_close(ds);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    /* a feature file without its mirrored map: the image is named */
    sa3d_synth_spair_params sp2 = sp;
    sp2.write_flip_features = 0;
    if (synth_split(root, "sa3d_eval_flip", &sp2, &ds, &fp) == 24) {
        sa3d_baseline_params bp = sa3d_baseline_params_default();
        bp.adapt_flip = SA3D_FLIP_MUTUAL_NN;
        sa3d_baseline_matcher *bm = NULL;
        T_OK(sa3d_baseline_matcher_new(&bm, fp, sp.input_size, &bp, &err), &err);
        T_OK(sa3d_baseline_matcher_use_flip(bm, SA3D_DATASET_SPAIR, NULL, &err), &err);
        float pred[SA3D_MAX_KPS][2];
        const sa3d_pair *pr = sa3d_dataset_pair(ds, "test", 0);
        T_CHECK(sa3d_baseline_matcher_match(bm, pr, pred, &err) != SA3D_OK);
        T_CONTAINS(err.msg, pr->src);
        sa3d_baseline_matcher_free(bm);
    }
    sa3d_provider_free(fp);
    sa3d_dataset_close(ds);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(int argc, char **argv) {
    static const t_case cases[] = {
        { "1.1", "window soft-argmax equals the authors' function", case_soft_argmax },
        { "2.1", "PCK per-image/per-keypoint, category mean/pair-weighted, flags", case_pck_variants },
        { "2.2", "eval: fresh, resumed and rescored agree at the bound; bad predictions refused",
          case_written_predictions },
        { "3.1", "fused normalise + copy equals in-place normalise", case_normalize_copy },
        { "3.3", "fixed-order product = naive twin, any rows, 1 and 2 threads", case_fixed_order_gemm },
        { "3.2", "batched baseline = per-pair baseline (threads, budgets, eval)", case_batch_equals_pairwise },
        { "4.1", "adaptive flip: mask cells, masked and mutual-NN distances = GeoAware's", case_flip_distances },
        { "4.2", "adaptive flip: a mirrored target is matched through the mirror", case_adapt_flip },
        { "4.3", "adaptive flip in the matcher: contract, batch = per pair, errors", case_adapt_flip_matcher },
    };
    return t_run(cases, (int)(sizeof cases / sizeof cases[0]), argc, argv);
}
