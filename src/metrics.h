/*
 * metrics — counters and histograms for /metrics (Prometheus text).
 * Thread-safe; a mutex guards the tables (updates are a few per request).
 */
#ifndef QUERN_METRICS_H
#define QUERN_METRICS_H

#include <stdint.h>

#include "util.h"

void metrics_http(const char *route, const char *method, int status, int64_t ms);
/* One dispatch: queued -> started latency in ms. */
void metrics_dispatch(int64_t ms);
/* Appends everything in Prometheus text format. */
void metrics_render(struct buf *out);

#endif
