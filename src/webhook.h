/*
 * webhook — outgoing webhook deliveries: follows the event log, makes one
 * delivery (an SK_DELIVERY document) for every event that matches a
 * webhook's filter, and POSTs it, signed, until the receiver answers 2xx or
 * 24 h have passed.  relay_message deliveries (Slack-compatible payloads to
 * the policy's relay_webhook_url) go through the same machinery.
 *
 * Durability.  Each webhook document holds a cursor: the id of the last
 * event it has turned into deliveries.  Advancing the cursor and storing the
 * deliveries happen in one store transaction (compare-and-set on the old
 * cursor), so an event gets exactly one delivery per webhook even across
 * crashes.  A delivery is pending until an attempt succeeds or its retry
 * window ends; pending deliveries are reloaded at start, so an attempt cut
 * short by a crash is made again (at-least-once on the wire; receivers
 * dedupe on X-Quern-Delivery / the event id).
 *
 * Threads.  One dispatcher thread turns events into deliveries (woken by
 * the event bus, and every second for events written by other nodes).  A
 * few sender threads (WEBHOOK_SENDERS) take due deliveries from an
 * in-memory min-heap ordered by next attempt time and POST them with
 * libcurl, at most WEBHOOK_PER_HOOK for one webhook at a time (a due
 * delivery of a webhook at its limit is parked beside the heap until one of
 * that webhook's attempts ends).  Neither ever runs inside a store write for
 * longer than a few document writes, so a slow or dead receiver delays only
 * its own deliveries, never other webhooks', dispatch of runs or the store
 * writer.
 *
 * Request forgery.  Before connecting, the host is resolved and loopback,
 * link-local, private (RFC 1918, CGNAT, ULA), unspecified, multicast and
 * reserved addresses are refused unless the project's policy sets
 * outbound_allow_private or quernd runs with QUERN_OUTBOUND_ALLOW_PRIVATE=1.
 * The checked address is pinned with CURLOPT_RESOLVE and checked again in
 * CURLOPT_OPENSOCKETFUNCTION, so a DNS answer that changes between check
 * and connect (rebinding) cannot slip through.  No redirects, no proxies.
 *
 * Environment: QUERN_WEBHOOK_RETRY_BASE_MS (first retry delay, default
 * 1000; doubles per attempt, capped at 1 h), QUERN_WEBHOOK_RETRY_WINDOW_MS
 * (how long to retry, default 24 h), QUERN_WEBHOOK_TIMEOUT_MS (whole
 * request, default 15000; connect 5000 at most), QUERN_OUTBOUND_ALLOW_PRIVATE.
 */
#ifndef QUERN_WEBHOOK_H
#define QUERN_WEBHOOK_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "store.h"

#define WEBHOOK_SENDERS 8
/* At most this many attempts of one webhook (or one project's relay) are in
 * flight at once, so receivers that hang hold at most this many senders each
 * and the others keep serving every other webhook. */
#define WEBHOOK_PER_HOOK 2
#define WEBHOOK_RELAY_ID "relay"   /* the webhook_id of relay_message deliveries */

struct app;
struct webhook;

/* Starts the dispatcher and sender threads, reloading pending deliveries.
 * NULL with *err (malloc'd) on failure.  Call before the HTTP server starts
 * and webhook_free before the store closes. */
struct webhook *webhook_new(struct app *app, char **err);
/* Stops the threads (an attempt in flight is abandoned and stays pending)
 * and frees everything. */
void webhook_free(struct webhook *wh);

/* A webhook was created, changed or deleted on this node: the dispatcher
 * looks at the store again now instead of at its next idle pass. */
void webhook_hooks_changed(struct webhook *wh);

/* Stores a new pending delivery document (made by webhook_delivery_doc) in
 * tx and hands it to the senders after the commit.  wh may be NULL (the
 * delivery waits for the next start). */
int webhook_queue(struct store_tx *tx, struct webhook *wh, const char *project_id, json_t *delivery);

/* A new pending delivery document (new reference) for a body to POST to
 * url; webhook_id is a webhook's id or WEBHOOK_RELAY_ID. */
json_t *webhook_delivery_doc(const char *project_id, const char *webhook_id, const char *url,
                             const char *event_id, const char *event_type, const char *body);
/* The public form of a delivery document (new reference). */
json_t *webhook_delivery_public(const json_t *d);

/* ---- pure helpers (unit-tested) ---- */

/* Why an address may not be reached without outbound_allow_private:
 * "loopback", "private", "link-local", "unspecified", "multicast",
 * "reserved"; NULL for a public address.  IPv4-mapped, IPv4-compatible,
 * NAT64 and 6to4 IPv6 addresses are judged by the IPv4 address inside. */
const char *webhook_addr_class(const struct sockaddr *sa);
/* The delay before retry number `attempt` (1 after the first failure):
 * base_ms * 2^(attempt-1), capped at one hour. */
int64_t webhook_backoff_ms(int attempt, int64_t base_ms);
/* True when an event type matches a filter entry: "*", "task_run.*" (a
 * prefix up to the dot) or an exact type. */
bool webhook_pattern_match(const char *pattern, const char *type);
/* True when a filter entry is "*", "<namespace>.*" or a known event type. */
bool webhook_pattern_ok(const char *pattern);
/* 0 when url is an absolute http(s) URL with a host (at most 2048 bytes);
 * -EINVAL with *why (malloc'd, a phrase: "must be an http or https URL"). */
int webhook_url_check(const char *url, char **why);

#endif
