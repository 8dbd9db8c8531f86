/* Transport-neutral HTTP request and response. Adapters (FastCGI, plain CGI,
 * the replay tool) fill a request from CGI/1.1-style parameters with
 * meao_req_set_param() and the body, hand it to meao_app_handle(), and write
 * the response produced by meao_resp_serialize_cgi(). Nothing here knows
 * which transport is in use. */
#ifndef MEAO_HTTP_HTTP_H
#define MEAO_HTTP_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/ids.h"

#define MEAO_MAX_PATH_PARAMS  4
#define MEAO_MAX_RESP_HEADERS 16

enum meao_role { MEAO_ROLE_NONE = 0, MEAO_ROLE_USER, MEAO_ROLE_OWNER };

/* Who made the request, once the router has authenticated it. */
struct meao_principal {
    int64_t user_id; /* 0 when unauthenticated */
    enum meao_role role;
    int64_t token_id;
    int64_t device_id;
    char name[65]; /* the user's name, read with the token (MEAO_NAME_MAX + 1) */
};

struct meao_route;

struct meao_req {
    /* From the adapter; every string is owned by the request (copied: libfcgi
     * and friends reuse their buffers). NULL when the parameter was absent. */
    char *method;             /* REQUEST_METHOD */
    char *uri;                /* REQUEST_URI (path + "?" + query) */
    char *query;              /* QUERY_STRING */
    char *content_type;       /* CONTENT_TYPE */
    char *authorization;      /* HTTP_AUTHORIZATION — a secret: never logged */
    char *x_request_id;       /* HTTP_X_REQUEST_ID as sent by the client */
    char *nginx_request_id;   /* MEAO_REQUEST_ID: nginx's $request_id */
    char *remote_addr;        /* REMOTE_ADDR */
    char *forwarded_for;      /* HTTP_X_FORWARDED_FOR */
    char *user_agent;         /* HTTP_USER_AGENT (logged truncated) */
    char *telegram_secret;    /* HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN — a secret: never logged */
    long long content_length; /* -1 when absent or empty */

    /* Body: set by the adapter with meao_req_set_body(). When the declared
     * length exceeds the limit the adapter may set body_too_large instead of
     * buffering it; the router then answers 413. */
    char *body;
    size_t body_len;
    bool body_too_large;

    /* Filled by the router (meao_app_route(), once per request). */
    bool routed;
    enum meao_err route_err;                  /* NOT_FOUND / METHOD_NOT_ALLOWED / INVALID_REQUEST */
    char allow[64];                           /* for 405 */
    char path[1024];                          /* decoded-free raw path, no query */
    char request_id[MEAO_REQUEST_ID_MAX + 1]; /* kept or generated */
    const struct meao_route *route;
    const char *params[MEAO_MAX_PATH_PARAMS]; /* path params, point into path_buf */
    size_t nparams;
    char path_buf[1024];
    json_t *json; /* parsed, validated body (NULL when the route takes none) */
    struct meao_principal who;
    int64_t start_mono_ms;

    /* Set from the adapter's thread while a slow request runs elsewhere, when
     * the client went away (nginx closed the connection or aborted the
     * request). Atomic: use meao_req_mark_client_gone() and
     * meao_req_client_gone(). */
    int client_gone;
};

struct meao_resp_header {
    char name[40];
    char value[256];
};

struct meao_resp {
    int status;
    const char *content_type; /* static string; default application/json */
    bool omit_body;           /* HEAD: headers (incl. Content-Length) only */
    bool no_store;            /* carries a credential: Cache-Control: no-store */
    char error_message[201];  /* set by meao_fail(); shown instead of the default */
    int64_t retry_after_s;    /* > 0: Retry-After + retryAfter on the error */
    struct meao_resp_header headers[MEAO_MAX_RESP_HEADERS];
    size_t nheaders;
    struct meao_buf body;
};

/* Zero a request (content_length = -1). */
void meao_req_init(struct meao_req *req);
/* Free everything the request owns; req may be reused after meao_req_init(). */
void meao_req_free(struct meao_req *req);

/* Move src into dst (which must not own anything), fixing the pointers the
 * request keeps into itself (path params); src is left initialised (empty).
 * A plain struct copy would leave dst's params pointing into src. */
void meao_req_move(struct meao_req *dst, struct meao_req *src);

/* Record one CGI parameter (name=value). Unknown names are ignored, so an
 * adapter may pass everything it gets. Returns false on allocation failure. */
bool meao_req_set_param(struct meao_req *req, const char *name, size_t name_len, const char *value,
                        size_t value_len);

/* Take ownership of a malloc'd body of len bytes (NUL-terminated by caller
 * at body[len]). */
void meao_req_take_body(struct meao_req *req, char *body, size_t len);

/* The client went away: a handler still running may stop early (an
 * orchestrator turn is cancelled). Safe from any thread. */
void meao_req_mark_client_gone(struct meao_req *req);
bool meao_req_client_gone(const struct meao_req *req);

/* Path parameter i of the matched route (e.g. ":id"), or NULL. */
const char *meao_req_param(const struct meao_req *req, size_t i);

/* Value of a query parameter (percent-decoded into out); false when absent
 * or malformed / too long. */
bool meao_req_query(const struct meao_req *req, const char *key, char *out, size_t outlen);

void meao_resp_init(struct meao_resp *resp);
void meao_resp_free(struct meao_resp *resp);
void meao_resp_reset(struct meao_resp *resp);

/* Add a header (value formatted; silently truncated to fit). */
void meao_resp_header(struct meao_resp *resp, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Set status and a raw JSON body (not enveloped, for the probes). Steals v. */
enum meao_err meao_resp_json(struct meao_resp *resp, int status, json_t *v);

/* Success envelope {"requestId","timestamp","success":true,"data":data}.
 * Steals data (NULL → {}). A 204 gets no body. */
enum meao_err meao_resp_ok(struct meao_resp *resp, const struct meao_req *req, int status,
                           json_t *data, int64_t now_ms);

/* Error envelope for e; message NULL → the error's default message; details
 * may be NULL (stolen). retry_after_s > 0 adds retryAfter + Retry-After. */
void meao_resp_error(struct meao_resp *resp, const struct meao_req *req, enum meao_err e,
                     const char *message, json_t *details, int64_t retry_after_s, int64_t now_ms);

/* Record a client-safe one-line message for the error a handler is about to
 * return, and return e: `return meao_fail(resp, MEAO_E_NOT_FOUND, "Session not found");` */
enum meao_err meao_fail(struct meao_resp *resp, enum meao_err e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Serialize as a CGI response ("Status: 200 OK\r\n" headers "\r\n" body),
 * including X-Request-ID, into out (appended). False on allocation failure. */
bool meao_resp_serialize_cgi(const struct meao_resp *resp, const char *request_id,
                             struct meao_buf *out);

#endif
