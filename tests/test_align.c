/* Tests of the aligner and the SemAlign3D matcher (src/align/align.c, match_sa3d.c; METHOD.md 5, 6.2) on a
 * synthetic category (tests/align_synth.h): exact gradients against central differences, L_geom's similarity
 * invariance, pose recovery from random starts, determinism, and matching through two alignments including
 * mirror-symmetric features where the baseline must fail, and the mirror term's symmetry (image and mirror alike). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "align/align_internal.h"
#include "align_synth.h"
#include "base/base.h"
#include "semalign3d/align.h"
#include "t.h"

#define FD_TOL 1e-3     /* STYLE.md 7: |g - g_fd| <= 1e-3 max(1, |g_fd|) */
#define FD_H 1e-6

enum { G_SMALL = 16, C_SMALL = 16 };

/* Central differences on every coordinate of Y and on phi. Returns the worst normalised error. */
static double fd_check(const sa3d_align_ctx *c, const double *Y0, double phi0, double sigma) {
    int n = c->n;
    /* the stage: sigma as given, the dense and sparse weights at their full values */
    const sa3d_align_stage st = { .sigma = sigma, .w_rec = c->p.w_rec, .w_sparse = c->p.w_sparse };
    size_t wd = sa3d_align_work_doubles(c) + 3 * (size_t)n;
    double *work = malloc(wd * sizeof(double)), *gY = malloc(3 * n * sizeof(double)),
           *Y = malloc(3 * n * sizeof(double));
    double gphi;
    sa3d_align_energy_total(c, Y0, phi0, &st, gY, &gphi, NULL, work);
    double worst = 0.0;
    memcpy(Y, Y0, 3 * n * sizeof(double));
    for (int k = 0; k <= 3 * n; k++) {
        double fp, fm, an;
        if (k < 3 * n) {
            double y = Y[k];
            Y[k] = y + FD_H; fp = sa3d_align_energy_total(c, Y, phi0, &st, NULL, NULL, NULL, work);
            Y[k] = y - FD_H; fm = sa3d_align_energy_total(c, Y, phi0, &st, NULL, NULL, NULL, work);
            Y[k] = y;
            an = gY[k];
        } else {
            fp = sa3d_align_energy_total(c, Y, phi0 + FD_H, &st, NULL, NULL, NULL, work);
            fm = sa3d_align_energy_total(c, Y, phi0 - FD_H, &st, NULL, NULL, NULL, work);
            an = gphi;
        }
        double fd = (fp - fm) / (2 * FD_H);
        double e = fabs(an - fd) / fmax(1.0, fabs(fd));
        if (e > worst) worst = e;
    }
    free(work); free(gY); free(Y);
    return worst;
}

static sa3d_align_params only(double wr, double wg, double wb, double wd, int mode) {
    sa3d_align_params p = sa3d_align_params_default();
    p.w_rec = wr; p.w_geom = wg; p.w_bg = wb; p.w_depth = wd; p.rec_mode = mode;
    p.w_sparse = 0.0;
    p.w_mirror = 0.0;
    p.max_pairs = 200; p.max_tets = 200;
    return p;
}

static void case_fd(void) {
    synth_pose pose = { 0.7, 0.3, { 0.02, -0.01, 1.0 }, 1.2 };
    scene s;
    scene_make(&s, G_SMALL, C_SMALL, 40, 0, &pose, 7);
    mirrored mi;
    mirror_make(&mi, &s);
    sa3d_align_input in_m = { .F = &mi.fm, .mask = mi.mask, .depth = mi.depth };
    /* the mirror is read only with w_mirror > 0 (the defaults' 0.5 and the last case) */
    sa3d_align_input in = { .F = &s.fm, .mask = s.mask, .depth = s.depth, .mirror = &in_m };
    struct { const char *name; sa3d_align_params p; double sigma; } cs[] = {
        { "L_rec (a) sigma 3", only(1, 0, 0, 0, SA3D_REC_MIXTURE), 3.0 },
        { "L_rec (a) sigma 1", only(1, 0, 0, 0, SA3D_REC_MIXTURE), 1.0 },
        { "L_rec (b)", only(1, 0, 0, 0, SA3D_REC_POINT), 1.0 },
        { "L_rec (b) sigma 1.5", only(1, 0, 0, 0, SA3D_REC_POINT), 1.5 },
        { "L_rec (b) 4 lvl, s 3", only(1, 0, 0, 0, SA3D_REC_POINT), 3.0 },
        { "L_rec (b) raw maps", only(1, 0, 0, 0, SA3D_REC_POINT), 1.5 },
        { "L_geom", only(0, 1, 0, 0, 0), 1.0 },
        { "L_bg", only(0, 0, 1, 0, 0), 1.0 },
        { "L_depth", only(0, 0, 0, 1, 0), 1.0 },
        { "L_sparse sigma 3", only(0, 0, 0, 0, 0), 3.0 },
        { "L_sparse sigma 1", only(0, 0, 0, 0, 0), 1.0 },
        { "total (defaults)", sa3d_align_params_default(), 2.0 },
        { "total, w_sparse 0.5", sa3d_align_params_default(), 1.5 },
        { "total, w_mirror 0", sa3d_align_params_default(), 2.0 },
        { "total, w_mirror 0.3", sa3d_align_params_default(), 1.0 },
    };
    cs[1].p.tau = 0.3;   /* a sharper soft-max too */
    /* reading (b)'s blurred maps: 2 levels (sds 1 and 2 = 16 / 8), sigma 1.5 between them; with sigma_start 6,
     * 4 levels (1, 1.82, 3.30, 6), sigma 3 between the last two; then the raw maps */
    cs[4].p.sigma_start = 6.0;
    cs[5].p.point_blur = 0;
    cs[9].p.w_sparse = cs[10].p.w_sparse = 1.0;
    cs[12].p.w_sparse = 0.5;
    cs[13].p.w_mirror = 0.0;
    cs[14].p.w_mirror = 0.3;
    sa3d_error err;
    double Y[3 * SYNTH_SLOTS];
    for (size_t q = 0; q < sizeof cs / sizeof cs[0]; q++) {
        sa3d_align_ctx c;
        T_OK(sa3d_align_ctx_init(&c, s.prior, &in, &cs[q].p, &err), &err);
        if (cs[q].p.rec_mode == SA3D_REC_POINT)   /* the levels above, or none */
            T_CHECK(c.n_lvl == (!cs[q].p.point_blur ? 0 : cs[q].p.sigma_start > 0.0 ? 4 : 2) &&
                    (c.S_lvl != NULL) == (c.n_lvl > 0));
        for (int rep = 0; rep < 3; rep++) {
            true_anchors(&s, Y, 100 + rep, 0.03);
            double e = fd_check(&c, Y, 1.0 / 1.2 + 0.05 * rep, cs[q].sigma);
            printf("       FD %-20s rep %d: max normalised error %.2e (bound %.0e)\n", cs[q].name, rep, e, FD_TOL);
            T_CHECK(e <= FD_TOL);
        }
        sa3d_align_ctx_free(&c);
    }
    mirror_free(&mi);
    scene_free(&s);
}

static void case_geom_invariance(void) {
    synth_pose pose = { 0.4, 0.2, { 0.0, 0.0, 1.0 }, 1.2 };
    scene s;
    scene_make(&s, G_SMALL, C_SMALL, 20, 0, &pose, 3);
    sa3d_align_input in = { .F = &s.fm, .mask = s.mask, .depth = NULL };
    sa3d_align_params p = only(0, 1, 0, 0, 0);
    sa3d_error err;
    sa3d_align_ctx c;
    T_OK(sa3d_align_ctx_init(&c, s.prior, &in, &p, &err), &err);
    int n = c.n;
    double Y[3 * SYNTH_SLOTS], Z[3 * SYNTH_SLOTS], e0, e1;
    true_anchors(&s, Y, 5, 0.02);
    double ang = 1.1, t[3] = { 0.3, -0.2, 0.5 };
    /* rigid motion: exact up to rounding; scale 2.7: the 1e-6 of nrm(w) = w / (|w| + 1e-6) and of the ratio
     * (METHOD.md 4.2) is not scaled, so the bound is that eps over the shortest edge (~0.05): 1e-6 / 0.05 */
    double scales[2] = { 1.0, 2.7 }, tols[2] = { 1e-10, 2e-5 };
    for (int q = 0; q < 2; q++) {
        for (int k = 0; k < n; k++) {   /* rotation about (1,1,1)/sqrt3 via Rodrigues, scale, translate */
            double a[3] = { 1 / sqrt(3.0), 1 / sqrt(3.0), 1 / sqrt(3.0) }, *y = Y + 3 * k, r[3];
            double cr[3] = { a[1] * y[2] - a[2] * y[1], a[2] * y[0] - a[0] * y[2], a[0] * y[1] - a[1] * y[0] };
            double ad = a[0] * y[0] + a[1] * y[1] + a[2] * y[2];
            for (int d = 0; d < 3; d++) r[d] = y[d] * cos(ang) + cr[d] * sin(ang) + a[d] * ad * (1 - cos(ang));
            for (int d = 0; d < 3; d++) Z[3 * k + d] = scales[q] * r[d] + t[d];
        }
        sa3d_geom_energy(&e0, NULL, Y, 1, n, &c.gt, 1);
        sa3d_geom_energy(&e1, NULL, Z, 1, n, &c.gt, 1);
        printf("       L_geom %.12g vs %.12g after rotation, translation, scale %.1f (|d| %.2e, bound %.0e)\n", e0, e1,
               scales[q], fabs(e0 - e1), tols[q] * fmax(1.0, fabs(e0)));
        T_NEAR(e0, e1, tols[q] * fmax(1.0, fabs(e0)));
    }
    sa3d_align_ctx_free(&c);
    scene_free(&s);
}

/* mean distance (cells) between the alignment's projected anchors and the true ones */
static double anchor_err(const scene *s, const sa3d_alignment *a) {
    double e = 0.0;
    for (int k = 0; k < a->n_used; k++) {
        double gx, gy;
        synth_project(&s->pose, s->g, s->prior->anchors + 3 * s->prior->used[k], &gx, &gy);
        e += hypot(gx - (double)a->proj_anchor[2 * k], gy - (double)a->proj_anchor[2 * k + 1]);
    }
    return e / a->n_used;
}

static sa3d_align_params fast_params(void) {
    sa3d_align_params p = sa3d_align_params_default();
    p.n_hyp = 32;
    p.n_iter = 120;
    p.prune_keep = 6;
    p.w_mirror = 0.0;   /* these scenes have no mirrored view rendered as one (case_mirror) */
    return p;
}

/* L_sparse: every appended anchor takes part, and the term is lowest with the anchors where their own evidence is:
 * at the true pose it is below the same pose with the anchors shifted by 1.5 cells, at every sigma. And it is
 * continuous: along a 10-cell shift no step of 2e-3 cells changes it by more than a smooth slope allows (a window
 * cut at 4 sigma let one anchor's term jump by 2.3 nats where its evidence left the window). */
static void case_sparse(void) {
    synth_pose pose = { 0.5, 0.2, { 0.0, 0.01, 1.0 }, 1.2 };
    scene s;
    scene_make(&s, 24, C_SMALL, 40, 0, &pose, 13);
    sa3d_align_input in = { .F = &s.fm, .mask = s.mask, .depth = s.depth };
    sa3d_align_params p = only(0, 0, 0, 0, 0);
    p.w_sparse = 1.0;
    sa3d_error err;
    sa3d_align_ctx c;
    T_OK(sa3d_align_ctx_init(&c, s.prior, &in, &p, &err), &err);
    T_CHECK(c.n_anc == c.n);
    double *work = malloc((sa3d_align_work_doubles(&c) + 3 * (size_t)c.n) * sizeof(double));
    double Y[3 * SYNTH_SLOTS], Z[3 * SYNTH_SLOTS], t0[5], t1[5];
    true_anchors(&s, Y, 1, 0.0);
    double phi = 1.0 / pose.f, shift = 1.5 * phi / c.g;   /* X += shift Z moves a projection by g shift / phi */
    double sig[3] = { 3.0, 1.5, 1.0 };
    for (int q = 0; q < 3; q++) {
        sa3d_align_stage st = { .sigma = sig[q], .w_rec = 0.0, .w_sparse = 1.0 };
        sa3d_align_energy_total(&c, Y, phi, &st, NULL, NULL, t0, work);
        for (int d = 0; d < 2; d++) {   /* shifted right, then down */
            memcpy(Z, Y, sizeof Y);
            for (int k = 0; k < c.n; k++) Z[3 * k + d] += shift * Z[3 * k + 2];
            sa3d_align_energy_total(&c, Z, phi, &st, NULL, NULL, t1, work);
            printf("       sigma %.1f: L_sparse %.4f at the true pose, %.4f shifted %s\n", sig[q], t0[4], t1[4],
                   d ? "down" : "right");
            T_CHECK(isfinite(t0[4]) && t0[4] < t1[4] - 0.01);
        }
        /* |dL/dshift| <= R / sigma^2 per anchor (responsibilities sum to <= 1, cells within R), so a smooth step
         * of h cells moves the mean by at most h R / sigma^2 */
        double h = 2e-3, prev = 0.0, jump = 0.0, bound = h * 6.1 / sig[q];
        for (int i = 0; i <= 5000; i++) {
            memcpy(Z, Y, sizeof Y);
            for (int k = 0; k < c.n; k++) Z[3 * k] += (double)i * h * phi / c.g * Z[3 * k + 2];
            sa3d_align_energy_total(&c, Z, phi, &st, NULL, NULL, t1, work);
            if (i > 0 && fabs(t1[4] - prev) > jump) jump = fabs(t1[4] - prev);
            prev = t1[4];
        }
        printf("       sigma %.1f: largest change of L_sparse in a step of %.0e cells %.2g (smooth: < %.2g)\n", sig[q],
               h, jump, bound);
        T_CHECK(jump < bound);
    }
    free(work);
    sa3d_align_ctx_free(&c);
    scene_free(&s);
}

/* The mirror-consistent energy treats the image and its mirror alike: with w_mirror 0.5, the pose Y on (image,
 * mirror) has bit for bit the energy of the mirrored pose on (mirror, image), while each image alone scores the
 * two differently (the check has teeth); and the aligner run on the mirrored image finds the mirrored pose.
 * (This scene's mirror is a plain flip of the feature maps, so the prior, with distinct left and right features,
 * fits it badly: the pose itself is not checked here; the benchmark measures what the term buys.) */
static void case_mirror(void) {
    synth_pose pose = { 0.9, 0.3, { 0.03, -0.02, 1.0 }, 1.2 };
    scene s;
    scene_make(&s, 24, C_SMALL, 60, 0, &pose, 17);
    mirrored mi;
    mirror_make(&mi, &s);
    sa3d_align_input in_i = { .F = &s.fm, .mask = s.mask, .depth = s.depth };
    sa3d_align_input in_m = { .F = &mi.fm, .mask = mi.mask, .depth = mi.depth };
    sa3d_align_input a_in = in_i, b_in = in_m;
    a_in.mirror = &in_m;
    b_in.mirror = &in_i;
    sa3d_align_params p = sa3d_align_params_default();
    p.w_mirror = 0.5;
    sa3d_error err;
    sa3d_align_ctx ca, cb;
    T_OK(sa3d_align_ctx_init(&ca, s.prior, &a_in, &p, &err), &err);
    T_OK(sa3d_align_ctx_init(&cb, s.prior, &b_in, &p, &err), &err);
    int n = ca.n;
    double *work = malloc(sa3d_align_work_doubles(&ca) * sizeof(double));
    double Y[3 * SYNTH_SLOTS], Ym[3 * SYNTH_SLOTS], t1[4], t2[4];
    int twin[SYNTH_SLOTS];
    for (int k = 0; k < n; k++) {
        twin[k] = ca.twin[k];
        T_CHECK(ca.twin[ca.twin[k]] == k && s.prior->used[twin[k]] == s.prior->slot_flip[s.prior->used[k]]);
    }
    const sa3d_align_stage st = { .sigma = 1.5, .w_rec = 1.0, .w_sparse = 1.0 };
    for (int rep = 0; rep < 3; rep++) {
        true_anchors(&s, Y, 40 + rep, 0.02 * rep);
        for (int k = 0; k < n; k++) {
            const double *y = Y + 3 * ca.twin[k];
            Ym[3 * k] = -y[0];
            Ym[3 * k + 1] = y[1];
            Ym[3 * k + 2] = y[2];
        }
        double ea = sa3d_align_energy_pose(&ca, Y, 1.0 / 1.2, &st, NULL, NULL, t1, work);
        double eb = sa3d_align_energy_pose(&cb, Ym, 1.0 / 1.2, &st, NULL, NULL, t2, work);
        double e1 = sa3d_align_energy_one(&ca, Y, 1.0 / 1.2, &st, NULL, NULL, NULL, NULL, work);
        double e2 = sa3d_align_energy_one(&cb, Ym, 1.0 / 1.2, &st, NULL, NULL, NULL, NULL, work);
        printf("       rep %d: E(Y | image, mirror) %.17g, E(mirrored Y | mirror, image) %.17g; image alone %.6f, "
               "mirror alone %.6f\n", rep, ea, eb, e1, e2);
        T_CHECK(isfinite(ea) && memcmp(&ea, &eb, sizeof ea) == 0);
        T_CHECK(fabs(e1 - e2) > 1e-6);
        T_CHECK(fabs(ea - 0.5 * (e1 + e2)) <= 1e-12 * fabs(ea));
    }
    free(work);
    sa3d_align_ctx_free(&ca);
    sa3d_align_ctx_free(&cb);
    /* the aligner with the mirror term: the image's pose, and on the mirrored image the mirrored pose */
    p = fast_params();
    p.w_mirror = 0.5;
    sa3d_alignment *a = NULL, *b = NULL;
    T_OK(sa3d_align_image(&a, s.prior, &a_in, &p, &err), &err);
    T_OK(sa3d_align_image(&b, s.prior, &b_in, &p, &err), &err);
    if (a && b) {
        double e = anchor_err(&s, a), worst = 0.0;
        int g = s.g;
        for (int k = 0; k < n; k++) {   /* b's anchor k where a's twin projects, mirrored: x -> g - x */
            const float *pa = a->proj_anchor + 2 * twin[k], *pb = b->proj_anchor + 2 * k;
            worst = fmax(worst, hypot((double)g - (double)pa[0] - (double)pb[0], (double)pa[1] - (double)pb[1]));
        }
        printf("       aligned: anchors off by %.3f cells; on the mirrored image the mirrored pose within %.3f cells\n",
               e, worst);
        T_CHECK(worst <= 0.25);
        sa3d_alignment *c1 = NULL;   /* and bit for bit the same on one thread */
        p.n_threads = 1;
        T_OK(sa3d_align_image(&c1, s.prior, &a_in, &p, &err), &err);
        T_CHECK(c1 && !memcmp(c1->Y, a->Y, 3 * (size_t)n * sizeof(double)) && c1->energy == a->energy);
        sa3d_alignment_free(c1);
        sa3d_set_threads(0);
    }
    sa3d_alignment_free(a);
    sa3d_alignment_free(b);
    mirror_free(&mi);
    scene_free(&s);
}

/* Reading (b)'s blur: a constant map stays constant; an impulse becomes a separable Gaussian of the given sd
 * (neighbouring taps in the ratio exp(-1 / (2 sigma^2)), sum 1, symmetric); a ramp is kept exactly away from the
 * border and raised at it (the border value repeats outside); a tiny sd changes nothing. */
static void case_blur(void) {
    enum { g = 41, c = 20 };
    float in[g * g], out[g * g], tmp[SA3D_ALIGN_BLUR_TMP(g)];
    double sigma = 2.5;
    for (int q = 0; q < g * g; q++) in[q] = 0.75f;
    sa3d_align_blur(in, out, g, sigma, tmp);
    double worst = 0.0;
    for (int q = 0; q < g * g; q++) worst = fmax(worst, fabs((double)out[q] - 0.75));
    T_CHECK(worst <= 1e-6);
    memset(in, 0, sizeof in);
    in[c * g + c] = 1.0f;
    sa3d_align_blur(in, out, g, sigma, tmp);
    double sum = 0.0, asym = 0.0, sep = 0.0;
    for (int y = 0; y < g; y++)
        for (int x = 0; x < g; x++) {
            sum += (double)out[y * g + x];
            asym = fmax(asym, fabs((double)out[y * g + x] - (double)out[y * g + (2 * c - x)]));
            asym = fmax(asym, fabs((double)out[y * g + x] - (double)out[x * g + y]));
            sep = fmax(sep, fabs((double)out[y * g + x] * (double)out[c * g + c] -
                                (double)out[y * g + c] * (double)out[c * g + x]));
        }
    double ratio = (double)out[c * g + c + 1] / (double)out[c * g + c], want = exp(-0.5 / (sigma * sigma));
    printf("       impulse, sd %.1f: sum %.7f, tap ratio %.7f (want %.7f), asymmetry %.1e, separability %.1e\n", sigma,
           sum, ratio, want, asym, sep);
    T_NEAR(sum, 1.0, 1e-5);
    T_NEAR(ratio, want, 1e-5);
    T_CHECK(asym <= 1e-7 && sep <= 1e-7);
    T_CHECK(out[c * g + c + 8] > 0.0f && out[c * g + c + 9] == 0.0f);   /* truncated at ceil(3 sd) = 8 */
    for (int y = 0; y < g; y++)
        for (int x = 0; x < g; x++) in[y * g + x] = (float)x;
    sa3d_align_blur(in, out, g, sigma, tmp);
    worst = 0.0;   /* float sums of 17 taps of values up to 40: rounding below 17 x 40 x 6e-8 x 2 = 8e-5 */
    for (int y = 0; y < g; y++)
        for (int x = 8; x < g - 8; x++) worst = fmax(worst, fabs((double)out[y * g + x] - (double)x));
    T_CHECK(worst <= 1e-4);
    T_CHECK(out[0] > 0.5f && out[g - 1] < g - 1.5f);   /* the border's value pulls the ends inwards */
    sa3d_align_blur(in, out, g, 0.01, tmp);
    T_CHECK(memcmp(in, out, sizeof in) == 0);
}

/* Sampling and schedule conventions that the other cases would survive breaking: bilinear reads at cell centres
 * (c + 0.5), the mask padded with 0 outside the grid (L_bg: off the image is background), and the schedule's ends
 * (sigma_start and no L_sparse at t = 0; sigma_end, full w_sparse and dense_end x w_rec at t = n_iter, where the
 * best hypothesis is scored). */
static void case_conventions(void) {
    enum { g = 8 };
    float m[g * g] = { 0 };
    m[3 * g + 5] = 1.0f;   /* one-hot at cell (x 5, y 3) */
    double dx, dy;
    T_CHECK(sa3d_ae_bilinear(m, g, 5.5, 3.5, 0, &dx, &dy) == 1.0);
    T_CHECK(sa3d_ae_bilinear(m, g, 6.5, 3.5, 0, &dx, &dy) == 0.0);
    T_CHECK(sa3d_ae_bilinear(m, g, 6.0, 3.5, 0, &dx, &dy) == 0.5 && dx == -1.0);
    T_CHECK(sa3d_ae_bilinear(m, g, 5.5, 3.25, 0, &dx, &dy) == 0.75 && dy == 1.0);
    for (int q = 0; q < g * g; q++) m[q] = 1.0f;   /* all foreground: 0 padding shows at the border only */
    T_CHECK(sa3d_ae_bilinear(m, g, 0.5, 4.5, 1, &dx, &dy) == 1.0);
    T_CHECK(sa3d_ae_bilinear(m, g, 0.0, 4.5, 1, &dx, &dy) == 0.5 && dx == 1.0);
    T_CHECK(sa3d_ae_bilinear(m, g, 0.0, 4.5, 0, &dx, &dy) == 1.0 && dx == 0.0);   /* border value, flat */
    T_CHECK(sa3d_ae_bilinear(m, g, -3.0, 4.5, 1, &dx, &dy) == 0.0);

    /* L_bg of a pose on an all-foreground mask: 0 on the grid, 1 once every point has left it */
    synth_pose pose = { 0.5, 0.3, { 0.0, 0.0, 1.0 }, 1.2 };
    scene s;
    scene_make(&s, G_SMALL, C_SMALL, 40, 0, &pose, 2);
    for (int q = 0; q < s.g * s.g; q++) s.mask[q] = 1.0f;
    sa3d_align_input in = { .F = &s.fm, .mask = s.mask, .depth = s.depth };
    sa3d_align_params p = only(0, 0, 1, 0, 0);
    sa3d_error err;
    sa3d_align_ctx c;
    T_OK(sa3d_align_ctx_init(&c, s.prior, &in, &p, &err), &err);
    double *work = malloc((sa3d_align_work_doubles(&c) + 3 * (size_t)c.n) * sizeof(double));
    double Y[3 * SYNTH_SLOTS], t[5], phi = 1.0 / pose.f;
    true_anchors(&s, Y, 1, 0.0);
    sa3d_align_stage st = { .sigma = 1.0, .w_rec = 0.0, .w_sparse = 0.0 };
    sa3d_align_energy_total(&c, Y, phi, &st, NULL, NULL, t, work);
    double on_grid = t[2];
    for (int k = 0; k < c.n; k++) Y[3 * k] += 3.0 * phi * Y[3 * k + 2];   /* 3 grid widths to the right */
    sa3d_align_energy_total(&c, Y, phi, &st, NULL, NULL, t, work);
    printf("       L_bg on an all-foreground mask: %.3g on the grid, %.3g off it\n", on_grid, t[2]);
    T_CHECK(on_grid < 0.05 && fabs(t[2] - 1.0) < 1e-12);
    free(work);
    sa3d_align_ctx_free(&c);
    scene_free(&s);

    p = sa3d_align_params_default();
    p.n_iter = 50;
    sa3d_align_stage a = sa3d_align_stage_at(&p, 64, 0), b = sa3d_align_stage_at(&p, 64, p.n_iter);
    T_CHECK(a.sigma == 8.0 && a.w_sparse == 0.0 && a.w_rec == p.w_rec);
    T_CHECK(b.sigma == 1.0 && b.w_sparse == p.w_sparse && b.w_rec == p.dense_end * p.w_rec);
    p.sigma_start = 5.0;
    p.sigma_end = 2.0;
    T_CHECK(sa3d_align_stage_at(&p, 64, 0).sigma == 5.0 && sa3d_align_stage_at(&p, 64, p.n_iter).sigma == 2.0);
}

/* The best hypothesis is the lowest energy at the schedule's end: without pruning each hypothesis runs as if alone
 * (its own random stream, no shared state), so n_hyp 1, 4, 8 give energies that never rise and the winner of 8 is
 * the first hypothesis with the lowest; the returned energy is energy_total at the end stage of the returned pose. */
static void case_best(void) {
    synth_pose pose = { -2.2, 0.35, { -0.03, 0.02, 0.9 }, 1.4 };
    scene s;
    scene_make(&s, 24, C_SMALL, 80, 0, &pose, 12);
    sa3d_align_input in = { .F = &s.fm, .mask = s.mask, .depth = s.depth };
    sa3d_align_params p = fast_params();
    p.prune_keep = 0;
    p.n_iter = 60;
    sa3d_error err;
    const int nh[3] = { 1, 4, 8 };
    double E[3] = { 0, 0, 0 };
    int best[3] = { -1, -1, -1 };
    for (int r = 0; r < 3; r++) {
        sa3d_alignment *a = NULL;
        p.n_hyp = nh[r];
        T_OK(sa3d_align_image(&a, s.prior, &in, &p, &err), &err);
        if (!a) continue;
        E[r] = a->energy;
        best[r] = a->best_hyp;
        if (r == 2) {   /* the reported energy is the end stage's, of the reported pose */
            sa3d_align_ctx c;
            T_OK(sa3d_align_ctx_init(&c, s.prior, &in, &p, &err), &err);
            double *work = malloc((sa3d_align_work_doubles(&c) + 3 * (size_t)c.n) * sizeof(double)), t[5];
            sa3d_align_stage end = sa3d_align_stage_at(&p, s.g, p.n_iter);
            double e = sa3d_align_energy_total(&c, a->Y, a->phi, &end, NULL, NULL, t, work);
            T_CHECK(e == a->energy && t[4] == a->e_sparse);
            free(work);
            sa3d_align_ctx_free(&c);
        }
        sa3d_alignment_free(a);
    }
    printf("       best of 1, 4, 8 hypotheses: E %.5f (hyp %d), %.5f (hyp %d), %.5f (hyp %d)\n", E[0], best[0], E[1],
           best[1], E[2], best[2]);
    T_CHECK(E[1] <= E[0] && E[2] <= E[1] && E[2] < E[0]);   /* the last: the check has teeth */
    T_CHECK(best[0] == 0 && best[1] >= 0 && best[1] < 4 && (E[2] < E[1] ? best[2] >= 4 : best[2] == best[1]));
    scene_free(&s);
}

/* The focal length stays within its bound f = 1/phi <= 20 (SA3D_ALIGN_PHI_MIN) in a telephoto view (true f 40, the
 * object 33 units away, nearly orthographic): at the start, where the prior's focal_mean is 40 (no iteration: the
 * start is the result), and after every Adam step, where a start at half the object's size pulls phi below the bound
 * as the projection grows (phi 0.033 at the end without the per-step clamp). (A focal_init past the bound: 4.1.) */
static void case_focal(void) {
    synth_pose pose = { 0.6, 0.25, { 0.0, 0.0, 33.0 }, 40.0 };
    scene s;
    scene_make(&s, 24, C_SMALL, 80, 0, &pose, 14);
    sa3d_align_input in = { .F = &s.fm, .mask = s.mask, .depth = s.depth };
    sa3d_error err;
    for (int v = 0; v < 3; v++) {
        sa3d_align_params p = fast_params();
        if (v == 0) p.n_iter = 0;
        if (v == 2) { p.focal_init = 20.0; p.init_scale = 0.5; }
        sa3d_alignment *a = NULL;
        T_OK(sa3d_align_image(&a, s.prior, &in, &p, &err), &err);
        if (!a) continue;
        double e = anchor_err(&s, a);
        printf("       focal_init %g (prior focal_mean %g), init_scale %g, %d iterations: phi %.6g, anchors off by "
               "%.3f cells\n", p.focal_init, s.prior->focal_mean, p.init_scale, p.n_iter, a->phi, e);
        T_CHECK(a->phi >= SA3D_ALIGN_PHI_MIN && a->f == 1.0 / a->phi);
        if (v == 0) T_CHECK(a->phi == SA3D_ALIGN_PHI_MIN);
        else T_CHECK(e <= 1.0);
        sa3d_alignment_free(a);
    }
    scene_free(&s);
}

static void case_recover(void) {
    synth_pose poses[] = { { 0.6, 0.25, { 0.02, -0.01, 1.0 }, 1.2 }, { -2.2, 0.35, { -0.03, 0.02, 0.9 }, 1.4 },
                           { 3.0, -0.2, { 0.0, 0.03, 1.1 }, 1.1 } };
    for (int q = 0; q < 4; q++) {   /* the fourth: pose 0 again without mask and depth */
        scene s;
        scene_make(&s, 30, 32, 150, 0, &poses[q % 3], 11 + q);
        sa3d_align_input in = { .F = &s.fm, .mask = q < 3 ? s.mask : NULL, .depth = q < 3 ? s.depth : NULL };
        sa3d_align_params p = fast_params();
        p.seed = 5 + q;
        sa3d_error err;
        sa3d_alignment *a = NULL;
        double t0 = sa3d_now();
        T_OK(sa3d_align_image(&a, s.prior, &in, &p, &err), &err);
        double dt = sa3d_now() - t0;
        if (a) {
            double e = anchor_err(&s, a);
            printf("       pose %d: anchors off by %.3f cells (f %.3f, true %.3f), E %.4f (rec %.4f geom %.4f bg %.4f "
                   "depth %.5f), fg %.2f, hyp %d, %.2f s\n", q, e, a->f, poses[q % 3].f, a->energy, a->e_rec, a->e_geom,
                   a->e_bg, a->e_depth, a->fg_frac, a->best_hyp, dt);
            T_CHECK(e <= 1.0);
        }
        sa3d_alignment_free(a);
        scene_free(&s);
    }
}

static void case_determinism(void) {
    synth_pose pose = { 1.0, 0.3, { 0.0, 0.0, 1.0 }, 1.2 };
    scene s;
    scene_make(&s, 24, 16, 80, 0, &pose, 9);
    sa3d_align_input in = { .F = &s.fm, .mask = s.mask, .depth = s.depth };
    sa3d_align_params p = fast_params();
    p.n_iter = 40;
    sa3d_error err;
    sa3d_alignment *a[3] = { NULL, NULL, NULL };
    int thr[3] = { 2, 2, 1 };
    for (int r = 0; r < 3; r++) {
        p.n_threads = thr[r];
        T_OK(sa3d_align_image(&a[r], s.prior, &in, &p, &err), &err);
    }
    if (a[0] && a[1] && a[2]) {
        for (int r = 1; r < 3; r++) {
            T_CHECK(memcmp(a[0]->Y, a[r]->Y, 3 * (size_t)a[0]->n_used * sizeof(double)) == 0);
            T_CHECK(memcmp(a[0]->proj, a[r]->proj, 2 * (size_t)a[0]->n_dense * sizeof(float)) == 0);
            T_CHECK(memcmp(&a[0]->energy, &a[r]->energy, sizeof(double)) == 0);
            T_CHECK(memcmp(&a[0]->phi, &a[r]->phi, sizeof(double)) == 0);
        }
        printf("       2 threads twice and 1 thread: identical (E %.17g)\n", a[0]->energy);
    }
    for (int r = 0; r < 3; r++) sa3d_alignment_free(a[r]);
    sa3d_set_threads(0);
    scene_free(&s);
}

/* px error in cells between a prediction (original pixels of image 2) and the true anchor projection */
/* Queries of view s (pose p): its used anchors at their true projections, in the image's original pixels. */
static void anchor_queries(const scene *s, const synth_pose *p, float (*q)[2]) {
    double cp = (double)s->fm.input_size / s->g;
    for (int k = 0; k < s->prior->n_used; k++) {
        double gx, gy;
        synth_project(p, s->g, s->prior->anchors + 3 * s->prior->used[k], &gx, &gy);
        sa3d_geoaware_from_square(s->fm.img_w, s->fm.img_h, s->fm.input_size, (float)(gx * cp), (float)(gy * cp),
                                  &q[k][0], &q[k][1]);
    }
}

static double pred_err_cells(const scene *s2, const float pr[2], int slot) {
    double gx, gy;
    synth_project(&s2->pose, s2->g, s2->prior->anchors + 3 * slot, &gx, &gy);
    float xs, ys;
    sa3d_geoaware_to_square(s2->fm.img_w, s2->fm.img_h, s2->fm.input_size, pr[0], pr[1], &xs, &ys);
    double cp = (double)s2->fm.input_size / s2->g;
    return hypot((double)xs / cp - gx, (double)ys / cp - gy);
}

/* Moves the dense point of anchor 1 (returned) exactly onto the projection of anchor 0 in view 1 (pose p1), 0.5 behind
 * anchor 0's dense point: a hidden point on query 0. save[3] keeps what it overwrote (its projection and depth). */
static int hide_behind_query0(sa3d_alignment *a1, const scene *s1, const synth_pose *p1, float save[3]) {
    const sa3d_prior *pr = s1->prior;
    int j0 = -1, j1 = -1;
    for (int d = 0; d < pr->n_dense; d++) {
        if (pr->dense_anchor[d] == pr->used[0]) j0 = d;
        if (pr->dense_anchor[d] == pr->used[1]) j1 = d;
    }
    save[0] = a1->proj[2 * j1];
    save[1] = a1->proj[2 * j1 + 1];
    save[2] = a1->depth[j1];
    double gx, gy;
    synth_project(p1, s1->g, pr->anchors + 3 * pr->used[0], &gx, &gy);
    a1->proj[2 * j1] = (float)gx;
    a1->proj[2 * j1 + 1] = (float)gy;
    a1->depth[j1] = a1->depth[j0] + 0.5f;
    return j1;
}

static void case_match(void) {
    /* two views of a category whose left/right anchors share features */
    synth_pose p1 = { 0.5, 0.3, { 0.02, 0.0, 1.0 }, 1.2 }, p2 = { -0.4, 0.25, { -0.02, 0.01, 1.05 }, 1.3 };
    scene s1, s2;
    scene_make(&s1, 30, 32, 150, 1, &p1, 21);
    scene_make(&s2, 30, 32, 150, 1, &p2, 22);
    sa3d_align_input in1 = { .F = &s1.fm, .mask = s1.mask, .depth = s1.depth };
    sa3d_align_input in2 = { .F = &s2.fm, .mask = s2.mask, .depth = s2.depth };
    sa3d_align_params ap = fast_params();
    sa3d_error err;
    sa3d_alignment *a1 = NULL, *a2 = NULL;
    T_OK(sa3d_align_image(&a1, s1.prior, &in1, &ap, &err), &err);
    T_OK(sa3d_align_image(&a2, s2.prior, &in2, &ap, &err), &err);
    if (!a1 || !a2) goto out;
    printf("       alignment errors: view 1 %.3f cells, view 2 %.3f cells\n", anchor_err(&s1, a1), anchor_err(&s2, a2));
    /* queries: the visible-ish anchors of view 1, at their true projection in original pixels */
    int n = s1.prior->n_used;
    float q[SYNTH_SLOTS][2], pred[SYNTH_SLOTS][2], base[SYNTH_SLOTS][2];
    uint8_t fb[SYNTH_SLOTS];
    anchor_queries(&s1, &p1, q);
    /* the alignment's dense depths are Z of rig . Y: an appended anchor's depth is its anchor's Z */
    double dz = 0.0;
    for (int i = 0; i < a1->n_dense; i++)
        for (int k = 0; k < n; k++)
            if (s1.prior->dense_anchor[i] == s1.prior->used[k])
                dz = fmax(dz, fabs((double)a1->depth[i] - a1->Y[3 * k + 2]));
    printf("       dense depth of the appended anchors vs their Z: max|d| %.2g\n", dz);
    T_CHECK(dz <= 1e-6);
    sa3d_match_params mp = sa3d_match_params_default();
    float *work = malloc(sa3d_baseline_work_floats(s1.C, s1.g, n) * sizeof(float));
    T_OK(sa3d_match_sa3d(s1.prior, a1, &s1.fm, a2, &s2.fm, (const float(*)[2])q, n, &mp, pred, fb, &err), &err);
    T_OK(sa3d_match_baseline(&s1.fm, &s2.fm, (const float(*)[2])q, n, &mp.baseline, base, work, &err), &err);
    free(work);
    /* the default path, then each option (off by default) */
    const char *names[] = { "default", "vis_tol 0.3", "knn 5, vis_tol 0.3", "no anchor snap, no direct term",
                            "cosine 0.1, normalised, 4 soft points", "density, normalised", "lift, pseudo depth",
                            "lift, model depth" };
    for (int v = 0; v < (int)(sizeof names / sizeof *names); v++) {
        sa3d_match_params mv = sa3d_match_params_default();
        if (v == 1 || v == 2) mv.vis_tol = 0.3;
        if (v == 2) mv.knn = 5;
        if (v == 3) { mv.anchor_snap = 0.0; mv.w_direct = 0.0; }
        if (v == 4) { mv.query_sem = SA3D_QUERY_COSINE; mv.query_temp = 0.1; mv.query_norm = 1; mv.soft_points = 4; }
        if (v == 5) { mv.query_sem = SA3D_QUERY_DENSITY; mv.query_norm = 1; }
        if (v >= 6) mv.lift = v == 6 ? SA3D_LIFT_PSEUDO : SA3D_LIFT_MODEL;
        T_OK(sa3d_match_sa3d(s1.prior, a1, &s1.fm, a2, &s2.fm, (const float(*)[2])q, n, &mv, pred, fb, &err), &err);
        int ours_ok = 0, base_ok = 0, mirror_base_wrong = 0, mirror_ours_wrong = 0;
        double worst = 0.0;
        for (int k = 0; k < n; k++) {
            int slot = s1.prior->used[k];
            double eo = pred_err_cells(&s2, pred[k], slot), eb = pred_err_cells(&s2, base[k], slot);
            worst = fmax(worst, eo);
            int mirror = slot <= 3 || slot == 6 || slot == 7 || slot == 8 || slot == 9;
            if (v == 0)
                printf("       slot %2d%s: sa3d %.2f cells%s, baseline %.2f cells\n", slot, mirror ? " (mirror)" : "",
                       eo, fb[k] ? " (fallback)" : "", eb);
            ours_ok += eo <= 1.5;
            base_ok += eb <= 1.5;
            if (mirror) { mirror_base_wrong += eb > 1.5; mirror_ours_wrong += eo > 1.5; }
        }
        printf("       %s: within 1.5 cells: sa3d %d/%d, baseline %d/%d; mirror keypoints wrong: sa3d %d, baseline "
               "%d\n", names[v], ours_ok, n, base_ok, n, mirror_ours_wrong, mirror_base_wrong);
        T_CHECK(mirror_base_wrong >= 1);
        if (v == 0) {   /* the default gets every query right, to a fraction of a cell (0.52 at most; half a cell
                           off in the output's pixel conversion gives 1.15) */
            T_CHECK(ours_ok == n && worst <= 0.75);
            T_CHECK(mirror_ours_wrong == 0);
        } else {        /* the options (off by default) are at least as good as the baseline; some of these queries
                           are anchors hidden in view 1, which the visibility test cannot answer by design */
            T_CHECK(ours_ok >= base_ok && mirror_ours_wrong <= mirror_base_wrong);
        }
    }
    {   /* a query off the object (the image's corner) farther than max_query_dist from every projection of alignment
         * 1 goes to the baseline, alone: the others keep their matches; with the bound just past its distance it
         * is matched, just short of it it is not */
        float qo[SYNTH_SLOTS + 1][2], po[SYNTH_SLOTS + 1][2], bo[1][2], ref[SYNTH_SLOTS][2];
        uint8_t fo[SYNTH_SLOTS + 1];
        memcpy(qo, q, (size_t)n * sizeof q[0]);
        qo[n][0] = qo[n][1] = 3.0f;
        float xs, ys;
        sa3d_geoaware_to_square(s1.fm.img_w, s1.fm.img_h, s1.fm.input_size, qo[n][0], qo[n][1], &xs, &ys);
        double cell1 = (double)s1.fm.input_size / s1.g, dmin = HUGE_VAL;
        for (int i = 0; i < a1->n_dense; i++)
            dmin = fmin(dmin, hypot((double)xs / cell1 - (double)a1->proj[2 * i],
                                    (double)ys / cell1 - (double)a1->proj[2 * i + 1]));
        sa3d_match_params mv = sa3d_match_params_default();
        float *wk = malloc(sa3d_baseline_work_floats(s1.C, s1.g, 1) * sizeof(float));
        T_OK(sa3d_match_baseline(&s1.fm, &s2.fm, (const float(*)[2])&qo[n], 1, &mv.baseline, bo, wk, &err), &err);
        free(wk);
        T_OK(sa3d_match_sa3d(s1.prior, a1, &s1.fm, a2, &s2.fm, (const float(*)[2])q, n, &mv, ref, fo, &err), &err);
        T_OK(sa3d_match_sa3d(s1.prior, a1, &s1.fm, a2, &s2.fm, (const float(*)[2])qo, n + 1, &mv, po, fo, &err), &err);
        printf("       query at the corner, %.2f cells from the nearest projection: %s\n", dmin,
               fo[n] ? "the baseline's match" : "MATCHED");
        T_CHECK(dmin > mv.max_query_dist && fo[n] == 1 && po[n][0] == bo[0][0] && po[n][1] == bo[0][1]);
        for (int k = 0; k < n; k++) T_CHECK(fo[k] == 0 && memcmp(po[k], ref[k], sizeof po[k]) == 0);
        for (int v = 0; v < 2; v++) {
            mv.max_query_dist = dmin * (v == 0 ? 1.001 : 0.999);
            T_OK(sa3d_match_sa3d(s1.prior, a1, &s1.fm, a2, &s2.fm, (const float(*)[2])&qo[n], 1, &mv, po, fo, &err),
                 &err);
            T_CHECK(fo[0] == v);
        }
    }
    {   /* step 3 alone: image 2's features all alike (its semantic term flat) and no direct term leave image 2's score
         * the spatial Gaussian around the chosen point's projection, so the output is that projection, to the
         * window's truncation; queries exactly on view 1's appended anchors (nearest snap) choose them. Half a cell
         * off in the Gaussian's centre or in the output's conversion moves every match by 0.71 cells. */
        int cells = s2.g * s2.g, C = s2.C, checked = 0;
        float *flat = calloc((size_t)C * cells, sizeof(float)), qa[1][2];
        for (int u = 0; u < cells; u++) flat[u] = 1.0f;   /* channel 0: the unit vector e_0 in every cell */
        sa3d_feature_map F2 = s2.fm;
        F2.data = flat;
        sa3d_match_params mv = sa3d_match_params_default();
        mv.w_direct = 0.0;
        mv.snap_front = 0;
        double worst = 0.0, cell1 = (double)s1.fm.input_size / s1.g, cell2 = (double)s2.fm.input_size / s2.g;
        for (int i = 0; i < a1->n_dense; i++) {
            double px = (double)a2->proj[2 * i], py = (double)a2->proj[2 * i + 1];
            if (s1.prior->dense_anchor[i] < 0 || fmin(px, py) < 8.0 || fmax(px, py) > s2.g - 8.0) continue;
            float qx = (float)((double)a1->proj[2 * i] * cell1), qy = (float)((double)a1->proj[2 * i + 1] * cell1);
            sa3d_geoaware_from_square(s1.fm.img_w, s1.fm.img_h, s1.fm.input_size, qx, qy, &qa[0][0], &qa[0][1]);
            T_OK(sa3d_match_sa3d(s1.prior, a1, &s1.fm, a2, &F2, (const float(*)[2])qa, 1, &mv, pred, fb, &err), &err);
            float xs, ys;
            sa3d_geoaware_to_square(F2.img_w, F2.img_h, F2.input_size, pred[0][0], pred[0][1], &xs, &ys);
            worst = fmax(worst, hypot((double)xs / cell2 - px, (double)ys / cell2 - py));
            T_CHECK(fb[0] == 0);
            checked++;
        }
        printf("       flat image 2, no direct term: %d anchors' matches vs their projections in view 2: %.2g cells at "
               "most\n", checked, worst);
        T_CHECK(checked >= 4 && worst <= 0.02);
        free(flat);
    }
    {   /* non-square images (the same grids, read as the padded squares of a landscape and a portrait image): the
         * queries' and the outputs' pixel <-> grid conversions go through the padding offsets */
        int w1 = s1.fm.img_w, h1 = s1.fm.img_h, w2 = s2.fm.img_w, h2 = s2.fm.img_h;
        s1.fm.img_h = h1 * 4 / 5;
        s2.fm.img_w = w2 * 3 / 4;
        float qn[SYNTH_SLOTS][2];
        anchor_queries(&s1, &p1, qn);
        sa3d_match_params mv = sa3d_match_params_default();
        T_OK(sa3d_match_sa3d(s1.prior, a1, &s1.fm, a2, &s2.fm, (const float(*)[2])qn, n, &mv, pred, fb, &err), &err);
        double worst = 0.0;
        for (int k = 0; k < n; k++) worst = fmax(worst, pred_err_cells(&s2, pred[k], s1.prior->used[k]));
        printf("       images %d x %d and %d x %d: worst match %.2f cells\n", s1.fm.img_w, s1.fm.img_h, s2.fm.img_w,
               s2.fm.img_h, worst);
        T_CHECK(worst <= 0.75);
        s1.fm.img_w = w1; s1.fm.img_h = h1; s2.fm.img_w = w2; s2.fm.img_h = h2;
    }
    {   /* anchor_snap: make every non-anchor dense point a copy of an anchor (feature and statistics), exactly on that
         * anchor's query in view 1 (so that it wins step 2) and ten cells off in view 2; the queries must still land
         * on their keypoints through the anchors, and must not without the snap (direct term off: it would pull
         * them back) */
        sa3d_prior *pr = s1.prior;
        int N = pr->n_dense, C = pr->C;
        size_t bytes = (size_t)N * 2 * sizeof(float);
        float *saved1 = malloc(bytes), *saved2 = malloc(bytes), *savedf = malloc((size_t)N * (C + 2) * sizeof(float));
        memcpy(saved1, a1->proj, bytes);
        memcpy(saved2, a2->proj, bytes);
        memcpy(savedf, pr->dense_feat, (size_t)N * C * sizeof(float));
        memcpy(savedf + (size_t)N * C, pr->dense_attn_mean, (size_t)N * sizeof(float));
        memcpy(savedf + (size_t)N * (C + 1), pr->dense_attn_sd, (size_t)N * sizeof(float));
        for (int i = 0; i < N; i++) {
            if (pr->dense_anchor[i] >= 0) continue;
            int k = i % n, j = -1;
            for (int d = 0; d < N; d++)
                if (pr->dense_anchor[d] == pr->used[k]) j = d;
            memcpy(pr->dense_feat + (size_t)i * C, pr->dense_feat + (size_t)j * C, (size_t)C * sizeof(float));
            pr->dense_attn_mean[i] = pr->dense_attn_mean[j];
            pr->dense_attn_sd[i] = pr->dense_attn_sd[j];
            double gx, gy;
            synth_project(&p1, s1.g, pr->anchors + 3 * pr->used[k], &gx, &gy);
            a1->proj[2 * i] = (float)gx;
            a1->proj[2 * i + 1] = (float)gy;
            a2->proj[2 * i] += 10.0f;
        }
        for (int v = 0; v < 2; v++) {
            sa3d_match_params mv = sa3d_match_params_default();
            mv.w_direct = 0.0;
            if (v == 1) mv.anchor_snap = 0.0;
            T_OK(sa3d_match_sa3d(s1.prior, a1, &s1.fm, a2, &s2.fm, (const float(*)[2])q, n, &mv, pred, fb, &err), &err);
            int ok = 0;
            for (int k = 0; k < n; k++) ok += pred_err_cells(&s2, pred[k], s1.prior->used[k]) <= 1.5;
            printf("       decoy dense points, anchor_snap %.1f: %d/%d within 1.5 cells\n",
                   mv.anchor_snap, ok, n);
            T_CHECK(v == 0 ? ok == n : ok < n);
        }
        memcpy(a1->proj, saved1, bytes);
        memcpy(a2->proj, saved2, bytes);
        memcpy(pr->dense_feat, savedf, (size_t)N * C * sizeof(float));
        memcpy(pr->dense_attn_mean, savedf + (size_t)N * C, (size_t)N * sizeof(float));
        memcpy(pr->dense_attn_sd, savedf + (size_t)N * (C + 1), (size_t)N * sizeof(float));
        free(saved1);
        free(saved2);
        free(savedf);
    }
    {   /* snap_front: put anchor 1 exactly on query 0 in view 1 but behind anchor 0; the front-most rule keeps query
         * 0 on its own keypoint, the nearest rule sends it to anchor 1's */
        sa3d_prior *pr = s1.prior;
        float save[3];
        int j1 = hide_behind_query0(a1, &s1, &p1, save);
        double e[2];
        for (int v = 0; v < 2; v++) {
            sa3d_match_params mv = sa3d_match_params_default();
            mv.snap_front = 1 - v;
            T_OK(sa3d_match_sa3d(pr, a1, &s1.fm, a2, &s2.fm, (const float(*)[2])q, 1, &mv, pred, fb, &err), &err);
            e[v] = pred_err_cells(&s2, pred[0], pr->used[0]);
        }
        printf("       hidden anchor on query 0: front-most rule %.2f cells off, nearest rule %.2f\n", e[0], e[1]);
        T_CHECK(e[0] <= 1.5 && e[1] > 1.5);
        /* the same point behind the camera (a diverged pose) is not seen: query 0's match is what it is with the
         * point back in its place (the default, without the occlusion test, in which it would be the front-most) */
        {
            sa3d_match_params mv = sa3d_match_params_default();
            float ref0[1][2], hid[2] = { a1->proj[2 * j1], a1->proj[2 * j1 + 1] };
            a1->proj[2 * j1] = save[0];
            a1->proj[2 * j1 + 1] = save[1];
            a1->depth[j1] = save[2];
            T_OK(sa3d_match_sa3d(pr, a1, &s1.fm, a2, &s2.fm, (const float(*)[2])q, 1, &mv, ref0, fb, &err), &err);
            a1->proj[2 * j1] = hid[0];
            a1->proj[2 * j1 + 1] = hid[1];
            a1->depth[j1] = -1.0f;
            T_OK(sa3d_match_sa3d(pr, a1, &s1.fm, a2, &s2.fm, (const float(*)[2])q, 1, &mv, pred, fb, &err), &err);
            printf("       anchor 1 behind the camera on query 0: match %s\n",
                   memcmp(ref0, pred, sizeof pred[0]) ? "CHANGED" : "unchanged");
            T_CHECK(memcmp(ref0, pred, sizeof pred[0]) == 0);
        }
        a1->proj[2 * j1] = save[0];   /* put back */
        a1->proj[2 * j1 + 1] = save[1];
        a1->depth[j1] = save[2];
    }
    {   /* the lift (METHOD 6.2.5). The scene's depth map is the rendered depth, so both modes see the model's relief.
         * (1) What the depth shift absorbs: pseudo depth + 0.05 changes no match of SA3D_LIFT_PSEUDO; an increasing
         * affine map of it (which keeps the front-most candidate) none of SA3D_LIFT_MODEL. */
        int cells = a1->g * a1->g;
        float *z_saved = malloc((size_t)cells * sizeof(float));
        memcpy(z_saved, a1->cell_depth, (size_t)cells * sizeof(float));
        float ref[SYNTH_SLOTS][2];
        for (int mode = SA3D_LIFT_PSEUDO; mode <= SA3D_LIFT_MODEL; mode++) {
            sa3d_match_params mv = sa3d_match_params_default();
            mv.lift = mode;
            T_OK(sa3d_match_sa3d(s1.prior, a1, &s1.fm, a2, &s2.fm, (const float(*)[2])q, n, &mv, ref, fb, &err), &err);
            for (int u = 0; u < cells; u++)
                a1->cell_depth[u] = mode == SA3D_LIFT_PSEUDO ? z_saved[u] + 0.05f : 0.5f + 2.0f * z_saved[u];
            T_OK(sa3d_match_sa3d(s1.prior, a1, &s1.fm, a2, &s2.fm, (const float(*)[2])q, n, &mv, pred, fb, &err), &err);
            double dmax = 0.0;
            for (int k = 0; k < n; k++) dmax = fmax(dmax, hypot((double)(pred[k][0] - ref[k][0]), (double)(pred[k][1] - ref[k][1])));
            printf("       lift mode %d, depth map %s: matches move by %.2g px at most\n", mode,
                   mode == SA3D_LIFT_PSEUDO ? "+ 0.05" : "x 2 + 0.5", dmax);
            T_CHECK(dmax <= 1e-3);
            memcpy(a1->cell_depth, z_saved, (size_t)cells * sizeof(float));
        }
        /* (2) A hidden point exactly on the query: anchor 1's dense point moved onto query 0 in view 1, 0.5 behind
         * anchor 0. The 2D transfer (knn 1) takes it and lands on anchor 1's keypoint in view 2; the lift with the
         * pseudo depth, which puts the query at the depth the image shows there (the renderer's: anchor 0's) and
         * looks for its neighbours in 3D, must not. (The model-depth lift puts it on the model's front-most surface
         * within vis_radius, which in this coarse scene is not anchor 0's, so it is only printed.) */
        sa3d_prior *pr = s1.prior;
        float save[3];
        int j1 = hide_behind_query0(a1, &s1, &p1, save);
        double e[3];
        for (int v = 0; v < 3; v++) {
            sa3d_match_params mv = sa3d_match_params_default();
            mv.w_direct = 0.0;
            mv.anchor_snap = 0.0;
            if (v == 0) mv.knn = 1;
            else mv.lift = v;
            T_OK(sa3d_match_sa3d(pr, a1, &s1.fm, a2, &s2.fm, (const float(*)[2])q, 1, &mv, pred, fb, &err), &err);
            e[v] = pred_err_cells(&s2, pred[0], pr->used[1]);
        }
        printf("       hidden point on query 0, distance to the hidden point's keypoint in view 2: 2D transfer %.2f "
               "cells, lift (pseudo depth) %.2f, lift (model depth) %.2f\n", e[0], e[1], e[2]);
        T_CHECK(e[0] <= 1.5 && e[1] > 1.5);
        a1->proj[2 * j1] = save[0];   /* put back */
        a1->proj[2 * j1 + 1] = save[1];
        a1->depth[j1] = save[2];
        /* (3) without image 1's depth map the lift is refused, naming what is missing */
        float *cd = a1->cell_depth;
        a1->cell_depth = NULL;
        sa3d_match_params mv = sa3d_match_params_default();
        mv.lift = SA3D_LIFT_MODEL;
        T_STATUS(sa3d_match_sa3d(pr, a1, &s1.fm, a2, &s2.fm, (const float(*)[2])q, n, &mv, pred, fb, &err),
                 SA3D_ERR_ARG, &err);
        T_CONTAINS(err.msg, "depth map");
        a1->cell_depth = cd;
        free(z_saved);
    }
    {   /* options out of range are refused, naming the option */
        sa3d_match_params mv = sa3d_match_params_default();
        mv.query_temp = 0.0;
        T_STATUS(sa3d_match_sa3d(s1.prior, a1, &s1.fm, a2, &s2.fm, (const float(*)[2])q, n, &mv, pred, fb, &err),
                 SA3D_ERR_ARG, &err);
        T_CONTAINS(err.msg, "query_temp");
        mv = sa3d_match_params_default();
        mv.w_direct = (double)NAN;
        T_STATUS(sa3d_match_sa3d(s1.prior, a1, &s1.fm, a2, &s2.fm, (const float(*)[2])q, n, &mv, pred, fb, &err),
                 SA3D_ERR_ARG, &err);
        T_CONTAINS(err.msg, "w_direct");
        mv = sa3d_match_params_default();   /* a query that is not a number, named */
        float keep = q[n - 1][0];
        q[n - 1][0] = (float)INFINITY;
        T_STATUS(sa3d_match_sa3d(s1.prior, a1, &s1.fm, a2, &s2.fm, (const float(*)[2])q, n, &mv, pred, fb, &err),
                 SA3D_ERR_ARG, &err);
        T_CONTAINS(err.msg, "query");
        q[n - 1][0] = keep;
        float keep_p[2] = { a1->proj[0], a1->proj[1] };   /* a projection beyond int's range (was cast to int) */
        a1->proj[0] = 3e9f;
        a1->proj[1] = -3e9f;
        for (int v = 0; v < 3; v++) {   /* the z-buffer and visibility, query_norm's windows, the lift */
            mv = sa3d_match_params_default();
            mv.vis_tol = 0.5;
            mv.query_norm = v == 1;
            mv.lift = v == 2 ? SA3D_LIFT_MODEL : 0;
            T_OK(sa3d_match_sa3d(s1.prior, a1, &s1.fm, a2, &s2.fm, (const float(*)[2])q, n, &mv, pred, fb, &err),
                 &err);
            for (int k = 0; k < n; k++) T_CHECK(isfinite(pred[k][0]) && isfinite(pred[k][1]));
        }
        a1->proj[0] = keep_p[0];
        a1->proj[1] = keep_p[1];
        {   /* the rest of the options' domains, each value refused naming its option */
#define M_D(name, v) { #name, offsetof(sa3d_match_params, name), 1, v }
#define M_I(name, v) { #name, offsetof(sa3d_match_params, name), 0, v }
            static const struct { const char *name; size_t off; int is_double; double v; } bad_m[] = {
                M_D(sigma, 0.0), M_D(sem_sd_floor, HUGE_VAL), M_I(knn, 17), M_I(knn, -1), M_I(soft_points, 0),
                M_I(soft_points, 17), M_I(query_norm, 2), M_I(snap_front, -1), M_D(anchor_snap, -1.0),
                M_D(max_query_dist, -3.0), M_D(vis_radius, HUGE_VAL), M_D(vis_radius, -1.0), M_D(vis_tol, (double)NAN),
                M_D(max_energy, (double)NAN), M_D(min_fg_frac, (double)NAN), M_I(query_sem, 3),
            };
#undef M_D
#undef M_I
            for (size_t k = 0; k < sizeof bad_m / sizeof *bad_m; k++) {
                mv = sa3d_match_params_default();
                char *field = (char *)&mv + bad_m[k].off;
                if (bad_m[k].is_double) *(double *)field = bad_m[k].v;
                else *(int *)field = (int)bad_m[k].v;
                T_STATUS(sa3d_match_sa3d(s1.prior, a1, &s1.fm, a2, &s2.fm, (const float(*)[2])q, n, &mv, pred, fb,
                                         &err), SA3D_ERR_ARG, &err);
                T_CONTAINS(err.msg, bad_m[k].name);
                T_STATUS(sa3d_match_params_check(&mv, &err), SA3D_ERR_ARG, &err);
            }
            mv = sa3d_match_params_default();
            T_OK(sa3d_match_params_check(&mv, &err), &err);
        }
        const char *bad_lift[] = { "lift (0", "lift_k", "knn (0 with lift" };
        for (int v = 0; v < 3; v++) {
            mv = sa3d_match_params_default();
            mv.lift = v == 0 ? 3 : SA3D_LIFT_PSEUDO;
            if (v == 1) mv.lift_k = 17;
            if (v == 2) mv.knn = 5;
            T_STATUS(sa3d_match_sa3d(s1.prior, a1, &s1.fm, a2, &s2.fm, (const float(*)[2])q, n, &mv, pred, fb, &err),
                     SA3D_ERR_ARG, &err);
            T_CONTAINS(err.msg, bad_lift[v]);
        }
    }
    /* an implausible alignment sends every query to the baseline */
    mp.min_fg_frac = 1.01;
    T_OK(sa3d_match_sa3d(s1.prior, a1, &s1.fm, a2, &s2.fm, (const float(*)[2])q, n, &mp, pred, fb, &err), &err);
    for (int k = 0; k < n; k++) {
        T_CHECK(fb[k] == 1);
        T_CHECK(pred[k][0] == base[k][0] && pred[k][1] == base[k][1]);
    }
out:
    sa3d_alignment_free(a1);
    sa3d_alignment_free(a2);
    scene_free(&s1);
    scene_free(&s2);
}

static void case_args(void) {
    synth_pose pose = { 0.5, 0.3, { 0.0, 0.0, 1.0 }, 1.2 };
    scene s;
    scene_make(&s, G_SMALL, C_SMALL, 20, 0, &pose, 1);
    long live = sa3d_alloc_live_blocks();   /* the scene's prior is the library's: its blocks are live */
    sa3d_feature_map bad = s.fm;
    bad.C = 8;
    sa3d_align_input in = { .F = &bad, .mask = NULL, .depth = NULL };
    sa3d_align_params p = sa3d_align_params_default();
    sa3d_error err;
    sa3d_alignment *a = (sa3d_alignment *)&err;
    T_STATUS(sa3d_align_image(&a, s.prior, &in, &p, &err), SA3D_ERR_ARG, &err);
    T_CHECK(a == NULL);
    T_CONTAINS(err.msg, "channels");
    /* options by name: every listed name reads back what was set; bad names and values are refused */
    sa3d_sa3d_matcher_params mp = sa3d_sa3d_matcher_params_default();
    char value[64], assign[128];
    const char *name;
    int n_fields = 0;
    for (int k = 0; (name = sa3d_sa3d_matcher_params_field(&mp, k, value, sizeof value)); k++, n_fields++) {
        snprintf(assign, sizeof assign, "%s=%s", name, value);
        sa3d_sa3d_matcher_params q = sa3d_sa3d_matcher_params_default();
        T_OK(sa3d_sa3d_matcher_params_set(&q, assign, &err), &err);
        char v2[64], v3[64];   /* the printed value reads back exactly, and every field equals the defaults */
        for (int j = 0; sa3d_sa3d_matcher_params_field(&q, j, v2, sizeof v2); j++) {
            sa3d_sa3d_matcher_params_field(&mp, j, v3, sizeof v3);
            T_CHECK(strcmp(v2, v3) == 0);
        }
    }
    T_CHECK(n_fields >= 35);
    T_OK(sa3d_sa3d_matcher_params_set(&mp, "match.w_direct=0.5", &err), &err);
    T_CHECK(mp.match.w_direct == 0.5);
    T_OK(sa3d_sa3d_matcher_params_set(&mp, "align.n_hyp=7", &err), &err);
    T_CHECK(mp.align.n_hyp == 7);
    T_OK(sa3d_sa3d_matcher_params_set(&mp, "match.baseline.temperature=0.04", &err), &err);
    T_CHECK(mp.match.baseline.temperature == 0.04f);
    const char *bad_sets[] = { "match.nope=1", "align.n_hyp=1.5", "align.n_hyp=99999999999", "match.sigma=nan",
                               "match.sigma=inf", "match.sigma=", "align.seed=-1", "align.seed= -1",
                               "align.n_hyp= 7", "=1", "match.sigma" };
    for (int k = 0; k < (int)(sizeof bad_sets / sizeof *bad_sets); k++) {
        sa3d_sa3d_matcher_params before = mp;
        T_STATUS(sa3d_sa3d_matcher_params_set(&mp, bad_sets[k], &err), SA3D_ERR_ARG, &err);
        T_CHECK(mp.match.sigma == before.match.sigma && mp.align.n_hyp == before.align.n_hyp &&
                mp.align.seed == before.align.seed);   /* nothing changed */
    }
    T_CONTAINS(err.msg, "NAME=VALUE");
    {   /* a soft-argmax temperature whose 60 x beta overflows a float: refused, not NaN matches */
        sa3d_baseline_params bp = sa3d_baseline_params_default();
        bp.temperature = 6e36f;
        T_STATUS(sa3d_baseline_params_check(&bp, &err), SA3D_ERR_ARG, &err);
        T_CONTAINS(err.msg, "temperature");
    }
    in.F = &s.fm;
    {   /* every option out of its domain is refused, naming it (NaN and infinities too, which --set cannot give) */
#define OPT_D(name, v) { #name, offsetof(sa3d_align_params, name), 1, v }
#define OPT_I(name, v) { #name, offsetof(sa3d_align_params, name), 0, v }
        static const struct { const char *name; size_t off; int is_double; double v; } bad_opts[] = {
            OPT_I(n_hyp, 0), OPT_I(n_hyp, 2000000), OPT_I(n_iter, -1), OPT_I(n_iter, 2147483647), OPT_D(lr, 0.0),
            OPT_D(lr, HUGE_VAL), OPT_I(n_threads, -1), OPT_I(rec_mode, 2), OPT_I(point_blur, -1), OPT_I(use_tets, 2),
            OPT_D(w_rec, -1.0), OPT_D(w_geom, (double)NAN), OPT_D(w_bg, HUGE_VAL), OPT_D(w_depth, -0.5),
            OPT_D(sigma_start, -1.0), OPT_D(sigma_end, (double)NAN), OPT_D(sigma_end, HUGE_VAL), OPT_D(tau, 0.0),
            OPT_D(tau, HUGE_VAL), OPT_I(top_k, 0), OPT_I(top_k, 100), OPT_D(outlier_logp, (double)NAN),
            OPT_D(outlier_logp, HUGE_VAL), OPT_D(sem_sd_floor, 0.0), OPT_D(sem_sd_floor, HUGE_VAL),
            OPT_I(max_pairs, -1), OPT_I(max_tets, -5), OPT_D(init_scale, 0.0), OPT_D(init_scale, -1.0),
            OPT_D(focal_init, 20.5), OPT_D(focal_init, -1.0), OPT_D(focal_init, (double)NAN),
            OPT_D(focal_init, HUGE_VAL), OPT_D(depth_default, 0.0), OPT_D(depth_default, HUGE_VAL),
            OPT_D(prune_at, (double)NAN), OPT_D(prune_at, 1.5), OPT_I(prune_keep, -1), OPT_D(w_sparse, HUGE_VAL),
            OPT_D(w_sparse, -1.0), OPT_D(sparse_from, 1.0), OPT_D(dense_end, HUGE_VAL), OPT_D(dense_end, -1.0),
            OPT_D(sparse_outlier, -HUGE_VAL), OPT_D(sparse_outlier, (double)NAN), OPT_D(sparse_outlier, -1e300),
            OPT_D(sparse_outlier, 1.0), OPT_D(w_mirror, 1.5), OPT_D(w_mirror, (double)NAN),
            /* finite, but every hypothesis would go non-finite: refused before the work */
            OPT_D(lr, 1e300), OPT_D(sigma_start, 1e-300), OPT_D(init_scale, 1e300), OPT_D(focal_init, 1e-300),
            OPT_D(depth_default, 1e300),
        };
#undef OPT_D
#undef OPT_I
        for (size_t k = 0; k < sizeof bad_opts / sizeof *bad_opts; k++) {
            p = sa3d_align_params_default();
            p.w_mirror = 0.0;
            char *field = (char *)&p + bad_opts[k].off;
            if (bad_opts[k].is_double) *(double *)field = bad_opts[k].v;
            else *(int *)field = (int)bad_opts[k].v;
            T_STATUS(sa3d_align_image(&a, s.prior, &in, &p, &err), SA3D_ERR_ARG, &err);
            T_CONTAINS(err.msg, bad_opts[k].name);
            T_CHECK(a == NULL);
            T_STATUS(sa3d_align_params_check(&p, &err), SA3D_ERR_ARG, &err);
        }
        p = sa3d_align_params_default();
        T_OK(sa3d_align_params_check(&p, &err), &err);
    }
    {   /* mask and depth cells: a NaN, a fraction out of [0, 1], depth 0, negative or infinite are refused by
         * cell (a NaN depth under a zero weight made d* NaN; depth 0 "succeeded" with the model at the camera) */
        p = sa3d_align_params_default();
        int q = s.g * s.g / 2;
        float *maps[2] = { s.mask, s.depth }, bads[2][4] = { { NAN, -0.5f, 1.5f, INFINITY },
                                                             { NAN, 0.0f, -1.0f, INFINITY } };
        sa3d_align_input in_md = { .F = &s.fm, .mask = s.mask, .depth = s.depth };
        for (int m = 0; m < 2; m++)
            for (int k = 0; k < 4; k++) {
                float keep = maps[m][q];
                maps[m][q] = bads[m][k];
                T_STATUS(sa3d_align_image(&a, s.prior, &in_md, &p, &err), SA3D_ERR_ARG, &err);
                T_CONTAINS(err.msg, m ? "depth cell" : "mask cell");
                T_CHECK(a == NULL);
                maps[m][q] = keep;
            }
        s.mask[q] = 0.0f;   /* a NaN depth where the weight is 0 */
        s.depth[q] = NAN;
        T_STATUS(sa3d_align_image(&a, s.prior, &in_md, &p, &err), SA3D_ERR_ARG, &err);
        T_CONTAINS(err.msg, "depth cell");
        s.depth[q] = 1.0f;
    }
    /* the mirror term: a weight in [0, 1], the mirrored image, and a twin for every used anchor */
    p = sa3d_align_params_default();
    p.w_mirror = 0.5;
    T_STATUS(sa3d_align_image(&a, s.prior, &in, &p, &err), SA3D_ERR_ARG, &err);
    T_CONTAINS(err.msg, "mirrored image");
    sa3d_align_input in_m = in;
    in.mirror = &in_m;
    p.w_mirror = 1.5;
    T_STATUS(sa3d_align_image(&a, s.prior, &in, &p, &err), SA3D_ERR_ARG, &err);
    T_CONTAINS(err.msg, "w_mirror");
    p.w_mirror = 0.5;
    int32_t *flip = s.prior->slot_flip;
    flip[0] = 5;   /* slot 5 is not used */
    flip[5] = 0;
    T_STATUS(sa3d_align_image(&a, s.prior, &in, &p, &err), SA3D_ERR_ARG, &err);
    T_CONTAINS(err.msg, "twin");
    s.prior->slot_flip = NULL;   /* a prior file without the map */
    T_STATUS(sa3d_align_image(&a, s.prior, &in, &p, &err), SA3D_ERR_ARG, &err);
    T_CONTAINS(err.msg, "slot_flip");
    s.prior->slot_flip = flip;
    T_CHECK(a == NULL);
    T_CHECK(sa3d_alloc_live_blocks() == live);
    scene_free(&s);
}

int main(int argc, char **argv) {
    static const t_case cases[] = {
        { "1.1", "gradients of every term and the total vs central differences", case_fd },
        { "1.2", "L_geom invariant to a similarity transform", case_geom_invariance },
        { "1.3", "L_sparse: every anchor, lowest at the anchors' own evidence", case_sparse },
        { "1.4", "mirror term: image and mirror alike, bit for bit; mirrored image, mirrored pose", case_mirror },
        { "1.5", "reading (b)'s blur: constant, impulse (a Gaussian of the sd), ramp, border", case_blur },
        { "1.6", "conventions: bilinear at cell centres, mask zero outside, the schedule's ends", case_conventions },
        { "2.1", "pose recovered from random starts (3 poses; one without mask/depth)", case_recover },
        { "2.2", "deterministic: twice at 2 threads, and 1 thread", case_determinism },
        { "2.3", "best hypothesis: lowest end energy (n_hyp 1, 4, 8 never rise), reported as scored", case_best },
        { "2.4", "focal length: a telephoto view stays at the bound f <= 20, at the start and after every step",
          case_focal },
        { "3.1", "matcher through two alignments (every option, the lift); mirror features defeat the baseline",
          case_match },
        { "4.1", "argument errors", case_args },
    };
    return t_run(cases, (int)(sizeof cases / sizeof cases[0]), argc, argv);
}
