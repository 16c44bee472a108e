/* ImageNet's class names, for converted 1000-class models. The list is
 * data/imagenet_classes.txt, compiled in by CMakeLists.txt (as bytes, in
 * imagenet_classes.inc), so that nothing is read from an install path. */
#include "weights.h"
#include <cjson/cJSON.h>
#include <string.h>

static const unsigned char text[] = {
#include "imagenet_classes.inc"
};

lp_status lp_imagenet_classes_json(char **out) {
    *out = NULL;
    cJSON *a = cJSON_CreateArray();
    if (!a) return lp_fail(LP_ERR_NOMEM, "out of memory");
    int n = 0;
    for (const char *s = (const char *)text; *s;) {
        size_t k = strcspn(s, "\n");
        if (k && s[0] != '#') { /* '#': the file's comments */
            char name[128];
            snprintf(name, sizeof name, "%.*s", (int)(k < sizeof name ? k : sizeof name - 1), s);
            cJSON_AddItemToArray(a, cJSON_CreateString(name));
            n++;
        }
        s += k + (s[k] == '\n');
    }
    lp_status st = LP_OK;
    if (n != 1000) st = lp_fail(LP_ERR_FORMAT, "the built-in ImageNet class list has %d names, expected 1000; rebuild loupe", n);
    else if (!(*out = cJSON_PrintUnformatted(a))) st = lp_fail(LP_ERR_NOMEM, "out of memory");
    cJSON_Delete(a);
    return st;
}
