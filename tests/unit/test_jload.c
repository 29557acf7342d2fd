#include "t.h"
#include "jdump.h"
#include "jload.h"

#include <stdlib.h>
#include <string.h>

/* The same value, types and key order alike (json_equal ignores the order;
 * the serialisations do not). */
static int same_doc(const json_t *a, const json_t *b)
{
    if (!a || !b)
        return 0;
    char *da = jdump(a, NULL), *db = jdump(b, NULL);
    int ok = json_equal(a, b) && da && db && !strcmp(da, db);
    free(da);
    free(db);
    return ok;
}

/* jload must return exactly what json_loadb returns: the same value (types,
 * key order) or the same failure. */
static int same_n(const char *text, size_t len, size_t flags)
{
    json_t *a = json_loadb(text, len, flags, NULL);
    json_t *b = jload(text, len, flags);
    int ok = !a || !b ? !a && !b : same_doc(a, b);
    if (!ok)
        fprintf(stderr, "differs on: %.*s\n", (int)len, text);
    json_decref(a);
    json_decref(b);
    return ok;
}

static int same(const char *text, size_t flags)
{
    return same_n(text, strlen(text), flags);
}

TEST(jload_documents)
{
    const char *docs[] = {
        "{}", "[]", " { } ", "{\"a\":1}", "{\"a\": 1, \"b\" : [1, 2.5, -3, true, false, null]}",
        "{\"id\":\"run_1\",\"status\":\"queued\",\"input\":{\"i\":1,\"ts\":1.5},\"errors\":[],"
        "\"progress\":0.0,\"cost\":0.0,\"n\":null,\"x\":{\"y\":{\"z\":[[],{}]}}}",
        "{\"dup\":1,\"dup\":2}", "{\"k\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e\"}",
        "{\"e\":\"q\\\"b\\\\s\\/\\b\\f\\n\\r\\t\\u0001\\u001f\\u00e9\\u20ac\\ud834\\udd1e\"}",
        "{\"\\u00e9key\":true}", "[0, -0, 1e5, 1E5, 1e-5, -1.25e+3, 0.1, 123456789012345678]",
        "[9223372036854775807, -9223372036854775808]", "[1e-400]", "[5e-324]",
        "{\"long\":\"" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\":1}",
        "\t\r\n[\n1\n]\n",
    };
    for (size_t i = 0; i < sizeof docs / sizeof *docs; i++) {
        CHECK(same(docs[i], 0));
        CHECK(same(docs[i], JSON_DECODE_ANY));
        CHECK(same(docs[i], JSON_REJECT_DUPLICATES));
    }
    CHECK(!jload("{\"a\":1,\"b\":{\"a\":2},\"a\":3}", 23, JSON_REJECT_DUPLICATES));
}

TEST(jload_fails_where_jansson_fails)
{
    const char *bad[] = {
        "", " ", "{", "}", "[1,]", "[,1]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "[01]", "[1.]",
        "[.5]", "[+1]", "[-]", "[1e]", "[1e+]", "[tru]", "[nul]", "[True]", "{} x", "[1] [2]",
        "[\"\\u0000\"]", "[\"\\x\"]", "[\"\\ud834\"]", "[\"\\udd1e\"]", "[\"\\u12\"]",
        "[\"a\x01\"]", "[\"\xff\"]", "[\"\xc0\x80\"]", "[\"\xed\xa0\x80\"]", "[\"open]",
        "[9223372036854775808]", "[-9223372036854775809]", "[1e400]", "[-1e400]",
        "[1111111111111111111111111111111111111111111111111111111111111111111111.5]",
        "\"plain\"", "1", "true", "null",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK(same(bad[i], 0));
        CHECK(same(bad[i], JSON_DECODE_ANY));
    }
    /* an embedded NUL byte, and nesting deeper than the fast path takes */
    CHECK(same_n("[1]\0", 4, 0));
    CHECK(same_n("[\"a\0b\"]", 7, 0));
    char deep[2100];
    memset(deep, '[', 1000);
    memset(deep + 1000, ']', 1000);
    deep[2000] = 0;
    CHECK(same(deep, 0));
    memset(deep, '[', 2050);
    deep[2050] = 0;
    CHECK(same(deep, 0));
}

/* Random documents, dumped and read back: the store's round trip. */
static json_t *random_value(unsigned *seed, int depth)
{
    int r = (int)(rand_r(seed) % (depth > 4 ? 6 : 8));
    switch (r) {
    case 0: return json_null();
    case 1: return json_boolean(rand_r(seed) & 1);
    case 2: return json_integer((json_int_t)rand_r(seed) * (rand_r(seed) & 1 ? -1 : 1) * 1000003);
    case 3: return json_real((double)rand_r(seed) / ((double)rand_r(seed) + 1.0) * (rand_r(seed) & 1 ? 1e-7 : 1e9));
    case 4: case 5: {
        char s[40];
        int n = (int)(rand_r(seed) % 30);
        for (int i = 0; i < n; i++) {
            static const char pool[] = "ab \"\\/\n\t\x01z{}[]:,";
            s[i] = pool[rand_r(seed) % (sizeof pool - 1)];
        }
        s[n] = 0;
        return json_string(s);
    }
    case 6: {
        json_t *a = json_array();
        for (int i = (int)(rand_r(seed) % 5); i > 0; i--)
            json_array_append_new(a, random_value(seed, depth + 1));
        return a;
    }
    default: {
        json_t *o = json_object();
        for (int i = (int)(rand_r(seed) % 6); i > 0; i--) {
            char k[8];
            snprintf(k, sizeof k, "k%u", rand_r(seed) % 20);
            json_object_set_new(o, k, random_value(seed, depth + 1));
        }
        return o;
    }
    }
}

TEST(jload_random_round_trips)
{
    unsigned seed = 12345;
    for (int i = 0; i < 3000; i++) {
        json_t *doc = json_object();
        json_object_set_new(doc, "v", random_value(&seed, 0));
        size_t len;
        char *text = jdump(doc, &len);
        CHECK(text != NULL);
        json_t *back = jload(text, len, 0);
        CHECK(back && json_equal(back, doc));
        CHECK(same_n(text, len, 0));
        json_decref(back);
        free(text);
        json_decref(doc);
    }
}

/* jload_fields keeps exactly the wanted top-level fields of what jload
 * reads, in the document's order, whatever the others hold. */
static int fields_agree(const char *text, size_t len, const char *const *fields)
{
    json_t *all = jload(text, len, 0), *some = jload_fields(text, len, fields);
    int ok;
    if (!all || !json_is_object(all)) {
        /* not an object: jload_fields answers what jload answers */
        ok = (!all && !some) || (all && some && json_equal(all, some));
    } else {
        json_t *want = json_object();
        const char *k;
        json_t *v;
        json_object_foreach(all, k, v) {
            for (const char *const *f = fields; *f; f++)
                if (!strcmp(*f, k))
                    json_object_set(want, k, v);
        }
        ok = same_doc(want, some);
        json_decref(want);
    }
    if (!ok)
        fprintf(stderr, "jload_fields differs on: %.*s\n", (int)len, text);
    json_decref(all);
    json_decref(some);
    return ok;
}

TEST(jload_fields_keeps_the_wanted_fields)
{
    static const char *const fields[] = {"id", "status", "v", "k3", "blocked_by", NULL};
    const char *docs[] = {
        "{}", "{\"id\":\"r\",\"status\":\"queued\"}",
        "{\"input\":{\"id\":\"inner\",\"x\":[1,{\"status\":2}]},\"id\":\"r1\",\"blocked_by\":[\"t\"]}",
        "{\"e\":\"q\\\"b\\\\s\\u00e9\\ud834\\udd1e\",\"status\":\"s\\n\",\"n\":-1.5e3,\"t\":true}",
        "{\"\\u0069d\":\"escaped key\",\"status\":null}", "{\"id\":1,\"id\":2}",
        "[1,2]", "{\"id\":\"x\"", "{\"skip\":[1,]}", "{\"skip\":\"\\u0000\"}", "{\"id\":\"a\"} x",
        "{\"skip\":[[[[{}]]]],\"v\":{\"a\":[]}}",
    };
    for (size_t i = 0; i < sizeof docs / sizeof *docs; i++)
        CHECK(fields_agree(docs[i], strlen(docs[i]), fields));
    unsigned seed = 777;
    for (int i = 0; i < 2000; i++) {
        json_t *doc = json_object();
        for (int k = (int)(rand_r(&seed) % 8); k > 0; k--) {
            char key[8];
            snprintf(key, sizeof key, "k%u", rand_r(&seed) % 6);
            json_object_set_new(doc, key, random_value(&seed, 0));
        }
        json_object_set_new(doc, "v", random_value(&seed, 0));
        size_t len;
        char *text = jdump(doc, &len);
        CHECK(fields_agree(text, len, fields));
        free(text);
        json_decref(doc);
    }
}
