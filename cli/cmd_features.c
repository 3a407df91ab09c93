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
           "and the settings (model id and dtype, input size, flip, the image's path and a digest of its bytes)\n"
           "in the metadata. Existing outputs made from the same image bytes with the same settings are kept, so\n"
           "an interrupted run resumes.\n"
           "Images: JPEG or PNG, read as GeoAware-SC reads them (RGB; alpha dropped, EXIF orientation ignored).\n"
           "Images must have distinct names (stems). On a GPU (--device cuda) helper threads decode the next image\n"
           "and write the previous one while the network runs.\n\n"
           "options:\n"
           "  --model DIR      DINOv2 model folder (facebook/dinov2-*, facebook/dinov2-with-registers-*)\n"
           "  --out DIR        output folder (created if missing)\n"
           "  --size N         square input size, a multiple of 14 (default 840: a 60 x 60 grid)\n"
           "  --flip           also compute the mirrored image's features\n"
           "  --threads N      threads (default 0 = all cores)\n"
           "  --device NAME    cpu (default) or cuda (builds with -DSEMALIGN3D_CUDA=ON)\n"
           "  --dtype NAME     fp32 (default), fp16 or bf16 (cuda only)\n"
           "  --positions NAME positions resized as Hugging Face (hf, default) or as the torch.hub\n"
           "                   DINOv2 that GeoAware-SC used (hub: bicubic by scale (g + 0.1) / G)\n"
           "  --quiet          no progress lines\n"
           "example:\n"
           "  semalign3d features --model models/dinov2-base --out feats --flip JPEGImages/aeroplane/*.jpg\n");
}

/* 1 when path exists and was made with the same model and settings. */
static int up_to_date(const char *path, const sa3d_model *m, const char *digest, const char *size, int flip) {
    sa3d_safetensors *st;
    if (!sa3d_file_exists(path) || sa3d_st_open(&st, path, NULL) != SA3D_OK) return 0;
    const char *b = sa3d_st_metadata(st, "size"), *c = sa3d_st_metadata(st, "flip");
    /* a file with the mirror's map serves a run without --flip too (rewriting it would drop that map) */
    int ok = cli_made_by(st, m, digest) && b && c && !strcmp(b, size) && (!flip || !strcmp(c, "1")) &&
             sa3d_st_find(st, "feature_map") && (!flip || sa3d_st_find(st, "feature_map_flip"));
    sa3d_st_close(st);
    return ok;
}

/* One image's buffers (cli/pipeline.c): its pixels, then the maps run copied out of the workspace. */
typedef struct features_slot {
    const char *image;
    char digest[17];               /* cli_file_digest of the image file */
    char *path;                    /* the output file */
    float *px[2];                  /* [3][size][size] of the image and, with --flip, of its mirror */
    float *maps;                   /* [1 + flip][n], allocated once */
} features_slot;

typedef struct features_job {
    const sa3d_model *m;
    sa3d_workspace *ws;            /* batch 1 + flip: the image and its mirror in one pass */
    const char *model_dir, *out_dir;
    char size_s[16];               /* the size as the metadata spells it */
    int size, flip;
    size_t n;                      /* floats of one map */
    int64_t shape[3];              /* [D][size/14][size/14] */
    features_slot slot[CLI_PIPELINE_SLOTS];
} features_job;

static sa3d_status features_prepare(void *ctx, int slot, const char *image, const char *stem, int *skip,
                                    sa3d_error *err) {
    features_job *j = ctx;
    features_slot *sl = &j->slot[slot];
    char name[600];
    snprintf(name, sizeof name, "%s.features.safetensors", stem);
    sl->image = image;
    if (!(sl->path = sa3d_path_join(j->out_dir, name)))
        return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", image);
    char *data;
    size_t len;
    sa3d_status s = cli_image_bytes(image, &data, &len, sl->digest, err);
    if (!s && up_to_date(sl->path, j->m, sl->digest, j->size_s, j->flip)) {
        sa3d_free(data);
        *skip = 1;
        return SA3D_OK;
    }
    sa3d_image img = { 0 };
    if (!s) s = cli_image_decode(image, data, len, &img, err);
    for (int pass = 0; !s && pass <= j->flip; pass++) {
        if (pass) sa3d_image_flip_lr(&img);
        if ((s = sa3d_geoaware_preprocess(&img, j->size, &sl->px[pass], err))) sa3d_error_prefix(err, "%s", image);
    }
    sa3d_image_free(&img);
    return s;
}

static sa3d_status features_run(void *ctx, int slot, sa3d_error *err) {
    features_job *j = ctx;
    features_slot *sl = &j->slot[slot];
    float *in = sa3d_workspace_input(j->ws);
    if (!in) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", sl->image);
    size_t npx = (size_t)3 * j->size * j->size;
    for (int pass = 0; pass <= j->flip; pass++) memcpy(in + pass * npx, sl->px[pass], npx * sizeof(float));
    if (sa3d_model_forward(j->m, j->ws, NULL, err) || sa3d_workspace_download_output(j->ws, "feature_map", err))
        return sa3d_error_prefix(err, "%s", sl->image);
    memcpy(sl->maps, sa3d_workspace_output(j->ws, "feature_map")->data, (size_t)(1 + j->flip) * j->n * sizeof(float));
    return SA3D_OK;
}

static sa3d_status features_finish(void *ctx, int slot, sa3d_error *err) {
    features_job *j = ctx;
    features_slot *sl = &j->slot[slot];
    sa3d_st_writer *w = sa3d_st_writer_new();
    sa3d_status s = SA3D_OK;
    if (!w || sa3d_st_writer_add_f32(w, "feature_map", 3, j->shape, sl->maps, err) ||
        (j->flip && sa3d_st_writer_add_f32(w, "feature_map_flip", 3, j->shape, sl->maps + j->n, err)) ||
        sa3d_st_writer_set_metadata(w, "semalign3d_version", sa3d_version(), err) ||
        sa3d_st_writer_set_metadata(w, "model_id", sa3d_model_id(j->m), err) ||
        sa3d_st_writer_set_metadata(w, "dtype", sa3d_model_dtype(j->m), err) ||
        sa3d_st_writer_set_metadata(w, "model_dir", j->model_dir, err) ||
        sa3d_st_writer_set_metadata(w, "image", sl->image, err) ||
        sa3d_st_writer_set_metadata(w, "image_digest", sl->digest, err) ||
        sa3d_st_writer_set_metadata(w, "size", j->size_s, err) ||
        sa3d_st_writer_set_metadata(w, "flip", j->flip ? "1" : "0", err) ||
        sa3d_st_writer_set_metadata(w, "convention", "geoaware-sc: fit into square, centred, zero pad", err) ||
        sa3d_st_writer_write(w, sl->path, err))
        s = err->code ? err->code : sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", sl->image);
    sa3d_st_writer_free(w);
    return s;
}

static void features_release(void *ctx, int slot) {
    features_slot *sl = &((features_job *)ctx)->slot[slot];
    sa3d_free(sl->path);
    sa3d_pixels_free(sl->px[0]);
    sa3d_pixels_free(sl->px[1]);
    sl->path = NULL;
    sl->px[0] = sl->px[1] = NULL;
}

int cmd_features(int argc, char **argv) {
    const char *cmd = "features", *size_s = "840";
    int flip = 0;
    cli_net_args a = { 0 };
    a.images = calloc((size_t)argc, sizeof *a.images);
    if (!a.images) return cli_usage_error(cmd, "out of memory");
    for (int i = 1; i < argc; i++) {
        int r;
        if (cli_flag(argv, i, "-h") || cli_flag(argv, i, "--help")) { help(); free(a.images); return EXIT_OK; }
        if (cli_flag(argv, i, "--flip")) { flip = 1; continue; }
        if ((r = cli_opt(cmd, argc, argv, &i, "--size", &size_s)) || (r = cli_net_arg(cmd, argc, argv, &i, &a))) {
            if (r < 0) { free(a.images); return EXIT_USAGE; }
            continue;
        }
        free(a.images);
        return cli_usage_error(cmd, "unknown option '%s'", argv[i]);
    }
    int size = 0;
    if (!cli_int(cmd, "--size", size_s, 14, 8400, &size)) { free(a.images); return EXIT_USAGE; }
    if (size % 14) { free(a.images); return cli_usage_error(cmd, "--size %d: must be a multiple of 14", size); }

    sa3d_error err = { 0 };
    sa3d_model *m = NULL;
    features_job job = { 0 };
    int rc = cli_net_open(cmd, &a, SA3D_MODEL_DINOV2, &m, &err);
    if (rc == EXIT_OK && sa3d_workspace_new_batch(&job.ws, m, size, size, 1 + flip, SA3D_WS_NO_DOWNLOAD, &err))
        rc = EXIT_RUN;
    if (rc == EXIT_OK) {
        const sa3d_tensor_view *f = sa3d_workspace_output(job.ws, "feature_map");
        for (int d = 0; d < 3; d++) job.shape[d] = f->shape[1 + d];
        job.n = (size_t)f->shape[1] * (size_t)f->shape[2] * (size_t)f->shape[3];
        for (int i = 0; i < CLI_PIPELINE_SLOTS && rc == EXIT_OK; i++)
            if (!(job.slot[i].maps = malloc((size_t)(1 + flip) * job.n * sizeof(float)))) {
                snprintf(err.msg, sizeof err.msg, "out of memory");
                rc = EXIT_RUN;
            }
    }
    if (rc == EXIT_OK) {
        static const cli_image_stages stages = { features_prepare, features_run, features_finish, features_release };
        job.m = m;
        job.model_dir = a.model_dir;
        job.out_dir = a.out_dir;
        snprintf(job.size_s, sizeof job.size_s, "%d", size);
        job.size = size;
        job.flip = flip;
        rc = cli_net_each_image(cmd, &a, m, &stages, &job);
    } else if (rc == EXIT_RUN) {
        rc = cli_run_error(cmd, &err);
    }
    for (int i = 0; i < CLI_PIPELINE_SLOTS; i++) free(job.slot[i].maps);
    free(a.images);
    sa3d_workspace_free(job.ws);
    sa3d_model_free(m);
    return rc;
}
