/*
 * cli — the quern command-line client (program main).  It talks only to the
 * HTTP API of quernd (API.md): each command is one row of the COMMANDS table
 * below, which also produces --help, `quern help COMMAND`, the man page and
 * the shell completions (cli_doc.c), so documentation cannot drift from the
 * parser.  Single-threaded; the only long-running parts are the SSE follow of
 * a run (run --wait, logs -f) and `watch`, both plain loops on this thread.
 *
 * Output: tables and key/value views for people; --json prints the server's
 * JSON unchanged but re-indented.  Diagnostics go to stderr as
 * "quern: <status> <type>: <message> (param: <field>)".  Exit codes: see
 * cli_doc.h (0 ok, 1 refused/run failed, 2 usage, 3 unreachable/5xx).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_args.h"
#include "cli_doc.h"
#include "cli_http.h"
#include "cli_sse.h"
#include "cli_table.h"
#include "jdump.h"
#include "store_copy.h"
#include "util.h"

#define DEFAULT_URL "http://127.0.0.1:7070"
#define MAX_FILE_BYTES (16u << 20)

#define C_RESET "\033[0m"
#define C_RED "\033[31m"
#define C_GREEN "\033[32m"
#define C_DIM "\033[2m"
#define C_BOLD "\033[1m"

struct cli_ctx {
    struct cli_http http;
    const struct cli_doc *doc;
    const struct cli_cmd *cmd;
    const char *url;
    const char *project_opt;
    char *project;              /* resolved and escaped project id */
    bool json;
    bool color_out, color_err;  /* colours allowed on stdout / stderr */
    bool tty_out, tty_err;
    bool http_ready;
    struct cli_resp resp;       /* the last response, raw */
    char **garbage;             /* strings freed at exit */
    size_t ngarbage;
};

static volatile int g_interrupted;   /* set by SIGINT/SIGTERM handlers */
static int g_out_errno;             /* first failed write to stdout (EPIPE: reader gone) */

/* ---- small helpers ---------------------------------------------------- */

__attribute__((format(printf, 2, 3))) static int usage_error(struct cli_ctx *c, const char *fmt,
                                                             ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("quern: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    if (c->cmd)
        fprintf(stderr, "usage: quern %s %s\n", c->cmd->words, c->cmd->synopsis);
    else
        fputs("Run 'quern --help' for usage.\n", stderr);
    return CLI_EXIT_USAGE;
}

/* Keeps s until exit and returns it (for path pieces built on the fly). */
static const char *keep(struct cli_ctx *c, char *s)
{
    c->garbage = xrealloc(c->garbage, (c->ngarbage + 1) * sizeof(char *));
    c->garbage[c->ngarbage++] = s;
    return s;
}

static const char *esc(struct cli_ctx *c, const char *s)
{
    return keep(c, cli_http_escape(s));
}

/* Flushes f and, for stdout, remembers the first write that failed: SIGPIPE
 * is ignored (libcurl's sockets), so a reader that went away (| head -1)
 * shows only as EPIPE here, and a follow must stop on it. */
static void out_flush(FILE *f)
{
    errno = 0;
    if (fflush(f) == EOF || ferror(f)) {
        if (f == stdout && !g_out_errno)
            g_out_errno = errno ? errno : EIO;
    }
}

static void write_out(FILE *f, const char *s, size_t n)
{
    errno = 0;
    if (fwrite(s, 1, n, f) < n && f == stdout && !g_out_errno)
        g_out_errno = errno ? errno : EIO;
    out_flush(f);
}

/* Prints the last response's JSON body, re-indented, to stdout. */
static void print_raw_json(struct cli_ctx *c)
{
    struct buf b;
    buf_init(&b);
    cli_json_pretty(c->resp.body.data ? c->resp.body.data : "", c->resp.body.len, &b);
    buf_puts(&b, "\n");
    write_out(stdout, b.data, b.len);
    buf_release(&b);
}

/* v indented, reals as the server writes them (exact, fewest digits:
 * jansson's 15-digit form showed 0.1 + 0.2 as 0.3). */
static void print_json_value(const json_t *v)
{
    size_t n = 0;
    char *s = jdump(v, &n);
    if (!s)
        return;
    struct buf b;
    buf_init(&b);
    cli_json_pretty(s, n, &b);
    buf_puts(&b, "\n");
    write_out(stdout, b.data, b.len);
    buf_release(&b);
    free(s);
}

/* Prints an error response as one line on stderr.  Its message may quote
 * what a user stored (a name, a schedule): control characters show as '?',
 * so it cannot break the line or drive the terminal. */
static void print_http_error(long status, const char *body, size_t len)
{
    char *t = cli_http_error_text(status, body, len);
    cli_scrub(t, '?', false);
    fprintf(stderr, "quern: %s\n", t);
    free(t);
}

/* Performs one request.  On 2xx parses the body into *out (when out is not
 * NULL; an empty body gives json null) and returns 0; otherwise prints the
 * error and returns the exit code. */
static int api(struct cli_ctx *c, const char *method, const char *path, json_t *body,
               json_t **out)
{
    char *payload = body ? jdump(body, NULL) : NULL;
    if (out)
        *out = NULL;
    c->resp.body.len = 0;
    if (c->resp.body.data)
        c->resp.body.data[0] = '\0';
    int rc = cli_http_do(&c->http, method, path, payload, &c->resp);
    free(payload);
    if (rc < 0) {
        fprintf(stderr, "quern: cannot reach the server: %s\n", c->http.err);
        return CLI_EXIT_UNREACHABLE;
    }
    long st = c->resp.status;
    if (st < 200 || st >= 300) {
        print_http_error(st, c->resp.body.data, c->resp.body.len);
        if (st == 401 && !c->http.key)
            fputs("quern: no API key given: set QUERN_KEY or pass --key\n", stderr);
        return st >= 500 || st < 100 ? CLI_EXIT_UNREACHABLE : CLI_EXIT_FAIL;
    }
    if (out) {
        if (c->resp.body.len == 0) {
            *out = json_null();
        } else {
            json_error_t e;
            *out = json_loadb(c->resp.body.data, c->resp.body.len, JSON_DECODE_ANY, &e);
            if (!*out) {
                fprintf(stderr, "quern: the answer of %s is not JSON (%s): is --url (or "
                        "QUERN_URL) the address of quernd?\n", c->http.shown, e.text);
                return CLI_EXIT_UNREACHABLE;
            }
        }
    }
    return CLI_EXIT_OK;
}

/* Resolves the project: --project, QUERN_PROJECT, else the project named
 * "default" if the key sees it, else the first it sees. */
static int project(struct cli_ctx *c, const char **out)
{
    if (c->project) {
        *out = c->project;
        return 0;
    }
    if (c->project_opt && *c->project_opt) {
        c->project = cli_http_escape(c->project_opt);
        *out = c->project;
        return 0;
    }
    json_t *j;
    int rc = api(c, "GET", "/api/projects?limit=500", NULL, &j);
    if (rc)
        return rc;
    json_t *data = json_is_array(j) ? j : json_object_get(j, "data");
    const char *pick = NULL;
    size_t i;
    json_t *p;
    json_array_foreach(data, i, p) {
        const char *id = json_string_value(json_object_get(p, "id"));
        const char *name = json_string_value(json_object_get(p, "name"));
        if (!id)
            continue;
        if (!pick)
            pick = id;
        if ((name && !strcmp(name, "default")) || !strcmp(id, "default")) {
            pick = id;
            break;
        }
    }
    if (!pick) {
        json_decref(j);
        fputs("quern: this key sees no project; pass --project or create one with "
              "'quern projects create NAME'\n", stderr);
        return CLI_EXIT_FAIL;
    }
    c->project = cli_http_escape(pick);
    json_decref(j);
    *out = c->project;
    return 0;
}

/* "/api/projects/<p><fmt...>" built in one go; NULL (and *rc set) when the
 * project cannot be resolved. */
__attribute__((format(printf, 3, 4))) static const char *ppath(struct cli_ctx *c, int *rc,
                                                               const char *fmt, ...)
{
    const char *p;
    *rc = project(c, &p);
    if (*rc)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    struct buf b;
    buf_init(&b);
    buf_printf(&b, "/api/projects/%s", p);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    return keep(c, buf_steal(&b));
}

static void query_add(struct buf *q, const char *name, const char *value)
{
    if (!value)
        return;
    char *e = cli_http_escape(value);
    buf_printf(q, "%c%s=%s", q->len ? '&' : '?', name, e);
    free(e);
}

/* Parses a JSON flag; objects only unless any_type.  Returns 0 (and *out,
 * NULL when the flag is absent) or a usage error naming the flag. */
static int json_flag(struct cli_ctx *c, const struct cli_args *a, const char *flag,
                     bool any_type, json_t **out)
{
    *out = NULL;
    const char *v = cli_args_get(a, flag);
    if (!v)
        return 0;
    json_error_t e;
    json_t *j = json_loads(v, JSON_DECODE_ANY, &e);
    if (!j)
        return usage_error(c, "--%s: invalid JSON: %s (line %d, column %d)", flag, e.text,
                           e.line, e.column);
    if (!any_type && !json_is_object(j)) {
        json_decref(j);
        return usage_error(c, "--%s: must be a JSON object, like '{\"key\": \"value\"}'", flag);
    }
    *out = j;
    return 0;
}

static int read_file(struct cli_ctx *c, const char *path, char **out, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "quern: %s: %s\n", path, strerror(errno));
        return CLI_EXIT_USAGE;
    }
    struct buf b;
    buf_init(&b);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        buf_append(&b, chunk, n);
        if (b.len > MAX_FILE_BYTES) {
            if (f != stdin)
                fclose(f);
            buf_release(&b);
            return usage_error(c, "%s: larger than %u bytes", path, MAX_FILE_BYTES);
        }
    }
    bool bad = ferror(f);
    if (f != stdin)
        fclose(f);
    if (bad) {
        buf_release(&b);
        fprintf(stderr, "quern: %s: read error\n", path);
        return CLI_EXIT_USAGE;
    }
    *len = b.len;
    *out = b.data ? buf_steal(&b) : xstrdup("");
    return 0;
}

/* Byte offset of the first byte of s[0..n) that is not valid UTF-8 (or is
 * NUL), n when there is none.  JSON strings are UTF-8: jansson refuses the
 * rest, and a field it refused was silently left out of the request. */
static size_t utf8_bad_at(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        size_t k = *p == 0 ? 0 : *p < 0x80 ? 1 : jdump_utf8_len(p, end);
        if (!k)
            break;
        p += k;
    }
    return (size_t)(p - (const unsigned char *)s);
}

/* The code of -f FILE or --code; *code NULL when neither was given. */
static int code_flag(struct cli_ctx *c, const struct cli_args *a, char **code)
{
    *code = NULL;
    const char *file = cli_args_get(a, "file");
    const char *inl = cli_args_get(a, "code");
    if (file && inl)
        return usage_error(c, "give either -f/--file or --code, not both");
    if (inl) {
        *code = xstrdup(inl);
        return 0;
    }
    if (!file)
        return 0;
    size_t len = 0;
    int rc = read_file(c, file, code, &len);
    if (rc)
        return rc;
    size_t bad = utf8_bad_at(*code, len);
    if (bad < len) {
        unsigned byte = (unsigned char)(*code)[bad];
        free(*code);
        *code = NULL;
        return usage_error(c, "%s: not UTF-8 text (byte %zu is 0x%02x)", file, bad, byte);
    }
    return 0;
}

/* A runtime guessed from a file name's extension, or NULL. */
static const char *runtime_for(const char *file)
{
    const char *dot = file ? strrchr(file, '.') : NULL;
    if (!dot)
        return NULL;
    static const char *const map[][2] = {
        {".py", "python"}, {".js", "node"}, {".mjs", "node"}, {".ts", "ts"},
        {".mts", "ts"},    {".sh", "sh"},   {".bash", "bash"},
    };
    for (size_t i = 0; i < ARRAY_LEN(map); i++)
        if (!strcmp(dot, map[i][0]))
            return map[i][1];
    return NULL;
}

static int priority_flag(struct cli_ctx *c, const struct cli_args *a, const char **out)
{
    *out = cli_args_get(a, "priority");
    if (*out && !cli_args_one_of(*out, "low medium high urgent"))
        return usage_error(c, "--priority: must be one of low, medium, high, urgent (got '%s')",
                           *out);
    return 0;
}

/* ---- rendering -------------------------------------------------------- */

static const struct cli_col TASK_COLS[] = {
    {"ID", "id", CLI_FMT_TEXT},           {"NAME", "name", CLI_FMT_TEXT},
    {"STATUS", "status", CLI_FMT_TEXT},   {"PRIORITY", "priority", CLI_FMT_TEXT},
    {"TYPE", "type", CLI_FMT_TEXT},       {"RUNS", "run_count", CLI_FMT_TEXT},
    {"CREATED", "created_at", CLI_FMT_AGE},
};
static const struct cli_col RUN_COLS[] = {
    {"ID", "id", CLI_FMT_TEXT},
    {"TASK", "task_id", CLI_FMT_TEXT},
    {"STATUS", "status", CLI_FMT_TEXT},
    {"ATTEMPT", "attempt", CLI_FMT_TEXT},
    {"DURATION", "duration_ms", CLI_FMT_DURATION},
    {"CREATED", "created_at", CLI_FMT_AGE},
};
static const struct cli_col WATCH_COLS[] = {
    {"ID", "id", CLI_FMT_TEXT},
    {"TASK", "task_id", CLI_FMT_TEXT},
    {"STATUS", "status", CLI_FMT_TEXT},
    {"PROGRESS", "progress", CLI_FMT_PERCENT},
    {"ATTEMPT", "attempt", CLI_FMT_TEXT},
    {"STARTED", "started_at", CLI_FMT_AGE},
    {"CREATED", "created_at", CLI_FMT_AGE},
};
static const struct cli_col PROJECT_COLS[] = {
    {"ID", "id", CLI_FMT_TEXT},
    {"NAME", "name", CLI_FMT_TEXT},
    {"CREATED", "created_at", CLI_FMT_AGE},
};
static const struct cli_col KEY_COLS[] = {
    {"ID", "id", CLI_FMT_TEXT},
    {"NAME", "name", CLI_FMT_TEXT},
    {"SCOPES", "scopes", CLI_FMT_TEXT},
    {"CREATED", "created_at", CLI_FMT_AGE},
    {"REVOKED", "revoked_at", CLI_FMT_AGE},     /* "-" while the key works */
};
static const struct cli_col DEF_COLS[] = {
    {"ID", "id", CLI_FMT_TEXT},
    {"TITLE", "title", CLI_FMT_TEXT},
    {"RUNTIME", "runtime_id", CLI_FMT_TEXT},
    {"CREATED", "created_at", CLI_FMT_AGE},
};

static const struct cli_col SCHEDULE_COLS[] = {
    {"AT", "at", CLI_FMT_TEXT},
    {"LOCAL", "local", CLI_FMT_TEXT},
};

/* Prints a list response as a table (or raw with --json). */
static int show_list(struct cli_ctx *c, json_t *j, const struct cli_col *cols, size_t ncols,
                     const char *noun)
{
    if (c->json) {
        print_raw_json(c);
        return 0;
    }
    json_t *data = json_is_array(j) ? j : json_object_get(j, "data");
    if (!json_is_array(data) || json_array_size(data) == 0) {
        fprintf(stderr, "No %s.\n", noun);
        return 0;
    }
    const char **hdr = xcalloc(ncols, sizeof(char *));
    for (size_t i = 0; i < ncols; i++)
        hdr[i] = cols[i].header;
    struct cli_table t;
    cli_table_init(&t, ncols, hdr);
    free(hdr);
    cli_table_add_json(&t, cols, ncols, data, now_ms());
    struct buf b;
    buf_init(&b);
    cli_table_render(&t, &b, c->color_out);
    write_out(stdout, b.data, b.len);
    buf_release(&b);
    cli_table_release(&t);
    if (json_is_true(json_object_get(j, "has_more"))) {
        json_int_t total = json_integer_value(json_object_get(j, "total"));
        const char *last = json_string_value(
            json_object_get(json_array_get(data, json_array_size(data) - 1), "id"));
        if (last && (!strcmp(noun, "tasks") || !strcmp(noun, "runs")))
            fprintf(stderr, "(%zu shown of %lld; the next page: --after %s)\n",
                    json_array_size(data), (long long)total, last);
        else
            fprintf(stderr, "(%zu shown of %lld; see more with --offset/--limit)\n",
                    json_array_size(data), (long long)total);
    }
    return 0;
}

static int show_object(struct cli_ctx *c, json_t *j)
{
    if (c->json) {
        print_raw_json(c);
        return 0;
    }
    if (!json_is_object(j)) {
        print_json_value(j);
        return 0;
    }
    struct buf b;
    buf_init(&b);
    cli_render_kv(j, &b, c->color_out);
    write_out(stdout, b.data, b.len);
    buf_release(&b);
    return 0;
}

static const char *str(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static bool terminal(const char *status)
{
    return cli_args_one_of(status, "completed failed timed_out denied canceled");
}

static void on_sigint(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

static void catch_interrupts(struct cli_ctx *c)
{
    struct sigaction sa = {.sa_handler = on_sigint};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    c->http.cancel = &g_interrupted;
}

/* ---- following a run -------------------------------------------------- */

struct follow {
    struct cli_ctx *c;
    struct cli_sse sse;
    double progress;
    bool have_progress, bar_shown;
    char final[32];             /* terminal status seen on the stream */
    const char *run_id;
    FILE *logout;               /* where stdout entries go (stderr with --json) */
};

static void bar_clear(struct follow *f)
{
    if (f->bar_shown) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
        f->bar_shown = false;
    }
}

static void bar_draw(struct follow *f)
{
    if (!f->have_progress || !f->c->tty_err || f->c->json)
        return;
    int w = 30, fill = (int)(f->progress * w + 0.5);
    if (fill < 0)
        fill = 0;
    if (fill > w)
        fill = w;
    char bar[64];
    for (int i = 0; i < w; i++)
        bar[i] = i < fill ? '#' : '-';
    bar[w] = '\0';
    fprintf(stderr, "\r\033[K[%s] %3d%%", bar, (int)(f->progress * 100 + 0.5));
    fflush(stderr);
    f->bar_shown = true;
}

/* Prints one log entry {type, level, message, ...}: stdout lines plain on
 * stdout, stderr lines on stderr (red on a terminal), other entries with
 * their level. */
static void print_entry(struct cli_ctx *c, FILE *out, const json_t *e)
{
    const char *type = str(e, "type");
    const char *level = str(e, "level");
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (!msg)
        msg = "";
    size_t n = strlen(msg);
    const char *nl = n && msg[n - 1] == '\n' ? "" : "\n";
    if (!strcmp(type, "stderr")) {
        fprintf(stderr, "%s%s%s%s", c->color_err ? C_RED : "", msg, c->color_err ? C_RESET : "",
                nl);
        fflush(stderr);
    } else if (!strcmp(type, "stdout") || (!*type && !*level)) {
        fprintf(out, "%s%s", msg, nl);
        out_flush(out);
    } else {
        bool col = out == stdout ? c->color_out : c->color_err;
        bool bad = !strcmp(level, "error") || !strcmp(level, "fatal");
        fprintf(out, "%s[%s]%s %s%s", col ? (bad ? C_RED : C_DIM) : "", *level ? level : type,
                col ? C_RESET : "", msg, nl);
        out_flush(out);
    }
}

static int on_event(const char *type, const char *data, const char *id, void *ud)
{
    struct follow *f = ud;
    json_error_t e;
    json_t *j = json_loads(data, JSON_DECODE_ANY, &e);
    if (!json_is_object(j)) {
        json_decref(j);
        return 0;
    }
    const char *et = strcmp(type, "message") ? type : str(j, "type");
    const char *dot = strrchr(et, '.');
    const char *kind = dot ? dot + 1 : et;
    json_t *inner = json_object_get(j, "data");
    json_t *payload = json_is_object(inner) ? inner : j;
    int stop = 0;
    if (!strcmp(kind, "log") || (!*kind && json_object_get(j, "message"))) {
        bar_clear(f);
        print_entry(f->c, f->logout, payload);
        bar_draw(f);
    } else if (!strcmp(kind, "progress")) {
        json_t *p = json_object_get(payload, "progress");
        if (!json_is_number(p))
            p = json_object_get(j, "progress");
        if (json_is_number(p)) {
            f->progress = json_number_value(p);
            f->have_progress = true;
            bar_draw(f);
        }
    } else if (terminal(kind)) {
        snprintf(f->final, sizeof(f->final), "%s", kind);
        stop = 1;
    } else if (!strcmp(kind, "interaction_required") || !strcmp(kind, "review_required")) {
        /* The run waits for a person: say how to answer it (a follow would
         * otherwise wait in silence).  The event does not carry the question;
         * runs get shows it. */
        bool review = kind[0] == 'r';
        bar_clear(f);
        fprintf(stderr, "quern: run %s waits for %s (quern runs get %s shows it); answer with: "
                "quern runs %s %s %s\n", f->run_id, review ? "a review" : "an answer", f->run_id,
                review ? "review" : "respond", f->run_id,
                review ? "--approve|--reject" : "--approve|--deny|--response JSON");
        fflush(stderr);
        bar_draw(f);
    } else if (!strcmp(kind, "retrying")) {
        bar_clear(f);
        fprintf(stderr, "%s-- retrying%s\n", f->c->color_err ? C_DIM : "",
                f->c->color_err ? C_RESET : "");
        bar_draw(f);
    }
    json_decref(j);
    (void)id;
    return g_interrupted || g_out_errno ? 1 : stop;
}

static int on_chunk(const char *p, size_t n, void *ud)
{
    struct follow *f = ud;
    return cli_sse_feed(&f->sse, p, n, on_event, f);
}

/* GETs a run by id alone. */
static int get_run(struct cli_ctx *c, const char *run_id, json_t **out)
{
    int rc;
    const char *path = ppath(c, &rc, "/task-runs/%s", esc(c, run_id));
    return path ? api(c, "GET", path, NULL, out) : rc;
}

/* Prints a run's whole log (GET .../logs, JSONL); raw with --json. */
static int print_logs(struct cli_ctx *c, const char *task_id, const char *run_id, FILE *out)
{
    int rc;
    const char *path = ppath(c, &rc, "/tasks/%s/runs/%s/logs", esc(c, task_id), esc(c, run_id));
    if (!path || (rc = api(c, "GET", path, NULL, NULL)))
        return rc;
    if (c->json) {
        write_out(stdout, c->resp.body.data ? c->resp.body.data : "", c->resp.body.len);
        return 0;
    }
    /* JSONL: one entry a line. */
    const char *p = c->resp.body.data ? c->resp.body.data : "";
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        json_error_t e;
        json_t *entry = n ? json_loadb(p, n, 0, &e) : NULL;
        if (json_is_object(entry))
            print_entry(c, out, entry);
        json_decref(entry);
        if (g_out_errno)
            break;      /* main reports it */
        p += n + (nl ? 1 : 0);
    }
    return 0;
}

/* Waits for a run to end by polling it every second, then prints its log. */
static int poll_run(struct cli_ctx *c, const char *task_id, const char *run_id, FILE *out)
{
    for (;;) {
        json_t *run;
        int rc = get_run(c, run_id, &run);
        if (rc)
            return rc;
        bool done = terminal(str(run, "status"));
        json_decref(run);
        if (done)
            break;
        if (g_interrupted)
            return CLI_EXIT_INTERRUPTED;
        sleep(1);
    }
    bool json = c->json;
    c->json = false;    /* the log is for people; --json gets the run at the end */
    int rc = print_logs(c, task_id, run_id, out);
    c->json = json;
    return rc;
}

/* Follows a run's event stream until it ends, printing its log live; returns
 * 0 when the run completed, 1 when it ended otherwise, 3 when unreachable. */
static int follow_run(struct cli_ctx *c, const char *task_id, const char *run_id)
{
    int rc;
    const char *path =
        ppath(c, &rc, "/tasks/%s/runs/%s/stream", esc(c, task_id), esc(c, run_id));
    if (!path)
        return rc;
    struct follow f = {.c = c, .logout = c->json ? stderr : stdout, .run_id = run_id};
    cli_sse_init(&f.sse);
    catch_interrupts(c);
    int failures = 0;
    json_t *run = NULL;
    for (;;) {
        struct cli_resp r = {0};
        buf_init(&r.body);
        cli_sse_restart(&f.sse);
        int hr = cli_http_stream(&c->http, path, cli_sse_last_id(&f.sse), on_chunk, &f, &r);
        bar_clear(&f);
        if (hr == 0 && (r.status == 404 || r.status == 405 || r.status == 501)) {
            /* A server without the stream endpoint: fall back to polling,
             * then print the whole log once the run has ended. */
            buf_release(&r.body);
            rc = poll_run(c, task_id, run_id, f.logout);
            if (rc)
                goto out;
            json_decref(run);
            run = NULL;
            if ((rc = get_run(c, run_id, &run)))
                goto out;
            break;
        }
        if (hr == 0 && (r.status < 200 || r.status >= 300)) {
            print_http_error(r.status, r.body.data, r.body.len);
            buf_release(&r.body);
            rc = r.status >= 500 ? CLI_EXIT_UNREACHABLE : CLI_EXIT_FAIL;
            goto out;
        }
        buf_release(&r.body);
        if (g_out_errno) {
            rc = 0;     /* stdout is gone: stop following; main sets the status */
            goto out;
        }
        if (g_interrupted) {
            fprintf(stderr, "\nquern: interrupted; run %s goes on (quern logs -f %s)\n", run_id,
                    run_id);
            rc = CLI_EXIT_INTERRUPTED;
            goto out;
        }
        if (hr < 0 && ++failures >= 5) {
            fprintf(stderr, "quern: lost the stream: %s\n", c->http.err);
            rc = CLI_EXIT_UNREACHABLE;
            goto out;
        }
        if (hr < 0) {
            /* The server went away (a restart, a proxy, the network): try
             * the stream again each second, from the last event seen.  A
             * look at the run here would fail the same way and ended the
             * follow at the first failure, with exit 3. */
            sleep(1);
            continue;
        }
        failures = 0;
        /* The stream ended: make sure the run has, too (a retry keeps it going). */
        json_decref(run);
        run = NULL;
        rc = get_run(c, run_id, &run);
        if (rc)
            goto out;
        if (terminal(str(run, "status")))
            break;
        f.final[0] = '\0';
        sleep(1);   /* the stream ended early (a retry, a proxy): reconnect */
    }
    const char *status = str(run, "status");
    if (c->json) {
        print_raw_json(c);
    } else {
        bool ok = !strcmp(status, "completed");
        const char *col = c->color_err ? (ok ? C_GREEN : C_RED) : "";
        char dur[32] = "";
        json_t *d = json_object_get(run, "duration_ms");
        if (json_is_number(d)) {
            char tmp[24];
            cli_fmt_duration((int64_t)json_number_value(d), tmp, sizeof(tmp));
            snprintf(dur, sizeof(dur), " in %s", tmp);
        }
        fprintf(stderr, "%srun %s %s%s%s", col, run_id, status, dur, col[0] ? C_RESET : "");
        /* The run's error may carry what its code wrote: scrubbed, one line. */
        json_t *err = json_object_get(run, "error");
        char *why = NULL;
        if (!ok && json_is_object(err))
            why = xasprintf(": %s%s%s", str(err, "code"), *str(err, "message") ? ": " : "",
                            str(err, "message"));
        else if (!ok && json_is_string(err))
            why = xasprintf(": %s", json_string_value(err));
        if (why) {
            cli_scrub(why, '?', false);
            fputs(why, stderr);
            free(why);
        }
        fputc('\n', stderr);
    }
    rc = strcmp(status, "completed") == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
out:
    json_decref(run);
    cli_sse_release(&f.sse);
    return rc;
}

/* The id of the run a task response carries ("run" object), else of the
 * task's newest run.  NULL (and *rc set when an error was printed) if none. */
static char *run_of_task(struct cli_ctx *c, json_t *task, int *rc)
{
    *rc = 0;
    json_t *run = json_object_get(task, "run");
    if (json_is_object(run) && json_is_string(json_object_get(run, "id")))
        return xstrdup(str(run, "id"));
    if (json_is_string(json_object_get(task, "task_id")) && json_is_string(json_object_get(task, "id")))
        return xstrdup(str(task, "id"));    /* it is a run already */
    const char *path = ppath(c, rc, "/tasks/%s/runs?limit=1", esc(c, str(task, "id")));
    if (!path)
        return NULL;
    json_t *j;
    *rc = api(c, "GET", path, NULL, &j);
    if (*rc)
        return NULL;
    json_t *data = json_is_array(j) ? j : json_object_get(j, "data");
    json_t *first = json_array_get(data, 0);
    char *id = json_is_object(first) ? xstrdup(str(first, "id")) : NULL;
    json_decref(j);
    return id && *id ? id : (free(id), NULL);
}

/* After starting a run: follow it (--wait) or say what was started. */
static int started(struct cli_ctx *c, const struct cli_args *a, json_t *obj, const char *task_id)
{
    int rc;
    char *run_id = run_of_task(c, obj, &rc);
    if (rc)
        return rc;
    if (cli_args_has(a, "wait")) {
        if (!run_id) {
            fputs("quern: no run was started, nothing to wait for\n", stderr);
            return CLI_EXIT_FAIL;
        }
        rc = follow_run(c, task_id, run_id);
        free(run_id);
        return rc;
    }
    /* The last response may be the runs list; print the object we were given,
     * or, for a task that does not carry its run (quern run), the run: its id
     * is what a script follows or waits for, as the text says. */
    if (c->json) {
        bool has_run = json_is_object(json_object_get(obj, "run")) ||
                       json_is_string(json_object_get(obj, "task_id"));
        json_t *run = NULL;
        if (run_id && !has_run) {
            rc = get_run(c, run_id, &run);
            if (!rc)
                print_raw_json(c);
            json_decref(run);
        } else {
            print_json_value(obj);
        }
    } else if (run_id) {
        printf("run %s started (task %s)\n", run_id, task_id);
        if (c->tty_out)
            printf("follow it with: quern logs -f %s\n", run_id);
    } else {
        printf("task %s created (no run started)\n", task_id);
    }
    free(run_id);
    return rc;
}

/* ---- commands: projects and keys ------------------------------------- */

static int list_query(struct cli_ctx *c, const struct cli_args *a, struct buf *q)
{
    char err[160];
    int64_t n;
    static const char *const ints[] = {"limit", "offset"};
    for (size_t i = 0; i < ARRAY_LEN(ints); i++) {
        /* the server's ranges: limit 1-500 (0 was let through, then refused) */
        if (cli_args_int(a, ints[i], i == 0 ? 1 : 0, i == 0 ? 500 : INT64_MAX / 2, &n, err,
                         sizeof(err)) < 0)
            return usage_error(c, "%s", err);
        query_add(q, ints[i], cli_args_get(a, ints[i]));
    }
    /* tasks and runs: the page after an id (a cursor that new ones do not shift) */
    query_add(q, "starting_after", cli_args_get(a, "after"));
    return 0;
}

static int cmd_projects_list(struct cli_ctx *c, const struct cli_args *a)
{
    struct buf q;
    buf_init(&q);
    int rc = list_query(c, a, &q);
    json_t *j = NULL;
    if (!rc) {
        char *path = xasprintf("/api/projects%s", q.data ? q.data : "");
        rc = api(c, "GET", path, NULL, &j);
        free(path);
    }
    if (!rc)
        rc = show_list(c, j, PROJECT_COLS, ARRAY_LEN(PROJECT_COLS), "projects");
    json_decref(j);
    buf_release(&q);
    return rc;
}

static int cmd_projects_create(struct cli_ctx *c, const struct cli_args *a)
{
    json_t *body = json_pack("{s:s}", "name", a->pos[0]), *j;
    int rc = api(c, "POST", "/api/projects", body, &j);
    json_decref(body);
    if (!rc) {
        if (c->json) {
            print_raw_json(c);
        } else {
            char *name = xstrdup(str(j, "name"));
            cli_scrub(name, '?', false);
            printf("project %s created (%s)\n", str(j, "id"), name);
            free(name);
        }
    }
    json_decref(j);
    return rc;
}

static int cmd_keys_list(struct cli_ctx *c, const struct cli_args *a)
{
    /* Paged like the other lists: past the server's default 50 the rest
     * could not be listed, yet the hint offered --offset/--limit. */
    struct buf q;
    buf_init(&q);
    int rc = list_query(c, a, &q);
    const char *path = rc ? NULL : ppath(c, &rc, "/api_keys%s", q.data ? q.data : "");
    json_t *j = NULL;
    if (path && !(rc = api(c, "GET", path, NULL, &j)))
        rc = show_list(c, j, KEY_COLS, ARRAY_LEN(KEY_COLS), "API keys");
    json_decref(j);
    buf_release(&q);
    return rc;
}

static int cmd_keys_create(struct cli_ctx *c, const struct cli_args *a)
{
    if (!cli_args_nth(a, "scope", 0))   /* the usage's --scope is not optional */
        return usage_error(c, "keys create needs --scope (task:read, task:write, worker or admin)");
    json_t *scopes = json_array();
    const char *s;
    for (size_t i = 0; (s = cli_args_nth(a, "scope", i)); i++)
        json_array_append_new(scopes, json_string(s));
    json_t *body = json_pack("{s:s,s:o}", "name", a->pos[0], "scopes", scopes), *j = NULL;
    int rc;
    const char *path = ppath(c, &rc, "/api_keys");
    if (path && !(rc = api(c, "POST", path, body, &j))) {
        if (c->json) {
            print_raw_json(c);
        } else {
            char *sc = cli_cell(json_object_get(j, "scopes"), CLI_FMT_TEXT, 0);
            printf("key %s created, scopes %s\n", str(j, "id"), sc);
            printf("%s\n", str(j, "key"));
            fputs("(the key is shown only once: store it now)\n", stderr);
            free(sc);
        }
    }
    json_decref(body);
    json_decref(j);
    return rc;
}

static int cmd_keys_revoke(struct cli_ctx *c, const struct cli_args *a)
{
    int rc;
    const char *path = ppath(c, &rc, "/api_keys/%s", esc(c, a->pos[0]));
    if (path && !(rc = api(c, "DELETE", path, NULL, NULL))) {
        if (c->json)
            print_raw_json(c);
        else
            printf("key %s revoked\n", a->pos[0]);
    }
    return rc;
}

/* ---- commands: definitions -------------------------------------------- */

static int cmd_defs_list(struct cli_ctx *c, const struct cli_args *a)
{
    struct buf q;
    buf_init(&q);
    int rc = list_query(c, a, &q);
    json_t *j = NULL;
    const char *path = rc ? NULL : ppath(c, &rc, "/definitions%s", q.data ? q.data : "");
    if (path && !(rc = api(c, "GET", path, NULL, &j)))
        rc = show_list(c, j, DEF_COLS, ARRAY_LEN(DEF_COLS), "definitions");
    json_decref(j);
    buf_release(&q);
    return rc;
}

/* GET/DELETE of one object at <project><prefix>/<id>. */
static int one(struct cli_ctx *c, const char *method, const char *prefix, const char *id,
               const char *noun)
{
    int rc;
    const char *path = ppath(c, &rc, "%s/%s", prefix, esc(c, id));
    json_t *j = NULL;
    if (path && !(rc = api(c, method, path, NULL, &j))) {
        if (!strcmp(method, "GET"))
            rc = show_object(c, j);
        else if (c->json)
            print_raw_json(c);
        else
            printf("%s %s deleted\n", noun, id);
    }
    json_decref(j);
    return rc;
}

static int cmd_defs_get(struct cli_ctx *c, const struct cli_args *a)
{
    return one(c, "GET", "/definitions", a->pos[0], "definition");
}

static int cmd_defs_delete(struct cli_ctx *c, const struct cli_args *a)
{
    return one(c, "DELETE", "/definitions", a->pos[0], "definition");
}

static int cmd_defs_create(struct cli_ctx *c, const struct cli_args *a)
{
    json_t *in_s = NULL, *out_s = NULL, *j = NULL, *body = NULL;
    char *code = NULL;
    int rc;
    if ((rc = json_flag(c, a, "input-schema", true, &in_s)) ||
        (rc = json_flag(c, a, "output-schema", true, &out_s)) || (rc = code_flag(c, a, &code)))
        goto out;
    if (!cli_args_get(a, "id") || !cli_args_get(a, "title")) {
        rc = usage_error(c, "--id and --title are required");
        goto out;
    }
    body = json_pack("{s:s,s:s}", "id", cli_args_get(a, "id"), "title", cli_args_get(a, "title"));
    const char *rt = cli_args_get(a, "runtime");
    if (!rt)
        rt = runtime_for(cli_args_get(a, "file"));
    if (rt)
        json_object_set_new(body, "runtime_id", json_string(rt));
    if (cli_args_get(a, "description"))
        json_object_set_new(body, "description", json_string(cli_args_get(a, "description")));
    if (code)
        json_object_set_new(body, "code", json_string(code));
    if (in_s)
        json_object_set(body, "input_schema", in_s);
    if (out_s)
        json_object_set(body, "output_schema", out_s);
    const char *path = ppath(c, &rc, "/definitions");
    if (path && !(rc = api(c, "POST", path, body, &j))) {
        if (c->json)
            print_raw_json(c);
        else
            printf("definition %s created\n", str(j, "id"));
    }
out:
    json_decref(in_s);
    json_decref(out_s);
    json_decref(body);
    json_decref(j);
    free(code);
    return rc;
}

static int cmd_defs_trigger(struct cli_ctx *c, const struct cli_args *a)
{
    json_t *input = NULL, *j = NULL;
    int rc = json_flag(c, a, "input", false, &input);
    if (rc)
        return rc;
    json_t *body = json_object();
    if (input)
        json_object_set_new(body, "input", input);
    if (cli_args_get(a, "name"))
        json_object_set_new(body, "name", json_string(cli_args_get(a, "name")));
    const char *path = ppath(c, &rc, "/definitions/%s/trigger", esc(c, a->pos[0]));
    if (path && !(rc = api(c, "POST", path, body, &j))) {
        if (c->json && !cli_args_has(a, "wait"))
            print_raw_json(c);
        else
            rc = started(c, a, j, str(j, "id"));
    }
    json_decref(body);
    json_decref(j);
    return rc;
}

/* ---- commands: tasks ---------------------------------------------------- */

/* tasks create, and the `run` shortcut (which insists on code). */
static int create_task(struct cli_ctx *c, const struct cli_args *a, bool shortcut)
{
    json_t *input = NULL, *body = NULL, *j = NULL, *settings = json_object();
    char *code = NULL;
    const char *prio;
    char err[160];
    int64_t n;
    int rc;
    if ((rc = json_flag(c, a, "input", false, &input)) || (rc = priority_flag(c, a, &prio)) ||
        (rc = code_flag(c, a, &code)))
        goto out;
    if (shortcut && !code) {
        rc = usage_error(c, "give the code with -f FILE or --code CODE");
        goto out;
    }
    static const char *const ints[][2] = {{"timeout-ms", "timeout_ms"},
                                          {"max-retries", "max_retries"}};
    for (size_t i = 0; i < ARRAY_LEN(ints); i++) {
        int r = cli_args_int(a, ints[i][0], 0, INT32_MAX, &n, err, sizeof(err));
        if (r < 0) {
            rc = usage_error(c, "%s", err);
            goto out;
        }
        if (r == 0)
            json_object_set_new(settings, ints[i][1], json_integer(n));
    }
    const char *type = cli_args_get(a, "type");
    if (type && !cli_args_one_of(type, "manual scheduled triggered")) {
        rc = usage_error(c, "--type: must be one of manual, scheduled, triggered (got '%s')", type);
        goto out;
    }
    body = json_object();
    const char *file = cli_args_get(a, "file");
    const char *rt = cli_args_get(a, "runtime");
    if (!rt)
        rt = runtime_for(file);
    const char *name = cli_args_get(a, "name");
    if (!name && shortcut && file) {
        const char *slash = strrchr(file, '/');
        name = slash ? slash + 1 : file;
    }
    static const char *const strs[][2] = {{"description", "description"},
                                          {"schedule", "schedule"},
                                          {"timezone", "timezone"},
                                          {"definition", "definition_id"},
                                          {"agent", "assigned_agent_id"}};
    if (name)
        json_object_set_new(body, "name", json_string(name));
    for (size_t i = 0; i < ARRAY_LEN(strs); i++)
        if (cli_args_get(a, strs[i][0]))
            json_object_set_new(body, strs[i][1], json_string(cli_args_get(a, strs[i][0])));
    if (type)
        json_object_set_new(body, "type", json_string(type));
    else if (cli_args_get(a, "schedule"))
        json_object_set_new(body, "type", json_string("scheduled"));
    if (rt)
        json_object_set_new(body, "runtime_id", json_string(rt));
    if (code)
        json_object_set_new(body, "code", json_string(code));
    if (input)
        json_object_set(body, "input", input);
    if (prio)
        json_object_set_new(body, "priority", json_string(prio));
    if (json_object_size(settings))
        json_object_set(body, "settings", settings);
    if (cli_args_has(a, "no-run")) {
        if (cli_args_has(a, "wait")) {
            rc = usage_error(c, "--wait and --no-run contradict each other");
            goto out;
        }
        json_object_set_new(body, "run", json_false());
    } else if (shortcut || ((code || cli_args_get(a, "agent")) && !cli_args_get(a, "schedule"))) {
        /* work for an agent is queued for it at once, as code runs at once */
        json_object_set_new(body, "run", json_true());
    }
    const char *path = ppath(c, &rc, "/tasks");
    if (!path || (rc = api(c, "POST", path, body, &j)))
        goto out;
    if (c->json && !cli_args_has(a, "wait") && !shortcut) {
        print_raw_json(c);
    } else if (shortcut || cli_args_has(a, "wait")) {
        rc = started(c, a, j, str(j, "id"));
    } else {
        json_t *run = json_object_get(j, "run");
        printf("task %s created (%s)\n", str(j, "id"), str(j, "status"));
        if (json_is_object(run))
            printf("run %s %s\n", str(run, "id"), str(run, "status"));
    }
out:
    json_decref(input);
    json_decref(settings);
    json_decref(body);
    json_decref(j);
    free(code);
    return rc;
}

static int cmd_tasks_create(struct cli_ctx *c, const struct cli_args *a)
{
    return create_task(c, a, false);
}

static int cmd_run(struct cli_ctx *c, const struct cli_args *a)
{
    return create_task(c, a, true);
}

static int cmd_tasks_list(struct cli_ctx *c, const struct cli_args *a)
{
    struct buf q;
    buf_init(&q);
    const char *prio;
    int rc = priority_flag(c, a, &prio);
    if (!rc)
        rc = list_query(c, a, &q);
    const char *type = cli_args_get(a, "type");
    if (!rc && type && !cli_args_one_of(type, "manual scheduled triggered"))
        rc = usage_error(c, "--type: must be one of manual, scheduled, triggered (got '%s')", type);
    json_t *j = NULL;
    if (!rc) {
        query_add(&q, "status", cli_args_get(a, "status"));
        query_add(&q, "priority", prio);
        query_add(&q, "type", type);
        query_add(&q, "definition_id", cli_args_get(a, "definition"));
        const char *path = ppath(c, &rc, "/tasks%s", q.data ? q.data : "");
        if (path && !(rc = api(c, "GET", path, NULL, &j)))
            rc = show_list(c, j, TASK_COLS, ARRAY_LEN(TASK_COLS), "tasks");
    }
    json_decref(j);
    buf_release(&q);
    return rc;
}

static int cmd_tasks_get(struct cli_ctx *c, const struct cli_args *a)
{
    return one(c, "GET", "/tasks", a->pos[0], "task");
}

static int cmd_tasks_delete(struct cli_ctx *c, const struct cli_args *a)
{
    return one(c, "DELETE", "/tasks", a->pos[0], "task");
}

static int cmd_tasks_update(struct cli_ctx *c, const struct cli_args *a)
{
    const char *prio;
    json_t *input = NULL, *j = NULL;
    int rc;
    if ((rc = priority_flag(c, a, &prio)) || (rc = json_flag(c, a, "input", false, &input)))
        return rc;
    json_t *body = json_object();
    static const char *const strs[] = {"name", "description", "schedule", "timezone"};
    for (size_t i = 0; i < ARRAY_LEN(strs); i++) {
        const char *v = cli_args_get(a, strs[i]);
        if (v)   /* an empty --schedule "" clears it */
            json_object_set_new(body, strs[i],
                                *v || !strcmp(strs[i], "name") ? json_string(v) : json_null());
    }
    if (prio)
        json_object_set_new(body, "priority", json_string(prio));
    if (input)
        json_object_set_new(body, "input", input);
    if (json_object_size(body) == 0) {
        json_decref(body);
        return usage_error(c, "nothing to update: give at least one of --name, --description, "
                              "--priority, --schedule, --timezone, --input");
    }
    const char *path = ppath(c, &rc, "/tasks/%s", esc(c, a->pos[0]));
    if (path && !(rc = api(c, "PATCH", path, body, &j)))
        rc = show_object(c, j);
    json_decref(body);
    json_decref(j);
    return rc;
}

/* POST .../tasks/:id/<action> with an optional body; prints what came back. */
static int task_action(struct cli_ctx *c, const struct cli_args *a, const char *action,
                       json_t *body, bool may_wait)
{
    int rc;
    json_t *j = NULL;
    const char *id = a->pos[0];
    const char *path = ppath(c, &rc, "/tasks/%s/%s", esc(c, id), action);
    if (!path || (rc = api(c, "POST", path, body, &j)))
        goto out;
    if (may_wait && (cli_args_has(a, "wait") || !c->json)) {
        rc = started(c, a, j, id);
    } else if (c->json) {
        print_raw_json(c);
    } else {
        const char *st = str(j, "status");
        printf("task %s: %s%s%s\n", id, action, *st ? ", status " : "", st);
    }
out:
    json_decref(j);
    return rc;
}

static int cmd_tasks_run(struct cli_ctx *c, const struct cli_args *a)
{
    json_t *input = NULL;
    int rc = json_flag(c, a, "input", false, &input);
    if (rc)
        return rc;
    json_t *body = json_object();
    if (input)
        json_object_set_new(body, "input", input);
    rc = task_action(c, a, "run", body, true);
    json_decref(body);
    return rc;
}

static int cmd_tasks_cancel(struct cli_ctx *c, const struct cli_args *a)
{
    return task_action(c, a, "cancel", NULL, false);
}

static int cmd_tasks_retry(struct cli_ctx *c, const struct cli_args *a)
{
    return task_action(c, a, "retry", NULL, true);
}

static int cmd_tasks_pause(struct cli_ctx *c, const struct cli_args *a)
{
    return task_action(c, a, "pause", NULL, false);
}

static int cmd_tasks_resume(struct cli_ctx *c, const struct cli_args *a)
{
    return task_action(c, a, "resume", NULL, false);
}

static int cmd_tasks_schedule(struct cli_ctx *c, const struct cli_args *a)
{
    char err[160];
    int64_t n = 5;
    if (cli_args_int(a, "count", 1, 100, &n, err, sizeof(err)) < 0)   /* the server's range */
        return usage_error(c, "%s", err);
    int rc;
    json_t *j = NULL;
    const char *path =
        ppath(c, &rc, "/tasks/%s/schedule?count=%lld", esc(c, a->pos[0]), (long long)n);
    if (!path || (rc = api(c, "GET", path, NULL, &j)))
        goto out;
    if (c->json) {
        print_raw_json(c);
        goto out;
    }
    /* {data: [{at, local}]}: a table, as every list (each fire time was
     * printed as its JSON object) */
    rc = show_list(c, j, SCHEDULE_COLS, ARRAY_LEN(SCHEDULE_COLS), "upcoming runs");
    /* The times of a paused task's cron, of which none fires while it is
     * paused: the table alone read as if they would. */
    if (!rc && json_is_true(json_object_get(j, "paused")))
        fprintf(stderr, "(task %s is paused: none of these fires until 'quern tasks resume %s')\n",
                a->pos[0], a->pos[0]);
out:
    json_decref(j);
    return rc;
}

/* ---- commands: runs ------------------------------------------------------ */

static int cmd_runs_list(struct cli_ctx *c, const struct cli_args *a)
{
    struct buf q;
    buf_init(&q);
    int rc = list_query(c, a, &q);
    json_t *j = NULL;
    if (!rc) {
        query_add(&q, "task_id", cli_args_get(a, "task"));
        query_add(&q, "status", cli_args_get(a, "status"));
        query_add(&q, "definition_id", cli_args_get(a, "definition"));
        const char *path = ppath(c, &rc, "/runs%s", q.data ? q.data : "");
        if (path && !(rc = api(c, "GET", path, NULL, &j)))
            rc = show_list(c, j, RUN_COLS, ARRAY_LEN(RUN_COLS), "runs");
    }
    json_decref(j);
    buf_release(&q);
    return rc;
}

static int cmd_runs_get(struct cli_ctx *c, const struct cli_args *a)
{
    json_t *j;
    int rc = get_run(c, a->pos[0], &j);
    if (!rc)
        rc = show_object(c, j);
    json_decref(j);
    return rc;
}

static int cmd_runs_output(struct cli_ctx *c, const struct cli_args *a)
{
    json_t *j;
    int rc = get_run(c, a->pos[0], &j);
    if (!rc) {
        json_t *o = json_object_get(j, "output");
        print_json_value(o ? o : json_null());
    }
    json_decref(j);
    return rc;
}

static int cmd_runs_cancel(struct cli_ctx *c, const struct cli_args *a)
{
    json_t *run, *j = NULL;
    int rc = get_run(c, a->pos[0], &run);
    if (rc)
        return rc;
    json_t *body = json_object();
    if (cli_args_get(a, "message"))
        json_object_set_new(body, "message", json_string(cli_args_get(a, "message")));
    const char *path = ppath(c, &rc, "/tasks/%s/runs/%s/cancel", esc(c, str(run, "task_id")),
                             esc(c, a->pos[0]));
    if (path && !(rc = api(c, "POST", path, body, &j))) {
        if (c->json)
            print_raw_json(c);
        else
            printf("run %s: %s\n", a->pos[0], *str(j, "status") ? str(j, "status") : "canceling");
    }
    json_decref(body);
    json_decref(run);
    json_decref(j);
    return rc;
}

static int cmd_runs_logs(struct cli_ctx *c, const struct cli_args *a)
{
    json_t *run;
    int rc = get_run(c, a->pos[0], &run);
    if (rc)
        return rc;
    char *task_id = xstrdup(str(run, "task_id"));
    json_decref(run);
    if (cli_args_has(a, "follow")) {
        rc = follow_run(c, task_id, a->pos[0]);
        free(task_id);
        return rc;
    }
    rc = print_logs(c, task_id, a->pos[0], stdout);
    free(task_id);
    return rc;
}

/* POST .../runs/:id/<action> with body to a run known by its id alone. */
static int run_action(struct cli_ctx *c, const char *run_id, const char *action, json_t *body)
{
    json_t *run, *j = NULL;
    int rc = get_run(c, run_id, &run);
    if (rc)
        return rc;
    const char *path = ppath(c, &rc, "/tasks/%s/runs/%s/%s", esc(c, str(run, "task_id")),
                             esc(c, run_id), action);
    if (path && !(rc = api(c, "POST", path, body, &j))) {
        if (c->json)
            print_raw_json(c);
        else
            printf("run %s: %s\n", run_id, *str(j, "status") ? str(j, "status") : "answered");
    }
    json_decref(run);
    json_decref(j);
    return rc;
}

static int cmd_runs_respond(struct cli_ctx *c, const struct cli_args *a)
{
    bool yes = cli_args_has(a, "approve"), no = cli_args_has(a, "deny");
    json_t *resp = NULL;
    int rc = json_flag(c, a, "response", true, &resp);
    if (rc)
        return rc;
    if ((yes || no) + (resp != NULL) != 1 || (yes && no)) {
        json_decref(resp);
        return usage_error(c, "give one of --response JSON, --approve, --deny");
    }
    if (!resp)
        resp = json_pack("{s:b}", "approved", yes);
    json_t *body = json_pack("{s:o}", "response", resp);
    rc = run_action(c, a->pos[0], "interaction", body);
    json_decref(body);
    return rc;
}

static int cmd_runs_review(struct cli_ctx *c, const struct cli_args *a)
{
    bool yes = cli_args_has(a, "approve"), no = cli_args_has(a, "reject");
    if (yes == no)
        return usage_error(c, "give one of --approve, --reject");
    json_t *body = json_pack("{s:s}", "decision", yes ? "approve" : "reject");
    if (cli_args_get(a, "comment"))
        json_object_set_new(body, "comment", json_string(cli_args_get(a, "comment")));
    int rc = run_action(c, a->pos[0], "review", body);
    json_decref(body);
    return rc;
}

static const struct cli_col ARTIFACT_COLS[] = {
    {"NAME", "name", CLI_FMT_TEXT},
    {"SIZE", "size", CLI_FMT_TEXT},
    {"TYPE", "content_type", CLI_FMT_TEXT},
    {"SHA256", "sha256", CLI_FMT_TEXT},
};

/* "/api/projects/<p>/tasks/<t>/runs/<run_id>" of a run known by its id alone. */
static const char *run_path(struct cli_ctx *c, const char *run_id, int *rc)
{
    json_t *run;
    if ((*rc = get_run(c, run_id, &run)))
        return NULL;
    const char *path =
        ppath(c, rc, "/tasks/%s/runs/%s", esc(c, str(run, "task_id")), esc(c, run_id));
    json_decref(run);
    return path;
}

static int cmd_runs_artifacts(struct cli_ctx *c, const struct cli_args *a)
{
    struct buf q;
    buf_init(&q);
    json_t *j = NULL;
    int rc = list_query(c, a, &q);
    const char *base = rc ? NULL : run_path(c, a->pos[0], &rc);
    if (base) {
        char *path = xasprintf("%s/artifacts%s", base, q.data ? q.data : "");
        if (!(rc = api(c, "GET", path, NULL, &j)))
            rc = show_list(c, j, ARTIFACT_COLS, ARRAY_LEN(ARTIFACT_COLS), "artifacts");
        free(path);
    }
    json_decref(j);
    buf_release(&q);
    return rc;
}

/* Downloads one artifact to -o FILE, or to stdout when that is not a
 * terminal (bytes as stored, so | tar x works). */
static int cmd_runs_download(struct cli_ctx *c, const struct cli_args *a)
{
    const char *file = cli_args_get(a, "output");
    bool to_stdout = !file || !strcmp(file, "-");
    if (!file && c->tty_out)
        return usage_error(c, "stdout is a terminal: give -o FILE (or -o - to insist)");
    int rc;
    const char *base = run_path(c, a->pos[0], &rc);
    if (!base)
        return rc;
    char *path = xasprintf("%s/artifacts/content?name=%s", base, esc(c, a->pos[1]));
    rc = api(c, "GET", path, NULL, NULL);
    free(path);
    if (rc)
        return rc;
    const char *data = c->resp.body.data ? c->resp.body.data : "";
    if (to_stdout) {
        write_out(stdout, data, c->resp.body.len);
        return 0;
    }
    FILE *f = fopen(file, "wb");
    if (!f) {
        fprintf(stderr, "quern: %s: %s\n", file, strerror(errno));
        return CLI_EXIT_FAIL;
    }
    struct stat st;
    bool regular = !fstat(fileno(f), &st) && S_ISREG(st.st_mode);   /* not /dev/full */
    bool bad = fwrite(data, 1, c->resp.body.len, f) < c->resp.body.len;
    int err = errno;
    if (fclose(f) != 0 && !bad) {
        bad = true;
        err = errno;
    }
    if (bad) {
        fprintf(stderr, "quern: %s: %s%s\n", file, strerror(err),
                regular ? " (the partial file is removed)" : "");
        if (regular)
            unlink(file);
        return CLI_EXIT_FAIL;
    }
    fprintf(stderr, "%s: %zu bytes\n", file, c->resp.body.len);
    return 0;
}

/* ---- commands: secrets, triggers, webhooks ----------------------------- */

static const struct cli_col SECRET_COLS[] = {
    {"NAME", "name", CLI_FMT_TEXT},
    {"CREATED", "created_at", CLI_FMT_AGE},
    {"UPDATED", "updated_at", CLI_FMT_AGE},
};
static const struct cli_col TRIGGER_COLS[] = {
    {"ID", "id", CLI_FMT_TEXT},           {"TASK", "task_id", CLI_FMT_TEXT},
    {"URL", "url", CLI_FMT_TEXT},         {"FIRED", "fire_count", CLI_FMT_TEXT},
    {"LAST", "last_fired_at", CLI_FMT_AGE}, {"CREATED", "created_at", CLI_FMT_AGE},
};
static const struct cli_col WEBHOOK_COLS[] = {
    {"ID", "id", CLI_FMT_TEXT},
    {"URL", "url", CLI_FMT_TEXT},
    {"EVENTS", "events", CLI_FMT_TEXT},
    {"CREATED", "created_at", CLI_FMT_AGE},
};
static const struct cli_col DELIVERY_COLS[] = {
    {"ID", "id", CLI_FMT_TEXT},         {"EVENT", "event_type", CLI_FMT_TEXT},
    {"STATUS", "status", CLI_FMT_TEXT}, {"ATTEMPTS", "attempt_count", CLI_FMT_TEXT},
    {"CREATED", "created_at", CLI_FMT_AGE},
};

/* GET <project><what>?limit&offset[&filter=value] shown as a table. */
static int list_of(struct cli_ctx *c, const struct cli_args *a, const char *what,
                   const char *filter, const char *value, const struct cli_col *cols,
                   size_t ncols, const char *noun)
{
    struct buf q;
    buf_init(&q);
    json_t *j = NULL;
    int rc = list_query(c, a, &q);
    if (filter)
        query_add(&q, filter, value);
    const char *path = rc ? NULL : ppath(c, &rc, "%s%s", what, q.data ? q.data : "");
    if (path && !(rc = api(c, "GET", path, NULL, &j)))
        rc = show_list(c, j, cols, ncols, noun);
    json_decref(j);
    buf_release(&q);
    return rc;
}

static int cmd_secrets_list(struct cli_ctx *c, const struct cli_args *a)
{
    return list_of(c, a, "/secrets", NULL, NULL, SECRET_COLS, ARRAY_LEN(SECRET_COLS), "secrets");
}

/* The value comes from -f FILE or stdin, never from an argument (ps would
 * show it), byte for byte: printf %s, not echo, when piping. */
static int cmd_secrets_set(struct cli_ctx *c, const struct cli_args *a)
{
    const char *file = cli_args_get(a, "value-file");
    if (!file && isatty(STDIN_FILENO))
        return usage_error(c, "give the value on stdin or with -f FILE (never as an argument)");
    char *value = NULL;
    size_t len = 0;
    int rc = read_file(c, file ? file : "-", &value, &len);
    if (rc)
        return rc;
    size_t bad = utf8_bad_at(value, len);
    json_t *body = NULL, *j = NULL;
    if (bad < len) {
        rc = usage_error(c, "%s: the value is not UTF-8 text (byte %zu)", file ? file : "stdin",
                         bad);
        goto out;
    }
    body = json_pack("{s:s,s:s}", "name", a->pos[0], "value", value);
    const char *path = ppath(c, &rc, "/secrets");
    if (path && !(rc = api(c, "POST", path, body, &j))) {
        if (c->json)
            print_raw_json(c);
        else
            printf("secret %s %s (%zu bytes)\n", a->pos[0],
                   c->resp.status == 201 ? "created" : "replaced", len);
    }
out:
    if (value)
        memset(value, 0, len);
    free(value);
    json_decref(body);
    json_decref(j);
    return rc;
}

static int cmd_secrets_delete(struct cli_ctx *c, const struct cli_args *a)
{
    return one(c, "DELETE", "/secrets", a->pos[0], "secret");
}

/* Prints a created object whose generated secret is shown this once. */
static int created_with_secret(struct cli_ctx *c, json_t *j, const char *noun)
{
    if (c->json) {
        print_raw_json(c);
        return 0;
    }
    /* A trigger's url is a path on the server: joined to the address used. */
    const char *u = str(j, "url");
    char *url = xasprintf("%s%s", u[0] == '/' ? c->http.shown : "", u);
    cli_scrub(url, '?', false);
    printf("%s %s created: %s\n", noun, str(j, "id"), url);
    free(url);
    if (*str(j, "secret")) {
        printf("%s\n", str(j, "secret"));
        fputs("(the signing secret is shown only once: store it now)\n", stderr);
    }
    return 0;
}

static int cmd_triggers_list(struct cli_ctx *c, const struct cli_args *a)
{
    return list_of(c, a, "/triggers", "task_id", cli_args_get(a, "task"), TRIGGER_COLS,
                   ARRAY_LEN(TRIGGER_COLS), "triggers");
}

static int cmd_triggers_create(struct cli_ctx *c, const struct cli_args *a)
{
    json_t *body = json_pack("{s:s}", "task_id", a->pos[0]), *j = NULL;
    if (cli_args_get(a, "description"))
        json_object_set_new(body, "description", json_string(cli_args_get(a, "description")));
    int rc;
    const char *path = ppath(c, &rc, "/triggers");
    if (path && !(rc = api(c, "POST", path, body, &j)))
        rc = created_with_secret(c, j, "trigger");
    json_decref(body);
    json_decref(j);
    return rc;
}

static int cmd_triggers_delete(struct cli_ctx *c, const struct cli_args *a)
{
    return one(c, "DELETE", "/triggers", a->pos[0], "trigger");
}

static int cmd_webhooks_list(struct cli_ctx *c, const struct cli_args *a)
{
    return list_of(c, a, "/webhooks", NULL, NULL, WEBHOOK_COLS, ARRAY_LEN(WEBHOOK_COLS), "webhooks");
}

static int cmd_webhooks_create(struct cli_ctx *c, const struct cli_args *a)
{
    json_t *body = json_pack("{s:s}", "url", a->pos[0]), *j = NULL;
    if (cli_args_get(a, "description"))
        json_object_set_new(body, "description", json_string(cli_args_get(a, "description")));
    if (cli_args_nth(a, "event", 0)) {
        json_t *ev = json_array();
        const char *e;
        for (size_t i = 0; (e = cli_args_nth(a, "event", i)); i++)
            json_array_append_new(ev, json_string(e));
        json_object_set_new(body, "events", ev);
    }
    int rc;
    const char *path = ppath(c, &rc, "/webhooks");
    if (path && !(rc = api(c, "POST", path, body, &j)))
        rc = created_with_secret(c, j, "webhook");
    json_decref(body);
    json_decref(j);
    return rc;
}

static int cmd_webhooks_get(struct cli_ctx *c, const struct cli_args *a)
{
    return one(c, "GET", "/webhooks", a->pos[0], "webhook");
}

static int cmd_webhooks_delete(struct cli_ctx *c, const struct cli_args *a)
{
    return one(c, "DELETE", "/webhooks", a->pos[0], "webhook");
}

static int cmd_webhooks_deliveries(struct cli_ctx *c, const struct cli_args *a)
{
    const char *what = keep(c, xasprintf("/webhooks/%s/deliveries", esc(c, a->pos[0])));
    return list_of(c, a, what, NULL, NULL, DELIVERY_COLS, ARRAY_LEN(DELIVERY_COLS), "deliveries");
}

/* ---- watch --------------------------------------------------------------- */

static const char *const ACTIVE[] = {"running", "queued", "interaction_required",
                                     "review_required", "paused", "canceling"};

/* One frame of `watch` into out; returns an exit code (0 when drawn). */
static int watch_frame(struct cli_ctx *c, struct buf *out)
{
    const char *hdr[ARRAY_LEN(WATCH_COLS)];
    for (size_t i = 0; i < ARRAY_LEN(WATCH_COLS); i++)
        hdr[i] = WATCH_COLS[i].header;
    struct cli_table t;
    cli_table_init(&t, ARRAY_LEN(WATCH_COLS), hdr);
    int rc = 0;
    long long more = 0;
    for (size_t s = 0; s < ARRAY_LEN(ACTIVE) && !rc; s++) {
        json_t *j = NULL;
        const char *path = ppath(c, &rc, "/runs?status=%s&limit=100", ACTIVE[s]);
        if (path && !(rc = api(c, "GET", path, NULL, &j))) {
            json_t *data = json_object_get(j, "data");
            cli_table_add_json(&t, WATCH_COLS, ARRAY_LEN(WATCH_COLS), data, now_ms());
            json_int_t total = json_integer_value(json_object_get(j, "total"));
            if (total > (json_int_t)json_array_size(data))
                more += total - (json_int_t)json_array_size(data);
        }
        json_decref(j);
    }
    if (rc) {
        cli_table_release(&t);
        return rc;
    }
    char ts[RFC3339_LEN];
    rfc3339_format(now_ms(), ts);
    buf_printf(out, "%squern watch%s  %s  project %s  %zu active%s  %.19s\n\n",
               c->color_out ? C_BOLD : "", c->color_out ? C_RESET : "", c->http.shown,
               c->project ? c->project : "?", t.nrows, more ? " (more not shown)" : "", ts);
    if (t.nrows)
        cli_table_render(&t, out, c->color_out);
    else
        buf_puts(out, "No active runs.\n");
    cli_table_release(&t);
    return 0;
}

static int cmd_watch(struct cli_ctx *c, const struct cli_args *a)
{
    struct buf b;
    buf_init(&b);
    int rc;
    if (!c->tty_out || c->json) {
        if (c->json) {
            /* For scripts: one JSON array of the active runs. */
            json_t *all = json_array();
            for (size_t s = 0; s < ARRAY_LEN(ACTIVE); s++) {
                json_t *j = NULL;
                const char *path = ppath(c, &rc, "/runs?status=%s&limit=500", ACTIVE[s]);
                if (!path || (rc = api(c, "GET", path, NULL, &j))) {
                    json_decref(all);
                    return rc;
                }
                json_array_extend(all, json_object_get(j, "data"));
                json_decref(j);
            }
            print_json_value(all);
            json_decref(all);
            return 0;
        }
        rc = watch_frame(c, &b);
        if (!rc)
            write_out(stdout, b.data, b.len);
        buf_release(&b);
        return rc;
    }
    catch_interrupts(c);
    fputs("\033[?25l", stdout);   /* hide the cursor while redrawing */
    int failures = 0;
    while (!g_interrupted) {
        b.len = 0;
        rc = watch_frame(c, &b);
        if (rc == CLI_EXIT_USAGE || (rc && ++failures > 30))
            break;
        if (!rc) {
            failures = 0;
            /* Home, each line cleared to its end, then the rest of the screen. */
            struct buf f;
            buf_init(&f);
            buf_puts(&f, "\033[H");
            for (const char *p = b.data; p && *p;) {
                const char *nl = strchr(p, '\n');
                size_t n = nl ? (size_t)(nl - p) : strlen(p);
                buf_append(&f, p, n);
                buf_puts(&f, "\033[K\n");
                p += n + (nl ? 1 : 0);
            }
            buf_puts(&f, "\033[J");
            write_out(stdout, f.data, f.len);
            buf_release(&f);
        }
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
    }
    fputs("\033[?25h", stdout);
    fflush(stdout);
    buf_release(&b);
    return g_interrupted ? 0 : rc;
}

/* ---- documentation commands ------------------------------------------- */

static int cmd_help(struct cli_ctx *c, const struct cli_args *a);

/* quern store copy [--data DIR] FROM TO: works on the stores themselves, no
 * server (it was parsed apart from the table, so --help, help and the man
 * page never named it) */
/* 0 when FROM, if a SQLite file, exists and no quernd holds the data
 * directory's lock; else prints why and returns the exit status.  Opening a
 * missing FROM made an empty database there and "copied" 0 rows (exit 0);
 * a copy of a store quernd still writes misses what comes after it. */
static int store_copy_check(const char *from, const char *data)
{
    if (!strncmp(from, "postgres://", 11) || !strncmp(from, "postgresql://", 13) ||
        (strncmp(from, "sqlite:", 7) && strstr(from, "://")))
        return 0;       /* store_open names a bad scheme itself */
    const char *path = strncmp(from, "sqlite:", 7) ? from : from + 7;
    struct stat sb;
    if (*path && stat(path, &sb)) {
        fprintf(stderr, "quern: store copy: %s: %s (FROM is an existing store)\n", path,
                strerror(errno));
        return CLI_EXIT_FAIL;
    }
    if (*path && !S_ISREG(sb.st_mode)) {
        fprintf(stderr, "quern: store copy: %s: not a SQLite file\n", path);
        return CLI_EXIT_FAIL;
    }
    /* the lock is in the data directory: the file's own (quernd's default
     * layout, DATA/quern.db), and --data when given */
    const char *slash = strrchr(path, '/');
    char *dirs[2] = {slash ? xasprintf("%.*s", (int)(slash == path ? 1 : slash - path), path)
                           : xstrdup("."),
                     data ? xstrdup(data) : NULL};
    int rc = 0;
    for (size_t i = 0; i < 2 && dirs[i] && !rc; i++) {
        char *lock = xasprintf("%s/quern.lock", dirs[i]);
        int fd = open(lock, O_RDONLY | O_CLOEXEC);
        bool held = fd >= 0 && flock(fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK;
        char pid[32] = "";
        if (held) {
            ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
            pid[n > 0 ? n : 0] = '\0';
            pid[strcspn(pid, "\n")] = '\0';
        }
        /* a quernd just gone may leave its boxes a moment (killed with it,
         * they still hold the lock): wait for them, as quernd does */
        int64_t p;
        for (int ms = 0; held && !parse_i64(pid, &p) && p > 1 && kill((pid_t)p, 0) < 0 &&
                         errno == ESRCH && ms < 5000; ms += 20) {
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
            held = flock(fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK;
        }
        if (held) {
            fprintf(stderr, "quern: store copy: a quernd (pid %s) is running on %s (it holds "
                    "%s): stop it first (docs/MULTINODE.md)\n", pid[0] ? pid : "?", dirs[i],
                    lock);
            rc = CLI_EXIT_FAIL;
        }
        if (fd >= 0)
            close(fd);
        free(lock);
    }
    free(dirs[0]);
    free(dirs[1]);
    return rc;
}

static int cmd_store_copy(struct cli_ctx *c, const struct cli_args *a)
{
    (void)c;
    char *err = NULL;
    int rc = store_copy_check(a->pos[0], cli_args_get(a, "data"));
    if (rc)
        return rc;
    if (store_copy(a->pos[0], a->pos[1], cli_args_get(a, "data"), stdout, &err)) {
        fprintf(stderr, "quern: store copy: %s\n", err ? err : "failed");
        free(err);
        return CLI_EXIT_FAIL;
    }
    printf("copied %s to %s\n", a->pos[0], a->pos[1]);
    return CLI_EXIT_OK;
}

static int cmd_man(struct cli_ctx *c, const struct cli_args *a)
{
    struct buf b;
    buf_init(&b);
    cli_doc_man(c->doc, &b);
    write_out(stdout, b.data, b.len);
    buf_release(&b);
    return 0;
}

static int cmd_completion(struct cli_ctx *c, const struct cli_args *a)
{
    struct buf b;
    buf_init(&b);
    if (cli_doc_completion(c->doc, a->pos[0], &b) < 0) {
        buf_release(&b);
        return usage_error(c, "unknown shell '%s' (bash or zsh)", a->pos[0]);
    }
    write_out(stdout, b.data, b.len);
    buf_release(&b);
    return 0;
}

/* ---- the table ------------------------------------------------------------ */

#define LIST_OPTS "limit: offset:"
#define CODE_OPTS "runtime: file|f: code:"

static const struct cli_cmd COMMANDS[] = {
    {"projects list", "[--limit N] [--offset N]", "List the projects the key can see",
     LIST_OPTS, 0, 0, cmd_projects_list},
    {"projects create", "NAME", "Create a project (root key only)", "", 1, 1,
     cmd_projects_create},
    {"keys list", "[--limit N] [--offset N]", "List the project's API keys, revoked ones too",
     LIST_OPTS, 0, 0, cmd_keys_list},
    {"keys create", "NAME --scope S [--scope S ...]",
     "Create an API key with scopes task:read, task:write, worker, admin; prints the key once",
     "scope:", 1, 1, cmd_keys_create},
    {"keys revoke", "ID", "Revoke an API key at once", "", 1, 1, cmd_keys_revoke},
    {"definitions list", "[--limit N] [--offset N]", "List definitions (registered task types)",
     LIST_OPTS, 0, 0, cmd_defs_list},
    {"definitions get", "ID", "Show a definition", "", 1, 1, cmd_defs_get},
    {"definitions create",
     "--id ID --title T [--description D] [--runtime R] [-f FILE | --code C] "
     "[--input-schema JSON] [--output-schema JSON]",
     "Register a definition; without code, external workers implement it",
     "id: title: description: " CODE_OPTS " input-schema: output-schema:", 0, 0,
     cmd_defs_create},
    {"definitions delete", "ID", "Delete a definition", "", 1, 1, cmd_defs_delete},
    {"definitions trigger", "ID [--input JSON] [--name N] [--wait]",
     "Create a task from a definition and run it now", "input: name: wait", 1, 1,
     cmd_defs_trigger},
    {"tasks create",
     "[--name N] [--runtime R] [-f FILE | --code C] [--input JSON] [--priority P] "
     "[--schedule CRON] [--timezone TZ] [--timeout-ms N] [--max-retries N] "
     "[--definition ID] [--agent ID] [--type T] [--description D] [--no-run] [--wait]",
     "Create a task; one with code runs at once, and one for an agent (--agent: its work, for "
     "workers leasing with that agent_id) is queued at once, unless --no-run",
     "name: description: " CODE_OPTS " input: priority: schedule: timezone: timeout-ms: "
     "max-retries: definition: agent: type: no-run wait",
     0, 0, cmd_tasks_create},
    {"tasks list",
     "[--status S] [--priority P] [--type T] [--definition ID] [--limit N] [--offset N] "
     "[--after TASK_ID]",
     "List tasks, newest first (--after: the page after that task)",
     "status: priority: type: definition: after: " LIST_OPTS, 0, 0,
     cmd_tasks_list},
    {"tasks get", "ID", "Show a task", "", 1, 1, cmd_tasks_get},
    {"tasks update",
     "ID [--name N] [--description D] [--priority P] [--schedule CRON] [--timezone TZ] "
     "[--input JSON]",
     "Change a task (--schedule \"\" removes its schedule)",
     "name: description: priority: schedule: timezone: input:", 1, 1, cmd_tasks_update},
    {"tasks delete", "ID", "Delete a task, canceling its active runs", "", 1, 1,
     cmd_tasks_delete},
    {"tasks run", "ID [--input JSON] [--wait]", "Start a run of a task now", "input: wait", 1,
     1, cmd_tasks_run},
    {"tasks cancel", "ID", "Cancel a task's queued and running runs", "", 1, 1,
     cmd_tasks_cancel},
    {"tasks retry", "ID [--wait]", "Run a failed, timed-out, canceled or denied task again",
     "wait", 1, 1, cmd_tasks_retry},
    {"tasks pause", "ID", "Stop a task's schedule and the dispatch of its queued runs", "", 1,
     1, cmd_tasks_pause},
    {"tasks resume", "ID", "Undo tasks pause", "", 1, 1, cmd_tasks_resume},
    {"tasks schedule", "ID [--count N]", "Show a scheduled task's next fire times", "count:", 1,
     1, cmd_tasks_schedule},
    {"runs list",
     "[--task ID] [--status S] [--definition ID] [--limit N] [--offset N] [--after RUN_ID]",
     "List runs of the project, newest first (--after: the page after that run)",
     "task: status: definition: after: " LIST_OPTS, 0, 0,
     cmd_runs_list},
    {"runs get", "RUN_ID", "Show a run", "", 1, 1, cmd_runs_get},
    {"runs logs", "RUN_ID [-f]", "Print a run's log; -f follows it live until the run ends",
     "follow|f", 1, 1, cmd_runs_logs},
    {"runs cancel", "RUN_ID [--message M]", "Cancel a run", "message:", 1, 1, cmd_runs_cancel},
    {"runs output", "RUN_ID", "Print a run's output JSON", "", 1, 1, cmd_runs_output},
    {"runs respond", "RUN_ID (--response JSON | --approve | --deny)",
     "Answer a run in interaction_required: its code's question, or an approval", "response: approve deny",
     1, 1, cmd_runs_respond},
    {"runs artifacts", "RUN_ID [--limit N] [--offset N]", "List a run's artifacts", LIST_OPTS,
     1, 1, cmd_runs_artifacts},
    {"runs download", "RUN_ID NAME [-o FILE]",
     "Download an artifact to FILE, or to stdout when that is not a terminal", "output|o:", 2, 2,
     cmd_runs_download},
    {"runs review", "RUN_ID (--approve | --reject) [--comment C]",
     "Finish a run in review_required", "approve reject comment:", 1, 1, cmd_runs_review},
    {"run",
     "[--runtime R] (-f FILE | --code C) [--input JSON] [--name N] [--priority P] "
     "[--timeout-ms N] [--max-retries N] [--wait]",
     "Create a task from code and run it; --wait streams its log and exits 0 only if it "
     "completed",
     "name: " CODE_OPTS " input: priority: timeout-ms: max-retries: wait", 0, 0, cmd_run},
    {"logs", "RUN_ID [-f]", "Same as runs logs", "follow|f", 1, 1, cmd_runs_logs},
    {"secrets list", "[--limit N] [--offset N]", "List the project's secrets (names only)",
     LIST_OPTS, 0, 0, cmd_secrets_list},
    {"secrets set", "NAME [-f FILE]",
     "Create or replace a secret; its value is read from FILE or stdin, byte for byte",
     "value-file|f:", 1, 1, cmd_secrets_set},
    {"secrets delete", "NAME", "Delete a secret", "", 1, 1, cmd_secrets_delete},
    {"triggers list", "[--task ID] [--limit N] [--offset N]", "List inbound triggers",
     "task: " LIST_OPTS, 0, 0, cmd_triggers_list},
    {"triggers create", "TASK_ID [--description D]",
     "Create a signed URL that runs the task; prints its secret once", "description:", 1, 1,
     cmd_triggers_create},
    {"triggers delete", "ID", "Delete a trigger", "", 1, 1, cmd_triggers_delete},
    {"webhooks list", "[--limit N] [--offset N]", "List outgoing webhooks", LIST_OPTS, 0, 0,
     cmd_webhooks_list},
    {"webhooks create", "URL [--event T ...] [--description D]",
     "Send the project's events to URL, signed; prints the secret once",
     "event: description:", 1, 1, cmd_webhooks_create},
    {"webhooks get", "ID", "Show a webhook", "", 1, 1, cmd_webhooks_get},
    {"webhooks delete", "ID", "Delete a webhook and its deliveries", "", 1, 1,
     cmd_webhooks_delete},
    {"webhooks deliveries", "ID [--limit N] [--offset N]", "List a webhook's deliveries",
     LIST_OPTS, 1, 1, cmd_webhooks_deliveries},
    {"watch", "", "A live table of the active runs, redrawn every second (once when piped)", "",
     0, 0, cmd_watch},
    {"store copy", "FROM TO [--data DIR]",
     "Copy store FROM (sqlite:PATH) into the empty store TO (postgres://...), ids and "
     "artifacts kept; stop quernd first (docs/MULTINODE.md)",
     "data:", 2, 2, cmd_store_copy},
    {"completion", "bash|zsh", "Print a shell completion script", "", 1, 1, cmd_completion},
    {"man", "", "Print the manual page (roff)", "", 0, 0, cmd_man},
    {"help", "[COMMAND ...]", "Show help for a command", "", 0, 3, cmd_help},
};

static const struct cli_optdoc OPTDOCS[] = {
    {"url", "URL", "server URL (default $QUERN_URL, else " DEFAULT_URL ")"},
    {"key", "KEY", "API key (default $QUERN_KEY)"},
    {"project", "ID", "project id (default $QUERN_PROJECT, else the key's default project)"},
    {"json", NULL, "print the server's JSON instead of tables"},
    {"help", NULL, "show help"},
    {"limit", "N", "at most N items (server default 50, max 500)"},
    {"offset", "N", "skip the first N items"},
    {"scope", "S", "a scope of the key: task:read, task:write, worker, admin (repeatable)"},
    {"id", "ID", "the definition's id"},
    {"title", "T", "the definition's title"},
    {"name", "N", "a name"},
    {"description", "D", "a description"},
    {"runtime", "R", "runtime: sh (default), bash, python, node, ts; guessed from -f's extension"},
    {"file", "FILE", "read the code from FILE ('-' for stdin)"},
    {"code", "C", "the code itself"},
    {"input", "JSON", "input object, merged over the task's input"},
    {"input-schema", "JSON", "JSON Schema of the input"},
    {"output-schema", "JSON", "JSON Schema of the output"},
    {"priority", "P", "low, medium (default), high or urgent"},
    {"schedule", "CRON", "cron schedule: 5 fields, 6 with seconds first, or @hourly/@daily/..."},
    {"timezone", "TZ", "IANA time zone of the schedule (default UTC)"},
    {"timeout-ms", "N", "wall-time limit of a run in milliseconds"},
    {"max-retries", "N", "retries after a failed run"},
    {"definition", "ID", "a definition id"},
    {"agent", "ID", "the agent whose work this is: workers leasing with that agent_id take its runs"},
    {"after", "ID", "the page after the object of this id, the last of the page before"},
    {"type", "T", "manual, scheduled or triggered"},
    {"status", "S", "a status: queued, running, completed, failed, timed_out, ... (a task's may be pending)"},
    {"task", "ID", "a task id"},
    {"message", "M", "a message kept on the run"},
    {"count", "N", "how many fire times, 1-100 (default 5)"},
    {"response", "JSON", "the answer, any JSON value (an input request's schema may constrain it)"},
    {"approve", NULL, "approve the run"},
    {"deny", NULL, "deny the run's approval: it ends denied"},
    {"reject", NULL, "reject the run's result: it ends failed"},
    {"comment", "C", "a comment kept with the review"},
    {"output", "FILE", "write to FILE ('-' for stdout)"},
    {"value-file", "FILE", "read the secret's value from FILE, else from stdin"},
    {"event", "T", "an event type (task_run.completed, task.*, *; repeatable; default *)"},
    {"no-run", NULL, "create without starting a run (a schedule still fires)"},
    {"wait", NULL, "follow the run live; exit 0 only if it completed"},
    {"follow", NULL, "follow the log live until the run ends"},
    {"data", "DIR", "quernd's data directory, whose blobs/ are copied too (default: the SQLite "
                    "file's directory)"},
};

#define GLOBAL_OPTS "url: key: project: json help|h"

static const struct cli_doc DOC = {
    .cmds = COMMANDS,
    .ncmds = ARRAY_LEN(COMMANDS),
    .optdocs = OPTDOCS,
    .noptdocs = ARRAY_LEN(OPTDOCS),
    .global_opts = GLOBAL_OPTS,
};

static int cmd_help(struct cli_ctx *c, const struct cli_args *a)
{
    struct buf b;
    buf_init(&b);
    size_t used = 0;
    const struct cli_cmd *cmd = a->npos ? cli_doc_find(c->doc, a->pos, a->npos, &used) : NULL;
    int rc = 0;
    if (cmd && used == a->npos)
        cli_doc_command_help(c->doc, cmd, &b);
    else if (a->npos == 1 && cli_doc_is_group(c->doc, a->pos[0]))
        cli_doc_group_help(c->doc, a->pos[0], &b);
    else if (a->npos == 0)
        cli_doc_usage(c->doc, &b);
    else {
        /* every word named: "help tasks create x" said "no such command:
         * tasks create", a command that exists */
        for (size_t i = 0; i < a->npos; i++)
            buf_printf(&b, "%s%s", i ? " " : "", a->pos[i]);
        rc = usage_error(c, "no such command: %s", b.data);
    }
    if (!rc)
        write_out(stdout, b.data, b.len);
    buf_release(&b);
    return rc;
}

/* ---- main ----------------------------------------------------------------- */

/* Why url (http:// or https://) cannot be the server's base URL, or NULL.
 * The paths are appended to it: a query or fragment swallowed them (the
 * dashboard's HTML came back, "invalid JSON"), and a blank from a pasted
 * line, or no host, failed as if the server were down (exit 3).  The URL is
 * not quoted back: it may hold a password. */
static const char *url_problem(const char *url)
{
    for (const unsigned char *p = (const unsigned char *)url; *p; p++)
        if (*p <= 0x20 || *p == 0x7f)
            return "has a blank or control character";
    if (strpbrk(url, "?#"))
        return "has a query or fragment ('?', '#'): give the server's address alone";
    const char *auth = strstr(url, "://") + 3;
    size_t n = strcspn(auth, "/");
    const char *at = memrchr(auth, '@', n);
    const char *host = at ? at + 1 : auth;
    if (host == auth + n || *host == ':')
        return "has no host";
    return NULL;
}

static bool needs_server(const struct cli_cmd *cmd)
{
    return cmd->fn != cmd_help && cmd->fn != cmd_man && cmd->fn != cmd_completion &&
           cmd->fn != cmd_store_copy;
}

static int run_main(struct cli_ctx *c, int argc, char **argv)
{
    /* 1. Find the command words: non-options, skipping global options' values. */
    char **words = xcalloc((size_t)argc + 1, sizeof(char *));
    int *widx = xcalloc((size_t)argc + 1, sizeof(int));
    size_t nw = 0;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (s[0] == '-' && s[1]) {
            if (!strcmp(s, "--"))
                break;
            bool val = false;
            const char *name = s + (s[1] == '-' ? 2 : 1);
            if (strchr(name, '='))
                continue;
            if (cli_args_spec_has(GLOBAL_OPTS, name, &val)) {
                i += val;
                continue;
            }
            break;      /* a command option: the command words are over */
        }
        words[nw] = argv[i];
        widx[nw++] = i;
    }
    size_t used = 0;
    const struct cli_cmd *cmd = nw ? cli_doc_find(c->doc, words, nw, &used) : NULL;
    /* 2. Parse everything but the command words against global + command options. */
    char **rest = xcalloc((size_t)argc + 1, sizeof(char *));
    int nrest = 0;
    for (int i = 1; i < argc; i++) {
        bool is_word = false;
        for (size_t k = 0; k < used; k++)
            is_word |= widx[k] == i;
        if (!is_word)
            rest[nrest++] = argv[i];
    }
    char *spec = xasprintf("%s %s", GLOBAL_OPTS, cmd ? cmd->opts : "");
    struct cli_args a;
    char err[200];
    int rc;
    c->cmd = cmd;
    if (cli_args_parse(spec, nrest, rest, &a, err, sizeof(err)) < 0) {
        rc = usage_error(c, "%s", err);
        goto out;
    }
    c->json = cli_args_has(&a, "json");
    /* Values go into JSON, which is UTF-8 (a file name may be anything). */
    for (size_t i = 0; i < a.nopts + a.npos; i++) {
        bool isopt = i < a.nopts;
        const char *v = isopt ? a.opts[i].value : a.pos[i - a.nopts];
        if (isopt && cli_args_one_of(a.opts[i].name, "file value-file output"))
            continue;
        if (utf8_bad_at(v, strlen(v)) < strlen(v)) {
            rc = isopt ? usage_error(c, "--%s: not valid UTF-8", a.opts[i].name)
                       : usage_error(c, "argument %zu is not valid UTF-8", i - a.nopts + 1);
            goto out_args;
        }
    }
    struct buf b;
    buf_init(&b);
    if (!cmd) {
        if (nw && cli_doc_is_group(c->doc, words[0])) {
            /* a word after the group that names none of its commands is
             * named, not taken for a missing one */
            bool asked = cli_args_has(&a, "help") && nw == 1;
            if (!asked && nw > 1) {
                cli_doc_group_commands(c->doc, words[0], &b);
                fprintf(stderr, "quern: unknown %s command '%s' (one of: %s)\n", words[0],
                        words[1], b.data);
                buf_release(&b);
                buf_init(&b);
            } else if (!asked) {
                fprintf(stderr, "quern: %s needs a subcommand\n", words[0]);
            }
            cli_doc_group_help(c->doc, words[0], &b);
            write_out(asked ? stdout : stderr, b.data, b.len);
            rc = asked ? 0 : CLI_EXIT_USAGE;
        } else if (nw) {
            rc = usage_error(c, "unknown command '%s'", words[0]);
        } else {
            cli_doc_usage(c->doc, &b);
            bool asked = cli_args_has(&a, "help");
            write_out(asked ? stdout : stderr, b.data, b.len);
            rc = asked ? 0 : CLI_EXIT_USAGE;
        }
        buf_release(&b);
        goto out_args;
    }
    if (cli_args_has(&a, "help")) {
        cli_doc_command_help(c->doc, cmd, &b);
        write_out(stdout, b.data, b.len);
        buf_release(&b);
        rc = 0;
        goto out_args;
    }
    buf_release(&b);
    if ((int)a.npos < cmd->min_pos || (int)a.npos > cmd->max_pos) {
        if (a.npos > (size_t)cmd->max_pos)
            rc = usage_error(c, "unexpected argument '%s'", a.pos[cmd->max_pos]);
        else
            rc = usage_error(c, "%s needs %s", cmd->words, cmd->synopsis);
        goto out_args;
    }
    /* An empty argument ("$ID" of an unset variable) would name the
     * collection itself: tasks get "" listed the tasks and exited 0. */
    for (size_t i = 0; i < a.npos; i++) {
        if (!a.pos[i][0]) {
            rc = usage_error(c, "argument %zu is empty", i + 1);
            goto out_args;
        }
    }
    if (needs_server(cmd)) {
        c->url = cli_args_get(&a, "url");
        if (!c->url)
            c->url = getenv("QUERN_URL");
        if (!c->url || !*c->url)
            c->url = DEFAULT_URL;
        const char *key = cli_args_get(&a, "key");
        if (!key)
            key = getenv("QUERN_KEY");
        c->project_opt = cli_args_get(&a, "project");
        if (!c->project_opt)
            c->project_opt = getenv("QUERN_PROJECT");
        if (strncmp(c->url, "http://", 7) != 0 && strncmp(c->url, "https://", 8) != 0) {
            rc = usage_error(c, "--url: must start with http:// or https:// (got '%s')", c->url);
            goto out_args;
        }
        const char *bad = url_problem(c->url);
        if (bad) {
            rc = usage_error(c, "--url (or QUERN_URL): %s", bad);
            goto out_args;
        }
        /* A key read from a file or pasted keeps its blanks: a CR or a space
         * at either end made the server answer "not valid"; one inside went
         * into the Authorization header as is (a newline made a header). */
        size_t klen = key ? strlen(key) : 0;
        while (key && klen && strchr(" \t\r\n", key[klen - 1]))
            klen--;
        while (key && klen && strchr(" \t\r\n", *key)) {
            key++;
            klen--;
        }
        for (size_t i = 0; key && i < klen; i++) {
            if ((unsigned char)key[i] <= 0x20 || key[i] == 0x7f) {
                rc = usage_error(c, "--key (or QUERN_KEY): has a blank or control character");
                goto out_args;
            }
        }
        char *trimmed = key ? xstrndup(key, klen) : NULL;
        int hr = cli_http_init(&c->http, c->url, trimmed);
        free(trimmed);
        if (hr < 0) {
            fputs("quern: cannot initialise libcurl\n", stderr);
            rc = CLI_EXIT_UNREACHABLE;
            goto out_args;
        }
        c->http_ready = true;
        const char *ca = getenv("QUERN_CACERT");
        if (ca && *ca)
            c->http.cacert = xstrdup(ca);
        const char *to = getenv("QUERN_TIMEOUT");
        int64_t secs;
        if (to && *to) {
            if (parse_i64(to, &secs) < 0 || secs < 0 || secs > 86400) {
                rc = usage_error(c, "QUERN_TIMEOUT: seconds from 0 (never) to 86400 (got '%s')",
                                 to);
                goto out_args;
            }
            c->http.idle_s = (long)secs;
        }
    }
    rc = cmd->fn(c, &a);
out_args:
    cli_args_release(&a);
out:
    free(spec);
    free(words);
    free(widx);
    free(rest);
    return rc;
}

/* A closed stdin, stdout or stderr (quern ... >&-) is given /dev/null opened
 * the wrong way round, so it stays closed in effect (a write fails with
 * EBADF, reported as any write error) while no file of ours takes its
 * number: libcurl's wake-up pipe became fd 1, the table went into it and
 * quern exited 0 with nothing printed. */
static void hold_std_fds(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
            continue;
        /* the lowest free number: fd itself, as the lower ones are open */
        (void)open("/dev/null", (fd == 0 ? O_WRONLY : O_RDONLY) | O_CLOEXEC);
    }
}

int main(int argc, char **argv)
{
    hold_std_fds();
    struct cli_ctx c = {.doc = &DOC};
    const char *nc = getenv("NO_COLOR");
    bool color = !(nc && *nc);
    c.tty_out = isatty(STDOUT_FILENO);
    c.tty_err = isatty(STDERR_FILENO);
    c.color_out = color && c.tty_out;
    c.color_err = color && c.tty_err;
    signal(SIGPIPE, SIG_IGN);
    buf_init(&c.resp.body);
    int rc = run_main(&c, argc, argv);
    out_flush(stdout);
    if (g_out_errno == EPIPE && rc == CLI_EXIT_OK) {
        rc = CLI_EXIT_PIPE;
    } else if (g_out_errno && g_out_errno != EPIPE) {
        fprintf(stderr, "quern: cannot write the output: %s\n", strerror(g_out_errno));
        if (rc == CLI_EXIT_OK)
            rc = CLI_EXIT_FAIL;
    }
    if (c.http_ready)
        cli_http_release(&c.http);
    buf_release(&c.resp.body);
    free(c.project);
    for (size_t i = 0; i < c.ngarbage; i++)
        free(c.garbage[i]);
    free(c.garbage);
    return rc;
}
