/* test_metrics — the /metrics text of metrics.c. */
#include "t.h"

#include "metrics.h"

static const char *line_of(const char *text, const char *prefix)
{
    const char *p = strstr(text, prefix);
    return p ? p + strlen(prefix) : "";
}

/* The histogram's _sum was printed with %g (six significant digits): past
 * 999 999 ms it read 1.23457e+06, so rate(_sum) stood still for minutes and
 * the mean latency was wrong; a negative latency (a queued_ms from another
 * node's clock, ahead of ours) lowered it. */
TEST(dispatch_sum_is_exact_and_never_falls)
{
    metrics_dispatch(1234567);
    metrics_dispatch(1);
    metrics_dispatch(-50);
    struct buf b;
    buf_init(&b);
    metrics_render(&b);
    CHECK(!strncmp(line_of(b.data, "quern_dispatch_latency_ms_sum "), "1234568\n", 8));
    CHECK(!strncmp(line_of(b.data, "quern_dispatch_latency_ms_count "), "3\n", 2));
    CHECK(!strncmp(line_of(b.data, "quern_dispatch_latency_ms_bucket{le=\"0.5\"} "), "1\n", 2));
    CHECK(!strncmp(line_of(b.data, "quern_dispatch_latency_ms_bucket{le=\"+Inf\"} "), "3\n", 2));
    buf_release(&b);
}


/* The table held 512 series; the 513th (route, method, code) and every
 * later one were never counted, silently. */
TEST(many_http_series_are_all_counted)
{
    static char routes[80][24];
    int n = 0;
    for (int r = 0; r < 80; r++) {
        snprintf(routes[r], sizeof routes[r], "/r%d", r);
        for (int code = 200; code < 208; code++) {
            metrics_http(routes[r], "GET", code, 1);
            n++;
        }
    }
    struct buf b;
    buf_init(&b);
    metrics_render(&b);
    int lines = 0;
    for (const char *p = b.data; (p = strstr(p, "quern_http_requests_total{")); p++)
        lines++;
    CHECK_EQ_INT(lines, n);
    CHECK(strstr(b.data, "quern_http_requests_total{route=\"/r79\",method=\"GET\",code=\"207\"} 1\n"));
    CHECK(strstr(b.data, "\nquern_http_requests_dropped_total 0\n"));
    buf_release(&b);
}
