/*
 * qhttp — see qhttp.h.  Blocking sockets; the caller's thread does all I/O.
 */
#include "qhttp.h"

#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void *xrealloc_or_die(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p) {
        fputs("qhttp: out of memory\n", stderr);
        abort();
    }
    return p;
}

double qnow(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void qpace(long i, double t0, double rate)
{
    double dt = t0 + (double)i / rate - qnow();
    if (dt > 0) {
        struct timespec ts = {(time_t)dt, (long)((dt - (double)(time_t)dt) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

int qconn_open(struct qconn *c)
{
    const char *url = getenv("QUERN_URL"), *key = getenv("QUERN_KEY");
    memset(c, 0, sizeof *c);
    c->fd = -1;
    if (!url || !key || strncmp(url, "http://", 7))
        return -EINVAL;
    const char *hp = url + 7, *colon = strrchr(hp, ':');
    if (!colon || (size_t)(colon - hp) >= sizeof c->host)
        return -EINVAL;
    memcpy(c->host, hp, (size_t)(colon - hp));
    c->port = atoi(colon + 1);
    snprintf(c->auth, sizeof c->auth, "Authorization: Bearer %s\r\n", key);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->port)};
    if (inet_pton(AF_INET, c->host, &sa.sin_addr) != 1)
        return -EINVAL;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -errno;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa)) {
        int e = -errno;
        close(c->fd);
        c->fd = -1;
        return e;
    }
    c->in_cap = 1 << 16;
    c->in = xrealloc_or_die(NULL, c->in_cap);
    return 0;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EPIPE;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads more bytes into c->in; 0, or -errno / -ECONNRESET at EOF. */
static int fill(struct qconn *c)
{
    if (c->in_cap - c->in_len < 4096) {
        c->in_cap *= 2;
        c->in = xrealloc_or_die(c->in, c->in_cap);
    }
    ssize_t r;
    do
        r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len - 1, 0);
    while (r < 0 && errno == EINTR);
    if (r <= 0)
        return r < 0 ? -errno : -ECONNRESET;
    c->in_len += (size_t)r;
    c->in[c->in_len] = 0;
    return 0;
}

static int request(struct qconn *c, const char *method, const char *path, const char *body,
                   size_t len)
{
    char head[1024];
    int hn = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: %s:%d\r\n%sContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      method, path, c->host, c->port, c->auth, len);
    if (hn < 0 || (size_t)hn >= sizeof head)
        return -ENAMETOOLONG;
    size_t need = (size_t)hn + len;
    if (need > c->out_cap) {
        c->out_cap = need * 2;
        c->out = xrealloc_or_die(c->out, c->out_cap);
    }
    memcpy(c->out, head, (size_t)hn);
    if (len)
        memcpy(c->out + hn, body, len);
    int rc = send_all(c->fd, c->out, need);
    if (rc)
        return rc;
    /* drop the previous reply, keep any bytes after it */
    memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
    c->in_len -= c->in_off;
    c->in_off = 0;
    char *end;
    while (!(end = c->in_len ? memmem(c->in, c->in_len, "\r\n\r\n", 4) : NULL))
        if ((rc = fill(c)))
            return rc;
    size_t hlen = (size_t)(end - c->in) + 4;
    int status = 0;
    if (sscanf(c->in, "HTTP/1.%*d %d", &status) != 1)
        return -EPROTO;
    size_t clen = 0;
    for (char *l = strstr(c->in, "\r\n") + 2; l < end; l = strstr(l, "\r\n") + 2) {
        if (!strncasecmp(l, "Content-Length:", 15))
            clen = strtoul(l + 15, NULL, 10);
        else if (!strncasecmp(l, "Transfer-Encoding:", 18))
            return -EPROTO;   /* quernd sends Content-Length for JSON */
    }
    while (c->in_len < hlen + clen)
        if ((rc = fill(c)))
            return rc;
    /* NUL-terminate the body; save the byte it overwrites at the end of the buffer */
    if (c->in_len == hlen + clen) {
        c->in[c->in_len] = 0;
    } else {
        /* a pipelined extra byte would be clobbered; we never pipeline */
        return -EPROTO;
    }
    c->body = c->in + hlen;
    c->body_len = clen;
    c->in_off = hlen + clen;
    return status;
}

int qconn_post(struct qconn *c, const char *path, const char *body, size_t len)
{
    return request(c, "POST", path, body, len);
}

int qconn_get(struct qconn *c, const char *path)
{
    return request(c, "GET", path, NULL, 0);
}

void qconn_close(struct qconn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->in);
    free(c->out);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

size_t qreport_completed(char **buf, size_t *cap, const struct json_t *runs)
{
    size_t n = json_array_size(runs);
    if (*cap < n * 96 + 32) {
        *cap = n * 96 + 32;
        *buf = xrealloc_or_die(*buf, *cap);
    }
    size_t len = (size_t)snprintf(*buf, *cap, "{\"results\":[");
    for (size_t i = 0; i < n && len < *cap; i++) {
        json_t *r = json_array_get(runs, i);
        len += (size_t)snprintf(*buf + len, *cap - len,
                                "%s{\"run_id\":\"%s\",\"attempt\":%lld,\"status\":\"completed\"}",
                                i ? "," : "", json_string_value(json_object_get(r, "id")),
                                (long long)json_integer_value(json_object_get(r, "attempt")));
    }
    if (len < *cap)
        len += (size_t)snprintf(*buf + len, *cap - len, "]}");
    if (len >= *cap) {
        fputs("qhttp: a run id longer than a report has room for\n", stderr);
        abort();
    }
    return len;
}
