/* Fuzz target: scoring a predictions file (JSON lines; sa3d_pck_score_file in src/eval/predictions.c, whose line
 * parser also reads eval's resume files) on arbitrary bytes, against a small synthetic SPair split made once per
 * process. A file that is accepted must score every pair it names once, each keypoint correct or not, so the
 * counts stay inside the split's; each line accepted alone must name a pair of the split and give it finite
 * points. A rejected file must name itself. */
#define _GNU_SOURCE /* memfd_create */
#include <ftw.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "eval/eval_internal.h"
#include "semalign3d/synth.h"

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* The split: 8 test pairs over 2 categories, records only (pair ids "00000N-synth_...:aeroplane" and so on,
 * the same for every run: the corpus names them). Kept in memory; its folder is removed at once. */
static sa3d_dataset *split(int *n_pairs, long *n_kps) {
    static sa3d_dataset *ds;
    static int n;
    static long kps;
    if (!ds) {
        const char *t = getenv("TMPDIR");
        char root[512];
        snprintf(root, sizeof root, "%s/sa3d_fuzz_pred_XXXXXX", t && *t ? t : "/tmp");
        sa3d_error err = { 0 };
        sa3d_synth_spair_params sp = sa3d_synth_spair_params_default();
        sp.pairs_trn = sp.pairs_val = 0;
        sp.write_images = sp.write_segmentations = sp.write_features = sp.write_flip_features = 0;
        if (!mkdtemp(root) || sa3d_synth_spair_write(root, &sp, &err) || sa3d_dataset_open(&ds, root, NULL, &err) ||
            (n = sa3d_dataset_load_split(ds, "test", &err)) < 1) {
            fprintf(stderr, "fuzz_predictions: synthetic split in %s: %s\n", root, err.msg);
            abort();
        }
        nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        for (int i = 0; i < n; i++) kps += sa3d_dataset_pair(ds, "test", i)->n_kps;
    }
    *n_pairs = n;
    *n_kps = kps;
    return ds;
}

static void check_cell(const sa3d_pck_cell *c, long max_pairs, long max_kps) {
    if (c->pairs < 0 || c->pairs > max_pairs || c->keypoints < 0 || c->keypoints > max_kps) abort();
    for (int a = 0; a < SA3D_PCK_N_ALPHA; a++)
        if (c->correct[a] < 0 || c->correct[a] > c->keypoints || !(c->per_image_sum[a] >= 0.0) ||
            c->per_image_sum[a] > (double)c->pairs + 1e-9)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int n;
    long kps;
    const sa3d_dataset *ds = split(&n, &kps);
    /* the whole file, through a file descriptor as a user's file would be read */
    int fd = memfd_create("predictions", 0);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size) abort();
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    for (int allow_missing = 0; allow_missing < 2; allow_missing++) {
        sa3d_pck_report r;
        sa3d_pck_init(&r);
        sa3d_error err = { 0 };
        long missing = -1;
        if (sa3d_pck_score_file(&r, ds, "test", path, allow_missing, &missing, &err) == SA3D_OK) {
            if (missing < 0 || missing > n || (!allow_missing && missing) || r.overall.pairs + missing > n) abort();
            check_cell(&r.overall, n, kps);
            for (int c = 0; c < r.n_categories; c++) check_cell(&r.cat[c], n, kps);
        } else if (!memchr(err.msg, '\0', sizeof err.msg) || !strstr(err.msg, path)) {
            abort();
        }
    }
    close(fd);
    /* each line alone, as eval's resume reads its part files */
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    long lineno = 0;
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        float pts[SA3D_MAX_KPS][2];
        sa3d_error err = { 0 };
        const sa3d_pair *p = sa3d_pred_parse_line(ds, "test", "fuzz.jsonl", ++lineno, line, pts, NULL, &err);
        if (p) {
            if (sa3d_dataset_find_pair(ds, "test", p->id) != p) abort();
            for (int i = 0; i < p->n_kps; i++)
                if (!isfinite(pts[i][0]) || !isfinite(pts[i][1])) abort();
        } else if (!strstr(err.msg, "fuzz.jsonl:")) {
            abort();
        }
    }
    free(text);
    return 0;
}
