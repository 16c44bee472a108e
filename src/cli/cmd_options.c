/* Option parsing shared by the subcommands: one table of option specs per
 * subcommand, one loop, one wording for unknown options and missing or bad
 * values (exit status 2). Named cmd_*.c so that the CLI's source glob builds it. */
#include "cli.h"
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static bool takes_value(const cli_option *o) { return o->kind != CLI_FLAG && o->kind != CLI_FLAG_OFF; }

/* arg names option o as "--name" or, when allowed, "--name=VALUE"; *eq gets VALUE. */
static bool matches(const cli_option *o, const char *arg, bool equals_form, const char **eq) {
    size_t n = strlen(o->name);
    if (strncmp(arg, o->name, n)) return false;
    if (arg[n] == 0) return true;
    if (arg[n] == '=' && equals_form && takes_value(o)) {
        *eq = arg + n + 1;
        return true;
    }
    return false;
}

static bool is_choice(const char *words, const char *v) {
    size_t n = strlen(v);
    for (const char *w = words; *w;) {
        size_t len = strcspn(w, "|");
        if (len == n && !strncmp(w, v, n)) return true;
        w += len + (w[len] == '|');
    }
    return false;
}

/* What a value of o looks like, e.g. "an integer from 1 to 64" or "vgg16 or vgg19";
 * false (and "a value") when the spec says nothing more. */
static bool describe(const cli_option *o, char *buf, size_t size) {
    if (o->expects && o->kind != CLI_CHOICE) {
        snprintf(buf, size, "%s", o->expects);
        return true;
    }
    switch (o->kind) {
    case CLI_INT: case CLI_INT64: case CLI_U64:
        snprintf(buf, size, "an integer from %ld to %ld", o->lo, o->hi);
        break;
    case CLI_DOUBLE:
        snprintf(buf, size, "a number");
        break;
    case CLI_CHOICE: { /* "a|b|c" -> "a, b or c" */
        size_t len = 0;
        buf[0] = 0;
        for (const char *w = o->expects; *w && len + 1 < size;) {
            size_t n = strcspn(w, "|");
            const char *sep = w == o->expects ? "" : w[n] ? ", " : " or ";
            len += (size_t)snprintf(buf + len, size - len, "%s%.*s", sep, (int)n, w);
            w += n + (w[n] == '|');
        }
        break;
    }
    default: /* CLI_STRING, or CLI_CUSTOM without expects */
        snprintf(buf, size, "a value");
        return false;
    }
    return true;
}

static bool store(const cli_option *o, const char *v) {
    long n;
    switch (o->kind) {
    case CLI_INT:
        if (!cli_parse_int(v, o->lo, o->hi, &n)) return false;
        *(int *)o->dest = (int)n;
        return true;
    case CLI_INT64:
        if (!cli_parse_int(v, o->lo, o->hi, &n)) return false;
        *(int64_t *)o->dest = (int64_t)n;
        return true;
    case CLI_U64: {
        uint64_t u;
        if (!cli_parse_u64(v, &u) || u < (uint64_t)o->lo || u > (uint64_t)o->hi) return false;
        *(uint64_t *)o->dest = u;
        return true;
    }
    case CLI_DOUBLE:
        return cli_parse_double(v, (double *)o->dest);
    case CLI_STRING:
        *(const char **)o->dest = v;
        return true;
    case CLI_CHOICE:
        if (!is_choice(o->expects, v)) return false;
        *(const char **)o->dest = v;
        return true;
    case CLI_CUSTOM:
        return o->parse(v, o->dest);
    case CLI_FLAG: case CLI_FLAG_OFF:
        break;
    }
    return false;
}

static int usage_error(const char *cmd, const char *msg, const char *hint) {
    char generic[96];
    snprintf(generic, sizeof generic, "run 'loupe %s --help' for the options", cmd);
    cli_error(cmd, msg, hint ? hint : generic);
    return 2;
}

int cli_parse_options(const cli_parser *p, int argc, char **argv, int *nargs) {
    int n = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] == 0) {
            argv[++n] = argv[i]; /* n < i: only already-read slots are overwritten */
            if (n > p->max_args && p->max_args >= 0) break;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return CLI_HELP;
        const cli_option *o = p->options;
        const char *v = NULL;
        while (o->name && !matches(o, a, p->equals_form, &v)) o++;
        char msg[512], what[160];
        if (!o->name) {
            snprintf(msg, sizeof msg, "unknown option '%s'", a);
            return usage_error(p->cmd, msg, NULL);
        }
        if (o->seen) *o->seen = 1;
        if (!takes_value(o)) {
            *(int *)o->dest = o->kind == CLI_FLAG;
            continue;
        }
        if (!v && i + 1 < argc) v = argv[++i];
        bool specific = describe(o, what, sizeof what);
        if (!v) {
            if (specific) snprintf(msg, sizeof msg, "%s needs a value (%s)", o->name, what);
            else snprintf(msg, sizeof msg, "%s needs a value", o->name);
            return usage_error(p->cmd, msg, o->hint);
        }
        if (!store(o, v)) {
            snprintf(msg, sizeof msg, "%s expects %s, got '%s'", o->name, what, v);
            return usage_error(p->cmd, msg, o->hint);
        }
    }
    *nargs = n;
    return 0;
}

bool cli_parse_nonempty(const char *value, void *dest) {
    if (!*value) return false;
    *(const char **)dest = value;
    return true;
}
