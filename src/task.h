/*
 * task — domain helpers on task documents shared by the API and the
 * scheduler (no I/O): the cron schedule's next fire time.
 */
#ifndef QUERN_TASK_H
#define QUERN_TASK_H

#include <jansson.h>
#include <stdint.h>

/* The task's deadline in ms, or INT64_MAX when it has none.  Its schedule
 * fires only before it: a run made at or after it could never start. */
int64_t task_deadline_ms(const json_t *task);
/* Sets next_run_at (and the indexed "scheduled" flag) from the task's
 * schedule, timezone, pause state and deadline, for the first fire after
 * after_ms (null when that fire is not before the deadline). */
void task_schedule_next(json_t *task, int64_t after_ms);
/* The task's next fire time in ms, or -1 (no schedule, paused, none). */
int64_t task_next_ms(const json_t *task);
/* How many fires of the task's schedule fall in (from_ms, to_ms) and before
 * its deadline, at most
 * max (for counting the fires skipped while quernd was down). */
int64_t task_fires_between(const json_t *task, int64_t from_ms, int64_t to_ms, int64_t max);
/* The fires missed by a fire due at instant_ms and made at now_ms: the
 * instants after it up to now_ms (the next fire is the first after now_ms),
 * at most max. */
int64_t task_missed_fires(const json_t *task, int64_t instant_ms, int64_t now_ms, int64_t max);

#endif
