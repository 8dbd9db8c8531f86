/* One error enum for the whole library, mapped to HTTP status and the API.md
 * envelope code in exactly one place (err.c). */
#ifndef MEAO_CORE_ERR_H
#define MEAO_CORE_ERR_H

#include <stdbool.h>

enum meao_err {
    MEAO_OK = 0,
    MEAO_E_AUTH_REQUIRED,
    MEAO_E_AUTH_INVALID_TOKEN,
    MEAO_E_AUTH_INSUFFICIENT_SCOPE,
    MEAO_E_FORBIDDEN,
    MEAO_E_NOT_FOUND,
    MEAO_E_METHOD_NOT_ALLOWED,
    MEAO_E_CONFLICT,
    MEAO_E_PAYLOAD_TOO_LARGE,
    MEAO_E_UNSUPPORTED_MEDIA_TYPE,
    MEAO_E_INVALID_REQUEST,
    MEAO_E_INVALID_PARAMETER,
    MEAO_E_RATE_LIMITED,
    MEAO_E_INTERNAL,
    MEAO_E_NOMEM,
    MEAO_E_IO,
    MEAO_E_DB,
    MEAO_E_UNAVAILABLE,
    MEAO_E_PROVIDER,
    MEAO_E_TIMEOUT,
    MEAO_E_CANCELLED,
    /* device pairing answers (API.md "Device pairing", RFC 8628 names) */
    MEAO_E_PAIR_PENDING,
    MEAO_E_PAIR_SLOW_DOWN,
    MEAO_E_PAIR_EXPIRED,
    MEAO_E_PAIR_DENIED,
    MEAO_E_PAIR_INVALID_CODE,
    MEAO_E_COUNT_
};

struct meao_err_info {
    int status;          /* HTTP status */
    const char *code;    /* envelope error code, e.g. "NOT_FOUND" */
    const char *message; /* default one-line message, no secrets */
    bool retryable;
};

/* Static description of an error; never NULL (unknown values map to INTERNAL). */
const struct meao_err_info *meao_err_info(enum meao_err e);

/* strerror-style short text for logs. */
const char *meao_strerror(enum meao_err e);

/* HTTP reason phrase for a status code ("OK", "Not Found", ...). */
const char *meao_http_reason(int status);

#endif
