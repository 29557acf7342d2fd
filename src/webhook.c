/*
 * webhook — see webhook.h.  Threads: the dispatcher (events → deliveries),
 * WEBHOOK_SENDERS senders (due deliveries → HTTP), and store commit hooks
 * on the writer thread that only push onto the heap.  One mutex guards the
 * heap and the flags; no lock is held across a store call or a request.
 */
#include "webhook.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "app.h"
#include "crypto.h"
#include "events.h"
#include "jdump.h"
#include "policy.h"
#include "secrets.h"
#include "util.h"

#define HOUR_MS 3600000LL
#define EVENT_BATCH 256
#define MAX_RESPONSE_KEPT 1024
#define RESCAN_OVERDUE_MS 60000LL

struct due {
    int64_t at;                 /* wall clock ms of the next attempt */
    char id[ID_LEN];
    /* whose attempts WEBHOOK_PER_HOOK counts: a hash of "<project>/<webhook>"
     * (8 bytes a pending delivery; two webhooks that collide share a limit) */
    uint64_t key;
};

/* a min-heap of due deliveries by at */
struct dueq {
    struct due *v;
    size_t n, cap;
};

struct webhook {
    struct app *app;
    pthread_mutex_t mu;
    pthread_cond_t cond_disp, cond_send;
    bool stopping, wake;
    /* true while this node has nothing to dispatch (not the leader, or no
     * webhook exists): events then skip the wake-up entirely (atomic) */
    bool idle;
    struct dueq q;
    /* due deliveries of webhooks at WEBHOOK_PER_HOOK, one queue per webhook:
     * its earliest goes back to q each time an attempt of that webhook ends */
    struct park {
        uint64_t key;
        struct dueq q;
    } *parks;
    size_t nparks, capparks;
    pthread_t disp, senders[WEBHOOK_SENDERS];
    int nsenders;
    struct sender {
        struct webhook *wh;
        char inflight[ID_LEN];   /* the delivery being attempted, "" when idle */
        uint64_t inflight_key;
    } sender[WEBHOOK_SENDERS];
    int64_t last_rescan_ms;
    bool disp_started;
    struct events_sub *sub;
    int64_t base_ms, window_ms, timeout_ms;
    bool allow_private_env;
    unsigned char key[32];      /* opens webhook secrets */
};

/* ---- pure helpers ---- */

static const char *v4_class(const unsigned char a[4])
{
    if (a[0] == 0)
        return "unspecified";
    if (a[0] == 127)
        return "loopback";
    if (a[0] == 10 || (a[0] == 172 && (a[1] & 0xF0) == 16) || (a[0] == 192 && a[1] == 168) ||
        (a[0] == 100 && (a[1] & 0xC0) == 64))
        return "private";
    if (a[0] == 169 && a[1] == 254)
        return "link-local";
    if (a[0] >= 224 && a[0] <= 239)
        return "multicast";
    if (a[0] >= 240 || (a[0] == 192 && a[1] == 0 && a[2] == 0) ||
        (a[0] == 198 && (a[1] & 0xFE) == 18))
        return "reserved";   /* 240/4 incl. broadcast, 192.0.0/24, 198.18/15 */
    return NULL;
}

const char *webhook_addr_class(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in in;
        memcpy(&in, sa, sizeof in);
        unsigned char a[4];
        memcpy(a, &in.sin_addr, 4);
        return v4_class(a);
    }
    if (sa->sa_family != AF_INET6)
        return "reserved";
    struct sockaddr_in6 in6;
    memcpy(&in6, sa, sizeof in6);
    const unsigned char *a = in6.sin6_addr.s6_addr;
    static const unsigned char zero[16];
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    static const unsigned char nat64[12] = {0, 0x64, 0xFF, 0x9B};
    static const unsigned char siit[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0};
    static const unsigned char nat64_local[6] = {0, 0x64, 0xFF, 0x9B, 0, 1};
    if (!memcmp(a, zero, 16))
        return "unspecified";
    if (!memcmp(a, zero, 15) && a[15] == 1)
        return "loopback";
    if (!memcmp(a, mapped, 12) || !memcmp(a, nat64, 12) || !memcmp(a, zero, 12) ||
        !memcmp(a, siit, 12))
        return v4_class(a + 12);   /* ::ffff:a.b.c.d, 64:ff9b::a.b.c.d, ::a.b.c.d,
                                      ::ffff:0:a.b.c.d (SIIT) */
    if (!memcmp(a, nat64_local, 6))
        return "private";          /* 64:ff9b:1::/48, a local network's NAT64 */
    if (a[0] == 0x20 && a[1] == 0x01 && ((a[2] == 0 && a[3] == 0) || (a[2] == 0x0D && a[3] == 0xB8)))
        return "reserved";         /* 2001::/32 Teredo, 2001:db8::/32 documentation */
    if (a[0] == 0x01 && !memcmp(a + 1, zero, 7))
        return "reserved";         /* 100::/64 discard */
    if (a[0] == 0x20 && a[1] == 0x02)
        return v4_class(a + 2);    /* 6to4 2002:AABB:CCDD:: */
    if (a[0] == 0xFF)
        return "multicast";
    if (a[0] == 0xFE && (a[1] & 0xC0) == 0x80)
        return "link-local";
    if ((a[0] & 0xFE) == 0xFC || (a[0] == 0xFE && (a[1] & 0xC0) == 0xC0))
        return "private";          /* fc00::/7 ULA, fec0::/10 site-local */
    return NULL;
}

int64_t webhook_backoff_ms(int attempt, int64_t base_ms)
{
    if (base_ms <= 0)
        base_ms = 1;
    if (attempt < 1)
        attempt = 1;
    int64_t d = base_ms;
    for (int i = 1; i < attempt; i++) {
        if (d >= HOUR_MS / 2)
            return HOUR_MS;
        d *= 2;
    }
    return d < HOUR_MS ? d : HOUR_MS;
}

bool webhook_pattern_ok(const char *p)
{
    if (!strcmp(p, "*") || !strcmp(p, "task.*") || !strcmp(p, "task_run.*"))
        return true;
    return events_type_known(p);
}

bool webhook_pattern_match(const char *pattern, const char *type)
{
    if (!strcmp(pattern, "*"))
        return true;
    size_t n = strlen(pattern);
    if (n >= 2 && pattern[n - 1] == '*' && pattern[n - 2] == '.')
        return !strncmp(pattern, type, n - 1);   /* "task.*" matches "task.x", not "task_run.x" */
    return !strcmp(pattern, type);
}

int webhook_url_check(const char *url, char **why)
{
    *why = NULL;
    if (!url || !*url || strlen(url) > 2048) {
        *why = xstrdup("must be an http or https URL of at most 2048 characters");
        return -EINVAL;
    }
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    int rc = 0;
    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) || !host || !*host) {
        *why = xstrdup("must be an absolute http or https URL with a host");
        rc = -EINVAL;
    } else if (strcmp(scheme, "http") && strcmp(scheme, "https")) {
        *why = xstrdup("must use the http or https scheme");
        rc = -EINVAL;
    }
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return rc;
}

/* ---- delivery documents ---- */

json_t *webhook_delivery_doc(const char *project_id, const char *webhook_id, const char *url,
                             const char *event_id, const char *event_type, const char *body)
{
    char id[ID_LEN], ts[RFC3339_LEN];
    id_new("dlv", id);
    int64_t now = now_ms();
    rfc3339_format(now, ts);
    json_t *d = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:[], s:i, s:s, s:I, s:s, s:I, s:n, "
                          "s:s}",
                          "id", id, "project_id", project_id, "webhook_id", webhook_id, "url", url,
                          "body", body, "status", "pending", "attempts", "attempt_count", 0,
                          "created_at", ts, "created_ms", (json_int_t)now, "next_attempt_at", ts,
                          "next_attempt_ms", (json_int_t)now, "completed_at", "updated_at", ts);
    json_object_set_new(d, "event_id", event_id ? json_string(event_id) : json_null());
    json_object_set_new(d, "event_type", event_type ? json_string(event_type) : json_null());
    return d;
}

json_t *webhook_delivery_public(const json_t *d)
{
    json_t *o = json_deep_copy(d);
    json_object_del(o, "created_ms");
    json_object_del(o, "next_attempt_ms");
    const char *body = json_string_value(json_object_get(d, "body"));
    json_t *payload = body ? json_loads(body, 0, NULL) : NULL;
    json_object_del(o, "body");
    json_object_set_new(o, "payload", payload ? payload : json_null());
    if (strcmp(json_string_value(json_object_get(d, "status")) ?: "", "pending"))
        json_object_set_new(o, "next_attempt_at", json_null());
    return o;
}

/* ---- the heap of due deliveries (mu held) ---- */

static uint64_t fnv1a(uint64_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001B3ULL;
    return h;
}

static uint64_t due_key(const json_t *d)
{
    uint64_t h = fnv1a(0xCBF29CE484222325ULL,
                       json_string_value(json_object_get(d, "project_id")) ?: "");
    h = fnv1a(h, "/");
    return fnv1a(h, json_string_value(json_object_get(d, "webhook_id")) ?: "");
}

static void dq_push(struct dueq *q, const struct due *d)
{
    if (q->n == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 64;
        q->v = xrealloc(q->v, q->cap * sizeof *q->v);
    }
    size_t i = q->n++;
    q->v[i] = *d;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (q->v[p].at <= q->v[i].at)
            break;
        struct due t = q->v[p];
        q->v[p] = q->v[i];
        q->v[i] = t;
        i = p;
    }
}

static struct due dq_pop(struct dueq *q)
{
    struct due top = q->v[0];
    q->v[0] = q->v[--q->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < q->n && q->v[l].at < q->v[m].at)
            m = l;
        if (r < q->n && q->v[r].at < q->v[m].at)
            m = r;
        if (m == i)
            break;
        struct due t = q->v[m];
        q->v[m] = q->v[i];
        q->v[i] = t;
        i = m;
    }
    return top;
}

static void heap_push(struct webhook *wh, const char *id, uint64_t key, int64_t at)
{
    struct due d = {.at = at, .key = key};
    snprintf(d.id, sizeof d.id, "%s", id);
    dq_push(&wh->q, &d);
}

static void timed_wait(pthread_cond_t *c, pthread_mutex_t *mu, int64_t ms)
{
    struct timespec ts;
    mono_deadline(&ts, ms);
    pthread_cond_timedwait(c, mu, &ts);
}

struct enqueue {
    struct webhook *wh;
    char id[ID_LEN];
    uint64_t key;
    int64_t at;
};

static void enqueue_hook(void *arg, bool committed)
{
    struct enqueue *e = arg;
    if (committed) {
        pthread_mutex_lock(&e->wh->mu);
        heap_push(e->wh, e->id, e->key, e->at);
        pthread_cond_signal(&e->wh->cond_send);
        pthread_mutex_unlock(&e->wh->mu);
    }
    free(e);
}

static void enqueue_after_commit(struct store_tx *tx, struct webhook *wh, const json_t *d,
                                 int64_t at)
{
    if (!wh)
        return;
    struct enqueue *e = xmalloc(sizeof *e);
    e->wh = wh;
    snprintf(e->id, sizeof e->id, "%s", json_string_value(json_object_get(d, "id")) ?: "");
    e->key = due_key(d);
    e->at = at;
    store_tx_on_commit(tx, enqueue_hook, e);
}

int webhook_queue(struct store_tx *tx, struct webhook *wh, const char *project_id, json_t *delivery)
{
    int rc = store_put(tx, SK_DELIVERY, project_id, delivery);
    if (rc)
        return rc;
    enqueue_after_commit(tx, wh, delivery,
                         json_integer_value(json_object_get(delivery, "next_attempt_ms")));
    return 0;
}

/* ---- the dispatcher: events → deliveries ---- */

struct scan {
    json_t *hooks;
    int64_t last;
};

static int scan_fn(struct store_tx *tx, void *arg)
{
    struct scan *s = arg;
    struct store_query q = {NULL, 0, 0, 0, true, NULL};
    s->last = store_event_last_id(tx);
    return store_list(tx, SK_WEBHOOK, NULL, &q, &s->hooks, NULL);
}

struct batch {
    struct webhook *wh;
    const char *project_id, *hook_id;
    int64_t cursor, new_cursor;
    json_t *events;      /* read: events after cursor */
    json_t *matches;     /* [{id, type, body}] */
    bool stale;
};

static int read_events_fn(struct store_tx *tx, void *arg)
{
    struct batch *b = arg;
    struct store_event_query q = {.project_id = b->project_id, .after_id = b->cursor,
                                  .limit = EVENT_BATCH};
    int64_t last = store_event_last_id(tx);
    int rc = store_event_list(tx, &q, &b->events, NULL, NULL);
    if (rc)
        return rc;
    size_t n = json_array_size(b->events);
    int64_t top = n ? json_integer_value(json_object_get(json_array_get(b->events, n - 1), "seq"))
                    : b->cursor;
    /* fewer than a batch: every event of the project up to `last` was read
     * (same snapshot), so the cursor may move past other projects' ids */
    b->new_cursor = n < EVENT_BATCH && last > top ? last : top;
    return 0;
}

static int advance_fn(struct store_tx *tx, void *arg)
{
    struct batch *b = arg;
    json_t *hook = store_get(tx, SK_WEBHOOK, b->project_id, b->hook_id);
    if (!hook || json_integer_value(json_object_get(hook, "cursor")) != b->cursor) {
        b->stale = true;   /* deleted, or moved on by another node */
        json_decref(hook);
        return 0;
    }
    int rc = 0;
    const char *url = json_string_value(json_object_get(hook, "url"));
    size_t i;
    json_t *m;
    json_array_foreach(b->matches, i, m) {
        json_t *d = webhook_delivery_doc(b->project_id, b->hook_id, url ? url : "",
                                         json_string_value(json_object_get(m, "id")),
                                         json_string_value(json_object_get(m, "type")),
                                         json_string_value(json_object_get(m, "body")));
        rc = webhook_queue(tx, b->wh, b->project_id, d);
        json_decref(d);
        if (rc)
            goto out;
    }
    json_object_set_new(hook, "cursor", json_integer(b->new_cursor));
    rc = store_update(tx, SK_WEBHOOK, b->project_id, hook);
out:
    json_decref(hook);
    return rc;
}

static bool filter_match(const json_t *events, const char *type)
{
    size_t i;
    json_t *p;
    json_array_foreach(events, i, p) {
        const char *s = json_string_value(p);
        if (s && webhook_pattern_match(s, type))
            return true;
    }
    return false;
}

/* The public form of a stored event, as a compact JSON string. */
static char *event_body(json_t *e, char eid[32])
{
    json_t *pub = json_deep_copy(e);
    events_format_id(json_integer_value(json_object_get(e, "seq")), eid);
    json_object_del(pub, "seq");
    json_object_del(pub, "created_ms");
    json_object_set_new(pub, "id", json_string(eid));
    char *s = jdump(pub, NULL);
    json_decref(pub);
    return s;
}

/* Moves one webhook's cursor forward over at most a few batches. */
static void follow_hook(struct webhook *wh, json_t *hook, int64_t last)
{
    const char *pid = json_string_value(json_object_get(hook, "project_id"));
    const char *hid = json_string_value(json_object_get(hook, "id"));
    json_t *filter = json_object_get(hook, "events");
    int64_t cursor = json_integer_value(json_object_get(hook, "cursor"));
    for (int round = 0; round < 8 && cursor < last && !__atomic_load_n(&wh->stopping, __ATOMIC_RELAXED); round++) {
        struct batch b = {wh, pid, hid, cursor, cursor, NULL, json_array(), false};
        if (store_read(wh->app->store, read_events_fn, &b)) {
            json_decref(b.matches);
            return;
        }
        size_t i;
        json_t *e;
        json_array_foreach(b.events, i, e) {
            const char *type = json_string_value(json_object_get(e, "type"));
            if (!type || !filter_match(filter, type))
                continue;
            char eid[32];
            char *body = event_body(e, eid);
            json_array_append_new(b.matches, json_pack("{s:s, s:s, s:s}", "id", eid, "type", type,
                                                       "body", body));
            free(body);
        }
        size_t nread = json_array_size(b.events);
        int rc = b.new_cursor > cursor ? store_write(wh->app->store, advance_fn, &b) : 0;
        json_decref(b.events);
        json_decref(b.matches);
        if (rc || b.stale || nread < EVENT_BATCH)
            return;
        cursor = b.new_cursor;
    }
}

/* One pass over every webhook; returns how many exist (-1: the read failed). */
static int dispatch_cycle(struct webhook *wh)
{
    struct scan s = {NULL, 0};
    if (store_read(wh->app->store, scan_fn, &s)) {
        json_decref(s.hooks);
        return -1;
    }
    int n = (int)json_array_size(s.hooks);
    size_t i;
    json_t *hook;
    json_array_foreach(s.hooks, i, hook) {
        if (json_integer_value(json_object_get(hook, "cursor")) < s.last)
            follow_hook(wh, hook, s.last);
    }
    json_decref(s.hooks);
    return n;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Pending deliveries that no thread of this process holds and that are
 * long overdue: made by another node that stopped (PostgreSQL, several
 * nodes).  Pushed onto the heap; a rare duplicate attempt is allowed
 * (delivery is at least once). */
static int rescan_fn(struct store_tx *tx, void *arg)
{
    struct webhook *wh = arg;
    struct store_filter f = {"status", "pending"};
    struct store_query q = {&f, 1, 0, 0, true, NULL};
    json_t *list = NULL;
    int rc = store_list(tx, SK_DELIVERY, NULL, &q, &list, NULL);
    if (rc)
        return rc;
    int64_t stale = now_ms() - RESCAN_OVERDUE_MS;
    size_t i;
    json_t *d;
    pthread_mutex_lock(&wh->mu);
    /* ids held here, sorted, so the check is n log n */
    size_t nheld = wh->q.n, nparked = 0;
    for (size_t k = 0; k < wh->nparks; k++)
        nparked += wh->parks[k].q.n;
    const char **held = xcalloc(nheld + nparked + WEBHOOK_SENDERS + 1, sizeof *held);
    for (size_t k = 0; k < wh->q.n; k++)
        held[k] = wh->q.v[k].id;
    for (size_t k = 0; k < wh->nparks; k++)
        for (size_t j = 0; j < wh->parks[k].q.n; j++)
            held[nheld++] = wh->parks[k].q.v[j].id;
    for (int k = 0; k < WEBHOOK_SENDERS; k++)
        if (wh->sender[k].inflight[0])
            held[nheld++] = wh->sender[k].inflight;
    qsort(held, nheld, sizeof *held, cmp_str);
    json_t *orphans = json_array();   /* pushed after: heap_push may move held[] */
    json_array_foreach(list, i, d) {
        const char *id = json_string_value(json_object_get(d, "id"));
        int64_t at = json_integer_value(json_object_get(d, "next_attempt_ms"));
        if (id && at <= stale && !bsearch(&id, held, nheld, sizeof *held, cmp_str))
            json_array_append(orphans, d);
    }
    free(held);
    json_array_foreach(orphans, i, d) {
        heap_push(wh, json_string_value(json_object_get(d, "id")), due_key(d),
                  json_integer_value(json_object_get(d, "next_attempt_ms")));
    }
    json_decref(orphans);
    if (wh->q.n)
        pthread_cond_signal(&wh->cond_send);
    pthread_mutex_unlock(&wh->mu);
    json_decref(list);
    return 0;
}

static void *dispatcher_main(void *arg)
{
    struct webhook *wh = arg;
    pthread_mutex_lock(&wh->mu);
    while (!wh->stopping) {
        __atomic_store_n(&wh->wake, false, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&wh->mu);
        /* events -> deliveries is the leader's duty (several nodes: one
         * cursor per webhook, advanced by one node); senders run everywhere */
        bool leader = store_leader(wh->app->store);
        int hooks = leader ? dispatch_cycle(wh) : 0;
        /* Idle (no webhook, or not the leader): events stop waking this
         * thread, which otherwise re-read the store ~50 times a second under
         * load for nothing (13 % of quernd's CPU in a single-create run).  A
         * webhook made here wakes it (webhook_hooks_changed); one made on
         * another node, or a change of leader, is seen by the next 1 s pass.
         * Nothing is missed: a new webhook's cursor starts at the last event
         * of its creation's transaction. */
        __atomic_store_n(&wh->idle, hooks == 0, __ATOMIC_RELAXED);
        if (leader && mono_ms() - wh->last_rescan_ms >= RESCAN_OVERDUE_MS) {
            wh->last_rescan_ms = mono_ms();
            store_read(wh->app->store, rescan_fn, wh);
        }
        pthread_mutex_lock(&wh->mu);
        if (wh->stopping)
            break;
        /* coalesce bursts: at most ~50 cycles a second */
        if (hooks != 0)
            timed_wait(&wh->cond_disp, &wh->mu, 20);
        if (!wh->wake && !wh->stopping)
            timed_wait(&wh->cond_disp, &wh->mu, 1000);
    }
    pthread_mutex_unlock(&wh->mu);
    return NULL;
}

void webhook_hooks_changed(struct webhook *wh)
{
    if (!wh)
        return;
    pthread_mutex_lock(&wh->mu);
    __atomic_store_n(&wh->idle, false, __ATOMIC_RELAXED);
    wh->wake = true;
    pthread_cond_signal(&wh->cond_disp);
    pthread_mutex_unlock(&wh->mu);
}

/* Event bus callback (store writer thread, under the bus lock): only wake,
 * and only when there is something to dispatch and no wake-up is pending. */
static void on_event(void *ctx, int64_t id, const json_t *event)
{
    struct webhook *wh = ctx;
    (void)event;
    if (id < 0 || __atomic_load_n(&wh->idle, __ATOMIC_RELAXED) ||
        __atomic_load_n(&wh->wake, __ATOMIC_RELAXED))
        return;
    pthread_mutex_lock(&wh->mu);
    __atomic_store_n(&wh->wake, true, __ATOMIC_RELAXED);
    pthread_cond_signal(&wh->cond_disp);
    pthread_mutex_unlock(&wh->mu);
}

/* ---- senders: one attempt of one delivery ---- */

struct post {
    struct webhook *wh;
    bool allow_private;
    long status;                 /* HTTP status, 0 when none */
    char error[320];
    bool final;                  /* do not retry (refused by policy, bad URL) */
    bool aborted;                /* quernd is stopping: not an attempt */
    bool cut;                    /* the body went past what is kept: not read on */
    struct buf resp;
};

static size_t on_body(char *p, size_t size, size_t n, void *ctx)
{
    struct post *ps = ctx;
    size_t len = size * n;
    size_t keep = MAX_RESPONSE_KEPT - ps->resp.len;
    buf_append(&ps->resp, p, len < keep ? len : keep);
    if (len <= keep)
        return len;
    /* the status is known and the rest would be thrown away: a receiver
     * streaming an endless body must not hold the sender until the timeout */
    ps->cut = true;
    return 0;
}

static int on_progress(void *ctx, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    struct post *ps = ctx;
    (void)a, (void)b, (void)c, (void)d;
    if (__atomic_load_n(&ps->wh->stopping, __ATOMIC_RELAXED)) {
        ps->aborted = true;
        return 1;
    }
    return 0;
}

static void addr_text(const struct sockaddr *sa, char *out, size_t n)
{
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in in;
        memcpy(&in, sa, sizeof in);
        inet_ntop(AF_INET, &in.sin_addr, out, (socklen_t)n);
    } else if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 in6;
        memcpy(&in6, sa, sizeof in6);
        inet_ntop(AF_INET6, &in6.sin6_addr, out, (socklen_t)n);
    } else {
        snprintf(out, n, "?");
    }
}

static void refuse(struct post *ps, const struct sockaddr *sa, const char *cls)
{
    char a[INET6_ADDRSTRLEN];
    addr_text(sa, a, sizeof a);
    snprintf(ps->error, sizeof ps->error,
             "refused: %s is a %s address; outbound requests to private addresses need the "
             "project policy's outbound_allow_private (or QUERN_OUTBOUND_ALLOW_PRIVATE=1)",
             a, cls);
    ps->final = true;
}

/* The last check, on the address curl is about to connect to. */
static curl_socket_t open_socket(void *ctx, curlsocktype purpose, struct curl_sockaddr *ca)
{
    struct post *ps = ctx;
    (void)purpose;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    memcpy(&ss, &ca->addr, ca->addrlen < sizeof ss ? ca->addrlen : sizeof ss);
    const char *cls = webhook_addr_class((struct sockaddr *)&ss);
    if (cls && !ps->allow_private) {
        refuse(ps, (struct sockaddr *)&ss, cls);
        return CURL_SOCKET_BAD;
    }
    return socket(ca->family, ca->socktype | SOCK_CLOEXEC, ca->protocol);
}

/* Resolves host and picks the first address that may be reached; 0 with
 * the CURLOPT_RESOLVE entry in *pin (NULL for an IP literal), or a final
 * error in ps. */
static int resolve_checked(struct post *ps, const char *host, const char *port, char **pin)
{
    *pin = NULL;
    char bare[256];
    size_t hl = strlen(host);
    if (hl >= sizeof bare) {
        snprintf(ps->error, sizeof ps->error, "the host name is too long");
        ps->final = true;
        return -EINVAL;
    }
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        memcpy(bare, host + 1, hl - 2);
        bare[hl - 2] = 0;
    } else {
        memcpy(bare, host, hl + 1);
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int g = getaddrinfo(bare, port, &hints, &res);
    if (g) {
        snprintf(ps->error, sizeof ps->error, "cannot resolve %s: %s", bare, gai_strerror(g));
        return -EHOSTUNREACH;   /* DNS may recover: retried */
    }
    const struct addrinfo *ok = NULL, *first = res;
    const char *first_cls = NULL;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        const char *cls = webhook_addr_class(ai->ai_addr);
        if (!cls) {
            ok = ai;
            break;
        }
        if (!first_cls) {
            first_cls = cls;
            first = ai;
        }
    }
    if (!ok) {
        refuse(ps, first->ai_addr, first_cls ? first_cls : "reserved");
        freeaddrinfo(res);
        return -EACCES;
    }
    unsigned char tmp[16];
    bool literal = inet_pton(AF_INET, bare, tmp) == 1 || inet_pton(AF_INET6, bare, tmp) == 1;
    if (!literal) {
        char a[INET6_ADDRSTRLEN];
        addr_text(ok->ai_addr, a, sizeof a);
        *pin = ok->ai_family == AF_INET6 ? xasprintf("%s:%s:[%s]", bare, port, a)
                                         : xasprintf("%s:%s:%s", bare, port, a);
    }
    freeaddrinfo(res);
    return 0;
}

static void do_post(struct post *ps, const char *url, const char *body, const char *secret,
                    const char *delivery_id, const char *event_type, const char *hook_id)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *pin = NULL;
    struct curl_slist *hdrs = NULL, *resolve = NULL;
    CURL *c = NULL;
    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) ||
        (strcmp(scheme, "http") && strcmp(scheme, "https"))) {
        snprintf(ps->error, sizeof ps->error, "the URL is not a valid http(s) URL");
        ps->final = true;
        goto out;
    }
    if (!ps->allow_private && resolve_checked(ps, host, port, &pin))
        goto out;
    c = curl_easy_init();
    if (!c) {
        snprintf(ps->error, sizeof ps->error, "cannot create a curl handle");
        goto out;
    }
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "User-Agent: quern-webhook/1");
    hdrs = curl_slist_append(hdrs, "Expect:");
    char *h;
    if (secret) {
        char *sig = crypto_sig_header(secret, now_ms() / 1000, body, strlen(body));
        h = xasprintf("X-Quern-Signature: %s", sig);
        hdrs = curl_slist_append(hdrs, h);
        free(h);
        free(sig);
    }
    h = xasprintf("X-Quern-Delivery: %s", delivery_id);
    hdrs = curl_slist_append(hdrs, h);
    free(h);
    if (event_type) {
        h = xasprintf("X-Quern-Event: %s", event_type);
        hdrs = curl_slist_append(hdrs, h);
        free(h);
    }
    if (hook_id) {
        h = xasprintf("X-Quern-Webhook: %s", hook_id);
        hdrs = curl_slist_append(hdrs, h);
        free(h);
    }
    if (pin) {
        resolve = curl_slist_append(resolve, pin);
        curl_easy_setopt(c, CURLOPT_RESOLVE, resolve);
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                     ps->wh->timeout_ms < 5000 ? (long)ps->wh->timeout_ms : 5000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)ps->wh->timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, ps);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, ps);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, ps);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode cc = curl_easy_perform(c);
    if (cc == CURLE_OK || (cc == CURLE_WRITE_ERROR && ps->cut)) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &ps->status);
        if (ps->status < 200 || ps->status > 299)
            snprintf(ps->error, sizeof ps->error, "the receiver answered HTTP %ld", ps->status);
    } else if (!ps->error[0]) {   /* open_socket may have said why already */
        snprintf(ps->error, sizeof ps->error, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
    }
out:
    if (c)
        curl_easy_cleanup(c);
    curl_slist_free_all(hdrs);
    curl_slist_free_all(resolve);
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    free(pin);
}

struct attempt {
    struct webhook *wh;
    const char *id;
    json_t *delivery, *hook, *policy;
    /* the outcome, for record_fn */
    struct post *ps;
    int64_t started, ended;
    bool hook_gone;
};

static int load_fn(struct store_tx *tx, void *arg)
{
    struct attempt *a = arg;
    a->delivery = store_get(tx, SK_DELIVERY, NULL, a->id);
    if (!a->delivery)
        return 0;
    const char *pid = json_string_value(json_object_get(a->delivery, "project_id"));
    const char *hid = json_string_value(json_object_get(a->delivery, "webhook_id"));
    if (hid && strcmp(hid, WEBHOOK_RELAY_ID)) {
        a->hook = store_get(tx, SK_WEBHOOK, pid, hid);
        a->hook_gone = !a->hook;
    }
    a->policy = policy_effective(tx, pid);
    return 0;
}

/* The kept start of a response body as a JSON string of printable ASCII
 * (other bytes become '?'), or null. */
static json_t *printable(const struct buf *b)
{
    if (!b->len)
        return json_null();
    char *s = xmalloc(b->len + 1);
    for (size_t i = 0; i < b->len; i++) {
        unsigned char ch = (unsigned char)b->data[i];
        s[i] = (ch >= 0x20 && ch < 0x7F) || ch == '\n' || ch == '\t' ? (char)ch : '?';
    }
    s[b->len] = 0;
    json_t *j = json_string(s);
    free(s);
    return j ? j : json_null();
}

static int record_fn(struct store_tx *tx, void *arg)
{
    struct attempt *a = arg;
    struct webhook *wh = a->wh;
    const char *pid = json_string_value(json_object_get(a->delivery, "project_id"));
    json_t *d = store_get(tx, SK_DELIVERY, pid, a->id);
    if (!d)
        return 0;
    if (strcmp(json_string_value(json_object_get(d, "status")) ?: "", "pending")) {
        json_decref(d);
        return 0;
    }
    struct post *ps = a->ps;
    char t0[RFC3339_LEN], t1[RFC3339_LEN];
    rfc3339_format(a->started, t0);
    rfc3339_format(a->ended, t1);
    int n = (int)json_integer_value(json_object_get(d, "attempt_count")) + 1;
    json_t *at = json_pack("{s:i, s:s, s:s, s:I}", "attempt", n, "started_at", t0, "completed_at",
                           t1, "duration_ms", (json_int_t)(a->ended - a->started));
    json_object_set_new(at, "status_code", ps->status ? json_integer(ps->status) : json_null());
    json_object_set_new(at, "error", ps->error[0] ? json_string(ps->error) : json_null());
    json_object_set_new(at, "response_body", printable(&ps->resp));
    json_t *list = json_object_get(d, "attempts");
    if (!json_is_array(list)) {
        list = json_array();
        json_object_set_new(d, "attempts", list);
    }
    json_array_append_new(list, at);
    json_object_set_new(d, "attempt_count", json_integer(n));
    json_object_set_new(d, "updated_at", json_string(t1));
    json_object_set_new(d, "last_error", ps->error[0] ? json_string(ps->error) : json_null());
    json_object_set_new(d, "last_status_code", ps->status ? json_integer(ps->status) : json_null());
    bool ok = ps->status >= 200 && ps->status <= 299 && !ps->error[0];
    int64_t next = a->ended + webhook_backoff_ms(n, wh->base_ms);
    int64_t deadline = json_integer_value(json_object_get(d, "created_ms")) + wh->window_ms;
    if (ok || ps->final || next > deadline) {
        json_object_set_new(d, "status", json_string(ok ? "succeeded" : "failed"));
        json_object_set_new(d, "completed_at", json_string(t1));
        json_object_set_new(d, "next_attempt_at", json_null());
        json_object_del(d, "next_attempt_ms");
    } else {
        char tn[RFC3339_LEN];
        rfc3339_format(next, tn);
        json_object_set_new(d, "next_attempt_at", json_string(tn));
        json_object_set_new(d, "next_attempt_ms", json_integer(next));
        enqueue_after_commit(tx, wh, d, next);
    }
    int rc = store_update(tx, SK_DELIVERY, pid, d);
    json_decref(d);
    return rc;
}

static void attempt(struct webhook *wh, const char *id)
{
    struct attempt a = {.wh = wh, .id = id};
    struct post ps = {.wh = wh};
    buf_init(&ps.resp);
    char *secret = NULL;
    if (store_read(wh->app->store, load_fn, &a) || !a.delivery ||
        strcmp(json_string_value(json_object_get(a.delivery, "status")) ?: "", "pending"))
        goto out;
    /* a stale duplicate heap entry: the delivery was rescheduled since */
    if (json_integer_value(json_object_get(a.delivery, "next_attempt_ms")) > now_ms())
        goto out;
    a.started = now_ms();
    const char *url = json_string_value(json_object_get(a.delivery, "url"));
    if (a.hook_gone) {
        snprintf(ps.error, sizeof ps.error, "the webhook was deleted");
        ps.final = true;
    } else {
        if (a.hook) {
            url = json_string_value(json_object_get(a.hook, "url"));
            if (secrets_open_str(wh->key, json_string_value(json_object_get(a.hook, "secret_sealed")),
                                 &secret, NULL)) {
                snprintf(ps.error, sizeof ps.error, "the webhook's secret cannot be opened");
                ps.final = true;
            }
        }
        ps.allow_private = wh->allow_private_env || policy_outbound_allow_private(a.policy);
        if (!ps.final)
            do_post(&ps, url ? url : "",
                    json_string_value(json_object_get(a.delivery, "body")) ?: "{}", secret, id,
                    json_string_value(json_object_get(a.delivery, "event_type")),
                    a.hook ? json_string_value(json_object_get(a.hook, "id")) : NULL);
    }
    a.ended = now_ms();
    if (ps.aborted)
        goto out;   /* stopping: the delivery stays pending for the next start */
    a.ps = &ps;
    if (store_write(wh->app->store, record_fn, &a)) {
        /* could not record: try again later rather than lose it */
        pthread_mutex_lock(&wh->mu);
        if (!wh->stopping) {
            heap_push(wh, id, due_key(a.delivery), now_ms() + 1000);
        }
        pthread_mutex_unlock(&wh->mu);
    }
out:
    if (secret) {
        explicit_bzero(secret, strlen(secret));
        free(secret);
    }
    buf_release(&ps.resp);
    json_decref(a.delivery);
    json_decref(a.hook);
    json_decref(a.policy);
}

/* How many attempts of key are in flight (mu held). */
static int key_inflight(const struct webhook *wh, uint64_t key)
{
    int n = 0;
    for (int i = 0; i < WEBHOOK_SENDERS; i++)
        n += wh->sender[i].inflight[0] && wh->sender[i].inflight_key == key;
    return n;
}

/* Takes the earliest due delivery whose webhook is under WEBHOOK_PER_HOOK,
 * parking the due ones of webhooks at it (mu held).  false when none is due:
 * *wait is the ms until the next one, or -1 when the heap is empty. */
static bool take_due(struct webhook *wh, struct due *out, int64_t *wait)
{
    while (wh->q.n) {
        int64_t w = wh->q.v[0].at - now_ms();
        if (w > 0) {
            *wait = w;
            return false;
        }
        struct due d = dq_pop(&wh->q);
        if (key_inflight(wh, d.key) < WEBHOOK_PER_HOOK) {
            *out = d;
            return true;
        }
        size_t k = 0;
        while (k < wh->nparks && wh->parks[k].key != d.key)
            k++;
        if (k == wh->nparks) {
            if (wh->nparks == wh->capparks) {
                wh->capparks = wh->capparks ? wh->capparks * 2 : 8;
                wh->parks = xrealloc(wh->parks, wh->capparks * sizeof *wh->parks);
            }
            memset(&wh->parks[k], 0, sizeof wh->parks[k]);
            wh->parks[k].key = d.key;
            wh->nparks++;
        }
        dq_push(&wh->parks[k].q, &d);
    }
    *wait = -1;
    return false;
}

/* An attempt of key ended: one of its parked deliveries goes back to the
 * heap (mu held).  So whenever a webhook has parked deliveries, it is at its
 * limit or one of them is on the heap: none is stranded. */
static void unpark_one(struct webhook *wh, uint64_t key)
{
    size_t k = 0;
    while (k < wh->nparks && wh->parks[k].key != key)
        k++;
    if (k == wh->nparks)
        return;
    struct park *pk = &wh->parks[k];
    struct due d = dq_pop(&pk->q);   /* the earliest: none of the webhook's waits forever */
    dq_push(&wh->q, &d);
    if (!pk->q.n) {
        free(pk->q.v);
        wh->parks[k] = wh->parks[--wh->nparks];
    }
    pthread_cond_signal(&wh->cond_send);
}

static void *sender_main(void *arg)
{
    struct sender *me = arg;
    struct webhook *wh = me->wh;
    pthread_mutex_lock(&wh->mu);
    while (!wh->stopping) {
        struct due d;
        int64_t wait;
        if (!take_due(wh, &d, &wait)) {
            if (wait < 0)
                pthread_cond_wait(&wh->cond_send, &wh->mu);
            else
                timed_wait(&wh->cond_send, &wh->mu, wait < 1000 ? wait : 1000);
            continue;
        }
        memcpy(me->inflight, d.id, sizeof me->inflight);
        me->inflight_key = d.key;
        pthread_mutex_unlock(&wh->mu);
        attempt(wh, d.id);
        pthread_mutex_lock(&wh->mu);
        me->inflight[0] = 0;
        unpark_one(wh, d.key);
    }
    pthread_mutex_unlock(&wh->mu);
    return NULL;
}

/* ---- start and stop ---- */

static int reload_fn(struct store_tx *tx, void *arg)
{
    struct webhook *wh = arg;
    struct store_filter f = {"status", "pending"};
    struct store_query q = {&f, 1, 0, 0, true, NULL};
    json_t *list = NULL;
    int rc = store_list(tx, SK_DELIVERY, NULL, &q, &list, NULL);
    if (rc)
        return rc;
    size_t i;
    json_t *d;
    pthread_mutex_lock(&wh->mu);
    json_array_foreach(list, i, d) {
        heap_push(wh, json_string_value(json_object_get(d, "id")), due_key(d),
                  json_integer_value(json_object_get(d, "next_attempt_ms")));
    }
    pthread_mutex_unlock(&wh->mu);
    json_decref(list);
    return 0;
}

static int64_t env_ms(const char *name, int64_t def)
{
    const char *e = getenv(name);
    int64_t v;
    if (!e || parse_i64(e, &v) || v <= 0)
        return def;
    return v;
}

struct webhook *webhook_new(struct app *app, char **err)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct webhook *wh = xcalloc(1, sizeof *wh);
    wh->app = app;
    pthread_mutex_init(&wh->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&wh->cond_disp, &ca);
    pthread_cond_init(&wh->cond_send, &ca);
    pthread_condattr_destroy(&ca);
    wh->base_ms = env_ms("QUERN_WEBHOOK_RETRY_BASE_MS", 1000);
    wh->window_ms = env_ms("QUERN_WEBHOOK_RETRY_WINDOW_MS", 24 * HOUR_MS);
    wh->timeout_ms = env_ms("QUERN_WEBHOOK_TIMEOUT_MS", 15000);
    const char *ap = getenv("QUERN_OUTBOUND_ALLOW_PRIVATE");
    wh->allow_private_env = ap && (!strcmp(ap, "1") || !strcmp(ap, "true"));
    secrets_derived_key(app, "webhook-secrets", wh->key);
    wh->last_rescan_ms = mono_ms();
    if (store_read(app->store, reload_fn, wh)) {
        *err = xstrdup("cannot load pending webhook deliveries");
        webhook_free(wh);
        return NULL;
    }
    if (pthread_create(&wh->disp, NULL, dispatcher_main, wh)) {
        *err = xstrdup("cannot start the webhook dispatcher");
        webhook_free(wh);
        return NULL;
    }
    wh->disp_started = true;
    for (int i = 0; i < WEBHOOK_SENDERS; i++) {
        wh->sender[i].wh = wh;
        if (pthread_create(&wh->senders[i], NULL, sender_main, &wh->sender[i])) {
            *err = xstrdup("cannot start the webhook senders");
            webhook_free(wh);
            return NULL;
        }
        wh->nsenders++;
    }
    if (app->events)
        wh->sub = events_subscribe(app->events, NULL, NULL, on_event, wh);
    return wh;
}

void webhook_free(struct webhook *wh)
{
    if (!wh)
        return;
    if (wh->sub)
        events_unsubscribe(wh->app->events, wh->sub);
    pthread_mutex_lock(&wh->mu);
    __atomic_store_n(&wh->stopping, true, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&wh->cond_disp);
    pthread_cond_broadcast(&wh->cond_send);
    pthread_mutex_unlock(&wh->mu);
    if (wh->disp_started)
        pthread_join(wh->disp, NULL);
    for (int i = 0; i < wh->nsenders; i++)
        pthread_join(wh->senders[i], NULL);
    free(wh->q.v);
    for (size_t k = 0; k < wh->nparks; k++)
        free(wh->parks[k].q.v);
    free(wh->parks);
    pthread_mutex_destroy(&wh->mu);
    pthread_cond_destroy(&wh->cond_disp);
    pthread_cond_destroy(&wh->cond_send);
    explicit_bzero(wh->key, sizeof wh->key);
    free(wh);
}
