/* GET /metrics: Prometheus text exposition format 0.0.4 (core/metrics.h for
 * the counters). Served to clients whose address is in metrics_allow
 * (default loopback only) or that present an owner token; anyone else gets
 * 403 — it names routes and volumes, which is nobody else's business. */
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "api/routes.h"
#include "auth/authn.h"
#include "auth/ratelimit.h"
#include "core/metrics.h"
#include "core/netmatch.h"
#include "store/db.h"

static const char *const rate_name[MEAO_METRICS_NRATE] = {"none", "rest", "messages", "pairing"};
static const char *const orch_name[MEAO_METRICS_NORCH] = {"unavailable", "timeout", "provider"};

static uint64_t load(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* Route patterns and methods are ours (no quote, backslash or newline), so
 * they go into label values as they are. */
static void route_labels(size_t i, size_t n, const char **method, const char **route)
{
    if (i + 1 < n && i < meao_routes_count) {
        *method = meao_routes[i].method;
        *route = meao_routes[i].pattern;
    } else {
        *method = "";
        *route = "unmatched";
    }
}

static void help(struct meao_buf *b, const char *name, const char *type, const char *text)
{
    meao_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

static void render_requests(struct meao_buf *b, const struct meao_metrics_block *m)
{
    const char *method, *route;
    help(b, "meao_http_requests_total", "counter",
         "Requests answered by meao-fcgi, by route and status (all workers).");
    for (size_t i = 0; i < m->nroutes; i++) {
        route_labels(i, m->nroutes, &method, &route);
        for (size_t s = 0; s < MEAO_METRICS_NSTATUS; s++) {
            uint64_t v = load(&m->route[i].status[s]);
            char code[16];
            if (v == 0)
                continue;
            if (meao_metrics_status_code[s])
                snprintf(code, sizeof code, "%d", meao_metrics_status_code[s]);
            else
                strcpy(code, "other");
            meao_buf_printf(b,
                            "meao_http_requests_total{method=\"%s\",route=\"%s\",status=\"%s\"} "
                            "%llu\n",
                            method, route, code, (unsigned long long)v);
        }
    }
    help(b, "meao_http_request_duration_seconds", "histogram",
         "Time from the request reaching the responder to its answer, by route.");
    for (size_t i = 0; i < m->nroutes; i++) {
        const struct meao_metrics_route *r = &m->route[i];
        uint64_t count = load(&r->count), cum = 0, sum = load(&r->sum_us);
        if (count == 0)
            continue;
        route_labels(i, m->nroutes, &method, &route);
        for (size_t k = 0; k < MEAO_METRICS_NBUCKETS; k++) {
            cum += load(&r->bucket[k]);
            meao_buf_printf(b,
                            "meao_http_request_duration_seconds_bucket{method=\"%s\",route=\"%s\","
                            "le=\"%g\"} %llu\n",
                            method, route, (double)meao_metrics_bucket_us[k] / 1e6,
                            (unsigned long long)cum);
        }
        /* counters move while we read: keep the histogram self-consistent */
        if (count < cum)
            count = cum;
        meao_buf_printf(b,
                        "meao_http_request_duration_seconds_bucket{method=\"%s\",route=\"%s\","
                        "le=\"+Inf\"} %llu\n"
                        "meao_http_request_duration_seconds_sum{method=\"%s\",route=\"%s\"} %.6f\n"
                        "meao_http_request_duration_seconds_count{method=\"%s\",route=\"%s\"} "
                        "%llu\n",
                        method, route, (unsigned long long)count, method, route, (double)sum / 1e6,
                        method, route, (unsigned long long)count);
    }
}

/* Turns holding a session lease now: REST and WebSocket turns alike. */
static int64_t turns_in_flight(struct meao_app *app)
{
    static const char sql[] = "SELECT count(*) FROM sessions"
                              " WHERE lease_token IS NOT NULL AND lease_until_ms > ?1";
    struct meao_db *db = meao_app_db(app);
    sqlite3_stmt *st = db ? meao_db_stmt(db, sql) : NULL;
    int64_t n = -1;
    if (st == NULL)
        return -1;
    sqlite3_bind_int64(st, 1, meao_now_ms(app->clock));
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return n;
}

static enum meao_err allowed(struct meao_app *app, struct meao_req *req, struct meao_resp *resp)
{
    if (meao_net_list_match(app->cfg->metrics_allow, meao_app_client_ip(app, req)))
        return MEAO_OK;
    if (req->authorization && req->authorization[0])
        return meao_authenticate(app, req, resp, MEAO_AUTH_OWNER);
    return meao_fail(resp, MEAO_E_FORBIDDEN, "Metrics are not available to this client");
}

enum meao_err meao_api_metrics(struct meao_app *app, struct meao_req *req, struct meao_resp *resp)
{
    const struct meao_metrics_block *m = meao_metrics_block();
    struct meao_buf *b = &resp->body;
    struct meao_rl *rl;
    int64_t turns;
    enum meao_err e = allowed(app, req, resp);

    if (e != MEAO_OK)
        return e;
    meao_buf_reset(b);
    if (m) {
        render_requests(b, m);
        help(b, "meao_rate_limited_total", "counter",
             "Requests refused by the rate limiter (429), by rate class.");
        for (int i = 1; i < MEAO_METRICS_NRATE; i++)
            meao_buf_printf(b, "meao_rate_limited_total{class=\"%s\"} %llu\n", rate_name[i],
                            (unsigned long long)load(&m->rate_limited[i]));
        help(b, "meao_orchestrator_errors_total", "counter",
             "Turns and orchestrator calls that failed, by kind (as seen by meao-fcgi).");
        for (int i = 0; i < MEAO_METRICS_NORCH; i++)
            meao_buf_printf(b, "meao_orchestrator_errors_total{kind=\"%s\"} %llu\n", orch_name[i],
                            (unsigned long long)load(&m->orch_errors[i]));
        help(b, "meao_start_time_seconds", "gauge", "When the responder's master started.");
        meao_buf_printf(b, "meao_start_time_seconds %.3f\n", (double)m->started_ms / 1000.0);
    }
    rl = meao_app_rl(app);
    if (rl) {
        help(b, "meao_websockets_open", "gauge",
             "Open WebSocket connections (live entries of the shared connection table).");
        meao_buf_printf(b, "meao_websockets_open %lld\n", (long long)meao_rl_conn_count(rl));
    }
    turns = turns_in_flight(app);
    if (turns >= 0) {
        help(b, "meao_turns_in_flight", "gauge",
             "Message turns running now (sessions holding a turn lease), REST and WebSocket.");
        meao_buf_printf(b, "meao_turns_in_flight %lld\n", (long long)turns);
    }
    help(b, "meao_up", "gauge", "1: the responder answered this scrape.");
    meao_buf_printf(b, "meao_up 1\n");
    if (b->p == NULL)
        return MEAO_E_NOMEM;
    resp->status = 200;
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
    meao_resp_header(resp, "Cache-Control", "no-store");
    return MEAO_OK;
}
