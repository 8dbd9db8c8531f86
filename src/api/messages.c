/* /api/v1/sessions/:id/messages: post a message (one blocking orchestrator
 * turn) and read the history.
 *
 * A POST runs on the responder's slow-request pool (MEAO_ROUTE_SLOW). Its
 * way: check ownership → start the turn (api/chat.h: input checks, lease,
 * the user's message stored as pending, the turn sent) → read frames until
 * message_complete or error, answering nothing itself (approvals are
 * answered through /api/v1/approvals from any of the user's clients) →
 * settle it (api/chat.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/chat.h"
#include "api/routes.h"
#include "core/clock.h"
#include "core/json.h"
#include "core/log.h"

#define POLL_SLICE_MS 200 /* how often a waiting turn looks at its client */

/* Read frames until the turn ends; see the file comment. */
static enum meao_err run_turn(struct meao_chat *ch, struct meao_req *req, struct meao_resp *resp)
{
    const struct meao_config *cfg = ch->app->cfg;
    const struct meao_clock *clk = ch->app->clock;
    int64_t start = meao_mono_ms(clk);
    int64_t deadline = start + cfg->turn_deadline_s * 1000;
    int64_t last_frame = start;

    for (;;) {
        int64_t now = meao_mono_ms(clk), slice = now + POLL_SLICE_MS;
        enum meao_orch_type type;
        json_t *frame = NULL, *answer = NULL;
        enum meao_err e;

        if (slice > deadline)
            slice = deadline;
        e = meao_orch_next(ch->orch, slice, -1, &frame, &type, NULL);
        now = meao_mono_ms(clk);
        if (e == MEAO_E_TIMEOUT) {
            if (now >= deadline)
                return meao_chat_fail(ch, resp, MEAO_E_TIMEOUT, "The turn did not finish in time");
            if (now - last_frame >= cfg->orchestrator_idle_timeout_ms)
                return meao_chat_fail(ch, resp, MEAO_E_TIMEOUT, "The orchestrator went silent");
            if (meao_req_client_gone(req)) {
                /* nobody waits for the answer: stop the turn (its approvals are denied) */
                meao_chat_cancel(ch);
                return meao_chat_fail(ch, resp, MEAO_E_CANCELLED, "The client went away");
            }
            meao_chat_renew(ch);
            continue;
        }
        if (e == MEAO_E_UNAVAILABLE || e == MEAO_E_IO)
            return meao_chat_fail(ch, resp, MEAO_E_UNAVAILABLE,
                                  "Orchestrator connection lost mid-turn");
        if (e != MEAO_OK)
            return meao_chat_fail(ch, resp, MEAO_E_PROVIDER, "Orchestrator sent an invalid frame");
        last_frame = now;
        if (type == MEAO_ORCH_MESSAGE_COMPLETE) {
            e = meao_chat_complete(ch, frame, resp, &answer);
            json_decref(frame);
            if (e != MEAO_OK)
                return e;
            return meao_resp_ok(resp, req, 200, answer, meao_now_ms(clk));
        }
        if (type == MEAO_ORCH_ERROR) {
            e = meao_chat_error_frame(ch, frame, resp);
            json_decref(frame);
            return e;
        }
        if (type == MEAO_ORCH_APPROVAL_REQUEST)
            meao_log(MEAO_LOG_INFO, NULL, "approval_wait", "session %s waits on approval %s",
                     ch->s.public_id, meao_json_str(frame, "approvalId"));
        /* text deltas, tool events, approval_resolved: the REST client gets the end result */
        json_decref(frame);
    }
}

enum meao_err meao_api_messages_post(struct meao_app *app, struct meao_req *req,
                                     struct meao_resp *resp)
{
    struct meao_session s;
    struct meao_chat ch;
    struct meao_db *db;
    enum meao_err e;

    e = meao_api_own_session(app, req, resp, &db, &s);
    if (e != MEAO_OK)
        return e;
    e = meao_chat_start(&ch, app, db, &s, req->who.user_id, req->request_id,
                        json_object_get(req->json, "content"),
                        json_object_get(req->json, "attachments"), resp);
    if (e == MEAO_OK)
        e = run_turn(&ch, req, resp);
    meao_chat_end(&ch);
    return e;
}

/* ---- history ---- */

enum meao_err meao_api_messages_list(struct meao_app *app, struct meao_req *req,
                                     struct meao_resp *resp)
{
    char before[MEAO_PUBLIC_ID_LEN + 2], inc[8];
    struct meao_session s;
    struct meao_db *db;
    const struct meao_secrets *keys;
    bool include = false, more;
    int limit, rb, ri;
    json_t *list;
    enum meao_err e;

    e = meao_api_own_session(app, req, resp, &db, &s);
    if (e != MEAO_OK)
        return e;
    e = meao_api_limit(req, resp, 50, &limit);
    if (e != MEAO_OK)
        return e;
    rb = meao_api_query(req, "before", before, sizeof before);
    if (rb < 0 || (rb > 0 && !meao_public_id_valid(before, "msg_")))
        return meao_fail(resp, MEAO_E_INVALID_PARAMETER, "before must be a message id");
    ri = meao_api_query(req, "includeContent", inc, sizeof inc);
    if (ri < 0 || (ri > 0 && strcmp(inc, "true") != 0 && strcmp(inc, "false") != 0))
        return meao_fail(resp, MEAO_E_INVALID_PARAMETER, "includeContent must be true or false");
    /* content only for an owner who asks for it (a user asking gets no content) */
    include = ri > 0 && strcmp(inc, "true") == 0 && req->who.role == MEAO_ROLE_OWNER;
    keys = meao_app_secrets(app);
    if (keys == NULL)
        return meao_fail(resp, MEAO_E_UNAVAILABLE, "Server secrets unavailable");
    e = meao_messages_page(db, s.id,
                           &(struct meao_page_query){.limit = limit,
                                                     .before = rb > 0 ? before : NULL,
                                                     .include_content = include,
                                                     .hash_key = keys->content_key},
                           &list, &more);
    if (e == MEAO_E_NOT_FOUND)
        return meao_fail(resp, MEAO_E_INVALID_PARAMETER, "before is not a message of this session");
    if (e != MEAO_OK)
        return e;
    return meao_resp_ok(resp, req, 200,
                        json_pack("{s:o, s:b}", "messages", list, "hasMore", more ? 1 : 0),
                        meao_now_ms(app->clock));
}
