/*
 * fuzz_conf — quern.conf's INI reader on any bytes.  A refused file must
 * name the line; every setting handed on has a section, a non-empty key with
 * no surrounding blanks, and a value with none either.
 */
#include <ctype.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool trimmed(const char *s)
{
    size_t n = strlen(s);
    return n == 0 || (!isspace((unsigned char)s[0]) && !isspace((unsigned char)s[n - 1]));
}

static int each(void *ctx, const char *section, const char *key, const char *value, char *err,
                size_t errlen)
{
    if (!section || !key || !*key || !value || !trimmed(key) || !trimmed(value)) {
        fprintf(stderr, "fuzz_conf: setting [%s] '%s' = '%s'\n", section ? section : "(null)",
                key ? key : "(null)", value ? value : "(null)");
        abort();
    }
    (*(int *)ctx)++;
    if (strcmp(key, "refuse") == 0) {
        snprintf(err, errlen, "refused");
        return -22;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    if (!*path) {
        snprintf(path, sizeof path, "/tmp/quern-fuzz-conf.%d", (int)getpid());
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size || close(fd) != 0)
        abort();
    int n = 0;
    char *msg = NULL;
    int rc = conf_load(path, each, &n, &msg);
    if (rc != 0 && (!msg || !strstr(msg, ":"))) {
        fprintf(stderr, "fuzz_conf: refusal without a line: %s\n", msg ? msg : "(null)");
        abort();
    }
    if (rc == 0 && msg)
        abort();
    free(msg);
    return 0;
}
