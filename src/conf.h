/*
 * conf — reads quern.conf: an INI file of "[section]" headers and
 * "key = value" lines ('#' or ';' start a comment; values are not quoted, a
 * quoted one is refused; a leading UTF-8 byte order mark is skipped).  The
 * file's meaning is the caller's (quernd.c applies each setting); this module only parses,
 * and reports the first bad line with its number.
 */
#ifndef QUERN_CONF_H
#define QUERN_CONF_H

#include <stddef.h>

/* Called for every setting; returns 0, or -EINVAL after writing a reason
 * into err (errlen bytes). */
typedef int (*conf_fn)(void *ctx, const char *section, const char *key, const char *value,
                       char *err, size_t errlen);

/* Parses path, calling fn for each setting.  0, or a negative errno with
 * *msg (malloc'd) like "quern.conf:12: unknown key bogus in [server]". */
int conf_load(const char *path, conf_fn fn, void *ctx, char **msg);

#endif
