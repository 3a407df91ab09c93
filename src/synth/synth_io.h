/* Plumbing shared by the synthetic dataset writers (spair_synth.c, synth3d.c): a growing text buffer, atomic
 * text files, bounded path formatting, the new-or-empty root check, and the first failure of a parallel loop. */
#ifndef SA3D_SYNTH_IO_H
#define SA3D_SYNTH_IO_H

#include <stddef.h>
#include "base/base.h"

typedef struct sa3d_sbuf { char *s; size_t len, cap; int failed; } sa3d_sbuf;

/* Appends formatted text; on allocation failure the buffer is marked failed and later appends do nothing. */
void sa3d_sb_printf(sa3d_sbuf *b, const char *fmt, ...) SA3D_PRINTF(2, 3);
/* Writes the buffer to path atomically (SA3D_ERR_NOMEM if an append failed); the buffer is not freed. */
sa3d_status sa3d_sb_write(const char *path, const sa3d_sbuf *b, sa3d_error *err);
/* snprintf into buf[n]; SA3D_ERR_ARG when the path does not fit. */
sa3d_status sa3d_path_fmt(char *buf, size_t n, sa3d_error *err, const char *fmt, ...) SA3D_PRINTF(4, 5);
/* A dataset is written only into a new or empty directory: SA3D_ERR_ARG (not a directory, not empty) or
 * SA3D_ERR_IO; SA3D_OK when root does not exist. */
sa3d_status sa3d_synth_check_root(const char *root, sa3d_error *err);

/* The first failure of a parallel loop: the smallest item index among the items that failed. */
typedef struct sa3d_first_error { int failed; long index; sa3d_error err; } sa3d_first_error;
void sa3d_first_error_note(sa3d_first_error *fe, long index, const sa3d_error *e);
int sa3d_first_error_any(sa3d_first_error *fe);

#endif
