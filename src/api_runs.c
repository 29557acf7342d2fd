/*
 * api_runs — runs of a task: list, create, get (with include), PATCH (a
 * worker's report), logs, session logs, output, cancel, interaction, review,
 * checkpoints, heartbeat, connection tokens; and the project-wide views.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "auth.h"
#include "events.h"
#include "jdump.h"
#include "jsonschema.h"
#include "runner.h"
#include "run.h"
#include "sched.h"
#include "tokens.h"
#include "util.h"

/* Loads the run named by the route (and checks it belongs to the task in
 * the path, when there is one).  NULL after answering 404. */
static json_t *load_run(struct req *r, struct store_tx *tx)
{
    const char *project = http_param(r, "project_id");
    const char *task = http_param(r, "task_id");
    const char *id = http_param(r, "id");
    if (!id)
        id = http_param(r, "run_id");
    json_t *run = store_get(tx, SK_RUN, project, id);
    if (!run || (task && strcmp(task, json_string_value(json_object_get(run, "task_id")) ?: ""))) {
        json_decref(run);
        http_not_found(r, "run", id);
        return NULL;
    }
    return run;
}

struct runop {
    struct req *r;
    json_t *body;
    json_t *result;
    int status;
    int (*fn)(struct runop *op, struct store_tx *tx, json_t *run);
    void *ctx;       /* what fn hands back beside a result */
};

/* Re-runnable (store_write_retry): the outputs (result, status, an error
 * answer) are reset on entry. */
static int runop_fn(struct store_tx *tx, void *arg)
{
    struct runop *op = arg;
    json_decref(op->result);
    op->result = NULL;
    op->status = 200;
    free(op->r->resp);
    op->r->resp = NULL;
    json_t *run = load_run(op->r, tx);
    if (!run)
        return -ENOENT;
    int rc = op->fn(op, tx, run);
    if (!rc && !op->result)
        op->result = json_incref(run);
    json_decref(run);
    return rc;
}

/* Runs op->fn on the run in a write transaction and answers with the
 * result (the run by default). */
static void run_write(struct req *r, int (*fn)(struct runop *, struct store_tx *, json_t *),
                      bool needs_body)
{
    struct runop op = {r, NULL, NULL, 200, fn, NULL};
    if (needs_body && !(op.body = http_body_object(r)))
        return;
    /* PostgreSQL: a run's change that loses a deadlock with another node's
     * (a task's action locks the task before its runs) is run again */
    int rc = store_write_retry(r->app->store, runop_fn, &op);
    if (rc == -EAGAIN) {
        free(r->resp);   /* decided on a transaction that was rolled back */
        r->resp = NULL;
    }
    if (rc) {
        if (rc == -EPERM && !r->resp)
            http_error(r, 409, "invalid_transition", "status",
                       "the run cannot make this change in its current state");
        api_store_error(r, rc, "run");
        json_decref(op.result);
        return;
    }
    json_t *out = json_object_get(op.result, "task_id") && json_object_get(op.result, "attempt")
                      ? run_public(op.result)
                      : json_incref(op.result);
    json_decref(op.result);
    http_json(r, op.status, out);
}

static int runread_fn(struct store_tx *tx, void *arg)
{
    struct runop *op = arg;
    json_t *run = load_run(op->r, tx);
    if (!run)
        return -ENOENT;
    int rc = op->fn(op, tx, run);
    json_decref(run);
    return rc;
}

static void run_read(struct req *r, int (*fn)(struct runop *, struct store_tx *, json_t *))
{
    struct runop op = {r, NULL, NULL, 200, fn, NULL};
    int rc = store_read(r->app->store, runread_fn, &op);
    if (rc) {
        api_store_error(r, rc, "run");
        json_decref(op.result);
        return;
    }
    if (op.result)
        http_json(r, op.status, op.result);
}

/* ---- list, create, get ---- */

static const char *const run_statuses[] = {"queued", "running", "paused", "interaction_required",
                                           "review_required", "completed", "failed", "timed_out",
                                           "denied", "canceling", "canceled", NULL};

struct list_arg {
    const char *project;
    struct store_query q;
    json_t *out;
    int64_t total;
    const char *task_id;   /* the route's task: it must exist (404 otherwise) */
    const char *after;     /* ?starting_after */
    bool more;
};

static int runs_list_fn(struct store_tx *tx, void *arg)
{
    struct list_arg *a = arg;
    if (a->task_id) {
        json_t *task = store_get(tx, SK_TASK, a->project, a->task_id);
        json_decref(task);
        if (!task)
            return -ENOENT;
    }
    return api_list_page(tx, SK_RUN, a->project, &a->q, a->after, &a->out, &a->total, &a->more);
}

static void runs_list(struct req *r, const char *project, const char *task_id)
{
    int64_t limit, offset;
    const char *after;
    if (!http_paging(r, &limit, &offset) || !api_list_cursor(r, &after) || !api_project(r, project))
        return;
    struct store_filter f[4];
    size_t nf = 0;
    if (task_id)
        f[nf++] = (struct store_filter){"task_id", task_id};
    const char *st = http_query(r, "status");
    if (st) {
        if (run_status_parse(st) < 0) {
            http_error(r, 400, "invalid_enum", "status", "unknown run status %s", st);
            return;
        }
        f[nf++] = (struct store_filter){"status", st};
    }
    const char *tid = http_query(r, "task_id");
    if (tid && !task_id)
        f[nf++] = (struct store_filter){"task_id", tid};
    const char *did = http_query(r, "definition_id");
    if (did)
        f[nf++] = (struct store_filter){"definition_id", did};
    struct list_arg a = {project, {f, nf, limit, offset, false, NULL}, NULL, 0, task_id, after, false};
    int rc = store_read(r->app->store, runs_list_fn, &a);
    if (rc == -ENOENT) {
        http_not_found(r, "task", task_id);
        return;
    }
    if (rc == -ESRCH) {
        api_cursor_unknown(r, "run", after);
        return;
    }
    if (rc) {
        api_store_error(r, rc, "run");
        return;
    }
    json_t *data = json_array();
    size_t i;
    json_t *run;
    json_array_foreach(a.out, i, run) json_array_append_new(data, run_public(run));
    json_decref(a.out);
    http_json(r, 200, json_pack("{s:o, s:b, s:I}", "data", data, "has_more", a.more, "total",
                                (json_int_t)a.total));
}

void api_runs_list(struct req *r)
{
    runs_list(r, http_param(r, "project_id"), http_param(r, "task_id"));
}

void api_runs_project_list(struct req *r)
{
    runs_list(r, http_param(r, "project_id"), NULL);
}

struct create_arg {
    struct req *r;
    json_t *input;
    json_t *run;
};

static int create_fn(struct store_tx *tx, void *arg)
{
    struct create_arg *a = arg;
    const char *project = http_param(a->r, "project_id"), *task_id = http_param(a->r, "task_id");
    json_t *task = store_get(tx, SK_TASK, project, task_id);
    if (!task) {
        http_not_found(a->r, "task", task_id);
        return -ENOENT;
    }
    if (!api_run_input_fits(a->r, tx, task, a->input)) {
        json_decref(task);
        return -EINVAL;
    }
    json_t *run = run_new_doc(task, a->input, json_string_value(json_object_get(task, "assigned_agent_id")));
    int rc = run_insert(tx, a->r->app, task, run);   /* paused when the task is */
    json_decref(task);
    if (rc) {
        json_decref(run);
        return rc;
    }
    a->run = run;
    return 0;
}

void api_runs_create(struct req *r)
{
    json_t *body = http_body_object(r);
    json_t *input = NULL;
    if (!body || !api_no_id(r, body, RUN_ID_WHY) ||
        !api_known_fields(r, body, (const char *const[]){"input", NULL}, "") ||
        !api_obj(r, body, "input", "input", &input))
        return;
    struct create_arg a = {r, input, NULL};
    int rc = store_write(r->app->store, create_fn, &a);
    if (rc) {
        api_store_error(r, rc, "run");
        return;
    }
    http_json(r, 201, run_public(a.run));
    json_decref(a.run);
}

static int get_fn(struct runop *op, struct store_tx *tx, json_t *run)
{
    struct req *r = op->r;
    json_t *out = run_public(run);
    const char *inc = http_query(r, "include");
    bool want_input = false;
    if (inc) {
        char *list = xstrdup(inc), *save = NULL;
        for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            if (!strcmp(tok, "input")) {
                want_input = true;
            } else if (!strcmp(tok, "storage")) {
                json_object_set_new_nocheck(out, "storage_access",
                                            json_object_get(run, "storage_access") ? json_incref(json_object_get(run, "storage_access"))
                                                                                   : json_array());
            } else if (!strcmp(tok, "logs")) {
                json_t *logs = NULL;
                int rc = store_log_read(tx, json_string_value(json_object_get(run, "project_id")),
                                        json_string_value(json_object_get(run, "id")), 0, 10000,
                                        &logs);
                if (rc) {   /* a read error is an error, never an empty log */
                    json_decref(logs);
                    free(list);
                    json_decref(out);
                    return rc;
                }
                json_object_set_new_nocheck(out, "logs", logs ? logs : json_array());
            } else if (!strcmp(tok, "checkpoints")) {
                struct store_filter f = {"run_id", json_string_value(json_object_get(run, "id"))};
                struct store_query q = {&f, 1, 0, 0, true, NULL};
                json_t *cps = NULL;
                int rc = store_list(tx, SK_CHECKPOINT,
                                    json_string_value(json_object_get(run, "project_id")), &q, &cps,
                                    NULL);
                if (rc) {
                    json_decref(cps);
                    free(list);
                    json_decref(out);
                    return rc;
                }
                json_object_set_new_nocheck(out, "checkpoints", cps ? cps : json_array());
            } else {
                http_error(r, 400, "invalid_parameter", "include",
                           "include takes input, storage, logs, checkpoints; not %s", tok);
                free(list);
                json_decref(out);
                return -EINVAL;
            }
        }
        free(list);
    }
    if (!want_input)
        json_object_del(out, "input");
    op->result = out;
    return 0;
}

void api_runs_get(struct req *r)
{
    run_read(r, get_fn);
}

void api_runs_get_by_id(struct req *r)
{
    run_read(r, get_fn);
}

/* ---- PATCH: a worker's or agent's report ---- */

static const char *const patch_fields[] = {"status", "branch", "stage", "output", "state",
                                           "error_message", "exit_code", "progress", "error_code",
                                           "attempt", NULL};

static int validate_output(struct req *r, struct store_tx *tx, json_t *run, json_t *output)
{
    char *path = NULL, *msg = NULL;
    int rc = run_check_output(tx, run, output, &path, &msg);
    if (rc)
        http_error(r, 400, "output_invalid", path ? path : "output",
                   "output does not match the task's output_schema at %s: %s",
                   path ? path : "$", msg ? msg : "invalid");
    free(path);
    free(msg);
    return rc;
}

static int set_output_event(struct req *r, struct store_tx *tx, json_t *run, json_t *output)
{
    json_object_set_nocheck(run, "output", output);
    return events_emit(tx, r->app->events, json_string_value(json_object_get(run, "project_id")),
                       json_string_value(json_object_get(run, "task_id")),
                       json_string_value(json_object_get(run, "id")), "task_run.output",
                       json_pack("{s:O}", "output", output));
}

/* Whether a queued run may be started by a request (a PATCH to running,
 * a set_output that completes it): not while it waits for dependencies,
 * which only the scheduler releases (409 dependencies_pending). */
static bool start_allowed(struct req *r, const json_t *run, const char *param)
{
    json_t *bb = json_object_get(run, "blocked_by");
    if (!json_array_size(bb))
        return true;
    http_error(r, 409, "dependencies_pending", param,
               "the run waits for %zu dependenc%s (blocked_by, first %s) and cannot start before "
               "they complete", json_array_size(bb), json_array_size(bb) == 1 ? "y" : "ies",
               json_string_value(json_array_get(bb, 0)) ?: "?");
    return false;
}

/* A report's progress: absent, null, or a number from 0 to 1; false after
 * answering 400. */
static bool progress_ok(struct req *r, const json_t *progress)
{
    if (!progress || json_is_null(progress) ||
        (json_is_number(progress) && json_number_value(progress) >= 0 &&
         json_number_value(progress) <= 1))
        return true;
    http_error(r, 400, json_is_number(progress) ? "out_of_range" : "invalid_type", "progress",
               "progress must be a number from 0 to 1");
    return false;
}

/* Fencing: a report that names an attempt names the run's current one;
 * false after answering 409 stale_attempt. */
static bool attempt_ok(struct req *r, const json_t *run, json_int_t attempt)
{
    json_int_t now = json_integer_value(json_object_get(run, "attempt"));
    if (!attempt || attempt == now)
        return true;
    http_error(r, 409, "stale_attempt", "attempt", "attempt %lld is not the run's current attempt %lld",
               (long long)attempt, (long long)now);
    return false;
}

static int patch_fn(struct runop *op, struct store_tx *tx, json_t *run)
{
    struct req *r = op->r;
    json_t *b = op->body;
    const char *status = NULL, *branch = NULL, *stage = NULL, *emsg = NULL, *ecode = NULL;
    json_int_t exit_code = 0, attempt = 0;
    json_t *progress = json_object_get(b, "progress");
    if (!api_known_fields(r, b, patch_fields, "") ||
        !api_enum(r, b, "status", "status", run_statuses, &status) ||
        !api_str(r, b, "branch", "branch", 256, &branch) ||
        !api_str(r, b, "stage", "stage", 256, &stage) ||
        !api_str(r, b, "error_message", "error_message", 4096, &emsg) ||
        !api_str(r, b, "error_code", "error_code", 64, &ecode) ||
        !api_int(r, b, "exit_code", "exit_code", -1000, 1000, &exit_code) ||
        !api_int(r, b, "attempt", "attempt", 1, 1000000, &attempt))
        return -EINVAL;
    if (!progress_ok(r, progress))
        return -EINVAL;
    if (!attempt_ok(r, run, attempt))
        return -EPERM;
    enum run_status from = run_status_of(run);
    if (run_status_terminal(from)) {
        http_error(r, 409, "run_finished", "status", "the run is %s and cannot change",
                   run_status_name(from));
        return -EPERM;
    }
    /* A worker (no task:write) reports the work it does: it moves a run from
     * queued to running, or ends a running one.  The gates a person holds
     * (approval and input in interaction_required, review_required, a
     * pause) and the code quernd runs itself are task:write's: through this
     * PATCH a worker key used to approve, review and resume runs whose own
     * routes refused it. */
    if (status && !auth_has_scope(r, SCOPE_TASK_WRITE)) {
        if (from != RS_QUEUED && from != RS_RUNNING) {
            http_error(r, 403, "insufficient_scope", "status",
                       "moving a run out of %s needs the task:write scope", run_status_name(from));
            return -EPERM;
        }
        if (runner_code_live(run)) {
            http_error(r, 403, "insufficient_scope", "status",
                       "quernd runs this run's code itself; changing its status needs task:write");
            return -EPERM;
        }
    }
    int rc;
    json_t *output = json_object_get(b, "output");
    if (output && !json_is_null(output)) {
        if ((rc = validate_output(r, tx, run, output)) || (rc = set_output_event(r, tx, run, output)))
            return rc;
    } else if (status && !strcmp(status, "completed") &&
               (rc = validate_output(r, tx, run, json_object_get(run, "output")))) {
        /* a run completes with an output its schema takes, as code's does
         * (the run stays as it is: the worker can still set one, or fail it) */
        return rc;
    }
    if (branch)
        json_object_set_new_nocheck(run, "branch", json_string(branch));
    if (stage)
        json_object_set_new_nocheck(run, "stage", json_string(stage));
    if (json_object_get(b, "state"))
        json_object_set_nocheck(run, "state", json_object_get(b, "state"));
    if (progress && json_is_number(progress)) {
        json_object_set_new_nocheck(run, "progress", json_real(json_number_value(progress)));
        if ((rc = events_emit(tx, r->app->events, json_string_value(json_object_get(run, "project_id")),
                              json_string_value(json_object_get(run, "task_id")),
                              json_string_value(json_object_get(run, "id")), "task_run.progress",
                              json_pack("{s:O}", "progress", progress))) ||
            (!status && (rc = run_progress_to_task(tx, r->app, run))))
            return rc;
    }
    if (json_object_get(b, "exit_code") && !status)
        json_object_set_new_nocheck(run, "exit_code", json_integer(exit_code));
    if (status) {
        enum run_status to = (enum run_status)run_status_parse(status);
        if (to == RS_RUNNING && from != RS_QUEUED && from != RS_PAUSED &&
            from != RS_INTERACTION_REQUIRED) {
            http_error(r, 409, "invalid_transition", "status",
                       "a run becomes running only from queued (it is %s)", run_status_name(from));
            return -EPERM;
        }
        if (to == from) {
            http_error(r, 409, "invalid_transition", "status", "the run is already %s",
                       run_status_name(from));
            return -EPERM;
        }
        /* quernd starts the code of a code run itself; a PATCH to running
         * made the caller its worker instead: the code never ran and the
         * run failed lease_expired once the lease ran out */
        if (to == RS_RUNNING && runner_code_live(run)) {
            /* its code waits for the answer to its own question: running
             * made the caller its worker, the lease ran out under the live
             * code and the next attempt failed beside it (sandbox_error) */
            http_error(r, 409, "code_running", "status",
                       "quernd runs this run's code, which waits for the answer to its "
                       "question: answer it with POST .../interaction");
            return -EPERM;
        }
        if (to == RS_RUNNING && json_is_true(json_object_get(run, "has_code")) &&
            !json_is_string(json_object_get(run, "worker_id"))) {
            http_error(r, 409, "code_started_by_quernd", "status",
                       "quernd starts this run's code itself: it cannot be PATCHed to running "
                       "from %s%s", run_status_name(from),
                       from == RS_QUEUED   ? " (it starts when it can)"
                       : from == RS_PAUSED ? " (resume its task, or PATCH it to queued)"
                                           : " (approve it: POST .../interaction, or PATCH it "
                                             "to queued)");
            return -EPERM;
        }
        if (!run_can_move(from, to)) {
            http_error(r, 409, "invalid_transition", "status", "a run cannot go from %s to %s",
                       run_status_name(from), run_status_name(to));
            return -EPERM;
        }
        /* code waiting on its own question reads the answer from stdin: a
         * PATCH to running dropped the question, and the code waited for
         * an answer nobody could give any more (POST .../interaction was
         * 409) until its timeout */
        if (to == RS_RUNNING && from == RS_INTERACTION_REQUIRED && runner_code_live(run)) {
            http_error(r, 409, "code_running", "status",
                       "the run's code waits for the answer to its question: answer it with "
                       "POST .../interaction (or cancel the run, or end it)");
            return -EPERM;
        }
        /* live code is not suspended by a status: queued started a second
         * box beside it, paused lost its end (the run stayed paused),
         * review_required let its end pass the review; interaction_required
         * showed a question nobody had asked (the code asks its own, on
         * fd 3) while the code ran on */
        if ((to == RS_QUEUED || to == RS_PAUSED || to == RS_REVIEW_REQUIRED ||
             to == RS_INTERACTION_REQUIRED) &&
            runner_code_live(run)) {
            http_error(r, 409, "code_running", "status",
                       "quernd runs this run's code: it cannot become %s while the code lives "
                       "(cancel the run, or end it)", run_status_name(to));
            return -EPERM;
        }
        struct run_outcome out = {0};
        out.code = ecode ? ecode : (emsg && (to == RS_FAILED || to == RS_TIMED_OUT) ? "error" : NULL);
        out.message = emsg;
        /* ended from outside while its code lives, the run has ended: a
         * failure with retries left queued the next attempt while this one's
         * code ran on (its lines landed in the new attempt, which then failed
         * sandbox_error: the box still held the run) */
        out.no_retry = runner_code_live(run);
        if (json_object_get(b, "exit_code") && !json_is_null(json_object_get(b, "exit_code"))) {
            out.has_exit_code = true;
            out.exit_code = (int)exit_code;
            if (!out.code && to == RS_FAILED)
                out.code = "exit_code";
        }
        if (to == RS_RUNNING && from == RS_QUEUED && !start_allowed(r, run, "status"))
            return -EPERM;
        /* a start by PATCH takes a concurrency slot as a lease does (a run
         * answering its own question already holds one) */
        if (to == RS_RUNNING && !run_holds_slot(run) && (rc = run_conc_full(tx, run))) {
            if (rc < 0)
                return rc;
            /* the key as run.c makes it: "key:K", "definition:D" or "task:T" */
            const char *key = json_string_value(json_object_get(run, "concurrency_key")) ?: "";
            const char *colon = strchr(key, ':');
            char what[32] = "concurrency_key";
            if (colon && strncmp(key, "key:", 4))
                snprintf(what, sizeof what, "%.*s", (int)(colon - key), key);
            http_error(r, 409, "concurrency_limit", "status",
                       "max_concurrency %lld of %s %s is reached: the run stays %s",
                       (long long)json_integer_value(json_object_get(run, "max_concurrency")),
                       what, colon ? colon + 1 : key, run_status_name(from));
            return -EPERM;
        }
        if (to == RS_RUNNING && r->key_id[0])
            json_object_set_new_nocheck(run, "worker_id", json_string(r->key_id));
        /* a run started (or resumed) by PATCH is leased as a lease's run is:
         * if its worker dies, the lease runs out and the run is tried again
         * (it stayed running for good); code quernd runs has no lease */
        if (to == RS_RUNNING && !runner_code_live(run)) {
            char lts[RFC3339_LEN];
            rfc3339_format(now_ms() + r->app->cfg.lease_ms, lts);
            json_object_set_new_nocheck(run, "lease_expires_at", json_string(lts));
        }
        /* a start (or requeue) out of an approval hold is an approval: the
         * policy of now applies as it does to POST .../interaction */
        const char *kind =
            json_string_value(json_object_get(json_object_get(run, "interaction"), "kind"));
        if (from == RS_INTERACTION_REQUIRED && (to == RS_QUEUED || to == RS_RUNNING) && kind &&
            !strcmp(kind, "approval"))
            return run_approve(tx, r->app, run, to);
        return run_move(tx, r->app, run, to, &out);
    }
    return run_save(tx, run);
}

void api_runs_patch(struct req *r)
{
    run_write(r, patch_fn, true);
}

/* ---- logs ---- */

static const char *const log_fields[] = {"type", "message", "data", "error", "level", "ts", NULL};
static const char *const levels[] = {"debug", "info", "warn", "warning", "error", NULL};

json_t *api_log_entry_clean(const json_t *e, char *why, size_t whylen)
{
    if (!json_is_object(e)) {
        snprintf(why, whylen, "must be an object");
        return NULL;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)e, k, v) {
        bool known = false;
        for (const char *const *f = log_fields; *f && !known; f++)
            known = !strcmp(*f, k);
        if (!known) {
            snprintf(why, whylen, "has an unknown field %.64s", k);
            return NULL;
        }
    }
    json_t *type = json_object_get(e, "type"), *msg = json_object_get(e, "message");
    json_t *level = json_object_get(e, "level");
    if (type && !json_is_null(type) && (!json_is_string(type) || json_string_length(type) > 64)) {
        snprintf(why, whylen, "type must be a string of at most 64 characters");
        return NULL;
    }
    if (msg && !json_is_null(msg) && (!json_is_string(msg) || json_string_length(msg) > (1 << 20))) {
        snprintf(why, whylen, "message must be a string of at most 1048576 characters");
        return NULL;
    }
    bool level_ok = !level || json_is_null(level);
    for (const char *const *l = levels; !level_ok && *l && json_is_string(level); l++)
        level_ok = !strcmp(*l, json_string_value(level));
    if (!level_ok) {
        snprintf(why, whylen, "level must be one of: debug, info, warn, warning, error");
        return NULL;
    }
    json_t *c = json_object();
    json_object_set_new_nocheck(c, "type", json_string(json_is_string(type) ? json_string_value(type)
                                                                           : "log"));
    json_object_set_new_nocheck(c, "level", json_string(json_is_string(level)
                                                            ? json_string_value(level)
                                                            : "info"));
    json_object_set_nocheck(c, "message", json_is_string(msg) ? msg : json_null());
    json_object_set_nocheck(c, "data", json_object_get(e, "data") ?: json_null());
    json_object_set_nocheck(c, "error", json_object_get(e, "error") ?: json_null());
    return c;
}

/* A run that has ended takes no more logs, checkpoints or artifacts: its
 * terminal event stays its last, on which its stream ends (they were
 * stored, and their events came after it).  True after answering 409. */
static bool refuse_finished(struct req *r, const json_t *run)
{
    enum run_status st = run_status_of(run);
    if (!run_status_terminal(st))
        return false;
    http_error(r, 409, "run_finished", NULL, "the run is %s and takes nothing more",
               run_status_name(st));
    return true;
}

static int append_fn(struct runop *op, struct store_tx *tx, json_t *run)
{
    struct req *r = op->r;
    json_t *entries = NULL;
    if (!api_known_fields(r, op->body, (const char *const[]){"entries", NULL}, "") ||
        !api_arr(r, op->body, "entries", "entries", 10000, &entries))
        return -EINVAL;
    if (!entries) {
        http_error(r, 400, "missing_field", "entries", "entries is required");
        return -EINVAL;
    }
    if (refuse_finished(r, run))
        return -EPERM;
    json_t *clean = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e) {
        char p[64];
        snprintf(p, sizeof p, "entries[%zu]", i);
        if (!json_is_object(e)) {
            http_error(r, 400, "invalid_type", p, "%s must be an object", p);
            json_decref(clean);
            return -EINVAL;
        }
        char pf[80];
        snprintf(pf, sizeof pf, "%s.", p);
        const char *type = NULL, *msg = NULL, *level = NULL;
        char pt[96], pm[96], pl[96];
        snprintf(pt, sizeof pt, "%stype", pf);
        snprintf(pm, sizeof pm, "%smessage", pf);
        snprintf(pl, sizeof pl, "%slevel", pf);
        if (!api_known_fields(r, e, log_fields, pf) || !api_str(r, e, "type", pt, 64, &type) ||
            !api_str(r, e, "message", pm, 1 << 20, &msg) ||
            !api_enum(r, e, "level", pl, levels, &level)) {
            json_decref(clean);
            return -EINVAL;
        }
        json_t *c = json_object();
        json_object_set_new_nocheck(c, "type", json_string(type ? type : "log"));
        json_object_set_new_nocheck(c, "level", json_string(level ? level : "info"));
        json_object_set_new_nocheck(c, "message", msg ? json_string(msg) : json_null());
        json_object_set_nocheck(c, "data", json_object_get(e, "data") ?: json_null());
        json_object_set_nocheck(c, "error", json_object_get(e, "error") ?: json_null());
        json_array_append_new(clean, c);
    }
    int rc = run_append_logs(tx, r->app, run, clean);
    if (!rc)
        op->result = json_pack("{s:I}", "appended", (json_int_t)json_array_size(clean));
    json_decref(clean);
    return rc;
}

void api_runs_append_log(struct req *r)
{
    run_write(r, append_fn, true);
}

/* Appends a JSON text as one JSONL line, with U+0085, U+2028 and U+2029
 * written as \u escapes: the same JSON value, but a reader that splits on
 * Unicode line boundaries (Python's str.splitlines) no longer cuts an entry
 * in two.  Those characters only occur inside strings, where the escape is
 * valid. */
static void put_jsonl_line(struct buf *b, const char *s)
{
    const char *run = s;
    for (const char *p = s; *p; p++) {
        const char *esc = NULL;
        size_t n = 0;
        if ((unsigned char)p[0] == 0xC2 && (unsigned char)p[1] == 0x85) {
            esc = "\\u0085";
            n = 2;
        } else if ((unsigned char)p[0] == 0xE2 && (unsigned char)p[1] == 0x80 &&
                   ((unsigned char)p[2] == 0xA8 || (unsigned char)p[2] == 0xA9)) {
            esc = (unsigned char)p[2] == 0xA8 ? "\\u2028" : "\\u2029";
            n = 3;
        }
        if (!esc)
            continue;
        buf_append(b, run, (size_t)(p - run));
        buf_puts(b, esc);
        p += n - 1;
        run = p + 1;
    }
    buf_puts(b, run);
    buf_puts(b, "\n");
}

/* GET .../logs streams the log a page at a time: built whole, a run's
 * log (up to max_output_bytes, 1 GiB) took several times its size in
 * quernd's memory for each reader. */
#define LOG_PAGE 2000

struct logstream {
    struct app *app;
    char *project, *run_id;
    int64_t after;   /* the last seq sent */
    bool done;       /* the last page has been read */
    struct buf out;  /* rendered, not yet sent from off on */
    size_t off;
};

static int logs_page_fn(struct store_tx *tx, void *arg)
{
    struct logstream *ls = arg;
    json_t *logs = NULL;
    int rc = store_log_read(tx, ls->project, ls->run_id, ls->after, LOG_PAGE, &logs);
    if (rc)
        return rc;
    size_t i;
    json_t *e;
    json_array_foreach(logs, i, e) {
        json_t *it = json_object_get(e, "iteration");
        json_t *line = json_pack("{s:O, s:O, s:O, s:O, s:O, s:O, s:O, s:o}", "ts",
                                 json_object_get(e, "ts") ?: json_null(), "seq",
                                 json_object_get(e, "seq") ?: json_null(), "type",
                                 json_object_get(e, "type") ?: json_null(), "level",
                                 json_object_get(e, "level") ?: json_null(), "message",
                                 json_object_get(e, "message") ?: json_null(), "data",
                                 json_object_get(e, "data") ?: json_null(), "error",
                                 json_object_get(e, "error") ?: json_null(), "iteration",
                                 it ? json_incref(it) : json_integer(0));
        char *text = jdump(line, NULL);
        if (text)
            put_jsonl_line(&ls->out, text);
        free(text);
        json_decref(line);
        ls->after = json_integer_value(json_object_get(e, "seq"));
    }
    ls->done = json_array_size(logs) < LOG_PAGE;
    json_decref(logs);
    return 0;
}

static ssize_t logs_read(void *ctx, char *dst, size_t max)
{
    struct logstream *ls = ctx;
    while (ls->off == ls->out.len) {
        if (ls->done)
            return -1;
        ls->out.len = ls->off = 0;
        /* a failure mid-stream can only end it: the status is sent */
        if (store_read(ls->app->store, logs_page_fn, ls))
            return -1;
    }
    size_t n = ls->out.len - ls->off < max ? ls->out.len - ls->off : max;
    memcpy(dst, ls->out.data + ls->off, n);
    ls->off += n;
    return (ssize_t)n;
}

static void logs_free(void *ctx)
{
    struct logstream *ls = ctx;
    free(ls->project);
    free(ls->run_id);
    buf_release(&ls->out);
    free(ls);
}

static const struct http_stream_ops logs_ops = {logs_read, logs_free};

static int logs_fn(struct runop *op, struct store_tx *tx, json_t *run)
{
    (void)tx;
    struct logstream *ls = xcalloc(1, sizeof *ls);
    ls->app = op->r->app;
    ls->project = xstrdup(json_string_value(json_object_get(run, "project_id")));
    ls->run_id = xstrdup(json_string_value(json_object_get(run, "id")));
    buf_init(&ls->out);
    op->ctx = ls;
    return 0;
}

void api_runs_logs(struct req *r)
{
    struct runop op = {r, NULL, NULL, 200, logs_fn, NULL};
    int rc = store_read(r->app->store, runread_fn, &op);
    if (rc) {
        if (op.ctx)
            logs_free(op.ctx);
        api_store_error(r, rc, "run");
        return;
    }
    struct http_stream_handle *h = http_stream(r, "application/jsonl", &logs_ops, op.ctx);
    http_stream_handle_put(h);
}

static size_t split_csv(char *s, const char **out, size_t max)
{
    size_t n = 0;
    char *save = NULL;
    for (char *t = strtok_r(s, ",", &save); t && n < max; t = strtok_r(NULL, ",", &save))
        if (*t)
            out[n++] = t;
    return n;
}

static int session_fn(struct runop *op, struct store_tx *tx, json_t *run)
{
    struct req *r = op->r;
    struct store_event_query q = {0};
    q.project_id = json_string_value(json_object_get(run, "project_id"));
    q.run_id = json_string_value(json_object_get(run, "id"));
    const char *after = http_query(r, "after");
    if (after && *after) {
        int64_t ms;
        /* an event id with its evt_ prefix: a bare number was read as a
         * sequence number, so a Unix time matched nothing, silently */
        if (!rfc3339_parse(after, &ms)) {
            q.after_ms = ms;
        } else if (strncmp(after, "evt_", 4) || (q.after_id = events_parse_id(after)) < 0) {
            http_error(r, 400, "invalid_parameter", "after",
                       "after must be an RFC 3339 timestamp (2026-01-02T03:04:05Z) or an event "
                       "id (evt_0000000000000042); a bare number is neither");
            return -EINVAL;
        }
    }
    const char *lim = http_query(r, "limit"), *off = http_query(r, "offset");
    q.limit = 1000;
    if (lim && (parse_i64(lim, &q.limit) || q.limit < 1 || q.limit > 10000)) {
        http_error(r, 400, "invalid_parameter", "limit", "limit must be an integer from 1 to 10000");
        return -EINVAL;
    }
    if (off && (parse_i64(off, &q.offset) || q.offset < 0)) {
        http_error(r, 400, "invalid_parameter", "offset", "offset must be a non-negative integer");
        return -EINVAL;
    }
    const char *types[50], *excl[50];
    char *t1 = xstrdup(http_query(r, "event_types") ?: "");
    char *t2 = xstrdup(http_query(r, "exclude_types") ?: "");
    q.types = types;
    q.ntypes = split_csv(t1, types, 50);
    q.exclude = excl;
    q.nexclude = split_csv(t2, excl, 50);
    /* an unknown type is refused (as every other enum filter is), not
     * matched against nothing */
    for (int k = 0; k < 2; k++) {
        const char **v = k ? excl : types;
        size_t nv = k ? q.nexclude : q.ntypes;
        for (size_t i = 0; i < nv; i++) {
            if (events_type_known(v[i]))
                continue;
            http_error(r, 400, "invalid_enum", k ? "exclude_types" : "event_types",
                       "unknown event type \"%.64s\"", v[i]);
            free(t1);
            free(t2);
            return -EINVAL;
        }
    }
    json_t *evs = NULL;
    int64_t total = 0, filtered = 0;
    int rc = store_event_list(tx, &q, &evs, &total, &filtered);
    free(t1);
    free(t2);
    if (rc)
        return rc;
    size_t i;
    json_t *e;
    json_array_foreach(evs, i, e) {
        char eid[32];
        events_format_id(json_integer_value(json_object_get(e, "seq")), eid);
        json_object_set_new_nocheck(e, "id", json_string(eid));
        json_object_del(e, "created_ms");
        json_object_del(e, "seq");
    }
    char n[32];
    snprintf(n, sizeof n, "%lld", (long long)total);
    http_add_header(r, "X-Total-Count", n);
    snprintf(n, sizeof n, "%lld", (long long)filtered);
    http_add_header(r, "X-Filtered-Count", n);
    http_add_header(r, "X-Has-More",
                    q.offset + (int64_t)json_array_size(evs) < filtered ? "true" : "false");
    op->result = evs;
    return 0;
}

void api_runs_session_logs(struct req *r)
{
    run_read(r, session_fn);
}

/* ---- output, cancel, interaction, review ---- */

static int set_output_fn(struct runop *op, struct store_tx *tx, json_t *run)
{
    struct req *r = op->r;
    if (!api_known_fields(r, op->body, (const char *const[]){"output", NULL}, ""))
        return -EINVAL;
    json_t *output = json_object_get(op->body, "output");
    if (!output) {
        http_error(r, 400, "missing_field", "output", "output is required");
        return -EINVAL;
    }
    enum run_status st = run_status_of(run);
    if (run_status_terminal(st)) {
        http_error(r, 409, "run_finished", NULL, "the run is %s; its output is final",
                   run_status_name(st));
        return -EPERM;
    }
    /* the output of code quernd runs comes from the code; a worker key
     * completed such a run here, its code still running, as PATCH refuses */
    if (runner_code_live(run) && !auth_has_scope(r, SCOPE_TASK_WRITE)) {
        http_error(r, 403, "insufficient_scope", "output",
                   "quernd runs this run's code itself; setting its output needs task:write");
        return -EPERM;
    }
    json_t *task = run_task(tx, run);
    bool has_schema = json_is_object(json_object_get(task, "output_schema"));
    json_decref(task);
    /* completing a queued run starts it: not past its dependencies */
    if (has_schema && st == RS_QUEUED && !start_allowed(r, run, "output"))
        return -EPERM;
    int rc = validate_output(r, tx, run, output);
    if (rc || (rc = set_output_event(r, tx, run, output)))
        return rc;
    if (has_schema && (st == RS_RUNNING || st == RS_QUEUED))
        return run_move(tx, r->app, run, st == RS_QUEUED ? RS_RUNNING : RS_COMPLETED, NULL) ?:
               (st == RS_QUEUED ? run_move(tx, r->app, run, RS_COMPLETED, NULL) : 0);
    return run_save(tx, run);
}

void api_runs_set_output(struct req *r)
{
    run_write(r, set_output_fn, true);
}

static int cancel_fn(struct runop *op, struct store_tx *tx, json_t *run)
{
    struct req *r = op->r;
    const char *msg = NULL;
    if (!api_str(r, op->body, "message", "message", 4096, &msg))
        return -EINVAL;
    enum run_status st = run_status_of(run);
    if (run_status_terminal(st) || st == RS_CANCELING) {
        http_error(r, 409, "invalid_transition", NULL, "the run is %s and cannot be canceled",
                   run_status_name(st));
        return -EPERM;
    }
    if (msg)
        json_object_set_new_nocheck(run, "cancel_message", json_string(msg));
    bool live = runner_code_live(run);
    struct run_outcome out = {.code = "canceled", .message = msg ? msg : "canceled by request",
                              .no_retry = true};
    return run_move(tx, r->app, run, live ? RS_CANCELING : RS_CANCELED, &out);
}

void api_runs_cancel(struct req *r)
{
    run_write(r, cancel_fn, true);
}

struct deliver {
    struct app *app;
    char run_id[ID_LEN];
    char *line;
};

static void deliver_line(void *arg, bool committed)
{
    struct deliver *d = arg;
    if (committed)
        runner_send(d->app->runner, d->run_id, d->line);
    free(d->line);
    free(d);
}

static int interaction_fn(struct runop *op, struct store_tx *tx, json_t *run)
{
    struct req *r = op->r;
    if (!api_known_fields(r, op->body, (const char *const[]){"response", NULL}, ""))
        return -EINVAL;
    json_t *resp = json_object_get(op->body, "response");
    if (!resp || json_is_null(resp)) {   /* null answered the question with nothing */
        http_error(r, 400, "missing_field", "response", "response is required (not null)");
        return -EINVAL;
    }
    if (run_status_of(run) != RS_INTERACTION_REQUIRED) {
        http_error(r, 409, "no_interaction", NULL, "the run is %s, not waiting for an interaction",
                   run_status_name(run_status_of(run)));
        return -EPERM;
    }
    json_t *inter = json_object_get(run, "interaction");
    const char *k = json_string_value(json_object_get(inter, "kind"));
    bool approval = k && !strcmp(k, "approval");
    json_t *schema = json_object_get(inter, "schema");
    if (!approval && json_is_object(schema)) {
        /* the question's schema, when the code gave a usable one (keywords
         * outside the subset are ignored there, as they were before create
         * refused them) */
        char *bad_schema = NULL, *path = NULL, *msg = NULL;
        int usable = jsonschema_check(schema, &bad_schema);
        int bad = (usable == 0 || usable == -ENOTSUP) &&
                  jsonschema_validate(schema, resp, &path, &msg);
        if (bad)
            http_error(r, 400, "invalid_response", "response",
                       "the response does not match the input request's schema at %s: %s",
                       path ? path : "$", msg ? msg : "invalid");
        free(bad_schema);
        free(path);
        free(msg);
        if (bad)
            return -EINVAL;
    }
    json_object_set_nocheck(run, "interaction_response", resp);
    json_object_set_new_nocheck(run, "interaction", json_null());   /* frees inter and k */
    if (approval) {
        json_t *ap = json_object_get(resp, "approved");
        if (!json_is_boolean(ap)) {
            http_error(r, 400, "invalid_type", "response.approved",
                       "response.approved must be true or false");
            return -EINVAL;
        }
        if (json_is_true(ap))
            return run_approve(tx, r->app, run, RS_QUEUED);
        struct run_outcome out = {.code = "approval_denied", .message = "the run was not approved",
                                  .no_retry = true};
        return run_move(tx, r->app, run, RS_DENIED, &out);
    }
    /* an external worker's or code's question: back to running; live code
     * gets the answer on stdin once the change is committed */
    const char *ex = json_string_value(json_object_get(run, "executor"));
    if (ex && !strcmp(ex, "local")) {
        json_t *line = json_pack("{s:s, s:O}", "type", "interaction_response", "response", resp);
        struct deliver *d = xcalloc(1, sizeof *d);
        d->app = r->app;
        snprintf(d->run_id, sizeof d->run_id, "%s", json_string_value(json_object_get(run, "id")));
        d->line = jdump(line, NULL);
        json_decref(line);
        store_tx_on_commit(tx, deliver_line, d);
    }
    int rc = run_move(tx, r->app, run, RS_RUNNING, NULL);
    return rc ? rc : run_ask_next(tx, r->app, run);
}

void api_runs_interaction(struct req *r)
{
    run_write(r, interaction_fn, true);
}

static int review_fn(struct runop *op, struct store_tx *tx, json_t *run)
{
    struct req *r = op->r;
    const char *decision = NULL, *comment = NULL;
    if (!api_known_fields(r, op->body, (const char *const[]){"decision", "comment", NULL}, "") ||
        !api_enum(r, op->body, "decision", "decision",
                  (const char *const[]){"approve", "reject", NULL}, &decision) ||
        !api_str(r, op->body, "comment", "comment", 4096, &comment))
        return -EINVAL;
    if (!decision) {
        http_error(r, 400, "missing_field", "decision", "decision is required (approve or reject)");
        return -EINVAL;
    }
    if (run_status_of(run) != RS_REVIEW_REQUIRED) {
        http_error(r, 409, "no_review", NULL, "the run is %s, not waiting for a review",
                   run_status_name(run_status_of(run)));
        return -EPERM;
    }
    json_object_set_new_nocheck(run, "review", json_pack("{s:s, s:o}", "decision", decision, "comment",
                                                         comment ? json_string(comment) : json_null()));
    if (!strcmp(decision, "approve"))
        return run_move(tx, r->app, run, RS_COMPLETED, NULL);
    struct run_outcome out = {.code = "review_rejected",
                              .message = comment ? comment : "the review rejected the run",
                              .no_retry = true};
    return run_move(tx, r->app, run, RS_FAILED, &out);
}

void api_runs_review(struct req *r)
{
    run_write(r, review_fn, true);
}

/* ---- checkpoints, heartbeat ---- */

static int checkpoint_add_fn(struct runop *op, struct store_tx *tx, json_t *run)
{
    struct req *r = op->r;
    if (!api_known_fields(r, op->body, (const char *const[]){"data", NULL}, ""))
        return -EINVAL;
    json_t *data = json_object_get(op->body, "data");
    if (!data) {
        http_error(r, 400, "missing_field", "data", "data is required");
        return -EINVAL;
    }
    if (refuse_finished(r, run))
        return -EPERM;
    char id[ID_LEN], ts[RFC3339_LEN];
    id_new("chk", id);
    rfc3339_format(now_ms(), ts);
    json_t *cp = json_pack("{s:s, s:O, s:O, s:O, s:O, s:s}", "id", id, "run_id",
                           json_object_get(run, "id"), "task_id", json_object_get(run, "task_id"),
                           "attempt", json_object_get(run, "attempt"), "data", data, "created_at", ts);
    const char *project = json_string_value(json_object_get(run, "project_id"));
    int rc = store_put(tx, SK_CHECKPOINT, project, cp);
    if (!rc) {
        json_object_set_new_nocheck(run, "checkpoints_count",
                                    json_integer(json_integer_value(json_object_get(run, "checkpoints_count")) + 1));
        json_object_set_nocheck(run, "latest_checkpoint", data);
        rc = run_save(tx, run);
    }
    if (!rc)
        rc = events_emit(tx, r->app->events, project, json_string_value(json_object_get(run, "task_id")),
                         json_string_value(json_object_get(run, "id")), "task_run.checkpoint",
                         json_pack("{s:s}", "checkpoint_id", id));
    if (!rc)
        op->result = json_incref(cp);
    json_decref(cp);
    return rc;
}

void api_runs_checkpoint_add(struct req *r)
{
    run_write(r, checkpoint_add_fn, true);
}

static int checkpoint_list_fn(struct runop *op, struct store_tx *tx, json_t *run)
{
    int64_t limit, offset;
    (void)http_paging(op->r, &limit, &offset);   /* checked before (api_runs_checkpoint_list) */
    /* a list as every list is (API.md): newest first, a page, the total */
    struct store_filter f = {"run_id", json_string_value(json_object_get(run, "id"))};
    struct store_query q = {&f, 1, limit, offset, false, NULL};
    json_t *cps = NULL;
    int64_t total = 0;
    int rc = store_list(tx, SK_CHECKPOINT, json_string_value(json_object_get(run, "project_id")),
                        &q, &cps, &total);
    if (rc)
        return rc;
    op->result = json_pack("{s:o, s:b, s:I}", "data", cps, "has_more",
                           offset + (int64_t)json_array_size(cps) < total, "total",
                           (json_int_t)total);
    return 0;
}

void api_runs_checkpoint_list(struct req *r)
{
    int64_t limit, offset;
    if (http_paging(r, &limit, &offset))
        run_read(r, checkpoint_list_fn);
}

static int heartbeat_fn(struct runop *op, struct store_tx *tx, json_t *run)
{
    struct req *r = op->r;
    json_t *progress = json_object_get(op->body, "progress");
    json_int_t attempt = 0;
    const char *worker = NULL;
    if (!api_known_fields(r, op->body, (const char *const[]){"progress", "attempt", "worker_id", NULL},
                          "") ||
        !api_int(r, op->body, "attempt", "attempt", 1, 1000000, &attempt) ||
        !api_str(r, op->body, "worker_id", "worker_id", 256, &worker))
        return -EINVAL;
    /* fencing, as a report's: a worker whose lease ran out and was given to
     * another (a new attempt) must not extend the new holder's lease */
    if (!attempt_ok(r, run, attempt))
        return -EPERM;
    const char *holder = json_string_value(json_object_get(run, "worker_id"));
    if (worker && holder && strcmp(worker, holder)) {
        http_error(r, 409, "lease_not_held", "worker_id",
                   "the run's lease is held by another worker");
        return -EPERM;
    }
    if (!progress_ok(r, progress))
        return -EINVAL;
    if (run_status_of(run) != RS_RUNNING) {
        http_error(r, 409, "not_running", NULL, "the run is %s; only a running run has a lease",
                   run_status_name(run_status_of(run)));
        return -EPERM;
    }
    if (json_is_string(json_object_get(run, "lease_expires_at"))) {
        char ts[RFC3339_LEN];
        rfc3339_format(now_ms() + r->app->cfg.lease_ms, ts);
        json_object_set_new_nocheck(run, "lease_expires_at", json_string(ts));
    }
    json_object_set_new_nocheck(run, "last_heartbeat_ms", json_integer(now_ms()));
    int rc = 0;
    if (progress && json_is_number(progress)) {
        json_object_set_new_nocheck(run, "progress", json_real(json_number_value(progress)));
        rc = events_emit(tx, r->app->events, json_string_value(json_object_get(run, "project_id")),
                         json_string_value(json_object_get(run, "task_id")),
                         json_string_value(json_object_get(run, "id")), "task_run.progress",
                         json_pack("{s:O}", "progress", progress));
    }
    if (!rc)
        rc = run_save(tx, run);
    if (!rc && progress && json_is_number(progress))
        rc = run_progress_to_task(tx, r->app, run);
    if (!rc)
        run_notify(tx, r->app, run);
    return rc;
}

void api_runs_heartbeat(struct req *r)
{
    run_write(r, heartbeat_fn, true);
}

/* ---- connection token ---- */

static int token_fn(struct runop *op, struct store_tx *tx, json_t *run)
{
    (void)tx;
    int64_t exp = 0;
    char *tok = tokens_connection(op->r->app, json_string_value(json_object_get(run, "project_id")),
                                  json_string_value(json_object_get(run, "task_id")),
                                  json_string_value(json_object_get(run, "id")),
                                  op->r->key_project ? op->r->key_project : AUTH_ROOT_PROJECT,
                                  op->r->key_id, auth_has_scope(op->r, SCOPE_TASK_WRITE), 86400,
                                  &exp);
    char ts[RFC3339_LEN];
    rfc3339_format(exp, ts);
    op->result = json_pack("{s:s, s:s}", "token", tok, "expires_at", ts);
    free(tok);
    return 0;
}

void api_runs_connection_token(struct req *r);
void api_runs_connection_token(struct req *r)
{
    run_read(r, token_fn);
}

/* ---- project-wide logs grouped by iteration ---- */

#define GROUPED_MAX 100000   /* entries: the first ones, then X-Truncated */

static int grouped_fn(struct runop *op, struct store_tx *tx, json_t *run)
{
    /* one JSON document: bounded (a 1 GiB log took GBs); the whole log is
     * GET .../logs, streamed */
    json_t *logs = NULL;
    int rc = store_log_read(tx, json_string_value(json_object_get(run, "project_id")),
                            json_string_value(json_object_get(run, "id")), 0, GROUPED_MAX + 1, &logs);
    if (rc)
        return rc;
    bool cut = json_array_size(logs) > GROUPED_MAX;
    if (cut) {
        json_array_remove(logs, GROUPED_MAX);
        http_add_header(op->r, "X-Truncated", "true");
    }
    json_t *groups = json_array();
    json_t *cur = NULL;
    int64_t cur_it = -1;
    int64_t pass = 1;   /* a retry's iterations start at 1 again: a new pass */
    size_t i;
    json_t *e;
    json_array_foreach(logs, i, e) {
        int64_t it = json_integer_value(json_object_get(e, "iteration"));
        if (!cur || it != cur_it) {
            /* "RUN:ITER" repeated for each attempt's groups: ids must be unique */
            if (cur && it < cur_it)
                pass++;
            char gid[128];
            const char *rid = json_string_value(json_object_get(run, "id"));
            if (pass == 1)
                snprintf(gid, sizeof gid, "%s:%lld", rid, (long long)it);
            else
                snprintf(gid, sizeof gid, "%s:%lld:%lld", rid, (long long)it, (long long)pass);
            cur = json_pack("{s:s, s:O, s:O, s:I, s:[]}", "id", gid, "created_at",
                            json_object_get(e, "ts"), "execution_name",
                            json_object_get(run, "execution_name"), "iteration", (json_int_t)it,
                            "items");
            json_array_append_new(groups, cur);
            cur_it = it;
        }
        json_array_append(json_object_get(cur, "items"), e);
    }
    json_decref(logs);
    /* a list like the others when asked for a page (api_logs_grouped has
     * checked limit and offset); without one, every group */
    int64_t total = (int64_t)json_array_size(groups), limit = total, offset = 0;
    if (http_query(op->r, "limit") || http_query(op->r, "offset"))
        http_paging(op->r, &limit, &offset);
    json_t *page = json_array();
    for (int64_t g = offset; g < total && g - offset < limit; g++)
        json_array_append(page, json_array_get(groups, (size_t)g));
    bool more = offset + (int64_t)json_array_size(page) < total;
    json_decref(groups);
    op->result = json_pack("{s:o, s:b, s:I}", "data", page, "has_more", more, "total",
                           (json_int_t)total);
    return 0;
}

void api_logs_grouped(struct req *r)
{
    const char *run_id = http_query(r, "task");
    if (!run_id || !*run_id) {   /* ?task= was 404 "run  not found" */
        http_error(r, 400, "missing_parameter", "task", "task (a run id) is required");
        return;
    }
    /* limit and offset were not read at all: limit=-1 answered every group */
    int64_t limit, offset;
    if ((http_query(r, "limit") || http_query(r, "offset")) && !http_paging(r, &limit, &offset))
        return;
    /* load_run reads the id from the route; give it the query's */
    if (r->nparams < HTTP_MAX_PARAMS) {
        r->pnames[r->nparams] = "run_id";
        r->pvals[r->nparams] = xstrdup(run_id);
        r->nparams++;
    }
    run_read(r, grouped_fn);
}

/* ---- JSON-RPC commands to the running code ---- */

static json_t *rpc_error(json_t *id, int code, const char *msg)
{
    return json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id ? id : json_null(),
                     "error", "code", code, "message", msg);
}

static int command_fn(struct runop *op, struct store_tx *tx, json_t *run)
{
    struct req *r = op->r;
    json_t *b = op->body;
    const char *ver = NULL, *method = NULL;
    json_t *params = NULL, *id = json_object_get(b, "id");
    if (!api_known_fields(r, b, (const char *const[]){"jsonrpc", "method", "params", "id", NULL}, "") ||
        !api_str(r, b, "jsonrpc", "jsonrpc", 8, &ver) ||
        !api_enum(r, b, "method", "method",
                  (const char *const[]){"user_message", "cancel", "close", NULL}, &method))
        return -EINVAL;
    if (!ver || strcmp(ver, "2.0") || !method) {
        http_error(r, 400, "invalid_command", !method ? "method" : "jsonrpc",
                   "a command is JSON-RPC 2.0: {jsonrpc: \"2.0\", method, params, id}");
        return -EINVAL;
    }
    params = json_object_get(b, "params");
    if (json_is_null(params))
        params = NULL;
    /* JSON-RPC 2.0: params is structured, an id a string, a number or null
     * (a boolean, an object or an array was echoed back as the id) */
    if (params && !json_is_object(params) && !json_is_array(params)) {
        http_error(r, 400, "invalid_type", "params",
                   "params must be an object or an array (JSON-RPC 2.0)");
        return -EINVAL;
    }
    if (id && !json_is_null(id) && !json_is_string(id) && !json_is_number(id)) {
        http_error(r, 400, "invalid_type", "id",
                   "id must be a string, a number or null (JSON-RPC 2.0)");
        return -EINVAL;
    }
    const char *rid = json_string_value(json_object_get(run, "id"));
    int rc;
    if (!strcmp(method, "user_message")) {
        json_t *line = json_pack("{s:s, s:o}", "type", "user_message", "params",
                                 params ? json_incref(params) : json_object());
        char *s = jdump(line, NULL);
        json_decref(line);
        rc = runner_send(r->app->runner, rid, s);
        free(s);
    } else if (!strcmp(method, "close")) {
        rc = runner_close_stdin(r->app->runner, rid);
    } else if (!runner_code_live(run)) {
        rc = -ENOENT;
    } else {
        /* as POST .../cancel: canceling now, canceled once the code stopped
         * (the move's commit sends SIGTERM, then SIGKILL after the grace);
         * params.message is kept on the run as that route's message is */
        const char *msg = NULL;
        if (json_is_object(params) &&
            !api_str(r, params, "message", "params.message", 4096, &msg))
            return -EINVAL;
        if (msg)
            json_object_set_new_nocheck(run, "cancel_message", json_string(msg));
        struct run_outcome out = {.code = "canceled", .message = msg ? msg : "canceled by command",
                                  .no_retry = true};
        if ((rc = run_move(tx, r->app, run, RS_CANCELING, &out)))
            return rc;
    }
    if (rc == -ENOENT) {
        http_error(r, 400, "no_active_sandbox", NULL,
                   "the run has no live sandbox on this node (it is %s)",
                   run_status_name(run_status_of(run)));
        return -EINVAL;
    }
    if (rc) {
        op->status = 502;
        op->result = rpc_error(id, -32000, "the runner did not accept the command");
        return 0;
    }
    op->result = json_pack("{s:s, s:O, s:{s:b}}", "jsonrpc", "2.0", "id", id ? id : json_null(),
                           "result", "delivered", 1);
    return 0;
}

void api_runs_command(struct req *r)
{
    struct runop op = {r, NULL, NULL, 200, command_fn, NULL};
    if (!(op.body = http_body_object(r)))
        return;
    /* cancel changes the run; the others only reach its sandbox */
    const char *m = json_string_value(json_object_get(op.body, "method"));
    int rc = m && !strcmp(m, "cancel") ? store_write(r->app->store, runop_fn, &op)
                                       : store_read(r->app->store, runread_fn, &op);
    if (rc) {
        api_store_error(r, rc, "run");
        json_decref(op.result);
        return;
    }
    http_json(r, op.status, op.result);
}
