/* libFuzzer target: the run-directory readers of `loupe diagnose`
 * (run.json, history.csv, valid_predictions.csv) and the analysis and reports
 * made from what they read (text, JSON, HTML).
 * Input: the three files concatenated, separated by the 4 bytes "\n\0#\n"
 * (a missing part = a missing file). */
#include "fuzz_util.h"
#include "loupe.h"
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const names[3] = {"run.json", "history.csv", "valid_predictions.csv"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char dir[600], paths[3][700], html[700];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "%s/run", fuzz_dir());
        mkdir(dir, 0777);
        for (int i = 0; i < 3; i++) snprintf(paths[i], sizeof paths[i], "%s/%s", dir, names[i]);
        snprintf(html, sizeof html, "%s/report.html", fuzz_dir());
    }
    const uint8_t *p = data, *end = data + size;
    for (int i = 0; i < 3; i++) {
        const uint8_t *q = p;
        while (q + 4 <= end && memcmp(q, "\n\0#\n", 4)) q++;
        if (q + 4 > end) q = end;
        if (p < end || i == 0) fuzz_write(paths[i], p, (size_t)(q - p));
        else unlink(paths[i]);
        p = q < end ? q + 4 : end;
    }
    lp_diagnosis *d = NULL;
    lp_diagnose_params prm = lp_diagnose_default_params();
    if (size && data[0] == '{' && size > 2) prm.patience = data[size - 1] % 4; /* vary the what-if a little */
    if (lp_diagnose_run(dir, &prm, &d) == LP_OK) {
        free(lp_diagnosis_text(d, LP_DIAGNOSIS_FULL));
        free(lp_diagnosis_json(d));
        lp_diagnosis_write_html(d, html);
        lp_diagnosis_temperature_at(d, 1);
        lp_diagnosis_free(d);
    }
    return 0;
}
