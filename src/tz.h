/*
 * tz — IANA time zones read from the system's compiled zoneinfo (TZif files,
 * /usr/share/zoneinfo or $TZDIR), without touching the process-wide TZ
 * environment or localtime(), so it is safe from any thread.
 *
 * Zones are loaded on first use into a mutex-protected cache, are immutable
 * once loaded, and live until tz_cache_free() at exit; a `const struct tz *`
 * may therefore be kept and used concurrently by any number of threads.
 * "UTC" (and "Etc/UTC") is built in and works without tzdata installed.
 */
#ifndef QUERN_TZ_H
#define QUERN_TZ_H

#include <stdint.h>
#include <time.h>

#define TZ_NAME_MAX 64

struct tz;

/* Returns the zone called `name` (owned by the cache; do not free), loading it
 * on first use, or NULL with *err (malloc'd, the caller frees) naming the
 * problem: a name outside [A-Za-z0-9_+-/], "..", a leading "/", more than
 * TZ_NAME_MAX characters, an unknown zone or an unreadable file. */
const struct tz *tz_get(const char *name, char **err);

/* The zone's IANA name, as given to tz_get (owned by the zone). */
const char *tz_name(const struct tz *z);

/* UTC offset in seconds (east positive) at the given UTC instant. */
int tz_offset_at(const struct tz *z, int64_t utc_secs);

/* Breaks a UTC instant into local civil time: every struct tm field, with
 * tm_gmtoff and tm_isdst set and tm_zone pointing at the abbreviation (owned
 * by the zone). */
void tz_localtime(const struct tz *z, int64_t utc_secs, struct tm *out);

/* The first UTC instant strictly after utc_secs at which the zone's UTC
 * offset changes, or INT64_MAX if it never changes again. */
int64_t tz_next_transition(const struct tz *z, int64_t utc_secs);

/* Frees every cached zone; call once at exit, when no thread uses a zone. */
void tz_cache_free(void);

/* Civil-calendar helpers (proleptic Gregorian, UTC, no time zone). */
/* Days since 1970-01-01 of the given date (month 1-12, day 1-31). */
int64_t tz_days_from_civil(int64_t y, int m, int d);
/* The date of a day number from tz_days_from_civil. */
void tz_civil_from_days(int64_t days, int64_t *y, int *m, int *d);

#endif
