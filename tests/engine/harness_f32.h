/* Raw float32 files DIR/NAME.f32, as the op harnesses (bn_harness, conv_harness)
 * exchange tensors with their Python tests. HARNESS_NAME names the program in errors. */
#ifndef HARNESS_F32_H
#define HARNESS_F32_H
#include <stdbool.h>
#include <stdio.h>

static bool write_f32(const char *dir, const char *name, const float *a, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.f32", dir, name);
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(a, sizeof(float), n, f) == n;
    if (f && fclose(f)) ok = false;
    if (!ok) fprintf(stderr, "%s: cannot write %s\n", HARNESS_NAME, path);
    return ok;
}

/* The file must hold exactly n values. */
static bool read_f32(const char *dir, const char *name, float *a, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.f32", dir, name);
    FILE *f = fopen(path, "rb");
    bool ok = f && fread(a, sizeof(float), n, f) == n && fgetc(f) == EOF;
    if (f) fclose(f);
    if (!ok) fprintf(stderr, "%s: %s: missing, or not %zu float32 values\n", HARNESS_NAME, path, n);
    return ok;
}
#endif
