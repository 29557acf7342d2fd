/*
 * api_hooks — triggers (and the public POST /hooks/:trigger_id), outgoing
 * webhooks and their deliveries, the project policy, project secrets, and
 * a run's relay_message.  Runs on HTTP pool threads; each request is one
 * store transaction.  Secrets of every kind are sealed before they reach
 * the store and never rendered back (a generated webhook/trigger secret is
 * shown once, in the create response).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "crypto.h"
#include "policy.h"
#include "run.h"
#include "secrets.h"
#include "util.h"
#include "webhook.h"

#define MAX_SECRET_VALUE (64 * 1024)
#define MAX_SIGNING_SECRET 1024
#define MAX_RELAY_TEXT 40000
#define SIG_TOLERANCE_S 300

struct doc_op {
    struct req *r;
    const char *project_id, *id;
    json_t *doc, *out;
    int64_t total;
    struct store_query q;
    enum store_kind kind;
    bool created;
};

static void list_reply(struct req *r, json_t *data, int64_t offset, int64_t total)
{
    http_json(r, 200, json_pack("{s:o, s:b, s:I}", "data", data, "has_more",
                                offset + (int64_t)json_array_size(data) < total, "total",
                                (json_int_t)total));
}

static int list_fn(struct store_tx *tx, void *arg)
{
    struct doc_op *a = arg;
    return store_list(tx, a->kind, a->project_id, &a->q, &a->out, &a->total);
}

static int get_fn(struct store_tx *tx, void *arg)
{
    struct doc_op *a = arg;
    a->out = store_get(tx, a->kind, a->project_id, a->id);
    return 0;
}

/* Lists documents of a kind in the project, rendered by pub(). */
static void list_kind(struct req *r, enum store_kind kind, const struct store_filter *f, size_t nf,
                      json_t *(*pub)(const json_t *))
{
    const char *project = http_param(r, "project_id");
    int64_t limit, offset;
    if (!http_paging(r, &limit, &offset) || !api_project(r, project))
        return;
    struct doc_op a = {.r = r, .project_id = project, .kind = kind};
    a.q = (struct store_query){f, nf, limit, offset, false, NULL};
    int rc = store_read(r->app->store, list_fn, &a);
    if (rc) {
        api_store_error(r, rc, store_kind_name(kind));
        return;
    }
    json_t *data = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(a.out, i, d) json_array_append_new(data, pub(d));
    json_decref(a.out);
    list_reply(r, data, offset, a.total);
}

/* A signing secret: the one given (1-1024 characters), or a new one. */
static bool signing_secret(struct req *r, json_t *body, char **secret, bool *generated)
{
    const char *given = NULL;
    if (!api_str(r, body, "secret", "secret", MAX_SIGNING_SECRET, &given))
        return false;
    if (given && !*given) {
        http_error(r, 400, "invalid_secret", "secret", "secret must not be empty");
        return false;
    }
    if (given) {
        *secret = xstrdup(given);
        *generated = false;
        return true;
    }
    unsigned char raw[24];
    char hex[49];
    random_bytes(raw, sizeof raw);
    hex_encode(raw, sizeof raw, hex);
    *secret = xasprintf("whsec_%s", hex);
    *generated = true;
    return true;
}

/* ---- triggers ---- */

static json_t *trigger_public(const json_t *t)
{
    json_t *o = json_deep_copy(t);
    json_object_del(o, "secret_sealed");
    return o;
}

struct trg_create {
    struct req *r;
    const char *project_id, *task_id;
    json_t *doc;
};

static int trigger_put_fn(struct store_tx *tx, void *arg)
{
    struct trg_create *a = arg;
    json_t *task = store_get(tx, SK_TASK, a->project_id, a->task_id);
    if (!task) {
        http_error(a->r, 400, "unknown_task", "task_id", "task_id: no task %s in this project",
                   a->task_id);
        return -ENOENT;
    }
    json_decref(task);
    return store_put(tx, SK_TRIGGER, a->project_id, a->doc);
}

void api_triggers_create(struct req *r)
{
    const char *project = http_param(r, "project_id");
    json_t *body = http_body_object(r);
    const char *task_id = NULL, *desc = NULL;
    if (!body || !api_project(r, project) ||
        !api_no_id(r, body,
                   "a trigger's id is made by quern: /hooks/:trigger_id is one space for every "
                   "project") ||
        !api_known_fields(r, body, (const char *const[]){"task_id", "secret", "description", NULL},
                          "") ||
        !api_str(r, body, "task_id", "task_id", 64, &task_id) ||
        !api_str(r, body, "description", "description", r->app->cfg.max_description_len, &desc))
        return;
    if (!task_id || !*task_id) {
        http_error(r, 400, "missing_field", "task_id", "task_id is required");
        return;
    }
    char *secret = NULL;
    bool generated = false;
    if (!signing_secret(r, body, &secret, &generated))
        return;
    unsigned char key[32];
    secrets_derived_key(r->app, "trigger-secrets", key);
    char *sealed = secrets_seal_str(key, secret, strlen(secret));
    explicit_bzero(key, sizeof key);
    char id[ID_LEN], ts[RFC3339_LEN];
    id_new("trg", id);
    rfc3339_format(now_ms(), ts);
    char *url = xasprintf("/hooks/%s", id);
    json_t *doc = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:n, s:n, s:i}", "id", id,
                            "project_id", project, "task_id", task_id, "url", url, "secret_sealed",
                            sealed, "created_at", ts, "updated_at", ts, "last_fired_at",
                            "last_run_id", "fire_count", 0);
    json_object_set_new(doc, "description", desc ? json_string(desc) : json_null());
    struct trg_create a = {r, project, task_id, doc};
    int rc = store_write(r->app->store, trigger_put_fn, &a);
    if (rc) {
        api_store_error(r, rc, "trigger");
    } else {
        json_t *out = trigger_public(doc);
        if (generated)
            json_object_set_new(out, "secret", json_string(secret));
        http_json(r, 201, out);
    }
    json_decref(doc);
    free(url);
    free(sealed);
    explicit_bzero(secret, strlen(secret));
    free(secret);
}

void api_triggers_list(struct req *r)
{
    struct store_filter f = {"task_id", http_query(r, "task_id")};
    list_kind(r, SK_TRIGGER, &f, f.value ? 1 : 0, trigger_public);
}

static int delete_fn(struct store_tx *tx, void *arg)
{
    struct doc_op *a = arg;
    a->out = store_get(tx, a->kind, a->project_id, a->id);
    if (!a->out)
        return -ENOENT;
    int rc = store_delete(tx, a->kind, a->project_id, a->id);
    if (rc || a->kind != SK_WEBHOOK)
        return rc;
    /* a webhook's deliveries go with it */
    struct store_filter f = {"webhook_id", a->id};
    struct store_query q = {&f, 1, 0, 0, true, NULL};
    json_t *ds = NULL;
    rc = store_list(tx, SK_DELIVERY, a->project_id, &q, &ds, NULL);
    size_t i;
    json_t *d;
    json_array_foreach(ds, i, d) {
        if (!rc)
            rc = store_delete(tx, SK_DELIVERY, a->project_id,
                              json_string_value(json_object_get(d, "id")));
    }
    json_decref(ds);
    return rc;
}

/* Deletes the project's document id of a kind (what names it in a 404),
 * answering {field: id, deleted: true}. */
static void delete_kind(struct req *r, enum store_kind kind, const char *what, const char *field,
                        const char *id)
{
    const char *project = http_param(r, "project_id");
    if (!api_project(r, project))
        return;
    struct doc_op a = {.r = r, .project_id = project, .id = id, .kind = kind};
    int rc = store_write(r->app->store, delete_fn, &a);
    json_decref(a.out);
    if (rc == -ENOENT) {
        http_not_found(r, what, id);
        return;
    }
    if (rc) {
        api_store_error(r, rc, what);
        return;
    }
    http_json(r, 200, json_pack("{s:s, s:b}", field, id, "deleted", 1));
}

void api_triggers_get(struct req *r)
{
    const char *project = http_param(r, "project_id"), *id = http_param(r, "id");
    if (!api_project(r, project))
        return;
    struct doc_op a = {.r = r, .project_id = project, .id = id, .kind = SK_TRIGGER};
    int rc = store_read(r->app->store, get_fn, &a);
    if (rc || !a.out) {
        json_decref(a.out);
        http_not_found(r, "trigger", id);
        return;
    }
    http_json(r, 200, trigger_public(a.out));
    json_decref(a.out);
}

void api_triggers_delete(struct req *r)
{
    delete_kind(r, SK_TRIGGER, "trigger", "id", http_param(r, "id"));
}

struct fire {
    struct req *r;
    json_t *trigger, *input;
    char idem_key[65];
    json_t *result;
    int status;
};

static int fire_fn(struct store_tx *tx, void *arg)
{
    struct fire *f = arg;
    struct app *app = f->r->app;
    const char *project = json_string_value(json_object_get(f->trigger, "project_id"));
    const char *tid = json_string_value(json_object_get(f->trigger, "id"));
    char scope[96];
    snprintf(scope, sizeof scope, "hook:%s", tid);
    /* The trigger's row is read (and so locked, store.h invariant 5) before
     * the replay check: the same request sent to two nodes at once is then
     * checked by the second only after the first has committed its answer. */
    json_t *trg = store_get(tx, SK_TRIGGER, project, tid);
    /* The same signed request again (a replay inside the 300 s window, or a
     * sender's retry) returns the first answer and starts nothing.  A t is
     * accepted from 300 s before now to 300 s after, compared in whole
     * seconds: a request first seen with t 300 s ahead is accepted again
     * up to 601 s later, so the first answer is looked for that far back,
     * and a little more. */
    char *fp = NULL, *prev = NULL;
    int st = 0;
    if (!store_idem_get(tx, scope, f->idem_key, now_ms() - (2 * SIG_TOLERANCE_S + 2) * 1000LL, &fp,
                        &st, &prev)) {
        f->status = st;
        f->result = prev ? json_loads(prev, 0, NULL) : NULL;
        free(fp);
        free(prev);
        json_decref(trg);
        return f->result ? 0 : -EIO;
    }
    const char *task_id = json_string_value(json_object_get(trg, "task_id"));
    json_t *task = trg ? store_get(tx, SK_TASK, project, task_id) : NULL;
    if (!task) {
        if (trg)
            http_error(f->r, 404, "resource_missing", NULL, "the trigger's task %s no longer exists",
                       task_id);
        else
            http_not_found(f->r, "trigger", tid);
        json_decref(trg);
        return -ENOENT;
    }
    /* the body merged over the task's input holds to the definition's
     * input_schema, as for POST .../run: it started runs the schema refused */
    if (!api_run_input_fits(f->r, tx, task, f->input)) {
        json_decref(task);
        json_decref(trg);
        return -EINVAL;
    }
    json_t *run = run_new_doc(task, f->input,
                              json_string_value(json_object_get(task, "assigned_agent_id")));
    int rc = run_insert(tx, app, task, run);   /* paused when the task is */
    if (!rc) {
        char ts[RFC3339_LEN];
        rfc3339_format(now_ms(), ts);
        json_object_set_new(trg, "last_fired_at", json_string(ts));
        json_object_set(trg, "last_run_id", json_object_get(run, "id"));
        json_object_set_new(trg, "fire_count",
                            json_integer(json_integer_value(json_object_get(trg, "fire_count")) + 1));
        rc = store_update(tx, SK_TRIGGER, project, trg);
    }
    if (!rc) {
        f->status = 202;
        f->result = json_pack("{s:O, s:O, s:s, s:O}", "run_id", json_object_get(run, "id"),
                              "task_id", json_object_get(run, "task_id"), "trigger_id", tid,
                              "status", json_object_get(run, "status"));
        char *text = json_dumps(f->result, JSON_COMPACT);
        rc = store_idem_put(tx, scope, f->idem_key, NULL, f->status, text);
        free(text);
    }
    json_decref(run);
    json_decref(task);
    json_decref(trg);
    return rc;
}

static int load_trigger_fn(struct store_tx *tx, void *arg)
{
    struct fire *f = arg;
    f->trigger = store_get(tx, SK_TRIGGER, NULL, http_param(f->r, "trigger_id"));
    return 0;
}

bool api_hooks_before_body(struct req *r)
{
    struct fire f = {.r = r};
    /* a store that cannot be read now is the handler's to answer */
    if (!store_read(r->app->store, load_trigger_fn, &f) && !f.trigger) {
        http_not_found(r, "trigger", http_param(r, "trigger_id"));
        return false;
    }
    json_decref(f.trigger);
    if (!http_header(r, "X-Quern-Signature")) {
        http_error(r, 401, "missing_signature", NULL,
                   "the X-Quern-Signature header is required: t=<unix seconds>,sha256=<hex "
                   "HMAC-SHA256 of \"<t>.<body>\">");
        return false;
    }
    return true;
}

void api_hooks_receive(struct req *r)
{
    struct fire f = {.r = r};
    const char *tid = http_param(r, "trigger_id");
    char *secret = NULL;
    if (store_read(r->app->store, load_trigger_fn, &f) || !f.trigger) {
        http_not_found(r, "trigger", tid);
        goto out;
    }
    unsigned char key[32];
    secrets_derived_key(r->app, "trigger-secrets", key);
    int rc = secrets_open_str(key, json_string_value(json_object_get(f.trigger, "secret_sealed")),
                              &secret, NULL);
    explicit_bzero(key, sizeof key);
    if (rc) {
        http_error(r, 500, "secret_unreadable", NULL, "the trigger's secret cannot be opened");
        goto out;
    }
    const char *sig = http_header(r, "X-Quern-Signature");
    const char *body = r->body.data ? r->body.data : "";
    if (!sig) {
        http_error(r, 401, "missing_signature", NULL,
                   "the X-Quern-Signature header is required: t=<unix seconds>,sha256=<hex "
                   "HMAC-SHA256 of \"<t>.<body>\">");
        goto out;
    }
    int64_t t = 0;
    rc = crypto_sig_verify_t(sig, secret, body, r->body.len, now_ms() / 1000, SIG_TOLERANCE_S, &t);
    if (rc == -ETIMEDOUT) {
        http_error(r, 401, "stale_signature", NULL,
                   "the signature's timestamp is more than %d seconds from the server's clock",
                   SIG_TOLERANCE_S);
        goto out;
    }
    if (rc) {
        http_error(r, 401, "invalid_signature", NULL,
                   "the X-Quern-Signature does not match the body under the trigger's secret");
        goto out;
    }
    /* the signature covers the raw body; only now is it parsed */
    json_t *input = http_body_object(r);
    if (!input)
        goto out;
    f.input = input;
    unsigned char h[32];
    struct buf idem;
    buf_init(&idem);
    /* the signed message "<t>.<body>", not the header: a header spelled
     * differently (spaces, order, an added entry) is the same request */
    buf_printf(&idem, "%lld.", (long long)t);
    buf_append(&idem, body, r->body.len);
    crypto_sha256(idem.data, idem.len, h);
    buf_release(&idem);
    hex_encode(h, sizeof h, f.idem_key);
    rc = store_write(r->app->store, fire_fn, &f);
    if (rc) {
        api_store_error(r, rc, "trigger");
        goto out;
    }
    http_json(r, f.status, f.result);
    f.result = NULL;
out:
    if (secret) {
        explicit_bzero(secret, strlen(secret));
        free(secret);
    }
    json_decref(f.trigger);
    json_decref(f.result);
}

/* ---- webhooks ---- */

static json_t *webhook_public(const json_t *w)
{
    json_t *o = json_deep_copy(w);
    json_object_del(o, "secret_sealed");
    json_object_del(o, "cursor");
    return o;
}

/* Webhooks a project may have: each event is sent to every one that
 * matches, so without a bound one event became as many deliveries as an
 * admin key made copies of a URL (Stripe allows 16 endpoints). */
#define MAX_WEBHOOKS_PER_PROJECT 100

static int webhook_put_fn(struct store_tx *tx, void *arg)
{
    struct doc_op *a = arg;
    struct store_query q = {NULL, 0, 1, 0, false, NULL};
    json_t *some = NULL;
    int64_t n = 0;
    int rc = store_list(tx, SK_WEBHOOK, a->project_id, &q, &some, &n);
    json_decref(some);
    if (rc)
        return rc;
    if (n >= MAX_WEBHOOKS_PER_PROJECT) {
        http_error(a->r, 400, "too_many_webhooks", NULL,
                   "a project has at most %d webhooks (one may list many events)",
                   MAX_WEBHOOKS_PER_PROJECT);
        return -EDQUOT;
    }
    /* only events after the subscription are delivered */
    json_object_set_new(a->doc, "cursor", json_integer(store_event_last_id(tx)));
    return store_put(tx, SK_WEBHOOK, a->project_id, a->doc);
}

void api_webhooks_create(struct req *r)
{
    const char *project = http_param(r, "project_id");
    json_t *body = http_body_object(r);
    const char *url = NULL, *desc = NULL;
    json_t *events = NULL;
    char id[ID_LEN];
    if (!body || !api_project(r, project) ||
        !api_known_fields(r, body,
                          (const char *const[]){"id", "url", "events", "secret", "description",
                                                NULL},
                          "") ||
        !api_str(r, body, "url", "url", 2048, &url) ||
        !api_arr(r, body, "events", "events", 64, &events) ||
        !api_str(r, body, "description", "description", r->app->cfg.max_description_len, &desc) ||
        !api_new_id(r, body, "whk", id))
        return;
    if (!strcmp(id, WEBHOOK_RELAY_ID)) {
        /* the webhook_id of relay_message deliveries: such a webhook's own
         * deliveries would go out unsigned and be listed (and deleted) with
         * the relay's */
        http_error(r, 400, "reserved_id", "id",
                   "id \"%s\" is reserved for relay_message deliveries", WEBHOOK_RELAY_ID);
        return;
    }
    char *why = NULL;
    if (!url) {
        http_error(r, 400, "missing_field", "url", "url is required");
        return;
    }
    if (webhook_url_check(url, &why)) {
        http_error(r, 400, "invalid_url", "url", "url %s", why);
        free(why);
        return;
    }
    if (events && !json_array_size(events)) {
        http_error(r, 400, "invalid_events", "events",
                   "events must list at least one event type or pattern (\"*\" for all)");
        return;
    }
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e) {
        if (!json_is_string(e) || !webhook_pattern_ok(json_string_value(e))) {
            http_error(r, 400, "invalid_events", "events",
                       "events[%zu] must be an event type (task.created, task_run.completed, …), "
                       "a pattern like task_run.* or \"*\"", i);
            return;
        }
    }
    char *secret = NULL;
    bool generated = false;
    if (!signing_secret(r, body, &secret, &generated))
        return;
    unsigned char key[32];
    secrets_derived_key(r->app, "webhook-secrets", key);
    char *sealed = secrets_seal_str(key, secret, strlen(secret));
    explicit_bzero(key, sizeof key);
    char ts[RFC3339_LEN];
    rfc3339_format(now_ms(), ts);
    json_t *filter = events ? json_deep_copy(events) : json_pack("[s]", "*");
    json_t *doc = json_pack("{s:s, s:s, s:s, s:o, s:s, s:s, s:s}", "id", id, "project_id", project,
                            "url", url, "events", filter, "secret_sealed", sealed, "created_at", ts,
                            "updated_at", ts);
    json_object_set_new(doc, "description", desc ? json_string(desc) : json_null());
    struct doc_op a = {.r = r, .project_id = project, .doc = doc};
    int rc = store_write(r->app->store, webhook_put_fn, &a);
    if (rc == -EDQUOT) {
        /* answered */
    } else if (rc) {
        api_store_error(r, rc, "webhook");
    } else {
        webhook_hooks_changed(r->app->webhooks);
        json_t *out = webhook_public(doc);
        if (generated)
            json_object_set_new(out, "secret", json_string(secret));
        http_json(r, 201, out);
    }
    json_decref(doc);
    free(sealed);
    explicit_bzero(secret, strlen(secret));
    free(secret);
}

void api_webhooks_list(struct req *r)
{
    list_kind(r, SK_WEBHOOK, NULL, 0, webhook_public);
}

/* The project's webhook id (a new reference), or NULL having answered 404. */
static json_t *find_webhook(struct req *r, const char *project, const char *id)
{
    struct doc_op a = {.r = r, .project_id = project, .id = id, .kind = SK_WEBHOOK};
    int rc = store_read(r->app->store, get_fn, &a);
    if (rc || !a.out) {
        json_decref(a.out);
        http_not_found(r, "webhook", id);
        return NULL;
    }
    return a.out;
}

void api_webhooks_get(struct req *r)
{
    const char *project = http_param(r, "project_id"), *id = http_param(r, "id");
    if (!api_project(r, project))
        return;
    json_t *hook = find_webhook(r, project, id);
    if (!hook)
        return;
    http_json(r, 200, webhook_public(hook));
    json_decref(hook);
}

void api_webhooks_delete(struct req *r)
{
    delete_kind(r, SK_WEBHOOK, "webhook", "id", http_param(r, "id"));
}

void api_webhooks_deliveries(struct req *r)
{
    const char *project = http_param(r, "project_id"), *id = http_param(r, "id");
    if (!api_project(r, project))
        return;
    if (strcmp(id, WEBHOOK_RELAY_ID)) {
        json_t *hook = find_webhook(r, project, id);
        if (!hook)
            return;
        json_decref(hook);
    }
    struct store_filter f[2] = {{"webhook_id", id}, {"status", http_query(r, "status")}};
    if (f[1].value && strcmp(f[1].value, "pending") && strcmp(f[1].value, "succeeded") &&
        strcmp(f[1].value, "failed")) {
        http_error(r, 400, "invalid_enum", "status", "status must be pending, succeeded or failed");
        return;
    }
    list_kind(r, SK_DELIVERY, f, f[1].value ? 2 : 1, webhook_delivery_public);
}

/* ---- policy ---- */

struct pol {
    const char *project_id;
    json_t *policy;
};

static int policy_get_fn(struct store_tx *tx, void *arg)
{
    struct pol *p = arg;
    p->policy = policy_effective(tx, p->project_id);
    return 0;
}

static int policy_put_fn(struct store_tx *tx, void *arg)
{
    struct pol *p = arg;
    return policy_put(tx, p->project_id, p->policy);
}

void api_policy_get(struct req *r)
{
    const char *project = http_param(r, "project_id");
    if (!api_project(r, project))
        return;
    struct pol p = {project, NULL};
    int rc = store_read(r->app->store, policy_get_fn, &p);
    if (rc) {
        json_decref(p.policy);
        api_store_error(r, rc, "policy");
        return;
    }
    json_object_set_new(p.policy, "project_id", json_string(project));
    http_json(r, 200, p.policy);
}

void api_policy_put(struct req *r)
{
    const char *project = http_param(r, "project_id");
    json_t *body = http_body_object(r);
    if (!body || !api_project(r, project))
        return;
    struct pol p = {project, NULL};
    char *param = NULL, *msg = NULL;
    if (policy_parse(body, r->app->cfg.max_timeout_ms, r->app->cfg.max_code_bytes, &p.policy,
                     &param, &msg)) {
        http_error(r, 400, strstr(msg, "unknown field") ? "unknown_field" : "invalid_policy", param,
                   "%s", msg);
        free(param);
        free(msg);
        return;
    }
    int rc = store_write(r->app->store, policy_put_fn, &p);
    if (rc) {
        json_decref(p.policy);
        api_store_error(r, rc, "policy");
        return;
    }
    json_object_set_new(p.policy, "project_id", json_string(project));
    http_json(r, 200, p.policy);
}

/* ---- secrets ---- */

static json_t *secret_public(const json_t *s)
{
    return json_pack("{s:O, s:O, s:O, s:O}", "name", json_object_get(s, "name"), "project_id",
                     json_object_get(s, "project_id"), "created_at",
                     json_object_get(s, "created_at"), "updated_at",
                     json_object_get(s, "updated_at"));
}

struct secret_put {
    struct doc_op a;
    const char *value;
    size_t vlen;
    int key_rc;   /* secrets_key_tx's: nothing is written when not 0 */
};

/* Seals the value inside the write, under the key the store's secrets are
 * sealed with (secrets_key_tx): a node whose key file is missing or another
 * one's seals nothing no other node could open. */
static int secret_put_fn(struct store_tx *tx, void *arg)
{
    struct secret_put *p = arg;
    struct doc_op *a = &p->a;
    unsigned char key[32];
    p->key_rc = secrets_key_tx(tx, a->r->app, true, key);
    if (p->key_rc)
        return 0;
    char *sealed = secrets_seal_str(key, p->value, p->vlen);
    explicit_bzero(key, sizeof key);
    json_object_set_new(a->doc, "value_sealed", json_string(sealed));
    free(sealed);
    json_t *old = store_get(tx, SK_SECRET, a->project_id, a->id);
    int rc;
    if (old) {
        json_object_set(a->doc, "created_at", json_object_get(old, "created_at"));
        rc = store_update(tx, SK_SECRET, a->project_id, a->doc);
    } else {
        rc = store_put(tx, SK_SECRET, a->project_id, a->doc);
        a->created = true;
    }
    json_decref(old);
    return rc;
}

void api_secrets_create(struct req *r)
{
    const char *project = http_param(r, "project_id");
    json_t *body = http_body_object(r);
    const char *name = NULL, *value = NULL;
    if (!body || !api_project(r, project) ||
        !api_known_fields(r, body, (const char *const[]){"name", "value", NULL}, "") ||
        !api_str(r, body, "name", "name", 64, &name) ||
        !api_str(r, body, "value", "value", 0, &value))
        return;
    if (!name) {
        http_error(r, 400, "missing_field", "name", "name is required");
        return;
    }
    if (!secrets_name_ok(name)) {
        http_error(r, 400, "invalid_secret_name", "name",
                   "name must match [A-Z_][A-Z0-9_]{0,63} (upper-case letters, digits, '_')");
        return;
    }
    if (!value) {
        http_error(r, 400, "missing_field", "value", "value is required (a string)");
        return;
    }
    size_t vlen = json_string_length(json_object_get(body, "value"));
    if (vlen > MAX_SECRET_VALUE) {
        http_error(r, 400, "too_long", "value", "value is larger than %d bytes", MAX_SECRET_VALUE);
        return;
    }
    char ts[RFC3339_LEN];
    rfc3339_format(now_ms(), ts);
    json_t *doc = json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", name, "name", name,
                            "project_id", project, "created_at", ts, "updated_at", ts);
    struct secret_put p = {.a = {.r = r, .project_id = project, .id = name, .doc = doc},
                           .value = value, .vlen = vlen};
    int rc = store_write(r->app->store, secret_put_fn, &p);
    if (rc)
        api_store_error(r, rc, "secret");
    else if (p.key_rc)
        http_error(r, 500, "secret_key_unavailable", NULL, "%s", secrets_key_error(p.key_rc));
    else
        http_json(r, p.a.created ? 201 : 200, secret_public(doc));
    json_decref(doc);
}

void api_secrets_list(struct req *r)
{
    list_kind(r, SK_SECRET, NULL, 0, secret_public);
}

void api_secrets_delete(struct req *r)
{
    delete_kind(r, SK_SECRET, "secret", "name", http_param(r, "name"));
}

/* ---- relay_message ---- */

struct relay {
    struct req *r;
    const char *text;
    json_t *delivery;
};

static int relay_fn(struct store_tx *tx, void *arg)
{
    struct relay *a = arg;
    struct req *r = a->r;
    const char *project = http_param(r, "project_id"), *task_id = http_param(r, "task_id");
    const char *run_id = http_param(r, "id");
    json_t *run = store_get(tx, SK_RUN, project, run_id);
    if (!run || strcmp(json_string_value(json_object_get(run, "task_id")) ?: "", task_id)) {
        json_decref(run);
        http_not_found(r, "run", run_id);
        return -ENOENT;
    }
    json_decref(run);
    json_t *policy = policy_effective(tx, project);
    const char *url = policy_relay_url(policy);
    if (!url) {
        json_decref(policy);
        http_error(r, 409, "relay_not_configured", NULL,
                   "the project's policy has no relay_webhook_url (PUT .../policy to set one)");
        return -EPERM;
    }
    json_t *payload = json_pack("{s:s}", "text", a->text);
    char *body = json_dumps(payload, JSON_COMPACT);
    json_decref(payload);
    json_t *d = webhook_delivery_doc(project, WEBHOOK_RELAY_ID, url, NULL, "relay_message", body);
    free(body);
    json_decref(policy);
    json_object_set_new(d, "run_id", json_string(run_id));
    json_object_set_new(d, "task_id", json_string(task_id));
    int rc = webhook_queue(tx, r->app->webhooks, project, d);
    if (rc) {
        json_decref(d);
        return rc;
    }
    a->delivery = d;
    return 0;
}

void api_runs_relay_message(struct req *r)
{
    json_t *body = http_body_object(r);
    const char *text = NULL;
    if (!body || !api_known_fields(r, body, (const char *const[]){"text", NULL}, "") ||
        !api_str(r, body, "text", "text", MAX_RELAY_TEXT, &text))
        return;
    if (!text || !*text) {
        http_error(r, 400, "missing_field", "text", "text is required");
        return;
    }
    struct relay a = {r, text, NULL};
    int rc = store_write(r->app->store, relay_fn, &a);
    if (rc) {
        api_store_error(r, rc, "run");
        return;
    }
    json_t *out = json_pack("{s:O, s:s, s:O, s:s}", "delivery_id", json_object_get(a.delivery, "id"),
                            "status", "queued", "run_id", json_object_get(a.delivery, "run_id"),
                            "webhook_id", WEBHOOK_RELAY_ID);
    json_decref(a.delivery);
    http_json(r, 200, out);
}
