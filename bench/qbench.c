/*
 * qbench — quern's own micro benchmarks against a running quernd (QUERN_URL,
 * QUERN_KEY).  Each prints one JSON line of figures; bench/run.py starts a
 * fresh quernd per benchmark and adds the server's peak RSS and CPU seconds.
 * Every invocation creates its own definition without code, so runs left
 * queued on the server by an earlier benchmark (or by the harness clients on
 * QUERN_DEF) are never leased here.  The latency samples used to stay 0
 * (p50/p99/p999 0.000) whenever the leased runs did not carry this qbench's
 * input: such runs were counted as done and wrote at most sample 0.  Each
 * input now carries a per-process nonce, a leased run without it is an error,
 * and a latency run whose samples are not all recorded fails instead of
 * printing figures.
 *
 *   qbench create N W B     N tasks ("run": true) from W threads, B per request
 *                           (B=1: POST .../tasks; B>1: POST .../tasks/batch)
 *   qbench drain N W MAX    queue N runs (batched, untimed), then W threads
 *                           lease (max MAX) and report them completed
 *   qbench latency N RATE W N tasks paced at RATE/s from one thread while W
 *                           workers long-poll (max 1): create-sent -> lease-received
 *
 * Threads: one connection per thread (bench/qhttp.c); the shared counters are
 * atomics, the latency samples are written to per-run slots (no lock).
 */
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "qhttp.h"

#define BASE "/api/projects/default"

static char def_id[128];
static long nonce;       /* tags this process's inputs; a leased run without it is not ours */
static long total;
static atomic_long next_i, done_n;
static double *lat;      /* per-request or per-run latencies, ms */
static double rate;
static long batch_b;
static int lease_max;

static void die(const char *what, int rc, struct qconn *c)
{
    fprintf(stderr, "qbench: %s: %d %.300s\n", what, rc, c && rc > 0 ? c->body : "");
    exit(1);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *xs, long n, double p)
{
    long k = (long)(p / 100 * (double)(n - 1) + 0.5);
    return xs[k < n ? k : n - 1];
}

/* Appends one task body for job i to buf at *len. */
static void task_json(char *buf, size_t cap, size_t *len, long i)
{
    *len += (size_t)snprintf(buf + *len, cap - *len,
                             "{\"definition_id\":\"%s\",\"run\":true,"
                             "\"input\":{\"i\":%ld,\"ts\":%.6f,\"qb\":%ld}}",
                             def_id, i, qnow(), nonce);
}

/* Creates jobs [i, i+k) in one request (single POST when batch_b == 1). */
static void create_some(struct qconn *c, char *buf, size_t cap, long i, long k)
{
    size_t len = 0;
    int rc;
    if (batch_b == 1) {
        task_json(buf, cap, &len, i);
        rc = qconn_post(c, BASE "/tasks", buf, len);
    } else {
        len = (size_t)snprintf(buf, cap, "{\"tasks\":[");
        for (long j = 0; j < k; j++) {
            if (j)
                buf[len++] = ',';
            task_json(buf, cap, &len, i + j);
        }
        len += (size_t)snprintf(buf + len, cap - len, "]}");
        rc = qconn_post(c, BASE "/tasks/batch", buf, len);
    }
    if (rc != 201 && rc != 200)
        die("create", rc, c);
}

static void *create_thread(void *arg)
{
    struct qconn c;
    if (qconn_open(&c))
        die("connect", 0, NULL);
    size_t cap = (size_t)batch_b * 160 + 64;
    char *buf = malloc(cap);
    if (!buf)
        abort();
    for (;;) {
        long i = atomic_fetch_add(&next_i, batch_b);
        if (i >= total)
            break;
        long k = total - i < batch_b ? total - i : batch_b;
        double t = qnow();
        create_some(&c, buf, cap, i, k);
        lat[i / batch_b] = (qnow() - t) * 1000;
    }
    free(buf);
    qconn_close(&c);
    return arg;
}

/* Leases and reports until done_n reaches total; records start - ts per run. */
static void *work_thread(void *arg)
{
    struct qconn c;
    if (qconn_open(&c))
        die("connect", 0, NULL);
    char lease[512];
    int llen = snprintf(lease, sizeof lease,
                        "{\"worker_id\":\"qbench\",\"definitions\":[\"%s\"],\"max\":%d,\"wait_ms\":200}",
                        def_id, lease_max);
    size_t cap = (size_t)lease_max * 96 + 64;
    char *rep = malloc(cap);
    if (!rep)
        abort();
    while (atomic_load(&done_n) < total) {
        int rc = qconn_post(&c, BASE "/workers/lease", lease, (size_t)llen);
        if (rc != 200)
            die("lease", rc, &c);
        double start = qnow();
        json_t *doc = json_loadb(c.body, c.body_len, 0, NULL);
        json_t *runs = json_object_get(doc, "data");
        size_t n = json_array_size(runs);
        if (!n) {
            json_decref(doc);
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            json_t *r = json_array_get(runs, i);
            json_t *in = json_object_get(r, "input");
            long idx = (long)json_integer_value(json_object_get(in, "i"));
            if (!json_is_object(in))
                die("a leased run has no \"input\" (the lease reply must carry it)", 0, NULL);
            if (json_integer_value(json_object_get(in, "qb")) != nonce)
                die("leased a run that this qbench did not create", 0, NULL);
            if (idx >= 0 && idx < total)
                lat[idx] = (start - json_number_value(json_object_get(in, "ts"))) * 1000;
        }
        size_t len = qreport_completed(&rep, &cap, runs);
        json_decref(doc);
        rc = qconn_post(&c, BASE "/workers/report", rep, len);
        if (rc != 200 || strstr(c.body, "\"ok\":false"))
            die("report", rc, &c);
        atomic_fetch_add(&done_n, (long)n);
    }
    free(rep);
    qconn_close(&c);
    return arg;
}

static void *pace_thread(void *arg)
{
    struct qconn c;
    if (qconn_open(&c))
        die("connect", 0, NULL);
    char buf[512];
    double t0 = qnow();
    for (long i = 0; i < total; i++) {
        qpace(i, t0, rate);
        create_some(&c, buf, sizeof buf, i, 1);
    }
    qconn_close(&c);
    return arg;
}

/* Creates this invocation's own definition without code (into def_id). */
static void make_definition(void)
{
    struct qconn c;
    char body[256];
    if (qconn_open(&c))
        die("connect", 0, NULL);
    int len = snprintf(body, sizeof body,
                       "{\"title\":\"qbench-%ld\",\"description\":\"no code: leased by qbench\"}", nonce);
    int rc = qconn_post(&c, BASE "/definitions", body, (size_t)len);
    if (rc != 201 && rc != 200)
        die("create definition", rc, &c);
    json_t *doc = json_loadb(c.body, c.body_len, 0, NULL);
    const char *id = json_string_value(json_object_get(doc, "id"));
    if (!id || strlen(id) >= sizeof def_id)
        die("create definition: no id", rc, &c);
    snprintf(def_id, sizeof def_id, "%s", id);
    json_decref(doc);
    qconn_close(&c);
}

static double run_threads(int w, void *(*fn)(void *))
{
    pthread_t *t = calloc((size_t)w, sizeof *t);
    if (!t)
        abort();
    double t0 = qnow();
    for (int i = 0; i < w; i++)
        if (pthread_create(&t[i], NULL, fn, NULL))
            die("pthread_create", 0, NULL);
    for (int i = 0; i < w; i++)
        pthread_join(t[i], NULL);
    free(t);
    return qnow() - t0;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: qbench create N W B | drain N W MAX | latency N RATE W"
                        "  (env QUERN_URL QUERN_KEY)\n");
        return 2;
    }
    const char *what = argv[1];
    total = atol(argv[2]);
    if (total < 1)
        return 2;
    lat = malloc(((size_t)total + 1) * sizeof *lat);
    if (!lat)
        abort();
    for (long i = 0; i <= total; i++)
        lat[i] = -1;   /* unset */
    nonce = (long)getpid() * 1000003L + (long)(qnow() * 1000) % 1000003L;
    make_definition();
    if (!strcmp(what, "create")) {
        int w = atoi(argv[3]);
        batch_b = atol(argv[4]);
        double secs = run_threads(w, create_thread);
        long nreq = (total + batch_b - 1) / batch_b;
        qsort(lat, (size_t)nreq, sizeof *lat, cmp_d);
        printf("{\"bench\":\"create\",\"n\":%ld,\"threads\":%d,\"per_request\":%ld,\"tasks_per_s\":%.0f,"
               "\"req_p50_ms\":%.3f,\"req_p99_ms\":%.3f,\"secs\":%.3f}\n",
               total, w, batch_b, (double)total / secs, pct(lat, nreq, 50), pct(lat, nreq, 99), secs);
    } else if (!strcmp(what, "drain")) {
        int w = atoi(argv[3]);
        lease_max = atoi(argv[4]);
        batch_b = 1000;
        double qsecs = run_threads(2, create_thread);
        double secs = run_threads(w, work_thread);
        printf("{\"bench\":\"drain\",\"n\":%ld,\"threads\":%d,\"lease_max\":%d,\"runs_per_s\":%.0f,"
               "\"secs\":%.3f,\"queue_secs\":%.3f}\n",
               total, w, lease_max, (double)total / secs, secs, qsecs);
    } else if (!strcmp(what, "latency")) {
        rate = atof(argv[3]);
        int w = atoi(argv[4]);
        lease_max = 1;
        batch_b = 1;
        pthread_t p;
        pthread_t *ws = calloc((size_t)w, sizeof *ws);
        if (!ws)
            abort();
        for (int i = 0; i < w; i++)
            pthread_create(&ws[i], NULL, work_thread, NULL);
        struct timespec settle = {0, 300000000};
        nanosleep(&settle, NULL);   /* workers are in their long-poll */
        pthread_create(&p, NULL, pace_thread, NULL);
        pthread_join(p, NULL);
        /* the workers stop once every run is leased; a server that never hands
         * some of them out must not hang the benchmark */
        for (int k = 0; atomic_load(&done_n) < total; k++) {
            if (k == 300) {
                fprintf(stderr, "qbench: latency: only %ld of %ld runs leased 30 s after the last "
                                "create\n", atomic_load(&done_n), total);
                exit(1);
            }
            struct timespec tick = {0, 100000000};
            nanosleep(&tick, NULL);
        }
        for (int i = 0; i < w; i++)
            pthread_join(ws[i], NULL);
        free(ws);
        long missing = 0;
        for (long i = 0; i < total; i++)
            missing += lat[i] < 0;
        if (missing) {
            fprintf(stderr, "qbench: latency: %ld of %ld runs were not leased by this qbench\n",
                    missing, total);
            return 1;
        }
        qsort(lat, (size_t)total, sizeof *lat, cmp_d);
        printf("{\"bench\":\"latency\",\"n\":%ld,\"rate\":%.0f,\"workers\":%d,\"p50_ms\":%.3f,"
               "\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f}\n",
               total, rate, w, pct(lat, total, 50), pct(lat, total, 99), pct(lat, total, 99.9),
               lat[total - 1]);
    } else {
        fprintf(stderr, "qbench: unknown benchmark %s\n", what);
        return 2;
    }
    free(lat);
    return 0;
}
