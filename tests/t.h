/* Minimal test harness (STYLE.md section 10): numbered cases, check macros that print file:line, the case,
 * the values and err.msg, fixture-root discovery. Each test program defines cases with T_CASE and a table. */
#ifndef SA3D_T_H
#define SA3D_T_H

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int t_failures;
static const char *t_case_id = "";

#define T_FAIL(...) do { fprintf(stderr, "%s:%d: case %s: ", __FILE__, __LINE__, t_case_id); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); t_failures++; } while (0)
#define T_CHECK(cond) do { if (!(cond)) T_FAIL("check failed: %s", #cond); } while (0)
#define T_OK(expr, errp) do { sa3d_status t_s_ = (expr); if (t_s_ != SA3D_OK) \
    T_FAIL("%s returned %s: %s", #expr, sa3d_status_name(t_s_), (errp)->msg); } while (0)
#define T_STATUS(expr, want, errp) do { sa3d_status t_s_ = (expr); if (t_s_ != (want)) \
    T_FAIL("%s returned %s, expected %s (msg: %s)", #expr, sa3d_status_name(t_s_), sa3d_status_name(want), \
           (errp)->msg); } while (0)
#define T_NEAR(a, b, tol) do { double t_a_ = (a), t_b_ = (b); if (!(fabs(t_a_ - t_b_) <= (tol))) \
    T_FAIL("%s = %.17g, %s = %.17g, |diff| %.3g > %.3g", #a, t_a_, #b, t_b_, fabs(t_a_ - t_b_), \
           (double)(tol)); } while (0)
#define T_CONTAINS(str, sub) do { if (!strstr((str), (sub))) \
    T_FAIL("'%s' does not contain '%s'", (str), (sub)); } while (0)

typedef struct t_case { const char *id; const char *name; void (*fn)(void); } t_case;

/* Runs every case, or only the one named by argv[1]. Returns the process exit code. */
static int t_run(const t_case *cases, int n, int argc, char **argv) {
    int ran = 0;
    for (int i = 0; i < n; i++) {
        if (argc > 1 && strcmp(argv[1], cases[i].id) != 0) continue;
        t_case_id = cases[i].id;
        int before = t_failures;
        cases[i].fn();
        printf("%-6s %-60s %s\n", cases[i].id, cases[i].name, t_failures == before ? "ok" : "FAILED");
        ran++;
    }
    if (ran == 0) { fprintf(stderr, "no case matches '%s'\n", argc > 1 ? argv[1] : ""); return 1; }
    return t_failures ? 1 : 0;
}

/* The fixture root: $SEMALIGN3D_FIXTURES, else the directory CMake compiled in. */
__attribute__((unused)) static const char *t_fixtures_root(void) {
    const char *env = getenv("SEMALIGN3D_FIXTURES");
    if (env && *env) return env;
#ifdef SA3D_FIXTURES_DIR
    return SA3D_FIXTURES_DIR;
#else
    return "../shared/fixtures";
#endif
}

static int t_cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Every model fixture directory under the fixture root (config.json, reference.safetensors, and
 * model.safetensors or its shard index), sorted, as malloc'd paths in *out (free each and the array).
 * Returns the count, or -1 when the root cannot be opened. New fixture directories need no code change. */
__attribute__((unused)) static int t_model_fixture_dirs(char ***out) {
    const char *root = t_fixtures_root();
    *out = NULL;
    DIR *d = opendir(root);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char dir[4096], a[4200], b[4200], c[4200], i[4200];
        snprintf(dir, sizeof dir, "%s/%s", root, e->d_name);
        snprintf(a, sizeof a, "%s/config.json", dir);
        snprintf(b, sizeof b, "%s/reference.safetensors", dir);
        snprintf(c, sizeof c, "%s/model.safetensors", dir);
        snprintf(i, sizeof i, "%s/model.safetensors.index.json", dir);
        if (access(a, R_OK) || access(b, R_OK) || (access(c, R_OK) && access(i, R_OK))) continue;
        char **grown = (char **)realloc(*out, (size_t)(n + 1) * sizeof *grown);
        if (!grown) break;
        *out = grown;
        (*out)[n++] = strdup(dir);
    }
    closedir(d);
    if (n) qsort(*out, (size_t)n, sizeof **out, t_cmp_str);
    return n;
}

#endif
