/*
 * bench.h — helpers shared by the C benchmarks in bench/ (static inline: a
 * program uses what it needs): a monotonic clock in seconds and the
 * process's resident memory.
 */
#ifndef QUERN_BENCH_H
#define QUERN_BENCH_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The monotonic clock, in seconds. */
static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* This process's resident set (VmRSS), in KiB; 0 when it cannot be read. */
static inline long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            kb = atol(line + 6);
    if (f)
        fclose(f);
    return kb;
}
#endif
