/* Fuzz target for the prior loader (STYLE.md section 10): any bytes must either be rejected with a status and a
 * message naming the input, or give a prior whose every value the aligner relies on is in range. The checks below
 * abort on an inconsistent prior, so the fuzzer reports it as a crash. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "prior/prior_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sa3d_prior *p = NULL;
    sa3d_error err;
    if (sa3d_prior_load_memory(&p, data, size, "fuzz", &err) != SA3D_OK) {
        if (p || !memchr(err.msg, '\0', sizeof err.msg) || strncmp(err.msg, "fuzz", 4) != 0) abort();
        return 0;
    }
    if (p->n_slots < 1 || p->n_used < 0 || p->n_used > p->n_slots || p->C < 1 || p->n_dense < 0) abort();
    for (int i = 0; i < p->n_used; i++) {
        int32_t s = p->used[i];
        if (s < 0 || s >= p->n_slots || !isfinite(p->anchors[3 * s])) abort();
    }
    for (size_t e = 0; e < 2 * p->n_pairs; e++)
        if (p->pair_e1[e] < 0 || p->pair_e1[e] >= p->n_slots || !(p->pair_ratio[e] > 0.0)) abort();
    for (size_t t = 0; t < p->n_tets; t++)
        if (p->tet_v[t] < 0 || p->tet_v[t] >= p->n_slots || !(p->tet_cz[2 * t] > 0.0)) abort();
    volatile double sink = 0.0;
    for (size_t i = 0; i < (size_t)p->n_dense * (size_t)p->n_slots; i++) sink += (double)p->rig[i];
    for (int d = 0; d < p->n_dense; d++)
        if (p->dense_anchor[d] < -1 || p->dense_anchor[d] >= p->n_slots) abort();
    for (int k = 0; k < p->n_slots && p->slot_flip; k++)
        if (p->slot_flip[k] < 0 || p->slot_flip[k] >= p->n_slots || p->slot_flip[p->slot_flip[k]] != k) abort();
    (void)sink;
    sa3d_prior_free(p);
    return 0;
}
