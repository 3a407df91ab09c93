/* bench_align: time per image of sa3d_align_image (METHOD.md 5) on a synthetic category (tests/align_synth.h)
 * at real sizes - N ~ 1000 dense points, g = 60, C = 768 - and an accuracy/speed table over the number of
 * hypotheses B and iterations. Accuracy: mean distance in cells between the aligned and the true projected
 * anchors, over several poses. The last rows run reading (b) of L_reconstruct, with and without its blurred maps
 * (align.point_blur), whose extra setup gets a line of its own.
 *
 *     bench_align [--threads N] [--dense N] [--poses K] [--tiny] [--device cuda]
 *
 * --tiny (ctest bench smoke): g = 20, C = 32, N = 100, two small configurations.
 * --device cuda (a -DSEMALIGN3D_CUDA=ON build on a GPU machine): instead of the table, the defaults with and
 * without the mirror term and with 400 hypotheses, each on the CPU and on the GPU in the same run, side by side:
 * time per image, the ratio, and how far apart the two alignments' anchors are. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../tests/align_synth.h"
#include "align/align_internal.h"
#include "base/base.h"
#include "semalign3d/align.h"

typedef struct bcase {
    sa3d_prior *prior;
    float *F, *mask, *depth, *Fm, *mask_m, *depth_m;   /* the image and its left-right mirror (cells flipped) */
    sa3d_feature_map fm, fm_m;
    synth_pose pose;
} bcase;


static double anchor_err(const bcase *b, const sa3d_alignment *a, int g) {
    double e = 0.0;
    for (int k = 0; k < a->n_used; k++) {
        double gx, gy;
        synth_project(&b->pose, g, b->prior->anchors + 3 * b->prior->used[k], &gx, &gy);
        e += hypot(gx - (double)a->proj_anchor[2 * k], gy - (double)a->proj_anchor[2 * k + 1]);
    }
    return e / a->n_used;
}

static void free_cases(bcase *cs, int n_poses) {
    for (int q = 0; q < n_poses; q++) {
        sa3d_prior_free(cs[q].prior);
        free(cs[q].F); free(cs[q].mask); free(cs[q].depth);
        free(cs[q].Fm); free(cs[q].mask_m); free(cs[q].depth_m);
    }
    free(cs);
}

/* Best of 2 runs of case b at params p; *a (NULL or an earlier alignment, freed) keeps the last alignment.
 * Returns the seconds, or -1 after printing the error. */
static double time_align(const bcase *b, const sa3d_align_params *p, sa3d_alignment **a) {
    sa3d_align_input in_m = { .F = &b->fm_m, .mask = b->mask_m, .depth = b->depth_m };
    sa3d_align_input in = { .F = &b->fm, .mask = b->mask, .depth = b->depth, .mirror = &in_m };
    double best = 1e30;
    for (int r = 0; r < 2; r++) {
        sa3d_error err;
        sa3d_alignment_free(*a);
        *a = NULL;
        double t0 = sa3d_now();
        if (sa3d_align_image(a, b->prior, &in, p, &err) != SA3D_OK) {
            fprintf(stderr, "bench_align: %s\n", err.msg);
            return -1;
        }
        double dt = sa3d_now() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

/* Best of 2 per-image set-ups (sa3d_align_ctx_init on case b's image alone) at params p; *c keeps the last, for
 * the caller to report and free. Returns the seconds, or -1 after printing the error. */
static double time_setup(const bcase *b, const sa3d_align_params *p, sa3d_align_ctx *c) {
    sa3d_align_input in = { .F = &b->fm, .mask = b->mask, .depth = b->depth };
    double best = 1e30;
    for (int r = 0; r < 2; r++) {
        sa3d_error err;
        if (r > 0) sa3d_align_ctx_free(c);
        double t0 = sa3d_now();
        if (sa3d_align_ctx_init(c, b->prior, &in, p, &err) != SA3D_OK) {
            fprintf(stderr, "bench_align: %s\n", err.msg);
            return -1;
        }
        double dt = sa3d_now() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

/* --device cuda: CPU and GPU side by side on the same poses (a warm-up alignment on the GPU first). */
static int device_table(const bcase *cs, int n_poses, const sa3d_align_params *dp) {
    typedef struct { int B, keep; double wm; } config;
    static const config cfg[] = { { 100, 10, 0.0 }, { 100, 10, 0.5 }, { 400, 40, 0.5 } };
    sa3d_alignment *a = NULL, *ag = NULL;
    sa3d_align_params p = *dp;
    p.device = SA3D_ALIGN_ON_CUDA;
    if (time_align(&cs[0], &p, &ag) < 0) return 1;   /* warm-up: CUDA context, first allocations */
    printf("CPU (%d threads) and GPU in the same run; time per image, best of 2 per pose, mean over poses\n",
           dp->n_threads);
    printf("%5s %6s %8s | %10s %10s %8s | %14s %8s\n", "B", "keep", "w_mirror", "CPU s", "GPU s", "speed-up",
           "max |d anchor|", "winner");
    for (size_t k = 0; k < sizeof cfg / sizeof cfg[0]; k++) {
        p = *dp;
        p.n_hyp = cfg[k].B;
        p.prune_keep = cfg[k].keep;
        p.w_mirror = cfg[k].wm;
        double tc = 0.0, tg = 0.0, dmax = 0.0;
        int same = 0;
        for (int q = 0; q < n_poses; q++) {
            p.device = SA3D_ALIGN_ON_CPU;
            double t1 = time_align(&cs[q], &p, &a);
            p.device = SA3D_ALIGN_ON_CUDA;
            double t2 = time_align(&cs[q], &p, &ag);
            if (t1 < 0 || t2 < 0) { sa3d_alignment_free(a); sa3d_alignment_free(ag); return 1; }
            tc += t1;
            tg += t2;
            for (int j = 0; j < 2 * a->n_used; j++) {
                double d = fabs((double)a->proj_anchor[j] - (double)ag->proj_anchor[j]);
                if (d > dmax) dmax = d;
            }
            same += a->best_hyp == ag->best_hyp;
        }
        printf("%5d %6d %8.2f | %10.4f %10.4f %7.1fx | %9.2e cells %5d/%d\n", p.n_hyp, p.prune_keep, p.w_mirror,
               tc / n_poses, tg / n_poses, tc / tg, dmax, same, n_poses);
    }
    sa3d_alignment_free(a);
    sa3d_alignment_free(ag);
    return 0;
}

int main(int argc, char **argv) {
    int threads = 2, n_dense = 1000, n_poses = 4, tiny = 0, cuda = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dense") && i + 1 < argc) n_dense = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--poses") && i + 1 < argc) n_poses = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tiny")) tiny = 1;
        else if (!strcmp(argv[i], "--device") && i + 1 < argc && !strcmp(argv[i + 1], "cuda")) { cuda = 1; i++; }
        else {
            fprintf(stderr, "usage: bench_align [--threads N] [--dense N] [--poses K] [--tiny] [--device cuda]\n");
            return 2;
        }
    }
    int g = tiny ? 20 : 60, C = tiny ? 32 : 768;
    if (tiny) { n_dense = 100; n_poses = 1; }
    if (n_poses < 1 || n_poses > 8 || n_dense < 20) { fprintf(stderr, "bench_align: bad sizes\n"); return 2; }
    int n_extra = n_dense - (SYNTH_SLOTS - 1);
    static const synth_pose poses[8] = {
        { 0.6, 0.25, { 0.02, -0.01, 1.0 }, 1.2 },  { -2.2, 0.35, { -0.03, 0.02, 0.9 }, 1.4 },
        { 3.0, -0.2, { 0.0, 0.03, 1.1 }, 1.1 },    { 1.6, 0.5, { 0.01, 0.0, 1.0 }, 1.3 },
        { -0.9, 0.1, { 0.0, -0.02, 0.95 }, 1.25 }, { 2.4, 0.3, { 0.03, 0.0, 1.05 }, 1.15 },
        { -1.5, -0.3, { -0.01, 0.01, 1.0 }, 1.2 }, { 0.1, 0.6, { 0.0, 0.0, 1.0 }, 1.35 } };
    bcase *cs = calloc((size_t)n_poses, sizeof *cs);
    for (int q = 0; q < n_poses; q++) {
        bcase *b = &cs[q];
        b->pose = poses[q];
        b->prior = synth_make_prior(C, n_extra, 0, poses[q].f, 1234);
        b->F = malloc((size_t)C * g * g * sizeof(float));
        b->mask = malloc((size_t)g * g * sizeof(float));
        b->depth = malloc((size_t)g * g * sizeof(float));
        synth_render(b->prior, &b->pose, g, 0.02, 100 + q, b->F, b->mask, b->depth);
        b->fm = (sa3d_feature_map){ .C = C, .g = g, .data = b->F, .img_w = 14 * g, .img_h = 14 * g,
                                    .input_size = 14 * g };
        b->Fm = malloc((size_t)C * g * g * sizeof(float));
        b->mask_m = malloc((size_t)g * g * sizeof(float));
        b->depth_m = malloc((size_t)g * g * sizeof(float));
        for (int c = 0; c < C; c++) synth_flip_cells(b->Fm + (size_t)c * g * g, b->F + (size_t)c * g * g, g);
        synth_flip_cells(b->mask_m, b->mask, g);
        synth_flip_cells(b->depth_m, b->depth, g);
        b->fm_m = b->fm;
        b->fm_m.data = b->Fm;
    }
    sa3d_set_threads(threads);
    printf("bench_align: synthetic category, N = %d dense points, %d used anchors, g = %d, C = %d, %d threads, "
           "%d poses (times: best of 2 per pose, summed over poses / poses)\n", n_dense, SYNTH_SLOTS - 1, g, C,
           threads, n_poses);

    /* per-image setup: similarity product + candidate lists + relations */
    sa3d_align_params dp = sa3d_align_params_default();
    dp.n_threads = threads;
    dp.w_mirror = 0.0;   /* see the configurations below */
    sa3d_align_ctx c;
    double setup = time_setup(&cs[0], &dp, &c);
    if (setup < 0) return 1;
    printf("setup (similarity maps [N][C]x[C][g*g], top-%d candidates, %d active cells): %.3f s\n", dp.top_k, c.n_act,
           setup);
    sa3d_align_ctx_free(&c);
    sa3d_align_params pb = dp;   /* reading (b): the same, plus the blurred levels of the maps */
    pb.rec_mode = SA3D_REC_POINT;
    if ((setup = time_setup(&cs[0], &pb, &c)) < 0) return 1;
    printf("setup, reading (b) with point_blur (the same and %d blurred levels, %.1f MB): %.3f s\n", c.n_lvl,
           (double)c.n_lvl * c.N * c.cells * sizeof(float) / 1e6, setup);
    sa3d_align_ctx_free(&c);
    if (cuda) {
        int rc = device_table(cs, n_poses, &dp);
        free_cases(cs, n_poses);
        return rc;
    }
    /* w_sparse < 0: the default; else that value. w_mirror: the rows run without the mirror term (0) except the
     * last. The renderer's mirror is a plain flip of the cells, which its prior (distinct left and right
     * features) fits badly, so that row times the term but its accuracy means little: the benchmark of
     * `semalign3d demo` measures what the term buys. */
    /* rec: L_reconstruct's reading, "a" (default), "b" (reading (b), blurred maps) or "b-raw" (point_blur 0) */
    typedef struct { int B, iters, keep; double ws, wm; const char *rec; } config;
    config cfg_full[] = { { 100, 100, 10, -1, -1, "a" }, { 25, 100, 5, -1, -1, "a" }, { 50, 100, 10, -1, -1, "a" },
                          { 100, 50, 10, -1, -1, "a" },  { 100, 200, 10, -1, -1, "a" }, { 100, 100, 0, -1, -1, "a" },
                          { 200, 100, 10, -1, -1, "a" }, { 100, 100, 10, 0, -1, "a" }, { 100, 100, 10, -1, 0.5, "a" },
                          { 100, 100, 10, -1, -1, "b" }, { 100, 100, 10, -1, -1, "b-raw" } };
    config cfg_tiny[] = { { 10, 30, 3, -1, -1, "a" }, { 20, 30, 0, 0, -1, "a" }, { 10, 30, 3, -1, 0.5, "a" },
                          { 10, 30, 3, -1, -1, "b" } };
    int n_cfg = tiny ? (int)(sizeof cfg_tiny / sizeof cfg_tiny[0]) : (int)(sizeof cfg_full / sizeof cfg_full[0]);
    printf("%5s %6s %6s %8s %8s %5s | %10s | %12s %12s %8s\n", "B", "iters", "keep", "w_sparse", "w_mirror", "rec",
           "s/image", "mean err", "worst err", "<=1 cell");
    for (int k = 0; k < n_cfg; k++) {
        sa3d_align_params p = dp;
        p.n_hyp = tiny ? cfg_tiny[k].B : cfg_full[k].B;
        p.n_iter = tiny ? cfg_tiny[k].iters : cfg_full[k].iters;
        p.prune_keep = tiny ? cfg_tiny[k].keep : cfg_full[k].keep;
        double ws = tiny ? cfg_tiny[k].ws : cfg_full[k].ws, wm = tiny ? cfg_tiny[k].wm : cfg_full[k].wm;
        if (ws >= 0.0) p.w_sparse = ws;
        p.w_mirror = wm > 0.0 ? wm : 0.0;
        const char *rec = tiny ? cfg_tiny[k].rec : cfg_full[k].rec;
        p.rec_mode = rec[0] == 'b' ? SA3D_REC_POINT : SA3D_REC_MIXTURE;
        p.point_blur = strcmp(rec, "b-raw") != 0;
        double tsum = 0.0, esum = 0.0, emax = 0.0;
        int good = 0;
        for (int q = 0; q < n_poses; q++) {
            sa3d_alignment *a = NULL;
            double best = time_align(&cs[q], &p, &a);
            if (best < 0) return 1;
            double e = anchor_err(&cs[q], a, g);
            sa3d_alignment_free(a);
            tsum += best;
            esum += e;
            if (e > emax) emax = e;
            good += e <= 1.0;
        }
        printf("%5d %6d %6d %8.2f %8.2f %5s | %10.3f | %12.3f %12.3f %5d/%d%s\n", p.n_hyp, p.n_iter, p.prune_keep,
               p.w_sparse, p.w_mirror, rec, tsum / n_poses, esum / n_poses, emax, good, n_poses,
               (!tiny && k == 0)     ? "   <- defaults, without the mirror term"
               : p.w_mirror > 0.0    ? "   (time only)"
                                     : "");
    }
    free_cases(cs, n_poses);
    return 0;
}
