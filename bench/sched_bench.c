/*
 * sched_bench — the dispatcher's cost with 0, 100 000 and 1 000 000 queued
 * runs (it must stay flat), the memory a queued run costs in the ready set,
 * and the cron tick cost with 10 000 schedules.  Drives sched.c and cron.c
 * directly (no HTTP, no store), so it measures the dispatcher alone.
 *
 *   build/bench/sched_bench [max_queued]
 * Prints one JSON line per figure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "app.h"
#include "bench.h"
#include "cron.h"
#include "sched.h"
#include "util.h"

static const char *const prios[] = {"urgent", "high", "medium", "low"};

static void queue_runs(struct sched *s, long from, long n)
{
    for (long i = from; i < from + n; i++) {
        char id[64], task[64];
        snprintf(id, sizeof id, "run_%012ld", i);
        snprintf(task, sizeof task, "task_%012ld", i);
        json_t *run = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:b, s:[]}", "id", id,
                                "project_id", i % 10 ? "p1" : "p2", "task_id", task, "status",
                                "queued", "priority", prios[i % 4], "queued_ms",
                                (json_int_t)(now_ms() - 1000), "attempt", (json_int_t)1,
                                "has_code", 0, "blocked_by");
        sched_after_commit(s, run);
        json_decref(run);
    }
}

/* Takes and gives back `rounds` batches: the cost of one dispatch decision
 * at this queue depth (the set is left as it was). */
static double dispatch_rate(struct sched *s, int rounds)
{
    struct sched_filter f = {.project_id = "p1"};
    char *ids[1];
    double t0 = now_s();
    for (int i = 0; i < rounds; i++) {
        int n = sched_take(s, &f, ids, 1);
        if (n == 1) {
            sched_give_back(s, ids, 1);
            free(ids[0]);
        }
    }
    return rounds / (now_s() - t0);
}

int main(int argc, char **argv)
{
    long max = argc > 1 ? atol(argv[1]) : 1000000;
    struct app app = {0};
    app.sched = sched_new(&app);
    long base_rss = rss_kb();
    long depths[] = {0, 100000, 1000000};
    long queued = 0;
    for (size_t d = 0; d < 3 && depths[d] <= max; d++) {
        double t0 = now_s();
        queue_runs(app.sched, queued, depths[d] - queued);
        double fill = now_s() - t0;
        queued = depths[d];
        if (!queued)
            queue_runs(app.sched, 0, 1), queued = 1;
        double rate = dispatch_rate(app.sched, 200000);
        long rss = rss_kb();
        printf("{\"bench\":\"dispatch\",\"queued\":%ld,\"take_give_per_s\":%.0f,"
               "\"fill_s\":%.2f,\"rss_kb\":%ld,\"bytes_per_queued_run\":%.0f}\n",
               depths[d], rate, fill, rss, queued > 1 ? (rss - base_rss) * 1024.0 / queued : 0.0);
        fflush(stdout);
    }
    sched_free(app.sched);

    /* cron: one tick = finding the due schedules among 10 000 and
     * computing each one's next instant */
    static const char *const exprs[] = {"*/5 * * * *", "0 9 * * MON-FRI", "30 2 * * *",
                                        "*/10 * * * * *", "0 0 1 * *", "@hourly"};
    static const char *const zones[] = {"UTC", "America/New_York", "Europe/Berlin",
                                        "Asia/Kolkata", "Australia/Sydney"};
    enum { NS = 10000 };
    struct cron **c = xcalloc(NS, sizeof *c);
    const struct tz **z = xcalloc(NS, sizeof *z);
    int64_t *next = xcalloc(NS, sizeof *next);
    int64_t now = now_ms();
    for (int i = 0; i < NS; i++) {
        char *err = NULL;
        c[i] = cron_parse(exprs[i % 6], &err);
        free(err);
        err = NULL;
        z[i] = tz_get(zones[i % 5], &err);
        free(err);
        next[i] = cron_next(c[i], z[i], now);
    }
    int ticks = 200;
    double t0 = now_s();
    long fired = 0;
    for (int t = 0; t < ticks; t++) {
        int64_t at = now + (int64_t)t * 60000;   /* a minute per tick: many fire */
        for (int i = 0; i < NS; i++) {
            if (next[i] <= at) {
                next[i] = cron_next(c[i], z[i], at);
                fired++;
            }
        }
    }
    double per_tick = (now_s() - t0) / ticks;
    printf("{\"bench\":\"cron_tick\",\"schedules\":%d,\"tick_ms\":%.3f,\"fires_per_tick\":%.0f}\n",
           NS, per_tick * 1000, (double)fired / ticks);
    for (int i = 0; i < NS; i++)
        cron_free(c[i]);
    free(c);
    free(z);
    free(next);
    tz_cache_free();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"bench\":\"sched_bench\",\"peak_rss_kb\":%ld,\"cpu_s\":%.2f}\n", ru.ru_maxrss,
           ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
    return 0;
}
