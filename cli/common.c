/* Option parsing, error printing, progress lines and SIGINT handling shared by the commands. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "base/base.h"
#include "cli.h"

volatile sig_atomic_t cli_interrupted;

/* Ends the process as the signal would, without the temp file of a write it interrupts. */
static void on_fatal_signal(int sig) {
    sa3d_atomic_remove_temps();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* A signal the process was started with ignored (a background job of a script, for SIGINT) stays ignored. */
static void set_handler(void (*fn)(int)) {
    const int sigs[2] = { SIGINT, SIGTERM };
    for (int k = 0; k < 2; k++) {
        struct sigaction old, sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = fn;
        if (sigaction(sigs[k], NULL, &old) == 0 && old.sa_handler != SIG_IGN) sigaction(sigs[k], &sa, NULL);
    }
}

void cli_install_fatal_signals(void) { set_handler(on_fatal_signal); }

static void on_sigint(int sig) {
    (void)sig;
    cli_interrupted = 1;
    set_handler(on_fatal_signal);   /* the first asks the run to stop cleanly; a second ends it */
}

int cli_cancel_requested(void *user) {
    (void)user;
    return cli_interrupted;
}

void cli_install_sigint(void) { set_handler(on_sigint); }   /* SIGTERM too: timeout, docker stop */

int cli_opt(const char *cmd, int argc, char **argv, int *i, const char *name, const char **value) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0) return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
    } else {
        if (a[n] != '\0') return 0;
        if (*i + 1 >= argc) {
            cli_usage_error(cmd, "%s needs a value", name);
            return -1;
        }
        *value = argv[++*i];
    }
    if (!**value) {   /* no option takes an empty value; as a folder, "" + "/name" would write under / */
        cli_usage_error(cmd, "%s: empty value", name);
        return -1;
    }
    return 1;
}

int cli_flag(char **argv, int i, const char *name) { return strcmp(argv[i], name) == 0; }

int cli_int(const char *cmd, const char *opt, const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        cli_usage_error(cmd, "%s %s: expected an integer in [%ld, %ld]", opt, s, lo, hi);
        return 0;
    }
    *out = (int)v;
    return 1;
}

int cli_real(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        cli_usage_error(cmd, "%s %s: expected a number in [%g, %g]", opt, s, lo, hi);
        return 0;
    }
    *out = v;
    return 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "semalign3d %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nsee 'semalign3d %s --help'\n", cmd);
    va_end(ap);
    return EXIT_USAGE;
}

int cli_run_error(const char *cmd, const sa3d_error *err) {
    fprintf(stderr, "semalign3d %s: %s\n", cmd, err->msg[0] ? err->msg : sa3d_status_name(err->code));
    return err->code == SA3D_ERR_CANCELLED ? EXIT_INTERRUPTED : EXIT_RUN;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_progress_start(cli_progress *p, const char *what, long total, int quiet) {
    memset(p, 0, sizeof *p);
    p->what = what;
    p->total = total;
    p->quiet = quiet;
    p->tty = isatty(STDERR_FILENO);
    p->t0 = p->last = now_s();
}

void cli_progress_step(cli_progress *p, const char *item) {
    p->done++;
    if (p->quiet) return;
    double t = now_s(), el = t - p->t0;
    int final = p->done == p->total;
    if (!p->tty && !final && t - p->last < 5.0) return;
    p->last = t;
    double eta = p->done ? el / (double)p->done * (double)(p->total - p->done) : 0.0;
    fprintf(stderr, "%s%s %ld/%ld (%.0f%%) %s  elapsed %.0fs  eta %.0fs%s", p->tty ? "\r\033[K" : "", p->what,
            p->done, p->total, p->total ? 100.0 * (double)p->done / (double)p->total : 100.0, item ? item : "",
            el, eta, p->tty ? "" : "\n");
    fflush(stderr);
}

void cli_progress_end(cli_progress *p) {
    if (!p->quiet && p->tty) fputc('\n', stderr);
}

void cli_stem(const char *path, char *buf, size_t n) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(buf, n, "%s", b);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf) *dot = '\0';
}

void cli_warn(void *user, const char *msg) {
    (void)user;
    fprintf(stderr, "semalign3d: warning: %s\n", msg);
}

/* ---- dataset commands (eval, pck) ---- */

cli_dataset_opts cli_dataset_opts_default(void) {
    cli_dataset_opts o;
    memset(&o, 0, sizeof o);
    o.kind_s = "spair";
    o.split = "test";
    o.kind = SA3D_DATASET_SPAIR;
    return o;
}

int cli_dataset_arg(const char *cmd, int argc, char **argv, int *i, cli_dataset_opts *o) {
    int r;
    if (cli_flag(argv, *i, "--strict")) { o->strict = 1; return 1; }
    if ((r = cli_opt(cmd, argc, argv, i, "--dataset", &o->root)) ||
        (r = cli_opt(cmd, argc, argv, i, "--split", &o->split)) ||
        (r = cli_opt(cmd, argc, argv, i, "--kind", &o->kind_s)) ||
        (r = cli_opt(cmd, argc, argv, i, "--categories", &o->categories)))
        return r;
    return 0;
}

int cli_dataset_check(const char *cmd, cli_dataset_opts *o) {
    if (!strcmp(o->kind_s, "spair")) o->kind = SA3D_DATASET_SPAIR;
    else if (!strcmp(o->kind_s, "pfpascal")) o->kind = SA3D_DATASET_PFPASCAL;
    else if (!strcmp(o->kind_s, "ap10k")) o->kind = SA3D_DATASET_AP10K;
    else return cli_usage_error(cmd, "--kind %s: expected spair, pfpascal or ap10k", o->kind_s), 0;
    if (o->kind != SA3D_DATASET_AP10K && strcmp(o->split, "trn") && strcmp(o->split, "val") &&
        strcmp(o->split, "test"))
        return cli_usage_error(cmd, "--split %s: expected trn, val or test", o->split), 0;
    return 1;
}

sa3d_status cli_dataset_open(const cli_dataset_opts *o, sa3d_dataset **ds, sa3d_error *err) {
    sa3d_dataset_params dp = sa3d_dataset_params_default();
    dp.strict = o->strict;
    dp.kind = o->kind;
    dp.categories = o->categories;
    dp.warn = cli_warn;
    sa3d_status s = sa3d_dataset_open(ds, o->root, &dp, err);
    if (s) return s;
    if (sa3d_dataset_load_split(*ds, o->split, err) < 0) return err && err->code ? err->code : SA3D_ERR_IO;
    int skipped = sa3d_dataset_n_skipped(*ds, o->split);
    if (skipped > 0)   /* the per-record warnings may have scrolled away: the total, once */
        fprintf(stderr, "warning: %s split %s: %d malformed pair records skipped (above); results cover the other %d "
                "pairs (--strict makes a malformed record an error)\n", o->root, o->split, skipped,
                sa3d_dataset_n_pairs(*ds, o->split));
    const char *c;
    for (int k = 0; (c = sa3d_dataset_selected_category(*ds, k)); k++) {   /* a listed category without a pair */
        int found = 0;
        for (int i = 0; i < sa3d_dataset_n_pairs(*ds, o->split) && !found; i++)
            found = !strcmp(sa3d_dataset_pair(*ds, o->split, i)->category, c);
        if (!found) fprintf(stderr, "warning: --categories: %s has no pair in %s split %s\n", c, o->root, o->split);
    }
    return SA3D_OK;
}

void cli_skipped_records(const sa3d_dataset *ds, const char *split, const char *sep, char count[16], char note[80]) {
    int n = sa3d_dataset_n_skipped(ds, split);
    snprintf(count, 16, "%d", n);
    if (n > 0) snprintf(note, 80, "%s%d malformed pair records skipped", sep, n);
    else note[0] = '\0';
}

/* ---- network commands over image files ---- */

int cli_net_arg(const char *cmd, int argc, char **argv, int *i, cli_net_args *a) {
    int r;
    if (cli_flag(argv, *i, "--quiet")) { a->quiet = 1; return 1; }
    if ((r = cli_opt(cmd, argc, argv, i, "--model", &a->model_dir)) ||
        (r = cli_opt(cmd, argc, argv, i, "--out", &a->out_dir)) ||
        (r = cli_opt(cmd, argc, argv, i, "--threads", &a->threads_s)) ||
        (r = cli_opt(cmd, argc, argv, i, "--device", &a->device)) ||
        (r = cli_opt(cmd, argc, argv, i, "--dtype", &a->dtype)) ||
        (r = cli_opt(cmd, argc, argv, i, "--positions", &a->positions)))
        return r;
    if (argv[*i][0] == '-' && argv[*i][1]) return 0;
    a->images[a->n_images++] = argv[*i];   /* images has room for argc entries */
    return 1;
}

int cli_made_by(const sa3d_safetensors *st, const sa3d_model *m, const char *image_digest) {
    const char *id = sa3d_st_metadata(st, "model_id"), *dtype = sa3d_st_metadata(st, "dtype");
    const char *digest = sa3d_st_metadata(st, "image_digest");
    return id && !strcmp(id, sa3d_model_id(m)) && !strcmp(dtype ? dtype : "fp32", sa3d_model_dtype(m)) &&
           image_digest[0] && digest && !strcmp(digest, image_digest);
}

static void digest_text(uint64_t h, char out[17]) { snprintf(out, 17, "%016llx", (unsigned long long)h); }

void cli_file_digest(const char *path, char out[17]) {
    out[0] = '\0';
    struct stat st;
    FILE *f = sa3d_open_regular(path, &st, NULL);   /* a device would never end: the caller's own read says why */
    if (!f) return;
    uint64_t h = SA3D_FNV_OFFSET;
    unsigned char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) h = sa3d_fnv1a(h, buf, n);
    if (!ferror(f)) digest_text(h, out);
    fclose(f);
}

sa3d_status cli_image_bytes(const char *path, char **data, size_t *len, char digest[17], sa3d_error *err) {
    sa3d_status s = sa3d_read_file(path, SA3D_IMAGE_MAX_FILE_BYTES, data, len, err);
    digest[0] = '\0';
    if (!s) digest_text(sa3d_fnv1a(SA3D_FNV_OFFSET, *data, *len), digest);
    return s;
}

sa3d_status cli_image_decode(const char *path, char *data, size_t len, sa3d_image *img, sa3d_error *err) {
    sa3d_status s = sa3d_image_load_memory(img, data, len, path, err);
    if (!s && img->warning[0]) cli_warn(NULL, img->warning);
    sa3d_free(data);
    return s;
}

int cli_model_names_ok(const char *cmd, const char *device, const char *dtype, const char *positions) {
    if (device && strcmp(device, "cpu") && strcmp(device, "cuda"))
        return !cli_usage_error(cmd, "--device %s: expected cpu or cuda", device);
    if (dtype && strcmp(dtype, "fp32") && strcmp(dtype, "fp16") && strcmp(dtype, "bf16"))
        return !cli_usage_error(cmd, "--dtype %s: expected fp32, fp16 or bf16", dtype);
    if (positions && strcmp(positions, "hf") && strcmp(positions, "hub"))
        return !cli_usage_error(cmd, "--positions %s: expected hf or hub", positions);
    return 1;
}

sa3d_status cli_model_kind_check(const sa3d_model *m, const char *opt, const char *dir, sa3d_model_kind want,
                                 sa3d_error *err) {
    if (sa3d_model_get_kind(m) == want) return SA3D_OK;
    return sa3d_fail(err, SA3D_ERR_ARG, "%s %s: not a %s model (config.json model_type)", opt, dir,
                     want == SA3D_MODEL_DINOV2 ? "DINOv2" : "Depth Anything");
}

int cli_net_open(const char *cmd, const cli_net_args *a, sa3d_model_kind kind, sa3d_model **m, sa3d_error *err) {
    int threads = 0;
    if (!a->model_dir || !a->out_dir) return cli_usage_error(cmd, "--model and --out are required");
    if (!cli_model_names_ok(cmd, a->device, a->dtype, a->positions)) return EXIT_USAGE;
    if (!a->n_images) return cli_usage_error(cmd, "no images given");
    if (a->threads_s && !cli_int(cmd, "--threads", a->threads_s, 0, 1024, &threads)) return EXIT_USAGE;
    if (!cli_input_dir_ok(cmd, "--model", a->model_dir)) return EXIT_USAGE;
    sa3d_model_params p = sa3d_model_params_default();
    p.n_threads = threads;
    if (a->device) p.device = a->device;
    if (a->dtype) p.dtype = a->dtype;
    if (a->positions) p.positions = a->positions;
    if (sa3d_model_open(m, a->model_dir, &p, err)) return EXIT_RUN;
    if (cli_model_kind_check(*m, "--model", a->model_dir, kind, err)) {
        sa3d_model_free(*m);
        *m = NULL;
        return EXIT_RUN;
    }
    return sa3d_mkdirs(a->out_dir, err) ? EXIT_RUN : EXIT_OK;
}

int cli_eval_progress(void *user, long done, long total, const char *item) {
    cli_progress *p = user;
    p->total = total;
    p->done = done - 1;
    cli_progress_step(p, item);
    return cli_interrupted;
}

int cli_output_file_ok(const char *cmd, const char *opt, const char *path) {
    if (!path) return 1;
    if (sa3d_dir_exists(path)) return cli_usage_error(cmd, "%s %s: a folder; give a file name", opt, path), 0;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) return 1;   /* the current folder */
    if (slash == dir) slash[1] = '\0';
    else *slash = '\0';
    if (!sa3d_dir_exists(dir))
        return cli_usage_error(cmd, "%s %s: the folder %s does not exist", opt, path, dir), 0;
    return 1;
}

int cli_input_dir_ok(const char *cmd, const char *opt, const char *dir) {
    if (!dir || sa3d_dir_exists(dir)) return 1;
    cli_usage_error(cmd, "%s %s: %s", opt, dir, sa3d_file_exists(dir) ? "a file, not a folder" : "no such folder");
    return 0;
}

int cli_provider_hook(void *user, const char *category, const char *id, int flip) {
    cli_progress *p = user;
    p->done++;
    double t = now_s();
    if (!p->quiet && (p->tty || t - p->last >= 5.0)) {
        p->last = t;
        fprintf(stderr, "%s%s: %ld computed (%s/%s%s)  elapsed %.0fs%s", p->tty ? "\r\033[K" : "", p->what, p->done,
                category, id, flip ? ", mirrored" : "", t - p->t0, p->tty ? "" : "\n");
        fflush(stderr);
    }
    return cli_interrupted;
}

int cli_param_set_arg(const char *cmd, int argc, char **argv, int *i, cli_param_sets *s) {
    const char *v;
    int r = cli_opt(cmd, argc, argv, i, "--set", &v);
    if (r <= 0) return r;
    if (s->n == CLI_MAX_SETS) { cli_usage_error(cmd, "--set: more than %d options", CLI_MAX_SETS); return -1; }
    s->v[s->n++] = v;
    return 1;
}

int cli_param_sets_list_only(const char *cmd, const cli_param_sets *s) {
    for (int k = 0; k < s->n; k++)
        if (!strcmp(s->v[k], "list")) {
            sa3d_sa3d_matcher_params p = sa3d_sa3d_matcher_params_default();
            return cli_param_sets_apply(cmd, s, &p);
        }
    return -1;
}

int cli_param_sets_apply(const char *cmd, const cli_param_sets *s, sa3d_sa3d_matcher_params *p) {
    int list = 0;
    for (int k = 0; k < s->n; k++) {
        if (!strcmp(s->v[k], "list")) { list = 1; continue; }
        sa3d_error err = { 0 };
        if (sa3d_sa3d_matcher_params_set(p, s->v[k], &err)) return cli_usage_error(cmd, "--set: %s", err.msg);
    }
    sa3d_error err = { 0 };   /* values of the right type but out of their domains: refused before any work */
    if (sa3d_sa3d_matcher_params_check(p, &err)) return cli_usage_error(cmd, "--set: %s", err.msg);
    if (!list) return -1;
    char *text = cli_settings_text(NULL, p);
    if (!text) { fprintf(stderr, "semalign3d %s: out of memory\n", cmd); return EXIT_RUN; }
    fputs(text, stdout);
    free(text);
    return EXIT_OK;
}

int cli_align_device(const char *cmd, const char *name, sa3d_sa3d_matcher_params *p) {
    if (!cli_model_names_ok(cmd, name, NULL, NULL)) return 0;
    p->align.device = strcmp(name, "cuda") ? SA3D_ALIGN_ON_CPU : SA3D_ALIGN_ON_CUDA;
    return 1;
}

char *cli_settings_text(const char *head, const sa3d_sa3d_matcher_params *p) {
    /* sized exactly: a truncated text would still compare equal to another truncated one */
    char value[64];
    const char *name;
    size_t cap = (head ? strlen(head) : 0) + 1, len = 0;
    for (int k = 0; (name = sa3d_sa3d_matcher_params_field(p, k, value, sizeof value)); k++)
        cap += strlen(name) + strlen(value) + 2;
    char *text = malloc(cap);
    if (!text) return NULL;
    len += (size_t)snprintf(text, cap, "%s", head ? head : "");
    for (int k = 0; (name = sa3d_sa3d_matcher_params_field(p, k, value, sizeof value)); k++)
        len += (size_t)snprintf(text + len, cap - len, "%s=%s\n", name, value);
    return text;
}
