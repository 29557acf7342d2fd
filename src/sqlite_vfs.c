/*
 * sqlite_vfs — a thin SQLite VFS over the default one ("unix") that gathers
 * the frames a commit appends to the write-ahead log into one write.
 *
 * SQLite writes each WAL frame as two pwrite calls (its 24-byte header, then
 * the page), so a commit that dirties 22 pages made 44 system calls; on this
 * machine those calls were ~20 % of quernd's CPU in a single-create load.
 * SQLite has no option for it (no writev of frames), hence this shim.  It
 * changes nothing but how the bytes reach the kernel:
 *
 *   - Writes to a WAL file that continue the previous one are appended to a
 *     buffer (at most WAL_BUF bytes); any other write flushes it first.
 *   - The buffer is flushed right after the page of a commit frame (a frame
 *     header whose "database size" field is not zero marks the last frame of
 *     a transaction), before SQLite publishes the commit in the WAL index:
 *     SQLite does that only after the write returns, so no other connection
 *     can look for a frame that is still in the buffer.
 *   - xRead, xSync, xTruncate, xFileSize and xClose flush first, so the
 *     connection itself, fsync and the size of the file see every byte.
 *   - A failed flush is returned by the call that made it (for a commit, by
 *     the commit frame's write), so SQLite fails the transaction as it would
 *     for a failed write.
 *
 * Files other than WAL files are the unix VFS's own objects, untouched: the
 * shim's sqlite3_file is the unix one with a small tail after it, and only a
 * WAL file's methods are replaced.  Each sqlite3_file is used by one
 * connection, and a connection by one thread at a time, so there is no lock.
 */
#include "sqlite_vfs.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define WAL_BUF (512 * 1024)
#define FRAME_HEADER 24
/* the unix VFS writes at most 0x1ffff bytes per call (it masks the length:
 * a longer write would come back short and read as "disk full") */
#define MAX_WRITE (0x1ffff & ~4095)

struct tail {
    const sqlite3_io_methods *real;
    char *buf;
    size_t len;
    sqlite3_int64 off;    /* file offset of buf[0] */
    int commit_next;      /* the last write was a commit frame's header */
};

static sqlite3_vfs vfs;
static sqlite3_vfs *base;
static size_t tail_at;    /* offset of struct tail in our sqlite3_file */
static sqlite3_io_methods wal_methods;

static struct tail *tail_of(sqlite3_file *f)
{
    return (struct tail *)((char *)f + tail_at);
}

static int flush(sqlite3_file *f)
{
    struct tail *t = tail_of(f);
    int rc = SQLITE_OK;
    for (size_t at = 0; at < t->len && rc == SQLITE_OK; at += MAX_WRITE) {
        size_t n = t->len - at < MAX_WRITE ? t->len - at : MAX_WRITE;
        rc = t->real->xWrite(f, t->buf + at, (int)n, t->off + (sqlite3_int64)at);
    }
    t->len = 0;
    return rc;
}

static int w_close(sqlite3_file *f)
{
    struct tail *t = tail_of(f);
    int rc = flush(f);
    free(t->buf);
    t->buf = NULL;
    int rc2 = t->real->xClose(f);
    return rc != SQLITE_OK ? rc : rc2;
}

static int w_read(sqlite3_file *f, void *p, int amt, sqlite3_int64 off)
{
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : tail_of(f)->real->xRead(f, p, amt, off);
}

static int w_write(sqlite3_file *f, const void *p, int amt, sqlite3_int64 off)
{
    struct tail *t = tail_of(f);
    int commit = t->commit_next;
    const unsigned char *b = p;
    /* a frame header: page number, then the database size after a commit
     * (zero in every frame but a transaction's last) */
    t->commit_next = amt == FRAME_HEADER && (b[4] | b[5] | b[6] | b[7]) != 0;
    if (t->len && (off != t->off + (sqlite3_int64)t->len || t->len + (size_t)amt > WAL_BUF)) {
        int rc = flush(f);
        if (rc != SQLITE_OK)
            return rc;
    }
    if ((size_t)amt > MAX_WRITE)
        return t->real->xWrite(f, p, amt, off);   /* SQLite's own writes are smaller */
    if (!t->buf)
        t->buf = xmalloc(WAL_BUF);
    if (!t->len)
        t->off = off;
    memcpy(t->buf + t->len, p, (size_t)amt);
    t->len += (size_t)amt;
    return commit ? flush(f) : SQLITE_OK;
}

static int w_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : tail_of(f)->real->xTruncate(f, size);
}

static int w_sync(sqlite3_file *f, int flags)
{
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : tail_of(f)->real->xSync(f, flags);
}

static int w_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : tail_of(f)->real->xFileSize(f, size);
}

static int w_lock(sqlite3_file *f, int l)
{
    return tail_of(f)->real->xLock(f, l);
}

static int w_unlock(sqlite3_file *f, int l)
{
    return tail_of(f)->real->xUnlock(f, l);
}

static int w_check_reserved(sqlite3_file *f, int *out)
{
    return tail_of(f)->real->xCheckReservedLock(f, out);
}

static int w_file_control(sqlite3_file *f, int op, void *arg)
{
    return tail_of(f)->real->xFileControl(f, op, arg);
}

static int w_sector_size(sqlite3_file *f)
{
    return tail_of(f)->real->xSectorSize(f);
}

static int w_device(sqlite3_file *f)
{
    return tail_of(f)->real->xDeviceCharacteristics(f);
}

static int v_open(sqlite3_vfs *v, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
    (void)v;
    struct tail *t = tail_of(f);
    memset(t, 0, sizeof *t);
    int rc = base->xOpen(base, name, f, flags, out_flags);
    if (rc != SQLITE_OK || !(flags & SQLITE_OPEN_WAL) || !f->pMethods)
        return rc;
    t->real = f->pMethods;
    f->pMethods = &wal_methods;
    return SQLITE_OK;
}

/* The rest of the VFS is the base's. */
static int v_delete(sqlite3_vfs *v, const char *n, int s)
{
    (void)v;
    return base->xDelete(base, n, s);
}

static int v_access(sqlite3_vfs *v, const char *n, int fl, int *o)
{
    (void)v;
    return base->xAccess(base, n, fl, o);
}

static int v_full_pathname(sqlite3_vfs *v, const char *n, int k, char *o)
{
    (void)v;
    return base->xFullPathname(base, n, k, o);
}

static void *v_dlopen(sqlite3_vfs *v, const char *n)
{
    (void)v;
    return base->xDlOpen(base, n);
}

static void v_dlerror(sqlite3_vfs *v, int k, char *o)
{
    (void)v;
    base->xDlError(base, k, o);
}

static void (*v_dlsym(sqlite3_vfs *v, void *h, const char *s))(void)
{
    (void)v;
    return base->xDlSym(base, h, s);
}

static void v_dlclose(sqlite3_vfs *v, void *h)
{
    (void)v;
    base->xDlClose(base, h);
}

static int v_randomness(sqlite3_vfs *v, int n, char *o)
{
    (void)v;
    return base->xRandomness(base, n, o);
}

static int v_sleep(sqlite3_vfs *v, int us)
{
    (void)v;
    return base->xSleep(base, us);
}

static int v_current_time(sqlite3_vfs *v, double *o)
{
    (void)v;
    return base->xCurrentTime(base, o);
}

static int v_last_error(sqlite3_vfs *v, int n, char *o)
{
    (void)v;
    return base->xGetLastError ? base->xGetLastError(base, n, o) : 0;
}

static int v_current_time64(sqlite3_vfs *v, sqlite3_int64 *o)
{
    (void)v;
    return base->xCurrentTimeInt64(base, o);
}

static const char *registered;

static void do_register(void)
{
    base = sqlite3_vfs_find(NULL);
    if (!base || base->iVersion < 2)
        return;
    tail_at = ((size_t)base->szOsFile + 15) & ~(size_t)15;
    wal_methods = (sqlite3_io_methods){
        .iVersion = 1,
        .xClose = w_close,
        .xRead = w_read,
        .xWrite = w_write,
        .xTruncate = w_truncate,
        .xSync = w_sync,
        .xFileSize = w_file_size,
        .xLock = w_lock,
        .xUnlock = w_unlock,
        .xCheckReservedLock = w_check_reserved,
        .xFileControl = w_file_control,
        .xSectorSize = w_sector_size,
        .xDeviceCharacteristics = w_device,
    };
    vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)(tail_at + sizeof(struct tail)),
        .mxPathname = base->mxPathname,
        .zName = "quern-wal",
        .xOpen = v_open,
        .xDelete = v_delete,
        .xAccess = v_access,
        .xFullPathname = v_full_pathname,
        .xDlOpen = v_dlopen,
        .xDlError = v_dlerror,
        .xDlSym = v_dlsym,
        .xDlClose = v_dlclose,
        .xRandomness = v_randomness,
        .xSleep = v_sleep,
        .xCurrentTime = v_current_time,
        .xGetLastError = v_last_error,
        .xCurrentTimeInt64 = v_current_time64,
    };
    if (sqlite3_vfs_register(&vfs, 0) == SQLITE_OK)
        registered = vfs.zName;
}

const char *sqlite_vfs_name(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, do_register);
    return registered;
}
