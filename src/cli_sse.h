/*
 * cli_sse — an incremental Server-Sent Events parser (the WHATWG event-stream
 * format) for `quern run --wait` and `quern logs -f`.  Bytes are fed as they
 * arrive, in chunks of any size; each complete event is handed to a callback.
 * Single-threaded, no I/O.
 */
#ifndef QUERN_CLI_SSE_H
#define QUERN_CLI_SSE_H

#include <stddef.h>

#include "util.h"

/* Called once per dispatched event: type ("message" when the stream named
 * none), data (lines joined by '\n'), id (the last id seen, or "").  All
 * borrowed for the call.  A non-zero return stops cli_sse_feed(). */
typedef int (*cli_sse_fn)(const char *type, const char *data, const char *id, void *ud);

struct cli_sse {
    struct buf line;            /* the current, incomplete line */
    struct buf data;            /* data: lines of the pending event */
    struct buf type;            /* event: of the pending event */
    struct buf last_id;         /* last id: seen (persists across events) */
    int have_data;
    int skip_lf;                /* the previous chunk ended in '\r' */
};

void cli_sse_init(struct cli_sse *s);
void cli_sse_release(struct cli_sse *s);
/* Feeds n bytes; returns 0, or the first non-zero value a callback returned. */
int cli_sse_feed(struct cli_sse *s, const char *p, size_t n, cli_sse_fn fn, void *ud);
/* Forgets the event and line a cut stream left half-read, keeping the last
 * id: called before a reconnect, whose bytes start a new stream. */
void cli_sse_restart(struct cli_sse *s);
/* The last event id seen ("" if none), for a Last-Event-ID reconnect (borrowed). */
const char *cli_sse_last_id(const struct cli_sse *s);

#endif
