/* semalign3d build-prior: the 3D object-class representation of a category (METHOD.md 4) from its training images,
 * with features, depth and masks from the providers; writes <out>/<category>.prior.safetensors atomically.
 * semalign3d show-prior: a prior file as a PLY point cloud coloured by a 3-component PCA of the features, and a
 * PNG software render (orthographic splats, far to near). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "base/base.h"
#include "cli.h"
#include "semalign3d/data.h"
#include "semalign3d/image.h"
#include "semalign3d/nn.h"
#include "semalign3d/prior.h"
#include "semalign3d/prior_build.h"
#include "semalign3d/providers.h"

static void help_build(void) {
    sa3d_prior_build_params p = sa3d_prior_build_params_default();
    printf("usage: semalign3d build-prior --dataset DIR (--category NAME | --all) --out DIR\n"
           "                              (--features-dir DIR | --features-model DIR) (--depth-dir DIR | --depth-model DIR)\n"
           "                              [options]\n\n"
           "Builds the 3D object-class representation of each category from its trn images and their mirrors\n"
           "(METHOD.md 4; docs/PRIOR.md) and writes OUT/<category>.prior.safetensors (atomic).\n\n"
           "options:\n"
           "  --dataset DIR         SPair-71k root (official layout)\n"
           "  --category NAME       one category; --all: every category of the dataset in turn\n"
           "  --force               rebuild a category whose prior OUT already holds, made by this version from the\n"
           "                        same inputs and settings (kept otherwise, so an interrupted --all resumes;\n"
           "                        inputs: the training images' annotations, imported maps' files by size and\n"
           "                        modification time, the networks by checkpoint and dtype)\n"
           "  --out DIR             output folder (created)\n"
           "  --features-dir DIR    import feature maps (DIR[/<category>]/<id>.features.safetensors or .npy, with flip)\n"
           "  --features-model DIR  compute DINOv2 features instead (--size N, default 840 -> 60 x 60)\n"
           "  --depth-dir DIR       import disparity maps (DIR[/<category>]/<id>.depth.safetensors)\n"
           "  --depth-model DIR     compute them with Depth Anything V2 instead (input prepared as the folder's\n"
           "                        preprocessor_config.json says; the Depth-Anything-V2-*-hf settings without one)\n"
           "  --masks KIND          segmentation (SPair Segmentation/, default) or bbox\n"
           "  --device NAME         cpu (default) or cuda: the networks of --features-model and --depth-model\n"
           "  --dtype NAME          their dtype: fp32 (default; TF32 products on cuda), fp16 or bf16 (cuda only)\n"
           "  --positions NAME      their position embeddings: hf (default, as Hugging Face) or hub (as the\n"
           "                        original releases: bicubic by scale (g + 0.1) / G)\n"
           "  --cache DIR           cache computed features and depth maps here\n"
           "  --split NAME          training split (default trn)\n"
           "  --max-images N        first N training images (default 200, n_max_imgs)\n"
           "  --seed N              random seed (default 0)\n"
           "  --refine-iters N      sparse AdamW refinement iterations, at most (default %d)\n"
           "  --refine-tol X        stop the refinement once L_geom falls by less than X (1 + |L|) over 250 steps\n"
           "                        (default %g; 0 runs every iteration, as the authors do)\n"
           "  --grid N              grid points per axis of the sparse placement, 8..512 (default %d)\n"
           "  --focal-iters N       focal-length iterations (default %d)\n"
           "  --kmeans-k N          dense cluster count (default %d)\n"
           "  --threads N           threads (default 0 = all cores)\n"
           "  --quiet               no progress lines\n"
           "example:\n"
           "  semalign3d build-prior --dataset SPair-71k --category car --features-dir feats --depth-dir depth --out priors\n",
           p.refine_iters, p.refine_tol, p.cube_n, p.focal_iters, p.kmeans_k);
}

typedef struct prog_ctx { cli_progress bar; const char *stage; int quiet; } prog_ctx;

static int on_progress(void *user, const char *stage, long done, long total) {
    prog_ctx *p = user;
    if (!p->stage || strcmp(p->stage, stage) != 0) {
        if (p->stage) cli_progress_end(&p->bar);
        p->stage = stage;
        cli_progress_start(&p->bar, stage, total, p->quiet);
    }
    p->bar.total = total;
    p->bar.done = done - 1;
    cli_progress_step(&p->bar, "");
    return cli_interrupted;
}

/* What made a prior, recorded in its metadata: the build settings (sa3d_prior_build_params_json) and the inputs,
 * all strings. Imported maps are known by their folder (and build_one adds their files' sa3d_provider_stamp),
 * computed ones by the network's identity and dtype, and
 * depth by a processor other than the default (dpre: its text, NULL for the default). NULL when out of memory;
 * free with cJSON_free. */
static char *build_record(const sa3d_prior_build_params *bp, const char *root, const char *split, int max_images,
                          const char *masks, const char *fdir, const sa3d_model *fm, int size, const char *ddir,
                          const sa3d_model *dm, const char *dpre) {
    char *params = sa3d_prior_build_params_json(bp);
    cJSON *o = params ? cJSON_Parse(params) : NULL;
    free(params);
    if (!o) return NULL;
    char n[32], feat[4200], depth[4200];
    snprintf(n, sizeof n, "%d", max_images);
    if (fm) snprintf(feat, sizeof feat, "DINOv2 %s %s at %d", sa3d_model_id(fm), sa3d_model_dtype(fm), size);
    else snprintf(feat, sizeof feat, "files in %s", fdir);
    if (dm)
        snprintf(depth, sizeof depth, "Depth Anything %s %s%s%s", sa3d_model_id(dm), sa3d_model_dtype(dm),
                 dpre ? " processor " : "", dpre ? dpre : "");
    else snprintf(depth, sizeof depth, "files in %s", ddir);
    char *s = NULL;
    if (cJSON_AddStringToObject(o, "dataset", root) && cJSON_AddStringToObject(o, "split", split) &&
        cJSON_AddStringToObject(o, "max_images", n) && cJSON_AddStringToObject(o, "masks", masks) &&
        cJSON_AddStringToObject(o, "features", feat) && cJSON_AddStringToObject(o, "depth", depth))
        s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* 1 when path holds a prior of cat that this library version made from exactly this record (build_record). Reads
 * the header alone: the file was written atomically, so one that is there is whole. */
static int prior_current(const char *path, const char *cat, const char *record) {
    sa3d_safetensors *st = NULL;
    if (!sa3d_file_exists(path) || sa3d_st_open(&st, path, NULL) != SA3D_OK) return 0;
    const char *fmt = sa3d_st_metadata(st, "format"), *c = sa3d_st_metadata(st, "category"),
               *v = sa3d_st_metadata(st, "semalign3d_version");
    cJSON *o = cJSON_Parse(record);
    int ok = o && fmt && !strcmp(fmt, SA3D_PRIOR_FORMAT) && c && !strcmp(c, cat) && v && !strcmp(v, sa3d_version());
    const cJSON *e;
    cJSON_ArrayForEach(e, o) {   /* the feature dimensions come from the inputs, which "features" names */
        if (!strcmp(e->string, "feat_channels") || !strcmp(e->string, "feat_grid")) continue;
        const char *m = sa3d_st_metadata(st, e->string);
        if (!m && !strcmp(e->string, "images")) continue;   /* made before the images were recorded: cannot say */
        ok = ok && m && cJSON_IsString(e) && !strcmp(m, e->valuestring);
    }
    cJSON_Delete(o);
    sa3d_st_close(st);
    return ok;
}

/* One category: the prior built from the providers and saved with record in its metadata, unless OUT holds it
 * already (and not force). */
static int build_one(sa3d_dataset *ds, const char *cat, const char *split, int max_images, const char *out,
                     sa3d_provider *fp, sa3d_provider *dp, sa3d_provider *mp, sa3d_prior_build_params *bp,
                     const char *record, int force, int quiet, sa3d_error *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s.prior.safetensors", out, cat);
    /* the record of this category: also which training images, with their annotations (a dataset that changed
     * under the same root must not keep the prior of the old one) */
    const char *const *ids = NULL;
    int n = sa3d_dataset_split_images(ds, split, cat, &ids, err);
    if (n < 0) return 1;
    if (max_images > 0 && n > max_images) n = max_images;
    uint64_t h = SA3D_FNV_OFFSET;
    for (int i = 0; i < n; i++) {
        const sa3d_image_anno *a;
        if (sa3d_dataset_image(ds, cat, ids[i], &a, err)) return 1;
        h = sa3d_fnv1a(h, a->id, strlen(a->id) + 1);
        h = sa3d_fnv1a(h, &a->width, sizeof a->width);
        h = sa3d_fnv1a(h, &a->height, sizeof a->height);
        h = sa3d_fnv1a(h, a->bbox, sizeof a->bbox);
        h = sa3d_fnv1a(h, a->kps, (size_t)a->n_slots * sizeof a->kps[0]);
        h = sa3d_fnv1a(h, a->visible, (size_t)a->n_slots);
    }
    /* and the imported maps' files (their folders alone named them: maps written again there kept the prior) */
    uint64_t files = SA3D_STAMP_START;
    for (int i = 0; i < n; i++) {
        files = sa3d_provider_stamp(fp, cat, ids[i], files);
        if (dp) files = sa3d_provider_stamp(dp, cat, ids[i], files);
        if (mp) files = sa3d_provider_stamp(mp, cat, ids[i], files);
    }
    char images[48], input_files[24];
    snprintf(images, sizeof images, "%d %016llx", n, (unsigned long long)h);
    snprintf(input_files, sizeof input_files, "%016llx", (unsigned long long)files);
    cJSON *rec = cJSON_Parse(record);
    int ok = rec && cJSON_AddStringToObject(rec, "images", images) &&   /* input_files only where maps are read */
             (files == SA3D_STAMP_START || cJSON_AddStringToObject(rec, "input_files", input_files));
    char *cat_record = ok ? cJSON_PrintUnformatted(rec) : NULL;
    cJSON_Delete(rec);
    if (!cat_record) return sa3d_fail(err, SA3D_ERR_NOMEM, "out of memory"), 1;
    if (!force && prior_current(path, cat, cat_record)) {
        printf("%s: kept %s (made by this version from the same inputs and settings; --force rebuilds it)\n", cat,
               path);
        cJSON_free(cat_record);
        return 0;
    }
    prog_ctx pc = { .quiet = quiet };
    bp->progress = on_progress;
    bp->progress_user = &pc;
    sa3d_prior *prior = NULL;
    sa3d_prior_build_report rep;
    sa3d_status s = sa3d_prior_build_dataset(&prior, ds, split, cat, max_images, fp, dp, mp, bp, &rep, err);
    if (pc.stage) cli_progress_end(&pc.bar);
    if (s) { cJSON_free(cat_record); return 1; }
    /* the record as built: the feature dimensions the maps had (the build set them in bp), not the defaults */
    rec = cJSON_Parse(cat_record);
    cJSON_free(cat_record);
    char dims[2][16];
    snprintf(dims[0], sizeof dims[0], "%d", bp->feat_channels);
    snprintf(dims[1], sizeof dims[1], "%d", bp->feat_grid);
    char *built = rec && cJSON_ReplaceItemInObject(rec, "feat_channels", cJSON_CreateString(dims[0])) &&
                  cJSON_ReplaceItemInObject(rec, "feat_grid", cJSON_CreateString(dims[1]))
                      ? cJSON_PrintUnformatted(rec) : NULL;
    cJSON_Delete(rec);
    if (!built) s = sa3d_fail(err, SA3D_ERR_NOMEM, "out of memory");
    else if (!(s = sa3d_mkdirs(out, err))) s = sa3d_prior_save(prior, path, built, err);   /* only once there is one */
    cJSON_free(built);
    if (!s) {
        double total = 0;
        for (int k = 0; k < SA3D_PRIOR_N_STAGES; k++) total += rep.stage_s[k];
        printf("%s: %d training instances, %d of %d slots placed, %zu edge pairs and %zu tet relations kept, %d dense "
               "points, focal %.3f +- %.3f, %.1f s -> %s\n", cat, rep.n_instances, prior->n_used, prior->n_slots,
               prior->n_pairs, prior->n_tets, prior->n_dense, prior->focal_mean, prior->focal_sd, total, path);
    }
    sa3d_prior_free(prior);
    return s ? 1 : 0;
}

int cmd_build_prior(int argc, char **argv) {
    const char *cmd = "build-prior", *root = NULL, *cat = NULL, *out = NULL, *fdir = NULL, *fmodel = NULL,
               *ddir = NULL, *dmodel = NULL, *masks = "segmentation", *cache = NULL, *split = "trn", *s_max = NULL,
               *s_seed = NULL, *s_refine = NULL, *s_tol = NULL, *s_grid = NULL, *s_focal = NULL, *s_k = NULL,
               *s_thr = NULL, *s_size = NULL, *device = NULL, *dtype = NULL, *positions = NULL;
    int all = 0, quiet = 0, force = 0;
    for (int i = 1; i < argc; i++) {
        int r;
        if (cli_flag(argv, i, "-h") || cli_flag(argv, i, "--help")) { help_build(); return EXIT_OK; }
        if (cli_flag(argv, i, "--all")) { all = 1; continue; }
        if (cli_flag(argv, i, "--quiet")) { quiet = 1; continue; }
        if (cli_flag(argv, i, "--force")) { force = 1; continue; }
        if ((r = cli_opt(cmd, argc, argv, &i, "--dataset", &root)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--category", &cat)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--out", &out)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--features-dir", &fdir)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--features-model", &fmodel)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--depth-dir", &ddir)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--depth-model", &dmodel)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--masks", &masks)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--cache", &cache)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--split", &split)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--max-images", &s_max)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--seed", &s_seed)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--refine-iters", &s_refine)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--refine-tol", &s_tol)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--grid", &s_grid)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--focal-iters", &s_focal)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--kmeans-k", &s_k)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--threads", &s_thr)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--size", &s_size)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--device", &device)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--dtype", &dtype)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--positions", &positions))) {
            if (r < 0) return EXIT_USAGE;
            continue;
        }
        return cli_usage_error(cmd, "unknown argument '%s'", argv[i]);
    }
    if (!root) return cli_usage_error(cmd, "--dataset is required");
    if (!out) return cli_usage_error(cmd, "--out is required");
    if (!!cat == all) return cli_usage_error(cmd, "give exactly one of --category and --all");
    if (!!fdir == !!fmodel) return cli_usage_error(cmd, "give exactly one of --features-dir and --features-model");
    if (!!ddir == !!dmodel) return cli_usage_error(cmd, "give exactly one of --depth-dir and --depth-model");
    if ((device || dtype || positions) && !fmodel && !dmodel)
        return cli_usage_error(cmd, "--device, --dtype and --positions belong to --features-model and --depth-model");
    if (!cli_model_names_ok(cmd, device, dtype, positions)) return EXIT_USAGE;
    if (strcmp(masks, "segmentation") && strcmp(masks, "bbox"))
        return cli_usage_error(cmd, "--masks %s: expected segmentation or bbox", masks);
    sa3d_prior_build_params bp = sa3d_prior_build_params_default();
    int max_images = 200, seed = 0, size = 840;
    if ((s_max && !cli_int(cmd, "--max-images", s_max, 2, 1000000, &max_images)) ||
        (s_seed && !cli_int(cmd, "--seed", s_seed, 0, 2147483647, &seed)) ||
        (s_refine && !cli_int(cmd, "--refine-iters", s_refine, 0, 100000000, &bp.refine_iters)) ||
        (s_tol && !cli_real(cmd, "--refine-tol", s_tol, 0.0, 1.0, &bp.refine_tol)) ||
        (s_grid && !cli_int(cmd, "--grid", s_grid, SA3D_PRIOR_MIN_GRID, SA3D_PRIOR_MAX_GRID, &bp.cube_n)) ||
        (s_focal && !cli_int(cmd, "--focal-iters", s_focal, 0, 10000000, &bp.focal_iters)) ||
        (s_k && !cli_int(cmd, "--kmeans-k", s_k, 1, 1000000, &bp.kmeans_k)) ||
        (s_thr && !cli_int(cmd, "--threads", s_thr, 0, 1024, &bp.n_threads)) ||
        (s_size && !cli_int(cmd, "--size", s_size, 14, 8400, &size)))
        return EXIT_USAGE;
    if (size % 14) return cli_usage_error(cmd, "--size %d: must be a multiple of 14", size);
    if (!cli_input_dir_ok(cmd, "--features-dir", fdir) || !cli_input_dir_ok(cmd, "--depth-dir", ddir) ||
        !cli_input_dir_ok(cmd, "--features-model", fmodel) || !cli_input_dir_ok(cmd, "--depth-model", dmodel))
        return EXIT_USAGE;
    if (sa3d_file_exists(out))   /* made only when a prior is saved: said here, not after the build */
        return cli_usage_error(cmd, "--out %s: a file; give a folder (new or existing)", out);
    bp.seed = (uint64_t)seed;

    cli_install_sigint();
    sa3d_error err = { 0 };
    sa3d_dataset *ds = NULL;
    sa3d_model *fm = NULL, *dm = NULL;
    sa3d_provider *fp = NULL, *dp = NULL, *mp = NULL;
    char *record = NULL;
    int rc = EXIT_RUN;
    int failed = 0, tried = 0, summarized = 0;   /* --all: categories failed (each printed when it did), tried */
    char failed_names[SA3D_N_SPAIR_CATEGORIES * 16] = "";
    sa3d_set_threads(bp.n_threads);
    sa3d_dataset_params dsp = sa3d_dataset_params_default();
    dsp.categories = cat;
    dsp.warn = cli_warn;
    if (sa3d_dataset_open(&ds, root, &dsp, &err)) goto done;
    sa3d_model_params mparams = sa3d_model_params_default();
    mparams.n_threads = bp.n_threads;
    mparams.device = device;
    mparams.dtype = dtype;
    mparams.positions = positions;
    sa3d_provider_params pf = sa3d_provider_params_default(), pd = pf, pm = pf;
    pf.input_size = size;
    pf.cache_dir = pd.cache_dir = cache;
    if (fmodel) {
        if (sa3d_model_open(&fm, fmodel, &mparams, &err) ||
            cli_model_kind_check(fm, "--features-model", fmodel, SA3D_MODEL_DINOV2, &err))
            goto done;
        pf.kind = SA3D_SOURCE_COMPUTE;
        pf.model = fm;
    } else {
        pf.kind = SA3D_SOURCE_IMPORT;
        pf.import_dir = fdir;
        pf.input_size = 0;   /* the prior maps keypoints to cells by image size and grid: any size the files have */
    }
    sa3d_dpt_preprocess_params dpre;
    char dpre_text[512];
    if (dmodel) {
        if (sa3d_model_open(&dm, dmodel, &mparams, &err) ||
            cli_model_kind_check(dm, "--depth-model", dmodel, SA3D_MODEL_DEPTH_ANYTHING, &err) ||
            sa3d_dpt_preprocess_params_find(&dpre, dmodel, NULL, 0, &err))
            goto done;
        sa3d_dpt_preprocess_params_text(&dpre, dpre_text, sizeof dpre_text);
        pd.kind = SA3D_SOURCE_COMPUTE;
        pd.model = dm;
        pd.depth_processor = &dpre;
    } else {
        pd.kind = SA3D_SOURCE_IMPORT;
        pd.import_dir = ddir;
    }
    pm.kind = strcmp(masks, "bbox") ? SA3D_SOURCE_SEGMENTATION : SA3D_SOURCE_BBOX;
    if (sa3d_feature_provider_new(&fp, ds, &pf, &err) || sa3d_depth_provider_new(&dp, ds, &pd, &err) ||
        sa3d_mask_provider_new(&mp, ds, &pm, &err))
        goto done;
    cli_progress quiet_maps;   /* Ctrl-C between two images of a network's batch; the stages draw the progress */
    cli_progress_start(&quiet_maps, "build-prior: maps", 0, 1);
    sa3d_provider_set_hook(fp, cli_provider_hook, &quiet_maps);
    sa3d_provider_set_hook(dp, cli_provider_hook, &quiet_maps);
    /* a prior made with the default processor keeps the record it had before processors were read */
    record = build_record(&bp, root, split, max_images, masks, fdir, fm, size, ddir, dm,
                          dm && !sa3d_dpt_preprocess_params_is_default(&dpre) ? dpre_text : NULL);
    if (!record) { sa3d_fail(&err, SA3D_ERR_NOMEM, "out of memory"); goto done; }
    for (int c = 0; c < SA3D_N_SPAIR_CATEGORIES; c++) {
        const char *name = cat ? cat : sa3d_spair_category(c);
        if (!cat) {   /* --all: the categories that have training images */
            const char *const *ids;
            int n = sa3d_dataset_split_images(ds, split, name, &ids, &err);
            if (n < 0) goto done;
            if (n == 0) continue;
        }
        tried++;
        if (build_one(ds, name, split, max_images, out, fp, dp, mp, &bp, record, force, quiet, &err)) {
            if (cat || err.code == SA3D_ERR_CANCELLED) goto done;
            fprintf(stderr, "semalign3d %s: %s\n", cmd, err.msg);   /* --all goes on with the next category */
            size_t used = strlen(failed_names);
            snprintf(failed_names + used, sizeof failed_names - used, "%s%s", failed++ ? ", " : "", name);
        }
        if (cat) break;
    }
    if (!tried) {
        sa3d_fail(&err, SA3D_ERR_ARG, "%s: no category has images in split %s", root, split);
        goto done;
    }
    rc = failed ? EXIT_RUN : EXIT_OK;
    summarized = 1;
done:
    if (failed)   /* each failure is printed above; this names them all, also before a cancel or a fatal error */
        fprintf(stderr, "semalign3d %s: %d of %d categories failed: %s\n", cmd, failed, tried, failed_names);
    if (rc == EXIT_RUN && !summarized) rc = cli_run_error(cmd, &err);
    sa3d_provider_free(fp); sa3d_provider_free(dp); sa3d_provider_free(mp);
    sa3d_model_free(fm); sa3d_model_free(dm);
    sa3d_dataset_close(ds);
    cJSON_free(record);
    return rc;
}

/* ---- show-prior ------------------------------------------------------------------------------------------------ */

static void help_show(void) {
    printf("usage: semalign3d show-prior FILE [--ply OUT.ply] [--png OUT.png] [--size N]\n\n"
           "Prints a summary of a prior file; --ply writes its dense cloud (anchors included) coloured by a\n"
           "3-component PCA of the features; --png renders it (orthographic splats, far to near, N x N, default 640).\n");
}

int cmd_show_prior(int argc, char **argv) {
    const char *cmd = "show-prior", *file = NULL, *ply = NULL, *png = NULL, *s_size = NULL;
    for (int i = 1; i < argc; i++) {
        int r;
        if (cli_flag(argv, i, "-h") || cli_flag(argv, i, "--help")) { help_show(); return EXIT_OK; }
        if ((r = cli_opt(cmd, argc, argv, &i, "--ply", &ply)) || (r = cli_opt(cmd, argc, argv, &i, "--png", &png)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--size", &s_size))) {
            if (r < 0) return EXIT_USAGE;
            continue;
        }
        if (argv[i][0] == '-' || file) return cli_usage_error(cmd, "unexpected argument '%s'", argv[i]);
        file = argv[i];
    }
    int size = 640;
    if (!file) return cli_usage_error(cmd, "a prior file is required");
    if ((s_size && !cli_int(cmd, "--size", s_size, 16, 8192, &size)) || !cli_output_file_ok(cmd, "--ply", ply) ||
        !cli_output_file_ok(cmd, "--png", png))
        return EXIT_USAGE;
    sa3d_error err = { 0 };
    sa3d_prior *p = NULL;
    if (sa3d_prior_load(&p, file, &err)) return cli_run_error(cmd, &err);
    printf("%s: category %s, seed %llu, %d of %d slots placed, %zu edge pairs, %zu tet relations, %d dense points, "
           "C = %d, focal %.4f +- %.4f\n", file, p->category, (unsigned long long)p->seed, p->n_used, p->n_slots,
           p->n_pairs, p->n_tets, p->n_dense, p->C, p->focal_mean, p->focal_sd);
    int n_swap = 0;
    for (int k = 0; k < p->n_slots && p->slot_flip; k++) n_swap += p->slot_flip[k] > k;
    if (p->slot_flip) printf("flip map: %d left/right slot pairs\n", n_swap);
    else printf("flip map: none (an older file; rebuild it for align.w_mirror)\n");
    int rc = EXIT_OK;
    if (ply && sa3d_prior_write_ply(p, ply, &err)) rc = cli_run_error(cmd, &err);
    else if (ply) fprintf(stderr, "wrote %s (%d points)\n", ply, p->n_dense + p->n_used);
    if (rc == EXIT_OK && png && sa3d_prior_render_png(p, png, size, &err)) rc = cli_run_error(cmd, &err);
    else if (rc == EXIT_OK && png) fprintf(stderr, "wrote %s (%d x %d)\n", png, size, size);
    sa3d_prior_free(p);
    return rc;
}
