/*
 * events — see events.h.  The ring and the subscriber list are guarded by
 * one mutex; publishing runs on the store writer thread (a commit hook).
 */
#include "events.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define RING 8192

struct events_sub {
    char *project_id;
    char *run_id;
    events_cb cb;
    void *ctx;
    struct events_sub *next;
};

struct slot {
    int64_t id;
    json_t *ev;
};

struct events {
    struct store *st;
    pthread_mutex_t mu;
    struct slot ring[RING];
    int64_t first, last;   /* ids held: (first, last] */
    bool remote;           /* other nodes write events too (events_remote_run):
                            * the store may hold ids past last */
    struct events_sub *subs;
};

struct events *events_new(struct store *st)
{
    struct events *ev = xcalloc(1, sizeof *ev);
    ev->st = st;
    pthread_mutex_init(&ev->mu, NULL);
    ev->first = ev->last = -1;
    return ev;
}

void events_free(struct events *ev)
{
    if (!ev)
        return;
    for (int i = 0; i < RING; i++)
        json_decref(ev->ring[i].ev);
    while (ev->subs) {
        struct events_sub *n = ev->subs->next;
        free(ev->subs->project_id);
        free(ev->subs->run_id);
        free(ev->subs);
        ev->subs = n;
    }
    pthread_mutex_destroy(&ev->mu);
    free(ev);
}

void events_format_id(int64_t id, char out[32])
{
    /* by hand in the usual range: every event is named once (events_emit),
     * and snprintf took ~1 k instructions of it */
    if (id < 0 || id > INT64_C(9999999999999999)) {
        snprintf(out, 32, "evt_%016" PRId64, id);
        return;
    }
    memcpy(out, "evt_", 4);
    for (int i = 19; i >= 4; i--) {
        out[i] = (char)('0' + id % 10);
        id /= 10;
    }
    out[20] = 0;
}

/* json_string(s) for s that is mostly ASCII (a type, an id): ASCII needs no
 * UTF-8 check, so it is taken as it is; anything else goes through
 * json_string's check as before.  NULL for NULL. */
static json_t *str(const char *s)
{
    if (!s)
        return NULL;
    size_t n = 0;
    for (; s[n]; n++)
        if ((unsigned char)s[n] >= 0x80)
            return json_string(s);
    return json_stringn_nocheck(s, n);
}

int64_t events_parse_id(const char *s)
{
    if (!strncmp(s, "evt_", 4))
        s += 4;
    int64_t v;
    if (parse_i64(s, &v) || v < 0)
        return -1;
    return v;
}

static bool matches(const json_t *e, const char *project_id, const char *run_id)
{
    const char *p = json_string_value(json_object_get(e, "project_id"));
    if (project_id && (!p || strcmp(p, project_id)))
        return false;
    if (run_id) {
        const char *r = json_string_value(json_object_get(e, "run_id"));
        if (!r || strcmp(r, run_id))
            return false;
    }
    return true;
}

struct pub {
    struct events *ev;
    json_t *e;
    int64_t id;
};

static void publish(void *arg, bool committed)
{
    struct pub *p = arg;
    struct events *ev = p->ev;
    if (committed) {
        pthread_mutex_lock(&ev->mu);
        /* Keep the ring contiguous: a gap (ids used by rolled-back writes,
         * or written by another node) restarts it. */
        if (ev->last >= 0 && p->id != ev->last + 1) {
            for (int i = 0; i < RING; i++) {
                json_decref(ev->ring[i].ev);
                ev->ring[i].ev = NULL;
            }
            ev->first = p->id - 1;
        }
        if (ev->last < 0)
            ev->first = p->id - 1;
        struct slot *s = &ev->ring[p->id % RING];
        json_decref(s->ev);
        s->id = p->id;
        s->ev = json_incref(p->e);
        ev->last = p->id;
        if (ev->last - ev->first > RING)
            ev->first = ev->last - RING;
        for (struct events_sub *sub = ev->subs; sub; sub = sub->next)
            if (matches(p->e, sub->project_id, sub->run_id))
                sub->cb(sub->ctx, p->id, p->e);
        pthread_mutex_unlock(&ev->mu);
    }
    json_decref(p->e);
    free(p);
}

int events_emit(struct store_tx *tx, struct events *ev, const char *project_id,
                const char *task_id, const char *run_id, const char *type, json_t *data)
{
    char ts[RFC3339_LEN];
    int64_t now = now_ms();
    rfc3339_format(now, ts);
    /* built field by field (json_pack parses its format on every call) */
    json_t *e = json_object();
    json_object_set_new_nocheck(e, "type", str(type));
    json_object_set_new_nocheck(e, "created_at", json_stringn_nocheck(ts, strlen(ts)));
    json_object_set_new_nocheck(e, "project_id", str(project_id));
    json_object_set_new_nocheck(e, "created_ms", json_integer(now));
    json_object_set_new_nocheck(e, "task_id", task_id ? str(task_id) : json_null());
    json_object_set_new_nocheck(e, "run_id", run_id ? str(run_id) : json_null());
    json_object_set_new_nocheck(e, "data", data ? data : json_object());
    int64_t id = 0;
    int rc = store_event_append(tx, e, &id);
    if (rc) {
        json_decref(e);
        return rc;
    }
    char sid[32];
    events_format_id(id, sid);
    json_object_set_new_nocheck(e, "id", json_stringn_nocheck(sid, strlen(sid)));
    json_object_set_new_nocheck(e, "seq", json_integer(id));
    struct pub *p = xmalloc(sizeof *p);
    p->ev = ev;
    p->e = e;
    p->id = id;
    store_tx_on_commit(tx, publish, p);
    return 0;
}

struct events_sub *events_subscribe(struct events *ev, const char *project_id, const char *run_id,
                                    events_cb cb, void *ctx)
{
    struct events_sub *s = xcalloc(1, sizeof *s);
    s->project_id = project_id ? xstrdup(project_id) : NULL;
    s->run_id = run_id ? xstrdup(run_id) : NULL;
    s->cb = cb;
    s->ctx = ctx;
    pthread_mutex_lock(&ev->mu);
    s->next = ev->subs;
    ev->subs = s;
    pthread_mutex_unlock(&ev->mu);
    return s;
}

void events_unsubscribe(struct events *ev, struct events_sub *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&ev->mu);
    for (struct events_sub **pp = &ev->subs; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    pthread_mutex_unlock(&ev->mu);
    free(s->project_id);
    free(s->run_id);
    free(s);
}

int events_ring_read(struct events *ev, const char *project_id, const char *run_id, int64_t after,
                     size_t max, json_t *out)
{
    int n = 0;
    pthread_mutex_lock(&ev->mu);
    if (ev->last < 0 || after < ev->first) {
        /* nothing published yet since start, or the cursor is older than
         * the ring: the caller reads the store */
        pthread_mutex_unlock(&ev->mu);
        return -1;
    }
    for (int64_t id = after + 1; id <= ev->last && (size_t)n < max; id++) {
        struct slot *s = &ev->ring[id % RING];
        if (s->id != id || !s->ev)
            continue;
        if (matches(s->ev, project_id, run_id)) {
            json_array_append(out, s->ev);
            n++;
        }
    }
    /* The ring holds only this node's events: once another node has written
     * some, a reader at the ring's end asks the store for what is past it. */
    bool ask_store = n == 0 && ev->remote;
    pthread_mutex_unlock(&ev->mu);
    return ask_store ? -1 : n;
}

/* Wakes the subscribers e (stolen) matches with id 0: they read the store,
 * where other nodes' events are. */
static void remote_wake(struct events *ev, json_t *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&ev->mu);
    ev->remote = true;
    for (struct events_sub *sub = ev->subs; sub; sub = sub->next)
        if (matches(e, sub->project_id, sub->run_id))
            sub->cb(sub->ctx, 0, e);
    pthread_mutex_unlock(&ev->mu);
    json_decref(e);
}

void events_remote_run(struct events *ev, const json_t *run)
{
    const char *status = json_string_value(json_object_get(run, "status"));
    if (!status)
        return;
    char type[64];
    snprintf(type, sizeof type, "task_run.%s", status);
    json_t *e = json_pack("{s:s, s:O, s:O, s:O, s:{s:s}}", "type", type, "project_id",
                          json_object_get(run, "project_id"), "run_id", json_object_get(run, "id"),
                          "task_id", json_object_get(run, "task_id"), "data", "status", status);
    remote_wake(ev, e);
}

void events_remote(struct events *ev, const char *project_id, const char *run_id)
{
    json_t *e = json_object();
    json_object_set_new(e, "type", json_string("remote"));
    json_object_set_new(e, "project_id", json_string(project_id));
    json_object_set_new(e, "run_id", run_id ? json_string(run_id) : json_null());
    remote_wake(ev, e);
}

void events_tick(struct events *ev)
{
    pthread_mutex_lock(&ev->mu);
    for (struct events_sub *sub = ev->subs; sub; sub = sub->next)
        sub->cb(sub->ctx, -1, NULL);
    pthread_mutex_unlock(&ev->mu);
}

/* Every type quern emits (webhook subscriptions and session_logs filters
 * name them; an unknown one is refused rather than matching nothing). */
static const char *const known_types[] = {
    "task.created", "task.updated", "task.deleted", "task.completed", "task.failed",
    "task.schedule_skipped",
    "task_run.queued", "task_run.started", "task_run.paused", "task_run.resumed",
    "task_run.unblocked", "task_run.log", "task_run.progress", "task_run.checkpoint",
    "task_run.output", "task_run.artifact", "task_run.interaction_required",
    "task_run.review_required", "task_run.completed", "task_run.failed", "task_run.timed_out",
    "task_run.denied", "task_run.canceling", "task_run.canceled", "task_run.retrying", NULL};

bool events_type_known(const char *type)
{
    for (const char *const *t = known_types; *t; t++)
        if (!strcmp(*t, type))
            return true;
    return false;
}
