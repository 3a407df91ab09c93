/* bench_flip: what GeoAware-SC's adaptive flip (the baseline's match.baseline.adapt_flip, src/align/baseline_flip.c)
 * costs per pair at real sizes: two unit feature maps of C = 768 channels on 60 x 60 cells and masks covering a
 * share of the square; our pose distances (sa3d_flip_distance_masked: 64 x 64 upsampled, foreground only;
 * sa3d_flip_distance_mutual_nn: all cells) against the same computations in PyTorch (bench/peers/torch_flip.py,
 * GeoAware's get_distance / get_distance_mutual_nn restated with torch.cdist), in the same run on the same input
 * file, with the distances compared. A pair of the flip costs two of either (the source and its mirror).
 *
 *     bench_flip [--channels C] [--fg F] [--threads N] [--runs R] [--seed S] [--dir D]
 *                [--peer PATH | --no-peer] [--python PATH] [--tiny]
 *
 * --fg: share of the 64 x 64 cells inside each mask (discs; default 0.3). --tiny (ctest smoke): C = 32, no peer
 * unless asked. Exit status: 0, 1 when ours or the peer failed, 2 for a usage error. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "base/base.h"
#include "base/rng.h"
#include "semalign3d/match.h"
#include "semalign3d/safetensors.h"

#define G 60
#define R SA3D_FLIP_MASK_RES

static float *unit_map(int C, uint64_t seed) {   /* uniform components, then unit cells */
    float *F = malloc((size_t)C * G * G * sizeof *F);
    if (!F) return NULL;
    sa3d_rng r = sa3d_rng_for(seed, 0, 0);
    for (size_t i = 0; i < (size_t)C * G * G; i++) F[i] = (float)(sa3d_rng_uniform(&r) - 0.5);
    sa3d_features_normalize(F, C, G * G);
    return F;
}

/* A disc of about fg x 4096 cells centred at (cx, cy). */
static void disc_mask(unsigned char *m, float *mf, double fg, double cx, double cy) {
    double r2 = fg * R * R / 3.14159265358979323846;
    for (int i = 0; i < R * R; i++) {
        double dx = i % R + 0.5 - cx, dy = i / R + 0.5 - cy;
        m[i] = dx * dx + dy * dy < r2;
        mf[i] = m[i];
    }
}

typedef struct timing { double best_ms, dist; } timing;

static int time_ours(int metric, const sa3d_feature_map *a, const unsigned char *ma, const sa3d_feature_map *b,
                     const unsigned char *mb, int runs, timing *t) {
    t->best_ms = 1e30;
    for (int r = 0; r < runs + 1; r++) {   /* one warm-up */
        sa3d_error err;
        double t0 = sa3d_now();
        sa3d_status s = metric == SA3D_FLIP_MASK ? sa3d_flip_distance_masked(a, ma, b, mb, &t->dist, &err)
                                                 : sa3d_flip_distance_mutual_nn(a, b, &t->dist, &err);
        double ms = 1e3 * (sa3d_now() - t0);
        if (s) { fprintf(stderr, "bench_flip: %s\n", err.msg); return 0; }
        if (r > 0 && ms < t->best_ms) t->best_ms = ms;
    }
    return 1;
}

/* The value of "key": in a one-line JSON object (the peer's output), or NAN. */
static double json_num(const char *line, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    return p ? strtod(p + strlen(pat), NULL) : (double)NAN;
}

static int usage(const char *msg) {
    fprintf(stderr, "bench_flip: %s\nusage: bench_flip [--channels C] [--fg F] [--threads N] [--runs R] [--seed S] "
            "[--dir D] [--peer PATH | --no-peer] [--python PATH] [--tiny]\n", msg);
    return 2;
}

int main(int argc, char **argv) {
    int C = 768, threads = 0, runs = 3, tiny = 0, no_peer = 0, peer_asked = 0;
    double fg = 0.3;
    uint64_t seed = 1;
    const char *dir = getenv("TMPDIR"), *peer = SA3D_SOURCE_DIR "/bench/peers/torch_flip.py", *python = "/usr/bin/python3";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--tiny")) { tiny = 1; continue; }
        if (!strcmp(a, "--no-peer")) { no_peer = 1; continue; }
        if (!v) return usage("an option lacks its value, or is unknown");
        i++;
        if (!strcmp(a, "--channels")) C = atoi(v);
        else if (!strcmp(a, "--fg")) fg = atof(v);
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--runs")) runs = atoi(v);
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--dir")) dir = v;
        else if (!strcmp(a, "--peer")) { peer = v; peer_asked = 1; }
        else if (!strcmp(a, "--python")) python = v;
        else return usage("unknown option");
    }
    if (tiny) { C = 32; runs = 1; if (!peer_asked) no_peer = 1; }
    if (C < 1 || C > 4096 || !(fg > 0.0 && fg <= 1.0) || runs < 1 || threads < 0)
        return usage("--channels 1..4096, --fg in (0, 1], --runs >= 1, --threads >= 0");
    if (!dir || !*dir) dir = "/tmp";
    int nthreads = sa3d_set_threads(threads);

    float *A = unit_map(C, seed), *B = unit_map(C, seed + 1), maf[R * R], mbf[R * R];
    unsigned char ma[R * R], mb[R * R];
    if (!A || !B) { fprintf(stderr, "bench_flip: out of memory\n"); return 1; }
    disc_mask(ma, maf, fg, 30.0, 34.0);
    disc_mask(mb, mbf, fg, 34.0, 30.0);
    int na = 0, nb = 0;
    for (int i = 0; i < R * R; i++) { na += ma[i]; nb += mb[i]; }
    sa3d_feature_map a = { C, G, A, 840, 840, 840 }, b = { C, G, B, 840, 840, 840 };
    printf("# bench_flip: C = %d on %d x %d cells, masks %d and %d of %d cells (64 x 64), %d threads, best of %d\n",
           C, G, G, na, nb, R * R, nthreads, runs);

    timing ours[2];
    int ok = time_ours(SA3D_FLIP_MASK, &a, ma, &b, mb, runs, &ours[0]) &&
             time_ours(SA3D_FLIP_MUTUAL_NN, &a, NULL, &b, NULL, runs, &ours[1]);
    double peer_ms[2] = { (double)NAN, (double)NAN }, peer_dist[2] = { (double)NAN, (double)NAN };
    char status[512] = "not run (--no-peer)";
    if (ok && !no_peer) {
        char tmp[4096], in[4200], cmd[16384];
        snprintf(tmp, sizeof tmp, "%s/bench_flip.XXXXXX", dir);
        if (!mkdtemp(tmp)) { fprintf(stderr, "bench_flip: %s: %s\n", tmp, strerror(errno)); return 1; }
        snprintf(in, sizeof in, "%s/input.safetensors", tmp);
        int64_t shape_f[3] = { C, G, G }, shape_m[2] = { R, R };
        sa3d_error err;
        sa3d_st_writer *w = sa3d_st_writer_new();
        if (!w || sa3d_st_writer_add_f32(w, "a", 3, shape_f, A, &err) || sa3d_st_writer_add_f32(w, "b", 3, shape_f, B, &err) ||
            sa3d_st_writer_add_f32(w, "mask_a", 2, shape_m, maf, &err) ||
            sa3d_st_writer_add_f32(w, "mask_b", 2, shape_m, mbf, &err) || sa3d_st_writer_write(w, in, &err)) {
            fprintf(stderr, "bench_flip: writing %s: %s\n", in, w ? err.msg : "out of memory");
            return 1;
        }
        sa3d_st_writer_free(w);
        snprintf(cmd, sizeof cmd, "'%s' '%s' --input '%s' --threads %d --runs %d 2>&1", python, peer, in, nthreads, runs);
        FILE *p = popen(cmd, "r");
        char line[4096], last[4096] = "";
        while (p && fgets(line, sizeof line, p)) {
            if (line[0] == '{') snprintf(last, sizeof last, "%s", line);   /* the result line */
            else fputs(line, stderr);                                      /* the peer's messages */
        }
        int rc = p ? pclose(p) : -1;
        if (rc == 0 && last[0]) {
            peer_ms[0] = json_num(last, "masked_ms");
            peer_dist[0] = json_num(last, "masked");
            peer_ms[1] = json_num(last, "mutual_nn_ms");
            peer_dist[1] = json_num(last, "mutual_nn");
            const char *v = strstr(last, "\"torch\": \"");
            v = v ? v + 10 : "?";
            snprintf(status, sizeof status, "PyTorch %.*s, same input file", (int)strcspn(v, "\""), v);
        } else {
            snprintf(status, sizeof status, "failed (exit %d; it needs python3 with torch and numpy)", rc);
            ok = 0;
        }
        remove(in);
        rmdir(tmp);
    }
    printf("# peer: %s\n", status);
    printf("%-26s %12s %12s %8s %16s %16s %9s\n", "pose distance", "ours ms", "torch ms", "ratio", "ours", "torch",
           "rel diff");
    const char *names[2] = { "masked (adapt_flip 1)", "mutual NN (adapt_flip 2)" };
    for (int m = 0; m < 2; m++)
        printf("%-26s %12.2f %12.2f %8.2f %16.9g %16.9g %9.2g\n", names[m], ours[m].best_ms, peer_ms[m],
               peer_ms[m] / ours[m].best_ms, ours[m].dist, peer_dist[m],
               fabs(ours[m].dist - peer_dist[m]) / fabs(peer_dist[m]));
    printf("# a pair with the flip: two distances (source, mirror) of its metric, plus one more baseline match\n");
    free(A);
    free(B);
    return ok ? 0 : 1;
}
