/* Looking at a prior (`semalign3d show-prior`): the dense cloud and the anchors as a coloured PLY point cloud
 * (colour = the first three principal components of the features) and as a picture rendered in software. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "semalign3d/image.h"
#include "semalign3d/prior.h"
#include "semalign3d/viz.h"

/* The first three principal components of the features, scaled to 0..255 per component (min to max). Power
 * iteration on the centred Gram matrix X X^T (n x n, n <= a few thousand) from fixed start vectors, so the
 * colours are the same on every run. rgb: [n][3]. */
static sa3d_status pca_colours(uint8_t *rgb, const float *X, int n, int C, sa3d_error *err) {
    double *mean = calloc((size_t)C, sizeof *mean), *G = malloc((size_t)n * n * sizeof *G);
    double *v = malloc((size_t)n * sizeof *v), *w = malloc((size_t)n * sizeof *w);
    double *comp = malloc((size_t)n * 3 * sizeof *comp);
    if (!mean || !G || !v || !w || !comp) {
        free(mean); free(G); free(v); free(w); free(comp);
        return sa3d_fail(err, SA3D_ERR_NOMEM, "show-prior: out of memory for the PCA of %d points", n);
    }
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) mean[c] += (double)X[(size_t)i * C + c] / n;
    for (int i = 0; i < n; i++)
        for (int j = i; j < n; j++) {
            double s = 0.0;
            for (int c = 0; c < C; c++)
                s += ((double)X[(size_t)i * C + c] - mean[c]) * ((double)X[(size_t)j * C + c] - mean[c]);
            G[(size_t)i * n + j] = G[(size_t)j * n + i] = s;
        }
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i < n; i++) v[i] = 1.0 + 0.01 * (double)((i * (k + 3)) % 17);
        double lambda = 0.0;
        for (int it = 0; it < 200; it++) {
            double norm = 0.0;
            for (int i = 0; i < n; i++) {
                double s = 0.0;
                for (int j = 0; j < n; j++) s += G[(size_t)i * n + j] * v[j];
                w[i] = s;
                norm += s * s;
            }
            norm = sqrt(norm);
            if (norm <= 1e-300) break;
            for (int i = 0; i < n; i++) v[i] = w[i] / norm;
            lambda = norm;
        }
        for (int i = 0; i < n; i++) comp[(size_t)i * 3 + k] = v[i] * sqrt(lambda);
        for (int i = 0; i < n; i++)   /* deflate: G -= lambda v v^T */
            for (int j = 0; j < n; j++) G[(size_t)i * n + j] -= lambda * v[i] * v[j];
    }
    for (int k = 0; k < 3; k++) {
        double lo = HUGE_VAL, hi = -HUGE_VAL;
        for (int i = 0; i < n; i++) { lo = fmin(lo, comp[i * 3 + k]); hi = fmax(hi, comp[i * 3 + k]); }
        double span = hi > lo ? hi - lo : 1.0;
        for (int i = 0; i < n; i++) rgb[i * 3 + k] = (uint8_t)lrint(30.0 + 200.0 * (comp[i * 3 + k] - lo) / span);
    }
    free(mean); free(G); free(v); free(w); free(comp);
    return SA3D_OK;
}

sa3d_status sa3d_prior_write_ply(const sa3d_prior *p, const char *path, sa3d_error *err) {
    uint8_t *rgb = malloc((size_t)(p->n_dense > 0 ? p->n_dense : 1) * 3);
    if (!rgb) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", path);
    sa3d_status s = p->n_dense > 0 ? pca_colours(rgb, p->dense_feat, p->n_dense, p->C, err) : SA3D_OK;
    size_t cap = (size_t)(p->n_dense + p->n_slots) * 64 + 512, len = 0;
    char *txt = s ? NULL : malloc(cap);
    if (!s && !txt) s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", path);
    if (!s) {
        len += (size_t)snprintf(txt + len, cap - len,
                                "ply\nformat ascii 1.0\ncomment semalign3d prior of %s: %d dense points coloured by "
                                "feature PCA, then %d anchors in black\nelement vertex %d\nproperty float x\n"
                                "property float y\nproperty float z\nproperty uchar red\nproperty uchar green\n"
                                "property uchar blue\nend_header\n",
                                p->category, p->n_dense, p->n_used, p->n_dense + p->n_used);
        for (int i = 0; i < p->n_dense; i++)
            len += (size_t)snprintf(txt + len, cap - len, "%.6g %.6g %.6g %u %u %u\n", (double)p->dense_xyz[i * 3],
                                    (double)p->dense_xyz[i * 3 + 1], (double)p->dense_xyz[i * 3 + 2], rgb[i * 3],
                                    rgb[i * 3 + 1], rgb[i * 3 + 2]);
        for (int u = 0; u < p->n_used; u++) {
            const double *a = p->anchors + (size_t)p->used[u] * 3;
            len += (size_t)snprintf(txt + len, cap - len, "%.6g %.6g %.6g 0 0 0\n", a[0], a[1], a[2]);
        }
        s = sa3d_write_file_atomic(path, txt, len, err);
    }
    free(txt);
    free(rgb);
    return s;
}

/* Orthographic view from azimuth 35 deg, elevation 20 deg, the cloud fitted into the frame; points drawn far to
 * near as discs (painter's order), anchors as black-rimmed white discs on top. */
typedef struct splat { double depth; float x, y; int idx; } splat;

static int cmp_splat(const void *a, const void *b) {
    double x = ((const splat *)a)->depth, y = ((const splat *)b)->depth;
    return (x < y) - (x > y);   /* far (large depth) first */
}

sa3d_status sa3d_prior_render_png(const sa3d_prior *p, const char *path, int size, sa3d_error *err) {
    if (size < 16 || size > 8192) return sa3d_fail(err, SA3D_ERR_ARG, "%s: image size %d: expected 16..8192", path, size);
    int n = p->n_dense, m = p->n_used, total = n + m;
    uint8_t *img = malloc((size_t)size * size * 3), *rgb = malloc((size_t)(n > 0 ? n : 1) * 3);
    splat *sp = malloc((size_t)(total > 0 ? total : 1) * sizeof *sp);
    sa3d_status s = SA3D_OK;
    if (!img || !rgb || !sp) { s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", path); goto done; }
    memset(img, 255, (size_t)size * size * 3);
    if (n > 0 && (s = pca_colours(rgb, p->dense_feat, n, p->C, err))) goto done;
    const double deg = 3.14159265358979323846 / 180.0;
    double az = 35.0 * deg, el = 20.0 * deg;
    double R[3][3] = { { cos(az), 0.0, sin(az) },
                       { sin(el) * sin(az), cos(el), -sin(el) * cos(az) },
                       { -cos(el) * sin(az), sin(el), cos(el) * cos(az) } };
    double lo[2] = { HUGE_VAL, HUGE_VAL }, hi[2] = { -HUGE_VAL, -HUGE_VAL };
    for (int i = 0; i < total; i++) {
        double q[3];
        if (i < n) for (int d = 0; d < 3; d++) q[d] = (double)p->dense_xyz[i * 3 + d];
        else for (int d = 0; d < 3; d++) q[d] = p->anchors[(size_t)p->used[i - n] * 3 + d];
        double v[3];
        for (int r = 0; r < 3; r++) v[r] = R[r][0] * q[0] + R[r][1] * q[1] + R[r][2] * q[2];
        sp[i] = (splat){ v[2], (float)v[0], (float)-v[1], i };   /* image y grows downwards */
        for (int d = 0; d < 2; d++) {
            double c = d ? -v[1] : v[0];
            lo[d] = fmin(lo[d], c);
            hi[d] = fmax(hi[d], c);
        }
    }
    double span = fmax(hi[0] - lo[0], hi[1] - lo[1]);
    double scale = span > 0.0 ? 0.85 * size / span : 1.0;
    for (int i = 0; i < total; i++) {
        sp[i].x = (float)(size / 2.0 + ((double)sp[i].x - (lo[0] + hi[0]) / 2.0) * scale);
        sp[i].y = (float)(size / 2.0 + ((double)sp[i].y - (lo[1] + hi[1]) / 2.0) * scale);
    }
    qsort(sp, (size_t)n, sizeof *sp, cmp_splat);   /* dense points only; anchors go on top */
    float r = (float)size / 160.0f;
    for (int i = 0; i < n; i++) sa3d_draw_disc(img, size, size, sp[i].x, sp[i].y, r, rgb + (size_t)sp[i].idx * 3);
    const uint8_t black[3] = { 0, 0, 0 }, white[3] = { 255, 255, 255 };
    for (int i = n; i < total; i++) {
        sa3d_draw_disc(img, size, size, sp[i].x, sp[i].y, 2.2f * r, black);
        sa3d_draw_disc(img, size, size, sp[i].x, sp[i].y, 1.3f * r, white);
    }
    s = sa3d_png_write(path, img, size, size, 3, err);
done:
    free(img);
    free(rgb);
    free(sp);
    return s;
}
