/*
 * ratelimit — a token bucket per API key: at most `per_s` requests a second
 * on average, `burst` at once.  Off (never called) unless quernd is
 * configured with a rate ([limits] requests_per_second).  Each node counts
 * its own requests: behind a load balancer over N nodes a key may make up to
 * N times the rate.
 */
#ifndef QUERN_RATELIMIT_H
#define QUERN_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

struct ratelimit;

/* A limiter of per_s requests a second and bursts of burst (both >= 1);
 * the caller owns it (ratelimit_free). */
struct ratelimit *ratelimit_new(int64_t per_s, int64_t burst);
void ratelimit_free(struct ratelimit *rl);

/* Takes one request from key's bucket at now_ms (a monotonic clock).
 * Returns 0 when the request may go on, with *remaining set to the whole
 * requests left in the bucket; otherwise the milliseconds (>= 1) until one
 * is available, and nothing is taken.  Thread-safe. */
int64_t ratelimit_take(struct ratelimit *rl, const char *key, int64_t now_ms,
                       int64_t *remaining);

/* Buckets held now (a full bucket is dropped when next met): for tests. */
size_t ratelimit_size(struct ratelimit *rl);

#endif
