/* GPU parity of the aligner (src/align/cuda/align_cuda.cu against the CPU loops of src/align/align.c, issue 6):
 * the energy, its terms and its gradient for every (hypothesis, view) at several stages and settings, then a
 * whole alignment, on the synthetic category of tests/align_synth.h.
 *
 * Two programs from this file:
 *   test_align_cuda  the library's backend on a GPU. Skips (exit 77) in builds without the CUDA backend or on
 *                    machines without a GPU, so the CPU CI runs it as "skipped".
 *   test_align_emu   (SA3D_ALIGN_EMU) the same backend source built for the CPU against tests/cuda_emu.hh's
 *                    emulated runtime, cuBLAS and threads (tests/align_cuda_emu.cc): runs in every build with a
 *                    C++20 compiler, at smaller sizes, so that the kernel and the host code are tested without a
 *                    GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "align/align_gpu.h"
#include "align/align_internal.h"
#include "base/base.h"
#include "semalign3d/align.h"
#include "t.h"
#include "align_synth.h"

enum { G = 32, C = 32, N_EXTRA = 300 };
#ifdef SA3D_ALIGN_EMU   /* the emulator runs a block in ~10 ms */
enum { B_ROWS = 9, ALIGN_HYP = 12, ALIGN_ITER = 20, ALIGN_KEEP = 3 };
#else
enum { B_ROWS = 37, ALIGN_HYP = 40, ALIGN_ITER = 60, ALIGN_KEEP = 6 };
#endif

/* Both sides compute in double; they differ by CUDA's and libm's exp and log (an ulp or two) and by the order of
 * the block's sums. Relative to max(1, |CPU value|), and for a gradient to max(1, its largest component). */
#define E_TOL 1e-9
#define SENTINEL 12345.0   /* rows of hypotheses that are not alive keep it */

/* B poses around the truth: jitter growing with b, every third mirrored, every seventh pushed half behind the
 * camera (the depth clamp), and phi spread around the true one. */
static void make_poses(const scene *s, int B, double *Y, double *phi, uint64_t seed) {
    int n = s->prior->n_used;
    for (int b = 0; b < B; b++) {
        double *y = Y + (size_t)b * 3 * n;
        true_anchors(s, y, seed + (uint64_t)b, 0.01 + 0.01 * b);
        for (int k = 0; k < n; k++) {
            if (b % 3 == 2) y[3 * k] = -y[3 * k];
            if (b % 7 == 6) y[3 * k + 2] -= 0.9;
        }
        phi[b] = 1.0 / s->pose.f * (0.8 + 0.4 * (double)b / B);
    }
}

static double rel(double a, double b) { return fabs(a - b) / fmax(1.0, fabs(b)); }

/* Worst of rel over the scalar pairs and of max |a - b| / max(1, max |b|) over a gradient of m values. */
static double grad_diff(const double *a, const double *b, size_t m) {
    double gmax = 1.0, gd = 0.0;
    for (size_t k = 0; k < m; k++) {
        gmax = fmax(gmax, fabs(b[k]));
        gd = fmax(gd, fabs(a[k] - b[k]));
    }
    return gd / gmax;
}

/* Runs B hypotheses through the GPU (one sa3d_align_gpu from new to free) and each (hypothesis, view) through
 * sa3d_align_energy_one, each hypothesis through sa3d_geom_energy; returns the worst relative difference over
 * energies, terms, dE/dphi, dE/dY and L_geom with its gradient (NaN sticks). */
static double compare(const sa3d_align_ctx *c, int B, const double *Y, const double *phi, const uint8_t *alive,
                      const sa3d_align_stage *st) {
    int n = c->n, V = sa3d_align_views(c);
    size_t P3 = 3 * (size_t)n, rows = (size_t)V * B;
    double *E = malloc(rows * sizeof(double)), *T = malloc(rows * 4 * sizeof(double));
    double *gY = malloc(rows * P3 * sizeof(double)), *gp = malloc(rows * sizeof(double));
    double *eg = malloc((size_t)B * sizeof(double)), *gg = malloc((size_t)B * P3 * sizeof(double));
    double *work = malloc(sa3d_align_work_doubles(c) * sizeof(double)), *cg = malloc(P3 * sizeof(double));
    double *Ym = malloc(P3 * sizeof(double));
    for (size_t r = 0; r < rows; r++) {
        E[r] = gp[r] = SENTINEL;
        for (int k = 0; k < 4; k++) T[4 * r + k] = SENTINEL;
        for (size_t k = 0; k < P3; k++) gY[P3 * r + k] = SENTINEL;
    }
    for (size_t k = 0; k < (size_t)B; k++) eg[k] = SENTINEL;
    for (size_t k = 0; k < (size_t)B * P3; k++) gg[k] = SENTINEL;
    sa3d_error err;
    sa3d_align_gpu *g = NULL;
    T_OK(sa3d_align_gpu_new(&g, c, B, &err), &err);
    T_OK(sa3d_align_gpu_start(g, B, Y, phi, alive, st, &err), &err);
    T_OK(sa3d_align_gpu_finish(g, E, T, gY, gp, eg, gg, &err), &err);
    sa3d_align_gpu_free(g);
    double worst = 0.0;
    for (int v = 0; v < V; v++)
        for (int b = 0; b < B; b++) {
            size_t r = (size_t)v * B + b;
            if (!alive[b]) {   /* untouched */
                T_CHECK(E[r] == SENTINEL && gp[r] == SENTINEL && T[4 * r] == SENTINEL &&
                        gY[P3 * r] == SENTINEL && eg[b] == SENTINEL && gg[P3 * b] == SENTINEL);
                continue;
            }
            const sa3d_align_ctx *cv = v ? c->mirror : c;
            const double *y = Y + P3 * b;
            if (v) {
                for (int k = 0; k < n; k++) sa3d_ae_mirror_anchor(c->twin, y, k, Ym);
                y = Ym;
            }
            double terms[4], gphi, e = sa3d_align_energy_one(cv, y, phi[b], st, cg, &gphi, terms, NULL, work);
            double d = fmax(rel(E[r], e), fmax(rel(gp[r], gphi), grad_diff(gY + P3 * r, cg, P3)));
            for (int k = 0; k < 4; k++) d = fmax(d, rel(T[4 * r + k], terms[k]));
            if (v == 0) {   /* L_geom: 0 and no gradient when w_geom is 0 */
                double e_geom = 0.0;
                if (c->p.w_geom != 0.0) sa3d_geom_energy(&e_geom, cg, y, 1, n, &c->gt, c->p.use_tets);
                else memset(cg, 0, P3 * sizeof(double));
                d = fmax(d, fmax(rel(eg[b], e_geom), grad_diff(gg + P3 * b, cg, P3)));
            }
            if (!(d <= E_TOL))
                printf("       view %d hypothesis %d: E %.17g vs %.17g, worst relative difference %.2e\n", v, b,
                       E[r], e, d);
            if (!(d <= worst)) worst = d;
        }
    free(E); free(T); free(gY); free(gp); free(eg); free(gg); free(work); free(cg); free(Ym);
    return worst;
}

/* Four settings (the defaults with the mirror; reading (b) without the mirror and L_geom; no mask with a sharper
 * soft-max and L_geom without tets; L_rec and L_geom only) x four stages of the schedule, on a 32 x 32 grid with
 * 311 dense points, B_ROWS hypotheses of which every fifth is dead. */
static void case_energy(void) {
    int B_max = B_ROWS;
    synth_pose pose = { 0.7, 0.3, { 0.02, -0.01, 1.0 }, 1.2 };
    scene s;
    scene_make(&s, G, C, N_EXTRA, 0, &pose, 7);
    mirrored mi;
    mirror_make(&mi, &s);
    sa3d_align_input in_m = { .F = &mi.fm, .mask = mi.mask, .depth = mi.depth };
    sa3d_align_input in = { .F = &s.fm, .mask = s.mask, .depth = s.depth, .mirror = &in_m };
    sa3d_align_input in_nomask = { .F = &s.fm, .mask = NULL, .depth = s.depth, .mirror = &in_m };
    struct { const char *name; sa3d_align_params p; const sa3d_align_input *in; } cs[] = {
        { "defaults (mirror 0.5, reading (a), L_sparse)", sa3d_align_params_default(), &in },
        { "reading (b), no mirror, no L_geom", sa3d_align_params_default(), &in },
        { "no mask, tau 0.3, top_k 8, no tets", sa3d_align_params_default(), &in_nomask },
        { "rec and geom only, mirror 0.3", sa3d_align_params_default(), &in },
    };
    cs[1].p.rec_mode = SA3D_REC_POINT;
    cs[1].p.w_mirror = 0.0;
    cs[1].p.w_geom = 0.0;
    cs[2].p.use_tets = 0;
    cs[2].p.tau = 0.3;
    cs[2].p.top_k = 8;
    cs[3].p.w_bg = cs[3].p.w_depth = cs[3].p.w_sparse = 0.0;
    cs[3].p.w_mirror = 0.3;
    int n = s.prior->n_used;
    double *Y = malloc((size_t)B_max * 3 * n * sizeof(double)), *phi = malloc((size_t)B_max * sizeof(double));
    uint8_t *alive = malloc((size_t)B_max);
    make_poses(&s, B_max, Y, phi, 11);
    for (int b = 0; b < B_max; b++) alive[b] = b % 5 != 4;
    sa3d_error err;
    for (size_t q = 0; q < sizeof cs / sizeof cs[0]; q++) {
        sa3d_align_ctx c;
        T_OK(sa3d_align_ctx_init(&c, s.prior, cs[q].in, &cs[q].p, &err), &err);
        int ts[4] = { 0, cs[q].p.n_iter / 3, 2 * cs[q].p.n_iter / 3, cs[q].p.n_iter };
        for (int k = 0; k < 4; k++) {
            sa3d_align_stage st = sa3d_align_stage_at(&cs[q].p, G, ts[k]);
            int B = k == 1 ? 5 : B_max;   /* also fewer rows than another call held */
            double d = compare(&c, B, Y, phi, alive, &st);
            printf("       %-46s t %3d (sigma %.2f, w_sparse %.2f), %2d hypotheses x %d views: worst %.2e "
                   "(bound %.0e)\n", cs[q].name, ts[k], st.sigma, st.w_sparse, B, sa3d_align_views(&c), d, E_TOL);
            T_CHECK(d <= E_TOL);
        }
        sa3d_align_ctx_free(&c);
    }
    free(Y); free(phi); free(alive);
    mirror_free(&mi);
    scene_free(&s);
}

/* A whole alignment on the GPU (similarity maps and energies): deterministic (twice, bit for bit), and the CPU's
 * to within rounding that the optimisation carries along (same winning hypothesis, anchors within 0.05 cells). */
static void case_align(void) {
    synth_pose pose = { -2.2, 0.35, { -0.03, 0.02, 0.9 }, 1.4 };
    scene s;
    scene_make(&s, G, C, N_EXTRA, 0, &pose, 5);
    mirrored mi;
    mirror_make(&mi, &s);
    sa3d_align_input in_m = { .F = &mi.fm, .mask = mi.mask, .depth = mi.depth };
    sa3d_align_input in = { .F = &s.fm, .mask = s.mask, .depth = s.depth, .mirror = &in_m };
    for (int mirror = 0; mirror < 2; mirror++) {
        sa3d_align_params p = sa3d_align_params_default();
        p.n_hyp = ALIGN_HYP;
        p.n_iter = ALIGN_ITER;
        p.prune_keep = ALIGN_KEEP;
        p.w_mirror = mirror ? 0.5 : 0.0;
        sa3d_alignment *a[3] = { NULL, NULL, NULL };
        sa3d_error err;
        for (int r = 0; r < 3; r++) {
            p.device = r ? SA3D_ALIGN_ON_CUDA : SA3D_ALIGN_ON_CPU;
            T_OK(sa3d_align_image(&a[r], s.prior, &in, &p, &err), &err);
        }
        if (!a[0] || !a[1] || !a[2]) break;
        int n = a[0]->n_used;
        T_CHECK(a[1]->energy == a[2]->energy && !memcmp(a[1]->Y, a[2]->Y, 3 * (size_t)n * sizeof(double)));
        double dp = 0.0;
        for (int k = 0; k < 2 * n; k++)
            dp = fmax(dp, fabs((double)a[0]->proj_anchor[k] - (double)a[1]->proj_anchor[k]));
        printf("       w_mirror %.1f: best hypothesis CPU %d GPU %d, energy %.10g vs %.10g, anchors apart by <= %.2e "
               "cells\n", p.w_mirror, a[0]->best_hyp, a[1]->best_hyp, a[0]->energy, a[1]->energy, dp);
        T_CHECK(a[0]->best_hyp == a[1]->best_hyp);
        T_CHECK(rel(a[1]->energy, a[0]->energy) <= 1e-6);
        T_CHECK(dp <= 0.05);
        for (int r = 0; r < 3; r++) sa3d_alignment_free(a[r]);
    }
    mirror_free(&mi);
    scene_free(&s);
}

/* Reading (a)'s order: point i before point j at a cell (higher log p_sem, then higher similarity, then lower
 * index). Written out here, apart from the library's insertion, so that the lists are checked against it. */
static int cand_before(double li, float si, int i, double lj, float sj, int j) {
    return li > lj || (li == lj && (si > sj || (si == sj && i < j)));
}

/* The similarity maps and the candidate lists. S: cuBLAS (column-major, S^T = F^T feat^T) against a
 * double-precision product, at sizes that are multiples of nothing. Lists: for K = 1, 5, N, bit for bit the CPU's
 * cell function on the returned S, and by definition the K first points of reading (a)'s order. Three equal
 * feature rows and means below most similarities (log p_sem 0) make ties of both kinds. */
static void case_similarity(void) {
    int N = 37, Cc = 50, cells = 61;
    float *feat = malloc((size_t)N * Cc * sizeof(float)), *F = malloc((size_t)Cc * cells * sizeof(float));
    double *mu = malloc((size_t)N * sizeof(double)), *sd = malloc((size_t)N * sizeof(double));
    uint64_t r = 5;
    for (int i = 0; i < N; i++) synth_unit(feat + (size_t)i * Cc, Cc, &r);
    memcpy(feat + 5 * (size_t)Cc, feat + 4 * (size_t)Cc, (size_t)Cc * sizeof(float));
    memcpy(feat + 6 * (size_t)Cc, feat + 4 * (size_t)Cc, (size_t)Cc * sizeof(float));
    for (int k = 0; k < Cc * cells; k++) F[k] = (float)(synth_gauss(&r) / sqrt((double)Cc));
    for (int i = 0; i < N; i++) {
        mu[i] = 0.15 + 0.1 * synth_gauss(&r);
        sd[i] = 0.05 + 0.1 * fabs(synth_gauss(&r));
    }
    static const int Ks[] = { 1, 5, 37 };
    for (int t = 0; t < 3; t++) {
        int K = Ks[t];
        sa3d_align_ctx c;
        memset(&c, 0, sizeof c);
        c.N = N;
        c.C = Cc;
        c.cells = cells;
        c.K = K;
        c.sem_mu = mu;
        c.sem_sd = sd;
        c.S = malloc((size_t)N * cells * sizeof(float));
        c.cand = malloc((size_t)cells * K * sizeof(int));
        c.cand_lp = malloc((size_t)cells * K * sizeof(double));
        int *id = malloc((size_t)K * sizeof(int));
        double *lp = malloc((size_t)K * sizeof(double));
        float *sv = malloc((size_t)K * sizeof(float));
        sa3d_error err;
        T_OK(sa3d_align_gpu_similarity(&c, feat, F, &err), &err);
        double worst = 0.0;
        for (int i = 0; i < N; i++)
            for (int q = 0; q < cells; q++) {
                double ref = 0.0;
                for (int k = 0; k < Cc; k++)
                    ref += (double)feat[(size_t)i * Cc + k] * (double)F[(size_t)k * cells + q];
                worst = fmax(worst, fabs((double)c.S[(size_t)i * cells + q] - ref));
            }
        int same = 1, ordered = 1, ties = 0;
        for (int q = 0; q < cells; q++) {
            const int *cq = c.cand + (size_t)q * K;
            const double *lq = c.cand_lp + (size_t)q * K;
            sa3d_align_cell_candidates(c.S, (size_t)cells, (size_t)q, N, mu, sd, K, id, lp, sv);
            same &= !memcmp(id, cq, (size_t)K * sizeof(int)) && !memcmp(lp, lq, (size_t)K * sizeof(double));
            /* each listed point before the next, and the last before every point not listed */
            uint8_t listed[37] = { 0 };
            for (int k = 0; k < K; k++) {
                int i = cq[k];
                if (i < 0 || i >= N || listed[i]) { ordered = 0; break; }
                listed[i] = 1;
                ordered &= lq[k] == sa3d_align_lp((double)c.S[(size_t)i * cells + q], mu[i], sd[i], NULL);
            }
            if (!ordered) break;
            for (int k = 0; k < K; k++) {
                int i = cq[k];
                float si = c.S[(size_t)i * cells + q];
                for (int j = 0; j < N; j++) {
                    if (k + 1 < K ? j != cq[k + 1] : listed[j]) continue;
                    float sj = c.S[(size_t)j * cells + q];
                    double lj = sa3d_align_lp((double)sj, mu[j], sd[j], NULL);
                    ordered &= cand_before(lq[k], si, i, lj, sj, j);
                    ties += lq[k] == lj;
                }
            }
        }
        printf("       K %2d: S [%d][%d] = feat [%d][%d] . F [%d][%d]: max |GPU - double| %.2e (bound 1e-5); lists "
               "%s the CPU's, %s (%d ties of log p_sem decided)\n", K, N, cells, N, Cc, Cc, cells, worst,
               same ? "equal" : "DIFFER from", ordered ? "in order" : "OUT OF ORDER", ties);
        T_CHECK(worst <= 1e-5);
        T_CHECK(same);
        T_CHECK(ordered);
        T_CHECK(ties > 0);
        free(c.S); free(c.cand); free(c.cand_lp); free(id); free(lp); free(sv);
    }
    free(feat); free(F); free(mu); free(sd);
}

static void case_errors(void) {
    synth_pose pose = { 0.4, 0.2, { 0.0, 0.0, 1.0 }, 1.2 };
    scene s;
    scene_make(&s, 16, 16, 20, 0, &pose, 3);
    sa3d_align_input in = { .F = &s.fm, .mask = s.mask, .depth = s.depth };
    sa3d_align_params p = sa3d_align_params_default();
    p.w_mirror = 0.0;
    sa3d_align_ctx c;
    sa3d_error err;
    T_OK(sa3d_align_ctx_init(&c, s.prior, &in, &p, &err), &err);
    int n = c.n;
    double Y[3 * SYNTH_SLOTS * 4], phi[4] = { 0.8, 0.8, 0.8, 0.8 }, E[4], T[16], gY[3 * SYNTH_SLOTS * 4], gp[4];
    double eg[4], gg[3 * SYNTH_SLOTS * 4];
    uint8_t alive[4] = { 1, 1, 1, 1 };
    make_poses(&s, 4, Y, phi, 3);
    sa3d_align_stage st = sa3d_align_stage_at(&p, 16, 0);
    sa3d_align_gpu *g = NULL;
    T_OK(sa3d_align_gpu_new(&g, &c, 3, &err), &err);
    T_STATUS(sa3d_align_gpu_start(g, 4, Y, phi, alive, &st, &err), SA3D_ERR_ARG, &err);   /* more than room */
    T_STATUS(sa3d_align_gpu_finish(g, E, T, gY, gp, eg, gg, &err), SA3D_ERR_ARG, &err);          /* nothing started */
    T_OK(sa3d_align_gpu_start(g, 3, Y, phi, alive, &st, &err), &err);
    T_STATUS(sa3d_align_gpu_start(g, 3, Y, phi, alive, &st, &err), SA3D_ERR_ARG, &err);   /* one in flight */
    T_OK(sa3d_align_gpu_finish(g, E, T, gY, gp, eg, gg, &err), &err);
    T_CHECK(isfinite(E[0]) && isfinite(gY[3 * n - 1]) && isfinite(eg[0]) && isfinite(gg[3 * n - 1]));
    sa3d_align_gpu_free(g);
    T_STATUS(sa3d_align_gpu_new(&g, &c, 0, &err), SA3D_ERR_ARG, &err);
    T_CHECK(g == NULL);
    sa3d_align_ctx_free(&c);
    scene_free(&s);
}

int main(int argc, char **argv) {
    sa3d_error err;
    if (sa3d_align_gpu_check(&err) != SA3D_OK) {
        printf("aligner on the GPU not testable here: %s\n", err.msg);
        return 77;
    }
    static const t_case cases[] = {
        { "1.1", "energy, terms, L_geom, gradients: GPU equals CPU (4 settings x 4 stages)", case_energy },
        { "1.2", "similarity maps and candidate lists: product to double precision, lists the CPU's", case_similarity },
        { "1.3", "whole alignment (similarity and energies on the GPU): deterministic, equal to CPU", case_align },
        { "2.1", "argument errors of the GPU evaluation", case_errors },
    };
    return t_run(cases, (int)(sizeof cases / sizeof cases[0]), argc, argv);
}
