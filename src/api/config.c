/* /api/v1/config: the configuration a client may see (limits, policies, log
 * level, provider name and model — never keys, paths or secrets), and the
 * owner's run-time changes to it (a JSON merge patch of the same shape,
 * RFC 7396: null resets a value to the configuration file's). Changes are
 * kept in the settings table and applied by every process within about a
 * second (store/settings.h). */
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "api/routes.h"
#include "core/clock.h"
#include "core/json.h"
#include "store/settings.h"

/* Where each patchable value lives in the JSON document, and its key. */
struct patchable {
    const char *group; /* NULL: top level; "limits"; "tools.policies" */
    const char *name;
    const char *key; /* config key */
    bool integer;
};

static const struct patchable patchables[] = {
    {NULL, "logLevel", "log_level", false},
    {"limits", "restPerMinute", "rate_rest_per_min", true},
    {"limits", "restPerHour", "rate_rest_per_hour", true},
    {"limits", "messagesPerMinute", "rate_messages_per_min", true},
    {"limits", "pairingPer15Minutes", "rate_pairing_per_15min", true},
    {"limits", "wsMessagesPerMinute", "rate_ws_messages_per_min", true},
    {"limits", "wsMaxConnectionsPerUser", "ws_max_connections_per_user", true},
    {"tools.policies", "bash", "tool_policy_bash", false},
    {"tools.policies", "read_file", "tool_policy_read_file", false},
    {"tools.policies", "write_file", "tool_policy_write_file", false},
};

#define NPATCH (sizeof patchables / sizeof patchables[0])

static json_t *config_json(const struct meao_app *app)
{
    const struct meao_config *c = app->cfg;
    return json_pack(
        "{s:s, s:s, s:{s:I, s:I, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I},"
        " s:{s:{s:s, s:s, s:s}, s:I, s:I, s:I}, s:{s:s, s:s?}, s:{s:I, s:I}}",
        "version", MEAO_VERSION, "logLevel", meao_log_level_name(c->log_level), "limits",
        "maxBodyBytes", (json_int_t)c->max_body_bytes, "maxJsonDepth",
        (json_int_t)c->max_json_depth, "rateLimitEnabled", c->ratelimit_enabled ? 1 : 0,
        "restPerMinute", (json_int_t)c->rate_rest_per_min, "restPerHour",
        (json_int_t)c->rate_rest_per_hour, "messagesPerMinute",
        (json_int_t)c->rate_messages_per_min, "pairingPer15Minutes",
        (json_int_t)c->rate_pairing_per_15min, "wsMessagesPerMinute",
        (json_int_t)c->rate_ws_messages_per_min, "wsMaxConnectionsPerUser",
        (json_int_t)c->ws_max_connections_per_user, "turnDeadlineSeconds",
        (json_int_t)c->turn_deadline_s, "historyWindow", (json_int_t)MEAO_HISTORY_MAX_N,
        "maxContentBytes", (json_int_t)MEAO_ORCH_MAX_CONTENT, "tools", "policies", "bash",
        c->tool_policy_bash, "read_file", c->tool_policy_read_file, "write_file",
        c->tool_policy_write_file, "maxIterations", (json_int_t)c->max_tool_iterations, "timeoutMs",
        (json_int_t)c->tool_timeout_ms, "approvalTimeoutMs", (json_int_t)c->approval_timeout_ms,
        "provider", "name", c->provider, "model", c->provider_model[0] ? c->provider_model : NULL,
        "tokens", "accessTtlSeconds", (json_int_t)c->access_token_ttl_s, "refreshTtlSeconds",
        (json_int_t)c->refresh_token_ttl_s);
}

enum meao_err meao_api_config_get(struct meao_app *app, struct meao_req *req,
                                  struct meao_resp *resp)
{
    json_t *doc = config_json(app);
    if (doc == NULL)
        return MEAO_E_NOMEM;
    return meao_resp_ok(resp, req, 200, doc, meao_now_ms(app->clock));
}

/* Walk one object of the patch: every member must be a patchable value of
 * this group (or a nested group that holds some); collect key → text|null. */
static enum meao_err collect(const json_t *obj, const char *group, json_t *changes, char *why,
                             size_t whylen)
{
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)obj, name, v)
    {
        const struct patchable *p = NULL;
        char sub[48];
        bool is_group = false;

        snprintf(sub, sizeof sub, "%s%s%.30s", group ? group : "", group ? "." : "", name);
        for (size_t i = 0; i < NPATCH && !p; i++) {
            const char *g = patchables[i].group;
            if (((g == NULL && group == NULL) || (g && group && strcmp(g, group) == 0)) &&
                strcmp(patchables[i].name, name) == 0)
                p = &patchables[i];
            else if (g && strncmp(g, sub, strlen(sub)) == 0 &&
                     (g[strlen(sub)] == '\0' || g[strlen(sub)] == '.'))
                is_group = true;
        }
        if (p == NULL && is_group) {
            enum meao_err e;
            if (!json_is_object(v)) {
                snprintf(why, whylen, "%s must be an object", sub);
                return MEAO_E_INVALID_PARAMETER;
            }
            e = collect(v, sub, changes, why, whylen);
            if (e != MEAO_OK)
                return e;
            continue;
        }
        if (p == NULL) {
            snprintf(why, whylen, "%s cannot be changed at run time", sub);
            return MEAO_E_INVALID_PARAMETER;
        }
        if (json_is_null(v)) {
            json_object_set_new(changes, p->key, json_null());
        } else if (p->integer && json_is_integer(v)) {
            char num[24];
            snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
            json_object_set_new(changes, p->key, json_string(num));
        } else if (!p->integer && json_is_string(v)) {
            json_object_set_new(changes, p->key, json_string(json_string_value(v)));
        } else {
            snprintf(why, whylen, "%s must be %s or null", sub,
                     p->integer ? "an integer" : "a string");
            return MEAO_E_INVALID_PARAMETER;
        }
    }
    return MEAO_OK;
}

enum meao_err meao_api_config_patch(struct meao_app *app, struct meao_req *req,
                                    struct meao_resp *resp)
{
    json_t *changes = json_object();
    struct meao_db *db;
    char why[200];
    enum meao_err e;

    if (changes == NULL)
        return MEAO_E_NOMEM;
    e = collect(req->json, NULL, changes, why, sizeof why);
    if (e == MEAO_OK && json_object_size(changes) == 0) {
        snprintf(why, sizeof why, "Nothing to change");
        e = MEAO_E_INVALID_PARAMETER;
    }
    if (e != MEAO_OK) {
        json_decref(changes);
        return meao_fail(resp, e, "%s", why);
    }
    e = meao_api_need_db(app, resp, &db);
    if (e == MEAO_OK)
        e = meao_settings_update(db, changes, req->who.user_id, req->request_id,
                                 meao_now_ms(app->clock), why, sizeof why);
    json_decref(changes);
    if (e == MEAO_E_INVALID_PARAMETER)
        return meao_fail(resp, e, "%s", why);
    if (e != MEAO_OK)
        return e;
    meao_app_settings_refresh(app, true); /* this process at once; the others within a second */
    return meao_api_config_get(app, req, resp);
}
