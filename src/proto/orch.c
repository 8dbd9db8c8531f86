#include "proto/orch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ids.h"
#include "core/json.h"
#include "http/router.h"

static const char *const names[MEAO_ORCH_TYPE_COUNT_] = {
    [MEAO_ORCH_UNKNOWN] = "unknown",
    [MEAO_ORCH_TURN] = "turn",
    [MEAO_ORCH_APPROVAL_RESPONSE] = "approval_response",
    [MEAO_ORCH_CANCEL] = "cancel",
    [MEAO_ORCH_PING] = "ping",
    [MEAO_ORCH_LIST_APPROVALS] = "list_approvals",
    [MEAO_ORCH_LIST_TOOLS] = "list_tools",
    [MEAO_ORCH_TEXT_DELTA] = "text_delta",
    [MEAO_ORCH_TOOL_CALL_START] = "tool_call_start",
    [MEAO_ORCH_APPROVAL_REQUEST] = "approval_request",
    [MEAO_ORCH_APPROVAL_RESOLVED] = "approval_resolved",
    [MEAO_ORCH_TOOL_CALL_RESULT] = "tool_call_result",
    [MEAO_ORCH_MESSAGE_COMPLETE] = "message_complete",
    [MEAO_ORCH_ERROR] = "error",
    [MEAO_ORCH_PONG] = "pong",
    [MEAO_ORCH_ACK] = "ack",
    [MEAO_ORCH_APPROVALS] = "approvals",
    [MEAO_ORCH_TOOLS] = "tools",
};

const char *meao_orch_type_name(enum meao_orch_type t)
{
    return (int)t > 0 && t < MEAO_ORCH_TYPE_COUNT_ ? names[t] : names[MEAO_ORCH_UNKNOWN];
}

enum meao_orch_type meao_orch_type_parse(const char *s)
{
    if (s == NULL)
        return MEAO_ORCH_UNKNOWN;
    for (int t = 1; t < MEAO_ORCH_TYPE_COUNT_; t++)
        if (strcmp(names[t], s) == 0)
            return (enum meao_orch_type)t;
    return MEAO_ORCH_UNKNOWN;
}

/* Required fields per type. Unknown fields are allowed (forward compatible). */
#define F(n, t, req, lo, hi)                                                                       \
    {                                                                                              \
        n, t, req, lo, hi                                                                          \
    }
static const struct meao_field turn_f[] = {
    F("requestId", MEAO_F_STRING, true, 1, 64),
    F("session", MEAO_F_OBJECT, true, 0, 0),
    F("history", MEAO_F_ARRAY, false, 0, MEAO_ORCH_MAX_HISTORY),
    F("content", MEAO_F_STRING, true, 1, MEAO_ORCH_MAX_CONTENT),
    F("attachments", MEAO_F_ARRAY, false, 0, 16),
    F("v", MEAO_F_INT, false, 0, 0),
};
static const struct meao_field session_f[] = {
    F("id", MEAO_F_STRING, true, 1, 128),          F("userId", MEAO_F_STRING, true, 1, 64),
    F("channel", MEAO_F_STRING, true, 1, 32),      F("workDir", MEAO_F_STRING, true, 1, 4096),
    F("trustedTools", MEAO_F_ARRAY, false, 0, 64),
};
static const struct meao_field history_f[] = {
    F("role", MEAO_F_STRING, true, 1, 16),
    F("content", MEAO_F_STRING, true, 0, MEAO_ORCH_MAX_CONTENT),
};
static const struct meao_field approval_response_f[] = {
    F("approvalId", MEAO_F_STRING, true, 1, 64),
    F("approved", MEAO_F_BOOL, true, 0, 0),
    F("trustSession", MEAO_F_BOOL, false, 0, 0),
    F("userId", MEAO_F_STRING, false, 1, 64),
};
static const struct meao_field cancel_f[] = {F("targetRequestId", MEAO_F_STRING, false, 1, 64)};
static const struct meao_field list_approvals_f[] = {F("userId", MEAO_F_STRING, true, 1, 64)};
static const struct meao_field text_delta_f[] = {
    F("requestId", MEAO_F_STRING, true, 1, 64),
    F("delta", MEAO_F_STRING, true, 0, 0),
};
static const struct meao_field tool_call_start_f[] = {
    F("requestId", MEAO_F_STRING, true, 1, 64),
    F("toolCallId", MEAO_F_STRING, true, 1, 128),
    F("toolName", MEAO_F_STRING, true, 1, 128),
};
static const struct meao_field approval_request_f[] = {
    F("approvalId", MEAO_F_STRING, true, 1, 64),  F("correlationId", MEAO_F_STRING, true, 1, 64),
    F("toolCallId", MEAO_F_STRING, true, 1, 128), F("toolName", MEAO_F_STRING, true, 1, 128),
    F("request", MEAO_F_OBJECT, true, 0, 0),      F("timeout", MEAO_F_INT, true, 0, 0),
};
static const struct meao_field approval_resolved_f[] = {
    F("approvalId", MEAO_F_STRING, true, 1, 64),
    F("approved", MEAO_F_BOOL, true, 0, 0),
};
static const struct meao_field tool_call_result_f[] = {
    F("requestId", MEAO_F_STRING, true, 1, 64),
    F("toolCallId", MEAO_F_STRING, true, 1, 128),
    F("toolName", MEAO_F_STRING, true, 1, 128),
    F("success", MEAO_F_BOOL, true, 0, 0),
};
static const struct meao_field message_complete_f[] = {
    F("requestId", MEAO_F_STRING, true, 1, 64),   F("content", MEAO_F_STRING, true, 0, 0),
    F("toolCalls", MEAO_F_ARRAY, false, 0, 0),    F("usage", MEAO_F_OBJECT, true, 0, 0),
    F("trustedTools", MEAO_F_ARRAY, false, 0, 0),
};
static const struct meao_field error_f[] = {
    F("code", MEAO_F_STRING, true, 1, 64),
    F("message", MEAO_F_STRING, true, 0, 0),
};
static const struct meao_field pong_f[] = {F("serverTime", MEAO_F_STRING, false, 0, 0)};
static const struct meao_field ack_f[] = {F("approvalId", MEAO_F_STRING, true, 1, 64)};
static const struct meao_field approvals_f[] = {F("approvals", MEAO_F_ARRAY, true, 0, 0)};
static const struct meao_field tools_f[] = {F("tools", MEAO_F_ARRAY, true, 0, 0)};
#undef F

#define S(a)                                                                                       \
    {                                                                                              \
        a, sizeof a / sizeof a[0], true                                                            \
    }
static const struct meao_schema schemas[MEAO_ORCH_TYPE_COUNT_] = {
    [MEAO_ORCH_TURN] = S(turn_f),
    [MEAO_ORCH_APPROVAL_RESPONSE] = S(approval_response_f),
    [MEAO_ORCH_CANCEL] = S(cancel_f),
    [MEAO_ORCH_PING] = {NULL, 0, true},
    [MEAO_ORCH_LIST_APPROVALS] = S(list_approvals_f),
    [MEAO_ORCH_LIST_TOOLS] = {NULL, 0, true},
    [MEAO_ORCH_TEXT_DELTA] = S(text_delta_f),
    [MEAO_ORCH_TOOL_CALL_START] = S(tool_call_start_f),
    [MEAO_ORCH_APPROVAL_REQUEST] = S(approval_request_f),
    [MEAO_ORCH_APPROVAL_RESOLVED] = S(approval_resolved_f),
    [MEAO_ORCH_TOOL_CALL_RESULT] = S(tool_call_result_f),
    [MEAO_ORCH_MESSAGE_COMPLETE] = S(message_complete_f),
    [MEAO_ORCH_ERROR] = S(error_f),
    [MEAO_ORCH_PONG] = S(pong_f),
    [MEAO_ORCH_ACK] = S(ack_f),
    [MEAO_ORCH_APPROVALS] = S(approvals_f),
    [MEAO_ORCH_TOOLS] = S(tools_f),
};
static const struct meao_schema session_schema = S(session_f);
static const struct meao_schema history_schema = S(history_f);
#undef S

/* Checks the schemas cannot express: id charset, nested objects, roles. */
static enum meao_err check_turn(const json_t *msg, char *why, size_t whylen)
{
    const json_t *history = json_object_get(msg, "history");
    const json_t *trusted;
    const json_t *v;
    size_t i;
    enum meao_err e;

    if (!meao_request_id_valid(meao_json_str(msg, "requestId"))) {
        snprintf(why, whylen, "requestId must be 1..64 of [A-Za-z0-9._:-]");
        return MEAO_E_INVALID_PARAMETER;
    }
    e = meao_schema_check(&session_schema, json_object_get(msg, "session"), why, whylen);
    if (e != MEAO_OK)
        return e;
    trusted = json_object_get(json_object_get(msg, "session"), "trustedTools");
    json_array_foreach(trusted, i, v)
    {
        if (!json_is_string(v)) {
            snprintf(why, whylen, "session.trustedTools must hold strings");
            return MEAO_E_INVALID_PARAMETER;
        }
    }
    json_array_foreach(history, i, v)
    {
        const char *role;
        e = meao_schema_check(&history_schema, v, why, whylen);
        if (e != MEAO_OK)
            return e;
        role = meao_json_str(v, "role");
        if (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0) {
            snprintf(why, whylen, "history roles must be user or assistant");
            return MEAO_E_INVALID_PARAMETER;
        }
    }
    return MEAO_OK;
}

enum meao_err meao_orch_decode(const char *line, size_t len, json_t **out,
                               enum meao_orch_type *type, const char **code, char *why,
                               size_t whylen)
{
    json_t *msg = NULL, *ver;
    enum meao_err e;

    *out = NULL;
    *type = MEAO_ORCH_UNKNOWN;
    *code = "INVALID_REQUEST";
    e = meao_json_parse(line, len, MEAO_ORCH_MAX_LINE, 32, &msg, why, whylen);
    if (e != MEAO_OK) {
        if (e == MEAO_E_PAYLOAD_TOO_LARGE)
            *code = "LINE_TOO_LONG";
        return e;
    }
    if (!json_is_object(msg)) {
        snprintf(why, whylen, "a line must hold a JSON object");
        e = MEAO_E_INVALID_REQUEST;
        goto fail;
    }
    *type = meao_orch_type_parse(meao_json_str(msg, "type"));
    if (*type == MEAO_ORCH_UNKNOWN) {
        snprintf(why, whylen,
                 json_is_string(json_object_get(msg, "type")) ? "unknown message type"
                                                              : "missing string field \"type\"");
        e = MEAO_E_INVALID_REQUEST;
        goto fail;
    }
    ver = json_object_get(msg, "v");
    if (ver != NULL && (!json_is_integer(ver) || json_integer_value(ver) != MEAO_ORCH_VERSION)) {
        snprintf(why, whylen, "protocol version %d is the only one spoken", MEAO_ORCH_VERSION);
        *code = "UNSUPPORTED_VERSION";
        e = MEAO_E_INVALID_REQUEST;
        goto fail;
    }
    /* the seed's alias: approval answers may name the approval requestId */
    if (*type == MEAO_ORCH_APPROVAL_RESPONSE && !json_object_get(msg, "approvalId") &&
        json_is_string(json_object_get(msg, "requestId")))
        json_object_set(msg, "approvalId", json_object_get(msg, "requestId"));
    e = meao_schema_check(&schemas[*type], msg, why, whylen);
    if (e == MEAO_OK && *type == MEAO_ORCH_TURN)
        e = check_turn(msg, why, whylen);
    if (e != MEAO_OK)
        goto fail;
    *out = msg;
    return MEAO_OK;
fail:
    json_decref(msg);
    return e;
}

bool meao_orch_encode(const json_t *msg, struct meao_buf *out)
{
    char *s = json_dumps(msg, JSON_COMPACT);
    bool ok;
    if (s == NULL)
        return false;
    ok = meao_buf_puts(out, s) && meao_buf_append(out, "\n", 1);
    free(s);
    return ok;
}

json_t *meao_orch_error_frame(const char *request_id, const char *code, const char *message)
{
    json_t *f = json_pack("{s:s, s:s, s:s}", "type", "error", "code", code, "message",
                          message ? message : "");
    if (f && request_id)
        json_object_set_new(f, "requestId", json_string(request_id));
    return f;
}

json_t *meao_orch_turn_request(const char *request_id, const char *session_id, const char *user_id,
                               const char *channel, const char *work_dir,
                               const json_t *trusted_tools, const json_t *history,
                               const char *content, const json_t *attachments)
{
    /* "o" steals: borrowed arrays are increfed first, fresh empty ones are not leaked */
    json_t *t =
        json_pack("{s:s, s:i, s:s, s:{s:s, s:s, s:s, s:s, s:o}, s:o, s:s}", "type", "turn", "v",
                  MEAO_ORCH_VERSION, "requestId", request_id, "session", "id", session_id, "userId",
                  user_id, "channel", channel, "workDir", work_dir, "trustedTools",
                  trusted_tools ? json_incref((json_t *)trusted_tools) : json_array(), "history",
                  history ? json_incref((json_t *)history) : json_array(), "content", content);
    if (t && attachments)
        json_object_set(t, "attachments", (json_t *)attachments);
    return t;
}

enum meao_err meao_orch_error_code_to_err(const char *code)
{
    static const struct {
        const char *code;
        enum meao_err e;
    } map[] = {
        {"PROVIDER_ERROR", MEAO_E_PROVIDER},   {"GATEWAY_TIMEOUT", MEAO_E_TIMEOUT},
        {"CANCELLED", MEAO_E_CANCELLED},       {"BUSY", MEAO_E_UNAVAILABLE},
        {"SHUTTING_DOWN", MEAO_E_UNAVAILABLE}, {"INVALID_REQUEST", MEAO_E_INVALID_REQUEST},
        {"FORBIDDEN", MEAO_E_FORBIDDEN},       {"APPROVAL_NOT_FOUND", MEAO_E_NOT_FOUND},
        {"APPROVAL_EXPIRED", MEAO_E_CONFLICT},
    };
    for (size_t i = 0; code && i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i].code, code) == 0)
            return map[i].e;
    return MEAO_E_INTERNAL;
}

size_t meao_orch_line_size(const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT);
    size_t n = s ? strlen(s) : 0;
    free(s);
    return n;
}

void meao_orch_fit_history(json_t *history, size_t budget)
{
    size_t n = json_array_size(history), keep = 0, used = 0;
    while (keep < n) {
        const json_t *h = json_array_get(history, n - 1 - keep);
        size_t cost = meao_orch_line_size(h) + 1;
        if (json_string_length(json_object_get(h, "content")) > MEAO_ORCH_MAX_CONTENT ||
            cost == 1 || used + cost > budget)
            break;
        used += cost;
        keep++;
    }
    while (json_array_size(history) > keep)
        json_array_remove(history, 0);
}
