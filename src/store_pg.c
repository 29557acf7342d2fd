/*
 * store_pg — the PostgreSQL backend (libpq), behind the same vtable as
 * store_sqlite and with the same behaviour for everything above store.h.
 *
 * Threads.  One writer thread owns the write connection.  store_write()
 * queues a job and waits; the writer takes every queued job (up to
 * MAX_BATCH), runs each in its own SAVEPOINT inside one BEGIN ... COMMIT,
 * then runs the post-commit hooks in order and wakes the callers: concurrent
 * writers share one commit (group commit).  Reads take a connection from a
 * small pool (opened on demand, at most opts->read_conns, default 16) and run
 * in a REPEATABLE READ READ ONLY transaction: one consistent snapshot per
 * store_read().  A pool rather than a connection per thread, so threads that
 * come and go never leak server connections.
 *
 * Statements.  Every query goes through the extended protocol as a named
 * prepared statement, prepared once per connection and cached by its SQL
 * text (dynamic list queries included; the cache evicts when full).  Params
 * travel as text; non-text params carry an explicit ::bigint cast in the SQL.
 *
 * Errors.  In PostgreSQL one failed statement aborts the whole transaction,
 * where SQLite fails only that statement.  So expected conflicts never raise
 * an error: inserts use ON CONFLICT (DO NOTHING for -EEXIST, DO UPDATE for
 * upserts) and the affected-row count decides.  A write fn that returns 0
 * although one of its statements failed is caught when its RELEASE fails and
 * is rolled back to its savepoint with -EIO, so the other jobs of the batch
 * still commit.  A broken connection is reset before the next batch (writer)
 * or dropped from the pool (readers).  When the connection dies during
 * COMMIT the outcome is unknown to us; the callers get -EIO.
 *
 * Durability (enum store_fsync) maps onto synchronous_commit on the writer's
 * session: always -> on (COMMIT returns after the server's WAL flush);
 * batch and off -> off (the server flushes its WAL within a few hundred ms:
 * a crash of quernd loses nothing acknowledged, a crash of PostgreSQL's host
 * may lose the last moments).
 *
 * Event ids (invariant 4).  events.id is a bigserial.  With one node the single
 * writer assigns and commits ids in order.  With several nodes on one database
 * two writers could commit ids out of order, so the first event_append of a
 * batch takes a transaction-level advisory lock (EVENT_LOCK): event-writing
 * transactions then serialise, and ids are assigned in commit order.
 *
 * Several nodes (store.h).  Invariant 5: in a write transaction store_get of
 * a kind that is written back (store_kind_locked) reads FOR UPDATE: the row
 * is the latest committed one and stays ours until the batch commits, so no
 * node decides on a stale run or task, and a run is started once per
 * attempt.  store_try_get adds SKIP LOCKED for dispatch.  Two batches that
 * lock the same rows in opposite orders deadlock; PostgreSQL aborts one
 * statement after deadlock_timeout and that job fails with -EAGAIN (the
 * rest of its batch commits).
 *
 * Every write of a run or task is announced: its job records "R|T project
 * id" (and "E project run-id" for events written without a write of their
 * run, such as log entries: other nodes' streams wake on it), and the
 * batch's COMMIT carries the lines in pg_notify('quern', ...) (several per
 * notification, up to ~7 kB), so listeners hear of exactly the
 * committed changes, at commit.  A listener thread per node owns a second
 * connection that LISTENs, skips what its own writer sent, and hands the
 * rest to the watcher (store_watch).  The same connection holds two
 * session advisory locks: this node's (so others can tell it is alive:
 * store_node_alive reads pg_locks) and, when it can take it, the leader's
 * (LEADER_LOCK, tried every second).  Locks go with the session: a node that
 * dies releases them at once (its socket closes); a node cut off from the
 * server loses them when the server's TCP keepalive (set to ~4 s on every
 * session, SESSION_TIMEOUTS) gives up, and it stops calling itself leader as
 * soon as its own health check (a query answered within 2 s, every second)
 * fails.  The writer's session is dropped the same way, so a transaction cut
 * off before its COMMIT does not keep its locks (EVENT_LOCK stalls every
 * node's writer); this node's own calls fail after ~4 s of silence
 * (tcp_user_timeout, keepalives on the client side) rather than hang.  After a
 * reconnect the watcher is told it may have missed changes (changes ==
 * NULL) and reloads; QUERN_PG_POLL_MS > 0 makes it reload that often as
 * well (a polling fallback where NOTIFY cannot be used).
 */
#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "store.h"
#include "jdump.h"
#include "jload.h"
#include "log.h"
#include "util.h"

#define MAX_BATCH 512
#define STMT_CACHE 256
#define DEFAULT_READ_CONNS 16
#define EVENT_LOCK "7172656e01"     /* advisory lock key for event ids */
#define MIGRATE_LOCK "7172656e00"   /* advisory lock key for migrations */
#define LEADER_LOCK "7172656e02"    /* held by the leader's listener session */
#define NOTIFY_CHANNEL "quern"
#define NOTIFY_PAYLOAD 7000         /* bytes per pg_notify (the server's limit is 8000) */
#define HEALTH_MS 2000              /* a listener query must be answered within this */

struct pg_store;

struct conn {
    PGconn *pg;
    struct pg_store *st;   /* for the outage log (pg_down, pg_up) */
    struct {
        char *sql;
        char name[24];
    } cache[STMT_CACHE];
    unsigned next_name;
    char sqlstate[6];    /* of the last failed statement */
    char commit_state[6];   /* of the last failed commit() */
    bool primed;         /* reader_end() sent COMMIT; BEGIN ahead */
    bool broken;         /* never reuse */
    bool silent;         /* timed_exec: broken because the server did not answer */
    struct conn *next;   /* the pool's idle list */
    /* while a call is under way (conn_busy .. conn_idle, under bmu): the
     * busy list, since when, and a dup of the socket for cut_stuck() */
    struct conn *bnext, *bprev;
    int64_t busy_since;
    int cut_fd;          /* -1: none yet */
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
    bool took_event_lock;
    bool retry;                 /* store_write_retry: fn may run again */
    int attempt;                /* 0 for the first run of fn */
    struct hook *hooks;
    size_t nhooks, caphooks;
    json_t *changes;            /* "R|T|E\tproject\tid" -> true, to announce */
    struct job *next;
};

struct pg_store {
    struct store_base base;
    char *url;
    enum store_fsync fsync;
    struct conn *wconn;         /* the writer thread's */
    bool event_locked;          /* writer thread: this batch holds EVENT_LOCK */
    pthread_t writer;
    pthread_mutex_t mu;
    pthread_cond_t cond_jobs;   /* writer waits for jobs */
    pthread_cond_t cond_done;   /* callers wait for their job */
    struct job *head, *tail;
    bool stopping;
    /* the read pool, guarded by pmu */
    pthread_mutex_t pmu;
    pthread_cond_t pcond;
    struct conn *idle;
    int nopen, maxopen;
    /* connections inside a call, guarded by bmu (cut_stuck) */
    pthread_mutex_t bmu;
    struct conn *busy;
    /* /readyz's own connection, guarded by pingmu */
    pthread_mutex_t pingmu;
    struct conn *pconn;
    /* several nodes */
    char node_id[ID_LEN];
    int64_t node_key;           /* advisory lock key of node_id */
    int writer_pid;             /* backend pid of wconn (atomic): skip our own notifies */
    bool leader;                /* atomic */
    pthread_t listener;
    bool listener_started;
    struct conn *lconn;         /* handed from pg_open to the listener */
    pthread_mutex_t lmu;        /* guards lstop; lcond wakes the listener */
    pthread_cond_t lcond;
    bool lstop;
    pthread_mutex_t dmu;        /* guards watch_fn/ctx; held while calling it */
    store_watch_fn watch_fn;
    void *watch_ctx;
    int64_t poll_ms;
    /* fault injection for tests (writer thread only): conflicts to simulate */
    int64_t fault_jobs, fault_batches;
    int64_t fault_goodbyes;     /* QUERN_PG_FAULT_WRITER_GOODBYES: see fault_goodbye */
    bool fault_every_run;       /* QUERN_PG_FAULT_EVERY_RUN=1: not only first runs */
    int64_t blob_grace_ms;      /* STORE_BLOB_GRACE_MS; QUERN_BLOB_GRACE_MS for tests */
    bool down;                  /* atomic: the outage was logged (pg_down) */
};

struct pg_tx {
    struct store_tx_base base;
    struct pg_store *st;
    struct conn *c;
    struct job *job;            /* NULL for a read tx */
};

#define PG(st) ((struct pg_store *)(st))
#define TX(tx) ((struct pg_tx *)(tx))

/* ---- connections and statements ---- */

static void quiet_notices(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;   /* "relation already exists, skipping" and the like */
}

/* A notice on a connection from conn_open().  A FATAL one is the server's
 * goodbye read while the connection was idle (a restart: "terminating
 * connection due to administrator command"): never use it again, although
 * libpq still says CONNECTION_OK until it reads the end of the stream. */
static void conn_notice(void *arg, const PGresult *r)
{
    struct conn *c = arg;
    const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (sev && (!strcmp(sev, "FATAL") || !strcmp(sev, "PANIC")))
        c->broken = true;
}

static void cache_clear(struct conn *c)
{
    for (size_t i = 0; i < STMT_CACHE; i++) {
        free(c->cache[i].sql);
        c->cache[i].sql = NULL;
    }
}

static void conn_free(struct conn *c)
{
    if (!c)
        return;
    cache_clear(c);
    PQfinish(c->pg);
    if (c->cut_fd >= 0)
        close(c->cut_fd);
    free(c);
}

/* libpq's message on one line (it spans several, indented by tabs):
 * whitespace runs as one space, none at the ends.  The caller frees it. */
static char *pq_flat(const char *m)
{
    char *s = xstrdup(m ? m : "");
    size_t n = 0;
    bool space = false;
    for (const char *p = s; *p; p++) {
        if (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') {
            space = n > 0;
            continue;
        }
        if (space)
            s[n++] = ' ';
        space = false;
        s[n++] = *p;
    }
    s[n] = 0;
    return s;
}

/* Outage lines: one when PostgreSQL cannot be reached (what failed first,
 * and why), one when a connection succeeds again; not one per request. */
static void pg_down(struct pg_store *st, const char *what, const char *why)
{
    if (__atomic_exchange_n(&st->down, true, __ATOMIC_RELAXED))
        return;
    char *m = pq_flat(why);
    log_write(LOG_ERROR, "postgres", json_pack("{s:s, s:s}", "what", what, "error", m),
              "PostgreSQL is unreachable");
    free(m);
}

static void pg_up(struct pg_store *st)
{
    if (__atomic_exchange_n(&st->down, false, __ATOMIC_RELAXED))
        log_write(LOG_INFO, "postgres", NULL, "PostgreSQL is reachable again");
}

/* A statement of c failed: an outage when c is gone, else its own line. */
static void stmt_failed(struct conn *c, const char *sql)
{
    if (PQstatus(c->pg) != CONNECTION_OK || c->broken) {
        pg_down(c->st, "a statement", PQerrorMessage(c->pg));
        return;
    }
    char *m = pq_flat(PQerrorMessage(c->pg));
    log_write(LOG_ERROR, "postgres", json_pack("{s:s, s:s}", "sql", sql, "error", m),
              "statement failed");
    free(m);
}

/* A server that stops answering without closing (a paused or hung
 * PostgreSQL: the kernel still acknowledges every byte, so neither
 * keepalives nor tcp_user_timeout fire) left a call blocked in libpq for
 * ever, and with it an HTTP thread and every connection that thread
 * serves (/healthz included).  So each call is on a busy list while under
 * way, and when the listener finds the server unanswering it cuts the
 * calls older than HEALTH_MS (cut_stuck): shutdown() of a dup of the
 * socket ends the blocked read at once, and the call fails as on a lost
 * connection.  The dup keeps the socket (not merely its number) until
 * conn_free, so a cut never reaches a descriptor reused meanwhile. */
static void conn_busy(struct pg_store *st, struct conn *c)
{
    pthread_mutex_lock(&st->bmu);
    if (c->cut_fd < 0 && PQstatus(c->pg) == CONNECTION_OK && PQsocket(c->pg) >= 0)
        c->cut_fd = dup(PQsocket(c->pg));
    c->busy_since = mono_ms();
    c->bprev = NULL;
    c->bnext = st->busy;
    if (st->busy)
        st->busy->bprev = c;
    st->busy = c;
    pthread_mutex_unlock(&st->bmu);
}

static void conn_idle(struct pg_store *st, struct conn *c)
{
    pthread_mutex_lock(&st->bmu);
    if (c->busy_since) {
        if (c->bprev)
            c->bprev->bnext = c->bnext;
        else
            st->busy = c->bnext;
        if (c->bnext)
            c->bnext->bprev = c->bprev;
        c->bnext = c->bprev = NULL;
        c->busy_since = 0;
    }
    pthread_mutex_unlock(&st->bmu);
}

static void cut_stuck(struct pg_store *st)
{
    int n = 0;
    int64_t now = mono_ms();
    pthread_mutex_lock(&st->bmu);
    for (struct conn *c = st->busy; c; c = c->bnext) {
        if (c->cut_fd >= 0 && now - c->busy_since >= HEALTH_MS) {
            shutdown(c->cut_fd, SHUT_RDWR);
            close(c->cut_fd);
            c->cut_fd = -1;
            n++;
        }
    }
    pthread_mutex_unlock(&st->bmu);
    if (n)
        log_write(LOG_WARN, "postgres", json_pack("{s:i}", "cut", n),
                  "the server does not answer; %d call(s) waiting for more than %d ms cut off",
                  n, HEALTH_MS);
}

static int simple(struct conn *c, const char *sql);

/* Every connection, both ends: a peer that goes silent (a network cut) is
 * given up after ~4 s.  The server side matters most: a session cut off
 * inside a transaction would otherwise keep its row and advisory locks
 * (EVENT_LOCK included, stalling every node's writer) until the kernel's
 * default keepalive, two hours later.  The client side makes this node's
 * own calls fail instead of hanging until the link comes back. */
#define TCP_USER_TIMEOUT "4000"
#define SESSION_TIMEOUTS "SET tcp_keepalives_idle = 2; SET tcp_keepalives_interval = 1; " \
                         "SET tcp_keepalives_count = 2; SET tcp_user_timeout = " TCP_USER_TIMEOUT

static struct conn *conn_open(struct pg_store *st, const char *connect_timeout, char **err)
{
    const char *url = st->url;
    const char *keys[] = {"dbname", "application_name", "client_encoding", "connect_timeout",
                          "keepalives", "keepalives_idle", "keepalives_interval",
                          "keepalives_count", "tcp_user_timeout", NULL};
    const char *vals[] = {url, "quernd", "UTF8", connect_timeout, "1", "2", "1", "2",
                          TCP_USER_TIMEOUT, NULL};
    struct conn *c = xcalloc(1, sizeof *c);
    c->cut_fd = -1;
    c->st = st;
    c->pg = PQconnectdbParams(keys, vals, 1);
    if (!c->pg || PQstatus(c->pg) != CONNECTION_OK || simple(c, SESSION_TIMEOUTS)) {
        const char *m = c->pg ? PQerrorMessage(c->pg) : "out of memory";
        if (err)
            *err = xasprintf("cannot connect to PostgreSQL: %s", m);
        else
            pg_down(st, "cannot connect", m);
        conn_free(c);
        return NULL;
    }
    PQsetNoticeReceiver(c->pg, conn_notice, c);
    pg_up(st);
    return c;
}

static bool conn_bad(const struct conn *c)
{
    return c->broken || PQstatus(c->pg) != CONNECTION_OK;
}

/* Runs a constant statement through the simple protocol.  0 or -EIO. */
static int simple(struct conn *c, const char *sql)
{
    PGresult *r = PQexec(c->pg, sql);
    ExecStatusType s = PQresultStatus(r);
    int rc = 0;
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        stmt_failed(c, sql);
        rc = -EIO;
    }
    PQclear(r);
    return rc;
}

/* The prepared statement's name for sql on c, preparing it on first use.
 * NULL when the server refused it (logged). */
static const char *prepared(struct conn *c, const char *sql, int nparams)
{
    size_t h = 5381;
    for (const char *p = sql; *p; p++)
        h = h * 33 + (unsigned char)*p;
    size_t slot = STMT_CACHE;
    for (size_t i = 0; i < STMT_CACHE; i++) {
        size_t k = (h + i) % STMT_CACHE;
        if (c->cache[k].sql && !strcmp(c->cache[k].sql, sql))
            return c->cache[k].name;
        if (!c->cache[k].sql) {
            slot = k;
            break;
        }
    }
    if (slot == STMT_CACHE) {
        /* Full (many distinct dynamic lists): evict the home slot.  The
         * DEALLOCATE may fail inside an aborted transaction; names are never
         * reused, so a leftover server-side statement is only a small leak. */
        slot = h % STMT_CACHE;
        char *dealloc = xasprintf("DEALLOCATE %s", c->cache[slot].name);
        PQclear(PQexec(c->pg, dealloc));
        free(dealloc);
        free(c->cache[slot].sql);
        c->cache[slot].sql = NULL;
    }
    char name[24];
    snprintf(name, sizeof name, "q%u", c->next_name++);
    PGresult *r = PQprepare(c->pg, name, sql, nparams, NULL);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        stmt_failed(c, sql);
    PQclear(r);
    if (!ok)
        return NULL;
    c->cache[slot].sql = xstrdup(sql);
    memcpy(c->cache[slot].name, name, sizeof name);
    return c->cache[slot].name;
}

/* Executes sql (prepared, cached) with n text params (NULL = SQL NULL).
 * Returns the result, which the caller PQclear()s, or NULL on failure. */
static PGresult *run(struct conn *c, const char *sql, int n, const char *const *vals)
{
    const char *name = prepared(c, sql, n);
    if (!name)
        return NULL;
    PGresult *r = PQexecPrepared(c->pg, name, n, vals, NULL, NULL, 0);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        /* the statements after a failed one fail with 25P02: keep the cause */
        if (!state || strcmp(state, "25P02") || !c->sqlstate[0])
            snprintf(c->sqlstate, sizeof c->sqlstate, "%s", state ? state : "");
        if (!strcmp(c->sqlstate, "40P01"))   /* a lost deadlock is expected now and then */
            log_write(LOG_WARN, "postgres", NULL,
                      "deadlock with another node: one write is rolled back");
        else
            stmt_failed(c, sql);
        PQclear(r);
        return NULL;
    }
    return r;
}

/* A query under construction: SQL text plus its numbered text params. */
struct q {
    struct buf sql;
    const char **vals;
    char **own;
    int n, cap;
};

static void q_init(struct q *q)
{
    memset(q, 0, sizeof *q);
    buf_init(&q->sql);
    buf_puts(&q->sql, "");
}

static void q_release(struct q *q)
{
    for (int i = 0; i < q->n; i++)
        free(q->own[i]);
    free(q->own);
    free(q->vals);
    buf_release(&q->sql);
}

/* Adds a param (copied) and appends its placeholder "$n" to the SQL. */
static void q_arg(struct q *q, const char *v)
{
    if (q->n == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 8;
        q->vals = xrealloc(q->vals, (size_t)q->cap * sizeof *q->vals);
        q->own = xrealloc(q->own, (size_t)q->cap * sizeof *q->own);
    }
    q->own[q->n] = v ? xstrdup(v) : NULL;
    q->vals[q->n] = q->own[q->n];
    q->n++;
    buf_printf(&q->sql, "$%d", q->n);
}

static void q_int(struct q *q, int64_t v)
{
    char s[24];
    snprintf(s, sizeof s, "%lld", (long long)v);
    q_arg(q, s);
    buf_puts(&q->sql, "::bigint");
}

/* Ends q's SQL with " LIMIT n OFFSET m": a limit of 0 or less is no limit,
 * an offset of 0 or less none. */
static void q_page(struct q *q, int64_t limit, int64_t offset)
{
    buf_puts(&q->sql, " LIMIT ");
    if (limit > 0)
        q_int(q, limit);
    else
        buf_puts(&q->sql, "ALL");
    if (offset > 0) {
        buf_puts(&q->sql, " OFFSET ");
        q_int(q, offset);
    }
}

static PGresult *q_run(struct conn *c, struct q *q)
{
    return run(c, q->sql.data, q->n, q->vals);
}

static int64_t result_i64(PGresult *r, int row, int col)
{
    int64_t v = 0;
    if (r && PQntuples(r) > row && !PQgetisnull(r, row, col))
        parse_i64(PQgetvalue(r, row, col), &v);
    return v;
}

static int64_t affected(PGresult *r)
{
    int64_t v = 0;
    parse_i64(PQcmdTuples(r), &v);
    return v;
}

static json_t *col_json(PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return NULL;
    return jload(PQgetvalue(r, row, col), (size_t)PQgetlength(r, row, col), 0);
}

/* ---- migrations ---- */

static char *schema_v1(void)
{
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "CREATE TABLE meta(key text PRIMARY KEY, value text NOT NULL);\n");
    for (int k = 0; k < SK__COUNT; k++) {
        const char *t = store_kind_name((enum store_kind)k);
        buf_printf(&b, "CREATE TABLE %s(seq bigserial PRIMARY KEY, project_id text NOT NULL, "
                       "id text NOT NULL, doc text NOT NULL", t);
        for (const char *const *f = store_kind_fields((enum store_kind)k); *f; f++)
            buf_printf(&b, ", f_%s text", *f);
        buf_printf(&b, ", UNIQUE(project_id, id));\n");
        buf_printf(&b, "CREATE INDEX %s_id ON %s(id);\n", t, t);
        for (const char *const *f = store_kind_fields((enum store_kind)k); *f; f++)
            buf_printf(&b, "CREATE INDEX %s_%s ON %s(project_id, f_%s, seq);\n", t, *f, t, *f);
    }
    buf_puts(&b,
             "CREATE TABLE logs(run_id text NOT NULL, seq bigint NOT NULL, project_id text NOT NULL,"
             " entry text NOT NULL, PRIMARY KEY(run_id, seq));\n"
             "CREATE TABLE events(id bigserial PRIMARY KEY, project_id text NOT NULL,"
             " run_id text, type text NOT NULL, created_at bigint NOT NULL, doc text NOT NULL);\n"
             "CREATE INDEX events_run ON events(run_id, id);\n"
             "CREATE INDEX events_project ON events(project_id, id);\n"
             "CREATE TABLE idempotency(scope text NOT NULL, key text NOT NULL, fingerprint text,"
             " status integer NOT NULL, body text NOT NULL, created_at bigint NOT NULL,"
             " PRIMARY KEY(scope, key));\n");
    return buf_steal(&b);
}

/* Shared blobs (store.h "blobs"): the bytes in chunks, and which run
 * references which blob (kept by pg_put/pg_patch/pg_del of runs) so the
 * pruner finds unreferenced blobs by index, not by reading every run. */
static char *schema_v2(void)
{
    return xstrdup(
        "CREATE TABLE blobs(sha text PRIMARY KEY, size bigint NOT NULL,"
        " stored_at bigint NOT NULL);\n"
        "CREATE INDEX blobs_stored ON blobs(stored_at);\n"
        "CREATE TABLE blob_chunks(sha text NOT NULL, n integer NOT NULL, data bytea NOT NULL,"
        " PRIMARY KEY(sha, n));\n"
        "CREATE TABLE blob_refs(sha text NOT NULL, project_id text NOT NULL,"
        " run_id text NOT NULL, PRIMARY KEY(sha, project_id, run_id));\n"
        "CREATE INDEX blob_refs_run ON blob_refs(project_id, run_id);\n");
}

/* Pending webhook deliveries are listed across projects (the dispatcher's
 * reload and rescan): an index that does not start with the project, so that
 * list never reads the delivered history. */
static char *schema_v3(void)
{
    return xstrdup("CREATE INDEX deliveries_status_any ON deliveries(f_status, seq);\n");
}

/* The retention pruner looks for finished runs by completion time (it read
 * the whole runs table): a partial index over finished runs only. */
static char *schema_v4(void)
{
    return xstrdup("CREATE INDEX runs_finished ON runs(((doc::jsonb) ->> 'completed_at')) "
                   "WHERE f_status IN ('completed','failed','timed_out','denied','canceled');\n");
}

/* v5: the unfiltered task and run lists (newest first) read the project's
 * rows through an index in their order, as SQLite's v9. */
static char *schema_v5(void)
{
    return xstrdup("CREATE INDEX tasks_project ON tasks(project_id, seq);\n"
                   "CREATE INDEX runs_project ON runs(project_id, seq);\n");
}

/* v6: shared storage instances (store.h "storage instance files"): a
 * version and the byte total per instance, one row per file naming a blob;
 * the sha index lets the pruner keep the blobs files name. */
static char *schema_v6(void)
{
    return xstrdup("CREATE TABLE storage_state(instance_id text PRIMARY KEY,"
                   " project_id text NOT NULL, version bigint NOT NULL, bytes bigint NOT NULL,"
                   " partial boolean NOT NULL);\n"
                   "CREATE TABLE storage_files(instance_id text NOT NULL, path text NOT NULL,"
                   " size bigint NOT NULL, mode integer NOT NULL, sha text NOT NULL,"
                   " PRIMARY KEY(instance_id, path));\n"
                   "CREATE INDEX storage_files_sha ON storage_files(sha);\n");
}

/* v7: a storage instance's name is unique per project, scope and account.
 * api_storage_create checks the name, then inserts: two nodes creating the
 * same name at once each found none and both inserted (one node's writes are
 * serialised, so only nodes race).  The index makes the loser's insert find
 * the winner's row (pg_put: ON CONFLICT DO NOTHING, -EEXIST: 409).  Rows a
 * race made before keep their files: the oldest keeps the name, each other
 * is renamed "<name> (duplicate <id>)" (ids are unique, so the new names
 * are too). */
static char *schema_v7(void)
{
    return xstrdup("UPDATE storage s SET f_name=n.name, doc=jsonb_set(s.doc::jsonb, '{name}',"
                   " to_jsonb(n.name))::text FROM (SELECT seq, f_name || ' (duplicate ' || id"
                   " || ')' AS name FROM (SELECT seq, id, f_name, row_number() OVER (PARTITION BY"
                   " project_id, f_scope, f_name, coalesce(f_account_id, '') ORDER BY seq) AS k"
                   " FROM storage) d WHERE k > 1) n WHERE s.seq=n.seq;\n"
                   "CREATE UNIQUE INDEX storage_name_unique ON storage(project_id, f_scope, f_name,"
                   " coalesce(f_account_id, ''));\n");
}

/* The rows of task_meta (store.h) for the tasks t that cond selects: one
 * per metadata key whose value the metadata filter can match, that value as
 * the filter computes it (json ->>: a string's content, any other value's
 * text, null left out), so an indexed list answers what the scan answers.
 * A value over STORE_META_VALUE_MAX bytes is left out (a B-tree entry is
 * bounded). */
#define META_ROWS(cond)                                                                     \
    " SELECT t.project_id, j.key, j.value, t.seq FROM tasks t, json_each_text(CASE WHEN"    \
    " json_typeof(t.doc::json->'metadata') = 'object' THEN t.doc::json->'metadata'"         \
    " ELSE '{}'::json END) j WHERE " cond " AND j.value IS NOT NULL"                         \
    " AND octet_length(j.value) <= 512 ON CONFLICT DO NOTHING"

/* v8: the task metadata index (store.h, task_meta), filled from the tasks'
 * metadata.  Tasks without metadata have no row.  And a copy of each task's
 * name (a string; else NULL) in a column, q_name, that `q` reads without
 * parsing the document (as SQLite's v11). */
static char *schema_v8(void)
{
    return xstrdup("ALTER TABLE tasks ADD COLUMN q_name text;\n"
                   "UPDATE tasks SET q_name = CASE json_typeof(doc::json->'name') WHEN 'string'"
                   " THEN doc::json->>'name' END;\n"
                   "CREATE TABLE task_meta(m_project text NOT NULL, m_key text NOT NULL,"
                   " m_value text NOT NULL, m_seq bigint NOT NULL,"
                   " PRIMARY KEY(m_project, m_key, m_value, m_seq));\n"
                   "CREATE INDEX task_meta_seq ON task_meta(m_seq);\n"
                   "INSERT INTO task_meta(m_project, m_key, m_value, m_seq)" META_ROWS("true") ";\n");
}

/* Migrations run in one transaction under an advisory lock (several nodes
 * may start at once); quern_schema records the last one applied, in the same
 * transaction as the migration itself. */
static int migrate(struct conn *c, char **err)
{
    const int latest = 8;
    int rc = simple(c, "BEGIN");
    if (!rc)
        rc = simple(c, "SELECT pg_advisory_xact_lock(x'" MIGRATE_LOCK "'::bigint)");
    if (!rc)
        rc = simple(c, "CREATE TABLE IF NOT EXISTS quern_schema(version integer NOT NULL)");
    if (rc) {
        *err = xasprintf("cannot prepare migrations: %s", PQerrorMessage(c->pg));
        goto fail;
    }
    PGresult *r = PQexec(c->pg, "SELECT COALESCE(MAX(version), 0) FROM quern_schema");
    int64_t version = PQresultStatus(r) == PGRES_TUPLES_OK ? result_i64(r, 0, 0) : -1;
    PQclear(r);
    if (version < 0) {
        *err = xstrdup("cannot read the schema version");
        rc = -EIO;
        goto fail;
    }
    if (version > latest) {
        *err = xasprintf("database schema version %lld is newer than this quernd (%d)",
                         (long long)version, latest);
        rc = -EINVAL;
        goto fail;
    }
    for (int v = (int)version + 1; v <= latest; v++) {
        char *sql = v == 1   ? schema_v1()
                    : v == 2 ? schema_v2()
                    : v == 3 ? schema_v3()
                    : v == 4 ? schema_v4()
                    : v == 5 ? schema_v5()
                    : v == 6 ? schema_v6()
                    : v == 7 ? schema_v7()
                    : v == 8 ? schema_v8()
                             : NULL;
        char *ver = xasprintf("DELETE FROM quern_schema; INSERT INTO quern_schema VALUES(%d)", v);
        rc = simple(c, sql);
        if (!rc)
            rc = simple(c, ver);
        free(sql);
        free(ver);
        if (rc) {
            *err = xasprintf("migration %d failed: %s", v, PQerrorMessage(c->pg));
            goto fail;
        }
    }
    if (simple(c, "COMMIT")) {
        *err = xasprintf("cannot commit migrations: %s", PQerrorMessage(c->pg));
        return -EIO;
    }
    return 0;
fail:
    simple(c, "ROLLBACK");
    return rc ? rc : -EIO;
}

/* ---- the writer ---- */

static int writer_setup(struct pg_store *st, struct conn *c)
{
    return simple(c, st->fsync == STORE_FSYNC_ALWAYS ? "SET synchronous_commit TO on"
                                                     : "SET synchronous_commit TO off");
}

/* The writer's connection, reset first when it broke.  NULL when PostgreSQL
 * cannot be reached right now. */
static struct conn *writer_conn(struct pg_store *st)
{
    struct conn *c = st->wconn;
    if (!conn_bad(c))
        return c;
    PQreset(c->pg);
    cache_clear(c);
    /* a new session: what marked the old one (a FATAL notice) is gone with
     * it.  Kept, the flag failed every write for ever after the reset. */
    c->broken = false;
    c->silent = false;
    c->primed = false;
    c->sqlstate[0] = 0;
    if (c->cut_fd >= 0) {   /* of the old socket (c is not busy here) */
        close(c->cut_fd);
        c->cut_fd = -1;
    }
    if (conn_bad(c) || simple(c, SESSION_TIMEOUTS) || writer_setup(st, c)) {
        pg_down(st, "the writer cannot reconnect", PQerrorMessage(c->pg));
        return NULL;
    }
    pg_up(st);
    __atomic_store_n(&st->writer_pid, PQbackendPID(c->pg), __ATOMIC_RELAXED);
    return c;
}

/* The pg_notify statements announcing the changes of the batch's jobs that
 * still stand (rc == 0), ready to precede COMMIT; "" when none. */
static void notify_flush(struct conn *c, struct buf *sql, struct buf *pay)
{
    if (!pay->len)
        return;
    char *lit = PQescapeLiteral(c->pg, pay->data, pay->len);
    if (lit) {
        buf_printf(sql, "SELECT pg_notify('" NOTIFY_CHANNEL "', %s); ", lit);
        PQfreemem(lit);
    }
    pay->len = 0;
    pay->data[0] = 0;
}

/* An "E" line (events of a run were written) says nothing the job's "R"
 * line of the same run does not: listeners wake that run's streams on it. */
static bool redundant_event(struct job *j, const char *line)
{
    if (line[0] != 'E')
        return false;
    char *r = xstrdup(line);
    r[0] = 'R';
    bool has = json_object_get(j->changes, r) != NULL;
    free(r);
    return has;
}

static char *notify_sql(struct conn *c, struct job *batch)
{
    struct buf sql, pay;
    buf_init(&sql);
    buf_init(&pay);
    buf_puts(&sql, "");
    buf_puts(&pay, "");
    json_t *seen = json_object();
    for (struct job *j = batch; j; j = j->next) {
        if (j->rc || !j->changes)
            continue;
        const char *line;
        json_t *v;
        json_object_foreach(j->changes, line, v) {
            if (json_object_get(seen, line) || redundant_event(j, line))
                continue;
            json_object_set(seen, line, json_true());
            if (pay.len + strlen(line) + 1 > NOTIFY_PAYLOAD)
                notify_flush(c, &sql, &pay);
            buf_printf(&pay, "%s\n", line);
        }
    }
    notify_flush(c, &sql, &pay);
    json_decref(seen);
    buf_release(&pay);
    return buf_steal(&sql);
}

static void job_forget_changes(struct job *j)
{
    json_decref(j->changes);
    j->changes = NULL;
}

static void note_line(struct pg_tx *tx, char kind, const char *project_id, const char *id)
{
    if (!tx->job->changes)
        tx->job->changes = json_object();
    char *line = xasprintf("%c\t%s\t%s", kind, project_id, id);
    json_object_set_new(tx->job->changes, line, json_true());
    free(line);
}

/* Records that tx's job changed a run or task, for the commit's notify. */
static void note_change(struct pg_tx *tx, enum store_kind kind, const char *project_id,
                        const char *id)
{
    if (!tx->job || (kind != SK_RUN && kind != SK_TASK) || !project_id || !id)
        return;
    note_line(tx, kind == SK_RUN ? 'R' : 'T', project_id, id);
}

/* Records that tx's job wrote an event (of run_id, or of no run), so that
 * other nodes' streams read it as it happens: a log entry appended through
 * one node changes no run. */
static void note_event(struct pg_tx *tx, const char *project_id, const char *run_id)
{
    if (tx->job && project_id)
        note_line(tx, 'E', project_id, run_id ? run_id : "");
}

static bool lost_state(const char *s)
{
    return !strcmp(s, "40P01") || !strcmp(s, "40001") || !strcmp(s, "55P03");
}

static bool lost_race(const struct conn *c)
{
    return lost_state(c->sqlstate);
}

static void hooks_run(struct job *j, bool committed)
{
    for (size_t i = 0; i < j->nhooks; i++)
        j->hooks[i].fn(j->hooks[i].arg, committed);
    j->nhooks = 0;
}

/* Runs a statement list that ends with COMMIT.  0 when it committed; -EIO
 * otherwise (COMMIT of an aborted transaction "succeeds" with tag ROLLBACK). */
static int commit(struct conn *c, const char *sql)
{
    PGresult *r = PQexec(c->pg, sql);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK && !strcmp(PQcmdStatus(r), "COMMIT") ? 0 : -EIO;
    const char *state = rc ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    snprintf(c->commit_state, sizeof c->commit_state, "%s", state ? state : "");
    PQclear(r);
    return rc;
}

/* Test-only fault injection (QUERN_PG_FAULT_JOB_CONFLICTS=N,
 * QUERN_PG_FAULT_BATCH_CONFLICTS=M): the first run of each of the first N
 * retryable jobs, and the COMMIT of each of the first M batches made only
 * of first runs of retryable jobs, fail exactly as if PostgreSQL had chosen
 * them as the loser of a deadlock (SQLSTATE 40P01 raised in the
 * transaction), so the retry paths run deterministically.  With
 * QUERN_PG_FAULT_EVERY_RUN=1 the job faults hit later runs too (to see a
 * write give up). */
#define FAULT_SQL "DO $$BEGIN RAISE EXCEPTION 'quern: injected conflict' " \
                  "USING ERRCODE = 'deadlock_detected'; END$$; "

static bool fault_job(struct pg_store *st, struct conn *c, struct job *j)
{
    if (!j->retry || (j->attempt && !st->fault_every_run) || st->fault_jobs <= 0)
        return false;
    st->fault_jobs--;
    PQclear(PQexec(c->pg, FAULT_SQL));
    snprintf(c->sqlstate, sizeof c->sqlstate, "40P01");
    return true;
}

/* Test-only (QUERN_PG_FAULT_WRITER_GOODBYES=N): after each of the first N
 * committed batches the writer's connection is marked broken, as when the
 * server's goodbye (a FATAL notice: a restart, pg_terminate_backend) came
 * in the same read as the COMMIT's answer while libpq still says
 * CONNECTION_OK.  The next batch must reset it and go on. */
static void fault_goodbye(struct pg_store *st, struct conn *c)
{
    if (st->fault_goodbyes <= 0)
        return;
    st->fault_goodbyes--;
    c->broken = true;
}

static const char *fault_batch(struct pg_store *st, struct job *batch)
{
    if (st->fault_batches <= 0)
        return "";
    for (struct job *j = batch; j; j = j->next)
        if (!j->retry || j->attempt)
            return "";
    st->fault_batches--;
    return FAULT_SQL;
}

/* One batch = one transaction.  Before each job a savepoint "job" is open
 * that holds every earlier job's changes; ROLLBACK TO undoes just the
 * current job (invariant 2) and leaves the savepoint open for the next one.
 * Savepoint steps ride in the same round trip as their neighbours
 * ("BEGIN; SAVEPOINT job", "RELEASE SAVEPOINT job; SAVEPOINT job",
 * "RELEASE SAVEPOINT job; COMMIT"), so a lone write costs its own statements
 * plus two round trips. */
static void run_batch(struct pg_store *st, struct job *batch)
{
    struct conn *c = writer_conn(st);
    if (c)
        conn_busy(st, c);
    int rc = c ? simple(c, "BEGIN; SAVEPOINT job") : -EIO;
    if (rc && c && conn_bad(c)) {
        /* the connection died while idle (PostgreSQL restarted): nothing
         * was sent yet, so reconnect and begin once more */
        conn_idle(st, c);
        c = writer_conn(st);
        if (c)
            conn_busy(st, c);
        rc = c ? simple(c, "BEGIN; SAVEPOINT job") : -EIO;
    }
    bool committed = false;
    bool sent_commit = false;   /* from here a failure leaves the outcome unknown */
    bool lost = false;   /* the whole transaction lost a conflict at COMMIT */
    const char *fault = c ? fault_batch(st, batch) : "";
    st->event_locked = false;
    for (struct job *j = batch; j; j = j->next) {
        if (rc) {
            j->rc = -EIO;
            continue;
        }
        struct pg_tx tx = {{&store_pg_backend}, st, c, j};
        j->took_event_lock = false;
        c->sqlstate[0] = 0;
        fault_job(st, c, j);
        j->rc = j->fn((struct store_tx *)&tx, j->arg);
        if (j->rc && lost_race(c))
            j->rc = -EAGAIN;
        else if (j->rc && !strcmp(c->sqlstate, "53100"))
            j->rc = -ENOSPC;   /* disk_full: say so (api_store_error) */
        if (!j->rc) {
            if (j->next && !simple(c, "RELEASE SAVEPOINT job; SAVEPOINT job"))
                continue;
            if (!j->next) {
                char *notify = notify_sql(c, batch);
                char *sql = xasprintf("RELEASE SAVEPOINT job; %s%sCOMMIT", notify, fault);
                sent_commit = true;
                int crc = commit(c, sql);
                free(sql);
                free(notify);
                if (!crc) {
                    committed = true;
                    continue;
                }
                if (lost_state(c->commit_state)) {
                    /* RELEASE went through, the transaction then lost: the
                     * batch is gone as a whole */
                    lost = true;
                    rc = -EAGAIN;
                    continue;
                }
            }
            if (PQtransactionStatus(c->pg) != PQTRANS_INERROR) {
                rc = -EIO;     /* the COMMIT itself failed: the batch is lost */
                continue;
            }
            /* fn returned 0 although a statement failed, so RELEASE found
             * the transaction aborted: take the job back, keep the others */
            j->rc = lost_race(c) ? -EAGAIN : -EIO;
        }
        job_forget_changes(j);
        rc = simple(c, "ROLLBACK TO SAVEPOINT job");
        if (j->took_event_lock)      /* released with the savepoint */
            st->event_locked = false;
        hooks_run(j, false);         /* invariant 3 */
    }
    if (!rc && !committed) {
        char *notify = notify_sql(c, batch);
        char *sql = xasprintf("%s%sCOMMIT", notify, fault);
        sent_commit = true;
        rc = commit(c, sql);
        free(sql);
        free(notify);
        lost = rc && lost_state(c->commit_state);
        if (rc)
            stmt_failed(c, "COMMIT");
    }
    if (rc && c && !conn_bad(c) && PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
        simple(c, "ROLLBACK");
    }
    /* Invariant 3: hooks after the commit, in commit order.  A batch lost
     * to a conflict as a whole wrote nothing: its jobs that had succeeded
     * get -EAGAIN (run again when they allow it), the others keep their
     * own failure.  A batch whose connection failed before its COMMIT was
     * sent wrote nothing either: -ENOTCONN (PostgreSQL is unreachable);
     * any other failed COMMIT leaves the outcome unknown: -EIO. */
    if (c && !rc)
        fault_goodbye(st, c);
    if (c)
        conn_idle(st, c);
    bool unreachable = rc && !sent_commit && (!c || conn_bad(c));
    for (struct job *j = batch; j; j = j->next) {
        if (rc && lost)
            j->rc = j->rc ? j->rc : -EAGAIN;
        else if (unreachable)
            j->rc = -ENOTCONN;
        else if (rc)
            j->rc = -EIO;
        hooks_run(j, rc == 0);
        job_forget_changes(j);
    }
}

static void *writer_main(void *arg)
{
    struct pg_store *st = arg;
    pthread_mutex_lock(&st->mu);
    for (;;) {
        while (!st->head && !st->stopping)
            pthread_cond_wait(&st->cond_jobs, &st->mu);
        if (!st->head && st->stopping)
            break;
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
        for (struct job *j = batch; j; j = j->next)
            j->done = true;
        pthread_cond_broadcast(&st->cond_done);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

/* Queues one run of fn and waits for its batch. */
static int write_job(struct pg_store *st, store_fn fn, void *arg, bool retry, int attempt)
{
    struct job j = {.fn = fn, .arg = arg, .retry = retry, .attempt = attempt};
    pthread_mutex_lock(&st->mu);
    if (st->stopping) {
        pthread_mutex_unlock(&st->mu);
        return -ESHUTDOWN;
    }
    if (st->tail)
        st->tail->next = &j;
    else
        st->head = &j;
    st->tail = &j;
    pthread_cond_signal(&st->cond_jobs);
    while (!j.done)
        pthread_cond_wait(&st->cond_done, &st->mu);
    pthread_mutex_unlock(&st->mu);
    free(j.hooks);
    return j.rc;
}

static int pg_write(struct store *s, store_fn fn, void *arg)
{
    return write_job(PG(s), fn, arg, false, 0);
}

/* Each run of fn is a job of its own, queued again after a failed one:
 * it gets its own savepoint in whichever batch takes it, so the retry
 * keeps group commit as it is, and the writer thread never sleeps (the
 * pause is on the caller's thread).  The pause is random (jitter) and
 * grows: two nodes that deadlocked on the same rows do not meet again in
 * step.  A lost deadlock has already waited deadlock_timeout (1 s by
 * default) inside PostgreSQL, so a few tens of ms more cost little. */
static int pg_write_retry(struct store *s, store_fn fn, void *arg)
{
    struct pg_store *st = PG(s);
    for (int attempt = 0;; attempt++) {
        int rc = write_job(st, fn, arg, true, attempt);
        if (rc != -EAGAIN || attempt >= STORE_WRITE_RETRIES)
            return rc;
        uint32_t rnd;
        random_bytes(&rnd, sizeof rnd);
        int64_t base = 5LL << attempt;   /* 5, 10, 20, 40 ms */
        int64_t ms = base + (int64_t)(rnd % (uint32_t)base);
        log_write(LOG_WARN, "postgres", NULL,
                  "a write lost a conflict with another node; retry %d of %d in %lld ms",
                  attempt + 1, STORE_WRITE_RETRIES, (long long)ms);
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
        while (nanosleep(&ts, &ts) && errno == EINTR) {
        }
    }
}

/* ---- the read pool ---- */

static struct conn *reader_get(struct pg_store *st)
{
    pthread_mutex_lock(&st->pmu);
    while (!st->idle && st->nopen >= st->maxopen)
        pthread_cond_wait(&st->pcond, &st->pmu);
    struct conn *c = st->idle;
    if (c) {
        st->idle = c->next;
        c->next = NULL;
        pthread_mutex_unlock(&st->pmu);
        return c;
    }
    st->nopen++;
    pthread_mutex_unlock(&st->pmu);
    c = conn_open(st, "10", NULL);
    if (!c) {
        pthread_mutex_lock(&st->pmu);
        st->nopen--;
        pthread_cond_signal(&st->pcond);
        pthread_mutex_unlock(&st->pmu);
    }
    return c;
}

static void reader_put(struct pg_store *st, struct conn *c)
{
    conn_idle(st, c);
    pthread_mutex_lock(&st->pmu);
    if (conn_bad(c)) {
        st->nopen--;
        pthread_mutex_unlock(&st->pmu);
        conn_free(c);
        pthread_mutex_lock(&st->pmu);
    } else {
        c->next = st->idle;
        st->idle = c;
    }
    pthread_cond_signal(&st->pcond);
    pthread_mutex_unlock(&st->pmu);
}

/* Collects the results of the statements sent ahead by reader_end().
 * 0 when they all succeeded: c is then inside a fresh transaction. */
static int drain(struct conn *c)
{
    int rc = 0;
    PGresult *r;
    while ((r = PQgetResult(c->pg)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = -EIO;
        PQclear(r);
    }
    c->primed = false;
    return rc;
}

/* A pooled connection inside a read transaction; NULL when PostgreSQL is
 * unreachable.  Connections that broke while idle (PostgreSQL restarted:
 * every pooled one did) are dropped and replaced, up to a fresh one, so
 * the first reads after a restart do not fail on stale connections.
 * A REPEATABLE READ transaction takes its snapshot at its first query, not
 * at BEGIN, so the BEGIN that reader_end() sent ahead (and that waited in
 * the pool) still yields a snapshot taken now. */
static struct conn *reader_begin(struct pg_store *st)
{
    for (int attempt = 0; attempt <= st->maxopen; attempt++) {
        struct conn *c = reader_get(st);
        if (!c)
            return NULL;
        conn_busy(st, c);
        /* what the server sent while c was idle: a restart's goodbye (its
         * answers to the primed BEGIN may have been read long before) */
        if (!PQconsumeInput(c->pg))
            c->broken = true;
        bool primed = c->primed;
        if (primed && !conn_bad(c) && drain(c))
            c->broken = true;
        /* the goodbye may have come in the same read as the primed answers:
         * parse what is left (a FATAL notice marks c broken) and read once
         * more, which finds the end of the stream if the server closed it */
        if (!conn_bad(c) && (!PQconsumeInput(c->pg) || PQisBusy(c->pg)))
            c->broken = true;
        if (!conn_bad(c) &&
            (primed || !simple(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")))
            return c;
        c->broken = true;   /* dead, or alive in an unknown state: drop it */
        reader_put(st, c);
    }
    return NULL;
}

/* Ends c's read transaction and returns it to the pool.  The COMMIT and
 * the next transaction's BEGIN are sent without waiting for their answers
 * (the next reader_begin() collects them): a read costs no round trip
 * beyond its own queries. */
static void reader_end(struct pg_store *st, struct conn *c)
{
    if (!conn_bad(c) &&
        PQsendQuery(c->pg, "COMMIT; BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") == 1)
        c->primed = true;
    reader_put(st, c);
}

static int pg_read(struct store *s, store_fn fn, void *arg)
{
    struct pg_store *st = PG(s);
    struct conn *c = reader_begin(st);
    if (!c)
        return -ENOTCONN;
    struct pg_tx tx = {{&store_pg_backend}, st, c, NULL};
    int rc = fn((struct store_tx *)&tx, arg);
    if (conn_bad(c))
        rc = -ENOTCONN;   /* died under the read: what fn saw (an absent row?) is not so */
    else if (PQtransactionStatus(c->pg) == PQTRANS_INERROR)
        rc = -EIO;        /* a statement failed (a timeout): an error, not an absent row */
    reader_end(st, c);
    return rc;
}

static void pg_on_commit(struct store_tx *t, store_hook hook, void *arg)
{
    struct pg_tx *tx = TX(t);
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

static bool pg_is_write(const struct store_tx *t)
{
    return ((const struct pg_tx *)t)->job != NULL;
}

static PGresult *timed_exec(struct conn *c, const char *sql);

/* /readyz: "SELECT 1" on a connection of its own, answered within
 * HEALTH_MS and connected within 2 s (libpq's least connect_timeout), so a
 * paused server or a full pool never holds the probe.  -ETIMEDOUT when the
 * server did not answer in time, -ENOTCONN when it cannot be reached. */
static int pg_ping(struct store *s)
{
    struct pg_store *st = PG(s);
    int rc = 0;
    pthread_mutex_lock(&st->pingmu);
    /* twice at most: a connection the server closed while it was idle (a
     * restart) fails at once and is replaced; a silent server is not
     * waited for twice */
    for (int attempt = 0; attempt < 2; attempt++) {
        if (st->pconn && conn_bad(st->pconn)) {
            conn_free(st->pconn);
            st->pconn = NULL;
        }
        if (!st->pconn) {
            int64_t t0 = mono_ms();
            st->pconn = conn_open(st, "2", NULL);
            if (!st->pconn) {
                rc = mono_ms() - t0 >= 2000 ? -ETIMEDOUT : -ENOTCONN;
                goto out;
            }
        }
        PGresult *r = timed_exec(st->pconn, "SELECT 1");
        rc = r ? 0 : st->pconn->silent ? -ETIMEDOUT : -ENOTCONN;
        PQclear(r);
        if (rc != -ENOTCONN)
            break;
    }
out:
    pthread_mutex_unlock(&st->pingmu);
    return rc;
}

static void *listener_main(void *arg);
static struct conn *listener_connect(struct pg_store *st);
static int64_t node_key(const char *id);

static void destroy_sync(struct pg_store *st)
{
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cond_jobs);
    pthread_cond_destroy(&st->cond_done);
    pthread_mutex_destroy(&st->pmu);
    pthread_cond_destroy(&st->pcond);
    pthread_mutex_destroy(&st->lmu);
    pthread_cond_destroy(&st->lcond);
    pthread_mutex_destroy(&st->dmu);
    pthread_mutex_destroy(&st->bmu);
    pthread_mutex_destroy(&st->pingmu);
}

static struct store *pg_open(const char *url, const struct store_opts *opts, char **err)
{
    struct pg_store *st = xcalloc(1, sizeof *st);
    st->base.be = &store_pg_backend;
    st->url = xstrdup(url);
    st->fsync = opts ? opts->fsync : STORE_FSYNC_ALWAYS;
    st->maxopen = opts && opts->read_conns > 0 ? opts->read_conns : DEFAULT_READ_CONNS;
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cond_jobs, NULL);
    pthread_cond_init(&st->cond_done, NULL);
    pthread_mutex_init(&st->pmu, NULL);
    pthread_cond_init(&st->pcond, NULL);
    pthread_mutex_init(&st->lmu, NULL);
    pthread_cond_init(&st->lcond, NULL);
    pthread_mutex_init(&st->dmu, NULL);
    pthread_mutex_init(&st->bmu, NULL);
    pthread_mutex_init(&st->pingmu, NULL);
    id_new("node", st->node_id);
    st->node_key = node_key(st->node_id);
    const char *grace = getenv("QUERN_BLOB_GRACE_MS");
    if (!grace || parse_i64(grace, &st->blob_grace_ms) || st->blob_grace_ms < 0)
        st->blob_grace_ms = STORE_BLOB_GRACE_MS;
    const char *fault = getenv("QUERN_PG_FAULT_JOB_CONFLICTS");
    if (!fault || parse_i64(fault, &st->fault_jobs))
        st->fault_jobs = 0;
    fault = getenv("QUERN_PG_FAULT_EVERY_RUN");
    st->fault_every_run = fault && !strcmp(fault, "1");
    fault = getenv("QUERN_PG_FAULT_BATCH_CONFLICTS");
    if (!fault || parse_i64(fault, &st->fault_batches))
        st->fault_batches = 0;
    fault = getenv("QUERN_PG_FAULT_WRITER_GOODBYES");
    if (!fault || parse_i64(fault, &st->fault_goodbyes))
        st->fault_goodbyes = 0;
    const char *poll = getenv("QUERN_PG_POLL_MS");
    if (!poll || parse_i64(poll, &st->poll_ms) || st->poll_ms < 0)
        st->poll_ms = 0;
    st->wconn = conn_open(st, "10", err);
    if (!st->wconn)
        goto fail;
    if (migrate(st->wconn, err))
        goto fail;
    if (writer_setup(st, st->wconn)) {
        *err = xasprintf("cannot configure the writer session: %s",
                         PQerrorMessage(st->wconn->pg));
        goto fail;
    }
    st->writer_pid = PQbackendPID(st->wconn->pg);
    /* LISTEN before the first read of the caller, so that nothing committed
     * after that read goes unheard */
    st->lconn = listener_connect(st);
    if (!st->lconn) {
        *err = xasprintf("cannot open the notification connection: %s",
                         PQerrorMessage(st->wconn->pg));
        goto fail;
    }
    if (pthread_create(&st->writer, NULL, writer_main, st)) {
        *err = xstrdup("cannot start the store writer thread");
        goto fail;
    }
    if (pthread_create(&st->listener, NULL, listener_main, st)) {
        *err = xstrdup("cannot start the store listener thread");
        pthread_mutex_lock(&st->mu);
        st->stopping = true;
        pthread_cond_signal(&st->cond_jobs);
        pthread_mutex_unlock(&st->mu);
        pthread_join(st->writer, NULL);
        goto fail;
    }
    st->listener_started = true;
    return (struct store *)st;
fail:
    conn_free(st->wconn);
    conn_free(st->lconn);
    destroy_sync(st);
    free(st->url);
    free(st);
    return NULL;
}

static void pg_close(struct store *s)
{
    struct pg_store *st = PG(s);
    pthread_mutex_lock(&st->lmu);
    st->lstop = true;
    pthread_cond_signal(&st->lcond);
    pthread_mutex_unlock(&st->lmu);
    if (st->listener_started)
        pthread_join(st->listener, NULL);
    pthread_mutex_lock(&st->mu);
    st->stopping = true;
    pthread_cond_signal(&st->cond_jobs);
    pthread_mutex_unlock(&st->mu);
    pthread_join(st->writer, NULL);
    conn_free(st->wconn);
    conn_free(st->pconn);
    pthread_mutex_lock(&st->pmu);
    struct conn *idle = st->idle;
    st->idle = NULL;
    pthread_mutex_unlock(&st->pmu);
    for (struct conn *c = idle, *n; c; c = n) {
        n = c->next;
        conn_free(c);
    }
    destroy_sync(st);
    free(st->url);
    free(st);
}

/* ---- documents ---- */

/* Records that run (project_id, id) references the blobs its artifacts
 * name (artifacts[].sha256), for the pruner.  References are only added
 * while the run lives (an artifact replaced under the same name keeps its
 * old blob until the run is pruned): one statement, and none at all for the
 * many runs without artifacts. */
static int refs_note(struct pg_tx *tx, const char *project_id, const char *id, const json_t *arts)
{
    if (!json_is_array(arts) || !json_array_size(arts))
        return 0;
    char *text = jdump(arts, NULL);
    if (!text)
        return -EINVAL;
    const char *v[] = {text, project_id, id};
    PGresult *r = run(tx->c, "INSERT INTO blob_refs(sha, project_id, run_id) SELECT DISTINCT "
                             "a->>'sha256', $2, $3 FROM jsonb_array_elements($1::jsonb) a "
                             "WHERE a->>'sha256' IS NOT NULL ON CONFLICT DO NOTHING", 3, v);
    free(text);
    if (!r)
        return -EIO;
    PQclear(r);
    return 0;
}

/* The task metadata index (store.h): meta_note writes the rows of task
 * (project_id, id) from its stored document, after meta_forget (or a
 * statement that does what it does) dropped the old ones. */
static int meta_sql(struct pg_tx *tx, const char *sql, const char *project_id, const char *id)
{
    const char *v[] = {project_id, id};
    PGresult *r = run(tx->c, sql, 2, v);
    if (!r)
        return -EIO;
    PQclear(r);
    return 0;
}

static int meta_note(struct pg_tx *tx, const char *project_id, const char *id)
{
    return meta_sql(tx, "INSERT INTO task_meta(m_project, m_key, m_value, m_seq)"
                        META_ROWS("t.project_id=$1 AND t.id=$2"), project_id, id);
}

static int meta_forget(struct pg_tx *tx, const char *project_id, const char *id)
{
    return meta_sql(tx, "DELETE FROM task_meta WHERE m_seq=(SELECT seq FROM tasks"
                        " WHERE project_id=$1 AND id=$2)", project_id, id);
}

static bool has_metadata(const json_t *doc)
{
    return json_object_size(json_object_get(doc, "metadata")) > 0;
}

static int pg_put(struct store_tx *t, enum store_kind kind, const char *project_id,
                  const json_t *doc, bool update)
{
    struct pg_tx *tx = TX(t);
    const char *table = store_kind_name(kind);
    const char *const *fields = store_kind_fields(kind);
    const char *id = json_string_value(json_object_get(doc, "id"));
    if (!id || !project_id)
        return -EINVAL;
    struct q q;
    q_init(&q);
    char *text = jdump(doc, NULL);
    if (!text) {
        q_release(&q);
        return -EINVAL;
    }
    /* a task's update drops its metadata rows in the same statement (the
     * old document is not read; no round trip more for it) */
    bool meta = kind == SK_TASK;
    if (update) {
        if (meta)
            buf_puts(&q.sql, "WITH u AS (");
        buf_printf(&q.sql, "UPDATE %s SET doc=", table);
        q_arg(&q, text);
        for (const char *const *f = fields; *f; f++) {
            buf_printf(&q.sql, ", f_%s=", *f);
            char *v = store_field_text(doc, *f);
            q_arg(&q, v);
            free(v);
        }
        if (meta) {
            buf_puts(&q.sql, ", q_name=");
            q_arg(&q, json_string_value(json_object_get(doc, "name")));
        }
        buf_puts(&q.sql, " WHERE project_id=");
        q_arg(&q, project_id);
        buf_puts(&q.sql, " AND id=");
        q_arg(&q, id);
        if (meta)
            buf_puts(&q.sql, " RETURNING seq), d AS (DELETE FROM task_meta WHERE m_seq IN"
                             " (SELECT seq FROM u)) SELECT seq FROM u");
    } else {
        buf_printf(&q.sql, "INSERT INTO %s(doc, project_id, id", table);
        for (const char *const *f = fields; *f; f++)
            buf_printf(&q.sql, ", f_%s", *f);
        if (meta)
            buf_puts(&q.sql, ", q_name");
        buf_puts(&q.sql, ") VALUES(");
        q_arg(&q, text);
        buf_puts(&q.sql, ", ");
        q_arg(&q, project_id);
        buf_puts(&q.sql, ", ");
        q_arg(&q, id);
        for (const char *const *f = fields; *f; f++) {
            buf_puts(&q.sql, ", ");
            char *v = store_field_text(doc, *f);
            q_arg(&q, v);
            free(v);
        }
        if (meta) {
            buf_puts(&q.sql, ", ");
            q_arg(&q, json_string_value(json_object_get(doc, "name")));
        }
        /* no target: a storage instance's name (v7) conflicts as its id does */
        buf_puts(&q.sql, ") ON CONFLICT DO NOTHING");
    }
    free(text);
    PGresult *r = q_run(tx->c, &q);
    q_release(&q);
    if (!r)
        return -EIO;
    int64_t n = affected(r);
    PQclear(r);
    if (n == 0)
        return update ? -ENOENT : -EEXIST;
    note_change(tx, kind, project_id, id);
    if (meta && has_metadata(doc)) {
        int rc = meta_note(tx, project_id, id);
        if (rc)
            return rc;
    }
    if (kind == SK_RUN)
        return refs_note(tx, project_id, id, json_object_get(doc, "artifacts"));
    return 0;
}

/* Top-level merge in the database: doc || fields (jsonb), and the indexed
 * columns among the fields. */
static int pg_patch(struct store_tx *t, enum store_kind kind, const char *project_id,
                    const char *id, const json_t *fields, const char *if_field,
                    const char *if_value)
{
    struct pg_tx *tx = TX(t);
    struct q q;
    q_init(&q);
    char *text = jdump(fields, NULL);
    buf_printf(&q.sql, "UPDATE %s SET doc=(doc::jsonb || ", store_kind_name(kind));
    q_arg(&q, text);
    buf_puts(&q.sql, "::jsonb)::text");
    free(text);
    for (const char *const *f = store_kind_fields(kind); *f; f++) {
        if (!json_object_get(fields, *f))
            continue;
        buf_printf(&q.sql, ", f_%s=", *f);
        char *v = store_field_text(fields, *f);
        q_arg(&q, v);
        free(v);
    }
    if (kind == SK_TASK && json_object_get(fields, "name")) {
        buf_puts(&q.sql, ", q_name=");
        q_arg(&q, json_string_value(json_object_get(fields, "name")));
    }
    buf_puts(&q.sql, " WHERE project_id=");
    q_arg(&q, project_id);
    buf_puts(&q.sql, " AND id=");
    q_arg(&q, id);
    if (if_field) {
        buf_puts(&q.sql, " AND doc::jsonb->>");
        q_arg(&q, if_field);
        buf_puts(&q.sql, " = ");
        q_arg(&q, if_value);
    }
    PGresult *r = q_run(tx->c, &q);
    q_release(&q);
    if (!r)
        return -EIO;
    int64_t n = affected(r);
    PQclear(r);
    if (n)
        note_change(tx, kind, project_id, id);   /* other nodes hear of it */
    if (n && kind == SK_TASK && json_object_get(fields, "metadata")) {
        int rc = meta_forget(tx, project_id, id);
        if (!rc)
            rc = meta_note(tx, project_id, id);
        if (rc)
            return rc;
    }
    if (n && kind == SK_RUN)
        return refs_note(tx, project_id, id, json_object_get(fields, "artifacts"));
    return n ? 0 : -ENOENT;
}

static json_t *pg_get(struct store_tx *t, enum store_kind kind, const char *project_id,
                      const char *id)
{
    struct pg_tx *tx = TX(t);
    char sql[256];
    PGresult *r;
    /* invariant 5: in a write tx, rows that get written back are locked */
    const char *lock = tx->job && store_kind_locked(kind) ? " FOR UPDATE" : "";
    if (project_id) {
        snprintf(sql, sizeof sql, "SELECT doc FROM %s WHERE project_id=$1 AND id=$2%s",
                 store_kind_name(kind), lock);
        const char *v[] = {project_id, id};
        r = run(tx->c, sql, 2, v);
    } else {
        snprintf(sql, sizeof sql, "SELECT doc FROM %s WHERE id=$1 LIMIT 1%s",
                 store_kind_name(kind), lock);
        const char *v[] = {id};
        r = run(tx->c, sql, 1, v);
    }
    json_t *doc = r && PQntuples(r) > 0 ? col_json(r, 0, 0) : NULL;
    PQclear(r);
    return doc;
}

static int pg_del(struct store_tx *t, enum store_kind kind, const char *project_id,
                  const char *id)
{
    struct pg_tx *tx = TX(t);
    char sql[256];
    /* a task's metadata rows go in the same statement */
    if (kind == SK_TASK)
        snprintf(sql, sizeof sql, "WITH g AS (DELETE FROM tasks WHERE project_id=$1 AND id=$2"
                                  " RETURNING seq), d AS (DELETE FROM task_meta WHERE m_seq IN"
                                  " (SELECT seq FROM g)) SELECT seq FROM g");
    else
        snprintf(sql, sizeof sql, "DELETE FROM %s WHERE project_id=$1 AND id=$2",
                 store_kind_name(kind));
    const char *v[] = {project_id, id};
    PGresult *r = run(tx->c, sql, 2, v);
    if (!r)
        return -EIO;
    int64_t n = affected(r);
    PQclear(r);
    if (n)
        note_change(tx, kind, project_id, id);
    if (n && kind == SK_RUN) {
        r = run(tx->c, "DELETE FROM blob_refs WHERE project_id=$1 AND run_id=$2", 2, v);
        if (!r)
            return -EIO;
        PQclear(r);
    }
    return n ? 0 : -ENOENT;
}

static void where_clause(struct q *q, enum store_kind kind, const char *project_id,
                         const struct store_query *sq)
{
    buf_puts(&q->sql, " WHERE true");
    if (project_id) {
        buf_puts(&q->sql, " AND project_id=");
        q_arg(q, project_id);
    }
    if (sq->search) {
        /* strpos: a plain substring, no pattern characters to escape */
        /* a task's name has its own column (v8), read without parsing doc */
        buf_printf(&q->sql, " AND (strpos(lower(coalesce(%s, '')), lower(",
                   kind == SK_TASK ? "q_name" : "doc::json->>'name'");
        q_arg(q, sq->search);
        buf_puts(&q->sql, ")) > 0 OR strpos(lower(id), lower(");
        q_arg(q, sq->search);
        buf_puts(&q->sql, ")) > 0)");
    }
    for (size_t i = 0; i < sq->nfilters; i++) {
        const char *f = sq->filters[i].field, *v = sq->filters[i].value;
        /* field names were checked against the kind's table (store_list) */
        if (!strncmp(f, "metadata.", 9)) {
            /* like SQLite's json_extract(...) = ?: a NULL value matches nothing */
            buf_puts(&q->sql, " AND (doc::json->'metadata'->>");
            q_arg(q, f + 9);
            buf_puts(&q->sql, ") = ");
            q_arg(q, v);
        } else if (!v) {
            buf_printf(&q->sql, " AND %s%s IS NULL", strcmp(f, "id") ? "f_" : "", f);
        } else {
            buf_printf(&q->sql, " AND %s%s=", strcmp(f, "id") ? "f_" : "", f);
            q_arg(q, v);
        }
    }
}

/* What store_meta_choose asks of a list (pg_list). */
struct probe {
    struct pg_tx *tx;
    enum store_kind kind;
    const char *project_id;
};

/* A filter pg_probe_rows counts through an index: a metadata filter the
 * metadata index answers, or another field's value (not NULL). */
static bool pg_probe_ok(void *ctx, const struct store_filter *f)
{
    struct probe *pr = ctx;
    if (!strncmp(f->field, "metadata.", 9))
        return store_meta_indexable(pr->kind, pr->project_id, f);
    return f->value != NULL;
}

/* The rows filter f alone finds, counted up to STORE_META_PROBE_CAP; -1
 * when the count failed. */
static int64_t pg_probe_rows(void *ctx, const struct store_filter *f)
{
    struct probe *pr = ctx;
    struct store_query one = {.filters = f, .nfilters = 1};
    struct q q;
    q_init(&q);
    if (!strncmp(f->field, "metadata.", 9)) {
        buf_puts(&q.sql, "SELECT count(*) FROM (SELECT 1 FROM task_meta WHERE m_project=");
        q_arg(&q, pr->project_id);
        buf_puts(&q.sql, " AND m_key=");
        q_arg(&q, f->field + 9);
        buf_puts(&q.sql, " AND m_value=");
        q_arg(&q, f->value);
    } else {
        buf_printf(&q.sql, "SELECT count(*) FROM (SELECT 1 FROM %s", store_kind_name(pr->kind));
        where_clause(&q, pr->kind, pr->project_id, &one);
    }
    buf_printf(&q.sql, " LIMIT %d) x", STORE_META_PROBE_CAP);
    PGresult *r = q_run(pr->tx->c, &q);
    q_release(&q);
    int64_t n = r ? result_i64(r, 0, 0) : -1;
    PQclear(r);
    return n;
}

/* A list's SELECT of what (doc, count(*)) up to its WHERE clause: from the
 * kind's table, or with mf >= 0 from the metadata filter's task_meta rows,
 * each with its task read by seq in a subquery the planner keeps apart
 * (OFFSET 0), so that a task is found by its key whatever the statistics
 * say.  (Left to the planner, a join on 1 200 tasks not yet analyzed took
 * 14 s: it read the whole priority index, parsing each document, for each
 * task_meta row.) */
static void list_select(struct q *q, enum store_kind kind, const char *project_id,
                        const struct store_query *sq, int mf, const char *what)
{
    if (mf < 0) {
        buf_printf(&q->sql, "SELECT %s FROM %s", what, store_kind_name(kind));
        where_clause(q, kind, project_id, sq);
        return;
    }
    buf_printf(&q->sql, "SELECT %s FROM task_meta CROSS JOIN LATERAL (SELECT doc FROM %s", what,
               store_kind_name(kind));
    where_clause(q, kind, project_id, sq);
    buf_puts(&q->sql, " AND seq=m_seq OFFSET 0) t WHERE m_project=");
    q_arg(q, project_id);
    buf_puts(&q->sql, " AND m_key=");
    q_arg(q, sq->filters[mf].field + 9);
    buf_puts(&q->sql, " AND m_value=");
    q_arg(q, sq->filters[mf].value);
}

/* fields (store_list_fields): answered with whole documents (allowed; the
 * projection serves SQLite's start with many queued runs).  A metadata
 * filter the index answers may drive the list (store_meta_choose): its
 * task_meta rows in seq order, the filter still checked on each task. */
static int pg_list(struct store_tx *t, enum store_kind kind, const char *project_id,
                   const struct store_query *sq, const char *after_id, const char *const *fields,
                   json_t **out, int64_t *total)
{
    (void)fields;
    struct pg_tx *tx = TX(t);
    const char *table = store_kind_name(kind);
    struct probe pr = {tx, kind, project_id};
    int mf = store_meta_choose(kind, project_id, sq, pg_probe_ok, pg_probe_rows, &pr);
    const char *order = mf >= 0 ? "m_seq" : "seq";
    struct q q;
    q_init(&q);
    list_select(&q, kind, project_id, sq, mf, "doc");
    if (after_id) {
        buf_printf(&q.sql, " AND %s %s (SELECT seq FROM %s WHERE id=", order,
                   sq->oldest_first ? ">" : "<", table);
        q_arg(&q, after_id);
        if (project_id) {
            buf_puts(&q.sql, " AND project_id=");
            q_arg(&q, project_id);
        } else {
            buf_puts(&q.sql, " LIMIT 1");
        }
        buf_puts(&q.sql, ")");
    }
    buf_printf(&q.sql, " ORDER BY %s %s", order, sq->oldest_first ? "ASC" : "DESC");
    q_page(&q, sq->limit, sq->offset);
    PGresult *r = q_run(tx->c, &q);
    q_release(&q);
    if (!r)
        return -EIO;
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(r); i++) {
        json_t *d = col_json(r, i, 0);
        if (d)
            json_array_append_new(arr, d);
    }
    PQclear(r);
    if (total) {
        q_init(&q);
        list_select(&q, kind, project_id, sq, mf, "count(*)");
        r = q_run(tx->c, &q);
        q_release(&q);
        if (!r) {
            json_decref(arr);
            return -EIO;
        }
        *total = result_i64(r, 0, 0);
        PQclear(r);
    }
    *out = arr;
    return 0;
}

/* ---- logs ---- */

static int pg_log_append(struct store_tx *t, const char *project_id, const char *run_id,
                         json_t *entries, int64_t *last_seq)
{
    struct pg_tx *tx = TX(t);
    const char *v1[] = {run_id};
    PGresult *r = run(tx->c, "SELECT COALESCE(MAX(seq), 0) FROM logs WHERE run_id=$1", 1, v1);
    if (!r)
        return -EIO;
    int64_t seq = result_i64(r, 0, 0);
    PQclear(r);
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e) json_object_set_new_nocheck(e, "seq", json_integer(++seq));
    if (json_array_size(entries)) {
        /* one round trip for the whole batch: the entries travel as one JSON
         * array and json_array_elements hands each back verbatim */
        char *arr = jdump(entries, NULL);
        const char *v[] = {run_id, project_id, arr};
        r = run(tx->c, "INSERT INTO logs(run_id, seq, project_id, entry) "
                       "SELECT $1, (u.e->>'seq')::bigint, $2, u.e::text "
                       "FROM json_array_elements($3::json) AS u(e)", 3, v);
        free(arr);
        if (!r)
            return -EIO;
        PQclear(r);
    }
    if (last_seq)
        *last_seq = seq;
    return 0;
}

static int pg_log_read(struct store_tx *t, const char *project_id, const char *run_id,
                       int64_t after_seq, int64_t limit, json_t **out)
{
    struct pg_tx *tx = TX(t);
    struct q q;
    q_init(&q);
    buf_puts(&q.sql, "SELECT entry FROM logs WHERE run_id=");
    q_arg(&q, run_id);
    buf_puts(&q.sql, " AND project_id=");
    q_arg(&q, project_id);
    buf_puts(&q.sql, " AND seq>");
    q_int(&q, after_seq);
    buf_puts(&q.sql, " ORDER BY seq");
    q_page(&q, limit, 0);
    PGresult *r = q_run(tx->c, &q);
    q_release(&q);
    if (!r)
        return -EIO;
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(r); i++) {
        json_t *d = col_json(r, i, 0);
        if (d)
            json_array_append_new(arr, d);
    }
    PQclear(r);
    *out = arr;
    return 0;
}

static int64_t pg_log_bytes(struct store_tx *t, const char *project_id, const char *run_id)
{
    /* length() counts characters, as SQLite's length() does on text */
    const char *v[] = {run_id, project_id};
    PGresult *r = run(TX(t)->c, "SELECT COALESCE(SUM(length(entry)), 0) FROM logs "
                                "WHERE run_id=$1 AND project_id=$2", 2, v);
    int64_t n = result_i64(r, 0, 0);
    PQclear(r);
    return n;
}

/* ---- events ---- */

/* Takes EVENT_LOCK for the writer's batch, once: event-writing
 * transactions of every node then run one after another. */
static int event_lock(struct pg_tx *tx)
{
    struct pg_store *st = tx->st;
    if (tx->job && !st->event_locked) {
        PGresult *l = run(tx->c, "SELECT pg_advisory_xact_lock(x'" EVENT_LOCK "'::bigint)", 0,
                          NULL);
        if (!l)
            return -EIO;
        PQclear(l);
        st->event_locked = true;
        tx->job->took_event_lock = true;
    }
    return 0;
}

static int pg_event_append(struct store_tx *t, json_t *ev, int64_t *id)
{
    struct pg_tx *tx = TX(t);
    if (event_lock(tx))
        return -EIO;
    char created[24];
    snprintf(created, sizeof created, "%lld",
             (long long)json_integer_value(json_object_get(ev, "created_ms")));
    char *doc = jdump(ev, NULL);
    const char *v[] = {json_string_value(json_object_get(ev, "project_id")),
                       json_string_value(json_object_get(ev, "run_id")),
                       json_string_value(json_object_get(ev, "type")), created, doc};
    PGresult *r = run(tx->c, "INSERT INTO events(project_id, run_id, type, created_at, doc) "
                             "VALUES($1, $2, $3, $4::bigint, $5) RETURNING id", 5, v);
    free(doc);
    if (!r)
        return -EIO;
    *id = result_i64(r, 0, 0);
    PQclear(r);
    note_event(tx, v[0], v[1]);
    return 0;
}

static void type_list(struct q *q, const char *op, const char *const *types, size_t n)
{
    if (!n)
        return;
    buf_printf(&q->sql, " AND type %s (", op);
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_puts(&q->sql, ",");
        q_arg(q, types[i]);
    }
    buf_puts(&q->sql, ")");
}

/* The FROM/WHERE part of an event query; cond adds the filters. */
static void event_where(struct q *q, const struct store_event_query *eq, bool cond)
{
    buf_puts(&q->sql, " FROM events WHERE project_id=");
    q_arg(q, eq->project_id);
    if (eq->run_id) {
        buf_puts(&q->sql, " AND run_id=");
        q_arg(q, eq->run_id);
    }
    if (!cond)
        return;
    buf_puts(&q->sql, " AND id>");
    q_int(q, eq->after_id);
    if (eq->after_ms > 0) {
        buf_puts(&q->sql, " AND created_at>");
        q_int(q, eq->after_ms);
    }
    type_list(q, "IN", eq->types, eq->ntypes);
    type_list(q, "NOT IN", eq->exclude, eq->nexclude);
}

static int pg_event_list(struct store_tx *t, const struct store_event_query *eq, json_t **out,
                         int64_t *total, int64_t *filtered)
{
    struct pg_tx *tx = TX(t);
    if (eq->ntypes > 50 || eq->nexclude > 50)
        return -EINVAL;
    struct q q;
    q_init(&q);
    buf_puts(&q.sql, "SELECT id, doc");
    event_where(&q, eq, true);
    buf_puts(&q.sql, " ORDER BY id");
    q_page(&q, eq->limit, eq->offset);
    PGresult *r = q_run(tx->c, &q);
    q_release(&q);
    if (!r)
        return -EIO;
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(r); i++) {
        json_t *d = col_json(r, i, 1);
        if (!d)
            continue;
        json_object_set_new_nocheck(d, "seq", json_integer(result_i64(r, i, 0)));
        json_array_append_new(arr, d);
    }
    PQclear(r);
    for (int pass = 0; pass < 2; pass++) {
        int64_t *dst = pass == 0 ? total : filtered;
        if (!dst)
            continue;
        q_init(&q);
        buf_puts(&q.sql, "SELECT count(*)");
        event_where(&q, eq, pass == 1);
        r = q_run(tx->c, &q);
        q_release(&q);
        if (!r) {
            json_decref(arr);
            return -EIO;
        }
        *dst = result_i64(r, 0, 0);
        PQclear(r);
    }
    *out = arr;
    return 0;
}

/* Runs holding a slot of a concurrency key, as committed by every node: a
 * run's start writes its task_run.started event, so once this batch holds
 * EVENT_LOCK every other node's start has committed (READ COMMITTED: the
 * count's snapshot is taken after the lock).  The status index bounds the
 * scan to the project's active runs. */
static int pg_conc_active(struct store_tx *t, const char *project_id, const char *key,
                          const char *except_id, int64_t *n)
{
    struct pg_tx *tx = TX(t);
    if (!tx->job)
        return -EINVAL;
    if (event_lock(tx))
        return -EIO;
    const char *v[] = {project_id, key, except_id ? except_id : ""};
    PGresult *r = run(tx->c, "SELECT count(*) FROM runs WHERE project_id=$1 AND "
                             "f_status IN ('running', 'canceling', 'interaction_required') AND "
                             "(doc::jsonb) ->> 'concurrency_key' = $2 AND id <> $3 AND "
                             "(f_status <> 'interaction_required' OR "
                             "COALESCE((doc::jsonb) #>> '{interaction,kind}', '') <> 'approval')",
                      3, v);
    if (!r)
        return -EIO;
    *n = result_i64(r, 0, 0);
    PQclear(r);
    return 0;
}

static int64_t pg_event_last_id(struct store_tx *t)
{
    PGresult *r = run(TX(t)->c, "SELECT COALESCE(MAX(id), 0) FROM events", 0, NULL);
    int64_t n = result_i64(r, 0, 0);
    PQclear(r);
    return n;
}

/* ---- meta, idempotency ---- */

static char *pg_meta_get(struct store_tx *t, const char *key)
{
    const char *v[] = {key};
    PGresult *r = run(TX(t)->c, "SELECT value FROM meta WHERE key=$1", 1, v);
    char *val = NULL;
    if (r && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        val = xstrdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return val;
}

static int pg_meta_set(struct store_tx *t, const char *key, const char *value)
{
    const char *v[] = {key, value};
    PGresult *r = run(TX(t)->c, "INSERT INTO meta(key, value) VALUES($1, $2) "
                                "ON CONFLICT (key) DO UPDATE SET value=EXCLUDED.value", 2, v);
    if (!r)
        return -EIO;
    PQclear(r);
    return 0;
}

static int pg_idem_get(struct store_tx *t, const char *scope, const char *key, int64_t since_ms,
                       char **fingerprint, int *status, char **body)
{
    char since[24];
    snprintf(since, sizeof since, "%lld", (long long)since_ms);
    const char *v[] = {scope, key, since};
    PGresult *r = run(TX(t)->c, "SELECT fingerprint, status, body FROM idempotency "
                                "WHERE scope=$1 AND key=$2 AND created_at>=$3::bigint", 3, v);
    if (!r)
        return -EIO;
    int rc = -ENOENT;
    if (PQntuples(r) > 0) {
        *fingerprint = PQgetisnull(r, 0, 0) ? NULL : xstrdup(PQgetvalue(r, 0, 0));
        *status = (int)result_i64(r, 0, 1);
        *body = xstrdup(PQgetvalue(r, 0, 2));
        rc = 0;
    }
    PQclear(r);
    return rc;
}

static int pg_idem_put(struct store_tx *t, const char *scope, const char *key,
                       const char *fingerprint, int status, const char *body)
{
    char st[16], now[24];
    snprintf(st, sizeof st, "%d", status);
    snprintf(now, sizeof now, "%lld", (long long)now_ms());
    const char *v[] = {scope, key, fingerprint, st, body, now};
    PGresult *r = run(TX(t)->c,
                      "INSERT INTO idempotency(scope, key, fingerprint, status, body, created_at) "
                      "VALUES($1, $2, $3, $4::integer, $5, $6::bigint) ON CONFLICT (scope, key) "
                      "DO UPDATE SET fingerprint=EXCLUDED.fingerprint, status=EXCLUDED.status, "
                      "body=EXCLUDED.body, created_at=EXCLUDED.created_at", 6, v);
    if (!r)
        return -EIO;
    PQclear(r);
    return 0;
}

static int pg_idem_del(struct store_tx *t, const char *scope, const char *key)
{
    const char *v[] = {scope, key};
    PGresult *r = run(TX(t)->c, "DELETE FROM idempotency WHERE scope=$1 AND key=$2", 2, v);
    if (!r)
        return -EIO;
    PQclear(r);
    return 0;
}


static int pg_blob_referenced(struct store_tx *t, const char *sha)
{
    const char *v[] = {sha};
    PGresult *r = run(TX(t)->c, "SELECT 1 FROM blob_refs WHERE sha=$1 LIMIT 1", 1, v);
    if (!r)
        return -EIO;
    int n = PQntuples(r);
    PQclear(r);
    return n > 0;
}
/* Retention: see store_prune in store.h. */
static int pg_prune(struct store_tx *t, int64_t before_ms, int64_t limit, int64_t *pruned)
{
    struct pg_tx *tx = TX(t);
    char before[RFC3339_LEN], b_ms[24], lim[24], idem[24];
    rfc3339_format(before_ms, before);
    snprintf(b_ms, sizeof b_ms, "%lld", (long long)before_ms);
    snprintf(lim, sizeof lim, "%lld", (long long)limit);
    snprintf(idem, sizeof idem, "%lld", (long long)(now_ms() - 24LL * 3600 * 1000));
    int64_t n = 0;
    const char *v1[] = {b_ms, lim};
    /* events are appended in time order: the old ones are the ids before
     * the first event at or after the cut; the newest always stays, as in
     * the SQLite store (whose next id is the newest + 1) */
    PGresult *r = run(tx->c, "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id < "
                             "coalesce((SELECT id FROM events WHERE created_at >= $1::bigint "
                             "ORDER BY id LIMIT 1), (SELECT max(id) FROM events)) "
                             "ORDER BY id LIMIT $2::bigint)",
                      2, v1);
    if (!r)
        return -EIO;
    n += affected(r);
    PQclear(r);
    const char *v2[] = {before, lim};
    r = run(tx->c, "WITH gone AS (DELETE FROM runs WHERE (project_id, id) IN (SELECT project_id, id "
                   "FROM runs WHERE f_status IN ('completed','failed','timed_out','denied',"
                   "'canceled') AND (doc::jsonb) ->> 'completed_at' < $1 LIMIT $2::bigint) "
                   "RETURNING project_id, id), l AS (DELETE FROM logs WHERE run_id IN "
                   "(SELECT id FROM gone)), b AS (DELETE FROM blob_refs WHERE (project_id, run_id) "
                   "IN (SELECT project_id, id FROM gone)), c AS (DELETE FROM checkpoints WHERE (project_id, f_run_id) "
                   "IN (SELECT project_id, id FROM gone)) SELECT count(*) FROM gone", 2, v2);
    if (!r)
        return -EIO;
    n += result_i64(r, 0, 0);
    PQclear(r);
    /* webhook deliveries that ended before the cut (a pending one is being
     * retried and stays), each status walked from its oldest up to the
     * first that ended after the cut, as in the SQLite store */
    static const char *const ended[] = {"succeeded", "failed"};
    for (size_t k = 0; k < ARRAY_LEN(ended); k++) {
        const char *vd[] = {ended[k], before, lim};
        r = run(tx->c, "DELETE FROM deliveries WHERE seq IN (SELECT seq FROM deliveries WHERE "
                       "f_status=$1 AND seq < coalesce((SELECT seq FROM deliveries WHERE "
                       "f_status=$1 AND (doc::jsonb) ->> 'completed_at' >= $2 ORDER BY seq "
                       "LIMIT 1), (SELECT max(seq) + 1 FROM deliveries)) ORDER BY seq "
                       "LIMIT $3::bigint)",
                3, vd);
        if (!r)
            return -EIO;
        n += affected(r);
        PQclear(r);
    }
    const char *v3[] = {idem};
    r = run(tx->c, "DELETE FROM idempotency WHERE created_at < $1::bigint", 1, v3);
    if (!r)
        return -EIO;
    n += affected(r);
    PQclear(r);
    /* Blobs no run references, unless stored within the grace period (their
     * run may not have committed yet).  stored_at is checked again on the
     * row being deleted: a blob_put that touched it meanwhile wins. */
    char grace[24];
    snprintf(grace, sizeof grace, "%lld", (long long)(now_ms() - tx->st->blob_grace_ms));
    const char *v4[] = {grace, lim};
    r = run(tx->c, "WITH dead AS (DELETE FROM blobs WHERE sha IN (SELECT sha FROM blobs b WHERE "
                   "b.stored_at < $1::bigint AND NOT EXISTS (SELECT 1 FROM blob_refs r WHERE "
                   "r.sha = b.sha) AND NOT EXISTS (SELECT 1 FROM storage_files f WHERE "
                   "f.sha = b.sha) LIMIT $2::bigint) AND stored_at < $1::bigint RETURNING sha), "
                   "c AS (DELETE FROM blob_chunks WHERE sha IN (SELECT sha FROM dead)) "
                   "SELECT count(*) FROM dead", 2, v4);
    if (!r)
        return -EIO;
    n += result_i64(r, 0, 0);
    PQclear(r);
    if (pruned)
        *pruned = n;
    return 0;
}

/* ---- several nodes ---- */

static int pg_try_get(struct store_tx *t, enum store_kind kind, const char *project_id,
                      const char *id, json_t **out)
{
    struct pg_tx *tx = TX(t);
    *out = NULL;
    if (!tx->job) {
        *out = pg_get(t, kind, project_id, id);
        return *out ? 0 : -ENOENT;
    }
    char sql[256];
    const char *v[] = {id, project_id};
    snprintf(sql, sizeof sql, "SELECT doc FROM %s WHERE id=$1%s LIMIT 1 FOR UPDATE SKIP LOCKED",
             store_kind_name(kind), project_id ? " AND project_id=$2" : "");
    PGresult *r = run(tx->c, sql, project_id ? 2 : 1, v);
    if (!r)
        return -EIO;
    if (PQntuples(r) > 0)
        *out = col_json(r, 0, 0);
    PQclear(r);
    if (*out)
        return 0;
    /* nothing returned: absent, or locked by another transaction */
    snprintf(sql, sizeof sql, "SELECT 1 FROM %s WHERE id=$1%s LIMIT 1", store_kind_name(kind),
             project_id ? " AND project_id=$2" : "");
    r = run(tx->c, sql, project_id ? 2 : 1, v);
    if (!r)
        return -EIO;
    int rc = PQntuples(r) > 0 ? -EAGAIN : -ENOENT;
    PQclear(r);
    return rc;
}

static int pg_get_many(struct store_tx *t, enum store_kind kind, const json_t *ids, json_t **out)
{
    char *arr = jdump(ids, NULL);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT id, doc FROM %s WHERE id IN "
                              "(SELECT json_array_elements_text($1::json))", store_kind_name(kind));
    const char *v[] = {arr};
    PGresult *r = run(TX(t)->c, sql, 1, v);
    free(arr);
    if (!r)
        return -EIO;
    json_t *o = json_object();
    for (int i = 0; i < PQntuples(r); i++) {
        json_t *d = col_json(r, i, 1);
        if (d)
            json_object_set_new(o, PQgetvalue(r, i, 0), d);
    }
    PQclear(r);
    *out = o;
    return 0;
}

/* Runs sql on the listener's connection and waits at most HEALTH_MS for
 * its result: a server that is cut off does not hang the listener.  The
 * result (caller PQclear()s) or NULL, with the connection marked broken. */
static PGresult *timed_exec(struct conn *c, const char *sql)
{
    if (!PQsendQuery(c->pg, sql)) {
        c->broken = true;
        return NULL;
    }
    int64_t deadline = mono_ms() + HEALTH_MS;
    PGresult *last = NULL;
    for (;;) {
        while (!PQisBusy(c->pg)) {
            PGresult *r = PQgetResult(c->pg);
            if (!r) {
                ExecStatusType s = last ? PQresultStatus(last) : PGRES_FATAL_ERROR;
                if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
                    PQclear(last);
                    c->broken = true;
                    return NULL;
                }
                return last;
            }
            PQclear(last);
            last = r;
        }
        int64_t left = deadline - mono_ms();
        struct pollfd pfd = {PQsocket(c->pg), POLLIN, 0};
        if (left <= 0 || poll(&pfd, 1, (int)left) < 0 || !PQconsumeInput(c->pg)) {
            PQclear(last);
            c->broken = true;
            c->silent = left <= 0;
            return NULL;
        }
    }
}

static bool timed_true(struct conn *c, const char *sql)
{
    PGresult *r = timed_exec(c, sql);
    bool t = r && PQntuples(r) > 0 && !strcmp(PQgetvalue(r, 0, 0), "t");
    PQclear(r);
    return t;
}

/* The listener's connection: LISTENing, holding this node's lock, and with
 * keepalives short enough that the server drops it (and its locks) within
 * seconds of a network cut.  NULL when PostgreSQL is unreachable. */
static struct conn *listener_connect(struct pg_store *st)
{
    const char *keys[] = {"dbname", "application_name", "client_encoding", "connect_timeout",
                          "keepalives", "keepalives_idle", "keepalives_interval",
                          "keepalives_count", "tcp_user_timeout", NULL};
    const char *vals[] = {st->url, "quernd-listener", "UTF8", "3", "1", "2", "1", "2",
                          TCP_USER_TIMEOUT, NULL};
    struct conn *c = xcalloc(1, sizeof *c);
    c->cut_fd = -1;
    c->st = st;
    c->pg = PQconnectdbParams(keys, vals, 1);
    if (!c->pg || PQstatus(c->pg) != CONNECTION_OK) {
        pg_down(st, "the listener cannot connect", c->pg ? PQerrorMessage(c->pg) : "out of memory");
        conn_free(c);
        return NULL;
    }
    PQsetNoticeProcessor(c->pg, quiet_notices, NULL);
    char *lock = xasprintf(SESSION_TIMEOUTS "; LISTEN " NOTIFY_CHANNEL
                           "; SELECT pg_try_advisory_lock(%lld)",
                           (long long)st->node_key);
    bool ok = timed_true(c, lock);
    free(lock);
    if (!ok) {
        pg_down(st, "the listener cannot connect", "its first statement was not answered");
        conn_free(c);
        return NULL;
    }
    pg_up(st);
    return c;
}

/* Parses one notification payload into changes (appended to *arr). */
static void parse_payload(const char *payload, json_t *seen, json_t *arr)
{
    const char *p = payload;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char *line = xmalloc(len + 1);
        memcpy(line, p, len);
        line[len] = 0;
        char *t1 = strchr(line, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
        if (t1 && t2 && strchr("RTE", line[0]) && !json_object_get(seen, line)) {
            json_object_set(seen, line, json_true());
            *t1 = *t2 = 0;
            json_array_append_new(arr, json_pack("{s:b, s:b, s:s, s:s}", "run", line[0] != 'T',
                                                 "events", line[0] == 'E', "project", t1 + 1,
                                                 "id", t2 + 1));
        }
        free(line);
        p += len;
        if (*p)
            p++;
    }
}

/* Hands the changes (and a "you may have missed some") to the watcher.
 * dmu is held throughout, so store_watch(NULL) waits for a call in flight. */
static void deliver(struct pg_store *st, json_t *arr, bool missed)
{
    pthread_mutex_lock(&st->dmu);
    if (!st->watch_fn) {
        pthread_mutex_unlock(&st->dmu);
        return;
    }
    if (missed)
        st->watch_fn(st->watch_ctx, NULL, 0);
    size_t n = json_array_size(arr);
    if (n) {
        struct store_change *ch = xcalloc(n, sizeof *ch);
        for (size_t i = 0; i < n; i++) {
            json_t *o = json_array_get(arr, i);
            ch[i].kind = json_is_true(json_object_get(o, "run")) ? SK_RUN : SK_TASK;
            ch[i].events = json_is_true(json_object_get(o, "events"));
            ch[i].project_id = json_string_value(json_object_get(o, "project"));
            ch[i].id = json_string_value(json_object_get(o, "id"));
        }
        st->watch_fn(st->watch_ctx, ch, n);
        free(ch);
    }
    pthread_mutex_unlock(&st->dmu);
}

static bool watching(struct pg_store *st)
{
    pthread_mutex_lock(&st->dmu);
    bool w = st->watch_fn != NULL;
    pthread_mutex_unlock(&st->dmu);
    return w;
}

static bool listener_stopping(struct pg_store *st, int64_t wait_ms)
{
    pthread_mutex_lock(&st->lmu);
    if (wait_ms > 0 && !st->lstop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += wait_ms / 1000;
        ts.tv_nsec += (wait_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&st->lcond, &st->lmu, &ts);
    }
    bool stop = st->lstop;
    pthread_mutex_unlock(&st->lmu);
    return stop;
}

static void *listener_main(void *arg)
{
    struct pg_store *st = arg;
    struct conn *c = st->lconn;     /* connected by pg_open, or NULL */
    st->lconn = NULL;
    bool missed = !c;
    int64_t next_check = 0, next_poll = mono_ms() + st->poll_ms;
    while (!listener_stopping(st, 0)) {
        if (c && conn_bad(c)) {
            log_write(LOG_WARN, "postgres", NULL, "the listener lost its connection%s",
                      __atomic_load_n(&st->leader, __ATOMIC_RELAXED) ? "; no longer the leader" : "");
            __atomic_store_n(&st->leader, false, __ATOMIC_RELAXED);
            /* only a silent server has its calls cut: one that closed
             * or refused is failing them by itself, and one that is
             * merely full (max_connections) may be serving them */
            if (c->silent)
                cut_stuck(st);
            conn_free(c);
            c = NULL;
            missed = true;
        }
        int64_t t0 = mono_ms();
        if (!c && !(c = listener_connect(st))) {
            if (mono_ms() - t0 >= HEALTH_MS)   /* timed out, not refused */
                cut_stuck(st);
            listener_stopping(st, 1000);
            continue;
        }
        int64_t now = mono_ms();
        if (now >= next_check) {
            next_check = now + 1000;
            if (!__atomic_load_n(&st->leader, __ATOMIC_RELAXED)) {
                if (timed_true(c, "SELECT pg_try_advisory_lock(x'" LEADER_LOCK "'::bigint)")) {
                    __atomic_store_n(&st->leader, true, __ATOMIC_RELAXED);
                    log_write(LOG_INFO, "postgres", NULL, "this node (%s) is the leader", st->node_id);
                }
            } else {
                timed_true(c, "SELECT true");   /* health: marks c broken when unanswered */
            }
            if (conn_bad(c))
                continue;
        }
        bool w = watching(st);
        if (w) {
            /* everything the server sent so far */
            json_t *arr = json_array(), *seen = json_object();
            int mine = __atomic_load_n(&st->writer_pid, __ATOMIC_RELAXED);
            PGnotify *n;
            while ((n = PQnotifies(c->pg)) != NULL) {
                if (n->be_pid != mine)
                    parse_payload(n->extra, seen, arr);
                PQfreemem(n);
            }
            json_decref(seen);
            if (st->poll_ms > 0 && now >= next_poll) {
                next_poll = now + st->poll_ms;
                missed = true;
            }
            if (missed || json_array_size(arr))
                deliver(st, arr, missed);
            missed = false;
            json_decref(arr);
        }
        /* wait for more, at most until the next check; without a watcher
         * the notifications wait in libpq's queue */
        int64_t left = next_check - mono_ms();
        if (left > 250)
            left = 250;
        struct pollfd pfd = {PQsocket(c->pg), POLLIN, 0};
        if (left > 0 && poll(&pfd, 1, (int)left) < 0)
            continue;
        if (!PQconsumeInput(c->pg))
            c->broken = true;
    }
    conn_free(c);
    __atomic_store_n(&st->leader, false, __ATOMIC_RELAXED);
    return NULL;
}

static void pg_watch(struct store *s, store_watch_fn fn, void *ctx)
{
    struct pg_store *st = PG(s);
    pthread_mutex_lock(&st->dmu);
    st->watch_fn = fn;
    st->watch_ctx = ctx;
    pthread_mutex_unlock(&st->dmu);
}

static bool pg_leader(struct store *s)
{
    return __atomic_load_n(&PG(s)->leader, __ATOMIC_RELAXED);
}

static const char *pg_node_id(const struct store *s)
{
    return ((const struct pg_store *)s)->node_id;
}

static int64_t node_key(const char *id)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 1099511628211ULL;
    return (int64_t)((h & 0x3fffffffffffffffULL) | 0x4000000000000000ULL);
}

static bool pg_node_alive(struct store *s, const char *id)
{
    struct pg_store *st = PG(s);
    if (!strcmp(id, st->node_id))
        return true;
    int64_t k = node_key(id);
    char hi[24], lo[24];
    snprintf(hi, sizeof hi, "%lld", (long long)((uint64_t)k >> 32));
    snprintf(lo, sizeof lo, "%lld", (long long)((uint64_t)k & 0xffffffffULL));
    struct conn *c = reader_begin(st);
    if (!c)
        return true;   /* cannot tell: do not declare anyone dead */
    const char *v[] = {hi, lo};
    PGresult *r = run(c, "SELECT count(*) FROM pg_locks WHERE locktype='advisory' AND granted "
                         "AND classid::bigint=$1::bigint AND objid::bigint=$2::bigint "
                         "AND objsubid=1", 2, v);
    bool alive = !r || result_i64(r, 0, 0) > 0;
    PQclear(r);
    reader_end(st, c);
    return alive;
}

/* ---- copying ---- */

static int pg_dump(struct store_tx *t, const char *table, int64_t offset, int64_t limit,
                   json_t **out)
{
    struct q q;
    q_init(&q);
    buf_printf(&q.sql, "SELECT * FROM %s ORDER BY %s", table, store_table_order(table));
    q_page(&q, limit, offset);
    PGresult *r = q_run(TX(t)->c, &q);
    q_release(&q);
    if (!r)
        return -EIO;
    json_t *rows = json_array();
    for (int i = 0; i < PQntuples(r); i++) {
        json_t *row = json_object();
        for (int k = 0; k < PQnfields(r); k++) {
            json_t *v;
            Oid type = PQftype(r, k);
            if (PQgetisnull(r, i, k))
                v = json_null();
            else if (type == 20 || type == 21 || type == 23)   /* int8, int2, int4 */
                v = json_integer(result_i64(r, i, k));
            else
                v = json_stringn(PQgetvalue(r, i, k), (size_t)PQgetlength(r, i, k));
            json_object_set_new(row, PQfname(r, k), v ? v : json_null());
        }
        json_array_append_new(rows, row);
    }
    PQclear(r);
    *out = rows;
    return 0;
}

static int pg_load(struct store_tx *t, const char *table, const json_t *rows)
{
    struct pg_tx *tx = TX(t);
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row) {
        struct q q;
        q_init(&q);
        buf_printf(&q.sql, "INSERT INTO %s(", table);
        const char *k;
        json_t *v;
        int n = 0;
        json_object_foreach((json_t *)row, k, v) {
            if (!store_plain_name(k)) {
                q_release(&q);
                return -EINVAL;
            }
            buf_printf(&q.sql, "%s%s", n++ ? ", " : "", k);
        }
        buf_puts(&q.sql, ") VALUES(");
        n = 0;
        json_object_foreach((json_t *)row, k, v) {
            if (n++)
                buf_puts(&q.sql, ", ");
            if (json_is_integer(v)) {
                char num[24];
                snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
                q_arg(&q, num);
            } else {
                q_arg(&q, json_is_string(v) ? json_string_value(v) : NULL);
            }
        }
        buf_puts(&q.sql, ")");
        PGresult *r = q_run(tx->c, &q);
        q_release(&q);
        if (!r)
            return -EIO;
        PQclear(r);
        if (!strcmp(table, "runs")) {
            json_t *doc = json_loads(json_string_value(json_object_get(row, "doc")) ?: "", 0, NULL);
            int rc = refs_note(tx, json_string_value(json_object_get(row, "project_id")),
                               json_string_value(json_object_get(row, "id")),
                               json_object_get(doc, "artifacts"));
            json_decref(doc);
            if (rc)
                return rc;
        }
        /* a copied task gets its metadata index rows (store.h) */
        if (!strcmp(table, "tasks")) {
            int rc = meta_note(tx, json_string_value(json_object_get(row, "project_id")),
                               json_string_value(json_object_get(row, "id")));
            if (rc)
                return rc;
        }
    }
    /* the serial counters move past the copied ids */
    const char *col = !strcmp(table, "events") ? "id" : !strcmp(store_table_order(table), "seq")
                                                          ? "seq" : NULL;
    if (col && json_array_size(rows)) {
        char *sql = xasprintf("SELECT setval(pg_get_serial_sequence('%s', '%s'), "
                              "(SELECT COALESCE(MAX(%s), 0) + 1 FROM %s), false)",
                              table, col, col, table);
        PGresult *r = run(tx->c, sql, 0, NULL);
        free(sql);
        if (!r)
            return -EIO;
        PQclear(r);
    }
    return 0;
}

/* ---- blobs ---- */

/* Like run(), with per-param formats and lengths (binary for bytea) and the
 * result in result_format (1: binary). */
static PGresult *run_bin(struct conn *c, const char *sql, int n, const char *const *vals,
                         const int *lens, const int *formats, int result_format)
{
    const char *name = prepared(c, sql, n);
    if (!name)
        return NULL;
    PGresult *r = PQexecPrepared(c->pg, name, n, vals, lens, formats, result_format);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        stmt_failed(c, sql);
        PQclear(r);
        return NULL;
    }
    return r;
}

/* A pooled connection, out of the read-only transaction reader_begin()
 * opened, in a READ COMMITTED read-write one.  NULL when unreachable. */
static struct conn *blob_writer_begin(struct pg_store *st)
{
    struct conn *c = reader_begin(st);
    if (!c)
        return NULL;
    /* no query ran in the transaction yet: its mode may still change */
    if (simple(c, "SET TRANSACTION ISOLATION LEVEL READ COMMITTED READ WRITE")) {
        c->broken = true;
        reader_put(st, c);
        return NULL;
    }
    return c;
}

/* Why a blob is written in its own transaction, before the run that names
 * it, rather than inside that run's write: the bytes (up to 64 MiB from a
 * code run, 16 MiB from an upload) would otherwise pass through the single
 * writer thread and hold every other request of the group commit while they
 * travel.  Content addressing makes the early write idempotent (two nodes
 * storing the same bytes store them once: ON CONFLICT DO NOTHING), and a
 * blob whose run never commits (the node died in between, the write was
 * refused) is an orphan the pruner deletes after STORE_BLOB_GRACE_MS.  One
 * transaction per blob: a crash never leaves a blob row without all its
 * chunks. */
static int pg_blob_put(struct store *s, const char *sha, int64_t size, store_blob_src src,
                       void *ctx)
{
    struct pg_store *st = PG(s);
    struct conn *c = blob_writer_begin(st);
    if (!c)
        return -EIO;
    char now[24], sz[24], num[16];
    snprintf(now, sizeof now, "%lld", (long long)now_ms());
    snprintf(sz, sizeof sz, "%lld", (long long)size);
    int rc = 0;
    char *chunk = NULL;
    /* present already: restart its grace period (the pruner rechecks it) */
    const char *tv[] = {now, sha};
    PGresult *r = run(c, "UPDATE blobs SET stored_at=$1::bigint WHERE sha=$2", 2, tv);
    if (!r) {
        rc = -EIO;
        goto out;
    }
    int64_t present = affected(r);
    PQclear(r);
    if (present)
        goto out;
    chunk = xmalloc(STORE_BLOB_CHUNK);
    int64_t total = 0;
    for (int n = 0;; n++) {
        size_t fill = 0;
        while (fill < STORE_BLOB_CHUNK) {
            long got = src(ctx, chunk + fill, STORE_BLOB_CHUNK - fill);
            if (got < 0) {
                rc = (int)got;
                goto out;
            }
            if (got == 0)
                break;
            fill += (size_t)got;
        }
        if (!fill && n > 0)
            break;
        total += (int64_t)fill;
        if (total > size) {
            rc = -EINVAL;
            goto out;
        }
        snprintf(num, sizeof num, "%d", n);
        const char *cv[] = {sha, num, chunk};
        const int lens[] = {0, 0, (int)fill};
        const int fmts[] = {0, 0, 1};
        r = run_bin(c, "INSERT INTO blob_chunks(sha, n, data) VALUES($1, $2::integer, $3) "
                       "ON CONFLICT DO NOTHING", 3, cv, lens, fmts, 0);
        if (!r) {
            rc = -EIO;
            goto out;
        }
        PQclear(r);
        if (fill < STORE_BLOB_CHUNK)
            break;
    }
    if (total != size) {
        rc = -EINVAL;
        goto out;
    }
    const char *bv[] = {sha, sz, now};
    r = run(c, "INSERT INTO blobs(sha, size, stored_at) VALUES($1, $2::bigint, $3::bigint) "
               "ON CONFLICT (sha) DO UPDATE SET stored_at=EXCLUDED.stored_at", 3, bv);
    if (!r)
        rc = -EIO;
    PQclear(r);
out:
    free(chunk);
    if (!rc)
        rc = commit(c, "COMMIT");
    else if (!conn_bad(c) && simple(c, "ROLLBACK"))
        c->broken = true;
    reader_put(st, c);
    return rc;
}

#define BLOB_CHUNKS_PER_QUERY 4   /* the LIMIT below */

/* One REPEATABLE READ snapshot for the whole blob: a prune that commits
 * meanwhile cannot cut it short.  BLOB_CHUNKS_PER_QUERY chunks (1 MiB) per
 * round trip, in binary: memory stays at one such result. */
static int pg_blob_get(struct store *s, const char *sha, int64_t *size, store_blob_sink sink,
                       void *ctx)
{
    struct pg_store *st = PG(s);
    struct conn *c = reader_begin(st);
    if (!c)
        return -EIO;
    int rc = 0;
    const char *v[] = {sha};
    PGresult *r = run(c, "SELECT size FROM blobs WHERE sha=$1", 1, v);
    if (!r) {
        rc = -EIO;
        goto out;
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        rc = -ENOENT;
        goto out;
    }
    int64_t want = result_i64(r, 0, 0), total = 0;
    PQclear(r);
    *size = want;
    for (int n = 0;;) {
        char num[16];
        snprintf(num, sizeof num, "%d", n);
        const char *cv[] = {sha, num};
        r = run_bin(c, "SELECT data FROM blob_chunks WHERE sha=$1 AND n >= $2::integer "
                       "ORDER BY n LIMIT 4", 2, cv, NULL, NULL, 1);
        if (!r) {
            rc = -EIO;
            goto out;
        }
        int rows = PQntuples(r);
        for (int i = 0; i < rows && !rc; i++) {
            size_t len = (size_t)PQgetlength(r, i, 0);
            total += (int64_t)len;
            if (total > want)
                rc = -EIO;
            else if (len)
                rc = sink(ctx, PQgetvalue(r, i, 0), len);
        }
        PQclear(r);
        if (rc)
            goto out;
        if (rows < BLOB_CHUNKS_PER_QUERY)
            break;
        n += rows;
    }
    if (total != want) {
        log_write(LOG_ERROR, "postgres", NULL, "blob %s has %lld of its %lld bytes", sha,
                  (long long)total, (long long)want);
        rc = -EIO;
    }
out:
    reader_end(st, c);
    return rc;
}

/* ---- storage instance files ---- */

static int pg_storage_version(struct store *s, const char *instance_id, int64_t *version)
{
    struct pg_store *st = PG(s);
    struct conn *c = reader_begin(st);
    if (!c)
        return -EIO;
    const char *v[] = {instance_id};
    PGresult *r = run(c, "SELECT version FROM storage_state WHERE instance_id=$1", 1, v);
    int rc = r ? 0 : -EIO;
    *version = result_i64(r, 0, 0);
    PQclear(r);
    reader_end(st, c);
    return rc;
}

static int pg_storage_files(struct store *s, const char *instance_id, int64_t *version,
                            json_t **files)
{
    struct pg_store *st = PG(s);
    *files = NULL;
    struct conn *c = reader_begin(st);   /* one REPEATABLE READ snapshot for both */
    if (!c)
        return -EIO;
    int rc = 0;
    const char *v[] = {instance_id};
    PGresult *r = run(c, "SELECT version FROM storage_state WHERE instance_id=$1", 1, v);
    if (!r) {
        rc = -EIO;
        goto out;
    }
    *version = result_i64(r, 0, 0);
    PQclear(r);
    r = run(c, "SELECT path, size, mode, sha FROM storage_files WHERE instance_id=$1 "
               "ORDER BY path", 1, v);
    if (!r) {
        rc = -EIO;
        goto out;
    }
    json_t *arr = json_array();
    for (int i = 0; i < PQntuples(r); i++)
        json_array_append_new(arr, json_pack("[s, I, I, s]", PQgetvalue(r, i, 0),
                                             (json_int_t)result_i64(r, i, 1),
                                             (json_int_t)result_i64(r, i, 2), PQgetvalue(r, i, 3)));
    PQclear(r);
    *files = arr;
out:
    reader_end(st, c);
    return rc;
}

/* The version row is taken first (an upsert: its row lock orders the
 * commits of one instance across nodes), then every change of the list in
 * two statements, then the totals, checked against the limits (every
 * node's files, which no node's own walk sees); one transaction, so a
 * reader sees a version with all of its files or none. */
static int pg_storage_commit(struct store *s, const char *project_id, const char *instance_id,
                             const json_t *changes, const struct store_storage_opts *o,
                             int64_t *before, int64_t *after)
{
    struct pg_store *st = PG(s);
    char *text = jdump(changes, NULL);
    if (!text)
        return -EINVAL;
    struct conn *c = blob_writer_begin(st);
    if (!c) {
        free(text);
        return -EIO;
    }
    int rc = -EIO;
    const char *bump = json_array_size(changes) ? "1" : "0";
    const char *v1[] = {instance_id, project_id, bump, o->partial ? "t" : "f"};
    PGresult *r = run(c, "INSERT INTO storage_state(instance_id, project_id, version, bytes, "
                         "partial) VALUES($1, $2, $3::bigint, 0, $4::boolean) ON CONFLICT "
                         "(instance_id) DO UPDATE SET version=storage_state.version + $3::bigint, "
                         "partial=EXCLUDED.partial RETURNING version", 4, v1);
    if (!r)
        goto out;
    *after = result_i64(r, 0, 0);
    *before = *after - (json_array_size(changes) ? 1 : 0);
    PQclear(r);
    if (o->floor > *after) {
        /* the row is locked: *before stays the version this commit replaced */
        char floor[24];
        snprintf(floor, sizeof floor, "%lld", (long long)o->floor);
        const char *vf[] = {instance_id, floor};
        r = run(c, "UPDATE storage_state SET version=$2::bigint WHERE instance_id=$1", 2, vf);
        if (!r)
            goto out;
        PQclear(r);
        *after = o->floor;
    }
    if (!json_array_size(changes)) {
        rc = 0;
        goto out;
    }
    const char *v2[] = {instance_id, text};
    static const char totals[] = "SELECT count(*), coalesce(sum(size), 0) FROM storage_files "
                                 "WHERE instance_id=$1";
    r = run(c, totals, 1, v2);
    if (!r)
        goto out;
    int64_t files0 = result_i64(r, 0, 0), bytes0 = result_i64(r, 0, 1);
    PQclear(r);
    r = run(c, "INSERT INTO storage_files(instance_id, path, size, mode, sha) SELECT $1, "
               "e->>0, (e->>1)::bigint, (e->>2)::integer, e->>3 FROM "
               "jsonb_array_elements($2::jsonb) e WHERE jsonb_array_length(e) = 4 "
               "ON CONFLICT (instance_id, path) DO UPDATE SET size=EXCLUDED.size, "
               "mode=EXCLUDED.mode, sha=EXCLUDED.sha", 2, v2);
    if (!r)
        goto out;
    PQclear(r);
    r = run(c, "DELETE FROM storage_files WHERE instance_id=$1 AND path IN (SELECT e->>0 FROM "
               "jsonb_array_elements($2::jsonb) e WHERE jsonb_array_length(e) = 1)", 2, v2);
    if (!r)
        goto out;
    PQclear(r);
    r = run(c, totals, 1, v2);
    if (!r)
        goto out;
    int64_t files1 = result_i64(r, 0, 0), bytes1 = result_i64(r, 0, 1);
    PQclear(r);
    /* past a limit, and growing: a commit that shrinks the instance goes */
    if ((o->max_files && files1 > o->max_files && files1 > files0) ||
        (o->max_bytes && bytes1 > o->max_bytes && bytes1 > bytes0)) {
        rc = -EFBIG;
        goto out;
    }
    char bytes[24];
    snprintf(bytes, sizeof bytes, "%lld", (long long)bytes1);
    const char *v3[] = {instance_id, bytes};
    r = run(c, "UPDATE storage_state SET bytes=$2::bigint WHERE instance_id=$1", 2, v3);
    if (!r)
        goto out;
    PQclear(r);
    rc = 0;
out:
    free(text);
    if (!rc)
        rc = commit(c, "COMMIT");
    else if (!conn_bad(c) && simple(c, "ROLLBACK"))
        c->broken = true;
    reader_put(st, c);
    return rc;
}

static int pg_storage_size(struct store_tx *t, const char *instance_id, int64_t *bytes,
                           bool *partial)
{
    const char *v[] = {instance_id};
    PGresult *r = run(TX(t)->c, "SELECT bytes, partial FROM storage_state WHERE instance_id=$1",
                      1, v);
    if (!r)
        return -EIO;
    *bytes = result_i64(r, 0, 0);
    *partial = PQntuples(r) > 0 && !strcmp(PQgetvalue(r, 0, 1), "t");
    PQclear(r);
    return 0;
}

const struct store_backend store_pg_backend = {
    .name = "postgres",
    .open = pg_open,
    .close = pg_close,
    .ping = pg_ping,
    .write = pg_write,
    .read = pg_read,
    .on_commit = pg_on_commit,
    .is_write = pg_is_write,
    .put = pg_put,
    .get = pg_get,
    .patch = pg_patch,
    .del = pg_del,
    .list = pg_list,
    .log_append = pg_log_append,
    .log_read = pg_log_read,
    .log_bytes = pg_log_bytes,
    .event_append = pg_event_append,
    .event_list = pg_event_list,
    .event_last_id = pg_event_last_id,
    .conc_active = pg_conc_active,
    .meta_get = pg_meta_get,
    .meta_set = pg_meta_set,
    .idem_get = pg_idem_get,
    .idem_put = pg_idem_put,
    .idem_del = pg_idem_del,
    .prune = pg_prune,
    .blob_referenced = pg_blob_referenced,
    .try_get = pg_try_get,
    .get_many = pg_get_many,
    .watch = pg_watch,
    .leader = pg_leader,
    .node_id = pg_node_id,
    .node_alive = pg_node_alive,
    .dump = pg_dump,
    .load = pg_load,
    .blob_put = pg_blob_put,
    .blob_get = pg_blob_get,
    .write_retry = pg_write_retry,
    .storage_version = pg_storage_version,
    .storage_files = pg_storage_files,
    .storage_commit = pg_storage_commit,
    .storage_size = pg_storage_size,
};
