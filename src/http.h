/*
 * http — the glue between libmicrohttpd and the api_* handlers: request
 * bodies, routing, authentication, the error shape, JSON responses,
 * suspended requests (long-polls) and streamed responses (SSE).
 *
 * Threads.  libmicrohttpd's internal thread pool (epoll) calls the handlers.
 * A handler runs to completion on that thread, or suspends its request
 * (http_suspend) to be resumed later from any thread (http_resume), after
 * which its continuation runs on a pool thread again.
 */
#ifndef QUERN_HTTP_H
#define QUERN_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "store.h"
#include "util.h"

struct app;
struct req;
struct MHD_Connection;

enum scope {
    SCOPE_NONE = 0,
    SCOPE_TASK_READ = 1 << 0,
    SCOPE_TASK_WRITE = 1 << 1,
    SCOPE_WORKER = 1 << 2,
    SCOPE_ADMIN = 1 << 3,
    SCOPE_ROOT = 1 << 4,       /* the root key: every project, creates projects */
    SCOPE_PUBLIC = 1 << 5,     /* no key needed (healthz, hooks, presigned URLs) */
    SCOPE_RUN_TOKEN = 1 << 6,  /* a connection token may stand in for a key */
};

typedef void (*http_handler)(struct req *r);

struct route {
    const char *method;
    const char *pattern;       /* "/api/projects/:project_id/tasks/:task_id" */
    http_handler fn;
    unsigned scope;            /* scopes that may call it (any one suffices) */
};

#define HTTP_MAX_PARAMS 6

struct req {
    struct app *app;
    struct MHD_Connection *conn;
    const char *method;
    const char *url;
    const struct route *route;
    struct buf body;
    int64_t body_bytes;        /* of the body received, kept or not */
    bool body_too_large;
    json_t *json;              /* the parsed body, when JSON */
    const char *pnames[HTTP_MAX_PARAMS];
    char *pvals[HTTP_MAX_PARAMS];
    int nparams;

    /* who is calling */
    char key_id[ID_LEN];
    char *key_project;         /* NULL for the root key */
    unsigned scopes;
    char *token_run_id;        /* set when authorised by a connection token */
    char *token_key_project;   /* the project ("_root" too) and id of the key */
    char token_key_id[ID_LEN]; /* that made that token */

    /* the response */
    int status;
    char *resp;
    size_t resp_len;
    const char *content_type;
    struct buf headers;        /* "Name: value\n" lines */
    void *stream;              /* an SSE stream (see http_stream) */
    int file_fd;               /* a file response when > 0 (see http_file) */
    int64_t file_size;

    /* asynchronous completion */
    bool suspended;
    bool authed;               /* its key was checked before its body came */
    bool resumed;
    http_handler cont;         /* continuation after resume */
    void *wait;                /* the handler's wait state */
    void (*on_gone)(struct req *r, bool delivered);  /* cleanup when done */
    bool delivered_ok;
    /* ended by quernd's stop, not by the client or an error: a response
     * written already may have reached the client (libmicrohttpd reports
     * a request's end only at its next look at the connection) */
    bool ended_by_stop;
    int64_t start_mono;
    char request_id[ID_LEN];   /* X-Request-Id: the client's or a new one */
    char idem_scope[384];
    char *idem_key;
    char *idem_fp;
    struct store_idem_claim idem_claim;  /* its pending record (store.h) */
    char *idem_flight;         /* "scope\nkey" while this request holds it (http.c) */
    char *idem_body;   /* what an Idempotency-Key replay answers, when not the response
                          itself (one that holds a secret shown once); malloc'd */
};

struct http;

/* Starts listening on host:port (port 0 picks one) with `threads` pool
 * threads; *bound_port receives the port.  NULL with *err on failure. */
struct http *http_start(struct app *app, const char *host, int port, int threads,
                        int *bound_port, char **err);
/* Stops accepting, closes connections and joins the pool. */
void http_stop(struct http *h);

/* Checks, before anything else starts, that http_start could listen on
 * host:port: 0; -EINVAL when host is not an IPv4 address; or bind's -errno
 * (a port in use).  *err (malloc'd) says which.  Port 0 is only parsed. */
int http_check_listen(const char *host, int port, char **err);

/* ---- helpers for handlers ---- */

const char *http_param(struct req *r, const char *name);
const char *http_query(struct req *r, const char *name);
const char *http_header(struct req *r, const char *name);
/* Sets a JSON response; steals the reference. */
void http_json(struct req *r, int status, json_t *body);
/* Sets a raw response body (copied). */
void http_raw(struct req *r, int status, const char *content_type, const char *data, size_t n);
/* Sets a response that sends size bytes of the open file fd (which the
 * response then owns and closes). */
void http_file(struct req *r, int status, const char *content_type, int fd, int64_t size);
/* Adds a response header. */
void http_add_header(struct req *r, const char *name, const char *value);
/* The error shape of API.md; type follows from status unless given. */
void http_error(struct req *r, int status, const char *code, const char *param,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* 404 naming the kind ("task") and id. */
void http_not_found(struct req *r, const char *what, const char *id);
/* Answers a failure of the store (a negative errno of store_*: the one
 * table of status, code, Retry-After and text that every layer uses).
 * nothing_done: the request did nothing yet (a read before its work), so
 * the catch-all 500 store_error says so and asks for a retry; else that
 * 500's outcome may be unknown (a failed COMMIT) and it asks nothing. */
void http_store_error(struct req *r, int rc, bool nothing_done);

/* Requires a JSON object body: returns it, or answers 400 and returns NULL. */
json_t *http_body_object(struct req *r);

/* Parses ?limit=&offset= (default 50, max 500).  false after answering 400. */
bool http_paging(struct req *r, int64_t *limit, int64_t *offset);

/* Suspends r: the handler returns, and `cont` runs after http_resume(r). */
void http_suspend(struct req *r, http_handler cont);
/* Resumes a suspended request (any thread). */
void http_resume(struct req *r);
/* True when the client of a suspended or running request has closed its
 * connection (a zero-byte peek). */
bool http_client_gone(struct req *r);

/* The MHD file descriptor count of live connections, for /metrics. */
void http_metrics(struct http *h, struct buf *out);

/* A streamed response: read(ctx, buf, max) returns bytes written, 0 when
 * nothing is ready (the connection is suspended until http_stream_wake),
 * or -1 at the end of the stream.  free(ctx) is called once when done. */
struct http_stream_ops {
    ssize_t (*read)(void *ctx, char *buf, size_t max);
    void (*free)(void *ctx);
};
struct http_stream_handle;
/* Makes r's response a stream; returns a handle the caller holds a
 * reference to (release it with http_stream_handle_put, typically from
 * ops->free) for waking the stream. */
struct http_stream_handle *http_stream(struct req *r, const char *content_type,
                                       const struct http_stream_ops *ops, void *ctx);
/* Wakes a stream whose read returned 0 (any thread). */
void http_stream_wake(struct http_stream_handle *h);
void http_stream_handle_put(struct http_stream_handle *h);

/* The routing table (api.c). */
extern const struct route api_routes[];
/* Before a large or chunked body of POST /hooks/:trigger_id (public) is
 * read: 404 for an unknown trigger, 401 without a signature header.  False
 * when it answered. */
void api_hooks_receive(struct req *r);
bool api_hooks_before_body(struct req *r);

#endif
