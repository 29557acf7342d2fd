/*
 * auth — API keys: creation (random, shown once, stored as a SHA-256 hash),
 * lookup with an in-memory cache, scopes, and the per-request check.
 */
#ifndef QUERN_AUTH_H
#define QUERN_AUTH_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "http.h"
#include "store.h"

#define AUTH_ROOT_PROJECT "_root"

struct auth;
struct app;

struct auth *auth_new(struct store *st);
void auth_free(struct auth *a);

/* Parses a scope name ("task:read", …) into its bit, or 0. */
unsigned auth_scope_bit(const char *name);
/* Hex SHA-256 of a key, as stored. */
void auth_hash_key(const char *key, char out[65]);

/* Whether the request's key has scope (with what its scopes imply:
 * admin ⊇ task:write ⊇ task:read). */
bool auth_has_scope(const struct req *r, unsigned scope);
/* A new random key string "qk_…" (malloc'd). */
char *auth_new_key(void);
/* Forgets a revoked key at once (this node). */
void auth_forget(struct auth *a, const char *hash);
/* How many keys this node has revoked (auth_forget) since it started: a
 * holder of a long-lived answer (an SSE stream) looks at its key again
 * when it changed. */
uint64_t auth_revocations(struct auth *a);

/* Whether the API key (project, key_id) exists and is not revoked: 0 and
 * *live, or a store error (-ENOTCONN... when it cannot be read). */
int auth_key_live(struct app *app, const char *project, const char *key_id, bool *live);

/* Authenticates r from its Authorization header and checks the route's
 * scopes and project; on failure answers 401/403/404 and returns false. */
bool auth_request(struct req *r);
/* True when the caller may act in project_id (root, or its own project). */
bool auth_project_ok(struct req *r, const char *project_id);

#endif
