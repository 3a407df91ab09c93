/* semalign3d: the command-line front end. A table of commands, each in cli/cmd_<name>.c; the commands only
 * parse options, call the library and print. */
#include <stdio.h>
#include <string.h>
#include "cli.h"
#include "semalign3d/status.h"

static const cli_command commands[] = {
    { "forward", cmd_forward, "run a network (DINOv2 or Depth Anything V2) on a pixel tensor" },
    { "features", cmd_features, "DINOv2 feature maps of images (GeoAware-SC input convention)" },
    { "depth", cmd_depth, "Depth Anything V2 depth maps of images, plus a coloured PNG" },
    { "eval", cmd_eval, "run a matching method over a dataset split and report PCK" },
    { "synth-spair", cmd_synth, "write a synthetic dataset in the SPair-71k layout with known matches" },
    { "synth3d", cmd_synth3d, "write the ground-truth 3D benchmark (rendered articulated objects, SPair layout)" },
    { "pck", cmd_pck, "score a predictions file (JSON lines) against a dataset split" },
    { "build-prior", cmd_build_prior, "build the 3D object-class representation (prior) of a category" },
    { "show-prior", cmd_show_prior, "summarise a prior file; PLY point cloud and PNG render" },
    { "match", cmd_match, "SemAlign3D matches of points between two images through a prior" },
    { "demo", cmd_demo, "the main job without downloads: synthetic category, prior, baseline vs SemAlign3D" },
};
#define N_COMMANDS ((int)(sizeof commands / sizeof commands[0]))

static void usage(FILE *f) {
    fprintf(f, "semalign3d %s: semantic correspondence by aligning 3D object-class representations\n\n", sa3d_version());
    fprintf(f, "usage: semalign3d <command> [options] [args]\n\ncommands:\n");
    for (int i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'semalign3d <command> --help' describes a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("semalign3d %s\n", sa3d_version());
        return EXIT_OK;
    }
    cli_install_fatal_signals();
    for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "semalign3d: unknown command '%s'; see 'semalign3d --help'\n", argv[1]);
    return EXIT_USAGE;
}
