/* PF-PASCAL as GeoAware-SC reads it ([GEO] utils/utils_dataset.load_pascal_data, data/prepare_pfpascal.sh):
 * the weakalign/NCNet pair lists <split>_pairs_pf_pascal.csv (keypoints inline for val/test, from
 * Annotations/<category>/<id>.mat for trn), image sizes from the JPEG headers, threshold max(W, H) of the
 * target image (GeoAware's alpha x image size; SemAlign3D's bbox [0, 0, W, H]). Also the header-only image
 * size probe (JPEG SOF / PNG IHDR). data.h states the layout and the rules. */
#include <errno.h>
#include <sys/stat.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "data/records.h"

/* ---- image size from the header ---- */

sa3d_status sa3d_image_header_size(const char *path, int *width, int *height, sa3d_error *err) {
    *width = *height = 0;
    struct stat st;
    FILE *f = sa3d_open_regular(path, &st, err);
    if (!f) return SA3D_ERR_IO;
    unsigned char b[32];
    sa3d_status s = SA3D_OK;
    long w = 0, h = 0;
    if (fread(b, 1, 2, f) != 2) {
        s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: image header: truncated", path);
    } else if (b[0] == 0x89 && b[1] == 'P') { /* PNG: signature, then the IHDR chunk */
        if (fread(b + 2, 1, 22, f) != 22 || memcmp(b, "\x89PNG\r\n\x1a\n", 8) || memcmp(b + 12, "IHDR", 4))
            s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: PNG header: no IHDR chunk", path);
        w = (long)b[16] << 24 | (long)b[17] << 16 | (long)b[18] << 8 | b[19];
        h = (long)b[20] << 24 | (long)b[21] << 16 | (long)b[22] << 8 | b[23];
    } else if (b[0] == 0xff && b[1] == 0xd8) { /* JPEG: walk the marker segments to the frame header */
        for (;;) {
            int c = fgetc(f);
            if (c == EOF) {
                s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: JPEG header: no frame (SOF) marker", path);
                break;
            }
            if (c != 0xff) continue;
            int m;
            while ((m = fgetc(f)) == 0xff) {}
            if (m == EOF || m == 0xd9 || m == 0xda) {
                s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: JPEG header: no frame (SOF) marker", path);
                break;
            }
            if (m == 0x00 || m == 0x01 || (m >= 0xd0 && m <= 0xd8)) continue; /* stuffing, TEM, RSTn, SOI */
            if (fread(b, 1, 2, f) != 2) {
                s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: JPEG header: truncated", path);
                break;
            }
            long seg = (long)b[0] << 8 | b[1];
            if (seg < 2) {
                s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: JPEG header: bad segment length", path);
                break;
            }
            if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc) {
                if (seg < 7 || fread(b, 1, 5, f) != 5) {
                    s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: JPEG frame header: truncated", path);
                    break;
                }
                h = (long)b[1] << 8 | b[2];
                w = (long)b[3] << 8 | b[4];
                break;
            }
            if (fseek(f, seg - 2, SEEK_CUR) != 0) {
                s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: JPEG header: truncated", path);
                break;
            }
        }
    } else {
        s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: neither a JPEG nor a PNG file", path);
    }
    fclose(f);
    if (s) return s;
    if (w < 1 || h < 1 || w > SA3D_MAX_IMAGE_SIDE || h > SA3D_MAX_IMAGE_SIDE)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: image size %ld x %ld; expected sides in [1, %d]", path, w,
                         h, SA3D_MAX_IMAGE_SIDE);
    *width = (int)w;
    *height = (int)h;
    return SA3D_OK;
}

/* ---- CSV rows ---- */

#define PF_MAX_FIELDS 12
#define PF_MAX_FIELD 4096

/* Splits line[0..len) at commas; fields keep no surrounding quotes or spaces. Returns the field count, or -1
 * when there are too many or one is too long. */
static int split_fields(const char *line, size_t len, char fields[PF_MAX_FIELDS][PF_MAX_FIELD]) {
    int n = 0;
    size_t i = 0;
    for (;;) {
        if (n == PF_MAX_FIELDS) return -1;
        size_t a = i;
        int quoted = 0;
        while (a < len && (line[a] == ' ' || line[a] == '\t')) a++;
        size_t e = a;
        if (a < len && line[a] == '"') {
            quoted = 1;
            a++;
            e = a;
            while (e < len && line[e] != '"') e++;
            i = e < len ? e + 1 : e;
            while (i < len && line[i] != ',') i++;
        } else {
            while (e < len && line[e] != ',') e++;
            i = e;
        }
        size_t b = e;
        if (!quoted)
            while (b > a && (line[b - 1] == ' ' || line[b - 1] == '\t' || line[b - 1] == '\r')) b--;
        if (b - a >= PF_MAX_FIELD) return -1;
        memcpy(fields[n], line + a, b - a);
        fields[n][b - a] = '\0';
        n++;
        if (i >= len) return n;
        i++; /* the comma */
    }
}

/* "PF-dataset-PASCAL/JPEGImages/2009_002457.jpg" -> "2009_002457". */
static sa3d_status image_id(const char *path, const char *where, const char *field, char *id, size_t cap,
                            sa3d_error *err) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    if (n == 0 || n >= cap)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: '%s' is not an image path", where, field, path);
    memcpy(id, base, n);
    id[n] = '\0';
    if (!sa3d_ds_safe_name(id, cap))
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: '%s' is not an image path", where, field, path);
    return SA3D_OK;
}

/* "12.5;40;..." into v; returns the count or -1 (bad number, more than SA3D_MAX_KPS). */
static int parse_list(const char *s, double *v) {
    int n = 0;
    const char *p = s;
    while (*p == ' ') p++;
    if (!*p) return 0;
    for (;;) {
        char *end;
        errno = 0;
        double x = strtod(p, &end);
        if (end == p || errno == ERANGE || !isfinite(x) || n == SA3D_MAX_KPS) return -1;
        v[n++] = x;
        p = end;
        while (*p == ' ') p++;
        if (!*p) return n;
        if (*p != ';') return -1;
        p++;
        while (*p == ' ') p++;
        if (!*p) return n; /* a trailing ';' */
    }
}

sa3d_status sa3d_pfpascal_parse_row(const char *line, size_t len, const char *where, sa3d_pf_row *out,
                                    sa3d_error *err) {
    memset(out, 0, sizeof *out);
    out->n_kps = -1;
    char(*f)[PF_MAX_FIELD] = sa3d_malloc(sizeof(char[PF_MAX_FIELDS][PF_MAX_FIELD]));
    if (!f) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", where);
    sa3d_status s = SA3D_OK;
    int n = split_fields(line, len, f);
    if (n < 0) {
        s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: more than %d fields or a field longer than %d bytes", where,
                      PF_MAX_FIELDS, PF_MAX_FIELD - 1);
        goto done;
    }
    if (n < 3 || (n > 4 && n < 7)) {
        s = sa3d_fail(err, SA3D_ERR_FORMAT,
                      "%s: %d fields; expected source_image,target_image,class[,flip] or "
                      "source_image,target_image,class,XA,YA,XB,YB",
                      where, n);
        goto done;
    }
    if ((s = image_id(f[0], where, "source_image", out->src, sizeof out->src, err)) ||
        (s = image_id(f[1], where, "target_image", out->trg, sizeof out->trg, err)))
        goto done;
    char *end;
    double c = strtod(f[2], &end);
    if (end == f[2] || *end || !(c >= 1.0 && c <= 20.0) || c != floor(c)) {
        s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: class: '%s'; expected an integer in [1, 20]", where, f[2]);
        goto done;
    }
    out->class_index = (int)c;
    if (n >= 7) {
        static const char *const names[4] = { "XA", "YA", "XB", "YB" };
        double v[4][SA3D_MAX_KPS];
        int cnt[4];
        for (int k = 0; k < 4; k++)
            if ((cnt[k] = parse_list(f[3 + k], v[k])) < 0) {
                s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: expected at most %d numbers separated by ';'",
                              where, names[k], SA3D_MAX_KPS);
                goto done;
            }
        for (int k = 1; k < 4; k++)
            if (cnt[k] != cnt[0]) {
                s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: %d numbers but XA has %d", where, names[k],
                              cnt[k], cnt[0]);
                goto done;
            }
        out->n_kps = cnt[0];
        for (int i = 0; i < cnt[0]; i++) {
            out->src_kps[i][0] = v[0][i];
            out->src_kps[i][1] = v[1][i];
            out->trg_kps[i][0] = v[2][i];
            out->trg_kps[i][1] = v[3][i];
        }
    }
done:
    sa3d_free(f);
    if (s) {
        memset(out, 0, sizeof *out);
        out->n_kps = -1;
    }
    return s;
}

/* ---- records from files ---- */

static sa3d_status jpeg_size(const sa3d_dataset *ds, const char *id, int size[2], sa3d_error *err) {
    char name[80];
    snprintf(name, sizeof name, "%s.jpg", id);
    char *path = sa3d_ds_path(ds->root, "JPEGImages", name, (const char *)NULL);
    if (!path) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", ds->root);
    sa3d_status s = sa3d_image_header_size(path, &size[0], &size[1], err);
    sa3d_free(path);
    return s;
}

sa3d_status sa3d_pfpascal_read_image(const sa3d_dataset *ds, const char *category, const char *id,
                                     ds_image *out, sa3d_error *err) {
    sa3d_image_anno *a = &out->anno;
    memset(a, 0, sizeof *a);
    int size[2];
    sa3d_status s = jpeg_size(ds, id, size, err);
    if (s) return s;
    char name[80];
    snprintf(name, sizeof name, "%s.mat", id);
    char *path = sa3d_ds_path(ds->root, "Annotations", category, name, (const char *)NULL);
    if (!path) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", ds->root);
    char *buf = NULL;
    size_t len = 0;
    double *kps = NULL;
    int rows = 0, cols = 0;
    s = sa3d_read_file(path, SA3D_RECORD_MAX_BYTES, &buf, &len, err);
    if (!s)
        s = sa3d_mat_read_matrix((const unsigned char *)buf, len, path, "kps", 2 * SA3D_MAX_KPS, &kps, &rows,
                                 &cols, err);
    if (!s && rows > 0 && cols != 2)
        s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: kps: %d x %d; expected [n][2] (x, y) rows", path, rows,
                      cols);
    for (int r = 0; !s && r < rows; r++) {
        double x = kps[2 * r], y = kps[2 * r + 1];
        if (isnan(x) || isnan(y)) continue; /* not annotated */
        char field[32];
        snprintf(field, sizeof field, "kps[%d]", r);
        if ((s = sa3d_check_point(x, y, size[0], size[1], path, field, err))) break;
        a->kps[r][0] = (float)x;
        a->kps[r][1] = (float)y;
        a->visible[r] = 1;
    }
    sa3d_free(kps);
    sa3d_free(buf);
    sa3d_free(path);
    if (s) {
        memset(a, 0, sizeof *a);
        return s;
    }
    sa3d_ds_copy(a->id, sizeof a->id, id);
    snprintf(a->filename, sizeof a->filename, "%s.jpg", id);
    sa3d_ds_copy(a->category, sizeof a->category, category);
    a->width = size[0];
    a->height = size[1];
    a->bbox[2] = (float)size[0];
    a->bbox[3] = (float)size[1];
    a->n_slots = rows;
    a->truncated = a->occluded = a->difficult = a->azimuth_id = -1;
    return SA3D_OK;
}


/* One data row into a pair; problems go to rec (the record is then skipped or fails the load). */
static sa3d_status row_pair(sa3d_dataset *ds, const sa3d_pf_row *row, int index, const char *where,
                            sa3d_pair *p, sa3d_error *rec) {
    sa3d_status s;
    memset(p, 0, sizeof *p);
    const char *cat = sa3d_pfpascal_category(row->class_index);
    snprintf(p->category, sizeof p->category, "%s", cat);
    memcpy(p->src, row->src, sizeof p->src);
    memcpy(p->trg, row->trg, sizeof p->trg);
    snprintf(p->id, sizeof p->id, "%06d-%s-%s:%s", index, row->src, row->trg, cat);
    if ((s = jpeg_size(ds, row->src, p->src_size, rec)) || (s = jpeg_size(ds, row->trg, p->trg_size, rec)))
        return s;
    if (row->n_kps >= 0) {
        for (int i = 0; i < row->n_kps; i++) {
            char field[48];
            snprintf(field, sizeof field, "XA[%d], YA[%d]", i, i);
            if ((s = sa3d_check_point(row->src_kps[i][0], row->src_kps[i][1], p->src_size[0], p->src_size[1],
                                      where, field, rec)))
                return s;
            snprintf(field, sizeof field, "XB[%d], YB[%d]", i, i);
            if ((s = sa3d_check_point(row->trg_kps[i][0], row->trg_kps[i][1], p->trg_size[0], p->trg_size[1],
                                      where, field, rec)))
                return s;
            p->kp_ids[i] = i;
            for (int c = 0; c < 2; c++) {
                p->src_kps[i][c] = (float)row->src_kps[i][c];
                p->trg_kps[i][c] = (float)row->trg_kps[i][c];
            }
        }
        p->n_kps = row->n_kps;
    } else {
        const sa3d_image_anno *a, *b;
        if ((s = sa3d_dataset_image(ds, cat, row->src, &a, rec)) ||
            (s = sa3d_dataset_image(ds, cat, row->trg, &b, rec)))
            return s;
        for (int k = 0; k < SA3D_MAX_KPS; k++)
            if (a->visible[k] && b->visible[k]) {
                p->kp_ids[p->n_kps] = k;
                memcpy(p->src_kps[p->n_kps], a->kps[k], sizeof a->kps[k]);
                memcpy(p->trg_kps[p->n_kps], b->kps[k], sizeof b->kps[k]);
                p->n_kps++;
            }
    }
    p->src_bbox[2] = (float)p->src_size[0];
    p->src_bbox[3] = (float)p->src_size[1];
    p->trg_bbox[2] = (float)p->trg_size[0];
    p->trg_bbox[3] = (float)p->trg_size[1];
    p->viewpoint_variation = p->scale_variation = p->truncation = p->occlusion = p->mirror = -1;
    p->threshold_base = sa3d_bbox_threshold_base(p->trg_bbox);
    return SA3D_OK;
}

sa3d_status sa3d_pfpascal_load_split(sa3d_dataset *ds, const char *split, sa3d_pair **pairs, int *n,
                                     sa3d_error *err) {
    *pairs = NULL;
    *n = 0;
    char name[64];
    snprintf(name, sizeof name, "%s_pairs_pf_pascal.csv", split);
    char *csv = sa3d_ds_path(ds->root, name, (const char *)NULL);
    if (!csv) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", ds->root);
    if (!sa3d_file_exists(csv) && !strcmp(split, "trn")) { /* GeoAware names its training list "train" */
        char *alt = sa3d_ds_path(ds->root, "train_pairs_pf_pascal.csv", (const char *)NULL);
        if (!alt) {
            sa3d_free(csv);
            return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", ds->root);
        }
        if (sa3d_file_exists(alt)) {
            sa3d_free(csv);
            csv = alt;
        } else {
            sa3d_free(alt);
        }
    }
    char *text = NULL;
    size_t len = 0;
    sa3d_pair *v = NULL;
    sa3d_pf_row *row = NULL;
    int m = 0;
    sa3d_status s = sa3d_read_file(csv, SA3D_CSV_MAX_BYTES, &text, &len, err);
    if (s) goto done;
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
    if (!(v = sa3d_malloc(lines * sizeof *v)) || !(row = sa3d_malloc(sizeof *row))) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory for %zu rows", csv, lines);
        goto done;
    }
    int line_no = 0, index = 0;
    for (size_t i = 0; i < len;) {
        size_t e = i;
        while (e < len && text[e] != '\n') e++;
        const char *line = text + i;
        size_t ll = e - i;
        i = e + 1;
        line_no++;
        while (ll && (line[ll - 1] == '\r' || line[ll - 1] == ' ')) ll--;
        if (ll == 0) continue;
        if (line_no == 1) { /* the header row (pandas' default); a list without one starts with a .jpg path */
            size_t c = 0;
            while (c < ll && line[c] != ',') c++;
            if (!(c >= 4 && !memcmp(line + c - 4, ".jpg", 4))) continue;
        }
        char where[600];
        snprintf(where, sizeof where, "%s: line %d", csv, line_no);
        sa3d_error rec = { 0 };
        index++;
        if (!sa3d_pfpascal_parse_row(line, ll, where, row, &rec)) {
            if (!sa3d_ds_category_selected(ds, sa3d_pfpascal_category(row->class_index))) continue;
            if (row_pair(ds, row, index, where, &v[m], &rec) && strncmp(rec.msg, where, strlen(where)))
                sa3d_error_prefix(&rec, "%s", where); /* a JPEG or .mat file: say which row needs it */
        }
        if (rec.code == SA3D_OK)
            m++;
        else if ((s = sa3d_ds_bad_record(ds, &rec, err)))
            goto done;
    }
done:
    sa3d_free(row);
    sa3d_free(text);
    sa3d_free(csv);
    if (s) {
        sa3d_free(v);
        return s;
    }
    *pairs = v;
    *n = m;
    return SA3D_OK;
}
