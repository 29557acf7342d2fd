/*
 * store_copy — copies a whole store into an empty one (quern store copy).
 */
#ifndef QUERN_STORE_COPY_H
#define QUERN_STORE_COPY_H

#include <stdio.h>

#include "store.h"

/* Copies every table of the store at from into the empty store at to, rows
 * verbatim (ids, sequence numbers and order kept), and the artifact files of
 * data_dir/blobs (NULL: the directory of a SQLite source's file) when the
 * target keeps blobs itself; a line per table goes to progress when not
 * NULL.  0, or a negative errno with *err (malloc'd). */
int store_copy(const char *from, const char *to, const char *data_dir, FILE *progress,
               char **err);

/* 1 when the store is the target of a copy that has not finished (it was
 * cut short: quernd must not serve it), with *since (malloc'd, when not
 * NULL) the copy's start; 0 when not; a negative errno when it cannot be
 * read. */
int store_copy_unfinished(struct store *st, char **since);

#endif
