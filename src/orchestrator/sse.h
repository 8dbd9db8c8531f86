/* An incremental, bounded parser of server-sent events (the WHATWG
 * "text/event-stream" format), as spoken by LLM providers' streaming APIs.
 * Feed it the response body in chunks of any size, split anywhere (inside a
 * field name, between CR and LF, inside a UTF-8 sequence); it calls back once
 * per complete event. Lines end in CRLF, LF or CR; `:` lines are comments;
 * `data:` lines of one event are joined with LF; `event:`, `id:` and `retry:`
 * are honoured; unknown fields are ignored; a leading UTF-8 BOM is skipped.
 * No I/O and no global state: one parser per stream, any number of streams
 * on any threads. */
#ifndef MEAO_ORCHESTRATOR_SSE_H
#define MEAO_ORCHESTRATOR_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* Default bound on one event (its buffered line, data and event name). */
#define MEAO_SSE_DEFAULT_MAX_EVENT (1024 * 1024)

/* One dispatched event. Every pointer is borrowed until the callback returns;
 * the strings are NUL-terminated but data may itself contain NUL bytes, so
 * use the lengths. */
struct meao_sse_event {
    const char *type; /* the `event:` field, or "message" when there was none */
    size_t type_len;
    const char *data; /* the `data:` lines joined with LF (no trailing LF) */
    size_t data_len;
    const char *id; /* the last event id seen on this stream ("" when none) */
    size_t id_len;
};

/* Return true to go on, false to stop: meao_sse_feed() then returns
 * MEAO_SSE_STOPPED without looking at the rest of the chunk. */
typedef bool (*meao_sse_cb)(void *ctx, const struct meao_sse_event *ev);

enum meao_sse_status {
    MEAO_SSE_OK = 0,    /* the chunk was consumed */
    MEAO_SSE_STOPPED,   /* the callback returned false */
    MEAO_SSE_TOO_LARGE, /* an event outgrew max_event: the stream is refused */
    MEAO_SSE_NOMEM,     /* allocation failed: the stream is refused */
};

struct meao_sse {
    struct meao_buf line;        /* the current, unterminated line */
    struct meao_buf data;        /* data lines of the current event, each + LF */
    struct meao_buf type;        /* event type of the current event */
    struct meao_buf id;          /* last event id */
    size_t max_event;            /* bound on line + data + type, in bytes */
    int64_t retry_ms;            /* the last valid `retry:` value, -1 when none */
    unsigned bom_seen;           /* bytes of a leading BOM matched so far */
    bool started;                /* past the point where a BOM may appear */
    bool cr_pending;             /* the last byte was CR: a following LF belongs to it */
    enum meao_sse_status failed; /* sticky TOO_LARGE / NOMEM, else OK */
};

/* Prepare s for a new stream; max_event 0 means MEAO_SSE_DEFAULT_MAX_EVENT.
 * Nothing is allocated until bytes arrive. */
void meao_sse_init(struct meao_sse *s, size_t max_event);

/* Release what s holds; s may be reused after meao_sse_init(). Accepts NULL. */
void meao_sse_free(struct meao_sse *s);

/* Parse len more bytes of the stream, calling cb (on this thread) for every
 * event they complete. After TOO_LARGE or NOMEM every later call returns the
 * same status without calling back: an event that cannot be held makes the
 * rest of the stream meaningless. */
enum meao_sse_status meao_sse_feed(struct meao_sse *s, const char *buf, size_t len, meao_sse_cb cb,
                                   void *ctx);

/* True when the stream has begun an event that is not complete yet (a partial
 * line or undispatched data): at end of stream that event is lost, which for
 * an LLM stream means the connection was cut mid-event. */
bool meao_sse_pending(const struct meao_sse *s);

#endif
