/*
 * cli_doc — help text, man page and completion scripts for the quern CLI,
 * all derived from the command table and the option glossary so they can
 * never disagree with what the parser accepts.
 */
#include "cli_doc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const DESCRIPTION =
    "quern is the command-line client of quernd, the quern task server. It speaks "
    "only the server's HTTP API: it creates and runs tasks, follows their runs' logs "
    "live, and manages definitions, projects and API keys. Output is an aligned table "
    "for people by default, and the server's JSON with --json for scripts. Colours are "
    "used only when the output is a terminal and NO_COLOR is unset. Text from the "
    "server (names, error messages) is shown with its control characters as '?' or "
    "spaces, so it can neither break a table nor send escape sequences to the terminal; "
    "a run's log alone is printed as the run wrote it, colours included (pipe it through "
    "cat -v to see it plain). A URL may carry a path prefix (a proxy's) and user:password, "
    "which error messages leave out.";

static const struct {
    const char *name, *text;
} ENVIRONMENT[] = {
    {"QUERN_URL", "Server URL when --url is not given (default http://127.0.0.1:7070)."},
    {"QUERN_KEY", "API key when --key is not given. Prefer it to --key: any user of the "
                  "machine can read a command line (ps), and shells keep it in their history. "
                  "quern never prints the key, except the new one of keys create."},
    {"QUERN_PROJECT", "Project id when --project is not given (default: the project "
                      "named \"default\" if the key sees it, else the first it sees)."},
    {"QUERN_TIMEOUT", "Seconds a request waits without a byte from the server before it "
                      "fails with exit status 3 (default 60; 0 waits for ever). Following a "
                      "run is not limited by it."},
    {"QUERN_CACERT", "PEM file of the certificate authorities to trust for an https:// "
                     "URL (a private CA, a self-signed server), instead of the system's."},
    {"NO_COLOR", "When set and not empty, no colours."},
};

static const struct {
    int code;
    const char *text;
} EXIT_CODES[] = {
    {CLI_EXIT_OK, "success (for --wait and logs -f: the run completed)"},
    {CLI_EXIT_FAIL, "the server refused the request (4xx), the run did not complete, or the "
                    "output could not be written (a full disk)"},
    {CLI_EXIT_USAGE, "usage error: unknown command or option, bad value, bad JSON"},
    {CLI_EXIT_UNREACHABLE, "cannot reach the server, or it failed (5xx)"},
    {CLI_EXIT_INTERRUPTED, "interrupted (Ctrl-C) while following a run; the run goes on"},
    {CLI_EXIT_PIPE, "the reader of the output went away (quern logs -f ID | head -1): quern "
                    "stops at once, as if killed by SIGPIPE; the run goes on"},
};

static const char *const EXAMPLES[][2] = {
    {"quern run --runtime python -f job.py --input '{\"n\": 3}' --wait",
     "create a task from a file, run it, and stream its log until it ends"},
    {"quern tasks list --status failed", "the failed tasks"},
    {"quern logs -f run_123", "follow a run's log live"},
    {"quern --json tasks get task_123 | jq .status", "a field for a script"},
    {"quern watch", "a live table of the active runs"},
};

/* Reads the next spec entry at *p: long name into name, value flag, short
 * alias into *shrt (0 if none).  Returns false at the end. */
static bool spec_next(const char **p, char *name, size_t namelen, bool *val, char *shrt)
{
    const char *s = *p;
    while (*s == ' ')
        s++;
    if (!*s)
        return false;
    const char *end = strchr(s, ' ');
    size_t n = end ? (size_t)(end - s) : strlen(s);
    *val = s[n - 1] == ':';
    size_t body = *val ? n - 1 : n;
    const char *bar = memchr(s, '|', body);
    size_t ln = bar ? (size_t)(bar - s) : body;
    *shrt = bar && body - ln == 2 ? bar[1] : 0;
    if (ln >= namelen)
        ln = namelen - 1;
    memcpy(name, s, ln);
    name[ln] = '\0';
    *p = s + n;
    return true;
}

static const struct cli_optdoc *optdoc(const struct cli_doc *d, const char *name)
{
    for (size_t i = 0; i < d->noptdocs; i++)
        if (!strcmp(d->optdocs[i].name, name))
            return &d->optdocs[i];
    return NULL;
}

/* Number of words in s (space-separated). */
static size_t nwords(const char *s)
{
    size_t n = 0;
    bool in = false;
    for (; *s; s++) {
        if (*s == ' ')
            in = false;
        else if (!in) {
            in = true;
            n++;
        }
    }
    return n;
}

/* True when cmd words start with the n words given. */
static bool words_match(const char *cmdwords, char *const *words, size_t n)
{
    const char *p = cmdwords;
    for (size_t i = 0; i < n; i++) {
        while (*p == ' ')
            p++;
        size_t l = strlen(words[i]);
        if (strncmp(p, words[i], l) != 0 || (p[l] != ' ' && p[l] != '\0'))
            return false;
        p += l;
    }
    return true;
}

const struct cli_cmd *cli_doc_find(const struct cli_doc *d, char *const *words, size_t n,
                                   size_t *used)
{
    const struct cli_cmd *best = NULL;
    size_t bestn = 0;
    for (size_t i = 0; i < d->ncmds; i++) {
        size_t w = nwords(d->cmds[i].words);
        if (w <= n && w > bestn && words_match(d->cmds[i].words, words, w)) {
            best = &d->cmds[i];
            bestn = w;
        }
    }
    *used = bestn;
    return best;
}

bool cli_doc_is_group(const struct cli_doc *d, const char *group)
{
    char *w[1] = {(char *)group};
    for (size_t i = 0; i < d->ncmds; i++)
        if (nwords(d->cmds[i].words) > 1 && words_match(d->cmds[i].words, w, 1))
            return true;
    return false;
}

static void pad_to(struct buf *out, size_t have, size_t col)
{
    do
        buf_append(out, " ", 1);
    while (++have < col);
}

/* "--name META" for an option. */
static void opt_label(const struct cli_doc *d, const char *name, char shrt, bool val,
                      char *out, size_t outlen)
{
    const struct cli_optdoc *od = optdoc(d, name);
    const char *meta = od && od->meta ? od->meta : "VALUE";
    char s[8] = "";
    if (shrt)
        snprintf(s, sizeof(s), "-%c, ", shrt);
    if (val)
        snprintf(out, outlen, "%s--%s %s", s, name, meta);
    else
        snprintf(out, outlen, "%s--%s", s, name);
}

static void opts_help(const struct cli_doc *d, const char *spec, struct buf *out)
{
    const char *p = spec;
    char name[64], label[128], shrt;
    bool val;
    while (spec_next(&p, name, sizeof(name), &val, &shrt)) {
        const struct cli_optdoc *od = optdoc(d, name);
        opt_label(d, name, shrt, val, label, sizeof(label));
        buf_printf(out, "  %s", label);
        pad_to(out, strlen(label) + 2, 26);
        buf_printf(out, "%s\n", od ? od->text : "");
    }
}

void cli_doc_usage(const struct cli_doc *d, struct buf *out)
{
    buf_puts(out, "quern — command-line client of the quern task server\n\n"
                  "Usage: quern [--url URL] [--key KEY] [--project ID] [--json] COMMAND ...\n\n"
                  "Commands:\n");
    for (size_t i = 0; i < d->ncmds; i++) {
        const struct cli_cmd *c = &d->cmds[i];
        char head[128];
        /* Positional placeholders only (upper-case words before the first '['/'-'). */
        size_t k = 0;
        const char *s = c->synopsis;
        while (s[k] && s[k] != '[' && s[k] != '-' && s[k] != '(')
            k++;
        while (k > 0 && s[k - 1] == ' ')
            k--;
        snprintf(head, sizeof(head), "%s%s%.*s", c->words, k ? " " : "", (int)k, s);
        buf_printf(out, "  %s", head);
        pad_to(out, strlen(head) + 2, 34);
        buf_printf(out, "%s\n", c->summary);
    }
    buf_puts(out, "\nGlobal options:\n");
    opts_help(d, d->global_opts, out);
    buf_puts(out, "\nEnvironment:\n");
    for (size_t i = 0; i < ARRAY_LEN(ENVIRONMENT); i++) {
        buf_printf(out, "  %s", ENVIRONMENT[i].name);
        pad_to(out, strlen(ENVIRONMENT[i].name) + 2, 18);
        buf_printf(out, "%s\n", ENVIRONMENT[i].text);
    }
    buf_puts(out, "\nExit status:\n");
    for (size_t i = 0; i < ARRAY_LEN(EXIT_CODES); i++)
        buf_printf(out, "  %-3d  %s\n", EXIT_CODES[i].code, EXIT_CODES[i].text);
    buf_puts(out, "\nRun 'quern help COMMAND' for a command's options; 'quern man' prints the "
                  "manual page.\n");
}

void cli_doc_command_help(const struct cli_doc *d, const struct cli_cmd *c, struct buf *out)
{
    buf_printf(out, "Usage: quern %s%s%s\n\n%s.\n", c->words, *c->synopsis ? " " : "",
               c->synopsis, c->summary);
    if (*c->opts) {
        buf_puts(out, "\nOptions:\n");
        opts_help(d, c->opts, out);
    }
    buf_puts(out, "\nGlobal options: --url URL, --key KEY, --project ID, --json "
                  "(see 'quern --help').\n");
}

void cli_doc_group_help(const struct cli_doc *d, const char *group, struct buf *out)
{
    char *w[1] = {(char *)group};
    buf_printf(out, "Usage: quern %s COMMAND ...\n\nCommands:\n", group);
    for (size_t i = 0; i < d->ncmds; i++) {
        const struct cli_cmd *c = &d->cmds[i];
        if (!words_match(c->words, w, 1))
            continue;
        buf_printf(out, "  quern %s %s\n      %s\n", c->words, c->synopsis, c->summary);
    }
    buf_printf(out, "\nRun 'quern help %s COMMAND' for its options.\n", group);
}

void cli_doc_group_commands(const struct cli_doc *d, const char *group, struct buf *out)
{
    char *w[1] = {(char *)group};
    size_t glen = strlen(group);
    size_t start = out->len;
    for (size_t i = 0; i < d->ncmds; i++) {
        const char *cw = d->cmds[i].words;
        if (!words_match(cw, w, 1) || cw[glen] != ' ')
            continue;
        const char *next = cw + glen + 1;
        size_t n = strcspn(next, " ");
        /* each once: "x y" and "x z" both name x */
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++) {
            const char *pw = d->cmds[j].words;
            seen = words_match(pw, w, 1) && pw[glen] == ' ' &&
                   strcspn(pw + glen + 1, " ") == n && !strncmp(pw + glen + 1, next, n);
        }
        if (seen)
            continue;
        if (out->len > start)
            buf_puts(out, ", ");
        buf_append(out, next, n);
    }
}

/* Appends s escaped for roff text: backslashes, leading dots and quotes, dashes. */
static void roff(struct buf *out, const char *s)
{
    if (*s == '.' || *s == '\'')
        buf_puts(out, "\\&");
    for (; *s; s++) {
        if (*s == '\\')
            buf_puts(out, "\\e");
        else if (*s == '-')
            buf_puts(out, "\\-");
        else
            buf_append(out, s, 1);
    }
}

static void man_opts(const struct cli_doc *d, const char *spec, struct buf *out)
{
    const char *p = spec;
    char name[64], shrt;
    bool val;
    while (spec_next(&p, name, sizeof(name), &val, &shrt)) {
        const struct cli_optdoc *od = optdoc(d, name);
        buf_puts(out, ".TP\n");
        if (shrt)
            buf_printf(out, "\\fB\\-%c\\fR, ", shrt);
        buf_puts(out, "\\fB\\-\\-");
        roff(out, name);
        buf_puts(out, "\\fR");
        if (val) {
            buf_puts(out, " \\fI");
            roff(out, od && od->meta ? od->meta : "VALUE");
            buf_puts(out, "\\fR");
        }
        buf_puts(out, "\n");
        roff(out, od ? od->text : "");
        buf_puts(out, "\n");
    }
}

void cli_doc_man(const struct cli_doc *d, struct buf *out)
{
    buf_puts(out, ".\\\" Generated by 'quern man' from the command table in src/cli.c; "
                  "do not edit.\n"
                  ".TH QUERN 1 \"\" \"quern\" \"User Commands\"\n"
                  ".SH NAME\nquern \\- command\\-line client of the quern task server\n"
                  ".SH SYNOPSIS\n.B quern\n[\\fB\\-\\-url\\fR \\fIURL\\fR] "
                  "[\\fB\\-\\-key\\fR \\fIKEY\\fR] [\\fB\\-\\-project\\fR \\fIID\\fR] "
                  "[\\fB\\-\\-json\\fR] \\fICOMMAND\\fR ...\n.SH DESCRIPTION\n");
    roff(out, DESCRIPTION);
    buf_puts(out, "\n.SH COMMANDS\n");
    for (size_t i = 0; i < d->ncmds; i++) {
        const struct cli_cmd *c = &d->cmds[i];
        buf_puts(out, ".TP\n\\fBquern ");
        roff(out, c->words);
        buf_puts(out, "\\fR ");
        roff(out, c->synopsis);
        buf_puts(out, "\n");
        roff(out, c->summary);
        buf_puts(out, ".\n");
    }
    buf_puts(out, ".SH GLOBAL OPTIONS\n");
    man_opts(d, d->global_opts, out);
    buf_puts(out, ".SH COMMAND OPTIONS\n");
    /* Every option used by some command, once, in glossary order. */
    for (size_t i = 0; i < d->noptdocs; i++) {
        const struct cli_optdoc *od = &d->optdocs[i];
        if (cli_args_spec_has(d->global_opts, od->name, NULL))
            continue;
        bool used = false, val = false;
        char shrt = 0;
        for (size_t k = 0; k < d->ncmds && !used; k++) {
            const char *p = d->cmds[k].opts;
            char name[64], s;
            bool v;
            while (spec_next(&p, name, sizeof(name), &v, &s))
                if (!strcmp(name, od->name)) {
                    used = true;
                    val = v;
                    shrt = s;
                    break;
                }
        }
        if (!used)
            continue;
        char spec[96];
        if (shrt)
            snprintf(spec, sizeof(spec), "%s|%c%s", od->name, shrt, val ? ":" : "");
        else
            snprintf(spec, sizeof(spec), "%s%s", od->name, val ? ":" : "");
        man_opts(d, spec, out);
    }
    buf_puts(out, ".SH ENVIRONMENT\n");
    for (size_t i = 0; i < ARRAY_LEN(ENVIRONMENT); i++) {
        buf_printf(out, ".TP\n.B %s\n", ENVIRONMENT[i].name);
        roff(out, ENVIRONMENT[i].text);
        buf_puts(out, "\n");
    }
    buf_puts(out, ".SH EXIT STATUS\n");
    for (size_t i = 0; i < ARRAY_LEN(EXIT_CODES); i++) {
        buf_printf(out, ".TP\n.B %d\n", EXIT_CODES[i].code);
        roff(out, EXIT_CODES[i].text);
        buf_puts(out, ".\n");
    }
    buf_puts(out, ".SH EXAMPLES\n");
    for (size_t i = 0; i < ARRAY_LEN(EXAMPLES); i++) {
        buf_puts(out, ".TP\n.B ");
        roff(out, EXAMPLES[i][0]);
        buf_puts(out, "\n");
        roff(out, EXAMPLES[i][1]);
        buf_puts(out, ".\n");
    }
    buf_puts(out, ".SH SEE ALSO\n.BR quernd (8)\n");
}

/* Words of every option a command takes (its own and the global ones). */
static void opt_words(const char *spec, struct buf *out)
{
    const char *p = spec;
    char name[64], shrt;
    bool val;
    while (spec_next(&p, name, sizeof(name), &val, &shrt)) {
        buf_printf(out, " --%s", name);
        if (shrt)
            buf_printf(out, " -%c", shrt);
    }
}

int cli_doc_completion(const struct cli_doc *d, const char *shell, struct buf *out)
{
    bool zsh = !strcmp(shell, "zsh");
    if (!zsh && strcmp(shell, "bash") != 0)
        return -EINVAL;
    if (zsh)
        buf_puts(out, "#compdef quern\n# zsh completion for quern: eval \"$(quern completion zsh)\"\n"
                      "autoload -U +X bashcompinit && bashcompinit\n");
    else
        buf_puts(out, "# bash completion for quern: eval \"$(quern completion bash)\"\n");
    /* Options that take a value: their value is not a command word. */
    struct buf valopts;
    buf_init(&valopts);
    for (size_t i = 0; i <= d->ncmds; i++) {
        const char *p = i < d->ncmds ? d->cmds[i].opts : d->global_opts;
        char name[64], shrt;
        bool val;
        while (spec_next(&p, name, sizeof(name), &val, &shrt)) {
            if (!val)
                continue;
            char pat[80];
            snprintf(pat, sizeof(pat), "|--%s|", name);
            if (!valopts.len)
                buf_puts(&valopts, "|");
            if (!strstr(valopts.data, pat)) {
                buf_printf(&valopts, "--%s|", name);
                if (shrt)
                    buf_printf(&valopts, "-%c|", shrt);
            }
        }
    }
    /* "|--a|--b|" → "--a|--b" for a case pattern. */
    if (valopts.len >= 2)
        valopts.data[--valopts.len] = '\0';
    const char *vo = valopts.len > 1 ? valopts.data + 1 : "--url";
    buf_printf(out,
               "_quern() {\n"
               "    local cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n"
               "    local cmd=\"\" w i skip=0\n"
               "    for ((i = 1; i < COMP_CWORD; i++)); do\n"
               "        w=\"${COMP_WORDS[i]}\"\n"
               "        if ((skip)); then skip=0; continue; fi\n"
               "        case \"$w\" in\n"
               "            %s) skip=1 ;;\n"
               "            -*) ;;\n"
               "            *) cmd=\"${cmd:+$cmd }$w\" ;;\n"
               "        esac\n"
               "    done\n"
               "    case \"$prev\" in\n"
               "        --file|-f) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n"
               "        --runtime) COMPREPLY=($(compgen -W \"sh bash python node ts\" -- \"$cur\")); return ;;\n"
               "        --priority) COMPREPLY=($(compgen -W \"low medium high urgent\" -- \"$cur\")); return ;;\n"
               "        --type) COMPREPLY=($(compgen -W \"manual scheduled triggered\" -- \"$cur\")); return ;;\n"
               "        --status) COMPREPLY=($(compgen -W \"pending queued running paused "
               "interaction_required review_required completed failed timed_out denied "
               "canceling canceled\" -- \"$cur\")); return ;;\n"
               "        --scope) COMPREPLY=($(compgen -W \"task:read task:write worker admin\" -- \"$cur\")); return ;;\n"
               "        %s) return ;;\n"
               "    esac\n"
               "    local words=\"\"\n"
               "    case \"$cmd\" in\n",
               vo, vo);
    buf_release(&valopts);
    /* Top level: the first words of every command. */
    struct buf top;
    buf_init(&top);
    for (size_t i = 0; i < d->ncmds; i++) {
        const char *w = d->cmds[i].words;
        size_t l = strcspn(w, " ");
        char word[64];
        snprintf(word, sizeof(word), " %.*s ", (int)l, w);
        char *hay = xasprintf(" %s ", top.data ? top.data : "");
        if (!strstr(hay, word))
            buf_printf(&top, "%s%.*s", top.len ? " " : "", (int)l, w);
        free(hay);
    }
    buf_printf(out, "        \"\") words=\"%s\" ;;\n", top.data);
    buf_release(&top);
    /* Groups: their subcommands. */
    for (size_t i = 0; i < d->ncmds; i++) {
        const char *w = d->cmds[i].words;
        size_t l = strcspn(w, " ");
        if (!w[l])
            continue;
        if (i > 0 && !strncmp(d->cmds[i - 1].words, w, l + 1))
            continue;       /* group already emitted (commands of a group are adjacent) */
        buf_printf(out, "        \"%.*s\") words=\"", (int)l, w);
        for (size_t k = i; k < d->ncmds && !strncmp(d->cmds[k].words, w, l + 1); k++)
            buf_printf(out, "%s%s", k > i ? " " : "", d->cmds[k].words + l + 1);
        buf_puts(out, "\" ;;\n");
    }
    /* Commands: their options. */
    for (size_t i = 0; i < d->ncmds; i++) {
        const struct cli_cmd *c = &d->cmds[i];
        buf_printf(out, "        \"%s\") words=\"", c->words);
        if (!strcmp(c->words, "completion"))
            buf_puts(out, "bash zsh");
        else if (!strcmp(c->words, "help"))
            buf_puts(out, "projects keys definitions tasks runs run logs watch completion man");
        struct buf o;
        buf_init(&o);
        opt_words(c->opts, &o);
        opt_words(d->global_opts, &o);
        buf_puts(out, o.data ? o.data : "");
        buf_release(&o);
        buf_puts(out, "\" ;;\n");
    }
    buf_puts(out, "    esac\n"
                  "    COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
                  "}\n"
                  "complete -F _quern quern\n");
    return 0;
}
