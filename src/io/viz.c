/* Colour maps for pictures of scalar maps. Turbo (Google, 2019) through a polynomial fit of its RGB curves,
 * accurate to about one level of 255. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
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

void sa3d_draw_disc(uint8_t *rgb, int w, int h, float x, float y, float r, const uint8_t colour[3]) {
    int x0 = (int)floorf(x - r), x1 = (int)ceilf(x + r), y0 = (int)floorf(y - r), y1 = (int)ceilf(y + r);
    for (int v = y0 < 0 ? 0 : y0; v <= y1 && v < h; v++)
        for (int u = x0 < 0 ? 0 : x0; u <= x1 && u < w; u++) {
            float dx = (float)u - x, dy = (float)v - y;
            if (dx * dx + dy * dy <= r * r) memcpy(rgb + ((size_t)v * w + u) * 3, colour, 3);
        }
}

void sa3d_draw_line(uint8_t *rgb, int w, int h, float x0, float y0, float x1, float y1, const uint8_t colour[3]) {
    float dx = x1 - x0, dy = y1 - y0, len = sqrtf(dx * dx + dy * dy);
    int steps = (int)ceilf(len) + 1;
    if (!(steps > 0) || steps > 1 << 20) return;   /* NaN or absurd coordinates: draw nothing */
    for (int i = 0; i <= steps; i++) {
        float t = (float)i / (float)steps;
        sa3d_draw_disc(rgb, w, h, x0 + t * dx, y0 + t * dy, 1.0f, colour);
    }
}

void sa3d_side_by_side(uint8_t **out, int *w, int *h, const uint8_t *a, int wa, int ha, const uint8_t *b, int wb,
                       int hb) {
    *w = wa + wb;
    *h = ha > hb ? ha : hb;
    *out = malloc((size_t)*w * *h * 3);
    if (!*out) return;
    memset(*out, 255, (size_t)*w * *h * 3);
    for (int y = 0; y < ha; y++) memcpy(*out + ((size_t)y * *w) * 3, a + (size_t)y * wa * 3, (size_t)wa * 3);
    for (int y = 0; y < hb; y++) memcpy(*out + ((size_t)y * *w + wa) * 3, b + (size_t)y * wb * 3, (size_t)wb * 3);
}
