/* semalign3d synth3d: writes the ground-truth 3D benchmark (articulated objects rendered from all around, SPair
 * layout, features and depth built with the real ones' failure modes, the answer per image in GroundTruth/). */
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "semalign3d/synth3d.h"

static void help(void) {
    printf("usage: semalign3d synth3d --out DIR [options]\n\n"
           "Writes JPEGImages/, Segmentation/, ImageAnnotation/, PairAnnotation/{trn,val,test}/, Layout/large/,\n"
           "Features/<category>/<id>.features.safetensors, Depth/<category>/<id>.depth.safetensors and\n"
           "GroundTruth/<category>/<id>.json into DIR (new or empty), and last synth_params.json (the settings; its\n"
           "presence marks a complete dataset). See include/semalign3d/synth3d.h.\n\n"
           "options:\n"
           "  --out DIR               output root\n"
           "  --seed N                random seed (default 0); the same seed gives byte-identical files\n"
           "  --difficulty LEVEL      easy | medium | hard (default medium): feature noise, chirality, view\n"
           "                          dependence, shape and pose variation, elevation spread, depth noise\n"
           "  --categories N          1 (dog) or 2 (dog, horse) (default 1)\n"
           "  --images N              images per category, 12..1000 (default 60)\n"
           "  --pairs-trn N, --pairs-val N, --pairs-test N   pairs per split over all categories\n"
           "                          (default 150, 30, 200); every distinct pair of a split's images is\n"
           "                          drawn once before any repeats\n"
           "  --channels N            feature channels, 4..4096 (default 64)\n"
           "  --min-side N, --max-side N   image width and height range in pixels (default 192, 256)\n"
           "  --threads N             worker threads (default 0 = all cores); output does not depend on it\n"
           "example:\n"
           "  semalign3d synth3d --out s3 && semalign3d eval --dataset s3 --features s3/Features\n");
}

int cmd_synth3d(int argc, char **argv) {
    const char *cmd = "synth3d", *out = NULL, *seed_s = NULL, *diff_s = NULL, *cats_s = NULL, *imgs_s = NULL,
               *trn_s = NULL, *val_s = NULL, *test_s = NULL, *ch_s = NULL, *min_s = NULL, *max_s = NULL,
               *thr_s = NULL;
    for (int i = 1; i < argc; i++) {
        int r;
        if (cli_flag(argv, i, "-h") || cli_flag(argv, i, "--help")) { help(); return EXIT_OK; }
        if ((r = cli_opt(cmd, argc, argv, &i, "--out", &out)) || (r = cli_opt(cmd, argc, argv, &i, "--seed", &seed_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--difficulty", &diff_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--categories", &cats_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--images", &imgs_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--pairs-trn", &trn_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--pairs-val", &val_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--pairs-test", &test_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--channels", &ch_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--min-side", &min_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--max-side", &max_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--threads", &thr_s))) {
            if (r < 0) return EXIT_USAGE;
            continue;
        }
        return cli_usage_error(cmd, "unknown argument '%s'", argv[i]);
    }
    if (!out) return cli_usage_error(cmd, "--out is required");
    int difficulty = SA3D_SYNTH3D_MEDIUM;
    if (diff_s && (difficulty = sa3d_synth3d_difficulty_parse(diff_s)) < 0)
        return cli_usage_error(cmd, "--difficulty '%s': expected easy, medium or hard", diff_s);
    sa3d_synth3d_params p = sa3d_synth3d_params_default(difficulty);
    int seed = 0;
    if ((seed_s && !cli_int(cmd, "--seed", seed_s, 0, 2147483647, &seed)) ||
        (cats_s && !cli_int(cmd, "--categories", cats_s, 1, SA3D_SYNTH3D_N_CATEGORIES, &p.n_categories)) ||
        (imgs_s && !cli_int(cmd, "--images", imgs_s, 12, 1000, &p.images_per_category)) ||
        (trn_s && !cli_int(cmd, "--pairs-trn", trn_s, 0, 999999, &p.pairs_trn)) ||
        (val_s && !cli_int(cmd, "--pairs-val", val_s, 0, 999999, &p.pairs_val)) ||
        (test_s && !cli_int(cmd, "--pairs-test", test_s, 0, 999999, &p.pairs_test)) ||
        (ch_s && !cli_int(cmd, "--channels", ch_s, 4, 4096, &p.feature_channels)) ||
        (min_s && !cli_int(cmd, "--min-side", min_s, 64, 2048, &p.min_side)) ||
        (max_s && !cli_int(cmd, "--max-side", max_s, 64, 2048, &p.max_side)) ||
        (thr_s && !cli_int(cmd, "--threads", thr_s, 0, 4096, &p.n_threads)))
        return EXIT_USAGE;
    if (p.max_side < p.min_side) {
        if (!max_s) p.max_side = p.min_side;
        else if (!min_s) p.min_side = p.max_side;
        else return cli_usage_error(cmd, "--min-side %d is above --max-side %d", p.min_side, p.max_side);
    }
    p.seed = (uint64_t)seed;
    p.cancel = cli_cancel_requested;   /* Ctrl-C: the staging folder is removed, nothing is left */
    cli_install_sigint();
    sa3d_error err = { 0 };
    if (sa3d_synth3d_write(out, &p, &err)) return cli_run_error(cmd, &err);
    fprintf(stderr, "wrote a synthetic 3D benchmark (%d images, %d/%d/%d pairs) to %s\n",
            p.n_categories * p.images_per_category, p.pairs_trn, p.pairs_val, p.pairs_test, out);
    return EXIT_OK;
}
