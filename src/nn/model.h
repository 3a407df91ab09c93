/* Internal model structures (STYLE.md section 8): one config, one weights struct with a per-layer struct, and
 * one workspace per network. Weight fields point into the mapped checkpoint (aligned F32) or into the model's
 * converted block (F16/BF16/unaligned); each names its Hugging Face key and shape. */
#ifndef SA3D_NN_MODEL_H
#define SA3D_NN_MODEL_H

#include "base/base.h"
#include "semalign3d/image.h"
#include "semalign3d/nn.h"
#include "semalign3d/safetensors.h"

typedef struct sa3d_vit_layer {
    const float *ln1_w, *ln1_b;     /* norm1.{weight,bias} [D] */
    const float *wq, *bq;           /* attention.attention.query.{weight [D][D], bias [D] or NULL} */
    const float *wk, *bk;           /* attention.attention.key */
    const float *wv, *bv;           /* attention.attention.value */
    const float *wo, *bo;           /* attention.output.dense.{weight [D][D], bias [D]} */
    const float *ls1;               /* layer_scale1.lambda1 [D] */
    const float *ln2_w, *ln2_b;     /* norm2 [D] */
    const float *fc1_w, *fc1_b;     /* mlp.fc1 [M][D], [M]   or  mlp.weights_in [2M][D], [2M] (SwiGLU) */
    const float *fc2_w, *fc2_b;     /* mlp.fc2 [D][M], [D]   or  mlp.weights_out [D][M], [D] */
    const float *ls2;               /* layer_scale2.lambda1 [D] */
} sa3d_vit_layer;

typedef struct sa3d_vit_weights {
    const float *patch_w;           /* embeddings.patch_embeddings.projection.weight [D][C][P][P] */
    const float *patch_b;           /* embeddings.patch_embeddings.projection.bias [D] */
    const float *cls;               /* embeddings.cls_token [1][1][D] */
    const float *registers;         /* embeddings.register_tokens [1][R][D] (R > 0 only) */
    const float *pos;               /* embeddings.position_embeddings [1][1 + G*G][D] */
    const float *ln_w, *ln_b;       /* layernorm.{weight,bias} [D] */
    sa3d_vit_layer *layer;          /* [L] */
} sa3d_vit_weights;

typedef struct sa3d_fusion_layer {
    const float *proj_w, *proj_b;   /* neck.fusion_stage.layers.i.projection [F][F][1][1], [F] */
    const float *r1c1_w, *r1c1_b;   /* .residual_layer1.convolution1 [F][F][3][3], [F] */
    const float *r1c2_w, *r1c2_b;   /* .residual_layer1.convolution2 */
    const float *r2c1_w, *r2c1_b;   /* .residual_layer2.convolution1 */
    const float *r2c2_w, *r2c2_b;   /* .residual_layer2.convolution2 */
} sa3d_fusion_layer;

typedef struct sa3d_dpt_weights {
    const float *reasm_proj_w[4], *reasm_proj_b[4];   /* neck.reassemble_stage.layers.i.projection [Ni][D][1][1] */
    const float *reasm_resize_w[4], *reasm_resize_b[4];/* .resize: ConvTranspose [Ni][Ni][f][f] | Conv [Ni][Ni][3][3] */
    const float *neck_conv_w[4];                      /* neck.convs.i.weight [F][Ni][3][3] (no bias) */
    sa3d_fusion_layer fusion[4];
    const float *head_c1_w, *head_c1_b;               /* head.conv1 [F/2][F][3][3] */
    const float *head_c2_w, *head_c2_b;               /* head.conv2 [Hh][F/2][3][3] */
    const float *head_c3_w, *head_c3_b;               /* head.conv3 [1][Hh][1][1] */
} sa3d_dpt_weights;

struct sa3d_backend;

/* Arithmetic of a pass: fp32 everywhere (TF32 matrix products on CUDA), or fp16/bf16 matrix products and
 * activations (CUDA only; the residual stream, norms, softmax sums and the DPT head stay fp32). */
typedef enum sa3d_nn_dtype { SA3D_NN_FP32, SA3D_NN_FP16, SA3D_NN_BF16 } sa3d_nn_dtype;

struct sa3d_model {
    sa3d_model_kind kind;
    const struct sa3d_backend *be;
    sa3d_nn_dtype dtype;
    void *dev;                      /* backend state (device weights); NULL on the CPU */
    size_t dev_bytes;               /* device memory the backend holds for the weights (0 on the CPU) */
    char *dir;
    char id[17];
    int n_threads;
    sa3d_vit_config vit;
    sa3d_dpt_config dpt;
    const char *prefix;             /* "" for Dinov2Model, "backbone." inside Depth Anything */
    sa3d_checkpoint *ck;
    float *converted;               /* one block for weights that were not usable in place */
    size_t n_params;
    sa3d_vit_weights vw;
    sa3d_dpt_weights dw;
};

/* config.c: parse config.json text (path for messages). */
sa3d_status sa3d_parse_model_config(const char *text, const char *path, sa3d_model_kind *kind, sa3d_vit_config *vit,
                                    sa3d_dpt_config *dpt, sa3d_error *err);
/* preprocess.c: parse preprocessor_config.json text (path for messages), as sa3d_dpt_preprocess_params_load. */
sa3d_status sa3d_dpt_preprocess_params_parse(sa3d_dpt_preprocess_params *p, const char *text, const char *path,
                                             sa3d_error *err);

#define SA3D_MAX_OUTPUTS 72

struct sa3d_workspace {
    const sa3d_model *m;
    int H, W, gh, gw, T, n_prefix;
    int batch;                      /* images per pass */
    unsigned flags;
    void *dev;                      /* backend state (device activations, graph); NULL on the CPU */
    size_t dev_bytes;               /* device memory the backend holds for it (0 on the CPU) */
    char *block;                    /* one allocation, carved below for the current size */
    size_t block_cap;               /* its bytes (at least what the current size needs; sizes only grow it) */
    size_t bytes;                   /* host bytes held: block_cap + out_cap */
    sa3d_status broken;             /* the last fit's failure (no pass until a fit succeeds), else SA3D_OK */
    /* ViT activations */
    float *x, *xn, *q, *k, *v, *ctx, *tmp, *mlp, *mlp2, *scores, *patches, *pos;
    int score_blocks;               /* attention scratch blocks in scores (sa3d_attention_blocks(m->n_threads)) */
    float *hidden;                  /* [L+1][T][D] with SA3D_WS_HIDDEN_STATES, else NULL */
    float *stage;                   /* DA: [4][T][D] normed backbone stage outputs */
    float *last, *pooler, *fmap;    /* DINOv2 outputs */
    float *pos_tmp;                 /* antialiased position resize scratch [D][G][gw] */
    float *pos_grid;                /* position resize input and output [D][G*G] + [D][gh*gw] */
    /* DPT activations */
    float *proj, *reasm[4], *feat[4], *fused, *res_a, *res_b, *up, *convt_tmp, *col, *head1, *head_up, *head2, *depth;
    size_t col_floats;
    int rh[4], rw[4];               /* reassembled sizes per stage */
    int n_out;
    sa3d_tensor_view out[SA3D_MAX_OUTPUTS];
    char out_names[SA3D_MAX_OUTPUTS][32];
    /* batch > 1 on the CPU: each image's outputs are produced in the arrays above (out_src) and copied to image
     * b's slot of the batched views, which live in out_block. Other backends download into out_block. */
    const float *out_src[SA3D_MAX_OUTPUTS];
    float *out_block;               /* from the backend's host_alloc (page-locked on the GPU: one DMA a view) */
    size_t out_cap;                 /* its bytes */
    unsigned char out_stale[SA3D_MAX_OUTPUTS];   /* view i of the last pass is still on the device */
    float *input;                   /* sa3d_workspace_input: [batch][C][H][W], from the backend's host_alloc */
    size_t input_cap;               /* its bytes */
};

/* model.c: number of floats of output view i for one image. */
size_t sa3d_output_floats_per_image(const sa3d_workspace *ws, int i);

/* vit.c */
size_t sa3d_vit_workspace_floats(const sa3d_vit_config *c, int H, int W, unsigned flags, int n_stages,
                                 int score_blocks);
/* Position embeddings for a gh x gw grid into pos [1 + gh*gw][D]; grid: D*(G*G + gh*gw) floats of scratch, tmp:
 * D*G*gw (antialiased models only). The CUDA backend computes them on the host once per workspace too. */
void sa3d_vit_positions(const sa3d_model *m, int gh, int gw, int square, float *pos, float *grid, float *tmp);
/* Runs the encoder; stores normed stage outputs for out_idx[0..n_stages) when n_stages > 0. */
void sa3d_vit_encode(const sa3d_model *m, sa3d_workspace *ws, const float *pixels, const int *out_idx, int n_stages);
void sa3d_vit_finish(const sa3d_model *m, sa3d_workspace *ws);

/* dpt.c */
/* Size of the reassembled map of stage s for a gh x gw patch grid. */
void sa3d_dpt_reassembled_size(const sa3d_dpt_config *c, int s, int gh, int gw, int *h, int *w);
size_t sa3d_dpt_workspace_floats(const sa3d_model *m, int H, int W);
void sa3d_dpt_carve(const sa3d_model *m, sa3d_workspace *ws, float **cursor);
void sa3d_dpt_forward(const sa3d_model *m, sa3d_workspace *ws);

#endif
