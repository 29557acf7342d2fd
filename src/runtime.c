/*
 * runtime — built-in runtimes and their configuration (see runtime.h).
 *
 * TypeScript: node 20 has no --experimental-strip-types, so the `ts` runtime
 * runs node with a tiny inline ES-module runner that strips the types with
 * sucrase (pure JavaScript, no native code, ~1 ms per small file) and imports
 * the result.  sucrase is installed by `npm install --prefix vendor sucrase@3`
 * and the vendor directory is mounted read-only at /opt/quern in the sandbox.
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

static const char ts_runner[] =
    "import{createRequire}from'node:module';"
    "import{readFileSync,writeFileSync}from'node:fs';"
    "import{pathToFileURL}from'node:url';"
    "const f=process.argv[1];"
    "const{transform}=createRequire('" TS_BOX_DIR "/x.js')('sucrase');"
    "const o='/tmp/.quern-ts-'+process.pid+'.mjs';"
    "writeFileSync(o,transform(readFileSync(f,'utf8'),"
    "{transforms:['typescript'],filePath:f}).code);"
    "await import(pathToFileURL(o).href);";

static struct runtime *table;
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
    struct runtime *rt = &table[ntable++];
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

static void build_defaults(void)
{
    if (ready)
        return;
    ready = true;
    rt_add("sh", "/bin/sh", "script");
    rt_add("bash", "/bin/bash", "script");
    rt_add("python", "/usr/bin/python3", "script.py");
    rt_add("node", "/usr/bin/node", "script.mjs");
    struct runtime *ts = rt_add("ts", "/usr/bin/node", "script.ts");
    ts->args[ts->nargs++] = xstrdup("--input-type=module");
    ts->args[ts->nargs++] = xstrdup("-e");
    ts->args[ts->nargs++] = xstrdup(ts_runner);
    char *v = find_vendor();
    set_ts_vendor(ts, v);
    free(v);
}

static struct runtime *find_mut(const char *id)
{
    build_defaults();
    if (!id || strcmp(id, "default") == 0)
        id = "sh";
    for (size_t i = 0; i < ntable; i++)
        if (strcmp(table[i].id, id) == 0)
            return &table[i];
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
        size_t n = 0;
        const char *p = value;
        while (*p) {
            while (*p == ' ' || *p == '\t')
                p++;
            if (!*p)
                break;
            size_t len = strcspn(p, " \t");
            if (n == RUNTIME_MAX_ARGS) {
                for (size_t i = 0; i < n; i++)
                    free(args[i]);
                return -EINVAL;
            }
            args[n++] = xstrndup(p, len);
            p += len;
        }
        for (size_t i = 0; i < rt->nargs; i++)
            free(rt->args[i]);
        memcpy(rt->args, args, n * sizeof(*args));
        rt->nargs = n;
    } else if (!strcmp(key, "ro_paths")) {
        char *host[RUNTIME_MAX_PATHS], *box[RUNTIME_MAX_PATHS];
        size_t n = 0;
        const char *p = value;
        int rc = 0;
        while (*p) {
            while (*p == ' ' || *p == '\t')
                p++;
            if (!*p)
                break;
            size_t len = strcspn(p, " \t");
            char *item = xstrndup(p, len);
            p += len;
            char *colon = strchr(item, ':');
            if (colon)
                *colon = '\0';
            const char *b = colon ? colon + 1 : item;
            if (n == RUNTIME_MAX_PATHS || item[0] != '/' || b[0] != '/' || strstr(b, "..")) {
                free(item);
                rc = -EINVAL;
                break;
            }
            host[n] = xstrdup(item);
            box[n] = xstrdup(b);
            n++;
            free(item);
        }
        if (rc) {
            for (size_t i = 0; i < n; i++) {
                free(host[i]);
                free(box[i]);
            }
            return rc;
        }
        for (size_t i = 0; i < rt->nro; i++) {
            free(rt->ro_host[i]);
            free(rt->ro_box[i]);
        }
        memcpy(rt->ro_host, host, n * sizeof(*host));
        memcpy(rt->ro_box, box, n * sizeof(*box));
        rt->nro = n;
    } else if (!strcmp(key, "network")) {
        if (!parse_bool(value, &rt->network_allowed))
            return -EINVAL;
    } else if (!strcmp(key, "vendor_dir")) {
        if (value[0] != '/')
            return -EINVAL;
        set_ts_vendor(rt, value);
    } else {
        return -EINVAL;
    }
    return 0;
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
    for (size_t i = 0; i < ntable; i++)
        rt_free(&table[i]);
    free(table);
    table = NULL;
    ntable = 0;
    ready = false;
}
