/* Fuzz target: the networks' config.json reader (src/nn/config.c) on arbitrary bytes. A config that is accepted
 * must describe a network the loader can lay out: sizes positive and inside the documented bounds, the heads
 * dividing the width, an MLP and a position grid of at least one, Depth Anything's four stages inside the layers
 * and reassembly factors that are small whole numbers or their inverses. A rejected one must say why, naming the
 * file. Either way nothing may read past the text or leak (the sanitizers watch). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "nn/model.h"

static void check_vit(const sa3d_vit_config *v) {
    if (v->hidden_size < 1 || v->hidden_size > 65536 || v->n_layers < 1 || v->n_layers > 1024 || v->n_heads < 1 ||
        v->hidden_size % v->n_heads || v->patch_size < 1 || v->n_channels < 1 || v->n_channels > 64 ||
        v->n_registers < 0 || v->n_registers > 1024)
        abort();
    if (v->mlp_hidden < 1 || v->mlp_hidden > 64 * 65536 || v->pos_grid < 1 || v->pos_grid > 65536) abort();
    if (!(v->ln_eps > 0.0f && v->ln_eps <= 1.0f)) abort();
    if (v->act < SA3D_ACT_GELU || v->act > SA3D_ACT_SILU) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);   /* the reader takes text: a NUL-terminated copy */
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    sa3d_model_kind kind = 0;
    sa3d_vit_config vit;
    sa3d_dpt_config dpt;
    sa3d_error err = { 0 };
    if (sa3d_parse_model_config(text, "fuzz/config.json", &kind, &vit, &dpt, &err) == SA3D_OK) {
        check_vit(&vit);
        if (kind == SA3D_MODEL_DEPTH_ANYTHING) {
            if (dpt.n_stages != 4 || dpt.fusion_hidden_size < 2 || dpt.head_hidden_size < 1) abort();
            for (int i = 0; i < 4; i++) {
                if (dpt.out_indices[i] < 1 || dpt.out_indices[i] > vit.n_layers) abort();
                if (dpt.neck_hidden_sizes[i] < 1 || dpt.neck_hidden_sizes[i] > 65536) abort();
                int num = dpt.reassemble_num[i], den = dpt.reassemble_den[i];
                if (num < 1 || num > 64 || den < 1 || den > 64 || (num > 1 && den > 1)) abort();
            }
        } else if (kind != SA3D_MODEL_DINOV2) {
            abort();
        }
    } else if (!memchr(err.msg, '\0', sizeof err.msg) || !strstr(err.msg, "fuzz/config.json")) {
        abort();
    }
    free(text);
    return 0;
}
