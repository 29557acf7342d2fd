#include "t.h"
#include "jdump.h"

#include <float.h>
#include <stdbool.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static bool has_real(const json_t *v)
{
    if (json_is_real(v))
        return true;
    size_t i;
    const char *k;
    json_t *x;
    if (json_is_array(v))
        json_array_foreach(v, i, x) if (has_real(x)) return true;
    if (json_is_object(v))
        json_object_foreach((json_t *)v, k, x) if (has_real(x)) return true;
    return false;
}

/* jdump must give exactly json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)
 * where v holds no real; with reals, text that jansson reads back as v,
 * every real exactly (the digits are checked by jdump_reals_shortest). */
static int same(const json_t *v)
{
    char *a = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    size_t len = 0;
    char *b = jdump(v, &len);
    int ok = (!a && !b) || (a && b && len == strlen(b));
    if (ok && a && !has_real(v))
        ok = !strcmp(a, b);
    if (ok && b) {
        json_t *back = json_loads(b, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        ok = back && json_equal(back, v);
        json_decref(back);
    }
    if (!ok)
        fprintf(stderr, "json_dumps: %s\njdump:      %s\n", a ? a : "(null)", b ? b : "(null)");
    free(a);
    free(b);
    return ok;
}

/* The fewest digits that read back as the same double; jansson wrote 17
 * (0.3 as 0.29999999999999999), in its form otherwise. */
TEST(jdump_reals_shortest)
{
    static const struct {
        double v;
        const char *want;
    } cases[] = {
        {0.3, "0.3"}, {0.1, "0.1"}, {9.99, "9.99"}, {0.1 + 0.2, "0.30000000000000004"},
        {0, "0.0"}, {-0.0, "-0.0"}, {1, "1.0"}, {-1, "-1.0"}, {0.5, "0.5"},
        {123456789.0, "123456789.0"}, {1e16, "1e16"}, {1e17, "1e17"}, {1e300, "1e300"},
        {-1e-300, "-1e-300"}, {2.5e-5, "2.5e-5"}, {5e-324, "4.94065645841247e-324"},
        {DBL_MIN, "2.2250738585072014e-308"}, {DBL_MAX, "1.7976931348623157e308"},
        {0.97990576458717971, "0.9799057645871797"}, {1.0 / 3, "0.3333333333333333"},
        /* from 1e15 %g writes an exponent where 17 digits are still shorter
         * (found by fuzz_json) */
        {1111111111111110.0, "1111111111111110.0"}, {1e15, "1e15"}, {123456789012345.6, "123456789012345.6"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char s[JDUMP_REAL_MAX];
        size_t n = jdump_real(s, cases[i].v);
        CHECK_EQ_STR(s, cases[i].want);
        CHECK_EQ_INT((long long)n, (long long)strlen(cases[i].want));
        json_t *r = json_real(cases[i].v);
        char *d = jdump(r, NULL);
        CHECK_EQ_STR(d, cases[i].want);
        free(d);
        json_decref(r);
    }
}

TEST(jdump_scalars)
{
    json_t *v[] = {json_null(), json_true(), json_false(), json_integer(0), json_integer(-1),
                   json_integer(INT64_MAX), json_integer(INT64_MIN), json_real(0), json_real(-0.0),
                   json_real(1), json_real(-1), json_real(0.5), json_real(0.1), json_real(1e300),
                   json_real(-1e-300), json_real(123456789.0), json_real(1e17), json_real(1e16),
                   json_real(DBL_MIN), json_real(DBL_MAX), json_real(5e-324), json_real(2.5e-5),
                   json_string(""), json_string("plain"), json_string("q\"b\\s/"),
                   json_string("\b\f\n\r\t\x01\x1f\x7f"), json_string("é€𝄞"),
                   json_stringn("a\0b", 3)};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        CHECK(same(v[i]));
        json_decref(v[i]);
    }
}

TEST(jdump_invalid_utf8_fails_like_jansson)
{
    json_t *s = json_stringn_nocheck("a\xff", 2);
    CHECK(same(s));
    json_decref(s);
    s = json_stringn_nocheck("\xed\xa0\x80", 3);   /* a surrogate */
    CHECK(same(s));
    json_decref(s);
    s = json_stringn_nocheck("\xc0\x80", 2);   /* overlong */
    CHECK(same(s));
    json_decref(s);
}

static json_t *rnd(int depth)
{
    static const char *const strs[] = {"", "x", "quern", "a\"b", "\\", "\n\t", "ü", "日本",
                                       "\x01", "/path/x", "2026-11-22T21:42:02.123Z"};
    int k = rand() % (depth > 4 ? 7 : 9);
    switch (k) {
    case 0: return json_null();
    case 1: return json_boolean(rand() & 1);
    case 2: return json_integer((json_int_t)rand() * (rand() & 1 ? 1 : -1) * (rand() % 1000));
    case 3: return json_real((double)rand() / (rand() + 1) * (rand() & 1 ? 1 : -1));
    case 4:
    case 5:
    case 6: return json_string(strs[rand() % 11]);
    case 7: {
        json_t *a = json_array();
        for (int i = rand() % 5; i > 0; i--)
            json_array_append_new(a, rnd(depth + 1));
        return a;
    }
    default: {
        json_t *o = json_object();
        for (int i = rand() % 6; i > 0; i--) {
            char key[16];
            snprintf(key, sizeof key, i & 1 ? "k%d" : "é\"%d", rand() % 50);
            json_object_set_new(o, key, rnd(depth + 1));
        }
        return o;
    }
    }
}

TEST(jdump_random_documents)
{
    srand(42);
    for (int i = 0; i < 3000; i++) {
        json_t *v = rnd(0);
        CHECK(same(v));
        json_decref(v);
    }
}

TEST(jdump_deep_nesting_falls_back)
{
    json_t *v = json_integer(1);
    for (int i = 0; i < 1000; i++) {
        json_t *a = json_array();
        json_array_append_new(a, v);
        v = a;
    }
    CHECK(same(v));
    json_decref(v);
}

TEST(jdump_buf_appends)
{
    struct buf b;
    buf_init(&b);
    buf_puts(&b, "x=");
    json_t *v = json_pack("{s:i, s:[s, f]}", "a", 1, "b", "c", 2.5);
    CHECK_EQ_INT(jdump_buf(&b, v), 0);
    CHECK_EQ_STR(b.data, "x={\"a\":1,\"b\":[\"c\",2.5]}");
    json_decref(v);
    buf_release(&b);
}

/* Every ASCII byte and a multi-byte character at every offset of strings
 * long enough for the eight-bytes-at-a-time scan, and at its edges. */
TEST(jdump_strings_at_every_offset)
{
    for (size_t len = 1; len <= 19; len++)
        for (size_t at = 0; at < len; at++) {
            char s[32];
            for (int c = 0; c < 0x80; c++) {
                memset(s, 'a', len);
                s[at] = (char)c;
                json_t *v = json_stringn(s, len);
                CHECK(v && same(v));
                json_decref(v);
            }
            if (at + 2 <= len) {
                memset(s, 'z', len);
                memcpy(s + at, "\xc3\xa9", 2);   /* é */
                json_t *v = json_stringn(s, len);
                CHECK(v && same(v));
                json_decref(v);
            }
        }
}

/* jdump_real's answers are shared between threads (a cache by the value's
 * bits): another thread, and values that share a slot, get their own
 * digits, never another value's. */
struct reals_arg {
    double v[3000];
    char s[3000][JDUMP_REAL_MAX];
};

static void *format_reals(void *p)
{
    struct reals_arg *a = p;
    for (size_t i = 0; i < 3000; i++)
        jdump_real(a->s[i], a->v[i]);
    return NULL;
}

TEST(jdump_reals_same_on_every_thread)
{
    struct reals_arg *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    srand(7);
    for (size_t i = 0; i < 3000; i++) {
        double v = (double)rand() / RAND_MAX * 1e9 + (double)rand() / RAND_MAX;
        a->v[i] = b->v[i] = v;
    }
    format_reals(a);
    pthread_t t;
    CHECK_EQ_INT(pthread_create(&t, NULL, format_reals, b), 0);
    pthread_join(t, NULL);
    for (size_t i = 0; i < 3000; i++) {
        CHECK_EQ_STR(b->s[i], a->s[i]);
        CHECK(strtod(b->s[i], NULL) == b->v[i]);
    }
    free(a);
    free(b);
}
