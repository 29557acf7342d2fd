/*
 * run — the run state machine and the operations that change runs.  Called
 * inside store write transactions (any thread that calls store_write; the
 * functions run on the store writer thread).
 */
#include "run.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app.h"
#include "events.h"
#include "jsonschema.h"
#include "policy.h"
#include "sched.h"
#include "util.h"

static const char *const names[RS__COUNT] = {
    [RS_QUEUED] = "queued",
    [RS_RUNNING] = "running",
    [RS_PAUSED] = "paused",
    [RS_INTERACTION_REQUIRED] = "interaction_required",
    [RS_REVIEW_REQUIRED] = "review_required",
    [RS_COMPLETED] = "completed",
    [RS_FAILED] = "failed",
    [RS_TIMED_OUT] = "timed_out",
    [RS_DENIED] = "denied",
    [RS_CANCELING] = "canceling",
    [RS_CANCELED] = "canceled",
};

#define T(x) (1u << (x))
#define ENDS (T(RS_COMPLETED) | T(RS_FAILED) | T(RS_TIMED_OUT) | T(RS_CANCELED))

/* The state machine: allowed[from] is the set of statuses a run may move
 * to.  Terminal statuses allow nothing (invariant 1). */
static const unsigned allowed[RS__COUNT] = {
    /* queued: dispatched, held for approval, refused, failed before start
     * (deadline, dependency), or canceled */
    [RS_QUEUED] = T(RS_RUNNING) | T(RS_INTERACTION_REQUIRED) | T(RS_DENIED) | T(RS_FAILED) |
                  T(RS_TIMED_OUT) | T(RS_CANCELING) | T(RS_CANCELED) | T(RS_PAUSED),
    /* running: finishes, pauses, waits for a human, or goes back to the
     * queue (lease lost, undelivered lease, retry) */
    [RS_RUNNING] = ENDS | T(RS_QUEUED) | T(RS_PAUSED) | T(RS_INTERACTION_REQUIRED) |
                   T(RS_REVIEW_REQUIRED) | T(RS_CANCELING) | T(RS_DENIED),
    [RS_PAUSED] = T(RS_RUNNING) | T(RS_QUEUED) | T(RS_CANCELING) | T(RS_CANCELED) |
                  T(RS_FAILED) | T(RS_TIMED_OUT),
    /* waiting for an interaction or an approval: answered (running, or
     * queued after approval), denied, or ended */
    [RS_INTERACTION_REQUIRED] = T(RS_RUNNING) | T(RS_QUEUED) | T(RS_DENIED) | T(RS_CANCELING) |
                                T(RS_CANCELED) | T(RS_FAILED) | T(RS_TIMED_OUT),
    [RS_REVIEW_REQUIRED] = T(RS_COMPLETED) | T(RS_FAILED) | T(RS_CANCELED),
    /* canceling ends canceled; a run that fails or times out while its code
     * is being stopped still ends canceled (the API maps it) */
    [RS_CANCELING] = T(RS_CANCELED),
};

const char *run_status_name(enum run_status s)
{
    return (unsigned)s < RS__COUNT ? names[s] : "unknown";
}

int run_status_parse(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < RS__COUNT; i++)
        if (!strcmp(names[i], name))
            return i;
    return -1;
}

bool run_status_terminal(enum run_status s)
{
    return s == RS_COMPLETED || s == RS_FAILED || s == RS_TIMED_OUT || s == RS_DENIED ||
           s == RS_CANCELED;
}

bool run_can_move(enum run_status from, enum run_status to)
{
    if ((unsigned)from >= RS__COUNT || (unsigned)to >= RS__COUNT)
        return false;
    return (allowed[from] & T(to)) != 0;
}

enum run_status run_status_of(const json_t *run)
{
    int s = run_status_parse(json_string_value(json_object_get(run, "status")));
    return s < 0 ? RS_FAILED : (enum run_status)s;
}

static void set_now(json_t *o, const char *field)
{
    char ts[RFC3339_LEN];
    rfc3339_format(now_ms(), ts);
    json_object_set_new(o, field, json_string(ts));
}

static json_t *jdup(const json_t *v)
{
    return v ? json_deep_copy(v) : json_null();
}

json_t *run_new_doc(const json_t *task, const json_t *input_override, const char *agent_id)
{
    char id[ID_LEN], ts[RFC3339_LEN];
    id_new("run", id);
    rfc3339_format(now_ms(), ts);
    json_t *input = json_deep_copy(json_object_get(task, "input"));
    if (!json_is_object(input)) {
        json_decref(input);
        input = json_object();
    }
    if (json_is_object(input_override))
        json_object_update(input, (json_t *)input_override);
    json_t *settings = json_object_get(task, "settings");
    json_t *r = json_object();
    json_object_set_new_nocheck(r, "id", json_string(id));
    json_object_set_new_nocheck(r, "task_id", jdup(json_object_get(task, "id")));
    json_object_set_new_nocheck(r, "project_id", jdup(json_object_get(task, "project_id")));
    json_object_set_new_nocheck(r, "definition_id", jdup(json_object_get(task, "definition_id")));
    json_object_set_new_nocheck(r, "attempt", json_integer(1));
    json_object_set_new_nocheck(r, "status", json_string("queued"));
    json_object_set_new_nocheck(r, "input", input);
    json_object_set_new_nocheck(r, "output", json_null());
    json_object_set_new_nocheck(r, "error", json_null());
    json_object_set_new_nocheck(r, "errors", json_array());
    json_object_set_new_nocheck(r, "exit_code", json_null());
    json_object_set_new_nocheck(r, "runtime_id", jdup(json_object_get(task, "runtime_id")));
    json_object_set_new_nocheck(r, "agent_id", agent_id ? json_string(agent_id) : json_null());
    json_object_set_new_nocheck(r, "worker_id", json_null());
    json_object_set_new_nocheck(r, "branch", json_null());
    json_object_set_new_nocheck(r, "stage", json_null());
    json_object_set_new_nocheck(r, "state", json_null());
    json_object_set_new_nocheck(r, "progress", json_real(0));
    json_object_set_new_nocheck(r, "iterations", json_integer(0));
    json_object_set_new_nocheck(r, "parent_run_id", json_null());
    json_object_set_new_nocheck(r, "execution_name", json_null());
    json_object_set_new_nocheck(r, "tokens_used", json_integer(0));
    json_object_set_new_nocheck(r, "cost", json_real(0));
    json_object_set_new_nocheck(r, "checkpoints_count", json_integer(0));
    json_object_set_new_nocheck(r, "artifacts", json_array());
    json_object_set_new_nocheck(r, "created_at", json_string(ts));
    json_object_set_new_nocheck(r, "queued_at", json_string(ts));
    json_object_set_new_nocheck(r, "started_at", json_null());
    json_object_set_new_nocheck(r, "completed_at", json_null());
    json_object_set_new_nocheck(r, "updated_at", json_string(ts));
    json_object_set_new_nocheck(r, "duration_ms", json_null());
    json_object_set_new_nocheck(r, "lease_expires_at", json_null());
    json_object_set_new_nocheck(r, "priority", jdup(json_object_get(task, "priority")));
    json_object_set_new_nocheck(r, "has_code", json_boolean(json_is_string(json_object_get(task, "code"))));
    /* a task's output_schema never changes after its creation: the end of a
     * run reads the task for it only when there is one */
    json_object_set_new_nocheck(r, "has_output_schema",
                                json_boolean(json_is_object(json_object_get(task, "output_schema"))));
    /* settings the run's own changes need, so they never read the task */
    json_object_set_new_nocheck(r, "max_retries", jdup(json_object_get(settings, "max_retries")));
    json_object_set_new_nocheck(r, "retry_delay_ms", jdup(json_object_get(settings, "retry_delay_ms")));
    json_object_set_new_nocheck(r, "retry_backoff", jdup(json_object_get(settings, "retry_backoff")));
    json_object_set_new_nocheck(r, "require_review", jdup(json_object_get(settings, "require_review")));
    json_object_set_new_nocheck(r, "blocked_by", json_array());
    json_object_set_new_nocheck(r, "queued_ms", json_integer(now_ms()));
    int64_t dl = 0;
    const char *deadline = json_string_value(json_object_get(task, "deadline"));
    if (deadline && !rfc3339_parse(deadline, &dl))
        json_object_set_new_nocheck(r, "deadline_ms", json_integer(dl));
    /* concurrency: settings.max_concurrency over settings.concurrency_key,
     * or over the definition (or the task) when no key is given */
    json_int_t cmax = json_integer_value(json_object_get(settings, "max_concurrency"));
    if (cmax > 0) {
        const char *key = json_string_value(json_object_get(settings, "concurrency_key"));
        const char *def = json_string_value(json_object_get(task, "definition_id"));
        char *k = key ? xasprintf("key:%s", key)
                  : def ? xasprintf("definition:%s", def)
                        : xasprintf("task:%s", json_string_value(json_object_get(task, "id")));
        json_object_set_new_nocheck(r, "concurrency_key", json_string(k));
        json_object_set_new_nocheck(r, "max_concurrency", json_integer(cmax));
        free(k);
    }
    return r;
}

/* After the commit, the scheduler gets a copy of the run's fields it reads. */
struct note {
    struct app *app;
    struct sched_run *run;
};

static void notify(void *arg, bool committed)
{
    struct note *n = arg;
    if (committed && n->app->sched)
        sched_after_commit_run(n->app->sched, n->run);
    sched_run_free(n->run);
    free(n);
}

/* The fields of a run the scheduler reads (sched_run_read; what the store
 * reads for it at start and on a resync).  run_notify hands it these alone,
 * as C values (sched_run_copy), rather than the whole document (input,
 * output, errors…) or a jansson copy of them. */
const char *const run_sched_fields[] = {
    "id", "project_id", "task_id", "status", "attempt", "executor", "node_id",
    "definition_id", "agent_id", "runtime_id", "has_code", "priority", "queued_ms",
    "not_before_ms", "blocked_by", "lease_expires_at", "deadline_ms", "concurrency_key",
    "max_concurrency", "interaction", NULL};

bool run_holds_slot(const json_t *run)
{
    enum run_status st = run_status_of(run);
    if (st == RS_INTERACTION_REQUIRED) {
        const char *kind =
            json_string_value(json_object_get(json_object_get(run, "interaction"), "kind"));
        return !kind || strcmp(kind, "approval");
    }
    return st == RS_RUNNING || st == RS_CANCELING;
}

int run_conc_full(struct store_tx *tx, const json_t *run)
{
    const char *key = json_string_value(json_object_get(run, "concurrency_key"));
    int64_t max = json_integer_value(json_object_get(run, "max_concurrency"));
    if (!key || max <= 0)
        return 0;
    int64_t n = 0;
    int rc = store_conc_active(tx, json_string_value(json_object_get(run, "project_id")), key,
                               json_string_value(json_object_get(run, "id")), &n);
    if (rc == -ENOTSUP)
        return 0;
    return rc ? rc : n >= max;
}

void run_notify(struct store_tx *tx, struct app *app, const json_t *run)
{
    struct note *n = xmalloc(sizeof *n);
    n->app = app;
    n->run = sched_run_copy(run);
    store_tx_on_commit(tx, notify, n);
}

json_t *run_task(struct store_tx *tx, const json_t *run)
{
    return store_get(tx, SK_TASK, json_string_value(json_object_get(run, "project_id")),
                     json_string_value(json_object_get(run, "task_id")));
}

int run_check_output(struct store_tx *tx, const json_t *run, const json_t *output, char **path,
                     char **msg)
{
    *path = *msg = NULL;
    /* runs made before has_output_schema existed lack it: read the task */
    if (json_is_false(json_object_get(run, "has_output_schema")))
        return 0;
    json_t *task = run_task(tx, run);
    json_t *schema = json_object_get(task, "output_schema");
    int rc = 0;
    if (json_is_object(schema) &&
        jsonschema_validate(schema, output ? output : json_null(), path, msg))
        rc = -EINVAL;
    json_decref(task);
    return rc;
}

static json_t *status_data(const json_t *run)
{
    json_t *d = json_object();
    json_object_set_nocheck(d, "status", json_object_get(run, "status"));
    return d;
}

json_t *run_task_fields(const json_t *run)
{
    json_t *fields = json_object();
    json_object_set_nocheck(fields, "status", json_object_get(run, "status"));
    json_object_set_nocheck(fields, "progress", json_object_get(run, "progress"));
    /* the run's own change time: the task's copy is the same instant */
    json_t *at = json_object_get(run, "updated_at");
    if (json_is_string(at))
        json_object_set_nocheck(fields, "updated_at", at);
    else {
        char ts[RFC3339_LEN];
        rfc3339_format(now_ms(), ts);
        json_object_set_new_nocheck(fields, "updated_at", json_string(ts));
    }
    if (run_status_of(run) == RS_RUNNING && json_is_string(json_object_get(run, "started_at")))
        json_object_set_nocheck(fields, "last_run_at", json_object_get(run, "started_at"));
    return fields;
}

/* The fields of a task that a new run of it sets: the run's own
 * (run_task_fields: status, progress, its change time, last_run_at when it
 * starts running at once) and its place as the latest run. */
static json_t *new_run_fields(const json_t *task, const json_t *run)
{
    json_t *fields = run_task_fields(run);
    json_object_set_nocheck(fields, "latest_run_id", json_object_get(run, "id"));
    json_object_set_new_nocheck(
        fields, "run_count",
        json_integer(json_integer_value(json_object_get(task, "run_count")) + 1));
    return fields;
}

/* The task's status mirrors its latest run.  `doc`, when given, is the
 * task's current document (updated in place), which saves reading it. */
static int update_task(struct store_tx *tx, struct app *app, const json_t *run, bool is_new,
                       json_t *doc)
{
    const char *run_id = json_string_value(json_object_get(run, "id"));
    const char *project = json_string_value(json_object_get(run, "project_id"));
    const char *task_id = json_string_value(json_object_get(run, "task_id"));
    enum run_status s = run_status_of(run);
    int rc = 0;
    if (is_new) {
        /* a new run: run_count + 1 (from doc when given, which is kept up to
         * date), written as a patch rather than the whole document */
        json_t *task = doc ? json_incref(doc) : run_task(tx, run);
        if (!task)
            return 0;   /* the task was deleted; its runs live on until pruned */
        json_t *fields = new_run_fields(task, run);
        json_object_update(task, fields);
        rc = store_patch(tx, SK_TASK, project, task_id, fields, NULL, NULL);
        json_decref(fields);
        json_decref(task);
        return rc == -ENOENT ? 0 : rc;
    }
    /* a change of a run: patch the task in place, only when this run is its
     * latest (an older run does not move the task) */
    json_t *fields = run_task_fields(run);
    rc = store_patch(tx, SK_TASK, project, task_id, fields, "latest_run_id", run_id);
    json_decref(fields);
    if (rc == -ENOENT)
        return 0;   /* deleted, or not the latest run */
    if (!rc && (s == RS_COMPLETED || s == RS_FAILED || s == RS_TIMED_OUT || s == RS_DENIED))
        rc = events_emit(tx, app->events, project, task_id, run_id,
                         s == RS_COMPLETED ? "task.completed" : "task.failed",
                         status_data(run));
    return rc;
}

/* Emits the run's event of type; status: the status the event reports, or
 * NULL for the run's own. */
static int emit_run_as(struct store_tx *tx, struct app *app, const json_t *run, const char *type,
                       const char *status)
{
    json_t *data = json_object();
    if (status)
        json_object_set_new_nocheck(data, "status", json_string(status));
    else
        json_object_set_nocheck(data, "status", json_object_get(run, "status"));
    json_object_set_nocheck(data, "attempt", json_object_get(run, "attempt"));
    json_t *err = json_object_get(run, "error");
    if (json_is_object(err))
        json_object_set_nocheck(data, "error", err);
    return events_emit(tx, app->events, json_string_value(json_object_get(run, "project_id")),
                       json_string_value(json_object_get(run, "task_id")),
                       json_string_value(json_object_get(run, "id")), type, data);
}

static int emit_run(struct store_tx *tx, struct app *app, const json_t *run, const char *type)
{
    return emit_run_as(tx, app, run, type, NULL);
}

/* What stands between a new run and its start: nothing, the project's
 * policy refusing it (*rule, malloc'd, names the rule), or an approval. */
enum gate { GATE_OPEN, GATE_DENIED, GATE_APPROVAL };

/* A run that may go on gets in "limits" the limits the policy caps (a
 * default over the project's maximum, policy_caps); the runner takes them
 * over the task's settings.  *limited: whether it got any. */
static enum gate run_gate(struct store_tx *tx, struct app *app, const json_t *task, json_t *run,
                          char **rule, bool *limited)
{
    json_t *pol = policy_get(tx, json_string_value(json_object_get(task, "project_id")));
    enum gate g = GATE_OPEN;
    *rule = NULL;
    *limited = false;
    if (pol && policy_check_run(pol, task, app->cfg.default_timeout_ms, rule))
        g = GATE_DENIED;
    else if ((pol && policy_requires_approval(pol)) ||
             json_is_true(json_object_get(json_object_get(task, "settings"), "require_approval")))
        g = GATE_APPROVAL;
    json_t *caps = g != GATE_DENIED ? policy_caps(pol, task, app->cfg.default_timeout_ms) : NULL;
    if (caps) {
        json_object_set_new_nocheck(run, "limits", caps);
        *limited = true;
    }
    json_decref(pol);
    return g;
}

/* run_insert; task_current: the stored task already holds the new run's
 * fields (run_start_for_new_task wrote them with the task).  gate: the
 * run's gate (run_gate) when the caller knows it, else NULL.  A run that
 * was handed to a worker before it was stored (start_runs) is stored
 * running: both its events are written, queued then started. */
static int insert_run(struct store_tx *tx, struct app *app, json_t *task, json_t *run,
                      bool task_current, const enum gate *gate)
{
    const char *project = json_string_value(json_object_get(run, "project_id"));
    int rc = store_put(tx, SK_RUN, project, run);
    if (rc)
        return rc;
    /* a run handed to a worker before it was stored was queued all the
     * same: its queued event says so (its started event follows) */
    if ((rc = emit_run_as(tx, app, run, "task_run.queued", "queued")))
        return rc;
    /* a task's retry: said right after the new run's queued event, before
     * a gate or a pause moves it on (it came after them, even after a
     * refusal's terminal event) */
    json_t *retry_of = json_object_get(run, "retry_of");
    if (json_is_string(retry_of) &&
        (rc = events_emit(tx, app->events, project, json_string_value(json_object_get(run, "task_id")),
                          json_string_value(json_object_get(run, "id")), "task_run.retrying",
                          json_pack("{s:O, s:O}", "attempt", json_object_get(run, "attempt"),
                                    "retry_of", retry_of))))
        return rc;
    if (!task_current && (rc = update_task(tx, app, run, true, task)))
        return rc;
    if (run_status_of(run) == RS_RUNNING) {
        if ((rc = emit_run(tx, app, run, "task_run.started")))
            return rc;
        run_notify(tx, app, run);
        return 0;
    }
    /* the project's policy may refuse the run outright, or want approval */
    char *rule = NULL;
    bool limited = false;
    enum gate g = gate ? *gate : run_gate(tx, app, task, run, &rule, &limited);
    if (limited && (rc = store_update(tx, SK_RUN, project, run))) {
        free(rule);
        return rc;
    }
    if (g == GATE_DENIED) {
        struct run_outcome out = {.code = "policy_denied", .message = rule, .no_retry = true};
        rc = run_move(tx, app, run, RS_DENIED, &out);
        free(rule);
        return rc;
    }
    /* approval: the run waits for a human before anything executes */
    if (g == GATE_APPROVAL) {
        json_object_set_new_nocheck(run, "interaction",
                                    json_pack("{s:s, s:s}", "kind", "approval", "prompt",
                                              "approve this run before it executes"));
        return run_move(tx, app, run, RS_INTERACTION_REQUIRED, NULL);
    }
    /* a new run of a paused task waits paused, as one queued again does
     * (run_move); one held for approval stays held, and its approval
     * pauses it */
    if (json_is_true(json_object_get(task, "paused"))) {
        json_object_set_new_nocheck(run, "paused_by_task", json_true());
        return run_move(tx, app, run, RS_PAUSED, NULL);
    }
    run_notify(tx, app, run);
    return 0;
}

/* Adds to run's blocked_by the task's dependencies not completed; true
 * when one of them has failed for good (or is gone). */
static bool block_on_dependencies(struct store_tx *tx, const json_t *task, json_t *run)
{
    json_t *bb = json_object_get(run, "blocked_by");
    bool ended = false;
    size_t k;
    json_t *dep;
    json_array_foreach(json_object_get(task, "dependencies"), k, dep) {
        json_t *dt = store_get(tx, SK_TASK, json_string_value(json_object_get(task, "project_id")),
                               json_string_value(dep));
        const char *st = json_string_value(json_object_get(dt, "status")) ?: "";
        if (!dt || strcmp(st, "completed")) {
            json_array_append(bb, dep);
            int rs = run_status_parse(st);
            ended |= !dt || (rs >= 0 && run_status_terminal((enum run_status)rs));
        }
        json_decref(dt);
    }
    return ended;
}

static char *recheck_blocked(struct store_tx *tx, json_t *run);
static int move(struct store_tx *tx, struct app *app, json_t *run, enum run_status to,
                const struct run_outcome *out);

/* Looks at run's dependencies again (recheck_blocked) and fails it with
 * dependency_failed when one has ended otherwise than completed. */
static int fail_if_dependency_ended(struct store_tx *tx, struct app *app, json_t *run)
{
    char *failed = recheck_blocked(tx, run);
    int rc = 0;
    if (failed) {
        struct run_outcome o = {.code = "dependency_failed", .message = failed, .no_retry = true};
        rc = move(tx, app, run, RS_FAILED, &o);
    }
    free(failed);
    return rc;
}

/* A new run blocked on a dependency that has already failed for good fails
 * at once, as that end would have failed it (it waited queued for ever: the
 * scheduler acts on dependencies as they end). */
static int fail_on_ended_dependency(struct store_tx *tx, struct app *app, json_t *run)
{
    if (run_status_of(run) != RS_QUEUED)
        return 0;   /* held or paused: looked at again as it is queued */
    return fail_if_dependency_ended(tx, app, run);
}

int run_insert(struct store_tx *tx, struct app *app, json_t *task, json_t *run)
{
    /* every run of a task waits for its dependencies: a run made by POST
     * .../runs, a retry or a trigger was runnable past them */
    bool ended = block_on_dependencies(tx, task, run);
    int rc = insert_run(tx, app, task, run, false, NULL);
    if (!rc && ended)
        rc = fail_on_ended_dependency(tx, app, run);
    return rc;
}

void run_unblocked(json_t *run)
{
    int64_t now = now_ms();
    if (!json_array_size(json_object_get(run, "blocked_by")) &&
        json_integer_value(json_object_get(run, "not_before_ms")) < now)
        json_object_set_new_nocheck(run, "not_before_ms", json_integer(now));
}

int run_save(struct store_tx *tx, json_t *run)
{
    set_now(run, "updated_at");
    return store_update(tx, SK_RUN, json_string_value(json_object_get(run, "project_id")), run);
}

static int64_t ts_ms(const json_t *run, const char *field)
{
    int64_t ms = 0;
    const char *s = json_string_value(json_object_get(run, field));
    if (!s || rfc3339_parse(s, &ms))
        return 0;
    return ms;
}

/* Retry delay for the attempt that just failed: fixed, or exponential with
 * full jitter over the upper half (so retries of many runs spread out).
 * The doubling stops at 1 h, or at retry_delay_ms when that is longer (a
 * 2 h base is not cut to 1 h by choosing exponential). */
static int64_t retry_delay(const json_t *run, int64_t attempt)
{
    int64_t base = json_integer_value(json_object_get(run, "retry_delay_ms"));
    const char *mode = json_string_value(json_object_get(run, "retry_backoff"));
    if (base < 0)
        base = 0;
    if (!mode || strcmp(mode, "exponential"))
        return base;
    int64_t cap = base > 3600000 ? base : 3600000;
    int64_t d = base;
    for (int64_t i = 1; i < attempt && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    unsigned char r[4];
    random_bytes(r, sizeof r);
    uint32_t u = (uint32_t)r[0] | (uint32_t)r[1] << 8 | (uint32_t)r[2] << 16 | (uint32_t)r[3] << 24;
    return d / 2 + (int64_t)((double)(d - d / 2) * (u / 4294967296.0));
}

int run_progress_to_task(struct store_tx *tx, struct app *app, const json_t *run)
{
    return update_task(tx, app, run, false, NULL);
}

int run_ask(struct store_tx *tx, struct app *app, json_t *run, const json_t *prompt,
            const json_t *schema)
{
    enum run_status st = run_status_of(run);
    json_t *inter = json_pack("{s:s, s:O, s:O}", "kind", "input", "prompt",
                              prompt ? prompt : json_null(), "schema",
                              schema ? schema : json_null());
    if (st == RS_INTERACTION_REQUIRED) {
        const char *kind = json_string_value(json_object_get(json_object_get(run, "interaction"),
                                                             "kind"));
        if (!kind || strcmp(kind, "input")) {
            json_decref(inter);
            return 0;
        }
        json_t *q = json_object_get(run, "pending_interactions");
        if (!json_is_array(q)) {
            q = json_array();
            json_object_set_new_nocheck(run, "pending_interactions", q);
        }
        json_array_append_new(q, inter);
        return run_save(tx, run);
    }
    if (st != RS_RUNNING) {
        json_decref(inter);
        return 0;
    }
    json_object_set_new_nocheck(run, "interaction", inter);
    int rc = run_move(tx, app, run, RS_INTERACTION_REQUIRED, NULL);
    return rc == -EPERM ? 0 : rc;
}

int run_ask_next(struct store_tx *tx, struct app *app, json_t *run)
{
    json_t *q = json_object_get(run, "pending_interactions");
    if (!json_array_size(q) || run_status_of(run) != RS_RUNNING)
        return 0;
    json_t *next = json_incref(json_array_get(q, 0));
    json_array_remove(q, 0);
    json_object_set_new_nocheck(run, "interaction", next);
    int rc = run_move(tx, app, run, RS_INTERACTION_REQUIRED, NULL);
    return rc == -EPERM ? 0 : rc;
}

static int move(struct store_tx *tx, struct app *app, json_t *run, enum run_status to,
                const struct run_outcome *out)
{
    enum run_status from = run_status_of(run);
    if (!run_can_move(from, to))
        return -EPERM;
    if (from == RS_PAUSED)
        json_object_del(run, "paused_by_task");
    /* the question (or the approval) is answered or gone: a PATCH out of
     * interaction_required used to leave it shown on a running run */
    if (from == RS_INTERACTION_REQUIRED && to != RS_INTERACTION_REQUIRED &&
        json_is_object(json_object_get(run, "interaction")))
        json_object_set_new_nocheck(run, "interaction", json_null());
    /* settings.require_review: a run that would complete waits for review */
    if (to == RS_COMPLETED && from != RS_REVIEW_REQUIRED &&
        json_is_true(json_object_get(run, "require_review")))
        to = RS_REVIEW_REQUIRED;
    char ts[RFC3339_LEN];
    int64_t now = now_ms();
    rfc3339_format(now, ts);

    if (out && (out->code || out->message)) {
        json_t *err = json_pack("{s:s, s:s, s:s}", "type",
                                to == RS_TIMED_OUT ? "timeout" : to == RS_DENIED ? "denied" : "error",
                                "code", out->code ? out->code : "error", "message",
                                out->message ? out->message : (out->code ? out->code : "error"));
        json_object_set_nocheck(run, "error", err);
        json_t *errs = json_object_get(run, "errors");
        if (!json_is_array(errs)) {
            errs = json_array();
            json_object_set_new_nocheck(run, "errors", errs);
        }
        json_array_append_new(errs, err);
    }
    if (out && out->has_exit_code)
        json_object_set_new_nocheck(run, "exit_code", json_integer(out->exit_code));

    /* A failure with retries left is a retry: a new attempt, queued again
     * after the backoff (invariant 4). */
    if ((to == RS_FAILED || to == RS_TIMED_OUT) && !(out && out->no_retry)) {
        /* the run carries its task's retry settings (run_new_doc) */
        int64_t max = json_integer_value(json_object_get(run, "max_retries"));
        int64_t attempt = json_integer_value(json_object_get(run, "attempt"));
        if (attempt <= max) {
            int64_t delay = retry_delay(run, attempt);
            json_object_set_new_nocheck(run, "attempt", json_integer(attempt + 1));
            json_object_set_new_nocheck(run, "status", json_string("queued"));
            json_object_set_new_nocheck(run, "worker_id", json_null());
            json_object_set_new_nocheck(run, "lease_expires_at", json_null());
            json_object_set_new_nocheck(run, "queued_at", json_string(ts));
            json_object_set_new_nocheck(run, "queued_ms", json_integer(now));
            json_object_set_new_nocheck(run, "not_before_ms", json_integer(now + delay));
            /* the question of the attempt that failed is nobody's to answer */
            if (json_is_object(json_object_get(run, "interaction")))
                json_object_set_new_nocheck(run, "interaction", json_null());
            json_object_del(run, "pending_interactions");
            json_object_set_new_nocheck(run, "updated_at", json_string(ts));
            int rc = store_update(tx, SK_RUN, json_string_value(json_object_get(run, "project_id")),
                                  run);
            if (rc)
                return rc;
            json_t *data = json_pack("{s:I, s:I, s:O}", "attempt", (json_int_t)(attempt + 1),
                                     "delay_ms", (json_int_t)delay, "error",
                                     json_object_get(run, "error"));
            rc = events_emit(tx, app->events, json_string_value(json_object_get(run, "project_id")),
                             json_string_value(json_object_get(run, "task_id")),
                             json_string_value(json_object_get(run, "id")), "task_run.retrying",
                             data);
            if (!rc)
                rc = update_task(tx, app, run, false, NULL);
            if (!rc)
                run_notify(tx, app, run);
            return rc;
        }
    }

    json_object_set_new_nocheck(run, "status", json_string(run_status_name(to)));
    json_object_set_new_nocheck(run, "updated_at", json_string(ts));
    if (to == RS_RUNNING && !json_is_string(json_object_get(run, "started_at")))
        json_object_set_new_nocheck(run, "started_at", json_string(ts));   /* invariant 5 */
    if (to == RS_RUNNING && from == RS_QUEUED &&
        json_integer_value(json_object_get(run, "attempt")) > 1) {
        /* A retry starts clean: what the run shows is this attempt's; the
         * earlier attempts' errors stay in "errors". */
        json_object_set_new_nocheck(run, "error", json_null());
        json_object_set_new_nocheck(run, "exit_code", json_null());
        json_object_set_new_nocheck(run, "output", json_null());
        json_object_del(run, "interaction");
        json_object_del(run, "pending_interactions");
    }
    if (to == RS_RUNNING && from == RS_INTERACTION_REQUIRED &&
        json_is_string(json_object_get(run, "lease_expires_at"))) {
        /* a worker cannot heartbeat while its question waits: the answer
         * gives it a whole lease (the old one had run out, and the run
         * ended lease_expired the moment it was answered) */
        char lts[RFC3339_LEN];
        rfc3339_format(now + app->cfg.lease_ms, lts);
        json_object_set_new_nocheck(run, "lease_expires_at", json_string(lts));
    }
    if (from == RS_RUNNING && to != RS_RUNNING && to != RS_INTERACTION_REQUIRED &&
        to != RS_CANCELING) {
        json_object_set_new_nocheck(run, "lease_expires_at", json_null());   /* invariant 3 */
    }
    if (to == RS_QUEUED) {
        json_object_set_new_nocheck(run, "queued_at", json_string(ts));
        json_object_set_new_nocheck(run, "queued_ms", json_integer(now));
        json_object_set_new_nocheck(run, "worker_id", json_null());
        json_object_set_new_nocheck(run, "lease_expires_at", json_null());
    }
    if (run_status_terminal(to)) {
        json_object_set_new_nocheck(run, "completed_at", json_string(ts));
        int64_t start = ts_ms(run, "started_at");
        if (!start)
            start = ts_ms(run, "created_at");
        json_object_set_new_nocheck(run, "duration_ms", json_integer(start ? now - start : 0));
        json_object_set_new_nocheck(run, "lease_expires_at", json_null());
        if (to == RS_COMPLETED)
            json_object_set_new_nocheck(run, "progress", json_real(1));
        /* a question nobody can answer any more is not shown as pending */
        if (json_is_object(json_object_get(run, "interaction")))
            json_object_set_new_nocheck(run, "interaction", json_null());
        json_object_del(run, "pending_interactions");
    }
    int rc = store_update(tx, SK_RUN, json_string_value(json_object_get(run, "project_id")), run);
    if (rc)
        return rc;
    char type[64];
    snprintf(type, sizeof type, "task_run.%s", to == RS_RUNNING ? "started" : run_status_name(to));
    if (to == RS_RUNNING && from != RS_QUEUED)
        snprintf(type, sizeof type, "task_run.resumed");
    /* the task's events first: a run's terminal event is the last event of
     * the run, so a run stream can end on it */
    if ((rc = update_task(tx, app, run, false, NULL)))
        return rc;
    if ((rc = emit_run(tx, app, run, type)))
        return rc;
    run_notify(tx, app, run);
    return 0;
}

/* A run leaving paused for queued may have missed the end of a task it
 * was blocked on (the scheduler acts on the runs that wait queued): the
 * dependencies that completed meanwhile are dropped from blocked_by; one
 * that ended otherwise, or is gone, is named in what it returns (malloc'd;
 * NULL when none). */
static char *recheck_blocked(struct store_tx *tx, json_t *run)
{
    json_t *bb = json_object_get(run, "blocked_by");
    const char *project = json_string_value(json_object_get(run, "project_id"));
    for (size_t i = 0; i < json_array_size(bb);) {
        const char *dep = json_string_value(json_array_get(bb, i));
        json_t *dt = dep ? store_get(tx, SK_TASK, project, dep) : NULL;
        const char *st = json_string_value(json_object_get(dt, "status")) ?: "";
        int rs = run_status_parse(st);
        if (dt && !strcmp(st, "completed")) {
            json_array_remove(bb, i);
        } else if (!dt || (rs >= 0 && run_status_terminal((enum run_status)rs))) {
            char *failed = xasprintf("dependency %s %s%s", dep ? dep : "?",
                                     dt ? "ended " : "was deleted", dt ? st : "");
            json_decref(dt);
            return failed;
        } else {
            i++;
        }
        json_decref(dt);
    }
    return NULL;
}

/* Pausing a task stops the dispatch of its runs: one that becomes queued
 * while its task is paused (a retry, an approval, a lease that expired or
 * was given back) waits paused instead, and the task's resume queues it.
 * A run held paused or for approval is not among those the scheduler
 * unblocks or fails as its dependencies end: it looks at them again as it
 * is queued (an approved run used to wait queued for a dependency that had
 * completed, or failed, while it was held). */
int run_move(struct store_tx *tx, struct app *app, json_t *run, enum run_status to,
             const struct run_outcome *out)
{
    enum run_status from = run_status_of(run);
    if (to == RS_QUEUED && (from == RS_PAUSED || from == RS_INTERACTION_REQUIRED) &&
        json_array_size(json_object_get(run, "blocked_by"))) {
        int rc = fail_if_dependency_ended(tx, app, run);
        if (rc || run_status_of(run) != from)
            return rc;
    }
    int rc = move(tx, app, run, to, out);
    if (rc || run_status_of(run) != RS_QUEUED)
        return rc;
    json_t *task = run_task(tx, run);
    bool paused = json_is_true(json_object_get(task, "paused"));
    json_decref(task);
    if (!paused)
        return 0;
    json_object_set_new_nocheck(run, "paused_by_task", json_true());
    return move(tx, app, run, RS_PAUSED, NULL);
}

int run_approve(struct store_tx *tx, struct app *app, json_t *run, enum run_status to)
{
    json_t *task = run_task(tx, run);
    json_t *pol = task ? policy_get(tx, json_string_value(json_object_get(run, "project_id"))) : NULL;
    char *rule = NULL;
    int rc;
    if (pol && policy_check_run(pol, task, app->cfg.default_timeout_ms, &rule)) {
        struct run_outcome o = {.code = "policy_denied", .message = rule, .no_retry = true};
        rc = run_move(tx, app, run, RS_DENIED, &o);
        goto out;
    }
    json_t *caps = task ? policy_caps(pol, task, app->cfg.default_timeout_ms) : NULL;
    if (caps)
        json_object_set_new_nocheck(run, "limits", caps);
    else if (task)
        json_object_del(run, "limits");
    rc = run_move(tx, app, run, to, NULL);
out:
    free(rule);
    json_decref(pol);
    json_decref(task);
    return rc;
}

int run_append_logs(struct store_tx *tx, struct app *app, json_t *run, json_t *entries)
{
    const char *project = json_string_value(json_object_get(run, "project_id"));
    const char *run_id = json_string_value(json_object_get(run, "id"));
    int64_t iteration = json_integer_value(json_object_get(run, "iterations"));
    char ts[RFC3339_LEN];
    rfc3339_format(now_ms(), ts);
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e) {
        if (!json_object_get(e, "ts"))
            json_object_set_new_nocheck(e, "ts", json_string(ts));
        if (!json_object_get(e, "level"))
            json_object_set_new_nocheck(e, "level", json_string("info"));
        if (!json_object_get(e, "type"))
            json_object_set_new_nocheck(e, "type", json_string("log"));
        if (!json_object_get(e, "iteration"))
            json_object_set_new_nocheck(e, "iteration", json_integer(iteration));
    }
    int rc = store_log_append(tx, project, run_id, entries, NULL);
    if (rc)
        return rc;
    json_array_foreach(entries, i, e) {
        rc = events_emit(tx, app->events, project, json_string_value(json_object_get(run, "task_id")),
                         run_id, "task_run.log", json_deep_copy(e));
        if (rc)
            return rc;
    }
    return 0;
}

json_t *run_note_storage_access(json_t *run, const char *instance_id, const char *scope,
                                const char *access_type, const char *at)
{
    json_t *access = json_object_get(run, "storage_access");
    if (!json_is_array(access)) {
        access = json_array();
        json_object_set_new(run, "storage_access", access);
    }
    json_array_append_new(access, json_pack("{s:s, s:s, s:s, s:s}", "instance_id", instance_id,
                                            "scope", scope, "access_type", access_type, "at", at));
    return access;
}

int run_add_artifact(struct store_tx *tx, struct app *app, json_t *run, const char *name,
                     const char *sha, int64_t size, const char *content_type)
{
    json_t *arts = json_object_get(run, "artifacts");
    if (!json_is_array(arts)) {
        arts = json_array();
        json_object_set_new_nocheck(run, "artifacts", arts);
    }
    /* an artifact keeps its id when its name is given again (the name is
     * its key: the new bytes replace the old); a new name gets an art_ id */
    char id[ID_LEN] = "";
    size_t i;
    json_t *a;
    json_array_foreach(arts, i, a) {
        if (!strcmp(json_string_value(json_object_get(a, "name")) ?: "", name)) {
            const char *old = json_string_value(json_object_get(a, "id"));
            if (old)
                snprintf(id, sizeof id, "%s", old);
            json_array_remove(arts, i);
            break;
        }
    }
    if (!id[0])
        id_new("art", id);
    char *path = xasprintf("runs/%s/%s", json_string_value(json_object_get(run, "id")), name);
    json_t *m = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s}", "id", id, "name", name, "storage_path", path, "size",
                          (json_int_t)size, "sha256", sha, "content_type", content_type);
    free(path);
    json_array_append(arts, m);
    int rc = run_save(tx, run);
    if (!rc)
        rc = events_emit(tx, app->events, json_string_value(json_object_get(run, "project_id")),
                         json_string_value(json_object_get(run, "task_id")),
                         json_string_value(json_object_get(run, "id")), "task_run.artifact",
                         json_incref(m));
    json_decref(m);
    return rc;
}

const char *run_guess_content_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {{".txt", "text/plain"},       {".log", "text/plain"},
                 {".json", "application/json"}, {".csv", "text/csv"},
                 {".html", "text/html"},        {".png", "image/png"},
                 {".jpg", "image/jpeg"},        {".jpeg", "image/jpeg"},
                 {".gif", "image/gif"},         {".svg", "image/svg+xml"},
                 {".pdf", "application/pdf"},   {".zip", "application/zip"},
                 {".gz", "application/gzip"},   {".md", "text/markdown"}};
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < ARRAY_LEN(types); i++)
        if (!strcasecmp(dot, types[i].ext))
            return types[i].type;
    return "application/octet-stream";
}

/* Creates the runs a task starts with: one, or one per assigned agent. */
/* run_start_for_task; put_task: the task is new and not stored yet: it is
 * stored here with its first run's fields already set, which spares
 * writing its row twice.  claim (with put_task): offered the first run
 * when nothing holds it back (not paused, not blocked, no refusal or
 * approval); when claim takes it, the run and the task are written once,
 * already running, instead of queued and then moved. */
static int start_runs(struct store_tx *tx, struct app *app, json_t *task, const json_t *input,
                      json_t **first_run, bool put_task, run_claim_fn claim)
{
    json_t *agents = json_object_get(task, "assigned_agents");
    size_t n = json_array_size(agents);
    for (size_t i = 0; i < (n ? n : 1); i++) {
        const char *agent = n ? json_string_value(json_array_get(agents, i))
                              : json_string_value(json_object_get(task, "assigned_agent_id"));
        json_t *run = run_new_doc(task, input, agent);
        /* dependencies not yet completed block the run */
        bool dep_ended = block_on_dependencies(tx, task, run);
        json_t *bb = json_object_get(run, "blocked_by");
        bool current = put_task && i == 0;
        int rc = 0;
        enum gate gate = GATE_OPEN;
        if (current) {
            char *rule = NULL;
            bool limited;   /* in run before it is stored */
            gate = run_gate(tx, app, task, run, &rule, &limited);
            free(rule);   /* insert_run finds it again for a refusal */
            if (claim && gate == GATE_OPEN && !json_is_true(json_object_get(task, "paused")) &&
                !json_array_size(bb) && claim(tx, app, run)) {
                /* what run_move to running sets (invariant 5) */
                char ts[RFC3339_LEN];
                rfc3339_format(now_ms(), ts);
                json_object_set_new_nocheck(run, "status", json_string(run_status_name(RS_RUNNING)));
                json_object_set_new_nocheck(run, "started_at", json_string(ts));
                json_object_set_new_nocheck(run, "updated_at", json_string(ts));
            }
            json_t *fields = new_run_fields(task, run);
            json_object_update(task, fields);
            json_decref(fields);
            rc = store_put(tx, SK_TASK, json_string_value(json_object_get(task, "project_id")),
                           task);
        }
        if (!rc)
            rc = insert_run(tx, app, task, run, current, current && gate != GATE_DENIED ? &gate : NULL);
        if (!rc && dep_ended)
            rc = fail_on_ended_dependency(tx, app, run);
        if (rc) {
            json_decref(run);
            return rc;
        }
        if (first_run && !*first_run)
            *first_run = json_incref(run);
        json_decref(run);
    }
    return 0;
}

int run_start_for_task(struct store_tx *tx, struct app *app, json_t *task, const json_t *input,
                       json_t **first_run)
{
    return start_runs(tx, app, task, input, first_run, false, NULL);
}

int run_start_for_new_task(struct store_tx *tx, struct app *app, json_t *task,
                           json_t **first_run, run_claim_fn claim)
{
    return start_runs(tx, app, task, NULL, first_run, true, claim);
}

json_t *run_public(const json_t *run)
{
    static const char *const internal[] = {"has_code", "max_retries", "queued_ms", "not_before_ms",
                                           "retry_delay_ms", "retry_backoff", "require_review",
                                           "deadline_ms", "max_concurrency", "executor",
                                           "latest_checkpoint", "has_output_schema",
                                           "paused_by_task", "last_heartbeat_ms"};
    bool drop_blocked = !json_array_size(json_object_get(run, "blocked_by")) &&
                        strcmp(json_string_value(json_object_get(run, "status")) ?: "", "queued");
    /* a new object sharing the values (in the document's order), not a
     * deep copy: callers only add or remove top-level fields */
    json_t *r = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)run, k, v) {
        bool skip = drop_blocked && !strcmp(k, "blocked_by");
        for (size_t i = 0; !skip && i < ARRAY_LEN(internal); i++)
            skip = !strcmp(k, internal[i]);
        if (!skip)
            json_object_set_nocheck(r, k, v);
    }
    /* the queue of questions is shown while the run lives, empty when no
     * second question came before the first was answered (it was absent) */
    /* every run shows the storage instances it touched, [] when none (a run
     * of code had them, a worker's run had the field only once it reported
     * one) */
    if (!json_object_get(r, "storage_access"))
        json_object_set_new_nocheck(r, "storage_access", json_array());
    /* what a request left on the run is null until then, never absent, so
     * every state of a run has the same fields */
    static const char *const set_later[] = {"retry_of", "cancel_message", "interaction",
                                            "interaction_response", "review"};
    for (size_t i = 0; i < ARRAY_LEN(set_later); i++)
        if (!json_object_get(r, set_later[i]))
            json_object_set_new_nocheck(r, set_later[i], json_null());
    int st = run_status_parse(json_string_value(json_object_get(run, "status")));
    if (st >= 0 && !run_status_terminal((enum run_status)st) &&
        !json_object_get(r, "pending_interactions"))
        json_object_set_new_nocheck(r, "pending_interactions", json_array());
    return r;
}
