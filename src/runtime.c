/*
 * runtime — built-in runtimes and their configuration (see runtime.h).
 *
 * TypeScript: node 20 has no --experimental-strip-types, so the `ts` runtime
 * runs node with a tiny inline ES-module runner that strips the types with
 * sucrase (pure JavaScript, no native code, ~1 ms per small file) and imports
 * the result from /tmp (it deletes itself as it starts, so the code finds
 * /tmp as empty as node's code does).  sucrase is installed by
 * `npm install --prefix vendor sucrase@3` and the vendor directory is
 * mounted read-only at /opt/quern in the sandbox.
 */
#include "runtime.h"

#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TS_BOX_DIR "/opt/quern"

/* ts's program, cold and warm: sucrase strips the script's types into a
 * module that removes itself as its first statement (on line 1, so sucrase's
 * line numbers stay those of the script; the code finds /tmp empty; a
 * hashbang line, which node allows only at the very start, gives way to
 * it), which is then imported; execArgv is emptied as for `node
 * script.mjs`.  A script sucrase cannot parse fails as node fails a module
 * that does not parse:
 * its path and line, the line with a caret under the column, then
 * "SyntaxError: ..." on stderr, exit 1 (sucrase's own stack trace named
 * only its files).  PATH is a JavaScript expression naming the script; fs,
 * pathToFileURL and transform are in scope. */
#define TS_REQUIRE "const {transform} = createRequire('" TS_BOX_DIR "/x.js')('sucrase');"
/* The namespace check reads the script with its comments, string and
 * template literals blanked (each character a space, newlines kept, so
 * offsets and lines stay the script's): "namespace X { const ..." inside a
 * template literal or a comment, or a "{" in a string inside a types-only
 * namespace, failed valid scripts.  Regular expression literals are left
 * as they are (telling one from a division needs a parser). */
#define TS_BLANK                                                                          \
    "const blank = (s) => {"                                                              \
    "  const a = s.split(''), n = a.length, tpl = [];"                                    \
    "  let i = 0, depth = 0;"                                                             \
    "  while (i < n) {"                                                                   \
    "    const c = a[i];"                                                                 \
    "    if (c === '/' && a[i + 1] === '/') {"                                            \
    "      while (i < n && a[i] !== '\\n') a[i++] = ' ';"                                 \
    "    } else if (c === '/' && a[i + 1] === '*') {"                                     \
    "      a[i++] = ' '; a[i++] = ' ';"                                                   \
    "      for (; i < n && !(a[i] === '*' && a[i + 1] === '/'); i++) if (a[i] !== '\\n') a[i] = ' ';" \
    "      if (i < n) { a[i++] = ' '; a[i++] = ' '; }"                                    \
    "    } else if (c === '\"' || c === '\\'') {"                                         \
    "      for (i++; i < n && a[i] !== c && a[i] !== '\\n'; i++) {"                       \
    "        if (a[i] === '\\\\') a[i++] = ' ';"                                            \
    "        if (i < n && a[i] !== '\\n') a[i] = ' ';"                                    \
    "      }"                                                                             \
    "      i++;"                                                                          \
    "    } else if (c === '`' || (c === '}' && tpl.length && tpl[tpl.length - 1] === depth)) {" \
    "      if (c === '}') tpl.pop();"                                                     \
    "      for (i++; i < n && a[i] !== '`' && !(a[i] === '$' && a[i + 1] === '{'); i++) {" \
    "        if (a[i] === '\\\\') a[i++] = ' ';"                                            \
    "        if (i < n && a[i] !== '\\n') a[i] = ' ';"                                    \
    "      }"                                                                             \
    "      if (a[i] === '$') { tpl.push(depth); i += 2; } else i++;"                      \
    "    } else {"                                                                        \
    "      depth += c === '{' ? 1 : c === '}' ? -1 : 0;"                                  \
    "      i++;"                                                                          \
    "    }"                                                                               \
    "  }"                                                                                 \
    "  return a.join('');"                                                                \
    "};"
#define TS_IMPORT(path)                                                                   \
    "const p = " path ", src = fs.readFileSync(p, 'utf8');"                               \
    "const bad = (line, column, msg) => {"                                                \
    "  fs.writeSync(2, p + ':' + line + '\\n' + (src.split('\\n')[line - 1] ?? '') +"      \
    "    '\\n' + ' '.repeat(Math.max(column - 1, 0)) + '^\\n\\nSyntaxError: ' + msg + '\\n');" \
    "  process.exit(1);"                                                                  \
    "};"                                                                                  \
    TS_BLANK                                                                              \
    "const code = blank(src);"                                                            \
    "const nsRe = /^([ \\t]*)(?:export[ \\t]+)?(?:namespace|module)[ \\t]+[A-Za-z_$][\\w$.]*[ \\t]*\\{/mg;" \
    "for (let ns; (ns = nsRe.exec(code));) {"                                             \
    "  let depth = 1, i = nsRe.lastIndex;"                                                \
    "  for (; i < code.length && depth; i++) depth += code[i] === '{' ? 1 : code[i] === '}' ? -1 : 0;" \
    "  if (!/\\b(const|let|var|function|class|enum)\\b/.test(code.slice(nsRe.lastIndex, i))) continue;" \
    "  const line = code.slice(0, ns.index).split('\\n').length;"                         \
    "  bad(line, ns[1].length + 1, 'a TypeScript namespace that holds values is not ' +" \
    "    'supported: quern strips types with sucrase, which would drop it (' + line + ':' +" \
    "    (ns[1].length + 1) + ')');"                                                      \
    "}"                                                                                   \
    "let js;"                                                                             \
    "try {"                                                                               \
    "  js = transform(src, {transforms: ['typescript'], filePath: p}).code;"              \
    "} catch (e) {"                                                                       \
    "  if (!(e instanceof SyntaxError) || !e.loc) throw e;"                               \
    "  bad(e.loc.line, e.loc.column, e.message.replace(/^Error transforming [^:]*: /, ''));" \
    "}"                                                                                   \
    "const o = '/tmp/.quern-ts-' + process.pid + '.mjs';"                                 \
    "fs.writeFileSync(o, 'import{unlinkSync as __quern_rm}from\"node:fs\";"              \
    "__quern_rm(new URL(import.meta.url));' + js.replace(/^#![^\\n]*/, ''));"             \
    "process.execArgv.length = 0;"                                                        \
    "await import(pathToFileURL(o).href);"
/* ts's runner and the node loaders run as `node -e`, which defines every
 * built-in module as a lazy global (`fs`, `path`, `module`, ...: node's
 * addBuiltinLibsToObject, whose setter is named setReal).  A script run from
 * a file sees none of them, so they are deleted before the script runs. */
#define NODE_IMPORTS                                                                      \
    "import fs from 'node:fs';"                                                           \
    "import {pathToFileURL} from 'node:url';"                                             \
    "for (const k of Object.getOwnPropertyNames(globalThis)) {"                           \
    "  const d = Object.getOwnPropertyDescriptor(globalThis, k);"                         \
    "  if (d && d.set && d.set.name === 'setReal') delete globalThis[k];"                 \
    "}"

static const char ts_runner[] =
    NODE_IMPORTS
    "import {createRequire} from 'node:module';"
    TS_REQUIRE
    TS_IMPORT("process.argv[1]");

/* The python loader: reads fd 6 to EOF ("path\0K=V\0K=V..."), makes the
 * environment exactly the run's, and runs the script as __main__ in this
 * process.  What the script leaves uncaught escapes to python itself, which
 * ends as for `python3 script.py` (exit 1; a KeyboardInterrupt kills it with
 * SIGINT after finalizing); the excepthook is shown the traceback from the
 * script's frame on, or none when the script does not compile. */
static const char py_loader[] =
    "import sys, os, json\n"
    "def _quern_go():\n"
    "    import sys, os\n"
    "    from importlib.machinery import SourceFileLoader\n"
    "    b = b''\n"
    "    while True:\n"
    "        c = os.read(6, 65536)\n"
    "        if not c:\n"
    "            break\n"
    "        b += c\n"
    "    os.close(6)\n"
    "    parts = b.split(b'\\0')\n"
    "    if not parts[0]:\n"
    "        os._exit(125)\n"
    "    path = parts[0].decode()\n"
    "    os.environ.clear()\n"
    "    for kv in parts[1:]:\n"
    "        k, _, v = kv.partition(b'=')\n"
    "        if k:\n"
    "            os.environb[k] = v\n"
    "    sys.argv[:] = [path]\n"
    "    sys.path[0] = os.path.dirname(path)\n"
    "    g = sys.modules['__main__'].__dict__\n"
    "    for k in list(g):\n"
    "        if k not in ('__name__', '__doc__', '__builtins__', '__spec__', '__loader__',\n"
    "                     '__package__', '__annotations__'):\n"
    "            del g[k]\n"
    "    g['__file__'] = path\n"
    "    g['__cached__'] = None\n"
    "    g['__loader__'] = SourceFileLoader('__main__', path)\n"
    "    with open(path, 'rb') as f:\n"
    "        src = f.read()\n"
    "    try:\n"
    "        exec(compile(src, path, 'exec'), g)\n"
    "    except SystemExit:\n"
    "        raise\n"
    "    except BaseException as e:\n"
    "        tb = e.__traceback__\n"
    "        while tb is not None and tb.tb_frame.f_code.co_filename != path:\n"
    "            tb = tb.tb_next\n"
    "        hook = sys.excepthook\n"
    "        def _quern_hook(t, v, _):\n"
    "            sys.excepthook = hook\n"
    "            v.__traceback__ = tb\n"
    "            hook(t, v, tb)\n"
    "        sys.excepthook = _quern_hook\n"
    "        raise\n"
    "_quern_go()\n";

/* The node loader: the same protocol; the script is imported as an ES
 * module once process.env, argv and execArgv are those of a cold run.  The
 * ts loader shares its warm-up and its wait for the run. */
#define NODE_LOADER_WARM(transform_warm)                                                  \
    /* warm the paths a run takes: importing a file module, writing stdout */            \
    "{"                                                                                   \
    "  const f = '/tmp/.quern-warm-' + process.pid + '.mjs';"                             \
    "  try {"                                                                             \
    "    fs.writeFileSync(f, " transform_warm ");"                                        \
    "    await import(pathToFileURL(f).href);"                                            \
    "  } catch (e) {} finally { try { fs.unlinkSync(f); } catch (e) {} }"                 \
    "  process.stdout; process.stderr;"                                                   \
    "}"
#define NODE_LOADER_WAIT                                                                  \
    "const chunks = [], b = Buffer.alloc(65536);"                                         \
    "for (;;) {"                                                                          \
    "  let n;"                                                                            \
    "  try { n = fs.readSync(6, b, 0, b.length, null); }"                                 \
    "  catch (e) { if (e.code === 'EAGAIN' || e.code === 'EINTR') continue; throw e; }"   \
    "  if (n <= 0) break;"                                                                \
    "  chunks.push(Buffer.from(b.subarray(0, n)));"                                       \
    "}"                                                                                   \
    "fs.closeSync(6);"                                                                    \
    "const parts = Buffer.concat(chunks).toString('utf8').split('\\0');"                \
    "if (!parts[0]) process.exit(125);"                                                   \
    "for (const k of Object.keys(process.env)) delete process.env[k];"                    \
    "for (const kv of parts.slice(1)) {"                                                  \
    "  const i = kv.indexOf('=');"                                                        \
    "  if (i > 0) process.env[kv.slice(0, i)] = kv.slice(i + 1);"                         \
    "}"                                                                                   \
    "process.argv.length = 1;"                                                            \
    "process.argv.push(parts[0]);"                                                        \
    "process.execArgv.length = 0;"

static const char node_loader[] =
    NODE_IMPORTS
    NODE_LOADER_WARM("'export default 1;\\n'")
    NODE_LOADER_WAIT
    "await import(pathToFileURL(parts[0]).href);";

/* The ts loader: sucrase loaded (and its transform warmed) ahead of the run;
 * then the script runs as ts_runner runs it cold. */
static const char ts_loader[] =
    NODE_IMPORTS
    "import {createRequire} from 'node:module';"
    TS_REQUIRE
    NODE_LOADER_WARM("transform('export default (n: number): number => n;\\n', "
                     "{transforms: ['typescript'], filePath: f}).code")
    NODE_LOADER_WAIT
    TS_IMPORT("parts[0]");

static const char *const py_loader_argv[] = {"-c", py_loader, NULL};
static const char *const node_loader_argv[] = {"--input-type=module", "-e", node_loader, NULL};
static const char *const ts_loader_argv[] = {"--input-type=module", "-e", ts_loader, NULL};

/* Each runtime is allocated on its own: adding one never moves another
 * (the executor keeps pointers to them). */
static struct runtime **table;
static size_t ntable;
static bool ready;

static void rt_free(struct runtime *rt)
{
    free(rt->id);
    free(rt->interpreter);
    for (size_t i = 0; i < rt->nargs; i++)
        free(rt->args[i]);
    free(rt->file_name);
    for (size_t i = 0; i < rt->nro; i++) {
        free(rt->ro_host[i]);
        free(rt->ro_box[i]);
    }
    memset(rt, 0, sizeof(*rt));
}

static struct runtime *rt_add(const char *id, const char *interp, const char *file)
{
    table = xrealloc(table, (ntable + 1) * sizeof(*table));
    struct runtime *rt = xcalloc(1, sizeof(*rt));
    table[ntable++] = rt;
    memset(rt, 0, sizeof(*rt));
    rt->id = xstrdup(id);
    rt->interpreter = xstrdup(interp);
    rt->file_name = xstrdup(file);
    return rt;
}

/* The vendor directory: $QUERN_VENDOR, else ../vendor or ../../vendor from
 * the running program (build/quernd, build/tests/test_x). */
static char *find_vendor(void)
{
    const char *env = getenv("QUERN_VENDOR");
    if (env && *env)
        return xstrdup(env);
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        return NULL;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return NULL;
    *slash = '\0';
    static const char *const rel[] = {"/../vendor", "/../../vendor", "/vendor"};
    for (size_t i = 0; i < ARRAY_LEN(rel); i++) {
        char *p = xasprintf("%s%s/node_modules/sucrase", exe, rel[i]);
        struct stat st;
        bool ok = stat(p, &st) == 0 && S_ISDIR(st.st_mode);
        free(p);
        if (ok) {
            char *d = xasprintf("%s%s", exe, rel[i]);
            char *r = realpath(d, NULL);
            free(d);
            return r;
        }
    }
    return NULL;
}

static void set_ts_vendor(struct runtime *rt, const char *dir)
{
    for (size_t i = 0; i < rt->nro; i++) {
        free(rt->ro_host[i]);
        free(rt->ro_box[i]);
    }
    rt->nro = 0;
    if (!dir)
        return;
    rt->ro_host[0] = xstrdup(dir);
    rt->ro_box[0] = xstrdup(TS_BOX_DIR);
    rt->nro = 1;
}

static struct runtime *find_mut(const char *id);

/* QUERN_WARM="python=2,node=0": warm pool sizes from the environment
 * (applied when the executor reads the table, after quern.conf). */
static void apply_warm_env(void)
{
    const char *env = getenv("QUERN_WARM");
    if (!env || !*env)
        return;
    char *copy = xstrdup(env), *save = NULL;
    for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        char *eq = strchr(t, '=');
        if (!eq)
            continue;
        *eq = '\0';
        struct runtime *rt = find_mut(t);
        int64_t n;
        if (rt && parse_i64(eq + 1, &n) == 0 && n >= 0 && n <= RUNTIME_MAX_WARM &&
            (n == 0 || rt->loader != RUNTIME_LOADER_NONE))
            rt->warm = (int)n;
        else
            fprintf(stderr, "quern: QUERN_WARM: ignored %s=%s\n", t, eq + 1);
    }
    free(copy);
}

static void build_defaults(void)
{
    if (ready)
        return;
    ready = true;
    rt_add("sh", "/bin/sh", "script");
    rt_add("bash", "/bin/bash", "script");
    struct runtime *py = rt_add("python", "/usr/bin/python3", "script.py");
    /* -u: stdout and stderr unbuffered, so that every line reaches the log
     * as it is printed, in order with fd 3 and stderr, and none is lost
     * when the run is killed (a pipe would make them block-buffered). */
    py->args[py->nargs++] = xstrdup("-u");
    py->loader = RUNTIME_LOADER_PYTHON;
    py->warm = 2;
    struct runtime *node = rt_add("node", "/usr/bin/node", "script.mjs");
    node->loader = RUNTIME_LOADER_NODE;
    node->warm = 2;
    struct runtime *ts = rt_add("ts", "/usr/bin/node", "script.ts");
    ts->args[ts->nargs++] = xstrdup("--input-type=module");
    ts->args[ts->nargs++] = xstrdup("-e");
    ts->args[ts->nargs++] = xstrdup(ts_runner);
    char *v = find_vendor();
    set_ts_vendor(ts, v);
    /* warm only with sucrase there: its loader requires it before a run */
    if (v) {
        ts->loader = RUNTIME_LOADER_TS;
        ts->warm = 1;
    }
    free(v);
}

static struct runtime *find_mut(const char *id)
{
    build_defaults();
    if (!id || strcmp(id, "default") == 0)
        id = "sh";
    for (size_t i = 0; i < ntable; i++)
        if (strcmp(table[i]->id, id) == 0)
            return table[i];
    return NULL;
}

const struct runtime *runtime_find(const char *id)
{
    return find_mut(id);
}

static bool parse_bool(const char *v, bool *out)
{
    if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1") || !strcmp(v, "on"))
        *out = true;
    else if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "0") || !strcmp(v, "off"))
        *out = false;
    else
        return false;
    return true;
}

/* Splits s on blanks (spaces, tabs) into malloc'd words, at most max of
 * them: their count, or -EINVAL, keeping none, when there are more. */
static int split_blanks(const char *s, char **words, size_t max)
{
    size_t n = 0;
    while (*s) {
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s)
            break;
        size_t len = strcspn(s, " \t");
        if (n == max) {
            for (size_t i = 0; i < n; i++)
                free(words[i]);
            return -EINVAL;
        }
        words[n++] = xstrndup(s, len);
        s += len;
    }
    return (int)n;
}

int runtime_config_set(const char *id, const char *key, const char *value)
{
    if (!id || !*id || strlen(id) > 31 || !key || !value)
        return -EINVAL;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
            return -EINVAL;
    struct runtime *rt = find_mut(id);
    if (!rt) {
        rt = rt_add(id, "/bin/sh", "script");
    }
    if (!strcmp(key, "interpreter")) {
        if (value[0] != '/')
            return -EINVAL;
        free(rt->interpreter);
        rt->interpreter = xstrdup(value);
    } else if (!strcmp(key, "file_name")) {
        if (!*value || strchr(value, '/') || value[0] == '.' || strlen(value) > 64)
            return -EINVAL;
        free(rt->file_name);
        rt->file_name = xstrdup(value);
    } else if (!strcmp(key, "args")) {
        char *args[RUNTIME_MAX_ARGS];
        int n = split_blanks(value, args, RUNTIME_MAX_ARGS);
        if (n < 0)
            return n;
        for (size_t i = 0; i < rt->nargs; i++)
            free(rt->args[i]);
        memcpy(rt->args, args, (size_t)n * sizeof(*args));
        rt->nargs = (size_t)n;
    } else if (!strcmp(key, "ro_paths")) {
        /* each word is HOST or HOST:BOX, both absolute */
        char *host[RUNTIME_MAX_PATHS], *box[RUNTIME_MAX_PATHS];
        int n = split_blanks(value, host, RUNTIME_MAX_PATHS);
        if (n < 0)
            return n;
        int rc = 0;
        for (int i = 0; i < n; i++) {
            char *colon = strchr(host[i], ':');
            if (colon)
                *colon = '\0';
            box[i] = xstrdup(colon ? colon + 1 : host[i]);
            if (host[i][0] != '/' || box[i][0] != '/' || strstr(box[i], ".."))
                rc = -EINVAL;
        }
        if (rc) {
            for (int i = 0; i < n; i++) {
                free(host[i]);
                free(box[i]);
            }
            return rc;
        }
        for (size_t i = 0; i < rt->nro; i++) {
            free(rt->ro_host[i]);
            free(rt->ro_box[i]);
        }
        memcpy(rt->ro_host, host, (size_t)n * sizeof(*host));
        memcpy(rt->ro_box, box, (size_t)n * sizeof(*box));
        rt->nro = (size_t)n;
    } else if (!strcmp(key, "network")) {
        if (!parse_bool(value, &rt->network_allowed))
            return -EINVAL;
    } else if (!strcmp(key, "loader")) {
        if (!strcmp(value, "python"))
            rt->loader = RUNTIME_LOADER_PYTHON;
        else if (!strcmp(value, "node"))
            rt->loader = RUNTIME_LOADER_NODE;
        else if (!strcmp(value, "ts"))
            rt->loader = RUNTIME_LOADER_TS;
        else if (!strcmp(value, "none")) {
            rt->loader = RUNTIME_LOADER_NONE;
            rt->warm = 0;
        } else
            return -EINVAL;
    } else if (!strcmp(key, "warm")) {
        int64_t n;
        if (parse_i64(value, &n) || n < 0 || n > RUNTIME_MAX_WARM ||
            (n > 0 && rt->loader == RUNTIME_LOADER_NONE))
            return -EINVAL;
        rt->warm = (int)n;
    } else if (!strcmp(key, "vendor_dir")) {
        if (value[0] != '/')
            return -EINVAL;
        set_ts_vendor(rt, value);
    } else {
        return -EINVAL;
    }
    return 0;
}

const char *const *runtime_loader_argv(const struct runtime *rt)
{
    switch (rt ? rt->loader : RUNTIME_LOADER_NONE) {
    case RUNTIME_LOADER_PYTHON:
        return py_loader_argv;
    case RUNTIME_LOADER_NODE:
        return node_loader_argv;
    case RUNTIME_LOADER_TS:
        return ts_loader_argv;
    case RUNTIME_LOADER_NONE:
        break;
    }
    return NULL;
}

size_t runtime_warm_args(const struct runtime *rt, const char **out, size_t cap)
{
    size_t n = 0;
    /* ts's own args are its cold runner program: its loader replaces them */
    for (size_t i = 0; rt->loader != RUNTIME_LOADER_TS && i < rt->nargs && n < cap; i++)
        out[n++] = rt->args[i];
    for (const char *const *l = runtime_loader_argv(rt); l && *l && n < cap; l++)
        out[n++] = *l;
    return n;
}

void runtime_each(void (*fn)(void *ctx, const struct runtime *rt), void *ctx)
{
    build_defaults();
    apply_warm_env();   /* the environment wins over quern.conf */
    for (size_t i = 0; i < ntable; i++)
        fn(ctx, table[i]);
}

bool runtime_available(const struct runtime *rt)
{
    if (!rt || access(rt->interpreter, X_OK) != 0)
        return false;
    for (size_t i = 0; i < rt->nro; i++)
        if (access(rt->ro_host[i], R_OK) != 0)
            return false;
    if (!strcmp(rt->id, "ts") && rt->nro == 0)
        return false; /* no sucrase: types cannot be stripped */
    return true;
}

void runtime_reset(void)
{
    for (size_t i = 0; i < ntable; i++) {
        rt_free(table[i]);
        free(table[i]);
    }
    free(table);
    table = NULL;
    ntable = 0;
    ready = false;
}
