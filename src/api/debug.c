#include <stdlib.h>
#include <time.h>

#include "api/routes.h"
#include "core/clock.h"

enum meao_err meao_api_debug_sleep(struct meao_app *app, struct meao_req *req,
                                   struct meao_resp *resp)
{
    char v[16];
    long ms = 100;
    struct timespec ts;
    if (!app->cfg->debug_routes)
        return meao_fail(resp, MEAO_E_NOT_FOUND, "No such endpoint");
    if (meao_req_query(req, "ms", v, sizeof v))
        ms = strtol(v, NULL, 10);
    if (ms < 0 || ms > 60000)
        return meao_fail(resp, MEAO_E_INVALID_PARAMETER, "ms must be 0..60000");
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0) {
    }
    return meao_resp_ok(resp, req, 200, json_pack("{s:i}", "sleptMs", (int)ms),
                        meao_now_ms(app->clock));
}

enum meao_err meao_api_debug_echo(struct meao_app *app, struct meao_req *req,
                                  struct meao_resp *resp)
{
    if (!app->cfg->debug_routes)
        return meao_fail(resp, MEAO_E_NOT_FOUND, "No such endpoint");
    return meao_resp_ok(resp, req, 200, json_incref(req->json), meao_now_ms(app->clock));
}
