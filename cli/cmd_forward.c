/* semalign3d forward: runs the network a model folder names on a pixel tensor read from a safetensors file and
 * writes every output under its Hugging Face name (the contract the parity checks use). */
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "semalign3d/nn.h"
#include "semalign3d/safetensors.h"

static void help(void) {
    printf("usage: semalign3d forward --model DIR --input FILE.safetensors --output OUT.safetensors [options]\n\n"
           "Runs DINOv2 (Dinov2Model, Dinov2WithRegistersModel) or Depth Anything V2\n"
           "(DepthAnythingForDepthEstimation), whichever DIR/config.json names, on a normalised pixel tensor\n"
           "[1][3][H][W] (or [3][H][W]) and writes the outputs with Hugging Face names:\n"
           "  DINOv2: last_hidden_state, pooler_output, hidden_states.0..L, feature_map\n"
           "  Depth Anything: predicted_depth\n\n"
           "options:\n"
           "  --model DIR          Hugging Face model folder (config.json + model.safetensors or shards)\n"
           "  --input FILE         safetensors file holding the pixel tensor\n"
           "  --input-key NAME     tensor to read (default pixel_values)\n"
           "  --output FILE        where to write the outputs (written atomically)\n"
           "  --threads N          threads (default 0 = all cores)\n"
           "  --device NAME        cpu (default) or cuda (builds with -DSEMALIGN3D_CUDA=ON)\n"
           "  --dtype NAME         fp32 (default; TF32 products on cuda), fp16 or bf16 (cuda only)\n"
           "  --positions NAME     hf (default) or hub: position embeddings resized as Hugging Face or\n"
           "                       as the original release (torch.hub DINOv2: scale (g + 0.1) / G)\n"
           "example:\n"
           "  semalign3d forward --model models/dinov2-base --input px.safetensors --output out.safetensors\n");
}

int cmd_forward(int argc, char **argv) {
    const char *cmd = "forward", *model_dir = NULL, *input = NULL, *key = "pixel_values", *output = NULL,
               *threads_s = NULL, *device = "cpu", *dtype = "fp32", *positions = NULL;
    for (int i = 1; i < argc; i++) {
        int r;
        if (cli_flag(argv, i, "-h") || cli_flag(argv, i, "--help")) { help(); return EXIT_OK; }
        if ((r = cli_opt(cmd, argc, argv, &i, "--model", &model_dir)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--input", &input)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--input-key", &key)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--output", &output)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--threads", &threads_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--device", &device)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--dtype", &dtype)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--positions", &positions))) {
            if (r < 0) return EXIT_USAGE;
            continue;
        }
        return cli_usage_error(cmd, "unknown argument '%s'", argv[i]);
    }
    if (!model_dir || !input || !output) return cli_usage_error(cmd, "--model, --input and --output are required");
    if (!cli_output_file_ok(cmd, "--output", output)) return EXIT_USAGE;
    int threads = 0;
    if (threads_s && !cli_int(cmd, "--threads", threads_s, 0, 1024, &threads)) return EXIT_USAGE;
    if (!cli_model_names_ok(cmd, device, dtype, positions)) return EXIT_USAGE;

    sa3d_error err = { 0 };
    sa3d_safetensors *in = NULL;
    sa3d_model *m = NULL;
    sa3d_workspace *ws = NULL;
    sa3d_st_writer *w = NULL;
    float *pixels = NULL;
    int rc = EXIT_RUN;
    if (sa3d_st_open(&in, input, &err)) goto fail;
    const sa3d_st_tensor *t = sa3d_st_find(in, key);
    if (!t) {
        snprintf(err.msg, sizeof err.msg, "%s: no tensor named '%s'", input, key);
        goto fail;
    }
    int nd = t->ndim;
    if (!((nd == 4 && t->shape[0] == 1) || nd == 3)) {
        snprintf(err.msg, sizeof err.msg, "%s: tensor '%s': expected shape [1][C][H][W] or [C][H][W]", input, key);
        goto fail;
    }
    sa3d_model_params p = sa3d_model_params_default();
    p.n_threads = threads;
    p.device = device;
    p.dtype = dtype;
    p.positions = positions;
    if (sa3d_model_open(&m, model_dir, &p, &err)) goto fail;
    int C = (int)t->shape[nd - 3];
    int64_t H = t->shape[nd - 2], W = t->shape[nd - 1];
    if (C != sa3d_model_vit_config(m)->n_channels || H > 16384 || W > 16384) {
        snprintf(err.msg, sizeof err.msg, "%s: tensor '%s': %d channels of %lld x %lld; the model takes %d channels "
                 "and at most 16384 pixels a side", input, key, C, (long long)W, (long long)H,
                 sa3d_model_vit_config(m)->n_channels);
        goto fail;
    }
    if (!(pixels = malloc(t->numel * sizeof(float) + 1))) {
        snprintf(err.msg, sizeof err.msg, "%s: out of memory", input);
        goto fail;
    }
    if (sa3d_st_read_f32_finite(t, pixels, t->numel, &err)) goto fail;   /* the network would name the model */
    if (sa3d_workspace_new(&ws, m, (int)H, (int)W, SA3D_WS_HIDDEN_STATES, &err)) goto fail;
    if (sa3d_model_forward(m, ws, pixels, &err)) goto fail;
    if (!(w = sa3d_st_writer_new())) {
        snprintf(err.msg, sizeof err.msg, "%s: out of memory", output);
        goto fail;
    }
    for (int i = 0; i < sa3d_workspace_n_outputs(ws); i++) {
        const sa3d_tensor_view *v = sa3d_workspace_output_at(ws, i);
        if (sa3d_st_writer_add_f32(w, v->name, v->ndim, v->shape, v->data, &err)) goto fail;
    }
    if (sa3d_st_writer_set_metadata(w, "semalign3d_version", sa3d_version(), &err) ||
        sa3d_st_writer_set_metadata(w, "model_id", sa3d_model_id(m), &err) ||
        sa3d_st_writer_set_metadata(w, "model_dir", model_dir, &err) ||
        sa3d_st_writer_set_metadata(w, "input", input, &err) ||
        sa3d_st_writer_write(w, output, &err))
        goto fail;
    fprintf(stderr, "wrote %d outputs to %s\n", sa3d_workspace_n_outputs(ws), output);
    if (sa3d_model_device_bytes(m))
        fprintf(stderr, "device memory (%s, %s): weights %.1f MiB, workspace %.1f MiB\n", sa3d_model_device(m), dtype,
                sa3d_model_device_bytes(m) / 1048576.0, sa3d_workspace_device_bytes(ws) / 1048576.0);
    rc = EXIT_OK;
fail:
    if (rc != EXIT_OK) rc = cli_run_error(cmd, &err);
    sa3d_st_writer_free(w);
    free(pixels);
    sa3d_workspace_free(ws);
    sa3d_model_free(m);
    sa3d_st_close(in);
    return rc;
}
