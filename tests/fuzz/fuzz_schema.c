/*
 * fuzz_schema — jsonschema_check and jsonschema_validate on hostile schemas
 * and instances.  The input is "schema JSON" NUL "instance JSON".  Neither
 * may crash, leak or run away; a schema the check accepts must never be
 * called invalid by validate, and every failure must name a path and reason.
 */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonschema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t slen = nul ? (size_t)(nul - data) : size;
    json_t *schema = json_loadb((const char *)data, slen, JSON_DECODE_ANY, NULL);
    if (!schema)
        return 0;
    json_t *inst = nul ? json_loadb((const char *)nul + 1, size - slen - 1, JSON_DECODE_ANY, NULL)
                       : json_null();
    char *msg = NULL;
    int checked = jsonschema_check(schema, &msg);
    if (checked != 0 && (!msg || !*msg))
        abort();
    free(msg);
    if (inst) {
        char *path = NULL;
        msg = NULL;
        int rc = jsonschema_validate(schema, inst, &path, &msg);
        if (rc != 0 && (!path || !msg || !*msg))
            abort();
        if (rc != 0 && (checked == 0 || checked == -ENOTSUP) &&
            strncmp(msg, "invalid schema", 14) == 0) {
            fprintf(stderr, "fuzz_schema: check accepted, validate said: %s\n", msg);
            abort();
        }
        if (rc == 0 && (path || msg))
            abort();
        free(path);
        free(msg);
    }
    json_decref(schema);
    json_decref(inst);
    return 0;
}
