/* Geometry core of the 3D prior (src/geom): parity with the authors' functions through the reference files
 * in <fixtures>/semalign3d-reference/ (every input and output read from the file, tolerances from its
 * README), plus finite-difference checks of both analytic gradients, similarity invariance of L_geom,
 * thread-count determinism, AdamW's known first step and focal-length recovery on a synthetic scene. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "geom/geom.h"
#include "t.h"
#include "t_json.h"

/* Tolerances: fixtures/semalign3d-reference/README.md, per file. */
#define TOL_CAMERA_REL 1e-12       /* camera.json: K, kpt_xyz, K_batched, projected_xy (rel) */
#define TOL_DEPTH_IMG_ABS 1e-12    /* camera.json: depth_image_xyz (abs) */
#define TOL_DEPTH_IMG_F32_ABS 1e-6 /* camera.json: depth_image_xyz_f_as_python_float (abs, informative) */
#define TOL_PSEUDO_ABS 1e-14       /* pseudo_depth.json (abs) */
#define TOL_FEATURES_ABS 1e-12     /* geom_features.json (abs) */
#define TOL_BETA_FIT_REL 1e-4      /* beta.json: fits (rel, iterative) */
#define TOL_BETA_LOGP_REL 1e-10    /* beta.json: log densities (rel) */
#define TOL_BETA_MODE_REL 1e-6     /* beta.json: modes (rel; exact in float32) */
#define TOL_ENERGY_REL 1e-9        /* geom_energy.json: energies (rel) */
#define TOL_GRAD_MAXREF 1e-9       /* geom_energy.json, focal_loss.json: |d| <= 1e-9 max|ref| */
#define TOL_FOCAL_LOSS_REL 1e-9    /* focal_loss.json: loss (rel) */
#define TOL_FOCAL_VAR_ABS 1e-12    /* focal_loss.json: variances (abs) */
#define TOL_TET_REL 1e-10          /* tet_warp.json: bary, weights, warped points (rel) */
#define TOL_TET_NEW_REL 1e-9       /* tet_warp.json: warped_bary_coords_new (rel) */
#define TOL_FD 1e-3                /* STYLE.md 7: |g - g_fd| <= 1e-3 max(1, |g_fd|) */
#define GRID 60                    /* METHOD.md 2.4: the 60 x 60 feature grid */

/* ------------------------------------------------------------------------------------------------------ */
/* JSON helpers                                                                                            */

static cJSON *load_ref(const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/semalign3d-reference/%s.json", t_fixtures_root(), name);
    char *text = NULL;
    sa3d_error err;
    if (sa3d_read_file(path, 64u << 20, &text, NULL, &err) != SA3D_OK) {
        T_FAIL("reference file missing or unreadable: %s", err.msg);
        return NULL;
    }
    cJSON *j = cJSON_Parse(text);
    sa3d_free(text);
    if (!j) T_FAIL("%s: bad JSON", path);
    else printf("  file %s\n", path);
    return j;
}


/* Max error reports. rel: |d| <= tol max(1, |ref|) per element; abs: |d| <= tol; maxref: |d| <= tol max|ref|. */
enum { REL, ABS, MAXREF };
static void compare(const char *what, const double *got, const double *ref, size_t n, double tol, int mode) {
    double mref = 0.0;
    for (size_t i = 0; i < n; i++) mref = fmax(mref, fabs(ref[i]));
    double worst = 0.0, worst_d = 0.0, bound = tol;
    size_t wi = 0;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(got[i] - ref[i]);
        double b = mode == REL ? tol * fmax(1.0, fabs(ref[i])) : mode == ABS ? tol : tol * mref;
        double q = d / b;
        if (!(q <= 1.0)) bad = 1;
        if (!(q <= worst)) { worst = q; worst_d = d; wi = i; bound = b; }
    }
    printf("  %-44s n=%-5zu max|d| %.3g (bound %.3g, %s %.0e) at %zu\n", what, n, worst_d, bound,
           mode == REL ? "rel" : mode == ABS ? "abs" : "max|ref| x", tol, wi);
    if (bad) T_FAIL("%s: index %zu: got %.17g, ref %.17g, |d| %.3g > bound %.3g", what, wi, got[wi], ref[wi],
                    worst_d, bound);
}
static void compare_exact(const char *what, const double *got, const double *ref, size_t n) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (got[i] != ref[i] && bad++ == 0) first = i;
    printf("  %-44s n=%-5zu mismatches %zu (exact)\n", what, n, bad);
    if (bad) T_FAIL("%s: %zu mismatches, first at %zu: got %.17g, ref %.17g", what, bad, first, got[first], ref[first]);
}

/* splitmix64 for the synthetic cases (STYLE.md 6: explicit seeded stream). */
typedef struct { uint64_t s; } rng;
static uint64_t rng_next(rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rng_unif(rng *r) { return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }
static double rng_range(rng *r, double lo, double hi) { return lo + (hi - lo) * rng_unif(r); }

/* ------------------------------------------------------------------------------------------------------ */
/* 1. camera.json                                                                                          */

static void case_camera(void) {
    cJSON *j = load_ref("camera");
    if (!j) return;
    /* K per (img_h, img_w, f) */
    const cJSON *cal = jget(j, "inputs.calibration");
    size_t nK;
    double *Kref = jarr(j, "outputs.K", &nK);
    int nc = cJSON_GetArraySize(cal);
    T_CHECK(nK == (size_t)nc * 9 && nc > 0);
    double *K = malloc(9 * (size_t)nc * sizeof(double));
    for (int i = 0; i < nc; i++) {
        const cJSON *c = cJSON_GetArrayItem(cal, i);
        sa3d_calib_normalized(K + 9 * i, jget(c, "img_h")->valuedouble, jget(c, "img_w")->valuedouble,
                              jget(c, "f")->valuedouble);
    }
    compare("K", K, Kref, nK, TOL_CAMERA_REL, REL);
    free(K); free(Kref);

    /* keypoint back-projection (|phi|) */
    int d[4];
    jshape(jget(j, "inputs.backproject_kpts.kpt_xy_normalized"), d, 4);
    int N = d[0], Kp = d[1];
    size_t n;
    double *hw = jarr(j, "inputs.backproject_kpts.img_shapes_hw", NULL);
    double *phi = jarr(j, "inputs.backproject_kpts.focal_lengths_inv", NULL);
    double *pix = jarr(j, "inputs.backproject_kpts.kpt_pixels_xy", NULL);
    double *xy = jarr(j, "inputs.backproject_kpts.kpt_xy_normalized", &n);
    double *dep = jarr(j, "inputs.backproject_kpts.kpt_depth", NULL);
    double *ref = jarr(j, "outputs.kpt_xyz", &n);
    T_CHECK(n == (size_t)N * Kp * 3);
    double *out = malloc(n * sizeof(double)), *xyp = malloc((size_t)N * Kp * 2 * sizeof(double));
    for (int b = 0; b < N; b++)   /* the normalised inputs are the integer pixels / S */
        for (int k = 0; k < 2 * Kp; k++)
            xyp[b * 2 * Kp + k] = pix[b * 2 * Kp + k] / fmax(hw[2 * b], hw[2 * b + 1]);
    compare("kpt_pixels_xy / S vs kpt_xy_normalized", xyp, xy, (size_t)N * Kp * 2, 1e-15, ABS);
    sa3d_backproject_kpts(out, phi, hw, xy, dep, N, Kp);
    compare("kpt_xyz", out, ref, n, TOL_CAMERA_REL, REL);
    free(hw); free(phi); free(pix); free(xy); free(dep); free(ref); free(out); free(xyp);

    /* batched K and projection */
    double ih = jget(j, "inputs.project.img_h")->valuedouble, iw = jget(j, "inputs.project.img_w")->valuedouble;
    size_t nf;
    double *fs = jarr(j, "inputs.project.f", &nf);
    double *pts = jarr(j, "inputs.project.points_xyz", &n);
    jshape(jget(j, "inputs.project.points_xyz"), d, 4);
    double *Kb = malloc(9 * nf * sizeof(double));
    for (size_t b = 0; b < nf; b++) sa3d_calib_normalized(Kb + 9 * b, ih, iw, fs[b]);
    double *Kbref = jarr(j, "outputs.K_batched", &n);
    compare("K_batched", Kb, Kbref, n, TOL_CAMERA_REL, REL);
    double *pref = jarr(j, "outputs.projected_xy_normalized", &n);
    double *pxy = malloc(n * sizeof(double));
    T_CHECK((size_t)d[0] == nf && n == (size_t)d[0] * d[1] * 2);
    sa3d_project_batched(pxy, pts, Kb, d[0], d[1]);
    compare("projected_xy_normalized", pxy, pref, n, TOL_CAMERA_REL, REL);
    free(fs); free(pts); free(Kb); free(Kbref); free(pref); free(pxy);

    /* depth image */
    jshape(jget(j, "inputs.depth_image.depth"), d, 4);
    double *dimg = jarr(j, "inputs.depth_image.depth", NULL);
    double f = jget(j, "inputs.depth_image.f")->valuedouble;
    double *xref = jarr(j, "outputs.depth_image_xyz", &n);
    double *xref32 = jarr(j, "outputs.depth_image_xyz_f_as_python_float", NULL);
    double *xo = malloc(n * sizeof(double));
    T_CHECK(n == (size_t)d[0] * d[1] * 3);
    sa3d_backproject_depth(xo, dimg, d[0], d[1], f);
    compare("depth_image_xyz", xo, xref, n, TOL_DEPTH_IMG_ABS, ABS);
    compare("depth_image_xyz_f_as_python_float", xo, xref32, n, TOL_DEPTH_IMG_F32_ABS, ABS);
    free(dimg); free(xref); free(xref32); free(xo);

    /* pixel <-> cell (float32, exact) */
    const cJSON *cin = jget(j, "inputs.cells"), *cout = jget(j, "outputs.cells");
    T_CHECK(cJSON_GetArraySize(cin) == cJSON_GetArraySize(cout) && cJSON_GetArraySize(cin) > 0);
    for (int i = 0; i < cJSON_GetArraySize(cin); i++) {
        const cJSON *ci = cJSON_GetArrayItem(cin, i), *co = cJSON_GetArrayItem(cout, i);
        int h = jget(ci, "img_h")->valueint, w = jget(ci, "img_w")->valueint;
        size_t np, nr;
        double *px = jarr(ci, "pixels_xy", &np), *cr = jarr(co, "cells_xy", &nr);
        int32_t *pi = to_i32(px, np), *cc = malloc(np * sizeof(int32_t));
        double *ccd = malloc(np * sizeof(double));
        T_CHECK(np == nr);
        sa3d_pixel_to_cell(cc, pi, (int)(np / 2), h, w, GRID);
        for (size_t k = 0; k < np; k++) ccd[k] = cc[k];
        char what[96];
        snprintf(what, sizeof what, "cells_xy (%d x %d)", h, w);
        compare_exact(what, ccd, cr, nr);
        double *cl = jarr(ci, "cells_in_xy", &np), *pr = jarr(co, "cells_to_pixels_xy", &nr);
        int32_t *cli = to_i32(cl, np), *po = malloc(np * sizeof(int32_t));
        double *pod = malloc(np * sizeof(double));
        T_CHECK(np == nr);
        sa3d_cell_to_pixel(po, cli, (int)(np / 2), h, w, GRID);
        for (size_t k = 0; k < np; k++) pod[k] = po[k];
        snprintf(what, sizeof what, "cells_to_pixels_xy (%d x %d)", h, w);
        compare_exact(what, pod, pr, nr);
        free(px); free(cr); free(pi); free(cc); free(ccd); free(cl); free(pr); free(cli); free(po); free(pod);
    }
    cJSON_Delete(j);
}

/* ------------------------------------------------------------------------------------------------------ */
/* 2. pseudo_depth.json                                                                                    */

static void case_pseudo_depth(void) {
    cJSON *j = load_ref("pseudo_depth");
    if (!j) return;
    int d[2];
    jshape(jget(j, "inputs.disparity"), d, 2);
    size_t n;
    double *disp = jarr(j, "inputs.disparity", &n);
    double *r0 = jarr(j, "outputs.depth", NULL), *r1 = jarr(j, "outputs.depth_flipped", NULL);
    double *z = malloc(n * sizeof(double));
    sa3d_error err;
    T_OK(sa3d_pseudo_depth(z, disp, d[0], d[1], 0, &err), &err);
    compare("depth", z, r0, n, TOL_PSEUDO_ABS, ABS);
    T_OK(sa3d_pseudo_depth(z, disp, d[0], d[1], 1, &err), &err);
    compare("depth_flipped", z, r1, n, TOL_PSEUDO_ABS, ABS);
    /* float32 twin (a float32 .npy): within float32 rounding of the double result */
    float *df = malloc(n * sizeof(float)), *zf = malloc(n * sizeof(float));
    double *zd = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) df[i] = (float)disp[i];
    T_OK(sa3d_pseudo_depth_f32(zf, df, d[0], d[1], 0, &err), &err);
    for (size_t i = 0; i < n; i++) zd[i] = (double)zf[i];
    compare("depth (float32 path, float32 rounding)", zd, r0, n, 4e-7, ABS);
    /* negative: a zero map has no positive maximum */
    memset(z, 0, n * sizeof(double));
    T_STATUS(sa3d_pseudo_depth(zd, z, d[0], d[1], 0, &err), SA3D_ERR_NUMERIC, &err);
    free(disp); free(r0); free(r1); free(z); free(df); free(zf); free(zd);
    cJSON_Delete(j);
}

/* ------------------------------------------------------------------------------------------------------ */
/* 3. relations.json                                                                                       */

static void cmp_i32(const char *what, const int32_t *got, size_t n_got, const cJSON *ref) {
    size_t n = jcount(ref);
    double *r = malloc((n + 1) * sizeof(double)), *g = malloc((n_got + 1) * sizeof(double));
    jflat_rec(r, n, 0, ref, 0);
    for (size_t i = 0; i < n_got; i++) g[i] = got[i];
    if (n != n_got) T_FAIL("%s: %zu values, reference has %zu", what, n_got, n);
    else compare_exact(what, g, r, n);
    free(r); free(g);
}

static void case_relations(void) {
    cJSON *j = load_ref("relations");
    if (!j) return;
    const cJSON *ns = jget(j, "inputs.n"), *cases = jget(j, "outputs.cases");
    T_CHECK(cJSON_GetArraySize(ns) == cJSON_GetArraySize(cases) && cJSON_GetArraySize(ns) > 0);
    for (int i = 0; i < cJSON_GetArraySize(cases); i++) {
        const cJSON *c = cJSON_GetArrayItem(cases, i);
        int n = cJSON_GetArrayItem(ns, i)->valueint;
        T_CHECK(jget(c, "n")->valueint == n);
        sa3d_geom_relations r;
        sa3d_error err;
        T_OK(sa3d_geom_relations_make(&r, n, &err), &err);
        printf("  n = %d: %zu edges, %zu edge pairs, %zu tet relations\n", n, r.n_edges, r.n_pairs, r.n_tets);
        cmp_i32("edges", r.edges, 2 * r.n_edges, jget(c, "edges"));
        cmp_i32("e1", r.e1, 2 * r.n_pairs, jget(c, "e1"));
        cmp_i32("e2", r.e2, 2 * r.n_pairs, jget(c, "e2"));
        cmp_i32("edge_pair_edge_indices", r.pair_edges, 2 * r.n_pairs, jget(c, "edge_pair_edge_indices"));
        cmp_i32("t", r.t, 3 * r.n_tets, jget(c, "t"));
        cmp_i32("v", r.v, r.n_tets, jget(c, "v"));
        sa3d_geom_relations_free(&r);
    }
    /* the n = 30 counts of METHOD.md 4.2 (bus / car) */
    sa3d_geom_relations r;
    sa3d_error err;
    T_OK(sa3d_geom_relations_make(&r, 30, &err), &err);
    T_CHECK(r.n_pairs == 94395 && r.n_tets == 109620);
    sa3d_geom_relations_free(&r);
    T_STATUS(sa3d_geom_relations_make(&r, 0, &err), SA3D_ERR_ARG, &err);
    cJSON_Delete(j);
}

/* ------------------------------------------------------------------------------------------------------ */
/* 4. geom_features.json                                                                                   */

static void case_features(void) {
    cJSON *j = load_ref("geom_features");
    if (!j) return;
    int d[3];
    jshape(jget(j, "inputs.vertices"), d, 3);
    int B = d[0], n = d[1];
    size_t np, nt, k;
    double *Y = jarr(j, "inputs.vertices", NULL);
    double *e1d = jarr(j, "inputs.e1", &np), *e2d = jarr(j, "inputs.e2", NULL);
    double *td = jarr(j, "inputs.t", &nt), *vd = jarr(j, "inputs.v", NULL);
    np /= 2;
    nt /= 3;
    int32_t *e1 = to_i32(e1d, 2 * np), *e2 = to_i32(e2d, 2 * np), *t = to_i32(td, 3 * nt), *v = to_i32(vd, nt);
    double *A = malloc((size_t)B * np * sizeof(double)), *R = malloc((size_t)B * np * sizeof(double));
    double *cx = malloc((size_t)B * nt * sizeof(double)), *cy = malloc((size_t)B * nt * sizeof(double));
    double *cz = malloc((size_t)B * nt * sizeof(double));
    sa3d_edge_pair_features(A, R, Y, B, n, e1, e2, np);
    sa3d_tet_features(cx, cy, cz, Y, B, n, t, v, nt);
    double *ref = jarr(j, "outputs.edge_pair_cos_angles", &k);
    T_CHECK(k == (size_t)B * np);
    compare("edge_pair_cos_angles", A, ref, k, TOL_FEATURES_ABS, ABS);
    free(ref);
    ref = jarr(j, "outputs.edge_pair_ratios", &k);
    compare("edge_pair_ratios", R, ref, k, TOL_FEATURES_ABS, ABS);
    free(ref);
    const char *names[3] = { "outputs.cos_angle_x", "outputs.cos_angle_y", "outputs.cos_angle_z" };
    double *got[3] = { cx, cy, cz };
    for (int i = 0; i < 3; i++) {
        ref = jarr(j, names[i], &k);
        T_CHECK(k == (size_t)B * nt);
        compare(names[i] + 8, got[i], ref, k, TOL_FEATURES_ABS, ABS);
        free(ref);
    }
    free(Y); free(e1d); free(e2d); free(td); free(vd); free(e1); free(e2); free(t); free(v);
    free(A); free(R); free(cx); free(cy); free(cz);
    cJSON_Delete(j);
}

/* ------------------------------------------------------------------------------------------------------ */
/* 5. beta.json                                                                                            */

static void case_beta_fit(void) {
    cJSON *j = load_ref("beta");
    if (!j) return;
    const cJSON *samples = jget(j, "inputs.samples"), *labels = jget(j, "inputs.sample_labels");
    size_t nb, nr;
    double *bounds = jarr(j, "inputs.bounds", &nb);
    double *ref = jarr(j, "outputs.fits_alpha_beta", &nr);
    int m = cJSON_GetArraySize(samples);
    T_CHECK(nr == 2 * (size_t)m && nb == 2 * (size_t)m);
    double *got = malloc(nr * sizeof(double));
    for (int i = 0; i < m; i++) {
        size_t ns = jcount(cJSON_GetArrayItem(samples, i));
        double *x = malloc((ns + 1) * sizeof(double));
        jflat_rec(x, ns, 0, cJSON_GetArrayItem(samples, i), 0);
        sa3d_error err;
        T_OK(sa3d_beta_fit(&got[2 * i], &got[2 * i + 1], x, ns, bounds[2 * i], bounds[2 * i + 1], &err), &err);
        const cJSON *lab = cJSON_GetArrayItem(labels, i);
        printf("  fit %-52s (%.10g, %.10g) ref (%.10g, %.10g)\n", cJSON_IsString(lab) ? lab->valuestring : "?",
               got[2 * i], got[2 * i + 1], ref[2 * i], ref[2 * i + 1]);
        free(x);
    }
    compare("fits_alpha_beta", got, ref, nr, TOL_BETA_FIT_REL, REL);
    /* negatives: zero variance has no ML fit; no samples give the uniform (1, 1) */
    double same[3] = { 0.3, 0.3, 0.3 }, a, b;
    sa3d_error err;
    T_STATUS(sa3d_beta_fit(&a, &b, same, 3, 0.0, 1.0, &err), SA3D_ERR_NUMERIC, &err);
    T_OK(sa3d_beta_fit(&a, &b, same, 0, 0.0, 1.0, &err), &err);
    T_CHECK(a == 1.0 && b == 1.0);
    free(bounds); free(ref); free(got);
    cJSON_Delete(j);
}

static void case_beta_logprob(void) {
    cJSON *j = load_ref("beta");
    if (!j) return;
    const char *sets[2] = { "logprob_01", "logprob_pm1" };
    for (int s = 0; s < 2; s++) {
        char key[96];
        snprintf(key, sizeof key, "inputs.%s", sets[s]);
        const cJSON *in = jget(j, key);
        size_t n, nr;
        double *x = jarr(in, "x", &n), *al = jarr(in, "alpha", NULL), *be = jarr(in, "beta", NULL);
        double lo = jget(in, "x_low")->valuedouble, hi = jget(in, "x_high")->valuedouble;
        snprintf(key, sizeof key, "outputs.%s", sets[s]);
        double *ref = jarr(j, key, &nr);
        T_CHECK(n == nr);
        double *got = malloc(n * sizeof(double));
        for (size_t i = 0; i < n; i++) {
            sa3d_beta_term bt = sa3d_beta_term_make(al[i], be[i]);
            got[i] = sa3d_beta_logpdf(x[i], lo, hi, &bt, NULL);
        }
        compare(sets[s], got, ref, n, TOL_BETA_LOGP_REL, REL);
        free(x); free(al); free(be); free(ref); free(got);
    }
    cJSON_Delete(j);
}

static void case_beta_mode(void) {
    cJSON *j = load_ref("beta");
    if (!j) return;
    size_t n, nr;
    double *al = jarr(j, "inputs.mode.alpha", &n), *be = jarr(j, "inputs.mode.beta", NULL);
    double *ref = jarr(j, "outputs.mode", &nr);
    T_CHECK(n == nr);
    double *got = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) got[i] = (double)sa3d_beta_mode_f32((float)al[i], (float)be[i]);
    compare("mode (float32)", got, ref, n, TOL_BETA_MODE_REL, REL);
    compare_exact("mode (float32, bitwise)", got, ref, n);
    free(al); free(be); free(ref); free(got);
    cJSON_Delete(j);
}

/* Special functions: ln Gamma against libm (single-threaded here), digamma and trigamma against the
 * recurrences and central differences of ln Gamma / digamma across the series switch at 10. */
static void case_special(void) {
    double worst_lg = 0, worst_dg = 0, worst_tg = 0;
    for (double x = 1e-3; x < 2e7; x *= 1.37) {
        double lg = lgamma(x), e = fabs(sa3d_lgamma_pos(x) - lg) / fmax(1.0, fabs(lg));
        worst_lg = fmax(worst_lg, e);
        double d1 = fabs(sa3d_digamma(x + 1.0) - sa3d_digamma(x) - 1.0 / x) / fmax(1.0, 1.0 / x);
        double t1 = fabs(sa3d_trigamma(x) - sa3d_trigamma(x + 1.0) - 1.0 / (x * x)) / sa3d_trigamma(x);
        worst_dg = fmax(worst_dg, d1);
        worst_tg = fmax(worst_tg, t1);
    }
    double h = 1e-5, worst_fd = 0;
    for (double x = 0.3; x < 40.0; x *= 1.3) {
        double fd = (sa3d_lgamma_pos(x + h) - sa3d_lgamma_pos(x - h)) / (2 * h);
        double ft = (sa3d_digamma(x + h) - sa3d_digamma(x - h)) / (2 * h);
        worst_fd = fmax(worst_fd, fmax(fabs(fd - sa3d_digamma(x)) / fmax(1.0, fabs(fd)),
                                       fabs(ft - sa3d_trigamma(x)) / fmax(1.0, fabs(ft))));
    }
    /* known values: psi(1) = -gamma, psi'(1) = pi^2 / 6 */
    double e1 = fabs(sa3d_digamma(1.0) + 0.57721566490153286061), e2 = fabs(sa3d_trigamma(1.0) - 1.6449340668482264365);
    printf("  lgamma vs libm rel %.3g (bound 1e-13); psi recurrence %.3g, psi' recurrence %.3g (bound 1e-13)\n",
           worst_lg, worst_dg, worst_tg);
    printf("  derivative checks %.3g (bound 1e-6); psi(1) err %.3g, psi'(1) err %.3g (bound 1e-15)\n", worst_fd, e1,
           e2);
    T_CHECK(worst_lg <= 1e-13 && worst_dg <= 1e-13 && worst_tg <= 1e-13);
    T_CHECK(worst_fd <= 1e-6);
    T_CHECK(e1 <= 1e-15 && e2 <= 1e-15);
}

/* ------------------------------------------------------------------------------------------------------ */
/* 6. geom_energy.json                                                                                     */

typedef struct energy_ref {
    int B, n;
    double *Y, *e1d, *e2d, *td, *vd;
    int32_t *e1, *e2, *t, *v;
    sa3d_beta_term *bt;   /* ratio, cos [np] then cx, cy, cz [nt] */
    sa3d_geom_terms g;
} energy_ref;

static int energy_ref_load(energy_ref *r, const cJSON *j) {
    memset(r, 0, sizeof *r);
    int d[3];
    jshape(jget(j, "inputs.keypoints"), d, 3);
    r->B = d[0];
    r->n = d[1];
    size_t np, nt;
    r->Y = jarr(j, "inputs.keypoints", NULL);
    r->e1d = jarr(j, "inputs.e1", &np);
    r->e2d = jarr(j, "inputs.e2", NULL);
    r->td = jarr(j, "inputs.t", &nt);
    r->vd = jarr(j, "inputs.v", NULL);
    np /= 2;
    nt /= 3;
    r->e1 = to_i32(r->e1d, 2 * np);
    r->e2 = to_i32(r->e2d, 2 * np);
    r->t = to_i32(r->td, 3 * nt);
    r->v = to_i32(r->vd, nt);
    r->bt = malloc((2 * np + 3 * nt + 1) * sizeof(sa3d_beta_term));
    const char *keys[5] = { "edge_pair_ratios", "edge_pair_cos_angles", "cos_angle_x", "cos_angle_y", "cos_angle_z" };
    sa3d_beta_term *dst[5] = { r->bt, r->bt + np, r->bt + 2 * np, r->bt + 2 * np + nt, r->bt + 2 * np + 2 * nt };
    for (int f = 0; f < 5; f++) {
        char ka[96], kb[96];
        snprintf(ka, sizeof ka, "inputs.stats.%s_alpha", keys[f]);
        snprintf(kb, sizeof kb, "inputs.stats.%s_beta", keys[f]);
        size_t na;
        double *a = jarr(j, ka, &na), *b = jarr(j, kb, NULL);
        if (na != (f < 2 ? np : nt)) T_FAIL("%s: %zu values", ka, na);
        else
            for (size_t i = 0; i < na; i++) dst[f][i] = sa3d_beta_term_make(a[i], b[i]);
        free(a);
        free(b);
    }
    r->g = (sa3d_geom_terms){ np, r->e1, r->e2, dst[0], dst[1], nt, r->t, r->v, dst[2], dst[3], dst[4] };
    sa3d_error err;
    T_OK(sa3d_geom_terms_check(&r->g, r->n, &err), &err);
    return 1;
}
static void energy_ref_free(energy_ref *r) {
    free(r->Y); free(r->e1d); free(r->e2d); free(r->td); free(r->vd);
    free(r->e1); free(r->e2); free(r->t); free(r->v); free(r->bt);
}

static void case_energy(void) {
    cJSON *j = load_ref("geom_energy");
    if (!j) return;
    energy_ref r;
    energy_ref_load(&r, j);
    size_t nY = (size_t)r.B * r.n * 3;
    double *E = malloc(r.B * sizeof(double)), *G = malloc(nY * sizeof(double));
    const char *ek[2] = { "outputs.energy", "outputs.energy_use_tets_false" };
    const char *gk[2] = { "outputs.grad_keypoints", "outputs.grad_keypoints_use_tets_false" };
    for (int u = 0; u < 2; u++) {
        int use_tets = u == 0;
        sa3d_geom_energy(E, G, r.Y, r.B, r.n, &r.g, use_tets);
        size_t ne, ng;
        double *eref = jarr(j, ek[u], &ne), *gref = jarr(j, gk[u], &ng);
        T_CHECK(ne == (size_t)r.B && ng == nY);
        compare(ek[u] + 8, E, eref, ne, TOL_ENERGY_REL, REL);
        for (int b = 0; b < r.B; b++) {   /* gradient bound per configuration: 1e-9 max|ref| */
            char what[96];
            snprintf(what, sizeof what, "%s [config %d]", gk[u] + 8, b);
            compare(what, G + (size_t)b * r.n * 3, gref + (size_t)b * r.n * 3, (size_t)r.n * 3, TOL_GRAD_MAXREF,
                    MAXREF);
        }
        /* the energy without gradient is the same number */
        double *E2 = malloc(r.B * sizeof(double));
        sa3d_geom_energy(E2, NULL, r.Y, r.B, r.n, &r.g, use_tets);
        T_CHECK(memcmp(E, E2, r.B * sizeof(double)) == 0);
        free(E2); free(eref); free(gref);
    }
    free(E); free(G);
    energy_ref_free(&r);
    cJSON_Delete(j);
}

/* Random configuration: n points in a unit-ish cloud, scaled by s. */
static void random_config(double *Y, int n, double s, rng *g) {
    for (int i = 0; i < 3 * n; i++) Y[i] = s * rng_range(g, -1.0, 1.0);
}

/* Central finite differences in double on random configurations, with the file's relations and Beta terms and
 * with freshly generated ones (n = 7, random Beta terms), tets on and off. */
static void case_energy_fd(void) {
    cJSON *j = load_ref("geom_energy");
    if (!j) return;
    energy_ref r;
    energy_ref_load(&r, j);
    /* a second relation set: all relations of n = 7 with random Beta terms */
    sa3d_geom_relations rel;
    sa3d_error err;
    T_OK(sa3d_geom_relations_make(&rel, 7, &err), &err);
    rng gen = { 2024 };
    sa3d_beta_term *bt = malloc((2 * rel.n_pairs + 3 * rel.n_tets) * sizeof(sa3d_beta_term));
    for (size_t i = 0; i < 2 * rel.n_pairs + 3 * rel.n_tets; i++)
        bt[i] = sa3d_beta_term_make(rng_range(&gen, 1.2, 9.0), rng_range(&gen, 1.2, 9.0));
    size_t np = rel.n_pairs, nt = rel.n_tets;
    sa3d_geom_terms g7 = { np, rel.e1, rel.e2, bt, bt + np, nt, rel.t, rel.v, bt + 2 * np, bt + 2 * np + nt,
                           bt + 2 * np + 2 * nt };
    const sa3d_geom_terms *sets[2] = { &r.g, &g7 };
    int ns[2] = { r.n, 7 };
    double worst = 0.0;
    size_t checked = 0;
    for (int s = 0; s < 2; s++) {
        int n = ns[s];
        double Y[3 * 7], G[3 * 7], Yp[3 * 7];
        for (int trial = 0; trial < 6; trial++) {
            double scale = trial < 2 ? 1.0 : (trial < 4 ? 0.05 : 20.0);
            random_config(Y, n, scale, &gen);
            for (int use_tets = 0; use_tets < 2; use_tets++) {
                double E;
                sa3d_geom_energy(&E, G, Y, 1, n, sets[s], use_tets);
                for (int i = 0; i < 3 * n; i++) {
                    double h = 1e-6 * scale, Ep, Em;
                    memcpy(Yp, Y, sizeof(double) * 3 * n);
                    Yp[i] = Y[i] + h;
                    sa3d_geom_energy(&Ep, NULL, Yp, 1, n, sets[s], use_tets);
                    Yp[i] = Y[i] - h;
                    sa3d_geom_energy(&Em, NULL, Yp, 1, n, sets[s], use_tets);
                    double fd = (Ep - Em) / (2 * h);
                    double q = fabs(G[i] - fd) / (TOL_FD * fmax(1.0, fabs(fd)));
                    if (!(q <= 1.0))
                        T_FAIL("set %d trial %d tets %d coord %d: g %.10g fd %.10g", s, trial, use_tets, i, G[i], fd);
                    worst = fmax(worst, q * TOL_FD);
                    checked++;
                }
            }
        }
    }
    printf("  %zu coordinates: max |g - g_fd| / max(1, |g_fd|) %.3g (bound %.0e)\n", checked, worst, TOL_FD);
    free(bt);
    sa3d_geom_relations_free(&rel);
    energy_ref_free(&r);
    cJSON_Delete(j);
}

/* Rotation about a random axis (Rodrigues). */
static void random_rotation(double R[9], rng *g) {
    double ax[3] = { rng_range(g, -1, 1), rng_range(g, -1, 1), rng_range(g, -1, 1) };
    double l = sqrt(ax[0] * ax[0] + ax[1] * ax[1] + ax[2] * ax[2]);
    for (int i = 0; i < 3; i++) ax[i] /= l;
    double th = rng_range(g, 0.3, 3.0), c = cos(th), s = sin(th), C = 1 - c;
    double x = ax[0], y = ax[1], z = ax[2];
    double M[9] = { c + x * x * C, x * y * C - z * s, x * z * C + y * s, y * x * C + z * s, c + y * y * C,
                    y * z * C - x * s, z * x * C - y * s, z * y * C + x * s, c + z * z * C };
    memcpy(R, M, sizeof M);
}

/* L_geom is invariant to rotation and translation exactly (the eps terms too). Under uniform scale s only up
 * to the eps terms: the first normalisation of each vector carries |w| / (|w| + 1e-6), so
 * E(s Y) = E_inf + C / s + O(1 / s^2). C is large here (about 3e-4 |E| at scale 1: features near the Beta
 * support ends have |dlogB/dx| in the hundreds), so the 1e-9 check uses scales 1e6, 1e8, 1e10 (eps effect
 * <= 3e-10 |E|), and the eps part is checked against its 1 / s law: E(1e3 Y) - E(1e6 Y) must be
 * (E(Y) - E(1e6 Y)) (1e-3 - 1e-6) / (1 - 1e-6) within 5 %. */
static void case_energy_invariance(void) {
    cJSON *j = load_ref("geom_energy");
    if (!j) return;
    energy_ref r;
    energy_ref_load(&r, j);
    int n = r.n;
    rng gen = { 77 };
    double *Y = malloc(3 * n * sizeof(double)), *Z = malloc(3 * n * sizeof(double));
    double *G = malloc(3 * n * sizeof(double)), *GZ = malloc(3 * n * sizeof(double));
    double worst_rt = 0, worst_s = 0, worst_g = 0, info_eps = 0, worst_law = 0;
    for (int trial = 0; trial < 20; trial++) {
        double lmin;
        do {   /* shortest edge >= 0.2 */
            random_config(Y, n, 1.0, &gen);
            lmin = (double)INFINITY;
            for (int a = 0; a < n; a++)
                for (int b = a + 1; b < n; b++) {
                    double d0 = Y[3 * a] - Y[3 * b], d1 = Y[3 * a + 1] - Y[3 * b + 1], d2 = Y[3 * a + 2] - Y[3 * b + 2];
                    lmin = fmin(lmin, sqrt(d0 * d0 + d1 * d1 + d2 * d2));
                }
        } while (lmin < 0.2);
        double R[9], t[3] = { rng_range(&gen, -3, 3), rng_range(&gen, -3, 3), rng_range(&gen, -3, 3) };
        random_rotation(R, &gen);
        for (int use_tets = 0; use_tets < 2; use_tets++) {
            double E, ER;
            sa3d_geom_energy(&E, G, Y, 1, n, &r.g, use_tets);
            for (int i = 0; i < n; i++)
                for (int a = 0; a < 3; a++)
                    Z[3 * i + a] = R[3 * a] * Y[3 * i] + R[3 * a + 1] * Y[3 * i + 1] + R[3 * a + 2] * Y[3 * i + 2] + t[a];
            sa3d_geom_energy(&ER, GZ, Z, 1, n, &r.g, use_tets);
            worst_rt = fmax(worst_rt, fabs(ER - E) / fabs(E));
            double gmax = 0;   /* gradient rotates with the configuration: g(RY + t) = R g(Y) */
            for (int i = 0; i < 3 * n; i++) gmax = fmax(gmax, fabs(G[i]));
            for (int i = 0; i < n; i++)
                for (int a = 0; a < 3; a++) {
                    double rg = R[3 * a] * G[3 * i] + R[3 * a + 1] * G[3 * i + 1] + R[3 * a + 2] * G[3 * i + 2];
                    worst_g = fmax(worst_g, fabs(GZ[3 * i + a] - rg) / gmax);
                }
            const double scales[4] = { 1e6, 1e8, 1e10, 1e3 };
            double Es[4];
            for (int s = 0; s < 4; s++) {
                for (int i = 0; i < 3 * n; i++) Z[i] = scales[s] * Y[i];
                sa3d_geom_energy(&Es[s], NULL, Z, 1, n, &r.g, use_tets);
            }
            worst_s = fmax(worst_s, fmax(fabs(Es[1] - Es[0]), fabs(Es[2] - Es[0])) / fabs(Es[0]));
            info_eps = fmax(info_eps, fabs(Es[0] - E) / fabs(E));
            double pred = (E - Es[0]) * (1e-3 - 1e-6) / (1.0 - 1e-6), got = Es[3] - Es[0];
            worst_law = fmax(worst_law, fabs(got - pred) / (fabs(pred) + 1e-12 * fabs(E)));
        }
    }
    printf("  rotation + translation: max rel |dE| %.3g (bound 1e-12); gradient R g: %.3g of max|g| (bound 1e-12)\n",
           worst_rt, worst_g);
    printf("  uniform scale 1e6 / 1e8 / 1e10: max rel |dE| %.3g (bound 1e-9)\n", worst_s);
    printf("  eps effect: scale 1 vs 1e6 %.3g rel; scale 1e3 vs its 1/s prediction: %.3g rel (bound 5e-2)\n",
           info_eps, worst_law);
    T_CHECK(worst_rt <= 1e-12 && worst_g <= 1e-12);
    T_CHECK(worst_s <= 1e-9);
    T_CHECK(worst_law <= 5e-2);
    free(Y); free(Z); free(G); free(GZ);
    energy_ref_free(&r);
    cJSON_Delete(j);
}

/* ------------------------------------------------------------------------------------------------------ */
/* 7. focal_loss.json                                                                                      */

typedef struct focal_in {
    int N, K;
    double *phi, *hw, *xy, *dep, *vis_d;
    uint8_t *vis;
} focal_in;

static void focal_in_load(focal_in *f, const cJSON *j) {
    int d[3];
    jshape(jget(j, "inputs.kpt_xy_normalized"), d, 3);
    f->N = d[0];
    f->K = d[1];
    size_t n;
    f->phi = jarr(j, "inputs.focal_lengths_inv", NULL);
    f->hw = jarr(j, "inputs.img_shapes_hw", NULL);
    f->xy = jarr(j, "inputs.kpt_xy_normalized", NULL);
    f->dep = jarr(j, "inputs.kpt_depth", NULL);
    f->vis_d = jarr(j, "inputs.visible", &n);
    f->vis = malloc(n + 1);
    for (size_t i = 0; i < n; i++) f->vis[i] = f->vis_d[i] != 0.0;
}
static void focal_in_free(focal_in *f) {
    free(f->phi); free(f->hw); free(f->xy); free(f->dep); free(f->vis_d); free(f->vis);
}

static void case_focal(void) {
    cJSON *j = load_ref("focal_loss");
    if (!j) return;
    focal_in f;
    focal_in_load(&f, j);
    size_t K3 = (size_t)f.K * f.K * f.K, n;
    /* the normalised inputs are the integer pixels / S */
    double *pix = jarr(j, "inputs.kpt_pixels_xy", &n), *xyp = malloc(n * sizeof(double));
    for (int b = 0; b < f.N; b++)   /* missing keypoints carry xy = 0 whatever their pixels */
        for (int k = 0; k < 2 * f.K; k++)
            xyp[b * 2 * f.K + k] = f.vis[b * f.K + k / 2] ? pix[b * 2 * f.K + k] / fmax(f.hw[2 * b], f.hw[2 * b + 1])
                                                          : 0.0;
    compare("kpt_pixels_xy / S vs kpt_xy_normalized (visible)", xyp, f.xy, n, 1e-15, ABS);
    /* masks: visible[i] and visible[j] and visible[k] */
    double *mref = jarr(j, "outputs.mask_ijk_per_image", &n), *mask = malloc(n * sizeof(double));
    T_CHECK(n == (size_t)f.N * K3);
    for (int b = 0; b < f.N; b++)
        for (size_t q = 0; q < K3; q++) {
            size_t i = q / ((size_t)f.K * f.K), jj = q / f.K % f.K, k = q % f.K;
            const uint8_t *v = f.vis + (size_t)b * f.K;
            mask[(size_t)b * K3 + q] = v[i] && v[jj] && v[k];
        }
    compare_exact("mask_ijk_per_image", mask, mref, n);
    void *work = malloc(sa3d_focal_loss_work_bytes(f.N, f.K));
    double loss, *grad = malloc(f.N * sizeof(double));
    double *cv = malloc(K3 * sizeof(double)), *rv = malloc(K3 * sizeof(double));
    sa3d_focal_loss(&loss, grad, cv, rv, f.phi, f.hw, f.xy, f.dep, f.vis, f.N, f.K, work);
    double lref = jget(j, "outputs.loss")->valuedouble;
    compare("loss", &loss, &lref, 1, TOL_FOCAL_LOSS_REL, REL);
    double *ref = jarr(j, "outputs.cos_angles_var", &n);
    T_CHECK(n == K3);
    compare("cos_angles_var", cv, ref, n, TOL_FOCAL_VAR_ABS, ABS);
    free(ref);
    ref = jarr(j, "outputs.ratios_var", &n);
    compare("ratios_var", rv, ref, n, TOL_FOCAL_VAR_ABS, ABS);
    free(ref);
    ref = jarr(j, "outputs.grad_focal_lengths_inv", &n);
    T_CHECK(n == (size_t)f.N);
    compare("grad_focal_lengths_inv", grad, ref, n, TOL_GRAD_MAXREF, MAXREF);
    free(ref);
    free(pix); free(xyp); free(mref); free(mask); free(work); free(grad); free(cv); free(rv);
    focal_in_free(&f);
    cJSON_Delete(j);
}

/* Central differences of the focal loss in phi, at the file's phi and at random phi of both signs. */
static void case_focal_fd(void) {
    cJSON *j = load_ref("focal_loss");
    if (!j) return;
    focal_in f;
    focal_in_load(&f, j);
    void *work = malloc(sa3d_focal_loss_work_bytes(f.N, f.K));
    double *g = malloc(f.N * sizeof(double)), *p = malloc(f.N * sizeof(double));
    rng gen = { 99 };
    double worst = 0;
    for (int trial = 0; trial < 6; trial++) {
        for (int b = 0; b < f.N; b++)
            p[b] = trial == 0 ? f.phi[b] : (rng_unif(&gen) < 0.3 ? -1.0 : 1.0) * rng_range(&gen, 0.1, 0.6);
        double L;
        sa3d_focal_loss(&L, g, NULL, NULL, p, f.hw, f.xy, f.dep, f.vis, f.N, f.K, work);
        for (int b = 0; b < f.N; b++) {
            double h = 1e-6, Lp, Lm, keep = p[b];
            p[b] = keep + h;
            sa3d_focal_loss(&Lp, NULL, NULL, NULL, p, f.hw, f.xy, f.dep, f.vis, f.N, f.K, work);
            p[b] = keep - h;
            sa3d_focal_loss(&Lm, NULL, NULL, NULL, p, f.hw, f.xy, f.dep, f.vis, f.N, f.K, work);
            p[b] = keep;
            double fd = (Lp - Lm) / (2 * h), q = fabs(g[b] - fd) / fmax(1.0, fabs(fd));
            if (!(q <= TOL_FD)) T_FAIL("trial %d image %d: g %.10g fd %.10g", trial, b, g[b], fd);
            worst = fmax(worst, q);
        }
    }
    printf("  max |g - g_fd| / max(1, |g_fd|) %.3g (bound %.0e)\n", worst, TOL_FD);
    free(work); free(g); free(p);
    focal_in_free(&f);
    cJSON_Delete(j);
}

/* AdamW: the first step moves each coordinate by lr g / (|g| + eps) after the decay (m-hat = g,
 * v-hat = g^2 after bias correction), whatever |g|. */
static void case_adamw(void) {
    sa3d_adamw_params p = sa3d_adamw_params_default();
    T_CHECK(p.lr == 1e-3 && p.beta1 == 0.9 && p.beta2 == 0.999 && p.eps == 1e-8 && p.weight_decay == 0.01);
    double x[4] = { 1.0, -2.0, 0.5, 3.0 }, g[4] = { 1e-4, -3.0, 250.0, 0.0 }, m[4] = { 0 }, v[4] = { 0 };
    double x0[4];
    memcpy(x0, x, sizeof x);
    sa3d_adamw_step(x, m, v, g, 4, 1, &p);
    double worst = 0;
    for (int i = 0; i < 4; i++) {
        double want = x0[i] * (1 - p.lr * p.weight_decay) - p.lr * g[i] / (fabs(g[i]) + p.eps);
        worst = fmax(worst, fabs(x[i] - want));
    }
    printf("  first step vs lr g / (|g| + eps): max |d| %.3g (bound 1e-15)\n", worst);
    T_CHECK(worst <= 1e-15);
}

/* Synthetic focal recovery: one rigid 3D keypoint set seen by N cameras with known focal lengths; the
 * normalised pixels and depths are exact projections, so the true phi = 1/f make every triple's angles and
 * ratios agree across images (loss 0). 1000 AdamW iterations from phi = 0.2 (METHOD.md 3.3) must recover them. */
static void case_focal_opt(void) {
    enum { N = 6, K = 9 };
    rng gen = { 31337 };
    double obj[K][3], hw[N][2], xy[N][K][2], dep[N][K], phi_true[N], phi[N];
    uint8_t vis[N][K];
    for (int k = 0; k < K; k++) {
        obj[k][0] = rng_range(&gen, -0.25, 0.25);
        obj[k][1] = rng_range(&gen, -0.25, 0.25);
        obj[k][2] = rng_range(&gen, -0.12, 0.12);
    }
    for (int b = 0; b < N; b++) {
        double R[9];
        random_rotation(R, &gen);
        double f = rng_range(&gen, 2.5, 5.5);
        phi_true[b] = 1.0 / f;
        hw[b][0] = (b % 2) ? 480 : 375;
        hw[b][1] = (b % 2) ? 640 : 500;
        double S = fmax(hw[b][0], hw[b][1]), px = hw[b][1] / (2 * S), py = hw[b][0] / (2 * S);
        for (int k = 0; k < K; k++) {
            double P[3];
            for (int a = 0; a < 3; a++) P[a] = R[3 * a] * obj[k][0] + R[3 * a + 1] * obj[k][1] + R[3 * a + 2] * obj[k][2];
            P[2] += 0.85;   /* the pseudo-depth slab [0.7, 1] */
            xy[b][k][0] = f * P[0] / P[2] + px;
            xy[b][k][1] = f * P[1] / P[2] + py;
            dep[b][k] = P[2];
            vis[b][k] = (uint8_t)((b + k) % 5 != 0);   /* some keypoints hidden */
            if (!vis[b][k]) { xy[b][k][0] = xy[b][k][1] = dep[b][k] = 0.0; }
        }
        phi[b] = 0.2;
    }
    void *work = malloc(sa3d_focal_loss_work_bytes(N, K));
    double l_true, l0;
    sa3d_focal_loss(&l_true, NULL, NULL, NULL, phi_true, &hw[0][0], &xy[0][0][0], &dep[0][0], &vis[0][0], N, K, work);
    sa3d_focal_loss(&l0, NULL, NULL, NULL, phi, &hw[0][0], &xy[0][0][0], &dep[0][0], &vis[0][0], N, K, work);
    sa3d_focal_opt_params p = sa3d_focal_opt_params_default();
    T_CHECK(p.n_iter == 1000);
    double lend;
    sa3d_error err;
    T_OK(sa3d_focal_optimize(phi, &lend, &hw[0][0], &xy[0][0][0], &dep[0][0], &vis[0][0], N, K, &p, &err), &err);
    double worst = 0;
    for (int b = 0; b < N; b++) worst = fmax(worst, fabs(phi[b] - phi_true[b]) / phi_true[b]);
    printf("  loss at true phi %.3g, start %.3g, after %d AdamW steps %.3g; max rel |phi - phi_true| %.3g "
           "(bound 2e-2)\n", l_true, l0, p.n_iter, lend, worst);
    T_CHECK(l_true < 1e-9);
    T_CHECK(lend < 1e-3 * l0);
    T_CHECK(worst <= 2e-2);
    free(work);
}

/* Thread-count determinism (STYLE.md 6): energies, gradients and the focal loss, 1 against 2 threads. */
static void case_determinism(void) {
    cJSON *j = load_ref("geom_energy"), *jf = load_ref("focal_loss");
    if (!j || !jf) { cJSON_Delete(j); cJSON_Delete(jf); return; }
    energy_ref r;
    energy_ref_load(&r, j);
    enum { B = 64 };
    size_t nY = (size_t)B * r.n * 3;
    double *Y = malloc(nY * sizeof(double)), *G1 = malloc(nY * sizeof(double)), *G2 = malloc(nY * sizeof(double));
    double E1[B], E2[B];
    rng gen = { 5 };
    random_config(Y, B * r.n, 1.0, &gen);
    sa3d_set_threads(1);
    sa3d_geom_energy(E1, G1, Y, B, r.n, &r.g, 1);
    sa3d_set_threads(2);
    sa3d_geom_energy(E2, G2, Y, B, r.n, &r.g, 1);
    T_CHECK(memcmp(E1, E2, sizeof E1) == 0 && memcmp(G1, G2, nY * sizeof(double)) == 0);
    focal_in f;
    focal_in_load(&f, jf);
    void *work = malloc(sa3d_focal_loss_work_bytes(f.N, f.K));
    double l1, l2, *g1 = malloc(f.N * sizeof(double)), *g2 = malloc(f.N * sizeof(double));
    sa3d_set_threads(1);
    sa3d_focal_loss(&l1, g1, NULL, NULL, f.phi, f.hw, f.xy, f.dep, f.vis, f.N, f.K, work);
    sa3d_set_threads(2);
    sa3d_focal_loss(&l2, g2, NULL, NULL, f.phi, f.hw, f.xy, f.dep, f.vis, f.N, f.K, work);
    T_CHECK(memcmp(&l1, &l2, sizeof l1) == 0 && memcmp(g1, g2, f.N * sizeof(double)) == 0);
    printf("  energy [%d configs], gradient, focal loss and gradient: 1 vs 2 threads bitwise equal\n", B);
    sa3d_set_threads(0);
    free(Y); free(G1); free(G2); free(work); free(g1); free(g2);
    focal_in_free(&f);
    energy_ref_free(&r);
    cJSON_Delete(j);
    cJSON_Delete(jf);
}

/* ------------------------------------------------------------------------------------------------------ */
/* 8. tet_warp.json                                                                                        */

static void case_tet_warp(void) {
    cJSON *j = load_ref("tet_warp");
    if (!j) return;
    size_t na, np, n;
    double *anc = jarr(j, "inputs.anchors", &na), *pts = jarr(j, "inputs.points", &np);
    double *nanc = jarr(j, "inputs.new_anchors", NULL);
    double thresh = jget(j, "inputs.thresh")->valuedouble;
    int A = (int)(na / 3);
    size_t P = np / 3, T = sa3d_tet_count(A);
    int32_t *tets = malloc((4 * T + 1) * sizeof(int32_t));
    sa3d_tets_generate(tets, A);
    cmp_i32("tet_indices", tets, 4 * T, jget(j, "outputs.tet_indices"));
    double *info = malloc(T * SA3D_TET_INFO * sizeof(double));
    sa3d_tet_prepare(info, anc, tets, T);
    double *bary = malloc(P * T * 4 * sizeof(double)), *ref = jarr(j, "outputs.bary_coords", &n);
    sa3d_tet_bary(bary, pts, P, info, T);
    T_CHECK(n == P * T * 4);
    compare("bary_coords", bary, ref, n, TOL_TET_REL, REL);
    free(ref);
    uint8_t *inside = malloc(P * T), *hull = malloc(P);
    sa3d_tet_inside(inside, hull, bary, P, T, thresh);
    double *tmp = malloc((P * T + 1) * sizeof(double));
    for (size_t i = 0; i < P * T; i++) tmp[i] = inside[i];
    ref = jarr(j, "outputs.inside_tet", &n);
    compare_exact("inside_tet", tmp, ref, n);
    free(ref);
    for (size_t i = 0; i < P; i++) tmp[i] = hull[i];
    ref = jarr(j, "outputs.in_hull", &n);
    compare_exact("in_hull", tmp, ref, n);
    free(ref);
    double *w = malloc(P * T * sizeof(double));
    sa3d_tet_weights(w, pts, P, info, inside, T);
    ref = jarr(j, "outputs.tet_weights", &n);
    compare("tet_weights", w, ref, n, TOL_TET_REL, REL);
    free(ref);
    double *out = malloc(3 * P * sizeof(double)), *out2 = malloc(3 * P * sizeof(double));
    sa3d_tet_transform(out, bary, w, nanc, tets, P, T);
    double *wref = jarr(j, "outputs.warped_points", &n);
    compare("warped_points (staged)", out, wref, n, TOL_TET_REL, REL);
    /* fused warp: same points; uncovered points at the origin and flagged */
    uint8_t *cov = malloc(P);
    size_t ncov = sa3d_tet_warp(out2, cov, pts, P, info, nanc, tets, T, thresh);
    compare("warped_points (fused)", out2, wref, n, TOL_TET_REL, REL);
    size_t nh = 0, flag_bad = 0;
    for (size_t i = 0; i < P; i++) {
        nh += hull[i];
        if (cov[i] != hull[i]) flag_bad++;
        if (!cov[i] && (out2[3 * i] != 0.0 || out2[3 * i + 1] != 0.0 || out2[3 * i + 2] != 0.0)) flag_bad++;
    }
    printf("  fused warp: %zu of %zu points covered, %zu flagged for dropping\n", ncov, P, P - ncov);
    T_CHECK(ncov == nh && flag_bad == 0);
    /* the warped points against the tets of the new anchors (canonical-hull filter) */
    double *info2 = malloc(T * SA3D_TET_INFO * sizeof(double));
    sa3d_tet_prepare(info2, nanc, tets, T);
    sa3d_tet_bary(bary, out, P, info2, T);
    ref = jarr(j, "outputs.warped_bary_coords_new", &n);
    compare("warped_bary_coords_new", bary, ref, n, TOL_TET_NEW_REL, REL);
    free(ref);
    sa3d_tet_inside(inside, hull, bary, P, T, thresh);
    ref = jarr(j, "outputs.warped_in_new_hull", &n);
    for (size_t i = 0; i < P; i++) tmp[i] = hull[i];
    compare_exact("warped_in_new_hull (staged)", tmp, ref, n);
    sa3d_tet_in_hull(hull, out, P, info2, T, thresh);
    for (size_t i = 0; i < P; i++) tmp[i] = hull[i];
    compare_exact("warped_in_new_hull (fused)", tmp, ref, n);
    free(ref);
    free(anc); free(pts); free(nanc); free(tets); free(info); free(info2); free(bary); free(inside); free(hull);
    free(tmp); free(w); free(out); free(out2); free(wref); free(cov);
    cJSON_Delete(j);
}

int main(int argc, char **argv) {
    static const t_case cases[] = {
        { "1.1", "camera.json: K, back-projection, projection, cells", case_camera },
        { "2.1", "pseudo_depth.json: z = 1 - 0.3 d / max d, flipped", case_pseudo_depth },
        { "3.1", "relations.json: edges, edge pairs, tet relations", case_relations },
        { "4.1", "geom_features.json: cosines, ratios, direction cosines", case_features },
        { "5.1", "beta.json: maximum-likelihood fits", case_beta_fit },
        { "5.2", "beta.json: clamped log densities", case_beta_logprob },
        { "5.3", "beta.json: float32 modes", case_beta_mode },
        { "5.4", "digamma, trigamma, ln Gamma", case_special },
        { "6.1", "geom_energy.json: L_geom and exact gradient", case_energy },
        { "6.2", "L_geom gradient vs central differences", case_energy_fd },
        { "6.3", "L_geom similarity invariance", case_energy_invariance },
        { "6.4", "thread-count determinism (energy, focal loss)", case_determinism },
        { "7.1", "focal_loss.json: loss, variances, gradient", case_focal },
        { "7.2", "focal loss gradient vs central differences", case_focal_fd },
        { "7.3", "AdamW first step", case_adamw },
        { "7.4", "focal optimisation recovers known focal lengths", case_focal_opt },
        { "8.1", "tet_warp.json: bary, inside, weights, warp, hull", case_tet_warp },
    };
    return t_run(cases, (int)(sizeof cases / sizeof cases[0]), argc, argv);
}
