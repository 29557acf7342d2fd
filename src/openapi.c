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
