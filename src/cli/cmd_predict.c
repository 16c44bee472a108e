/* loupe predict CHECKPOINT FILE_OR_DIR... [--top K] [--json] */
#include "cli.h"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *usage_text =
    "usage: loupe predict CHECKPOINT FILE_OR_DIR... [--top K] [--json] [--threads N]\n"
    "\n"
    "Prints the predicted class and its probability for each image (folders are walked, sorted\n"
    "by path; files in them that are not images are named and skipped), then every class's probability\n"
    "when there are 10 classes or fewer. --top K prints the K most probable classes instead,\n"
    "best first. Uses the checkpoint's preprocessing, input size and calibration temperature.\n"
    "--json prints one object per line: {\"path\": ..., \"class\": ..., \"probs\": [...]}, with\n"
    "\"top\": [{\"class\": ..., \"prob\": ...}, ...] for --top. Exit status 2 if any image could not be read or\n"
    "decoded, or a file named on the command line is not an image.\n";

typedef struct {
    char **v;
    int n, cap;
} paths;

static void push(paths *p, const char *s) {
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->v = realloc(p->v, (size_t)p->cap * sizeof *p->v);
        if (!p->v) {
            fputs("loupe predict: out of memory\n", stderr);
            exit(1);
        }
    }
    if (!(p->v[p->n++] = strdup(s))) {
        fputs("loupe predict: out of memory\n", stderr);
        exit(1);
    }
}

static void paths_free(paths *p) {
    for (int i = 0; i < p->n; i++) free(p->v[i]);
    free(p->v);
    *p = (paths){0};
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The image files under dir (by content), sorted by path; the others are named on stderr
 * and left out, as `data` and `train` leave them out of a dataset. */
static void walk(paths *out, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    paths local = {0};
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(n);
        if (!p) continue;
        snprintf(p, n, "%s/%s", dir, e->d_name);
        push(&local, p);
        free(p);
    }
    closedir(d);
    qsort(local.v, (size_t)local.n, sizeof *local.v, cmp_str);
    for (int i = 0; i < local.n; i++) {
        struct stat st;
        if (lstat(local.v[i], &st) != 0) continue; /* vanished since readdir */
        if (S_ISDIR(st.st_mode)) walk(out, local.v[i]);
        else if (S_ISREG(st.st_mode) && lp_file_is_image(local.v[i]) != 0) push(out, local.v[i]); /* unreadable: fails later */
        else if (S_ISREG(st.st_mode)) fprintf(stderr, "loupe predict: %s: not an image, skipped\n", local.v[i]);
    }
    paths_free(&local);
}

static void json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

typedef struct ranked {
    float p;
    int c;
} ranked;

static int cmp_ranked(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->c - y->c;
}

/* The indices of the n largest probabilities, largest first (ties: lower index first). */
static void top_classes(const float *probs, int k, ranked *buf, int *idx, int n) {
    for (int c = 0; c < k; c++) buf[c] = (ranked){probs[c], c};
    qsort(buf, (size_t)k, sizeof *buf, cmp_ranked);
    for (int j = 0; j < n; j++) idx[j] = buf[j].c;
}

int cmd_predict(int argc, char **argv) {
    int json = 0, threads = 0, top = 0, nargs;
    const cli_option opts[] = {
        CLI_OPT("--json", CLI_FLAG, &json),
        {"--top", CLI_INT, &top, .lo = 1, .hi = 1000000, .expects = "a number of classes, 1 or more"},
        CLI_OPT_THREADS(&threads),
        {0},
    };
    const cli_parser parser = {.cmd = "predict", .options = opts, .max_args = -1};
    int rc = cli_parse_options(&parser, argc, argv, &nargs);
    if (rc == CLI_HELP) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (rc) return rc;
    const char *ckpt = nargs ? argv[1] : NULL;
    paths files = {0};
    for (int i = 2; i <= nargs; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s: no such file or folder", argv[i]);
            cli_error("predict", msg, NULL);
            paths_free(&files);
            return 2;
        }
        if (S_ISDIR(st.st_mode)) walk(&files, argv[i]);
        else push(&files, argv[i]);
    }
    if (ckpt && nargs >= 2 && files.n == 0) {
        cli_error("predict", "no image files in the folders given", "give image files, or folders that hold some");
        return 2;
    }
    if (!ckpt || files.n == 0) {
        cli_error("predict", "needs CHECKPOINT and at least one image file or folder",
                  "usage: loupe predict CHECKPOINT FILE_OR_DIR... [--top K] [--json]");
        paths_free(&files);
        return 2;
    }
    lp_set_threads(threads);
    lp_model *m;
    lp_status s = lp_model_load(ckpt, &m);
    if (s) {
        paths_free(&files);
        return cli_fail("predict", s);
    }
    int k = lp_model_num_classes(m), failed = 0;
    int ntop = top > k ? k : top;
    /* files in chunks: decoded in parallel and run 16 at a time, printed in order */
    enum { CHUNK = 64 };
    float *chunk = malloc((size_t)CHUNK * k * sizeof(float)), *probs = NULL;
    lp_status st[CHUNK];
    int *best = malloc((size_t)(ntop ? ntop : 1) * sizeof(int));
    ranked *rank = malloc((size_t)k * sizeof(ranked));
    bool oom = !chunk || !best || !rank;
    if (oom) fputs("loupe predict: out of memory\n", stderr);
    for (int i = 0; i < files.n && chunk && best && rank; i++) {
        if (i % CHUNK == 0) {
            const int nc = files.n - i < CHUNK ? files.n - i : CHUNK;
            if ((s = lp_predict_files(m, (const char *const *)files.v + i, nc, chunk, st))) {
                fprintf(stderr, "loupe predict: %s\n", lp_errmsg());
                failed++;
                break;
            }
        }
        probs = chunk + (size_t)(i % CHUNK) * k;
        if (st[i % CHUNK]) {
            lp_predict_file(m, files.v[i], probs); /* its message */
            fprintf(stderr, "loupe predict: %s\n", lp_errmsg());
            failed++;
            continue;
        }
        top_classes(probs, k, rank, best, ntop ? ntop : 1);
        if (json) {
            printf("{\"path\":");
            json_string(files.v[i]);
            printf(",\"class\":");
            json_string(lp_model_class_name(m, best[0]));
            printf(",\"probs\":[");
            for (int c = 0; c < k; c++) printf("%s%.9g", c ? "," : "", probs[c]);
            printf("]");
            if (ntop) {
                printf(",\"top\":[");
                for (int j = 0; j < ntop; j++) {
                    printf("%s{\"class\":", j ? "," : "");
                    json_string(lp_model_class_name(m, best[j]));
                    printf(",\"prob\":%.9g}", probs[best[j]]);
                }
                printf("]");
            }
            printf("}\n");
        } else if (ntop) {
            printf("%s:", files.v[i]);
            for (int j = 0; j < ntop; j++) printf("%s %s (%.4f)", j ? ";" : "", lp_model_class_name(m, best[j]), probs[best[j]]);
            printf("\n");
        } else {
            printf("%s: %s (%.4f)", files.v[i], lp_model_class_name(m, best[0]), probs[best[0]]);
            for (int c = 0; c < k && k <= 10; c++) printf("%s%s=%.4f", c ? " " : "  [", lp_model_class_name(m, c), probs[c]);
            printf("%s\n", k <= 10 ? "]" : "");
        }
    }
    free(best);
    free(rank);
    free(chunk);
    paths_free(&files);
    lp_model_free(m);
    return oom ? 1 : failed ? 2 : 0;
}
