/*
 * exec_bench — figures for code execution (issue 3, point 6).  A program
 * that prints figures, never a test.  Three modes:
 *
 *   exec_bench raw    [-n N] [-p P]        fork/exec (and posix_spawn) of /bin/true
 *                                           from P threads: the physical limit.
 *   exec_bench direct [-n N] [-s SLOTS] [-l LAT_N] [-r RUNTIMES]
 *                                           drives exec.c with no server: sandboxed
 *                                           `true` runs per second, and latency
 *                                           exec_start -> the code's first line, with
 *                                           and without the warm pool.
 *   exec_bench api -u URL -k KEY [-n N] [-c CONNS] [-l LAT_N] [-r RUNTIMES] [-P QUERND_PID]
 *                  [-b BATCH [-o]]       (-b: creates through POST /tasks/batch, then a
 *                                           second round with one POST each unless -o)
 *                                           end to end through the HTTP API: POST
 *                                           /tasks with code, completions counted on
 *                                           the project SSE stream; latency create ->
 *                                           the code running (its own clock reading,
 *                                           compared with the moment of the POST).
 *
 * Every mode prints its CPU seconds and peak RSS (its own, its children's,
 * and quernd's when -P gives its pid).  Threads: the api mode runs CONNS
 * posting threads and one stream reader; the direct mode uses exec's
 * supervisor thread for callbacks and the main thread to wait.
 */
#include "exec.h"
#include "runtime.h"
#include "util.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

extern char **environ;

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
    if (!n)
        return 0;
    qsort(v, n, sizeof(*v), cmp_d);
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* CPU seconds and peak RSS of this process and of its reaped children. */
static void print_self_usage(const char *label)
{
    struct rusage s, c;
    getrusage(RUSAGE_SELF, &s);
    getrusage(RUSAGE_CHILDREN, &c);
    printf("  %s: cpu %.2f s (user %.2f, sys %.2f), peak RSS %ld MiB; children cpu %.2f s, "
           "largest child RSS %ld MiB\n",
           label, s.ru_utime.tv_sec + s.ru_utime.tv_usec / 1e6 + s.ru_stime.tv_sec + s.ru_stime.tv_usec / 1e6,
           s.ru_utime.tv_sec + s.ru_utime.tv_usec / 1e6, s.ru_stime.tv_sec + s.ru_stime.tv_usec / 1e6,
           s.ru_maxrss / 1024,
           c.ru_utime.tv_sec + c.ru_utime.tv_usec / 1e6 + c.ru_stime.tv_sec + c.ru_stime.tv_usec / 1e6,
           c.ru_maxrss / 1024);
}

/* quernd's threads by name (the last entry: every other thread). */
#define NTHR 4
static const char *const thr_names[NTHR] = {"quern-runner", "quern-exec", "MHD-worker", NULL};
static const char *const thr_labels[NTHR] = {"runner", "exec supervisor", "http", "other"};

struct proc_usage {
    double self_cpu, child_cpu;
    long hwm_kb, rss_kb;
    double thr_cpu[NTHR];   /* CPU seconds of the live threads, by name */
    long ctxsw;             /* context switches of the live threads */
};

/* Adds each live thread's CPU and context switches to u. */
static void thread_usage(int pid, struct proc_usage *u)
{
    char path[320], b[1024];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return;
    double hz = (double)sysconf(_SC_CLK_TCK);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char comm[64] = "";
        snprintf(path, sizeof path, "/proc/%d/task/%s/comm", pid, e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (fgets(comm, sizeof comm, f))
            comm[strcspn(comm, "\n")] = 0;
        fclose(f);
        snprintf(path, sizeof path, "/proc/%d/task/%s/stat", pid, e->d_name);
        f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(b, 1, sizeof b - 1, f);
        fclose(f);
        b[n] = 0;
        char *p = strrchr(b, ')');
        unsigned long ut = 0, st = 0;
        if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
            continue;
        int k = 0;
        while (thr_names[k] && strcmp(thr_names[k], comm))
            k++;
        u->thr_cpu[k] += (double)(ut + st) / hz;
        snprintf(path, sizeof path, "/proc/%d/task/%s/status", pid, e->d_name);
        f = fopen(path, "r");
        if (!f)
            continue;
        char line[256];
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "voluntary_ctxt_switches:", 24))
                u->ctxsw += atol(line + 24);
            else if (!strncmp(line, "nonvoluntary_ctxt_switches:", 27))
                u->ctxsw += atol(line + 27);
        fclose(f);
    }
    closedir(d);
}

/* quernd's usage from /proc (utime+stime, cutime+cstime, VmHWM, VmRSS). */
static int proc_usage(int pid, struct proc_usage *u)
{
    memset(u, 0, sizeof(*u));
    char path[64], b[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(b, 1, sizeof b - 1, f);
    fclose(f);
    b[n] = 0;
    char *p = strrchr(b, ')');
    if (!p)
        return -1;
    unsigned long ut = 0, st = 0;
    long cut = 0, cst = 0;
    /* fields after ')': state(3) ... utime(14) stime(15) cutime(16) cstime(17) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %ld %ld", &ut, &st,
               &cut, &cst) != 4)
        return -1;
    double hz = (double)sysconf(_SC_CLK_TCK);
    u->self_cpu = (double)(ut + st) / hz;
    u->child_cpu = (double)(cut + cst) / hz;
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    f = fopen(path, "r");
    if (!f)
        return 0;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "VmHWM:", 6))
            u->hwm_kb = atol(line + 6);
        else if (!strncmp(line, "VmRSS:", 6))
            u->rss_kb = atol(line + 6);
    }
    fclose(f);
    thread_usage(pid, u);
    return 0;
}

static void print_proc_delta(int pid, const struct proc_usage *a, double secs, int runs)
{
    struct proc_usage b;
    if (pid <= 0 || proc_usage(pid, &b))
        return;
    printf("  quernd: cpu %.2f s (%.0f%% of one core), boxes (reaped children) cpu %.2f s, "
           "peak RSS %ld MiB, RSS now %ld MiB\n",
           b.self_cpu - a->self_cpu, secs > 0 ? 100 * (b.self_cpu - a->self_cpu) / secs : 0,
           b.child_cpu - a->child_cpu, b.hwm_kb / 1024, b.rss_kb / 1024);
    if (runs > 0) {
        double q = 1000 * (b.self_cpu - a->self_cpu) / runs, x = 1000 * (b.child_cpu - a->child_cpu) / runs;
        printf("  cpu per run: quernd %.2f ms + boxes %.2f ms = %.2f ms\n", q, x, q + x);
        printf("  quernd's threads per run:");
        for (int k = 0; k < NTHR; k++)
            printf("%s %s %.3f ms", k ? "," : "", thr_labels[k],
                   1000 * (b.thr_cpu[k] - a->thr_cpu[k]) / runs);
        printf("; %.1f context switches\n", (double)(b.ctxsw - a->ctxsw) / runs);
        printf("API_CPU_MS_PER_RUN %.2f\n", q + x);
        printf("API_RUNNER_CPU_MS_PER_RUN %.3f\nAPI_EXEC_CPU_MS_PER_RUN %.3f\n",
               1000 * (b.thr_cpu[0] - a->thr_cpu[0]) / runs, 1000 * (b.thr_cpu[1] - a->thr_cpu[1]) / runs);
    }
}

/* CPU seconds of this process and of its reaped children so far. */
static void self_cpu(double *self, double *children)
{
    struct rusage s, c;
    getrusage(RUSAGE_SELF, &s);
    getrusage(RUSAGE_CHILDREN, &c);
    *self = s.ru_utime.tv_sec + s.ru_utime.tv_usec / 1e6 + s.ru_stime.tv_sec + s.ru_stime.tv_usec / 1e6;
    *children = c.ru_utime.tv_sec + c.ru_utime.tv_usec / 1e6 + c.ru_stime.tv_sec + c.ru_stime.tv_usec / 1e6;
}

/* ------------------------------------------------------------------ raw */

struct raw_arg {
    int n;
    bool spawn;
};

static void *raw_worker(void *p)
{
    struct raw_arg *a = p;
    char *const argv[] = {"/bin/true", NULL};
    for (int i = 0; i < a->n; i++) {
        pid_t pid;
        if (a->spawn) {
            if (posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ) != 0)
                abort();
        } else {
            pid = fork();
            if (pid == 0) {
                execve("/bin/true", argv, environ);
                _exit(127);
            }
            if (pid < 0)
                abort();
        }
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
    }
    return NULL;
}

/* Spawns per second; *cpu_ms (when asked) gets the CPU per spawn, this
 * process's and its children's: the parent's fork or spawn, the child's
 * exec, run and exit. */
static double raw_rate(int n, int par, bool spawn, double *cpu_ms)
{
    pthread_t t[64];
    struct raw_arg a = {n / par, spawn};
    double s0, c0, s1, c1;
    self_cpu(&s0, &c0);
    double t0 = now_s();
    for (int i = 0; i < par; i++)
        pthread_create(&t[i], NULL, raw_worker, &a);
    for (int i = 0; i < par; i++)
        pthread_join(t[i], NULL);
    double dt = now_s() - t0;
    self_cpu(&s1, &c1);
    if (cpu_ms)
        *cpu_ms = 1000 * ((s1 - s0) + (c1 - c0)) / (a.n * par);
    return (double)(a.n * par) / dt;
}

static int mode_raw(int n, int par)
{
    if (par < 1 || par > 64)
        par = 2;
    raw_rate(n / 10 + 1, par, false, NULL); /* warm the page cache */
    double fc = 0, sc = 0;
    double f = raw_rate(n, par, false, &fc);
    double s = raw_rate(n, par, true, &sc);
    printf("raw /bin/true, %d in parallel, %d runs each way:\n", par, n);
    printf("  fork+exec    %8.0f /s, cpu %.3f ms each\n", f, fc);
    printf("  posix_spawn  %8.0f /s, cpu %.3f ms each\n", s, sc);
    printf("RAW_FORK_EXEC_PER_S %.0f\nRAW_POSIX_SPAWN_PER_S %.0f\n", f, s);
    printf("RAW_FORK_EXEC_CPU_MS %.3f\n", fc);
    print_self_usage("bench");
    return 0;
}

/* --------------------------------------------------------------- direct */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct exec *ex;
static char workdir[] = "/tmp/quern-bench-XXXXXX";
static int d_target, d_started, d_done, d_failed;
static int64_t d_first_line_ns;   /* latency mode: when the first line came */
static bool d_lat_mode;
static char d_runtime[16];
static const char *d_code;

static void d_on_log(void *ctx, const char *run_id, const char *type, const char *level,
                     const char *message, const json_t *data, int iteration)
{
    if (!d_lat_mode)
        return;
    pthread_mutex_lock(&mu);
    if (!d_first_line_ns)
        d_first_line_ns = wall_ns();
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void d_on_control(void *ctx, const char *run_id, const json_t *msg, int iteration)
{
}

static int d_start(int k)
{
    char id[64];
    snprintf(id, sizeof id, "run_bench_%d", k);
    struct exec_spec spec = {
        .run_id = id, .task_id = "task_bench", .project_id = "prj_bench", .attempt = 1,
        .runtime_id = d_runtime, .code = d_code, .code_len = strlen(d_code),
        .input_json = "{}", .work_root = workdir, .timeout_ms = 30000,
    };
    return exec_start(ex, &spec);
}

static void d_on_exit(void *ctx, const char *run_id, struct exec_result *res)
{
    bool ok = strcmp(res->status, "completed") == 0;
    if (!ok && d_failed < 3)
        fprintf(stderr, "run %s: %s %s %s\n", run_id, res->status,
                res->error_code ? res->error_code : "", res->error_message ? res->error_message : "");
    exec_result_release(res);
    pthread_mutex_lock(&mu);
    d_done++;
    if (!ok)
        d_failed++;
    int next = d_started < d_target ? d_started++ : -1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    if (next >= 0 && d_start(next) != 0)
        abort();
}

static void d_notice(void *ctx, const char *m)
{
    if (getenv("BENCH_VERBOSE"))
        fprintf(stderr, "  [exec] %s\n", m);
}

static void set_warm(const char *rts, int n)
{
    char v[16];
    snprintf(v, sizeof v, "%d", n);
    char *copy = xstrdup(rts), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
        (void)runtime_config_set(t, "warm", v);
    free(copy);
}

static const char *first_line_code(const char *rt)
{
    if (!strcmp(rt, "python"))
        return "print('go', flush=True)\n";
    if (!strcmp(rt, "node") || !strcmp(rt, "ts"))
        return "console.log('go');\n";
    return "echo go\n";
}

/* Sequential runs, one at a time, with a pause for the pool to refill:
 * latency exec_start -> first stdout line reaches exec's supervisor. */
static void d_latency(const char *rt, int n, bool warm, double gap_s)
{
    snprintf(d_runtime, sizeof d_runtime, "%s", rt);
    d_code = first_line_code(rt);
    d_lat_mode = true;
    double *lat = xcalloc((size_t)n, sizeof(double));
    int got = 0;
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&mu);
        d_first_line_ns = 0;
        d_target = 0;
        d_started = 0;
        int done0 = d_done;
        pthread_mutex_unlock(&mu);
        int64_t t0 = wall_ns();
        if (d_start(100000 + i) != 0)
            abort();
        pthread_mutex_lock(&mu);
        while (d_done == done0)
            pthread_cond_wait(&cv, &mu);
        if (d_first_line_ns)
            lat[got++] = (double)(d_first_line_ns - t0) / 1e6;
        pthread_mutex_unlock(&mu);
        if (gap_s > 0)
            usleep((useconds_t)(gap_s * 1e6));
    }
    printf("  %-6s %-8s p50 %7.2f ms  p99 %7.2f ms  (n=%d)\n", rt, warm ? "warm" : "cold",
           pct(lat, (size_t)got, 0.5), pct(lat, (size_t)got, 0.99), got);
    printf("DIRECT_LAT_%s_%s_P50_MS %.2f\n", rt, warm ? "WARM" : "COLD", pct(lat, (size_t)got, 0.5));
    free(lat);
    d_lat_mode = false;
}

static struct exec *d_new(int slots)
{
    struct exec_callbacks cb = {.on_log = d_on_log, .on_control = d_on_control, .on_exit = d_on_exit,
                                .on_notice = d_notice};
    char *err = NULL;
    struct exec *e = exec_new(slots, &cb, &err);
    if (!e) {
        fprintf(stderr, "exec_new: %s\n", err ? err : "?");
        exit(1);
    }
    return e;
}

static int mode_direct(int n, int slots, int lat_n, const char *rts)
{
    if (!mkdtemp(workdir)) {
        perror("mkdtemp");
        return 1;
    }
    /* throughput: `true` in sh, `slots` runs in flight */
    set_warm("sh,bash,python,node,ts", 0);
    ex = d_new(slots);
    snprintf(d_runtime, sizeof d_runtime, "sh");
    d_code = "true";
    int inflight = exec_free_slots(ex);
    for (int round = 0; round < 2; round++) { /* round 0 warms the page cache */
        int total = round == 0 ? n / 10 + inflight : n;
        pthread_mutex_lock(&mu);
        d_target = total;
        d_done = 0;
        d_failed = 0;
        d_started = inflight < total ? inflight : total;
        int first = d_started;
        pthread_mutex_unlock(&mu);
        double t0 = now_s(), c_self0, c_kids0;
        self_cpu(&c_self0, &c_kids0);
        for (int i = 0; i < first; i++)
            if (d_start(round * 1000000 + i) != 0)
                abort();
        pthread_mutex_lock(&mu);
        while (d_done < total)
            pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
        double dt = now_s() - t0;
        if (round == 1) {
            printf("direct exec (no server), %d slots, %d sandboxed `true` runs (sh):\n",
                   inflight, total);
            printf("  %8.0f runs/s  (%d failed)\n", total / dt, d_failed);
            printf("DIRECT_SH_RUNS_PER_S %.0f\n", total / dt);
            double c_self1, c_kids1;
            self_cpu(&c_self1, &c_kids1);
            double q = 1000 * (c_self1 - c_self0) / total, x = 1000 * (c_kids1 - c_kids0) / total;
            printf("  cpu per run: executor %.2f ms + boxes %.2f ms = %.2f ms\n", q, x, q + x);
            printf("DIRECT_CPU_MS_PER_RUN %.2f\n", q + x);
        }
    }
    print_self_usage("bench+exec");
    exec_free(ex);

    if (lat_n > 0) {
        printf("latency exec_start -> first line of the code (sequential runs):\n");
        char *copy = xstrdup(rts), *save = NULL;
        for (char *rt = strtok_r(copy, ",", &save); rt; rt = strtok_r(NULL, ",", &save)) {
            const struct runtime *r = runtime_find(rt);
            if (!r || !runtime_available(r)) {
                printf("  %-6s unavailable\n", rt);
                continue;
            }
            for (int warm = 0; warm < 2; warm++) {
#ifndef EXEC_WARM
                if (warm)
                    break;
#else
                if (warm && !runtime_loader_argv(r))
                    break; /* no loader: this runtime has no warm pool */
#endif
                set_warm(rt, warm ? 2 : 0);
                ex = d_new(slots);
#ifdef EXEC_WARM
                exec_prewarm(ex, workdir);
#endif
                usleep(warm ? 1500000 : 100000);
                /* node's (and ts's) warm box takes longest to come back */
                bool slow = !strcmp(rt, "node") || !strcmp(rt, "ts");
                double gap = warm ? (slow ? 0.25 : 0.1) : 0.02;
                if (getenv("BENCH_GAP_MS"))
                    gap = atof(getenv("BENCH_GAP_MS")) / 1000;
                d_latency(rt, lat_n, warm, gap);
                exec_free(ex);
            }
        }
        free(copy);
    }
    char *cmd = xasprintf("rm -rf %s", workdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", workdir);
    free(cmd);
    return 0;
}

/* ------------------------------------------------------------------ api */

static const char *a_url, *a_key;

struct sink {
    struct buf b;
};

static size_t sink_write(char *p, size_t sz, size_t n, void *ud)
{
    struct sink *s = ud;
    buf_append(&s->b, p, sz * n);
    return sz * n;
}

static CURL *a_handle(struct curl_slist **hdrs)
{
    CURL *c = curl_easy_init();
    char *auth = xasprintf("Authorization: Bearer %s", a_key);
    *hdrs = curl_slist_append(NULL, auth);
    *hdrs = curl_slist_append(*hdrs, "Content-Type: application/json");
    free(auth);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, *hdrs);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    return c;
}

/* POSTs body to path; returns the HTTP status, *out the body (malloc'd). */
static long a_post(CURL *c, const char *path, const char *body, char **out)
{
    struct sink s;
    buf_init(&s.b);
    char *url = xasprintf("%s%s", a_url, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    long code = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    free(url);
    if (out)
        *out = s.b.data ? buf_steal(&s.b) : xstrdup("");
    else
        buf_release(&s.b);
    return code;
}

static int a_total, a_posted, a_completed, a_failed;
static double a_t_first, a_t_last;
static volatile bool a_stream_stop;

struct counter {
    struct buf line;
};

static size_t stream_write(char *p, size_t sz, size_t n, void *ud)
{
    struct counter *c = ud;
    size_t len = sz * n;
    for (size_t i = 0; i < len; i++) {
        if (p[i] != '\n') {
            buf_append(&c->line, p + i, 1);
            continue;
        }
        const char *l = c->line.data ? c->line.data : "";
        bool done = !strcmp(l, "event: task_run.completed");
        bool bad = !strcmp(l, "event: task_run.failed") || !strcmp(l, "event: task_run.timed_out");
        if (done || bad) {
            pthread_mutex_lock(&mu);
            if (done)
                a_completed++;
            else
                a_failed++;
            a_t_last = now_s();
            pthread_cond_broadcast(&cv);
            pthread_mutex_unlock(&mu);
        }
        c->line.len = 0;
        if (c->line.data)
            c->line.data[0] = 0;
    }
    return a_stream_stop ? 0 : len;
}

static int stream_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    return a_stream_stop ? 1 : 0;
}

static void *stream_thread(void *arg)
{
    struct curl_slist *h;
    CURL *c = a_handle(&h);
    char *url = xasprintf("%s/api/projects/default/events/stream?start=latest", a_url);
    struct counter cnt;
    buf_init(&cnt.line);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, stream_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &cnt);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, stream_progress);
    curl_easy_perform(c);
    buf_release(&cnt.line);
    free(url);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return NULL;
}

static const char *a_body;
static int a_batch;   /* > 1: POST /tasks/batch with this many tasks */
static bool a_batch_only;   /* -o: no second round with one POST per task */

static void *post_thread(void *arg)
{
    struct curl_slist *h;
    CURL *c = a_handle(&h);
    struct buf many;
    buf_init(&many);
    for (;;) {
        pthread_mutex_lock(&mu);
        int k = a_total - a_posted;
        if (k > (a_batch > 1 ? a_batch : 1))
            k = a_batch > 1 ? a_batch : 1;
        a_posted += k;
        pthread_mutex_unlock(&mu);
        if (k <= 0)
            break;
        long code;
        if (a_batch > 1) {
            many.len = 0;
            buf_puts(&many, "{\"tasks\":[");
            for (int i = 0; i < k; i++)
                buf_printf(&many, "%s%s", i ? "," : "", a_body);
            buf_puts(&many, "]}");
            code = a_post(c, "/api/projects/default/tasks/batch", many.data, NULL);
        } else {
            code = a_post(c, "/api/projects/default/tasks", a_body, NULL);
        }
        if (code != 201) {
            fprintf(stderr, "POST /tasks: HTTP %ld\n", code);
            pthread_mutex_lock(&mu);
            a_failed += k;
            pthread_cond_broadcast(&cv);
            pthread_mutex_unlock(&mu);
        }
    }
    buf_release(&many);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return NULL;
}

static double a_throughput(int n, int conns, bool print)
{
    pthread_t st, pt[64];
    a_stream_stop = false;
    a_total = n;
    a_posted = a_completed = a_failed = 0;
    pthread_create(&st, NULL, stream_thread, NULL);
    usleep(200000); /* the stream is subscribed */
    a_t_first = now_s();
    for (int i = 0; i < conns; i++)
        pthread_create(&pt[i], NULL, post_thread, NULL);
    for (int i = 0; i < conns; i++)
        pthread_join(pt[i], NULL);
    double posted_at = now_s();
    pthread_mutex_lock(&mu);
    while (a_completed + a_failed < n) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 60;
        if (pthread_cond_timedwait(&cv, &mu, &ts) == ETIMEDOUT) {
            fprintf(stderr, "timed out: %d completed, %d failed of %d\n", a_completed, a_failed, n);
            break;
        }
    }
    double dt = a_t_last - a_t_first;
    int done = a_completed, failed = a_failed;
    pthread_mutex_unlock(&mu);
    a_stream_stop = true;
    pthread_join(st, NULL);
    if (print) {
        printf("  %d tasks posted in %.2f s (%.0f creates/s) over %d connections%s\n", n,
               posted_at - a_t_first, n / (posted_at - a_t_first), conns,
               a_batch > 1 ? ", POST /tasks/batch" : ", one POST /tasks each");
        printf("  %d completed, %d failed; first POST -> last completion %.2f s: %.0f runs/s\n",
               done, failed, dt, done / dt);
    }
    return done / dt;
}

static const char *ts_code(const char *rt)
{
    if (!strcmp(rt, "python"))
        return "import time\nt=time.time_ns()\nimport os,json\n"
               "open(os.environ['QUERN_OUTPUT'],'w').write(json.dumps({'t':t}))\n";
    if (!strcmp(rt, "node") || !strcmp(rt, "ts"))
        return "const t=Math.round((performance.timeOrigin+performance.now())*1e6);\n"
               "const fs=await import('node:fs');\n"
               "fs.writeFileSync(process.env.QUERN_OUTPUT, JSON.stringify({t}));\n";
    /* sh has no clock of its own: date costs one more exec (~0.5 ms) */
    return "printf '{\"t\":%s}' \"$(date +%s%N)\" > \"$QUERN_OUTPUT\"\n";
}

static int64_t json_t_of(const char *body)
{
    json_error_t e;
    json_t *j = json_loads(body, 0, &e);
    json_t *run = json_object_get(j, "run");
    json_t *t = json_object_get(json_object_get(run, "output"), "t");
    int64_t v = json_is_integer(t) ? json_integer_value(t) : (json_is_real(t) ? (int64_t)json_real_value(t) : -1);
    if (v < 0)
        fprintf(stderr, "no timestamp in %.300s\n", body);
    json_decref(j);
    return v;
}

static void a_latency(const char *rt, int n, const char *label, double gap_s)
{
    struct curl_slist *h;
    CURL *c = a_handle(&h);
    json_t *b = json_pack("{s:s, s:s, s:b}", "code", ts_code(rt), "runtime_id", rt,
                          "wait_for_result", 1);
    char *body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    double *lat = xcalloc((size_t)n, sizeof(double));
    int got = 0;
    for (int i = 0; i < n; i++) {
        char *out = NULL;
        int64_t t0 = wall_ns();
        long code = a_post(c, "/api/projects/default/tasks", body, &out);
        int64_t t = code == 201 ? json_t_of(out) : -1;
        if (code != 201)
            fprintf(stderr, "POST: HTTP %ld %.200s\n", code, out);
        if (t > 0)
            lat[got++] = (double)(t - t0) / 1e6;
        free(out);
        if (gap_s > 0)
            usleep((useconds_t)(gap_s * 1e6));
    }
    printf("  %-6s %-5s p50 %7.2f ms  p99 %7.2f ms  (n=%d)\n", rt, label,
           pct(lat, (size_t)got, 0.5), pct(lat, (size_t)got, 0.99), got);
    printf("API_LAT_%s_%s_P50_MS %.2f\nAPI_LAT_%s_%s_P99_MS %.2f\n", rt, label,
           pct(lat, (size_t)got, 0.5), rt, label, pct(lat, (size_t)got, 0.99));
    free(lat);
    free(body);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
}

static int mode_api(int n, int conns, int lat_n, const char *rts, int qpid, const char *label)
{
    if (!a_url || !a_key) {
        fprintf(stderr, "api mode needs -u URL and -k KEY\n");
        return 2;
    }
    if (conns < 1 || conns > 64)
        conns = 4;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (n > 0) {
        a_body = "{\"code\":\"true\",\"runtime_id\":\"sh\"}";
        a_throughput(n / 10 + 10, conns, false); /* warm-up */
        struct proc_usage u0 = {0};
        if (qpid > 0)
            proc_usage(qpid, &u0);
        double t0 = now_s();
        printf("end to end through the API, sandboxed `true` (sh), default slots:\n");
        double r = a_throughput(n, conns, true);
        double dt = now_s() - t0;
        printf("API_SH_RUNS_PER_S %.0f\n", r);
        print_proc_delta(qpid, &u0, dt, n);
        print_self_usage("bench client");
        if (a_batch > 1 && !a_batch_only) {
            int single = a_batch;
            a_batch = 0;
            if (qpid > 0)
                proc_usage(qpid, &u0);
            t0 = now_s();
            printf("the same with one POST /tasks per task:\n");
            r = a_throughput(n, conns, true);
            printf("API_SH_RUNS_PER_S_SINGLE_POSTS %.0f\n", r);
            print_proc_delta(qpid, &u0, now_s() - t0, n);
            a_batch = single;
        }
    }
    if (lat_n > 0) {
        printf("latency POST /tasks -> the code's first statement (%s pool):\n", label);
        char *copy = xstrdup(rts), *save = NULL;
        for (char *rt = strtok_r(copy, ",", &save); rt; rt = strtok_r(NULL, ",", &save))
            a_latency(rt, lat_n, label, !strcmp(rt, "node") || !strcmp(rt, "ts") ? 0.25 : 0.1);
        free(copy);
    }
    curl_global_cleanup();
    return 0;
}

/* ----------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: exec_bench raw|direct|api [options] (see the top of exec_bench.c)\n");
        return 2;
    }
    const char *mode = argv[1];
    int n = 2000, par = 2, slots = 0, lat_n = 30, conns = 4, qpid = 0;
    const char *rts = "sh,python,node", *label = "warm";
    int opt;
    optind = 2;
    while ((opt = getopt(argc, argv, "n:p:s:l:r:u:k:c:P:L:b:o")) != -1) {
        switch (opt) {
        case 'n': n = atoi(optarg); break;
        case 'p': par = atoi(optarg); break;
        case 's': slots = atoi(optarg); break;
        case 'l': lat_n = atoi(optarg); break;
        case 'r': rts = optarg; break;
        case 'u': a_url = optarg; break;
        case 'k': a_key = optarg; break;
        case 'c': conns = atoi(optarg); break;
        case 'P': qpid = atoi(optarg); break;
        case 'L': label = optarg; break;
        case 'b': a_batch = atoi(optarg); break;
        case 'o': a_batch_only = true; break;
        default: return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(mode, "raw"))
        return mode_raw(n, par);
    if (!strcmp(mode, "direct"))
        return mode_direct(n, slots, lat_n, rts);
    if (!strcmp(mode, "api"))
        return mode_api(n, conns, lat_n, rts, qpid, label);
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
