/* Providers: masks from segmentations and boxes (and their mirrors), imported features and depth, computed depth
 * with the cache (hit, stale key, corrupt entry), and bad sources rejected. Data: a synthetic SPair-layout set. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "base/base.h"
#include "semalign3d/nn.h"
#include "semalign3d/providers.h"
#include "semalign3d/safetensors.h"
#include "semalign3d/synth.h"
#include "t.h"

static char root[64];
static sa3d_dataset *ds;
static const char *cat, *id;

static void setup(void) {
    snprintf(root, sizeof root, "/tmp/sa3d_prov_XXXXXX");
    if (!mkdtemp(root)) { T_FAIL("mkdtemp"); return; }
    sa3d_error err;
    sa3d_synth_spair_params p = sa3d_synth_spair_params_default();
    p.n_categories = 1;
    p.images_per_category = 3;
    T_OK(sa3d_synth_spair_write(root, &p, &err), &err);
    sa3d_dataset_params dp = sa3d_dataset_params_default();
    T_OK(sa3d_dataset_open(&ds, root, &dp, &err), &err);
    T_CHECK(ds && sa3d_dataset_load_split(ds, "test", &err) > 0);
    const sa3d_pair *pr = ds ? sa3d_dataset_pair(ds, "test", 0) : NULL;
    T_CHECK(pr != NULL);
    cat = pr ? pr->category : "";
    id = pr ? pr->src : "";
}

static double sum(const sa3d_map *m) {
    double s = 0;
    for (size_t i = 0; i < (size_t)m->c * m->h * m->w; i++) s += (double)m->data[i];
    return s;
}

static void case_masks(void) {
    sa3d_error err;
    sa3d_provider *seg = NULL, *box = NULL;
    sa3d_provider_params p = sa3d_provider_params_default();
    p.kind = SA3D_SOURCE_SEGMENTATION;
    T_OK(sa3d_mask_provider_new(&seg, ds, &p, &err), &err);
    p.kind = SA3D_SOURCE_BBOX;
    T_OK(sa3d_mask_provider_new(&box, ds, &p, &err), &err);
    sa3d_map a, b, af, bf;
    const sa3d_image_anno *an;
    T_OK(sa3d_dataset_image(ds, cat, id, &an, &err), &err);
    T_OK(sa3d_provider_get(seg, cat, id, 0, &a, &err), &err);
    T_OK(sa3d_provider_get(box, cat, id, 0, &b, &err), &err);
    T_OK(sa3d_provider_get(seg, cat, id, 1, &af, &err), &err);
    T_OK(sa3d_provider_get(box, cat, id, 1, &bf, &err), &err);
    T_CHECK(a.w == an->width && a.h == an->height && b.w == a.w && b.h == a.h);
    double sa = sum(&a), sb = sum(&b);
    printf("  mask pixels: segmentation %.0f, bbox %.0f of %d\n", sa, sb, a.w * a.h);
    T_CHECK(sa > 0 && sb >= sa && sb < (double)a.w * a.h + 1);
    int inside = 1;   /* every object pixel lies in the box */
    for (int i = 0; i < a.w * a.h; i++) inside &= !(a.data[i] > 0.5f && b.data[i] < 0.5f);
    T_CHECK(inside);
    int mirrored = 1;
    for (int y = 0; y < a.h; y++)
        for (int x = 0; x < a.w; x++) mirrored &= a.data[y * a.w + x] == af.data[y * a.w + a.w - 1 - x];
    T_CHECK(mirrored && sum(&bf) == sb);
    free(a.data); free(b.data); free(af.data); free(bf.data);
    sa3d_provider_free(seg);
    sa3d_provider_free(box);
}

static void case_import_features(void) {
    sa3d_error err;
    sa3d_provider *fp = NULL;
    sa3d_provider_params p = sa3d_provider_params_default();
    char dir[256];
    snprintf(dir, sizeof dir, "%s/Features", root);
    p.import_dir = dir;
    T_OK(sa3d_feature_provider_new(&fp, ds, &p, &err), &err);
    sa3d_map f;
    T_OK(sa3d_provider_get(fp, cat, id, 1, &f, &err), &err);
    T_CHECK(f.h == 60 && f.w == 60 && f.c > 0);
    double n0 = 0;   /* cells are unit vectors */
    for (int c = 0; c < f.c; c++) n0 += (double)f.data[c * 3600] * (double)f.data[c * 3600];
    T_NEAR(n0, 1.0, 1e-5);
    free(f.data);
    T_STATUS(sa3d_provider_get(fp, cat, "no_such_image", 0, &f, &err), SA3D_ERR_IO, &err);
    T_CONTAINS(err.msg, "no_such_image");
    sa3d_provider_free(fp);
    /* the files record the size they were computed at (840): another run size is refused, naming both */
    p.input_size = 420;
    T_OK(sa3d_feature_provider_new(&fp, ds, &p, &err), &err);
    T_STATUS(sa3d_provider_get(fp, cat, id, 0, &f, &err), SA3D_ERR_ARG, &err);
    T_CONTAINS(err.msg, "computed at input size 840; this run reads features at 420");
    sa3d_provider_free(fp);
    p.input_size = 840;
    p.import_dir = NULL;
    T_STATUS(sa3d_feature_provider_new(&fp, ds, &p, &err), SA3D_ERR_ARG, &err);
    p.kind = SA3D_SOURCE_BBOX;
    T_STATUS(sa3d_depth_provider_new(&fp, ds, &p, &err), SA3D_ERR_ARG, &err);
    /* settings out of their domains, refused at creation, naming them */
    p = sa3d_provider_params_default();
    p.import_dir = dir;
    const char *want[4] = { "source kind 7", "batch 17", "input size 16800", "rescale_factor" };
    sa3d_dpt_preprocess_params bad_pre = sa3d_dpt_preprocess_params_default();
    bad_pre.rescale_factor = 0.0;
    for (int k = 0; k < 4; k++) {
        sa3d_provider_params q = p;
        if (k == 0) q.kind = (sa3d_source_kind)7;
        if (k == 1) q.batch = 17;
        if (k == 2) q.input_size = 16800;
        if (k == 3) q.depth_processor = &bad_pre;
        sa3d_status s = k == 3 ? sa3d_depth_provider_new(&fp, ds, &q, &err)
                               : sa3d_feature_provider_new(&fp, ds, &q, &err);
        T_CHECK(s == SA3D_ERR_ARG && fp == NULL);
        T_CONTAINS(err.msg, want[k]);
    }
}

/* Computed depth through the cache: first computed, then a hit (identical values), then a corrupt entry and an
 * entry written under another key are rejected and recomputed; the processor is part of the key. */
static void case_depth_cache(void) {
    char da[4096] = "";
    DIR *d = opendir(t_fixtures_root());
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, "depth_anything")) {
            char cfg[4200];
            snprintf(cfg, sizeof cfg, "%s/%s/config.json", t_fixtures_root(), e->d_name);
            if (sa3d_file_exists(cfg)) snprintf(da, sizeof da, "%s/%s", t_fixtures_root(), e->d_name);
        }
    if (d) closedir(d);
    if (!da[0]) { T_FAIL("no depth_anything fixture"); return; }
    sa3d_error err;
    sa3d_model *m = NULL;
    T_OK(sa3d_model_open(&m, da, NULL, &err), &err);
    if (!m) return;
    char cache[256];
    snprintf(cache, sizeof cache, "%s/cache", root);
    sa3d_provider_params p = sa3d_provider_params_default();
    p.kind = SA3D_SOURCE_COMPUTE;
    p.model = m;
    p.cache_dir = cache;
    sa3d_provider *dp = NULL;
    T_OK(sa3d_depth_provider_new(&dp, ds, &p, &err), &err);
    sa3d_map a, b, c, f;
    T_OK(sa3d_provider_get(dp, cat, id, 0, &a, &err), &err);
    T_OK(sa3d_provider_get(dp, cat, id, 0, &b, &err), &err);
    T_OK(sa3d_provider_get(dp, cat, id, 1, &f, &err), &err);
    sa3d_provider_stats st = sa3d_provider_get_stats(dp);
    T_CHECK(st.computed == 2 && st.cache_hits == 1 && st.rejected == 0);
    T_CHECK(a.w * a.h == b.w * b.h && memcmp(a.data, b.data, (size_t)a.w * a.h * 4) == 0);
    T_CHECK(f.data[0] == a.data[a.w - 1]);   /* the mirror is the flipped map */
    char path[512];
    snprintf(path, sizeof path, "%s/depth/%s/%s.safetensors", cache, cat, id);
    FILE *fh = fopen(path, "wb");
    if (fh) { fputs("corrupt", fh); fclose(fh); }
    T_OK(sa3d_provider_get(dp, cat, id, 0, &c, &err), &err);
    st = sa3d_provider_get_stats(dp);
    T_CHECK(st.rejected == 1 && st.computed == 3);
    T_CHECK(memcmp(a.data, c.data, (size_t)a.w * a.h * 4) == 0);
    sa3d_provider_free(dp);
    /* the entry's key names the model identity, so another model's provider would reject it */
    sa3d_safetensors *stf = NULL;
    T_OK(sa3d_st_open(&stf, path, &err), &err);
    T_CHECK(stf && sa3d_st_metadata(stf, "key") && strstr(sa3d_st_metadata(stf, "key"), sa3d_model_id(m)));
    sa3d_st_close(stf);
    /* the processor: the default given explicitly finds the entry; another (266 x 266, no multiple) rejects it,
     * computes another map at the same image size and keys its entry with the processor's text */
    sa3d_dpt_preprocess_params pre = sa3d_dpt_preprocess_params_default();
    p.depth_processor = &pre;
    sa3d_map g, h;
    T_OK(sa3d_depth_provider_new(&dp, ds, &p, &err), &err);
    T_OK(sa3d_provider_get(dp, cat, id, 0, &g, &err), &err);
    st = sa3d_provider_get_stats(dp);
    T_CHECK(st.cache_hits == 1 && st.computed == 0 && memcmp(a.data, g.data, (size_t)a.w * a.h * 4) == 0);
    sa3d_provider_free(dp);
    pre.target_h = pre.target_w = 266;
    pre.multiple = 1;
    T_OK(sa3d_depth_provider_new(&dp, ds, &p, &err), &err);
    pre.target_h = 518;   /* the provider keeps its own copy */
    T_OK(sa3d_provider_get(dp, cat, id, 0, &h, &err), &err);
    st = sa3d_provider_get_stats(dp);
    T_CHECK(st.cache_hits == 0 && st.rejected == 1 && st.computed == 1);
    T_CHECK(h.w == a.w && h.h == a.h && memcmp(a.data, h.data, (size_t)a.w * a.h * 4) != 0);
    sa3d_provider_free(dp);
    T_OK(sa3d_st_open(&stf, path, &err), &err);
    T_CHECK(stf && sa3d_st_metadata(stf, "key") && strstr(sa3d_st_metadata(stf, "key"), ";processor=size=266x266 "));
    sa3d_st_close(stf);
    free(g.data); free(h.data);
    free(a.data); free(b.data); free(c.data); free(f.data);
    sa3d_model_free(m);
}

typedef struct hook_count { int calls, cancel_at; } hook_count;

static int count_maps(void *user, const char *category, const char *image_id, int flip) {
    hook_count *h = user;
    (void)category; (void)image_id; (void)flip;
    return ++h->calls == h->cancel_at;
}

/* sa3d_provider_get_many on computed features gives every item what sa3d_provider_get gives it, bit for bit (the
 * CPU runs a batch's images one after another, test_nn 3.3), for `batch` 1, 2 and 4 (batches, then singles for
 * the rest): an image with and without flip (decoded once), a repeated item, a missing image failing alone and
 * named, and a second call served by the cache. For every DINOv2 fixture. */
static void case_features_many(void) {
    char **dirs = NULL;
    int nd = t_model_fixture_dirs(&dirs), n_dino = 0;
    T_CHECK(nd > 0);
    const char *const *ids = NULL;
    sa3d_error err;
    int n_ids = sa3d_dataset_split_images(ds, "test", cat, &ids, &err);
    T_CHECK(n_ids >= 3);
    for (int d = 0; d < nd && n_ids >= 3; d++) {
        sa3d_model *m = NULL;
        T_OK(sa3d_model_open(&m, dirs[d], NULL, &err), &err);
        if (!m || sa3d_model_get_kind(m) != SA3D_MODEL_DINOV2) {
            sa3d_model_free(m);
            continue;
        }
        n_dino++;
        enum { N = 8 };
        const char *want_id[N] = { ids[0], ids[0], ids[1], "no_such_image", ids[0], ids[2], ids[1], ids[2] };
        const int want_flip[N] = { 0, 1, 0, 0, 0, 1, 1, 0 };
        sa3d_provider_params p = sa3d_provider_params_default();
        p.kind = SA3D_SOURCE_COMPUTE;
        p.model = m;
        p.input_size = 70;
        sa3d_provider *one = NULL;
        T_OK(sa3d_feature_provider_new(&one, ds, &p, &err), &err);
        sa3d_map ref[N] = { { 0 } };
        for (int i = 0; i < N && one; i++)
            if (strcmp(want_id[i], "no_such_image")) T_OK(sa3d_provider_get(one, cat, want_id[i], want_flip[i], &ref[i],
                                                                            &err), &err);
        sa3d_provider_free(one);
        const int batches[] = { 1, 2, 4 };
        for (int bi = 0; bi < 3; bi++) {
            char cache[256];
            snprintf(cache, sizeof cache, "%s/cache_many_%d_%d", root, d, batches[bi]);
            p.batch = batches[bi];
            p.cache_dir = cache;
            sa3d_provider *many = NULL;
            T_OK(sa3d_feature_provider_new(&many, ds, &p, &err), &err);
            sa3d_provider_stats st[2];
            for (int call = 0; call < 2 && many; call++) {   /* computed, then from the cache */
                sa3d_provider_item it[N];
                for (int i = 0; i < N; i++)
                    it[i] = (sa3d_provider_item){ .category = cat, .id = want_id[i], .flip = want_flip[i] };
                T_STATUS(sa3d_provider_get_many(many, it, N, &err), SA3D_ERR_IO, &err);
                T_CONTAINS(err.msg, "no_such_image");
                int same = 1;
                for (int i = 0; i < N; i++) {
                    if (!strcmp(want_id[i], "no_such_image")) {
                        same &= it[i].status == SA3D_ERR_IO && !it[i].map.data;
                        continue;
                    }
                    same &= it[i].status == SA3D_OK && it[i].map.c == ref[i].c && it[i].map.h == ref[i].h &&
                            it[i].map.w == ref[i].w && it[i].map.data &&
                            !memcmp(it[i].map.data, ref[i].data, (size_t)ref[i].c * ref[i].h * ref[i].w * 4);
                    free(it[i].map.data);
                }
                if (!same) T_FAIL("%s: batch %d, call %d: an item differs from sa3d_provider_get", dirs[d],
                                  batches[bi], call);
                st[call] = sa3d_provider_get_stats(many);
            }
            /* 7 items found: computed on the first call (the repeated one again, or from the cache when a later
             * chunk of the call holds it), all 7 from the cache on the second */
            T_CHECK(st[0].computed + st[0].cache_hits == 7 && st[0].computed >= 6 && st[0].rejected == 0);
            T_CHECK(st[1].computed == st[0].computed && st[1].cache_hits == st[0].cache_hits + 7 &&
                    st[1].rejected == 0);
            sa3d_provider_free(many);
        }
        {   /* the hook sees each computed map and cancels the rest of the call; the next call runs whole */
            hook_count hc = { 0, 2 };
            p.batch = 1;
            p.cache_dir = NULL;
            sa3d_provider *fp = NULL;
            T_OK(sa3d_feature_provider_new(&fp, ds, &p, &err), &err);
            sa3d_provider_set_hook(fp, count_maps, &hc);
            for (int call = 0; call < 2 && fp; call++) {
                sa3d_provider_item it[4];
                const char *hid[4] = { ids[0], ids[1], ids[2], ids[0] };
                for (int i = 0; i < 4; i++) it[i] = (sa3d_provider_item){ .category = cat, .id = hid[i], .flip = i == 3 };
                sa3d_status s = sa3d_provider_get_many(fp, it, 4, &err);
                int ok = call == 0 ? s == SA3D_ERR_CANCELLED && hc.calls == 2 : s == SA3D_OK && hc.calls == 6;
                for (int i = 0; i < 4; i++) {
                    ok &= call == 1 || i < 2 ? it[i].status == SA3D_OK && it[i].map.data
                                             : it[i].status == SA3D_ERR_CANCELLED && !it[i].map.data;
                    free(it[i].map.data);
                }
                if (!ok) T_FAIL("%s: hook call %d: status %s, %d hook calls (%s)", dirs[d], call, sa3d_status_name(s),
                                hc.calls, err.msg);
            }
            sa3d_provider_free(fp);
        }
        /* the Nth counted allocation failing, N = 1, 2, ... until a call succeeds: every item then either has its
         * map or says out of memory, and nothing leaks (a fresh provider each time: the workspaces are made) */
        p.batch = 2;
        p.cache_dir = NULL;
        int clean = 1;
        for (long k = 1; k < 10000 && clean; k++) {
            sa3d_provider *fp = NULL;
            T_OK(sa3d_feature_provider_new(&fp, ds, &p, &err), &err);
            long base = sa3d_alloc_live_blocks();
            sa3d_provider_item it[3];
            for (int i = 0; i < 3; i++) it[i] = (sa3d_provider_item){ .category = cat, .id = want_id[i],
                                                                      .flip = want_flip[i] };
            sa3d_alloc_fail_after(k);
            sa3d_status s = sa3d_provider_get_many(fp, it, 3, &err);
            sa3d_alloc_fail_after(0);
            for (int i = 0; i < 3; i++) {
                clean &= it[i].status == SA3D_OK ? it[i].map.data != NULL
                                                 : it[i].status == SA3D_ERR_NOMEM && !it[i].map.data;
                free(it[i].map.data);
            }
            sa3d_provider_free(fp);
            clean &= sa3d_alloc_live_blocks() <= base;
            if (!clean) T_FAIL("%s: allocation %ld failing: an item without its map or a leak (%s)", dirs[d], k,
                               err.msg);
            if (clean && s == SA3D_OK) {
                printf("       %s: %ld injected allocation failures, each clean\n", dirs[d], k - 1);
                break;
            }
        }
        for (int i = 0; i < N; i++) free(ref[i].data);
        sa3d_model_free(m);
    }
    T_CHECK(n_dino > 0);
    for (int d = 0; d < nd; d++) free(dirs[d]);
    free(dirs);
}

static void cleanup(void) {
    sa3d_dataset_close(ds);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
}

int main(int argc, char **argv) {
    static const t_case cases[] = {
        { "1.1", "segmentation and bbox masks, mirrored", case_masks },
        { "1.2", "imported features are unit cells; missing files named", case_import_features },
        { "1.3", "computed depth cache: hit, corrupt entry redone, processor keyed", case_depth_cache },
        { "1.4", "computed features, many at once: equal to one by one", case_features_many },
    };
    setup();
    int rc = t_run(cases, (int)(sizeof cases / sizeof cases[0]), argc, argv);
    cleanup();
    return rc || t_failures ? 1 : 0;
}
