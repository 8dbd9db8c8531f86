#include "api/api.h"

#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"
#include "orch/client.h"

enum meao_err meao_api_need_db(struct meao_app *app, struct meao_resp *resp, struct meao_db **db)
{
    *db = meao_app_db(app);
    if (*db == NULL)
        return meao_fail(resp, MEAO_E_DB, "Database unavailable");
    return MEAO_OK;
}

int meao_api_query(const struct meao_req *req, const char *key, char *out, size_t outlen)
{
    const char *q = req->query;
    size_t kl = strlen(key);
    bool present = false;

    /* meao_req_query() says false for absent and malformed alike: look first */
    while (q && *q) {
        size_t seg = strcspn(q, "&");
        size_t nl = strcspn(q, "=&");
        if (nl == kl && memcmp(q, key, kl) == 0) {
            present = true;
            break;
        }
        q += seg;
        if (*q == '&')
            q++;
    }
    if (!present)
        return 0;
    return meao_req_query(req, key, out, outlen) ? 1 : -1;
}

enum meao_err meao_api_limit(const struct meao_req *req, struct meao_resp *resp, int def, int *out)
{
    char v[8];
    int r = meao_api_query(req, "limit", v, sizeof v);
    long n = 0;

    *out = def;
    if (r == 0)
        return MEAO_OK;
    if (r > 0 && v[0] != '\0' && strspn(v, "0123456789") == strlen(v) && strlen(v) <= 3) {
        for (const char *p = v; *p; p++)
            n = n * 10 + (*p - '0');
        if (n >= 1 && n <= MEAO_API_LIMIT_MAX) {
            *out = (int)n;
            return MEAO_OK;
        }
    }
    return meao_fail(resp, MEAO_E_INVALID_PARAMETER, "limit must be an integer 1..%d",
                     MEAO_API_LIMIT_MAX);
}

enum meao_err meao_api_own_session(struct meao_app *app, struct meao_req *req,
                                   struct meao_resp *resp, struct meao_db **db,
                                   struct meao_session *out)
{
    const char *id = meao_req_param(req, 0);
    enum meao_err e;

    if (!meao_public_id_valid(id, "ses_"))
        return meao_fail(resp, MEAO_E_NOT_FOUND, "Session not found");
    e = meao_api_need_db(app, resp, db);
    if (e != MEAO_OK)
        return e;
    e = meao_session_get(*db, req->who.user_id, id, meao_now_ms(app->clock), out);
    if (e == MEAO_E_NOT_FOUND)
        return meao_fail(resp, e, "Session not found");
    return e;
}

void meao_api_user_id(const struct meao_req *req, char out[24])
{
    snprintf(out, 24, "%lld", (long long)req->who.user_id);
}

enum meao_err meao_api_orch_call(struct meao_app *app, struct meao_resp *resp, const json_t *msg,
                                 json_t **answer, enum meao_orch_type *type)
{
    enum meao_err e = meao_orch_call(app->cfg->orchestrator_socket, app->clock, msg,
                                     MEAO_ORCH_SHORT_MS, answer, type);
    if (e == MEAO_OK)
        return MEAO_OK;
    meao_log(MEAO_LOG_WARN, NULL, "orch_call", "orchestrator call failed: %s", meao_strerror(e));
    meao_metrics_orch_error(e == MEAO_E_TIMEOUT ? e : MEAO_E_UNAVAILABLE);
    if (e == MEAO_E_TIMEOUT)
        return meao_fail(resp, e, "Orchestrator did not answer in time");
    return meao_fail(resp, MEAO_E_UNAVAILABLE, "Orchestrator unavailable");
}

void meao_api_safe_line(const char *in, char *out, size_t outlen)
{
    size_t i = 0;
    if (outlen == 0)
        return;
    for (; in && in[i] && i + 1 < outlen; i++)
        out[i] = (unsigned char)in[i] < 0x20 || in[i] == 0x7f ? ' ' : in[i];
    /* do not cut a UTF-8 sequence in half */
    if (in && in[i]) {
        while (i > 0 && ((unsigned char)out[i - 1] & 0xC0) == 0x80)
            i--;
        if (i > 0 && ((unsigned char)out[i - 1] & 0xC0) == 0xC0)
            i--;
    }
    out[i] = '\0';
}
