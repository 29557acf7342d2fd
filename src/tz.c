/*
 * tz — IANA time zones parsed from TZif files (RFC 8536), by hand.
 *
 * A zone is a sorted table of transitions (UTC instants), each naming a local
 * time type (UTC offset, DST flag, abbreviation), plus, for version 2+ files,
 * the POSIX TZ string of the footer ("EST5EDT,M3.2.0,M11.1.0") that gives
 * the rule for every instant after the last transition — the table of "slim"
 * files ends in the 2000s and that of "fat" ones in 2037, so future dates
 * depend on the footer.  Version 1 files (32-bit) are read as such; for v2+
 * the 64-bit block is used.  Leap-second records ("right/" zones) are
 * skipped: quern counts POSIX seconds.
 *
 * Security: a zone name comes from users, so it is checked strictly
 * (characters [A-Za-z0-9_+-/], no "..", no leading "/", at most TZ_NAME_MAX
 * bytes) before it is joined to the zoneinfo directory, and the file must be
 * a regular file of bounded size that starts with "TZif".
 *
 * Threading: the cache is a singly linked list behind one mutex.  Zones are
 * never modified after they are published, so lookups on a zone need no
 * lock.  A file is read outside the lock; if two threads load the same zone
 * at once, the second one's copy is discarded.  Failed lookups are not cached
 * (a stream of bad names must not grow memory).
 */
#include "tz.h"

#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TZ_ABBR_MAX 16
#define TZ_FILE_MAX (1u << 20)
#define TZ_DEFAULT_DIR "/usr/share/zoneinfo"
/* Instants are clamped to ±2^56 s (2 billion years) so arithmetic on them
 * cannot overflow. */
#define TZ_T_LIMIT (INT64_C(1) << 56)
/* Offsets beyond ±26 h are not real time zones; refuse them. */
#define TZ_OFF_LIMIT (26 * 3600)

struct tz_type {
    int32_t utoff;
    bool isdst;
    char abbr[TZ_ABBR_MAX];
};

/* One end of a DST period in a POSIX TZ string. */
enum rule_kind { RULE_JULIAN1, RULE_JULIAN0, RULE_MWD };
struct rule_date {
    enum rule_kind kind;
    int n;      /* Jn: 1-365; n: 0-365 */
    int m, w, d;/* Mm.w.d: month 1-12, week 1-5, weekday 0-6 */
    int32_t time; /* seconds after local midnight, may be negative or > 24 h */
};

struct posix_rule {
    struct tz_type std, dst;
    bool has_dst;
    struct rule_date start, end;
};

struct tz {
    struct tz *next;
    char name[TZ_NAME_MAX + 1];
    size_t ntrans;
    int64_t *trans;
    uint8_t *tidx;
    size_t ntypes;
    struct tz_type *types;
    bool has_rule;
    struct posix_rule rule;
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tz *cache_head;

static struct tz utc_zone = {
    .name = "UTC",
    .ntypes = 1,
    .types = (struct tz_type[]){{0, false, "UTC"}},
};

/* ---- civil calendar (Howard Hinnant's algorithms) ---------------------- */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
        q--;
    return q;
}

int64_t tz_days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void tz_civil_from_days(int64_t days, int64_t *y, int *m, int *d)
{
    days += 719468;
    int64_t era = floor_div(days, 146097);
    int64_t doe = days - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : dm[m - 1];
}

/* ---- POSIX TZ string (the TZif footer) --------------------------------- */

static bool parse_abbr(const char **pp, char out[TZ_ABBR_MAX])
{
    const char *p = *pp;
    size_t n = 0;
    if (*p == '<') {
        p++;
        while (*p && *p != '>') {
            if (!(isalnum((unsigned char)*p) || *p == '+' || *p == '-'))
                return false;
            if (n + 1 < TZ_ABBR_MAX)
                out[n++] = *p;
            p++;
        }
        if (*p != '>')
            return false;
        p++;
    } else {
        while (isalpha((unsigned char)*p)) {
            if (n + 1 < TZ_ABBR_MAX)
                out[n++] = *p;
            p++;
        }
    }
    if (n < 3)
        return false;
    out[n] = '\0';
    *pp = p;
    return true;
}

static bool parse_num(const char **pp, int min, int max, int *out)
{
    const char *p = *pp;
    int v = 0, digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 4) {
        v = v * 10 + (*p - '0');
        p++;
        digits++;
    }
    if (!digits || (*p >= '0' && *p <= '9') || v < min || v > max)
        return false;
    *out = v;
    *pp = p;
    return true;
}

/* [+-]hh[:mm[:ss]] with hh up to `maxh`; seconds, sign applied. */
static bool parse_hms(const char **pp, int maxh, int32_t *out)
{
    const char *p = *pp;
    int sign = 1, h, mi = 0, s = 0;
    if (*p == '+' || *p == '-')
        sign = *p++ == '-' ? -1 : 1;
    if (!parse_num(&p, 0, maxh, &h))
        return false;
    if (*p == ':') {
        p++;
        if (!parse_num(&p, 0, 59, &mi))
            return false;
        if (*p == ':') {
            p++;
            if (!parse_num(&p, 0, 59, &s))
                return false;
        }
    }
    *out = sign * (h * 3600 + mi * 60 + s);
    *pp = p;
    return true;
}

static bool parse_rule_date(const char **pp, struct rule_date *r)
{
    const char *p = *pp;
    if (*p == 'J') {
        p++;
        r->kind = RULE_JULIAN1;
        if (!parse_num(&p, 1, 365, &r->n))
            return false;
    } else if (*p == 'M') {
        p++;
        r->kind = RULE_MWD;
        if (!parse_num(&p, 1, 12, &r->m) || *p++ != '.' || !parse_num(&p, 1, 5, &r->w) ||
            *p++ != '.' || !parse_num(&p, 0, 6, &r->d))
            return false;
    } else {
        r->kind = RULE_JULIAN0;
        if (!parse_num(&p, 0, 365, &r->n))
            return false;
    }
    r->time = 2 * 3600;
    if (*p == '/') {
        p++;
        if (!parse_hms(&p, 167, &r->time))
            return false;
    }
    *pp = p;
    return true;
}

/* Parses a POSIX TZ string such as "CET-1CEST,M3.5.0,M10.5.0/3".  POSIX
 * offsets count west as positive; they are stored east-positive. */
static bool parse_posix(const char *s, struct posix_rule *r)
{
    const char *p = s;
    int32_t off;
    memset(r, 0, sizeof(*r));
    if (!parse_abbr(&p, r->std.abbr) || !parse_hms(&p, 24, &off))
        return false;
    r->std.utoff = -off;
    if (!*p)
        return true;
    if (!parse_abbr(&p, r->dst.abbr))
        return false;
    r->has_dst = true;
    r->dst.isdst = true;
    r->dst.utoff = r->std.utoff + 3600;
    if (*p && *p != ',') {
        if (!parse_hms(&p, 24, &off))
            return false;
        r->dst.utoff = -off;
    }
    if (!*p) {
        /* No rule: POSIX leaves it to the implementation; use the US one. */
        r->start = (struct rule_date){RULE_MWD, 0, 3, 2, 0, 7200};
        r->end = (struct rule_date){RULE_MWD, 0, 11, 1, 0, 7200};
        return true;
    }
    if (*p++ != ',' || !parse_rule_date(&p, &r->start) || *p++ != ',' ||
        !parse_rule_date(&p, &r->end) || *p)
        return false;
    return true;
}

/* Day number (since the epoch) of a rule date in year y. */
static int64_t rule_day(const struct rule_date *r, int64_t y)
{
    int64_t jan1 = tz_days_from_civil(y, 1, 1);
    switch (r->kind) {
    case RULE_JULIAN1:
        return jan1 + r->n - 1 + (is_leap(y) && r->n >= 60);
    case RULE_JULIAN0:
        return jan1 + r->n;
    case RULE_MWD:
    default: {
        int64_t first = tz_days_from_civil(y, r->m, 1);
        int wday_first = (int)(((first % 7) + 7 + 4) % 7); /* 1970-01-01 was a Thursday */
        int day = 1 + (r->d - wday_first + 7) % 7 + (r->w - 1) * 7;
        while (day > days_in_month(y, r->m))
            day -= 7;
        return first + day - 1;
    }
    }
}

/* UTC instants at which DST starts and ends in year y. */
static void rule_year(const struct posix_rule *r, int64_t y, int64_t *start, int64_t *end)
{
    *start = rule_day(&r->start, y) * 86400 + r->start.time - r->std.utoff;
    *end = rule_day(&r->end, y) * 86400 + r->end.time - r->dst.utoff;
}

static const struct tz_type *rule_type(const struct posix_rule *r, int64_t t)
{
    if (!r->has_dst)
        return &r->std;
    int64_t y, start, end;
    int m, d;
    tz_civil_from_days(floor_div(t + r->std.utoff, 86400), &y, &m, &d);
    rule_year(r, y, &start, &end);
    bool dst = start < end ? (t >= start && t < end) : !(t >= end && t < start);
    return dst ? &r->dst : &r->std;
}

/* ---- lookups ----------------------------------------------------------- */

static const struct tz_type *type_at(const struct tz *z, int64_t t)
{
    t = t < -TZ_T_LIMIT ? -TZ_T_LIMIT : t > TZ_T_LIMIT ? TZ_T_LIMIT : t;
    if (z->ntrans == 0 || t < z->trans[0]) {
        if (z->ntrans == 0 && z->has_rule)
            return rule_type(&z->rule, t);
        return &z->types[0];
    }
    if (t >= z->trans[z->ntrans - 1] && z->has_rule)
        return rule_type(&z->rule, t);
    size_t lo = 0, hi = z->ntrans; /* largest i with trans[i] <= t */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (z->trans[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    return &z->types[z->tidx[lo]];
}

const char *tz_name(const struct tz *z)
{
    return z->name;
}

int tz_offset_at(const struct tz *z, int64_t utc_secs)
{
    return type_at(z, utc_secs)->utoff;
}

void tz_localtime(const struct tz *z, int64_t utc_secs, struct tm *out)
{
    utc_secs = utc_secs < -TZ_T_LIMIT ? -TZ_T_LIMIT
             : utc_secs > TZ_T_LIMIT  ? TZ_T_LIMIT
                                      : utc_secs;
    const struct tz_type *tt = type_at(z, utc_secs);
    int64_t local = utc_secs + tt->utoff;
    int64_t days = floor_div(local, 86400), secs = local - days * 86400, y;
    int m, d;
    tz_civil_from_days(days, &y, &m, &d);
    memset(out, 0, sizeof(*out));
    out->tm_year = (int)(y - 1900);
    out->tm_mon = m - 1;
    out->tm_mday = d;
    out->tm_hour = (int)(secs / 3600);
    out->tm_min = (int)(secs / 60 % 60);
    out->tm_sec = (int)(secs % 60);
    out->tm_wday = (int)(((days % 7) + 7 + 4) % 7);
    out->tm_yday = (int)(days - tz_days_from_civil(y, 1, 1));
    out->tm_isdst = tt->isdst;
    out->tm_gmtoff = tt->utoff;
    out->tm_zone = tt->abbr;
}

/* Next instant > t at which the footer rule changes the offset. */
static int64_t rule_next(const struct posix_rule *r, int64_t t)
{
    if (!r->has_dst || r->std.utoff == r->dst.utoff)
        return INT64_MAX;
    int64_t y, best = INT64_MAX;
    int m, d;
    tz_civil_from_days(floor_div(t + r->std.utoff, 86400), &y, &m, &d);
    for (int64_t yy = y - 1; yy <= y + 2; yy++) {
        int64_t c[2];
        rule_year(r, yy, &c[0], &c[1]);
        for (int i = 0; i < 2; i++)
            if (c[i] > t && c[i] < best &&
                rule_type(r, c[i] - 1)->utoff != rule_type(r, c[i])->utoff)
                best = c[i];
    }
    return best;
}

int64_t tz_next_transition(const struct tz *z, int64_t utc_secs)
{
    if (utc_secs >= TZ_T_LIMIT)
        return INT64_MAX;
    if (utc_secs < -TZ_T_LIMIT)
        utc_secs = -TZ_T_LIMIT;
    int32_t cur = type_at(z, utc_secs)->utoff;
    int64_t t = utc_secs;
    /* Table transitions after t (they may only change the abbreviation). */
    if (z->ntrans && t < z->trans[z->ntrans - 1]) {
        size_t lo = 0, hi = z->ntrans; /* first i with trans[i] > t */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (z->trans[mid] <= t)
                lo = mid + 1;
            else
                hi = mid;
        }
        for (size_t i = lo; i < z->ntrans; i++)
            if (type_at(z, z->trans[i])->utoff != cur)
                return z->trans[i];
        t = z->trans[z->ntrans - 1];
    }
    if (!z->has_rule)
        return INT64_MAX;
    /* Past the table, the footer rule; the rule's DST may have started
     * before the table ended, so compare with the current offset. */
    for (int guard = 0; guard < 8; guard++) {
        int64_t n = rule_next(&z->rule, t);
        if (n == INT64_MAX || rule_type(&z->rule, n)->utoff != cur)
            return n;
        t = n;
    }
    return INT64_MAX;
}

/* ---- loading ----------------------------------------------------------- */

static bool name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > TZ_NAME_MAX || name[0] == '/' || strstr(name, ".."))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!(isalnum((unsigned char)c) || c == '_' || c == '+' || c == '-' || c == '/'))
            return false;
        if (c == '/' && (name[i + 1] == '/' || name[i + 1] == '\0'))
            return false;
    }
    return true;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

struct tzif_hdr {
    int version;
    uint32_t isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;
};

static bool read_hdr(const unsigned char *p, size_t len, struct tzif_hdr *h)
{
    if (len < 44 || memcmp(p, "TZif", 4) != 0)
        return false;
    h->version = p[4] ? p[4] - '0' : 1;
    h->isutcnt = be32(p + 20);
    h->isstdcnt = be32(p + 24);
    h->leapcnt = be32(p + 28);
    h->timecnt = be32(p + 32);
    h->typecnt = be32(p + 36);
    h->charcnt = be32(p + 40);
    /* Bounds keep the size arithmetic below far from overflow. */
    return h->timecnt <= 100000 && h->typecnt >= 1 && h->typecnt <= 256 &&
           h->charcnt <= 4096 && h->leapcnt <= 10000 && h->isutcnt <= 256 &&
           h->isstdcnt <= 256 && (h->isutcnt == 0 || h->isutcnt == h->typecnt) &&
           (h->isstdcnt == 0 || h->isstdcnt == h->typecnt);
}

static size_t block_len(const struct tzif_hdr *h, size_t tsize)
{
    return h->timecnt * tsize + h->timecnt + h->typecnt * 6 + h->charcnt +
           h->leapcnt * (tsize + 4) + h->isstdcnt + h->isutcnt;
}

static void zone_free(struct tz *z)
{
    if (!z || z == &utc_zone)
        return;
    free(z->trans);
    free(z->tidx);
    free(z->types);
    free(z);
}

/* Parses a TZif image into a new zone; NULL if it is malformed. */
static struct tz *parse_tzif(const char *name, const unsigned char *p, size_t len)
{
    struct tzif_hdr h;
    struct tz *z = NULL;
    size_t tsize = 4;
    if (!read_hdr(p, len, &h))
        return NULL;
    if (h.version >= 2) {
        size_t skip = 44 + block_len(&h, 4);
        if (skip >= len || !read_hdr(p + skip, len - skip, &h))
            return NULL;
        p += skip;
        len -= skip;
        tsize = 8;
    }
    size_t need = 44 + block_len(&h, tsize);
    if (need > len)
        return NULL;
    const unsigned char *q = p + 44;
    z = xcalloc(1, sizeof(*z));
    snprintf(z->name, sizeof(z->name), "%s", name);
    z->ntrans = h.timecnt;
    z->ntypes = h.typecnt;
    z->trans = xcalloc(h.timecnt, sizeof(*z->trans));
    z->tidx = xcalloc(h.timecnt, 1);
    z->types = xcalloc(h.typecnt, sizeof(*z->types));
    for (size_t i = 0; i < h.timecnt; i++, q += tsize) {
        z->trans[i] = tsize == 8 ? be64(q) : (int32_t)be32(q);
        if (i && z->trans[i] <= z->trans[i - 1])
            goto bad;
    }
    for (size_t i = 0; i < h.timecnt; i++, q++) {
        if (*q >= h.typecnt)
            goto bad;
        z->tidx[i] = *q;
    }
    const unsigned char *types = q, *chars = q + h.typecnt * 6;
    for (size_t i = 0; i < h.typecnt; i++) {
        const unsigned char *t = types + i * 6;
        int32_t off = (int32_t)be32(t);
        if (off <= -TZ_OFF_LIMIT || off >= TZ_OFF_LIMIT || t[4] > 1 || t[5] >= h.charcnt)
            goto bad;
        z->types[i].utoff = off;
        z->types[i].isdst = t[4];
        size_t n = strnlen((const char *)chars + t[5], h.charcnt - t[5]);
        if (n >= TZ_ABBR_MAX)
            n = TZ_ABBR_MAX - 1;
        memcpy(z->types[i].abbr, chars + t[5], n);
    }
    if (h.version >= 2 && need < len && p[need] == '\n') {
        const char *f = (const char *)p + need + 1;
        const char *nl = memchr(f, '\n', len - need - 1);
        if (!nl || nl - f > 256)
            goto bad;
        if (nl > f) {
            char footer[257];
            memcpy(footer, f, (size_t)(nl - f));
            footer[nl - f] = '\0';
            if (!parse_posix(footer, &z->rule))
                goto bad;
            z->has_rule = true;
        }
    }
    return z;
bad:
    zone_free(z);
    return NULL;
}

static struct tz *load_zone(const char *name, char **err)
{
    const char *dir = getenv("TZDIR");
    char *path = xasprintf("%s/%s", dir && *dir ? dir : TZ_DEFAULT_DIR, name);
    unsigned char *data = NULL;
    struct tz *z = NULL;
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            *err = xasprintf("unknown time zone \"%s\"", name);
        else
            *err = xasprintf("time zone \"%s\": %s", name, strerror(errno));
        goto out;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
        (size_t)st.st_size > TZ_FILE_MAX) {
        *err = xasprintf("unknown time zone \"%s\"", name);
        goto out;
    }
    size_t len = (size_t)st.st_size, got = 0;
    data = xmalloc(len);
    while (got < len) {
        ssize_t n = read(fd, data + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *err = xasprintf("time zone \"%s\": read failed", name);
            goto out;
        }
        got += (size_t)n;
    }
    z = parse_tzif(name, data, len);
    if (!z)
        *err = xasprintf("time zone \"%s\": not a valid TZif file", name);
out:
    if (fd >= 0)
        close(fd);
    free(data);
    free(path);
    return z;
}

static struct tz *cache_find(const char *name)
{
    for (struct tz *z = cache_head; z; z = z->next)
        if (strcmp(z->name, name) == 0)
            return z;
    return NULL;
}

const struct tz *tz_get(const char *name, char **err)
{
    *err = NULL;
    if (!name || !name_ok(name)) {
        *err = xasprintf("invalid time zone name \"%.80s\"", name ? name : "");
        return NULL;
    }
    if (strcmp(name, "UTC") == 0 || strcmp(name, "Etc/UTC") == 0)
        return &utc_zone;
    pthread_mutex_lock(&cache_lock);
    struct tz *z = cache_find(name);
    pthread_mutex_unlock(&cache_lock);
    if (z)
        return z;
    struct tz *fresh = load_zone(name, err);
    if (!fresh)
        return NULL;
    pthread_mutex_lock(&cache_lock);
    z = cache_find(name);
    if (!z) {
        fresh->next = cache_head;
        cache_head = z = fresh;
        fresh = NULL;
    }
    pthread_mutex_unlock(&cache_lock);
    zone_free(fresh);
    return z;
}

void tz_cache_free(void)
{
    pthread_mutex_lock(&cache_lock);
    struct tz *z = cache_head;
    cache_head = NULL;
    pthread_mutex_unlock(&cache_lock);
    while (z) {
        struct tz *next = z->next;
        zone_free(z);
        z = next;
    }
}
