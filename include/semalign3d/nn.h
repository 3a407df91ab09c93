/* semalign3d: the networks - DINOv2 (with or without registers) and Depth Anything V2, run from Hugging Face
 * model folders (config.json + model.safetensors, or shards + model.safetensors.index.json).
 *
 *     sa3d_model_params p = sa3d_model_params_default();
 *     sa3d_model *m;  sa3d_workspace *ws;  sa3d_error err;
 *     if (sa3d_model_open(&m, "models/dinov2-base", &p, &err)) { fprintf(stderr, "%s\n", err.msg); ... }
 *     sa3d_workspace_new(&ws, m, 840, 840, 0, &err);            // activations for one input size (resizable)
 *     sa3d_model_forward(m, ws, pixels, &err);                   // pixels: [3][840][840], normalised
 *     const sa3d_tensor_view *f = sa3d_workspace_output(ws, "feature_map");   // [1][768][60][60]
 *     sa3d_workspace_free(ws);  sa3d_model_free(m);
 *
 * Outputs keep the Hugging Face names: DINOv2 gives "last_hidden_state" [1][T][D], "pooler_output" [1][D],
 * "hidden_states.0" .. "hidden_states.L" [1][T][D] (only with SA3D_WS_HIDDEN_STATES; .0 is the embedding
 * output, .i the output of block i before the final norm) and "feature_map" [1][D][h][w]: the last block's
 * patch tokens before the final norm as a channel-first grid (what GeoAware-SC uses, METHOD.md 3.1).
 * Depth Anything gives "predicted_depth" [1][H][W] (relative inverse depth, or metric depth in metres).
 * T = 1 + registers + h*w with h = H/14, w = W/14 (the patch convolution floors like PyTorch's).
 *
 * A model is immutable once open and may be shared by threads; each thread uses its own workspace. A forward
 * pass allocates nothing. */
#ifndef SEMALIGN3D_NN_H
#define SEMALIGN3D_NN_H

#include <stddef.h>
#include <stdint.h>
#include "semalign3d/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sa3d_model_kind { SA3D_MODEL_DINOV2 = 1, SA3D_MODEL_DEPTH_ANYTHING = 2 } sa3d_model_kind;

typedef enum sa3d_activation { SA3D_ACT_GELU, SA3D_ACT_GELU_TANH, SA3D_ACT_RELU, SA3D_ACT_SILU } sa3d_activation;

/* Everything in a DINOv2 config.json that changes the computation. */
typedef struct sa3d_vit_config {
    int hidden_size;         /* D */
    int n_layers;            /* L */
    int n_heads;
    int mlp_hidden;          /* int(D * mlp_ratio), or the SwiGLU width (int(D*r*2/3)+7)//8*8 */
    int patch_size;          /* 14 */
    int image_size;          /* pretraining size; the position grid is image_size / patch_size */
    int pos_grid;            /* sqrt(number of position embeddings - 1) */
    int n_channels;          /* 3 */
    int n_registers;         /* 0, or 4 for dinov2-with-registers */
    int use_swiglu;
    int qkv_bias;
    int pos_antialias;       /* with-registers models interpolate positions with antialiased bicubic */
    int apply_layernorm;     /* backbone use: final norm on each stage output */
    float ln_eps;
    sa3d_activation act;
    double pos_offset;       /* 0 (Hugging Face); 0.1 with sa3d_model_params.positions "hub" (see there) */
} sa3d_vit_config;

/* Depth Anything (DPT neck + head) settings. */
typedef struct sa3d_dpt_config {
    int n_stages;                  /* 4 */
    int out_indices[4];            /* backbone hidden_states index per stage (1..L) */
    int neck_hidden_sizes[4];
    int reassemble_num[4];         /* factor = num/den: 4, 2, 1, 1/2 -> (4,1),(2,1),(1,1),(1,2) */
    int reassemble_den[4];
    int fusion_hidden_size;
    int head_hidden_size;
    int metric;                    /* 0: relative (ReLU), 1: metric (sigmoid) */
    float max_depth;
} sa3d_dpt_config;

typedef struct sa3d_model_params {
    const char *device;   /* "cpu" (default) or "cuda" (builds with -DSEMALIGN3D_CUDA=ON) */
    int n_threads;        /* 0 = all cores (CPU work) */
    const char *dtype;    /* "fp32" (default; TF32 matrix products on cuda), "fp16" or "bf16" (cuda only: matrix
                             products and activations in 16 bits, sums and the residual stream in fp32) */
    const char *positions;   /* How the position embeddings are resized to an input grid (gh, gw) other than the
                                checkpoint's G x G. "hf" (default): as current Hugging Face transformers, bicubic
                                to the size (gh, gw) (releases before about 4.45 used the "hub" rule). "hub": as
                                the original DINOv2 release (torch.hub dinov2_vit*14, which GeoAware-SC's features
                                came from, METHOD.md 3.1; also Depth-Anything-V2's own copy), bicubic by
                                scale_factor (g + 0.1) / G, which samples at G / (g + 0.1) instead of G / g: up to
                                0.06 cells apart at 840. With-registers models are the same either way (the hub's
                                use offset 0 and antialias, as Hugging Face). "hub" is part of sa3d_model_id. */
} sa3d_model_params;
SA3D_API sa3d_model_params sa3d_model_params_default(void);

typedef struct sa3d_model sa3d_model;           /* opaque: owns the mapping and converted weights */
typedef struct sa3d_workspace sa3d_workspace;   /* opaque: activations for one input size at a time */

/* Opens a Hugging Face model folder. Reads config.json ("architectures"/"model_type" pick the network), checks
 * every expected tensor exists with the exact shape (extra keys such as mask_token are ignored). On failure
 * *out is NULL and err names the file and the key. */
SA3D_API sa3d_status sa3d_model_open(sa3d_model **out, const char *dir, const sa3d_model_params *p,
                                     sa3d_error *err);
SA3D_API void sa3d_model_free(sa3d_model *m);
SA3D_API sa3d_model_kind sa3d_model_get_kind(const sa3d_model *m);
SA3D_API const sa3d_vit_config *sa3d_model_vit_config(const sa3d_model *m);   /* the backbone for DA */
SA3D_API const sa3d_dpt_config *sa3d_model_dpt_config(const sa3d_model *m);   /* NULL for DINOv2 */
/* Short stable identity (16 hex digits) of config.json and the weight files' headers, for cache keys. */
SA3D_API const char *sa3d_model_id(const sa3d_model *m);
/* Number of parameters (float elements of all used weights). */
SA3D_API size_t sa3d_model_n_params(const sa3d_model *m);
/* The backend the model runs on: "cpu" or "cuda". */
SA3D_API const char *sa3d_model_device(const sa3d_model *m);
/* The dtype of its matrix products and activations: "fp32", "fp16" or "bf16" (sa3d_model_params.dtype). Outputs
 * of different dtypes differ by more than rounding, so files and caches made by a model record it beside
 * sa3d_model_id. */
SA3D_API const char *sa3d_model_dtype(const sa3d_model *m);
/* Device memory the weights hold on a GPU (uploaded once, in the pass dtype); 0 on the CPU. */
SA3D_API size_t sa3d_model_device_bytes(const sa3d_model *m);

#define SA3D_WS_HIDDEN_STATES 1u   /* keep hidden_states.0..L (L+1 copies of [T][D]) */
#define SA3D_WS_NO_DOWNLOAD 2u     /* GPU: leave the outputs on the device after a pass until
                                      sa3d_workspace_download (to time or chain passes); no effect on the CPU */

/* Allocates the activations for pixel inputs of size H x W (both >= patch size). */
SA3D_API sa3d_status sa3d_workspace_new(sa3d_workspace **out, const sa3d_model *m, int H, int W, unsigned flags,
                                        sa3d_error *err);
/* The same for batches of `batch` images per pass (1..4096): pixels [batch][3][H][W], every output view gets the
 * batch as its leading dimension. The GPU runs the batch at once; the CPU runs its images one after another. */
SA3D_API sa3d_status sa3d_workspace_new_batch(sa3d_workspace **out, const sa3d_model *m, int H, int W, int batch,
                                              unsigned flags, sa3d_error *err);
/* Fits the workspace to inputs of H x W (same batch and flags), as if it had been made for that size, but keeping
 * the memory it holds: each buffer is reused where the new size fits in it and replaced by a larger one where it
 * does not (never shrunk), and on a GPU the stream, cuBLAS handle and page-locked input buffer stay (a size met
 * before replays its captured pass while no buffer has moved since). The same size costs nothing. For runs over
 * images of varying sizes (Depth Anything keeps each image's aspect ratio), where a workspace per size would
 * allocate and set up everything again. The output views, their shapes and the sa3d_workspace_input buffer may
 * change: fetch them again. A bad size fails with SA3D_ERR_ARG and changes nothing; when memory runs out, passes
 * fail until a resize succeeds or the workspace is freed. */
SA3D_API sa3d_status sa3d_workspace_resize(sa3d_workspace *ws, int H, int W, sa3d_error *err);
/* A host buffer for the pixels of one pass, [batch][3][H][W], owned by the workspace (page-locked memory on the
 * GPU, so the upload is one DMA): fill it, then call sa3d_model_forward with pixels = NULL. NULL when out of
 * memory. */
SA3D_API float *sa3d_workspace_input(sa3d_workspace *ws);
/* Copies the outputs of the last pass to the host views (only needed with SA3D_WS_NO_DOWNLOAD). */
SA3D_API sa3d_status sa3d_workspace_download(sa3d_workspace *ws, sa3d_error *err);
/* The same for one output view: a caller that reads only "feature_map" moves half the bytes of a DINOv2 pass
 * (last_hidden_state is as large). SA3D_ERR_ARG when the workspace has no such output. */
SA3D_API sa3d_status sa3d_workspace_download_output(sa3d_workspace *ws, const char *name, sa3d_error *err);
SA3D_API void sa3d_workspace_free(sa3d_workspace *ws);
/* Bytes the workspace holds in host memory (the activations on the CPU; a GPU's position scratch and outputs). */
SA3D_API size_t sa3d_workspace_bytes(const sa3d_workspace *ws);
/* Device memory the workspace holds on a GPU (activations, scratch, the cuBLAS workspace); 0 on the CPU. */
SA3D_API size_t sa3d_workspace_device_bytes(const sa3d_workspace *ws);

/* Runs the model on pixels [batch][3][H][W] (already normalised; NULL: the sa3d_workspace_input buffer) into the
 * workspace outputs. Fails with
 * SA3D_ERR_NUMERIC if an output is not finite. */
SA3D_API sa3d_status sa3d_model_forward(const sa3d_model *m, sa3d_workspace *ws, const float *pixels,
                                        sa3d_error *err);

typedef struct sa3d_tensor_view {
    const char *name;
    int ndim;
    int64_t shape[4];
    const float *data;
} sa3d_tensor_view;
/* Number of floats in a view: the product of its ndim sizes (1 for a scalar). */
SA3D_API size_t sa3d_tensor_view_numel(const sa3d_tensor_view *v);
/* Outputs of the last forward pass, valid until the next pass or sa3d_workspace_free. */
SA3D_API int sa3d_workspace_n_outputs(const sa3d_workspace *ws);
SA3D_API const sa3d_tensor_view *sa3d_workspace_output_at(const sa3d_workspace *ws, int i);
SA3D_API const sa3d_tensor_view *sa3d_workspace_output(const sa3d_workspace *ws, const char *name);

/* Depth Anything output to image resolution (METHOD.md 3.2): bicubic (align_corners=False, as torch's
 * F.interpolate) from the network's [ph][pw] map to [H][W]. */
SA3D_API void sa3d_depth_upsample(float *out, int W, int H, const float *pred, int pw, int ph);

#ifdef __cplusplus
}
#endif
#endif
