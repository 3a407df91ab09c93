/* show-prior (src/prior/show.c): the PLY and PNG views of a small hand-made prior. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "base/base.h"
#include "semalign3d/image.h"
#include "semalign3d/prior.h"
#include "t.h"

/* show-prior's outputs from a small hand-made prior: a PLY with every point, a PNG of the asked size; a bad size
 * writes nothing. */
static void case_show(void) {
    enum { n = 4, C = 3, N = 50 };
    double anchors[n * 3] = { 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1 };
    int32_t used[n] = { 0, 1, 2, 3 };
    float xyz[N * 3], feat[N * C];
    for (int i = 0; i < N; i++) {
        double t = i / (double)N;
        xyz[i * 3] = (float)t; xyz[i * 3 + 1] = (float)(t * t); xyz[i * 3 + 2] = (float)(1 - t);
        feat[i * C] = (float)cos(6 * t); feat[i * C + 1] = (float)sin(6 * t); feat[i * C + 2] = (float)t;
    }
    sa3d_prior p = { 0 };
    snprintf(p.category, sizeof p.category, "test");
    p.n_slots = n; p.n_used = n; p.used = used; p.anchors = anchors; p.C = C;
    p.n_dense = N; p.dense_xyz = xyz; p.dense_feat = feat;
    char dir[] = "/tmp/sa3d_show_XXXXXX", ply[64], png[64];
    if (!mkdtemp(dir)) { T_FAIL("mkdtemp"); return; }
    snprintf(ply, sizeof ply, "%s/p.ply", dir);
    snprintf(png, sizeof png, "%s/p.png", dir);
    sa3d_error err;
    T_OK(sa3d_prior_write_ply(&p, ply, &err), &err);
    T_OK(sa3d_prior_render_png(&p, png, 200, &err), &err);
    char *txt = NULL;
    size_t len = 0;
    T_OK(sa3d_read_file(ply, 1 << 20, &txt, &len, &err), &err);
    if (txt) {
        T_CONTAINS(txt, "element vertex 54\n");
        int lines = 0;
        for (const char *q = strstr(txt, "end_header\n"); q && *q; q++) lines += *q == '\n';
        T_CHECK(lines == 1 + N + n);
        sa3d_free(txt);
    }
    sa3d_image img = { 0 };
    T_OK(sa3d_image_load(&img, png, &err), &err);
    T_CHECK(img.w == 200 && img.h == 200);
    sa3d_image_free(&img);
    remove(png);
    T_STATUS(sa3d_prior_render_png(&p, png, 4, &err), SA3D_ERR_ARG, &err);
    T_CHECK(!sa3d_file_exists(png));
    remove(ply);
    rmdir(dir);
}

int main(int argc, char **argv) {
    static const t_case cases[] = {
        { "1.1", "show-prior: PLY and PNG", case_show },
    };
    return t_run(cases, (int)(sizeof cases / sizeof cases[0]), argc, argv);
}
