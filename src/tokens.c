/*
 * tokens — connection tokens: JWT HS256 with claims {prj, tsk, run, exp,
 * typ:"connection"}, signed with the server secret (app->secret, generated
 * at bootstrap and kept in the store).
 */
#include "tokens.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "crypto.h"
#include "util.h"

char *tokens_connection(struct app *app, const char *project_id, const char *task_id,
                        const char *run_id, const char *key_project, const char *key_id,
                        bool commands, int64_t ttl_s, int64_t *expires_ms)
{
    int64_t exp = now_ms() / 1000 + ttl_s;
    json_t *claims = json_pack("{s:s, s:s, s:s, s:s, s:I, s:b, s:s, s:s}", "typ", "connection",
                               "prj", project_id, "tsk", task_id, "run", run_id, "exp",
                               (json_int_t)exp, "cmd", commands, "kpr", key_project, "kid",
                               key_id);
    char *tok = crypto_jwt_sign(claims, app->secret, sizeof app->secret);
    json_decref(claims);
    if (expires_ms)
        *expires_ms = exp * 1000;
    return tok;
}

int tokens_verify_connection(struct app *app, const char *token, char **project_id,
                             char **run_id, bool *commands, char **key_project, char **key_id)
{
    json_t *claims = NULL;
    int rc = crypto_jwt_verify(token, app->secret, sizeof app->secret, &claims);
    if (rc)
        return rc;
    const char *typ = json_string_value(json_object_get(claims, "typ"));
    const char *p = json_string_value(json_object_get(claims, "prj"));
    const char *r = json_string_value(json_object_get(claims, "run"));
    const char *kp = json_string_value(json_object_get(claims, "kpr"));
    const char *kid = json_string_value(json_object_get(claims, "kid"));
    if (!typ || strcmp(typ, "connection") || !p || !r || !kp || !kid) {
        json_decref(claims);
        return -EINVAL;
    }
    *project_id = xstrdup(p);
    *run_id = xstrdup(r);
    *commands = json_is_true(json_object_get(claims, "cmd"));
    *key_project = xstrdup(kp);
    *key_id = xstrdup(kid);
    json_decref(claims);
    return 0;
}
