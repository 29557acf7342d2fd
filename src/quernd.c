/*
 * quernd — the server's main: options, the data directory, bootstrap of an
 * empty store (project "default", the root key, the signing secret), and
 * the start and orderly stop of every part.
 *
 * Threads: main waits for SIGTERM/SIGINT (sigwait); the store writer, the
 * scheduler and libmicrohttpd's pool run the work.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "app.h"
#include "auth.h"
#include "events.h"
#include "http.h"
#include "blob.h"
#include "conf.h"
#include "openapi.h"
#include "runner.h"
#include "runtime.h"
#include "sched.h"
#include "store.h"
#include "util.h"
#include "webhook.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: quernd [--listen HOST:PORT] [--data DIR] [--store URL] [--config FILE]\n"
            "              [--fsync always|batch|off] [--threads N]\n"
            "\n"
            "  --listen   address to serve HTTP on (default 127.0.0.1:7070; port 0 picks one)\n"
            "  --data     data directory (default ./quern-data): SQLite at DIR/quern.db\n"
            "  --store    sqlite:PATH or postgres://... (default sqlite:DIR/quern.db)\n"
            "  --fsync    always: an acknowledged write survives power loss (default)\n"
            "             batch:  survives a crash of quernd; fsync at most every second\n"
            "             off:    no fsync (tests, throwaway data)\n"
            "  --config   quern.conf to read (also $QUERN_CONFIG); see contrib/quern.conf\n"
            "  --threads  HTTP worker threads (default 4)\n"
            "  --slots    execution slots for code runs (default 2 per CPU; -1: no executor)\n"
            "\n"
            "QUERN_BOOTSTRAP_KEY=<key> makes <key> the root key of a new, empty store.\n");
}

struct boot {
    struct app *app;
    char *printed_key;
};

static int bootstrap_fn(struct store_tx *tx, void *arg)
{
    struct boot *b = arg;
    struct app *app = b->app;
    char *secret = store_meta_get(tx, "server_secret");
    if (!secret) {
        unsigned char raw[32];
        char hex[65];
        random_bytes(raw, sizeof raw);
        hex_encode(raw, sizeof raw, hex);
        int rc = store_meta_set(tx, "server_secret", hex);
        if (rc)
            return rc;
        secret = xstrdup(hex);
    }
    for (int i = 0; i < 32; i++) {
        unsigned v = 0;
        sscanf(secret + 2 * i, "%2x", &v);
        app->secret[i] = (unsigned char)v;
    }
    free(secret);
    char *done = store_meta_get(tx, "bootstrapped");
    if (done) {
        free(done);
        return 0;
    }
    char ts[RFC3339_LEN];
    rfc3339_format(now_ms(), ts);
    json_t *prj = json_pack("{s:s, s:s, s:s, s:s}", "id", "default", "name", "default",
                            "created_at", ts, "updated_at", ts);
    int rc = store_put(tx, SK_PROJECT, "default", prj);
    json_decref(prj);
    if (rc && rc != -EEXIST)
        return rc;
    const char *given = getenv("QUERN_BOOTSTRAP_KEY");
    char *key = given && *given ? xstrdup(given) : auth_new_key();
    char hash[65], kid[ID_LEN];
    auth_hash_key(key, hash);
    id_new("key", kid);
    json_t *k = json_pack("{s:s, s:s, s:s, s:[s,s,s,s], s:s, s:s, s:b}", "id", kid, "project_id",
                          AUTH_ROOT_PROJECT, "name", "root", "scopes", "task:read", "task:write",
                          "worker", "admin", "hash", hash, "created_at", ts, "revoked", 0);
    rc = store_put(tx, SK_KEY, AUTH_ROOT_PROJECT, k);
    json_decref(k);
    if (!rc)
        rc = store_meta_set(tx, "bootstrapped", ts);
    if (rc) {
        free(key);
        return rc;
    }
    if (given && *given)
        free(key);
    else
        b->printed_key = key;
    return 0;
}

/* Settings: defaults < quern.conf < environment < command line. */
struct settings {
    char *listen, *data, *store_url, *fsync, *config;
    int threads, exec_slots;
    struct config *cfg;
};

static int set_int(const char *value, int64_t min, int64_t max, int64_t *out, char *err,
                   size_t errlen)
{
    int64_t v;
    if (parse_i64(value, &v) || v < min || v > max) {
        snprintf(err, errlen, "expected an integer from %lld to %lld, not %s", (long long)min,
                 (long long)max, value);
        return -EINVAL;
    }
    *out = v;
    return 0;
}

static void replace(char **field, const char *value)
{
    free(*field);
    *field = xstrdup(value);
}

/* quern.conf, key by key (documented in contrib/quern.conf). */
static int conf_setting(void *ctx, const char *section, const char *key, const char *value,
                        char *err, size_t errlen)
{
    struct settings *s = ctx;
    struct config *c = s->cfg;
    int64_t v;
    if (!strcmp(section, "server")) {
        if (!strcmp(key, "listen"))
            replace(&s->listen, value);
        else if (!strcmp(key, "data"))
            replace(&s->data, value);
        else if (!strcmp(key, "store"))
            replace(&s->store_url, value);
        else if (!strcmp(key, "fsync"))
            replace(&s->fsync, value);
        else if (!strcmp(key, "http_threads")) {
            if (set_int(value, 1, 64, &v, err, errlen))
                return -EINVAL;
            s->threads = (int)v;
        } else if (!strcmp(key, "exec_slots")) {
            if (set_int(value, -1, 1024, &v, err, errlen))
                return -EINVAL;
            s->exec_slots = (int)v;
        } else
            goto unknown;
        return 0;
    }
    if (!strcmp(section, "limits")) {
        static const struct {
            const char *key;
            size_t off;
            int64_t min, max;
        } lim[] = {
            {"default_task_timeout_ms", offsetof(struct config, default_timeout_ms), 1, 86400000},
            {"max_task_timeout_ms", offsetof(struct config, max_timeout_ms), 1, 7 * 86400000LL},
            {"max_body_bytes", offsetof(struct config, max_body_bytes), 1024, 1LL << 32},
            {"max_name_length", offsetof(struct config, max_name_len), 1, 65536},
            {"max_description_length", offsetof(struct config, max_description_len), 1, 1 << 20},
            {"max_code_bytes", offsetof(struct config, max_code_bytes), 1, 1LL << 30},
            {"lease_ms", offsetof(struct config, lease_ms), 100, 86400000},
            {"max_wait_ms", offsetof(struct config, max_wait_ms), 0, 3600000},
        };
        for (size_t i = 0; i < ARRAY_LEN(lim); i++) {
            if (!strcmp(key, lim[i].key))
                return set_int(value, lim[i].min, lim[i].max,
                               (int64_t *)((char *)c + lim[i].off), err, errlen);
        }
        goto unknown;
    }
    if (!strcmp(section, "outbound")) {
        if (!strcmp(key, "allow_private")) {
            if (strcmp(value, "true") && strcmp(value, "false")) {
                snprintf(err, errlen, "allow_private is true or false");
                return -EINVAL;
            }
            setenv("QUERN_OUTBOUND_ALLOW_PRIVATE", !strcmp(value, "true") ? "1" : "0", 0);
            return 0;
        }
        goto unknown;
    }
    if (!strncmp(section, "runtime.", 8) && section[8]) {
        if (runtime_config_set(section + 8, key, value)) {
            snprintf(err, errlen, "bad runtime setting %s = %s in [%s]", key, value, section);
            return -EINVAL;
        }
        return 0;
    }
    snprintf(err, errlen, "unknown section [%s]", section);
    return -EINVAL;
unknown:
    snprintf(err, errlen, "unknown key %s in [%s]", key, section);
    return -EINVAL;
}

static int parse_listen(const char *s, char *host, size_t hn, int *port)
{
    const char *c = strrchr(s, ':');
    if (!c || (size_t)(c - s) >= hn)
        return -EINVAL;
    memcpy(host, s, (size_t)(c - s));
    host[c - s] = 0;
    if (!strcmp(host, "localhost"))
        snprintf(host, hn, "127.0.0.1");
    int64_t p;
    if (parse_i64(c + 1, &p) || p < 0 || p > 65535)
        return -EINVAL;
    *port = (int)p;
    return 0;
}

int main(int argc, char **argv)
{
    struct app app = {0};
    app.cfg = (struct config){
        .max_body_bytes = 16 << 20,
        .max_name_len = 256,
        .max_description_len = 4096,
        .max_code_bytes = 1 << 20,
        .default_timeout_ms = 30000,
        .max_timeout_ms = 3600000,
        .lease_ms = 60000,
        .max_wait_ms = 60000,
    };
    struct settings cs = {.threads = 4, .exec_slots = 0, .cfg = &app.cfg};
    cs.listen = xstrdup("127.0.0.1:7070");
    cs.data = xstrdup("./quern-data");
    cs.fsync = xstrdup("always");
    /* command line first, applied last: remember it */
    const char *arg_listen = NULL, *arg_data = NULL, *arg_store = NULL, *arg_fsync = NULL;
    const char *arg_config = getenv("QUERN_CONFIG");
    int arg_threads = 0, arg_slots = INT32_MIN;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "quernd: %s needs a value\n", a);
            usage(stderr);
            return 2;
        }
        int64_t n = 0;
        if (!strcmp(a, "--listen"))
            arg_listen = v;
        else if (!strcmp(a, "--data"))
            arg_data = v;
        else if (!strcmp(a, "--store"))
            arg_store = v;
        else if (!strcmp(a, "--config"))
            arg_config = v;
        else if (!strcmp(a, "--fsync"))
            arg_fsync = v;
        else if (!strcmp(a, "--threads") && !parse_i64(v, &n) && n >= 1 && n <= 64)
            arg_threads = (int)n;
        else if (!strcmp(a, "--slots") && !parse_i64(v, &n) && n >= -1 && n <= 1024)
            arg_slots = (int)n;
        else {
            fprintf(stderr, "quernd: unknown option or bad value: %s %s\n", a, v);
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (arg_config) {
        char *msg = NULL;
        if (conf_load(arg_config, conf_setting, &cs, &msg)) {
            fprintf(stderr, "quernd: %s\n", msg);
            free(msg);
            return 2;
        }
    }
    const char *e;
    int64_t ev;
    if ((e = getenv("DEFAULT_TASK_TIMEOUT_MS")) && !parse_i64(e, &ev) && ev > 0)
        app.cfg.default_timeout_ms = ev;
    if ((e = getenv("MAX_TASK_TIMEOUT_MS")) && !parse_i64(e, &ev) && ev > 0)
        app.cfg.max_timeout_ms = ev;
    if ((e = getenv("QUERN_LEASE_MS")) && !parse_i64(e, &ev) && ev > 0)
        app.cfg.lease_ms = ev;
    if (arg_listen)
        replace(&cs.listen, arg_listen);
    if (arg_data)
        replace(&cs.data, arg_data);
    if (arg_store)
        replace(&cs.store_url, arg_store);
    if (arg_fsync)
        replace(&cs.fsync, arg_fsync);
    if (arg_threads)
        cs.threads = arg_threads;
    if (arg_slots != INT32_MIN)
        cs.exec_slots = arg_slots;
    if (app.cfg.default_timeout_ms > app.cfg.max_timeout_ms) {
        fprintf(stderr, "quernd: the default task timeout (%lld ms) is over the maximum (%lld ms)\n",
                (long long)app.cfg.default_timeout_ms, (long long)app.cfg.max_timeout_ms);
        return 2;
    }
    const char *listen = cs.listen, *data = cs.data, *store_url = cs.store_url;
    int exec_slots = cs.exec_slots;
    app.cfg.http_threads = cs.threads;
    app.cfg.exec_slots = cs.exec_slots;
    char host[64];
    int port;
    if (parse_listen(listen, host, sizeof host, &port)) {
        fprintf(stderr, "quernd: --listen wants HOST:PORT, not %s\n", listen);
        return 2;
    }
    if (!strcmp(cs.fsync, "always"))
        app.cfg.fsync = STORE_FSYNC_ALWAYS;
    else if (!strcmp(cs.fsync, "batch"))
        app.cfg.fsync = STORE_FSYNC_BATCH;
    else if (!strcmp(cs.fsync, "off"))
        app.cfg.fsync = STORE_FSYNC_OFF;
    else {
        fprintf(stderr, "quernd: --fsync must be always, batch or off\n");
        return 2;
    }

    /* many idle stream subscribers need many descriptors */
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl)) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);

    if (mkdir(data, 0700) && errno != EEXIST) {
        fprintf(stderr, "quernd: cannot create data directory %s: %s\n", data, strerror(errno));
        return 1;
    }
    app.data_dir = xstrdup(data);
    char *url = store_url ? xstrdup(store_url) : xasprintf("sqlite:%s/quern.db", data);
    char *err = NULL;
    struct store_opts so = {.fsync = app.cfg.fsync};
    app.store = store_open(url, &so, &err);
    free(url);
    if (!app.store) {
        fprintf(stderr, "quernd: %s\n", err ? err : "cannot open the store");
        free(err);
        return 1;
    }
    struct boot b = {&app, NULL};
    int rc = store_write(app.store, bootstrap_fn, &b);
    if (rc) {
        fprintf(stderr, "quernd: bootstrap failed (%d)\n", rc);
        return 1;
    }
    char *blobdir = xasprintf("%s/blobs", data);
    app.blobs = blob_open(blobdir);
    free(blobdir);
    if (!app.blobs) {
        fprintf(stderr, "quernd: cannot create the blob directory under %s\n", data);
        return 1;
    }
    if (runner_recover(&app)) {
        fprintf(stderr, "quernd: cannot recover runs left by the previous process\n");
        return 1;
    }
    app.auth = auth_new(app.store);
    app.events = events_new(app.store);
    app.sched = sched_new(&app);
    if (sched_start(app.sched)) {
        fprintf(stderr, "quernd: cannot start the scheduler\n");
        return 1;
    }
    openapi_build();
    if (exec_slots >= 0) {
        app.runner = runner_new(&app, exec_slots, &err);
        if (!app.runner) {
            fprintf(stderr, "quernd: code execution is off on this node: %s\n", err ? err : "?");
            free(err);
            err = NULL;
        } else {
            runner_wake(app.runner);
        }
    }
    app.webhooks = webhook_new(&app, &err);
    if (!app.webhooks) {
        fprintf(stderr, "quernd: %s\n", err ? err : "cannot start webhook deliveries");
        free(err);
        return 1;
    }

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    int bound = 0;
    app.http = http_start(&app, host, port, app.cfg.http_threads, &bound, &err);
    if (!app.http) {
        fprintf(stderr, "quernd: %s\n", err);
        free(err);
        return 1;
    }
    if (b.printed_key) {
        fprintf(stderr, "quernd: created project \"default\" and the root API key (shown once):\n"
                        "\n    %s\n\n", b.printed_key);
        free(b.printed_key);
    }
    printf("quernd listening on http://%s:%d\n", host, bound);
    fflush(stdout);

    int sig = 0;
    sigwait(&set, &sig);
    fprintf(stderr, "quernd: %s: draining\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    app.draining = true;
    sched_drain(app.sched);
    events_tick(app.events);   /* streams see draining and end */
    http_stop(app.http);
    runner_free(app.runner);
    app.runner = NULL;
    webhook_free(app.webhooks);
    app.webhooks = NULL;
    sched_free(app.sched);
    app.sched = NULL;
    store_close(app.store);
    events_free(app.events);
    auth_free(app.auth);
    blob_close(app.blobs);
    openapi_free();
    free(app.data_dir);
    free(cs.listen);
    free(cs.data);
    free(cs.store_url);
    free(cs.fsync);
    fprintf(stderr, "quernd: stopped\n");
    return 0;
}
