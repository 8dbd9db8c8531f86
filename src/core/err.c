#include "core/err.h"

#include <stddef.h>

static const struct meao_err_info infos[MEAO_E_COUNT_] = {
    [MEAO_OK] = {200, "OK", "ok", false},
    [MEAO_E_AUTH_REQUIRED] = {401, "AUTH_REQUIRED", "Authentication required", false},
    [MEAO_E_AUTH_INVALID_TOKEN] = {401, "AUTH_INVALID_TOKEN", "Invalid or expired token", false},
    [MEAO_E_AUTH_INSUFFICIENT_SCOPE] = {403, "AUTH_INSUFFICIENT_SCOPE",
                                        "Insufficient privileges for this operation", false},
    [MEAO_E_FORBIDDEN] = {403, "FORBIDDEN", "Forbidden", false},
    [MEAO_E_NOT_FOUND] = {404, "NOT_FOUND", "Not found", false},
    [MEAO_E_METHOD_NOT_ALLOWED] = {405, "METHOD_NOT_ALLOWED", "Method not allowed", false},
    [MEAO_E_CONFLICT] = {409, "CONFLICT", "Conflict with the current state", true},
    [MEAO_E_PAYLOAD_TOO_LARGE] = {413, "PAYLOAD_TOO_LARGE", "Request body too large", false},
    [MEAO_E_UNSUPPORTED_MEDIA_TYPE] = {415, "UNSUPPORTED_MEDIA_TYPE",
                                       "Content-Type must be application/json", false},
    [MEAO_E_INVALID_REQUEST] = {400, "INVALID_REQUEST", "Invalid request", false},
    [MEAO_E_INVALID_PARAMETER] = {400, "INVALID_PARAMETER", "Invalid parameter", false},
    [MEAO_E_RATE_LIMITED] = {429, "RATE_LIMITED", "Rate limit exceeded", true},
    [MEAO_E_INTERNAL] = {500, "INTERNAL_ERROR", "Internal error", false},
    [MEAO_E_NOMEM] = {500, "INTERNAL_ERROR", "Internal error", true},
    [MEAO_E_IO] = {500, "INTERNAL_ERROR", "Internal error", true},
    [MEAO_E_DB] = {503, "SERVICE_UNAVAILABLE", "Database unavailable", true},
    [MEAO_E_UNAVAILABLE] = {503, "SERVICE_UNAVAILABLE", "Service unavailable", true},
    [MEAO_E_PROVIDER] = {502, "PROVIDER_ERROR", "Model provider error", true},
    [MEAO_E_TIMEOUT] = {504, "GATEWAY_TIMEOUT", "Timed out", true},
    [MEAO_E_CANCELLED] = {409, "CANCELLED", "Cancelled", false},
    [MEAO_E_PAIR_PENDING] = {400, "authorization_pending", "The pairing has not been approved yet",
                             true},
    [MEAO_E_PAIR_SLOW_DOWN] = {400, "slow_down", "Polling too fast; wait the interval", true},
    [MEAO_E_PAIR_EXPIRED] = {400, "expired", "The pairing request expired", false},
    [MEAO_E_PAIR_DENIED] = {400, "denied", "The pairing request was denied", false},
    [MEAO_E_PAIR_INVALID_CODE] = {400, "invalid_code", "Invalid or expired pairing code", false},
};

const struct meao_err_info *meao_err_info(enum meao_err e)
{
    if ((int)e < 0 || e >= MEAO_E_COUNT_ || infos[e].code == NULL)
        return &infos[MEAO_E_INTERNAL];
    return &infos[e];
}

const char *meao_strerror(enum meao_err e)
{
    return meao_err_info(e)->message;
}

const char *meao_http_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status < 300 ? "OK" : status < 500 ? "Bad Request" : "Internal Server Error";
    }
}
