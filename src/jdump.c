/*
 * jdump — a faster json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY).
 *
 * jansson's dumper checks for reference loops with a hash table keyed by
 * snprintf("%p") of every container, and formats every integer with
 * snprintf; on run and task documents that is most of its cost.  This
 * writes the same bytes (insertion order, compact separators, jansson's
 * escapes) straight into one buffer.  Reals differ on purpose: jansson
 * writes 17 significant digits, so a client's 0.3 came back as
 * 0.29999999999999999; jdump writes the fewest digits that read back as
 * the same double (jdump_real).  Anything unusual
 * (nesting deeper than JDUMP_MAX_DEPTH, which also stands for a loop, or a
 * string that is not valid UTF-8) falls back to json_dumps itself, reals
 * and all.  Pure functions (but for jdump_real's caches of answers);
 * safe on any thread for values no other thread changes meanwhile.
 */
#include "jdump.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JDUMP_MAX_DEPTH 512

/* The capacity check inline: buf_reserve is a call into util.c, and put is
 * called for every token. */
static void put(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap)
        buf_reserve(b, n);
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static void put_c(struct buf *b, char c)
{
    if (b->len + 2 > b->cap)
        buf_reserve(b, 1);
    b->data[b->len++] = c;
}

static void put_int(struct buf *b, json_int_t v)
{
    char tmp[24];
    char *p = tmp + sizeof tmp;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    put(b, p, (size_t)(tmp + sizeof tmp - p));
}

/* v as "%.*g" at precision prec, in jansson's form: ".0" added to what
 * has neither a point nor an exponent, the exponent without its "+" and
 * leading zeros.  s holds JDUMP_REAL_MAX bytes; returns the length. */
static size_t real_form(char *s, double v, int prec)
{
    int n = snprintf(s, JDUMP_REAL_MAX - 3, "%.*g", prec, v);
    size_t len = n < 0 ? 0 : (size_t)n;
    if (!strchr(s, '.') && !strchr(s, 'e')) {
        s[len++] = '.';
        s[len++] = '0';
        s[len] = 0;
    }
    char *start = strchr(s, 'e');
    if (start) {
        start++;
        char *end = start + 1;
        if (*start == '-')
            start++;
        while (*end == '0')
            end++;
        if (end != start) {
            memmove(start, end, len - (size_t)(end - s) + 1);
            len -= (size_t)(end - start);
        }
    }
    return len;
}

/* The shortest form, found by formatting (see jdump_real). */
static size_t real_shortest(char *s, double v);

/* jdump_real's last answers on this thread: a document is written several
 * times as a request goes (its row, its event, the answer) and its reals
 * with it, and each format costs a few thousand instructions. */
#define REAL_CACHE 4
static __thread struct {
    uint64_t bits;
    unsigned char len;
    char s[JDUMP_REAL_MAX];
} real_cache[REAL_CACHE];
static __thread unsigned real_cache_next;

/* Behind it, one shared by the threads: a document's reals are written by
 * the thread that stores it, then by the ones that answer a lease or a
 * report of it (a job's input `ts` missed three times in four per job,
 * ~5 k instructions each).  Direct-mapped by the value's bits. */
#define REAL_SHARED 256
static struct {
    uint64_t bits;
    unsigned char len;
    char s[JDUMP_REAL_MAX];
} real_shared[REAL_SHARED];
static pthread_mutex_t real_shared_mu = PTHREAD_MUTEX_INITIALIZER;

static unsigned real_slot(uint64_t bits)
{
    bits ^= bits >> 29;
    bits *= 0xbf58476d1ce4e5b9ULL;
    return (unsigned)(bits >> 56) % REAL_SHARED;
}

size_t jdump_real(char *s, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    for (int i = 0; i < REAL_CACHE; i++) {
        if (real_cache[i].len && real_cache[i].bits == bits) {
            memcpy(s, real_cache[i].s, (size_t)real_cache[i].len + 1);
            return real_cache[i].len;
        }
    }
    unsigned slot = real_slot(bits);
    size_t len = 0;
    pthread_mutex_lock(&real_shared_mu);
    if (real_shared[slot].len && real_shared[slot].bits == bits) {
        len = real_shared[slot].len;
        memcpy(s, real_shared[slot].s, len + 1);
    }
    pthread_mutex_unlock(&real_shared_mu);
    if (!len) {
        len = real_shortest(s, v);
        pthread_mutex_lock(&real_shared_mu);
        real_shared[slot].bits = bits;
        real_shared[slot].len = (unsigned char)len;
        memcpy(real_shared[slot].s, s, len + 1);
        pthread_mutex_unlock(&real_shared_mu);
    }
    unsigned k = real_cache_next++ % REAL_CACHE;
    real_cache[k].bits = bits;
    real_cache[k].len = (unsigned char)len;
    memcpy(real_cache[k].s, s, len + 1);
    return len;
}

static size_t real_shortest(char *s, double v)
{
    if (v == 0 && !signbit(v))
        return (size_t)snprintf(s, JDUMP_REAL_MAX, "0.0");
    /* The fewest digits that read back as v.  %g turns to an exponent from
     * 1e15 on, where jansson's 17 digits still write 1111111111111110.0
     * shorter than 1.11111111111111e15: then the shorter form of the two.
     * Without an exponent, a form of 15 or 16 digits that reads back is
     * never longer than the 17-digit one (same style, no fewer digits), so
     * the usual values take one or two formats, not three. */
    char t15[JDUMP_REAL_MAX], t16[JDUMP_REAL_MAX], j[JDUMP_REAL_MAX];
    size_t len15 = real_form(t15, v, 15), len16 = 0;
    bool ok15 = strtod(t15, NULL) == v, ok16 = false, have16 = false;
    if (ok15 && !memchr(t15, 'e', len15)) {
        memcpy(s, t15, len15 + 1);
        return len15;
    }
    if (!ok15) {
        len16 = real_form(t16, v, 16);
        ok16 = strtod(t16, NULL) == v;
        have16 = true;
        if (ok16 && !memchr(t16, 'e', len16)) {
            memcpy(s, t16, len16 + 1);
            return len16;
        }
    }
    size_t jlen = real_form(j, v, 17);
    if (ok15 && len15 <= jlen) {
        memcpy(s, t15, len15 + 1);
        return len15;
    }
    if (!have16) {
        len16 = real_form(t16, v, 16);
        ok16 = strtod(t16, NULL) == v;
    }
    if (ok16 && len16 <= jlen) {
        memcpy(s, t16, len16 + 1);
        return len16;
    }
    memcpy(s, j, jlen + 1);
    return jlen;
}

static void put_real(struct buf *b, double v)
{
    char s[JDUMP_REAL_MAX];
    size_t len = jdump_real(s, v);
    put(b, s, len);
}

size_t jdump_utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    size_t n;
    unsigned cp;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

/* Bytes copied as they are inside a string: ASCII from 0x20 but '"' (0x22)
 * and '\\' (0x5C).  Range designators are a GCC/Clang extension. */
static const unsigned char plain[256] = {[0x20 ... 0x21] = 1, [0x23 ... 0x5B] = 1,
                                         [0x5D ... 0x7F] = 1};

/* True when none of the 8 bytes of w needs more than a copy: each is
 * ASCII from 0x20 and neither '"' nor '\\'.  The zero-byte tests may flag a
 * plain byte above a flagged one (a borrow), never miss one: a flagged word
 * is only looked at a byte at a time. */
static bool word_plain(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    uint64_t q = w ^ (ones * '"'), bs = w ^ (ones * '\\');
    uint64_t flagged = (w & high) | ((w - ones * 0x20) & ~w & high) | ((q - ones) & ~q & high) |
                       ((bs - ones) & ~bs & high);
    return !flagged;
}

static int put_str(struct buf *b, const char *str, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)str, *end = p + len;
    if (b->len + len + 3 > b->cap)
        buf_reserve(b, len + 2);
    b->data[b->len++] = '"';
    while (p < end) {
        const unsigned char *run = p;
        /* eight bytes at a time while all are plain (ids, times, keys) */
        for (uint64_t w; end - p >= 8 && (memcpy(&w, p, 8), word_plain(w));)
            p += 8;
        while (p < end && plain[*p])
            p++;
        if (p > run)
            put(b, (const char *)run, (size_t)(p - run));
        if (p >= end)
            break;
        unsigned c = *p;
        if (c >= 0x80) {
            size_t n = jdump_utf8_len(p, end);
            if (!n)
                return -1;
            put(b, (const char *)p, n);
            p += n;
            continue;
        }
        char esc[6] = {'\\', 0, '0', '0', 0, 0};
        size_t n = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            n = 6;
        }
        put(b, esc, n);
        p++;
    }
    put_c(b, '"');
    return 0;
}

static int dump(struct buf *b, const json_t *v, int depth)
{
    if (depth > JDUMP_MAX_DEPTH)
        return -1;
    switch (json_typeof(v)) {
    case JSON_NULL: put(b, "null", 4); return 0;
    case JSON_TRUE: put(b, "true", 4); return 0;
    case JSON_FALSE: put(b, "false", 5); return 0;
    case JSON_INTEGER: put_int(b, json_integer_value(v)); return 0;
    case JSON_REAL: put_real(b, json_real_value(v)); return 0;
    case JSON_STRING: return put_str(b, json_string_value(v), json_string_length(v));
    case JSON_ARRAY: {
        put_c(b, '[');
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n; i++) {
            if (i)
                put_c(b, ',');
            if (dump(b, json_array_get(v, i), depth + 1))
                return -1;
        }
        put_c(b, ']');
        return 0;
    }
    case JSON_OBJECT: {
        put_c(b, '{');
        bool first = true;
        for (void *it = json_object_iter((json_t *)v); it;
             it = json_object_iter_next((json_t *)v, it)) {
            if (!first)
                put_c(b, ',');
            first = false;
            if (put_str(b, json_object_iter_key(it), json_object_iter_key_len(it)))
                return -1;
            put_c(b, ':');
            if (dump(b, json_object_iter_value(it), depth + 1))
                return -1;
        }
        put_c(b, '}');
        return 0;
    }
    }
    return -1;
}

int jdump_buf(struct buf *b, const json_t *v)
{
    size_t mark = b->len;
    if (v && !dump(b, v, 0)) {
        buf_reserve(b, 0);
        b->data[b->len] = 0;
        return 0;
    }
    b->len = mark;
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (!s) {
        if (b->data)
            b->data[b->len] = 0;
        return -1;
    }
    buf_append(b, s, strlen(s));
    free(s);
    return 0;
}

char *jdump(const json_t *v, size_t *len)
{
    struct buf b;
    buf_init(&b);
    /* a task document is ~1.1 KB: room for it without growing */
    buf_reserve(&b, 2048);
    if (jdump_buf(&b, v)) {
        buf_release(&b);
        return NULL;
    }
    if (len)
        *len = b.len;
    return buf_steal(&b);
}
