/* storage — see storage.h.  Called on the runner thread, the store writer
 * (inside transactions) and HTTP threads; no state of its own. */
#define _XOPEN_SOURCE 700
#include "storage.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app.h"
#include "tree.h"
#include "util.h"

json_t *storage_new_doc(const char *project_id, const char *scope, const char *name,
                        const char *account_id)
{
    char id[ID_LEN], ts[RFC3339_LEN];
    id_new("sto", id);
    rfc3339_format(now_ms(), ts);
    json_t *d = json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", id, "project_id", project_id,
                          "scope", scope, "name", name, "created_at", ts);
    json_object_set_new(d, "account_id", account_id ? json_string(account_id) : json_null());
    return d;
}

static int mkdir_owned(const char *p, unsigned uid)
{
    if (mkdir(p, 0700) && errno != EEXIST)
        return -errno;
    if (uid && chown(p, uid, uid))
        return -errno;
    return 0;
}

char *storage_dir(struct app *app, const char *project_id, const char *id, bool create,
                  unsigned uid)
{
    char *top = xasprintf("%s/storage", app->data_dir);
    char *proj = xasprintf("%s/%s", top, project_id);
    char *dir = xasprintf("%s/%s", proj, id);
    if (create && (mkdir_owned(top, 0) || mkdir_owned(proj, 0) || mkdir_owned(dir, uid))) {
        free(dir);
        dir = NULL;
    }
    free(top);
    free(proj);
    return dir;
}

/* The default instance of a scope (and account), created on first use. */
static json_t *default_instance(struct store_tx *tx, const char *project, const char *scope,
                                const char *account)
{
    struct store_filter f[3] = {{"scope", scope}, {"name", "default"}, {"account_id", account}};
    struct store_query q = {f, 3, 1, 0, true, NULL};
    json_t *arr = NULL;
    if (store_list(tx, SK_STORAGE, project, &q, &arr, NULL))
        return NULL;
    json_t *d = json_incref(json_array_get(arr, 0));
    json_decref(arr);
    if (d || !store_tx_is_write(tx))
        return d;
    d = storage_new_doc(project, scope, "default", account);
    if (store_put(tx, SK_STORAGE, project, d)) {
        json_decref(d);
        return NULL;
    }
    return d;
}

json_t *storage_for_task(struct store_tx *tx, const json_t *task)
{
    const char *project = json_string_value(json_object_get(task, "project_id"));
    const char *account = json_string_value(json_object_get(task, "account_id"));
    json_t *chosen = json_object_get(task, "storage");
    static const char *const scopes[] = {"account", "project", "organization"};
    json_t *out = json_object();
    for (size_t i = 0; i < ARRAY_LEN(scopes); i++) {
        if (!strcmp(scopes[i], "account") && !account)
            continue;
        json_t *d = NULL;
        const char *want = json_string_value(json_object_get(chosen, scopes[i]));
        if (want) {
            d = store_get(tx, SK_STORAGE, project, want);
            /* never an instance of another scope or account */
            if (d && (strcmp(json_string_value(json_object_get(d, "scope")) ?: "", scopes[i]) ||
                      (!strcmp(scopes[i], "account") &&
                       strcmp(json_string_value(json_object_get(d, "account_id")) ?: "", account)))) {
                json_decref(d);
                d = NULL;
            }
        } else {
            d = default_instance(tx, project, scopes[i], !strcmp(scopes[i], "account") ? account : NULL);
        }
        if (d)
            json_object_set_new(out, scopes[i], d);
    }
    return out;
}

int64_t storage_size(struct app *app, const char *project_id, const char *id, bool *partial,
                     int64_t *budget)
{
    int64_t max = STORAGE_SIZE_MAX_ENTRIES;
    if (budget && *budget < max)
        max = *budget;
    if (max <= 0) {
        *partial = true;
        return 0;
    }
    char *dir = storage_dir(app, project_id, id, false, 0);
    struct tree_usage u = {0};
    *partial = dir && tree_usage(dir, TREE_FILES, max, 0, &u);
    free(dir);
    if (budget)
        *budget -= u.entries;
    return u.bytes;
}
