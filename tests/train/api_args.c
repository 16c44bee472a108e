/* The public API as a C program sees it (loupe.h and the shared library only): the
 * functions that return a status refuse NULL pointers and a negative count with
 * LP_ERR_ARG, the header's convention, instead of crashing. */
#include "loupe.h"
#include <stdbool.h>
#include <stdio.h>

int main(void) {
    int failures = 0;
    lp_model_params p = lp_model_default_params();
    p.arch = "tiny";
    p.in_height = p.in_width = 16;
    lp_model *m = NULL;
    if (lp_model_create(&p, &m) != LP_OK) {
        printf("FAIL lp_model_create: %s\n", lp_errmsg());
        return 1;
    }
    float probs[2];
    lp_status st[1];
    const char *one[1] = {"x.png"};
    char *text = NULL;
    uint8_t *png = NULL;
    size_t len = 0;
    lp_eval_result *ev = NULL;
    lp_model *other = NULL;
    lp_data_params dp = lp_data_default_params();
    lp_bench_params bp = lp_bench_default_params();
    struct {
        lp_status got;
        const char *what;
    } calls[] = {
        {lp_model_load(NULL, &other), "lp_model_load(NULL, &m)"},
        {lp_model_load("x.safetensors", NULL), "lp_model_load(path, NULL)"},
        {lp_model_create(NULL, &other), "lp_model_create(NULL, &m)"},
        {lp_model_create(&p, NULL), "lp_model_create(&p, NULL)"},
        {lp_model_save(NULL, "x.safetensors"), "lp_model_save(NULL, path)"},
        {lp_model_save(m, NULL), "lp_model_save(m, NULL)"},
        {lp_model_summary(NULL, &text), "lp_model_summary(NULL, &text)"},
        {lp_model_summary(m, NULL), "lp_model_summary(m, NULL)"},
        {lp_checkpoint_set_meta(NULL, "temperature", "1"), "lp_checkpoint_set_meta(NULL, ...)"},
        {lp_data_check(&dp, NULL), "lp_data_check(&p, NULL)"},
        {lp_image_thumbnail_png("x.png", 64, NULL, NULL, &len), "lp_image_thumbnail_png(.., NULL, &len)"},
        {lp_image_thumbnail_png(NULL, 64, NULL, &png, &len), "lp_image_thumbnail_png(NULL, ..)"},
        {lp_train(NULL, NULL, NULL), "lp_train(NULL, ..)"},
        {lp_evaluate(NULL, "dir", 4, 0, &ev), "lp_evaluate(NULL, ..)"},
        {lp_evaluate(m, NULL, 4, 0, &ev), "lp_evaluate(m, NULL, ..)"},
        {lp_evaluate(m, "dir", 4, 0, NULL), "lp_evaluate(.., NULL)"},
        {lp_predict_file(NULL, "x.png", probs), "lp_predict_file(NULL, ..)"},
        {lp_predict_file(m, NULL, probs), "lp_predict_file(m, NULL, probs)"},
        {lp_predict_file(m, "x.png", NULL), "lp_predict_file(m, path, NULL)"},
        {lp_predict_files(m, NULL, 1, probs, st), "lp_predict_files(m, NULL, 1, ..)"},
        {lp_predict_files(m, one, 1, probs, NULL), "lp_predict_files(.., NULL status)"},
        {lp_predict_files(m, one, -1, probs, st), "lp_predict_files(.., n -1, ..)"},
        {lp_diagnose_run("run", NULL, NULL), "lp_diagnose_run(run, NULL, NULL)"},
        {lp_bench_run(&bp, NULL), "lp_bench_run(&p, NULL)"},
    };
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        const bool ok = calls[i].got == LP_ERR_ARG;
        printf("%-44s -> %s %s\n", calls[i].what, lp_status_name(calls[i].got), ok ? "ok" : "FAIL (want bad argument)");
        failures += !ok;
    }
    if (lp_predict_files(m, NULL, 0, NULL, NULL) != LP_OK) {
        printf("FAIL lp_predict_files of 0 files: %s\n", lp_errmsg());
        failures++;
    }
    lp_model_free(m);
    printf("%s\n", failures ? "FAILED" : "all refused");
    return failures ? 1 : 0;
}
