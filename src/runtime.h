/*
 * runtime — the table of code runtimes (sh/default, bash, python, node, ts):
 * which interpreter runs a task's code, with which arguments, under which
 * script file name, plus extra read-only host paths the runtime needs inside
 * the sandbox.  Built-in defaults, overridable (or extended with new ids) by
 * runtime_config_set(), which quern.conf parsing feeds at start-up.
 *
 * Warm start: a runtime with a loader (python, node, ts) may keep `warm` boxes
 * started ahead of runs, its interpreter running a small loader that waits
 * on fd 6 for the script's path and the run's environment, then runs the
 * script in-process (see exec.c).  quern.conf sets the sizes ([runtime.ID]
 * warm = N); QUERN_WARM="python=2,node=0" in the environment overrides them.
 *
 * Threading: configure before any run starts (single-threaded start-up);
 * afterwards the table is read-only and runtime_find() is safe from any thread.
 */
#ifndef QUERN_RUNTIME_H
#define QUERN_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>

#define RUNTIME_MAX_ARGS 8
#define RUNTIME_MAX_PATHS 8
#define RUNTIME_MAX_WARM 16

/* How a warm box's interpreter waits for its script. */
enum runtime_loader {
    RUNTIME_LOADER_NONE = 0,
    RUNTIME_LOADER_PYTHON,
    RUNTIME_LOADER_NODE,
    RUNTIME_LOADER_TS,   /* node with sucrase loaded: the warm loader transforms, then imports */
};

struct runtime {
    char *id;
    char *interpreter;                /* absolute host path, e.g. /usr/bin/python3 */
    char *args[RUNTIME_MAX_ARGS];     /* arguments before the script's path */
    size_t nargs;
    char *file_name;                  /* script, script.py, script.mjs, script.ts */
    /* Extra read-only mounts: host path and its path inside the sandbox. */
    char *ro_host[RUNTIME_MAX_PATHS], *ro_box[RUNTIME_MAX_PATHS];
    size_t nro;
    bool network_allowed;             /* may a run of this runtime have network */
    enum runtime_loader loader;       /* NONE: never warm */
    int warm;                         /* warm boxes kept ready (0 .. RUNTIME_MAX_WARM) */
};

/* The runtime with this id ("default" is an alias of "sh"), or NULL for an
 * unknown id.  The table owns the result; it lives until runtime_reset(). */
const struct runtime *runtime_find(const char *id);

/* Sets one key of runtime id, creating the runtime (as a copy of "sh") when
 * the id is new.  Keys: interpreter, args (space-separated), file_name,
 * ro_paths ("host[:box] host[:box] ..."), network (true/false), vendor_dir
 * (ts only: a directory holding node_modules/sucrase), loader (python, node,
 * ts or none), warm (0..16 boxes kept started; > 0 needs a loader).  0 or -EINVAL. */
int runtime_config_set(const char *id, const char *key, const char *value);

/* The loader program for rt (argv after the interpreter and rt->args, NULL
 * terminated), or NULL when rt has none.  Static strings. */
const char *const *runtime_loader_argv(const struct runtime *rt);

/* The arguments of a warm box's interpreter (after its path): rt->args then
 * the loader's, except for the ts loader, which replaces ts's cold runner
 * program.  At most cap; returns how many. */
size_t runtime_warm_args(const struct runtime *rt, const char **out, size_t cap);

/* Calls fn for every runtime (configuration order), after applying
 * QUERN_WARM. */
void runtime_each(void (*fn)(void *ctx, const struct runtime *rt), void *ctx);

/* True when the runtime's interpreter exists and is executable on the host. */
bool runtime_available(const struct runtime *rt);

/* Frees the table; the next runtime_find() rebuilds the built-in defaults. */
void runtime_reset(void);

#endif
