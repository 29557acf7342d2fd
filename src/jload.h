/*
 * jload — json_loadb's result, several times faster, for the documents the
 * store reads back (see jload.c for why it is written by hand).
 */
#ifndef QUERN_JLOAD_H
#define QUERN_JLOAD_H

#include <jansson.h>
#include <stddef.h>

/* Parses len bytes of JSON text and returns a new reference to the value,
 * exactly what json_loadb(text, len, flags, NULL) returns (NULL where it
 * fails).  flags: JSON_DECODE_ANY and JSON_REJECT_DUPLICATES are taken. */
json_t *jload(const char *text, size_t len, size_t flags);
/* Loads a JSON object keeping only its top-level fields named in fields
 * (NULL-terminated), stepping over the others without building them.  Text
 * the fast path does not take is loaded whole (every field kept).  NULL
 * when text is not a JSON object or array. */
json_t *jload_fields(const char *text, size_t len, const char *const *fields);

/* jansson's message for a text it refused, in words a user of the API can
 * act on where jansson names its own flags or limits ("\u0000 is not
 * allowed without JSON_ALLOW_NUL", "too big integer"). */
const char *jload_error_text(const json_error_t *e);

#endif
