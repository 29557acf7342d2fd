/*
 * blob — the artifact store interface.  A blob is named by the hex SHA-256
 * of its bytes, so equal contents are stored once.  Two backends:
 *
 *  - the store's shared blobs (store_blob_put/get, store.h), used when the
 *    store keeps them (PostgreSQL): every node of a cluster reads every
 *    artifact, whichever node stored it.  A read streams the blob from the
 *    store, chunk by chunk, into an unlinked temp file and hands out its fd
 *    (never the whole blob in memory, and no store connection is held while
 *    a slow client downloads);
 *  - a local content-addressed directory otherwise (SQLite): written to a
 *    temp file, fsynced and renamed into DIR/ab/abcdef…, so a crash never
 *    leaves a half-written blob under its name.  Reads fall back to it on
 *    PostgreSQL too, for blobs this node stored before shared blobs existed.
 *
 * Thread-safe (every call is independent file or store I/O).
 */
#ifndef QUERN_BLOB_H
#define QUERN_BLOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct blob;

struct store;

/* Opens (creating) the local blob directory dir.  NULL on failure. */
struct blob *blob_open(const char *dir);
void blob_close(struct blob *b);
/* Keeps blobs in st from now on when st keeps blobs (store_blob_put does
 * not answer -ENOTSUP), else in dir.  Call once, before other threads use
 * b; st must outlive b. */
void blob_use_store(struct blob *b, struct store *st);

/* Stores n bytes; writes the hex SHA-256 into sha (65 bytes).  0 or -errno. */
int blob_put(struct blob *b, const void *data, size_t n, char sha[65]);
/* Stores the file open on fd (read from its start, at most max bytes, else
 * -EFBIG); *size gets its length.  0 or -errno. */
int blob_put_fd(struct blob *b, int fd, int64_t max, char sha[65], int64_t *size);
/* Opens a blob for reading: an fd (positioned at its start; the caller
 * closes it), or -ENOENT, -EINVAL (sha must be 64 lowercase hex digits),
 * -EIO. */
int blob_open_read(struct blob *b, const char *sha);

/* Whether name is an acceptable artifact name: 1-255 bytes, no control
 * characters, no "..", no backslash, no leading '/' (uploads and files left
 * by code alike). */
bool blob_name_ok(const char *name);

/* Deletes the local blob files that no run's artifacts name any more
 * (store_blob_referenced) and that nobody stored or named again since
 * older_than_ms (ms since the epoch: the grace covers a blob stored before
 * its run commits).  *removed counts them.  0 or -errno (the directory
 * cannot be read).  For the retention pass; blobs kept by the store itself
 * are its own prune's business. */
int blob_sweep(struct blob *b, struct store *st, int64_t older_than_ms, int64_t *removed);

#endif
