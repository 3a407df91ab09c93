/* semalign3d match: SemAlign3D on two arbitrary images (METHOD.md 5, 6): the prior aligned to each image, query
 * points of image 1 matched into image 2 through both alignments; the matches as JSON and a side-by-side PNG. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "cli.h"
#include "semalign3d/align.h"
#include "semalign3d/image.h"
#include "semalign3d/match.h"
#include "semalign3d/nn.h"
#include "semalign3d/prior.h"
#include "semalign3d/safetensors.h"
#include "semalign3d/viz.h"

static void help(void) {
    printf("usage: semalign3d match IMAGE1 IMAGE2 --points \"x,y;x,y;...\" --prior FILE\n"
           "                        (--model DIR | --features1 FILE --features2 FILE) [options]\n\n"
           "Aligns the prior (`build-prior`) to both images and matches each point of IMAGE1 (original pixels) into\n"
           "IMAGE2 through the two alignments (METHOD.md 6.2; docs/ALIGN.md), with the GeoAware baseline as the\n"
           "fallback where an alignment is implausible. Prints the matches as JSON (or writes --json) and draws\n"
           "IMAGE1 | IMAGE2 with a line per match (blue: through the alignments, grey: baseline fallback).\n"
           "JSON: what made it (semalign3d_version, images, prior, features or network and dtype, size, device, the\n"
           "alignments' seed, settings: the other options away from their defaults); category; points (IMAGE1\n"
           "pixels); matches (IMAGE2 pixels, one per point; the soft-argmax may land in the square's padding, just\n"
           "outside the image); fallback (1 where the baseline gave the match); energy and focal: the two\n"
           "alignments' final energy and focal length (units of max(W, H)), [IMAGE1, IMAGE2].\n\n"
           "options:\n"
           "  --points LIST       query points of IMAGE1: x,y pairs separated by ';' (at most %d), in the stored\n"
           "                      pixel grid (EXIF orientation is ignored, as GeoAware-SC ignores it)\n"
           "  --prior FILE        the category's prior (<category>.prior.safetensors)\n"
           "  --model DIR         DINOv2 model to compute the features (GeoAware-SC input, --size square), of each\n"
           "                      image and of its mirror (the aligner's mirror term, align.w_mirror)\n"
           "  --features1 FILE    or import them: `semalign3d features --flip` output (keys feature_map and\n"
           "                      feature_map_flip; without the latter, --set align.w_mirror=0) for IMAGE1 ...\n"
           "  --features2 FILE    ... and IMAGE2 (a file made by `features` from other image bytes is refused)\n"
           "  --size N            feature input square side (default 840 -> 60 x 60)\n"
           "  --device NAME       cpu (default) or cuda: the network (--model) and the aligner's energy\n"
           "  --dtype NAME        with --model: fp32 (default; TF32 products on cuda), fp16 or bf16 (cuda only)\n"
           "  --positions NAME    with --model: hf (default) or hub: positions resized as Hugging Face\n"
           "                      or as the torch.hub DINOv2 GeoAware-SC used (scale (g + 0.1) / G)\n"
           "  --seed N            seed of the pose hypotheses (default 0)\n"
           "  --json FILE         write the JSON here (atomic) instead of stdout\n"
           "  --png FILE          the side-by-side picture (atomic)\n"
           "  --threads N         threads (default 0 = all cores)\n"
           "  --set NAME=VALUE    an aligner or matcher option (repeatable; docs/ALIGN.md); --set list prints\n"
           "                      them all with their values\n"
           "example:\n"
           "  semalign3d match a.jpg b.jpg --points \"120,80;140,95\" --prior priors/car.prior.safetensors \\\n"
           "      --model models/dinov2-base --png ab.png\n", SA3D_MAX_KPS);
}

/* "x,y;x,y": 1..SA3D_MAX_KPS finite points; returns the count or -1 with a usage error printed. */
static int parse_points(const char *cmd, const char *s, float (*pts)[2]) {
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        if (n == SA3D_MAX_KPS) { cli_usage_error(cmd, "--points: more than %d points", SA3D_MAX_KPS); return -1; }
        double x = strtod(p, &end);
        if (end == p || *end != ',') { cli_usage_error(cmd, "--points: point %d: expected x,y", n + 1); return -1; }
        p = end + 1;
        double y = strtod(p, &end);
        if (end == p || (*end && *end != ';') || !isfinite(x) || !isfinite(y)) {
            cli_usage_error(cmd, "--points: point %d: expected x,y with finite numbers", n + 1);
            return -1;
        }
        pts[n][0] = (float)x;
        pts[n][1] = (float)y;
        n++;
        p = *end ? end + 1 : end;
    }
    if (n == 0) { cli_usage_error(cmd, "--points: no point given"); return -1; }
    return n;
}

/* The unit feature map of an image (flip: of its left-right mirror, for the aligner's mirror term), computed by
 * the model. */
static sa3d_status features_compute(const sa3d_model *m, sa3d_workspace *ws, const sa3d_image *img, int size,
                                    int flip, sa3d_feature_map *F, sa3d_error *err) {
    float *px = NULL;
    sa3d_image mirrored = { .w = img->w, .h = img->h, .rgb = NULL };
    if (flip) {
        size_t nb = (size_t)img->w * (size_t)img->h * 3;
        if (!(mirrored.rgb = malloc(nb))) return sa3d_fail(err, SA3D_ERR_NOMEM, "out of memory");
        memcpy(mirrored.rgb, img->rgb, nb);
        sa3d_image_flip_lr(&mirrored);
    }
    sa3d_status s = sa3d_geoaware_preprocess(flip ? &mirrored : img, size, &px, err);
    free(mirrored.rgb);
    if (!s && !(s = sa3d_model_forward(m, ws, px, err))) s = sa3d_workspace_download_output(ws, "feature_map", err);
    sa3d_pixels_free(px);
    if (s) return s;
    const sa3d_tensor_view *f = sa3d_workspace_output(ws, "feature_map");
    int C = (int)f->shape[1], g = (int)f->shape[2];
    float *data = malloc((size_t)C * g * g * sizeof(float));
    if (!data) return sa3d_fail(err, SA3D_ERR_NOMEM, "out of memory");
    memcpy(data, f->data, (size_t)C * g * g * sizeof(float));
    sa3d_features_normalize(data, C, g * g);
    *F = (sa3d_feature_map){ C, g, data, img->w, img->h, size };
    return SA3D_OK;
}

/* One tensor of an open `features` file as a unit feature map. */
static sa3d_status features_tensor(const sa3d_safetensors *st, const char *file, const char *key, int flip,
                                   const sa3d_image *img, int size, sa3d_feature_map *F, sa3d_error *err) {
    const sa3d_st_tensor *t = sa3d_st_find(st, key);
    int square = t && ((t->ndim == 3 && t->shape[1] == t->shape[2]) ||
                       (t->ndim == 4 && t->shape[0] == 1 && t->shape[2] == t->shape[3]));
    if (!square)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: no tensor %s of shape [C][g][g]%s", file, key,
                         flip ? " (the mirrored image's features, which align.w_mirror needs: `semalign3d "
                                "features --flip`, or --set align.w_mirror=0)" : "");
    int C = (int)t->shape[t->ndim - 3], g = (int)t->shape[t->ndim - 1];
    float *data = malloc(t->numel * sizeof(float));
    if (!data) return sa3d_fail(err, SA3D_ERR_NOMEM, "out of memory");
    sa3d_status s = sa3d_st_read_f32_finite(t, data, t->numel, err);
    if (s) { free(data); return s; }
    sa3d_features_normalize(data, C, g * g);
    *F = (sa3d_feature_map){ C, g, data, img->w, img->h, size };
    return SA3D_OK;
}

/* Adds item under key, or frees it (cJSON leaves an item that failed to be added to the caller). */
static int json_add(cJSON *o, const char *key, cJSON *item) {
    if (item && cJSON_AddItemToObject(o, key, item)) return 1;
    cJSON_Delete(item);
    return 0;
}

/* What made the matches, as the JSON's first fields: the version; the inputs (images, prior, and the features files
 * or the network: its id, which names its position rule, and dtype); size, device and the seed the alignments ran
 * with; the other options away from their defaults, however given. cJSON escapes the paths. NULL when out of
 * memory; free with cJSON_free. */
static char *run_record(const char *const img_path[2], const char *prior_path, const sa3d_model *m,
                        const char *const feat_path[2], int size, const char *device,
                        const sa3d_sa3d_matcher_params *p) {
    cJSON *o = cJSON_CreateObject(), *settings = cJSON_CreateObject();
    int ok = o && settings && json_add(o, "semalign3d_version", cJSON_CreateString(sa3d_version())) &&
             json_add(o, "images", cJSON_CreateStringArray(img_path, 2)) &&
             json_add(o, "prior", cJSON_CreateString(prior_path)) &&
             (m ? json_add(o, "network", cJSON_CreateString(sa3d_model_id(m))) &&
                      json_add(o, "dtype", cJSON_CreateString(sa3d_model_dtype(m)))
                : json_add(o, "features", cJSON_CreateStringArray(feat_path, 2))) &&
             json_add(o, "size", cJSON_CreateNumber(size)) && json_add(o, "device", cJSON_CreateString(device)) &&
             json_add(o, "seed", cJSON_CreateNumber((double)p->align.seed));
    sa3d_sa3d_matcher_params d = sa3d_sa3d_matcher_params_default();
    char v[64], dv[64];
    const char *name;
    for (int i = 0; ok && (name = sa3d_sa3d_matcher_params_field(p, i, v, sizeof v)); i++) {
        sa3d_sa3d_matcher_params_field(&d, i, dv, sizeof dv);
        if (strcmp(v, dv) && strcmp(name, "align.seed"))   /* recorded above */
            ok = json_add(settings, name, cJSON_CreateString(v));
    }
    if (ok) ok = json_add(o, "settings", settings);   /* which frees it on failure */
    else cJSON_Delete(settings);
    char *text = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return text;
}

/* The unit feature maps of an image read from its `features` file (key feature_map) and, where Fm is given, of its
 * mirror (feature_map_flip): one open, one check that the file was made from these image bytes. */
static sa3d_status features_read(const char *file, const sa3d_image *img, const char *img_path, const char *digest,
                                 int size, sa3d_feature_map *F, sa3d_feature_map *Fm, sa3d_error *err) {
    sa3d_safetensors *st;
    sa3d_status s = sa3d_st_open(&st, file, err);
    if (s) return s;
    const char *made_from = sa3d_st_metadata(st, "image_digest");   /* `features` records it */
    if (!(s = sa3d_features_check_size(st, file, size, err))) {
        if (made_from && digest[0] && strcmp(made_from, digest))
            s = sa3d_fail(err, SA3D_ERR_ARG, "%s: computed from another image than %s (image_digest %s, the "
                          "image's %s)", file, img_path, made_from, digest);
    }
    if (!s) s = features_tensor(st, file, "feature_map", 0, img, size, F, err);
    if (!s && Fm) s = features_tensor(st, file, "feature_map_flip", 1, img, size, Fm, err);
    sa3d_st_close(st);
    return s;
}

int cmd_match(int argc, char **argv) {
    const char *cmd = "match", *img_path[2] = { NULL, NULL }, *points = NULL, *prior_path = NULL, *model_dir = NULL,
               *feat_path[2] = { NULL, NULL }, *size_s = "840", *device = "cpu", *seed_s = "0", *json = NULL,
               *png = NULL, *threads_s = NULL, *dtype = NULL, *positions = NULL;
    cli_param_sets sets = { .n = 0 };
    for (int i = 1; i < argc; i++) {
        int r;
        if (cli_flag(argv, i, "-h") || cli_flag(argv, i, "--help")) { help(); return EXIT_OK; }
        if ((r = cli_opt(cmd, argc, argv, &i, "--points", &points)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--prior", &prior_path)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--model", &model_dir)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--features1", &feat_path[0])) ||
            (r = cli_opt(cmd, argc, argv, &i, "--features2", &feat_path[1])) ||
            (r = cli_opt(cmd, argc, argv, &i, "--size", &size_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--device", &device)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--dtype", &dtype)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--positions", &positions)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--seed", &seed_s)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--json", &json)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--png", &png)) ||
            (r = cli_opt(cmd, argc, argv, &i, "--threads", &threads_s)) ||
            (r = cli_param_set_arg(cmd, argc, argv, &i, &sets))) {
            if (r < 0) return EXIT_USAGE;
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1]) return cli_usage_error(cmd, "unknown option '%s'", argv[i]);
        if (img_path[1]) return cli_usage_error(cmd, "more than two images given");
        img_path[img_path[0] ? 1 : 0] = argv[i];
    }
    int list_rc = cli_param_sets_list_only(cmd, &sets);
    if (list_rc >= 0) return list_rc;
    if (!img_path[1]) return cli_usage_error(cmd, "two images are required");
    if (!points || !prior_path) return cli_usage_error(cmd, "--points and --prior are required");
    if (!model_dir == !(feat_path[0] && feat_path[1]) || (!!feat_path[0] != !!feat_path[1]))
        return cli_usage_error(cmd, "give either --model or both --features1 and --features2");
    if ((dtype || positions) && !model_dir) return cli_usage_error(cmd, "--dtype and --positions belong to --model");
    if (!cli_model_names_ok(cmd, NULL, dtype, positions) || !cli_input_dir_ok(cmd, "--model", model_dir) ||
        !cli_output_file_ok(cmd, "--json", json) ||
        !cli_output_file_ok(cmd, "--png", png))
        return EXIT_USAGE;
    int size, seed, threads = 0;
    if (!cli_int(cmd, "--size", size_s, 14, 8400, &size) || !cli_int(cmd, "--seed", seed_s, 0, 2000000000, &seed) ||
        (threads_s && !cli_int(cmd, "--threads", threads_s, 0, 1024, &threads)))
        return EXIT_USAGE;
    if (size % 14) return cli_usage_error(cmd, "--size %d: must be a multiple of 14", size);
    sa3d_sa3d_matcher_params smp = sa3d_sa3d_matcher_params_default();
    smp.align.seed = (uint64_t)seed;
    smp.align.n_threads = threads;
    if (!cli_align_device(cmd, device, &smp)) return EXIT_USAGE;
    int set_rc = cli_param_sets_apply(cmd, &sets, &smp);
    if (set_rc >= 0) return set_rc;
    if (smp.match.lift)
        return cli_usage_error(cmd, "match.lift needs the image's pseudo depth, which `match` does not compute: use "
                               "`eval --depth DIR` or `demo`");
    float pts[SA3D_MAX_KPS][2], pred[SA3D_MAX_KPS][2];
    int n = parse_points(cmd, points, pts);
    if (n < 0) return EXIT_USAGE;
    sa3d_error derr = { 0 };
    if (sa3d_align_device_check(smp.align.device, &derr)) return cli_run_error(cmd, &derr);   /* before the work */

    sa3d_error err = { 0 };
    sa3d_image img[2] = { { 0 }, { 0 } };
    sa3d_feature_map F[2] = { { 0 }, { 0 } }, Fm[2] = { { 0 }, { 0 } };
    sa3d_alignment *a[2] = { NULL, NULL };
    sa3d_prior *prior = NULL;
    sa3d_model *m = NULL;
    sa3d_workspace *ws = NULL;
    uint8_t fallback[SA3D_MAX_KPS], *canvas = NULL;
    char *text = NULL, *meta = NULL;
    int rc = EXIT_RUN;
    char digest[2][17];   /* of the bytes decoded, for the features files' image_digest */
    for (int k = 0; k < 2; k++) {
        char *bytes;
        size_t len;
        if (cli_image_bytes(img_path[k], &bytes, &len, digest[k], &err) ||
            cli_image_decode(img_path[k], bytes, len, &img[k], &err))
            goto done;
    }
    for (int q = 0; q < n; q++)
        if (pts[q][0] < 0 || pts[q][1] < 0 || pts[q][0] > (float)img[0].w || pts[q][1] > (float)img[0].h) {
            sa3d_fail(&err, SA3D_ERR_ARG, "--points: point %d (%g, %g) is outside %s (%d x %d)", q + 1,
                      (double)pts[q][0], (double)pts[q][1], img_path[0], img[0].w, img[0].h);
            goto done;
        }
    if (sa3d_prior_load(&prior, prior_path, &err)) goto done;
    if (model_dir) {
        sa3d_model_params mp = sa3d_model_params_default();
        mp.device = device;
        mp.dtype = dtype;
        mp.positions = positions;
        mp.n_threads = threads;
        if (sa3d_model_open(&m, model_dir, &mp, &err) ||
            cli_model_kind_check(m, "--model", model_dir, SA3D_MODEL_DINOV2, &err) ||
            sa3d_workspace_new(&ws, m, size, size, SA3D_WS_NO_DOWNLOAD, &err))   /* feature_map alone comes back */
            goto done;
    }
    sa3d_align_params ap = smp.align;
    for (int k = 0; k < 2; k++) {
        /* no mask or depth for arbitrary images; the mirrored image's features for the mirror term */
        sa3d_feature_map *mirror = ap.w_mirror > 0.0 ? &Fm[k] : NULL;
        if (m ? features_compute(m, ws, &img[k], size, 0, &F[k], &err) ||
                    (mirror && features_compute(m, ws, &img[k], size, 1, mirror, &err))
              : features_read(feat_path[k], &img[k], img_path[k], digest[k], size, &F[k], mirror, &err)) {
            if (m) sa3d_error_prefix(&err, "%s", img_path[k]);   /* the features file names itself */
            goto done;
        }
        sa3d_align_input in_m = { .F = &Fm[k] };
        sa3d_align_input in = { .F = &F[k], .mirror = mirror ? &in_m : NULL };
        if (sa3d_align_image(&a[k], prior, &in, &ap, &err)) {
            sa3d_error_prefix(&err, "%s", img_path[k]);
            goto done;
        }
    }
    if (sa3d_match_sa3d(prior, a[0], &F[0], a[1], &F[1], (const float (*)[2])pts, n, &smp.match, pred, fallback,
                        &err))
        goto done;
    if (!(meta = run_record(img_path, prior_path, m, feat_path, size, device, &smp))) {
        sa3d_fail(&err, SA3D_ERR_NOMEM, "out of memory");
        goto done;
    }
    size_t cap = 512 + (size_t)n * 96 + strlen(meta), len = 0;
    if (!(text = malloc(cap))) { sa3d_fail(&err, SA3D_ERR_NOMEM, "out of memory"); goto done; }
    len += (size_t)snprintf(text + len, cap - len, "%.*s, \"category\": \"%s\", \"points\": [",
                            (int)strlen(meta) - 1, meta, prior->category);   /* meta without its closing brace */
    for (int q = 0; q < n; q++)
        len += (size_t)snprintf(text + len, cap - len, "%s[%.2f, %.2f]", q ? ", " : "", (double)pts[q][0],
                                (double)pts[q][1]);
    len += (size_t)snprintf(text + len, cap - len, "], \"matches\": [");
    for (int q = 0; q < n; q++)
        len += (size_t)snprintf(text + len, cap - len, "%s[%.2f, %.2f]", q ? ", " : "", (double)pred[q][0],
                                (double)pred[q][1]);
    len += (size_t)snprintf(text + len, cap - len, "], \"fallback\": [");
    for (int q = 0; q < n; q++) len += (size_t)snprintf(text + len, cap - len, "%s%d", q ? ", " : "", fallback[q]);
    len += (size_t)snprintf(text + len, cap - len, "], \"energy\": [%.6g, %.6g], \"focal\": [%.4f, %.4f]}\n",
                            a[0]->energy, a[1]->energy, a[0]->f, a[1]->f);
    if (json && sa3d_write_file_atomic(json, text, len, &err)) goto done;   /* first: a bad path writes nothing */
    if (png) {
        int w, h;
        sa3d_side_by_side(&canvas, &w, &h, img[0].rgb, img[0].w, img[0].h, img[1].rgb, img[1].w, img[1].h);
        if (!canvas) { sa3d_fail(&err, SA3D_ERR_NOMEM, "out of memory"); goto done; }
        const uint8_t blue[3] = { 30, 110, 255 }, grey[3] = { 150, 150, 150 };
        for (int q = 0; q < n; q++) {
            const uint8_t *c = fallback[q] ? grey : blue;
            sa3d_draw_line(canvas, w, h, pts[q][0], pts[q][1], (float)img[0].w + pred[q][0], pred[q][1], c);
            sa3d_draw_disc(canvas, w, h, pts[q][0], pts[q][1], 3.0f, c);
            sa3d_draw_disc(canvas, w, h, (float)img[0].w + pred[q][0], pred[q][1], 3.0f, c);
        }
        if (sa3d_png_write(png, canvas, w, h, 3, &err)) {
            if (json) remove(json);   /* all outputs or none */
            goto done;
        }
    }
    if (!json) fputs(text, stdout);
    rc = EXIT_OK;
done:
    if (rc != EXIT_OK) rc = cli_run_error(cmd, &err);
    free(text);
    cJSON_free(meta);
    free(canvas);
    for (int k = 0; k < 2; k++) {
        sa3d_image_free(&img[k]);
        free((void *)F[k].data);
        free((void *)Fm[k].data);
        sa3d_alignment_free(a[k]);
    }
    sa3d_prior_free(prior);
    sa3d_workspace_free(ws);
    sa3d_model_free(m);
    return rc;
}
