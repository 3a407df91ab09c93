/* semalign3d: pictures for people - colour maps for scalar maps (depth, similarity), and the few drawing
 * primitives the match and demo pictures need (discs, lines, two images side by side). Images are [h][w][3]
 * 8-bit RGB; drawing clips to the image. */
#ifndef SEMALIGN3D_VIZ_H
#define SEMALIGN3D_VIZ_H

#include <stddef.h>
#include <stdint.h>
#include "semalign3d/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Maps x[n] linearly from [min, max] of its finite values to the "turbo" colour map (blue = low, red = high)
 * into rgb[n][3]. A constant map becomes the middle colour; non-finite values become black. */
SA3D_API void sa3d_colormap(uint8_t *rgb, const float *x, size_t n);

/* A filled disc of radius r centred at (x, y), and a line of width about 2 px from (x0, y0) to (x1, y1). */
SA3D_API void sa3d_draw_disc(uint8_t *rgb, int w, int h, float x, float y, float r, const uint8_t colour[3]);
SA3D_API void sa3d_draw_line(uint8_t *rgb, int w, int h, float x0, float y0, float x1, float y1,
                             const uint8_t colour[3]);
/* a and b side by side on a white canvas of height max(ha, hb): *out (malloc'd, free()) is [*h][*w][3], b starts
 * at column wa. NULL out on allocation failure. */
SA3D_API void sa3d_side_by_side(uint8_t **out, int *w, int *h, const uint8_t *a, int wa, int ha, const uint8_t *b,
                                int wb, int hb);

#ifdef __cplusplus
}
#endif
#endif
