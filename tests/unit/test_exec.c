/* test_exec — exec.c driven directly (no server): every runtime, the
 * environment, logs, control channel, output, artifacts, iterations,
 * interaction, cancel, timeouts, and hostile code.  Waits on condition
 * variables for on_exit; no sleeps, no timing assertions. */
#include "t.h"

#include "exec.h"
#include "runtime.h"
#include "util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct logline {
    char *type, *level, *msg;
    int iteration;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct logline logs[20000];
static size_t nlogs;
static json_t *controls;             /* array of control messages */
static struct exec_result *result;
static char *answer;                 /* sent on input_request */
static struct exec *ex;
static char root[] = "/tmp/quern-texec-XXXXXX";

static void on_log(void *ctx, const char *run_id, const char *type, const char *level,
                   const char *message, const json_t *data, int iteration)
{
    pthread_mutex_lock(&mu);
    if (nlogs < ARRAY_LEN(logs)) {
        logs[nlogs].type = xstrdup(type);
        logs[nlogs].level = level ? xstrdup(level) : NULL;
        logs[nlogs].msg = xstrdup(message);
        logs[nlogs].iteration = iteration;
        nlogs++;
    }
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void on_control(void *ctx, const char *run_id, const json_t *msg, int iteration)
{
    pthread_mutex_lock(&mu);
    json_array_append_new(controls, json_deep_copy(msg));
    const char *type = json_string_value(json_object_get(msg, "type"));
    char *a = answer && type && !strcmp(type, "input_request") ? xstrdup(answer) : NULL;
    pthread_mutex_unlock(&mu);
    if (a) {
        exec_send(ex, run_id, a); /* callbacks may call back into exec */
        free(a);
    }
}

static void on_exit_cb(void *ctx, const char *run_id, struct exec_result *res)
{
    pthread_mutex_lock(&mu);
    result = res;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void on_notice(void *ctx, const char *m)
{
    fprintf(stderr, "  [exec] %s\n", m);
}

static void reset(void)
{
    for (size_t i = 0; i < nlogs; i++) {
        free(logs[i].type);
        free(logs[i].level);
        free(logs[i].msg);
    }
    nlogs = 0;
    json_decref(controls);
    controls = json_array();
    exec_result_release(result);
    result = NULL;
    free(answer);
    answer = NULL;
}

static struct exec *get_exec(void)
{
    if (!ex) {
        if (!mkdtemp(root))
            abort();
        setenv("QUERN_TEST_HOST_MARKER", "host-env-must-not-leak", 1);
        struct exec_callbacks cb = {.on_log = on_log, .on_control = on_control,
                                    .on_exit = on_exit_cb, .on_notice = on_notice};
        char *err = NULL;
        ex = exec_new(2, &cb, &err);
        if (!ex)
            fprintf(stderr, "exec_new: %s\n", err);
        free(err);
        controls = json_array();
    }
    return ex;
}

static struct exec_spec base_spec(const char *rt, const char *code)
{
    static int seq;
    static char id[64];
    get_exec();
    snprintf(id, sizeof(id), "run_t%d", ++seq);
    static char work[128];
    snprintf(work, sizeof(work), "%s/work", root);
    return (struct exec_spec){
        .run_id = id, .task_id = "task_1", .project_id = "proj_1", .attempt = 1,
        .runtime_id = rt, .code = code, .code_len = strlen(code), .input_json = "{\"x\":41}",
        .work_root = work, .timeout_ms = 20000, .memory_limit_mb = 128,
    };
}

/* Starts the spec and waits for its on_exit (a 120 s safety net, not a
 * timing assertion: a hang fails instead of blocking the suite). */
static struct exec_result *run_spec(const struct exec_spec *s)
{
    reset();
    if (!get_exec())
        return NULL;
    int rc = exec_start(ex, s);
    if (rc != 0) {
        fprintf(stderr, "  exec_start: %d\n", rc);
        return NULL;
    }
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 120;
    pthread_mutex_lock(&mu);
    while (!result)
        if (pthread_cond_timedwait(&cv, &mu, &dl) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&mu);
    if (!result)
        fprintf(stderr, "  run %s never ended\n", s->run_id);
    return result;
}

static struct exec_result *run(const char *rt, const char *code)
{
    struct exec_spec s = base_spec(rt, code);
    return run_spec(&s);
}

/* The lines of one type joined with '\n'. */
static char *joined(const char *type)
{
    struct buf b;
    buf_init(&b);
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < nlogs; i++)
        if (!strcmp(logs[i].type, type)) {
            buf_puts(&b, logs[i].msg);
            buf_puts(&b, "\n");
        }
    pthread_mutex_unlock(&mu);
    buf_puts(&b, "");
    return buf_steal(&b);
}

/* The first log entry of the type whose message holds needle, or NULL. */
static const char *log_with(const char *type, const char *needle)
{
    const char *m = NULL;
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < nlogs && !m; i++)
        if (!strcmp(logs[i].type, type) && strstr(logs[i].msg, needle))
            m = logs[i].msg;
    pthread_mutex_unlock(&mu);
    return m;
}

static void dump(void)
{
    for (size_t i = 0; i < nlogs && i < 40; i++)
        fprintf(stderr, "    %s: %s\n", logs[i].type, logs[i].msg);
    if (result)
        fprintf(stderr, "    -> %s %s %s exit=%d\n", result->status,
                result->error_code ? result->error_code : "-",
                result->error_message ? result->error_message : "-", result->exit_code);
}

#define EXPECT_STATUS(res, st, code)                                                  \
    do {                                                                              \
        int before_ = t_failed_checks;                                                \
        CHECK((res) != NULL);                                                         \
        if (res) {                                                                    \
            CHECK_EQ_STR((res)->status, st);                                          \
            if (code)                                                                 \
                CHECK_EQ_STR((res)->error_code, (const char *)(code));               \
            else                                                                      \
                CHECK((res)->error_code == NULL);                                     \
        }                                                                             \
        if (t_failed_checks != before_)                                               \
            dump();                                                                   \
    } while (0)

/* ---- contract ---- */

TEST(sh_stdout_stderr_and_exit)
{
    struct exec_result *r = run("sh", "echo hello; echo oops >&2; printf 'no newline'");
    EXPECT_STATUS(r, "completed", NULL);
    char *o = joined("stdout"), *e = joined("stderr");
    CHECK_EQ_STR(o, "hello\nno newline\n");
    CHECK_EQ_STR(e, "oops\n");
    CHECK(r && r->exit_code == 0 && r->iterations == 1);
    free(o);
    free(e);
    r = run("default", "exit 3");
    EXPECT_STATUS(r, "failed", "exit_code");
    CHECK(r && r->exit_code == 3);
}

TEST(environment_is_clean_and_complete)
{
    struct exec_result *r = run("bash",
        "echo \"id=$QUERN_RUN_ID task=$QUERN_TASK_ID proj=$QUERN_PROJECT_ID att=$QUERN_ATTEMPT\"\n"
        "cat \"$QUERN_INPUT\"; echo\n"
        "echo fd=$QUERN_CONTROL_FD home=$HOME lang=$LANG pwd=$(pwd)\n"
        "test -d \"$QUERN_ARTIFACTS\" && echo artifacts-ok\n"
        "env | grep -c QUERN_TEST_HOST_MARKER || true\n"
        "tr '\\0' '\\n' </proc/1/environ | grep -c QUERN_TEST_HOST_MARKER || true\n"
        "echo uid=$(id -u) pid=$$\n");
    EXPECT_STATUS(r, "completed", NULL);
    char *o = joined("stdout");
    CHECK(strstr(o, "task=task_1 proj=proj_1 att=1") != NULL);
    CHECK(strstr(o, "{\"x\":41}") != NULL);
    CHECK(strstr(o, "fd=3 home=/scratch lang=C.UTF-8 pwd=/scratch") != NULL);
    CHECK(strstr(o, "artifacts-ok") != NULL);
    CHECK(strstr(o, "\n0\n0\n") != NULL);
    CHECK(strstr(o, "uid=0 pid=2") != NULL);
    if (t_failed_checks)
        fprintf(stderr, "%s", o);
    free(o);
}

TEST(output_file_and_invalid_output)
{
    struct exec_result *r = run("sh", "echo '{\"answer\": 42}' > \"$QUERN_OUTPUT\"");
    EXPECT_STATUS(r, "completed", NULL);
    CHECK(r && json_integer_value(json_object_get(r->output, "answer")) == 42);
    r = run("sh", "echo '{not json' > \"$QUERN_OUTPUT\"");
    EXPECT_STATUS(r, "failed", "invalid_output");
    r = run("sh", "ln -s /etc/passwd \"$QUERN_OUTPUT\"");
    EXPECT_STATUS(r, "failed", "invalid_output");
}

TEST(control_channel)
{
    struct exec_result *r = run("sh",
        "echo '{\"type\":\"log\",\"level\":\"warn\",\"message\":\"careful\",\"data\":{\"k\":1}}' >&3\n"
        "echo '{\"type\":\"progress\",\"progress\":0.5}' >&3\n"
        "echo 'garbage' >&3\n"
        "echo '{\"type\":\"checkpoint\",\"data\":{\"step\":2}}' >&3\n"
        "echo '{\"type\":\"output\",\"output\":{\"via\":\"control\"}}' >&3\n");
    EXPECT_STATUS(r, "completed", NULL);
    CHECK(r && json_is_object(r->output) &&
          !strcmp(json_string_value(json_object_get(r->output, "via")), "control"));
    bool saw_log = false, saw_garbage = false;
    for (size_t i = 0; i < nlogs; i++) {
        if (!strcmp(logs[i].type, "log") && !strcmp(logs[i].msg, "careful") &&
            !strcmp(logs[i].level, "warn"))
            saw_log = true;
        if (!strcmp(logs[i].type, "log") && strstr(logs[i].msg, "invalid control"))
            saw_garbage = true;
    }
    CHECK(saw_log);
    CHECK(saw_garbage);
    CHECK_EQ_INT(json_array_size(controls), 3);
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(controls, 0), "type")), "progress");

    /* A line over 1 MiB is dropped whole: its tail past the first MiB, a valid
     * message, is not
     * read as one; one warning; the next line is read again. */
    r = run("sh", "{ head -c 1048576 /dev/zero | tr '\\0' x; "
                  "echo '{\"type\":\"output\",\"output\":{\"via\":\"tail\"}}'; "
                  "echo '{\"type\":\"progress\",\"progress\":0.25}'; } >&3\n");
    EXPECT_STATUS(r, "completed", NULL);
    CHECK(r && r->output == NULL);
    size_t warned = 0;
    for (size_t i = 0; i < nlogs; i++)
        warned += !strcmp(logs[i].type, "log") && strstr(logs[i].msg, "over 1 MiB");
    CHECK_EQ_INT(warned, 1);
    CHECK_EQ_INT(json_array_size(controls), 1);
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(controls, 0), "type")), "progress");

    /* an endless line counts against max_output_bytes */
    struct exec_spec s = base_spec("sh", "tr '\\0' x < /dev/zero >&3\n");
    s.max_output_bytes = 4 << 20;
    r = run_spec(&s);
    EXPECT_STATUS(r, "failed", "output_limit_exceeded");
}

TEST(artifacts_regular_files_only)
{
    struct exec_result *r = run("sh",
        "cd \"$QUERN_ARTIFACTS\"\n"
        "echo report > report.txt\n"
        "mkdir sub && echo deep > sub/deep.txt\n"
        "ln -s /etc/passwd link-to-passwd\n"
        "ln -s ../input.json link-rel\n"
        "echo x > /scratch/orig && ln /scratch/orig hardlink\n"
        "mkfifo fifo\n");
    EXPECT_STATUS(r, "completed", NULL);
    CHECK(r && r->nartifacts == 2);
    bool rep = false, deep = false;
    for (size_t i = 0; r && i < r->nartifacts; i++) {
        struct stat sb;
        CHECK(lstat(r->artifacts[i].path, &sb) == 0 && S_ISREG(sb.st_mode));
        if (!strcmp(r->artifacts[i].name, "report.txt") && r->artifacts[i].size == 7)
            rep = true;
        if (!strcmp(r->artifacts[i].name, "sub/deep.txt"))
            deep = true;
    }
    CHECK(rep && deep);
    /* what was left behind is said once, with the reasons */
    const char *w = log_with("log", "artifacts not stored:");
    CHECK(w && strstr(w, "2 symbolic links (first: link-") && strstr(w, "not regular files (first: fifo)"));
    if (t_failed_checks)
        for (size_t i = 0; r && i < r->nartifacts; i++)
            fprintf(stderr, "  artifact %s %lld\n", r->artifacts[i].name, (long long)r->artifacts[i].size);
    if (t_failed_checks)
        dump();
    /* the artifacts dir itself replaced by a symlink: nothing taken, and said */
    r = run("sh", "rmdir \"$QUERN_ARTIFACTS\" && ln -s /etc \"$QUERN_ARTIFACTS\"");
    EXPECT_STATUS(r, "completed", NULL);
    CHECK(r && r->nartifacts == 0);
    CHECK(log_with("log", "QUERN_ARTIFACTS was replaced") != NULL);
    /* past the count limit: the first 1000 stored, the rest named */
    r = run("sh", "cd \"$QUERN_ARTIFACTS\" && i=0 && while [ $i -lt 1005 ]; do : > f$i; "
                  "i=$((i + 1)); done");
    EXPECT_STATUS(r, "completed", NULL);
    CHECK(r && r->nartifacts == 1000);
    CHECK(log_with("log", "artifacts not stored: more than 1000 files") != NULL);
    /* a run that leaves only good files hears nothing */
    r = run("sh", "echo ok > \"$QUERN_ARTIFACTS/ok.txt\"");
    EXPECT_STATUS(r, "completed", NULL);
    CHECK(r && r->nartifacts == 1);
    CHECK(log_with("log", "artifacts not stored") == NULL);
}

TEST(iterations_continue)
{
    struct exec_result *r = run("sh",
        "n=$(sed 's/[^0-9]//g' \"$QUERN_INPUT\")\n"
        "echo \"iter n=$n\"\n"
        "if [ \"$n\" -lt 43 ]; then echo \"{\\\"type\\\":\\\"continue\\\",\\\"data\\\":{\\\"x\\\":$((n+1))}}\" >&3;\n"
        "else echo \"{\\\"final\\\":$n}\" > \"$QUERN_OUTPUT\"; fi\n");
    EXPECT_STATUS(r, "completed", NULL);
    CHECK(r && r->iterations == 3);
    CHECK(r && json_integer_value(json_object_get(r->output, "final")) == 43);
    CHECK(nlogs >= 3 && logs[0].iteration == 1 && logs[nlogs - 1].iteration == 3);
    struct exec_spec s = base_spec("sh", "echo '{\"type\":\"continue\",\"data\":{}}' >&3");
    s.max_iterations = 3;
    r = run_spec(&s);
    EXPECT_STATUS(r, "failed", "max_iterations");
    CHECK(r && r->iterations == 3);
}

TEST(input_request_and_send)
{
    answer = NULL;
    struct exec_spec s = base_spec("sh",
        "echo '{\"type\":\"input_request\",\"prompt\":\"name?\"}' >&3\n"
        "read line\n"
        "echo \"got $line\"\n");
    reset();
    answer = xstrdup("{\"type\":\"interaction_response\",\"response\":\"bob\"}");
    /* run_spec resets; set the answer again through a copy */
    char *a = answer;
    answer = NULL;
    if (!get_exec())
        return;
    pthread_mutex_lock(&mu);
    answer = a;
    pthread_mutex_unlock(&mu);
    CHECK_EQ_INT(exec_start(ex, &s), 0);
    pthread_mutex_lock(&mu);
    while (!result)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    EXPECT_STATUS(result, "completed", NULL);
    char *o = joined("stdout");
    CHECK(strstr(o, "got {\"type\":\"interaction_response\",\"response\":\"bob\"}") != NULL);
    free(o);
    CHECK_EQ_INT(exec_send(ex, "run_nope", "{}"), -ENOENT);
}

/* Starts the spec and waits until its code printed line (or it ended);
 * false when there is no executor. */
static bool start_until_line(const struct exec_spec *s, const char *line)
{
    reset();
    if (!get_exec())
        return false;
    CHECK_EQ_INT(exec_start(ex, s), 0);
    pthread_mutex_lock(&mu);
    for (;;) {
        bool seen = false;
        for (size_t i = 0; i < nlogs; i++)
            if (!strcmp(logs[i].msg, line))
                seen = true;
        if (seen || result)
            break;
        pthread_cond_wait(&cv, &mu);
    }
    pthread_mutex_unlock(&mu);
    return true;
}

/* Cancels the run and waits for its end. */
static struct exec_result *cancel_and_wait(const struct exec_spec *s)
{
    CHECK_EQ_INT(exec_cancel(ex, s->run_id), 0);
    pthread_mutex_lock(&mu);
    while (!result)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return result;
}

TEST(cancel_term_then_kill)
{
    struct exec_spec s = base_spec("sh", "trap '' TERM; echo ready; while :; do sleep 1; done");
    s.kill_grace_ms = 200;
    struct exec_result *r = start_until_line(&s, "ready") ? cancel_and_wait(&s) : NULL;
    EXPECT_STATUS(r, "canceled", NULL);
    CHECK(r && r->exit_code == -1);
}

TEST(wall_timeout_and_inactivity)
{
    struct exec_spec s = base_spec("sh", "sleep 1000");
    s.timeout_ms = 300;
    struct exec_result *r = run_spec(&s);
    EXPECT_STATUS(r, "timed_out", "timeout");
    s = base_spec("sh", "echo start; sleep 1000");
    s.inactivity_timeout_ms = 300;
    r = run_spec(&s);
    EXPECT_STATUS(r, "timed_out", "inactivity_timeout");
}

TEST(other_runtimes)
{
    struct exec_result *r;
    if (access("/usr/bin/python3", X_OK) == 0) {
        r = run("python", "import os, json\n"
                          "d = json.load(open(os.environ['QUERN_INPUT']))\n"
                          "print('py', d['x'] + 1)\n"
                          "json.dump({'py': True}, open(os.environ['QUERN_OUTPUT'], 'w'))\n");
        EXPECT_STATUS(r, "completed", NULL);
        char *o = joined("stdout");
        CHECK_EQ_STR(o, "py 42\n");
        free(o);
    } else {
        fprintf(stderr, "  skip python: /usr/bin/python3 absent\n");
    }
    if (access("/usr/bin/node", X_OK) == 0) {
        r = run("node", "import fs from 'node:fs';\n"
                        "const d = JSON.parse(fs.readFileSync(process.env.QUERN_INPUT, 'utf8'));\n"
                        "await new Promise(r => setTimeout(r, 1));\n"
                        "console.log('node', d.x + 1);\n");
        EXPECT_STATUS(r, "completed", NULL);
        char *o = joined("stdout");
        CHECK_EQ_STR(o, "node 42\n");
        free(o);
        const struct runtime *ts = runtime_find("ts");
        if (ts && runtime_available(ts)) {
            r = run("ts", "interface P { x: number }\n"
                          "import fs from 'node:fs';\n"
                          "const d: P = JSON.parse(fs.readFileSync(process.env.QUERN_INPUT!, 'utf8'));\n"
                          "const f = (n: number): string => `ts ${n + 1}`;\n"
                          "await Promise.resolve();\n"
                          "console.log(f(d.x));\n");
            EXPECT_STATUS(r, "completed", NULL);
            o = joined("stdout");
            CHECK_EQ_STR(o, "ts 42\n");
            free(o);
        } else {
            fprintf(stderr, "  skip ts: sucrase not installed (npm install --prefix vendor sucrase@3)\n");
        }
    } else {
        fprintf(stderr, "  skip node/ts: /usr/bin/node absent\n");
    }
}

/* ---- warm boxes: the same contract as a cold start ---- */

static void healthy(void);

/* Waits (a safety net, not a timing assertion) until a warm box is ready. */
static bool warm_ready(void)
{
    for (int i = 0; i < 3000; i++) {
        struct exec_stats st;
        exec_get_stats(get_exec(), &st);
        if (st.warm_ready >= 2)
            return true;
        usleep(10000);
    }
    return false;
}

/* Runs spec cold (network on forces a spawn) and warm, both ending with
 * status st and error code `code` (message msg unless NULL); the lines of
 * log type `type` of each. */
static void cold_and_warm(struct exec_spec *s, const char *st, const char *code, const char *msg,
                          const char *type, char **cold, char **warm)
{
    *cold = *warm = NULL;
    s->network = true;
    struct exec_stats a, b;
    exec_get_stats(get_exec(), &a);
    struct exec_result *r = run_spec(s);
    EXPECT_STATUS(r, st, code);
    CHECK(!msg || (r && r->error_message && !strcmp(r->error_message, msg)));
    *cold = joined(type);
    exec_get_stats(get_exec(), &b);
    CHECK(b.cold_starts == a.cold_starts + 1);
    CHECK(warm_ready());
    s->network = false;
    r = run_spec(s);
    EXPECT_STATUS(r, st, code);
    CHECK(!msg || (r && r->error_message && !strcmp(r->error_message, msg)));
    *warm = joined(type);
    exec_get_stats(get_exec(), &a);
    CHECK(a.warm_starts == b.warm_starts + 1);
}

/* Runs s cold then warm to status st, code `code`: the code must print the
 * same lines of log type `type`, holding each needle. */
static void same_end_cold_and_warm(struct exec_spec *s, const char *st, const char *code,
                                   const char *msg, const char *type,
                                   const char *const *needles)
{
    char *cold, *warm;
    cold_and_warm(s, st, code, msg, type, &cold, &warm);
    CHECK(cold && warm && strcmp(cold, warm) == 0);
    for (const char *const *n = needles; *n; n++)
        CHECK(cold && strstr(cold, *n));
    if (t_failed_checks)
        fprintf(stderr, "cold:\n%s\nwarm:\n%s\n", cold, warm);
    free(cold);
    free(warm);
}

/* Runs s cold then warm to its end: the code must print the same, holding
 * each needle. */
static void same_cold_and_warm(struct exec_spec *s, const char *const *needles)
{
    same_end_cold_and_warm(s, "completed", NULL, NULL, "stdout", needles);
}

static const char py_contract[] =
    "import os, sys, json\n"
    "env = {k: v for k, v in os.environ.items() if k != 'QUERN_RUN_ID'}\n"
    "print(json.dumps(sorted(env.items())))\n"
    "print(sys.argv, sys.path[0], os.getcwd(), __name__, __file__, type(__loader__).__name__)\n"
    "print(sorted(os.listdir('/proc/self/fd')))\n"
    "print(json.load(open(os.environ['QUERN_INPUT'])), open('/quern/script.py').read()[:9])\n"
    "print(os.getuid(), os.getpid(), sorted(os.listdir('/quern')))\n"
    "os.write(3, b'{\"type\":\"progress\",\"progress\":0.5}\\n')\n";

TEST(warm_python_sees_the_cold_contract)
{
    if (access("/usr/bin/python3", X_OK) != 0)
        return;
    struct exec_spec s = base_spec("python", py_contract);
    static const char *const want[] = {
        "['/quern/script.py'] /quern /scratch __main__ /quern/script.py SourceFileLoader", NULL};
    same_cold_and_warm(&s, want);
    /* an exception's traceback starts at the script, exit code 1 */
    struct exec_result *r = run("python", "x = 1\nraise ValueError('boom')\n");
    EXPECT_STATUS(r, "failed", "exit_code");
    CHECK(r && r->exit_code == 1);
    char *e = joined("stderr");
    CHECK(strstr(e, "File \"/quern/script.py\", line 2") && strstr(e, "ValueError: boom"));
    CHECK(!strstr(e, "<string>") && !strstr(e, "_quern_go"));
    if (t_failed_checks)
        fprintf(stderr, "stderr:\n%s\n", e);
    free(e);
}

/* What the script leaves uncaught ends a warm run as python ends a cold one:
 * a KeyboardInterrupt kills it with SIGINT (after atexit), a script that
 * does not compile shows no loader frame, and a user's excepthook gets the
 * traceback from the script on (it exited 1 warm, and showed the loader). */
TEST(warm_python_ends_as_a_cold_one)
{
    if (access("/usr/bin/python3", X_OK) != 0)
        return;
    struct exec_spec s = base_spec("python", "import atexit\n"
                                             "atexit.register(print, 'atexit')\n"
                                             "raise KeyboardInterrupt\n");
    static const char *const kbint[] = {"File \"/quern/script.py\", line 3", "KeyboardInterrupt",
                                        NULL};
    same_end_cold_and_warm(&s, "failed", "signal", "killed by SIGINT", "stderr", kbint);
    s = base_spec("python", "print('x'\n");
    static const char *const syntax[] = {"  File \"/quern/script.py\", line 1\n", "SyntaxError",
                                         NULL};
    same_end_cold_and_warm(&s, "failed", "exit_code", "exit code 1", "stderr", syntax);
    char *e = joined("stderr");
    CHECK(!strstr(e, "<string>") && !strstr(e, "Traceback"));
    free(e);
    s = base_spec("python", "import sys, traceback\n"
                            "def hook(t, v, tb):\n"
                            "    print(len(traceback.extract_tb(tb)), len(traceback.extract_tb(v.__traceback__)))\n"
                            "sys.excepthook = hook\n"
                            "def f():\n"
                            "    raise ValueError('v')\n"
                            "f()\n");
    static const char *const hook[] = {"2 2\n", NULL};
    same_end_cold_and_warm(&s, "failed", "exit_code", "exit code 1", "stdout", hook);
}

static const char node_contract[] =
    "import fs from 'node:fs';\n"
    "const env = Object.entries(process.env).filter(([k]) => k !== 'QUERN_RUN_ID').sort();\n"
    "console.log(JSON.stringify(env));\n"
    "console.log(JSON.stringify([process.argv.slice(1), process.execArgv, process.cwd()]));\n"
    "console.log(JSON.stringify(fs.readdirSync('/proc/self/fd').filter(f => +f < 5)));\n"
    "console.log(fs.readFileSync(process.env.QUERN_INPUT, 'utf8'), import.meta.url);\n"
    "console.log(typeof globalThis.fs, typeof globalThis.path, typeof module, typeof crypto);\n"
    "fs.writeSync(3, JSON.stringify({type: 'progress', progress: 0.5}) + '\\n');\n";

TEST(warm_node_sees_the_cold_contract)
{
    if (access("/usr/bin/node", X_OK) != 0)
        return;
    struct exec_spec s = base_spec("node", node_contract);
    static const char *const want[] = {"[[\"/quern/script.mjs\"],[],\"/scratch\"]",
                                       "file:///quern/script.mjs",
                                       "undefined undefined undefined object", NULL};
    same_cold_and_warm(&s, want);
}

/* the node contract in TypeScript: types stripped, same output cold and warm */
static const char ts_contract[] =
    "import fs from 'node:fs';\n"
    "type Pair = [string, string | undefined];\n"
    "const env: Pair[] = Object.entries(process.env).filter(([k]) => k !== 'QUERN_RUN_ID').sort();\n"
    "console.log(JSON.stringify(env));\n"
    "console.log(JSON.stringify([process.argv.slice(1), process.execArgv, process.cwd()]));\n"
    "console.log(JSON.stringify(fs.readdirSync('/proc/self/fd').filter((f: string) => +f < 5)));\n"
    "console.log(fs.readFileSync(process.env.QUERN_INPUT!, 'utf8'), import.meta.url);\n"
    "console.log(JSON.stringify(fs.readdirSync('/tmp')));\n"
    "console.log(typeof globalThis.fs, typeof globalThis.path, typeof module, typeof crypto);\n"
    "fs.writeSync(3, JSON.stringify({type: 'progress', progress: 0.5}) + '\\n');\n";

TEST(warm_ts_sees_the_cold_contract)
{
    const struct runtime *ts = runtime_find("ts");
    if (access("/usr/bin/node", X_OK) != 0 || !ts || !runtime_available(ts) || !ts->warm) {
        fprintf(stderr, "  skip: node or sucrase absent\n");
        return;
    }
    struct exec_spec s = base_spec("ts", ts_contract);
    /* execArgv empty as for node; the transformed module removed itself
     * before the code's first line (/tmp is empty) */
    static const char *const want[] = {"[[\"/quern/script.ts\"],[],\"/scratch\"]", "\n[]\n",
                                       "undefined undefined undefined object", NULL};
    same_cold_and_warm(&s, want);
    /* a type error in the syntax fails the run as a cold one does */
    struct exec_result *r = run("ts", "let x: number = ;\n");
    EXPECT_STATUS(r, "failed", "exit_code");
}

TEST(warm_storage_limits_and_isolation)
{
    if (access("/usr/bin/python3", X_OK) != 0)
        return;
    char *proj = xasprintf("%s/storage-proj", root);
    struct exec_spec s = base_spec("python",
        "import os\n"
        "p = os.environ['QUERN_STORAGE_PROJECT']\n"
        "open(p + '/note.txt', 'w').write('kept')\n"
        "print('account' in str(sorted(os.environ)), os.path.exists('/storage/account/x'))\n"
        /* init is not dumpable (run from a copy the box cannot read), so
         * its environ is refused; where it is readable, no marker */
        "try:\n"
        "    print(open('/proc/1/environ', 'rb').read().count(b'QUERN_TEST_HOST_MARKER'))\n"
        "except PermissionError:\n"
        "    print(0)\n"
        "try:\n"
        "    os.read(6, 1)\n"
        "    print('fd6 open')\n"
        "except OSError as e:\n"
        "    print('fd6', e.errno)\n"
        "import resource\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE), os.nice(0))\n");
    s.storage_project_dir = proj;
    s.max_open_files = 100;
    CHECK(warm_ready());
    struct exec_stats a, b;
    exec_get_stats(get_exec(), &a);
    struct exec_result *r = run_spec(&s);
    exec_get_stats(get_exec(), &b);
    CHECK(b.warm_starts == a.warm_starts + 1);
    EXPECT_STATUS(r, "completed", NULL);
    char *o = joined("stdout");
    CHECK_EQ_STR(o, "False False\n0\nfd6 9\n(100, 100) 0\n");
    free(o);
    char *note = xasprintf("%s/note.txt", proj);
    FILE *f = fopen(note, "r");
    char b2[16] = "";
    CHECK(f && fgets(b2, sizeof(b2), f));
    CHECK_EQ_STR(b2, "kept");
    if (f)
        fclose(f);
    free(note);
    free(proj);
    /* a warm box gets the run's memory limit */
    s = base_spec("python", "x = []\nwhile True:\n    x.append(bytearray(1 << 20))\n");
    s.memory_limit_mb = 48;
    CHECK(warm_ready());
    r = run_spec(&s);
    EXPECT_STATUS(r, "failed", "memory_limit_exceeded");
    healthy();
}

TEST(runtime_warm_keys)
{
    CHECK_EQ_INT(runtime_config_set("sh", "warm", "1"), -EINVAL);     /* no loader */
    CHECK_EQ_INT(runtime_config_set("sh", "warm", "0"), 0);
    CHECK_EQ_INT(runtime_config_set("python", "warm", "17"), -EINVAL);
    CHECK_EQ_INT(runtime_config_set("python", "warm", "x"), -EINVAL);
    CHECK_EQ_INT(runtime_config_set("python", "warm", "3"), 0);
    CHECK_EQ_INT(runtime_find("python")->warm, 3);
    CHECK_EQ_INT(runtime_config_set("python", "warm", "2"), 0);
    CHECK_EQ_INT(runtime_config_set("py2", "loader", "pythonx"), -EINVAL);
    CHECK_EQ_INT(runtime_config_set("py2", "interpreter", "/usr/bin/python3"), 0);
    CHECK_EQ_INT(runtime_config_set("py2", "loader", "python"), 0);
    CHECK_EQ_INT(runtime_config_set("py2", "warm", "1"), 0);
    CHECK(runtime_loader_argv(runtime_find("py2")) != NULL);
    CHECK(runtime_loader_argv(runtime_find("sh")) == NULL);
    CHECK_EQ_INT(runtime_config_set("py2", "loader", "none"), 0);
    CHECK_EQ_INT(runtime_find("py2")->warm, 0);
}

TEST(runtime_unavailable_and_unknown)
{
    CHECK_EQ_INT(runtime_config_set("ghost", "interpreter", "/nonexistent/ghost"), 0);
    struct exec_result *r = run("ghost", "boo");
    EXPECT_STATUS(r, "failed", "runtime_unavailable");
    struct exec_spec s = base_spec("cobol", "x");
    CHECK_EQ_INT(exec_start(get_exec(), &s), -ENOENT);
    CHECK(runtime_find("cobol") == NULL);
    CHECK(runtime_find("default") == runtime_find("sh"));
}

TEST(secrets_files_env_and_redaction)
{
    const char *names[] = {"API_TOKEN"}, *values[] = {"tok-123456"};
    struct exec_spec s = base_spec("sh",
        "cat /run/secrets/API_TOKEN; echo\n"
        "echo \"env=$API_TOKEN\"\n"
        "echo \"{\\\"leak\\\":\\\"$API_TOKEN\\\"}\" > \"$QUERN_OUTPUT\"\n");
    s.nsecrets = 1;
    s.secret_names = names;
    s.secret_values = values;
    s.secrets_env = true;
    struct exec_result *r = run_spec(&s);
    EXPECT_STATUS(r, "completed", NULL);
    char *o = joined("stdout");
    CHECK_EQ_STR(o, "***\nenv=***\n");
    free(o);
    CHECK(r && !strcmp(json_string_value(json_object_get(r->output, "leak")), "***"));
}

/* ---- hostile code ---- */

static void healthy(void)
{
    struct exec_result *r = run("sh", "echo alive");
    EXPECT_STATUS(r, "completed", NULL);
}

TEST(hostile_fork_bomb)
{
    struct exec_spec s = base_spec("bash", "f(){ f | f & }; f; wait");
    s.timeout_ms = 3000;
    struct exec_result *r = run_spec(&s);
    CHECK(r != NULL); /* contained: the pids limit makes the bomb fizzle or time out */
    healthy();
    if (access("/usr/bin/python3", X_OK) == 0) {
        s = base_spec("python", "import threading, time\n"
                                "while True:\n"
                                "    threading.Thread(target=time.sleep, args=(100,), daemon=True).start()\n");
        s.timeout_ms = 5000;
        r = run_spec(&s);
        EXPECT_STATUS(r, "failed", "exit_code");
        healthy();
    }
}

TEST(hostile_memory_bomb)
{
    struct exec_spec s = base_spec("python", "x = []\nwhile True:\n    x.append(bytearray(1 << 20))\n");
    if (access("/usr/bin/python3", X_OK) != 0)
        s = base_spec("sh", "a=x; while :; do a=$a$a; done");
    s.memory_limit_mb = 64;
    struct exec_result *r = run_spec(&s);
    EXPECT_STATUS(r, "failed", "memory_limit_exceeded");
    CHECK(r && r->peak_memory_kb > 32 * 1024);
    healthy();
}

TEST(hostile_infinite_stdout)
{
    struct exec_spec s = base_spec("sh", "yes 'all work and no play'");
    s.max_output_bytes = 100000;
    struct exec_result *r = run_spec(&s);
    EXPECT_STATUS(r, "failed", "output_limit_exceeded");
    size_t total = 0;
    for (size_t i = 0; i < nlogs; i++)
        total += strlen(logs[i].msg) + 1;
    CHECK(total <= 100000 && total > 90000);
    if (t_failed_checks)
        fprintf(stderr, "  total %zu in %zu lines\n", total, nlogs);
    healthy();
}

TEST(hostile_huge_file_and_many_files)
{
    struct exec_spec s = base_spec("sh", "exec head -c 100000000 /dev/zero > big");
    s.max_file_bytes = 1 << 20;
    struct exec_result *r = run_spec(&s);
    EXPECT_STATUS(r, "failed", "signal");
    CHECK(r && r->error_message && strstr(r->error_message, "SIGXFSZ"));
    s = base_spec("sh", "i=0; while [ $i -lt 3000 ]; do : > f$i; i=$((i+1)); done; ls | wc -l");
    r = run_spec(&s);
    EXPECT_STATUS(r, "completed", NULL);
    healthy();
}

/* How many processes have needle in their command line; *pid (if given)
 * gets the pid of one of them. */
static int procs_with(const char *needle, int *pid)
{
    int n = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char p[300], b[256];
        snprintf(p, sizeof(p), "/proc/%s/cmdline", e->d_name);
        FILE *f = fopen(p, "r");
        if (!f)
            continue;
        size_t k = fread(b, 1, sizeof(b) - 1, f);
        fclose(f);
        for (size_t i = 0; i < k; i++)
            if (!b[i])
                b[i] = ' ';
        b[k] = 0;
        if (strstr(b, needle)) {
            n++;
            if (pid)
                *pid = atoi(e->d_name);
        }
    }
    if (d)
        closedir(d);
    return n;
}

TEST(hostile_daemon_is_gone)
{
    struct exec_result *r = run("sh",
        "setsid sh -c 'sleep 31337 & sleep 31337 & exit' </dev/null >/dev/null 2>&1\n"
        "( sleep 31337 & ) ; nohup sleep 31337 >/dev/null 2>&1 &\n"
        "echo spawned");
    EXPECT_STATUS(r, "completed", NULL);
    CHECK_EQ_INT(procs_with("sleep 31337", NULL), 0);
}

/* The host's first IPv4 address that is not loopback ("" when none). */
static void host_ipv4(char *out, size_t n)
{
    out[0] = '\0';
    struct ifaddrs *ifs = NULL, *i;
    if (getifaddrs(&ifs))
        return;
    for (i = ifs; i && !out[0]; i = i->ifa_next)
        if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && !(i->ifa_flags & IFF_LOOPBACK) &&
            (i->ifa_flags & IFF_UP))
            inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, out, (socklen_t)n);
    freeifaddrs(ifs);
}

TEST(hostile_network_off)
{
    /* a listener on every host address: the box tries the host's loopback
     * and (when it has one) its other address */
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
    CHECK(bind(ls, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(ls, 8) == 0);
    socklen_t al = sizeof(a);
    getsockname(ls, (struct sockaddr *)&a, &al);
    char ip[64], code[512];
    host_ipv4(ip, sizeof ip);
    snprintf(code, sizeof(code),
             "for h in 127.0.0.1 %s; do\n"
             "  if exec 5<>/dev/tcp/$h/%d; then echo \"$h CONNECTED\"; else echo \"$h refused\"; fi\n"
             "done 2>/dev/null",
             ip, ntohs(a.sin_port));
    char want[256];
    /* network off: nothing of the host */
    struct exec_result *r = run("bash", code);
    EXPECT_STATUS(r, "completed", NULL);
    char *o = joined("stdout");
    snprintf(want, sizeof want, "127.0.0.1 refused\n%s%s", ip, ip[0] ? " refused\n" : "");
    CHECK_EQ_STR(o, want);
    free(o);
    /* network on: through slirp4netns, the host's other address but not its
     * loopback (127.0.0.1 is the box's own); without slirp4netns, the
     * host's namespace, loopback and all (logged by the sandbox) */
    struct exec_spec s = base_spec("bash", code);
    s.network = true;
    r = run_spec(&s);
    EXPECT_STATUS(r, "completed", NULL);
    o = joined("stdout");
    bool slirp = access("/usr/bin/slirp4netns", X_OK) == 0 && access("/dev/net/tun", F_OK) == 0;
    if (slirp)
        snprintf(want, sizeof want, "127.0.0.1 refused\n%s%s", ip, ip[0] ? " CONNECTED\n" : "");
    else
        snprintf(want, sizeof want, "127.0.0.1 CONNECTED\n%s%s", ip, ip[0] ? " CONNECTED\n" : "");
    if (!slirp)
        fprintf(stderr, "note: no slirp4netns or /dev/net/tun here: network runs share the "
                        "host's namespace\n");
    CHECK_EQ_STR(o, want);
    free(o);
    close(ls);
}

TEST(hostile_reads_and_writes_outside)
{
    struct exec_result *r = run("sh",
        "cat /etc/shadow >/dev/null 2>&1 && echo READ_SHADOW\n"
        "ls /root /home /var/lib 2>/dev/null | head -1 | grep -q . && echo SEES_HOST_DIRS\n"
        "for p in /usr/x /etc/x /x /bin/x /proc/sys/kernel/hostname /sys/x /dev/x /quern-x; do\n"
        "  (echo hi > $p) 2>/dev/null && echo WROTE $p\n"
        "done\n"
        "ls /proc | grep -c '^[0-9]' \n"
        "echo ok > /tmp/t && echo ok > /scratch/t && echo WRITABLE_OK\n");
    EXPECT_STATUS(r, "completed", NULL);
    char *o = joined("stdout");
    CHECK(strstr(o, "READ_SHADOW") == NULL);
    CHECK(strstr(o, "SEES_HOST_DIRS") == NULL);
    CHECK(strstr(o, "WROTE") == NULL);
    CHECK(strstr(o, "WRITABLE_OK") != NULL);
    if (t_failed_checks)
        fprintf(stderr, "%s", o);
    free(o);
}

/* What a box sees of its root, for both ways a root is built: from the
 * shared template (the usual case) and whole (a runtime whose read-only path
 * is not a mount point the template has, configured after exec_new). */
static const char root_probe[] =
    "awk '{print $5, $6}' /proc/self/mountinfo > /tmp/mi\n"
    "grep -q '^/ ro,' /tmp/mi && echo ROOT_RO\n"
    "grep -q '^/usr ro,nosuid,nodev' /tmp/mi && echo USR_RO\n"
    "grep -q '^/quern ro,' /tmp/mi && echo QUERN_RO\n"
    "grep -q '^/scratch rw,nosuid,nodev' /tmp/mi && echo SCRATCH_RW\n"
    "grep -q '^/quern/out rw,nosuid,nodev' /tmp/mi && echo OUT_RW\n"
    "grep -q '^/sys' /tmp/mi && echo SEES_SYS\n"
    "grep -q '^/proc/sys ro,' /tmp/mi && echo PROCSYS_RO\n"
    "echo procs=$(ls /proc | grep -c '^[0-9]')\n"
    "tr '\\0' ' ' < /proc/1/cmdline | grep -q '^quern-init' && echo INIT_IS_1\n"
    "umount /proc 2>/dev/null && echo UMOUNTED\n"
    "(echo x > /quern/x) 2>/dev/null && echo WROTE_QUERN\n"
    "(echo x > /opt/x) 2>/dev/null && echo WROTE_OPT\n"
    "test -r /quern/input.json && echo INPUT_OK\n"
    "true\n";

static void check_root_view(const char *o, bool tpl)
{
    static const char *const want[] = {"ROOT_RO", "USR_RO", "SCRATCH_RW", "OUT_RW", "INIT_IS_1",
                                       "INPUT_OK", "PROCSYS_RO"};
    for (size_t i = 0; i < ARRAY_LEN(want); i++)
        CHECK(strstr(o, want[i]) != NULL);
    /* /quern is a mount of its own in a template root, part of the root otherwise */
    CHECK(!tpl || strstr(o, "QUERN_RO") != NULL);
    CHECK(strstr(o, "SEES_SYS") == NULL);
    CHECK(strstr(o, "UMOUNTED") == NULL);
    CHECK(strstr(o, "WROTE_") == NULL);
    const char *pc = strstr(o, "procs=");
    CHECK(pc && atoi(pc + 6) > 0 && atoi(pc + 6) <= 6);   /* the box's own processes only */
    if (t_failed_checks)
        fprintf(stderr, "%s", o);
}

TEST(box_root_view_template_and_whole)
{
    struct exec_result *r = run("sh", root_probe);
    EXPECT_STATUS(r, "completed", NULL);
    char *o = joined("stdout");
    check_root_view(o, true);
    free(o);

    /* a whole root: /opt/extra is no mount point of the template */
    char *dir = xasprintf("%s/ro-extra", root);
    CHECK_EQ_INT(mkdir(dir, 0755), 0);
    char *f = xasprintf("%s/hello.txt", dir);
    FILE *fp = fopen(f, "w");
    CHECK(fp != NULL);
    if (fp) {
        fputs("from the host\n", fp);
        fclose(fp);
    }
    char *ro = xasprintf("%s:/opt/extra", dir);
    CHECK_EQ_INT(runtime_config_set("shx", "interpreter", "/bin/sh"), 0);
    CHECK_EQ_INT(runtime_config_set("shx", "ro_paths", ro), 0);
    char *code = xasprintf("%scat /opt/extra/hello.txt\n(echo x > /opt/extra/y) 2>/dev/null && "
                           "echo WROTE_EXTRA\ntrue\n", root_probe);
    r = run("shx", code);
    EXPECT_STATUS(r, "completed", NULL);
    o = joined("stdout");
    check_root_view(o, false);
    CHECK(strstr(o, "from the host") != NULL);
    CHECK(strstr(o, "WROTE_EXTRA") == NULL);
    free(o);
    free(code);
    free(ro);
    free(f);
    free(dir);
}

TEST(hostile_syscalls_denied)
{
    if (access("/usr/bin/python3", X_OK) != 0) {
        fprintf(stderr, "  skip: python3 absent\n");
        return;
    }
    struct exec_result *r = run("python",
        "import ctypes, os, fcntl, termios, errno\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "rc = libc.ptrace(0, 0, 0, 0)\n"
        "print('ptrace', rc, ctypes.get_errno())\n"
        "try:\n"
        "    fcntl.ioctl(0, termios.TIOCSTI, b'x'); print('tiocsti ok')\n"
        "except OSError as e:\n"
        "    print('tiocsti', e.errno)\n"
        "print('unshare', libc.unshare(0x10000000), ctypes.get_errno())\n"
        "print('mount', libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())\n"
        "print('bpf', libc.syscall(321, 0, 0, 0), ctypes.get_errno())\n");
    EXPECT_STATUS(r, "completed", NULL);
    char *o = joined("stdout");
    CHECK(strstr(o, "ptrace -1 1\n") != NULL);
    CHECK(strstr(o, "tiocsti 1\n") != NULL);
    CHECK(strstr(o, "unshare -1 1\n") != NULL);
    CHECK(strstr(o, "mount -1 1\n") != NULL);
    CHECK(strstr(o, "bpf -1 1\n") != NULL);
    if (t_failed_checks)
        fprintf(stderr, "%s", o);
    free(o);
}

/* The box's processes sit in the slot's cgroups of this executor, for each
 * control in use (cgroup v1: memory, pids, cpuacct, each joined through its
 * own `tasks` file; v2: one cgroup): read from the host's side while the
 * code runs. */
TEST(box_joins_the_slot_cgroups)
{
    struct exec_spec s = base_spec("sh", "echo ready; exec sleep 4711");
    if (!start_until_line(&s, "ready"))
        return;
    /* "ready" comes before the exec of sleep: wait for it (at most 20 s) */
    int pid = -1;
    for (int i = 0; i < 2000 && procs_with("sleep 4711", &pid) == 0; i++)
        usleep(10000);
    CHECK(pid > 0);
    char p[64], line[1024], mine[64];
    snprintf(p, sizeof(p), "/proc/%d/cgroup", pid);
    snprintf(mine, sizeof(mine), "/quern-%d-", (int)getpid());
    FILE *f = fopen(p, "re");
    CHECK(f != NULL);
    bool v1 = access("/sys/fs/cgroup/memory/tasks", F_OK) == 0;
    int joined = 0, ncg = 0;
    while (f && fgets(line, sizeof(line), f)) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = '\0';
        const char *ctrls = c1 + 1, *path = c2 + 1;
        bool wanted = v1 ? strstr(ctrls, "memory") || strstr(ctrls, "pids") ||
                               strstr(ctrls, "cpuacct")
                         : *ctrls == '\0';
        if (!wanted)
            continue;
        ncg++;
        if (strstr(path, mine) && strstr(path, "/slot"))
            joined++;
        else
            fprintf(stderr, "  box not in its slot's cgroup: %s:%s", ctrls, path);
    }
    if (f)
        fclose(f);
    CHECK(ncg >= 1);
    CHECK_EQ_INT(joined, ncg);
    struct exec_result *r = cancel_and_wait(&s);
    EXPECT_STATUS(r, "canceled", NULL);
}

TEST(cpu_accounted_for_the_tree)
{
    struct exec_result *r = run("sh",
        "for i in 1 2 3; do ( i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done ) & done; wait");
    EXPECT_STATUS(r, "completed", NULL);
    CHECK(r && r->cpu_ms > 0 && r->wall_ms > 0 && r->peak_memory_kb > 0);
}

static int bl_exits;
static char bl_order[64];

static void bl_on_exit(void *ctx, const char *run_id, struct exec_result *res)
{
    pthread_mutex_lock(&mu);
    size_t n = strlen(bl_order);
    snprintf(bl_order + n, sizeof(bl_order) - n, "%s:%s ", run_id + 3, res->status);
    bl_exits++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    exec_result_release(res);
}

static int bl_flushed;   /* bl_exits as the last on_flush saw it */

static void bl_on_flush(void *ctx)
{
    pthread_mutex_lock(&mu);
    bl_flushed = bl_exits;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

TEST(backlog_waits_for_a_slot)
{
    reset();
    struct exec_callbacks cb = {.on_log = on_log, .on_exit = bl_on_exit, .on_notice = on_notice,
                                .on_flush = bl_on_flush};
    char *err = NULL;
    struct exec *ex2 = exec_new(1, &cb, &err);
    CHECK(ex2 != NULL);
    free(err);
    if (!ex2)
        return;
    exec_set_backlog(ex2, 2);
    CHECK_EQ_INT(exec_free_slots(ex2), 3);
    struct exec_spec a = base_spec("sh", "read x; echo got $x");
    a.run_id = "bl_a";
    struct exec_spec b = base_spec("sh", "read x; echo got $x");
    b.run_id = "bl_b";
    struct exec_spec c = base_spec("sh", "echo never");
    c.run_id = "bl_c";
    CHECK_EQ_INT(exec_start(ex2, &a), 0);
    CHECK_EQ_INT(exec_start(ex2, &b), 0);
    CHECK_EQ_INT(exec_start(ex2, &c), 0);
    CHECK_EQ_INT(exec_free_slots(ex2), 0);
    CHECK_EQ_INT(exec_start(ex2, &a), -EEXIST);
    /* b and c wait: stdin is queued for b, c is canceled before it runs */
    CHECK_EQ_INT(exec_send(ex2, "bl_b", "2"), 0);
    CHECK_EQ_INT(exec_cancel(ex2, "bl_c"), 0);
    pthread_mutex_lock(&mu);
    while (bl_exits < 1)
        pthread_cond_wait(&cv, &mu);
    CHECK_EQ_STR(bl_order, "c:canceled ");
    pthread_mutex_unlock(&mu);
    CHECK_EQ_INT(exec_send(ex2, "bl_a", "1"), 0);
    pthread_mutex_lock(&mu);
    while (bl_exits < 3)
        pthread_cond_wait(&cv, &mu);
    CHECK_EQ_STR(bl_order, "c:canceled a:completed b:completed ");
    /* every report is followed by an on_flush (the pending run's cancel too) */
    while (bl_flushed < 3)
        pthread_cond_wait(&cv, &mu);
    CHECK_EQ_INT(bl_flushed, 3);
    pthread_mutex_unlock(&mu);
    char *o = joined("stdout");
    CHECK_EQ_STR(o, "got 1\ngot 2\n");
    free(o);
    CHECK_EQ_INT(exec_free_slots(ex2), 3);
    exec_free(ex2);
}

TEST(zz_free_kills_running_boxes)
{
    struct exec_spec s = base_spec("sh",
        "sleep 4242 & while ! grep -q 4242 /proc/$!/cmdline 2>/dev/null; do :; done; echo up; wait");
    reset();
    struct exec_callbacks cb = {.on_log = on_log, .on_exit = on_exit_cb, .on_notice = on_notice};
    char *err = NULL;
    struct exec *ex2 = exec_new(1, &cb, &err);
    CHECK(ex2 != NULL);
    free(err);
    if (!ex2)
        return;
    CHECK_EQ_INT(exec_start(ex2, &s), 0);
    CHECK_EQ_INT(exec_free_slots(ex2), 0);
    CHECK_EQ_INT(exec_start(ex2, &s), -EEXIST);
    pthread_mutex_lock(&mu);
    while (nlogs == 0)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    CHECK_EQ_INT(procs_with("sleep 4242", NULL), 1);
    exec_free(ex2);
    CHECK_EQ_INT(procs_with("sleep 4242", NULL), 0);
    CHECK(result == NULL); /* no on_exit at exec_free */
}

TEST(zz_teardown)
{
    reset();
    json_decref(controls);
    controls = NULL;
    if (ex) {
        exec_free(ex);
        ex = NULL;
    }
    runtime_reset();
    char *cmd = xasprintf("rm -rf %s", root);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup failed\n");
    free(cmd);
}
