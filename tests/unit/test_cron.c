/* Unit tests for cron: strict parsing with clear messages, every syntax form,
 * and next fire instants in UTC, America/New_York, Europe/Berlin,
 * Asia/Kolkata and Australia/Lord_Howe across the 2026 DST changes and in
 * the far future (POSIX footer).  Expected instants were computed with an
 * independent brute-force reference over Python's zoneinfo. */
#include "t.h"

#include "cron.h"
#include "util.h"

#include <stdint.h>

static int64_t ms_of(const char *s)
{
    int64_t ms = 0;
    if (rfc3339_parse(s, &ms) != 0) {
        fprintf(stderr, "bad timestamp in test: %s\n", s);
        abort();
    }
    return ms;
}

/* Checks that expr in zone, from `after`, fires at exactly the instants of
 * `want` (RFC 3339 with the local offset, for readability), in order. */
static void expect_at(int line, const char *zone, const char *expr, const char *after,
                      const char *const *want, size_t n)
{
    char *err = NULL;
    const struct tz *z = tz_get(zone, &err);
    struct cron *c = z ? cron_parse(expr, &err) : NULL;
    if (!c) {
        fprintf(stderr, "  line %d: %s / \"%s\": %s\n", line, zone, expr, err);
        free(err);
        t_failed_checks++;
        return;
    }
    int64_t t = ms_of(after);
    for (size_t i = 0; i < n; i++) {
        int64_t got = cron_next(c, z, t), exp = ms_of(want[i]);
        if (got != exp) {
            char g[RFC3339_LEN];
            rfc3339_format(got, g);
            fprintf(stderr, "  line %d: %s \"%s\" fire %zu after %s: got %s, want %s\n", line,
                    zone, expr, i + 1, after, got < 0 ? "none" : g, want[i]);
            t_failed_checks++;
            break;
        }
        t = got;
    }
    cron_free(c);
}

#define EXPECT(zone, expr, after, ...)                                                \
    do {                                                                          \
        static const char *const w_[] = {__VA_ARGS__};                             \
        expect_at(__LINE__, zone, expr, after, w_, ARRAY_LEN(w_));                 \
    } while (0)

static void expect_err(int line, const char *expr, const char *want)
{
    char *err = NULL;
    struct cron *c = cron_parse(expr, &err);
    if (c || !err || strcmp(err, want) != 0) {
        fprintf(stderr, "  line %d: cron_parse(\"%s\") error \"%s\", want \"%s\"\n", line,
                expr, err ? err : "(accepted)", want);
        t_failed_checks++;
    }
    cron_free(c);
    free(err);
}
#define EXPECT_ERR(expr, want) expect_err(__LINE__, expr, want)

TEST(parse_errors)
{
    EXPECT_ERR("0 25 * * *", "field 2 (hour): value 25 out of range 0-23");
    EXPECT_ERR("60 * * * *", "field 1 (minute): value 60 out of range 0-59");
    EXPECT_ERR("* * 0 * *", "field 3 (day of month): value 0 out of range 1-31");
    EXPECT_ERR("* * 32 * *", "field 3 (day of month): value 32 out of range 1-31");
    EXPECT_ERR("* * * 13 *", "field 4 (month): value 13 out of range 1-12");
    EXPECT_ERR("* * * 0 *", "field 4 (month): value 0 out of range 1-12");
    EXPECT_ERR("* * * * 8", "field 5 (day of week): value 8 out of range 0-7");
    EXPECT_ERR("60 * * * * *", "field 1 (second): value 60 out of range 0-59");
    EXPECT_ERR("0 0 24 * * *", "field 3 (hour): value 24 out of range 0-23");
    EXPECT_ERR("*/0 * * * *", "field 1 (minute): step 0 out of range 1-60");
    EXPECT_ERR("0 */25 * * *", "field 2 (hour): step 25 out of range 1-24");
    EXPECT_ERR("*/x * * * *", "field 1 (minute): invalid step \"x\"");
    EXPECT_ERR("1-5/ * * * *", "field 1 (minute): invalid step \"\"");
    EXPECT_ERR("5-2 * * * *", "field 1 (minute): range 5-2: start is after end");
    EXPECT_ERR("1,,2 * * * *", "field 1 (minute): empty element in list");
    EXPECT_ERR("1, * * * *", "field 1 (minute): empty element in list");
    EXPECT_ERR(",1 * * * *", "field 1 (minute): empty element in list");
    EXPECT_ERR("abc * * * *", "field 1 (minute): invalid value \"abc\"");
    EXPECT_ERR("-1 * * * *", "field 1 (minute): missing value");
    EXPECT_ERR("1- * * * *", "field 1 (minute): missing value");
    EXPECT_ERR("1.5 * * * *", "field 1 (minute): invalid value \"1.5\"");
    EXPECT_ERR("99999999999 * * * *", "field 1 (minute): invalid value \"99999999999\"");
    EXPECT_ERR("MON * * * *", "field 1 (minute): invalid value \"MON\"");
    EXPECT_ERR("* * * FOO *",
               "field 4 (month): invalid value \"FOO\" (expected a number or a name such as JAN)");
    EXPECT_ERR("* * * * MONDAY",
               "field 5 (day of week): invalid value \"MONDAY\" (expected a number or a name "
               "such as MON)");
    EXPECT_ERR("* * * JAN-FOO *",
               "field 4 (month): invalid value \"FOO\" (expected a number or a name such as JAN)");
    EXPECT_ERR("", "empty cron expression");
    EXPECT_ERR("   \t ", "empty cron expression");
    EXPECT_ERR("* * * *", "expected 5 fields (minute hour day-of-month month day-of-week) or 6 "
                          "(with seconds first), got 4");
    EXPECT_ERR("* * * * * * *", "expected 5 fields (minute hour day-of-month month "
                                "day-of-week) or 6 (with seconds first), got 7");
    EXPECT_ERR("* * * * *\n", "cron expression contains a control character");
    EXPECT_ERR("@every 5m", "macro \"@every\" must be the whole expression");
    EXPECT_ERR("@every", "unknown macro \"@every\" (expected @yearly, @annually, @monthly, "
                         "@weekly, @daily, @midnight or @hourly)");
    EXPECT_ERR("0 0 30 2 *", "field 3 (day of month): no selected day exists in the selected "
                             "months, the schedule never fires");
    EXPECT_ERR("0 0 0 31 4,6 *", "field 4 (day of month): no selected day exists in the "
                                 "selected months, the schedule never fires");

    char *err = NULL;
    CHECK(cron_parse(NULL, &err) == NULL);
    CHECK_EQ_STR(err, "empty cron expression");
    free(err);
    char big[CRON_EXPR_MAX + 10];
    memset(big, '1', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    err = NULL;
    CHECK(cron_parse(big, &err) == NULL);
    CHECK(err != NULL && strstr(err, "longer than") != NULL);
    free(err);
}

TEST(syntax_forms_utc)
{
    EXPECT("UTC", "*/15 * * * *", "2026-01-01T00:00:00Z", "2026-01-01T00:15:00Z",
           "2026-01-01T00:30:00Z", "2026-01-01T00:45:00Z", "2026-01-01T01:00:00Z");
    EXPECT("UTC", "* * * * *", "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z",
           "2026-01-01T00:02:00Z");
    EXPECT("UTC", "0 9-17/4 * * MON-FRI", "2026-01-01T00:00:00Z", "2026-01-01T09:00:00Z",
           "2026-01-01T13:00:00Z", "2026-01-01T17:00:00Z", "2026-01-02T09:00:00Z",
           "2026-01-02T13:00:00Z");
    EXPECT("UTC", "30 10 1,15 JAN,jul *", "2026-01-01T00:00:00Z", "2026-01-01T10:30:00Z",
           "2026-01-15T10:30:00Z", "2026-07-01T10:30:00Z", "2026-07-15T10:30:00Z");
    EXPECT("UTC", "15/20 * * * *", "2026-01-01T00:00:00Z", "2026-01-01T00:15:00Z",
           "2026-01-01T00:35:00Z", "2026-01-01T00:55:00Z", "2026-01-01T01:15:00Z");
    EXPECT("UTC", "0 0 * jan-Mar mon", "2026-01-01T00:00:00Z", "2026-01-05T00:00:00Z",
           "2026-01-12T00:00:00Z");
    EXPECT("UTC", "0 12 * * 7", "2026-01-01T00:00:00Z", "2026-01-04T12:00:00Z",
           "2026-01-11T12:00:00Z");
    EXPECT("UTC", "0 12 * * sun", "2026-01-01T00:00:00Z", "2026-01-04T12:00:00Z");
    EXPECT("UTC", "0 0 * * 5-7", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z",
           "2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z", "2026-01-09T00:00:00Z");
    EXPECT("UTC", "5,10-12,50-59/5 3 * * *", "2026-01-01T00:00:00Z", "2026-01-01T03:05:00Z",
           "2026-01-01T03:10:00Z", "2026-01-01T03:11:00Z", "2026-01-01T03:12:00Z",
           "2026-01-01T03:50:00Z", "2026-01-01T03:55:00Z", "2026-01-02T03:05:00Z");
    /* Seconds. */
    EXPECT("UTC", "*/10 * * * * *", "2026-01-01T00:00:00.5Z", "2026-01-01T00:00:10Z",
           "2026-01-01T00:00:20Z", "2026-01-01T00:00:30Z");
    EXPECT("UTC", "30 0 12 * * *", "2026-01-01T00:00:00Z", "2026-01-01T12:00:30Z",
           "2026-01-02T12:00:30Z");
    EXPECT("UTC", "58-59 59 23 31 12 *", "2026-06-01T00:00:00Z", "2026-12-31T23:59:58Z",
           "2026-12-31T23:59:59Z", "2027-12-31T23:59:58Z");
    /* Leap day. */
    EXPECT("UTC", "0 0 29 2 *", "2026-01-01T00:00:00Z", "2028-02-29T00:00:00Z",
           "2032-02-29T00:00:00Z");
}

/* crontab(5): both restricted means either; one starting with `*` means both. */
TEST(dom_dow_rule)
{
    EXPECT("UTC", "0 0 13 * FRI", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z",
           "2026-01-09T00:00:00Z", "2026-01-13T00:00:00Z", "2026-01-16T00:00:00Z",
           "2026-01-23T00:00:00Z");
    EXPECT("UTC", "0 0 */10 * MON", "2026-01-01T00:00:00Z", "2026-05-11T00:00:00Z",
           "2026-06-01T00:00:00Z", "2026-08-31T00:00:00Z");
    EXPECT("UTC", "0 0 13 * *", "2026-01-01T00:00:00Z", "2026-01-13T00:00:00Z",
           "2026-02-13T00:00:00Z");
}

TEST(macros)
{
    const char *after = "2026-01-01T00:00:00Z";
    EXPECT("UTC", "@yearly", after, "2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z");
    EXPECT("UTC", "@annually", after, "2027-01-01T00:00:00Z");
    EXPECT("UTC", "@monthly", after, "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z");
    EXPECT("UTC", "@weekly", after, "2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z");
    EXPECT("UTC", "@daily", after, "2026-01-02T00:00:00Z");
    EXPECT("UTC", "@midnight", after, "2026-01-02T00:00:00Z");
    EXPECT("UTC", "@hourly", after, "2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z");
    EXPECT("UTC", "  @DAILY  ", after, "2026-01-02T00:00:00Z");
}

TEST(strictly_after)
{
    EXPECT("UTC", "0 * * * *", "2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z");
    EXPECT("UTC", "0 * * * *", "2026-01-01T01:00:00.999Z", "2026-01-01T02:00:00Z");
    EXPECT("UTC", "0 * * * *", "2026-01-01T00:59:59.999Z", "2026-01-01T01:00:00Z");
    EXPECT("UTC", "* * * * * *", "2026-01-01T00:00:00.999Z", "2026-01-01T00:00:01Z");
    EXPECT("UTC", "0 0 1 1 *", "1969-12-31T23:59:59.999Z", "1970-01-01T00:00:00Z");
}

TEST(none_within_five_years)
{
    char *err = NULL;
    struct cron *c = cron_parse("0 0 29 2 *", &err);
    const struct tz *utc = tz_get("UTC", &err);
    CHECK(c && utc);
    if (!c || !utc)
        return;
    /* 2100 is not a leap year: after 2096 the next 29 February is in 2104. */
    CHECK_EQ_INT(cron_next(c, utc, ms_of("2096-03-01T00:00:00Z")), -1);
    CHECK_EQ_INT(cron_next(c, utc, ms_of("2099-03-01T00:00:00Z")), ms_of("2104-02-29T00:00:00Z"));
    CHECK_EQ_INT(cron_next(NULL, utc, 0), -1);
    CHECK_EQ_INT(cron_next(c, NULL, 0), -1);
    CHECK_EQ_INT(cron_next(c, utc, INT64_MAX), -1);
    CHECK_EQ_INT(cron_next(c, utc, INT64_MIN), -1);
    cron_free(c);
    cron_free(NULL);
}

/* America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST. */
TEST(new_york_spring_forward)
{
    const char *ny = "America/New_York";
    /* Rule 1: a fixed time in the gap fires once, at 03:00 EDT. */
    EXPECT(ny, "30 2 * * *", "2026-03-07T12:00:00-05:00", "2026-03-08T03:00:00-04:00",
           "2026-03-09T02:30:00-04:00");
    EXPECT(ny, "0 30 2 * * *", "2026-03-07T12:00:00-05:00", "2026-03-08T03:00:00-04:00",
           "2026-03-09T02:30:00-04:00");
    /* ... also when asked from the last instant before the jump (the gap
     * then lies just before the search's start; found by fuzz_cron) */
    EXPECT(ny, "30 2 * * *", "2026-03-08T01:59:59.999-05:00", "2026-03-08T03:00:00-04:00",
           "2026-03-09T02:30:00-04:00");
    EXPECT(ny, "0 3 * * *", "2026-03-08T01:59:59.999-05:00", "2026-03-08T03:00:00-04:00",
           "2026-03-09T03:00:00-04:00");
    /* Several times in the gap still fire once. */
    EXPECT(ny, "*/15 2 * * *", "2026-03-08T00:00:00-05:00", "2026-03-08T03:00:00-04:00",
           "2026-03-09T02:00:00-04:00");
    EXPECT(ny, "0 3 * * *", "2026-03-08T00:00:00-05:00", "2026-03-08T03:00:00-04:00",
           "2026-03-09T03:00:00-04:00");
    /* Hour wildcards follow real instants. */
    EXPECT(ny, "*/15 * * * *", "2026-03-08T01:30:00-05:00", "2026-03-08T01:45:00-05:00",
           "2026-03-08T03:00:00-04:00", "2026-03-08T03:15:00-04:00");
    EXPECT(ny, "30 * * * *", "2026-03-08T00:45:00-05:00", "2026-03-08T01:30:00-05:00",
           "2026-03-08T03:30:00-04:00");
}

TEST(new_york_fall_back)
{
    const char *ny = "America/New_York";
    /* Rule 2: a fixed time in the repeated hour fires once, at the first (EDT). */
    EXPECT(ny, "30 1 * * *", "2026-10-31T12:00:00-04:00", "2026-11-01T01:30:00-04:00",
           "2026-11-02T01:30:00-05:00");
    EXPECT(ny, "30 1 * * *", "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00");
    EXPECT(ny, "30 1 * * *", "2026-11-01T01:10:00-05:00", "2026-11-02T01:30:00-05:00");
    EXPECT(ny, "0 2 * * *", "2026-10-31T12:00:00-04:00", "2026-11-01T02:00:00-05:00");
    EXPECT(ny, "*/20 1 * * *", "2026-11-01T01:30:00-04:00", "2026-11-01T01:40:00-04:00",
           "2026-11-02T01:00:00-05:00");
    /* Hour wildcards fire in both occurrences. */
    EXPECT(ny, "*/30 * * * *", "2026-11-01T00:45:00-04:00", "2026-11-01T01:00:00-04:00",
           "2026-11-01T01:30:00-04:00", "2026-11-01T01:00:00-05:00",
           "2026-11-01T01:30:00-05:00", "2026-11-01T02:00:00-05:00");
}

/* Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET. */
TEST(berlin_dst)
{
    const char *b = "Europe/Berlin";
    EXPECT(b, "30 2 * * *", "2026-03-28T12:00:00+01:00", "2026-03-29T03:00:00+02:00",
           "2026-03-30T02:30:00+02:00");
    EXPECT(b, "*/20 * * * *", "2026-03-29T01:30:00+01:00", "2026-03-29T01:40:00+01:00",
           "2026-03-29T03:00:00+02:00", "2026-03-29T03:20:00+02:00");
    EXPECT(b, "30 2 * * *", "2026-10-24T12:00:00+02:00", "2026-10-25T02:30:00+02:00",
           "2026-10-26T02:30:00+01:00");
    EXPECT(b, "0 * * * *", "2026-10-25T01:30:00+02:00", "2026-10-25T02:00:00+02:00",
           "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00");
    EXPECT(b, "0 0 9 * * MON-FRI", "2026-03-27T10:00:00+01:00", "2026-03-30T09:00:00+02:00");
}

TEST(kolkata_and_lord_howe)
{
    EXPECT("Asia/Kolkata", "0 9 * * *", "2026-01-01T00:00:00Z", "2026-01-01T09:00:00+05:30",
           "2026-01-02T09:00:00+05:30");
    EXPECT("Asia/Kolkata", "*/45 * * * *", "2026-01-01T00:00:00Z",
           "2026-01-01T05:45:00+05:30", "2026-01-01T06:00:00+05:30",
           "2026-01-01T06:45:00+05:30");
    /* Half-hour DST: 2026-10-04 02:00 -> 02:30. */
    EXPECT("Australia/Lord_Howe", "15 2 * * *", "2026-10-03T12:00:00+10:30",
           "2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00");
}

/* Past 2037 only the TZif footer's POSIX rule gives the transitions. */
TEST(far_future_footer)
{
    EXPECT("America/New_York", "30 2 * * *", "2100-03-13T12:00:00-05:00",
           "2100-03-14T03:00:00-04:00", "2100-03-15T02:30:00-04:00");
    EXPECT("America/New_York", "30 1 * * *", "2100-11-06T12:00:00-04:00",
           "2100-11-07T01:30:00-04:00", "2100-11-08T01:30:00-05:00");
    EXPECT("Europe/Berlin", "30 2 * * *", "2150-03-28T00:00:00+01:00",
           "2150-03-28T02:30:00+01:00", "2150-03-29T03:00:00+02:00",
           "2150-03-30T02:30:00+02:00");
}

/* Walking a year of a 15-minute schedule in New York gives strictly growing
 * instants, 15 real minutes apart except across the spring gap, where one
 * step is also 15 minutes (01:45 EST to 03:00 EDT). */
TEST(year_walk_is_monotonic)
{
    char *err = NULL;
    struct cron *c = cron_parse("*/15 * * * *", &err);
    const struct tz *z = tz_get("America/New_York", &err);
    CHECK(c && z);
    if (!c || !z)
        return;
    int64_t t = ms_of("2026-01-01T00:00:00Z"), end = ms_of("2027-01-01T00:00:00Z");
    int n = 0, bad = 0;
    while (t < end) {
        int64_t nx = cron_next(c, z, t);
        if (nx - t != 15 * 60000 && n > 0)
            bad++;
        t = nx;
        n++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(n, 365 * 96);
    cron_free(c);
}

TEST(zz_cleanup)
{
    tz_cache_free();
}
