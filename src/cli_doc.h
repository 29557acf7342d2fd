/*
 * cli_doc — everything the quern CLI says about itself, generated from ONE
 * table of commands (defined in cli.c) and one glossary of options: --help,
 * `quern help COMMAND`, the man page (`quern man` > man/quern.1) and the bash
 * and zsh completion scripts.  Pure functions writing into a struct buf.
 */
#ifndef QUERN_CLI_DOC_H
#define QUERN_CLI_DOC_H

#include <stddef.h>

#include "cli_args.h"
#include "util.h"

struct cli_ctx;

/* One command of the CLI. */
struct cli_cmd {
    const char *words;          /* "tasks create": the words that select it */
    const char *synopsis;       /* what follows the words in usage */
    const char *summary;        /* one line, no trailing period */
    const char *opts;           /* cli_args spec of its own options */
    int min_pos, max_pos;       /* positional arguments after the words */
    int (*fn)(struct cli_ctx *ctx, const struct cli_args *a);
};

/* One option in the glossary shared by all commands. */
struct cli_optdoc {
    const char *name;           /* long name without dashes */
    const char *meta;           /* value placeholder, NULL for a flag */
    const char *text;
};

struct cli_doc {
    const struct cli_cmd *cmds;
    size_t ncmds;
    const struct cli_optdoc *optdocs;
    size_t noptdocs;
    const char *global_opts;    /* spec of the options every command takes */
};

/* Exit codes a script can trust (documented in --help and the man page). */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAIL = 1,          /* the server said no (4xx), or the run failed */
    CLI_EXIT_USAGE = 2,         /* bad command line */
    CLI_EXIT_UNREACHABLE = 3,   /* cannot reach the server, or it failed (5xx) */
    CLI_EXIT_INTERRUPTED = 130, /* Ctrl-C while following a run (it goes on) */
    CLI_EXIT_PIPE = 141,        /* stdout closed early (| head), as if killed by SIGPIPE */
};

/* Finds the command named by the longest prefix of words[0..n); *used gets how
 * many words it took.  NULL when none matches. */
const struct cli_cmd *cli_doc_find(const struct cli_doc *d, char *const *words, size_t n,
                                   size_t *used);
/* True when some command's words start with group (e.g. "tasks"). */
bool cli_doc_is_group(const struct cli_doc *d, const char *group);

/* quern --help: every command, global options, environment, exit codes. */
void cli_doc_usage(const struct cli_doc *d, struct buf *out);
/* Help for one command: usage line, summary, each of its options. */
void cli_doc_command_help(const struct cli_doc *d, const struct cli_cmd *c, struct buf *out);
/* Help for a group ("tasks"): the usage line of each of its commands. */
void cli_doc_group_help(const struct cli_doc *d, const char *group, struct buf *out);
/* The words that may follow group ("create, list, get, ..."), each once, in
 * the table's order, comma-separated. */
void cli_doc_group_commands(const struct cli_doc *d, const char *group, struct buf *out);
/* The man page quern(1) in roff. */
void cli_doc_man(const struct cli_doc *d, struct buf *out);
/* A completion script for shell "bash" or "zsh"; -EINVAL for another shell. */
int cli_doc_completion(const struct cli_doc *d, const char *shell, struct buf *out);

#endif
