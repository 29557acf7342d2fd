/* Unit tests of the quern CLI's pure helpers: option parsing, SSE parsing,
 * table and JSON rendering, error text, and the documentation generator. */
#include "t.h"

#include <errno.h>

#include "cli_args.h"
#include "cli_doc.h"
#include "cli_http.h"
#include "cli_sse.h"
#include "cli_table.h"
#include "util.h"

/* ---- cli_args ---- */

TEST(args_long_short_equals_and_positionals)
{
    char *argv[] = {"task_1", "--name", "n1", "-f", "job.py", "--input={\"a\":1}", "--wait", "-",
                    "--", "--not-an-option"};
    struct cli_args a;
    char err[128] = "";
    CHECK_EQ_INT(cli_args_parse("name: file|f: input: wait", 10, argv, &a, err, sizeof(err)), 0);
    CHECK_EQ_STR(cli_args_get(&a, "name"), "n1");
    CHECK_EQ_STR(cli_args_get(&a, "file"), "job.py");
    CHECK_EQ_STR(cli_args_get(&a, "input"), "{\"a\":1}");
    CHECK(cli_args_has(&a, "wait"));
    CHECK_EQ_STR(cli_args_get(&a, "wait"), "");
    CHECK(!cli_args_has(&a, "code"));
    CHECK_EQ_INT(a.npos, 3);
    CHECK_EQ_STR(a.pos[0], "task_1");
    CHECK_EQ_STR(a.pos[1], "-");
    CHECK_EQ_STR(a.pos[2], "--not-an-option");
    cli_args_release(&a);
}

TEST(args_repeated_option_keeps_every_value)
{
    char *argv[] = {"--scope", "task:read", "--scope=admin", "--scope", "worker"};
    struct cli_args a;
    char err[128];
    CHECK_EQ_INT(cli_args_parse("scope:", 5, argv, &a, err, sizeof(err)), 0);
    CHECK_EQ_STR(cli_args_nth(&a, "scope", 0), "task:read");
    CHECK_EQ_STR(cli_args_nth(&a, "scope", 1), "admin");
    CHECK_EQ_STR(cli_args_nth(&a, "scope", 2), "worker");
    CHECK(cli_args_nth(&a, "scope", 3) == NULL);
    CHECK_EQ_STR(cli_args_get(&a, "scope"), "worker");
    cli_args_release(&a);
}

TEST(args_errors_name_the_option)
{
    struct cli_args a;
    char err[128];
    char *unknown[] = {"--bogus"};
    CHECK_EQ_INT(cli_args_parse("name:", 1, unknown, &a, err, sizeof(err)), -EINVAL);
    CHECK_EQ_STR(err, "unknown option --bogus");
    cli_args_release(&a);
    char *missing[] = {"--name"};
    CHECK_EQ_INT(cli_args_parse("name:", 1, missing, &a, err, sizeof(err)), -EINVAL);
    CHECK_EQ_STR(err, "option --name needs a value");
    cli_args_release(&a);
    char *flagval[] = {"--wait=yes"};
    CHECK_EQ_INT(cli_args_parse("wait", 1, flagval, &a, err, sizeof(err)), -EINVAL);
    CHECK_EQ_STR(err, "option --wait takes no value");
    cli_args_release(&a);
    char *shortlong[] = {"-name"};
    CHECK_EQ_INT(cli_args_parse("name:", 1, shortlong, &a, err, sizeof(err)), -EINVAL);
    cli_args_release(&a);
    /* A prefix of a declared name is not that name. */
    char *prefix[] = {"--inp", "{}"};
    CHECK_EQ_INT(cli_args_parse("input: input-schema:", 2, prefix, &a, err, sizeof(err)), -EINVAL);
    cli_args_release(&a);
}

TEST(args_value_may_start_with_dash)
{
    char *argv[] = {"--input", "-1", "--name", "--wait"};
    struct cli_args a;
    char err[128];
    CHECK_EQ_INT(cli_args_parse("input: name: wait", 4, argv, &a, err, sizeof(err)), 0);
    CHECK_EQ_STR(cli_args_get(&a, "input"), "-1");
    CHECK_EQ_STR(cli_args_get(&a, "name"), "--wait");
    CHECK(!cli_args_has(&a, "wait"));
    cli_args_release(&a);
}

TEST(args_int_validation)
{
    char *argv[] = {"--limit", "20", "--offset", "-3", "--count", "x1"};
    struct cli_args a;
    char err[128];
    int64_t n = 7;
    CHECK_EQ_INT(cli_args_parse("limit: offset: count: other:", 6, argv, &a, err, sizeof(err)), 0);
    CHECK_EQ_INT(cli_args_int(&a, "limit", 0, 500, &n, err, sizeof(err)), 0);
    CHECK_EQ_INT(n, 20);
    CHECK_EQ_INT(cli_args_int(&a, "offset", 0, 100, &n, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "--offset") != NULL);
    CHECK_EQ_INT(cli_args_int(&a, "count", 0, 100, &n, err, sizeof(err)), -EINVAL);
    CHECK_EQ_STR(err, "--count: not an integer: 'x1'");
    CHECK_EQ_INT(cli_args_int(&a, "other", 0, 100, &n, err, sizeof(err)), 1);
    CHECK_EQ_INT(n, 20);
    cli_args_release(&a);
}

TEST(args_spec_and_choices)
{
    bool v = false;
    CHECK(cli_args_spec_has("url: key: json help|h", "h", &v));
    CHECK(!v);
    CHECK(cli_args_spec_has("url: key: json help|h", "key", &v));
    CHECK(v);
    CHECK(!cli_args_spec_has("url: key:", "ke", NULL));
    CHECK(cli_args_one_of("high", "low medium high urgent"));
    CHECK(!cli_args_one_of("hig", "low medium high urgent"));
    CHECK(!cli_args_one_of("", "low medium"));
}

/* ---- cli_sse ---- */

struct got {
    int n;
    char type[8][64], data[8][256], id[8][32];
};

static int collect(const char *type, const char *data, const char *id, void *ud)
{
    struct got *g = ud;
    if (g->n < 8) {
        snprintf(g->type[g->n], 64, "%s", type);
        snprintf(g->data[g->n], 256, "%s", data);
        snprintf(g->id[g->n], 32, "%s", id);
    }
    g->n++;
    return 0;
}

TEST(sse_events_in_one_chunk)
{
    const char *s = ": keepalive\n\nid: 1\nevent: task_run.log\ndata: {\"a\":1}\n\n"
                    "data: line1\ndata: line2\n\nretry: 5\nid: 7\ndata:x\n\n";
    struct cli_sse p;
    struct got g = {0};
    cli_sse_init(&p);
    CHECK_EQ_INT(cli_sse_feed(&p, s, strlen(s), collect, &g), 0);
    CHECK_EQ_INT(g.n, 3);
    CHECK_EQ_STR(g.type[0], "task_run.log");
    CHECK_EQ_STR(g.data[0], "{\"a\":1}");
    CHECK_EQ_STR(g.id[0], "1");
    CHECK_EQ_STR(g.type[1], "message");
    CHECK_EQ_STR(g.data[1], "line1\nline2");
    CHECK_EQ_STR(g.id[1], "1");
    CHECK_EQ_STR(g.data[2], "x");
    CHECK_EQ_STR(cli_sse_last_id(&p), "7");
    cli_sse_release(&p);
}

TEST(sse_byte_by_byte_with_crlf_and_cr)
{
    const char *s = "id: 42\r\nevent: e\r\ndata: hello\r\n\r\nevent: f\rdata: bye\r\r";
    struct cli_sse p;
    struct got g = {0};
    cli_sse_init(&p);
    for (size_t i = 0; s[i]; i++)
        cli_sse_feed(&p, s + i, 1, collect, &g);
    CHECK_EQ_INT(g.n, 2);
    CHECK_EQ_STR(g.type[0], "e");
    CHECK_EQ_STR(g.data[0], "hello");
    CHECK_EQ_STR(g.id[0], "42");
    CHECK_EQ_STR(g.type[1], "f");
    CHECK_EQ_STR(g.data[1], "bye");
    cli_sse_release(&p);
}

TEST(sse_event_without_data_is_not_dispatched)
{
    const char *s = "event: ping\n\nid: 3\n\n";
    struct cli_sse p;
    struct got g = {0};
    cli_sse_init(&p);
    cli_sse_feed(&p, s, strlen(s), collect, &g);
    CHECK_EQ_INT(g.n, 0);
    CHECK_EQ_STR(cli_sse_last_id(&p), "3");
    /* An incomplete event waits for its blank line. */
    cli_sse_feed(&p, "data: a\n", 8, collect, &g);
    CHECK_EQ_INT(g.n, 0);
    cli_sse_feed(&p, "\n", 1, collect, &g);
    CHECK_EQ_INT(g.n, 1);
    CHECK_EQ_STR(g.type[0], "message");
    cli_sse_release(&p);
}

static int stop_at_first(const char *type, const char *data, const char *id, void *ud)
{
    (*(int *)ud)++;
    return 9;
}

TEST(sse_callback_can_stop)
{
    const char *s = "data: 1\n\ndata: 2\n\n";
    struct cli_sse p;
    int n = 0;
    cli_sse_init(&p);
    CHECK_EQ_INT(cli_sse_feed(&p, s, strlen(s), stop_at_first, &n), 9);
    CHECK_EQ_INT(n, 1);
    cli_sse_release(&p);
}

/* ---- cli_table ---- */

TEST(sse_restart_drops_a_half_read_event_and_keeps_the_id)
{
    /* a stream cut mid-event, then a reconnect: its first line is new */
    const char *s = "id: 5\ndata: one\n\nevent: e\ndata: {\"cut";
    struct cli_sse p;
    struct got g = {0};
    cli_sse_init(&p);
    cli_sse_feed(&p, s, strlen(s), collect, &g);
    CHECK_EQ_INT(g.n, 1);
    cli_sse_restart(&p);
    CHECK_EQ_STR(cli_sse_last_id(&p), "5");
    cli_sse_feed(&p, "data: two\n\n", 11, collect, &g);
    CHECK_EQ_INT(g.n, 2);
    CHECK_EQ_STR(g.type[1], "message");
    CHECK_EQ_STR(g.data[1], "two");
    cli_sse_release(&p);
}

TEST(table_aligns_columns_without_trailing_blanks)
{
    const char *h[] = {"ID", "NAME", "STATUS"};
    struct cli_table t;
    cli_table_init(&t, 3, h);
    const char *r1[] = {"task_1", "a", "completed"};
    const char *r2[] = {"t2", "longer name", NULL};
    cli_table_add(&t, r1);
    cli_table_add(&t, r2);
    struct buf b;
    buf_init(&b);
    cli_table_render(&t, &b, false);
    CHECK_EQ_STR(b.data, "ID      NAME         STATUS\n"
                         "task_1  a            completed\n"
                         "t2      longer name  -\n");
    buf_release(&b);
    cli_table_release(&t);
}

TEST(table_counts_utf8_characters_and_cuts_long_cells)
{
    const char *h[] = {"NAME", "X"};
    struct cli_table t;
    cli_table_init(&t, 2, h);
    const char *r1[] = {"héllo", "1"};
    char longname[100];
    memset(longname, 'a', 99);
    longname[99] = '\0';
    const char *r2[] = {longname, "2"};
    const char *r3[] = {"new\nline\x1b[31m", "3"};
    cli_table_add(&t, r1);
    cli_table_add(&t, r2);
    cli_table_add(&t, r3);
    CHECK_EQ_INT(cli_utf8_len(t.cells[2]), CLI_CELL_MAX);
    CHECK(strstr(t.cells[2], "…") != NULL);
    CHECK(strchr(t.cells[4], '\n') == NULL);
    CHECK(strchr(t.cells[4], '\x1b') == NULL);
    struct buf b;
    buf_init(&b);
    cli_table_render(&t, &b, false);
    /* "héllo" is 5 characters: padded like any 5-letter name. */
    char *line2 = strchr(b.data, '\n') + 1;
    CHECK(strncmp(line2, "héllo", strlen("héllo")) == 0);
    CHECK_EQ_INT(cli_utf8_len(line2) > 0, 1);
    size_t w = CLI_CELL_MAX + 2;
    char expect[64];
    snprintf(expect, sizeof(expect), "%*s", (int)(w - 5), "");
    CHECK(strncmp(line2 + strlen("héllo"), expect, w - 5) == 0);
    buf_release(&b);
    cli_table_release(&t);
}

TEST(table_colours_status_and_headers_only_when_asked)
{
    const char *h[] = {"ID", "STATUS"};
    struct cli_table t;
    cli_table_init(&t, 2, h);
    const char *r[] = {"run_1", "failed"};
    cli_table_add(&t, r);
    struct buf b;
    buf_init(&b);
    cli_table_render(&t, &b, true);
    CHECK(strstr(b.data, "\033[31mfailed\033[0m") != NULL);
    CHECK(strstr(b.data, "\033[1mID\033[0m     ") != NULL);
    b.len = 0;
    cli_table_render(&t, &b, false);
    CHECK(strchr(b.data, '\033') == NULL);
    buf_release(&b);
    cli_table_release(&t);
}

TEST(table_from_json_rows)
{
    static const struct cli_col cols[] = {
        {"ID", "id", CLI_FMT_TEXT},
        {"SCOPES", "scopes", CLI_FMT_TEXT},
        {"CODE", "error.code", CLI_FMT_TEXT},
        {"TOOK", "duration_ms", CLI_FMT_DURATION},
        {"CREATED", "created_at", CLI_FMT_AGE},
        {"P", "progress", CLI_FMT_PERCENT},
    };
    json_t *rows = json_loads(
        "[{\"id\":\"r1\",\"scopes\":[\"admin\",\"worker\"],\"error\":{\"code\":\"signal\"},"
        "\"duration_ms\":1534,\"created_at\":\"2026-11-22T21:40:02.000Z\",\"progress\":0.424},"
        "{\"id\":\"r2\",\"scopes\":[],\"error\":null,\"created_at\":null}]",
        0, NULL);
    CHECK(rows != NULL);
    const char *h[] = {"ID", "SCOPES", "CODE", "TOOK", "CREATED", "P"};
    struct cli_table t;
    cli_table_init(&t, 6, h);
    int64_t now;
    rfc3339_parse("2026-11-22T21:42:02.000Z", &now);
    cli_table_add_json(&t, cols, 6, rows, now);
    CHECK_EQ_INT(t.nrows, 2);
    CHECK_EQ_STR(t.cells[1], "admin,worker");
    CHECK_EQ_STR(t.cells[2], "signal");
    CHECK_EQ_STR(t.cells[3], "1.5s");
    CHECK_EQ_STR(t.cells[4], "2m ago");
    CHECK_EQ_STR(t.cells[5], "42%");
    CHECK_EQ_STR(t.cells[6 + 1], "-");
    CHECK_EQ_STR(t.cells[6 + 2], "-");
    CHECK_EQ_STR(t.cells[6 + 3], "-");
    CHECK_EQ_STR(t.cells[6 + 4], "-");
    cli_table_release(&t);
    json_decref(rows);
}

TEST(scrub_hides_c0_del_and_c1_controls)
{
    /* ESC, BEL, DEL and U+009B (CSI as one code point) could drive a terminal */
    char s[] = "a\033[2Jb\007c\177d\xc2\x9b" "31me\nf\tg \xc3\xa9";
    cli_scrub(s, '?', false);
    CHECK_EQ_STR(s, "a?[2Jb?c?d?31me?f?g \xc3\xa9");
    char t[] = "l1\nl2\tx\033y";
    cli_scrub(t, '?', true);
    CHECK_EQ_STR(t, "l1\nl2\tx?y");
    char u[] = "\xc2";     /* a lone lead byte at the end stays */
    cli_scrub(u, '?', false);
    CHECK_EQ_STR(u, "\xc2");
}

TEST(ages_and_durations)
{
    char s[32];
    cli_fmt_age(0, 59999, s, sizeof(s));
    CHECK_EQ_STR(s, "59s ago");
    cli_fmt_age(0, 3600000, s, sizeof(s));
    CHECK_EQ_STR(s, "1h ago");
    cli_fmt_age(0, 3 * 86400000LL, s, sizeof(s));
    CHECK_EQ_STR(s, "3d ago");
    cli_fmt_age(1795383722123LL, 1795383722123LL + 40 * 86400000LL, s, sizeof(s));
    CHECK_EQ_STR(s, "2026-11-22");
    cli_fmt_age(1000, 0, s, sizeof(s));
    CHECK_EQ_STR(s, "0s ago");
    cli_fmt_duration(850, s, sizeof(s));
    CHECK_EQ_STR(s, "850ms");
    cli_fmt_duration(1234, s, sizeof(s));
    CHECK_EQ_STR(s, "1.2s");
    cli_fmt_duration(184000, s, sizeof(s));
    CHECK_EQ_STR(s, "3m04s");
    cli_fmt_duration(7500000, s, sizeof(s));
    CHECK_EQ_STR(s, "2h05m");
}

TEST(kv_view)
{
    json_t *o = json_loads("{\"id\":\"t1\",\"status\":\"running\",\"input\":{\"a\":[1,2]},"
                           "\"deadline\":null}", 0, NULL);
    struct buf b;
    buf_init(&b);
    cli_render_kv(o, &b, false);
    CHECK_EQ_STR(b.data, "id:       t1\n"
                         "status:   running\n"
                         "input:    {\"a\":[1,2]}\n"
                         "deadline: -\n");
    buf_release(&b);
    json_decref(o);
}

TEST(json_pretty_keeps_tokens_verbatim)
{
    const char *in = "{\"a\":0.1,\"b\":[],\"c\":{},\"s\":\"x, {y}: \\\"z\\\"\",\"n\":[1,{\"k\":true}]}";
    struct buf b;
    buf_init(&b);
    CHECK_EQ_INT(cli_json_pretty(in, strlen(in), &b), 0);
    CHECK_EQ_STR(b.data, "{\n"
                         "  \"a\": 0.1,\n"
                         "  \"b\": [],\n"
                         "  \"c\": {},\n"
                         "  \"s\": \"x, {y}: \\\"z\\\"\",\n"
                         "  \"n\": [\n"
                         "    1,\n"
                         "    {\n"
                         "      \"k\": true\n"
                         "    }\n"
                         "  ]\n"
                         "}");
    b.len = 0;
    CHECK_EQ_INT(cli_json_pretty("{\"a\":[1}", 8, &b), -EINVAL);
    buf_release(&b);
}

/* ---- cli_http (no network) ---- */

TEST(error_text_from_api_error_shape)
{
    const char *body = "{\"error\":{\"type\":\"not_found\",\"code\":\"not_found\","
                       "\"message\":\"task task_x not found\",\"param\":\"task_id\"}}";
    char *t = cli_http_error_text(404, body, strlen(body));
    CHECK_EQ_STR(t, "404 not_found: task task_x not found (param: task_id)");
    free(t);
    body = "{\"error\":{\"type\":\"conflict\",\"code\":\"relay_not_configured\",\"message\":\"no\"}}";
    t = cli_http_error_text(409, body, strlen(body));
    CHECK_EQ_STR(t, "409 conflict [relay_not_configured]: no");
    free(t);
    t = cli_http_error_text(502, "Bad Gateway\n", 12);
    CHECK_EQ_STR(t, "502: Bad Gateway");
    free(t);
    t = cli_http_error_text(500, "", 0);
    CHECK_EQ_STR(t, "500: (empty response)");
    free(t);
}

TEST(escape_path_segments)
{
    char *e = cli_http_escape("a b/c?d");
    CHECK_EQ_STR(e, "a%20b%2Fc%3Fd");
    free(e);
}

/* ---- cli_doc ---- */

static int dummy(struct cli_ctx *c, const struct cli_args *a)
{
    return 0;
}

static const struct cli_cmd CMDS[] = {
    {"tasks list", "[--status S]", "List tasks", "status:", 0, 0, dummy},
    {"tasks get", "ID", "Show a task", "", 1, 1, dummy},
    {"run", "(-f FILE | --code C) [--wait]", "Run code", "file|f: code: wait", 0, 0, dummy},
};
static const struct cli_optdoc ODOCS[] = {
    {"status", "S", "a status"},
    {"file", "FILE", "read the code from FILE"},
    {"wait", NULL, "follow the run"},
    {"url", "URL", "server URL"},
};
static const struct cli_doc DOC = {CMDS, 3, ODOCS, 4, "url: json"};

TEST(doc_finds_longest_command)
{
    size_t used;
    char *w1[] = {"tasks", "get", "task_1"};
    CHECK(cli_doc_find(&DOC, w1, 3, &used) == &CMDS[1]);
    CHECK_EQ_INT(used, 2);
    char *w2[] = {"run", "x"};
    CHECK(cli_doc_find(&DOC, w2, 2, &used) == &CMDS[2]);
    CHECK_EQ_INT(used, 1);
    char *w3[] = {"tasks"};
    CHECK(cli_doc_find(&DOC, w3, 1, &used) == NULL);
    CHECK(cli_doc_is_group(&DOC, "tasks"));
    CHECK(!cli_doc_is_group(&DOC, "run"));
    char *w4[] = {"task", "get"};
    CHECK(cli_doc_find(&DOC, w4, 2, &used) == NULL);
}

TEST(doc_help_man_completion_come_from_the_table)
{
    struct buf b;
    buf_init(&b);
    cli_doc_usage(&DOC, &b);
    CHECK(strstr(b.data, "  tasks get ID") != NULL);
    CHECK(strstr(b.data, "Exit status:") != NULL);
    CHECK(strstr(b.data, "  3    cannot reach the server") != NULL);
    b.len = 0;
    cli_doc_command_help(&DOC, &CMDS[2], &b);
    CHECK(strstr(b.data, "Usage: quern run (-f FILE | --code C) [--wait]") != NULL);
    CHECK(strstr(b.data, "-f, --file FILE") != NULL);
    CHECK(strstr(b.data, "--wait") != NULL);
    b.len = 0;
    cli_doc_man(&DOC, &b);
    CHECK(strncmp(b.data, ".\\\"", 3) == 0);
    CHECK(strstr(b.data, ".TH QUERN 1") != NULL);
    CHECK(strstr(b.data, "\\fBquern tasks get\\fR ID") != NULL);
    CHECK(strstr(b.data, "\\fB\\-\\-status\\fR \\fIS\\fR") != NULL);
    CHECK(strstr(b.data, ".SH EXIT STATUS") != NULL);
    b.len = 0;
    CHECK_EQ_INT(cli_doc_completion(&DOC, "bash", &b), 0);
    CHECK(strstr(b.data, "complete -F _quern quern") != NULL);
    CHECK(strstr(b.data, "\"\") words=\"tasks run\"") != NULL);
    CHECK(strstr(b.data, "\"tasks\") words=\"list get\"") != NULL);
    CHECK(strstr(b.data, "\"tasks list\") words=\" --status --url --json\"") != NULL);
    CHECK(strstr(b.data, "--status|--file|-f|--code|--url) skip=1") != NULL);
    b.len = 0;
    CHECK_EQ_INT(cli_doc_completion(&DOC, "zsh", &b), 0);
    CHECK(strstr(b.data, "bashcompinit") != NULL);
    CHECK_EQ_INT(cli_doc_completion(&DOC, "fish", &b), -EINVAL);
    buf_release(&b);
}
