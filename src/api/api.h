/* Helpers shared by the handlers of sessions, messages, approvals, tools and
 * config: database access, query parameters, session ownership and short
 * orchestrator calls, each answering the client-safe error itself. */
#ifndef MEAO_API_API_H
#define MEAO_API_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "http/app.h"
#include "proto/orch.h"
#include "store/sessions.h"

#define MEAO_API_LIMIT_MAX 200  /* `limit` of every list */
#define MEAO_ORCH_SHORT_MS 5000 /* a short orchestrator call, start to answer */

/* The database, or MEAO_E_DB (503) for the caller to return. */
enum meao_err meao_api_need_db(struct meao_app *app, struct meao_resp *resp, struct meao_db **db);

/* A query parameter: 0 absent, 1 present (percent-decoded into out), -1
 * present but malformed or longer than outlen - 1. */
int meao_api_query(const struct meao_req *req, const char *key, char *out, size_t outlen);

/* `limit`: absent → def; else a plain decimal 1..200, or INVALID_PARAMETER. */
enum meao_err meao_api_limit(const struct meao_req *req, struct meao_resp *resp, int def, int *out);

/* The caller's session named by path parameter 0: NOT_FOUND (404) when the
 * id is malformed, unknown or someone else's — the same answer for all three. */
enum meao_err meao_api_own_session(struct meao_app *app, struct meao_req *req,
                                   struct meao_resp *resp, struct meao_db **db,
                                   struct meao_session *out);

/* The caller's user id as the orchestrator's userId (decimal text). */
void meao_api_user_id(const struct meao_req *req, char out[24]);

/* Send a short call (borrowed msg) to the orchestrator and read its one
 * answer (caller owns *answer; *type is its type, possibly MEAO_ORCH_ERROR).
 * An unreachable or silent orchestrator is SERVICE_UNAVAILABLE / GATEWAY_TIMEOUT. */
enum meao_err meao_api_orch_call(struct meao_app *app, struct meao_resp *resp, const json_t *msg,
                                 json_t **answer, enum meao_orch_type *type);

/* Tools whose policy live (the configuration with the PATCH /api/v1/config
 * overrides applied) changed from base (the file's): the turn's
 * `toolPolicies` (PROTOCOL.md), so a change applies without restarting the
 * orchestrator. A new object (caller owns), or NULL when nothing differs. */
json_t *meao_api_tool_policies(const struct meao_config *live, const struct meao_config *base);

/* Copy an orchestrator's message into out as one printable line of at most
 * outlen - 1 bytes (control characters become spaces). */
void meao_api_safe_line(const char *in, char *out, size_t outlen);

#endif
