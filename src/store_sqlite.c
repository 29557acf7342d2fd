/*
 * store_sqlite — the embedded SQLite backend (WAL mode).
 *
 * Threads.  One write connection, used by one thread at a time: the
 * leader.  store_write() queues a job; the first caller to find no commit in
 * progress becomes the leader, takes every queued job (up to MAX_BATCH), runs
 * each in its own SAVEPOINT inside one BEGIN IMMEDIATE ... COMMIT, then wakes
 * them all: concurrent writers share one commit and one fsync (group
 * commit), and a lone writer commits on its own thread (sq_write).  Readers use a connection per calling thread
 * (thread-local, opened on first use); WAL lets them read while the writer
 * writes.
 *
 * Durability (enum store_fsync):
 *  - always: synchronous=FULL; COMMIT fsyncs the WAL before any waiter wakes,
 *    so an acknowledged write survives power loss.
 *  - batch:  synchronous=NORMAL; the WAL is written at COMMIT (so a crash of
 *    quernd loses nothing acknowledged) and fsynced by a checkpoint at most
 *    every second (power loss may lose the last second).
 *  - off:    synchronous=OFF; for tests and throwaway data.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store.h"
#include "log.h"
#include "jdump.h"
#include "jload.h"
#include "sqlite_vfs.h"
#include "util.h"

#define MAX_BATCH 512
/* The WAL is checkpointed and started over from its beginning once it holds
 * WAL_KICK_FRAMES frames (the commit that crosses it wakes the checkpointer)
 * or each second: a short WAL is rewritten in pages the kernel already has
 * cached, instead of growing by ~90 KB per commit into new pages (200 MB a
 * second under a single-create load), and readers find fewer frames. */
/* the run states retention may prune */
#define FINISHED "('completed','failed','timed_out','denied','canceled')"
#define WAL_KICK_FRAMES 4096      /* 16 MiB of 4 KiB pages */
#define STMT_CACHE 128
#define FIXED_CACHE 64
#define PATCH_CACHE 32

/* A patch's statement (sq_patch), built once per shape: the kind, the
 * if_field and the fields' names, in order, as patch_key writes them. */
struct patch_sql {
    char *key;
    uint64_t hash;     /* of key */
    char *sql;         /* lives as long as the connection (stmt_fixed) */
    uint64_t indexed;  /* bit i: the i-th field has an f_ column too */
};

struct conn {
    sqlite3 *db;
    struct {
        const char *sql;  /* the caller's string literal or interned text */
        sqlite3_stmt *st;
    } cache[STMT_CACHE];
    struct {
        const char *sql;  /* a text that outlives the connection (stmt_fixed) */
        sqlite3_stmt *st; /* one of cache[]'s statements */
    } fixed[FIXED_CACHE];
    struct patch_sql patches[PATCH_CACHE];
    size_t npatches;
    struct conn *next;    /* all read connections, for closing */
    bool busy;            /* a read transaction is open on it */
    struct conn *nested;  /* the thread's next reader, for a read inside this one's */
};

struct hook {
    store_hook fn;
    void *arg;
};

struct job {
    store_fn fn;
    void *arg;
    int rc;
    bool done;
    bool ok;                    /* committed: its hooks are told true */
    bool committed;             /* its write group has run (rc is final) */
    bool early;                 /* store_write_begin: the caller returns once committed */
    bool away;                  /* ... and has: no thread waits on cond until it comes back */
    pthread_cond_t cond;        /* its thread waits here (see sq_write) */
    struct hook *hooks;
    size_t nhooks, caphooks;
    struct job *next;
};

struct sqlite_store {
    struct store_base base;
    char *path;
    enum store_fsync fsync;
    struct conn *wconn;
    pthread_mutex_t mu;
    pthread_cond_t cond_done;   /* sq_close waits here for the queues to drain */
    struct job *head, *tail;    /* queued jobs, not yet taken by a leader */
    bool writing;               /* a leader is running a batch */
    bool committing;            /* run_batch's COMMIT is running (commit_hook) */
    struct job *uhead, *utail;  /* committed jobs waiting for their fsync and hooks */
    bool syncing;               /* a thread is syncing the WAL and running hooks */
    int wal_fd;                 /* the WAL, for fdatasync (-1 until first needed) */
    bool stopping;
    pthread_key_t rkey;
    struct conn *readers;       /* guarded by mu */
    pthread_t checkpointer;     /* see checkpointer_main */
    pthread_cond_t cond_stop;
    bool ckpt_stop;
    bool ckpt_kick;             /* a commit found the WAL long (atomic) */
    char node_id[ID_LEN];
};

/* Hot fields: the top-level fields of a task that every change of its runs
 * rewrites (store_patch from run.c).  Besides their copy inside doc, they are
 * kept in columns h_<field> holding the value's JSON text; a column that is
 * not NULL wins over doc's copy.  A patch of hot fields only is then a plain
 * column UPDATE instead of json_set parsing and re-serialising the whole
 * document (22 % of quernd's instructions for create + lease + report, see
 * BENCHMARKS.md).  Reads overlay the columns; dumps merge them into doc, so
 * nothing outside this file sees them.  Append only (schema v2 adds them). */
static const char *const task_hot[] = {"status",      "progress",      "updated_at",
                                       "last_run_at", "latest_run_id", "run_count", NULL};
/* a run's completed_at has a column for the retention pruner's index (v6) */
static const char *const run_hot[] = {"completed_at", NULL};
static const char *const no_hot[] = {NULL};

static const char *const *hot_fields(enum store_kind kind)
{
    return kind == SK_TASK ? task_hot : kind == SK_RUN ? run_hot : no_hot;
}

static bool is_hot(enum store_kind kind, const char *field)
{
    for (const char *const *f = hot_fields(kind); *f; f++)
        if (!strcmp(*f, field))
            return true;
    return false;
}

/* The statements of each kind's documents, built once (building and hashing
 * them per call showed up as 5 % vsnprintf in the profile). */
struct kind_sql {
    char *insert, *update, *get, *get_any, *cols;
};
static struct kind_sql ksql[SK__COUNT];
static pthread_once_t ksql_once = PTHREAD_ONCE_INIT;

static void ksql_build(void)
{
    for (int k = 0; k < SK__COUNT; k++) {
        const char *t = store_kind_name((enum store_kind)k);
        const char *const *fields = store_kind_fields((enum store_kind)k);
        const char *const *hot = hot_fields((enum store_kind)k);
        struct buf ins, vals, upd, cols;
        buf_init(&ins);
        buf_init(&vals);
        buf_init(&upd);
        buf_init(&cols);
        buf_printf(&ins, "INSERT INTO %s(doc, project_id, id", t);
        buf_puts(&vals, ") VALUES(?1, ?2, ?3");
        buf_printf(&upd, "UPDATE %s SET doc=?1", t);
        buf_puts(&cols, "doc");
        int p = 4;
        for (const char *const *f = fields; *f; f++, p++) {
            buf_printf(&ins, ", f_%s", *f);
            buf_printf(&vals, ", ?%d", p);
            /* an UPDATE that names a column rewrites the entries of every
             * index on it, changed or not: the fixed ones are left out */
            if (!store_field_immutable((enum store_kind)k, *f))
                buf_printf(&upd, ", f_%s=?%d", *f, p);
        }
        for (const char *const *f = hot; *f; f++, p++) {
            buf_printf(&ins, ", h_%s", *f);
            buf_printf(&vals, ", ?%d", p);
            buf_printf(&upd, ", h_%s=?%d", *f, p);
            buf_printf(&cols, ", h_%s", *f);
        }
        if (k == SK_TASK) {   /* the name q reads (v11), after the hot fields' parameters */
            buf_printf(&ins, ", q_name");
            buf_printf(&vals, ", ?%d", p);
            buf_printf(&upd, ", q_name=?%d", p);
        }
        buf_puts(&vals, ")");
        buf_puts(&upd, " WHERE project_id=?2 AND id=?3");
        buf_puts(&ins, vals.data);
        buf_release(&vals);
        ksql[k].insert = buf_steal(&ins);
        ksql[k].update = buf_steal(&upd);
        ksql[k].get = xasprintf("SELECT %s FROM %s WHERE project_id=?1 AND id=?2", cols.data, t);
        ksql[k].get_any = xasprintf("SELECT %s FROM %s WHERE id=?2 LIMIT 1", cols.data, t);
        ksql[k].cols = buf_steal(&cols);
    }
}

struct sqlite_tx {
    struct store_tx_base base;
    struct sqlite_store *st;
    struct conn *c;
    struct job *job;            /* NULL for a read tx */
    int err;                    /* a read failed (step_read): the tx fails with it */
};

#define SQ(st) ((struct sqlite_store *)(st))
#define TX(tx) ((struct sqlite_tx *)(tx))

/* sqlite3_step for a read whose answer the API passes on (a get, a log or
 * event page, a count).  A step that fails (an I/O error, a corrupt page)
 * is not "no row" or "no more rows": it marks the transaction failed, and
 * sq_read / run_batch return -EIO whatever the caller's fn made of the
 * short answer, so a read error is a 5xx, never a 404 or a short page. */
static int step_read(struct sqlite_tx *tx, sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE && !tx->err)
        tx->err = -EIO;
    return rc;
}

static sqlite3_stmt *stmt(struct conn *c, const char *sql)
{
    /* the hash reads the length and both ends only: a document INSERT is
     * ~300 bytes, and hashing all of it on every call cost more than the
     * strcmp that settles a match (statements that differ only in the
     * middle share a probe sequence, nothing worse) */
    size_t len = strlen(sql), h = 5381 + len;
    size_t head = len < 48 ? len : 48;
    for (size_t i = 0; i < head; i++)
        h = h * 33 + (unsigned char)sql[i];
    for (size_t i = len > 96 ? len - 48 : head; i < len; i++)
        h = h * 33 + (unsigned char)sql[i];
    for (size_t i = 0; i < STMT_CACHE; i++) {
        size_t k = (h + i) % STMT_CACHE;
        if (c->cache[k].sql && !strcmp(c->cache[k].sql, sql)) {
            sqlite3_reset(c->cache[k].st);
            sqlite3_clear_bindings(c->cache[k].st);
            return c->cache[k].st;
        }
        if (!c->cache[k].sql) {
            sqlite3_stmt *s = NULL;
            if (sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, NULL) != SQLITE_OK) {
                log_write(LOG_ERROR, "store", json_pack("{s:s}", "sql", sql),
                          "sqlite prepare failed: %s", sqlite3_errmsg(c->db));
                return NULL;
            }
            c->cache[k].sql = xstrdup(sql);
            c->cache[k].st = s;
            return s;
        }
    }
    /* Cache full (dynamic list queries): prepare a one-off statement that the
     * caller must finalize; signalled by returning it outside the cache.  To
     * keep callers simple we instead evict slot h. */
    size_t k = h % STMT_CACHE;
    for (size_t i = 0; i < FIXED_CACHE; i++) {
        if (c->fixed[i].st == c->cache[k].st) {   /* finalized below */
            c->fixed[i].sql = NULL;
            c->fixed[i].st = NULL;
        }
    }
    sqlite3_finalize(c->cache[k].st);
    free((char *)c->cache[k].sql);
    c->cache[k].sql = NULL;
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, NULL) != SQLITE_OK)
        return NULL;
    c->cache[k].sql = xstrdup(sql);
    c->cache[k].st = s;
    return s;
}

/* stmt() for a text that lives at least as long as c: a string literal, one
 * of ksql's statements or c's patches[], never a buffer that is freed or
 * rewritten while c is open.  Its
 * address names it, so the statements every request runs (BEGIN, COMMIT, a
 * document's INSERT, UPDATE or SELECT, an event's INSERT) are found without
 * hashing and comparing their text (~500 instructions a call). */
static sqlite3_stmt *stmt_fixed(struct conn *c, const char *sql)
{
    size_t k = (size_t)(((uint64_t)(uintptr_t)sql * 0x9E3779B97F4A7C15ULL) >> 58) % FIXED_CACHE;
    if (c->fixed[k].sql == sql) {
        sqlite3_reset(c->fixed[k].st);
        sqlite3_clear_bindings(c->fixed[k].st);
        return c->fixed[k].st;
    }
    sqlite3_stmt *s = stmt(c, sql);
    if (s) {
        c->fixed[k].sql = sql;
        c->fixed[k].st = s;
    }
    return s;
}

static void conn_free(struct conn *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < STMT_CACHE; i++) {
        if (c->cache[i].sql) {
            sqlite3_finalize(c->cache[i].st);
            free((char *)c->cache[i].sql);
        }
    }
    for (size_t i = 0; i < c->npatches; i++) {
        free(c->patches[i].key);
        free(c->patches[i].sql);
    }
    sqlite3_close(c->db);
    free(c);
}

static int exec_sql(struct conn *c, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(c->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        log_write(LOG_ERROR, "store", json_pack("{s:s}", "sql", sql), "sqlite: %s", msg ? msg : "?");
        sqlite3_free(msg);
        return -EIO;
    }
    return 0;
}

static struct conn *conn_open(struct sqlite_store *st, bool write, char **err)
{
    struct conn *c = xcalloc(1, sizeof *c);
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(st->path, &c->db, flags, sqlite_vfs_name()) != SQLITE_OK) {
        if (err)
            *err = xasprintf("cannot open %s: %s", st->path, sqlite3_errmsg(c->db));
        conn_free(c);
        return NULL;
    }
    sqlite3_busy_timeout(c->db, 10000);
    /* --fsync always syncs the WAL itself, after the write lock is released
     * (sync_wal); SQLite's NORMAL keeps the file consistent */
    const char *sync = st->fsync == STORE_FSYNC_OFF ? "PRAGMA synchronous=OFF"
                                                    : "PRAGMA synchronous=NORMAL";
    if (exec_sql(c, "PRAGMA journal_mode=WAL") || exec_sql(c, sync) ||
        exec_sql(c, "PRAGMA foreign_keys=OFF") ||
        /* page cache: 32 MiB for the writer, 8 MiB per reader thread */
        exec_sql(c, write ? "PRAGMA cache_size=-32768" : "PRAGMA cache_size=-8192") ||
        /* savepoint sub-journals in memory, not a temp file per commit */
        exec_sql(c, "PRAGMA temp_store=MEMORY") ||
        /* checkpoints run on their own thread (checkpointer_main), never
         * inside a commit */
        (write && exec_sql(c, "PRAGMA wal_autocheckpoint=0")) ||
        /* a WAL that grew during a burst shrinks back when it starts over */
        (write && exec_sql(c, "PRAGMA journal_size_limit=16777216"))) {
        if (err)
            *err = xasprintf("cannot configure %s", st->path);
        conn_free(c);
        return NULL;
    }
    return c;
}

/* ---- migrations ---- */

static char *schema_v1(void)
{
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);\n");
    for (int k = 0; k < SK__COUNT; k++) {
        const char *t = store_kind_name((enum store_kind)k);
        buf_printf(&b, "CREATE TABLE %s(seq INTEGER PRIMARY KEY, project_id TEXT NOT NULL, "
                       "id TEXT NOT NULL, doc TEXT NOT NULL", t);
        for (const char *const *f = store_kind_fields((enum store_kind)k); *f; f++)
            buf_printf(&b, ", f_%s TEXT", *f);
        buf_printf(&b, ", UNIQUE(project_id, id));\n");
        buf_printf(&b, "CREATE INDEX %s_id ON %s(id);\n", t, t);
        for (const char *const *f = store_kind_fields((enum store_kind)k); *f; f++)
            buf_printf(&b, "CREATE INDEX %s_%s ON %s(project_id, f_%s, seq);\n", t, *f, t, *f);
    }
    buf_puts(&b,
             "CREATE TABLE logs(run_id TEXT NOT NULL, seq INTEGER NOT NULL, project_id TEXT NOT NULL,"
             " entry TEXT NOT NULL, PRIMARY KEY(run_id, seq)) WITHOUT ROWID;\n"
             "CREATE TABLE events(id INTEGER PRIMARY KEY AUTOINCREMENT, project_id TEXT NOT NULL,"
             " run_id TEXT, type TEXT NOT NULL, created_at INTEGER NOT NULL, doc TEXT NOT NULL);\n"
             "CREATE INDEX events_run ON events(run_id, id);\n"
             "CREATE INDEX events_project ON events(project_id, id);\n"
             "CREATE TABLE idempotency(scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT,"
             " status INTEGER NOT NULL, body TEXT NOT NULL, created_at INTEGER NOT NULL,"
             " PRIMARY KEY(scope, key)) WITHOUT ROWID;\n");
    return buf_steal(&b);
}

/* v2: the hot-field columns (see hot_fields), and partial indexes for the
 * fields most tasks and runs leave null: an index entry per row costs a B-tree
 * insert on every write, and `f = ?` implies `f IS NOT NULL`, so filters
 * still use them. */
static char *schema_v2(void)
{
    struct buf b;
    buf_init(&b);
    /* the task columns only: later columns come with their own version */
    for (const char *const *f = task_hot; *f; f++)
        buf_printf(&b, "ALTER TABLE tasks ADD COLUMN h_%s TEXT;\n", *f);
    static const char *const sparse[][2] = {{"tasks", "parent_id"},
                                            {"tasks", "assigned_agent_id"},
                                            {"tasks", "definition_id"},
                                            {"runs", "definition_id"}};
    for (size_t i = 0; i < sizeof sparse / sizeof *sparse; i++)
        buf_printf(&b,
                   "DROP INDEX %1$s_%2$s;\n"
                   "CREATE INDEX %1$s_%2$s ON %1$s(project_id, f_%2$s, seq) WHERE f_%2$s IS NOT NULL;\n",
                   sparse[i][0], sparse[i][1]);
    return buf_steal(&b);
}

/* v3: the scheduler's two flags (tasks with a schedule, tasks with
 * dependencies) indexed only where true, the one value it looks for: every
 * other task skipped two index entries per write.  where_clause writes
 * these comparisons with the literal so the planner can use the index. */
static char *schema_v3(void)
{
    struct buf b;
    buf_init(&b);
    static const char *const flags[] = {"scheduled", "has_dependencies"};
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++)
        buf_printf(&b,
                   "DROP INDEX tasks_%1$s;\n"
                   "CREATE INDEX tasks_%1$s ON tasks(project_id, f_%1$s, seq) WHERE f_%1$s = 'true';\n",
                   flags[i]);
    return buf_steal(&b);
}

/* v4: pending webhook deliveries are listed across projects (the
 * dispatcher's reload and rescan): an index that does not start with the
 * project, so that list never reads the delivered history. */
static char *schema_v4(void)
{
    return xstrdup("CREATE INDEX deliveries_status_any ON deliveries(f_status, seq);\n");
}

/* v5: tasks are read by (project_id, id) only (the UNIQUE index), never by
 * id alone (runs are: the runner and the scheduler know a run's id only),
 * so the index on tasks(id) cost a B-tree insert and a dirty page per
 * create for nothing. */
static char *schema_v5(void)
{
    return xstrdup("DROP INDEX tasks_id;\n");
}

/* v6: the retention pruner looks for finished runs by completion time; it
 * used to walk the whole runs table (json_extract on every row) inside the
 * write transaction, holding every writer back for seconds at 1 000 000
 * runs.  A run's completed_at gets a hot column (JSON text, like the task's)
 * and a partial index over the runs that have one (a JSON string starts with
 * '"', which sorts before '#'; null is "null").  The index's condition must
 * be that cheap: with `f_status IN (...)` (or an index on json_extract of the
 * document) every UPDATE of a run cost ~70 k instructions more, since SQLite
 * evaluates the condition on the old and the new row, building the IN list
 * each time. */
static char *schema_v6(void)
{
    return xstrdup("ALTER TABLE runs ADD COLUMN h_completed_at TEXT;\n"
                   "UPDATE runs SET h_completed_at = json_quote(json_extract(doc, '$.completed_at'))"
                   " WHERE f_status IN " FINISHED ";\n"
                   "CREATE INDEX runs_finished ON runs(h_completed_at) WHERE h_completed_at < '#';\n");
}

/* v7: fewer B-trees written per create and per event (each is a B-tree
 * insert and a dirty page in the commit: ~20 pages per single create).
 *  - runs: ids are random (id_new), so one UNIQUE index on id serves the
 *    lookups by id alone (runner, scheduler) and by (project_id, id), where
 *    the table had both UNIQUE(project_id, id) and an index on id.  SQLite
 *    cannot drop a table's UNIQUE constraint: the table is rebuilt.  The
 *    column list is the runs table as of v6 (later fields come with their
 *    own ALTER TABLE).
 *  - events: no AUTOINCREMENT, whose sqlite_sequence row was rewritten on
 *    every event.  Ids still never go back: a new id is max(id) + 1 and the
 *    pruner never deletes the newest event (sq_prune); a floor row in no
 *    project (project_id '', invisible to every event query, which names a
 *    project) carries the old sequence when every event had been pruned.
 *  - events_run holds only run events: a task event (run_id NULL) wrote an
 *    entry no query reads (`run_id = ?` implies NOT NULL).
 *  - tasks_type and tasks_priority leave out the tasks with the usual value
 *    (usual_values): nearly every task had an entry in each.  A filter on
 *    another value gets the index's condition written beside it
 *    (where_clause), so the planner can prove the index covers it; a filter
 *    on the usual value reads the project's tasks newest first, most of
 *    which match. */
static char *schema_v7(void)
{
    return xstrdup(
        "CREATE TABLE runs_v7(seq INTEGER PRIMARY KEY, project_id TEXT NOT NULL, id TEXT NOT NULL,"
        " doc TEXT NOT NULL, f_task_id TEXT, f_status TEXT, f_definition_id TEXT,"
        " h_completed_at TEXT);\n"
        "INSERT INTO runs_v7 SELECT seq, project_id, id, doc, f_task_id, f_status, f_definition_id,"
        " h_completed_at FROM runs;\n"
        "DROP TABLE runs;\n"
        "ALTER TABLE runs_v7 RENAME TO runs;\n"
        "CREATE UNIQUE INDEX runs_id ON runs(id);\n"
        "CREATE INDEX runs_task_id ON runs(project_id, f_task_id, seq);\n"
        "CREATE INDEX runs_status ON runs(project_id, f_status, seq);\n"
        "CREATE INDEX runs_definition_id ON runs(project_id, f_definition_id, seq)"
        " WHERE f_definition_id IS NOT NULL;\n"
        "CREATE INDEX runs_finished ON runs(h_completed_at) WHERE h_completed_at < '#';\n"
        "CREATE TABLE events_v7(id INTEGER PRIMARY KEY, project_id TEXT NOT NULL, run_id TEXT,"
        " type TEXT NOT NULL, created_at INTEGER NOT NULL, doc TEXT NOT NULL);\n"
        "INSERT INTO events_v7 SELECT id, project_id, run_id, type, created_at, doc FROM events;\n"
        "INSERT INTO events_v7(id, project_id, run_id, type, created_at, doc)"
        " SELECT seq, '', NULL, 'quern.id_floor', 0, '{}' FROM sqlite_sequence"
        " WHERE name = 'events' AND seq > (SELECT coalesce(max(id), 0) FROM events);\n"
        "DROP TABLE events;\n"
        "ALTER TABLE events_v7 RENAME TO events;\n"
        "CREATE INDEX events_run ON events(run_id, id) WHERE run_id IS NOT NULL;\n"
        "CREATE INDEX events_project ON events(project_id, id);\n"
        "DROP INDEX tasks_type;\n"
        "CREATE INDEX tasks_type ON tasks(project_id, f_type, seq) WHERE f_type != 'manual';\n"
        "DROP INDEX tasks_priority;\n"
        "CREATE INDEX tasks_priority ON tasks(project_id, f_priority, seq)"
        " WHERE f_priority != 'medium';\n");
}

/* v8: which runs name which artifact blobs (artifacts[].sha256), so the
 * retention pass can delete the blob files no run names any more (blob.c's
 * sweep asks store_blob_referenced); PostgreSQL has kept this table since
 * its shared blobs.  Filled from the runs that have artifacts. */
static char *schema_v8(void)
{
    return xstrdup("CREATE TABLE blob_refs(sha TEXT NOT NULL, project_id TEXT NOT NULL,"
                   " run_id TEXT NOT NULL, PRIMARY KEY(sha, project_id, run_id)) WITHOUT ROWID;\n"
                   "CREATE INDEX blob_refs_run ON blob_refs(project_id, run_id);\n"
                   "INSERT OR IGNORE INTO blob_refs(sha, project_id, run_id)"
                   " SELECT json_extract(a.value, '$.sha256'), r.project_id, r.id"
                   " FROM runs r, json_each(r.doc, '$.artifacts') a"
                   " WHERE json_extract(a.value, '$.sha256') IS NOT NULL;\n");
}

/* v9: the task and run lists, newest first, unfiltered (the dashboard's and
 * the API's default view) read the project's rows through an index in their
 * order, instead of sorting every row of the project for each page (0.5 s a
 * page at 300 000 runs, seconds for a deep offset).  Only inserts pay: a
 * document's update changes neither column. */
static char *schema_v9(void)
{
    return xstrdup("CREATE INDEX tasks_project ON tasks(project_id, seq);\n"
                   "CREATE INDEX runs_project ON runs(project_id, seq);\n");
}

/* v10: no table changes: it keeps an older quernd off a store this one has
 * written.  Idempotency records may now be pending (STORE_IDEM_PENDING:
 * status 0, no body; a crash between a request's work and its answer
 * leaves one), which a quernd of schema 9 replays as an answer of status 0
 * (it closes the connection without one).  Schema 9's quernd refuses 10
 * ("database schema version 10 is newer than this quernd (9)"), as it
 * refuses a PostgreSQL store past its own migrations. */
static char *schema_v10(void)
{
    return xstrdup("SELECT 1;\n");
}

/* The rows of task_meta (store.h) for the tasks t that cond selects (the
 * migration's; quernd's writes use meta_note): one per metadata key whose
 * value a metadata filter can match, that value computed by the filter's
 * own expression (where_clause), so an indexed list answers what the scan
 * answers.  Keys holding '"' are left out (store_meta_indexable sends their
 * filters to the scan). */
#define META_ROWS(cond)                                                                      \
    " SELECT project_id, k, v, seq FROM (SELECT t.project_id, j.key AS k, t.seq,"           \
    " CASE json_type(t.doc, '$.metadata.\"' || j.key || '\"')"                              \
    " WHEN 'text' THEN json_extract(t.doc, '$.metadata.\"' || j.key || '\"')"               \
    " WHEN 'null' THEN NULL ELSE t.doc -> ('$.metadata.\"' || j.key || '\"') END AS v"     \
    " FROM tasks t, json_each(t.doc, '$.metadata') j WHERE " cond                            \
    " AND instr(j.key, '\"') = 0)"                                                          \
    " WHERE v IS NOT NULL AND length(CAST(v AS BLOB)) <= 512"

/* v11: the task metadata index (store.h, task_meta), filled from the
 * tasks' metadata.  Tasks without metadata have no row: they pay nothing
 * on create.  And a copy of each task's name (a string; else NULL) in a
 * column, q_name, that `q` reads without parsing the document (no index:
 * it costs a create one bound value; a search still reads every task of
 * the project, 3-5 times faster than parsing each document). */
static char *schema_v11(void)
{
    return xstrdup("ALTER TABLE tasks ADD COLUMN q_name TEXT;\n"
                   "UPDATE tasks SET q_name = CASE json_type(doc, '$.name') WHEN 'text'"
                   " THEN json_extract(doc, '$.name') END;\n"
                   "CREATE TABLE task_meta(m_project TEXT NOT NULL, m_key TEXT NOT NULL,"
                   " m_value TEXT NOT NULL, m_seq INTEGER NOT NULL,"
                   " PRIMARY KEY(m_project, m_key, m_value, m_seq)) WITHOUT ROWID;\n"
                   "CREATE INDEX task_meta_seq ON task_meta(m_seq);\n"
                   "INSERT OR IGNORE INTO task_meta(m_project, m_key, m_value, m_seq)"
                   META_ROWS("json_type(t.doc, '$.metadata') = 'object'") ";\n");
}

/* Migrations are applied in order; PRAGMA user_version records the last one
 * applied, in the same transaction as the migration itself. */
static int migrate(struct conn *c, char **err)
{
    sqlite3_stmt *s = stmt(c, "PRAGMA user_version");
    if (!s || sqlite3_step(s) != SQLITE_ROW) {
        *err = xstrdup("cannot read schema version");
        return -EIO;
    }
    int version = sqlite3_column_int(s, 0);
    sqlite3_reset(s);
    const int latest = 11;
    if (version > latest) {
        *err = xasprintf("database schema version %d is newer than this quernd (%d)", version,
                         latest);
        return -EINVAL;
    }
    for (int v = version + 1; v <= latest; v++) {
        char *sql = NULL;
        if (v == 1)
            sql = schema_v1();
        else if (v == 2)
            sql = schema_v2();
        else if (v == 3)
            sql = schema_v3();
        else if (v == 4)
            sql = schema_v4();
        else if (v == 5)
            sql = schema_v5();
        else if (v == 6)
            sql = schema_v6();
        else if (v == 7)
            sql = schema_v7();
        else if (v == 8)
            sql = schema_v8();
        else if (v == 9)
            sql = schema_v9();
        else if (v == 10)
            sql = schema_v10();
        else if (v == 11)
            sql = schema_v11();
        char *ver = xasprintf("PRAGMA user_version=%d", v);
        int rc = exec_sql(c, "BEGIN IMMEDIATE");
        if (!rc)
            rc = exec_sql(c, sql);
        if (!rc)
            rc = exec_sql(c, ver);
        if (!rc)
            rc = exec_sql(c, "COMMIT");
        else
            exec_sql(c, "ROLLBACK");
        free(sql);
        free(ver);
        if (rc) {
            *err = xasprintf("migration %d failed", v);
            return rc;
        }
    }
    return 0;
}

/* ---- the writer ---- */

/* One statement of the transaction's frame, prepared once (sqlite3_exec
 * would parse it again on every commit). */
static int frame_sql(struct conn *c, const char *sql)
{
    sqlite3_stmt *s = stmt_fixed(c, sql);   /* callers pass literals */
    int rc = s ? sqlite3_step(s) : SQLITE_ERROR;
    if (s)
        sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        log_write(LOG_ERROR, "store", json_pack("{s:s}", "sql", sql), "sqlite: %s",
                  sqlite3_errmsg(c->db));
        return (rc & 0xff) == SQLITE_FULL ? -ENOSPC : -EIO;
    }
    return 0;
}

/* sqlite3_commit_hook of the write connection: a commit other than
 * run_batch's own COMMIT is turned into a rollback.  After SQLite rolled a
 * batch's transaction back by itself (see run_batch), a statement would run
 * in autocommit mode and a "RELEASE job" would commit the transaction its
 * "SAVEPOINT job" began: writes committed behind the batch's back, under a
 * failure it reports. */
static int commit_hook(void *arg)
{
    struct sqlite_store *st = arg;
    return st->committing ? 0 : 1;
}

/* Runs a write group in one transaction (the leader's thread, mu not held).
 * An I/O error, a full disk or a failed allocation inside any job can make
 * SQLite roll the whole transaction back on its own, savepoints and all
 * (sqlite3_get_autocommit turns true): then no job of the batch commits,
 * each is answered -EIO (-ENOSPC for a full disk) and the jobs not yet run
 * are not run.  So is a savepoint that cannot be set, rolled back or
 * released: the batch is rolled back whole rather than commit a job's half. */
static void run_batch(struct sqlite_store *st, struct job *batch)
{
    struct conn *c = st->wconn;
    /* a lone job needs no savepoint: its failure rolls the transaction back */
    bool alone = !batch->next;
    int rc = frame_sql(c, "BEGIN IMMEDIATE");
    for (struct job *j = batch; j; j = j->next) {
        if (rc) {
            j->rc = -EIO;
            continue;
        }
        struct sqlite_tx tx = {{&store_sqlite_backend}, st, c, j, 0};
        if (!alone && (rc = frame_sql(c, "SAVEPOINT job")) != 0) {
            j->rc = rc;
            continue;
        }
        j->rc = j->fn((struct store_tx *)&tx, j->arg);
        if (tx.err)
            j->rc = tx.err;   /* what fn did after a failed read is rolled back */
        if (j->rc == -EIO && sqlite3_errcode(c->db) == SQLITE_FULL)
            j->rc = -ENOSPC;   /* the disk is full: say so (api_store_error) */
        if (sqlite3_get_autocommit(c->db)) {
            /* SQLite rolled the transaction back itself: nothing of the
             * batch is left, whatever fn returned */
            rc = j->rc == -ENOSPC || sqlite3_errcode(c->db) == SQLITE_FULL ? -ENOSPC : -EIO;
            j->rc = rc;
        } else if (j->rc) {
            rc = frame_sql(c, alone ? "ROLLBACK" : "ROLLBACK TO job");
        }
        if (j->rc) {
            for (size_t i = 0; i < j->nhooks; i++)   /* invariant 3 */
                j->hooks[i].fn(j->hooks[i].arg, false);
            j->nhooks = 0;
            if (alone && !rc) {
                /* rolled back, nothing left to commit; hooks were told */
                return;
            }
        }
        if (!rc && !alone)
            rc = frame_sql(c, "RELEASE job");
    }
    if (!rc) {
        st->committing = true;
        rc = frame_sql(c, "COMMIT");
        st->committing = false;
    }
    if (rc && !sqlite3_get_autocommit(c->db))
        frame_sql(c, "ROLLBACK");
    /* the hooks run once the commit is durable (finish_synced) */
    for (struct job *j = batch; j; j = j->next) {
        if (rc)
            j->rc = rc == -ENOSPC ? -ENOSPC : -EIO;
        j->ok = rc == 0;
    }
}

/* fdatasync of the WAL, for --fsync always.  SQLite's own sync at COMMIT
 * (synchronous=FULL) would hold the write lock across it, so the next
 * group could not start writing until the disk answered; the writer runs
 * with synchronous=NORMAL instead and the sync happens here, after the lock
 * is released: one sync covers every commit written before it started (the
 * WAL is appended in order).  NORMAL keeps the database consistent after a
 * power loss (SQLite's guarantee); this sync makes each acknowledged commit
 * survive it.  A failed fsync leaves the page cache's state unknown, so the
 * process stops (as PostgreSQL does) and recovery starts from the disk. */
static void sync_wal(struct sqlite_store *st)
{
    if (st->wal_fd < 0) {
        char *wal = xasprintf("%s-wal", st->path);
        st->wal_fd = open(wal, O_RDONLY | O_CLOEXEC);
        if (st->wal_fd < 0) {
            log_write(LOG_ERROR, "store", NULL, "cannot open %s for fsync: %s", wal,
                      strerror(errno));
            free(wal);
            abort();
        }
        free(wal);
    }
    if (fdatasync(st->wal_fd) != 0) {
        log_write(LOG_ERROR, "store", NULL, "fdatasync of the WAL failed: %s; stopping",
                  strerror(errno));
        abort();
    }
}

/* Invariant 3: hooks after the commit (and its fsync), in commit order. */
static void finish_synced(struct job *list)
{
    for (struct job *j = list; j; j = j->next) {
        for (size_t i = 0; i < j->nhooks; i++)
            j->hooks[i].fn(j->hooks[i].arg, j->ok);
        j->nhooks = 0;
    }
}

/* Checkpoints copy the WAL into the database file, once a second, on a
 * connection of their own: a PASSIVE checkpoint never blocks writers or
 * readers, so no commit ever waits for one (they used to run inline, in the
 * commit that crossed a size or time mark: the p99 of every request).  It
 * also keeps the promise of --fsync batch: the checkpoint fsyncs the WAL, so
 * at most about a second of acknowledged writes is exposed to power loss. */
static void *checkpointer_main(void *arg)
{
    struct sqlite_store *st = arg;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(st->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                        sqlite_vfs_name()) !=
        SQLITE_OK) {
        log_write(LOG_ERROR, "store", NULL, "the checkpoint connection failed: %s",
                  sqlite3_errmsg(db));
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 1000);
    pthread_mutex_lock(&st->mu);
    while (!st->ckpt_stop) {
        if (!__atomic_load_n(&st->ckpt_kick, __ATOMIC_RELAXED)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&st->cond_stop, &st->mu, &ts);
        }
        if (st->ckpt_stop)
            break;
        pthread_mutex_unlock(&st->mu);
        /* the pragma first: on a connection that has not read yet, the C
         * call finds no WAL open and does nothing */
        sqlite3_exec(db, "PRAGMA wal_checkpoint(PASSIVE)", NULL, NULL, NULL);
        int log = 0, done = 0;
        sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
        /* Under a steady write load new frames keep arriving behind each
         * passive checkpoint, so the WAL is never found fully copied and
         * never starts over: past WAL_KICK_FRAMES, a RESTART checkpoint
         * holds writers back for the short tail the passive one left. */
        if (log >= WAL_KICK_FRAMES)
            sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_RESTART, &log, &done);
        __atomic_store_n(&st->ckpt_kick, false, __ATOMIC_RELAXED);
        pthread_mutex_lock(&st->mu);
    }
    pthread_mutex_unlock(&st->mu);
    sqlite3_close(db);
    return NULL;
}

/* sqlite3_wal_hook: after each commit of the write connection, with the
 * number of frames now in the WAL. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    struct sqlite_store *st = arg;
    (void)db, (void)name;
    if (frames >= WAL_KICK_FRAMES && !__atomic_load_n(&st->ckpt_kick, __ATOMIC_RELAXED)) {
        pthread_mutex_lock(&st->mu);
        __atomic_store_n(&st->ckpt_kick, true, __ATOMIC_RELAXED);
        pthread_cond_signal(&st->cond_stop);
        pthread_mutex_unlock(&st->mu);
    }
    return SQLITE_OK;
}

/* Group commit without a writer thread (the leader/follower pattern of
 * LevelDB's write groups): a caller queues its job; when no commit is in
 * progress it becomes the leader, takes every queued job (its own and those
 * queued behind it, up to MAX_BATCH), runs them in one transaction on its own
 * thread, then wakes the followers.  Concurrent writers still share one
 * commit and one fsync, and a lone writer pays no thread hand-off (two
 * context switches per request with a dedicated thread).
 *
 * Two stages, each led by whichever waiting thread finds it free: a write
 * group commits (without syncing) and queues its jobs as committed; a sync
 * group takes every committed job, syncs the WAL once (--fsync always),
 * runs their hooks in commit order and releases them.  So the next group
 * writes while the previous one waits for the disk. */
/* Wakes a waiting thread for each stage that is free and has work: the
 * thread of the first queued job leads the next write group, the thread of
 * the first committed job the next sync group (mu held).  Each thread waits
 * on its own job's condition, so a stage wakes only the threads it concerns
 * (a broadcast woke every waiter twice per group). */
static void kick(struct sqlite_store *st, const struct job *self)
{
    if (!st->writing && st->head && st->head != self)
        pthread_cond_signal(&st->head->cond);
    if (!st->syncing) {
        /* the first committed job whose thread waits: one that went away
         * (store_write_begin) leads nothing until it is back */
        for (struct job *b = st->uhead; b; b = b->next)
            if (!b->away) {
                if (b != self)
                    pthread_cond_signal(&b->cond);
                break;
            }
    }
    if (st->stopping)
        pthread_cond_broadcast(&st->cond_done);
}

/* Leads whichever stage is free and has work, or waits, until j is done (or,
 * for an early job, committed).  mu held. */
static void drive(struct sqlite_store *st, struct job *j)
{
    while (!j->done && !(j->early && j->committed)) {
        if (!st->writing && st->head) {
            st->writing = true;
            struct job *batch = st->head, *last = batch;
            int n = 1;
            while (last->next && n < MAX_BATCH) {
                last = last->next;
                n++;
            }
            st->head = last->next;
            if (!st->head)
                st->tail = NULL;
            last->next = NULL;
            pthread_mutex_unlock(&st->mu);
            run_batch(st, batch);
            pthread_mutex_lock(&st->mu);
            for (struct job *b = batch; b; b = b->next) {
                b->committed = true;
                if (b->early && b != j)
                    pthread_cond_signal(&b->cond);   /* it may go on now */
            }
            if (st->utail)
                st->utail->next = batch;
            else
                st->uhead = batch;
            st->utail = last;
            st->writing = false;
            kick(st, j);
            continue;
        }
        if (!st->syncing && st->uhead) {
            st->syncing = true;
            struct job *list = st->uhead;
            st->uhead = st->utail = NULL;
            pthread_mutex_unlock(&st->mu);
            bool any = false;
            for (struct job *b = list; b; b = b->next)
                any = any || b->ok;
            if (any && st->fsync == STORE_FSYNC_ALWAYS)
                sync_wal(st);
            finish_synced(list);
            pthread_mutex_lock(&st->mu);
            for (struct job *b = list, *next; b; b = next) {
                next = b->next;   /* b may return (and its stack frame go) once done */
                b->done = true;
                if (b != j)
                    pthread_cond_signal(&b->cond);
            }
            st->syncing = false;
            kick(st, j);
            continue;
        }
        pthread_cond_wait(&j->cond, &st->mu);
    }
    if (!j->done)
        j->away = true;   /* early: back in store_write_wait */
    /* a stage may be free with work and no thread awake to lead it */
    kick(st, j);
}

/* Queues j and drives the group commit until it is done (or committed). */
static int submit(struct sqlite_store *st, struct job *j)
{
    pthread_mutex_lock(&st->mu);
    if (st->stopping) {
        pthread_mutex_unlock(&st->mu);
        return -ESHUTDOWN;
    }
    if (st->tail)
        st->tail->next = j;
    else
        st->head = j;
    st->tail = j;
    drive(st, j);
    pthread_mutex_unlock(&st->mu);
    return 0;
}

static int sq_write(struct store *s, store_fn fn, void *arg)
{
    struct sqlite_store *st = SQ(s);
    struct job j = {.fn = fn, .arg = arg, .cond = PTHREAD_COND_INITIALIZER};
    int rc = submit(st, &j);
    pthread_cond_destroy(&j.cond);
    free(j.hooks);
    return rc ? rc : j.rc;
}

/* store_write_begin's ticket is its job, on the heap: it outlives the call. */
static void sq_write_wait(struct store *s, struct store_ticket *t)
{
    struct sqlite_store *st = SQ(s);
    struct job *j = (struct job *)t;
    pthread_mutex_lock(&st->mu);
    j->away = false;
    j->early = false;
    drive(st, j);
    pthread_mutex_unlock(&st->mu);
    pthread_cond_destroy(&j->cond);
    free(j->hooks);
    free(j);
}

static int sq_write_begin(struct store *s, store_fn fn, void *arg, struct store_ticket **t)
{
    struct sqlite_store *st = SQ(s);
    struct job *j = xcalloc(1, sizeof *j);
    *j = (struct job){.fn = fn, .arg = arg, .cond = PTHREAD_COND_INITIALIZER, .early = true};
    int rc = submit(st, j);
    if (rc) {
        pthread_cond_destroy(&j->cond);
        free(j);
        return rc;
    }
    if (j->rc) {
        /* rolled back: nothing to wait for but its turn in the sync stage */
        rc = j->rc;
        sq_write_wait(s, (struct store_ticket *)j);
        return rc;
    }
    *t = (struct store_ticket *)j;
    return 0;
}

static struct conn *open_reader(struct sqlite_store *st)
{
    struct conn *c = conn_open(st, false, NULL);
    if (!c)
        return NULL;
    pthread_mutex_lock(&st->mu);
    c->next = st->readers;
    st->readers = c;
    pthread_mutex_unlock(&st->mu);
    return c;
}

/* The calling thread's read connection that has no transaction open.  A
 * read can start inside another on the same thread (a commit hook that
 * reads, run by a leader that was itself reading): it gets the thread's next
 * connection, so its own snapshot is fresh and the outer one stays intact. */
static struct conn *reader(struct sqlite_store *st)
{
    struct conn *c = pthread_getspecific(st->rkey);
    if (!c) {
        if (!(c = open_reader(st)))
            return NULL;
        pthread_setspecific(st->rkey, c);
    }
    while (c->busy) {
        if (!c->nested && !(c->nested = open_reader(st)))
            return NULL;
        c = c->nested;
    }
    return c;
}

static int sq_read(struct store *s, store_fn fn, void *arg)
{
    struct sqlite_store *st = SQ(s);
    struct conn *c = reader(st);
    if (!c)
        return -EIO;
    struct sqlite_tx tx = {{&store_sqlite_backend}, st, c, NULL, 0};
    sqlite3_stmt *b = stmt(c, "BEGIN");
    sqlite3_step(b);
    c->busy = true;
    int rc = fn((struct store_tx *)&tx, arg);
    c->busy = false;
    if (tx.err)
        rc = tx.err;   /* fn may have taken a failed read for an absent row */
    sqlite3_stmt *e = stmt(c, "COMMIT");
    sqlite3_step(e);
    return rc;
}

static void sq_on_commit(struct store_tx *t, store_hook hook, void *arg)
{
    struct sqlite_tx *tx = TX(t);
    if (!tx->job) {
        hook(arg, true);
        return;
    }
    struct job *j = tx->job;
    if (j->nhooks == j->caphooks) {
        j->caphooks = j->caphooks ? j->caphooks * 2 : 4;
        j->hooks = xrealloc(j->hooks, j->caphooks * sizeof *j->hooks);
    }
    j->hooks[j->nhooks++] = (struct hook){hook, arg};
}

static bool sq_is_write(const struct store_tx *t)
{
    return ((const struct sqlite_tx *)t)->job != NULL;
}

static int sq_ping(struct store *s)
{
    struct conn *c = reader(SQ(s));
    if (!c)
        return -EIO;
    sqlite3_stmt *q = stmt(c, "SELECT 1");
    int rc = q && sqlite3_step(q) == SQLITE_ROW ? 0 : -EIO;
    if (q)
        sqlite3_reset(q);
    return rc;
}

static struct store *sq_open(const char *path, const struct store_opts *opts, char **err)
{
    struct sqlite_store *st = xcalloc(1, sizeof *st);
    st->base.be = &store_sqlite_backend;
    st->path = xstrdup(path);
    st->fsync = opts ? opts->fsync : STORE_FSYNC_ALWAYS;
    st->wal_fd = -1;
    id_new("node", st->node_id);
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cond_done, NULL);
    pthread_key_create(&st->rkey, NULL);
    pthread_cond_init(&st->cond_stop, NULL);
    sqlite3_config(SQLITE_CONFIG_MULTITHREAD);
    /* Debian's SQLite counts every allocation under a global mutex
     * (memory statistics, which quern never reads): off, the writer and
     * the readers stop meeting on that mutex */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    pthread_once(&ksql_once, ksql_build);
    st->wconn = conn_open(st, true, err);
    if (!st->wconn)
        goto fail;
    if (migrate(st->wconn, err))
        goto fail;
    sqlite3_wal_hook(st->wconn->db, wal_hook, st);
    sqlite3_commit_hook(st->wconn->db, commit_hook, st);
    if (pthread_create(&st->checkpointer, NULL, checkpointer_main, st)) {
        *err = xstrdup("cannot start the store's checkpoint thread");
        goto fail;
    }
    return (struct store *)st;
fail:
    conn_free(st->wconn);
    free(st->path);
    free(st);
    return NULL;
}

static int noop_fn(struct store_tx *tx, void *arg)
{
    return 0;
}

static void sq_close(struct store *s)
{
    struct sqlite_store *st = SQ(s);
    /* one more write, led by this thread: every write queued or committed
     * before it is synced too, also one whose store_write_begin caller has
     * not come back to wait yet */
    (void)sq_write(s, noop_fn, NULL);
    pthread_mutex_lock(&st->mu);
    st->stopping = true;   /* new writes fail; queued ones finish */
    while (st->writing || st->head || st->syncing || st->uhead)
        pthread_cond_wait(&st->cond_done, &st->mu);
    st->ckpt_stop = true;
    pthread_cond_signal(&st->cond_stop);
    pthread_mutex_unlock(&st->mu);
    pthread_join(st->checkpointer, NULL);
    sqlite3_wal_checkpoint_v2(st->wconn->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    if (st->wal_fd >= 0)
        close(st->wal_fd);
    conn_free(st->wconn);
    for (struct conn *c = st->readers, *n; c; c = n) {
        n = c->next;
        conn_free(c);
    }
    pthread_key_delete(st->rkey);
    free(st->path);
    free(st);
}

/* ---- documents ---- */

static void bind_text(sqlite3_stmt *s, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, i);
}

/* bind_text without SQLite's copy of v (a malloc and a free per value):
 * only where v outlives every step of s, that is where the caller binds,
 * steps and resets s itself while v is held (the next stmt() or
 * stmt_fixed() clears the bindings before any other step). */
static void bind_held(sqlite3_stmt *s, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, i);
}

static json_t *col_json(sqlite3_stmt *s, int i)
{
    const char *t = (const char *)sqlite3_column_text(s, i);
    int n = sqlite3_column_bytes(s, i);
    if (!t)
        return NULL;
    return jload(t, (size_t)n, 0);
}

/* The document of a row selected with ksql.cols (column 0), its hot columns
 * (1, 2, ...) laid over it.  fields (store_list_fields), when not NULL,
 * keeps only those top-level fields: the others are stepped over, not
 * built. */
static json_t *row_doc(sqlite3_stmt *s, enum store_kind kind, const char *const *fields)
{
    const char *t = (const char *)sqlite3_column_text(s, 0);
    if (!t)
        return NULL;
    size_t n = (size_t)sqlite3_column_bytes(s, 0);
    json_t *doc = fields ? jload_fields(t, n, fields) : jload(t, n, 0);
    if (!doc)
        return NULL;
    int c = 1;
    for (const char *const *f = hot_fields(kind); *f; f++, c++) {
        const char *h = (const char *)sqlite3_column_text(s, c);
        bool want = !fields;
        for (const char *const *w = fields; w && *w && !want; w++)
            want = !strcmp(*w, *f);
        json_t *v = h && want ? jload(h, (size_t)sqlite3_column_bytes(s, c), JSON_DECODE_ANY) : NULL;
        if (v)
            json_object_set_new_nocheck(doc, *f, v);
    }
    return doc;
}

/* Binds doc's hot fields of kind from parameter p on (JSON text, or NULL when
 * absent). */
static void bind_hot(sqlite3_stmt *s, int p, enum store_kind kind, const json_t *doc)
{
    for (const char *const *f = hot_fields(kind); *f; f++, p++) {
        json_t *v = json_object_get(doc, *f);
        if (v)
            sqlite3_bind_text(s, p, jdump(v, NULL), -1, free);
        else
            sqlite3_bind_null(s, p);
    }
}

/* Runs a statement whose parameters ?1.. are bound to text a, b, c (as many as
 * it has); *changes (optional) gets the rows it changed.  0 or -EIO. */
static int exec_text(struct sqlite_tx *tx, const char *sql, const char *a, const char *b,
                     const char *c, int *changes)
{
    sqlite3_stmt *s = stmt(tx->c, sql);
    if (!s)
        return -EIO;
    const char *v[3] = {a, b, c};
    int np = sqlite3_bind_parameter_count(s);
    for (int i = 0; i < np && i < 3; i++)
        bind_text(s, i + 1, v[i]);
    int rc = sqlite3_step(s);
    if (changes)
        *changes = sqlite3_changes(tx->c->db);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : -EIO;
}

/* Records that run (project_id, id) names the blobs its artifacts name
 * (artifacts[].sha256), for blob.c's sweep.  References are only added
 * while the run lives (an artifact replaced under the same name keeps its
 * old blob until the run is pruned, as on PostgreSQL): nothing at all for
 * the many runs without artifacts. */
static int refs_note(struct sqlite_tx *tx, const char *project_id, const char *id,
                     const char *doc_text)
{
    return exec_text(tx, "INSERT OR IGNORE INTO blob_refs(sha, project_id, run_id)"
                         " SELECT json_extract(value, '$.sha256'), ?2, ?3"
                         " FROM json_each(?1, '$.artifacts')"
                         " WHERE json_extract(value, '$.sha256') IS NOT NULL",
                     doc_text, project_id, id, NULL);
}

/* The task metadata index (store.h): meta_forget drops the rows of task
 * (?1 project, ?2 id); meta_note writes them from its metadata object md. */
static const char meta_forget_sql[] =
    "DELETE FROM task_meta WHERE m_seq=(SELECT seq FROM tasks WHERE project_id=?1 AND id=?2)";

static int meta_forget(struct sqlite_tx *tx, const char *project_id, const char *id)
{
    return exec_text(tx, meta_forget_sql, project_id, id, NULL, NULL);
}

/* The text the metadata filter compares for value v (where_clause's
 * expression over the stored document, which jdump wrote): a string's
 * content, true or false, a number or a container as jdump writes it (and
 * so as it stands in the document); NULL for null.  *owned: free it. */
static const char *meta_text(const json_t *v, char **owned)
{
    *owned = NULL;
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_true(v))
        return "true";
    if (json_is_false(v))
        return "false";
    if (!v || json_is_null(v))
        return NULL;
    *owned = jdump(v, NULL);
    return *owned;
}

/* Writes the task's rows: seq is its row's, or -1 to look it up.  A value
 * the filter could not match here (a NUL inside a string) only costs a row:
 * the list checks the filter itself on each task it reads. */
static int meta_note(struct sqlite_tx *tx, const char *project_id, const char *id,
                     const json_t *md, int64_t seq)
{
    if (!json_object_size(md))
        return 0;
    if (seq < 0) {
        sqlite3_stmt *g = stmt_fixed(tx->c, "SELECT seq FROM tasks WHERE project_id=?1 AND id=?2");
        if (!g)
            return -EIO;
        bind_held(g, 1, project_id);
        bind_held(g, 2, id);
        int rc = sqlite3_step(g);
        seq = rc == SQLITE_ROW ? sqlite3_column_int64(g, 0) : -1;
        sqlite3_reset(g);
        if (rc != SQLITE_ROW)
            return rc == SQLITE_DONE ? -ENOENT : -EIO;
    }
    sqlite3_stmt *s = stmt_fixed(tx->c, "INSERT OR IGNORE INTO task_meta(m_project, m_key,"
                                        " m_value, m_seq) VALUES(?1, ?2, ?3, ?4)");
    if (!s)
        return -EIO;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)md, k, v) {
        char *owned;
        const char *text = meta_text(v, &owned);
        if (!text || strchr(k, '"') || strlen(text) > STORE_META_VALUE_MAX) {
            free(owned);
            continue;
        }
        bind_held(s, 1, project_id);
        bind_held(s, 2, k);
        bind_held(s, 3, text);
        sqlite3_bind_int64(s, 4, seq);
        int rc = sqlite3_step(s);
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);   /* text may be freed below */
        free(owned);
        if (rc != SQLITE_DONE)
            return (rc & 0xff) == SQLITE_FULL ? -ENOSPC : -EIO;
    }
    return 0;
}

static bool has_metadata(const json_t *doc)
{
    return json_object_size(json_object_get(doc, "metadata")) > 0;
}

static bool has_artifacts(const json_t *doc)
{
    return json_array_size(json_object_get(doc, "artifacts")) > 0;
}

static int sq_put(struct store_tx *t, enum store_kind kind, const char *project_id,
                  const json_t *doc, bool update)
{
    struct sqlite_tx *tx = TX(t);
    const char *const *fields = store_kind_fields(kind);
    const char *id = json_string_value(json_object_get(doc, "id"));
    if (!id || !project_id)
        return -EINVAL;
    sqlite3_stmt *s = stmt_fixed(tx->c, update ? ksql[kind].update : ksql[kind].insert);
    if (!s)
        return -EIO;
    char *text = jdump(doc, NULL);
    if (!text)
        return -EINVAL;
    bool refs = kind == SK_RUN && has_artifacts(doc);
    /* an update drops the task's metadata rows (the old document's, which
     * is not read) before it writes the new ones */
    if (kind == SK_TASK && update) {
        int frc = meta_forget(tx, project_id, id);
        if (frc) {
            free(text);
            return frc;
        }
    }
    /* the statement frees text after its step; refs_note needs it then */
    sqlite3_bind_text(s, 1, text, -1, refs ? SQLITE_TRANSIENT : free);
    bind_held(s, 2, project_id);
    bind_held(s, 3, id);
    int i = 4;
    for (const char *const *f = fields; *f; f++, i++) {
        if (update && store_field_immutable(kind, *f))
            continue;   /* not in the UPDATE statement (ksql_build) */
        /* a string is bound as doc holds it (store_field_text would copy
         * it: the same text) */
        json_t *fv = json_object_get(doc, *f);
        if (json_is_string(fv)) {
            bind_held(s, i, json_string_value(fv));
            continue;
        }
        char *v = store_field_text(doc, *f);
        if (v)
            sqlite3_bind_text(s, i, v, -1, free);
        else
            sqlite3_bind_null(s, i);
    }
    bind_hot(s, i, kind, doc);
    if (kind == SK_TASK)
        bind_held(s, i + (int)ARRAY_LEN(task_hot) - 1,
                  json_string_value(json_object_get(doc, "name")));
    int rc = sqlite3_step(s);
    int changes = sqlite3_changes(tx->c->db);
    sqlite3_reset(s);
    int err = rc == SQLITE_CONSTRAINT ? -EEXIST
              : rc != SQLITE_DONE     ? -EIO
              : update && !changes    ? -ENOENT
                                      : 0;
    if (refs) {
        if (!err)
            err = refs_note(tx, project_id, id, text);
        free(text);
    }
    if (!err && kind == SK_TASK && has_metadata(doc))
        err = meta_note(tx, project_id, id, json_object_get(doc, "metadata"),
                        update ? -1 : sqlite3_last_insert_rowid(tx->c->db));
    return err;
}

static bool is_indexed(enum store_kind kind, const char *field)
{
    for (const char *const *f = store_kind_fields(kind); *f; f++)
        if (!strcmp(*f, field))
            return true;
    return false;
}

/* Appends sep, then "<col_prefix><name>=?<p>" (without printf: a patch
 * builds its statement on every call). */
static void set_param(struct buf *b, const char *sep, const char *col_prefix, const char *name,
                      int p)
{
    char num[12];
    int n = (int)sizeof num;
    num[--n] = 0;
    do {
        num[--n] = (char)('0' + p % 10);
        p /= 10;
    } while (p && n > 0);
    buf_puts(b, sep);
    buf_puts(b, col_prefix);
    buf_puts(b, name);
    buf_puts(b, "=?");
    buf_puts(b, num + n);
}

/* Hot fields become column updates; any other field goes through json_set
 * over the stored text (SQLite's JSON1 rewrites the document in one pass,
 * cheaper than parsing and re-serialising it here). */
/* Binds and steps a patch's statement sql (sq_patch).  kept: sql is one of
 * the connection's patches[], whose bit i of indexed says whether the i-th
 * field has an f_ column; else sql is a buffer and is_indexed says. */
static int patch_run(struct sqlite_tx *tx, enum store_kind kind, const char *project_id,
                     const char *id, const json_t *fields, const char *if_field,
                     const char *if_value, const char *sql, uint64_t indexed, bool kept)
{
    sqlite3_stmt *s = kept ? stmt_fixed(tx->c, sql) : stmt(tx->c, sql);
    if (!s)
        return -EIO;
    bind_held(s, 1, project_id);
    bind_held(s, 2, id);
    if (if_field)
        bind_held(s, 3, if_value);
    int p = 10;
    size_t nth = 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)fields, k, v) {
        sqlite3_bind_text(s, p, jdump(v, NULL), -1, free);
        if (kept ? (indexed >> nth & 1) != 0 : is_indexed(kind, k)) {
            char *text = store_field_text(fields, k);
            if (text)
                sqlite3_bind_text(s, p + 100, text, -1, free);
            else
                sqlite3_bind_null(s, p + 100);
        }
        nth++;
        p++;
    }
    int rc = sqlite3_step(s);
    int changes = sqlite3_changes(tx->c->db);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return -EIO;
    return changes ? 0 : -ENOENT;
}

/* Writes into key (n bytes) what names a patch's statement: kind, if_field
 * and the names of fields in order; *hash gets its hash.  False when the
 * shape is not kept (a name that is not plain, too long a key, more than 64
 * fields): the statement is then built and looked up as any other. */
static bool patch_key(char *key, size_t n, enum store_kind kind, const json_t *fields,
                      const char *if_field, uint64_t *hash)
{
    size_t len = 0, nf = 0;
    const char *k;
    json_t *v;
    if (if_field && !store_plain_name(if_field))
        return false;
    int w = snprintf(key, n, "%d|%s|", (int)kind, if_field ? if_field : "");
    if (w < 0 || (size_t)w >= n)
        return false;
    len = (size_t)w;
    json_object_foreach((json_t *)fields, k, v) {
        size_t kl = strlen(k);
        if (++nf > 64 || !store_plain_name(k) || len + kl + 2 > n)
            return false;
        memcpy(key + len, k, kl);
        len += kl;
        key[len++] = ',';
    }
    key[len] = 0;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211ULL;
    *hash = h;
    return true;
}

static struct patch_sql *patch_find(struct conn *c, const char *key, uint64_t hash)
{
    for (size_t i = 0; i < c->npatches; i++)
        if (c->patches[i].hash == hash && !strcmp(c->patches[i].key, key))
            return &c->patches[i];
    return NULL;
}

static int patch_doc(struct sqlite_tx *tx, enum store_kind kind, const char *project_id,
                     const char *id, const json_t *fields, const char *if_field,
                     const char *if_value);

/* A patch of a task's metadata writes its index rows again (store.h); one
 * of its name, its q_name (v11). */
static int sq_patch(struct store_tx *t, enum store_kind kind, const char *project_id,
                    const char *id, const json_t *fields, const char *if_field,
                    const char *if_value)
{
    struct sqlite_tx *tx = TX(t);
    json_t *md = json_object_get(fields, "metadata"), *name = json_object_get(fields, "name");
    if (kind != SK_TASK || (!md && !name))
        return patch_doc(tx, kind, project_id, id, fields, if_field, if_value);
    int rc = patch_doc(tx, kind, project_id, id, fields, if_field, if_value);
    if (!rc && md)
        rc = meta_forget(tx, project_id, id);
    if (!rc && md)
        rc = meta_note(tx, project_id, id, md, -1);
    if (!rc && name)
        rc = exec_text(tx, "UPDATE tasks SET q_name=?3 WHERE project_id=?1 AND id=?2", project_id,
                       id, json_string_value(name), NULL);
    return rc;
}

/* A patch's statement is built once per shape (patch_key) and connection,
 * then found by its key: building it and hashing its ~300 bytes of text
 * took a third of a patch's instructions outside SQLite. */
static int patch_doc(struct sqlite_tx *tx, enum store_kind kind, const char *project_id,
                     const char *id, const json_t *fields, const char *if_field,
                     const char *if_value)
{
    char key[256];
    uint64_t hash = 0;
    bool keyed = patch_key(key, sizeof key, kind, fields, if_field, &hash);
    struct patch_sql *ps = keyed ? patch_find(tx->c, key, hash) : NULL;
    if (ps)
        return patch_run(tx, kind, project_id, id, fields, if_field, if_value, ps->sql,
                         ps->indexed, true);
    struct buf sql;
    uint64_t indexed = 0;
    size_t nth = 0;
    buf_init(&sql);
    buf_puts(&sql, "UPDATE ");
    buf_puts(&sql, store_kind_name(kind));
    buf_puts(&sql, " SET ");
    const char *k;
    json_t *v;
    int p = 10, cold = 0;
    const char *sep = "";
    json_object_foreach((json_t *)fields, k, v) {
        if (!store_plain_name(k)) {
            buf_release(&sql);
            return -EINVAL;
        }
        if (is_hot(kind, k)) {
            set_param(&sql, sep, "h_", k, p);
            sep = ", ";
        } else {
            cold++;
        }
        if (is_indexed(kind, k)) {
            set_param(&sql, sep, "f_", k, p + 100);
            sep = ", ";
            if (nth < 64)
                indexed |= 1ULL << nth;
        }
        nth++;
        p++;
    }
    if (cold || !*sep) {
        buf_printf(&sql, "%sdoc=json_set(doc", sep);
        p = 10;
        json_object_foreach((json_t *)fields, k, v) {
            if (!is_hot(kind, k))
                buf_printf(&sql, ", '$.%s', json(?%d)", k, p);
            p++;
        }
        buf_puts(&sql, ")");
    }
    buf_puts(&sql, " WHERE project_id=?1 AND id=?2");
    if (if_field) {
        if (!store_plain_name(if_field)) {
            buf_release(&sql);
            return -EINVAL;
        }
        if (is_hot(kind, if_field))
            buf_printf(&sql, " AND coalesce(h_%s ->> '$', doc ->> '$.%s')=?3", if_field, if_field);
        else
            buf_printf(&sql, " AND json_extract(doc, '$.%s')=?3", if_field);
    }
    if (keyed && tx->c->npatches < PATCH_CACHE) {
        ps = &tx->c->patches[tx->c->npatches++];
        ps->key = xstrdup(key);
        ps->hash = hash;
        ps->sql = buf_steal(&sql);
        ps->indexed = indexed;
        return patch_run(tx, kind, project_id, id, fields, if_field, if_value, ps->sql,
                         ps->indexed, true);
    }
    int rc = patch_run(tx, kind, project_id, id, fields, if_field, if_value, sql.data, 0, false);
    buf_release(&sql);
    return rc;
}

static json_t *sq_get(struct store_tx *t, enum store_kind kind, const char *project_id,
                      const char *id)
{
    struct sqlite_tx *tx = TX(t);
    sqlite3_stmt *s = stmt_fixed(tx->c, project_id ? ksql[kind].get : ksql[kind].get_any);
    if (!s) {
        tx->err = -EIO;
        return NULL;
    }
    if (project_id)
        bind_held(s, 1, project_id);
    bind_held(s, 2, id);
    json_t *doc = NULL;
    if (step_read(tx, s) == SQLITE_ROW)
        doc = row_doc(s, kind, NULL);
    sqlite3_reset(s);
    return doc;
}

/* A run's blob references go with the run (delete, prune). */
static const char refs_forget[] = "DELETE FROM blob_refs WHERE project_id=?1 AND run_id=?2";

static int sq_del(struct store_tx *t, enum store_kind kind, const char *project_id,
                  const char *id)
{
    struct sqlite_tx *tx = TX(t);
    char sql[256];
    snprintf(sql, sizeof sql, "DELETE FROM %s WHERE project_id=?1 AND id=?2",
             store_kind_name(kind));
    int changes = 0;
    /* the task's metadata rows go first: they are found by its seq */
    int rc = kind == SK_TASK ? meta_forget(tx, project_id, id) : 0;
    if (!rc)
        rc = exec_text(tx, sql, project_id, id, NULL, &changes);
    if (!rc && changes && kind == SK_RUN)
        rc = exec_text(tx, refs_forget, project_id, id, NULL, NULL);
    return rc ? rc : changes ? 0 : -ENOENT;
}

/* Indexed fields whose index leaves out the rows with one usual value (v7):
 * kind, field, value. */
static const struct {
    enum store_kind kind;
    const char *field, *value;
} usual_values[] = {{SK_TASK, "type", "manual"}, {SK_TASK, "priority", "medium"}};

static const char *usual_value(enum store_kind kind, const char *field)
{
    for (size_t i = 0; i < ARRAY_LEN(usual_values); i++)
        if (usual_values[i].kind == kind && !strcmp(usual_values[i].field, field))
            return usual_values[i].value;
    return NULL;
}

/* mf: the filter the metadata index answers (store_meta_filter), or -1;
 * its rows are joined in (sq_list) and read in seq order, and the filter is
 * still checked on each row below. */
static void where_clause(struct buf *b, enum store_kind kind, const char *project_id,
                         const struct store_query *q, int mf)
{
    buf_puts(b, " WHERE 1");
    if (mf >= 0)
        buf_printf(b, " AND m_project=?1 AND m_key=?180 AND m_value=?%d", mf + 2);
    /* a task's name has its own column (v11), read without parsing doc */
    if (q->search)
        buf_printf(b, " AND (%s LIKE ?190 ESCAPE '\\' OR id LIKE ?190 ESCAPE '\\')",
                   kind == SK_TASK ? "q_name" : "json_extract(doc, '$.name')");
    int p = 1;
    if (project_id)
        buf_printf(b, " AND project_id=?%d", p);
    p++;
    for (size_t i = 0; i < q->nfilters; i++, p++) {
        const char *f = q->filters[i].field;
        /* field names were checked against the kind's table (store_list) */
        if (!strncmp(f, "metadata.", 9))
            /* the value's JSON text, as PostgreSQL's ->> gives it: a string
             * unquoted, a number or boolean as written, null matching nothing */
            buf_printf(b,
                       " AND (CASE json_type(doc, '$.metadata.' || ?%d)"
                       " WHEN 'text' THEN json_extract(doc, '$.metadata.' || ?%d)"
                       " WHEN 'null' THEN NULL ELSE doc -> ('$.metadata.' || ?%d) END) = ?%d",
                       p + 100, p + 100, p + 100, p);
        else if (!strcmp(f, "id"))
            buf_printf(b, " AND id %s ?%d", q->filters[i].value ? "=" : "IS", p);
        else if (q->filters[i].value && !strcmp(q->filters[i].value, "true"))
            /* the literal lets a partial index WHERE f = 'true' serve it (v3);
             * ?p stays bound, unused */
            buf_printf(b, " AND f_%s = 'true' AND ?%d IS NOT NULL", f, p);
        else {
            buf_printf(b, " AND f_%s %s ?%d", f, q->filters[i].value ? "=" : "IS", p);
            /* the partial index's own condition, true for this value: the
             * planner uses an index only when the query states it */
            const char *usual = usual_value(kind, f);
            if (usual && q->filters[i].value && strcmp(q->filters[i].value, usual))
                buf_printf(b, " AND f_%s != '%s'", f, usual);
        }
    }
}

/* '%' + text with % _ \ escaped + '%' (malloc'd): a LIKE substring pattern. */
static char *like_pattern(const char *text)
{
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "%");
    for (const char *c = text; *c; c++) {
        if (*c == '%' || *c == '_' || *c == '\\')
            buf_puts(&b, "\\");
        buf_append(&b, c, 1);
    }
    buf_puts(&b, "%");
    return buf_steal(&b);
}

static void bind_where(sqlite3_stmt *s, const char *project_id, const struct store_query *q,
                       int mf)
{
    int p = 1;
    if (mf >= 0)
        bind_text(s, 180, q->filters[mf].field + 9);
    if (q->search)
        sqlite3_bind_text(s, 190, like_pattern(q->search), -1, free);
    if (project_id)
        bind_text(s, p, project_id);
    p++;
    for (size_t i = 0; i < q->nfilters; i++, p++) {
        bind_text(s, p, q->filters[i].value);
        const char *f = q->filters[i].field;
        if (!strncmp(f, "metadata.", 9)) {
            /* quote the key so any character is a literal member name */
            char *path = xasprintf("\"%s\"", f + 9);
            sqlite3_bind_text(s, p + 100, path, -1, free);
        }
    }
}

/* What store_meta_choose asks of a list (sq_list). */
struct probe {
    struct sqlite_tx *tx;
    enum store_kind kind;
    const char *project_id;
};

/* A filter probe_rows counts through its index alone: a metadata filter
 * the index answers, or a field's value other than the usual one (whose
 * partial index leaves it out) and not NULL (partial indexes leave NULL
 * out too). */
static bool probe_ok(void *ctx, const struct store_filter *f)
{
    struct probe *pr = ctx;
    if (!strncmp(f->field, "metadata.", 9))
        return store_meta_indexable(pr->kind, pr->project_id, f);
    const char *usual = usual_value(pr->kind, f->field);
    return f->value && !(usual && !strcmp(f->value, usual));
}

/* The rows filter f alone finds, counted up to STORE_META_PROBE_CAP
 * through its index (probe_ok).  -1 when the count failed. */
static int64_t probe_rows(void *ctx, const struct store_filter *f)
{
    struct probe *pr = ctx;
    struct store_query one = {.filters = f, .nfilters = 1};
    bool meta = !strncmp(f->field, "metadata.", 9);
    struct buf w, sql;
    buf_init(&w);
    buf_init(&sql);
    if (meta) {
        buf_printf(&sql, "SELECT count(*) FROM (SELECT 1 FROM task_meta WHERE m_project=?1"
                         " AND m_key=?180 AND m_value=?2 LIMIT %d)", STORE_META_PROBE_CAP);
    } else {
        where_clause(&w, pr->kind, pr->project_id, &one, -1);
        buf_printf(&sql, "SELECT count(*) FROM (SELECT 1 FROM %s%s LIMIT %d)",
                   store_kind_name(pr->kind), w.data, STORE_META_PROBE_CAP);
    }
    int64_t n = -1;
    sqlite3_stmt *s = stmt(pr->tx->c, sql.data);
    if (s) {
        bind_where(s, pr->project_id, &one, meta ? 0 : -1);
        if (sqlite3_step(s) == SQLITE_ROW)
            n = sqlite3_column_int64(s, 0);
        sqlite3_reset(s);
    }
    buf_release(&w);
    buf_release(&sql);
    return n;
}

static int sq_list(struct store_tx *t, enum store_kind kind, const char *project_id,
                   const struct store_query *q, const char *after_id, const char *const *fields,
                   json_t **out, int64_t *total)
{
    struct sqlite_tx *tx = TX(t);
    const char *table = store_kind_name(kind);
    /* a metadata filter the index answers drives the query: its task_meta
     * rows in seq order (CROSS JOIN keeps that table outside), each joined
     * to its task by rowid */
    struct probe pr = {tx, kind, project_id};
    int mf = store_meta_choose(kind, project_id, q, probe_ok, probe_rows, &pr);
    const char *from = mf >= 0 ? "task_meta CROSS JOIN tasks ON seq=m_seq" : table;
    const char *order = mf >= 0 ? "m_seq" : "seq";
    struct buf where, sql;
    buf_init(&where);
    buf_init(&sql);
    where_clause(&where, kind, project_id, q, mf);
    buf_printf(&sql, "SELECT %s FROM %s%s", ksql[kind].cols, from, where.data);
    if (after_id)
        buf_printf(&sql, " AND %s %s (SELECT seq FROM %s WHERE id=?202%s)", order,
                   q->oldest_first ? ">" : "<", table,
                   project_id ? " AND project_id=?1" : " LIMIT 1");
    buf_printf(&sql, " ORDER BY %s %s LIMIT ?200 OFFSET ?201", order,
               q->oldest_first ? "ASC" : "DESC");
    sqlite3_stmt *s = stmt(tx->c, sql.data);
    int rc = 0;
    if (!s) {
        rc = -EIO;
        goto out;
    }
    bind_where(s, project_id, q, mf);
    sqlite3_bind_int64(s, 200, q->limit > 0 ? q->limit : -1);
    sqlite3_bind_int64(s, 201, q->offset > 0 ? q->offset : 0);
    if (after_id)
        bind_text(s, 202, after_id);
    json_t *arr = json_array();
    int r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        json_t *d = row_doc(s, kind, fields);
        if (d)
            json_array_append_new(arr, d);
    }
    sqlite3_reset(s);
    if (r != SQLITE_DONE) {
        json_decref(arr);
        rc = -EIO;
        goto out;
    }
    *out = arr;
    if (total) {
        buf_release(&sql);
        buf_printf(&sql, "SELECT count(*) FROM %s%s", from, where.data);
        s = stmt(tx->c, sql.data);
        if (!s) {
            rc = -EIO;
            goto out;
        }
        bind_where(s, project_id, q, mf);
        int r2 = sqlite3_step(s);
        *total = r2 == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
        sqlite3_reset(s);
        if (r2 != SQLITE_ROW) {
            /* callers return on the error: the page is not theirs */
            json_decref(*out);
            *out = NULL;
            rc = -EIO;
        }
    }
out:
    buf_release(&where);
    buf_release(&sql);
    return rc;
}

/* ---- logs ---- */

static int sq_log_append(struct store_tx *t, const char *project_id, const char *run_id,
                         json_t *entries, int64_t *last_seq)
{
    struct sqlite_tx *tx = TX(t);
    sqlite3_stmt *s = stmt(tx->c, "SELECT COALESCE(MAX(seq), 0) FROM logs WHERE run_id=?1");
    if (!s)
        return -EIO;
    bind_text(s, 1, run_id);
    int64_t seq = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    s = stmt(tx->c, "INSERT INTO logs(run_id, seq, project_id, entry) VALUES(?1, ?2, ?3, ?4)");
    if (!s)
        return -EIO;
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e) {
        seq++;
        json_object_set_new_nocheck(e, "seq", json_integer(seq));
        sqlite3_reset(s);
        bind_text(s, 1, run_id);
        sqlite3_bind_int64(s, 2, seq);
        bind_text(s, 3, project_id);
        sqlite3_bind_text(s, 4, jdump(e, NULL), -1, free);
        if (sqlite3_step(s) != SQLITE_DONE) {
            sqlite3_reset(s);
            return -EIO;
        }
    }
    sqlite3_reset(s);
    if (last_seq)
        *last_seq = seq;
    return 0;
}

static int sq_log_read(struct store_tx *t, const char *project_id, const char *run_id,
                       int64_t after_seq, int64_t limit, json_t **out)
{
    struct sqlite_tx *tx = TX(t);
    sqlite3_stmt *s = stmt(tx->c, "SELECT entry FROM logs WHERE run_id=?1 AND project_id=?2 "
                                  "AND seq>?3 ORDER BY seq LIMIT ?4");
    if (!s)
        return -EIO;
    bind_text(s, 1, run_id);
    bind_text(s, 2, project_id);
    sqlite3_bind_int64(s, 3, after_seq);
    sqlite3_bind_int64(s, 4, limit > 0 ? limit : -1);
    json_t *arr = json_array();
    int r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        json_t *d = col_json(s, 0);
        if (d)
            json_array_append_new(arr, d);
    }
    sqlite3_reset(s);
    if (r != SQLITE_DONE) {
        json_decref(arr);   /* a short page is no answer */
        return -EIO;
    }
    *out = arr;
    return 0;
}

static int64_t sq_log_bytes(struct store_tx *t, const char *project_id, const char *run_id)
{
    struct sqlite_tx *tx = TX(t);
    sqlite3_stmt *s = stmt(tx->c, "SELECT COALESCE(SUM(length(entry)),0) FROM logs "
                                  "WHERE run_id=?1 AND project_id=?2");
    if (!s)
        return 0;
    bind_text(s, 1, run_id);
    bind_text(s, 2, project_id);
    int64_t n = step_read(tx, s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    return n;
}

/* ---- events ---- */

static int sq_event_append(struct store_tx *t, json_t *ev, int64_t *id)
{
    struct sqlite_tx *tx = TX(t);
    sqlite3_stmt *s = stmt_fixed(tx->c, "INSERT INTO events(project_id, run_id, type, created_at, doc) "
                                  "VALUES(?1, ?2, ?3, ?4, ?5)");
    if (!s)
        return -EIO;
    bind_held(s, 1, json_string_value(json_object_get(ev, "project_id")));
    bind_held(s, 2, json_string_value(json_object_get(ev, "run_id")));
    bind_held(s, 3, json_string_value(json_object_get(ev, "type")));
    sqlite3_bind_int64(s, 4, json_integer_value(json_object_get(ev, "created_ms")));
    sqlite3_bind_text(s, 5, jdump(ev, NULL), -1, free);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return -EIO;
    *id = sqlite3_last_insert_rowid(tx->c->db);
    return 0;
}

static void type_list(struct buf *b, const char *op, int base, size_t n)
{
    if (!n)
        return;
    buf_printf(b, " AND type %s (", op);
    for (size_t i = 0; i < n; i++)
        buf_printf(b, "%s?%zu", i ? "," : "", (size_t)base + i);
    buf_puts(b, ")");
}

static int sq_event_list(struct store_tx *t, const struct store_event_query *q, json_t **out,
                         int64_t *total, int64_t *filtered)
{
    struct sqlite_tx *tx = TX(t);
    if (q->ntypes > 50 || q->nexclude > 50)
        return -EINVAL;
    struct buf base, cond, sql;
    buf_init(&base);
    buf_init(&cond);
    buf_init(&sql);
    buf_puts(&base, " FROM events WHERE project_id=?1");
    if (q->run_id)
        buf_puts(&base, " AND run_id=?2");
    buf_puts(&cond, " AND id>?3 AND (?4 <= 0 OR created_at>?4)");
    type_list(&cond, "IN", 10, q->ntypes);
    type_list(&cond, "NOT IN", 70, q->nexclude);
    int rc = 0;
    json_t *page = NULL;   /* *out only once every pass has read all it asked */
    for (int pass = 0; pass < 3; pass++) {
        buf_release(&sql);
        if (pass == 0)
            buf_printf(&sql, "SELECT id, doc%s%s ORDER BY id LIMIT ?5 OFFSET ?6", base.data,
                       cond.data);
        else if (pass == 1)
            buf_printf(&sql, "SELECT count(*)%s", base.data);
        else
            buf_printf(&sql, "SELECT count(*)%s%s", base.data, cond.data);
        if ((pass == 1 && !total) || (pass == 2 && !filtered))
            continue;
        sqlite3_stmt *s = stmt(tx->c, sql.data);
        if (!s) {
            rc = -EIO;
            goto out;
        }
        bind_text(s, 1, q->project_id);
        if (q->run_id)
            bind_text(s, 2, q->run_id);
        if (pass != 1) {
            sqlite3_bind_int64(s, 3, q->after_id);
            sqlite3_bind_int64(s, 4, q->after_ms);
            for (size_t i = 0; i < q->ntypes; i++)
                bind_text(s, 10 + (int)i, q->types[i]);
            for (size_t i = 0; i < q->nexclude; i++)
                bind_text(s, 70 + (int)i, q->exclude[i]);
        }
        if (pass == 0) {
            sqlite3_bind_int64(s, 5, q->limit > 0 ? q->limit : -1);
            sqlite3_bind_int64(s, 6, q->offset > 0 ? q->offset : 0);
            page = json_array();
            int r;
            while ((r = sqlite3_step(s)) == SQLITE_ROW) {
                json_t *d = col_json(s, 1);
                if (!d)
                    continue;
                json_object_set_new_nocheck(d, "seq", json_integer(sqlite3_column_int64(s, 0)));
                json_array_append_new(page, d);
            }
            sqlite3_reset(s);
            if (r != SQLITE_DONE) {
                rc = -EIO;   /* a short page is no answer */
                goto out;
            }
        } else {
            int r = sqlite3_step(s);
            *(pass == 1 ? total : filtered) = r == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
            sqlite3_reset(s);
            if (r != SQLITE_ROW) {
                rc = -EIO;
                goto out;
            }
        }
    }
out:
    if (rc)
        json_decref(page);
    else
        *out = page;
    buf_release(&base);
    buf_release(&cond);
    buf_release(&sql);
    return rc;
}

static int64_t sq_event_last_id(struct store_tx *t)
{
    struct sqlite_tx *tx = TX(t);
    sqlite3_stmt *s = stmt(tx->c, "SELECT COALESCE(MAX(id), 0) FROM events");
    if (!s)
        return 0;
    int64_t n = step_read(tx, s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    return n;
}

/* ---- meta, idempotency ---- */

static char *sq_meta_get(struct store_tx *t, const char *key)
{
    sqlite3_stmt *s = stmt(TX(t)->c, "SELECT value FROM meta WHERE key=?1");
    if (!s)
        return NULL;
    bind_text(s, 1, key);
    char *v = NULL;
    if (step_read(TX(t), s) == SQLITE_ROW)
        v = xstrdup((const char *)sqlite3_column_text(s, 0));
    sqlite3_reset(s);
    return v;
}

static int sq_meta_set(struct store_tx *t, const char *key, const char *value)
{
    sqlite3_stmt *s = stmt(TX(t)->c, "INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)");
    if (!s)
        return -EIO;
    bind_text(s, 1, key);
    bind_text(s, 2, value);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : -EIO;
}

static int sq_idem_get(struct store_tx *t, const char *scope, const char *key, int64_t since_ms,
                       char **fingerprint, int *status, char **body)
{
    sqlite3_stmt *s = stmt(TX(t)->c, "SELECT fingerprint, status, body FROM idempotency "
                                     "WHERE scope=?1 AND key=?2 AND created_at>=?3");
    if (!s)
        return -EIO;
    bind_text(s, 1, scope);
    bind_text(s, 2, key);
    sqlite3_bind_int64(s, 3, since_ms);
    int rc = -ENOENT;
    if (sqlite3_step(s) == SQLITE_ROW) {
        const char *fp = (const char *)sqlite3_column_text(s, 0);
        *fingerprint = fp ? xstrdup(fp) : NULL;
        *status = sqlite3_column_int(s, 1);
        *body = xstrdup((const char *)sqlite3_column_text(s, 2));
        rc = 0;
    }
    sqlite3_reset(s);
    return rc;
}

static int sq_idem_put(struct store_tx *t, const char *scope, const char *key,
                       const char *fingerprint, int status, const char *body)
{
    sqlite3_stmt *s = stmt(TX(t)->c, "INSERT OR REPLACE INTO idempotency(scope, key, fingerprint,"
                                     " status, body, created_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
    if (!s)
        return -EIO;
    bind_text(s, 1, scope);
    bind_text(s, 2, key);
    bind_text(s, 3, fingerprint);
    sqlite3_bind_int(s, 4, status);
    bind_text(s, 5, body);
    sqlite3_bind_int64(s, 6, now_ms());
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : -EIO;
}

static int sq_idem_del(struct store_tx *t, const char *scope, const char *key)
{
    sqlite3_stmt *s = stmt(TX(t)->c, "DELETE FROM idempotency WHERE scope=?1 AND key=?2");
    if (!s)
        return -EIO;
    bind_text(s, 1, scope);
    bind_text(s, 2, key);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : -EIO;
}

/* ---- one node; copying ---- */

/* store_conc_active: one writer, so what this transaction sees is every
 * start so far, earlier writes of its group commit included.  The status
 * index bounds the scan to the project's active runs. */
static int sq_conc_active(struct store_tx *t, const char *project_id, const char *key,
                          const char *except_id, int64_t *n)
{
    sqlite3_stmt *s = stmt(TX(t)->c,
                           "SELECT count(*) FROM runs WHERE project_id=?1 AND f_status IN "
                           "('running', 'canceling', 'interaction_required') AND "
                           "json_extract(doc, '$.concurrency_key')=?2 AND id<>?3 AND "
                           "(f_status<>'interaction_required' OR "
                           "COALESCE(json_extract(doc, '$.interaction.kind'), '')<>'approval')");
    if (!s)
        return -EIO;
    bind_text(s, 1, project_id);
    bind_text(s, 2, key);
    bind_text(s, 3, except_id ? except_id : "");
    int rc = sqlite3_step(s);
    *n = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    return rc == SQLITE_ROW ? 0 : -EIO;
}

static int sq_try_get(struct store_tx *t, enum store_kind kind, const char *project_id,
                      const char *id, json_t **out)
{
    /* one writer: nothing else can hold the row */
    *out = sq_get(t, kind, project_id, id);
    return *out ? 0 : TX(t)->err ? TX(t)->err : -ENOENT;
}

static int sq_get_many(struct store_tx *t, enum store_kind kind, const json_t *ids, json_t **out)
{
    json_t *o = json_object();
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v) {
        if (!json_is_string(v))
            continue;
        json_t *d = sq_get(t, kind, NULL, json_string_value(v));
        if (d)
            json_object_set_new(o, json_string_value(v), d);
    }
    *out = o;
    return 0;
}

static void sq_watch(struct store *s, store_watch_fn fn, void *ctx)
{
    (void)s;   /* a single node: every change is made here */
    (void)fn;
    (void)ctx;
}

static bool sq_leader(struct store *s)
{
    (void)s;
    return true;
}

static const char *sq_node_id(const struct store *s)
{
    return SQ(s)->node_id;
}

static bool sq_node_alive(struct store *s, const char *node_id)
{
    return !strcmp(SQ(s)->node_id, node_id);
}

/* A dumped row of a kind's table: its hot columns merged into doc and
 * removed, so the copy is the plain document every backend stores. */
static void merge_hot(const char *table, json_t *row)
{
    for (int k = 0; k < SK__COUNT; k++) {
        if (strcmp(table, store_kind_name((enum store_kind)k)) || !*hot_fields((enum store_kind)k))
            continue;
        json_t *doc = json_loads(json_string_value(json_object_get(row, "doc")), 0, NULL);
        for (const char *const *f = hot_fields((enum store_kind)k); *f; f++) {
            char col[64];
            snprintf(col, sizeof col, "h_%s", *f);
            const char *text = json_string_value(json_object_get(row, col));
            json_t *v = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
            if (doc && v)
                json_object_set_new(doc, *f, v);
            else
                json_decref(v);
            json_object_del(row, col);
        }
        if (doc) {
            char *text = jdump(doc, NULL);
            json_object_set_new_nocheck(row, "doc", json_string(text));
            free(text);
        }
        json_decref(doc);
    }
}

static int sq_dump(struct store_tx *t, const char *table, int64_t offset, int64_t limit,
                   json_t **out)
{
    char *sql = xasprintf("SELECT * FROM %s ORDER BY %s LIMIT %lld OFFSET %lld", table,
                          store_table_order(table), (long long)(limit > 0 ? limit : -1),
                          (long long)(offset > 0 ? offset : 0));
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(TX(t)->c->db, sql, -1, &s, NULL) == SQLITE_OK ? 0 : -EIO;
    free(sql);
    if (rc)
        return rc;
    json_t *rows = json_array();
    int step;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        json_t *row = json_object();
        for (int i = 0; i < sqlite3_column_count(s); i++) {
            const char *name = sqlite3_column_name(s, i);
            switch (sqlite3_column_type(s, i)) {
            case SQLITE_NULL:
                json_object_set_new(row, name, json_null());
                break;
            case SQLITE_INTEGER:
                json_object_set_new(row, name, json_integer(sqlite3_column_int64(s, i)));
                break;
            default:
                json_object_set_new(row, name,
                                    json_stringn((const char *)sqlite3_column_text(s, i),
                                                 (size_t)sqlite3_column_bytes(s, i)));
            }
        }
        merge_hot(table, row);
        json_array_append_new(rows, row);
    }
    sqlite3_finalize(s);
    if (step != SQLITE_DONE) {
        json_decref(rows);
        return -EIO;
    }
    *out = rows;
    return 0;
}

static int sq_load(struct store_tx *t, const char *table, const json_t *rows)
{
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row) {
        struct buf b;
        buf_init(&b);
        buf_printf(&b, "INSERT INTO %s(", table);
        const char *k;
        json_t *v;
        int n = 0;
        json_object_foreach((json_t *)row, k, v) {
            if (!store_plain_name(k)) {
                buf_release(&b);
                return -EINVAL;
            }
            buf_printf(&b, "%s%s", n++ ? ", " : "", k);
        }
        buf_puts(&b, ") VALUES(");
        for (int j = 0; j < n; j++)
            buf_printf(&b, "%s?%d", j ? ", " : "", j + 1);
        buf_puts(&b, ")");
        sqlite3_stmt *s = stmt(TX(t)->c, b.data);
        buf_release(&b);
        if (!s)
            return -EIO;
        int j = 1;
        json_object_foreach((json_t *)row, k, v) {
            if (json_is_integer(v))
                sqlite3_bind_int64(s, j, json_integer_value(v));
            else if (json_is_string(v))
                sqlite3_bind_text(s, j, json_string_value(v), (int)json_string_length(v),
                                  SQLITE_TRANSIENT);
            else
                sqlite3_bind_null(s, j);
            j++;
        }
        int rc = sqlite3_step(s);
        sqlite3_reset(s);
        if (rc != SQLITE_DONE)
            return rc == SQLITE_CONSTRAINT ? -EEXIST : -EIO;
        /* a copied run keeps its artifacts' blobs from the sweep */
        const char *doc = json_string_value(json_object_get(row, "doc"));
        if (!strcmp(table, "runs") && doc && strstr(doc, "\"sha256\"") &&
            (rc = refs_note(TX(t), json_string_value(json_object_get(row, "project_id")),
                            json_string_value(json_object_get(row, "id")), doc)))
            return rc;
        /* a copied task gets its metadata index rows (store.h) */
        if (!strcmp(table, "tasks") && doc) {
            json_t *d = json_loads(doc, 0, NULL);
            rc = meta_note(TX(t), json_string_value(json_object_get(row, "project_id")),
                           json_string_value(json_object_get(row, "id")),
                           json_object_get(d, "metadata"), -1);
            json_decref(d);
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* The terminal statuses, as stored in f_status. */

static int sq_blob_referenced(struct store_tx *t, const char *sha)
{
    sqlite3_stmt *s = stmt(TX(t)->c, "SELECT 1 FROM blob_refs WHERE sha=?1 LIMIT 1");
    if (!s)
        return -EIO;
    bind_text(s, 1, sha);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -EIO;
}

/* the delivery states retention may prune */
static const char *const delivery_ended[] = {"succeeded", "failed"};

static int sq_prune(struct store_tx *t, int64_t before_ms, int64_t limit, int64_t *pruned)
{
    struct sqlite_tx *tx = TX(t);
    char before[RFC3339_LEN];
    rfc3339_format(before_ms, before);
    int64_t n = 0;
    /* events are appended in time order: the old ones are the ids before
     * the first event at or after the cut (found by walking from the
     * oldest: it stops there, where a filter on created_at alone read the
     * whole table when nothing was old enough).  The newest event always
     * stays: the next id is max(id) + 1 (no AUTOINCREMENT, v7), so ids
     * never go back. */
    sqlite3_stmt *s = stmt(tx->c, "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE "
                                  "id < coalesce((SELECT id FROM events WHERE created_at >= ?1 "
                                  "ORDER BY id LIMIT 1), (SELECT max(id) FROM events)) "
                                  "ORDER BY id LIMIT ?2)");
    if (!s)
        return -EIO;
    sqlite3_bind_int64(s, 1, before_ms);
    sqlite3_bind_int64(s, 2, limit);
    int rc = sqlite3_step(s);
    n += sqlite3_changes(tx->c->db);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return -EIO;
    /* finished runs that ended before the cut, with their logs and
     * checkpoints (RFC 3339 UTC strings sort as times) */
    /* h_completed_at holds JSON text: compared with the cut's (a JSON null,
     * "null", sorts after every quoted time) */
    s = stmt(tx->c, "SELECT project_id, id FROM runs WHERE h_completed_at < '#' AND "
                    "h_completed_at < ?1 AND f_status IN " FINISHED " LIMIT ?2");
    if (!s)
        return -EIO;
    char quoted[RFC3339_LEN + 2];
    snprintf(quoted, sizeof quoted, "\"%s\"", before);
    bind_text(s, 1, quoted);
    sqlite3_bind_int64(s, 2, limit);
    json_t *gone = json_array();
    while (sqlite3_step(s) == SQLITE_ROW)
        json_array_append_new(gone, json_pack("[s, s]", (const char *)sqlite3_column_text(s, 0),
                                              (const char *)sqlite3_column_text(s, 1)));
    sqlite3_reset(s);
    static const char *const del[] = {
        "DELETE FROM logs WHERE run_id=?2",
        "DELETE FROM checkpoints WHERE project_id=?1 AND f_run_id=?2",
        "DELETE FROM runs WHERE project_id=?1 AND id=?2",
        refs_forget,
    };
    size_t i;
    json_t *r;
    rc = 0;
    json_array_foreach(gone, i, r) {
        for (size_t k = 0; k < ARRAY_LEN(del) && !rc; k++)
            rc = exec_text(tx, del[k], json_string_value(json_array_get(r, 0)),
                           json_string_value(json_array_get(r, 1)), NULL, NULL);
        n++;
    }
    json_decref(gone);
    if (rc)
        return rc;
    /* webhook deliveries that ended (succeeded, or failed for good) before
     * the cut; a pending one is being retried and stays.  Each status is
     * walked from its oldest (deliveries_status_any) up to the first that
     * ended after the cut, so a pass reads about what it deletes. */
    for (size_t k = 0; k < ARRAY_LEN(delivery_ended); k++) {
        s = stmt(tx->c, "DELETE FROM deliveries WHERE seq IN (SELECT seq FROM deliveries WHERE "
                        "f_status=?1 AND seq < coalesce((SELECT seq FROM deliveries WHERE "
                        "f_status=?1 AND json_extract(doc, '$.completed_at') >= ?2 ORDER BY seq "
                        "LIMIT 1), (SELECT max(seq) + 1 FROM deliveries)) ORDER BY seq LIMIT ?3)");
        if (!s)
            return -EIO;
        bind_text(s, 1, delivery_ended[k]);
        bind_text(s, 2, before);
        sqlite3_bind_int64(s, 3, limit);
        rc = sqlite3_step(s);
        n += sqlite3_changes(tx->c->db);
        sqlite3_reset(s);
        if (rc != SQLITE_DONE)
            return -EIO;
    }
    s = stmt(tx->c, "DELETE FROM idempotency WHERE created_at < ?1");
    if (!s)
        return -EIO;
    sqlite3_bind_int64(s, 1, now_ms() - 24LL * 3600 * 1000);
    rc = sqlite3_step(s);
    n += sqlite3_changes(tx->c->db);
    sqlite3_reset(s);
    if (pruned)
        *pruned = n;
    return rc == SQLITE_DONE ? 0 : -EIO;
}

const struct store_backend store_sqlite_backend = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .ping = sq_ping,
    .write = sq_write,
    .write_begin = sq_write_begin,
    .write_wait = sq_write_wait,
    .read = sq_read,
    .on_commit = sq_on_commit,
    .is_write = sq_is_write,
    .put = sq_put,
    .get = sq_get,
    .patch = sq_patch,
    .del = sq_del,
    .list = sq_list,
    .log_append = sq_log_append,
    .log_read = sq_log_read,
    .log_bytes = sq_log_bytes,
    .event_append = sq_event_append,
    .event_list = sq_event_list,
    .event_last_id = sq_event_last_id,
    .meta_get = sq_meta_get,
    .meta_set = sq_meta_set,
    .idem_get = sq_idem_get,
    .idem_put = sq_idem_put,
    .idem_del = sq_idem_del,
    .prune = sq_prune,
    .blob_referenced = sq_blob_referenced,
    .try_get = sq_try_get,
    .conc_active = sq_conc_active,
    .get_many = sq_get_many,
    .watch = sq_watch,
    .leader = sq_leader,
    .node_id = sq_node_id,
    .node_alive = sq_node_alive,
    .dump = sq_dump,
    .load = sq_load,
};
