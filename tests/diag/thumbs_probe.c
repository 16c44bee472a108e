/* thumbs_probe: writes a run's report.html the way a caller that knows the data
 * layer does: diagnose, hand data's thumbnail encoder to the report writer,
 * write. test_thumbnails.py checks the embedded images.
 *   thumbs_probe RUN REPORT [--no-decoder]
 * Exit status 0, or 1 with lp_errmsg() on stderr. */
#include "data/thumbnail.h"
#include "diag/diag.h"
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: thumbs_probe RUN REPORT [--no-decoder]\n");
        return 2;
    }
    lp_diagnosis *d;
    if (lp_diagnose_run(argv[1], NULL, &d) != LP_OK) {
        fprintf(stderr, "thumbs_probe: %s\n", lp_errmsg());
        return 1;
    }
    if (argc < 4 || strcmp(argv[3], "--no-decoder")) lp_diagnosis_set_thumbnailer(d, lp_image_thumbnail_png, NULL);
    lp_status s = lp_diagnosis_write_html(d, argv[2]);
    if (s) fprintf(stderr, "thumbs_probe: %s\n", lp_errmsg());
    lp_diagnosis_free(d);
    return s ? 1 : 0;
}
