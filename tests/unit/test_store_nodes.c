/*
 * The store's calls for several nodes (store.h "Several nodes", invariant 5)
 * and the copy: SQLite always; PostgreSQL when QUERN_TEST_PG_URL names a
 * database (tests/integration/test_store_nodes.py provides one), where two
 * stores opened on it play two nodes: one leader, each other's liveness,
 * notifications of committed changes, SKIP LOCKED, and leader takeover.
 */
#include <errno.h>
#include <stdlib.h>
#include <threads.h>   /* not <pthread.h>: -Isrc makes src/sched.h shadow <sched.h> */
#include <unistd.h>

#include "store.h"
#include "store_copy.h"
#include "t.h"
#include "tstore.h"
#include "util.h"

static char tmpdir[] = "/tmp/quern-nodes-XXXXXX";

static const char *dir(void)
{
    static bool made;
    if (!made)
        made = t_tmpdir_make(tmpdir) == 0;
    return tmpdir;
}

static int put_run_fn(struct store_tx *tx, void *arg)
{
    json_t *doc = arg;
    return store_put(tx, SK_RUN, "p_nodes", doc);
}

struct get_arg {
    const char *id;
    int rc;
    json_t *doc, *many;
};

static int try_get_fn(struct store_tx *tx, void *arg)
{
    struct get_arg *a = arg;
    a->rc = store_try_get(tx, SK_RUN, NULL, a->id, &a->doc);
    return 0;
}

static int many_fn(struct store_tx *tx, void *arg)
{
    struct get_arg *a = arg;
    json_t *ids = json_pack("[s, s]", a->id, "run_missing");
    a->rc = store_get_many(tx, SK_RUN, ids, &a->many);
    json_decref(ids);
    return 0;
}

static json_t *run_doc(const char *id)
{
    return json_pack("{s:s, s:s, s:s}", "id", id, "status", "queued", "task_id", "t1");
}

TEST(sqlite_is_one_node_and_always_leader)
{
    char *url = xasprintf("sqlite:%s/one.db", dir());
    struct store *st = t_store_open(url, STORE_FSYNC_OFF);
    CHECK(st != NULL);
    if (!st)
        goto out;
    CHECK(store_leader(st));
    CHECK(!strncmp(store_node_id(st), "node_", 5));
    CHECK(store_node_alive(st, store_node_id(st)));
    CHECK(!store_node_alive(st, "node_other"));
    json_t *d = run_doc("run_a");
    CHECK_EQ_INT(store_write(st, put_run_fn, d), 0);
    json_decref(d);
    struct get_arg a = {"run_a", -1, NULL, NULL};
    CHECK_EQ_INT(store_write(st, try_get_fn, &a), 0);
    CHECK_EQ_INT(a.rc, 0);
    CHECK_EQ_STR(json_string_value(json_object_get(a.doc, "status")), "queued");
    json_decref(a.doc);
    struct get_arg m = {"run_nope", -1, NULL, NULL};
    CHECK_EQ_INT(store_write(st, try_get_fn, &m), 0);
    CHECK_EQ_INT(m.rc, -ENOENT);
    CHECK_EQ_INT(store_read(st, many_fn, &a), 0);
    CHECK_EQ_INT(json_object_size(a.many), 1);
    CHECK(json_object_get(a.many, "run_a") != NULL);
    json_decref(a.many);
    store_close(st);
out:
    free(url);
}

static int fill_fn(struct store_tx *tx, void *arg)
{
    (void)arg;
    int rc = 0;
    for (int i = 0; i < 3 && !rc; i++) {
        char id[16];
        snprintf(id, sizeof id, "run_%d", i);
        json_t *d = run_doc(id);
        rc = store_put(tx, SK_RUN, "p_copy", d);
        json_decref(d);
        int64_t eid;
        json_t *ev = json_pack("{s:s, s:s, s:s, s:I}", "type", "task_run.queued", "project_id",
                               "p_copy", "run_id", id, "created_ms", (json_int_t)1000 + i);
        if (!rc)
            rc = store_event_append(tx, ev, &eid);
        json_decref(ev);
    }
    json_t *logs = json_pack("[{s:s}, {s:s}]", "message", "one", "message", "two");
    if (!rc)
        rc = store_log_append(tx, "p_copy", "run_1", logs, NULL);
    json_decref(logs);
    if (!rc)
        rc = store_meta_set(tx, "server_secret", "abc");
    if (!rc)
        rc = store_idem_put(tx, "scope", "k1", "fp", 201, "{\"x\":1}");
    return rc;
}

struct check {
    int ok;
};

static int verify_fn(struct store_tx *tx, void *arg)
{
    struct check *c = arg;
    c->ok = 0;
    json_t *d = store_get(tx, SK_RUN, "p_copy", "run_2");
    c->ok += d != NULL;
    json_decref(d);
    struct store_event_query q = {.project_id = "p_copy"};
    json_t *evs = NULL;
    store_event_list(tx, &q, &evs, NULL, NULL);
    c->ok += json_array_size(evs) == 3 &&
             json_integer_value(json_object_get(json_array_get(evs, 2), "seq")) == 3;
    json_decref(evs);
    json_t *logs = NULL;
    store_log_read(tx, "p_copy", "run_1", 0, 0, &logs);
    c->ok += json_array_size(logs) == 2;
    json_decref(logs);
    char *v = store_meta_get(tx, "server_secret");
    c->ok += v && !strcmp(v, "abc");
    free(v);
    char *fp = NULL, *body = NULL;
    int status = 0;
    c->ok += store_idem_get(tx, "scope", "k1", 0, &fp, &status, &body) == 0 && status == 201;
    free(fp);
    free(body);
    struct store_query lq = {NULL, 0, 0, 0, true, NULL};
    json_t *list = NULL;
    store_list(tx, SK_RUN, "p_copy", &lq, &list, NULL);
    c->ok += json_array_size(list) == 3 &&
             !strcmp(json_string_value(json_object_get(json_array_get(list, 0), "id")), "run_0");
    json_decref(list);
    return 0;
}

static int next_event_fn(struct store_tx *tx, void *arg)
{
    int64_t *id = arg;
    json_t *ev = json_pack("{s:s, s:s, s:I}", "type", "x", "project_id", "p_copy", "created_ms",
                           (json_int_t)5);
    int rc = store_event_append(tx, ev, id);
    json_decref(ev);
    return rc;
}

static void copy_into(const char *to)
{
    static int n;
    char *from = xasprintf("sqlite:%s/src%d.db", dir(), ++n);
    struct store *src = t_store_open(from, STORE_FSYNC_OFF);
    CHECK(src != NULL);
    if (src) {
        CHECK_EQ_INT(store_write(src, fill_fn, NULL), 0);
        store_close(src);
    }
    char *err = NULL;
    CHECK_EQ_INT(store_copy(from, to, NULL, NULL, &err), 0);
    free(err);
    err = NULL;
    CHECK_EQ_INT(store_copy(from, to, NULL, NULL, &err), -EEXIST);   /* not empty any more */
    free(err);
    struct store *dst = t_store_open(to, STORE_FSYNC_OFF);
    CHECK(dst != NULL);
    if (dst) {
        struct check c = {0};
        store_read(dst, verify_fn, &c);
        CHECK_EQ_INT(c.ok, 6);
        int64_t id = 0;
        CHECK_EQ_INT(store_write(dst, next_event_fn, &id), 0);
        CHECK_EQ_INT(id, 4);   /* ids continue after the copied ones */
        store_close(dst);
    }
    free(from);
}

TEST(copy_sqlite_to_sqlite_keeps_rows_and_ids)
{
    char *to = xasprintf("sqlite:%s/dst.db", dir());
    copy_into(to);
    free(to);
}

/* ---- PostgreSQL: two stores = two nodes ---- */

struct seen {
    mtx_t mu;
    int runs, events;
    char last[64], last_event[64];
};

static void watch_cb(void *ctx, const struct store_change *ch, size_t n)
{
    struct seen *s = ctx;
    mtx_lock(&s->mu);
    for (size_t i = 0; ch && i < n; i++) {
        if (ch[i].events) {
            s->events++;
            snprintf(s->last_event, sizeof s->last_event, "%s", ch[i].id);
        } else if (ch[i].kind == SK_RUN) {
            s->runs++;
            snprintf(s->last, sizeof s->last, "%s", ch[i].id);
        }
    }
    mtx_unlock(&s->mu);
}

struct hold {
    mtx_t mu;
    cnd_t cv;
    int stage;   /* 1: row locked by a; 2: b tried */
};

static int hold_fn(struct store_tx *tx, void *arg)
{
    struct hold *h = arg;
    json_t *d = store_get(tx, SK_RUN, "p_nodes", "run_locked");   /* FOR UPDATE */
    json_decref(d);
    mtx_lock(&h->mu);
    h->stage = 1;
    cnd_broadcast(&h->cv);
    while (h->stage < 2)
        cnd_wait(&h->cv, &h->mu);
    mtx_unlock(&h->mu);
    return 0;
}

struct hold_thread {
    struct store *st;
    struct hold *h;
};

static int hold_main(void *arg)
{
    struct hold_thread *t = arg;
    return store_write(t->st, hold_fn, t->h);
}

static bool wait_until(bool (*pred)(void *), void *arg, int ms)
{
    for (int i = 0; i < ms / 20; i++) {
        if (pred(arg))
            return true;
        usleep(20000);
    }
    return pred(arg);
}

struct pair {
    struct store *a, *b;
};

static bool one_leader(void *arg)
{
    struct pair *p = arg;
    return store_leader(p->a) != store_leader(p->b);
}

/* An event of run arg->id, written with or without a write of the run. */
struct event_arg {
    const char *id;
    bool with_run;
};

static int event_fn(struct store_tx *tx, void *arg)
{
    struct event_arg *a = arg;
    int rc = 0;
    if (a->with_run) {
        json_t *d = run_doc(a->id);
        rc = store_put(tx, SK_RUN, "p_nodes", d);
        json_decref(d);
    }
    json_t *ev = json_pack("{s:s, s:s, s:s, s:I}", "type", "task_run.log", "project_id", "p_nodes",
                           "run_id", a->id, "created_ms", (json_int_t)1000);
    int64_t eid;
    if (!rc)
        rc = store_event_append(tx, ev, &eid);
    json_decref(ev);
    return rc;
}

static bool saw_event(void *arg)
{
    struct seen *s = arg;
    mtx_lock(&s->mu);
    bool r = !strcmp(s->last_event, "run_announced");
    mtx_unlock(&s->mu);
    return r;
}

static bool saw_run(void *arg)
{
    struct seen *s = arg;
    mtx_lock(&s->mu);
    bool r = !strcmp(s->last, "run_announced");
    mtx_unlock(&s->mu);
    return r;
}

static bool leads(void *arg)
{
    return store_leader(arg);
}

TEST(postgres_two_nodes)
{
    const char *url = getenv("QUERN_TEST_PG_URL");
    if (!url || !*url) {
        fprintf(stderr, "  skip: QUERN_TEST_PG_URL is not set\n");
        return;
    }
    struct pair p = {t_store_open(url, STORE_FSYNC_OFF), t_store_open(url, STORE_FSYNC_OFF)};
    CHECK(p.a && p.b);
    if (!p.a || !p.b)
        return;
    CHECK(wait_until(one_leader, &p, 5000));
    CHECK(strcmp(store_node_id(p.a), store_node_id(p.b)) != 0);
    CHECK(store_node_alive(p.a, store_node_id(p.b)));
    CHECK(store_node_alive(p.b, store_node_id(p.a)));
    CHECK(!store_node_alive(p.a, "node_never_was"));

    /* b hears what a commits, not what it commits itself */
    struct seen s = {.runs = 0, .events = 0};
    mtx_init(&s.mu, mtx_plain);
    store_watch(p.b, watch_cb, &s);
    json_t *d = run_doc("run_own");
    CHECK_EQ_INT(store_write(p.b, put_run_fn, d), 0);
    json_decref(d);
    d = run_doc("run_announced");
    CHECK_EQ_INT(store_write(p.a, put_run_fn, d), 0);
    json_decref(d);
    CHECK(wait_until(saw_run, &s, 5000));
    mtx_lock(&s.mu);
    CHECK_EQ_INT(s.runs, 1);
    mtx_unlock(&s.mu);
    /* an event written alone (a log entry) is announced as the run's
     * events; one written with its run is announced by the run alone */
    struct event_arg ea = {"run_evented", true};
    CHECK_EQ_INT(store_write(p.a, event_fn, &ea), 0);
    ea = (struct event_arg){"run_announced", false};
    CHECK_EQ_INT(store_write(p.a, event_fn, &ea), 0);
    CHECK(wait_until(saw_event, &s, 5000));
    mtx_lock(&s.mu);
    CHECK_EQ_INT(s.runs, 2);
    CHECK_EQ_INT(s.events, 1);
    mtx_unlock(&s.mu);
    store_watch(p.b, NULL, NULL);

    /* a row a holds is skipped by b's try_get, not waited for */
    d = run_doc("run_locked");
    CHECK_EQ_INT(store_write(p.a, put_run_fn, d), 0);
    json_decref(d);
    struct hold h = {.stage = 0};
    mtx_init(&h.mu, mtx_plain);
    cnd_init(&h.cv);
    struct hold_thread ht = {p.a, &h};
    thrd_t t;
    thrd_create(&t, hold_main, &ht);
    mtx_lock(&h.mu);
    while (h.stage < 1)
        cnd_wait(&h.cv, &h.mu);
    mtx_unlock(&h.mu);
    struct get_arg g = {"run_locked", 0, NULL, NULL};
    CHECK_EQ_INT(store_write(p.b, try_get_fn, &g), 0);
    CHECK_EQ_INT(g.rc, -EAGAIN);
    json_decref(g.doc);
    mtx_lock(&h.mu);
    h.stage = 2;
    cnd_broadcast(&h.cv);
    mtx_unlock(&h.mu);
    int trc = -1;
    thrd_join(t, &trc);
    CHECK_EQ_INT(trc, 0);
    g.rc = -1;
    CHECK_EQ_INT(store_write(p.b, try_get_fn, &g), 0);
    CHECK_EQ_INT(g.rc, 0);
    json_decref(g.doc);

    /* the leader goes away: the other takes over, and sees it gone */
    struct store *leader = store_leader(p.a) ? p.a : p.b;
    struct store *other = leader == p.a ? p.b : p.a;
    char gone[64];
    snprintf(gone, sizeof gone, "%s", store_node_id(leader));
    store_close(leader);
    CHECK(wait_until(leads, other, 5000));
    CHECK(!store_node_alive(other, gone));
    store_close(other);
    mtx_destroy(&s.mu);
    mtx_destroy(&h.mu);
    cnd_destroy(&h.cv);
}

TEST(copy_sqlite_to_postgres)
{
    const char *url = getenv("QUERN_TEST_PG_COPY_URL");
    if (!url || !*url) {
        fprintf(stderr, "  skip: QUERN_TEST_PG_COPY_URL is not set\n");
        return;
    }
    copy_into(url);
}
