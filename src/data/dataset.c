/* The dataset handle (data.h): opening a root, loading a split through the per-dataset loaders (spair.c,
 * pfpascal.c, ap10k.c), sorting pairs by id, per-category split image lists (METHOD.md 1.4), the cache of
 * image records, the strict/lenient rule for malformed records, and the directory and path helpers the
 * loaders share. Owns every pair and image record it hands out. */
#include <dirent.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "data/records.h"

sa3d_dataset_params sa3d_dataset_params_default(void) {
    sa3d_dataset_params p;
    memset(&p, 0, sizeof p);
    p.kind = SA3D_DATASET_SPAIR;
    return p;
}

/* ---- small helpers ---- */

int sa3d_ds_copy(char *dst, size_t cap, const char *s) {
    size_t n = strlen(s);
    if (cap == 0) return 0;
    if (n >= cap) {
        memcpy(dst, s, cap - 1);
        dst[cap - 1] = '\0';
        return 0;
    }
    memcpy(dst, s, n + 1);
    return 1;
}

int sa3d_ds_safe_name(const char *s, size_t cap) {
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n >= cap || strchr(s, '/') || strchr(s, '\\')) return 0;
    /* names are written into JSON lines (predictions, parts) as they are: no quote, no control byte */
    for (size_t i = 0; i < n; i++)
        if (s[i] == '"' || (unsigned char)s[i] < 0x20 || s[i] == 0x7f) return 0;
    return strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

char *sa3d_ds_path(const char *first, ...) {
    size_t total = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *)) total += strlen(s) + 1;
    va_end(ap);
    char *out = sa3d_malloc(total + 1);
    if (!out) return NULL;
    size_t k = 0;
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *)) {
        size_t n = strlen(s);
        if (k && out[k - 1] != '/') out[k++] = '/';
        memcpy(out + k, s, n);
        k += n;
    }
    va_end(ap);
    out[k] = '\0';
    return out;
}

static int cmp_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

void sa3d_ds_free_names(char **names, int n) {
    if (!names) return;
    for (int i = 0; i < n; i++) sa3d_free(names[i]);
    sa3d_free(names);
}

sa3d_status sa3d_ds_list_dir(const char *dir, const char *suffix, int dirs, char ***names, int *n,
                             sa3d_error *err) {
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return sa3d_fail(err, SA3D_ERR_IO, "%s: cannot open folder", dir);
    char **v = NULL;
    int cnt = 0, cap = 0;
    size_t ls = strlen(suffix);
    sa3d_status s = SA3D_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *nm = e->d_name;
        if (nm[0] == '.') continue;
        size_t ln = strlen(nm);
        if (ln < ls || strcmp(nm + ln - ls, suffix) != 0) continue;
        char *full = sa3d_ds_path(dir, nm, (const char *)NULL);
        if (!full) {
            s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory listing the folder", dir);
            break;
        }
        int is_dir = sa3d_dir_exists(full);
        sa3d_free(full);
        if (dirs ? !is_dir : is_dir) continue;
        if (cnt == cap) {
            int nc = cap ? cap * 2 : 64;
            char **nv = sa3d_realloc(v, (size_t)nc * sizeof *nv);
            if (!nv) {
                s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory listing the folder", dir);
                break;
            }
            v = nv;
            cap = nc;
        }
        if (!(v[cnt] = sa3d_strdup(nm))) {
            s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory listing the folder", dir);
            break;
        }
        cnt++;
    }
    closedir(d);
    if (s) {
        sa3d_ds_free_names(v, cnt);
        return s;
    }
    if (cnt > 1) qsort(v, (size_t)cnt, sizeof *v, cmp_name);
    *names = v;
    *n = cnt;
    return SA3D_OK;
}

int sa3d_ds_category_selected(const sa3d_dataset *ds, const char *category) {
    if (!ds->cats) return 1;
    for (int i = 0; i < ds->n_cats; i++)
        if (!strcmp(ds->cats[i], category)) return 1;
    return 0;
}

int sa3d_dataset_category_selected(const sa3d_dataset *ds, const char *category) {
    return sa3d_ds_category_selected(ds, category);
}

const char *sa3d_dataset_selected_category(const sa3d_dataset *ds, int i) {
    return ds && ds->cats && i >= 0 && i < ds->n_cats ? ds->cats[i] : NULL;
}

static int known_category(const sa3d_dataset *ds, const char *name);

int sa3d_dataset_category_known(const sa3d_dataset *ds, const char *category) {
    return known_category(ds, category) == 1;
}

sa3d_status sa3d_ds_bad_record(sa3d_dataset *ds, const sa3d_error *rec, sa3d_error *err) {
    if (ds->strict || rec->code == SA3D_ERR_NOMEM) {
        if (err) *err = *rec;
        return rec->code;
    }
    ds->load_skipped++;
    if (ds->warn) ds->warn(ds->warn_user, rec->msg);
    return SA3D_OK;
}

/* ---- image record cache: open addressing on FNV-1a of the key ---- */

static uint64_t hash_key(const char *s) { return sa3d_fnv1a(SA3D_FNV_OFFSET, s, strlen(s)); }

const ds_image *sa3d_ds_image_find(const sa3d_dataset *ds, const char *key) {
    if (!ds->cap_imgs) return NULL;
    size_t mask = ds->cap_imgs - 1;
    for (size_t i = (size_t)hash_key(key) & mask;; i = (i + 1) & mask) {
        if (!ds->imgs[i]) return NULL;
        if (!strcmp(ds->imgs[i]->key, key)) return ds->imgs[i];
    }
}

static void table_put(ds_image **tab, size_t cap, ds_image *img) {
    size_t mask = cap - 1;
    size_t i = (size_t)hash_key(img->key) & mask;
    while (tab[i]) i = (i + 1) & mask;
    tab[i] = img;
}

sa3d_status sa3d_ds_image_add(sa3d_dataset *ds, const ds_image *img, const ds_image **out, sa3d_error *err) {
    *out = NULL;
    if ((ds->n_imgs + 1) * 2 > ds->cap_imgs) {
        size_t nc = ds->cap_imgs ? ds->cap_imgs * 2 : 256;
        ds_image **tab = sa3d_calloc(nc, sizeof *tab);
        if (!tab) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory caching image records", ds->root);
        for (size_t i = 0; i < ds->cap_imgs; i++)
            if (ds->imgs[i]) table_put(tab, nc, ds->imgs[i]);
        sa3d_free(ds->imgs);
        ds->imgs = tab;
        ds->cap_imgs = nc;
    }
    ds_image *copy = sa3d_malloc(sizeof *copy);
    if (!copy) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory caching image records", ds->root);
    *copy = *img;
    table_put(ds->imgs, ds->cap_imgs, copy);
    ds->n_imgs++;
    *out = copy;
    return SA3D_OK;
}

/* ---- open / close ---- */

static const char *const pf_classes[20] = { "aeroplane",   "bicycle", "bird",  "boat",      "bottle",
                                            "bus",         "car",     "cat",   "chair",     "cow",
                                            "diningtable", "dog",     "horse", "motorbike", "person",
                                            "pottedplant", "sheep",   "sofa",  "train",     "tvmonitor" };

const char *sa3d_pfpascal_category(int class_index) {
    return class_index >= 1 && class_index <= 20 ? pf_classes[class_index - 1] : NULL;
}

/* 1 when name is one of the kind's categories: SPair's and PF-PASCAL's fixed lists; for AP-10K, whose species
 * are not a fixed list, a species or family of the dataset (a folder ImageAnnotation/<family>[/<name>]; the
 * cross-species pairs are named by family) or "all" (the cross-family pairs): a misspelt name would otherwise
 * select nothing, silently. -1 when out of memory. */
static int known_category(const sa3d_dataset *ds, const char *name) {
    if (ds->kind == SA3D_DATASET_SPAIR) return sa3d_spair_category_index(name) >= 0;
    if (ds->kind == SA3D_DATASET_PFPASCAL) {
        for (int i = 0; i < 20; i++)
            if (!strcmp(pf_classes[i], name)) return 1;
        return 0;
    }
    if (!sa3d_ds_safe_name(name, 32)) return 0;
    if (!strcmp(name, "all")) return 1;
    char *annos = sa3d_ds_path(ds->root, "ImageAnnotation", (const char *)NULL), **fam = NULL;
    int n_fam = 0, found = 0;
    sa3d_error e;
    if (!annos || sa3d_ds_list_dir(annos, "", 1, &fam, &n_fam, &e) != SA3D_OK) {
        sa3d_free(annos);
        return !annos || e.code == SA3D_ERR_NOMEM ? -1 : 0;
    }
    for (int i = 0; i < n_fam && !found; i++) {
        if (!strcmp(fam[i], name)) { found = 1; break; }
        char *dir = sa3d_ds_path(annos, fam[i], name, (const char *)NULL);
        found = dir ? sa3d_dir_exists(dir) : -1;
        sa3d_free(dir);
    }
    sa3d_ds_free_names(fam, n_fam);
    sa3d_free(annos);
    return found;
}

static sa3d_status parse_categories(sa3d_dataset *ds, const char *list, sa3d_error *err) {
    int n = 1;
    for (const char *c = list; *c; c++) n += *c == ',';
    ds->cats = sa3d_calloc((size_t)n, sizeof *ds->cats);
    if (!ds->cats) return sa3d_fail(err, SA3D_ERR_NOMEM, "categories: out of memory");
    const char *p = list;
    for (;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        while (len && (*p == ' ' || *p == '\t')) p++, len--;
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t')) len--;
        if (len) {
            char name[64];
            if (len >= sizeof ds->cats[0])
                return sa3d_fail(err, SA3D_ERR_ARG, "categories: '%.*s': unknown category", (int)len, p);
            memcpy(name, p, len);
            name[len] = '\0';
            int known = known_category(ds, name);
            if (known < 0) return sa3d_fail(err, SA3D_ERR_NOMEM, "categories: out of memory");
            if (!known) return sa3d_fail(err, SA3D_ERR_ARG, "categories: '%s': unknown category", name);
            if (!sa3d_ds_category_selected(ds, name)) memcpy(ds->cats[ds->n_cats++], name, len + 1);
        }
        if (!e) break;
        p = e + 1;
    }
    if (ds->n_cats == 0) return sa3d_fail(err, SA3D_ERR_ARG, "categories: '%s': no category named", list);
    return SA3D_OK;
}

sa3d_status sa3d_dataset_open(sa3d_dataset **out, const char *root, const sa3d_dataset_params *p,
                              sa3d_error *err) {
    if (!out) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_dataset_open: out is NULL");
    *out = NULL;
    sa3d_dataset_params def = sa3d_dataset_params_default();
    if (!p) p = &def;
    if (!root || !*root) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_dataset_open: no root given");
    if (p->kind != SA3D_DATASET_SPAIR && p->kind != SA3D_DATASET_PFPASCAL && p->kind != SA3D_DATASET_AP10K)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: unknown dataset kind %d", root, (int)p->kind);
    if (p->layout && strcmp(p->layout, "large") && strcmp(p->layout, "small"))
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: layout '%s': expected \"large\" or \"small\"", root,
                         p->layout);
    if (p->layout && p->kind != SA3D_DATASET_SPAIR)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: layout '%s': only SPair-71k has layouts", root, p->layout);
    if (p->strict != 0 && p->strict != 1)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: strict %d: expected 0 or 1", root, p->strict);
    if (!sa3d_dir_exists(root)) return sa3d_fail(err, SA3D_ERR_IO, "%s: no such dataset folder", root);

    sa3d_status s = SA3D_OK;
    char *probe = NULL;
    sa3d_dataset *ds = sa3d_calloc(1, sizeof *ds);
    if (!ds) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", root);
    ds->kind = p->kind;
    ds->strict = p->strict;
    ds->warn = p->warn;
    ds->warn_user = p->warn_user;
    if (!(ds->root = sa3d_strdup(root)) || (p->layout && !(ds->layout = sa3d_strdup(p->layout)))) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", root);
        goto fail;
    }
    if (ds->kind == SA3D_DATASET_PFPASCAL) { /* the PF-dataset-PASCAL folder itself, or its parent */
        if (!(probe = sa3d_ds_path(root, "JPEGImages", (const char *)NULL))) goto nomem;
        if (!sa3d_dir_exists(probe)) {
            char *inner = sa3d_ds_path(root, "PF-dataset-PASCAL", (const char *)NULL);
            if (!inner) goto nomem;
            if (sa3d_dir_exists(inner)) {
                sa3d_free(ds->root);
                ds->root = inner;
            } else {
                sa3d_free(inner);
            }
        }
        sa3d_free(probe);
        probe = NULL;
    }
    const char *folder = ds->kind == SA3D_DATASET_PFPASCAL ? "JPEGImages" : "ImageAnnotation";
    if (!(probe = sa3d_ds_path(ds->root, folder, (const char *)NULL))) goto nomem;
    if (!sa3d_dir_exists(probe)) {
        s = sa3d_fail(err, SA3D_ERR_IO, "%s: no %s folder; not a %s root", probe, folder,
                      ds->kind == SA3D_DATASET_SPAIR   ? "SPair-71k"
                      : ds->kind == SA3D_DATASET_AP10K ? "AP-10K"
                                                       : "PF-PASCAL");
        goto fail;
    }
    sa3d_free(probe);
    probe = NULL;
    if (p->categories && (s = parse_categories(ds, p->categories, err))) goto fail;
    *out = ds;
    return SA3D_OK;
nomem:
    s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", root);
fail:
    sa3d_free(probe);
    sa3d_dataset_close(ds);
    return s;
}

static void free_split(ds_split *sp) {
    sa3d_free(sp->pairs);
    for (int c = 0; c < sp->n_cats; c++) sa3d_free(sp->cats[c].ids);
    sa3d_free(sp->cats);
}

sa3d_dataset_kind sa3d_dataset_get_kind(const sa3d_dataset *ds) { return ds->kind; }

void sa3d_dataset_close(sa3d_dataset *ds) {
    if (!ds) return;
    for (int i = 0; i < ds->n_splits; i++) free_split(&ds->splits[i]);
    sa3d_free(ds->splits);
    for (size_t i = 0; i < ds->cap_imgs; i++) sa3d_free(ds->imgs[i]);
    sa3d_free(ds->imgs);
    sa3d_free(ds->cats);
    sa3d_free(ds->layout);
    sa3d_free(ds->root);
    sa3d_free(ds);
}

/* ---- splits ---- */

static const ds_split *find_split(const sa3d_dataset *ds, const char *split) {
    if (!ds || !split) return NULL;
    for (int i = 0; i < ds->n_splits; i++)
        if (!strcmp(ds->splits[i].name, split)) return &ds->splits[i];
    return NULL;
}

static int valid_split_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof((ds_split *)0)->name) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-'))
            return 0;
    }
    return 1;
}

static int cmp_pair(const void *a, const void *b) {
    return strcmp(((const sa3d_pair *)a)->id, ((const sa3d_pair *)b)->id);
}

int sa3d_dataset_load_split(sa3d_dataset *ds, const char *split, sa3d_error *err) {
    if (!ds || !split) {
        sa3d_fail(err, SA3D_ERR_ARG, "sa3d_dataset_load_split: %s is NULL", ds ? "split" : "dataset");
        return -1;
    }
    if (!valid_split_name(split)) {
        sa3d_fail(err, SA3D_ERR_ARG, "%s: split '%s': expected a name of letters, digits, '_' or '-'",
                  ds->root, split);
        return -1;
    }
    const ds_split *have = find_split(ds, split);
    if (have) return have->n;
    sa3d_pair *pairs = NULL;
    int n = 0;
    ds->load_skipped = 0;
    sa3d_status s = ds->kind == SA3D_DATASET_SPAIR      ? sa3d_spair_load_split(ds, split, &pairs, &n, err)
                    : ds->kind == SA3D_DATASET_PFPASCAL ? sa3d_pfpascal_load_split(ds, split, &pairs, &n, err)
                                                        : sa3d_ap10k_load_split(ds, split, &pairs, &n, err);
    if (s) return -1;
    if (n > 1) qsort(pairs, (size_t)n, sizeof *pairs, cmp_pair);
    int m = 0; /* a Layout list may name a pair twice: keep one */
    for (int i = 0; i < n; i++)
        if (m == 0 || strcmp(pairs[m - 1].id, pairs[i].id)) pairs[m++] = pairs[i];
    ds_split *v = sa3d_realloc(ds->splits, (size_t)(ds->n_splits + 1) * sizeof *v);
    if (!v) {
        sa3d_free(pairs);
        sa3d_fail(err, SA3D_ERR_NOMEM, "%s: split %s: out of memory", ds->root, split);
        return -1;
    }
    ds->splits = v;
    ds_split *sp = &v[ds->n_splits++];
    memset(sp, 0, sizeof *sp);
    memcpy(sp->name, split, strlen(split) + 1);
    sp->pairs = pairs;
    sp->n = m;
    sp->skipped = ds->load_skipped;
    return m;
}

int sa3d_dataset_n_pairs(const sa3d_dataset *ds, const char *split) {
    const ds_split *sp = find_split(ds, split);
    return sp ? sp->n : 0;
}

int sa3d_dataset_n_skipped(const sa3d_dataset *ds, const char *split) {
    const ds_split *sp = find_split(ds, split);
    return sp ? sp->skipped : 0;
}

const sa3d_pair *sa3d_dataset_pair(const sa3d_dataset *ds, const char *split, int i) {
    const ds_split *sp = find_split(ds, split);
    return sp && i >= 0 && i < sp->n ? &sp->pairs[i] : NULL;
}

const sa3d_pair *sa3d_dataset_find_pair(const sa3d_dataset *ds, const char *split, const char *pair_id) {
    const ds_split *sp = find_split(ds, split);
    if (!sp || !pair_id) return NULL;
    int lo = 0, hi = sp->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(sp->pairs[mid].id, pair_id);
        if (c == 0) return &sp->pairs[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

int sa3d_dataset_split_images(sa3d_dataset *ds, const char *split, const char *category,
                              const char *const **ids, sa3d_error *err) {
    if (ids) *ids = NULL;
    if (!ds || !split || !category || !ids) {
        sa3d_fail(err, SA3D_ERR_ARG, "sa3d_dataset_split_images: NULL argument");
        return -1;
    }
    if (sa3d_dataset_load_split(ds, split, err) < 0) return -1;
    ds_split *sp = (ds_split *)find_split(ds, split);
    for (int c = 0; c < sp->n_cats; c++)
        if (!strcmp(sp->cats[c].category, category)) {
            *ids = (const char *const *)sp->cats[c].ids;
            return sp->cats[c].n;
        }
    int n = 0;
    for (int i = 0; i < sp->n; i++) n += 2 * !strcmp(sp->pairs[i].category, category);
    if (n == 0) return 0;
    if (strlen(category) >= sizeof sp->cats[0].category) return 0; /* no pair can carry such a name */
    char **v = sa3d_malloc((size_t)n * sizeof *v);
    ds_cat_images *cv = v ? sa3d_realloc(sp->cats, (size_t)(sp->n_cats + 1) * sizeof *cv) : NULL;
    if (!cv) {
        sa3d_free(v);
        sa3d_fail(err, SA3D_ERR_NOMEM, "%s: split %s: out of memory listing images", ds->root, split);
        return -1;
    }
    sp->cats = cv;
    int k = 0;
    for (int i = 0; i < sp->n; i++)
        if (!strcmp(sp->pairs[i].category, category)) {
            v[k++] = sp->pairs[i].src;
            v[k++] = sp->pairs[i].trg;
        }
    qsort(v, (size_t)k, sizeof *v, cmp_name);
    int m = 0;
    for (int i = 0; i < k; i++)
        if (m == 0 || strcmp(v[m - 1], v[i])) v[m++] = v[i];
    ds_cat_images *ce = &cv[sp->n_cats++];
    memset(ce, 0, sizeof *ce);
    memcpy(ce->category, category, strlen(category) + 1);
    ce->ids = v;
    ce->n = m;
    *ids = (const char *const *)v;
    return m;
}

/* ---- image records ---- */

sa3d_status sa3d_dataset_image(sa3d_dataset *ds, const char *category, const char *id,
                               const sa3d_image_anno **out, sa3d_error *err) {
    if (out) *out = NULL;
    if (!ds || !out) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_dataset_image: NULL argument");
    if (!sa3d_ds_safe_name(category, 32) || !sa3d_ds_safe_name(id, 64))
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: image '%s/%s': bad category or id", ds->root,
                         category ? category : "(null)", id ? id : "(null)");
    char key[160];
    if (ds->kind == SA3D_DATASET_AP10K)
        snprintf(key, sizeof key, "%s", id);
    else
        snprintf(key, sizeof key, "%s/%s", category, id);
    const ds_image *hit = sa3d_ds_image_find(ds, key);
    if (!hit) {
        ds_image *img = sa3d_calloc(1, sizeof *img);
        if (!img) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", ds->root);
        sa3d_status s = ds->kind == SA3D_DATASET_SPAIR ? sa3d_spair_read_image(ds, category, id, img, err)
                        : ds->kind == SA3D_DATASET_PFPASCAL
                            ? sa3d_pfpascal_read_image(ds, category, id, img, err)
                            : sa3d_ap10k_read_image(ds, category, id, img, err);
        if (!s) {
            memcpy(img->key, key, sizeof key);
            s = sa3d_ds_image_add(ds, img, &hit, err);
        }
        sa3d_free(img);
        if (s) return s;
    }
    *out = &hit->anno;
    return SA3D_OK;
}

sa3d_status sa3d_dataset_pair_check_sizes(sa3d_dataset *ds, const sa3d_pair *pair, sa3d_error *err) {
    for (int t = 0; t < 2; t++) {
        const char *id = t ? pair->trg : pair->src;
        const int *size = t ? pair->trg_size : pair->src_size;
        const sa3d_image_anno *a;
        if (sa3d_dataset_image(ds, pair->category, id, &a, NULL) != SA3D_OK) continue;
        if (a->width != size[0] || a->height != size[1])
            return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s %d x %d, but the record of image %s/%s says %d x %d",
                             pair->id, t ? "trg_imsize" : "src_imsize", size[0], size[1], pair->category, id,
                             a->width, a->height);
    }
    return SA3D_OK;
}

/* malloc'ed (the public contract says free()) "<root>/<top>/<middle>/<id><ext>". */
static char *public_path(const char *root, const char *top, const char *middle, const char *id,
                         const char *ext) {
    size_t n = strlen(root) + strlen(top) + (middle ? strlen(middle) + 1 : 0) + strlen(id) + strlen(ext) + 4;
    char *p = malloc(n);
    if (!p) return NULL;
    if (middle && *middle)
        snprintf(p, n, "%s/%s/%s/%s%s", root, top, middle, id, ext);
    else
        snprintf(p, n, "%s/%s/%s%s", root, top, id, ext);
    return p;
}

static char *dataset_file(const sa3d_dataset *ds, const char *top, const char *category, const char *id,
                          const char *ext, int per_category) {
    if (!ds || !category || !id) return NULL;
    if (ds->kind == SA3D_DATASET_AP10K) {
        char dir[160] = "";
        const ds_image *hit = sa3d_ds_image_find(ds, id);
        if (hit)
            snprintf(dir, sizeof dir, "%s", hit->dir);
        else if (sa3d_ap10k_find_dir(ds->root, category, id, dir, sizeof dir, NULL))
            snprintf(dir, sizeof dir, "%s", category);
        return public_path(ds->root, top, dir, id, ext);
    }
    return public_path(ds->root, top, per_category ? category : NULL, id, ext);
}

char *sa3d_dataset_image_path(const sa3d_dataset *ds, const char *category, const char *id) {
    return dataset_file(ds, "JPEGImages", category, id, ".jpg", !ds || ds->kind != SA3D_DATASET_PFPASCAL);
}

char *sa3d_dataset_mask_path(const sa3d_dataset *ds, const char *category, const char *id) {
    return dataset_file(ds, "Segmentation", category, id, ".png", 1);
}

float sa3d_bbox_threshold_base(const float bbox[4]) {
    float w = bbox[2] - bbox[0], h = bbox[3] - bbox[1];
    return w > h ? w : h;
}
