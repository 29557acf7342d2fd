/*
 * api_storage — storage instances of a project, and the storage accesses
 * that external workers report for their runs.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "run.h"
#include "storage.h"
#include "util.h"

static const char *const scopes[] = {"account", "project", "organization", NULL};

struct sto_arg {
    struct req *r;
    json_t *doc;
    json_t *out;
    int64_t total;
    struct store_query q;
};

static int put_fn(struct store_tx *tx, void *arg)
{
    struct sto_arg *a = arg;
    /* names are unique per scope and account */
    struct store_filter f[3] = {
        {"scope", json_string_value(json_object_get(a->doc, "scope"))},
        {"name", json_string_value(json_object_get(a->doc, "name"))},
        {"account_id", json_string_value(json_object_get(a->doc, "account_id"))}};
    struct store_query q = {f, 3, 1, 0, true, NULL};
    json_t *arr = NULL;
    int rc = store_list(tx, SK_STORAGE, http_param(a->r, "project_id"), &q, &arr, NULL);
    size_t n = json_array_size(arr);
    json_decref(arr);
    if (rc)
        return rc;
    /* -EEXIST from the put: another node made the name meanwhile (the
     * store's unique index on it; the id is new) */
    if (n || (rc = store_put(tx, SK_STORAGE, http_param(a->r, "project_id"), a->doc)) == -EEXIST) {
        http_error(a->r, 409, "already_exists", "name",
                   "a %s storage instance named %s already exists",
                   json_string_value(json_object_get(a->doc, "scope")),
                   json_string_value(json_object_get(a->doc, "name")));
        return -EEXIST;
    }
    return rc;
}

void api_storage_create(struct req *r)
{
    const char *project = http_param(r, "project_id");
    json_t *body = http_body_object(r);
    const char *scope = NULL, *name = NULL, *account = NULL;
    if (!body || !api_project(r, project) ||
        !api_no_id(r, body, "a storage instance's id is made by quern; its scope and name name it") ||
        !api_known_fields(r, body, (const char *const[]){"scope", "name", "account_id", NULL}, "") ||
        !api_enum(r, body, "scope", "scope", scopes, &scope) ||
        !api_str(r, body, "name", "name", r->app->cfg.max_name_len, &name) ||
        !api_str(r, body, "account_id", "account_id", 256, &account))
        return;
    if (!scope || !name || !*name) {
        http_error(r, 400, "missing_field", !scope ? "scope" : "name", "%s is required",
                   !scope ? "scope (account, project or organization)" : "name");
        return;
    }
    if (account && !*account) {
        http_error(r, 400, "invalid_value", "account_id", "account_id must not be empty");
        return;
    }
    if (!strcmp(scope, "account") != (account != NULL)) {
        /* the code was "invalid_request", the error's type, naming nothing */
        if (account)
            http_error(r, 400, "conflicting_fields", "account_id",
                       "account_id is only for account scope (scope is %s)", scope);
        else
            http_error(r, 400, "missing_field", "account_id",
                       "account_id is required for account scope");
        return;
    }
    struct sto_arg a = {r, storage_new_doc(project, scope, name, account), NULL, 0, {0}};
    int rc = store_write(r->app->store, put_fn, &a);
    if (rc) {
        api_store_error(r, rc, "storage instance");
        json_decref(a.doc);
        return;
    }
    json_object_set_new(a.doc, "size_bytes", json_integer(0));
    http_json(r, 201, a.doc);
}

static int list_fn(struct store_tx *tx, void *arg)
{
    struct sto_arg *a = arg;
    int rc = store_list(tx, SK_STORAGE, http_param(a->r, "project_id"), &a->q, &a->out, &a->total);
    size_t i;
    json_t *d;
    /* a store that keeps the files (several nodes) knows their size, the
     * same through every node; else the caller walks the directories */
    json_array_foreach(a->out, i, d) {
        int64_t bytes = 0;
        bool partial = false;
        int src = rc ? rc : store_storage_size(tx, json_string_value(json_object_get(d, "id")),
                                               &bytes, &partial);
        if (src == -ENOTSUP)
            break;
        if (src)
            return src;
        json_object_set_new(d, "size_bytes", json_integer(bytes));
        if (partial)   /* a node holds files it could not write back */
            json_object_set_new(d, "size_bytes_partial", json_true());
    }
    return rc;
}

void api_storage_list(struct req *r)
{
    const char *project = http_param(r, "project_id");
    int64_t limit, offset;
    if (!http_paging(r, &limit, &offset) || !api_project(r, project))
        return;
    struct sto_arg a = {r, NULL, NULL, 0, {NULL, 0, limit, offset, false, NULL}};
    if (store_read(r->app->store, list_fn, &a)) {
        json_decref(a.out);   /* listed before a size read failed */
        http_error(r, 500, "store_error", NULL, "cannot list storage instances");
        return;
    }
    size_t i;
    json_t *d;
    /* the walks run on this HTTP thread: one budget for the whole page (500
     * instances of 100 000 entries each were 50 million per request) */
    int64_t budget = STORAGE_LIST_MAX_ENTRIES;
    json_array_foreach(a.out, i, d) {
        if (json_object_get(d, "size_bytes"))
            continue;
        bool partial = false;
        int64_t size = storage_size(r->app, project, json_string_value(json_object_get(d, "id")),
                                    &partial, &budget);
        json_object_set_new(d, "size_bytes", json_integer(size));
        if (partial)
            json_object_set_new(d, "size_bytes_partial", json_true());
    }
    http_json(r, 200, json_pack("{s:o, s:b, s:I}", "data", a.out, "has_more",
                                offset + (int64_t)json_array_size(a.out) < a.total, "total",
                                (json_int_t)a.total));
}

static const char *const access_types[] = {"opened", "provided", "accessed", NULL};

struct access_arg {
    struct req *r;
    const char *instance, *scope, *type;
    json_t *out;
};

static int access_fn(struct store_tx *tx, void *arg)
{
    struct access_arg *a = arg;
    struct req *r = a->r;
    const char *project = http_param(r, "project_id");
    json_t *run = store_get(tx, SK_RUN, project, http_param(r, "id"));
    if (!run || strcmp(json_string_value(json_object_get(run, "task_id")) ?: "",
                       http_param(r, "task_id"))) {
        json_decref(run);
        http_not_found(r, "run", http_param(r, "id"));
        return -ENOENT;
    }
    enum run_status st = run_status_of(run);
    if (run_status_terminal(st)) {
        /* a run that has ended takes nothing more (API.md "Live runs") */
        http_error(r, 409, "run_finished", NULL, "the run is %s and takes nothing more",
                   run_status_name(st));
        json_decref(run);
        return -EPERM;
    }
    /* the same rule as a task's storage: an account instance only of the
     * run's own account (none for a task without account_id) */
    json_t *inst = store_get(tx, SK_STORAGE, project, a->instance);
    bool ok = inst && !strcmp(json_string_value(json_object_get(inst, "scope")) ?: "", a->scope);
    if (ok && !strcmp(a->scope, "account")) {
        json_t *task = run_task(tx, run);
        const char *account = json_string_value(json_object_get(task, "account_id"));
        ok = account && !strcmp(account, json_string_value(json_object_get(inst, "account_id")) ?: "");
        json_decref(task);
    }
    json_decref(inst);
    if (!ok) {
        json_decref(run);
        http_error(r, 400, "unknown_storage", "instance_id",
                   "no %s storage instance %s in this project%s", a->scope, a->instance,
                   strcmp(a->scope, "account") ? "" : " for this run's account_id");
        return -EINVAL;
    }
    char ts[RFC3339_LEN];
    rfc3339_format(now_ms(), ts);
    json_t *access = run_note_storage_access(run, a->instance, a->scope, a->type, ts);
    int rc = run_save(tx, run);
    if (!rc)
        a->out = json_pack("{s:O}", "storage_access", access);
    json_decref(run);
    return rc;
}

void api_storage_access(struct req *r)
{
    json_t *body = http_body_object(r);
    struct access_arg a = {r, NULL, NULL, NULL, NULL};
    if (!body ||
        !api_known_fields(r, body, (const char *const[]){"instance_id", "scope", "access_type", NULL}, "") ||
        !api_str(r, body, "instance_id", "instance_id", 64, &a.instance) ||
        !api_enum(r, body, "scope", "scope", scopes, &a.scope) ||
        !api_enum(r, body, "access_type", "access_type", access_types, &a.type))
        return;
    if (!a.instance || !a.scope || !a.type) {
        http_error(r, 400, "missing_field", !a.instance ? "instance_id" : !a.scope ? "scope" : "access_type",
                   "instance_id, scope and access_type are required");
        return;
    }
    int rc = store_write(r->app->store, access_fn, &a);
    if (rc) {
        api_store_error(r, rc, "run");
        return;
    }
    http_json(r, 200, a.out);
}
