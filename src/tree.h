/*
 * tree — walking and removing directory trees that task code made.
 *
 * A box controls what is in its scratch, artifacts and storage directories,
 * so these trees may be arbitrarily deep (a chain of 40 000 directories
 * takes a second to make).  glibc's nftw() recurses once per level and
 * overflowed quernd's thread stacks on such a chain, crashing it on every
 * start.  Nothing here recurses: removal keeps one directory open and climbs
 * back with "..", and a walk keeps at most TREE_MAX_DEPTH directories open.
 * Neither follows a symbolic link or enters another file system.
 */
#ifndef QUERN_TREE_H
#define QUERN_TREE_H

#include <stdbool.h>
#include <stdint.h>

/* Levels below the top a walk descends; a deeper directory is not entered
 * and the walk reports it (see tree_usage). */
#define TREE_MAX_DEPTH 128

/* Removes path and everything under it (or, with keep_top, only what is
 * under it).  A link is removed, never followed.  0 when all of it is gone
 * (or path did not exist), -1 when something stayed (another file system
 * mounted inside, a permission refused). */
int tree_remove(const char *path, bool keep_top);

enum tree_measure {
    TREE_BLOCKS,   /* allocated bytes of every entry (st_blocks * 512) */
    TREE_LARGER,   /* the larger of allocated and apparent size, per entry */
    TREE_FILES,    /* apparent size of regular files only (st_size) */
};

struct tree_usage {
    int64_t bytes;   /* as measured */
    int64_t entries; /* every entry under the top, directories included */
    bool too_deep;   /* a directory deeper than TREE_MAX_DEPTH was not entered */
};

/* Adds what is under path to *u (which the caller zeroes), measured as m.
 * Stops early, returning true, as soon as u->entries passes max_entries or
 * u->bytes passes max_bytes (0: no limit); otherwise false. */
bool tree_usage(const char *path, enum tree_measure m, int64_t max_entries, int64_t max_bytes,
                struct tree_usage *u);

#endif
