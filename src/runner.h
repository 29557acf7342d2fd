/*
 * runner — the domain side of code execution: takes runnable code runs from
 * the scheduler into the executor's free slots, and turns what the executor
 * reports (log lines, control messages, the exit) into store writes: logs,
 * progress, checkpoints, output, usage, interactions, and the final status.
 *
 * Threads.  One runner thread.  exec's callbacks (on its supervisor thread)
 * only queue items; the runner thread drains the queue, batching every
 * queued log line of every run into one store write, so a chatty run costs
 * one commit per batch rather than one per line.
 */
#ifndef QUERN_RUNNER_H
#define QUERN_RUNNER_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct app;
struct runner;
struct buf;

/* Starts the executor and the runner thread.  NULL with *err when code
 * cannot run here (no sandbox): quernd then serves without an executor and
 * code runs wait for one (or a worker that lists their runtime). */
struct runner *runner_new(struct app *app, int slots, char **err);
/* The executor's number of slots (what slots <= 0 became). */
int runner_slots(const struct runner *rn);
/* Appends the executor's Prometheus metrics to out (any thread): code runs
 * started warm and cold, warm boxes ready, slots. */
void runner_metrics(struct runner *rn, struct buf *out);
void runner_free(struct runner *rn);

/* The scheduler has ready code runs: look for free slots (any thread). */
void runner_wake(struct runner *rn);

/* Fails or re-queues the code runs a previous quernd left running (called
 * once at start, before the scheduler loads). */
int runner_recover(struct app *app);

/* Waits up to grace_ms for the code runs in the executor to finish (new
 * starts are already stopped by app->draining). */
void runner_drain(struct runner *rn, int64_t grace_ms);

/* Sends one JSON line to a live run's stdin (a run whose start has
 * committed but whose box is not spawned yet gets it once it is).
 * -ENOENT: no live sandbox. */
int runner_send(struct runner *rn, const char *run_id, const char *json_line);
int runner_close_stdin(struct runner *rn, const char *run_id);
int runner_cancel(struct runner *rn, const char *run_id);

/* Whether the run's code is live in a sandbox of quernd's: running, or
 * waiting on its own input_request (not held for approval, not a worker's). */
bool runner_code_live(const json_t *run);

#endif
