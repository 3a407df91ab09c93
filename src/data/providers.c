/* Feature, depth and mask providers (providers.h): one get() per image and mirror flag, from our networks,
 * from imported files, from SPair segmentations or boxes; computed maps go through a validated on-disk cache. */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "base/base.h"
#include "data/records.h"
#include "semalign3d/image.h"
#include "semalign3d/match.h"
#include "semalign3d/providers.h"
#include "semalign3d/safetensors.h"
#include "tensor/kernels.h"

typedef enum { KIND_FEATURES, KIND_DEPTH, KIND_MASK } provider_kind;
static const char *kind_names[] = { "features", "depth", "masks" };

struct sa3d_provider {
    provider_kind kind;
    sa3d_provider_params p;
    sa3d_dataset *ds;
    char *import_dir, *cache_dir;
    sa3d_workspace *ws;          /* network workspace, resized to each input size */
    sa3d_workspace *ws_batch;    /* features: `batch` images a pass (sa3d_provider_get_many), made on first use */
    sa3d_dpt_preprocess_params dpt; /* depth: the processor (p.depth_processor or the default) */
    char settings[768];          /* cache key part: source, model identity, sizes, a non-default processor */
    sa3d_provider_stats stats;
    sa3d_provider_hook hook;     /* sa3d_provider_set_hook */
    void *hook_user;
    int cancelled;               /* the hook asked to stop the current call */
};

sa3d_provider_params sa3d_provider_params_default(void) {
    sa3d_provider_params p = { SA3D_SOURCE_IMPORT, NULL, NULL, 840, NULL, 0, NULL };
    return p;
}

enum { MANY_CHUNK = 16 };   /* items prepared ahead of the network, at most: 16 x 8.5 MB of pixels at 840 */

static sa3d_status provider_new(sa3d_provider **out, provider_kind kind, sa3d_dataset *ds,
                                const sa3d_provider_params *p, sa3d_error *err) {
    *out = NULL;
    const char *what = kind_names[kind];
    if ((int)p->kind < (int)SA3D_SOURCE_COMPUTE || (int)p->kind > (int)SA3D_SOURCE_BBOX)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s provider: source kind %d unknown", what, (int)p->kind);
    if (p->batch < 0 || p->batch > MANY_CHUNK)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s provider: batch %d (0: the device's default, or 1..%d)", what,
                         p->batch, MANY_CHUNK);
    if (p->kind == SA3D_SOURCE_IMPORT && !p->import_dir)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s provider: import needs a directory", what);
    if (p->kind == SA3D_SOURCE_COMPUTE) {
        if (!p->model) return sa3d_fail(err, SA3D_ERR_ARG, "%s provider: compute needs a model", what);
        sa3d_model_kind want = kind == KIND_FEATURES ? SA3D_MODEL_DINOV2 : SA3D_MODEL_DEPTH_ANYTHING;
        if (kind == KIND_MASK || sa3d_model_get_kind(p->model) != want)
            return sa3d_fail(err, SA3D_ERR_ARG, "%s provider: the model is not a %s network", what,
                             kind == KIND_FEATURES ? "DINOv2" : "Depth Anything");
    }
    if ((p->kind == SA3D_SOURCE_SEGMENTATION || p->kind == SA3D_SOURCE_BBOX) && kind != KIND_MASK)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s provider: segmentation and bbox sources give masks only", what);
    if (kind == KIND_FEATURES && !(p->kind == SA3D_SOURCE_IMPORT && p->input_size == 0) &&
        (p->input_size < 14 || p->input_size % 14 || p->input_size > SA3D_IMAGE_MAX_SIDE))
        return sa3d_fail(err, SA3D_ERR_ARG, "features provider: input size %d is not a multiple of 14 in [14, %d]",
                         p->input_size, SA3D_IMAGE_MAX_SIDE);
    if (kind == KIND_DEPTH && p->depth_processor) {   /* a bad processor fails here, not on every image */
        sa3d_status s = sa3d_dpt_preprocess_params_check(p->depth_processor, err);
        if (s != SA3D_OK) return s;
    }
    sa3d_provider *pr = sa3d_calloc(1, sizeof *pr);
    if (!pr) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s provider: out of memory", what);
    pr->kind = kind;
    pr->p = *p;
    pr->ds = ds;
    if ((p->import_dir && !(pr->import_dir = sa3d_strdup(p->import_dir))) ||
        (p->cache_dir && !(pr->cache_dir = sa3d_strdup(p->cache_dir)))) {
        sa3d_provider_free(pr);
        return sa3d_fail(err, SA3D_ERR_NOMEM, "%s provider: out of memory", what);
    }
    pr->p.import_dir = pr->import_dir;
    pr->p.cache_dir = pr->cache_dir;
    pr->dpt = p->depth_processor ? *p->depth_processor : sa3d_dpt_preprocess_params_default();
    pr->p.depth_processor = &pr->dpt;
    static const char *src_names[] = { "compute", "import", "segmentation", "bbox" };
    /* fp16/bf16 maps are keyed apart from fp32 ones; fp32 keeps the key it had before dtypes were recorded */
    const char *dtype = p->model ? sa3d_model_dtype(p->model) : "fp32";
    /* likewise a processor other than the default, which every Depth-Anything-V2-*-hf ships */
    char pre[512];
    int own_pre = kind == KIND_DEPTH && p->kind == SA3D_SOURCE_COMPUTE &&
                  !sa3d_dpt_preprocess_params_is_default(&pr->dpt);
    sa3d_dpt_preprocess_params_text(&pr->dpt, pre, sizeof pre);
    snprintf(pr->settings, sizeof pr->settings, "source=%s;model=%s;size=%d%s%s%s%s", src_names[p->kind],
             p->model ? sa3d_model_id(p->model) : "-", kind == KIND_FEATURES ? p->input_size : 0,
             strcmp(dtype, "fp32") ? ";dtype=" : "", strcmp(dtype, "fp32") ? dtype : "",
             own_pre ? ";processor=" : "", own_pre ? pre : "");
    *out = pr;
    return SA3D_OK;
}

sa3d_status sa3d_feature_provider_new(sa3d_provider **out, sa3d_dataset *ds, const sa3d_provider_params *p,
                                      sa3d_error *err) {
    return provider_new(out, KIND_FEATURES, ds, p, err);
}
sa3d_status sa3d_depth_provider_new(sa3d_provider **out, sa3d_dataset *ds, const sa3d_provider_params *p,
                                    sa3d_error *err) {
    return provider_new(out, KIND_DEPTH, ds, p, err);
}
sa3d_status sa3d_mask_provider_new(sa3d_provider **out, sa3d_dataset *ds, const sa3d_provider_params *p,
                                   sa3d_error *err) {
    return provider_new(out, KIND_MASK, ds, p, err);
}

void sa3d_provider_free(sa3d_provider *pr) {
    if (!pr) return;
    sa3d_workspace_free(pr->ws);
    sa3d_workspace_free(pr->ws_batch);
    sa3d_free(pr->import_dir);
    sa3d_free(pr->cache_dir);
    sa3d_free(pr);
}

sa3d_provider_stats sa3d_provider_get_stats(const sa3d_provider *pr) { return pr->stats; }

/* Imported features and masks touch no workspace and no cache; the only shared state is the stats counters,
 * updated atomically. Computing sources own one network workspace; bbox masks read the dataset's record
 * cache, which is not locked. */
int sa3d_provider_concurrent(const sa3d_provider *pr) {
    return pr && pr->p.kind == SA3D_SOURCE_IMPORT && !pr->cache_dir;
}

/* ---- helpers ---- */

/* Left-right mirror of every row of x[c][h][w]. */
static void flip_rows(float *x, int c, int h, int w) {
    for (int k = 0; k < c; k++)
        for (int y = 0; y < h; y++) {
            float *r = x + ((size_t)k * h + y) * w;
            for (int i = 0, j = w - 1; i < j; i++, j--) {
                float t = r[i];
                r[i] = r[j];
                r[j] = t;
            }
        }
}

static void cache_paths(const sa3d_provider *pr, const char *cat, const char *id, int flip, char *dir, size_t nd,
                        char *path, size_t np, char *key, size_t nk) {
    snprintf(dir, nd, "%s/%s/%s", pr->cache_dir, kind_names[pr->kind], cat);
    snprintf(path, np, "%s/%s%s.safetensors", dir, id, flip ? ".flip" : "");
    snprintf(key, nk, "%s;image=%s/%s;flip=%d;%s", kind_names[pr->kind], cat, id, flip, pr->settings);
}

/* 1 and *out filled when a valid entry with this key exists; an existing entry that is not valid (other key,
 * unreadable, wrong shape, non-finite) is counted as rejected and will be overwritten. */
static int cache_load(sa3d_provider *pr, const char *path, const char *key, sa3d_map *out) {
    if (!sa3d_file_exists(path)) return 0;
    sa3d_safetensors *st = NULL;
    int ok = 0;
    if (sa3d_st_open(&st, path, NULL) == SA3D_OK) {
        const char *k = sa3d_st_metadata(st, "key");
        const sa3d_st_tensor *t = sa3d_st_find(st, "map");
        if (k && !strcmp(k, key) && t && t->ndim == 3 && t->shape[0] > 0 && t->shape[1] > 0 && t->shape[2] > 0) {
            float *d = malloc(t->numel * sizeof(float));
            if (d && sa3d_st_read_f32(t, d, t->numel, NULL) == SA3D_OK) {
                ok = 1;
                for (size_t i = 0; i < t->numel && ok; i++) ok = isfinite(d[i]);
            }
            if (ok) {
                out->c = (int)t->shape[0];
                out->h = (int)t->shape[1];
                out->w = (int)t->shape[2];
                out->data = d;
            } else {
                free(d);
            }
        }
        sa3d_st_close(st);
    }
    if (!ok) pr->stats.rejected++;
    return ok;
}

static sa3d_status cache_store(const char *dir, const char *path, const char *key, const sa3d_map *m,
                               sa3d_error *err) {
    sa3d_status s = sa3d_mkdirs(dir, err);
    if (s) return s;
    sa3d_st_writer *w = sa3d_st_writer_new();
    if (!w) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", path);
    int64_t shape[3] = { m->c, m->h, m->w };
    if (!(s = sa3d_st_writer_add_f32(w, "map", 3, shape, m->data, err)) &&
        !(s = sa3d_st_writer_set_metadata(w, "key", key, err)) &&
        !(s = sa3d_st_writer_set_metadata(w, "semalign3d_version", sa3d_version(), err)))
        s = sa3d_st_writer_write(w, path, err);
    sa3d_st_writer_free(w);
    return s;
}

/* ---- sources ---- */

/* First existing file among <dir>/<cat>/<name> and <dir>/<name>; returns 1 and fills buf. */
static int find_import(const char *dir, const char *cat, const char *name, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s/%s", dir, cat, name);
    if (sa3d_file_exists(buf)) return 1;
    snprintf(buf, n, "%s/%s", dir, name);
    return sa3d_file_exists(buf);
}

uint64_t sa3d_provider_stamp(const sa3d_provider *pr, const char *cat, const char *id, uint64_t h) {
    if (pr->p.kind != SA3D_SOURCE_IMPORT) return h;
    /* every name get_uncached may read for id, in both places find_import looks (a file added to the category's
     * folder shadows the one beside it) */
    static const char *const names[][3] = { { "%s.features.safetensors", "%s.npy", "%s_flip.npy" },
                                            { "%s.depth.safetensors", NULL, NULL },
                                            { "%s.png", NULL, NULL } };
    for (int k = 0; k < 3 && names[pr->kind][k]; k++) {
        char name[256], path[4400];
        snprintf(name, sizeof name, names[pr->kind][k], id);
        for (int flat = 0; flat < 2; flat++) {
            if (flat) snprintf(path, sizeof path, "%s/%s", pr->import_dir, name);
            else snprintf(path, sizeof path, "%s/%s/%s", pr->import_dir, cat, name);
            h = sa3d_fnv1a(h, path, strlen(path) + 1);
            struct stat st;
            /* size and modification time, as make and rsync judge a file: a file written again (ours are
             * written to a temporary name and renamed) has a new time; an absent one counts as such */
            int64_t v[3] = { -1, 0, 0 };
            if (stat(path, &st) == 0) {
                v[0] = (int64_t)st.st_size;
                v[1] = (int64_t)st.st_mtim.tv_sec;
                v[2] = (int64_t)st.st_mtim.tv_nsec;
            }
            h = sa3d_fnv1a(h, v, sizeof v);
        }
    }
    return h;
}

/* Reads tensor key ([C][H][W] or [H][W], optionally with a leading 1) from a safetensors file. */
static sa3d_status import_safetensors(const char *path, const char *key, int want_ndim, sa3d_map *out,
                                      sa3d_error *err) {
    sa3d_safetensors *st;
    sa3d_status s = sa3d_st_open(&st, path, err);
    if (s) return s;
    const sa3d_st_tensor *t = sa3d_st_find(st, key);
    if (!t) {
        s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: no tensor '%s'", path, key);
    } else if (t->ndim != want_ndim && !(t->ndim == want_ndim + 1 && t->shape[0] == 1)) {
        s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: tensor '%s' has %d dimensions; expected %d", path, key, t->ndim,
                      want_ndim);
    } else {
        const int64_t *sh = t->shape + (t->ndim - want_ndim);
        out->c = want_ndim == 3 ? (int)sh[0] : 1;
        out->h = (int)sh[want_ndim - 2];
        out->w = (int)sh[want_ndim - 1];
        if (!(out->data = malloc(t->numel * sizeof(float) + 1))) {
            s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", path);
        } else if ((s = sa3d_st_read_f32(t, out->data, t->numel, err))) {
            free(out->data);
            out->data = NULL;
        }
    }
    sa3d_st_close(st);
    return s;
}

sa3d_status sa3d_features_check_size(const sa3d_safetensors *st, const char *path, int input_size,
                                     sa3d_error *err) {
    const char *made = sa3d_st_metadata(st, "size");
    if (made && strtol(made, NULL, 10) != input_size)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: computed at input size %.16s; this run reads features at %d "
                         "(--size)", path, made, input_size);
    return SA3D_OK;
}

/* Feature maps stored as aligned float32 (what `semalign3d features` and synth-spair write) are normalised
 * straight from the mapping into the output: one read of the file's pages, one write, no intermediate copy
 * and no separate finiteness pass (sa3d_features_normalize_copy). *done = 0 leaves the file to the general
 * path (other dtypes, unaligned data). A file that records another input size than this run's is refused
 * (sa3d_features_check_size), unless input_size is 0 (a caller that maps keypoints without it). */
static sa3d_status import_features_st(const char *path, const char *key, const char *cat, const char *id,
                                      int input_size, sa3d_map *out, int *done, sa3d_error *err) {
    *done = 0;
    sa3d_safetensors *st;
    sa3d_status s = sa3d_st_open(&st, path, err);
    if (s) return s;
    if (input_size && (s = sa3d_features_check_size(st, path, input_size, err)) != SA3D_OK) {
        sa3d_st_close(st);
        return s;
    }
    const sa3d_st_tensor *t = sa3d_st_find(st, key);
    if (t && t->dtype == SA3D_DTYPE_F32 && ((uintptr_t)t->data % sizeof(float)) == 0 && t->numel > 0 &&
        (t->ndim == 3 || (t->ndim == 4 && t->shape[0] == 1))) {
        const int64_t *sh = t->shape + (t->ndim - 3);
        if (sh[0] <= INT_MAX && sh[1] * sh[2] <= INT_MAX) {   /* numel fits in memory, so the dims are small */
            *done = 1;
            out->c = (int)sh[0];
            out->h = (int)sh[1];
            out->w = (int)sh[2];
            if (!(out->data = malloc(t->numel * sizeof(float) + 1))) {
                s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", path);
            } else {
                long bad = sa3d_features_normalize_copy(out->data, t->data, out->c, out->h * out->w);
                if (bad >= 0) {
                    /* the message sa3d_provider_get gives for any non-finite map */
                    s = sa3d_fail(err, SA3D_ERR_NUMERIC, "%s/%s: features: non-finite value at index %ld", cat, id,
                                  bad);
                    free(out->data);
                    out->data = NULL;
                }
            }
        }
    }
    sa3d_st_close(st);
    return s;
}

static sa3d_status import_features(sa3d_provider *pr, const char *cat, const char *id, int flip, sa3d_map *out,
                                   int *normalized, sa3d_error *err) {
    char name[256], path[4096];
    snprintf(name, sizeof name, "%s.features.safetensors", id);
    if (find_import(pr->import_dir, cat, name, path, sizeof path)) {
        const char *key = flip ? "feature_map_flip" : "feature_map";
        sa3d_status s = import_features_st(path, key, cat, id, pr->p.input_size, out, normalized, err);
        if (s || *normalized) return s;
        return import_safetensors(path, key, 3, out, err);
    }
    snprintf(name, sizeof name, "%s%s.npy", id, flip ? "_flip" : "");
    if (find_import(pr->import_dir, cat, name, path, sizeof path)) {
        int nd;
        long long dims[4];
        sa3d_status s = sa3d_npy_read(path, &out->data, &nd, dims, err);
        if (s) return s;
        if (nd == 4 && dims[0] == 1) {
            dims[0] = dims[1];
            dims[1] = dims[2];
            dims[2] = dims[3];
            nd = 3;
        }
        if (nd != 3 || dims[1] != dims[2] || dims[0] <= 0 || dims[1] <= 0) {
            free(out->data);
            out->data = NULL;
            return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: expected a [C][g][g] feature map", path);
        }
        out->c = (int)dims[0];
        out->h = out->w = (int)dims[1];
        return SA3D_OK;
    }
    return sa3d_fail(err, SA3D_ERR_IO, "%s: no feature file for %s/%s (%s.features.safetensors or %s%s.npy)",
                     pr->import_dir, cat, id, id, id, flip ? "_flip" : "");
}

/* The annotated size of cat/id (its image record), which the decoded image must have. Not thread-safe (the
 * dataset caches records): called before any parallel decoding. */
static sa3d_status record_size(sa3d_provider *pr, const char *cat, const char *id, int size[2], sa3d_error *err) {
    const sa3d_image_anno *a;
    sa3d_status s = sa3d_dataset_image(pr->ds, cat, id, &a, err);
    if (!s) {
        size[0] = a->width;
        size[1] = a->height;
    }
    return s;
}

/* The image file of cat/id, decoded. Keypoints, boxes and masks are in the annotation's pixels, so an image of
 * another size (size: the record's) would scale every prediction: refused, naming both sizes. */
static sa3d_status load_image(sa3d_provider *pr, const char *cat, const char *id, const int size[2], sa3d_image *img,
                              sa3d_error *err) {
    char *path = sa3d_dataset_image_path(pr->ds, cat, id);
    if (!path) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s/%s: out of memory", cat, id);
    sa3d_status s = sa3d_image_load(img, path, err);
    if (!s && img->warning[0] && pr->ds->warn) {   /* images are decoded on every core (many_prepare) */
        #pragma omp critical(sa3d_dataset_warn)
        pr->ds->warn(pr->ds->warn_user, img->warning);
    }
    if (!s && (img->w != size[0] || img->h != size[1])) {
        s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: the image is %d x %d; its annotation says %d x %d", path, img->w,
                      img->h, size[0], size[1]);
        sa3d_image_free(img);
    }
    free(path);
    return s;
}

/* Depth Anything on the original image, upsampled to its size (the mirror flips this map, METHOD.md 3.2). */
static sa3d_status compute_depth(sa3d_provider *pr, const char *cat, const char *id, sa3d_map *out,
                                 sa3d_error *err) {
    sa3d_image img = { 0 };
    float *px = NULL;
    int pw, ph, size[2];
    sa3d_status s;
    if ((s = record_size(pr, cat, id, size, err)) || (s = load_image(pr, cat, id, size, &img, err)) ||
        (s = sa3d_dpt_preprocess(&img, &pr->dpt, &px, &pw, &ph, err)))
        goto done;
    /* the processor keeps the aspect ratio, so the input size changes between images: one workspace, resized */
    if ((s = pr->ws ? sa3d_workspace_resize(pr->ws, ph, pw, err)
                    : sa3d_workspace_new(&pr->ws, pr->p.model, ph, pw, 0, err)) ||
        (s = sa3d_model_forward(pr->p.model, pr->ws, px, err)))
        goto done;
    const sa3d_tensor_view *d = sa3d_workspace_output(pr->ws, "predicted_depth");
    if (!(out->data = malloc((size_t)img.w * img.h * sizeof(float)))) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s/%s: out of memory", cat, id);
        goto done;
    }
    sa3d_depth_upsample(out->data, img.w, img.h, d->data, (int)d->shape[2], (int)d->shape[1]);
    out->c = 1;
    out->h = img.h;
    out->w = img.w;
done:
    sa3d_pixels_free(px);
    sa3d_image_free(&img);
    return s;
}

/* Any non-zero pixel is object (SPair Segmentation PNGs hold instance ids). */
static sa3d_status mask_from_png(const char *path, sa3d_map *out, sa3d_error *err) {
    sa3d_image img = { 0 };
    sa3d_status s = sa3d_image_load(&img, path, err);
    if (s) return s;
    size_t n = (size_t)img.w * img.h;
    if (!(out->data = malloc(n * sizeof(float)))) {
        sa3d_image_free(&img);
        return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", path);
    }
    for (size_t i = 0; i < n; i++)
        out->data[i] = (img.rgb[3 * i] | img.rgb[3 * i + 1] | img.rgb[3 * i + 2]) ? 1.0f : 0.0f;
    out->c = 1;
    out->h = img.h;
    out->w = img.w;
    sa3d_image_free(&img);
    return SA3D_OK;
}

static sa3d_status bbox_mask(sa3d_provider *pr, const char *cat, const char *id, sa3d_map *out, sa3d_error *err) {
    const sa3d_image_anno *a = NULL;
    sa3d_status s = sa3d_dataset_image(pr->ds, cat, id, &a, err);
    if (s) return s;
    size_t n = (size_t)a->width * a->height;
    if (!(out->data = calloc(n, sizeof(float)))) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s/%s: out of memory", cat, id);
    for (int y = 0; y < a->height; y++)
        for (int x = 0; x < a->width; x++)
            if ((float)x >= a->bbox[0] && (float)x <= a->bbox[2] && (float)y >= a->bbox[1] && (float)y <= a->bbox[3])
                out->data[(size_t)y * a->width + x] = 1.0f;
    out->c = 1;
    out->h = a->height;
    out->w = a->width;
    return SA3D_OK;
}

/* *checked = 1: the map is already normalised and known to be finite. */
static sa3d_status get_uncached(sa3d_provider *pr, const char *cat, const char *id, int flip, sa3d_map *out,
                                int *checked, sa3d_error *err) {
    sa3d_status s;
    char name[256], path[4096];
    *checked = 0;
    switch (pr->kind) {
    case KIND_FEATURES:
        s = import_features(pr, cat, id, flip, out, checked, err);   /* computed ones: sa3d_provider_get_many */
        if (!s && !*checked) sa3d_features_normalize(out->data, out->c, out->h * out->w);
        return s;
    case KIND_DEPTH:
        if (pr->p.kind == SA3D_SOURCE_IMPORT) {
            snprintf(name, sizeof name, "%s.depth.safetensors", id);
            if (!find_import(pr->import_dir, cat, name, path, sizeof path))
                return sa3d_fail(err, SA3D_ERR_IO, "%s: no depth file for %s/%s", pr->import_dir, cat, id);
            s = import_safetensors(path, "depth", 2, out, err);
        } else {
            s = compute_depth(pr, cat, id, out, err);
        }
        if (!s && flip) flip_rows(out->data, 1, out->h, out->w);
        return s;
    case KIND_MASK:
        if (pr->p.kind == SA3D_SOURCE_BBOX) {
            s = bbox_mask(pr, cat, id, out, err);
        } else if (pr->p.kind == SA3D_SOURCE_SEGMENTATION) {
            char *p = sa3d_dataset_mask_path(pr->ds, cat, id);
            if (!p) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s/%s: out of memory", cat, id);
            s = mask_from_png(p, out, err);
            free(p);
        } else {
            snprintf(name, sizeof name, "%s.png", id);
            if (!find_import(pr->import_dir, cat, name, path, sizeof path))
                return sa3d_fail(err, SA3D_ERR_IO, "%s: no mask file for %s/%s", pr->import_dir, cat, id);
            s = mask_from_png(path, out, err);
        }
        if (!s && flip) flip_rows(out->data, 1, out->h, out->w);
        return s;
    }
    return SA3D_ERR_ARG;
}

/* Where an item's cache entry lives, for a provider that caches. */
typedef struct cache_entry {
    int on;
    char dir[4096], path[4400], key[1024];
} cache_entry;

/* 1 and *out filled when the cache holds the map; else 0, *out zeroed and *ce ready for finish_map. */
static int cache_get(sa3d_provider *pr, const char *cat, const char *id, int flip, sa3d_map *out, cache_entry *ce) {
    memset(out, 0, sizeof *out);
    ce->on = pr->cache_dir && pr->p.kind == SA3D_SOURCE_COMPUTE;
    if (!ce->on) return 0;
    cache_paths(pr, cat, id, flip, ce->dir, sizeof ce->dir, ce->path, sizeof ce->path, ce->key, sizeof ce->key);
    if (!cache_load(pr, ce->path, ce->key, out)) return 0;
    pr->stats.cache_hits++;
    return 1;
}

/* A map just made (s == SA3D_OK) is checked for finite values (unless *checked), counted and cached. On failure
 * the map is freed and zeroed. */
static sa3d_status finish_map(sa3d_provider *pr, const char *cat, const char *id, sa3d_status s, int checked,
                              const cache_entry *ce, sa3d_map *out, sa3d_error *err) {
    long bad = !s && !checked ? sa3d_first_nonfinite(out->data, (size_t)out->c * out->h * out->w) : -1;
    if (!s && bad >= 0)
        s = sa3d_fail(err, SA3D_ERR_NUMERIC, "%s/%s: %s: non-finite value at index %ld", cat, id,
                      kind_names[pr->kind], bad);
    if (!s) {
#pragma omp atomic
        pr->stats.computed++;   /* import providers may be called from several threads (sa3d_provider_concurrent) */
        if (ce->on) s = cache_store(ce->dir, ce->path, ce->key, out, err);
    }
    if (s) {
        free(out->data);
        memset(out, 0, sizeof *out);
    }
    return s;
}

void sa3d_provider_set_hook(sa3d_provider *pr, sa3d_provider_hook fn, void *user) {
    pr->hook = fn;
    pr->hook_user = user;
}

/* After a computed map: the hook, which may cancel the rest of the call. */
static void computed(sa3d_provider *pr, const char *category, const char *id, int flip) {
    if (pr->hook && pr->hook(pr->hook_user, category, id, flip)) pr->cancelled = 1;
}

static sa3d_status cancelled_item(sa3d_error *err, const char *category, const char *id) {
    return sa3d_fail(err, SA3D_ERR_CANCELLED, "%s/%s: cancelled", category, id);
}

sa3d_status sa3d_provider_get(sa3d_provider *pr, const char *category, const char *id, int flip, sa3d_map *out,
                              sa3d_error *err) {
    if (pr->kind == KIND_FEATURES && pr->p.kind == SA3D_SOURCE_COMPUTE) {   /* DINOv2: METHOD.md 3.1 */
        sa3d_provider_item it = { .category = category, .id = id, .flip = flip };
        sa3d_status s = sa3d_provider_get_many(pr, &it, 1, err);
        *out = it.map;
        return s;
    }
    cache_entry ce;
    if (cache_get(pr, category, id, flip, out, &ce)) return SA3D_OK;
    int checked = 0;
    sa3d_status s = get_uncached(pr, category, id, flip, out, &checked, err);
    if (!s && pr->p.kind == SA3D_SOURCE_COMPUTE) computed(pr, category, id, flip);
    return finish_map(pr, category, id, s, checked, &ce, out, err);
}

/* ---- many images at once ---- */

/* The network input of one item of a chunk, prepared on any thread. */
typedef struct many_slot {
    cache_entry ce;
    int hit;                      /* served from the cache */
    int first;                    /* index of the chunk's first item of the same image (decoded there) */
    int size[2];                  /* the image record's size (record_size), read before the parallel decode */
    sa3d_status rec_s;            /* its failure */
    sa3d_error rec_err;
    float *px;                    /* [3][S][S] */
} many_slot;

/* Decodes image `i` of the chunk once and makes the pixels of every uncached item of that image. */
static void many_prepare(sa3d_provider *pr, sa3d_provider_item *it, many_slot *sl, int n, int i) {
    sa3d_image img = { 0 };
    int flipped = 0;
    sa3d_status s = SA3D_OK;
    sa3d_error e;
    for (int j = i; j < n; j++) {
        if (sl[j].hit || sl[j].first != i) continue;
        if (!img.rgb && (s = sl[i].rec_s) != SA3D_OK) { e = sl[i].rec_err; break; }
        if (!img.rgb && (s = load_image(pr, it[i].category, it[i].id, sl[i].size, &img, &e))) break;
        if (it[j].flip != flipped) {
            sa3d_image_flip_lr(&img);
            flipped = !flipped;
        }
        if ((it[j].status = sa3d_geoaware_preprocess(&img, pr->p.input_size, &sl[j].px, &it[j].err)))
            sa3d_error_prefix(&it[j].err, "%s/%s", it[j].category, it[j].id);
    }
    for (int j = i; s && j < n; j++)   /* the decoder's failure is every item's of this image */
        if (!sl[j].hit && sl[j].first == i) {
            it[j].status = s;
            it[j].err = e;
        }
    sa3d_image_free(&img);
}

/* Runs the network on the prepared items idx[0..nb) in one pass of ws (batch nb) into their maps. */
static sa3d_status many_run(sa3d_provider *pr, sa3d_workspace *ws, sa3d_provider_item *it, many_slot *sl,
                            const int *idx, int nb, sa3d_error *err) {
    size_t npx = (size_t)3 * pr->p.input_size * pr->p.input_size;
    float *in = sa3d_workspace_input(ws);
    if (!in) return sa3d_fail(err, SA3D_ERR_NOMEM, "features: out of memory for the network input");
    for (int b = 0; b < nb; b++) memcpy(in + b * npx, sl[idx[b]].px, npx * sizeof(float));
    sa3d_status s = sa3d_model_forward(pr->p.model, ws, NULL, err);
    if (!s) s = sa3d_workspace_download_output(ws, "feature_map", err);   /* the only view read */
    if (s) return s;
    const sa3d_tensor_view *f = sa3d_workspace_output(ws, "feature_map");
    size_t n = (size_t)f->shape[1] * f->shape[2] * f->shape[3];
    for (int b = 0; b < nb; b++) {
        sa3d_map *m = &it[idx[b]].map;
        if (!(m->data = malloc(n * sizeof(float))))
            return sa3d_fail(err, SA3D_ERR_NOMEM, "%s/%s: out of memory", it[idx[b]].category, it[idx[b]].id);
        memcpy(m->data, f->data + b * n, n * sizeof(float));
        m->c = (int)f->shape[1];
        m->h = (int)f->shape[2];
        m->w = (int)f->shape[3];
    }
    return SA3D_OK;
}

/* A chunk of a computing feature provider's items: cache lookups, then every image decoded and preprocessed in
 * parallel, then the network in item order, nb_max images a pass while that many are left, then one at a time.
 * DINOv2 runs on the GeoAware square of the image or of its mirror (METHOD.md 3.1): the mirror is an image of its
 * own to the network. */
static void many_features(sa3d_provider *pr, sa3d_provider_item *it, many_slot *sl, int n, int nb_max) {
    for (int i = 0; i < n; i++) {
        sl[i] = (many_slot){ .first = i };
        sl[i].hit = cache_get(pr, it[i].category, it[i].id, it[i].flip, &it[i].map, &sl[i].ce);
        for (int j = 0; j < i && sl[i].first == i; j++)
            if (!sl[j].hit && !strcmp(it[j].category, it[i].category) && !strcmp(it[j].id, it[i].id))
                sl[i].first = sl[j].first;
        if (!sl[i].hit && sl[i].first == i)
            sl[i].rec_s = record_size(pr, it[i].category, it[i].id, sl[i].size, &sl[i].rec_err);
    }
    #pragma omp parallel for schedule(dynamic, 1) if (n > 1)
    for (int i = 0; i < n; i++)
        if (!sl[i].hit && sl[i].first == i) many_prepare(pr, it, sl, n, i);
    int ready[MANY_CHUNK], n_ready = 0;
    for (int i = 0; i < n; i++)
        if (!sl[i].hit && !it[i].status) ready[n_ready++] = i;
    for (int r = 0; r < n_ready;) {
        int nb = n_ready - r >= nb_max ? nb_max : 1, S = pr->p.input_size;
        sa3d_workspace **ws = nb > 1 ? &pr->ws_batch : &pr->ws;
        sa3d_error e;
        sa3d_status s = pr->cancelled ? cancelled_item(&e, it[ready[r]].category, it[ready[r]].id) : SA3D_OK;
        if (!s && !*ws) s = sa3d_workspace_new_batch(ws, pr->p.model, S, S, nb, SA3D_WS_NO_DOWNLOAD, &e);
        if (!s) s = many_run(pr, *ws, it, sl, ready + r, nb, &e);
        for (int b = 0; b < nb; b++) {
            sa3d_provider_item *x = &it[ready[r + b]];
            if (s) {
                free(x->map.data);
                memset(&x->map, 0, sizeof x->map);
                x->status = s;
                x->err = e;
                continue;
            }
            sa3d_features_normalize(x->map.data, x->map.c, x->map.h * x->map.w);
            x->status = finish_map(pr, x->category, x->id, SA3D_OK, 0, &sl[ready[r + b]].ce, &x->map, &x->err);
            computed(pr, x->category, x->id, x->flip);
        }
        r += nb;
    }
    for (int i = 0; i < n; i++) sa3d_pixels_free(sl[i].px);
}

sa3d_status sa3d_provider_get_many(sa3d_provider *pr, sa3d_provider_item *items, int n, sa3d_error *err) {
    pr->cancelled = 0;
    for (int i = 0; i < n; i++) {
        memset(&items[i].map, 0, sizeof items[i].map);
        items[i].status = SA3D_OK;
    }
    if (pr->kind == KIND_FEATURES && pr->p.kind == SA3D_SOURCE_COMPUTE) {
        int nb = pr->p.batch > 0 ? pr->p.batch : strcmp(sa3d_model_device(pr->p.model), "cpu") ? 2 : 1;
        nb = nb < MANY_CHUNK ? nb : MANY_CHUNK;
        /* as many images ahead as there are threads to decode them, in whole passes */
        int threads = 1;
#ifdef _OPENMP
        threads = omp_get_max_threads();
#endif
        int chunk = (threads + nb - 1) / nb * nb;
        if (chunk > MANY_CHUNK) chunk = MANY_CHUNK / nb * nb;
        many_slot *sl = sa3d_malloc((size_t)chunk * sizeof *sl);
        for (int i = 0; !sl && i < n; i++)   /* every item says so: callers read the items' statuses */
            items[i].status = sa3d_fail(&items[i].err, SA3D_ERR_NOMEM, "%s/%s: features: out of memory",
                                        items[i].category, items[i].id);
        for (int c = 0; sl && c < n; c += chunk) many_features(pr, items + c, sl, n - c < chunk ? n - c : chunk, nb);
        sa3d_free(sl);
    } else {
        #pragma omp parallel for schedule(dynamic, 1) if (n > 1 && sa3d_provider_concurrent(pr))
        for (int i = 0; i < n; i++) {
            sa3d_provider_item *x = &items[i];
            x->status = pr->cancelled ? cancelled_item(&x->err, x->category, x->id)
                                      : sa3d_provider_get(pr, x->category, x->id, x->flip, &x->map, &x->err);
        }
    }
    for (int i = 0; i < n; i++)
        if (items[i].status) {
            if (err) *err = items[i].err;
            return items[i].status;
        }
    return SA3D_OK;
}
