/*
 * qhttp — the benchmarks' minimal HTTP/1.1 client: one keep-alive TCP
 * connection (TCP_NODELAY), POST a JSON body, read a Content-Length reply.
 * Just enough for quernd's JSON API, so the client costs next to nothing and
 * the figures measure the server.  One struct qconn per thread; no locking.
 */
#ifndef QHTTP_H
#define QHTTP_H

#include <stddef.h>

struct qconn {
    int fd;
    char host[64];
    int port;
    char auth[256];       /* "Authorization: Bearer <key>\r\n" */
    char *in;             /* receive buffer */
    size_t in_len, in_cap, in_off;
    char *body;           /* last reply's body (points into in), NUL-terminated */
    size_t body_len;
    char *out;            /* send buffer */
    size_t out_cap;
};

/* Connects to QUERN_URL (http://HOST:PORT) with key QUERN_KEY from the
 * environment.  Returns 0 or -errno. */
int qconn_open(struct qconn *c);

/* POSTs body (len bytes) to path; returns the HTTP status, or -errno.  The
 * reply body stays in c->body until the next call. */
int qconn_post(struct qconn *c, const char *path, const char *body, size_t len);

/* Like qconn_post for GET. */
int qconn_get(struct qconn *c, const char *path);

void qconn_close(struct qconn *c);

/* Wall clock in seconds (CLOCK_REALTIME), as Python's time.time(). */
double qnow(void);

/* Sleeps until t0 + i / rate (the harness's pacing). */
void qpace(long i, double t0, double rate);

struct json_t;

/* The body of POST /workers/report that completes every run of `runs` (a
 * lease reply's "data" array, jansson) at its attempt, written into *buf
 * (grown as needed; *cap its size).  Returns its length. */
size_t qreport_completed(char **buf, size_t *cap, const struct json_t *runs);

#endif
