/* Shared CLI plumbing: the command table entry type, option parsing helpers, error printing with the exit-code
 * contract (0 ok, 1 run failed, 2 usage error, 130 interrupted) and progress lines on stderr. */
#ifndef SA3D_CLI_H
#define SA3D_CLI_H

#include <signal.h>
#include <stdio.h>
#include "semalign3d/align.h"
#include "semalign3d/data.h"
#include "semalign3d/nn.h"
#include "semalign3d/safetensors.h"
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
/* The same for a finite real number in [lo, hi]. */
int cli_real(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out);

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
/* sa3d_progress_fn over a cli_progress (user): one step per call; a non-zero return (SIGINT) cancels the run. */
int cli_eval_progress(void *user, long done, long total, const char *item);

/* sa3d_provider_hook over a cli_progress (user; its total unknown): counts the maps a network computed, with a
 * line as cli_progress_step draws them; a non-zero return (SIGINT) cancels the provider's call. */
int cli_provider_hook(void *user, const char *category, const char *id, int flip);

/* An output file option checked before any work (NULL passes): its folder exists and it is not a folder itself;
 * else a usage error naming the option, and 0. */
int cli_output_file_ok(const char *cmd, const char *opt, const char *path);
/* An input folder option checked before any work (NULL passes): it exists and is a folder; else a usage error
 * naming the option, and 0. */
int cli_input_dir_ok(const char *cmd, const char *opt, const char *dir);

/* Warning callback for library readers (sa3d_dataset_params.warn): one line on stderr. */
void cli_warn(void *user, const char *msg);

/* Every command starts with cli_install_fatal_signals: SIGINT and SIGTERM end the process as by default, but
 * first remove the temp file of any atomic write in progress (sa3d_atomic_remove_temps). Commands with long loops
 * then call cli_install_sigint: a signal sets cli_interrupted, which they check between items (also from several
 * threads: a sig_atomic_t is read and written whole), and a second one ends the process as above. */
extern volatile sig_atomic_t cli_interrupted;
void cli_install_fatal_signals(void);
void cli_install_sigint(void);
/* A library cancel callback (user unused): cli_interrupted. */
int cli_cancel_requested(void *user);

/* SA3D_ERR_ARG naming the option and folder when the model opened from dir is not of the kind a command needs. */
sa3d_status cli_model_kind_check(const sa3d_model *m, const char *opt, const char *dir, sa3d_model_kind want,
                                 sa3d_error *err);

/* Commands that run a network over image files (features, depth): the options they share, the model, and the
 * loop over images with progress, resume (the callback skips images whose output is up to date), per-image
 * failures counted and SIGINT honoured between images. */
typedef struct cli_net_args {
    const char *model_dir, *out_dir, *threads_s, *device, *dtype, *positions;
    int quiet;
    const char **images;          /* the positional arguments */
    int n_images;
} cli_net_args;
/* Matches argv[*i] against the shared options (--model, --out, --threads, --device, --dtype, --positions, --quiet)
 * or takes it as an image; 1 when taken, 0 when it is another option for the command, -1 after a usage error. */
int cli_net_arg(const char *cmd, int argc, char **argv, int *i, cli_net_args *a);
/* 1 when a file's metadata says this model made it from this image: its model_id and dtype (files without a dtype
 * were written before it was recorded, in fp32) and image_digest equal to image_digest (cli_file_digest; files
 * without one are redone). The up-to-date test of `features` and `depth`. */
int cli_made_by(const sa3d_safetensors *st, const sa3d_model *m, const char *image_digest);
/* 16 hex digits of FNV-1a over the bytes of the file at path, so an output made from another image of the same
 * name (replaced, or from another folder) is not taken as up to date; "" when it cannot be read (the image's own
 * load then says why). */
void cli_file_digest(const char *path, char out[17]);
/* The bytes of an image file (*data, free with sa3d_free) and their digest (cli_file_digest's value), read once
 * for both: a device, FIFO or file above SA3D_IMAGE_MAX_FILE_BYTES is refused before any byte is hashed, and the
 * digest recorded is of the bytes decoded (sa3d_image_load_memory). */
sa3d_status cli_image_bytes(const char *path, char **data, size_t *len, char digest[17], sa3d_error *err);
/* Decodes those bytes into img (messages name path), prints the decoder's warning if it gave one, and frees data
 * (NULL passes, after a failed read). */
sa3d_status cli_image_decode(const char *path, char *data, size_t len, sa3d_image *img, sa3d_error *err);
/* Checks the shared arguments, opens the model (which must be of `kind`; *m is the caller's to free, also on
 * failure) and creates the output folder; EXIT_OK, EXIT_USAGE (message printed) or EXIT_RUN (err set). */
int cli_net_open(const char *cmd, const cli_net_args *a, sa3d_model_kind kind, sa3d_model **m, sa3d_error *err);
/* 1 when --device (cpu, cuda) and --dtype (fp32, fp16, bf16) name something (either may be NULL); else 0 after a
 * usage error. Whether this build and machine can run it is the model's to say (a run error). */
int cli_model_names_ok(const char *cmd, const char *device, const char *dtype, const char *positions);
/* The stages of one image (cli/pipeline.c), each given the image's slot (0 .. CLI_PIPELINE_SLOTS - 1), whose
 * buffers belong to the command:
 *   prepare  sets *skip when the outputs are up to date, else decodes and preprocesses (a helper thread);
 *   run      runs the network and copies what finish needs out of the workspace (the calling thread, in order);
 *   finish   post-processes and writes the output files atomically (a helper thread);
 *   release  frees the slot's per-image buffers, whichever stage the image reached (the calling thread).
 * run and finish are skipped after a failed stage or a skip. */
#define CLI_PIPELINE_SLOTS 3
typedef struct cli_image_stages {
    sa3d_status (*prepare)(void *ctx, int slot, const char *image, const char *stem, int *skip, sa3d_error *err);
    sa3d_status (*run)(void *ctx, int slot, sa3d_error *err);
    sa3d_status (*finish)(void *ctx, int slot, sa3d_error *err);
    void (*release)(void *ctx, int slot);
} cli_image_stages;
/* Every image through the stages, the network on one while the next is prepared and the previous written, with
 * progress; a failed image is reported and counted, and the others go on. EXIT_OK, EXIT_USAGE (two images with
 * the same output name), or EXIT_RUN / EXIT_INTERRUPTED with the message printed. */
int cli_net_each_image(const char *cmd, const cli_net_args *a, const sa3d_model *m, const cli_image_stages *st,
                       void *ctx);

/* --set NAME=VALUE (repeatable; eval, match, demo): any aligner or matcher option by name
 * (sa3d_sa3d_matcher_params_set), applied after the command's own options; `--set list` prints them all with
 * the values they would have. */
#define CLI_MAX_SETS 64
typedef struct cli_param_sets {
    const char *v[CLI_MAX_SETS];
    int n;
} cli_param_sets;
/* Matches --set VALUE / --set=VALUE: 1 when taken, 0 otherwise, -1 after a usage error. */
int cli_param_set_arg(const char *cmd, int argc, char **argv, int *i, cli_param_sets *s);
/* --set list given: prints the options with the defaults and the other --set values applied (no other option
 * needed) and returns the exit code; -1 when list was not asked for. */
int cli_param_sets_list_only(const char *cmd, const cli_param_sets *s);
/* Applies the sets to p in order. Returns -1 when the command should go on, EXIT_USAGE after an error (printed),
 * EXIT_RUN when out of memory, or EXIT_OK when one of them was `list` (the options printed on stdout). */
int cli_param_sets_apply(const char *cmd, const cli_param_sets *s, sa3d_sa3d_matcher_params *p);
/* --device NAME for the aligner: "cpu" or "cuda" into p->align.device. 1 when valid, else 0 after a usage error. */
int cli_align_device(const char *cmd, const char *name, sa3d_sa3d_matcher_params *p);
/* "NAME=VALUE\n" for every option of p, after `head` (may be NULL): sa3d_eval_params.settings. Caller frees;
 * NULL when out of memory. */
char *cli_settings_text(const char *head, const sa3d_sa3d_matcher_params *p);

/* Commands that score a dataset split (eval, pck): the dataset options they share, checked and opened in one
 * place so that both accept the same spellings and give the same messages. */
typedef struct cli_dataset_opts {
    const char *root;             /* --dataset DIR (required; each command says so in its own message) */
    const char *kind_s;           /* --kind, "spair" by default */
    const char *split;            /* --split, "test" by default */
    const char *categories;       /* --categories LIST, NULL = all */
    int strict;                   /* --strict */
    sa3d_dataset_kind kind;       /* kind_s parsed, set by cli_dataset_check */
} cli_dataset_opts;
cli_dataset_opts cli_dataset_opts_default(void);
/* Matches argv[*i] against --dataset, --kind, --split, --categories and --strict; 1 when taken, 0 when it is
 * another argument, -1 after a usage error (a missing value). */
int cli_dataset_arg(const char *cmd, int argc, char **argv, int *i, cli_dataset_opts *o);
/* --kind spair | pfpascal | ap10k -> o->kind; 1, or 0 after printing a usage error. Also checks --split:
 * SPair and PF-PASCAL know trn, val and test; AP-10K also its other split folders (test_cross_species, ...),
 * which the reader validates. */
int cli_dataset_check(const char *cmd, cli_dataset_opts *o);
/* Opens the dataset (warnings through cli_warn) and loads the split. On failure err says why and *ds is NULL
 * or open without the split; sa3d_dataset_close takes either. */
sa3d_status cli_dataset_open(const cli_dataset_opts *o, sa3d_dataset **ds, sa3d_error *err);
/* The split's malformed pair records that were skipped: their count in count (for a report's meta) and, when there
 * were any, "<sep><count> malformed pair records skipped" in note (else ""), for a report's title. */
void cli_skipped_records(const sa3d_dataset *ds, const char *split, const char *sep, char count[16], char note[80]);

/* Basename without directory and extension ("a/b/2008_00.jpg" -> "2008_00"), into buf. */
void cli_stem(const char *path, char *buf, size_t n);

int cmd_forward(int argc, char **argv);
int cmd_features(int argc, char **argv);
int cmd_depth(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_pck(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_synth3d(int argc, char **argv);
int cmd_build_prior(int argc, char **argv);
int cmd_show_prior(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_match(int argc, char **argv);

#endif
