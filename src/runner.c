/*
 * runner — see runner.h.  Threads: exec's supervisor thread calls the
 * callbacks below, which only queue; the runner thread does the rest.
 */
#include "runner.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "blob.h"
#include "events.h"
#include "exec.h"
#include "jdump.h"
#include "jsonschema.h"
#include "log.h"
#include "run.h"
#include "runtime.h"
#include "sched.h"
#include "secrets.h"
#include "storage.h"
#include "tree.h"
#include "util.h"

#define MAX_ARTIFACT_BYTES (64LL << 20)

enum item_kind { IT_LOG, IT_CONTROL, IT_EXIT };

struct item {
    enum item_kind kind;
    char run_id[ID_LEN];
    char *type, *level, *message;
    json_t *data;             /* log data, or the control message */
    int iteration;
    struct exec_result *res;
    json_t *artifacts;        /* stored artifacts of an exit: [{name, sha, size}] */
    json_t *storage_notes;    /* an exit's storage write-back warnings, for its log (or NULL) */
    bool note;                /* quern's own warning about lost reports */
    int64_t cost;             /* counted in runner.queued_bytes while queued */
    struct item *next;
};

struct runner {
    struct app *app;
    struct exec *exec;
    char *work_root;          /* absolute: <data dir>/runs */
    _Atomic long live;        /* runs started in the executor and not yet exited */
    _Atomic int_least64_t queued_bytes; /* reports pushed and not yet stored or dropped */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct item *head, *tail;
    /* Reports whose transaction failed (the disk full, the database gone):
     * the exits are tried again from retry_at on, so that no run stays
     * `running` for ever; the log lines and control messages of that
     * batch are dropped and counted per run (lost), and the run's end says
     * how many.  Touched by the runner thread only. */
    struct item *retry;
    int64_t retry_at;
    struct lost *lost;
    bool wake, stopping, started;
    struct starting *starting; /* runs being started (under mu), see starting_add */
    bool unsignaled;          /* supervisor thread's: items pushed since its last flush */
    bool lingering;           /* the runner thread waits for more reports (under mu) */
    int backlog;              /* starts that may wait inside exec for a slot */
    struct synced *synced;    /* live runs whose storage copies are shared (runner thread) */
};

/* A live run that mounts storage copies synced with the store: what its
 * exit writes back (storage_sync_out).  Runner thread only. */
struct synced {
    char run_id[ID_LEN];
    char *project_id;
    char *ids[3], *dirs[3];   /* NULL: no shared copy at that scope */
    struct synced *next;
};

static void synced_free(struct synced *s)
{
    free(s->project_id);
    for (int i = 0; i < 3; i++) {
        free(s->ids[i]);
        free(s->dirs[i]);
    }
    free(s);
}

/* A run between its start transaction and its exec_start: the store may
 * already show it running (a commit is visible before its fsync), so
 * commands for it are kept here and handed to exec once it is there. */
struct starting {
    char run_id[ID_LEN];
    struct buf lines;         /* JSON lines for its stdin, each ending in \n */
    bool close, cancel;
    struct starting *next;
};

/* How long reports may wait for more while every slot is busy anyway. */
#define LINGER_MS 2

/* ---- exec callbacks (supervisor thread): queue only ---- */

/* Queues without waking the runner thread: cb_flush does that once for
 * all the reports of a supervisor round, so runs that end together are
 * stored in one turn (one commit) rather than the first alone. */
struct lost {
    char run_id[ID_LEN];
    long n;
    struct lost *next;
};

#define RETRY_MS 1000

/* What an item holds in memory, roughly (a control message counts its
 * fixed share: exec caps each at 1 MiB and all of a run's at its
 * max_output_bytes). */
static int64_t item_cost(const struct item *it)
{
    return (int64_t)sizeof *it + 64 + (it->message ? (int64_t)strlen(it->message) : 0) +
           (it->kind == IT_CONTROL ? 512 : 0);
}

/* exec's back-pressure (exec_callbacks.congested): reports queued for the
 * store beyond this stop exec reading the boxes' output.  Without it a box
 * printing without end grew quernd by gigabytes in seconds (the store
 * writes lines slower than a box prints them). */
#define QUEUED_MAX_BYTES ((int64_t)8 << 20)

/* What one turn takes of the queue, by the same measure: a turn holds each
 * line it stores several times over (its log entry, its event, SQLite's
 * pages) until its commit, so a box printing without end made turns of
 * 40 000 lines and quernd's peak 370 MiB; turns of this size keep it near
 * 100 MiB (bench/output_mem.py).  Runs that end together still share a
 * turn: an exit's report costs a few hundred bytes. */
#define TURN_MAX_BYTES ((int64_t)1 << 20)

static bool cb_congested(void *ctx)
{
    struct runner *rn = ctx;
    return atomic_load_explicit(&rn->queued_bytes, memory_order_relaxed) > QUEUED_MAX_BYTES;
}

static void push(struct runner *rn, struct item *it)
{
    it->cost = item_cost(it);
    atomic_fetch_add_explicit(&rn->queued_bytes, it->cost, memory_order_relaxed);
    pthread_mutex_lock(&rn->mu);
    if (rn->tail)
        rn->tail->next = it;
    else
        rn->head = it;
    rn->tail = it;
    pthread_mutex_unlock(&rn->mu);
    rn->unsignaled = true;
}

static void cb_flush(void *ctx)
{
    struct runner *rn = ctx;
    if (!rn->unsignaled)
        return;
    rn->unsignaled = false;
    pthread_mutex_lock(&rn->mu);
    /* a runner waiting for more reports needs no wake-up per report: only
     * when its wait should end (or at its deadline) */
    if (!rn->lingering || exec_free_slots(rn->exec) >= rn->backlog - 1)
        pthread_cond_signal(&rn->cond);
    pthread_mutex_unlock(&rn->mu);
}

static void cb_log(void *ctx, const char *run_id, const char *type, const char *level,
                   const char *message, const json_t *data, int iteration)
{
    struct item *it = xcalloc(1, sizeof *it);
    it->kind = IT_LOG;
    snprintf(it->run_id, sizeof it->run_id, "%s", run_id);
    it->type = xstrdup(type);
    it->level = xstrdup(level ? level : !strcmp(type, "stderr") ? "error" : "info");
    it->message = xstrdup(message ? message : "");
    it->data = data ? json_deep_copy(data) : NULL;
    it->iteration = iteration;
    push(ctx, it);
}

static void cb_control(void *ctx, const char *run_id, const json_t *msg, int iteration)
{
    struct item *it = xcalloc(1, sizeof *it);
    it->kind = IT_CONTROL;
    snprintf(it->run_id, sizeof it->run_id, "%s", run_id);
    it->data = json_deep_copy(msg);
    it->iteration = iteration;
    push(ctx, it);
}

static void cb_exit(void *ctx, const char *run_id, struct exec_result *res)
{
    struct item *it = xcalloc(1, sizeof *it);
    it->kind = IT_EXIT;
    snprintf(it->run_id, sizeof it->run_id, "%s", run_id);
    it->res = res;
    push(ctx, it);
}

static void cb_notice(void *ctx, const char *message)
{
    (void)ctx;
    log_write(LOG_INFO, "sandbox", NULL, "%s", message);
}

static void item_free(struct item *it)
{
    free(it->type);
    free(it->level);
    free(it->message);
    json_decref(it->data);
    json_decref(it->artifacts);
    json_decref(it->storage_notes);
    if (it->res)
        exec_result_release(it->res);
    free(it);
}

static void items_free(struct item *it)
{
    while (it) {
        struct item *n = it->next;
        item_free(it);
        it = n;
    }
}

/* ---- runs being started ---- */

/* Marks ids as being started (before the transaction that starts them). */
static void starting_add(struct runner *rn, char **ids, int n)
{
    pthread_mutex_lock(&rn->mu);
    for (int i = 0; i < n; i++) {
        struct starting *st = xcalloc(1, sizeof *st);
        snprintf(st->run_id, sizeof st->run_id, "%s", ids[i]);
        buf_init(&st->lines);
        st->next = rn->starting;
        rn->starting = st;
    }
    pthread_mutex_unlock(&rn->mu);
}

static struct starting **starting_find(struct runner *rn, const char *run_id)
{
    struct starting **pp = &rn->starting;
    while (*pp && strcmp((*pp)->run_id, run_id))
        pp = &(*pp)->next;
    return pp;
}

/* The run is in exec now (started) or will not be: hands over the commands
 * kept for it, or drops them. */
static void starting_done(struct runner *rn, const char *run_id, bool started)
{
    pthread_mutex_lock(&rn->mu);
    struct starting **pp = starting_find(rn, run_id), *st = *pp;
    if (st) {
        *pp = st->next;
        if (started) {
            /* exec keeps the order: its start command is queued first */
            char *p = st->lines.data, *end = p ? p + st->lines.len : NULL;
            while (p && p < end) {
                char *nl = memchr(p, '\n', (size_t)(end - p));
                *nl = '\0';
                exec_send(rn->exec, run_id, p);
                p = nl + 1;
            }
            if (st->close)
                exec_close_stdin(rn->exec, run_id);
            if (st->cancel)
                exec_cancel(rn->exec, run_id);
        }
        buf_release(&st->lines);
        free(st);
    }
    pthread_mutex_unlock(&rn->mu);
}

/* Drops what is left of ids (runs a start transaction did not start). */
static void starting_clear(struct runner *rn, char **ids, int n)
{
    for (int i = 0; i < n; i++)
        starting_done(rn, ids[i], false);
}

enum starting_cmd { SC_SEND, SC_CLOSE, SC_CANCEL };

/* Keeps a command for a run being started: 0, or -ENOENT when it is not. */
static int starting_keep(struct runner *rn, const char *run_id, enum starting_cmd c,
                         const char *line)
{
    pthread_mutex_lock(&rn->mu);
    struct starting *st = *starting_find(rn, run_id);
    if (st) {
        if (c == SC_SEND) {
            size_t n = strlen(line);
            while (n && line[n - 1] == '\n')
                n--;
            buf_append(&st->lines, line, n);
            buf_append(&st->lines, "\n", 1);
        } else if (c == SC_CLOSE) {
            st->close = true;
        } else {
            st->cancel = true;
        }
    }
    pthread_mutex_unlock(&rn->mu);
    return st ? 0 : -ENOENT;
}

/* ---- applying items (store writer thread, inside one transaction) ---- */

struct batch {
    struct runner *rn;
    struct item *items;
    json_t *runs;       /* run id -> run doc loaded in this tx */
};

static json_t *batch_run(struct store_tx *tx, struct batch *b, const char *id)
{
    json_t *r = json_object_get(b->runs, id);
    if (r)
        return r;
    r = store_get(tx, SK_RUN, NULL, id);
    if (!r)
        return NULL;
    json_object_set_new(b->runs, id, r);
    return r;
}

static int emit(struct store_tx *tx, struct app *app, json_t *run, const char *type, json_t *data)
{
    return events_emit(tx, app->events, json_string_value(json_object_get(run, "project_id")),
                       json_string_value(json_object_get(run, "task_id")),
                       json_string_value(json_object_get(run, "id")), type, data);
}

/* Control messages that only change fields of the run: batch_fn saves the
 * run once after them.  Saving it per message rewrote the whole document
 * each time, and with a big checkpoint and output in it (1.8 MB) a flood of
 * tiny progress messages held every project's writes for most of a
 * minute. */
static bool saved_later(const json_t *msg)
{
    const char *type = json_string_value(json_object_get(msg, "type"));
    return type && (!strcmp(type, "progress") || !strcmp(type, "usage"));
}

static int apply_control(struct store_tx *tx, struct app *app, json_t *run, json_t *msg)
{
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (!type)
        return 0;
    if (!strcmp(type, "progress")) {
        json_t *p = json_object_get(msg, "progress");
        if (!json_is_number(p))
            return 0;
        double v = json_number_value(p);
        v = v < 0 ? 0 : v > 1 ? 1 : v;
        json_object_set_new(run, "progress", json_real(v));
        int rc = run_progress_to_task(tx, app, run);   /* the run is saved by batch_fn */
        return rc ? rc : emit(tx, app, run, "task_run.progress", json_pack("{s:f}", "progress", v));
    }
    if (!strcmp(type, "checkpoint")) {
        json_t *data = json_object_get(msg, "data") ?: json_null();
        char id[ID_LEN], ts[RFC3339_LEN];
        id_new("chk", id);
        rfc3339_format(now_ms(), ts);
        json_t *cp = json_pack("{s:s, s:O, s:O, s:O, s:O, s:s}", "id", id, "run_id",
                               json_object_get(run, "id"), "task_id", json_object_get(run, "task_id"),
                               "attempt", json_object_get(run, "attempt"), "data", data,
                               "created_at", ts);
        int rc = store_put(tx, SK_CHECKPOINT, json_string_value(json_object_get(run, "project_id")), cp);
        json_decref(cp);
        if (rc)
            return rc;
        json_object_set_new(run, "checkpoints_count",
                            json_integer(json_integer_value(json_object_get(run, "checkpoints_count")) + 1));
        json_object_set(run, "latest_checkpoint", data);
        rc = run_save(tx, run);
        return rc ? rc : emit(tx, app, run, "task_run.checkpoint", json_pack("{s:s}", "checkpoint_id", id));
    }
    if (!strcmp(type, "output")) {
        json_t *out = json_object_get(msg, "output");
        if (!out)
            return 0;
        json_object_set(run, "output", out);
        int rc = run_save(tx, run);
        return rc ? rc : emit(tx, app, run, "task_run.output", json_pack("{s:O}", "output", out));
    }
    if (!strcmp(type, "usage")) {
        json_t *t = json_object_get(msg, "tokens_used"), *c = json_object_get(msg, "cost");
        /* the sums stop at the largest value they can hold (a message of
         * INT64_MAX tokens made the total wrap to a negative count) */
        if (json_is_integer(t) && json_integer_value(t) > 0) {
            json_int_t cur = json_integer_value(json_object_get(run, "tokens_used"));
            json_int_t add = json_integer_value(t);
            json_int_t sum = cur > LLONG_MAX - add ? LLONG_MAX : cur + add;
            json_object_set_new(run, "tokens_used", json_integer(sum));
        }
        if (json_is_number(c) && json_number_value(c) > 0) {
            double sum = json_number_value(json_object_get(run, "cost")) + json_number_value(c);
            json_object_set_new(run, "cost", json_real(isfinite(sum) ? sum : DBL_MAX));
        }
        return 0;   /* saved by batch_fn */
    }
    if (!strcmp(type, "input_request")) {
        /* a prompt that is not a string is ignored, as is every field of
         * the wrong type: the interaction's prompt is a string or null */
        json_t *prompt = json_object_get(msg, "prompt");
        return run_ask(tx, app, run, json_is_string(prompt) ? prompt : NULL,
                       json_object_get(msg, "schema"));
    }
    return 0;
}

/* Records how the run used the storage instances it was provided: "opened"
 * (a file at an instance's top, or its top directory, was opened, to list
 * it too) and "accessed" (read, written, created, renamed, removed),
 * from exec's watch of them (res->storage_use). */
static void record_storage_use(json_t *run, const struct exec_result *res)
{
    json_t *access = json_object_get(run, "storage_access");
    if (!json_is_array(access))
        return;
    char ts[RFC3339_LEN];
    rfc3339_format(now_ms(), ts);
    size_t n = json_array_size(access);
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_array_get(access, i);
        if (strcmp(json_string_value(json_object_get(a, "access_type")) ?: "", "provided"))
            continue;
        const char *scope = json_string_value(json_object_get(a, "scope")) ?: "";
        int k = !strcmp(scope, "account") ? 0 : !strcmp(scope, "project") ? 1
              : !strcmp(scope, "organization") ? 2 : -1;
        static const struct {
            unsigned bit;
            const char *type;
        } uses[] = {{EXEC_ST_OPENED, "opened"}, {EXEC_ST_ACCESSED, "accessed"}};
        for (size_t u = 0; k >= 0 && u < 2; u++)
            if (res->storage_use[k] & uses[u].bit)
                run_note_storage_access(run, json_string_value(json_object_get(a, "instance_id")),
                                        scope, uses[u].type, ts);
    }
}

/* Adds an exit's artifacts to the run.  An earlier attempt's stay (a name
 * left again replaces its own), so one attempt's files, within the limits
 * alone, could take the run past them: the files that would are left out,
 * with one warning in the run's log. */
static int add_exit_artifacts(struct store_tx *tx, struct app *app, json_t *run, json_t *files)
{
    json_t *sizes = json_object();   /* name -> size, the manifest as it grows */
    size_t i, skipped = 0;
    json_t *a;
    int64_t total = 0;
    int rc = 0;
    const char *first = NULL;
    json_array_foreach(json_object_get(run, "artifacts"), i, a) {
        total += json_integer_value(json_object_get(a, "size"));
        json_object_set(sizes, json_string_value(json_object_get(a, "name")) ?: "",
                        json_object_get(a, "size"));
    }
    json_array_foreach(files, i, a) {
        const char *name = json_string_value(json_object_get(a, "name"));
        int64_t size = json_integer_value(json_object_get(a, "size"));
        json_t *had = json_object_get(sizes, name);
        int64_t after = total - json_integer_value(had) + size;
        if ((!had && json_object_size(sizes) >= RUN_MAX_ARTIFACTS) || after > RUN_MAX_ARTIFACT_BYTES) {
            if (!skipped++)
                first = name;
            continue;
        }
        rc = run_add_artifact(tx, app, run, name, json_string_value(json_object_get(a, "sha")), size,
                              run_guess_content_type(name));
        if (rc)
            goto out;
        total = after;
        json_object_set(sizes, name, json_object_get(a, "size"));
    }
    if (skipped) {
        char *msg = xasprintf("artifacts not stored: the run holds at most %d artifacts and 1 GiB, "
                              "earlier attempts' included (%zu files, the first: %s)",
                              RUN_MAX_ARTIFACTS, skipped, first);
        json_t *entries = json_pack("[{s:s, s:s, s:s, s:n, s:n}]", "type", "log", "level", "warn",
                                    "message", msg, "data", "error");
        free(msg);
        rc = run_append_logs(tx, app, run, entries);
        json_decref(entries);
    }
out:
    json_decref(sizes);
    return rc;
}

/* The run's final state from the executor's result. */
static int apply_exit(struct store_tx *tx, struct app *app, json_t *run, struct item *it)
{
    struct exec_result *res = it->res;
    enum run_status st = run_status_of(run);
    if (run_status_terminal(st) || st == RS_REVIEW_REQUIRED) {
        /* ended from outside while its code lived (a PATCH, set_output, its
         * deadline): the end stands, what the code said after it is
         * dropped, but what it used is the run's as on every run that
         * started (cpu_ms, peak_memory_kb and wall_ms were missing, and
         * iterations behind when the last ones had logged nothing).  A run
         * waiting for its review was completed from outside too (the
         * code's own completion is the last exit): the code's end used to
         * complete it past the review, with the code's output. */
        record_storage_use(run, res);
        json_object_set_new(run, "cpu_ms", json_integer(res->cpu_ms));
        json_object_set_new(run, "peak_memory_kb", json_integer(res->peak_memory_kb));
        json_object_set_new(run, "wall_ms", json_integer(res->wall_ms));
        if (res->iterations > json_integer_value(json_object_get(run, "iterations")))
            json_object_set_new(run, "iterations", json_integer(res->iterations));
        return run_save(tx, run);
    }
    int rc = add_exit_artifacts(tx, app, run, it->artifacts);
    if (rc)
        return rc;
    if (json_array_size(it->storage_notes)) {
        json_t *entries = json_array(), *n;
        size_t i;
        json_array_foreach(it->storage_notes, i, n)   /* one warn line each */
            json_array_append_new(entries, json_pack("{s:s, s:s, s:O, s:n, s:n}", "type", "log",
                                                     "level", "warn", "message", n, "data",
                                                     "error"));
        rc = run_append_logs(tx, app, run, entries);
        json_decref(entries);
        if (rc)
            return rc;
    }
    record_storage_use(run, res);
    json_object_set_new(run, "cpu_ms", json_integer(res->cpu_ms));
    json_object_set_new(run, "peak_memory_kb", json_integer(res->peak_memory_kb));
    json_object_set_new(run, "wall_ms", json_integer(res->wall_ms));
    json_object_set_new(run, "iterations", json_integer(res->iterations));
    json_object_set_new(run, "exit_code", res->exit_code >= 0 ? json_integer(res->exit_code)
                                                              : json_null());
    if (res->output)
        json_object_set(run, "output", res->output);
    struct run_outcome out = {.code = res->error_code, .message = res->error_message,
                              .has_exit_code = res->exit_code >= 0, .exit_code = res->exit_code};
    enum run_status to;
    if (st == RS_CANCELING || !strcmp(res->status, "canceled")) {
        to = RS_CANCELED;
        out.code = NULL;
        out.message = NULL;
    } else if (!strcmp(res->status, "completed")) {
        to = RS_COMPLETED;
        out.has_exit_code = false;
        char *path = NULL, *msg = NULL, *full = NULL;
        if (run_check_output(tx, run, res->output, &path, &msg)) {
            full = xasprintf("the output does not match the output_schema at %s: %s",
                             path ? path : "$", msg ? msg : "invalid");
            to = RS_FAILED;
            out.code = "invalid_output";
            out.message = full;
        }
        if (st == RS_INTERACTION_REQUIRED)
            run_move(tx, app, run, RS_RUNNING, NULL);
        rc = run_move(tx, app, run, to, &out);
        free(path);
        free(msg);
        free(full);
        return rc == -EPERM ? 0 : rc;
    } else if (!strcmp(res->status, "timed_out")) {
        to = RS_TIMED_OUT;
    } else {
        to = RS_FAILED;
    }
    rc = run_move(tx, app, run, to, &out);
    return rc == -EPERM ? 0 : rc;
}

static int batch_fn(struct store_tx *tx, void *arg)
{
    struct batch *b = arg;
    struct app *app = b->rn->app;
    json_t *logs = json_object();   /* run id -> array of entries */
    json_t *unsaved = json_object(); /* run id -> true: changed, not saved yet */
    int rc = 0;
    for (struct item *it = b->items; it && !rc; it = it->next) {
        json_t *run = batch_run(tx, b, it->run_id);
        if (!run)
            continue;
        /* ended while its code lived (a PATCH, set_output, its deadline):
         * what the code says after the end is dropped, so the terminal
         * event stays the run's last and a progress never changes it */
        if (it->kind != IT_EXIT && (run_status_terminal(run_status_of(run)) ||
                                    run_status_of(run) == RS_REVIEW_REQUIRED))
            continue;
        /* the run shows the iteration its code is in: a control message
         * (a question, a checkpoint) counts as a log line does (a run asking
         * in a silent iteration 2 showed iterations 0) */
        if (it->iteration > json_integer_value(json_object_get(run, "iterations")))
            json_object_set_new(run, "iterations", json_integer(it->iteration));
        if (it->kind == IT_LOG) {
            json_t *arr = json_object_get(logs, it->run_id);
            if (!arr) {
                arr = json_array();
                json_object_set_new(logs, it->run_id, arr);
            }
            json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:O, s:n, s:i}", "type", it->type,
                                                 "level", it->level, "message", it->message, "data",
                                                 it->data ? it->data : json_null(), "error",
                                                 "iteration", it->iteration));
            continue;
        }
        /* keep log order: flush this run's pending lines before a change */
        json_t *pending = json_object_get(logs, it->run_id);
        if (pending && json_array_size(pending)) {
            rc = run_append_logs(tx, app, run, pending);
            json_array_clear(pending);
            if (rc)
                break;
        }
        if (it->kind == IT_CONTROL && saved_later(it->data)) {
            rc = apply_control(tx, app, run, it->data);
            json_object_set_new(unsaved, it->run_id, json_true());
            continue;
        }
        rc = it->kind == IT_CONTROL ? apply_control(tx, app, run, it->data)
                                    : apply_exit(tx, app, run, it);
        json_object_del(unsaved, it->run_id);   /* those save the run */
    }
    const char *id;
    json_t *arr;
    json_object_foreach(logs, id, arr) {
        if (rc || !json_array_size(arr))
            continue;
        json_t *run = json_object_get(b->runs, id);
        rc = run_append_logs(tx, app, run, arr);
        json_object_set_new(unsaved, id, json_true());
    }
    json_t *t;
    json_object_foreach(unsaved, id, t) {
        if (!rc)
            rc = run_save(tx, json_object_get(b->runs, id));
    }
    json_decref(logs);
    json_decref(unsaved);
    return rc;
}

/* Stores an exit's artifact files as blobs (file I/O, outside any tx). */
static void store_artifacts(struct runner *rn, struct item *it)
{
    struct exec_result *res = it->res;
    it->artifacts = json_array();
    struct blob *bl = rn->app->blobs;
    for (size_t i = 0; bl && i < res->nartifacts; i++) {
        int fd = open(res->artifacts[i].path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
            continue;
        char sha[65];
        int64_t size = 0;
        if (!blob_put_fd(bl, fd, MAX_ARTIFACT_BYTES, sha, &size))
            json_array_append_new(it->artifacts, json_pack("{s:s, s:s, s:I}", "name",
                                                           res->artifacts[i].name, "sha", sha,
                                                           "size", (json_int_t)size));
        close(fd);
    }
}

/* Writes back the shared storage copies an exited run mounted, before its
 * end is stored: a run started after that end, on any node, finds them.
 * Runner thread (file and store I/O, outside any tx). */
static void storage_write_back(struct runner *rn, struct item *it)
{
    struct synced **p = &rn->synced;
    while (*p && strcmp((*p)->run_id, it->run_id))
        p = &(*p)->next;
    struct synced *s = *p;
    if (!s)
        return;
    *p = s->next;
    if (!it->storage_notes)
        it->storage_notes = json_array();
    for (int i = 0; i < 3; i++) {
        if (s->ids[i])
            storage_sync_out(rn->app, s->project_id, s->ids[i], s->dirs[i], it->storage_notes);
    }
    synced_free(s);
}

/* ---- dispatch: queued code runs into free slots ---- */

struct start {
    struct runner *rn;
    char **ids;
    int n;
    json_t *started;   /* [{run, task}] */
    char **busy;       /* ids another node is changing right now */
    int nbusy;
};

static int start_fn(struct store_tx *tx, void *arg)
{
    struct start *s = arg;
    struct app *app = s->rn->app;
    for (int i = 0; i < s->n; i++) {
        /* locked until commit: each attempt starts once across nodes */
        json_t *run = NULL;
        if (store_try_get(tx, SK_RUN, NULL, s->ids[i], &run) == -EAGAIN)
            s->busy[s->nbusy++] = s->ids[i];
        if (!run)
            continue;
        if (run_status_of(run) != RS_QUEUED)
            run_notify(tx, app, run);   /* our ready set was behind: catch up */
        int full = run_status_of(run) == RS_QUEUED ? run_conc_full(tx, run) : 0;
        if (full) {
            json_decref(run);
            if (full < 0)
                return full;
            s->busy[s->nbusy++] = s->ids[i];   /* another node filled its key */
            continue;
        }
        json_t *task = run_status_of(run) == RS_QUEUED ? run_task(tx, run) : NULL;
        if (!task) {
            json_decref(run);
            continue;
        }
        int rc;
        json_t *dl = json_object_get(task, "deadline");
        int64_t dms = 0;
        if (json_is_string(dl) && !rfc3339_parse(json_string_value(dl), &dms) && dms <= now_ms()) {
            struct run_outcome out = {.code = "deadline_exceeded",
                                      .message = "the task's deadline passed before the run started",
                                      .no_retry = true};
            rc = run_move(tx, app, run, RS_FAILED, &out);
        } else {
            json_object_set_new(run, "executor", json_string("local"));
            json_object_set_new(run, "node_id", json_string(store_node_id(app->store)));
            /* the storage instances it gets, recorded as provided */
            json_t *inst = storage_for_task(tx, task);
            char ts[RFC3339_LEN];
            rfc3339_format(now_ms(), ts);
            const char *scope;
            json_t *d;
            json_object_foreach(inst, scope, d)
                run_note_storage_access(run, json_string_value(json_object_get(d, "id")), scope,
                                        "provided", ts);
            json_object_set_new(task, "_storage", inst);
            rc = run_move(tx, app, run, RS_RUNNING, NULL);
            if (!rc)
                json_array_append_new(s->started, json_pack("{s:O, s:O}", "run", run, "task", task));
        }
        json_decref(run);
        json_decref(task);
        if (rc && rc != -EPERM)
            return rc;
    }
    return 0;
}

struct fail_arg {
    struct app *app;
    const char *run_id;
    const char *code, *message;
};

static int fail_fn(struct store_tx *tx, void *arg)
{
    struct fail_arg *f = arg;
    json_t *run = store_get(tx, SK_RUN, NULL, f->run_id);
    if (!run)
        return 0;
    struct run_outcome out = {.code = f->code, .message = f->message, .no_retry = true};
    int rc = run_move(tx, f->app, run, RS_FAILED, &out);
    json_decref(run);
    return rc == -EPERM ? 0 : rc;
}

static int64_t setting(const json_t *task, const char *name)
{
    return json_integer_value(json_object_get(json_object_get(task, "settings"), name));
}

/* A limit of the run: the policy's cap (run_gate's "limits") or the task's. */
static int64_t limit(const json_t *run, const json_t *task, const char *name)
{
    json_t *v = json_object_get(json_object_get(run, "limits"), name);
    return json_is_integer(v) ? json_integer_value(v) : setting(task, name);
}

struct sec {
    struct app *app;
    const char *project_id;
    const json_t *names;
    char **n, **v;
    size_t cnt;
    int rc;
};

static int sec_fn(struct store_tx *tx, void *arg)
{
    struct sec *s = arg;
    s->rc = secrets_open_for_run(s->app, tx, s->project_id, s->names, &s->n, &s->v, &s->cnt);
    return 0;
}

/* Hands one started run to the executor; false when it could not start
 * (the run is failed in the store, its reservation is free again). */
static bool launch(struct runner *rn, json_t *run, json_t *task)
{
    bool ok = false;
    struct app *app = rn->app;
    json_t *in = json_object_get(run, "input");
    char *input = in ? jdump(in, NULL) : xstrdup("{}");
    json_t *cp = json_object_get(run, "latest_checkpoint");
    char *checkpoint = cp ? jdump(cp, NULL) : NULL;
    const char *code = json_string_value(json_object_get(task, "code"));
    struct exec_spec spec = {
        .run_id = json_string_value(json_object_get(run, "id")),
        .task_id = json_string_value(json_object_get(run, "task_id")),
        .project_id = json_string_value(json_object_get(run, "project_id")),
        .attempt = (int)json_integer_value(json_object_get(run, "attempt")),
        .runtime_id = json_string_value(json_object_get(task, "runtime_id")),
        .code = code ? code : "",
        .code_len = code ? strlen(code) : 0,
        .input_json = input,
        .checkpoint_json = checkpoint,
        .work_root = rn->work_root,
        .timeout_ms = limit(run, task, "timeout_ms"),
        .inactivity_timeout_ms = setting(task, "inactivity_timeout_ms"),
        /* a grace of 0 is no grace at all (exec's 0 is its default) */
        .kill_grace_ms = json_is_integer(json_object_get(json_object_get(task, "settings"),
                                                         "kill_grace_ms")) &&
                                 setting(task, "kill_grace_ms") == 0
                             ? EXEC_GRACE_NONE
                             : setting(task, "kill_grace_ms"),
        .memory_limit_mb = limit(run, task, "memory_limit_mb"),
        .max_output_bytes = setting(task, "max_output_bytes"),
        .max_iterations = setting(task, "max_iterations"),
        .network = json_is_true(json_object_get(json_object_get(task, "settings"), "network")),
        .secrets_env = json_is_true(json_object_get(task, "secrets_env")),
    };
    /* storage directories, owned by the box's root */
    json_t *inst = json_object_get(task, "_storage");
    char *dirs[3] = {NULL, NULL, NULL};
    struct synced *sy = NULL;
    static const char *const scopes[3] = {"account", "project", "organization"};
    unsigned uid = exec_box_uid(rn->exec);
    for (int i = 0; i < 3; i++) {
        json_t *d = json_object_get(inst, scopes[i]);
        if (!d)
            continue;
        /* made by an earlier run: one stat rather than three mkdirs and a chown */
        const char *sid = json_string_value(json_object_get(d, "id"));
        dirs[i] = storage_dir(app, spec.project_id, sid, false, uid);
        struct stat sb;
        if (!dirs[i] || lstat(dirs[i], &sb) || !S_ISDIR(sb.st_mode) || sb.st_uid != uid) {
            free(dirs[i]);
            dirs[i] = storage_dir(app, spec.project_id, sid, true, uid);
        }
    }
    /* shared copies (a store that keeps storage files) up to date first */
    sy = xcalloc(1, sizeof *sy);
    snprintf(sy->run_id, sizeof sy->run_id, "%s", spec.run_id);
    sy->project_id = xstrdup(spec.project_id);
    for (int i = 0; i < 3; i++) {
        json_t *d = json_object_get(inst, scopes[i]);
        if (!d || !dirs[i])
            continue;
        const char *sid = json_string_value(json_object_get(d, "id"));
        int src = storage_sync_in(app, sid, dirs[i], uid);
        if (src < 0) {
            char *m = xasprintf("the %s storage instance %s could not be brought up to date from "
                                "the store (%s)", scopes[i], sid, strerror(-src));
            struct fail_arg f = {app, spec.run_id, "storage_unavailable", m};
            store_write(app->store, fail_fn, &f);
            free(m);
            goto out;
        }
        if (src > 0) {
            sy->ids[i] = xstrdup(sid);
            sy->dirs[i] = xstrdup(dirs[i]);
        }
    }
    struct sec sec = {app, spec.project_id, json_object_get(task, "secrets"), NULL, NULL, 0, 0};
    if (json_array_size(sec.names)) {
        /* A read whose connection died under it (PostgreSQL restarted) says
         * nothing: a secret it saw absent may be there, and the run failed
         * as if it had been deleted.  Once more, on a fresh connection. */
        int rrc = 0;
        for (int i = 0; i < 2; i++) {
            secrets_free(sec.n, sec.v, sec.cnt);
            sec.n = sec.v = NULL;
            sec.cnt = 0;
            sec.rc = 0;
            rrc = store_read(app->store, sec_fn, &sec);
            if (!rrc)
                break;
        }
        if (rrc) {
            secrets_free(sec.n, sec.v, sec.cnt);
            sec.n = sec.v = NULL;
            sec.cnt = 0;
        }
        if (rrc || sec.rc) {
            bool key = !rrc && sec.rc != -ENOENT && sec.rc != -EINVAL;
            struct fail_arg f = {app, spec.run_id,
                                 key ? "secret_key_unavailable" : "secret_unavailable",
                                 key ? secrets_key_error(sec.rc)
                                 : rrc ? "the task's secrets could not be read: the store is "
                                         "unreachable"
                                 : sec.rc == -ENOENT
                                     ? "a secret the task names no longer exists (deleted?)"
                                     : "a secret the task names could not be opened with this "
                                       "node's secrets key"};
            store_write(app->store, fail_fn, &f);
            goto out;
        }
        spec.nsecrets = sec.cnt;
        spec.secret_names = (const char *const *)sec.n;
        spec.secret_values = (const char *const *)sec.v;
    }
    spec.storage_account_dir = dirs[0];
    spec.storage_project_dir = dirs[1];
    spec.storage_org_dir = dirs[2];
    int rc = exec_start(rn->exec, &spec);
    if (!rc) {
        rn->live++;
        ok = true;
        sy->next = rn->synced;
        rn->synced = sy;
        sy = NULL;
    }
    starting_done(rn, spec.run_id, !rc);
    secrets_free(sec.n, sec.v, sec.cnt);
    sec.n = sec.v = NULL;
    if (rc) {
        struct fail_arg f = {app, spec.run_id,
                             rc == -ENOENT ? "runtime_unavailable" : "sandbox_error",
                             rc == -ENOENT ? "the runtime is not configured on this node"
                             : rc == -EBUSY ? "no execution slot was free"
                                            : "the sandbox could not start the run"};
        store_write(app->store, fail_fn, &f);
    }
out:
    if (sy)
        synced_free(sy);
    for (int i = 0; i < 3; i++)
        free(dirs[i]);
    free(input);
    free(checkpoint);
    return ok;
}

/* Applies a batch of executor reports and starts the runs taken from the
 * scheduler in one transaction: one commit (one fsync) per turn of the
 * runner instead of two. */
struct turn {
    struct batch *b;
    struct start *s;
};

static int turn_fn(struct store_tx *tx, void *arg)
{
    struct turn *t = arg;
    int rc = t->b ? batch_fn(tx, t->b) : 0;
    if (!rc && t->s)
        rc = start_fn(tx, t->s);
    return rc;
}

/* Launches the runs a start transaction moved to running; returns how
 * many the executor took. */
static int launch_started(struct runner *rn, struct start *s)
{
    size_t i;
    json_t *st;
    int n = 0;
    json_array_foreach(s->started, i, st)
        n += launch(rn, json_object_get(st, "run"), json_object_get(st, "task"));
    return n;
}

#define TAKE_MAX 64

/* Starts queued code runs in the free slots, in transactions of their own:
 * for the runs a wake-up made ready while nothing was queued here.  A slot
 * frees only when a run ends, and the end is queued here just after, so a
 * round that filled every free slot it saw is the last: slots that free
 * meanwhile are started by the turn that stores those ends. */
static void dispatch(struct runner *rn)
{
    for (;;) {
        int free_slots = exec_free_slots(rn->exec);
        if (free_slots <= 0 || rn->app->draining)
            return;
        char *ids[TAKE_MAX];
        struct sched_filter f = {.executor = true};
        int n = sched_take(rn->app->sched, &f, ids, free_slots < TAKE_MAX ? free_slots : TAKE_MAX);
        if (n <= 0)
            return;
        char *busy[TAKE_MAX];
        struct start s = {rn, ids, n, json_array(), busy, 0};
        starting_add(rn, ids, n);
        /* the boxes start while the commit is synced (see turn) */
        struct store_ticket *tk = NULL;
        int rc = store_write_begin(rn->app->store, start_fn, &s, &tk);
        if (rc)
            sched_give_back(rn->app->sched, ids, n);
        else if (s.nbusy)
            sched_give_back_later(rn->app->sched, busy, s.nbusy, 250);
        int launched = launch_started(rn, &s);
        store_write_wait(rn->app->store, tk);
        starting_clear(rn, ids, n);
        json_decref(s.started);
        for (int k = 0; k < n; k++)
            free(ids[k]);
        if (rc || (launched == n && n < TAKE_MAX))
            return;
    }
}

static struct lost *lost_find(struct runner *rn, const char *run_id)
{
    struct lost *l = rn->lost;
    while (l && strcmp(l->run_id, run_id))
        l = l->next;
    return l;
}

/* After a failed transaction: keeps the exits for a retry (rn->retry),
 * counts the other reports as lost for their runs, and returns what is to
 * be freed. */
static struct item *keep_exits(struct runner *rn, struct item *items)
{
    struct item *drop = NULL, **kept_tail = &rn->retry;
    while (*kept_tail)
        kept_tail = &(*kept_tail)->next;
    while (items) {
        struct item *it = items;
        items = it->next;
        it->next = NULL;
        if (it->kind == IT_EXIT) {
            *kept_tail = it;
            kept_tail = &it->next;
            continue;
        }
        if (it->note) {   /* made again at the retry */
            it->next = drop;
            drop = it;
            continue;
        }
        struct lost *l = lost_find(rn, it->run_id);
        if (!l) {
            l = xcalloc(1, sizeof *l);
            snprintf(l->run_id, sizeof l->run_id, "%s", it->run_id);
            l->next = rn->lost;
            rn->lost = l;
        }
        l->n++;
        it->next = drop;
        drop = it;
    }
    rn->retry_at = mono_ms() + RETRY_MS;
    return drop;
}

static void forget_lost(struct runner *rn, const char *run_id)
{
    for (struct lost **lp = &rn->lost; *lp; lp = &(*lp)->next) {
        if (!strcmp((*lp)->run_id, run_id)) {
            struct lost *l = *lp;
            *lp = l->next;
            free(l);
            return;
        }
    }
}

/* Puts a warning before the exit of each run that lost reports to a failed
 * transaction, saying how many. */
static struct item *note_lost(struct runner *rn, struct item *items)
{
    for (struct item **pp = &items; *pp; pp = &(*pp)->next) {
        struct item *it = *pp;
        if (it->kind != IT_EXIT)
            continue;
        struct lost *l = lost_find(rn, it->run_id);
        if (l) {
            struct item *w = xcalloc(1, sizeof *w);
            w->kind = IT_LOG;
            w->note = true;
            snprintf(w->run_id, sizeof w->run_id, "%s", it->run_id);
            w->type = xstrdup("log");
            w->level = xstrdup("warn");
            w->message = xasprintf("%ld log entries or control messages of this run were lost: "
                                   "the store could not write them (see quernd's log)", l->n);
            w->iteration = it->res && it->res->iterations > 0 ? it->res->iterations : 1;
            w->next = it;
            *pp = w;
            pp = &w->next;
        }
    }
    return items;
}

/* One turn: stores the queued executor reports and starts the runs that
 * fit in the free slots, in one transaction (one commit, one fsync, for
 * both).  Returns true when slots may be left free that no queued report
 * will bring back (a start failed or was skipped, or the take was capped):
 * the caller then dispatches. */
static bool turn(struct runner *rn, struct item *items)
{
    items = note_lost(rn, items);
    for (struct item *it = items; it; it = it->next)
        if (it->kind == IT_EXIT && !it->artifacts) {
            store_artifacts(rn, it);
            storage_write_back(rn, it);
        }
    struct batch b = {rn, items, json_object()};
    /* the runs that can start now ride in the same transaction */
    char *ids[TAKE_MAX];
    int n = 0, free_slots = exec_free_slots(rn->exec);
    if (free_slots > 0 && !rn->app->draining) {
        struct sched_filter f = {.executor = true};
        n = sched_take(rn->app->sched, &f, ids, free_slots < TAKE_MAX ? free_slots : TAKE_MAX);
    }
    if (n < 0)
        n = 0;
    char *busy[TAKE_MAX];
    struct start s = {rn, ids, n, json_array(), busy, 0};
    struct turn t = {&b, n > 0 ? &s : NULL};
    starting_add(rn, ids, n);
    /* The boxes of the runs started here are launched once the transaction
     * has committed, while its fsync (--fsync always) goes on: nothing a
     * client was told depends on it, and a crash before the fsync leaves
     * these runs queued, to run again, as a crash during a run does. */
    struct store_ticket *tk = NULL;
    int rc = store_write_begin(rn->app->store, turn_fn, &t, &tk);
    bool more = n == TAKE_MAX;
    if (rc && n > 0) {
        /* the starts may be what failed: the reports alone, then */
        sched_give_back(rn->app->sched, ids, n);
        json_object_clear(b.runs);
        t.s = NULL;
        rc = store_write_begin(rn->app->store, turn_fn, &t, &tk);
        json_array_clear(s.started);
        more = true;
    }
    if (rc) {
        log_write(LOG_ERROR, "runner", json_pack("{s:i}", "rc", rc),
                  "storing run updates failed; the ends of runs are tried again each second");
        items = keep_exits(rn, items);
    } else {
        if (s.nbusy)
            sched_give_back_later(rn->app->sched, busy, s.nbusy, 250);
        if (launch_started(rn, &s) < n)
            more = true;
    }
    store_write_wait(rn->app->store, tk);   /* durable from here: the ends below count */
    starting_clear(rn, ids, n);
    json_decref(s.started);
    for (int k = 0; k < n; k++)
        free(ids[k]);
    json_decref(b.runs);
    while (items) {
        struct item *nx = items->next;
        if (items->kind == IT_EXIT) {
            rn->live--;   /* stored: a drain may now stop */
            forget_lost(rn, items->run_id);
        }
        item_free(items);
        items = nx;
    }
    return more;
}

static void *runner_main(void *arg)
{
    struct runner *rn = arg;
    bool rest = false; /* the last turn left items queued */
    pthread_mutex_lock(&rn->mu);
    while (!rn->stopping) {
        while (!rn->head && !rn->wake && !rn->stopping) {
            if (!rn->retry) {
                pthread_cond_wait(&rn->cond, &rn->mu);
                continue;
            }
            int64_t left = rn->retry_at - mono_ms();
            if (left <= 0)
                break;
            struct timespec until;
            mono_deadline(&until, left);
            pthread_cond_timedwait(&rn->cond, &rn->mu, &until);
        }
        /* While starts wait inside exec every slot is busy: a turn now or a
         * little later leaves none idle, and reports that end together
         * share a commit.  The wait ends when one start is left waiting
         * (it covers the end that comes during this turn's commit), or
         * after LINGER_MS. */
        if (rn->head && rn->backlog > 1 && !rest) {
            struct timespec until;
            mono_deadline(&until, LINGER_MS);
            rn->lingering = true;
            while (!rn->stopping && exec_free_slots(rn->exec) < rn->backlog - 1 &&
                   pthread_cond_timedwait(&rn->cond, &rn->mu, &until) != ETIMEDOUT) {
            }
            rn->lingering = false;
        }
        struct item *items = rn->head, *end = NULL;
        int64_t taken = 0;
        for (struct item *it = items; it && (!end || taken + it->cost <= TURN_MAX_BYTES);
             it = it->next) {
            taken += it->cost;
            end = it;
        }
        rn->head = end ? end->next : NULL;
        if (!rn->head)
            rn->tail = NULL;
        if (end)
            end->next = NULL;
        rest = rn->head != NULL; /* the next turn comes at once, without lingering */
        atomic_fetch_sub_explicit(&rn->queued_bytes, taken, memory_order_relaxed);
        if (rn->retry && mono_ms() >= rn->retry_at) {
            struct item *last = rn->retry;
            while (last->next)
                last = last->next;
            last->next = items;
            items = rn->retry;
            rn->retry = NULL;
        }
        bool more = rn->wake;
        rn->wake = false;
        pthread_mutex_unlock(&rn->mu);
        /* A turn takes starts for the slots free now; slots that free during
         * its commit come with their reports, which the next turn stores
         * together with more starts (one commit, not two). */
        if (items)
            more = turn(rn, items);
        if (more)
            dispatch(rn);
        pthread_mutex_lock(&rn->mu);
    }
    pthread_mutex_unlock(&rn->mu);
    return NULL;
}

void runner_wake(struct runner *rn)
{
    if (!rn)
        return;
    pthread_mutex_lock(&rn->mu);
    rn->wake = true;
    pthread_cond_signal(&rn->cond);
    pthread_mutex_unlock(&rn->mu);
}

int runner_slots(const struct runner *rn)
{
    return exec_slots(rn->exec);
}

void runner_metrics(struct runner *rn, struct buf *out)
{
    struct exec_stats st;
    exec_get_stats(rn->exec, &st);
    buf_printf(out,
               "# HELP quern_code_runs_started_total Code runs started on this node, in a warm "
               "box or a box of their own.\n"
               "# TYPE quern_code_runs_started_total counter\n"
               "quern_code_runs_started_total{start=\"warm\"} %lld\n"
               "quern_code_runs_started_total{start=\"cold\"} %lld\n"
               "# HELP quern_warm_boxes_ready Warm boxes started and waiting for a run.\n"
               "# TYPE quern_warm_boxes_ready gauge\nquern_warm_boxes_ready %d\n"
               "# HELP quern_exec_slots Execution slots of this node.\n"
               "# TYPE quern_exec_slots gauge\nquern_exec_slots %d\n",
               (long long)st.warm_starts, (long long)st.cold_starts, st.warm_ready,
               exec_slots(rn->exec));
}

struct runner *runner_new(struct app *app, int slots, char **err)
{
    struct runner *rn = xcalloc(1, sizeof *rn);
    rn->app = app;
    pthread_mutex_init(&rn->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&rn->cond, &ca);
    pthread_condattr_destroy(&ca);
    /* exec wants an absolute work root; --data may be relative */
    char *data = realpath(app->data_dir, NULL);
    rn->work_root = xasprintf("%s/runs", data ? data : app->data_dir);
    free(data);
    struct exec_callbacks cb = {rn, cb_log, cb_control, cb_exit, cb_notice, cb_flush, cb_congested};
    rn->exec = exec_new(slots, &cb, err);
    if (!rn->exec) {
        pthread_mutex_destroy(&rn->mu);
        pthread_cond_destroy(&rn->cond);
        free(rn->work_root);
        free(rn);
        return NULL;
    }
    /* .artifacts/ holds a finished run's files until this thread stores
     * them (exec_result_release removes each); a crash left them there for
     * good.  No run is being collected yet: whatever is there is garbage. */
    char *left = xasprintf("%s/.artifacts", rn->work_root);
    (void)tree_remove(left, true);
    free(left);
    /* warm boxes are made now, not at the first run */
    exec_prewarm(rn->exec, rn->work_root);
    /* as many starts again wait inside exec: a slot that frees is refilled
     * at once, not after this thread's next store commit */
    rn->backlog = exec_free_slots(rn->exec);
    exec_set_backlog(rn->exec, rn->backlog);
    if (pthread_create(&rn->thread, NULL, runner_main, rn)) {
        *err = xstrdup("cannot start the runner thread");
        exec_free(rn->exec);
        free(rn->work_root);
        free(rn);
        return NULL;
    }
    pthread_setname_np(rn->thread, "quern-runner");   /* for top and perf */
    rn->started = true;
    runner_wake(rn);
    return rn;
}

void runner_free(struct runner *rn)
{
    if (!rn)
        return;
    pthread_mutex_lock(&rn->mu);
    rn->stopping = true;
    pthread_cond_signal(&rn->cond);
    pthread_mutex_unlock(&rn->mu);
    if (rn->started)
        pthread_join(rn->thread, NULL);
    exec_free(rn->exec);
    items_free(rn->head);
    while (rn->starting) {
        struct starting *n = rn->starting->next;
        buf_release(&rn->starting->lines);
        free(rn->starting);
        rn->starting = n;
    }
    /* exits never stored stay `running` in the store: the next start's
     * recovery settles them, as after a crash */
    items_free(rn->retry);
    while (rn->synced) {   /* not written back: the next run here that mounts them does */
        struct synced *n = rn->synced->next;
        synced_free(rn->synced);
        rn->synced = n;
    }
    while (rn->lost) {
        struct lost *n = rn->lost->next;
        free(rn->lost);
        rn->lost = n;
    }
    pthread_mutex_destroy(&rn->mu);
    pthread_cond_destroy(&rn->cond);
    free(rn->work_root);
    free(rn);
}

int runner_send(struct runner *rn, const char *run_id, const char *json_line)
{
    if (!rn)
        return -ENOENT;
    if (!starting_keep(rn, run_id, SC_SEND, json_line))
        return 0;
    return exec_send(rn->exec, run_id, json_line);
}

int runner_close_stdin(struct runner *rn, const char *run_id)
{
    if (!rn)
        return -ENOENT;
    if (!starting_keep(rn, run_id, SC_CLOSE, NULL))
        return 0;
    return exec_close_stdin(rn->exec, run_id);
}

int runner_cancel(struct runner *rn, const char *run_id)
{
    if (!rn)
        return -ENOENT;
    if (!starting_keep(rn, run_id, SC_CANCEL, NULL))
        return 0;
    return exec_cancel(rn->exec, run_id);
}

bool runner_code_live(const json_t *run)
{
    if (!json_is_true(json_object_get(run, "has_code")) ||
        json_is_string(json_object_get(run, "worker_id")))
        return false;
    enum run_status st = run_status_of(run);
    const char *kind =
        json_string_value(json_object_get(json_object_get(run, "interaction"), "kind"));
    return st == RS_RUNNING || (st == RS_INTERACTION_REQUIRED && kind && !strcmp(kind, "input"));
}

/* ---- recovery at start ---- */

struct recover {
    struct app *app;
    json_t *runs;    /* code runs this process may have to end */
    json_t *dead;    /* node id -> true: nodes that are gone */
};

static int recover_list_fn(struct store_tx *tx, void *arg)
{
    struct recover *r = arg;
    static const char *const statuses[] = {"running", "canceling", "interaction_required"};
    /* project by project: each query is a range of the (project_id, f_status)
     * index; without the project it scanned every finished run too */
    struct store_query all = {NULL, 0, 0, 0, true, NULL};
    json_t *projects = NULL;
    int rc = store_list(tx, SK_PROJECT, NULL, &all, &projects, NULL);
    size_t p;
    json_t *proj;
    json_array_foreach(projects, p, proj) {
        for (size_t k = 0; !rc && k < ARRAY_LEN(statuses); k++) {
            struct store_filter f = {"status", statuses[k]};
            struct store_query q = {&f, 1, 0, 0, true, NULL};
            json_t *runs = NULL;
            rc = store_list(tx, SK_RUN, json_string_value(json_object_get(proj, "id")), &q, &runs, NULL);
            size_t i;
            json_t *run;
            json_array_foreach(runs, i, run) {
                const char *ex = json_string_value(json_object_get(run, "executor"));
                if (ex && !strcmp(ex, "local"))   /* a worker's lease: its expiry handles it */
                    json_array_append(r->runs, run);
            }
            json_decref(runs);
        }
    }
    json_decref(projects);
    return rc;
}

static int recover_fn(struct store_tx *tx, void *arg)
{
    struct recover *r = arg;
    struct app *app = r->app;
    size_t i;
    json_t *listed;
    json_array_foreach(r->runs, i, listed) {
        const char *node = json_string_value(json_object_get(listed, "node_id"));
        if (node && !json_object_get(r->dead, node))
            continue;   /* another node runs it (several nodes on PostgreSQL) */
        /* read again, locked: it may have moved since it was listed */
        json_t *run = store_get(tx, SK_RUN, json_string_value(json_object_get(listed, "project_id")),
                                json_string_value(json_object_get(listed, "id")));
        const char *now_node = json_string_value(json_object_get(run, "node_id"));
        const char *ex = json_string_value(json_object_get(run, "executor"));
        if (!run || !ex || strcmp(ex, "local") || (node && (!now_node || strcmp(node, now_node))) ||
            json_integer_value(json_object_get(run, "attempt")) !=
                json_integer_value(json_object_get(listed, "attempt"))) {
            json_decref(run);
            continue;
        }
        int rc = 0;
        enum run_status st = run_status_of(run);
        if (st == RS_CANCELING) {
            rc = run_move(tx, app, run, RS_CANCELED, NULL);
        } else if (st == RS_RUNNING || st == RS_INTERACTION_REQUIRED) {
            const char *kind = json_string_value(json_object_get(json_object_get(run, "interaction"), "kind"));
            if (!(st == RS_INTERACTION_REQUIRED && kind && !strcmp(kind, "approval"))) {
                struct run_outcome out = {.code = "node_restarted",
                                          .message = "quernd stopped while the run's code was running"};
                rc = run_move(tx, app, run, RS_FAILED, &out);
            }
        }
        json_decref(run);
        if (rc && rc != -EPERM)
            return rc;
    }
    return 0;
}

/* DATA/node names the node id of the last quernd that ran on this data
 * directory.  That process is gone (this one holds the directory's lock),
 * whatever PostgreSQL's pg_locks still says in the moment before it sees
 * the dead process's session end: its runs were left `running` at the
 * start and ended seconds later by the leader's sweep as `node_lost`. */
#define NODE_FILE "node"

static char *previous_node(const char *data_dir)
{
    char *p = xasprintf("%s/" NODE_FILE, data_dir), id[ID_LEN + 1];
    int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    free(p);
    if (fd < 0)
        return NULL;
    ssize_t n = read(fd, id, ID_LEN);
    close(fd);
    if (n <= 0)
        return NULL;
    id[n] = '\0';
    id[strcspn(id, "\n")] = '\0';
    return *id ? xstrdup(id) : NULL;
}

/* Writes this process's node id to DATA/node durably (a temp file, fsync,
 * rename, fsync of the directory); a failure only costs the next start
 * that certainty, so it is logged and not fatal. */
static void record_node(const char *data_dir, const char *id)
{
    char *p = xasprintf("%s/" NODE_FILE, data_dir), *tmp = xasprintf("%s.tmp", p);
    char *line = xasprintf("%s\n", id);
    int rc = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 || write(fd, line, strlen(line)) != (ssize_t)strlen(line) || fsync(fd) ||
        rename(tmp, p))
        rc = errno ? -errno : -EIO;
    if (fd >= 0)
        close(fd);
    int dfd = rc ? -1 : open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (fsync(dfd))
            rc = errno ? -errno : -EIO;
        close(dfd);
    }
    if (rc) {
        unlink(tmp);
        log_write(LOG_WARN, "runner", NULL, "cannot record this node's id in %s: %s", p,
                  strerror(-rc));
    }
    free(line);
    free(tmp);
    free(p);
}

/* Ends the code runs left running by a quernd that is gone: this node's
 * previous process, or (several nodes) any node that no longer holds its
 * node lock.  Runs of live nodes are theirs. */
int runner_recover(struct app *app)
{
    struct recover r = {app, json_array(), json_object()};
    const char *me = store_node_id(app->store);
    char *prev = app->data_dir ? previous_node(app->data_dir) : NULL;
    if (prev && me && strcmp(prev, me))
        json_object_set_new(r.dead, prev, json_true());
    free(prev);
    int rc = store_read(app->store, recover_list_fn, &r);
    size_t i;
    json_t *run;
    json_array_foreach(r.runs, i, run) {
        const char *node = json_string_value(json_object_get(run, "node_id"));
        if (node && !json_object_get(r.dead, node) && !store_node_alive(app->store, node))
            json_object_set_new(r.dead, node, json_true());
    }
    if (!rc && json_array_size(r.runs))
        rc = store_write(app->store, recover_fn, &r);
    /* after the previous process's runs are ended, before this one starts any */
    if (!rc && app->data_dir && me)
        record_node(app->data_dir, me);
    json_decref(r.runs);
    json_decref(r.dead);
    return rc;
}

void runner_drain(struct runner *rn, int64_t grace_ms)
{
    if (!rn)
        return;
    /* app->draining already stops new starts; let running code finish */
    int64_t until = mono_ms() + grace_ms;
    while (rn->live > 0 && mono_ms() < until)
        usleep(20000);
    if (rn->live > 0)
        log_write(LOG_WARN, "runner", json_pack("{s:i}", "runs", (int)rn->live),
                  "drain: code still running after the grace period is stopped");
}
