/*
 * api_common — field validation and small helpers shared by the api_* files.
 * Runs on HTTP pool threads (or inside a store write fn on the writer thread).
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include <microhttpd.h>

#include "api.h"
#include "jdump.h"
#include "runtime.h"
#include "util.h"

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

static size_t utf8_len(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

bool api_str(struct req *r, json_t *obj, const char *field, const char *param, int64_t max_len,
             const char **out)
{
    json_t *v = json_object_get(obj, field);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v)) {
        http_error(r, 400, "invalid_type", param, "%s must be a string, not %s", param,
                   type_name(v));
        return false;
    }
    if (max_len > 0 && (int64_t)utf8_len(json_string_value(v)) > max_len) {
        http_error(r, 400, "too_long", param, "%s is longer than %lld characters", param,
                   (long long)max_len);
        return false;
    }
    if (strlen(json_string_value(v)) != json_string_length(v)) {
        http_error(r, 400, "invalid_string", param, "%s must not contain NUL characters", param);
        return false;
    }
    if (out)
        *out = json_string_value(v);
    return true;
}

bool api_int(struct req *r, json_t *obj, const char *field, const char *param, int64_t min,
             int64_t max, json_int_t *out)
{
    json_t *v = json_object_get(obj, field);
    if (!v || json_is_null(v))
        return true;
    if (json_is_real(v) && json_real_value(v) == (double)(json_int_t)json_real_value(v) &&
        json_real_value(v) >= -9e15 && json_real_value(v) <= 9e15) {
        /* 5.0 is an integer */
    } else if (!json_is_integer(v)) {
        http_error(r, 400, "invalid_type", param, "%s must be an integer, not %s", param,
                   type_name(v));
        return false;
    }
    json_int_t x = json_is_integer(v) ? json_integer_value(v) : (json_int_t)json_real_value(v);
    if (x < min || x > max) {
        http_error(r, 400, "out_of_range", param, "%s must be between %lld and %lld", param,
                   (long long)min, (long long)max);
        return false;
    }
    if (out)
        *out = x;
    return true;
}

bool api_bool(struct req *r, json_t *obj, const char *field, const char *param, bool *out)
{
    json_t *v = json_object_get(obj, field);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_boolean(v)) {
        http_error(r, 400, "invalid_type", param, "%s must be a boolean, not %s", param,
                   type_name(v));
        return false;
    }
    if (out)
        *out = json_is_true(v);
    return true;
}

bool api_obj(struct req *r, json_t *obj, const char *field, const char *param, json_t **out)
{
    json_t *v = json_object_get(obj, field);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_object(v)) {
        http_error(r, 400, "invalid_type", param, "%s must be an object, not %s", param,
                   type_name(v));
        return false;
    }
    if (out)
        *out = v;
    return true;
}

bool api_arr(struct req *r, json_t *obj, const char *field, const char *param, size_t max,
             json_t **out)
{
    json_t *v = json_object_get(obj, field);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_array(v)) {
        http_error(r, 400, "invalid_type", param, "%s must be an array, not %s", param,
                   type_name(v));
        return false;
    }
    if (max && json_array_size(v) > max) {
        http_error(r, 400, "too_many", param, "%s has more than %zu items", param, max);
        return false;
    }
    if (out)
        *out = v;
    return true;
}

bool api_enum(struct req *r, json_t *obj, const char *field, const char *param,
              const char *const *values, const char **out)
{
    const char *s = NULL;
    if (!api_str(r, obj, field, param, 64, &s))
        return false;
    if (!s)
        return true;
    struct buf allowed;
    buf_init(&allowed);
    for (const char *const *v = values; *v; v++) {
        if (!strcmp(*v, s)) {
            buf_release(&allowed);
            if (out)
                *out = *v;
            return true;
        }
        buf_printf(&allowed, "%s%s", v == values ? "" : ", ", *v);
    }
    http_error(r, 400, "invalid_enum", param, "%s must be one of: %s", param, allowed.data);
    buf_release(&allowed);
    return false;
}

bool api_known_fields(struct req *r, json_t *obj, const char *const *allowed, const char *prefix)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            if (!strcmp(*a, k)) {
                ok = true;
                break;
            }
        if (!ok) {
            char param[300];
            snprintf(param, sizeof param, "%s%.200s", prefix, k);
            http_error(r, 400, "unknown_field", param, "unknown field %s", param);
            return false;
        }
    }
    return true;
}

json_t *api_unique(const json_t *a)
{
    json_t *out = json_array();
    size_t i, j;
    json_t *v, *w;
    json_array_foreach(a, i, v) {
        bool seen = false;
        json_array_foreach(out, j, w) {
            if (json_equal(v, w)) {
                seen = true;
                break;
            }
        }
        if (!seen)
            json_array_append(out, v);
    }
    return out;
}

bool api_id_ok(const char *id)
{
    size_t n = strlen(id);
    /* "." and "..": a project's id names its directory under storage/ */
    if (n < 1 || n > 64 || !strcmp(id, ".") || !strcmp(id, ".."))
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == '.' || *p == ':'))
            return false;
    return true;
}

bool api_no_id(struct req *r, json_t *body, const char *why)
{
    if (!json_object_get(body, "id"))
        return true;
    http_error(r, 400, "id_not_accepted", "id", "%s", why);
    return false;
}

bool api_new_id(struct req *r, json_t *body, const char *prefix, char id[ID_LEN])
{
    const char *given = NULL;
    if (!api_str(r, body, "id", "id", 64, &given))
        return false;
    if (given && !api_id_ok(given)) {
        http_error(r, 400, "invalid_id", "id",
                   "id must be 1-64 characters of letters, digits, '_', '-', '.', ':' (not . or ..)");
        return false;
    }
    if (given)
        snprintf(id, ID_LEN, "%s", given);
    else
        id_new(prefix, id);
    return true;
}

struct pexists {
    const char *id;
    bool found;
};

static int pexists_fn(struct store_tx *tx, void *arg)
{
    struct pexists *p = arg;
    json_t *d = store_get(tx, SK_PROJECT, p->id, p->id);
    p->found = d != NULL;
    json_decref(d);
    return 0;
}

/* Projects found to exist.  A project is never deleted (the API has no
 * such call), so a project once found stays true and the cache never goes
 * stale; a miss only costs the read it replaces (one read transaction per
 * request, ~10 % of a single create's CPU).  Direct-mapped; keyed by the
 * store's node id too, so two stores opened in one process never share an
 * answer. */
#define PCACHE_SLOTS 64
static struct {
    char node[ID_LEN];    /* store_node_id: new each time a store opens */
    char id[66];
} pcache[PCACHE_SLOTS];
static pthread_mutex_t pcache_mu = PTHREAD_MUTEX_INITIALIZER;

bool api_project(struct req *r, const char *project_id)
{
    if (!project_id) {
        http_not_found(r, "project", "");
        return false;
    }
    size_t len = strlen(project_id);
    const char *node = store_node_id(r->app->store);
    size_t slot = str_hash(project_id) % PCACHE_SLOTS;
    bool hit = false;
    if (len < sizeof pcache[0].id) {
        pthread_mutex_lock(&pcache_mu);
        hit = !strcmp(pcache[slot].node, node) && !strcmp(pcache[slot].id, project_id);
        pthread_mutex_unlock(&pcache_mu);
    }
    if (hit)
        return true;
    struct pexists p = {project_id, false};
    int rc = store_read(r->app->store, pexists_fn, &p);
    if (rc) {
        api_store_error(r, rc, "project");   /* unknown, not missing */
        return false;
    }
    if (!p.found) {
        http_not_found(r, "project", project_id);
        return false;
    }
    if (len < sizeof pcache[0].id) {
        pthread_mutex_lock(&pcache_mu);
        snprintf(pcache[slot].node, sizeof pcache[slot].node, "%s", node);
        memcpy(pcache[slot].id, project_id, len + 1);
        pthread_mutex_unlock(&pcache_mu);
    }
    return true;
}

void api_store_error(struct req *r, int rc, const char *what)
{
    if (r->resp)
        return;   /* the write fn already answered */
    switch (rc) {
    case -ENOENT:
        http_not_found(r, what, "");
        break;
    case -EEXIST:
        http_error(r, 409, "already_exists", "id", "a %s with this id already exists", what);
        break;
    case -EPERM:
        http_error(r, 409, "invalid_state", NULL, "the %s is not in a state that allows this",
                   what);
        break;
    default:
        /* the store's own failures: one table (http.c) */
        http_store_error(r, rc, false);
        break;
    }
}

struct mdctx {
    struct store_filter *f;
    size_t *nf, max;
    bool overflow;
};

static enum MHD_Result md_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                              const char *value)
{
    struct mdctx *c = cls;
    (void)kind;
    if (strncmp(key, "metadata.", 9) || !key[9])
        return MHD_YES;
    if (*c->nf >= c->max) {
        c->overflow = true;
        return MHD_NO;
    }
    c->f[(*c->nf)++] = (struct store_filter){key, value ? value : ""};
    return MHD_YES;
}

bool api_metadata_filters(struct req *r, struct store_filter *f, size_t *nf, size_t max)
{
    struct mdctx c = {f, nf, max, false};
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, md_arg, &c);
    if (c.overflow) {
        http_error(r, 400, "too_many_filters", "metadata", "at most %zu filters per list", max);
        return false;
    }
    return true;
}

#define METADATA_MAX_KEYS 100
#define METADATA_MAX_KEY 256
#define METADATA_MAX_BYTES 16384

bool api_metadata_ok(struct req *r, const json_t *md, const char *param)
{
    if (!md || json_is_null(md))
        return true;
    if (json_object_size(md) > METADATA_MAX_KEYS) {
        http_error(r, 400, "too_many_keys", param, "%s has more than %d keys", param,
                   METADATA_MAX_KEYS);
        return false;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)md, k, v) {
        size_t n = strlen(k);
        if (n == 0 || n > METADATA_MAX_KEY) {
            http_error(r, 400, n ? "too_long" : "invalid_value", param,
                       "%s keys are 1-%d bytes (one is %zu)", param, METADATA_MAX_KEY, n);
            return false;
        }
    }
    char *s = jdump(md, NULL);
    size_t len = strlen(s);
    free(s);
    if (len > METADATA_MAX_BYTES) {
        http_error(r, 400, "too_long", param, "%s is %zu bytes as JSON; at most %d", param, len,
                   METADATA_MAX_BYTES);
        return false;
    }
    return true;
}

bool api_list_cursor(struct req *r, const char **after)
{
    *after = http_query(r, "starting_after");
    if (*after && !api_id_ok(*after)) {
        http_error(r, 400, "invalid_parameter", "starting_after",
                   "starting_after must be the id of an object of the list");
        return false;
    }
    return true;
}

int api_list_page(struct store_tx *tx, enum store_kind kind, const char *project_id,
                  struct store_query *q, const char *after, json_t **out, int64_t *total,
                  bool *has_more)
{
    if (!after) {
        int rc = store_list(tx, kind, project_id, q, out, total);
        if (!rc)
            *has_more = q->offset + (int64_t)json_array_size(*out) < *total;
        return rc;
    }
    json_t *doc = store_get(tx, kind, project_id, after);
    if (!doc)
        return -ESRCH;
    json_decref(doc);
    int64_t limit = q->limit;
    q->limit = limit + 1;
    int rc = store_list_after(tx, kind, project_id, q, after, out, total);
    q->limit = limit;
    if (rc)
        return rc;
    *has_more = (int64_t)json_array_size(*out) > limit;
    if (*has_more)
        json_array_remove(*out, (size_t)limit);
    return 0;
}

void api_cursor_unknown(struct req *r, const char *what, const char *after)
{
    http_error(r, 400, "invalid_parameter", "starting_after",
               "starting_after: no %s %s in this project", what, after);
}

bool api_runtime(struct req *r, json_t *obj, const char *param, const char **out)
{
    const char *id = NULL;
    if (!api_str(r, obj, "runtime_id", param, 64, &id))
        return false;
    if (id && !runtime_find(id)) {
        http_error(r, 400, "unknown_runtime", param,
                   "%s: unknown runtime %s (sh, bash, python, node, ts, or one from quern.conf)",
                   param, id);
        return false;
    }
    if (out)
        *out = id;
    return true;
}

bool api_want_minimal(struct req *r)
{
    const char *p = http_header(r, "Prefer");
    if (!p || !strstr(p, "return=minimal"))
        return false;
    http_add_header(r, "Preference-Applied", "return=minimal");
    return true;
}
