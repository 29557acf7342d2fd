/* tree.c: removal and measurement of trees a box made, including a chain of
 * directories deeper than any recursion survives (nftw crashed quernd on
 * 25 000 levels), links that must not be followed, and sparse files. */
#include "t.h"
#include "tree.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *fresh_dir(void)
{
    char *d = xstrdup("/tmp/quern-tree-XXXXXX");
    if (!mkdtemp(d))
        abort();
    return d;
}

static void put(const char *dir, const char *name, const char *text)
{
    char *p = xasprintf("%s/%s", dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK_EQ_INT(write(fd, text, strlen(text)), (long long)strlen(text));
        close(fd);
    }
    free(p);
}

/* dir/c/d/d/d/... n levels below dir/c, a file at the bottom */
static void chain(const char *dir, int n)
{
    char *top = xasprintf("%s/c", dir);
    CHECK_EQ_INT(mkdir(top, 0755), 0);
    int fd = open(top, O_RDONLY | O_DIRECTORY);
    for (int i = 0; i < n && fd >= 0; i++) {
        CHECK_EQ_INT(mkdirat(fd, "d", 0755), 0);
        int nfd = openat(fd, "d", O_RDONLY | O_DIRECTORY);
        close(fd);
        fd = nfd;
    }
    CHECK(fd >= 0);
    int f = openat(fd, "bottom", O_WRONLY | O_CREAT, 0644);
    CHECK(f >= 0);
    CHECK_EQ_INT(write(f, "x", 1), 1);
    close(f);
    close(fd);
    free(top);
}

static bool exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

TEST(a_very_deep_chain_is_measured_and_removed)
{
    char *d = fresh_dir();
    chain(d, 30000);
    struct tree_usage u = {0};
    CHECK(!tree_usage(d, TREE_BLOCKS, 0, 0, &u));
    CHECK(u.too_deep);
    CHECK_EQ_INT(u.entries, TREE_MAX_DEPTH + 1);
    /* a limit stops the walk early */
    memset(&u, 0, sizeof u);
    CHECK(tree_usage(d, TREE_BLOCKS, 50, 0, &u));
    CHECK_EQ_INT(u.entries, 51);
    CHECK_EQ_INT(tree_remove(d, true), 0);
    CHECK(exists(d));
    char *c = xasprintf("%s/c", d);
    CHECK(!exists(c));
    free(c);
    chain(d, 3000);
    CHECK_EQ_INT(tree_remove(d, false), 0);
    CHECK(!exists(d));
    free(d);
}

TEST(links_are_removed_not_followed)
{
    char *d = fresh_dir(), *outside = fresh_dir();
    put(outside, "keep", "precious");
    char *sub = xasprintf("%s/sub", d), *l1 = xasprintf("%s/sub/to_dir", d),
         *l2 = xasprintf("%s/to_file", d), *keep = xasprintf("%s/keep", outside),
         *hard = xasprintf("%s/sub/hard", d);
    CHECK_EQ_INT(mkdir(sub, 0755), 0);
    CHECK_EQ_INT(symlink(outside, l1), 0);
    CHECK_EQ_INT(symlink(keep, l2), 0);
    CHECK_EQ_INT(link(keep, hard), 0);
    put(sub, "f", "data");
    struct tree_usage u = {0};
    CHECK(!tree_usage(d, TREE_FILES, 0, 0, &u));
    CHECK_EQ_INT(u.entries, 5);          /* sub, to_dir, to_file, hard, f */
    CHECK_EQ_INT(u.bytes, 8 + 4);        /* hard (8) and f (4); links count 0 */
    CHECK_EQ_INT(tree_remove(d, false), 0);
    CHECK(!exists(d));
    CHECK(exists(keep));
    CHECK(exists(outside));
    tree_remove(outside, false);
    free(sub);
    free(l1);
    free(l2);
    free(keep);
    free(hard);
    free(d);
    free(outside);
}

TEST(sparse_files_count_at_their_apparent_size_when_asked)
{
    char *d = fresh_dir();
    char *p = xasprintf("%s/sparse", d);
    int fd = open(p, O_WRONLY | O_CREAT, 0644);
    CHECK(fd >= 0);
    CHECK_EQ_INT(ftruncate(fd, 64 << 20), 0);
    close(fd);
    struct tree_usage b = {0}, l = {0}, f = {0};
    tree_usage(d, TREE_BLOCKS, 0, 0, &b);
    tree_usage(d, TREE_LARGER, 0, 0, &l);
    tree_usage(d, TREE_FILES, 0, 0, &f);
    CHECK(b.bytes < (1 << 20));
    CHECK_EQ_INT(l.bytes, 64 << 20);
    CHECK_EQ_INT(f.bytes, 64 << 20);
    CHECK(tree_usage(d, TREE_LARGER, 0, 1 << 20, &l));
    tree_remove(d, false);
    free(p);
    free(d);
}

TEST(missing_paths_and_files)
{
    CHECK_EQ_INT(tree_remove("/tmp/quern-tree-does-not-exist", false), 0);
    CHECK_EQ_INT(tree_remove(NULL, false), 0);
    struct tree_usage u = {0};
    CHECK(!tree_usage("/tmp/quern-tree-does-not-exist", TREE_BLOCKS, 1, 1, &u));
    CHECK_EQ_INT(u.entries, 0);
    char *d = fresh_dir();
    put(d, "f", "x");
    char *f = xasprintf("%s/f", d);
    CHECK_EQ_INT(tree_remove(f, true), -1);   /* not a directory to empty */
    CHECK(exists(f));
    CHECK_EQ_INT(tree_remove(f, false), 0);
    CHECK(!exists(f));
    tree_remove(d, false);
    free(f);
    free(d);
}
