/*
 * blob — the artifact store interface, with a local content-addressed
 * directory as the backend: a blob is named by the hex SHA-256 of its bytes,
 * written to a temp file, fsynced and renamed into DIR/ab/abcdef…, so equal
 * contents are stored once and a crash never leaves a half-written blob
 * under its name.  An S3-compatible backend fits behind the same calls.
 * Thread-safe (every call is independent file I/O).
 */
#ifndef QUERN_BLOB_H
#define QUERN_BLOB_H

#include <stddef.h>
#include <stdint.h>

struct blob;

/* Opens (creating) the store under dir.  NULL on failure. */
struct blob *blob_open(const char *dir);
void blob_close(struct blob *b);

/* Stores n bytes; writes the hex SHA-256 into sha (65 bytes).  0 or -errno. */
int blob_put(struct blob *b, const void *data, size_t n, char sha[65]);
/* Stores the file open on fd (read from its start, at most max bytes, else
 * -EFBIG); *size gets its length.  0 or -errno. */
int blob_put_fd(struct blob *b, int fd, int64_t max, char sha[65], int64_t *size);
/* Opens a blob for reading: an fd, or -ENOENT.  sha must be 64 hex digits. */
int blob_open_read(struct blob *b, const char *sha);

#endif
