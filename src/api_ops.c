/*
 * api_ops — operations endpoints: health, readiness, Prometheus metrics, the
 * OpenAPI document and the embedded dashboard.
 */
#include <errno.h>
#include <string.h>

#include "api.h"
#include "metrics.h"
#include "openapi.h"
#include "run.h"
#include "runner.h"
#include "sched.h"
#include "web.h"

void api_ops_healthz(struct req *r)
{
    http_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

void api_ops_readyz(struct req *r)
{
    int rc = store_ping(r->app->store);
    if (rc) {
        http_add_header(r, "Retry-After", "1");
        if (rc == -ETIMEDOUT)
            http_error(r, 503, "store_unreachable", NULL,
                       "the %s store does not answer (it accepted no query within 2 s)",
                       store_backend(r->app->store));
        else
            http_error(r, 503, "store_unreachable", NULL, "the %s store cannot be reached: %s",
                       store_backend(r->app->store), strerror(-rc));
        return;
    }
    http_json(r, 200, json_pack("{s:s, s:s}", "status", "ready", "store",
                                store_backend(r->app->store)));
}

struct counts {
    int64_t n[RS__COUNT];
};

/* Runs by status: one index range count per project and status (the runs
 * index starts with project and status), so a scrape costs what the
 * matching index entries cost to count. */
static int count_fn(struct store_tx *tx, void *arg)
{
    struct counts *c = arg;
    struct store_query all = {NULL, 0, 0, 0, true, NULL};
    json_t *projects = NULL;
    int rc = store_list(tx, SK_PROJECT, NULL, &all, &projects, NULL);
    if (rc)
        return rc;
    size_t i;
    json_t *p;
    json_array_foreach(projects, i, p) {
        const char *id = json_string_value(json_object_get(p, "id"));
        for (int k = 0; k < RS__COUNT; k++) {
            struct store_filter f = {"status", run_status_name((enum run_status)k)};
            struct store_query q = {&f, 1, 1, 0, false, NULL};
            json_t *one = NULL;
            int64_t total = 0;
            rc = store_list(tx, SK_RUN, id, &q, &one, &total);
            json_decref(one);
            if (rc)
                goto out;   /* a partial count is no count: quern_store_up 0 */
            c->n[k] += total;
        }
    }
out:
    json_decref(projects);
    return rc;
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
    buf_printf(&b, "# HELP quern_schedules Tasks with an active cron schedule.\n"
                   "# TYPE quern_schedules gauge\nquern_schedules %lld\n",
               (long long)sched_cron_count(r->app->sched));
    http_metrics(r->app->http, &b);
    struct counts c = {{0}};
    int up = !store_read(r->app->store, count_fn, &c);
    buf_printf(&b, "# HELP quern_store_up 1 when this scrape read the store (quern_runs is then "
                   "present), 0 when it could not.\n# TYPE quern_store_up gauge\nquern_store_up %d\n",
               up);
    if (up) {
        buf_puts(&b, "# HELP quern_runs Runs by status.\n# TYPE quern_runs gauge\n");
        for (int k = 0; k < RS__COUNT; k++)
            buf_printf(&b, "quern_runs{status=\"%s\"} %lld\n", run_status_name((enum run_status)k),
                       (long long)c.n[k]);
    }
    if (r->app->runner)
        runner_metrics(r->app->runner, &b);
    metrics_render(&b);
    http_raw(r, 200, "text/plain; version=0.0.4", b.data ? b.data : "", b.len);
    buf_release(&b);
}

void api_ops_openapi(struct req *r)
{
    http_raw(r, 200, "application/json", openapi_json, strlen(openapi_json));
}

/* inline style attributes are the only inline content web/app.js uses */
#define DASHBOARD_CSP                                                                          \
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "               \
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "         \
    "frame-ancestors 'none'"

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
            /* the dashboard holds an API key: no framing (clickjacking), no script but its
               own (a payload that slips past rendering still cannot run or phone home), no
               sniffing, and no Referer carrying a dashboard address elsewhere */
            http_add_header(r, "Content-Security-Policy", DASHBOARD_CSP);
            http_add_header(r, "X-Frame-Options", "DENY");
            http_add_header(r, "X-Content-Type-Options", "nosniff");
            http_add_header(r, "Referrer-Policy", "no-referrer");
            http_raw(r, 200, ct, (const char *)a->data, a->size);
            return;
        }
    }
    http_not_found(r, "file", path);
}
