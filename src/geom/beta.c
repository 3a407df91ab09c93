/* Beta distributions of the relation features (METHOD.md 4.2, 4.4; utils/stats/beta_dist.py): digamma,
 * trigamma and ln Gamma in double (recurrence + asymptotic series, thread-safe), the clamped log density,
 * the float32 mode, and the maximum-likelihood fit of scipy's beta.fit(floc=0, fscale=1), solved by
 * safeguarded Newton in log-parameters so that fits with alpha, beta in the millions converge too. */
#include <math.h>
#include "base/base.h"
#include "geom/geom.h"

#define ASYM_MIN 10.0   /* below this the recurrences shift x up; the series then errs by < 1e-16 */

/* Tail of the asymptotic digamma series: sum_k B_2k / (2k x^2k), k = 1..7. */
static double digamma_series(double x) {
    double ix2 = 1.0 / (x * x);
    return ix2 * (1.0 / 12 - ix2 * (1.0 / 120 - ix2 * (1.0 / 252 - ix2 * (1.0 / 240 - ix2 * (1.0 / 132 -
           ix2 * (691.0 / 32760 - ix2 / 12))))));
}

double sa3d_digamma(double x) {
    if (!(x > 0.0)) return (double)NAN;
    if (isinf(x)) return (double)INFINITY;
    double r = 0.0;
    while (x < ASYM_MIN) {   /* psi(x) = psi(x + 1) - 1 / x */
        r -= 1.0 / x;
        x += 1.0;
    }
    return r + log(x) - 0.5 / x - digamma_series(x);
}

/* psi(a) - psi(c). For a, c >= 10 the difference is formed term by term (log of the ratio, then the series
 * differences), so it keeps its relative precision when a and c are huge and close (the tiny-variance fits). */
static double digamma_diff(double a, double c) {
    if (a >= ASYM_MIN && c >= ASYM_MIN && isfinite(a) && isfinite(c))
        return log1p((a - c) / c) - 0.5 / a + 0.5 / c - (digamma_series(a) - digamma_series(c));
    return sa3d_digamma(a) - sa3d_digamma(c);
}

double sa3d_trigamma(double x) {
    if (!(x > 0.0)) return (double)NAN;
    if (isinf(x)) return 0.0;
    double r = 0.0;
    while (x < ASYM_MIN) {   /* psi'(x) = psi'(x + 1) + 1 / x^2 */
        r += 1.0 / (x * x);
        x += 1.0;
    }
    double ix = 1.0 / x, ix2 = ix * ix;
    double q = 1.0 / 6 - ix2 * (1.0 / 30 - ix2 * (1.0 / 42 - ix2 * (1.0 / 30 - ix2 * (5.0 / 66 -
               ix2 * (691.0 / 2730 - ix2 * 7.0 / 6)))));
    return r + ix * (1.0 + ix * (0.5 + ix * q));
}

double sa3d_lgamma_pos(double x) {
    if (!(x > 0.0)) return (double)NAN;
    if (isinf(x)) return (double)INFINITY;
    double p = 1.0;
    while (x < ASYM_MIN) {   /* Gamma(x) = Gamma(x + 1) / x */
        p *= x;
        x += 1.0;
    }
    double ix = 1.0 / x, ix2 = ix * ix;
    double s = ix * (1.0 / 12 - ix2 * (1.0 / 360 - ix2 * (1.0 / 1260 - ix2 * (1.0 / 1680 - ix2 * (1.0 / 1188 -
               ix2 * (691.0 / 360360 - ix2 * (1.0 / 156 - ix2 * 3617.0 / 122400)))))));
    const double half_log_2pi = 0.91893853320467274178;
    return (x - 0.5) * log(x) - x + half_log_2pi + s - log(p);
}

double sa3d_beta_lnb(double alpha, double beta) {
    return sa3d_lgamma_pos(alpha) + sa3d_lgamma_pos(beta) - sa3d_lgamma_pos(alpha + beta);
}

sa3d_beta_term sa3d_beta_term_make(double alpha, double beta) {
    sa3d_beta_term t = { alpha, beta, sa3d_beta_lnb(alpha, beta) };
    return t;
}

float sa3d_beta_mode_f32(float alpha, float beta) {
    if (alpha > 1.0f && beta > 1.0f) {
        float num = alpha - 1.0f;
        float den = alpha + beta;
        den = den - 2.0f;
        return num / den;
    }
    if (alpha == 1.0f && beta == 1.0f) return 0.5f;
    if (alpha <= 1.0f && beta > 1.0f) return 0.0f;
    if (alpha > 1.0f && beta <= 1.0f) return 1.0f;
    return 0.0f;   /* both < 1 (tie of infinite end densities -> 0) and alpha = 1 > beta, beta = 1 > alpha */
}

/* Neumaier-compensated running sum. */
typedef struct ksum { double s, c; } ksum;
static inline void ksum_add(ksum *k, double x) {
    double t = k->s + x;
    if (fabs(k->s) >= fabs(x)) k->c += (k->s - t) + x;
    else k->c += (x - t) + k->s;
    k->s = t;
}
static inline double ksum_get(const ksum *k) { return k->s + k->c; }

/* Residual of the likelihood equations at (a, b). */
static void mle_residual(double F[2], double a, double b, double s1, double s2) {
    F[0] = digamma_diff(a, a + b) - s1;
    F[1] = digamma_diff(b, a + b) - s2;
}

sa3d_status sa3d_beta_fit(double *alpha, double *beta, const double *x /* [n] */, size_t n, double lo, double hi,
                          sa3d_error *err) {
    *alpha = 1.0;
    *beta = 1.0;
    if (!(lo < hi) || !isfinite(lo) || !isfinite(hi))
        return sa3d_fail(err, SA3D_ERR_ARG, "beta fit: bad range [%g, %g]", lo, hi);
    if (n == 0) return SA3D_OK;   /* METHOD.md 4.2.4: no samples keep the uniform Beta(1, 1) */
    const double xlo = lo + SA3D_BETA_FIT_CLAMP, xhi = hi - SA3D_BETA_FIT_CLAMP, span = hi - lo;
    ksum st = { 0, 0 }, sl = { 0, 0 }, sl1 = { 0, 0 };
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) return sa3d_fail(err, SA3D_ERR_ARG, "beta fit: sample %zu is not finite", i);
        double xc = x[i] < xlo ? xlo : (x[i] > xhi ? xhi : x[i]);
        double t = (xc - lo) / span;
        ksum_add(&st, t);
        ksum_add(&sl, log(t));
        ksum_add(&sl1, log1p(-t));
    }
    double dn = (double)n;
    double m = ksum_get(&st) / dn;
    ksum sv = { 0, 0 };
    for (size_t i = 0; i < n; i++) {   /* population variance, two-pass (numpy var(ddof=0)) */
        double xc = x[i] < xlo ? xlo : (x[i] > xhi ? xhi : x[i]);
        double d = (xc - lo) / span - m;
        ksum_add(&sv, d * d);
    }
    double var = ksum_get(&sv) / dn;
    if (!(var > 0.0))
        return sa3d_fail(err, SA3D_ERR_NUMERIC, "beta fit: %zu samples with zero variance have no ML fit", n);
    double s1 = ksum_get(&sl) / dn, s2 = ksum_get(&sl1) / dn;
    double fac = m * (1.0 - m) / var - 1.0;   /* method of moments start */
    double a = m * fac, b = (1.0 - m) * fac;
    if (!(a > 0.0) || !(b > 0.0) || !isfinite(a) || !isfinite(b))
        return sa3d_fail(err, SA3D_ERR_NUMERIC, "beta fit: method-of-moments start (%g, %g) is not positive", a, b);

    /* Newton on F(u, v) = 0 with a = e^u, b = e^v: J_uv = J_ab diag(a, b), J_ab = [[psi'(a) - psi'(a+b),
     * -psi'(a+b)], [-psi'(a+b), psi'(b) - psi'(a+b)]]. A step is halved until the residual drops; when no
     * halving helps, the residual is at its rounding floor and the fit is done. */
    double F[2];
    mle_residual(F, a, b, s1, s2);
    double r0 = hypot(F[0], F[1]);
    for (int it = 0; it < 200 && r0 > 0.0; it++) {
        double tab = sa3d_trigamma(a + b);
        double j11 = (sa3d_trigamma(a) - tab) * a, j12 = -tab * b;
        double j21 = -tab * a, j22 = (sa3d_trigamma(b) - tab) * b;
        double det = j11 * j22 - j12 * j21;
        if (!(fabs(det) > 0.0) || !isfinite(det)) break;
        double du = -(j22 * F[0] - j12 * F[1]) / det;
        double dv = -(-j21 * F[0] + j11 * F[1]) / det;
        double lam = 1.0, big = fmax(fabs(du), fabs(dv));
        if (big > 2.0) lam = 2.0 / big;   /* at most a factor e^2 per step */
        int accepted = 0;
        for (int h = 0; h < 60; h++, lam *= 0.5) {
            double an = a * exp(lam * du), bn = b * exp(lam * dv);
            double Fn[2];
            mle_residual(Fn, an, bn, s1, s2);
            double rn = hypot(Fn[0], Fn[1]);
            if (rn < r0) {
                a = an; b = bn; F[0] = Fn[0]; F[1] = Fn[1]; r0 = rn;
                accepted = 1;
                break;
            }
        }
        if (!accepted || lam * big < 1e-15) break;
    }
    if (!isfinite(a) || !isfinite(b) || !(a > 0.0) || !(b > 0.0))
        return sa3d_fail(err, SA3D_ERR_NUMERIC, "beta fit: Newton ended at (%g, %g)", a, b);
    *alpha = a;
    *beta = b;
    return SA3D_OK;
}
