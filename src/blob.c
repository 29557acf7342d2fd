/*
 * blob — artifact bytes: the store's shared blobs when it keeps them, else
 * the local content-addressed directory.  See blob.h.
 */
#include "blob.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "log.h"
#include "store.h"
#include "util.h"

struct blob {
    char *dir;
    struct store *st;   /* NULL: local files only */
    /* orders a file's naming (commit) against the sweep's look and unlink:
     * a blob named again is touched, and the sweep only takes old files */
    pthread_mutex_t mu;
};

struct blob *blob_open(const char *dir)
{
    if (mkdir(dir, 0700) && errno != EEXIST)
        return NULL;
    char *tmp = xasprintf("%s/tmp", dir);
    int rc = mkdir(tmp, 0700);
    free(tmp);
    if (rc && errno != EEXIST)
        return NULL;
    struct blob *b = xcalloc(1, sizeof *b);
    b->dir = xstrdup(dir);
    pthread_mutex_init(&b->mu, NULL);
    return b;
}

void blob_use_store(struct blob *b, struct store *st)
{
    b->st = st;
}

void blob_close(struct blob *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->mu);
    free(b->dir);
    free(b);
}

static bool sha_ok(const char *sha)
{
    if (strlen(sha) != 64)
        return false;
    for (const char *p = sha; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

/* Moves the fsynced temp file into place under its hash (and fsyncs the
 * directory so the name survives power loss). */
static int commit(struct blob *b, const char *tmp, const char sha[65])
{
    char *sub = xasprintf("%s/%.2s", b->dir, sha);
    if (mkdir(sub, 0700) && errno != EEXIST) {
        int e = -errno;
        free(sub);
        unlink(tmp);
        return e;
    }
    char *final = xasprintf("%s/%s", sub, sha);
    int rc = 0;
    pthread_mutex_lock(&b->mu);
    if (utimensat(AT_FDCWD, final, NULL, 0) == 0) {
        /* deduplicated: the same bytes are there already, now fresh for
         * the sweep (blob_sweep) until their run commits */
        unlink(tmp);
    } else if (rename(tmp, final)) {
        rc = -errno;
        unlink(tmp);
    } else {
        int dfd = open(sub, O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    pthread_mutex_unlock(&b->mu);
    free(final);
    free(sub);
    return rc;
}

static int tmpfile_in(struct blob *b, char **path)
{
    char rnd[8], hex[17];
    random_bytes(rnd, sizeof rnd);
    hex_encode((unsigned char *)rnd, sizeof rnd, hex);
    *path = xasprintf("%s/tmp/%s", b->dir, hex);
    int fd = open(*path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        free(*path);
        *path = NULL;
        return -errno;
    }
    return fd;
}

/* ---- the store's shared blobs ---- */

struct mem_src {
    const char *p;
    size_t left;
};

static long mem_read(void *ctx, void *buf, size_t cap)
{
    struct mem_src *m = ctx;
    size_t n = m->left < cap ? m->left : cap;
    memcpy(buf, m->p, n);
    m->p += n;
    m->left -= n;
    return (long)n;
}

/* Reads the file a second time for the store, hashing it again: a file
 * that changed since it was named gives -EIO, not a blob under a wrong name. */
struct fd_src {
    int fd;
    EVP_MD_CTX *md;
    const char *sha;
};

static long fd_read(void *ctx, void *buf, size_t cap)
{
    struct fd_src *f = ctx;
    for (;;) {
        ssize_t n = read(f->fd, buf, cap);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n > 0) {
            EVP_DigestUpdate(f->md, buf, (size_t)n);
            return (long)n;
        }
        unsigned char md[32];
        unsigned int mdlen = 0;
        char hex[65];
        EVP_DigestFinal_ex(f->md, md, &mdlen);
        hex_encode(md, 32, hex);
        return strcmp(hex, f->sha) ? -EIO : 0;
    }
}

struct fd_sink {
    int fd;
    EVP_MD_CTX *md;
};

static int fd_write(void *ctx, const void *data, size_t n)
{
    struct fd_sink *f = ctx;
    EVP_DigestUpdate(f->md, data, n);
    return fd_write_all(f->fd, data, n);
}

/* An unlinked temp file in the blob directory (cleaned up by the kernel
 * however the process ends). */
static int anon_file(struct blob *b)
{
    char *tmpdir = xasprintf("%s/tmp", b->dir);
    int fd = open(tmpdir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
        char *path = xasprintf("%s/XXXXXX", tmpdir);
        fd = mkostemp(path, O_CLOEXEC);
        if (fd >= 0)
            unlink(path);
        free(path);
    }
    int e = errno;
    free(tmpdir);
    return fd >= 0 ? fd : -e;
}

/* The blob from the store into an anonymous file, checked against its name.
 * An fd, -ENOENT, -ENOTSUP (the store keeps no blobs) or -EIO. */
static int store_open_read(struct blob *b, const char *sha)
{
    int fd = anon_file(b);
    if (fd < 0)
        return fd;
    struct fd_sink sink = {fd, EVP_MD_CTX_new()};
    EVP_DigestInit_ex(sink.md, EVP_sha256(), NULL);
    int64_t size = 0;
    int rc = store_blob_get(b->st, sha, &size, fd_write, &sink);
    unsigned char md[32];
    unsigned int mdlen = 0;
    char hex[65];
    EVP_DigestFinal_ex(sink.md, md, &mdlen);
    EVP_MD_CTX_free(sink.md);
    hex_encode(md, 32, hex);
    if (!rc && strcmp(hex, sha)) {
        log_write(LOG_ERROR, "blob", NULL, "blob %s: the store's bytes do not match their name", sha);
        rc = -EIO;
    }
    if (!rc && lseek(fd, 0, SEEK_SET) < 0)
        rc = -errno;
    if (rc) {
        close(fd);
        return rc;
    }
    return fd;
}

/* ---- the local directory ---- */

int blob_put(struct blob *b, const void *data, size_t n, char sha[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(data, n, md, &mdlen, EVP_sha256(), NULL);
    hex_encode(md, 32, sha);
    if (b->st) {
        struct mem_src m = {data, n};
        int rc = store_blob_put(b->st, sha, (int64_t)n, mem_read, &m);
        if (rc != -ENOTSUP)
            return rc;
    }
    char *tmp = NULL;
    int fd = tmpfile_in(b, &tmp);
    if (fd < 0)
        return fd;
    int rc = fd_write_all(fd, data, n);
    if (!rc && fsync(fd))
        rc = -errno;
    close(fd);
    if (rc) {
        unlink(tmp);
        free(tmp);
        return rc;
    }
    rc = commit(b, tmp, sha);
    free(tmp);
    return rc;
}

/* Reads fd from where it stands to its end, at most max bytes (-EFBIG past
 * them), copying each chunk to out when out >= 0: *total gets the bytes
 * read, and sha their SHA-256 in hex when all went well (0, else a negative
 * errno). */
static int hash_fd(int fd, int64_t max, int out, char sha[65], int64_t *total)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    char buf[65536];
    int rc = 0;
    *total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            break;
        }
        if (n == 0)
            break;
        *total += n;
        if (*total > max) {
            rc = -EFBIG;
            break;
        }
        EVP_DigestUpdate(ctx, buf, (size_t)n);
        if (out >= 0 && (rc = fd_write_all(out, buf, (size_t)n)))
            break;
    }
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    if (!rc)
        hex_encode(md, 32, sha);
    return rc;
}

/* Names the file on fd (a first pass: hash and size, bounded by max), then
 * lets the store pull it in a second pass. */
static int store_put_fd(struct blob *b, int fd, int64_t max, char sha[65], int64_t *size)
{
    if (lseek(fd, 0, SEEK_SET) < 0)
        return -ENOTSUP;   /* a pipe: the local path copies it in one pass */
    int64_t total = 0;
    int rc = hash_fd(fd, max, -1, sha, &total);
    if (!rc && lseek(fd, 0, SEEK_SET) < 0)
        rc = -errno;
    if (rc)
        return rc;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    struct fd_src src = {fd, ctx, sha};
    rc = store_blob_put(b->st, sha, total, fd_read, &src);
    EVP_MD_CTX_free(ctx);
    if (!rc)
        *size = total;
    return rc;
}

int blob_put_fd(struct blob *b, int fd, int64_t max, char sha[65], int64_t *size)
{
    if (b->st) {
        int rc = store_put_fd(b, fd, max, sha, size);
        if (rc != -ENOTSUP)
            return rc;
    }
    char *tmp = NULL;
    int out = tmpfile_in(b, &tmp);
    if (out < 0)
        return out;
    int64_t total = 0;
    int rc = 0;
    if (lseek(fd, 0, SEEK_SET) < 0 && errno != ESPIPE)
        rc = -errno;
    if (!rc)
        rc = hash_fd(fd, max, out, sha, &total);
    if (!rc && fsync(out))
        rc = -errno;
    close(out);
    if (rc) {
        unlink(tmp);
        free(tmp);
        return rc;
    }
    *size = total;
    rc = commit(b, tmp, sha);
    free(tmp);
    return rc;
}

int blob_open_read(struct blob *b, const char *sha)
{
    if (!sha_ok(sha))
        return -EINVAL;
    if (b->st) {
        int fd = store_open_read(b, sha);
        if (fd >= 0 || (fd != -ENOENT && fd != -ENOTSUP))
            return fd;
        /* not in the store: maybe stored here before the store kept blobs */
    }
    char *p = xasprintf("%s/%.2s/%s", b->dir, sha, sha);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    int e = errno;
    free(p);
    return fd >= 0 ? fd : -e;
}

/* ---- the sweep of local files no run names ---- */

struct ref_arg {
    const char *sha;
    int referenced;
};

static int ref_fn(struct store_tx *tx, void *arg)
{
    struct ref_arg *a = arg;
    a->referenced = store_blob_referenced(tx, a->sha);
    return a->referenced < 0 ? a->referenced : 0;
}

/* One DIR/ab directory: its old, unnamed blobs go. */
static void sweep_sub(struct blob *b, struct store *st, const char *sub, time_t cut,
                      int64_t *removed)
{
    int dfd = open(sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return;
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!sha_ok(e->d_name))
            continue;
        pthread_mutex_lock(&b->mu);
        struct stat sb;
        struct ref_arg a = {e->d_name, 1};
        if (fstatat(dfd, e->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(sb.st_mode) &&
            sb.st_mtime < cut && store_read(st, ref_fn, &a) == 0 && a.referenced == 0 &&
            unlinkat(dfd, e->d_name, 0) == 0)
            (*removed)++;
        pthread_mutex_unlock(&b->mu);
    }
    closedir(d);
}

int blob_sweep(struct blob *b, struct store *st, int64_t older_than_ms, int64_t *removed)
{
    *removed = 0;
    DIR *d = opendir(b->dir);
    if (!d)
        return -errno;
    time_t cut = (time_t)(older_than_ms / 1000);
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        bool hex2 = strlen(n) == 2 && strspn(n, "0123456789abcdef") == 2;
        if (!hex2)
            continue;
        char *sub = xasprintf("%s/%s", b->dir, n);
        sweep_sub(b, st, sub, cut, removed);
        free(sub);
    }
    closedir(d);
    return 0;
}

bool blob_name_ok(const char *name)
{
    size_t len = strlen(name);
    if (len < 1 || len > 255 || name[0] == '/' || strstr(name, "..") || strchr(name, '\\'))
        return false;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}
