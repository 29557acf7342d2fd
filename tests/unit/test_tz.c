/* Unit tests for tz: TZif parsing (system zones, hand-built v1 files), the
 * POSIX footer for far-future instants, name validation and the cache.
 * Reference offsets were checked against Python's zoneinfo on the same tzdata. */
#include "t.h"

#include "tz.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

/* UTC seconds of an RFC 3339 timestamp. */
static int64_t at(const char *s)
{
    int64_t ms = 0;
    if (rfc3339_parse(s, &ms) != 0) {
        fprintf(stderr, "bad timestamp in test: %s\n", s);
        abort();
    }
    return ms / 1000;
}

static const struct tz *zone(const char *name)
{
    char *err = NULL;
    const struct tz *z = tz_get(name, &err);
    if (!z) {
        fprintf(stderr, "  tz_get(%s): %s\n", name, err);
        free(err);
    }
    return z;
}

/* "YYYY-MM-DD HH:MM:SS ABBR" of tz_localtime, into out. */
static const char *local(const struct tz *z, int64_t t, char out[64])
{
    struct tm tm;
    tz_localtime(z, t, &tm);
    snprintf(out, 64, "%04d-%02d-%02d %02d:%02d:%02d %s", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, tm.tm_zone);
    return out;
}

TEST(utc_is_builtin)
{
    char buf[64];
    const struct tz *z = zone("UTC");
    CHECK(z != NULL);
    if (!z)
        return;
    CHECK_EQ_STR(tz_name(z), "UTC");
    CHECK_EQ_INT(tz_offset_at(z, 0), 0);
    CHECK_EQ_INT(tz_offset_at(z, at("2300-06-01T00:00:00Z")), 0);
    CHECK_EQ_STR(local(z, 0, buf), "1970-01-01 00:00:00 UTC");
    CHECK_EQ_INT(tz_next_transition(z, 0), INT64_MAX);
    struct tm tm;
    tz_localtime(z, at("2026-03-08T12:34:56Z"), &tm);
    CHECK_EQ_INT(tm.tm_wday, 0); /* Sunday */
    CHECK_EQ_INT(tm.tm_yday, 66);
    CHECK_EQ_INT(tm.tm_isdst, 0);
    CHECK_EQ_INT(tm.tm_gmtoff, 0);
    /* Works without tzdata, whatever TZDIR says. */
    setenv("TZDIR", "/nonexistent", 1);
    CHECK(zone("UTC") == z);
    CHECK(zone("Etc/UTC") != NULL);
    unsetenv("TZDIR");
}

TEST(new_york_2026)
{
    char buf[64];
    const struct tz *z = zone("America/New_York");
    CHECK(z != NULL);
    if (!z)
        return;
    CHECK_EQ_STR(tz_name(z), "America/New_York");
    int64_t spring = at("2026-03-08T07:00:00Z"), fall = at("2026-11-01T06:00:00Z");
    CHECK_EQ_INT(tz_offset_at(z, spring - 1), -5 * 3600);
    CHECK_EQ_INT(tz_offset_at(z, spring), -4 * 3600);
    CHECK_EQ_INT(tz_offset_at(z, fall - 1), -4 * 3600);
    CHECK_EQ_INT(tz_offset_at(z, fall), -5 * 3600);
    CHECK_EQ_STR(local(z, spring - 1, buf), "2026-03-08 01:59:59 EST");
    CHECK_EQ_STR(local(z, spring, buf), "2026-03-08 03:00:00 EDT");
    CHECK_EQ_STR(local(z, fall - 1, buf), "2026-11-01 01:59:59 EDT");
    CHECK_EQ_STR(local(z, fall, buf), "2026-11-01 01:00:00 EST");
    struct tm tm;
    tz_localtime(z, spring, &tm);
    CHECK_EQ_INT(tm.tm_isdst, 1);
    CHECK_EQ_INT(tm.tm_gmtoff, -4 * 3600);
    CHECK_EQ_INT(tz_next_transition(z, at("2026-01-01T00:00:00Z")), spring);
    CHECK_EQ_INT(tz_next_transition(z, spring - 1), spring);
    CHECK_EQ_INT(tz_next_transition(z, spring), fall);
    /* Cached: the same zone comes back. */
    CHECK(zone("America/New_York") == z);
}

TEST(berlin_2026)
{
    char buf[64];
    const struct tz *z = zone("Europe/Berlin");
    CHECK(z != NULL);
    if (!z)
        return;
    int64_t spring = at("2026-03-29T01:00:00Z"), fall = at("2026-10-25T01:00:00Z");
    CHECK_EQ_INT(tz_offset_at(z, spring - 1), 3600);
    CHECK_EQ_INT(tz_offset_at(z, spring), 7200);
    CHECK_EQ_INT(tz_offset_at(z, fall - 1), 7200);
    CHECK_EQ_INT(tz_offset_at(z, fall), 3600);
    CHECK_EQ_STR(local(z, spring, buf), "2026-03-29 03:00:00 CEST");
    CHECK_EQ_STR(local(z, fall, buf), "2026-10-25 02:00:00 CET");
    CHECK_EQ_INT(tz_next_transition(z, spring), fall);
}

TEST(kolkata_half_hour)
{
    char buf[64];
    const struct tz *z = zone("Asia/Kolkata");
    CHECK(z != NULL);
    if (!z)
        return;
    CHECK_EQ_INT(tz_offset_at(z, at("2026-06-01T00:00:00Z")), 19800);
    CHECK_EQ_STR(local(z, at("2026-01-01T00:00:00Z"), buf), "2026-01-01 05:30:00 IST");
    CHECK_EQ_STR(local(z, at("2026-12-31T20:00:00Z"), buf), "2027-01-01 01:30:00 IST");
    CHECK_EQ_INT(tz_next_transition(z, at("2026-01-01T00:00:00Z")), INT64_MAX);
}

/* Beyond the last table entry (2037 in fat files) only the footer knows. */
TEST(far_future_uses_posix_footer)
{
    char buf[64];
    const struct tz *ny = zone("America/New_York");
    const struct tz *syd = zone("Australia/Sydney");
    const struct tz *ber = zone("Europe/Berlin");
    CHECK(ny && syd && ber);
    if (!ny || !syd || !ber)
        return;
    CHECK_EQ_INT(tz_offset_at(ny, at("2100-07-04T12:00:00Z")), -4 * 3600);
    CHECK_EQ_INT(tz_offset_at(ny, at("2100-01-01T12:00:00Z")), -5 * 3600);
    CHECK_EQ_STR(local(ny, at("2100-07-04T12:00:00Z"), buf), "2100-07-04 08:00:00 EDT");
    /* Second Sunday of March 2100 is the 14th. */
    CHECK_EQ_INT(tz_next_transition(ny, at("2100-01-01T00:00:00Z")), at("2100-03-14T07:00:00Z"));
    CHECK_EQ_INT(tz_next_transition(ny, at("2100-03-14T07:00:00Z")), at("2100-11-07T06:00:00Z"));
    /* Southern hemisphere: DST across the new year. */
    CHECK_EQ_STR(local(syd, at("2100-01-15T00:00:00Z"), buf), "2100-01-15 11:00:00 AEDT");
    CHECK_EQ_STR(local(syd, at("2100-07-15T00:00:00Z"), buf), "2100-07-15 10:00:00 AEST");
    /* Last Sunday of March 2150 is the 29th. */
    CHECK_EQ_INT(tz_offset_at(ber, at("2150-03-29T00:59:59Z")), 3600);
    CHECK_EQ_INT(tz_offset_at(ber, at("2150-03-29T01:00:00Z")), 7200);
}

TEST(bad_names)
{
    static const char *const bad[] = {
        "../etc/passwd", "/etc/passwd", "", "America/../../etc/passwd", "America/New York",
        "America//New_York", "America/", "Zone\n", "Europe/Berlin.", "a;b",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", /* 65 */
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        char *err = NULL;
        CHECK(tz_get(bad[i], &err) == NULL);
        CHECK(err != NULL && strstr(err, "invalid time zone name") != NULL);
        free(err);
    }
    char *err = NULL;
    CHECK(tz_get(NULL, &err) == NULL);
    CHECK(err != NULL);
    free(err);

    err = NULL;
    CHECK(tz_get("Nope/Zone", &err) == NULL);
    CHECK_EQ_STR(err, "unknown time zone \"Nope/Zone\"");
    free(err);
    /* A directory is not a zone. */
    err = NULL;
    CHECK(tz_get("America", &err) == NULL);
    CHECK(err != NULL && strstr(err, "unknown time zone") != NULL);
    free(err);
}

static void put32(struct buf *b, uint32_t v)
{
    unsigned char x[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    buf_append(b, x, 4);
}

static void write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    CHECK(write(fd, data, len) == (ssize_t)len);
    close(fd);
}

/* A version 1 file (32-bit data, no footer) and a garbage file, in $TZDIR. */
TEST(v1_file_and_garbage)
{
    char dir[] = "/tmp/quern-tz-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char *sub = xasprintf("%s/Test", dir);
    CHECK(mkdir(sub, 0755) == 0);

    struct buf b;
    buf_init(&b);
    buf_append(&b, "TZif", 4);
    buf_append(&b, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16); /* version 1 + reserved */
    put32(&b, 0); /* isutcnt */
    put32(&b, 0); /* isstdcnt */
    put32(&b, 0); /* leapcnt */
    put32(&b, 2); /* timecnt */
    put32(&b, 2); /* typecnt */
    put32(&b, 8); /* charcnt */
    put32(&b, 1000000);
    put32(&b, 2000000);
    buf_append(&b, "\1\0", 2);
    put32(&b, 3600);
    buf_append(&b, "\0\0", 2); /* std, abbr 0 */
    put32(&b, 7200);
    buf_append(&b, "\1\4", 2); /* dst, abbr 4 */
    buf_append(&b, "AAA\0BBB\0", 8);
    char *v1 = xasprintf("%s/V1", sub);
    write_file(v1, b.data, b.len);
    char *junk = xasprintf("%s/Junk", sub);
    write_file(junk, "TZif2 not really", 16);
    buf_release(&b);

    setenv("TZDIR", dir, 1);
    char buf[64];
    const struct tz *z = zone("Test/V1");
    CHECK(z != NULL);
    if (z) {
        CHECK_EQ_INT(tz_offset_at(z, 999999), 3600);
        CHECK_EQ_INT(tz_offset_at(z, 1000000), 7200);
        CHECK_EQ_INT(tz_offset_at(z, 1999999), 7200);
        CHECK_EQ_INT(tz_offset_at(z, 2000000), 3600);
        CHECK_EQ_INT(tz_offset_at(z, at("2300-01-01T00:00:00Z")), 3600);
        CHECK_EQ_STR(local(z, 1000000, buf), "1970-01-12 15:46:40 BBB");
        CHECK_EQ_INT(tz_next_transition(z, 0), 1000000);
        CHECK_EQ_INT(tz_next_transition(z, 1000000), 2000000);
        CHECK_EQ_INT(tz_next_transition(z, 2000000), INT64_MAX);
    }
    char *err = NULL;
    CHECK(tz_get("Test/Junk", &err) == NULL);
    CHECK(err != NULL && strstr(err, "not a valid TZif file") != NULL);
    free(err);
    unsetenv("TZDIR");

    unlink(v1);
    unlink(junk);
    rmdir(sub);
    rmdir(dir);
    free(v1);
    free(junk);
    free(sub);
}

TEST(civil_calendar)
{
    CHECK_EQ_INT(tz_days_from_civil(1970, 1, 1), 0);
    CHECK_EQ_INT(tz_days_from_civil(2000, 3, 1), 11017);
    CHECK_EQ_INT(tz_days_from_civil(1969, 12, 31), -1);
    for (int64_t d = -800000; d < 800000; d += 997) {
        int64_t y;
        int m, dd;
        tz_civil_from_days(d, &y, &m, &dd);
        CHECK_EQ_INT(tz_days_from_civil(y, m, dd), d);
    }
}

static void *load_many(void *arg)
{
    static const char *const names[] = {"Europe/Paris", "Asia/Tokyo", "America/Chicago"};
    const struct tz **out = arg;
    for (int round = 0; round < 50; round++)
        for (size_t i = 0; i < ARRAY_LEN(names); i++) {
            char *err = NULL;
            const struct tz *z = tz_get(names[i], &err);
            free(err);
            if (round == 0)
                out[i] = z;
            else if (out[i] != z)
                out[i] = NULL;
        }
    return NULL;
}

/* Concurrent first loads all end up with one zone per name. */
TEST(cache_is_thread_safe)
{
    pthread_t th[4];
    const struct tz *got[4][3];
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&th[i], NULL, load_many, got[i]) == 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int j = 0; j < 3; j++) {
        CHECK(got[0][j] != NULL);
        for (int i = 1; i < 4; i++)
            CHECK(got[i][j] == got[0][j]);
    }
    CHECK_EQ_INT(tz_offset_at(got[0][1], 0), 9 * 3600);
}

/* Runs last (tests run in file order): frees the cache for the leak checker. */
TEST(zz_cache_free)
{
    tz_cache_free();
    const struct tz *z = zone("Europe/Berlin"); /* reloads fine */
    CHECK(z != NULL);
    tz_cache_free();
}

TEST(extreme_instants)
{
    const struct tz *z = zone("America/New_York");
    CHECK(z != NULL);
    if (!z)
        return;
    struct tm tm;
    CHECK_EQ_INT(tz_offset_at(z, INT64_MAX), -5 * 3600);
    CHECK_EQ_INT(tz_offset_at(z, INT64_MIN), tz_offset_at(z, INT64_MIN / 2));
    tz_localtime(z, INT64_MAX, &tm);
    tz_localtime(z, INT64_MIN, &tm);
    CHECK_EQ_INT(tz_next_transition(z, INT64_MAX), INT64_MAX);
    CHECK(tz_next_transition(z, INT64_MIN) > INT64_MIN);
}
