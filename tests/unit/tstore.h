/*
 * tstore.h — helpers shared by the unit tests of the store and of what sits
 * on it (include after t.h): a private temp directory removed at exit, and
 * a store opened with its error told.
 */
#ifndef QUERN_TSTORE_H
#define QUERN_TSTORE_H
#include <errno.h>
#include <ftw.h>
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
#endif
