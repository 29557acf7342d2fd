#include "t.h"
#include "util.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

TEST(rfc3339_roundtrip)
{
    char s[RFC3339_LEN];
    rfc3339_format(1795383722123LL, s);
    CHECK_EQ_STR(s, "2026-11-22T21:42:02.123Z");
    int64_t ms = 0;
    CHECK_EQ_INT(rfc3339_parse(s, &ms), 0);
    CHECK_EQ_INT(ms, 1795383722123LL);
    CHECK_EQ_INT(rfc3339_parse("2026-11-22T22:42:02+01:00", &ms), 0);
    CHECK_EQ_INT(ms, 1795383722000LL);
}

TEST(rfc3339_rejects_garbage)
{
    int64_t ms;
    CHECK(rfc3339_parse("", &ms) < 0);
    CHECK(rfc3339_parse("2026-13-01T00:00:00Z", &ms) < 0);
    CHECK(rfc3339_parse("2026-02-30T00:00:00Z", &ms) < 0);
    CHECK(rfc3339_parse("2026-01-01T00:00:00", &ms) < 0);
    CHECK(rfc3339_parse("2026-01-01T00:00:00Zjunk", &ms) < 0);
    CHECK(rfc3339_parse("tomorrow", &ms) < 0);
}

TEST(ids_are_prefixed_and_unique)
{
    char a[ID_LEN], b[ID_LEN];
    id_new("task", a);
    id_new("task", b);
    CHECK(strncmp(a, "task_", 5) == 0);
    CHECK_EQ_INT(strlen(a), 27);
    CHECK(strcmp(a, b) != 0);
}

TEST(buf_grows)
{
    struct buf b;
    buf_init(&b);
    for (int i = 0; i < 1000; i++)
        buf_printf(&b, "%d,", i);
    CHECK(b.len > 3000);
    CHECK(strncmp(b.data, "0,1,2,", 6) == 0);
    buf_release(&b);
}

TEST(parse_i64_strict)
{
    int64_t v;
    CHECK_EQ_INT(parse_i64("42", &v), 0);
    CHECK_EQ_INT(v, 42);
    CHECK(parse_i64("42x", &v) < 0);
    CHECK(parse_i64("", &v) < 0);
    CHECK_EQ_INT(parse_i64("99999999999999999999", &v), -ERANGE);
}

/* rfc3339_format writes its digits by hand: it must give printf's bytes
 * for every kind of instant (epoch, before it, leap days, far years). */
TEST(rfc3339_format_matches_printf)
{
    const int64_t fixed[] = {0, -1, 999, 1000, -1001, 951782400000LL /* 2000-02-29 */,
                             253402300799999LL /* 9999-12-31T23:59:59.999 */, 1795383722123LL};
    for (int i = 0; i < 2008; i++) {
        int64_t ms = i < 8 ? fixed[i] : (int64_t)(((uint64_t)i * 0x9E3779B97F4A7C15ull) % 253402300800000ull);
        time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        char want[64], got[RFC3339_LEN];
        snprintf(want, sizeof want, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (int)(ms - (int64_t)secs * 1000));
        rfc3339_format(ms, got);
        CHECK_EQ_STR(got, want);
    }
}

/* ids come from a per-thread pool of random bytes: distinct, well formed,
 * and in creation order across a refill of the pool */
TEST(id_new_unique_across_pool_refills)
{
    char ids[100][ID_LEN];
    for (int i = 0; i < 100; i++) {
        id_new("run", ids[i]);
        CHECK_EQ_INT((int)strlen(ids[i]), 26);   /* "run_" + 10 clock + 12 random */
        CHECK(!strncmp(ids[i], "run_", 4));
        for (int j = 0; j < i; j++)
            CHECK(strcmp(ids[i], ids[j]) != 0);
    }
}
