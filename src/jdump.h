/*
 * jdump — the bytes of json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY),
 * written several times faster (no per-container loop-check table, no
 * snprintf per integer).  Falls back to json_dumps for anything unusual, so
 * its result always equals json_dumps's.
 */
#ifndef QUERN_JDUMP_H
#define QUERN_JDUMP_H

#include <jansson.h>
#include <stddef.h>

#include "util.h"

/* Returns json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) as a malloc'd
 * string the caller frees (NULL where json_dumps fails); *len, when given,
 * gets its length. */
char *jdump(const json_t *v, size_t *len);
/* Appends the same bytes to b (kept NUL-terminated); -1, with b unchanged,
 * where json_dumps fails. */
int jdump_buf(struct buf *b, const json_t *v);

/* Length of the valid UTF-8 sequence at p (first byte >= 0x80), 0 if invalid
 * (overlong, surrogate, above U+10FFFF or truncated), as jansson judges. */
size_t jdump_utf8_len(const unsigned char *p, const unsigned char *end);

#endif
