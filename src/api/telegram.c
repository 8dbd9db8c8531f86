/* POST /telegram/webhook: Telegram's deliveries (API.md "Telegram webhook").
 *
 * Order matters: the secret token header is checked (keyed hash, constant
 * time) before the body is even parsed, so a stranger cannot make the
 * responder parse or store anything; the body was already bounded by the
 * pipeline (max_body_bytes → 413). A valid Update is stored in the durable
 * inbox (store/telegram.h) and only then answered 200, because Telegram
 * retries anything else for a day and forgets what got a 2xx. A redelivered
 * update_id is answered 200 and dropped. The insert is a write transaction
 * like any other: in the responder it joins the epoll batch's group commit
 * (store/db.h), so the 200 is held until the group is committed — and, with
 * telegram_inbox_sync = full, the WAL fsynced once for the whole group —
 * and becomes a 503 if that commit fails. The worker (src/telegram/) does
 * the rest. This route is not under /api/v1: success is {"ok":true}, errors use
 * the usual JSON error body. */
#include <string.h>

#include "api/api.h"
#include "api/routes.h"
#include "core/clock.h"
#include "core/json.h"
#include "core/log.h"
#include "proto/telegram.h"
#include "store/telegram.h"

enum meao_err meao_api_telegram_webhook(struct meao_app *app, struct meao_req *req,
                                        struct meao_resp *resp)
{
    char stored[MEAO_TG_SECRET_HEX + 1], why[201];
    const struct meao_secrets *keys;
    struct meao_tg_update u;
    struct meao_db *db;
    json_t *update = NULL;
    bool duplicate = false;
    enum meao_err e;

    e = meao_api_need_db(app, resp, &db);
    if (e != MEAO_OK)
        return e;
    keys = meao_app_secrets(app);
    if (keys == NULL)
        return meao_fail(resp, MEAO_E_UNAVAILABLE, "Server secrets unavailable");
    e = meao_tg_state_get(db, "webhook_secret_hash", stored, sizeof stored);
    if (e != MEAO_OK && e != MEAO_E_NOT_FOUND)
        return meao_fail(resp, MEAO_E_UNAVAILABLE, "Database unavailable");
    if (e == MEAO_E_NOT_FOUND || req->telegram_secret == NULL ||
        !meao_tg_secret_matches(keys, req->telegram_secret, strlen(req->telegram_secret), stored))
        return meao_fail(resp, MEAO_E_AUTH_INVALID_TOKEN,
                         "Missing or wrong X-Telegram-Bot-Api-Secret-Token");

    if (req->body_len == 0)
        return meao_fail(resp, MEAO_E_INVALID_REQUEST, "An Update (JSON body) is required");
    e = meao_json_parse(req->body, req->body_len, (size_t)app->cfg->max_body_bytes,
                        (int)app->cfg->max_json_depth, &update, why, sizeof why);
    if (e != MEAO_OK)
        return meao_fail(resp, e, "%s", why);
    e = meao_tg_update_parse(update, &u, why, sizeof why);
    if (e != MEAO_OK) {
        json_decref(update);
        return meao_fail(resp, e, "%s", why);
    }
    e = meao_tg_inbox_put(db, u.update_id, u.kind_name, u.chat_id, u.from_id, req->body,
                          req->body_len, strcmp(app->cfg->telegram_inbox_sync, "normal") == 0,
                          meao_now_ms(app->clock), &duplicate);
    json_decref(update);
    if (e != MEAO_OK) /* not stored: a 503 makes Telegram deliver it again */
        return meao_fail(resp, MEAO_E_UNAVAILABLE, "The update could not be stored; retry");
    meao_log(MEAO_LOG_DEBUG, NULL, "telegram_update", "update %lld (%s)%s", (long long)u.update_id,
             u.kind_name, duplicate ? " duplicate, dropped" : " stored");
    return meao_resp_json(resp, 200,
                          duplicate ? json_pack("{s:b, s:b}", "ok", 1, "duplicate", 1)
                                    : json_pack("{s:b}", "ok", 1));
}
