/*
 * policy — see policy.h.  Documents in, documents out; the only state is
 * the meta row of each project.
 */
#include "policy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "runtime.h"
#include "util.h"
#include "webhook.h"

static const char *const fields[] = {"allowed_runtimes", "max_timeout_ms", "max_memory_mb",
                                     "max_code_bytes", "network_allowed", "require_approval",
                                     "relay_webhook_url", "outbound_allow_private", NULL};

json_t *policy_defaults(void)
{
    return json_pack("{s:n, s:n, s:n, s:n, s:b, s:b, s:n, s:b, s:n}", "allowed_runtimes",
                     "max_timeout_ms", "max_memory_mb", "max_code_bytes", "network_allowed", 1,
                     "require_approval", 0, "relay_webhook_url", "outbound_allow_private", 0,
                     "updated_at");
}

static char *meta_key(const char *project_id)
{
    return xasprintf("policy:%s", project_id);
}

json_t *policy_get(struct store_tx *tx, const char *project_id)
{
    char *key = meta_key(project_id);
    char *text = store_meta_get(tx, key);
    free(key);
    if (!text)
        return NULL;
    json_t *p = json_loads(text, 0, NULL);
    free(text);
    if (!json_is_object(p)) {
        json_decref(p);
        return NULL;
    }
    return p;
}

json_t *policy_effective(struct store_tx *tx, const char *project_id)
{
    json_t *d = policy_defaults();
    json_t *p = policy_get(tx, project_id);
    if (p)
        json_object_update_existing(d, p);
    json_decref(p);
    return d;
}

int policy_put(struct store_tx *tx, const char *project_id, const json_t *policy)
{
    char *text = json_dumps(policy, JSON_COMPACT | JSON_SORT_KEYS);
    char *key = meta_key(project_id);
    int rc = store_meta_set(tx, key, text);
    free(key);
    free(text);
    return rc;
}

static int bad(char **param, char **msg, const char *field, char *text)
{
    *param = xstrdup(field);
    *msg = text;
    return -EINVAL;
}

/* A non-negative limit or null. */
static int limit_field(const json_t *body, const char *f, int64_t max, json_t *out, char **param,
                       char **msg)
{
    json_t *v = json_object_get(body, f);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v))
        return bad(param, msg, f, xasprintf("%s must be an integer or null", f));
    json_int_t x = json_integer_value(v);
    if (x < 1 || (max > 0 && x > max))
        return bad(param, msg, f, max > 0 ? xasprintf("%s must be between 1 and %lld", f,
                                                      (long long)max)
                                          : xasprintf("%s must be at least 1", f));
    json_object_set_new(out, f, json_integer(x));
    return 0;
}

static int bool_field(const json_t *body, const char *f, json_t *out, char **param, char **msg)
{
    json_t *v = json_object_get(body, f);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return bad(param, msg, f, xasprintf("%s must be a boolean", f));
    json_object_set(out, f, v);
    return 0;
}

int policy_parse(const json_t *body, int64_t max_timeout_ms, int64_t max_code_bytes, json_t **out,
                 char **param, char **msg)
{
    *out = NULL;
    *param = *msg = NULL;
    if (!json_is_object(body))
        return bad(param, msg, "policy", xstrdup("the policy must be a JSON object"));
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)body, k, v) {
        bool known = false;
        for (const char *const *f = fields; *f; f++)
            known |= !strcmp(*f, k);
        if (!known)
            return bad(param, msg, k, xasprintf("unknown field %.200s", k));
    }
    json_t *p = policy_defaults();
    int rc;
    json_t *rt = json_object_get(body, "allowed_runtimes");
    if (rt && !json_is_null(rt)) {
        if (!json_is_array(rt) || json_array_size(rt) > 64) {
            rc = bad(param, msg, "allowed_runtimes",
                     xstrdup("allowed_runtimes must be null or an array of at most 64 runtime ids"));
            goto out;
        }
        json_t *list = json_array();
        json_object_set_new(p, "allowed_runtimes", list);
        size_t i;
        json_t *e;
        json_array_foreach(rt, i, e) {
            const struct runtime *r = json_is_string(e) ? runtime_find(json_string_value(e)) : NULL;
            if (!r) {
                rc = bad(param, msg, "allowed_runtimes",
                         xasprintf("allowed_runtimes[%zu] must be a known runtime id", i));
                goto out;
            }
            json_array_append_new(list, json_string(json_string_value(e)));
        }
    }
    if ((rc = limit_field(body, "max_timeout_ms", max_timeout_ms, p, param, msg)) ||
        (rc = limit_field(body, "max_memory_mb", 1048576, p, param, msg)) ||
        (rc = limit_field(body, "max_code_bytes", max_code_bytes, p, param, msg)) ||
        (rc = bool_field(body, "network_allowed", p, param, msg)) ||
        (rc = bool_field(body, "require_approval", p, param, msg)) ||
        (rc = bool_field(body, "outbound_allow_private", p, param, msg)))
        goto out;
    json_t *url = json_object_get(body, "relay_webhook_url");
    if (url && !json_is_null(url)) {
        char *why = NULL;
        if (!json_is_string(url) || webhook_url_check(json_string_value(url), &why)) {
            rc = bad(param, msg, "relay_webhook_url",
                     xasprintf("relay_webhook_url %s", why ? why : "must be a string"));
            free(why);
            goto out;
        }
        json_object_set(p, "relay_webhook_url", url);
    }
    char ts[RFC3339_LEN];
    rfc3339_format(now_ms(), ts);
    json_object_set_new(p, "updated_at", json_string(ts));
out:
    if (rc) {
        json_decref(p);
        return rc;
    }
    *out = p;
    return 0;
}

static const char *canonical_runtime(const char *id)
{
    const struct runtime *r = runtime_find(id);
    return r ? r->id : id;
}

static json_int_t setting(const json_t *task, const char *name)
{
    return json_integer_value(json_object_get(json_object_get(task, "settings"), name));
}

/* Whether the task's limit `name` is over the policy's `max` field and left
 * at its default (so capped, not refused). */
static bool capped(const json_t *policy, const json_t *task, const char *name, const char *max,
                   int64_t dflt)
{
    json_t *v = json_object_get(policy, max);
    return json_is_integer(v) && setting(task, name) > json_integer_value(v) &&
           setting(task, name) == dflt;
}

json_t *policy_caps(const json_t *policy, const json_t *task, int64_t default_timeout_ms)
{
    if (!policy)
        return NULL;
    json_t *caps = NULL;
    static const struct {
        const char *name, *max;
    } lim[] = {{"timeout_ms", "max_timeout_ms"}, {"memory_limit_mb", "max_memory_mb"}};
    for (size_t i = 0; i < sizeof lim / sizeof lim[0]; i++) {
        int64_t dflt = i == 0 ? default_timeout_ms : POLICY_DEFAULT_MEMORY_MB;
        if (!capped(policy, task, lim[i].name, lim[i].max, dflt))
            continue;
        if (!caps)
            caps = json_object();
        json_object_set(caps, lim[i].name, json_object_get(policy, lim[i].max));
    }
    return caps;
}

int policy_check_run(const json_t *policy, const json_t *task, int64_t default_timeout_ms,
                     char **rule)
{
    *rule = NULL;
    if (!policy)
        return 0;
    const char *code = json_string_value(json_object_get(task, "code"));
    const char *rt = json_string_value(json_object_get(task, "runtime_id"));
    json_t *allowed = json_object_get(policy, "allowed_runtimes");
    if (json_is_array(allowed) && (code || rt)) {
        const char *want = canonical_runtime(rt ? rt : "default");
        bool ok = false;
        size_t i;
        json_t *e;
        json_array_foreach(allowed, i, e) {
            const char *a = json_string_value(e);
            if (a && !strcmp(canonical_runtime(a), want))
                ok = true;
        }
        if (!ok) {
            *rule = xasprintf("allowed_runtimes: runtime %s is not allowed by the project's policy",
                              want);
            return -EPERM;
        }
    }
    json_t *v;
    if (json_is_integer(v = json_object_get(policy, "max_timeout_ms")) &&
        setting(task, "timeout_ms") > json_integer_value(v) &&
        !capped(policy, task, "timeout_ms", "max_timeout_ms", default_timeout_ms)) {
        *rule = xasprintf("max_timeout_ms: timeout_ms %lld is over the project's maximum of %lld",
                          (long long)setting(task, "timeout_ms"), (long long)json_integer_value(v));
        return -EPERM;
    }
    if (json_is_integer(v = json_object_get(policy, "max_memory_mb")) &&
        setting(task, "memory_limit_mb") > json_integer_value(v) &&
        !capped(policy, task, "memory_limit_mb", "max_memory_mb", POLICY_DEFAULT_MEMORY_MB)) {
        *rule = xasprintf("max_memory_mb: memory_limit_mb %lld is over the project's maximum of %lld",
                          (long long)setting(task, "memory_limit_mb"),
                          (long long)json_integer_value(v));
        return -EPERM;
    }
    if (json_is_integer(v = json_object_get(policy, "max_code_bytes")) && code &&
        (json_int_t)strlen(code) > json_integer_value(v)) {
        *rule = xasprintf("max_code_bytes: the code is %zu bytes, over the project's maximum of %lld",
                          strlen(code), (long long)json_integer_value(v));
        return -EPERM;
    }
    if (json_is_false(json_object_get(policy, "network_allowed")) &&
        json_is_true(json_object_get(json_object_get(task, "settings"), "network"))) {
        *rule = xstrdup("network_allowed: the task asks for network access, which the project's "
                        "policy does not allow");
        return -EPERM;
    }
    return 0;
}

bool policy_requires_approval(const json_t *policy)
{
    return json_is_true(json_object_get(policy, "require_approval"));
}

bool policy_outbound_allow_private(const json_t *policy)
{
    return json_is_true(json_object_get(policy, "outbound_allow_private"));
}

const char *policy_relay_url(const json_t *policy)
{
    return json_string_value(json_object_get(policy, "relay_webhook_url"));
}
