/* /api/v1/approvals: the caller's pending approvals and answers to them,
 * relayed to the orchestrator over short connections (PROTOCOL.md
 * "Approvals"). The orchestrator owns approvals and checks that the answering
 * user is the approval's user; an approval of someone else looks exactly
 * like an unknown one (404, no existence oracle). */
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "api/routes.h"
#include "core/clock.h"
#include "core/ids.h"
#include "core/json.h"
#include "store/identity.h"

enum meao_err meao_api_approvals_list(struct meao_app *app, struct meao_req *req,
                                      struct meao_resp *resp)
{
    char uid[24];
    json_t *call, *answer = NULL, *list;
    enum meao_orch_type type;
    enum meao_err e;

    meao_api_user_id(req, uid);
    call = json_pack("{s:s, s:i, s:s}", "type", "list_approvals", "v", MEAO_ORCH_VERSION, "userId",
                     uid);
    if (call == NULL)
        return MEAO_E_NOMEM;
    e = meao_api_orch_call(app, resp, call, &answer, &type);
    json_decref(call);
    if (e != MEAO_OK)
        return e;
    list = json_object_get(answer, "approvals");
    if (type != MEAO_ORCH_APPROVALS || !json_is_array(list)) {
        json_decref(answer);
        return meao_fail(resp, MEAO_E_PROVIDER, "Unexpected answer from the orchestrator");
    }
    e = meao_resp_ok(resp, req, 200, json_pack("{s:O}", "approvals", list),
                     meao_now_ms(app->clock));
    json_decref(answer);
    return e;
}

enum meao_err meao_api_approvals_answer(struct meao_app *app, struct meao_req *req,
                                        struct meao_resp *resp)
{
    const char *id = meao_req_param(req, 0);
    bool approved = json_is_true(json_object_get(req->json, "approved"));
    bool trust = json_is_true(json_object_get(req->json, "trustSession"));
    char uid[24];
    json_t *call, *answer = NULL;
    enum meao_orch_type type;
    struct meao_db *db;
    enum meao_err e;

    /* approval ids are the orchestrator's; anything that could not be one is unknown */
    if (!meao_request_id_valid(id))
        return meao_fail(resp, MEAO_E_NOT_FOUND, "Approval not found");
    meao_api_user_id(req, uid);
    call = json_pack("{s:s, s:i, s:s, s:b, s:b, s:s}", "type", "approval_response", "v",
                     MEAO_ORCH_VERSION, "approvalId", id, "approved", approved, "trustSession",
                     trust, "userId", uid);
    if (call == NULL)
        return MEAO_E_NOMEM;
    e = meao_api_orch_call(app, resp, call, &answer, &type);
    json_decref(call);
    if (e != MEAO_OK)
        return e;
    if (type == MEAO_ORCH_ERROR) {
        const char *code = meao_json_str(answer, "code");
        e = meao_orch_error_code_to_err(code);
        json_decref(answer);
        if (e == MEAO_E_FORBIDDEN || e == MEAO_E_NOT_FOUND)
            return meao_fail(resp, MEAO_E_NOT_FOUND, "Approval not found");
        if (e == MEAO_E_CONFLICT)
            return meao_fail(resp, e, "Approval already decided or expired");
        if (e == MEAO_E_INVALID_REQUEST)
            return meao_fail(resp, MEAO_E_INVALID_PARAMETER, "The orchestrator refused the answer");
        return meao_fail(resp, MEAO_E_UNAVAILABLE, "Orchestrator unavailable");
    }
    if (type != MEAO_ORCH_ACK) {
        json_decref(answer);
        return meao_fail(resp, MEAO_E_PROVIDER, "Unexpected answer from the orchestrator");
    }
    json_decref(answer);
    /* the decision is made; a database that cannot record it must not undo it */
    db = meao_app_db(app);
    if (db)
        (void)meao_audit(db, meao_now_ms(app->clock), req->request_id, req->who.user_id,
                         "approval.answer", id,
                         approved ? (trust ? "approved,trustSession" : "approved") : "denied");
    return meao_resp_ok(
        resp, req, 200,
        json_pack("{s:s, s:b, s:b}", "approvalId", id, "approved", approved, "trustSession", trust),
        meao_now_ms(app->clock));
}
