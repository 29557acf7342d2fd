/*
 * api — helpers shared by the api_* files: field validation that answers
 * 400 naming the field, project checks, and the idempotency wrapper.
 * Each api_*.c file parses, validates, calls the domain and renders one
 * resource; the route table is in api.c.
 */
#ifndef QUERN_API_H
#define QUERN_API_H

#include <jansson.h>
#include <stdbool.h>

#include "app.h"
#include "http.h"
#include "store.h"

/* Field checks.  Each returns true when the field is absent or valid (and
 * sets *out when present); false after answering 400 naming `param`. */
bool api_str(struct req *r, json_t *obj, const char *field, const char *param, int64_t max_len,
             const char **out);
bool api_int(struct req *r, json_t *obj, const char *field, const char *param, int64_t min,
             int64_t max, json_int_t *out);
bool api_bool(struct req *r, json_t *obj, const char *field, const char *param, bool *out);
bool api_obj(struct req *r, json_t *obj, const char *field, const char *param, json_t **out);
bool api_arr(struct req *r, json_t *obj, const char *field, const char *param, size_t max,
             json_t **out);
bool api_enum(struct req *r, json_t *obj, const char *field, const char *param,
              const char *const *values, const char **out);
/* runtime_id: a configured runtime (runtime.h); 400 naming param otherwise. */
bool api_runtime(struct req *r, json_t *obj, const char *param, const char **out);
/* Refuses fields not in `allowed` (NULL-terminated); prefix names the
 * object in the param ("settings."). */
bool api_known_fields(struct req *r, json_t *obj, const char *const *allowed, const char *prefix);
/* A client-given id: [A-Za-z0-9_.:-]{1,64}, not "." or "..". */
bool api_id_ok(const char *id);
/* The id of a new object: body's "id" when it gives a good one (400
 * invalid_id, and false, for a bad one), else a new "<prefix>_..." id.
 * A client's id is unique in its project: a second create is 409. */
bool api_new_id(struct req *r, json_t *body, const char *prefix, char id[ID_LEN]);
/* Refuses an "id" in body (400 id_not_accepted, saying why) for the kinds
 * whose ids quern alone makes. */
bool api_no_id(struct req *r, json_t *body, const char *why);
#define RUN_ID_WHY "a run's id is made by quern (retries, schedules and dependencies make runs too)"
/* A new array of a's values, each kept once, in first-seen order (a scope
 * or a dependency listed twice). */
json_t *api_unique(const json_t *a);

/* Adds a filter for each metadata.<key>=<value> query argument; false
 * after answering 400 (too many). */
bool api_metadata_filters(struct req *r, struct store_filter *f, size_t *nf, size_t max);

/* A list's ?starting_after=<id> cursor (NULL when absent); false after
 * answering 400 for one that cannot be an id. */
bool api_list_cursor(struct req *r, const char **after);
/* store_list of one page: with after (a cursor), the page after that doc
 * (-ESRCH when the project has no such doc; one more row is read to tell
 * *has_more); else by q->offset.  *total counts every match. */
int api_list_page(struct store_tx *tx, enum store_kind kind, const char *project_id,
                  struct store_query *q, const char *after, json_t **out, int64_t *total,
                  bool *has_more);
/* Answers 400 for api_list_page's -ESRCH (what: "task", "run"). */
void api_cursor_unknown(struct req *r, const char *what, const char *after);

/* A task's metadata within its bounds (at most 100 keys of 1-256 bytes,
 * 16 KiB as JSON); false after answering 400 naming param.KEY or param. */
bool api_metadata_ok(struct req *r, const json_t *md, const char *param);

/* True when the project exists (answers 404 otherwise). */
bool api_project(struct req *r, const char *project_id);

/* Maps a domain/store error to a response: -ENOENT 404, -EPERM/-EEXIST
 * 409, the store's own failures as http_store_error answers them. */
void api_store_error(struct req *r, int rc, const char *what);

/* Handlers, one group per file. */
void api_projects_create(struct req *r);
void api_projects_list(struct req *r);
void api_keys_create(struct req *r);
void api_keys_list(struct req *r);
void api_keys_delete(struct req *r);
void api_defs_create(struct req *r);
void api_defs_list(struct req *r);
void api_defs_get(struct req *r);
void api_defs_update(struct req *r);
void api_defs_delete(struct req *r);
void api_defs_trigger(struct req *r);
void api_tasks_create(struct req *r);
void api_tasks_batch(struct req *r);
void api_tasks_list(struct req *r);
void api_tasks_queued_ids(struct req *r);
void api_tasks_get(struct req *r);
void api_tasks_update(struct req *r);
void api_tasks_delete(struct req *r);
void api_tasks_run(struct req *r);
void api_tasks_cancel(struct req *r);
void api_tasks_retry(struct req *r);
void api_tasks_pause(struct req *r);
void api_tasks_resume(struct req *r);
void api_tasks_schedule(struct req *r);
void api_runs_list(struct req *r);
void api_runs_create(struct req *r);
void api_runs_get(struct req *r);
void api_runs_get_by_id(struct req *r);
void api_runs_patch(struct req *r);
void api_runs_append_log(struct req *r);
void api_runs_logs(struct req *r);
void api_runs_session_logs(struct req *r);
void api_runs_set_output(struct req *r);
void api_runs_cancel(struct req *r);
void api_runs_interaction(struct req *r);
void api_runs_review(struct req *r);
void api_runs_checkpoint_add(struct req *r);
void api_runs_checkpoint_list(struct req *r);
void api_runs_heartbeat(struct req *r);
void api_runs_command(struct req *r);
void api_storage_create(struct req *r);
void api_storage_list(struct req *r);
void api_storage_access(struct req *r);
void api_artifacts_upload(struct req *r);
void api_artifacts_list(struct req *r);
void api_artifacts_download(struct req *r);
void api_artifacts_presign(struct req *r);
void api_artifacts_public(struct req *r);
void api_runs_project_list(struct req *r);
void api_logs_grouped(struct req *r);
void api_runs_stream(struct req *r);
void api_events_stream(struct req *r);
void api_workers_lease(struct req *r);
void api_workers_report(struct req *r);
/* A run_claim_fn (run.h), offered a new run in the transaction that
 * creates it: when a worker's lease long-poll is waiting for a run like it
 * (and the run may start at once), sets the lease's fields on run for that
 * worker and returns true (the caller stores the run running, one write
 * instead of a write and a move); the long-poll is answered after the
 * commit, with the run if it committed. */
struct store_tx;
bool api_workers_claim(struct store_tx *tx, struct app *app, json_t *run);
void api_ops_healthz(struct req *r);
void api_ops_readyz(struct req *r);
void api_ops_metrics(struct req *r);
void api_ops_openapi(struct req *r);
void api_ops_dashboard(struct req *r);

/* api_hooks.c: triggers, webhooks, policy, secrets, relay_message. */
void api_triggers_create(struct req *r);
void api_triggers_list(struct req *r);
void api_triggers_get(struct req *r);
void api_triggers_delete(struct req *r);
void api_hooks_receive(struct req *r);
void api_webhooks_create(struct req *r);
void api_webhooks_list(struct req *r);
void api_webhooks_get(struct req *r);
void api_webhooks_delete(struct req *r);
void api_webhooks_deliveries(struct req *r);
void api_policy_get(struct req *r);
void api_policy_put(struct req *r);
void api_secrets_create(struct req *r);
void api_secrets_list(struct req *r);
void api_secrets_delete(struct req *r);
void api_runs_relay_message(struct req *r);

/* Task bodies are validated once, for create and for batch items: returns
 * the task document (new reference) or NULL after answering 400 with
 * param prefixed by `prefix` ("tasks[7]."). */
/* True when the request asks `Prefer: return=minimal` (RFC 7240), for the
 * routes that answer it (creates, leases): it then adds the
 * Preference-Applied header to the answer. */
bool api_want_minimal(struct req *r);

struct task_opts {
    bool run;
    json_int_t wait_ms;     /* 0: no wait */
    json_t *defs;           /* in: the definitions a batch read so far (id -> doc), kept
                               for its next tasks; NULL: read each time */
};
/* Checks a definition's settings as a task's are checked (400 naming
 * settings.FIELD); false when it answered. */
bool api_settings_ok(struct req *r, json_t *in);

/* A task document as clients see it, without the store's index flags
 * (`scheduled`, `has_dependencies`, ...): a new object sharing TASK's
 * values, owned by the caller. */
json_t *api_task_public(const json_t *task);

json_t *api_task_from_body(struct req *r, struct store_tx *tx, const char *project_id,
                           json_t *body, const char *prefix, struct task_opts *opts);

/* True when INPUT (NULL: {}) fits the definition DEF's input_schema (no
 * definition or no schema: any input); else answers 400 input_invalid
 * naming PARAM and the failing path. */
bool api_input_fits(struct req *r, const json_t *def, const json_t *input, const char *param);

/* A log entry a worker sent (append_log's fields: type, message, data,
 * error, level, ts), checked and rebuilt as quernd stores it (a new
 * object, the caller's); NULL with the reason in why when it is not one. */
json_t *api_log_entry_clean(const json_t *e, char *why, size_t whylen);

/* The same for the input a new run of TASK gets (the task's input with
 * OVERRIDE merged over it), against the task's definition as it is now. */
bool api_run_input_fits(struct req *r, struct store_tx *tx, const json_t *task,
                        const json_t *override);

#endif
