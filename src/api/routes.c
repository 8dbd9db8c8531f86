#include "api/routes.h"

/* POST /__debug/echo: exercises body validation end to end in tests. */
static const struct meao_field echo_fields[] = {
    {"text", MEAO_F_STRING, true, 1, 1000},
    {"count", MEAO_F_INT, false, 0, 100},
    {"nested", MEAO_F_ANY, false, 0, 0},
};
static const struct meao_schema echo_schema = {echo_fields, 3, false};

static const struct meao_field refresh_fields[] = {
    {"refreshToken", MEAO_F_STRING, true, 1, 256},
};
static const struct meao_schema refresh_schema = {refresh_fields, 1, false};

static const struct meao_field revoke_fields[] = {
    {"token", MEAO_F_STRING, false, 1, 256},
    {"deviceId", MEAO_F_STRING, false, 1, 64},
    {"all", MEAO_F_BOOL, false, 0, 0},
};
static const struct meao_schema revoke_schema = {revoke_fields, 3, false};

static const struct meao_field device_name_fields[] = {
    {"deviceName", MEAO_F_STRING, true, 1, 64},
};
static const struct meao_schema device_name_schema = {device_name_fields, 1, false};

static const struct meao_field code_fields[] = {
    {"pairingCode", MEAO_F_STRING, true, 1, 32},
};
static const struct meao_schema code_schema = {code_fields, 1, false};

static const struct meao_field complete_fields[] = {
    {"pairingCode", MEAO_F_STRING, false, 1, 32},
    {"deviceCode", MEAO_F_STRING, false, 1, 256},
    {"deviceName", MEAO_F_STRING, false, 1, 64},
};
static const struct meao_schema complete_schema = {complete_fields, 3, false};

/* sessions, messages, approvals (content and attachments are checked in
 * depth by their handlers: their shape is not one a flat schema can say) */
static const struct meao_field session_fields[] = {
    {"channel", MEAO_F_STRING, false, 1, 32},
    {"channelId", MEAO_F_STRING, false, 1, 32},
    {"workDir", MEAO_F_STRING, false, 1, 1024},
};
static const struct meao_schema session_schema = {session_fields, 3, false};

static const struct meao_field message_fields[] = {
    {"content", MEAO_F_ANY, true, 0, 0},
    {"attachments", MEAO_F_ARRAY, false, 0, 8},
};
static const struct meao_schema message_schema = {message_fields, 2, false};

static const struct meao_field approval_fields[] = {
    {"approved", MEAO_F_BOOL, true, 0, 0},
    {"trustSession", MEAO_F_BOOL, false, 0, 0},
};
static const struct meao_schema approval_schema = {approval_fields, 2, false};

#define ENV  MEAO_ROUTE_ENVELOPE
#define JSON (MEAO_ROUTE_ENVELOPE | MEAO_ROUTE_JSON_BODY)

const struct meao_route meao_routes[] = {
    /* probes: unversioned, no envelope on success */
    {"GET", "/health", meao_api_health, MEAO_AUTH_NONE, MEAO_RATE_NONE, NULL, 0},
    {"GET", "/ready", meao_api_ready, MEAO_AUTH_NONE, MEAO_RATE_NONE, NULL, 0},
    {"GET", "/health/detailed", meao_api_health_detailed, MEAO_AUTH_OWNER, MEAO_RATE_NONE, NULL, 0},
    /* metrics: access decided by the handler (metrics_allow, else an owner token) */
    {"GET", "/metrics", meao_api_metrics, MEAO_AUTH_NONE, MEAO_RATE_NONE, NULL, 0},
    /* identity */
    {"POST", "/api/v1/auth/refresh", meao_api_auth_refresh, MEAO_AUTH_NONE, MEAO_RATE_REST,
     &refresh_schema, JSON},
    {"POST", "/api/v1/auth/revoke", meao_api_auth_revoke, MEAO_AUTH_USER, MEAO_RATE_REST,
     &revoke_schema, JSON},
    {"GET", "/api/v1/auth/devices", meao_api_auth_devices, MEAO_AUTH_USER, MEAO_RATE_REST, NULL,
     ENV},
    {"GET", "/api/v1/auth/me", meao_api_auth_me, MEAO_AUTH_USER, MEAO_RATE_REST, NULL, ENV},
    {"POST", "/api/v1/auth/pair/codes", meao_api_pair_codes, MEAO_AUTH_OWNER, MEAO_RATE_REST,
     &device_name_schema, JSON},
    {"POST", "/api/v1/auth/pair/request", meao_api_pair_request, MEAO_AUTH_NONE, MEAO_RATE_PAIRING,
     &device_name_schema, JSON},
    {"POST", "/api/v1/auth/pair/approve", meao_api_pair_approve, MEAO_AUTH_OWNER, MEAO_RATE_REST,
     &code_schema, JSON},
    {"POST", "/api/v1/auth/pair/deny", meao_api_pair_deny, MEAO_AUTH_OWNER, MEAO_RATE_REST,
     &code_schema, JSON},
    /* rate class applied by the handler: only the short-code variant is limited per IP */
    {"POST", "/api/v1/auth/pair/complete", meao_api_pair_complete, MEAO_AUTH_NONE, MEAO_RATE_NONE,
     &complete_schema, JSON},
    /* sessions and messages (API.md "Sessions and messages") */
    {"POST", "/api/v1/sessions", meao_api_sessions_create, MEAO_AUTH_USER, MEAO_RATE_REST,
     &session_schema, JSON},
    {"GET", "/api/v1/sessions", meao_api_sessions_list, MEAO_AUTH_USER, MEAO_RATE_REST, NULL, ENV},
    {"GET", "/api/v1/sessions/:id", meao_api_sessions_get, MEAO_AUTH_USER, MEAO_RATE_REST, NULL,
     ENV},
    {"DELETE", "/api/v1/sessions/:id", meao_api_sessions_delete, MEAO_AUTH_USER, MEAO_RATE_REST,
     NULL, ENV},
    {"POST", "/api/v1/sessions/:id/messages", meao_api_messages_post, MEAO_AUTH_USER,
     MEAO_RATE_MESSAGES, &message_schema, JSON | MEAO_ROUTE_SLOW},
    {"GET", "/api/v1/sessions/:id/messages", meao_api_messages_list, MEAO_AUTH_USER, MEAO_RATE_REST,
     NULL, ENV},
    /* approvals and tools: short orchestrator calls (bounded by
     * MEAO_ORCH_SHORT_MS), still off the event loop: a stalled orchestrator
     * must not stall every connection of a worker */
    {"GET", "/api/v1/approvals", meao_api_approvals_list, MEAO_AUTH_USER, MEAO_RATE_REST, NULL,
     ENV | MEAO_ROUTE_SLOW},
    {"POST", "/api/v1/approvals/:id", meao_api_approvals_answer, MEAO_AUTH_USER, MEAO_RATE_REST,
     &approval_schema, JSON | MEAO_ROUTE_SLOW},
    {"GET", "/api/v1/tools", meao_api_tools_list, MEAO_AUTH_USER, MEAO_RATE_REST, NULL,
     ENV | MEAO_ROUTE_SLOW},
    {"GET", "/api/v1/tools/:name", meao_api_tools_get, MEAO_AUTH_USER, MEAO_RATE_REST, NULL,
     ENV | MEAO_ROUTE_SLOW},
    {"GET", "/api/v1/config", meao_api_config_get, MEAO_AUTH_USER, MEAO_RATE_REST, NULL, ENV},
    {"PATCH", "/api/v1/config", meao_api_config_patch, MEAO_AUTH_OWNER, MEAO_RATE_REST, NULL, JSON},
    /* Telegram's webhook: its own secret header instead of a bearer token,
     * checked before the body is parsed (the handler parses it) */
    {"POST", "/telegram/webhook", meao_api_telegram_webhook, MEAO_AUTH_NONE, MEAO_RATE_NONE, NULL,
     0},
    /* test-only, off unless debug_routes = true */
    {"GET", "/__debug/sleep", meao_api_debug_sleep, MEAO_AUTH_NONE, MEAO_RATE_NONE, NULL,
     MEAO_ROUTE_SLOW},
    {"POST", "/__debug/echo", meao_api_debug_echo, MEAO_AUTH_NONE, MEAO_RATE_NONE, &echo_schema,
     ENV | MEAO_ROUTE_JSON_BODY},
};

const size_t meao_routes_count = sizeof meao_routes / sizeof meao_routes[0];
