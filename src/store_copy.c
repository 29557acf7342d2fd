/*
 * store_copy — `quern store copy FROM TO`: moves a whole installation from
 * one store to another (typically sqlite:PATH to postgres://...), every
 * table row for row: documents of every kind with their sequence numbers,
 * run logs, events with their ids, meta (the server secret, bootstrap
 * marker) and remembered idempotent responses.  Ids and order are kept, so
 * event cursors (webhooks, Last-Event-ID) and list order carry over.  From
 * SQLite into PostgreSQL, the artifact files beside the database
 * (DATA/blobs) are stored in PostgreSQL too (copy_blobs), so every node of
 * the cluster serves them.
 *
 * Runs in the CLI process on its own thread of control: it opens both
 * stores (their writer threads do the writing), reads the source in pages
 * and writes each page in one transaction.  quernd must be stopped on the
 * source while copying; the target must be empty (a fresh database).
 */
#include "store_copy.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define PAGE 500

struct page {
    const char *table;
    int64_t offset;
    json_t *rows;
};

static int dump_fn(struct store_tx *tx, void *arg)
{
    struct page *p = arg;
    return store_dump(tx, p->table, p->offset, PAGE, &p->rows);
}

static int load_fn(struct store_tx *tx, void *arg)
{
    struct page *p = arg;
    return store_load(tx, p->table, p->rows);
}

struct probe {
    bool empty;
};

/* A copy marks its target while it runs: meta "store_copy" says "running
 * since TS" until every row and blob is in, then "finished TS".  quernd
 * refuses a target whose copy never finished (store_copy_unfinished), so a
 * copy cut short is never served as if it were the whole store. */
#define COPY_KEY "store_copy"
#define COPY_RUNNING "running since "

static int mark_fn(struct store_tx *tx, void *arg)
{
    return store_meta_set(tx, COPY_KEY, arg);
}

struct unfinished {
    char *value;
};

static int unfinished_fn(struct store_tx *tx, void *arg)
{
    struct unfinished *u = arg;
    u->value = store_meta_get(tx, COPY_KEY);
    return 0;
}

int store_copy_unfinished(struct store *st, char **since)
{
    struct unfinished u = {NULL};
    int rc = store_read(st, unfinished_fn, &u);
    if (rc)
        return rc;
    bool running = u.value && !strncmp(u.value, COPY_RUNNING, strlen(COPY_RUNNING));
    if (running && since)
        *since = xstrdup(u.value + strlen(COPY_RUNNING));
    free(u.value);
    return running;
}

/* The source's own mark (it was itself copied) stays behind: the target's
 * is this copy's. */
static void drop_mark(const char *table, json_t *rows)
{
    if (strcmp(table, "meta"))
        return;
    for (size_t i = 0; i < json_array_size(rows);) {
        const char *key = json_string_value(json_object_get(json_array_get(rows, i), "key"));
        if (key && !strcmp(key, COPY_KEY))
            json_array_remove(rows, i);
        else
            i++;
    }
}

/* The target holds nothing a copy could collide with: migrations only
 * create tables, so a new store has every table empty. */
static int empty_fn(struct store_tx *tx, void *arg)
{
    struct probe *pr = arg;
    pr->empty = true;
    for (const char *const *t = store_tables(); *t && pr->empty; t++) {
        json_t *rows = NULL;
        int rc = store_dump(tx, *t, 0, 1, &rows);
        if (rc)
            return rc;
        pr->empty = json_array_size(rows) == 0;
        json_decref(rows);
    }
    return 0;
}

static long fd_src(void *ctx, void *buf, size_t cap)
{
    ssize_t n = read(*(int *)ctx, buf, cap);
    return n < 0 ? -errno : (long)n;
}

static bool is_sha(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return false;
    return n == 64;
}

/* The artifacts of an embedded installation are files beside its database
 * (DATA/blobs/ab/abcd…, blob.c); a target that keeps blobs itself
 * (PostgreSQL, shared by every node) gets them too, so no node depends on
 * the old data directory.  *copied counts them; 0 when there is nothing to
 * copy or the target keeps no blobs (SQLite to SQLite: copy the directory). */
static int copy_blobs(const char *from, const char *data_dir, struct store *dst,
                      int64_t *copied, char **err)
{
    *copied = 0;
    if (!strncmp(from, "postgres", 8))
        return 0;
    const char *path = !strncmp(from, "sqlite:", 7) ? from + 7 : from;
    const char *slash = strrchr(path, '/');
    char *dir = data_dir ? xasprintf("%s/blobs", data_dir)
                : slash ? xasprintf("%.*s/blobs", (int)(slash - path), path)
                        : xstrdup("blobs");
    int rc = 0;
    DIR *top = opendir(dir);
    if (!top)
        goto out;   /* no artifacts were ever stored */
    struct dirent *sub;
    bool unsupported = false;
    while (!rc && !unsupported && (sub = readdir(top))) {
        if (strlen(sub->d_name) != 2 || !strcmp(sub->d_name, ".."))
            continue;
        char *subdir = xasprintf("%s/%s", dir, sub->d_name);
        DIR *d = opendir(subdir);
        struct dirent *e;
        while (!rc && !unsupported && d && (e = readdir(d))) {
            if (!is_sha(e->d_name) || strncmp(e->d_name, sub->d_name, 2))
                continue;
            char *file = xasprintf("%s/%s", subdir, e->d_name);
            int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
            struct stat sb;
            if (fd < 0 || fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
                *err = xasprintf("cannot read the blob %s", file);
                rc = -EIO;
            } else {
                rc = store_blob_put(dst, e->d_name, (int64_t)sb.st_size, fd_src, &fd);
                if (rc == -ENOTSUP) {
                    rc = 0;   /* the target keeps no blobs: nothing to do at all */
                    unsupported = true;
                } else if (rc)
                    *err = xasprintf("cannot store the blob %s in the target (%d)", file, rc);
                else
                    (*copied)++;
            }
            if (fd >= 0)
                close(fd);
            free(file);
        }
        if (d)
            closedir(d);
        free(subdir);
    }
    closedir(top);
out:
    free(dir);
    return rc;
}

int store_copy(const char *from, const char *to, const char *data_dir, FILE *progress,
               char **err)
{
    struct store_opts so = {.fsync = STORE_FSYNC_BATCH};
    struct store *src = store_open(from, &so, err);
    if (!src)
        return -EINVAL;
    struct store *dst = store_open(to, &so, err);
    if (!dst) {
        store_close(src);
        return -EINVAL;
    }
    int rc = 0;
    struct probe pr = {false};
    if ((rc = store_read(dst, empty_fn, &pr))) {
        *err = xasprintf("cannot read the target store (%d)", rc);
        goto out;
    }
    if (!pr.empty) {
        char *since = NULL;
        if (store_copy_unfinished(dst, &since) == 1)
            *err = xasprintf("the target store holds a copy that did not finish (started %s): "
                             "drop it and copy into a new, empty database",
                             since);
        else
            *err = xstrdup("the target store is not empty: copy into a new, empty database");
        free(since);
        rc = -EEXIST;
        goto out;
    }
    char ts[RFC3339_LEN];
    rfc3339_format(now_ms(), ts);
    char *mark = xasprintf(COPY_RUNNING "%s", ts);
    rc = store_write(dst, mark_fn, mark);
    free(mark);
    if (rc) {
        *err = xasprintf("cannot write to the target store (%d)", rc);
        goto out;
    }
    for (const char *const *t = store_tables(); *t; t++) {
        int64_t n = 0;
        for (;;) {
            struct page p = {*t, n, NULL};
            if ((rc = store_read(src, dump_fn, &p))) {
                *err = xasprintf("cannot read %s from the source (%d)", *t, rc);
                goto out;
            }
            size_t got = json_array_size(p.rows);
            drop_mark(*t, p.rows);
            if (json_array_size(p.rows))
                rc = store_write(dst, load_fn, &p);
            json_decref(p.rows);
            if (rc) {
                *err = xasprintf("cannot write %s to the target (%d)", *t, rc);
                goto out;
            }
            n += (int64_t)got;
            if (got < PAGE)
                break;
        }
        if (progress)
            fprintf(progress, "%-12s %lld rows\n", *t, (long long)n);
    }
    int64_t nblobs = 0;
    if ((rc = copy_blobs(from, data_dir, dst, &nblobs, err)))
        goto out;
    if (progress && nblobs)
        fprintf(progress, "%-12s %lld\n", "blobs", (long long)nblobs);
    rfc3339_format(now_ms(), ts);
    mark = xasprintf("finished %s", ts);
    rc = store_write(dst, mark_fn, mark);
    free(mark);
    if (rc)
        *err = xasprintf("cannot write to the target store (%d)", rc);
out:
    store_close(dst);
    store_close(src);
    return rc;
}
