/* Codec of the orchestrator socket protocol, version 1 (src/orch/PROTOCOL.md):
 * one JSON object per line. Decoding validates every message type's required
 * fields declaratively; encoding produces exactly one line. */
#ifndef MEAO_PROTO_ORCH_H
#define MEAO_PROTO_ORCH_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/err.h"

#define MEAO_ORCH_VERSION     1
#define MEAO_ORCH_MAX_LINE    (1024 * 1024)
#define MEAO_ORCH_MAX_HISTORY 200
#define MEAO_ORCH_MAX_CONTENT (256 * 1024)

enum meao_orch_type {
    MEAO_ORCH_UNKNOWN = 0,
    /* client → orchestrator */
    MEAO_ORCH_TURN,
    MEAO_ORCH_APPROVAL_RESPONSE,
    MEAO_ORCH_CANCEL,
    MEAO_ORCH_PING,
    MEAO_ORCH_LIST_APPROVALS,
    MEAO_ORCH_LIST_TOOLS,
    /* orchestrator → client */
    MEAO_ORCH_TEXT_DELTA,
    MEAO_ORCH_TOOL_CALL_START,
    MEAO_ORCH_APPROVAL_REQUEST,
    MEAO_ORCH_APPROVAL_RESOLVED,
    MEAO_ORCH_TOOL_CALL_RESULT,
    MEAO_ORCH_MESSAGE_COMPLETE,
    MEAO_ORCH_ERROR,
    MEAO_ORCH_PONG,
    MEAO_ORCH_ACK,
    MEAO_ORCH_APPROVALS,
    MEAO_ORCH_TOOLS,
    MEAO_ORCH_TYPE_COUNT_
};

/* Wire name of a type ("turn", "text_delta", ...); "unknown" for UNKNOWN. */
const char *meao_orch_type_name(enum meao_orch_type t);
/* MEAO_ORCH_UNKNOWN when s names no type. */
enum meao_orch_type meao_orch_type_parse(const char *s);

/* Decode and validate one line (without its newline). On success *out is a
 * new reference (caller owns) and *type is set. On failure *out is NULL,
 * *code is the protocol error code to answer with ("INVALID_REQUEST",
 * "UNSUPPORTED_VERSION"; static) and why holds a one-line reason that never
 * echoes the peer's bytes. *type is set whenever the type was recognised,
 * so the answer can be routed. */
enum meao_err meao_orch_decode(const char *line, size_t len, json_t **out,
                               enum meao_orch_type *type, const char **code, char *why,
                               size_t whylen);

/* Append msg as one line (compact JSON + '\n') to out. false on failure. */
bool meao_orch_encode(const json_t *msg, struct meao_buf *out);

/* An error frame {"type":"error","requestId"?,"code","message"}; request_id
 * may be NULL. New reference. */
json_t *meao_orch_error_frame(const char *request_id, const char *code, const char *message);

/* A turn request. history, trusted_tools and attachments are borrowed (may be
 * NULL). New reference, NULL on allocation failure. */
json_t *meao_orch_turn_request(const char *request_id, const char *session_id, const char *user_id,
                               const char *channel, const char *work_dir,
                               const json_t *trusted_tools, const json_t *history,
                               const char *content, const json_t *attachments);

/* Map a protocol error code from an `error` frame to the library error
 * (PROVIDER_ERROR → MEAO_E_PROVIDER, GATEWAY_TIMEOUT → MEAO_E_TIMEOUT,
 * CANCELLED → MEAO_E_CANCELLED, BUSY/SHUTTING_DOWN → MEAO_E_UNAVAILABLE, ...). */
enum meao_err meao_orch_error_code_to_err(const char *code);

/* Bytes v takes as one compact line (without the newline); 0 on failure. */
size_t meao_orch_line_size(const json_t *v);

/* Keep the newest entries of history (an array of {"role","content"}, edited
 * in place) that fit in budget bytes of the turn line and that the
 * orchestrator accepts (content <= MEAO_ORCH_MAX_CONTENT). The window stays
 * contiguous: it stops at the first entry that does not fit. */
void meao_orch_fit_history(json_t *history, size_t budget);

#endif
