/* Normalised pinhole camera (METHOD.md 2): calibration matrix, keypoint and depth-image back-projection,
 * batched projection, the pixel <-> feature-cell maps of the padded square, and the pseudo-depth of
 * METHOD.md 3.2. Mirrors utils/camera_intrinsics.py, utils/projections.py, utils/image_processing.py and
 * sem3d_data_utils.load_depth, including their float32 steps where the authors compute in float32. */
#include <math.h>
#include "base/base.h"
#include "geom/geom.h"

void sa3d_calib_normalized(double *K /* [3][3] */, double img_h, double img_w, double f) {
    double s = img_w > img_h ? img_w : img_h;
    K[0] = f;   K[1] = 0.0; K[2] = img_w / 2.0 / s;   /* p_x = W / 2 / max(W, H), as the authors write it */
    K[3] = 0.0; K[4] = f;   K[5] = img_h / 2.0 / s;
    K[6] = 0.0; K[7] = 0.0; K[8] = 1.0;
}

/* METHOD.md 2.3: K_inv = [[|phi|, 0, -p_x |phi|], [0, |phi|, -p_y |phi|], [0, 0, 1]] applied to
 * (x z, y z, z), in the authors' order of operations (back_project_kpts_from_K_inv_normalized). */
void sa3d_backproject_kpts(double *xyz /* [N][K][3] */, const double *phi /* [N] */,
                           const double *img_hw /* [N][2] (H, W) */, const double *xy_norm /* [N][K][2] */,
                           const double *depth /* [N][K] */, int n_img, int n_kpts) {
    for (int b = 0; b < n_img; b++) {
        double h = img_hw[2 * b], w = img_hw[2 * b + 1];
        double s = fmax(h, w);
        double px = w / s / 2.0, py = h / s / 2.0;
        double fa = fabs(phi[b]);
        double k02 = -px * fa, k12 = -py * fa;
        for (int k = 0; k < n_kpts; k++) {
            size_t i = (size_t)b * (size_t)n_kpts + (size_t)k;
            double z = depth[i];
            double xz = xy_norm[2 * i] * z, yz = xy_norm[2 * i + 1] * z;
            xyz[3 * i + 0] = fa * xz + k02 * z;
            xyz[3 * i + 1] = fa * yz + k12 * z;
            xyz[3 * i + 2] = z;
        }
    }
}

void sa3d_project_batched(double *xy /* [B][n][2] */, const double *xyz /* [B][n][3] */,
                          const double *K /* [B][3][3] */, int B, int n) {
    for (int b = 0; b < B; b++) {
        const double *k = K + 9 * (size_t)b;
        for (int i = 0; i < n; i++) {
            size_t o = (size_t)b * (size_t)n + (size_t)i;
            const double *p = xyz + 3 * o;
            double h0 = p[0] * k[0] + p[1] * k[1] + p[2] * k[2];
            double h1 = p[0] * k[3] + p[1] * k[4] + p[2] * k[5];
            double h2 = p[0] * k[6] + p[1] * k[7] + p[2] * k[8];
            double den = h2 + 1e-9;   /* project_to_img_plane_batched: xy / (z + 1e-9) */
            xy[2 * o] = h0 / den;
            xy[2 * o + 1] = h1 / den;
        }
    }
}

void sa3d_backproject_depth(double *xyz /* [H][W][3] */, const double *depth /* [H][W] */, int img_h,
                            int img_w, double f) {
    double s = (double)(img_w > img_h ? img_w : img_h);
    double px = (double)img_w / 2.0 / s, py = (double)img_h / 2.0 / s;
    double i00 = 1.0 / f, i02 = -px / f, i12 = -py / f;   /* inverse of K (np.linalg.inv) */
    for (int r = 0; r < img_h; r++) {
        for (int c = 0; c < img_w; c++) {
            size_t o = (size_t)r * (size_t)img_w + (size_t)c;
            double z = depth[o];
            double x = (double)c / s * z, y = (double)r / s * z;
            xyz[3 * o + 0] = i00 * x + i02 * z;
            xyz[3 * o + 1] = i00 * y + i12 * z;
            xyz[3 * o + 2] = z;
        }
    }
}

/* The float32 steps are kept in separate statements so no compiler contracts them into an FMA. */
void sa3d_pixel_to_cell(int32_t *cells /* [n][2] */, const int32_t *pix /* [n][2] */, int n, int img_h,
                        int img_w, int grid) {
    int s = img_w > img_h ? img_w : img_h;
    int pad[2] = { (s - img_w) / 2, (s - img_h) / 2 };
    float fs = (float)s, fg = (float)grid;
    for (int i = 0; i < n; i++) {
        for (int a = 0; a < 2; a++) {
            float q = (float)(pix[2 * i + a] + pad[a]) / fs;
            float c = q * fg;
            int32_t ci = (int32_t)c;   /* .long(): truncation toward zero */
            if (ci < 0) ci = 0;
            if (ci > grid - 1) ci = grid - 1;
            cells[2 * i + a] = ci;
        }
    }
}

void sa3d_cell_to_pixel(int32_t *pix /* [n][2] */, const int32_t *cells /* [n][2] */, int n, int img_h,
                        int img_w, int grid) {
    int s = img_w > img_h ? img_w : img_h;
    float pad[2] = { (float)((s - img_w) / 2), (float)((s - img_h) / 2) };
    float fs = (float)s, fg = (float)grid;
    for (int i = 0; i < n; i++) {
        for (int a = 0; a < 2; a++) {
            float c = (float)cells[2 * i + a] + 0.5f;   /* "+0.5 makes huge difference" */
            float q = c / fg;
            float u = q * fs;
            float d = u - pad[a];
            pix[2 * i + a] = (int32_t)d;
        }
    }
}

sa3d_status sa3d_pseudo_depth(double *z /* [H][W] */, const double *disp /* [H][W] */, int img_h, int img_w,
                              int flip, sa3d_error *err) {
    if (img_h <= 0 || img_w <= 0)
        return sa3d_fail(err, SA3D_ERR_ARG, "pseudo_depth: bad size %d x %d", img_h, img_w);
    size_t n = (size_t)img_h * (size_t)img_w;
    double m = -(double)INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(disp[i]))
            return sa3d_fail(err, SA3D_ERR_NUMERIC, "pseudo_depth: disparity[%zu] is not finite", i);
        if (disp[i] > m) m = disp[i];
    }
    if (!(m > 0.0)) return sa3d_fail(err, SA3D_ERR_NUMERIC, "pseudo_depth: max disparity %g is not positive", m);
    for (int r = 0; r < img_h; r++)
        for (int c = 0; c < img_w; c++) {
            int cs = flip ? img_w - 1 - c : c;   /* np.fliplr after the conversion */
            z[(size_t)r * (size_t)img_w + (size_t)c] = 1.0 - 0.3 * (disp[(size_t)r * (size_t)img_w + (size_t)cs] / m);
        }
    return SA3D_OK;
}

sa3d_status sa3d_pseudo_depth_f32(float *z /* [H][W] */, const float *disp /* [H][W] */, int img_h, int img_w,
                                  int flip, sa3d_error *err) {
    if (img_h <= 0 || img_w <= 0)
        return sa3d_fail(err, SA3D_ERR_ARG, "pseudo_depth: bad size %d x %d", img_h, img_w);
    size_t n = (size_t)img_h * (size_t)img_w;
    float m = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(disp[i]))
            return sa3d_fail(err, SA3D_ERR_NUMERIC, "pseudo_depth: disparity[%zu] is not finite", i);
        if (disp[i] > m) m = disp[i];
    }
    if (!(m > 0.0f))
        return sa3d_fail(err, SA3D_ERR_NUMERIC, "pseudo_depth: max disparity %g is not positive", (double)m);
    for (int r = 0; r < img_h; r++)
        for (int c = 0; c < img_w; c++) {
            int cs = flip ? img_w - 1 - c : c;
            float q = disp[(size_t)r * (size_t)img_w + (size_t)cs] / m;   /* numpy float32 throughout */
            float t = 0.3f * q;
            z[(size_t)r * (size_t)img_w + (size_t)c] = 1.0f - t;
        }
    return SA3D_OK;
}
