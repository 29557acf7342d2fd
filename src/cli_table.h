/*
 * cli_table — how the quern CLI shows things to people: aligned tables,
 * key/value detail views, ages ("5m ago"), durations ("1.2s"), status colours,
 * and a re-indenter that pretty-prints the server's JSON without re-encoding
 * it (numbers stay byte-for-byte as the server wrote them).  Pure functions
 * writing into a struct buf; single-threaded; no I/O.
 */
#ifndef QUERN_CLI_TABLE_H
#define QUERN_CLI_TABLE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define CLI_CELL_MAX 48          /* longer cells are cut with "…" */

struct cli_table {
    size_t ncols;
    char **headers;
    char **cells;               /* nrows * ncols, row-major */
    size_t nrows;
    int status_col;             /* column coloured by run status, or -1 */
};

/* Starts a table with ncols column headers (copied). */
void cli_table_init(struct cli_table *t, size_t ncols, const char *const *headers);
/* Appends one row of ncols cells (copied; NULL shows as "-"). */
void cli_table_add(struct cli_table *t, const char *const *cells);
void cli_table_release(struct cli_table *t);
/* Renders the table, columns padded to their widest cell (in characters, not
 * bytes), two spaces apart, no trailing blanks; with colour, bold headers and
 * a coloured status column. */
void cli_table_render(const struct cli_table *t, struct buf *out, bool color);

/* How a JSON field becomes a cell. */
enum cli_fmt {
    CLI_FMT_TEXT,               /* strings as is, other JSON compact */
    CLI_FMT_AGE,                /* RFC 3339 → "5m ago" */
    CLI_FMT_DURATION,           /* milliseconds → "1.2s" */
    CLI_FMT_PERCENT,            /* 0..1 → "42%" */
};

struct cli_col {
    const char *header;
    const char *field;          /* top-level key; "a.b" reaches one level down */
    enum cli_fmt fmt;
};

/* Adds one row per object of the JSON array rows, cells picked by cols;
 * now_ms is "now" for ages. */
void cli_table_add_json(struct cli_table *t, const struct cli_col *cols, size_t ncols,
                        const json_t *rows, int64_t now_ms);
/* Formats one JSON value as a cell; the caller frees the result. */
char *cli_cell(const json_t *v, enum cli_fmt fmt, int64_t now_ms);

/* "12s ago", "5m ago", "3h ago", "2d ago", or the date past 30 days. */
void cli_fmt_age(int64_t then_ms, int64_t now_ms, char *out, size_t outlen);
/* "850ms", "1.2s", "3m04s", "2h05m". */
void cli_fmt_duration(int64_t ms, char *out, size_t outlen);
/* The ANSI colour escape for a run/task status ("" when none applies). */
const char *cli_status_color(const char *status);

/* A key/value view of a JSON object: one field a line, keys aligned, nested
 * values as compact JSON. */
void cli_render_kv(const json_t *obj, struct buf *out, bool color);

/* Re-indents the JSON text in (n bytes) with two spaces per level into out,
 * keeping every token as written.  Returns 0, or -EINVAL if it is not
 * balanced JSON (out then holds a copy of the input). */
int cli_json_pretty(const char *in, size_t n, struct buf *out);

/* Replaces, in place, each control character of s with repl: C0 (but '\n'
 * and '\t' when keep_lines), DEL and the C1 range U+0080-U+009F (two bytes
 * in UTF-8, one repl).  So text from the server or a run can neither break a
 * line nor send the terminal an escape sequence. */
void cli_scrub(char *s, char repl, bool keep_lines);

/* Number of display characters (UTF-8 code points) in s. */
size_t cli_utf8_len(const char *s);

#endif
