/*
 * tapp.h — an app (store, event log, scheduler) over a fresh SQLite store
 * in its own temp directory, for the unit tests that drive the scheduler
 * (include after t.h).
 */
#ifndef QUERN_TAPP_H
#define QUERN_TAPP_H
#include "app.h"
#include "events.h"
#include "sched.h"
#include "tstore.h"
#include "util.h"

/* A new app: its data_dir a fresh temp directory, its store a SQLite file
 * there (fsync off), its event log and its scheduler (not started).  When
 * the directory or the store cannot be made, app->store is NULL (said on
 * stderr) and nothing else is made. */
static inline struct app *t_app_new(void)
{
    struct app *app = xcalloc(1, sizeof *app);
    char tmpl[] = "/tmp/quern-test-app-XXXXXX";
    if (!mkdtemp(tmpl)) {
        fprintf(stderr, "  mkdtemp: %s\n", strerror(errno));
        return app;
    }
    app->data_dir = xstrdup(tmpl);
    char *url = xasprintf("sqlite:%s/quern.db", app->data_dir);
    app->store = t_store_open(url, STORE_FSYNC_OFF);
    free(url);
    if (app->store) {
        app->events = events_new(app->store);
        app->sched = sched_new(app);
    }
    return app;
}

/* Frees what t_app_new made and removes its directory. */
static inline void t_app_free(struct app *app)
{
    if (app->sched)
        sched_free(app->sched);
    if (app->events)
        events_free(app->events);
    if (app->store)
        store_close(app->store);
    if (app->data_dir)
        nftw(app->data_dir, t_rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(app->data_dir);
    free(app);
}
#endif
