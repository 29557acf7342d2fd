/*
 * jload — a faster json_loadb for the documents the store reads back.
 *
 * Why by hand: jansson's parser pulls its input one byte at a time through a
 * stream callback, copies every string through a growable buffer and checks
 * UTF-8 per character; on run and task documents that made json_loadb a
 * fifth of quernd's instructions (BENCHMARKS.md, bench/callgrind.sh).  This
 * scans the text in place and builds the same jansson values (strings
 * without escapes straight from the text, keys with their length).
 *
 * It never decides differently from jansson: whatever it does not take on
 * its fast path — any syntax error, an escaped NUL, invalid UTF-8, a number
 * out of range or longer than 63 characters, nesting deeper than
 * JLOAD_MAX_DEPTH — hands the whole text to json_loadb, whose result (or
 * failure) is returned.  Pure; safe on any thread.
 */
#include "jload.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jdump.h"
#include "util.h"

#define JLOAD_MAX_DEPTH 256

struct parser {
    const char *s, *end;
    bool no_dups;     /* JSON_REJECT_DUPLICATES */
    struct buf tmp;   /* unescaped strings */
    const char *const *fields;   /* jload_fields: the top-level keys kept; NULL: all */
};

static json_t *value(struct parser *p, int depth);
static bool skip_value(struct parser *p, int depth);
static bool wanted(const char *const *fields, const char *k, size_t klen);

static void skip_ws(struct parser *p)
{
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\n' || *p->s == '\r' || *p->s == '\t'))
        p->s++;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static void put_utf8(struct buf *b, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | cp >> 6);
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | cp >> 12);
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | cp >> 18);
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    buf_append(b, u, n);
}

/* The string at p->s (just after its opening quote): *out and *len point into
 * the text when it has no escape, else into p->tmp.  -1 to fall back. */
static int string(struct parser *p, const char **out, size_t *len)
{
    const unsigned char *s = (const unsigned char *)p->s, *end = (const unsigned char *)p->end;
    const unsigned char *start = s;
    /* the common case: no escape until the closing quote */
    while (s < end) {
        unsigned c = *s;
        if (c == '"') {
            *out = (const char *)start;
            *len = (size_t)(s - start);
            p->s = (const char *)s + 1;
            return 0;
        }
        if (c == '\\')
            break;
        if (c < 0x20)
            return -1;
        if (c >= 0x80) {
            size_t n = jdump_utf8_len(s, end);
            if (!n)
                return -1;
            s += n;
        } else {
            s++;
        }
    }
    if (s >= end)
        return -1;
    /* escapes: unescape into tmp */
    p->tmp.len = 0;
    buf_append(&p->tmp, (const char *)start, (size_t)(s - start));
    while (s < end) {
        unsigned c = *s;
        if (c == '"') {
            *out = p->tmp.data;
            *len = p->tmp.len;
            p->s = (const char *)s + 1;
            return 0;
        }
        if (c < 0x20)
            return -1;
        if (c >= 0x80) {
            size_t n = jdump_utf8_len(s, end);
            if (!n)
                return -1;
            buf_append(&p->tmp, (const char *)s, n);
            s += n;
            continue;
        }
        if (c != '\\') {
            buf_append(&p->tmp, (const char *)s, 1);
            s++;
            continue;
        }
        if (end - s < 2)
            return -1;
        char e = (char)s[1];
        char one = 0;
        switch (e) {
        case '"': one = '"'; break;
        case '\\': one = '\\'; break;
        case '/': one = '/'; break;
        case 'b': one = '\b'; break;
        case 'f': one = '\f'; break;
        case 'n': one = '\n'; break;
        case 'r': one = '\r'; break;
        case 't': one = '\t'; break;
        case 'u': break;
        default: return -1;
        }
        if (one) {
            buf_append(&p->tmp, &one, 1);
            s += 2;
            continue;
        }
        unsigned cp;
        if (end - s < 6 || hex4((const char *)s + 2, &cp))
            return -1;
        s += 6;
        if (cp == 0)
            return -1;   /* jansson refuses \u0000 without JSON_ALLOW_NUL */
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            unsigned lo;
            if (end - s < 6 || s[0] != '\\' || s[1] != 'u' || hex4((const char *)s + 2, &lo) ||
                lo < 0xDC00 || lo > 0xDFFF)
                return -1;
            s += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return -1;
        }
        put_utf8(&p->tmp, cp);
    }
    return -1;
}

static json_t *number(struct parser *p)
{
    const char *s = p->s, *start = s, *end = p->end;
    bool real = false;
    if (s < end && *s == '-')
        s++;
    if (s >= end)
        return NULL;
    if (*s == '0') {
        s++;
    } else if (*s >= '1' && *s <= '9') {
        while (s < end && *s >= '0' && *s <= '9')
            s++;
    } else {
        return NULL;
    }
    if (s < end && *s == '.') {
        real = true;
        s++;
        if (s >= end || *s < '0' || *s > '9')
            return NULL;
        while (s < end && *s >= '0' && *s <= '9')
            s++;
    }
    if (s < end && (*s == 'e' || *s == 'E')) {
        real = true;
        s++;
        if (s < end && (*s == '+' || *s == '-'))
            s++;
        if (s >= end || *s < '0' || *s > '9')
            return NULL;
        while (s < end && *s >= '0' && *s <= '9')
            s++;
    }
    size_t n = (size_t)(s - start);
    char tmp[64];
    if (n >= sizeof tmp)
        return NULL;
    memcpy(tmp, start, n);
    tmp[n] = 0;
    p->s = s;
    errno = 0;
    if (!real) {
        char *e;
        long long v = strtoll(tmp, &e, 10);
        if (errno || *e)
            return NULL;   /* out of range: jansson's error */
        return json_integer(v);
    }
    char *e;
    double d = strtod(tmp, &e);
    if (*e || (errno == ERANGE && fabs(d) > 1.0) || isinf(d))
        return NULL;   /* overflow: jansson's error; underflow it takes */
    return json_real(d);
}

static json_t *object(struct parser *p, int depth)
{
    json_t *o = json_object();
    skip_ws(p);
    if (p->s < p->end && *p->s == '}') {
        p->s++;
        return o;
    }
    for (;;) {
        if (p->s >= p->end || *p->s != '"')
            goto fail;
        p->s++;
        const char *k;
        size_t klen;
        if (string(p, &k, &klen))
            goto fail;
        if (depth == 0 && p->fields && !wanted(p->fields, k, klen)) {
            /* jload_fields: a top-level key not asked for is stepped over */
            skip_ws(p);
            if (p->s >= p->end || *p->s != ':')
                goto fail;
            p->s++;
            skip_ws(p);
            if (!skip_value(p, depth + 1))
                goto fail;
            goto next;
        }
        /* the key may live in tmp, which the value reuses: copy short keys */
        char kbuf[128];
        char *key = kbuf;
        if (klen >= sizeof kbuf)
            key = xmalloc(klen + 1);
        memcpy(key, k, klen);
        key[klen] = 0;
        skip_ws(p);
        if (p->s >= p->end || *p->s != ':') {
            if (key != kbuf)
                free(key);
            goto fail;
        }
        p->s++;
        skip_ws(p);
        json_t *v = value(p, depth + 1);
        if (v && p->no_dups && json_object_getn(o, key, klen)) {
            json_decref(v);
            v = NULL;   /* jansson's "duplicate object key" */
        }
        if (!v || json_object_setn_new_nocheck(o, key, klen, v)) {
            if (key != kbuf)
                free(key);
            goto fail;
        }
        if (key != kbuf)
            free(key);
    next:
        skip_ws(p);
        if (p->s < p->end && *p->s == ',') {
            p->s++;
            skip_ws(p);
            continue;
        }
        if (p->s < p->end && *p->s == '}') {
            p->s++;
            return o;
        }
        goto fail;
    }
fail:
    json_decref(o);
    return NULL;
}

static json_t *array(struct parser *p, int depth)
{
    json_t *a = json_array();
    skip_ws(p);
    if (p->s < p->end && *p->s == ']') {
        p->s++;
        return a;
    }
    for (;;) {
        json_t *v = value(p, depth + 1);
        if (!v || json_array_append_new(a, v))
            goto fail;
        skip_ws(p);
        if (p->s < p->end && *p->s == ',') {
            p->s++;
            skip_ws(p);
            continue;
        }
        if (p->s < p->end && *p->s == ']') {
            p->s++;
            return a;
        }
        goto fail;
    }
fail:
    json_decref(a);
    return NULL;
}

static bool word(struct parser *p, const char *w, size_t n)
{
    if ((size_t)(p->end - p->s) < n || memcmp(p->s, w, n))
        return false;
    p->s += n;
    return true;
}

static json_t *value(struct parser *p, int depth)
{
    if (depth > JLOAD_MAX_DEPTH || p->s >= p->end)
        return NULL;
    switch (*p->s) {
    case '{':
        p->s++;
        return object(p, depth);
    case '[':
        p->s++;
        return array(p, depth);
    case '"': {
        p->s++;
        const char *v;
        size_t n;
        if (string(p, &v, &n))
            return NULL;
        return json_stringn_nocheck(v, n);
    }
    case 't':
        return word(p, "true", 4) ? json_true() : NULL;
    case 'f':
        return word(p, "false", 5) ? json_false() : NULL;
    case 'n':
        return word(p, "null", 4) ? json_null() : NULL;
    default:
        return number(p);
    }
}

/* Steps over one value without building it (for jload_fields); false on
 * anything the fast path does not take. */
static bool skip_value(struct parser *p, int depth)
{
    if (depth > JLOAD_MAX_DEPTH || p->s >= p->end)
        return false;
    char c = *p->s;
    if (c == '"') {
        p->s++;
        const char *v;
        size_t n;
        return string(p, &v, &n) == 0;
    }
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        p->s++;
        skip_ws(p);
        if (p->s < p->end && *p->s == close) {
            p->s++;
            return true;
        }
        for (;;) {
            if (c == '{') {
                const char *k;
                size_t klen;
                if (p->s >= p->end || *p->s != '"')
                    return false;
                p->s++;
                if (string(p, &k, &klen))
                    return false;
                skip_ws(p);
                if (p->s >= p->end || *p->s != ':')
                    return false;
                p->s++;
                skip_ws(p);
            }
            if (!skip_value(p, depth + 1))
                return false;
            skip_ws(p);
            if (p->s < p->end && *p->s == ',') {
                p->s++;
                skip_ws(p);
                continue;
            }
            if (p->s < p->end && *p->s == close) {
                p->s++;
                return true;
            }
            return false;
        }
    }
    json_t *v = value(p, depth);   /* a number or a literal: nothing to spare */
    json_decref(v);
    return v != NULL;
}

static bool wanted(const char *const *fields, const char *k, size_t klen)
{
    for (const char *const *f = fields; *f; f++)
        if ((*f)[0] == k[0] && strlen(*f) == klen && !memcmp(*f, k, klen))
            return true;
    return false;
}

/* The fast path over the whole text: a value starting with one of `starts`
 * (any value when NULL), then nothing but white space; else NULL. */
static json_t *parse_whole(struct parser *p, const char *starts)
{
    buf_init(&p->tmp);
    skip_ws(p);
    json_t *v = NULL;
    if (p->s < p->end && (!starts || (*p->s && strchr(starts, *p->s))))
        v = value(p, 0);
    if (v) {
        skip_ws(p);
        if (p->s != p->end) {
            json_decref(v);
            v = NULL;
        }
    }
    buf_release(&p->tmp);
    return v;
}

json_t *jload_fields(const char *text, size_t len, const char *const *fields)
{
    struct parser p = {text, text + len, false, {0}, fields};
    json_t *v = parse_whole(&p, "{");
    /* whatever the fast path does not take: the whole document, which holds
     * every wanted field too (or NULL when it is not JSON) */
    return v ? v : jload(text, len, 0);
}

json_t *jload(const char *text, size_t len, size_t flags)
{
    struct parser p = {text, text + len, (flags & JSON_REJECT_DUPLICATES) != 0, {0}, NULL};
    json_t *v = parse_whole(&p, (flags & JSON_DECODE_ANY) ? NULL : "{[");
    if (v)
        return v;
    return json_loadb(text, len, flags, NULL);
}

const char *jload_error_text(const json_error_t *e)
{
    if (strstr(e->text, "JSON_ALLOW_NUL"))
        return "\\u0000 (NUL) is not allowed in a string";
    if (strstr(e->text, "too big integer"))
        return "an integer out of range (integers must be from -2^63 to 2^63-1; a larger "
               "number can be given as a string or with a fraction or exponent)";
    if (strstr(e->text, "too big negative integer"))
        return "an integer out of range (integers must be from -2^63 to 2^63-1)";
    return e->text;
}
