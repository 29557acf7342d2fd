/*
 * The WAL-gathering VFS (src/sqlite_vfs.c): what it writes is an ordinary
 * SQLite WAL.  Another connection sees each commit as soon as it returns,
 * transactions far larger than its buffer work, the default VFS reads the
 * files it leaves, and a process killed without closing loses no commit.
 */
#include "t.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sqlite_vfs.h"
#include "util.h"

static char *tmp_db(void)
{
    char dir[] = "/tmp/quern-vfs-XXXXXX";
    if (!mkdtemp(dir))
        abort();
    return xasprintf("%s/t.db", dir);
}

static sqlite3 *open_db(const char *path, const char *vfs, const char *sync)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs) != SQLITE_OK)
        return NULL;
    sqlite3_busy_timeout(db, 5000);
    char *sql = xasprintf("PRAGMA journal_mode=WAL; PRAGMA synchronous=%s;", sync);
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    free(sql);
    return rc == SQLITE_OK ? db : NULL;
}

static int64_t count(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s = NULL;
    int64_t n = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return n;
}

/* n rows of ~1 KB with an index: a transaction dirties many pages */
static int insert(sqlite3 *db, int from, int n)
{
    char *sql = xasprintf("BEGIN; WITH RECURSIVE c(i) AS (SELECT %d UNION ALL SELECT i+1 FROM c "
                          "WHERE i < %d) INSERT INTO t SELECT i, hex(randomblob(500)) FROM c; COMMIT;",
                          from, from + n - 1);
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    free(sql);
    return rc;
}

static void integrity(const char *path)
{
    sqlite3 *db = open_db(path, NULL, "FULL");   /* the default VFS */
    CHECK(db != NULL);
    sqlite3_stmt *s = NULL;
    CHECK_EQ_INT(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL), SQLITE_OK);
    CHECK_EQ_INT(sqlite3_step(s), SQLITE_ROW);
    CHECK_EQ_STR((const char *)sqlite3_column_text(s, 0), "ok");
    sqlite3_finalize(s);
    sqlite3_close(db);
}

TEST(vfs_registers)
{
    const char *name = sqlite_vfs_name();
    CHECK(name != NULL);
    CHECK(name && sqlite3_vfs_find(name) != NULL);
    CHECK(sqlite_vfs_name() == name);
}

TEST(commits_are_seen_by_another_connection_at_once)
{
    static const char *const syncs[] = {"OFF", "NORMAL", "FULL"};
    for (int k = 0; k < 3; k++) {
        char *path = tmp_db();
        sqlite3 *w = open_db(path, sqlite_vfs_name(), syncs[k]);
        sqlite3 *r = open_db(path, sqlite_vfs_name(), syncs[k]);
        CHECK(w && r);
        CHECK_EQ_INT(sqlite3_exec(w, "CREATE TABLE t(i INTEGER PRIMARY KEY, v TEXT); "
                                     "CREATE INDEX t_v ON t(v);", NULL, NULL, NULL), SQLITE_OK);
        int total = 0;
        /* single rows, then transactions past the buffer (512 KiB) and past
         * the largest single write (~124 KiB) */
        static const int sizes[] = {1, 1, 3, 40, 1, 700, 2, 1500, 1};
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
            CHECK_EQ_INT(insert(w, total + 1, sizes[i]), SQLITE_OK);
            total += sizes[i];
            CHECK_EQ_INT(count(r, "SELECT count(*) FROM t"), total);
            CHECK_EQ_INT(count(r, "SELECT max(i) FROM t"), total);
        }
        /* a checkpoint and a restart of the WAL, then more commits */
        CHECK_EQ_INT(sqlite3_wal_checkpoint_v2(r, NULL, SQLITE_CHECKPOINT_RESTART, NULL, NULL),
                     SQLITE_OK);
        CHECK_EQ_INT(insert(w, total + 1, 5), SQLITE_OK);
        total += 5;
        CHECK_EQ_INT(count(r, "SELECT count(*) FROM t"), total);
        sqlite3_close(r);
        sqlite3_close(w);
        integrity(path);
        sqlite3 *d = open_db(path, NULL, "FULL");
        CHECK_EQ_INT(count(d, "SELECT count(*) FROM t"), total);
        sqlite3_close(d);
        free(path);
    }
}

TEST(a_killed_writer_loses_no_commit)
{
    char *path = tmp_db();
    int fds[2];
    CHECK_EQ_INT(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        sqlite3 *w = open_db(path, sqlite_vfs_name(), "NORMAL");
        if (!w || sqlite3_exec(w, "CREATE TABLE t(i INTEGER PRIMARY KEY, v TEXT)", NULL, NULL,
                               NULL) != SQLITE_OK)
            _exit(2);
        for (int i = 1;; i++) {
            if (insert(w, i * 1000, i % 7 == 0 ? 300 : 1) != SQLITE_OK)
                _exit(3);
            int32_t done = i;
            if (write(fds[1], &done, sizeof done) != sizeof done)
                _exit(4);
        }
    }
    close(fds[1]);
    int32_t done = 0, last = 0;
    while (last < 60 && read(fds[0], &done, sizeof done) == sizeof done)
        last = done;
    kill(pid, SIGKILL);   /* no close, no checkpoint: the WAL holds it all */
    int st;
    waitpid(pid, &st, 0);
    while (read(fds[0], &done, sizeof done) == sizeof done)
        last = done;
    close(fds[0]);
    CHECK(last >= 60);
    if (last < 60)
        fprintf(stderr, "  writer: status %d, %d commits\n", st, last);
    integrity(path);
    sqlite3 *d = open_db(path, NULL, "FULL");
    int64_t expect = 0;
    for (int i = 1; i <= last; i++)
        expect += i % 7 == 0 ? 300 : 1;
    /* every commit the writer saw return is there (one more may be, if it
     * was killed between its commit and its report) */
    int64_t got = count(d, "SELECT count(*) FROM t");
    int64_t next = (last + 1) % 7 == 0 ? 300 : 1;
    CHECK(got == expect || got == expect + next);
    sqlite3_close(d);
    free(path);
}
