/* bench_nn: the networks benchmark (STYLE.md section 11). DINOv2 ViT-S/14 and ViT-B/14 at 518 and 840, and
 * Depth Anything V2 Small at 518 x 686, with seeded random weights at the real dimensions, each timed in its own
 * process by us and by the PyTorch peer (bench/peers/torch_nn.py) on the same model file, input, thread count
 * and dtype (float32), beside the SGEMM rate this machine reaches in the same run.
 *
 *     bench_nn [--cases vits518,vits840,vitb518,vitb840,da_s518x686] [--threads N] [--runs N] [--warmup N]
 *              [--seed S] [--dir TMPDIR] [--peer PATH | --no-peer] [--python PATH] [--json FILE] [--keep] [--tiny]
 *
 * For each model it writes a Hugging Face folder (config.json + model.safetensors) into a fresh temporary
 * directory; for each case it writes the input ("pixel_values" [1][3][H][W], N(0,1): already normalised) and
 * runs two child processes, so that peak RSS (VmHWM) is per case and per implementation:
 *   ours:  bench_nn --run-case DIR H W THREADS WARMUP RUNS IN OUT   (sa3d_model_open, one workspace, warm-up,
 *          best of RUNS; writes the output of the last pass to OUT)
 *   peer:  python3 torch_nn.py --model DIR --input IN --ours OUT ... (same warm-up and best of RUNS; compares
 *          its output with OUT and reports the max difference)
 * Each prints one JSON line on stdout. FLOPs are counted analytically (2 x multiply-adds of every matrix
 * product and convolution; norms, softmax, activations and resizes are not counted).
 *
 * --tiny swaps in tiny models (hidden 32/48, 2-4 layers, 56-84 pixel inputs) and small SGEMMs: the ctest
 * smoke run (bench-smoke). Exit status: 0 ok, 1 a case or the peer failed, 2 usage error, 130 interrupted. */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include "base/base.h"
#include "semalign3d/nn.h"
#include "semalign3d/safetensors.h"

#ifndef SA3D_SOURCE_DIR
#define SA3D_SOURCE_DIR "."
#endif
#ifndef SA3D_BUILD_FLAGS
#define SA3D_BUILD_FLAGS "unknown"
#endif

extern char **environ;

enum { EXIT_OK = 0, EXIT_RUN = 1, EXIT_USAGE = 2, EXIT_INTERRUPTED = 130 };

static volatile sig_atomic_t g_interrupted;
static void on_signal(int sig) { g_interrupted = sig; }

/* ---- seeded random numbers: splitmix64 seeds xoshiro256** ---- */

typedef struct rng { uint64_t s[4]; } rng;

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void rng_seed(rng *r, uint64_t seed, uint64_t stream) {
    uint64_t x = seed ^ (stream * 0xd1b54a32d192ed03ull);
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(rng *r) {
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 45);
    return out;
}

static double rng_uniform(rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }   /* [0, 1) */

/* Fills x[n] with N(mean, sd), Box-Muller in double. */
static void fill_normal(rng *r, float *x, size_t n, double mean, double sd) {
    for (size_t i = 0; i < n; i += 2) {
        double u1 = 1.0 - rng_uniform(r), u2 = rng_uniform(r);
        double rad = sqrt(-2.0 * log(u1)), th = 2.0 * 3.14159265358979323846 * u2;
        x[i] = (float)(mean + sd * rad * cos(th));
        if (i + 1 < n) x[i + 1] = (float)(mean + sd * rad * sin(th));
    }
}

/* ---- models and cases ---- */

typedef struct model_spec {
    const char *dir_name;       /* folder inside the temporary directory */
    const char *stands_for;     /* the Hugging Face checkpoint whose dimensions it has */
    int depth_anything;
    int D, L, heads, mlp_ratio, patch, image_size;   /* DINOv2 (the backbone for Depth Anything) */
    int out_idx[4], neck[4], fusion, head;            /* Depth Anything only */
} model_spec;

/* Real dimensions: facebook/dinov2-small, facebook/dinov2-base, depth-anything/Depth-Anything-V2-Small-hf
 * (its config.json: backbone dinov2 384/6 heads, out_indices [3, 6, 9, 12], neck_hidden_sizes
 * [48, 96, 192, 384], fusion_hidden_size 64, head_hidden_size 32, reassemble_factors [4, 2, 1, 0.5]). */
static const model_spec MODELS[3] = {
    { "dinov2-small", "facebook/dinov2-small", 0, 384, 12, 6, 4, 14, 518, { 0 }, { 0 }, 0, 0 },
    { "dinov2-base", "facebook/dinov2-base", 0, 768, 12, 12, 4, 14, 518, { 0 }, { 0 }, 0, 0 },
    { "depth-anything-v2-small", "depth-anything/Depth-Anything-V2-Small-hf", 1, 384, 12, 6, 4, 14, 518,
      { 3, 6, 9, 12 }, { 48, 96, 192, 384 }, 64, 32 },
};
static const model_spec MODELS_TINY[3] = {
    { "dinov2-tiny-s", "tiny (smoke test)", 0, 32, 2, 2, 4, 14, 56, { 0 }, { 0 }, 0, 0 },
    { "dinov2-tiny-b", "tiny (smoke test)", 0, 48, 2, 4, 4, 14, 56, { 0 }, { 0 }, 0, 0 },
    { "depth-anything-tiny", "tiny (smoke test)", 1, 32, 4, 2, 4, 14, 56, { 1, 2, 3, 4 }, { 8, 16, 24, 32 }, 16, 8 },
};
/* Reassemble factors 4, 2, 1, 1/2 (all Depth Anything V2 checkpoints): num/den per stage. */
static const int REASM_NUM[4] = { 4, 2, 1, 1 }, REASM_DEN[4] = { 1, 1, 1, 2 };

typedef struct case_spec {
    const char *name;
    int model;                  /* index into MODELS / MODELS_TINY */
    int H, W, tiny_H, tiny_W;
} case_spec;

static const case_spec CASES[] = {
    { "vits518", 0, 518, 518, 56, 56 },
    { "vits840", 0, 840, 840, 84, 84 },
    { "vitb518", 1, 518, 518, 56, 56 },
    { "vitb840", 1, 840, 840, 84, 84 },
    { "da_s518x686", 2, 518, 686, 56, 70 },
};
#define N_CASES ((int)(sizeof CASES / sizeof CASES[0]))

/* ---- analytic FLOPs: 2 x multiply-adds of matrix products and convolutions ---- */

static double vit_flops(const model_spec *m, int H, int W) {
    double P = m->patch, Np = (double)(H / m->patch) * (double)(W / m->patch), T = 1.0 + Np, D = m->D;
    double M = D * m->mlp_ratio;
    double macs = Np * D * 3.0 * P * P;                            /* patch embedding */
    macs += m->L * (4.0 * T * D * D                                /* query, key, value, output */
                    + 2.0 * T * D * M                              /* fc1, fc2 */
                    + 2.0 * T * T * D);                            /* q k^T and probs v over all heads */
    return 2.0 * macs;
}

static double conv_macs(double Co, double Ci, double k, double Ho, double Wo) { return Co * Ci * k * k * Ho * Wo; }

static double dpt_flops(const model_spec *m, int H, int W) {
    int gh = H / m->patch, gw = W / m->patch, rh[4], rw[4];
    double F = m->fusion, macs = 0.0;
    for (int s = 0; s < 4; s++) {
        double N = m->neck[s];
        macs += conv_macs(N, m->D, 1, gh, gw);                                  /* reassemble projection */
        if (REASM_NUM[s] > 1) {                                                 /* ConvTranspose k = s = f */
            rh[s] = gh * REASM_NUM[s];
            rw[s] = gw * REASM_NUM[s];
            macs += conv_macs(N, N, REASM_NUM[s], gh, gw);
        } else if (REASM_DEN[s] > 1) {                                          /* 3x3 conv, stride 2, pad 1 */
            rh[s] = (gh - 1) / REASM_DEN[s] + 1;
            rw[s] = (gw - 1) / REASM_DEN[s] + 1;
            macs += conv_macs(N, N, 3, rh[s], rw[s]);
        } else {
            rh[s] = gh;
            rw[s] = gw;
        }
        macs += conv_macs(F, N, 3, rh[s], rw[s]);                               /* neck.convs */
    }
    for (int idx = 0; idx < 4; idx++) {                                          /* fusion, coarsest first */
        int s = 3 - idx;
        macs += (idx ? 4.0 : 2.0) * conv_macs(F, F, 3, rh[s], rw[s]);            /* residual units */
        double th = idx < 3 ? rh[s - 1] : 2.0 * rh[0], tw = idx < 3 ? rw[s - 1] : 2.0 * rw[0];
        macs += conv_macs(F, F, 1, th, tw);                                     /* projection */
    }
    macs += conv_macs(F / 2, F, 3, 2.0 * rh[0], 2.0 * rw[0]);                    /* head.conv1 */
    macs += conv_macs(m->head, F / 2, 3, (double)gh * m->patch, (double)gw * m->patch);   /* head.conv2 */
    macs += conv_macs(1, m->head, 1, (double)gh * m->patch, (double)gw * m->patch);       /* head.conv3 */
    return 2.0 * macs;
}

static double model_flops(const model_spec *m, int H, int W) {
    return vit_flops(m, H, W) + (m->depth_anything ? dpt_flops(m, H, W) : 0.0);
}

/* ---- writing a model folder ---- */

enum { INIT_NORMAL, INIT_UNIFORM, INIT_CONST };

typedef struct gen {
    sa3d_st_writer *w;
    rng r;
    float **blocks;             /* every tensor's data: the writer borrows them until it writes */
    int n_blocks, cap_blocks;
    size_t n_params;
    sa3d_status status;         /* the first failure sticks */
    sa3d_error *err;
} gen;

#define SHAPE(...) ((const int64_t[]){ __VA_ARGS__ })

/* Adds tensor fmt... of the given shape: N(a, b), U(a, b) or the constant a. */
static void put(gen *g, int init, double a, double b, int ndim, const int64_t *shape, const char *fmt, ...) {
    if (g->status != SA3D_OK) return;
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    if (g->n_blocks == g->cap_blocks) {
        int cap = g->cap_blocks ? 2 * g->cap_blocks : 256;
        float **nb = realloc(g->blocks, (size_t)cap * sizeof *nb);
        if (!nb) { g->status = sa3d_fail(g->err, SA3D_ERR_NOMEM, "%s: out of memory", name); return; }
        g->blocks = nb;
        g->cap_blocks = cap;
    }
    float *x = malloc(n * sizeof *x);
    if (!x) { g->status = sa3d_fail(g->err, SA3D_ERR_NOMEM, "%s: cannot allocate %zu floats", name, n); return; }
    g->blocks[g->n_blocks++] = x;
    if (init == INIT_NORMAL) fill_normal(&g->r, x, n, a, b);
    else if (init == INIT_UNIFORM) for (size_t i = 0; i < n; i++) x[i] = (float)(a + (b - a) * rng_uniform(&g->r));
    else for (size_t i = 0; i < n; i++) x[i] = (float)a;
    g->n_params += n;
    g->status = sa3d_st_writer_add_f32(g->w, name, ndim, shape, x, g->err);
}

/* Dinov2Model weights under prefix p. Matrices N(0, 1/fan_in) keep the activations O(1) through all blocks
 * (and the attention non-uniform); norms near 1, layer scales in [0.1, 1], small biases. */
static void gen_vit(gen *g, const model_spec *m, const char *p) {
    int64_t D = m->D, M = (int64_t)m->D * m->mlp_ratio, P = m->patch, G = m->image_size / m->patch;
    double sd = 1.0 / sqrt((double)D), sm = 1.0 / sqrt((double)M), sp = 1.0 / sqrt(3.0 * (double)(P * P));
    put(g, INIT_NORMAL, 0.0, 0.02, 3, SHAPE(1, 1, D), "%sembeddings.cls_token", p);
    put(g, INIT_CONST, 0.0, 0.0, 2, SHAPE(1, D), "%sembeddings.mask_token", p);   /* in real files; unused */
    put(g, INIT_NORMAL, 0.0, 0.2, 3, SHAPE(1, 1 + G * G, D), "%sembeddings.position_embeddings", p);
    put(g, INIT_NORMAL, 0.0, sp, 4, SHAPE(D, 3, P, P), "%sembeddings.patch_embeddings.projection.weight", p);
    put(g, INIT_NORMAL, 0.0, 0.02, 1, SHAPE(D), "%sembeddings.patch_embeddings.projection.bias", p);
    for (int l = 0; l < m->L; l++) {
        const char *a = "attention.attention";
        put(g, INIT_NORMAL, 1.0, 0.1, 1, SHAPE(D), "%sencoder.layer.%d.norm1.weight", p, l);
        put(g, INIT_NORMAL, 0.0, 0.02, 1, SHAPE(D), "%sencoder.layer.%d.norm1.bias", p, l);
        put(g, INIT_NORMAL, 0.0, sd, 2, SHAPE(D, D), "%sencoder.layer.%d.%s.query.weight", p, l, a);
        put(g, INIT_NORMAL, 0.0, 0.02, 1, SHAPE(D), "%sencoder.layer.%d.%s.query.bias", p, l, a);
        put(g, INIT_NORMAL, 0.0, sd, 2, SHAPE(D, D), "%sencoder.layer.%d.%s.key.weight", p, l, a);
        put(g, INIT_NORMAL, 0.0, 0.02, 1, SHAPE(D), "%sencoder.layer.%d.%s.key.bias", p, l, a);
        put(g, INIT_NORMAL, 0.0, sd, 2, SHAPE(D, D), "%sencoder.layer.%d.%s.value.weight", p, l, a);
        put(g, INIT_NORMAL, 0.0, 0.02, 1, SHAPE(D), "%sencoder.layer.%d.%s.value.bias", p, l, a);
        put(g, INIT_NORMAL, 0.0, sd, 2, SHAPE(D, D), "%sencoder.layer.%d.attention.output.dense.weight", p, l);
        put(g, INIT_NORMAL, 0.0, 0.02, 1, SHAPE(D), "%sencoder.layer.%d.attention.output.dense.bias", p, l);
        put(g, INIT_UNIFORM, 0.1, 1.0, 1, SHAPE(D), "%sencoder.layer.%d.layer_scale1.lambda1", p, l);
        put(g, INIT_NORMAL, 1.0, 0.1, 1, SHAPE(D), "%sencoder.layer.%d.norm2.weight", p, l);
        put(g, INIT_NORMAL, 0.0, 0.02, 1, SHAPE(D), "%sencoder.layer.%d.norm2.bias", p, l);
        put(g, INIT_NORMAL, 0.0, sd, 2, SHAPE(M, D), "%sencoder.layer.%d.mlp.fc1.weight", p, l);
        put(g, INIT_NORMAL, 0.0, 0.02, 1, SHAPE(M), "%sencoder.layer.%d.mlp.fc1.bias", p, l);
        put(g, INIT_NORMAL, 0.0, sm, 2, SHAPE(D, M), "%sencoder.layer.%d.mlp.fc2.weight", p, l);
        put(g, INIT_NORMAL, 0.0, 0.02, 1, SHAPE(D), "%sencoder.layer.%d.mlp.fc2.bias", p, l);
        put(g, INIT_UNIFORM, 0.1, 1.0, 1, SHAPE(D), "%sencoder.layer.%d.layer_scale2.lambda1", p, l);
    }
    put(g, INIT_NORMAL, 1.0, 0.1, 1, SHAPE(D), "%slayernorm.weight", p);
    put(g, INIT_NORMAL, 0.0, 0.02, 1, SHAPE(D), "%slayernorm.bias", p);
}

/* Depth Anything neck + head weights (names as DepthAnythingForDepthEstimation), convolutions N(0, 1/fan_in). */
static void gen_dpt(gen *g, const model_spec *m) {
    int64_t D = m->D, F = m->fusion, Hh = m->head;
    const char *fs = "neck.fusion_stage.layers";
    for (int i = 0; i < 4; i++) {
        int64_t N = m->neck[i];
        put(g, INIT_NORMAL, 0.0, 1.0 / sqrt((double)D), 4, SHAPE(N, D, 1, 1),
            "neck.reassemble_stage.layers.%d.projection.weight", i);
        put(g, INIT_NORMAL, 0.0, 0.02, 1, SHAPE(N), "neck.reassemble_stage.layers.%d.projection.bias", i);
        if (REASM_NUM[i] > 1) {
            int64_t f = REASM_NUM[i];
            put(g, INIT_NORMAL, 0.0, 1.0 / sqrt((double)N), 4, SHAPE(N, N, f, f),
                "neck.reassemble_stage.layers.%d.resize.weight", i);
            put(g, INIT_NORMAL, 0.0, 0.02, 1, SHAPE(N), "neck.reassemble_stage.layers.%d.resize.bias", i);
        } else if (REASM_DEN[i] > 1) {
            put(g, INIT_NORMAL, 0.0, 1.0 / sqrt(9.0 * (double)N), 4, SHAPE(N, N, 3, 3),
                "neck.reassemble_stage.layers.%d.resize.weight", i);
            put(g, INIT_NORMAL, 0.0, 0.02, 1, SHAPE(N), "neck.reassemble_stage.layers.%d.resize.bias", i);
        }
        put(g, INIT_NORMAL, 0.0, 1.0 / sqrt(9.0 * (double)N), 4, SHAPE(F, N, 3, 3), "neck.convs.%d.weight", i);
    }
    double s3 = 1.0 / sqrt(9.0 * (double)F), s1 = 1.0 / sqrt((double)F);
    for (int i = 0; i < 4; i++) {
        put(g, INIT_NORMAL, 0.0, s1, 4, SHAPE(F, F, 1, 1), "%s.%d.projection.weight", fs, i);
        put(g, INIT_NORMAL, 0.0, 0.02, 1, SHAPE(F), "%s.%d.projection.bias", fs, i);
        for (int r = 1; r <= 2; r++)
            for (int c = 1; c <= 2; c++) {
                put(g, INIT_NORMAL, 0.0, s3, 4, SHAPE(F, F, 3, 3), "%s.%d.residual_layer%d.convolution%d.weight",
                    fs, i, r, c);
                put(g, INIT_NORMAL, 0.0, 0.02, 1, SHAPE(F), "%s.%d.residual_layer%d.convolution%d.bias", fs, i, r, c);
            }
    }
    put(g, INIT_NORMAL, 0.0, s3, 4, SHAPE(F / 2, F, 3, 3), "head.conv1.weight");
    put(g, INIT_NORMAL, 0.0, 0.02, 1, SHAPE(F / 2), "head.conv1.bias");
    put(g, INIT_NORMAL, 0.0, 1.0 / sqrt(4.5 * (double)F), 4, SHAPE(Hh, F / 2, 3, 3), "head.conv2.weight");
    put(g, INIT_NORMAL, 0.0, 0.02, 1, SHAPE(Hh), "head.conv2.bias");
    put(g, INIT_NORMAL, 0.0, 1.0 / sqrt((double)Hh), 4, SHAPE(1, Hh, 1, 1), "head.conv3.weight");
    put(g, INIT_CONST, 0.1, 0.0, 1, SHAPE(1), "head.conv3.bias");   /* > 0 so the final ReLU keeps signal */
}

/* Dinov2Config fields (as in the real config.json files, plus the defaults the loader reads). */
static cJSON *vit_config_json(const model_spec *m) {
    cJSON *c = cJSON_CreateObject();
    if (!c) return NULL;
    cJSON_AddItemToObject(c, "architectures", cJSON_CreateStringArray((const char *const[]){ "Dinov2Model" }, 1));
    cJSON_AddStringToObject(c, "model_type", "dinov2");
    cJSON_AddNumberToObject(c, "hidden_size", m->D);
    cJSON_AddNumberToObject(c, "num_hidden_layers", m->L);
    cJSON_AddNumberToObject(c, "num_attention_heads", m->heads);
    cJSON_AddNumberToObject(c, "mlp_ratio", m->mlp_ratio);
    cJSON_AddNumberToObject(c, "patch_size", m->patch);
    cJSON_AddNumberToObject(c, "image_size", m->image_size);
    cJSON_AddNumberToObject(c, "num_channels", 3);
    cJSON_AddStringToObject(c, "hidden_act", "gelu");
    cJSON_AddNumberToObject(c, "layer_norm_eps", 1e-6);
    cJSON_AddNumberToObject(c, "layerscale_value", 1.0);
    cJSON_AddBoolToObject(c, "qkv_bias", 1);
    cJSON_AddBoolToObject(c, "use_swiglu_ffn", 0);
    cJSON_AddBoolToObject(c, "apply_layernorm", 1);
    cJSON_AddStringToObject(c, "torch_dtype", "float32");
    return c;
}

static char *model_config_text(const model_spec *m) {
    cJSON *root;
    if (!m->depth_anything) {
        if (!(root = vit_config_json(m))) return NULL;
    } else {
        static const double factors[4] = { 4, 2, 1, 0.5 };
        char stages[4][16];
        const char *stage_names[4];
        for (int i = 0; i < 4; i++) {
            snprintf(stages[i], sizeof stages[i], "stage%d", m->out_idx[i]);
            stage_names[i] = stages[i];
        }
        cJSON *bb = vit_config_json(m);
        if (!bb || !(root = cJSON_CreateObject())) { cJSON_Delete(bb); return NULL; }
        cJSON_AddItemToObject(bb, "out_indices", cJSON_CreateIntArray(m->out_idx, 4));
        cJSON_AddItemToObject(bb, "out_features", cJSON_CreateStringArray(stage_names, 4));
        cJSON_AddBoolToObject(bb, "reshape_hidden_states", 0);
        cJSON_AddItemToObject(root, "architectures",
                              cJSON_CreateStringArray((const char *const[]){ "DepthAnythingForDepthEstimation" }, 1));
        cJSON_AddStringToObject(root, "model_type", "depth_anything");
        cJSON_AddItemToObject(root, "backbone_config", bb);
        cJSON_AddStringToObject(root, "depth_estimation_type", "relative");
        cJSON_AddNumberToObject(root, "max_depth", 1);
        cJSON_AddNumberToObject(root, "fusion_hidden_size", m->fusion);
        cJSON_AddNumberToObject(root, "head_hidden_size", m->head);
        cJSON_AddNumberToObject(root, "head_in_index", -1);
        cJSON_AddItemToObject(root, "neck_hidden_sizes", cJSON_CreateIntArray(m->neck, 4));
        cJSON_AddNumberToObject(root, "patch_size", m->patch);
        cJSON_AddItemToObject(root, "reassemble_factors", cJSON_CreateDoubleArray(factors, 4));
        cJSON_AddNumberToObject(root, "reassemble_hidden_size", m->D);
        cJSON_AddStringToObject(root, "torch_dtype", "float32");
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    return text;
}

static sa3d_status write_text_file(const char *path, const char *text, sa3d_error *err) {
    sa3d_atomic_file af;
    sa3d_status s = sa3d_atomic_open(&af, path, err);
    if (s) return s;
    if ((s = sa3d_atomic_write(&af, text, strlen(text), err))) { sa3d_atomic_abort(&af); return s; }
    return sa3d_atomic_commit(&af, err);
}

/* Writes dir/config.json and dir/model.safetensors with seeded weights. */
static sa3d_status write_model(const char *dir, const model_spec *m, uint64_t seed, uint64_t stream,
                               size_t *n_params, sa3d_error *err) {
    sa3d_status s;
    char *cfg_path = sa3d_path_join(dir, "config.json"), *st_path = sa3d_path_join(dir, "model.safetensors");
    char *text = model_config_text(m);
    gen g = { 0 };
    g.err = err;
    rng_seed(&g.r, seed, stream);
    if (!cfg_path || !st_path || !text || !(g.w = sa3d_st_writer_new())) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", dir);
        goto done;
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        s = sa3d_fail(err, SA3D_ERR_IO, "%s: cannot create directory: %s", dir, strerror(errno));
        goto done;
    }
    if ((s = write_text_file(cfg_path, text, err))) goto done;
    gen_vit(&g, m, m->depth_anything ? "backbone." : "");
    if (m->depth_anything) gen_dpt(&g, m);
    if ((s = g.status)) goto done;
    if ((s = sa3d_st_writer_set_metadata(g.w, "format", "pt", err))) goto done;
    s = sa3d_st_writer_write(g.w, st_path, err);
    *n_params = g.n_params;
done:
    sa3d_st_writer_free(g.w);
    for (int i = 0; i < g.n_blocks; i++) free(g.blocks[i]);
    free(g.blocks);
    cJSON_free(text);
    sa3d_free(cfg_path);
    sa3d_free(st_path);
    return s;
}

/* Writes path with "pixel_values" [1][3][H][W] ~ N(0, 1): an already normalised image. */
static sa3d_status write_input(const char *path, int H, int W, uint64_t seed, uint64_t stream, sa3d_error *err) {
    size_t n = (size_t)3 * H * W;
    float *x = malloc(n * sizeof *x);
    sa3d_st_writer *w = sa3d_st_writer_new();
    sa3d_status s;
    if (!x || !w) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", path);
    } else {
        rng r;
        rng_seed(&r, seed, stream);
        fill_normal(&r, x, n, 0.0, 1.0);
        if (!(s = sa3d_st_writer_add_f32(w, "pixel_values", 4, SHAPE(1, 3, H, W), x, err)))
            s = sa3d_st_writer_write(w, path, err);
    }
    sa3d_st_writer_free(w);
    free(x);
    return s;
}

/* ---- the measured child: one model, one input size ---- */

/* Peak resident set of this process since exec (VmHWM), in kB; ru_maxrss where /proc is missing. */
static long peak_rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char line[256];
        long kb = -1;
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "VmHWM:", 6)) { kb = strtol(line + 6, NULL, 10); break; }
        fclose(f);
        if (kb >= 0) return kb;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* Minor page faults of this process so far (a page touched for the first time since it was mapped). */
static long minor_faults(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

static int parse_int(const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return 0;
    *out = (int)v;
    return 1;
}

/* argv: --run-case DIR H W THREADS WARMUP RUNS IN OUT. Prints one JSON line; errors on stderr, exit 1. */
static int run_case_child(int argc, char **argv) {
    int H, W, threads, warmup, runs;
    if (argc != 10 || !parse_int(argv[3], 1, 16384, &H) || !parse_int(argv[4], 1, 16384, &W) ||
        !parse_int(argv[5], 1, 1024, &threads) || !parse_int(argv[6], 0, 1000, &warmup) ||
        !parse_int(argv[7], 1, 1000, &runs)) {
        fprintf(stderr, "bench_nn --run-case: expected DIR H W THREADS WARMUP RUNS IN OUT\n");
        return EXIT_USAGE;
    }
    const char *dir = argv[2], *in_path = argv[8], *out_path = argv[9];
    sa3d_error err = { 0 };
    sa3d_model *m = NULL;
    sa3d_workspace *ws = NULL;
    sa3d_safetensors *in = NULL;
    sa3d_st_writer *w = NULL;
    float *pixels = NULL;
    double *times = calloc((size_t)runs, sizeof *times);
    int rc = EXIT_RUN;
    sa3d_model_params p = sa3d_model_params_default();
    p.n_threads = threads;
    double t0 = sa3d_now();
    if (!times) { sa3d_fail(&err, SA3D_ERR_NOMEM, "out of memory"); goto done; }
    if (sa3d_model_open(&m, dir, &p, &err)) goto done;
    double open_ms = (sa3d_now() - t0) * 1e3;
    if (sa3d_workspace_new(&ws, m, H, W, 0, &err)) goto done;
    if (sa3d_st_open(&in, in_path, &err)) goto done;
    const sa3d_st_tensor *t = sa3d_st_find(in, "pixel_values");
    size_t n = (size_t)3 * H * W;
    if (!t || t->numel != n) {
        sa3d_fail(&err, SA3D_ERR_FORMAT, "%s: pixel_values: missing or not %zu values", in_path, n);
        goto done;
    }
    if (!(pixels = malloc(n * sizeof *pixels))) { sa3d_fail(&err, SA3D_ERR_NOMEM, "out of memory"); goto done; }
    if (sa3d_st_read_f32(t, pixels, n, &err)) goto done;
    for (int i = 0; i < warmup; i++)
        if (sa3d_model_forward(m, ws, pixels, &err)) goto done;
    double best = (double)INFINITY;
    long faults0 = minor_faults();
    for (int i = 0; i < runs; i++) {
        double t1 = sa3d_now();
        if (sa3d_model_forward(m, ws, pixels, &err)) goto done;
        times[i] = (sa3d_now() - t1) * 1e3;
        if (times[i] < best) best = times[i];
    }
    double faults_per_run = (double)(minor_faults() - faults0) / runs;
    const char *out_name = sa3d_model_get_kind(m) == SA3D_MODEL_DEPTH_ANYTHING ? "predicted_depth"
                                                                               : "last_hidden_state";
    const sa3d_tensor_view *v = sa3d_workspace_output(ws, out_name);
    if (!v) { sa3d_fail(&err, SA3D_ERR_FORMAT, "%s: no output %s", dir, out_name); goto done; }
    if (!(w = sa3d_st_writer_new())) { sa3d_fail(&err, SA3D_ERR_NOMEM, "out of memory"); goto done; }
    if (sa3d_st_writer_add_f32(w, out_name, v->ndim, v->shape, v->data, &err) ||
        sa3d_st_writer_write(w, out_path, &err))
        goto done;
    printf("{\"ms\": %.6g, \"runs_ms\": [", best);
    for (int i = 0; i < runs; i++) printf("%s%.6g", i ? ", " : "", times[i]);
    printf("], \"peak_rss_kb\": %ld, \"faults_per_run\": %.6g, \"n_params\": %zu, \"workspace_bytes\": %zu, "
           "\"open_ms\": %.6g}\n", peak_rss_kb(), faults_per_run, sa3d_model_n_params(m), sa3d_workspace_bytes(ws),
           open_ms);
    fflush(stdout);
    rc = EXIT_OK;
done:
    if (rc != EXIT_OK) fprintf(stderr, "bench_nn --run-case: %s\n", err.msg);
    sa3d_st_writer_free(w);
    sa3d_st_close(in);
    sa3d_workspace_free(ws);
    sa3d_model_free(m);
    free(pixels);
    free(times);
    return rc;
}

/* ---- child processes ---- */

/* Runs argv[0] (a path) with the parent's environment plus the "KEY=VALUE" entries of set (which replace
 * the same keys), capturing stdout into *out (malloc'd, NUL-terminated); stderr passes through. Returns 0 when
 * the child exits 0; otherwise fills msg. */
static int run_child(char *const argv[], char *const set[], int n_set, char **out, char *msg, size_t msg_len) {
    *out = NULL;
    size_t n_env = 0;
    while (environ[n_env]) n_env++;
    char **envp = malloc((n_env + (size_t)n_set + 1) * sizeof *envp);
    if (!envp) { snprintf(msg, msg_len, "out of memory"); return -1; }
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++) {
        int replaced = 0;
        for (int j = 0; j < n_set; j++) {
            size_t klen = (size_t)(strchr(set[j], '=') - set[j]) + 1;
            if (!strncmp(environ[i], set[j], klen)) replaced = 1;
        }
        if (!replaced) envp[k++] = environ[i];
    }
    for (int j = 0; j < n_set; j++) envp[k++] = set[j];
    envp[k] = NULL;

    int fd[2];
    if (pipe(fd) != 0) { free(envp); snprintf(msg, msg_len, "pipe: %s", strerror(errno)); return -1; }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]); close(fd[1]); free(envp);
        snprintf(msg, msg_len, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {   /* child: only async-signal-safe calls until exec */
        dup2(fd[1], STDOUT_FILENO);
        close(fd[0]);
        close(fd[1]);
        execve(argv[0], argv, envp);
        static const char e[] = "bench_nn: cannot execute the child program\n";
        ssize_t ignored = write(STDERR_FILENO, e, sizeof e - 1);
        (void)ignored;
        _exit(127);
    }
    free(envp);
    close(fd[1]);
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    int rc = 0;
    for (;;) {
        if (!buf) { rc = -1; snprintf(msg, msg_len, "out of memory"); break; }
        if (len + 1024 > cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) { free(buf); buf = NULL; continue; }
            buf = nb;
        }
        ssize_t r = read(fd[0], buf + len, cap - len - 1);
        if (r > 0) { len += (size_t)r; continue; }
        if (r == 0) break;
        if (errno == EINTR && !g_interrupted) continue;
        rc = -1;
        snprintf(msg, msg_len, g_interrupted ? "interrupted" : "read: %s", strerror(errno));
        kill(pid, SIGTERM);
        break;
    }
    close(fd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (rc == 0 && g_interrupted) { rc = -1; snprintf(msg, msg_len, "interrupted"); }
    if (rc == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        rc = -1;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 127) snprintf(msg, msg_len, "cannot execute %s", argv[0]);
        else if (WIFEXITED(status)) snprintf(msg, msg_len, "%s exited with status %d", argv[0], WEXITSTATUS(status));
        else snprintf(msg, msg_len, "%s killed by signal %d", argv[0], WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
    if (buf) buf[len] = '\0';
    if (rc != 0) { free(buf); return -1; }
    *out = buf;
    return 0;
}

/* The last line of text that parses as a JSON object. */
static cJSON *last_json_line(const char *text) {
    const char *p = text + strlen(text);
    while (p > text) {
        const char *end = p;
        while (p > text && p[-1] != '\n') p--;
        if (end > p && *p == '{') {
            char *line = malloc((size_t)(end - p) + 1);
            if (!line) return NULL;
            memcpy(line, p, (size_t)(end - p));
            line[end - p] = '\0';
            cJSON *j = cJSON_Parse(line);
            free(line);
            if (cJSON_IsObject(j)) return j;
            cJSON_Delete(j);
        }
        if (p > text) p--;
    }
    return NULL;
}

static double json_num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : (double)NAN;
}

static const char *json_str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : "?";
}

/* ---- machine description ---- */

static void cpu_model(char *out, size_t n) {
    snprintf(out, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        const char *c = strchr(line, ':');
        if (!c) continue;
        c++;
        while (*c == ' ' || *c == '\t') c++;
        snprintf(out, n, "%s", c);
        out[strcspn(out, "\n")] = '\0';
        break;
    }
    fclose(f);
}

static void git_commit(char *out, size_t n) {
    snprintf(out, n, "unknown");
    FILE *p = popen("git -C '" SA3D_SOURCE_DIR "' describe --always --dirty --abbrev=12 2>/dev/null", "r");
    if (!p) return;
    char line[128];
    if (fgets(line, sizeof line, p) && line[0] && line[0] != '\n') {
        line[strcspn(line, "\n")] = '\0';
        snprintf(out, n, "%s", line);
    }
    pclose(p);
}

/* The first three fields of /proc/loadavg. */
static void load_average(char *out, size_t n) {
    snprintf(out, n, "unknown");
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f) return;
    double a, b, c;
    if (fscanf(f, "%lf %lf %lf", &a, &b, &c) == 3) snprintf(out, n, "%.2f %.2f %.2f", a, b, c);
    fclose(f);
}

/* Best-of-reps GFLOP/s of C[M][N] = A[M][K] . B[N][K]^T (row-major, as nn.Linear), after one warm-up. */
static double sgemm_gflops(int M, int N, int K, int reps, uint64_t seed) {
    float *a = malloc((size_t)M * K * sizeof *a), *b = malloc((size_t)N * K * sizeof *b);
    float *c = malloc((size_t)M * N * sizeof *c);
    double best = (double)INFINITY;
    if (a && b && c) {
        rng r;
        rng_seed(&r, seed, 7);
        for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)rng_uniform(&r) - 0.5f;
        for (size_t i = 0; i < (size_t)N * K; i++) b[i] = (float)rng_uniform(&r) - 0.5f;
        for (int i = 0; i <= reps; i++) {
            double t0 = sa3d_now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a, K, b, K, 0.0f, c, N);
            double dt = sa3d_now() - t0;
            if (i > 0 && dt < best) best = dt;
        }
    }
    free(a);
    free(b);
    free(c);
    return isfinite(best) ? 2.0 * M * N * K / best * 1e-9 : (double)NAN;
}

/* ---- temporary directory ---- */

/* Removes root and everything in it (the layout is two levels: root/<folder>/<file>). */
static void remove_tree(const char *root) {
    DIR *d = opendir(root);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char *sub = sa3d_path_join(root, e->d_name);
            if (!sub) continue;
            DIR *d2 = opendir(sub);
            if (d2) {
                struct dirent *e2;
                while ((e2 = readdir(d2))) {
                    if (!strcmp(e2->d_name, ".") || !strcmp(e2->d_name, "..")) continue;
                    char *f = sa3d_path_join(sub, e2->d_name);
                    if (f && unlink(f) != 0) fprintf(stderr, "bench_nn: cannot remove %s: %s\n", f, strerror(errno));
                    sa3d_free(f);
                }
                closedir(d2);
                if (rmdir(sub) != 0) fprintf(stderr, "bench_nn: cannot remove %s: %s\n", sub, strerror(errno));
            } else if (unlink(sub) != 0) {
                fprintf(stderr, "bench_nn: cannot remove %s: %s\n", sub, strerror(errno));
            }
            sa3d_free(sub);
        }
        closedir(d);
    }
    if (rmdir(root) != 0 && errno != ENOENT) fprintf(stderr, "bench_nn: cannot remove %s: %s\n", root, strerror(errno));
}

/* ---- the parent ---- */

typedef struct case_result {
    int selected, ran, ok, peer_ran;
    double flops, sgemm, ours_ms, torch_ms, ours_rss_mb, torch_rss_mb, max_abs, max_rel;
    double ours_faults, torch_faults;   /* minor page faults per timed pass */
    cJSON *ours, *peer;         /* the children's JSON lines */
    char error[600];
} case_result;

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench_nn [--cases LIST] [--threads N] [--runs N] [--warmup N] [--seed S] [--dir TMPDIR]\n"
            "                [--peer PATH | --no-peer] [--python PATH] [--json FILE] [--keep] [--tiny]\n"
            "  --cases    comma-separated subset of vits518,vits840,vitb518,vitb840,da_s518x686 (default: all)\n"
            "  --threads  threads for us, the peer and SGEMM (default: online cores)\n"
            "  --runs     timed runs, best reported (default 3; 1 with --tiny)\n"
            "  --warmup   untimed runs first (default 1; 0 with --tiny)\n"
            "  --seed     weights and inputs seed (default 1)\n"
            "  --dir      where the temporary model folder is made (default $TMPDIR or /tmp)\n"
            "  --peer     PyTorch peer script (default %s/bench/peers/torch_nn.py)\n"
            "  --no-peer  our numbers only\n"
            "  --python   interpreter for the peer (default /usr/bin/python3)\n"
            "  --json     also write the results to FILE (atomically)\n"
            "  --keep     keep the temporary folder (models, inputs, our outputs)\n"
            "  --tiny     tiny models and inputs: the smoke test\n",
            SA3D_SOURCE_DIR);
}

static int usage_error(const char *fmt, ...) SA3D_PRINTF(1, 2);
static int usage_error(const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "bench_nn: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see --help)\n");
    return EXIT_USAGE;
}

static void print_row(const case_spec *cs, int H, int W, const case_result *r, double sgemm_ref, int peer) {
    char input[32], torch_ms[32] = "-", ratio[32] = "-", trss[32] = "-", diff[32] = "-", tflt[32] = "-";
    snprintf(input, sizeof input, "%dx%d", H, W);
    if (!r->ok) {
        printf("%-12s %-9s FAILED: %s\n", cs->name, input, r->error);
        fflush(stdout);
        return;
    }
    if (peer && r->peer_ran) {
        snprintf(torch_ms, sizeof torch_ms, "%.1f", r->torch_ms);
        snprintf(ratio, sizeof ratio, "%.2fx", r->torch_ms / r->ours_ms);
        snprintf(trss, sizeof trss, "%.0f", r->torch_rss_mb);
        snprintf(diff, sizeof diff, "%.1e", r->max_rel);
        snprintf(tflt, sizeof tflt, "%.1f", r->torch_faults * 1e-3);
    } else if (peer) {
        snprintf(torch_ms, sizeof torch_ms, "failed");
    }
    double gfs = r->flops / (r->ours_ms * 1e-3) * 1e-9;
    printf("%-12s %-9s %10.1f %10s %8s %8.2f %8.1f %6.1f%% %8.0f %8s %9s %9.1f %9s\n", cs->name, input, r->ours_ms,
           torch_ms, ratio, r->flops * 1e-9, gfs, 100.0 * gfs / sgemm_ref, r->ours_rss_mb, trss, diff,
           r->ours_faults * 1e-3, tflt);
    if (r->error[0]) printf("%-12s   peer: %s\n", "", r->error);
    fflush(stdout);
}

static cJSON *dup_or_null(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return v ? cJSON_Duplicate(v, 1) : cJSON_CreateNull();
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "--run-case")) return run_case_child(argc, argv);

    const char *cases_arg = NULL, *dir_arg = NULL, *json_path = NULL, *python = "/usr/bin/python3";
    const char *peer_path = SA3D_SOURCE_DIR "/bench/peers/torch_nn.py";
    int threads = 0, runs = -1, warmup = -1, tiny = 0, no_peer = 0, keep = 0;
    long long seed_ll = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return EXIT_OK; }
        else if (!strcmp(a, "--tiny")) tiny = 1;
        else if (!strcmp(a, "--no-peer")) no_peer = 1;
        else if (!strcmp(a, "--keep")) keep = 1;
        else if (!has_value && (!strcmp(a, "--cases") || !strcmp(a, "--threads") || !strcmp(a, "--runs") ||
                                !strcmp(a, "--warmup") || !strcmp(a, "--seed") || !strcmp(a, "--dir") ||
                                !strcmp(a, "--peer") || !strcmp(a, "--python") || !strcmp(a, "--json")))
            return usage_error("%s needs a value", a);
        else if (!strcmp(a, "--cases")) cases_arg = argv[++i];
        else if (!strcmp(a, "--dir")) dir_arg = argv[++i];
        else if (!strcmp(a, "--peer")) peer_path = argv[++i];
        else if (!strcmp(a, "--python")) python = argv[++i];
        else if (!strcmp(a, "--json")) json_path = argv[++i];
        else if (!strcmp(a, "--threads")) {
            if (!parse_int(argv[++i], 1, 1024, &threads)) return usage_error("--threads: expected 1..1024");
        } else if (!strcmp(a, "--runs")) {
            if (!parse_int(argv[++i], 1, 1000, &runs)) return usage_error("--runs: expected 1..1000");
        } else if (!strcmp(a, "--warmup")) {
            if (!parse_int(argv[++i], 0, 1000, &warmup)) return usage_error("--warmup: expected 0..1000");
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            seed_ll = strtoll(argv[++i], &end, 10);
            if (errno || end == argv[i] || *end || seed_ll < 0) return usage_error("--seed: expected an integer >= 0");
        } else {
            return usage_error("unknown option '%s'", a);
        }
    }
    uint64_t seed = (uint64_t)seed_ll;
    if (runs < 0) runs = tiny ? 1 : 3;
    if (warmup < 0) warmup = tiny ? 0 : 1;
    if (threads == 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        threads = c > 0 ? (int)c : 1;
    }
    const model_spec *models = tiny ? MODELS_TINY : MODELS;

    case_result res[N_CASES];
    memset(res, 0, sizeof res);
    if (!cases_arg) {
        for (int c = 0; c < N_CASES; c++) res[c].selected = 1;
    } else {
        const char *p = cases_arg;
        while (*p) {
            size_t len = strcspn(p, ",");
            int found = 0;
            for (int c = 0; c < N_CASES; c++)
                if (strlen(CASES[c].name) == len && !strncmp(CASES[c].name, p, len)) res[c].selected = found = 1;
            if (!found && len) return usage_error("--cases: unknown case '%.*s'", (int)len, p);
            p += len + (p[len] == ',');
        }
    }
    int peer = !no_peer;
    if (peer && access(peer_path, R_OK) != 0)
        return usage_error("peer script %s: %s; give --peer PATH or --no-peer", peer_path, strerror(errno));

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;   /* no SA_RESTART: a blocked read returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) { fprintf(stderr, "bench_nn: cannot find its own executable (/proc/self/exe)\n"); return EXIT_RUN; }
    self[sl] = '\0';

    const char *tmp_base = dir_arg ? dir_arg : getenv("TMPDIR") && getenv("TMPDIR")[0] ? getenv("TMPDIR") : "/tmp";
    char root[4096];
    snprintf(root, sizeof root, "%s/bench_nn.XXXXXX", tmp_base);
    if (!mkdtemp(root)) {
        fprintf(stderr, "bench_nn: cannot create a temporary directory in %s: %s\n", tmp_base, strerror(errno));
        return EXIT_RUN;
    }

    int exit_code = EXIT_OK;
    char thr_env[2][64], msg[512];
    snprintf(thr_env[0], sizeof thr_env[0], "OMP_NUM_THREADS=%d", threads);
    snprintf(thr_env[1], sizeof thr_env[1], "OPENBLAS_NUM_THREADS=%d", threads);
    char *const env_set[2] = { thr_env[0], thr_env[1] };
    char threads_s[16], warmup_s[16], runs_s[16];
    snprintf(threads_s, sizeof threads_s, "%d", threads);
    snprintf(warmup_s, sizeof warmup_s, "%d", warmup);
    snprintf(runs_s, sizeof runs_s, "%d", runs);

    /* the peer's versions, before anything is timed */
    cJSON *probe = NULL;
    if (peer) {
        char *out = NULL;
        char *const pargv[] = { (char *)python, (char *)peer_path, "--probe", "--threads", threads_s, NULL };
        if (run_child(pargv, env_set, 2, &out, msg, sizeof msg) != 0 || !(probe = last_json_line(out))) {
            fprintf(stderr, "bench_nn: the PyTorch peer does not start (%s %s --probe: %s); "
                    "it needs python3 with torch and numpy, or run with --no-peer\n", python, peer_path,
                    out ? "no JSON output" : msg);
            free(out);
            remove_tree(root);
            return EXIT_RUN;
        }
        free(out);
    }

    char cpu[256], commit[128];
    cpu_model(cpu, sizeof cpu);
    git_commit(commit, sizeof commit);
    sa3d_set_threads(threads);
    const char *par = openblas_get_parallel() == 2 ? "OpenMP" : openblas_get_parallel() == 1 ? "pthreads" : "serial";
    printf("# bench_nn: %s (%ld online CPUs), threads %d, float32, seed %llu, warm-up %d, best of %d runs%s\n", cpu,
           sysconf(_SC_NPROCESSORS_ONLN), threads, (unsigned long long)seed, warmup, runs, tiny ? ", TINY models" : "");
    printf("# ours: semalign3d %s, commit %s, flags: %s\n", sa3d_version(), commit, SA3D_BUILD_FLAGS);
    printf("# ours BLAS: %s (core %s, %s)\n", openblas_get_config(), openblas_get_corename(), par);
    if (probe) {
        printf("# peer: PyTorch %s (python %s, numpy %s), eager attention, BLAS %s\n", json_str(probe, "torch"),
               json_str(probe, "python"), json_str(probe, "numpy"), json_str(probe, "blas"));
        /* the peer's own GEMM rate: a torch whose BLAS runs on fewer cores than asked is slow for that reason */
        printf("# peer matmul (torch.matmul 2048x2048x2048, %d threads, best of 5): %.1f GFLOP/s\n", threads,
               json_num(probe, "matmul_2048_gflops"));
    }
    fflush(stdout);

    /* the machine's SGEMM rate with our BLAS and thread count: two shapes now, the square one again before each
     * case and at the end; the reference for "% of SGEMM" is the best of all (the rate is noisy on shared
     * machines, and the best is the strictest reference) */
    int sq = tiny ? 256 : 2048, vm = tiny ? 37 : 3601, vn = tiny ? 192 : 3072, vk = tiny ? 48 : 768;
    int sreps = tiny ? 2 : 5, creps = tiny ? 1 : 3;
    char load_start[64], load_end[64];
    load_average(load_start, sizeof load_start);
    double sg_sq = sgemm_gflops(sq, sq, sq, sreps, seed), sg_vit = sgemm_gflops(vm, vn, vk, sreps, seed);
    double sg_ref = fmax(sg_sq, sg_vit);

    int written[3] = { 0 };
    for (int c = 0; c < N_CASES && !g_interrupted; c++) {
        case_result *r = &res[c];
        if (!r->selected) continue;
        const case_spec *cs = &CASES[c];
        const model_spec *m = &models[cs->model];
        int H = tiny ? cs->tiny_H : cs->H, W = tiny ? cs->tiny_W : cs->W;
        sa3d_error err = { 0 };
        char *model_dir = sa3d_path_join(root, m->dir_name), *case_dir = sa3d_path_join(root, cs->name);
        char *in_path = case_dir ? sa3d_path_join(case_dir, "input.safetensors") : NULL;
        char *out_path = case_dir ? sa3d_path_join(case_dir, "ours.safetensors") : NULL;
        char *text = NULL;
        r->ran = 1;
        r->flops = model_flops(m, H, W);
        if (!model_dir || !case_dir || !in_path || !out_path) {
            snprintf(r->error, sizeof r->error, "out of memory");
            goto next;
        }
        if (!written[cs->model]) {
            size_t n_params = 0;
            double t0 = sa3d_now();
            fprintf(stderr, "[%s] writing %s (%s dimensions, seed %llu)\n", cs->name, m->dir_name, m->stands_for,
                    (unsigned long long)seed);
            if (write_model(model_dir, m, seed, (uint64_t)cs->model + 1, &n_params, &err)) {
                snprintf(r->error, sizeof r->error, "%s", err.msg);
                goto next;
            }
            fprintf(stderr, "[%s] %zu parameters written in %.1f s\n", cs->name, n_params, sa3d_now() - t0);
            written[cs->model] = 1;
        }
        if (mkdir(case_dir, 0755) != 0) {
            snprintf(r->error, sizeof r->error, "%s: %s", case_dir, strerror(errno));
            goto next;
        }
        if (write_input(in_path, H, W, seed, 100u + (uint64_t)c, &err)) {
            snprintf(r->error, sizeof r->error, "%s", err.msg);
            goto next;
        }
        char Hs[16], Ws[16];
        snprintf(Hs, sizeof Hs, "%d", H);
        snprintf(Ws, sizeof Ws, "%d", W);
        r->sgemm = sgemm_gflops(sq, sq, sq, creps, seed);
        sg_ref = fmax(sg_ref, r->sgemm);
        fprintf(stderr, "[%s] SGEMM %.1f GFLOP/s; ours: %dx%d, %d threads, %d warm-up + %d runs\n", cs->name,
                r->sgemm, H, W, threads, warmup, runs);
        char *const oargv[] = { self, "--run-case", model_dir, Hs, Ws, threads_s, warmup_s, runs_s, in_path,
                                out_path, NULL };
        if (run_child(oargv, env_set, 2, &text, msg, sizeof msg) != 0) {
            snprintf(r->error, sizeof r->error, "ours: %s", msg);
            goto next;
        }
        if (!(r->ours = last_json_line(text))) {
            snprintf(r->error, sizeof r->error, "ours: no JSON result line");
            goto next;
        }
        free(text);
        text = NULL;
        r->ours_ms = json_num(r->ours, "ms");
        r->ours_rss_mb = json_num(r->ours, "peak_rss_kb") * 1024.0 * 1e-6;
        r->ours_faults = json_num(r->ours, "faults_per_run");
        r->ok = 1;
        fprintf(stderr, "[%s] ours: %.1f ms, peak RSS %.0f MB\n", cs->name, r->ours_ms, r->ours_rss_mb);
        if (peer && !g_interrupted) {
            fprintf(stderr, "[%s] torch: same input, %d threads, %d warm-up + %d runs\n", cs->name, threads, warmup,
                    runs);
            char *const pargv[] = { (char *)python, (char *)peer_path, "--model", model_dir, "--input", in_path,
                                    "--ours", out_path, "--threads", threads_s, "--warmup", warmup_s, "--runs",
                                    runs_s, NULL };
            if (run_child(pargv, env_set, 2, &text, msg, sizeof msg) != 0) {
                snprintf(r->error, sizeof r->error, "%s", msg);
            } else if (!(r->peer = last_json_line(text))) {
                snprintf(r->error, sizeof r->error, "no JSON result line");
            } else {
                r->peer_ran = 1;
                r->torch_ms = json_num(r->peer, "ms");
                r->torch_rss_mb = json_num(r->peer, "peak_rss_kb") * 1024.0 * 1e-6;
                r->torch_faults = json_num(r->peer, "faults_per_run");
                r->max_abs = json_num(r->peer, "max_abs_diff");
                r->max_rel = json_num(r->peer, "max_rel_diff");
                fprintf(stderr, "[%s] torch: %.1f ms, peak RSS %.0f MB, max rel diff %.1e\n", cs->name, r->torch_ms,
                        r->torch_rss_mb, r->max_rel);
            }
        }
    next:
        if (!r->ok || (peer && !r->peer_ran)) exit_code = EXIT_RUN;
        if (r->error[0]) fprintf(stderr, "[%s] %s: %s\n", cs->name, r->ok ? "peer failed" : "FAILED", r->error);
        free(text);
        sa3d_free(model_dir);
        sa3d_free(case_dir);
        sa3d_free(in_path);
        sa3d_free(out_path);
    }

    double sg_end = g_interrupted ? (double)NAN : sgemm_gflops(sq, sq, sq, sreps, seed);
    if (isfinite(sg_end)) sg_ref = fmax(sg_ref, sg_end);
    load_average(load_end, sizeof load_end);
    printf("# load average (1, 5, 15 min): %s at the start, %s at the end\n", load_start, load_end);
    printf("# SGEMM (cblas_sgemm, %d threads, best of %d): %dx%dx%d %.1f GFLOP/s, %dx%dx%d (ViT-B/14@840 fc1) "
           "%.1f GFLOP/s at the start, %dx%dx%d %.1f GFLOP/s at the end; %% of SGEMM is of the best seen: %.1f\n",
           threads, sreps, sq, sq, sq, sg_sq, vm, vn, vk, sg_vit, sq, sq, sq, sg_end, sg_ref);
    printf("%-12s %-9s %10s %10s %8s %8s %8s %7s %8s %8s %9s %9s %9s\n", "case", "input", "ours ms", "torch ms",
           "ratio", "GFLOP", "GFLOP/s", "%SGEMM", "ours MB", "torch MB", "max rel", "ours kflt", "torch kflt");
    printf("# kflt: thousands of minor page faults per timed pass (pages touched for the first time since mapped)\n");
    for (int c = 0; c < N_CASES; c++) {
        if (!res[c].ran) continue;
        const case_spec *cs = &CASES[c];
        print_row(cs, tiny ? cs->tiny_H : cs->H, tiny ? cs->tiny_W : cs->W, &res[c], sg_ref, peer);
    }

    /* the targets, for DINOv2 ViT-B/14 at 840 x 840 */
    const case_result *rb = &res[3];
    if (!tiny && rb->ok) {
        double gfs = rb->flops / (rb->ours_ms * 1e-3) * 1e-9;
        printf("# targets vitb840: %.1f%% of SGEMM (>= 60%%: %s), peak RSS %.0f MB (<= 1000 MB: %s)", 100.0 * gfs / sg_ref,
               gfs >= 0.6 * sg_ref ? "met" : "NOT met", rb->ours_rss_mb, rb->ours_rss_mb <= 1000.0 ? "met" : "NOT met");
        if (rb->peer_ran)
            printf(", %.2fx PyTorch (>= 1.5x: %s)", rb->torch_ms / rb->ours_ms,
                   rb->torch_ms >= 1.5 * rb->ours_ms ? "met" : "NOT met");
        printf("\n");
    }

    if (json_path) {
        cJSON *j = cJSON_CreateObject(), *arr = cJSON_CreateArray();
        cJSON_AddStringToObject(j, "bench", "bench_nn");
        cJSON_AddStringToObject(j, "cpu", cpu);
        cJSON_AddNumberToObject(j, "online_cpus", (double)sysconf(_SC_NPROCESSORS_ONLN));
        cJSON_AddNumberToObject(j, "threads", threads);
        cJSON_AddStringToObject(j, "blas", openblas_get_config());
        cJSON_AddStringToObject(j, "blas_core", openblas_get_corename());
        cJSON_AddStringToObject(j, "blas_threading", par);
        cJSON_AddStringToObject(j, "flags", SA3D_BUILD_FLAGS);
        cJSON_AddStringToObject(j, "commit", commit);
        cJSON_AddStringToObject(j, "version", sa3d_version());
        cJSON_AddNumberToObject(j, "seed", (double)seed);
        cJSON_AddNumberToObject(j, "warmup", warmup);
        cJSON_AddNumberToObject(j, "runs", runs);
        cJSON_AddBoolToObject(j, "tiny", tiny);
        cJSON *sg = cJSON_AddObjectToObject(j, "sgemm");
        cJSON_AddNumberToObject(sg, "square_n", sq);
        cJSON_AddNumberToObject(sg, "square_gflops", sg_sq);
        cJSON_AddItemToObject(sg, "vit_mnk", cJSON_CreateIntArray((const int[]){ vm, vn, vk }, 3));
        cJSON_AddNumberToObject(sg, "vit_gflops", sg_vit);
        cJSON_AddNumberToObject(sg, "square_gflops_end", sg_end);
        cJSON_AddNumberToObject(sg, "reference_gflops", sg_ref);
        cJSON_AddStringToObject(j, "load_average_start", load_start);
        cJSON_AddStringToObject(j, "load_average_end", load_end);
        cJSON_AddItemToObject(j, "peer", probe ? cJSON_Duplicate(probe, 1) : cJSON_CreateNull());
        cJSON_AddItemToObject(j, "cases", arr);
        for (int c = 0; c < N_CASES; c++) {
            const case_result *r = &res[c];
            if (!r->ran) continue;
            const model_spec *m = &models[CASES[c].model];
            int H = tiny ? CASES[c].tiny_H : CASES[c].H, W = tiny ? CASES[c].tiny_W : CASES[c].W;
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "case", CASES[c].name);
            cJSON_AddStringToObject(o, "model", m->stands_for);
            cJSON_AddNumberToObject(o, "height", H);
            cJSON_AddNumberToObject(o, "width", W);
            cJSON_AddNumberToObject(o, "tokens", 1 + (H / m->patch) * (W / m->patch));
            cJSON_AddNumberToObject(o, "gflop", r->flops * 1e-9);
            cJSON_AddBoolToObject(o, "ok", r->ok);
            cJSON_AddNumberToObject(o, "sgemm_before_gflops", r->sgemm);
            if (r->error[0]) cJSON_AddStringToObject(o, "error", r->error);
            if (r->ok) {
                double gfs = r->flops / (r->ours_ms * 1e-3) * 1e-9;
                cJSON_AddNumberToObject(o, "ours_ms", r->ours_ms);
                cJSON_AddItemToObject(o, "ours_runs_ms", dup_or_null(r->ours, "runs_ms"));
                cJSON_AddNumberToObject(o, "gflops", gfs);
                cJSON_AddNumberToObject(o, "pct_sgemm", 100.0 * gfs / sg_ref);
                cJSON_AddNumberToObject(o, "ours_peak_rss_mb", r->ours_rss_mb);
                cJSON_AddNumberToObject(o, "ours_faults_per_run", r->ours_faults);
                cJSON_AddItemToObject(o, "n_params", dup_or_null(r->ours, "n_params"));
                cJSON_AddItemToObject(o, "workspace_bytes", dup_or_null(r->ours, "workspace_bytes"));
                cJSON_AddItemToObject(o, "open_ms", dup_or_null(r->ours, "open_ms"));
            }
            if (r->peer_ran) {
                cJSON_AddNumberToObject(o, "torch_ms", r->torch_ms);
                cJSON_AddItemToObject(o, "torch_runs_ms", dup_or_null(r->peer, "runs_ms"));
                cJSON_AddNumberToObject(o, "torch_peak_rss_mb", r->torch_rss_mb);
                cJSON_AddNumberToObject(o, "torch_faults_per_run", r->torch_faults);
                cJSON_AddNumberToObject(o, "ratio_torch_over_ours", r->torch_ms / r->ours_ms);
                cJSON_AddNumberToObject(o, "max_abs_diff", r->max_abs);
                cJSON_AddNumberToObject(o, "max_rel_diff", r->max_rel);
                cJSON_AddItemToObject(o, "torch_max_abs", dup_or_null(r->peer, "torch_max_abs"));
            }
            cJSON_AddItemToArray(arr, o);
        }
        char *text = cJSON_Print(j);
        sa3d_error err = { 0 };
        if (!text) {
            fprintf(stderr, "bench_nn: %s: out of memory\n", json_path);
            exit_code = EXIT_RUN;
        } else {
            size_t tl = strlen(text);
            char *nl = malloc(tl + 2);
            if (nl) { memcpy(nl, text, tl); nl[tl] = '\n'; nl[tl + 1] = '\0'; }
            if (!nl || write_text_file(json_path, nl, &err)) {
                fprintf(stderr, "bench_nn: %s\n", nl ? err.msg : "out of memory");
                exit_code = EXIT_RUN;
            }
            free(nl);
        }
        cJSON_free(text);
        cJSON_Delete(j);
    }

    for (int c = 0; c < N_CASES; c++) {
        cJSON_Delete(res[c].ours);
        cJSON_Delete(res[c].peer);
    }
    cJSON_Delete(probe);
    if (keep) fprintf(stderr, "bench_nn: kept %s\n", root);
    else remove_tree(root);
    if (g_interrupted) {
        fprintf(stderr, "bench_nn: interrupted\n");
        return EXIT_INTERRUPTED;
    }
    return exit_code;
}
