/* Public dataset check (include/loupe.h, section data). */
#include "data/scan_internal.h"
#include <stdlib.h>
#include <string.h>

struct lp_data_report {
    char *text, *json;
    int num_bad, num_problems;
    int num_images[3];
};

lp_data_params lp_data_default_params(void) {
    lp_data_params p;
    memset(&p, 0, sizeof p);
    p.max_pixels = LP_DEFAULT_MAX_PIXELS;
    p.seed = 1; /* train's default: the validation split reported is the one training holds out */
    return p;
}

lp_status lp_data_check(const lp_data_params *p, lp_data_report **out) {
    lp_clear_error();
    if (!out) return lp_fail(LP_ERR_ARG, "lp_data_check: out is required (NULL given)");
    *out = NULL;
    if (!p || !p->data_dir) return lp_fail(LP_ERR_ARG, "no dataset folder given");
    lp_scan_options o = lp_scan_default_options();
    o.classes = p->classes;
    o.follow_symlinks = p->follow_symlinks != 0;
    o.skip_bad = true;
    o.check_decode = true;
    o.validation_split = p->validation_split;
    o.seed = p->seed;
    o.max_pixels = p->max_pixels;
    o.workers = p->threads;
    lp_dataset *d;
    lp_status s = lp_dataset_scan_collect(p->data_dir, &o, &d);
    if (s) return s;
    lp_data_report *r = lp_calloc(1, sizeof *r);
    if (!r) {
        lp_dataset_free(d);
        return LP_ERR_NOMEM;
    }
    s = lp_dataset_report_text(d, &r->text);
    if (!s) s = lp_dataset_report_json(d, &r->json);
    for (int i = 0; i < 3; i++) {
        r->num_images[i] = d->splits[i] ? d->splits[i]->s.num_samples : -1;
        if (d->splits[i]) r->num_bad += d->splits[i]->s.num_bad;
    }
    r->num_problems = d->num_problems;
    lp_dataset_free(d);
    if (s) {
        lp_data_report_free(r);
        return s;
    }
    *out = r;
    return LP_OK;
}

const char *lp_data_report_text(const lp_data_report *r) { return r->text; }
const char *lp_data_report_json(const lp_data_report *r) { return r->json; }
int lp_data_report_num_bad(const lp_data_report *r) { return r->num_bad; }
int lp_data_report_num_problems(const lp_data_report *r) { return r->num_problems; }
int lp_data_report_num_images(const lp_data_report *r, const char *split) {
    if (!split) return -1;
    int i = strcmp(split, "train") == 0 ? 0 : strcmp(split, "valid") == 0 ? 1 : strcmp(split, "test") == 0 ? 2 : -1;
    return i < 0 ? -1 : r->num_images[i];
}
void lp_data_report_free(lp_data_report *r) {
    if (!r) return;
    free(r->text);
    free(r->json);
    free(r);
}
