/*
 * store_copy — `quern store copy FROM TO`: moves a whole installation from
 * one store to another (typically sqlite:PATH to postgres://...), every
 * table row for row: documents of every kind with their sequence numbers,
 * run logs, events with their ids, meta (the server secret, bootstrap
 * marker) and remembered idempotent responses.  Ids and order are kept, so
 * event cursors (webhooks, Last-Event-ID) and list order carry over.
 *
 * Runs in the CLI process on its own thread of control: it opens both
 * stores (their writer threads do the writing), reads the source in pages
 * and writes each page in one transaction.  quernd must be stopped on the
 * source while copying; the target must be empty (a fresh database).
 */
#include "store_copy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int store_copy(const char *from, const char *to, FILE *progress, char **err)
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
        *err = xstrdup("the target store is not empty: copy into a new, empty database");
        rc = -EEXIST;
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
            if (got)
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
out:
    store_close(dst);
    store_close(src);
    return rc;
}

int store_copy_main(int argc, char **argv)
{
    if (argc != 4 || strcmp(argv[1], "copy")) {
        fprintf(stderr, "usage: quern store copy FROM TO\n"
                        "  copies every table of store FROM into the empty store TO, ids kept;\n"
                        "  e.g. quern store copy sqlite:./quern-data/quern.db postgres://host/db\n"
                        "  (stop quernd first)\n");
        return 2;
    }
    char *err = NULL;
    int rc = store_copy(argv[2], argv[3], stdout, &err);
    if (rc) {
        fprintf(stderr, "quern: store copy: %s\n", err ? err : "failed");
        free(err);
        return 1;
    }
    printf("copied %s to %s\n", argv[2], argv[3]);
    return 0;
}
