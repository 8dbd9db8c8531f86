/* Core library: errors, ids, buffers, JSON bounds, config, log redaction. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/err.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/log.h"
#include "http/app.h"

static void err_maps_to_status_and_code(void **state)
{
    (void)state;
    assert_int_equal(meao_err_info(MEAO_E_NOT_FOUND)->status, 404);
    assert_string_equal(meao_err_info(MEAO_E_NOT_FOUND)->code, "NOT_FOUND");
    assert_int_equal(meao_err_info(MEAO_E_PAYLOAD_TOO_LARGE)->status, 413);
    assert_int_equal(meao_err_info(MEAO_E_UNSUPPORTED_MEDIA_TYPE)->status, 415);
    assert_int_equal(meao_err_info(MEAO_E_DB)->status, 503);
    assert_string_equal(meao_err_info(MEAO_E_DB)->code, "SERVICE_UNAVAILABLE");
    assert_int_equal(meao_err_info(MEAO_E_TIMEOUT)->status, 504);
    assert_int_equal(meao_err_info(MEAO_E_PROVIDER)->status, 502);
    /* out-of-range values never index past the table */
    assert_int_equal(meao_err_info((enum meao_err)9999)->status, 500);
    assert_int_equal(meao_err_info((enum meao_err) - 1)->status, 500);
    for (int e = 0; e < MEAO_E_COUNT_; e++)
        assert_true(strlen(meao_err_info((enum meao_err)e)->message) <= 200);
}

static void request_id_validation(void **state)
{
    char sixty4[65], sixty5[66];
    (void)state;
    memset(sixty4, 'a', 64);
    sixty4[64] = '\0';
    memset(sixty5, 'a', 65);
    sixty5[65] = '\0';
    assert_true(meao_request_id_valid("abc-123.x:y_z"));
    assert_true(meao_request_id_valid(sixty4));
    assert_false(meao_request_id_valid(sixty5));
    assert_false(meao_request_id_valid(""));
    assert_false(meao_request_id_valid(NULL));
    assert_false(meao_request_id_valid("has space"));
    assert_false(meao_request_id_valid("<script>"));
    assert_false(meao_request_id_valid("caf\xc3\xa9"));
    assert_false(meao_request_id_valid("a\r\nX-Evil: 1"));
}

static void request_id_pick_keeps_or_mints_uuid4(void **state)
{
    char out[MEAO_REQUEST_ID_MAX + 1], out2[MEAO_REQUEST_ID_MAX + 1];
    (void)state;
    meao_request_id_pick("client-id-1", out);
    assert_string_equal(out, "client-id-1");
    meao_request_id_pick("bad id", out);
    assert_int_equal(strlen(out), 36);
    assert_int_equal(out[14], '4');               /* version nibble */
    assert_true(strchr("89ab", out[19]) != NULL); /* variant */
    meao_request_id_pick(NULL, out2);
    assert_string_not_equal(out, out2);
}

static void buf_grows_and_formats(void **state)
{
    struct meao_buf b = {0};
    (void)state;
    for (int i = 0; i < 1000; i++)
        assert_true(meao_buf_printf(&b, "%d,", i));
    assert_true(b.len > 3000);
    assert_int_equal(b.p[b.len], '\0');
    meao_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_true(meao_buf_printf(&b, "%s", "x"));
    assert_string_equal(b.p, "x");
    meao_buf_free(&b);
    meao_buf_free(NULL);
}

static enum meao_err parse(const char *s, json_t **out)
{
    return meao_json_parse(s, strlen(s), 1 << 20, 32, out, NULL, 0);
}

static void json_accepts_valid_object(void **state)
{
    json_t *v;
    (void)state;
    assert_int_equal(parse("{\"a\":[1,2,{\"b\":\"c\"}]}", &v), MEAO_OK);
    assert_true(json_is_object(v));
    json_decref(v);
}

static void json_rejects_bad_input(void **state)
{
    json_t *v;
    char why[201];
    (void)state;
    assert_int_equal(parse("{\"a\":", &v), MEAO_E_INVALID_REQUEST);
    assert_null(v);
    assert_int_equal(parse("", &v), MEAO_E_INVALID_REQUEST);
    assert_int_equal(parse("{\"a\":1,\"a\":2}", &v), MEAO_E_INVALID_REQUEST);
    assert_int_equal(parse("{\"a\":\"x\\u0000y\"}", &v), MEAO_E_INVALID_REQUEST);
    assert_int_equal(meao_json_parse("{\"a\":\"\0\"}", 9, 100, 32, &v, NULL, 0),
                     MEAO_E_INVALID_REQUEST);
    assert_int_equal(parse("{\"a\":\"\xff\xfe\"}", &v), MEAO_E_INVALID_REQUEST);
    assert_int_equal(meao_json_parse("{}", 2, 1, 32, &v, why, sizeof why),
                     MEAO_E_PAYLOAD_TOO_LARGE);
    /* the reason never echoes the client's bytes */
    assert_int_equal(meao_json_parse("{\"k\": meao_at_secret}", 21, 100, 32, &v, why, sizeof why),
                     MEAO_E_INVALID_REQUEST);
    assert_null(strstr(why, "secret"));
}

static void json_nesting_limit(void **state)
{
    char deep[200];
    json_t *v;
    (void)state;
    /* 32 levels pass, 33 fail; brackets inside strings do not count */
    memset(deep, 0, sizeof deep);
    for (int i = 0; i < 32; i++)
        deep[i] = '[';
    for (int i = 0; i < 32; i++)
        deep[32 + i] = ']';
    assert_int_equal(parse(deep, &v), MEAO_OK);
    json_decref(v);
    memset(deep, 0, sizeof deep);
    for (int i = 0; i < 33; i++)
        deep[i] = '[';
    for (int i = 0; i < 33; i++)
        deep[33 + i] = ']';
    assert_int_equal(parse(deep, &v), MEAO_E_INVALID_REQUEST);
    assert_int_equal(meao_json_depth("{\"a\":\"[[[[[[\\\"[[[\"}", 19, 32), 1);
}

static void config_defaults_file_env(void **state)
{
    struct meao_config cfg;
    char err[256];
    char path[] = "/tmp/meao-test-config-XXXXXX";
    int fd = mkstemp(path);
    FILE *f;
    (void)state;
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    fprintf(f, "# comment\n\ndb_path = /tmp/x.db\nfcgi_socket_mode = 0600\nlog_level=warn\n"
               "max_body_bytes = \"2048\"\n");
    fclose(f);
    setenv("MEAO_FCGI_WORKERS", "3", 1);
    assert_int_equal(meao_config_load(&cfg, path, err, sizeof err), 0);
    assert_string_equal(cfg.db_path, "/tmp/x.db");
    assert_int_equal(cfg.fcgi_socket_mode, 0600);
    assert_int_equal(cfg.log_level, MEAO_LOG_WARN);
    assert_int_equal(cfg.max_body_bytes, 2048);
    assert_int_equal(cfg.fcgi_workers, 3);
    assert_int_equal(cfg.max_json_depth, 32); /* default */
    meao_config_free(&cfg);
    unsetenv("MEAO_FCGI_WORKERS");
    unlink(path);
}

static void config_bad_value_names_the_key(void **state)
{
    struct meao_config cfg;
    char err[256];
    (void)state;
    meao_config_defaults(&cfg);
    assert_int_equal(meao_config_set(&cfg, "max_body_bytes", "lots", err, sizeof err), -1);
    assert_non_null(strstr(err, "max_body_bytes"));
    assert_int_equal(meao_config_set(&cfg, "fcgi_socket_mode", "0999", err, sizeof err), -1);
    assert_non_null(strstr(err, "fcgi_socket_mode"));
    assert_int_equal(meao_config_set(&cfg, "log_level", "loud", err, sizeof err), -1);
    assert_non_null(strstr(err, "log_level"));
    assert_int_equal(meao_config_set(&cfg, "no_such_key", "1", err, sizeof err), -1);
    assert_non_null(strstr(err, "no_such_key"));
    meao_config_free(&cfg);
    setenv("MEAO_MAX_JSON_DEPTH", "0", 1);
    assert_int_equal(meao_config_load(&cfg, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "MEAO_MAX_JSON_DEPTH"));
    unsetenv("MEAO_MAX_JSON_DEPTH");
    assert_int_equal(meao_config_load(&cfg, "/nonexistent/meao.conf", err, sizeof err), -1);
    meao_config_free(&cfg);
}

/* deploy/meao.conf.example documents every key with its default, and the
 * file itself loads cleanly: the documentation cannot drift from the code. */
static void example_config_documents_every_key(void **state)
{
    struct meao_config cfg;
    char err[256], path[512], line[512];
    FILE *f;
    (void)state;
    snprintf(path, sizeof path, "%s/deploy/meao.conf.example", MEAO_SOURCE_DIR);
    assert_int_equal(meao_config_load(&cfg, path, err, sizeof err), 0);
    meao_config_free(&cfg);
    for (size_t i = 0; i < meao_config_key_count(); i++) {
        const char *name = meao_config_key_name(i);
        bool found = false;
        f = fopen(path, "r");
        assert_non_null(f);
        while (!found && fgets(line, sizeof line, f)) {
            size_t n = strlen(name);
            if (strncmp(line, name, n) == 0 && line[n] == ' ') {
                char want[300];
                const char *def = meao_config_key_default(i);
                snprintf(want, sizeof want, def[0] ? "%s = %s\n" : "%s =%s\n", name, def);
                if (strcmp(line, want) != 0)
                    fail_msg("%s: example says \"%s\", default is \"%s\"", name, line,
                             meao_config_key_default(i));
                found = true;
            }
        }
        fclose(f);
        if (!found)
            fail_msg("key %s is not documented in deploy/meao.conf.example", name);
    }
}

static void log_redacts_tokens(void **state)
{
    char s[] = "auth meao_at_4bX9zzzzzzzzzzzzzzzzzzzzzzzzz and Bearer abc.def rest";
    (void)state;
    meao_log_redact(s);
    assert_null(strstr(s, "4bX9"));
    assert_null(strstr(s, "abc.def"));
    assert_non_null(strstr(s, "rest"));
}

static void fake_clock_moves_only_when_told(void **state)
{
    struct meao_fake_clock fc;
    char ts[32];
    (void)state;
    meao_fake_clock_init(&fc, 1764266400000LL);
    assert_int_equal(meao_now_ms(&fc.clock), 1764266400000LL);
    meao_fake_clock_advance(&fc, 1500);
    assert_int_equal(meao_now_ms(&fc.clock), 1764266401500LL);
    assert_string_equal(meao_iso8601(meao_now_ms(&fc.clock), ts, sizeof ts),
                        "2025-11-27T18:00:01.500Z");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(err_maps_to_status_and_code),
        cmocka_unit_test(request_id_validation),
        cmocka_unit_test(request_id_pick_keeps_or_mints_uuid4),
        cmocka_unit_test(buf_grows_and_formats),
        cmocka_unit_test(json_accepts_valid_object),
        cmocka_unit_test(json_rejects_bad_input),
        cmocka_unit_test(json_nesting_limit),
        cmocka_unit_test(config_defaults_file_env),
        cmocka_unit_test(config_bad_value_names_the_key),
        cmocka_unit_test(example_config_documents_every_key),
        cmocka_unit_test(log_redacts_tokens),
        cmocka_unit_test(fake_clock_moves_only_when_told),
    };
    meao_lib_init();
    meao_log_init("test", MEAO_LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
