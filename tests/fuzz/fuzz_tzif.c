/*
 * fuzz_tzif — tz.c's reader of compiled zoneinfo (TZif v1-v4 and the POSIX
 * TZ rule in its footer) on any bytes.  The input is written as a zone file
 * under a private TZDIR and loaded; a refused file must say why; a loaded
 * zone is then asked for offsets, civil times and transitions across its
 * range, which must not crash, overflow or go backwards.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cron.h"
#include "tz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[256];

static void setup(void)
{
    char dir[] = "/tmp/quern-fuzz-tz.XXXXXX";
    if (!mkdtemp(dir))
        abort();
    setenv("TZDIR", dir, 1);
    snprintf(path, sizeof path, "%s/Fuzz", dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!*path)
        setup();
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size || close(fd) != 0)
        abort();
    char *err = NULL;
    const struct tz *z = tz_get("Fuzz", &err);
    if (!z) {
        if (!err || !*err)
            abort();
        free(err);
        tz_cache_free();
        return 0;
    }
    static const int64_t probes[] = {
        -4000000000LL, -1, 0, 1, 946684800, 1700000000, 1774000000, 2147483647, 4102444800LL,
        32503680000LL,
    };
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        int64_t t = probes[i];
        int off = tz_offset_at(z, t);
        if (off < -26 * 3600 || off > 26 * 3600) {
            fprintf(stderr, "fuzz_tzif: offset %d out of range\n", off);
            abort();
        }
        struct tm tm;
        tz_localtime(z, t, &tm);
        if (tm.tm_gmtoff != off || !tm.tm_zone)
            abort();
        int64_t n = tz_next_transition(z, t);
        if (n <= t)
            abort();
    }
    struct cron *c = cron_parse("30 2 * * *", &err);
    int64_t at = 1700000000000LL;
    for (int i = 0; i < 3 && at >= 0; i++) {
        int64_t n = cron_next(c, z, at);
        if (n != -1 && n <= at)
            abort();
        at = n;
    }
    cron_free(c);
    tz_cache_free();
    return 0;
}
