/* sa3d_prior_build over a dataset: the training images of a category in a split, and the builder's per-image
 * source wired to the feature, depth and mask providers (providers.h). */
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "semalign3d/prior_build.h"

/* Feature maps asked of the provider at once: the builder reads the images in order (all of them, then all the
 * mirrors), so the next ones are known. A computing provider decodes them on every core and batches the network
 * on a GPU (sa3d_provider_get_many); an importing one reads the files on every core. 8 maps: 88 MB at 768 x 60 x 60. */
enum { FEATURE_WINDOW = 8 };

typedef struct source_ctx {
    const char *category;
    const sa3d_image_anno *const *images;
    int n_images;
    sa3d_provider *feat, *depth, *mask;
    int C, g;
    sa3d_provider_item win[FEATURE_WINDOW];   /* fetched ahead; a taken item's map is NULL */
    int win_first, win_n, win_flip;           /* images win_first .. + win_n, all with flip win_flip */
} source_ctx;

static void window_clear(source_ctx *c) {
    for (int k = 0; k < c->win_n; k++) free(c->win[k].map.data);
    c->win_n = 0;
}

/* A map of image id that is not c x h x w is freed and an error. */
static sa3d_status check_shape(const char *cat, const char *id, sa3d_map *m, int c, int h, int w, const char *what,
                               sa3d_error *err) {
    if (m->c == c && m->h == h && m->w == w) return SA3D_OK;
    free(m->data);
    m->data = NULL;
    return sa3d_fail(err, SA3D_ERR_FORMAT, "%s/%s: %s map is %d x %d x %d; expected %d x %d x %d", cat, id, what,
                     m->c, m->h, m->w, c, h, w);
}

static sa3d_status get_map(sa3d_provider *pr, const char *cat, const sa3d_image_anno *a, int flip, int c, int h,
                           int w, sa3d_map *m, const char *what, sa3d_error *err) {
    sa3d_status s = sa3d_provider_get(pr, cat, a->id, flip, m, err);
    return s ? s : check_shape(cat, a->id, m, c, h, w, what, err);
}

static sa3d_status src_maps(void *user, int i, float *disp, uint8_t *mask, sa3d_error *err) {
    source_ctx *c = user;
    const sa3d_image_anno *a = c->images[i];
    sa3d_map m;
    sa3d_status s = get_map(c->depth, c->category, a, 0, 1, a->height, a->width, &m, "depth", err);
    if (s) return s;
    memcpy(disp, m.data, (size_t)a->width * a->height * sizeof(float));
    free(m.data);
    if ((s = get_map(c->mask, c->category, a, 0, 1, a->height, a->width, &m, "mask", err))) return s;
    for (size_t q = 0; q < (size_t)a->width * a->height; q++) mask[q] = m.data[q] > 0.5f;
    free(m.data);
    return SA3D_OK;
}

/* Image i's (mirrored) feature map, from the window, which is refilled from image i on when it lacks it. The
 * maps and errors are those of sa3d_provider_get one image at a time. */
static sa3d_status src_features(void *user, int i, int flip, float *feat, sa3d_error *err) {
    source_ctx *c = user;
    int k = i - c->win_first;
    if (flip != c->win_flip || k < 0 || k >= c->win_n || (!c->win[k].map.data && !c->win[k].status)) {
        window_clear(c);
        c->win_first = i;
        c->win_flip = flip;
        c->win_n = c->n_images - i < FEATURE_WINDOW ? c->n_images - i : FEATURE_WINDOW;
        for (int j = 0; j < c->win_n; j++)
            c->win[j] = (sa3d_provider_item){ .category = c->category, .id = c->images[i + j]->id, .flip = flip };
        sa3d_provider_get_many(c->feat, c->win, c->win_n, NULL);   /* each item keeps its own status */
        k = 0;
    }
    sa3d_provider_item *it = &c->win[k];
    sa3d_map m = it->map;
    it->map.data = NULL;
    sa3d_status s = it->status;
    it->status = SA3D_OK;   /* taken: asking again refills */
    if (s) {
        if (err) *err = it->err;
        return s;
    }
    if ((s = check_shape(c->category, it->id, &m, c->C, c->g, c->g, "feature", err))) return s;
    memcpy(feat, m.data, (size_t)c->C * c->g * c->g * sizeof(float));
    free(m.data);
    return SA3D_OK;
}

sa3d_status sa3d_prior_build_dataset(sa3d_prior **out, sa3d_dataset *ds, const char *split, const char *category,
                                     int max_images, sa3d_provider *features, sa3d_provider *depth,
                                     sa3d_provider *masks, sa3d_prior_build_params *bp,
                                     sa3d_prior_build_report *report, sa3d_error *err) {
    *out = NULL;
    if (!bp) return sa3d_fail(err, SA3D_ERR_ARG, "prior build: no parameters");
    sa3d_prior_build_params chk = *bp;   /* before any image is read; C and g are set from the maps below */
    chk.feat_channels = chk.feat_grid = 1;
    if (sa3d_prior_build_params_check(&chk, err) != SA3D_OK) return SA3D_ERR_ARG;
    const char *const *ids = NULL;
    int n = sa3d_dataset_split_images(ds, split, category, &ids, err);
    if (n < 0) return err ? err->code : SA3D_ERR_ARG;
    if (max_images > 0 && n > max_images) n = max_images;
    if (n == 0) return sa3d_fail(err, SA3D_ERR_ARG, "%s: no pair of split %s names this category", category, split);
    if (n < 2) return sa3d_fail(err, SA3D_ERR_ARG, "%s: %d %s images; at least 2 are needed", category, n, split);
    int flip[SA3D_MAX_KPS];
    int n_slots = sa3d_flip_map(sa3d_dataset_get_kind(ds), category, flip);
    if (n_slots < 0) return sa3d_fail(err, SA3D_ERR_ARG, "%s: no flip map for this category", category);
    const sa3d_image_anno **imgs = calloc((size_t)n, sizeof *imgs);
    if (!imgs) return sa3d_fail(err, SA3D_ERR_NOMEM, "out of memory");
    sa3d_status s = SA3D_OK;
    for (int i = 0; i < n && !s; i++) s = sa3d_dataset_image(ds, category, ids[i], &imgs[i], err);
    sa3d_map m = { 0 };
    if (!s) s = sa3d_provider_get(features, category, imgs[0]->id, 0, &m, err);   /* C and g from the first */
    free(m.data);
    if (!s && m.h != m.w)
        s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s/%s: feature map is %d x %d; expected a square grid", category,
                      imgs[0]->id, m.h, m.w);
    if (!s) {
        bp->feat_channels = m.c;
        bp->feat_grid = m.h;
        source_ctx sc = { .category = category, .images = imgs, .n_images = n, .feat = features, .depth = depth,
                          .mask = masks, .C = m.c, .g = m.h };
        sa3d_prior_source src = { &sc, src_maps, src_features };
        s = sa3d_prior_build(out, category, n_slots, flip, imgs, n, &src, bp, report, err);
        window_clear(&sc);
    }
    free(imgs);
    return s;
}
