/* Relation sets of METHOD.md 4.2 in the authors' order (geom_combinations.generate_geometric_relation_
 * combinations, full=False): edges i < j (torch.combinations), edge pairs a < b over edge indices, and the
 * four cyclic triangle + vertex rotations of every 4-subset. Owns one array per field. */
#include <string.h>
#include "base/base.h"
#include "geom/geom.h"

void sa3d_geom_relations_free(sa3d_geom_relations *r) {
    if (!r) return;
    sa3d_free(r->edges);
    sa3d_free(r->pair_edges);
    sa3d_free(r->e1);
    sa3d_free(r->e2);
    sa3d_free(r->t);
    sa3d_free(r->v);
    memset(r, 0, sizeof *r);
}

sa3d_status sa3d_geom_relations_make(sa3d_geom_relations *out, int n, sa3d_error *err) {
    memset(out, 0, sizeof *out);
    if (n < 1 || n > SA3D_GEOM_MAX_KPTS)
        return sa3d_fail(err, SA3D_ERR_ARG, "geom relations: n = %d keypoints; expected 1..%d", n,
                         SA3D_GEOM_MAX_KPTS);
    size_t nn = (size_t)n;
    size_t n_edges = nn * (nn - 1) / 2;
    size_t n_pairs = n_edges * (n_edges - (n_edges > 0)) / 2;
    size_t n_tets = 4 * sa3d_tet_count(n);
    out->n = n;
    out->n_edges = n_edges;
    out->n_pairs = n_pairs;
    out->n_tets = n_tets;
    /* +1 keeps every block non-empty; sizes are small (n <= 64), no overflow. */
    out->edges = sa3d_malloc((2 * n_edges + 1) * sizeof(int32_t));
    out->pair_edges = sa3d_malloc((2 * n_pairs + 1) * sizeof(int32_t));
    out->e1 = sa3d_malloc((2 * n_pairs + 1) * sizeof(int32_t));
    out->e2 = sa3d_malloc((2 * n_pairs + 1) * sizeof(int32_t));
    out->t = sa3d_malloc((3 * n_tets + 1) * sizeof(int32_t));
    out->v = sa3d_malloc((n_tets + 1) * sizeof(int32_t));
    if (!out->edges || !out->pair_edges || !out->e1 || !out->e2 || !out->t || !out->v) {
        sa3d_geom_relations_free(out);
        return sa3d_fail(err, SA3D_ERR_NOMEM, "geom relations: out of memory for n = %d", n);
    }
    size_t k = 0;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            out->edges[2 * k] = i;
            out->edges[2 * k + 1] = j;
            k++;
        }
    k = 0;
    for (size_t a = 0; a < n_edges; a++)
        for (size_t b = a + 1; b < n_edges; b++) {
            out->pair_edges[2 * k] = (int32_t)a;
            out->pair_edges[2 * k + 1] = (int32_t)b;
            memcpy(out->e1 + 2 * k, out->edges + 2 * a, 2 * sizeof(int32_t));
            memcpy(out->e2 + 2 * k, out->edges + 2 * b, 2 * sizeof(int32_t));
            k++;
        }
    k = 0;
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++)
            for (int c = b + 1; c < n; c++)
                for (int d = c + 1; d < n; d++) {
                    int32_t q[4] = { a, b, c, d };
                    for (int s = 0; s < 4; s++) {   /* cyclic_shift_vector: rotation s starts at q[s] */
                        out->t[3 * k + 0] = q[s];
                        out->t[3 * k + 1] = q[(s + 1) & 3];
                        out->t[3 * k + 2] = q[(s + 2) & 3];
                        out->v[k] = q[(s + 3) & 3];
                        k++;
                    }
                }
    return SA3D_OK;
}
