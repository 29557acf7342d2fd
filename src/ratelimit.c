/*
 * ratelimit — token buckets per API key (see ratelimit.h).
 *
 * Called by the HTTP threads (auth_request), so the table is split in
 * stripes, each with its own mutex and chained buckets.  A bucket holds
 * milli-requests: it fills by per_s of them each millisecond up to
 * burst * 1000, and a request takes 1000.  A bucket that would be full
 * again tells nothing a missing one does not, so it is freed when its chain
 * is next walked: memory follows the keys in use, not every key ever seen.
 */
#include "ratelimit.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define STRIPES 32
#define HEADS 128   /* per stripe */

struct bucket {
    struct bucket *next;
    int64_t milli;     /* milli-requests in the bucket at `at` */
    int64_t at;        /* when milli was last brought up to date */
    char key[];
};

struct stripe {
    pthread_mutex_t lock;
    struct bucket *head[HEADS];
    size_t n;
};

struct ratelimit {
    int64_t per_s;     /* milli-requests added per millisecond */
    int64_t cap;       /* burst * 1000 */
    struct stripe stripes[STRIPES];
};

struct ratelimit *ratelimit_new(int64_t per_s, int64_t burst)
{
    struct ratelimit *rl = xcalloc(1, sizeof *rl);
    rl->per_s = per_s > 0 ? per_s : 1;
    rl->cap = (burst > 0 ? burst : 1) * 1000;
    for (size_t i = 0; i < STRIPES; i++)
        pthread_mutex_init(&rl->stripes[i].lock, NULL);
    return rl;
}

void ratelimit_free(struct ratelimit *rl)
{
    if (!rl)
        return;
    for (size_t i = 0; i < STRIPES; i++) {
        for (size_t h = 0; h < HEADS; h++) {
            struct bucket *b = rl->stripes[i].head[h];
            while (b) {
                struct bucket *next = b->next;
                free(b);
                b = next;
            }
        }
        pthread_mutex_destroy(&rl->stripes[i].lock);
    }
    free(rl);
}

/* b's milli-requests at now: what it held plus what flowed in since, at
 * most the cap (the product cannot overflow: the gap is capped first). */
static int64_t level(const struct ratelimit *rl, const struct bucket *b, int64_t now)
{
    int64_t gap = now - b->at;
    if (gap <= 0)
        return b->milli;
    if (gap >= rl->cap / rl->per_s + 1)
        return rl->cap;
    int64_t m = b->milli + gap * rl->per_s;
    return m < rl->cap ? m : rl->cap;
}

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;   /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

int64_t ratelimit_take(struct ratelimit *rl, const char *key, int64_t now_ms,
                       int64_t *remaining)
{
    uint64_t h = hash(key);
    struct stripe *s = &rl->stripes[h % STRIPES];
    pthread_mutex_lock(&s->lock);
    struct bucket **pp = &s->head[(h / STRIPES) % HEADS], *b = NULL;
    while (*pp) {
        struct bucket *c = *pp;
        if (!strcmp(c->key, key)) {
            b = c;
            pp = &c->next;
        } else if (level(rl, c, now_ms) >= rl->cap) {
            *pp = c->next;   /* full again: as good as absent */
            free(c);
            s->n--;
        } else {
            pp = &c->next;
        }
    }
    if (!b) {
        size_t n = strlen(key) + 1;
        b = xmalloc(sizeof *b + n);
        memcpy(b->key, key, n);
        b->milli = rl->cap;
        b->at = now_ms;
        b->next = s->head[(h / STRIPES) % HEADS];
        s->head[(h / STRIPES) % HEADS] = b;
        s->n++;
    }
    int64_t m = level(rl, b, now_ms);
    if (now_ms > b->at)
        b->at = now_ms;
    b->milli = m;
    int64_t wait = 0;
    if (m >= 1000) {
        b->milli = m - 1000;
        *remaining = b->milli / 1000;
    } else {
        wait = (1000 - m + rl->per_s - 1) / rl->per_s;
        if (wait < 1)
            wait = 1;
    }
    pthread_mutex_unlock(&s->lock);
    return wait;
}

size_t ratelimit_size(struct ratelimit *rl)
{
    size_t n = 0;
    for (size_t i = 0; i < STRIPES; i++) {
        pthread_mutex_lock(&rl->stripes[i].lock);
        n += rl->stripes[i].n;
        pthread_mutex_unlock(&rl->stripes[i].lock);
    }
    return n;
}
