/*
 * fuzz_json — jload and jdump against jansson, which they claim to equal.
 *
 * jload(text) must return what json_loadb(text) returns (the same value, or
 * NULL for both), for each flag combination quern uses; jload_fields must
 * keep exactly the named fields of that value; jdump(v) must be the bytes of
 * json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) when v holds no real, and
 * with reals (written in fewer digits, see jdump.h) text no longer than
 * jansson's that json_loadb reads back as exactly v.  Any difference aborts.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jdump.h"
#include "jload.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *what, const uint8_t *data, size_t size)
{
    fprintf(stderr, "fuzz_json: %s for %zu bytes: %.*s\n", what, size, (int)size, (const char *)data);
    abort();
}

static int has_real(const json_t *v)
{
    size_t i;
    const char *k;
    json_t *x;
    if (json_is_real(v))
        return 1;
    if (json_is_array(v))
        json_array_foreach(v, i, x) if (has_real(x)) return 1;
    if (json_is_object(v))
        json_object_foreach((json_t *)v, k, x) if (has_real(x)) return 1;
    return 0;
}

static void same_as_jansson(const uint8_t *data, size_t size, size_t flags)
{
    json_error_t e;
    json_t *want = json_loadb((const char *)data, size, flags, &e);
    json_t *got = jload((const char *)data, size, flags);
    if (!want != !got || (want && !json_equal(want, got)))
        die("jload differs from json_loadb", data, size);
    if (!want && !jload_error_text(&e))
        die("jload_error_text gave no text", data, size);
    if (want) {
        size_t n = 0;
        char *mine = jdump(want, &n);
        char *theirs = json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!mine != !theirs)
            die("jdump fails where json_dumps does not, or the other way", data, size);
        if (mine && !has_real(want) && (strlen(theirs) != n || memcmp(mine, theirs, n) != 0))
            die("jdump differs from json_dumps", data, size);
        if (mine && has_real(want)) {
            json_t *back = json_loadb(mine, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
            if (!back || !json_equal(back, want) || n > strlen(theirs))
                die("jdump's reals do not read back, or are longer than jansson's", data, size);
            json_decref(back);
        }
        free(mine);
        free(theirs);
    }
    json_decref(want);
    json_decref(got);
}

/* The fields quern's store reads back selectively (a run's summary). */
static const char *const fields[] = {"id", "status", "a", "b", "task_id", NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    same_as_jansson(data, size, 0);
    same_as_jansson(data, size, JSON_DECODE_ANY);
    same_as_jansson(data, size, JSON_REJECT_DUPLICATES);

    json_t *whole = json_loadb((const char *)data, size, 0, NULL);
    json_t *some = jload_fields((const char *)data, size, fields);
    if (json_is_object(whole)) {
        if (!json_is_object(some))
            die("jload_fields lost an object", data, size);
        /* every field it kept is the whole value's; a named field is kept
         * unless the fast path declined and kept everything */
        const char *k;
        json_t *v;
        json_object_foreach(some, k, v) {
            if (!json_equal(v, json_object_get(whole, k)))
                die("jload_fields changed a field", data, size);
        }
        for (const char *const *f = fields; *f; f++)
            if (json_object_get(whole, *f) && !json_equal(json_object_get(whole, *f), json_object_get(some, *f)))
                die("jload_fields dropped a named field", data, size);
    }
    json_decref(whole);
    json_decref(some);
    return 0;
}
