/*
 * exec — the supervisor of running boxes (see exec.h).
 *
 * One thread (the supervisor) owns every slot's state and the epoll set:
 * each live box contributes its stdout, stderr and control pipes, its pidfd
 * and, while stdin has queued bytes, its stdin pipe.  Other threads talk to
 * it through a command queue and an eventfd; the only state they read
 * directly is the table of live run ids (under `mu`), so exec_send can say
 * -ENOENT at once.
 *
 * Cells.  A box lives in a cell: its cgroups, network namespace and host
 * directories.  There are `slots` cells for runs plus one per warm box the
 * runtimes ask for, so a run always finds a free cell.  A run keeps its
 * cell for all its iterations.
 *
 * Warm boxes.  For runtimes with a loader (runtime.h), the supervisor keeps
 * `warm` boxes started ahead of runs, in cells of their own: sandboxed like
 * any box, their interpreter already running the loader, which blocks on
 * fd 6.  A run of that runtime (no network, no secrets: both are fixed when
 * a box is made) takes one: sandbox_adopt() applies its limits, binds its
 * storage directories and writes its files; then the script's path and the
 * run's whole environment go down fd 6, which is closed; the loader makes
 * the environment exactly the run's and runs the script in-process.  A box
 * serves one run and dies with it; the pool is refilled in the background,
 * one box per supervisor turn, and a runtime whose boxes die young is left
 * alone for a while (backoff).
 *
 * Files.  Creating and deleting inodes on the host file system was the
 * largest cost of a short run, so each cell keeps its directories under
 * spec->work_root and empties them after each run:
 *   .slot-N/scratch/        the box's cwd (/scratch), owned by the sandbox uid
 *   .slot-N/out/            /quern/out: output.json and artifacts/
 * The box's input.json, checkpoint.json and script are written into its own
 * tmpfs root (/quern, read-only), not on the host.  Artifacts are moved to
 * .artifacts/<run>-<rand>/ (made only when there are some), which
 * exec_result_release() removes.
 *
 * Invariants:
 *  1. A reservation (pub_ids[i] set) is held from exec_start until just
 *     before on_exit: exec_free_slots() never over-promises.  There are
 *     slots + backlog reservations; a start finding every slot busy waits
 *     in `pending` (FIFO) until one frees, so the caller's round trip
 *     between a run's end and the next start does not leave a slot idle.  Cells in use never
 *     exceed slots + warm boxes, so a starting run always gets a cell.
 *  2. Exactly one on_exit per accepted exec_start (except at exec_free).
 *  3. Log lines are delivered in the order read from each pipe, never past
 *     max_output_bytes; the box is killed when the limit is reached.
 *  4. Files of the box are only opened with O_NOFOLLOW under a dirfd, after
 *     the box is dead, and only regular files with one link are taken.
 *  5. A warm box runs nothing but the loader until a run takes it, and is
 *     used by exactly one run; its cell is emptied before it is reused.
 */
#include "exec.h"

#include "blob.h"
#include "jdump.h"
#include "jload.h"
#include "runtime.h"
#include "sandbox.h"
#include "tree.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES (64 * 1024)
#define CONTROL_MAX_BYTES (1024 * 1024)
#define OUTPUT_FILE_MAX (16 * 1024 * 1024)
#define OUTPUT_MAX_VALUES 1000000   /* 40+ bytes of quernd's memory each, parsed */
#define ARTIFACTS_MAX_COUNT 1000
#define ARTIFACTS_MAX_BYTES ((int64_t)1 << 30)
#define ARTIFACTS_MAX_DEPTH 8
#define STR_(x) #x
#define STR(x) STR_(x)   /* a number macro as a string literal */
#define DISK_MAX_BYTES ((int64_t)1 << 30) /* scratch and artifacts of a live box */
#define DISK_MAX_ENTRIES 100000
#define EXEC_MAX_PENDING_INPUT 100 /* input_requests of a run waiting at once */
#define HOLD_MS 5                  /* a look at a congested consumer */
#define DISK_CHECK_MS 500                 /* how often, from half a second on */
#define TRASH_OVER_ENTRIES 1000           /* a slot dir holding more is removed aside */
#define LOG_ENTRY_MIN 64                  /* bytes of max_output_bytes per entry, at least, */
#define LOG_ENTRIES_FREE 10000             /* after the first this many */
#define STDIN_MAX_BYTES (16 * 1024 * 1024) /* waiting for code that does not read */
#define ENV_FIXED_MAX 24                   /* build_env's own variables, at most */
#define ENV_MAX (ENV_FIXED_MAX + EXEC_MAX_SECRETS + 1)

enum fdkind { K_WAKE = 0, K_OUT, K_ERR, K_CTL, K_PID, K_IN, K_WARM, K_INOTIFY };

#define WARM_ROOT_BYTES ((int64_t)64 << 20)   /* a warm root must hold any input */
#define WARM_YOUNG_MS 2000                    /* a box dead sooner died young */
#define WARM_REFILL_DELAY_MS 10               /* after a warm start, before a refill */

struct lbuf {
    struct buf b;
    int fd;
    bool skipping;   /* control channel: dropping the rest of a line over its cap */
};

struct run {
    bool active;
    /* the spec, copied */
    char *run_id, *task_id, *project_id, *code, *input_json, *checkpoint_json, *work_root;
    char *st_account, *st_project, *st_org;
    bool st_watch;            /* its storage dirs are watched (exec's inotify instance) */
    int st_wd[3];             /* the watch per scope (account, project, org), or -1 */
    unsigned st_use[3];       /* EXEC_ST_*: events on that watch while the run held it */
    size_t code_len;
    int attempt;
    const struct runtime *rt;
    int64_t timeout_ms, inactivity_ms, grace_ms, mem_mb, max_output, max_iter;
    int64_t max_procs, max_files, max_fsize;
    bool network, secrets_env;
    size_t nsecrets;
    char **sec_names, **sec_values;
    /* what redact() hides: each value of 4+ bytes and, of a value that
     * holds newlines, each of its lines of 4+ bytes (pointers into
     * sec_values) */
    const char **sec_pat;
    size_t *sec_patlen, nsec_pat;

    /* per run */
    int resv;                 /* its reservation (pub_ids index) */
    int cell;
    bool warm;                /* the first iteration ran in a warm box */
    char *slotdir, *scratch, *outdir;
    int iteration;
    int64_t out_bytes, entries;
    int64_t cpu_ms, peak_kb, wall_ms;
    json_t *ctl_output, *cont_data;
    json_t *carried;              /* the output an earlier iteration left (file or message) */
    bool cont_req;
    struct buf stdin_q;
    bool stdin_close;

    /* per iteration */
    bool alive;
    struct sandbox_proc proc;
    struct lbuf out, err, ctl;
    int fd_in, fd_status;
    int64_t started, deadline, last_activity, kill_at, disk_check_at;
    uint64_t disk_gen;        /* names this box's disk checks (see struct diskq) */
    bool disk_busy;           /* a check of it is with the disk thread */
    int waiting_input;            /* the code's input_requests not answered yet */
    bool input_flood_warned;      /* one warning for input_requests over the cap */
    bool in_armed;
    const char *kill_status, *kill_code;
    char *kill_msg;
};

enum cmd_type { C_START, C_SEND, C_CLOSE, C_CANCEL, C_PREWARM, C_DISK };

/* A box started ahead of a run (see the top of the file). */
struct warm {
    bool live;
    const struct runtime *rt;
    int cell;
    struct sandbox_proc proc;
    int fd_in, fd_out, fd_err, fd_ctl, fd_status, fd_go;   /* our ends */
    int64_t born;
};

/* The warm boxes of one runtime. */
struct pool {
    const struct runtime *rt;
    int target, live, fails;
    int64_t retry_at;
};

struct cmd {
    enum cmd_type type;
    int slot;
    char *run_id, *line;
    struct run *spec; /* C_START: the filled run */
    uint64_t gen;     /* C_DISK: the box checked (run.disk_gen) */
    bool over;        /* C_DISK: over the disk limits */
    struct cmd *next;
};

/* The disk checks.  Walking a tree of 100 000 directories takes over a
 * second; on the supervisor, a box sitting just under the limit kept it
 * walking most of the time and every other run waited (output unread for
 * seconds).  The walks are made by a thread of their own: the supervisor
 * posts a job when a run's check is due (one at a time per run), the
 * thread answers with a C_DISK command, and the supervisor kills the box if
 * it is over and the answer is for the box still in that slot (disk_gen). */
struct disk_job {
    int slot;
    uint64_t gen;
    pid_t init;
    char *scratch, *outdir;
    struct disk_job *next;
};

struct diskq {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct disk_job *head, *tail;
    bool stop;
    pthread_t thread;
};

struct exec {
    struct exec_callbacks cb;
    int slots;
    struct sandbox_sys *sys;
    struct run *runs;
    int ncells;
    bool *cell_busy;        /* per cell */
    int st_inotify;         /* one inotify instance for every run's storage dirs, kept
                               (closing one waits for an RCU grace period, milliseconds on
                               this thread); -1 until a run has storage to watch */
    struct st_ref {          /* live watches: runs holding each, the events asked for */
        int wd, refs;
        uint32_t mask;
        char *path;
    } *st_refs;
    size_t nst_refs, cap_st_refs;
    bool st_warned;         /* the log said inotify is unavailable */
    char **clean_root;      /* per cell: the work_root whose .slot-N is known empty */
    struct trash *trash;    /* the remover of big trees (its own thread) */
    struct warm *warm;      /* nwarm entries */
    int nwarm;
    struct pool *pools;
    int npools;
    char *warm_root;        /* the work_root warm boxes are made under */
    int64_t refill_after;   /* not before: a run just started (mono ms) */
    int64_t n_warm_starts, n_cold_starts; /* atomics: read by exec_get_stats */
    int n_warm_ready;
    pthread_t thread;
    struct diskq disk;      /* the disk checks' thread and its jobs */
    bool disk_started;
    uint64_t disk_seq;      /* the last disk_gen given */
    int epfd, wakefd;

    pthread_mutex_t mu;     /* guards what follows */
    char **pub_ids;         /* per reservation: run id while reserved, else NULL */
    int nresv, nfree;       /* reservations (slots + backlog), free ones */
    struct run **pending;   /* supervisor's: accepted starts waiting for a slot (FIFO) */
    int npending;
    struct cmd *q_head, *q_tail;
    bool stopping;
};

/* ---- small helpers ---- */


static void notice(void *ctx, const char *msg)
{
    struct exec *ex = ctx;
    if (ex->cb.on_notice)
        ex->cb.on_notice(ex->cb.ctx, msg);
    else
        fprintf(stderr, "quern exec: %s\n", msg);
}

static char *find_init(void)
{
    const char *env = getenv("QUERN_INIT");
    if (env && *env)
        return xstrdup(env);
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        return xstrdup("quern-init");
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    static const char *const rel[] = {"/quern-init", "/../quern-init", "/../build/quern-init"};
    for (size_t i = 0; i < ARRAY_LEN(rel); i++) {
        char *p = xasprintf("%s%s", exe, rel[i]);
        if (access(p, X_OK) == 0)
            return p;
        free(p);
    }
    return xasprintf("%s/quern-init", exe);
}

static char *dupn(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

static const char *sig_name(int sig)
{
    static char b[32];
    const char *abbrev = sigabbrev_np(sig);
    if (abbrev) {
        snprintf(b, sizeof(b), "SIG%s", abbrev);
        return b;
    }
    snprintf(b, sizeof(b), "signal %d", sig);
    return b;
}

/* The length of the longest pattern (sec_pat) that s[i..len) starts with;
 * 0 when none does. */
static size_t secret_at(const struct run *r, const char *s, size_t i, size_t len)
{
    size_t best = 0;
    for (size_t k = 0; k < r->nsec_pat; k++) {
        size_t pl = r->sec_patlen[k];
        if (pl > best && pl <= len - i && s[i] == r->sec_pat[k][0] &&
            memcmp(s + i, r->sec_pat[k], pl) == 0)
            best = pl;
    }
    return best;
}

/* Replaces every secret value of 4+ bytes in s by "***"; malloc'd result.
 * Matches that overlap (two secrets sharing bytes, "abcdef" holding
 * "abcd" and "cdef") are hidden together as one "***": hiding the first
 * alone left the end of the other in clear. */
static char *redact(const struct run *r, const char *s, size_t len)
{
    struct buf b;
    buf_init(&b);
    size_t i = 0;
    while (i < len) {
        size_t end = i + secret_at(r, s, i, len);
        if (end == i) {
            buf_append(&b, s + i, 1);
            i++;
            continue;
        }
        for (size_t j = i + 1; j < end; j++) {
            size_t e = j + secret_at(r, s, j, len);
            if (e > end)
                end = e;
        }
        buf_puts(&b, "***");
        i = end;
    }
    if (!b.data)
        buf_append(&b, "", 0);
    return buf_steal(&b);
}

static bool has_secrets(const struct run *r)
{
    return r->nsec_pat > 0;
}

/* Fills r->sec_pat from r->sec_values.  A value's lines are patterns of
 * their own because stdout and stderr are stored a line at a time: a
 * PEM key printed whole reached the log as its lines, none of them the
 * value.  A line's "\r" before its newline is not part of it. */
static void secret_patterns(struct run *r)
{
    /* a value, and of one with newlines each line: newlines + 1 of them
     * when it does not end with one ("a\nb" holds 2) */
    size_t cap = 0;
    for (size_t k = 0; k < r->nsecrets; k++) {
        size_t nl = 0;
        for (const char *c = r->sec_values[k]; *c; c++)
            nl += *c == '\n';
        cap += 1 + (nl ? nl + 1 : 0);
    }
    r->sec_pat = xcalloc(cap + 1, sizeof(*r->sec_pat));
    r->sec_patlen = xcalloc(cap + 1, sizeof(*r->sec_patlen));
    for (size_t k = 0; k < r->nsecrets; k++) {
        const char *v = r->sec_values[k];
        size_t vl = strlen(v);
        if (vl >= 4) {
            r->sec_pat[r->nsec_pat] = v;
            r->sec_patlen[r->nsec_pat++] = vl;
        }
        if (!strchr(v, '\n'))
            continue;
        const char *p = v;
        while (*p) {
            const char *nl = strchr(p, '\n');
            size_t n = nl ? (size_t)(nl - p) : strlen(p);
            size_t m = n && p[n - 1] == '\r' ? n - 1 : n;
            if (m >= 4) {
                r->sec_pat[r->nsec_pat] = p;
                r->sec_patlen[r->nsec_pat++] = m;
            }
            p += n + (nl ? 1 : 0);
        }
    }
}

/* name, or the first of "name (2)", "name (3)", ... that taken() says is
 * free: a name that became another's once a secret was hidden loses
 * nothing.  malloc'd. */
static char *free_name(const char *name, bool (*taken)(const void *ctx, const char *name),
                       const void *ctx)
{
    char *n = xstrdup(name);
    for (int k = 2; taken(ctx, n); k++) {
        free(n);
        n = xasprintf("%s (%d)", name, k);
    }
    return n;
}

static bool key_taken(const void *obj, const char *key)
{
    return json_object_get((const json_t *)obj, key) != NULL;
}

static void redact_json(const struct run *r, json_t *j)
{
    if (!has_secrets(r) || !j)
        return;
    if (json_is_string(j)) {
        char *s = redact(r, json_string_value(j), json_string_length(j));
        json_string_set(j, s);
        free(s);
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v)
            redact_json(r, v);
    } else if (json_is_object(j)) {
        const char *k;
        json_t *v;
        void *tmp;
        json_t *renamed = NULL;   /* the members whose key holds a secret, by their new key */
        json_object_foreach_safe(j, tmp, k, v) {
            redact_json(r, v);
            char *nk = redact(r, k, strlen(k));
            if (strcmp(nk, k) != 0) {
                if (!renamed)
                    renamed = json_array();
                json_array_append_new(renamed, json_pack("[s, O]", nk, v));
                json_object_del(j, k);
            }
            free(nk);
        }
        /* Put back under the redacted key; one that is taken already (a
         * key "***" beside "<secret>") gets " (2)", " (3)", ... so that no
         * member is lost. */
        size_t i;
        json_array_foreach(renamed, i, v) {
            char *key = free_name(json_string_value(json_array_get(v, 0)), key_taken, j);
            json_object_set(j, key, json_array_get(v, 1));
            free(key);
        }
        json_decref(renamed);
    }
}

/* Removes a tree without following links or crossing mounts (tree.h). */
static void rm_tree(const char *path)
{
    (void)tree_remove(path, false);
}

static void run_clear(struct run *r)
{
    free(r->run_id);
    free(r->task_id);
    free(r->project_id);
    free(r->code);
    free(r->input_json);
    free(r->checkpoint_json);
    free(r->work_root);
    free(r->st_account);
    free(r->st_project);
    free(r->st_org);
    for (size_t i = 0; i < r->nsecrets; i++) {
        free(r->sec_names[i]);
        explicit_bzero(r->sec_values[i], strlen(r->sec_values[i]));
        free(r->sec_values[i]);
    }
    free(r->sec_names);
    free(r->sec_values);
    free(r->sec_pat);
    free(r->sec_patlen);
    free(r->slotdir);
    free(r->scratch);
    free(r->outdir);
    json_decref(r->ctl_output);
    json_decref(r->carried);
    json_decref(r->cont_data);
    buf_release(&r->stdin_q);
    buf_release(&r->out.b);
    buf_release(&r->err.b);
    buf_release(&r->ctl.b);
    free(r->kill_msg);
    memset(r, 0, sizeof(*r));
}

/* ---- queue ---- */

static void enqueue(struct exec *ex, struct cmd *c)
{
    /* caller holds mu */
    c->next = NULL;
    if (ex->q_tail)
        ex->q_tail->next = c;
    else
        ex->q_head = c;
    ex->q_tail = c;
    /* a queue that was not empty has its wake-up pending: the supervisor
     * reads the eventfd before it takes the whole queue */
    if (ex->q_head != c)
        return;
    uint64_t one = 1;
    if (write(ex->wakefd, &one, sizeof(one)) < 0) {
        /* the counter is saturated: the supervisor is awake anyway */
    }
}

static int find_pub(struct exec *ex, const char *run_id)
{
    for (int i = 0; i < ex->nresv; i++)
        if (ex->pub_ids[i] && strcmp(ex->pub_ids[i], run_id) == 0)
            return i;
    return -1;
}

/* ---- per-run events ---- */

static void ep_del(struct exec *ex, int fd)
{
    if (fd >= 0)
        epoll_ctl(ex->epfd, EPOLL_CTL_DEL, fd, NULL);
}

static void ep_add(struct exec *ex, int fd, int slot, enum fdkind k, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.u64 = ((uint64_t)slot << 8) | k};
    if (epoll_ctl(ex->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        die_invariant("epoll_ctl ADD of an fd just made");
}

static void kill_box(struct run *r, const char *status, const char *code, const char *msg, int sig)
{
    if (!r->kill_status) {
        r->kill_status = status;
        r->kill_code = code;
        free(r->kill_msg);
        r->kill_msg = msg ? xstrdup(msg) : NULL;
    }
    if (r->alive)
        sandbox_signal(&r->proc, sig);
}

/* Stops a box as cancel and the timeouts do: SIGTERM, then SIGKILL after
 * its grace; a grace of none (EXEC_GRACE_NONE) is SIGKILL at once. */
static void stop_box(struct run *r, const char *status, const char *code, const char *msg,
                     int64_t now)
{
    bool now_kill = r->grace_ms < 0;
    kill_box(r, status, code, msg, now_kill ? SIGKILL : SIGTERM);
    r->kill_at = now_kill ? 0 : now + r->grace_ms;
}

/* Counts n log bytes against the limit; returns how many may be delivered. */
static size_t take_output(struct run *r, size_t n)
{
    int64_t room = r->max_output - r->out_bytes;
    if (room <= 0)
        return 0;
    size_t k = (int64_t)n > room ? (size_t)room : n;
    r->out_bytes += (int64_t)k;
    return k;
}

/* After a run's first LOG_ENTRIES_FREE entries (log lines and control
 * messages), each costs at least LOG_ENTRY_MIN bytes of max_output_bytes
 * (storing one costs that much besides its text): charges what its n bytes
 * fall short of it; false when the budget is spent.  A flood of tiny lines
 * is bounded in rows, not only in bytes. */
static bool take_entry_min(struct run *r, size_t n)
{
    if (++r->entries <= LOG_ENTRIES_FREE || n >= LOG_ENTRY_MIN)
        return true;
    size_t pad = LOG_ENTRY_MIN - n;
    return take_output(r, pad) == pad;
}

static void over_limit(struct run *r)
{
    kill_box(r, "failed", "output_limit_exceeded",
             "log and control output over max_output_bytes", SIGKILL);
}

/* s[0..n) as valid UTF-8 without NUL (each bad byte, and NUL, becomes
 * U+FFFD), malloc'd; NULL when s already is (the usual case). */
static char *utf8_clean(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    size_t i = 0;
    while (i < n) {
        size_t k = p[i] == 0 ? 0 : p[i] < 0x80 ? 1 : jdump_utf8_len(p + i, end);
        if (!k)
            break;
        i += k;
    }
    if (i == n)
        return NULL;
    struct buf b;
    buf_init(&b);
    buf_append(&b, s, i);
    while (i < n) {
        size_t k = p[i] == 0 ? 0 : p[i] < 0x80 ? 1 : jdump_utf8_len(p + i, end);
        if (k)
            buf_append(&b, s + i, k);
        else
            buf_puts(&b, "\xEF\xBF\xBD");
        i += k ? k : 1;
    }
    return buf_steal(&b);
}

static void nul_to_fffd(json_t *j)
{
    if (json_is_string(j)) {
        char *clean = utf8_clean(json_string_value(j), json_string_length(j));
        if (clean)
            json_string_set(j, clean);
        free(clean);
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v)
            nul_to_fffd(v);
    } else if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v)
            nul_to_fffd(v);
    }
}

/* The code unit of the escape "\uXXXX" at p (p[0] is the backslash), or
 * -1 when p does not hold one. */
static long u_escape(const char *p, const char *end)
{
    if (end - p < 6 || p[0] != '\\' || p[1] != 'u')
        return -1;
    long v = 0;
    for (int i = 2; i < 6; i++) {
        int c = (unsigned char)p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* s[0..n) with each escape of a lone surrogate ("\udcff" with no pair)
 * as "\ufffd", the same length; malloc'd, NULL when there is none (the
 * usual case).  Other escapes are skipped whole, so "\\udcff" (a
 * backslash, then text) is left alone. */
static char *lone_surrogates_fffd(const char *s, size_t n)
{
    const char *end = s + n;
    char *copy = NULL;
    for (const char *p = s; p < end; p++) {
        if (*p != '\\')
            continue;
        long v = u_escape(p, end);
        if (v < 0xD800 || v > 0xDFFF) {
            p++;               /* the escaped character, whatever it is */
            continue;
        }
        long lo = v <= 0xDBFF ? u_escape(p + 6, end) : -1;
        if (lo >= 0xDC00 && lo <= 0xDFFF) {
            p += 11;           /* a pair */
            continue;
        }
        if (!copy) {
            copy = xmalloc(n + 1);
            memcpy(copy, s, n);
            copy[n] = '\0';
        }
        memcpy(copy + (p - s), "\\ufffd", 6);
        p += 5;
    }
    return copy;
}

/* JSON the box wrote (fd 3, QUERN_OUTPUT), parsed as JSON allows it where
 * jansson would refuse: "\u0000" and the escape of a lone surrogate are
 * valid JSON text (python's json.dump writes the one for a string read
 * from /proc/self/cmdline, the other for a file name that is not UTF-8,
 * as os.listdir gives it), and both failed the run invalid_output (or the
 * fd-3 message was ignored).  Each becomes U+FFFD, as a NUL or a bad byte
 * does in log lines: strings are C text here, and PostgreSQL's jsonb
 * refuses \u0000.  A key cannot hold a NUL: jansson refuses that whatever
 * the flags. */
static json_t *box_json_load(const char *s, size_t n, size_t flags, json_error_t *e)
{
    char *fixed = lone_surrogates_fffd(s, n);
    json_t *j = json_loadb(fixed ? fixed : s, n, flags | JSON_ALLOW_NUL, e);
    free(fixed);
    nul_to_fffd(j);
    return j;
}

static void deliver_line(struct exec *ex, struct run *r, const char *type, const char *s, size_t n)
{
    if (r->kill_code && strcmp(r->kill_code, "output_limit_exceeded") == 0)
        return;
    size_t k = take_entry_min(r, n + 1) ? take_output(r, n + 1) : 0;
    if (k == 0) {
        over_limit(r);
        return;
    }
    bool cut = k < n + 1;
    if (!cut || k > 1) {
        char *clean = utf8_clean(s, n); /* else the entry could not be stored */
        char *line = clean ? redact(r, clean, strlen(clean)) : redact(r, s, n);
        free(clean);
        /* Cut (the line's newline counts too) after redacting, never
         * before: a secret cut in two was not recognised, and its first
         * bytes were stored.  At a character's start, so it stays UTF-8. */
        size_t len = strlen(line);
        if (cut && len > k - 1) {
            len = k - 1;
            while (len > 0 && ((unsigned char)line[len] & 0xC0) == 0x80)
                len--;
            line[len] = '\0';
        }
        if (ex->cb.on_log)
            ex->cb.on_log(ex->cb.ctx, r->run_id, type, NULL, line, NULL, r->iteration);
        free(line);
    }
    if (cut)
        over_limit(r);
}

/* A warn entry in the run's log, of its current iteration. */
static void run_warn(struct exec *ex, struct run *r, const char *msg)
{
    if (ex->cb.on_log)
        ex->cb.on_log(ex->cb.ctx, r->run_id, "log", "warn", msg, NULL, r->iteration);
}

/* run_warn for a text that quotes what the box wrote: redacted, and made
 * valid UTF-8 (else the entry could not be stored). */
static void warn_quoting(struct exec *ex, struct run *r, const char *msg)
{
    if (!ex->cb.on_log)
        return;
    char *red = redact(r, msg, strlen(msg)), *clean = utf8_clean(red, strlen(red));
    run_warn(ex, r, clean ? clean : red);
    free(clean);
    free(red);
}

/* Redacts a control message but for its own keys and the values of "type"
 * and "level": words of the protocol, compared with its fixed set and never
 * stored (only the known keys are read).  Redacting them too lost the whole
 * message when a secret was such a word: a secret "output" made
 * {"type":"output",...} a message of type "***", ignored, and the run's
 * output null; a secret "message" emptied every fd-3 log line. */
static void redact_control(const struct run *r, json_t *m)
{
    if (!json_is_object(m)) {
        redact_json(r, m);
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v)
        if (strcmp(k, "type") != 0 && strcmp(k, "level") != 0)
            redact_json(r, v);
}

/* jansson's error for JSON the box wrote; without the token it quotes
 * ("... near 'abc'") when the run has secrets: jansson quotes a token cut
 * where its lexer stopped, so an unquoted secret came out as its first
 * bytes ("near 'LONGSECRET'" of "LONGSECRET-000..."), which redacting does
 * not recognise.  malloc'd. */
static char *box_json_error(const struct run *r, const json_error_t *e)
{
    const char *t = jload_error_text(e);
    const char *near = has_secrets(r) ? strstr(t, " near '") : NULL;
    return near ? xstrndup(t, (size_t)(near - t)) : xstrdup(t);
}

static void handle_control(struct exec *ex, struct run *r, const char *s, size_t n)
{
    json_error_t jerr;
    json_t *m = box_json_load(s, n, 0, &jerr);
    /* continue's data is the next iteration's input, the code's own and
     * never stored nor shown: it goes on as written (redacted, a secret in
     * it reached the next iteration as "***") */
    json_t *cont = NULL;
    const char *t0 = m ? json_string_value(json_object_get(m, "type")) : NULL;
    if (t0 && strcmp(t0, "continue") == 0 && json_object_get(m, "data"))
        cont = json_deep_copy(json_object_get(m, "data"));
    redact_control(r, m);
    const char *type = m ? json_string_value(json_object_get(m, "type")) : NULL;
    /* Everything the code sends is stored, so all of it counts against
     * max_output_bytes: a flood of checkpoints, progress or junk lines is
     * bounded like a flood of log lines. */
    if (!m || !json_is_object(m) || !type) {
        json_decref(m);
        if (!take_entry_min(r, n + 1) || take_output(r, n + 1) < n + 1) {
            over_limit(r);
            return;
        }
        /* jansson quotes the line near the error: a secret, bad UTF-8 */
        char *why = m ? xstrdup("no type") : box_json_error(r, &jerr);
        char *msg = xasprintf("ignored an invalid control message (%s)", why);
        warn_quoting(ex, r, msg);
        free(msg);
        free(why);
        return;
    }
    if (strcmp(type, "log") == 0) {
        const char *level = json_string_value(json_object_get(m, "level"));
        /* the levels append_log accepts; anything else is info */
        if (level && strcmp(level, "debug") && strcmp(level, "info") && strcmp(level, "warn") &&
            strcmp(level, "warning") && strcmp(level, "error"))
            level = NULL;
        const char *message = json_string_value(json_object_get(m, "message"));
        json_t *data = json_object_get(m, "data");
        if (!message)
            message = "";
        size_t len = strlen(message);
        size_t extra = data && n > len ? n - len : 0; /* data costs the rest of the line */
        if (!take_entry_min(r, len + 1 + extra) || (extra && take_output(r, extra) < extra)) {
            json_decref(m);
            over_limit(r);
            return;
        }
        size_t k = take_output(r, len + 1);
        if (k == 0) {
            over_limit(r);
        } else {
            char *cut = k < len + 1 ? xstrndup(message, k) : NULL;
            if (ex->cb.on_log)
                ex->cb.on_log(ex->cb.ctx, r->run_id, "log", level ? level : "info",
                              cut ? cut : message, data, r->iteration);
            free(cut);
            if (k < len + 1)
                over_limit(r);
        }
    } else if (!take_entry_min(r, n + 1) || take_output(r, n + 1) < n + 1) {
        over_limit(r);
    } else {
        if (strcmp(type, "output") == 0) {
            /* one without an output is ignored, as the runner ignores it:
             * it made the run's output null at exit, an earlier one lost */
            json_t *o = json_object_get(m, "output");
            if (o) {
                json_decref(r->ctl_output);
                r->ctl_output = json_deep_copy(o);
            }
        } else if (strcmp(type, "continue") == 0) {
            json_decref(r->cont_data);
            r->cont_data = cont ? cont : json_object();
            cont = NULL;
            r->cont_req = true;
        } else if (strcmp(type, "input_request") == 0) {
            /* each question waiting is saved with the run: unbounded, a
             * flood made every save longer (quadratic) and held the store's
             * writer, every project's writes, for minutes */
            if (r->waiting_input >= EXEC_MAX_PENDING_INPUT) {
                if (!r->input_flood_warned)
                    run_warn(ex, r, "input_request dropped: 100 questions are already waiting "
                                    "for an answer");
                r->input_flood_warned = true;
                json_decref(m);
                return;
            }
            r->waiting_input++;
        }
        if (ex->cb.on_control)
            ex->cb.on_control(ex->cb.ctx, r->run_id, m, r->iteration);
    }
    json_decref(cont);
    json_decref(m);
}

/* A control line over CONTROL_MAX_BYTES is dropped whole, up to its
 * newline, with one warning: its tail must not be read as a message of its
 * own.  Its bytes count against max_output_bytes like any other (an endless
 * line ends the run as output_limit_exceeded).  n bytes of it are here,
 * ended: the newline came.  False when the run is over its limit. */
static bool skip_control(struct exec *ex, struct run *r, struct lbuf *lb, size_t n, bool ended)
{
    if (!lb->skipping)
        run_warn(ex, r, "ignored a control message over 1 MiB (the whole line)");
    lb->skipping = !ended;
    if (take_output(r, n) < n) {
        over_limit(r);
        return false;
    }
    return true;
}

/* Splits what a pipe gave into lines; at_eof flushes a last partial line. */
static void split_lines(struct exec *ex, struct run *r, enum fdkind k, struct lbuf *lb, bool at_eof)
{
    size_t start = 0;
    size_t cap = k == K_CTL ? CONTROL_MAX_BYTES : LINE_MAX_BYTES;
    const char *type = k == K_OUT ? "stdout" : "stderr";
    while (start < lb->b.len) {
        char *nl = memchr(lb->b.data + start, '\n', lb->b.len - start);
        size_t avail = lb->b.len - start;
        size_t n;
        if (nl)
            n = (size_t)(nl - (lb->b.data + start));
        else if (avail >= cap || (at_eof && avail > 0) || lb->skipping)
            n = avail > cap ? cap : avail;
        else
            break;
        if (k == K_CTL) {
            /* n < cap whatever the reads' boundaries: a line that came whole
             * in one read is held to the same cap as one that did not */
            if (!lb->skipping && n < cap) {
                handle_control(ex, r, lb->b.data + start, n);
            } else if (!skip_control(ex, r, lb, n + (nl ? 1 : 0), nl != NULL)) {
                lb->b.len = 0;   /* killed: the rest is not read either */
                return;
            }
        } else {
            deliver_line(ex, r, type, lb->b.data + start, n);
        }
        start += n + (nl ? 1 : 0);
    }
    if (start > 0) {
        memmove(lb->b.data, lb->b.data + start, lb->b.len - start);
        lb->b.len -= start;
        lb->b.data[lb->b.len] = '\0';
    }
}

/* Reads what is there; returns false at EOF or error (then the fd is closed). */
static bool pump(struct exec *ex, struct run *r, enum fdkind k, struct lbuf *lb, bool at_exit)
{
    char chunk[65536];
    for (int rounds = 0;; rounds++) {
        if (!at_exit && rounds >= 16)
            return true; /* let the other boxes have the thread */
        ssize_t n = read(lb->fd, chunk, sizeof(chunk));
        if (n > 0) {
            r->last_activity = mono_ms();
            buf_append(&lb->b, chunk, (size_t)n);
            split_lines(ex, r, k, lb, false);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN && !at_exit)
            return true;
        break;
    }
    split_lines(ex, r, k, lb, true);
    ep_del(ex, lb->fd);
    close(lb->fd);
    lb->fd = -1;
    return false;
}

static void flush_stdin(struct exec *ex, int slot, struct run *r)
{
    if (r->fd_in < 0)
        return;
    while (r->stdin_q.len > 0) {
        ssize_t w = write(r->fd_in, r->stdin_q.data, r->stdin_q.len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            if (!r->in_armed) {
                ep_add(ex, r->fd_in, slot, K_IN, EPOLLOUT);
                r->in_armed = true;
            }
            return;
        }
        if (w < 0) {
            /* EPIPE: the box closed stdin; eat the SIGPIPE we blocked */
            sigset_t s;
            sigemptyset(&s);
            sigaddset(&s, SIGPIPE);
            struct timespec zero = {0, 0};
            (void)sigtimedwait(&s, NULL, &zero);
            r->stdin_q.len = 0;
            break;
        }
        memmove(r->stdin_q.data, r->stdin_q.data + w, r->stdin_q.len - (size_t)w);
        r->stdin_q.len -= (size_t)w;
    }
    if (r->in_armed) {
        ep_del(ex, r->fd_in);
        r->in_armed = false;
    }
    if (r->stdin_close) {
        close(r->fd_in);
        r->fd_in = -1;
    }
}

/* ---- start / finish ---- */

static void finish(struct exec *ex, int slot, struct run *r, struct exec_result *res);

static struct exec_result *new_result(const char *status, const char *code, const char *msg)
{
    struct exec_result *res = xcalloc(1, sizeof(*res));
    res->status = status;
    res->error_code = code;
    res->error_message = msg ? xstrdup(msg) : NULL;
    res->exit_code = -1;
    return res;
}

static int mkdir_owned(const char *p, mode_t mode, uid_t uid)
{
    if (mkdir(p, mode) < 0 && errno != EEXIST)
        return -errno;
    if (chown(p, uid, uid) < 0)
        return -errno;
    return 0;
}

/* Empties dir (not following links); 0 or -1 when something stayed. */
static int empty_dir(const char *dir)
{
    return tree_remove(dir, true);
}

/* True when the directory open at fd holds nothing but `keep` (a directory
 * name, or NULL) besides . and ..; stops at the first other entry.  Raw
 * getdents64: no readdir stream (32 KiB) allocated per call. */
static bool dir_holds_only(int fd, const char *keep)
{
    char b[4096];
    long n;
    bool ok = true;
    while (ok && (n = syscall(SYS_getdents64, fd, b, sizeof(b))) > 0) {
        for (long off = 0; off < n;) {
            struct linux_dirent64_s {
                uint64_t ino;
                int64_t off;
                unsigned short reclen;
                unsigned char type;
                char name[];
            } *d = (void *)(b + off);
            if (strcmp(d->name, ".") && strcmp(d->name, "..") &&
                !(keep && !strcmp(d->name, keep) && d->type == DT_DIR))
                ok = false;
            off += d->reclen;
        }
    }
    return ok;
}

/* True when the directory at dfd/name (not a link) is owned by uid with
 * mode 0755 and holds nothing but `keep` (a name, or NULL).  *fd_out, when
 * asked for, gets the directory open. */
static bool dir_pristine(int dfd, const char *name, uid_t uid, const char *keep, int *fd_out)
{
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return false;
    struct stat st;
    bool ok = fstat(fd, &st) == 0 && st.st_uid == uid && st.st_gid == uid &&
              (st.st_mode & 07777) == 0755 && dir_holds_only(fd, keep);
    if (ok && fd_out)
        *fd_out = fd;
    else
        close(fd);
    return ok;
}

/* Big trees a box left.  Removing 100 000 directories took 20 s here (an
 * ext4 mounted with `discard` frees each block synchronously), and the
 * supervisor did it between two turns: no other run was read, timed out or
 * checked meanwhile, and a box making directories ran on unchecked past the
 * disk limit.  A slot directory over TRASH_OVER_ENTRIES is renamed into
 * <work_root>/.trash/ instead (one rename) and this thread removes it; it
 * also empties what a crash left there.  It owns struct trash once
 * exec_free has set `stop` (it is detached: a removal under way is not
 * waited for, what it leaves is removed at the next start). */
struct trash {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    char **dirs;            /* .trash directories to empty */
    size_t n, cap;
    size_t pending, limit;  /* trees moved in and not yet removed; at most this many */
    bool stop;
};

static void *trash_main(void *arg)
{
    struct trash *t = arg;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        while (!t->stop && t->n == 0)
            pthread_cond_wait(&t->cond, &t->mu);
        if (t->stop)
            break;
        char *dir = t->dirs[--t->n];
        size_t had = t->pending;   /* a tree moved in meanwhile asks again */
        pthread_mutex_unlock(&t->mu);
        (void)tree_remove(dir, true);
        free(dir);
        pthread_mutex_lock(&t->mu);
        t->pending -= had < t->pending ? had : t->pending;
    }
    pthread_mutex_unlock(&t->mu);
    for (size_t i = 0; i < t->n; i++)
        free(t->dirs[i]);
    free(t->dirs);
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->mu);
    free(t);
    return NULL;
}

/* A remover thread that holds at most limit trees at once, or NULL (trees
 * are then removed where they are). */
static struct trash *trash_new(size_t limit)
{
    struct trash *t = xcalloc(1, sizeof(*t));
    t->limit = limit;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cond, NULL);
    pthread_t th;
    if (pthread_create(&th, NULL, trash_main, t) != 0) {
        pthread_cond_destroy(&t->cond);
        pthread_mutex_destroy(&t->mu);
        free(t);
        return NULL;
    }
    pthread_setname_np(th, "quern-trash");
    pthread_detach(th);
    return t;
}

static void trash_stop(struct trash *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->mu);
}

/* Asks the thread to empty <work_root>/.trash (once, however often asked). */
static void trash_empty(struct trash *t, const char *work_root)
{
    if (!t)
        return;
    char *dir = xasprintf("%s/.trash", work_root);
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->dirs[i], dir) == 0) {
            free(dir);
            dir = NULL;
            break;
        }
    if (dir) {
        if (t->n == t->cap) {
            t->cap = t->cap ? t->cap * 2 : 4;
            t->dirs = xrealloc(t->dirs, t->cap * sizeof(char *));
        }
        t->dirs[t->n++] = dir;
        pthread_cond_signal(&t->cond);
    }
    pthread_mutex_unlock(&t->mu);
}

/* Moves dir (scratch/ or out/ of the slot directory slotdir, a box's, dead)
 * into the trash when it holds more than TRASH_OVER_ENTRIES entries, for
 * the trash thread to remove.  0 when it was moved, else -errno (then it is
 * emptied where it is).  While the trash holds one tree per cell already,
 * trees are emptied in place again: boxes that each leave a big tree must
 * not pile up more on the disk than live boxes could hold. */
static int trash_aside(struct exec *ex, const char *slotdir, const char *dir)
{
    if (!ex->trash)
        return -ENOSYS;
    struct tree_usage u = {0};
    if (!tree_usage(dir, TREE_FILES, TRASH_OVER_ENTRIES, 0, &u) && !u.too_deep)
        return -EAGAIN;   /* small: emptied in place, at once */
    const char *slash = strrchr(slotdir, '/');
    if (!slash || slash == slotdir)
        return -EINVAL;
    pthread_mutex_lock(&ex->trash->mu);
    bool full = ex->trash->pending >= ex->trash->limit;
    if (!full)
        ex->trash->pending++;
    pthread_mutex_unlock(&ex->trash->mu);
    if (full)
        return -EBUSY;
    char *root = xstrndup(slotdir, (size_t)(slash - slotdir));
    char *tdir = xasprintf("%s/.trash", root);
    char id[ID_LEN];
    id_new("t", id);
    char *dest = xasprintf("%s/%s", tdir, id + 2);
    int rc = 0;
    if (mkdir(tdir, 0700) < 0 && errno != EEXIST)
        rc = -errno;
    if (rc == 0 && rename(dir, dest) < 0)
        rc = -errno;
    if (rc == 0) {
        trash_empty(ex->trash, root);
    } else {
        pthread_mutex_lock(&ex->trash->mu);
        ex->trash->pending--;
        pthread_mutex_unlock(&ex->trash->mu);
    }
    free(dest);
    free(tdir);
    free(root);
    return rc;
}

/* The usual case after a short run: scratch/ empty, out/ holding only an
 * empty artifacts/, owners and modes unchanged.  Looking costs a few
 * reads; emptying and remaking would cost inode changes on the host. */
static bool dirs_pristine(uid_t uid, const char *scratch, const char *outdir)
{
    if (!dir_pristine(AT_FDCWD, scratch, uid, NULL, NULL))
        return false;
    int ofd = -1;
    if (!dir_pristine(AT_FDCWD, outdir, uid, "artifacts", &ofd))
        return false;
    bool ok = dir_pristine(ofd, "artifacts", uid, NULL, NULL);
    close(ofd);
    return ok;
}

/* Puts the slot's directories in their pristine state: existing, empty,
 * owned by the sandbox uid, mode 0755 (a box may have chmod'ed them). */
static int reset_dirs(struct exec *ex, const char *slotdir, const char *scratch,
                      const char *outdir)
{
    uid_t uid = sandbox_host_uid(ex->sys);
    if (dirs_pristine(uid, scratch, outdir))
        return 0;
    (void)trash_aside(ex, slotdir, scratch);
    (void)trash_aside(ex, slotdir, outdir);
    char *art = xasprintf("%s/artifacts", outdir);
    int rc = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        rc = 0;
        if (mkdir(slotdir, 0711) < 0 && errno != EEXIST)
            rc = -errno;
        if (rc == 0)
            rc = mkdir_owned(scratch, 0755, uid);
        if (rc == 0)
            rc = mkdir_owned(outdir, 0755, uid);
        if (rc == 0 && (empty_dir(scratch) < 0 || empty_dir(outdir) < 0))
            rc = -ENOTEMPTY;
        if (rc == 0 && (chmod(scratch, 0755) < 0 || chmod(outdir, 0755) < 0))
            rc = -errno;
        if (rc == 0)
            rc = mkdir_owned(art, 0755, uid);
        if (rc == 0 || attempt == 1)
            break;
        /* Something would not go: move the whole slot dir aside, start anew. */
        char id[ID_LEN];
        id_new("t", id);
        char *trash = xasprintf("%s.trash-%s", slotdir, id + 2);
        if (rename(slotdir, trash) == 0)
            rm_tree(trash);
        free(trash);
    }
    free(art);
    return rc;
}

static int reset_slot_dirs(struct exec *ex, struct run *r)
{
    return reset_dirs(ex, r->slotdir, r->scratch, r->outdir);
}

static void cell_paths(const char *work_root, int cell, char **slotdir, char **scratch,
                       char **outdir)
{
    *slotdir = xasprintf("%s/.slot-%d", work_root, cell);
    *scratch = xasprintf("%s/scratch", *slotdir);
    *outdir = xasprintf("%s/out", *slotdir);
}

/* Makes the cell's directories pristine under work_root (usually they are
 * already: emptied after the cell's previous box); marks them in use. */
static int cell_dirs(struct exec *ex, int cell, const char *work_root, const char *slotdir,
                     const char *scratch, const char *outdir, char **why)
{
    if (mkdir(work_root, 0711) < 0 && errno != EEXIST) {
        int e = errno;
        *why = xasprintf("work_root %s: %s", work_root, strerror(e));
        return -e;
    }
    int rc = 0;
    if (!ex->clean_root[cell] || strcmp(ex->clean_root[cell], work_root) != 0)
        rc = reset_dirs(ex, slotdir, scratch, outdir);
    free(ex->clean_root[cell]);
    ex->clean_root[cell] = NULL;
    if (rc < 0)
        *why = xasprintf("preparing the run's directories: %s", strerror(-rc));
    return rc;
}

static int cell_take(struct exec *ex)
{
    for (int i = 0; i < ex->ncells; i++)
        if (!ex->cell_busy[i]) {
            ex->cell_busy[i] = true;
            return i;
        }
    return -1;
}

/* Empties the cell's directories (the box in it is dead) and frees it. */
static void cell_release(struct exec *ex, int cell, const char *work_root)
{
    if (cell < 0)
        return;
    if (work_root) {
        char *sd, *sc, *od;
        cell_paths(work_root, cell, &sd, &sc, &od);
        free(ex->clean_root[cell]);
        ex->clean_root[cell] = reset_dirs(ex, sd, sc, od) == 0 ? xstrdup(work_root) : NULL;
        free(sd);
        free(sc);
        free(od);
    }
    ex->cell_busy[cell] = false;
}

/* Storage access.  One inotify instance watches the storage directories of
 * every live run (an instance per run, or per cell, ran into the host's
 * fs.inotify.max_user_instances, 128 by default, with several quernd on one
 * host).  Runs of the same instance share its watch (inotify gives one
 * watch per directory and instance), counted in st_refs; an event on a
 * watch marks every run holding it at that moment, which is what "used
 * while the run lived" means when two runs share a directory.  Events are
 * read as they come (K_INOTIFY) and before any run starts or stops
 * watching, so each lands on the runs that held the watch when it came. */

/* The events a watch asks for: those that would tell one of the runs
 * holding it something it has not seen yet.  A watch whose holders have all
 * seen both kinds of use asks for one that never comes (its directory is a
 * mount point in every box: never deleted).  An event marks every holder,
 * so a watch goes quiet after its first open and its first other use, until
 * a new run takes it.  Asking for everything always made quernd read an
 * event per read(2) a box made at the top of its storage (a CPU of quernd's
 * for a CPU of the box's), and a few such boxes overflowed the shared queue:
 * an overflow counts as every use of every run, of every project. */
#define ST_ACCESS_EVENTS (IN_ALL_EVENTS & ~(uint32_t)(IN_OPEN | IN_CLOSE_NOWRITE))
#define ST_ALL_EVENTS (IN_OPEN | ST_ACCESS_EVENTS)
#define ST_NO_EVENTS IN_DELETE_SELF

static uint32_t st_wanted(const struct exec *ex, int wd)
{
    uint32_t m = 0;
    for (int s = 0; s < ex->slots; s++) {
        const struct run *r = &ex->runs[s];
        if (!r->active || !r->st_watch)
            continue;
        for (int i = 0; i < 3; i++) {
            if (r->st_wd[i] != wd)
                continue;
            if (!(r->st_use[i] & EXEC_ST_OPENED))
                m |= IN_OPEN;
            if (!(r->st_use[i] & EXEC_ST_ACCESSED))
                m |= ST_ACCESS_EVENTS;
        }
    }
    return m ? m : ST_NO_EVENTS;
}

/* Narrows each watch to what its holders still want (after they saw events). */
static void storage_narrow(struct exec *ex)
{
    for (size_t k = 0; k < ex->nst_refs; k++) {
        struct st_ref *ref = &ex->st_refs[k];
        uint32_t m = st_wanted(ex, ref->wd);
        if (m == ref->mask)
            continue;
        /* the same inode: the kernel replaces the watch's mask, same wd */
        int wd = inotify_add_watch(ex->st_inotify, ref->path, m | IN_ONLYDIR);
        if (wd == ref->wd)
            ref->mask = m;
        else if (wd >= 0)
            inotify_rm_watch(ex->st_inotify, wd);   /* not the directory it was */
    }
}

static void storage_events(struct exec *ex)
{
    char b[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    ssize_t n;
    bool learned = false;
    while (ex->st_inotify >= 0 && (n = read(ex->st_inotify, b, sizeof b)) > 0) {
        for (char *p = b; p < b + n;) {
            const struct inotify_event *e = (const struct inotify_event *)p;
            for (int s = 0; s < ex->slots; s++) {
                struct run *r = &ex->runs[s];
                if (!r->active || !r->st_watch)
                    continue;
                /* an overflow lost events: count it as every use */
                unsigned use = e->mask & IN_Q_OVERFLOW ? EXEC_ST_OPENED | EXEC_ST_ACCESSED
                               : (e->mask & IN_OPEN ? EXEC_ST_OPENED : 0) |
                                     (e->mask & ~(uint32_t)(IN_OPEN | IN_CLOSE_NOWRITE | IN_ISDIR |
                                                            IN_IGNORED)
                                          ? EXEC_ST_ACCESSED
                                          : 0);
                for (int i = 0; i < 3; i++)
                    if (r->st_wd[i] >= 0 && (e->mask & IN_Q_OVERFLOW || e->wd == r->st_wd[i]) &&
                        (r->st_use[i] | use) != r->st_use[i]) {
                        r->st_use[i] |= use;
                        learned = true;
                    }
            }
            p += sizeof(*e) + e->len;
        }
    }
    if (learned)
        storage_narrow(ex);
}

static struct st_ref *st_ref_find(struct exec *ex, int wd)
{
    for (size_t i = 0; i < ex->nst_refs; i++)
        if (ex->st_refs[i].wd == wd)
            return &ex->st_refs[i];
    return NULL;
}

/* Watches the run's storage directories from now to its end (see
 * storage_release); a failure only means nothing is reported. */
static void watch_storage(struct exec *ex, struct run *r)
{
    const char *st[3] = {r->st_account, r->st_project, r->st_org};
    if (r->st_watch || (!st[0] && !st[1] && !st[2]))
        return;
    if (ex->st_inotify < 0) {
        int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (fd < 0) {
            if (!ex->st_warned) {   /* said once; later runs try again */
                char *m = xasprintf("storage access cannot be watched (inotify: %s): runs "
                                    "record \"provided\" only", strerror(errno));
                notice(ex, m);
                free(m);
                ex->st_warned = true;
            }
            return;
        }
        ex->st_inotify = fd;
        ep_add(ex, fd, 0, K_INOTIFY, EPOLLIN);
    }
    storage_events(ex); /* what came before: not this run's */
    for (int i = 0; i < 3; i++) {
        r->st_use[i] = 0;
        /* everything again: this run has seen nothing yet */
        r->st_wd[i] = st[i] ? inotify_add_watch(ex->st_inotify, st[i], ST_ALL_EVENTS | IN_ONLYDIR)
                            : -1;
        if (r->st_wd[i] < 0)
            continue;
        struct st_ref *ref = st_ref_find(ex, r->st_wd[i]);
        if (!ref) {
            if (ex->nst_refs == ex->cap_st_refs) {
                ex->cap_st_refs = ex->cap_st_refs ? 2 * ex->cap_st_refs : 16;
                ex->st_refs = xrealloc(ex->st_refs, ex->cap_st_refs * sizeof(*ex->st_refs));
            }
            ref = &ex->st_refs[ex->nst_refs++];
            *ref = (struct st_ref){r->st_wd[i], 0, 0, xstrdup(st[i])};
        }
        ref->mask = ST_ALL_EVENTS;
        ref->refs++;
    }
    r->st_watch = true;
}

/* The run's end: which watched storage directories saw an event while it
 * lived (events read up to now), then it lets go of its watches; the last
 * run holding one removes it. */
static void storage_release(struct exec *ex, struct run *r, struct exec_result *res)
{
    if (!r->st_watch)
        return;
    storage_events(ex);
    for (int i = 0; i < 3; i++) {
        res->storage_use[i] = r->st_use[i];
        struct st_ref *ref = r->st_wd[i] >= 0 ? st_ref_find(ex, r->st_wd[i]) : NULL;
        if (ref && --ref->refs == 0) {
            inotify_rm_watch(ex->st_inotify, ref->wd);
            free(ref->path);
            *ref = ex->st_refs[--ex->nst_refs];
        }
        r->st_wd[i] = -1;
    }
    r->st_watch = false;
}

/* The storage directories exist and belong to the box's root. */
static int storage_dirs(struct exec *ex, struct run *r)
{
    uid_t uid = sandbox_host_uid(ex->sys);
    int rc = 0;
    const char *st[3] = {r->st_account, r->st_project, r->st_org};
    for (int i = 0; rc == 0 && i < 3; i++) {
        if (!st[i])
            continue;
        struct stat sb;
        if (lstat(st[i], &sb) == 0 && S_ISDIR(sb.st_mode) && sb.st_uid == uid && sb.st_gid == uid)
            continue;   /* as a previous run left it: a chown would still journal its inode */
        if (stat(st[i], &sb) < 0) {
            if (mkdir(st[i], 0755) < 0 && errno != EEXIST)
                rc = -errno;
        }
        if (rc == 0 && chown(st[i], uid, uid) < 0)
            rc = -errno;
    }
    if (rc == 0)
        watch_storage(ex, r);
    return rc;
}

static int prepare_dirs(struct exec *ex, struct run *r, char **why)
{
    cell_paths(r->work_root, r->cell, &r->slotdir, &r->scratch, &r->outdir);
    int rc = cell_dirs(ex, r->cell, r->work_root, r->slotdir, r->scratch, r->outdir, why);
    if (rc == 0 && (rc = storage_dirs(ex, r)) < 0)
        *why = xasprintf("preparing the run's directories: %s", strerror(-rc));
    return rc;
}

/* The run's environment (iteration r->iteration); frees nothing: the
 * caller clears and frees the entries.  cap is ENV_MAX: every secret has
 * room (a cap of 64 dropped the secrets past the 48th or so without a
 * word). */
static size_t build_env(const struct run *r, char **envv, size_t cap)
{
    size_t nenv = 0;
    envv[nenv++] = xstrdup("PATH=/usr/local/bin:/usr/bin:/bin");
    envv[nenv++] = xstrdup("HOME=/scratch");
    envv[nenv++] = xstrdup("LANG=C.UTF-8");
    envv[nenv++] = xstrdup("TMPDIR=/tmp");
    envv[nenv++] = xstrdup("QUERN_INPUT=/quern/input.json");
    envv[nenv++] = xstrdup("QUERN_OUTPUT=/quern/out/output.json");
    envv[nenv++] = xstrdup("QUERN_ARTIFACTS=/quern/out/artifacts");
    if (r->checkpoint_json)
        envv[nenv++] = xstrdup("QUERN_CHECKPOINT=/quern/checkpoint.json");
    if (r->st_account)
        envv[nenv++] = xstrdup("QUERN_STORAGE_ACCOUNT=/storage/account");
    if (r->st_project)
        envv[nenv++] = xstrdup("QUERN_STORAGE_PROJECT=/storage/project");
    if (r->st_org)
        envv[nenv++] = xstrdup("QUERN_STORAGE_ORG=/storage/org");
    envv[nenv++] = xasprintf("QUERN_RUN_ID=%s", r->run_id);
    envv[nenv++] = xasprintf("QUERN_TASK_ID=%s", r->task_id ? r->task_id : "");
    envv[nenv++] = xasprintf("QUERN_PROJECT_ID=%s", r->project_id ? r->project_id : "");
    envv[nenv++] = xasprintf("QUERN_ATTEMPT=%d", r->attempt);
    envv[nenv++] = xasprintf("QUERN_ITERATION=%d", r->iteration);
    envv[nenv++] = xstrdup("QUERN_CONTROL_FD=3");
    if (nenv > ENV_FIXED_MAX || (r->secrets_env && nenv + r->nsecrets > cap - 1))
        abort(); /* ENV_MAX is sized for every variable: a broken invariant */
    for (size_t i = 0; r->secrets_env && i < r->nsecrets; i++)
        envv[nenv++] = xasprintf("%s=%s", r->sec_names[i], r->sec_values[i]);
    envv[nenv] = NULL;
    return nenv;
}

static void free_env(char **envv, size_t nenv)
{
    for (size_t i = 0; i < nenv; i++) {
        explicit_bzero(envv[i], strlen(envv[i]));
        free(envv[i]);
    }
}

/* Spawns the run's next iteration.  0, or negative with *why. */
static int spawn_iteration(struct exec *ex, int slot, struct run *r, char **why)
{
    uid_t uid = sandbox_host_uid(ex->sys);
    int rc = 0;
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, ctl[2] = {-1, -1}, st[2] = {-1, -1};
    char *envv[ENV_MAX];
    size_t nenv = 0;
    char *output_path = xasprintf("%s/output.json", r->outdir);
    char *script_box = xasprintf("/quern/%s", r->rt->file_name);

    r->iteration++;
    (void)unlink(output_path);
    json_decref(r->ctl_output);
    r->ctl_output = NULL;
    r->cont_req = false;
    char *input = NULL;
    if (r->iteration > 1 && r->cont_data)
        input = jdump(r->cont_data, NULL);
    const char *in_text = input ? input : (r->input_json ? r->input_json : "null");
    struct sandbox_file files[3] = {
        {"/quern/input.json", in_text, strlen(in_text)},
        {script_box, r->code, r->code_len},
        {"/quern/checkpoint.json", r->checkpoint_json, r->checkpoint_json ? strlen(r->checkpoint_json) : 0},
    };
    (void)uid;
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) ||
        pipe2(ctl, O_CLOEXEC) || pipe2(st, O_CLOEXEC)) {
        rc = -errno;
        *why = xasprintf("pipe: %s", strerror(errno));
        goto out;
    }
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(err[0], F_SETFL, O_NONBLOCK);
    fcntl(ctl[0], F_SETFL, O_NONBLOCK);
    fcntl(st[0], F_SETFL, O_NONBLOCK);

    nenv = build_env(r, envv, ARRAY_LEN(envv));

    const char *argv[RUNTIME_MAX_ARGS + 4];
    size_t na = 0;
    argv[na++] = "quern-init";
    argv[na++] = r->rt->interpreter;
    for (size_t i = 0; i < r->rt->nargs; i++)
        argv[na++] = r->rt->args[i];
    argv[na++] = script_box;
    argv[na] = NULL;

    /* scratch, out, the three storage scopes, the runtime's read-only paths */
    struct sandbox_mount m[5 + RUNTIME_MAX_PATHS];
    size_t nm = 0;
    m[nm++] = (struct sandbox_mount){r->scratch, "/scratch", true};
    m[nm++] = (struct sandbox_mount){r->outdir, "/quern/out", true};
    if (r->st_account)
        m[nm++] = (struct sandbox_mount){r->st_account, "/storage/account", true};
    if (r->st_project)
        m[nm++] = (struct sandbox_mount){r->st_project, "/storage/project", true};
    if (r->st_org)
        m[nm++] = (struct sandbox_mount){r->st_org, "/storage/org", true};
    for (size_t i = 0; i < r->rt->nro; i++)
        m[nm++] = (struct sandbox_mount){r->rt->ro_host[i], r->rt->ro_box[i], false};

    int64_t tmo = r->timeout_ms;
    struct sandbox_params p = {
        .slot = r->cell, .argv = argv, .envp = (const char *const *)envv, .mounts = m,
        .nmounts = nm, .files = files, .nfiles = r->checkpoint_json ? 3 : 2,
        .cwd = "/scratch", .nsecrets = r->nsecrets,
        .secret_names = (const char *const *)r->sec_names,
        .secret_values = (const char *const *)r->sec_values, .network = r->network,
        .memory_limit_bytes = r->mem_mb * 1024 * 1024, .max_procs = r->max_procs,
        .max_file_bytes = r->max_fsize, .max_open_files = r->max_files,
        .cpu_seconds = tmo / 1000 + 2,
        .fd_stdin = in[0], .fd_stdout = out[1], .fd_stderr = err[1], .fd_control = ctl[1],
        .fd_status = st[1],
    };
    rc = sandbox_spawn(ex->sys, &p, &r->proc, why);
    if (rc < 0)
        goto out;
    r->alive = true;
    r->started = mono_ms();
    r->last_activity = r->started;
    r->disk_check_at = r->started + DISK_CHECK_MS;
    r->disk_gen = ++ex->disk_seq;
    r->disk_busy = false;
    r->deadline = r->started + tmo;
    r->kill_at = 0;
    r->waiting_input = 0;
    r->input_flood_warned = false;
    r->in_armed = false;
    r->out.fd = out[0];
    r->err.fd = err[0];
    r->ctl.fd = ctl[0];
    r->ctl.skipping = false;
    r->fd_in = in[1];
    r->fd_status = st[0];
    out[0] = err[0] = ctl[0] = in[1] = st[0] = -1;
    ep_add(ex, r->out.fd, slot, K_OUT, EPOLLIN);
    ep_add(ex, r->err.fd, slot, K_ERR, EPOLLIN);
    ep_add(ex, r->ctl.fd, slot, K_CTL, EPOLLIN);
    ep_add(ex, r->proc.pidfd, slot, K_PID, EPOLLIN);
    flush_stdin(ex, slot, r);
out:
    free_env(envv, nenv);
    int *fds[] = {&in[0], &in[1], &out[0], &out[1], &err[0], &err[1], &ctl[0], &ctl[1], &st[0], &st[1]};
    for (size_t i = 0; i < ARRAY_LEN(fds); i++)
        if (*fds[i] >= 0)
            close(*fds[i]);
    free(input);
    free(output_path);
    free(script_box);
    return rc;
}

/* ---- warm boxes ---- */

static struct pool *pool_of(struct exec *ex, const struct runtime *rt)
{
    for (int i = 0; i < ex->npools; i++)
        if (ex->pools[i].rt == rt)
            return &ex->pools[i];
    return NULL;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Forgets a warm box whose PID 1 is dead or killed (reaps it), frees its cell. */
static void warm_drop(struct exec *ex, struct warm *w, bool kill)
{
    if (!w->live)
        return;
    ep_del(ex, w->proc.pidfd);
    if (kill)
        sandbox_signal(&w->proc, SIGKILL);
    int ws;
    struct sandbox_usage u;
    (void)sandbox_reap(ex->sys, &w->proc, &ws, &u);
    int *fds[] = {&w->fd_in, &w->fd_out, &w->fd_err, &w->fd_ctl, &w->fd_status, &w->fd_go};
    for (size_t i = 0; i < ARRAY_LEN(fds); i++)
        close_fd(fds[i]);
    cell_release(ex, w->cell, ex->warm_root);
    struct pool *pl = pool_of(ex, w->rt);
    if (pl)
        pl->live--;
    w->live = false;
}

/* A warm box died before any run took it. */
static void warm_died(struct exec *ex, struct warm *w)
{
    char st[256] = "";
    if (w->fd_status >= 0) {
        ssize_t n = read(w->fd_status, st, sizeof(st) - 1);
        st[n > 0 ? n : 0] = '\0';
        st[strcspn(st, "\n")] = '\0';
    }
    char err[512] = "";
    if (w->fd_err >= 0) {
        ssize_t n = read(w->fd_err, err, sizeof(err) - 1);
        err[n > 0 ? n : 0] = '\0';
        for (char *p = err; *p; p++)
            if (*p == '\n')
                *p = ' ';
    }
    struct pool *pl = pool_of(ex, w->rt);
    bool young = mono_ms() - w->born < WARM_YOUNG_MS;
    if (pl && young) {
        pl->fails++;
        int64_t backoff = (int64_t)1000 << (pl->fails < 6 ? pl->fails : 5);
        pl->retry_at = mono_ms() + backoff;
        if (pl->fails == 1 || pl->fails % 10 == 0) {
            char *m = xasprintf("warm %s box died at start (%s%s%s); runs of %s start cold, "
                                "retrying in %lld s", w->rt->id, st[0] ? st : "no status",
                                err[0] ? ": " : "", err, w->rt->id, (long long)backoff / 1000);
            notice(ex, m);
            free(m);
        }
    } else if (pl) {
        pl->fails = 0;
    }
    warm_drop(ex, w, false);
}

/* Starts one warm box of pool pl in a free cell.  0 or negative. */
static int warm_spawn(struct exec *ex, struct pool *pl)
{
    struct warm *w = NULL;
    for (int i = 0; i < ex->nwarm; i++)
        if (!ex->warm[i].live) {
            w = &ex->warm[i];
            break;
        }
    if (!w)
        return -ENOSPC;
    int cell = cell_take(ex);
    if (cell < 0)
        return -ENOSPC;
    const struct runtime *rt = pl->rt;
    char *why = NULL, *sd, *sc, *od;
    cell_paths(ex->warm_root, cell, &sd, &sc, &od);
    int rc = cell_dirs(ex, cell, ex->warm_root, sd, sc, od, &why);
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, ctl[2] = {-1, -1}, st[2] = {-1, -1},
        go[2] = {-1, -1};
    if (rc == 0 && (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) ||
                    pipe2(ctl, O_CLOEXEC) || pipe2(st, O_CLOEXEC) || pipe2(go, O_CLOEXEC))) {
        rc = -errno;
        why = xasprintf("pipe: %s", strerror(errno));
    }
    if (rc == 0) {
        fcntl(in[1], F_SETFL, O_NONBLOCK);
        fcntl(out[0], F_SETFL, O_NONBLOCK);
        fcntl(err[0], F_SETFL, O_NONBLOCK);
        fcntl(ctl[0], F_SETFL, O_NONBLOCK);
        fcntl(st[0], F_SETFL, O_NONBLOCK);
        /* The interpreter starts with the part of a run's environment that
         * every run shares; the loader sets the rest. */
        const char *envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/scratch",
                              "LANG=C.UTF-8", "TMPDIR=/tmp", NULL};
        const char *argv[RUNTIME_MAX_ARGS + 8];
        size_t na = 0;
        argv[na++] = "quern-init";
        argv[na++] = rt->interpreter;
        na += runtime_warm_args(rt, argv + na, ARRAY_LEN(argv) - 1 - na);
        argv[na] = NULL;
        struct sandbox_mount m[2 + RUNTIME_MAX_PATHS];
        size_t nm = 0;
        m[nm++] = (struct sandbox_mount){sc, "/scratch", true};
        m[nm++] = (struct sandbox_mount){od, "/quern/out", true};
        for (size_t i = 0; i < rt->nro; i++)
            m[nm++] = (struct sandbox_mount){rt->ro_host[i], rt->ro_box[i], false};
        static const char *const dirs[] = {"/storage/account", "/storage/project", "/storage/org"};
        struct sandbox_params p = {
            .slot = cell, .argv = argv, .envp = envp, .mounts = m, .nmounts = nm,
            .dirs = dirs, .ndirs = ARRAY_LEN(dirs), .root_bytes = WARM_ROOT_BYTES,
            .cwd = "/scratch", .network = false,
            /* until a run takes it: the defaults of a run */
            .memory_limit_bytes = (int64_t)256 << 20, .max_procs = 64,
            .max_file_bytes = (int64_t)64 << 20, .max_open_files = 256, .cpu_seconds = 3600,
            .fd_stdin = in[0], .fd_stdout = out[1], .fd_stderr = err[1], .fd_control = ctl[1],
            .fd_status = st[1], .fd_go = go[0],
            /* its start-up takes only CPU that runs leave idle */
            .nice = 19,
        };
        rc = sandbox_spawn(ex->sys, &p, &w->proc, &why);
    }
    if (rc < 0) {
        pl->fails++;
        pl->retry_at = mono_ms() + ((int64_t)1000 << (pl->fails < 6 ? pl->fails : 5));
        if (pl->fails == 1) {
            char *m = xasprintf("could not start a warm %s box: %s", rt->id, why ? why : "?");
            notice(ex, m);
            free(m);
        }
        int *fds[] = {&in[0], &in[1], &out[0], &out[1], &err[0], &err[1], &ctl[0], &ctl[1],
                      &st[0], &st[1], &go[0], &go[1]};
        for (size_t i = 0; i < ARRAY_LEN(fds); i++)
            close_fd(fds[i]);
        cell_release(ex, cell, ex->warm_root);
        goto out;
    }
    w->live = true;
    w->rt = rt;
    w->cell = cell;
    w->born = mono_ms();
    w->fd_in = in[1];
    w->fd_out = out[0];
    w->fd_err = err[0];
    w->fd_ctl = ctl[0];
    w->fd_status = st[0];
    w->fd_go = go[1];
    close(in[0]);
    close(out[1]);
    close(err[1]);
    close(ctl[1]);
    close(st[1]);
    close(go[0]);
    pl->live++;
    ep_add(ex, w->proc.pidfd, (int)(w - ex->warm), K_WARM, EPOLLIN);
out:
    free(why);
    free(sd);
    free(sc);
    free(od);
    return rc;
}

/* Starts at most one warm box; true when a pool is still short. */
static bool warm_refill(struct exec *ex)
{
    if (!ex->warm_root)
        return false;
    int64_t now = mono_ms();
    if (now < ex->refill_after)
        return true;
    bool short_one = false, spawned = false;
    for (int i = 0; i < ex->npools; i++) {
        struct pool *pl = &ex->pools[i];
        if (pl->live >= pl->target || now < pl->retry_at)
            continue;
        if (spawned) {
            short_one = true;
            break;
        }
        if (!runtime_available(pl->rt)) {
            pl->retry_at = now + 30000;
            continue;
        }
        spawned = true;
        if (warm_spawn(ex, pl) == 0 && pl->live < pl->target)
            short_one = true;
    }
    return short_one;
}

/* The earliest backoff end of a short pool, or -1. */
static int64_t warm_next_retry(struct exec *ex)
{
    int64_t next = -1;
    for (int i = 0; ex->warm_root && i < ex->npools; i++) {
        struct pool *pl = &ex->pools[i];
        if (pl->live < pl->target && (next < 0 || pl->retry_at < next))
            next = pl->retry_at;
    }
    return next;
}

/* A live warm box for r, or NULL. */
static struct warm *warm_find(struct exec *ex, const struct run *r)
{
    if (r->network || r->nsecrets > 0 || !ex->warm_root || strcmp(ex->warm_root, r->work_root))
        return NULL;
    for (int i = 0; i < ex->nwarm; i++)
        if (ex->warm[i].live && ex->warm[i].rt == r->rt)
            return &ex->warm[i];
    return NULL;
}

/* Runs r's first iteration in warm box w.  0, or negative with *why (w is
 * then gone and r has no cell). */
static int warm_start(struct exec *ex, int slot, struct run *r, struct warm *w, char **why)
{
    r->cell = w->cell;
    cell_paths(r->work_root, r->cell, &r->slotdir, &r->scratch, &r->outdir);
    int rc = storage_dirs(ex, r);
    if (rc < 0) {
        *why = xasprintf("preparing the run's directories: %s", strerror(-rc));
        goto fail;
    }
    r->iteration = 1;
    char *script_box = xasprintf("/quern/%s", r->rt->file_name);
    const char *in_text = r->input_json ? r->input_json : "null";
    struct sandbox_file files[3] = {
        {"/quern/input.json", in_text, strlen(in_text)},
        {script_box, r->code, r->code_len},
        {"/quern/checkpoint.json", r->checkpoint_json,
         r->checkpoint_json ? strlen(r->checkpoint_json) : 0},
    };
    struct sandbox_mount m[3];
    size_t nm = 0;
    if (r->st_account)
        m[nm++] = (struct sandbox_mount){r->st_account, "/storage/account", true};
    if (r->st_project)
        m[nm++] = (struct sandbox_mount){r->st_project, "/storage/project", true};
    if (r->st_org)
        m[nm++] = (struct sandbox_mount){r->st_org, "/storage/org", true};
    struct sandbox_adopt a = {
        .mounts = m, .nmounts = nm, .files = files, .nfiles = r->checkpoint_json ? 3 : 2,
        .memory_limit_bytes = r->mem_mb * 1024 * 1024, .max_procs = r->max_procs,
        .max_file_bytes = r->max_fsize, .max_open_files = r->max_files,
        .cpu_seconds = r->timeout_ms / 1000 + 2,
    };
    rc = sandbox_adopt(ex->sys, &w->proc, &a, why);
    if (rc == 0) {
        /* the go message: the script's path, then the environment */
        char *envv[ENV_MAX];
        size_t nenv = build_env(r, envv, ARRAY_LEN(envv));
        struct buf msg;
        buf_init(&msg);
        buf_append(&msg, script_box, strlen(script_box) + 1);
        for (size_t i = 0; i < nenv; i++)
            buf_append(&msg, envv[i], strlen(envv[i]) + 1);
        free_env(envv, nenv);
        size_t off = 0;
        while (off < msg.len) {
            ssize_t n = write(w->fd_go, msg.data + off, msg.len - off);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                rc = n < 0 ? -errno : -EIO;
                *why = xasprintf("the warm box's loader is gone: %s", strerror(-rc));
                break;
            }
            off += (size_t)n;
        }
        explicit_bzero(msg.data, msg.len);
        buf_release(&msg);
        if (rc < 0) {
            /* EPIPE: eat the SIGPIPE we blocked */
            sigset_t ss;
            sigemptyset(&ss);
            sigaddset(&ss, SIGPIPE);
            struct timespec zero = {0, 0};
            (void)sigtimedwait(&ss, NULL, &zero);
        }
    }
    free(script_box);
    if (rc < 0)
        goto fail;
    close_fd(&w->fd_go);
    /* the box is the run's now */
    ep_del(ex, w->proc.pidfd);
    struct pool *pl = pool_of(ex, w->rt);
    if (pl)
        pl->live--;
    r->proc = w->proc;
    r->out.fd = w->fd_out;
    r->err.fd = w->fd_err;
    r->ctl.fd = w->fd_ctl;
    r->ctl.skipping = false;
    r->fd_in = w->fd_in;
    r->fd_status = w->fd_status;
    memset(w, 0, sizeof(*w));
    w->fd_in = w->fd_out = w->fd_err = w->fd_ctl = w->fd_status = w->fd_go = -1;
    w->proc.pidfd = -1;
    r->warm = true;
    __atomic_add_fetch(&ex->n_warm_starts, 1, __ATOMIC_RELAXED);
    /* a spawn now would hold this thread while the run's first lines come */
    ex->refill_after = mono_ms() + WARM_REFILL_DELAY_MS;
    r->alive = true;
    r->started = mono_ms();
    r->last_activity = r->started;
    r->disk_check_at = r->started + DISK_CHECK_MS;
    r->disk_gen = ++ex->disk_seq;
    r->disk_busy = false;
    r->deadline = r->started + r->timeout_ms;
    r->kill_at = 0;
    r->waiting_input = 0;
    r->input_flood_warned = false;
    r->in_armed = false;
    ep_add(ex, r->out.fd, slot, K_OUT, EPOLLIN);
    ep_add(ex, r->err.fd, slot, K_ERR, EPOLLIN);
    ep_add(ex, r->ctl.fd, slot, K_CTL, EPOLLIN);
    ep_add(ex, r->proc.pidfd, slot, K_PID, EPOLLIN);
    flush_stdin(ex, slot, r);
    return 0;
fail:
    warm_drop(ex, w, true);   /* releases the cell */
    r->cell = -1;
    r->iteration = 0;
    free(r->slotdir);
    free(r->scratch);
    free(r->outdir);
    r->slotdir = r->scratch = r->outdir = NULL;
    return rc;
}

static void start_run(struct exec *ex, int slot, struct run *spec)
{
    struct run *r = &ex->runs[slot];
    *r = *spec;
    free(spec);
    r->active = true;
    r->cell = -1;
    r->out.fd = r->err.fd = r->ctl.fd = r->fd_in = r->fd_status = -1;
    r->proc.pidfd = -1;
    if (!runtime_available(r->rt)) {
        char *msg = xasprintf("runtime %s is unavailable on this host (%s not found%s)", r->rt->id,
                              r->rt->interpreter,
                              strcmp(r->rt->id, "ts") == 0 ? " or sucrase not installed" : "");
        struct exec_result *res = new_result("failed", "runtime_unavailable", msg);
        free(msg);
        finish(ex, slot, r, res);
        return;
    }
    char *why = NULL;
    struct warm *w = warm_find(ex, r);
    if (w) {
        if (warm_start(ex, slot, r, w, &why) == 0)
            return;
        char *m = xasprintf("a warm %s box could not take run %s (%s); it starts cold",
                            r->rt->id, r->run_id, why ? why : "?");
        notice(ex, m);
        free(m);
        free(why);
        why = NULL;
    }
    r->cell = cell_take(ex);
    if (r->cell < 0)
        die_invariant("invariant 1: cells >= runs + warm boxes");
    __atomic_add_fetch(&ex->n_cold_starts, 1, __ATOMIC_RELAXED);
    int rc = prepare_dirs(ex, r, &why);
    if (rc == 0)
        rc = spawn_iteration(ex, slot, r, &why);
    if (rc < 0) {
        struct exec_result *res = new_result("failed", "sandbox_error", why);
        free(why);
        finish(ex, slot, r, res);
    }
}

/* What collect_dir left behind, by reason, for the run's log: an artifact
 * that is not stored without a word looks like a bug in the user's code. */
enum skip_reason { AS_COUNT, AS_LINK, AS_TYPE, AS_LINKED, AS_BYTES, AS_NAME, AS_DEPTH, AS_N };

struct skipped {
    size_t n[AS_N];
    char *example[AS_N];   /* the first name skipped for that reason */
};

static void skip_note(struct skipped *sk, enum skip_reason why, const char *name)
{
    if (sk->n[why]++ == 0)
        sk->example[why] = xstrdup(name);
}

static bool artifact_taken(const void *res, const char *name)
{
    const struct exec_result *r = res;
    for (size_t i = 0; i < r->nartifacts; i++)
        if (!strcmp(r->artifacts[i].name, name))
            return true;
    return false;
}

/* A name an upload could have: blob_name_ok, and UTF-8 (a JSON string or a
 * query value is; a name that is not cannot be stored in the manifest). */
static bool artifact_name_ok(const char *name)
{
    char *clean = utf8_clean(name, strlen(name));
    bool utf8 = !clean;   /* NULL: nothing to clean (read before the free) */
    free(clean);
    return utf8 && blob_name_ok(name);
}

/* Moves every acceptable artifact into out/, recursively; see invariant 4. */
static void collect_dir(struct run *r, int dfd, const char *prefix, int depth, int outfd,
                        struct exec_result *res, int64_t *total, const char *outdir,
                        struct skipped *sk)
{
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *name = prefix ? xasprintf("%s/%s", prefix, e->d_name) : xstrdup(e->d_name);
        if (res->nartifacts >= ARTIFACTS_MAX_COUNT) {
            skip_note(sk, AS_COUNT, name);
            free(name);
            break;
        }
        int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        struct stat sb;
        if (fd < 0 || fstat(fd, &sb) < 0) {
            if (fd >= 0)
                close(fd);
            else if (errno == ELOOP)
                skip_note(sk, AS_LINK, name);
            free(name);
            continue;
        }
        if (S_ISDIR(sb.st_mode)) {
            if (depth < ARTIFACTS_MAX_DEPTH)
                collect_dir(r, fd, name, depth + 1, outfd, res, total, outdir, sk);
            else {
                close(fd);
                skip_note(sk, AS_DEPTH, name);
            }
            free(name);
            continue;
        }
        close(fd);
        enum skip_reason why = !S_ISREG(sb.st_mode)                         ? AS_TYPE
                               : sb.st_nlink != 1                           ? AS_LINKED
                               : *total + sb.st_size > ARTIFACTS_MAX_BYTES ? AS_BYTES
                               : !artifact_name_ok(name) ? AS_NAME /* an upload could not have it */
                                                     : AS_N;
        if (why != AS_N) {
            skip_note(sk, why, name);
            free(name);
            continue;
        }
        char stored[32];
        snprintf(stored, sizeof(stored), "%zu", res->nartifacts);
        if (renameat(dirfd(d), e->d_name, outfd, stored) < 0) {
            free(name);
            continue;
        }
        *total += sb.st_size;
        if (has_secrets(r)) { /* names reach the manifest and the events */
            char *red = redact(r, name, strlen(name));
            /* hidden, it may be another file's name ("k-<secret>" beside
             * "k-***"): " (2)", " (3)", ... so that neither is lost */
            char *uniq = free_name(red, artifact_taken, res);
            free(red);
            free(name);
            name = uniq;
        }
        res->artifacts = xrealloc(res->artifacts, (res->nartifacts + 1) * sizeof(*res->artifacts));
        struct exec_artifact *a = &res->artifacts[res->nartifacts++];
        a->name = name;
        a->path = xasprintf("%s/%s", outdir, stored);
        a->size = sb.st_size;
    }
    closedir(d);
}

/* One warning in the run's log naming what was not stored and why. */
static void skip_report(struct exec *ex, struct run *r, struct skipped *sk)
{
    static const char *const what[AS_N] = {
        [AS_LINK] = "symbolic links",
        [AS_TYPE] = "not regular files",
        [AS_LINKED] = "hard links (a file with more than one name)",
        [AS_BYTES] = "over 1 GiB of artifacts in all",
        [AS_NAME] = "names an upload could not have",
        [AS_DEPTH] = "directories nested deeper than " STR(ARTIFACTS_MAX_DEPTH) " levels",
    };
    struct buf b;
    buf_init(&b);
    if (sk->n[AS_COUNT]) {
        buf_printf(&b, "more than " STR(ARTIFACTS_MAX_COUNT) " files (the first past the "
                   "limit: %s; the rest was not looked at)", sk->example[AS_COUNT]);
        free(sk->example[AS_COUNT]);
    }
    for (int i = AS_COUNT + 1; i < AS_N; i++) {
        if (!sk->n[i])
            continue;
        buf_printf(&b, "%s%zu %s (first: %s)", b.len ? "; " : "", sk->n[i], what[i],
                   sk->example[i]);
        free(sk->example[i]);
    }
    if (b.len) {
        char *msg = xasprintf("artifacts not stored: %s", b.data);
        warn_quoting(ex, r, msg);   /* the names are the box's */
        free(msg);
    }
    buf_release(&b);
}

/* True when the directory open at fd has an entry besides . and ..; the
 * fd's offset is back at the start after. */
static bool dir_has_entries(int fd)
{
    bool any = !dir_holds_only(fd, NULL);
    (void)lseek(fd, 0, SEEK_SET);
    return any;
}

/* qfd: the run's out directory (the caller's). */
static void collect_artifacts(struct exec *ex, struct run *r, int qfd, struct exec_result *res)
{
    if (qfd < 0)
        return;
    int afd = openat(qfd, "artifacts", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (afd < 0) {
        if (errno == ELOOP || errno == ENOTDIR)
            run_warn(ex, r, "artifacts not stored: QUERN_ARTIFACTS was replaced by something "
                            "other than a directory (a symbolic link?)");
        return;
    }
    /* Most runs leave none: look before making a directory for them (raw
     * getdents: readdir's stream would allocate 32 KiB per run). */
    if (!dir_has_entries(afd)) {
        close(afd);
        return;
    }
    char id[ID_LEN];
    id_new("a", id);
    char *base = xasprintf("%s/.artifacts", r->work_root);
    char *outdir = xasprintf("%s/%s-%s", base, r->run_id, id + 2);
    (void)mkdir(base, 0700);
    free(base);
    int outfd = -1;
    if (mkdir(outdir, 0700) == 0)
        outfd = open(outdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (outfd < 0) {
        close(afd);
        free(outdir);
        return;
    }
    res->priv_dir = outdir;
    int64_t total = 0;
    struct skipped sk = {{0}, {NULL}};
    collect_dir(r, afd, NULL, 0, outfd, res, &total, outdir, &sk);
    close(outfd);
    skip_report(ex, r, &sk);
}

/* Reads QUERN_OUTPUT under qfd (the run's out directory, the caller's): 0
 * with *out (maybe NULL: no file), or -EINVAL. */
/* How many JSON values s[0..n) holds at most: separators and openers
 * outside strings, plus one (a bound, before parsing). */
static size_t json_values_bound(const char *s, size_t n)
{
    size_t count = 1;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == ',' || c == '[' || c == '{') {
            count++;
        }
    }
    return count;
}

static int read_output(const struct run *r, int qfd, json_t **out, char **why)
{
    *out = NULL;
    if (qfd < 0)
        return 0;
    int fd = openat(qfd, "output.json", O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    int e = errno;
    if (fd < 0) {
        if (e == ENOENT)
            return 0;
        *why = xstrdup("QUERN_OUTPUT is not a regular file");
        return -EINVAL;
    }
    struct stat sb;
    int rc = 0;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        *why = xstrdup("QUERN_OUTPUT is not a regular file");
        rc = -EINVAL;
    } else if (sb.st_size > OUTPUT_FILE_MAX) {
        *why = xasprintf("QUERN_OUTPUT is over %d bytes", OUTPUT_FILE_MAX);
        rc = -EINVAL;
    } else {
        /* whole, then parsed (json_loadfd reads a byte per read(2)) */
        struct buf b;
        buf_init(&b);
        char chunk[65536];
        ssize_t n;
        while ((n = read(fd, chunk, sizeof chunk)) > 0 && b.len <= OUTPUT_FILE_MAX)
            buf_append(&b, chunk, (size_t)n);
        json_error_t jerr;
        json_t *j = NULL;
        if (n < 0 || b.len > OUTPUT_FILE_MAX)
            *why = xasprintf("QUERN_OUTPUT could not be read whole (at most %d bytes)",
                             OUTPUT_FILE_MAX);
        else if (json_values_bound(b.data ? b.data : "", b.len) > OUTPUT_MAX_VALUES)
            *why = xasprintf("QUERN_OUTPUT holds more than %d JSON values", OUTPUT_MAX_VALUES);
        else if (!(j = box_json_load(b.data ? b.data : "", b.len, JSON_DECODE_ANY, &jerr))) {
            char *jw = box_json_error(r, &jerr);
            *why = xasprintf("QUERN_OUTPUT is not valid JSON: %s (line %d)", jw, jerr.line);
            free(jw);
        }
        buf_release(&b);
        if (!j)
            rc = -EINVAL;
        else
            *out = j;
    }
    close(fd);
    return rc;
}

/* The largest resident set (KiB) of the processes quern-init reaped, from
 * its status line "X <code> <kb>" or "S <signal> <kb>"; dflt when the line
 * has none.  Without a memory cgroup this is the run's peak: init's own
 * rusage also counts quernd's resident memory, which the box shared until
 * init was executed (a `sh -c 'exit 0'` reported quernd's 20 MB). */
static int64_t status_maxrss(const char *st, int64_t dflt)
{
    if (st[1] != ' ')
        return dflt;
    const char *p = st + 2;
    p += strspn(p, "-0123456789");
    if (*p != ' ' || p[1] < '0' || p[1] > '9')
        return dflt;
    char *end = NULL;
    long long kb = strtoll(p + 1, &end, 10);
    return end && (*end == '\n' || *end == '\0') && kb >= 0 ? (int64_t)kb : dflt;
}

static void end_iteration(struct exec *ex, int slot, struct run *r)
{
    int ws = 0;
    struct sandbox_usage u;
    ep_del(ex, r->proc.pidfd);
    if (sandbox_reap(ex->sys, &r->proc, &ws, &u) < 0)
        memset(&u, 0, sizeof(u));
    r->alive = false;
    r->wall_ms += mono_ms() - r->started;
    r->cpu_ms += u.cpu_ms;
    /* Every writer is dead: what is in the pipes is all there will be. */
    if (r->out.fd >= 0)
        pump(ex, r, K_OUT, &r->out, true);
    if (r->err.fd >= 0)
        pump(ex, r, K_ERR, &r->err, true);
    if (r->ctl.fd >= 0)
        pump(ex, r, K_CTL, &r->ctl, true);
    if (r->in_armed)
        ep_del(ex, r->fd_in);
    r->in_armed = false;
    if (r->fd_in >= 0)
        close(r->fd_in);
    r->fd_in = -1;
    char st[512] = "";
    ssize_t n = read(r->fd_status, st, sizeof(st) - 1);
    st[n > 0 ? n : 0] = '\0';
    close(r->fd_status);
    r->fd_status = -1;
    int64_t peak = u.peak_memory_kb;
    if (u.peak_rusage && (st[0] == 'X' || st[0] == 'S'))
        peak = status_maxrss(st, peak);
    if (peak > r->peak_kb)
        r->peak_kb = peak;

    struct exec_result *res = NULL;
    int code = -1;
    if (r->kill_status) {
        res = new_result(r->kill_status, r->kill_code, r->kill_msg);
    } else if (u.oom_killed) {
        res = new_result("failed", "memory_limit_exceeded", NULL);
        res->error_message = xasprintf("memory over %lld MiB", (long long)r->mem_mb);
        /* the kernel killed one of the box's processes: when the code
         * itself lived on and exited, its exit status is the run's (it was
         * null, as if the code had been killed) */
        if (st[0] == 'X')
            code = atoi(st + 2);
    } else if (st[0] == 'E') {
        st[strcspn(st, "\n")] = '\0';
        res = new_result("failed", "sandbox_error", st + 2);
    } else if (st[0] == 'S') {
        int sig = atoi(st + 2);
        res = new_result("failed", "signal", NULL);
        res->error_message = xasprintf("killed by %s", sig_name(sig));
    } else if (st[0] == 'X') {
        code = atoi(st + 2);
        if (code != 0) {
            res = new_result("failed", "exit_code", NULL);
            res->error_message = xasprintf("exit code %d", code);
        } else if (r->cont_req) {
            /* this iteration's QUERN_OUTPUT is checked now (the next box
             * has a /quern of its own): invalid, the run fails; valid, it
             * stands as the run's output unless a later one replaces it,
             * as a control "output" message does */
            json_t *io = NULL;
            char *iwhy = NULL;
            int iq = open(r->outdir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            bool bad = read_output(r, iq, &io, &iwhy) < 0;
            if (iq >= 0)
                close(iq);
            /* what this iteration gave (the file wins over its messages)
             * stands until a later iteration gives one */
            if (io || r->ctl_output) {
                json_decref(r->carried);
                r->carried = io ? io : json_incref(r->ctl_output);
            }
            if (bad) {
                res = new_result("failed", "invalid_output", iwhy);
            } else if (r->iteration >= r->max_iter) {
                res = new_result("failed", "max_iterations", NULL);
                res->error_message =
                    xasprintf("the code asked for iteration %lld; max_iterations is %lld",
                              (long long)r->max_iter + 1, (long long)r->max_iter);
            } else {
                char *why = NULL;
                r->kill_status = NULL;
                if (spawn_iteration(ex, slot, r, &why) == 0)
                    return;
                res = new_result("failed", "sandbox_error", why);
                free(why);
            }
            free(iwhy);
        }
    } else if (WIFSIGNALED(ws)) {
        res = new_result("failed", "signal", NULL);
        res->error_message = xasprintf("sandbox killed by %s", sig_name(WTERMSIG(ws)));
    } else {
        res = new_result("failed", "sandbox_error", "the sandbox ended without a status");
    }
    if (!res)
        res = new_result("completed", NULL, NULL);
    res->exit_code = code;

    /* output: the file wins over the last control message */
    json_t *o = NULL;
    char *why = NULL;
    int qfd = open(r->outdir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (read_output(r, qfd, &o, &why) < 0) {
        if (strcmp(res->status, "completed") == 0) {
            res->status = "failed";
            res->error_code = "invalid_output";
            res->error_message = why;
            why = NULL;
        }
    } else if (!o && r->ctl_output) {
        o = json_incref(r->ctl_output);
    } else if (!o && r->carried) {
        o = json_incref(r->carried);
    }
    free(why);
    redact_json(r, o);
    res->output = o;
    collect_artifacts(ex, r, qfd, res);
    if (qfd >= 0)
        close(qfd);
    finish(ex, slot, r, res);
}

static void finish(struct exec *ex, int slot, struct run *r, struct exec_result *res)
{
    res->cpu_ms = r->cpu_ms;
    res->peak_memory_kb = r->peak_kb;
    res->wall_ms = r->wall_ms;
    res->iterations = r->iteration;
    storage_release(ex, r, res);
    if (res->error_message && has_secrets(r)) {
        char *m = redact(r, res->error_message, strlen(res->error_message));
        free(res->error_message);
        res->error_message = m;
    }
    if (r->cell >= 0) {
        free(ex->clean_root[r->cell]);
        ex->clean_root[r->cell] = NULL;
        if (reset_slot_dirs(ex, r) == 0)
            ex->clean_root[r->cell] = xstrdup(r->work_root);
        else
            notice(ex, "could not empty a cell's directories; they will be remade");
        ex->cell_busy[r->cell] = false;
    }
    char *run_id = r->run_id;
    int resv = r->resv;
    r->run_id = NULL;
    run_clear(r);
    pthread_mutex_lock(&ex->mu);
    free(ex->pub_ids[resv]);
    ex->pub_ids[resv] = NULL;
    ex->nfree++;
    pthread_mutex_unlock(&ex->mu);
    if (ex->cb.on_exit)
        ex->cb.on_exit(ex->cb.ctx, run_id, res);
    else
        exec_result_release(res);
    free(run_id);
}

void exec_result_release(struct exec_result *res)
{
    if (!res)
        return;
    free(res->error_message);
    json_decref(res->output);
    for (size_t i = 0; i < res->nartifacts; i++) {
        free(res->artifacts[i].name);
        free(res->artifacts[i].path);
    }
    free(res->artifacts);
    if (res->priv_dir)
        rm_tree(res->priv_dir);
    free(res->priv_dir);
    free(res);
}

/* ---- the supervisor thread ---- */

/* Starts waiting runs in free slots, oldest first. */
static void start_pending(struct exec *ex)
{
    while (ex->npending > 0) {
        int slot = -1;
        for (int i = 0; i < ex->slots; i++)
            if (!ex->runs[i].active) {
                slot = i;
                break;
            }
        if (slot < 0)
            return;
        struct run *r = ex->pending[0];
        memmove(ex->pending, ex->pending + 1, (size_t)(ex->npending - 1) * sizeof(*ex->pending));
        ex->npending--;
        start_run(ex, slot, r);
    }
}

/* send/close/cancel for a run still waiting for a slot. */
static void pending_cmd(struct exec *ex, struct cmd *c)
{
    for (int i = 0; i < ex->npending; i++) {
        struct run *r = ex->pending[i];
        if (strcmp(r->run_id, c->run_id) != 0)
            continue;
        if (c->type == C_SEND) {
            if (r->stdin_q.len + strlen(c->line) <= STDIN_MAX_BYTES)
                buf_puts(&r->stdin_q, c->line);
        } else if (c->type == C_CLOSE) {
            r->stdin_close = true;
        } else if (c->type == C_CANCEL) {
            memmove(ex->pending + i, ex->pending + i + 1,
                    (size_t)(ex->npending - i - 1) * sizeof(*ex->pending));
            ex->npending--;
            r->cell = -1;
            finish(ex, -1, r, new_result("canceled", NULL, "canceled"));
            free(r);
        }
        return;
    }
}

/* Frees a command taken off the queue, with the run it carried (C_START). */
static void cmd_free(struct cmd *c)
{
    if (c->spec) {
        run_clear(c->spec);
        free(c->spec);
    }
    free(c->run_id);
    free(c->line);
    free(c);
}

static void handle_cmd(struct exec *ex, struct cmd *c)
{
    if (c->type == C_DISK) {
        struct run *r = &ex->runs[c->slot];
        if (!r->active || r->disk_gen != c->gen)
            return;   /* for a box gone since */
        r->disk_busy = false;
        if (c->over && r->alive && !r->kill_status)
            kill_box(r, "failed", "disk_limit_exceeded",
                     "scratch and artifacts over 1 GiB or 100000 files, or nested "
                     "deeper than 128 directories", SIGKILL);
        r->disk_check_at = mono_ms() + DISK_CHECK_MS;
        return;
    }
    if (c->type == C_START || c->type == C_PREWARM) {
        const char *root = c->type == C_START ? c->spec->work_root : c->line;
        if (ex->npools > 0 && (!ex->warm_root || strcmp(ex->warm_root, root) != 0)) {
            /* warm boxes are made for one work_root: the one in use */
            for (int i = 0; i < ex->nwarm; i++)
                warm_drop(ex, &ex->warm[i], true);
            free(ex->warm_root);
            ex->warm_root = xstrdup(root);
        }
        if (c->type == C_START) {
            ex->pending[ex->npending++] = c->spec;   /* started by start_pending */
            c->spec = NULL;
        }
        return;
    }
    struct run *r = NULL;
    int slot = -1;
    for (int i = 0; i < ex->slots; i++)
        if (ex->runs[i].active && ex->runs[i].run_id && strcmp(ex->runs[i].run_id, c->run_id) == 0) {
            r = &ex->runs[i];
            slot = i;
        }
    if (!r) {
        pending_cmd(ex, c);
        return;
    }
    switch (c->type) {
    case C_SEND:
        if (r->stdin_close) {
            run_warn(ex, r, "a message for stdin was dropped: the run's stdin was closed "
                            "(close) before it came");
            break;
        }
        if (r->stdin_q.len + strlen(c->line) > STDIN_MAX_BYTES) {
            run_warn(ex, r, "a message for stdin was dropped: 16 MiB wait for the code to read them");
            break;
        }
        buf_puts(&r->stdin_q, c->line);
        /* an answer (runner_send's lines are compact, "type" first); a
         * user_message answers nothing */
        static const char answer[] = "{\"type\":\"interaction_response\"";
        if (r->waiting_input > 0 && !strncmp(c->line, answer, sizeof answer - 1))
            r->waiting_input--;
        r->last_activity = mono_ms();
        flush_stdin(ex, slot, r);
        break;
    case C_CLOSE:
        r->stdin_close = true;
        flush_stdin(ex, slot, r);
        break;
    case C_CANCEL:
        if (r->alive && !r->kill_status)
            stop_box(r, "canceled", NULL, "canceled", mono_ms());
        break;
    case C_START:
    case C_PREWARM:
    case C_DISK:
        break;
    }
}

/* Whether the run's scratch and out directories together are over the
 * limits (the code's writes are not bounded by a quota, only checked), or
 * nest directories deeper than TREE_MAX_DEPTH.  Scratch counts allocated
 * blocks; out counts a sparse file at its apparent size, which is what
 * collecting it as an artifact would store.  Files the box removed but
 * still holds open or mapped count too (allocated blocks): no walk sees
 * them, and 256 open files of 64 MiB each held 16 GiB of the host's disk
 * under a 1 GiB limit. */
static bool disk_over(const char *scratch, const char *outdir, pid_t init)
{
    struct tree_usage u = {0};
    if (tree_usage(scratch, TREE_BLOCKS, DISK_MAX_ENTRIES, DISK_MAX_BYTES, &u) || u.too_deep)
        return true;
    if (tree_usage(outdir, TREE_LARGER, DISK_MAX_ENTRIES, DISK_MAX_BYTES, &u) || u.too_deep)
        return true;
    struct stat sc, od;
    if (stat(scratch, &sc) < 0)
        return false;
    struct sandbox_held h = {.bytes = u.bytes, .files = u.entries};
    if (sandbox_held_usage(init, sc.st_dev, DISK_MAX_ENTRIES, DISK_MAX_BYTES, &h))
        return true;
    return stat(outdir, &od) == 0 && od.st_dev != sc.st_dev &&
           sandbox_held_usage(init, od.st_dev, DISK_MAX_ENTRIES, DISK_MAX_BYTES, &h);
}

static void *disk_main(void *arg)
{
    struct exec *ex = arg;
    struct diskq *q = &ex->disk;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->stop && !q->head)
            pthread_cond_wait(&q->cond, &q->mu);
        if (q->stop)
            break;
        struct disk_job *j = q->head;
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
        pthread_mutex_unlock(&q->mu);
        struct cmd *c = xcalloc(1, sizeof(*c));
        c->type = C_DISK;
        c->slot = j->slot;
        c->gen = j->gen;
        c->over = disk_over(j->scratch, j->outdir, j->init);
        free(j->scratch);
        free(j->outdir);
        free(j);
        pthread_mutex_lock(&ex->mu);
        if (ex->stopping)
            free(c);
        else
            enqueue(ex, c);
        pthread_mutex_unlock(&ex->mu);
        pthread_mutex_lock(&q->mu);
    }
    while (q->head) {
        struct disk_job *j = q->head;
        q->head = j->next;
        free(j->scratch);
        free(j->outdir);
        free(j);
    }
    q->tail = NULL;
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* Hands the check of slot's box to the disk thread. */
static void disk_post(struct exec *ex, int slot, struct run *r)
{
    struct disk_job *j = xcalloc(1, sizeof(*j));
    j->slot = slot;
    j->gen = r->disk_gen;
    j->init = r->proc.pid;
    j->scratch = xstrdup(r->scratch);
    j->outdir = xstrdup(r->outdir);
    pthread_mutex_lock(&ex->disk.mu);
    if (ex->disk.tail)
        ex->disk.tail->next = j;
    else
        ex->disk.head = j;
    ex->disk.tail = j;
    pthread_cond_signal(&ex->disk.cond);
    pthread_mutex_unlock(&ex->disk.mu);
    r->disk_busy = true;
}

static void check_timers(struct exec *ex, int64_t now, int *wait_ms)
{
    int64_t next = -1;
    for (int i = 0; i < ex->slots; i++) {
        struct run *r = &ex->runs[i];
        if (!r->active || !r->alive)
            continue;
        if (r->kill_at && now >= r->kill_at) {
            sandbox_signal(&r->proc, SIGKILL);
            r->kill_at = 0;
        }
        /* timeouts, as cancel: SIGTERM, then SIGKILL after the grace */
        if (!r->kill_status && now >= r->deadline) {
            char *m = xasprintf("wall time over %lld ms", (long long)r->timeout_ms);
            stop_box(r, "timed_out", "timeout", m, now);
            free(m);
        }
        int64_t idle_at = r->last_activity + r->inactivity_ms;
        if (!r->kill_status && r->inactivity_ms > 0 && !r->waiting_input && now >= idle_at) {
            char *m = xasprintf("no output for %lld ms", (long long)r->inactivity_ms);
            stop_box(r, "timed_out", "inactivity_timeout", m, now);
            free(m);
        }
        if (!r->kill_status && !r->disk_busy && now >= r->disk_check_at)
            disk_post(ex, i, r);
        int64_t cands[4] = {r->kill_status ? -1 : r->deadline, r->kill_at ? r->kill_at : -1,
                            (!r->kill_status && r->inactivity_ms > 0 && !r->waiting_input) ? idle_at : -1,
                            (r->kill_status || r->disk_busy) ? -1 : r->disk_check_at};
        for (int k = 0; k < 4; k++)
            if (cands[k] >= 0 && (next < 0 || cands[k] < next))
                next = cands[k];
    }
    if (next < 0)
        *wait_ms = -1;
    else
        *wait_ms = next <= now ? 0 : (int)(next - now > 60000 ? 60000 : next - now);
}

static void *supervisor(void *arg)
{
    struct exec *ex = arg;
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    struct epoll_event evs[64];
    bool refill = false;
    for (;;) {
        int wait_ms;
        int64_t now = mono_ms();
        check_timers(ex, now, &wait_ms);
        if (refill) {
            int in_ms = ex->refill_after > now ? (int)(ex->refill_after - now) : 0;
            if (wait_ms < 0 || in_ms < wait_ms)
                wait_ms = in_ms;
        } else {
            int64_t retry = warm_next_retry(ex);
            if (retry >= 0) {
                int in_ms = retry <= now ? 0 : (int)(retry - now > 60000 ? 60000 : retry - now);
                if (wait_ms < 0 || in_ms < wait_ms)
                    wait_ms = in_ms;
            }
        }
        /* the consumer is behind: read no output this round (a box that
         * prints without end fills its pipe and waits), only exits and
         * timers, and look again shortly */
        bool hold = ex->cb.congested && ex->cb.congested(ex->cb.ctx);
        if (hold && (wait_ms < 0 || wait_ms > HOLD_MS))
            wait_ms = HOLD_MS;
        int n = epoll_wait(ex->epfd, evs, (int)ARRAY_LEN(evs), wait_ms);
        if (n < 0 && errno != EINTR)
            die_invariant("epoll_wait");
        if (hold) {
            bool exits = false;
            for (int i = 0; i < n && !exits; i++) {
                enum fdkind k = (enum fdkind)(evs[i].data.u64 & 0xff);
                exits = k == K_PID || k == K_WARM || k == K_IN || k == K_INOTIFY;
            }
            if (!exits) {
                struct timespec ts = {0, HOLD_MS * 1000000L};
                nanosleep(&ts, NULL);   /* the pipes stay readable: no spin */
            }
        }
        /* Pipes first, exits after: a box's last lines come before its end. */
        for (int pass = 0; pass < 2; pass++) {
            for (int i = 0; i < n; i++) {
                enum fdkind k = (enum fdkind)(evs[i].data.u64 & 0xff);
                int slot = (int)(evs[i].data.u64 >> 8);
                if (k == K_WAKE || (pass == 0) != (k != K_PID && k != K_WARM))
                    continue;
                if (k == K_WARM) {
                    if (slot < ex->nwarm && ex->warm[slot].live)
                        warm_died(ex, &ex->warm[slot]);
                    continue;
                }
                if (k == K_INOTIFY) {
                    storage_events(ex);
                    continue;
                }
                struct run *r = &ex->runs[slot];
                if (!r->active || !r->alive)
                    continue;
                if (hold && (k == K_OUT || k == K_ERR || k == K_CTL))
                    continue;
                switch (k) {
                case K_OUT:
                    if (r->out.fd >= 0)
                        pump(ex, r, k, &r->out, false);
                    break;
                case K_ERR:
                    if (r->err.fd >= 0)
                        pump(ex, r, k, &r->err, false);
                    break;
                case K_CTL:
                    if (r->ctl.fd >= 0)
                        pump(ex, r, k, &r->ctl, false);
                    break;
                case K_IN:
                    flush_stdin(ex, slot, r);
                    break;
                case K_PID:
                    end_iteration(ex, slot, r);
                    break;
                case K_WAKE:
                case K_WARM:
                case K_INOTIFY:
                    break;
                }
            }
        }
        /* the pipes' lines and the exits go to the consumer now, before
         * the commands and spawns below */
        if (ex->cb.on_flush)
            ex->cb.on_flush(ex->cb.ctx);
        uint64_t cnt;
        if (read(ex->wakefd, &cnt, sizeof(cnt)) < 0) {
            /* EAGAIN: nothing queued */
        }
        pthread_mutex_lock(&ex->mu);
        struct cmd *c = ex->q_head;
        ex->q_head = ex->q_tail = NULL;
        bool stop = ex->stopping;
        pthread_mutex_unlock(&ex->mu);
        while (c) {
            struct cmd *next = c->next;
            if (!stop)
                handle_cmd(ex, c);
            cmd_free(c);
            c = next;
        }
        if (stop)
            break;
        start_pending(ex);
        /* Runs first: the pool is refilled when nothing else waits. */
        refill = warm_refill(ex);
        if (ex->cb.on_flush)   /* ends of runs that could not start */
            ex->cb.on_flush(ex->cb.ctx);
        int ready = 0;
        for (int i = 0; i < ex->npools; i++)
            ready += ex->pools[i].live;
        __atomic_store_n(&ex->n_warm_ready, ready, __ATOMIC_RELAXED);
    }
    /* Stopping: kill and reap every box, no callbacks. */
    for (int i = 0; i < ex->npending; i++) {
        run_clear(ex->pending[i]);
        free(ex->pending[i]);
    }
    ex->npending = 0;
    for (int i = 0; i < ex->nwarm; i++)
        warm_drop(ex, &ex->warm[i], true);
    for (int i = 0; i < ex->slots; i++) {
        struct run *r = &ex->runs[i];
        if (!r->active)
            continue;
        if (r->alive) {
            int ws;
            struct sandbox_usage u;
            sandbox_signal(&r->proc, SIGKILL);
            sandbox_reap(ex->sys, &r->proc, &ws, &u);
        }
        int fds[] = {r->out.fd, r->err.fd, r->ctl.fd, r->fd_in, r->fd_status};
        for (size_t k = 0; k < ARRAY_LEN(fds); k++)
            if (fds[k] >= 0)
                close(fds[k]);
        if (r->slotdir)
            (void)reset_slot_dirs(ex, r);
        run_clear(r);
    }
    return NULL;
}

/* ---- public ---- */

static void count_pool(void *ctx, const struct runtime *rt)
{
    struct exec *ex = ctx;
    if (rt->warm > 0 && rt->loader != RUNTIME_LOADER_NONE) {
        ex->npools++;
        ex->nwarm += rt->warm;
    }
}

static void add_pool(void *ctx, const struct runtime *rt)
{
    struct exec *ex = ctx;
    if (rt->warm > 0 && rt->loader != RUNTIME_LOADER_NONE)
        ex->pools[ex->npools++] = (struct pool){.rt = rt, .target = rt->warm};
}

/* The template's mount points are directories: a read-only path that is a
 * file (ro_paths = /etc/app.conf:/opt/app.conf) gets none, so that its
 * runtime's boxes build their whole root, where a file is bound on a file
 * (moved onto the template's directory, it failed every run EINVAL). */
static void add_mountpoints(void *ctx, const struct runtime *rt)
{
    struct exec *ex = ctx;
    for (size_t i = 0; i < rt->nro; i++) {
        struct stat st;
        if (stat(rt->ro_host[i], &st) == 0 && !S_ISDIR(st.st_mode))
            continue;
        (void)sandbox_sys_add_mountpoint(ex->sys, rt->ro_box[i]);
    }
}

/* Stops and joins the disk thread (a walk under way ends first). */
static void disk_stop(struct exec *ex)
{
    if (!ex->disk_started)
        return;
    pthread_mutex_lock(&ex->disk.mu);
    ex->disk.stop = true;
    pthread_cond_signal(&ex->disk.cond);
    pthread_mutex_unlock(&ex->disk.mu);
    pthread_join(ex->disk.thread, NULL);
    ex->disk_started = false;
    pthread_cond_destroy(&ex->disk.cond);
    pthread_mutex_destroy(&ex->disk.mu);
}

struct exec *exec_new(int slots, const struct exec_callbacks *cb, char **err)
{
    *err = NULL;
    if (slots <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        slots = n < 2 ? 2 : (int)n * 2;
    }
    struct exec *ex = xcalloc(1, sizeof(*ex));
    ex->cb = *cb;
    ex->slots = slots;
    ex->nresv = slots;
    ex->nfree = slots;
    ex->epfd = -1;
    ex->wakefd = -1;
    pthread_mutex_init(&ex->mu, NULL);
    runtime_each(count_pool, ex);
    ex->pools = xcalloc((size_t)ex->npools + 1, sizeof(*ex->pools));
    ex->npools = 0;
    runtime_each(add_pool, ex);
    ex->warm = xcalloc((size_t)ex->nwarm + 1, sizeof(*ex->warm));
    ex->ncells = slots + ex->nwarm;
    char *ip = find_init();
    ex->sys = sandbox_sys_new(ex->ncells, ip, notice, ex, err);
    free(ip);
    if (!ex->sys)
        goto fail;
    /* the mount points every box's root has (see sandbox_sys_add_mountpoint) */
    static const char *const points[] = {"/scratch", "/storage/account", "/storage/project",
                                         "/storage/org"};
    for (size_t i = 0; i < ARRAY_LEN(points); i++)
        (void)sandbox_sys_add_mountpoint(ex->sys, points[i]);
    runtime_each(add_mountpoints, ex);
    ex->runs = xcalloc((size_t)slots, sizeof(*ex->runs));
    ex->cell_busy = xcalloc((size_t)ex->ncells, sizeof(bool));
    ex->st_inotify = -1;
    ex->clean_root = xcalloc((size_t)ex->ncells, sizeof(char *));
    ex->trash = trash_new((size_t)ex->ncells);
    ex->pub_ids = xcalloc((size_t)slots * (EXEC_MAX_BACKLOG_PER_SLOT + 1), sizeof(char *));
    ex->pending = xcalloc((size_t)slots * (EXEC_MAX_BACKLOG_PER_SLOT + 1), sizeof(struct run *));
    ex->epfd = epoll_create1(EPOLL_CLOEXEC);
    ex->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ex->epfd < 0 || ex->wakefd < 0) {
        *err = xasprintf("epoll/eventfd: %s", strerror(errno));
        goto fail;
    }
    ep_add(ex, ex->wakefd, 0, K_WAKE, EPOLLIN);
    pthread_mutex_init(&ex->disk.mu, NULL);
    pthread_cond_init(&ex->disk.cond, NULL);
    if (pthread_create(&ex->disk.thread, NULL, disk_main, ex) != 0) {
        *err = xstrdup("cannot start the disk check thread");
        goto fail;
    }
    pthread_setname_np(ex->disk.thread, "quern-disk");
    ex->disk_started = true;
    if (pthread_create(&ex->thread, NULL, supervisor, ex) != 0) {
        *err = xstrdup("cannot start the supervisor thread");
        goto fail;
    }
    pthread_setname_np(ex->thread, "quern-exec");   /* for top and perf */
    return ex;
fail:
    trash_stop(ex->trash);
    disk_stop(ex);
    if (ex->epfd >= 0)
        close(ex->epfd);
    if (ex->wakefd >= 0)
        close(ex->wakefd);
    sandbox_sys_free(ex->sys);
    free(ex->runs);
    free(ex->pub_ids);
    free(ex->pending);
    free(ex->clean_root);
    free(ex->cell_busy);
    free(ex->warm);
    free(ex->pools);
    pthread_mutex_destroy(&ex->mu);
    free(ex);
    return NULL;
}

void exec_free(struct exec *ex)
{
    if (!ex)
        return;
    pthread_mutex_lock(&ex->mu);
    ex->stopping = true;
    uint64_t one = 1;
    if (write(ex->wakefd, &one, sizeof(one)) < 0) {
        /* saturated: awake anyway */
    }
    pthread_mutex_unlock(&ex->mu);
    pthread_join(ex->thread, NULL);
    trash_stop(ex->trash);
    disk_stop(ex);
    for (struct cmd *c = ex->q_head; c;) {
        struct cmd *next = c->next;
        cmd_free(c);
        c = next;
    }
    for (int i = 0; i < ex->nresv; i++)
        free(ex->pub_ids[i]);
    for (int i = 0; i < ex->ncells; i++)
        free(ex->clean_root[i]);
    if (ex->st_inotify >= 0)
        close(ex->st_inotify);
    for (size_t i = 0; i < ex->nst_refs; i++)
        free(ex->st_refs[i].path);
    free(ex->st_refs);
    free(ex->pub_ids);
    free(ex->pending);
    free(ex->clean_root);
    free(ex->cell_busy);
    free(ex->warm);
    free(ex->pools);
    free(ex->warm_root);
    free(ex->runs);
    close(ex->epfd);
    close(ex->wakefd);
    sandbox_sys_free(ex->sys);
    pthread_mutex_destroy(&ex->mu);
    free(ex);
}

static bool valid_secret_name(const char *s)
{
    if (!s || !*s || strlen(s) > 64)
        return false;
    if (!((*s >= 'A' && *s <= 'Z') || *s == '_'))
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return false;
    return true;
}

static bool valid_run_id(const char *s)
{
    if (!s || !*s || strlen(s) > 128)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-'))
            return false;
    return true;
}

int exec_start(struct exec *ex, const struct exec_spec *spec)
{
    const struct runtime *rt = runtime_find(spec->runtime_id);
    if (!rt)
        return -ENOENT;
    if (!valid_run_id(spec->run_id) || !spec->work_root || spec->work_root[0] != '/' ||
        (!spec->code && spec->code_len) || spec->nsecrets > EXEC_MAX_SECRETS)
        return -EINVAL;
    for (size_t i = 0; i < spec->nsecrets; i++)
        if (!valid_secret_name(spec->secret_names[i]) || !spec->secret_values[i])
            return -EINVAL;
    const char *st[3] = {spec->storage_account_dir, spec->storage_project_dir, spec->storage_org_dir};
    for (int i = 0; i < 3; i++)
        if (st[i] && st[i][0] != '/')
            return -EINVAL;

    struct run *r = xcalloc(1, sizeof(*r));
    r->run_id = xstrdup(spec->run_id);
    r->task_id = dupn(spec->task_id);
    r->project_id = dupn(spec->project_id);
    r->attempt = spec->attempt;
    r->rt = rt;
    /* A leading UTF-8 byte-order mark (editors on Windows add one) is not
     * written for the box: sh and bash took it as part of the first
     * command (exit 127); python and node skip it anyway. */
    const char *code = spec->code;
    size_t code_len = spec->code_len;
    if (code_len >= 3 && memcmp(code, "\xef\xbb\xbf", 3) == 0) {
        code += 3;
        code_len -= 3;
    }
    r->code = xmalloc(code_len + 1);
    if (code_len)
        memcpy(r->code, code, code_len);
    r->code[code_len] = '\0';
    r->code_len = code_len;
    r->input_json = dupn(spec->input_json);
    r->checkpoint_json = dupn(spec->checkpoint_json);
    r->work_root = xstrdup(spec->work_root);
    r->st_account = dupn(spec->storage_account_dir);
    r->st_project = dupn(spec->storage_project_dir);
    r->st_org = dupn(spec->storage_org_dir);
    r->timeout_ms = spec->timeout_ms > 0 ? spec->timeout_ms : 30000;
    r->inactivity_ms = spec->inactivity_timeout_ms > 0 ? spec->inactivity_timeout_ms : 0;
    r->grace_ms = spec->kill_grace_ms > 0 || spec->kill_grace_ms == EXEC_GRACE_NONE
                      ? spec->kill_grace_ms : 2000;
    r->mem_mb = spec->memory_limit_mb > 0 ? spec->memory_limit_mb : 256;
    r->max_output = spec->max_output_bytes > 0 ? spec->max_output_bytes : 10 * 1024 * 1024;
    r->max_iter = spec->max_iterations > 0 ? spec->max_iterations : 500;
    r->max_procs = spec->max_procs > 0 ? spec->max_procs : 64;
    r->max_files = spec->max_open_files > 0 ? spec->max_open_files : 256;
    r->max_fsize = spec->max_file_bytes > 0 ? spec->max_file_bytes : 64 * 1024 * 1024;
    r->network = spec->network;
    r->secrets_env = spec->secrets_env;
    r->nsecrets = spec->nsecrets;
    r->sec_names = xcalloc(spec->nsecrets + 1, sizeof(char *));
    r->sec_values = xcalloc(spec->nsecrets + 1, sizeof(char *));
    for (size_t i = 0; i < spec->nsecrets; i++) {
        r->sec_names[i] = xstrdup(spec->secret_names[i]);
        r->sec_values[i] = xstrdup(spec->secret_values[i]);
    }
    secret_patterns(r);

    pthread_mutex_lock(&ex->mu);
    int rc = 0, resv = -1;
    if (ex->stopping)
        rc = -ESHUTDOWN;
    else if (find_pub(ex, spec->run_id) >= 0)
        rc = -EEXIST;
    else {
        for (int i = 0; i < ex->nresv; i++)
            if (!ex->pub_ids[i]) {
                resv = i;
                break;
            }
        if (resv < 0)
            rc = -EBUSY;
    }
    if (rc == 0) {
        ex->pub_ids[resv] = xstrdup(spec->run_id);
        ex->nfree--;
        r->resv = resv;
        struct cmd *c = xcalloc(1, sizeof(*c));
        c->type = C_START;
        c->spec = r;
        enqueue(ex, c);
        r = NULL;
    }
    pthread_mutex_unlock(&ex->mu);
    if (r) {
        run_clear(r);
        free(r);
    }
    return rc;
}

static int simple_cmd(struct exec *ex, enum cmd_type t, const char *run_id, const char *line)
{
    if (!run_id)
        return -ENOENT;
    pthread_mutex_lock(&ex->mu);
    int rc = 0;
    if (find_pub(ex, run_id) < 0 || ex->stopping) {
        rc = -ENOENT;
    } else {
        struct cmd *c = xcalloc(1, sizeof(*c));
        c->type = t;
        c->run_id = xstrdup(run_id);
        if (line) {
            size_t n = strlen(line);
            c->line = n && line[n - 1] == '\n' ? xstrdup(line) : xasprintf("%s\n", line);
        }
        enqueue(ex, c);
    }
    pthread_mutex_unlock(&ex->mu);
    return rc;
}

int exec_send(struct exec *ex, const char *run_id, const char *json_line)
{
    if (!json_line)
        return -EINVAL;
    return simple_cmd(ex, C_SEND, run_id, json_line);
}

int exec_close_stdin(struct exec *ex, const char *run_id)
{
    return simple_cmd(ex, C_CLOSE, run_id, NULL);
}

int exec_cancel(struct exec *ex, const char *run_id)
{
    return simple_cmd(ex, C_CANCEL, run_id, NULL);
}

void exec_set_backlog(struct exec *ex, int n)
{
    if (n < 0)
        n = 0;
    if (n > ex->slots * EXEC_MAX_BACKLOG_PER_SLOT)
        n = ex->slots * EXEC_MAX_BACKLOG_PER_SLOT;
    pthread_mutex_lock(&ex->mu);
    int used = ex->nresv - ex->nfree;
    /* shrinking never drops a held reservation: the table keeps its size */
    int top = 0;
    for (int i = 0; i < ex->slots * (EXEC_MAX_BACKLOG_PER_SLOT + 1); i++)
        if (ex->pub_ids[i])
            top = i + 1;
    ex->nresv = ex->slots + n > top ? ex->slots + n : top;
    ex->nfree = ex->nresv - used;
    pthread_mutex_unlock(&ex->mu);
}

void exec_get_stats(struct exec *ex, struct exec_stats *out)
{
    out->warm_starts = __atomic_load_n(&ex->n_warm_starts, __ATOMIC_RELAXED);
    out->cold_starts = __atomic_load_n(&ex->n_cold_starts, __ATOMIC_RELAXED);
    out->warm_ready = __atomic_load_n(&ex->n_warm_ready, __ATOMIC_RELAXED);
}

void exec_prewarm(struct exec *ex, const char *work_root)
{
    if (!work_root || work_root[0] != '/')
        return;
    trash_empty(ex->trash, work_root);   /* what a crash left there */
    pthread_mutex_lock(&ex->mu);
    if (!ex->stopping) {
        struct cmd *c = xcalloc(1, sizeof(*c));
        c->type = C_PREWARM;
        c->line = xstrdup(work_root);
        enqueue(ex, c);
    }
    pthread_mutex_unlock(&ex->mu);
}

int exec_slots(const struct exec *ex)
{
    return ex->slots;
}

int exec_free_slots(struct exec *ex)
{
    pthread_mutex_lock(&ex->mu);
    int n = ex->nfree;
    pthread_mutex_unlock(&ex->mu);
    return n;
}

unsigned exec_box_uid(struct exec *ex)
{
    return (unsigned)sandbox_host_uid(ex->sys);
}
