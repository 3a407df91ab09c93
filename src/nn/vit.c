/* DINOv2 vision transformer forward pass (Hugging Face Dinov2Model / Dinov2WithRegistersModel, METHOD.md 3.1):
 * patch embedding, CLS (+ register) tokens, position embeddings interpolated to the input grid, pre-norm blocks
 * with layer scale and an MLP or SwiGLU FFN, final norm. Reads top to bottom like the Hugging Face module. */
#include <math.h>
#include <string.h>
#include "nn/model.h"
#include "tensor/kernels.h"

size_t sa3d_vit_workspace_floats(const sa3d_vit_config *c, int H, int W, unsigned flags, int n_stages,
                                 int score_blocks) {
    size_t gh = (size_t)H / c->patch_size, gw = (size_t)W / c->patch_size, Np = gh * gw;
    size_t T = 1 + (size_t)c->n_registers + Np, D = (size_t)c->hidden_size, M = (size_t)c->mlp_hidden;
    size_t P = (size_t)c->patch_size;
    size_t n = 7 * T * D + T * M * (c->use_swiglu ? 3 : 1) + sa3d_attention_scratch_floats((int)T, score_blocks);
    n += Np * c->n_channels * P * P + (1 + Np) * D;
    if (c->pos_antialias) n += D * (size_t)c->pos_grid * gw;
    n += D * ((size_t)c->pos_grid * c->pos_grid + Np);
    if (flags & SA3D_WS_HIDDEN_STATES) n += (size_t)(c->n_layers + 1) * T * D;
    n += (size_t)n_stages * T * D;
    n += 2 * T * D + D + D * Np;   /* last_hidden_state, pooler, feature map */
    return n + 32 * 16;            /* alignment slack of the carving */
}

/* Position embeddings for a gh x gw grid (Dinov2Embeddings.interpolate_pos_encoding): used as stored when the
 * grid matches and the input is square, else the G x G patch part is resized with bicubic (align_corners=False;
 * antialiased for the with-registers model, as Hugging Face does) to gh x gw. With pos_offset (the original
 * release), PyTorch gets scale_factor (g + offset) / G per axis and samples by its inverse, computed in double and
 * rounded to float as its kernel does; the output is still gh x gw (floor of g + offset). */
void sa3d_vit_positions(const sa3d_model *m, int gh, int gw, int square, float *pos_out, float *grid, float *tmp) {
    const sa3d_vit_config *c = &m->vit;
    size_t D = (size_t)c->hidden_size, Np = (size_t)gh * gw;
    int G = c->pos_grid;
    const float *pos = m->vw.pos;   /* [1 + G*G][D] */
    if (Np == (size_t)G * G && square) {
        memcpy(pos_out, pos, (1 + Np) * D * sizeof(float));
        return;
    }
    memcpy(pos_out, pos, D * sizeof(float));   /* the CLS position is kept */
    float *res = grid + D * (size_t)G * G;     /* [D][G][G] -> [D][gh][gw] */
    for (size_t p = 0; p < (size_t)G * G; p++)
        for (size_t d = 0; d < D; d++) grid[d * G * G + p] = pos[(1 + p) * D + d];
    if (c->pos_offset != 0.0)
        sa3d_resize_bicubic_scaled(res, grid, (int)D, G, G, gh, gw, (float)(1.0 / ((gh + c->pos_offset) / G)),
                                   (float)(1.0 / ((gw + c->pos_offset) / G)));
    else
        sa3d_resize_bicubic(res, grid, (int)D, G, G, gh, gw, c->pos_antialias, tmp);
    for (size_t p = 0; p < Np; p++)
        for (size_t d = 0; d < D; d++) pos_out[(1 + p) * D + d] = res[d * Np + p];
}

static void activation(float *x, size_t n, sa3d_activation act) {
    switch (act) {
    case SA3D_ACT_GELU: sa3d_gelu(x, n); break;
    case SA3D_ACT_GELU_TANH: sa3d_gelu_tanh(x, n); break;
    case SA3D_ACT_RELU: sa3d_relu(x, n); break;
    case SA3D_ACT_SILU: sa3d_silu(x, n); break;
    }
}

/* x[T][D] = [cls + pos0, registers..., patch_i + pos_i]: Dinov2Embeddings.forward (registers are inserted after
 * the position embeddings are added, so they carry none). */
static void embed(const sa3d_model *m, sa3d_workspace *ws, const float *pixels) {
    const sa3d_vit_config *c = &m->vit;
    int P = c->patch_size, C = c->n_channels, gw = ws->gw, Np = ws->gh * ws->gw, K = C * P * P;
    size_t D = (size_t)c->hidden_size;
    /* im2col: patches[Np][C][P][P] */
    #pragma omp parallel for schedule(static)
    for (int p = 0; p < Np; p++) {
        int py = p / gw, px = p % gw;
        float *dst = ws->patches + (size_t)p * K;
        for (int ch = 0; ch < C; ch++)
            for (int y = 0; y < P; y++)
                memcpy(dst + ((size_t)ch * P + y) * P,
                       pixels + ((size_t)ch * ws->H + (size_t)py * P + y) * ws->W + (size_t)px * P,
                       (size_t)P * sizeof(float));
    }
    float *tok = ws->x + (size_t)ws->n_prefix * D;
    sa3d_linear(tok, ws->patches, m->vw.patch_w, m->vw.patch_b, Np, K, (int)D);
    for (size_t d = 0; d < D; d++) ws->x[d] = m->vw.cls[d] + ws->pos[d];
    for (int p = 0; p < Np; p++)
        for (size_t d = 0; d < D; d++) tok[(size_t)p * D + d] += ws->pos[(size_t)(1 + p) * D + d];
    if (c->n_registers) memcpy(ws->x + D, m->vw.registers, (size_t)c->n_registers * D * sizeof(float));
}

void sa3d_vit_encode(const sa3d_model *m, sa3d_workspace *ws, const float *pixels, const int *out_idx, int n_stages) {
    const sa3d_vit_config *c = &m->vit;
    int T = ws->T, D = c->hidden_size, M = c->mlp_hidden, Dh = D / c->n_heads;
    size_t TD = (size_t)T * D;
    float scale = (float)(1.0 / sqrt((double)Dh));
    embed(m, ws, pixels);
    if (ws->hidden) memcpy(ws->hidden, ws->x, TD * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        const sa3d_vit_layer *L = &m->vw.layer[l];
        sa3d_layernorm(ws->xn, ws->x, L->ln1_w, L->ln1_b, T, D, c->ln_eps);          /* [T][D] */
        sa3d_linear(ws->q, ws->xn, L->wq, L->bq, T, D, D);
        sa3d_linear(ws->k, ws->xn, L->wk, L->bk, T, D, D);
        sa3d_linear(ws->v, ws->xn, L->wv, L->bv, T, D, D);
        sa3d_attention(ws->ctx, ws->q, ws->k, ws->v, T, c->n_heads, Dh, D, scale, ws->scores, ws->score_blocks);
        sa3d_linear(ws->tmp, ws->ctx, L->wo, L->bo, T, D, D);
        sa3d_add_scaled(ws->x, ws->tmp, L->ls1, T, D);                               /* x += ls1 * attn */
        sa3d_layernorm(ws->xn, ws->x, L->ln2_w, L->ln2_b, T, D, c->ln_eps);
        if (c->use_swiglu) {
            sa3d_linear(ws->mlp, ws->xn, L->fc1_w, L->fc1_b, T, D, 2 * M);            /* [T][2M] */
            sa3d_swiglu(ws->mlp2, ws->mlp, T, M);                                      /* [T][M] */
            sa3d_linear(ws->tmp, ws->mlp2, L->fc2_w, L->fc2_b, T, M, D);
        } else {
            sa3d_linear(ws->mlp, ws->xn, L->fc1_w, L->fc1_b, T, D, M);                /* [T][M] */
            activation(ws->mlp, (size_t)T * M, c->act);
            sa3d_linear(ws->tmp, ws->mlp, L->fc2_w, L->fc2_b, T, M, D);
        }
        sa3d_add_scaled(ws->x, ws->tmp, L->ls2, T, D);                               /* x += ls2 * mlp */
        if (ws->hidden) memcpy(ws->hidden + (size_t)(l + 1) * TD, ws->x, TD * sizeof(float));
        for (int s = 0; s < n_stages; s++) {   /* Dinov2Backbone: stage outputs, normed when apply_layernorm */
            if (out_idx[s] != l + 1) continue;
            float *dst = ws->stage + (size_t)s * TD;
            if (c->apply_layernorm) sa3d_layernorm(dst, ws->x, m->vw.ln_w, m->vw.ln_b, T, D, c->ln_eps);
            else memcpy(dst, ws->x, TD * sizeof(float));
        }
    }
}

/* Dinov2Model outputs: the GeoAware feature map (last block output before the final norm, patch tokens only,
 * channel-first), last_hidden_state = layernorm(x), pooler_output = its CLS row. */
void sa3d_vit_finish(const sa3d_model *m, sa3d_workspace *ws) {
    const sa3d_vit_config *c = &m->vit;
    int T = ws->T, D = c->hidden_size, Np = ws->gh * ws->gw;
    const float *tok = ws->x + (size_t)ws->n_prefix * D;
    #pragma omp parallel for schedule(static)
    for (int d = 0; d < D; d++)
        for (int p = 0; p < Np; p++) ws->fmap[(size_t)d * Np + p] = tok[(size_t)p * D + d];
    sa3d_layernorm(ws->last, ws->x, m->vw.ln_w, m->vw.ln_b, T, D, c->ln_eps);
    memcpy(ws->pooler, ws->last, (size_t)D * sizeof(float));
}
