/*
 * cli_http — the quern CLI's HTTP client over libcurl: JSON requests with the
 * bearer key, streamed GETs for Server-Sent Events, URL escaping, and the
 * one-line rendering of the API's error shape.  One struct cli_http per
 * process, used from the main thread only.
 */
#ifndef QUERN_CLI_HTTP_H
#define QUERN_CLI_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

#define CLI_HTTP_IDLE_S 60L

struct cli_http {
    char *base;                 /* "http://127.0.0.1:7070", no trailing '/' */
    char *shown;                /* base without user:password@, for messages */
    long idle_s;                /* a request fails after this many seconds without a byte */
    char *cacert;               /* PEM file of the CAs to trust for https, NULL: the system's */
    char *key;                  /* may be NULL */
    void *curl;                 /* CURL *, reused for keep-alive */
    char err[1024];             /* why the last transport failure happened (URL cut at 700) */
    volatile int *cancel;       /* when set and non-zero, transfers abort (-ECANCELED) */
};

struct cli_resp {
    long status;                /* HTTP status, 0 if none arrived */
    struct buf body;
};

/* Sets up a client for base url (copied) and key (copied, may be NULL).
 * An ordinary request gives up after CLI_HTTP_IDLE_S seconds without a byte
 * from the server (h->idle_s may change it); a stream after 60.
 * Returns 0 or -ENOMEM/-EINVAL. */
int cli_http_init(struct cli_http *h, const char *base, const char *key);
void cli_http_release(struct cli_http *h);

/* Sends method path (starting with '/') with an optional JSON body and reads
 * the whole response into r (which the caller initialises with buf_init and
 * releases).  Returns 0 when a response arrived, whatever its status, or
 * -EIO when the server could not be reached (reason in h->err). */
int cli_http_do(struct cli_http *h, const char *method, const char *path, const char *body,
                struct cli_resp *r);

/* Called with each chunk of a 2xx streamed body; non-zero stops the stream. */
typedef int (*cli_http_chunk_fn)(const char *p, size_t n, void *ud);

/* GETs path as an event stream, handing body chunks of a 2xx response to fn
 * as they arrive; a non-2xx body is collected into r->body instead.
 * last_event_id (may be NULL) is sent as Last-Event-ID.  Returns 0 when the
 * stream ended (or fn stopped it), -EIO on a transport failure or stall,
 * -ECANCELED when *h->cancel became non-zero. */
int cli_http_stream(struct cli_http *h, const char *path, const char *last_event_id,
                    cli_http_chunk_fn fn, void *ud, struct cli_resp *r);

/* Percent-escapes s for use as a path segment or query value; caller frees. */
char *cli_http_escape(const char *s);

/* The one-line text for an error response: "404 not_found: task task_x not
 * found (param: task_id)", from the API's error shape when the body has it,
 * else the status and the start of the body.  The caller frees it. */
char *cli_http_error_text(long status, const char *body, size_t len);

#endif
