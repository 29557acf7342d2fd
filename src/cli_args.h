/*
 * cli_args — the quern CLI's option parser.  A command declares its options in
 * a compact spec string ("name: runtime|r: no-run wait"); cli_args_parse()
 * splits argv into options and positionals against it.  Pure, single-threaded,
 * no I/O: unit-tested in tests/unit/test_cli.c.
 *
 * Spec grammar: space-separated entries "long[|s][:]" where s is a one-letter
 * alias and a trailing ':' means the option takes a value.  Every option may
 * be repeated; cli_args_get() returns the last value, cli_args_nth() each.
 */
#ifndef QUERN_CLI_ARGS_H
#define QUERN_CLI_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cli_opt {
    char *name;                 /* long name, without dashes */
    char *value;                /* "" for a flag */
};

struct cli_args {
    struct cli_opt *opts;
    size_t nopts;
    char **pos;                 /* positionals, in order */
    size_t npos;
};

/* Parses argv[0..argc) against spec into out (which the caller releases with
 * cli_args_release, also on failure).  Returns 0, or -EINVAL with a message
 * such as "unknown option --foo" written into err. */
int cli_args_parse(const char *spec, int argc, char **argv, struct cli_args *out,
                   char *err, size_t errlen);
void cli_args_release(struct cli_args *a);

/* True when spec declares the option name (its long name or one-letter
 * alias); *takes_value (may be NULL) tells whether it wants a value. */
bool cli_args_spec_has(const char *spec, const char *name, bool *takes_value);

/* The last value given for option name, or NULL when absent (borrowed). */
const char *cli_args_get(const struct cli_args *a, const char *name);
/* The i-th value given for name (0-based), or NULL past the end (borrowed). */
const char *cli_args_nth(const struct cli_args *a, const char *name, size_t i);
bool cli_args_has(const struct cli_args *a, const char *name);

/* Reads option name as an integer in [min, max] into *out (left alone when
 * the option is absent).  Returns 0, 1 when absent, or -EINVAL with a message
 * naming the flag in err. */
int cli_args_int(const struct cli_args *a, const char *name, int64_t min, int64_t max,
                 int64_t *out, char *err, size_t errlen);

/* Checks that value is one of the space-separated words of choices. */
bool cli_args_one_of(const char *value, const char *choices);

#endif
