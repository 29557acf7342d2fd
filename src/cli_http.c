/*
 * cli_http — libcurl underneath the quern CLI.  One easy handle is reused so
 * a command making several requests keeps one connection.  Connect timeout
 * 10 s; no total timeout (wait_for_result and long polls are legitimate);
 * streams give up after 60 s without a byte (the server sends a keepalive
 * every 20 s), and the caller reconnects with Last-Event-ID.
 */
#include "cli_http.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_http_init(struct cli_http *h, const char *base, const char *key)
{
    memset(h, 0, sizeof(*h));
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -ENOMEM;
    h->curl = curl_easy_init();
    if (!h->curl)
        return -ENOMEM;
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    h->base = xstrndup(base, n);
    h->key = key && *key ? xstrdup(key) : NULL;
    h->idle_s = CLI_HTTP_IDLE_S;
    /* "https://user:pw@host/p" is shown as "https://host/p": a password in
     * the URL stays out of error messages. */
    const char *auth = strstr(h->base, "://");
    auth = auth ? auth + 3 : h->base;
    size_t hostlen = strcspn(auth, "/?#");
    const char *at = memrchr(auth, '@', hostlen);
    if (at)
        h->shown = xasprintf("%.*s%s", (int)(auth - h->base), h->base, at + 1);
    else
        h->shown = xstrdup(h->base);
    return 0;
}

void cli_http_release(struct cli_http *h)
{
    if (h->curl)
        curl_easy_cleanup(h->curl);
    free(h->base);
    free(h->shown);
    free(h->cacert);
    free(h->key);
    memset(h, 0, sizeof(*h));
    curl_global_cleanup();
}

char *cli_http_escape(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    if (!e)
        return xstrdup("");
    char *r = xstrdup(e);
    curl_free(e);
    return r;
}

struct sink {
    struct cli_http *h;
    struct cli_resp *r;
    cli_http_chunk_fn fn;
    void *ud;
    int stopped;
};

static size_t on_write(char *p, size_t size, size_t nmemb, void *ud)
{
    struct sink *s = ud;
    size_t n = size * nmemb;
    if (s->fn) {
        long code = 0;
        curl_easy_getinfo(s->h->curl, CURLINFO_RESPONSE_CODE, &code);
        if (code >= 200 && code < 300) {
            if (s->fn(p, n, s->ud)) {
                s->stopped = 1;
                return 0;       /* makes curl stop with CURLE_WRITE_ERROR */
            }
            return n;
        }
    }
    if (s->r->body.len + n > (256u << 20))
        return 0;               /* refuse absurd bodies rather than exhaust memory */
    buf_append(&s->r->body, p, n);
    return n;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    struct cli_http *h = ud;
    return h->cancel && *h->cancel;   /* non-zero aborts the transfer */
}

static int perform(struct cli_http *h, const char *method, const char *path, const char *body,
                   const char *last_id, struct sink *sink)
{
    CURL *c = h->curl;
    struct curl_slist *hdrs = NULL;
    char *url = xasprintf("%s%s", h->base, path);
    char *auth = NULL, *lei = NULL;
    char why[CURL_ERROR_SIZE] = "";
    int rc = 0;

    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "quern-cli/1");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, sink);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, h);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, why);   /* names the cause: refused, certificate */
    if (h->cacert)
        curl_easy_setopt(c, CURLOPT_CAINFO, h->cacert);
    if (h->key) {
        auth = xasprintf("Authorization: Bearer %s", h->key);
        hdrs = curl_slist_append(hdrs, auth);
    }
    if (sink->fn) {
        hdrs = curl_slist_append(hdrs, "Accept: text/event-stream");
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
        if (last_id && *last_id) {
            lei = xasprintf("Last-Event-ID: %s", last_id);
            hdrs = curl_slist_append(hdrs, lei);
        }
    } else {
        hdrs = curl_slist_append(hdrs, "Accept: application/json");
        if (h->idle_s > 0) {
            /* A server that accepts and never answers must not hang us. */
            curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
            curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, h->idle_s);
        }
    }
    if (body) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    } else if (strcmp(method, "GET") != 0 && strcmp(method, "DELETE") != 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    }
    if (!strcmp(method, "GET"))
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);

    CURLcode cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &sink->r->status);
    if (cc == CURLE_ABORTED_BY_CALLBACK || (h->cancel && *h->cancel)) {
        snprintf(h->err, sizeof(h->err), "interrupted");
        rc = -ECANCELED;
    } else if (cc != CURLE_OK && !(cc == CURLE_WRITE_ERROR && sink->stopped)) {
        if (cc == CURLE_OPERATION_TIMEDOUT && !sink->fn && strstr(why, "too slow"))
            snprintf(why, sizeof(why), "the server sent nothing for %ld s (QUERN_TIMEOUT)",
                     h->idle_s);
        snprintf(h->err, sizeof(h->err), "%.700s: %.255s", h->shown,
                 *why ? why : curl_easy_strerror(cc));
        rc = -EIO;
    }
    /* the handle outlives this frame: no pointer into it may stay set */
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdrs);
    free(url);
    free(auth);
    free(lei);
    return rc;
}

int cli_http_do(struct cli_http *h, const char *method, const char *path, const char *body,
                struct cli_resp *r)
{
    struct sink s = {.h = h, .r = r};
    r->status = 0;
    return perform(h, method, path, body, NULL, &s);
}

int cli_http_stream(struct cli_http *h, const char *path, const char *last_event_id,
                    cli_http_chunk_fn fn, void *ud, struct cli_resp *r)
{
    struct sink s = {.h = h, .r = r, .fn = fn, .ud = ud};
    r->status = 0;
    return perform(h, "GET", path, NULL, last_event_id, &s);
}

char *cli_http_error_text(long status, const char *body, size_t len)
{
    json_error_t jerr;
    json_t *j = body && len ? json_loadb(body, len, 0, &jerr) : NULL;
    json_t *e = j ? json_object_get(j, "error") : NULL;
    char *out;
    if (json_is_object(e)) {
        const char *code = json_string_value(json_object_get(e, "code"));
        const char *type = json_string_value(json_object_get(e, "type"));
        const char *msg = json_string_value(json_object_get(e, "message"));
        const char *param = json_string_value(json_object_get(e, "param"));
        struct buf b;
        buf_init(&b);
        buf_printf(&b, "%ld %s", status, type && *type ? type : code && *code ? code : "error");
        if (code && *code && type && strcmp(code, type) != 0)
            buf_printf(&b, " [%s]", code);
        if (msg && *msg)
            buf_printf(&b, ": %s", msg);
        if (param && *param)
            buf_printf(&b, " (param: %s)", param);
        out = buf_steal(&b);
    } else if (len > 0) {
        size_t n = len > 200 ? 200 : len;
        while (n > 0 && (body[n - 1] == '\n' || body[n - 1] == '\r'))
            n--;
        out = xasprintf("%ld: %.*s", status, (int)n, body);
    } else {
        out = xasprintf("%ld: (empty response)", status);
    }
    json_decref(j);
    return out;
}
