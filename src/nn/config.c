/* config.json of Hugging Face Dinov2Model, Dinov2WithRegistersModel and DepthAnythingForDepthEstimation:
 * every field that changes the computation is read (Hugging Face's defaults apply when a key is absent), and
 * a value we do not implement is SA3D_ERR_UNSUPPORTED naming the key and value, never a silent wrong answer. */
#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "nn/model.h"

typedef struct cfg_ctx {
    const char *path;
    const char *scope;   /* "" or "backbone_config." */
    sa3d_error *err;
} cfg_ctx;

static sa3d_status bad(const cfg_ctx *c, const char *key, const char *what) {
    return sa3d_fail(c->err, SA3D_ERR_FORMAT, "%s: %s%s: %s", c->path, c->scope, key, what);
}

static sa3d_status get_int(const cfg_ctx *c, const cJSON *o, const char *key, int def, int lo, int hi, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) { *out = def; return SA3D_OK; }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble)) return bad(c, key, "expected an integer");
    if (v->valuedouble < lo || v->valuedouble > hi) {
        char msg[128];
        snprintf(msg, sizeof msg, "value %g outside [%d, %d]", v->valuedouble, lo, hi);
        return bad(c, key, msg);
    }
    *out = (int)v->valuedouble;
    return SA3D_OK;
}

static sa3d_status get_num(const cfg_ctx *c, const cJSON *o, const char *key, double def, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) { *out = def; return SA3D_OK; }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return bad(c, key, "expected a finite number");
    *out = v->valuedouble;
    return SA3D_OK;
}

static sa3d_status get_bool(const cfg_ctx *c, const cJSON *o, const char *key, int def, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) { *out = def; return SA3D_OK; }
    if (!cJSON_IsBool(v)) return bad(c, key, "expected true or false");
    *out = cJSON_IsTrue(v);
    return SA3D_OK;
}

static const char *get_str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static sa3d_status unsupported(const cfg_ctx *c, const char *key, const char *value) {
    return sa3d_fail(c->err, SA3D_ERR_UNSUPPORTED, "%s: %s%s: unsupported value %s", c->path, c->scope, key, value);
}

/* Dinov2Config / Dinov2WithRegistersConfig. with_registers: model_type "dinov2_with_registers". */
static sa3d_status parse_vit(const cfg_ctx *c, const cJSON *o, int with_registers, sa3d_vit_config *v) {
    sa3d_status s;
    double mlp_ratio, eps;
    memset(v, 0, sizeof *v);
    if ((s = get_int(c, o, "hidden_size", 768, 1, 65536, &v->hidden_size)) ||
        (s = get_int(c, o, "num_hidden_layers", 12, 1, 1024, &v->n_layers)) ||
        (s = get_int(c, o, "num_attention_heads", 12, 1, 4096, &v->n_heads)) ||
        /* the defaults of Dinov2Config (14) and Dinov2WithRegistersConfig (16) */
        (s = get_int(c, o, "patch_size", with_registers ? 16 : 14, 1, 1024, &v->patch_size)) ||
        (s = get_int(c, o, "image_size", 224, 1, 65536, &v->image_size)) ||
        (s = get_int(c, o, "num_channels", 3, 1, 64, &v->n_channels)) ||
        (s = get_int(c, o, "num_register_tokens", with_registers ? 4 : 0, 0, 1024, &v->n_registers)) ||
        (s = get_bool(c, o, "use_swiglu_ffn", 0, &v->use_swiglu)) ||
        (s = get_bool(c, o, "qkv_bias", 1, &v->qkv_bias)) ||
        (s = get_bool(c, o, "apply_layernorm", 1, &v->apply_layernorm)) ||
        (s = get_num(c, o, "mlp_ratio", 4.0, &mlp_ratio)) ||
        (s = get_num(c, o, "layer_norm_eps", 1e-6, &eps)))
        return s;
    if (!with_registers) v->n_registers = 0;
    /* every caller packs RGB pixels, [3][H][W] an image */
    if (v->n_channels != 3) {
        char val[64];
        snprintf(val, sizeof val, "%d (images are RGB: 3 channels)", v->n_channels);
        return unsupported(c, "num_channels", val);
    }
    if (v->hidden_size % v->n_heads != 0) {
        char val[64];
        snprintf(val, sizeof val, "%d (hidden_size %d is not a multiple)", v->n_heads, v->hidden_size);
        return unsupported(c, "num_attention_heads", val);
    }
    if (mlp_ratio <= 0.0 || mlp_ratio > 64.0) return bad(c, "mlp_ratio", "must be in (0, 64]");
    if (eps < (double)FLT_MIN || eps > 1.0) return bad(c, "layer_norm_eps", "must be in [1.2e-38, 1] (a positive float)");
    v->ln_eps = (float)eps;
    int hidden = (int)(v->hidden_size * mlp_ratio);
    v->mlp_hidden = v->use_swiglu ? ((int)(hidden * 2.0 / 3.0) + 7) / 8 * 8 : hidden;
    if (v->mlp_hidden < 1) return bad(c, "mlp_ratio", "gives an MLP narrower than one unit");
    v->pos_antialias = with_registers;
    v->pos_grid = v->image_size / v->patch_size;
    if (v->pos_grid < 1) return bad(c, "image_size", "smaller than patch_size: no position grid");
    const cJSON *act_item = cJSON_GetObjectItemCaseSensitive(o, "hidden_act");
    if (act_item && !cJSON_IsString(act_item)) return bad(c, "hidden_act", "expected a string");
    const char *act = get_str(o, "hidden_act");
    if (!act || !strcmp(act, "gelu")) v->act = SA3D_ACT_GELU;
    else if (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh") || !strcmp(act, "gelu_fast"))
        v->act = SA3D_ACT_GELU_TANH;
    else if (!strcmp(act, "relu")) v->act = SA3D_ACT_RELU;
    else if (!strcmp(act, "silu") || !strcmp(act, "swish")) v->act = SA3D_ACT_SILU;
    else return unsupported(c, "hidden_act", act);
    double drop;
    if ((s = get_num(c, o, "hidden_dropout_prob", 0.0, &drop))) return s;   /* inference: dropout is identity */
    return SA3D_OK;
}

/* Stage indices from "out_indices" and "out_features" ("stageN" -> N): either, or both when they name the same
 * stages; in increasing order without repeats, as Hugging Face's backbone checks require. */
static sa3d_status parse_out_indices(const cfg_ctx *c, const cJSON *o, int n_layers, int *idx, int *n) {
    const cJSON *ind = cJSON_GetObjectItemCaseSensitive(o, "out_indices");
    const cJSON *feat = cJSON_GetObjectItemCaseSensitive(o, "out_features");
    int from_feat[4], n_feat = 0;
    *n = 0;
    if (cJSON_IsArray(feat)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, feat) {
            if (n_feat >= 4) return unsupported(c, "out_features", "(more than 4 stages)");
            char *end = NULL;   /* strtol, not sscanf's %d: an out-of-range number is then defined */
            long i = cJSON_IsString(e) && !strncmp(e->valuestring, "stage", 5) ? strtol(e->valuestring + 5, &end, 10)
                                                                               : 0;
            if (!end || end == e->valuestring + 5 || *end || i < 1 || i > n_layers)
                return bad(c, "out_features", "expected names stage1..stageL");
            from_feat[n_feat++] = (int)i;
        }
    }
    if (cJSON_IsArray(ind)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, ind) {
            if (*n >= 4) return unsupported(c, "out_indices", "(more than 4 stages)");
            /* range before the cast: a double outside int is undefined behaviour to convert */
            if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < -n_layers - 1 ||
                e->valuedouble > n_layers)
                return bad(c, "out_indices", "expected integers in -(L+1)..L, L = num_hidden_layers");
            int i = (int)e->valuedouble;
            if (i < 0) i += n_layers + 1;
            if (i < 1) return bad(c, "out_indices", "index outside 1..num_hidden_layers");
            idx[(*n)++] = i;
        }
        if (cJSON_IsArray(feat) && (n_feat != *n || memcmp(from_feat, idx, (size_t)n_feat * sizeof(int)) != 0))
            return bad(c, "out_features", "names other stages than out_indices");
    } else {
        memcpy(idx, from_feat, (size_t)n_feat * sizeof(int));
        *n = n_feat;
    }
    for (int k = 1; k < *n; k++)
        if (idx[k] <= idx[k - 1])
            return bad(c, cJSON_IsArray(ind) ? "out_indices" : "out_features", "stages must increase, without repeats");
    return SA3D_OK;
}

static sa3d_status parse_depth_anything(const cfg_ctx *c, const cJSON *root, sa3d_vit_config *vit, sa3d_dpt_config *d) {
    sa3d_status s;
    const cJSON *bb = cJSON_GetObjectItemCaseSensitive(root, "backbone_config");
    if (!cJSON_IsObject(bb)) return bad(c, "backbone_config", "missing or not an object");
    const char *bb_type = get_str(bb, "model_type");
    if (!bb_type) return bad(c, "backbone_config.model_type", "missing (Depth Anything V2's backbone is \"dinov2\")");
    if (strcmp(bb_type, "dinov2") != 0) return unsupported(c, "backbone_config.model_type", bb_type);
    cfg_ctx cb = { c->path, "backbone_config.", c->err };
    if ((s = parse_vit(&cb, bb, 0, vit))) return s;
    memset(d, 0, sizeof *d);
    int n = 0;
    if ((s = parse_out_indices(&cb, bb, vit->n_layers, d->out_indices, &n))) return s;
    if (n != 4) return unsupported(&cb, "out_indices", "(Depth Anything needs exactly 4 stages)");
    d->n_stages = 4;
    int reshape;
    /* absent means true (Dinov2Config's default), which Depth Anything's neck cannot take */
    if ((s = get_bool(&cb, bb, "reshape_hidden_states", 1, &reshape))) return s;
    if (reshape) return unsupported(&cb, "reshape_hidden_states", "true");

    const cJSON *nh = cJSON_GetObjectItemCaseSensitive(root, "neck_hidden_sizes");
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(root, "reassemble_factors");
    if (!cJSON_IsArray(nh) || cJSON_GetArraySize(nh) != 4) return bad(c, "neck_hidden_sizes", "expected 4 integers");
    if (!cJSON_IsArray(rf) || cJSON_GetArraySize(rf) != 4) return bad(c, "reassemble_factors", "expected 4 numbers");
    for (int i = 0; i < 4; i++) {
        const cJSON *a = cJSON_GetArrayItem(nh, i), *f = cJSON_GetArrayItem(rf, i);
        if (!cJSON_IsNumber(a) || a->valuedouble < 1 || a->valuedouble > 65536 || a->valuedouble != floor(a->valuedouble))
            return bad(c, "neck_hidden_sizes", "expected positive integers");
        d->neck_hidden_sizes[i] = (int)a->valuedouble;
        if (!cJSON_IsNumber(f) || !(f->valuedouble > 0.0)) return bad(c, "reassemble_factors", "expected positive numbers");
        double fv = f->valuedouble;
        if (fv >= 1.0 && fv == floor(fv) && fv <= 64) { d->reassemble_num[i] = (int)fv; d->reassemble_den[i] = 1; }
        else if (fv < 1.0 && fv >= 1.0 / 64 && fabs(1.0 / fv - floor(1.0 / fv + 0.5)) < 1e-9) {
            d->reassemble_num[i] = 1;
            d->reassemble_den[i] = (int)floor(1.0 / fv + 0.5);
        }
        else { char val[32]; snprintf(val, sizeof val, "%g", fv); return unsupported(c, "reassemble_factors", val); }
    }
    int rhs, patch, head_in;
    double max_depth;
    if ((s = get_int(c, root, "fusion_hidden_size", 64, 1, 65536, &d->fusion_hidden_size)) ||
        (s = get_int(c, root, "head_hidden_size", 32, 1, 65536, &d->head_hidden_size)) ||
        (s = get_int(c, root, "reassemble_hidden_size", vit->hidden_size, 1, 65536, &rhs)) ||
        (s = get_int(c, root, "patch_size", vit->patch_size, 1, 1024, &patch)) ||
        (s = get_int(c, root, "head_in_index", -1, -4, 3, &head_in)) ||
        (s = get_num(c, root, "max_depth", 1.0, &max_depth)))
        return s;
    if (rhs != vit->hidden_size) return unsupported(c, "reassemble_hidden_size", "(must equal backbone hidden_size)");
    if (patch != vit->patch_size) return unsupported(c, "patch_size", "(must equal the backbone's)");
    if (head_in != -1 && head_in != 3) return unsupported(c, "head_in_index", "(only the last fusion output)");
    if (d->fusion_hidden_size < 2) return unsupported(c, "fusion_hidden_size", "(must be at least 2)");
    d->max_depth = (float)max_depth;
    const char *type = get_str(root, "depth_estimation_type");
    if (!type || !strcmp(type, "relative")) d->metric = 0;
    else if (!strcmp(type, "metric")) d->metric = 1;
    else return unsupported(c, "depth_estimation_type", type);
    return SA3D_OK;
}

sa3d_status sa3d_parse_model_config(const char *text, const char *path, sa3d_model_kind *kind, sa3d_vit_config *vit,
                                    sa3d_dpt_config *dpt, sa3d_error *err) {
    cfg_ctx c = { path, "", err };
    cJSON *root = cJSON_Parse(text);
    if (!root) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: not valid JSON (near byte %ld)", path,
                                cJSON_GetErrorPtr() ? (long)(cJSON_GetErrorPtr() - text) : -1L);
    sa3d_status s = SA3D_OK;
    memset(dpt, 0, sizeof *dpt);
    if (!cJSON_IsObject(root)) { s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: expected a JSON object", path); goto done; }
    const char *type = get_str(root, "model_type");
    if (!type) { s = bad(&c, "model_type", "missing or not a string"); goto done; }
    if (!strcmp(type, "dinov2") || !strcmp(type, "dinov2_with_registers")) {
        *kind = SA3D_MODEL_DINOV2;
        s = parse_vit(&c, root, !strcmp(type, "dinov2_with_registers"), vit);
    } else if (!strcmp(type, "depth_anything")) {
        *kind = SA3D_MODEL_DEPTH_ANYTHING;
        s = parse_depth_anything(&c, root, vit, dpt);
    } else {
        s = unsupported(&c, "model_type", type);
    }
done:
    cJSON_Delete(root);
    return s;
}
