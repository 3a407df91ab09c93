/* semalign3d: status codes and error messages.
 *
 * Every fallible function returns an sa3d_status and fills an optional sa3d_error with a one-line message
 * of the form "<file>: <where>: <problem>[; expected X, got Y]". The library never prints and never exits. */
#ifndef SEMALIGN3D_STATUS_H
#define SEMALIGN3D_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define SA3D_API
#else
#define SA3D_API __attribute__((visibility("default")))
#endif

#if defined(__GNUC__)
#define SA3D_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define SA3D_PRINTF(f, a)
#endif

typedef enum sa3d_status {
    SA3D_OK = 0,
    SA3D_ERR_ARG,         /* a caller passed a bad argument */
    SA3D_ERR_IO,          /* a file could not be opened, read or written */
    SA3D_ERR_FORMAT,      /* a file is corrupt or does not follow its format */
    SA3D_ERR_UNSUPPORTED, /* a valid input the program does not handle (names the field and value) */
    SA3D_ERR_NOMEM,       /* an allocation failed or a size overflowed */
    SA3D_ERR_NUMERIC,     /* a NaN or infinity where finite numbers are required */
    SA3D_ERR_BACKEND,     /* BLAS or CUDA reported an error */
    SA3D_ERR_CANCELLED    /* a progress callback asked to stop */
} sa3d_status;

typedef struct sa3d_error {
    sa3d_status code;
    char msg[512];
} sa3d_error;

/* Static name of a status ("SA3D_ERR_FORMAT"), never NULL. */
SA3D_API const char *sa3d_status_name(sa3d_status s);

/* Library version string ("0.1.0"), written into the metadata of every output file. */
SA3D_API const char *sa3d_version(void);

#ifdef __cplusplus
}
#endif
#endif
