/*
 * http — libmicrohttpd glue.  See http.h for the threading model.
 *
 * A request's life: MHD calls on_request() once with the headers (we create
 * struct req), then with each chunk of the body (appended, bounded by
 * max_body_bytes), then a last time with no data: we route, authenticate,
 * and call the handler.  A handler that suspends leaves r->cont set; when
 * resumed, MHD calls on_request() again and we run the continuation.  When
 * MHD is done with the request, on_completed() frees it.
 */
#include "http.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "app.h"
#include "auth.h"
#include "crypto.h"
#include "jdump.h"
#include "jload.h"
#include "log.h"
#include "metrics.h"

struct http {
    struct MHD_Daemon *d;
    struct app *app;
};

/* Requests and streams suspended right now.  libmicrohttpd must not be
 * stopped while any is suspended, so http_stop waits for this to drain. */
static _Atomic long suspended_count;

/* http_stop has begun: a request that arrives now is answered 503
 * shutting_down at once (it suspends nothing that the stop would wait for).
 * This stands in for MHD_quiesce_daemon, which races libmicrohttpd's own
 * worker threads (0.9.75 with a thread pool and epoll): a worker that took
 * the listening socket out of its epoll set first made the quiesce's own
 * removal fail, and libmicrohttpd then aborts the process ("Failed to remove
 * listen FD from epoll set"): about one stop in 300 under load. */
static _Atomic bool closing;

struct http_stream_handle {
    pthread_mutex_t mu;
    struct MHD_Connection *conn;
    bool suspended;
    bool pending;
    bool closed;
    int refs;
    const struct http_stream_ops *ops;
    void *ctx;
};


/* What a request refused because quernd is stopping is told, whether
 * http_stop had begun when it came or the store or exec refused its work. */
static const char stopping_text[] =
    "quernd is stopping: nothing was written; send the request again (to another node, or here "
    "once restarted)";

/* The store's failures as answers (API.md, "Server errors"): each but the
 * catch-all 500 means nothing was written. */
static const struct store_answer {
    int rc;
    int status;
    const char *code;
    const char *retry_after;   /* NULL: none */
    const char *text;
} store_answers[] = {
    /* PostgreSQL chose this write as the loser of a deadlock or a
     * serialization conflict with another node */
    {-EAGAIN, 503, "write_conflict", "1",
     "the write conflicted with another node's and was rolled back; retry it"},
    /* PostgreSQL is unreachable (restarting, or cut off); the node
     * reconnects by itself */
    {-ENOTCONN, 503, "store_unreachable", "1",
     "the store is unreachable right now: nothing was written; retry it"},
    {-ESHUTDOWN, 503, "shutting_down", NULL, stopping_text},
    {-ENOSPC, 507, "storage_full", "10",
     "the server's disk is full: nothing was written; retry once space is freed"},
};

void http_store_error(struct req *r, int rc, bool nothing_done)
{
    for (size_t i = 0; i < ARRAY_LEN(store_answers); i++) {
        const struct store_answer *a = &store_answers[i];
        if (a->rc != rc)
            continue;
        if (a->retry_after)
            http_add_header(r, "Retry-After", a->retry_after);
        http_error(r, a->status, a->code, NULL, "%s", a->text);
        return;
    }
    if (nothing_done) {
        http_add_header(r, "Retry-After", "1");
        http_error(r, 500, "store_error", NULL,
                   "the store failed (%s): nothing was done; retry it", strerror(-rc));
    } else {
        http_error(r, 500, "store_error", NULL, "the store failed (%d)", rc);
    }
}

static const char *status_type(int status)
{
    switch (status) {
    case 401: return "unauthorized";
    case 403: return "forbidden";
    case 404: return "not_found";
    case 405: return "invalid_request";
    case 409: return "conflict";
    case 413: return "payload_too_large";
    case 429: return "rate_limited";
    default: return status >= 500 ? "internal" : "invalid_request";
    }
}

const char *http_param(struct req *r, const char *name)
{
    for (int i = 0; i < r->nparams; i++)
        if (!strcmp(r->pnames[i], name))
            return r->pvals[i];
    return NULL;
}

const char *http_query(struct req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *http_header(struct req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

void http_raw(struct req *r, int status, const char *content_type, const char *data, size_t n)
{
    free(r->resp);
    r->resp = xmalloc(n + 1);
    memcpy(r->resp, data, n);
    r->resp[n] = 0;
    r->resp_len = n;
    r->status = status;
    r->content_type = content_type;
}

void http_file(struct req *r, int status, const char *content_type, int fd, int64_t size)
{
    free(r->resp);
    r->resp = NULL;
    r->file_fd = fd;
    r->file_size = size;
    r->status = status;
    r->content_type = content_type;
}

void http_json(struct req *r, int status, json_t *body)
{
    free(r->resp);
    r->resp = jdump(body, &r->resp_len);
    if (!r->resp)
        r->resp_len = 0;
    r->status = status;
    r->content_type = "application/json";
    json_decref(body);
}

void http_add_header(struct req *r, const char *name, const char *value)
{
    buf_printf(&r->headers, "%s\n%s\n", name, value);
}

/* The first byte of s that does not start a valid UTF-8 sequence, or NULL. */
static const char *utf8_bad(const char *s)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + strlen(s);
    while (p < end) {
        size_t n = *p < 0x80 ? 1 : jdump_utf8_len(p, end);
        if (!n)
            return (const char *)p;
        p += n;
    }
    return NULL;
}

/* Replaces, in place, each byte of s that does not start a valid UTF-8
 * sequence with '?'.  A message may quote what the client sent (a path id,
 * a query value) and JSON strings must be UTF-8: without this, an id of
 * bytes 0xFF 0xFE made the error itself unrenderable. */
static void utf8_scrub(char *s)
{
    for (char *p = s; (p = (char *)utf8_bad(p)) != NULL;)
        *p++ = '?';
}

void http_error(struct req *r, int status, const char *code, const char *param, const char *fmt,
                ...)
{
    struct buf msg;
    va_list ap;
    buf_init(&msg);
    va_start(ap, fmt);
    buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    if (msg.data)
        utf8_scrub(msg.data);
    json_t *err = json_pack("{s:s, s:s, s:s}", "type", status_type(status), "code", code,
                            "message", msg.data ? msg.data : "");
    if (param)
        json_object_set_new(err, "param", json_string(param));
    buf_release(&msg);
    http_json(r, status, json_pack("{s:o}", "error", err));
}

void http_not_found(struct req *r, const char *what, const char *id)
{
    http_error(r, 404, "resource_missing", NULL, "%s %s not found", what, id ? id : "");
}

json_t *http_body_object(struct req *r)
{
    if (r->json && json_is_object(r->json))
        return r->json;
    if (!r->body.len) {
        r->json = json_object();
        return r->json;
    }
    if (r->json) {
        http_error(r, 400, "invalid_body", NULL, "the request body must be a JSON object");
        return NULL;
    }
    json_error_t e;
    /* jload is jansson's answer, faster; jansson again only for the message */
    r->json = jload(r->body.data, r->body.len, JSON_REJECT_DUPLICATES);
    if (!r->json && !(r->json = json_loadb(r->body.data, r->body.len, JSON_REJECT_DUPLICATES, &e))) {
        http_error(r, 400, "invalid_json", NULL, "malformed JSON at line %d column %d: %s",
                   e.line, e.column, jload_error_text(&e));
        return NULL;
    }
    if (!json_is_object(r->json)) {
        http_error(r, 400, "invalid_body", NULL, "the request body must be a JSON object");
        return NULL;
    }
    return r->json;
}

bool http_paging(struct req *r, int64_t *limit, int64_t *offset)
{
    const char *l = http_query(r, "limit"), *o = http_query(r, "offset");
    *limit = 50;
    *offset = 0;
    if (l && (parse_i64(l, limit) || *limit < 1 || *limit > 500)) {
        http_error(r, 400, "invalid_parameter", "limit",
                   "limit must be an integer from 1 to 500");
        return false;
    }
    if (o && (parse_i64(o, offset) || *offset < 0)) {
        http_error(r, 400, "invalid_parameter", "offset",
                   "offset must be a non-negative integer");
        return false;
    }
    return true;
}

void http_suspend(struct req *r, http_handler cont)
{
    r->cont = cont;
    r->suspended = true;
    r->resumed = false;
    suspended_count++;
    MHD_suspend_connection(r->conn);
}

void http_resume(struct req *r)
{
    r->resumed = true;
    MHD_resume_connection(r->conn);
}

bool http_client_gone(struct req *r)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return true;
    char c;
    ssize_t n = recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0)
        return true;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        return true;
    return false;
}

/* ---- streams ---- */

static void handle_put(struct http_stream_handle *h)
{
    pthread_mutex_lock(&h->mu);
    bool last = --h->refs == 0;
    pthread_mutex_unlock(&h->mu);
    if (last) {
        pthread_mutex_destroy(&h->mu);
        free(h);
    }
}

void http_stream_handle_put(struct http_stream_handle *h)
{
    if (h)
        handle_put(h);
}

void http_stream_wake(struct http_stream_handle *h)
{
    pthread_mutex_lock(&h->mu);
    if (!h->closed) {
        if (h->suspended) {
            h->suspended = false;
            suspended_count--;
            MHD_resume_connection(h->conn);
        } else {
            h->pending = true;
        }
    }
    pthread_mutex_unlock(&h->mu);
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct http_stream_handle *h = cls;
    (void)pos;
    for (;;) {
        ssize_t n = h->ops->read(h->ctx, buf, max);
        if (n > 0)
            return n;
        if (n < 0)
            return MHD_CONTENT_READER_END_OF_STREAM;
        pthread_mutex_lock(&h->mu);
        if (h->pending) {
            h->pending = false;
            pthread_mutex_unlock(&h->mu);
            continue;
        }
        h->suspended = true;
        suspended_count++;
        MHD_suspend_connection(h->conn);
        pthread_mutex_unlock(&h->mu);
        return 0;
    }
}

static void stream_free(void *cls)
{
    struct http_stream_handle *h = cls;
    pthread_mutex_lock(&h->mu);
    h->closed = true;
    pthread_mutex_unlock(&h->mu);
    h->ops->free(h->ctx);
    handle_put(h);
}

struct http_stream_handle *http_stream(struct req *r, const char *content_type,
                                       const struct http_stream_ops *ops, void *ctx)
{
    struct http_stream_handle *h = xcalloc(1, sizeof *h);
    pthread_mutex_init(&h->mu, NULL);
    h->conn = r->conn;
    h->refs = 2;   /* the response's and the caller's */
    h->ops = ops;
    h->ctx = ctx;
    r->stream = h;
    r->status = 200;
    r->content_type = content_type;
    return h;
}

/* ---- routing ---- */

static void free_params(struct req *r)
{
    for (int i = 0; i < r->nparams; i++)
        free(r->pvals[i]);
    r->nparams = 0;
}

/* Matches url against a pattern, capturing ":name" segments.  Percent-
 * escapes in the path are kept as they are (ids never need them). */
static bool match(struct req *r, const char *pattern, const char *url)
{
    /* Parameters are noted as spans of url and copied only once the whole
     * pattern matches: most patterns tried start with :project_id and fail
     * further on (a copy and a free each, 18 k instructions a request). */
    const char *names[HTTP_MAX_PARAMS], *vals[HTTP_MAX_PARAMS];
    size_t lens[HTTP_MAX_PARAMS];
    int n = 0;
    const char *p = pattern, *u = url;
    while (*p && *u) {
        if (*p != '/' || *u != '/')
            return false;
        p++;
        u++;
        const char *pe = strchrnul(p, '/'), *ue = strchrnul(u, '/');
        if (*p == ':') {
            if (ue == u || n == HTTP_MAX_PARAMS)
                return false;
            names[n] = p + 1;
            vals[n] = u;
            lens[n] = (size_t)(ue - u);
            n++;
        } else if ((size_t)(pe - p) != (size_t)(ue - u) || memcmp(p, u, (size_t)(pe - p))) {
            return false;
        }
        p = pe;
        u = ue;
    }
    if (*u == '/' && u[1] == 0)
        u++;   /* tolerate one trailing slash */
    if (*p || *u)
        return false;
    free_params(r);
    for (int i = 0; i < n; i++) {
        r->pnames[i] = names[i];
        r->pvals[i] = xstrndup(vals[i], lens[i]);
    }
    r->nparams = n;
    return true;
}

/* Param names point into the pattern up to the next '/': terminate them by
 * copying into a per-request table. */
static void fix_param_names(struct req *r)
{
    static __thread char names[HTTP_MAX_PARAMS][32];
    for (int i = 0; i < r->nparams; i++) {
        const char *e = strchrnul(r->pnames[i], '/');
        size_t n = (size_t)(e - r->pnames[i]);
        if (n > 31)
            n = 31;
        memcpy(names[i], r->pnames[i], n);
        names[i][n] = 0;
        r->pnames[i] = names[i];
    }
}

/* Idempotency-Key: a POST repeated with the same key (by the same API key,
 * to the same path, within 24 h) gets the first response again and creates
 * nothing.  The same key with a different body is refused (409).  The
 * response is remembered when it is sent (respond()).  Two identical
 * requests racing each other before the first answer is stored may both
 * run; clients retry sequentially, which is what the key is for. */
#define IDEM_TTL_MS (24LL * 3600 * 1000)

struct idem_get {
    struct req *r;
    char *fp;
    int status;
    char *body;
    bool found;
};

static int idem_get_fn(struct store_tx *tx, void *arg)
{
    struct idem_get *g = arg;
    g->found = !store_idem_get(tx, g->r->idem_scope, g->r->idem_key, now_ms() - IDEM_TTL_MS,
                               &g->fp, &g->status, &g->body);
    return 0;
}

/* The Idempotency-Keys of requests running on this node.  A request's
 * answer is stored when it ends, so a second request with its key that
 * came meanwhile (a client's retry after a timeout) found none and ran
 * too; it is now 409 idempotency_key_in_flight.  Nodes do not share this:
 * across nodes the race stays (docs/API.md). */
struct idem_flight {
    char *id;
    struct idem_flight *next;
};
static pthread_mutex_t idem_mu = PTHREAD_MUTEX_INITIALIZER;
static struct idem_flight *idem_flights;

static bool idem_flight_enter(const char *id)
{
    pthread_mutex_lock(&idem_mu);
    struct idem_flight *f = idem_flights;
    while (f && strcmp(f->id, id))
        f = f->next;
    if (!f) {
        f = xmalloc(sizeof *f);
        f->id = xstrdup(id);
        f->next = idem_flights;
        idem_flights = f;
        f = NULL;
    }
    pthread_mutex_unlock(&idem_mu);
    return !f;
}

static void idem_flight_leave(const char *id)
{
    pthread_mutex_lock(&idem_mu);
    for (struct idem_flight **p = &idem_flights; *p; p = &(*p)->next)
        if (!strcmp((*p)->id, id)) {
            struct idem_flight *f = *p;
            *p = f->next;
            free(f->id);
            free(f);
            break;
        }
    pthread_mutex_unlock(&idem_mu);
}

/* r no longer holds its Idempotency-Key (if it held one). */
static void idem_flight_drop(struct req *r)
{
    if (!r->idem_flight)
        return;
    idem_flight_leave(r->idem_flight);
    free(r->idem_flight);
    r->idem_flight = NULL;
}

static bool utf8_ok(const char *s)
{
    return !utf8_bad(s);
}

static bool idem_replayed(struct req *r)
{
    const char *key = http_header(r, "Idempotency-Key");
    if (!key || strcmp(r->method, "POST"))
        return false;
    /* stored as text (PostgreSQL refuses bytes that are not UTF-8: such a
     * key's lookup failed, and the request went on as new) */
    bool ok = *key && strlen(key) <= 255 && utf8_ok(key);
    for (const unsigned char *p = (const unsigned char *)key; ok && *p; p++)
        ok = *p >= 0x20 && *p != 0x7f;
    if (!ok) {
        http_error(r, 400, "invalid_idempotency_key", "Idempotency-Key",
                   "Idempotency-Key must be 1-255 bytes of printable UTF-8 text");
        return true;
    }
    char fp[65];
    crypto_sha256_hex(r->body.data ? r->body.data : "", r->body.len, fp);
    snprintf(r->idem_scope, sizeof r->idem_scope, "%.47s %.300s",
             r->key_id[0] ? r->key_id : "public", r->url);
    r->idem_key = xstrdup(key);
    char *flight = xasprintf("%s\n%s", r->idem_scope, key);
    if (!idem_flight_enter(flight)) {
        free(flight);
        http_add_header(r, "Retry-After", "1");
        http_error(r, 409, "idempotency_key_in_flight", "Idempotency-Key",
                   "a request with this Idempotency-Key is still being processed; retry it");
        return true;
    }
    r->idem_flight = flight;   /* left once its answer is stored (respond), or when r is freed */
    struct idem_get g = {r, NULL, 0, NULL, false};
    int rc = store_read(r->app->store, idem_get_fn, &g);
    bool replay = false;
    if (rc) {
        /* whether this key was answered before is unknown: going on as new
         * could do the request a second time */
        http_store_error(r, rc, true);
        replay = true;
    } else if (g.found && g.fp && strcmp(g.fp, fp)) {
        http_error(r, 409, "idempotency_key_reused", "Idempotency-Key",
                   "this Idempotency-Key was used with a different request body");
        replay = true;
    } else if (g.found && g.status == STORE_IDEM_PENDING) {
        /* its work is stored, its answer is not: quernd stopped before
         * answering, or another node is answering it now */
        http_add_header(r, "Retry-After", "1");
        http_error(r, 409, "idempotency_outcome_unknown", "Idempotency-Key",
                   "a request with this Idempotency-Key was carried out but its answer was not "
                   "stored (quernd stopped before answering, or another node is still answering "
                   "it); it is not run again: read what it made instead");
        replay = true;
    } else if (g.found) {
        http_raw(r, g.status, "application/json", g.body, strlen(g.body));
        http_add_header(r, "Idempotent-Replayed", "true");
        replay = true;
    } else {
        r->idem_fp = xstrdup(fp);
    }
    free(g.fp);
    free(g.body);
    return replay;
}

struct idem_put {
    struct req *r;
};

static int idem_put_fn(struct store_tx *tx, void *arg)
{
    struct req *r = ((struct idem_put *)arg)->r;
    return store_idem_put(tx, r->idem_scope, r->idem_key, r->idem_fp, r->status,
                          r->idem_body ? r->idem_body : r->resp);
}

struct bad_arg {
    const char *key;
};

static enum MHD_Result check_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    struct bad_arg *b = cls;
    (void)kind;
    if (!utf8_ok(key) || (value && !utf8_ok(value))) {
        b->key = key;
        return MHD_NO;
    }
    return MHD_YES;
}

/* Text the API stores and compares is UTF-8; bytes that are not would make
 * PostgreSQL refuse the query (a 500).  A path id of such bytes names
 * nothing (404), a query value is a bad parameter (400). */
static bool args_utf8(struct req *r)
{
    for (int i = 0; i < r->nparams; i++) {
        if (!utf8_ok(r->pvals[i])) {
            http_error(r, 404, "resource_missing", r->pnames[i], "no %s of that name (not UTF-8)",
                       r->pnames[i]);
            return false;
        }
    }
    struct bad_arg b = {NULL};
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, check_arg, &b);
    if (b.key) {
        http_error(r, 400, "invalid_parameter", utf8_ok(b.key) ? b.key : NULL,
                   "query parameter %s is not UTF-8 text (or holds a NUL byte)", b.key);
        return false;
    }
    return true;
}

/* Adds a route's METHOD to a 405's Allow list (HEAD comes with GET). */
static void allow_add(char *allow, size_t size, const char *method)
{
    size_t n = strlen(allow);
    snprintf(allow + n, size - n, "%s%s%s", n ? ", " : "", method,
             strcmp(method, "GET") ? "" : ", HEAD");
}

/* What an encoded '/' in the path decodes to (see path_mark_slashes). */
#define ENCODED_SLASH ((char)0xFE)

/* Finds r's route (r->route, its path parameters), or answers 404/405 and
 * returns false. */
/* The number of '/' in s: a path's segments. */
static size_t slashes(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '/';
    return n;
}

/* Each route's segments (slashes of its pattern), counted once: match()
 * consumes one segment of the pattern and one of the url per step and ends
 * with both spent (but for one trailing '/' of the url), so a route whose
 * count differs cannot match.  Checked first, this skips most of the
 * routes a request tries (the worker routes come late in the table: 18
 * match() calls, 8 k instructions, per lease or report). */
static unsigned char *route_segs;
static pthread_once_t route_segs_once = PTHREAD_ONCE_INIT;

static void route_segs_build(void)
{
    size_t n = 0;
    while (api_routes[n].method)
        n++;
    route_segs = xmalloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        size_t k = slashes(api_routes[i].pattern);
        assert(k < 255);
        route_segs[i] = (unsigned char)k;
    }
}

static bool route_find(struct req *r)
{
    /* HEAD is GET without its body (RFC 9110 9.3.2): libmicrohttpd sends
     * the GET's status and headers alone */
    const char *method = strcmp(r->method, "HEAD") ? r->method : "GET";
    pthread_once(&route_segs_once, route_segs_build);
    if (strchr(r->url, ENCODED_SLASH)) {
        http_error(r, 404, "route_not_found", NULL,
                   "no route for %s %s: an encoded '/' (%%2F) in a path segment is not a "
                   "separator, and no id holds one", r->method, r->url);
        return false;
    }
    size_t usegs = slashes(r->url), ulen = strlen(r->url);
    bool trailing = ulen > 1 && r->url[ulen - 1] == '/';
    for (const struct route *rt = api_routes; rt->method; rt++) {
        size_t k = route_segs[rt - api_routes];
        if ((k != usegs && !(trailing && k + 1 == usegs)) || strcmp(rt->method, method) != 0 ||
            !match(r, rt->pattern, r->url))
            continue;
        fix_param_names(r);
        r->route = rt;
        return true;
    }
    /* no route: which methods the path takes, if any (405 and Allow) */
    char allow[64] = "";
    for (const struct route *rt = api_routes; rt->method; rt++)
        if (match(r, rt->pattern, r->url))
            allow_add(allow, sizeof allow, rt->method);
    free_params(r);
    if (*allow) {
        http_add_header(r, "Allow", allow);
        http_error(r, 405, "method_not_allowed", NULL, "%s is not allowed on %s (allowed: %s)",
                   r->method, r->url, allow);
    } else {
        http_error(r, 404, "route_not_found", NULL, "no route for %s %s", r->method, r->url);
    }
    return false;
}

static void dispatch(struct req *r)
{
    if (!r->route && !route_find(r))
        return;
    const struct route *rt = r->route;
    if (r->body_too_large) {
        http_error(r, 413, "payload_too_large", NULL, "the request body exceeds %lld bytes",
                   (long long)r->app->cfg.max_body_bytes);
        return;
    }
    if (!(rt->scope & SCOPE_PUBLIC) && !r->authed && !auth_request(r))
        return;
    if (!args_utf8(r))
        return;
    if (idem_replayed(r))
        return;
    if (r->idem_fp) {
        r->idem_claim = (struct store_idem_claim){r->idem_scope, r->idem_key, r->idem_fp, false};
        store_idem_claim_set(&r->idem_claim);
    }
    rt->fn(r);
    store_idem_claim_set(NULL);
}

#define EARLY_CHECK_BYTES 16384

/* Whether r's client may send it a body: its route, and its key, are
 * checked before the body is read.  A client with no valid key made quernd
 * hold up to max_body_bytes for each connection it kept sending slowly (20
 * such took quernd from 18 to 345 MB).  A public route reads its body first;
 * a webhook trigger (signed over its body) once the trigger is known to
 * exist and a signature header was sent.  False when the answer is ready. */
static bool body_may_come(struct req *r)
{
    if (!route_find(r))
        return false;
    if (r->route->fn == api_hooks_receive)
        return api_hooks_before_body(r);
    if (r->route->scope & SCOPE_PUBLIC)
        return true;
    if (!auth_request(r))
        return false;
    r->authed = true;
    return true;
}

static enum MHD_Result add_headers(struct req *r, struct MHD_Response *resp)
{
    if (r->content_type)
        MHD_add_response_header(resp, "Content-Type", r->content_type);
    char *p = r->headers.data;
    while (p && *p) {
        char *nl = strchr(p, '\n');
        if (!nl)
            break;
        *nl = 0;
        char *v = nl + 1;
        char *nl2 = strchr(v, '\n');
        if (!nl2)
            break;
        *nl2 = 0;
        MHD_add_response_header(resp, p, v);
        p = nl2 + 1;
    }
    return MHD_YES;
}

/* Test-only (tests/integration/test_crash.py): with QUERN_TEST_ANSWER_HOLD
 * set to a path, a request with an Idempotency-Key whose 2xx answer is
 * about to be recorded creates <path>.reached and waits (at most a minute)
 * while <path> exists: a test kills quernd between a request's work and its
 * answer. */
static void test_answer_hold(void)
{
    test_hold_at("QUERN_TEST_ANSWER_HOLD");
}

static enum MHD_Result respond(struct req *r)
{
    struct MHD_Response *resp;
    if (r->file_fd > 0) {
        resp = MHD_create_response_from_fd((uint64_t)r->file_size, r->file_fd);
        r->file_fd = 0;
    } else if (r->stream) {
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_reader,
                                                 r->stream, stream_free);
        r->stream = NULL;
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    } else {
        if (!r->resp)
            http_error(r, 500, "no_response", NULL, "the handler produced no response");
        store_idem_claim_set(NULL);   /* the answer's own write claims nothing */
        if (r->idem_fp && r->status < 500) {
            if (r->status < 300)
                test_answer_hold();
            struct idem_put a = {r};
            store_write(r->app->store, idem_put_fn, &a);
        }
        /* before the answer goes out: a client's next request with the key
         * may come before this one is freed, and must find it free */
        idem_flight_drop(r);
        resp = MHD_create_response_from_buffer(r->resp_len, r->resp, MHD_RESPMEM_MUST_FREE);
        r->resp = NULL;
    }
    add_headers(r, resp);
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    enum MHD_Result ok = MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ok;
}

/* The query parameters a request may have.  libmicrohttpd keeps each in
 * the connection's 16 KiB pool (MHD_OPTION_CONNECTION_MEMORY_LIMIT): some
 * 250 filled it, and it closed the connection with no answer.  uri_seen
 * cuts a query with more before libmicrohttpd reads it, and on_request
 * answers 414 too_many_parameters. */
#define MAX_QUERY_PARAMS 128

/* *con_cls of a request whose query uri_seen cut (no struct req yet). */
static char params_cut_mark;

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    struct http *h = cls;
    struct req *r = *con_cls;
    bool params_cut = r == (void *)&params_cut_mark;
    (void)version;
    if (params_cut)
        r = NULL;
    if (!r) {
        r = xcalloc(1, sizeof *r);
        r->app = h->app;
        r->conn = conn;
        r->method = method;
        r->url = url;
        r->start_mono = mono_ms();
        /* a client's X-Request-Id (bounded, printable) or a new one */
        const char *rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
        bool ok = rid && *rid && strlen(rid) < sizeof r->request_id;
        for (const char *p = rid; ok && *p; p++)
            ok = *p > 0x20 && *p < 0x7f;
        if (ok)
            snprintf(r->request_id, sizeof r->request_id, "%s", rid);
        else
            id_new("req", r->request_id);
        buf_init(&r->body);
        buf_init(&r->headers);
        *con_cls = r;
        if (closing) {
            http_error(r, 503, "shutting_down", NULL, "%s", stopping_text);
            return respond(r);
        }
        if (params_cut) {
            http_error(r, 414, "too_many_parameters", NULL,
                       "the query has more than %d parameters", MAX_QUERY_PARAMS);
            return respond(r);
        }
        /* A body over the limit is answered 413 before it is read when
         * its client waits for that (Expect: 100-continue, which was
         * answered 100 Continue) or when it is over twice the limit (the
         * whole of it was read and dropped first).  libmicrohttpd closes
         * the connection after an answer queued before the body, unread: a
         * client still sending finds it reset, so a body that is not much
         * over the limit is still read for its 413 (see below). */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        const char *expect = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Expect");
        int64_t n, max = r->app->cfg.max_body_bytes;
        if (!cl || parse_i64(cl, &n))
            n = -1;   /* no length given (or none that reads) */
        if (n > max && (n > 2 * max || (expect && !strcasecmp(expect, "100-continue")))) {
            r->body_too_large = true;
            dispatch(r);
            return respond(r);
        }
        /* A body larger than what libmicrohttpd reads with the headers (16
         * KiB), or chunked, comes only from a client quernd will answer
         * (body_may_come).  A smaller one is read first as before: an answer
         * queued before the body closes the connection, and a client still
         * sending would find it reset instead of reading its 401. */
        const char *te = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Transfer-Encoding");
        if ((n > EARLY_CHECK_BYTES || te) && !body_may_come(r))
            return respond(r);
        return MHD_YES;
    }
    if (*upload_data_size) {
        int64_t max = r->app->cfg.max_body_bytes;
        r->body_bytes += (int64_t)*upload_data_size;
        if (r->body_bytes > max) {
            r->body_too_large = true;
            buf_release(&r->body);
            /* libmicrohttpd cannot answer in the middle of a body: the rest
             * is read and dropped for the 413 at its end, but not for ever.
             * Past twice the limit (only a chunked body gets there) the
             * connection is closed unanswered: a body that never ended was
             * read as long as its client sent. */
            if (r->body_bytes > 2 * max)
                return MHD_NO;
        } else {
            buf_append(&r->body, upload_data, *upload_data_size);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->suspended) {
        /* resumed: run the continuation; a request whose key is not
         * claimed yet (a lease long-poll that waited) claims it in the
         * continuation's first write, as dispatch does */
        r->suspended = false;
        suspended_count--;
        http_handler cont = r->cont;
        r->cont = NULL;
        if (r->idem_fp)
            store_idem_claim_set(&r->idem_claim);
        cont(r);
        store_idem_claim_set(NULL);
    } else {
        dispatch(r);
    }
    if (r->suspended)
        return MHD_YES;
    return respond(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct req *r = *con_cls;
    (void)cls;
    (void)conn;
    if (!r || r == (void *)&params_cut_mark)
        return;
    r->delivered_ok = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK;
    r->ended_by_stop = toe == MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN;
    if (r->on_gone)
        r->on_gone(r, r->delivered_ok);
    metrics_http(r->route ? r->route->pattern : "unmatched", r->method, r->status,
                 mono_ms() - r->start_mono);
    if (log_requests())
        log_write(LOG_INFO, "http",
                  json_pack("{s:s, s:s, s:s, s:i, s:I, s:s, s:b}", "request_id", r->request_id,
                            /* a method is any token a client sends: one that is
                             * not UTF-8 lost the line's fields (json_pack) */
                            "method", utf8_ok(r->method) ? r->method : "?", "route",
                            r->route ? r->route->pattern : "unmatched", "status", r->status,
                            "duration_ms", (json_int_t)(mono_ms() - r->start_mono), "key_id",
                            r->key_id, "completed", r->delivered_ok),
                  "%s %s", r->method, r->route ? r->route->pattern : r->url);
    if (r->stream)
        stream_free(r->stream);
    if (r->file_fd > 0)
        close(r->file_fd);
    free_params(r);
    buf_release(&r->body);
    buf_release(&r->headers);
    json_decref(r->json);
    free(r->resp);
    free(r->key_project);
    free(r->token_run_id);
    free(r->token_key_project);
    free(r->idem_key);
    free(r->idem_fp);
    free(r->idem_body);
    idem_flight_drop(r);
    free(r);
    *con_cls = NULL;
}

/* The request target as the client sent it, before any decoding: the
 * path's own string, which MHD decodes (unescape) after the query's keys
 * and values, in the same call on the same thread.  Only that pointer is
 * the path; a query value is never at the target's start. */
static __thread const char *raw_path;

static void *uri_seen(void *cls, const char *uri, struct MHD_Connection *c)
{
    (void)cls;
    (void)c;
    raw_path = uri;
    char *q = strchr(uri, '?');
    if (!q)
        return NULL;
    size_t n = 1;
    for (const char *p = q + 1; *p; p++)
        n += *p == '&';
    if (n <= MAX_QUERY_PARAMS)
        return NULL;
    /* the target is in libmicrohttpd's read buffer, which it parses (and
     * decodes) in place right after this call: an empty query is read */
    q[1] = '\0';
    return &params_cut_mark;
}

/* An encoded '/' (%2F) in the path is data, not a separator: MHD decoded
 * it into one, so /api/projects/default%2Ftasks was routed as
 * /api/projects/default/tasks and an id ending in %2Fcancel reached the
 * cancel route.  It is made ENCODED_SLASH here (a byte never in UTF-8),
 * and route_find answers 404 for a path that holds one; a %FE the client
 * sent becomes 0xFF (not UTF-8 either, as before). */
static void path_mark_slashes(char *s)
{
    for (char *p = s; (p = strchr(p, '%')) != NULL; p++) {
        if (p[1] == '2' && (p[2] == 'F' || p[2] == 'f')) {
            p[1] = 'F';
            p[2] = 'E';
        } else if ((p[1] == 'F' || p[1] == 'f') && (p[2] == 'E' || p[2] == 'e')) {
            p[2] = 'F';
        }
    }
}

/* MHD's own %-decoding of the path and of each query key and value, but a
 * decoded NUL becomes 0xFF: C strings ended at it, so /tasks/task_x%00junk
 * read task task_x.  0xFF is never UTF-8, so the checks of on_request
 * refuse it as they refuse any such byte (404 in a path, 400 in a query). */
static size_t unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    if (s == raw_path)
        path_mark_slashes(s);
    size_t n = MHD_http_unescape(s);
    for (char *p = s; (p = memchr(p, 0, n - (size_t)(p - s))) != NULL; p++)
        *p = (char)0xFF;
    return n;
}

static void log_mhd(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    (void)fmt;
    (void)ap;
    /* MHD's own messages (client resets and the like) are noise at runtime. */
}

/* host:port as a socket address: an IPv4 or IPv6 address (no names: which
 * of a name's addresses would be meant is the operator's to say). */
static int listen_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len,
                       char **err)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *len = sizeof *v4;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *len = sizeof *v6;
        return 0;
    }
    *err = xasprintf("cannot parse listen address %s (an IPv4 address, localhost, or an IPv6 "
                     "address in brackets is expected)", host);
    return -EINVAL;
}

struct http *http_start(struct app *app, const char *host, int port, int threads,
                        int *bound_port, char **err)
{
    struct sockaddr_storage sa;
    socklen_t salen;
    if (listen_addr(host, port, &sa, &salen, err))
        return NULL;
    struct http *h = xcalloc(1, sizeof *h);
    h->app = app;
    /* Connections leave a quarter of the descriptors, and at least 512, to
     * the rest of quernd: a flood of connections that took them all left
     * none for the store, the sandboxes and the blobs (runs failed with
     * "pipe: Too many open files"), and every client, old and new, hung.
     * quernd itself holds some 150 at rest. */
    unsigned conn_limit = 60000;
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur != RLIM_INFINITY) {
        rlim_t reserve = rl.rlim_cur / 4 > 512 ? rl.rlim_cur / 4 : 512;
        rlim_t n = rl.rlim_cur > reserve + 64 ? rl.rlim_cur - reserve : 64;
        if (n < conn_limit)
            conn_limit = (unsigned)n;
    }
    /* A connection that neither sends nor takes a byte for this long is
     * closed: without it an idle keep-alive connection, a request that
     * stops halfway, or a client that stops reading its response held its
     * descriptor for ever.  Suspended requests and streams (long-polls, an
     * SSE stream between events) are not idle: libmicrohttpd does not time
     * them out, and an idle stream sends its keepalive well within it. */
    unsigned idle_s = (unsigned)((app->cfg.http_idle_timeout_ms + 999) / 1000);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | MHD_USE_TURBO;
    if (sa.ss_family == AF_INET6)
        /* [::] serves IPv4 as well (as 0.0.0.0 would), an address only itself */
        flags |= IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)&sa)->sin6_addr)
                     ? MHD_USE_DUAL_STACK
                     : MHD_USE_IPv6;
    h->d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, h,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                            MHD_OPTION_URI_LOG_CALLBACK, uri_seen, NULL,
                            MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
                            MHD_OPTION_CONNECTION_LIMIT, conn_limit,
                            /* per-connection pool: headers and the stream
                             * buffer; small, so idle SSE subscribers are cheap */
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384,
                            MHD_OPTION_CONNECTION_TIMEOUT, idle_s,
                            MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)4096,
                            MHD_OPTION_EXTERNAL_LOGGER, log_mhd, NULL,
                            MHD_OPTION_END);
    if (!h->d) {
        *err = xasprintf("cannot listen on %s:%d", host, port);
        free(h);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    *bound_port = di ? di->port : port;
    return h;
}

int http_check_listen(const char *host, int port, char **err)
{
    struct sockaddr_storage sa;
    socklen_t salen;
    if (listen_addr(host, port, &sa, &salen, err))
        return -EINVAL;
    if (port == 0)
        return 0;
    int rc = 0, one = 1, fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        *err = xasprintf("cannot listen on %s:%d: %s", host, port, strerror(-rc));
        goto out;
    }
    /* as libmicrohttpd binds: a port left in TIME_WAIT is free, one another
     * process listens on is not */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, salen)) {
        rc = -errno;
        *err = xasprintf("cannot listen on %s:%d: %s", host, port, strerror(-rc));
    }
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

void http_stop(struct http *h)
{
    if (!h)
        return;
    /* New requests are answered 503 from now on (closing, above); the
     * callers have woken every suspended request and stream (draining), so
     * wait for them to finish before stopping, which closes the socket. */
    closing = true;
    for (int i = 0; i < 1000 && suspended_count > 0; i++)
        usleep(10000);
    MHD_stop_daemon(h->d);
    free(h);
}

void http_metrics(struct http *h, struct buf *out)
{
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    if (di)
        buf_printf(out,
                   "# HELP quern_http_connections HTTP connections open on this node\n"
                   "# TYPE quern_http_connections gauge\nquern_http_connections %u\n",
                   di->num_connections);
}
