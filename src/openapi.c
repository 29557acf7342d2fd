/*
 * openapi — generates the OpenAPI 3.1 document from the route table: one
 * operation per route with its path parameters, the bearer security scheme,
 * the scopes in the description, the error schema on every 4xx.  Built once
 * at start, before the HTTP threads run; read-only afterwards.
 */
#include "openapi.h"

#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "util.h"

const char *openapi_json = "{}";
static char *doc;

static const char *scope_text(unsigned s)
{
    if (s & SCOPE_PUBLIC)
        return "public";
    if (s & SCOPE_ROOT)
        return "root key";
    static __thread char buf[128];
    buf[0] = 0;
    struct buf b;
    buf_init(&b);
    if (s & SCOPE_TASK_READ) buf_puts(&b, "task:read ");
    if (s & SCOPE_TASK_WRITE) buf_puts(&b, "task:write ");
    if (s & SCOPE_WORKER) buf_puts(&b, "worker ");
    if (s & SCOPE_ADMIN) buf_puts(&b, "admin ");
    if (s & SCOPE_RUN_TOKEN) buf_puts(&b, "connection-token ");
    snprintf(buf, sizeof buf, "%s", b.data ? b.data : "");
    buf_release(&b);
    return buf;
}

/* The resource a route returns, from its pattern: component schema name
 * and whether the route lists it. */
static const char *resource_of(const char *pattern, const char *method, bool *list)
{
    static const struct {
        const char *suffix;
        const char *schema;
        bool list_on_get;
    } map[] = {
        {"/api/projects", "Project", true},
        {"/api_keys", "ApiKey", true},
        {"/api_keys/:id", "ApiKey", false},
        {"/definitions", "Definition", true},
        {"/definitions/:id", "Definition", false},
        {"/definitions/:id/trigger", "Task", false},
        {"/tasks", "Task", true},
        {"/tasks/:task_id", "Task", false},
        {"/tasks/:task_id/run", "Run", false},
        {"/tasks/:task_id/retry", "Run", false},
        {"/tasks/:task_id/cancel", "Task", false},
        {"/tasks/:task_id/pause", "Task", false},
        {"/tasks/:task_id/resume", "Task", false},
        {"/tasks/:task_id/runs", "Run", true},
        {"/runs/:id", "Run", false},
        {"/runs/:id/cancel", "Run", false},
        {"/runs/:id/interaction", "Run", false},
        {"/runs/:id/review", "Run", false},
        {"/runs/:id/heartbeat", "Run", false},
        {"/runs/:id/set_output", "Run", false},
        {"/runs", "Run", true},
        {"/task-runs/:run_id", "Run", false},
        {"/storage", "StorageInstance", true},
    };
    size_t n = strlen(pattern);
    for (size_t i = 0; i < ARRAY_LEN(map); i++) {
        size_t m = strlen(map[i].suffix);
        if (n >= m && !strcmp(pattern + n - m, map[i].suffix)) {
            *list = map[i].list_on_get && !strcmp(method, "GET");
            return map[i].schema;
        }
    }
    *list = false;
    return NULL;
}

static json_t *ref(const char *name)
{
    char *r = xasprintf("#/components/schemas/%s", name);
    json_t *o = json_pack("{s:s}", "$ref", r);
    free(r);
    return o;
}

/* The main objects, loosely: the fields every client relies on. */
static json_t *schemas(void)
{
    json_t *ts = json_pack("{s:s, s:s}", "type", "string", "format", "date-time");
    json_t *s = json_pack(
        "{s:{s:s, s:{s:{s:s}, s:{s:s}, s:O}, s:[s, s]},"
        " s:{s:s, s:{s:{s:s}, s:{s:s}, s:{s:s, s:{s:s}}, s:{s:s}}, s:[s, s]},"
        " s:{s:s, s:{s:{s:s}, s:{s:[s, s]}, s:{s:[s, s]}, s:{s:[s, s]}, s:{s:s}, s:{s:s}}, s:[s]},"
        " s:{s:s, s:{s:{s:s}, s:{s:[s, s]}, s:{s:s}, s:{s:s}, s:{s:s}, s:{s:s}, s:{s:s},"
        "       s:{s:[s, s]}, s:{s:s}, s:{s:s}, s:{s:s}, s:{s:s}, s:O, s:O}, s:[s, s, s]},"
        " s:{s:s, s:{s:{s:s}, s:{s:s}, s:{s:s}, s:{s:s}, s:{s:s}, s:{}, s:{}, s:{s:[s, s]},"
        "       s:{s:s}, s:{s:s}, s:{s:[s, s]}, s:O, s:O}, s:[s, s, s, s]},"
        " s:{s:s, s:{s:{s:s}, s:{s:s}, s:O, s:{s:s}, s:{s:[s, s]}, s:{s:[s, s]}, s:{s:s}},"
        "       s:[s, s]},"
        " s:{s:s, s:{s:{s:s}, s:{s:s}, s:{s:s}, s:{s:[s, s]}, s:{s:s}}, s:[s, s]}}",
        "Project", "type", "object", "properties", "id", "type", "string", "name", "type", "string",
        "created_at", ts, "required", "id", "name",
        "ApiKey", "type", "object", "properties", "id", "type", "string", "name", "type", "string",
        "scopes", "type", "array", "items", "type", "string", "key", "type", "string", "required",
        "id", "scopes",
        "Definition", "type", "object", "properties", "id", "type", "string", "title", "type",
        "string", "null", "code", "type", "string", "null", "input_schema", "type", "object",
        "null", "runtime_id", "type", "string", "output_schema", "type", "object", "required", "id",
        "Task", "type", "object", "properties", "id", "type", "string", "name", "type", "string",
        "null", "type", "type", "string", "status", "type", "string", "priority", "type", "string",
        "runtime_id", "type", "string", "settings", "type", "object", "schedule", "type", "string",
        "null", "timezone", "type", "string", "progress", "type", "number", "run_count", "type",
        "integer", "input", "type", "object", "created_at", ts, "updated_at", ts, "required", "id",
        "status", "type",
        "Run", "type", "object", "properties", "id", "type", "string", "task_id", "type", "string",
        "project_id", "type", "string", "status", "type", "string", "attempt", "type", "integer",
        "input", "output", "error", "type", "object", "null", "progress", "type", "number",
        "exit_code", "type", "integer", "null", "artifacts", "type", "array", "created_at", ts,
        "updated_at", ts, "required", "id", "task_id", "status", "attempt",
        "Event", "type", "object", "properties", "id", "type", "string", "type", "type", "string",
        "created_at", ts, "project_id", "type", "string", "task_id", "type", "string", "null",
        "run_id", "type", "string", "null", "data", "type", "object", "required", "id", "type",
        "StorageInstance", "type", "object", "properties", "id", "type", "string", "scope", "type",
        "string", "name", "type", "string", "account_id", "type", "string", "null", "size_bytes",
        "type", "integer", "required", "id", "scope");
    json_decref(ts);
    return s;
}

void openapi_build(void)
{
    json_t *paths = json_object();
    for (const struct route *rt = api_routes; rt->method; rt++) {
        /* "/a/:b/c" -> "/a/{b}/c" */
        struct buf p;
        buf_init(&p);
        json_t *params = json_array();
        for (const char *c = rt->pattern; *c;) {
            if (*c == ':') {
                const char *e = strchrnul(c, '/');
                char *name = xstrndup(c + 1, (size_t)(e - c - 1));
                buf_printf(&p, "{%s}", name);
                json_array_append_new(params, json_pack("{s:s, s:s, s:b, s:{s:s}}", "name", name,
                                                        "in", "path", "required", 1, "schema",
                                                        "type", "string"));
                free(name);
                c = e;
            } else {
                buf_append(&p, c, 1);
                c++;
            }
        }
        json_t *item = json_object_get(paths, p.data);
        if (!item) {
            item = json_object();
            json_object_set_new(paths, p.data, item);
        }
        char method[16];
        size_t i;
        for (i = 0; rt->method[i] && i < sizeof method - 1; i++)
            method[i] = (char)(rt->method[i] | 0x20);
        method[i] = 0;
        char opid[256];
        snprintf(opid, sizeof opid, "%s%s", method, p.data);
        for (char *c = opid; *c; c++)
            if (*c == '/' || *c == '{' || *c == '}' || *c == '-')
                *c = '_';
        json_t *op = json_pack(
            "{s:s, s:s, s:o, s:{s:{s:s}, s:{s:s, s:{s:{s:{s:s}}}}, s:{s:s, s:{s:{s:{s:s}}}}, "
            "s:{s:s, s:{s:{s:{s:s}}}}, s:{s:s, s:{s:{s:{s:s}}}}}}",
            "operationId", opid, "description", scope_text(rt->scope), "parameters", params,
            "responses", "200", "description", "success", "400", "description",
            "invalid request", "content", "application/json", "schema", "$ref",
            "#/components/schemas/Error", "401", "description", "missing or bad key", "content",
            "application/json", "schema", "$ref", "#/components/schemas/Error", "403",
            "description", "missing scope", "content", "application/json", "schema", "$ref",
            "#/components/schemas/Error", "404", "description", "not found", "content",
            "application/json", "schema", "$ref", "#/components/schemas/Error");
        if (!(rt->scope & SCOPE_PUBLIC))
            json_object_set_new(json_object_get(op, "responses"), "429",
                                json_pack("{s:s, s:{s:{s:{s:s}}}}", "description",
                                          "over the key's rate limit, when one is configured "
                                          "(Retry-After)",
                                          "content", "application/json", "schema", "$ref",
                                          "#/components/schemas/Error"));
        bool list = false;
        const char *res = resource_of(rt->pattern, rt->method, &list);
        if (res) {
            json_t *schema = list ? json_pack("{s:s, s:{s:{s:s, s:o}, s:{s:s}, s:{s:s}}, s:[s]}",
                                              "type", "object", "properties", "data", "type",
                                              "array", "items", ref(res), "has_more", "type",
                                              "boolean", "total", "type", "integer", "required",
                                              "data")
                                  : ref(res);
            bool creates = !strcmp(rt->method, "POST") && !strstr(rt->pattern, "/lease") &&
                           (!strcmp(res, "Task") || !strcmp(res, "Run") || !strcmp(res, "Project") ||
                            !strcmp(res, "ApiKey") || !strcmp(res, "Definition") ||
                            !strcmp(res, "StorageInstance")) &&
                           !strstr(rt->pattern, "/cancel") && !strstr(rt->pattern, "/pause") &&
                           !strstr(rt->pattern, "/resume") && !strstr(rt->pattern, "/interaction") &&
                           !strstr(rt->pattern, "/review") && !strstr(rt->pattern, "/heartbeat");
            json_t *responses = json_object_get(op, "responses");
            json_t *ok = json_pack("{s:s, s:{s:{s:o}}}", "description", "success", "content",
                                   "application/json", "schema", schema);
            if (creates) {
                json_object_del(responses, "200");
                json_object_set_new(responses, "201", ok);
            } else {
                json_object_set_new(responses, "200", ok);
            }
        }
        if (strstr(rt->pattern, "/session_logs"))
            json_object_set_new(json_object_get(op, "responses"), "200",
                                json_pack("{s:s, s:{s:{s:{s:s, s:o}}}}", "description",
                                          "the run's events", "content", "application/json",
                                          "schema", "type", "array", "items", ref("Event")));
        if (!strcmp(rt->method, "POST") || !strcmp(rt->method, "PATCH") ||
            !strcmp(rt->method, "PUT"))
            json_object_set_new(op, "requestBody",
                                json_pack("{s:b, s:{s:{s:{s:s}}}}", "required", 0, "content",
                                          "application/json", "schema", "type", "object"));
        if (rt->scope & SCOPE_PUBLIC)
            json_object_set_new(op, "security", json_array());
        json_object_set_new(item, method, op);
        buf_release(&p);
    }
    json_t *root = json_pack(
        "{s:s, s:{s:s, s:s, s:s}, s:o, s:{s:{s:{s:s, s:s}}, s:{s:{s:s, s:{s:{s:s, s:{s:{s:s}, "
        "s:{s:s}, s:{s:s}, s:{s:s}}, s:[s, s]}}}}}, s:[{s:[]}]}",
        "openapi", "3.1.0", "info", "title", "quern", "version", "0.1.0", "description",
        "The quern task execution server API (see docs/API.md).", "paths", paths,
        "components", "securitySchemes", "bearer", "type", "http", "scheme", "bearer",
        "schemas", "Error", "type", "object", "properties", "error", "type", "object",
        "properties", "type", "type", "string", "code", "type", "string", "message", "type",
        "string", "param", "type", "string", "required", "type", "message", "security",
        "bearer");
    json_t *sch = schemas();
    json_object_update(json_object_get(json_object_get(root, "components"), "schemas"), sch);
    json_decref(sch);
    doc = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    openapi_json = doc;
}

void openapi_free(void)
{
    free(doc);
    doc = NULL;
    openapi_json = "{}";
}
