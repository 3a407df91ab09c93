/* semalign3d depth: Depth Anything V2 relative depth of images (METHOD.md 3.2): the Hugging Face processor
 * input, the network, the map upsampled bicubically to the image size, and a coloured PNG to look at. */
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "cli.h"
#include "semalign3d/image.h"
#include "semalign3d/nn.h"
#include "semalign3d/safetensors.h"
#include "semalign3d/viz.h"

static void help(void) {
    printf("usage: semalign3d depth --model DIR --out DIR [options] IMAGE...\n\n"
           "Writes per image OUT/<stem>.depth.safetensors with\n"
           "  predicted_depth  [h][w]  network output (relative inverse depth: larger = closer)\n"
           "  depth            [H][W]  the same upsampled bicubically to the image size (METHOD.md 3.2)\n"
           "and OUT/<stem>.depth.png, the image-size map in a colour scale (red = near).\n"
           "Existing outputs made with the same model are kept, so an interrupted run resumes.\n\n"
           "options:\n"
           "  --model DIR      Depth Anything V2 folder (depth-anything/Depth-Anything-V2-*-hf)\n"
           "  --out DIR        output folder (must exist)\n"
           "  --threads N      threads (default 0 = all cores)\n"
           "  --device NAME    cpu (default) or cuda (builds with -DSEMALIGN3D_CUDA=ON)\n"
           "  --dtype NAME     fp32 (default), fp16 or bf16 (cuda only)\n"
           "  --quiet          no progress lines\n"
           "example:\n"
           "  semalign3d depth --model models/Depth-Anything-V2-Small-hf --out depth JPEGImages/cat/*.jpg\n");
}

static int up_to_date(const char *path, const char *png, const char *model_id) {
    sa3d_safetensors *st;
    if (!sa3d_file_exists(path) || !sa3d_file_exists(png) || sa3d_st_open(&st, path, NULL) != SA3D_OK) return 0;
    const char *a = sa3d_st_metadata(st, "model_id");
    int ok = a && !strcmp(a, model_id) && sa3d_st_find(st, "depth") && sa3d_st_find(st, "predicted_depth");
    sa3d_st_close(st);
    return ok;
}

typedef struct depth_job {
    const sa3d_model *m;
    sa3d_workspace *ws;            /* reallocated when the input size changes */
    const char *model_dir, *out_dir;
} depth_job;

/* One image (skipped when both outputs are up to date): preprocess, forward, upsample, write both files. */
static sa3d_status depth_one(void *ctx, const char *image_path, const char *stem, sa3d_error *err) {
    depth_job *j = ctx;
    char name[600], pname[600];
    snprintf(name, sizeof name, "%s.depth.safetensors", stem);
    snprintf(pname, sizeof pname, "%s.depth.png", stem);
    char *path = sa3d_path_join(j->out_dir, name), *png = sa3d_path_join(j->out_dir, pname);
    sa3d_image img = { 0 };
    float *px = NULL, *full = NULL;
    uint8_t *rgb = NULL;
    sa3d_st_writer *w = NULL;
    int pw, ph;
    sa3d_status s = SA3D_OK;
    sa3d_dpt_preprocess_params pp = sa3d_dpt_preprocess_params_default();
    if (!path || !png) { s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", image_path); goto done; }
    if (up_to_date(path, png, sa3d_model_id(j->m))) goto done;
    if ((s = sa3d_image_load(&img, image_path, err)) || (s = sa3d_dpt_preprocess(&img, &pp, &px, &pw, &ph, err)))
        goto done;
    if (!j->ws || sa3d_workspace_output(j->ws, "predicted_depth")->shape[1] != (ph / 14) * 14 ||
        sa3d_workspace_output(j->ws, "predicted_depth")->shape[2] != (pw / 14) * 14) {
        sa3d_workspace_free(j->ws);
        j->ws = NULL;
        if ((s = sa3d_workspace_new(&j->ws, j->m, ph, pw, 0, err))) goto done;
    }
    if ((s = sa3d_model_forward(j->m, j->ws, px, err))) goto done;
    const sa3d_tensor_view *d = sa3d_workspace_output(j->ws, "predicted_depth");
    size_t npx = (size_t)img.w * img.h;
    full = malloc(npx * sizeof(float));
    rgb = malloc(npx * 3);
    w = sa3d_st_writer_new();
    if (!full || !rgb || !w) { s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", image_path); goto done; }
    sa3d_depth_upsample(full, img.w, img.h, d->data, (int)d->shape[2], (int)d->shape[1]);
    int64_t pshape[2] = { d->shape[1], d->shape[2] }, fshape[2] = { img.h, img.w };
    sa3d_colormap(rgb, full, npx);
    if ((s = sa3d_st_writer_add_f32(w, "predicted_depth", 2, pshape, d->data, err)) ||
        (s = sa3d_st_writer_add_f32(w, "depth", 2, fshape, full, err)) ||
        (s = sa3d_st_writer_set_metadata(w, "semalign3d_version", sa3d_version(), err)) ||
        (s = sa3d_st_writer_set_metadata(w, "model_id", sa3d_model_id(j->m), err)) ||
        (s = sa3d_st_writer_set_metadata(w, "model_dir", j->model_dir, err)) ||
        (s = sa3d_st_writer_set_metadata(w, "image", image_path, err)) ||
        (s = sa3d_png_write(png, rgb, img.w, img.h, 3, err)) || (s = sa3d_st_writer_write(w, path, err)))
        goto done;
done:
    sa3d_st_writer_free(w);
    free(rgb);
    free(full);
    sa3d_pixels_free(px);
    sa3d_image_free(&img);
    sa3d_free(path);
    sa3d_free(png);
    return s;
}

int cmd_depth(int argc, char **argv) {
    const char *cmd = "depth";
    cli_net_args a = { 0 };
    a.images = calloc((size_t)argc, sizeof *a.images);
    if (!a.images) return cli_usage_error(cmd, "out of memory");
    for (int i = 1; i < argc; i++) {
        int r;
        if (cli_flag(argv, i, "-h") || cli_flag(argv, i, "--help")) { help(); free(a.images); return EXIT_OK; }
        if ((r = cli_net_arg(cmd, argc, argv, &i, &a))) {
            if (r < 0) { free(a.images); return EXIT_USAGE; }
            continue;
        }
        free(a.images);
        return cli_usage_error(cmd, "unknown option '%s'", argv[i]);
    }
    sa3d_error err = { 0 };
    sa3d_model *m = NULL;
    depth_job job = { 0 };
    int rc = cli_net_open(cmd, &a, SA3D_MODEL_DEPTH_ANYTHING, &m, &err);
    if (rc == EXIT_OK) {
        job.m = m;
        job.model_dir = a.model_dir;
        job.out_dir = a.out_dir;
        rc = cli_net_each_image(cmd, &a, depth_one, &job);
    } else if (rc == EXIT_RUN) {
        rc = cli_run_error(cmd, &err);
    }
    free(a.images);
    sa3d_workspace_free(job.ws);
    sa3d_model_free(m);
    return rc;
}
