/*
 * cron — parsing cron expressions and finding their next fire instant.
 *
 * A parsed expression is one bitmask per field.  cron_next walks the zone's
 * timeline one constant-offset segment at a time (between two offset changes
 * local time is UTC plus a constant), and within a segment finds the first
 * matching civil time by skipping field by field — month, day, hour, minute,
 * second — never second by second, so a call costs a few dozen steps.
 * Nothing here locks or allocates after parsing: a `struct cron` and a zone
 * are read-only, so cron_next may run on any thread.
 *
 * Day of month and day of week (crontab(5)): when both fields are restricted
 * (neither starts with `*`), a day matches if EITHER matches; otherwise both
 * must match (one of them being `*`).
 *
 * Daylight saving and other offset changes.  A schedule is "hour-wildcard"
 * when its hour field starts with `*` (`*` alone or with a step, @hourly);
 * every other schedule (hour a value, range or list) has a "fixed hour".
 *
 *   1. Gap (spring forward, local times that never happen, e.g. 02:00-02:59
 *      in America/New_York on 2026-03-08): a schedule with a fixed hour
 *      whose matching time falls in the gap fires once, at the first valid
 *      instant after the gap (03:00 local, which is the transition instant),
 *      however many of its times fall in the gap.  An hour-wildcard schedule
 *      simply follows real instants: times in the gap do not exist and are
 *      skipped ("30 * * * *" fires at 01:30 EST then 03:30 EDT, one real
 *      hour apart).
 *   2. Overlap (fall back, local times that happen twice, e.g. 01:00-01:59 in
 *      America/New_York on 2026-11-01): a schedule with a fixed hour fires
 *      once, at the first occurrence (EDT); the repeated times are skipped.
 *      An hour-wildcard schedule follows real instants and fires in both
 *      ("0,15,30,45 * * * *" fires at 01:45 EDT, 01:00 EST, 01:15 EST, ...), so
 *      its real interval never stretches.
 *   3. No instant is ever returned twice: cron_next is strictly after its
 *      argument, and instants only grow along the timeline.
 */
#include "cron.h"

#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct cron {
    uint64_t sec, min;
    uint32_t hour, dom; /* dom: bits 1-31 */
    uint16_t mon;       /* bits 1-12 */
    uint8_t dow;        /* bits 0-6, Sunday = 0 */
    bool dom_star, dow_star, hour_star;
};

enum field_id { F_SEC, F_MIN, F_HOUR, F_DOM, F_MON, F_DOW };

static const struct field_desc {
    const char *name;
    int min, max;    /* accepted values */
    int star_max;    /* upper bound of `*` and of `a/n` */
    const char *const *names;
} fields[] = {
    [F_SEC] = {"second", 0, 59, 59, NULL},
    [F_MIN] = {"minute", 0, 59, 59, NULL},
    [F_HOUR] = {"hour", 0, 23, 23, NULL},
    [F_DOM] = {"day of month", 1, 31, 31, NULL},
    [F_MON] = {"month", 1, 12, 12,
               (const char *const[]){"", "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL",
                                     "AUG", "SEP", "OCT", "NOV", "DEC", NULL}},
    [F_DOW] = {"day of week", 0, 7, 6,
               (const char *const[]){"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", NULL}},
};

static const struct {
    const char *name, *expr;
} macros[] = {
    {"@yearly", "0 0 1 1 *"},  {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"},  {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

/* Five years, counted generously enough for a 29 February schedule. */
#define CRON_HORIZON_SECS (5 * 366 * 86400LL)
/* Instants handled: years 1 to 9000, far from int64 millisecond overflow. */
#define CRON_MIN_SECS (-62135596800LL)
#define CRON_MAX_SECS (221845392000LL)

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
        q--;
    return q;
}

/* ---- parsing ----------------------------------------------------------- */

struct field_err {
    int pos;            /* 1-based position in the expression */
    enum field_id id;
    char **err;
};

static void ferr(const struct field_err *fe, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void ferr(const struct field_err *fe, const char *fmt, ...)
{
    struct buf b;
    va_list ap;
    buf_init(&b);
    buf_printf(&b, "field %d (%s): ", fe->pos, fields[fe->id].name);
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    *fe->err = buf_steal(&b);
}

/* One value (number or name) of s[0..n); 0, or -EINVAL after setting *err. */
static int parse_value(const struct field_err *fe, const char *s, size_t n, int *out)
{
    const struct field_desc *f = &fields[fe->id];
    if (n == 0) {
        ferr(fe, "missing value");
        return -EINVAL;
    }
    if (isdigit((unsigned char)s[0])) {
        long v = 0;
        for (size_t i = 0; i < n; i++) {
            if (!isdigit((unsigned char)s[i]) || i >= 9) {
                ferr(fe, "invalid value \"%.*s\"", (int)(n > 20 ? 20 : n), s);
                return -EINVAL;
            }
            v = v * 10 + (s[i] - '0');
        }
        if (v < f->min || v > f->max) {
            ferr(fe, "value %ld out of range %d-%d", v, f->min, f->max);
            return -EINVAL;
        }
        *out = (int)v;
        return 0;
    }
    if (f->names && n == 3) {
        for (int i = 0; f->names[i]; i++)
            if (strncasecmp(s, f->names[i], 3) == 0 && f->names[i][0]) {
                *out = i;
                return 0;
            }
    }
    if (f->names)
        ferr(fe, "invalid value \"%.*s\" (expected a number or a name such as %s)",
             (int)(n > 20 ? 20 : n), s, fe->id == F_MON ? "JAN" : "MON");
    else
        ferr(fe, "invalid value \"%.*s\"", (int)(n > 20 ? 20 : n), s);
    return -EINVAL;
}

/* Parses one field's text s[0..n) into *mask; 0 or -EINVAL with *err set. */
static int parse_field(const struct field_err *fe, const char *s, size_t n, uint64_t *mask)
{
    const struct field_desc *f = &fields[fe->id];
    const char *end = s + n;
    *mask = 0;
    for (;;) {
        const char *comma = memchr(s, ',', (size_t)(end - s));
        const char *item_end = comma ? comma : end;
        const char *slash = memchr(s, '/', (size_t)(item_end - s));
        const char *base_end = slash ? slash : item_end;
        int lo, hi, step = 1;
        if (item_end == s) {
            ferr(fe, "empty element in list");
            return -EINVAL;
        }
        if (base_end - s == 1 && *s == '*') {
            lo = f->min;
            hi = f->star_max;
        } else {
            const char *dash = memchr(s, '-', (size_t)(base_end - s));
            if (parse_value(fe, s, (size_t)((dash ? dash : base_end) - s), &lo) != 0)
                return -EINVAL;
            if (dash) {
                if (parse_value(fe, dash + 1, (size_t)(base_end - dash - 1), &hi) != 0)
                    return -EINVAL;
                if (lo > hi) {
                    ferr(fe, "range %d-%d: start is after end", lo, hi);
                    return -EINVAL;
                }
            } else {
                /* "a/n" runs from a to the end of the field. */
                hi = slash ? (lo > f->star_max ? lo : f->star_max) : lo;
            }
        }
        if (slash) {
            int span = f->star_max - f->min + 1;
            long v = 0;
            size_t sn = (size_t)(item_end - slash - 1);
            if (sn == 0 || sn > 9) {
                ferr(fe, "invalid step \"%.*s\"", (int)(sn > 20 ? 20 : sn), slash + 1);
                return -EINVAL;
            }
            for (size_t i = 0; i < sn; i++) {
                if (!isdigit((unsigned char)slash[1 + i])) {
                    ferr(fe, "invalid step \"%.*s\"", (int)(sn > 20 ? 20 : sn), slash + 1);
                    return -EINVAL;
                }
                v = v * 10 + (slash[1 + i] - '0');
            }
            if (v < 1 || v > span) {
                ferr(fe, "step %ld out of range 1-%d", v, span);
                return -EINVAL;
            }
            step = (int)v;
        }
        for (int v = lo; v <= hi; v += step)
            *mask |= 1ull << v;
        if (!comma)
            break;
        s = comma + 1;
        if (s == end) {
            ferr(fe, "empty element in list");
            return -EINVAL;
        }
    }
    if (fe->id == F_DOW && (*mask & (1ull << 7)))
        *mask = (*mask | 1) & 0x7f; /* 7 is Sunday too */
    return 0;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

struct cron *cron_parse(const char *expr, char **err)
{
    const char *tok[7];
    size_t toklen[7];
    int ntok = 0;
    struct cron *c = NULL;
    *err = NULL;
    if (!expr) {
        *err = xstrdup("empty cron expression");
        return NULL;
    }
    size_t len = strlen(expr);
    if (len > CRON_EXPR_MAX) {
        *err = xasprintf("cron expression longer than %d characters", CRON_EXPR_MAX);
        return NULL;
    }
    for (const char *p = expr; *p;) {
        if (is_space(*p)) {
            p++;
            continue;
        }
        if (!isprint((unsigned char)*p)) {
            *err = xstrdup("cron expression contains a control character");
            return NULL;
        }
        const char *start = p;
        while (*p && !is_space(*p) && isprint((unsigned char)*p))
            p++;
        if (ntok < 7) {
            tok[ntok] = start;
            toklen[ntok] = (size_t)(p - start);
        }
        ntok++;
    }
    if (ntok == 0) {
        *err = xstrdup("empty cron expression");
        return NULL;
    }
    if (tok[0][0] == '@') {
        if (ntok != 1) {
            *err = xasprintf("macro \"%.*s\" must be the whole expression",
                             (int)(toklen[0] > 20 ? 20 : toklen[0]), tok[0]);
            return NULL;
        }
        for (size_t i = 0; i < ARRAY_LEN(macros); i++)
            if (strlen(macros[i].name) == toklen[0] &&
                strncasecmp(tok[0], macros[i].name, toklen[0]) == 0)
                return cron_parse(macros[i].expr, err);
        *err = xasprintf("unknown macro \"%.*s\" (expected @yearly, @annually, @monthly, "
                         "@weekly, @daily, @midnight or @hourly)",
                         (int)(toklen[0] > 20 ? 20 : toklen[0]), tok[0]);
        return NULL;
    }
    if (ntok != 5 && ntok != 6) {
        *err = xasprintf("expected 5 fields (minute hour day-of-month month day-of-week) "
                         "or 6 (with seconds first), got %d", ntok);
        return NULL;
    }
    c = xcalloc(1, sizeof(*c));
    int first = ntok == 6 ? F_SEC : F_MIN;
    if (ntok == 5)
        c->sec = 1; /* second 0 */
    for (int i = 0; i < ntok; i++) {
        struct field_err fe = {i + 1, (enum field_id)(first + i), err};
        uint64_t mask;
        if (parse_field(&fe, tok[i], toklen[i], &mask) != 0)
            goto fail;
        bool star = tok[i][0] == '*';
        switch (fe.id) {
        case F_SEC: c->sec = mask; break;
        case F_MIN: c->min = mask; break;
        case F_HOUR: c->hour = (uint32_t)mask; c->hour_star = star; break;
        case F_DOM: c->dom = (uint32_t)mask; c->dom_star = star; break;
        case F_MON: c->mon = (uint16_t)mask; break;
        case F_DOW: c->dow = (uint8_t)mask; c->dow_star = star; break;
        }
    }
    /* A day of month that no selected month has never fires (30 February). */
    if (c->dow_star || c->dom_star) {
        static const int maxdays[13] = {0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        bool any = false;
        for (int m = 1; m <= 12 && !any; m++)
            if (c->mon & (1u << m))
                any = (c->dom & ((2u << maxdays[m]) - 2)) != 0;
        if (!any) {
            struct field_err fe = {ntok - 2, F_DOM, err};
            ferr(&fe, "no selected day exists in the selected months, the schedule never fires");
            goto fail;
        }
    }
    return c;
fail:
    free(c);
    return NULL;
}

void cron_free(struct cron *c)
{
    free(c);
}

/* ---- next fire instant ------------------------------------------------- */

/* The lowest set bit of mask at position >= from, or -1. */
static int next_bit(uint64_t mask, int from)
{
    if (from >= 64)
        return -1;
    uint64_t m = mask >> from;
    return m ? from + __builtin_ctzll(m) : -1;
}

static bool leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int64_t y, int m)
{
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : dm[m - 1];
}

static bool day_matches(const struct cron *c, int d, int64_t days)
{
    bool dom = c->dom & (1u << d);
    bool dow = c->dow & (1u << (((days % 7) + 7 + 4) % 7)); /* 1970-01-01: Thursday */
    return c->dom_star || c->dow_star ? dom && dow : dom || dow;
}

/* The first local civil time (seconds since the epoch, read as UTC) >= from
 * that matches every field, or INT64_MAX if there is none before `limit`. */
static int64_t next_local(const struct cron *c, int64_t from, int64_t limit)
{
    int64_t days = floor_div(from, 86400), y;
    int64_t sod = from - days * 86400;
    int m, d, hh = (int)(sod / 3600), mi = (int)(sod / 60 % 60), ss = (int)(sod % 60);
    tz_civil_from_days(days, &y, &m, &d);
    for (;;) {
        if (days * 86400 >= limit)
            return INT64_MAX;
        if (!(c->mon & (1u << m))) {
            int nm = next_bit(c->mon, m + 1);
            if (nm < 0) {
                y++;
                nm = next_bit(c->mon, 1);
            }
            m = nm;
            d = 1;
            days = tz_days_from_civil(y, m, d);
            hh = mi = ss = 0;
            continue;
        }
        if (!day_matches(c, d, days)) {
            int nd = d + 1;
            if (c->dow_star) /* only day of month counts: jump to it */
                nd = next_bit(c->dom, d + 1);
            if (nd < 0 || nd > month_days(y, m)) {
                if (++m > 12) {
                    m = 1;
                    y++;
                }
                d = 1;
                days = tz_days_from_civil(y, m, d);
            } else {
                days += nd - d;
                d = nd;
            }
            hh = mi = ss = 0;
            continue;
        }
        int nh = next_bit(c->hour, hh);
        if (nh < 0) {
            hh = 24; /* next day */
        } else {
            if (nh != hh)
                mi = ss = 0;
            hh = nh;
            int nmi = next_bit(c->min, mi);
            if (nmi < 0) {
                hh++;
                mi = ss = 0;
            } else {
                if (nmi != mi)
                    ss = 0;
                mi = nmi;
                int nss = next_bit(c->sec, ss);
                if (nss >= 0)
                    return days * 86400 + hh * 3600 + mi * 60 + nss;
                ss = 0;
                if (++mi == 60) {
                    mi = 0;
                    hh++;
                }
            }
        }
        if (hh == 24) {
            hh = mi = ss = 0;
            if (++d > month_days(y, m)) {
                d = 1;
                if (++m > 12) {
                    m = 1;
                    y++;
                }
            }
            days++;
        }
    }
}

int64_t cron_next(const struct cron *c, const struct tz *z, int64_t after_ms)
{
    if (!c || !z)
        return -1;
    int64_t t = floor_div(after_ms, 1000) + 1;
    if (t < CRON_MIN_SECS || t > CRON_MAX_SECS)
        return -1;
    int64_t limit = t + CRON_HORIZON_SECS;
    /* The offset change that starts t's segment, if recent: t may lie in the
     * repeated hour of a fall-back. */
    int64_t seg_start = INT64_MIN;
    if (!c->hour_star) {
        for (int64_t n = tz_next_transition(z, t - 2 * 86400); n <= t;
             n = tz_next_transition(z, n))
            seg_start = n;
    }
    /* Rule 1 when t is the very instant of a spring-forward: the gap it
     * closes lies before t in local time, so the loop below, which starts at
     * t's own segment, would not see it (found by tests/fuzz/fuzz_cron). */
    if (!c->hour_star && seg_start == t) {
        int before = tz_offset_at(z, t - 1), now_off = tz_offset_at(z, t);
        if (now_off > before && next_local(c, t + before, t + now_off) < t + now_off)
            return t * 1000;
    }
    while (t < limit) {
        int off = tz_offset_at(z, t);
        int64_t seg_end = tz_next_transition(z, t);
        int64_t from = t + off;
        if (!c->hour_star && seg_start != INT64_MIN) {
            int prev = tz_offset_at(z, seg_start - 1);
            if (prev > off && seg_start + prev > from)
                from = seg_start + prev; /* rule 2: skip the repeated local times */
        }
        int64_t to = seg_end >= limit ? limit + off : seg_end + off;
        int64_t m = next_local(c, from, to + 2 * 86400);
        if (m < to) {
            int64_t r = m - off;
            return r < limit ? r * 1000 : -1;
        }
        if (seg_end >= limit)
            return -1;
        int off2 = tz_offset_at(z, seg_end);
        if (off2 > off && !c->hour_star && m < seg_end + off2)
            return seg_end * 1000; /* rule 1: a local time in the gap */
        seg_start = t = seg_end;
    }
    return -1;
}
