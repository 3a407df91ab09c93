/* diag_align: is a bad alignment a failure of the pose search or of the energy? For each image of a split of a
 * demo folder (`semalign3d demo --out DIR`, which holds the synthetic dataset with its GroundTruth/ and the
 * prior), three poses of the prior, each with its energy at the schedule's end (METHOD.md 5) and the number of
 * visible keypoints whose anchor projects within PCK@0.1 of them:
 *   found   the alignment with the given settings (as `eval --method semalign3d` computes it);
 *   truth   the instance's own keypoints (GroundTruth/ kps_cam, scaled to the found mean depth; f from the
 *           camera), which are not the prior's canonical shape, so not a minimum of the energy;
 *   refined the truth after --refine Adam steps at the schedule's end.
 * The lower of truth and refined below found: the search missed a pose the energy prefers; above, with more
 * hits than found: the energy prefers the worse pose. docs/ALIGN.md ("What limits the weakest seeds") quotes
 * this program.
 *
 *     diag_align DEMO_DIR [--split test] [--category dog] [--seed N] [--image ID] [--refine 200]
 *                [--mirror] [--set NAME=VALUE ...]
 *
 * --mirror runs the same on the mirrored images (the providers' flip: the generator renders the mirrored
 * world), with the annotation and the truth mirrored through the flip map: does a failure follow the instance
 * or what the image looks like?
 *
 * --seed is the alignment seed (the demo uses its own --seed). Developer diagnostic: reads the library's
 * internal aligner (align_internal.h), as the tests do. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "align/align_internal.h"
#include "base/base.h"
#include "geom/geom.h"
#include "semalign3d/align.h"
#include "semalign3d/data.h"
#include "semalign3d/eval.h"
#include "semalign3d/providers.h"
#include "semalign3d/synth3d.h"

#define MAX_ANCHORS 64

/* The aligner's inputs of one image (flip: its mirror) exactly as the dataset matcher builds them: the feature
 * map and the mask and pseudo-depth cells (malloc'd, the caller frees them, also on failure). */
static sa3d_status load_inputs(sa3d_provider *fp, sa3d_provider *mk, sa3d_provider *dp, const char *cat,
                               const sa3d_image_anno *im, int flip, int size, sa3d_map *fm, float **mask_c,
                               float **depth_c, sa3d_error *err) {
    sa3d_status s = sa3d_provider_get(fp, cat, im->id, flip, fm, err);
    return s ? s : sa3d_align_cells(mk, dp, cat, im->id, flip, im->width, im->height, size, fm->h, mask_c, depth_c,
                                    err);
}

typedef struct pose_eval { double E, t[5]; int hits, mirror_hits; } pose_eval;

/* Energy and terms of (Y, phi) at the schedule's end; the hits of its anchors among the visible keypoints, and
 * of the anchors of mirror pairs (flip) on their twin's keypoint: a mirrored pose hits those instead. */
static pose_eval evaluate(const sa3d_align_ctx *c, const sa3d_prior *pr, const sa3d_image_anno *im, int size,
                          const int *flip, const double *Y, double phi, double *work) {
    pose_eval e;
    sa3d_align_stage fin = sa3d_align_stage_at(&c->p, c->g, c->p.n_iter);
    e.E = sa3d_align_energy_total(c, Y, phi, &fin, NULL, NULL, e.t, work);
    e.hits = e.mirror_hits = 0;
    float thr = 0.1f * sa3d_bbox_threshold_base(im->bbox), cell = (float)size / (float)c->g;
    for (int j = 0; j < c->n; j++) {
        int k = pr->used[j], kf = flip[k];
        double gx = c->g / phi * Y[3 * j] / Y[3 * j + 2] + c->g / 2.0;   /* align.h: the grid projection */
        double gy = c->g / phi * Y[3 * j + 1] / Y[3 * j + 2] + c->g / 2.0;
        float u, v;
        sa3d_geoaware_from_square(im->width, im->height, size, (float)gx * cell, (float)gy * cell, &u, &v);
        if (im->visible[k]) e.hits += hypotf(u - im->kps[k][0], v - im->kps[k][1]) <= thr;
        if (kf >= 0 && kf != k && im->visible[kf])
            e.mirror_hits += hypotf(u - im->kps[kf][0], v - im->kps[kf][1]) <= thr;
    }
    return e;
}

static void print_eval(const char *what, const pose_eval *e, int vis, int vis_pairs) {
    printf("    %-8s E %7.3f  rec %6.3f geom %6.3f bg %5.3f depth %5.3f sparse %6.3f  hits %2d/%d  "
           "mirror hits %2d/%d\n", what, e->E, e->t[0], e->t[1], e->t[2], e->t[3], e->t[4], e->hits, vis,
           e->mirror_hits, vis_pairs);
}

/* The instance's keypoints (GroundTruth/<cat>/<id>.json kps_cam) for the used slots, and the camera's focal length
 * in units of max(W, H); with mirror (the flip map), those of the mirrored image. 0 on success. */
static int read_truth(const char *path, const sa3d_prior *pr, int S, const int *mirror, double *Y, double *phi) {
    char *text = NULL;
    size_t len;
    sa3d_error err;
    if (sa3d_read_file(path, 1 << 20, &text, &len, &err)) { fprintf(stderr, "diag_align: %s\n", err.msg); return 1; }
    cJSON *j = cJSON_Parse(text), *kc = j ? cJSON_GetObjectItem(j, "kps_cam") : NULL;
    cJSON *f = j ? cJSON_GetObjectItem(j, "focal") : NULL;
    int bad = !kc || !cJSON_IsNumber(f) || !(f->valuedouble > 0.0);
    for (int q = 0; q < pr->n_used && !bad; q++) {
        char key[16];
        snprintf(key, sizeof key, "%d", mirror ? mirror[pr->used[q]] : pr->used[q]);
        cJSON *v = cJSON_GetObjectItem(kc, key);
        bad = cJSON_GetArraySize(v) != 3;
        for (int d = 0; d < 3 && !bad; d++) Y[3 * q + d] = cJSON_GetArrayItem(v, d)->valuedouble;
        if (mirror && !bad) Y[3 * q] = -Y[3 * q];   /* the mirrored image: X -> -X, the twin's label */
    }
    if (!bad) *phi = (double)S / f->valuedouble;
    if (bad) fprintf(stderr, "diag_align: %s: no kps_cam for every used slot, or no focal\n", path);
    cJSON_Delete(j);
    sa3d_free(text);
    return bad;
}

int main(int argc, char **argv) {
    const char *dir = NULL, *split = "test", *cat = "dog", *only = NULL;
    int refine = 200, mirror = 0;
    sa3d_error err;
    sa3d_sa3d_matcher_params mp = sa3d_sa3d_matcher_params_default();
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--split") && i + 1 < argc) split = argv[++i];
        else if (!strcmp(argv[i], "--category") && i + 1 < argc) cat = argv[++i];
        else if (!strcmp(argv[i], "--image") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--mirror")) mirror = 1;
        else if ((!strcmp(argv[i], "--seed") || !strcmp(argv[i], "--refine")) && i + 1 < argc) {
            int is_seed = !strcmp(argv[i], "--seed");
            char *end, *v = argv[i + 1];
            unsigned long long x = strtoull(v, &end, 10);
            if (end == v || *end || *v == '-' || (!is_seed && x > 100000)) {
                fprintf(stderr, "diag_align: %s '%s' is not a non-negative integer (--refine at most 100000)\n",
                        argv[i], v);
                return 2;
            }
            if (is_seed) mp.align.seed = x;
            else refine = (int)x;
            i++;
        } else if (!strcmp(argv[i], "--set") && i + 1 < argc) {
            if (sa3d_sa3d_matcher_params_set(&mp, argv[++i], &err)) {
                fprintf(stderr, "diag_align: %s\n", err.msg);
                return 2;
            }
        } else if (argv[i][0] != '-' && !dir) dir = argv[i];
        else {
            fprintf(stderr, "usage: diag_align DEMO_DIR [--split test] [--category dog] [--seed N] [--image ID] "
                            "[--refine 200] [--mirror] [--set NAME=VALUE ...]\n");
            return 2;
        }
    }
    if (!dir) { fprintf(stderr, "diag_align: a demo folder is required\n"); return 2; }
    char root[4096], prior_path[4200], gt[4400];
    snprintf(root, sizeof root, "%s/dataset", dir);
    snprintf(prior_path, sizeof prior_path, "%s/%s.prior.safetensors", dir, cat);
    sa3d_dataset *ds = NULL;
    sa3d_dataset_params dsp = sa3d_dataset_params_default();
    sa3d_provider *fp = NULL, *dp = NULL, *mk = NULL;
    sa3d_prior *prior = NULL;
    const char *const *ids = NULL;
    int n_img;
    if (sa3d_dataset_open(&ds, root, &dsp, &err) || sa3d_dataset_load_split(ds, split, &err) < 0 ||
        sa3d_synth3d_providers(ds, root, &fp, &dp, &mk, &err) || sa3d_prior_load(&prior, prior_path, &err) ||
        (n_img = sa3d_dataset_split_images(ds, split, cat, &ids, &err)) < 0) {
        fprintf(stderr, "diag_align: %s\n", err.msg);
        return 1;
    }
    int flip[SA3D_MAX_KPS];
    if (sa3d_spair_flip_map(cat, flip) < 0) for (int k = 0; k < SA3D_MAX_KPS; k++) flip[k] = -1;
    if (prior->n_used > MAX_ANCHORS) { fprintf(stderr, "diag_align: more than %d anchors\n", MAX_ANCHORS); return 1; }
    printf("diag_align: %s, split %s%s, %d images, seed %llu, truth refined by %d Adam steps\n", dir, split,
           mirror ? " (mirrored images)" : "", n_img, (unsigned long long)mp.align.seed, refine);
    int size = mp.input_size, n_search = 0, n_energy = 0, n_truth = 0, n_done = 0, rc = 0;
    for (int ii = 0; ii < n_img && !rc; ii++) {
        const char *id = ids[ii];
        if (only && strcmp(only, id)) continue;
        const sa3d_image_anno *im;
        sa3d_map fm = { 0 }, fm2 = { 0 };
        float *cells[4] = { NULL, NULL, NULL, NULL };   /* mask, depth; the other view's mask, depth */
        int other = mp.align.w_mirror > 0.0;   /* the mirror term needs the image seen the other way too */
        if (sa3d_dataset_image(ds, cat, id, &im, &err) ||
            load_inputs(fp, mk, dp, cat, im, mirror, size, &fm, &cells[0], &cells[1], &err) ||
            (other && load_inputs(fp, mk, dp, cat, im, !mirror, size, &fm2, &cells[2], &cells[3], &err))) {
            fprintf(stderr, "diag_align: %s\n", err.msg);
            for (int q = 0; q < 4; q++) free(cells[q]);
            free(fm.data);
            free(fm2.data);
            rc = 1;
            break;
        }
        sa3d_image_anno mirrored;
        if (mirror) {   /* the annotation of the mirrored image: x -> W - 1 - x, each keypoint under its twin's label */
            mirrored = *im;
            for (int k = 0; k < SA3D_MAX_KPS; k++) {
                int kf = flip[k] >= 0 ? flip[k] : k;
                mirrored.visible[k] = im->visible[kf];
                mirrored.kps[k][0] = (float)im->width - 1.0f - im->kps[kf][0];
                mirrored.kps[k][1] = im->kps[kf][1];
            }
            mirrored.bbox[0] = (float)im->width - 1.0f - im->bbox[2];
            mirrored.bbox[2] = (float)im->width - 1.0f - im->bbox[0];
            im = &mirrored;
        }
        int g = fm.h;
        sa3d_feature_map F = { fm.c, g, fm.data, im->width, im->height, size };
        sa3d_feature_map F2 = { fm2.c, fm2.h, fm2.data, im->width, im->height, size };
        sa3d_align_input in2 = { .F = &F2, .mask = cells[2], .depth = cells[3] };
        sa3d_align_input in = { .F = &F, .mask = cells[0], .depth = cells[1], .mirror = other ? &in2 : NULL };
        sa3d_alignment *a = NULL;
        sa3d_align_ctx c;
        memset(&c, 0, sizeof c);
        if (!rc && (sa3d_align_image(&a, prior, &in, &mp.align, &err) ||
                    sa3d_align_ctx_init(&c, prior, &in, &mp.align, &err))) {
            fprintf(stderr, "diag_align: %s/%s: %s\n", cat, id, err.msg);
            rc = 1;
        }
        double Y[3 * MAX_ANCHORS], mY[3 * MAX_ANCHORS] = { 0 }, vY[3 * MAX_ANCHORS] = { 0 }, gY[3 * MAX_ANCHORS];
        double phi = 1.0, mphi = 0.0, vphi = 0.0, gphi;
        int n = prior->n_used, S = im->width > im->height ? im->width : im->height;
        snprintf(gt, sizeof gt, "%s/GroundTruth/%s/%s.json", root, cat, id);
        if (!rc && read_truth(gt, prior, S, mirror ? flip : NULL, Y, &phi)) rc = 1;
        if (!rc) {
            double *work = malloc((sa3d_align_work_doubles(&c) + 3 * (size_t)n) * sizeof(double)), za = 0.0, zt = 0.0;
            for (int q = 0; q < n; q++) { za += a->Y[3 * q + 2]; zt += Y[3 * q + 2]; }
            for (int q = 0; q < 3 * n; q++) Y[q] *= za / zt;   /* the energy is not scale-free (L_depth, L_geom) */
            int vis = 0, vis_pairs = 0;
            for (int q = 0; q < n; q++) {
                int k = prior->used[q], kf = flip[k];
                vis += im->visible[k];
                vis_pairs += kf >= 0 && kf != k && im->visible[kf];
            }
            pose_eval ef = evaluate(&c, prior, im, size, flip, a->Y, a->phi, work);
            pose_eval et = evaluate(&c, prior, im, size, flip, Y, phi, work);
            sa3d_align_stage fin = sa3d_align_stage_at(&mp.align, g, mp.align.n_iter);
            sa3d_adamw_params ad = sa3d_adamw_params_default();
            ad.lr = mp.align.lr;
            ad.weight_decay = 0.0;   /* as the aligner */
            for (int t = 0; t < refine; t++) {
                sa3d_align_energy_total(&c, Y, phi, &fin, gY, &gphi, NULL, work);
                sa3d_adamw_step(Y, mY, vY, gY, (size_t)(3 * n), t + 1, &ad);
                sa3d_adamw_step(&phi, &mphi, &vphi, &gphi, 1, t + 1, &ad);
                if (phi < SA3D_ALIGN_PHI_MIN) phi = SA3D_ALIGN_PHI_MIN;
            }
            pose_eval er = evaluate(&c, prior, im, size, flip, Y, phi, work), eb = er.E <= et.E ? er : et;
            const char *verdict = eb.E < ef.E ? "search missed a lower energy"
                                  : eb.hits > ef.hits ? "energy prefers the worse pose" : "-";
            n_search += eb.E < ef.E;
            n_energy += eb.E >= ef.E && eb.hits > ef.hits;
            n_truth += et.hits == vis;
            n_done++;
            printf("  %s (azimuth bin %d): %s\n", id, im->azimuth_id, verdict);
            print_eval("found", &ef, vis, vis_pairs);
            print_eval("truth", &et, vis, vis_pairs);
            print_eval("refined", &er, vis, vis_pairs);
            free(work);
        }
        sa3d_align_ctx_free(&c);
        sa3d_alignment_free(a);
        for (int q = 0; q < 4; q++) free(cells[q]);
        free(fm.data);
        free(fm2.data);
    }
    if (!rc && only && n_done == 0) {
        fprintf(stderr, "diag_align: image %s is not in the %s split of %s\n", only, split, root);
        rc = 1;
    }
    if (!rc)
        printf("%d images: the search missed a lower energy on %d; the energy prefers a pose with fewer hits on %d; "
               "the truth hits every visible keypoint on %d\n", n_done, n_search, n_energy, n_truth);
    sa3d_prior_free(prior);
    sa3d_provider_free(fp);
    sa3d_provider_free(dp);
    sa3d_provider_free(mk);
    sa3d_dataset_close(ds);
    return rc;
}
