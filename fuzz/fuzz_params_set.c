/* Fuzz target: the aligner and matcher options by name (sa3d_sa3d_matcher_params_set, what --set NAME=VALUE and
 * eval's settings.txt go through) on arbitrary lines. A rejected line must say why and leave the options as they
 * were; after the accepted ones, the options written out by sa3d_sa3d_matcher_params_field and set again on fresh
 * defaults must give the same values (eval resumes only when that text is equal, so it must say all there is). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "semalign3d/align.h"

/* Every option of a and b reads the same. Their texts, not their bytes: a struct copy need not keep the padding, and
 * each value's text is exact (the shortest that reads back as the same double, %.9g for a float). */
static int same(const sa3d_sa3d_matcher_params *a, const sa3d_sa3d_matcher_params *b) {
    if (!memcmp(a, b, sizeof *a)) return 1;   /* equal bytes read the same: the texts only when they differ (49 x 2
                                               * snprintf under ASan held the target to ~500 inputs a second) */
    char va[64], vb[64];
    for (int i = 0; sa3d_sa3d_matcher_params_field(a, i, va, sizeof va); i++)
        if (!sa3d_sa3d_matcher_params_field(b, i, vb, sizeof vb) || strcmp(va, vb)) return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    sa3d_sa3d_matcher_params p = sa3d_sa3d_matcher_params_default(), before;
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        sa3d_error err = { 0 };
        before = p;
        if (sa3d_sa3d_matcher_params_set(&p, line, &err) != SA3D_OK &&
            (!err.msg[0] || !memchr(err.msg, '\0', sizeof err.msg) || !same(&before, &p)))
            abort();
    }
    sa3d_sa3d_matcher_params q = sa3d_sa3d_matcher_params_default();
    char value[64], assignment[160];
    const char *name;
    for (int i = 0; (name = sa3d_sa3d_matcher_params_field(&p, i, value, sizeof value)); i++) {
        sa3d_error err = { 0 };
        snprintf(assignment, sizeof assignment, "%s=%s", name, value);
        if (sa3d_sa3d_matcher_params_set(&q, assignment, &err) != SA3D_OK) abort();
    }
    if (!same(&p, &q)) abort();
    free(text);
    return 0;
}
