/* semalign3d: pictures for people - colour maps for scalar maps (depth, similarity). */
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

#ifdef __cplusplus
}
#endif
#endif
