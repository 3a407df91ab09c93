/* Fuzz target: the dataset record parsers on arbitrary bytes - a SPair pair record and image record (with and
 * without the names that come from the file path), an AP-10K image and pair record, each line as a PF-PASCAL
 * pair-list row, and the whole input as a PF-PASCAL .mat annotation (MAT level 5). A parse that succeeds must
 * give values inside the documented bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "data/records.h"

static void check_point(const float xy[2], int w, int h) {
    if (!(xy[0] >= 0.0f && xy[0] <= (float)w && xy[1] >= 0.0f && xy[1] <= (float)h)) abort();
}

static void check_pair(const sa3d_pair *p) {
    if (p->n_kps < 0 || p->n_kps > SA3D_MAX_KPS || !(p->threshold_base > 0.0f)) abort();
    if (p->src_size[0] < 1 || p->trg_size[1] < 1 || !memchr(p->id, 0, sizeof p->id)) abort();
    for (int i = 0; i < p->n_kps; i++) {
        if (p->kp_ids[i] < 0 || p->kp_ids[i] >= SA3D_MAX_KPS) abort();
        check_point(p->src_kps[i], p->src_size[0], p->src_size[1]);
        check_point(p->trg_kps[i], p->trg_size[0], p->trg_size[1]);
    }
}

static void check_image(const sa3d_image_anno *a) {
    if (a->n_slots < 0 || a->n_slots > SA3D_MAX_KPS || a->width < 1 || a->height < 1) abort();
    for (int k = 0; k < SA3D_MAX_KPS; k++)
        if (a->visible[k]) check_point(a->kps[k], a->width, a->height);
}

/* "<family>/<species>/<id>": three components, none empty, "." or "..". */
static void check_rel(const char *rel, size_t cap) {
    if (!memchr(rel, 0, cap)) abort();
    int parts = 0;
    for (const char *s = rel;; parts++) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) abort();
        if (!e) break;
        s = e + 1;
    }
    if (parts != 2) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    sa3d_pair p;
    sa3d_image_anno a;
    sa3d_error err;
    if (sa3d_spair_parse_pair(text, size, "fuzz", NULL, &p, &err) == SA3D_OK) check_pair(&p);
    if (sa3d_spair_parse_pair(text, size, "fuzz", "000001-2008_002719-2008_004100:aeroplane", &p, &err) ==
        SA3D_OK)
        check_pair(&p);
    if (sa3d_spair_parse_image(text, size, "fuzz", NULL, NULL, &a, &err) == SA3D_OK) check_image(&a);
    if (sa3d_spair_parse_image(text, size, "fuzz", "aeroplane", "2008_002719", &a, &err) == SA3D_OK)
        check_image(&a);
    if (sa3d_ap10k_parse_image(text, size, "fuzz", "Canidae", "dog", "000000000011", &a, &err) == SA3D_OK)
        check_image(&a);
    char src[200], trg[200];
    if (sa3d_ap10k_parse_pair(text, size, "fuzz", src, trg, sizeof src, &err) == SA3D_OK) {
        check_rel(src, sizeof src);
        check_rel(trg, sizeof trg);
    }
    sa3d_pf_row *row = malloc(sizeof *row);
    for (size_t i = 0; row && i < size;) {
        size_t e = i;
        while (e < size && data[e] != '\n') e++;
        if (sa3d_pfpascal_parse_row(text + i, e - i, "fuzz", row, &err) == SA3D_OK &&
            (row->n_kps < -1 || row->n_kps > SA3D_MAX_KPS || row->class_index < 1 || row->class_index > 20))
            abort();
        i = e + 1;
    }
    free(row);
    double *m = NULL;
    int rows, cols;
    if (sa3d_mat_read_matrix(data, size, "fuzz", "kps", 2 * SA3D_MAX_KPS, &m, &rows, &cols, &err) ==
        SA3D_OK) {
        if (rows < 0 || cols < 0 || (size_t)rows * (size_t)cols > 2 * SA3D_MAX_KPS) abort();
        volatile double sum = 0.0;
        for (int i = 0; i < rows * cols; i++) sum += m[i]; /* every value readable (ASan) */
        (void)sum;
        sa3d_free(m);
    }
    return 0;
}
