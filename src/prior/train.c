/* Training instances of a category (METHOD.md 4.1, 3.3): every image of the split and its mirror, keypoints
 * snapped into the eroded object mask, pseudo depth read at the snapped pixel, focal lengths optimised so that
 * the scale-free keypoint geometry agrees across instances and averaged with the mirror's, keypoints lifted to
 * 3D; and the seeded noise augmentation of the lifted keypoints. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "base/rng.h"
#include "prior/build.h"

sa3d_train_params sa3d_train_params_default(void) {
    sa3d_train_params p = { 2, 1000, 0.2 };
    return p;
}

void sa3d_train_set_free(sa3d_train_set *ts) {
    if (!ts) return;
    sa3d_free(ts->id);
    sa3d_free(ts->size);
    sa3d_free(ts->vis);
    sa3d_free(ts->kp);
    sa3d_free(ts->snap);
    sa3d_free(ts->z);
    sa3d_free(ts->phi);
    sa3d_free(ts->P);
    memset(ts, 0, sizeof *ts);
}

/* One cv2.erode pass with a 2 x 2 ones kernel (anchor at its centre, (1, 1)): dst(x, y) = min of src over
 * (x-1..x, y-1..y), pixels outside the image not counted (OpenCV's default border for erosion). */
static void erode_2x2(uint8_t *dst, const uint8_t *src, int W, int H) {
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t v = src[(size_t)y * W + x];
            if (x > 0) v &= src[(size_t)y * W + x - 1];
            if (y > 0) v &= src[(size_t)(y - 1) * W + x];
            if (x > 0 && y > 0) v &= src[(size_t)(y - 1) * W + x - 1];
            dst[(size_t)y * W + x] = v;
        }
}

void sa3d_snap_to_mask(float (*snap)[2], const float (*kp)[2], const uint8_t *vis, int n, const float *mask, int W,
                       int H, int iterations, uint8_t *tmp) {
    size_t npx = (size_t)W * H;
    uint8_t *a = tmp, *b = tmp + npx;
    size_t count = 0;
    for (size_t i = 0; i < npx; i++) count += (a[i] = mask[i] != 0.0f);
    size_t full = count;
    for (int it = 0; it < iterations; it++) {
        erode_2x2(b, a, W, H);
        uint8_t *t = a; a = b; b = t;
    }
    count = 0;
    for (size_t i = 0; i < npx; i++) count += a[i];
    if (count == 0 && full > 0)   /* eroded away: snap into the mask itself */
        for (size_t i = 0; i < npx; i++) a[i] = mask[i] != 0.0f;
    for (int k = 0; k < n; k++) {
        snap[k][0] = kp[k][0];
        snap[k][1] = kp[k][1];
        if (!vis[k] || full == 0) continue;
        int u = (int)lrintf(kp[k][0]), v = (int)lrintf(kp[k][1]);
        u = u < 0 ? 0 : (u >= W ? W - 1 : u);
        v = v < 0 ? 0 : (v >= H ? H - 1 : v);
        if (a[(size_t)v * W + u]) continue;   /* already inside: stays put */
        long best = -1, best_d = 0;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                if (!a[(size_t)y * W + x]) continue;
                long d = (long)(x - u) * (x - u) + (long)(y - v) * (y - v);
                if (best < 0 || d < best_d) { best = (long)y * W + x; best_d = d; }
            }
        snap[k][0] = (float)(best % W);
        snap[k][1] = (float)(best / W);
    }
}

void sa3d_augment(double *out, uint8_t *vis_out, const double *P, const uint8_t *vis, int n_inst, int n,
                  int copies, double rate, uint64_t seed) {
    for (int i = 0; i < n_inst; i++) {
        const double *Pi = P + (size_t)i * n * 3;
        const uint8_t *vi = vis + (size_t)i * n;
        double dmin = INFINITY;
        for (int a = 0; a < n; a++)
            for (int b = a + 1; b < n; b++) {
                if (!vi[a] || !vi[b]) continue;
                double dx = Pi[a * 3] - Pi[b * 3], dy = Pi[a * 3 + 1] - Pi[b * 3 + 1], dz = Pi[a * 3 + 2] - Pi[b * 3 + 2];
                double d = sqrt(dx * dx + dy * dy + dz * dz);
                if (d < dmin) dmin = d;
            }
        double sd = isfinite(dmin) ? rate * dmin : 0.0;
        sa3d_rng r = sa3d_rng_for(seed, 0x415547 /* "AUG" */, (uint64_t)i);
        for (int c = 0; c < copies; c++) {
            size_t m = (size_t)i * copies + c;
            memcpy(vis_out + m * n, vi, (size_t)n);
            for (int k = 0; k < n; k++)
                for (int d = 0; d < 3; d++) {
                    double e = sa3d_rng_normal(&r);   /* drawn for every slot: streams do not depend on vis */
                    out[(m * n + k) * 3 + d] = vi[k] ? Pi[k * 3 + d] + sd * e : (double)NAN;
                }
        }
    }
}

/* Reads one instance (image i, mirrored or not): annotation, mask, depth; fills its rows of ts. */
static sa3d_status read_instance(sa3d_train_set *ts, int inst, sa3d_dataset *ds, const char *category,
                                 const int flip_map[SA3D_MAX_KPS], sa3d_provider *masks, sa3d_provider *depth,
                                 const sa3d_train_params *p, sa3d_error *err) {
    int N = ts->n_img, n = ts->n_slots, i = inst % N, flip = inst >= N;
    const char *id = ts->id[i];
    const sa3d_image_anno *an;
    sa3d_map mask = { 0 }, disp = { 0 };
    float *z = NULL;
    uint8_t *tmp = NULL;
    sa3d_status s;
    if ((s = sa3d_dataset_image(ds, category, id, &an, err))) return s;
    int W = an->width, H = an->height;
    ts->size[inst][0] = W;
    ts->size[inst][1] = H;
    uint8_t *vis = ts->vis + (size_t)inst * n;
    float (*kp)[2] = ts->kp + (size_t)inst * n;
    for (int k = 0; k < n && k < an->n_slots; k++) {
        if (!an->visible[k]) continue;
        int slot = flip ? flip_map[k] : k;
        if (slot < 0 || slot >= n) continue;
        vis[slot] = 1;
        kp[slot][0] = flip ? (float)(W - 1) - an->kps[k][0] : an->kps[k][0];
        kp[slot][1] = an->kps[k][1];
    }
    if ((s = sa3d_provider_get(masks, category, id, flip, &mask, err)) ||
        (s = sa3d_provider_get(depth, category, id, flip, &disp, err)))
        goto done;
    if (mask.h != H || mask.w != W || disp.h != H || disp.w != W) {
        s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s/%s: mask %d x %d and depth %d x %d do not match the image %d x %d",
                      category, id, mask.w, mask.h, disp.w, disp.h, W, H);
        goto done;
    }
    z = sa3d_malloc((size_t)W * H * sizeof(float));
    tmp = sa3d_malloc((size_t)2 * W * H);
    if (!z || !tmp) { s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s/%s: out of memory", category, id); goto done; }
    if ((s = sa3d_pseudo_depth_f32(z, disp.data, H, W, 0, err))) {   /* the provider already mirrored it */
        sa3d_error_prefix(err, "%s/%s", category, id);
        goto done;
    }
    float (*snap)[2] = ts->snap + (size_t)inst * n;
    sa3d_snap_to_mask(snap, (const float (*)[2])kp, vis, n, mask.data, W, H, p->erode_iterations, tmp);
    for (int k = 0; k < n; k++) {
        if (!vis[k]) continue;
        int u = (int)lrintf(snap[k][0]), v = (int)lrintf(snap[k][1]);
        u = u < 0 ? 0 : (u >= W ? W - 1 : u);
        v = v < 0 ? 0 : (v >= H ? H - 1 : v);
        ts->z[(size_t)inst * n + k] = z[(size_t)v * W + u];
        ts->used[k] = 1;
    }
done:
    free(mask.data);
    free(disp.data);
    sa3d_free(z);
    sa3d_free(tmp);
    return s;
}

sa3d_status sa3d_train_set_collect(sa3d_train_set *ts, sa3d_dataset *ds, const char *split, const char *category,
                                   int n_slots, const int flip_map[SA3D_MAX_KPS], sa3d_provider *masks,
                                   sa3d_provider *depth, const sa3d_train_params *p,
                                   void (*progress)(void *user, int done, int total), void *user, sa3d_error *err) {
    memset(ts, 0, sizeof *ts);
    sa3d_train_params defaults = sa3d_train_params_default();
    if (!p) p = &defaults;
    if (n_slots < 4 || n_slots > SA3D_MAX_KPS)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: %d keypoint slots; expected 4..%d", category, n_slots, SA3D_MAX_KPS);
    const char *const *ids;
    int N = sa3d_dataset_split_images(ds, split, category, &ids, err);
    if (N < 0) return err->code;
    if (N < 2) return sa3d_fail(err, SA3D_ERR_ARG, "%s: %d training images in split %s; need at least 2", category,
                                N, split);
    int n = n_slots, M = 2 * N;
    ts->n_slots = n;
    ts->n_img = N;
    ts->n_inst = M;
    ts->id = sa3d_calloc((size_t)N, sizeof *ts->id);
    ts->size = sa3d_calloc((size_t)M, sizeof *ts->size);
    ts->vis = sa3d_calloc((size_t)M * n, 1);
    ts->kp = sa3d_calloc((size_t)M * n, sizeof *ts->kp);
    ts->snap = sa3d_calloc((size_t)M * n, sizeof *ts->snap);
    ts->z = sa3d_calloc((size_t)M * n, sizeof *ts->z);
    ts->phi = sa3d_calloc((size_t)M, sizeof *ts->phi);
    ts->P = sa3d_calloc((size_t)M * n * 3, sizeof *ts->P);
    double *hw = sa3d_calloc((size_t)M * 2, sizeof *hw), *xy = sa3d_calloc((size_t)M * n * 2, sizeof *xy);
    sa3d_status s = SA3D_OK;
    if (!ts->id || !ts->size || !ts->vis || !ts->kp || !ts->snap || !ts->z || !ts->phi || !ts->P || !hw || !xy) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory for %d training instances", category, M);
        goto done;
    }
    for (int i = 0; i < N; i++) snprintf(ts->id[i], sizeof ts->id[i], "%s", ids[i]);
    for (int inst = 0; inst < M; inst++) {
        if ((s = read_instance(ts, inst, ds, category, flip_map, masks, depth, p, err))) goto done;
        if (progress) progress(user, inst + 1, M);
    }
    /* METHOD.md 3.3: one phi per instance from the variance loss on the snapped keypoints (x_n = pixel / S),
     * then the mean of an image's and its mirror's. */
    for (int inst = 0; inst < M; inst++) {
        double S = ts->size[inst][0] > ts->size[inst][1] ? ts->size[inst][0] : ts->size[inst][1];
        hw[inst * 2] = ts->size[inst][1];
        hw[inst * 2 + 1] = ts->size[inst][0];
        ts->phi[inst] = p->phi_init;
        for (int k = 0; k < n; k++) {
            xy[((size_t)inst * n + k) * 2] = (double)ts->snap[(size_t)inst * n + k][0] / S;
            xy[((size_t)inst * n + k) * 2 + 1] = (double)ts->snap[(size_t)inst * n + k][1] / S;
        }
    }
    sa3d_focal_opt_params fp = sa3d_focal_opt_params_default();
    fp.n_iter = p->focal_iterations;
    if ((s = sa3d_focal_optimize(ts->phi, &ts->focal_loss, hw, xy, ts->z, ts->vis, M, n, &fp, err))) {
        sa3d_error_prefix(err, "%s: focal lengths", category);
        goto done;
    }
    for (int i = 0; i < N; i++) {
        double a = 0.5 * (fabs(ts->phi[i]) + fabs(ts->phi[i + N]));   /* the loss uses |phi| */
        ts->phi[i] = ts->phi[i + N] = a;
    }
    sa3d_backproject_kpts(ts->P, ts->phi, hw, xy, ts->z, M, n);
    for (size_t j = 0; j < (size_t)M * n; j++)
        if (!ts->vis[j]) ts->P[j * 3] = ts->P[j * 3 + 1] = ts->P[j * 3 + 2] = (double)NAN;
done:
    sa3d_free(hw);
    sa3d_free(xy);
    if (s) sa3d_train_set_free(ts);
    return s;
}
