/* util — allocation policy, byte buffers, clocks, RFC 3339, ids, file writes.
 * Thread-safe. */
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#include <openssl/rand.h>

int64_t util_fake_now_ms;

static void oom(size_t n)
{
    fprintf(stderr, "quern: out of memory allocating %zu bytes\n", n);
    abort();
}

void die_invariant_at(const char *file, int line, const char *what, int err)
{
    fprintf(stderr, "quern: %s:%d: broken invariant: %s (%s)\n", file, line, what,
            err ? strerror(err) : "no errno");
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

char *xvasprintf(const char *fmt, va_list ap)
{
    struct buf b;
    buf_init(&b);
    buf_vprintf(&b, fmt, ap);
    return buf_steal(&b);
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = xvasprintf(fmt, ap);
    va_end(ap);
    return s;
}

void buf_init(struct buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void buf_release(struct buf *b)
{
    free(b->data);
    buf_init(b);
}

void buf_reserve(struct buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1)
        cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

void buf_append(struct buf *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void buf_puts(struct buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

void buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    buf_reserve(b, 64);
    int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    if (n < 0) {
        va_end(ap2);
        return;
    }
    if ((size_t)n >= b->cap - b->len) {
        buf_reserve(b, (size_t)n);
        vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap2);
    }
    va_end(ap2);
    b->len += (size_t)n;
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(b, fmt, ap);
    va_end(ap);
}

char *buf_steal(struct buf *b)
{
    char *p = b->data;
    if (!p)
        p = xstrdup("");
    buf_init(b);
    return p;
}

int64_t now_ms(void)
{
    if (util_fake_now_ms)
        return util_fake_now_ms;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void mono_deadline(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

void rfc3339_format(int64_t ms, char out[RFC3339_LEN])
{
    time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    int frac = (int)(ms - (int64_t)secs * 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    /* "%04u-%02u-%02uT%02u:%02u:%02u.%03uZ" written digit by digit (every
     * stored document carries several timestamps; snprintf was 3 % of a
     * create's instructions).  Each field is clamped to its width. */
    const unsigned f[7] = {(unsigned)(tm.tm_year + 1900) % 10000u, (unsigned)(tm.tm_mon + 1) % 100u,
                           (unsigned)tm.tm_mday % 100u,            (unsigned)tm.tm_hour % 100u,
                           (unsigned)tm.tm_min % 100u,             (unsigned)tm.tm_sec % 100u,
                           (unsigned)frac % 1000u};
    static const int width[7] = {4, 2, 2, 2, 2, 2, 3};
    static const char sep[7] = {'-', '-', 'T', ':', ':', '.', 'Z'};
    char *p = out;
    for (int i = 0; i < 7; i++) {
        unsigned v = f[i];
        for (int d = width[i] - 1; d >= 0; d--) {
            p[d] = (char)('0' + v % 10);
            v /= 10;
        }
        p += width[i];
        *p++ = sep[i];
    }
    *p = 0;
}

static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if ((*p)[i] < '0' || (*p)[i] > '9')
            return -EINVAL;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

int rfc3339_parse(const char *s, int64_t *ms)
{
    int y, mo, d, h, mi, sec, frac = 0;
    const char *p = s;
    if (!s || digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
        digits(&p, 2, &d))
        return -EINVAL;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return -EINVAL;
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' ||
        digits(&p, 2, &sec))
        return -EINVAL;
    if (*p == '.') {
        p++;
        int n = 0;
        while (*p >= '0' && *p <= '9') {
            if (n < 3)
                frac = frac * 10 + (*p - '0');
            n++;
            p++;
        }
        if (n == 0)
            return -EINVAL;
        for (; n < 3; n++)
            frac *= 10;
    }
    int off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh, om;
        p++;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 || om > 59)
            return -EINVAL;
        off = sign * (oh * 60 + om);
    } else {
        return -EINVAL;
    }
    if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return -EINVAL;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (d > mdays[mo - 1])
        return -EINVAL;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo == 2 && d == 29 && !leap)
        return -EINVAL;
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec == 60 ? 59 : sec;
    time_t t = timegm(&tm);
    *ms = ((int64_t)t - (int64_t)off * 60) * 1000 + frac;
    return 0;
}

void random_bytes(void *buf, size_t n)
{
    if (RAND_bytes(buf, (int)n) != 1) {
        fprintf(stderr, "quern: RAND_bytes failed\n");
        abort();
    }
}

void id_new(const char *prefix, char out[ID_LEN])
{
    /* Crockford-style base32, lower case: 20 chars = 100 bits of randomness.
     * The first 8 chars encode the millisecond clock so ids sort roughly by
     * creation time, which keeps B-tree inserts local. */
    static const char alphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";
    /* RAND_bytes per id was 3 % of a create's instructions: each thread
     * draws 384 bytes (32 ids) at a time */
    static __thread unsigned char pool[384];
    static __thread size_t used = sizeof pool;
    if (used + 12 > sizeof pool) {
        random_bytes(pool, sizeof pool);
        used = 0;
    }
    unsigned char rnd[12];
    memcpy(rnd, pool + used, sizeof rnd);
    explicit_bzero(pool + used, sizeof rnd);
    used += sizeof rnd;
    uint64_t t = (uint64_t)now_ms();
    size_t n = strlen(prefix);
    if (n > ID_LEN - 24)
        n = ID_LEN - 24;
    memcpy(out, prefix, n);
    out[n++] = '_';
    for (int i = 9; i >= 0; i--) {
        out[n + (size_t)i] = alphabet[t & 31];
        t >>= 5;
    }
    n += 10;
    for (int i = 0; i < 12; i++)
        out[n++] = alphabet[rnd[i] & 31];
    out[n] = 0;
}

size_t str_hash(const char *s)
{
    size_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

void hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[in[i] >> 4];
        out[2 * i + 1] = hx[in[i] & 15];
    }
    out[2 * n] = 0;
}

bool ct_equal(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= x[i] ^ y[i];
    return d == 0;
}

int parse_i64(const char *s, int64_t *out)
{
    if (!s || !*s)
        return -EINVAL;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end)
        return -EINVAL;
    if (errno == ERANGE)
        return -ERANGE;
    *out = v;
    return 0;
}

char *url_escape(const char *s)
{
    static const char hx[] = "0123456789ABCDEF";
    struct buf b;
    buf_init(&b);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            buf_append(&b, p, 1);
        } else {
            char e[3] = {'%', hx[*p >> 4], hx[*p & 15]};
            buf_append(&b, e, 3);
        }
    }
    return buf_steal(&b);
}

int fd_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int fd_copy(int in, int out)
{
    const size_t cap = 64 * 1024;
    char *buf = xmalloc(cap);
    int rc = 0;
    for (off_t off = 0;;) {
        ssize_t n = pread(in, buf, cap, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            break;
        }
        if (n == 0 || (rc = fd_write_all(out, buf, (size_t)n)))
            break;
        off += n;
    }
    free(buf);
    return rc;
}

void test_hold_at(const char *env)
{
    const char *hold = getenv(env);
    if (!hold || !*hold || access(hold, F_OK))
        return;
    char *reached = xasprintf("%s.reached", hold);
    int fd = open(reached, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
    free(reached);
    for (int i = 0; i < 6000 && !access(hold, F_OK); i++)
        usleep(10000);
}
