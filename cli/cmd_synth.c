/* semalign3d synth-spair: writes a small synthetic dataset in the exact SPair-71k layout, with feature files
 * built so that the correct matches are known (for trying eval/pck without downloads, and for tests). */
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "semalign3d/synth.h"

static void help(void) {
    printf("usage: semalign3d synth-spair --out DIR [options]\n\n"
           "Writes JPEGImages/, Segmentation/, ImageAnnotation/, PairAnnotation/{trn,val,test}/, Layout/large/ and\n"
           "Features/<category>/<id>.features.safetensors into DIR (new or empty), and last synth_params.json (the\n"
           "settings; its presence marks a complete dataset). See include/semalign3d/synth.h.\n\n"
           "options:\n"
           "  --out DIR          output root\n"
           "  --seed N           random seed (default 0); the same seed gives byte-identical files\n"
           "  --categories N     number of categories, 1..18 (default 2)\n"
           "  --images N         images per category (default 6)\n"
           "  --pairs-test N     test pairs over all categories (default 8); every distinct pair of a split's\n"
           "                     images is drawn once before any repeats\n"
           "example:\n"
           "  semalign3d synth-spair --out synth && semalign3d eval --dataset synth --features synth/Features\n");
}

int cmd_synth(int argc, char **argv) {
    const char *cmd = "synth-spair", *out = NULL, *seed_s = NULL, *cats_s = NULL, *imgs_s = NULL, *pairs_s = NULL;
    for (int i = 1; i < argc; i++) {
        int r;
        if (cli_flag(argv, i, "-h") || cli_flag(argv, i, "--help")) { help(); return EXIT_OK; }
        if ((r = cli_opt(cmd, argc, argv, &i, "--out", &out)) || (r = cli_opt(cmd, argc, argv, &i, "--seed", &seed_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--categories", &cats_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--images", &imgs_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--pairs-test", &pairs_s))) {
            if (r < 0) return EXIT_USAGE;
            continue;
        }
        return cli_usage_error(cmd, "unknown argument '%s'", argv[i]);
    }
    if (!out) return cli_usage_error(cmd, "--out is required");
    sa3d_synth_spair_params p = sa3d_synth_spair_params_default();
    int seed = 0;
    if ((seed_s && !cli_int(cmd, "--seed", seed_s, 0, 2147483647, &seed)) ||
        (cats_s && !cli_int(cmd, "--categories", cats_s, 1, 18, &p.n_categories)) ||
        (imgs_s && !cli_int(cmd, "--images", imgs_s, 2, 100000, &p.images_per_category)) ||
        (pairs_s && !cli_int(cmd, "--pairs-test", pairs_s, 0, 999999, &p.pairs_test)))
        return EXIT_USAGE;
    p.seed = (uint64_t)seed;
    p.cancel = cli_cancel_requested;   /* Ctrl-C: the staging folder is removed, nothing is left */
    cli_install_sigint();
    sa3d_error err = { 0 };
    if (sa3d_synth_spair_write(out, &p, &err)) return cli_run_error(cmd, &err);
    fprintf(stderr, "wrote a synthetic SPair-layout dataset to %s\n", out);
    return EXIT_OK;
}
