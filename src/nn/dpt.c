/* Depth Anything V2 neck and head (Hugging Face DepthAnythingForDepthEstimation, METHOD.md 3.2): reassemble the
 * four backbone stages into maps at 4x, 2x, 1x and 1/2x the patch grid, project them to the fusion width, fuse
 * from the coarsest up with pre-activation residual units, then the three-convolution head to full resolution. */
#include <math.h>
#include <string.h>
#include "nn/model.h"
#include "tensor/kernels.h"

/* Size of the reassembled map of stage s: ConvTranspose (k = s = f) multiplies, a 3x3 conv with stride 1/f and
 * padding 1 divides rounding up, factor 1 keeps the patch grid. */
void sa3d_dpt_reassembled_size(const sa3d_dpt_config *c, int s, int gh, int gw, int *h, int *w) {
    if (c->reassemble_num[s] > 1) { *h = gh * c->reassemble_num[s]; *w = gw * c->reassemble_num[s]; }
    else if (c->reassemble_den[s] > 1) { *h = (gh - 1) / c->reassemble_den[s] + 1; *w = (gw - 1) / c->reassemble_den[s] + 1; }
    else { *h = gh; *w = gw; }
}

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

typedef struct dpt_sizes {
    size_t proj, reasm[4], feat[4], res, fused, convt, col, head1, head_up, head2, depth;
    int rh[4], rw[4];
} dpt_sizes;

/* Every activation size for an H x W input (floats). */
static void dpt_plan(const sa3d_model *m, int H, int W, dpt_sizes *z) {
    const sa3d_dpt_config *c = &m->dpt;
    int P = m->vit.patch_size, gh = H / P, gw = W / P, F = c->fusion_hidden_size, Fh = F / 2, Hh = c->head_hidden_size;
    memset(z, 0, sizeof *z);
    size_t col = 0, max_map = 0;
    for (int s = 0; s < 4; s++) {
        int N = c->neck_hidden_sizes[s], f = c->reassemble_num[s];
        sa3d_dpt_reassembled_size(c, s, gh, gw, &z->rh[s], &z->rw[s]);
        size_t hw = (size_t)z->rh[s] * z->rw[s];
        z->proj = max_sz(z->proj, (size_t)N * gh * gw);
        z->reasm[s] = (size_t)N * hw;
        z->feat[s] = (size_t)F * hw;
        max_map = max_sz(max_map, hw);
        if (f > 1) z->convt = max_sz(z->convt, (size_t)N * f * f * gh * gw);
        col = max_sz(col, sa3d_conv2d_scratch_floats(N, 3, z->rw[s]));   /* resize conv and neck.convs */
        col = max_sz(col, sa3d_conv2d_scratch_floats(F, 3, z->rw[s]));   /* residual units */
    }
    size_t top_h = (size_t)2 * z->rh[0], top_w = (size_t)2 * z->rw[0];   /* the last fusion layer doubles */
    z->res = (size_t)F * max_map;
    z->fused = (size_t)F * max_sz(max_map, top_h * top_w);
    z->head1 = (size_t)Fh * top_h * top_w;
    z->head_up = (size_t)Fh * gh * P * gw * P;
    z->head2 = (size_t)Hh * gh * P * gw * P;
    z->depth = (size_t)gh * P * gw * P;
    col = max_sz(col, sa3d_conv2d_scratch_floats(F, 3, (int)top_w));
    col = max_sz(col, sa3d_conv2d_scratch_floats(Fh, 3, gw * P));
    z->col = col;
}

size_t sa3d_dpt_workspace_floats(const sa3d_model *m, int H, int W) {
    dpt_sizes z;
    dpt_plan(m, H, W, &z);
    size_t n = z.proj + 2 * z.res + 2 * z.fused + z.convt + z.col + z.head1 + z.head_up + z.head2 + z.depth;
    for (int s = 0; s < 4; s++) n += z.reasm[s] + z.feat[s];
    return n + 32 * 16;
}

void sa3d_dpt_carve(const sa3d_model *m, sa3d_workspace *ws, float **cursor) {
    dpt_sizes z;
    dpt_plan(m, ws->H, ws->W, &z);
    float *cur = *cursor;
#define TAKE(ptr, n) do { (ptr) = cur; cur += ((size_t)(n) + 15) & ~(size_t)15; } while (0)
    TAKE(ws->proj, z.proj);
    for (int s = 0; s < 4; s++) {
        TAKE(ws->reasm[s], z.reasm[s]);
        TAKE(ws->feat[s], z.feat[s]);
        ws->rh[s] = z.rh[s];
        ws->rw[s] = z.rw[s];
    }
    TAKE(ws->res_a, z.res); TAKE(ws->res_b, z.res);
    TAKE(ws->fused, z.fused); TAKE(ws->up, z.fused);
    TAKE(ws->convt_tmp, z.convt);
    TAKE(ws->col, z.col); ws->col_floats = z.col;
    TAKE(ws->head1, z.head1); TAKE(ws->head_up, z.head_up); TAKE(ws->head2, z.head2); TAKE(ws->depth, z.depth);
#undef TAKE
    *cursor = cur;
}

/* DepthAnythingPreActResidualLayer: out = x + conv2(relu(conv1(relu(x)))). out, tmp: [F][h][w], distinct from x. */
static void preact_residual(sa3d_workspace *ws, float *out, const float *x, const float *c1w, const float *c1b,
                            const float *c2w, const float *c2b, int F, int h, int w, float *tmp) {
    size_t n = (size_t)F * h * w;
    sa3d_relu_copy(tmp, x, n);
    sa3d_conv2d(out, tmp, c1w, c1b, F, h, w, F, 3, 1, 1, ws->col, ws->col_floats);
    sa3d_relu(out, n);
    sa3d_conv2d(tmp, out, c2w, c2b, F, h, w, F, 3, 1, 1, ws->col, ws->col_floats);
    sa3d_add(out, tmp, x, n);
}

void sa3d_dpt_forward(const sa3d_model *m, sa3d_workspace *ws) {
    const sa3d_dpt_config *c = &m->dpt;
    const sa3d_dpt_weights *w = &m->dw;
    int D = m->vit.hidden_size, gh = ws->gh, gw = ws->gw, HW = gh * gw, P = m->vit.patch_size;
    int F = c->fusion_hidden_size, Fh = F / 2, Hh = c->head_hidden_size;
    size_t TD = (size_t)ws->T * D;

    /* DepthAnythingReassembleStage + neck.convs: drop CLS, tokens [HW][D] -> 1x1 projection [N][gh][gw] ->
     * resize -> 3x3 conv to the fusion width [F][rh][rw]. */
    for (int s = 0; s < 4; s++) {
        int N = c->neck_hidden_sizes[s];
        const float *tok = ws->stage + (size_t)s * TD + (size_t)ws->n_prefix * D;
        sa3d_conv1x1(ws->proj, tok, w->reasm_proj_w[s], w->reasm_proj_b[s], D, HW, N, 1);
        if (c->reassemble_num[s] > 1)
            sa3d_conv_transpose2d(ws->reasm[s], ws->proj, w->reasm_resize_w[s], w->reasm_resize_b[s], N, gh, gw, N,
                                  c->reassemble_num[s], ws->convt_tmp);
        else if (c->reassemble_den[s] > 1)
            sa3d_conv2d(ws->reasm[s], ws->proj, w->reasm_resize_w[s], w->reasm_resize_b[s], N, gh, gw, N, 3,
                        c->reassemble_den[s], 1, ws->col, ws->col_floats);
        else
            memcpy(ws->reasm[s], ws->proj, (size_t)N * HW * sizeof(float));
        sa3d_conv2d(ws->feat[s], ws->reasm[s], w->neck_conv_w[s], NULL, N, ws->rh[s], ws->rw[s], F, 3, 1, 1, ws->col,
                    ws->col_floats);
    }

    /* DepthAnythingFeatureFusionStage: from the coarsest map up. Each layer adds residual_layer1 of the next
     * finer map (same size by construction: the previous layer resized to it), applies residual_layer2, resizes
     * (bilinear, align_corners=True) to the next map's size or 2x for the last, and projects 1x1. */
    int fh = ws->rh[3], fw = ws->rw[3];
    for (int idx = 0; idx < 4; idx++) {
        int s = 3 - idx;
        const sa3d_fusion_layer *L = &w->fusion[idx];
        const float *x = ws->feat[s];
        if (idx > 0) {
            preact_residual(ws, ws->res_a, ws->feat[s], L->r1c1_w, L->r1c1_b, L->r1c2_w, L->r1c2_b, F, fh, fw, ws->res_b);
            sa3d_add(ws->fused, ws->fused, ws->res_a, (size_t)F * fh * fw);
            x = ws->fused;
        }
        preact_residual(ws, ws->res_a, x, L->r2c1_w, L->r2c1_b, L->r2c2_w, L->r2c2_b, F, fh, fw, ws->res_b);
        int th = idx < 3 ? ws->rh[s - 1] : 2 * fh, tw = idx < 3 ? ws->rw[s - 1] : 2 * fw;
        sa3d_resize_bilinear(ws->up, ws->res_a, F, fh, fw, th, tw, 1);
        sa3d_conv1x1(ws->fused, ws->up, L->proj_w, L->proj_b, F, th * tw, F, 0);
        fh = th;
        fw = tw;
    }

    /* DepthAnythingDepthEstimationHead: conv1 (F -> F/2), resize to the patch-grid resolution, conv2, ReLU,
     * conv3 (-> 1), ReLU (relative) or sigmoid (metric), times max_depth. */
    int OH = gh * P, OW = gw * P;
    sa3d_conv2d(ws->head1, ws->fused, w->head_c1_w, w->head_c1_b, F, fh, fw, Fh, 3, 1, 1, ws->col, ws->col_floats);
    sa3d_resize_bilinear(ws->head_up, ws->head1, Fh, fh, fw, OH, OW, 1);
    sa3d_conv2d(ws->head2, ws->head_up, w->head_c2_w, w->head_c2_b, Fh, OH, OW, Hh, 3, 1, 1, ws->col, ws->col_floats);
    sa3d_relu(ws->head2, (size_t)Hh * OH * OW);
    sa3d_conv1x1(ws->depth, ws->head2, w->head_c3_w, w->head_c3_b, Hh, OH * OW, 1, 0);
    size_t n = (size_t)OH * OW;
    if (c->metric) {
        for (size_t i = 0; i < n; i++) ws->depth[i] = c->max_depth / (1.0f + expf(-ws->depth[i]));
    } else {
        for (size_t i = 0; i < n; i++) ws->depth[i] = (ws->depth[i] > 0.0f ? ws->depth[i] : 0.0f) * c->max_depth;
    }
}

void sa3d_depth_upsample(float *out, int W, int H, const float *pred, int pw, int ph) {
    sa3d_resize_bicubic(out, pred, 1, ph, pw, H, W, 0, NULL);
}
