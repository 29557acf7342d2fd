/*
 * store — the one interface to durable state.  Nothing above this header
 * knows which backend runs (SQLite embedded, or PostgreSQL); store.c's
 * factory alone names them.
 *
 * Model.  Every object (project, key, definition, task, run, trigger, …) is
 * a JSON document of a kind, addressed by (project_id, id).  Each kind has a
 * few indexed fields, copied out of the document on every write, that lists
 * filter and sort on.  Run logs and events are append-only streams with their
 * own calls because they are the hot path.
 *
 * Transactions.  All access goes through a struct store_tx.  Reads use
 * store_read(): a snapshot on the calling thread's own read connection.
 * Writes use store_write(): the function runs on the one thread that
 * writes at a time (SQLite: the caller that leads the current group commit;
 * PostgreSQL: the backend's writer thread), inside a transaction shared with
 * other concurrent writes (group commit), and store_write() returns only
 * after that transaction is durable per the fsync policy.  Each write
 * function runs inside its own savepoint, so one request's failure never
 * undoes another's; only an I/O error, a full disk or a failed allocation,
 * which can make SQLite drop the whole transaction, fails every write of
 * its group (each then gets -EIO or -ENOSPC, and none is committed).
 * Write functions and commit hooks must not call
 * store_write() (the writer would wait for itself); they may call
 * store_read() (SQLite gives a read nested on one thread its own
 * connection).
 *
 * Invariants:
 *  1. store_write() returns 0 only after the transaction holding fn's
 *     changes has committed (and, with fsync=always, reached the disk);
 *     so does store_write_wait() for its ticket.  store_write_begin()
 *     returns 0 once committed and visible, never before (test_store_write).
 *  2. A write fn that returns non-zero leaves nothing behind: its savepoint
 *     is rolled back.
 *  3. Post-commit hooks run after the commit, in commit order, on the writer
 *     thread, with committed=true; for a rolled-back fn they run with
 *     committed=false (only to release what they hold).
 *  4. Event ids increase monotonically in commit order.
 *  5. Inside a write transaction, store_get of a task, run, trigger, webhook
 *     or delivery returns the latest committed version and keeps every other
 *     writer (another node on the same PostgreSQL) from changing that row
 *     until the transaction ends: a read-modify-write of one of these is
 *     never lost and never decided on stale data (PostgreSQL: SELECT ... FOR
 *     UPDATE; SQLite has one writer for everything).  store_list never locks.
 *
 * Several nodes.  Several quernd may share one PostgreSQL.  Each node learns
 * of the runs and tasks the others change through store_watch(); exactly one
 * node at a time is the leader (store_leader()) and does the cluster-wide
 * timed duties (cron, lease expiry, deadlines, webhook dispatch).  With
 * SQLite there is one node: it is always the leader and nothing is watched.
 */
#ifndef QUERN_STORE_H
#define QUERN_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

enum store_kind {
    SK_PROJECT,
    SK_KEY,
    SK_DEFINITION,
    SK_TASK,
    SK_RUN,
    SK_CHECKPOINT,
    SK_TRIGGER,
    SK_WEBHOOK,
    SK_DELIVERY,
    SK_SECRET,
    SK_STORAGE,
    SK__COUNT
};

/* The fsync policy: what an acknowledged write survives. */
enum store_fsync {
    STORE_FSYNC_ALWAYS,  /* every commit reaches the disk: survives power loss */
    STORE_FSYNC_BATCH,   /* WAL written per commit, fsync at most every second:
                            survives a process crash, may lose <= 1 s on power loss */
    STORE_FSYNC_OFF,     /* no fsync at all: for tests and throwaway data */
};

struct store_opts {
    enum store_fsync fsync;
    int read_conns;              /* hint; backends may ignore */
};

struct store;
struct store_tx;

/* Opens the store named by url ("sqlite:PATH", a plain path, or
 * "postgres://…"), applies pending migrations and starts its threads.
 * Returns NULL with *err (malloc'd) on failure. */
struct store *store_open(const char *url, const struct store_opts *opts, char **err);
/* Stops the writer after draining queued writes, and closes everything. */
void store_close(struct store *st);
/* A short name of the backend for logs and /readyz ("sqlite", "postgres"). */
const char *store_backend(const struct store *st);
/* 0 when the store answers a trivial query. */
int store_ping(struct store *st);

typedef int (*store_fn)(struct store_tx *tx, void *arg);
/* committed is false when the write was rolled back: free what arg holds. */
typedef void (*store_hook)(void *arg, bool committed);

/* Runs fn in a group-committed write transaction (on the writing thread of
 * the moment, see above) and returns its result once durable (invariant 1).  -EIO when the commit failed. */
int store_write(struct store *st, store_fn fn, void *arg);
/* store_write in two halves, for work that may begin before the write is
 * durable: store_write_begin returns once fn's transaction has committed
 * (visible to every reader, its result final), before its fsync and before
 * its commit hooks run; store_write_wait then returns once it is durable and
 * its hooks have run (invariants 1 and 3 hold at that point).  On 0, *ticket
 * must be passed to store_write_wait exactly once, soon (an SQLite sync
 * group that holds it is led by its caller when no other writer waits).
 * Nothing acknowledged to a client may depend on the write before the wait:
 * a crash before the fsync loses it.  Non-zero: fn's result or -EIO, rolled
 * back, no ticket.  A backend without the split (PostgreSQL) returns from
 * store_write_begin once durable. */
struct store_ticket;
int store_write_begin(struct store *st, store_fn fn, void *arg, struct store_ticket **ticket);
void store_write_wait(struct store *st, struct store_ticket *ticket);
/* Runs fn with a read snapshot on the calling thread. */
int store_read(struct store *st, store_fn fn, void *arg);
/* Registers hook(arg) to run after the commit of tx (invariant 3).  Only in
 * write transactions; in a read tx it runs at once (committed=true). */
void store_tx_on_commit(struct store_tx *tx, store_hook hook, void *arg);
bool store_tx_is_write(const struct store_tx *tx);

/* ---- documents ---- */

struct store_filter {
    const char *field;   /* an indexed field of the kind, or "metadata.<key>" */
    const char *value;   /* compared as text; NULL matches SQL NULL */
};

struct store_query {
    const struct store_filter *filters;
    size_t nfilters;
    int64_t limit;        /* <= 0: no limit */
    int64_t offset;
    bool oldest_first;    /* default newest first */
    const char *search;   /* case-insensitive substring of the doc's name or id; NULL: none */
};

/* Task metadata index (SQLite v11, PostgreSQL v8): a side table task_meta
 * (m_project, m_key, m_value, m_seq) holds one row per metadata key of a
 * task whose value a metadata filter can match (the value's text as the
 * filter compares it, null values left out), written in the transaction
 * that writes the task, so a `metadata.KEY=VALUE` list reads the matching
 * tasks by index, newest first.  Values longer than STORE_META_VALUE_MAX
 * bytes are not indexed (a PostgreSQL B-tree entry is bounded): a filter on
 * such a value, or on a key holding '"' (SQLite's JSON path reads it as
 * path syntax), is answered by the scan as before.  The filter itself is
 * still checked on each row, so the index only narrows the rows read. */
#define STORE_META_VALUE_MAX 512

/* True when the metadata index can answer filter f of a list of kind in
 * project_id (tasks of one project only). */
bool store_meta_indexable(enum store_kind kind, const char *project_id,
                          const struct store_filter *f);
/* The first filter of q that the metadata index answers (its position), or
 * -1 when none can. */
int store_meta_filter(enum store_kind kind, const char *project_id, const struct store_query *q);

/* The metadata filter of q whose task_meta rows should drive a list (its
 * position), or -1 for the plan without them.  With one filter an index
 * serves, that one (when it is a metadata filter).  With several, each is
 * counted by count(ctx, f) up to STORE_META_PROBE_CAP rows through its index
 * (countable(ctx, f) says which can be), and the metadata filter that finds
 * the fewest drives, unless it finds STORE_META_PROBE_CAP and another filter
 * fewer (a metadata value most tasks share beside a rare status): that
 * filter's index serves then.  A count that fails (-1) leaves the first
 * metadata filter (the list's own query reports the error).  A backend's
 * planner cannot weigh these itself: SQLite keeps no statistics, and
 * PostgreSQL's may be missing or stale. */
#define STORE_META_PROBE_CAP 1000
int store_meta_choose(enum store_kind kind, const char *project_id, const struct store_query *q,
                      bool (*countable)(void *ctx, const struct store_filter *f),
                      int64_t (*count)(void *ctx, const struct store_filter *f), void *ctx);

/* The indexed fields of a kind (NULL-terminated), for validating filters. */
const char *const *store_kind_fields(enum store_kind kind);

/* True for an indexed field a document keeps from its creation on (a run's
 * task_id and definition_id): a backend's update need not rewrite it, so
 * its index entries stay untouched. */
bool store_field_immutable(enum store_kind kind, const char *field);
const char *store_kind_name(enum store_kind kind);

/* Inserts doc (which must hold "id").  -EEXIST when (project, id) exists. */
int store_put(struct store_tx *tx, enum store_kind kind, const char *project_id, const json_t *doc);
/* Replaces an existing doc.  -ENOENT when missing. */
int store_update(struct store_tx *tx, enum store_kind kind, const char *project_id, const json_t *doc);
/* Sets top-level fields of a stored doc to the values in `fields` (an
 * object; other fields are kept), and the kind's indexed fields among them,
 * without reading the doc into the caller.  With if_field, only when the
 * doc's top-level string if_field equals if_value.  -ENOENT when no doc
 * matched. */
int store_patch(struct store_tx *tx, enum store_kind kind, const char *project_id, const char *id,
                const json_t *fields, const char *if_field, const char *if_value);
/* Returns a new reference to the doc, or NULL when absent.  project_id NULL
 * looks in every project (ids are unique per kind and project). */
json_t *store_get(struct store_tx *tx, enum store_kind kind, const char *project_id, const char *id);
/* -ENOENT when missing. */
int store_delete(struct store_tx *tx, enum store_kind kind, const char *project_id, const char *id);
/* Lists docs (new reference to an array in *out); *total counts all matches
 * before limit/offset (pass NULL to skip counting).  project_id NULL = all.
 * -EINVAL for an unknown filter field. */
int store_list(struct store_tx *tx, enum store_kind kind, const char *project_id,
               const struct store_query *q, json_t **out, int64_t *total);
/* store_list of the docs after the one whose id is after_id, in the list's
 * order (a cursor that new docs do not shift, and that a deep page reaches
 * by index rather than by skipping); an after_id that names no doc of the
 * kind (in project_id) matches nothing.  *total counts every match, the
 * cursor aside. */
int store_list_after(struct store_tx *tx, enum store_kind kind, const char *project_id,
                     const struct store_query *q, const char *after_id, json_t **out,
                     int64_t *total);
/* store_list for a caller that reads only the top-level fields named in
 * fields (NULL-terminated): a backend may answer documents holding only
 * these (each present, null when the document lacks it), which spares
 * parsing whole documents when many are loaded (the scheduler at start). */
int store_list_fields(struct store_tx *tx, enum store_kind kind, const char *project_id,
                      const struct store_query *q, const char *const *fields, json_t **out);

/* Like store_get in a write transaction, but never waits for a row another
 * writer holds (PostgreSQL: FOR UPDATE SKIP LOCKED): 0 and *out (new
 * reference), -ENOENT when absent, -EAGAIN when another node is changing it
 * right now.  In a read transaction it is store_get. */
int store_try_get(struct store_tx *tx, enum store_kind kind, const char *project_id,
                  const char *id, json_t **out);
/* In a write transaction: *n = the runs of project_id holding a slot of
 * concurrency key (running, canceling, interaction_required but not held
 * for approval: run_holds_slot) other than except_id, counted over every
 * node's commits, so that two nodes never start runs past the key's
 * max_concurrency (each node's scheduler counts only the runs it has heard
 * of).  PostgreSQL: the count waits for every other node's event-writing
 * transaction (a start writes its event) and sees it committed.  SQLite
 * (one writer) counts what this transaction sees: the scheduler's count
 * would miss the starts of earlier writes of the same group commit (two
 * PATCHes to running).  -ENOTSUP when the backend cannot count. */
int store_conc_active(struct store_tx *tx, const char *project_id, const char *key,
                      const char *except_id, int64_t *n);
/* Reads the docs of kind with the given ids (array of strings), in any
 * project, without locking: *out is a new object id -> doc (absent ids are
 * missing from it). */
int store_get_many(struct store_tx *tx, enum store_kind kind, const json_t *ids, json_t **out);

/* ---- run logs ---- */

/* Appends entries (array of log objects) to a run's log; assigns "seq"
 * (1-based, per run) and returns the last seq in *last_seq. */
int store_log_append(struct store_tx *tx, const char *project_id, const char *run_id,
                     json_t *entries, int64_t *last_seq);
/* Returns the run's log entries with seq > after_seq, oldest first, at most
 * limit (<= 0: all), as a new array. */
int store_log_read(struct store_tx *tx, const char *project_id, const char *run_id,
                   int64_t after_seq, int64_t limit, json_t **out);
int64_t store_log_bytes(struct store_tx *tx, const char *project_id, const char *run_id);

/* ---- events ---- */

/* Appends an event {type, project_id, task_id, run_id, data, created_at};
 * assigns its numeric id and returns it in *id (invariant 4). */
int store_event_append(struct store_tx *tx, json_t *event, int64_t *id);

struct store_event_query {
    const char *project_id;    /* required */
    const char *run_id;        /* optional */
    int64_t after_id;          /* > after_id */
    int64_t after_ms;          /* created_at > after_ms when > 0 */
    const char *const *types;  /* include only these (NULL: all) */
    size_t ntypes;
    const char *const *exclude;
    size_t nexclude;
    int64_t limit, offset;     /* limit <= 0: all */
};
/* Events matching q, oldest first.  *total: all events of the run/project;
 * *filtered: matches before limit/offset.  Either may be NULL. */
int store_event_list(struct store_tx *tx, const struct store_event_query *q, json_t **out,
                     int64_t *total, int64_t *filtered);
int64_t store_event_last_id(struct store_tx *tx);

/* ---- meta and idempotency ---- */

/* Returns a malloc'd value or NULL. */
char *store_meta_get(struct store_tx *tx, const char *key);
int store_meta_set(struct store_tx *tx, const char *key, const char *value);

/* Looks up a remembered response for (scope, key): 0 and *status, *body
 * (malloc'd) when found; -ENOENT otherwise. */
int store_idem_get(struct store_tx *tx, const char *scope, const char *key, int64_t since_ms,
                   char **fingerprint, int *status, char **body);
int store_idem_put(struct store_tx *tx, const char *scope, const char *key,
                   const char *fingerprint, int status, const char *body);
/* Forgets (scope, key): a retry with it runs as new.  0 whether or not it
 * was there. */
int store_idem_del(struct store_tx *tx, const char *scope, const char *key);
/* status of an idempotency record whose request's work is stored but whose
 * answer is not (yet): written in the same transaction as the request's
 * first write (store_idem_claim_set), replaced by the answer when it is
 * sent.  One left so by a crash means the work was done and its answer lost. */
#define STORE_IDEM_PENDING 0

/* An Idempotency-Key request being handled on this thread: the first
 * store_write or store_write_retry that commits while it is set also
 * stores the key as STORE_IDEM_PENDING in its own transaction, so a retry
 * after a crash between the work's commit and the answer's record never
 * runs the work a second time.  claimed is set once that write commits.
 * NULL clears it.  (store_write_begin is not covered: no request handler
 * uses it.) */
struct store_idem_claim {
    const char *scope, *key, *fp;
    bool claimed;
};
void store_idem_claim_set(struct store_idem_claim *claim);
/* Stores claim's key as STORE_IDEM_PENDING in tx: for a request whose work
 * another request's transaction does (a run handed to a waiting lease
 * long-poll); the caller sets claimed once tx commits. */
int store_idem_claim_put(struct store_tx *tx, const struct store_idem_claim *claim);

/* ---- several nodes ---- */

/* A document another node changed (or deleted). */
struct store_change {
    enum store_kind kind;      /* SK_RUN or SK_TASK */
    const char *project_id;
    const char *id;
    bool events;               /* kind SK_RUN: only events of run id ("" for
                                * events of no run) were written */
};
/* Called on the store's listener thread with n changes (deduplicated), or
 * with changes == NULL when some may have been missed (the notification
 * connection was lost): the watcher then reloads what it keeps. */
typedef void (*store_watch_fn)(void *ctx, const struct store_change *changes, size_t n);
/* Registers the one watcher of the runs and tasks other nodes commit.  The
 * store starts calling it after this returns; store_close stops it.  SQLite:
 * nothing to watch (a single node), the call does nothing. */
void store_watch(struct store *st, store_watch_fn fn, void *ctx);
/* True while this node is the leader.  PostgreSQL: the node holds a session
 * advisory lock on a dedicated connection; it is lost with the connection
 * (the node died or was cut off) and another node takes it within ~2 s.
 * Cheap (an atomic read): call it before every leader duty. */
bool store_leader(struct store *st);
/* This node's id ("node_..."), new at every store_open; owned by the store. */
const char *store_node_id(const struct store *st);
/* True when the node named id is running and connected to the store (it is
 * this node, or holds its node lock on PostgreSQL).  Not in a write fn. */
bool store_node_alive(struct store *st, const char *node_id);

/* ---- copying a whole store (quern store copy) ---- */

/* The tables every backend has, in the order a copy loads them (NULL-ended). */
const char *const *store_tables(void);
/* Rows of table ordered by its key, from offset, at most limit: *out is a new
 * array of objects column -> value (text, integer or null). */
int store_dump(struct store_tx *tx, const char *table, int64_t offset, int64_t limit,
               json_t **out);
/* Inserts rows (as store_dump gives them) verbatim, ids and sequence numbers
 * included; the backend's counters move past them. */
int store_load(struct store_tx *tx, const char *table, const json_t *rows);

/* ---- retention ---- */

/* Deletes history older than before_ms, at most `limit` rows of each kind
 * per call: events created before it, finished runs (completed, failed,
 * timed_out, denied, canceled) that ended before it with their logs and
 * checkpoints, and idempotency records older than 24 hours.  Tasks and
 * unfinished runs are never pruned, nor the newest event (event ids never
 * go back: SQLite's next id is the newest + 1).  *pruned counts what went. */
int store_prune(struct store_tx *tx, int64_t before_ms, int64_t limit, int64_t *pruned);
/* 1 when some run's artifacts name the blob sha (artifacts[].sha256), 0
 * when none does, -EIO.  For blob.c's sweep of its local files. */
int store_blob_referenced(struct store_tx *tx, const char *sha);

/* ---- blobs (artifact bytes every node can read) ----
 *
 * Content-addressed byte strings named by the hex SHA-256 of their bytes.
 * A backend that several nodes share keeps them itself (PostgreSQL: table
 * blobs, bytes in blob_chunks rows of STORE_BLOB_CHUNK bytes), so an
 * artifact stored through one node is read through any other.  A backend
 * without them (SQLite: one node) answers -ENOTSUP and blob.c keeps the
 * bytes in files under the node's data directory.
 *
 * These calls are not write fns: each runs in its own transaction on the
 * calling thread's connection, never inside store_write(), so a large blob
 * never holds up the group commit.  A blob is stored before the document
 * that names it is committed (content addressing makes that idempotent);
 * the store keeps a reference from every run document to the blobs its
 * "artifacts"[].sha256 name, and store_prune() deletes blobs that no run
 * references and that nobody stored for STORE_BLOB_GRACE_MS (the grace
 * covers the moment between storing a blob and committing its run). */
#define STORE_BLOB_CHUNK (256 * 1024)
#define STORE_BLOB_GRACE_MS (3600LL * 1000)

/* Gives the next bytes of a blob being stored: up to cap bytes into buf,
 * returning how many (0 at the end) or a negative errno. */
typedef long (*store_blob_src)(void *ctx, void *buf, size_t cap);
/* Takes the next bytes of a blob being read (n > 0); non-zero stops. */
typedef int (*store_blob_sink)(void *ctx, const void *data, size_t n);

/* Stores the blob sha (64 lowercase hex digits) of size bytes, pulling them
 * from src, unless the store holds it already (then src is not called and
 * the blob's grace period restarts).  0, -EINVAL when src gave other than
 * size bytes, -ENOTSUP when the backend keeps no blobs, -EIO. */
int store_blob_put(struct store *st, const char *sha, int64_t size, store_blob_src src, void *ctx);
/* Reads the blob sha from one snapshot: *size first, then its bytes in
 * order through sink, a chunk at a time (never the whole blob in memory).
 * 0, -ENOENT, -ENOTSUP when the backend keeps no blobs, -EIO, or the
 * sink's non-zero result. */
int store_blob_get(struct store *st, const char *sha, int64_t *size, store_blob_sink sink,
                   void *ctx);

/* ---- storage instance files (shared by every node) ----
 *
 * A backend that several nodes share keeps, per storage instance, the
 * regular files its runs left: one row per file (path relative to the
 * instance, size, mode, the SHA-256 naming a blob above, stored with
 * store_blob_put first) and a version that every commit of the instance
 * bumps, so a node whose copy is at that version knows it in one query
 * (storage.c keeps each node's working copy in step).  The rows count as
 * references: store_prune() never deletes a blob a file names.  A backend
 * without them (SQLite: one node, the directory is the instance) answers
 * -ENOTSUP.  Like the blob calls these are not write fns: each runs in its
 * own transaction on the calling thread's connection. */

/* *version: the instance's version (0 before its first commit).  0,
 * -ENOTSUP, -EIO. */
int store_storage_version(struct store *st, const char *instance_id, int64_t *version);
/* The instance's files from one snapshot: *files a new array of
 * [path, size, mode, sha], *version that snapshot's version. */
int store_storage_files(struct store *st, const char *instance_id, int64_t *version,
                        json_t **files);
/* How a storage commit goes (store_storage_commit). */
struct store_storage_opts {
    bool partial;        /* a node holds files of it that it could not write back */
    int64_t floor;       /* the version becomes at least this (0: no floor) */
    int64_t max_files;   /* refused when the changes leave more files than */
    int64_t max_bytes;   /* these (and more than before): 0, no limit */
};
/* Applies changes (an array: [path, size, mode, sha] sets a file, [path]
 * deletes it) in one transaction that bumps the instance's version:
 * commits of one instance are serialised, and per file the later commit
 * wins.  o->partial records that a node holds files of it that it could
 * not write back (its size is then a lower bound); with no changes only
 * that mark (and the floor) is set, and the version stays.  Changes that
 * would leave the instance past o->max_files or o->max_bytes, and larger
 * than it was, are not applied: -EFBIG, nothing committed (the nodes
 * together hold what each one's walk alone cannot see).  *before: the
 * version the commit replaced, *after: its own. */
int store_storage_commit(struct store *st, const char *project_id, const char *instance_id,
                         const json_t *changes, const struct store_storage_opts *o,
                         int64_t *before, int64_t *after);
/* In a read or write tx: the bytes of the instance's files as committed,
 * and the partial mark of its last commit.  -ENOTSUP when the backend
 * keeps no files (the caller measures the directory). */
int store_storage_size(struct store_tx *tx, const char *instance_id, int64_t *bytes,
                       bool *partial);

/* Like store_write(), for a write fn that may run more than once: on
 * PostgreSQL, when the transaction holding fn's changes loses a deadlock or
 * a serialization conflict with another node (a rollback that fn did not
 * choose), fn is rolled back and run again in a later batch, up to
 * STORE_WRITE_RETRIES more times after a short random pause, before
 * -EAGAIN is returned.  fn must take its inputs from arg and tx alone and
 * set every output each time it runs (a rolled-back run's post-commit hooks
 * have run with committed=false, invariant 3).  SQLite: store_write(). */
int store_write_retry(struct store *st, store_fn fn, void *arg);
#define STORE_WRITE_RETRIES 4

/* ---- the backend vtable (store.c dispatches through it) ---- */

struct store_backend {
    const char *name;
    struct store *(*open)(const char *target, const struct store_opts *opts, char **err);
    void (*close)(struct store *st);
    int (*ping)(struct store *st);
    int (*write)(struct store *st, store_fn fn, void *arg);
    /* optional: store_write_begin / _wait (NULL: store_write, no ticket) */
    int (*write_begin)(struct store *st, store_fn fn, void *arg, struct store_ticket **t);
    void (*write_wait)(struct store *st, struct store_ticket *t);
    int (*read)(struct store *st, store_fn fn, void *arg);
    void (*on_commit)(struct store_tx *tx, store_hook hook, void *arg);
    bool (*is_write)(const struct store_tx *tx);
    int (*put)(struct store_tx *, enum store_kind, const char *, const json_t *, bool update);
    json_t *(*get)(struct store_tx *, enum store_kind, const char *, const char *);
    int (*patch)(struct store_tx *, enum store_kind, const char *, const char *, const json_t *,
                 const char *, const char *);
    int (*del)(struct store_tx *, enum store_kind, const char *, const char *);
    int (*list)(struct store_tx *, enum store_kind, const char *, const struct store_query *,
                const char *after_id, const char *const *fields, json_t **, int64_t *);
    int (*log_append)(struct store_tx *, const char *, const char *, json_t *, int64_t *);
    int (*log_read)(struct store_tx *, const char *, const char *, int64_t, int64_t, json_t **);
    int64_t (*log_bytes)(struct store_tx *, const char *, const char *);
    int (*event_append)(struct store_tx *, json_t *, int64_t *);
    int (*event_list)(struct store_tx *, const struct store_event_query *, json_t **, int64_t *,
                      int64_t *);
    int64_t (*event_last_id)(struct store_tx *);
    char *(*meta_get)(struct store_tx *, const char *);
    int (*meta_set)(struct store_tx *, const char *, const char *);
    int (*idem_get)(struct store_tx *, const char *, const char *, int64_t, char **, int *, char **);
    int (*idem_put)(struct store_tx *, const char *, const char *, const char *, int, const char *);
    int (*idem_del)(struct store_tx *, const char *, const char *);
    int (*prune)(struct store_tx *, int64_t, int64_t, int64_t *);
    int (*blob_referenced)(struct store_tx *, const char *);
    int (*try_get)(struct store_tx *, enum store_kind, const char *, const char *, json_t **);
    int (*get_many)(struct store_tx *, enum store_kind, const json_t *, json_t **);
    void (*watch)(struct store *, store_watch_fn, void *);
    bool (*leader)(struct store *);
    const char *(*node_id)(const struct store *);
    bool (*node_alive)(struct store *, const char *);
    int (*dump)(struct store_tx *, const char *, int64_t, int64_t, json_t **);
    int (*load)(struct store_tx *, const char *, const json_t *);
    /* optional (NULL: no shared blobs, -ENOTSUP; no retry, plain write) */
    int (*blob_put)(struct store *, const char *, int64_t, store_blob_src, void *);
    int (*blob_get)(struct store *, const char *, int64_t *, store_blob_sink, void *);
    int (*write_retry)(struct store *, store_fn, void *);
    int (*conc_active)(struct store_tx *, const char *, const char *, const char *, int64_t *);
    /* optional (NULL: -ENOTSUP, the files are the node's own directory) */
    int (*storage_version)(struct store *, const char *, int64_t *);
    int (*storage_files)(struct store *, const char *, int64_t *, json_t **);
    int (*storage_commit)(struct store *, const char *, const char *, const json_t *,
                          const struct store_storage_opts *, int64_t *, int64_t *);
    int (*storage_size)(struct store_tx *, const char *, int64_t *, bool *);
};

/* Every backend's struct store begins with this, so store.c can dispatch. */
struct store_base {
    const struct store_backend *be;
};
struct store_tx_base {
    const struct store_backend *be;
};

extern const struct store_backend store_sqlite_backend;
extern const struct store_backend store_pg_backend;

/* Shared by backends: the value of an indexed field taken from doc, as text
 * (malloc'd) or NULL. */
char *store_field_text(const json_t *doc, const char *field);
/* Shared by backends: whether name may stand in SQL as a column or JSON key
 * name as it is (1+ of [a-z0-9_]). */
bool store_plain_name(const char *name);
/* Shared by backends: whether store_get locks kind's rows in a write
 * transaction (invariant 5). */
bool store_kind_locked(enum store_kind kind);
/* Shared by backends: the ORDER BY columns of a table of store_tables(). */
const char *store_table_order(const char *table);

#endif
