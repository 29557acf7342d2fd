/*
 * store_pg — the PostgreSQL backend (libpq).  Not implemented yet: it is the
 * subject of its own issue.  Opening a postgres:// store fails with a clear
 * message rather than pretending.
 */
#include "store.h"

#include "util.h"

static struct store *pg_open(const char *target, const struct store_opts *opts, char **err)
{
    (void)target;
    (void)opts;
    *err = xstrdup("the PostgreSQL store is not implemented yet; use the default SQLite store");
    return NULL;
}

const struct store_backend store_pg_backend = {
    .name = "postgres",
    .open = pg_open,
};
