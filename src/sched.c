/*
 * sched — see sched.h for the model and the threads.
 *
 * Data.  Every run the scheduler knows is an entry in one hash map by run
 * id.  A ready entry is also on a FIFO list for its priority (doubly
 * linked, so removal is O(1)) in its class: the runs of one project with
 * the same definition, code flag and runtime, which is what a lease filter
 * selects on.  A delayed entry is in a binary heap by not_before; a blocked
 * entry waits for its dependencies; a leased entry carries its lease
 * expiry.  Dispatch looks at the classes the filter accepts and takes the
 * oldest head of the highest priority: its cost depends on neither how many
 * runs are queued nor how many of them another filter wants (with one list
 * per project, 256 runs of another definition ahead hid a worker's runs).
 */
#include "sched.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app.h"
#include "blob.h"
#include "events.h"
#include "log.h"
#include "metrics.h"
#include "run.h"
#include "store.h"
#include "task.h"
#include "runner.h"
#include "util.h"

#define NPRIO 4
#define AGE_MS 60000
#define MAP_INIT 1024
#define TOMBS 4096               /* recently dropped runs remembered (remote order) */
#define REMOTE_GRACE_MS 150      /* a queued run another node announced waits this long here */
#define SWEEP_MS 2000            /* leader: how often it looks for runs of dead nodes */
#define NOT_LEADER_RECHECK_MS 1000

/* Where an entry is: ready to take, waiting for a retry delay, blocked on
 * dependencies, taken by a dispatcher, or active (running, leased, waiting
 * for a human — anything not finished that is not queued). */
enum where { W_NONE, W_READY, W_DELAYED, W_BLOCKED, W_TAKEN, W_ACTIVE };

struct entry {
    char *run_id;
    char *project_id;
    char *task_id;
    char *definition_id;
    char *agent_id;
    char *runtime_id;
    bool has_code;
    int prio;
    int64_t queued_ms;
    int64_t not_before_ms;
    int64_t ready_ms;              /* FIFO and ageing: max(queued_ms, not_before_ms);
                                    * ties between classes: run_id */
    int64_t lease_expires_ms;
    int64_t deadline_ms;           /* 0: none */
    int64_t timer_ms;              /* key in the timer heap; 0: not in it */
    char *ckey;                    /* concurrency key (project-qualified) or NULL */
    int64_t cmax;
    bool counted;                  /* holds one of its key's concurrency slots */
    int64_t attempt;
    char *node_id;                 /* the node executing it (local executor), or NULL */
    uint64_t gen;                  /* s->gen at its last local apply */
    json_t *blocked_by;    /* task ids, while W_BLOCKED */
    enum where where;
    struct entry *prev, *next;     /* its class's ready list */
    struct rclass *rc;             /* its class when last ready (holds one of its refs) */
    size_t heap_idx;
    struct entry *hnext;           /* hash chain */
    struct project *proj;
};

struct project {
    char *id;
    struct rclass *classes;        /* classes with ready runs */
    int64_t nready;
    struct project *hnext;
};

/* The ready runs of one project that one lease filter either takes or not:
 * same definition, code flag and runtime.  On its project's list while it
 * has ready runs and its concurrency key is not full, so a lease walks only
 * classes it could take from (10 000 full keys queued cost every lease
 * 10 000 looks).  It lives while an entry refers to it (entry.rc), so an
 * entry made ready again reuses its class without building the key, and a
 * key per customer no longer leaves a class behind for ever. */
struct rclass {
    char *key;                     /* project \x1f code flag \x1f runtime \x1f definition \x1f agent
                                    * \x1f max_concurrency \x1f concurrency key */
    char *definition_id, *runtime_id, *agent_id;
    char *ckey;                    /* the concurrency key of its runs, or NULL */
    int64_t cmax;
    bool has_code;
    struct project *proj;
    struct entry *head[NPRIO], *tail[NPRIO];
    int64_t n;
    int64_t refs;                  /* entries whose rc is this class */
    bool linked;                   /* on proj->classes: n > 0 and the key not full */
    struct kv *conc;               /* its concurrency key's slots (s->conc), or NULL */
    struct rclass *hnext;          /* s->rclasses chain */
    struct rclass *pprev, *pnext;  /* proj->classes */
    struct rclass *kprev, *knext;  /* conc->classes */
};

struct sched_waiter {
    char *project_id;
    const struct sched_filter *f;  /* NULL: woken by any run of the project */
    int64_t deadline;
    void (*wake)(void *ctx);
    bool (*gone)(void *ctx);       /* NULL: never asked */
    void *ctx;
    struct sched_waiter *prev, *next;
};

struct work {
    json_t *run;       /* a finished or changed run to act on */
    char *expire_run;  /* a lease to expire */
    int64_t attempt;
    int64_t at_mono;   /* not before (a retry after a failed write); 0: now */
    struct work *next;
};

struct cron_entry {
    char *project_id, *task_id;
    int64_t next_ms;          /* INT64_MAX while a fire is in flight */
    int64_t retry_ms;         /* a fire of next_ms failed: not again before (0: none) */
    struct cron_entry *hnext;
};

#define CRON_SLOTS 4096

/* A counter or a list keyed by string: concurrency slots in use (and the
 * classes of that key, which keep it while they live), runs blocked on a
 * task, tasks that depend on a task. */
struct kv {
    char *key;
    int64_t n;
    json_t *list;
    json_t *set;                   /* list's values as keys: the duplicate check */
    struct rclass *classes;
    struct kv *hnext;
};

#define KV_SLOTS 4096

struct sched {
    struct rclass *rclasses[KV_SLOTS];
    int64_t next_prune;            /* mono ms of the next retention pass */
    struct kv *conc[KV_SLOTS];     /* concurrency key -> slots in use */
    struct kv *blocked[KV_SLOTS];  /* project/task -> run ids blocked on it */
    struct kv *dependants[KV_SLOTS]; /* project/task -> task ids depending on it */
    struct cron_entry *cron[CRON_SLOTS];
    int64_t ncron;
    struct app *app;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    pthread_t thread;
    /* wall ms the scheduler thread sleeps until; 0 while it is awake (it
     * looks at the timer heap before it sleeps again) */
    int64_t sleep_until, sleep_until_mono;
    bool running, stopping, draining;
    bool loading;                  /* sched_start's load: ready lists are sorted after it */
    struct entry **map;
    size_t map_cap, map_len;
    struct project **pmap;
    size_t pmap_cap;
    struct entry **heap;
    size_t heap_len, heap_cap;
    struct sched_waiter *waiters;
    struct work *work_head, *work_tail;
    int64_t depth[NPRIO];
    /* several nodes: local applies bump gen; a remote read taken before a
     * local apply of the same run is older than it and is ignored */
    uint64_t gen;
    struct {
        char *id;
        uint64_t gen;
    } tombs[TOMBS];
    size_t ntomb;
    int64_t grace_ms;
    int64_t next_sweep;
    int64_t resync_at;             /* mono ms of a resync to try again (0: none due) */
    json_t *suspect;               /* node id -> true: looked dead at the last sweep */
    bool watching;
    const char *test_dep_hold;     /* QUERN_TEST_DEP_START_LOST or _FAIL (tests only), or NULL */
    bool test_dep_rollback;        /* it was _FAIL */
};

static const char *const prio_names[NPRIO] = {"urgent", "high", "medium", "low"};

/* The statuses of a run that is not finished: what the scheduler loads. */
static const char *const unfinished[] = {"queued", "running", "paused", "interaction_required",
                                         "review_required", "canceling"};

int sched_priority_parse(const char *name)
{
    for (int i = 0; name && i < NPRIO; i++)
        if (!strcmp(prio_names[i], name))
            return i;
    return -1;
}

const char *sched_priority_name(int p)
{
    return p >= 0 && p < NPRIO ? prio_names[p] : "medium";
}

/* ---- the run map ---- */

static struct entry *map_get(struct sched *s, const char *id)
{
    for (struct entry *e = s->map[str_hash(id) & (s->map_cap - 1)]; e; e = e->hnext)
        if (!strcmp(e->run_id, id))
            return e;
    return NULL;
}

static void map_grow(struct sched *s)
{
    size_t cap = s->map_cap * 2;
    struct entry **m = xcalloc(cap, sizeof *m);
    for (size_t i = 0; i < s->map_cap; i++) {
        for (struct entry *e = s->map[i], *n; e; e = n) {
            n = e->hnext;
            size_t k = str_hash(e->run_id) & (cap - 1);
            e->hnext = m[k];
            m[k] = e;
        }
    }
    free(s->map);
    s->map = m;
    s->map_cap = cap;
}

static void map_put(struct sched *s, struct entry *e)
{
    if (s->map_len * 2 >= s->map_cap)
        map_grow(s);
    size_t k = str_hash(e->run_id) & (s->map_cap - 1);
    e->hnext = s->map[k];
    s->map[k] = e;
    s->map_len++;
}

static void map_del(struct sched *s, struct entry *e)
{
    for (struct entry **pp = &s->map[str_hash(e->run_id) & (s->map_cap - 1)]; *pp; pp = &(*pp)->hnext) {
        if (*pp == e) {
            *pp = e->hnext;
            s->map_len--;
            return;
        }
    }
}

static struct project *project_get(struct sched *s, const char *id)
{
    size_t k = str_hash(id) % s->pmap_cap;
    for (struct project *p = s->pmap[k]; p; p = p->hnext)
        if (!strcmp(p->id, id))
            return p;
    struct project *p = xcalloc(1, sizeof *p);
    p->id = xstrdup(id);
    p->hnext = s->pmap[k];
    s->pmap[k] = p;
    return p;
}

/* ---- the delay heap ---- */

static void heap_swap(struct sched *s, size_t a, size_t b)
{
    struct entry *t = s->heap[a];
    s->heap[a] = s->heap[b];
    s->heap[b] = t;
    s->heap[a]->heap_idx = a;
    s->heap[b]->heap_idx = b;
}

static void heap_up(struct sched *s, size_t i)
{
    while (i && s->heap[(i - 1) / 2]->timer_ms > s->heap[i]->timer_ms) {
        heap_swap(s, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(struct sched *s, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->heap_len && s->heap[l]->timer_ms < s->heap[m]->timer_ms)
            m = l;
        if (r < s->heap_len && s->heap[r]->timer_ms < s->heap[m]->timer_ms)
            m = r;
        if (m == i)
            return;
        heap_swap(s, i, m);
        i = m;
    }
}

static void heap_push(struct sched *s, struct entry *e)
{
    if (s->heap_len == s->heap_cap) {
        s->heap_cap = s->heap_cap ? s->heap_cap * 2 : 64;
        s->heap = xrealloc(s->heap, s->heap_cap * sizeof *s->heap);
    }
    e->heap_idx = s->heap_len;
    s->heap[s->heap_len++] = e;
    heap_up(s, e->heap_idx);
}

static void heap_remove(struct sched *s, struct entry *e)
{
    size_t i = e->heap_idx;
    s->heap_len--;
    if (i != s->heap_len) {
        heap_swap(s, i, s->heap_len);
        heap_down(s, i);
        heap_up(s, i);
    }
}

/* ---- ready classes ---- */

/* The agent is part of the class: 256 runs for one agent queued ahead hid
 * another agent's run from its own worker (the scan's bound).  So is the
 * concurrency key (with its max_concurrency): a class is then held back
 * as a whole while its key is full, and the runs of a free key behind 256
 * held ones are no longer out of a dispatcher's sight. */
static char *rclass_key(const struct entry *e)
{
    return xasprintf("%s\x1f%d\x1f%s\x1f%s\x1f%s\x1f%lld\x1f%s", e->project_id, e->has_code ? 1 : 0,
                     e->has_code && e->runtime_id ? e->runtime_id : "",
                     e->definition_id ? e->definition_id : "", e->agent_id ? e->agent_id : "",
                     (long long)(e->ckey ? e->cmax : 0), e->ckey ? e->ckey : "");
}

static bool same_str(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b));
}

static bool rclass_matches(const struct rclass *c, const struct entry *e)
{
    return c->proj == e->proj && c->has_code == e->has_code &&
           same_str(c->runtime_id, e->has_code ? e->runtime_id : NULL) &&
           same_str(c->definition_id, e->definition_id) && same_str(c->agent_id, e->agent_id) &&
           same_str(c->ckey, e->ckey) && c->cmax == (e->ckey ? e->cmax : 0);
}

static struct kv *kv_get(struct kv **table, const char *key, bool create);
static void kv_del(struct kv **table, const char *key);

/* The class of an entry about to be ready (mu held): its last one when its
 * fields still match, else found or made by key. */
static struct rclass *rclass_get(struct sched *s, const struct entry *e)
{
    if (e->rc && rclass_matches(e->rc, e))
        return e->rc;
    char *key = rclass_key(e);
    size_t k = str_hash(key) % KV_SLOTS;
    struct rclass *c;
    for (c = s->rclasses[k]; c; c = c->hnext)
        if (!strcmp(c->key, key))
            break;
    if (c) {
        free(key);
        return c;
    }
    c = xcalloc(1, sizeof *c);
    c->key = key;
    c->has_code = e->has_code;
    c->runtime_id = e->has_code && e->runtime_id ? xstrdup(e->runtime_id) : NULL;
    c->definition_id = e->definition_id ? xstrdup(e->definition_id) : NULL;
    c->agent_id = e->agent_id ? xstrdup(e->agent_id) : NULL;
    c->ckey = e->ckey ? xstrdup(e->ckey) : NULL;
    c->cmax = e->ckey ? e->cmax : 0;
    c->proj = e->proj;
    c->hnext = s->rclasses[k];
    s->rclasses[k] = c;
    if (c->ckey) {
        c->conc = kv_get(s->conc, c->ckey, true);
        c->knext = c->conc->classes;
        if (c->knext)
            c->knext->kprev = c;
        c->conc->classes = c;
    }
    return c;
}

static void rclass_release(struct rclass *c)
{
    free(c->key);
    free(c->definition_id);
    free(c->runtime_id);
    free(c->agent_id);
    free(c->ckey);
    free(c);
}

/* Puts c on (or takes it off) its project's list of classes to take from. */
static void rclass_link(struct rclass *c, bool on)
{
    if (c->linked == on)
        return;
    c->linked = on;
    if (on) {
        c->pprev = NULL;
        c->pnext = c->proj->classes;
        if (c->pnext)
            c->pnext->pprev = c;
        c->proj->classes = c;
        return;
    }
    if (c->pprev)
        c->pprev->pnext = c->pnext;
    else
        c->proj->classes = c->pnext;
    if (c->pnext)
        c->pnext->pprev = c->pprev;
    c->pprev = c->pnext = NULL;
}

/* Links c when a lease could take from it: it has ready runs and its
 * concurrency key has a free slot (called when either changes). */
static void rclass_update(struct rclass *c)
{
    bool full = c->conc && c->cmax > 0 && c->conc->n >= c->cmax;
    rclass_link(c, c->n > 0 && !full);
}

/* Drops an entry's reference to c (mu held); the last one frees it, and
 * its key's slots when none is held either. */
static void rclass_put(struct sched *s, struct rclass *c)
{
    if (--c->refs > 0)
        return;
    rclass_link(c, false);
    for (struct rclass **pp = &s->rclasses[str_hash(c->key) % KV_SLOTS]; *pp; pp = &(*pp)->hnext) {
        if (*pp == c) {
            *pp = c->hnext;
            break;
        }
    }
    struct kv *k = c->conc;
    if (k) {
        if (c->kprev)
            c->kprev->knext = c->knext;
        else
            k->classes = c->knext;
        if (c->knext)
            c->knext->kprev = c->kprev;
        if (k->n <= 0 && !k->classes)
            kv_del(s->conc, k->key);
    }
    rclass_release(c);
}

/* Sets e's class to c, dropping its reference to the one before. */
static void entry_set_class(struct sched *s, struct entry *e, struct rclass *c)
{
    if (e->rc == c)
        return;
    c->refs++;
    if (e->rc)
        rclass_put(s, e->rc);
    e->rc = c;
}

/* ---- entries ---- */

static void unlink_entry(struct sched *s, struct entry *e)
{
    switch (e->where) {
    case W_READY: {
        struct rclass *c = e->rc;
        if (e->prev)
            e->prev->next = e->next;
        else
            c->head[e->prio] = e->next;
        if (e->next)
            e->next->prev = e->prev;
        else
            c->tail[e->prio] = e->prev;
        e->prev = e->next = NULL;
        c->n--;
        rclass_update(c);
        e->proj->nready--;
        s->depth[e->prio]--;
        break;
    }
    default:
        break;
    }
    e->where = W_NONE;
}

/* ---- keyed counters and lists ---- */

static struct kv *kv_get(struct kv **table, const char *key, bool create)
{
    struct kv **pp = &table[str_hash(key) % KV_SLOTS];
    for (; *pp; pp = &(*pp)->hnext)
        if (!strcmp((*pp)->key, key))
            return *pp;
    if (!create)
        return NULL;
    struct kv *k = xcalloc(1, sizeof *k);
    k->key = xstrdup(key);
    *pp = k;
    return k;
}

static void kv_del(struct kv **table, const char *key)
{
    for (struct kv **pp = &table[str_hash(key) % KV_SLOTS]; *pp; pp = &(*pp)->hnext) {
        if (!strcmp((*pp)->key, key)) {
            struct kv *k = *pp;
            *pp = k->hnext;
            free(k->key);
            json_decref(k->list);
            json_decref(k->set);
            free(k);
            return;
        }
    }
}

static void kv_free_all(struct kv **table)
{
    for (size_t i = 0; i < KV_SLOTS; i++)
        for (struct kv *k = table[i], *n; k; k = n) {
            n = k->hnext;
            free(k->key);
            json_decref(k->list);
            json_decref(k->set);
            free(k);
        }
}

/* Appends value to key's list unless it is there.  The check is a hash
 * lookup: a walk of the list made 10 000 runs blocked on one task cost
 * 50 M string compares (batch creates ~6x slower). */
static void kv_append(struct kv **table, const char *key, const char *value)
{
    struct kv *k = kv_get(table, key, true);
    if (!k->list) {
        k->list = json_array();
        k->set = json_object();
    }
    if (json_object_get(k->set, value))
        return;
    json_object_set_new(k->set, value, json_true());
    json_array_append_new(k->list, json_string(value));
}

static char *task_key(const char *project, const char *task)
{
    return xasprintf("%s\x1f%s", project, task);
}

static void waiter_wake_for(struct sched *s, const struct entry *e);
static void waiter_wake_key(struct sched *s, struct project *p, struct kv *k);

/* Counts e in (or out of) its concurrency key's slots; the key's classes
 * leave (or rejoin) the lists leases walk as it fills (or frees).  A freed
 * slot may let a held run go: wake whoever dispatches. */
static void set_counted(struct sched *s, struct entry *e, bool counted)
{
    if (!e->ckey || e->counted == counted)
        return;
    /* its class holds the key's counter (its ckey is e's, which never
     * changes): no hash walk, long with a million keys in 4096 slots */
    struct kv *k = e->rc && e->rc->conc ? e->rc->conc : kv_get(s->conc, e->ckey, true);
    k->n += counted ? 1 : -1;
    e->counted = counted;
    for (struct rclass *c = k->classes; c; c = c->knext)
        rclass_update(c);
    if (!counted) {
        if (s->app->runner)
            runner_wake(s->app->runner);
        waiter_wake_key(s, e->proj, k);
        if (k->n <= 0 && !k->classes)
            kv_del(s->conc, e->ckey);
    }
}

static bool key_full(struct sched *s, const char *ckey, int64_t cmax)
{
    if (!ckey || cmax <= 0)
        return false;
    struct kv *k = kv_get(s->conc, ckey, false);
    return k && k->n >= cmax;
}

static bool conc_full(struct sched *s, const struct entry *e)
{
    return key_full(s, e->ckey, e->cmax);
}

/* Puts e in the timer heap at its next due time: the retry delay while
 * delayed, the lease expiry while leased, and the deadline always. */
static void set_timer(struct sched *s, struct entry *e)
{
    int64_t t = e->deadline_ms;
    if (e->where == W_DELAYED && e->not_before_ms && (!t || e->not_before_ms < t))
        t = e->not_before_ms;
    if (e->where == W_ACTIVE && e->lease_expires_ms && (!t || e->lease_expires_ms < t))
        t = e->lease_expires_ms;
    if (e->timer_ms)
        heap_remove(s, e);
    e->timer_ms = t;
    if (t) {
        heap_push(s, e);
        /* wake the thread only when this timer is due before it would
         * wake anyway: every lease sets one (its expiry), and a wake-up per
         * lease was ~2 context switches per job */
        if (s->sleep_until && t < s->sleep_until)
            pthread_cond_signal(&s->cond);
    }
}

static void entry_free(struct entry *e)
{
    free(e->node_id);
    free(e->ckey);
    free(e->run_id);
    free(e->project_id);
    free(e->task_id);
    free(e->definition_id);
    free(e->agent_id);
    free(e->runtime_id);
    json_decref(e->blocked_by);
    free(e);
}

static void drop(struct sched *s, struct entry *e)
{
    size_t t = s->ntomb++ % TOMBS;
    free(s->tombs[t].id);
    s->tombs[t].id = xstrdup(e->run_id);
    s->tombs[t].gen = s->gen;
    unlink_entry(s, e);
    set_counted(s, e, false);
    if (e->timer_ms)
        heap_remove(s, e);
    if (e->rc)
        rclass_put(s, e->rc);
    map_del(s, e);
    entry_free(e);
}

/* Links e into its class's list for its priority in ready_ms order (FIFO):
 * after the last entry that became ready no later than it.  Runs mostly
 * come in that order, so the walk back from the tail is short; a run given
 * back goes to its place instead of behind the runs queued after it, which
 * is where a restart (which sorts what it loads, sort_ready) puts it too.
 * (A run whose dependencies were met is in line from then: run_unblocked.) */
static void make_ready(struct sched *s, struct entry *e)
{
    struct project *p = e->proj;
    struct rclass *c = rclass_get(s, e);
    entry_set_class(s, e, c);
    e->where = W_READY;
    struct entry *after = c->tail[e->prio];
    while (!s->loading && after && after->ready_ms > e->ready_ms)
        after = after->prev;
    e->prev = after;
    e->next = after ? after->next : c->head[e->prio];
    if (e->next)
        e->next->prev = e;
    else
        c->tail[e->prio] = e;
    if (after)
        after->next = e;
    else
        c->head[e->prio] = e;
    c->n++;
    rclass_update(c);
    p->nready++;
    s->depth[e->prio]++;
    if (e->has_code && s->app->runner)
        runner_wake(s->app->runner);
    waiter_wake_for(s, e);
}

/* Places a queued run where it belongs: blocked, delayed or ready. */
static void place(struct sched *s, struct entry *e)
{
    set_counted(s, e, false);
    if (json_array_size(e->blocked_by)) {
        e->where = W_BLOCKED;
        size_t i;
        json_t *t;
        json_array_foreach(e->blocked_by, i, t) {
            char *k = task_key(e->project_id, json_string_value(t));
            kv_append(s->blocked, k, e->run_id);
            free(k);
        }
    } else if (e->not_before_ms > now_ms()) {
        e->where = W_DELAYED;
    } else {
        make_ready(s, e);
    }
    set_timer(s, e);
}

void sched_run_read(struct sched_run *r, const json_t *run)
{
    r->id = json_string_value(json_object_get(run, "id"));
    r->project_id = json_string_value(json_object_get(run, "project_id"));
    r->task_id = json_string_value(json_object_get(run, "task_id"));
    r->definition_id = json_string_value(json_object_get(run, "definition_id"));
    r->agent_id = json_string_value(json_object_get(run, "agent_id"));
    r->runtime_id = json_string_value(json_object_get(run, "runtime_id"));
    r->node_id = json_string_value(json_object_get(run, "node_id"));
    r->concurrency_key = json_string_value(json_object_get(run, "concurrency_key"));
    r->status = (int)run_status_of(run);
    r->prio = sched_priority_parse(json_string_value(json_object_get(run, "priority")));
    r->has_code = json_is_true(json_object_get(run, "has_code"));
    const char *ex = json_string_value(json_object_get(run, "executor"));
    r->local = ex && !strcmp(ex, "local");
    r->holds_slot = run_holds_slot(run);
    r->attempt = json_integer_value(json_object_get(run, "attempt"));
    r->queued_ms = json_integer_value(json_object_get(run, "queued_ms"));
    r->not_before_ms = json_integer_value(json_object_get(run, "not_before_ms"));
    int64_t le = 0;
    const char *l = json_string_value(json_object_get(run, "lease_expires_at"));
    if (l)
        rfc3339_parse(l, &le);
    r->lease_expires_ms = le;
    r->deadline_ms = json_integer_value(json_object_get(run, "deadline_ms"));
    r->max_concurrency = json_integer_value(json_object_get(run, "max_concurrency"));
    json_t *bb = json_object_get(run, "blocked_by");
    r->blocked_by = json_is_array(bb) ? bb : NULL;
}

struct sched_run *sched_run_copy(const json_t *run)
{
    struct sched_run v;
    sched_run_read(&v, run);
    const char **strs[] = {&v.id, &v.project_id, &v.task_id, &v.definition_id,
                           &v.agent_id, &v.runtime_id, &v.node_id, &v.concurrency_key};
    size_t len[ARRAY_LEN(strs)], total = sizeof v;
    for (size_t i = 0; i < ARRAY_LEN(strs); i++) {
        len[i] = *strs[i] ? strlen(*strs[i]) : 0;
        total += *strs[i] ? len[i] + 1 : 0;
    }
    struct sched_run *r = xmalloc(total);
    char *p = (char *)(r + 1);
    for (size_t i = 0; i < ARRAY_LEN(strs); i++) {
        if (!*strs[i])
            continue;
        memcpy(p, *strs[i], len[i] + 1);
        *strs[i] = p;
        p += len[i] + 1;
    }
    /* run.c changes blocked_by in place (dep_fn): the copy has its own */
    v.blocked_by = json_array_size(v.blocked_by) ? json_deep_copy(v.blocked_by) : NULL;
    *r = v;
    return r;
}

void sched_run_free(struct sched_run *r)
{
    if (!r)
        return;
    json_decref(r->blocked_by);
    free(r);
}

static char *dup_str(const char *v)
{
    return v ? xstrdup(v) : NULL;
}

static void fill_entry(struct sched *s, struct entry *e, const struct sched_run *r)
{
    free(e->task_id);
    free(e->definition_id);
    free(e->agent_id);
    free(e->runtime_id);
    e->task_id = dup_str(r->task_id);
    e->definition_id = dup_str(r->definition_id);
    e->agent_id = dup_str(r->agent_id);
    e->runtime_id = dup_str(r->runtime_id);
    e->has_code = r->has_code;
    e->prio = r->prio < 0 ? 2 : r->prio;
    e->queued_ms = r->queued_ms;
    e->not_before_ms = r->not_before_ms;
    /* a retry is in line from the end of its delay: the wait it was told
     * to make is not waiting for a slot (it aged past urgent runs) */
    e->ready_ms = e->not_before_ms > e->queued_ms ? e->not_before_ms : e->queued_ms;
    e->attempt = r->attempt;
    json_decref(e->blocked_by);
    e->blocked_by = json_incref(r->blocked_by);
    e->lease_expires_ms = r->lease_expires_ms;
    e->deadline_ms = r->deadline_ms;
    free(e->node_id);
    e->node_id = r->local ? dup_str(r->node_id) : NULL;
    if (!e->ckey && r->concurrency_key && r->max_concurrency > 0) {
        e->ckey = xasprintf("%s\x1f%s", e->project_id, r->concurrency_key);
        e->cmax = r->max_concurrency;
    }
    (void)s;
}

/* Applies a run's new state (mu held). */
static void apply(struct sched *s, const struct sched_run *r)
{
    const char *id = r->id;
    const char *project = r->project_id;
    if (!id || !project)
        return;
    enum run_status st = (enum run_status)r->status;
    struct entry *e = map_get(s, id);
    if (run_status_terminal(st)) {
        if (e)
            drop(s, e);
        return;
    }
    if (!e) {
        e = xcalloc(1, sizeof *e);
        e->run_id = xstrdup(id);
        e->project_id = xstrdup(project);
        e->proj = project_get(s, project);
        map_put(s, e);
    } else {
        unlink_entry(s, e);
    }
    fill_entry(s, e, r);
    if (st == RS_QUEUED) {
        place(s, e);
    } else {
        e->where = W_ACTIVE;
        /* running, canceling and (once started) waiting on a human hold a
         * concurrency slot; a run held for approval has not started */
        set_counted(s, e, r->holds_slot);
        set_timer(s, e);
    }
}

/* True when a run blocked on run's task, or a task depending on it, is
 * known here (mu held): only then has handle_finished anything to do, and a
 * wake-up of the scheduler thread for every finished run is saved. */
static bool has_dependants(struct sched *s, const struct sched_run *r)
{
    const char *task_id = r->task_id;
    const char *project = r->project_id;
    if (!task_id || !project)
        return false;
    char *key = task_key(project, task_id);
    bool found = kv_get(s->blocked, key, false) || kv_get(s->dependants, key, false);
    free(key);
    return found;
}

/* Queues run for handle_finished on the scheduler thread, not before
 * at_mono (0: at once) (mu held). */
static void queue_work(struct sched *s, json_t *run, int64_t at_mono)
{
    struct work *w = xcalloc(1, sizeof *w);
    w->run = json_incref(run);
    w->at_mono = at_mono;
    if (s->work_tail)
        s->work_tail->next = w;
    else
        s->work_head = w;
    s->work_tail = w;
    pthread_cond_signal(&s->cond);
}

/* A run that ended with runs or tasks depending on its task known here:
 * they act on it from the scheduler thread (mu held), from the fields
 * handle_finished and dep_fn read. */
static void queue_finished(struct sched *s, const struct sched_run *r)
{
    if (!run_status_terminal((enum run_status)r->status) || !has_dependants(s, r))
        return;
    json_t *run = json_object();
    json_object_set_new_nocheck(run, "id", json_string(r->id));
    json_object_set_new_nocheck(run, "project_id", json_string(r->project_id));
    json_object_set_new_nocheck(run, "task_id", json_string(r->task_id));
    json_object_set_new_nocheck(run, "status",
                                json_string(run_status_name((enum run_status)r->status)));
    queue_work(s, run, 0);
    json_decref(run);
}

/* r holds the fields sched_run_read takes (run_sched_fields names them for
 * the store's reads): a field read here from a run must be added there. */
void sched_after_commit_run(struct sched *s, const struct sched_run *r)
{
    enum run_status st = (enum run_status)r->status;
    /* canceling, or ended by someone else (a PATCH, set_output) while its
     * code may still live: nothing of a run outlives it (a no-op when its
     * box is already gone).  review_required too: a completion from
     * outside of a run with require_review left its code running, and the
     * code's own end then completed the run past the review. */
    if ((st == RS_CANCELING || st == RS_REVIEW_REQUIRED || run_status_terminal(st)) && r->local)
        runner_cancel(s->app->runner, r->id);
    pthread_mutex_lock(&s->mu);
    s->gen++;
    struct entry *e = map_get(s, r->id ?: "");
    if (st == RS_RUNNING && e && (e->where == W_TAKEN || e->where == W_READY)) {
        /* dispatch latency: queued -> started, once per start */
        if (r->queued_ms > 0)
            metrics_dispatch(now_ms() - r->queued_ms);
    }
    apply(s, r);
    e = map_get(s, r->id ?: "");
    if (e)
        e->gen = s->gen;
    queue_finished(s, r);
    pthread_mutex_unlock(&s->mu);
}

void sched_after_commit(struct sched *s, json_t *run)
{
    struct sched_run r;
    sched_run_read(&r, run);
    sched_after_commit_run(s, &r);
}

/* ---- several nodes: what the others changed ---- */

static void cron_set(struct sched *s, const char *project, const char *task, int64_t next);
static void note_dependants(struct sched *s, const char *project, const char *task, json_t *deps);

/* True when run id was dropped by a local apply newer than g0 (mu held). */
static bool tomb_newer(struct sched *s, const char *id, uint64_t g0)
{
    size_t n = s->ntomb < TOMBS ? s->ntomb : TOMBS;
    for (size_t i = 0; i < n; i++)
        if (s->tombs[i].gen > g0 && !strcmp(s->tombs[i].id, id))
            return true;
    return false;
}

/* Applies a run another node changed, read after gen g0 (mu held).  A
 * local apply since g0 is newer and wins.  A queued run the other node just
 * announced is left to that node for grace_ms (it usually starts it at
 * once), so the nodes do not all race for every run.  *cancel gets the
 * run's id when code running here must stop. */
static void apply_remote(struct sched *s, const json_t *run, uint64_t g0, json_t *cancel)
{
    const char *id = json_string_value(json_object_get(run, "id"));
    if (!id)
        return;
    struct entry *e = map_get(s, id);
    if (e ? e->gen > g0 : tomb_newer(s, id, g0))
        return;
    enum run_status st = run_status_of(run);
    const char *ex = json_string_value(json_object_get(run, "executor"));
    const char *node = json_string_value(json_object_get(run, "node_id"));
    if (ex && !strcmp(ex, "local") && node && !strcmp(node, store_node_id(s->app->store)) &&
        (st == RS_CANCELING || st == RS_REVIEW_REQUIRED || run_status_terminal(st)))
        json_array_append_new(cancel, json_string(id));
    json_int_t attempt = json_integer_value(json_object_get(run, "attempt"));
    if (e && st == RS_QUEUED && e->where != W_ACTIVE && e->attempt == attempt &&
        json_array_size(json_object_get(run, "blocked_by")) == json_array_size(e->blocked_by))
        return;   /* still queued here as there: nothing dispatch cares about changed */
    bool fresh = !e || e->where == W_ACTIVE;
    struct sched_run r;
    sched_run_read(&r, run);
    apply(s, &r);
    e = map_get(s, id);
    if (e && fresh && e->where == W_READY && s->grace_ms > 0) {
        unlink_entry(s, e);
        e->not_before_ms = now_ms() + s->grace_ms;
        e->where = W_DELAYED;
        set_timer(s, e);
    }
}

static void cancel_local(struct sched *s, json_t *cancel)
{
    size_t i;
    json_t *v;
    json_array_foreach(cancel, i, v) runner_cancel(s->app->runner, json_string_value(v));
}

struct remote_read {
    json_t *run_ids, *task_ids;
    json_t *runs, *tasks;          /* id -> doc */
};

static int remote_read_fn(struct store_tx *tx, void *arg)
{
    struct remote_read *a = arg;
    int rc = store_get_many(tx, SK_RUN, a->run_ids, &a->runs);
    if (!rc)
        rc = store_get_many(tx, SK_TASK, a->task_ids, &a->tasks);
    return rc;
}

/* The schedule and dependants of a task (mu held); doc NULL: it is gone. */
static void task_seen(struct sched *s, const char *project, const char *id, const json_t *doc)
{
    cron_set(s, project, id, doc ? task_next_ms(doc) : -1);
    if (doc)
        note_dependants(s, project, id, json_object_get(doc, "dependencies"));
}

struct resync_read {
    json_t *runs;    /* every unfinished run */
    json_t *tasks;   /* every scheduled task */
};

static int each_page(struct store_tx *tx, enum store_kind kind, const char *field,
                     const char *value, const char *const *fields,
                     void (*page_fn)(void *ctx, json_t *page), void *ctx);

static void extend_fn(void *ctx, json_t *page)
{
    json_array_extend(ctx, page);
}

static int resync_fn(struct store_tx *tx, void *arg)
{
    struct resync_read *a = arg;
    a->runs = json_array();
    a->tasks = json_array();
    for (size_t i = 0; i < ARRAY_LEN(unfinished); i++) {
        int rc = each_page(tx, SK_RUN, "status", unfinished[i], run_sched_fields, extend_fn, a->runs);
        if (rc)
            return rc;
    }
    return each_page(tx, SK_TASK, "scheduled", "true", NULL, extend_fn, a->tasks);
}

/* Notifications may have been missed: reload every unfinished run and every
 * schedule, and forget runs that finished meanwhile. */
static void resync(struct sched *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t g0 = s->gen;
    pthread_mutex_unlock(&s->mu);
    struct resync_read a = {NULL, NULL};
    if (store_read(s->app->store, resync_fn, &a)) {
        json_decref(a.runs);
        json_decref(a.tasks);
        /* Tried again each second until it reads: it comes when the store's
         * listener is back, often before reads are (PostgreSQL restarting),
         * and a node left with what it knew before the outage never
         * expired the leases of runs it had not heard of. */
        pthread_mutex_lock(&s->mu);
        s->resync_at = mono_ms() + 1000;
        pthread_cond_signal(&s->cond);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    json_t *cancel = json_array(), *live = json_object();
    pthread_mutex_lock(&s->mu);
    size_t i;
    json_t *d;
    json_array_foreach(a.runs, i, d) {
        json_object_set(live, json_string_value(json_object_get(d, "id")) ?: "", json_true());
        apply_remote(s, d, g0, cancel);
    }
    struct entry **gone = NULL;
    size_t ngone = 0;
    for (size_t k = 0; k < s->map_cap; k++)
        for (struct entry *e = s->map[k]; e; e = e->hnext)
            if (!json_object_get(live, e->run_id) && e->gen <= g0 && e->where != W_TAKEN) {
                gone = xrealloc(gone, (ngone + 1) * sizeof *gone);
                gone[ngone++] = e;
            }
    for (size_t k = 0; k < ngone; k++)
        drop(s, gone[k]);
    free(gone);
    json_array_foreach(a.tasks, i, d)
        task_seen(s, json_string_value(json_object_get(d, "project_id")),
                  json_string_value(json_object_get(d, "id")), d);
    pthread_mutex_unlock(&s->mu);
    cancel_local(s, cancel);
    json_decref(cancel);
    json_decref(live);
    json_decref(a.runs);
    json_decref(a.tasks);
}

/* The store's watcher (its listener thread): runs and tasks other nodes
 * committed.  They are read again here, so what is applied is never older
 * than the notification. */
static void on_changes(void *ctx, const struct store_change *ch, size_t n)
{
    struct sched *s = ctx;
    if (!ch) {
        resync(s);
        return;
    }
    struct remote_read a = {json_array(), json_array(), NULL, NULL};
    for (size_t i = 0; i < n; i++) {
        if (ch[i].events) {
            /* only events (log entries, task events): streams read them */
            if (s->app->events)
                events_remote(s->app->events, ch[i].project_id, *ch[i].id ? ch[i].id : NULL);
            continue;
        }
        json_array_append_new(ch[i].kind == SK_RUN ? a.run_ids : a.task_ids, json_string(ch[i].id));
    }
    pthread_mutex_lock(&s->mu);
    uint64_t g0 = s->gen;
    pthread_mutex_unlock(&s->mu);
    if (store_read(s->app->store, remote_read_fn, &a)) {
        json_decref(a.run_ids);
        json_decref(a.task_ids);
        json_decref(a.runs);
        json_decref(a.tasks);
        resync(s);   /* best effort; the next reconnect resyncs too */
        return;
    }
    json_t *cancel = json_array();
    if (s->app->events) {
        const char *id;
        json_t *doc;
        json_object_foreach(a.runs, id, doc) events_remote_run(s->app->events, doc);
    }
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < n; i++) {
        if (ch[i].events)
            continue;
        if (ch[i].kind == SK_RUN) {
            json_t *doc = json_object_get(a.runs, ch[i].id);
            struct entry *e = doc ? NULL : map_get(s, ch[i].id);
            /* The node that ended it acts on its dependants too, but may
             * not have heard yet of a dependant made through another node
             * just before (or may die first): every node that knows one
             * does it.  Both writes are idempotent (dep_fn looks at
             * blocked_by under the row lock; start_dependants_fn at the
             * dependency runs a task was last acted on for). */
            if (doc) {
                apply_remote(s, doc, g0, cancel);
                struct sched_run r;
                sched_run_read(&r, doc);
                queue_finished(s, &r);
            } else if (e && e->gen <= g0 && e->where != W_TAKEN)
                drop(s, e);   /* deleted */
        } else {
            task_seen(s, ch[i].project_id, ch[i].id, json_object_get(a.tasks, ch[i].id));
        }
    }
    pthread_mutex_unlock(&s->mu);
    cancel_local(s, cancel);
    json_decref(cancel);
    json_decref(a.run_ids);
    json_decref(a.task_ids);
    json_decref(a.runs);
    json_decref(a.tasks);
}

/* ---- taking work ---- */

static bool in_list(const char *v, const char *const *list, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        if (!strcmp(list[i], v))
            return true;
    return false;
}

static bool fits(struct sched *s, const struct entry *e, const struct sched_filter *f)
{
    if (conc_full(s, e))
        return false;
    if (e->agent_id && (!f->agent_id || strcmp(e->agent_id, f->agent_id)))
        return false;
    if (f->executor)
        return e->has_code;
    if (e->has_code && !in_list(e->runtime_id, f->runtimes, f->nruntimes))
        return false;
    if (f->ndefinitions && !in_list(e->definition_id, f->definitions, f->ndefinitions))
        return false;
    return true;
}

/* Whether f takes runs of class c at all (the class-wide part of fits). */
static bool class_fits(const struct rclass *c, const struct sched_filter *f)
{
    if (c->agent_id && (!f->agent_id || strcmp(c->agent_id, f->agent_id)))
        return false;
    if (f->executor)
        return c->has_code;
    if (c->has_code && !in_list(c->runtime_id, f->runtimes, f->nruntimes))
        return false;
    if (f->ndefinitions && !in_list(c->definition_id, f->definitions, f->ndefinitions))
        return false;
    return true;
}

/* Whether a is in line before b: by ready_ms, then by run id.  Ids begin
 * with their creation time (id_new), so heads of different classes in line
 * from the same millisecond go in creation order (to the millisecond, then
 * by the id's random part) -- the same order after a restart.  It was the
 * order the classes happened to be on their project's list. */
static bool in_line_before(const struct entry *a, const struct entry *b)
{
    if (a->ready_ms != b->ready_ms)
        return a->ready_ms < b->ready_ms;
    return strcmp(a->run_id, b->run_id) < 0;
}

/* The best ready entry of p for f: the highest priority, with ageing, FIFO
 * (the oldest head among the classes f accepts).  A class whose
 * concurrency key is full is not on the list (rclass_update). */
static struct entry *best(struct sched *s, struct project *p, const struct sched_filter *f,
                          int64_t now)
{
    struct entry *cand[NPRIO] = {0};
    for (struct rclass *c = p->classes; c; c = c->pnext) {
        if (!class_fits(c, f))
            continue;
        for (int q = 0; q < NPRIO; q++) {
            struct entry *e = c->head[q];
            if (e && (!cand[q] || in_line_before(e, cand[q])))
                cand[q] = e;
        }
    }
    struct entry *pick = NULL;
    int64_t pick_score = 0;
    for (int q = 0; q < NPRIO; q++) {
        struct entry *e = cand[q];
        if (!e)
            continue;
        /* effective level: q minus one per AGE_MS waited (ageing) */
        int64_t waited = now - e->ready_ms;
        int64_t lift = waited > 0 ? waited / AGE_MS : 0;
        int64_t score = (int64_t)q - lift;
        if (!pick || score < pick_score || (score == pick_score && in_line_before(e, pick))) {
            pick = e;
            pick_score = score;
        }
    }
    return pick;
}

int sched_take(struct sched *s, const struct sched_filter *f, char **ids, int max)
{
    int n = 0;
    int64_t now = now_ms();
    pthread_mutex_lock(&s->mu);
    if (s->draining) {
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    if (f->project_id) {
        struct project *p = project_get(s, f->project_id);
        while (n < max && p->nready) {
            struct entry *e = best(s, p, f, now);
            if (!e)
                break;
            unlink_entry(s, e);
            e->where = W_TAKEN;
            set_counted(s, e, true);
            ids[n++] = xstrdup(e->run_id);
        }
    } else {
        /* every project, round-robin: one run from each in turn */
        bool progress = true;
        while (n < max && progress) {
            progress = false;
            for (size_t k = 0; k < s->pmap_cap && n < max; k++) {
                for (struct project *p = s->pmap[k]; p && n < max; p = p->hnext) {
                    if (!p->nready)
                        continue;
                    struct entry *e = best(s, p, f, now);
                    if (!e)
                        continue;
                    unlink_entry(s, e);
                    e->where = W_TAKEN;
                    set_counted(s, e, true);
                    ids[n++] = xstrdup(e->run_id);
                    progress = true;
                }
            }
        }
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

void sched_give_back(struct sched *s, char **ids, int n)
{
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < n; i++) {
        struct entry *e = map_get(s, ids[i]);
        if (e && e->where == W_TAKEN) {
            set_counted(s, e, false);
            make_ready(s, e);
        }
    }
    pthread_mutex_unlock(&s->mu);
}

void sched_give_back_later(struct sched *s, char **ids, int n, int64_t delay_ms)
{
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < n; i++) {
        struct entry *e = map_get(s, ids[i]);
        if (e && e->where == W_TAKEN) {
            set_counted(s, e, false);
            e->not_before_ms = now_ms() + delay_ms;
            e->where = W_DELAYED;
            set_timer(s, e);
        }
    }
    pthread_mutex_unlock(&s->mu);
}

/* ---- waiters ---- */

struct sched_waiter *sched_wait(struct sched *s, const char *project_id, int64_t deadline_mono,
                                void (*wake)(void *ctx), void *ctx)
{
    return sched_wait_filter(s, project_id, NULL, deadline_mono, wake, ctx);
}

struct sched_waiter *sched_wait_filter(struct sched *s, const char *project_id,
                                       const struct sched_filter *f, int64_t deadline_mono,
                                       void (*wake)(void *ctx), void *ctx)
{
    return sched_wait_lease(s, project_id, f, deadline_mono, wake, NULL, ctx);
}

struct sched_waiter *sched_wait_lease(struct sched *s, const char *project_id,
                                      const struct sched_filter *f, int64_t deadline_mono,
                                      void (*wake)(void *ctx), bool (*gone)(void *ctx), void *ctx)
{
    struct sched_waiter *w = xcalloc(1, sizeof *w);
    w->project_id = xstrdup(project_id);
    w->f = f;
    w->deadline = deadline_mono;
    w->wake = wake;
    w->gone = gone;
    w->ctx = ctx;
    pthread_mutex_lock(&s->mu);
    w->next = s->waiters;
    if (s->waiters)
        s->waiters->prev = w;
    s->waiters = w;
    /* only a deadline before the thread's next wake-up needs one (a wake-up
     * per waiting long-poll was a context switch per job) */
    if (s->sleep_until_mono && deadline_mono < s->sleep_until_mono)
        pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
    return w;
}

static void waiter_unlink(struct sched *s, struct sched_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        s->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
}

static void waiter_fire(struct sched *s, struct sched_waiter *w)
{
    waiter_unlink(s, w);
    w->wake(w->ctx);
    free(w->project_id);
    free(w);
}

/* Wakes w (mu held); true when its client had left, so the wake-up went
 * to no one and the caller looks for the next waiter. */
static bool waiter_fire_live(struct sched *s, struct sched_waiter *w)
{
    bool gone = w->gone && w->gone(w->ctx);
    waiter_fire(s, w);
    return gone;
}

bool sched_unwait(struct sched *s, struct sched_waiter *w)
{
    pthread_mutex_lock(&s->mu);
    bool found = false;
    for (struct sched_waiter *x = s->waiters; x; x = x->next)
        if (x == w)
            found = true;
    if (found) {
        waiter_unlink(s, w);
        free(w->project_id);
        free(w);
    }
    pthread_mutex_unlock(&s->mu);
    return found;
}

/* Wakes the oldest waiter of e's project that would take e (mu held); a
 * waiter of another definition or runtime is left asleep, so the one that
 * takes it is not missed. */
static void waiter_wake_for(struct sched *s, const struct entry *e)
{
    for (;;) {
        struct sched_waiter *last = NULL;
        for (struct sched_waiter *w = s->waiters; w; w = w->next)
            if (!strcmp(w->project_id, e->project_id) && (!w->f || fits(s, e, w->f)))
                last = w;
        if (!last || !waiter_fire_live(s, last))
            return;
    }
}

void *sched_claim_waiter(struct sched *s, const json_t *run)
{
    const char *project = json_string_value(json_object_get(run, "project_id"));
    const char *agent = json_string_value(json_object_get(run, "agent_id"));
    const char *def = json_string_value(json_object_get(run, "definition_id"));
    if (!project || json_is_true(json_object_get(run, "has_code")))
        return NULL;
    void *ctx = NULL;
    pthread_mutex_lock(&s->mu);
    /* the oldest waiter (the list's tail) whose filter takes the run, as
     * fits() would judge an entry of it */
    struct sched_waiter *pick;
    for (;;) {
        pick = NULL;
        for (struct sched_waiter *w = s->waiters; w; w = w->next) {
            const struct sched_filter *f = w->f;
            if (!f || f->executor || strcmp(w->project_id, project))
                continue;
            if (agent && (!f->agent_id || strcmp(agent, f->agent_id)))
                continue;
            if (f->ndefinitions && !in_list(def, f->definitions, f->ndefinitions))
                continue;
            pick = w;
        }
        if (!pick || !pick->gone || !pick->gone(pick->ctx))
            break;
        /* its client left: woken to end, and not handed the run */
        waiter_fire(s, pick);
    }
    if (pick) {
        waiter_unlink(s, pick);
        ctx = pick->ctx;
        free(pick->project_id);
        free(pick);
    }
    pthread_mutex_unlock(&s->mu);
    return ctx;
}

/* A slot of key k freed (mu held): wakes the oldest waiter of p that takes
 * a ready run of that key.  It woke the project's oldest waiter, whatever
 * it takes: a worker of another agent or definition woke, found nothing,
 * and the one the run was for slept until its wait_ms ran out. */
static void waiter_wake_key(struct sched *s, struct project *p, struct kv *k)
{
    for (;;) {
        struct sched_waiter *last = NULL;
        for (struct sched_waiter *w = s->waiters; w; w = w->next) {
            if (strcmp(w->project_id, p->id))
                continue;
            for (struct rclass *c = k->classes; c; c = c->knext) {
                if (c->linked && c->proj == p && (!w->f || class_fits(c, w->f))) {
                    last = w;
                    break;
                }
            }
        }
        if (!last || !waiter_fire_live(s, last))
            return;
    }
}

/* ---- the scheduler thread ---- */

struct expire_arg {
    struct sched *s;
    const char *run_id;
    int64_t attempt;
    bool deadline;
};

/* A deadline passed: the run ends failed (deadline_exceeded), started or
 * not; live code is stopped. */
static int deadline_fn(struct store_tx *tx, struct expire_arg *a, json_t *run)
{
    enum run_status st = run_status_of(run);
    int64_t dl = json_integer_value(json_object_get(run, "deadline_ms"));
    if (run_status_terminal(st) || !dl || dl > now_ms())
        return 0;
    const char *ex = json_string_value(json_object_get(run, "executor"));
    if (ex && !strcmp(ex, "local") && st != RS_QUEUED)
        runner_cancel(a->s->app->runner, a->run_id);
    /* a run held for approval (interaction_required) never started either */
    bool started = st != RS_QUEUED && st != RS_PAUSED &&
                   json_is_string(json_object_get(run, "started_at"));
    struct run_outcome out = {.code = "deadline_exceeded",
                              .message = !started
                                  ? "the task's deadline passed before the run started"
                                  : "the task's deadline passed before the run finished",
                              .no_retry = true};
    int rc = run_move(tx, a->s->app, run, st == RS_CANCELING ? RS_CANCELED : RS_FAILED, &out);
    return rc == -EPERM ? 0 : rc;
}

static int expire_fn(struct store_tx *tx, void *arg)
{
    struct expire_arg *a = arg;
    json_t *run = store_get(tx, SK_RUN, NULL, a->run_id);
    if (!run)
        return 0;
    int rc = 0;
    if (a->deadline) {
        rc = deadline_fn(tx, a, run);
        json_decref(run);
        return rc;
    }
    int64_t le = 0;
    const char *l = json_string_value(json_object_get(run, "lease_expires_at"));
    if (run_status_of(run) == RS_RUNNING && l && !rfc3339_parse(l, &le) && le <= now_ms() &&
        json_integer_value(json_object_get(run, "attempt")) == a->attempt) {
        struct run_outcome out = {.code = "lease_expired",
                                  .message = "the worker's lease expired without a heartbeat"};
        rc = run_move(tx, a->s->app, run, RS_FAILED, &out);
    }
    json_decref(run);
    return rc == -EPERM ? 0 : rc;
}

struct dep_arg {
    struct sched *s;
    json_t *run;     /* the finished run */
    json_t *blocked; /* array of run ids blocked on its task */
    bool stale;      /* the run is not its task's latest: nothing decided */
};

/* Whether run is its task's latest run: a dependency is on a task, whose
 * status is its latest run's, so an older run (a fan-out's first agent, a
 * run superseded by a newer one) ending decides nothing for the dependants
 * (it used to unblock or fail them). */
static bool latest_of_task(struct store_tx *tx, const json_t *run)
{
    const char *project = json_string_value(json_object_get(run, "project_id"));
    json_t *task = store_get(tx, SK_TASK, project, json_string_value(json_object_get(run, "task_id")));
    const char *latest = json_string_value(json_object_get(task, "latest_run_id"));
    bool yes = !task || !latest || !strcmp(latest, json_string_value(json_object_get(run, "id")));
    json_decref(task);
    return yes;
}

/* Records on task (of project) that the completion dep_run of its
 * dependency dep_task has been acted on for it (dependency_runs, see
 * start_dependants_fn): a run of it that completion released is what the
 * completion started, so acting on the completion again (a retried write,
 * another node) after that run has ended starts nothing. */
static int note_dependency_run(struct store_tx *tx, const char *project, const char *task,
                               const char *dep_task, const char *dep_run)
{
    json_t *doc = task && dep_run ? store_get(tx, SK_TASK, project, task) : NULL;
    json_t *runs = json_object_get(doc, "dependency_runs");
    const char *done = json_string_value(json_object_get(runs, dep_task));
    int rc = 0;
    if (doc && (!done || strcmp(done, dep_run))) {
        json_t *now = json_is_object(runs) ? json_copy(runs) : json_object();
        json_object_set_new(now, dep_task, json_string(dep_run));
        json_t *fields = json_pack("{s:o}", "dependency_runs", now);
        rc = store_patch(tx, SK_TASK, project, task, fields, NULL, NULL);
        json_decref(fields);
    }
    json_decref(doc);
    return rc;
}

/* A dependency finished: unblock or fail the runs that wait on its task. */
static int dep_fn(struct store_tx *tx, void *arg)
{
    struct dep_arg *a = arg;
    const char *task_id = json_string_value(json_object_get(a->run, "task_id"));
    const char *project = json_string_value(json_object_get(a->run, "project_id"));
    enum run_status st = run_status_of(a->run);
    size_t i;
    json_t *idv;
    a->stale = !latest_of_task(tx, a->run);
    if (a->stale)
        return 0;
    json_array_foreach(a->blocked, i, idv) {
        json_t *run = store_get(tx, SK_RUN, project, json_string_value(idv));
        if (!run)
            continue;
        int rc = 0;
        if (run_status_of(run) == RS_QUEUED) {
            json_t *bb = json_object_get(run, "blocked_by");
            size_t j, at = SIZE_MAX;
            json_t *t;
            json_array_foreach(bb, j, t) {
                if (json_is_string(t) && !strcmp(json_string_value(t), task_id))
                    at = j;
            }
            if (at == SIZE_MAX) {
                /* not (or no longer) waiting on this task */
            } else if (st == RS_COMPLETED) {
                json_array_remove(bb, at);
                /* its last dependency met: in line from now (the wait for
                 * a dependency is not a wait for a slot) */
                run_unblocked(run);
                rc = run_save(tx, run);
                if (!rc)
                    rc = note_dependency_run(tx, project,
                                             json_string_value(json_object_get(run, "task_id")),
                                             task_id, json_string_value(json_object_get(a->run, "id")));
                if (!rc)
                    run_notify(tx, a->s->app, run);
                if (!rc) {
                    rc = events_emit(tx, a->s->app->events, project,
                                     json_string_value(json_object_get(run, "task_id")),
                                     json_string_value(idv), "task_run.unblocked",
                                     json_pack("{s:s}", "dependency", task_id));
                }
            } else {
                char msg[200];
                snprintf(msg, sizeof msg, "dependency %s ended %s", task_id, run_status_name(st));
                struct run_outcome out = {.code = "dependency_failed", .message = msg,
                                          .no_retry = true};
                rc = run_move(tx, a->s->app, run, RS_FAILED, &out);
            }
        }
        json_decref(run);
        if (rc && rc != -EPERM)
            return rc;
    }
    return 0;
}

static bool final_failure(const json_t *run)
{
    enum run_status st = run_status_of(run);
    return st == RS_FAILED || st == RS_TIMED_OUT || st == RS_DENIED || st == RS_CANCELED;
}

struct start_dep_arg {
    struct sched *s;
    const char *project;
    const char *dep_task;
    const char *dep_run;   /* the run of dep_task that completed */
    json_t *tasks;
};

/* A task completed: each task that depends on it and has no active run
 * starts one once all its dependencies have completed ("running the first
 * task of a chain runs the rest").  The task records the latest run of
 * each dependency it was acted on for (dependency_runs, not shown by the
 * API), in the write that starts it, that finds it with a run going, or
 * that released its run (dep_fn): a completion it was already acted on for
 * starts nothing, so every node may act on the same completion, and a
 * retried or late one never starts a dependant a second time after its
 * run has ended.  A completion that is no longer its task's latest run
 * decides nothing (a newer run of the dependency decides, as in dep_fn). */
static int start_dependants_fn(struct store_tx *tx, void *arg)
{
    struct start_dep_arg *a = arg;
    size_t i;
    json_t *tv;
    json_array_foreach(a->tasks, i, tv) {
        json_t *task = store_get(tx, SK_TASK, a->project, json_string_value(tv));
        if (!task || json_is_true(json_object_get(task, "paused"))) {
            json_decref(task);
            continue;
        }
        bool depends = false, ready = true;
        size_t j;
        json_t *d, *runs = json_object();
        json_array_foreach(json_object_get(task, "dependencies"), j, d) {
            if (!strcmp(json_string_value(d), a->dep_task))
                depends = true;
            json_t *dt = store_get(tx, SK_TASK, a->project, json_string_value(d));
            if (!dt || strcmp(json_string_value(json_object_get(dt, "status")) ?: "", "completed"))
                ready = false;
            else
                json_object_set(runs, json_string_value(d), json_object_get(dt, "latest_run_id"));
            json_decref(dt);
        }
        const char *st = json_string_value(json_object_get(task, "status"));
        int rs = run_status_parse(st);
        bool active = rs >= 0 && !run_status_terminal((enum run_status)rs);
        const char *done = json_string_value(
            json_object_get(json_object_get(task, "dependency_runs"), a->dep_task));
        const char *latest = json_string_value(json_object_get(runs, a->dep_task));
        bool stale = a->dep_run && latest && strcmp(latest, a->dep_run);
        int rc = 0;
        if (depends && ready && !stale && !(done && a->dep_run && !strcmp(done, a->dep_run))) {
            /* with a run going (one this completion released, or made by
             * hand) the completion starts nothing, now or when acted on
             * again after that run has ended */
            json_t *fields = json_pack("{s:O}", "dependency_runs", runs);
            json_object_update(task, fields);
            rc = store_patch(tx, SK_TASK, a->project, json_string_value(tv), fields, NULL, NULL);
            json_decref(fields);
            if (!rc && !active)
                rc = run_start_for_task(tx, a->s->app, task, NULL, NULL);
        }
        json_decref(runs);
        json_decref(task);
        if (rc)
            return rc;
    }
    return 0;
}

/* Test-only (tests/integration/test_sched2.py, test_multinode.py): with
 * QUERN_TEST_DEP_START_LOST set to a path, a committed write that started
 * the dependants of a completion is taken for failed while <path> exists
 * (as when a COMMIT's answer is lost); with QUERN_TEST_DEP_START_FAIL set
 * to a path, that write fails (rolled back) while <path> exists.  Either
 * way it is made again each second; once <path> is gone, each such write
 * that succeeded appends the completed run's id and a newline to
 * <path>.acted (test_dep_acted).  True while <path> exists. */
static bool test_dep_held(const struct sched *s)
{
    return s->test_dep_hold && !access(s->test_dep_hold, F_OK);
}

static void test_dep_acted(const struct sched *s, const json_t *run)
{
    if (!s->test_dep_hold)
        return;
    char *acted = xasprintf("%s.acted", s->test_dep_hold);
    int fd = open(acted, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    free(acted);
    if (fd < 0)
        return;
    char *line = xasprintf("%s\n", json_string_value(json_object_get(run, "id")) ?: "");
    ssize_t n = write(fd, line, strlen(line));
    (void)n;
    free(line);
    close(fd);
}

/* start_dependants_fn, rolled back (QUERN_TEST_DEP_START_FAIL). */
static int start_dependants_failing_fn(struct store_tx *tx, void *arg)
{
    int rc = start_dependants_fn(tx, arg);
    return rc ? rc : -EIO;
}

static void handle_finished(struct sched *s, json_t *run)
{
    const char *task_id = json_string_value(json_object_get(run, "task_id"));
    const char *project = json_string_value(json_object_get(run, "project_id"));
    enum run_status st = run_status_of(run);
    if (!task_id || !project || (st != RS_COMPLETED && !final_failure(run)))
        return;
    char *key = task_key(project, task_id);
    json_t *blocked = NULL, *dependants = NULL;
    pthread_mutex_lock(&s->mu);
    struct kv *k = kv_get(s->blocked, key, false);
    if (k) {
        blocked = json_incref(k->list);
        kv_del(s->blocked, key);
    }
    k = kv_get(s->dependants, key, false);
    if (k && st == RS_COMPLETED)
        dependants = json_deep_copy(k->list);
    pthread_mutex_unlock(&s->mu);
    free(key);
    bool again = false;   /* a write failed: act on run once more, in a second */
    if (json_array_size(blocked)) {
        struct dep_arg a = {s, run, blocked, false};
        int rc = store_write(s->app->store, dep_fn, &a);
        again = rc != 0;
        if (rc || a.stale) {
            /* still waiting: on the task's latest run, or on the retry of
             * this write (nothing else would end the wait: the dependency
             * has ended, and a restart reloads the run blocked) */
            key = task_key(project, task_id);
            size_t i;
            json_t *idv;
            pthread_mutex_lock(&s->mu);
            json_array_foreach(blocked, i, idv)
                kv_append(s->blocked, key, json_string_value(idv));
            pthread_mutex_unlock(&s->mu);
            free(key);
        }
    }
    if (json_array_size(dependants)) {
        struct start_dep_arg a = {s, project, task_id, json_string_value(json_object_get(run, "id")),
                                  dependants};
        bool held = test_dep_held(s);
        int rc = store_write(s->app->store,
                             held && s->test_dep_rollback ? start_dependants_failing_fn
                                                          : start_dependants_fn, &a);
        if (!rc && !held)
            test_dep_acted(s, run);
        if (rc || held)
            again = true;   /* it starts each dependant at most once: safe to redo */
    }
    json_decref(blocked);
    json_decref(dependants);
    if (again) {
        pthread_mutex_lock(&s->mu);
        queue_work(s, run, mono_ms() + NOT_LEADER_RECHECK_MS);
        pthread_mutex_unlock(&s->mu);
    }
}

/* ---- cron ---- */

static size_t cron_slot(const char *project, const char *task)
{
    return (str_hash(project) * 31 + str_hash(task)) % CRON_SLOTS;
}

/* Sets (next >= 0) or removes (next < 0) a schedule entry (mu held). */
static void cron_set(struct sched *s, const char *project, const char *task, int64_t next)
{
    struct cron_entry **pp = &s->cron[cron_slot(project, task)];
    for (; *pp; pp = &(*pp)->hnext) {
        if (!strcmp((*pp)->project_id, project) && !strcmp((*pp)->task_id, task))
            break;
    }
    if (*pp && next < 0) {
        struct cron_entry *e = *pp;
        *pp = e->hnext;
        free(e->project_id);
        free(e->task_id);
        free(e);
        s->ncron--;
    } else if (*pp) {
        (*pp)->next_ms = next;
        (*pp)->retry_ms = 0;
    } else if (next < 0) {
        return;   /* nothing to forget: no wake-up */
    } else {
        struct cron_entry *e = xcalloc(1, sizeof *e);
        e->project_id = xstrdup(project);
        e->task_id = xstrdup(task);
        e->next_ms = next;
        *pp = e;
        s->ncron++;
    }
    pthread_cond_signal(&s->cond);
}

/* A failed fire of project/task's due instant is not tried again before
 * at (mu held); a new next instant (cron_set) clears it. */
static void cron_retry_at(struct sched *s, const char *project, const char *task, int64_t at)
{
    for (struct cron_entry *e = s->cron[cron_slot(project, task)]; e; e = e->hnext) {
        if (!strcmp(e->project_id, project) && !strcmp(e->task_id, task)) {
            e->retry_ms = at;
            return;
        }
    }
}

struct cron_note {
    struct sched *s;
    char *project, *task;
    int64_t next;
    json_t *deps;   /* the task's dependencies, for the dependants index */
};

/* Records task as a dependant of each of its dependencies (mu held).
 * Entries are only added: a stale one is harmless, since starting a
 * dependant re-reads its current dependencies. */
static void note_dependants(struct sched *s, const char *project, const char *task, json_t *deps)
{
    size_t i;
    json_t *d;
    json_array_foreach(deps, i, d) {
        if (!json_is_string(d))
            continue;
        char *k = task_key(project, json_string_value(d));
        kv_append(s->dependants, k, task);
        free(k);
    }
}

static void cron_note_hook(void *arg, bool committed)
{
    struct cron_note *n = arg;
    if (committed) {
        pthread_mutex_lock(&n->s->mu);
        cron_set(n->s, n->project, n->task, n->next);
        note_dependants(n->s, n->project, n->task, n->deps);
        pthread_mutex_unlock(&n->s->mu);
    }
    json_decref(n->deps);
    free(n->project);
    free(n->task);
    free(n);
}

void sched_task_changed_on_commit(struct store_tx *tx, struct sched *s, const json_t *task,
                                  bool is_new)
{
    const char *p = json_string_value(json_object_get(task, "project_id"));
    const char *t = json_string_value(json_object_get(task, "id"));
    if (!s || !p || !t)
        return;
    /* a new task with neither a schedule nor dependencies: nothing to learn */
    if (is_new && !json_is_string(json_object_get(task, "schedule")) &&
        !json_array_size(json_object_get(task, "dependencies")))
        return;
    struct cron_note *n = xmalloc(sizeof *n);
    n->s = s;
    n->project = xstrdup(p);
    n->task = xstrdup(t);
    n->next = task_next_ms(task);
    n->deps = json_deep_copy(json_object_get(task, "dependencies"));
    store_tx_on_commit(tx, cron_note_hook, n);
}

int64_t sched_cron_count(struct sched *s)
{
    pthread_mutex_lock(&s->mu);
    int64_t n = s->ncron;
    pthread_mutex_unlock(&s->mu);
    return n;
}

int64_t sched_class_count(struct sched *s)
{
    int64_t n = 0;
    pthread_mutex_lock(&s->mu);
    for (size_t k = 0; k < KV_SLOTS; k++)
        for (struct rclass *c = s->rclasses[k]; c; c = c->hnext)
            n++;
    pthread_mutex_unlock(&s->mu);
    return n;
}

struct fire_arg {
    struct sched *s;
    char *project, *task;
    int64_t instant;
};

/* Fires one schedule instant: one run, the next instant, and a record of
 * instants skipped while quernd was down. */
static int fire_fn(struct store_tx *tx, void *arg)
{
    struct fire_arg *f = arg;
    json_t *task = store_get(tx, SK_TASK, f->project, f->task);
    if (!task)
        return 0;
    int rc = 0;
    int64_t now = now_ms();
    /* once per instant: someone else fired it, or the schedule changed */
    if (task_next_ms(task) != f->instant || f->instant > now) {
        sched_task_changed_on_commit(tx, f->s, task, false);
        goto out;
    }
    int64_t skipped = task_missed_fires(task, f->instant, now, 1000000);
    /* the deadline passed while quernd was down: a run made now could never
     * start, so none is; every missed instant is skipped and the schedule
     * ends there (next_run_at null) */
    bool late = now >= task_deadline_ms(task);
    if (late) {
        skipped++;
    } else {
        rc = run_start_for_task(tx, f->s->app, task, NULL, NULL);
        if (rc)
            goto out;
        json_decref(task);   /* run_start_for_task updated it in the store */
        task = store_get(tx, SK_TASK, f->project, f->task);
        if (!task)
            return -EIO;
    }
    task_schedule_next(task, now);
    rc = store_update(tx, SK_TASK, f->project, task);
    if (!rc)
        sched_task_changed_on_commit(tx, f->s, task, false);
    if (!rc && skipped > 0) {
        char from[RFC3339_LEN];
        rfc3339_format(f->instant, from);
        rc = events_emit(tx, f->s->app->events, f->project, f->task, NULL, "task.schedule_skipped",
                         json_pack("{s:I, s:s, s:s}", "skipped", (json_int_t)skipped,
                                   "missed_since", from, "reason",
                                   late ? "the task's deadline passed before these fires "
                                          "could be made (quernd down, or too busy)"
                                        : "fires missed (quernd down, or too busy to make each "
                                          "in time) run once"));
    }
out:
    json_decref(task);
    return rc;
}

/* Start-up reads a page of documents at a time: with 1 000 000 queued runs
 * one list of all of them held every document at once (6.6 GB peak).  A page
 * is LIMIT/OFFSET (the store has no cursor), so small pages cost index walks:
 * 25 000 keeps that near 2 s per 1 000 000 and a page near 170 MB. */
#define LOAD_PAGE 25000

/* Calls page_fn(ctx, page) for every page (an array, oldest first) of the
 * documents of kind whose indexed field equals value.  It lists project by
 * project, so each query is a range of the (project_id, f_<field>, seq)
 * index; a query without the project scanned the whole table, finished
 * history included.  The one helper behind every reload of the scheduler:
 * unfinished runs, schedules and dependants at start, and resync. */
static int each_page(struct store_tx *tx, enum store_kind kind, const char *field,
                     const char *value, const char *const *fields,
                     void (*page_fn)(void *ctx, json_t *page), void *ctx)
{
    struct store_query all = {NULL, 0, 0, 0, true, NULL};
    json_t *projects = NULL;
    int rc = store_list(tx, SK_PROJECT, NULL, &all, &projects, NULL);
    if (rc)
        return rc;
    size_t i;
    json_t *proj;
    json_array_foreach(projects, i, proj) {
        const char *pid = json_string_value(json_object_get(proj, "id"));
        if (!pid)
            continue;
        struct store_filter f = {field, value};
        for (int64_t off = 0;;) {
            struct store_query q = {&f, 1, LOAD_PAGE, off, true, NULL};
            json_t *arr = NULL;
            rc = fields ? store_list_fields(tx, kind, pid, &q, fields, &arr)
                        : store_list(tx, kind, pid, &q, &arr, NULL);
            if (rc)
                goto out;
            size_t n = json_array_size(arr);
            page_fn(ctx, arr);
            json_decref(arr);
            if (n < LOAD_PAGE)
                break;
            off += (int64_t)n;
        }
    }
out:
    json_decref(projects);
    return rc;
}

struct each_arg {
    struct sched *s;
    void (*fn)(struct sched *s, const json_t *doc);
};

static void each_page_fn(void *ctx, json_t *page)
{
    struct each_arg *a = ctx;
    size_t k;
    json_t *doc;
    pthread_mutex_lock(&a->s->mu);
    json_array_foreach(page, k, doc) a->fn(a->s, doc);
    pthread_mutex_unlock(&a->s->mu);
}

/* Calls fn (mu held) for every document of kind whose indexed field equals
 * value (each_page). */
static int each_indexed(struct store_tx *tx, struct sched *s, enum store_kind kind,
                        const char *field, const char *value, const char *const *fields,
                        void (*fn)(struct sched *s, const json_t *doc))
{
    struct each_arg a = {s, fn};
    return each_page(tx, kind, field, value, fields, each_page_fn, &a);
}

static void load_dependants(struct sched *s, const json_t *t)
{
    note_dependants(s, json_string_value(json_object_get(t, "project_id")),
                    json_string_value(json_object_get(t, "id")),
                    json_object_get(t, "dependencies"));
}

static void load_schedule(struct sched *s, const json_t *t)
{
    int64_t next = task_next_ms(t);
    if (next >= 0)
        cron_set(s, json_string_value(json_object_get(t, "project_id")),
                 json_string_value(json_object_get(t, "id")), next);
}

static int deps_load_fn(struct store_tx *tx, void *arg)
{
    return each_indexed(tx, arg, SK_TASK, "has_dependencies", "true", NULL, load_dependants);
}

static int cron_load_fn(struct store_tx *tx, void *arg)
{
    return each_indexed(tx, arg, SK_TASK, "scheduled", "true", NULL, load_schedule);
}

struct lost_arg {
    struct sched *s;
    char *run_id;
    char *node_id;
    int64_t attempt;
};

/* The node executing a code run is gone: the attempt ends like a crash of
 * its process (a retry while retries remain), as runner_recover does for
 * the node's own runs when it restarts. */
static int lost_fn(struct store_tx *tx, void *arg)
{
    struct lost_arg *a = arg;
    json_t *run = store_get(tx, SK_RUN, NULL, a->run_id);
    if (!run)
        return 0;
    int rc = 0;
    enum run_status st = run_status_of(run);
    const char *ex = json_string_value(json_object_get(run, "executor"));
    const char *node = json_string_value(json_object_get(run, "node_id"));
    const char *kind = json_string_value(json_object_get(json_object_get(run, "interaction"), "kind"));
    bool approval = st == RS_INTERACTION_REQUIRED && kind && !strcmp(kind, "approval");
    if (ex && !strcmp(ex, "local") && node && !strcmp(node, a->node_id) && !approval &&
        json_integer_value(json_object_get(run, "attempt")) == a->attempt) {
        if (st == RS_CANCELING) {
            rc = run_move(tx, a->s->app, run, RS_CANCELED, NULL);
        } else if (st == RS_RUNNING || st == RS_INTERACTION_REQUIRED || st == RS_PAUSED) {
            struct run_outcome out = {.code = "node_lost",
                                      .message = "the quernd node running the code stopped"};
            rc = run_move(tx, a->s->app, run, RS_FAILED, &out);
        }
    }
    json_decref(run);
    return rc == -EPERM ? 0 : rc;
}

/* Leader: code runs whose node has been gone for two sweeps in a row (so a
 * node that merely reconnected is left alone) are ended by lost_fn. */
static void sweep_lost_nodes(struct sched *s)
{
    const char *me = store_node_id(s->app->store);
    json_t *runs = json_array();
    pthread_mutex_lock(&s->mu);
    for (size_t k = 0; k < s->map_cap; k++)
        for (struct entry *e = s->map[k]; e; e = e->hnext)
            if (e->where == W_ACTIVE && e->node_id && strcmp(e->node_id, me))
                json_array_append_new(runs, json_pack("{s:s, s:s, s:I}", "id", e->run_id, "node",
                                                      e->node_id, "attempt",
                                                      (json_int_t)e->attempt));
    pthread_mutex_unlock(&s->mu);
    json_t *verdict = json_object();   /* node -> lost? */
    size_t i;
    json_t *r;
    json_array_foreach(runs, i, r) {
        const char *node = json_string_value(json_object_get(r, "node"));
        if (json_object_get(verdict, node))
            continue;
        bool alive = store_node_alive(s->app->store, node);
        bool lost = !alive && json_object_get(s->suspect, node);
        if (alive)
            json_object_del(s->suspect, node);
        else
            json_object_set(s->suspect, node, json_true());
        json_object_set_new(verdict, node, json_boolean(lost));
        if (lost)
            log_write(LOG_WARN, "sched", json_pack("{s:s}", "node", node),
                      "node %s is gone: ending its code runs", node);
    }
    json_array_foreach(runs, i, r) {
        const char *node = json_string_value(json_object_get(r, "node"));
        if (!json_is_true(json_object_get(verdict, node)))
            continue;
        struct lost_arg a = {s, (char *)json_string_value(json_object_get(r, "id")), (char *)node,
                             json_integer_value(json_object_get(r, "attempt"))};
        store_write(s->app->store, lost_fn, &a);
    }
    /* forget suspects with no runs left */
    json_t *keep = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(s->suspect, k, v) {
        if (json_object_get(verdict, k))
            json_object_set(keep, k, v);
    }
    json_decref(s->suspect);
    s->suspect = keep;
    json_decref(verdict);
    json_decref(runs);
}

/* Puts e back in the timer heap at `at`, whatever its fields say (mu held). */
static void rearm(struct sched *s, struct entry *e, int64_t at)
{
    if (e->timer_ms)
        heap_remove(s, e);
    e->timer_ms = at;
    heap_push(s, e);
}

struct prune_arg {
    int64_t before;
    int64_t pruned;
};

static int prune_fn(struct store_tx *tx, void *arg)
{
    struct prune_arg *a = arg;
    return store_prune(tx, a->before, 1000, &a->pruned);
}

/* Retention (leader duty): history older than cfg.retention_ms goes, a
 * thousand rows of each kind per transaction so writers are never held up
 * for long. */
static void prune_history(struct sched *s)
{
    struct prune_arg a = {now_ms() - s->app->cfg.retention_ms, 0};
    int64_t total = 0;
    for (int i = 0; i < 1000 && !s->stopping; i++) {
        a.pruned = 0;
        if (store_write(s->app->store, prune_fn, &a) || !a.pruned)
            break;
        total += a.pruned;
    }
    if (total)
        log_write(LOG_INFO, "retention", json_pack("{s:I}", "rows", (json_int_t)total),
                  "pruned history older than %lld ms", (long long)s->app->cfg.retention_ms);
    /* artifact files of the runs that went (and of runs that never
     * committed), once no run names them */
    int64_t removed = 0;
    if (s->app->blobs && !s->stopping &&
        !blob_sweep(s->app->blobs, s->app->store, now_ms() - s->app->cfg.blob_grace_ms, &removed) &&
        removed)
        log_write(LOG_INFO, "retention", json_pack("{s:I}", "blobs", (json_int_t)removed),
                  "deleted %lld artifact files no run names", (long long)removed);
}

static void *sched_main(void *arg)
{
    struct sched *s = arg;
    int64_t last_tick = mono_ms();
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        int64_t now = now_ms(), mono = mono_ms();
        if (mono - last_tick >= 5000) {
            /* idle SSE streams check their keepalive */
            last_tick = mono;
            pthread_mutex_unlock(&s->mu);
            events_tick(s->app->events);
            pthread_mutex_lock(&s->mu);
        }
        int64_t next = now + 500;
        /* leader duties (several nodes): lease expiry, deadlines, cron, and
         * ending the code runs of nodes that are gone */
        bool leader = store_leader(s->app->store);
        if (leader && mono >= s->next_sweep) {
            s->next_sweep = mono + SWEEP_MS;
            pthread_mutex_unlock(&s->mu);
            sweep_lost_nodes(s);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        if (s->resync_at && mono >= s->resync_at) {
            s->resync_at = 0;
            pthread_mutex_unlock(&s->mu);
            resync(s);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        if (leader && s->app->cfg.retention_ms > 0 && mono >= s->next_prune) {
            s->next_prune = mono + s->app->cfg.retention_every_ms;
            pthread_mutex_unlock(&s->mu);
            prune_history(s);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        /* due timers: retry delays, lease expiries, deadlines */
        struct expire_arg exp[64];
        int nexp = 0;
        struct entry **later = NULL;
        size_t nlater = 0;
        while (s->heap_len && s->heap[0]->timer_ms <= now && nexp < 64) {
            struct entry *e = s->heap[0];
            heap_remove(s, e);
            e->timer_ms = 0;
            if (!leader && ((e->deadline_ms && e->deadline_ms <= now) ||
                            (e->where == W_ACTIVE && e->lease_expires_ms &&
                             e->lease_expires_ms <= now))) {
                /* the leader's to act on; look again in case we become it */
                later = xrealloc(later, (nlater + 1) * sizeof *later);
                later[nlater++] = e;
                continue;
            }
            if (e->deadline_ms && e->deadline_ms <= now) {
                exp[nexp++] = (struct expire_arg){s, xstrdup(e->run_id), e->attempt, true};
                continue;   /* the write ends the run; its entry goes then */
            }
            if (e->where == W_DELAYED && e->not_before_ms <= now) {
                e->where = W_NONE;
                make_ready(s, e);
            } else if (e->where == W_ACTIVE && e->lease_expires_ms && e->lease_expires_ms <= now) {
                exp[nexp++] = (struct expire_arg){s, xstrdup(e->run_id), e->attempt, false};
                e->lease_expires_ms = 0;   /* handled once */
            }
            set_timer(s, e);
        }
        for (size_t i = 0; i < nlater; i++)
            rearm(s, later[i], now + NOT_LEADER_RECHECK_MS);
        free(later);
        if (s->heap_len && s->heap[0]->timer_ms < next)
            next = s->heap[0]->timer_ms;
        /* long-polls at their deadline */
        for (struct sched_waiter *w = s->waiters, *n; w; w = n) {
            n = w->next;
            if (w->deadline <= mono)
                waiter_fire(s, w);
            else if (w->deadline - mono + now < next)
                next = w->deadline - mono + now;
        }
        /* due schedules */
        struct fire_arg fires[64];
        int nfire = 0;
        for (size_t k = 0; s->ncron && k < CRON_SLOTS; k++) {
            for (struct cron_entry *c = s->cron[k]; c; c = c->hnext) {
                int64_t due = c->next_ms > c->retry_ms ? c->next_ms : c->retry_ms;
                if (due <= now && nfire < 64 && !s->draining && leader) {
                    fires[nfire++] = (struct fire_arg){s, xstrdup(c->project_id),
                                                       xstrdup(c->task_id), c->next_ms};
                    c->next_ms = INT64_MAX;   /* in flight; the fire sets the next */
                } else if (due < next && due > now) {
                    next = due;
                }
            }
        }
        /* finished runs to act on, those due (a retry waits its turn) */
        struct work *work = NULL, **wtail = &work;
        s->work_tail = NULL;
        for (struct work **pp = &s->work_head; *pp;) {
            struct work *w = *pp;
            if (w->at_mono <= mono) {
                *pp = w->next;
                w->next = NULL;
                *wtail = w;
                wtail = &w->next;
                continue;
            }
            if (w->at_mono - mono + now < next)
                next = w->at_mono - mono + now;
            s->work_tail = w;
            pp = &w->next;
        }
        if (nexp || work || nfire) {
            pthread_mutex_unlock(&s->mu);
            for (int i = 0; i < nexp; i++) {
                if (store_write(s->app->store, expire_fn, &exp[i])) {
                    /* not done (a lost deadlock, PostgreSQL away): again soon */
                    pthread_mutex_lock(&s->mu);
                    struct entry *e = map_get(s, exp[i].run_id);
                    if (e && e->attempt == exp[i].attempt) {
                        if (!exp[i].deadline)
                            e->lease_expires_ms = now_ms() + NOT_LEADER_RECHECK_MS;
                        rearm(s, e, now_ms() + NOT_LEADER_RECHECK_MS);
                    }
                    pthread_mutex_unlock(&s->mu);
                }
                free((char *)exp[i].run_id);
            }
            for (int i = 0; i < nfire; i++) {
                if (store_write(s->app->store, fire_fn, &fires[i])) {
                    /* not fired (a full disk, PostgreSQL away): the same
                     * instant again in a second, as an expiry is; at once
                     * it was tried thousands of times a second, each
                     * failure logged */
                    pthread_mutex_lock(&s->mu);
                    cron_set(s, fires[i].project, fires[i].task, fires[i].instant);
                    cron_retry_at(s, fires[i].project, fires[i].task,
                                  now_ms() + NOT_LEADER_RECHECK_MS);
                    pthread_mutex_unlock(&s->mu);
                }
                free(fires[i].project);
                free(fires[i].task);
            }
            while (work) {
                struct work *n = work->next;
                handle_finished(s, work->run);
                json_decref(work->run);
                free(work);
                work = n;
            }
            pthread_mutex_lock(&s->mu);
            continue;
        }
        int64_t wait = next - now;
        if (wait < 1)
            wait = 1;
        if (wait > 500)
            wait = 500;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += wait / 1000;
        ts.tv_nsec += (wait % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        s->sleep_until = now + wait;
        s->sleep_until_mono = mono + wait;
        pthread_cond_timedwait(&s->cond, &s->mu, &ts);
        s->sleep_until = s->sleep_until_mono = 0;
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

struct sched *sched_new(struct app *app)
{
    struct sched *s = xcalloc(1, sizeof *s);
    s->app = app;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->map_cap = MAP_INIT;
    s->map = xcalloc(s->map_cap, sizeof *s->map);
    s->pmap_cap = 256;
    s->pmap = xcalloc(s->pmap_cap, sizeof *s->pmap);
    s->suspect = json_object();
    return s;
}

struct ready_pos {
    struct entry *e;
    size_t at;                     /* its place as loaded (creation order) */
};

static int ready_pos_cmp(const void *a, const void *b)
{
    const struct ready_pos *x = a, *y = b;
    if (x->e->ready_ms != y->e->ready_ms)
        return x->e->ready_ms < y->e->ready_ms ? -1 : 1;
    return x->at < y->at ? -1 : x->at > y->at;
}

/* After the load (mu held): puts every ready list in ready_ms order, as
 * make_ready keeps it.  Runs load in creation order, and a retried or
 * resumed run was queued again after runs made later than it: appended as
 * loaded it went before them (a restart changed the dispatch order), and
 * make_ready's walk back to its place cost O(n) per run loaded. */
static void sort_ready(struct sched *s)
{
    struct ready_pos *v = NULL;
    size_t cap = 0;
    for (size_t k = 0; k < KV_SLOTS; k++) {
        for (struct rclass *c = s->rclasses[k]; c; c = c->hnext) {
            for (int q = 0; q < NPRIO; q++) {
                size_t n = 0;
                for (struct entry *e = c->head[q]; e; e = e->next) {
                    if (n == cap) {
                        cap = cap ? cap * 2 : 1024;
                        v = xrealloc(v, cap * sizeof *v);
                    }
                    v[n].e = e;
                    v[n].at = n;
                    n++;
                }
                if (n < 2)
                    continue;
                qsort(v, n, sizeof *v, ready_pos_cmp);
                for (size_t i = 0; i < n; i++) {
                    v[i].e->prev = i ? v[i - 1].e : NULL;
                    v[i].e->next = i + 1 < n ? v[i + 1].e : NULL;
                }
                c->head[q] = v[0].e;
                c->tail[q] = v[n - 1].e;
            }
        }
    }
    free(v);
}

static void apply_doc(struct sched *s, const json_t *run)
{
    struct sched_run r;
    sched_run_read(&r, run);
    apply(s, &r);
}

/* Every run that is not finished, by status (never the finished history). */
static int load_fn(struct store_tx *tx, void *arg)
{
    for (size_t i = 0; i < ARRAY_LEN(unfinished); i++) {
        int rc = each_indexed(tx, arg, SK_RUN, "status", unfinished[i], run_sched_fields,
                              apply_doc);
        if (rc)
            return rc;
    }
    return 0;
}

/* The latest run of the task that key ("project\x1ftask", task_key's form)
 * names, or NULL (no such task, or no run yet); *project gets the key's
 * project (NULL for a key of another form).  The caller frees both. */
static json_t *latest_run_of_key(struct store_tx *tx, const char *key, char **project)
{
    const char *sep = key ? strchr(key, '\x1f') : NULL;
    *project = NULL;
    if (!sep)
        return NULL;
    *project = xstrndup(key, (size_t)(sep - key));
    json_t *task = store_get(tx, SK_TASK, *project, sep + 1);
    const char *latest = json_string_value(json_object_get(task, "latest_run_id"));
    json_t *run = latest ? store_get(tx, SK_RUN, *project, latest) : NULL;
    json_decref(task);
    return run;
}

/* The tasks that runs are loaded blocked on, whose latest run has ended:
 * quernd stopped between that end's commit and the scheduler's write
 * acting on it (handle_finished, on its own thread just after), and
 * nothing would end the wait any more.  keys: "project\x1ftask". */
struct ended_deps {
    json_t *keys;
    json_t *runs;   /* the ended latest runs */
};

static int ended_deps_fn(struct store_tx *tx, void *arg)
{
    struct ended_deps *a = arg;
    size_t i;
    json_t *k;
    json_array_foreach(a->keys, i, k) {
        char *project = NULL;
        json_t *run = latest_run_of_key(tx, json_string_value(k), &project);
        if (run && run_status_terminal(run_status_of(run)))
            json_array_append(a->runs, run);
        json_decref(run);
        free(project);
    }
    return 0;
}

/* At start: the ends of dependencies that were never acted on are queued
 * as work, so the runs blocked on them are unblocked or failed now. */
static int queue_ended_deps(struct sched *s)
{
    struct ended_deps a = {json_array(), json_array()};
    pthread_mutex_lock(&s->mu);
    for (size_t k = 0; k < KV_SLOTS; k++)
        for (struct kv *v = s->blocked[k]; v; v = v->hnext)
            json_array_append_new(a.keys, json_string(v->key));
    pthread_mutex_unlock(&s->mu);
    int rc = json_array_size(a.keys) ? store_read(s->app->store, ended_deps_fn, &a) : 0;
    size_t i;
    json_t *run;
    pthread_mutex_lock(&s->mu);
    json_array_foreach(a.runs, i, run) {
        struct sched_run r;
        sched_run_read(&r, run);
        queue_finished(s, &r);
    }
    pthread_mutex_unlock(&s->mu);
    json_decref(a.keys);
    json_decref(a.runs);
    return rc;
}

/* Parses doc's RFC 3339 field; 0 when absent or bad. */
static int64_t doc_ms(const json_t *doc, const char *field)
{
    int64_t ms = 0;
    const char *v = json_string_value(json_object_get(doc, field));
    return v && !rfc3339_parse(v, &ms) ? ms : 0;
}

/* The dependencies with dependants, and the completions of theirs that
 * may not have started them. */
struct chain_read {
    json_t *deps;   /* [["project\x1ftask", [dependant task ids]]] */
    json_t *todo;   /* [{project, task, run, tasks: [dependant task ids]}] */
};

/* Whether dependant (a task of project) was left unstarted by a
 * completion at done_ms: it existed before it and was not changed since
 * (a PATCH after the completion, one that made it a dependant for
 * instance, applies to what comes next: a restart started a task whose
 * dependency was added after that dependency had completed), and no run
 * of it was made since (a run made after it, by that completion or by
 * anyone, means the completion was acted on or overtaken), and its latest
 * run had ended before it.  A run still going at the completion (one made
 * blocked on the dependency, which the completion released, and ended
 * later) is what start_dependants_fn leaves alone: such a task was started
 * once more by every restart after its run ended. */
static bool left_unstarted(struct store_tx *tx, const char *project, const json_t *dependant,
                           int64_t done_ms)
{
    int64_t created = doc_ms(dependant, "created_at");
    int64_t updated = doc_ms(dependant, "updated_at");
    if (!created || created >= done_ms || !updated || updated >= done_ms)
        return false;
    const char *latest = json_string_value(json_object_get(dependant, "latest_run_id"));
    if (!latest)
        return true;
    json_t *run = store_get(tx, SK_RUN, project, latest);
    int64_t made = doc_ms(run, "created_at");
    int64_t ended = run && run_status_terminal(run_status_of(run)) ? doc_ms(run, "completed_at") : 0;
    json_decref(run);
    return made && made < done_ms && ended && ended < done_ms;
}

static int chain_read_fn(struct store_tx *tx, void *arg)
{
    struct chain_read *a = arg;
    size_t i;
    json_t *d;
    json_array_foreach(a->deps, i, d) {
        const char *key = json_string_value(json_array_get(d, 0));
        char *project = NULL;
        json_t *run = latest_run_of_key(tx, key, &project);
        if (!project)
            continue;
        const char *task_id = key + strlen(project) + 1;
        const char *latest = json_string_value(json_object_get(run, "id"));
        int64_t done = run_status_of(run) == RS_COMPLETED ? doc_ms(run, "completed_at") : 0;
        json_t *tasks = json_array();
        size_t j;
        json_t *id;
        json_array_foreach(done ? json_array_get(d, 1) : NULL, j, id) {
            json_t *dt = store_get(tx, SK_TASK, project, json_string_value(id));
            if (dt && left_unstarted(tx, project, dt, done))
                json_array_append(tasks, id);
            json_decref(dt);
        }
        if (json_array_size(tasks))
            json_array_append_new(a->todo, json_pack("{s:s, s:s, s:s, s:O}", "project", project,
                                                     "task", task_id, "run", latest, "tasks", tasks));
        json_decref(tasks);
        json_decref(run);
        free(project);
    }
    return 0;
}

/* At start: a completion whose dependants were not started (quernd stopped
 * between the end's commit and handle_finished's start_dependants_fn)
 * starts them now.  Only dependants that existed before it and have no run
 * made since are considered, so a task made or run after the completion is
 * not started by a restart; start_dependants_fn itself starts each once
 * per completion. */
static int start_left_dependants(struct sched *s)
{
    struct chain_read a = {json_array(), json_array()};
    pthread_mutex_lock(&s->mu);
    for (size_t k = 0; k < KV_SLOTS; k++)
        for (struct kv *v = s->dependants[k]; v; v = v->hnext)
            if (v->list)
                json_array_append_new(a.deps, json_pack("[s, O]", v->key, v->list));
    pthread_mutex_unlock(&s->mu);
    int rc = json_array_size(a.deps) ? store_read(s->app->store, chain_read_fn, &a) : 0;
    size_t i;
    json_t *t;
    json_array_foreach(a.todo, i, t) {
        if (rc)
            break;
        struct start_dep_arg sa = {s, json_string_value(json_object_get(t, "project")),
                                   json_string_value(json_object_get(t, "task")),
                                   json_string_value(json_object_get(t, "run")),
                                   json_object_get(t, "tasks")};
        rc = store_write(s->app->store, start_dependants_fn, &sa);
    }
    json_decref(a.deps);
    json_decref(a.todo);
    return rc;
}

int sched_start(struct sched *s)
{
    const char *g = getenv("QUERN_REMOTE_GRACE_MS");
    if (!g || parse_i64(g, &s->grace_ms) || s->grace_ms < 0)
        s->grace_ms = REMOTE_GRACE_MS;
    const char *hold = getenv("QUERN_TEST_DEP_START_LOST");
    if (!hold || !*hold) {
        hold = getenv("QUERN_TEST_DEP_START_FAIL");
        s->test_dep_rollback = hold && *hold;
    }
    s->test_dep_hold = hold && *hold ? hold : NULL;
    /* watch first: whatever other nodes commit after the loads below is heard */
    store_watch(s->app->store, on_changes, s);
    s->watching = true;
    pthread_mutex_lock(&s->mu);
    s->loading = true;
    pthread_mutex_unlock(&s->mu);
    int rc = store_read(s->app->store, load_fn, s);
    pthread_mutex_lock(&s->mu);
    sort_ready(s);
    s->loading = false;
    pthread_mutex_unlock(&s->mu);
    if (!rc)
        rc = store_read(s->app->store, cron_load_fn, s);
    if (!rc)
        rc = store_read(s->app->store, deps_load_fn, s);
    if (!rc)
        rc = queue_ended_deps(s);
    if (!rc)
        rc = start_left_dependants(s);
    if (rc)
        return rc;
    if (pthread_create(&s->thread, NULL, sched_main, s))
        return -EAGAIN;
    s->running = true;
    return 0;
}

int sched_start_timers_only(struct sched *s)
{
    if (pthread_create(&s->thread, NULL, sched_main, s))
        return -EAGAIN;
    s->running = true;
    return 0;
}

void sched_drain(struct sched *s)
{
    pthread_mutex_lock(&s->mu);
    s->draining = true;
    while (s->waiters)
        waiter_fire(s, s->waiters);
    pthread_mutex_unlock(&s->mu);
}

void sched_free(struct sched *s)
{
    if (!s)
        return;
    if (s->watching)
        store_watch(s->app->store, NULL, NULL);   /* waits for a call in flight */
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_signal(&s->cond);
    while (s->waiters)
        waiter_fire(s, s->waiters);
    pthread_mutex_unlock(&s->mu);
    if (s->running)
        pthread_join(s->thread, NULL);
    for (size_t k = 0; k < s->map_cap; k++)
        for (struct entry *e = s->map[k], *n; e; e = n) {
            n = e->hnext;
            entry_free(e);
        }
    for (size_t k = 0; k < KV_SLOTS; k++)
        for (struct rclass *c = s->rclasses[k], *n; c; c = n) {
            n = c->hnext;
            rclass_release(c);
        }
    for (size_t k = 0; k < s->pmap_cap; k++)
        for (struct project *p = s->pmap[k], *n; p; p = n) {
            n = p->hnext;
            free(p->id);
            free(p);
        }
    while (s->work_head) {
        struct work *n = s->work_head->next;
        json_decref(s->work_head->run);
        free(s->work_head);
        s->work_head = n;
    }
    for (size_t k = 0; k < CRON_SLOTS; k++)
        for (struct cron_entry *c = s->cron[k], *n; c; c = n) {
            n = c->hnext;
            free(c->project_id);
            free(c->task_id);
            free(c);
        }
    for (size_t i = 0; i < TOMBS; i++)
        free(s->tombs[i].id);
    json_decref(s->suspect);
    kv_free_all(s->conc);
    kv_free_all(s->blocked);
    kv_free_all(s->dependants);
    free(s->map);
    free(s->pmap);
    free(s->heap);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cond);
    free(s);
}

void sched_depths(struct sched *s, int64_t out[4])
{
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < NPRIO; i++)
        out[i] = s->depth[i];
    pthread_mutex_unlock(&s->mu);
}

bool sched_has_ready(struct sched *s, const char *project_id)
{
    pthread_mutex_lock(&s->mu);
    bool r = project_get(s, project_id)->nready > 0;
    pthread_mutex_unlock(&s->mu);
    return r;
}

bool sched_has_fit(struct sched *s, const struct sched_filter *f)
{
    pthread_mutex_lock(&s->mu);
    bool r = false;
    if (f->project_id) {
        struct project *p = project_get(s, f->project_id);
        r = p->nready && best(s, p, f, now_ms());
    } else {
        for (size_t k = 0; k < s->pmap_cap && !r; k++)
            for (struct project *p = s->pmap[k]; p && !r; p = p->hnext)
                r = p->nready && best(s, p, f, now_ms());
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}
