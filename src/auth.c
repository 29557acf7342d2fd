/*
 * auth — API keys and the per-request check.
 *
 * Keys are 32 random bytes shown once as "qk_<64 hex>" and stored only as the
 * hex SHA-256 of that string.  A fast hash is right here: the key has 256
 * bits of entropy, so there is nothing for a slow KDF to protect.
 *
 * Cache: successful lookups are remembered for CACHE_TTL_MS (a key revoked
 * on another node stops working within that time; on this node at once).
 * Guarded by one rwlock; entries live in a small open-addressing table.
 */
#include "auth.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "app.h"
#include "crypto.h"
#include "ratelimit.h"
#include "tokens.h"
#include "util.h"

#define CACHE_SLOTS 4096
#define CACHE_TTL_MS 5000

struct entry {
    char hash[65];
    char key_id[ID_LEN];
    char project[ID_LEN];
    unsigned scopes;
    int64_t expires;
};

struct auth {
    struct store *st;
    pthread_rwlock_t lock;
    struct entry *slots;
    uint64_t revocations;      /* auth_forget calls (atomic) */
};

static const struct {
    const char *name;
    unsigned bit;
} scope_names[] = {
    {"task:read", SCOPE_TASK_READ},
    {"task:write", SCOPE_TASK_WRITE},
    {"worker", SCOPE_WORKER},
    {"admin", SCOPE_ADMIN},
};

unsigned auth_scope_bit(const char *name)
{
    for (size_t i = 0; i < ARRAY_LEN(scope_names); i++)
        if (!strcmp(scope_names[i].name, name))
            return scope_names[i].bit;
    return 0;
}

/* The names of the scopes in bits, "a or b" (the root key's own when
 * none of the named ones is among them: "root"), for a 403's message. */
static void scope_list(unsigned bits, char *out, size_t n)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < ARRAY_LEN(scope_names); i++) {
        if (!(bits & scope_names[i].bit))
            continue;
        int k = snprintf(out + len, n - len, "%s%s", len ? " or " : "", scope_names[i].name);
        if (k < 0 || (size_t)k >= n - len)
            break;
        len += (size_t)k;
    }
    if (!len)
        snprintf(out, n, "root");
}

void auth_hash_key(const char *key, char out[65])
{
    crypto_api_key_hash(key, out);
}

char *auth_new_key(void)
{
    unsigned char raw[32];
    char hex[65];
    random_bytes(raw, sizeof raw);
    hex_encode(raw, sizeof raw, hex);
    return xasprintf("qk_%s", hex);
}

struct auth *auth_new(struct store *st)
{
    struct auth *a = xcalloc(1, sizeof *a);
    a->st = st;
    pthread_rwlock_init(&a->lock, NULL);
    a->slots = xcalloc(CACHE_SLOTS, sizeof *a->slots);
    return a;
}

void auth_free(struct auth *a)
{
    if (!a)
        return;
    pthread_rwlock_destroy(&a->lock);
    free(a->slots);
    free(a);
}

static size_t slot_of(const char *hash)
{
    size_t h = 0;
    for (int i = 0; i < 16; i++)
        h = h * 16 + (size_t)(hash[i] <= '9' ? hash[i] - '0' : hash[i] - 'a' + 10);
    return h % CACHE_SLOTS;
}

void auth_forget(struct auth *a, const char *hash)
{
    pthread_rwlock_wrlock(&a->lock);
    struct entry *e = &a->slots[slot_of(hash)];
    if (!strcmp(e->hash, hash))
        memset(e, 0, sizeof *e);
    pthread_rwlock_unlock(&a->lock);
    __atomic_add_fetch(&a->revocations, 1, __ATOMIC_RELEASE);
}

uint64_t auth_revocations(struct auth *a)
{
    return __atomic_load_n(&a->revocations, __ATOMIC_ACQUIRE);
}

struct lookup {
    const char *hash;
    json_t *doc;
};

static int lookup_fn(struct store_tx *tx, void *arg)
{
    struct lookup *l = arg;
    struct store_filter f = {"hash", l->hash};
    struct store_query q = {&f, 1, 1, 0, false, NULL};
    json_t *arr = NULL;
    int rc = store_list(tx, SK_KEY, NULL, &q, &arr, NULL);
    if (rc)
        return rc;
    if (json_array_size(arr))
        l->doc = json_incref(json_array_get(arr, 0));
    json_decref(arr);
    return 0;
}

/* 0 and *out, -ENOENT for no such live key, or the store's error (the
 * store cannot say: never answered as a bad key). */
static int find_key(struct auth *a, const char *hash, struct entry *out)
{
    int64_t now = mono_ms();
    pthread_rwlock_rdlock(&a->lock);
    struct entry *e = &a->slots[slot_of(hash)];
    bool hit = !strcmp(e->hash, hash) && e->expires > now;
    if (hit)
        *out = *e;
    pthread_rwlock_unlock(&a->lock);
    if (hit)
        return 0;
    struct lookup l = {hash, NULL};
    int rc = store_read(a->st, lookup_fn, &l);
    if (rc || !l.doc)
        return rc ? rc : -ENOENT;
    bool ok = !json_is_true(json_object_get(l.doc, "revoked"));
    if (ok) {
        memset(out, 0, sizeof *out);
        snprintf(out->hash, sizeof out->hash, "%s", hash);
        snprintf(out->key_id, sizeof out->key_id, "%s",
                 json_string_value(json_object_get(l.doc, "id")));
        snprintf(out->project, sizeof out->project, "%s",
                 json_string_value(json_object_get(l.doc, "project_id")));
        size_t i;
        json_t *s;
        json_array_foreach(json_object_get(l.doc, "scopes"), i, s) {
            if (json_is_string(s))
                out->scopes |= auth_scope_bit(json_string_value(s));
        }
        if (!strcmp(out->project, AUTH_ROOT_PROJECT))
            out->scopes |= SCOPE_ROOT;
        out->expires = now + CACHE_TTL_MS;
        pthread_rwlock_wrlock(&a->lock);
        a->slots[slot_of(hash)] = *out;
        pthread_rwlock_unlock(&a->lock);
    }
    json_decref(l.doc);
    return ok ? 0 : -ENOENT;
}

bool auth_project_ok(struct req *r, const char *project_id)
{
    if (r->scopes & SCOPE_ROOT)
        return true;
    return r->key_project && project_id && !strcmp(r->key_project, project_id);
}

/* Scope implication: task:write implies task:read; admin implies every
 * scope of its project; root implies everything. */
static unsigned effective(unsigned s)
{
    if (s & SCOPE_ROOT)
        s |= SCOPE_ADMIN;
    if (s & SCOPE_ADMIN)
        s |= SCOPE_TASK_READ | SCOPE_TASK_WRITE | SCOPE_WORKER;
    if (s & SCOPE_TASK_WRITE)
        s |= SCOPE_TASK_READ;
    return s;
}

bool auth_has_scope(const struct req *r, unsigned scope)
{
    return (effective(r->scopes) & scope) == scope;
}

struct key_live {
    const char *project, *id;
    bool live;
};

static int key_live_fn(struct store_tx *tx, void *arg)
{
    struct key_live *k = arg;
    json_t *doc = store_get(tx, SK_KEY, k->project, k->id);
    k->live = doc && !json_is_true(json_object_get(doc, "revoked"));
    json_decref(doc);
    return 0;
}

int auth_key_live(struct app *app, const char *project, const char *key_id, bool *live)
{
    struct key_live k = {project, key_id, false};
    int rc = store_read(app->store, key_live_fn, &k);
    *live = !rc && k.live;
    return rc;
}

/* Counts r against its key's rate (key_id in project: the key's, or the one
 * that made a connection token; project "_root" for a root key); over it,
 * answers 429 and returns false.  Every answer says the limit and what is
 * left while a limit is set.  A key id is only unique in its project (a
 * client may choose it): the bucket is named by both, or the keys "ci" of
 * two projects shared one and each throttled the other. */
static bool rate_ok(struct req *r, const char *project, const char *key_id)
{
    struct ratelimit *rl = r->app->ratelimit;
    if (!rl)
        return true;
    int64_t left = 0;
    char bucket[2 * ID_LEN + 2];
    snprintf(bucket, sizeof bucket, "%s/%s", project, key_id);
    int64_t wait = ratelimit_take(rl, bucket, mono_ms(), &left);
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)r->app->cfg.rate_per_s);
    http_add_header(r, "X-RateLimit-Limit", v);
    snprintf(v, sizeof v, "%lld", (long long)left);
    http_add_header(r, "X-RateLimit-Remaining", v);
    if (!wait)
        return true;
    snprintf(v, sizeof v, "%lld", (long long)((wait + 999) / 1000));
    http_add_header(r, "Retry-After", v);
    http_error(r, 429, "rate_limited", NULL,
               "this API key made more than %lld requests a second (bursts of %lld); "
               "retry after %lld ms",
               (long long)r->app->cfg.rate_per_s,
               (long long)r->app->cfg.rate_burst,
               (long long)wait);
    return false;
}

static bool token_auth(struct req *r, const char *tok)
{
    char *run_id = NULL, *project = NULL, *kp = NULL, *kid = NULL;
    bool commands = false;
    int rc = tokens_verify_connection(r->app, tok, &project, &run_id, &commands, &kp, &kid);
    if (!rc) {
        /* a token dies with the key that made it (revoked, or deleted) */
        bool live = false;
        int src = auth_key_live(r->app, kp, kid, &live);
        if (src || !live) {
            free(run_id);
            free(project);
            run_id = project = NULL;
            rc = -EKEYREVOKED;
        }
        if (src) {
            free(kp);
            free(kid);
            api_store_error(r, src, "API key");   /* unknown, not revoked */
            return false;
        }
        /* a token's requests count as its key's */
        if (!rc && !rate_ok(r, kp, kid)) {
            free(kp);
            free(kid);
            free(run_id);
            free(project);
            return false;
        }
    }
    if (rc) {
        free(kp);
        free(kid);
        http_error(r, 401,
                   rc == -ETIMEDOUT      ? "token_expired"
                   : rc == -EKEYREVOKED ? "token_revoked"
                                        : "invalid_token",
                   NULL,
                   rc == -ETIMEDOUT      ? "the connection token has expired"
                   : rc == -EKEYREVOKED ? "the API key that made this connection token was revoked"
                                        : "the connection token is invalid");
        return false;
    }
    const char *want_run = http_param(r, "id");
    const char *want_project = http_param(r, "project_id");
    if (!want_run || strcmp(want_run, run_id) || !want_project || strcmp(want_project, project)) {
        free(run_id);
        free(project);
        free(kp);
        free(kid);
        http_error(r, 403, "token_scope", NULL, "the connection token is for another run");
        return false;
    }
    /* a token does no more than the key that made it: one made by a key
     * without task:write streams and reads logs, sends no command */
    if ((r->route->scope & SCOPE_TASK_WRITE) && !commands) {
        free(run_id);
        free(project);
        free(kp);
        free(kid);
        http_error(r, 403, "token_scope", NULL,
                   "this connection token was made by a key without task:write: it allows "
                   "stream and logs, not commands");
        return false;
    }
    r->token_run_id = run_id;
    r->key_project = project;
    r->scopes = SCOPE_RUN_TOKEN;
    r->token_key_project = kp;
    snprintf(r->token_key_id, sizeof r->token_key_id, "%s", kid);
    free(kid);
    return true;
}

bool auth_request(struct req *r)
{
    const char *h = http_header(r, "Authorization");
    const char *tok = NULL;
    if (h && !strncasecmp(h, "Bearer ", 7))
        tok = h + 7;
    else if (r->route->scope & SCOPE_RUN_TOKEN)
        tok = http_query(r, "token");
    if (!tok || !*tok) {
        http_error(r, 401, "missing_api_key", NULL,
                   "no API key: send Authorization: Bearer <key>");
        return false;
    }
    if (strncmp(tok, "qk_", 3) != 0 && strchr(tok, '.') && (r->route->scope & SCOPE_RUN_TOKEN))
        return token_auth(r, tok);
    if (strlen(tok) > 256) {
        http_error(r, 401, "invalid_api_key", NULL, "the API key is not valid");
        return false;
    }
    char hash[65];
    struct entry e;
    auth_hash_key(tok, hash);
    int rc = find_key(r->app->auth, hash, &e);
    if (rc == -ENOENT) {
        http_error(r, 401, "invalid_api_key", NULL, "the API key is not valid");
        return false;
    }
    if (rc) {
        api_store_error(r, rc, "API key");   /* 503 while the store is unreachable */
        return false;
    }
    if (!rate_ok(r, e.project, e.key_id))
        return false;
    snprintf(r->key_id, sizeof r->key_id, "%s", e.key_id);
    r->key_project = (e.scopes & SCOPE_ROOT) ? NULL : xstrdup(e.project);
    r->scopes = e.scopes;
    const char *project = http_param(r, "project_id");
    if (project && !auth_project_ok(r, project)) {
        http_not_found(r, "project", project);
        return false;
    }
    unsigned need = r->route->scope & ~(unsigned)SCOPE_RUN_TOKEN;
    if (!(effective(r->scopes) & need)) {
        char names[96];
        scope_list(need, names, sizeof names);
        http_error(r, 403, "insufficient_scope", NULL,
                   "this API key lacks the scope this endpoint needs (%s)", names);
        return false;
    }
    return true;
}
