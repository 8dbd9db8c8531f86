#include "api/routes.h"

/* POST /__debug/echo: exercises body validation end to end in tests. */
static const struct meao_field echo_fields[] = {
    {"text", MEAO_F_STRING, true, 1, 1000},
    {"count", MEAO_F_INT, false, 0, 100},
    {"nested", MEAO_F_ANY, false, 0, 0},
};
static const struct meao_schema echo_schema = {echo_fields, 3, false};

#define ENV MEAO_ROUTE_ENVELOPE

const struct meao_route meao_routes[] = {
    /* probes: unversioned, no envelope on success */
    {"GET", "/health", meao_api_health, MEAO_AUTH_NONE, MEAO_RATE_NONE, NULL, 0},
    {"GET", "/ready", meao_api_ready, MEAO_AUTH_NONE, MEAO_RATE_NONE, NULL, 0},
    {"GET", "/health/detailed", meao_api_health_detailed, MEAO_AUTH_OWNER, MEAO_RATE_NONE, NULL, 0},
    /* test-only, off unless debug_routes = true */
    {"GET", "/__debug/sleep", meao_api_debug_sleep, MEAO_AUTH_NONE, MEAO_RATE_NONE, NULL,
     MEAO_ROUTE_SLOW},
    {"POST", "/__debug/echo", meao_api_debug_echo, MEAO_AUTH_NONE, MEAO_RATE_NONE, &echo_schema,
     ENV | MEAO_ROUTE_JSON_BODY},
};

const size_t meao_routes_count = sizeof meao_routes / sizeof meao_routes[0];
