/* Shared CLI plumbing: the command table entry type, option parsing helpers, error printing with the exit-code
 * contract (0 ok, 1 run failed, 2 usage error, 130 interrupted) and progress lines on stderr. */
#ifndef SA3D_CLI_H
#define SA3D_CLI_H

#include <stdio.h>
#include "semalign3d/status.h"

enum { EXIT_OK = 0, EXIT_RUN = 1, EXIT_USAGE = 2, EXIT_INTERRUPTED = 130 };

typedef struct cli_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} cli_command;

/* Matches argv[*i] against --name VALUE or --name=VALUE; on match sets *value and advances *i. Returns 1 on a
 * match, 0 otherwise, -1 when the value is missing (an error already printed for cmd). */
int cli_opt(const char *cmd, int argc, char **argv, int *i, const char *name, const char **value);
/* Matches a flag --name. */
int cli_flag(char **argv, int i, const char *name);
/* Parses an integer option value in [lo, hi]; prints a usage error for cmd and returns 0 on failure. */
int cli_int(const char *cmd, const char *opt, const char *s, long lo, long hi, int *out);

/* "semalign3d CMD: message" + "--help" hint on stderr; returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "semalign3d CMD: err->msg" on stderr; returns EXIT_RUN (or EXIT_INTERRUPTED for SA3D_ERR_CANCELLED). */
int cli_run_error(const char *cmd, const sa3d_error *err);

/* Progress on stderr: redrawn in place on a TTY, otherwise a line every few seconds, with an ETA. */
typedef struct cli_progress {
    const char *what;
    long total, done;
    double t0, last;
    int tty, quiet;
} cli_progress;
void cli_progress_start(cli_progress *p, const char *what, long total, int quiet);
void cli_progress_step(cli_progress *p, const char *item);
void cli_progress_end(cli_progress *p);

/* Warning callback for library readers (sa3d_dataset_params.warn): one line on stderr. */
void cli_warn(void *user, const char *msg);

/* Set by SIGINT; long loops check it between items. */
extern volatile int cli_interrupted;
void cli_install_sigint(void);

/* Basename without directory and extension ("a/b/2008_00.jpg" -> "2008_00"), into buf. */
void cli_stem(const char *path, char *buf, size_t n);

int cmd_forward(int argc, char **argv);
int cmd_features(int argc, char **argv);
int cmd_depth(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_pck(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_build_prior(int argc, char **argv);
int cmd_show_prior(int argc, char **argv);

#endif
