/*
 * events — the one event log.  Every change of a run or task is an event
 * written in the same transaction as the change (events_emit inside a store
 * write), and published after the commit to an in-memory bus that SSE
 * streams, wait_for_result and webhooks follow.
 *
 * Bus.  A ring of the most recent events (in commit order) and a list of
 * subscribers.  Publishing appends to the ring and wakes matching
 * subscribers; a subscriber reads from its cursor, from the ring when the
 * cursor is still in it, else from the store (catch-up after a reconnect or
 * a slow reader).  A subscriber holds no queue of its own, so one that never
 * reads costs only its cursor: memory stays bounded by the ring.
 */
#ifndef QUERN_EVENTS_H
#define QUERN_EVENTS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "store.h"

struct events;
struct app;

struct events *events_new(struct store *st);
void events_free(struct events *ev);

/* Writes an event in tx and publishes it after commit.  data is stolen (may
 * be NULL).  Returns 0 or a store error. */
int events_emit(struct store_tx *tx, struct events *ev, const char *project_id,
                const char *task_id, const char *run_id, const char *type, json_t *data);

/* Formats a numeric event id as its public form "evt_0000000000000042". */
void events_format_id(int64_t id, char out[32]);
/* Parses "evt_…" or a bare number; -1 on error. */
int64_t events_parse_id(const char *s);

/* A subscription: called with each published event that matches
 * (project_id, and run_id when set).  Callbacks run on the publishing
 * thread and must not block. */
typedef void (*events_cb)(void *ctx, int64_t id, const json_t *event);
struct events_sub;
struct events_sub *events_subscribe(struct events *ev, const char *project_id, const char *run_id,
                                    events_cb cb, void *ctx);
void events_unsubscribe(struct events *ev, struct events_sub *s);

/* Calls every subscriber's callback with id -1 and a NULL event: a tick
 * that lets idle streams send their keepalive. */
void events_tick(struct events *ev);

/* Another node changed run (several nodes on PostgreSQL): its events are in
 * the store, not on this bus.  Wakes the subscribers of its project and run
 * with id 0 and a summary event {type "task_run.<status>", project_id,
 * run_id, task_id, data {status}}, so streams read the store and waiters
 * see a run that ended. */
void events_remote_run(struct events *ev, const json_t *run);
/* Another node wrote events of project_id and run_id (NULL: of no run, e.g.
 * task.created) without changing the run: wakes the subscribers they
 * match with id 0 and an event {type "remote", project_id, run_id}, so
 * streams read the store (log entries appended through another node). */
void events_remote(struct events *ev, const char *project_id, const char *run_id);

/* Copies events with id > after (matching project/run) out of the ring into
 * a new array; returns -1 when the ring no longer holds id after+1, or when
 * it has nothing past after and other nodes write events too (read the
 * store instead), else the number appended. */
int events_ring_read(struct events *ev, const char *project_id, const char *run_id, int64_t after,
                     size_t max, json_t *out);

/* Whether type is one of the event types quern emits. */
bool events_type_known(const char *type);

#endif
