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
#include "util.h"

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

int secrets_key(const char *data_dir, unsigned char key[32])
{
    char *path = xasprintf("%s/secret.key", data_dir);
    char *tmp = NULL;
    int rc = read_key(path, key);
    if (rc != -ENOENT)
        goto out;
    /* Make it: a private temporary file, fsynced, then link()ed into place.
     * link fails with EEXIST when another thread or process won the race,
     * and then its key is the one. */
    unsigned char fresh[32];
    random_bytes(fresh, sizeof fresh);
    tmp = xasprintf("%s/.secret.key.%ld.%p", data_dir, (long)getpid(), (void *)&fresh);
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
    int dfd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    rc = read_key(path, key);
    memset(fresh, 0, sizeof fresh);
out:
    free(path);
    free(tmp);
    return rc;
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
    if (secrets_key(app->data_dir, key))
        return -EIO;
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
