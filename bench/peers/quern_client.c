/*
 * quern_client — the C producer and worker for the peers' harness
 * (../shared/bench/peers/harness.py): the same protocol as quern_client.py,
 * with a client that costs next to nothing, to show the server's ceiling.
 *
 *   quern_client producer MODE N RATE OUTFILE     MODE = single | bulk | rate
 *   quern_client worker DIR
 * env: QUERN_URL, QUERN_KEY, QUERN_DEF, QUERN_LEASE_MAX (default 64).
 *
 * One process, one thread, one keep-alive connection (bench/qhttp.c).  Built
 * by bench/build-clients.sh.  A worker writes the harness's line
 * "%17.6f %10.3f\n" (done time, start - payload.ts in ms) per job once the
 * report that completes it has been answered.
 */
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../qhttp.h"

#define BASE "/api/projects/default"
#define BATCH 1000

static void die(const char *what, int rc, struct qconn *c)
{
    fprintf(stderr, "quern_client: %s: %d %.300s\n", what, rc, c && rc > 0 ? c->body : "");
    exit(1);
}

static int producer(const char *mode, long n, double rate, const char *out)
{
    struct qconn c;
    const char *def = getenv("QUERN_DEF");
    if (!def || qconn_open(&c))
        die("connect (QUERN_URL, QUERN_KEY, QUERN_DEF)", 0, NULL);
    /* a producer needs the ids only: {id, status, run_id} per task (as a
     * peer's enqueue answers with its job id), not the whole task */
    size_t al = strlen(c.auth);
    snprintf(c.auth + al, sizeof c.auth - al, "Prefer: return=minimal\r\n");
    size_t cap = (size_t)BATCH * 160 + 64;
    char *buf = malloc(cap);
    if (!buf)
        abort();
    double t0 = qnow();
    if (!strcmp(mode, "bulk")) {
        for (long b = 0; b < n; b += BATCH) {
            size_t len = (size_t)snprintf(buf, cap, "{\"tasks\":[");
            for (long i = b; i < n && i < b + BATCH; i++)
                len += (size_t)snprintf(buf + len, cap - len,
                                        "%s{\"definition_id\":\"%s\",\"run\":true,"
                                        "\"input\":{\"i\":%ld,\"ts\":%.6f}}",
                                        i > b ? "," : "", def, i, qnow());
            len += (size_t)snprintf(buf + len, cap - len, "]}");
            int rc = qconn_post(&c, BASE "/tasks/batch", buf, len);
            if (rc != 201 && rc != 200)
                die("tasks/batch", rc, &c);
        }
    } else {
        for (long i = 0; i < n; i++) {
            if (!strcmp(mode, "rate"))
                qpace(i, t0, rate);
            int len = snprintf(buf, cap,
                               "{\"definition_id\":\"%s\",\"run\":true,"
                               "\"input\":{\"i\":%ld,\"ts\":%.6f}}", def, i, qnow());
            int rc = qconn_post(&c, BASE "/tasks", buf, (size_t)len);
            if (rc != 201 && rc != 200)
                die("tasks", rc, &c);
        }
    }
    double t1 = qnow();
    FILE *f = fopen(out, "w");
    if (!f)
        die("open outfile", 0, NULL);
    fprintf(f, "{\"t0\": %.6f, \"t1\": %.6f}\n", t0, t1);
    fclose(f);
    free(buf);
    qconn_close(&c);
    return 0;
}

static int worker(const char *dir)
{
    struct qconn c;
    const char *def = getenv("QUERN_DEF"), *mx = getenv("QUERN_LEASE_MAX");
    if (!def || qconn_open(&c))
        die("connect (QUERN_URL, QUERN_KEY, QUERN_DEF)", 0, NULL);
    char path[4096];
    snprintf(path, sizeof path, "%s/%d.txt", dir, (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        die("open result file", 0, NULL);
    /* the lease answers each run with only what a worker needs (id,
     * attempt, input, ...): docs/API.md, Prefer: return=minimal */
    size_t al = strlen(c.auth);
    snprintf(c.auth + al, sizeof c.auth - al, "Prefer: return=minimal\r\n");
    char lease[512];
    int llen = snprintf(lease, sizeof lease,
                        "{\"worker_id\":\"c-%d\",\"definitions\":[\"%s\"],\"max\":%d,"
                        "\"wait_ms\":30000}", (int)getpid(), def, mx ? atoi(mx) : 64);
    snprintf(path, sizeof path, "%s/ready-%d", dir, (int)getpid());
    int rfd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (rfd >= 0)
        close(rfd);
    size_t cap = 1 << 16;
    char *rep = malloc(cap);
    double *ts = NULL;
    size_t ts_cap = 0;
    if (!rep)
        abort();
    for (;;) {
        int rc = qconn_post(&c, BASE "/workers/lease", lease, (size_t)llen);
        if (rc != 200)
            die("workers/lease", rc, &c);
        double start = qnow();
        json_error_t err;
        json_t *doc = json_loadb(c.body, c.body_len, 0, &err);
        json_t *runs = json_object_get(doc, "data");
        size_t n = json_array_size(runs);
        if (!n) {
            json_decref(doc);
            continue;
        }
        if (n > ts_cap) {
            ts_cap = n;
            ts = realloc(ts, n * sizeof *ts);
            if (!ts)
                abort();
        }
        for (size_t i = 0; i < n; i++) {
            json_t *in = json_object_get(json_array_get(runs, i), "input");
            ts[i] = json_number_value(json_object_get(in, "ts"));
        }
        size_t len = qreport_completed(&rep, &cap, runs);
        json_decref(doc);
        rc = qconn_post(&c, BASE "/workers/report", rep, len);
        if (rc != 200 || strstr(c.body, "\"ok\":false"))
            die("workers/report", rc, &c);
        /* one write() per job, as every peer's worker does */
        for (size_t i = 0; i < n; i++) {
            char line[64];
            int k = snprintf(line, sizeof line, "%17.6f %10.3f\n", qnow(), (start - ts[i]) * 1000);
            if (write(fd, line, (size_t)k) != k)
                die("write result", 0, NULL);
        }
    }
}

int main(int argc, char **argv)
{
    if (argc == 6 && !strcmp(argv[1], "producer"))
        return producer(argv[2], atol(argv[3]), atof(argv[4]), argv[5]);
    if (argc == 3 && !strcmp(argv[1], "worker"))
        return worker(argv[2]);
    fprintf(stderr, "usage: quern_client producer MODE N RATE OUTFILE | quern_client worker DIR\n");
    return 2;
}
