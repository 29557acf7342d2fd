/*
 * fuzz_cron — cron_parse on any text, and cron_next in real zones with
 * daylight saving (gaps, overlaps, half-hour and negative DST).
 *
 * Input: byte 0 picks the zone, bytes 1-8 the start instant, the rest is the
 * expression.  Checked: a refused expression says why; cron_next is strictly
 * after its argument, lands on a whole second, and is the *first* fire
 * after it: asking again from one millisecond before gives the same instant
 * (a schedule that answered otherwise would fire twice or skip).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cron.h"
#include "tz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const zones[] = {
    "UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu",
    "America/Sao_Paulo", "Pacific/Apia", "Africa/Casablanca", "Europe/Dublin", "Antarctica/Troll",
    "America/St_Johns", "Pacific/Chatham",
};
#define NZONES (sizeof zones / sizeof zones[0])

/* 1970 .. about 2160: cron_next looks at most 5 years ahead */
#define SPAN_MS (6000000000000LL)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 9 || size > 9 + CRON_EXPR_MAX + 16)
        return 0;
    char *zerr = NULL;
    const struct tz *z = tz_get(zones[data[0] % NZONES], &zerr);
    free(zerr);
    if (!z)
        return 0;   /* tzdata without that zone */
    uint64_t raw;
    memcpy(&raw, data + 1, 8);
    int64_t after = (int64_t)(raw % (uint64_t)SPAN_MS);
    char expr[9 + CRON_EXPR_MAX + 16];
    memcpy(expr, data + 9, size - 9);
    expr[size - 9] = 0;

    char *err = NULL;
    struct cron *c = cron_parse(expr, &err);
    if (!c) {
        if (!err || !*err)
            abort();
        free(err);
        return 0;
    }
    if (err)
        abort();
    int64_t t = after;
    for (int i = 0; i < 4; i++) {
        int64_t n = cron_next(c, z, t);
        if (n == -1)
            break;
        if (n <= t || n % 1000 != 0) {
            fprintf(stderr, "fuzz_cron: '%s' in %s after %lld gave %lld\n", expr, tz_name(z),
                    (long long)t, (long long)n);
            abort();
        }
        int64_t again = cron_next(c, z, n - 1);
        if (again != n) {
            fprintf(stderr, "fuzz_cron: '%s' in %s: next after %lld is %lld, but after %lld is %lld\n",
                    expr, tz_name(z), (long long)t, (long long)n, (long long)(n - 1), (long long)again);
            abort();
        }
        t = n;
    }
    cron_free(c);
    return 0;
}
