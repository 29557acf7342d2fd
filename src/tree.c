/*
 * tree — see tree.h.  Written with openat/unlinkat rather than nftw or fts:
 * both recurse (nftw) or need paths of the full depth (fts), and a box makes
 * trees deeper than any stack or PATH_MAX.
 */
#include "tree.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define DIR_FLAGS (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)

static bool dots(const char *n)
{
    return n[0] == '.' && (!n[1] || (n[1] == '.' && !n[2]));
}

struct ident {
    dev_t dev;
    ino_t ino;
};

static bool same(const struct stat *a, const struct ident *b)
{
    return a->st_dev == b->dev && a->st_ino == b->ino;
}

/* Directories whose contents could not all be removed: not entered again. */
struct stuck {
    struct ident *v;
    size_t n, cap;
};

static bool stuck_has(const struct stuck *s, const struct stat *st)
{
    for (size_t i = 0; i < s->n; i++)
        if (same(st, &s->v[i]))
            return true;
    return false;
}

static void stuck_add(struct stuck *s, const struct stat *st)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 8;
        s->v = xrealloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n++] = (struct ident){st->st_dev, st->st_ino};
}

/* One pass over the directory open at fd: removes what it can.  Returns the
 * fd of a non-empty subdirectory to go down into (the caller closes fd), or
 * -1; *left is set when something stays that no descent will remove. */
static int sweep(int fd, dev_t dev, const struct stuck *stuck, bool *left)
{
    int dfd = openat(fd, ".", DIR_FLAGS);
    DIR *d = dfd < 0 ? NULL : fdopendir(dfd);
    if (!d) {
        if (dfd >= 0)
            close(dfd);
        *left = true;
        return -1;
    }
    int down = -1;
    struct dirent *e;
    while (down < 0 && (e = readdir(d)) != NULL) {
        if (dots(e->d_name))
            continue;
        if (unlinkat(fd, e->d_name, 0) == 0 || errno == ENOENT)
            continue;
        if (errno != EISDIR && errno != EPERM) {
            *left = true;
            continue;
        }
        if (unlinkat(fd, e->d_name, AT_REMOVEDIR) == 0 || errno == ENOENT)
            continue;
        int sub = openat(fd, e->d_name, DIR_FLAGS);
        struct stat sb;
        if (sub >= 0 && fstat(sub, &sb) == 0 && sb.st_dev == dev && !stuck_has(stuck, &sb)) {
            down = sub;
            break;
        }
        if (sub >= 0)
            close(sub);
        *left = true;
    }
    closedir(d);
    return down;
}

int tree_remove(const char *path, bool keep_top)
{
    if (!path)
        return 0;
    int fd = open(path, DIR_FLAGS);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        if (keep_top)
            return -1;
        return unlink(path) == 0 || errno == ENOENT ? 0 : -1;   /* a file or a link */
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return -1;
    }
    struct ident top = {st.st_dev, st.st_ino};
    struct stuck stuck = {0};
    bool left_top = false;
    int depth = 0;
    for (;;) {
        bool left = false;
        int down = sweep(fd, top.dev, &stuck, &left);
        if (down >= 0) {
            close(fd);
            fd = down;
            depth++;
            continue;
        }
        if (depth == 0) {
            left_top = left;
            break;
        }
        /* this directory is as empty as it will get: back up to its parent,
         * whose next sweep removes it (or, with something left, skips it) */
        if (left && fstat(fd, &st) == 0)
            stuck_add(&stuck, &st);
        int up = openat(fd, "..", DIR_FLAGS);
        close(fd);
        fd = up;
        depth--;
        /* never above the top, whatever was renamed meanwhile */
        if (fd < 0 || fstat(fd, &st) < 0) {
            left_top = true;
            break;
        }
        if (same(&st, &top))
            depth = 0;
        else if (depth == 0) {
            left_top = true;
            break;
        }
    }
    if (fd >= 0)
        close(fd);
    free(stuck.v);
    if (left_top)
        return -1;
    if (!keep_top && rmdir(path) < 0 && errno != ENOENT)
        return -1;
    return 0;
}

static int64_t measure(const struct stat *sb, enum tree_measure m)
{
    int64_t alloc = (int64_t)sb->st_blocks * 512, size = (int64_t)sb->st_size;
    switch (m) {
    case TREE_BLOCKS:
        return alloc;
    case TREE_LARGER:
        return S_ISREG(sb->st_mode) && size > alloc ? size : alloc;
    case TREE_FILES:
        return S_ISREG(sb->st_mode) ? size : 0;
    }
    return 0;
}

bool tree_usage(const char *path, enum tree_measure m, int64_t max_entries, int64_t max_bytes,
                struct tree_usage *u)
{
    DIR *stack[TREE_MAX_DEPTH + 1];
    int fd = path ? open(path, DIR_FLAGS) : -1;
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        if (fd >= 0)
            close(fd);
        return false;
    }
    dev_t dev = st.st_dev;
    int depth = 0;
    stack[0] = fdopendir(fd);
    if (!stack[0]) {
        close(fd);
        return false;
    }
    bool over = false;
    while (depth >= 0 && !over) {
        DIR *d = stack[depth];
        struct dirent *e = readdir(d);
        if (!e) {
            closedir(d);
            depth--;
            continue;
        }
        if (dots(e->d_name))
            continue;
        struct stat sb;
        if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
            continue;   /* gone meanwhile */
        u->entries++;
        u->bytes += measure(&sb, m);
        if ((max_entries && u->entries > max_entries) || (max_bytes && u->bytes > max_bytes)) {
            over = true;
            break;
        }
        if (!S_ISDIR(sb.st_mode) || sb.st_dev != dev)
            continue;
        if (depth == TREE_MAX_DEPTH) {
            u->too_deep = true;
            continue;
        }
        int sub = openat(dirfd(d), e->d_name, DIR_FLAGS);
        DIR *sd = sub < 0 ? NULL : fdopendir(sub);
        if (!sd) {
            if (sub >= 0)
                close(sub);
            continue;
        }
        stack[++depth] = sd;
    }
    for (; depth >= 0; depth--)
        closedir(stack[depth]);
    return over;
}
