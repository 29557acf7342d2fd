/*
 * api_admin — projects, API keys and definitions.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "jdump.h"
#include "auth.h"
#include "events.h"
#include "jsonschema.h"
#include "run.h"
#include "runtime.h"
#include "util.h"

struct doc_arg {
    struct req *r;
    enum store_kind kind;
    const char *project_id;
    const char *id;
    json_t *doc;
    json_t *out;
    int64_t total;
    struct store_query q;
};

static int put_fn(struct store_tx *tx, void *arg)
{
    struct doc_arg *a = arg;
    return store_put(tx, a->kind, a->project_id, a->doc);
}

static int list_fn(struct store_tx *tx, void *arg)
{
    struct doc_arg *a = arg;
    return store_list(tx, a->kind, a->project_id, &a->q, &a->out, &a->total);
}

static int get_fn(struct store_tx *tx, void *arg)
{
    struct doc_arg *a = arg;
    a->out = store_get(tx, a->kind, a->project_id, a->id);
    return 0;
}

static void list_reply(struct req *r, json_t *data, int64_t offset, int64_t total)
{
    http_json(r, 200, json_pack("{s:o, s:b, s:I}", "data", data, "has_more",
                                offset + (int64_t)json_array_size(data) < total, "total",
                                (json_int_t)total));
}

static void now_ts(char ts[RFC3339_LEN])
{
    rfc3339_format(now_ms(), ts);
}

/* ---- projects ---- */

void api_projects_create(struct req *r)
{
    json_t *body = http_body_object(r);
    const char *name = NULL;
    char pid[ID_LEN], ts[RFC3339_LEN];
    if (!body || !api_known_fields(r, body, (const char *const[]){"name", "id", NULL}, "") ||
        !api_str(r, body, "name", "name", r->app->cfg.max_name_len, &name) ||
        !api_new_id(r, body, "prj", pid))
        return;
    if (!name || !*name) {
        http_error(r, 400, "missing_field", "name", "name is required");
        return;
    }
    if (!name[strspn(name, " \t\r\n")]) {
        http_error(r, 400, "invalid_value", "name", "name must not be blank");
        return;
    }
    /* ids starting with '_' are quern's own: "_root" holds the root keys, and
     * a project made with that id turned any key made in it into a root key */
    if (pid[0] == '_') {
        http_error(r, 400, "reserved_id", "id", "project ids starting with '_' are reserved");
        return;
    }
    now_ts(ts);
    json_t *doc = json_pack("{s:s, s:s, s:s, s:s}", "id", pid, "name", name, "created_at", ts,
                            "updated_at", ts);
    struct doc_arg a = {.r = r, .kind = SK_PROJECT, .project_id = pid, .doc = doc};
    int rc = store_write(r->app->store, put_fn, &a);
    if (rc) {
        api_store_error(r, rc, "project");
        json_decref(doc);
        return;
    }
    http_json(r, 201, doc);
}

void api_projects_list(struct req *r)
{
    int64_t limit, offset;
    if (!http_paging(r, &limit, &offset))
        return;
    struct store_filter f = {"id", r->key_project};
    struct doc_arg a = {.r = r, .kind = SK_PROJECT};
    a.q = (struct store_query){r->key_project ? &f : NULL, r->key_project ? 1 : 0, limit, offset,
                               false, NULL};
    int rc = store_read(r->app->store, list_fn, &a);
    if (rc) {
        api_store_error(r, rc, "project");
        return;
    }
    list_reply(r, a.out, offset, a.total);
}

/* ---- keys ---- */

static json_t *key_public(const json_t *k)
{
    json_t *o = json_deep_copy(k);
    json_object_del(o, "hash");
    return o;
}

void api_keys_create(struct req *r)
{
    const char *project = http_param(r, "project_id");
    json_t *body = http_body_object(r);
    const char *name = NULL;
    json_t *scopes = NULL;
    char kid[ID_LEN];
    if (!body || !api_project(r, project) ||
        !api_known_fields(r, body, (const char *const[]){"id", "name", "scopes", NULL}, "") ||
        !api_str(r, body, "name", "name", r->app->cfg.max_name_len, &name) ||
        !api_arr(r, body, "scopes", "scopes", 16, &scopes) || !api_new_id(r, body, "key", kid))
        return;
    if (!scopes || !json_array_size(scopes)) {
        http_error(r, 400, "missing_field", "scopes",
                   "scopes is required: one or more of task:read, task:write, worker, admin");
        return;
    }
    if (name && !name[strspn(name, " \t\r\n")]) {
        http_error(r, 400, "invalid_value", "name",
                   "name must not be blank (leave it out for none)");
        return;
    }
    size_t i;
    json_t *s;
    json_array_foreach(scopes, i, s) {
        if (!json_is_string(s) || !auth_scope_bit(json_string_value(s))) {
            http_error(r, 400, "invalid_enum", "scopes",
                       "scopes[%zu] must be one of task:read, task:write, worker, admin", i);
            return;
        }
    }
    json_t *uniq = api_unique(scopes);   /* each scope once, in the order given */
    scopes = uniq;
    char *key = auth_new_key();
    char hash[65], ts[RFC3339_LEN];
    auth_hash_key(key, hash);
    now_ts(ts);
    json_t *doc = json_pack("{s:s, s:s, s:o, s:O, s:s, s:s, s:b, s:s}", "id", kid, "project_id",
                            project, "name", name ? json_string(name) : json_null(), "scopes",
                            scopes, "hash", hash, "created_at", ts, "revoked", 0, "prefix", "qk_");
    json_decref(uniq);
    struct doc_arg a = {.r = r, .kind = SK_KEY, .project_id = project, .doc = doc};
    int rc = store_write(r->app->store, put_fn, &a);
    if (rc) {
        api_store_error(r, rc, "api key");
    } else {
        json_t *out = key_public(doc);
        /* a replay (Idempotency-Key) answers without the key: it is shown
         * once, and only its hash is stored, not in the replay record */
        json_object_set_new(out, "key", json_null());
        size_t n;
        r->idem_body = jdump(out, &n);
        json_object_set_new(out, "key", json_string(key));
        http_json(r, 201, out);
    }
    free(key);
    json_decref(doc);
}

void api_keys_list(struct req *r)
{
    const char *project = http_param(r, "project_id");
    int64_t limit, offset;
    if (!http_paging(r, &limit, &offset) || !api_project(r, project))
        return;
    struct doc_arg a = {.r = r, .kind = SK_KEY, .project_id = project};
    a.q = (struct store_query){NULL, 0, limit, offset, false, NULL};
    int rc = store_read(r->app->store, list_fn, &a);
    if (rc) {
        api_store_error(r, rc, "api key");
        return;
    }
    json_t *data = json_array();
    size_t i;
    json_t *k;
    json_array_foreach(a.out, i, k) json_array_append_new(data, key_public(k));
    json_decref(a.out);
    list_reply(r, data, offset, a.total);
}

static int revoke_fn(struct store_tx *tx, void *arg)
{
    struct doc_arg *a = arg;
    json_t *k = store_get(tx, SK_KEY, a->project_id, a->id);
    if (!k)
        return -ENOENT;
    a->out = k;
    if (json_is_true(json_object_get(k, "revoked")))
        return 0;   /* revoked already: it keeps the time it was */
    char ts[RFC3339_LEN];
    now_ts(ts);
    json_object_set_new(k, "revoked", json_true());
    json_object_set_new(k, "revoked_at", json_string(ts));
    return store_update(tx, SK_KEY, a->project_id, k);
}

void api_keys_delete(struct req *r)
{
    struct doc_arg a = {.r = r, .kind = SK_KEY, .project_id = http_param(r, "project_id"),
                        .id = http_param(r, "id")};
    int rc = store_write(r->app->store, revoke_fn, &a);
    if (rc) {
        if (rc == -ENOENT)
            http_not_found(r, "api key", a.id);
        else
            api_store_error(r, rc, "api key");
        json_decref(a.out);
        return;
    }
    auth_forget(r->app->auth, json_string_value(json_object_get(a.out, "hash")));
    json_t *out = key_public(a.out);
    json_decref(a.out);
    http_json(r, 200, out);
}

/* ---- definitions ---- */

static const char *const def_fields[] = {"id", "title", "description", "runtime_id", "code",
                                         "input_schema", "output_schema", "settings", NULL};

/* Validates a definition body into doc (fields present are copied). */
static bool def_fields_ok(struct req *r, json_t *body, json_t *doc)
{
    const char *title = NULL, *desc = NULL, *rt = NULL, *code = NULL;
    json_t *in = NULL, *out = NULL, *settings = NULL;
    if (!api_str(r, body, "title", "title", r->app->cfg.max_name_len, &title) ||
        !api_str(r, body, "description", "description", r->app->cfg.max_description_len, &desc) ||
        !api_runtime(r, body, "runtime_id", &rt) ||
        !api_str(r, body, "code", "code", 0, &code) ||
        !api_obj(r, body, "input_schema", "input_schema", &in) ||
        !api_obj(r, body, "output_schema", "output_schema", &out) ||
        !api_obj(r, body, "settings", "settings", &settings))
        return false;
    if (code && (int64_t)strlen(code) > r->app->cfg.max_code_bytes) {
        http_error(r, 400, "too_long", "code", "code is larger than %lld bytes",
                   (long long)r->app->cfg.max_code_bytes);
        return false;
    }
    /* as a task's: its tasks take them (under their own) */
    if (settings && !api_settings_ok(r, settings))
        return false;
    json_t *schemas[2] = {in, out};
    const char *names[2] = {"input_schema", "output_schema"};
    for (int i = 0; i < 2; i++) {
        char *msg = NULL;
        if (schemas[i] && jsonschema_check(schemas[i], &msg)) {
            http_error(r, 400, "invalid_schema", names[i], "%s: %s", names[i], msg ? msg : "invalid");
            free(msg);
            return false;
        }
    }
    for (const char *const *f = def_fields; *f; f++)
        if (strcmp(*f, "id") && json_object_get(body, *f))
            json_object_set(doc, *f, json_object_get(body, *f));
    return true;
}

void api_defs_create(struct req *r)
{
    const char *project = http_param(r, "project_id");
    json_t *body = http_body_object(r);
    char did[ID_LEN], ts[RFC3339_LEN];
    if (!body || !api_project(r, project) || !api_known_fields(r, body, def_fields, "") ||
        !api_new_id(r, body, "def", did))
        return;
    now_ts(ts);
    json_t *doc = json_pack("{s:s, s:s, s:n, s:n, s:s, s:n, s:n, s:n, s:{}, s:s, s:s}", "id", did,
                            "project_id", project, "title", "description", "runtime_id", "default",
                            "code", "input_schema", "output_schema", "settings", "created_at", ts,
                            "updated_at", ts);
    if (!def_fields_ok(r, body, doc)) {
        json_decref(doc);
        return;
    }
    struct doc_arg a = {.r = r, .kind = SK_DEFINITION, .project_id = project, .doc = doc};
    int rc = store_write(r->app->store, put_fn, &a);
    if (rc) {
        api_store_error(r, rc, "definition");
        json_decref(doc);
        return;
    }
    http_json(r, 201, doc);
}

void api_defs_list(struct req *r)
{
    const char *project = http_param(r, "project_id");
    int64_t limit, offset;
    if (!http_paging(r, &limit, &offset) || !api_project(r, project))
        return;
    struct doc_arg a = {.r = r, .kind = SK_DEFINITION, .project_id = project};
    a.q = (struct store_query){NULL, 0, limit, offset, false, NULL};
    int rc = store_read(r->app->store, list_fn, &a);
    if (rc) {
        api_store_error(r, rc, "definition");
        return;
    }
    list_reply(r, a.out, offset, a.total);
}

void api_defs_get(struct req *r)
{
    struct doc_arg a = {.r = r, .kind = SK_DEFINITION, .project_id = http_param(r, "project_id"),
                        .id = http_param(r, "id")};
    int rc = store_read(r->app->store, get_fn, &a);
    if (rc) {   /* a read that failed: not an absent definition */
        json_decref(a.out);
        api_store_error(r, rc, "definition");
        return;
    }
    if (!a.out) {
        http_not_found(r, "definition", a.id);
        return;
    }
    http_json(r, 200, a.out);
}

static int def_update_fn(struct store_tx *tx, void *arg)
{
    struct doc_arg *a = arg;
    json_t *d = store_get(tx, SK_DEFINITION, a->project_id, a->id);
    if (!d) {
        http_not_found(a->r, "definition", a->id);
        return -ENOENT;
    }
    if (!def_fields_ok(a->r, a->doc, d)) {
        json_decref(d);
        return -EINVAL;
    }
    char ts[RFC3339_LEN];
    now_ts(ts);
    json_object_set_new(d, "updated_at", json_string(ts));
    int rc = store_update(tx, SK_DEFINITION, a->project_id, d);
    a->out = d;
    return rc;
}

void api_defs_update(struct req *r)
{
    json_t *body = http_body_object(r);
    if (!body || !api_known_fields(r, body, def_fields + 1, ""))
        return;
    struct doc_arg a = {.r = r, .kind = SK_DEFINITION, .project_id = http_param(r, "project_id"),
                        .id = http_param(r, "id"), .doc = body};
    int rc = store_write(r->app->store, def_update_fn, &a);
    if (rc) {
        api_store_error(r, rc, "definition");
        json_decref(a.out);
        return;
    }
    http_json(r, 200, a.out);
}

static int def_delete_fn(struct store_tx *tx, void *arg)
{
    struct doc_arg *a = arg;
    return store_delete(tx, SK_DEFINITION, a->project_id, a->id);
}

void api_defs_delete(struct req *r)
{
    struct doc_arg a = {.r = r, .kind = SK_DEFINITION, .project_id = http_param(r, "project_id"),
                        .id = http_param(r, "id")};
    int rc = store_write(r->app->store, def_delete_fn, &a);
    if (rc) {
        if (rc == -ENOENT)
            http_not_found(r, "definition", a.id);
        else
            api_store_error(r, rc, "definition");
        return;
    }
    http_json(r, 200, json_pack("{s:s, s:b}", "id", a.id, "deleted", 1));
}

/* trigger: a task from the definition, run at once */
struct trigger_arg {
    struct req *r;
    const char *project_id, *def_id;
    json_t *body;
    json_t *task, *run;
};

static int trigger_fn(struct store_tx *tx, void *arg)
{
    struct trigger_arg *a = arg;
    json_t *def = store_get(tx, SK_DEFINITION, a->project_id, a->def_id);
    if (!def) {
        http_not_found(a->r, "definition", a->def_id);
        return -ENOENT;
    }
    /* the input is checked against its input_schema by api_task_from_body */
    json_decref(def);
    json_t *input = json_object_get(a->body, "input");
    json_t *tb = json_pack("{s:s, s:b}", "definition_id", a->def_id, "run", 0);
    if (input)
        json_object_set(tb, "input", input);
    if (json_object_get(a->body, "name"))
        json_object_set(tb, "name", json_object_get(a->body, "name"));
    if (json_object_get(a->body, "parent_id"))
        json_object_set(tb, "parent_id", json_object_get(a->body, "parent_id"));
    struct task_opts opts = {0};
    json_t *task = api_task_from_body(a->r, tx, a->project_id, tb, "", &opts);
    json_decref(tb);
    if (!task)
        return -EINVAL;
    json_object_set_new(task, "type", json_string("triggered"));
    int rc = store_put(tx, SK_TASK, a->project_id, task);
    if (!rc)
        rc = events_emit(tx, a->r->app->events, a->project_id,
                         json_string_value(json_object_get(task, "id")), NULL, "task.created", NULL);
    json_t *run = NULL;
    if (!rc) {
        run = run_new_doc(task, NULL, NULL);
        rc = run_insert(tx, a->r->app, task, run);
    }
    if (rc) {
        json_decref(task);
        json_decref(run);
        return rc;
    }
    a->task = store_get(tx, SK_TASK, a->project_id, json_string_value(json_object_get(task, "id")));
    json_decref(task);
    a->run = run;
    return 0;
}

void api_defs_trigger(struct req *r)
{
    json_t *body = http_body_object(r);
    json_t *input = NULL;
    const char *name = NULL, *parent = NULL;
    if (!body ||
        !api_known_fields(r, body, (const char *const[]){"input", "name", "parent_id", NULL}, "") ||
        !api_obj(r, body, "input", "input", &input) ||
        !api_str(r, body, "name", "name", r->app->cfg.max_name_len, &name) ||
        !api_str(r, body, "parent_id", "parent_id", 64, &parent))
        return;
    struct trigger_arg a = {r, http_param(r, "project_id"), http_param(r, "id"), body, NULL, NULL};
    int rc = store_write(r->app->store, trigger_fn, &a);
    if (rc) {
        api_store_error(r, rc, "definition");
        return;
    }
    /* the task as every task route answers it: the index flags stay in the store */
    json_t *out = api_task_public(a.task);
    json_decref(a.task);
    json_object_set_new(out, "run", run_public(a.run));
    json_decref(a.run);
    http_json(r, 201, out);
}
