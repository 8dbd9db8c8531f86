/* The gateway's client of the orchestrator socket (PROTOCOL.md). Every call
 * has a deadline: connect, send, the idle time between frames, and the whole
 * turn; when one passes the connection is closed, which the orchestrator
 * treats as a drop (approvals denied, turn cancelled). */
#ifndef MEAO_ORCH_CLIENT_H
#define MEAO_ORCH_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/lines.h"
#include "proto/orch.h"

struct meao_orch_client {
    int fd;
    struct meao_lines in;
    const struct meao_clock *clock; /* borrowed */
    int64_t idle_ms;                /* longest silence between frames */
};

/* Connect to the socket at path within timeout_ms. MEAO_E_UNAVAILABLE when
 * nothing listens (or the backlog stays full), MEAO_E_NOMEM. On success
 * *out is owned by the caller (meao_orch_close). */
enum meao_err meao_orch_connect(const char *path, const struct meao_clock *clock,
                                int64_t timeout_ms, int64_t idle_ms, struct meao_orch_client **out);

/* Send one message (borrowed) within timeout_ms. MEAO_E_UNAVAILABLE when the
 * peer is gone, MEAO_E_TIMEOUT when it does not read. */
enum meao_err meao_orch_send(struct meao_orch_client *c, const json_t *msg, int64_t timeout_ms);

/* Wait for the next frame, until deadline_mono_ms (whole-turn deadline; 0 =
 * none) or idle_ms of silence. When extra_fd >= 0 and it becomes readable
 * first (e.g. the WebSocket client's stdin), return MEAO_OK with *frame NULL
 * and *extra_ready true, so the caller can relay an approval or a cancel.
 * On a frame: *frame is a new reference, *type its type. Errors:
 * MEAO_E_TIMEOUT (deadline or idle), MEAO_E_UNAVAILABLE (closed or reset),
 * MEAO_E_INTERNAL (the orchestrator sent an invalid frame; logged). */
enum meao_err meao_orch_next(struct meao_orch_client *c, int64_t deadline_mono_ms, int extra_fd,
                             json_t **frame, enum meao_orch_type *type, bool *extra_ready);

/* Close and free; accepts NULL. */
void meao_orch_close(struct meao_orch_client *c);

/* One short call on a fresh connection: send req (borrowed), read one frame,
 * close. An `error` frame answer is returned as a frame (check *type). */
enum meao_err meao_orch_call(const char *path, const struct meao_clock *clock, const json_t *req,
                             int64_t timeout_ms, json_t **resp, enum meao_orch_type *type);

/* Liveness: ping on a fresh connection within timeout_ms (used by /ready). */
enum meao_err meao_orch_ping(const char *path, const struct meao_clock *clock, int64_t timeout_ms);

#endif
