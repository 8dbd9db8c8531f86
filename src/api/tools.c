/* /api/v1/tools: the orchestrator's tool registry (list_tools), with the
 * policies changed through PATCH /api/v1/config shown as they apply. */
#include <string.h>

#include "api/api.h"
#include "api/routes.h"
#include "core/clock.h"
#include "core/json.h"

/* The policy a tool runs under when PATCH /api/v1/config changed it, or NULL
 * (then the orchestrator's own policy stands). */
static const char *overridden_policy(const struct meao_app *app, const char *tool)
{
    const struct meao_config *c = app->cfg, *b = app->base_cfg;
    const char *now = NULL, *file = NULL;
    if (c == b || tool == NULL)
        return NULL;
    if (strcmp(tool, "bash") == 0) {
        now = c->tool_policy_bash;
        file = b->tool_policy_bash;
    } else if (strcmp(tool, "read_file") == 0) {
        now = c->tool_policy_read_file;
        file = b->tool_policy_read_file;
    } else if (strcmp(tool, "write_file") == 0) {
        now = c->tool_policy_write_file;
        file = b->tool_policy_write_file;
    }
    return now && strcmp(now, file) != 0 ? now : NULL;
}

/* The registry, as a new array of tool objects. */
static enum meao_err fetch_tools(struct meao_app *app, struct meao_resp *resp, json_t **out)
{
    json_t *call = json_pack("{s:s, s:i}", "type", "list_tools", "v", MEAO_ORCH_VERSION);
    json_t *answer = NULL, *tools, *t;
    enum meao_orch_type type;
    enum meao_err e;
    size_t i;

    *out = NULL;
    if (call == NULL)
        return MEAO_E_NOMEM;
    e = meao_api_orch_call(app, resp, call, &answer, &type);
    json_decref(call);
    if (e != MEAO_OK)
        return e;
    tools = json_object_get(answer, "tools");
    if (type != MEAO_ORCH_TOOLS || !json_is_array(tools)) {
        json_decref(answer);
        return meao_fail(resp, MEAO_E_PROVIDER, "Unexpected answer from the orchestrator");
    }
    json_array_foreach(tools, i, t)
    {
        const char *p = overridden_policy(app, meao_json_str(t, "name"));
        if (p && json_is_object(t))
            json_object_set_new(t, "policy", json_string(p));
    }
    *out = json_incref(tools);
    json_decref(answer);
    return MEAO_OK;
}

enum meao_err meao_api_tools_list(struct meao_app *app, struct meao_req *req,
                                  struct meao_resp *resp)
{
    json_t *tools;
    enum meao_err e = fetch_tools(app, resp, &tools);
    if (e != MEAO_OK)
        return e;
    return meao_resp_ok(resp, req, 200, json_pack("{s:o}", "tools", tools),
                        meao_now_ms(app->clock));
}

enum meao_err meao_api_tools_get(struct meao_app *app, struct meao_req *req, struct meao_resp *resp)
{
    const char *name = meao_req_param(req, 0);
    json_t *tools, *t, *found = NULL;
    enum meao_err e;
    size_t i;

    if (name == NULL || strlen(name) > 128)
        return meao_fail(resp, MEAO_E_NOT_FOUND, "Tool not found");
    e = fetch_tools(app, resp, &tools);
    if (e != MEAO_OK)
        return e;
    json_array_foreach(tools, i, t)
    {
        const char *n = meao_json_str(t, "name");
        if (n && strcmp(n, name) == 0) {
            found = json_incref(t);
            break;
        }
    }
    json_decref(tools);
    if (found == NULL)
        return meao_fail(resp, MEAO_E_NOT_FOUND, "Tool not found");
    return meao_resp_ok(resp, req, 200, found, meao_now_ms(app->clock));
}
