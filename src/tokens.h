/*
 * tokens — connection tokens (JWT HS256 bound to one run) and presigned
 * artifact URLs, both signed with the server secret kept in the store.
 */
#ifndef QUERN_TOKENS_H
#define QUERN_TOKENS_H

#include <stdbool.h>
#include <stdint.h>

struct app;

/* A token for (project, task, run) valid for ttl_s seconds (malloc'd). */
/* key_project, key_id: the key that makes it (the token dies with it) */
char *tokens_connection(struct app *app, const char *project_id, const char *task_id,
                        const char *run_id, const char *key_project, const char *key_id,
                        bool commands, int64_t ttl_s, int64_t *expires_ms);
/* 0 with *project_id, *run_id, *key_project and *key_id (malloc'd) and
 * *commands (whether the token may send commands: its minter could);
 * -EINVAL bad/tampered (or made before tokens named their key),
 * -ETIMEDOUT expired. */
int tokens_verify_connection(struct app *app, const char *token, char **project_id,
                             char **run_id, bool *commands, char **key_project, char **key_id);

#endif
