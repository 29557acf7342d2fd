#include "t.h"
#include "jsonschema.h"
#include "util.h"
#include <errno.h>

static json_t *J(const char *s)
{
    json_error_t e;
    json_t *v = json_loads(s, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (!v) {
        fprintf(stderr, "bad test JSON %s: %s\n", s, e.text);
        abort();
    }
    return v;
}

static char g_path[1024], g_msg[1024];

/* Validates inst against schema (both JSON text), keeping path and message. */
static int V(const char *schema, const char *inst)
{
    json_t *s = J(schema), *i = J(inst);
    char *p = (char *)"x", *m = (char *)"x";
    int rc = jsonschema_validate(s, i, &p, &m);
    if (rc == 0 && (p || m)) {
        fprintf(stderr, "  success left path/msg set\n");
        t_failed_checks++;
    }
    snprintf(g_path, sizeof(g_path), "%s", p ? p : "");
    snprintf(g_msg, sizeof(g_msg), "%s", m ? m : "");
    free(p);
    free(m);
    json_decref(s);
    json_decref(i);
    return rc;
}

/* Checks a schema (JSON text), keeping the message. */
static int C(const char *schema)
{
    json_t *s = J(schema);
    char *m = (char *)"x";
    int rc = jsonschema_check(s, &m);
    if (rc == 0 && m) {
        fprintf(stderr, "  success left msg set\n");
        t_failed_checks++;
    }
    snprintf(g_msg, sizeof(g_msg), "%s", m ? m : "");
    free(m);
    json_decref(s);
    return rc;
}

#define OK(schema, inst) CHECK_EQ_INT(V(schema, inst), 0)
#define BAD(schema, inst, path, msg)                                                   \
    do {                                                                               \
        CHECK_EQ_INT(V(schema, inst), -EINVAL);                                        \
        CHECK_EQ_STR(g_path, path);                                                    \
        CHECK_EQ_STR(g_msg, msg);                                                      \
    } while (0)
#define STARTS(s, prefix) CHECK(strncmp((s), (prefix), strlen(prefix)) == 0)

TEST(type_single)
{
    OK("{\"type\":\"string\"}", "\"x\"");
    OK("{\"type\":\"null\"}", "null");
    OK("{\"type\":\"boolean\"}", "false");
    OK("{\"type\":\"object\"}", "{}");
    OK("{\"type\":\"array\"}", "[]");
    OK("{\"type\":\"number\"}", "1.5");
    OK("{\"type\":\"number\"}", "7");
    BAD("{\"type\":\"integer\"}", "\"7\"", "$", "expected integer, got string");
    BAD("{\"type\":\"string\"}", "null", "$", "expected string, got null");
    BAD("{\"type\":\"object\"}", "[]", "$", "expected object, got array");
    BAD("{\"type\":\"array\"}", "{}", "$", "expected array, got object");
    BAD("{\"type\":\"boolean\"}", "0", "$", "expected boolean, got integer");
    BAD("{\"type\":\"null\"}", "false", "$", "expected null, got boolean");
    BAD("{\"type\":\"number\"}", "\"1\"", "$", "expected number, got string");
}

TEST(type_integer_means_no_fraction)
{
    OK("{\"type\":\"integer\"}", "7");
    OK("{\"type\":\"integer\"}", "-7");
    OK("{\"type\":\"integer\"}", "7.0");
    OK("{\"type\":\"integer\"}", "1e3");
    BAD("{\"type\":\"integer\"}", "7.5", "$", "expected integer, got number");
}

TEST(type_array_of_names)
{
    OK("{\"type\":[\"string\",\"null\"]}", "null");
    OK("{\"type\":[\"string\",\"null\"]}", "\"a\"");
    BAD("{\"type\":[\"string\",\"null\"]}", "1", "$", "expected null or string, got integer");
    OK("{\"type\":[\"integer\",\"boolean\"]}", "true");
}

TEST(properties_nested_paths)
{
    const char *s = "{\"type\":\"object\",\"properties\":{\"user\":{\"type\":\"object\","
                    "\"properties\":{\"address\":{\"properties\":{\"zip\":{\"type\":\"string\"}}}}}}}";
    OK(s, "{\"user\":{\"address\":{\"zip\":\"12345\"}}}");
    OK(s, "{\"user\":{}}");
    OK(s, "{\"other\":1}");
    BAD(s, "{\"user\":{\"address\":{\"zip\":12345}}}", "$.user.address.zip",
        "expected string, got integer");
    BAD(s, "{\"user\":[]}", "$.user", "expected object, got array");
    /* properties do not apply to non-objects */
    OK("{\"properties\":{\"a\":{\"type\":\"string\"}}}", "5");
}

TEST(items_nested_paths)
{
    const char *s = "{\"properties\":{\"items\":{\"type\":\"array\",\"items\":{\"type\":\"object\","
                    "\"properties\":{\"name\":{\"type\":\"string\"}}}}}}";
    OK(s, "{\"items\":[{\"name\":\"a\"},{}]}");
    BAD(s, "{\"items\":[{\"name\":\"a\"},{\"name\":\"b\"},{\"name\":3}]}", "$.items[2].name",
        "expected string, got integer");
    BAD(s, "{\"items\":[{\"name\":\"a\"},7]}", "$.items[1]", "expected object, got integer");
    BAD("{\"items\":{\"items\":{\"type\":\"integer\"}}}", "[[1],[2,\"x\"]]", "$[1][1]",
        "expected integer, got string");
    OK("{\"items\":{\"type\":\"integer\"}}", "\"not an array\"");
}

TEST(paths_quote_odd_keys)
{
    const char *s = "{\"properties\":{\"a b\":{\"properties\":{\"x.y\":{\"properties\":"
                    "{\"q\\\"\\\\\":{\"type\":\"string\"}}}}}}}";
    BAD(s, "{\"a b\":{\"x.y\":{\"q\\\"\\\\\":1}}}", "$[\"a b\"][\"x.y\"][\"q\\\"\\\\\"]",
        "expected string, got integer");
    BAD("{\"properties\":{\"1st\":{\"type\":\"null\"}}}", "{\"1st\":1}", "$[\"1st\"]",
        "expected null, got integer");
}

TEST(required_names_missing_path)
{
    const char *s = "{\"properties\":{\"user\":{\"required\":[\"id\",\"name\"]}}}";
    OK(s, "{\"user\":{\"id\":1,\"name\":null}}");
    BAD(s, "{\"user\":{\"id\":1}}", "$.user.name", "required property is missing");
    OK("{\"required\":[\"a\"]}", "[]");
}

TEST(enum_values)
{
    const char *s = "{\"enum\":[\"low\",\"high\",1,null,{\"a\":[1,2]}]}";
    OK(s, "\"low\"");
    OK(s, "null");
    OK(s, "1.0");
    OK(s, "{\"a\":[1.0,2]}");
    BAD(s, "\"medium\"", "$", "must be one of [\"low\",\"high\",1,null,{\"a\":[1,2]}]");
    BAD(s, "{\"a\":[2,1]}", "$", "must be one of [\"low\",\"high\",1,null,{\"a\":[1,2]}]");
    BAD(s, "true", "$", "must be one of [\"low\",\"high\",1,null,{\"a\":[1,2]}]");
    /* strings compare by all their bytes */
    BAD("{\"enum\":[\"a\\u0000b\"]}", "\"a\\u0000c\"", "$", "must be one of [\"a\\u0000b\"]");
    OK("{\"enum\":[\"a\\u0000b\"]}", "\"a\\u0000b\"");
}

TEST(const_values)
{
    OK("{\"const\":{\"x\":1,\"y\":[true]}}", "{\"y\":[true],\"x\":1}");
    BAD("{\"const\":{\"x\":1}}", "{\"x\":1,\"z\":2}", "$", "must equal {\"x\":1}");
    BAD("{\"const\":\"a\"}", "\"b\"", "$", "must equal \"a\"");
    OK("{\"const\":2}", "2.0");
    BAD("{\"const\":2}", "2.5", "$", "must equal 2");
    OK("{\"const\":null}", "null");
    BAD("{\"const\":false}", "0", "$", "must equal false");
}

TEST(numeric_bounds)
{
    OK("{\"minimum\":5}", "5");
    OK("{\"minimum\":5}", "5.0");
    BAD("{\"minimum\":5}", "4.999", "$", "must be >= 5");
    OK("{\"maximum\":5}", "5");
    BAD("{\"maximum\":5}", "6", "$", "must be <= 5");
    OK("{\"exclusiveMinimum\":0}", "0.001");
    BAD("{\"exclusiveMinimum\":0}", "0", "$", "must be > 0");
    OK("{\"exclusiveMaximum\":1.5}", "1");
    BAD("{\"exclusiveMaximum\":1.5}", "1.5", "$", "must be < 1.5");
    BAD("{\"maximum\":0.1}", "0.2", "$", "must be <= 0.1");
    /* exact comparison of large integers against reals */
    BAD("{\"maximum\":9007199254740992.0}", "9007199254740993", "$",
        "must be <= 9007199254740992");
    /* bounds ignore non-numbers */
    OK("{\"minimum\":5}", "\"3\"");
    BAD("{\"properties\":{\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":150}}}",
        "{\"age\":200}", "$.age", "must be <= 150");
}

TEST(string_lengths_count_code_points)
{
    OK("{\"maxLength\":5}", "\"h\xc3\xa9llo\""); /* 6 bytes, 5 code points */
    BAD("{\"maxLength\":4}", "\"h\xc3\xa9llo\"", "$", "must be at most 4 characters long");
    OK("{\"minLength\":2,\"maxLength\":2}", "\"\xf0\x9f\x98\x80\xe2\x82\xac\""); /* U+1F600 € */
    BAD("{\"minLength\":3}", "\"\xf0\x9f\x98\x80\xe2\x82\xac\"", "$",
        "must be at least 3 characters long");
    OK("{\"minLength\":0}", "\"\"");
    OK("{\"minLength\":2.0}", "\"ab\"");
    OK("{\"minLength\":10}", "7");
}

TEST(pattern_ere_and_translations)
{
    OK("{\"pattern\":\"^[a-z]+$\"}", "\"abc\"");
    BAD("{\"pattern\":\"^[a-z]+$\"}", "\"abC\"", "$", "does not match pattern \"^[a-z]+$\"");
    /* unanchored, as JSON Schema specifies */
    OK("{\"pattern\":\"b\"}", "\"abc\"");
    OK("{\"pattern\":\"\"}", "\"anything\"");
    /* ECMA shorthands are translated, not read as letters */
    OK("{\"pattern\":\"^\\\\d{3}-\\\\w+$\"}", "\"123-ab_c\"");
    BAD("{\"pattern\":\"^\\\\d{3}$\"}", "\"ddd\"", "$", "does not match pattern \"^\\\\d{3}$\"");
    OK("{\"pattern\":\"^[\\\\d.]+$\"}", "\"1.5\"");
    BAD("{\"pattern\":\"^[\\\\d.]+$\"}", "\"1,5\"", "$", "does not match pattern \"^[\\\\d.]+$\"");
    OK("{\"pattern\":\"^\\\\S+\\\\s\\\\S+$\"}", "\"a b\"");
    BAD("{\"pattern\":\"^\\\\S+$\"}", "\"a b\"", "$", "does not match pattern \"^\\\\S+$\"");
    OK("{\"pattern\":\"^(?:ab)+\\\\.$\"}", "\"abab.\"");
    BAD("{\"pattern\":\"^a\\\\.b$\"}", "\"axb\"", "$", "does not match pattern \"^a\\\\.b$\"");
    OK("{\"pattern\":\"^(cat|dog)s?$\"}", "\"dogs\"");
    OK("{\"pattern\":\"^[[:alpha:]]+$\"}", "\"Abc\"");
    OK("{\"pattern\":\"^https?:\\\\/\\\\/\"}", "\"https://x\"");
    /* the whole string is matched, even past an embedded NUL */
    BAD("{\"pattern\":\"^[a-z]*$\"}", "\"ab\\u0000CD\"", "$", "does not match pattern \"^[a-z]*$\"");
    OK("{\"pattern\":\"^[a-z]+$\"}", "12");
    /* lazy quantifiers match what greedy ones match */
    OK("{\"pattern\":\"^a.*?b+?c??d{1,2}?$\"}", "\"axxbbdd\"");
    BAD("{\"pattern\":\"^a+?$\"}", "\"ab\"", "$", "does not match pattern \"^a+?$\"");
    /* a brace that is not a quantifier is a literal, as in ECMA-262 */
    OK("{\"pattern\":\"^a{,5}$\"}", "\"a{,5}\"");
    BAD("{\"pattern\":\"^a{,5}$\"}", "\"aa\"", "$", "does not match pattern \"^a{,5}$\"");
    OK("{\"pattern\":\"^{x}$\"}", "\"{x}\"");
    /* within bounds: ids, uuids, bounded lengths */
    OK("{\"pattern\":\"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$\"}",
       "\"123e4567-e89b-12d3-a456-426614174000\"");
    OK("{\"pattern\":\"^[a-z0-9_]{1,1000}$\"}", "\"abc_1\"");
    OK("{\"pattern\":\"^((a+)+)+b$\"}", "\"aaab\"");
}

/* ECMA-262 semantics that a byte-wise POSIX ERE got wrong (found by the
 * differential test against ajv, tests/schema/ajv_cases.mjs). */
TEST(pattern_code_points_and_ecma_anchors)
{
    /* '.', [^...] and a non-ASCII member of [...] are one code point */
    OK("{\"pattern\":\"^.$\"}", "\"\u00e9\"");
    OK("{\"pattern\":\"^.$\"}", "\"\U0001F600\"");
    OK("{\"pattern\":\"^[^a]$\"}", "\"\u00e9\"");
    OK("{\"pattern\":\"^[\u00e9x]$\"}", "\"\u00e9\"");
    BAD("{\"pattern\":\"^..$\"}", "\"\u00e9\"", "$", "does not match pattern \"^..$\"");
    /* '.' is not a line terminator; [^] is anything */
    BAD("{\"pattern\":\".\"}", "\"\\n\"", "$", "does not match pattern \".\"");
    BAD("{\"pattern\":\"^.*$\"}", "\"a\\nb\"", "$", "does not match pattern \"^.*$\"");
    OK("{\"pattern\":\"^a[^]b$\"}", "\"a\\nb\"");
    /* ^ and $ anchor at the string's ends only, never after a newline */
    BAD("{\"pattern\":\"^a\"}", "\"b\\na\"", "$", "does not match pattern \"^a\"");
    BAD("{\"pattern\":\"a$\"}", "\"a\\nb\"", "$", "does not match pattern \"a$\"");
    OK("{\"pattern\":\"x|^a\"}", "\"ab\"");
    /* \\s is ECMA's set (U+00A0, U+2028, U+3000, U+FEFF ...) */
    OK("{\"pattern\":\"^\\\\s+$\"}", "\"\u00a0\u2028\u3000\ufeff \"");
    OK("{\"pattern\":\"^[\\\\sx]+$\"}", "\"x\u00a0\"");
    BAD("{\"pattern\":\"\\\\S\"}", "\"\u202f\"", "$", "does not match pattern \"\\\\S\"");
    /* \\xHH, \\uHHHH, \\u{H..}, surrogate pairs, escapes inside [...] */
    OK("{\"pattern\":\"^\\\\x41\\\\u00e9\\\\u{1F600}$\"}", "\"A\u00e9\U0001F600\"");
    OK("{\"pattern\":\"^\\\\ud83d\\\\ude00$\"}", "\"\U0001F600\"");
    BAD("{\"pattern\":\"\\\\x2e\"}", "\"a\"", "$", "does not match pattern \"\\\\x2e\"");
    OK("{\"pattern\":\"^[\\\\]\\\\-\\\\[\\\\^]+$\"}", "\"]-[^\"");
    BAD("{\"pattern\":\"[a\\\\-z]\"}", "\"b\"", "$", "does not match pattern \"[a\\\\-z]\"");
    OK("{\"pattern\":\"[\\\\b]\"}", "\"\\b\"");
}

/* An unanchored pattern search on a long string scans it once.  regexec's
 * own unanchored search restarts at every position: this case took 2.8 s at
 * 100 KB and, quadratic, minutes at 1 MB, holding a quernd thread. */
TEST(pattern_search_on_a_long_string)
{
    size_t n = 1 << 20;
    char *text = malloc(n + 1);
    unsigned seed = 1;
    for (size_t i = 0; i < n; i++)
        text[i] = "abxc"[(seed = seed * 1103515245 + 12345) >> 16 & 3];
    text[n] = 0;
    json_t *inst = json_string(text), *schema = J("{\"pattern\":\"(.*a){1,20}y\"}");
    char *path = NULL, *msg = NULL;
    CHECK_EQ_INT(jsonschema_validate(schema, inst, &path, &msg), -EINVAL);
    CHECK(msg && strstr(msg, "does not match pattern"));
    free(path);
    free(msg);
    json_decref(schema);
    schema = J("{\"pattern\":\"(.*a){1,20}c$\"}");
    text[n - 2] = 'a';
    text[n - 1] = 'c';
    json_decref(inst);
    inst = json_string(text);
    path = msg = NULL;
    CHECK_EQ_INT(jsonschema_validate(schema, inst, &path, &msg), 0);
    free(path);
    free(msg);
    json_decref(schema);
    json_decref(inst);
    free(text);
}

TEST(additional_properties)
{
    const char *s = "{\"properties\":{\"a\":{}},\"additionalProperties\":false}";
    OK(s, "{\"a\":1}");
    OK(s, "{}");
    BAD(s, "{\"a\":1,\"extra\":2}", "$.extra", "additional property is not allowed");
    const char *t = "{\"properties\":{\"a\":{\"type\":\"string\"}},"
                    "\"additionalProperties\":{\"type\":\"integer\"}}";
    OK(t, "{\"a\":\"x\",\"b\":1,\"c\":2}");
    BAD(t, "{\"a\":\"x\",\"b\":1,\"c\":\"no\"}", "$.c", "expected integer, got string");
    BAD(t, "{\"a\":1}", "$.a", "expected string, got integer");
    OK("{\"additionalProperties\":true}", "{\"z\":1}");
    OK("{\"additionalProperties\":false}", "[1]");
}

TEST(min_max_items)
{
    OK("{\"minItems\":1,\"maxItems\":2}", "[1]");
    OK("{\"minItems\":1,\"maxItems\":2}", "[1,2]");
    BAD("{\"minItems\":1}", "[]", "$", "must have at least 1 items");
    BAD("{\"properties\":{\"l\":{\"maxItems\":2}}}", "{\"l\":[1,2,3]}", "$.l",
        "must have at most 2 items");
}

TEST(all_of)
{
    const char *s = "{\"allOf\":[{\"type\":\"integer\"},{\"minimum\":3},{\"maximum\":5}]}";
    OK(s, "4");
    BAD(s, "6", "$", "must be <= 5");
    BAD(s, "\"4\"", "$", "expected integer, got string");
}

TEST(any_of)
{
    const char *s = "{\"properties\":{\"v\":{\"anyOf\":[{\"type\":\"string\",\"maxLength\":3},"
                    "{\"type\":\"null\"}]}}}";
    OK(s, "{\"v\":\"abc\"}");
    OK(s, "{\"v\":null}");
    BAD(s, "{\"v\":\"abcd\"}", "$.v",
        "matches no anyOf branch (branch 0 came closest: must be at most 3 characters long)");
    BAD(s, "{\"v\":1}", "$.v", "matches no anyOf branch (branch 0 came closest: expected string, "
                                 "got integer)");
    /* the branch that got deepest into the instance is the one reported */
    const char *t = "{\"anyOf\":[{\"type\":\"null\"},{\"properties\":{\"x\":{\"type\":\"integer\"}}}]}";
    BAD(t, "{\"x\":\"1\"}", "$",
        "matches no anyOf branch (branch 1 came closest: $.x: expected integer, got string)");
}

TEST(one_of)
{
    const char *s = "{\"oneOf\":[{\"type\":\"integer\"},{\"type\":\"number\",\"minimum\":10},"
                    "{\"type\":\"string\"}]}";
    OK(s, "5");
    OK(s, "10.5");
    OK(s, "\"s\"");
    BAD(s, "12", "$", "matches more than one oneOf branch (0 and 1)");
    BAD(s, "true", "$",
        "matches no oneOf branch (branch 0 came closest: expected integer, got boolean)");
}

TEST(boolean_schemas)
{
    OK("true", "{\"anything\":[1]}");
    BAD("false", "1", "$", "no value is allowed here");
    BAD("{\"items\":false}", "[1]", "$[0]", "no value is allowed here");
    OK("{\"items\":false}", "[]");
    BAD("{\"properties\":{\"gone\":false}}", "{\"gone\":0}", "$.gone", "no value is allowed here");
    CHECK_EQ_INT(C("{\"properties\":{\"a\":true,\"b\":false},\"items\":true}"), 0);
}

TEST(unknown_keywords_ignored)
{
    const char *s = "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\","
                    "\"title\":\"T\",\"description\":\"d\",\"format\":\"email\",\"default\":1,"
                    "\"examples\":[1],\"x-vendor\":{\"type\":5},\"type\":\"string\"}";
    CHECK_EQ_INT(C(s), 0);
    OK(s, "\"not an email\"");
}

TEST(check_accepts_full_schema)
{
    const char *s =
        "{\"type\":\"object\",\"required\":[\"name\",\"tags\"],"
        "\"properties\":{\"name\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":64,"
        "\"pattern\":\"^[a-z][a-z0-9_-]*$\"},"
        "\"age\":{\"type\":[\"integer\",\"null\"],\"minimum\":0,\"exclusiveMaximum\":200},"
        "\"kind\":{\"enum\":[\"a\",\"b\"]},\"v\":{\"const\":1},"
        "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"minItems\":0,\"maxItems\":10},"
        "\"x\":{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"number\"}]},"
        "\"y\":{\"oneOf\":[{\"type\":\"string\"},{\"type\":\"number\"}]},"
        "\"z\":{\"allOf\":[{\"minimum\":1},{\"exclusiveMinimum\":0}]}},"
        "\"additionalProperties\":{\"type\":\"string\"}}";
    CHECK_EQ_INT(C(s), 0);
    CHECK_EQ_STR(g_msg, "");
    OK(s, "{\"name\":\"ok_1\",\"tags\":[],\"age\":null,\"extra\":\"s\"}");
    BAD(s, "{\"name\":\"ok\",\"tags\":[\"a\",2]}", "$.tags[1]", "expected string, got integer");
}

TEST(check_rejects_bad_schemas)
{
    struct {
        const char *schema, *msg;
    } cases[] = {
        {"[]", "schema: must be an object"},
        {"true", "schema: must be an object"},
        {"{\"properties\":{\"age\":{\"minimum\":\"0\"}}}", "properties.age.minimum: must be a number"},
        {"{\"type\":\"strin\"}", "type: must be one of"},
        {"{\"type\":[]}", "type: must be one of"},
        {"{\"type\":[\"string\",1]}", "type: must be one of"},
        {"{\"properties\":[]}", "properties: must be an object of schemas"},
        {"{\"properties\":{\"a\":1}}", "properties.a: must be a schema"},
        {"{\"properties\":{\"a b\":{\"type\":1}}}", "properties[\"a b\"].type: must be one of"},
        {"{\"required\":\"a\"}", "required: must be an array of strings"},
        {"{\"required\":[\"a\",1]}", "required: must be an array of strings"},
        {"{\"items\":[{}]}", "items: must be a schema"},
        {"{\"items\":{\"items\":3}}", "items.items: must be a schema"},
        {"{\"enum\":\"a\"}", "enum: must be an array"},
        {"{\"maximum\":true}", "maximum: must be a number"},
        {"{\"exclusiveMinimum\":true}", "exclusiveMinimum: must be a number"},
        {"{\"exclusiveMaximum\":null}", "exclusiveMaximum: must be a number"},
        {"{\"minLength\":-1}", "minLength: must be a non-negative integer"},
        {"{\"maxLength\":1.5}", "maxLength: must be a non-negative integer"},
        {"{\"minItems\":\"1\"}", "minItems: must be a non-negative integer"},
        {"{\"maxItems\":-3}", "maxItems: must be a non-negative integer"},
        {"{\"pattern\":5}", "pattern: must be a string"},
        {"{\"pattern\":\"(\"}", "pattern: does not compile as a POSIX ERE"},
        {"{\"pattern\":\"(a)\\\\1\"}", "pattern: unsupported escape \\1"},
        {"{\"pattern\":\"(?=a)\"}", "pattern: (?...) groups"},
        {"{\"pattern\":\"\\\\u{110000}\"}", "pattern: bad \\u{...} escape"},
        {"{\"pattern\":\"\\\\ud800\"}", "pattern: lone surrogate \\ud800"},
        {"{\"pattern\":\"\\\\x4\"}", "pattern: \\x needs two hex digits"},
        {"{\"pattern\":\"[\\\\D]\"}", "pattern: unsupported escape \\D inside [...]"},
        {"{\"pattern\":\"ab\\\\\"}", "pattern: ends with a lone backslash"},
        {"{\"pattern\":\"a\\u0000b\"}", "pattern: contains a NUL character"},
        /* glibc's regcomp would take GBs for these (found by fuzz_schema) */
        {"{\"pattern\":\"W++++++++++++++++++++++W\"}", "pattern: a quantifier follows another"},
        {"{\"pattern\":\"a{2}{3}\"}", "pattern: a quantifier follows another"},
        {"{\"pattern\":\"a+??\"}", "pattern: a quantifier follows another"},
        {"{\"pattern\":\"a{1,10000}\"}", "pattern: repetition bound over 1000"},
        {"{\"pattern\":\"(.*){1,2000}\"}", "pattern: repetition bound over 1000"},
        {"{\"pattern\":\"(a{1,100}){1,100}\"}", "pattern: too complex"},
        {"{\"pattern\":\"[a-z]{1,1000}[0-9]{1,1000}[A-Z]{1,1000}_{1,1000}x{1,1000}\"}",
         "pattern: too complex"},
        {"{\"pattern\":\"((((((((((((((a+)+)+)+)+)+)+)+)+)+)+)+)+)+)\"}", "pattern: too complex"},
        {"{\"additionalProperties\":\"no\"}", "additionalProperties: must be a schema"},
        {"{\"anyOf\":[]}", "anyOf: must be a non-empty array of schemas"},
        {"{\"oneOf\":{}}", "oneOf: must be a non-empty array of schemas"},
        {"{\"allOf\":[{},{\"type\":\"x\"}]}", "allOf[1].type: must be one of"},
        {"{\"anyOf\":[{\"properties\":{\"q\":{\"minimum\":\"0\"}}}]}",
         "anyOf[0].properties.q.minimum: must be a number"},
        {"{\"$ref\":\"#/$defs/a\"}", "$ref: is not supported"},
        {"{\"properties\":{\"n\":{\"$ref\":\"#\"}}}", "properties.n.$ref: is not supported"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        int rc = C(cases[i].schema);
        if (rc != -EINVAL || strncmp(g_msg, cases[i].msg, strlen(cases[i].msg)) != 0) {
            fprintf(stderr, "  schema %s: rc %d msg \"%s\", expected \"%s...\"\n",
                    cases[i].schema, rc, g_msg, cases[i].msg);
            t_failed_checks++;
        }
    }
    /* NULL msg pointer is tolerated */
    json_t *s = J("{\"type\":7}");
    CHECK_EQ_INT(jsonschema_check(s, NULL), -EINVAL);
    json_decref(s);
}

/* Keywords outside the subset that constrain instances: ignoring them would
 * accept what the schema's author meant to refuse, so check refuses them
 * with -ENOTSUP (create says 400), after checking the rest; validate ignores
 * them (schemas stored before, and input requests' schemas). */
TEST(check_refuses_unsupported_assertions)
{
    struct {
        const char *schema, *msg;
    } cases[] = {
        {"{\"prefixItems\":[{\"type\":\"string\"}]}", "prefixItems: is not supported"},
        {"{\"uniqueItems\":true}", "uniqueItems: is not supported"},
        {"{\"multipleOf\":2}", "multipleOf: is not supported"},
        {"{\"items\":{\"not\":{\"type\":\"null\"}}}", "items.not: is not supported"},
        {"{\"properties\":{\"if\":{\"patternProperties\":{}}}}",
         "properties.if.patternProperties: is not supported"},
        {"{\"anyOf\":[{\"minProperties\":1}]}", "anyOf[0].minProperties: is not supported"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        int rc = C(cases[i].schema);
        if (rc != -ENOTSUP || strncmp(g_msg, cases[i].msg, strlen(cases[i].msg)) != 0) {
            fprintf(stderr, "  schema %s: rc %d msg \"%s\", expected \"%s...\"\n",
                    cases[i].schema, rc, g_msg, cases[i].msg);
            t_failed_checks++;
        }
    }
    /* a malformed keyword anywhere still makes it -EINVAL */
    CHECK_EQ_INT(C("{\"not\":{},\"properties\":{\"a\":{\"type\":5}}}"), -EINVAL);
    STARTS(g_msg, "properties.a.type: must be one of");
    CHECK_EQ_INT(C("{\"$ref\":\"#\",\"uniqueItems\":true}"), -EINVAL);
    OK("{\"type\":\"array\",\"uniqueItems\":true}", "[1,1]");
    BAD("{\"type\":\"array\",\"uniqueItems\":true}", "{}", "$", "expected array, got object");
}

TEST(validate_reports_invalid_schema)
{
    CHECK_EQ_INT(V("{\"minimum\":\"x\"}", "5"), -EINVAL);
    STARTS(g_msg, "invalid schema");
    CHECK_EQ_INT(V("{\"properties\":{\"a\":{\"pattern\":\"(\"}}}", "{\"a\":\"s\"}"), -EINVAL);
    CHECK_EQ_STR(g_path, "$.a");
    STARTS(g_msg, "invalid schema: pattern does not compile");
    /* a bad schema inside anyOf is not mistaken for a non-matching branch */
    CHECK_EQ_INT(V("{\"anyOf\":[{\"type\":\"bogus\"},true]}", "1"), -EINVAL);
    STARTS(g_msg, "invalid schema");
    CHECK_EQ_INT(V("3", "1"), -EINVAL);
    STARTS(g_msg, "invalid schema");
}

/* {"properties":{"a":{"properties":{"a":...{"type":"integer"}}}}} n levels deep. */
static json_t *deep_schema(int n)
{
    json_t *s = json_pack("{s:s}", "type", "integer");
    for (int i = 0; i < n; i++)
        s = json_pack("{s:{s:o}}", "properties", "a", s);
    return s;
}

static json_t *deep_instance(int n)
{
    json_t *v = json_string("leaf");
    for (int i = 0; i < n; i++)
        v = json_pack("{s:o}", "a", v);
    return v;
}

TEST(depth_is_capped)
{
    char *msg = NULL, *path = NULL;
    json_t *ok = deep_schema(JSONSCHEMA_MAX_DEPTH);
    CHECK_EQ_INT(jsonschema_check(ok, &msg), 0);
    json_t *inst = deep_instance(JSONSCHEMA_MAX_DEPTH);
    CHECK_EQ_INT(jsonschema_validate(ok, inst, &path, &msg), -EINVAL);
    CHECK_EQ_STR(msg, "expected integer, got string");
    CHECK(path && strlen(path) == 1 + 2 * JSONSCHEMA_MAX_DEPTH);
    free(path);
    free(msg);
    json_decref(ok);
    json_decref(inst);

    json_t *deep = deep_schema(JSONSCHEMA_MAX_DEPTH + 1);
    CHECK_EQ_INT(jsonschema_check(deep, &msg), -EINVAL);
    CHECK(msg && strstr(msg, "nested deeper than 64 levels"));
    free(msg);
    inst = deep_instance(JSONSCHEMA_MAX_DEPTH + 1);
    CHECK_EQ_INT(jsonschema_validate(deep, inst, &path, &msg), -EINVAL);
    CHECK(msg && strstr(msg, "nested deeper than 64 levels"));
    free(path);
    free(msg);
    json_decref(deep);
    json_decref(inst);

    /* Very deep values in const/enum are refused or bounded, not recursed. */
    json_t *v = json_true();
    for (int i = 0; i < 1000; i++)
        v = json_pack("[o]", v);
    json_t *cs = json_pack("{s:O}", "const", v);
    CHECK_EQ_INT(jsonschema_check(cs, &msg), -EINVAL);
    CHECK(msg && strstr(msg, "const: nested deeper"));
    free(msg);
    CHECK_EQ_INT(jsonschema_validate(cs, v, &path, &msg), -EINVAL);
    free(path);
    free(msg);
    json_decref(cs);
    json_decref(v);
}

TEST(exponential_schema_is_bounded)
{
    /* anyOf of two references to the same failing subschema, 40 levels: a
     * naive walk would take 2^40 steps; the budget stops it. */
    json_t *s = json_pack("{s:s}", "type", "string");
    for (int i = 0; i < 40; i++)
        s = json_pack("{s:[O,o]}", "anyOf", s, s);
    json_t *inst = json_integer(1);
    char *path = NULL, *msg = NULL;
    CHECK_EQ_INT(jsonschema_validate(s, inst, &path, &msg), -EINVAL);
    CHECK(msg && strstr(msg, "too much work"));
    free(path);
    free(msg);
    CHECK_EQ_INT(jsonschema_check(s, &msg), -EINVAL);
    CHECK(msg && strstr(msg, "too large"));
    free(msg);
    json_decref(s);
    json_decref(inst);
}
