/*
 * api_tasks — /api/projects/:project_id/tasks and definitions: validation of
 * task bodies, create (single and batch), list with filters, update, delete,
 * and the task actions (run, cancel, retry, pause, resume, schedule).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "cron.h"
#include "task.h"
#include "events.h"
#include "jsonschema.h"
#include "policy.h"
#include "run.h"
#include "runner.h"
#include "sched.h"
#include "secrets.h"
#include "runtime.h"
#include "util.h"

static const char *const task_types[] = {"manual", "scheduled", "triggered", NULL};
static const char *const priorities[] = {"low", "medium", "high", "urgent", NULL};
static const char *const backoffs[] = {"fixed", "exponential", NULL};

static const char *const task_fields[] = {
    "id", "name", "description", "type", "code", "runtime_id", "definition_id", "input",
    "metadata", "priority", "settings", "deadline", "dependencies", "parent_id",
    "assigned_agent_id", "assigned_agents", "schedule", "timezone", "output_schema",
    "account_id", "client_id", "storage", "secrets", "secrets_env", "run", "wait_for_result",
    NULL};

static const char *const settings_fields[] = {
    "max_retries", "timeout_ms", "retry_delay_ms", "retry_backoff", "inactivity_timeout_ms",
    "kill_grace_ms", "require_review", "require_approval", "enable_memory", "max_iterations",
    "memory_limit_mb", "max_output_bytes", "network", "concurrency_key", "max_concurrency", NULL};

static void pfx(char *out, size_t n, const char *prefix, const char *field)
{
    /* snprintf("%s%s") without its cost: this runs for every field of
     * every task created */
    size_t a = strlen(prefix), b = strlen(field);
    if (a > n - 1)
        a = n - 1;
    if (b > n - 1 - a)
        b = n - 1 - a;
    memcpy(out, prefix, a);
    memcpy(out + a, field, b);
    out[a + b] = 0;
}

/* Checks a cron expression and a time zone; false after answering 400. */
static bool api_schedule_ok(struct req *r, const char *schedule, const char *tz, const char *prefix)
{
    char p[300], *err = NULL;
    if (tz && !tz_get(tz, &err)) {
        snprintf(p, sizeof p, "%stimezone", prefix);
        http_error(r, 400, "invalid_timezone", p, "%s: %s", p, err ? err : "unknown time zone");
        free(err);
        return false;
    }
    if (schedule) {
        struct cron *c = cron_parse(schedule, &err);
        if (!c) {
            snprintf(p, sizeof p, "%sschedule", prefix);
            http_error(r, 400, "invalid_cron", p, "%s: %s", p, err ? err : "invalid cron expression");
            free(err);
            return false;
        }
        cron_free(c);
    }
    return true;
}

/* The settings of a task that gives none, in their stored order (new
 * reference).  Set field by field: json_pack parsed its 15-field format on
 * every create (14 k instructions, 3 % of a single create). */
static json_t *settings_defaults(const struct config *cfg)
{
    json_t *s = json_object();
    json_object_set_new_nocheck(s, "max_retries", json_integer(0));
    json_object_set_new_nocheck(s, "timeout_ms", json_integer(cfg->default_timeout_ms));
    json_object_set_new_nocheck(s, "retry_delay_ms", json_integer(1000));
    json_object_set_new_nocheck(s, "retry_backoff", json_string("fixed"));
    json_object_set_new_nocheck(s, "inactivity_timeout_ms", json_integer(1800000));
    json_object_set_new_nocheck(s, "kill_grace_ms", json_integer(5000));
    json_object_set_new_nocheck(s, "require_review", json_false());
    json_object_set_new_nocheck(s, "require_approval", json_false());
    json_object_set_new_nocheck(s, "enable_memory", json_false());
    json_object_set_new_nocheck(s, "max_iterations", json_integer(500));
    json_object_set_new_nocheck(s, "memory_limit_mb", json_integer(POLICY_DEFAULT_MEMORY_MB));
    json_object_set_new_nocheck(s, "max_output_bytes", json_integer(10485760));
    json_object_set_new_nocheck(s, "network", json_false());
    json_object_set_new_nocheck(s, "concurrency_key", json_null());
    json_object_set_new_nocheck(s, "max_concurrency", json_null());
    return s;
}

/* Validates settings and returns a complete settings object with defaults
 * (new reference), or NULL after answering 400. */
static json_t *settings_from(struct req *r, json_t *in, const char *prefix, const json_t *base)
{
    char p[300];
    struct config *cfg = &r->app->cfg;
    pfx(p, sizeof p, prefix, "settings.");
    if (!api_known_fields(r, in, settings_fields, p))
        return NULL;
    json_t *s = base ? json_deep_copy(base) : settings_defaults(cfg);
    if (!json_object_size(in))
        return s;   /* nothing given: the defaults (the checks below pass) */
    static const struct {
        const char *name;
        int64_t min, max;
    } ints[] = {
        {"max_retries", 0, 100},
        {"timeout_ms", 1, 0},   /* max from config */
        {"retry_delay_ms", 0, 86400000},
        {"inactivity_timeout_ms", 1, 86400000},
        {"kill_grace_ms", 0, 600000},
        {"max_iterations", 1, 100000},
        {"memory_limit_mb", 1, 1048576},
        {"max_output_bytes", 1, (int64_t)1 << 30},
        {"max_concurrency", 1, 1000000},
    };
    for (size_t i = 0; i < ARRAY_LEN(ints); i++) {
        json_int_t v;
        pfx(p, sizeof p, prefix, "settings.");
        char full[320];
        snprintf(full, sizeof full, "%s%s", p, ints[i].name);
        int64_t max = ints[i].max ? ints[i].max : cfg->max_timeout_ms;
        if (!api_int(r, in, ints[i].name, full, ints[i].min, max, &v))
            goto bad;
        if (json_object_get(in, ints[i].name) && !json_is_null(json_object_get(in, ints[i].name)))
            json_object_set_new(s, ints[i].name, json_integer(v));
    }
    static const char *const bools[] = {"require_review", "require_approval", "enable_memory",
                                        "network"};
    for (size_t i = 0; i < ARRAY_LEN(bools); i++) {
        bool v;
        char full[320];
        snprintf(full, sizeof full, "%ssettings.%s", prefix, bools[i]);
        if (!api_bool(r, in, bools[i], full, &v))
            goto bad;
        if (json_is_boolean(json_object_get(in, bools[i])))
            json_object_set_new(s, bools[i], json_boolean(v));
    }
    const char *bo = NULL, *ck = NULL;
    char full[320];
    snprintf(full, sizeof full, "%ssettings.retry_backoff", prefix);
    if (!api_enum(r, in, "retry_backoff", full, backoffs, &bo))
        goto bad;
    if (bo)
        json_object_set_new_nocheck(s, "retry_backoff", json_string(bo));
    snprintf(full, sizeof full, "%ssettings.concurrency_key", prefix);
    if (!api_str(r, in, "concurrency_key", full, 256, &ck))
        goto bad;
    if (ck)
        json_object_set_new_nocheck(s, "concurrency_key", json_string(ck));
    return s;
bad:
    json_decref(s);
    return NULL;
}

static bool string_array(struct req *r, json_t *body, const char *field, const char *prefix,
                         size_t max, int64_t max_len, json_t **out)
{
    char p[300];
    pfx(p, sizeof p, prefix, field);
    json_t *a = NULL;
    if (!api_arr(r, body, field, p, max, &a))
        return false;
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) {
        if (!json_is_string(v) || !json_string_length(v) ||
            (int64_t)json_string_length(v) > max_len) {
            http_error(r, 400, "invalid_type", p, "%s[%zu] must be a non-empty string of at most "
                       "%lld characters", p, i, (long long)max_len);
            return false;
        }
    }
    *out = a;
    return true;
}

bool api_input_fits(struct req *r, const json_t *def, const json_t *input, const char *param)
{
    json_t *schema = json_object_get(def, "input_schema");
    if (!json_is_object(schema))
        return true;
    char *path = NULL, *msg = NULL;
    json_t *empty = json_object();
    int bad = jsonschema_validate(schema, input ? input : empty, &path, &msg);
    json_decref(empty);
    if (bad)
        http_error(r, 400, "input_invalid", param,
                   "%s does not match the definition's input_schema at %s: %s", param,
                   path ? path : "$", msg ? msg : "invalid");
    free(path);
    free(msg);
    return !bad;
}

bool api_run_input_fits(struct req *r, struct store_tx *tx, const json_t *task,
                        const json_t *override)
{
    const char *def_id = json_string_value(json_object_get(task, "definition_id"));
    json_t *def = def_id ? store_get(tx, SK_DEFINITION,
                                     json_string_value(json_object_get(task, "project_id")), def_id)
                         : NULL;
    if (!def)
        return true;
    json_t *input = json_deep_copy(json_object_get(task, "input"));
    if (!json_is_object(input)) {
        json_decref(input);
        input = json_object();
    }
    if (json_is_object(override))
        json_object_update(input, (json_t *)override);
    bool ok = api_input_fits(r, def, input, "input");
    json_decref(input);
    json_decref(def);
    return ok;
}

json_t *api_task_from_body(struct req *r, struct store_tx *tx, const char *project_id,
                           json_t *body, const char *prefix, struct task_opts *opts)
{
    struct config *cfg = &r->app->cfg;
    char p[300];
    json_t *task = NULL, *settings = NULL;
    if (!json_is_object(body)) {
        /* the item itself: "tasks[0]", without the prefix's dot */
        char item[64] = "";
        size_t pl = strlen(prefix);
        if (pl && pl < sizeof item)
            snprintf(item, sizeof item, "%.*s", (int)(pl - 1), prefix);
        http_error(r, 400, "invalid_type", item[0] ? item : NULL, "%s must be a JSON object",
                   item[0] ? item : "the task");
        return NULL;
    }
    if (!api_known_fields(r, body, task_fields, prefix))
        return NULL;
    const char *id = NULL, *name = NULL, *desc = NULL, *type = "manual", *code = NULL;
    const char *runtime = NULL, *def_id = NULL, *prio = "medium", *deadline = NULL;
    const char *parent = NULL, *agent = NULL, *schedule = NULL, *tz = "UTC";
    const char *account = NULL, *client = NULL;
    json_t *input = NULL, *metadata = NULL, *sin = NULL, *deps = NULL, *agents = NULL;
    json_t *out_schema = NULL, *storage = NULL, *secrets = NULL;
    bool run = false, run_given = false, secrets_env = false;
#define P(f) (pfx(p, sizeof p, prefix, f), p)
    if (!api_str(r, body, "id", P("id"), 64, &id) ||
        !api_str(r, body, "name", P("name"), cfg->max_name_len, &name) ||
        !api_str(r, body, "description", P("description"), cfg->max_description_len, &desc) ||
        !api_enum(r, body, "type", P("type"), task_types, &type) ||
        !api_str(r, body, "code", P("code"), 0, &code) ||
        !api_runtime(r, body, P("runtime_id"), &runtime) ||
        !api_str(r, body, "definition_id", P("definition_id"), 64, &def_id) ||
        !api_obj(r, body, "input", P("input"), &input) ||
        !api_obj(r, body, "metadata", P("metadata"), &metadata) ||
        !api_enum(r, body, "priority", P("priority"), priorities, &prio) ||
        !api_obj(r, body, "settings", P("settings"), &sin) ||
        !api_str(r, body, "deadline", P("deadline"), 64, &deadline) ||
        !string_array(r, body, "dependencies", prefix, 100, 64, &deps) ||
        !api_str(r, body, "parent_id", P("parent_id"), 64, &parent) ||
        !api_str(r, body, "assigned_agent_id", P("assigned_agent_id"), 256, &agent) ||
        !string_array(r, body, "assigned_agents", prefix, 100, 256, &agents) ||
        !api_str(r, body, "schedule", P("schedule"), 256, &schedule) ||
        !api_str(r, body, "timezone", P("timezone"), 64, &tz) ||
        !api_obj(r, body, "output_schema", P("output_schema"), &out_schema) ||
        !api_str(r, body, "account_id", P("account_id"), 256, &account) ||
        !api_str(r, body, "client_id", P("client_id"), 256, &client) ||
        !api_obj(r, body, "storage", P("storage"), &storage) ||
        !string_array(r, body, "secrets", prefix, 100, 64, &secrets) ||
        !api_bool(r, body, "secrets_env", P("secrets_env"), &secrets_env) ||
        !api_bool(r, body, "run", P("run"), &run))
        return NULL;
    run_given = json_is_boolean(json_object_get(body, "run"));
    if (account && !*account) {
        /* "" was an account of its own, sharing account storage with every
         * task that sent an empty string */
        http_error(r, 400, "invalid_value", P("account_id"), "%s must not be empty (leave it out)",
                   P("account_id"));
        return NULL;
    }
    if (!api_metadata_ok(r, metadata, P("metadata")))
        return NULL;
    if (id && !api_id_ok(id)) {
        http_error(r, 400, "invalid_id", P("id"),
                   "%s must be 1-64 characters of letters, digits, '_', '-', '.', ':' (not . or ..)", p);
        return NULL;
    }
    if (code && (int64_t)strlen(code) > cfg->max_code_bytes) {
        http_error(r, 400, "too_long", P("code"), "%s is larger than %lld bytes", p,
                   (long long)cfg->max_code_bytes);
        return NULL;
    }
    json_t *wfr = json_object_get(body, "wait_for_result");
    json_int_t wait_ms = 0;
    if (wfr && !json_is_null(wfr)) {
        if (json_is_boolean(wfr)) {
            wait_ms = json_is_true(wfr) ? -1 : 0;
        } else if (!api_int(r, body, "wait_for_result", P("wait_for_result"), 0,
                            cfg->max_timeout_ms, &wait_ms)) {
            return NULL;
        }
    }
    if (agent && !*agent) {
        http_error(r, 400, "invalid_value", P("assigned_agent_id"),
                   "%s must not be empty (leave it out for no agent)", p);
        return NULL;
    }
    if (!code && !def_id && !agent && !json_array_size(agents)) {
        http_error(r, 400, "missing_work", prefix[0] ? prefix : "code",
                   "a task needs one of code, definition_id, assigned_agent_id or "
                   "assigned_agents");
        return NULL;
    }
    if (agent && json_array_size(agents)) {
        http_error(r, 400, "conflicting_fields", P("assigned_agents"),
                   "give either assigned_agent_id or assigned_agents, not both");
        return NULL;
    }
    if (code && def_id) {
        http_error(r, 400, "conflicting_fields", P("code"),
                   "give either code or definition_id, not both");
        return NULL;
    }
    char *why = NULL;
    if (out_schema && jsonschema_check(out_schema, &why)) {
        /* refused now rather than failing every run at its end */
        http_error(r, 400, "invalid_schema", P("output_schema"), "%s: %s", P("output_schema"),
                   why ? why : "invalid");
        free(why);
        return NULL;
    }
    int64_t deadline_ms = 0;
    if (deadline && rfc3339_parse(deadline, &deadline_ms)) {
        http_error(r, 400, "invalid_timestamp", P("deadline"),
                   "%s must be an RFC 3339 timestamp like 2026-11-22T21:42:02.123Z", p);
        return NULL;
    }
    if (json_is_object(storage)) {
        const char *k;
        json_t *v;
        json_object_foreach(storage, k, v) {
            if (strcmp(k, "account") && strcmp(k, "project") && strcmp(k, "organization")) {
                http_error(r, 400, "unknown_field", P("storage"),
                           "%s keys must be account, project or organization", p);
                return NULL;
            }
            if (!json_is_string(v)) {
                http_error(r, 400, "invalid_type", P("storage"),
                           "%s.%s must be a storage instance id", p, k);
                return NULL;
            }
            json_t *inst = store_get(tx, SK_STORAGE, project_id, json_string_value(v));
            bool ok = inst && !strcmp(json_string_value(json_object_get(inst, "scope")) ?: "", k) &&
                      (strcmp(k, "account") || (account && !strcmp(account,
                          json_string_value(json_object_get(inst, "account_id")) ?: "")));
            json_decref(inst);
            if (!ok) {
                http_error(r, 400, "unknown_storage", P("storage"),
                           "%s.%s: no %s storage instance %s in this project%s", p, k, k,
                           json_string_value(v), strcmp(k, "account") ? "" : " for this account_id");
                return NULL;
            }
        }
    }
    size_t si;
    json_t *sv;
    json_array_foreach(secrets, si, sv) {
        if (!secrets_name_ok(json_string_value(sv))) {
            http_error(r, 400, "invalid_secret_name", P("secrets"),
                       "%s[%zu] must match [A-Z_][A-Z0-9_]{0,63}", p, si);
            return NULL;
        }
        json_t *sec = store_get(tx, SK_SECRET, project_id, json_string_value(sv));
        if (!sec) {
            http_error(r, 400, "unknown_secret", P("secrets"), "%s[%zu]: no secret named %s", p, si,
                       json_string_value(sv));
            return NULL;
        }
        json_decref(sec);
    }
    if (!api_schedule_ok(r, schedule, tz, prefix))
        return NULL;
    if (schedule && !json_object_get(body, "type"))
        type = "scheduled";
    if (type && !strcmp(type, "scheduled") && !schedule) {
        /* it was stored, and never fired */
        http_error(r, 400, "missing_field", P("schedule"),
                   "a task of type scheduled needs a schedule (%s)", P("schedule"));
        return NULL;
    }
    /* references that must exist in this project */
    json_t *def = NULL;
    if (def_id) {
        /* a batch's tasks mostly name one definition: read once per batch */
        def = opts->defs ? json_incref(json_object_get(opts->defs, def_id)) : NULL;
        if (!def && (def = store_get(tx, SK_DEFINITION, project_id, def_id)) && opts->defs)
            json_object_set(opts->defs, def_id, def);
        if (!def) {
            http_error(r, 400, "unknown_definition", P("definition_id"),
                       "%s: no definition %s in this project", p, def_id);
            goto bad;
        }
    }
    if (def && !api_input_fits(r, def, input, P("input")))
        goto bad;
    /* the task's settings over its definition's, over the defaults */
    json_t *sall = json_is_object(json_object_get(def, "settings"))
                       ? json_deep_copy(json_object_get(def, "settings"))
                       : json_object();
    if (sin)
        json_object_update(sall, sin);
    settings = settings_from(r, sall, prefix, NULL);
    json_decref(sall);
    if (!settings)
        goto bad;
    if (parent) {
        json_t *pt = store_get(tx, SK_TASK, project_id, parent);
        if (!pt) {
            http_error(r, 400, "unknown_task", P("parent_id"), "%s: no task %s in this project", p,
                       parent);
            goto bad;
        }
        json_decref(pt);
    }
    size_t di;
    json_t *dv;
    json_array_foreach(deps, di, dv) {
        const char *dep = json_string_value(dv);
        if (id && !strcmp(dep, id)) {
            http_error(r, 400, "dependency_cycle", P("dependencies"),
                       "%s: a task cannot depend on itself", p);
            goto bad;
        }
        json_t *dt = store_get(tx, SK_TASK, project_id, dep);
        if (!dt) {
            http_error(r, 400, "unknown_task", P("dependencies"), "%s[%zu]: no task %s", p, di,
                       dep);
            goto bad;
        }
        json_decref(dt);
    }

    char tid[ID_LEN], ts[RFC3339_LEN];
    if (id)
        snprintf(tid, sizeof tid, "%s", id);
    else
        id_new("task", tid);
    rfc3339_format(now_ms(), ts);
    const char *def_code = def ? json_string_value(json_object_get(def, "code")) : NULL;
    if (!runtime)
        runtime = def ? (json_string_value(json_object_get(def, "runtime_id")) ?: "default")
                      : "default";
    task = json_object();
    json_object_set_new_nocheck(task, "id", json_string(tid));
    json_object_set_new_nocheck(task, "project_id", json_string(project_id));
    json_object_set_new_nocheck(task, "name", name ? json_string(name) : json_null());
    json_object_set_new_nocheck(task, "description", desc ? json_string(desc) : json_null());
    json_object_set_new_nocheck(task, "type", json_string(type));
    json_object_set_new_nocheck(task, "status", json_string("pending"));
    json_object_set_new_nocheck(task, "code", code       ? json_string(code)
                                              : def_code ? json_string(def_code)
                                                         : json_null());
    json_object_set_new_nocheck(task, "runtime_id", json_string(runtime));
    json_object_set_new_nocheck(task, "definition_id", def_id ? json_string(def_id) : json_null());
    json_object_set_new_nocheck(task, "input", input ? json_deep_copy(input) : json_object());
    json_object_set_new_nocheck(task, "metadata", metadata ? json_deep_copy(metadata) : json_object());
    json_object_set_new_nocheck(task, "priority", json_string(prio));
    json_object_set_new_nocheck(task, "settings", settings);
    settings = NULL;
    /* stored as every timestamp is: UTC with milliseconds */
    char dl_utc[RFC3339_LEN];
    if (deadline)
        rfc3339_format(deadline_ms, dl_utc);
    json_object_set_new_nocheck(task, "deadline", deadline ? json_string(dl_utc) : json_null());
    json_object_set_new_nocheck(task, "dependencies", deps ? api_unique(deps) : json_array());
    json_object_set_new_nocheck(task, "parent_id", parent ? json_string(parent) : json_null());
    json_object_set_new_nocheck(task, "assigned_agent_id", agent ? json_string(agent) : json_null());
    json_object_set_new_nocheck(task, "assigned_agents", agents ? api_unique(agents) : json_array());
    json_object_set_new_nocheck(task, "schedule", schedule ? json_string(schedule) : json_null());
    json_object_set_new_nocheck(task, "timezone", json_string(tz));
    json_object_set_new_nocheck(task, "output_schema",
                                out_schema ? json_deep_copy(out_schema)
                                : def ? json_incref(json_object_get(def, "output_schema") ?: json_null())
                                      : json_null());
    if (json_is_null(json_object_get(task, "output_schema")) && def)
        json_object_set_nocheck(task, "output_schema", json_object_get(def, "output_schema") ?: json_null());
    json_object_set_new_nocheck(task, "account_id", account ? json_string(account) : json_null());
    json_object_set_new_nocheck(task, "client_id", client ? json_string(client) : json_null());
    json_object_set_new_nocheck(task, "storage", storage ? json_deep_copy(storage) : json_object());
    json_object_set_new_nocheck(task, "secrets", secrets ? json_deep_copy(secrets) : json_array());
    json_object_set_new_nocheck(task, "secrets_env", json_boolean(secrets_env));
    json_object_set_new_nocheck(task, "progress", json_real(0));
    json_object_set_new_nocheck(task, "last_run_at", json_null());
    json_object_set_new_nocheck(task, "next_run_at", json_null());
    json_object_set_new_nocheck(task, "run_count", json_integer(0));
    json_object_set_new_nocheck(task, "paused", json_false());
    json_object_set_new_nocheck(task, "latest_run_id", json_null());
    json_object_set_new_nocheck(task, "created_at", json_string(ts));
    json_object_set_new_nocheck(task, "updated_at", json_string(ts));
    task_schedule_next(task, now_ms());
    json_object_set_new_nocheck(task, "has_dependencies", json_boolean(json_array_size(deps) > 0));
    bool has_code = json_is_string(json_object_get(task, "code"));
    opts->run = run_given ? run : (!strcmp(type, "manual") && has_code);
    opts->wait_ms = wait_ms;
    json_decref(def);
    return task;
bad:
    json_decref(def);
    json_decref(settings);
    return NULL;
#undef P
}

bool api_settings_ok(struct req *r, json_t *in)
{
    json_t *s = settings_from(r, in, "", NULL);
    json_decref(s);
    return s != NULL;
}

json_t *api_task_public(const json_t *task)
{
    /* shares the values with task (callers change top-level fields only) */
    json_t *t = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)task, k, v) {
        if (strcmp(k, "latest_run_id") && strcmp(k, "scheduled") && strcmp(k, "has_dependencies") &&
            strcmp(k, "dependency_runs"))
            json_object_set_nocheck(t, k, v);
    }
    return t;
}

/* ---- create ---- */

struct create_arg {
    struct req *r;
    const char *project_id;
    json_t *body;          /* one task body, or the batch array */
    bool batch;
    json_t *result;        /* created task(s) */
    json_t *run;           /* first run of a single create */
    json_int_t wait_ms;
};

/* Whether runs or triggers of a deleted task still name task id `id`
 * (*left, with what names it in *what).  Runs outlive their task (the
 * project's history, GET .../runs) and a trigger stays until deleted: a new
 * task given that id would take over the old one's runs (its retry, its
 * list of runs) and be fired by the old triggers, so the id is not given
 * out again while they remain. */
static int task_id_left_over(struct store_tx *tx, const char *project_id, const char *id,
                             bool *left, const char **what)
{
    static const enum store_kind kinds[] = {SK_RUN, SK_TRIGGER};
    static const char *const names[] = {"runs", "triggers"};
    *left = false;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        struct store_filter f = {"task_id", id};
        struct store_query q = {&f, 1, 1, 0, false, NULL};
        json_t *docs = NULL;
        int rc = store_list(tx, kinds[i], project_id, &q, &docs, NULL);
        if (rc)
            return rc;
        *left = json_array_size(docs) > 0;
        json_decref(docs);
        if (*left) {
            *what = names[i];
            return 0;
        }
    }
    return 0;
}

static int create_one(struct create_arg *a, struct store_tx *tx, json_t *body, const char *prefix,
                      json_t *defs, json_t **out)
{
    struct task_opts opts = {.defs = defs};
    json_t *task = api_task_from_body(a->r, tx, a->project_id, body, prefix, &opts);
    if (!task)
        return -EINVAL;
    if (json_is_string(json_object_get(body, "id"))) {
        /* a client's id: a live task with it is -EEXIST below; one deleted
         * but still named by runs or triggers is refused here */
        const char *tid = json_string_value(json_object_get(task, "id"));
        json_t *live = store_get(tx, SK_TASK, a->project_id, tid);
        bool left = false;
        const char *what = NULL;
        int rc = live ? 0 : task_id_left_over(tx, a->project_id, tid, &left, &what);
        json_decref(live);
        if (!rc && left) {
            char p[300];
            snprintf(p, sizeof p, "%sid", prefix);
            http_error(a->r, 409, "id_of_deleted_task", p,
                       "%s: task %s was deleted but its %s remain; give the new task another id",
                       p, tid, what);
            rc = -EEXIST;
        }
        if (rc) {
            json_decref(task);
            return rc;
        }
    }
    /* the task is stored with its first run (run_start_for_new_task), its
     * row written once; task.created comes first in the event log */
    sched_task_changed_on_commit(tx, a->r->app->sched, task, true);
    int rc = events_emit(tx, a->r->app->events, a->project_id,
                         json_string_value(json_object_get(task, "id")), NULL, "task.created",
                         json_pack("{s:O}", "name", json_object_get(task, "name")));
    json_t *run = NULL;
    /* a worker already waiting for a run like this one gets it now
     * (api_workers_claim): the task and the run are stored running */
    if (!rc)
        rc = opts.run ? run_start_for_new_task(tx, a->r->app, task, &run, api_workers_claim)
                      : store_put(tx, SK_TASK, a->project_id, task);
    if (rc == -EEXIST) {
        char p[300];
        snprintf(p, sizeof p, "%sid", prefix);
        http_error(a->r, 409, "already_exists", p, "a task with id %s already exists",
                   json_string_value(json_object_get(task, "id")));
    }
    if (rc) {
        json_decref(task);
        json_decref(run);
        return rc;
    }
    /* run_start_for_new_task kept task up to date, a hand-off included; a
     * later change of the run (approval hold, policy denial, pause) went
     * through the stored copy and is read back */
    if (run && run_status_of(run) != RS_QUEUED && run_status_of(run) != RS_RUNNING) {
        json_t *fresh = store_get(tx, SK_TASK, a->project_id,
                                  json_string_value(json_object_get(task, "id")));
        json_decref(task);
        task = fresh;
    }
    *out = task;
    if (!a->batch) {
        a->run = run;
        a->wait_ms = opts.wait_ms;
    } else {
        json_decref(run);
    }
    return 0;
}

/* Re-runnable (store_write_retry): every output is reset first. */
static int create_fn(struct store_tx *tx, void *arg)
{
    struct create_arg *a = arg;
    json_decref(a->result);
    json_decref(a->run);
    a->result = a->run = NULL;
    if (!a->batch)
        return create_one(a, tx, a->body, "", NULL, &a->result);
    a->result = json_array();
    /* this transaction's definitions (a retry reads them again) */
    json_t *defs = json_object();
    size_t i;
    json_t *b;
    json_array_foreach(a->body, i, b) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "tasks[%zu].", i);
        json_t *t = NULL;
        int rc = create_one(a, tx, b, prefix, defs, &t);
        if (rc) {
            json_decref(defs);
            return rc;
        }
        json_array_append_new(a->result, t);
    }
    json_decref(defs);
    return 0;
}

/* `Prefer: return=minimal` (api_want_minimal) on a create: the answer
 * holds only what a producer needs, {id, status, run_id}, instead of the
 * whole task (1.1 KB rendered and sent per task). */
static json_t *task_minimal(const json_t *task)
{
    json_t *m = json_object();
    json_object_set_nocheck(m, "id", json_object_get(task, "id"));
    json_object_set_nocheck(m, "status", json_object_get(task, "status"));
    json_t *run = json_object_get(task, "latest_run_id");
    json_object_set_new_nocheck(m, "run_id", json_is_string(run) ? json_incref(run) : json_null());
    return m;
}

/* wait_for_result: follow the run's events until it ends. */
struct waitres {
    struct req *r;
    struct events_sub *sub;
    struct sched_waiter *timer;
    bool done;
    pthread_mutex_t mu;
    json_t *task;
    char run_id[ID_LEN];
};

static void finish_wait(struct req *r);
static void wait_over(struct waitres *w, bool fired);

static void wait_event(void *ctx, int64_t id, const json_t *ev)
{
    struct waitres *w = ctx;
    (void)id;
    const char *type = json_string_value(json_object_get(ev, "type"));
    int st = run_status_parse(json_string_value(json_object_get(json_object_get(ev, "data"), "status")));
    if (!type || strncmp(type, "task_run.", 9) || st < 0 || !run_status_terminal((enum run_status)st))
        return;
    wait_over(w, false);
}

/* The wait is over (first call wins).  fired: called as the timer's own
 * callback, which the scheduler forgets as it fires it; any other caller
 * leaves w->timer for finish_wait to cancel (nulling it there left the
 * timer armed after w was freed, and its firing read freed memory). */
static void wait_over(struct waitres *w, bool fired)
{
    pthread_mutex_lock(&w->mu);
    bool first = !w->done;
    w->done = true;
    if (fired)
        w->timer = NULL;
    pthread_mutex_unlock(&w->mu);
    if (first)
        http_resume(w->r);
}

static void wait_timeout(void *ctx)
{
    wait_over(ctx, true);
}

struct getrun {
    const char *project_id, *run_id, *task_id;
    json_t *run, *task;
};

static int getrun_fn(struct store_tx *tx, void *arg)
{
    struct getrun *g = arg;
    g->run = store_get(tx, SK_RUN, g->project_id, g->run_id);
    if (g->task_id)
        g->task = store_get(tx, SK_TASK, g->project_id, g->task_id);
    return 0;
}

static void finish_wait(struct req *r)
{
    struct waitres *w = r->wait;
    events_unsubscribe(r->app->events, w->sub);
    pthread_mutex_lock(&w->mu);
    struct sched_waiter *timer = w->timer;
    w->timer = NULL;
    pthread_mutex_unlock(&w->mu);
    if (timer)
        sched_unwait(r->app->sched, timer);
    /* the task as it is now (last_run_at, progress, ... moved with the run) */
    struct getrun g = {json_string_value(json_object_get(w->task, "project_id")), w->run_id,
                       json_string_value(json_object_get(w->task, "id")), NULL, NULL};
    store_read(r->app->store, getrun_fn, &g);
    json_t *t = api_task_public(g.task ? g.task : w->task);
    json_decref(g.task);
    if (g.run) {
        json_object_set_new_nocheck(t, "status", json_incref(json_object_get(g.run, "status")));
        json_object_set_new_nocheck(t, "run", run_public(g.run));
        json_decref(g.run);
    }
    http_json(r, 201, t);
    json_decref(w->task);
    pthread_mutex_destroy(&w->mu);
    free(w);
    r->wait = NULL;
}

void api_tasks_create(struct req *r)
{
    const char *project = http_param(r, "project_id");
    json_t *body = http_body_object(r);
    if (!body || !api_project(r, project))
        return;
    struct create_arg a = {.r = r, .project_id = project, .body = body};
    int rc = store_write_retry(r->app->store, create_fn, &a);
    if (rc) {
        api_store_error(r, rc, "task");
        json_decref(a.result);
        json_decref(a.run);
        return;
    }
    if (a.run && a.wait_ms) {
        int64_t status = run_status_of(a.run);
        if (!run_status_terminal((enum run_status)status)) {
            struct waitres *w = xcalloc(1, sizeof *w);
            pthread_mutex_init(&w->mu, NULL);
            w->r = r;
            w->task = a.result;
            snprintf(w->run_id, sizeof w->run_id, "%s", json_string_value(json_object_get(a.run, "id")));
            /* true waits up to the task's timeout; for code quernd runs,
             * plus the kill grace and a margin, so that a run it times out
             * is reported as such (an agent's run is not stopped by quernd
             * at its timeout: the wait ends there) */
            json_t *st = json_object_get(a.result, "settings");
            bool code = json_is_string(json_object_get(a.result, "code"));
            int64_t wait = a.wait_ms > 0 ? a.wait_ms
                           : json_integer_value(json_object_get(st, "timeout_ms")) +
                                 (code ? json_integer_value(json_object_get(st, "kill_grace_ms")) +
                                             10000
                                       : 0);
            r->wait = w;
            http_suspend(r, finish_wait);
            w->sub = events_subscribe(r->app->events, project, w->run_id, wait_event, w);
            w->timer = sched_wait(r->app->sched, "\x01wait", mono_ms() + wait, wait_timeout, w);
            /* the run may have ended before we subscribed */
            struct getrun g = {project, w->run_id, NULL, NULL, NULL};
            store_read(r->app->store, getrun_fn, &g);
            if (g.run && run_status_terminal(run_status_of(g.run)))
                wait_over(w, false);
            json_decref(g.run);
            json_decref(a.run);
            return;
        }
    }
    json_t *t = api_want_minimal(r) ? task_minimal(a.result) : api_task_public(a.result);
    if (a.run && a.wait_ms)
        json_object_set_new_nocheck(t, "run", run_public(a.run));
    json_decref(a.result);
    json_decref(a.run);
    http_json(r, 201, t);
}

void api_tasks_batch(struct req *r)
{
    const char *project = http_param(r, "project_id");
    json_t *body = http_body_object(r);
    if (!body || !api_project(r, project) ||
        !api_known_fields(r, body, (const char *const[]){"tasks", NULL}, ""))
        return;
    json_t *tasks = json_object_get(body, "tasks");
    if (!json_is_array(tasks)) {
        http_error(r, 400, "invalid_type", "tasks", "tasks must be an array of task bodies");
        return;
    }
    if (json_array_size(tasks) > 1000) {
        http_error(r, 400, "too_many", "tasks", "a batch holds at most 1000 tasks, not %zu",
                   json_array_size(tasks));
        return;
    }
    /* the same id twice in one batch is the batch's own fault (400), not a
     * conflict with what is stored (409) */
    for (size_t i = 0; i < json_array_size(tasks); i++) {
        const char *id = json_string_value(json_object_get(json_array_get(tasks, i), "id"));
        for (size_t j = 0; id && j < i; j++)
            if (!strcmp(id, json_string_value(json_object_get(json_array_get(tasks, j), "id")) ?: "")) {
                char param[48];
                snprintf(param, sizeof param, "tasks[%zu].id", i);
                http_error(r, 400, "duplicate_id", param, "%s repeats the id of tasks[%zu]", param, j);
                return;
            }
    }
    struct create_arg a = {.r = r, .project_id = project, .body = tasks, .batch = true};
    int rc = store_write_retry(r->app->store, create_fn, &a);
    if (rc) {
        api_store_error(r, rc, "task");
        json_decref(a.result);
        return;
    }
    json_t *data = json_array();
    size_t i;
    json_t *t;
    bool minimal = api_want_minimal(r);
    json_array_foreach(a.result, i, t)
        json_array_append_new(data, minimal ? task_minimal(t) : api_task_public(t));
    json_decref(a.result);
    http_json(r, 201, json_pack("{s:o}", "data", data));
}

/* ---- read ---- */

struct list_arg {
    enum store_kind kind;
    const char *project_id;
    struct store_query q;
    json_t *out;
    int64_t total;
    const char *after;   /* ?starting_after */
    bool more;
};

static int list_fn(struct store_tx *tx, void *arg)
{
    struct list_arg *l = arg;
    return api_list_page(tx, l->kind, l->project_id, &l->q, l->after, &l->out, &l->total,
                         &l->more);
}

static const char *const task_statuses[] = {
    "pending", "queued", "running", "paused", "interaction_required", "review_required",
    "completed", "failed", "timed_out", "denied", "canceling", "canceled", NULL};

void api_tasks_list(struct req *r)
{
    const char *project = http_param(r, "project_id");
    int64_t limit, offset;
    const char *after;
    if (!http_paging(r, &limit, &offset) || !api_list_cursor(r, &after) || !api_project(r, project))
        return;
    struct store_filter f[16];
    size_t nf = 0;
    static const struct {
        const char *name;
        const char *const *values;
    } filters[] = {{"status", task_statuses}, {"type", task_types}, {"priority", priorities},
                   {"assigned_agent_id", NULL}, {"definition_id", NULL}, {"parent_id", NULL}};
    for (size_t i = 0; i < ARRAY_LEN(filters); i++) {
        const char *v = http_query(r, filters[i].name);
        if (!v)
            continue;
        if (filters[i].values) {
            bool ok = false;
            for (const char *const *x = filters[i].values; *x; x++)
                ok |= !strcmp(*x, v);
            if (!ok) {
                http_error(r, 400, "invalid_enum", filters[i].name, "unknown %s filter value %s",
                           filters[i].name, v);
                return;
            }
        }
        f[nf++] = (struct store_filter){filters[i].name, v};
    }
    /* metadata.<key>=<value> filters */
    if (!api_metadata_filters(r, f, &nf, ARRAY_LEN(f)))
        return;
    const char *search = http_query(r, "q");
    if (search && strlen(search) > 256) {
        http_error(r, 400, "too_long", "q", "q is longer than 256 characters");
        return;
    }
    struct list_arg l = {SK_TASK, project,
                         {f, nf, limit, offset, false, search && *search ? search : NULL},
                         NULL, 0, after, false};
    int rc = store_read(r->app->store, list_fn, &l);
    if (rc == -ESRCH) {
        api_cursor_unknown(r, "task", after);
        return;
    }
    if (rc) {
        api_store_error(r, rc, "task");
        return;
    }
    json_t *data = json_array();
    size_t i;
    json_t *t;
    json_array_foreach(l.out, i, t) json_array_append_new(data, api_task_public(t));
    json_decref(l.out);
    http_json(r, 200, json_pack("{s:o, s:b, s:I}", "data", data, "has_more", l.more, "total",
                                (json_int_t)l.total));
}

struct queued_arg {
    const char *project_id;
    int64_t limit;
    json_t *ids;
};

static int queued_fn(struct store_tx *tx, void *arg)
{
    struct queued_arg *a = arg;
    struct store_filter f = {"status", "queued"};
    int64_t offset = 0;
    a->ids = json_array();
    /* distinct task ids of queued runs, oldest first */
    while ((int64_t)json_array_size(a->ids) < a->limit) {
        struct store_query q = {&f, 1, 500, offset, true, NULL};
        json_t *runs = NULL;
        int rc = store_list(tx, SK_RUN, a->project_id, &q, &runs, NULL);
        if (rc)
            return rc;
        size_t i;
        json_t *run;
        json_array_foreach(runs, i, run) {
            json_t *tid = json_object_get(run, "task_id");
            bool seen = false;
            size_t j;
            json_t *x;
            json_array_foreach(a->ids, j, x) seen |= json_equal(x, tid);
            if (!seen && (int64_t)json_array_size(a->ids) < a->limit)
                json_array_append(a->ids, tid);
        }
        size_t n = json_array_size(runs);
        json_decref(runs);
        if (n < 500)
            break;
        offset += 500;
    }
    return 0;
}

void api_tasks_queued_ids(struct req *r)
{
    const char *project = http_param(r, "project_id");
    const char *l = http_query(r, "limit");
    int64_t limit = 20;
    if (l && (parse_i64(l, &limit) || limit < 1 || limit > 500)) {
        http_error(r, 400, "invalid_parameter", "limit", "limit must be an integer from 1 to 500");
        return;
    }
    if (!api_project(r, project))
        return;
    struct queued_arg a = {project, limit, NULL};
    int rc = store_read(r->app->store, queued_fn, &a);
    if (rc) {
        api_store_error(r, rc, "task");
        json_decref(a.ids);
        return;
    }
    http_json(r, 200, json_pack("{s:o}", "data", a.ids));
}

struct get_arg {
    enum store_kind kind;
    const char *project_id, *id;
    json_t *doc;
};

static int get_fn(struct store_tx *tx, void *arg)
{
    struct get_arg *g = arg;
    g->doc = store_get(tx, g->kind, g->project_id, g->id);
    return 0;
}

void api_tasks_get(struct req *r)
{
    struct get_arg g = {SK_TASK, http_param(r, "project_id"), http_param(r, "task_id"), NULL};
    int rc = store_read(r->app->store, get_fn, &g);
    if (rc) {   /* a read that failed: not an absent task */
        json_decref(g.doc);
        api_store_error(r, rc, "task");
        return;
    }
    if (!g.doc) {
        http_not_found(r, "task", g.id);
        return;
    }
    json_t *t = api_task_public(g.doc);
    json_decref(g.doc);
    http_json(r, 200, t);
}

/* ---- update ---- */

static const char *const update_fields[] = {"name", "description", "priority", "settings",
                                            "schedule", "timezone", "deadline", "metadata",
                                            "input", "dependencies", NULL};

/* True when adding deps to task_id would close a cycle: a task reached
 * from deps depends, through any path, on task_id; *path names one such
 * cycle (task_id -> ... -> task_id).  Each task is looked at once: a walk
 * of every path took time exponential in the diamonds of a DAG (20 levels
 * of two held the write lock for minutes), and the depth bound it had (200)
 * took a longer chain for a cycle. */
static bool has_cycle(struct store_tx *tx, const char *project, const char *task_id,
                      json_t *deps, struct buf *path)
{
    json_t *from = json_object();   /* task reached -> the task it was reached from */
    json_t *todo = json_array();
    const char *last = NULL;        /* the task found depending on task_id */
    json_t *cur = NULL;
    size_t i;
    json_t *d;
    json_array_foreach(deps, i, d) {
        if (!strcmp(json_string_value(d), task_id)) {
            last = task_id;
            goto out;
        }
        if (!json_object_get(from, json_string_value(d))) {
            json_object_set_new(from, json_string_value(d), json_string(task_id));
            json_array_append(todo, d);
        }
    }
    while (json_array_size(todo)) {
        size_t n = json_array_size(todo);
        json_decref(cur);
        cur = json_incref(json_array_get(todo, n - 1));
        json_array_remove(todo, n - 1);
        json_t *dt = store_get(tx, SK_TASK, project, json_string_value(cur));
        json_array_foreach(json_object_get(dt, "dependencies"), i, d) {
            const char *dep = json_string_value(d);
            if (!dep)
                continue;
            if (!strcmp(dep, task_id)) {
                last = json_string_value(cur);
                break;
            }
            if (!json_object_get(from, dep)) {
                json_object_set_new(from, dep, json_incref(cur));
                json_array_append(todo, d);
            }
        }
        json_decref(dt);
        if (last)
            break;
    }
out:
    if (last) {
        /* the way back from last to task_id, printed the other way round */
        json_t *chain = json_array();
        for (const char *t = last; strcmp(t, task_id);
             t = json_string_value(json_object_get(from, t)))
            json_array_insert_new(chain, 0, json_string(t));
        json_array_foreach(chain, i, d) buf_printf(path, " -> %s", json_string_value(d));
        buf_printf(path, " -> %s", task_id);
        json_decref(chain);
    }
    json_decref(cur);
    json_decref(todo);
    json_decref(from);
    return last != NULL;
}

/* A PATCH took dependencies away: the task's runs that still wait on one
 * of them wait no longer (they waited for good on a task that was no
 * longer a dependency, and its deletion failed them with
 * dependency_failed).  A dependency added applies to the runs made
 * afterwards, as a new deadline does. */
static int unblock_removed(struct store_tx *tx, struct app *app, const char *project,
                           const char *task_id, const json_t *deps)
{
    for (int64_t offset = 0;;) {
        struct store_filter f = {"task_id", task_id};
        struct store_query q = {&f, 1, 500, offset, true, NULL};
        json_t *runs = NULL;
        int rc = store_list(tx, SK_RUN, project, &q, &runs, NULL);
        if (rc)
            return rc;
        size_t i, n = json_array_size(runs);
        json_t *run;
        json_array_foreach(runs, i, run) {
            json_t *bb = json_object_get(run, "blocked_by");
            if (run_status_terminal(run_status_of(run)) || !json_array_size(bb))
                continue;
            json_t *keep = json_array(), *gone = json_array();
            size_t j, k;
            json_t *b, *d;
            json_array_foreach(bb, j, b) {
                bool still = false;
                json_array_foreach(deps, k, d) still |= json_equal(b, d);
                json_array_append(still ? keep : gone, b);
            }
            if (json_array_size(gone)) {
                json_object_set_nocheck(run, "blocked_by", keep);
                run_unblocked(run);
                rc = run_save(tx, run);
                if (!rc)
                    run_notify(tx, app, run);
                json_array_foreach(gone, j, b) {
                    if (!rc)
                        rc = events_emit(tx, app->events, project, task_id,
                                         json_string_value(json_object_get(run, "id")),
                                         "task_run.unblocked",
                                         json_pack("{s:O}", "dependency", b));
                }
            }
            json_decref(keep);
            json_decref(gone);
            if (rc) {
                json_decref(runs);
                return rc;
            }
        }
        json_decref(runs);
        if (n < 500)
            return 0;
        offset += 500;
    }
}

struct update_arg {
    struct req *r;
    const char *project_id, *task_id;
    json_t *body;
    json_t *task;
};

static int update_fn(struct store_tx *tx, void *arg)
{
    struct update_arg *a = arg;
    struct req *r = a->r;
    json_t *task = store_get(tx, SK_TASK, a->project_id, a->task_id);
    if (!task) {
        http_not_found(r, "task", a->task_id);
        return -ENOENT;
    }
    json_t *b = a->body;
    const char *name = NULL, *desc = NULL, *prio = NULL, *schedule = NULL, *tz = NULL;
    const char *deadline = NULL;
    json_t *sin = NULL, *md = NULL, *input = NULL, *deps = NULL;
    int rc = -EINVAL;
    if (!api_known_fields(r, b, update_fields, "") ||
        !api_str(r, b, "name", "name", r->app->cfg.max_name_len, &name) ||
        !api_str(r, b, "description", "description", r->app->cfg.max_description_len, &desc) ||
        !api_enum(r, b, "priority", "priority", priorities, &prio) ||
        !api_obj(r, b, "settings", "settings", &sin) ||
        !api_str(r, b, "schedule", "schedule", 256, &schedule) ||
        !api_str(r, b, "timezone", "timezone", 64, &tz) ||
        !api_str(r, b, "deadline", "deadline", 64, &deadline) ||
        !api_obj(r, b, "metadata", "metadata", &md) || !api_obj(r, b, "input", "input", &input) ||
        !string_array(r, b, "dependencies", "", 100, 64, &deps) || !api_metadata_ok(r, md, "metadata"))
        goto out;
    if (json_is_null(json_object_get(b, "timezone")))
        tz = "UTC";   /* null is the default again, as at create (it was ignored) */
    int64_t dms;
    if (deadline && rfc3339_parse(deadline, &dms)) {
        http_error(r, 400, "invalid_timestamp", "deadline",
                   "deadline must be an RFC 3339 timestamp like 2026-11-22T21:42:02.123Z");
        goto out;
    }
    if ((schedule || tz) &&
        !api_schedule_ok(r, schedule, tz, ""))
        goto out;
    if (sin) {
        json_t *s = settings_from(r, sin, "", json_object_get(task, "settings"));
        if (!s)
            goto out;
        json_object_set_new_nocheck(task, "settings", s);
    }
    if (deps) {
        size_t i;
        json_t *d;
        json_array_foreach(deps, i, d) {
            json_t *dt = store_get(tx, SK_TASK, a->project_id, json_string_value(d));
            if (!dt) {
                http_error(r, 400, "unknown_task", "dependencies", "dependencies[%zu]: no task %s",
                           i, json_string_value(d));
                goto out;
            }
            json_decref(dt);
        }
        struct buf path;
        buf_init(&path);
        buf_puts(&path, a->task_id);
        if (has_cycle(tx, a->project_id, a->task_id, deps, &path)) {
            http_error(r, 400, "dependency_cycle", "dependencies",
                       "these dependencies would form a cycle: %s", path.data);
            buf_release(&path);
            goto out;
        }
        buf_release(&path);
        json_object_set_new_nocheck(task, "dependencies", api_unique(deps));
        json_object_set_new_nocheck(task, "has_dependencies", json_boolean(json_array_size(deps) > 0));
    }
    if (json_object_get(b, "name"))
        json_object_set_nocheck(task, "name", json_object_get(b, "name"));
    if (json_object_get(b, "description"))
        json_object_set_nocheck(task, "description", json_object_get(b, "description"));
    if (prio)
        json_object_set_new_nocheck(task, "priority", json_string(prio));
    if (json_object_get(b, "schedule")) {
        json_t *sch = json_object_get(b, "schedule");
        json_object_set_nocheck(task, "schedule", sch);
        /* as at create: a schedule makes a manual task a scheduled one;
         * taking it away makes a scheduled task manual again */
        const char *ty = json_string_value(json_object_get(task, "type")) ?: "";
        if (json_is_string(sch) && !strcmp(ty, "manual"))
            json_object_set_new_nocheck(task, "type", json_string("scheduled"));
        else if (json_is_null(sch) && !strcmp(ty, "scheduled"))
            json_object_set_new_nocheck(task, "type", json_string("manual"));
    }
    if (tz)
        json_object_set_new_nocheck(task, "timezone", json_string(tz));
    if (deadline) {
        char dl_utc[RFC3339_LEN];
        rfc3339_format(dms, dl_utc);
        json_object_set_new_nocheck(task, "deadline", json_string(dl_utc));
    } else if (json_is_null(json_object_get(b, "deadline"))) {
        json_object_set_new_nocheck(task, "deadline", json_null());
    }
    if (md)
        json_object_set_nocheck(task, "metadata", md);
    if (input)
        json_object_set_nocheck(task, "input", input);
    char ts[RFC3339_LEN];
    rfc3339_format(now_ms(), ts);
    json_object_set_new_nocheck(task, "updated_at", json_string(ts));
    if (json_object_get(b, "schedule") || tz || json_object_get(b, "deadline"))
        task_schedule_next(task, now_ms());
    rc = store_update(tx, SK_TASK, a->project_id, task);
    if (!rc)
        sched_task_changed_on_commit(tx, r->app->sched, task, false);
    if (!rc && deps)
        rc = unblock_removed(tx, r->app, a->project_id, a->task_id, deps);
    if (!rc)
        rc = events_emit(tx, r->app->events, a->project_id, a->task_id, NULL, "task.updated",
                         json_pack("{s:O}", "changes", b));
    if (!rc)
        a->task = json_incref(task);
out:
    json_decref(task);
    return rc;
}

void api_tasks_update(struct req *r)
{
    json_t *body = http_body_object(r);
    if (!body)
        return;
    struct update_arg a = {r, http_param(r, "project_id"), http_param(r, "task_id"), body, NULL};
    int rc = store_write(r->app->store, update_fn, &a);
    if (rc) {
        api_store_error(r, rc, "task");
        return;
    }
    json_t *t = api_task_public(a.task);
    json_decref(a.task);
    http_json(r, 200, t);
}

/* ---- actions over a task's runs ---- */

struct action_arg {
    struct req *r;
    const char *project_id, *task_id;
    const char *action;
    json_t *input;
    json_t *result;
};

/* Ends or suspends the task's active runs as the action says. */
static int each_run(struct store_tx *tx, struct action_arg *a, int (*fn)(struct store_tx *,
                    struct action_arg *, json_t *run))
{
    int64_t offset = 0;
    for (;;) {
        struct store_filter f = {"task_id", a->task_id};
        struct store_query q = {&f, 1, 500, offset, true, NULL};
        json_t *runs = NULL;
        int rc = store_list(tx, SK_RUN, a->project_id, &q, &runs, NULL);
        if (rc)
            return rc;
        size_t i;
        json_t *run;
        json_array_foreach(runs, i, run) {
            if (run_status_terminal(run_status_of(run)))
                continue;
            /* the list is not locked: act on the run as it is now, read
             * again and (PostgreSQL) locked until commit.  Another node's
             * change between the list and the write was overwritten: a run
             * completed there was then canceled here, two terminal events */
            json_t *cur = store_get(tx, SK_RUN, a->project_id,
                                    json_string_value(json_object_get(run, "id")));
            rc = cur && !run_status_terminal(run_status_of(cur)) ? fn(tx, a, cur) : 0;
            json_decref(cur);
            if (rc) {
                json_decref(runs);
                return rc;
            }
        }
        size_t n = json_array_size(runs);
        json_decref(runs);
        if (n < 500)
            return 0;
        offset += 500;
    }
}

static int cancel_one(struct store_tx *tx, struct action_arg *a, json_t *run)
{
    enum run_status st = run_status_of(run);
    if (st == RS_CANCELING)
        return 0;
    /* a run whose code is live gets canceling until it has stopped */
    bool live = runner_code_live(run);
    int rc = run_move(tx, a->r->app, run, live ? RS_CANCELING : RS_CANCELED, NULL);
    return rc == -EPERM ? 0 : rc;
}

static int pause_one(struct store_tx *tx, struct action_arg *a, json_t *run)
{
    if (run_status_of(run) != RS_QUEUED)
        return 0;
    json_object_set_new_nocheck(run, "paused_by_task", json_true());
    return run_move(tx, a->r->app, run, RS_PAUSED, NULL);
}

/* The runs the task's pause held (a run paused by its worker or a PATCH
 * after it started stays paused): those pause_one or run_move paused, and
 * those stored before that was recorded, which had never started. */
static int resume_one(struct store_tx *tx, struct action_arg *a, json_t *run)
{
    if (run_status_of(run) != RS_PAUSED ||
        (!json_is_true(json_object_get(run, "paused_by_task")) &&
         json_is_string(json_object_get(run, "started_at"))))
        return 0;
    return run_move(tx, a->r->app, run, RS_QUEUED, NULL);
}

static json_t *latest_run(struct store_tx *tx, const char *project, const char *task_id)
{
    struct store_filter f = {"task_id", task_id};
    struct store_query q = {&f, 1, 1, 0, false, NULL};
    json_t *runs = NULL;
    if (store_list(tx, SK_RUN, project, &q, &runs, NULL))
        return NULL;
    json_t *r = json_incref(json_array_get(runs, 0));
    json_decref(runs);
    return r;
}

/* Re-runnable (store_write_retry): its outputs (a->result, an error
 * answer) are reset on entry. */
static int action_fn(struct store_tx *tx, void *arg)
{
    struct action_arg *a = arg;
    struct req *r = a->r;
    json_decref(a->result);
    a->result = NULL;
    free(r->resp);
    r->resp = NULL;
    json_t *task = store_get(tx, SK_TASK, a->project_id, a->task_id);
    if (!task) {
        http_not_found(r, "task", a->task_id);
        return -ENOENT;
    }
    int rc = 0;
    const char *act = a->action;
    if (!strcmp(act, "delete")) {
        rc = each_run(tx, a, cancel_one);
        if (!rc)
            rc = store_delete(tx, SK_TASK, a->project_id, a->task_id);
        if (!rc) {
            json_object_set_new_nocheck(task, "schedule", json_null());   /* forget its cron */
            sched_task_changed_on_commit(tx, r->app->sched, task, false);
        }
        if (!rc)
            rc = events_emit(tx, r->app->events, a->project_id, a->task_id, NULL, "task.deleted",
                             NULL);
        if (!rc) {
            /* runs blocked on it fail with dependency_failed, as for a
             * canceled run of it (a task deleted before it ever ran left
             * them waiting for good) */
            json_t *gone = json_pack("{s:s, s:s, s:s}", "task_id", a->task_id, "project_id",
                                     a->project_id, "status", "canceled");
            run_notify(tx, r->app, gone);
            json_decref(gone);
        }
    } else if (!strcmp(act, "cancel")) {
        rc = each_run(tx, a, cancel_one);
    } else if (!strcmp(act, "pause") || !strcmp(act, "resume")) {
        bool pause = !strcmp(act, "pause");
        json_object_set_new_nocheck(task, "paused", json_boolean(pause));
        task_schedule_next(task, now_ms());
        rc = store_update(tx, SK_TASK, a->project_id, task);
        if (!rc)
            sched_task_changed_on_commit(tx, r->app->sched, task, false);
        if (!rc)
            rc = each_run(tx, a, pause ? pause_one : resume_one);
        if (!rc)
            rc = events_emit(tx, r->app->events, a->project_id, a->task_id, NULL, "task.updated",
                             json_pack("{s:b}", "paused", pause));
    } else if (!strcmp(act, "run")) {
        rc = api_run_input_fits(r, tx, task, a->input)
                 ? run_start_for_task(tx, r->app, task, a->input, &a->result)
                 : -EINVAL;
    } else if (!strcmp(act, "retry")) {
        json_t *last = latest_run(tx, a->project_id, a->task_id);
        enum run_status st = last ? run_status_of(last) : RS_COMPLETED;
        if (!last || !(st == RS_FAILED || st == RS_TIMED_OUT || st == RS_CANCELED ||
                       st == RS_DENIED)) {
            http_error(r, 409, "not_retryable", NULL,
                       last ? "the task's latest run is %s; only failed, timed_out, canceled or "
                              "denied tasks can be retried"
                            : "the task has no run to retry%s",
                       last ? run_status_name(st) : "");
            json_decref(last);
            json_decref(task);
            return -EPERM;
        }
        json_t *run = run_new_doc(task, json_object_get(last, "input"), 
                                  json_string_value(json_object_get(last, "agent_id")));
        json_object_set_new_nocheck(run, "attempt",
                                    json_integer(json_integer_value(json_object_get(last, "attempt")) + 1));
        json_object_set_nocheck(run, "retry_of", json_object_get(last, "id"));
        if (json_object_get(last, "latest_checkpoint"))   /* a retry resumes */
            json_object_set_nocheck(run, "latest_checkpoint", json_object_get(last, "latest_checkpoint"));
        /* its task_run.retrying follows its queued event (insert_run) */
        rc = run_insert(tx, r->app, task, run);
        a->result = run;
        json_decref(last);
    }
    if (!rc && !a->result && strcmp(act, "delete"))
        a->result = store_get(tx, SK_TASK, a->project_id, a->task_id);
    json_decref(task);
    return rc;
}

static void task_action(struct req *r, const char *action, int status)
{
    struct action_arg a = {r, http_param(r, "project_id"), http_param(r, "task_id"), action, NULL,
                           NULL};
    if (!strcmp(action, "run")) {
        json_t *body = http_body_object(r);
        if (!body)
            return;
        json_t *input = NULL;
        if (!api_no_id(r, body, RUN_ID_WHY) ||
            !api_known_fields(r, body, (const char *const[]){"input", NULL}, "") ||
            !api_obj(r, body, "input", "input", &input))
            return;
        a.input = input;
    }
    /* a task's action locks the task, then its runs; a run's change locks
     * the run, then its task: on PostgreSQL two nodes doing both deadlock
     * now and then, and the loser is run again rather than answered 503 */
    int rc = store_write_retry(r->app->store, action_fn, &a);
    if (rc == -EAGAIN) {
        free(r->resp);   /* decided on a transaction that was rolled back */
        r->resp = NULL;
    }
    if (rc) {
        api_store_error(r, rc, "task");
        json_decref(a.result);
        return;
    }
    if (!strcmp(action, "delete")) {
        http_json(r, 200, json_pack("{s:s, s:b}", "id", a.task_id, "deleted", 1));
        return;
    }
    json_t *out;
    if (json_object_get(a.result, "task_id"))
        out = run_public(a.result);
    else
        out = api_task_public(a.result);
    json_decref(a.result);
    http_json(r, status, out);
}

void api_tasks_delete(struct req *r) { task_action(r, "delete", 200); }
void api_tasks_run(struct req *r) { task_action(r, "run", 201); }
void api_tasks_cancel(struct req *r) { task_action(r, "cancel", 200); }
void api_tasks_retry(struct req *r) { task_action(r, "retry", 201); }
void api_tasks_pause(struct req *r) { task_action(r, "pause", 200); }
void api_tasks_resume(struct req *r) { task_action(r, "resume", 200); }

void api_tasks_schedule(struct req *r)
{
    const char *c = http_query(r, "count");
    int64_t count = 5;
    if (c && (parse_i64(c, &count) || count < 1 || count > 100)) {
        http_error(r, 400, "invalid_parameter", "count", "count must be an integer from 1 to 100");
        return;
    }
    struct get_arg g = {SK_TASK, http_param(r, "project_id"), http_param(r, "task_id"), NULL};
    int rc = store_read(r->app->store, get_fn, &g);
    if (rc) {
        json_decref(g.doc);
        api_store_error(r, rc, "task");
        return;
    }
    if (!g.doc) {
        http_not_found(r, "task", g.id);
        return;
    }
    const char *expr = json_string_value(json_object_get(g.doc, "schedule"));
    const char *zone = json_string_value(json_object_get(g.doc, "timezone"));
    char *err = NULL;
    const struct tz *z = tz_get(zone ? zone : "UTC", &err);
    free(err);
    err = NULL;
    json_t *times = json_array();
    struct cron *cr = expr ? cron_parse(expr, &err) : NULL;
    free(err);
    int64_t at = now_ms(), deadline = task_deadline_ms(g.doc);
    for (int64_t i = 0; cr && z && i < count; i++) {
        at = cron_next(cr, z, at);
        if (at < 0 || at >= deadline)
            break;
        char utc[RFC3339_LEN], local[64];
        rfc3339_format(at, utc);
        struct tm tm;
        tz_localtime(z, at / 1000, &tm);
        long off = tm.tm_gmtoff / 60;
        snprintf(local, sizeof local, "%04d-%02d-%02dT%02d:%02d:%02d%c%02ld:%02ld",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 off < 0 ? '-' : '+', labs(off) / 60, labs(off) % 60);
        json_array_append_new(times, json_pack("{s:s, s:s}", "at", utc, "local", local));
    }
    cron_free(cr);
    json_t *out = json_pack("{s:O, s:O, s:O, s:O, s:o}", "schedule",
                            json_object_get(g.doc, "schedule"), "timezone",
                            json_object_get(g.doc, "timezone"), "paused",
                            json_object_get(g.doc, "paused"), "next_run_at",
                            json_object_get(g.doc, "next_run_at"), "data", times);
    json_decref(g.doc);
    http_json(r, 200, out);
}
