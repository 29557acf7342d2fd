/*
 * blob.c over a store, and store_write_retry: SQLite always (the store keeps
 * no blobs: -ENOTSUP, so blob.c uses its directory), PostgreSQL when
 * QUERN_TEST_PG_URL names a database (tests/integration/test_multinode.py
 * runs this program against its private cluster).  On PostgreSQL the retry
 * loop is driven by the fault injection of store_pg.c
 * (QUERN_PG_FAULT_JOB_CONFLICTS / QUERN_PG_FAULT_BATCH_CONFLICTS, set here
 * before each store_open).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blob.h"
#include "store.h"
#include "t.h"
#include "tstore.h"
#include "util.h"

static char tmpdir[] = "/tmp/quern-blob-XXXXXX";
static int nstore;

static const char *pg_url(void)
{
    const char *u = getenv("QUERN_TEST_PG_URL");
    return u && *u ? u : NULL;
}

/* A fresh store: "sqlite" (a temp file) or "pg". */
static struct store *open_store(bool pg)
{
    if (!nstore++ && t_tmpdir_make(tmpdir))
        return NULL;
    char *url = pg ? xstrdup(pg_url()) : xasprintf("sqlite:%s/s%d.db", tmpdir, nstore);
    struct store *st = t_store_open(url, STORE_FSYNC_OFF);
    free(url);
    return st;
}

static struct blob *open_blob(struct store *st)
{
    char *dir = xasprintf("%s/blobs%d", tmpdir, nstore);
    struct blob *b = blob_open(dir);
    free(dir);
    if (b)
        blob_use_store(b, st);
    return b;
}

static size_t local_files(void)
{
    /* counts blob files (not tmp) under every blobsN dir: "ab/<sha>" */
    char *cmd = xasprintf("find %s -path '*/blobs*/[0-9a-f][0-9a-f]/*' -type f | wc -l", tmpdir);
    FILE *f = popen(cmd, "r");
    free(cmd);
    size_t n = 0;
    if (f) {
        if (fscanf(f, "%zu", &n) != 1)
            n = 0;
        pclose(f);
    }
    return n;
}

static unsigned char *pattern(size_t n, unsigned seed)
{
    unsigned char *p = xmalloc(n ? n : 1);
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 131u + seed * 7u + (i >> 9)) & 0xff);
    return p;
}

static bool fd_equals(int fd, const unsigned char *want, size_t n)
{
    unsigned char *got = xmalloc(n + 1);
    size_t off = 0;
    for (;;) {
        ssize_t r = read(fd, got + off, n + 1 - off);
        if (r <= 0)
            break;
        off += (size_t)r;
        if (off == n + 1)
            break;
    }
    bool ok = off == n && !memcmp(got, want, n);
    free(got);
    return ok;
}

static const size_t sizes[] = {0, 1, STORE_BLOB_CHUNK - 1, STORE_BLOB_CHUNK,
                               5 * STORE_BLOB_CHUNK + 7, 8 * STORE_BLOB_CHUNK};

static void roundtrips(struct store *st, struct blob *b, unsigned seed)
{
    for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
        size_t n = sizes[i];
        unsigned char *p = pattern(n, seed + (unsigned)i);
        char sha[65], again[65];
        CHECK_EQ_INT(blob_put(b, p, n, sha), 0);
        CHECK_EQ_INT(blob_put(b, p, n, again), 0);   /* idempotent */
        CHECK_EQ_STR(sha, again);
        int fd = blob_open_read(b, sha);
        CHECK(fd >= 0);
        if (fd >= 0) {
            CHECK(fd_equals(fd, p, n));
            close(fd);
        }
        /* from a file, as the runner stores QUERN_ARTIFACTS */
        char *path = xasprintf("%s/in%zu", tmpdir, i);
        int in = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
        CHECK(in >= 0 && write(in, p, n) == (ssize_t)n);
        int64_t size = -1;
        CHECK_EQ_INT(blob_put_fd(b, in, 64LL << 20, again, &size), 0);
        CHECK_EQ_STR(sha, again);
        CHECK_EQ_INT(size, (long long)n);
        int64_t small = 0;
        if (n > 1)
            CHECK_EQ_INT(blob_put_fd(b, in, (int64_t)n - 1, again, &small), -EFBIG);
        close(in);
        unlink(path);
        free(path);
        free(p);
    }
    char missing[65];
    memset(missing, 'e', 64);
    missing[64] = 0;
    CHECK_EQ_INT(blob_open_read(b, missing), -ENOENT);
    CHECK_EQ_INT(blob_open_read(b, "../etc/passwd"), -EINVAL);
    (void)st;
}

TEST(sqlite_keeps_blobs_in_files)
{
    struct store *st = open_store(false);
    CHECK(st != NULL);
    if (!st)
        return;
    int64_t size;
    CHECK_EQ_INT(store_blob_get(st, "00", &size, NULL, NULL), -ENOTSUP);
    struct blob *b = open_blob(st);
    CHECK(b != NULL);
    size_t before = local_files();
    roundtrips(st, b, 1);
    CHECK_EQ_INT((long long)local_files(), (long long)(before + ARRAY_LEN(sizes)));
    blob_close(b);
    store_close(st);
}

static long short_src(void *ctx, void *buf, size_t cap)
{
    static int calls;
    (void)ctx;
    if (calls++ % 2)
        return 0;
    memset(buf, 'x', cap < 4 ? cap : 4);
    return cap < 4 ? (long)cap : 4;
}

TEST(postgres_keeps_blobs_in_the_database)
{
    if (!pg_url()) {
        printf("  skip: QUERN_TEST_PG_URL is not set\n");
        return;
    }
    struct store *st = open_store(true);
    CHECK(st != NULL);
    if (!st)
        return;
    struct blob *b = open_blob(st);
    size_t before = local_files();
    roundtrips(st, b, 2);
    CHECK_EQ_INT((long long)local_files(), (long long)before);   /* nothing on disk */
    /* a second node (another store and blob dir) reads what the first stored */
    struct store *st2 = open_store(true);
    struct blob *b2 = open_blob(st2);
    unsigned char *p = pattern(3 * STORE_BLOB_CHUNK + 11, 99);
    char sha[65];
    CHECK_EQ_INT(blob_put(b, p, 3 * STORE_BLOB_CHUNK + 11, sha), 0);
    int fd = blob_open_read(b2, sha);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(fd_equals(fd, p, 3 * STORE_BLOB_CHUNK + 11));
        close(fd);
    }
    free(p);
    /* a src that gives other than the announced size stores nothing */
    char fake[65];
    memset(fake, 'd', 64);
    fake[64] = 0;
    CHECK_EQ_INT(store_blob_put(st, fake, 10, short_src, NULL), -EINVAL);
    int64_t size = 0;
    CHECK_EQ_INT(store_blob_get(st, fake, &size, NULL, NULL), -ENOENT);
    blob_close(b2);
    store_close(st2);
    blob_close(b);
    store_close(st);
}

/* ---- store_write_retry ---- */

struct counted {
    int runs;          /* how many times fn ran */
    int hooks_true, hooks_false;
    int out;           /* an output set on every run */
    const char *prj;
};

static void count_hook(void *arg, bool committed)
{
    struct counted *c = arg;
    if (committed)
        c->hooks_true++;
    else
        c->hooks_false++;
}

static int meta_fn(struct store_tx *tx, void *arg)
{
    struct counted *c = arg;
    c->runs++;
    c->out = 0;
    char *key = xasprintf("retry_%s", c->prj);
    char *old = store_meta_get(tx, key);
    int n = old ? atoi(old) : 0;
    free(old);
    char v[16];
    snprintf(v, sizeof v, "%d", n + 1);
    int rc = store_meta_set(tx, key, v);
    free(key);
    if (rc)
        return rc;
    store_tx_on_commit(tx, count_hook, c);
    c->out = n + 1;
    return 0;
}

static int meta_read_fn(struct store_tx *tx, void *arg)
{
    struct counted *c = arg;
    char *key = xasprintf("retry_%s", c->prj);
    char *v = store_meta_get(tx, key);
    c->out = v ? atoi(v) : 0;
    free(v);
    free(key);
    return 0;
}

static void retry_with(const char *env, const char *value, int want_runs, int want_false)
{
    if (!pg_url())
        return;
    setenv(env, value, 1);
    struct store *st = open_store(true);
    unsetenv(env);
    CHECK(st != NULL);
    if (!st)
        return;
    char id[ID_LEN];
    id_new("p", id);
    struct counted c = {.prj = id};
    CHECK_EQ_INT(store_write_retry(st, meta_fn, &c), 0);
    CHECK_EQ_INT(c.runs, want_runs);
    CHECK_EQ_INT(c.hooks_true, 1);          /* invariant 3: one commit, its hook once */
    CHECK_EQ_INT(c.hooks_false, want_false);
    CHECK_EQ_INT(c.out, 1);
    struct counted r = {.prj = id};
    CHECK_EQ_INT(store_read(st, meta_read_fn, &r), 0);
    CHECK_EQ_INT(r.out, 1);                 /* the lost runs left nothing behind */
    store_close(st);
}

TEST(retry_after_a_job_lost_in_its_savepoint)
{
    /* the failed run's statements all fail: it registers no hook */
    retry_with("QUERN_PG_FAULT_JOB_CONFLICTS", "1", 2, 0);
}

TEST(retry_after_the_whole_batch_lost_at_commit)
{
    /* the first run succeeded, then its batch lost: hook once with false */
    retry_with("QUERN_PG_FAULT_BATCH_CONFLICTS", "1", 2, 1);
}

TEST(retry_gives_up_with_eagain)
{
    if (!pg_url())
        return;
    setenv("QUERN_PG_FAULT_JOB_CONFLICTS", "1000", 1);
    setenv("QUERN_PG_FAULT_EVERY_RUN", "1", 1);
    struct store *st = open_store(true);
    unsetenv("QUERN_PG_FAULT_JOB_CONFLICTS");
    unsetenv("QUERN_PG_FAULT_EVERY_RUN");
    if (!st) {
        CHECK(st != NULL);
        return;
    }
    char id[ID_LEN];
    id_new("p", id);
    struct counted c = {.prj = id};
    CHECK_EQ_INT(store_write_retry(st, meta_fn, &c), -EAGAIN);
    CHECK_EQ_INT(c.runs, 1 + STORE_WRITE_RETRIES);
    CHECK_EQ_INT(c.hooks_true, 0);
    struct counted r = {.prj = id};
    CHECK_EQ_INT(store_read(st, meta_read_fn, &r), 0);
    CHECK_EQ_INT(r.out, 0);
    store_close(st);
}

TEST(sqlite_write_retry_is_a_write)
{
    struct store *st = open_store(false);
    CHECK(st != NULL);
    if (!st)
        return;
    struct counted c = {.prj = "sq"};
    CHECK_EQ_INT(store_write_retry(st, meta_fn, &c), 0);
    CHECK_EQ_INT(c.runs, 1);
    CHECK_EQ_INT(c.hooks_true, 1);
    store_close(st);
}

TEST(artifact_names)
{
    CHECK(blob_name_ok("a.txt"));
    CHECK(blob_name_ok("dir/sub/ok name.txt"));
    CHECK(!blob_name_ok(""));
    CHECK(!blob_name_ok("/abs"));
    CHECK(!blob_name_ok("../x"));
    CHECK(!blob_name_ok("..dots"));
    CHECK(!blob_name_ok("back\\slash"));
    CHECK(!blob_name_ok("new\r\nline"));
    CHECK(!blob_name_ok("tab\there"));
    CHECK(!blob_name_ok("del\x7f"));
    char long_name[300];
    memset(long_name, 'x', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    CHECK(!blob_name_ok(long_name));
    long_name[255] = '\0';
    CHECK(blob_name_ok(long_name));
}
