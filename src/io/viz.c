/* Colour maps for pictures of scalar maps. Turbo (Google, 2019) through a polynomial fit of its RGB curves,
 * accurate to about one level of 255. */
#include <math.h>
#include "semalign3d/viz.h"

static uint8_t to_u8(double v) {
    v = v < 0.0 ? 0.0 : (v > 1.0 ? 1.0 : v);
    return (uint8_t)lround(v * 255.0);
}

static void turbo(double t, uint8_t *rgb) {
    double r = 0.13572138 + t * (4.61539260 + t * (-42.66032258 + t * (132.13108234 + t * (-152.94239396 + t * 59.28637943))));
    double g = 0.09140261 + t * (2.19418839 + t * (4.84296658 + t * (-14.18503333 + t * (4.27729857 + t * 2.82956604))));
    double b = 0.10667330 + t * (12.64194608 + t * (-60.58204836 + t * (110.36276771 + t * (-89.90310912 + t * 27.34824973))));
    rgb[0] = to_u8(r);
    rgb[1] = to_u8(g);
    rgb[2] = to_u8(b);
}

void sa3d_colormap(uint8_t *rgb, const float *x, size_t n) {
    double lo = HUGE_VAL, hi = -HUGE_VAL;
    for (size_t i = 0; i < n; i++)
        if (isfinite(x[i])) {
            lo = fmin(lo, (double)x[i]);
            hi = fmax(hi, (double)x[i]);
        }
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) { rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = 0; continue; }
        double t = hi > lo ? ((double)x[i] - lo) / (hi - lo) : 0.5;
        turbo(t, rgb + 3 * i);
    }
}
