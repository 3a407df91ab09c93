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

/* One image: preprocess, forward (workspace reallocated when the input size changes), write both files. */
static sa3d_status run_one(const sa3d_model *m, sa3d_workspace **ws, const char *image_path, const char *path,
                           const char *png, const char *model_dir, sa3d_error *err) {
    sa3d_image img = { 0 };
    float *px = NULL, *full = NULL;
    uint8_t *rgb = NULL;
    sa3d_st_writer *w = NULL;
    int pw, ph;
    sa3d_status s;
    sa3d_dpt_preprocess_params pp = sa3d_dpt_preprocess_params_default();
    if ((s = sa3d_image_load(&img, image_path, err)) || (s = sa3d_dpt_preprocess(&img, &pp, &px, &pw, &ph, err)))
        goto done;
    if (!*ws || sa3d_workspace_output(*ws, "predicted_depth")->shape[1] != (ph / 14) * 14 ||
        sa3d_workspace_output(*ws, "predicted_depth")->shape[2] != (pw / 14) * 14) {
        sa3d_workspace_free(*ws);
        *ws = NULL;
        if ((s = sa3d_workspace_new(ws, m, ph, pw, 0, err))) goto done;
    }
    if ((s = sa3d_model_forward(m, *ws, px, err))) goto done;
    const sa3d_tensor_view *d = sa3d_workspace_output(*ws, "predicted_depth");
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
        (s = sa3d_st_writer_set_metadata(w, "model_id", sa3d_model_id(m), err)) ||
        (s = sa3d_st_writer_set_metadata(w, "model_dir", model_dir, err)) ||
        (s = sa3d_st_writer_set_metadata(w, "image", image_path, err)) ||
        (s = sa3d_png_write(png, rgb, img.w, img.h, 3, err)) || (s = sa3d_st_writer_write(w, path, err)))
        goto done;
done:
    sa3d_st_writer_free(w);
    free(rgb);
    free(full);
    sa3d_pixels_free(px);
    sa3d_image_free(&img);
    return s;
}

int cmd_depth(int argc, char **argv) {
    const char *cmd = "depth", *model_dir = NULL, *out_dir = NULL, *threads_s = NULL;
    const char *device = "cpu", *dtype = "fp32";
    int quiet = 0, n_images = 0, threads = 0;
    char **images = calloc((size_t)argc, sizeof *images);
    for (int i = 1; i < argc; i++) {
        int r;
        if (cli_flag(argv, i, "-h") || cli_flag(argv, i, "--help")) { help(); free(images); return EXIT_OK; }
        if (cli_flag(argv, i, "--quiet")) { quiet = 1; continue; }
        if ((r = cli_opt(cmd, argc, argv, &i, "--model", &model_dir)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--out", &out_dir)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--threads", &threads_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--device", &device)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--dtype", &dtype))) {
            if (r < 0) { free(images); return EXIT_USAGE; }
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1]) { free(images); return cli_usage_error(cmd, "unknown option '%s'", argv[i]); }
        images[n_images++] = argv[i];
    }
    if (!model_dir || !out_dir) { free(images); return cli_usage_error(cmd, "--model and --out are required"); }
    if (!n_images) { free(images); return cli_usage_error(cmd, "no images given"); }
    if (threads_s && !cli_int(cmd, "--threads", threads_s, 0, 1024, &threads)) { free(images); return EXIT_USAGE; }

    cli_install_sigint();
    sa3d_error err = { 0 };
    sa3d_model *m = NULL;
    sa3d_workspace *ws = NULL;
    int rc = EXIT_RUN, failed = 0;
    sa3d_model_params p = sa3d_model_params_default();
    p.n_threads = threads;
    p.device = device;
    p.dtype = dtype;
    if (sa3d_model_open(&m, model_dir, &p, &err)) goto done;
    if (sa3d_model_get_kind(m) != SA3D_MODEL_DEPTH_ANYTHING) {
        snprintf(err.msg, sizeof err.msg, "%s: not a Depth Anything model (config.json model_type)", model_dir);
        goto done;
    }
    cli_progress prog;
    cli_progress_start(&prog, "depth", n_images, quiet);
    for (int i = 0; i < n_images && !cli_interrupted; i++) {
        char stem[512], name[600], pname[600];
        cli_stem(images[i], stem, sizeof stem);
        snprintf(name, sizeof name, "%s.depth.safetensors", stem);
        snprintf(pname, sizeof pname, "%s.depth.png", stem);
        char *path = sa3d_path_join(out_dir, name), *png = sa3d_path_join(out_dir, pname);
        if (path && png && !up_to_date(path, png, sa3d_model_id(m))) {
            sa3d_error e = { 0 };
            if (run_one(m, &ws, images[i], path, png, model_dir, &e)) {
                fprintf(stderr, "semalign3d depth: %s\n", e.msg);
                failed++;
            }
        }
        sa3d_free(path);
        sa3d_free(png);
        cli_progress_step(&prog, stem);
    }
    cli_progress_end(&prog);
    if (cli_interrupted) { err.code = SA3D_ERR_CANCELLED; snprintf(err.msg, sizeof err.msg, "interrupted"); goto done; }
    if (failed) snprintf(err.msg, sizeof err.msg, "%d of %d images failed", failed, n_images);
    else rc = EXIT_OK;
done:
    if (rc != EXIT_OK) rc = cli_run_error(cmd, &err);
    free(images);
    sa3d_workspace_free(ws);
    sa3d_model_free(m);
    return rc;
}
