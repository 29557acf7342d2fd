/*
 * secrets — project secrets (credentials) sealed at rest, and the other
 * sealed strings quern keeps (trigger and webhook signing secrets).
 *
 * Two keys.  Project secrets are sealed (AES-256-GCM, crypto_seal) under a
 * key kept in DATA_DIR/secret.key (or quern.conf's [secrets] key_file): 32
 * random bytes, mode 0600, made at first use, so a copy of the database
 * alone does not reveal them.  Trigger and
 * webhook secrets are sealed under a key derived from the server secret
 * (HMAC-SHA256(app->secret, purpose)), which lives in the store: they only
 * have to stay unreadable to anyone who sees documents through the API.
 *
 * Threading: every function is safe on any thread; the key file is created
 * atomically (write a temporary file, link it into place), so concurrent
 * first uses, even from two processes, agree on one key.
 */
#ifndef QUERN_SECRETS_H
#define QUERN_SECRETS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "store.h"

struct app;

/* True when name matches [A-Z_][A-Z0-9_]{0,63}. */
bool secrets_name_ok(const char *name);

/* Loads the key file at path (app->secrets_key_path) into key, creating it
 * (32 random bytes, 0600) when missing.  0, or a negative errno when it
 * cannot be read or made. */
int secrets_key(const char *path, unsigned char key[32]);

/* Loads the key as secrets_key does, checked inside tx against the store's
 * record of the key its secrets are sealed with (the store meta
 * "secrets_key_check", a fingerprint: HMAC of a fixed text under the key).
 * While the store has a record, a missing key file is not made again (a
 * new key would leave every secret sealed so far unreadable, silently):
 * -ENOKEY; a file holding another key: -EKEYREJECTED; one that cannot be
 * read (not 32 bytes): -EIO.  record (in a write transaction) writes the
 * record when there is none.  0 with key filled. */
int secrets_key_tx(struct store_tx *tx, const struct app *app, bool record, unsigned char key[32]);

/* What an error of secrets_key_tx means, for a person: a static string. */
const char *secrets_key_error(int rc);

/* At start: logs an error when the store's secrets cannot be opened with
 * this node's key file (missing, another key, unreadable), and a warning
 * when the file can be read by others than quernd's user. */
void secrets_check_key(struct app *app);

/* Seals a string under key; returns the base64 of the sealed blob
 * (malloc'd, caller frees). */
char *secrets_seal_str(const unsigned char key[32], const char *value, size_t n);
/* Opens what secrets_seal_str made: 0 with *value malloc'd (NUL-terminated;
 * *n its length when n is not NULL), or -EINVAL. */
int secrets_open_str(const unsigned char key[32], const char *sealed, char **value, size_t *n);

/* The key for sealing trigger/webhook secrets: HMAC(app->secret, purpose)
 * ("trigger-secrets", "webhook-secrets"). */
void secrets_derived_key(const struct app *app, const char *purpose, unsigned char key[32]);

/* For the runner: opens the project's secrets named in `names` (a JSON
 * array of strings, e.g. the task's "secrets") inside tx.  On 0, *names_out
 * and *values_out are malloc'd arrays of *n malloc'd strings (free them with
 * secrets_free).  -ENOENT when a name has no secret (nothing is returned),
 * -EINVAL when a value cannot be opened (wrong key file), or an error of
 * secrets_key_tx when the key cannot be had. */
int secrets_open_for_run(struct app *app, struct store_tx *tx, const char *project_id,
                         const json_t *names, char ***names_out, char ***values_out, size_t *n);
/* Frees what secrets_open_for_run returned, wiping the values first. */
void secrets_free(char **names, char **values, size_t n);

#endif
