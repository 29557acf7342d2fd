/*
 * sched_keys_bench — the dispatcher with many distinct concurrency keys (a
 * key per customer) and many runs blocked on one task.  Drives sched.c
 * directly (no HTTP, no store), like sched_bench.
 *
 *   build/bench/sched_keys_bench churn [n]     RSS after n runs of distinct
 *                                              keys came and went (100 000)
 *   build/bench/sched_keys_bench lease [keys]  one lease (take + give back)
 *                                              with `keys` full keys queued
 *                                              (10 000); the lease loop is
 *                                              the function `leases`, for
 *                                              callgrind --toggle-collect
 *   build/bench/sched_keys_bench open [keys]   the same with `keys` keys
 *                                              each with a free slot
 *   build/bench/sched_keys_bench blocked [n]   n runs blocked on one task
 *                                              (10 000)
 * Prints one JSON line per figure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app.h"
#include "bench.h"
#include "sched.h"
#include "util.h"

static void put(struct sched *s, long i, const char *status, const char *ckey, const char *dep)
{
    char id[64];
    snprintf(id, sizeof id, "run_%012ld", i);
    json_t *run = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:b, s:[]}", "id", id,
                            "project_id", "p1", "task_id", id, "status", status, "priority",
                            "medium", "queued_ms", (json_int_t)(now_ms() - 1000), "attempt",
                            (json_int_t)1, "has_code", 0, "blocked_by");
    if (ckey) {
        json_object_set_new(run, "concurrency_key", json_string(ckey));
        json_object_set_new(run, "max_concurrency", json_integer(1));
    }
    if (dep)
        json_array_append_new(json_object_get(run, "blocked_by"), json_string(dep));
    sched_after_commit(s, run);
    json_decref(run);
}

/* rounds of one lease decision (take one, give it back) */
__attribute__((noinline)) static long leases(struct sched *s, long rounds)
{
    struct sched_filter f = {.project_id = "p1"};
    char *ids[1];
    long got = 0;
    for (long i = 0; i < rounds; i++) {
        if (sched_take(s, &f, ids, 1) == 1) {
            sched_give_back(s, ids, 1);
            free(ids[0]);
            got++;
        }
    }
    return got;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "churn";
    long n = argc > 2 ? atol(argv[2]) : 0;
    struct app app = {0};
    app.sched = sched_new(&app);
    struct sched *s = app.sched;
    char key[64];
    if (!strcmp(mode, "churn")) {
        n = n ? n : 100000;
        long base = rss_kb();
        /* each run: queued with its own key, taken, running, completed */
        for (long i = 0; i < n; i++) {
            snprintf(key, sizeof key, "customer-%ld", i);
            put(s, i, "queued", key, NULL);
            struct sched_filter f = {.project_id = "p1"};
            char *ids[1];
            if (sched_take(s, &f, ids, 1) == 1)
                free(ids[0]);
            put(s, i, "running", key, NULL);
            put(s, i, "completed", key, NULL);
        }
        printf("{\"bench\":\"key_churn\",\"runs\":%ld,\"rss_growth_kb\":%ld}\n", n,
               rss_kb() - base);
    } else if (!strcmp(mode, "lease") || !strcmp(mode, "open")) {
        n = n ? n : 10000;
        bool full = !strcmp(mode, "lease");
        /* n keys: with "lease" each has one run running (its slot taken)
         * and one queued, so every key is full */
        for (long i = 0; i < n; i++) {
            snprintf(key, sizeof key, "customer-%ld", i);
            if (full)
                put(s, 2 * i, "running", key, NULL);
            put(s, 2 * i + 1, "queued", key, NULL);
        }
        put(s, 2 * n + 1, "queued", NULL, NULL);   /* one run anyone may take */
        long rounds = argc > 3 ? atol(argv[3]) : 20000;
        double t0 = now_s();
        long got = leases(s, rounds);
        double dt = now_s() - t0;
        printf("{\"bench\":\"lease_%s_keys\",\"keys\":%ld,\"leases\":%ld,\"ns_per_lease\":%.0f}\n",
               full ? "full" : "open", n, got, dt * 1e9 / rounds);
    } else if (!strcmp(mode, "blocked")) {
        n = n ? n : 10000;
        double t0 = now_s();
        for (long i = 0; i < n; i++)
            put(s, i, "queued", NULL, "task_dep");
        double dt = now_s() - t0;
        printf("{\"bench\":\"blocked_on_one_task\",\"runs\":%ld,\"us_per_add\":%.2f}\n", n,
               dt * 1e6 / n);
    }
    sched_free(s);
    return 0;
}
