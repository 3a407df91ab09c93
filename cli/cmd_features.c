/* semalign3d features: DINOv2 feature maps of images with GeoAware-SC's input convention (METHOD.md 2.4, 3.1):
 * the image fitted into a size x size square, the last block's patch tokens before the final norm as a
 * [D][size/14][size/14] grid; optionally also for the mirrored image. One safetensors file per image. */
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "cli.h"
#include "semalign3d/image.h"
#include "semalign3d/nn.h"
#include "semalign3d/safetensors.h"

static void help(void) {
    printf("usage: semalign3d features --model DIR --out DIR [options] IMAGE...\n\n"
           "Writes OUT/<image stem>.features.safetensors per image with\n"
           "  feature_map       [D][size/14][size/14]  last DINOv2 block, before the final norm (GeoAware-SC)\n"
           "  feature_map_flip  the same for the left-right mirrored image (with --flip)\n"
           "and the settings (model id, size, image size, padding) in the metadata. Existing outputs with the same\n"
           "settings are kept, so an interrupted run resumes.\n\n"
           "options:\n"
           "  --model DIR      DINOv2 model folder (facebook/dinov2-*, facebook/dinov2-with-registers-*)\n"
           "  --out DIR        output folder (must exist)\n"
           "  --size N         square input size, a multiple of 14 (default 840: a 60 x 60 grid)\n"
           "  --flip           also compute the mirrored image's features\n"
           "  --threads N      threads (default 0 = all cores)\n"
           "  --device NAME    cpu (default) or cuda (builds with -DSEMALIGN3D_CUDA=ON)\n"
           "  --dtype NAME     fp32 (default), fp16 or bf16 (cuda only)\n"
           "  --quiet          no progress lines\n"
           "example:\n"
           "  semalign3d features --model models/dinov2-base --out feats --flip JPEGImages/aeroplane/*.jpg\n");
}

/* 1 when path exists and was made with the same model and settings. */
static int up_to_date(const char *path, const char *model_id, const char *size, int flip) {
    sa3d_safetensors *st;
    if (!sa3d_file_exists(path) || sa3d_st_open(&st, path, NULL) != SA3D_OK) return 0;
    const char *a = sa3d_st_metadata(st, "model_id"), *b = sa3d_st_metadata(st, "size"),
               *c = sa3d_st_metadata(st, "flip");
    int ok = a && b && c && !strcmp(a, model_id) && !strcmp(b, size) && !strcmp(c, flip ? "1" : "0") &&
             sa3d_st_find(st, "feature_map") && (!flip || sa3d_st_find(st, "feature_map_flip"));
    sa3d_st_close(st);
    return ok;
}

static sa3d_status run_one(const sa3d_model *m, sa3d_workspace *ws, const char *image_path, int size, int flip,
                           float *maps, sa3d_error *err) {
    sa3d_image img = { 0 };
    float *px = NULL;
    sa3d_status s;
    size_t n = 0;
    const sa3d_tensor_view *f = sa3d_workspace_output(ws, "feature_map");
    for (int d = 0; d < f->ndim; d++) n = d ? n * (size_t)f->shape[d] : (size_t)f->shape[d];
    if ((s = sa3d_image_load(&img, image_path, err))) return s;
    for (int pass = 0; pass <= flip; pass++) {
        if (pass) sa3d_image_flip_lr(&img);
        if ((s = sa3d_geoaware_preprocess(&img, size, &px, err)) || (s = sa3d_model_forward(m, ws, px, err))) break;
        memcpy(maps + (size_t)pass * n, f->data, n * sizeof(float));
        sa3d_pixels_free(px);
        px = NULL;
    }
    sa3d_pixels_free(px);
    sa3d_image_free(&img);
    if (s) sa3d_error_prefix(err, "%s", image_path);
    return s;
}

int cmd_features(int argc, char **argv) {
    const char *cmd = "features", *model_dir = NULL, *out_dir = NULL, *size_s = "840", *threads_s = NULL;
    const char *device = "cpu", *dtype = "fp32";
    int flip = 0, quiet = 0;
    char **images = calloc((size_t)argc, sizeof *images);
    int n_images = 0;
    for (int i = 1; i < argc; i++) {
        int r;
        if (cli_flag(argv, i, "-h") || cli_flag(argv, i, "--help")) { help(); free(images); return EXIT_OK; }
        if (cli_flag(argv, i, "--flip")) { flip = 1; continue; }
        if (cli_flag(argv, i, "--quiet")) { quiet = 1; continue; }
        if ((r = cli_opt(cmd, argc, argv, &i, "--model", &model_dir)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--out", &out_dir)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--size", &size_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--threads", &threads_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--device", &device)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--dtype", &dtype))) {
            if (r < 0) { free(images); return EXIT_USAGE; }
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1]) { free(images); return cli_usage_error(cmd, "unknown option '%s'", argv[i]); }
        images[n_images++] = argv[i];
    }
    int size = 0, threads = 0;
    if (!model_dir || !out_dir) { free(images); return cli_usage_error(cmd, "--model and --out are required"); }
    if (!n_images) { free(images); return cli_usage_error(cmd, "no images given"); }
    if (!cli_int(cmd, "--size", size_s, 14, 8400, &size) ||
        (threads_s && !cli_int(cmd, "--threads", threads_s, 0, 1024, &threads))) { free(images); return EXIT_USAGE; }
    if (size % 14) { free(images); return cli_usage_error(cmd, "--size %d: must be a multiple of 14", size); }

    cli_install_sigint();
    sa3d_error err = { 0 };
    sa3d_model *m = NULL;
    sa3d_workspace *ws = NULL;
    float *maps = NULL;
    int rc = EXIT_RUN, failed = 0;
    sa3d_model_params p = sa3d_model_params_default();
    p.n_threads = threads;
    p.device = device;
    p.dtype = dtype;
    if (sa3d_model_open(&m, model_dir, &p, &err)) goto done;
    if (sa3d_model_get_kind(m) != SA3D_MODEL_DINOV2) {
        snprintf(err.msg, sizeof err.msg, "%s: not a DINOv2 model (config.json model_type)", model_dir);
        goto done;
    }
    if (sa3d_workspace_new(&ws, m, size, size, 0, &err)) goto done;
    const sa3d_tensor_view *f = sa3d_workspace_output(ws, "feature_map");
    size_t n = (size_t)f->shape[1] * (size_t)f->shape[2] * (size_t)f->shape[3];
    if (!(maps = malloc(2 * n * sizeof(float)))) { snprintf(err.msg, sizeof err.msg, "out of memory"); goto done; }
    cli_progress prog;
    cli_progress_start(&prog, "features", n_images, quiet);
    for (int i = 0; i < n_images && !cli_interrupted; i++) {
        char stem[512], name[600], *path;
        cli_stem(images[i], stem, sizeof stem);
        snprintf(name, sizeof name, "%s.features.safetensors", stem);
        path = sa3d_path_join(out_dir, name);
        if (!up_to_date(path, sa3d_model_id(m), size_s, flip)) {
            sa3d_error e = { 0 };
            sa3d_st_writer *w = NULL;
            int64_t shape[3] = { f->shape[1], f->shape[2], f->shape[3] };
            char size_str[16];
            snprintf(size_str, sizeof size_str, "%d", size);
            if (run_one(m, ws, images[i], size, flip, maps, &e) || !(w = sa3d_st_writer_new()) ||
                sa3d_st_writer_add_f32(w, "feature_map", 3, shape, maps, &e) ||
                (flip && sa3d_st_writer_add_f32(w, "feature_map_flip", 3, shape, maps + n, &e)) ||
                sa3d_st_writer_set_metadata(w, "semalign3d_version", sa3d_version(), &e) ||
                sa3d_st_writer_set_metadata(w, "model_id", sa3d_model_id(m), &e) ||
                sa3d_st_writer_set_metadata(w, "model_dir", model_dir, &e) ||
                sa3d_st_writer_set_metadata(w, "image", images[i], &e) ||
                sa3d_st_writer_set_metadata(w, "size", size_str, &e) ||
                sa3d_st_writer_set_metadata(w, "flip", flip ? "1" : "0", &e) ||
                sa3d_st_writer_set_metadata(w, "convention", "geoaware-sc: fit into square, centred, zero pad", &e) ||
                sa3d_st_writer_write(w, path, &e)) {
                fprintf(stderr, "semalign3d features: %s\n", e.msg[0] ? e.msg : "out of memory");
                failed++;
            }
            sa3d_st_writer_free(w);
        }
        sa3d_free(path);
        cli_progress_step(&prog, stem);
    }
    cli_progress_end(&prog);
    if (cli_interrupted) { err.code = SA3D_ERR_CANCELLED; snprintf(err.msg, sizeof err.msg, "interrupted"); goto done; }
    if (failed) snprintf(err.msg, sizeof err.msg, "%d of %d images failed", failed, n_images);
    else rc = EXIT_OK;
done:
    if (rc != EXIT_OK) rc = cli_run_error(cmd, &err);
    free(maps);
    free(images);
    sa3d_workspace_free(ws);
    sa3d_model_free(m);
    return rc;
}
