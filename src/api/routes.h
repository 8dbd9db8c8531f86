/* The route table of the REST API and the probes, and the handlers it names. */
#ifndef MEAO_API_ROUTES_H
#define MEAO_API_ROUTES_H

#include "http/app.h"
#include "http/router.h"

extern const struct meao_route meao_routes[];
extern const size_t meao_routes_count;

/* health.c */
enum meao_err meao_api_health(struct meao_app *app, struct meao_req *req, struct meao_resp *resp);
enum meao_err meao_api_ready(struct meao_app *app, struct meao_req *req, struct meao_resp *resp);
enum meao_err meao_api_health_detailed(struct meao_app *app, struct meao_req *req,
                                       struct meao_resp *resp);
/* metrics.c: GET /metrics, Prometheus text; metrics_allow or an owner token */
enum meao_err meao_api_metrics(struct meao_app *app, struct meao_req *req, struct meao_resp *resp);

/* auth.c */
enum meao_err meao_api_auth_refresh(struct meao_app *app, struct meao_req *req,
                                    struct meao_resp *resp);
enum meao_err meao_api_auth_revoke(struct meao_app *app, struct meao_req *req,
                                   struct meao_resp *resp);
enum meao_err meao_api_auth_devices(struct meao_app *app, struct meao_req *req,
                                    struct meao_resp *resp);
enum meao_err meao_api_auth_me(struct meao_app *app, struct meao_req *req, struct meao_resp *resp);
enum meao_err meao_api_pair_codes(struct meao_app *app, struct meao_req *req,
                                  struct meao_resp *resp);
enum meao_err meao_api_pair_request(struct meao_app *app, struct meao_req *req,
                                    struct meao_resp *resp);
enum meao_err meao_api_pair_approve(struct meao_app *app, struct meao_req *req,
                                    struct meao_resp *resp);
enum meao_err meao_api_pair_deny(struct meao_app *app, struct meao_req *req,
                                 struct meao_resp *resp);
enum meao_err meao_api_pair_complete(struct meao_app *app, struct meao_req *req,
                                     struct meao_resp *resp);

/* sessions.c */
enum meao_err meao_api_sessions_create(struct meao_app *app, struct meao_req *req,
                                       struct meao_resp *resp);
enum meao_err meao_api_sessions_list(struct meao_app *app, struct meao_req *req,
                                     struct meao_resp *resp);
enum meao_err meao_api_sessions_get(struct meao_app *app, struct meao_req *req,
                                    struct meao_resp *resp);
enum meao_err meao_api_sessions_delete(struct meao_app *app, struct meao_req *req,
                                       struct meao_resp *resp);

/* messages.c — the POST runs one orchestrator turn (a MEAO_ROUTE_SLOW route) */
enum meao_err meao_api_messages_post(struct meao_app *app, struct meao_req *req,
                                     struct meao_resp *resp);
enum meao_err meao_api_messages_list(struct meao_app *app, struct meao_req *req,
                                     struct meao_resp *resp);

/* approvals.c */
enum meao_err meao_api_approvals_list(struct meao_app *app, struct meao_req *req,
                                      struct meao_resp *resp);
enum meao_err meao_api_approvals_answer(struct meao_app *app, struct meao_req *req,
                                        struct meao_resp *resp);

/* telegram.c — Telegram's webhook (secret header, durable inbox) */
enum meao_err meao_api_telegram_webhook(struct meao_app *app, struct meao_req *req,
                                        struct meao_resp *resp);

/* tools.c */
enum meao_err meao_api_tools_list(struct meao_app *app, struct meao_req *req,
                                  struct meao_resp *resp);
enum meao_err meao_api_tools_get(struct meao_app *app, struct meao_req *req,
                                 struct meao_resp *resp);

/* config.c */
enum meao_err meao_api_config_get(struct meao_app *app, struct meao_req *req,
                                  struct meao_resp *resp);
enum meao_err meao_api_config_patch(struct meao_app *app, struct meao_req *req,
                                    struct meao_resp *resp);

/* debug.c — only answer when the debug_routes config key is true */
enum meao_err meao_api_debug_sleep(struct meao_app *app, struct meao_req *req,
                                   struct meao_resp *resp);
enum meao_err meao_api_debug_echo(struct meao_app *app, struct meao_req *req,
                                  struct meao_resp *resp);

#endif
