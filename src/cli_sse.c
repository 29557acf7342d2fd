/*
 * cli_sse — incremental Server-Sent Events parsing.  Follows the WHATWG
 * rules: lines end in CRLF, LF or CR; "field: value" with one optional space
 * after the colon; a line starting with ':' is a comment (keepalives); a blank
 * line dispatches the pending event when it has data; `id` persists.
 */
#include "cli_sse.h"

#include <stdlib.h>
#include <string.h>

void cli_sse_init(struct cli_sse *s)
{
    memset(s, 0, sizeof(*s));
    buf_init(&s->line);
    buf_init(&s->data);
    buf_init(&s->type);
    buf_init(&s->last_id);
}

void cli_sse_release(struct cli_sse *s)
{
    buf_release(&s->line);
    buf_release(&s->data);
    buf_release(&s->type);
    buf_release(&s->last_id);
}

const char *cli_sse_last_id(const struct cli_sse *s)
{
    return s->last_id.data ? s->last_id.data : "";
}

static void buf_clear(struct buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void cli_sse_restart(struct cli_sse *s)
{
    buf_clear(&s->line);
    buf_clear(&s->data);
    buf_clear(&s->type);
    s->have_data = 0;
    s->skip_lf = 0;
}

static int dispatch(struct cli_sse *s, cli_sse_fn fn, void *ud)
{
    int rc = 0;
    if (s->have_data) {
        rc = fn(s->type.len ? s->type.data : "message", s->data.data ? s->data.data : "",
                cli_sse_last_id(s), ud);
    }
    buf_clear(&s->data);
    buf_clear(&s->type);
    s->have_data = 0;
    return rc;
}

static int process_line(struct cli_sse *s, cli_sse_fn fn, void *ud)
{
    const char *l = s->line.data ? s->line.data : "";
    size_t n = s->line.len;
    if (n == 0)
        return dispatch(s, fn, ud);
    if (l[0] == ':')
        return 0;
    const char *colon = memchr(l, ':', n);
    size_t flen = colon ? (size_t)(colon - l) : n;
    const char *v = colon ? colon + 1 : l + n;
    if (colon && *v == ' ')
        v++;
    size_t vlen = (size_t)(l + n - v);
    if (flen == 4 && memcmp(l, "data", 4) == 0) {
        if (s->have_data)
            buf_append(&s->data, "\n", 1);
        buf_append(&s->data, v, vlen);
        s->have_data = 1;
    } else if (flen == 5 && memcmp(l, "event", 5) == 0) {
        buf_clear(&s->type);
        buf_append(&s->type, v, vlen);
    } else if (flen == 2 && memcmp(l, "id", 2) == 0) {
        if (!memchr(v, '\0', vlen)) {
            buf_clear(&s->last_id);
            buf_append(&s->last_id, v, vlen);
        }
    }
    /* "retry" and unknown fields are ignored, as the spec says. */
    return 0;
}

int cli_sse_feed(struct cli_sse *s, const char *p, size_t n, cli_sse_fn fn, void *ud)
{
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (s->skip_lf) {
            s->skip_lf = 0;
            if (c == '\n')
                continue;
        }
        if (c == '\r' || c == '\n') {
            s->skip_lf = (c == '\r');
            int rc = process_line(s, fn, ud);
            buf_clear(&s->line);
            if (rc)
                return rc;
            continue;
        }
        buf_append(&s->line, &c, 1);
    }
    return 0;
}
