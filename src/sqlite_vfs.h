/*
 * sqlite_vfs — the SQLite VFS quern's store opens its database with: the
 * default one, with a WAL's frame writes gathered into one write per commit
 * (see sqlite_vfs.c).
 */
#ifndef QUERN_SQLITE_VFS_H
#define QUERN_SQLITE_VFS_H

#include <sqlite3.h>

/* Registers the VFS once (thread-safe) and returns its name for
 * sqlite3_open_v2, or NULL when it cannot be registered (open with the
 * default VFS then).  The name is a static string. */
const char *sqlite_vfs_name(void);

#endif
