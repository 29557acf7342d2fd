/*
 * api_stream — Server-Sent Event streams of a run's events (and log
 * entries, which are events too) and of a whole project.
 *
 * Each stream is pulled by libmicrohttpd when its socket can take more:
 * read() fills the buffer from the stream's cursor — out of the in-memory
 * ring (events.c) when the cursor is still in it, else from the store — and
 * returns 0 when there is nothing new, which suspends the connection until
 * the bus wakes it.  No thread and no queue per subscriber: a subscriber
 * that stops reading holds only its cursor and one buffer of at most
 * BATCH events, so memory stays bounded however far behind it falls (it
 * catches up from the store when it reads again).
 *
 * A stream lives no longer than the key it was opened with (or the key
 * that made its connection token): before it sends more it looks at the
 * key again when this node has revoked a key since its last look, and at
 * least every KEY_RECHECK_MS (a key revoked on another node), and ends once
 * the key is revoked.  An open stream went on sending every event of its
 * project to a revoked key.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "auth.h"
#include "events.h"
#include "jdump.h"
#include "run.h"
#include "util.h"

#define BATCH 256
#define KEEPALIVE_MS 20000
#define KEY_RECHECK_MS 5000

struct sse {
    struct app *app;
    char *project_id;
    char *run_id;                 /* NULL: the project stream */
    int64_t cursor;               /* last event id sent */
    bool end_after_terminal;      /* a run stream ends after the run's end */
    bool was_over;                /* the run had ended when the stream began */
    bool done;
    struct buf out;
    size_t off;
    int64_t last_write;
    struct events_sub *sub;
    struct http_stream_handle *h;
    char *key_project;            /* the key whose revocation ends the stream */
    char key_id[ID_LEN];
    uint64_t revocations;         /* auth_revocations() at the last look */
    int64_t key_checked;          /* mono_ms() of the last look */
};

/* Whether the stream's key may still read it.  A store that cannot be read
 * right now does not end the stream (the next look asks again). */
static bool key_still_live(struct sse *s)
{
    uint64_t rev = auth_revocations(s->app->auth);
    int64_t now = mono_ms();
    if (rev == s->revocations && now - s->key_checked < KEY_RECHECK_MS)
        return true;
    bool live = false;
    if (auth_key_live(s->app, s->key_project, s->key_id, &live))
        return true;
    s->revocations = rev;
    s->key_checked = now;
    return live;
}

static bool terminal_event(const json_t *e)
{
    static const char *const ends[] = {"task_run.completed", "task_run.failed",
                                       "task_run.timed_out", "task_run.denied",
                                       "task_run.canceled"};
    const char *t = json_string_value(json_object_get(e, "type"));
    for (size_t i = 0; t && i < ARRAY_LEN(ends); i++)
        if (!strcmp(t, ends[i]))
            return true;
    return false;
}

struct fetch {
    struct sse *s;
    json_t *out;
    bool run_over;
};

static int fetch_fn(struct store_tx *tx, void *arg)
{
    struct fetch *f = arg;
    struct store_event_query q = {.project_id = f->s->project_id, .run_id = f->s->run_id,
                                  .after_id = f->s->cursor, .limit = BATCH};
    int rc = store_event_list(tx, &q, &f->out, NULL, NULL);
    if (!rc && !json_array_size(f->out) && f->s->run_id) {
        json_t *run = store_get(tx, SK_RUN, f->s->project_id, f->s->run_id);
        f->run_over = !run || run_status_terminal(run_status_of(run));
        json_decref(run);
    }
    return rc;
}

static void format_event(struct sse *s, json_t *e)
{
    int64_t id = json_integer_value(json_object_get(e, "seq"));
    char eid[32];
    events_format_id(id, eid);
    json_t *pub = json_deep_copy(e);
    json_object_set_new(pub, "id", json_string(eid));
    json_object_del(pub, "seq");
    json_object_del(pub, "created_ms");
    char *data = jdump(pub, NULL);
    buf_printf(&s->out, "id: %s\nevent: %s\ndata: %s\n\n", eid,
               json_string_value(json_object_get(e, "type")), data);
    free(data);
    json_decref(pub);
    s->cursor = id;
    if (s->end_after_terminal && terminal_event(e))
        s->done = true;
}

static ssize_t sse_read(void *ctx, char *dst, size_t max)
{
    struct sse *s = ctx;
    if (s->off >= s->out.len) {
        s->out.len = 0;
        s->off = 0;
        if (s->done || s->app->draining || !key_still_live(s))
            return -1;
        json_t *arr = json_array();
        int n = events_ring_read(s->app->events, s->project_id, s->run_id, s->cursor, BATCH, arr);
        bool run_over = false;
        if (n < 0 || (n == 0 && s->was_over)) {
            /* not in the ring (catching up), or a finished run resumed past
             * its end: ask the store, which also says whether it is over */
            json_decref(arr);
            struct fetch f = {s, NULL, false};
            if (store_read(s->app->store, fetch_fn, &f))
                return -1;
            arr = f.out ? f.out : json_array();
            run_over = f.run_over;
        }
        size_t i;
        json_t *e;
        json_array_foreach(arr, i, e) {
            if (!s->done)
                format_event(s, e);
        }
        json_decref(arr);
        if (!s->out.len && run_over && s->end_after_terminal)
            return -1;
        if (!s->out.len && mono_ms() - s->last_write >= KEEPALIVE_MS)
            buf_puts(&s->out, ": keepalive\n\n");
        if (!s->out.len)
            return 0;   /* suspended until the bus wakes us */
    }
    size_t n = s->out.len - s->off;
    if (n > max)
        n = max;
    memcpy(dst, s->out.data + s->off, n);
    s->off += n;
    s->last_write = mono_ms();
    return (ssize_t)n;
}

static void sse_free(void *ctx)
{
    struct sse *s = ctx;
    events_unsubscribe(s->app->events, s->sub);
    http_stream_handle_put(s->h);
    buf_release(&s->out);
    free(s->project_id);
    free(s->run_id);
    free(s->key_project);
    free(s);
}

static void sse_wake(void *ctx, int64_t id, const json_t *event)
{
    struct sse *s = ctx;
    (void)event;
    if (id < 0 && mono_ms() - s->last_write < KEEPALIVE_MS && !s->app->draining)
        return;
    http_stream_wake(s->h);
}

static const struct http_stream_ops sse_ops = {sse_read, sse_free};

struct start_arg {
    const char *project_id, *run_id, *task_id;
    bool found, terminal;
    int64_t last_id;
};

static int start_fn(struct store_tx *tx, void *arg)
{
    struct start_arg *a = arg;
    a->last_id = store_event_last_id(tx);
    if (!a->run_id) {
        json_t *p = store_get(tx, SK_PROJECT, a->project_id, a->project_id);
        a->found = p != NULL;
        json_decref(p);
        return 0;
    }
    json_t *run = store_get(tx, SK_RUN, a->project_id, a->run_id);
    a->found = run && (!a->task_id ||
                       !strcmp(a->task_id, json_string_value(json_object_get(run, "task_id")) ?: ""));
    a->terminal = run && run_status_terminal(run_status_of(run));
    json_decref(run);
    return 0;
}

static void stream(struct req *r, const char *run_id)
{
    const char *project = http_param(r, "project_id");
    struct start_arg a = {project, run_id, http_param(r, "task_id"), false, false, 0};
    if (store_read(r->app->store, start_fn, &a) || !a.found) {
        http_not_found(r, run_id ? "run" : "project", run_id ? run_id : project);
        return;
    }
    int64_t cursor = 0;
    const char *last = http_header(r, "Last-Event-ID");
    if (!last)
        last = http_query(r, "last_event_id");
    const char *start = http_query(r, "start");
    if (last && *last) {
        if ((cursor = events_parse_id(last)) < 0) {
            http_error(r, 400, "invalid_parameter", "Last-Event-ID",
                       "Last-Event-ID must be an event id like evt_0000000000000042");
            return;
        }
    } else if (start && !strcmp(start, "latest")) {
        cursor = a.last_id;
    } else if (start && strcmp(start, "earliest")) {
        http_error(r, 400, "invalid_parameter", "start", "start must be latest or earliest");
        return;
    }
    struct sse *s = xcalloc(1, sizeof *s);
    s->app = r->app;
    s->project_id = xstrdup(project);
    s->run_id = run_id ? xstrdup(run_id) : NULL;
    s->cursor = cursor;
    s->end_after_terminal = run_id != NULL;
    s->was_over = a.terminal;
    s->last_write = mono_ms();
    if (r->token_run_id) {
        s->key_project = xstrdup(r->token_key_project);
        snprintf(s->key_id, sizeof s->key_id, "%s", r->token_key_id);
    } else {
        s->key_project = xstrdup(r->key_project ? r->key_project : AUTH_ROOT_PROJECT);
        snprintf(s->key_id, sizeof s->key_id, "%s", r->key_id);
    }
    s->revocations = auth_revocations(r->app->auth);
    s->key_checked = mono_ms();
    buf_init(&s->out);
    /* the retry hint, then history from the cursor */
    buf_puts(&s->out, "retry: 2000\n\n");
    s->h = http_stream(r, "text/event-stream", &sse_ops, s);
    s->sub = events_subscribe(r->app->events, project, run_id, sse_wake, s);
}

void api_runs_stream(struct req *r)
{
    stream(r, http_param(r, "id"));
}

void api_events_stream(struct req *r)
{
    stream(r, NULL);
}
