/*
 * fsync_floor — what the disk alone allows for durable commits, one at a time.
 *
 *   build/bench/fsync_floor [DIR] [N]
 *
 * In DIR (default: the current directory; give the file system quernd's
 * --data lives on) it writes N times (default 2000) a block at the next
 * offset of a preallocated 16 MiB file and fdatasync()s it, as quernd's
 * --fsync always does with SQLite's WAL (a commit's frames in one write,
 * then fdatasync, the file kept at its size between checkpoints).  Block
 * sizes 4, 16 and 64 KiB (a single task create commits ~16 pages of 4 KiB,
 * ~64 KiB of WAL); then the same appending to an empty file (a WAL
 * growing after a checkpoint).  Prints microseconds per write+fdatasync
 * (median and p99) and the rate that gives: no server answering one
 * request at a time, each after its own fsync, can beat it on this disk
 * (the harness's single-enqueue column with fsync on every write).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FILE_BYTES (16L << 20)

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* N writes of `block` bytes, each followed by fdatasync; appending grows
 * the file from empty, otherwise the writes wrap inside a preallocated
 * file.  Returns 0, or -1 with errno. */
static int measure(const char *path, size_t block, int n, int append, double *lat)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    char *buf = malloc(block);
    if (!buf) {
        close(fd);
        return -1;
    }
    memset(buf, 'q', block);
    int rc = 0;
    if (!append) {
        /* written for real (not a hole), as a WAL that has been filled once */
        for (long off = 0; off < FILE_BYTES && rc == 0; off += (long)block)
            if (pwrite(fd, buf, block, off) != (ssize_t)block)
                rc = -1;
        if (rc == 0 && fsync(fd) != 0)
            rc = -1;
    }
    long off = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        if (!append && off + (long)block > FILE_BYTES)
            off = 0;
        double t0 = now_us();
        if (pwrite(fd, buf, block, off) != (ssize_t)block || fdatasync(fd) != 0)
            rc = -1;
        lat[i] = now_us() - t0;
        off += (long)block;
    }
    int e = errno;
    free(buf);
    close(fd);
    unlink(path);
    errno = e;
    return rc;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : ".";
    int n = argc > 2 ? atoi(argv[2]) : 2000;
    if (n < 10) {
        fprintf(stderr, "usage: fsync_floor [DIR] [N >= 10]\n");
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/fsync_floor.%d.tmp", dir, (int)getpid());
    double *lat = calloc((size_t)n, sizeof *lat);
    if (!lat)
        return 1;
    static const size_t blocks[] = {4096, 16384, 65536};
    printf("write + fdatasync in %s, %d times each:\n", dir, n);
    for (int append = 0; append < 2; append++) {
        for (size_t b = 0; b < sizeof blocks / sizeof blocks[0]; b++) {
            if (measure(path, blocks[b], n, append, lat) != 0) {
                fprintf(stderr, "fsync_floor: %s: %s\n", path, strerror(errno));
                return 1;
            }
            qsort(lat, (size_t)n, sizeof *lat, cmp_double);
            double p50 = lat[n / 2], p99 = lat[(size_t)((double)n * 0.99)];
            printf("  %-9s %3zu KiB: p50 %7.1f us  p99 %7.1f us  -> at most %5.0f commits/s one at a time\n",
                   append ? "append" : "overwrite", blocks[b] / 1024, p50, p99, 1e6 / p50);
            /* a single create commits ~16 pages of 4 KiB (BENCHMARKS.md) */
            if (!append && blocks[b] == 65536)
                printf("FSYNC_FLOOR_US %.1f\nFSYNC_FLOOR_PER_S %.0f\n", p50, 1e6 / p50);
        }
    }
    free(lat);
    return 0;
}
