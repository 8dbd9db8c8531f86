/* /api/v1/sessions: create, list, get, end. Every look-up is scoped to the
 * caller: another user's session answers exactly like a missing one. */
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "api/routes.h"
#include "core/clock.h"
#include "core/json.h"
#include "store/identity.h"
#include "store/sessions.h"
#include "store/workdir.h"

enum meao_err meao_api_sessions_create(struct meao_app *app, struct meao_req *req,
                                       struct meao_resp *resp)
{
    const char *channel = meao_json_str(req->json, "channel");
    const char *alias = meao_json_str(req->json, "channelId");
    const char *workdir = meao_json_str(req->json, "workDir");
    char id[MEAO_PUBLIC_ID_LEN + 1], dir[MEAO_WORKDIR_MAX + 1], why[200];
    struct meao_session s;
    struct meao_db *db;
    int64_t now = meao_now_ms(app->clock);
    enum meao_err e;

    if (channel && alias && strcmp(channel, alias) != 0)
        return meao_fail(resp, MEAO_E_INVALID_PARAMETER,
                         "Give channel or its alias channelId, not two different values");
    if (channel == NULL)
        channel = alias;
    if (channel == NULL)
        return meao_fail(resp, MEAO_E_INVALID_PARAMETER, "Missing required field \"channel\"");
    if (!meao_channel_valid(channel))
        return meao_fail(resp, MEAO_E_INVALID_PARAMETER, "channel must be 1..%d of [A-Za-z0-9._:-]",
                         MEAO_CHANNEL_MAX);
    e = meao_api_need_db(app, resp, &db);
    if (e != MEAO_OK)
        return e;

    meao_public_id_new("ses_", id);
    e = meao_workdir_resolve(
        &(struct meao_workdir_req){.root = app->cfg->workspace_root,
                                   .user_id = req->who.user_id,
                                   .may_use_whole_root = req->who.role == MEAO_ROLE_OWNER,
                                   .requested = workdir,
                                   .default_leaf = id},
        dir, sizeof dir, why, sizeof why);
    if (e == MEAO_E_INVALID_PARAMETER)
        return meao_fail(resp, e, "%s", why);
    if (e != MEAO_OK)
        return meao_fail(resp, MEAO_E_UNAVAILABLE, "Workspace unavailable");

    e = meao_db_begin_relaxed(db);
    if (e != MEAO_OK)
        return e;
    e = meao_session_create(db, id, req->who.user_id, channel, dir, now, &s);
    if (e == MEAO_OK)
        e = meao_audit(db, now, req->request_id, req->who.user_id, "session.create", id, channel);
    if (e == MEAO_OK)
        e = meao_db_commit(db);
    else
        meao_db_rollback(db);
    if (e != MEAO_OK)
        return e;
    return meao_resp_ok(resp, req, 201,
                        json_pack("{s:s, s:s, s:s}", "id", s.public_id, "channel", s.channel,
                                  "createdAt", meao_iso8601(s.created_ms, why, sizeof why)),
                        now);
}

enum meao_err meao_api_sessions_list(struct meao_app *app, struct meao_req *req,
                                     struct meao_resp *resp)
{
    char status[16];
    int limit, r;
    struct meao_db *db;
    json_t *list;
    enum meao_err e = meao_api_limit(req, resp, 50, &limit);

    if (e != MEAO_OK)
        return e;
    r = meao_api_query(req, "status", status, sizeof status);
    if (r < 0 || (r > 0 && strcmp(status, "active") != 0 && strcmp(status, "ended") != 0))
        return meao_fail(resp, MEAO_E_INVALID_PARAMETER, "status must be active or ended");
    e = meao_api_need_db(app, resp, &db);
    if (e != MEAO_OK)
        return e;
    e = meao_session_list(db, req->who.user_id, r > 0 ? status : NULL, limit,
                          meao_now_ms(app->clock), &list);
    if (e != MEAO_OK)
        return e;
    return meao_resp_ok(resp, req, 200, json_pack("{s:o}", "sessions", list),
                        meao_now_ms(app->clock));
}

enum meao_err meao_api_sessions_get(struct meao_app *app, struct meao_req *req,
                                    struct meao_resp *resp)
{
    struct meao_session s;
    struct meao_db *db;
    enum meao_err e = meao_api_own_session(app, req, resp, &db, &s);
    if (e != MEAO_OK)
        return e;
    return meao_resp_ok(resp, req, 200, meao_session_to_json(&s), meao_now_ms(app->clock));
}

enum meao_err meao_api_sessions_delete(struct meao_app *app, struct meao_req *req,
                                       struct meao_resp *resp)
{
    struct meao_session s;
    struct meao_db *db;
    int64_t now = meao_now_ms(app->clock);
    enum meao_err e = meao_api_own_session(app, req, resp, &db, &s);
    if (e != MEAO_OK)
        return e;
    if (s.ended) /* already ended: nothing changes, nothing to audit */
        return meao_resp_ok(resp, req, 204, NULL, now);
    e = meao_db_begin_relaxed(db);
    if (e != MEAO_OK)
        return e;
    e = meao_session_end(db, req->who.user_id, s.public_id, now);
    if (e == MEAO_OK)
        e = meao_audit(db, now, req->request_id, req->who.user_id, "session.end", s.public_id,
                       NULL);
    if (e == MEAO_OK)
        e = meao_db_commit(db);
    else
        meao_db_rollback(db);
    if (e == MEAO_E_NOT_FOUND)
        return meao_fail(resp, e, "Session not found");
    if (e != MEAO_OK)
        return e;
    return meao_resp_ok(resp, req, 204, NULL, now);
}
