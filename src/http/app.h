/* One application instance per worker (process or thread): configuration,
 * clock, its own database connection and prepared statements. */
#ifndef MEAO_HTTP_APP_H
#define MEAO_HTTP_APP_H

#include <stdint.h>

#include "auth/secrets.h"
#include "core/clock.h"
#include "core/config.h"
#include "http/http.h"
#include "http/router.h"

struct meao_db;
struct meao_rl;

struct meao_app {
    /* The configuration in effect: base_cfg, or live_cfg when the settings
     * table overrides some keys (PATCH /api/v1/config; store/settings.h). */
    const struct meao_config *cfg;
    const struct meao_config *base_cfg; /* borrowed: file + environment */
    struct meao_config live_cfg;        /* shallow: never meao_config_free() it */
    int64_t settings_version;           /* applied; -1 before the first read */
    int64_t settings_check_mono_ms;     /* next time the version is compared */
    bool log_level_overridden;          /* live_cfg set the process's log level */
    const struct meao_clock *clock;     /* borrowed */
    struct meao_db *db;                 /* NULL until opened; reopened lazily */
    bool batch;                         /* between batch_begin and batch_end */
    bool batch_lost;                    /* the db was dropped mid-batch */
    int64_t db_retry_mono_ms;           /* next time a failed open may be retried */
    int64_t started_ms;                 /* wall clock at start, for uptime */
    struct meao_secrets secrets;        /* derived keys, loaded lazily */
    bool secrets_loaded;
    int64_t secrets_retry_mono_ms;
    struct meao_rl *rl; /* shared rate-limit table, attached lazily */
    int64_t rl_retry_mono_ms;
    const char *program; /* for /health/detailed */
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

/* Make this process bump the shared revocation counter (auth/ratelimit.h)
 * whenever the store revokes tokens (store/db.h hook), so open WebSocket
 * connections re-check their token at once. meao_app_init() calls it; tools
 * that revoke without an app (meaoctl) call it themselves. The first path
 * given wins. */
void meao_app_revocation_hook_install(const char *shm_path);

/* The database connection, opening it when needed; NULL when unavailable. */
struct meao_db *meao_app_db(struct meao_app *app);

/* The shared rate-limit table (cfg ratelimit_shm), attached when needed
 * (after fork, like the database); NULL when unavailable. */
struct meao_rl *meao_app_rl(struct meao_app *app);

/* The server secrets, loading them when needed; NULL when unavailable. */
const struct meao_secrets *meao_app_secrets(struct meao_app *app);

/* Re-apply the settings table's overrides to app->cfg when their version
 * moved. Without force it looks at most every MEAO_SETTINGS_CHECK_MS (one
 * small read); the pipeline calls it before every authenticated or rate-
 * limited request, so a PATCH served by any process applies everywhere
 * within about a second. Never fails: without a database nothing changes. */
void meao_app_settings_refresh(struct meao_app *app, bool force);

/* Token lifetimes from the configuration. */
struct meao_token_ttl;
void meao_app_token_ttl(const struct meao_app *app, struct meao_token_ttl *out);

/* Apply rate class rc to req (key: the user when authenticated, else the
 * client IP), add the rate-limit headers, and answer RATE_LIMITED (with
 * Retry-After) when over. Routes name their class in the table; handlers
 * call this directly when the class depends on the body. */
enum meao_err meao_app_rate_limit(struct meao_app *app, struct meao_req *req,
                                  struct meao_resp *resp, enum meao_rate_class rc);

/* Periodic work an adapter runs between requests (at most every second or
 * so): today the rate-limit table's write-behind to SQLite, done by whichever
 * process finds it due. Cheap when nothing is due. */
#define MEAO_RL_SAVE_EVERY_MS 5000
enum meao_err meao_app_housekeeping(struct meao_app *app);

/* The client address: REMOTE_ADDR as nginx saw it, or the last
 * X-Forwarded-For hop when trust_forwarded_for is set. Borrowed. */
const char *meao_app_client_ip(const struct meao_app *app, const struct meao_req *req);

/* Drop the connection (after an I/O error) so the next use reopens it. */
void meao_app_db_reset(struct meao_app *app);

/* Group commit for an adapter that runs many requests in a row on one thread
 * (the epoll worker). Between batch_begin and batch_end the requests' write
 * transactions join one transaction (meao_db_group_begin), committed by
 * batch_end. While meao_app_batch_pending() is true after a request, its
 * answer must be held until batch_end: MEAO_OK from batch_end means every
 * held answer may go out; an error means none of the batch's writes was
 * stored and every held answer must be replaced by an error. Cheap when the
 * batch writes nothing: nothing is opened until a handler writes. */
void meao_app_batch_begin(struct meao_app *app);
bool meao_app_batch_pending(const struct meao_app *app);
/* Writes released into the open batch so far (to bound a batch's size). */
unsigned meao_app_batch_joined(const struct meao_app *app);
enum meao_err meao_app_batch_end(struct meao_app *app);

/* Run one request through the router: request id, route match, body limits
 * and parsing, auth, rate limit, handler, error envelope, access log.
 * Always produces a complete response. */
void meao_app_handle(struct meao_app *app, struct meao_req *req, struct meao_resp *resp);

/* First phase of meao_app_handle(), exposed so an adapter can look at the
 * route before deciding where to run the request: picks the request id,
 * splits the path and matches the route table (once; later calls return at
 * once). Never fails: a miss is remembered and answered by meao_app_handle(). */
void meao_app_route(struct meao_req *req);

/* True when the request's route is flagged MEAO_ROUTE_SLOW (it may block on
 * the orchestrator): adapters run such requests off their event loop. */
bool meao_app_route_is_slow(struct meao_req *req);

/* Library-wide one-time initialisation (libsodium, jansson hashing seed).
 * Returns 0 or -1. Safe to call more than once. */
int meao_lib_init(void);

#endif
