/* Benchmark of the requirement: with features cached, baseline matching + scoring of the full SPair test
 * split (12,234 pairs, about 100k keypoints) in under 60 s on 2 cores. Measured on a synthetic split of that
 * size (sa3d_synth_spair_write: 18 categories, 12,234 test pairs, ~8 keypoints a pair, C = 768, g = 60 float32
 * features as GeoAware's) whose features make the answer known, so the run also checks PCK@0.1 = 100%.
 *
 * Disk: one 768 x 60 x 60 float32 map is 11.06 MB, so the ~1,800 images of SPair would need 20 GB. The split is
 * generated with --images per category (default 25: 450 files, 5 GB) and the 12,234 pairs are drawn among them.
 * The matching and scoring cost does not depend on how many distinct images there are (one GEMM and one
 * soft-argmax per keypoint); the feature loading does, so it is reported per file and also projected to 100
 * images per category (1,800 files, all SPair images: an upper bound for the test split's images).
 *
 * Stages, timed separately (wall clock): annotations (open + load the split's JSON records), load features
 * (import provider: safetensors read, float32, L2-normalised; per category, kept in memory while its pairs
 * run), match (sa3d_match_baseline per pair), pck (sa3d_pck_add per pair), report (finish + format). Then the
 * same through sa3d_eval_run + sa3d_baseline_matcher (the `eval` command's path, with its per-category part
 * files and predictions.jsonl) end to end. With --cold each feature file is dropped from the page cache first
 * (posix_fadvise DONTNEED), so the load stage reads the disk; otherwise the files written moments before are
 * normally still cached (warm). */
#define _XOPEN_SOURCE 700
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "base/base.h"
#include "semalign3d/data.h"
#include "semalign3d/eval.h"
#include "semalign3d/match.h"
#include "semalign3d/providers.h"
#include "semalign3d/synth.h"

char *openblas_get_config(void);   /* from OpenBLAS; declared here to keep cblas.h out */

static void usage(FILE *f) {
    fprintf(f, "usage: bench_eval [options]\n\n"
               "Times baseline matching + PCK of a synthetic SPair-71k test split with cached (imported) features.\n\n"
               "options:\n"
               "  --tiny          2 categories, 6 images each, 40 pairs, C = 32 (the ctest smoke run)\n"
               "  --pairs N       test pairs (default 12234)\n"
               "  --categories N  SPair categories, 1..18 (default 18)\n"
               "  --images N      images per category on disk (default 25; 100 = SPair's 1,800 images, 20 GB)\n"
               "  --channels C    feature channels (default 768)\n"
               "  --visible P     keypoint visibility probability (default 0.68: ~8 keypoints a pair)\n"
               "  --threads N     threads (default 2; 0 = all cores)\n"
               "  --seed N        generator seed (default 0)\n"
               "  --dir DIR       dataset folder: reused when its synth_params.json matches, else generated\n"
               "                  (DIR must then be new or empty); default: a temporary folder, removed at the end\n"
               "  --repeat N      run the stages N times and report each stage's best (default 1)\n"
               "  --cold          drop each feature file from the page cache before loading (one run)\n"
               "  --paths LIST    pair,batch (default), batch,pair, pair or batch: the per-pair path (provider maps per\n"
               "                  category + sa3d_match_baseline per pair) and/or the batched path\n"
               "                  (sa3d_baseline_matcher_match_batch per category), in this order in each run\n"
               "  --no-e2e        skip the sa3d_eval_run end-to-end measurement\n");
}

static const char *fmt_s(char *buf, double x) {
    snprintf(buf, 32, "%.3f", x);
    return buf;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

static int parse_long(const char *opt, const char *v, long lo, long hi, long *out) {
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || x < lo || x > hi) {
        fprintf(stderr, "bench_eval: %s %s: expected an integer in [%ld, %ld]\n", opt, v ? v : "(missing)", lo, hi);
        return 0;
    }
    *out = x;
    return 1;
}

static void cpu_name(char *buf, size_t n) {
    snprintf(buf, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            snprintf(buf, n, "%s", strchr(line, ':') + 2);
            buf[strcspn(buf, "\n")] = '\0';
            break;
        }
    if (f) fclose(f);
}

/* 1: a dataset generated with exactly these parameters is there; 0: root is new or empty; -1: something else. */
static int dataset_state(const char *root, const sa3d_synth_spair_params *p) {
    char path[4096];
    snprintf(path, sizeof path, "%s/synth_params.json", root);
    if (sa3d_file_exists(path)) {
        char *want = sa3d_synth_spair_params_json(p), *have = NULL;
        size_t len;
        int same = want && sa3d_read_file(path, 1 << 20, &have, &len, NULL) == SA3D_OK && !strcmp(want, have);
        free(want);
        sa3d_free(have);
        return same ? 1 : -1;
    }
    return 0;
}

typedef struct stage_times { double annotations, load, match, pck, report; } stage_times;

/* One pass over the split, category by category: load its test images' features (kept in memory), match every
 * pair, score; adds the wall time of each stage to st. r is reset first. */
static sa3d_status run_stages(sa3d_dataset *ds, sa3d_provider *fp, const sa3d_synth_spair_params *sp,
                              const sa3d_baseline_params *bp, sa3d_map *maps, float (*preds)[SA3D_MAX_KPS][2],
                              float *work, stage_times *st, sa3d_pck_report *r, long *keypoints_out, long *files_out,
                              sa3d_error *err) {
    int n = sa3d_dataset_n_pairs(ds, "test");
    long keypoints = 0, files = 0;
    sa3d_status s = SA3D_OK;
    sa3d_pck_init(r);
    for (int c = 0; c < sp->n_categories && !s; c++) {
        const char *cat = sa3d_spair_category(c);
        const char *const *ids;
        double t = sa3d_now();
        int ni = sa3d_dataset_split_images(ds, "test", cat, &ids, err);
        if (ni < 0) return err->code;
        for (int i = 0; i < ni && !s; i++) s = sa3d_provider_get(fp, cat, ids[i], 0, &maps[i], err);
        files += ni;
        st->load += sa3d_now() - t;
        t = sa3d_now();
        for (int i = 0; i < n && !s; i++) {
            const sa3d_pair *pr = sa3d_dataset_pair(ds, "test", i);
            if (strcmp(pr->category, cat)) continue;
            int a = -1, b = -1;
            for (int j = 0; j < ni && (a < 0 || b < 0); j++) {
                if (!strcmp(ids[j], pr->src)) a = j;
                if (!strcmp(ids[j], pr->trg)) b = j;
            }
            if (a < 0 || b < 0) {
                s = sa3d_fail(err, SA3D_ERR_ARG, "%s: image not in the split's list", pr->id);
                break;
            }
            sa3d_feature_map fs = { maps[a].c, maps[a].h, maps[a].data, pr->src_size[0], pr->src_size[1], sp->input_size };
            sa3d_feature_map ft = { maps[b].c, maps[b].h, maps[b].data, pr->trg_size[0], pr->trg_size[1], sp->input_size };
            s = sa3d_match_baseline(&fs, &ft, (const float (*)[2])pr->src_kps, pr->n_kps, bp, preds[i], work, err);
            keypoints += pr->n_kps;
        }
        st->match += sa3d_now() - t;
        t = sa3d_now();
        for (int i = 0; i < n && !s; i++) {
            const sa3d_pair *pr = sa3d_dataset_pair(ds, "test", i);
            if (!strcmp(pr->category, cat)) s = sa3d_pck_add(r, pr, (const float (*)[2])preds[i], err);
        }
        st->pck += sa3d_now() - t;
        for (int i = 0; i < ni; i++) {
            free(maps[i].data);
            maps[i].data = NULL;
        }
    }
    *keypoints_out = keypoints;
    *files_out = files;
    return s;
}

/* The batched path (sa3d_baseline_matcher_match_batch): per category, every image loaded once (in parallel),
 * one similarity product per target image; then the same scoring. Load and match times come from the
 * matcher's own counters (loading includes the query gather). */
static sa3d_status run_batch(sa3d_dataset *ds, sa3d_provider *fp, const sa3d_synth_spair_params *sp,
                             const sa3d_baseline_params *bp, float (*preds)[SA3D_MAX_KPS][2], stage_times *st,
                             sa3d_pck_report *r, long *loads_out, sa3d_error *err) {
    int n = sa3d_dataset_n_pairs(ds, "test");
    const sa3d_pair **prs = sa3d_malloc((size_t)n * sizeof *prs);
    int *idx = sa3d_malloc((size_t)n * sizeof *idx);
    sa3d_baseline_matcher *bm = NULL;
    sa3d_status s = SA3D_OK;
    if (!prs || !idx) { s = sa3d_fail(err, SA3D_ERR_NOMEM, "out of memory"); goto out; }
    if ((s = sa3d_baseline_matcher_new(&bm, fp, sp->input_size, bp, err))) goto out;
    sa3d_pck_init(r);
    for (int c = 0; c < sp->n_categories && !s; c++) {
        const char *cat = sa3d_spair_category(c);
        int m = 0;
        for (int i = 0; i < n; i++)
            if (!strcmp(sa3d_dataset_pair(ds, "test", i)->category, cat)) { idx[m] = i; prs[m++] = sa3d_dataset_pair(ds, "test", i); }
        float (*pc)[SA3D_MAX_KPS][2] = preds + (m ? idx[0] : 0);   /* a category's pairs are contiguous (sorted ids) */
        for (int j = 0; j < m && !s; j++)
            if (idx[j] != idx[0] + j) s = sa3d_fail(err, SA3D_ERR_ARG, "%s: pairs of a category not contiguous", cat);
        if (!s && m) s = sa3d_baseline_matcher_match_batch(bm, prs, m, pc, err);
        double t = sa3d_now();
        for (int j = 0; j < m && !s; j++) s = sa3d_pck_add(r, prs[j], (const float (*)[2])pc[j], err);
        st->pck += sa3d_now() - t;
    }
    sa3d_baseline_batch_stats bs = sa3d_baseline_matcher_batch_stats(bm);
    st->load += bs.load_s;
    st->match += bs.match_s;
    *loads_out = bs.maps_loaded;
out:
    sa3d_baseline_matcher_free(bm);
    sa3d_free(prs);
    sa3d_free(idx);
    return s;
}

int main(int argc, char **argv) {
    sa3d_synth_spair_params sp = sa3d_synth_spair_params_default();
    sp.n_categories = 18;
    sp.images_per_category = 25;
    sp.pairs_trn = sp.pairs_val = 0;
    sp.pairs_test = 12234;
    sp.feature_channels = 768;
    sp.kp_visible = 0.68f;
    sp.min_side = 240;   /* SPair images are up to 500 px a side; the size does not change the cost */
    sp.max_side = 500;
    sp.write_images = sp.write_segmentations = sp.write_flip_features = 0;
    long threads = 2, v;
    const char *dir = NULL;
    int cold = 0, e2e = 1, tiny = 0, repeat = 1, run_old = 1, run_new = 1, batch_first = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--tiny")) tiny = 1;
        else if (!strcmp(a, "--cold")) cold = 1;
        else if (!strcmp(a, "--no-e2e")) e2e = 0;
        else if (!strcmp(a, "--paths") && val) {
            if (!strcmp(val, "pair,batch")) run_old = run_new = 1, batch_first = 0;
            else if (!strcmp(val, "batch,pair")) run_old = run_new = 1, batch_first = 1;
            else if (!strcmp(val, "pair")) run_old = 1, run_new = 0;
            else if (!strcmp(val, "batch")) run_old = 0, run_new = 1;
            else { fprintf(stderr, "bench_eval: --paths %s: expected pair,batch | batch,pair | pair | batch\n", val); return 2; }
            i++;
        }
        else if (!strcmp(a, "--dir") && val) { dir = val; i++; }
        else if (!strcmp(a, "--pairs")) { if (!parse_long(a, val, 1, 999999, &v)) return 2; sp.pairs_test = (int)v; i++; }
        else if (!strcmp(a, "--categories")) { if (!parse_long(a, val, 1, 18, &v)) return 2; sp.n_categories = (int)v; i++; }
        else if (!strcmp(a, "--images")) { if (!parse_long(a, val, 2, 1000, &v)) return 2; sp.images_per_category = (int)v; i++; }
        else if (!strcmp(a, "--channels")) { if (!parse_long(a, val, 1, 4096, &v)) return 2; sp.feature_channels = (int)v; i++; }
        else if (!strcmp(a, "--visible")) {
            char *end;
            double x = val ? strtod(val, &end) : 0.0;
            if (!val || *end || !(x > 0.0 && x <= 1.0)) {
                fprintf(stderr, "bench_eval: --visible %s: expected a probability in (0, 1]\n", val ? val : "(missing)");
                return 2;
            }
            sp.kp_visible = (float)x;
            i++;
        }
        else if (!strcmp(a, "--repeat")) { if (!parse_long(a, val, 1, 100, &v)) return 2; repeat = (int)v; i++; }
        else if (!strcmp(a, "--threads")) { if (!parse_long(a, val, 0, 1024, &threads)) return 2; i++; }
        else if (!strcmp(a, "--seed")) { if (!parse_long(a, val, 0, 2147483647L, &v)) return 2; sp.seed = (uint64_t)v; i++; }
        else { fprintf(stderr, "bench_eval: unknown option '%s'\nTry 'bench_eval --help'.\n", a); return 2; }
    }
    if (cold && repeat > 1) {
        fprintf(stderr, "bench_eval: --cold measures one run; it cannot be combined with --repeat\nTry 'bench_eval --help'.\n");
        return 2;
    }
    if (tiny) {
        sp.n_categories = 2;
        sp.images_per_category = 6;
        sp.pairs_test = 40;
        sp.feature_channels = 32;
        sp.min_side = 160;
        sp.max_side = 320;
    }
    sp.n_threads = (int)threads;
    int nt = sa3d_set_threads((int)threads);

    char cpu[256], tmp[512] = "", out_dir[600] = "";
    cpu_name(cpu, sizeof cpu);
    const char *blas = openblas_get_config();
    printf("bench_eval: semalign3d %s | %s | %d threads | BLAS %s\n", sa3d_version(), cpu, nt, blas ? blas : "?");
    printf("split: %d categories, %d images each on disk, %d test pairs; features C = %d, g = %d, input %d, float32\n",
           sp.n_categories, sp.images_per_category, sp.pairs_test, sp.feature_channels, sp.feature_grid, sp.input_size);

    sa3d_error err = { 0 };
    int rc = 1;
    sa3d_dataset *ds = NULL;
    sa3d_provider *fp = NULL;
    sa3d_baseline_matcher *bm = NULL;
    float *work = NULL, (*preds)[SA3D_MAX_KPS][2] = NULL, (*predb)[SA3D_MAX_KPS][2] = NULL;
    sa3d_map *maps = NULL;
    if (!dir) {
        const char *t = getenv("TMPDIR");
        snprintf(tmp, sizeof tmp, "%s/sa3d_bench_eval_XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(tmp)) { fprintf(stderr, "bench_eval: cannot create %s\n", tmp); return 1; }
        dir = tmp;
    }
    int state = dataset_state(dir, &sp);
    if (state < 0) {
        fprintf(stderr, "bench_eval: %s holds a dataset with other parameters (synth_params.json); use another --dir\n", dir);
        goto done;
    }
    if (state == 0) {
        double t0 = sa3d_now();
        if (sa3d_synth_spair_write(dir, &sp, &err)) goto fail;
        printf("generate: %.1f s (%s)\n", sa3d_now() - t0, dir);
    } else {
        printf("generate: reusing %s\n", dir);
    }

    stage_times st = { 0 };
    double t0 = sa3d_now();
    sa3d_dataset_params dp = sa3d_dataset_params_default();
    dp.strict = 1;
    if (sa3d_dataset_open(&ds, dir, &dp, &err)) goto fail;
    int n = sa3d_dataset_load_split(ds, "test", &err);
    if (n < 0) goto fail;
    st.annotations = sa3d_now() - t0;

    char fdir[4200];
    snprintf(fdir, sizeof fdir, "%s/Features", dir);
    sa3d_provider_params pp = sa3d_provider_params_default();
    pp.kind = SA3D_SOURCE_IMPORT;
    pp.import_dir = fdir;
    pp.input_size = sp.input_size;
    if (sa3d_feature_provider_new(&fp, ds, &pp, &err)) goto fail;
    sa3d_baseline_params bp = sa3d_baseline_params_default();
    work = sa3d_malloc(sa3d_baseline_work_floats(sp.feature_channels, sp.feature_grid, SA3D_MAX_KPS) * sizeof(float));
    preds = sa3d_malloc((size_t)n * sizeof *preds);
    predb = sa3d_malloc((size_t)n * sizeof *predb);
    maps = sa3d_calloc((size_t)sp.images_per_category, sizeof *maps);
    if (!work || !preds || !predb || !maps) { sa3d_fail(&err, SA3D_ERR_NOMEM, "out of memory"); goto fail; }
    if (cold)   /* every test image's feature file out of the page cache (its pages are clean: written + fsync) */
        for (int c = 0; c < sp.n_categories; c++) {
            const char *const *ids;
            int ni = sa3d_dataset_split_images(ds, "test", sa3d_spair_category(c), &ids, &err);
            for (int i = 0; i < ni; i++) {
                char path[4400];
                snprintf(path, sizeof path, "%s/%s/%s.features.safetensors", fdir, sa3d_spair_category(c), ids[i]);
                int fd = open(path, O_RDONLY);
                if (fd >= 0) {
                    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
                    close(fd);
                }
            }
        }

    /* old (per pair) and new (batched) paths alternate within each repetition, so both see the same machine */
    sa3d_pck_report r, rb;
    long keypoints = 0, files = 0, loads = 0;
    stage_times best = st, bestb = st;
    int identical = -1;
    for (int rep = 0; rep < repeat; rep++) {
        for (int k = 0; k < 2; k++) {
            int batch = k == 0 ? batch_first : !batch_first;
            if (batch ? !run_new : !run_old) continue;
            stage_times t = { st.annotations, 0, 0, 0, 0 };
            if (batch) {
                if (run_batch(ds, fp, &sp, &bp, predb, &t, &rb, &loads, &err)) goto fail;
            } else if (run_stages(ds, fp, &sp, &bp, maps, preds, work, &t, &r, &keypoints, &files, &err)) {
                goto fail;
            }
            stage_times *bt = batch ? &bestb : &best;
            if (repeat > 1)
                fprintf(stderr, "run %d, %s path: load %.3f s, match %.3f s, pck %.3f s\n", rep + 1,
                        batch ? "batched" : "per-pair", t.load, t.match, t.pck);
            if (rep == 0 || t.load + t.match + t.pck < bt->load + bt->match + bt->pck) *bt = t;
        }
    }
    if (run_old && run_new) {   /* the two paths' predictions, byte for byte */
        identical = 1;
        for (int i = 0; i < n && identical; i++)
            identical = !memcmp(preds[i], predb[i], (size_t)sa3d_dataset_pair(ds, "test", i)->n_kps * sizeof preds[i][0]);
    }
    if (!run_old) r = rb;
    for (int i = 0; !run_old && i < n; i++) keypoints += sa3d_dataset_pair(ds, "test", i)->n_kps;
    if (!run_old) for (int c = 0; c < sp.n_categories; c++) {
        const char *const *ids;
        int ni = sa3d_dataset_split_images(ds, "test", sa3d_spair_category(c), &ids, &err);
        files += ni > 0 ? ni : 0;
    }
    t0 = sa3d_now();
    sa3d_pck_finish(&r);
    sa3d_pck_finish(&rb);
    char *table = sa3d_pck_format(&r, "PCK of the baseline on the synthetic split (known answer: 100)");
    st.report = best.report = bestb.report = sa3d_now() - t0;
    if (table) fputs(table, stdout);
    free(table);
    double pck = sa3d_pck_per_image(&r.overall, 0);
    double tot_old = best.annotations + best.load + best.match + best.pck + best.report;
    double tot_new = bestb.annotations + bestb.load + bestb.match + bestb.pck + bestb.report;
    printf("\n%d pairs, %ld keypoints (%.2f a pair), %ld distinct feature files, %d threads, %s page cache; best of %d "
           "run%s, the two paths alternating\n", n, keypoints, n ? (double)keypoints / n : 0.0, files, nt,
           cold ? "cold (first path to run only)" : "warm", repeat, repeat > 1 ? "s" : "");
    printf("%-34s %14s %14s\n", "stage (wall s)", "per-pair path", "batched path");
    #define ROW(name, a, b) printf("%-34s %14s %14s\n", name, run_old ? fmt_s(bo, a) : "-", run_new ? fmt_s(bn, b) : "-")
    char bo[32], bn[32];
    ROW("annotations (open + load split)", best.annotations, bestb.annotations);
    ROW("load features", best.load, bestb.load);
    ROW("match", best.match, bestb.match);
    ROW("score (sa3d_pck_add)", best.pck, bestb.pck);
    ROW("report (finish + format)", best.report, bestb.report);
    ROW("total", tot_old, tot_new);
    #undef ROW
    if (run_old) printf("per-pair path: %.1f ms a file (%ld loads), %.1f us a keypoint\n", files ? 1e3 * best.load / (double)files : 0.0,
                        files, keypoints ? 1e6 * best.match / (double)keypoints : 0.0);
    if (run_new) printf("batched path:  %.1f ms a map (%ld loads incl. query gather), %.1f us a keypoint\n",
                        loads ? 1e3 * bestb.load / (double)loads : 0.0, loads,
                        keypoints ? 1e6 * bestb.match / (double)keypoints : 0.0);
    if (identical >= 0) printf("predictions of the two paths: %s\n", identical ? "identical (memcmp)" : "DIFFERENT");
    if (!run_old) pck = sa3d_pck_per_image(&rb.overall, 0);
    printf("PCK@0.1 per-image %.2f, per-keypoint %.2f\n", pck, sa3d_pck_per_keypoint(run_old ? &r.overall : &rb.overall, 0));
    if (identical == 0) { sa3d_fail(&err, SA3D_ERR_NUMERIC, "batched and per-pair predictions differ"); goto fail; }

    if (e2e) {   /* the `eval` command's path: provider -> baseline matcher -> part files -> predictions -> PCK */
        const char *t = getenv("TMPDIR");
        snprintf(out_dir, sizeof out_dir, "%s/sa3d_bench_eval_out_XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(out_dir)) { out_dir[0] = '\0'; sa3d_fail(&err, SA3D_ERR_IO, "cannot create an output folder"); goto fail; }
        sa3d_pck_report r2;
        sa3d_pck_init(&r2);
        sa3d_eval_params ep = sa3d_eval_params_default();
        ep.out_dir = out_dir;
        ep.match_batch = sa3d_baseline_matcher_match_batch;   /* as the eval command */
        long resumed = 0;
        t0 = sa3d_now();
        if (sa3d_baseline_matcher_new(&bm, fp, sp.input_size, &bp, &err) ||
            sa3d_eval_run(ds, &ep, sa3d_baseline_matcher_match, bm, &r2, &resumed, &err))
            goto fail;
        double e2e_s = sa3d_now() - t0;
        printf("%-34s %10.3f  (sa3d_eval_run + baseline matcher, incl. feature loading and output files; PCK@0.1 "
               "%.2f)\n", "end to end (eval command path)", e2e_s, sa3d_pck_per_image(&r2.overall, 0));
        if (sa3d_pck_per_image(&r2.overall, 0) != pck) { sa3d_fail(&err, SA3D_ERR_NUMERIC, "eval_run PCK differs"); goto fail; }
    }
    if (!(pck > 99.99)) {
        sa3d_fail(&err, SA3D_ERR_NUMERIC, "PCK@0.1 = %.2f on features with a known answer; expected 100", pck);
        goto fail;
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "bench_eval: %s\n", err.msg[0] ? err.msg : "failed");
done:
    if (maps)
        for (int i = 0; i < sp.images_per_category; i++) free(maps[i].data);
    sa3d_free(maps);
    sa3d_free(preds);
    sa3d_free(predb);
    sa3d_free(work);
    sa3d_baseline_matcher_free(bm);
    sa3d_provider_free(fp);
    sa3d_dataset_close(ds);
    if (out_dir[0]) nftw(out_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (tmp[0]) nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
