/* web — the dashboard's static files, embedded at build time by scripts/embed.sh. */
#ifndef QUERN_WEB_H
#define QUERN_WEB_H
#include <stddef.h>

struct web_asset {
    const char *path;           /* "/index.html" */
    const unsigned char *data;
    size_t size;
};

/* Terminated by an entry whose path is NULL. */
extern const struct web_asset web_assets[];

#endif
