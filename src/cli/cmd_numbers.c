/* Strict parsing of the numbers and sizes given on the command line: the whole
 * argument must be the number, in range. strtol and strtod alone also take leading
 * spaces, signs, hex, "inf" and "nan", and wrap or saturate out-of-range values, so
 * " -5" or "99999999999" would slip through as something else. Named cmd_*.c so that
 * the CLI's source glob builds it. */
#include "cli.h"
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* s is [-]DIGITS, nothing else. */
static bool integer_syntax(const char *s) {
    if (*s == '-') s++;
    if (!is_digit(*s)) return false;
    while (is_digit(*s)) s++;
    return *s == 0;
}

/* s is [-](DIGITS[.[DIGITS]] | .DIGITS)[(e|E)[+|-]DIGITS], nothing else. */
static bool decimal_syntax(const char *s) {
    if (*s == '-') s++;
    bool digits = false;
    for (; is_digit(*s); s++) digits = true;
    if (*s == '.')
        for (s++; is_digit(*s); s++) digits = true;
    if (!digits) return false;
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-') s++;
        if (!is_digit(*s)) return false;
        while (is_digit(*s)) s++;
    }
    return *s == 0;
}

bool cli_parse_int(const char *s, long lo, long hi, long *out) {
    if (!s || !integer_syntax(s)) return false;
    errno = 0;
    long v = strtol(s, NULL, 10);
    if (errno || v < lo || v > hi) return false;
    *out = v;
    return true;
}

bool cli_parse_u64(const char *s, uint64_t *out) {
    if (!s || *s == '-' || !integer_syntax(s)) return false;
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno) return false;
    *out = (uint64_t)v;
    return true;
}

bool cli_parse_double(const char *s, double *out) {
    if (!s || !decimal_syntax(s)) return false;
    double v = strtod(s, NULL);
    if (!isfinite(v)) return false; /* overflow; an underflow to 0 or a denormal is a number */
    *out = v;
    return true;
}

bool cli_parse_nonnegative(const char *value, void *dest) {
    double v;
    if (!cli_parse_double(value, &v) || v < 0) return false;
    *(double *)dest = v == 0 ? 0 : v; /* "-0" as 0 */
    return true;
}

bool cli_parse_fraction(const char *value, void *dest) {
    double v;
    if (!cli_parse_double(value, &v) || !(v >= 0 && v < 1)) return false;
    *(double *)dest = v == 0 ? 0 : v;
    return true;
}

/* s[0..n) as an integer in [lo, hi]. */
static bool parse_part(const char *s, size_t n, long lo, long hi, long *out) {
    char buf[24];
    if (n >= sizeof buf) return false;
    memcpy(buf, s, n);
    buf[n] = 0;
    return cli_parse_int(buf, lo, hi, out);
}

bool cli_parse_size(const char *s, int min_side, bool square_ok, int *w, int *h) {
    const char *x = strchr(s, 'x');
    long a, b;
    if (!x) {
        if (!square_ok || !cli_parse_int(s, min_side, CLI_MAX_SIDE, &a)) return false;
        b = a;
    } else if (!parse_part(s, (size_t)(x - s), min_side, CLI_MAX_SIDE, &a) ||
               !parse_part(x + 1, strlen(x + 1), min_side, CLI_MAX_SIDE, &b)) {
        return false;
    }
    if (a * b > CLI_MAX_PIXELS) return false;
    *w = (int)a;
    *h = (int)b;
    return true;
}

bool cli_head_top(bool head_seen, bool top_seen, const char **top) {
    if (head_seen && !top_seen) *top = "none";
    return !head_seen || !strcmp(*top, "none");
}
