#include "http/app.h"

#include <arpa/inet.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>

#include "api/routes.h"
#include "auth/authn.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "auth/ratelimit.h"
#include "store/db.h"
#include "store/identity.h"
#include "store/settings.h"

/* After a failed open, wait this long before trying again, so a broken
 * database does not turn every request into an open() storm. */
#define DB_RETRY_MS 1000

int meao_lib_init(void)
{
    return sodium_init() < 0 ? -1 : 0;
}

/* The revocation hook (store/db.h): one per process, whatever the number of
 * apps (the responder's pool threads have their own), with its own handle
 * on the shared table. Revocations are rare; a mutex is fine. */
static pthread_mutex_t revocation_mu = PTHREAD_MUTEX_INITIALIZER;
static struct meao_rl *revocation_rl;
static char revocation_path[4097];

static void bump_revocations(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&revocation_mu);
    if (revocation_rl == NULL && revocation_path[0] &&
        meao_rl_open(revocation_path, 0, NULL, 0, &revocation_rl) != MEAO_OK)
        meao_log(MEAO_LOG_WARN, NULL, "revocation_notify",
                 "cannot open %s: open WebSockets notice the revocation at their next check",
                 revocation_path);
    if (revocation_rl)
        meao_rl_revocations_bump(revocation_rl);
    pthread_mutex_unlock(&revocation_mu);
}

void meao_app_revocation_hook_install(const char *shm_path)
{
    pthread_mutex_lock(&revocation_mu);
    if (revocation_path[0] == '\0' && shm_path && shm_path[0])
        snprintf(revocation_path, sizeof revocation_path, "%s", shm_path);
    pthread_mutex_unlock(&revocation_mu);
    meao_db_set_revocation_hook(bump_revocations, NULL);
}

enum meao_err meao_app_init(struct meao_app *app, const struct meao_config *cfg,
                            const struct meao_clock *clock, const char *program)
{
    meao_app_revocation_hook_install(cfg->ratelimit_shm);
    memset(app, 0, sizeof *app);
    app->cfg = cfg;
    app->base_cfg = cfg;
    app->settings_version = -1;
    app->clock = clock;
    app->program = program;
    app->started_ms = meao_now_ms(clock);
    app->health_sec = -1;
    return MEAO_OK;
}

void meao_app_fini(struct meao_app *app)
{
    if (app == NULL)
        return;
    if (app->rl && app->db)
        (void)meao_rl_save(app->rl, app->db, meao_now_ms(app->clock)); /* final write-behind */
    meao_rl_close(app->rl);
    app->rl = NULL;
    meao_db_close(app->db);
    app->db = NULL;
    meao_secrets_wipe(&app->secrets);
}

const struct meao_secrets *meao_app_secrets(struct meao_app *app)
{
    char err[256];
    int64_t now;
    if (app->secrets_loaded)
        return &app->secrets;
    now = meao_mono_ms(app->clock);
    if (app->secrets_retry_mono_ms && now < app->secrets_retry_mono_ms)
        return NULL;
    if (meao_secrets_load(app->cfg->secret_file, &app->secrets, err, sizeof err) != MEAO_OK) {
        meao_log(MEAO_LOG_ERROR, NULL, "secrets", "%s", err);
        app->secrets_retry_mono_ms = now + DB_RETRY_MS;
        return NULL;
    }
    app->secrets_loaded = true;
    return &app->secrets;
}

void meao_app_settings_refresh(struct meao_app *app, bool force)
{
    int64_t now = meao_mono_ms(app->clock), v = 0;
    struct meao_db *db;
    json_t *ov = NULL;
    bool level;

    if (!force && now < app->settings_check_mono_ms)
        return;
    app->settings_check_mono_ms = now + MEAO_SETTINGS_CHECK_MS;
    db = meao_app_db(app);
    if (db == NULL || meao_settings_version(db, &v) != MEAO_OK || v == app->settings_version)
        return;
    if (meao_settings_load(db, &ov, &v) != MEAO_OK)
        return;
    if (json_object_size(ov) == 0) {
        app->cfg = app->base_cfg;
    } else {
        meao_settings_overlay(app->base_cfg, ov, &app->live_cfg);
        app->cfg = &app->live_cfg;
    }
    /* the log level is the process's: touch it only for an override (or to
     * undo one), so a level set otherwise (tests, tools) is left alone */
    level = json_object_get(ov, "log_level") != NULL;
    if (level || app->log_level_overridden)
        meao_log_set_level(app->cfg->log_level);
    app->log_level_overridden = level;
    app->settings_version = v;
    json_decref(ov);
}

void meao_app_token_ttl(const struct meao_app *app, struct meao_token_ttl *out)
{
    out->access_ms = app->cfg->access_token_ttl_s * 1000;
    out->refresh_ms = app->cfg->refresh_token_ttl_s * 1000;
}

const char *meao_app_client_ip(const struct meao_app *app, const struct meao_req *req)
{
    if (app->cfg->trust_forwarded_for && req->forwarded_for && req->forwarded_for[0]) {
        /* the hop our trusted proxy appended is the last one */
        const char *last = strrchr(req->forwarded_for, ',');
        unsigned char addr[sizeof(struct in6_addr)];
        last = last ? last + 1 : req->forwarded_for;
        while (*last == ' ')
            last++;
        /* only an address: anything else (a proxy that did not append, a
         * forged value) must not become a bucket of its own */
        if (inet_pton(AF_INET, last, addr) == 1 || inet_pton(AF_INET6, last, addr) == 1)
            return last;
    }
    return req->remote_addr ? req->remote_addr : "unknown";
}

struct meao_rl *meao_app_rl(struct meao_app *app)
{
    int64_t now;
    enum meao_err e;
    if (app->rl)
        return app->rl;
    now = meao_mono_ms(app->clock);
    if (app->rl_retry_mono_ms && now < app->rl_retry_mono_ms)
        return NULL;
    e = meao_rl_open(app->cfg->ratelimit_shm, 0, meao_app_db(app), meao_now_ms(app->clock),
                     &app->rl);
    if (e != MEAO_OK) {
        meao_log(MEAO_LOG_ERROR, NULL, "ratelimit_open", "cannot open %s: %s",
                 app->cfg->ratelimit_shm, meao_strerror(e));
        app->rl_retry_mono_ms = now + DB_RETRY_MS;
        return NULL;
    }
    return app->rl;
}

/* Rate-limit key of a client address: IPv4 as is, IPv6 by its /64 (one host
 * usually owns a whole /64; keying by full address would let it spread over
 * 2^64 buckets). */
static void ip_key(const char *ip, char *out, size_t outlen)
{
    struct in6_addr a6;
    if (strchr(ip, ':') && inet_pton(AF_INET6, ip, &a6) == 1) {
        char txt[INET6_ADDRSTRLEN];
        memset(a6.s6_addr + 8, 0, 8);
        inet_ntop(AF_INET6, &a6, txt, sizeof txt);
        snprintf(out, outlen, "ip:%s/64", txt);
        return;
    }
    snprintf(out, outlen, "ip:%.64s", ip);
}

enum meao_err meao_app_rate_limit(struct meao_app *app, struct meao_req *req,
                                  struct meao_resp *resp, enum meao_rate_class rc)
{
    struct meao_rl_class cls;
    struct meao_rl_result r;
    struct meao_rl *rl;
    char key[96];
    enum meao_err e;

    if (!app->cfg->ratelimit_enabled || rc == MEAO_RATE_NONE)
        return MEAO_OK;
    meao_rl_class_from_config(app->cfg, rc, &cls);
    if (cls.nlimits == 0)
        return MEAO_OK;
    /* per user after authentication, per client address before it */
    if (req->who.user_id)
        snprintf(key, sizeof key, "u:%lld", (long long)req->who.user_id);
    else
        ip_key(meao_app_client_ip(app, req), key, sizeof key);
    rl = meao_app_rl(app);
    if (rl == NULL)
        return meao_fail(resp, MEAO_E_UNAVAILABLE, "Rate limiter unavailable");
    e = meao_rl_check(rl, key, &cls, meao_now_ms(app->clock), &r);
    if (e != MEAO_OK) /* a limiter that cannot decide does not admit */
        return meao_fail(resp, MEAO_E_UNAVAILABLE, "Rate limiter unavailable");
    meao_rl_headers(resp, &cls, &r);
    if (!r.allowed) {
        meao_metrics_rate_limited((int)rc);
        resp->retry_after_s = meao_rl_retry_after_s(&r);
        return meao_fail(resp, MEAO_E_RATE_LIMITED, "Rate limit exceeded; retry in %lld s",
                         (long long)resp->retry_after_s);
    }
    return MEAO_OK;
}

enum meao_err meao_app_housekeeping(struct meao_app *app)
{
    int64_t now = meao_now_ms(app->clock);
    struct meao_db *db;
    if (app->db) /* an idle process picks up a new log level too */
        meao_app_settings_refresh(app, false);
    if (app->rl == NULL || !meao_rl_save_due(app->rl, now, MEAO_RL_SAVE_EVERY_MS))
        return MEAO_OK;
    db = meao_app_db(app);
    return db ? meao_rl_save(app->rl, db, now) : MEAO_E_DB;
}

struct meao_db *meao_app_db(struct meao_app *app)
{
    char err[256];
    int64_t now;
    if (app->db)
        return app->db;
    now = meao_mono_ms(app->clock);
    if (app->db_retry_mono_ms && now < app->db_retry_mono_ms)
        return NULL;
    if (meao_db_open(app->cfg->db_path, (int)app->cfg->db_busy_timeout_ms, MEAO_DB_WRITER_LOCK,
                     &app->db, err, sizeof err) != MEAO_OK) {
        meao_log(MEAO_LOG_ERROR, NULL, "db_open", "%s", err);
        app->db_retry_mono_ms = now + DB_RETRY_MS;
        return NULL;
    }
    app->db_retry_mono_ms = 0;
    if (app->batch)
        meao_db_group_begin(app->db);
    return app->db;
}

void meao_app_db_reset(struct meao_app *app)
{
    if (app->batch && app->db && meao_db_group_pending(app->db))
        app->batch_lost = true; /* closing rolls the batch's writes back */
    meao_db_close(app->db);
    app->db = NULL;
}

void meao_app_batch_begin(struct meao_app *app)
{
    app->batch = true;
    app->batch_lost = false;
    if (app->db)
        meao_db_group_begin(app->db);
}

bool meao_app_batch_pending(const struct meao_app *app)
{
    return app->batch && (app->batch_lost || (app->db && meao_db_group_pending(app->db)));
}

unsigned meao_app_batch_joined(const struct meao_app *app)
{
    return app->batch && app->db ? meao_db_group_joined(app->db) : 0;
}

enum meao_err meao_app_batch_end(struct meao_app *app)
{
    enum meao_err e = MEAO_OK;
    if (!app->batch)
        return MEAO_OK;
    if (app->db)
        e = meao_db_group_commit(app->db);
    if (e == MEAO_OK && app->batch_lost)
        e = MEAO_E_DB;
    app->batch = false;
    app->batch_lost = false;
    return e;
}

/* Copy the path part of REQUEST_URI (no query) into req->path. */
static bool split_path(struct meao_req *req)
{
    const char *uri = req->uri ? req->uri : "/";
    size_t n = strcspn(uri, "?#");
    if (n == 0 || n >= sizeof req->path)
        return false;
    memcpy(req->path, uri, n);
    req->path[n] = '\0';
    return true;
}

static bool is_json_type(const char *ct)
{
    static const char want[] = "application/json";
    size_t n = sizeof want - 1;
    if (ct == NULL)
        return false;
    while (*ct == ' ')
        ct++;
    if (strncasecmp(ct, want, n) != 0)
        return false;
    ct += n;
    while (*ct == ' ')
        ct++;
    return *ct == '\0' || *ct == ';';
}

/* Body checks the route table asks for: size, media type, JSON, schema. */
static enum meao_err check_body(struct meao_app *app, struct meao_req *req, struct meao_resp *resp)
{
    const struct meao_route *r = req->route;
    size_t max = (size_t)app->cfg->max_body_bytes;
    bool has_body = req->body_len > 0 || req->body_too_large || req->content_length > 0;
    enum meao_err e;
    char why[201];

    if (req->body_too_large || (req->content_length > 0 && (size_t)req->content_length > max) ||
        req->body_len > max)
        return meao_fail(resp, MEAO_E_PAYLOAD_TOO_LARGE, "Request body exceeds %zu bytes", max);
    if (!(r->flags & (MEAO_ROUTE_JSON_BODY | MEAO_ROUTE_OPTIONAL_BODY)))
        return MEAO_OK; /* the route reads no body; whatever came is ignored */
    if (!has_body) {
        if (r->flags & MEAO_ROUTE_OPTIONAL_BODY)
            return MEAO_OK;
        return meao_fail(resp, MEAO_E_INVALID_REQUEST, "A JSON request body is required");
    }
    if (!is_json_type(req->content_type))
        return meao_fail(resp, MEAO_E_UNSUPPORTED_MEDIA_TYPE,
                         "Content-Type must be application/json");
    e = meao_json_parse(req->body, req->body_len, max, (int)app->cfg->max_json_depth, &req->json,
                        why, sizeof why);
    if (e != MEAO_OK)
        return meao_fail(resp, e, "%s", why);
    if (r->body) {
        e = meao_schema_check(r->body, req->json, why, sizeof why);
        if (e != MEAO_OK)
            return meao_fail(resp, e, "%s", why);
    } else if (!json_is_object(req->json)) {
        return meao_fail(resp, MEAO_E_INVALID_REQUEST, "Request body must be a JSON object");
    }
    return MEAO_OK;
}

static void access_log(struct meao_app *app, const struct meao_req *req,
                       const struct meao_resp *resp)
{
    enum meao_log_level lvl = resp->status >= 500   ? MEAO_LOG_ERROR
                              : resp->status >= 400 ? MEAO_LOG_INFO
                                                    : MEAO_LOG_DEBUG;
    json_t *f;
    if (!meao_log_enabled(lvl))
        return;
    f = json_pack("{s:s, s:s, s:i, s:I}", "method", req->method ? req->method : "-", "path",
                  req->path[0] ? req->path : "-", "status", resp->status, "durationMs",
                  (json_int_t)(meao_mono_ms(app->clock) - req->start_mono_ms));
    if (f && req->route)
        json_object_set_new(f, "route", json_string(req->route->pattern));
    if (f && req->who.user_id)
        json_object_set_new(f, "userId", json_integer(req->who.user_id));
    if (f && resp->status >= 400 && resp->error_message[0])
        json_object_set_new(f, "error", json_string(resp->error_message));
    meao_log_fields(lvl, req->request_id, "request", f, "%s", "");
    json_decref(f);
}

void meao_app_route(struct meao_req *req)
{
    if (req->routed)
        return;
    req->routed = true;
    /* the client's id when valid, else the one nginx minted for this request
     * (so nginx's own log line and error pages share it), else a new one */
    meao_request_id_pick(meao_request_id_valid(req->x_request_id) ? req->x_request_id
                                                                  : req->nginx_request_id,
                         req->request_id);
    if (!split_path(req)) {
        req->route_err = MEAO_E_INVALID_REQUEST;
        return;
    }
    if (meao_router_match(meao_routes, meao_routes_count, req, &req->route_err, req->allow,
                          sizeof req->allow) == NULL)
        req->route = NULL;
}

bool meao_app_route_is_slow(struct meao_req *req)
{
    meao_app_route(req);
    return req->route != NULL && (req->route->flags & MEAO_ROUTE_SLOW);
}

void meao_app_handle(struct meao_app *app, struct meao_req *req, struct meao_resp *resp)
{
    enum meao_err e = MEAO_OK;
    const struct meao_route *r;
    int64_t start_us = meao_metrics_now_us();

    req->start_mono_ms = meao_mono_ms(app->clock);
    meao_app_route(req);
    meao_log_set_context(req->request_id);
    resp->omit_body = req->method && strcmp(req->method, "HEAD") == 0;

    r = req->route;
    if (r == NULL) {
        e = req->route_err;
        if (e == MEAO_E_METHOD_NOT_ALLOWED) {
            meao_resp_header(resp, "Allow", "%s", req->allow);
            meao_fail(resp, e, "Method %.16s not allowed here; allowed: %s",
                      req->method ? req->method : "?", req->allow);
        } else if (e == MEAO_E_INVALID_REQUEST) {
            meao_fail(resp, e, "Request path missing or too long");
        } else {
            meao_fail(resp, e, "No such endpoint");
        }
        goto out;
    }
    if (r->auth != MEAO_AUTH_NONE || r->rate != MEAO_RATE_NONE)
        meao_app_settings_refresh(app, false); /* limits and log level may have changed */
    if (r->auth != MEAO_AUTH_NONE) {
        e = meao_authenticate(app, req, resp, r->auth);
        if (e != MEAO_OK)
            goto out;
    }
    if (r->rate != MEAO_RATE_NONE) {
        e = meao_app_rate_limit(app, req, resp, r->rate);
        if (e != MEAO_OK)
            goto out;
    }
    e = check_body(app, req, resp);
    if (e != MEAO_OK)
        goto out;
    e = r->handler(app, req, resp);
out:
    if (e != MEAO_OK) {
        meao_resp_error(resp, req, e, resp->error_message[0] ? resp->error_message : NULL, NULL,
                        resp->retry_after_s, meao_now_ms(app->clock));
        if (e == MEAO_E_AUTH_REQUIRED || e == MEAO_E_AUTH_INVALID_TOKEN)
            meao_resp_header(resp, "WWW-Authenticate", "Bearer realm=\"meao\"");
    }
    access_log(app, req, resp);
    meao_metrics_request(r ? (size_t)(r - meao_routes) : meao_routes_count, resp->status,
                         meao_metrics_now_us() - start_us);
    meao_log_set_context(NULL);
}
