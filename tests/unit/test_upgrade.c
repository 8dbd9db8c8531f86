/* Upgrades: a database left at every earlier schema version (built by running
 * the migrations list up to version k, with rows of that version's tables)
 * migrates forward to this binary's version, keeps its rows, passes
 * integrity_check and serves requests through the whole pipeline. A newer
 * database is refused (migrations are forward-only), and an old backup
 * restores into the current schema. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/secrets.h"
#include "auth/token.h"
#include "core/clock.h"
#include "core/config.h"
#include "http/app.h"
#include "store/backup.h"
#include "store/db.h"
#include "store/identity.h"
#include "store/schema.h"

#define NOW 1796000000000LL

static char dir[64];

static int setup(void **state)
{
    char path[128], err[256];
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/meao-upgrade-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/secret.key", dir);
    assert_int_equal(meao_secrets_create(path, err, sizeof err), MEAO_OK);
    snprintf(path, sizeof path, "%s/ws", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void exec_ok(sqlite3 *h, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(h, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("%s: %s", sql, msg ? msg : "?");
}

/* A database as a release with schema version k left it, with a row in the
 * tables that version had. */
static void build_at_version(const char *path, int k)
{
    sqlite3 *h;
    char sql[64];
    unlink(path);
    assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
    exec_ok(h, "PRAGMA journal_mode = WAL");
    for (int i = 0; i < k; i++)
        exec_ok(h, meao_schema[i]);
    if (k >= 1)
        exec_ok(h, "INSERT INTO audit(at_ms, action, target) VALUES (1, 'fixture', 'v1')");
    if (k >= 2)
        exec_ok(h, "INSERT INTO users(id, name, role, created_ms) VALUES (7, 'alice', 'owner', 1)");
    if (k >= 3)
        exec_ok(h, "INSERT INTO sessions(public_id, user_id, channel, work_dir, status,"
                   " created_ms, updated_ms) VALUES ('ses_fixture', 7, 'rest', '', 'ended', 1, 1)");
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", k);
    exec_ok(h, sql);
    sqlite3_close(h);
}

static int64_t count(struct meao_db *db, const char *sql)
{
    sqlite3_stmt *st;
    int64_t n = -1;
    assert_int_equal(sqlite3_prepare_v2(meao_db_handle(db), sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

static int request(struct meao_app *app, const char *method, const char *uri, const char *token,
                   const char *body, json_t **out)
{
    struct meao_req req;
    struct meao_resp resp;
    char auth[160];
    int status;
    meao_req_init(&req);
    meao_resp_init(&resp);
    meao_req_set_param(&req, "REQUEST_METHOD", 14, method, strlen(method));
    meao_req_set_param(&req, "REQUEST_URI", 11, uri, strlen(uri));
    if (strchr(uri, '?')) /* as nginx passes it */
        meao_req_set_param(&req, "QUERY_STRING", 12, strchr(uri, '?') + 1,
                           strlen(strchr(uri, '?') + 1));
    meao_req_set_param(&req, "REMOTE_ADDR", 11, "127.0.0.1", 9);
    snprintf(auth, sizeof auth, "Bearer %s", token);
    meao_req_set_param(&req, "HTTP_AUTHORIZATION", 18, auth, strlen(auth));
    if (body) {
        char len[24];
        snprintf(len, sizeof len, "%zu", strlen(body));
        meao_req_set_param(&req, "CONTENT_TYPE", 12, "application/json", 16);
        meao_req_set_param(&req, "CONTENT_LENGTH", 14, len, strlen(len));
        meao_req_take_body(&req, strdup(body), strlen(body));
    }
    meao_app_handle(app, &req, &resp);
    status = resp.status;
    if (out)
        *out = resp.body.len ? json_loadb(resp.body.p, resp.body.len, 0, NULL) : NULL;
    meao_req_free(&req);
    meao_resp_free(&resp);
    return status;
}

/* Migrate the database at path and serve requests from it. */
static void migrate_and_serve(const char *path, int k)
{
    struct meao_config cfg;
    struct meao_fake_clock clock;
    struct meao_app app;
    struct meao_db *db;
    struct meao_token_pair pair;
    struct meao_token_ttl ttl = {3600000, 7200000};
    char err[256], val[160];
    json_t *body = NULL;
    int64_t uid = 7;
    int version = -1;

    assert_int_equal(meao_db_open(path, 1000, MEAO_DB_MIGRATE, &db, err, sizeof err), MEAO_OK);
    assert_int_equal(count(db, "PRAGMA user_version"), meao_db_schema_latest());
    assert_int_equal(count(db, "SELECT count(*) FROM audit WHERE action = 'fixture'"), k >= 1);
    assert_int_equal(count(db, "SELECT count(*) FROM users WHERE name = 'alice'"), k >= 2);
    assert_int_equal(count(db, "SELECT count(*) FROM sessions"), k >= 3);
    meao_db_close(db);
    assert_int_equal(meao_db_verify(path, &version, err, sizeof err), MEAO_OK);
    assert_int_equal(version, meao_db_schema_latest());
    /* a second start migrates nothing and changes nothing */
    assert_int_equal(meao_store_migrate_path(path, 1000, err, sizeof err), MEAO_OK);

    meao_config_defaults(&cfg);
    snprintf(val, sizeof val, "%s/secret.key", dir);
    meao_config_set(&cfg, "secret_file", val, err, sizeof err);
    meao_config_set(&cfg, "db_path", path, err, sizeof err);
    snprintf(val, sizeof val, "%s/ws", dir);
    meao_config_set(&cfg, "workspace_root", val, err, sizeof err);
    snprintf(val, sizeof val, "%s/rl.shm", dir);
    meao_config_set(&cfg, "ratelimit_shm", val, err, sizeof err);
    meao_config_set(&cfg, "ratelimit_enabled", "false", err, sizeof err);
    meao_fake_clock_init(&clock, NOW);
    assert_int_equal(meao_app_init(&app, &cfg, &clock.clock, "test"), MEAO_OK);
    db = meao_app_db(&app);
    assert_non_null(db);
    if (k < 2)
        assert_int_equal(meao_user_create(db, "alice", MEAO_ROLE_OWNER, NOW, &uid), MEAO_OK);
    assert_int_equal(
        meao_device_enroll(db, meao_app_secrets(&app), uid, "upgrade", NOW, &ttl, &pair), MEAO_OK);

    assert_int_equal(request(&app, "GET", "/api/v1/auth/me", pair.access, NULL, &body), 200);
    assert_string_equal(json_string_value(json_object_get(json_object_get(body, "data"), "name")),
                        "alice");
    json_decref(body);
    assert_int_equal(
        request(&app, "POST", "/api/v1/sessions", pair.access, "{\"channel\":\"rest\"}", NULL),
        201);
    assert_int_equal(
        request(&app, "GET", "/api/v1/sessions?status=active", pair.access, NULL, &body), 200);
    assert_int_equal(json_array_size(json_object_get(json_object_get(body, "data"), "sessions")),
                     1);
    json_decref(body);
    meao_app_fini(&app);
    meao_config_free(&cfg);
}

static void every_earlier_version_migrates_and_serves(void **state)
{
    char path[128];
    (void)state;
    assert_true(meao_schema_count >= 1);
    for (int k = 0; k < (int)meao_schema_count; k++) {
        snprintf(path, sizeof path, "%s/v%d.db", dir, k);
        build_at_version(path, k);
        print_message("schema version %d -> %d\n", k, meao_db_schema_latest());
        migrate_and_serve(path, k);
    }
}

static void a_newer_database_is_refused(void **state)
{
    char path[128], target[128], err[256];
    struct meao_db *db = NULL;
    sqlite3 *h;
    char sql[64];
    (void)state;
    snprintf(path, sizeof path, "%s/newer.db", dir);
    build_at_version(path, (int)meao_schema_count);
    assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", (int)meao_schema_count + 1);
    exec_ok(h, sql);
    sqlite3_close(h);
    assert_int_equal(meao_db_open(path, 1000, MEAO_DB_MIGRATE, &db, err, sizeof err), MEAO_E_DB);
    assert_null(db);
    assert_non_null(strstr(err, "newer than this binary"));
    /* nor restored from */
    snprintf(target, sizeof target, "%s/target.db", dir);
    assert_int_equal(meao_db_restore(path, target, 1000, err, sizeof err),
                     MEAO_E_INVALID_PARAMETER);
    assert_non_null(strstr(err, "newer"));
}

static void an_old_backup_restores_into_the_current_schema(void **state)
{
    char old[128], backup[128], target[128], err[256];
    int version = -1;
    (void)state;
    if (meao_schema_count < 3)
        skip();
    snprintf(old, sizeof old, "%s/old.db", dir);
    snprintf(backup, sizeof backup, "%s/old-backup.db", dir);
    snprintf(target, sizeof target, "%s/restored.db", dir);
    build_at_version(old, 2);
    assert_int_equal(meao_db_backup(old, backup, 1000, NULL, err, sizeof err), MEAO_OK);
    assert_int_equal(meao_db_verify(backup, &version, err, sizeof err), MEAO_OK);
    assert_int_equal(version, 2);
    assert_int_equal(meao_db_restore(backup, target, 1000, err, sizeof err), MEAO_OK);
    migrate_and_serve(target, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_earlier_version_migrates_and_serves),
        cmocka_unit_test(a_newer_database_is_refused),
        cmocka_unit_test(an_old_backup_restores_into_the_current_schema),
    };
    meao_lib_init();
    return cmocka_run_group_tests(tests, setup, teardown);
}
