/*
 * api_artifacts — a run's files: upload (JSON with base64 or text content,
 * or a raw body), the manifest, authenticated download, and presigned URLs
 * that need no key (HMAC over project, run, name and expiry with the server
 * secret; tampering or expiry answers 403).
 *
 * Bytes go to blob.c before the run that names them is written (on
 * PostgreSQL into the database, so any node serves any artifact; see
 * store.h "blobs" for why first and not in the same transaction).
 *
 * Limits: an upload is bounded by the request body limit (16 MiB by
 * default); a run holds at most MAX_ARTIFACTS files and MAX_RUN_BYTES in
 * all; names are 1-255 bytes of printable characters without "..", a
 * leading "/" or a backslash.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"
#include "auth.h"
#include "blob.h"
#include "crypto.h"
#include "run.h"
#include "util.h"

#define MAX_ARTIFACTS RUN_MAX_ARTIFACTS
#define MAX_RUN_BYTES RUN_MAX_ARTIFACT_BYTES
#define MAX_PRESIGN_S (7 * 86400)

static json_t *load_run(struct req *r, struct store_tx *tx)
{
    json_t *run = store_get(tx, SK_RUN, http_param(r, "project_id"), http_param(r, "id"));
    const char *task = http_param(r, "task_id");
    if (run && task && strcmp(task, json_string_value(json_object_get(run, "task_id")) ?: "")) {
        json_decref(run);
        run = NULL;
    }
    return run;
}

struct add_arg {
    struct req *r;
    json_t *files;   /* [{name, sha, size, content_type}] */
    json_t *out;
};

/* Re-runnable (store_write_retry): the inputs are the request and the
 * files, which it never changes; its outputs (a->out, an error answer) are
 * reset on entry, as a run that lost a conflict may have left them. */
static int add_fn(struct store_tx *tx, void *arg)
{
    struct add_arg *a = arg;
    json_decref(a->out);
    a->out = NULL;
    free(a->r->resp);
    a->r->resp = NULL;
    json_t *run = load_run(a->r, tx);
    if (!run) {
        http_not_found(a->r, "run", http_param(a->r, "id"));
        return -ENOENT;
    }
    enum run_status st = run_status_of(run);
    if (run_status_terminal(st)) {
        /* its terminal event stays its last (api_runs.c: refuse_finished) */
        http_error(a->r, 409, "run_finished", NULL, "the run is %s and takes nothing more",
                   run_status_name(st));
        json_decref(run);
        return -EPERM;
    }
    /* the manifest as it will be: a name given again replaces the artifact
     * of that name (the last of this request wins), so it is counted once */
    json_t *after = json_object();
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(run, "artifacts"), i, f)
        json_object_set(after, json_string_value(json_object_get(f, "name")) ?: "",
                        json_object_get(f, "size"));
    json_array_foreach(a->files, i, f)
        json_object_set(after, json_string_value(json_object_get(f, "name")),
                        json_object_get(f, "size"));
    int64_t total = 0;
    const char *k;
    json_t *v;
    json_object_foreach(after, k, v) total += json_integer_value(v);
    size_t count = json_object_size(after);
    json_decref(after);
    if (count > MAX_ARTIFACTS || total > MAX_RUN_BYTES) {
        http_error(a->r, 400, "artifact_limit", "artifacts",
                   "a run holds at most %d artifacts and %lld bytes", MAX_ARTIFACTS,
                   (long long)MAX_RUN_BYTES);
        json_decref(run);
        return -EINVAL;
    }
    int rc = 0;
    json_array_foreach(a->files, i, f) {
        rc = run_add_artifact(tx, a->r->app, run, json_string_value(json_object_get(f, "name")),
                              json_string_value(json_object_get(f, "sha")),
                              json_integer_value(json_object_get(f, "size")),
                              json_string_value(json_object_get(f, "content_type")));
        if (rc)
            break;
    }
    if (!rc)
        a->out = json_incref(json_object_get(run, "artifacts"));
    json_decref(run);
    return rc;
}

static void add_files(struct req *r, json_t *files)
{
    struct add_arg a = {r, files, NULL};
    int rc = store_write_retry(r->app->store, add_fn, &a);
    if (rc == -EAGAIN) {
        free(r->resp);     /* decided on a transaction that was rolled back */
        r->resp = NULL;
    }
    if (rc) {
        api_store_error(r, rc, "run");
        return;
    }
    http_json(r, 200, json_pack("{s:o}", "data", a.out));
}

/* A content type is served back as a header: printable ASCII, not empty. */
static bool content_type_ok(const char *t)
{
    for (const char *c = t; *c; c++)
        if (*c < 0x20 || *c > 0x7e)
            return false;
    return *t != 0;
}

void api_artifacts_upload(struct req *r)
{
    const char *ct = http_header(r, "Content-Type");
    json_t *files = json_array();
    const char *raw_name = http_query(r, "name");
    if (raw_name || (ct && strncmp(ct, "application/json", 16))) {
        /* a raw upload: the body is the file */
        if (!raw_name || !blob_name_ok(raw_name)) {
            http_error(r, 400, "invalid_name", "name",
                       "a raw upload needs ?name= (1-255 printable characters, no '..', no "
                       "backslash, no leading '/')");
            goto out;
        }
        /* the header is served back as the artifact's: the same rule as a
         * JSON upload's content_type (an empty one is as none) */
        if (ct && !*ct)
            ct = NULL;
        if (ct && !content_type_ok(ct)) {
            http_error(r, 400, "invalid_value", "Content-Type",
                       "the Content-Type of a raw upload must be printable ASCII (it is served "
                       "back as a header)");
            goto out;
        }
        char sha[65];
        int rc = blob_put(r->app->blobs, r->body.data ? r->body.data : "", r->body.len, sha);
        if (rc) {
            http_error(r, 500, "blob_error", NULL, "cannot store the artifact (%d)", rc);
            goto out;
        }
        json_array_append_new(files, json_pack("{s:s, s:s, s:I, s:s}", "name", raw_name, "sha", sha,
                                               "size", (json_int_t)r->body.len, "content_type",
                                               ct ? ct : run_guess_content_type(raw_name)));
        add_files(r, files);
        goto out;
    }
    json_t *body = http_body_object(r);
    json_t *list = NULL;
    if (!body || !api_known_fields(r, body, (const char *const[]){"artifacts", NULL}, "") ||
        !api_arr(r, body, "artifacts", "artifacts", 100, &list))
        goto out;
    if (!json_array_size(list)) {
        http_error(r, 400, "missing_field", "artifacts", "artifacts must hold at least one file");
        goto out;
    }
    size_t i;
    json_t *f;
    json_array_foreach(list, i, f) {
        char p[64], pn[80], pc[80], pb[80], pt[80];
        snprintf(p, sizeof p, "artifacts[%zu].", i);
        snprintf(pn, sizeof pn, "%sname", p);
        snprintf(pc, sizeof pc, "%scontent", p);
        snprintf(pb, sizeof pb, "%scontent_base64", p);
        snprintf(pt, sizeof pt, "%scontent_type", p);
        const char *name = NULL, *text = NULL, *b64 = NULL, *type = NULL;
        if (!json_is_object(f)) {
            http_error(r, 400, "invalid_type", p, "artifacts[%zu] must be an object", i);
            goto out;
        }
        if (!api_known_fields(r, f, (const char *const[]){"name", "content", "content_base64",
                                                           "content_type", NULL}, p) ||
            !api_str(r, f, "name", pn, 255, &name) || !api_str(r, f, "content", pc, 0, &text) ||
            !api_str(r, f, "content_base64", pb, 0, &b64) ||
            !api_str(r, f, "content_type", pt, 255, &type))
            goto out;
        if (!name || !blob_name_ok(name)) {
            http_error(r, 400, "invalid_name", pn,
                       "%s must be 1-255 printable characters without '..', a backslash or a leading '/'",
                       pn);
            goto out;
        }
        if (!text == !b64) {
            http_error(r, 400, "missing_field", pc, "give exactly one of %s and %s", pc, pb);
            goto out;
        }
        if (type && !content_type_ok(type)) {
            http_error(r, 400, "invalid_value", pt,
                       "%s must be a media type like text/plain (printable, no line breaks)", pt);
            goto out;
        }
        unsigned char *bytes = NULL;
        size_t n = 0;
        if (b64) {
            if (crypto_b64_decode(b64, strlen(b64), &bytes, &n)) {
                http_error(r, 400, "invalid_base64", pb, "%s is not valid base64", pb);
                goto out;
            }
        } else {
            n = json_string_length(json_object_get(f, "content"));
            bytes = (unsigned char *)xstrndup(text, n);
        }
        char sha[65];
        int rc = blob_put(r->app->blobs, bytes, n, sha);
        free(bytes);
        if (rc) {
            http_error(r, 500, "blob_error", NULL, "cannot store the artifact (%d)", rc);
            goto out;
        }
        json_array_append_new(files, json_pack("{s:s, s:s, s:I, s:s}", "name", name, "sha", sha,
                                               "size", (json_int_t)n, "content_type",
                                               type ? type : run_guess_content_type(name)));
    }
    add_files(r, files);
out:
    json_decref(files);
}

struct find_arg {
    struct req *r;
    const char *project, *run_id, *name, *path;
    json_t *entry;
    bool run_found;
};

static int find_fn(struct store_tx *tx, void *arg)
{
    struct find_arg *f = arg;
    json_t *run = f->r ? load_run(f->r, tx) : store_get(tx, SK_RUN, f->project, f->run_id);
    f->run_found = run != NULL;
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(run, "artifacts"), i, a) {
        const char *n = json_string_value(json_object_get(a, f->path ? "storage_path" : "name"));
        if (n && !strcmp(n, f->path ? f->path : f->name))
            f->entry = json_incref(a);
    }
    json_decref(run);
    return 0;
}

/* The request's run's artifact named name, or (name NULL) the one stored at
 * path: a new reference, or NULL having answered the request (the store's
 * error, or 404 for no such run or no such artifact). */
static json_t *find_artifact(struct req *r, const char *name, const char *path)
{
    struct find_arg f = {r, NULL, NULL, name, path, NULL, false};
    int rc = store_read(r->app->store, find_fn, &f);
    if (rc) {
        json_decref(f.entry);
        api_store_error(r, rc, "artifact");
        return NULL;
    }
    if (!f.entry)
        http_not_found(r, f.run_found ? "artifact" : "run",
                       f.run_found ? (name ? name : path) : http_param(r, "id"));
    return f.entry;
}

/* "attachment" with the name's last part as the file to save (RFC 6266):
 * filename= in printable ASCII with '"', '\\' and '/' as '_' (what a
 * hostile name could quote its way out of), filename*= its UTF-8 bytes
 * percent-encoded for the clients that read it.  Malloc'd. */
static char *disposition(const char *name)
{
    const char *slash = strrchr(name, '/');
    const char *base = slash && slash[1] ? slash + 1 : name;
    char *ascii = xstrdup(base);
    for (unsigned char *c = (unsigned char *)ascii; *c; c++)
        if (*c < 0x20 || *c > 0x7e || *c == '"' || *c == '\\' || *c == '/')
            *c = '_';
    char *enc = url_escape(base);
    char *v = xasprintf("attachment; filename=\"%s\"; filename*=UTF-8''%s", ascii, enc);
    free(ascii);
    free(enc);
    return v;
}

static void send_blob(struct req *r, json_t *entry)
{
    int fd = blob_open_read(r->app->blobs, json_string_value(json_object_get(entry, "sha256")));
    if (fd < 0) {
        http_not_found(r, "artifact content", json_string_value(json_object_get(entry, "name")));
        return;
    }
    /* the content type came from a client: serve it inert */
    http_add_header(r, "X-Content-Type-Options", "nosniff");
    char *disp = disposition(json_string_value(json_object_get(entry, "name")) ?: "artifact");
    http_add_header(r, "Content-Disposition", disp);
    free(disp);
    http_add_header(r, "Content-Security-Policy", "sandbox");
    http_file(r, 200, "application/octet-stream", fd,
              json_integer_value(json_object_get(entry, "size")));
    const char *ct = json_string_value(json_object_get(entry, "content_type"));
    if (ct && !strpbrk(ct, "\r\n")) {
        r->content_type = NULL;   /* the header below carries a copy */
        http_add_header(r, "Content-Type", ct);
    }
}

struct manifest_arg {
    struct req *r;
    json_t *out;
};

static int manifest_fn(struct store_tx *tx, void *arg)
{
    struct manifest_arg *m = arg;
    json_t *run = load_run(m->r, tx);
    if (run)
        m->out = json_incref(json_object_get(run, "artifacts"));
    json_decref(run);
    return 0;
}

void api_artifacts_list(struct req *r)
{
    int64_t limit, offset;
    if (!http_paging(r, &limit, &offset))
        return;
    struct manifest_arg m = {r, NULL};
    int rc = store_read(r->app->store, manifest_fn, &m);
    if (rc) {   /* a read that failed: not an absent run */
        json_decref(m.out);
        api_store_error(r, rc, "run");
        return;
    }
    if (!m.out) {
        http_not_found(r, "run", http_param(r, "id"));
        return;
    }
    /* a list as every list is (API.md): newest first (the manifest is in
     * the order stored), a page, the total */
    int64_t total = (int64_t)json_array_size(m.out);
    json_t *page = json_array();
    for (int64_t i = total - 1 - offset; i >= 0 && (int64_t)json_array_size(page) < limit; i--)
        json_array_append(page, json_array_get(m.out, (size_t)i));
    json_decref(m.out);
    http_json(r, 200, json_pack("{s:o, s:b, s:I}", "data", page, "has_more",
                                offset + (int64_t)json_array_size(page) < total, "total",
                                (json_int_t)total));
}

void api_artifacts_download(struct req *r)
{
    const char *name = http_query(r, "name");
    if (!name) {
        http_error(r, 400, "missing_parameter", "name", "name is required");
        return;
    }
    json_t *entry = find_artifact(r, name, NULL);
    if (!entry)
        return;
    send_blob(r, entry);
    json_decref(entry);
}

/* A link's signature: over its run, name and expiry, and (links made since
 * keys end them) the key that made it, kp its project ("_root" for a root
 * key).  Without key: the links made before, which no revocation ends. */
static void presign_sig(struct app *app, const char *project, const char *run, const char *name,
                        int64_t expires, const char *kp, const char *key, char out[65])
{
    char *msg = key ? xasprintf("presign\n%s\n%s\n%s\n%lld\n%s\n%s", project, run, name,
                                (long long)expires, kp, key)
                    : xasprintf("presign\n%s\n%s\n%s\n%lld", project, run, name, (long long)expires);
    unsigned char mac[32];
    crypto_hmac_sha256(app->secret, sizeof app->secret, msg, strlen(msg), mac);
    hex_encode(mac, 32, out);
    free(msg);
}

void api_artifacts_presign(struct req *r)
{
    json_t *body = http_body_object(r);
    const char *path = NULL;
    json_int_t expires_in = 3600;
    if (!body ||
        !api_known_fields(r, body, (const char *const[]){"storage_path", "expires_in", NULL}, "") ||
        !api_str(r, body, "storage_path", "storage_path", 1024, &path) ||
        !api_int(r, body, "expires_in", "expires_in", 1, MAX_PRESIGN_S, &expires_in))
        return;
    if (!path) {
        http_error(r, 400, "missing_field", "storage_path", "storage_path is required");
        return;
    }
    json_t *entry = find_artifact(r, NULL, path);
    if (!entry)
        return;
    const char *name = json_string_value(json_object_get(entry, "name"));
    int64_t exp = now_ms() / 1000 + expires_in;
    char sig[65], ts[RFC3339_LEN];
    /* the link dies with the key that made it, as a connection token does */
    const char *kp = r->key_project ? r->key_project : AUTH_ROOT_PROJECT;
    presign_sig(r->app, http_param(r, "project_id"), http_param(r, "id"), name, exp, kp, r->key_id,
                sig);
    char *ename = url_escape(name), *ekp = url_escape(kp), *ekey = url_escape(r->key_id);
    char *url = xasprintf("/artifacts/%s/%s?name=%s&expires=%lld&kp=%s&key=%s&sig=%s",
                          http_param(r, "project_id"), http_param(r, "id"), ename, (long long)exp,
                          ekp, ekey, sig);
    free(ename);
    free(ekp);
    free(ekey);
    rfc3339_format(exp * 1000, ts);
    http_json(r, 200, json_pack("{s:s, s:s}", "url", url, "expires_at", ts));
    free(url);
    json_decref(entry);
}

void api_artifacts_public(struct req *r)
{
    const char *project = http_param(r, "project_id"), *run = http_param(r, "run_id");
    const char *name = http_query(r, "name"), *exp_s = http_query(r, "expires");
    const char *sig = http_query(r, "sig");
    int64_t exp;
    if (!name || !exp_s || !sig || parse_i64(exp_s, &exp) || strlen(sig) != 64) {
        http_error(r, 403, "invalid_signature", NULL, "the link is not a valid presigned URL");
        return;
    }
    const char *kp = http_query(r, "kp"), *key = http_query(r, "key");
    if (!kp != !key) {
        http_error(r, 403, "invalid_signature", NULL, "the link is not a valid presigned URL");
        return;
    }
    char want[65];
    presign_sig(r->app, project, run, name, exp, kp, key, want);
    if (!ct_equal(want, sig, 64)) {
        http_error(r, 403, "invalid_signature", NULL, "the link's signature does not match");
        return;
    }
    if (exp < now_ms() / 1000) {
        http_error(r, 403, "link_expired", NULL, "the link has expired");
        return;
    }
    bool live = true;
    int rc = key ? auth_key_live(r->app, kp, key, &live) : 0;
    if (rc) {
        api_store_error(r, rc, "API key");
        return;
    }
    if (!live) {
        http_error(r, 403, "link_revoked", NULL,
                   "the API key that made this link was revoked");
        return;
    }
    struct find_arg f = {NULL, project, run, name, NULL, NULL, false};
    rc = store_read(r->app->store, find_fn, &f);
    if (rc) {
        json_decref(f.entry);
        api_store_error(r, rc, "artifact");
        return;
    }
    if (!f.entry) {
        http_not_found(r, "artifact", name);
        return;
    }
    send_blob(r, f.entry);
    json_decref(f.entry);
}
