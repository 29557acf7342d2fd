/*
 * test_jsonschema_ajv — quern's JSON Schema validator against the verdicts of
 * ajv 8 (draft 2020-12) on a table of schema/instance pairs: hand-picked edge
 * cases (1 vs 1.0, -0, huge numbers, code points, ECMA-262 patterns, keywords
 * outside the subset) and generated ones.  The table is made by
 * tests/schema/ajv_cases.mjs and checked in, so this runs without node; where
 * quern deliberately differs from ajv the case says why (see docs/API.md).
 * QUERN_AJV_CASES names another table.
 */
#include "t.h"
#include "jsonschema.h"
#include <errno.h>
#include <stdbool.h>

#define CASES_DEFAULT "tests/unit/jsonschema_ajv_cases.jsonl"

static const char *verdict(const json_t *schema, const json_t *inst, char **path, char **msg)
{
    *path = *msg = NULL;
    if (jsonschema_check(schema, msg) < 0)
        return "refused";
    free(*msg);
    *msg = NULL;
    return jsonschema_validate(schema, inst, path, msg) == 0 ? "valid" : "invalid";
}

static bool path_listed(const json_t *paths, const char *path)
{
    for (size_t i = 0; i < json_array_size(paths); i++)
        if (strcmp(json_string_value(json_array_get(paths, i)), path) == 0)
            return true;
    return false;
}

TEST(quern_agrees_with_ajv)
{
    const char *file = getenv("QUERN_AJV_CASES") ? getenv("QUERN_AJV_CASES") : CASES_DEFAULT;
    FILE *f = fopen(file, "r");
    CHECK(f != NULL);
    if (!f)
        return;
    char line[65536];
    int n = 0, deviations = 0;
    while (fgets(line, sizeof(line), f)) {
        json_error_t e;
        json_t *c = json_loads(line, 0, &e);
        CHECK(c != NULL);
        if (!c)
            continue;
        const char *id = json_string_value(json_object_get(c, "id"));
        const char *want = json_string_value(json_object_get(c, "expect"));
        const char *ajv = json_string_value(json_object_get(c, "ajv"));
        json_t *s = json_loads(json_string_value(json_object_get(c, "s")), JSON_DECODE_ANY, &e);
        json_t *i = json_loads(json_string_value(json_object_get(c, "i")), JSON_DECODE_ANY, &e);
        CHECK(id && want && ajv && s && i);
        if (id && want && ajv && s && i) {
            char *path, *msg;
            const char *got = verdict(s, i, &path, &msg);
            if (strcmp(got, want) != 0) {
                fprintf(stderr, "  %s: schema %s instance %s: quern %s (%s%s%s), expected %s\n", id,
                        json_string_value(json_object_get(c, "s")),
                        json_string_value(json_object_get(c, "i")), got, path ? path : "",
                        path ? ": " : "", msg ? msg : "", want);
                t_failed_checks++;
            } else if (strcmp(got, "invalid") == 0 && strcmp(ajv, "invalid") == 0 &&
                       !path_listed(json_object_get(c, "paths"), path)) {
                /* the path named must be one where ajv also found a failure */
                char *ajv_paths = json_dumps(json_object_get(c, "paths"), JSON_COMPACT);
                fprintf(stderr, "  %s: schema %s instance %s: quern names %s (%s), ajv %s\n", id,
                        json_string_value(json_object_get(c, "s")),
                        json_string_value(json_object_get(c, "i")), path, msg, ajv_paths);
                free(ajv_paths);
                t_failed_checks++;
            }
            deviations += strcmp(want, ajv) != 0;
            free(path);
            free(msg);
        }
        n++;
        json_decref(s);
        json_decref(i);
        json_decref(c);
    }
    fclose(f);
    fprintf(stderr, "  %d cases, %d deliberate deviations from ajv\n", n, deviations);
    CHECK(n > 1000);
}
