/*
 * run — the run state machine (one table, below in run.c) and the domain
 * operations that change a run: every change writes the run, its event and
 * its task's status in the caller's transaction, and tells the scheduler
 * after the commit.
 *
 * Invariants (each tested in tests/unit/test_run.c or the integration suite):
 *  1. No transition leaves a terminal state (completed, failed, timed_out,
 *     denied, canceled), not even to the same status.
 *  2. Every transition is in the table; anything else is refused (-EPERM,
 *     answered 409 by the API).
 *  3. A run has at most one active lease: leasing sets worker_id,
 *     lease_expires_at and status running together; leaving running clears
 *     the lease.
 *  4. attempt starts at 1 and increases by exactly one on each retry, and on
 *     nothing else; a report for another attempt is refused (fencing).
 *  5. started_at is set when a run first enters running; completed_at and
 *     duration_ms exactly when it enters a terminal state.
 *  6. Every transition writes exactly one task_run.<status> event (or
 *     task_run.retrying for a retry) in the same transaction.
 */
#ifndef QUERN_RUN_H
#define QUERN_RUN_H

#include <jansson.h>
#include <stdbool.h>

#include "store.h"

struct app;

enum run_status {
    RS_QUEUED,
    RS_RUNNING,
    RS_PAUSED,
    RS_INTERACTION_REQUIRED,
    RS_REVIEW_REQUIRED,
    RS_COMPLETED,
    RS_FAILED,
    RS_TIMED_OUT,
    RS_DENIED,
    RS_CANCELING,
    RS_CANCELED,
    RS__COUNT
};

const char *run_status_name(enum run_status s);
/* -1 for an unknown name. */
int run_status_parse(const char *name);
bool run_status_terminal(enum run_status s);
/* Invariants 1 and 2. */
bool run_can_move(enum run_status from, enum run_status to);
enum run_status run_status_of(const json_t *run);

/* Builds a new queued run document for task (not stored). */
json_t *run_new_doc(const json_t *task, const json_t *input_override, const char *agent_id);

/* Starts a task's runs: one, or one per assigned agent, with input merged
 * over the task's; blocked while dependencies are not completed, paused
 * when the task is.  *first_run (optional) gets the first one. */
int run_start_for_task(struct store_tx *tx, struct app *app, json_t *task, const json_t *input,
                       json_t **first_run);

/* Offered a new queued run before it is stored: returns true when it takes
 * the run for a worker, having set the run's lease fields (worker_id,
 * lease_expires_at, agent_id); the run is then stored running. */
typedef bool (*run_claim_fn)(struct store_tx *tx, struct app *app, json_t *run);

/* run_start_for_task for a task not stored yet: stores it too, with its
 * first run's fields (status, latest_run_id, run_count…) already set; -EEXIST
 * when a task of that id exists.  Callers emit task.created before.  claim
 * (may be NULL) is offered the first run when nothing holds it back. */
int run_start_for_new_task(struct store_tx *tx, struct app *app, json_t *task,
                           json_t **first_run, run_claim_fn claim);

/* Stores a new run (queued; paused, held or blocked as the task says), its events,
 * and the task's status; the scheduler learns of it after commit. */
int run_insert(struct store_tx *tx, struct app *app, json_t *task, json_t *run);

struct run_outcome {
    const char *code;       /* error code or NULL */
    const char *message;    /* error message or NULL */
    bool has_exit_code;
    int exit_code;
    bool no_retry;          /* final failure even if retries remain */
};

/* Moves run (modified in place, then stored) to `to` in tx, with the
 * outcome for failures.  A failure with retries left becomes a retry
 * (invariant 4).  A run that would be queued while its task is paused
 * is paused instead; one leaving paused or interaction_required (an
 * approval) for queued drops the dependencies that completed meanwhile
 * from blocked_by (and fails with dependency_failed when one ended
 * otherwise).  -EPERM for an illegal
 * transition. */
int run_move(struct store_tx *tx, struct app *app, json_t *run, enum run_status to,
             const struct run_outcome *out);

/* An approval given to a run held for one (interaction kind "approval"):
 * nothing of the run has executed, so the project's policy as it is now
 * decides: a breach ends it denied, code policy_denied, the rule named;
 * else it takes the policy's caps of now ("limits") and moves to `to`
 * (queued, or running for a PATCH that starts it) by run_move. */
int run_approve(struct store_tx *tx, struct app *app, json_t *run, enum run_status to);

/* The code's question (its input_request message: prompt and schema): the
 * run becomes interaction_required; asked while another waits for its
 * answer, it is queued in the run's "pending_interactions" and asked when
 * that one is answered (run_ask_next).  Only for a running run or one
 * waiting on the code's own question; 0 otherwise (nothing to do). */
int run_ask(struct store_tx *tx, struct app *app, json_t *run, const json_t *prompt,
            const json_t *schema);

/* After an answer moved run back to running: asks the next queued question
 * of the code, if any (run_ask). */
int run_ask_next(struct store_tx *tx, struct app *app, json_t *run);

/* After a change of run's progress: the task's progress follows its latest
 * run's, as its status does. */
int run_progress_to_task(struct store_tx *tx, struct app *app, const json_t *run);

/* Saves a run document after an in-place change that is not a transition
 * (progress, branch, output …), bumping updated_at. */
int run_save(struct store_tx *tx, json_t *run);

/* A queued run whose blocked_by has just emptied (its last dependency
 * completed, or was taken away): it is in line, for FIFO and ageing, from
 * now, as a retry is from the end of its delay.  Sets not_before_ms. */
void run_unblocked(json_t *run);

/* Before a run starts (a lease, quernd's own dispatch, a PATCH to
 * running): 1 when its concurrency key is full as every node sees it
 * (several nodes on PostgreSQL; the scheduler counted only what this node
 * has heard of), 0 when it may start (no key), or a store error. */
int run_conc_full(struct store_tx *tx, const json_t *run);
/* Whether run, in its current state, holds a slot of its concurrency key:
 * running, canceling, or started and waiting on an interaction.  A run
 * held for approval has not started and holds none (store_conc_active
 * counts the same runs). */
bool run_holds_slot(const json_t *run);

/* Tells the scheduler about run's current state after tx commits (done by
 * run_insert and run_move; for other changes that matter to dispatch). */
void run_notify(struct store_tx *tx, struct app *app, const json_t *run);
/* The fields of a run the scheduler reads (NULL-terminated): run_notify
 * hands it these alone, and its loads of many runs ask the store for no
 * more (store_list_fields). */
extern const char *const run_sched_fields[];

/* Loads the task of a run (new reference) or NULL. */
json_t *run_task(struct store_tx *tx, const json_t *run);
/* Checks output (NULL: none, as null) against the output_schema of run's
 * task: 0 when it fits or the task has none; -EINVAL with *path and *msg
 * (malloc'd, the caller frees) when it does not. */
int run_check_output(struct store_tx *tx, const json_t *run, const json_t *output, char **path,
                     char **msg);

/* The fields a change of run writes into its task when run is the task's
 * latest (status, progress, updated_at, last_run_at): a new object. */
json_t *run_task_fields(const json_t *run);

/* Appends log entries (array, entries completed with ts/level/iteration)
 * and a task_run.log event for each. */
int run_append_logs(struct store_tx *tx, struct app *app, json_t *run, json_t *entries);

/* Appends {instance_id, scope, access_type, at} to the run's storage_access
 * list, making the list when the run has none (not saved).  Returns the list,
 * borrowed from run. */
json_t *run_note_storage_access(json_t *run, const char *instance_id, const char *scope,
                                const char *access_type, const char *at);

/* What one run's manifest holds at most, every attempt together. */
#define RUN_MAX_ARTIFACTS 1000
#define RUN_MAX_ARTIFACT_BYTES (1LL << 30)

/* Adds an artifact (stored blob sha, size) to the run's manifest, replacing
 * one of the same name, with a task_run.artifact event.  Saves the run. */
int run_add_artifact(struct store_tx *tx, struct app *app, json_t *run, const char *name,
                     const char *sha, int64_t size, const char *content_type);
/* A content type for a file name, from its extension. */
const char *run_guess_content_type(const char *name);

/* The public form of a run: a new object holding the document's fields
 * minus internal ones.  Its values are shared with run (not copied): change
 * only its top-level fields. */
json_t *run_public(const json_t *run);

#endif
