/*
 * cli_table — tables, detail views and value formatting for the quern CLI.
 * Widths are measured in UTF-8 code points so names in any script line up
 * (wide CJK glyphs are not special-cased); colour escapes are added after
 * the widths are known, so they never disturb alignment.
 */
#include "cli_table.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jdump.h"

#define C_RESET "\033[0m"
#define C_BOLD "\033[1m"
#define C_DIM "\033[2m"
#define C_RED "\033[31m"
#define C_GREEN "\033[32m"
#define C_YELLOW "\033[33m"
#define C_BLUE "\033[34m"
#define C_MAGENTA "\033[35m"
#define C_CYAN "\033[36m"

size_t cli_utf8_len(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

/* Copies s cut to at most max code points, ending in "…" when cut. */
static char *cut(const char *s, size_t max)
{
    if (cli_utf8_len(s) <= max)
        return xstrdup(s);
    size_t cps = 0, i = 0;
    for (; s[i]; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (cps == max - 1)
                break;
            cps++;
        }
    }
    return xasprintf("%.*s…", (int)i, s);
}

void cli_scrub(char *s, char repl, bool keep_lines)
{
    char *d = s;
    for (const char *p = s; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == 0xC2 && ((unsigned char)p[1] & 0xE0) == 0x80) {
            *d++ = repl;    /* C1: U+0080-U+009F, CSI among them */
            p++;
        } else if ((ch < 0x20 && !(keep_lines && (ch == '\n' || ch == '\t'))) || ch == 0x7f) {
            *d++ = repl;
        } else {
            *d++ = (char)ch;
        }
    }
    *d = '\0';
}

/* Copies s with control characters (newlines, escapes) shown as spaces, so
 * a cell can never break the table or inject terminal sequences. */
static char *sanitize(const char *s)
{
    char *d = xstrdup(s);
    cli_scrub(d, ' ', false);
    return d;
}

void cli_table_init(struct cli_table *t, size_t ncols, const char *const *headers)
{
    memset(t, 0, sizeof(*t));
    t->ncols = ncols;
    t->status_col = -1;
    t->headers = xcalloc(ncols, sizeof(char *));
    for (size_t i = 0; i < ncols; i++) {
        t->headers[i] = xstrdup(headers[i]);
        if (strcmp(headers[i], "STATUS") == 0 && t->status_col < 0)
            t->status_col = (int)i;
    }
}

void cli_table_add(struct cli_table *t, const char *const *cells)
{
    t->cells = xrealloc(t->cells, (t->nrows + 1) * t->ncols * sizeof(char *));
    for (size_t i = 0; i < t->ncols; i++) {
        char *clean = sanitize(cells[i] ? cells[i] : "-");
        t->cells[t->nrows * t->ncols + i] = cut(clean, CLI_CELL_MAX);
        free(clean);
    }
    t->nrows++;
}

void cli_table_release(struct cli_table *t)
{
    for (size_t i = 0; i < t->ncols; i++)
        free(t->headers[i]);
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->headers);
    free(t->cells);
    memset(t, 0, sizeof(*t));
}

const char *cli_status_color(const char *s)
{
    if (!s)
        return "";
    if (!strcmp(s, "completed"))
        return C_GREEN;
    if (!strcmp(s, "failed") || !strcmp(s, "timed_out") || !strcmp(s, "denied"))
        return C_RED;
    if (!strcmp(s, "running"))
        return C_CYAN;
    if (!strcmp(s, "queued") || !strcmp(s, "pending"))
        return C_YELLOW;
    if (!strcmp(s, "interaction_required") || !strcmp(s, "review_required") ||
        !strcmp(s, "paused"))
        return C_MAGENTA;
    if (!strcmp(s, "canceled") || !strcmp(s, "canceling"))
        return C_DIM;
    return "";
}

static void render_row(struct buf *out, char *const *cells, const size_t *w, size_t ncols,
                       bool color, bool header, int status_col)
{
    for (size_t i = 0; i < ncols; i++) {
        const char *c = cells[i];
        const char *pre = "";
        if (color && header)
            pre = C_BOLD;
        else if (color && (int)i == status_col)
            pre = cli_status_color(c);
        buf_puts(out, pre);
        buf_puts(out, c);
        if (*pre)
            buf_puts(out, C_RESET);
        if (i + 1 < ncols) {
            size_t pad = w[i] - cli_utf8_len(c) + 2;
            for (size_t k = 0; k < pad; k++)
                buf_append(out, " ", 1);
        }
    }
    buf_append(out, "\n", 1);
}

void cli_table_render(const struct cli_table *t, struct buf *out, bool color)
{
    size_t *w = xcalloc(t->ncols ? t->ncols : 1, sizeof(size_t));
    for (size_t i = 0; i < t->ncols; i++)
        w[i] = cli_utf8_len(t->headers[i]);
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t i = 0; i < t->ncols; i++) {
            size_t l = cli_utf8_len(t->cells[r * t->ncols + i]);
            if (l > w[i])
                w[i] = l;
        }
    render_row(out, t->headers, w, t->ncols, color, true, t->status_col);
    for (size_t r = 0; r < t->nrows; r++)
        render_row(out, t->cells + r * t->ncols, w, t->ncols, color, false, t->status_col);
    free(w);
}

void cli_fmt_age(int64_t then, int64_t now, char *out, size_t outlen)
{
    int64_t d = (now - then) / 1000;
    if (d < 0)
        d = 0;
    if (d < 60)
        snprintf(out, outlen, "%" PRId64 "s ago", d);
    else if (d < 3600)
        snprintf(out, outlen, "%" PRId64 "m ago", d / 60);
    else if (d < 86400)
        snprintf(out, outlen, "%" PRId64 "h ago", d / 3600);
    else if (d < 30 * 86400)
        snprintf(out, outlen, "%" PRId64 "d ago", d / 86400);
    else {
        char ts[RFC3339_LEN];
        rfc3339_format(then, ts);
        snprintf(out, outlen, "%.10s", ts);
    }
}

void cli_fmt_duration(int64_t ms, char *out, size_t outlen)
{
    if (ms < 0)
        ms = 0;
    if (ms < 1000)
        snprintf(out, outlen, "%" PRId64 "ms", ms);
    else if (ms < 60000)
        snprintf(out, outlen, "%" PRId64 ".%" PRId64 "s", ms / 1000, (ms % 1000) / 100);
    else if (ms < 3600000)
        snprintf(out, outlen, "%" PRId64 "m%02" PRId64 "s", ms / 60000, (ms / 1000) % 60);
    else
        snprintf(out, outlen, "%" PRId64 "h%02" PRId64 "m", ms / 3600000, (ms / 60000) % 60);
}

char *cli_cell(const json_t *v, enum cli_fmt fmt, int64_t now)
{
    char tmp[64];
    if (!v || json_is_null(v))
        return xstrdup("-");
    switch (fmt) {
    case CLI_FMT_AGE: {
        int64_t ms;
        if (json_is_string(v) && rfc3339_parse(json_string_value(v), &ms) == 0) {
            cli_fmt_age(ms, now, tmp, sizeof(tmp));
            return xstrdup(tmp);
        }
        break;
    }
    case CLI_FMT_DURATION:
        if (json_is_number(v)) {
            cli_fmt_duration((int64_t)json_number_value(v), tmp, sizeof(tmp));
            return xstrdup(tmp);
        }
        break;
    case CLI_FMT_PERCENT:
        if (json_is_number(v)) {
            snprintf(tmp, sizeof(tmp), "%d%%", (int)(json_number_value(v) * 100 + 0.5));
            return xstrdup(tmp);
        }
        break;
    case CLI_FMT_TEXT:
        break;
    }
    if (json_is_string(v))
        return xstrdup(json_string_value(v));
    if (json_is_array(v)) {
        /* Arrays of strings read best as "a,b,c". */
        struct buf b;
        buf_init(&b);
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e) {
            if (!json_is_string(e)) {
                buf_release(&b);
                goto compact;
            }
            if (i)
                buf_puts(&b, ",");
            buf_puts(&b, json_string_value(e));
        }
        if (b.len == 0) {
            buf_release(&b);
            return xstrdup("-");
        }
        return buf_steal(&b);
    }
compact:;
    char *s = jdump(v, NULL);
    if (!s)
        return xstrdup("?");
    char *r = xstrdup(s);
    free(s);
    return r;
}

static const json_t *field(const json_t *obj, const char *path)
{
    const char *dot = strchr(path, '.');
    if (!dot)
        return json_object_get(obj, path);
    char head[64];
    size_t n = (size_t)(dot - path);
    if (n >= sizeof(head))
        return NULL;
    memcpy(head, path, n);
    head[n] = '\0';
    const json_t *inner = json_object_get(obj, head);
    return json_is_object(inner) ? json_object_get(inner, dot + 1) : NULL;
}

void cli_table_add_json(struct cli_table *t, const struct cli_col *cols, size_t ncols,
                        const json_t *rows, int64_t now)
{
    size_t i;
    const json_t *row;
    char **cells = xcalloc(ncols ? ncols : 1, sizeof(char *));
    json_array_foreach(rows, i, row) {
        for (size_t c = 0; c < ncols; c++)
            cells[c] = cli_cell(json_is_object(row) ? field(row, cols[c].field) : NULL,
                                cols[c].fmt, now);
        cli_table_add(t, (const char *const *)cells);
        for (size_t c = 0; c < ncols; c++)
            free(cells[c]);
    }
    free(cells);
}

void cli_render_kv(const json_t *obj, struct buf *out, bool color)
{
    size_t w = 0;
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)obj, k, v) {
        size_t l = cli_utf8_len(k);
        if (l > w)
            w = l;
    }
    json_object_foreach((json_t *)obj, k, v) {
        char *cell;
        if (json_is_string(v))
            cell = xstrdup(json_string_value(v));
        else if (json_is_null(v))
            cell = xstrdup("-");
        else {
            char *s = jdump(v, NULL);
            cell = xstrdup(s ? s : "?");
            free(s);
        }
        if (color)
            buf_puts(out, C_BOLD);
        buf_printf(out, "%s:", k);
        if (color)
            buf_puts(out, C_RESET);
        size_t pad = w - cli_utf8_len(k) + 1;
        for (size_t i = 0; i < pad; i++)
            buf_append(out, " ", 1);
        /* No terminal escapes from the server; multi-line text (code) goes
         * on the following lines, indented under the values. */
        cli_scrub(cell, '?', true);
        if (strchr(cell, '\n')) {
            buf_puts(out, "|\n");
            for (const char *p = cell; *p;) {
                const char *nl = strchr(p, '\n');
                size_t n = nl ? (size_t)(nl - p) : strlen(p);
                buf_puts(out, "    ");
                buf_append(out, p, n);
                buf_append(out, "\n", 1);
                p += n + (nl ? 1 : 0);
            }
        } else {
            const char *pre = color && strcmp(k, "status") == 0 ? cli_status_color(cell) : "";
            buf_printf(out, "%s%s%s\n", pre, cell, *pre ? C_RESET : "");
        }
        free(cell);
    }
}

static void indent(struct buf *out, int depth)
{
    buf_append(out, "\n", 1);
    for (int i = 0; i < depth; i++)
        buf_append(out, "  ", 2);
}

int cli_json_pretty(const char *in, size_t n, struct buf *out)
{
    size_t start = out->len;
    int depth = 0;
    bool in_str = false, esc = false;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (in_str) {
            buf_append(out, &c, 1);
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                in_str = false;
            continue;
        }
        switch (c) {
        case ' ': case '\t': case '\n': case '\r':
            break;
        case '"':
            in_str = true;
            buf_append(out, &c, 1);
            break;
        case '{': case '[': {
            /* An empty container stays on one line: "{}" / "[]". */
            size_t j = i + 1;
            while (j < n && (in[j] == ' ' || in[j] == '\t' || in[j] == '\n' || in[j] == '\r'))
                j++;
            if (j < n && in[j] == (c == '{' ? '}' : ']')) {
                buf_append(out, &c, 1);
                buf_append(out, &in[j], 1);
                i = j;
                break;
            }
            buf_append(out, &c, 1);
            indent(out, ++depth);
            break;
        }
        case '}': case ']':
            if (--depth < 0)
                goto bad;
            indent(out, depth);
            buf_append(out, &c, 1);
            break;
        case ',':
            buf_append(out, &c, 1);
            indent(out, depth);
            break;
        case ':':
            buf_append(out, ": ", 2);
            break;
        default:
            buf_append(out, &c, 1);
        }
    }
    if (depth != 0 || in_str)
        goto bad;
    return 0;
bad:
    out->len = start;
    buf_append(out, in, n);
    return -EINVAL;
}
