/* task — see task.h.  Pure functions over task documents; any thread. */
#include "task.h"

#include <stdbool.h>
#include <stdlib.h>

#include "cron.h"
#include "util.h"

static struct cron *task_cron(const json_t *task, const struct tz **z)
{
    const char *expr = json_string_value(json_object_get(task, "schedule"));
    const char *zone = json_string_value(json_object_get(task, "timezone"));
    char *err = NULL;
    *z = tz_get(zone ? zone : "UTC", &err);
    free(err);
    err = NULL;
    struct cron *c = expr && *z ? cron_parse(expr, &err) : NULL;
    free(err);
    return c;
}

int64_t task_deadline_ms(const json_t *task)
{
    const char *s = json_string_value(json_object_get(task, "deadline"));
    int64_t ms;
    if (!s || rfc3339_parse(s, &ms))
        return INT64_MAX;
    return ms;
}

void task_schedule_next(json_t *task, int64_t after_ms)
{
    const char *expr = json_string_value(json_object_get(task, "schedule"));
    json_object_set_new_nocheck(task, "scheduled", json_boolean(expr != NULL));
    json_object_set_new_nocheck(task, "next_run_at", json_null());
    if (!expr || json_is_true(json_object_get(task, "paused")))
        return;
    const struct tz *z;
    struct cron *c = task_cron(task, &z);
    int64_t next = c ? cron_next(c, z, after_ms) : -1;
    cron_free(c);
    if (next >= 0 && next < task_deadline_ms(task)) {
        char ts[RFC3339_LEN];
        rfc3339_format(next, ts);
        json_object_set_new_nocheck(task, "next_run_at", json_string(ts));
    }
}

int64_t task_next_ms(const json_t *task)
{
    const char *s = json_string_value(json_object_get(task, "next_run_at"));
    int64_t ms;
    if (!s || !json_is_string(json_object_get(task, "schedule")) ||
        json_is_true(json_object_get(task, "paused")) || rfc3339_parse(s, &ms) ||
        ms >= task_deadline_ms(task))
        return -1;
    return ms;
}

int64_t task_fires_between(const json_t *task, int64_t from_ms, int64_t to_ms, int64_t max)
{
    const struct tz *z;
    struct cron *c = task_cron(task, &z);
    int64_t n = 0, at = from_ms, dl = task_deadline_ms(task);
    if (to_ms > dl)
        to_ms = dl;
    while (c && n < max) {
        at = cron_next(c, z, at);
        if (at < 0 || at >= to_ms)
            break;
        n++;
    }
    cron_free(c);
    return n;
}

int64_t task_missed_fires(const json_t *task, int64_t instant_ms, int64_t now_ms, int64_t max)
{
    /* up to and including now: task_schedule_next(task, now) goes past it
     * (an instant less than 1 s before now was neither run nor counted) */
    return task_fires_between(task, instant_ms, now_ms + 1, max);
}
