/* One application instance per worker (process or thread): configuration,
 * clock, its own database connection and prepared statements. */
#ifndef MEAO_HTTP_APP_H
#define MEAO_HTTP_APP_H

#include <stdint.h>

#include "core/clock.h"
#include "core/config.h"
#include "http/http.h"
#include "http/router.h"

struct meao_db;

struct meao_app {
    const struct meao_config *cfg;  /* borrowed */
    const struct meao_clock *clock; /* borrowed */
    struct meao_db *db;             /* NULL until opened; reopened lazily */
    int64_t db_retry_mono_ms;       /* next time a failed open may be retried */
    int64_t started_ms;             /* wall clock at start, for uptime */
    const char *program;            /* for /health/detailed */
    /* /health body pre-rendered once per second: it is the hottest route. */
    int64_t health_sec;
    char health_body[96];
    size_t health_len;
};

/* Set up an app. The database is opened lazily (and reopened after a
 * failure), so a worker starts and answers /health even when SQLite can't. */
enum meao_err meao_app_init(struct meao_app *app, const struct meao_config *cfg,
                            const struct meao_clock *clock, const char *program);
void meao_app_fini(struct meao_app *app);

/* The database connection, opening it when needed; NULL when unavailable. */
struct meao_db *meao_app_db(struct meao_app *app);

/* Drop the connection (after an I/O error) so the next use reopens it. */
void meao_app_db_reset(struct meao_app *app);

/* Run one request through the router: request id, route match, body limits
 * and parsing, auth, rate limit, handler, error envelope, access log.
 * Always produces a complete response. */
void meao_app_handle(struct meao_app *app, struct meao_req *req, struct meao_resp *resp);

/* True when the matched route is flagged MEAO_ROUTE_SLOW (adapters may run
 * such requests off their event loop). Matches the path only; cheap. */
bool meao_app_route_is_slow(const struct meao_req *req);

/* Library-wide one-time initialisation (libsodium, jansson hashing seed).
 * Returns 0 or -1. Safe to call more than once. */
int meao_lib_init(void);

#endif
