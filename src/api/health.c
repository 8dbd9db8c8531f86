#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "api/routes.h"
#include "core/clock.h"
#include "orch/client.h"
#include "store/db.h"

/* /ready must answer quickly even when the database is locked. */
#define READY_DB_TIMEOUT_MS   250
#define READY_ORCH_TIMEOUT_MS 500

enum meao_err meao_api_health(struct meao_app *app, struct meao_req *req, struct meao_resp *resp)
{
    int64_t now = meao_now_ms(app->clock);
    int64_t sec = now / 1000;
    (void)req;
    /* Liveness: no database, no orchestrator. Rendered once per second. */
    if (sec != app->health_sec) {
        char ts[32];
        int n = snprintf(app->health_body, sizeof app->health_body,
                         "{\"status\":\"ok\",\"timestamp\":\"%s\"}",
                         meao_iso8601(sec * 1000, ts, sizeof ts));
        app->health_len = n > 0 && (size_t)n < sizeof app->health_body ? (size_t)n : 0;
        app->health_sec = sec;
    }
    meao_buf_reset(&resp->body);
    if (!meao_buf_append(&resp->body, app->health_body, app->health_len))
        return MEAO_E_NOMEM;
    resp->status = 200;
    resp->content_type = "application/json";
    meao_resp_header(resp, "Cache-Control", "no-store");
    return MEAO_OK;
}

/* Run the readiness checks; returns true when everything is ok. */
static bool run_checks(struct meao_app *app, json_t *checks)
{
    struct meao_db *db = meao_app_db(app);
    bool ok = true;
    enum meao_err e = db ? meao_db_check_writable(db, READY_DB_TIMEOUT_MS) : MEAO_E_DB;

    if (e != MEAO_OK) {
        ok = false;
        json_object_set_new(checks, "database", json_string(db ? "unavailable" : "unreachable"));
        /* a connection that failed may be stale (file replaced, I/O error): reopen next time */
        if (db && e != MEAO_E_DB)
            meao_app_db_reset(app);
    } else {
        json_object_set_new(checks, "database", json_string("ok"));
    }
    /* the orchestrator answers a ping on a fresh connection (PROTOCOL.md "Liveness") */
    if (meao_orch_ping(app->cfg->orchestrator_socket, app->clock, READY_ORCH_TIMEOUT_MS) !=
        MEAO_OK) {
        ok = false;
        json_object_set_new(checks, "orchestrator", json_string("unavailable"));
    } else {
        json_object_set_new(checks, "orchestrator", json_string("ok"));
    }
    return ok;
}

enum meao_err meao_api_ready(struct meao_app *app, struct meao_req *req, struct meao_resp *resp)
{
    json_t *checks = json_object();
    bool ok;
    (void)req;
    if (checks == NULL)
        return MEAO_E_NOMEM;
    ok = run_checks(app, checks);
    meao_resp_header(resp, "Cache-Control", "no-store");
    return meao_resp_json(resp, ok ? 200 : 503,
                          json_pack("{s:b, s:o}", "ready", ok ? 1 : 0, "checks", checks));
}

static long rss_kib(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return -1;
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
        rss = -1;
    fclose(f);
    return rss < 0 ? -1 : rss * (sysconf(_SC_PAGESIZE) / 1024);
}

enum meao_err meao_api_health_detailed(struct meao_app *app, struct meao_req *req,
                                       struct meao_resp *resp)
{
    char ts[32];
    int64_t now = meao_now_ms(app->clock);
    json_t *checks = json_object();
    bool ok;
    (void)req;
    if (checks == NULL)
        return MEAO_E_NOMEM;
    ok = run_checks(app, checks);
    meao_resp_header(resp, "Cache-Control", "no-store");
    return meao_resp_json(
        resp, ok ? 200 : 503,
        json_pack("{s:s, s:s, s:s, s:s, s:I, s:{s:I}, s:i, s:o}", "status", ok ? "ok" : "degraded",
                  "timestamp", meao_iso8601(now, ts, sizeof ts), "version", MEAO_VERSION, "program",
                  app->program ? app->program : "meao", "uptimeSeconds",
                  (json_int_t)((now - app->started_ms) / 1000), "memory", "rssKiB",
                  (json_int_t)rss_kib(), "pid", (int)getpid(), "checks", checks));
}
