/*
 * quernd — the server's main: options, the data directory, bootstrap of an
 * empty store (project "default", the root key, the signing secret), and
 * the start and orderly stop of every part.
 *
 * Threads: main waits for SIGTERM/SIGINT (sigwait); the store writer, the
 * scheduler and libmicrohttpd's pool run the work.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "auth.h"
#include "events.h"
#include "http.h"
#include "log.h"
#include "blob.h"
#include "conf.h"
#include "openapi.h"
#include "runner.h"
#include "runtime.h"
#include "sched.h"
#include "ratelimit.h"
#include "secrets.h"
#include "store.h"
#include "store_copy.h"
#include "util.h"
#include "webhook.h"

/* One table of options: --help and the man page (--man) are made from it. */
static const struct option_doc {
    const char *flag, *arg, *help;
} options[] = {
    {"--listen", "HOST:PORT", "address to serve HTTP on (default 127.0.0.1:7070; an IPv4 "
                              "address, localhost, or [IPv6]; port 0 picks a free one, printed "
                              "as 'quernd listening on http://HOST:PORT')"},
    {"--data", "DIR", "data directory (default ./quern-data; made with mode 0700 if missing; "
                      "locked: one quernd each): SQLite at DIR/quern.db, artifact blobs, "
                      "storage instances, the secrets key"},
    {"--store", "URL", "sqlite:PATH or postgres://... (default sqlite:DIR/quern.db); several "
                       "quernd on one PostgreSQL share the work"},
    {"--fsync", "always|batch|off", "always: an acknowledged write survives power loss (default); "
                                    "batch: survives a crash of quernd, fsync at most every "
                                    "second; off: no fsync (tests, throwaway data)"},
    {"--config", "FILE", "quern.conf to read (also $QUERN_CONFIG); see contrib/quern.conf"},
    {"--threads", "N", "HTTP worker threads (default 4)"},
    {"--slots", "N", "execution slots for code runs (default 2 per CPU; -1: no executor)"},
    {"--man", "", "print this manual page (roff) and exit"},
    {"--help", "", "print this help and exit"},
};

static const char *const env_doc[][2] = {
    {"QUERN_BOOTSTRAP_KEY", "the root API key of a new, empty store (otherwise one is made and "
                            "printed once): 16 to 256 printable ASCII characters, no spaces; "
                            "empty is unset; on a store made before, a different key is "
                            "logged as not used"},
    {"QUERN_CONFIG", "quern.conf path, as --config (empty: none)"},
    {"DEFAULT_TASK_TIMEOUT_MS, MAX_TASK_TIMEOUT_MS", "a task's default and largest timeout"},
    {"QUERN_LEASE_MS", "how long a worker's lease lasts without a heartbeat (100 to 86400000, "
                       "as lease_ms; default 60000)"},
    {"QUERN_RETENTION_MS", "finished runs and events older than this are pruned (default 30 "
                           "days; 0 keeps everything)"},
    {"QUERN_BLOB_GRACE_MS", "an artifact file no run names any more is deleted by the retention "
                            "pass once it is this old (default 3600000)"},
    {"QUERN_HTTP_IDLE_TIMEOUT_MS", "an HTTP connection that neither sends nor takes a byte for "
                                   "this long is closed (default 60000; a suspended long-poll "
                                   "or an idle event stream is not idle)"},
    {"QUERN_DRAIN_GRACE_MS", "on SIGTERM, how long running code may go on before it is "
                             "stopped (default 10000)"},
    {"QUERN_RATE_LIMIT, QUERN_RATE_BURST", "requests a second each API key may make on this "
                                           "node, and at once (default 0: no limit; burst "
                                           "2 x the rate); over it: 429 rate_limited with "
                                           "Retry-After"},
    {"QUERN_LOG_FORMAT", "json (default: one JSON object per line on stderr) or text"},
    {"QUERN_LOG_REQUESTS", "1 or true: log every HTTP request with its X-Request-Id (0, false "
                           "or empty: not; another value stops quernd)"},
    {"QUERN_OUTBOUND_ALLOW_PRIVATE", "1: webhooks may reach loopback and private addresses"},
    {"QUERN_RETENTION_EVERY_MS", "how often the retention pass runs (default 3600000)"},
    {"QUERN_WARM", "warm boxes kept per runtime, e.g. python=2,node=2,ts=1 (over quern.conf's "
                   "warm)"},
    {"QUERN_WEBHOOK_TIMEOUT_MS, QUERN_WEBHOOK_RETRY_BASE_MS, QUERN_WEBHOOK_RETRY_WINDOW_MS",
     "a webhook request's time limit (default 15000), the first retry's delay, doubling "
     "(default 1000), and how long after its event a delivery is retried (default 24 h)"},
    {"QUERN_PG_POLL_MS", "PostgreSQL: also reload every unfinished run this often, for where "
                         "NOTIFY cannot pass (a transaction pooler)"},
    {"QUERN_REMOTE_GRACE_MS", "PostgreSQL: a run another node made is served here only after "
                              "this long (default 150)"},
    {"QUERN_SANDBOX_UID", "the host uid the boxes run as (default 100000)"},
    {"QUERN_INIT, QUERN_VENDOR", "the box's init program (default quern-init beside quernd) and "
                                 "the directory holding node_modules/sucrase for ts (default "
                                 "vendor/ beside or above quernd's directory)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: quernd [OPTIONS]\n\n");
    for (size_t i = 0; i < ARRAY_LEN(options); i++)
        fprintf(f, "  %-9s %-17s %s\n", options[i].flag, options[i].arg, options[i].help);
    fprintf(f, "\nenvironment:\n");
    for (size_t i = 0; i < ARRAY_LEN(env_doc); i++)
        fprintf(f, "  %s\n      %s\n", env_doc[i][0], env_doc[i][1]);
    fprintf(f, "\nSIGTERM or SIGINT drains (no new leases; running code gets its grace period) "
               "and exits 0.\n"
               "SIGHUP is logged and ignored (no configuration reload).\n");
}

static void man_escape(const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\e", stdout);
        else if (*s == '-')
            fputs("\\-", stdout);
        else
            putchar(*s);
    }
}

static void man_page(void)
{
    puts(".\\\" Generated by 'quernd --man' from the option table in src/quernd.c; do not edit.");
    puts(".TH QUERND 8 \"\" \"quern\" \"System Administration\"");
    puts(".SH NAME\nquernd \\- the quern task execution server");
    puts(".SH SYNOPSIS\n.B quernd\n[\\fIOPTIONS\\fR]");
    puts(".SH DESCRIPTION\nquernd serves the quern HTTP API (see the project's API.md), runs "
         "task code in sandboxes, schedules runs, and hands agent work to external workers. "
         "It stores everything in embedded SQLite, or in PostgreSQL shared by several quernd.");
    puts(".SH OPTIONS");
    for (size_t i = 0; i < ARRAY_LEN(options); i++) {
        fputs(".TP\n.B ", stdout);
        man_escape(options[i].flag);
        if (options[i].arg[0]) {
            fputs(" \\fI", stdout);
            man_escape(options[i].arg);
            fputs("\\fR", stdout);
        }
        putchar('\n');
        man_escape(options[i].help);
        putchar('\n');
    }
    puts(".SH ENVIRONMENT");
    for (size_t i = 0; i < ARRAY_LEN(env_doc); i++) {
        fputs(".TP\n.B ", stdout);
        man_escape(env_doc[i][0]);
        putchar('\n');
        man_escape(env_doc[i][1]);
        putchar('\n');
    }
    puts(".SH SIGNALS\nSIGTERM or SIGINT drain: no new leases, running code gets its grace "
         "period, then quernd exits 0. A second one during the drain changes nothing. SIGHUP is "
         "logged and ignored: quernd does not reload its configuration.");
    puts(".SH SEE ALSO\n.BR quern (1)");
}

struct boot {
    struct app *app;
    char *printed_key;
    bool given_ignored;   /* QUERN_BOOTSTRAP_KEY set, the store older, the key not one of its */
};

/* Whether QUERN_BOOTSTRAP_KEY can be sent back as it is: over 256 bytes
 * auth refuses it, a space or control byte does not survive a header or a
 * shell, and a dot without "qk_" reads as a connection token; a short one
 * is guessable.  NULL, or what is wrong with it. */
static const char *bootstrap_key_problem(const char *key)
{
    size_t n = strlen(key);
    if (n < 16 || n > 256)
        return "must be 16 to 256 characters long";
    for (const char *p = key; *p; p++)
        if (*p < 0x21 || *p > 0x7e)
            return "must be printable ASCII without spaces";
    if (strchr(key, '.') && strncmp(key, "qk_", 3))
        return "may hold a '.' only after a \"qk_\" prefix (else it reads as a connection token)";
    return NULL;
}

/* Whether a live key of the store has this hash. */
static int key_known(struct store_tx *tx, const char *hash, bool *known)
{
    struct store_filter f = {"hash", hash};
    struct store_query q = {&f, 1, 1, 0, false, NULL};
    json_t *arr = NULL;
    int rc = store_list(tx, SK_KEY, NULL, &q, &arr, NULL);
    if (rc)
        return rc;
    json_t *k = json_array_get(arr, 0);
    *known = k && !json_is_true(json_object_get(k, "revoked"));
    json_decref(arr);
    return 0;
}

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
    const char *given = getenv("QUERN_BOOTSTRAP_KEY");
    if (done) {
        free(done);
        /* only a new store takes it: a different one now is said, not used */
        if (given && *given) {
            char h[65];
            bool known = false;
            auth_hash_key(given, h);
            int rc = key_known(tx, h, &known);
            if (rc)
                return rc;
            b->given_ignored = !known;
        }
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
    char *listen, *data, *store_url, *fsync, *config, *secrets_key_file;
    int threads, exec_slots;
    int lock_fd;   /* DATA/quern.lock, held (flock) while quernd runs; -1 before */
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

static int parse_listen(const char *s, char *host, size_t hn, int *port)
{
    const char *c = strrchr(s, ':');
    if (!c || (size_t)(c - s) >= hn)
        return -EINVAL;
    if (s[0] == '[') {
        /* [IPv6]:PORT, as in a URL */
        if (c - s < 2 || c[-1] != ']')
            return -EINVAL;
        memcpy(host, s + 1, (size_t)(c - s - 2));
        host[c - s - 2] = 0;
        if (!strchr(host, ':'))
            return -EINVAL;   /* brackets hold an IPv6 address only */
    } else {
        memcpy(host, s, (size_t)(c - s));
        host[c - s] = 0;
        if (strchr(host, ':'))
            return -EINVAL;   /* an IPv6 address goes in brackets */
    }
    if (!strcmp(host, "localhost"))
        snprintf(host, hn, "127.0.0.1");
    int64_t p;
    if (parse_i64(c + 1, &p) || p < 0 || p > 65535)
        return -EINVAL;
    *port = (int)p;
    return 0;
}

/* The lock is held but the quernd whose pid the file holds is gone: the
 * holders are its children that had not exec'd yet when it was killed
 * (a box being spawned shares the open lock until its exec), dying of
 * PR_SET_PDEATHSIG.  A restart right after a SIGKILL waits for them (up to
 * LOCK_WAIT_MS) instead of refusing the directory as in use.  0 once the
 * lock is taken, else -EWOULDBLOCK. */
#define LOCK_WAIT_MS 10000

static int lock_after_dead_holder(int fd, const char *data)
{
    char buf[32] = "";
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    buf[n > 0 ? n : 0] = 0;
    int64_t pid;
    buf[strcspn(buf, "\n")] = 0;
    if (parse_i64(buf, &pid) || pid <= 1 || pid == (int64_t)getpid() ||
        kill((pid_t)pid, 0) == 0 || errno != ESRCH)
        return -EWOULDBLOCK;   /* its quernd lives (or is not ours to judge) */
    log_write(LOG_INFO, "server", NULL, "data directory %s: waiting for the processes of the "
              "previous quernd (pid %lld, gone) to exit", data, (long long)pid);
    for (int64_t waited = 0; waited < LOCK_WAIT_MS; waited += 20) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (!flock(fd, LOCK_EX | LOCK_NB))
            return 0;
        if (errno != EWOULDBLOCK)
            return -errno;
    }
    return -EWOULDBLOCK;
}

/* Takes DATA/quern.lock (flock, exclusive) for the life of the process: two
 * quernd on one data directory both recovered, scheduled and swept it, the
 * second failing the runs the first was running.  The lock is the kernel's,
 * so a quernd killed with SIGKILL leaves none behind.  Returns the open
 * descriptor, or -errno with *msg (the caller's to free) saying why. */
static int lock_data_dir(const char *data, char **msg)
{
    struct stat st;
    if (stat(data, &st)) {
        int e = errno;
        *msg = xasprintf("cannot use data directory %s: %s", data, strerror(e));
        return -e;
    }
    if (!S_ISDIR(st.st_mode)) {
        *msg = xasprintf("data directory %s is not a directory", data);
        return -ENOTDIR;
    }
    char *path = xasprintf("%s/quern.lock", data);
    int rc, fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        *msg = xasprintf("cannot open %s: %s", path, strerror(-rc));
        goto out;
    }
    rc = flock(fd, LOCK_EX | LOCK_NB) ? -errno : 0;
    if (rc == -EWOULDBLOCK)
        rc = lock_after_dead_holder(fd, data);
    if (rc == -ENOLCK || rc == -EOPNOTSUPP) {
        /* a file system without locks: run as before the lock existed */
        log_write(LOG_WARN, "server", NULL, "cannot lock %s (%s): nothing stops a second "
                  "quernd on this data directory", path, strerror(-rc));
    } else if (rc == -EWOULDBLOCK) {
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        *msg = xasprintf("data directory %s is in use by another quernd (pid %s holds %s); "
                         "each quernd needs its own data directory",
                         data, pid[0] ? pid : "?", path);
        goto out;
    } else if (rc) {
        *msg = xasprintf("cannot lock %s: %s", path, strerror(-rc));
        goto out;
    }
    /* the holder's pid, for the message above; the lock, not this, is the truth */
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) || pwrite(fd, pid, (size_t)len, 0) != len)
        log_write(LOG_WARN, "server", NULL, "cannot write the pid into %s: %s", path,
                  strerror(errno));
    rc = fd;
    fd = -1;
out:
    if (fd >= 0)
        close(fd);
    free(path);
    return rc;
}

/* quern.conf, key by key (documented in contrib/quern.conf). */
static int conf_setting(void *ctx, const char *section, const char *key, const char *value,
                        char *err, size_t errlen)
{
    struct settings *s = ctx;
    struct config *c = s->cfg;
    int64_t v;
    if (!strcmp(section, "server")) {
        char host[64];
        int port;
        /* checked here too: the file and line are known only here */
        if (!strcmp(key, "listen")) {
            if (parse_listen(value, host, sizeof host, &port)) {
                snprintf(err, errlen, "listen wants HOST:PORT, not %s", value);
                return -EINVAL;
            }
            replace(&s->listen, value);
        } else if (!strcmp(key, "data"))
            replace(&s->data, value);
        else if (!strcmp(key, "store"))
            replace(&s->store_url, value);
        else if (!strcmp(key, "fsync")) {
            if (strcmp(value, "always") && strcmp(value, "batch") && strcmp(value, "off")) {
                snprintf(err, errlen, "fsync must be always, batch or off, not %s", value);
                return -EINVAL;
            }
            replace(&s->fsync, value);
        } else if (!strcmp(key, "http_threads")) {
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
            {"http_idle_timeout_ms", offsetof(struct config, http_idle_timeout_ms), 1000,
             86400000},
            {"retention_ms", offsetof(struct config, retention_ms), 0, 100LL * 365 * 86400000},
            {"requests_per_second", offsetof(struct config, rate_per_s), 0, 1000000},
            {"request_burst", offsetof(struct config, rate_burst), 0, 1000000},
            {"retention_every_ms", offsetof(struct config, retention_every_ms), 1000, 86400000},
        };
        for (size_t i = 0; i < ARRAY_LEN(lim); i++) {
            if (!strcmp(key, lim[i].key))
                return set_int(value, lim[i].min, lim[i].max,
                               (int64_t *)((char *)c + lim[i].off), err, errlen);
        }
        goto unknown;
    }
    if (!strcmp(section, "secrets")) {
        if (strcmp(key, "key_file"))
            goto unknown;
        if (value[0] != '/') {
            snprintf(err, errlen, "key_file must be an absolute path, not %s", value);
            return -EINVAL;
        }
        replace(&s->secrets_key_file, value);
        return 0;
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

/* A runtime whose interpreter (or a read-only path) is missing fails every
 * run with runtime_unavailable: said once at start, where the operator
 * who wrote quern.conf looks, not only on each run. */
static void warn_unavailable(void *ctx, const struct runtime *rt)
{
    (void)ctx;
    if (!runtime_available(rt))
        log_write(LOG_WARN, "exec",
                  json_pack("{s:s, s:s}", "runtime", rt->id, "interpreter", rt->interpreter),
                  "runtime %s is unavailable on this node (its interpreter or a path it mounts "
                  "is missing): its code runs fail with runtime_unavailable", rt->id);
}

/* Stops what runs in the background (executor, webhooks, scheduler), then
 * closes the store and frees the rest; every part may be missing. */
static void app_stop(struct app *app)
{
    runner_free(app->runner);
    app->runner = NULL;
    webhook_free(app->webhooks);
    app->webhooks = NULL;
    sched_free(app->sched);
    app->sched = NULL;
    store_close(app->store);
    app->store = NULL;
    events_free(app->events);
    app->events = NULL;
    auth_free(app->auth);
    app->auth = NULL;
    ratelimit_free(app->ratelimit);
    app->ratelimit = NULL;
    blob_close(app->blobs);
    app->blobs = NULL;
    openapi_free();
    free(app->data_dir);
    free(app->secrets_key_path);
    app->data_dir = NULL;
}

/* main's way out from wherever it is: what runs is stopped (app_stop),
 * what it allocated freed (a sanitized build finds no leak), rc returned. */
static int quit(struct settings *cs, struct app *app, int rc)
{
    app_stop(app);
    free(cs->listen);
    free(cs->data);
    free(cs->store_url);
    free(cs->fsync);
    free(cs->config);
    free(cs->secrets_key_file);
    cs->listen = cs->data = cs->store_url = cs->fsync = cs->config = cs->secrets_key_file = NULL;
    if (cs->lock_fd >= 0)
        close(cs->lock_fd);   /* the lock goes with it */
    cs->lock_fd = -1;
    return rc;
}

int main(int argc, char **argv)
{
    /* SIGTERM/SIGINT/SIGHUP are taken by sigwait in main: block them before any
     * thread exists, so every thread inherits the mask and none is killed */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    /* started with stdout (or stdin, stderr) closed, the next file opened
     * took its number, and the ready line or a log line went into it (the
     * data directory's lock file): /dev/null holds each closed one */
    for (int fd = 0; fd <= 2; fd++)
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF && open("/dev/null", O_RDWR) != fd)
            return 1;
    log_init();
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
        .http_idle_timeout_ms = 60000,
        .retention_ms = 30LL * 86400 * 1000,
        .retention_every_ms = 3600000,
    };
    struct settings cs = {.threads = 4, .exec_slots = 0, .lock_fd = -1, .cfg = &app.cfg};
    cs.listen = xstrdup("127.0.0.1:7070");
    cs.data = xstrdup("./quern-data");
    cs.fsync = xstrdup("always");
    /* command line first, applied last: remember it */
    const char *arg_listen = NULL, *arg_data = NULL, *arg_store = NULL, *arg_fsync = NULL;
    const char *arg_config = getenv("QUERN_CONFIG");
    if (arg_config && !*arg_config)
        arg_config = NULL;   /* QUERN_CONFIG= is unset, as QUERN_BOOTSTRAP_KEY= is */
    int arg_threads = 0, arg_slots = INT32_MIN;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return quit(&cs, &app, 0);
        }
        if (!strcmp(a, "--man")) {
            man_page();
            return quit(&cs, &app, 0);
        }
        static const char *const opts[] = {"--listen", "--data", "--store", "--config",
                                           "--fsync", "--threads", "--slots"};
        bool known = false;
        for (size_t k = 0; k < ARRAY_LEN(opts); k++)
            known = known || !strcmp(a, opts[k]);
        if (!known) {
            fprintf(stderr, "quernd: unknown option: %s\n", a);
            usage(stderr);
            return quit(&cs, &app, 2);
        }
        if (!v) {
            fprintf(stderr, "quernd: %s needs a value\n", a);
            usage(stderr);
            return quit(&cs, &app, 2);
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
            return quit(&cs, &app, 2);
        }
        i++;
    }
    if (arg_config) {
        char *msg = NULL;
        if (conf_load(arg_config, conf_setting, &cs, &msg)) {
            fprintf(stderr, "quernd: %s\n", msg);
            free(msg);
            return quit(&cs, &app, 2);
        }
    }
    const char *e;
    int64_t ev;
    app.cfg.blob_grace_ms = STORE_BLOB_GRACE_MS;
    app.cfg.drain_grace_ms = 10000;
    /* a value that is set must be right: ignoring it ran with a default the
     * operator did not mean */
    /* the largest values are quern.conf's: above them now + value overflowed
     * (a lease or a timeout that ended before it began) */
    static const struct {
        const char *name;
        int64_t min, max;
        size_t off;
    } envs[] = {
        {"DEFAULT_TASK_TIMEOUT_MS", 1, 86400000, offsetof(struct config, default_timeout_ms)},
        {"MAX_TASK_TIMEOUT_MS", 1, 7 * 86400000LL, offsetof(struct config, max_timeout_ms)},
        /* quern.conf's lease_ms bounds: a lease under 100 ms expires before a
         * worker can answer it */
        {"QUERN_LEASE_MS", 100, 86400000, offsetof(struct config, lease_ms)},
        {"QUERN_RETENTION_MS", 0, 100LL * 365 * 86400000, offsetof(struct config, retention_ms)},
        {"QUERN_RETENTION_EVERY_MS", 1000, 86400000,
         offsetof(struct config, retention_every_ms)},
        {"QUERN_BLOB_GRACE_MS", 0, 100LL * 365 * 86400000, offsetof(struct config, blob_grace_ms)},
        {"QUERN_DRAIN_GRACE_MS", 0, 86400000, offsetof(struct config, drain_grace_ms)},
        {"QUERN_HTTP_IDLE_TIMEOUT_MS", 1000, 86400000,
         offsetof(struct config, http_idle_timeout_ms)},
    };
    for (size_t k = 0; k < ARRAY_LEN(envs); k++) {
        if (!(e = getenv(envs[k].name)))
            continue;
        if (parse_i64(e, &ev) || ev < envs[k].min || ev > envs[k].max) {
            fprintf(stderr, "quernd: %s=%s: must be an integer from %lld to %lld (milliseconds)\n",
                    envs[k].name, e, (long long)envs[k].min, (long long)envs[k].max);
            return quit(&cs, &app, 2);
        }
        *(int64_t *)((char *)&app.cfg + envs[k].off) = ev;
    }
    /* read by their modules (webhook, store_pg, sched, sandbox), which fell
     * back to their default on a bad value: checked here, as every other */
    static const struct {
        const char *name;
        int64_t min, max;
    } module_envs[] = {
        {"QUERN_WEBHOOK_TIMEOUT_MS", 1, 86400000},
        {"QUERN_WEBHOOK_RETRY_BASE_MS", 1, 86400000},
        {"QUERN_WEBHOOK_RETRY_WINDOW_MS", 1, 100LL * 365 * 86400000},
        {"QUERN_PG_POLL_MS", 0, 86400000},
        {"QUERN_REMOTE_GRACE_MS", 0, 86400000},
        {"QUERN_SANDBOX_UID", 1, 0x7ffffffe},
    };
    for (size_t k = 0; k < ARRAY_LEN(module_envs); k++) {
        if (!(e = getenv(module_envs[k].name)))
            continue;
        if (parse_i64(e, &ev) || ev < module_envs[k].min || ev > module_envs[k].max) {
            fprintf(stderr, "quernd: %s=%s: must be an integer from %lld to %lld\n",
                    module_envs[k].name, e, (long long)module_envs[k].min,
                    (long long)module_envs[k].max);
            return quit(&cs, &app, 2);
        }
    }
    /* switches: empty is unset; any other word was taken for "on" (or
     * "off") without a word, so a typo silently did the opposite */
    static const char *const switches[] = {"QUERN_OUTBOUND_ALLOW_PRIVATE", "QUERN_LOG_REQUESTS"};
    for (size_t k = 0; k < ARRAY_LEN(switches); k++) {
        if ((e = getenv(switches[k])) && *e && strcmp(e, "0") && strcmp(e, "1") &&
            strcmp(e, "true") && strcmp(e, "false")) {
            fprintf(stderr, "quernd: %s=%s: must be 1, true, 0 or false\n", switches[k], e);
            return quit(&cs, &app, 2);
        }
    }
    static const struct {
        const char *name;
        size_t off;
    } rates[] = {
        {"QUERN_RATE_LIMIT", offsetof(struct config, rate_per_s)},
        {"QUERN_RATE_BURST", offsetof(struct config, rate_burst)},
    };
    for (size_t k = 0; k < ARRAY_LEN(rates); k++) {
        if (!(e = getenv(rates[k].name)))
            continue;
        if (parse_i64(e, &ev) || ev < 0 || ev > 1000000) {
            fprintf(stderr, "quernd: %s=%s: must be an integer from 0 to 1000000 (requests)\n",
                    rates[k].name, e);
            return quit(&cs, &app, 2);
        }
        *(int64_t *)((char *)&app.cfg + rates[k].off) = ev;
    }
    const char *problem;
    if ((e = getenv("QUERN_BOOTSTRAP_KEY")) && *e && (problem = bootstrap_key_problem(e))) {
        /* the value itself is never printed: it is a secret */
        fprintf(stderr, "quernd: QUERN_BOOTSTRAP_KEY %s\n", problem);
        return quit(&cs, &app, 2);
    }
    if ((e = getenv("QUERN_LOG_FORMAT")) && strcmp(e, "json") && strcmp(e, "text")) {
        fprintf(stderr, "quernd: QUERN_LOG_FORMAT=%s: must be json or text\n", e);
        return quit(&cs, &app, 2);
    }
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
        return quit(&cs, &app, 2);
    }
    const char *listen = cs.listen, *data = cs.data, *store_url = cs.store_url;
    int exec_slots = cs.exec_slots;
    app.cfg.http_threads = cs.threads;
    app.cfg.exec_slots = cs.exec_slots;
    char host[64];
    int port;
    if (parse_listen(listen, host, sizeof host, &port)) {
        fprintf(stderr, "quernd: --listen wants HOST:PORT or [IPv6]:PORT, not %s\n", listen);
        return quit(&cs, &app, 2);
    }
    /* the address is checked before the store is opened: an address that
     * failed only at the end left a new store bootstrapped with a root key
     * nobody was shown */
    char *listen_err = NULL;
    int rc = http_check_listen(host, port, &listen_err);
    if (rc) {
        fprintf(stderr, "quernd: %s\n", listen_err);
        free(listen_err);
        return quit(&cs, &app, rc == -EINVAL ? 2 : 1);
    }
    if (!strcmp(cs.fsync, "always"))
        app.cfg.fsync = STORE_FSYNC_ALWAYS;
    else if (!strcmp(cs.fsync, "batch"))
        app.cfg.fsync = STORE_FSYNC_BATCH;
    else if (!strcmp(cs.fsync, "off"))
        app.cfg.fsync = STORE_FSYNC_OFF;
    else {
        fprintf(stderr, "quernd: --fsync must be always, batch or off\n");
        return quit(&cs, &app, 2);
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
        return quit(&cs, &app, 1);
    }
    char *lock_msg = NULL;
    cs.lock_fd = lock_data_dir(data, &lock_msg);
    if (cs.lock_fd < 0) {
        fprintf(stderr, "quernd: %s\n", lock_msg);
        free(lock_msg);
        return quit(&cs, &app, 1);
    }
    /* absolute from here on: the sandbox mounts directories under it */
    char *abs = realpath(data, NULL);
    app.data_dir = abs ? abs : xstrdup(data);
    app.secrets_key_path = cs.secrets_key_file ? xstrdup(cs.secrets_key_file)
                                               : xasprintf("%s/secret.key", app.data_dir);
    char *url = store_url ? xstrdup(store_url) : xasprintf("sqlite:%s/quern.db", data);
    char *err = NULL;
    struct store_opts so = {.fsync = app.cfg.fsync};
    /* phase timings, logged once ready ("startup"): bench/startup_bench.py reads them */
    int64_t t_start = mono_ms();
    app.store = store_open(url, &so, &err);
    free(url);
    if (!app.store) {
        fprintf(stderr, "quernd: %s\n", err ? err : "cannot open the store");
        free(err);
        return quit(&cs, &app, 1);
    }
    /* a `quern store copy` cut short left part of the rows: never served */
    char *since = NULL;
    if (store_copy_unfinished(app.store, &since) == 1) {
        fprintf(stderr,
                "quernd: the store holds a `quern store copy` that did not finish (started %s): "
                "drop it and copy again\n",
                since);
        free(since);
        return quit(&cs, &app, 1);
    }
    struct boot b = {.app = &app};
    rc = store_write(app.store, bootstrap_fn, &b);
    if (rc) {
        fprintf(stderr, "quernd: bootstrap failed (%d)\n", rc);
        return quit(&cs, &app, 1);
    }
    /* shown as soon as it is stored: a start that fails after this point
     * leaves a bootstrapped store, and a key not shown now never is */
    if (b.printed_key) {
        fprintf(stderr, "quernd: created project \"default\" and the root API key (shown once):\n"
                        "\n    %s\n\n", b.printed_key);
        free(b.printed_key);
        b.printed_key = NULL;
    }
    secrets_check_key(&app);
    char *blobdir = xasprintf("%s/blobs", data);
    app.blobs = blob_open(blobdir);
    free(blobdir);
    if (!app.blobs) {
        fprintf(stderr, "quernd: cannot create the blob directory under %s\n", data);
        return quit(&cs, &app, 1);
    }
    blob_use_store(app.blobs, app.store);   /* shared by every node when the store keeps blobs */
    int64_t t_open = mono_ms();
    /* recovery writes events: the bus must exist first */
    app.events = events_new(app.store);
    if (runner_recover(&app)) {
        fprintf(stderr, "quernd: cannot recover runs left by the previous process\n");
        return quit(&cs, &app, 1);
    }
    int64_t t_recover = mono_ms();
    app.auth = auth_new(app.store);
    if (app.cfg.rate_per_s > 0) {
        if (app.cfg.rate_burst <= 0)
            app.cfg.rate_burst = 2 * app.cfg.rate_per_s;   /* the default, said once */
        app.ratelimit = ratelimit_new(app.cfg.rate_per_s, app.cfg.rate_burst);
    }
    app.sched = sched_new(&app);
    if (sched_start(app.sched)) {
        fprintf(stderr, "quernd: cannot start the scheduler\n");
        return quit(&cs, &app, 1);
    }
    int64_t t_sched = mono_ms();
    openapi_build();
    if (exec_slots >= 0) {
        app.runner = runner_new(&app, exec_slots, &err);
        if (!app.runner) {
            log_write(LOG_WARN, "exec", NULL, "code execution is off on this node: %s",
                      err ? err : "?");
            free(err);
            err = NULL;
        } else {
            runtime_each(warn_unavailable, NULL);
            runner_wake(app.runner);
        }
    }
    app.webhooks = webhook_new(&app, &err);
    if (!app.webhooks) {
        fprintf(stderr, "quernd: %s\n", err ? err : "cannot start webhook deliveries");
        free(err);
        return quit(&cs, &app, 1);
    }

    int bound = 0;
    app.http = http_start(&app, host, port, app.cfg.http_threads, &bound, &err);
    if (!app.http) {
        /* the executor, scheduler and webhook threads run already: stopped
         * before main's frame (app) goes (they crashed on it otherwise) */
        fprintf(stderr, "quernd: %s\n", err);
        free(err);
        return quit(&cs, &app, 1);
    }
    if (b.given_ignored)
        log_write(LOG_WARN, "auth", NULL,
                  "QUERN_BOOTSTRAP_KEY is not a key of this store and is not used: it sets the "
                  "root key of a new, empty store only (create or rotate keys through the API)");
    int64_t t_listen = mono_ms();
    int64_t depth[4];
    sched_depths(app.sched, depth);
    log_write(LOG_INFO, "startup",
              json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "open_ms", (json_int_t)(t_open - t_start),
                        "recover_ms", (json_int_t)(t_recover - t_open), "sched_load_ms",
                        (json_int_t)(t_sched - t_recover), "other_ms", (json_int_t)(t_listen - t_sched),
                        "total_ms", (json_int_t)(t_listen - t_start), "queued",
                        (json_int_t)(depth[0] + depth[1] + depth[2] + depth[3])),
              "started");
    log_write(LOG_INFO, "server",
              json_pack("{s:s, s:i, s:s, s:s, s:i}", "host", host, "port", bound, "store",
                        store_backend(app.store), "fsync", cs.fsync, "exec_slots",
                        app.runner ? runner_slots(app.runner) : 0),
              "listening");
    printf(strchr(host, ':') ? "quernd listening on http://[%s]:%d\n"
                             : "quernd listening on http://%s:%d\n",
           host, bound);
    fflush(stdout);

    /* SIGHUP (a closed terminal, `systemctl reload`) killed quernd on the
     * spot, without a drain: nothing is reloaded, so it is logged and let be */
    int sig = 0;
    while (!sigwait(&set, &sig) && sig == SIGHUP)
        log_write(LOG_WARN, "server", NULL,
                  "SIGHUP ignored: quernd does not reload its configuration; restart it "
                  "(SIGTERM drains) to apply a change");
    log_write(LOG_INFO, "server", NULL, "%s: draining", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    app.draining = true;
    sched_drain(app.sched);
    /* running code gets its grace period while HTTP still serves (workers
     * report, logs flow); then streams end and the server stops */
    runner_drain(app.runner, app.cfg.drain_grace_ms);
    events_tick(app.events);   /* streams see draining and end */
    http_stop(app.http);
    int out = quit(&cs, &app, 0);   /* app_stop, once */
    log_write(LOG_INFO, "server", NULL, "stopped");
    return out;
}
