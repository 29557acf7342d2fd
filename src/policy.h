/*
 * policy — a project's execution policy: which runtimes its runs may use,
 * the largest timeout, memory and code they may ask for, whether they may
 * use the network, whether each run waits for approval, the relay webhook,
 * and whether outgoing requests may reach private addresses.
 *
 * Storage: one JSON document per project in the store's meta table under
 * the key "policy:<project_id>" (not a field of the project document, so
 * that listing projects never shows a relay URL to a read-only key).  A
 * project without one has the default policy (everything allowed, no
 * approval, no relay, no private outbound addresses).
 *
 * Threading: pure functions over documents plus store calls in the
 * caller's transaction; safe on any thread.
 */
#ifndef QUERN_POLICY_H
#define QUERN_POLICY_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "store.h"

/* The default policy (new reference): what a project without one gets. */
json_t *policy_defaults(void);

/* The project's stored policy (new reference), or NULL when it has none
 * (the defaults apply). */
json_t *policy_get(struct store_tx *tx, const char *project_id);
/* The project's policy with defaults filled in (new reference, never NULL). */
json_t *policy_effective(struct store_tx *tx, const char *project_id);
/* Stores policy (a document policy_parse made) for the project. */
int policy_put(struct store_tx *tx, const char *project_id, const json_t *policy);

/* Validates a PUT body: 0 with *out a complete policy document (new
 * reference; absent fields take their defaults), or -EINVAL with *param
 * and *msg malloc'd (the field and a sentence naming it). */
int policy_parse(const json_t *body, int64_t max_timeout_ms, int64_t max_code_bytes, json_t **out,
                 char **param, char **msg);

/* Checks a task about to get a run against policy (NULL: allowed).
 * 0 when allowed; -EPERM with *rule a malloc'd message that starts with the
 * rule's name ("allowed_runtimes: runtime python is not allowed …").  Only
 * denials: require_approval is policy_requires_approval's business. */
int policy_check_run(const json_t *policy, const json_t *task, int64_t default_timeout_ms,
                     char **rule);

/* A task's memory_limit_mb when it sets none. */
#define POLICY_DEFAULT_MEMORY_MB 256

/* The limits a run of task gets under policy: a timeout_ms or
 * memory_limit_mb the task left at its default (default_timeout_ms, 256
 * MiB) is capped at the project's maximum instead of refused (RUNTIME.md:
 * "default limits ... capped by the project policy"); a value the task set
 * over the maximum is refused by policy_check_run.  Returns a new object
 * {timeout_ms?, memory_limit_mb?} holding the capped ones, or NULL when
 * none is. */
json_t *policy_caps(const json_t *policy, const json_t *task, int64_t default_timeout_ms);

/* True when runs of the project wait for approval before executing. */
bool policy_requires_approval(const json_t *policy);
/* True when outgoing requests (webhooks, relay) may reach private, loopback
 * and link-local addresses. */
bool policy_outbound_allow_private(const json_t *policy);
/* The relay webhook URL, or NULL (borrowed from policy). */
const char *policy_relay_url(const json_t *policy);

#endif
