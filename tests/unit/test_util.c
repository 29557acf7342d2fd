#include "t.h"
#include "util.h"
#include <errno.h>

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
