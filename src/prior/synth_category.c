/* A synthetic category with a KNOWN 3D shape, in memory, for the prior builder's tests and benchmark: a
 * mirror-symmetric keypoint shape seen by a pinhole camera of known focal length under random similarity poses
 * with mild per-image shape noise. The disparity is chosen so that the method's pseudo-depth (1 - 0.3 d / max d,
 * METHOD.md 3.2) is proportional to the true depth, so lifting with the true focal length gives the true shape up
 * to a scale: the builder should recover the shape up to a similarity. Masks are disks around the projected
 * keypoints; the feature map holds a code per keypoint slot at the keypoint cells and table vectors elsewhere. */
#include <math.h>
#include <string.h>
#include "base/base.h"
#include "base/rng.h"
#include "geom/geom.h"
#include "prior/prior_internal.h"

#define TAG_SHAPE 1
#define TAG_POSE 2
#define TAG_CODE 3
#define N_BG 61   /* background feature vectors, indexed by a hash of (image, cell) */

void sa3d_prior_synth_params_default(sa3d_prior_synth_params *p) {
    memset(p, 0, sizeof *p);
    p->n_slots = 10;
    p->n_images = 12;
    p->w = 200;
    p->h = 150;
    p->C = 16;
    p->g = 60;
    p->focal = 1.5;
    p->shape_noise = 0.01;
    p->p_hidden = 0.15;
}

void sa3d_prior_synth_free(sa3d_prior_synth *s) {
    if (!s) return;
    for (int i = 0; s->disp && i < s->p.n_images; i++) sa3d_free(s->disp[i]);
    for (int i = 0; s->mask && i < s->p.n_images; i++) sa3d_free(s->mask[i]);
    sa3d_free(s->disp); sa3d_free(s->mask); sa3d_free(s->annos); sa3d_free(s->anno_ptrs); sa3d_free(s->codes);
    sa3d_free(s);
}

static void rot(double R[9], double yaw, double pitch, double roll) {
    double cy = cos(yaw), sy = sin(yaw), cp = cos(pitch), sp = sin(pitch), cr = cos(roll), sr = sin(roll);
    double Ry[9] = { cy, 0, sy, 0, 1, 0, -sy, 0, cy }, Rx[9] = { 1, 0, 0, 0, cp, -sp, 0, sp, cp };
    double Rz[9] = { cr, -sr, 0, sr, cr, 0, 0, 0, 1 }, T[9];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            T[3 * i + j] = 0;
            for (int k = 0; k < 3; k++) T[3 * i + j] += Rx[3 * i + k] * Ry[3 * k + j];
        }
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            R[3 * i + j] = 0;
            for (int k = 0; k < 3; k++) R[3 * i + j] += Rz[3 * i + k] * T[3 * k + j];
        }
}

sa3d_status sa3d_prior_synth_make(sa3d_prior_synth **out, const sa3d_prior_synth_params *p, sa3d_error *err) {
    *out = NULL;
    int n = p->n_slots, N = p->n_images, W = p->w, H = p->h;
    if (n < 4 || n > SA3D_MAX_KPS || N < 2 || W < 32 || H < 32 || p->C < 1 || p->g < 1)
        return sa3d_fail(err, SA3D_ERR_ARG, "synthetic category: parameters out of range");
    sa3d_prior_synth *s = sa3d_calloc(1, sizeof *s);
    if (!s) return sa3d_fail(err, SA3D_ERR_NOMEM, "synthetic category: out of memory");
    s->p = *p;
    s->annos = sa3d_calloc((size_t)N, sizeof(sa3d_image_anno));
    s->anno_ptrs = sa3d_calloc((size_t)N, sizeof(sa3d_image_anno *));
    s->disp = sa3d_calloc((size_t)N, sizeof(float *));
    s->mask = sa3d_calloc((size_t)N, sizeof(uint8_t *));
    s->codes = sa3d_malloc((size_t)(n + N_BG) * (size_t)p->C * sizeof(float));
    if (!s->annos || !s->anno_ptrs || !s->disp || !s->mask || !s->codes) goto nomem;
    /* the shape: pairs (2j, 2j + 1) mirrored in x (flip map swaps them), an odd last slot on the plane x = 0 */
    sa3d_rng r = sa3d_rng_for(p->seed, TAG_SHAPE, 0);
    for (int k = 0; k < n; k++) s->flip[k] = (k % 2 == 0) ? (k + 1 < n ? k + 1 : k) : k - 1;
    for (int k = 0; k < n; k += 2) {
        double x = 0.2 + 0.6 * sa3d_rng_uniform(&r), y = 1.6 * sa3d_rng_uniform(&r) - 0.8;
        double z = 1.6 * sa3d_rng_uniform(&r) - 0.8;
        if (k + 1 < n) {
            s->shape[k][0] = x; s->shape[k][1] = y; s->shape[k][2] = z;
            s->shape[k + 1][0] = -x; s->shape[k + 1][1] = y; s->shape[k + 1][2] = z;
        } else {
            s->shape[k][0] = 0.0; s->shape[k][1] = y; s->shape[k][2] = z;
        }
    }
    for (int c = 0; c < n + N_BG; c++) {   /* unit codes: one per slot, then the background table */
        sa3d_rng rc = sa3d_rng_for(p->seed, TAG_CODE, (uint64_t)c);
        double nrm = 0.0;
        float *v = s->codes + (size_t)c * p->C;
        for (int i = 0; i < p->C; i++) { v[i] = (float)sa3d_rng_normal(&rc); nrm += (double)v[i] * (double)v[i]; }
        for (int i = 0; i < p->C; i++) v[i] = (float)((double)v[i] / sqrt(nrm));
    }
    double S = W > H ? W : H, radius = 0.035 * S;
    for (int i = 0; i < N; i++) {
        sa3d_image_anno *a = &s->annos[i];
        s->anno_ptrs[i] = a;
        snprintf(a->id, sizeof a->id, "synth3d_%06d", i + 1);
        snprintf(a->category, sizeof a->category, "synth");
        a->width = W;
        a->height = H;
        a->n_slots = n;
        sa3d_rng q = sa3d_rng_for(p->seed, TAG_POSE, (uint64_t)i);
        double R[9], sc = 0.85 + 0.3 * sa3d_rng_uniform(&q), Z0 = 6.0;
        rot(R, 6.283185307179586 * sa3d_rng_uniform(&q), 0.5 * sa3d_rng_uniform(&q) - 0.25,
            0.2 * sa3d_rng_uniform(&q) - 0.1);
        double tx = 0.4 * sa3d_rng_uniform(&q) - 0.2, ty = 0.3 * sa3d_rng_uniform(&q) - 0.15;
        double X[SA3D_MAX_KPS][3], zmin = HUGE_VAL, uv[SA3D_MAX_KPS][2];
        int n_vis = 0;
        for (int k = 0; k < n; k++) {
            double v[3];
            for (int d = 0; d < 3; d++) v[d] = s->shape[k][d] + p->shape_noise * sa3d_rng_normal(&q);
            for (int d = 0; d < 3; d++)
                X[k][d] = sc * (R[3 * d] * v[0] + R[3 * d + 1] * v[1] + R[3 * d + 2] * v[2]);
            X[k][0] += tx * Z0;
            X[k][1] += ty * Z0;
            X[k][2] += Z0;
            if (X[k][2] < zmin) zmin = X[k][2];
            uv[k][0] = (p->focal * X[k][0] / X[k][2] + W / (2.0 * S)) * S;   /* METHOD.md 2.3 projection */
            uv[k][1] = (p->focal * X[k][1] / X[k][2] + H / (2.0 * S)) * S;
            int in_img = uv[k][0] >= 0 && uv[k][0] <= W - 1 && uv[k][1] >= 0 && uv[k][1] <= H - 1;
            a->visible[k] = (unsigned char)(in_img && sa3d_rng_uniform(&q) >= p->p_hidden);
            a->kps[k][0] = a->visible[k] ? (float)floor(uv[k][0] + 0.5) : 0.0f;
            a->kps[k][1] = a->visible[k] ? (float)floor(uv[k][1] + 0.5) : 0.0f;
            n_vis += a->visible[k];
        }
        for (int k = 0; k < n && n_vis < 4; k++)   /* every image shows at least 4 keypoints */
            if (!a->visible[k] && uv[k][0] >= 0 && uv[k][0] <= W - 1 && uv[k][1] >= 0 && uv[k][1] <= H - 1) {
                a->visible[k] = 1;
                a->kps[k][0] = (float)floor(uv[k][0] + 0.5);
                a->kps[k][1] = (float)floor(uv[k][1] + 0.5);
                n_vis++;
            }
        a->bbox[2] = (float)W;
        a->bbox[3] = (float)H;
        /* mask: disks around every projected keypoint (hidden ones too: they are occluded, not absent); depth:
         * inverse-distance blend of the keypoint depths; pseudo-depth 0.7 Z / zmin, so d = (1 - 0.7 Z / zmin) */
        size_t px = (size_t)W * H;
        s->disp[i] = sa3d_malloc(px * sizeof(float));
        s->mask[i] = sa3d_malloc(px);
        if (!s->disp[i] || !s->mask[i]) goto nomem;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                double ws = 0.0, zs = 0.0, dmin = HUGE_VAL;
                for (int k = 0; k < n; k++) {
                    double dx = x - uv[k][0], dy = y - uv[k][1], d2 = dx * dx + dy * dy;
                    double wk = 1.0 / (d2 * d2 + 1e-3);
                    ws += wk;
                    zs += wk * X[k][2];
                    if (d2 < dmin) dmin = d2;
                }
                int in = dmin <= radius * radius;
                double z = in ? zs / ws : zmin / 0.7;
                double d = 1.0 - 0.7 * z / zmin;
                s->mask[i][(size_t)y * W + x] = (uint8_t)in;
                s->disp[i][(size_t)y * W + x] = (float)(d > 0.0 ? d : 0.0);
            }
    }
    *out = s;
    return SA3D_OK;
nomem:
    sa3d_prior_synth_free(s);
    return sa3d_fail(err, SA3D_ERR_NOMEM, "synthetic category: out of memory");
}

static sa3d_status synth_maps(void *user, int i, float *disp, uint8_t *mask, sa3d_error *err) {
    const sa3d_prior_synth *s = user;
    size_t px = (size_t)s->p.w * s->p.h;
    memcpy(disp, s->disp[i], px * sizeof(float));
    memcpy(mask, s->mask[i], px);
    (void)err;
    return SA3D_OK;
}

static sa3d_status synth_features(void *user, int i, int flip, float *F, sa3d_error *err) {
    const sa3d_prior_synth *s = user;
    int C = s->p.C, g = s->p.g, W = s->p.w, H = s->p.h;
    size_t gg = (size_t)g * g;
    for (size_t cell = 0; cell < gg; cell++) {   /* background: a table vector chosen by (image, flip, cell) */
        uint64_t h = (uint64_t)i * 1000003u + (uint64_t)flip * 7919u + cell * 2654435761u;
        const float *v = s->codes + (size_t)(s->p.n_slots + (int)(h % N_BG)) * C;
        for (int c = 0; c < C; c++) F[(size_t)c * gg + cell] = v[c];
    }
    const sa3d_image_anno *a = &s->annos[i];
    for (int k = 0; k < s->p.n_slots; k++) {
        if (!a->visible[k]) continue;
        int32_t px[2] = { (int32_t)a->kps[k][0], (int32_t)a->kps[k][1] }, cell[2];
        int slot = k;
        if (flip) { px[0] = W - 1 - px[0]; slot = s->flip[k]; }
        sa3d_pixel_to_cell(cell, px, 1, H, W, g);
        const float *v = s->codes + (size_t)slot * C;
        for (int c = 0; c < C; c++) F[(size_t)c * gg + (size_t)cell[1] * g + cell[0]] = v[c];
    }
    (void)err;
    return SA3D_OK;
}

sa3d_prior_source sa3d_prior_synth_source(sa3d_prior_synth *s) {
    sa3d_prior_source src = { s, synth_maps, synth_features };
    return src;
}
