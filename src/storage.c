/* storage — see storage.h.  Called on the runner thread, the store writer
 * (inside transactions) and HTTP threads; no state of its own.  The sync
 * of a node's copy with the store (storage_sync_in/out) runs on the runner
 * thread alone, so two syncs of one copy never overlap. */
#include "storage.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "app.h"
#include "blob.h"
#include "crypto.h"
#include "log.h"
#include "tree.h"
#include "util.h"

json_t *storage_new_doc(const char *project_id, const char *scope, const char *name,
                        const char *account_id)
{
    char id[ID_LEN], ts[RFC3339_LEN];
    id_new("sto", id);
    rfc3339_format(now_ms(), ts);
    json_t *d = json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", id, "project_id", project_id,
                          "scope", scope, "name", name, "created_at", ts);
    json_object_set_new(d, "account_id", account_id ? json_string(account_id) : json_null());
    return d;
}

static int mkdir_owned(const char *p, unsigned uid)
{
    if (mkdir(p, 0700) && errno != EEXIST)
        return -errno;
    if (uid && chown(p, uid, uid))
        return -errno;
    return 0;
}

char *storage_dir(struct app *app, const char *project_id, const char *id, bool create,
                  unsigned uid)
{
    char *top = xasprintf("%s/storage", app->data_dir);
    char *proj = xasprintf("%s/%s", top, project_id);
    char *dir = xasprintf("%s/%s", proj, id);
    if (create && (mkdir_owned(top, 0) || mkdir_owned(proj, 0) || mkdir_owned(dir, uid))) {
        free(dir);
        dir = NULL;
    }
    free(top);
    free(proj);
    return dir;
}

/* The default instance of a scope (and account), created on first use. */
static json_t *default_instance(struct store_tx *tx, const char *project, const char *scope,
                                const char *account)
{
    struct store_filter f[3] = {{"scope", scope}, {"name", "default"}, {"account_id", account}};
    struct store_query q = {f, 3, 1, 0, true, NULL};
    json_t *arr = NULL;
    if (store_list(tx, SK_STORAGE, project, &q, &arr, NULL))
        return NULL;
    json_t *d = json_incref(json_array_get(arr, 0));
    json_decref(arr);
    if (d || !store_tx_is_write(tx))
        return d;
    /* The id is made from what names the instance, so two nodes creating
     * it at once (each in its own transaction, neither seeing the other's)
     * insert the same row: one wins, the other finds it (-EEXIST), and a
     * project never gets two default instances of a scope. */
    d = storage_new_doc(project, scope, "default", account);
    struct buf key;
    buf_init(&key);
    const char *parts[] = {"default", project, scope, account ? account : ""};
    for (size_t i = 0; i < ARRAY_LEN(parts); i++)
        buf_append(&key, parts[i], strlen(parts[i]) + 1);   /* NUL-separated */
    unsigned char md[32];
    crypto_sha256(key.data, key.len, md);
    buf_release(&key);
    char hex[65], id[ID_LEN];
    hex_encode(md, 32, hex);
    snprintf(id, sizeof id, "sto_%.20s", hex);
    json_object_set_new(d, "id", json_string(id));
    int rc = store_put(tx, SK_STORAGE, project, d);
    if (rc == -EEXIST) {
        json_decref(d);
        d = store_get(tx, SK_STORAGE, project, id);
        if (d)
            return d;
        /* the name is taken by an instance made through the API meanwhile
         * (PostgreSQL's unique name index, v7): that one is the default */
        if (store_list(tx, SK_STORAGE, project, &q, &arr, NULL))
            return NULL;
        d = json_incref(json_array_get(arr, 0));
        json_decref(arr);
        return d;
    }
    if (rc) {
        json_decref(d);
        return NULL;
    }
    return d;
}

json_t *storage_for_task(struct store_tx *tx, const json_t *task)
{
    const char *project = json_string_value(json_object_get(task, "project_id"));
    const char *account = json_string_value(json_object_get(task, "account_id"));
    json_t *chosen = json_object_get(task, "storage");
    static const char *const scopes[] = {"account", "project", "organization"};
    json_t *out = json_object();
    for (size_t i = 0; i < ARRAY_LEN(scopes); i++) {
        if (!strcmp(scopes[i], "account") && !account)
            continue;
        json_t *d = NULL;
        const char *want = json_string_value(json_object_get(chosen, scopes[i]));
        if (want) {
            d = store_get(tx, SK_STORAGE, project, want);
            /* never an instance of another scope or account */
            if (d && (strcmp(json_string_value(json_object_get(d, "scope")) ?: "", scopes[i]) ||
                      (!strcmp(scopes[i], "account") &&
                       strcmp(json_string_value(json_object_get(d, "account_id")) ?: "", account)))) {
                json_decref(d);
                d = NULL;
            }
        } else {
            d = default_instance(tx, project, scopes[i], !strcmp(scopes[i], "account") ? account : NULL);
        }
        if (d)
            json_object_set_new(out, scopes[i], d);
    }
    return out;
}

int64_t storage_size(struct app *app, const char *project_id, const char *id, bool *partial,
                     int64_t *budget)
{
    int64_t max = STORAGE_SIZE_MAX_ENTRIES;
    if (budget && *budget < max)
        max = *budget;
    if (max <= 0) {
        *partial = true;
        return 0;
    }
    char *dir = storage_dir(app, project_id, id, false, 0);
    struct tree_usage u = {0};
    *partial = dir && tree_usage(dir, TREE_FILES, max, 0, &u);
    free(dir);
    if (budget)
        *budget -= u.entries;
    return u.bytes;
}

/* ---- the node's copy and the store (storage_sync_in / _out) ----
 *
 * Each copy has a manifest next to its directory, DATA/storage/<project>/
 * <id>.sync (out of the boxes' reach): the store's version the copy was
 * last brought to, and per file what the copy held then, as
 * [size, mode, sha, inode, mtime ns, ctime ns].  A file whose stat still
 * matches its entry is unchanged since that sync; any other file (changed,
 * new, or gone) is a change of this node's runs, not yet written back.
 *
 *  1. A pull replaces only files unchanged since the last sync (or absent
 *     and never synced here): a change made here and not written back yet
 *     (a live run's, or one a crash kept from being written back) is kept,
 *     and the next write-back sends it.
 *  2. Nothing is ever followed through a link: every path under the copy
 *     is opened component by component with O_NOFOLLOW, since a box owns
 *     what is in its storage and quernd is root on the host.
 *  3. Only regular files travel.  Directories are made as their files need
 *     them; links and special files stay on the node that has them.
 *  4. The manifest is written durably (temp, fsync, rename, fsync of the
 *     directory).  One that is there but unreadable (torn) leaves the
 *     copy's state unknown: the next pull makes the copy the store's
 *     files (its own files the store does not have are removed, those that
 *     differ replaced), and no write-back goes before that.
 *  5. A pull's temp files (SYNC_TMP_PREFIX, in the file's directory) are
 *     renamed into place or removed before it returns; a crash in between
 *     leaves the mark <id>.pulling, and the next pull removes every temp
 *     file of the copy.  No pull runs meanwhile: syncs are on the runner
 *     thread alone.
 *  6. On a file system without renameat2's RENAME_NOREPLACE and
 *     RENAME_EXCHANGE (EINVAL), 1 holds through link() (which never
 *     replaces) and a rename; only a file a run puts in place of the old
 *     one (rather than writing it) in the instant of the swap is lost. */

#define SYNC_TMP_PREFIX ".quern-sync-"
#define SYNC_PATH_MAX 4096

/* The copy's manifest; *torn when the file is there but not one (a crash
 * while it was written, before it was made durable): the copy's state is
 * then unknown (4).  Absent, it is a copy never synced (version -1). */
static json_t *manifest_load(const char *dir, bool *torn)
{
    char *p = xasprintf("%s.sync", dir);
    /* Test-only (tests/integration/test_multinode.py): with
     * QUERN_TEST_SYNC_LOADS set to a path, each whole read of a manifest
     * appends a line (the copy's directory) to it, so a test sees a
     * current copy's pull read none. */
    const char *count = getenv("QUERN_TEST_SYNC_LOADS");
    int cfd = count && *count ? open(count, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600) : -1;
    if (cfd >= 0) {
        char *line = xasprintf("%s\n", dir);
        fd_write_all(cfd, line, strlen(line));
        free(line);
        close(cfd);
    }
    json_t *m = json_load_file(p, 0, NULL);
    struct stat sb;
    *torn = false;
    if (!json_is_object(m) || !json_is_integer(json_object_get(m, "version")) ||
        !json_is_object(json_object_get(m, "files"))) {
        *torn = !lstat(p, &sb) || errno != ENOENT;
        json_decref(m);
        m = json_pack("{s:I, s:{}}", "version", (json_int_t)-1, "files");
    }
    free(p);
    return m;
}

/* fsync of the directory holding path (a rename in it made durable). */
static int fsync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *d = slash ? xstrndup(path, (size_t)(slash - path)) : xstrdup(".");
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fd < 0 || fsync(fd) ? -errno : 0;
    if (fd >= 0)
        close(fd);
    free(d);
    return rc;
}

/* The manifest's last bytes: the layout manifest_save writes ends so, and
 * nowhere else can they be (a '"' inside a JSON string is escaped), so a
 * file that ends otherwise was cut short. */
#define MANIFEST_END ",\"end\":true}"

/* Writes the manifest durably (4): a temp file, fsync, rename, fsync of
 * the directory, so a crash leaves the old one or the new one.  Laid out
 * as {"version":N, <other keys>, "files":{...}, "end":true}: the version
 * first and the end mark last, so that manifest_peek() reads a current
 * copy's version without parsing its file list. */
static int manifest_save(const char *dir, const json_t *m)
{
    char *p = xasprintf("%s.sync", dir), *tmp = xasprintf("%s.sync.tmp", dir);
    char *files = json_dumps(json_object_get(m, "files"), JSON_COMPACT);
    struct buf text;
    int rc = 0, fd = -1;
    buf_init(&text);
    if (!files) {
        rc = -ENOMEM;
        goto out;
    }
    buf_printf(&text, "{\"version\":%lld",
               (long long)json_integer_value(json_object_get(m, "version")));
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)m, key, val) {
        if (!strcmp(key, "version") || !strcmp(key, "files") || !strcmp(key, "end"))
            continue;
        char *v = json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!v) {
            rc = -ENOMEM;
            goto out;
        }
        buf_printf(&text, ",\"%s\":%s", key, v);   /* our own keys: plain ASCII */
        free(v);
    }
    buf_puts(&text, ",\"files\":");
    buf_puts(&text, files);
    buf_puts(&text, MANIFEST_END);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    if ((rc = fd_write_all(fd, text.data, text.len)))
        goto out;
    if (fsync(fd)) {
        rc = -errno;
        goto out;
    }
    if (rename(tmp, p)) {
        rc = -errno;
        goto out;
    }
    rc = fsync_parent(p);
out:
    if (fd >= 0)
        close(fd);
    if (rc)
        unlink(tmp);
    buf_release(&text);
    free(files);
    free(p);
    free(tmp);
    return rc;
}

/* The version of the copy's manifest from its first bytes, when the file
 * is whole (it ends with MANIFEST_END): what a pull needs to find the copy
 * current without parsing a list of up to 100 000 files.  0; -ENOENT when
 * there is none; -EINVAL when it is not laid out so (an older node's, or
 * torn): the caller then reads it all. */
static int manifest_peek(const char *dir, int64_t *version)
{
    char *p = xasprintf("%s.sync", dir);
    char head[48], tail[sizeof MANIFEST_END - 1];
    struct stat sb;
    int rc = -EINVAL;
    int fd = open(p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    free(p);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode) || sb.st_size < (off_t)(2 * sizeof tail))
        goto out;
    size_t want = sb.st_size < (off_t)sizeof head ? (size_t)sb.st_size : sizeof head - 1;
    ssize_t n = pread(fd, head, want, 0);
    if (n != (ssize_t)want ||
        pread(fd, tail, sizeof tail, sb.st_size - (off_t)sizeof tail) != (ssize_t)sizeof tail ||
        memcmp(tail, MANIFEST_END, sizeof tail))
        goto out;
    head[n] = '\0';
    static const char start[] = "{\"version\":";
    if (strncmp(head, start, sizeof start - 1))
        goto out;
    char *end;
    errno = 0;
    long long v = strtoll(head + sizeof start - 1, &end, 10);
    if (errno || end == head + sizeof start - 1 || *end != ',')
        goto out;
    *version = v;
    rc = 0;
out:
    close(fd);
    return rc;
}

static int64_t ts_ns(const struct timespec *t)
{
    return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

/* A manifest entry for a file of stat sb holding sha. */
static json_t *entry_new(const struct stat *sb, const char *sha)
{
    return json_pack("[I, I, s, I, I, I]", (json_int_t)sb->st_size, (json_int_t)(sb->st_mode & 0777),
                     sha, (json_int_t)sb->st_ino, (json_int_t)ts_ns(&sb->st_mtim),
                     (json_int_t)ts_ns(&sb->st_ctim));
}

static json_int_t ent_int(const json_t *e, size_t i)
{
    return json_integer_value(json_array_get(e, i));
}

static const char *ent_sha(const json_t *e)
{
    return json_string_value(json_array_get(e, 2)) ?: "";
}

/* The file is as the entry recorded it. */
static bool entry_matches(const json_t *e, const struct stat *sb)
{
    return e && S_ISREG(sb->st_mode) && ent_int(e, 0) == sb->st_size &&
           ent_int(e, 1) == (json_int_t)(sb->st_mode & 0777) && ent_int(e, 3) == (json_int_t)sb->st_ino &&
           ent_int(e, 4) == ts_ns(&sb->st_mtim) && ent_int(e, 5) == ts_ns(&sb->st_ctim);
}

/* A relative path the sync accepts: components neither empty, ".", ".."
 * nor our temp names. */
static bool rel_ok(const char *rel)
{
    size_t n = strlen(rel);
    if (!n || n > SYNC_PATH_MAX || rel[0] == '/')
        return false;
    for (const char *c = rel; *c;) {
        const char *e = strchr(c, '/');
        size_t len = e ? (size_t)(e - c) : strlen(c);
        if (!len || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.') ||
            !strncmp(c, SYNC_TMP_PREFIX, strlen(SYNC_TMP_PREFIX)))
            return false;
        c += len + (e ? 1 : 0);
        if (e && !*c)
            return false;
    }
    return true;
}

/* The directory holding rel's last component, opened under root without
 * following a link (invariant 2); with make, missing directories are made
 * (owned by uid).  A fd, *base pointing into rel; or -errno. */
static int parent_open(int root, const char *rel, bool make, unsigned uid, const char **base)
{
    int fd = dup(root);
    if (fd < 0)
        return -errno;
    const char *c = rel;
    for (const char *e; (e = strchr(c, '/')); c = e + 1) {
        char name[256];
        size_t len = (size_t)(e - c);
        if (len >= sizeof name) {
            close(fd);
            return -ENAMETOOLONG;
        }
        memcpy(name, c, len);
        name[len] = '\0';
        int sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0 && errno == ENOENT && make) {
            if (mkdirat(fd, name, 0755) && errno != EEXIST) {
                int e2 = -errno;
                close(fd);
                return e2;
            }
            if (uid && fchownat(fd, name, uid, uid, AT_SYMLINK_NOFOLLOW)) {
                int e2 = -errno;
                close(fd);
                return e2;
            }
            sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        int err = -errno;
        close(fd);
        if (sub < 0)
            return err;
        fd = sub;
    }
    *base = c;
    return fd;
}

/* lstat of rel under root; -errno when it (or a directory on its way) is not there. */
static int rel_stat(int root, const char *rel, struct stat *sb)
{
    const char *base;
    int dfd = parent_open(root, rel, false, 0, &base);
    if (dfd < 0)
        return dfd;
    int rc = fstatat(dfd, base, sb, AT_SYMLINK_NOFOLLOW) ? -errno : 0;
    close(dfd);
    return rc;
}

/* Removes the directory rel under root if it is empty; -errno if not. */
static int rel_rmdir(int root, const char *rel)
{
    const char *base;
    int dfd = parent_open(root, rel, false, 0, &base);
    if (dfd < 0)
        return dfd;
    int rc = unlinkat(dfd, base, AT_REMOVEDIR) ? -errno : 0;
    close(dfd);
    return rc;
}

/* Test-only (tests/integration/test_multinode.py): with QUERN_TEST_SYNC_PAUSE
 * set to a path, a pull whose temp file is written creates <path>.reached
 * and waits (at most a minute) while <path> exists, before it puts the file
 * in place: a test changes the copy in that gap as a live run would. */
static void test_pause(void)
{
    test_hold_at("QUERN_TEST_SYNC_PAUSE");
}

/* renameat2() flags a file system may lack (EINVAL: some FUSE and network
 * file systems).  The pull then does without them as well as it can (6),
 * and the node's log says so once. */
static void no_rename_flags(void)
{
    static int said;
    if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
        log_write(LOG_WARN, "storage", NULL,
                  "the file system of the storage copies has no renameat2 RENAME_NOREPLACE or "
                  "RENAME_EXCHANGE: pulls put files in place through link() and rename(), and a "
                  "box that replaces a file (rather than writing it) in the instant of its pull "
                  "may lose that change");
}

/* Renames from to to in dfd unless to exists (-EEXIST, from left).
 * Without RENAME_NOREPLACE, link() (which never replaces either) and an
 * unlink; without hard links too, a check and a rename. */
static int rename_noreplace(int dfd, const char *from, const char *to)
{
    struct stat sb;
    if (!renameat2(dfd, from, dfd, to, RENAME_NOREPLACE))
        return 0;
    if (errno != EINVAL)
        return -errno;
    no_rename_flags();
    if (!linkat(dfd, from, dfd, to, 0)) {
        unlinkat(dfd, from, 0);
        return 0;
    }
    if (errno != EPERM && errno != EOPNOTSUPP && errno != EMLINK)
        return -errno;
    if (!fstatat(dfd, to, &sb, AT_SYMLINK_NOFOLLOW))
        return -EEXIST;
    return renameat(dfd, from, dfd, to) ? -errno : 0;
}

/* Swaps the files at a and b in dfd (-ENOENT when either is not there).
 * Without RENAME_EXCHANGE: b is linked to a third name, a renamed over b,
 * and that name renamed to a, so b's file (as written meanwhile, on its
 * inode) ends at a as the swap would leave it; a file that replaced b in
 * between is lost to the rename (the window no_rename_flags() names). */
static int rename_exchange(int dfd, const char *a, const char *b)
{
    if (!renameat2(dfd, a, dfd, b, RENAME_EXCHANGE))
        return 0;
    if (errno != EINVAL)
        return -errno;
    no_rename_flags();
    char third[64];
    unsigned char rnd[8];
    char hex[17];
    random_bytes(rnd, sizeof rnd);
    hex_encode(rnd, sizeof rnd, hex);
    snprintf(third, sizeof third, SYNC_TMP_PREFIX "%s", hex);
    struct stat sb;
    if (fstatat(dfd, a, &sb, AT_SYMLINK_NOFOLLOW))
        return -errno;
    int rc = linkat(dfd, b, dfd, third, 0) ? -errno : 0;
    if (rc == -EPERM || rc == -EOPNOTSUPP || rc == -EMLINK)
        rc = renameat(dfd, b, dfd, third) ? -errno : 0;   /* no hard links: b is away an instant */
    if (rc)
        return rc;
    if (renameat(dfd, a, dfd, b)) {
        rc = -errno;
        unlinkat(dfd, third, 0);
        return rc;
    }
    return renameat(dfd, third, dfd, a) ? -errno : 0;
}

/* The file a pull found (old) is still the one at that name (now): a live
 * run did not write, truncate, chmod or replace it meanwhile.  Not ctime:
 * the rename that moved it sets that. */
static bool same_file(const struct stat *old, const struct stat *now)
{
    return old->st_ino == now->st_ino && old->st_dev == now->st_dev &&
           old->st_mode == now->st_mode && old->st_uid == now->st_uid &&
           old->st_size == now->st_size && ts_ns(&old->st_mtim) == ts_ns(&now->st_mtim);
}

/* Puts the blob sha at rel (mode, owned by uid) through a temp file and a
 * rename, and records it in files.  old is the file the pull found there
 * and means to replace, NULL when there was none: a live run of this node
 * that made, changed or deleted that file since (between the check and the
 * rename) keeps its change (1): the rename does not replace a file made
 * meanwhile (RENAME_NOREPLACE), and one that replaced a changed file
 * (RENAME_EXCHANGE, then a check of the old one) is swapped back.  Then 0,
 * the file's entry untouched.  A directory in its place: -EISDIR. */
static int fetch(struct app *app, int root, const char *rel, const char *sha, unsigned mode,
                 unsigned uid, json_t *files, const struct stat *old)
{
    const char *base;
    int in = -1, out = -1, dfd = -1, rc = 0;
    char tmp[64];
    tmp[0] = '\0';
    in = blob_open_read(app->blobs, sha);
    if (in < 0) {
        rc = in;
        goto out;
    }
    dfd = parent_open(root, rel, true, uid, &base);
    if (dfd < 0) {
        rc = dfd;
        goto out;
    }
    unsigned char rnd[8];
    char hex[17];
    random_bytes(rnd, sizeof rnd);
    hex_encode(rnd, sizeof rnd, hex);
    snprintf(tmp, sizeof tmp, SYNC_TMP_PREFIX "%s", hex);
    out = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out < 0) {
        rc = -errno;
        tmp[0] = '\0';
        goto out;
    }
    if ((rc = fd_copy(in, out)))
        goto out;
    if ((uid && fchown(out, uid, uid)) || fchmod(out, mode & 0777) || fdatasync(out)) {
        rc = -errno;
        goto out;
    }
    test_pause();
    if (!old && (rc = rename_noreplace(dfd, tmp, base))) {
        if (rc == -EEXIST)
            rc = 0;   /* made here meanwhile: this node's */
        goto out;
    }
    if (old && (rc = rename_exchange(dfd, tmp, base))) {
        if (rc == -ENOENT)
            rc = 0;   /* deleted here meanwhile: this node's */
        goto out;
    }
    struct stat sb;
    if (old && (fstatat(dfd, tmp, &sb, AT_SYMLINK_NOFOLLOW) || !same_file(old, &sb))) {
        /* changed here meanwhile: back in its place, the fetched file at
         * the temp name, removed below */
        if ((rc = rename_exchange(dfd, tmp, base)))
            tmp[0] = '\0';   /* the changed file at the temp name: not removed here */
        goto out;
    }
    /* the old file (old) now at the temp name, removed below; the entry
     * from the file's stat after the rename, which set its ctime */
    if (fstat(out, &sb)) {
        rc = -errno;
        goto out;
    }
    json_object_set_new(files, rel, entry_new(&sb, sha));
out:
    if (tmp[0])
        unlinkat(dfd, tmp, 0);
    if (out >= 0)
        close(out);
    if (in >= 0)
        close(in);
    if (dfd >= 0)
        close(dfd);
    return rc;
}

/* SHA-256 of the regular file rel (opened without following links), read
 * in chunks, when it holds size bytes: -EFBIG when it holds more (a box's
 * sparse file of a terabyte is not read to find that it differs), -EINVAL
 * fewer. */
static int hash_file(int root, const char *rel, int64_t size, char sha[65], struct stat *sb)
{
    const char *base;
    int dfd = parent_open(root, rel, false, 0, &base);
    if (dfd < 0)
        return dfd;
    int fd = openat(dfd, base, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    int rc = fd < 0 ? -errno : 0;
    close(dfd);
    if (rc)
        return rc;
    if (fstat(fd, sb) || !S_ISREG(sb->st_mode) || sb->st_size != size) {
        close(fd);
        return -EINVAL;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    char chunk[65536];
    int64_t total = 0;
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : total == size ? 0 : -EINVAL;
            break;
        }
        total += n;
        if (total > size) {
            rc = -EFBIG;   /* grew while read */
            break;
        }
        EVP_DigestUpdate(ctx, chunk, (size_t)n);
    }
    close(fd);
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    if (!rc)
        hex_encode(md, 32, sha);
    return rc;
}

/* A walk of the copy's regular files: path -> stat, without recursion
 * (at most TREE_MAX_DEPTH directories open) and never through a link. */
struct walk {
    json_t *found;        /* rel -> [size, mode, ino, mtime, ctime] as a stat */
    int64_t entries, bytes;
    size_t skipped;       /* links, special files, too deep, too long or not UTF-8 */
    bool over;            /* more than the limits: nothing is written back */
    bool incomplete;      /* a directory could not be read: no deletions */
    bool clean;           /* remove the temp files of an interrupted pull (5) */
};

static void walk_add(struct walk *w, const char *rel, const struct stat *sb)
{
    /* a key of the manifest and of the store's jsonb is UTF-8: a file
     * named otherwise stays on this node, and the run's log says so */
    if (json_object_set_new(w->found, rel, entry_new(sb, "")))
        w->skipped++;
    w->bytes += sb->st_size;
}

static void walk_tree(int root, struct walk *w)
{
    struct frame {
        DIR *d;
        size_t len;
    } stack[TREE_MAX_DEPTH + 1];
    char path[SYNC_PATH_MAX + 1];
    int depth = 0;
    int fd = dup(root);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        w->over = true;
        return;
    }
    stack[0] = (struct frame){d, 0};
    path[0] = '\0';
    while (depth >= 0 && !w->over) {
        struct frame *fr = &stack[depth];
        path[fr->len] = '\0';
        errno = 0;
        struct dirent *de = readdir(fr->d);
        if (!de) {
            if (errno)   /* not its end: what it holds further is not seen */
                w->incomplete = true;
            closedir(fr->d);
            depth--;
            continue;
        }
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (++w->entries > STORAGE_SIZE_MAX_ENTRIES || w->bytes > STORAGE_SYNC_MAX_BYTES) {
            w->over = true;
            break;
        }
        if (!strncmp(de->d_name, SYNC_TMP_PREFIX, strlen(SYNC_TMP_PREFIX))) {
            if (w->clean)
                unlinkat(dirfd(fr->d), de->d_name, 0);
            continue;
        }
        size_t nlen = strlen(de->d_name);
        if (fr->len + 1 + nlen > SYNC_PATH_MAX) {
            w->skipped++;
            continue;
        }
        struct stat sb;
        if (fstatat(dirfd(fr->d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW))
            continue;   /* gone meanwhile */
        size_t len = fr->len;
        if (len)
            path[len++] = '/';
        memcpy(path + len, de->d_name, nlen + 1);
        if (S_ISREG(sb.st_mode)) {
            walk_add(w, path, &sb);
        } else if (S_ISDIR(sb.st_mode) && depth >= TREE_MAX_DEPTH) {
            w->skipped++;
        } else if (S_ISDIR(sb.st_mode)) {
            int sfd = openat(dirfd(fr->d), de->d_name,
                             O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            DIR *sd = sfd >= 0 ? fdopendir(sfd) : NULL;
            if (!sd) {
                if (sfd >= 0)
                    close(sfd);
                w->incomplete = true;
            } else {
                stack[++depth] = (struct frame){sd, len + nlen};
            }
        } else {
            w->skipped++;
        }
    }
    while (depth >= 0)
        closedir(stack[depth--].d);
    if (w->bytes > STORAGE_SYNC_MAX_BYTES)
        w->over = true;
}

/* Removes rel, the file old that the store no longer has, unless a live
 * run of this node changes it meanwhile (1): it is moved to a temp name
 * first, checked, and put back if it changed.  Should a run make a new
 * file at rel in the instant it is away, that newer file stays and the
 * moved one goes (no temp file is left for the boxes to see). */
static void remove_unchanged(int root, const char *rel, const struct stat *old)
{
    const char *base;
    char tmp[64];
    unsigned char rnd[8];
    char hex[17];
    struct stat sb;
    int dfd = parent_open(root, rel, false, 0, &base);
    if (dfd < 0)
        return;
    random_bytes(rnd, sizeof rnd);
    hex_encode(rnd, sizeof rnd, hex);
    snprintf(tmp, sizeof tmp, SYNC_TMP_PREFIX "%s", hex);
    test_pause();
    if (rename_noreplace(dfd, base, tmp))
        goto out;   /* deleted or replaced by a directory meanwhile: this node's */
    if (!fstatat(dfd, tmp, &sb, AT_SYMLINK_NOFOLLOW) && same_file(old, &sb))
        unlinkat(dfd, tmp, 0);
    else if (rename_noreplace(dfd, tmp, base))   /* changed here: kept */
        unlinkat(dfd, tmp, 0);
out:
    close(dfd);
}

/* Marks the copy dir as being pulled into (5), durably: a crash before
 * the pull's end leaves its temp files, and the next pull removes them. */
static int pull_mark(const char *dir)
{
    char *p = xasprintf("%s.pulling", dir);
    int fd = open(p, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    int rc = fd < 0 ? -errno : 0;
    if (fd >= 0)
        close(fd);
    if (!rc)
        rc = fsync_parent(p);
    free(p);
    return rc;
}

int storage_sync_in(struct app *app, const char *id, const char *dir, unsigned uid)
{
    int64_t version = 0;
    if (!app->blobs)
        return 0;   /* no blobs, no files to move: the node's directory alone */
    int rc = store_storage_version(app->store, id, &version);
    if (rc == -ENOTSUP)
        return 0;
    if (rc)
        return rc;
    char *mark = xasprintf("%s.pulling", dir);
    bool interrupted = !access(mark, F_OK);
    int64_t mine = -1;
    int peek = manifest_peek(dir, &mine);
    if (!peek && mine == version && !interrupted) {
        free(mark);
        return 1;   /* up to date: one query, and the file list not parsed */
    }
    bool torn = false, marked = false, saved = false;
    json_t *m = manifest_load(dir, &torn), *remote = NULL, *have = json_object();
    json_t *files = json_object_get(m, "files");
    struct walk w = {json_object(), 0, 0, 0, false, false, true};
    int root = -1;
    if (json_integer_value(json_object_get(m, "version")) == version && !interrupted) {
        /* up to date, in an older node's layout: rewritten once in the one
         * manifest_peek() reads (not saved, it is read whole next time) */
        if (peek == -EINVAL)
            manifest_save(dir, m);
        rc = 1;
        goto out;
    }
    if ((rc = store_storage_files(app->store, id, &version, &remote)))
        goto out;
    root = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (root < 0) {
        rc = -errno;
        goto out;
    }
    size_t i;
    json_t *f;
    json_array_foreach(remote, i, f)
        json_object_set_new(have, json_string_value(json_array_get(f, 0)) ?: "", json_true());
    const char *rel;
    json_t *e;
    void *tmp;
    if (torn || interrupted) {
        /* an interrupted pull's temp files go (5); with a torn manifest
         * (4), so do the files the store no longer has: this node cannot
         * tell its own new files from those other nodes deleted, and
         * sending them would bring those back */
        walk_tree(root, &w);
        json_object_foreach(w.found, rel, e) {
            const char *base;
            if (!torn || json_object_get(have, rel))
                continue;
            int dfd = parent_open(root, rel, false, 0, &base);
            if (dfd >= 0) {
                unlinkat(dfd, base, 0);
                close(dfd);
            }
        }
    }
    int64_t synced = json_integer_value(json_object_get(m, "version"));
    if (!torn && synced > version) {
        /* The store is older than what this copy was brought to (a
         * restored backup): its files are not newer than the copy's, and
         * those of its files the copy lacks were deleted since.  The copy
         * is kept as it is; its state becomes the store's files, each
         * unchanged only where the copy holds it unchanged with the same
         * bytes, so the next write-back sends the copy's differences (new,
         * changed and deleted files) over the older ones, and raises the
         * version past what this node had seen (the floor): a node that
         * lagged behind this one pulls that, rather than finding the store
         * behind it too and sending its older files.  The run's log says
         * so at the write-back. */
        json_t *nf = json_object();
        json_array_foreach(remote, i, f) {
            rel = json_string_value(json_array_get(f, 0)) ?: "";
            const char *sha = json_string_value(json_array_get(f, 3)) ?: "";
            json_int_t mode = json_integer_value(json_array_get(f, 2)) & 0777;
            struct stat sb;
            e = json_object_get(files, rel);
            if (e && !rel_stat(root, rel, &sb) && entry_matches(e, &sb) && !strcmp(ent_sha(e), sha) &&
                ent_int(e, 1) == mode)
                json_object_set(nf, rel, e);
            else   /* a stat no file has: compared again at the write-back */
                json_object_set_new(nf, rel, json_pack("[I, I, s, I, I, I]",
                                                       json_integer_value(json_array_get(f, 1)),
                                                       mode, sha, (json_int_t)-1, (json_int_t)-1,
                                                       (json_int_t)-1));
        }
        json_object_set_new(m, "files", nf);
        if (!json_is_integer(json_object_get(m, "regressed")))
            json_object_set_new(m, "regressed", json_integer(synced));
        json_object_set_new(m, "version", json_integer(version));
        saved = true;
        rc = manifest_save(dir, m);
        if (!rc && interrupted)
            unlink(mark);
        if (!rc)
            rc = 1;
        goto out;
    }
    /* what the store no longer has: gone here too, unless changed here.
     * First, so that a file which became a directory (or the reverse) on
     * another node finds its way clear below. */
    json_object_foreach_safe(files, tmp, rel, e) {
        if (json_object_get(have, rel))
            continue;
        struct stat sb;
        if (!rel_stat(root, rel, &sb) && entry_matches(e, &sb)) {
            if (!marked && !interrupted && (rc = pull_mark(dir)))
                goto out;
            marked = true;   /* the file goes through a temp name too */
            remove_unchanged(root, rel, &sb);
        }
        json_object_del(files, rel);
    }
    json_array_foreach(remote, i, f) {
        rel = json_string_value(json_array_get(f, 0)) ?: "";
        const char *sha = json_string_value(json_array_get(f, 3)) ?: "";
        int64_t size = json_integer_value(json_array_get(f, 1));
        unsigned mode = (unsigned)json_integer_value(json_array_get(f, 2));
        if (!rel_ok(rel))
            continue;
        e = json_object_get(files, rel);
        struct stat sb;
        int st = rel_stat(root, rel, &sb);
        if (st == 0 && S_ISDIR(sb.st_mode) && !e && !rel_rmdir(root, rel))
            st = -ENOENT;   /* an empty directory, the files it held deleted: the file's place */
        if (st == 0 && !S_ISREG(sb.st_mode))
            continue;   /* a directory or link of this node's in its place (3) */
        if (st == 0 && !entry_matches(e, &sb)) {
            /* changed here (1), or here before this node first synced: the
             * same bytes are simply the synced file */
            char lsha[65];
            if (!e && sb.st_size == size && !hash_file(root, rel, size, lsha, &sb) &&
                !strcmp(lsha, sha) &&
                (unsigned)(sb.st_mode & 0777) == (mode & 0777)) {
                json_object_set_new(files, rel, entry_new(&sb, sha));
                continue;
            }
            if (!torn)
                continue;
            /* state unknown (4): the store's file replaces it */
        } else if (st == 0 && !strcmp(ent_sha(e), sha) && (unsigned)ent_int(e, 1) == (mode & 0777)) {
            continue;   /* as synced */
        }
        if (st && e)
            continue;   /* deleted here, not written back yet (1) */
        if (st == -ENOTDIR || st == -ELOOP)
            continue;   /* a file or link of this node's on its way (3) */
        if (st && st != -ENOENT) {
            rc = st;
            goto out;
        }
        if (!marked && !interrupted && (rc = pull_mark(dir)))
            goto out;
        marked = true;
        rc = fetch(app, root, rel, sha, mode, uid, files, st ? NULL : &sb);
        if (rc == -EISDIR || rc == -ENOTDIR || rc == -ELOOP)
            rc = 0;   /* a directory or link of this node's in the way (3) */
        if (rc)
            goto out;
    }
    json_object_set_new(m, "version", json_integer(version));
    saved = true;
    rc = manifest_save(dir, m);
    if (!rc && (marked || interrupted))
        unlink(mark);
    if (!rc)
        rc = 1;
out:
    /* failed after it changed the copy: what it fetched and removed is
     * recorded at the old version (the next pull compares every file
     * again), else the fetched files would pass for this node's changes,
     * be kept over newer ones and sent back.  A torn state stays so (4). */
    if (rc < 0 && marked && !torn && !saved)
        manifest_save(dir, m);
    if (root >= 0)
        close(root);
    free(mark);
    json_decref(w.found);
    json_decref(m);
    json_decref(remote);
    json_decref(have);
    return rc;
}

/* Appends a warning for the run's log to notes (one line each). */
static void note_add(json_t *notes, char *msg)
{
    json_array_append_new(notes, json_string(msg));
    free(msg);
}

int storage_sync_out(struct app *app, const char *project_id, const char *id, const char *dir,
                     json_t *notes)
{
    bool torn = false;
    json_t *m = manifest_load(dir, &torn), *changes = json_array(), *nfiles = json_object();
    json_t *files = json_object_get(m, "files");
    struct walk w = {json_object(), 0, 0, 0, false, false, false};
    size_t unsent = 0;
    char *first = NULL;
    int rc = 0;
    int root = -1;
    if (torn) {
        /* state unknown (4): sending every file would bring back those
         * other nodes deleted; the next pull resyncs from the store */
        rc = -EIO;
        note_add(notes, xasprintf("storage instance %s was not written back to the store: this "
                                  "node's state of its copy (%s.sync) is unreadable, and the next "
                                  "run here brings the copy to the store's files", id, dir));
        goto out;
    }
    root = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (root < 0) {
        rc = -errno;
        note_add(notes, xasprintf("storage instance %s was not written back to the store: its "
                                  "copy on this node could not be opened (%s)", id, strerror(-rc)));
        goto out;
    }
    walk_tree(root, &w);
    if (w.over)
        goto over;
    const char *rel;
    json_t *st, *e;
    json_object_foreach(w.found, rel, st) {
        e = json_object_get(files, rel);
        if (e && ent_int(e, 0) == ent_int(st, 0) && ent_int(e, 1) == ent_int(st, 1) &&
            ent_int(e, 3) == ent_int(st, 3) && ent_int(e, 4) == ent_int(st, 4) &&
            ent_int(e, 5) == ent_int(st, 5)) {
            json_object_set(nfiles, rel, e);   /* as synced */
            continue;
        }
        const char *base;
        int dfd = parent_open(root, rel, false, 0, &base);
        int fd = dfd < 0 ? -1 : openat(dfd, base, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (dfd >= 0)
            close(dfd);
        struct stat sb;
        char sha[65];
        int64_t size = 0;
        int prc = fd < 0 || fstat(fd, &sb) || !S_ISREG(sb.st_mode)
                      ? -EINVAL
                      : blob_put_fd(app->blobs, fd, STORAGE_SYNC_MAX_FILE, sha, &size);
        if (fd >= 0)
            close(fd);
        if (prc) {
            /* changed while read (another run here writes it), too large or
             * unreadable: kept as a change, the next write-back tries again */
            if (e)
                json_object_set(nfiles, rel, e);
            if (!unsent++)
                first = xstrdup(rel);
            continue;
        }
        json_t *ne = entry_new(&sb, sha);
        json_array_set_new(ne, 0, json_integer(size));
        json_object_set_new(nfiles, rel, ne);
        if (!e || strcmp(ent_sha(e), sha) || ent_int(e, 1) != (json_int_t)(sb.st_mode & 0777))
            json_array_append_new(changes, json_pack("[s, I, I, s]", rel, (json_int_t)size,
                                                     (json_int_t)(sb.st_mode & 0777), sha));
    }
    /* gone since the last sync: deleted, unless the walk missed a directory */
    json_object_foreach(files, rel, e) {
        if (json_object_get(w.found, rel))
            continue;
        if (w.incomplete)
            json_object_set(nfiles, rel, e);
        else
            json_array_append_new(changes, json_pack("[s]", rel));
    }
    if (w.skipped)
        note_add(notes, xasprintf("%zu links, special files, names not in UTF-8 or paths nested "
                                  "too deep or too long in storage instance %s stay on this node: "
                                  "only regular files are shared with the other nodes",
                                  w.skipped, id));
    if (unsent)
        note_add(notes, xasprintf("%zu files of storage instance %s were not written back (the "
                                  "first: %s): changed while read, over %lld bytes, or "
                                  "unreadable; the next run here that ends tries again",
                                  unsent, id, first, (long long)STORAGE_SYNC_MAX_FILE));
    if (w.incomplete)
        note_add(notes, xasprintf("a directory of storage instance %s could not be read: the "
                                  "files deleted since the last sync are not deleted in the "
                                  "store yet", id));
    int64_t version = json_integer_value(json_object_get(m, "version"));
    json_t *regressed = json_object_get(m, "regressed");
    if (regressed)
        note_add(notes, xasprintf("storage instance %s in the store is older (version %lld) than "
                                  "this node's copy was (version %lld), as after a restore of "
                                  "PostgreSQL: the copy's files were kept and are written back "
                                  "over the store's", id, (long long)version,
                                  (long long)json_integer_value(regressed)));
    if (json_array_size(changes) || json_is_true(json_object_get(m, "partial")) || regressed) {
        int64_t before = 0, after = 0;
        struct store_storage_opts o = {false, regressed ? json_integer_value(regressed) + 1 : 0,
                                       STORAGE_SIZE_MAX_ENTRIES, STORAGE_SYNC_MAX_BYTES};
        rc = store_storage_commit(app->store, project_id, id, changes, &o, &before, &after);
        if (rc == -EFBIG) {
            rc = 0;
            goto over;   /* with the other nodes' files, past the limits */
        }
        if (rc) {
            note_add(notes, xasprintf("storage instance %s could not be written back to the store "
                                      "(%s); its changes stay on this node and go with the next "
                                      "run here that ends", id, strerror(-rc)));
            goto out;
        }
        /* up to date only when no other node committed since our last sync:
         * else the next pull compares every file */
        if (before == version)
            version = after;
    }
    json_object_del(m, "partial");
    json_object_del(m, "regressed");
    json_object_set(m, "files", nfiles);
    json_object_set_new(m, "version", json_integer(version));
    rc = manifest_save(dir, m);
    goto save_failed;
over: {
    /* nothing sent: the copy's state stays as it was (its changes go with
     * a later write-back), marked partial.  The mark is set every time:
     * another node's complete write-back may have cleared it since. */
    int64_t before = 0, after = 0;
    struct store_storage_opts o = {true, 0, 0, 0};
    json_array_clear(changes);
    if (!store_storage_commit(app->store, project_id, id, changes, &o, &before, &after) &&
        !json_is_true(json_object_get(m, "partial"))) {
        json_object_set_new(m, "partial", json_true());
        rc = manifest_save(dir, m);
    }
    note_add(notes, xasprintf("storage instance %s was not written back to the store: it "
                              "holds more than %d entries or %lld bytes%s, and its files stay on "
                              "this node", id, STORAGE_SIZE_MAX_ENTRIES,
                              (long long)STORAGE_SYNC_MAX_BYTES,
                              w.over ? "" : " with the files of the other nodes"));
}
save_failed:
    if (rc)
        note_add(notes, xasprintf("the state of storage instance %s's copy on this node could not "
                                  "be saved (%s): the next run here that ends sends the files "
                                  "this one wrote back again", id,
                                  strerror(-rc)));
out:
    free(first);
    if (root >= 0)
        close(root);
    json_decref(w.found);
    json_decref(changes);
    json_decref(nfiles);
    json_decref(m);
    return rc;
}
