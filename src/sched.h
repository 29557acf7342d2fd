/*
 * sched — the dispatcher.  It owns the in-memory ready set (runs that may
 * start now, by project and priority), the delayed runs (retry backoff), the
 * runs blocked on dependencies, the active worker leases, and the lease
 * long-polls waiting for work.  It is rebuilt from the store at start.
 *
 * Threads.  A mutex guards the sets; the scheduler thread (sched_start)
 * handles timers (delays, lease expiry, long-poll timeouts) and every store
 * write the scheduler itself decides (lease expiry, dependency results),
 * so that commit hooks, which run on the store's writing thread, never write.
 *
 * Order.  urgent > high > medium > low, FIFO within a priority.  Ageing: a
 * run that has waited AGE_MS (60 s) per level is served as if one level
 * higher, so a steady stream of urgent work never starves low runs forever.
 * Projects are served round-robin by the executor.
 *
 * Cron.  Every task with a schedule has an entry (project, task, next fire)
 * in a hash map, loaded at start from the tasks flagged "scheduled".  Each
 * loop of the scheduler thread scans the map for due entries — O(number of
 * schedules), a few microseconds for 10 000 — and fires them.  A fire that
 * was missed while quernd was down runs once when it comes back; the other
 * missed instants are skipped and recorded in a task.schedule_skipped event.
 * With one store writer (SQLite) every instant fires once; with several
 * nodes the firing write's check of next_run_at is what keeps it once.
 *
 * Several nodes (PostgreSQL).  Every node keeps every unfinished run: the
 * store's watcher feeds it the runs and tasks other nodes change (re-read
 * from the store; a local change applied after the read wins), and every
 * node dispatches and leases.  A queued run another node announced is
 * served here only after a short grace (QUERN_REMOTE_GRACE_MS, 150 ms), so
 * the node that made it usually starts it and the nodes do not all race for
 * the same run.  Only the leader (store_leader) expires leases, enforces
 * deadlines, fires schedules, and ends the code runs of nodes that are gone
 * (gone for two sweeps, SWEEP_MS apart); the others re-check those timers
 * every second, so a new leader takes over where the old one stopped.
 * Dependants of a finished run are acted on by the node that finished it
 * and by every node that hears of the end and knows a dependant (a task
 * made through it just before may be unknown yet to the finishing node).
 */
#ifndef QUERN_SCHED_H
#define QUERN_SCHED_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct app;
struct sched;
struct store_tx;

struct sched *sched_new(struct app *app);
/* Loads queued and leased runs from the store and starts the thread. */
int sched_start(struct sched *s);
void sched_free(struct sched *s);

/* The fields of a run the scheduler reads, as C values.  From
 * sched_run_read they point into the document it was read from (valid while
 * that lives); from sched_run_copy, into the copy's own block. */
struct sched_run {
    const char *id, *project_id, *task_id, *definition_id, *agent_id, *runtime_id;
    const char *node_id;          /* the node executing it, or NULL */
    const char *concurrency_key;  /* NULL: none */
    int status;                   /* enum run_status (run_status_of) */
    int prio;                     /* sched_priority_parse, -1 when none */
    bool has_code, local, holds_slot;   /* local: executor "local" */
    int64_t attempt, queued_ms, not_before_ms, lease_expires_ms, deadline_ms, max_concurrency;
    json_t *blocked_by;           /* task ids (borrowed, or the copy's own), or NULL */
};

/* Reads run's fields into *r (borrowing its strings and blocked_by). */
void sched_run_read(struct sched_run *r, const json_t *run);
/* A copy of run's fields that outlives run, in one block (blocked_by deep
 * copied when not empty); the caller frees it with sched_run_free. */
struct sched_run *sched_run_copy(const json_t *run);
void sched_run_free(struct sched_run *r);

/* Called after a commit that changed a run, with its fields (run.c hands
 * them over rather than a copy of the document: building a 20-field
 * jansson object per transition cost ~10 k instructions).  Runs on the
 * store's writing thread: never blocks on the store. */
void sched_after_commit_run(struct sched *s, const struct sched_run *r);
/* sched_after_commit_run with the fields read from run (tests). */
void sched_after_commit(struct sched *s, json_t *run);

/* Cron: after tx commits, the scheduler fires task's schedule at its
 * next_run_at (or forgets it when the task has none, is paused or gone).
 * Fires are done by the scheduler thread, once per instant: the firing
 * write checks that next_run_at is still the instant being fired. */
void sched_task_changed_on_commit(struct store_tx *tx, struct sched *s, const json_t *task,
                                  bool is_new);
/* How many schedules the scheduler holds (for /metrics and tests). */
int64_t sched_cron_count(struct sched *s);
/* How many classes of ready runs (project, definition, code, runtime,
 * agent, concurrency key) it holds: only those some unfinished run refers
 * to (for tests). */
int64_t sched_class_count(struct sched *s);

/* What a worker asks for. */
struct sched_filter {
    const char *project_id;
    const char *agent_id;          /* NULL: no agent */
    const char *const *runtimes;   /* code runs of these runtimes */
    size_t nruntimes;
    const char *const *definitions;
    size_t ndefinitions;
    bool executor;                 /* the built-in executor: code runs of any runtime */
};

/* Takes up to max matching runs out of the ready set (ids malloc'd into
 * ids[]).  The caller must lease them or give them back. */
int sched_take(struct sched *s, const struct sched_filter *f, char **ids, int max);
/* Returns runs that were taken but not leased to the ready set. */
void sched_give_back(struct sched *s, char **ids, int n);
/* Returns taken runs that another node was changing (store_try_get said
 * -EAGAIN): they become ready again after delay_ms, unless that node's
 * change (heard meanwhile) says otherwise. */
void sched_give_back_later(struct sched *s, char **ids, int n, int64_t delay_ms);

/* A lease long-poll: wake(ctx) is called once (from any thread) when a run
 * that may match arrives, or at the deadline (mono ms).  The waiter is gone
 * after wake or sched_unwait. */
struct sched_waiter;
struct sched_waiter *sched_wait(struct sched *s, const char *project_id, int64_t deadline_mono,
                                void (*wake)(void *ctx), void *ctx);
/* Like sched_wait, but woken only by a run that f would take (or a freed
 * concurrency slot in the project), not by runs only other filters take.
 * f must stay valid until the waiter is woken or removed. */
struct sched_waiter *sched_wait_filter(struct sched *s, const char *project_id,
                                       const struct sched_filter *f, int64_t deadline_mono,
                                       void (*wake)(void *ctx), void *ctx);
/* Like sched_wait_filter, with gone(ctx) telling whether the waiter's
 * client has left (called under the scheduler's lock; cheap, no blocking).
 * A waiter found gone when a run would wake or be handed to it is woken
 * (so it ends) and the next one is taken instead: the long-polls of killed
 * workers are the oldest, and each used to swallow a new run's wake-up
 * while live workers slept on (5 ms a dead long-poll at 200 runs/s). */
struct sched_waiter *sched_wait_lease(struct sched *s, const char *project_id,
                                      const struct sched_filter *f, int64_t deadline_mono,
                                      void (*wake)(void *ctx), bool (*gone)(void *ctx), void *ctx);
/* For a new run that any worker may start now (the caller checked: queued,
 * no code, no concurrency key, deadline, delay or dependency): removes the
 * oldest filtered waiter (sched_wait_filter) whose filter takes the run and
 * returns its ctx, without waking it; NULL when none.  The caller then
 * owns that waiter's wake-up. */
void *sched_claim_waiter(struct sched *s, const json_t *run);
/* Removes a waiter that has not been woken; false when it already was. */
bool sched_unwait(struct sched *s, struct sched_waiter *w);

/* True when the project has ready runs. */
bool sched_has_ready(struct sched *s, const char *project_id);
/* Whether a run that f would take is ready now (f->project_id NULL: any
 * project).  Unlike sched_has_ready, runs that only other filters take do
 * not count, so a long-poll that re-checks with it does not spin. */
bool sched_has_fit(struct sched *s, const struct sched_filter *f);

/* Counts for /metrics: ready runs per priority (urgent, high, medium, low). */
void sched_depths(struct sched *s, int64_t out[4]);

/* Starts the scheduler thread without loading anything from the store
 * (tests of the timers with an injected clock). */
int sched_start_timers_only(struct sched *s);

/* Stop leasing (drain). */
void sched_drain(struct sched *s);

int sched_priority_parse(const char *name);   /* 0 urgent .. 3 low, -1 */
const char *sched_priority_name(int p);

#endif
