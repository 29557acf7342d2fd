/* log — see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jdump.h"
#include "util.h"

static int text_format;
static int requests;

void log_init(void)
{
    const char *f = getenv("QUERN_LOG_FORMAT");
    text_format = f && !strcmp(f, "text");
    const char *r = getenv("QUERN_LOG_REQUESTS");
    requests = r && (!strcmp(r, "1") || !strcmp(r, "true"));   /* quernd refuses the rest */
}

int log_requests(void)
{
    return requests;
}

static const char *const names[] = {"debug", "info", "warn", "error"};

/* Appends s to out as valid UTF-8: a byte that starts no valid sequence
 * becomes \xHH, and so do control characters in text mode.  A message
 * carries what clients sent (an unmatched request's path, decoded, and its
 * method): "GET /%ff" made json_pack fail and quernd crash (NULL object),
 * and "/%0a..." forged whole lines in text mode. */
static void put_clean(struct buf *out, const char *s, size_t n, bool text)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        size_t k = *p >= 0x80 ? jdump_utf8_len(p, end) : 1;
        bool control = *p < 0x20 || *p == 0x7f;
        if (!k || (text && control) || (!text && !*p)) {
            buf_printf(out, "\\x%02x", *p);
            p++;
            continue;
        }
        buf_append(out, p, k);
        p += k;
    }
}

void log_write(enum log_level level, const char *component, json_t *fields, const char *fmt, ...)
{
    struct buf raw, msg, line;
    va_list ap;
    buf_init(&raw);
    buf_init(&msg);
    buf_init(&line);
    va_start(ap, fmt);
    buf_vprintf(&raw, fmt, ap);
    va_end(ap);
    put_clean(&msg, raw.data ? raw.data : "", raw.len, text_format);
    buf_append(&msg, "", 1);   /* NUL-terminated, not counted */
    msg.len--;
    if (text_format) {
        buf_printf(&line, "quernd: %s: %s%s", component, level >= LOG_WARN ? names[level] : "",
                   level >= LOG_WARN ? ": " : "");
        buf_puts(&line, msg.data);
        const char *k;
        json_t *v;
        json_object_foreach(fields, k, v) {
            char *s = jdump(v, NULL);
            buf_printf(&line, " %s=%s", k, s);
            free(s);
        }
        buf_puts(&line, "\n");
    } else {
        char ts[RFC3339_LEN];
        rfc3339_format(now_ms(), ts);
        json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "ts", ts, "level", names[level],
                              "component", component, "msg", msg.data);
        if (!o)   /* never: msg is valid UTF-8 now */
            o = json_pack("{s:s, s:s, s:s}", "ts", ts, "level", names[level], "msg", "?");
        if (fields)
            json_object_update(o, fields);
        char *s = jdump(o, NULL);
        buf_puts(&line, s);
        buf_puts(&line, "\n");
        free(s);
        json_decref(o);
    }
    json_decref(fields);
    ssize_t w = write(2, line.data, line.len);
    (void)w;
    buf_release(&raw);
    buf_release(&msg);
    buf_release(&line);
}
