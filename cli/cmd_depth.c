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
           "The input is prepared as the model folder's preprocessor_config.json (or processor_config.json) says,\n"
           "or as every Depth-Anything-V2-*-hf says when it has neither (518, aspect kept, multiple of 14, bicubic).\n"
           "Existing outputs made from the same image bytes with the same model and preprocessing are kept, so an\n"
           "interrupted run resumes.\n"
           "Images: JPEG or PNG, read as GeoAware-SC reads them (RGB; alpha dropped, EXIF orientation ignored).\n"
           "Images must have distinct names (stems). On a GPU (--device cuda) helper threads decode the next image\n"
           "and write the previous one while the network runs.\n\n"
           "options:\n"
           "  --model DIR      Depth Anything V2 folder (depth-anything/Depth-Anything-V2-*-hf)\n"
           "  --out DIR        output folder (created if missing)\n"
           "  --threads N      threads (default 0 = all cores)\n"
           "  --device NAME    cpu (default) or cuda (builds with -DSEMALIGN3D_CUDA=ON)\n"
           "  --dtype NAME     fp32 (default), fp16 or bf16 (cuda only)\n"
           "  --positions NAME positions resized as Hugging Face (hf, default) or as the original\n"
           "                   Depth-Anything-V2 code (hub: bicubic by scale (g + 0.1) / G)\n"
           "  --quiet          no progress lines\n"
           "example:\n"
           "  semalign3d depth --model models/Depth-Anything-V2-Small-hf --out depth JPEGImages/cat/*.jpg\n");
}

/* The job's processor made the file too: its text, or the default for files written before it was recorded. */
static int up_to_date(const char *path, const char *png, const sa3d_model *m, const char *digest,
                      const sa3d_dpt_preprocess_params *pre, const char *pre_text) {
    sa3d_safetensors *st;
    if (!sa3d_file_exists(path) || !sa3d_file_exists(png) || sa3d_st_open(&st, path, NULL) != SA3D_OK) return 0;
    const char *made = sa3d_st_metadata(st, "processor");
    int ok = cli_made_by(st, m, digest) &&
             (made ? !strcmp(made, pre_text) : sa3d_dpt_preprocess_params_is_default(pre)) &&
             sa3d_st_find(st, "depth") && sa3d_st_find(st, "predicted_depth");
    sa3d_st_close(st);
    return ok;
}

/* One image's buffers (cli/pipeline.c). */
typedef struct depth_slot {
    const char *image;
    char digest[17];               /* cli_file_digest of the image file */
    char *path, *png;              /* the output files */
    int iw, ih;                    /* image size */
    float *px;                     /* the processor's input [3][ph][pw] */
    int pw, ph;
    float *pred;                   /* run's copy of predicted_depth [gh][gw] */
    int gh, gw;
} depth_slot;

typedef struct depth_job {
    const sa3d_model *m;
    sa3d_workspace *ws;            /* resized to each image's input size (Depth Anything keeps the aspect) */
    const char *model_dir, *out_dir;
    sa3d_dpt_preprocess_params pre;  /* the model folder's processor */
    char pre_text[512];
    depth_slot slot[CLI_PIPELINE_SLOTS];
} depth_job;

static sa3d_status depth_prepare(void *ctx, int slot, const char *image, const char *stem, int *skip,
                                 sa3d_error *err) {
    depth_job *j = ctx;
    depth_slot *sl = &j->slot[slot];
    char name[600], pname[600];
    snprintf(name, sizeof name, "%s.depth.safetensors", stem);
    snprintf(pname, sizeof pname, "%s.depth.png", stem);
    sl->image = image;
    sl->path = sa3d_path_join(j->out_dir, name);
    sl->png = sa3d_path_join(j->out_dir, pname);
    if (!sl->path || !sl->png) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", image);
    char *data;
    size_t len;
    sa3d_status s = cli_image_bytes(image, &data, &len, sl->digest, err);
    if (!s && up_to_date(sl->path, sl->png, j->m, sl->digest, &j->pre, j->pre_text)) {
        sa3d_free(data);
        *skip = 1;
        return SA3D_OK;
    }
    sa3d_image img = { 0 };
    if (!s) s = cli_image_decode(image, data, len, &img, err);
    if (!s && (s = sa3d_dpt_preprocess(&img, &j->pre, &sl->px, &sl->pw, &sl->ph, err)))
        sa3d_error_prefix(err, "%s", image);
    sl->iw = img.w;
    sl->ih = img.h;
    sa3d_image_free(&img);
    return s;
}

static sa3d_status depth_run(void *ctx, int slot, sa3d_error *err) {
    depth_job *j = ctx;
    depth_slot *sl = &j->slot[slot];
    if ((j->ws ? sa3d_workspace_resize(j->ws, sl->ph, sl->pw, err)
               : sa3d_workspace_new(&j->ws, j->m, sl->ph, sl->pw, 0, err)) ||
        sa3d_model_forward(j->m, j->ws, sl->px, err))
        return sa3d_error_prefix(err, "%s", sl->image);
    const sa3d_tensor_view *d = sa3d_workspace_output(j->ws, "predicted_depth");
    sl->gh = (int)d->shape[1];
    sl->gw = (int)d->shape[2];
    if (!(sl->pred = malloc((size_t)sl->gh * sl->gw * sizeof(float))))
        return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", sl->image);
    memcpy(sl->pred, d->data, (size_t)sl->gh * sl->gw * sizeof(float));
    return SA3D_OK;
}

/* The map upsampled to the image size, its colour picture and both files. */
static sa3d_status depth_finish(void *ctx, int slot, sa3d_error *err) {
    depth_job *j = ctx;
    depth_slot *sl = &j->slot[slot];
    size_t npx = (size_t)sl->iw * sl->ih;
    float *full = malloc(npx * sizeof(float));
    uint8_t *rgb = malloc(npx * 3);
    sa3d_st_writer *w = sa3d_st_writer_new();
    sa3d_status s = SA3D_OK;
    if (!full || !rgb || !w) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", sl->image);
    } else {
        sa3d_depth_upsample(full, sl->iw, sl->ih, sl->pred, sl->gw, sl->gh);
        int64_t pshape[2] = { sl->gh, sl->gw }, fshape[2] = { sl->ih, sl->iw };
        sa3d_colormap(rgb, full, npx);
        if (sa3d_st_writer_add_f32(w, "predicted_depth", 2, pshape, sl->pred, err) ||
            sa3d_st_writer_add_f32(w, "depth", 2, fshape, full, err) ||
            sa3d_st_writer_set_metadata(w, "semalign3d_version", sa3d_version(), err) ||
            sa3d_st_writer_set_metadata(w, "model_id", sa3d_model_id(j->m), err) ||
            sa3d_st_writer_set_metadata(w, "dtype", sa3d_model_dtype(j->m), err) ||
            sa3d_st_writer_set_metadata(w, "model_dir", j->model_dir, err) ||
            sa3d_st_writer_set_metadata(w, "processor", j->pre_text, err) ||
            sa3d_st_writer_set_metadata(w, "image", sl->image, err) ||
            sa3d_st_writer_set_metadata(w, "image_digest", sl->digest, err) ||
            sa3d_png_write(sl->png, rgb, sl->iw, sl->ih, 3, err) || sa3d_st_writer_write(w, sl->path, err))
            s = err->code;
    }
    sa3d_st_writer_free(w);
    free(rgb);
    free(full);
    return s;
}

static void depth_release(void *ctx, int slot) {
    depth_slot *sl = &((depth_job *)ctx)->slot[slot];
    sa3d_free(sl->path);
    sa3d_free(sl->png);
    sa3d_pixels_free(sl->px);
    free(sl->pred);
    memset(sl, 0, sizeof *sl);
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
    char used[4200];
    if (rc == EXIT_OK && sa3d_dpt_preprocess_params_find(&job.pre, a.model_dir, used, sizeof used, &err))
        rc = EXIT_RUN;
    if (rc == EXIT_OK) {
        sa3d_dpt_preprocess_params_text(&job.pre, job.pre_text, sizeof job.pre_text);
        if (!a.quiet) fprintf(stderr, "processor: %s\n", used[0] ? used : "default (no preprocessor_config.json)");
        job.m = m;
        job.model_dir = a.model_dir;
        job.out_dir = a.out_dir;
        static const cli_image_stages stages = { depth_prepare, depth_run, depth_finish, depth_release };
        rc = cli_net_each_image(cmd, &a, m, &stages, &job);
    } else if (rc == EXIT_RUN) {
        rc = cli_run_error(cmd, &err);
    }
    free(a.images);
    sa3d_workspace_free(job.ws);
    sa3d_model_free(m);
    return rc;
}
