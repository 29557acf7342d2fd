/*
 * cli_args — option parsing for the quern CLI against a compact spec string
 * (see cli_args.h for the grammar).  Accepts "--name value", "--name=value",
 * "-n value", flags, "--" to end options and "-" as a positional (stdin).
 * Single-threaded and allocation-only; no I/O.
 */
#include "cli_args.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Finds name in spec.  On success fills the entry's long name (into lng,
 * NUL-terminated) and whether it takes a value. */
static bool spec_find(const char *spec, const char *name, size_t namelen, char *lng,
                      size_t lnglen, bool *takes_value)
{
    const char *p = spec;
    while (p && *p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        const char *end = strchr(p, ' ');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        bool val = n > 0 && p[n - 1] == ':';
        size_t body = val ? n - 1 : n;
        const char *bar = memchr(p, '|', body);
        size_t longlen = bar ? (size_t)(bar - p) : body;
        bool hit = (longlen == namelen && memcmp(p, name, namelen) == 0);
        if (!hit && bar) {
            size_t slen = body - longlen - 1;
            hit = (slen == namelen && memcmp(bar + 1, name, namelen) == 0);
        }
        if (hit) {
            if (lng && lnglen > 0) {
                size_t c = longlen < lnglen - 1 ? longlen : lnglen - 1;
                memcpy(lng, p, c);
                lng[c] = '\0';
            }
            if (takes_value)
                *takes_value = val;
            return true;
        }
        p += n;
    }
    return false;
}

bool cli_args_spec_has(const char *spec, const char *name, bool *takes_value)
{
    return spec_find(spec, name, strlen(name), NULL, 0, takes_value);
}

static void add_opt(struct cli_args *a, const char *name, const char *value, size_t vlen)
{
    a->opts = xrealloc(a->opts, (a->nopts + 1) * sizeof(*a->opts));
    a->opts[a->nopts].name = xstrdup(name);
    a->opts[a->nopts].value = xstrndup(value, vlen);
    a->nopts++;
}

static void add_pos(struct cli_args *a, const char *s)
{
    a->pos = xrealloc(a->pos, (a->npos + 1) * sizeof(*a->pos));
    a->pos[a->npos++] = xstrdup(s);
}

int cli_args_parse(const char *spec, int argc, char **argv, struct cli_args *out,
                   char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    bool only_pos = false;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (only_pos || s[0] != '-' || s[1] == '\0') {
            add_pos(out, s);
            continue;
        }
        if (strcmp(s, "--") == 0) {
            only_pos = true;
            continue;
        }
        bool dbl = s[1] == '-';
        const char *name = s + (dbl ? 2 : 1);
        const char *eq = dbl ? strchr(name, '=') : NULL;
        size_t namelen = eq ? (size_t)(eq - name) : strlen(name);
        char lng[64];
        bool takes = false;
        if ((!dbl && namelen != 1) ||
            !spec_find(spec, name, namelen, lng, sizeof(lng), &takes)) {
            snprintf(err, errlen, "unknown option %s%.*s", dbl ? "--" : "-",
                     (int)namelen, name);
            return -EINVAL;
        }
        if (takes) {
            if (eq) {
                add_opt(out, lng, eq + 1, strlen(eq + 1));
            } else if (i + 1 < argc) {
                i++;
                add_opt(out, lng, argv[i], strlen(argv[i]));
            } else {
                snprintf(err, errlen, "option --%s needs a value", lng);
                return -EINVAL;
            }
        } else {
            if (eq) {
                snprintf(err, errlen, "option --%s takes no value", lng);
                return -EINVAL;
            }
            add_opt(out, lng, "", 0);
        }
    }
    return 0;
}

void cli_args_release(struct cli_args *a)
{
    for (size_t i = 0; i < a->nopts; i++) {
        free(a->opts[i].name);
        free(a->opts[i].value);
    }
    for (size_t i = 0; i < a->npos; i++)
        free(a->pos[i]);
    free(a->opts);
    free(a->pos);
    memset(a, 0, sizeof(*a));
}

const char *cli_args_get(const struct cli_args *a, const char *name)
{
    for (size_t i = a->nopts; i > 0; i--)
        if (strcmp(a->opts[i - 1].name, name) == 0)
            return a->opts[i - 1].value;
    return NULL;
}

const char *cli_args_nth(const struct cli_args *a, const char *name, size_t n)
{
    for (size_t i = 0; i < a->nopts; i++)
        if (strcmp(a->opts[i].name, name) == 0 && n-- == 0)
            return a->opts[i].value;
    return NULL;
}

bool cli_args_has(const struct cli_args *a, const char *name)
{
    return cli_args_get(a, name) != NULL;
}

int cli_args_int(const struct cli_args *a, const char *name, int64_t min, int64_t max,
                 int64_t *out, char *err, size_t errlen)
{
    const char *v = cli_args_get(a, name);
    if (!v)
        return 1;
    int64_t n;
    if (parse_i64(v, &n) < 0) {
        snprintf(err, errlen, "--%s: not an integer: '%s'", name, v);
        return -EINVAL;
    }
    if (n < min || n > max) {
        snprintf(err, errlen, "--%s: %lld is out of range [%lld, %lld]", name,
                 (long long)n, (long long)min, (long long)max);
        return -EINVAL;
    }
    *out = n;
    return 0;
}

bool cli_args_one_of(const char *value, const char *choices)
{
    size_t vl = strlen(value);
    const char *p = choices;
    while (*p) {
        while (*p == ' ')
            p++;
        const char *end = strchr(p, ' ');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == vl && n > 0 && memcmp(p, value, n) == 0)
            return true;
        p += n;
    }
    return false;
}
