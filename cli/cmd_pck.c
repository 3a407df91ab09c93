/* semalign3d pck: scores a predictions file made by anyone against a dataset split (eval.h) and prints the
 * labelled PCK table; --json writes the same numbers. */
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "semalign3d/data.h"
#include "semalign3d/eval.h"

static void help(void) {
    printf("usage: semalign3d pck --dataset DIR --predictions FILE.jsonl [options]\n\n"
           "Scores predictions against the ground truth of a split. One JSON object per line:\n"
           "  {\"pair\": \"<PairAnnotation file name without .json>\", \"trg_kps\": [[x, y], ...]}\n"
           "with one point per entry of the pair's src_kps, in the same order, in original target pixels.\n"
           "A keypoint is correct when its distance to the truth is < alpha x max(w, h) of the target bbox\n"
           "(PF-PASCAL: alpha x max(W, H) of the target image).\n"
           "Prints per-category and overall PCK at alpha 0.10, 0.05, 0.01 (PF-PASCAL: 0.10, 0.05, 0.15, as the\n"
           "field reports it): per-image and per-keypoint, and\n"
           "\"All\" both as the category mean and pair-weighted, plus the split by difficulty flags.\n\n"
           "options:\n"
           "  --dataset DIR        SPair-71k root (official layout)\n"
           "  --kind KIND          dataset layout: spair (default), pfpascal (PF-PASCAL; PCK threshold alpha x\n"
           "                       max(W, H) of the target image) or ap10k (AP-10K, GeoAware-SC's pair benchmark)\n"
           "  --split NAME         trn, val or test (default test); AP-10K: any folder of PairAnnotation/\n"
           "  --predictions FILE   the JSON-lines predictions\n"
           "  --json FILE          also write the report as JSON (atomically)\n"
           "  --allow-missing      score only the predicted pairs (the report says how many are missing)\n"
           "  --categories LIST    comma-separated subset of categories (lines for pairs of the others are counted and\n"
           "                       skipped, so a whole split's predictions score against the subset)\n"
           "  --strict             malformed annotation records are errors (default: skipped with a warning)\n"
           "example:\n"
           "  semalign3d pck --dataset SPair-71k --split test --predictions preds.jsonl --json report.json\n");
}

int cmd_pck(int argc, char **argv) {
    const char *cmd = "pck", *preds = NULL, *json = NULL;
    cli_dataset_opts dataset = cli_dataset_opts_default();
    int allow_missing = 0;
    for (int i = 1; i < argc; i++) {
        int r;
        if (cli_flag(argv, i, "-h") || cli_flag(argv, i, "--help")) { help(); return EXIT_OK; }
        if (cli_flag(argv, i, "--allow-missing")) { allow_missing = 1; continue; }
        if ((r = cli_dataset_arg(cmd, argc, argv, &i, &dataset)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--predictions", &preds)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--json", &json))) {
            if (r < 0) return EXIT_USAGE;
            continue;
        }
        return cli_usage_error(cmd, "unknown argument '%s'", argv[i]);
    }
    if (!dataset.root || !preds) return cli_usage_error(cmd, "--dataset and --predictions are required");
    if (!cli_dataset_check(cmd, &dataset) || !cli_output_file_ok(cmd, "--json", json)) return EXIT_USAGE;

    sa3d_error err = { 0 };
    sa3d_dataset *ds = NULL;
    sa3d_pck_report *rep = malloc(sizeof *rep);
    int rc = EXIT_RUN;
    long missing = 0;
    if (!rep) { snprintf(err.msg, sizeof err.msg, "out of memory"); goto done; }
    sa3d_pck_init(rep);
    rep->kind = dataset.kind;
    if (cli_dataset_open(&dataset, &ds, &err)) goto done;
    if (sa3d_pck_score_file(rep, ds, dataset.split, preds, allow_missing, &missing, &err)) goto done;
    char title[1024], skipped_str[16], skipped_note[80], other_str[24];
    cli_skipped_records(ds, dataset.split, ", ", skipped_str, skipped_note);
    snprintf(other_str, sizeof other_str, "%ld", rep->other_categories);
    snprintf(title, sizeof title, "PCK of %s on %s split %s%s%s (%ld pairs scored, %ld missing%s)", preds,
             dataset.root, dataset.split, dataset.categories ? ", categories " : "",
             dataset.categories ? dataset.categories : "", rep->overall.pairs + rep->skipped_empty, missing,
             skipped_note);
    char *text = sa3d_pck_format(rep, title);
    if (!text) { snprintf(err.msg, sizeof err.msg, "out of memory"); goto done; }
    fputs(text, stdout);
    free(text);
    if (json) {
        char miss[32];
        snprintf(miss, sizeof miss, "%ld", missing);
        const char *meta[] = { "dataset", dataset.root, "kind", dataset.kind_s, "split", dataset.split,
                               "predictions", preds, "missing_pairs", miss, "skipped_records", skipped_str,
                               "other_category_pairs", other_str, "categories", dataset.categories ? dataset.categories
                               : "all", NULL };
        if (sa3d_pck_write_json(rep, json, meta, &err)) goto done;
    }
    rc = EXIT_OK;
done:
    if (rc != EXIT_OK) rc = cli_run_error(cmd, &err);
    free(rep);
    sa3d_dataset_close(ds);
    return rc;
}
