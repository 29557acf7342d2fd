/*
 * tstore.h — helpers shared by the unit tests of the store and of what sits
 * on it (include after t.h): a private temp directory removed at exit, a
 * store opened with its error told, and whether a run is in a store.
 */
#ifndef QUERN_TSTORE_H
#define QUERN_TSTORE_H
#include <errno.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "store.h"

static const char *t_tmpdir_made;   /* what t_tmpdir_make made: removed at exit */

static inline int t_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static inline void t_rm_tmpdir(void)
{
    if (t_tmpdir_made)
        nftw(t_tmpdir_made, t_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Makes the directory the mkdtemp template `tmpl` names (rewritten in place;
 * it must live as long as the program) and has it removed, with all it
 * holds, at exit: 0 or -errno.  Once a program. */
static inline int t_tmpdir_make(char *tmpl)
{
    if (!mkdtemp(tmpl))
        return -errno;
    t_tmpdir_made = tmpl;
    atexit(t_rm_tmpdir);
    return 0;
}

/* store_open with options {.fsync = fs}; on failure the error goes to
 * stderr and the answer is NULL. */
static inline struct store *t_store_open(const char *url, enum store_fsync fs)
{
    struct store_opts so = {.fsync = fs};
    char *err = NULL;
    struct store *st = store_open(url, &so, &err);
    if (!st)
        fprintf(stderr, "  store_open(%s): %s\n", url, err ? err : "?");
    free(err);
    return st;
}

struct t_get {
    const char *project, *id;
    bool found;
};

static inline int t_get_fn(struct store_tx *tx, void *arg)
{
    struct t_get *g = arg;
    json_t *doc = store_get(tx, SK_RUN, g->project, g->id);
    g->found = doc != NULL;
    json_decref(doc);
    return 0;
}

/* Whether the run `id` of `project` is in the store, as any reader sees it. */
static inline bool t_run_visible(struct store *st, const char *project, const char *id)
{
    struct t_get g = {project, id, false};
    return store_read(st, t_get_fn, &g) == 0 && g.found;
}
#endif
