/*
 * jdump — the bytes of json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY),
 * written several times faster (no per-container loop-check table, no
 * snprintf per integer), except that a real is written in the fewest
 * digits that read back as the same double (0.3, where jansson writes
 * 0.29999999999999999).  Falls back to json_dumps for anything unusual
 * (nesting deeper than 512, a string that is not UTF-8).
 */
#ifndef QUERN_JDUMP_H
#define QUERN_JDUMP_H

#include <jansson.h>
#include <stddef.h>

#include "util.h"

/* Returns v as compact JSON (json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)
 * but for reals, see above) as a malloc'd string the caller frees (NULL
 * where json_dumps fails); *len, when given, gets its length. */
char *jdump(const json_t *v, size_t *len);
/* Appends the same bytes to b (kept NUL-terminated); -1, with b unchanged,
 * where json_dumps fails. */
int jdump_buf(struct buf *b, const json_t *v);

/* Room jdump_real needs. */
#define JDUMP_REAL_MAX 40

/* Writes the real v into s (JDUMP_REAL_MAX bytes) as jdump writes it: the
 * fewest significant digits, 15 to 17, that read back as v, in jansson's
 * form ("1.0" rather than "1", "1e300" and "2.5e-5").  Returns its length. */
size_t jdump_real(char *s, double v);

/* Length of the valid UTF-8 sequence at p (first byte >= 0x80), 0 if invalid
 * (overlong, surrogate, above U+10FFFF or truncated), as jansson judges. */
size_t jdump_utf8_len(const unsigned char *p, const unsigned char *end);

#endif
