/*
 * openapi — generates the OpenAPI 3.1 document from the route table: one
 * operation per route with its path parameters, the bearer security scheme,
 * the scopes in the description, the error schema on every 4xx.  Built once
 * at start, before the HTTP threads run; read-only afterwards.
 */
#include "openapi.h"

#include <stdio.h>
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
        {"/tasks/batch", "Task", false},
        {"/workers/lease", "Run", false},
        {"/workers/report", "ReportResult", false},
        {"/triggers", "Trigger", true},
        {"/triggers/:id", "Trigger", false},
        {"/webhooks", "Webhook", true},
        {"/webhooks/:id", "Webhook", false},
        {"/deliveries", "Delivery", true},
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

/* The objects the API answers, as docs/API.md describes them: every field
 * a client may meet, with its type and whether it may be null (a field the
 * contract lists is always present, null when it has no value).  Only the
 * fields every shape of an object carries are required: Prefer:
 * return=minimal answers a subset.  JSON text rather than json_pack(), whose
 * format strings got out of step with their arguments unnoticed (a property
 * named "null", exit_code not nullable). */
static const char schemas_json[] =
    "{"
    "\"Error\": {"
    "  \"type\": \"object\","
    "  \"properties\": {"
    "    \"error\": {"
    "      \"type\": \"object\","
    "      \"properties\": {"
    "        \"type\": {\"enum\": [\"invalid_request\", \"unauthorized\", \"forbidden\", \"not_found\","
    "                  \"conflict\", \"rate_limited\", \"payload_too_large\", \"internal\"]},"
    "        \"code\": {\"type\": \"string\"},"
    "        \"message\": {\"type\": \"string\"},"
    "        \"param\": {\"type\": \"string\"}"
    "      },"
    "      \"required\": [\"type\", \"code\", \"message\"],"
    "      \"additionalProperties\": false"
    "    }"
    "  },"
    "  \"required\": [\"error\"],"
    "  \"additionalProperties\": false"
    "},"
    "\"RunStatus\": {\"enum\": ["
    "  \"queued\", \"running\", \"paused\", \"interaction_required\", \"review_required\","
    "  \"completed\", \"failed\", \"timed_out\", \"denied\", \"canceling\", \"canceled\"]},"
    "\"RunError\": {"
    "  \"description\": \"a run's error\","
    "  \"type\": \"object\","
    "  \"properties\": {"
    "    \"type\": {\"type\": \"string\"},"
    "    \"code\": {\"type\": \"string\"},"
    "    \"message\": {\"type\": \"string\"}"
    "  },"
    "  \"required\": [\"type\", \"code\", \"message\"]"
    "},"
    "\"Deleted\": {"
    "  \"type\": \"object\","
    "  \"properties\": {"
    "    \"id\": {\"type\": \"string\"},"
    "    \"name\": {\"type\": \"string\"},"
    "    \"deleted\": {\"const\": true}"
    "  },"
    "  \"required\": [\"deleted\"]"
    "},"
    "\"Artifact\": {"
    "  \"type\": \"object\","
    "  \"properties\": {"
    "    \"id\": {\"type\": \"string\"},"
    "    \"name\": {\"type\": \"string\"},"
    "    \"storage_path\": {\"type\": \"string\"},"
    "    \"size\": {\"type\": \"integer\"},"
    "    \"sha256\": {\"type\": \"string\"},"
    "    \"content_type\": {\"type\": \"string\"}"
    "  },"
    "  \"required\": [\"name\", \"storage_path\", \"size\", \"sha256\", \"content_type\"]"
    "},"
    "\"StorageAccess\": {"
    "  \"type\": \"object\","
    "  \"properties\": {"
    "    \"instance_id\": {\"type\": \"string\"},"
    "    \"scope\": {\"enum\": [\"scratch\", \"account\", \"project\", \"organization\"]},"
    "    \"access_type\": {\"enum\": [\"opened\", \"provided\", \"accessed\"]},"
    "    \"at\": {\"type\": \"string\", \"format\": \"date-time\"}"
    "  },"
    "  \"required\": [\"instance_id\", \"scope\", \"access_type\", \"at\"]"
    "},"
    "\"Project\": {"
    "  \"type\": \"object\","
    "  \"properties\": {"
    "    \"id\": {\"type\": \"string\"},"
    "    \"name\": {\"type\": \"string\"},"
    "    \"created_at\": {\"type\": \"string\", \"format\": \"date-time\"},"
    "    \"updated_at\": {\"type\": \"string\", \"format\": \"date-time\"}"
    "  },"
    "  \"required\": [\"id\", \"name\", \"created_at\"]"
    "},"
    "\"ApiKey\": {"
    "  \"type\": \"object\","
    "  \"properties\": {"
    "    \"id\": {\"type\": \"string\"},"
    "    \"project_id\": {\"type\": \"string\"},"
    "    \"name\": {\"type\": [\"string\", \"null\"]},"
    "    \"scopes\": {\"type\": \"array\", \"items\": {\"enum\": [\"task:read\", \"task:write\", \"worker\", \"admin\"]}},"
    "    \"key\": {\"type\": [\"string\", \"null\"], \"description\": \"the key itself: in the create's answer only\"},"
    "    \"created_at\": {\"type\": \"string\", \"format\": \"date-time\"},"
    "    \"revoked\": {\"type\": \"boolean\"},"
    "    \"revoked_at\": {\"type\": [\"string\", \"null\"], \"format\": \"date-time\"}"
    "  },"
    "  \"required\": [\"id\", \"scopes\"]"
    "},"
    "\"Definition\": {"
    "  \"type\": \"object\","
    "  \"properties\": {"
    "    \"id\": {\"type\": \"string\"},"
    "    \"project_id\": {\"type\": \"string\"},"
    "    \"title\": {\"type\": [\"string\", \"null\"]},"
    "    \"description\": {\"type\": [\"string\", \"null\"]},"
    "    \"runtime_id\": {\"type\": \"string\"},"
    "    \"code\": {\"type\": [\"string\", \"null\"]},"
    "    \"input_schema\": {\"type\": [\"object\", \"null\"]},"
    "    \"output_schema\": {\"type\": [\"object\", \"null\"]},"
    "    \"settings\": {\"type\": \"object\"},"
    "    \"created_at\": {\"type\": \"string\", \"format\": \"date-time\"},"
    "    \"updated_at\": {\"type\": \"string\", \"format\": \"date-time\"}"
    "  },"
    "  \"required\": [\"id\"]"
    "},"
    "\"Task\": {"
    "  \"type\": \"object\","
    "  \"description\": \"with Prefer: return=minimal a create answers {id, status, run_id} only\","
    "  \"properties\": {"
    "    \"id\": {\"type\": \"string\"},"
    "    \"project_id\": {\"type\": \"string\"},"
    "    \"name\": {\"type\": [\"string\", \"null\"]},"
    "    \"description\": {\"type\": [\"string\", \"null\"]},"
    "    \"type\": {\"enum\": [\"manual\", \"scheduled\", \"triggered\"]},"
    "    \"status\": {\"anyOf\": [{\"const\": \"pending\"}, {\"$ref\": \"#/components/schemas/RunStatus\"}]},"
    "    \"code\": {\"type\": [\"string\", \"null\"]},"
    "    \"runtime_id\": {\"type\": \"string\"},"
    "    \"definition_id\": {\"type\": [\"string\", \"null\"]},"
    "    \"input\": {\"type\": \"object\"},"
    "    \"metadata\": {\"type\": \"object\"},"
    "    \"priority\": {\"enum\": [\"low\", \"medium\", \"high\", \"urgent\"]},"
    "    \"settings\": {\"type\": \"object\"},"
    "    \"deadline\": {\"type\": [\"string\", \"null\"], \"format\": \"date-time\"},"
    "    \"dependencies\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}},"
    "    \"parent_id\": {\"type\": [\"string\", \"null\"]},"
    "    \"assigned_agent_id\": {\"type\": [\"string\", \"null\"]},"
    "    \"assigned_agents\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}},"
    "    \"schedule\": {\"type\": [\"string\", \"null\"]},"
    "    \"timezone\": {\"type\": \"string\"},"
    "    \"output_schema\": {\"type\": [\"object\", \"null\"]},"
    "    \"account_id\": {\"type\": [\"string\", \"null\"]},"
    "    \"client_id\": {\"type\": [\"string\", \"null\"]},"
    "    \"storage\": {\"type\": \"object\"},"
    "    \"secrets\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}},"
    "    \"secrets_env\": {\"type\": [\"boolean\", \"string\"]},"
    "    \"progress\": {\"type\": \"number\"},"
    "    \"last_run_at\": {\"type\": [\"string\", \"null\"], \"format\": \"date-time\"},"
    "    \"next_run_at\": {\"type\": [\"string\", \"null\"], \"format\": \"date-time\"},"
    "    \"run_count\": {\"type\": \"integer\"},"
    "    \"paused\": {\"type\": \"boolean\"},"
    "    \"created_at\": {\"type\": \"string\", \"format\": \"date-time\"},"
    "    \"updated_at\": {\"type\": \"string\", \"format\": \"date-time\"},"
    "    \"run\": {\"$ref\": \"#/components/schemas/Run\"},"
    "    \"run_id\": {\"type\": [\"string\", \"null\"]}"
    "  },"
    "  \"required\": [\"id\", \"status\"]"
    "},"
    "\"Run\": {"
    "  \"type\": \"object\","
    "  \"description\": \"with Prefer: return=minimal a lease answers {id, task_id, project_id, attempt,"
    " status, input, definition_id, agent_id, worker_id, lease_expires_at, checkpoint} only\","
    "  \"properties\": {"
    "    \"id\": {\"type\": \"string\"},"
    "    \"task_id\": {\"type\": \"string\"},"
    "    \"project_id\": {\"type\": \"string\"},"
    "    \"definition_id\": {\"type\": [\"string\", \"null\"]},"
    "    \"attempt\": {\"type\": \"integer\"},"
    "    \"status\": {\"$ref\": \"#/components/schemas/RunStatus\"},"
    "    \"input\": {},"
    "    \"output\": {},"
    "    \"error\": {\"oneOf\": [{\"type\": \"null\"}, {\"$ref\": \"#/components/schemas/RunError\"}]},"
    "    \"errors\": {\"type\": \"array\", \"items\": {\"$ref\": \"#/components/schemas/RunError\"}},"
    "    \"exit_code\": {\"type\": [\"integer\", \"null\"]},"
    "    \"runtime_id\": {\"type\": [\"string\", \"null\"]},"
    "    \"agent_id\": {\"type\": [\"string\", \"null\"]},"
    "    \"worker_id\": {\"type\": [\"string\", \"null\"]},"
    "    \"branch\": {\"type\": [\"string\", \"null\"]},"
    "    \"stage\": {\"type\": [\"string\", \"null\"]},"
    "    \"state\": {},"
    "    \"progress\": {\"type\": \"number\"},"
    "    \"iterations\": {\"type\": \"integer\"},"
    "    \"parent_run_id\": {\"type\": [\"string\", \"null\"]},"
    "    \"execution_name\": {\"type\": [\"string\", \"null\"]},"
    "    \"tokens_used\": {\"type\": \"integer\"},"
    "    \"cost\": {\"type\": \"number\"},"
    "    \"checkpoints_count\": {\"type\": \"integer\"},"
    "    \"artifacts\": {\"type\": \"array\", \"items\": {\"$ref\": \"#/components/schemas/Artifact\"}},"
    "    \"created_at\": {\"type\": \"string\", \"format\": \"date-time\"},"
    "    \"queued_at\": {\"type\": [\"string\", \"null\"], \"format\": \"date-time\"},"
    "    \"started_at\": {\"type\": [\"string\", \"null\"], \"format\": \"date-time\"},"
    "    \"completed_at\": {\"type\": [\"string\", \"null\"], \"format\": \"date-time\"},"
    "    \"updated_at\": {\"type\": \"string\", \"format\": \"date-time\"},"
    "    \"duration_ms\": {\"type\": [\"integer\", \"null\"]},"
    "    \"lease_expires_at\": {\"type\": [\"string\", \"null\"], \"format\": \"date-time\"},"
    "    \"priority\": {\"enum\": [\"low\", \"medium\", \"high\", \"urgent\"]},"
    "    \"node_id\": {\"type\": [\"string\", \"null\"]},"
    "    \"blocked_by\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}},"
    "    \"interaction\": {\"type\": [\"object\", \"null\"]},"
    "    \"pending_interactions\": {\"type\": \"array\"},"
    "    \"storage_access\": {\"type\": \"array\", \"items\": {\"$ref\": \"#/components/schemas/StorageAccess\"}},"
    "    \"logs\": {\"type\": \"array\"},"
    "    \"checkpoints\": {\"type\": \"array\"},"
    "    \"checkpoint\": {},"
    "    \"retry_of\": {\"type\": [\"string\", \"null\"]},"
    "    \"cancel_message\": {\"type\": [\"string\", \"null\"]},"
    "    \"interaction_response\": {},"
    "    \"review\": {"
    "      \"type\": [\"object\", \"null\"],"
    "      \"properties\": {\"decision\": {\"enum\": [\"approve\", \"reject\"]},"
    "                     \"comment\": {\"type\": [\"string\", \"null\"]}}"
    "    },"
    "    \"cpu_ms\": {\"type\": [\"integer\", \"null\"]},"
    "    \"peak_memory_kb\": {\"type\": [\"integer\", \"null\"]},"
    "    \"wall_ms\": {\"type\": [\"integer\", \"null\"]}"
    "  },"
    "  \"required\": [\"id\", \"task_id\", \"project_id\", \"status\", \"attempt\"]"
    "},"
    "\"Event\": {"
    "  \"type\": \"object\","
    "  \"properties\": {"
    "    \"id\": {\"type\": \"string\"},"
    "    \"type\": {\"type\": \"string\"},"
    "    \"created_at\": {\"type\": \"string\", \"format\": \"date-time\"},"
    "    \"project_id\": {\"type\": \"string\"},"
    "    \"task_id\": {\"type\": [\"string\", \"null\"]},"
    "    \"run_id\": {\"type\": [\"string\", \"null\"]},"
    "    \"data\": {\"type\": \"object\"}"
    "  },"
    "  \"required\": [\"id\", \"type\", \"created_at\", \"project_id\", \"task_id\", \"run_id\", \"data\"]"
    "},"
    "\"StorageInstance\": {"
    "  \"type\": \"object\","
    "  \"properties\": {"
    "    \"id\": {\"type\": \"string\"},"
    "    \"project_id\": {\"type\": \"string\"},"
    "    \"scope\": {\"enum\": [\"account\", \"project\", \"organization\"]},"
    "    \"name\": {\"type\": \"string\"},"
    "    \"account_id\": {\"type\": [\"string\", \"null\"]},"
    "    \"size_bytes\": {\"type\": \"integer\"},"
    "    \"size_bytes_partial\": {\"type\": \"boolean\"},"
    "    \"created_at\": {\"type\": \"string\", \"format\": \"date-time\"}"
    "  },"
    "  \"required\": [\"id\", \"scope\", \"name\", \"size_bytes\"]"
    "},"
    "\"Trigger\": {"
    "  \"type\": \"object\","
    "  \"properties\": {"
    "    \"id\": {\"type\": \"string\"},"
    "    \"project_id\": {\"type\": \"string\"},"
    "    \"task_id\": {\"type\": \"string\"},"
    "    \"url\": {\"type\": \"string\"},"
    "    \"description\": {\"type\": [\"string\", \"null\"]},"
    "    \"secret\": {\"type\": \"string\", \"description\": \"a generated secret, in the create's answer only\"},"
    "    \"created_at\": {\"type\": \"string\", \"format\": \"date-time\"},"
    "    \"updated_at\": {\"type\": \"string\", \"format\": \"date-time\"},"
    "    \"last_fired_at\": {\"type\": [\"string\", \"null\"], \"format\": \"date-time\"},"
    "    \"last_run_id\": {\"type\": [\"string\", \"null\"]},"
    "    \"fire_count\": {\"type\": \"integer\"}"
    "  },"
    "  \"required\": [\"id\", \"task_id\", \"url\"]"
    "},"
    "\"Webhook\": {"
    "  \"type\": \"object\","
    "  \"properties\": {"
    "    \"id\": {\"type\": \"string\"},"
    "    \"project_id\": {\"type\": \"string\"},"
    "    \"url\": {\"type\": \"string\"},"
    "    \"events\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}},"
    "    \"description\": {\"type\": [\"string\", \"null\"]},"
    "    \"secret\": {\"type\": \"string\", \"description\": \"a generated secret, in the create's answer only\"},"
    "    \"created_at\": {\"type\": \"string\", \"format\": \"date-time\"},"
    "    \"updated_at\": {\"type\": \"string\", \"format\": \"date-time\"}"
    "  },"
    "  \"required\": [\"id\", \"url\", \"events\"]"
    "},"
    "\"Delivery\": {"
    "  \"type\": \"object\","
    "  \"properties\": {"
    "    \"id\": {\"type\": \"string\"},"
    "    \"project_id\": {\"type\": \"string\"},"
    "    \"webhook_id\": {\"type\": \"string\"},"
    "    \"event_id\": {\"type\": \"string\"},"
    "    \"event_type\": {\"type\": \"string\"},"
    "    \"url\": {\"type\": \"string\"},"
    "    \"status\": {\"enum\": [\"pending\", \"succeeded\", \"failed\"]},"
    "    \"payload\": {\"$ref\": \"#/components/schemas/Event\"},"
    "    \"attempts\": {\"type\": \"array\", \"items\": {\"type\": \"object\", \"properties\": {\"attempt\": {\"type\": \"integer\"}, \"started_at\": {\"type\": \"string\", \"format\": \"date-time\"}, \"completed_at\": {\"type\": [\"string\", \"null\"], \"format\": \"date-time\"}, \"duration_ms\": {\"type\": [\"integer\", \"null\"]}, \"status_code\": {\"type\": [\"integer\", \"null\"]}, \"error\": {\"type\": [\"string\", \"null\"]}, \"response_body\": {\"type\": [\"string\", \"null\"]}}}},"
    "    \"attempt_count\": {\"type\": \"integer\"},"
    "    \"last_status_code\": {\"type\": [\"integer\", \"null\"]},"
    "    \"last_error\": {\"type\": [\"string\", \"null\"]},"
    "    \"created_at\": {\"type\": \"string\", \"format\": \"date-time\"},"
    "    \"next_attempt_at\": {\"type\": [\"string\", \"null\"], \"format\": \"date-time\"},"
    "    \"completed_at\": {\"type\": [\"string\", \"null\"], \"format\": \"date-time\"},"
    "    \"updated_at\": {\"type\": \"string\", \"format\": \"date-time\"}"
    "  },"
    "  \"required\": [\"id\", \"webhook_id\", \"event_id\", \"event_type\", \"status\", \"payload\"]"
    "},"
    "\"ReportResult\": {"
    "  \"type\": \"object\","
    "  \"properties\": {"
    "    \"run_id\": {\"type\": [\"string\", \"null\"], \"description\": \"null when the result named none\"},"
    "    \"ok\": {\"type\": \"boolean\"},"
    "    \"error\": {"
    "      \"description\": \"null when ok; else as an error body's error\","
    "      \"oneOf\": [{\"type\": \"null\"},"
    "                {\"$ref\": \"#/components/schemas/Error/properties/error\"}]"
    "    }"
    "  },"
    "  \"required\": [\"run_id\", \"ok\"]"
    "}"
    "}";

/* The component schemas (new reference).  The text is a constant of this
 * file: one that does not parse is a bug, not an input. */
static json_t *schemas(void)
{
    json_error_t err;
    json_t *s = json_loads(schemas_json, 0, &err);
    if (!s) {
        fprintf(stderr, "quern: %s:%d: openapi schemas: %s (line %d)\n", __FILE__, __LINE__, err.text,
                err.line);
        abort();
    }
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
        /* every other status (405, 409, 413, 5xx...) answers the same error body */
        json_object_set_new(json_object_get(op, "responses"), "default",
                            json_pack("{s:s, s:{s:{s:{s:s}}}}", "description",
                                      "an error (API.md, Conventions)", "content",
                                      "application/json", "schema", "$ref",
                                      "#/components/schemas/Error"));
        if (!(rt->scope & SCOPE_PUBLIC))
            json_object_set_new(json_object_get(op, "responses"), "429",
                                json_pack("{s:s, s:{s:{s:{s:s}}}}", "description",
                                          "over the key's rate limit, when one is configured "
                                          "(Retry-After)",
                                          "content", "application/json", "schema", "$ref",
                                          "#/components/schemas/Error"));
        bool list = false;
        const char *res = resource_of(rt->pattern, rt->method, &list);
        /* a DELETE answers {id, deleted: true}, but revoking a key answers the key */
        if (res && !strcmp(rt->method, "DELETE") && strcmp(res, "ApiKey"))
            res = "Deleted";
        if (res) {
            /* a batch, a lease and a report answer {data: [...]}, no page */
            bool many = strstr(rt->pattern, "/tasks/batch") || strstr(rt->pattern, "/workers/");
            json_t *schema = list ? json_pack("{s:s, s:{s:{s:s, s:o}, s:{s:s}, s:{s:s}}, s:[s, s, s]}",
                                              "type", "object", "properties", "data", "type",
                                              "array", "items", ref(res), "has_more", "type",
                                              "boolean", "total", "type", "integer", "required",
                                              "data", "has_more", "total")
                             : many ? json_pack("{s:s, s:{s:{s:s, s:o}}, s:[s]}", "type", "object",
                                                "properties", "data", "type", "array", "items",
                                                ref(res), "required", "data")
                                    : ref(res);
            bool creates = !strcmp(rt->method, "POST") && !strstr(rt->pattern, "/lease") &&
                           (!strcmp(res, "Task") || !strcmp(res, "Run") || !strcmp(res, "Project") ||
                            !strcmp(res, "ApiKey") || !strcmp(res, "Definition") ||
                            !strcmp(res, "StorageInstance") || !strcmp(res, "Trigger") ||
                            !strcmp(res, "Webhook")) &&
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
        "{s:s, s:{s:s, s:s, s:s}, s:o, s:{s:{s:{s:s, s:s}}, s:o}, s:[{s:[]}]}",
        "openapi", "3.1.0", "info", "title", "quern", "version", "0.1.0", "description",
        "The quern task execution server API (see docs/API.md).", "paths", paths,
        "components", "securitySchemes", "bearer", "type", "http", "scheme", "bearer",
        "schemas", schemas(), "security", "bearer");
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
