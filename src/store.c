/*
 * store — the factory that picks a backend from the store URL, the table of
 * kinds and their indexed fields, and thin dispatch to the backend's vtable.
 * This is the only file that names the backends.
 */
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "jdump.h"
#include "util.h"

struct kind_def {
    const char *name;
    const char *fields[10];
};

/* Indexed fields per kind: copied from the document on every write so lists
 * filter and sort without parsing documents.  Append only: the SQLite and
 * PostgreSQL schemas are derived from this table at migration time. */
static const struct kind_def kinds[SK__COUNT] = {
    [SK_PROJECT] = {"projects", {"name", NULL}},
    [SK_KEY] = {"api_keys", {"hash", "name", NULL}},
    [SK_DEFINITION] = {"definitions", {"title", NULL}},
    [SK_TASK] = {"tasks", {"status", "type", "priority", "definition_id", "parent_id",
                           "assigned_agent_id", "scheduled", "has_dependencies", NULL}},
    [SK_RUN] = {"runs", {"task_id", "status", "definition_id", NULL}},
    [SK_CHECKPOINT] = {"checkpoints", {"run_id", NULL}},
    [SK_TRIGGER] = {"triggers", {"task_id", NULL}},
    [SK_WEBHOOK] = {"webhooks", {"url", NULL}},
    [SK_DELIVERY] = {"deliveries", {"webhook_id", "status", NULL}},
    [SK_SECRET] = {"secrets", {"name", NULL}},
    [SK_STORAGE] = {"storage", {"scope", "name", "account_id", NULL}},
};

const char *const *store_kind_fields(enum store_kind kind)
{
    return kinds[kind].fields;
}

bool store_field_immutable(enum store_kind kind, const char *field)
{
    return kind == SK_RUN && (!strcmp(field, "task_id") || !strcmp(field, "definition_id"));
}

const char *store_kind_name(enum store_kind kind)
{
    return kinds[kind].name;
}

char *store_field_text(const json_t *doc, const char *field)
{
    json_t *v = json_object_get(doc, field);
    if (!v || json_is_null(v))
        return NULL;
    if (json_is_string(v))
        return xstrdup(json_string_value(v));
    if (json_is_true(v))
        return xstrdup("true");
    if (json_is_false(v))
        return xstrdup("false");
    if (json_is_integer(v))
        return xasprintf("%lld", (long long)json_integer_value(v));
    if (json_is_real(v)) {
        char s[JDUMP_REAL_MAX];
        jdump_real(s, json_real_value(v));
        return xstrdup(s);
    }
    return json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
}

bool store_plain_name(const char *name)
{
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return false;
    return *name != 0;
}

bool store_kind_locked(enum store_kind kind)
{
    /* the kinds written back after a read; config kinds (projects, keys,
     * definitions, secrets, storage) are read on hot paths and rarely
     * changed, so reading them never waits */
    return kind == SK_TASK || kind == SK_RUN || kind == SK_TRIGGER || kind == SK_WEBHOOK ||
           kind == SK_DELIVERY;
}

const char *const *store_tables(void)
{
    static const char *tables[SK__COUNT + 5];
    if (!tables[0]) {
        size_t n = 0;
        tables[n++] = "meta";
        for (int k = 0; k < SK__COUNT; k++)
            tables[n++] = kinds[k].name;
        tables[n++] = "logs";
        tables[n++] = "events";
        tables[n++] = "idempotency";
        tables[n] = NULL;
    }
    return tables;
}

const char *store_table_order(const char *table)
{
    if (!strcmp(table, "meta"))
        return "key";
    if (!strcmp(table, "logs"))
        return "run_id, seq";
    if (!strcmp(table, "events"))
        return "id";
    if (!strcmp(table, "idempotency"))
        return "scope, key";
    return "seq";
}

#define BE(x) (((const struct store_base *)(x))->be)
#define TXBE(x) (((const struct store_tx_base *)(x))->be)

struct store *store_open(const char *url, const struct store_opts *opts, char **err)
{
    if (!strncmp(url, "postgres://", 11) || !strncmp(url, "postgresql://", 13))
        return store_pg_backend.open(url, opts, err);
    if (!strncmp(url, "sqlite:", 7))
        url += 7;
    else if (strstr(url, "://")) {
        /* mysql://… was opened as a SQLite file of that name; only the
         * scheme is repeated: the rest may hold a password */
        size_t scheme = (size_t)(strstr(url, "://") - url);
        *err = xasprintf("unknown store URL scheme %.*s://: sqlite:PATH or postgres://...",
                         (int)(scheme < 32 ? scheme : 32), url);
        return NULL;
    }
    /* SQLite's "" and ":memory:" are a private database per connection: the
     * schema went into one and the reader saw none (quernd aborted) */
    if (!*url || !strcmp(url, ":memory:")) {
        *err = xasprintf("store sqlite:%s: a SQLite store needs a file path", url);
        return NULL;
    }
    return store_sqlite_backend.open(url, opts, err);
}

void store_close(struct store *st)
{
    if (st)
        BE(st)->close(st);
}

const char *store_backend(const struct store *st)
{
    return BE(st)->name;
}

int store_ping(struct store *st)
{
    return BE(st)->ping(st);
}

static __thread struct store_idem_claim *idem_claim;

void store_idem_claim_set(struct store_idem_claim *claim)
{
    idem_claim = claim;
}

struct idem_wrap {
    store_fn fn;
    void *arg;
    struct store_idem_claim *claim;
};

static void idem_claimed_hook(void *arg, bool committed)
{
    if (committed)
        ((struct store_idem_claim *)arg)->claimed = true;
}

int store_idem_claim_put(struct store_tx *tx, const struct store_idem_claim *claim)
{
    return store_idem_put(tx, claim->scope, claim->key, claim->fp, STORE_IDEM_PENDING, "");
}

/* fn, then the claim's pending record in the same transaction. */
static int idem_wrap_fn(struct store_tx *tx, void *arg)
{
    struct idem_wrap *w = arg;
    int rc = w->fn(tx, w->arg);
    if (rc)
        return rc;
    rc = store_idem_claim_put(tx, w->claim);
    if (!rc)
        store_tx_on_commit(tx, idem_claimed_hook, w->claim);
    return rc;
}

int store_write(struct store *st, store_fn fn, void *arg)
{
    if (idem_claim && !idem_claim->claimed) {
        struct idem_wrap w = {fn, arg, idem_claim};
        return BE(st)->write(st, idem_wrap_fn, &w);
    }
    return BE(st)->write(st, fn, arg);
}

int store_write_begin(struct store *st, store_fn fn, void *arg, struct store_ticket **ticket)
{
    *ticket = NULL;
    if (!BE(st)->write_begin)
        return BE(st)->write(st, fn, arg);
    return BE(st)->write_begin(st, fn, arg, ticket);
}

void store_write_wait(struct store *st, struct store_ticket *ticket)
{
    if (ticket)
        BE(st)->write_wait(st, ticket);
}

int store_read(struct store *st, store_fn fn, void *arg)
{
    return BE(st)->read(st, fn, arg);
}

void store_tx_on_commit(struct store_tx *tx, store_hook hook, void *arg)
{
    TXBE(tx)->on_commit(tx, hook, arg);
}

bool store_tx_is_write(const struct store_tx *tx)
{
    return TXBE(tx)->is_write(tx);
}

int store_put(struct store_tx *tx, enum store_kind kind, const char *project_id, const json_t *doc)
{
    return TXBE(tx)->put(tx, kind, project_id, doc, false);
}

int store_update(struct store_tx *tx, enum store_kind kind, const char *project_id,
                 const json_t *doc)
{
    return TXBE(tx)->put(tx, kind, project_id, doc, true);
}

int store_patch(struct store_tx *tx, enum store_kind kind, const char *project_id, const char *id,
                const json_t *fields, const char *if_field, const char *if_value)
{
    return TXBE(tx)->patch(tx, kind, project_id, id, fields, if_field, if_value);
}

json_t *store_get(struct store_tx *tx, enum store_kind kind, const char *project_id,
                  const char *id)
{
    return TXBE(tx)->get(tx, kind, project_id, id);
}

int store_delete(struct store_tx *tx, enum store_kind kind, const char *project_id,
                 const char *id)
{
    return TXBE(tx)->del(tx, kind, project_id, id);
}

static bool field_ok(enum store_kind kind, const char *field)
{
    if (!strncmp(field, "metadata.", 9) && field[9])
        return true;
    for (const char *const *f = kinds[kind].fields; *f; f++)
        if (!strcmp(*f, field))
            return true;
    return !strcmp(field, "id");
}

bool store_meta_indexable(enum store_kind kind, const char *project_id,
                          const struct store_filter *f)
{
    return kind == SK_TASK && project_id && !strncmp(f->field, "metadata.", 9) && f->field[9] &&
           !strchr(f->field + 9, '"') && f->value && strlen(f->value) <= STORE_META_VALUE_MAX;
}

int store_meta_filter(enum store_kind kind, const char *project_id, const struct store_query *q)
{
    for (size_t i = 0; i < q->nfilters; i++)
        if (store_meta_indexable(kind, project_id, &q->filters[i]))
            return (int)i;
    return -1;
}

int store_meta_choose(enum store_kind kind, const char *project_id, const struct store_query *q,
                      bool (*countable)(void *ctx, const struct store_filter *f),
                      int64_t (*count)(void *ctx, const struct store_filter *f), void *ctx)
{
    int first = store_meta_filter(kind, project_id, q);
    if (first < 0)
        return -1;
    size_t n = 0;
    for (size_t i = 0; i < q->nfilters; i++)
        n += countable(ctx, &q->filters[i]);
    if (n < 2)
        return first;
    int best = first;
    int64_t best_n = STORE_META_PROBE_CAP + 1, other_n = STORE_META_PROBE_CAP + 1;
    for (size_t i = 0; i < q->nfilters; i++) {
        const struct store_filter *f = &q->filters[i];
        if (!countable(ctx, f))
            continue;
        int64_t c = count(ctx, f);
        if (c < 0)
            return first;
        if (strncmp(f->field, "metadata.", 9)) {
            if (c < other_n)
                other_n = c;
        } else if (c < best_n) {
            best_n = c;
            best = (int)i;
        }
    }
    return best_n >= STORE_META_PROBE_CAP && other_n < STORE_META_PROBE_CAP ? -1 : best;
}

int store_list(struct store_tx *tx, enum store_kind kind, const char *project_id,
               const struct store_query *q, json_t **out, int64_t *total)
{
    for (size_t i = 0; i < q->nfilters; i++)
        if (!field_ok(kind, q->filters[i].field))
            return -EINVAL;
    return TXBE(tx)->list(tx, kind, project_id, q, NULL, NULL, out, total);
}

int store_list_after(struct store_tx *tx, enum store_kind kind, const char *project_id,
                     const struct store_query *q, const char *after_id, json_t **out,
                     int64_t *total)
{
    for (size_t i = 0; i < q->nfilters; i++)
        if (!field_ok(kind, q->filters[i].field))
            return -EINVAL;
    return TXBE(tx)->list(tx, kind, project_id, q, after_id, NULL, out, total);
}

int store_list_fields(struct store_tx *tx, enum store_kind kind, const char *project_id,
                      const struct store_query *q, const char *const *fields, json_t **out)
{
    for (size_t i = 0; i < q->nfilters; i++)
        if (!field_ok(kind, q->filters[i].field))
            return -EINVAL;
    return TXBE(tx)->list(tx, kind, project_id, q, NULL, fields, out, NULL);
}

int store_log_append(struct store_tx *tx, const char *project_id, const char *run_id,
                     json_t *entries, int64_t *last_seq)
{
    return TXBE(tx)->log_append(tx, project_id, run_id, entries, last_seq);
}

int store_log_read(struct store_tx *tx, const char *project_id, const char *run_id,
                   int64_t after_seq, int64_t limit, json_t **out)
{
    return TXBE(tx)->log_read(tx, project_id, run_id, after_seq, limit, out);
}

int64_t store_log_bytes(struct store_tx *tx, const char *project_id, const char *run_id)
{
    return TXBE(tx)->log_bytes(tx, project_id, run_id);
}

int store_event_append(struct store_tx *tx, json_t *event, int64_t *id)
{
    return TXBE(tx)->event_append(tx, event, id);
}

int store_event_list(struct store_tx *tx, const struct store_event_query *q, json_t **out,
                     int64_t *total, int64_t *filtered)
{
    return TXBE(tx)->event_list(tx, q, out, total, filtered);
}

int64_t store_event_last_id(struct store_tx *tx)
{
    return TXBE(tx)->event_last_id(tx);
}

char *store_meta_get(struct store_tx *tx, const char *key)
{
    return TXBE(tx)->meta_get(tx, key);
}

int store_meta_set(struct store_tx *tx, const char *key, const char *value)
{
    return TXBE(tx)->meta_set(tx, key, value);
}

int store_idem_get(struct store_tx *tx, const char *scope, const char *key, int64_t since_ms,
                   char **fingerprint, int *status, char **body)
{
    return TXBE(tx)->idem_get(tx, scope, key, since_ms, fingerprint, status, body);
}

int store_idem_put(struct store_tx *tx, const char *scope, const char *key,
                   const char *fingerprint, int status, const char *body)
{
    return TXBE(tx)->idem_put(tx, scope, key, fingerprint, status, body);
}

int store_idem_del(struct store_tx *tx, const char *scope, const char *key)
{
    return TXBE(tx)->idem_del(tx, scope, key);
}

int store_try_get(struct store_tx *tx, enum store_kind kind, const char *project_id,
                  const char *id, json_t **out)
{
    return TXBE(tx)->try_get(tx, kind, project_id, id, out);
}

int store_conc_active(struct store_tx *tx, const char *project_id, const char *key,
                      const char *except_id, int64_t *n)
{
    if (!TXBE(tx)->conc_active)
        return -ENOTSUP;
    return TXBE(tx)->conc_active(tx, project_id, key, except_id, n);
}

int store_get_many(struct store_tx *tx, enum store_kind kind, const json_t *ids, json_t **out)
{
    return TXBE(tx)->get_many(tx, kind, ids, out);
}

void store_watch(struct store *st, store_watch_fn fn, void *ctx)
{
    BE(st)->watch(st, fn, ctx);
}

bool store_leader(struct store *st)
{
    return BE(st)->leader(st);
}

const char *store_node_id(const struct store *st)
{
    return BE(st)->node_id(st);
}

bool store_node_alive(struct store *st, const char *node_id)
{
    return node_id && BE(st)->node_alive(st, node_id);
}

static bool table_ok(const char *table)
{
    for (const char *const *t = store_tables(); *t; t++)
        if (!strcmp(*t, table))
            return true;
    return false;
}

int store_dump(struct store_tx *tx, const char *table, int64_t offset, int64_t limit,
               json_t **out)
{
    if (!table_ok(table))
        return -EINVAL;
    return TXBE(tx)->dump(tx, table, offset, limit, out);
}

int store_load(struct store_tx *tx, const char *table, const json_t *rows)
{
    if (!table_ok(table))
        return -EINVAL;
    return TXBE(tx)->load(tx, table, rows);
}

int store_prune(struct store_tx *tx, int64_t before_ms, int64_t limit, int64_t *pruned)
{
    return TXBE(tx)->prune(tx, before_ms, limit, pruned);
}

int store_blob_referenced(struct store_tx *tx, const char *sha)
{
    return TXBE(tx)->blob_referenced(tx, sha);
}

int store_blob_put(struct store *st, const char *sha, int64_t size, store_blob_src src, void *ctx)
{
    if (!BE(st)->blob_put)
        return -ENOTSUP;
    return BE(st)->blob_put(st, sha, size, src, ctx);
}

int store_blob_get(struct store *st, const char *sha, int64_t *size, store_blob_sink sink,
                   void *ctx)
{
    if (!BE(st)->blob_get)
        return -ENOTSUP;
    return BE(st)->blob_get(st, sha, size, sink, ctx);
}

int store_storage_version(struct store *st, const char *instance_id, int64_t *version)
{
    if (!BE(st)->storage_version)
        return -ENOTSUP;
    return BE(st)->storage_version(st, instance_id, version);
}

int store_storage_files(struct store *st, const char *instance_id, int64_t *version,
                        json_t **files)
{
    if (!BE(st)->storage_files)
        return -ENOTSUP;
    return BE(st)->storage_files(st, instance_id, version, files);
}

int store_storage_commit(struct store *st, const char *project_id, const char *instance_id,
                         const json_t *changes, const struct store_storage_opts *o,
                         int64_t *before, int64_t *after)
{
    if (!BE(st)->storage_commit)
        return -ENOTSUP;
    return BE(st)->storage_commit(st, project_id, instance_id, changes, o, before, after);
}

int store_storage_size(struct store_tx *tx, const char *instance_id, int64_t *bytes,
                       bool *partial)
{
    if (!TXBE(tx)->storage_size)
        return -ENOTSUP;
    return TXBE(tx)->storage_size(tx, instance_id, bytes, partial);
}

int store_write_retry(struct store *st, store_fn fn, void *arg)
{
    if (!BE(st)->write_retry)
        return store_write(st, fn, arg);
    if (idem_claim && !idem_claim->claimed) {
        struct idem_wrap w = {fn, arg, idem_claim};
        return BE(st)->write_retry(st, idem_wrap_fn, &w);
    }
    return BE(st)->write_retry(st, fn, arg);
}
