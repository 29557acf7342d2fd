/*
 * util — small shared helpers: allocation policy, a growable byte buffer,
 * clocks and RFC 3339 time, identifiers, hex, whole writes and copies of
 * files.
 *
 * Out-of-memory policy: quern does not try to survive a failed allocation of
 * a few bytes.  x*alloc() print "out of memory" with the call site and abort;
 * every other failure is an error code the caller handles.
 */
#ifndef QUERN_UTIL_H
#define QUERN_UTIL_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* A broken invariant (never user input): prints "quern: FILE:LINE: broken
 * invariant: WHAT (errno text)" on stderr, then aborts.  errno is read at the
 * call, so call it right after the failing system call. */
#define die_invariant(what) die_invariant_at(__FILE__, __LINE__, (what), errno)
__attribute__((noreturn)) void die_invariant_at(const char *file, int line, const char *what,
                                                int err);

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* A malloc'd formatted string; the caller frees it. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xvasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

/* A growable byte buffer, always NUL-terminated after data[len]. */
struct buf {
    char *data;
    size_t len;
    size_t cap;
};
void buf_init(struct buf *b);
void buf_release(struct buf *b);
void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Hands the bytes to the caller (who frees them) and empties the buffer. */
char *buf_steal(struct buf *b);

/* Wall-clock milliseconds since the Unix epoch. */
int64_t now_ms(void);
/* Monotonic milliseconds, for timeouts. */
int64_t mono_ms(void);
/* *ts = CLOCK_MONOTONIC now + ms, for pthread_cond_timedwait on a condition
 * variable set to that clock. */
struct timespec;
void mono_deadline(struct timespec *ts, int64_t ms);
/* Test hook: when non-zero, now_ms() returns it (an injectable clock). */
extern int64_t util_fake_now_ms;

#define RFC3339_LEN 32
/* Formats ms since the epoch as "2026-11-22T21:42:02.123Z" into out. */
void rfc3339_format(int64_t ms, char out[RFC3339_LEN]);
/* Parses an RFC 3339 timestamp (Z or +hh:mm offset, optional fraction);
 * returns 0 and sets *ms, or -EINVAL. */
int rfc3339_parse(const char *s, int64_t *ms);

/* Writes a new id "<prefix>_<20 random base32 chars>" into out.  ID_LEN
 * also holds a client's own id (api_id_ok: up to 64 bytes); at 48 such an
 * id was cut to 47 bytes where it was copied (a project's keys then named
 * another project). */
#define ID_LEN 72
void id_new(const char *prefix, char out[ID_LEN]);
/* Fills buf with n cryptographically random bytes (OpenSSL); aborts on failure. */
void random_bytes(void *buf, size_t n);

/* Lower-case hex of n bytes into out (2n+1 bytes). */
void hex_encode(const unsigned char *in, size_t n, char *out);

/* FNV-1a hash of a NUL-terminated string, for in-memory hash tables (not
 * for anything an attacker may choose to collide on purpose). */
size_t str_hash(const char *s);

/* True when the two byte strings are equal; time depends only on the length. */
bool ct_equal(const void *a, const void *b, size_t n);

/* Percent-encodes everything but unreserved characters (malloc'd). */
char *url_escape(const char *s);

/* Strict integer parse of a whole string; 0 or -EINVAL/-ERANGE. */
int parse_i64(const char *s, int64_t *out);

/* Test-only holds: when the environment variable env names a path that
 * exists, creates <path>.reached and waits (at most a minute) while the
 * path exists, so a test can act (or kill quernd) at that point. */
void test_hold_at(const char *env);

/* Writes all n bytes at p to fd, through short writes and EINTR: 0, or a
 * negative errno (-EIO for a write that wrote nothing). */
int fd_write_all(int fd, const void *p, size_t n);

/* Copies the whole file on in, from its start, to out at out's offset.  in
 * is read with pread, so its offset does not move and threads may share
 * it (not a pipe).  0 or a negative errno. */
int fd_copy(int in, int out);

#endif
