/*
 * storage — persistent storage instances that runs open, at the scopes
 * account, project and organization (scratch is the run's own directory,
 * made by the executor).  An instance is a document (SK_STORAGE, id
 * "sto_…") and a directory DATA_DIR/storage/<project>/<id>; every instance
 * belongs to one project (and, at account scope, one account), and a run
 * is only ever given instances of its own project and account.
 */
#ifndef QUERN_STORAGE_H
#define QUERN_STORAGE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "store.h"

struct app;

/* Creates an instance document (not stored) for scope/name/account. */
json_t *storage_new_doc(const char *project_id, const char *scope, const char *name,
                        const char *account_id);
/* The host directory of an instance (malloc'd); created (owned by uid)
 * when create is true. */
char *storage_dir(struct app *app, const char *project_id, const char *id, bool create,
                  unsigned uid);
/* Resolves the instances a run of task gets, one per scope: the task's
 * storage {scope: id} when given (and of this project/account), else the
 * scope's default instance, created on first use (in tx).  Returns a new
 * object {scope: instance doc}; account scope only when the task has an
 * account_id. */
json_t *storage_for_task(struct store_tx *tx, const json_t *task);
/* Bytes of the regular files under an instance's directory.  The walk
 * runs on the asking HTTP thread, so it stops after this many entries
 * (300 000 took 2 s) and sets *partial: the figure is then a lower bound. */
#define STORAGE_SIZE_MAX_ENTRIES 100000
/* ... and a listing's walks together stop after this many */
#define STORAGE_LIST_MAX_ENTRIES 200000
/* *budget (when not NULL): entries the caller may still walk over several
 * instances (a listing of 500), less what this walk took; none left: the
 * size is 0 and partial. */
int64_t storage_size(struct app *app, const char *project_id, const char *id, bool *partial,
                     int64_t *budget);

/* A shared copy of an instance (a store that keeps its files, store.h) is
 * written back within these: every entry and byte of the instance (an
 * instance past them is not written back, and says so), and each file. */
#define STORAGE_SYNC_MAX_BYTES (1LL << 30)
#define STORAGE_SYNC_MAX_FILE (64LL << 20)
/* Brings this node's copy of instance id (directory dir, owned by uid) up
 * to date from the store before a run mounts it: one query when it is;
 * else the files other nodes wrote back are fetched and those they deleted
 * removed, keeping what runs here changed and did not write back yet.
 * 1 when synced, 0 when the store keeps no files (SQLite: the directory is
 * the instance), or negative (the store or a file failed). */
int storage_sync_in(struct app *app, const char *id, const char *dir, unsigned uid);
/* Writes back what runs here changed in the copy since its last sync (new,
 * modified and deleted regular files) in one store commit.  Called after a
 * run that mounted it ends.  Appends to notes (a JSON array the caller
 * owns) one string per warning for the run's log: what was not written
 * back, or not saved, and why. */
int storage_sync_out(struct app *app, const char *project_id, const char *id, const char *dir,
                     json_t *notes);

#endif
