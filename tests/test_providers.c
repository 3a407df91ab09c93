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
    p.import_dir = NULL;
    T_STATUS(sa3d_feature_provider_new(&fp, ds, &p, &err), SA3D_ERR_ARG, &err);
    p.kind = SA3D_SOURCE_BBOX;
    T_STATUS(sa3d_depth_provider_new(&fp, ds, &p, &err), SA3D_ERR_ARG, &err);
}

/* Computed depth through the cache: first computed, then a hit (identical values), then a corrupt entry and an
 * entry written under another key are rejected and recomputed. */
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
    free(a.data); free(b.data); free(c.data); free(f.data);
    sa3d_model_free(m);
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
        { "1.3", "computed depth through the cache: hit, corrupt entry recomputed", case_depth_cache },
    };
    setup();
    int rc = t_run(cases, (int)(sizeof cases / sizeof cases[0]), argc, argv);
    cleanup();
    return rc || t_failures ? 1 : 0;
}
