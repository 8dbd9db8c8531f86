/* libcurl plumbing shared by the HTTP providers (anthropic, openai): one
 * streamed JSON POST per model call, its text/event-stream body handed event
 * by event to the provider, with the whole-call timeout, a stall limit, prompt
 * cancellation and HTTP errors turned into one safe line.
 *
 * Every call has its own easy and multi handle, so any number of calls may
 * run at once on different threads. The multi loop wakes at least every
 * MEAO_PROVIDER_HTTP_POLL_MS to ask sink->cancelled(), whether or not bytes
 * flow. Only http and https are spoken, redirects are never followed, TLS
 * peers are verified (libcurl's defaults). */
#ifndef MEAO_ORCHESTRATOR_PROVIDER_HTTP_H
#define MEAO_ORCHESTRATOR_PROVIDER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "orchestrator/provider.h"
#include "orchestrator/sse.h"

#define MEAO_PROVIDER_HTTP_POLL_MS    50
#define MEAO_PROVIDER_HTTP_MAX_EVENT  (1024 * 1024) /* one SSE event */
#define MEAO_PROVIDER_HTTP_MAX_ERROR  (16 * 1024)   /* error body kept to describe it */
#define MEAO_PROVIDER_HTTP_STALL_MS   60000         /* silence mid-stream: stalled */
#define MEAO_PROVIDER_HTTP_MAX_DETAIL 200           /* provider text quoted in an error */
#define MEAO_PROVIDER_MAX_TOOL_INPUT  (1024 * 1024) /* one tool call's assembled input */
#define MEAO_PROVIDER_MAX_TOOL_CALLS  128           /* content blocks / tool calls per call */
#define MEAO_PROVIDER_JSON_DEPTH      64

/* Handle one SSE event of the response. Return MEAO_OK to go on, or an error
 * with one line in err (it becomes the call's result). Set *finished when the
 * stream's end marker arrived: the transfer then stops at once, successfully. */
typedef enum meao_err (*meao_provider_http_event_fn)(void *ctx, const struct meao_sse_event *ev,
                                                     bool *finished, char *err, size_t errlen);

struct meao_provider_http_call {
    const char *provider;       /* "anthropic": first word of every error line */
    const char *url;            /* full endpoint URL, checked by _check_base_url */
    const char *const *headers; /* NULL-terminated "Name: value" lines (borrowed) */
    const char *secret;         /* never appears in err; may be NULL */
    const char *body;           /* JSON request body, borrowed until the call returns */
    size_t body_len;
    int64_t timeout_ms; /* the whole call, connect to last byte */
    int64_t stall_ms;   /* once the body began, no byte for this long is a
                         * stall (0: only timeout_ms applies) */
    const struct meao_llm_sink *sink;
    meao_provider_http_event_fn on_event;
    void *ctx; /* for on_event */
};

/* POST c->body to c->url and stream the response's events to c->on_event.
 * Returns MEAO_OK when the response was 2xx and its body ended (or on_event
 * set *finished); MEAO_E_PROVIDER for HTTP >= 300, transport failures, a cut
 * stream, an oversized event; MEAO_E_TIMEOUT for timeout_ms or a stall
 * (stall_ms without a byte once the body began: the wait for the first byte,
 * which a long prompt or a reasoning model may make long, counts only
 * against timeout_ms; SSE comments and pings count as bytes); MEAO_E_CANCELLED
 * when sink->cancelled() said so; MEAO_E_NOMEM; or what on_event returned.
 * Any error leaves one line without secrets in err, starting with c->provider.
 * *http_status (may be NULL) gets the response status, 0 when none. */
enum meao_err meao_provider_http_post_sse(const struct meao_provider_http_call *c,
                                          long *http_status, char *err, size_t errlen);

/* Check a provider base URL: http or https only, no user info, query or
 * fragment, and plain http only towards a loopback host (localhost,
 * 127.0.0.0/8, ::1), so an API key never crosses a network in clear text.
 * MEAO_OK, or MEAO_E_INVALID_PARAMETER with one line naming provider_base_url. */
enum meao_err meao_provider_http_check_base_url(const char *provider, const char *url, char *err,
                                                size_t errlen);

/* Join a base URL (its trailing slashes dropped) and a path. Caller frees;
 * NULL on allocation failure. */
char *meao_provider_http_join(const char *base, const char *path);

/* Make s (len bytes, need not be NUL-terminated) safe to quote in a one-line
 * error: control characters become spaces, runs of spaces collapse, the
 * secret and anything shaped like an API key ("sk-...") become "[redacted]",
 * and at most max bytes are kept (cut on a UTF-8 boundary, "..." appended).
 * Writes into out (outlen bytes, always NUL-terminated). */
void meao_provider_http_scrub(const char *s, size_t len, const char *secret, size_t max, char *out,
                              size_t outlen);

#endif
