/* log — see log.h. */
#include "log.h"

#include <stdarg.h>
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
    requests = r && *r && strcmp(r, "0");
}

int log_requests(void)
{
    return requests;
}

static const char *const names[] = {"debug", "info", "warn", "error"};

void log_write(enum log_level level, const char *component, json_t *fields, const char *fmt, ...)
{
    struct buf msg, line;
    va_list ap;
    buf_init(&msg);
    buf_init(&line);
    va_start(ap, fmt);
    buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    if (text_format) {
        buf_printf(&line, "quernd: %s: %s", component, msg.data ? msg.data : "");
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
                              "component", component, "msg", msg.data ? msg.data : "");
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
    buf_release(&msg);
    buf_release(&line);
}
