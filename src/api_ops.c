/*
 * api_ops — operations endpoints: health, readiness, Prometheus metrics, the
 * OpenAPI document and the embedded dashboard.
 */
#include <string.h>

#include "api.h"
#include "metrics.h"
#include "openapi.h"
#include "sched.h"
#include "web.h"

void api_ops_healthz(struct req *r)
{
    http_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

void api_ops_readyz(struct req *r)
{
    if (store_ping(r->app->store)) {
        http_error(r, 503, "store_unreachable", NULL, "the %s store does not answer",
                   store_backend(r->app->store));
        return;
    }
    http_json(r, 200, json_pack("{s:s, s:s}", "status", "ready", "store",
                                store_backend(r->app->store)));
}

void api_ops_metrics(struct req *r)
{
    struct buf b;
    buf_init(&b);
    int64_t d[4];
    sched_depths(r->app->sched, d);
    buf_puts(&b, "# HELP quern_queue_depth Ready runs by priority.\n# TYPE quern_queue_depth gauge\n");
    static const char *const names[] = {"urgent", "high", "medium", "low"};
    for (int i = 0; i < 4; i++)
        buf_printf(&b, "quern_queue_depth{priority=\"%s\"} %lld\n", names[i], (long long)d[i]);
    metrics_render(&b);
    http_raw(r, 200, "text/plain; version=0.0.4", b.data ? b.data : "", b.len);
    buf_release(&b);
}

void api_ops_openapi(struct req *r)
{
    http_raw(r, 200, "application/json", openapi_json, strlen(openapi_json));
}

void api_ops_dashboard(struct req *r)
{
    const char *path = r->url;
    if (!strcmp(path, "/") || !strncmp(path, "/ui", 3))
        path = "/index.html";
    for (const struct web_asset *a = web_assets; a->path; a++) {
        if (!strcmp(a->path, path)) {
            const char *ct = strstr(path, ".js") ? "text/javascript; charset=utf-8"
                             : strstr(path, ".css") ? "text/css; charset=utf-8"
                             : strstr(path, ".svg") ? "image/svg+xml"
                                                    : "text/html; charset=utf-8";
            http_raw(r, 200, ct, (const char *)a->data, a->size);
            return;
        }
    }
    http_not_found(r, "file", path);
}
