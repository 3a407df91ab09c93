/* safetensors files: reading (mmap or a borrowed buffer, whole header validated before use), Hugging Face
 * checkpoint folders (one file, or shards listed by model.safetensors.index.json) and atomic writing.
 * A sa3d_safetensors owns its mapping, its label and one block holding the tensor table, a name-sorted index,
 * the metadata and every string; the checks mirror huggingface/safetensors (Metadata::validate): byte ranges
 * sorted, contiguous, matching dtype x shape and covering the data section. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "base/base.h"
#include "semalign3d/safetensors.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian and is used in place: a big-endian port must swap bytes here"
#endif

#define ST_MAX_JSON_INT 9007199254740992.0   /* 2^53: larger integers are not exact in a JSON double */
#define ST_INDEX_NAME "model.safetensors.index.json"
#define ST_SINGLE_NAME "model.safetensors"

/* ------------------------------------------------------------------------------------------------------ */
/* dtypes */

static const struct { const char *name; size_t size; } dtype_info[] = {
    [SA3D_DTYPE_F32] = { "F32", 4 },  [SA3D_DTYPE_F16] = { "F16", 2 }, [SA3D_DTYPE_BF16] = { "BF16", 2 },
    [SA3D_DTYPE_F64] = { "F64", 8 },  [SA3D_DTYPE_I64] = { "I64", 8 }, [SA3D_DTYPE_I32] = { "I32", 4 },
    [SA3D_DTYPE_I16] = { "I16", 2 },  [SA3D_DTYPE_I8] = { "I8", 1 },   [SA3D_DTYPE_U8] = { "U8", 1 },
    [SA3D_DTYPE_BOOL] = { "BOOL", 1 },
};
#define N_DTYPES ((int)(sizeof dtype_info / sizeof dtype_info[0]))

/* Valid safetensors dtypes this library does not convert: SA3D_ERR_UNSUPPORTED, not a format error. */
static const char *const dtype_unsupported[] = {
    "U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64",
};

size_t sa3d_dtype_size(sa3d_dtype d) {
    return (int)d >= 0 && (int)d < N_DTYPES ? dtype_info[d].size : 0;
}

const char *sa3d_dtype_name(sa3d_dtype d) {
    return (int)d >= 0 && (int)d < N_DTYPES ? dtype_info[d].name : "invalid";
}

static int dtype_from_name(const char *s, sa3d_dtype *out) {
    for (int i = 0; i < N_DTYPES; i++) {
        if (strcmp(s, dtype_info[i].name) == 0) {
            *out = (sa3d_dtype)i;
            return 1;
        }
    }
    return 0;
}

static int dtype_is_unsupported(const char *s) {
    for (size_t i = 0; i < sizeof dtype_unsupported / sizeof dtype_unsupported[0]; i++)
        if (strcmp(s, dtype_unsupported[i]) == 0) return 1;
    return 0;
}

/* ------------------------------------------------------------------------------------------------------ */
/* the file handle */

typedef struct st_meta {
    const char *key;
    const char *value;
} st_meta;

struct sa3d_safetensors {
    char *label;                     /* path or caller label; every tensor's `file` points here */
    const uint8_t *buf;              /* whole file: mapping or borrowed buffer */
    size_t len;
    void *map;                       /* mmap base, NULL for a borrowed buffer */
    size_t map_len;
    int n;
    sa3d_st_tensor *t;               /* [n] in header order */
    const sa3d_st_tensor **by_name;  /* [n] sorted by strcmp of name */
    int n_meta;
    st_meta *meta;                   /* [n_meta] sorted by key */
    void *block;                     /* owns t, meta, by_name and all strings */
};

/* Byte range of one tensor, for the coverage check. */
typedef struct st_span {
    uint64_t begin, end;
    int i;
} st_span;

static int cmp_span(const void *a, const void *b) {
    const st_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->i - y->i;
}

static int cmp_tensor_ptr_name(const void *a, const void *b) {
    const sa3d_st_tensor *x = *(const sa3d_st_tensor *const *)a, *y = *(const sa3d_st_tensor *const *)b;
    return strcmp(x->name, y->name);
}

static int cmp_meta(const void *a, const void *b) {
    return strcmp(((const st_meta *)a)->key, ((const st_meta *)b)->key);
}

static uint64_t load_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static const char *json_type(const cJSON *j) {
    if (!j) return "nothing";
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsObject(j)) return "an object";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsNull(j)) return "null";
    return "an invalid value";
}

/* Describes a JSON value for "got ..." in a message: the number itself, or its type. */
static const char *json_describe(const cJSON *j, char *buf, size_t n) {
    if (cJSON_IsNumber(j)) {
        snprintf(buf, n, "%.17g", j->valuedouble);
        return buf;
    }
    return json_type(j);
}

/* A non-negative integer exactly representable in a JSON double (<= 2^53). */
static int json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double v = j->valuedouble;
    if (!(v >= 0.0 && v <= ST_MAX_JSON_INT)) return 0;   /* also rejects NaN */
    uint64_t u = (uint64_t)v;
    if ((double)u != v) return 0;
    *out = u;
    return 1;
}

static int is_json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Parses text[0, n) (text[n] must be '\0') as one JSON value followed only by whitespace. On failure returns
 * NULL and sets *bad_at to the byte offset of the problem and *trailing to whether the JSON itself parsed. */
static cJSON *parse_json_exact(const char *text, size_t n, size_t *bad_at, int *trailing) {
    const char *end = NULL;
    *trailing = 0;
    cJSON *root = cJSON_ParseWithLengthOpts(text, n, &end, 0);
    if (!root) {
        *bad_at = end && end >= text && end <= text + n ? (size_t)(end - text) : 0;
        return NULL;
    }
    const char *p = end && end >= text && end <= text + n ? end : text + n;
    while (p < text + n && is_json_space(*p)) p++;
    if (p != text + n) {
        *bad_at = (size_t)(p - text);
        *trailing = 1;
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

static void format_shape(char *buf, size_t n, const int64_t *shape, int ndim) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int d = 0; d < ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, "%s%" PRId64, d ? ", " : "", shape[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

/* Fails with "<path>: tensor '<name>': <message>", or "<path>: header: <message>" when name is NULL. */
static sa3d_status bad(sa3d_error *err, sa3d_status code, const char *path, const char *name, const char *fmt,
                       ...) SA3D_PRINTF(5, 6);
static sa3d_status bad(sa3d_error *err, sa3d_status code, const char *path, const char *name, const char *fmt,
                       ...) {
    if (!err) return code;
    char msg[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (name) return sa3d_fail(err, code, "%s: tensor '%.160s': %s", path, name, msg);
    return sa3d_fail(err, code, "%s: header: %s", path, msg);
}

#define DTYPES_EXPECTED "F32, F16, BF16, F64, I64, I32, I16, I8, U8 or BOOL"
#define F SA3D_ERR_FORMAT

/* Validates one header entry and fills t (name and file already set) and span. data_size: bytes after the
 * header. */
static sa3d_status parse_tensor(const char *path, const cJSON *e, size_t data_size, sa3d_st_tensor *t,
                                st_span *span, sa3d_error *err) {
    const char *name = t->name;
    char got[64];
    if (!cJSON_IsObject(e))
        return bad(err, F, path, name, "entry is not an object; expected an object, got %s", json_type(e));
    const cJSON *dt = NULL, *sh = NULL, *off = NULL;
    for (const cJSON *f = e->child; f; f = f->next) {
        if (!f->string) continue;
        const cJSON **slot = strcmp(f->string, "dtype") == 0 ? &dt
                           : strcmp(f->string, "shape") == 0 ? &sh
                           : strcmp(f->string, "data_offsets") == 0 ? &off : NULL;
        if (!slot) continue;   /* unknown fields are ignored, as the reference implementation does */
        if (*slot) return bad(err, F, path, name, "field '%s' appears twice; expected it once", f->string);
        *slot = f;
    }
    const char *missing = !dt ? "dtype" : !sh ? "shape" : !off ? "data_offsets" : NULL;
    if (missing)
        return bad(err, F, path, name, "missing field '%s'; expected dtype, shape and data_offsets", missing);

    /* dtype */
    if (!cJSON_IsString(dt) || !dt->valuestring)
        return bad(err, F, path, name, "dtype has the wrong type; expected a string, got %s", json_type(dt));
    if (!dtype_from_name(dt->valuestring, &t->dtype)) {
        if (dtype_is_unsupported(dt->valuestring))
            return bad(err, SA3D_ERR_UNSUPPORTED, path, name, "dtype %s is not supported; expected "
                       DTYPES_EXPECTED, dt->valuestring);
        return bad(err, F, path, name, "unknown dtype; expected " DTYPES_EXPECTED ", got '%.40s'",
                   dt->valuestring);
    }

    /* shape */
    if (!cJSON_IsArray(sh))
        return bad(err, F, path, name, "shape has the wrong type; expected an array, got %s", json_type(sh));
    int ndim = 0;
    size_t numel = 1;
    for (const cJSON *d = sh->child; d; d = d->next, ndim++) {
        if (ndim >= SA3D_ST_MAX_DIMS) {
            int count = ndim;
            for (; d; d = d->next) count++;
            return bad(err, F, path, name, "shape has too many dims; expected at most %d, got %d",
                       SA3D_ST_MAX_DIMS, count);
        }
        uint64_t v;
        if (!json_uint(d, &v))
            return bad(err, F, path, name, "shape[%d] is not a valid dim; expected an integer in [0, 2^53], "
                       "got %s", ndim, json_describe(d, got, sizeof got));
        t->shape[ndim] = (int64_t)v;
        if (v > SIZE_MAX || !sa3d_mul_ok(numel, (size_t)v, &numel))
            return bad(err, F, path, name, "shape element count overflows at shape[%d]; expected a product "
                       "below 2^%d", ndim, (int)(sizeof(size_t) * CHAR_BIT));
    }
    t->ndim = ndim;
    t->numel = numel;
    if (!sa3d_mul_ok(numel, sa3d_dtype_size(t->dtype), &t->nbytes))
        return bad(err, F, path, name, "byte size overflows; expected %zu x %zu below 2^%d", numel,
                   sa3d_dtype_size(t->dtype), (int)(sizeof(size_t) * CHAR_BIT));

    /* data_offsets */
    if (!cJSON_IsArray(off))
        return bad(err, F, path, name, "data_offsets has the wrong type; expected an array, got %s",
                   json_type(off));
    const cJSON *jb = off->child, *je = jb ? jb->next : NULL;
    if (!jb || !je || je->next) {
        int count = 0;
        for (const cJSON *c = off->child; c; c = c->next) count++;
        return bad(err, F, path, name, "data_offsets has the wrong length; expected 2 entries, got %d",
                   count);
    }
    uint64_t begin, end;
    if (!json_uint(jb, &begin))
        return bad(err, F, path, name, "data_offsets[0] is not a valid offset; expected an integer in "
                   "[0, 2^53], got %s", json_describe(jb, got, sizeof got));
    if (!json_uint(je, &end))
        return bad(err, F, path, name, "data_offsets[1] is not a valid offset; expected an integer in "
                   "[0, 2^53], got %s", json_describe(je, got, sizeof got));
    if (begin > end)
        return bad(err, F, path, name, "data_offsets [%" PRIu64 ", %" PRIu64 ") are reversed; expected "
                   "begin <= end, got begin %" PRIu64 " > end %" PRIu64, begin, end, begin, end);
    if (end > (uint64_t)data_size)
        return bad(err, F, path, name, "data_offsets [%" PRIu64 ", %" PRIu64 ") outside the %zu-byte data "
                   "section; expected end <= %zu, got %" PRIu64, begin, end, data_size, data_size, end);
    if (end - begin != (uint64_t)t->nbytes) {
        char shp[192];
        format_shape(shp, sizeof shp, t->shape, t->ndim);
        return bad(err, F, path, name, "byte range does not match dtype and shape; expected %zu bytes "
                   "(%s %s), got %" PRIu64 " (data_offsets [%" PRIu64 ", %" PRIu64 "))", t->nbytes,
                   dt->valuestring, shp, end - begin, begin, end);
    }
    span->begin = begin;
    span->end = end;
    return SA3D_OK;
}

static int add_ok(size_t a, size_t b, size_t *out) {
    if (a > SIZE_MAX - b) return 0;
    *out = a + b;
    return 1;
}

/* Validates st->buf[0, st->len) and builds the tables. On failure st keeps no tables (block is NULL). */
static sa3d_status st_parse(sa3d_safetensors *st, sa3d_error *err) {
    const char *path = st->label;
    sa3d_status s = SA3D_OK;
    char *hdr = NULL;
    cJSON *root = NULL;
    st_span *spans = NULL;

    if (st->len < 8) {
        if (st->len == 0)
            return bad(err, F, path, NULL, "file is empty; expected at least 8 bytes (the header length), "
                       "got 0");
        return bad(err, F, path, NULL, "file too short for the header length; expected at least 8 bytes, "
                   "got %zu", st->len);
    }
    uint64_t hlen = load_le64(st->buf);
    if (hlen > SA3D_ST_MAX_HEADER)
        return bad(err, F, path, NULL, "header length is too large; expected at most %u bytes, got %" PRIu64
                   "%s", SA3D_ST_MAX_HEADER, hlen,
                   st->len > 8 && st->buf[8] != '{' ? " (not a safetensors file?)" : "");
    if (hlen > (uint64_t)(st->len - 8))
        return bad(err, F, path, NULL, "header length runs past the end of the file; expected at most %zu "
                   "bytes, got %" PRIu64, st->len - 8, hlen);
    size_t hn = (size_t)hlen;
    size_t data_size = st->len - 8 - hn;
    const uint8_t *data = st->buf + 8 + hn;

    /* A NUL-terminated private copy: cJSON then never reads past the header, whatever follows it. */
    hdr = sa3d_malloc(hn + 1);
    if (!hdr) {
        s = bad(err, SA3D_ERR_NOMEM, path, NULL, "cannot allocate %zu bytes", hn + 1);
        goto fail;
    }
    memcpy(hdr, st->buf + 8, hn);
    hdr[hn] = '\0';
    size_t bad_at = 0;
    int trailing = 0;
    root = parse_json_exact(hdr, hn, &bad_at, &trailing);
    if (!root) {
        s = bad(err, F, path, NULL, "%s at byte %zu of the %zu-byte header",
                trailing ? "unexpected characters after the JSON object" : "not valid JSON", bad_at, hn);
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        s = bad(err, F, path, NULL, "not a JSON object; expected an object, got %s", json_type(root));
        goto fail;
    }

    /* Pass 1: count tensors and metadata, size the string pool, check the metadata's types. */
    size_t n = 0, n_meta = 0, pool = 0;
    const cJSON *meta = NULL;
    for (const cJSON *c = root->child; c; c = c->next) {
        if (!c->string) continue;
        if (strcmp(c->string, "__metadata__") != 0) {
            n++;
            if (!add_ok(pool, strlen(c->string) + 1, &pool)) goto overflow;
            continue;
        }
        if (meta) {
            s = bad(err, F, path, NULL, "__metadata__ appears twice; expected it at most once");
            goto fail;
        }
        meta = c;
        if (!cJSON_IsObject(c)) {
            s = bad(err, F, path, NULL, "__metadata__ has the wrong type; expected an object, got %s",
                    json_type(c));
            goto fail;
        }
        for (const cJSON *m = c->child; m; m = m->next) {
            if (!m->string) continue;
            if (!cJSON_IsString(m) || !m->valuestring) {
                s = bad(err, F, path, NULL, "__metadata__.%.160s has the wrong type; expected a string, "
                        "got %s", m->string, json_type(m));
                goto fail;
            }
            n_meta++;
            if (!add_ok(pool, strlen(m->string) + 1, &pool) ||
                !add_ok(pool, strlen(m->valuestring) + 1, &pool)) goto overflow;
        }
    }
    if (n > INT_MAX || n_meta > INT_MAX) goto overflow;

    /* One block: tensors, metadata, the name index, then the strings. */
    size_t sz_t, sz_m, sz_i, total;
    if (!sa3d_mul_ok(n, sizeof(sa3d_st_tensor), &sz_t) || !sa3d_mul_ok(n_meta, sizeof(st_meta), &sz_m) ||
        !sa3d_mul_ok(n, sizeof(const sa3d_st_tensor *), &sz_i) || !add_ok(sz_t, sz_m, &total) ||
        !add_ok(total, sz_i, &total) || !add_ok(total, pool, &total)) goto overflow;
    st->block = sa3d_malloc(total);
    spans = sa3d_malloc(n ? n * sizeof(st_span) : 1);   /* n * sizeof(st_span) <= sz_t: no overflow */
    if (!st->block || !spans) {
        s = bad(err, SA3D_ERR_NOMEM, path, NULL, "cannot allocate the tables of %zu tensors", n);
        goto fail;
    }
    memset(st->block, 0, sz_t + sz_m + sz_i);
    st->t = (sa3d_st_tensor *)st->block;
    st->meta = (st_meta *)((char *)st->block + sz_t);
    st->by_name = (const sa3d_st_tensor **)((char *)st->block + sz_t + sz_m);
    char *strings = (char *)st->block + sz_t + sz_m + sz_i;

    /* Pass 2: tensors in header order, then the metadata. */
    int k = 0;
    for (const cJSON *c = root->child; c; c = c->next) {
        if (!c->string || strcmp(c->string, "__metadata__") == 0) continue;
        sa3d_st_tensor *t = &st->t[k];
        size_t ln = strlen(c->string) + 1;
        memcpy(strings, c->string, ln);
        t->name = strings;
        strings += ln;
        t->file = st->label;
        s = parse_tensor(path, c, data_size, t, &spans[k], err);
        if (s != SA3D_OK) goto fail;
        t->data = data + spans[k].begin;
        spans[k].i = k;
        st->by_name[k] = t;
        k++;
    }
    st->n = k;
    int j = 0;
    for (const cJSON *m = meta ? meta->child : NULL; m; m = m->next) {
        if (!m->string) continue;
        size_t lk = strlen(m->string) + 1, lv = strlen(m->valuestring) + 1;
        memcpy(strings, m->string, lk);
        st->meta[j].key = strings;
        strings += lk;
        memcpy(strings, m->valuestring, lv);
        st->meta[j].value = strings;
        strings += lv;
        j++;
    }
    st->n_meta = j;

    /* Names and keys: sorted for binary search; cJSON keeps duplicate keys, so reject them here. */
    if (st->n > 1) qsort(st->by_name, (size_t)st->n, sizeof(st->by_name[0]), cmp_tensor_ptr_name);
    for (int i = 1; i < st->n; i++) {
        if (strcmp(st->by_name[i - 1]->name, st->by_name[i]->name) == 0) {
            s = bad(err, F, path, st->by_name[i]->name, "name appears twice in the header; expected unique "
                    "names");
            goto fail;
        }
    }
    if (st->n_meta > 1) qsort(st->meta, (size_t)st->n_meta, sizeof(st_meta), cmp_meta);
    for (int i = 1; i < st->n_meta; i++) {
        if (strcmp(st->meta[i - 1].key, st->meta[i].key) == 0) {
            s = bad(err, F, path, NULL, "__metadata__.%.160s appears twice; expected each key once",
                    st->meta[i].key);
            goto fail;
        }
    }

    /* Byte ranges sorted by (begin, end) must tile the data section exactly. */
    if (st->n > 1) qsort(spans, (size_t)st->n, sizeof(st_span), cmp_span);
    uint64_t cursor = 0;
    for (int i = 0; i < st->n; i++) {
        const st_span *sp = &spans[i];
        if (sp->begin < cursor) {
            const st_span *pv = &spans[i - 1];   /* cursor > 0 only after a span */
            s = bad(err, F, path, st->t[sp->i].name, "data_offsets [%" PRIu64 ", %" PRIu64 ") overlap tensor "
                    "'%.160s' at [%" PRIu64 ", %" PRIu64 "); expected begin %" PRIu64 ", got %" PRIu64,
                    sp->begin, sp->end, st->t[pv->i].name, pv->begin, pv->end, cursor, sp->begin);
            goto fail;
        }
        if (sp->begin > cursor) {
            s = bad(err, F, path, st->t[sp->i].name, "gap in the data section before data_offsets [%" PRIu64
                    ", %" PRIu64 "); expected begin %" PRIu64 ", got %" PRIu64, sp->begin, sp->end, cursor,
                    sp->begin);
            goto fail;
        }
        cursor = sp->end;
    }
    if (cursor != (uint64_t)data_size) {
        s = bad(err, F, path, NULL, "tensors do not cover the data section (trailing bytes no tensor owns); "
                "expected %zu bytes covered, got %" PRIu64, data_size, cursor);
        goto fail;
    }

    sa3d_free(spans);
    cJSON_Delete(root);
    sa3d_free(hdr);
    return SA3D_OK;

overflow:
    s = bad(err, F, path, NULL, "too many entries; table sizes overflow");
fail:
    sa3d_free(spans);
    cJSON_Delete(root);
    sa3d_free(hdr);
    sa3d_free(st->block);
    st->block = NULL;
    st->t = NULL;
    st->meta = NULL;
    st->by_name = NULL;
    st->n = st->n_meta = 0;
    return s;
}

static sa3d_safetensors *st_new(const char *label) {
    sa3d_safetensors *st = sa3d_calloc(1, sizeof *st);
    if (!st) return NULL;
    st->label = sa3d_strdup(label);
    if (!st->label) {
        sa3d_free(st);
        return NULL;
    }
    return st;
}

void sa3d_st_close(sa3d_safetensors *st) {
    if (!st) return;
    if (st->map) munmap(st->map, st->map_len);
    sa3d_free(st->block);
    sa3d_free(st->label);
    sa3d_free(st);
}

sa3d_status sa3d_st_open_memory(sa3d_safetensors **out, const void *buf, size_t len, const char *label,
                                sa3d_error *err) {
    if (!out) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_st_open_memory: out is NULL");
    *out = NULL;
    if (!label) label = "<memory>";
    if (!buf && len) return sa3d_fail(err, SA3D_ERR_ARG, "%s: buffer is NULL with length %zu", label, len);
    sa3d_status s;
    sa3d_safetensors *st = st_new(label);
    if (!st) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", label);
    st->buf = buf;
    st->len = len;
    s = st_parse(st, err);
    if (s != SA3D_OK) goto fail;
    *out = st;
    return SA3D_OK;
fail:
    sa3d_st_close(st);
    return s;
}

sa3d_status sa3d_st_open(sa3d_safetensors **out, const char *path, sa3d_error *err) {
    if (!out) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_st_open: out is NULL");
    *out = NULL;
    if (!path) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_st_open: path is NULL");
    sa3d_status s;
    int fd = -1;
    sa3d_safetensors *st = st_new(path);
    if (!st) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", path);
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);   /* O_NONBLOCK: a FIFO must not hang the open */
    if (fd < 0) {
        s = sa3d_fail(err, SA3D_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        s = sa3d_fail(err, SA3D_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        s = sa3d_fail(err, SA3D_ERR_IO, "%s: not a regular file", path);
        goto fail;
    }
    if ((uint64_t)sb.st_size > (uint64_t)SIZE_MAX) {
        s = sa3d_fail(err, SA3D_ERR_IO, "%s: file of %lld bytes does not fit in memory", path,
                      (long long)sb.st_size);
        goto fail;
    }
    st->len = (size_t)sb.st_size;
    if (st->len > 0) {   /* mmap of 0 bytes fails; st_parse reports an empty file */
        void *m = mmap(NULL, st->len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            s = sa3d_fail(err, SA3D_ERR_IO, "%s: cannot map %zu bytes: %s", path, st->len, strerror(errno));
            goto fail;
        }
        st->map = m;
        st->map_len = st->len;
        st->buf = m;
    }
    close(fd);
    fd = -1;
    s = st_parse(st, err);
    if (s != SA3D_OK) goto fail;
    *out = st;
    return SA3D_OK;
fail:
    if (fd >= 0) close(fd);
    sa3d_st_close(st);
    return s;
}

int sa3d_st_count(const sa3d_safetensors *st) { return st ? st->n : 0; }

const sa3d_st_tensor *sa3d_st_get(const sa3d_safetensors *st, int i) {
    return st && i >= 0 && i < st->n ? &st->t[i] : NULL;
}

/* Binary search over a name-sorted pointer table. */
static const sa3d_st_tensor *find_sorted(const sa3d_st_tensor *const *by_name, int n, const char *name) {
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(by_name[mid]->name, name);
        if (c == 0) return by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const sa3d_st_tensor *sa3d_st_find(const sa3d_safetensors *st, const char *name) {
    if (!st || !name) return NULL;
    return find_sorted(st->by_name, st->n, name);
}

const char *sa3d_st_metadata(const sa3d_safetensors *st, const char *key) {
    if (!st || !key) return NULL;
    int lo = 0, hi = st->n_meta;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(st->meta[mid].key, key);
        if (c == 0) return st->meta[mid].value;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

int sa3d_st_metadata_count(const sa3d_safetensors *st) { return st ? st->n_meta : 0; }

const char *sa3d_st_metadata_key(const sa3d_safetensors *st, int i) {
    return st && i >= 0 && i < st->n_meta ? st->meta[i].key : NULL;
}

/* ------------------------------------------------------------------------------------------------------ */
/* conversion to float32 */

/* IEEE binary16 -> binary32, exact: normals re-biased, subnormals scaled by 2^-24, inf/NaN payload kept. */
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
    if (exp == 0) {
        float v = (float)mant * 0x1p-24f;   /* exact: mant < 2^10 and the scale is a power of two */
        return sign ? -v : v;
    }
    if (exp == 31) bits = sign | 0x7f800000u | (mant << 13);
    else bits = sign | ((exp + 112u) << 23) | (mant << 13);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

sa3d_status sa3d_st_read_f32(const sa3d_st_tensor *t, float *dst, size_t n, sa3d_error *err) {
    if (!t) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_st_read_f32: tensor is NULL");
    const char *file = t->file ? t->file : "<memory>";
    if (n != t->numel)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: tensor '%s': destination size does not match; expected %zu "
                         "floats, got %zu", file, t->name, t->numel, n);
    if (n == 0) return SA3D_OK;
    if (!dst || !t->data)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: tensor '%s': %s is NULL", file, t->name,
                         dst ? "tensor data" : "destination");
    size_t es = sa3d_dtype_size(t->dtype), need;
    if (es == 0 || !sa3d_mul_ok(n, es, &need) || need != t->nbytes)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: tensor '%s': inconsistent tensor record (dtype %d, %zu "
                         "bytes for %zu elements)", file, t->name, (int)t->dtype, t->nbytes, n);
    const uint8_t *src = t->data;
    switch (t->dtype) {
    case SA3D_DTYPE_F32:
        memcpy(dst, src, n * sizeof(float));
        break;
    case SA3D_DTYPE_F16:
        for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32((uint16_t)(src[2 * i] | (src[2 * i + 1] << 8)));
        break;
    case SA3D_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32((uint16_t)(src[2 * i] | (src[2 * i + 1] << 8)));
        break;
    case SA3D_DTYPE_F64:
        for (size_t i = 0; i < n; i++) {
            double v;
            memcpy(&v, src + 8 * i, sizeof v);
            dst[i] = (float)v;
        }
        break;
    case SA3D_DTYPE_I64:
        for (size_t i = 0; i < n; i++) {
            int64_t v;
            memcpy(&v, src + 8 * i, sizeof v);
            dst[i] = (float)v;
        }
        break;
    case SA3D_DTYPE_I32:
        for (size_t i = 0; i < n; i++) {
            int32_t v;
            memcpy(&v, src + 4 * i, sizeof v);
            dst[i] = (float)v;
        }
        break;
    case SA3D_DTYPE_I16:
        for (size_t i = 0; i < n; i++) {
            int16_t v;
            memcpy(&v, src + 2 * i, sizeof v);
            dst[i] = (float)v;
        }
        break;
    case SA3D_DTYPE_I8:
        for (size_t i = 0; i < n; i++) dst[i] = (float)(int8_t)src[i];
        break;
    case SA3D_DTYPE_U8:
        for (size_t i = 0; i < n; i++) dst[i] = (float)src[i];
        break;
    case SA3D_DTYPE_BOOL:
        for (size_t i = 0; i < n; i++) dst[i] = src[i] ? 1.0f : 0.0f;
        break;
    }
    return SA3D_OK;
}

sa3d_status sa3d_st_read_f32_finite(const sa3d_st_tensor *t, float *dst, size_t n, sa3d_error *err) {
    sa3d_status s = sa3d_st_read_f32(t, dst, n, err);
    for (size_t i = 0; !s && i < n; i++)   /* F64 values beyond FLT_MAX became inf above: refused here too */
        if (!isfinite(dst[i]))
            return sa3d_fail(err, SA3D_ERR_NUMERIC, "%s: tensor '%s': non-finite value at index %zu",
                             t->file ? t->file : "<memory>", t->name, i);
    return s;
}

/* ------------------------------------------------------------------------------------------------------ */
/* checkpoint folders */

struct sa3d_checkpoint {
    int n_files;
    sa3d_safetensors **files;        /* [n_files]; shards in file-name order */
    int n;
    const sa3d_st_tensor **t;        /* [n] file by file, header order within a file */
    const sa3d_st_tensor **by_name;  /* [n] sorted by name */
    char *source;                    /* the file that lists the tensors: model.safetensors or the index */
};

/* One weight_map entry; the strings point into the parsed index. */
typedef struct ck_entry {
    const char *tensor;
    const char *shard;
    int file;
} ck_entry;

static int cmp_entry_tensor(const void *a, const void *b) {
    return strcmp(((const ck_entry *)a)->tensor, ((const ck_entry *)b)->tensor);
}

static int cmp_entry_shard(const void *a, const void *b) {
    return strcmp(((const ck_entry *)a)->shard, ((const ck_entry *)b)->shard);
}

void sa3d_checkpoint_close(sa3d_checkpoint *ck) {
    if (!ck) return;
    for (int i = 0; i < ck->n_files; i++) sa3d_st_close(ck->files[i]);
    sa3d_free(ck->files);
    sa3d_free(ck->t);
    sa3d_free(ck->by_name);
    sa3d_free(ck->source);
    sa3d_free(ck);
}

/* Opens the shards listed by the index at idx_path into ck->files (which ck owns even on failure). */
static sa3d_status open_sharded(sa3d_checkpoint *ck, const char *dir, const char *idx_path, sa3d_error *err) {
    sa3d_status s;
    char *text = NULL, *shard_path = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    ck_entry *e = NULL;

    s = sa3d_read_file(idx_path, SA3D_ST_MAX_HEADER, &text, &len, err);
    if (s != SA3D_OK) goto fail;
    size_t bad_at = 0;
    int trailing = 0;
    root = parse_json_exact(text, len, &bad_at, &trailing);
    if (!root) {
        s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s at byte %zu", idx_path,
                      trailing ? "unexpected characters after the JSON object" : "not valid JSON", bad_at);
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: not a JSON object; expected an object, got %s", idx_path,
                      json_type(root));
        goto fail;
    }
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: weight_map: %s; expected an object, got %s", idx_path,
                      wm ? "wrong type" : "missing", json_type(wm));
        goto fail;
    }
    size_t n = 0;
    for (const cJSON *c = wm->child; c; c = c->next) {
        if (!c->string) continue;
        if (!cJSON_IsString(c) || !c->valuestring) {
            s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: weight_map.%s: wrong type; expected a shard file name "
                          "string, got %s", idx_path, c->string, json_type(c));
            goto fail;
        }
        const char *f = c->valuestring;
        if (!f[0] || strchr(f, '/') || strstr(f, "..")) {
            s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: weight_map.%.160s: bad shard name; expected a plain "
                          "file name in the checkpoint folder (no '/' or '..'), got '%.160s'", idx_path,
                          c->string, f);
            goto fail;
        }
        n++;
    }
    if (n > INT_MAX) {
        s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: weight_map: too many entries (%zu)", idx_path, n);
        goto fail;
    }
    e = sa3d_malloc(n ? n * sizeof(ck_entry) : 1);   /* n entries each took > 4 bytes of a bounded file */
    if (!e) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: cannot allocate %zu weight_map entries", idx_path, n);
        goto fail;
    }
    size_t k = 0;
    for (const cJSON *c = wm->child; c; c = c->next) {
        if (!c->string) continue;
        e[k].tensor = c->string;
        e[k].shard = c->valuestring;
        e[k].file = -1;
        k++;
    }
    if (n > 1) qsort(e, n, sizeof *e, cmp_entry_tensor);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(e[i - 1].tensor, e[i].tensor) == 0) {
            s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: weight_map.%.160s: tensor listed twice; expected each "
                          "tensor once", idx_path, e[i].tensor);
            goto fail;
        }
    }
    /* Distinct shards, in file-name order; each is opened once. */
    if (n > 1) qsort(e, n, sizeof *e, cmp_entry_shard);
    int n_files = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || strcmp(e[i - 1].shard, e[i].shard) != 0) n_files++;
        e[i].file = n_files - 1;
    }
    ck->files = sa3d_calloc(n_files ? (size_t)n_files : 1, sizeof *ck->files);
    if (!ck->files) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: cannot allocate %d shard handles", idx_path, n_files);
        goto fail;
    }
    ck->n_files = n_files;   /* NULL slots are skipped by sa3d_st_close if a later shard fails */
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && e[i].file == e[i - 1].file) continue;
        shard_path = sa3d_path_join(dir, e[i].shard);
        if (!shard_path) {
            s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", idx_path);
            goto fail;
        }
        s = sa3d_st_open(&ck->files[e[i].file], shard_path, err);
        if (s != SA3D_OK) {
            sa3d_error_prefix(err, "%s: shard '%s'", idx_path, e[i].shard);
            goto fail;
        }
        sa3d_free(shard_path);
        shard_path = NULL;
    }
    /* Every tensor the map names must be in its shard. */
    for (size_t i = 0; i < n; i++) {
        const sa3d_safetensors *f = ck->files[e[i].file];
        if (!sa3d_st_find(f, e[i].tensor)) {
            s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: weight_map.%.160s: tensor is absent from its shard %s; "
                          "expected it there", idx_path, e[i].tensor, f->label);
            goto fail;
        }
    }
    s = SA3D_OK;
fail:
    sa3d_free(shard_path);
    sa3d_free(e);
    cJSON_Delete(root);
    sa3d_free(text);
    return s;
}

/* Builds the merged tables from ck->files; a name in two files is an error. */
static sa3d_status ck_merge(sa3d_checkpoint *ck, sa3d_error *err) {
    size_t total = 0;
    for (int i = 0; i < ck->n_files; i++) total += (size_t)sa3d_st_count(ck->files[i]);
    if (total > INT_MAX)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: checkpoint holds too many tensors (%zu)",
                         ck->n_files ? ck->files[0]->label : "?", total);
    size_t bytes = (total ? total : 1) * sizeof(const sa3d_st_tensor *);
    ck->t = sa3d_malloc(bytes);
    ck->by_name = sa3d_malloc(bytes);
    if (!ck->t || !ck->by_name)
        return sa3d_fail(err, SA3D_ERR_NOMEM, "checkpoint: cannot allocate tables of %zu tensors", total);
    int k = 0;
    for (int i = 0; i < ck->n_files; i++) {
        for (int j = 0; j < ck->files[i]->n; j++, k++) ck->t[k] = ck->by_name[k] = &ck->files[i]->t[j];
    }
    ck->n = k;
    if (k > 1) qsort(ck->by_name, (size_t)k, sizeof ck->by_name[0], cmp_tensor_ptr_name);
    for (int i = 1; i < k; i++) {
        const sa3d_st_tensor *a = ck->by_name[i - 1], *b = ck->by_name[i];
        if (strcmp(a->name, b->name) == 0)
            return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: tensor '%s': also in %s; expected each tensor in one "
                             "shard", b->file, b->name, a->file);
    }
    return SA3D_OK;
}

sa3d_status sa3d_checkpoint_open(sa3d_checkpoint **out, const char *dir, sa3d_error *err) {
    if (!out) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_checkpoint_open: out is NULL");
    *out = NULL;
    if (!dir) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_checkpoint_open: dir is NULL");
    sa3d_status s;
    char *idx_path = NULL, *single = NULL;
    sa3d_checkpoint *ck = sa3d_calloc(1, sizeof *ck);
    idx_path = sa3d_path_join(dir, ST_INDEX_NAME);
    single = sa3d_path_join(dir, ST_SINGLE_NAME);
    if (!ck || !idx_path || !single) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", dir);
        goto fail;
    }
    int sharded = sa3d_file_exists(idx_path);
    if (sharded) {
        s = open_sharded(ck, dir, idx_path, err);
        if (s != SA3D_OK) goto fail;
    } else {
        if (!sa3d_file_exists(single)) {
            s = sa3d_fail(err, SA3D_ERR_IO, "%s: no checkpoint; expected %s or %s in it", dir, ST_SINGLE_NAME,
                          ST_INDEX_NAME);
            goto fail;
        }
        ck->files = sa3d_calloc(1, sizeof *ck->files);
        if (!ck->files) {
            s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", single);
            goto fail;
        }
        s = sa3d_st_open(&ck->files[0], single, err);
        if (s != SA3D_OK) goto fail;
        ck->n_files = 1;
    }
    s = ck_merge(ck, err);
    if (s != SA3D_OK) goto fail;
    if (sharded) {
        ck->source = idx_path;
        sa3d_free(single);
    } else {
        ck->source = single;
        sa3d_free(idx_path);
    }
    *out = ck;
    return SA3D_OK;
fail:
    sa3d_free(idx_path);
    sa3d_free(single);
    sa3d_checkpoint_close(ck);
    return s;
}

int sa3d_checkpoint_count(const sa3d_checkpoint *ck) { return ck ? ck->n : 0; }
const char *sa3d_checkpoint_source(const sa3d_checkpoint *ck) { return ck ? ck->source : NULL; }

const sa3d_st_tensor *sa3d_checkpoint_get(const sa3d_checkpoint *ck, int i) {
    return ck && i >= 0 && i < ck->n ? ck->t[i] : NULL;
}

const sa3d_st_tensor *sa3d_checkpoint_find(const sa3d_checkpoint *ck, const char *name) {
    if (!ck || !name) return NULL;
    return find_sorted(ck->by_name, ck->n, name);
}

/* ------------------------------------------------------------------------------------------------------ */
/* writer */

typedef struct wr_tensor {
    char *name;
    sa3d_dtype dtype;
    int ndim;
    int64_t shape[SA3D_ST_MAX_DIMS];
    const void *data;   /* borrowed */
    size_t nbytes;
} wr_tensor;

typedef struct wr_meta {
    char *key;
    char *value;
} wr_meta;

struct sa3d_st_writer {
    wr_tensor *t;
    int n, cap;
    wr_meta *m;
    int n_meta, cap_meta;
};

sa3d_st_writer *sa3d_st_writer_new(void) { return sa3d_calloc(1, sizeof(sa3d_st_writer)); }

void sa3d_st_writer_free(sa3d_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) sa3d_free(w->t[i].name);
    for (int i = 0; i < w->n_meta; i++) {
        sa3d_free(w->m[i].key);
        sa3d_free(w->m[i].value);
    }
    sa3d_free(w->t);
    sa3d_free(w->m);
    sa3d_free(w);
}

/* Next capacity for a table of `elem`-byte items that is full at `cap`; 0 on overflow. */
static int next_cap(int cap, size_t elem, int *new_cap, size_t *bytes) {
    if (cap > INT_MAX / 2) return 0;
    *new_cap = cap ? cap * 2 : 16;
    return sa3d_mul_ok((size_t)*new_cap, elem, bytes);
}

sa3d_status sa3d_st_writer_add(sa3d_st_writer *w, const char *name, sa3d_dtype dtype, int ndim,
                               const int64_t *shape, const void *data, sa3d_error *err) {
    if (!w || !name)
        return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_st_writer_add: %s is NULL", w ? "name" : "writer");
    if (!name[0] || strcmp(name, "__metadata__") == 0)
        return sa3d_fail(err, SA3D_ERR_ARG, "tensor '%s': reserved or empty name; expected a tensor name",
                         name);
    size_t es = sa3d_dtype_size(dtype);
    if (es == 0)
        return sa3d_fail(err, SA3D_ERR_ARG, "tensor '%s': unknown dtype; expected a sa3d_dtype, got %d", name,
                         (int)dtype);
    if (ndim < 0 || ndim > SA3D_ST_MAX_DIMS)
        return sa3d_fail(err, SA3D_ERR_ARG, "tensor '%s': ndim out of range; expected 0 to %d, got %d", name,
                         SA3D_ST_MAX_DIMS, ndim);
    if (ndim > 0 && !shape) return sa3d_fail(err, SA3D_ERR_ARG, "tensor '%s': shape is NULL", name);
    size_t numel = 1, nbytes;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return sa3d_fail(err, SA3D_ERR_ARG, "tensor '%s': shape[%d] is negative; expected >= 0, got %"
                             PRId64, name, d, shape[d]);
        if ((uint64_t)shape[d] > (uint64_t)ST_MAX_JSON_INT || (uint64_t)shape[d] > SIZE_MAX ||
            !sa3d_mul_ok(numel, (size_t)shape[d], &numel))
            return sa3d_fail(err, SA3D_ERR_ARG, "tensor '%s': shape element count overflows at shape[%d]",
                             name, d);
    }
    if (!sa3d_mul_ok(numel, es, &nbytes) || (uint64_t)nbytes > (uint64_t)ST_MAX_JSON_INT)
        return sa3d_fail(err, SA3D_ERR_ARG, "tensor '%s': byte size overflows (%zu elements)", name, numel);
    if (nbytes && !data) return sa3d_fail(err, SA3D_ERR_ARG, "tensor '%s': data is NULL", name);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return sa3d_fail(err, SA3D_ERR_ARG, "tensor '%s': added twice; expected unique names", name);
    if (w->n == w->cap) {
        int nc;
        size_t bytes;
        wr_tensor *p = next_cap(w->cap, sizeof *p, &nc, &bytes) ? sa3d_realloc(w->t, bytes) : NULL;
        if (!p) return sa3d_fail(err, SA3D_ERR_NOMEM, "tensor '%s': cannot grow the writer's table", name);
        w->t = p;
        w->cap = nc;
    }
    wr_tensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = sa3d_strdup(name);
    if (!t->name) return sa3d_fail(err, SA3D_ERR_NOMEM, "tensor '%s': out of memory", name);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    t->data = data;
    t->nbytes = nbytes;
    w->n++;
    return SA3D_OK;
}

sa3d_status sa3d_st_writer_add_f32(sa3d_st_writer *w, const char *name, int ndim, const int64_t *shape,
                                   const float *data, sa3d_error *err) {
    return sa3d_st_writer_add(w, name, SA3D_DTYPE_F32, ndim, shape, data, err);
}

sa3d_status sa3d_st_writer_set_metadata(sa3d_st_writer *w, const char *key, const char *value,
                                        sa3d_error *err) {
    if (!w || !key || !value)
        return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_st_writer_set_metadata: %s is NULL",
                         !w ? "writer" : !key ? "key" : "value");
    char *v = sa3d_strdup(value);
    if (!v) return sa3d_fail(err, SA3D_ERR_NOMEM, "__metadata__.%s: out of memory", key);
    for (int i = 0; i < w->n_meta; i++) {
        if (strcmp(w->m[i].key, key) == 0) {   /* setting a key again replaces its value */
            sa3d_free(w->m[i].value);
            w->m[i].value = v;
            return SA3D_OK;
        }
    }
    if (w->n_meta == w->cap_meta) {
        int nc;
        size_t bytes;
        wr_meta *p = next_cap(w->cap_meta, sizeof *p, &nc, &bytes) ? sa3d_realloc(w->m, bytes) : NULL;
        if (!p) {
            sa3d_free(v);
            return sa3d_fail(err, SA3D_ERR_NOMEM, "__metadata__.%s: cannot grow the writer's table", key);
        }
        w->m = p;
        w->cap_meta = nc;
    }
    char *k = sa3d_strdup(key);
    if (!k) {
        sa3d_free(v);
        return sa3d_fail(err, SA3D_ERR_NOMEM, "__metadata__.%s: out of memory", key);
    }
    w->m[w->n_meta].key = k;
    w->m[w->n_meta].value = v;
    w->n_meta++;
    return SA3D_OK;
}

/* Appends an integer to a JSON array as raw text, so every integer up to 2^64 prints exactly. */
static int add_uint(cJSON *arr, uint64_t v) {
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    cJSON *item = cJSON_CreateRaw(buf);
    if (!item) return 0;
    if (!cJSON_AddItemToArray(arr, item)) {
        cJSON_Delete(item);
        return 0;
    }
    return 1;
}

/* Builds the header JSON (metadata first, then tensors in the order added); NULL on allocation failure. */
static char *writer_header_json(const sa3d_st_writer *w) {
    char *json = NULL;
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    if (w->n_meta) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        if (!meta) goto done;
        for (int i = 0; i < w->n_meta; i++)
            if (!cJSON_AddStringToObject(meta, w->m[i].key, w->m[i].value)) goto done;
    }
    uint64_t offset = 0;
    for (int i = 0; i < w->n; i++) {
        const wr_tensor *t = &w->t[i];
        cJSON *o = cJSON_AddObjectToObject(root, t->name);
        if (!o || !cJSON_AddStringToObject(o, "dtype", sa3d_dtype_name(t->dtype))) goto done;
        cJSON *shape = cJSON_AddArrayToObject(o, "shape");
        if (!shape) goto done;
        for (int d = 0; d < t->ndim; d++)
            if (!add_uint(shape, (uint64_t)t->shape[d])) goto done;
        cJSON *off = cJSON_AddArrayToObject(o, "data_offsets");
        if (!off || !add_uint(off, offset) || !add_uint(off, offset + t->nbytes)) goto done;
        offset += t->nbytes;
    }
    json = cJSON_PrintUnformatted(root);
done:
    cJSON_Delete(root);
    return json;
}

sa3d_status sa3d_st_writer_write(sa3d_st_writer *w, const char *path, sa3d_error *err) {
    if (!w || !path)
        return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_st_writer_write: %s is NULL", w ? "path" : "writer");
    sa3d_status s;
    char *json = NULL;
    uint8_t *head = NULL;
    sa3d_atomic_file af = { 0 };
    int af_open = 0;

    /* The data section's total size must stay within the offsets a reader accepts. */
    uint64_t total = 0;
    for (int i = 0; i < w->n; i++) {
        total += w->t[i].nbytes;   /* each <= 2^53, at most INT_MAX of them: no wrap */
        if (total > (uint64_t)ST_MAX_JSON_INT) {
            s = sa3d_fail(err, SA3D_ERR_ARG, "%s: data section exceeds 2^53 bytes", path);
            goto fail;
        }
    }
    json = writer_header_json(w);
    if (!json) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: header: out of memory building the JSON", path);
        goto fail;
    }
    size_t jn = strlen(json);
    /* Pad with spaces so the data section starts 8-byte aligned, as huggingface/safetensors does. */
    size_t hn = jn + (8 - jn % 8) % 8;
    if (hn > SA3D_ST_MAX_HEADER) {
        s = sa3d_fail(err, SA3D_ERR_ARG, "%s: header: %zu bytes is above the %u-byte limit", path, hn,
                      SA3D_ST_MAX_HEADER);
        goto fail;
    }
    head = sa3d_malloc(8 + hn);
    if (!head) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s: header: cannot allocate %zu bytes", path, 8 + hn);
        goto fail;
    }
    for (int i = 0; i < 8; i++) head[i] = (uint8_t)((uint64_t)hn >> (8 * i));
    memcpy(head + 8, json, jn);
    memset(head + 8 + jn, ' ', hn - jn);

    s = sa3d_atomic_open(&af, path, err);
    if (s != SA3D_OK) goto fail;
    af_open = 1;
    s = sa3d_atomic_write(&af, head, 8 + hn, err);
    for (int i = 0; s == SA3D_OK && i < w->n; i++)
        s = sa3d_atomic_write(&af, w->t[i].data, w->t[i].nbytes, err);
    if (s != SA3D_OK) goto fail;
    af_open = 0;
    s = sa3d_atomic_commit(&af, err);   /* removes the temp file itself on failure */
    if (s != SA3D_OK) goto fail;
    sa3d_free(head);
    cJSON_free(json);   /* allocated by cJSON's hooks, not sa3d_malloc */
    return SA3D_OK;
fail:
    if (af_open) sa3d_atomic_abort(&af);
    sa3d_free(head);
    cJSON_free(json);
    return s;
}
