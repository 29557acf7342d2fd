/*
 * app — the server's parts, wired together once in quernd.c and handed to
 * every request.  A plain struct of pointers: each part owns its own state.
 */
#ifndef QUERN_APP_H
#define QUERN_APP_H

#include <stdbool.h>
#include <stdint.h>

#include "store.h"

struct config {
    int64_t max_body_bytes;        /* 16 MiB */
    int64_t max_name_len;          /* 256 */
    int64_t max_description_len;   /* 4096 */
    int64_t max_code_bytes;        /* 1 MiB */
    int64_t default_timeout_ms;    /* DEFAULT_TASK_TIMEOUT_MS, 30 s */
    int64_t max_timeout_ms;        /* MAX_TASK_TIMEOUT_MS, 1 h */
    int64_t lease_ms;              /* a worker lease without heartbeat, 60 s */
    int64_t max_wait_ms;           /* longest lease long-poll, 60 s */
    int64_t retention_ms;          /* history older than this is pruned; 0 keeps it (30 days) */
    int64_t retention_every_ms;    /* how often the leader prunes (1 h) */
    int64_t blob_grace_ms;         /* an unnamed artifact file stays this long (1 h) */
    int64_t drain_grace_ms;        /* on SIGTERM, running code may go on this long (10 s) */
    int64_t http_idle_timeout_ms;  /* a connection without traffic is closed (60 s) */
    int64_t rate_per_s;            /* requests a second per API key; 0: no limit */
    int64_t rate_burst;            /* requests at once per API key (set to 2 x rate_per_s at start when 0) */
    int http_threads;
    int exec_slots;
    enum store_fsync fsync;
};

struct app {
    struct config cfg;
    struct store *store;
    struct auth *auth;
    struct ratelimit *ratelimit;   /* NULL unless cfg.rate_per_s (ratelimit.h) */
    struct events *events;
    struct sched *sched;
    struct http *http;
    struct runner *runner;         /* NULL when code cannot run on this node */
    struct blob *blobs;
    char *data_dir;
    char *secrets_key_path;        /* quern.conf [secrets] key_file, or DATA_DIR/secret.key */
    unsigned char secret[32];      /* signs connection tokens and presigned URLs */
    volatile bool draining;
    struct webhook *webhooks;      /* outgoing webhook deliveries (webhook.h) */
};

#endif
