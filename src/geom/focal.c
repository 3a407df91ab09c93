/* Focal-length estimation of the training images (METHOD.md 3.3; core/losses/focal_length_loss.py,
 * utils/opt_utils.opt_data): the variance over images of every triple's cosine and length ratio, its exact
 * gradient w.r.t. phi = 1/f (forward mode per image through |phi|), PyTorch's AdamW step, and the full-batch
 * optimisation loop. The loss is parallel over the first triple index in fixed chunks summed in order. */
#include <math.h>
#include <string.h>
#include "base/base.h"
#include "geom/geom.h"

#define FOCAL_EPS 1e-6   /* compute_angles_and_ratios_parallel: + 1e-6 in both denominators */

/* The edges e_ij of every image are stored as separate arrays over the images ([K][K][E_FIELDS][N]), and the
 * visibility as 0/1 doubles ([K][N]), so that every loop over the images is a plain vectorisable loop: a triple
 * that an image does not show is multiplied by 0 instead of skipped. */
enum { EX, EY, EZ, EN, DX, DY, DZ, DN, E_FIELDS };   /* e, |e|, de/d|phi|, d|e|/d|phi| */
enum { V_MASK, V_C, V_R, V_DC, V_DR, V_RB, V_DRB, V_FIELDS };

size_t sa3d_focal_loss_work_bytes(int n_img, int n_kpts) {
    if (n_img <= 0 || n_kpts <= 0) return 0;
    size_t N = (size_t)n_img, K = (size_t)n_kpts, a, b, e, total;
    /* P, Q [N][K][3]; edges [K][K][E_FIELDS][N]; visibility [K][N]; per first index i: values [K][V_FIELDS][N],
     * partial gradient [K][N], partial losses [K][2]. */
    if (!sa3d_mul3_ok(N, K, 6, &a) || !sa3d_mul3_ok(K, N, V_FIELDS + 2, &b) ||
        !sa3d_mul3_ok(K * K, N, E_FIELDS, &e))
        return 0;
    total = a + b + e + 2 * K;
    if (total < e || !sa3d_mul_ok(total, sizeof(double), &total)) return 0;
    return total;
}

void sa3d_focal_loss(double *loss, double *grad_phi /* [N] */, double *cos_var /* [K][K][K] */,
                     double *ratio_var /* [K][K][K] */, const double *phi /* [N] */,
                     const double *img_hw /* [N][2] */, const double *xy_norm /* [N][K][2] */,
                     const double *depth /* [N][K] */, const uint8_t *visible /* [N][K] */, int n_img,
                     int n_kpts, void *work) {
    const size_t N = (size_t)n_img, K = (size_t)n_kpts;
    double *P = work;                       /* [N][K][3] back-projected keypoints */
    double *Q = P + N * K * 3;              /* [N][K][3] dP / d|phi| */
    double *E = Q + N * K * 3;              /* [K][K][E_FIELDS][N] */
    double *V = E + K * K * E_FIELDS * N;   /* [K][N] visibility */
    double *vals = V + K * N;               /* [K][V_FIELDS][N] the current triple's values, per i */
    double *pgrad = vals + K * V_FIELDS * N;/* [K][N] */
    double *ploss = pgrad + K * N;          /* [K][2] */
    sa3d_backproject_kpts(P, phi, img_hw, xy_norm, depth, n_img, n_kpts);
    for (size_t b = 0; b < N; b++) {
        double h = img_hw[2 * b], w = img_hw[2 * b + 1], s = fmax(h, w);
        double px = w / s / 2.0, py = h / s / 2.0;
        for (size_t k = 0; k < K; k++) {
            size_t o = b * K + k;
            double z = depth[o];
            Q[3 * o + 0] = xy_norm[2 * o] * z - px * z;
            Q[3 * o + 1] = xy_norm[2 * o + 1] * z - py * z;
            Q[3 * o + 2] = 0.0;
            V[k * N + b] = visible[o] ? 1.0 : 0.0;
        }
    }
    const int want_grad = grad_phi != NULL;
    #pragma omp parallel for schedule(static)
    for (int ii = 0; ii < n_kpts; ii++) {
        size_t i = (size_t)ii;
        for (size_t j = 0; j < K; j++) {
            double *o = E + (i * K + j) * E_FIELDS * N;
            for (size_t b = 0; b < N; b++) {
                const double *Pb = P + b * K * 3, *Qb = Q + b * K * 3;
                double e[3], d[3];
                for (int a = 0; a < 3; a++) {
                    e[a] = Pb[3 * j + a] - Pb[3 * i + a];
                    d[a] = Qb[3 * j + a] - Qb[3 * i + a];
                    o[(EX + a) * N + b] = e[a];
                    o[(DX + a) * N + b] = d[a];
                }
                double l = sqrt(sa3d_dot3(e, e));
                o[EN * N + b] = l;
                o[DN * N + b] = l > 0.0 ? sa3d_dot3(e, d) / l : 0.0;   /* torch's norm backward is 0 at 0 */
            }
        }
    }
    /* Per first index i, the pairs j <= k: the cosine is symmetric in (j, k), so one pass serves the triples
     * (i, j, k) and (i, k, j) - the same variance twice - and gives both length ratios, n1 / D and n2 / D with
     * the same denominator. The triple (i, i, i) has e = 0 on both sides: cosine and ratio are exactly 0 in
     * every image, so it adds exactly 0 and is skipped. */
    #pragma omp parallel for schedule(static)
    for (int ii = 0; ii < n_kpts; ii++) {
        size_t i = (size_t)ii;
        double *v = vals + i * V_FIELDS * N;
        double *msk = v + V_MASK * N, *c = v + V_C * N, *r = v + V_R * N, *dc = v + V_DC * N, *dr = v + V_DR * N;
        double *rb = v + V_RB * N, *drb = v + V_DRB * N;   /* the ratio of (i, k, j) and its derivative */
        double *pg = pgrad + i * N;
        const double *vi = V + i * N;
        double lc = 0.0, lr = 0.0;
        memset(pg, 0, N * sizeof(double));
        if (cos_var) cos_var[(i * K + i) * K + i] = 0.0;
        if (ratio_var) ratio_var[(i * K + i) * K + i] = 0.0;
        for (size_t j = 0; j < K; j++) {
            for (size_t k = j; k < K; k++) {
                if (j == i && k == i) continue;
                const double *Ej = E + (i * K + j) * E_FIELDS * N, *Ek = E + (i * K + k) * E_FIELDS * N;
                const double *vj = V + j * N, *vk = V + k * N;
                double mf = 0.0;
                #pragma omp simd reduction(+ : mf)
                for (size_t b = 0; b < N; b++) {
                    double mb = vi[b] * vj[b] * vk[b];
                    double n1 = Ej[EN * N + b], n2 = Ek[EN * N + b];
                    double dt = Ej[EX * N + b] * Ek[EX * N + b] + Ej[EY * N + b] * Ek[EY * N + b] +
                                Ej[EZ * N + b] * Ek[EZ * N + b];
                    /* two reciprocals instead of five divisions: the divider is this loop's bottleneck */
                    double ic = 1.0 / (n1 * n2 + FOCAL_EPS), ir = 1.0 / (n1 + n2 + FOCAL_EPS);
                    double c_ = dt * ic, r_ = n1 * ir, rb_ = n2 * ir;
                    msk[b] = mb;
                    mf += mb;
                    c[b] = mb * c_;
                    r[b] = mb * r_;
                    rb[b] = mb * rb_;
                    /* forward mode in |phi_b| */
                    double dn1 = Ej[DN * N + b], dn2 = Ek[DN * N + b];
                    double ddt = Ej[DX * N + b] * Ek[EX * N + b] + Ej[DY * N + b] * Ek[EY * N + b] +
                                 Ej[DZ * N + b] * Ek[EZ * N + b] + Ej[EX * N + b] * Ek[DX * N + b] +
                                 Ej[EY * N + b] * Ek[DY * N + b] + Ej[EZ * N + b] * Ek[DZ * N + b];
                    dc[b] = mb * ((ddt - c_ * (dn1 * n2 + n1 * dn2)) * ic);
                    dr[b] = mb * ((dn1 - r_ * (dn1 + dn2)) * ir);
                    drb[b] = mb * ((dn2 - rb_ * (dn1 + dn2)) * ir);
                }
                size_t m = (size_t)mf;
                /* torch_utils.masked_var_mean: mean = sum x mask / max(m, 1),
                 * var = sum (x - mean)^2 mask / max(m - 1, 1). */
                double fa = 1.0 / (double)(m > 0 ? m : 1), fv = 1.0 / (double)(m > 1 ? m - 1 : 1);
                double mc = 0.0, mr = 0.0, mrb = 0.0;
                #pragma omp simd reduction(+ : mc, mr, mrb)
                for (size_t b = 0; b < N; b++) { mc += c[b] * fa; mr += r[b] * fa; mrb += rb[b] * fa; }
                double vc = 0.0, vr = 0.0, vrb = 0.0, sc = 0.0, sr = 0.0, srb = 0.0;
                #pragma omp simd reduction(+ : vc, vr, vrb, sc, sr, srb)
                for (size_t b = 0; b < N; b++) {
                    double xc = (c[b] - mc) * msk[b], xr = (r[b] - mr) * msk[b], xrb = (rb[b] - mrb) * msk[b];
                    vc += xc * xc * fv;
                    vr += xr * xr * fv;
                    vrb += xrb * xrb * fv;
                    sc += 2.0 * xc * fv;
                    sr += 2.0 * xr * fv;
                    srb += 2.0 * xrb * fv;
                }
                int twin = k != j;   /* (i, k, j) is a distinct triple */
                if (cos_var) cos_var[(i * K + j) * K + k] = cos_var[(i * K + k) * K + j] = vc;
                if (ratio_var) {
                    ratio_var[(i * K + j) * K + k] = vr;
                    ratio_var[(i * K + k) * K + j] = twin ? vrb : vr;
                }
                lc += twin ? 2.0 * vc : vc;
                lr += twin ? vr + vrb : vr;
                if (want_grad) {   /* dvar/dx_b = 2 fv (x_b - mean) - fa sum_b' 2 fv (x_b' - mean) */
                    double wc = twin ? 2.0 : 1.0, wb = twin ? 1.0 : 0.0;
                    #pragma omp simd
                    for (size_t b = 0; b < N; b++) {
                        double gc = 2.0 * (c[b] - mc) * fv - fa * sc;
                        double gr = 2.0 * (r[b] - mr) * fv - fa * sr;
                        double g = wc * gc * dc[b] + gr * dr[b] + wb * (2.0 * (rb[b] - mrb) * fv - fa * srb) * drb[b];
                        pg[b] += msk[b] * g;
                    }
                }
            }
        }
        ploss[2 * i] = lc;
        ploss[2 * i + 1] = lr;
    }
    double lc = 0.0, lr = 0.0;
    for (size_t i = 0; i < K; i++) { lc += ploss[2 * i]; lr += ploss[2 * i + 1]; }
    *loss = lc + lr;
    if (want_grad) {
        for (size_t b = 0; b < N; b++) {
            double g = 0.0;
            for (size_t i = 0; i < K; i++) g += pgrad[i * N + b];
            double sgn = phi[b] > 0.0 ? 1.0 : (phi[b] < 0.0 ? -1.0 : 0.0);   /* d|phi|/dphi */
            grad_phi[b] = sgn * g;
        }
    }
}

sa3d_adamw_params sa3d_adamw_params_default(void) {
    sa3d_adamw_params p = { 1e-3, 0.9, 0.999, 1e-8, 0.01 };
    return p;
}

/* torch.optim.adamw._single_tensor_adamw (PyTorch 1.13), operation for operation. */
void sa3d_adamw_step(double *x /* [n] */, double *m /* [n] */, double *v /* [n] */, const double *g /* [n] */,
                     size_t n, long step, const sa3d_adamw_params *p) {
    double bc1 = 1.0 - pow(p->beta1, (double)step);
    double bc2 = 1.0 - pow(p->beta2, (double)step);
    double step_size = p->lr / bc1, bc2_sqrt = sqrt(bc2);
    for (size_t i = 0; i < n; i++) {
        x[i] *= 1.0 - p->lr * p->weight_decay;
        m[i] = m[i] * p->beta1 + g[i] * (1.0 - p->beta1);
        v[i] = v[i] * p->beta2 + (1.0 - p->beta2) * g[i] * g[i];
        double denom = sqrt(v[i]) / bc2_sqrt + p->eps;
        x[i] += -step_size * (m[i] / denom);
    }
}

sa3d_focal_opt_params sa3d_focal_opt_params_default(void) {
    sa3d_focal_opt_params p;
    p.n_iter = 1000;
    p.adam = sa3d_adamw_params_default();
    p.progress = NULL;
    p.progress_user = NULL;
    return p;
}

sa3d_status sa3d_focal_optimize(double *phi /* [N] */, double *final_loss, const double *img_hw /* [N][2] */,
                                const double *xy_norm /* [N][K][2] */, const double *depth /* [N][K] */,
                                const uint8_t *visible /* [N][K] */, int n_img, int n_kpts,
                                const sa3d_focal_opt_params *p, sa3d_error *err) {
    if (final_loss) *final_loss = (double)NAN;
    if (n_img <= 0 || n_kpts <= 0 || p->n_iter < 0)
        return sa3d_fail(err, SA3D_ERR_ARG, "focal optimisation: bad sizes (%d images, %d keypoints, %d iterations)",
                         n_img, n_kpts, p->n_iter);
    size_t wb = sa3d_focal_loss_work_bytes(n_img, n_kpts);
    size_t N = (size_t)n_img;
    void *work = wb ? sa3d_malloc(wb) : NULL;
    double *buf = sa3d_malloc(4 * N * sizeof(double));   /* grad, m, v, last finite phi */
    if (!work || !buf) {
        sa3d_free(work);
        sa3d_free(buf);
        return sa3d_fail(err, SA3D_ERR_NOMEM, "focal optimisation: cannot allocate %zu bytes of scratch", wb);
    }
    double *g = buf, *m = buf + N, *v = buf + 2 * N, *keep = buf + 3 * N;
    memset(m, 0, 2 * N * sizeof(double));
    memcpy(keep, phi, N * sizeof(double));
    sa3d_status st = SA3D_OK;
    double loss = (double)NAN;
    for (int it = 0; it <= p->n_iter; it++) {
        sa3d_focal_loss(&loss, it < p->n_iter ? g : NULL, NULL, NULL, phi, img_hw, xy_norm, depth, visible, n_img,
                        n_kpts, work);
        int bad = !isfinite(loss);
        for (size_t b = 0; it < p->n_iter && b < N && !bad; b++) bad = !isfinite(g[b]);
        if (bad) {
            memcpy(phi, keep, N * sizeof(double));
            st = sa3d_fail(err, SA3D_ERR_NUMERIC, "focal optimisation: iteration %d: loss or gradient not finite", it);
            break;
        }
        if (it == p->n_iter) break;
        if (it > 0 && it % SA3D_FOCAL_POLL == 0 && p->progress &&
            p->progress(p->progress_user, "focal", it, p->n_iter)) {
            st = sa3d_fail(err, SA3D_ERR_CANCELLED, "focal optimisation: cancelled at iteration %d", it);
            break;
        }
        memcpy(keep, phi, N * sizeof(double));
        sa3d_adamw_step(phi, m, v, g, N, (long)it + 1, &p->adam);
    }
    if (st == SA3D_OK && final_loss) *final_loss = loss;
    sa3d_free(work);
    sa3d_free(buf);
    return st;
}
