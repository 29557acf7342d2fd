/*
 * log — quernd's structured log: one JSON object per line on stderr
 * {"ts", "level", "component", "msg", …fields}.  Thread-safe (one write(2)
 * per line).  QUERN_LOG_FORMAT=text gives "quernd: component: msg" lines for
 * people at a terminal; QUERN_LOG_REQUESTS=1 adds one line per HTTP request
 * (method, route, status, duration, request id).
 */
#ifndef QUERN_LOG_H
#define QUERN_LOG_H

#include <jansson.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Reads QUERN_LOG_FORMAT and QUERN_LOG_REQUESTS (call once at start). */
void log_init(void);
/* Writes one line; fields (may be NULL) is stolen. */
void log_write(enum log_level level, const char *component, json_t *fields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* True when each HTTP request is logged. */
int log_requests(void);

#endif
