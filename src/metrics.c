/* metrics — see metrics.h.  Small fixed tables under one mutex. */
#include "metrics.h"

#include <pthread.h>
#include <string.h>

/* 79 route patterns (with "unmatched") x 8 methods x the status codes
 * quernd answers with: 512 filled up (a client trying every route with
 * and without keys) and every later series was silently never counted.
 * Past this many, requests of new series are counted as dropped. */
#define MAX_SERIES 4096

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    const char *route;   /* static strings from the route table */
    const char *method;
    int status;
    uint64_t count;
} http_series[MAX_SERIES];
static int nseries;
static uint64_t dropped;   /* requests of series past MAX_SERIES */

static const double bounds[] = {0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000};
#define NB (sizeof bounds / sizeof bounds[0])
static uint64_t disp_buckets[NB + 1];
static uint64_t disp_count;
static uint64_t disp_sum;   /* whole ms: printed exactly (%g lost digits past 999999) */

static const char *method_name(const char *m)
{
    static const char *const known[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(m, known[i]))
            return known[i];
    return "OTHER";
}

void metrics_http(const char *route, const char *method, int status, int64_t ms)
{
    (void)ms;
    const char *m = method_name(method);
    pthread_mutex_lock(&mu);
    int i;
    for (i = 0; i < nseries; i++)
        if (http_series[i].route == route && http_series[i].method == m &&
            http_series[i].status == status)
            break;
    if (i == nseries && nseries < MAX_SERIES) {
        http_series[i].route = route;
        http_series[i].method = m;
        http_series[i].status = status;
        nseries++;
    }
    if (i < nseries)
        http_series[i].count++;
    else
        dropped++;
    pthread_mutex_unlock(&mu);
}

void metrics_dispatch(int64_t ms)
{
    if (ms < 0)   /* queued_ms from a node whose clock is ahead: the sum never falls */
        ms = 0;
    pthread_mutex_lock(&mu);
    size_t b = 0;
    while (b < NB && (double)ms > bounds[b])
        b++;
    disp_buckets[b]++;
    disp_count++;
    disp_sum += (uint64_t)ms;
    pthread_mutex_unlock(&mu);
}

void metrics_render(struct buf *out)
{
    pthread_mutex_lock(&mu);
    buf_puts(out, "# HELP quern_http_requests_total HTTP requests by route and status code.\n"
                  "# TYPE quern_http_requests_total counter\n");
    for (int i = 0; i < nseries; i++)
        buf_printf(out, "quern_http_requests_total{route=\"%s\",method=\"%s\",code=\"%d\"} %llu\n",
                   http_series[i].route, http_series[i].method, http_series[i].status,
                   (unsigned long long)http_series[i].count);
    buf_printf(out, "# HELP quern_http_requests_dropped_total HTTP requests not counted by route "
                    "(more distinct route, method and code series than the table holds).\n"
                    "# TYPE quern_http_requests_dropped_total counter\n"
                    "quern_http_requests_dropped_total %llu\n",
               (unsigned long long)dropped);
    buf_puts(out, "# HELP quern_dispatch_latency_ms Time from queued to started.\n"
                  "# TYPE quern_dispatch_latency_ms histogram\n");
    uint64_t cum = 0;
    for (size_t b = 0; b < NB; b++) {
        cum += disp_buckets[b];
        buf_printf(out, "quern_dispatch_latency_ms_bucket{le=\"%g\"} %llu\n", bounds[b],
                   (unsigned long long)cum);
    }
    cum += disp_buckets[NB];
    buf_printf(out, "quern_dispatch_latency_ms_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    buf_printf(out, "quern_dispatch_latency_ms_sum %llu\nquern_dispatch_latency_ms_count %llu\n",
               (unsigned long long)disp_sum, (unsigned long long)disp_count);
    pthread_mutex_unlock(&mu);
}
