/*
 * secrets — see secrets.h.  No state of its own: the key file is read on
 * each use (a 32-byte read is cheaper than keeping key material in a global
 * and getting its lifetime right).
 */
#include "secrets.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app.h"
#include "crypto.h"
#include "log.h"
#include "util.h"

#define KEY_CHECK_META "secrets_key_check"

bool secrets_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64 || !((s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_'))
        return false;
    for (const char *c = s; *c; c++)
        if (!((*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_'))
            return false;
    return true;
}

static int read_key(const char *path, unsigned char key[32])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    size_t got = 0;
    int rc = 0;
    while (got < 32) {
        ssize_t n = read(fd, key + got, 32 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : -EINVAL;   /* short file: refuse, never pad */
            break;
        }
        got += (size_t)n;
    }
    close(fd);
    return rc;
}

int secrets_key(const char *path, unsigned char key[32])
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? xstrndup(path, slash == path ? 1 : (size_t)(slash - path)) : xstrdup(".");
    char *tmp = NULL;
    int rc = read_key(path, key);
    if (rc != -ENOENT)
        goto out;
    /* Make it: a private temporary file, fsynced, then link()ed into place.
     * link fails with EEXIST when another thread or process won the race,
     * and then its key is the one. */
    unsigned char fresh[32];
    random_bytes(fresh, sizeof fresh);
    tmp = xasprintf("%s/.secret.key.%ld.%p", dir, (long)getpid(), (void *)&fresh);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    bool ok = write(fd, fresh, sizeof fresh) == (ssize_t)sizeof fresh && fsync(fd) == 0;
    close(fd);
    if (!ok) {
        rc = -EIO;
        unlink(tmp);
        goto out;
    }
    if (link(tmp, path) && errno != EEXIST) {
        rc = -errno;
        unlink(tmp);
        goto out;
    }
    unlink(tmp);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    rc = read_key(path, key);
    memset(fresh, 0, sizeof fresh);
out:
    free(dir);
    free(tmp);
    return rc;
}

/* The key's fingerprint as the store keeps it: it tells keys apart
 * without revealing them. */
static void key_check(const unsigned char key[32], char out[65])
{
    static const char what[] = "quern secrets key check";
    unsigned char mac[32];
    crypto_hmac_sha256(key, 32, what, sizeof what - 1, mac);
    hex_encode(mac, sizeof mac, out);
}

int secrets_key_tx(struct store_tx *tx, const struct app *app, bool record, unsigned char key[32])
{
    char *want = store_meta_get(tx, KEY_CHECK_META);
    char have[65];
    int rc;
    if (want) {
        rc = read_key(app->secrets_key_path, key);
        if (rc == -ENOENT)
            rc = -ENOKEY;
        else if (rc)
            rc = -EIO;
        if (rc)
            goto out;
        key_check(key, have);
        rc = strcmp(have, want) == 0 ? 0 : -EKEYREJECTED;
        goto out;
    }
    rc = secrets_key(app->secrets_key_path, key);
    if (rc) {
        rc = -EIO;
        goto out;
    }
    if (record) {
        key_check(key, have);
        rc = store_meta_set(tx, KEY_CHECK_META, have);
    }
out:
    if (rc)
        explicit_bzero(key, 32);
    free(want);
    return rc;
}

const char *secrets_key_error(int rc)
{
    switch (rc) {
    case -ENOKEY:
        return "the secrets key file (secret.key in this node's data directory, or quern.conf's [secrets] key_file) is missing, "
               "and the secrets were sealed under it: restore it from a backup or from the "
               "node that made it (a new key would not open them)";
    case -EKEYREJECTED:
        return "the secrets key file (secret.key in this node's data directory, or quern.conf's [secrets] key_file) is not the "
               "key the secrets were sealed with: restore the right one";
    default:
        return "the secrets key file (secret.key in this node's data directory, or quern.conf's [secrets] key_file) cannot be "
               "read or created (it must hold 32 bytes)";
    }
}

struct start_check {
    const struct app *app;
    int rc;
    bool recorded;
};

static int start_check_fn(struct store_tx *tx, void *arg)
{
    struct start_check *c = arg;
    char *want = store_meta_get(tx, KEY_CHECK_META);
    c->recorded = want != NULL;
    free(want);
    if (c->recorded) {
        unsigned char key[32];
        c->rc = secrets_key_tx(tx, c->app, false, key);
        explicit_bzero(key, sizeof key);
    }
    return 0;
}

void secrets_check_key(struct app *app)
{
    struct start_check c = {app, 0, false};
    if (store_read(app->store, start_check_fn, &c) == 0 && c.rc)
        log_write(LOG_ERROR, "secrets", NULL, "%s; runs that name a secret fail, and no secret "
                  "can be set, until then", secrets_key_error(c.rc));
    const char *path = app->secrets_key_path;
    struct stat sb;
    if (lstat(path, &sb) == 0 && (sb.st_mode & 077))
        log_write(LOG_WARN, "secrets", NULL, "%s is readable or writable by others than its "
                  "owner (mode %03o): make it 0600", path, (unsigned)(sb.st_mode & 0777));
}

char *secrets_seal_str(const unsigned char key[32], const char *value, size_t n)
{
    size_t blen = 0;
    unsigned char *blob = crypto_seal(key, value, n, &blen);
    if (!blob)
        return NULL;
    char *b64 = crypto_b64_encode(blob, blen);
    free(blob);
    return b64;
}

int secrets_open_str(const unsigned char key[32], const char *sealed, char **value, size_t *n)
{
    *value = NULL;
    if (!sealed)
        return -EINVAL;
    unsigned char *blob = NULL, *pt = NULL;
    size_t blen = 0, plen = 0;
    if (crypto_b64_decode(sealed, strlen(sealed), &blob, &blen))
        return -EINVAL;
    int rc = crypto_open(key, blob, blen, &pt, &plen);
    free(blob);
    if (rc)
        return rc;
    *value = (char *)pt;
    if (n)
        *n = plen;
    return 0;
}

void secrets_derived_key(const struct app *app, const char *purpose, unsigned char key[32])
{
    crypto_hmac_sha256(app->secret, sizeof app->secret, purpose, strlen(purpose), key);
}

void secrets_free(char **names, char **values, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (names)
            free(names[i]);
        if (values && values[i]) {
            explicit_bzero(values[i], strlen(values[i]));
            free(values[i]);
        }
    }
    free(names);
    free(values);
}

int secrets_open_for_run(struct app *app, struct store_tx *tx, const char *project_id,
                         const json_t *names, char ***names_out, char ***values_out, size_t *n)
{
    *names_out = NULL;
    *values_out = NULL;
    *n = 0;
    size_t count = json_array_size(names);
    if (!count)
        return 0;
    unsigned char key[32];
    int krc = secrets_key_tx(tx, app, false, key);
    if (krc)
        return krc;
    char **nv = xcalloc(count, sizeof *nv), **vv = xcalloc(count, sizeof *vv);
    size_t got = 0;
    int rc = 0;
    for (size_t i = 0; i < count; i++) {
        const char *name = json_string_value(json_array_get(names, i));
        json_t *doc = name ? store_get(tx, SK_SECRET, project_id, name) : NULL;
        if (!doc) {
            rc = -ENOENT;
            goto out;
        }
        char *value = NULL;
        rc = secrets_open_str(key, json_string_value(json_object_get(doc, "value_sealed")), &value,
                              NULL);
        json_decref(doc);
        if (rc) {
            rc = -EINVAL;
            goto out;
        }
        nv[got] = xstrdup(name);
        vv[got] = value;
        got++;
    }
out:
    explicit_bzero(key, sizeof key);
    if (rc) {
        secrets_free(nv, vv, got);
        return rc;
    }
    *names_out = nv;
    *values_out = vv;
    *n = got;
    return 0;
}
