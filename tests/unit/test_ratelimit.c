#include "t.h"
#include "ratelimit.h"
#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* The clock is passed in: every figure here is exact, no sleeping. */

TEST(burst_then_refused_with_the_wait)
{
    struct ratelimit *rl = ratelimit_new(2, 3);   /* 2/s, bursts of 3 */
    int64_t left = -1;
    CHECK_EQ_INT(ratelimit_take(rl, "key_a", 1000, &left), 0);
    CHECK_EQ_INT(left, 2);
    CHECK_EQ_INT(ratelimit_take(rl, "key_a", 1000, &left), 0);
    CHECK_EQ_INT(left, 1);
    CHECK_EQ_INT(ratelimit_take(rl, "key_a", 1000, &left), 0);
    CHECK_EQ_INT(left, 0);
    /* empty: one request flows in every 500 ms */
    CHECK_EQ_INT(ratelimit_take(rl, "key_a", 1000, &left), 500);
    CHECK_EQ_INT(ratelimit_take(rl, "key_a", 1200, &left), 300);
    CHECK_EQ_INT(ratelimit_take(rl, "key_a", 1500, &left), 0);
    CHECK_EQ_INT(left, 0);
    /* a refused request takes nothing: the next is still 500 ms away */
    CHECK_EQ_INT(ratelimit_take(rl, "key_a", 1500, &left), 500);
    ratelimit_free(rl);
}

TEST(keys_are_counted_apart)
{
    struct ratelimit *rl = ratelimit_new(1, 1);
    int64_t left;
    CHECK_EQ_INT(ratelimit_take(rl, "key_a", 0, &left), 0);
    CHECK(ratelimit_take(rl, "key_a", 0, &left) > 0);
    CHECK_EQ_INT(ratelimit_take(rl, "key_b", 0, &left), 0);   /* b untouched by a */
    CHECK(ratelimit_take(rl, "key_b", 0, &left) > 0);
    ratelimit_free(rl);
}

TEST(refill_stops_at_the_burst)
{
    struct ratelimit *rl = ratelimit_new(10, 5);
    int64_t left;
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(ratelimit_take(rl, "k", 0, &left), 0);
    CHECK(ratelimit_take(rl, "k", 0, &left) > 0);
    /* a day later: full (5), not 864 000 */
    int64_t day = 86400000;
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(ratelimit_take(rl, "k", day, &left), 0);
    CHECK_EQ_INT(left, 0);
    CHECK_EQ_INT(ratelimit_take(rl, "k", day, &left), 100);
    /* a clock that goes back adds nothing and breaks nothing */
    CHECK_EQ_INT(ratelimit_take(rl, "k", day - 5000, &left), 100);
    ratelimit_free(rl);
}

TEST(fractional_refill_is_kept)
{
    /* 3/s: 333.3 ms a request; three takes 1 s apart from empty succeed,
     * and the fractions are not lost along the way */
    struct ratelimit *rl = ratelimit_new(3, 1);
    int64_t left;
    CHECK_EQ_INT(ratelimit_take(rl, "k", 0, &left), 0);
    CHECK_EQ_INT(ratelimit_take(rl, "k", 0, &left), 334);
    CHECK(ratelimit_take(rl, "k", 333, &left) > 0);   /* 999 of 1000 */
    CHECK_EQ_INT(ratelimit_take(rl, "k", 334, &left), 0);
    ratelimit_free(rl);
}

TEST(full_buckets_are_dropped)
{
    struct ratelimit *rl = ratelimit_new(1000, 1);
    int64_t left;
    char key[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "key_%d", i);
        CHECK_EQ_INT(ratelimit_take(rl, key, 0, &left), 0);
    }
    CHECK_EQ_INT((int)ratelimit_size(rl), 5000);
    /* 10 ms later every bucket is full again: a chain walked by another
     * key's request frees them (without that, 10 000 would be held) */
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "other_%d", i);
        CHECK_EQ_INT(ratelimit_take(rl, key, 10, &left), 0);
    }
    CHECK(ratelimit_size(rl) < 8000);
    ratelimit_free(rl);
}

struct taker {
    struct ratelimit *rl;
    int ok;
};

static void *take_many(void *arg)
{
    struct taker *t = arg;
    int64_t left;
    for (int i = 0; i < 1000; i++)
        if (ratelimit_take(t->rl, "shared", 0, &left) == 0)
            t->ok++;
    return NULL;
}

TEST(threads_share_one_bucket_exactly)
{
    struct ratelimit *rl = ratelimit_new(1, 100);
    struct taker t[4] = {{rl, 0}, {rl, 0}, {rl, 0}, {rl, 0}};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, take_many, &t[i]);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ_INT(t[0].ok + t[1].ok + t[2].ok + t[3].ok, 100);
    ratelimit_free(rl);
}
