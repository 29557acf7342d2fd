/*
 * jsonschema — the JSON Schema subset described in jsonschema.h: a checker
 * for schemas (run when a schema is stored) and a validator for instances
 * (run on task input and output).
 *
 * Both walk the schema recursively; recursion is bounded by
 * JSONSCHEMA_MAX_DEPTH subschemas, and the validator also counts its work
 * against JSONSCHEMA_MAX_STEPS, because a schema comes from an API user and
 * anyOf/oneOf nested a few dozen levels deep would otherwise take exponential
 * time.  Hitting a limit is a failure that anyOf/oneOf do not swallow.
 *
 * No mutable globals (the C locale object patterns run in is made once):
 * every call keeps its state (path buffer, first error, compiled patterns) in
 * a context on its own stack, so any thread may call in.
 */
#include "jsonschema.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <regex.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jdump.h"
#include "util.h"

/* jansson's iteration API takes non-const pointers although iterating does
 * not modify anything; this is the one place constness is cast away. */
#define MUT(v) ((json_t *)(v))

/* Error messages quote schema values up to this many bytes. */
#define QUOTE_MAX 120

/* ---- paths --------------------------------------------------------------- */

static bool is_ident(const char *k)
{
    if (!*k || (*k >= '0' && *k <= '9'))
        return false;
    for (; *k; k++)
        if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') ||
              (*k >= '0' && *k <= '9') || *k == '_' || *k == '$'))
            return false;
    return true;
}

/* Appends an object key to a path: ".key" (or "key" at the very start of a
 * keyword path) when it is identifier-like, otherwise ["key"] with " and \
 * escaped and control characters as \u00XX. */
static void path_key(struct buf *b, const char *key)
{
    if (is_ident(key)) {
        if (b->len)
            buf_puts(b, ".");
        buf_puts(b, key);
        return;
    }
    buf_puts(b, "[\"");
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        if (*p == '"' || *p == '\\')
            buf_printf(b, "\\%c", *p);
        else if (*p < 0x20)
            buf_printf(b, "\\u%04x", *p);
        else
            buf_append(b, p, 1);
    }
    buf_puts(b, "\"]");
}

static void path_index(struct buf *b, size_t i)
{
    buf_printf(b, "[%zu]", i);
}

static void path_trunc(struct buf *b, size_t len)
{
    b->len = len;
    if (b->data)
        b->data[len] = 0;
}

/* ---- shared keyword helpers -------------------------------------------------- */

enum {
    T_NULL = 1,
    T_BOOLEAN = 2,
    T_OBJECT = 4,
    T_ARRAY = 8,
    T_NUMBER = 16,
    T_STRING = 32,
    T_INTEGER = 64,
};

static const struct {
    const char *name;
    unsigned bit;
} type_names[] = {
    {"null", T_NULL},       {"boolean", T_BOOLEAN}, {"object", T_OBJECT}, {"array", T_ARRAY},
    {"number", T_NUMBER},   {"string", T_STRING},   {"integer", T_INTEGER},
};

static unsigned type_bit(const char *name)
{
    for (size_t i = 0; i < ARRAY_LEN(type_names); i++)
        if (strcmp(name, type_names[i].name) == 0)
            return type_names[i].bit;
    return 0;
}

/* Parses a "type" value (a name or a non-empty array of names) into a mask. */
static int parse_type(const json_t *t, unsigned *mask)
{
    *mask = 0;
    if (json_is_string(t)) {
        *mask = type_bit(json_string_value(t));
        return *mask ? 0 : -EINVAL;
    }
    if (!json_is_array(t) || json_array_size(t) == 0)
        return -EINVAL;
    for (size_t i = 0; i < json_array_size(t); i++) {
        const json_t *e = json_array_get(t, i);
        unsigned bit = json_is_string(e) ? type_bit(json_string_value(e)) : 0;
        if (!bit)
            return -EINVAL;
        *mask |= bit;
    }
    return 0;
}

static bool is_integral(const json_t *v)
{
    if (json_is_integer(v))
        return true;
    if (!json_is_real(v))
        return false;
    double d = json_real_value(v);
    return isfinite(d) && floor(d) == d;
}

static bool type_ok(unsigned mask, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL:
        return mask & T_NULL;
    case JSON_TRUE:
    case JSON_FALSE:
        return mask & T_BOOLEAN;
    case JSON_OBJECT:
        return mask & T_OBJECT;
    case JSON_ARRAY:
        return mask & T_ARRAY;
    case JSON_STRING:
        return mask & T_STRING;
    case JSON_INTEGER:
        return mask & (T_INTEGER | T_NUMBER);
    case JSON_REAL:
        return (mask & T_NUMBER) || ((mask & T_INTEGER) && is_integral(v));
    }
    return false;
}

static const char *type_of(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL:
        return "null";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    }
    return "?";
}

/* "string", "string or null", in the order of type_names. */
static void type_list(struct buf *b, unsigned mask)
{
    bool first = true;
    for (size_t i = 0; i < ARRAY_LEN(type_names); i++) {
        if (!(mask & type_names[i].bit))
            continue;
        buf_printf(b, "%s%s", first ? "" : " or ", type_names[i].name);
        first = false;
    }
}

/* A non-negative integer count (minLength, maxItems, ...); 2.0 counts as 2. */
static int get_count(const json_t *v, json_int_t *out)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = json_integer_value(v);
        return 0;
    }
    if (json_is_real(v) && is_integral(v) && json_real_value(v) >= 0 && json_real_value(v) < 9.2e18) {
        *out = (json_int_t)json_real_value(v);
        return 0;
    }
    return -EINVAL;
}

/* long double holds every int64 and every double exactly on the platforms
 * quern builds for (x86-64 80-bit, aarch64 128-bit), so mixed comparisons
 * such as 9007199254740993 vs 9007199254740992.0 come out right. */
static long double num_value(const json_t *v)
{
    return json_is_integer(v) ? (long double)json_integer_value(v)
                              : (long double)json_real_value(v);
}

/* True when v nests containers deeper than limit (stops looking early). */
static bool nested_deeper(const json_t *v, int limit)
{
    if (!json_is_object(v) && !json_is_array(v))
        return false;
    if (limit <= 0)
        return true;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if (nested_deeper(json_array_get(v, i), limit - 1))
                return true;
        return false;
    }
    const char *k;
    json_t *e;
    json_object_foreach (MUT(v), k, e)
        if (nested_deeper(e, limit - 1))
            return true;
    return false;
}

/* Number of Unicode code points in a (valid UTF-8) jansson string. */
static size_t utf8_count(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xc0) != 0x80)
            c++;
    return c;
}

/* A compact rendering of a schema value for messages, cut at QUOTE_MAX. */
static char *quote(const json_t *v)
{
    char *s = jdump(v, NULL);
    if (!s)
        return xstrdup("?");
    if (strlen(s) > QUOTE_MAX) {
        char *t = xasprintf("%.*s...", QUOTE_MAX, s);
        free(s);
        return t;
    }
    return s;
}

/* A number for messages: integers exactly, reals in the shortest of %.15g
 * and %.17g that reads back as the same double. */
static char *num_str(const json_t *v)
{
    if (json_is_integer(v))
        return xasprintf("%lld", (long long)json_integer_value(v));
    double d = json_real_value(v);
    char *s = xasprintf("%.15g", d);
    if (strtod(s, NULL) != d) {
        free(s);
        s = xasprintf("%.17g", d);
    }
    return s;
}

/* ---- patterns ---------------------------------------------------------------- */

static int pattern_error(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int pattern_error(char **err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    *err = xvasprintf(fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* Rewrites the ECMA-262 spellings people write in JSON Schema patterns into
 * POSIX ERE, refusing what ERE cannot express rather than letting regcomp
 * read it differently (glibc would take "\d" as a plain "d"). */
/* Length of an ECMA/ERE interval quantifier "{n}", "{n,}" or "{n,m}" at s
 * (s[0] == '{'), or 0 when the text there is not one (a literal brace). */
static size_t interval_len(const char *s, size_t n)
{
    size_t i = 1;
    bool digits = false, comma = false;
    while (i < n && (isdigit((unsigned char)s[i]) || (s[i] == ',' && !comma && digits))) {
        if (s[i] == ',')
            comma = true;
        else
            digits = true;
        i++;
    }
    return digits && i < n && s[i] == '}' ? i + 1 : 0;
}

/* ---- code points in a byte-wise regex ------------------------------------------ *
 *
 * glibc's regcomp matches in the locale's encoding, and in a UTF-8 locale its
 * matcher stops caching states for multibyte brackets: "^.{1,1000}$" on 900
 * non-ASCII characters took 38 s and 6 GB.  So patterns run byte-wise in the
 * C locale, and the translation makes every ECMA-262 atom match one whole
 * code point of the (valid UTF-8) string: a non-ASCII character becomes the
 * group of its bytes, and '.', negated classes, \D \W \s \S and classes with
 * non-ASCII members become alternations of UTF-8 byte sequences.  No atom
 * the translation emits can start on a continuation byte, so a match never
 * begins or resumes inside a character. */

/* ECMA-262's \s: WhiteSpace (tab, VT, FF, space, U+00A0, U+FEFF, category
 * Zs) and LineTerminator (LF, CR, U+2028, U+2029). */
static const unsigned long ecma_space[] = {
    0x09,   0x0a,   0x0b,   0x0c,   0x0d,   0x20,   0xa0,   0x1680, 0x2000, 0x2001, 0x2002,
    0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f,
    0x205f, 0x3000, 0xfeff,
};

/* ECMA-262's '.': any code point but a line terminator (\n \r U+2028
 * U+2029).  "[\xc0-\xff][\x80-\xbf]*" is any multibyte character: in valid
 * UTF-8 the continuation bytes it may leave unread cannot start another
 * atom, so it matches as the exact sequences would, with a far smaller
 * automaton. */
#define ECMA_DOT                                                                                   \
    "([\x01-\x09\x0b\x0c\x0e-\x7f]|[\xc0-\xe1\xe3-\xff][\x80-\xbf]*|"                              \
    "\xe2([\x81-\xbf][\x80-\xbf]|\x80[\x80-\xa7\xaa-\xbf]))"

#define CP_MAX 0x10ffffUL

/* A set of code points: sorted, disjoint intervals once normalised. */
struct cpset {
    struct {
        unsigned long lo, hi;
    } *r;
    size_t n, cap;
};

static void cpset_add(struct cpset *s, unsigned long lo, unsigned long hi)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 16;
        s->r = xrealloc(s->r, s->cap * sizeof(*s->r));
    }
    s->r[s->n].lo = lo;
    s->r[s->n++].hi = hi;
}

static int cp_cmp(const void *a, const void *b)
{
    unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;
    return x < y ? -1 : x > y;
}

/* Sorts and merges; drops NUL (no string quern is given holds one, and a
 * regex cannot name it) and the surrogates (not characters in UTF-8). */
static void cpset_norm(struct cpset *s)
{
    size_t m = 0;
    if (s->n)
        qsort(s->r, s->n, sizeof(*s->r), cp_cmp);
    for (size_t i = 0; i < s->n; i++) {
        if (m && s->r[i].lo <= s->r[m - 1].hi + 1) {
            if (s->r[i].hi > s->r[m - 1].hi)
                s->r[m - 1].hi = s->r[i].hi;
        } else {
            s->r[m++] = s->r[i];
        }
    }
    s->n = m;
    struct cpset t = {NULL, 0, 0};
    for (size_t i = 0; i < s->n; i++) {
        unsigned long lo = s->r[i].lo ? s->r[i].lo : 1, hi = s->r[i].hi;
        if (lo <= 0xd7ff || hi >= 0xe000) {
            if (lo < 0xd800 && hi > 0xdfff) {
                cpset_add(&t, lo, 0xd7ff);
                cpset_add(&t, 0xe000, hi);
            } else {
                lo = lo >= 0xd800 && lo <= 0xdfff ? 0xe000 : lo;
                hi = hi >= 0xd800 && hi <= 0xdfff ? 0xd7ff : hi;
                if (lo <= hi)
                    cpset_add(&t, lo, hi);
            }
        }
    }
    free(s->r);
    *s = t;
}

/* The complement within 1..U+10FFFF (s normalised; stays normalised). */
static void cpset_negate(struct cpset *s)
{
    struct cpset t = {NULL, 0, 0};
    unsigned long next = 1;
    for (size_t i = 0; i < s->n; i++) {
        if (s->r[i].lo > next)
            cpset_add(&t, next, s->r[i].lo - 1);
        next = s->r[i].hi + 1;
    }
    if (next <= CP_MAX)
        cpset_add(&t, next, CP_MAX);
    free(s->r);
    *s = t;
    cpset_norm(s);
}

/* One byte inside a bracket expression, where POSIX has no escapes. */
static void put_class_byte(struct buf *o, unsigned char b)
{
    if (b == ']' || b == '-' || b == '^' || b == '[')
        buf_printf(o, "[.%c.]", b);
    else
        buf_append(o, &b, 1);
}

static void put_byte_range(struct buf *o, unsigned char lo, unsigned char hi)
{
    if (lo == hi && lo >= 0x80) {
        buf_append(o, &lo, 1); /* a byte >= 0x80 is never special */
        return;
    }
    buf_puts(o, "[");
    put_class_byte(o, lo);
    if (hi != lo) {
        buf_puts(o, "-");
        put_class_byte(o, hi);
    }
    buf_puts(o, "]");
}

static size_t utf8_encode(unsigned long cp, unsigned char *u)
{
    if (cp < 0x80) {
        u[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        u[0] = (unsigned char)(0xc0 | (cp >> 6));
        u[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        u[0] = (unsigned char)(0xe0 | (cp >> 12));
        u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    u[0] = (unsigned char)(0xf0 | (cp >> 18));
    u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    u[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Writes the non-ASCII code points lo..hi as '|'-separated byte sequences,
 * split (as RE2 and Rust's regex do) until each piece is a product of byte
 * ranges. */
static void put_utf8_range(struct buf *o, unsigned long lo, unsigned long hi)
{
    static const unsigned long top[] = {0x7ff, 0xffff};
    for (size_t k = 0; k < ARRAY_LEN(top); k++) {
        if (lo <= top[k] && hi > top[k]) {
            put_utf8_range(o, lo, top[k]);
            put_utf8_range(o, top[k] + 1, hi);
            return;
        }
    }
    unsigned char a[4], b[4];
    size_t n = utf8_encode(lo, a);
    utf8_encode(hi, b);
    for (size_t i = 1; i < n; i++) {
        unsigned long m = (1UL << (6 * i)) - 1;
        if ((lo & ~m) == (hi & ~m))
            continue;
        if ((lo & m) != 0) {
            put_utf8_range(o, lo, lo | m);
            put_utf8_range(o, (lo | m) + 1, hi);
            return;
        }
        if ((hi & m) != m) {
            put_utf8_range(o, lo, (hi & ~m) - 1);
            put_utf8_range(o, hi & ~m, hi);
            return;
        }
    }
    buf_puts(o, "|");
    for (size_t i = 0; i < n; i++)
        put_byte_range(o, a[i], b[i]);
}

/* Writes a normalised set as one atom: a bracket expression for its ASCII
 * part, alternated with byte sequences for the rest. */
static void put_cpset(struct buf *o, const struct cpset *s)
{
    struct buf alt; /* the alternatives, each after a '|' */
    buf_init(&alt);
    if (s->n && s->r[0].lo < 0x80) {
        buf_puts(&alt, "|[");
        for (size_t i = 0; i < s->n && s->r[i].lo < 0x80; i++) {
            unsigned long hi = s->r[i].hi < 0x80 ? s->r[i].hi : 0x7f;
            put_class_byte(&alt, (unsigned char)s->r[i].lo);
            if (hi != s->r[i].lo) {
                buf_puts(&alt, "-");
                put_class_byte(&alt, (unsigned char)hi);
            }
        }
        buf_puts(&alt, "]");
    }
    bool all_multibyte = s->n >= 2 && s->r[s->n - 2].lo <= 0x80 && s->r[s->n - 2].hi == 0xd7ff &&
                         s->r[s->n - 1].lo == 0xe000 && s->r[s->n - 1].hi == CP_MAX;
    if (all_multibyte) {
        buf_puts(&alt, "|[\xc0-\xff][\x80-\xbf]*");
    } else {
        for (size_t i = 0; i < s->n; i++)
            if (s->r[i].hi >= 0x80)
                put_utf8_range(&alt, s->r[i].lo < 0x80 ? 0x80 : s->r[i].lo, s->r[i].hi);
    }
    if (!alt.len)
        buf_puts(&alt, "|[^\x01-\xff]"); /* the empty set: matches nothing */
    buf_puts(o, "(");
    buf_append(o, alt.data + 1, alt.len - 1);
    buf_puts(o, ")");
    buf_release(&alt);
}

/* Patterns are compiled and matched in the C locale (see above), whatever
 * the process's: the locale object is made once, never changed, and each
 * thread switches to it with uselocale() around regcomp/regexec only. */
static pthread_once_t c_once = PTHREAD_ONCE_INIT;
static locale_t c_loc;

static void c_init(void)
{
    c_loc = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

static locale_t c_enter(void)
{
    pthread_once(&c_once, c_init);
    return c_loc ? uselocale(c_loc) : (locale_t)0;
}

static void c_leave(locale_t old)
{
    if (old)
        uselocale(old);
}

static int hex_value(const char *s, size_t n, unsigned long *out)
{
    unsigned long v = 0;
    if (n == 0)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (!isxdigit((unsigned char)s[i]) || v > CP_MAX)
            return -EINVAL;
        v = v * 16 + (unsigned long)(isdigit((unsigned char)s[i]) ? s[i] - '0'
                                                                  : (s[i] | 0x20) - 'a' + 10);
    }
    *out = v;
    return 0;
}

/* Reads the code point of a \xHH, \uHHHH, \u{H...} escape (or a \uHHHH
 * surrogate pair) starting at s[*i] == 'x' or 'u'; *i is left on its last
 * character. */
static int escape_code_point(const char *s, size_t n, size_t *i, unsigned long *cp, char **err)
{
    size_t at = *i;
    if (s[at] == 'x') {
        if (at + 2 >= n || hex_value(s + at + 1, 2, cp) < 0)
            return pattern_error(err, "\\x needs two hex digits at offset %zu", at);
        *i = at + 2;
        return 0;
    }
    if (at + 1 < n && s[at + 1] == '{') {
        const char *close = memchr(s + at + 2, '}', n - at - 2);
        if (!close || hex_value(s + at + 2, (size_t)(close - s - at - 2), cp) < 0 || *cp > CP_MAX)
            return pattern_error(err, "bad \\u{...} escape at offset %zu", at);
        *i = (size_t)(close - s);
    } else {
        if (at + 4 >= n || hex_value(s + at + 1, 4, cp) < 0)
            return pattern_error(err, "\\u needs four hex digits at offset %zu", at);
        *i = at + 4;
        unsigned long lo;
        if (*cp >= 0xd800 && *cp <= 0xdbff && *i + 6 < n && s[*i + 1] == '\\' &&
            s[*i + 2] == 'u' && hex_value(s + *i + 3, 4, &lo) == 0 && lo >= 0xdc00 &&
            lo <= 0xdfff) {
            *cp = 0x10000 + ((*cp - 0xd800) << 10) + (lo - 0xdc00);
            *i += 6;
        }
    }
    if (*cp >= 0xd800 && *cp <= 0xdfff)
        return pattern_error(err, "lone surrogate \\u%04lx at offset %zu", *cp, at);
    return 0;
}

/* Writes code point cp, outside brackets, as a literal atom: an ASCII
 * character (escaped when special), or the group of a character's bytes. */
static int put_literal(struct buf *o, unsigned long cp, char **err)
{
    unsigned char u[4];
    if (cp == 0)
        return pattern_error(err, "a NUL character cannot be matched (POSIX ERE)");
    if (cp < 0x80) {
        char c = (char)cp;
        if (strchr("^$\\.*+?()[]{}|", c))
            buf_append(o, "\\", 1);
        buf_append(o, &c, 1);
        return 0;
    }
    size_t len = utf8_encode(cp, u);
    buf_puts(o, "(");
    buf_append(o, u, len);
    buf_puts(o, ")");
    return 0;
}

/* Reads one UTF-8 code point at s[*i] (the pattern is valid UTF-8: jansson
 * checked it), leaving *i on its last byte. */
static unsigned long utf8_next(const char *s, size_t n, size_t *i)
{
    const unsigned char *u = (const unsigned char *)s + *i;
    size_t len = u[0] < 0x80 ? 1 : u[0] < 0xe0 ? 2 : u[0] < 0xf0 ? 3 : 4;
    if (*i + len > n)
        len = 1;
    unsigned long cp = len == 1 ? u[0] : u[0] & (0x7f >> len);
    for (size_t k = 1; k < len; k++)
        cp = cp << 6 | (u[k] & 0x3f);
    *i += len - 1;
    return cp;
}

static void add_ascii_class(struct cpset *set, int (*is)(int))
{
    for (int c = 1; c < 0x80; c++)
        if (is(c))
            cpset_add(set, (unsigned long)c, (unsigned long)c);
}

/* The POSIX classes, ASCII only (the C locale's). */
static int add_posix_class(struct cpset *set, const char *name, size_t len)
{
    static const struct {
        const char *name;
        int (*is)(int);
    } classes[] = {
        {"alpha", isalpha}, {"digit", isdigit}, {"alnum", isalnum}, {"upper", isupper},
        {"lower", islower}, {"space", isspace}, {"punct", ispunct}, {"xdigit", isxdigit},
        {"cntrl", iscntrl}, {"print", isprint}, {"graph", isgraph}, {"blank", isblank},
    };
    for (size_t k = 0; k < ARRAY_LEN(classes); k++) {
        if (strlen(classes[k].name) == len && memcmp(classes[k].name, name, len) == 0) {
            add_ascii_class(set, classes[k].is);
            return 0;
        }
    }
    return -EINVAL;
}

static void add_word(struct cpset *set)
{
    cpset_add(set, '0', '9');
    cpset_add(set, 'A', 'Z');
    cpset_add(set, '_', '_');
    cpset_add(set, 'a', 'z');
}

static void add_space(struct cpset *set)
{
    for (size_t k = 0; k < ARRAY_LEN(ecma_space); k++)
        cpset_add(set, ecma_space[k], ecma_space[k]);
}

/* One element of a bracket expression at s[*i]: a character (returns 1 with
 * *cp, which the caller may make a range's end) or a set such as \d or
 * [:alpha:] (added to set here; returns 0).  *i is left on the element's
 * last character. */
static int class_element(const char *s, size_t n, size_t *i, unsigned long *cp,
                         struct cpset *set, char **err)
{
    if (s[*i] == '[' && *i + 1 < n && s[*i + 1] && strchr(":.=", s[*i + 1])) {
        /* [:alpha:], [.x.], [=x=] */
        char d = s[*i + 1];
        size_t j = *i + 2;
        while (j + 1 < n && !(s[j] == d && s[j + 1] == ']'))
            j++;
        if (j + 1 >= n)
            return pattern_error(err, "unterminated [%c inside [...]", d);
        size_t start = *i + 2;
        *i = j + 1;
        if (d == ':') {
            if (add_posix_class(set, s + start, j - start) < 0)
                return pattern_error(err, "unknown class [:%.*s:]", (int)(j - start), s + start);
            return 0;
        }
        size_t k = start;
        unsigned long c = start < j ? utf8_next(s, n, &k) : 0;
        if (start == j || k + 1 != j)
            return pattern_error(err, "[%c...%c] must hold one character", d, d);
        *cp = c;
        return 1;
    }
    if (s[*i] != '\\') {
        *cp = utf8_next(s, n, i);
        return 1;
    }
    if (*i + 1 == n)
        return pattern_error(err, "ends with a lone backslash");
    char e = s[++*i];
    switch (e) {
    case 'd': cpset_add(set, '0', '9'); return 0;
    case 'w': add_word(set); return 0;
    case 's': add_space(set); return 0;
    case 'b': *cp = '\b'; return 1;
    case 't': *cp = '\t'; return 1;
    case 'n': *cp = '\n'; return 1;
    case 'r': *cp = '\r'; return 1;
    case 'f': *cp = '\f'; return 1;
    case 'v': *cp = '\v'; return 1;
    case 'x':
    case 'u': {
        int rc = escape_code_point(s, n, i, cp, err);
        return rc < 0 ? rc : 1;
    }
    default:
        if (e && strchr("^$\\.*+?()[]{}|/-", e)) {
            *cp = (unsigned char)e;
            return 1;
        }
    }
    return pattern_error(err, "unsupported escape \\%c inside [...] (patterns are POSIX ERE)", e);
}

/* Translates a bracket expression, from s[*i] (just after "[" or "[^")
 * through its "]", where *i is left. */
static int translate_class(const char *s, size_t n, size_t *i, bool neg, struct buf *o,
                           char **err)
{
    struct cpset set = {NULL, 0, 0};
    int rc = -EINVAL;
    for (; *i < n && s[*i] != ']'; ++*i) {
        unsigned long lo = 0, hi = 0;
        if ((rc = class_element(s, n, i, &lo, &set, err)) < 0)
            goto out;
        bool dash = *i + 2 < n && s[*i + 1] == '-' && s[*i + 2] != ']';
        if (rc == 0 && dash) {
            rc = pattern_error(err, "a range in [...] cannot start at a class like \\d");
            goto out;
        }
        if (rc == 0)
            continue;
        if (!dash) {
            cpset_add(&set, lo, lo);
            continue;
        }
        size_t j = *i + 2;
        if ((rc = class_element(s, n, &j, &hi, &set, err)) < 0)
            goto out;
        if (rc == 0) {
            rc = pattern_error(err, "a range in [...] cannot end at a class like \\d");
            goto out;
        }
        if (hi < lo) {
            rc = pattern_error(err, "range out of order in [...] at offset %zu", *i);
            goto out;
        }
        cpset_add(&set, lo, hi);
        *i = j;
    }
    if (*i >= n) {
        rc = pattern_error(err, "unterminated [...]");
        goto out;
    }
    cpset_norm(&set);
    if (neg)
        cpset_negate(&set);
    put_cpset(o, &set);
    rc = 0;
out:
    free(set.r);
    return rc;
}

/* \D \W \s \S outside brackets, as one atom. */
static void put_class_escape(struct buf *o, char e)
{
    struct cpset set = {NULL, 0, 0};
    if (e == 'D' || e == 'd')
        cpset_add(&set, '0', '9');
    else if (e == 'W' || e == 'w')
        add_word(&set);
    else
        add_space(&set);
    cpset_norm(&set);
    if (isupper((unsigned char)e))
        cpset_negate(&set);
    put_cpset(o, &set);
    free(set.r);
}

static int translate_pattern(const char *s, size_t n, struct buf *o, char **err)
{
    /* what the last thing copied was: a quantifier, or a lazy marker after
     * one (ECMA "a+?": the same strings match, so the '?' is dropped; POSIX
     * would read it as a second quantifier) */
    enum { Q_NONE, Q_QUANT, Q_LAZY } q = Q_NONE;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c != '\\') {
            size_t ilen = c == '{' ? interval_len(s + i, n - i) : 0;
            bool quant = c == '*' || c == '+' || c == '?' || ilen;
            if (quant && q == Q_QUANT && c == '?') {
                q = Q_LAZY;
                continue;
            }
            if (quant && q != Q_NONE)
                return pattern_error(err, "a quantifier follows another at offset %zu (like a++ "
                                          "or a{2}*): nothing to repeat",
                                     i);
            if (ilen) {
                buf_append(o, s + i, ilen);
                i += ilen - 1;
                q = Q_QUANT;
                continue;
            }
            if (c == '{') {
                /* not a quantifier in ECMA ("{", "{,5}", "{x}"): a literal
                 * brace, which POSIX would read as an interval or refuse */
                buf_puts(o, "\\{");
                q = Q_NONE;
                continue;
            }
            q = quant ? Q_QUANT : Q_NONE;
        } else {
            q = Q_NONE;
        }
        if (c == '\\') {
            if (i + 1 == n)
                return pattern_error(err, "ends with a lone backslash");
            char e = s[++i];
            const char *rep = NULL;
            switch (e) {
            case 'd': rep = "[0-9]"; break;
            case 'w': rep = "[A-Za-z0-9_]"; break;
            case 's':
            case 'D':
            case 'W':
            case 'S': put_class_escape(o, e); continue;
            case 'b': rep = "\\b"; break;
            case 'B': rep = "\\B"; break;
            case 't': rep = "\t"; break;
            case 'n': rep = "\n"; break;
            case 'r': rep = "\r"; break;
            case 'f': rep = "\f"; break;
            case 'v': rep = "\v"; break;
            case 'x':
            case 'u': {
                unsigned long cp = 0;
                int rc = escape_code_point(s, n, &i, &cp, err);
                if (rc < 0)
                    return rc;
                rc = put_literal(o, cp, err);
                if (rc < 0)
                    return rc;
                continue;
            }
            default:
                if (e && strchr("^$\\.*+?()[]{}|/-", e)) {
                    int rc = put_literal(o, (unsigned char)e, err);
                    if (rc < 0)
                        return rc;
                    continue;
                }
            }
            if (!rep)
                return pattern_error(err, "unsupported escape \\%c (patterns are POSIX ERE)", e);
            buf_puts(o, rep);
            continue;
        }
        if (c == '[') {
            bool neg = i + 1 < n && s[i + 1] == '^';
            i += neg ? 2 : 1;
            if (i < n && s[i] == ']' && !neg)
                return pattern_error(err, "empty character class [] is not supported");
            int rc = translate_class(s, n, &i, neg, o, err);
            if (rc < 0)
                return rc;
            continue;
        }
        /* ECMA's '.' is any code point but a line terminator (POSIX's is
         * any byte), and without the m flag '^' and '$' anchor at the ends
         * of the string only: glibc's '^' inside "^.*(P)" also matches after
         * a newline, so they become GNU's buffer anchors. */
        if (c == '.') {
            buf_puts(o, ECMA_DOT);
            continue;
        }
        if (c == '^' || c == '$') {
            buf_puts(o, c == '^' ? "\\`" : "\\'");
            continue;
        }
        if (c == '(' && i + 1 < n && s[i + 1] == '?') {
            if (i + 2 < n && s[i + 2] == ':') {
                buf_append(o, "(", 1);
                i += 2;
                continue;
            }
            return pattern_error(err, "(?...) groups other than (?:...) are not supported "
                                      "(patterns are POSIX ERE)");
        }
        if ((unsigned char)c >= 0x80) {
            /* a non-ASCII character: one atom, so a quantifier repeats it whole */
            unsigned long cp = utf8_next(s, n, &i);
            int rc = put_literal(o, cp, err);
            if (rc < 0)
                return rc;
            continue;
        }
        buf_append(o, &c, 1);
    }
    return 0;
}

/* glibc's regcomp builds an automaton whose size multiplies with nested
 * repetition and grows with the square of an interval's upper bound:
 * "a{1,10000}" takes 790 MB and "a" followed by 22 '+' took 3 GB (found by
 * tests/fuzz/fuzz_schema).  A pattern is user input, so its cost is bounded
 * before it is compiled: each atom counts 1, a group the sum of its
 * alternatives, and a quantifier multiplies what it repeats (by 2 for * + ?,
 * by the upper bound, or n + 1 for "{n,}").  Measured here: 4000 units
 * compile in under 40 ms and 40 MB. */
#define PATTERN_MAX_REPEAT 1000
#define PATTERN_MAX_COST 4000L
#define PATTERN_MAX_GROUPS 64

struct cost_frame {
    long total, cur, last; /* closed alternatives, the open one, its last atom */
};

static int pattern_cost(const char *s, char **err)
{
    struct cost_frame st[PATTERN_MAX_GROUPS + 1] = {{0, 0, 0}};
    int d = 0;
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++) {
        struct cost_frame *f = &st[d];
        long atom = 1, mult = 0;
        char c = s[i];
        if (c == '\\') {
            i++;
        } else if (c == '[') {
            size_t j = i + 1;
            if (j < n && s[j] == '^')
                j++;
            if (j < n && s[j] == ']')
                j++;
            while (j < n && s[j] != ']') {
                if (s[j] == '[' && j + 1 < n && strchr(":.=", s[j + 1])) {
                    char e = s[j + 1];
                    j += 2;
                    while (j + 1 < n && !(s[j] == e && s[j + 1] == ']'))
                        j++;
                    j++;
                }
                j++;
            }
            i = j;
        } else if (c == '(') {
            if (d == PATTERN_MAX_GROUPS)
                return pattern_error(err, "groups nested deeper than %d", PATTERN_MAX_GROUPS);
            st[++d] = (struct cost_frame){0, 0, 0};
            continue;
        } else if (c == ')' && d > 0) {
            atom = f->total + f->cur;
            d--;
            f = &st[d];
        } else if (c == '|') {
            f->total += f->cur;
            f->cur = f->last = 0;
            continue;
        } else if (c == '*' || c == '+' || c == '?') {
            mult = 2;
        } else if (c == '{' && interval_len(s + i, n - i)) {
            char *e;
            unsigned long lo = strtoul(s + i + 1, &e, 10), hi = lo;
            if (*e == ',')
                hi = e[1] == '}' ? lo + 1 : strtoul(e + 1, &e, 10);
            if (lo > PATTERN_MAX_REPEAT || hi > PATTERN_MAX_REPEAT + 1)
                return pattern_error(err, "repetition bound over %d", PATTERN_MAX_REPEAT);
            mult = hi > 1 ? (long)hi : 1;
            i += interval_len(s + i, n - i) - 1;
        }
        if (mult) {
            f->cur += f->last * (mult - 1);
            f->last *= mult;
        } else {
            f->cur += atom;
            f->last = atom;
        }
        if (f->cur + f->total > PATTERN_MAX_COST)
            return pattern_error(err, "too complex: its repetitions expand to more than %ld "
                                      "states (at most %d per bound, nesting multiplies)",
                                 PATTERN_MAX_COST, PATTERN_MAX_REPEAT);
    }
    return 0;
}

/* Compiles a pattern string into re; on failure *err (malloc'd) says why. */
static int compile_pattern(const json_t *pat, regex_t *re, char **err)
{
    const char *s = json_string_value(pat);
    size_t n = json_string_length(pat);
    struct buf b;
    int rc;

    if (n > JSONSCHEMA_MAX_PATTERN)
        return pattern_error(err, "longer than %d bytes", JSONSCHEMA_MAX_PATTERN);
    if (memchr(s, 0, n))
        return pattern_error(err, "contains a NUL character");
    /* JSON Schema searches unanchored.  regexec would try every start
     * position, each a fresh scan: "(.*a){1,20}y" took 2.8 s on a 100 KB
     * string.  Wrapped as "^.*(P)" the same strings match (a '^' inside P
     * still anchors at the start) and the automaton scans once. */
    buf_init(&b);
    buf_puts(&b, "^.*(");
    rc = translate_pattern(s, n, &b, err);
    if (rc < 0)
        goto out;
    buf_puts(&b, ")");
    rc = pattern_cost(b.data, err);
    if (rc < 0)
        goto out;
    locale_t old = c_enter();
    rc = regcomp(re, b.data, REG_EXTENDED | REG_NOSUB);
    c_leave(old);
    if (rc != 0) {
        char e[128];
        regerror(rc, re, e, sizeof(e));
        rc = pattern_error(err, "does not compile as a POSIX ERE: %s", e);
    }
out:
    buf_release(&b);
    return rc;
}

/* ---- jsonschema_check -------------------------------------------------------- */

struct cctx {
    struct buf path; /* keyword path of the value being checked */
    char *msg;
    char *unsupported; /* the first keyword outside the subset, when no error */
    long steps; /* subschemas visited, against JSONSCHEMA_MAX_NODES */
};

static int cfail(struct cctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cfail(struct cctx *c, const char *fmt, ...)
{
    struct buf b;
    va_list ap;
    buf_init(&b);
    buf_printf(&b, "%s: ", c->path.len ? c->path.data : "schema");
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    free(c->msg);
    c->msg = buf_steal(&b);
    return -EINVAL;
}

static int check_node(struct cctx *c, const json_t *s, int depth);

static int check_schema_array(struct cctx *c, const json_t *v, int depth)
{
    if (!json_is_array(v) || json_array_size(v) == 0)
        return cfail(c, "must be a non-empty array of schemas");
    for (size_t i = 0; i < json_array_size(v); i++) {
        size_t mark = c->path.len;
        path_index(&c->path, i);
        int rc = check_node(c, json_array_get(v, i), depth + 1);
        path_trunc(&c->path, mark);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Keywords of JSON Schema 2020-12 (and of drafts before it) that constrain
 * an instance but that this validator does not implement.  Ignoring them, as
 * unknown annotations are ignored, would accept instances the schema's
 * author meant to refuse, so jsonschema_check refuses them instead. */
static bool unsupported_assertion(const char *k)
{
    static const char *const kws[] = {
        "prefixItems",       "additionalItems",       "contains",         "minContains",
        "maxContains",       "uniqueItems",           "unevaluatedItems", "multipleOf",
        "minProperties",     "maxProperties",         "patternProperties", "propertyNames",
        "dependentRequired", "dependentSchemas",      "dependencies",     "unevaluatedProperties",
        "not",               "if",                    "then",             "else",
    };
    for (size_t i = 0; i < ARRAY_LEN(kws); i++)
        if (strcmp(k, kws[i]) == 0)
            return true;
    return false;
}

/* Checks one keyword's value; c->path already ends with the keyword. */
static int check_keyword(struct cctx *c, const char *k, const json_t *v, int depth)
{
    if (strcmp(k, "type") == 0) {
        unsigned mask;
        if (parse_type(v, &mask) < 0)
            return cfail(c, "must be one of null, boolean, object, array, number, string, "
                            "integer, or a non-empty array of them");
    } else if (strcmp(k, "properties") == 0) {
        if (!json_is_object(v))
            return cfail(c, "must be an object of schemas");
        const char *name;
        json_t *sub;
        json_object_foreach (MUT(v), name, sub) {
            size_t mark = c->path.len;
            path_key(&c->path, name);
            int rc = check_node(c, sub, depth + 1);
            path_trunc(&c->path, mark);
            if (rc < 0)
                return rc;
        }
    } else if (strcmp(k, "items") == 0) {
        if (json_is_array(v))
            return cfail(c, "must be a schema (draft 2020-12 spells tuples prefixItems, "
                            "which is not supported)");
        return check_node(c, v, depth + 1);
    } else if (strcmp(k, "additionalProperties") == 0) {
        return check_node(c, v, depth + 1);
    } else if (strcmp(k, "required") == 0) {
        if (!json_is_array(v))
            return cfail(c, "must be an array of strings");
        for (size_t i = 0; i < json_array_size(v); i++)
            if (!json_is_string(json_array_get(v, i)))
                return cfail(c, "must be an array of strings");
    } else if (strcmp(k, "enum") == 0) {
        if (!json_is_array(v))
            return cfail(c, "must be an array");
        if (nested_deeper(v, JSONSCHEMA_MAX_DEPTH + 1))
            return cfail(c, "nested deeper than %d levels", JSONSCHEMA_MAX_DEPTH);
    } else if (strcmp(k, "const") == 0) {
        if (nested_deeper(v, JSONSCHEMA_MAX_DEPTH))
            return cfail(c, "nested deeper than %d levels", JSONSCHEMA_MAX_DEPTH);
    } else if (strcmp(k, "minimum") == 0 || strcmp(k, "maximum") == 0 ||
               strcmp(k, "exclusiveMinimum") == 0 || strcmp(k, "exclusiveMaximum") == 0) {
        if (!json_is_number(v))
            return cfail(c, "must be a number");
    } else if (strcmp(k, "minLength") == 0 || strcmp(k, "maxLength") == 0 ||
               strcmp(k, "minItems") == 0 || strcmp(k, "maxItems") == 0) {
        json_int_t n;
        if (get_count(v, &n) < 0)
            return cfail(c, "must be a non-negative integer");
    } else if (strcmp(k, "pattern") == 0) {
        if (!json_is_string(v))
            return cfail(c, "must be a string");
        regex_t re;
        char *err = NULL;
        if (compile_pattern(v, &re, &err) < 0) {
            cfail(c, "%s", err);
            free(err);
            return -EINVAL;
        }
        regfree(&re);
    } else if (strcmp(k, "allOf") == 0 || strcmp(k, "anyOf") == 0 || strcmp(k, "oneOf") == 0) {
        return check_schema_array(c, v, depth);
    } else if (strcmp(k, "$ref") == 0 || strcmp(k, "$dynamicRef") == 0 ||
               strcmp(k, "$recursiveRef") == 0) {
        return cfail(c, "is not supported; write the subschema inline");
    } else if (unsupported_assertion(k) && !c->unsupported) {
        /* noted, and the rest still checked: see -ENOTSUP in jsonschema.h */
        cfail(c, "is not supported (quern validates a subset of JSON Schema 2020-12; "
                 "see docs/API.md)");
        c->unsupported = c->msg;
        c->msg = NULL;
    }
    return 0;
}

static int check_node(struct cctx *c, const json_t *s, int depth)
{
    if (json_is_boolean(s))
        return 0;
    if (!json_is_object(s))
        return cfail(c, "must be a schema (an object or a boolean)");
    if (depth > JSONSCHEMA_MAX_DEPTH)
        return cfail(c, "schemas nested deeper than %d levels", JSONSCHEMA_MAX_DEPTH);
    /* Parsed text is a tree, but a schema built in memory may share
     * subschemas, and a walk of such a DAG can be exponential. */
    if (++c->steps > JSONSCHEMA_MAX_NODES)
        return cfail(c, "schema too large (over %ld subschemas)", JSONSCHEMA_MAX_NODES);
    const char *k;
    json_t *v;
    json_object_foreach (MUT(s), k, v) {
        size_t mark = c->path.len;
        path_key(&c->path, k);
        int rc = check_keyword(c, k, v, depth);
        path_trunc(&c->path, mark);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int jsonschema_check(const json_t *schema, char **msg)
{
    struct cctx c = {.msg = NULL, .unsupported = NULL, .steps = 0};
    int rc;

    buf_init(&c.path);
    if (!json_is_object(schema))
        rc = cfail(&c, "must be an object");
    else
        rc = check_node(&c, schema, 0);
    buf_release(&c.path);
    if (rc == 0 && c.unsupported) {
        c.msg = c.unsupported;
        rc = -ENOTSUP;
    } else {
        free(c.unsupported);
    }
    if (msg)
        *msg = c.msg;
    else
        free(c.msg);
    return rc;
}

/* ---- jsonschema_validate ----------------------------------------------------- */

/* validate_node's results besides 0: the instance does not match (anyOf and
 * oneOf try the next branch), or validation cannot go on at all (bad schema,
 * limits hit), which propagates to the caller whatever the combinator. */
#define V_FAIL (-EINVAL)
#define V_FATAL (-E2BIG)

struct re_entry {
    const json_t *src; /* the schema's pattern string, by identity */
    regex_t re;
};

struct vctx {
    struct buf path; /* instance path of the value being validated */
    char *epath, *emsg; /* the failure being reported */
    long steps;
    struct re_entry *re;
    size_t nre, cre;
};

/* Recording a failure allocates; charging it extra steps keeps a schema that
 * fails on purpose millions of times (anyOf upon anyOf) from being cheap. */
#define FAIL_COST 16

static int vset(struct vctx *v, int rc, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static int vset(struct vctx *v, int rc, const char *fmt, va_list ap)
{
    struct buf b;
    v->steps += FAIL_COST;
    buf_init(&b);
    buf_vprintf(&b, fmt, ap);
    free(v->epath);
    free(v->emsg);
    v->epath = xstrdup(v->path.data);
    v->emsg = buf_steal(&b);
    return rc;
}

static int vfail(struct vctx *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int vfail(struct vctx *v, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vset(v, V_FAIL, fmt, ap);
    va_end(ap);
    return rc;
}

static int vfatal(struct vctx *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int vfatal(struct vctx *v, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vset(v, V_FATAL, fmt, ap);
    va_end(ap);
    return rc;
}

static bool over_budget(struct vctx *v, long cost)
{
    v->steps += cost;
    return v->steps > JSONSCHEMA_MAX_STEPS;
}

/* JSON Schema equality: numbers by value (1 == 1.0), objects regardless of
 * key order.  1 equal, 0 not, -1 too deep or over budget. */
static int json_eq(struct vctx *v, const json_t *a, const json_t *b, int depth)
{
    if (depth > JSONSCHEMA_MAX_DEPTH + 1 || over_budget(v, 1))
        return -1;
    if (json_is_number(a) && json_is_number(b)) {
        if (json_is_integer(a) && json_is_integer(b))
            return json_integer_value(a) == json_integer_value(b);
        return num_value(a) == num_value(b);
    }
    if (json_typeof(a) != json_typeof(b))
        return 0;
    switch (json_typeof(a)) {
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b))
            return 0;
        for (size_t i = 0; i < json_array_size(a); i++) {
            int r = json_eq(v, json_array_get(a, i), json_array_get(b, i), depth + 1);
            if (r <= 0)
                return r;
        }
        return 1;
    case JSON_OBJECT: {
        if (json_object_size(a) != json_object_size(b))
            return 0;
        const char *k;
        json_t *av;
        json_object_foreach (MUT(a), k, av) {
            const json_t *bv = json_object_get(b, k);
            if (!bv)
                return 0;
            int r = json_eq(v, av, bv, depth + 1);
            if (r <= 0)
                return r;
        }
        return 1;
    }
    default:
        return 1; /* null, true, false: the type says it all */
    }
}

/* The compiled form of a pattern, compiled once per validation. */
static int get_regex(struct vctx *v, const json_t *pat, regex_t **out)
{
    for (size_t i = 0; i < v->nre; i++) {
        if (v->re[i].src == pat) {
            *out = &v->re[i].re;
            return 0;
        }
    }
    if (v->nre == v->cre) {
        v->cre = v->cre ? 2 * v->cre : 8;
        v->re = xrealloc(v->re, v->cre * sizeof(*v->re));
    }
    char *err = NULL;
    if (compile_pattern(pat, &v->re[v->nre].re, &err) < 0) {
        vfatal(v, "invalid schema: pattern %s", err);
        free(err);
        return V_FATAL;
    }
    v->re[v->nre].src = pat;
    *out = &v->re[v->nre++].re;
    return 0;
}

static int validate_node(struct vctx *v, const json_t *s, const json_t *inst, int depth);

/* Validates inst against sub with the path extended by key (or index). */
static int validate_at_key(struct vctx *v, const json_t *sub, const json_t *inst, const char *key,
                           int depth)
{
    size_t mark = v->path.len;
    path_key(&v->path, key);
    int rc = validate_node(v, sub, inst, depth);
    path_trunc(&v->path, mark);
    return rc;
}

static int validate_number(struct vctx *v, const json_t *s, const json_t *inst)
{
    static const struct {
        const char *kw;
        const char *op;
        int bad_cmp; /* fails when cmp(inst, bound) has this sign, or 0 too */
        bool strict;
    } bounds[] = {
        {"minimum", ">=", -1, false},
        {"exclusiveMinimum", ">", -1, true},
        {"maximum", "<=", 1, false},
        {"exclusiveMaximum", "<", 1, true},
    };
    long double x = num_value(inst);
    for (size_t i = 0; i < ARRAY_LEN(bounds); i++) {
        const json_t *b = json_object_get(s, bounds[i].kw);
        if (!b)
            continue;
        if (!json_is_number(b))
            return vfatal(v, "invalid schema: %s must be a number", bounds[i].kw);
        long double y = num_value(b);
        int cmp = x < y ? -1 : x > y ? 1 : 0;
        if (cmp == bounds[i].bad_cmp || (cmp == 0 && bounds[i].strict)) {
            char *q = num_str(b);
            int rc = vfail(v, "must be %s %s", bounds[i].op, q);
            free(q);
            return rc;
        }
    }
    return 0;
}

static int validate_string(struct vctx *v, const json_t *s, const json_t *inst)
{
    const char *str = json_string_value(inst);
    size_t n = json_string_length(inst);
    const json_t *kw;
    json_int_t lim;

    if ((kw = json_object_get(s, "minLength")) || (kw = json_object_get(s, "maxLength"))) {
        size_t chars = utf8_count(str, n);
        if ((kw = json_object_get(s, "minLength"))) {
            if (get_count(kw, &lim) < 0)
                return vfatal(v, "invalid schema: minLength must be a non-negative integer");
            if ((json_int_t)chars < lim)
                return vfail(v, "must be at least %lld characters long", (long long)lim);
        }
        if ((kw = json_object_get(s, "maxLength"))) {
            if (get_count(kw, &lim) < 0)
                return vfatal(v, "invalid schema: maxLength must be a non-negative integer");
            if ((json_int_t)chars > lim)
                return vfail(v, "must be at most %lld characters long", (long long)lim);
        }
    }
    if ((kw = json_object_get(s, "pattern"))) {
        regex_t *re;
        if (n > INT_MAX)
            return vfail(v, "too long to match a pattern against");
        if (!json_is_string(kw))
            return vfatal(v, "invalid schema: pattern must be a string");
        if (get_regex(v, kw, &re) < 0)
            return V_FATAL;
        /* REG_STARTEND: match the whole string even past an embedded NUL. */
        regmatch_t m[1] = {{.rm_so = 0, .rm_eo = (regoff_t)n}};
        if (over_budget(v, 1 + (long)(n / 64)))
            return vfatal(v, "validation takes too much work (over %ld steps)",
                          JSONSCHEMA_MAX_STEPS);
        locale_t old = c_enter();
        int nomatch = regexec(re, str, 1, m, REG_STARTEND);
        c_leave(old);
        if (nomatch) {
            char *q = quote(kw);
            int rc = vfail(v, "does not match pattern %s", q);
            free(q);
            return rc;
        }
    }
    return 0;
}

static int validate_array(struct vctx *v, const json_t *s, const json_t *inst, int depth)
{
    size_t n = json_array_size(inst);
    const json_t *kw;
    json_int_t lim;

    if ((kw = json_object_get(s, "minItems"))) {
        if (get_count(kw, &lim) < 0)
            return vfatal(v, "invalid schema: minItems must be a non-negative integer");
        if ((json_int_t)n < lim)
            return vfail(v, "must have at least %lld items", (long long)lim);
    }
    if ((kw = json_object_get(s, "maxItems"))) {
        if (get_count(kw, &lim) < 0)
            return vfatal(v, "invalid schema: maxItems must be a non-negative integer");
        if ((json_int_t)n > lim)
            return vfail(v, "must have at most %lld items", (long long)lim);
    }
    if ((kw = json_object_get(s, "items"))) {
        for (size_t i = 0; i < n; i++) {
            size_t mark = v->path.len;
            path_index(&v->path, i);
            int rc = validate_node(v, kw, json_array_get(inst, i), depth + 1);
            path_trunc(&v->path, mark);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

static int validate_object(struct vctx *v, const json_t *s, const json_t *inst, int depth)
{
    const json_t *req = json_object_get(s, "required");
    const json_t *props = json_object_get(s, "properties");
    const json_t *addl = json_object_get(s, "additionalProperties");
    const char *k;
    json_t *sub;
    int rc;

    if (req) {
        if (!json_is_array(req))
            return vfatal(v, "invalid schema: required must be an array of strings");
        for (size_t i = 0; i < json_array_size(req); i++) {
            const char *name = json_string_value(json_array_get(req, i));
            if (!name)
                return vfatal(v, "invalid schema: required must be an array of strings");
            if (!json_object_get(inst, name)) {
                size_t mark = v->path.len;
                path_key(&v->path, name);
                rc = vfail(v, "required property is missing");
                path_trunc(&v->path, mark);
                return rc;
            }
        }
    }
    if (props) {
        if (!json_is_object(props))
            return vfatal(v, "invalid schema: properties must be an object");
        json_object_foreach (MUT(props), k, sub) {
            const json_t *val = json_object_get(inst, k);
            if (val && (rc = validate_at_key(v, sub, val, k, depth + 1)) < 0)
                return rc;
        }
    }
    if (addl && !json_is_true(addl)) {
        json_object_foreach (MUT(inst), k, sub) {
            if (props && json_object_get(props, k))
                continue;
            if (json_is_false(addl)) {
                size_t mark = v->path.len;
                path_key(&v->path, k);
                rc = vfail(v, "additional property is not allowed");
                path_trunc(&v->path, mark);
                return rc;
            }
            if ((rc = validate_at_key(v, addl, sub, k, depth + 1)) < 0)
                return rc;
        }
    }
    return 0;
}

/* anyOf / oneOf.  A failure names the branch that got furthest (longest
 * failing path; the first on a tie), which is usually the one meant. */
static int validate_choice(struct vctx *v, const json_t *arr, const char *kw, bool one,
                           const json_t *inst, int depth)
{
    char *best_path = NULL, *best_msg = NULL;
    size_t best = 0, matches = 0, first = 0;
    int rc = 0;

    if (!json_is_array(arr) || json_array_size(arr) == 0)
        return vfatal(v, "invalid schema: %s must be a non-empty array of schemas", kw);
    for (size_t i = 0; i < json_array_size(arr); i++) {
        rc = validate_node(v, json_array_get(arr, i), inst, depth + 1);
        if (rc == V_FATAL)
            goto out;
        if (rc == 0) {
            if (matches++ == 0)
                first = i;
            if (!one)
                break;
            if (matches == 2) {
                rc = vfail(v, "matches more than one %s branch (%zu and %zu)", kw, first, i);
                goto out;
            }
            continue;
        }
        if (!best_path || strlen(v->epath) > strlen(best_path)) {
            free(best_path);
            free(best_msg);
            best_path = v->epath;
            best_msg = v->emsg;
            best = i;
        } else {
            free(v->epath);
            free(v->emsg);
        }
        v->epath = v->emsg = NULL;
    }
    if (matches) {
        rc = 0;
    } else if (strcmp(best_path, v->path.data) == 0) {
        rc = vfail(v, "matches no %s branch (branch %zu came closest: %s)", kw, best, best_msg);
    } else {
        rc = vfail(v, "matches no %s branch (branch %zu came closest: %s: %s)", kw, best,
                   best_path, best_msg);
    }
out:
    free(best_path);
    free(best_msg);
    return rc;
}

static int validate_node(struct vctx *v, const json_t *s, const json_t *inst, int depth)
{
    const json_t *kw;
    int rc;

    if (over_budget(v, 1))
        return vfatal(v, "validation takes too much work (over %ld steps)", JSONSCHEMA_MAX_STEPS);
    if (json_is_true(s))
        return 0;
    if (json_is_false(s))
        return vfail(v, "no value is allowed here");
    if (!json_is_object(s))
        return vfatal(v, "invalid schema: a subschema must be an object or a boolean");
    if (depth > JSONSCHEMA_MAX_DEPTH)
        return vfatal(v, "invalid schema: schemas nested deeper than %d levels",
                      JSONSCHEMA_MAX_DEPTH);

    if ((kw = json_object_get(s, "type"))) {
        unsigned mask;
        if (parse_type(kw, &mask) < 0)
            return vfatal(v, "invalid schema: bad type");
        if (!type_ok(mask, inst)) {
            struct buf b;
            buf_init(&b);
            type_list(&b, mask);
            rc = vfail(v, "expected %s, got %s", b.data, type_of(inst));
            buf_release(&b);
            return rc;
        }
    }
    if ((kw = json_object_get(s, "const"))) {
        int eq = json_eq(v, kw, inst, 0);
        if (eq < 0)
            return vfatal(v, "const is nested too deeply or too large to compare");
        if (!eq) {
            char *q = quote(kw);
            rc = vfail(v, "must equal %s", q);
            free(q);
            return rc;
        }
    }
    if ((kw = json_object_get(s, "enum"))) {
        if (!json_is_array(kw))
            return vfatal(v, "invalid schema: enum must be an array");
        int eq = 0;
        for (size_t i = 0; i < json_array_size(kw) && eq == 0; i++)
            eq = json_eq(v, json_array_get(kw, i), inst, 0);
        if (eq < 0)
            return vfatal(v, "enum is nested too deeply or too large to compare");
        if (!eq) {
            char *q = quote(kw);
            rc = vfail(v, "must be one of %s", q);
            free(q);
            return rc;
        }
    }

    if (json_is_number(inst))
        rc = validate_number(v, s, inst);
    else if (json_is_string(inst))
        rc = validate_string(v, s, inst);
    else if (json_is_array(inst))
        rc = validate_array(v, s, inst, depth);
    else if (json_is_object(inst))
        rc = validate_object(v, s, inst, depth);
    else
        rc = 0;
    if (rc < 0)
        return rc;

    if ((kw = json_object_get(s, "allOf"))) {
        if (!json_is_array(kw) || json_array_size(kw) == 0)
            return vfatal(v, "invalid schema: allOf must be a non-empty array of schemas");
        for (size_t i = 0; i < json_array_size(kw); i++)
            if ((rc = validate_node(v, json_array_get(kw, i), inst, depth + 1)) < 0)
                return rc;
    }
    if ((kw = json_object_get(s, "anyOf")) &&
        (rc = validate_choice(v, kw, "anyOf", false, inst, depth)) < 0)
        return rc;
    if ((kw = json_object_get(s, "oneOf")) &&
        (rc = validate_choice(v, kw, "oneOf", true, inst, depth)) < 0)
        return rc;
    return 0;
}

int jsonschema_validate(const json_t *schema, const json_t *instance, char **path, char **msg)
{
    struct vctx v = {.steps = 0};
    int rc;

    buf_init(&v.path);
    buf_puts(&v.path, "$");
    if (!schema || !instance)
        rc = vfatal(&v, "invalid schema: no schema or no instance");
    else
        rc = validate_node(&v, schema, instance, 0);
    for (size_t i = 0; i < v.nre; i++)
        regfree(&v.re[i].re);
    free(v.re);
    buf_release(&v.path);
    if (rc == 0) {
        free(v.epath);
        free(v.emsg);
        v.epath = v.emsg = NULL;
    }
    if (path)
        *path = v.epath;
    else
        free(v.epath);
    if (msg)
        *msg = v.emsg;
    else
        free(v.emsg);
    return rc ? -EINVAL : 0;
}
