/* Request authentication, called by the router for routes whose auth level
 * is not NONE. */
#ifndef MEAO_AUTH_AUTHN_H
#define MEAO_AUTH_AUTHN_H

#include "http/app.h"

/* Resolve an access token (borrowed; may be NULL or garbled) into *who:
 * MEAO_OK, AUTH_INVALID_TOKEN (malformed, unknown, expired, revoked),
 * UNAVAILABLE (no database or secrets), or a database error. The one check
 * behind meao_authenticate() and the WebSocket program. */
enum meao_err meao_token_check(struct meao_app *app, const char *token, struct meao_principal *who);

/* Resolve the bearer token of req into req->who and check it meets level.
 * AUTH_REQUIRED without credentials, AUTH_INVALID_TOKEN for a bad, expired or
 * revoked token, AUTH_INSUFFICIENT_SCOPE when the role is too low. */
enum meao_err meao_authenticate(struct meao_app *app, struct meao_req *req, struct meao_resp *resp,
                                enum meao_auth_level level);

#endif
