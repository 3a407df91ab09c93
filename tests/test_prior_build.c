/* Prior builder stages (src/prior/train.c, stats.c): mask erosion and keypoint snapping, the seeded noise
 * augmentation, Beta statistics of the relations of a known 3D shape and the relation filter, the sparse
 * keypoint features, and the training instances of a synthetic SPair-layout dataset end to end. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "base/rng.h"
#include "prior/build.h"
#include "semalign3d/image.h"
#include "semalign3d/providers.h"
#include "semalign3d/safetensors.h"
#include "semalign3d/synth.h"
#include "t.h"
#ifdef _OPENMP
#include <omp.h>
#endif

/* Two erosions of a rectangle drop its first two columns and rows (the 2 x 2 kernel looks left and up); a
 * keypoint outside snaps to the nearest remaining pixel, one inside stays where it is. */
static void case_snap(void) {
    int W = 20, H = 16;
    float *mask = calloc((size_t)W * H, sizeof *mask);
    for (int y = 4; y <= 11; y++)
        for (int x = 5; x <= 14; x++) mask[y * W + x] = 1.0f;
    uint8_t tmp[2 * 20 * 16];
    float kp[3][2] = { { 0.0f, 0.0f }, { 10.2f, 8.0f }, { 19.0f, 6.0f } }, snap[3][2];
    uint8_t vis[3] = { 1, 1, 1 };
    sa3d_snap_to_mask(snap, (const float (*)[2])kp, vis, 3, mask, W, H, 2, tmp);
    T_NEAR(snap[0][0], 7, 0); T_NEAR(snap[0][1], 6, 0);      /* eroded rectangle starts at (7, 6) */
    T_NEAR(snap[1][0], 10.2, 1e-6); T_NEAR(snap[1][1], 8, 0); /* inside: unchanged */
    T_NEAR(snap[2][0], 14, 0); T_NEAR(snap[2][1], 6, 0);
    /* a mask the erosion removes entirely: snapping falls back to the mask itself */
    memset(mask, 0, (size_t)W * H * sizeof *mask);
    mask[3 * W + 3] = 1.0f;
    sa3d_snap_to_mask(snap, (const float (*)[2])kp, vis, 1, mask, W, H, 2, tmp);
    T_NEAR(snap[0][0], 3, 0); T_NEAR(snap[0][1], 3, 0);
    free(mask);
}

/* Noise of sd 0.2 d_min per coordinate, NaN for hidden keypoints, the same for the same seed. */
static void case_augment(void) {
    int n = 4, copies = 4000;
    double P[12] = { 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3 };   /* d_min = 1 */
    uint8_t vis[4] = { 1, 1, 1, 0 };
    double *a = malloc(sizeof(double) * copies * n * 3), *b = malloc(sizeof(double) * copies * n * 3);
    uint8_t *va = malloc((size_t)copies * n), *vb = malloc((size_t)copies * n);
    sa3d_augment(a, va, P, vis, 1, n, copies, 0.2, 7);
    sa3d_augment(b, vb, P, vis, 1, n, copies, 0.2, 7);
    T_CHECK(memcmp(a, b, sizeof(double) * copies * n * 3) == 0);
    double s2 = 0.0;
    for (int c = 0; c < copies; c++) {
        double d = a[(c * n + 1) * 3] - 1.0;
        s2 += d * d;
        T_CHECK(isnan(a[(c * n + 3) * 3]) && va[c * n + 3] == 0 && va[c * n] == 1);
    }
    double sd = sqrt(s2 / copies);
    printf("  augmentation sd %.4f (want 0.2)\n", sd);
    T_NEAR(sd, 0.2, 0.01);
    sa3d_augment(b, vb, P, vis, 1, n, copies, 0.2, 8);
    T_CHECK(memcmp(a, b, sizeof(double) * copies * n * 3) != 0);
    free(a); free(b); free(va); free(vb);
}

/* Samples of a known 3D shape under random rotations, scales and translations with small noise. */
static void shape_samples(double *P, uint8_t *vis, int M, int n, const double *shape, double noise, uint64_t seed) {
    for (int m = 0; m < M; m++) {
        sa3d_rng r = sa3d_rng_for(seed, 1, (uint64_t)m);
        double q[4], nq = 0.0;
        for (int i = 0; i < 4; i++) { q[i] = sa3d_rng_normal(&r); nq += q[i] * q[i]; }
        nq = sqrt(nq);
        for (int i = 0; i < 4; i++) q[i] /= nq;
        double w = q[0], x = q[1], y = q[2], z = q[3];
        double R[9] = { 1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y) };
        double s = 0.5 + sa3d_rng_uniform(&r), t[3] = { sa3d_rng_normal(&r), sa3d_rng_normal(&r), 3.0 };
        for (int k = 0; k < n; k++) {
            vis[m * n + k] = (uint8_t)(k != n - 1 || m % 2 == 0);   /* the last slot: half the samples */
            for (int d = 0; d < 3; d++) {
                double v = t[d];
                for (int e = 0; e < 3; e++) v += s * R[d * 3 + e] * shape[k * 3 + e];
                P[(m * n + k) * 3 + d] = v + noise * sa3d_rng_normal(&r);
            }
        }
    }
}

static void case_relation_stats(void) {
    enum { n = 6, M = 400 };
    const double shape[n * 3] = { 0, 0, 0, 1, 0, 0, 0, 1.5, 0, 0, 0, 2, 1, 1, 0.5, -0.5, 0.7, 1.2 };
    double *P = malloc(sizeof(double) * M * n * 3);
    uint8_t *vis = malloc(M * n);
    shape_samples(P, vis, M, n, shape, 0.01, 3);
    sa3d_error err;
    sa3d_relation_stats st, st1;
    T_OK(sa3d_relation_stats_fit(&st, P, vis, M, n, &err), &err);
#ifdef _OPENMP
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
#endif
    T_OK(sa3d_relation_stats_fit(&st1, P, vis, M, n, &err), &err);
#ifdef _OPENMP
    omp_set_num_threads(nt);
#endif
    size_t np = st.rel.n_pairs, ntet = st.rel.n_tets;
    T_CHECK(memcmp(st.pair_ratio, st1.pair_ratio, np * sizeof *st.pair_ratio) == 0);
    T_CHECK(memcmp(st.tet_c, st1.tet_c, ntet * sizeof *st.tet_c) == 0);
    /* the mode of each ratio Beta sits at the shape's own ratio (noise 1% of the size) */
    double worst = 0.0;
    int with_last = 0;
    for (size_t r = 0; r < np; r++) {
        const int32_t *a = st.rel.e1 + 2 * r, *b = st.rel.e2 + 2 * r;
        int uses_last = a[0] == n - 1 || a[1] == n - 1 || b[0] == n - 1 || b[1] == n - 1;
        T_CHECK(st.pair_count[r] == (uses_last ? M / 2 : M));
        with_last += uses_last;
        double ea[3], eb[3], cs, ratio;
        for (int d = 0; d < 3; d++) {
            ea[d] = shape[a[0] * 3 + d] - shape[a[1] * 3 + d];
            eb[d] = shape[b[0] * 3 + d] - shape[b[1] * 3 + d];
        }
        sa3d_edge_pair_fwd(&cs, &ratio, ea, eb);
        double mode = (st.pair_ratio[r][0] - 1) / (st.pair_ratio[r][0] + st.pair_ratio[r][1] - 2);
        worst = fmax(worst, fabs(mode - ratio));
    }
    printf("  %zu edge pairs, %zu tet relations; worst |ratio mode - truth| %.4f\n", np, ntet, worst);
    T_CHECK(worst < 0.01);
    /* filter: with the last slot unused nothing touching it survives; with min_samples above M/2 neither */
    uint8_t used[SA3D_MAX_KPS] = { 0 };
    for (int k = 0; k < n; k++) used[k] = 1;
    sa3d_filter_params fp = sa3d_filter_params_default();
    size_t kp_all, kt_all, kp_cut, kt_cut;
    sa3d_relation_filter(&st, used, &fp, NULL, NULL, &kp_all, &kt_all);
    fp.min_samples = M / 2 + 1;
    sa3d_relation_filter(&st, used, &fp, NULL, NULL, &kp_cut, &kt_cut);
    printf("  kept %zu + %zu relations, %zu + %zu with the half-visible slot cut\n", kp_all, kt_all, kp_cut, kt_cut);
    T_CHECK(kp_all > kp_cut && kt_all > kt_cut && kp_all - kp_cut <= (size_t)with_last);
    used[n - 1] = 0;
    fp = sa3d_filter_params_default();
    size_t kp_unused, kt_unused;
    sa3d_relation_filter(&st, used, &fp, NULL, NULL, &kp_unused, &kt_unused);
    T_CHECK(kp_unused == kp_cut && kt_unused == kt_cut);
    sa3d_relation_stats_free(&st);
    sa3d_relation_stats_free(&st1);
    free(P);
    free(vis);
}

/* Features of keypoint slots: samples taken at each keypoint's 60 x 60 cell; mean, normalised; cosine stats. */
static void case_feature_acc(void) {
    enum { C = 4, g = 6 };
    float F[C * g * g] = { 0 };
    for (int c = 0; c < g * g; c++) F[c] = 1.0f;   /* channel 0 everywhere */
    F[(size_t)1 * g * g + 2 * g + 3] = 1.0f;       /* cell (x 3, y 2) also has channel 1 */
    sa3d_feature_acc fa;
    sa3d_error err;
    T_OK(sa3d_feature_acc_init(&fa, 2, C, 8, &err), &err);
    float kp[2][2] = { { 3.5f * 10, 2.5f * 10 }, { 0, 0 } };   /* W = H = 60 px, input 6: cell = 10 px */
    uint8_t vis[2] = { 1, 0 };
    sa3d_feature_acc_add(&fa, F, g, g, 60, 60, (const float (*)[2])kp, vis);
    kp[0][0] = 5.0f;
    sa3d_feature_acc_add(&fa, F, g, g, 60, 60, (const float (*)[2])kp, vis);
    T_CHECK(fa.count[0] == 2 && fa.count[1] == 0);
    sa3d_prior pr = { 0 };
    float feat[2 * C], am[2], as[2];
    pr.anchor_feat = feat; pr.anchor_attn_mean = am; pr.anchor_attn_sd = as;
    sa3d_feature_acc_finish(&fa, &pr);
    /* samples (1,1,0,0) and (1,0,0,0): mean (1, .5), normalised (0.894, 0.447) */
    T_NEAR(feat[0], 2 / sqrt(5.0), 1e-6); T_NEAR(feat[1], 1 / sqrt(5.0), 1e-6);
    double c1 = (2 + 1) / sqrt(5.0), c2 = 2 / sqrt(5.0);
    T_NEAR(am[0], (c1 + c2) / 2, 1e-6);
    T_NEAR(as[0], fabs(c1 - c2) / sqrt(2.0), 1e-6);
    T_NEAR(am[1], 0.5, 0); T_NEAR(as[1], 0.01, 1e-9); T_NEAR(feat[C], 0, 0);
    sa3d_feature_acc_free(&fa);
}

static void write_depth(const char *dir, const char *cat, const char *id, int W, int H) {
    float *d = malloc(sizeof(float) * W * H);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) d[y * W + x] = 1.0f + (float)x / (float)W + 0.5f * (float)y / (float)H;
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, cat);
    sa3d_mkdirs(path, NULL);
    snprintf(path, sizeof path, "%s/%s/%s.depth.safetensors", dir, cat, id);
    sa3d_st_writer *w = sa3d_st_writer_new();
    int64_t shape[2] = { H, W };
    sa3d_error err;
    T_OK(sa3d_st_writer_add_f32(w, "depth", 2, shape, d, &err), &err);
    T_OK(sa3d_st_writer_write(w, path, &err), &err);
    sa3d_st_writer_free(w);
    free(d);
}

/* The training instances of a synthetic category: originals then mirrors with flipped labels, finite focal
 * lengths shared by an image and its mirror, lifted keypoints where visible. */
static void case_train_set(void) {
    char root[64] = "/tmp/sa3d_train_XXXXXX", depth_dir[128];
    if (!mkdtemp(root)) { T_FAIL("mkdtemp"); return; }
    sa3d_error err;
    sa3d_synth_spair_params sp = sa3d_synth_spair_params_default();
    sp.n_categories = 1;
    sp.images_per_category = 5;
    sp.pairs_trn = 10;
    sp.write_features = 0;
    T_OK(sa3d_synth_spair_write(root, &sp, &err), &err);
    sa3d_dataset *ds = NULL;
    T_OK(sa3d_dataset_open(&ds, root, NULL, &err), &err);
    if (!ds) return;
    const char *cat = sa3d_spair_category(0);
    const char *const *ids;
    int N = sa3d_dataset_split_images(ds, "trn", cat, &ids, &err);
    T_CHECK(N >= 2);
    snprintf(depth_dir, sizeof depth_dir, "%s/Depth", root);
    for (int i = 0; i < N; i++) {
        const sa3d_image_anno *an;
        T_OK(sa3d_dataset_image(ds, cat, ids[i], &an, &err), &err);
        write_depth(depth_dir, cat, ids[i], an->width, an->height);
    }
    sa3d_provider *masks = NULL, *depth = NULL;
    sa3d_provider_params pp = sa3d_provider_params_default();
    pp.kind = SA3D_SOURCE_SEGMENTATION;
    T_OK(sa3d_mask_provider_new(&masks, ds, &pp, &err), &err);
    pp.kind = SA3D_SOURCE_IMPORT;
    pp.import_dir = depth_dir;
    T_OK(sa3d_depth_provider_new(&depth, ds, &pp, &err), &err);
    int flip[SA3D_MAX_KPS];
    int n = sa3d_flip_map(SA3D_DATASET_SPAIR, cat, flip);
    sa3d_train_params tp = sa3d_train_params_default();
    tp.focal_iterations = 50;
    sa3d_train_set ts;
    T_OK(sa3d_train_set_collect(&ts, ds, "trn", cat, n, flip, masks, depth, &tp, NULL, NULL, &err), &err);
    T_CHECK(ts.n_img == N && ts.n_inst == 2 * N && ts.n_slots == n);
    for (int i = 0; i < N; i++) {
        const sa3d_image_anno *an;
        T_OK(sa3d_dataset_image(ds, cat, ts.id[i], &an, &err), &err);
        T_CHECK(ts.phi[i] == ts.phi[i + N] && ts.phi[i] > 0 && isfinite(ts.phi[i]));
        for (int k = 0; k < n; k++) {
            T_CHECK(ts.vis[i * n + k] == an->visible[k]);
            T_CHECK(ts.vis[(i + N) * n + flip[k]] == an->visible[k]);
            if (!an->visible[k]) continue;
            T_NEAR(ts.kp[(i + N) * n + flip[k]][0], an->width - 1 - an->kps[k][0], 1e-4);
            T_CHECK(isfinite(ts.P[((size_t)i * n + k) * 3 + 2]) && ts.P[((size_t)i * n + k) * 3 + 2] > 0.6);
        }
    }
    printf("  %d images -> %d instances, %d slots, focal loss %.4g, f of image 0 %.3f\n", N, ts.n_inst, n,
           ts.focal_loss, 1.0 / ts.phi[0]);
    sa3d_train_set_free(&ts);
    sa3d_provider_free(masks);
    sa3d_provider_free(depth);
    sa3d_dataset_close(ds);
}

/* show-prior's outputs from a small hand-made prior: a PLY with every point, a PNG of the asked size; a bad size
 * writes nothing. */
static void case_show(void) {
    enum { n = 4, C = 3, N = 50 };
    double anchors[n * 3] = { 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1 };
    int32_t used[n] = { 0, 1, 2, 3 };
    float xyz[N * 3], feat[N * C];
    for (int i = 0; i < N; i++) {
        double t = i / (double)N;
        xyz[i * 3] = (float)t; xyz[i * 3 + 1] = (float)(t * t); xyz[i * 3 + 2] = (float)(1 - t);
        feat[i * C] = (float)cos(6 * t); feat[i * C + 1] = (float)sin(6 * t); feat[i * C + 2] = (float)t;
    }
    sa3d_prior p = { 0 };
    snprintf(p.category, sizeof p.category, "test");
    p.n_slots = n; p.n_used = n; p.used = used; p.anchors = anchors; p.C = C;
    p.n_dense = N; p.dense_xyz = xyz; p.dense_feat = feat;
    char dir[] = "/tmp/sa3d_show_XXXXXX", ply[64], png[64];
    if (!mkdtemp(dir)) { T_FAIL("mkdtemp"); return; }
    snprintf(ply, sizeof ply, "%s/p.ply", dir);
    snprintf(png, sizeof png, "%s/p.png", dir);
    sa3d_error err;
    T_OK(sa3d_prior_write_ply(&p, ply, &err), &err);
    T_OK(sa3d_prior_render_png(&p, png, 200, &err), &err);
    char *txt = NULL;
    size_t len = 0;
    T_OK(sa3d_read_file(ply, 1 << 20, &txt, &len, &err), &err);
    if (txt) {
        T_CONTAINS(txt, "element vertex 54\n");
        int lines = 0;
        for (const char *q = strstr(txt, "end_header\n"); q && *q; q++) lines += *q == '\n';
        T_CHECK(lines == 1 + N + n);
        sa3d_free(txt);
    }
    sa3d_image img = { 0 };
    T_OK(sa3d_image_load(&img, png, &err), &err);
    T_CHECK(img.w == 200 && img.h == 200);
    sa3d_image_free(&img);
    remove(png);
    T_STATUS(sa3d_prior_render_png(&p, png, 4, &err), SA3D_ERR_ARG, &err);
    T_CHECK(!sa3d_file_exists(png));
    remove(ply);
    rmdir(dir);
}

int main(int argc, char **argv) {
    static const t_case cases[] = {
        { "1.1", "erosion and snapping into the mask", case_snap },
        { "1.2", "noise augmentation: sd, hidden keypoints, seed", case_augment },
        { "2.1", "relation Betas of a known shape; filter; thread count", case_relation_stats },
        { "2.2", "sparse keypoint features and cosine statistics", case_feature_acc },
        { "3.1", "training instances of a synthetic category", case_train_set },
        { "4.1", "show-prior: PLY and PNG", case_show },
    };
    return t_run(cases, (int)(sizeof cases / sizeof cases[0]), argc, argv);
}
