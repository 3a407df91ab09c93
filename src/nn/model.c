/* Model folders: config.json + checkpoint -> sa3d_model (weights bound by Hugging Face key with exact shapes),
 * workspaces sized once per input size, and the forward dispatch with a finiteness check on every output. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "nn/backend.h"
#include "tensor/kernels.h"

sa3d_model_params sa3d_model_params_default(void) {
    sa3d_model_params p = { "cpu", 0, "fp32", "hf" };
    return p;
}

/* ---- weight binding ---- */

typedef struct binding { const float **dst; const sa3d_st_tensor *t; } binding;

typedef struct loader {
    sa3d_model *m;
    binding *b;
    int n, cap;
    sa3d_status status;
    sa3d_error *err;
} loader;

#define SHAPE(...) ((const int64_t[]){ __VA_ARGS__ })

/* Finds the tensor named by fmt, checks its shape, and records where its float pointer goes. optional: a
 * missing tensor leaves *dst NULL. The first failure sticks in L->status. */
static void need(loader *L, const float **dst, int optional, int ndim, const int64_t *shape, const char *fmt, ...) {
    if (L->status != SA3D_OK) return;
    char key[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    *dst = NULL;
    const sa3d_st_tensor *t = sa3d_checkpoint_find(L->m->ck, key);
    if (!t) {
        if (optional) return;
        L->status = sa3d_fail(L->err, SA3D_ERR_FORMAT, "%s: tensor '%s' is missing",
                             sa3d_checkpoint_source(L->m->ck), key);
        return;
    }
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        char got[128] = "", want[128] = "";
        for (int i = 0; i < t->ndim; i++) snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        for (int i = 0; i < ndim; i++) snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? ", " : "", (long long)shape[i]);
        L->status = sa3d_fail(L->err, SA3D_ERR_FORMAT, "%s: tensor '%s': wrong shape; expected [%s], got [%s]",
                              t->file, key, want, got);
        return;
    }
    if (t->dtype != SA3D_DTYPE_F32 && t->dtype != SA3D_DTYPE_F16 && t->dtype != SA3D_DTYPE_BF16) {
        L->status = sa3d_fail(L->err, SA3D_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s; expected F32, F16 or BF16",
                              t->file, key, sa3d_dtype_name(t->dtype));
        return;
    }
    if (L->n == L->cap) {
        int cap = L->cap ? 2 * L->cap : 256;
        binding *nb = sa3d_realloc(L->b, (size_t)cap * sizeof *nb);
        if (!nb) { L->status = sa3d_fail(L->err, SA3D_ERR_NOMEM, "%s: out of memory binding weights", L->m->dir); return; }
        L->b = nb;
        L->cap = cap;
    }
    L->b[L->n].dst = dst;
    L->b[L->n].t = t;
    L->n++;
}

static void bind_vit(loader *L, const char *p, const sa3d_vit_config *c, sa3d_vit_weights *w) {
    int64_t D = c->hidden_size, M = c->mlp_hidden, P = c->patch_size, G = c->pos_grid;
    need(L, &w->patch_w, 0, 4, SHAPE(D, c->n_channels, P, P), "%sembeddings.patch_embeddings.projection.weight", p);
    need(L, &w->patch_b, 0, 1, SHAPE(D), "%sembeddings.patch_embeddings.projection.bias", p);
    need(L, &w->cls, 0, 3, SHAPE(1, 1, D), "%sembeddings.cls_token", p);
    need(L, &w->pos, 0, 3, SHAPE(1, 1 + G * G, D), "%sembeddings.position_embeddings", p);
    if (c->n_registers > 0)
        need(L, &w->registers, 0, 3, SHAPE(1, c->n_registers, D), "%sembeddings.register_tokens", p);
    need(L, &w->ln_w, 0, 1, SHAPE(D), "%slayernorm.weight", p);
    need(L, &w->ln_b, 0, 1, SHAPE(D), "%slayernorm.bias", p);
    for (int l = 0; l < c->n_layers; l++) {
        sa3d_vit_layer *y = &w->layer[l];
        const char *a = "attention.attention";
        need(L, &y->ln1_w, 0, 1, SHAPE(D), "%sencoder.layer.%d.norm1.weight", p, l);
        need(L, &y->ln1_b, 0, 1, SHAPE(D), "%sencoder.layer.%d.norm1.bias", p, l);
        need(L, &y->wq, 0, 2, SHAPE(D, D), "%sencoder.layer.%d.%s.query.weight", p, l, a);
        need(L, &y->wk, 0, 2, SHAPE(D, D), "%sencoder.layer.%d.%s.key.weight", p, l, a);
        need(L, &y->wv, 0, 2, SHAPE(D, D), "%sencoder.layer.%d.%s.value.weight", p, l, a);
        if (c->qkv_bias) {
            need(L, &y->bq, 0, 1, SHAPE(D), "%sencoder.layer.%d.%s.query.bias", p, l, a);
            need(L, &y->bk, 0, 1, SHAPE(D), "%sencoder.layer.%d.%s.key.bias", p, l, a);
            need(L, &y->bv, 0, 1, SHAPE(D), "%sencoder.layer.%d.%s.value.bias", p, l, a);
        }
        need(L, &y->wo, 0, 2, SHAPE(D, D), "%sencoder.layer.%d.attention.output.dense.weight", p, l);
        need(L, &y->bo, 0, 1, SHAPE(D), "%sencoder.layer.%d.attention.output.dense.bias", p, l);
        need(L, &y->ls1, 0, 1, SHAPE(D), "%sencoder.layer.%d.layer_scale1.lambda1", p, l);
        need(L, &y->ln2_w, 0, 1, SHAPE(D), "%sencoder.layer.%d.norm2.weight", p, l);
        need(L, &y->ln2_b, 0, 1, SHAPE(D), "%sencoder.layer.%d.norm2.bias", p, l);
        if (c->use_swiglu) {
            need(L, &y->fc1_w, 0, 2, SHAPE(2 * M, D), "%sencoder.layer.%d.mlp.weights_in.weight", p, l);
            need(L, &y->fc1_b, 0, 1, SHAPE(2 * M), "%sencoder.layer.%d.mlp.weights_in.bias", p, l);
            need(L, &y->fc2_w, 0, 2, SHAPE(D, M), "%sencoder.layer.%d.mlp.weights_out.weight", p, l);
            need(L, &y->fc2_b, 0, 1, SHAPE(D), "%sencoder.layer.%d.mlp.weights_out.bias", p, l);
        } else {
            need(L, &y->fc1_w, 0, 2, SHAPE(M, D), "%sencoder.layer.%d.mlp.fc1.weight", p, l);
            need(L, &y->fc1_b, 0, 1, SHAPE(M), "%sencoder.layer.%d.mlp.fc1.bias", p, l);
            need(L, &y->fc2_w, 0, 2, SHAPE(D, M), "%sencoder.layer.%d.mlp.fc2.weight", p, l);
            need(L, &y->fc2_b, 0, 1, SHAPE(D), "%sencoder.layer.%d.mlp.fc2.bias", p, l);
        }
        need(L, &y->ls2, 0, 1, SHAPE(D), "%sencoder.layer.%d.layer_scale2.lambda1", p, l);
    }
}

static void bind_dpt(loader *L, const sa3d_vit_config *v, const sa3d_dpt_config *c, sa3d_dpt_weights *w) {
    int64_t D = v->hidden_size, F = c->fusion_hidden_size, Hh = c->head_hidden_size;
    for (int i = 0; i < 4; i++) {
        int64_t N = c->neck_hidden_sizes[i];
        need(L, &w->reasm_proj_w[i], 0, 4, SHAPE(N, D, 1, 1), "neck.reassemble_stage.layers.%d.projection.weight", i);
        need(L, &w->reasm_proj_b[i], 0, 1, SHAPE(N), "neck.reassemble_stage.layers.%d.projection.bias", i);
        if (c->reassemble_num[i] > 1) {
            int64_t f = c->reassemble_num[i];
            need(L, &w->reasm_resize_w[i], 0, 4, SHAPE(N, N, f, f), "neck.reassemble_stage.layers.%d.resize.weight", i);
            need(L, &w->reasm_resize_b[i], 0, 1, SHAPE(N), "neck.reassemble_stage.layers.%d.resize.bias", i);
        } else if (c->reassemble_den[i] > 1) {
            need(L, &w->reasm_resize_w[i], 0, 4, SHAPE(N, N, 3, 3), "neck.reassemble_stage.layers.%d.resize.weight", i);
            need(L, &w->reasm_resize_b[i], 0, 1, SHAPE(N), "neck.reassemble_stage.layers.%d.resize.bias", i);
        }
        need(L, &w->neck_conv_w[i], 0, 4, SHAPE(F, N, 3, 3), "neck.convs.%d.weight", i);
        sa3d_fusion_layer *f = &w->fusion[i];
        const char *fs = "neck.fusion_stage.layers";
        need(L, &f->proj_w, 0, 4, SHAPE(F, F, 1, 1), "%s.%d.projection.weight", fs, i);
        need(L, &f->proj_b, 0, 1, SHAPE(F), "%s.%d.projection.bias", fs, i);
        need(L, &f->r1c1_w, 0, 4, SHAPE(F, F, 3, 3), "%s.%d.residual_layer1.convolution1.weight", fs, i);
        need(L, &f->r1c1_b, 0, 1, SHAPE(F), "%s.%d.residual_layer1.convolution1.bias", fs, i);
        need(L, &f->r1c2_w, 0, 4, SHAPE(F, F, 3, 3), "%s.%d.residual_layer1.convolution2.weight", fs, i);
        need(L, &f->r1c2_b, 0, 1, SHAPE(F), "%s.%d.residual_layer1.convolution2.bias", fs, i);
        need(L, &f->r2c1_w, 0, 4, SHAPE(F, F, 3, 3), "%s.%d.residual_layer2.convolution1.weight", fs, i);
        need(L, &f->r2c1_b, 0, 1, SHAPE(F), "%s.%d.residual_layer2.convolution1.bias", fs, i);
        need(L, &f->r2c2_w, 0, 4, SHAPE(F, F, 3, 3), "%s.%d.residual_layer2.convolution2.weight", fs, i);
        need(L, &f->r2c2_b, 0, 1, SHAPE(F), "%s.%d.residual_layer2.convolution2.bias", fs, i);
    }
    need(L, &w->head_c1_w, 0, 4, SHAPE(F / 2, F, 3, 3), "head.conv1.weight");
    need(L, &w->head_c1_b, 0, 1, SHAPE(F / 2), "head.conv1.bias");
    need(L, &w->head_c2_w, 0, 4, SHAPE(Hh, F / 2, 3, 3), "head.conv2.weight");
    need(L, &w->head_c2_b, 0, 1, SHAPE(Hh), "head.conv2.bias");
    need(L, &w->head_c3_w, 0, 4, SHAPE(1, Hh, 1, 1), "head.conv3.weight");
    need(L, &w->head_c3_b, 0, 1, SHAPE(1), "head.conv3.bias");
}

/* Points every binding at usable float32 data: aligned F32 in place, everything else converted once into
 * one block the model owns. */
static sa3d_status finish_bindings(loader *L) {
    sa3d_model *m = L->m;
    size_t convert = 0;
    for (int i = 0; i < L->n; i++) {
        const sa3d_st_tensor *t = L->b[i].t;
        m->n_params += t->numel;
        if (t->dtype != SA3D_DTYPE_F32 || ((uintptr_t)t->data & 3u)) convert += t->numel;
    }
    if (convert) {
        size_t bytes;
        if (!sa3d_mul_ok(convert, sizeof(float), &bytes) || !(m->converted = sa3d_malloc(bytes)))
            return sa3d_fail(L->err, SA3D_ERR_NOMEM, "%s: cannot allocate %zu floats for converted weights", m->dir, convert);
    }
    size_t off = 0;
    for (int i = 0; i < L->n; i++) {
        const sa3d_st_tensor *t = L->b[i].t;
        if (t->dtype == SA3D_DTYPE_F32 && !((uintptr_t)t->data & 3u)) {
            *L->b[i].dst = (const float *)t->data;
            continue;
        }
        sa3d_status s = sa3d_st_read_f32(t, m->converted + off, t->numel, L->err);
        if (s) return s;
        *L->b[i].dst = m->converted + off;
        off += t->numel;
    }
    return SA3D_OK;
}

/* FNV-1a over config.json and, per tensor, its name, shape and first 256 bytes: a cheap identity that changes
 * whenever the checkpoint or its configuration does. */
static void compute_id(sa3d_model *m, const char *config_text) {
    uint64_t h = SA3D_FNV_OFFSET;
#define FNV(ptr, len) (h = sa3d_fnv1a(h, (ptr), (len)))
    FNV(config_text, strlen(config_text));
    for (int i = 0; i < sa3d_checkpoint_count(m->ck); i++) {
        const sa3d_st_tensor *t = sa3d_checkpoint_get(m->ck, i);
        FNV(t->name, strlen(t->name));
        FNV(t->shape, sizeof(int64_t) * (size_t)t->ndim);
        FNV(t->data, t->nbytes < 256 ? t->nbytes : 256);
    }
    if (m->vit.pos_offset != 0.0) FNV("positions=hub", 13);   /* other outputs, so another identity */
#undef FNV
    snprintf(m->id, sizeof m->id, "%016llx", (unsigned long long)h);
}

/* sa3d_model_params.dtype's names, indexed by sa3d_nn_dtype (also what sa3d_model_dtype returns). */
static const char *const dtype_names[] = { "fp32", "fp16", "bf16" };

sa3d_status sa3d_model_open(sa3d_model **out, const char *dir, const sa3d_model_params *p, sa3d_error *err) {
    *out = NULL;
    sa3d_model_params defaults = sa3d_model_params_default();
    if (!p) p = &defaults;
    const sa3d_backend *be = sa3d_backend_find(p->device ? p->device : "cpu");
    if (!be)
        return sa3d_fail(err, SA3D_ERR_UNSUPPORTED, "%s: device '%s' is not available in this build (built: %s)", dir,
                         p->device, sa3d_backend_names());
    const char *dt = p->dtype ? p->dtype : "fp32";
    int dtype = 0;
    while (dtype < 3 && strcmp(dt, dtype_names[dtype])) dtype++;
    if (dtype == 3) return sa3d_fail(err, SA3D_ERR_ARG, "%s: dtype '%s': expected fp32, fp16 or bf16", dir, dt);
    if (dtype != SA3D_NN_FP32 && be == &sa3d_backend_cpu)
        return sa3d_fail(err, SA3D_ERR_UNSUPPORTED, "%s: dtype %s needs device cuda (the CPU backend is fp32)", dir, dt);
    if (p->n_threads < 0)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: n_threads %d (0: all cores, or > 0)", dir, p->n_threads);
    const char *positions = p->positions ? p->positions : "hf";
    int hub = !strcmp(positions, "hub");
    if (!hub && strcmp(positions, "hf"))
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: positions '%s': expected hf or hub", dir, positions);
    sa3d_status s;
    char *config_path = NULL, *text = NULL;
    loader L = { 0 };
    sa3d_model *m = sa3d_calloc(1, sizeof *m);
    if (!m || !(m->dir = sa3d_strdup(dir)) || !(config_path = sa3d_path_join(dir, "config.json"))) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", dir);
        goto fail;
    }
    m->n_threads = p->n_threads;
    m->be = be;
    m->dtype = (sa3d_nn_dtype)dtype;
    if ((s = sa3d_read_file(config_path, 16u << 20, &text, NULL, err))) goto fail;
    if ((s = sa3d_parse_model_config(text, config_path, &m->kind, &m->vit, &m->dpt, err))) goto fail;
    if (hub && m->vit.n_registers == 0) m->vit.pos_offset = 0.1;   /* the release's interpolate_offset */
    if ((s = sa3d_checkpoint_open(&m->ck, dir, err))) goto fail;
    m->prefix = m->kind == SA3D_MODEL_DEPTH_ANYTHING ? "backbone." : "";
    if (!(m->vw.layer = sa3d_calloc((size_t)m->vit.n_layers, sizeof *m->vw.layer))) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", dir);
        goto fail;
    }
    L.m = m;
    L.err = err;
    bind_vit(&L, m->prefix, &m->vit, &m->vw);
    if (m->kind == SA3D_MODEL_DEPTH_ANYTHING) bind_dpt(&L, &m->vit, &m->dpt, &m->dw);
    if ((s = L.status) || (s = finish_bindings(&L))) goto fail;
    compute_id(m, text);
    if ((s = m->be->model_init(m, err))) goto fail;
    sa3d_free(L.b);
    sa3d_free(text);
    sa3d_free(config_path);
    *out = m;
    return SA3D_OK;
fail:
    sa3d_free(L.b);
    sa3d_free(text);
    sa3d_free(config_path);
    sa3d_model_free(m);
    return s;
}

void sa3d_model_free(sa3d_model *m) {
    if (!m) return;
    if (m->be && m->be->model_release) m->be->model_release(m);
    sa3d_checkpoint_close(m->ck);
    sa3d_free(m->converted);
    sa3d_free(m->vw.layer);
    sa3d_free(m->dir);
    sa3d_free(m);
}

sa3d_model_kind sa3d_model_get_kind(const sa3d_model *m) { return m->kind; }
const sa3d_vit_config *sa3d_model_vit_config(const sa3d_model *m) { return &m->vit; }
const sa3d_dpt_config *sa3d_model_dpt_config(const sa3d_model *m) {
    return m->kind == SA3D_MODEL_DEPTH_ANYTHING ? &m->dpt : NULL;
}
const char *sa3d_model_id(const sa3d_model *m) { return m->id; }
size_t sa3d_model_n_params(const sa3d_model *m) { return m->n_params; }

/* ---- workspaces ---- */

/* Declares output view n_out: per image `src` (the array a CPU pass writes; NULL on other backends) of
 * `per_image` floats; the view's leading dimension is the batch. data is set once all views are declared. */
static void add_output(sa3d_workspace *ws, const char *name, const float *src, int ndim, int64_t a, int64_t b,
                       int64_t c, int64_t d) {
    int i = ws->n_out++;
    sa3d_tensor_view *v = &ws->out[i];
    snprintf(ws->out_names[i], sizeof ws->out_names[0], "%s", name);
    v->name = ws->out_names[i];
    v->ndim = ndim;
    v->shape[0] = a; v->shape[1] = b; v->shape[2] = c; v->shape[3] = d;
    v->data = src;
    ws->out_src[i] = src;
}

/* Bytes of one pass's pixels, [batch][C][H][W] floats (checked sizes: at most 4096 x 64 x 16384^2 x 4 = 2^48). */
static size_t input_bytes(const sa3d_workspace *ws) {
    return (size_t)ws->batch * (size_t)ws->m->vit.n_channels * (size_t)ws->H * (size_t)ws->W * sizeof(float);
}

size_t sa3d_tensor_view_numel(const sa3d_tensor_view *v) {
    size_t n = 1;
    for (int d = 0; d < v->ndim; d++) n *= (size_t)v->shape[d];
    return n;
}

size_t sa3d_output_floats_per_image(const sa3d_workspace *ws, int i) {
    const sa3d_tensor_view *v = &ws->out[i];
    size_t n = 1;
    for (int d = 1; d < v->ndim; d++) n *= (size_t)v->shape[d];
    return n;
}

sa3d_status sa3d_workspace_new(sa3d_workspace **out, const sa3d_model *m, int H, int W, unsigned flags,
                               sa3d_error *err) {
    return sa3d_workspace_new_batch(out, m, H, W, 1, flags, err);
}

static sa3d_status check_input_size(const sa3d_model *m, int H, int W, sa3d_error *err) {
    int P = m->vit.patch_size;
    if (H < P || W < P || H > 16384 || W > 16384)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: input %d x %d: each side must be in [%d, 16384]", m->dir, W, H, P);
    return SA3D_OK;
}

/* A buffer of at least `bytes` (contents not kept): p itself when its capacity *cap covers them, else a new one
 * from `alloc` in its place (p is given to `release`). NULL when out of memory. */
static void *grow(void *p, size_t *cap, size_t bytes, void *(*alloc)(size_t), void (*release)(void *)) {
    if (p && *cap >= bytes) return p;
    if (p) release(p);
    p = alloc(bytes);
    *cap = p ? bytes : 0;
    return p;
}

static sa3d_status fit_failed(sa3d_workspace *ws, sa3d_status s) {
    ws->broken = s;
    ws->n_out = 0;   /* no view may point into memory that was given back */
    return s;
}

/* Lays the workspace out for inputs of H x W (checked): every buffer sized for it, grown where what the workspace
 * holds is too small (a new workspace holds nothing), the position embeddings and output views for this size,
 * then the backend's own buffers. On failure the workspace is marked broken (no pass) until a fit succeeds. */
static sa3d_status fit(sa3d_workspace *ws, int H, int W, sa3d_error *err) {
    const sa3d_model *m = ws->m;
    const sa3d_vit_config *c = &m->vit;
    ws->H = H;
    ws->W = W;
    ws->gh = H / c->patch_size;
    ws->gw = W / c->patch_size;
    ws->T = ws->n_prefix + ws->gh * ws->gw;
    /* The CPU backend computes in the host block; other backends keep their activations on the device and need
     * only the position scratch here. */
    int on_host = m->be == &sa3d_backend_cpu;
    int n_stages = m->kind == SA3D_MODEL_DEPTH_ANYTHING ? 4 : 0;
    size_t D = (size_t)c->hidden_size, T = (size_t)ws->T, Np = (size_t)ws->gh * ws->gw;
    size_t M = (size_t)c->mlp_hidden, P = (size_t)c->patch_size, G = (size_t)c->pos_grid;
    size_t floats = (1 + Np) * D + D * (G * G + Np) + (c->pos_antialias ? D * G * ws->gw : 0) + 64;
    if (on_host) {
        floats = sa3d_vit_workspace_floats(c, H, W, ws->flags, n_stages, sa3d_attention_blocks(m->n_threads));
        if (m->kind == SA3D_MODEL_DEPTH_ANYTHING) floats += sa3d_dpt_workspace_floats(m, H, W);
    }
    size_t bytes;
    if (!sa3d_mul_ok(floats + 64 * 64, sizeof(float), &bytes) ||
        !(ws->block = grow(ws->block, &ws->block_cap, bytes, sa3d_malloc, sa3d_free))) {
        sa3d_fail(err, SA3D_ERR_NOMEM, "%s: cannot allocate %zu MiB of activations for %d x %d", m->dir,
                  (floats * sizeof(float)) >> 20, W, H);
        return fit_failed(ws, SA3D_ERR_NOMEM);
    }
    /* carve: each array starts on a 64-byte boundary */
    float *cur = (float *)ws->block;
#define TAKE(ptr, n) do { (ptr) = cur; cur += ((size_t)(n) + 15) & ~(size_t)15; } while (0)
    TAKE(ws->pos, (1 + Np) * D);
    if (c->pos_antialias) TAKE(ws->pos_tmp, D * G * ws->gw);
    TAKE(ws->pos_grid, D * (G * G + Np));
    if (on_host) {
        TAKE(ws->x, T * D); TAKE(ws->xn, T * D); TAKE(ws->q, T * D); TAKE(ws->k, T * D); TAKE(ws->v, T * D);
        TAKE(ws->ctx, T * D); TAKE(ws->tmp, T * D);
        TAKE(ws->mlp, T * M * (c->use_swiglu ? 2 : 1));
        if (c->use_swiglu) TAKE(ws->mlp2, T * M);
        ws->score_blocks = sa3d_attention_blocks(m->n_threads);
        TAKE(ws->scores, sa3d_attention_scratch_floats(ws->T, ws->score_blocks));
        TAKE(ws->patches, Np * c->n_channels * P * P);
        if (ws->flags & SA3D_WS_HIDDEN_STATES) TAKE(ws->hidden, (size_t)(c->n_layers + 1) * T * D);
        if (n_stages) TAKE(ws->stage, (size_t)n_stages * T * D);
        if (m->kind == SA3D_MODEL_DINOV2) {
            TAKE(ws->last, T * D); TAKE(ws->pooler, D); TAKE(ws->fmap, D * Np);
        } else {
            sa3d_dpt_carve(m, ws, &cur);
        }
    }
#undef TAKE
    sa3d_vit_positions(m, ws->gh, ws->gw, H == W, ws->pos, ws->pos_grid, ws->pos_tmp);

    int64_t B = ws->batch;
    ws->n_out = 0;
    if (m->kind == SA3D_MODEL_DINOV2) {
        add_output(ws, "last_hidden_state", ws->last, 3, B, (int64_t)T, (int64_t)D, 0);
        add_output(ws, "pooler_output", ws->pooler, 2, B, (int64_t)D, 0, 0);
        add_output(ws, "feature_map", ws->fmap, 4, B, (int64_t)D, ws->gh, ws->gw);
        if (ws->flags & SA3D_WS_HIDDEN_STATES)
            for (int l = 0; l <= c->n_layers; l++) {
                char name[32];
                snprintf(name, sizeof name, "hidden_states.%d", l);
                add_output(ws, name, ws->hidden ? ws->hidden + (size_t)l * T * D : NULL, 3, B, (int64_t)T,
                           (int64_t)D, 0);
            }
    } else {
        add_output(ws, "predicted_depth", ws->depth, 3, B, (int64_t)ws->gh * c->patch_size,
                   (int64_t)ws->gw * c->patch_size, 0);
    }
    /* Batched views (or any backend other than the CPU's) get their own host block: image b of view i at
     * data + b * sa3d_output_floats_per_image(ws, i). */
    const sa3d_backend *be = m->be;
    memset(ws->out_stale, 0, sizeof ws->out_stale);
    if (!on_host || B > 1) {
        size_t total = 0;
        for (int i = 0; i < ws->n_out; i++) total += sa3d_output_floats_per_image(ws, i) * (size_t)B;
        size_t ob;
        if (!sa3d_mul_ok(total, sizeof(float), &ob) ||
            !(ws->out_block = grow(ws->out_block, &ws->out_cap, ob, be->host_alloc, be->host_free))) {
            sa3d_fail(err, SA3D_ERR_NOMEM, "%s: cannot allocate %zu MiB of outputs for batch %d", m->dir,
                      (total * sizeof(float)) >> 20, ws->batch);
            return fit_failed(ws, SA3D_ERR_NOMEM);
        }
        size_t off = 0;
        for (int i = 0; i < ws->n_out; i++) {
            ws->out[i].data = ws->out_block + off;
            off += sa3d_output_floats_per_image(ws, i) * (size_t)B;
        }
    }
    ws->bytes = ws->block_cap + ws->out_cap;
    /* sa3d_workspace_input's buffer is made on first use; one too small for this size is made again then */
    if (ws->input && ws->input_cap < input_bytes(ws)) {
        be->host_free(ws->input);
        ws->input = NULL;
        ws->input_cap = 0;
    }
    sa3d_status s = be->workspace_fit(ws, err);
    if (s) return fit_failed(ws, s);
    ws->broken = SA3D_OK;
    return SA3D_OK;
}

sa3d_status sa3d_workspace_new_batch(sa3d_workspace **out, const sa3d_model *m, int H, int W, int batch,
                                     unsigned flags, sa3d_error *err) {
    *out = NULL;
    const sa3d_vit_config *c = &m->vit;
    sa3d_status s = check_input_size(m, H, W, err);
    if (s) return s;
    if (batch < 1 || batch > 4096)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: batch %d: must be in [1, 4096]", m->dir, batch);
    if (c->pos_antialias && c->pos_grid > 512)
        return sa3d_fail(err, SA3D_ERR_UNSUPPORTED, "%s: position grid %d is larger than 512", m->dir, c->pos_grid);
    if (c->n_layers + 1 + 4 > SA3D_MAX_OUTPUTS)
        return sa3d_fail(err, SA3D_ERR_UNSUPPORTED, "%s: %d layers is more than this build lists as outputs", m->dir,
                         c->n_layers);
    sa3d_workspace *ws = sa3d_calloc(1, sizeof *ws);
    if (!ws) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", m->dir);
    ws->m = m;
    ws->batch = batch;
    ws->flags = m->kind == SA3D_MODEL_DINOV2 ? flags : flags & ~SA3D_WS_HIDDEN_STATES;
    ws->n_prefix = 1 + c->n_registers;
    if ((s = fit(ws, H, W, err))) {
        sa3d_workspace_free(ws);
        return s;
    }
    *out = ws;
    return SA3D_OK;
}

sa3d_status sa3d_workspace_resize(sa3d_workspace *ws, int H, int W, sa3d_error *err) {
    sa3d_status s = check_input_size(ws->m, H, W, err);
    if (s || (H == ws->H && W == ws->W && !ws->broken)) return s;
    return fit(ws, H, W, err);
}

void sa3d_workspace_free(sa3d_workspace *ws) {
    if (!ws) return;
    const sa3d_backend *be = ws->m->be;
    if (be->workspace_release) be->workspace_release(ws);
    if (ws->input) be->host_free(ws->input);
    if (ws->out_block) be->host_free(ws->out_block);
    sa3d_free(ws->block);
    sa3d_free(ws);
}

size_t sa3d_workspace_bytes(const sa3d_workspace *ws) { return ws->bytes; }
size_t sa3d_workspace_device_bytes(const sa3d_workspace *ws) { return ws->dev_bytes; }
int sa3d_workspace_n_outputs(const sa3d_workspace *ws) { return ws->n_out; }
const sa3d_tensor_view *sa3d_workspace_output_at(const sa3d_workspace *ws, int i) {
    return i >= 0 && i < ws->n_out ? &ws->out[i] : NULL;
}
static int output_index(const sa3d_workspace *ws, const char *name) {   /* -1: none */
    for (int i = 0; i < ws->n_out; i++)
        if (!strcmp(ws->out[i].name, name)) return i;
    return -1;
}
const sa3d_tensor_view *sa3d_workspace_output(const sa3d_workspace *ws, const char *name) {
    int i = output_index(ws, name);
    return i >= 0 ? &ws->out[i] : NULL;
}

sa3d_status sa3d_model_forward(const sa3d_model *m, sa3d_workspace *ws, const float *pixels, sa3d_error *err) {
    if (ws->m != m) return sa3d_fail(err, SA3D_ERR_ARG, "%s: workspace belongs to another model", m->dir);
    if (ws->broken)
        return sa3d_fail(err, ws->broken, "%s: workspace: its last resize failed (resize it again or free it)",
                         m->dir);
    if (!pixels) pixels = ws->input;
    if (!pixels) return sa3d_fail(err, SA3D_ERR_ARG, "%s: no pixels (NULL, and no sa3d_workspace_input buffer)", m->dir);
    return m->be->forward(m, ws, pixels, err);   /* the backend checks that the pixels are finite */
}

float *sa3d_workspace_input(sa3d_workspace *ws) {
    size_t bytes = input_bytes(ws);
    if (!ws->input && !ws->broken && (ws->input = ws->m->be->host_alloc(bytes))) ws->input_cap = bytes;
    return ws->input;
}

sa3d_status sa3d_workspace_download(sa3d_workspace *ws, sa3d_error *err) {
    if (!ws->m->be->download) return SA3D_OK;
    return ws->m->be->download(ws, -1, err);
}

sa3d_status sa3d_workspace_download_output(sa3d_workspace *ws, const char *name, sa3d_error *err) {
    int i = output_index(ws, name);
    if (i < 0) return sa3d_fail(err, SA3D_ERR_ARG, "%s: the workspace has no output %s", ws->m->dir, name);
    if (!ws->m->be->download) return SA3D_OK;
    return ws->m->be->download(ws, i, err);
}

const char *sa3d_model_device(const sa3d_model *m) { return m->be->name; }
const char *sa3d_model_dtype(const sa3d_model *m) { return dtype_names[m->dtype]; }
size_t sa3d_model_device_bytes(const sa3d_model *m) { return m->dev_bytes; }
