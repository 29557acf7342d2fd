/*
 * The dispatcher with an injected clock (util_fake_now_ms): priority order
 * and FIFO, ageing, retry delays that become ready when the clock passes
 * them, concurrency keys, round-robin across projects, and cron counting
 * of missed fires — all deterministic, no real time in the assertions.
 */
#include "t.h"
#include "tapp.h"

#include <unistd.h>

#include "app.h"
#include "events.h"
#include "run.h"
#include "sched.h"
#include "task.h"
#include "util.h"

static const int64_t T0 = 1795383722000LL;   /* 2026-11-22T21:42:02Z */

static void queue(struct app *app, const char *id, const char *project, const char *prio,
                  int64_t queued_ms, int64_t not_before, const char *ckey, int cmax,
                  const char *status)
{
    json_t *run = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:b, s:[]}", "id", id,
                            "project_id", project, "task_id", id, "status", status ? status : "queued",
                            "priority", prio, "queued_ms", (json_int_t)queued_ms, "not_before_ms",
                            (json_int_t)not_before, "attempt", (json_int_t)1, "has_code", 0,
                            "blocked_by");
    if (ckey) {
        json_object_set_new(run, "concurrency_key", json_string(ckey));
        json_object_set_new(run, "max_concurrency", json_integer(cmax));
    }
    sched_after_commit(app->sched, run);
    json_decref(run);
}

static char *take1(struct app *app, const char *project)
{
    struct sched_filter f = {.project_id = project};
    char *ids[1];
    return sched_take(app->sched, &f, ids, 1) == 1 ? ids[0] : NULL;
}

static bool take_is(struct app *app, const char *project, const char *want)
{
    char *got = take1(app, project);
    bool ok = (got && want && !strcmp(got, want)) || (!got && !want);
    if (!ok)
        fprintf(stderr, "  took %s, wanted %s\n", got ? got : "(none)", want ? want : "(none)");
    free(got);
    return ok;
}

TEST(priority_order_then_fifo)
{
    util_fake_now_ms = T0;
    struct app *app = t_app_new();
    queue(app, "l1", "p", "low", T0, 0, NULL, 0, NULL);
    queue(app, "m1", "p", "medium", T0 + 1, 0, NULL, 0, NULL);
    queue(app, "u1", "p", "urgent", T0 + 2, 0, NULL, 0, NULL);
    queue(app, "m2", "p", "medium", T0 + 3, 0, NULL, 0, NULL);
    queue(app, "h1", "p", "high", T0 + 4, 0, NULL, 0, NULL);
    CHECK(take_is(app, "p", "u1"));
    CHECK(take_is(app, "p", "h1"));
    CHECK(take_is(app, "p", "m1"));
    CHECK(take_is(app, "p", "m2"));
    CHECK(take_is(app, "p", "l1"));
    CHECK(take_is(app, "p", NULL));
    t_app_free(app);
}

TEST(ageing_lifts_a_long_waiting_run)
{
    util_fake_now_ms = T0;
    struct app *app = t_app_new();
    /* a low run that has waited 3 minutes (60 s per level) ties with a fresh
     * urgent one, and the older goes first */
    queue(app, "old-low", "p", "low", T0 - 180000, 0, NULL, 0, NULL);
    queue(app, "new-urgent", "p", "urgent", T0, 0, NULL, 0, NULL);
    CHECK(take_is(app, "p", "old-low"));
    /* one that has waited only 1 minute does not pass an urgent one */
    queue(app, "low2", "p", "low", T0 - 60000, 0, NULL, 0, NULL);
    CHECK(take_is(app, "p", "new-urgent"));
    CHECK(take_is(app, "p", "low2"));
    t_app_free(app);
}

TEST(a_retry_delay_becomes_ready_when_the_clock_passes_it)
{
    util_fake_now_ms = T0;
    struct app *app = t_app_new();
    queue(app, "later", "p", "medium", T0, T0 + 60000, NULL, 0, NULL);
    CHECK(take_is(app, "p", NULL));
    CHECK(!sched_has_ready(app->sched, "p"));
    util_fake_now_ms = T0 + 60001;
    /* the scheduler's timer loop (no store needed for this) promotes it:
     * wait for that event, bounded */
    CHECK_EQ_INT(sched_start_timers_only(app->sched), 0);
    for (int i = 0; i < 2000 && !sched_has_ready(app->sched, "p"); i++)
        usleep(1000);
    CHECK(take_is(app, "p", "later"));
    t_app_free(app);
}

TEST(a_concurrency_key_holds_extra_runs)
{
    util_fake_now_ms = T0;
    struct app *app = t_app_new();
    queue(app, "a", "p", "medium", T0, 0, "p\x1fkey:db", 2, NULL);
    queue(app, "b", "p", "medium", T0 + 1, 0, "p\x1fkey:db", 2, NULL);
    queue(app, "c", "p", "medium", T0 + 2, 0, "p\x1fkey:db", 2, NULL);
    queue(app, "d", "p", "medium", T0 + 3, 0, "p\x1fkey:other", 1, NULL);
    CHECK(take_is(app, "p", "a"));
    CHECK(take_is(app, "p", "b"));
    CHECK(take_is(app, "p", "d"));   /* c is held: two of db are taken */
    CHECK(take_is(app, "p", NULL));
    /* a finishes: its slot frees, c goes */
    queue(app, "a", "p", "medium", T0, 0, "p\x1fkey:db", 2, "completed");
    CHECK(take_is(app, "p", "c"));
    t_app_free(app);
}

/* A queued medium run of project, with code or not, for agent (or none). */
static void queue_for(struct app *app, const char *id, const char *project, int64_t queued_ms,
                      bool code, const char *agent)
{
    json_t *run = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:b, s:[]}", "id", id,
                            "project_id", project, "task_id", id, "status", "queued", "priority",
                            "medium", "queued_ms", (json_int_t)queued_ms, "attempt", (json_int_t)1,
                            "has_code", code, "blocked_by");
    if (agent)
        json_object_set_new(run, "agent_id", json_string(agent));
    sched_after_commit(app->sched, run);
    json_decref(run);
}

TEST(the_executor_serves_projects_round_robin)
{
    util_fake_now_ms = T0;
    struct app *app = t_app_new();
    char id[32];
    for (int i = 0; i < 100; i++) {
        snprintf(id, sizeof id, "big-%03d", i);
        queue_for(app, id, "big", T0 + i, true, NULL);
    }
    queue_for(app, "small-1", "small", T0 + 500, true, NULL);
    /* one dispatch round of two slots serves both projects */
    struct sched_filter f = {.executor = true};
    char *ids[2];
    int n = sched_take(app->sched, &f, ids, 2);
    CHECK_EQ_INT(n, 2);
    bool saw_small = false;
    for (int i = 0; i < n; i++) {
        saw_small |= !strcmp(ids[i], "small-1");
        free(ids[i]);
    }
    CHECK(saw_small);
    t_app_free(app);
}

TEST(missed_cron_fires_are_counted_not_replayed)
{
    json_t *task = json_pack("{s:s, s:s}", "schedule", "*/10 * * * *", "timezone", "UTC");
    /* down from 00:00:30 to 01:00:30: fires at :10 :20 … 01:00 were missed */
    int64_t from = T0 - (T0 % 3600000), to = from + 3600000 + 30000;
    CHECK_EQ_INT(task_fires_between(task, from, to, 1000), 6);
    CHECK_EQ_INT(task_fires_between(task, from, to, 2), 2);   /* bounded */
    task_schedule_next(task, from);
    CHECK_EQ_STR(json_string_value(json_object_get(task, "next_run_at")) + 13, ":10:00.000Z");
    json_object_set_new(task, "paused", json_true());
    task_schedule_next(task, from);
    CHECK(json_is_null(json_object_get(task, "next_run_at")));
    json_decref(task);
    /* back 0.3 s after the last missed instant: it counts (it was neither
     * run nor counted), and the next fire is the one after */
    task = json_pack("{s:s, s:s}", "schedule", "*/5 * * * * *", "timezone", "UTC");
    int64_t due = T0 - (T0 % 60000);
    CHECK_EQ_INT(task_missed_fires(task, due, due + 5300, 1000), 1);
    CHECK_EQ_INT(task_missed_fires(task, due, due + 5000, 1000), 1);
    CHECK_EQ_INT(task_missed_fires(task, due, due + 4999, 1000), 0);
    CHECK_EQ_INT(task_missed_fires(task, due, due + 12000, 1000), 2);
    task_schedule_next(task, due + 5300);
    CHECK_EQ_STR(json_string_value(json_object_get(task, "next_run_at")) + 17, "10.000Z");
    json_decref(task);
}

static void queue_def(struct app *app, const char *id, const char *def, int64_t queued_ms, bool code)
{
    json_t *run = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:b, s:[]}", "id", id,
                            "project_id", "p", "task_id", id, "status", "queued", "priority", "medium",
                            "definition_id", def, "runtime_id", "sh", "queued_ms",
                            (json_int_t)queued_ms, "attempt", (json_int_t)1, "has_code", code,
                            "blocked_by");
    sched_after_commit(app->sched, run);
    json_decref(run);
}

TEST(a_filter_finds_its_runs_behind_many_it_does_not_take)
{
    util_fake_now_ms = T0;
    struct app *app = t_app_new();
    char id[32];
    /* 1000 runs of definition A, then one of B and one code run: a worker
     * of B and the executor each find theirs (one list per project scanned
     * 256 entries and found nothing) */
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof id, "a-%04d", i);
        queue_def(app, id, "def_a", T0 + i, false);
    }
    queue_def(app, "b-1", "def_b", T0 + 2000, false);
    queue_def(app, "code-1", "def_c", T0 + 2001, true);
    const char *defs[] = {"def_b"};
    struct sched_filter fb = {.project_id = "p", .definitions = defs, .ndefinitions = 1};
    struct sched_filter fc = {.project_id = "p", .definitions = (const char *[]){"def_c"},
                              .ndefinitions = 1};
    CHECK(sched_has_fit(app->sched, &fb));
    CHECK(!sched_has_fit(app->sched, &fc));   /* a code run: only runtimes or the executor */
    char *ids[2];
    CHECK_EQ_INT(sched_take(app->sched, &fb, ids, 2), 1);
    CHECK_EQ_STR(ids[0], "b-1");
    free(ids[0]);
    CHECK(!sched_has_fit(app->sched, &fb));
    CHECK(sched_has_ready(app->sched, "p"));
    struct sched_filter fx = {.executor = true};
    CHECK_EQ_INT(sched_take(app->sched, &fx, ids, 2), 1);
    CHECK_EQ_STR(ids[0], "code-1");
    free(ids[0]);
    /* with no filter, FIFO across definitions */
    queue_def(app, "b-2", "def_b", T0 - 5, false);
    CHECK(take_is(app, "p", "b-2"));
    CHECK(take_is(app, "p", "a-0000"));
    CHECK(take_is(app, "p", "a-0001"));
    t_app_free(app);
}

TEST(an_agent_finds_its_run_behind_many_for_another_agent)
{
    util_fake_now_ms = T0;
    struct app *app = t_app_new();
    char id[32];
    /* 300 runs for agent zz, then one for agent z2: z2's worker gets it
     * (one class for both agents scanned 256 and found nothing) */
    for (int i = 0; i < 300; i++) {
        snprintf(id, sizeof id, "zz-%04d", i);
        queue_for(app, id, "p", T0 + i, false, "zz");
    }
    queue_for(app, "z2-1", "p", T0 + 1000, false, "z2");
    struct sched_filter f2 = {.project_id = "p", .agent_id = "z2"};
    struct sched_filter fnone = {.project_id = "p"};
    CHECK(sched_has_fit(app->sched, &f2));
    CHECK(!sched_has_fit(app->sched, &fnone));   /* runs meant for an agent are its own */
    char *ids[2];
    CHECK_EQ_INT(sched_take(app->sched, &f2, ids, 2), 1);
    CHECK_EQ_STR(ids[0], "z2-1");
    free(ids[0]);
    struct sched_filter fz = {.project_id = "p", .agent_id = "zz"};
    CHECK_EQ_INT(sched_take(app->sched, &fz, ids, 2), 2);
    CHECK_EQ_STR(ids[0], "zz-0000");
    free(ids[0]);
    free(ids[1]);
    t_app_free(app);
}

static int put_fn(struct store_tx *tx, void *arg)
{
    json_t *docs = arg;
    size_t i;
    json_t *d;
    int rc = store_put(tx, SK_PROJECT, "p", json_array_get(docs, 0));
    json_array_foreach(docs, i, d) {
        if (i && !rc)
            rc = store_put(tx, SK_RUN, "p", d);
    }
    return rc;
}

TEST(start_loads_unfinished_runs_only_in_pages)
{
    util_fake_now_ms = T0;
    struct app *app = t_app_new();
    json_t *docs = json_array();
    json_array_append_new(docs, json_pack("{s:s, s:s}", "id", "p", "name", "p"));
    char id[32];
    /* more queued runs than one load page, among finished ones */
    for (int i = 0; i < 70000; i++) {
        snprintf(id, sizeof id, "r-%05d", i);
        const char *st = i % 2 ? "completed" : i % 10 == 4 ? "running" : "queued";
        json_array_append_new(docs, json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:b, s:[]}", "id", id,
                                              "project_id", "p", "task_id", id, "status", st,
                                              "priority", "medium", "queued_ms", (json_int_t)(T0 + i),
                                              "attempt", (json_int_t)1, "has_code", 0, "blocked_by"));
    }
    CHECK_EQ_INT(store_write(app->store, put_fn, docs), 0);
    json_decref(docs);
    CHECK_EQ_INT(sched_start(app->sched), 0);
    int64_t d[4];
    sched_depths(app->sched, d);
    CHECK_EQ_INT(d[2], 28000);   /* 35 000 even, 7 000 of them running: two pages */
    CHECK(take_is(app, "p", "r-00000"));
    CHECK(take_is(app, "p", "r-00002"));
    t_app_free(app);
}

static void note_woken(void *ctx)
{
    (*(int *)ctx)++;
}

TEST(a_run_wakes_a_waiter_that_takes_it)
{
    util_fake_now_ms = T0;
    struct app *app = t_app_new();
    const char *da[] = {"def_a"}, *db[] = {"def_b"};
    struct sched_filter fa = {.project_id = "p", .definitions = da, .ndefinitions = 1};
    struct sched_filter fb = {.project_id = "p", .definitions = db, .ndefinitions = 1};
    int woke_a = 0, woke_b = 0;
    /* a's waiter is the oldest: a run of b used to wake it (and b's worker slept on) */
    struct sched_waiter *wa = sched_wait_filter(app->sched, "p", &fa, mono_ms() + 60000, note_woken,
                                                &woke_a);
    struct sched_waiter *wb = sched_wait_filter(app->sched, "p", &fb, mono_ms() + 60000, note_woken,
                                                &woke_b);
    queue_def(app, "b-1", "def_b", T0, false);
    CHECK_EQ_INT(woke_b, 1);
    CHECK_EQ_INT(woke_a, 0);
    CHECK(!sched_unwait(app->sched, wb));   /* already woken and gone */
    queue_def(app, "a-1", "def_a", T0 + 1, false);
    CHECK_EQ_INT(woke_a, 1);
    CHECK(!sched_unwait(app->sched, wa));
    t_app_free(app);
}

TEST(a_retry_ages_from_the_end_of_its_delay)
{
    /* a low retry told to wait 3 minutes is not an urgent run when the wait
     * ends: it aged over its delay and went before a fresh urgent run */
    util_fake_now_ms = T0 + 180001;
    struct app *app = t_app_new();
    queue(app, "low-retry", "p", "low", T0, T0 + 180000, NULL, 0, NULL);
    queue(app, "urgent", "p", "urgent", T0 + 180000, 0, NULL, 0, NULL);
    CHECK(take_is(app, "p", "urgent"));
    CHECK(take_is(app, "p", "low-retry"));
    t_app_free(app);
}

TEST(a_run_given_back_keeps_its_place)
{
    /* a run taken and given back (its lease not written) is still the
     * oldest: it went behind the runs queued after it */
    util_fake_now_ms = T0;
    struct app *app = t_app_new();
    queue(app, "first", "p", "medium", T0, 0, NULL, 0, NULL);
    queue(app, "second", "p", "medium", T0 + 1, 0, NULL, 0, NULL);
    char *got = take1(app, "p");
    CHECK(got && !strcmp(got, "first"));
    sched_give_back(app->sched, &got, 1);
    free(got);
    CHECK(take_is(app, "p", "first"));
    CHECK(take_is(app, "p", "second"));
    t_app_free(app);
}

/* run.c hands the scheduler sched_run_copy's fields after the commit: they
 * must outlive the document and not follow changes made to it meanwhile. */
TEST(a_run_copy_outlives_its_document)
{
    util_fake_now_ms = T0;
    json_t *run = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:b,"
                            " s:[s], s:s, s:I, s:s}",
                            "id", "r-1", "project_id", "p", "task_id", "t-1", "status", "running",
                            "priority", "high", "executor", "local", "node_id", "n-1",
                            "definition_id", "d-1", "concurrency_key", "k", "attempt",
                            (json_int_t)3, "queued_ms", (json_int_t)T0, "max_concurrency",
                            (json_int_t)2, "has_code", 1, "blocked_by", "t-0",
                            "lease_expires_at", "2026-11-22T21:42:03.000Z", "deadline_ms",
                            (json_int_t)(T0 + 5), "interaction", "x");
    struct sched_run *r = sched_run_copy(run);
    json_array_clear(json_object_get(run, "blocked_by"));
    json_decref(run);
    CHECK_EQ_STR(r->id, "r-1");
    CHECK_EQ_STR(r->project_id, "p");
    CHECK_EQ_STR(r->task_id, "t-1");
    CHECK_EQ_STR(r->definition_id, "d-1");
    CHECK_EQ_STR(r->node_id, "n-1");
    CHECK_EQ_STR(r->concurrency_key, "k");
    CHECK(!r->agent_id && !r->runtime_id);
    CHECK(r->local && r->has_code && r->holds_slot);
    CHECK_EQ_INT(r->status, RS_RUNNING);
    CHECK_EQ_INT(r->prio, sched_priority_parse("high"));
    CHECK_EQ_INT(r->attempt, 3);
    CHECK_EQ_INT(r->queued_ms, T0);
    CHECK_EQ_INT(r->lease_expires_ms, T0 + 1000);
    CHECK_EQ_INT(r->deadline_ms, T0 + 5);
    CHECK_EQ_INT(r->max_concurrency, 2);
    CHECK_EQ_INT(json_array_size(r->blocked_by), 1);
    CHECK_EQ_STR(json_string_value(json_array_get(r->blocked_by, 0)), "t-0");
    sched_run_free(r);
    /* the fields a document lacks read as none */
    run = json_pack("{s:s, s:s, s:s, s:[]}", "id", "r-2", "project_id", "p", "status", "queued",
                    "blocked_by");
    r = sched_run_copy(run);
    json_decref(run);
    CHECK_EQ_STR(r->id, "r-2");
    CHECK(!r->task_id && !r->node_id && !r->concurrency_key && !r->blocked_by);
    CHECK(!r->local && !r->has_code && !r->holds_slot);
    CHECK_EQ_INT(r->status, RS_QUEUED);
    CHECK_EQ_INT(r->prio, -1);
    CHECK_EQ_INT(r->lease_expires_ms, 0);
    sched_run_free(r);
}

/* A key per customer: each run's class (and its key's slot count) goes
 * when no run refers to it any more.  The classes were kept until
 * sched_free: 100 000 distinct keys that came and went held 35 MB. */
TEST(classes_of_distinct_keys_are_freed_when_their_runs_end)
{
    util_fake_now_ms = T0;
    struct app *app = t_app_new();
    char id[32], key[32];
    for (int i = 0; i < 500; i++) {
        snprintf(id, sizeof id, "run-%03d", i);
        snprintf(key, sizeof key, "customer-%03d", i);
        queue(app, id, "p", "medium", T0, 0, key, 1, NULL);
        CHECK(take_is(app, "p", id));
        queue(app, id, "p", "medium", T0, 0, key, 1, "running");
        queue(app, id, "p", "medium", T0, 0, key, 1, "completed");
    }
    CHECK_EQ_INT(sched_class_count(app->sched), 0);
    /* a class shared by a taken run and a queued one lives until both end */
    queue(app, "s1", "p", "medium", T0, 0, "shared", 2, NULL);
    CHECK(take_is(app, "p", "s1"));
    queue(app, "s2", "p", "medium", T0 + 1, 0, "shared", 2, NULL);
    queue(app, "s1", "p", "medium", T0, 0, "shared", 2, "completed");
    CHECK_EQ_INT(sched_class_count(app->sched), 1);
    CHECK(take_is(app, "p", "s2"));
    queue(app, "s2", "p", "medium", T0 + 1, 0, "shared", 2, "failed");
    CHECK_EQ_INT(sched_class_count(app->sched), 0);
    t_app_free(app);
}

/* A full key's class is off the list a lease walks, and back on it as a
 * slot frees, with its runs in their order. */
TEST(a_full_key_rejoins_dispatch_when_a_slot_frees)
{
    util_fake_now_ms = T0;
    struct app *app = t_app_new();
    queue(app, "k1", "p", "medium", T0, 0, "k", 1, NULL);
    queue(app, "k2", "p", "medium", T0 + 1, 0, "k", 1, NULL);
    queue(app, "k3", "p", "medium", T0 + 2, 0, "k", 1, NULL);
    CHECK(take_is(app, "p", "k1"));
    CHECK(take_is(app, "p", NULL));
    queue(app, "free", "p", "low", T0 + 3, 0, NULL, 0, NULL);
    CHECK(take_is(app, "p", "free"));
    queue(app, "k1", "p", "medium", T0, 0, "k", 1, "completed");
    CHECK(take_is(app, "p", "k2"));
    CHECK(take_is(app, "p", NULL));
    queue(app, "k2", "p", "medium", T0 + 1, 0, "k", 1, "completed");
    CHECK(take_is(app, "p", "k3"));
    t_app_free(app);
}

/* Runs of different classes in line from the same millisecond go by run
 * id (ids begin with their creation time), whatever order their classes
 * were made in: it was the order of the project's list of classes. */
TEST(ties_between_classes_go_by_run_id)
{
    util_fake_now_ms = T0;
    struct app *app = t_app_new();
    queue(app, "run-a", "p", "medium", T0, 0, "kx", 5, NULL);
    queue(app, "run-b", "p", "medium", T0, 0, "ky", 5, NULL);
    CHECK(take_is(app, "p", "run-a"));
    CHECK(take_is(app, "p", "run-b"));
    queue(app, "run-d", "q", "medium", T0, 0, "ky", 5, NULL);
    queue(app, "run-c", "q", "medium", T0, 0, "kx", 5, NULL);
    CHECK(take_is(app, "q", "run-c"));
    CHECK(take_is(app, "q", "run-d"));
    t_app_free(app);
}
