/* conf — see conf.h.  Single-threaded start-up code. */
#include "conf.h"

#include <ctype.h>
#include <stdbool.h>
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
        char *s = line;
        /* an editor's UTF-8 byte order mark: the first line read "expected
         * key = value" for a header it did not see */
        if (lineno == 1 && !strncmp(s, "\xEF\xBB\xBF", 3))
            s += 3;
        s = trim(s);
        if (!*s || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            char *end = strchr(s, ']');
            /* "[server]  # comment": a comment may end a header as a value */
            char *after = end ? end + 1 : NULL;
            while (after && isspace((unsigned char)*after))
                after++;
            bool comment = after && after > end + 1 && (*after == '#' || *after == ';');
            if (!end || (end[1] && !comment) || end - s - 1 >= (long)sizeof section ||
                end == s + 1) {
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
        /* quotes are not stripped: `data = "/srv/q"` made a directory
         * named with its quotes, so a quoted value is refused */
        if (*value == '"' || *value == '\'') {
            *msg = xasprintf("%s:%d: %s: values are written without quotes", path, lineno, key);
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
    /* a read error (a directory named as the file reads as EISDIR) is not
     * an empty file: it ran with every default, silently */
    if (!rc && ferror(f)) {
        int e = errno ? errno : EIO;
        *msg = xasprintf("cannot read %s: %s", path, strerror(e));
        rc = -e;
    }
    fclose(f);
    return rc;
}
