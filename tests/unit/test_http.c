/* Router, request/response mapping and the request pipeline, with plain
 * structs, a fake clock and an in-memory database. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/log.h"
#include "http/app.h"
#include "store/db.h"

static enum meao_err h_ok(struct meao_app *a, struct meao_req *r, struct meao_resp *s)
{
    (void)a;
    (void)r;
    (void)s;
    return MEAO_OK;
}

static const struct meao_route table[] = {
    {"GET", "/api/v1/sessions", h_ok, MEAO_AUTH_NONE, MEAO_RATE_NONE, NULL, 0},
    {"POST", "/api/v1/sessions", h_ok, MEAO_AUTH_NONE, MEAO_RATE_NONE, NULL, 0},
    {"GET", "/api/v1/sessions/:id", h_ok, MEAO_AUTH_NONE, MEAO_RATE_NONE, NULL, 0},
    {"DELETE", "/api/v1/sessions/:id", h_ok, MEAO_AUTH_NONE, MEAO_RATE_NONE, NULL, 0},
    {"GET", "/api/v1/sessions/:id/messages", h_ok, MEAO_AUTH_NONE, MEAO_RATE_NONE, NULL, 0},
};

static const struct meao_route *route(const char *method, const char *path, enum meao_err *e,
                                      struct meao_req *req, char *allow)
{
    meao_req_init(req);
    req->method = (char *)method;
    snprintf(req->path, sizeof req->path, "%s", path);
    return meao_router_match(table, 5, req, e, allow, 64);
}

static void router_matches_patterns_and_params(void **state)
{
    struct meao_req req;
    enum meao_err e;
    char allow[64];
    (void)state;
    assert_ptr_equal(route("GET", "/api/v1/sessions", &e, &req, allow), &table[0]);
    assert_ptr_equal(route("GET", "/api/v1/sessions/abc", &e, &req, allow), &table[2]);
    assert_string_equal(meao_req_param(&req, 0), "abc");
    assert_null(meao_req_param(&req, 1));
    assert_ptr_equal(route("GET", "/api/v1/sessions/s1/messages", &e, &req, allow), &table[4]);
    assert_string_equal(meao_req_param(&req, 0), "s1");
    assert_ptr_equal(route("HEAD", "/api/v1/sessions", &e, &req, allow), &table[0]);
}

static void router_404_and_405_with_allow(void **state)
{
    struct meao_req req;
    enum meao_err e;
    char allow[64];
    (void)state;
    assert_null(route("GET", "/api/v1/nope", &e, &req, allow));
    assert_int_equal(e, MEAO_E_NOT_FOUND);
    assert_null(route("GET", "/api/v1/sessions/", &e, &req, allow)); /* empty param */
    assert_int_equal(e, MEAO_E_NOT_FOUND);
    assert_null(route("GET", "/api/v1/sessions/a/b", &e, &req, allow));
    assert_int_equal(e, MEAO_E_NOT_FOUND);
    assert_null(route("PUT", "/api/v1/sessions/x", &e, &req, allow));
    assert_int_equal(e, MEAO_E_METHOD_NOT_ALLOWED);
    assert_string_equal(allow, "GET, DELETE");
    assert_null(route(NULL, "/api/v1/sessions", &e, &req, allow));
    assert_int_equal(e, MEAO_E_METHOD_NOT_ALLOWED);
}

static void query_parsing_decodes_and_bounds(void **state)
{
    struct meao_req req;
    char v[16];
    (void)state;
    meao_req_init(&req);
    req.query = (char *)"limit=50&before=a%2Fb&flag&name=x+y&bad=%zz&nul=%00";
    assert_true(meao_req_query(&req, "limit", v, sizeof v));
    assert_string_equal(v, "50");
    assert_true(meao_req_query(&req, "before", v, sizeof v));
    assert_string_equal(v, "a/b");
    assert_true(meao_req_query(&req, "flag", v, sizeof v));
    assert_string_equal(v, "");
    assert_true(meao_req_query(&req, "name", v, sizeof v));
    assert_string_equal(v, "x y");
    assert_false(meao_req_query(&req, "bad", v, sizeof v));
    assert_false(meao_req_query(&req, "nul", v, sizeof v));
    assert_false(meao_req_query(&req, "missing", v, sizeof v));
    assert_false(meao_req_query(&req, "lim", v, sizeof v));
    req.query = (char *)"limit=12345678901234567890";
    assert_false(meao_req_query(&req, "limit", v, sizeof v)); /* too long for out */
}

static void params_are_copied_and_content_length_parsed(void **state)
{
    struct meao_req req;
    char buf[32] = "GET";
    (void)state;
    meao_req_init(&req);
    assert_true(meao_req_set_param(&req, "REQUEST_METHOD", 14, buf, 3));
    buf[0] = 'X'; /* the adapter reuses its buffer */
    assert_string_equal(req.method, "GET");
    meao_req_set_param(&req, "CONTENT_LENGTH", 14, "", 0);
    assert_int_equal(req.content_length, -1);
    meao_req_set_param(&req, "CONTENT_LENGTH", 14, "123", 3);
    assert_int_equal(req.content_length, 123);
    meao_req_set_param(&req, "CONTENT_LENGTH", 14, "-5", 2);
    assert_true(req.content_length > 1000000000LL);
    meao_req_set_param(&req, "HTTP_SOMETHING_ELSE", 19, "x", 1); /* ignored */
    meao_req_free(&req);
}

static void serialize_cgi_response(void **state)
{
    struct meao_resp resp;
    struct meao_buf out = {0};
    (void)state;
    meao_resp_init(&resp);
    meao_resp_json(&resp, 404, json_pack("{s:s}", "a", "b"));
    meao_resp_header(&resp, "X-Evil", "a\r\nInjected: 1");
    assert_true(meao_resp_serialize_cgi(&resp, "rid-1", &out));
    assert_non_null(strstr(out.p, "Status: 404 Not Found\r\n"));
    assert_non_null(strstr(out.p, "X-Request-ID: rid-1\r\n"));
    assert_non_null(strstr(out.p, "Content-Length: 9\r\n\r\n{\"a\":\"b\"}"));
    assert_null(strstr(out.p, "\r\nInjected"));
    meao_buf_reset(&out);
    resp.status = 204;
    assert_true(meao_resp_serialize_cgi(&resp, "rid-1", &out));
    assert_null(strstr(out.p, "Content-Length"));
    meao_buf_free(&out);
    meao_resp_free(&resp);
}

/* --- the whole pipeline through meao_app_handle ------------------------- */

struct fixture {
    struct meao_config cfg;
    struct meao_fake_clock clock;
    struct meao_app app;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    char err[256];
    meao_config_defaults(&f->cfg);
    meao_config_set(&f->cfg, "debug_routes", "true", err, sizeof err);
    meao_config_set(&f->cfg, "max_body_bytes", "2048", err, sizeof err);
    meao_fake_clock_init(&f->clock, 1796000000000LL);
    meao_app_init(&f->app, &f->cfg, &f->clock.clock, "test");
    assert_int_equal(meao_db_open(":memory:", 1000, MEAO_DB_MIGRATE, &f->app.db, err, sizeof err),
                     MEAO_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    meao_app_fini(&f->app);
    meao_config_free(&f->cfg);
    free(f);
    return 0;
}

struct result {
    int status;
    json_t *body;
    char rid[MEAO_REQUEST_ID_MAX + 1];
    char allow[256];
};

static struct result run(struct fixture *f, const char *method, const char *uri, const char *ctype,
                         const char *body, const char *rid)
{
    struct meao_req req;
    struct meao_resp resp;
    struct result r = {0};
    meao_req_init(&req);
    meao_resp_init(&resp);
    meao_req_set_param(&req, "REQUEST_METHOD", 14, method, strlen(method));
    meao_req_set_param(&req, "REQUEST_URI", 11, uri, strlen(uri));
    if (strchr(uri, '?'))
        meao_req_set_param(&req, "QUERY_STRING", 12, strchr(uri, '?') + 1,
                           strlen(strchr(uri, '?') + 1));
    if (ctype)
        meao_req_set_param(&req, "CONTENT_TYPE", 12, ctype, strlen(ctype));
    if (rid)
        meao_req_set_param(&req, "HTTP_X_REQUEST_ID", 17, rid, strlen(rid));
    if (body) {
        char len[24];
        snprintf(len, sizeof len, "%zu", strlen(body));
        meao_req_set_param(&req, "CONTENT_LENGTH", 14, len, strlen(len));
        meao_req_take_body(&req, strdup(body), strlen(body));
    }
    meao_app_handle(&f->app, &req, &resp);
    r.status = resp.status;
    if (resp.body.len)
        r.body = json_loadb(resp.body.p, resp.body.len, 0, NULL);
    snprintf(r.rid, sizeof r.rid, "%s", req.request_id);
    for (size_t i = 0; i < resp.nheaders; i++)
        if (strcmp(resp.headers[i].name, "Allow") == 0)
            snprintf(r.allow, sizeof r.allow, "%s", resp.headers[i].value);
    meao_req_free(&req);
    meao_resp_free(&resp);
    return r;
}

static const char *err_code(const struct result *r)
{
    return json_string_value(json_object_get(json_object_get(r->body, "error"), "code"));
}

static void health_is_plain_json_with_request_id(void **state)
{
    struct result r = run(*state, "GET", "/health", NULL, NULL, "my-id");
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.body, "status")), "ok");
    assert_string_equal(json_string_value(json_object_get(r.body, "timestamp")),
                        "2026-11-30T00:53:20.000Z");
    assert_string_equal(r.rid, "my-id");
    json_decref(r.body);
}

static void ready_checks_database_and_orchestrator(void **state)
{
    /* no orchestrator listens on the default socket here: the database is
     * fine, the orchestrator check fails fast and marks itself */
    struct result r = run(*state, "GET", "/ready", NULL, NULL, NULL);
    json_t *checks = json_object_get(r.body, "checks");
    assert_int_equal(r.status, 503);
    assert_true(json_is_false(json_object_get(r.body, "ready")));
    assert_string_equal(json_string_value(json_object_get(checks, "database")), "ok");
    assert_string_equal(json_string_value(json_object_get(checks, "orchestrator")), "unavailable");
    json_decref(r.body);
}

static void ready_503_when_database_cannot_open(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct result r;
    meao_app_db_reset(&f->app);
    meao_config_set(&f->cfg, "db_path", "/nonexistent-dir/x.db", err, sizeof err);
    r = run(f, "GET", "/ready", NULL, NULL, NULL);
    assert_int_equal(r.status, 503);
    assert_true(json_is_false(json_object_get(r.body, "ready")));
    json_decref(r.body);
    r = run(f, "GET", "/health", NULL, NULL, NULL);
    assert_int_equal(r.status, 200);
    json_decref(r.body);
}

static void unknown_path_and_wrong_method(void **state)
{
    struct result r = run(*state, "GET", "/api/v1/nothing", NULL, NULL, "rid-404");
    assert_int_equal(r.status, 404);
    assert_string_equal(err_code(&r), "NOT_FOUND");
    assert_false(json_is_true(json_object_get(r.body, "success")));
    assert_string_equal(json_string_value(json_object_get(r.body, "requestId")), "rid-404");
    json_decref(r.body);
    r = run(*state, "DELETE", "/health", NULL, NULL, NULL);
    assert_int_equal(r.status, 405);
    assert_string_equal(err_code(&r), "METHOD_NOT_ALLOWED");
    assert_string_equal(r.allow, "GET");
    json_decref(r.body);
}

static void body_validation_pipeline(void **state)
{
    struct fixture *f = *state;
    struct result r;
    char big[3000];

    r = run(f, "POST", "/__debug/echo", "application/json; charset=utf-8", "{\"text\":\"hi\"}",
            NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(json_object_get(r.body, "data"), "text")),
                        "hi");
    json_decref(r.body);

    r = run(f, "POST", "/__debug/echo", "text/plain", "{\"text\":\"hi\"}", NULL);
    assert_int_equal(r.status, 415);
    assert_string_equal(err_code(&r), "UNSUPPORTED_MEDIA_TYPE");
    json_decref(r.body);

    r = run(f, "POST", "/__debug/echo", "application/json", "{\"text\":", NULL);
    assert_int_equal(r.status, 400);
    assert_string_equal(err_code(&r), "INVALID_REQUEST");
    json_decref(r.body);

    memset(big, ' ', sizeof big);
    big[sizeof big - 1] = '\0';
    big[0] = '{';
    big[sizeof big - 2] = '}';
    r = run(f, "POST", "/__debug/echo", "application/json", big, NULL);
    assert_int_equal(r.status, 413);
    assert_string_equal(err_code(&r), "PAYLOAD_TOO_LARGE");
    json_decref(r.body);

    r = run(f, "POST", "/__debug/echo", "application/json", "{\"text\":5}", NULL);
    assert_int_equal(r.status, 400);
    assert_string_equal(err_code(&r), "INVALID_PARAMETER");
    json_decref(r.body);

    r = run(f, "POST", "/__debug/echo", "application/json", "{\"text\":\"a\",\"other\":1}", NULL);
    assert_int_equal(r.status, 400);
    json_decref(r.body);

    r = run(f, "POST", "/__debug/echo", "application/json", "[1]", NULL);
    assert_int_equal(r.status, 400);
    json_decref(r.body);

    r = run(f, "POST", "/__debug/echo", "application/json", NULL, NULL);
    assert_int_equal(r.status, 400);
    json_decref(r.body);
}

static void owner_route_requires_auth(void **state)
{
    struct result r = run(*state, "GET", "/health/detailed", NULL, NULL, NULL);
    assert_int_equal(r.status, 401);
    assert_string_equal(err_code(&r), "AUTH_REQUIRED");
    json_decref(r.body);
}

static void client_ip_trusts_only_a_last_hop_address(void **state)
{
    struct fixture *f = *state;
    struct meao_req req;
    char err[256];
    meao_req_init(&req);
    req.remote_addr = (char *)"10.0.0.9";
    req.forwarded_for = (char *)"1.2.3.4, 5.6.7.8";
    /* off by default: the header is a client's word */
    assert_string_equal(meao_app_client_ip(&f->app, &req), "10.0.0.9");
    meao_config_set(&f->cfg, "trust_forwarded_for", "true", err, sizeof err);
    assert_string_equal(meao_app_client_ip(&f->app, &req), "5.6.7.8");
    req.forwarded_for = (char *)"1.2.3.4, 2001:db8::1";
    assert_string_equal(meao_app_client_ip(&f->app, &req), "2001:db8::1");
    req.forwarded_for = (char *)"1.2.3.4, not-an-ip";
    assert_string_equal(meao_app_client_ip(&f->app, &req), "10.0.0.9");
    req.forwarded_for = (char *)"1.2.3.4,";
    assert_string_equal(meao_app_client_ip(&f->app, &req), "10.0.0.9");
}

static void debug_routes_off_by_default(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct result r;
    meao_config_set(&f->cfg, "debug_routes", "false", err, sizeof err);
    r = run(f, "POST", "/__debug/echo", "application/json", "{\"text\":\"hi\"}", NULL);
    assert_int_equal(r.status, 404);
    json_decref(r.body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(router_matches_patterns_and_params),
        cmocka_unit_test(router_404_and_405_with_allow),
        cmocka_unit_test(query_parsing_decodes_and_bounds),
        cmocka_unit_test(params_are_copied_and_content_length_parsed),
        cmocka_unit_test(serialize_cgi_response),
        cmocka_unit_test_setup_teardown(health_is_plain_json_with_request_id, setup, teardown),
        cmocka_unit_test_setup_teardown(ready_checks_database_and_orchestrator, setup, teardown),
        cmocka_unit_test_setup_teardown(ready_503_when_database_cannot_open, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_path_and_wrong_method, setup, teardown),
        cmocka_unit_test_setup_teardown(body_validation_pipeline, setup, teardown),
        cmocka_unit_test_setup_teardown(owner_route_requires_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(client_ip_trusts_only_a_last_hop_address, setup, teardown),
        cmocka_unit_test_setup_teardown(debug_routes_off_by_default, setup, teardown),
    };
    meao_lib_init();
    meao_log_init("test", MEAO_LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
