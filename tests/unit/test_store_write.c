/*
 * store_write_begin / store_write_wait on SQLite (store.h): the first half
 * returns once the transaction is committed and visible, before its fsync
 * and its commit hooks; the second once it is durable and its hooks have
 * run.  A ticket whose caller is away never holds up another writer.
 */
#include "t.h"
#include "tstore.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "store.h"
#include "util.h"

#define PROJECT "p_write"

static char tmpdir[] = "/tmp/quern-write-XXXXXX";

/* A fresh store, a file of its own in the program's temp directory (removed
 * at exit). */
static struct store *open_store(enum store_fsync fs)
{
    static int nstore;
    if (!nstore && t_tmpdir_make(tmpdir))
        abort();
    char *path = xasprintf("%s/q%d.db", tmpdir, ++nstore);
    struct store *st = t_store_open(path, fs);
    free(path);
    return st;
}

struct put {
    const char *id;
    int rc;                 /* what fn returns after its put (non-zero: roll back) */
    _Atomic int hook_runs;
    _Atomic int hook_committed;
};

static void hook(void *arg, bool committed)
{
    struct put *p = arg;
    p->hook_runs++;
    p->hook_committed = committed;
}

static int put_fn(struct store_tx *tx, void *arg)
{
    struct put *p = arg;
    json_t *doc = json_pack("{s:s, s:s, s:s}", "id", p->id, "status", "queued", "task_id", "t1");
    int rc = store_put(tx, SK_RUN, PROJECT, doc);
    json_decref(doc);
    if (rc)
        return rc;
    store_tx_on_commit(tx, hook, p);
    return p->rc;
}

TEST(begin_returns_committed_and_visible_then_wait_runs_the_hooks)
{
    struct store *st = open_store(STORE_FSYNC_ALWAYS);
    CHECK(st != NULL);
    if (!st)
        return;
    struct put p = {.id = "run_early"};
    struct store_ticket *tk = NULL;
    CHECK_EQ_INT(store_write_begin(st, put_fn, &p, &tk), 0);
    CHECK(tk != NULL);
    /* committed: every reader sees it; no other thread writes, so nothing
     * has synced it and its hook has not run */
    CHECK(t_run_visible(st, PROJECT, "run_early"));
    CHECK_EQ_INT(p.hook_runs, 0);
    store_write_wait(st, tk);
    CHECK_EQ_INT(p.hook_runs, 1);
    CHECK_EQ_INT(p.hook_committed, 1);
    /* a plain write after it behaves as ever */
    struct put q = {.id = "run_after"};
    CHECK_EQ_INT(store_write(st, put_fn, &q), 0);
    CHECK_EQ_INT(q.hook_runs, 1);
    CHECK(t_run_visible(st, PROJECT, "run_after"));
    store_close(st);
}

TEST(a_rolled_back_begin_gives_its_error_and_no_ticket)
{
    struct store *st = open_store(STORE_FSYNC_ALWAYS);
    CHECK(st != NULL);
    if (!st)
        return;
    struct put p = {.id = "run_rolled_back", .rc = -EPERM};
    struct store_ticket *tk = (struct store_ticket *)&p;   /* must be cleared */
    CHECK_EQ_INT(store_write_begin(st, put_fn, &p, &tk), -EPERM);
    CHECK(tk == NULL);
    CHECK(!t_run_visible(st, PROJECT, "run_rolled_back"));
    CHECK_EQ_INT(p.hook_runs, 1);            /* told, to release what it holds */
    CHECK_EQ_INT(p.hook_committed, 0);
    store_write_wait(st, NULL);              /* no ticket: nothing to do */
    store_close(st);
}

struct writer {
    struct store *st;
    struct put p;
    atomic_bool done;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    w->p.rc = store_write(w->st, put_fn, &w->p);
    w->done = true;
    return NULL;
}

/* A safety net for a hang (not a timing assertion): 60 s. */
static bool wait_done(atomic_bool *done)
{
    for (int i = 0; i < 6000 && !*done; i++)
        usleep(10000);
    return *done;
}

TEST(an_away_ticket_holds_up_no_other_writer)
{
    struct store *st = open_store(STORE_FSYNC_ALWAYS);
    CHECK(st != NULL);
    if (!st)
        return;
    struct put p = {.id = "run_away"};
    struct store_ticket *tk = NULL;
    CHECK_EQ_INT(store_write_begin(st, put_fn, &p, &tk), 0);
    /* while this thread is away, another one writes: it leads its own
     * commit and the sync of everything committed before it, ours too */
    struct writer w = {.st = st, .p = {.id = "run_other"}};
    pthread_t t;
    CHECK_EQ_INT(pthread_create(&t, NULL, writer_main, &w), 0);
    CHECK(wait_done(&w.done));
    pthread_join(t, NULL);
    CHECK_EQ_INT(w.p.rc, 0);
    CHECK_EQ_INT(w.p.hook_runs, 1);
    CHECK_EQ_INT(p.hook_runs, 1);           /* synced in the same group, in order */
    store_write_wait(st, tk);               /* already done: returns at once */
    CHECK_EQ_INT(p.hook_runs, 1);
    CHECK(t_run_visible(st, PROJECT, "run_away") && t_run_visible(st, PROJECT, "run_other"));
    store_close(st);
}

struct mixer {
    struct store *st;
    int k;
    struct put puts[50];
    char ids[50][32];
};

static void *mixer_main(void *arg)
{
    struct mixer *m = arg;
    for (int i = 0; i < 50; i++) {
        snprintf(m->ids[i], sizeof m->ids[i], "run_m%d_%d", m->k, i);
        m->puts[i].id = m->ids[i];
        if (i % 2) {
            m->puts[i].rc = store_write(m->st, put_fn, &m->puts[i]);
        } else {
            struct store_ticket *tk = NULL;
            m->puts[i].rc = store_write_begin(m->st, put_fn, &m->puts[i], &tk);
            if (i % 4 == 0)
                usleep(200);   /* away for a while, as the runner launching boxes */
            store_write_wait(m->st, tk);
        }
    }
    return NULL;
}

TEST(mixed_writers_lose_nothing_and_every_hook_runs_once)
{
    struct store *st = open_store(STORE_FSYNC_ALWAYS);
    CHECK(st != NULL);
    if (!st)
        return;
    enum { THREADS = 4 };
    static struct mixer m[THREADS];
    pthread_t t[THREADS];
    for (int k = 0; k < THREADS; k++) {
        m[k] = (struct mixer){.st = st, .k = k};
        CHECK_EQ_INT(pthread_create(&t[k], NULL, mixer_main, &m[k]), 0);
    }
    for (int k = 0; k < THREADS; k++)
        pthread_join(t[k], NULL);
    int bad = 0;
    for (int k = 0; k < THREADS; k++)
        for (int i = 0; i < 50; i++)
            bad += m[k].puts[i].rc != 0 || m[k].puts[i].hook_runs != 1 ||
                   !m[k].puts[i].hook_committed || !t_run_visible(st, PROJECT, m[k].ids[i]);
    CHECK_EQ_INT(bad, 0);
    store_close(st);
}

/* 300 patches of distinct fields: 300 distinct statements, more than the
 * connection's cache holds, so it evicts (and finalizes) statements, the
 * fixed ones (a document's INSERT and SELECT, BEGIN, COMMIT) among them.
 * Each put and get after an eviction must prepare its statement again,
 * never step a finalized one (stmt_fixed's entries are dropped with it). */
static int churn_fn(struct store_tx *tx, void *arg)
{
    int *i = arg;
    char id[32], field[32];
    snprintf(id, sizeof id, "run_churn_%d", *i);
    json_t *doc = json_pack("{s:s, s:s, s:s}", "id", id, "status", "queued", "task_id", "t1");
    int rc = store_put(tx, SK_RUN, PROJECT, doc);
    json_decref(doc);
    if (rc)
        return rc;
    snprintf(field, sizeof field, "x%d", *i);
    json_t *fields = json_pack("{s:i}", field, *i);
    rc = store_patch(tx, SK_RUN, PROJECT, id, fields, NULL, NULL);
    json_decref(fields);
    if (rc)
        return rc;
    json_t *back = store_get(tx, SK_RUN, PROJECT, id);
    rc = json_integer_value(json_object_get(back, field)) == *i ? 0 : -EIO;
    json_decref(back);
    return rc;
}

TEST(statements_evicted_from_the_cache_are_prepared_again)
{
    struct store *st = open_store(STORE_FSYNC_OFF);
    CHECK(st != NULL);
    if (!st)
        return;
    int bad = 0;
    for (int i = 0; i < 300; i++) {
        bad += store_write(st, churn_fn, &i) != 0;
        char id[32];
        snprintf(id, sizeof id, "run_churn_%d", i);
        bad += !t_run_visible(st, PROJECT, id);
    }
    CHECK_EQ_INT(bad, 0);
    store_close(st);
}

/* A patch's statement is kept per shape (sq_patch's patches[]): the same
 * shape again with other values, with its if_field met or not, and shapes
 * that differ only in their if_field or their kind, each write what they
 * say.  Hot fields (a task's status), indexed ones (a run's status) and
 * plain ones (json_set) alike. */
struct shapes {
    int bad;
};

static int patch_fields(struct store_tx *tx, enum store_kind kind, const char *id,
                        const char *status, double progress, const char *if_field,
                        const char *if_value)
{
    json_t *f = json_pack("{s:s, s:f, s:s}", "status", status, "progress", progress, "note",
                          status);
    int rc = store_patch(tx, kind, PROJECT, id, f, if_field, if_value);
    json_decref(f);
    return rc;
}

static bool holds(struct store_tx *tx, enum store_kind kind, const char *id, const char *status,
                  double progress)
{
    json_t *d = store_get(tx, kind, PROJECT, id);
    bool ok = d && !strcmp(json_string_value(json_object_get(d, "status")) ?: "", status) &&
              json_real_value(json_object_get(d, "progress")) == progress &&
              !strcmp(json_string_value(json_object_get(d, "note")) ?: "", status);
    json_decref(d);
    return ok;
}

static int shapes_fn(struct store_tx *tx, void *arg)
{
    struct shapes *sh = arg;
    json_t *task = json_pack("{s:s, s:s, s:s, s:f, s:s}", "id", "task_shape", "status", "pending",
                             "latest_run_id", "run_shape", "progress", 0.0, "type", "manual");
    json_t *run = json_pack("{s:s, s:s, s:s, s:f}", "id", "run_shape", "status", "queued",
                            "task_id", "task_shape", "progress", 0.0);
    int rc = store_put(tx, SK_TASK, PROJECT, task);
    if (!rc)
        rc = store_put(tx, SK_RUN, PROJECT, run);
    json_decref(task);
    json_decref(run);
    if (rc)
        return rc;
    static const char *const st[] = {"running", "paused", "completed"};
    for (int i = 0; i < 3; i++) {
        double pr = 0.25 * (i + 1);
        sh->bad += patch_fields(tx, SK_TASK, "task_shape", st[i], pr, "latest_run_id",
                                "run_shape") != 0;
        sh->bad += patch_fields(tx, SK_TASK, "task_shape", "x", 0.0, "latest_run_id",
                                "run_other") != -ENOENT;
        sh->bad += !holds(tx, SK_TASK, "task_shape", st[i], pr);
        sh->bad += patch_fields(tx, SK_RUN, "run_shape", st[i], pr, NULL, NULL) != 0;
        sh->bad += patch_fields(tx, SK_RUN, "run_shape", "y", 0.0, "task_id", "task_other") !=
                   -ENOENT;
        sh->bad += !holds(tx, SK_RUN, "run_shape", st[i], pr);
        sh->bad += patch_fields(tx, SK_RUN, "run_missing", st[i], pr, NULL, NULL) != -ENOENT;
    }
    /* a name that is not plain is refused, as ever */
    json_t *bad_name = json_pack("{s:s}", "no-plain", "v");
    sh->bad += store_patch(tx, SK_RUN, PROJECT, "run_shape", bad_name, NULL, NULL) != -EINVAL;
    json_decref(bad_name);
    return 0;
}

TEST(patches_of_one_shape_share_a_statement_and_write_what_they_say)
{
    struct store *st = open_store(STORE_FSYNC_OFF);
    CHECK(st != NULL);
    if (!st)
        return;
    struct shapes sh = {0};
    CHECK_EQ_INT(store_write(st, shapes_fn, &sh), 0);
    CHECK_EQ_INT(sh.bad, 0);
    store_close(st);
}
