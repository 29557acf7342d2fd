/*
 * cron — cron expressions and their next fire instant in an IANA time zone.
 *
 * Syntax: 5 fields (minute hour day-of-month month day-of-week) or 6 with
 * seconds first; `*`, ranges `a-b`, steps `/n` after `*`, `a-b` or `a`,
 * comma lists, JAN-DEC and SUN-SAT (case-insensitive), 7 = Sunday, and the
 * macros @yearly @annually @monthly @weekly @daily @midnight @hourly.
 * Daylight-saving rules are written at the top of cron.c.  A parsed
 * `struct cron` is immutable: any number of threads may call cron_next on it
 * at once.
 */
#ifndef QUERN_CRON_H
#define QUERN_CRON_H

#include <stdint.h>

#include "tz.h"

#define CRON_EXPR_MAX 256

struct cron;

/* Parses a cron expression strictly.  Returns a new schedule the caller frees
 * with cron_free, or NULL with *err (malloc'd, the caller frees) naming the
 * field and the problem, e.g. "field 2 (hour): value 25 out of range 0-23". */
struct cron *cron_parse(const char *expr, char **err);

/* Frees a schedule from cron_parse; NULL is allowed. */
void cron_free(struct cron *c);

/* The next fire instant strictly after `after_ms` (UTC milliseconds), with
 * the fields read as civil time in zone z, as UTC milliseconds (always a
 * whole second), or -1 if there is none within 5 years. */
int64_t cron_next(const struct cron *c, const struct tz *z, int64_t after_ms);

#endif
