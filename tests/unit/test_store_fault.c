/*
 * The SQLite store's group commit under an I/O error (store.h invariants 1
 * to 3): a read or write error inside one job makes SQLite roll back the
 * whole transaction by itself, savepoints and all.  The jobs of that batch
 * must then all fail, and none may commit on its own: a job reported failed
 * leaves nothing behind, and one that committed is reported committed.
 *
 * The scheduler under a store that refuses writes: a schedule's fire that
 * cannot be stored is tried again a second later, not at once in a loop.
 *
 * The fault comes from a VFS registered as the default before the store
 * opens (quern's WAL shim wraps whatever the default is): while fail_reads
 * is set, every read of a main database file fails with SQLITE_IOERR_READ;
 * while fail_writes is set, every write of a WAL file fails with
 * SQLITE_FULL (a commit cannot be stored).
 */
#include "t.h"
#include "tapp.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>

#include "app.h"
#include "events.h"
#include "sched.h"
#include "store.h"
#include "task.h"
#include "util.h"

#define PROJECT "p_fault"

static char tmpdir[] = "/tmp/quern-fault-XXXXXX";

/* The path of a new SQLite file named name in the program's temp directory
 * (removed at exit, with all it holds): malloc'd, or NULL. */
static char *db_path(const char *name)
{
    static bool made;
    if (!made && t_tmpdir_make(tmpdir))
        return NULL;
    made = true;
    return xasprintf("%s/%s.db", tmpdir, name);
}

static atomic_bool fail_reads, fail_writes;
static atomic_int failed_writes;   /* WAL writes refused: one per commit tried */
static sqlite3_vfs *real_vfs;
static sqlite3_vfs fault_vfs;
static sqlite3_io_methods fault_methods;

struct ffile {
    sqlite3_file base;
    sqlite3_file *real;   /* the unix VFS's file, right after this struct */
    bool main_db;         /* a main database file: its reads may fail */
    bool wal;             /* a WAL file: its writes may fail */
};

#define REAL(f) (((struct ffile *)(f))->real)

static int f_close(sqlite3_file *f)
{
    return REAL(f)->pMethods->xClose(REAL(f));
}
static int f_read(sqlite3_file *f, void *p, int n, sqlite3_int64 off)
{
    if (((struct ffile *)f)->main_db && atomic_load(&fail_reads))
        return SQLITE_IOERR_READ;
    return REAL(f)->pMethods->xRead(REAL(f), p, n, off);
}
static int f_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 off)
{
    if (((struct ffile *)f)->wal && atomic_load(&fail_writes)) {
        atomic_fetch_add(&failed_writes, 1);
        return SQLITE_FULL;
    }
    return REAL(f)->pMethods->xWrite(REAL(f), p, n, off);
}
static int f_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int f_sync(sqlite3_file *f, int flags)
{
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int f_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int f_lock(sqlite3_file *f, int l)
{
    return REAL(f)->pMethods->xLock(REAL(f), l);
}
static int f_unlock(sqlite3_file *f, int l)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), l);
}
static int f_reserved(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int f_control(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int f_sector(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int f_device(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int f_shm_map(sqlite3_file *f, int pg, int sz, int ext, void volatile **pp)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, ext, pp);
}
static int f_shm_lock(sqlite3_file *f, int off, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}
static void f_shm_barrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int f_shm_unmap(sqlite3_file *f, int del)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}

static int fv_open(sqlite3_vfs *v, const char *name, sqlite3_file *f, int flags, int *out)
{
    (void)v;
    struct ffile *ff = (struct ffile *)f;
    ff->real = (sqlite3_file *)(ff + 1);
    int rc = real_vfs->xOpen(real_vfs, name, ff->real, flags, out);
    if (rc != SQLITE_OK || !ff->real->pMethods) {
        f->pMethods = NULL;
        return rc;
    }
    ff->main_db = (flags & SQLITE_OPEN_MAIN_DB) != 0;
    ff->wal = (flags & SQLITE_OPEN_WAL) != 0;
    f->pMethods = &fault_methods;
    return SQLITE_OK;
}

static int fv_delete(sqlite3_vfs *v, const char *n, int s)
{
    (void)v;
    return real_vfs->xDelete(real_vfs, n, s);
}
static int fv_access(sqlite3_vfs *v, const char *n, int fl, int *o)
{
    (void)v;
    return real_vfs->xAccess(real_vfs, n, fl, o);
}
static int fv_full(sqlite3_vfs *v, const char *n, int k, char *o)
{
    (void)v;
    return real_vfs->xFullPathname(real_vfs, n, k, o);
}
static int fv_random(sqlite3_vfs *v, int n, char *o)
{
    (void)v;
    return real_vfs->xRandomness(real_vfs, n, o);
}
static int fv_sleep(sqlite3_vfs *v, int us)
{
    (void)v;
    return real_vfs->xSleep(real_vfs, us);
}
static int fv_time(sqlite3_vfs *v, double *o)
{
    (void)v;
    return real_vfs->xCurrentTime(real_vfs, o);
}
static int fv_time64(sqlite3_vfs *v, sqlite3_int64 *o)
{
    (void)v;
    return real_vfs->xCurrentTimeInt64(real_vfs, o);
}
static int fv_last_error(sqlite3_vfs *v, int n, char *o)
{
    (void)v;
    return real_vfs->xGetLastError ? real_vfs->xGetLastError(real_vfs, n, o) : 0;
}

/* Before main: the store's first open registers its WAL shim over the
 * default VFS of that moment. */
__attribute__((constructor)) static void fault_register(void)
{
    real_vfs = sqlite3_vfs_find(NULL);
    fault_methods = (sqlite3_io_methods){
        .iVersion = 2,
        .xClose = f_close,
        .xRead = f_read,
        .xWrite = f_write,
        .xTruncate = f_truncate,
        .xSync = f_sync,
        .xFileSize = f_size,
        .xLock = f_lock,
        .xUnlock = f_unlock,
        .xCheckReservedLock = f_reserved,
        .xFileControl = f_control,
        .xSectorSize = f_sector,
        .xDeviceCharacteristics = f_device,
        .xShmMap = f_shm_map,
        .xShmLock = f_shm_lock,
        .xShmBarrier = f_shm_barrier,
        .xShmUnmap = f_shm_unmap,
    };
    fault_vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)sizeof(struct ffile) + real_vfs->szOsFile,
        .mxPathname = real_vfs->mxPathname,
        .zName = "test-fault",
        .xOpen = fv_open,
        .xDelete = fv_delete,
        .xAccess = fv_access,
        .xFullPathname = fv_full,
        .xRandomness = fv_random,
        .xSleep = fv_sleep,
        .xCurrentTime = fv_time,
        .xGetLastError = fv_last_error,
        .xCurrentTimeInt64 = fv_time64,
    };
    sqlite3_vfs_register(&fault_vfs, 1);
}

static int fill_fn(struct store_tx *tx, void *arg)
{
    (void)arg;
    char pad[2048];
    memset(pad, 'x', sizeof pad - 1);
    pad[sizeof pad - 1] = 0;
    for (int i = 0; i < 400; i++) {
        char id[32];
        snprintf(id, sizeof id, "run_fill_%d", i);
        json_t *doc = json_pack("{s:s, s:s, s:s, s:s}", "id", id, "status", "completed",
                                "task_id", "t1", "pad", pad);
        int rc = store_put(tx, SK_RUN, PROJECT, doc);
        json_decref(doc);
        if (rc)
            return rc;
    }
    return 0;
}

struct job {
    struct store *st;
    const char *id;        /* put this run; NULL: read a cold one under the fault */
    int rc;
    _Atomic int hook_runs, hook_committed;
    atomic_bool started, done;
};

static atomic_bool release_leader;

static void hook(void *arg, bool committed)
{
    struct job *j = arg;
    j->hook_runs++;
    j->hook_committed = committed;
}

static int job_fn(struct store_tx *tx, void *arg)
{
    struct job *j = arg;
    if (!j->id) {
        atomic_store(&fail_reads, true);
        json_t *doc = store_get(tx, SK_RUN, PROJECT, "run_fill_200");
        atomic_store(&fail_reads, false);
        if (doc) {
            json_decref(doc);
            return 0;
        }
        /* a job that goes on after the error (as one that took it for "not
         * found" would) writes nothing either */
        doc = json_pack("{s:s, s:s, s:s}", "id", "run_by_faulty", "status", "queued", "task_id",
                        "t1");
        (void)store_put(tx, SK_RUN, PROJECT, doc);
        json_decref(doc);
        return -EIO;
    }
    json_t *doc = json_pack("{s:s, s:s, s:s}", "id", j->id, "status", "queued", "task_id", "t1");
    int rc = store_put(tx, SK_RUN, PROJECT, doc);
    json_decref(doc);
    if (rc)
        return rc;
    store_tx_on_commit(tx, hook, j);
    return 0;
}

/* holds the write group until the others are queued behind it */
static int leader_fn(struct store_tx *tx, void *arg)
{
    (void)tx, (void)arg;
    for (int i = 0; i < 6000 && !atomic_load(&release_leader); i++)
        usleep(10000);
    return 0;
}

static void *job_main(void *arg)
{
    struct job *j = arg;
    j->started = true;
    j->rc = store_write(j->st, job_fn, j);
    j->done = true;
    return NULL;
}

static void *leader_main(void *arg)
{
    struct job *j = arg;
    j->started = true;
    j->rc = store_write(j->st, leader_fn, NULL);
    j->done = true;
    return NULL;
}

TEST(an_io_error_in_one_job_commits_no_other_job_of_its_batch_behind_its_back)
{
    char *path = db_path("batch");
    CHECK(path != NULL);
    if (!path)
        return;
    struct store *st = t_store_open(path, STORE_FSYNC_OFF);
    CHECK(st != NULL);
    if (!st)
        goto out;
    CHECK_EQ_INT(store_write(st, fill_fn, NULL), 0);
    store_close(st);
    /* reopened: the writer's page cache is cold, so the faulty job reads */
    st = t_store_open(path, STORE_FSYNC_OFF);
    CHECK(st != NULL);
    if (!st)
        goto out;
    struct job lead = {.st = st}, bad = {.st = st, .id = NULL},
               after = {.st = st, .id = "run_after_fault"};
    pthread_t tl, tb, ta;
    pthread_create(&tl, NULL, leader_main, &lead);
    /* queue the faulty job, then a good one, behind the leader's group
     * (the pauses order them; the checks below hold in any order) */
    usleep(100000);
    pthread_create(&tb, NULL, job_main, &bad);
    usleep(100000);
    pthread_create(&ta, NULL, job_main, &after);
    usleep(100000);
    atomic_store(&release_leader, true);
    pthread_join(tl, NULL);
    pthread_join(tb, NULL);
    pthread_join(ta, NULL);
    CHECK_EQ_INT(lead.rc, 0);
    CHECK(bad.rc != 0);
    /* what the good job was told matches what the store holds */
    bool there = t_run_visible(st, PROJECT, "run_after_fault");
    CHECK_EQ_INT(after.rc == 0, there);
    CHECK(after.hook_runs <= 1);   /* none when it was not run at all */
    CHECK_EQ_INT(after.hook_committed, there);
    CHECK(!t_run_visible(st, PROJECT, "run_by_faulty"));
    /* the store goes on: a write after the fault commits */
    struct job next = {.st = st, .id = "run_next"};
    CHECK_EQ_INT(store_write(st, job_fn, &next), 0);
    CHECK(t_run_visible(st, PROJECT, "run_next"));
    store_close(st);
out:
    free(path);
}

/* ---- a read error is an error, never an absent row or a short page ---- */

static int logs_fn(struct store_tx *tx, void *arg)
{
    (void)arg;
    json_t *ev = json_pack("{s:s, s:s, s:s, s:I}", "type", "run.created", "project_id", PROJECT,
                           "run_id", "run_fill_7", "created_ms", (json_int_t)now_ms());
    int64_t id = 0;
    int rc = store_event_append(tx, ev, &id);
    json_decref(ev);
    json_t *entries = json_array();
    for (int i = 0; i < 200 && !rc; i++)
        json_array_append_new(entries, json_pack("{s:s, s:i}", "line", "a log line", "i", i));
    int64_t last = 0;
    if (!rc)
        rc = store_log_append(tx, PROJECT, "run_fill_7", entries, &last);
    json_decref(entries);
    return rc;
}

enum cold_read { COLD_GET, COLD_TRY_GET, COLD_LOG, COLD_EVENTS };

struct cold {
    enum cold_read what;
    int fn_rc;        /* what fn returned */
    bool answered;    /* fn got a doc or a page */
    bool healthy;     /* read without the fault */
};

static int cold_fn(struct store_tx *tx, void *arg)
{
    struct cold *c = arg;
    json_t *out = NULL;
    atomic_store(&fail_reads, !c->healthy);
    if (c->what == COLD_GET) {
        out = store_get(tx, SK_RUN, PROJECT, "run_fill_300");
        c->fn_rc = out ? 0 : -ENOENT;   /* as an API handler does: a 404 */
    } else if (c->what == COLD_TRY_GET) {
        c->fn_rc = store_try_get(tx, SK_RUN, PROJECT, "run_fill_300", &out);
    } else if (c->what == COLD_LOG) {
        c->fn_rc = store_log_read(tx, PROJECT, "run_fill_7", 0, 0, &out);
    } else {
        struct store_event_query q = {.project_id = PROJECT};
        int64_t total = 0, filtered = 0;
        c->fn_rc = store_event_list(tx, &q, &out, &total, &filtered);
    }
    atomic_store(&fail_reads, false);
    c->answered = out != NULL;
    json_decref(out);
    return c->fn_rc;
}

TEST(a_read_error_fails_the_read_not_a_not_found_or_a_short_page)
{
    char *path = db_path("read");
    CHECK(path != NULL);
    if (!path)
        return;
    struct store *st = t_store_open(path, STORE_FSYNC_OFF);
    CHECK(st != NULL);
    if (!st)
        goto out;
    CHECK_EQ_INT(store_write(st, fill_fn, NULL), 0);
    CHECK_EQ_INT(store_write(st, logs_fn, NULL), 0);
    store_close(st);
    for (int what = COLD_GET; what <= COLD_EVENTS; what++) {
        /* reopened each time: every connection's page cache is cold */
        st = t_store_open(path, STORE_FSYNC_OFF);
        CHECK(st != NULL);
        if (!st)
            break;
        struct cold c = {.what = (enum cold_read)what};
        int rc = store_read(st, cold_fn, &c);
        if (rc != -EIO)
            fprintf(stderr, "  read %d: store_read %d, fn %d, answered %d\n", what, rc, c.fn_rc,
                    c.answered);
        CHECK_EQ_INT(rc, -EIO);   /* api_store_error: 500 store_error, not 404 */
        CHECK(!c.answered);
        /* in a write transaction too, and what it wrote after is rolled back */
        c = (struct cold){.what = (enum cold_read)what};
        CHECK_EQ_INT(store_write(st, cold_fn, &c), -EIO);
        /* the fault gone, the same reads answer */
        c = (struct cold){.what = (enum cold_read)what, .healthy = true};
        CHECK_EQ_INT(store_read(st, cold_fn, &c), 0);
        CHECK(c.answered);
        store_close(st);
    }
out:
    free(path);
}

/* ---- the scheduler's fires under a store that cannot commit ---- */

static const int64_t T0 = 1795383722000LL;   /* whole seconds */

static int sched_task_fn(struct store_tx *tx, void *arg)
{
    struct app *app = arg;
    json_t *proj = json_pack("{s:s, s:s}", "id", "p", "name", "p");
    int rc = store_put(tx, SK_PROJECT, "p", proj);
    json_decref(proj);
    json_t *task = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:{}, s:{}}", "id", "t1",
                             "project_id", "p", "name", "every second", "type", "scheduled",
                             "status", "pending", "schedule", "* * * * * *", "timezone", "UTC",
                             "assigned_agent_id", "agent1", "settings", "input");
    task_schedule_next(task, T0);   /* next_run_at T0 + 1 s */
    if (!rc)
        rc = store_put(tx, SK_TASK, "p", task);
    if (!rc)
        sched_task_changed_on_commit(tx, app->sched, task, true);
    json_decref(task);
    return rc;
}

struct count_runs {
    int64_t n;
};

static int count_runs_fn(struct store_tx *tx, void *arg)
{
    struct count_runs *c = arg;
    struct store_filter f = {"task_id", "t1"};
    struct store_query q = {&f, 1, 0, 0, true, NULL};
    json_t *out = NULL;
    int rc = store_list(tx, SK_RUN, "p", &q, &out, &c->n);
    json_decref(out);
    return rc;
}

static int64_t runs_of_t1(struct store *st)
{
    struct count_runs c = {0};
    return store_read(st, count_runs_fn, &c) ? -1 : c.n;
}

TEST(a_fire_that_cannot_be_stored_is_tried_again_a_second_later_not_in_a_loop)
{
    util_fake_now_ms = T0;
    struct app *app = t_app_new();
    CHECK(app->store != NULL);
    if (!app->store)
        goto out;
    CHECK_EQ_INT(store_write(app->store, sched_task_fn, app), 0);
    CHECK_EQ_INT(sched_start(app->sched), 0);
    CHECK_EQ_INT(sched_cron_count(app->sched), 1);
    /* the instant T0 + 1 s is due and every commit fails */
    atomic_store(&fail_writes, true);
    util_fake_now_ms = T0 + 1500;
    for (int i = 0; i < 6000 && !atomic_load(&failed_writes); i++)
        usleep(10000);
    CHECK(atomic_load(&failed_writes) >= 1);
    /* the clock stands still: a fire that failed waits for it to move on
     * (a second), so nothing more is tried, however long this waits */
    usleep(500000);
    CHECK_EQ_INT(atomic_load(&failed_writes), 1);
    /* the store takes writes again and the clock moves past the retry:
     * the instant fires once */
    atomic_store(&fail_writes, false);
    util_fake_now_ms = T0 + 2500;
    for (int i = 0; i < 6000 && runs_of_t1(app->store) < 1; i++)
        usleep(10000);
    CHECK_EQ_INT(runs_of_t1(app->store), 1);
out:
    util_fake_now_ms = 0;
    t_app_free(app);
}

/* ---- a dependency's end that cannot be stored ---- */

/* A's run ra in the status arg names; B's run rb queued, blocked on A. */
static int deps_fn(struct store_tx *tx, void *arg)
{
    const char *ra_status = arg;
    json_t *docs[] = {
        json_pack("{s:s, s:s}", "id", "p", "name", "p"),
        json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", "ta", "project_id", "p", "status",
                  ra_status, "latest_run_id", "ra", "assigned_agent_id", "agent-a"),
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:[s], s:b}", "id", "tb", "project_id", "p",
                  "status", "queued", "latest_run_id", "rb", "assigned_agent_id", "agent-b",
                  "dependencies", "ta", "has_dependencies", 1),
        json_pack("{s:s, s:s, s:s, s:s, s:I}", "id", "ra", "project_id", "p", "task_id", "ta",
                  "status", ra_status, "attempt", (json_int_t)1),
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:b, s:[s]}", "id", "rb",
                  "project_id", "p", "task_id", "tb", "status", "queued", "priority", "medium",
                  "agent_id", "agent-b", "attempt", (json_int_t)1, "queued_ms",
                  (json_int_t)now_ms(), "has_code", 0, "blocked_by", "ta"),
    };
    const enum store_kind kinds[] = {SK_PROJECT, SK_TASK, SK_TASK, SK_RUN, SK_RUN};
    int rc = 0;
    for (size_t i = 0; i < sizeof docs / sizeof *docs; i++) {
        if (!rc)
            rc = store_put(tx, kinds[i], "p", docs[i]);
        json_decref(docs[i]);
    }
    return rc;
}

struct blocked {
    int64_t n;   /* rb's blocked_by entries; -1: no rb */
};

static int blocked_fn(struct store_tx *tx, void *arg)
{
    struct blocked *b = arg;
    json_t *rb = store_get(tx, SK_RUN, "p", "rb");
    b->n = rb ? (int64_t)json_array_size(json_object_get(rb, "blocked_by")) : -1;
    json_decref(rb);
    return 0;
}

static int64_t rb_blocked(struct store *st)
{
    struct blocked b = {-1};
    return store_read(st, blocked_fn, &b) ? -1 : b.n;
}

TEST(a_dependency_end_that_cannot_be_stored_unblocks_its_dependants_later)
{
    util_fake_now_ms = 0;
    atomic_store(&failed_writes, 0);
    struct app *app = t_app_new();
    CHECK(app->store != NULL);
    if (!app->store)
        goto out;
    /* A's run is running; B's run waits on A (loaded blocked) */
    CHECK_EQ_INT(store_write(app->store, deps_fn, "running"), 0);
    CHECK_EQ_INT(sched_start(app->sched), 0);
    /* A's end reaches the scheduler while no commit can be stored: the
     * write that unblocks B's run fails */
    atomic_store(&fail_writes, true);
    json_t *ra = json_pack("{s:s, s:s, s:s, s:s, s:I}", "id", "ra", "project_id", "p", "task_id",
                           "ta", "status", "completed", "attempt", (json_int_t)1);
    sched_after_commit(app->sched, ra);
    json_decref(ra);
    for (int i = 0; i < 6000 && !atomic_load(&failed_writes); i++)
        usleep(10000);
    CHECK(atomic_load(&failed_writes) >= 1);
    atomic_store(&fail_writes, false);
    /* the store takes writes again: B's run is unblocked and can be taken
     * (it used to wait blocked on a dependency that had ended, for ever) */
    for (int i = 0; i < 3000 && rb_blocked(app->store) != 0; i++)
        usleep(10000);
    CHECK_EQ_INT(rb_blocked(app->store), 0);
    struct sched_filter f = {.project_id = "p", .agent_id = "agent-b"};
    char *ids[1] = {NULL};
    int n = 0;
    for (int i = 0; i < 500 && !(n = sched_take(app->sched, &f, ids, 1)); i++)
        usleep(10000);
    CHECK_EQ_INT(n, 1);
    if (n == 1) {
        CHECK_EQ_STR(ids[0], "rb");
        free(ids[0]);
    }
out:
    t_app_free(app);
}

/* quernd stopped between a dependency's end and the write acting on it:
 * the store holds A's run completed and B's run still blocked on A.  The
 * scheduler that starts on it unblocks B's run (it used to load it
 * blocked, waiting for an end that had come). */
TEST(a_run_blocked_on_a_dependency_that_ended_while_quernd_was_down_is_unblocked_at_start)
{
    util_fake_now_ms = 0;
    struct app *app = t_app_new();
    CHECK(app->store != NULL);
    if (!app->store)
        goto out;
    CHECK_EQ_INT(store_write(app->store, deps_fn, "completed"), 0);
    CHECK_EQ_INT(sched_start(app->sched), 0);
    for (int i = 0; i < 3000 && rb_blocked(app->store) != 0; i++)
        usleep(10000);
    CHECK_EQ_INT(rb_blocked(app->store), 0);
    struct sched_filter f = {.project_id = "p", .agent_id = "agent-b"};
    char *ids[1] = {NULL};
    int n = 0;
    for (int i = 0; i < 500 && !(n = sched_take(app->sched, &f, ids, 1)); i++)
        usleep(10000);
    CHECK_EQ_INT(n, 1);
    if (n == 1)
        free(ids[0]);
out:
    t_app_free(app);
}
