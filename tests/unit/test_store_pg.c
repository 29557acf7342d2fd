/*
 * The store contract (store.h) checked on both backends with the same code:
 * SQLite always (a temp file), PostgreSQL when QUERN_TEST_PG_URL names an
 * empty-or-quern database (tests/integration/test_store_backends.py starts a
 * private cluster and runs this program with it).  Tests use their own
 * project ids, so they share one database without seeing each other.
 */
#include <errno.h>
#include <stdlib.h>
#include <threads.h>   /* not <pthread.h>: -Isrc makes src/sched.h shadow <sched.h> */

#include "store.h"
#include "t.h"
#include "tstore.h"
#include "util.h"

static char tmpdir[] = "/tmp/quern-store-XXXXXX";
static int nstore;

typedef void (*body_fn)(struct store *st, const char *prj);

/* Runs body once per available backend, each with a fresh project id. */
static void each_store(const char *name, body_fn body)
{
    if (!nstore && t_tmpdir_make(tmpdir)) {
        CHECK(!"mkdtemp");
        return;
    }
    char *path = xasprintf("sqlite:%s/s%d.db", tmpdir, ++nstore);
    struct store *st = t_store_open(path, STORE_FSYNC_OFF);
    CHECK(st != NULL);
    if (st) {
        char *prj = xasprintf("p_%s", name);
        body(st, prj);
        free(prj);
        store_close(st);
    }
    free(path);
    const char *url = getenv("QUERN_TEST_PG_URL");
    if (url && *url) {
        st = t_store_open(url, STORE_FSYNC_OFF);
        CHECK(st != NULL);
        if (st) {
            CHECK_EQ_STR(store_backend(st), "postgres");
            CHECK_EQ_INT(store_ping(st), 0);
            char id[ID_LEN];
            id_new("p", id);   /* fresh per run: the database may be reused */
            char *prj = xasprintf("%s_%s", id, name);
            body(st, prj);
            free(prj);
            store_close(st);
        }
    }
}

static json_t *doc_new(const char *id, const char *status, const char *meta_color)
{
    json_t *d = json_pack("{s:s, s:s}", "id", id, "name", id);
    if (status)
        json_object_set_new(d, "status", json_string(status));
    if (meta_color)
        json_object_set_new(d, "metadata", json_pack("{s:s}", "color", meta_color));
    return d;
}

/* ---- write functions used through store_write ---- */

struct put_arg {
    const char *prj;
    json_t *doc;
    int fail_with;       /* return this after the put */
    bool update;
    int hook_calls, hook_committed;
    struct store *st;
    bool hook_saw_doc;
};

static int saw_fn(struct store_tx *tx, void *arg)
{
    struct put_arg *a = arg;
    json_t *d = store_get(tx, SK_TASK, a->prj, json_string_value(json_object_get(a->doc, "id")));
    a->hook_saw_doc = d != NULL;
    json_decref(d);
    return 0;
}

static void put_hook(void *arg, bool committed)
{
    struct put_arg *a = arg;
    a->hook_calls++;
    a->hook_committed = committed;
    if (committed)
        store_read(a->st, saw_fn, a);   /* invariant 3: the commit is visible */
}

static int put_fn(struct store_tx *tx, void *arg)
{
    struct put_arg *a = arg;
    CHECK(store_tx_is_write(tx));
    store_tx_on_commit(tx, put_hook, a);
    int rc = a->update ? store_update(tx, SK_TASK, a->prj, a->doc)
                       : store_put(tx, SK_TASK, a->prj, a->doc);
    return rc ? rc : a->fail_with;
}

static int do_put(struct store *st, const char *prj, json_t *doc, bool update, int fail_with,
                  struct put_arg *out)
{
    struct put_arg a = {.prj = prj, .doc = doc, .update = update, .fail_with = fail_with, .st = st};
    int rc = store_write(st, put_fn, &a);
    if (out)
        *out = a;
    return rc;
}

struct get_arg {
    const char *prj, *id;
    json_t *doc;
};

static int get_fn(struct store_tx *tx, void *arg)
{
    struct get_arg *a = arg;
    CHECK(!store_tx_is_write(tx));
    a->doc = store_get(tx, SK_TASK, a->prj, a->id);
    return 0;
}

static json_t *do_get(struct store *st, const char *prj, const char *id)
{
    struct get_arg a = {prj, id, NULL};
    store_read(st, get_fn, &a);
    return a.doc;
}

static int del_fn(struct store_tx *tx, void *arg)
{
    struct get_arg *a = arg;
    return store_delete(tx, SK_TASK, a->prj, a->id);
}

/* ---- documents ---- */

static void crud_body(struct store *st, const char *prj)
{
    json_t *d = doc_new("t1", "queued", NULL);
    struct put_arg a;
    CHECK_EQ_INT(do_put(st, prj, d, false, 0, &a), 0);
    CHECK_EQ_INT(a.hook_calls, 1);
    CHECK_EQ_INT(a.hook_committed, 1);
    CHECK(a.hook_saw_doc);
    CHECK_EQ_INT(do_put(st, prj, d, false, 0, NULL), -EEXIST);
    json_t *missing = doc_new("nope", NULL, NULL);
    CHECK_EQ_INT(do_put(st, prj, missing, true, 0, NULL), -ENOENT);
    json_decref(missing);
    json_object_set_new(d, "status", json_string("done"));
    CHECK_EQ_INT(do_put(st, prj, d, true, 0, NULL), 0);
    json_t *g = do_get(st, prj, "t1");
    CHECK(g && json_equal(g, d));
    json_decref(g);
    g = do_get(st, NULL, "t1");   /* any project */
    CHECK(g != NULL);
    json_decref(g);
    struct get_arg del = {prj, "t1", NULL};
    CHECK_EQ_INT(store_write(st, del_fn, &del), 0);
    CHECK_EQ_INT(store_write(st, del_fn, &del), -ENOENT);
    CHECK(do_get(st, prj, "t1") == NULL);
    json_decref(d);
}

TEST(put_get_update_delete_codes)
{
    each_store("crud", crud_body);
}

static void rollback_body(struct store *st, const char *prj)
{
    /* invariants 2 and 3: a failed fn leaves nothing, its hook says so */
    json_t *d = doc_new("rb", NULL, NULL);
    struct put_arg a;
    CHECK_EQ_INT(do_put(st, prj, d, false, -EINVAL, &a), -EINVAL);
    CHECK_EQ_INT(a.hook_calls, 1);
    CHECK_EQ_INT(a.hook_committed, 0);
    json_t *g = do_get(st, prj, "rb");
    CHECK(g == NULL);
    json_decref(g);
    CHECK_EQ_INT(do_put(st, prj, d, false, 0, NULL), 0);   /* the id is free */
    json_decref(d);
}

TEST(failed_write_is_rolled_back)
{
    each_store("rollback", rollback_body);
}

/* Many threads write at once: group commit shares transactions, yet each
 * job is its own savepoint: the failing half never undoes the other half. */
struct conc {
    struct store *st;
    const char *prj;
    int t;
    int ok, fail;
};

static int conc_main(void *arg)
{
    struct conc *c = arg;
    for (int i = 0; i < 40; i++) {
        char id[32];
        snprintf(id, sizeof id, "c%d_%d", c->t, i);
        json_t *d = doc_new(id, i % 2 ? "odd" : "even", NULL);
        int rc = do_put(c->st, c->prj, d, false, i % 2 ? -EPERM : 0, NULL);
        if (rc == 0)
            c->ok++;
        else if (rc == -EPERM)
            c->fail++;
        json_decref(d);
    }
    return 0;
}

struct list_arg {
    const char *prj;
    struct store_query q;
    json_t *out;
    int64_t total;
    int rc;
};

static int list_fn(struct store_tx *tx, void *arg)
{
    struct list_arg *a = arg;
    a->rc = store_list(tx, SK_TASK, a->prj, &a->q, &a->out, &a->total);
    return 0;
}

static int64_t count_where(struct store *st, const char *prj, const char *field, const char *value)
{
    struct store_filter f = {field, value};
    struct list_arg a = {.prj = prj, .q = {.filters = field ? &f : NULL, .nfilters = field ? 1 : 0}};
    store_read(st, list_fn, &a);
    json_decref(a.out);
    return a.rc ? -1 : a.total;
}

static void concurrent_body(struct store *st, const char *prj)
{
    struct conc c[6];
    thrd_t th[6];
    for (int t = 0; t < 6; t++) {
        c[t] = (struct conc){st, prj, t, 0, 0};
        thrd_create(&th[t], conc_main, &c[t]);
    }
    for (int t = 0; t < 6; t++) {
        thrd_join(th[t], NULL);
        CHECK_EQ_INT(c[t].ok, 20);
        CHECK_EQ_INT(c[t].fail, 20);
    }
    CHECK_EQ_INT(count_where(st, prj, "status", "even"), 120);
    CHECK_EQ_INT(count_where(st, prj, "status", "odd"), 0);
}

TEST(concurrent_writes_group_commit_with_savepoints)
{
    each_store("conc", concurrent_body);
}

/* Hooks: every write's hooks run once, after its commit (and, with
 * --fsync always, its fsync), in commit order, before store_write returns;
 * a failed write's hooks are told false.  Eight threads at once, so writes
 * share groups and the next group writes while the previous one syncs. */
static struct {
    mtx_t mu;
    int64_t last_id;   /* event id of the last hook told true */
    int out_of_order, told_true, told_false;
} hk;

struct hook_arg {
    int64_t id;
    int ran;
    bool committed;
};

static void order_hook(void *arg, bool committed)
{
    struct hook_arg *h = arg;
    mtx_lock(&hk.mu);
    h->ran++;
    h->committed = committed;
    if (committed) {
        if (h->id <= hk.last_id)
            hk.out_of_order++;
        hk.last_id = h->id;
        hk.told_true++;
    } else {
        hk.told_false++;
    }
    mtx_unlock(&hk.mu);
}

struct hook_write {
    const char *prj;
    struct hook_arg h;
    bool fail;
};

static int hook_write_fn(struct store_tx *tx, void *arg)
{
    struct hook_write *w = arg;
    json_t *e = json_pack("{s:s, s:s, s:I, s:n, s:n, s:{}}", "type", "t.hook", "project_id", w->prj,
                          "created_ms", (json_int_t)now_ms(), "task_id", "run_id", "data");
    int rc = store_event_append(tx, e, &w->h.id);
    json_decref(e);
    if (rc)
        return rc;
    store_tx_on_commit(tx, order_hook, &w->h);
    return w->fail ? -EPERM : 0;
}

struct hook_thread {
    struct store *st;
    const char *prj;
    int t, bad;
};

static int hook_thread_main(void *arg)
{
    struct hook_thread *ht = arg;
    for (int i = 0; i < 60; i++) {
        struct hook_write w = {.prj = ht->prj, .fail = (i + ht->t) % 5 == 0};
        int rc = store_write(ht->st, hook_write_fn, &w);
        /* the hook ran exactly once before store_write returned */
        if (w.h.ran != 1 || w.h.committed != (rc == 0) || (rc != 0) != w.fail)
            ht->bad++;
    }
    return 0;
}

static void hooks_body(struct store *st, const char *prj)
{
    mtx_init(&hk.mu, mtx_plain);
    hk.last_id = 0;
    hk.out_of_order = hk.told_true = hk.told_false = 0;
    struct hook_thread ht[8];
    thrd_t th[8];
    for (int t = 0; t < 8; t++) {
        ht[t] = (struct hook_thread){st, prj, t, 0};
        thrd_create(&th[t], hook_thread_main, &ht[t]);
    }
    for (int t = 0; t < 8; t++) {
        thrd_join(th[t], NULL);
        CHECK_EQ_INT(ht[t].bad, 0);
    }
    CHECK_EQ_INT(hk.out_of_order, 0);
    CHECK_EQ_INT(hk.told_true, 8 * 48);
    CHECK_EQ_INT(hk.told_false, 8 * 12);
    mtx_destroy(&hk.mu);
}

TEST(hooks_once_in_commit_order_after_commit)
{
    each_store("hooks", hooks_body);
    /* and with an fsync per group (SQLite's sync stage) */
    char *path = xasprintf("sqlite:%s/always.db", tmpdir);
    struct store *st = t_store_open(path, STORE_FSYNC_ALWAYS);
    CHECK(st != NULL);
    if (st) {
        hooks_body(st, "p_hooks_always");
        store_close(st);
    }
    free(path);
}

static void list_body(struct store *st, const char *prj)
{
    const char *ids[] = {"a", "b", "c", "d", "e"};
    for (int i = 0; i < 5; i++) {
        json_t *d = doc_new(ids[i], i < 3 ? "queued" : "done", i % 2 ? "red" : "blue");
        if (i == 4)
            json_object_del(d, "status");   /* NULL field */
        CHECK_EQ_INT(do_put(st, prj, d, false, 0, NULL), 0);
        json_decref(d);
    }
    /* an update keeps the list position */
    json_t *b = doc_new("b", "queued", "red");
    json_object_set_new(b, "x", json_integer(1));
    CHECK_EQ_INT(do_put(st, prj, b, true, 0, NULL), 0);
    json_decref(b);

    struct list_arg a = {.prj = prj, .q = {.limit = 2, .offset = 1}};
    store_read(st, list_fn, &a);
    CHECK_EQ_INT(a.rc, 0);
    CHECK_EQ_INT(a.total, 5);
    CHECK_EQ_INT(json_array_size(a.out), 2);
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(a.out, 0), "id")), "d");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(a.out, 1), "id")), "c");
    json_decref(a.out);

    a = (struct list_arg){.prj = prj, .q = {.oldest_first = true}};
    store_read(st, list_fn, &a);
    CHECK_EQ_INT(json_array_size(a.out), 5);
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(a.out, 0), "id")), "a");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(a.out, 1), "id")), "b");
    CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(a.out, 1), "x")), 1);
    json_decref(a.out);

    CHECK_EQ_INT(count_where(st, prj, "status", "queued"), 3);
    CHECK_EQ_INT(count_where(st, prj, "status", NULL), 1);
    CHECK_EQ_INT(count_where(st, prj, "id", "c"), 1);
    CHECK_EQ_INT(count_where(st, prj, "metadata.color", "red"), 2);
    CHECK_EQ_INT(count_where(st, prj, "metadata.color", "green"), 0);
    CHECK_EQ_INT(count_where(st, prj, "no_such_field", "x"), -1);   /* -EINVAL */

    struct store_filter f[2] = {{"status", "queued"}, {"metadata.color", "blue"}};
    a = (struct list_arg){.prj = prj, .q = {.filters = f, .nfilters = 2}};
    store_read(st, list_fn, &a);
    CHECK_EQ_INT(a.total, 2);   /* a, c */
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(a.out, 0), "id")), "c");
    json_decref(a.out);
}

TEST(list_order_filters_totals)
{
    each_store("list", list_body);
}

/* The metadata index (store.h) follows every write of a task: a patch of
 * its metadata, an update, a delete; values of every JSON type match as
 * the filter's text, and a seq freed by a delete leaves nothing behind. */
struct md_arg {
    const char *prj, *id;
    json_t *fields;   /* store_patch; NULL: store_delete */
};

static int md_fn(struct store_tx *tx, void *arg)
{
    struct md_arg *a = arg;
    return a->fields ? store_patch(tx, SK_TASK, a->prj, a->id, a->fields, NULL, NULL)
                     : store_delete(tx, SK_TASK, a->prj, a->id);
}

static void md_body(struct store *st, const char *prj)
{
    json_t *d = doc_new("m1", "queued", "red");
    json_object_set_new(json_object_get(d, "metadata"), "n", json_integer(3));
    json_object_set_new(json_object_get(d, "metadata"), "ok", json_true());
    json_object_set_new(json_object_get(d, "metadata"), "x", json_real(1.5));
    json_object_set_new(json_object_get(d, "metadata"), "z", json_null());
    CHECK_EQ_INT(do_put(st, prj, d, false, 0, NULL), 0);
    json_decref(d);
    d = doc_new("m2", "queued", "red");
    CHECK_EQ_INT(do_put(st, prj, d, false, 0, NULL), 0);
    json_decref(d);
    CHECK_EQ_INT(count_where(st, prj, "metadata.color", "red"), 2);
    CHECK_EQ_INT(count_where(st, prj, "metadata.n", "3"), 1);
    CHECK_EQ_INT(count_where(st, prj, "metadata.ok", "true"), 1);
    CHECK_EQ_INT(count_where(st, prj, "metadata.x", "1.5"), 1);
    CHECK_EQ_INT(count_where(st, prj, "metadata.z", "null"), 0);
    /* a patch of the metadata replaces the task's rows */
    struct md_arg a = {prj, "m1", json_pack("{s:{s:s}}", "metadata", "color", "blue")};
    CHECK_EQ_INT(store_write(st, md_fn, &a), 0);
    json_decref(a.fields);
    CHECK_EQ_INT(count_where(st, prj, "metadata.color", "red"), 1);
    CHECK_EQ_INT(count_where(st, prj, "metadata.color", "blue"), 1);
    CHECK_EQ_INT(count_where(st, prj, "metadata.n", "3"), 0);
    /* a patch of other fields keeps them */
    a = (struct md_arg){prj, "m1", json_pack("{s:s}", "status", "done")};
    CHECK_EQ_INT(store_write(st, md_fn, &a), 0);
    json_decref(a.fields);
    CHECK_EQ_INT(count_where(st, prj, "metadata.color", "blue"), 1);
    /* an update without metadata drops them */
    d = doc_new("m2", "queued", NULL);
    CHECK_EQ_INT(do_put(st, prj, d, true, 0, NULL), 0);
    json_decref(d);
    CHECK_EQ_INT(count_where(st, prj, "metadata.color", "red"), 0);
    /* a deleted task's rows go with it, before a new task can take its seq */
    a = (struct md_arg){prj, "m1", NULL};
    CHECK_EQ_INT(store_write(st, md_fn, &a), 0);
    CHECK_EQ_INT(count_where(st, prj, "metadata.color", "blue"), 0);
    d = doc_new("m3", "queued", "green");
    CHECK_EQ_INT(do_put(st, prj, d, false, 0, NULL), 0);
    json_decref(d);
    CHECK_EQ_INT(count_where(st, prj, "metadata.color", "blue"), 0);
    CHECK_EQ_INT(count_where(st, prj, "metadata.color", "green"), 1);
}

TEST(metadata_index_follows_writes)
{
    each_store("md", md_body);
}

/* A read sees one snapshot even when a write commits in the middle of it. */
struct snap_arg {
    struct store *st;
    const char *prj;
    int64_t before, after;
};

static int snap_fn(struct store_tx *tx, void *arg)
{
    struct snap_arg *a = arg;
    struct store_query q = {0};
    json_t *out = NULL;
    store_list(tx, SK_TASK, a->prj, &q, &out, &a->before);
    json_decref(out);
    json_t *d = doc_new("snap2", NULL, NULL);
    CHECK_EQ_INT(do_put(a->st, a->prj, d, false, 0, NULL), 0);
    json_decref(d);
    store_list(tx, SK_TASK, a->prj, &q, &out, &a->after);
    json_decref(out);
    return 0;
}

static void snapshot_body(struct store *st, const char *prj)
{
    json_t *d = doc_new("snap1", NULL, NULL);
    CHECK_EQ_INT(do_put(st, prj, d, false, 0, NULL), 0);
    json_decref(d);
    struct snap_arg a = {st, prj, -1, -1};
    store_read(st, snap_fn, &a);
    CHECK_EQ_INT(a.before, 1);
    CHECK_EQ_INT(a.after, 1);
    CHECK_EQ_INT(count_where(st, prj, NULL, NULL), 2);
}

TEST(read_is_one_snapshot)
{
    each_store("snap", snapshot_body);
}

/* ---- logs, events, meta, idempotency ---- */

struct misc_arg {
    const char *prj;
    int step;
    int64_t a, b, c;
    json_t *out;
    char *s1, *s2;
    int status, rc;
};

static int log_fn(struct store_tx *tx, void *arg)
{
    struct misc_arg *m = arg;
    json_t *e = json_pack("[{s:s},{s:s},{s:s}]", "message", "one", "message", "two", "message",
                          "thr\"ee é");
    int rc = store_log_append(tx, m->prj, m->prj, e, &m->a);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(e, 2), "seq")), m->a);
    json_decref(e);
    return rc;
}

static int log_read_fn(struct store_tx *tx, void *arg)
{
    struct misc_arg *m = arg;
    m->rc = store_log_read(tx, m->prj, m->prj, 2, 3, &m->out);
    m->b = store_log_bytes(tx, m->prj, m->prj);
    return 0;
}

static void logs_body(struct store *st, const char *prj)
{
    struct misc_arg m = {.prj = prj};
    CHECK_EQ_INT(store_write(st, log_fn, &m), 0);
    CHECK_EQ_INT(m.a, 3);
    CHECK_EQ_INT(store_write(st, log_fn, &m), 0);
    CHECK_EQ_INT(m.a, 6);
    CHECK_EQ_INT(store_read(st, log_read_fn, &m), 0);
    CHECK_EQ_INT(m.rc, 0);
    CHECK_EQ_INT(json_array_size(m.out), 3);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(m.out, 0), "seq")), 3);
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(m.out, 0), "message")),
                 "thr\"ee é");
    CHECK(m.b > 0);
    json_decref(m.out);
}

TEST(log_append_read_bytes)
{
    each_store("logs", logs_body);
}

static int ev_fn(struct store_tx *tx, void *arg)
{
    struct misc_arg *m = arg;
    const char *types[] = {"run.started", "run.log", "run.done"};
    for (int i = 0; i < 3; i++) {
        json_t *ev = json_pack("{s:s, s:s, s:s, s:I}", "type", types[i], "project_id", m->prj,
                               "run_id", "r1", "created_ms", (json_int_t)(1000 + i));
        int64_t id = 0;
        int rc = store_event_append(tx, ev, &id);
        json_decref(ev);
        if (rc)
            return rc;
        CHECK(id > m->a);   /* invariant 4 */
        m->a = id;
    }
    return 0;
}

static int ev_list_fn(struct store_tx *tx, void *arg)
{
    struct misc_arg *m = arg;
    const char *ex[] = {"run.log"};
    struct store_event_query q = {.project_id = m->prj, .run_id = "r1", .exclude = ex,
                                  .nexclude = 1, .after_ms = 1000};
    m->rc = store_event_list(tx, &q, &m->out, &m->b, &m->c);
    CHECK(store_event_last_id(tx) >= m->a);
    return 0;
}

static void events_body(struct store *st, const char *prj)
{
    struct misc_arg m = {.prj = prj};
    CHECK_EQ_INT(store_write(st, ev_fn, &m), 0);
    CHECK_EQ_INT(store_write(st, ev_fn, &m), 0);
    CHECK_EQ_INT(store_read(st, ev_list_fn, &m), 0);
    CHECK_EQ_INT(m.rc, 0);
    CHECK_EQ_INT(m.b, 6);      /* all events of the run */
    CHECK_EQ_INT(m.c, 2);      /* run.done twice (run.started is at 1000, not > 1000) */
    CHECK_EQ_INT(json_array_size(m.out), 2);
    int64_t s0 = json_integer_value(json_object_get(json_array_get(m.out, 0), "seq"));
    int64_t s1 = json_integer_value(json_object_get(json_array_get(m.out, 1), "seq"));
    CHECK(s0 > 0 && s1 > s0);
    CHECK_EQ_INT(s1, m.a);
    json_decref(m.out);
}

TEST(events_ids_filters_totals)
{
    each_store("events", events_body);
}

static int meta_fn(struct store_tx *tx, void *arg)
{
    struct misc_arg *m = arg;
    char *k = xasprintf("k_%s", m->prj), *scope = xasprintf("s_%s", m->prj);
    int rc = store_meta_set(tx, k, m->step ? "two" : "one");
    if (!rc)
        rc = store_idem_put(tx, scope, "key1", m->step ? NULL : "fp", 200 + m->step,
                            m->step ? "body2" : "body1");
    free(k);
    free(scope);
    return rc;
}

static int meta_read_fn(struct store_tx *tx, void *arg)
{
    struct misc_arg *m = arg;
    char *k = xasprintf("k_%s", m->prj), *scope = xasprintf("s_%s", m->prj);
    char *v = store_meta_get(tx, k);
    CHECK_EQ_STR(v, m->step ? "two" : "one");
    free(v);
    CHECK(store_meta_get(tx, "no such key") == NULL);
    m->rc = store_idem_get(tx, scope, "key1", 0, &m->s1, &m->status, &m->s2);
    CHECK_EQ_INT(store_idem_get(tx, scope, "key1", now_ms() + 60000, &m->s1, &m->status, &m->s2),
                 -ENOENT);
    CHECK_EQ_INT(store_idem_get(tx, scope, "key2", 0, &m->s1, &m->status, &m->s2), -ENOENT);
    free(k);
    free(scope);
    return 0;
}

static void meta_body(struct store *st, const char *prj)
{
    for (int step = 0; step < 2; step++) {
        struct misc_arg m = {.prj = prj, .step = step};
        CHECK_EQ_INT(store_write(st, meta_fn, &m), 0);
        CHECK_EQ_INT(store_read(st, meta_read_fn, &m), 0);
        CHECK_EQ_INT(m.rc, 0);
        CHECK_EQ_INT(m.status, 200 + step);
        if (step)
            CHECK(m.s1 == NULL);
        else
            CHECK_EQ_STR(m.s1, "fp");
        CHECK_EQ_STR(m.s2, step ? "body2" : "body1");
        free(m.s1);
        free(m.s2);
    }
}

TEST(meta_and_idempotency_upsert)
{
    each_store("meta", meta_body);
}
