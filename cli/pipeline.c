/* The network commands' loop over image files (features, depth) as a three-stage pipeline.
 *
 * Each image goes through prepare (is its output up to date? decode, preprocess), run (the network) and finish
 * (post-process, write the files). At step k, image k is prepared and image k - 2 finished, each on a helper
 * thread, while the calling thread runs the network on image k - 1. A GPU runs ViT-B/14 at 840 on an image
 * and its mirror in about 16 ms (fp16); decoding a 500 x 375 JPEG, resizing it and its mirror to 840 x 840 and
 * the fsync'ed write of the two maps (22 MB) took 84 ms on the 2-core VM, so one after another the GPU would
 * sit idle most of the time.
 *
 * Why the outputs cannot depend on the overlap: only run touches the model and its workspace, always from the
 * calling thread and in image order; each image's buffers live in a slot of its own (image i: slot i % 3), which
 * prepare fills, run reads and adds to, finish reads and release frees. tests/cli_networks.sh checks that every
 * output is the bytes of a run on that image alone, with the pipeline and without it.
 *
 * When the network runs on the CPU it keeps the stages one after another: the network's OpenMP team uses every
 * core, and a helper thread beside it slows the team's barriers by more than the overlap saves (bench/
 * run_pipeline.sh on the 2-core VM: 0.88x with the tiny fixture model at 224, 0.93x at 840). SA3D_PIPELINE=1 or 0
 * turns the helpers on or off whatever the device. Their OpenMP loops get one thread on the CPU and the
 * --threads count when the network runs on a GPU.
 *
 * Failures are reported in image order after an image's last stage. SIGINT stops the loop between steps and
 * drops the images still in flight: their files were never started, so a resumed run redoes them. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "cli.h"

typedef struct slot_state {
    int busy;                      /* holds an image that has not been reported yet */
    const char *image;
    char stem[512];
    int skip;                      /* up to date: nothing to run or write */
    sa3d_status s;                 /* the first failed stage's status */
    sa3d_error err;
} slot_state;

enum { PREPARE, RUN, FINISH };

typedef struct stage_call {
    const cli_image_stages *st;
    void *ctx;
    slot_state *slot;              /* NULL: nothing to do at this step */
    int slot_index, stage, threads;
} stage_call;

static void call_stage(stage_call *c) {
    slot_state *sl = c->slot;
    if (!sl) return;
    if (c->stage == PREPARE) sl->s = c->st->prepare(c->ctx, c->slot_index, sl->image, sl->stem, &sl->skip, &sl->err);
    else if (sl->s || sl->skip) return;
    else if (c->stage == RUN) sl->s = c->st->run(c->ctx, c->slot_index, &sl->err);
    else sl->s = c->st->finish(c->ctx, c->slot_index, &sl->err);
}

static void *helper_main(void *arg) {
    stage_call *c = arg;
#ifdef _OPENMP
    omp_set_num_threads(c->threads);   /* this thread's own setting; BLAS's is global and left alone */
#endif
    call_stage(c);
    return NULL;
}

/* One step: calls[0] (run) on this thread, calls[1] and calls[2] (prepare, finish) on helper threads, or inline
 * where the pipeline is off or a thread cannot be started; returns when all three are done. */
static void step(stage_call calls[3], int threaded) {
    pthread_t tid[3];
    int started[3] = { 0, 0, 0 };
    for (int i = 1; i < 3; i++) {
        if (threaded && calls[i].slot) started[i] = pthread_create(&tid[i], NULL, helper_main, &calls[i]) == 0;
        if (!started[i]) call_stage(&calls[i]);
    }
    call_stage(&calls[0]);
    for (int i = 1; i < 3; i++)
        if (started[i]) pthread_join(tid[i], NULL);
}

/* Two images with one stem would write the same files (and the second would find the first's "up to date"). */
typedef struct named_image {
    char stem[512];
    const char *path;
} named_image;

static int by_stem(const void *a, const void *b) {
    return strcmp(((const named_image *)a)->stem, ((const named_image *)b)->stem);
}

static int check_stems(const char *cmd, const cli_net_args *a) {
    named_image *v = malloc((size_t)a->n_images * sizeof *v);
    if (!v) return cli_usage_error(cmd, "out of memory");
    for (int i = 0; i < a->n_images; i++) {
        cli_stem(a->images[i], v[i].stem, sizeof v[i].stem);
        v[i].path = a->images[i];
    }
    qsort(v, (size_t)a->n_images, sizeof *v, by_stem);
    int rc = EXIT_OK;
    for (int i = 1; i < a->n_images && rc == EXIT_OK; i++)
        if (!strcmp(v[i - 1].stem, v[i].stem))
            rc = cli_usage_error(cmd, "%s and %s would both write %s.* in %s: give them separate --out folders",
                                 v[i - 1].path, v[i].path, v[i].stem, a->out_dir);
    free(v);
    return rc;
}

int cli_net_each_image(const char *cmd, const cli_net_args *a, const sa3d_model *m, const cli_image_stages *st,
                       void *ctx) {
    int rc = check_stems(cmd, a);
    if (rc != EXIT_OK) return rc;
    cli_install_sigint();
    const char *env = getenv("SA3D_PIPELINE");
    int on_cpu = !strcmp(sa3d_model_device(m), "cpu");
    int threaded = env && *env ? strcmp(env, "0") != 0 : !on_cpu;
    int threads = on_cpu ? 1 : a->threads_s ? atoi(a->threads_s) : 0;   /* checked by cli_net_open */
    if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    slot_state slots[CLI_PIPELINE_SLOTS];
    memset(slots, 0, sizeof slots);
    int failed = 0, kept = 0, reported = 0, n = a->n_images, k;
    cli_progress prog;
    cli_progress_start(&prog, cmd, n, a->quiet);
    static const int stage_of[3] = { RUN, PREPARE, FINISH }, lag[3] = { 1, 0, 2 };   /* the order step() wants */
    for (k = 0; k < n + 2 && !cli_interrupted; k++) {
        stage_call calls[3];
        for (int i = 0; i < 3; i++) {   /* run image k - 1, prepare image k, finish image k - 2 */
            int img = k - lag[i], si = (img + CLI_PIPELINE_SLOTS) % CLI_PIPELINE_SLOTS;
            calls[i] = (stage_call){ st, ctx, img >= 0 && img < n ? &slots[si] : NULL, si, stage_of[i], threads };
        }
        if (k < n) {
            slot_state *sl = calls[1].slot;
            memset(sl, 0, sizeof *sl);
            sl->busy = 1;
            sl->image = a->images[k];
            cli_stem(sl->image, sl->stem, sizeof sl->stem);
        }
        step(calls, threaded);
        if (k >= 2) {   /* report image k - 2 */
            slot_state *sl = &slots[(k - 2) % CLI_PIPELINE_SLOTS];
            if (sl->s) {
                fprintf(stderr, "semalign3d %s: %s\n", cmd, sl->err.msg[0] ? sl->err.msg : "out of memory");
                failed++;
            }
            kept += !sl->s && sl->skip;
            reported++;
            st->release(ctx, (k - 2) % CLI_PIPELINE_SLOTS);
            sl->busy = 0;
            cli_progress_step(&prog, sl->stem);
        }
    }
    for (int i = 0; i < CLI_PIPELINE_SLOTS; i++)   /* after SIGINT: the images still in flight */
        if (slots[i].busy) st->release(ctx, i);
    cli_progress_end(&prog);
    if (!a->quiet)   /* a resumed run says what it redid */
        fprintf(stderr, "%s: %d computed, %d up to date (kept), %d failed\n", cmd, reported - failed - kept, kept,
                failed);
    sa3d_error err = { 0 };
    if (cli_interrupted) {
        err.code = SA3D_ERR_CANCELLED;
        snprintf(err.msg, sizeof err.msg, "interrupted");
        return cli_run_error(cmd, &err);
    }
    if (!failed) return EXIT_OK;
    snprintf(err.msg, sizeof err.msg, "%d of %d images failed", failed, n);
    return cli_run_error(cmd, &err);
}
