/* /api/v1/auth: refresh, revoke, devices, me, and device pairing. */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "api/routes.h"
#include "auth/pairing.h"
#include "auth/token.h"
#include "core/clock.h"
#include "core/json.h"
#include "store/pairing.h"

/* Database and secrets, or a 503 for the caller to return. */
static enum meao_err need_store(struct meao_app *app, struct meao_resp *resp, struct meao_db **db,
                                const struct meao_secrets **keys)
{
    *db = meao_app_db(app);
    *keys = meao_app_secrets(app);
    if (*db == NULL)
        return meao_fail(resp, MEAO_E_DB, "Database unavailable");
    if (*keys == NULL)
        return meao_fail(resp, MEAO_E_UNAVAILABLE, "Server secrets unavailable");
    return MEAO_OK;
}

/* Answer a freshly issued token pair, then wipe it. */
static enum meao_err send_pair(struct meao_app *app, struct meao_req *req, struct meao_resp *resp,
                               int status, struct meao_token_pair *p)
{
    char a[32], r[32];
    enum meao_err e = meao_resp_ok(
        resp, req, status,
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "token", p->access, "refreshToken", p->refresh,
                  "tokenType", "Bearer", "deviceId", p->device_id, "expiresAt",
                  meao_iso8601(p->access_expires_ms, a, sizeof a), "refreshExpiresAt",
                  meao_iso8601(p->refresh_expires_ms, r, sizeof r)),
        meao_now_ms(app->clock));
    sodium_memzero(p, sizeof *p);
    resp->no_store = true;
    return e;
}

enum meao_err meao_api_auth_refresh(struct meao_app *app, struct meao_req *req,
                                    struct meao_resp *resp)
{
    const char *rt = meao_json_str(req->json, "refreshToken");
    struct meao_token_pair pair;
    struct meao_token_ttl ttl;
    struct meao_db *db;
    const struct meao_secrets *keys;
    enum meao_err e;

    if (!meao_token_wellformed(rt, MEAO_TOKEN_REFRESH))
        return meao_fail(resp, MEAO_E_AUTH_INVALID_TOKEN, "Malformed refresh token");
    e = need_store(app, resp, &db, &keys);
    if (e != MEAO_OK)
        return e;
    meao_app_token_ttl(app, &ttl);
    e = meao_token_refresh(db, keys, rt, meao_now_ms(app->clock), &ttl, &pair, &req->who.user_id);
    if (e == MEAO_E_AUTH_INVALID_TOKEN)
        return meao_fail(resp, e, "Invalid, expired, revoked or already used refresh token");
    if (e != MEAO_OK)
        return e;
    return send_pair(app, req, resp, 200, &pair);
}

enum meao_err meao_api_auth_revoke(struct meao_app *app, struct meao_req *req,
                                   struct meao_resp *resp)
{
    const char *token = meao_json_str(req->json, "token");
    const char *device = meao_json_str(req->json, "deviceId");
    json_t *all = json_object_get(req->json, "all");
    int64_t now = meao_now_ms(app->clock), n = 0;
    struct meao_db *db;
    const struct meao_secrets *keys;
    enum meao_err e;
    int given = (token != NULL) + (device != NULL) + (all != NULL);

    if (given != 1)
        return meao_fail(resp, MEAO_E_INVALID_PARAMETER,
                         "Give exactly one of token, deviceId or all");
    e = need_store(app, resp, &db, &keys);
    if (e != MEAO_OK)
        return e;
    if (token) {
        if (!meao_token_wellformed(token, MEAO_TOKEN_ACCESS) &&
            !meao_token_wellformed(token, MEAO_TOKEN_REFRESH))
            return meao_fail(resp, MEAO_E_INVALID_PARAMETER, "Malformed token");
        e = meao_revoke_token(db, keys, &req->who, token, now, &n);
    } else if (device) {
        e = meao_revoke_device(db, &req->who, device, now, &n);
    } else {
        if (!json_is_true(all))
            return meao_fail(resp, MEAO_E_INVALID_PARAMETER, "all must be true");
        e = meao_revoke_user_all(db, req->who.user_id, now, &n);
    }
    if (e == MEAO_E_NOT_FOUND)
        return meao_fail(resp, e, "No such token or device");
    if (e != MEAO_OK)
        return e;
    (void)meao_audit(db, now, req->request_id, req->who.user_id,
                     token    ? "token.revoke"
                     : device ? "device.revoke"
                              : "token.revoke_all",
                     device, NULL);
    return meao_resp_ok(resp, req, 200, json_pack("{s:I}", "revoked", (json_int_t)n), now);
}

enum meao_err meao_api_auth_devices(struct meao_app *app, struct meao_req *req,
                                    struct meao_resp *resp)
{
    struct meao_db *db = meao_app_db(app);
    json_t *list;
    enum meao_err e;
    if (db == NULL)
        return meao_fail(resp, MEAO_E_DB, "Database unavailable");
    e = meao_devices_list(db, &req->who, &list);
    if (e != MEAO_OK)
        return e;
    return meao_resp_ok(resp, req, 200, json_pack("{s:o}", "devices", list),
                        meao_now_ms(app->clock));
}

/* Answered from what the token's look-up read (one read transaction, not two). */
enum meao_err meao_api_auth_me(struct meao_app *app, struct meao_req *req, struct meao_resp *resp)
{
    return meao_resp_ok(resp, req, 200,
                        json_pack("{s:I, s:s, s:s}", "userId", (json_int_t)req->who.user_id, "name",
                                  req->who.name, "role", meao_role_name(req->who.role)),
                        meao_now_ms(app->clock));
}

static enum meao_err device_name_arg(struct meao_req *req, struct meao_resp *resp, const char **out)
{
    *out = meao_json_str(req->json, "deviceName");
    if (*out && !meao_device_name_valid(*out))
        return meao_fail(resp, MEAO_E_INVALID_PARAMETER,
                         "deviceName must be 1..64 bytes without control characters");
    return MEAO_OK;
}

enum meao_err meao_api_pair_codes(struct meao_app *app, struct meao_req *req,
                                  struct meao_resp *resp)
{
    struct meao_pair_created pc;
    struct meao_db *db;
    const struct meao_secrets *keys;
    const char *name;
    char ts[32];
    enum meao_err e = device_name_arg(req, resp, &name);
    if (e != MEAO_OK)
        return e;
    e = need_store(app, resp, &db, &keys);
    if (e != MEAO_OK)
        return e;
    e = meao_pair_create_for_owner(db, keys, req->who.user_id, name, meao_now_ms(app->clock), &pc);
    if (e != MEAO_OK)
        return e;
    e = meao_resp_ok(resp, req, 201,
                     json_pack("{s:s, s:i, s:s}", "pairingCode", pc.code, "expiresIn",
                               MEAO_PAIR_TTL_MS / 1000, "expiresAt",
                               meao_iso8601(pc.expires_ms, ts, sizeof ts)),
                     meao_now_ms(app->clock));
    sodium_memzero(&pc, sizeof pc);
    resp->no_store = true;
    return e;
}

enum meao_err meao_api_pair_request(struct meao_app *app, struct meao_req *req,
                                    struct meao_resp *resp)
{
    struct meao_pair_created pc;
    struct meao_db *db;
    const struct meao_secrets *keys;
    const char *name;
    char ts[32];
    enum meao_err e = device_name_arg(req, resp, &name);
    if (e != MEAO_OK)
        return e;
    e = need_store(app, resp, &db, &keys);
    if (e != MEAO_OK)
        return e;
    e = meao_pair_request(db, keys, name, meao_app_client_ip(app, req), meao_now_ms(app->clock),
                          &pc);
    if (e != MEAO_OK)
        return e;
    e = meao_resp_ok(resp, req, 201,
                     json_pack("{s:s, s:s, s:i, s:i, s:s}", "pairingCode", pc.code, "deviceCode",
                               pc.device_code, "expiresIn", MEAO_PAIR_TTL_MS / 1000, "interval",
                               MEAO_PAIR_POLL_INTERVAL, "expiresAt",
                               meao_iso8601(pc.expires_ms, ts, sizeof ts)),
                     meao_now_ms(app->clock));
    sodium_memzero(&pc, sizeof pc);
    resp->no_store = true;
    return e;
}

static enum meao_err decide(struct meao_app *app, struct meao_req *req, struct meao_resp *resp,
                            bool approve)
{
    char code[MEAO_PAIR_CODE_LEN + 1], name[MEAO_NAME_MAX + 1];
    struct meao_db *db;
    const struct meao_secrets *keys;
    enum meao_err e;

    if (!meao_pair_code_normalise(meao_json_str(req->json, "pairingCode"), code))
        return meao_fail(resp, MEAO_E_INVALID_PARAMETER,
                         "pairingCode must be 6 characters from the pairing alphabet");
    e = need_store(app, resp, &db, &keys);
    if (e != MEAO_OK)
        return e;
    /* the approver is whoever holds the token, never a field of the body */
    e = meao_pair_decide(db, keys, req->who.user_id, code, approve, meao_now_ms(app->clock), name);
    if (e != MEAO_OK)
        return e;
    return meao_resp_ok(
        resp, req, 200,
        json_pack("{s:s, s:s}", "status", approve ? "approved" : "denied", "deviceName", name),
        meao_now_ms(app->clock));
}

enum meao_err meao_api_pair_approve(struct meao_app *app, struct meao_req *req,
                                    struct meao_resp *resp)
{
    return decide(app, req, resp, true);
}

enum meao_err meao_api_pair_deny(struct meao_app *app, struct meao_req *req, struct meao_resp *resp)
{
    return decide(app, req, resp, false);
}

enum meao_err meao_api_pair_complete(struct meao_app *app, struct meao_req *req,
                                     struct meao_resp *resp)
{
    const char *code_in = meao_json_str(req->json, "pairingCode");
    const char *device_code = meao_json_str(req->json, "deviceCode");
    struct meao_token_pair pair;
    struct meao_token_ttl ttl;
    struct meao_db *db;
    const struct meao_secrets *keys;
    const char *name;
    enum meao_err e;

    if ((code_in == NULL) == (device_code == NULL))
        return meao_fail(resp, MEAO_E_INVALID_PARAMETER,
                         "Give exactly one of pairingCode or deviceCode");
    e = device_name_arg(req, resp, &name);
    if (e != MEAO_OK)
        return e;
    meao_app_token_ttl(app, &ttl);
    if (code_in) {
        char code[MEAO_PAIR_CODE_LEN + 1];
        /* guessing a short code is what the per-IP pairing limit is for; polling
         * with a 256-bit device code is paced by slow_down instead */
        e = meao_app_rate_limit(app, req, resp, MEAO_RATE_PAIRING);
        if (e != MEAO_OK)
            return e;
        if (!meao_pair_code_normalise(code_in, code))
            return meao_fail(resp, MEAO_E_INVALID_PARAMETER,
                             "pairingCode must be 6 characters from the pairing alphabet");
        e = need_store(app, resp, &db, &keys);
        if (e != MEAO_OK)
            return e;
        e = meao_pair_complete_code(db, keys, code, name, meao_now_ms(app->clock), &ttl, &pair,
                                    &req->who.user_id);
    } else {
        if (!meao_token_wellformed(device_code, MEAO_TOKEN_DEVICE))
            return meao_fail(resp, MEAO_E_INVALID_PARAMETER, "Malformed deviceCode");
        e = need_store(app, resp, &db, &keys);
        if (e != MEAO_OK)
            return e;
        e = meao_pair_poll(db, keys, device_code, meao_now_ms(app->clock), &ttl, &pair,
                           &req->who.user_id);
    }
    if (e == MEAO_E_PAIR_SLOW_DOWN)
        meao_resp_header(resp, "Retry-After", "%d", MEAO_PAIR_POLL_INTERVAL);
    if (e != MEAO_OK)
        return e;
    return send_pair(app, req, resp, 200, &pair);
}
