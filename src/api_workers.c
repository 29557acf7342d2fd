/*
 * api_workers — external workers: the lease long-poll and batched reports.
 *
 * Lease protocol (invariants, see also run.h):
 *  1. A run is leased only from queued, in one write that sets status
 *     running, worker_id and lease_expires_at (run_move + fields).
 *  2. A lease is only handed to a long-poll whose client is still there:
 *     we peek the socket before leasing, and if the response then fails to
 *     reach the client the runs go straight back to queued (same attempt);
 *     not when quernd's stop ended the request (it may have reached it).
 *  3. A lease not extended by a heartbeat before lease_expires_at ends the
 *     attempt (sched.c: a retry while retries remain, else lease_expired).
 *  4. A report names the attempt; any other attempt is refused (fencing).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "run.h"
#include "runner.h"
#include "sched.h"
#include "util.h"

#define MAX_LEASE 1000

struct lease {
    struct req *r;
    struct sched_filter f;
    const char *runtimes[32];
    const char *defs[64];
    const char *worker_id;
    int max;
    int64_t deadline;
    struct sched_waiter *waiter;
    json_t *leased;   /* the runs handed out, for undo */
    json_t *handed;   /* runs leased to it by a create's transaction (hand-off) */
    bool minimal;     /* Prefer: return=minimal: runs as lease_view */
};

struct lease_tx {
    struct lease *l;
    char **ids;
    int n;
    json_t *runs;
    char **busy;      /* ids another node is changing right now */
    int nbusy;
};

/* The fields a lease sets on a run it takes, before it moves to running
 * (shared by the lease long-poll and the hand-off at creation). */
static void lease_fields(const struct lease *l, json_t *run, const char *ts)
{
    json_object_set_new_nocheck(run, "worker_id", l->worker_id ? json_string(l->worker_id) : json_null());
    if (l->f.agent_id && !json_is_string(json_object_get(run, "agent_id")))
        json_object_set_new_nocheck(run, "agent_id", json_string(l->f.agent_id));
    json_object_set_new_nocheck(run, "lease_expires_at", json_string(ts));
}

/* A leased run as the worker gets it: the whole public run, or with
 * `Prefer: return=minimal` only what working on it takes (docs/API.md). */
static json_t *lease_view(const struct lease *l, const json_t *run)
{
    /* "a retry starts with the latest" checkpoint: code gets it as
     * QUERN_CHECKPOINT; a worker gets it here, as "checkpoint" (null when
     * the attempt starts afresh) -- a retry is a new run, whose own
     * checkpoints list is empty */
    json_t *cp = json_object_get(run, "latest_checkpoint");
    json_t *v;
    if (!l->minimal) {
        v = run_public(run);
    } else {
        static const char *const keep[] = {"id", "task_id", "project_id", "attempt", "status",
                                           "input", "definition_id", "agent_id", "worker_id",
                                           "lease_expires_at"};
        v = json_object();
        for (size_t i = 0; i < ARRAY_LEN(keep); i++)
            json_object_set_nocheck(v, keep[i], json_object_get(run, keep[i]) ?: json_null());
    }
    json_object_set_nocheck(v, "checkpoint", cp ? cp : json_null());
    return v;
}

/* Invariant 1: leases a queued run to l's worker (status running, its
 * worker and agent, lease_expires_at = ts), in tx. */
static int lease_run(struct store_tx *tx, struct app *app, const struct lease *l, json_t *run,
                     const char *ts)
{
    lease_fields(l, run, ts);
    return run_move(tx, app, run, RS_RUNNING, NULL);
}

static int lease_fn(struct store_tx *tx, void *arg)
{
    struct lease_tx *a = arg;
    struct app *app = a->l->r->app;
    /* re-runnable (store_write_retry): outputs start empty */
    json_array_clear(a->runs);
    a->nbusy = 0;
    char ts[RFC3339_LEN];
    rfc3339_format(now_ms() + app->cfg.lease_ms, ts);
    for (int i = 0; i < a->n; i++) {
        /* the row stays locked until commit: one lease per attempt, even
         * with several nodes; a row another node holds is skipped */
        json_t *run = NULL;
        if (store_try_get(tx, SK_RUN, a->l->f.project_id, a->ids[i], &run) == -EAGAIN)
            a->busy[a->nbusy++] = a->ids[i];
        if (!run)
            continue;
        int full = run_status_of(run) == RS_QUEUED ? run_conc_full(tx, run) : 0;
        if (full < 0) {
            json_decref(run);
            return full;
        }
        if (run_status_of(run) != RS_QUEUED) {
            run_notify(tx, app, run);   /* our ready set was behind: catch up */
        } else if (full) {
            a->busy[a->nbusy++] = a->ids[i];   /* another node filled its key */
        } else {
            int rc = lease_run(tx, app, a->l, run, ts);
            if (rc) {
                json_decref(run);
                return rc;
            }
            json_array_append_new(a->runs, lease_view(a->l, run));
        }
        json_decref(run);
    }
    return 0;
}

struct unlease_tx {
    const char *project;
    json_t *runs;
    struct app *app;
    const struct store_idem_claim *idem;   /* the lease's Idempotency-Key, or NULL */
};

/* The client went away before the response reached it: undo (invariant 2).
 * The answer recorded for its Idempotency-Key goes too: replayed to the
 * worker's retry, it handed out runs given back here, which another worker
 * could lease again, same attempt (both did the work, both reports were
 * taken); the retry now leases as a new request. */
static int unlease_fn(struct store_tx *tx, void *arg)
{
    struct unlease_tx *a = arg;
    size_t i;
    json_t *r;
    if (a->idem) {
        int rc = store_idem_del(tx, a->idem->scope, a->idem->key);
        if (rc)
            return rc;
    }
    json_array_foreach(a->runs, i, r) {
        json_t *run = store_get(tx, SK_RUN, a->project, json_string_value(json_object_get(r, "id")));
        if (run && run_status_of(run) == RS_RUNNING &&
            json_equal(json_object_get(run, "attempt"), json_object_get(r, "attempt"))) {
            json_object_set_new_nocheck(run, "started_at", json_null());
            run_move(tx, a->app, run, RS_QUEUED, NULL);
        }
        json_decref(run);
    }
    return 0;
}

static void lease_gone(struct req *r, bool delivered)
{
    struct lease *l = r->wait;
    if (!l)
        return;
    if (l->waiter)
        sched_unwait(r->app->sched, l->waiter);
    /* Not when quernd's stop ended the request: the worker may well hold
     * the answer (its end is only seen later), and the same attempt leased
     * again after the restart ran twice, both reports taken.  A lease that
     * did not reach its worker expires instead, as a new attempt. */
    if (!delivered && !r->ended_by_stop && json_array_size(l->leased)) {
        struct unlease_tx u = {l->f.project_id, l->leased, r->app,
                               r->idem_claim.key ? &r->idem_claim : NULL};
        store_write(r->app->store, unlease_fn, &u);
    }
    json_decref(l->leased);
    json_decref(l->handed);
    free(l);
    r->wait = NULL;
}

static void lease_wake(void *ctx)
{
    struct lease *l = ctx;
    l->waiter = NULL;
    http_resume(l->r);
}

static bool lease_client_gone(void *ctx)
{
    struct lease *l = ctx;
    return http_client_gone(l->r);
}

static void lease_try(struct req *r)
{
    struct lease *l = r->wait;
    json_t *runs = json_array();
    if (l->handed) {
        /* a create leased a run to this long-poll in its own transaction */
        json_decref(runs);
        runs = l->handed;
        l->handed = NULL;
    } else if (!http_client_gone(r)) {
        char *ids[MAX_LEASE];
        int n = sched_take(r->app->sched, &l->f, ids, l->max);
        if (n > 0) {
            char *busy[MAX_LEASE];
            struct lease_tx a = {l, ids, n, runs, busy, 0};
            int rc = store_write_retry(r->app->store, lease_fn, &a);
            if (rc) {
                sched_give_back(r->app->sched, ids, n);
                json_array_clear(runs);
            } else if (a.nbusy) {
                sched_give_back_later(r->app->sched, busy, a.nbusy, 250);
            }
            for (int i = 0; i < n; i++)
                free(ids[i]);
        }
        if (!json_array_size(runs) && mono_ms() < l->deadline && !r->app->draining) {
            json_decref(runs);
            http_suspend(r, lease_try);
            l->waiter = sched_wait_lease(r->app->sched, l->f.project_id, &l->f, l->deadline,
                                         lease_wake, lease_client_gone, l);
            /* a run may have arrived between take and wait: look again */
            struct sched_waiter *w = l->waiter;
            if (w && sched_has_fit(r->app->sched, &l->f) &&
                sched_unwait(r->app->sched, w)) {
                l->waiter = NULL;
                http_resume(r);
            }
            return;
        }
    }
    l->leased = json_incref(runs);
    http_json(r, 200, json_pack("{s:o}", "data", runs));
}

/* ---- hand-off: a new run leased to a waiting long-poll at its creation ---- */

struct handoff {
    struct lease *l;
    json_t *run;   /* the run, once claimed (stored running by the caller) */
    bool idem;     /* the long-poll's Idempotency-Key is stored pending with it */
};

static void handoff_done(void *arg, bool committed)
{
    struct handoff *h = arg;
    if (committed && h->run) {
        h->l->handed = json_array();
        json_array_append_new(h->l->handed, lease_view(h->l, h->run));
        if (h->idem)
            h->l->r->idem_claim.claimed = true;
    }
    json_decref(h->run);
    /* either way the long-poll goes on: with the run, or looking again */
    http_resume(h->l->r);
    free(h);
}

bool api_workers_claim(struct store_tx *tx, struct app *app, json_t *run)
{
    if (!app->sched || app->draining || run_status_of(run) != RS_QUEUED ||
        json_is_true(json_object_get(run, "has_code")) ||
        json_is_string(json_object_get(run, "concurrency_key")) ||
        json_integer_value(json_object_get(run, "deadline_ms")) > 0 ||
        json_integer_value(json_object_get(run, "not_before_ms")) > 0 ||
        json_array_size(json_object_get(run, "blocked_by")))
        return false;
    struct lease *l = sched_claim_waiter(app->sched, run);
    if (!l)
        return false;
    l->waiter = NULL;   /* claimed: the scheduler forgot it */
    struct handoff *h = xcalloc(1, sizeof *h);
    h->l = l;
    /* the hook resumes the long-poll whatever happens to this transaction */
    store_tx_on_commit(tx, handoff_done, h);
    if (http_client_gone(l->r))
        return false;   /* invariant 2: never lease to a client that left */
    /* the lease is the long-poll's work, stored by this transaction: its
     * Idempotency-Key is claimed here too, so that a retry after a crash
     * before its answer leases nothing more (docs/API.md) */
    struct store_idem_claim *claim = &l->r->idem_claim;
    if (claim->key && !claim->claimed) {
        if (store_idem_claim_put(tx, claim))
            return false;   /* a store error: the create's transaction fails with it */
        h->idem = true;
    }
    char ts[RFC3339_LEN];
    rfc3339_format(now_ms() + app->cfg.lease_ms, ts);
    lease_fields(l, run, ts);
    /* its public view is taken at the commit, once the run is final */
    h->run = json_incref(run);
    return true;
}

#define LEASE_ID_MAX 64

static bool str_list(struct req *r, json_t *body, const char *field, const char **out, size_t max,
                     size_t *n)
{
    json_t *a = NULL;
    if (!api_arr(r, body, field, field, max, &a))
        return false;
    size_t i;
    json_t *v;
    *n = 0;
    json_array_foreach(a, i, v) {
        if (!json_is_string(v) || !json_string_length(v)) {
            http_error(r, 400, "invalid_type", field, "%s[%zu] must be a non-empty string", field, i);
            return false;
        }
        /* runtime and definition ids are at most 64 (ASCII) characters: a
         * longer one names nothing, and was taken (a lease matching nothing) */
        if (json_string_length(v) > LEASE_ID_MAX) {
            http_error(r, 400, "too_long", field, "%s[%zu] is longer than %d bytes", field, i,
                       LEASE_ID_MAX);
            return false;
        }
        out[(*n)++] = json_string_value(v);
    }
    return true;
}

void api_workers_lease(struct req *r)
{
    const char *project = http_param(r, "project_id");
    json_t *body = http_body_object(r);
    if (!body || !api_project(r, project))
        return;
    static const char *const fields[] = {"worker_id", "agent_id", "runtimes", "definitions",
                                         "max", "wait_ms", NULL};
    struct lease *l = xcalloc(1, sizeof *l);
    json_int_t max = 1, wait = 0;
    const char *agent = NULL;
    if (!api_known_fields(r, body, fields, "") ||
        !api_str(r, body, "worker_id", "worker_id", 256, &l->worker_id) ||
        !api_str(r, body, "agent_id", "agent_id", 256, &agent) ||
        !str_list(r, body, "runtimes", l->runtimes, 32, &l->f.nruntimes) ||
        !str_list(r, body, "definitions", l->defs, 64, &l->f.ndefinitions) ||
        !api_int(r, body, "max", "max", 1, MAX_LEASE, &max) ||
        !api_int(r, body, "wait_ms", "wait_ms", 0, r->app->cfg.max_wait_ms, &wait)) {
        free(l);
        return;
    }
    l->r = r;
    l->f.project_id = project;
    l->f.agent_id = agent;
    l->f.runtimes = l->runtimes;
    l->f.definitions = l->defs;
    l->max = (int)max;
    l->minimal = api_want_minimal(r);
    l->deadline = mono_ms() + wait;
    r->wait = l;
    r->on_gone = lease_gone;
    lease_try(r);
}

/* ---- report ---- */

static const char *const result_fields[] = {"run_id", "attempt", "status", "output", "error",
                                            "logs", "exit_code", NULL};
static const char *const end_statuses[] = {"completed", "failed", "timed_out", "canceled",
                                           "running", "review_required", NULL};

struct report_tx {
    struct req *r;
    json_t *results;
    json_t *out;
};

/* A refused result: its error has the error body's type as a request's
 * refusal would (a run missing is not_found, a run in another state or
 * attempt a conflict, a bad result invalid_request). */
static json_t *refuse(const char *run_id, const char *code, const char *msg)
{
    const char *type = !strcmp(code, "not_found") ? "not_found"
                       : !strcmp(code, "stale_attempt") || !strcmp(code, "invalid_transition") ||
                               !strcmp(code, "code_running")
                           ? "conflict"
                           : "invalid_request";
    return json_pack("{s:s?, s:b, s:{s:s, s:s, s:s}}", "run_id", run_id, "ok", 0, "error", "type",
                     type, "code", code, "message", msg);
}

/* A result's error and exit_code, bounded as a run PATCH's error_code (64),
 * error_message (4096) and exit_code (-1000..1000) are: a wrong type was
 * dropped without a word and a 100 KB code or message kept.  False with
 * the reason in why. */
static bool report_error_ok(const json_t *res, char *why, size_t whylen)
{
    json_t *err = json_object_get(res, "error"), *ec = json_object_get(res, "exit_code");
    json_t *code = json_is_object(err) ? json_object_get(err, "code") : NULL;
    json_t *msg = json_is_object(err) ? json_object_get(err, "message") : err;
    if (err && !json_is_null(err) && !json_is_string(err) && !json_is_object(err))
        snprintf(why, whylen, "error must be a string or an object {code, message}");
    else if (code && !json_is_null(code) && (!json_is_string(code) || json_string_length(code) > 64))
        snprintf(why, whylen, "error.code must be a string of at most 64 characters");
    else if (msg && !json_is_null(msg) && (!json_is_string(msg) || json_string_length(msg) > 4096))
        snprintf(why, whylen, "error%s must be a string of at most 4096 characters",
                 json_is_object(err) ? ".message" : "");
    else if (ec && !json_is_null(ec) &&
             (!json_is_integer(ec) || json_integer_value(ec) < -1000 || json_integer_value(ec) > 1000))
        snprintf(why, whylen, "exit_code must be an integer from -1000 to 1000");
    else
        return true;
    return false;
}

static int report_fn(struct store_tx *tx, void *arg)
{
    struct report_tx *a = arg;
    struct req *r = a->r;
    const char *project = http_param(r, "project_id");
    json_decref(a->out);   /* re-runnable (store_write_retry) */
    a->out = json_array();
    size_t i;
    json_t *res;
    json_array_foreach(a->results, i, res) {
        const char *run_id = json_string_value(json_object_get(res, "run_id"));
        const char *status = json_string_value(json_object_get(res, "status"));
        json_t *att = json_object_get(res, "attempt");
        if (!json_is_object(res) || !run_id) {
            json_array_append_new(a->out, refuse(run_id, "invalid_result", "run_id is required"));
            continue;
        }
        const char *k;
        json_t *v;
        bool unknown = false;
        json_object_foreach(res, k, v) {
            bool ok = false;
            for (const char *const *f = result_fields; *f; f++)
                ok |= !strcmp(*f, k);
            unknown |= !ok;
        }
        int st = status ? run_status_parse(status) : -1;
        bool st_ok = false;
        for (const char *const *s = end_statuses; status && *s; s++)
            st_ok |= !strcmp(*s, status);
        if (unknown || !st_ok || (att && !json_is_integer(att)) ||
            (json_object_get(res, "logs") && !json_is_array(json_object_get(res, "logs")))) {
            json_array_append_new(a->out, refuse(run_id, "invalid_result",
                unknown ? "unknown field in result" : !st_ok ? "status must be completed, failed, "
                "timed_out, canceled, running or review_required" : "attempt must be an integer and "
                "logs an array"));
            continue;
        }
        json_t *run = store_get(tx, SK_RUN, project, run_id);
        if (!run) {
            json_array_append_new(a->out, refuse(run_id, "not_found", "no such run"));
            continue;
        }
        if (att && json_integer_value(att) != json_integer_value(json_object_get(run, "attempt"))) {
            json_array_append_new(a->out, refuse(run_id, "stale_attempt",
                                                 "the attempt is not the run's current attempt"));
            json_decref(run);
            continue;
        }
        enum run_status from = run_status_of(run);
        if (from != RS_RUNNING) {
            json_array_append_new(a->out, refuse(run_id, "invalid_transition",
                                                 "the run is not running (its lease ended)"));
            json_decref(run);
            continue;
        }
        /* a report is a worker's, of a run it leased: one failing a run
         * whose code quernd runs queued its retry beside the live code
         * (the retry then failed sandbox_error), one completing it raced
         * the code's own end */
        if (runner_code_live(run)) {
            json_array_append_new(a->out, refuse(run_id, "code_running",
                                                 "quernd runs this run's code itself: a worker "
                                                 "does not report it (cancel the run, or PATCH it)"));
            json_decref(run);
            continue;
        }
        json_t *output = json_object_get(res, "output");
        bool given = output && !json_is_null(output);
        /* an output given is checked against the task's output_schema, and
         * so is the one a run completes with (given now or set before), as
         * PATCH and code runs do; the run stays as it is when it does not fit */
        if (given || st == RS_COMPLETED) {
            char *path = NULL, *msg = NULL;
            if (run_check_output(tx, run, given ? output : json_object_get(run, "output"), &path,
                                 &msg)) {
                char *why = xasprintf("output does not match the task's output_schema at %s: %s",
                                      path ? path : "$", msg ? msg : "invalid");
                json_array_append_new(a->out, refuse(run_id, "output_invalid", why));
                free(why);
                free(path);
                free(msg);
                json_decref(run);
                continue;
            }
        }
        if (given)
            json_object_set_nocheck(run, "output", output);
        int rc = 0;
        json_t *logs = json_object_get(res, "logs");
        /* checked as append_log checks them: entries went into the log as
         * sent (a level "loud", an object message, a ts "garbage", a 2 MiB
         * line) and one that was no object was dropped without a word */
        json_t *clean = json_array();
        char why[160] = "";
        size_t j;
        json_t *e;
        json_array_foreach(logs, j, e) {
            char what[96];
            json_t *c = api_log_entry_clean(e, what, sizeof what);
            if (!c) {
                snprintf(why, sizeof why, "logs[%zu] %s", j, what);
                break;
            }
            json_array_append_new(clean, c);
        }
        if (!*why && json_array_size(logs) > 10000)
            snprintf(why, sizeof why, "logs holds more than 10000 entries");
        if (!*why)
            report_error_ok(res, why, sizeof why);
        if (*why) {
            json_array_append_new(a->out, refuse(run_id, "invalid_result", why));
            json_decref(clean);
            json_decref(run);
            continue;
        }
        if (json_array_size(clean))
            rc = run_append_logs(tx, r->app, run, clean);
        json_decref(clean);
        if (!rc && st != RS_RUNNING) {
            json_t *err = json_object_get(res, "error");
            struct run_outcome out = {0};
            if (json_is_string(err))
                out.message = json_string_value(err);
            else if (json_is_object(err)) {
                out.message = json_string_value(json_object_get(err, "message"));
                out.code = json_string_value(json_object_get(err, "code"));
            }
            if (st == RS_FAILED && !out.code)
                out.code = "worker_failed";
            if (json_is_integer(json_object_get(res, "exit_code"))) {
                out.has_exit_code = true;
                out.exit_code = (int)json_integer_value(json_object_get(res, "exit_code"));
            }
            rc = run_move(tx, r->app, run, (enum run_status)st, &out);
        } else if (!rc) {
            rc = run_save(tx, run);
        }
        json_decref(run);
        if (rc == -EPERM) {
            json_array_append_new(a->out, refuse(run_id, "invalid_transition",
                                                 "the run cannot make this change"));
            continue;
        }
        if (rc)
            return rc;
        json_array_append_new(a->out, json_pack("{s:s, s:b, s:n}", "run_id", run_id, "ok", 1,
                                                "error"));
    }
    return 0;
}

void api_workers_report(struct req *r)
{
    json_t *body = http_body_object(r);
    if (!body || !api_project(r, http_param(r, "project_id")))
        return;
    json_t *results = NULL;
    if (!api_known_fields(r, body, (const char *const[]){"results", NULL}, "") ||
        !api_arr(r, body, "results", "results", 1000, &results))
        return;
    if (!results) {
        http_error(r, 400, "missing_field", "results", "results is required");
        return;
    }
    struct report_tx a = {r, results, NULL};
    int rc = store_write_retry(r->app->store, report_fn, &a);
    if (rc) {
        api_store_error(r, rc, "run");
        json_decref(a.out);
        return;
    }
    http_json(r, 200, json_pack("{s:o}", "data", a.out));
}
