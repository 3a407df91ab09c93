/* AP-10K in the SPair-like layout that GeoAware-SC's prepare_ap10k.ipynb writes ([GEO]
 * utils/utils_dataset.load_ap10k_data; SemAlign3D [CODE] raw_data_utils.load_normalized_img_anno_ap10k): pair
 * records that point to COCO-style image records under ImageAnnotation/<family>/<species>/, keypoints visible
 * when v > 0, bbox [x, y, w, h] stored as corners, threshold max(w, h) of the target box. data.h states the
 * layout and the rules. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "base/base.h"
#include "data/records.h"

#define AP10K_MAX_VALUES (3 * SA3D_MAX_KPS)

/* ".../ImageAnnotation/<family>/<species>/<id>.json" -> "<family>/<species>/<id>". */
static int reduce_path(const char *path, char *out, size_t cap) {
    const char *key = "ImageAnnotation/", *p = NULL;
    for (const char *q = strstr(path, key); q; q = strstr(q + 1, key)) p = q;
    if (!p) return 0;
    p += strlen(key);
    size_t n = strlen(p);
    if (n < 5 || strcmp(p + n - 5, ".json") != 0 || n - 5 >= cap) return 0;
    memcpy(out, p, n - 5);
    out[n - 5] = '\0';
    /* exactly three safe components */
    char tmp[256];
    if (!sa3d_ds_copy(tmp, sizeof tmp, out)) return 0;
    int parts = 0;
    for (char *s = tmp, *e; s; s = e ? e + 1 : NULL, parts++) {
        e = strchr(s, '/');
        if (e) *e = '\0';
        if (!sa3d_ds_safe_name(s, 64)) return 0;
    }
    return parts == 3;
}

sa3d_status sa3d_ap10k_parse_pair(const char *text, size_t len, const char *file, char *src, char *trg,
                                  size_t cap, sa3d_error *err) {
    src[0] = trg[0] = '\0';
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: not valid JSON", file);
    sa3d_status s = SA3D_OK;
    char path[512];
    static const char *const keys[2] = { "src_json_path", "trg_json_path" };
    char *outs[2] = { src, trg };
    if (!cJSON_IsObject(root)) s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: expected a JSON object", file);
    for (int k = 0; k < 2 && !s; k++) {
        if ((s = sa3d_json_string(root, keys[k], file, 1, path, sizeof path, err))) break;
        if (!reduce_path(path, outs[k], cap))
            s = sa3d_fail(err, SA3D_ERR_FORMAT,
                          "%s: %s: '%s' is not .../ImageAnnotation/<family>/<species>/<id>.json", file,
                          keys[k], path);
    }
    cJSON_Delete(root);
    if (s) src[0] = trg[0] = '\0';
    return s;
}

static sa3d_status parse_image(const cJSON *root, const char *file, const char *family, const char *species,
                               const char *id, sa3d_image_anno *out, sa3d_error *err) {
    sa3d_status s;
    char name[64], super[64];
    int size[2];
    double b[4], v[AP10K_MAX_VALUES];
    int nv = 0;
    if (!cJSON_IsObject(root)) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: expected a JSON object", file);
    if ((s = sa3d_json_int(root, "width", file, 1, 1, SA3D_MAX_IMAGE_SIDE, &size[0], err)) ||
        (s = sa3d_json_int(root, "height", file, 1, 1, SA3D_MAX_IMAGE_SIDE, &size[1], err)) ||
        (s = sa3d_json_numbers(cJSON_GetObjectItemCaseSensitive(root, "bbox"), "bbox", file, 4, 4, b, NULL,
                               err)))
        return s;
    if (!(b[2] >= 0.0 && b[3] >= 0.0))
        return sa3d_fail(err, SA3D_ERR_FORMAT,
                         "%s: bbox: [%g, %g, %g, %g] is not [x, y, w, h] with w, h >= 0", file, b[0], b[1],
                         b[2], b[3]);
    double corners[4] = { b[0], b[1], b[0] + b[2], b[1] + b[3] };
    if ((s = sa3d_check_bbox(corners, file, "bbox", err))) return s;
    if ((s = sa3d_json_numbers(cJSON_GetObjectItemCaseSensitive(root, "keypoints"), "keypoints", file, 0,
                               AP10K_MAX_VALUES, v, &nv, err)))
        return s;
    if (nv % 3)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: keypoints: %d numbers; expected [x, y, v] triples", file,
                         nv);
    if ((s = sa3d_json_string(root, "name", file, 0, name, sizeof name, err)) ||
        (s = sa3d_json_string(root, "supercategory", file, 0, super, sizeof super, err)))
        return s;
    if (species && name[0] && strcmp(name, species) != 0)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: name: '%s' but the record is in the folder '%s'", file,
                         name, species);
    if (family && super[0] && strcmp(super, family) != 0)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: supercategory: '%s' but the record is in the folder '%s'",
                         file, super, family);
    for (int k = 0; k < nv / 3; k++) {
        if (!(v[3 * k + 2] > 0.0)) continue;
        char field[32];
        snprintf(field, sizeof field, "keypoints[%d]", 3 * k);
        if ((s = sa3d_check_point(v[3 * k], v[3 * k + 1], size[0], size[1], file, field, err))) return s;
        out->kps[k][0] = (float)v[3 * k];
        out->kps[k][1] = (float)v[3 * k + 1];
        out->visible[k] = 1;
    }
    out->n_slots = nv / 3;
    out->width = size[0];
    out->height = size[1];
    out->bbox[0] = (float)b[0];
    out->bbox[1] = (float)b[1];
    out->bbox[2] = (float)(b[0] + b[2]);
    out->bbox[3] = (float)(b[1] + b[3]);
    out->truncated = out->occluded = out->difficult = out->azimuth_id = -1;
    sa3d_ds_copy(out->category, sizeof out->category, species ? species : name);
    sa3d_ds_copy(out->supercategory, sizeof out->supercategory, family ? family : super);
    if (id) {
        sa3d_ds_copy(out->id, sizeof out->id, id);
        snprintf(out->filename, sizeof out->filename, "%s.jpg", out->id);
    }
    return SA3D_OK;
}

sa3d_status sa3d_ap10k_parse_image(const char *text, size_t len, const char *file, const char *family,
                                   const char *species, const char *id, sa3d_image_anno *out,
                                   sa3d_error *err) {
    memset(out, 0, sizeof *out);
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: not valid JSON", file);
    sa3d_status s = parse_image(root, file, family, species, id, out, err);
    cJSON_Delete(root);
    if (s) memset(out, 0, sizeof *out);
    return s;
}

/* Reads ImageAnnotation/<rel>.json, rel = "<family>/<species>/<id>". */
static sa3d_status read_rel(const sa3d_dataset *ds, const char *rel, ds_image *out, sa3d_error *err) {
    char fam[64], spe[64], id[64], tmp[256];
    memset(out, 0, sizeof *out);
    if (!sa3d_ds_copy(tmp, sizeof tmp, rel)) return sa3d_fail(err, SA3D_ERR_ARG, "%s: path too long", rel);
    char *a = strchr(tmp, '/'), *b = a ? strchr(a + 1, '/') : NULL;
    if (!b) return sa3d_fail(err, SA3D_ERR_ARG, "%s: expected <family>/<species>/<id>", rel);
    *a = *b = '\0';
    if (!sa3d_ds_copy(fam, sizeof fam, tmp) || !sa3d_ds_copy(spe, sizeof spe, a + 1) ||
        !sa3d_ds_copy(id, sizeof id, b + 1))
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: name too long", rel);
    char name[80];
    snprintf(name, sizeof name, "%s.json", id);
    char *path = sa3d_ds_path(ds->root, "ImageAnnotation", fam, spe, name, (const char *)NULL);
    if (!path) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", ds->root);
    char *text = NULL;
    size_t len = 0;
    sa3d_status s = sa3d_read_file(path, SA3D_RECORD_MAX_BYTES, &text, &len, err);
    if (!s) s = sa3d_ap10k_parse_image(text, len, path, fam, spe, id, &out->anno, err);
    sa3d_free(text);
    sa3d_free(path);
    if (s) return s;
    snprintf(out->key, sizeof out->key, "%s", id);
    snprintf(out->dir, sizeof out->dir, "%s/%s", fam, spe);
    return SA3D_OK;
}

static int has_record(const char *root, const char *fam, const char *spe, const char *id, int *nomem) {
    char name[80];
    snprintf(name, sizeof name, "%s.json", id);
    char *p = sa3d_ds_path(root, "ImageAnnotation", fam, spe, name, (const char *)NULL);
    if (!p) {
        *nomem = 1;
        return 0;
    }
    int ok = sa3d_file_exists(p);
    sa3d_free(p);
    return ok;
}

sa3d_status sa3d_ap10k_find_dir(const char *root, const char *category, const char *id, char *dir, size_t cap,
                                sa3d_error *err) {
    dir[0] = '\0';
    char *top = sa3d_ds_path(root, "ImageAnnotation", (const char *)NULL);
    if (!top) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", root);
    char **fams = NULL;
    int nf = 0, nomem = 0, found = 0;
    sa3d_status s = sa3d_ds_list_dir(top, "", 1, &fams, &nf, err);
    for (int pass = 0; !s && pass < 3 && !found && !nomem; pass++) {
        for (int f = 0; f < nf && !found && !nomem; f++) {
            if (pass == 0) { /* category is the species */
                if (has_record(root, fams[f], category, id, &nomem)) {
                    snprintf(dir, cap, "%s/%s", fams[f], category);
                    found = 1;
                }
                continue;
            }
            if (pass == 1 && strcmp(fams[f], category) != 0) continue; /* category is the family */
            char *fd = sa3d_ds_path(top, fams[f], (const char *)NULL);
            char **spes = NULL;
            int ns = 0;
            if (!fd) {
                nomem = 1;
                break;
            }
            s = sa3d_ds_list_dir(fd, "", 1, &spes, &ns, err);
            sa3d_free(fd);
            for (int k = 0; !s && k < ns && !found && !nomem; k++)
                if (has_record(root, fams[f], spes[k], id, &nomem)) {
                    snprintf(dir, cap, "%s/%s", fams[f], spes[k]);
                    found = 1;
                }
            sa3d_ds_free_names(spes, ns);
            if (s) break;
        }
    }
    sa3d_ds_free_names(fams, nf);
    sa3d_free(top);
    if (s) return s;
    if (nomem) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", root);
    if (!found)
        return sa3d_fail(err, SA3D_ERR_IO, "%s/ImageAnnotation: no record %s.json for category '%s'", root,
                         id, category);
    return SA3D_OK;
}

sa3d_status sa3d_ap10k_read_image(const sa3d_dataset *ds, const char *category, const char *id, ds_image *out,
                                  sa3d_error *err) {
    char dir[160], rel[240];
    sa3d_status s = sa3d_ap10k_find_dir(ds->root, category, id, dir, sizeof dir, err);
    if (s) return s;
    snprintf(rel, sizeof rel, "%s/%s", dir, id);
    return read_rel(ds, rel, out, err);
}

/* Image record by "<family>/<species>/<id>" through the dataset cache. */
static sa3d_status cached_rel(sa3d_dataset *ds, const char *rel, const ds_image **out, sa3d_error *err) {
    const char *id = strrchr(rel, '/') + 1;
    const ds_image *hit = sa3d_ds_image_find(ds, id);
    if (!hit) {
        ds_image *img = sa3d_malloc(sizeof *img);
        if (!img) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", ds->root);
        sa3d_status s = read_rel(ds, rel, img, err);
        if (!s) s = sa3d_ds_image_add(ds, img, &hit, err);
        sa3d_free(img);
        if (s) return s;
    }
    *out = hit;
    return SA3D_OK;
}

static sa3d_status make_pair(sa3d_dataset *ds, const char *file, const char *pair_id, const char *category,
                             const char *src_rel, const char *trg_rel, sa3d_pair *p, sa3d_error *rec) {
    const ds_image *a, *b;
    sa3d_status s;
    memset(p, 0, sizeof *p);
    if ((s = cached_rel(ds, src_rel, &a, rec)) || (s = cached_rel(ds, trg_rel, &b, rec))) return s;
    snprintf(p->id, sizeof p->id, "%s", pair_id);
    snprintf(p->category, sizeof p->category, "%s", category);
    memcpy(p->src, a->anno.id, sizeof p->src);
    memcpy(p->trg, b->anno.id, sizeof p->trg);
    p->src_size[0] = a->anno.width;
    p->src_size[1] = a->anno.height;
    p->trg_size[0] = b->anno.width;
    p->trg_size[1] = b->anno.height;
    memcpy(p->src_bbox, a->anno.bbox, sizeof p->src_bbox);
    memcpy(p->trg_bbox, b->anno.bbox, sizeof p->trg_bbox);
    for (int k = 0; k < SA3D_MAX_KPS; k++)
        if (a->anno.visible[k] && b->anno.visible[k]) {
            p->kp_ids[p->n_kps] = k;
            memcpy(p->src_kps[p->n_kps], a->anno.kps[k], sizeof a->anno.kps[k]);
            memcpy(p->trg_kps[p->n_kps], b->anno.kps[k], sizeof b->anno.kps[k]);
            p->n_kps++;
        }
    p->viewpoint_variation = p->scale_variation = p->truncation = p->occlusion = p->mirror = -1;
    p->threshold_base = sa3d_bbox_threshold_base(p->trg_bbox);
    if (!(p->threshold_base > 0.0f))
        return sa3d_fail(rec, SA3D_ERR_FORMAT,
                         "%s: trg_json_path: the target box is empty; the PCK threshold would be 0", file);
    return SA3D_OK;
}

sa3d_status sa3d_ap10k_load_split(sa3d_dataset *ds, const char *split, sa3d_pair **pairs, int *n,
                                  sa3d_error *err) {
    *pairs = NULL;
    *n = 0;
    char *dir = sa3d_ds_path(ds->root, "PairAnnotation", split, (const char *)NULL);
    if (!dir) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", ds->root);
    char **names = NULL;
    int nn = 0, m = 0;
    sa3d_pair *v = NULL;
    sa3d_status s;
    if (!sa3d_dir_exists(dir)) {
        s = sa3d_fail(err, SA3D_ERR_IO, "%s: no such split folder", dir);
        goto done;
    }
    if ((s = sa3d_ds_list_dir(dir, ".json", 0, &names, &nn, err))) goto done;
    if (!(v = sa3d_malloc((size_t)(nn ? nn : 1) * sizeof *v))) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory for %d pairs", dir, nn);
        goto done;
    }
    for (int i = 0; i < nn; i++) {
        char id[160], src[200], trg[200];
        size_t ln = strlen(names[i]) - 5;
        sa3d_error rec = { 0 };
        char *file = sa3d_ds_path(dir, names[i], (const char *)NULL), *text = NULL;
        if (!file) {
            s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", dir);
            goto done;
        }
        const char *colon = NULL;
        if (ln < sizeof id) {
            memcpy(id, names[i], ln);
            id[ln] = '\0';
            colon = strrchr(id, ':');
        }
        size_t len = 0;
        if (!colon || !colon[1] || strlen(colon + 1) >= sizeof v->category)
            sa3d_fail(&rec, SA3D_ERR_FORMAT, "%s: file name: expected <src>-<trg>:<category>.json", file);
        else if (!sa3d_ds_category_selected(ds, colon + 1))
            rec.code = SA3D_ERR_CANCELLED; /* not selected: skipped without a word */
        else if (!sa3d_read_file(file, SA3D_RECORD_MAX_BYTES, &text, &len, &rec) &&
                 !sa3d_ap10k_parse_pair(text, len, file, src, trg, sizeof src, &rec))
            if (make_pair(ds, file, id, colon + 1, src, trg, &v[m], &rec) &&
                strncmp(rec.msg, file, strlen(file)))
                sa3d_error_prefix(&rec, "%s", file); /* an image record: say which pair needs it */
        sa3d_free(text);
        sa3d_free(file);
        if (rec.code == SA3D_OK)
            m++;
        else if (rec.code != SA3D_ERR_CANCELLED && (s = sa3d_ds_bad_record(ds, &rec, err)))
            goto done;
    }
    s = SA3D_OK;
done:
    sa3d_ds_free_names(names, nn);
    sa3d_free(dir);
    if (s) {
        sa3d_free(v);
        return s;
    }
    *pairs = v;
    *n = m;
    return SA3D_OK;
}
