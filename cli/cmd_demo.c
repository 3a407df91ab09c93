/* semalign3d demo: the main job on an embedded default (issue 5). With no download: a synthetic category with
 * known 3D truth (synth3d), its prior built from the training split, the GeoAware baseline and SemAlign3D
 * evaluated on the test split, the PCK table overall and by viewpoint variation, pictures, and the numbers as
 * JSON. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "base/base.h"
#include "cli.h"
#include "semalign3d/align.h"
#include "semalign3d/eval.h"
#include "semalign3d/image.h"
#include "semalign3d/match.h"
#include "semalign3d/prior_build.h"
#include "semalign3d/synth3d.h"
#include "semalign3d/viz.h"

static void help(void) {
    printf("usage: semalign3d demo [--seed N] [--split NAME] [--out DIR] [--json FILE] "
           "[--difficulty easy|medium|hard]\n"
           "                       [--device cpu|cuda] [--set NAME=VALUE ...] [--quiet]\n\n"
           "Generates a synthetic category with known 3D structure (the dog of `semalign3d synth3d`: 60 images,\n"
           "64-channel mirror-ambiguous features, relative depth, masks), builds its prior from the trn split,\n"
           "evaluates the GeoAware baseline, the baseline with GeoAware's test-time adaptive flip (its zero-shot\n"
           "protocol: match.baseline.adapt_flip 1, or 2 when set to 2) and SemAlign3D on the test split (or --split),\n"
           "prints PCK@0.1 overall and by viewpoint variation, and writes into OUT (default: a new folder under\n"
           "/tmp):\n"
           "  dataset/                       the generated dataset (SPair layout)\n"
           "  dog.prior.safetensors          the prior\n"
           "  baseline/, baseline_flip/, semalign3d/   predictions.jsonl and report.json of each method\n"
           "  matches_baseline.png, matches_semalign3d.png   a hard pair, source | target, green = correct\n"
           "  aligned.png                    the aligned representation drawn over that pair's target image\n"
           "With --json: semalign3d_version, seed, difficulty, split, pairs, and the numbers under baseline_pck10,\n"
           "baseline_flip_pck10, semalign3d_pck10 and the same with _hard (per-image PCK@0.1 in %%, pair-weighted;\n"
           "hard = viewpoint variation 2).\n"
           "The prior is built with the default settings (100^3 placement grid, refinement to convergence).\n\n"
           "options:\n"
           "  --seed N            dataset, prior and alignment seed (default 0)\n"
           "  --split NAME        evaluation split: test (default, 200 pairs) or val (30 pairs; choose settings\n"
           "                      on val, never on test)\n"
           "  --out DIR           output folder (new or empty)\n"
           "  --json FILE         write the numbers as JSON (atomic)\n"
           "  --difficulty LEVEL  synthetic difficulty (default medium)\n"
           "  --device NAME       cpu (default) or cuda: where the aligner evaluates its hypotheses\n"
           "  --set NAME=VALUE    an aligner or matcher option (repeatable; docs/ALIGN.md); --set list prints\n"
           "                      them all with their values\n"
           "  --quiet             no progress lines\n");
}

/* The prior build's progress callback: silent (the demo prints a line per stage), but Ctrl-C stops it. */
static int prior_cancel(void *user, const char *stage, long done, long total) {
    (void)user; (void)stage; (void)done; (void)total;
    return cli_interrupted;
}

typedef struct method_run { const char *name; sa3d_pck_report r; } method_run;

/* 1 when path does not exist or is an empty folder. */
static int folder_new_or_empty(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return errno == ENOENT;
    DIR *d = S_ISDIR(st.st_mode) ? opendir(path) : NULL;
    if (!d) return 0;
    int entries = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) entries += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return entries == 0;
}

static sa3d_status run_eval(sa3d_dataset *ds, const char *split, const char *out, const char *name,
                            sa3d_pair_matcher match, void *ctx, int quiet, sa3d_pck_report *r, sa3d_error *err) {
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/%s", out, name);
    sa3d_eval_params ep = sa3d_eval_params_default();
    ep.split = split;
    ep.out_dir = dir;
    cli_progress bar;
    cli_progress_start(&bar, name, sa3d_dataset_n_pairs(ds, split), quiet);
    ep.progress = cli_eval_progress;
    ep.progress_user = &bar;
    long resumed = 0;
    sa3d_pck_init(r);
    sa3d_status s = sa3d_mkdirs(dir, err);
    if (!s) s = sa3d_eval_run(ds, &ep, match, ctx, r, &resumed, err);
    cli_progress_end(&bar);
    if (!s) {   /* the PCK report `eval` writes (fewer meta keys: the demo has no model, features folder or limit) */
        char path[4300];
        snprintf(path, sizeof path, "%s/report.json", dir);
        const char *meta[] = { "method", name, "dataset", "synth3d (semalign3d demo)", "split", split, NULL };
        s = sa3d_pck_write_json(r, path, meta, err);
    }
    return s;
}

/* Per-image PCK@0.1, pair-weighted, of a cell (NaN when empty). */
static double pck10(const sa3d_pck_cell *c) { return sa3d_pck_per_image(c, 0); }

/* source | target with a line per keypoint from its source position to the prediction (green when correct at
 * alpha 0.1, red otherwise) and the ground truth as small white dots. */
static sa3d_status draw_matches(const char *path, const sa3d_image *src, const sa3d_image *trg, const sa3d_pair *pr,
                                const float (*pred)[2], sa3d_error *err) {
    uint8_t *canvas;
    int w, h;
    sa3d_side_by_side(&canvas, &w, &h, src->rgb, src->w, src->h, trg->rgb, trg->w, trg->h);
    if (!canvas) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", path);
    const uint8_t green[3] = { 40, 200, 60 }, red[3] = { 230, 40, 40 }, white[3] = { 255, 255, 255 };
    for (int k = 0; k < pr->n_kps; k++) {
        float dx = pred[k][0] - pr->trg_kps[k][0], dy = pred[k][1] - pr->trg_kps[k][1];
        int ok = sqrtf(dx * dx + dy * dy) < 0.1f * pr->threshold_base;
        const uint8_t *c = ok ? green : red;
        sa3d_draw_line(canvas, w, h, pr->src_kps[k][0], pr->src_kps[k][1], (float)src->w + pred[k][0], pred[k][1], c);
        sa3d_draw_disc(canvas, w, h, pr->src_kps[k][0], pr->src_kps[k][1], 3.0f, c);
        sa3d_draw_disc(canvas, w, h, (float)src->w + pr->trg_kps[k][0], pr->trg_kps[k][1], 2.0f, white);
    }
    sa3d_status s = sa3d_png_write(path, canvas, w, h, 3, err);
    free(canvas);
    return s;
}

/* The aligned representation over the image: dense points as small dots coloured by depth order, anchors as
 * white discs. */
static sa3d_status draw_alignment(const char *path, const sa3d_image *img, const sa3d_alignment *a, sa3d_error *err) {
    uint8_t *canvas = malloc((size_t)img->w * img->h * 3);
    if (!canvas) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < (size_t)img->w * img->h * 3; i++) canvas[i] = (uint8_t)(img->rgb[i] / 2 + 64);
    float cell = (float)a->input_size / (float)a->g;
    const uint8_t dot[3] = { 30, 120, 255 }, rim[3] = { 0, 0, 0 }, white[3] = { 255, 255, 255 };
    for (int i = 0; i < a->n_dense; i++) {
        float u, v;
        sa3d_geoaware_from_square(img->w, img->h, a->input_size, a->proj[2 * i] * cell, a->proj[2 * i + 1] * cell, &u,
                                  &v);
        sa3d_draw_disc(canvas, img->w, img->h, u, v, 1.5f, dot);
    }
    for (int i = 0; i < a->n_used; i++) {
        float u, v;
        sa3d_geoaware_from_square(img->w, img->h, a->input_size, a->proj_anchor[2 * i] * cell,
                                  a->proj_anchor[2 * i + 1] * cell, &u, &v);
        sa3d_draw_disc(canvas, img->w, img->h, u, v, 4.0f, rim);
        sa3d_draw_disc(canvas, img->w, img->h, u, v, 2.5f, white);
    }
    sa3d_status s = sa3d_png_write(path, canvas, img->w, img->h, 3, err);
    free(canvas);
    return s;
}

/* The pictures of the first pair of the split with viewpoint variation 2 (else the first pair). */
static sa3d_status pictures(sa3d_dataset *ds, const char *split, const char *out, sa3d_baseline_matcher *bm,
                            sa3d_sa3d_matcher *sm, sa3d_error *err) {
    int n = sa3d_dataset_n_pairs(ds, split);
    const sa3d_pair *pr = n > 0 ? sa3d_dataset_pair(ds, split, 0) : NULL;
    for (int i = 0; i < n; i++)
        if (sa3d_dataset_pair(ds, split, i)->viewpoint_variation == 2) {
            pr = sa3d_dataset_pair(ds, split, i);
            break;
        }
    if (!pr) return SA3D_OK;
    sa3d_image src = { 0 }, trg = { 0 };
    char *sp = sa3d_dataset_image_path(ds, pr->category, pr->src);
    char *tp = sa3d_dataset_image_path(ds, pr->category, pr->trg);
    float pred[SA3D_MAX_KPS][2];
    char path[4200];
    sa3d_status s = !sp || !tp ? sa3d_fail(err, SA3D_ERR_NOMEM, "out of memory") : SA3D_OK;
    if (!s) s = sa3d_image_load(&src, sp, err);
    if (!s) s = sa3d_image_load(&trg, tp, err);
    if (!s) s = sa3d_baseline_matcher_match(bm, pr, pred, err);
    if (!s) {
        snprintf(path, sizeof path, "%s/matches_baseline.png", out);
        s = draw_matches(path, &src, &trg, pr, (const float (*)[2])pred, err);
    }
    if (!s) s = sa3d_sa3d_matcher_match(sm, pr, pred, err);
    if (!s) {
        snprintf(path, sizeof path, "%s/matches_semalign3d.png", out);
        s = draw_matches(path, &src, &trg, pr, (const float (*)[2])pred, err);
    }
    const sa3d_alignment *a = s ? NULL : sa3d_sa3d_matcher_alignment(sm, pr->category, pr->trg);
    if (a) {
        snprintf(path, sizeof path, "%s/aligned.png", out);
        s = draw_alignment(path, &trg, a, err);
    }
    if (!s) printf("pictures of pair %s in %s\n", pr->id, out);
    sa3d_image_free(&src);
    sa3d_image_free(&trg);
    free(sp);
    free(tp);
    return s;
}

int cmd_demo(int argc, char **argv) {
    const char *cmd = "demo", *s_seed = "0", *out = NULL, *json = NULL, *diff = "medium", *split = "test",
               *device = "cpu";
    int quiet = 0;
    cli_param_sets sets = { .n = 0 };
    for (int i = 1; i < argc; i++) {
        int r;
        if (cli_flag(argv, i, "-h") || cli_flag(argv, i, "--help")) { help(); return EXIT_OK; }
        if (cli_flag(argv, i, "--quiet")) { quiet = 1; continue; }
        if ((r = cli_opt(cmd, argc, argv, &i, "--seed", &s_seed)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--split", &split)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--out", &out)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--json", &json)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--difficulty", &diff)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--device", &device)) ||
            (r = cli_param_set_arg(cmd, argc, argv, &i, &sets))) {
            if (r < 0) return EXIT_USAGE;
            continue;
        }
        return cli_usage_error(cmd, "unknown argument '%s'", argv[i]);
    }
    int seed;
    /* --json's folder must exist, unless it is --out or under it, which the demo makes */
    size_t out_len = out ? strlen(out) : 0;
    int json_in_out = json && out && !strncmp(json, out, out_len) && json[out_len] == '/';
    if (!cli_int(cmd, "--seed", s_seed, 0, 2000000000, &seed) ||
        (!json_in_out && !cli_output_file_ok(cmd, "--json", json)))
        return EXIT_USAGE;
    sa3d_synth3d_difficulty level;
    if (!strcmp(diff, "easy")) level = SA3D_SYNTH3D_EASY;
    else if (!strcmp(diff, "medium")) level = SA3D_SYNTH3D_MEDIUM;
    else if (!strcmp(diff, "hard")) level = SA3D_SYNTH3D_HARD;
    else return cli_usage_error(cmd, "--difficulty %s: expected easy, medium or hard", diff);
    if (strcmp(split, "test") && strcmp(split, "val"))
        return cli_usage_error(cmd, "--split %s: expected test or val (trn builds the prior)", split);
    if (out && strlen(out) > SA3D_EVAL_MAX_DIR - 32)   /* the evaluations go to OUT/<method> */
        return cli_usage_error(cmd, "--out: a name of %zu bytes (at most %d)", strlen(out), SA3D_EVAL_MAX_DIR - 32);
    sa3d_sa3d_matcher_params smp = sa3d_sa3d_matcher_params_default();
    smp.align.seed = (uint64_t)seed;
    if (!cli_align_device(cmd, device, &smp)) return EXIT_USAGE;
    int set_rc = cli_param_sets_apply(cmd, &sets, &smp);
    if (set_rc >= 0) return set_rc;
    if (out && !folder_new_or_empty(out))
        return cli_usage_error(cmd, "--out %s: not a new or empty folder (the demo writes dataset/, the prior, "
                               "the evaluations and pictures there)", out);

    cli_install_sigint();
    sa3d_error err = { 0 };
    if (sa3d_align_device_check(smp.align.device, &err)) return cli_run_error(cmd, &err);   /* before the work */
    char tmp[] = "/tmp/semalign3d-demo-XXXXXX", root[4200];
    if (!out && !(out = mkdtemp(tmp))) {
        snprintf(err.msg, sizeof err.msg, "cannot create a folder under /tmp");
        return cli_run_error(cmd, &err);
    }
    snprintf(root, sizeof root, "%s/dataset", out);
    sa3d_dataset *ds = NULL;
    sa3d_provider *fp = NULL, *dp = NULL, *mp = NULL;
    sa3d_prior *prior = NULL;
    sa3d_baseline_matcher *bm = NULL, *bmf = NULL;
    sa3d_sa3d_matcher *sm = NULL;
    sa3d_pck_report rb, rf, rs;
    int rc = EXIT_RUN;
    double t0 = sa3d_now(), t;

    /* 1. the dataset */
    sa3d_synth3d_params sp = sa3d_synth3d_params_default(level);
    sp.seed = (uint64_t)seed;
    sp.cancel = cli_cancel_requested;
    if (sa3d_synth3d_write(root, &sp, &err)) goto done;
    printf("1/4 dataset: %d images of dog, %d/%d/%d trn/val/test pairs (%s, seed %d) in %.1f s\n",
           sp.images_per_category, sp.pairs_trn, sp.pairs_val, sp.pairs_test, diff, seed, sa3d_now() - t0);
    sa3d_dataset_params dsp = sa3d_dataset_params_default();
    dsp.strict = 1;
    if (sa3d_dataset_open(&ds, root, &dsp, &err) || sa3d_dataset_load_split(ds, split, &err) < 0) goto done;
    if (sa3d_synth3d_providers(ds, root, &fp, &dp, &mp, &err)) goto done;

    /* 2. the prior */
    t = sa3d_now();
    sa3d_prior_build_params bp = sa3d_prior_build_params_default();
    bp.seed = (uint64_t)seed;
    bp.progress = prior_cancel;
    sa3d_prior_build_report rep;
    if (sa3d_prior_build_dataset(&prior, ds, "trn", "dog", 0, fp, dp, mp, &bp, &rep, &err)) goto done;
    char path[4300];
    snprintf(path, sizeof path, "%s/dog.prior.safetensors", out);
    if (sa3d_prior_save(prior, path, NULL, &err)) goto done;
    printf("2/4 prior: %d instances, %d slots placed, %zu + %zu relations, %d dense points, focal %.2f, in %.1f s\n",
           rep.n_instances, prior->n_used, prior->n_pairs, prior->n_tets, prior->n_dense, prior->focal_mean,
           sa3d_now() - t);

    /* 3. the three methods on the evaluation split: the baseline plain and with GeoAware's adaptive flip */
    sa3d_baseline_params plain = smp.match.baseline, flip = smp.match.baseline;
    plain.adapt_flip = SA3D_FLIP_OFF;
    if (!flip.adapt_flip) flip.adapt_flip = SA3D_FLIP_MASK;
    t = sa3d_now();
    if (sa3d_baseline_matcher_new(&bm, fp, 840, &plain, &err) ||
        run_eval(ds, split, out, "baseline", sa3d_baseline_matcher_match, bm, quiet, &rb, &err))
        goto done;
    double tb = sa3d_now() - t;
    t = sa3d_now();
    if (sa3d_baseline_matcher_new(&bmf, fp, 840, &flip, &err) ||
        sa3d_baseline_matcher_use_flip(bmf, SA3D_DATASET_SPAIR, mp, &err) ||
        run_eval(ds, split, out, "baseline_flip", sa3d_baseline_matcher_match, bmf, quiet, &rf, &err))
        goto done;
    double tf = sa3d_now() - t;
    t = sa3d_now();
    const sa3d_prior *priors[1] = { prior };
    if (sa3d_sa3d_matcher_new(&sm, fp, mp, dp, priors, 1, &smp, &err) ||
        run_eval(ds, split, out, "semalign3d", sa3d_sa3d_matcher_match, sm, quiet, &rs, &err))
        goto done;
    sa3d_sa3d_matcher_stats st = sa3d_sa3d_matcher_get_stats(sm);
    sa3d_baseline_batch_stats fs = sa3d_baseline_matcher_batch_stats(bmf);
    printf("3/4 evaluation: %d %s pairs; baseline %.1f s, with the flip %.1f s (mirror taken in %ld pairs), "
           "SemAlign3D %.1f s (%ld images aligned, %ld of %ld queries fell back to the baseline)\n",
           sa3d_dataset_n_pairs(ds, split), split, tb, tf, fs.flipped, sa3d_now() - t, st.alignments, st.fallbacks,
           st.queries);

    /* 4. the table, the pictures, the JSON */
    printf("\nPCK@0.1 per image (%%, mean over pairs), SPair protocol: alpha x max(w, h) of the target box\n");
    printf("%-28s %8s %11s %11s %11s\n", "pairs", "n", "baseline", "+ flip", "SemAlign3D");
    printf("%-28s %8ld %11.2f %11.2f %11.2f\n", "all", rb.overall.pairs, pck10(&rb.overall), pck10(&rf.overall),
           pck10(&rs.overall));
    static const char *vv[3] = { "viewpoint variation 0", "viewpoint variation 1", "viewpoint variation 2 (hard)" };
    for (int v = 0; v < 3; v++)
        printf("%-28s %8ld %11.2f %11.2f %11.2f\n", vv[v], rb.by_flag[0][v].pairs, pck10(&rb.by_flag[0][v]),
               pck10(&rf.by_flag[0][v]), pck10(&rs.by_flag[0][v]));
    printf("%-28s %8ld %11.2f %11.2f %11.2f\n", "per keypoint, all", rb.overall.keypoints,
           sa3d_pck_per_keypoint(&rb.overall, 0), sa3d_pck_per_keypoint(&rf.overall, 0),
           sa3d_pck_per_keypoint(&rs.overall, 0));
    printf("(+ flip: the baseline with GeoAware-SC's test-time adaptive flip, its zero-shot protocol)\n");
    if (pictures(ds, split, out, bm, sm, &err)) goto done;
    if (json) {
        char text[1024];
        int len = snprintf(text, sizeof text,
                           "{\"semalign3d_version\": \"%s\", \"seed\": %d, \"difficulty\": \"%s\", "
                           "\"split\": \"%s\", \"pairs\": %ld, "
                           "\"hard_pairs\": %ld, "
                           "\"baseline_pck10\": %.4f, \"semalign3d_pck10\": %.4f, \"baseline_pck10_hard\": %.4f, "
                           "\"semalign3d_pck10_hard\": %.4f, \"baseline_flip_pck10\": %.4f, "
                           "\"baseline_flip_pck10_hard\": %.4f, \"seconds\": %.1f}\n",
                           sa3d_version(), seed, diff, split, rb.overall.pairs, rb.by_flag[0][2].pairs,
                           pck10(&rb.overall), pck10(&rs.overall), pck10(&rb.by_flag[0][2]), pck10(&rs.by_flag[0][2]),
                           pck10(&rf.overall), pck10(&rf.by_flag[0][2]), sa3d_now() - t0);
        if (sa3d_write_file_atomic(json, text, (size_t)len, &err)) goto done;
    }
    printf("4/4 done in %.1f s; outputs in %s\n", sa3d_now() - t0, out);
    rc = EXIT_OK;
done:
    if (rc != EXIT_OK) {
        if (cli_interrupted && !err.code) {
            err.code = SA3D_ERR_CANCELLED;
            snprintf(err.msg, sizeof err.msg, "interrupted");
        }
        rc = cli_run_error(cmd, &err);
    }
    sa3d_sa3d_matcher_free(sm);
    sa3d_baseline_matcher_free(bm);
    sa3d_baseline_matcher_free(bmf);
    sa3d_prior_free(prior);
    sa3d_provider_free(fp);
    sa3d_provider_free(dp);
    sa3d_provider_free(mp);
    sa3d_dataset_close(ds);
    return rc;
}
