/*
 * blob — the local content-addressed blob directory.  See blob.h.
 */
#include "blob.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "util.h"

struct blob {
    char *dir;
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
    return b;
}

void blob_close(struct blob *b)
{
    if (!b)
        return;
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
    if (access(final, F_OK) == 0) {
        unlink(tmp);   /* deduplicated: the same bytes are there already */
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

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int blob_put(struct blob *b, const void *data, size_t n, char sha[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(data, n, md, &mdlen, EVP_sha256(), NULL);
    hex_encode(md, 32, sha);
    char *tmp = NULL;
    int fd = tmpfile_in(b, &tmp);
    if (fd < 0)
        return fd;
    int rc = write_all(fd, data, n);
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

int blob_put_fd(struct blob *b, int fd, int64_t max, char sha[65], int64_t *size)
{
    char *tmp = NULL;
    int out = tmpfile_in(b, &tmp);
    if (out < 0)
        return out;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    char buf[65536];
    int64_t total = 0;
    int rc = 0;
    if (lseek(fd, 0, SEEK_SET) < 0 && errno != ESPIPE)
        rc = -errno;
    for (;;) {
        if (rc)
            break;
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        if (n == 0)
            break;
        total += n;
        if (total > max) {
            rc = -EFBIG;
            break;
        }
        EVP_DigestUpdate(ctx, buf, (size_t)n);
        rc = write_all(out, buf, (size_t)n);
    }
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    if (!rc && fsync(out))
        rc = -errno;
    close(out);
    if (rc) {
        unlink(tmp);
        free(tmp);
        return rc;
    }
    hex_encode(md, 32, sha);
    *size = total;
    rc = commit(b, tmp, sha);
    free(tmp);
    return rc;
}

int blob_open_read(struct blob *b, const char *sha)
{
    if (!sha_ok(sha))
        return -EINVAL;
    char *p = xasprintf("%s/%.2s/%s", b->dir, sha, sha);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    int e = errno;
    free(p);
    return fd >= 0 ? fd : -e;
}
