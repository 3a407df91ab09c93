/* semalign3d eval: runs a method over every pair of a dataset split with progress and resume, writes the
 * predictions (JSON lines) and the report (JSON), and prints the labelled PCK table. */
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "cli.h"
#include "semalign3d/data.h"
#include "semalign3d/eval.h"
#include "semalign3d/match.h"
#include "semalign3d/nn.h"
#include "semalign3d/align.h"
#include "semalign3d/providers.h"

static void help(void) {
    printf("usage: semalign3d eval --dataset DIR [--method baseline | --method semalign3d --priors DIR]\n"
           "                       (--features DIR | --model DIR) [options]\n\n"
           "Matches the source keypoints of every pair of a split into the target image and scores them\n"
           "(see 'semalign3d pck --help' for the PCK definitions). Writes OUT/predictions.jsonl, OUT/report.json\n"
           "and OUT/parts/<category>.jsonl; a rerun with the same settings reuses finished categories (resume),\n"
           "except those whose prior or imported feature or depth files (size, modification time) changed.\n\n"
           "methods:\n"
           "  baseline   GeoAware-SC feature matching: cosine similarity on the 60 x 60 grid, window soft-argmax\n"
           "             (15 x 15 window, temperature 0.02). --set match.baseline.adapt_flip=1 adds GeoAware's\n"
           "             test-time adaptive flip (its zero-shot protocol: the mirrored source's features, --masks;\n"
           "             =2 its mutual-nearest-neighbour variant, no masks); match.baseline.window_radius=5 its\n"
           "             zero-shot window\n"
           "  semalign3d the prior of the pair's category (PRIORS/<category>.prior.safetensors, `build-prior`)\n"
           "             aligned to each image (once per image), then matching through both alignments with the\n"
           "             baseline as fallback for implausible alignments (docs/ALIGN.md); each pose is also\n"
           "             scored on the mirrored image, whose features it needs too (`features --flip`, the\n"
           "             _flip.npy files, or --model; --set align.w_mirror=0 aligns without them)\n\n"
           "options:\n"
           "  --dataset DIR      SPair-71k root (official layout)\n"
           "  --kind KIND        dataset layout: spair (default), pfpascal (PF-PASCAL; PCK threshold alpha x\n"
           "                     max(W, H) of the target image) or ap10k (AP-10K, GeoAware-SC's pair benchmark)\n"
           "  --split NAME       trn, val or test (default test: 12,234 pairs on SPair-71k); AP-10K: any folder of\n"
           "                     PairAnnotation/ (e.g. test_cross_species)\n"
           "  --method NAME      baseline (default) or semalign3d\n"
           "  --priors DIR       semalign3d: folder of <category>.prior.safetensors\n"
           "  --depth DIR        semalign3d: import disparity maps (DIR[/<category>]/<id>.depth.safetensors) for\n"
           "                     L_depth; without it the aligner uses its default depth\n"
           "  --masks KIND       semalign3d and adapt_flip=1: segmentation (SPair Segmentation/, default), bbox\n"
           "                     or none\n"
           "  --seed N           semalign3d: seed of the pose hypotheses (default 0)\n"
           "  --set NAME=VALUE   an aligner or matcher option (repeatable; docs/ALIGN.md); --set list prints\n"
           "                     them all with their values; the baseline takes match.baseline.* only\n"
           "  --features DIR     import feature maps: DIR[/<category>]/<id>.features.safetensors or <id>.npy\n"
           "  --model DIR        compute features with this DINOv2 model instead\n"
           "  --size N           feature input square side (default 840 -> 60 x 60 grid)\n"
           "  --device NAME      cpu (default) or cuda: the network (--model) and the aligner's energy\n"
           "  --dtype NAME       with --model: fp32 (default; TF32 products on cuda), fp16 or bf16 (cuda only)\n"
           "  --positions NAME   with --model: hf (default) or hub: positions resized as Hugging Face\n"
           "                     or as the torch.hub DINOv2 GeoAware-SC used (scale (g + 0.1) / G)\n"
           "  --batch N          with --model: images per network pass (default 2 on cuda, where an image\n"
           "                     and its mirror share a pass; 1 on the cpu, which gains nothing by more)\n"
           "  --cache DIR        cache computed features here (keyed by image, model and settings)\n"
           "  --out DIR          output folder (default eval-<split>-<method>)\n"
           "  --categories LIST  comma-separated subset of categories\n"
           "  --limit N          only the first N pairs of each category (quick checks)\n"
           "  --threads N        threads (default 0 = all cores)\n"
           "  --strict           malformed annotation records are errors (default: skipped with a warning)\n"
           "  --quiet            no progress lines\n"
           "example:\n"
           "  semalign3d eval --dataset SPair-71k --split test --method baseline --features geoaware_feats\n");
}

/* What a category's predictions were made from beyond the settings (sa3d_eval_params.part_key): the SemAlign3D
 * prior's file digest, and the imported features' and depth maps' files (sa3d_provider_stamp over the category's
 * images), which --features and --depth name only by folder; likewise imported masks. */
typedef struct prior_key { char cat[32], key[48]; } prior_key;
typedef struct part_keys {
    const prior_key *priors;
    int n_priors;
    sa3d_dataset *ds;
    const char *split;
    const sa3d_provider *features, *depth, *masks;   /* depth, masks NULL: none */
    char key[160];
} part_keys;

static const char *part_key_of(void *user, const char *category) {
    part_keys *pk = user;
    int len = 0;
    pk->key[0] = '\0';
    for (int i = 0; i < pk->n_priors; i++)
        if (!strcmp(pk->priors[i].cat, category)) len = snprintf(pk->key, sizeof pk->key, "%s; ", pk->priors[i].key);
    uint64_t f = SA3D_STAMP_START, d = SA3D_STAMP_START, m = SA3D_STAMP_START;
    const char *const *ids;
    int n = sa3d_dataset_split_images(pk->ds, pk->split, category, &ids, NULL);   /* each image once */
    if (n < 0) {   /* out of memory: a key no part has, so the category is redone rather than trusted */
        snprintf(pk->key + len, sizeof pk->key - (size_t)len, "inputs unknown");
        return pk->key;
    }
    for (int i = 0; i < n; i++) {
        f = sa3d_provider_stamp(pk->features, category, ids[i], f);
        if (pk->depth) d = sa3d_provider_stamp(pk->depth, category, ids[i], d);
        if (pk->masks) m = sa3d_provider_stamp(pk->masks, category, ids[i], m);
    }
    /* only the parts that apply: a run on computed features and a prior keeps the key earlier versions wrote */
    if (f != SA3D_STAMP_START)
        len += snprintf(pk->key + len, sizeof pk->key - (size_t)len, "features %016llx; ", (unsigned long long)f);
    if (d != SA3D_STAMP_START)
        len += snprintf(pk->key + len, sizeof pk->key - (size_t)len, "depth %016llx; ", (unsigned long long)d);
    if (m != SA3D_STAMP_START)
        len += snprintf(pk->key + len, sizeof pk->key - (size_t)len, "masks %016llx; ", (unsigned long long)m);
    if (len < 2) return NULL;   /* nothing beyond the settings */
    pk->key[len - 2] = '\0';
    return pk->key;
}

int cmd_eval(int argc, char **argv) {
    const char *cmd = "eval", *method = "baseline", *feat_dir = NULL, *model_dir = NULL, *size_s = "840",
               *cache = NULL, *out = NULL, *limit_s = NULL, *threads_s = NULL, *priors_dir = NULL,
               *depth_dir = NULL, *masks = "segmentation", *seed_s = "0", *device = "cpu", *batch_s = NULL,
               *dtype = NULL, *positions = NULL;
    cli_dataset_opts dataset = cli_dataset_opts_default();
    cli_param_sets sets = { .n = 0 };
    int quiet = 0, size = 840, threads = 0, limit = 0, batch = 0;
    for (int i = 1; i < argc; i++) {
        int r;
        if (cli_flag(argv, i, "-h") || cli_flag(argv, i, "--help")) { help(); return EXIT_OK; }
        if (cli_flag(argv, i, "--quiet")) { quiet = 1; continue; }
        if ((r = cli_dataset_arg(cmd, argc, argv, &i, &dataset)) ||
            (r = cli_param_set_arg(cmd, argc, argv, &i, &sets)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--method", &method)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--priors", &priors_dir)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--depth", &depth_dir)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--masks", &masks)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--seed", &seed_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--features", &feat_dir)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--model", &model_dir)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--size", &size_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--cache", &cache)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--device", &device)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--batch", &batch_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--dtype", &dtype)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--positions", &positions)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--out", &out)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--limit", &limit_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--threads", &threads_s))) {
            if (r < 0) return EXIT_USAGE;
            continue;
        }
        return cli_usage_error(cmd, "unknown argument '%s'", argv[i]);
    }
    int list_rc = cli_param_sets_list_only(cmd, &sets);
    if (list_rc >= 0) return list_rc;
    if (!dataset.root) return cli_usage_error(cmd, "--dataset is required");
    int sa3d = !strcmp(method, "semalign3d"), seed = 0;
    if (!sa3d && strcmp(method, "baseline") != 0)
        return cli_usage_error(cmd, "--method %s: expected baseline or semalign3d", method);
    if (sa3d && !priors_dir) return cli_usage_error(cmd, "--method semalign3d needs --priors DIR");
    if (!sa3d && (priors_dir || depth_dir))
        return cli_usage_error(cmd, "--priors and --depth belong to --method semalign3d");
    if (strcmp(masks, "segmentation") && strcmp(masks, "bbox") && strcmp(masks, "none"))
        return cli_usage_error(cmd, "--masks %s: expected segmentation, bbox or none", masks);
    if (!cli_int(cmd, "--seed", seed_s, 0, 2000000000, &seed)) return EXIT_USAGE;
    if (!!feat_dir == !!model_dir) return cli_usage_error(cmd, "give exactly one of --features and --model");
    if (!cli_dataset_check(cmd, &dataset) || !cli_input_dir_ok(cmd, "--features", feat_dir) ||
        !cli_input_dir_ok(cmd, "--model", model_dir) || !cli_input_dir_ok(cmd, "--priors", priors_dir) ||
        !cli_input_dir_ok(cmd, "--depth", depth_dir))
        return EXIT_USAGE;
    if (!cli_int(cmd, "--size", size_s, 14, 8400, &size) ||
        (limit_s && !cli_int(cmd, "--limit", limit_s, 1, 1000000000, &limit)) ||
        (threads_s && !cli_int(cmd, "--threads", threads_s, 0, 1024, &threads)) ||
        (batch_s && !cli_int(cmd, "--batch", batch_s, 1, 16, &batch)))
        return EXIT_USAGE;
    if ((batch_s || dtype || positions) && !model_dir)
        return cli_usage_error(cmd, "--batch, --dtype and --positions belong to --model");
    if (!cli_model_names_ok(cmd, NULL, dtype, positions)) return EXIT_USAGE;
    if (size % 14) return cli_usage_error(cmd, "--size %d: must be a multiple of 14", size);
    sa3d_sa3d_matcher_params smp = sa3d_sa3d_matcher_params_default();
    smp.input_size = size;
    smp.align.seed = (uint64_t)seed;
    smp.align.n_threads = threads;
    if (!cli_align_device(cmd, device, &smp)) return EXIT_USAGE;
    if (!sa3d && !model_dir) {   /* no network nor aligner to refuse --device cuda later: a build without it here */
        sa3d_error derr = { 0 };
        if (sa3d_align_device_check(smp.align.device, &derr)) return cli_run_error(cmd, &derr);
    }
    int set_rc = cli_param_sets_apply(cmd, &sets, &smp);
    if (set_rc >= 0) return set_rc;
    for (int k = 0; k < sets.n && !sa3d; k++) /* validated above; the baseline reads match.baseline.* alone */
        if (strcmp(sets.v[k], "list") && strncmp(sets.v[k], "match.baseline.", 15))
            return cli_usage_error(cmd, "--set %.*s: belongs to --method semalign3d (the baseline reads only "
                                   "match.baseline.*)", (int)strcspn(sets.v[k], "="), sets.v[k]);
    int adapt_flip = smp.match.baseline.adapt_flip;
    if (adapt_flip && sa3d)
        return cli_usage_error(cmd, "match.baseline.adapt_flip belongs to --method baseline (SemAlign3D scores the "
                               "mirror in its alignment: align.w_mirror)");
    if (adapt_flip == SA3D_FLIP_MASK && !strcmp(masks, "none"))
        return cli_usage_error(cmd, "match.baseline.adapt_flip=1 compares masked features: give --masks "
                               "segmentation or bbox, or use adapt_flip=2 (mutual nearest neighbours, no masks)");
    if (smp.match.lift && !depth_dir)
        return cli_usage_error(cmd, "match.lift back-projects the query with the image's pseudo depth: give --depth");
    char out_default[256];
    snprintf(out_default, sizeof out_default, "eval-%s-%s", dataset.split, method);
    if (!out) out = out_default;
    if (strlen(out) > SA3D_EVAL_MAX_DIR)
        return cli_usage_error(cmd, "--out: a name of %zu bytes (at most %d)", strlen(out), SA3D_EVAL_MAX_DIR);

    cli_install_sigint();
    sa3d_error err = { 0 };
    sa3d_dataset *ds = NULL;
    sa3d_model *m = NULL;
    sa3d_provider *fp = NULL, *dpv = NULL, *mpv = NULL;
    sa3d_baseline_matcher *bm = NULL;
    sa3d_sa3d_matcher *sm = NULL;
    sa3d_prior *priors[SA3D_N_SPAIR_CATEGORIES + 64] = { 0 };
    int n_priors = 0;
    sa3d_pck_report *rep = malloc(sizeof *rep);
    int rc = EXIT_RUN;
    char *settings = NULL;
    static prior_key keys[SA3D_N_SPAIR_CATEGORIES + 64];   /* one per prior loaded: its file's digest */
    sa3d_set_threads(threads);
    if (!rep) { snprintf(err.msg, sizeof err.msg, "out of memory"); goto done; }
    sa3d_pck_init(rep);
    rep->kind = dataset.kind;
    if (cli_dataset_open(&dataset, &ds, &err)) goto done;
    sa3d_provider_params pp = sa3d_provider_params_default();
    pp.input_size = size;
    pp.cache_dir = cache;
    pp.batch = batch;
    if (model_dir) {
        sa3d_model_params mp = sa3d_model_params_default();
        mp.n_threads = threads;
        mp.device = device;
        mp.dtype = dtype;
        mp.positions = positions;
        if (sa3d_model_open(&m, model_dir, &mp, &err) ||
            cli_model_kind_check(m, "--model", model_dir, SA3D_MODEL_DINOV2, &err))
            goto done;
        pp.kind = SA3D_SOURCE_COMPUTE;
        pp.model = m;
    } else {
        pp.kind = SA3D_SOURCE_IMPORT;
        pp.import_dir = feat_dir;
    }
    sa3d_baseline_params bp = smp.match.baseline;   /* the baseline method and the fallback of semalign3d */
    if (sa3d_feature_provider_new(&fp, ds, &pp, &err) || sa3d_baseline_matcher_new(&bm, fp, size, &bp, &err)) goto done;
    cli_progress maps;   /* the network's maps, a category's at a time: progress and Ctrl-C inside a category */
    cli_progress_start(&maps, "eval: feature maps", 0, quiet);
    if (m) sa3d_provider_set_hook(fp, cli_provider_hook, &maps);
    if (adapt_flip == SA3D_FLIP_MASK || (sa3d && strcmp(masks, "none"))) {
        sa3d_provider_params mq = sa3d_provider_params_default();
        mq.kind = strcmp(masks, "bbox") ? SA3D_SOURCE_SEGMENTATION : SA3D_SOURCE_BBOX;
        if (sa3d_mask_provider_new(&mpv, ds, &mq, &err)) goto done;
    }
    if (adapt_flip && sa3d_baseline_matcher_use_flip(bm, dataset.kind, mpv, &err)) goto done;
    if (sa3d) {   /* one prior per category of the split, providers for the aligner's mask and depth */
        for (int i = 0; i < sa3d_dataset_n_pairs(ds, dataset.split); i++) {
            const char *cat = sa3d_dataset_pair(ds, dataset.split, i)->category;
            int have = 0;
            for (int k = 0; k < n_priors; k++) have |= !strcmp(priors[k]->category, cat);
            if (have) continue;
            if (n_priors == (int)(sizeof priors / sizeof priors[0])) {
                snprintf(err.msg, sizeof err.msg, "more than %d categories", n_priors);
                goto done;
            }
            char pp_path[4200];
            snprintf(pp_path, sizeof pp_path, "%s/%s.prior.safetensors", priors_dir, cat);
            if (sa3d_prior_load(&priors[n_priors], pp_path, &err)) goto done;
            if (strcmp(priors[n_priors++]->category, cat)) {   /* a renamed file: the matcher would find no prior */
                sa3d_fail(&err, SA3D_ERR_FORMAT, "%s: a prior of category '%s', expected '%s'", pp_path,
                          priors[n_priors - 1]->category, cat);
                goto done;
            }
            /* a prior rebuilt at the same path must not resume the old one's predictions (its category's part) */
            char digest[17];
            cli_file_digest(pp_path, digest);
            snprintf(keys[n_priors - 1].cat, sizeof keys[0].cat, "%s", cat);
            snprintf(keys[n_priors - 1].key, sizeof keys[0].key, "prior %s", digest);
        }
        sa3d_provider_params dq = sa3d_provider_params_default();
        if (depth_dir) {
            dq.kind = SA3D_SOURCE_IMPORT;
            dq.import_dir = depth_dir;
            if (sa3d_depth_provider_new(&dpv, ds, &dq, &err)) goto done;
        }
        if (sa3d_sa3d_matcher_new(&sm, fp, mpv, dpv, (const sa3d_prior *const *)priors, n_priors, &smp, &err))
            goto done;
    }

    cli_progress prog;
    cli_progress_start(&prog, "eval", sa3d_dataset_n_pairs(ds, dataset.split), quiet);
    sa3d_eval_params ep = sa3d_eval_params_default();
    ep.split = dataset.split;
    ep.out_dir = out;
    ep.limit = limit;
    char head[8800];
    int hl = snprintf(head, sizeof head, "method=%s\nfeatures=%s\nsize=%d\npriors=%s\ndepth=%s\nmasks=%s\n", method,
                      feat_dir ? feat_dir : model_dir, size, priors_dir ? priors_dir : "", depth_dir ? depth_dir : "",
                      masks);
    /* What else changes the numbers: the network itself (its id: checkpoint, config and position rule) and its
     * dtype, and the GPU (TF32 products, the aligner's sums in another order). Lines only where they apply, so
     * the folders of earlier versions' CPU runs on imported features still resume (their --model folders, which
     * did not say which network, are refused) */
    if (m)
        hl += snprintf(head + hl, sizeof head - (size_t)hl, "network=%s %s\n", sa3d_model_id(m), sa3d_model_dtype(m));
    if (device && strcmp(device, "cpu")) snprintf(head + hl, sizeof head - (size_t)hl, "device=%s\n", device);
    if (!(settings = cli_settings_text(head, &smp))) { snprintf(err.msg, sizeof err.msg, "out of memory"); goto done; }
    ep.settings = settings;
    ep.match_batch = sa3d ? NULL : sa3d_baseline_matcher_match_batch;   /* baseline: grouped by target image */
    ep.progress = cli_eval_progress;
    ep.progress_user = &prog;
    part_keys pk = { .priors = keys, .n_priors = n_priors, .ds = ds, .split = dataset.split, .features = fp,
                     .depth = dpv, .masks = mpv };
    ep.part_key = part_key_of;
    ep.part_key_user = &pk;
    long resumed = 0;
    sa3d_status s = sa3d ? sa3d_eval_run(ds, &ep, sa3d_sa3d_matcher_match, sm, rep, &resumed, &err)
                         : sa3d_eval_run(ds, &ep, sa3d_baseline_matcher_match, bm, rep, &resumed, &err);
    cli_progress_end(&prog);
    if (s) goto done;
    char title[2048], skipped_str[16], skipped_note[80], options[1024] = "";
    cli_skipped_records(ds, dataset.split, "; ", skipped_str, skipped_note);
    for (int k = 0; k < sets.n; k++) {   /* the protocol in the title: GeoAware's flip and window, ... */
        size_t used = strlen(options);
        snprintf(options + used, sizeof options - used, "%s%s", used ? ", " : " (", sets.v[k]);
    }
    if (options[0]) snprintf(options + strlen(options), sizeof options - strlen(options), ")");
    snprintf(title, sizeof title, "semalign3d eval: method %s%s, %s split %s%s%s, %ld pairs (%ld resumed from "
             "%s/parts)%s", method, options, dataset.root, dataset.split, dataset.categories ? ", categories " : "",
             dataset.categories ? dataset.categories : "", rep->overall.pairs + rep->skipped_empty, resumed, out,
             skipped_note);
    char *text = sa3d_pck_format(rep, title);
    if (!text) { snprintf(err.msg, sizeof err.msg, "out of memory"); goto done; }
    fputs(text, stdout);
    free(text);
    char path[4200], size_str[16], limit_str[16];
    snprintf(path, sizeof path, "%s/report.json", out);
    snprintf(size_str, sizeof size_str, "%d", size);
    snprintf(limit_str, sizeof limit_str, "%d", limit);
    const char *meta[] = { "method", method, "dataset", dataset.root, "kind", dataset.kind_s,
                           "split", dataset.split, "features", feat_dir ? feat_dir : "computed",
                           "model", model_dir ? model_dir : "-", "input_size", size_str,
                           "limit_per_category", limit_str, "skipped_records", skipped_str,
                           "categories", dataset.categories ? dataset.categories : "all",
                           "settings", settings, NULL };   /* parts/settings.txt: every option and input */
    if (sa3d_pck_write_json(rep, path, meta, &err)) goto done;
    sa3d_provider_stats st = sa3d_provider_get_stats(fp);
    if (adapt_flip) {
        sa3d_baseline_batch_stats bs = sa3d_baseline_matcher_batch_stats(bm);
        fprintf(stderr, "adaptive flip (%s): the mirrored source was closer in %ld of %ld pairs matched in this run\n",
                adapt_flip == SA3D_FLIP_MASK ? "masked distance" : "mutual nearest neighbours", bs.flipped,
                bs.flip_pairs);
    }
    fprintf(stderr, "wrote %s/predictions.jsonl and %s (features: %ld computed or imported, %ld from cache, %ld stale "
            "cache entries replaced)\n", out, path, st.computed, st.cache_hits, st.rejected);
    rc = EXIT_OK;
done:
    if (rc != EXIT_OK) rc = cli_run_error(cmd, &err);
    free(rep);
    free(settings);
    sa3d_sa3d_matcher_free(sm);
    for (int k = 0; k < n_priors; k++) sa3d_prior_free(priors[k]);
    sa3d_baseline_matcher_free(bm);
    sa3d_provider_free(fp);
    sa3d_provider_free(dpv);
    sa3d_provider_free(mpv);
    sa3d_model_free(m);
    sa3d_dataset_close(ds);
    return rc;
}
