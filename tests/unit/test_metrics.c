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

