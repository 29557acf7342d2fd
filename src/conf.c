/* conf — see conf.h.  Single-threaded start-up code. */
#include "conf.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = 0;
    return s;
}

int conf_load(const char *path, conf_fn fn, void *ctx, char **msg)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        int e = errno;
        *msg = xasprintf("cannot read %s: %s", path, strerror(e));
        return -e;
    }
    char line[4096], section[128] = "";
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            *msg = xasprintf("%s:%d: line longer than %zu bytes", path, lineno, sizeof line - 2);
            rc = -EINVAL;
            break;
        }
        char *s = trim(line);
        if (!*s || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            char *end = strchr(s, ']');
            if (!end || end[1] || end - s - 1 >= (long)sizeof section || end == s + 1) {
                *msg = xasprintf("%s:%d: a section header looks like [name]", path, lineno);
                rc = -EINVAL;
                break;
            }
            *end = 0;
            snprintf(section, sizeof section, "%s", trim(s + 1));
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            *msg = xasprintf("%s:%d: expected key = value", path, lineno);
            rc = -EINVAL;
            break;
        }
        *eq = 0;
        char *key = trim(s), *value = trim(eq + 1);
        /* a trailing comment after the value */
        for (char *c = value; *c; c++)
            if ((*c == '#' || *c == ';') && (c == value || isspace((unsigned char)c[-1]))) {
                *c = 0;
                value = trim(value);
                break;
            }
        if (!*key) {
            *msg = xasprintf("%s:%d: empty key", path, lineno);
            rc = -EINVAL;
            break;
        }
        char err[256] = "";
        if (fn(ctx, section, key, value, err, sizeof err)) {
            *msg = xasprintf("%s:%d: %s", path, lineno, err[0] ? err : "invalid setting");
            rc = -EINVAL;
            break;
        }
    }
    fclose(f);
    return rc;
}
