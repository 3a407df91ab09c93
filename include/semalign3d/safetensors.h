/* semalign3d: safetensors files (https://huggingface.co/docs/safetensors) - reading and writing.
 *
 * Reading maps the file (mmap) and validates the whole header before anything is used: header length within
 * the file, valid JSON object, every tensor with a known dtype, a shape of at most SA3D_ST_MAX_DIMS
 * non-negative dims whose element count times the dtype size equals its byte range, byte ranges inside the
 * data section, not overlapping, and (as the format requires) covering it with no gap. Any violation is
 * SA3D_ERR_FORMAT with a message naming the file and the tensor.
 *
 *     sa3d_safetensors *st;  sa3d_error err;
 *     if (sa3d_st_open(&st, "model.safetensors", &err) != SA3D_OK) { puts(err.msg); return 1; }
 *     const sa3d_st_tensor *t = sa3d_st_find(st, "embeddings.cls_token");
 *     float *x = malloc(t->numel * sizeof(float));
 *     sa3d_st_read_f32(t, x, t->numel, &err);              // converts F16/BF16/F64/ints to float
 *     sa3d_st_close(st);
 *
 * A checkpoint folder (config.json beside model.safetensors, or model.safetensors.index.json plus shards)
 * opens as one sa3d_checkpoint whose tensor table merges all shards.
 *
 * Writing collects named float32 tensors (borrowed pointers) and metadata strings, then writes the file
 * atomically (temp file + rename): on failure the destination is untouched.
 *
 * Thread safety: an open sa3d_safetensors or sa3d_checkpoint is immutable, so any number of threads may call
 * the getters and sa3d_st_read_f32 on it at once. Distinct handles (and distinct writers) may be opened, used
 * and closed from different threads. A writer is not safe to share between threads. */
#ifndef SEMALIGN3D_SAFETENSORS_H
#define SEMALIGN3D_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include "semalign3d/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SA3D_ST_MAX_DIMS 8
#define SA3D_ST_MAX_HEADER (100u << 20)   /* header JSON larger than 100 MiB is rejected as hostile */

typedef enum sa3d_dtype {
    SA3D_DTYPE_F32, SA3D_DTYPE_F16, SA3D_DTYPE_BF16, SA3D_DTYPE_F64,
    SA3D_DTYPE_I64, SA3D_DTYPE_I32, SA3D_DTYPE_I16, SA3D_DTYPE_I8, SA3D_DTYPE_U8, SA3D_DTYPE_BOOL
} sa3d_dtype;

typedef struct sa3d_st_tensor {
    const char *name;           /* owned by the file handle */
    sa3d_dtype dtype;
    int ndim;
    int64_t shape[SA3D_ST_MAX_DIMS];
    size_t numel;
    const void *data;           /* points into the mapping; may be unaligned */
    size_t nbytes;
    const char *file;           /* path of the file holding it (for messages) */
} sa3d_st_tensor;

typedef struct sa3d_safetensors sa3d_safetensors;   /* opaque: one mapped file */

/* Size in bytes of one element; 0 for an invalid dtype. Name as in the format ("F32"). */
SA3D_API size_t sa3d_dtype_size(sa3d_dtype d);
SA3D_API const char *sa3d_dtype_name(sa3d_dtype d);

/* Opens and validates a file. On failure *out is NULL and err names the file and problem. */
SA3D_API sa3d_status sa3d_st_open(sa3d_safetensors **out, const char *path, sa3d_error *err);
/* Validates a file already in memory (buf is borrowed and must outlive the handle). label names it in
 * messages. This is the entry point of the fuzz target. */
SA3D_API sa3d_status sa3d_st_open_memory(sa3d_safetensors **out, const void *buf, size_t len,
                                         const char *label, sa3d_error *err);
SA3D_API void sa3d_st_close(sa3d_safetensors *st);                      /* NULL is a no-op */

SA3D_API int sa3d_st_count(const sa3d_safetensors *st);
SA3D_API const sa3d_st_tensor *sa3d_st_get(const sa3d_safetensors *st, int i);   /* header order */
SA3D_API const sa3d_st_tensor *sa3d_st_find(const sa3d_safetensors *st, const char *name); /* NULL if absent */
/* Value of a "__metadata__" string entry, or NULL. */
SA3D_API const char *sa3d_st_metadata(const sa3d_safetensors *st, const char *key);
/* Number of "__metadata__" entries, and the key of entry i (0 <= i < count, in strcmp order; NULL when out of
 * range). Borrowed from the handle. Together with sa3d_st_metadata they enumerate the metadata. */
SA3D_API int sa3d_st_metadata_count(const sa3d_safetensors *st);
SA3D_API const char *sa3d_st_metadata_key(const sa3d_safetensors *st, int i);

/* Converts a tensor of any numeric dtype to float32 into dst (n must equal t->numel). F16 and BF16 are
 * converted exactly (every value is representable); F64 rounds to nearest. */
SA3D_API sa3d_status sa3d_st_read_f32(const sa3d_st_tensor *t, float *dst, size_t n, sa3d_error *err);
/* The same, for inputs (pixels, feature maps): a NaN or infinity is refused as SA3D_ERR_NUMERIC, naming the file,
 * tensor and index, since downstream it would only surface as a non-finite result far from its cause. */
SA3D_API sa3d_status sa3d_st_read_f32_finite(const sa3d_st_tensor *t, float *dst, size_t n, sa3d_error *err);

/* A checkpoint: one file, or the shards listed by model.safetensors.index.json ("weight_map"). */
typedef struct sa3d_checkpoint sa3d_checkpoint;
/* dir holds model.safetensors or model.safetensors.index.json (the index wins when both exist). */
SA3D_API sa3d_status sa3d_checkpoint_open(sa3d_checkpoint **out, const char *dir, sa3d_error *err);
SA3D_API void sa3d_checkpoint_close(sa3d_checkpoint *ck);
SA3D_API int sa3d_checkpoint_count(const sa3d_checkpoint *ck);
/* The file that lists the checkpoint's tensors (DIR/model.safetensors or DIR/model.safetensors.index.json), for
 * messages about a tensor it lacks. */
SA3D_API const char *sa3d_checkpoint_source(const sa3d_checkpoint *ck);
SA3D_API const sa3d_st_tensor *sa3d_checkpoint_get(const sa3d_checkpoint *ck, int i);
SA3D_API const sa3d_st_tensor *sa3d_checkpoint_find(const sa3d_checkpoint *ck, const char *name);

/* Writer. Tensors are borrowed: the data must stay valid until sa3d_st_writer_write returns. */
typedef struct sa3d_st_writer sa3d_st_writer;
SA3D_API sa3d_st_writer *sa3d_st_writer_new(void);                       /* NULL on allocation failure */
SA3D_API void sa3d_st_writer_free(sa3d_st_writer *w);
SA3D_API sa3d_status sa3d_st_writer_add_f32(sa3d_st_writer *w, const char *name, int ndim, const int64_t *shape,
                                            const float *data, sa3d_error *err);
SA3D_API sa3d_status sa3d_st_writer_add(sa3d_st_writer *w, const char *name, sa3d_dtype dtype, int ndim,
                                        const int64_t *shape, const void *data, sa3d_error *err);
SA3D_API sa3d_status sa3d_st_writer_set_metadata(sa3d_st_writer *w, const char *key, const char *value,
                                                 sa3d_error *err);
/* Writes the file atomically. Tensors are written in the order added. */
SA3D_API sa3d_status sa3d_st_writer_write(sa3d_st_writer *w, const char *path, sa3d_error *err);

#ifdef __cplusplus
}
#endif
#endif
