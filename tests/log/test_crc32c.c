/* log_crc32c: CRC32C against published vectors (RFC 3720 B.4 and the usual
 * check value), hardware path against the table path, incremental use, and
 * TensorFlow's mask. */
#include "log/crc32c.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

typedef uint32_t (*crc_fn)(uint32_t, const void *, size_t);

static void vectors(crc_fn f, const char *name) {
    uint8_t buf[32];
    CHECK(f(0, "123456789", 9) == 0xE3069283u, "%s: check value %08x", name, f(0, "123456789", 9));
    memset(buf, 0, 32);
    CHECK(f(0, buf, 32) == 0x8A9136AAu, "%s: 32 zeros %08x", name, f(0, buf, 32));
    memset(buf, 0xff, 32);
    CHECK(f(0, buf, 32) == 0x62A8AB43u, "%s: 32 0xff %08x", name, f(0, buf, 32));
    for (int i = 0; i < 32; i++) buf[i] = (uint8_t)i;
    CHECK(f(0, buf, 32) == 0x46DD794Eu, "%s: 0..31 %08x", name, f(0, buf, 32));
    for (int i = 0; i < 32; i++) buf[i] = (uint8_t)(31 - i);
    CHECK(f(0, buf, 32) == 0x113FDB5Cu, "%s: 31..0 %08x", name, f(0, buf, 32));
    CHECK(f(0, "", 0) == 0, "%s: empty", name);
    /* Extending piece by piece equals one call. */
    const char *s = "The quick brown fox jumps over the lazy dog";
    size_t n = strlen(s);
    for (size_t cut = 0; cut <= n; cut++)
        CHECK(f(f(0, s, cut), s + cut, n - cut) == f(0, s, n), "%s: extend at %zu", name, cut);
}

int main(void) {
    vectors(lp_crc32c_portable, "portable");
    vectors(lp_crc32c, "dispatch");
    printf("hardware crc32c: %s\n", lp_crc32c_hw_available() ? "yes (sse4.2)" : "no (table fallback)");
    /* Every length and alignment: dispatch (hardware when present) == table. */
    enum { N = 1100 };
    uint8_t *buf = malloc(N + 8);
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < N + 8; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
    for (int off = 0; off < 8; off++)
        for (int len = 0; len <= N; len += (len < 80 ? 1 : 37))
            CHECK(lp_crc32c(7, buf + off, (size_t)len) == lp_crc32c_portable(7, buf + off, (size_t)len),
                  "hw/table differ at offset %d length %d", off, len);
    free(buf);
    /* Mask: the formula, and that it changes the value. */
    uint32_t c = 0xE3069283u;
    CHECK(lp_crc32c_mask(c) == (((c >> 15) | (c << 17)) + 0xa282ead8u), "mask formula");
    CHECK(lp_crc32c_mask(0) == 0xa282ead8u, "mask(0)");
    if (failures) fprintf(stderr, "%d failure(s)\n", failures);
    else printf("log_crc32c: all passed\n");
    return failures ? 1 : 0;
}
