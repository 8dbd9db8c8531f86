/* SQLite store: pragmas, migrations, statement cache, readiness check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "http/app.h"
#include "store/db.h"

static char dir[64];
static char path[128];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/meao-store-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.db", dir);
    return 0;
}

static int teardown(void **state)
{
    char cmd[200];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int64_t scalar(struct meao_db *db, const char *sql)
{
    sqlite3_stmt *st;
    int64_t v = -1;
    assert_int_equal(sqlite3_prepare_v2(meao_db_handle(db), sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void migrate_then_open_with_pragmas(void **state)
{
    struct meao_db *db;
    char err[256];
    (void)state;
    /* without migrations a fresh file has the wrong version */
    assert_int_equal(meao_db_open(path, 100, 0, &db, err, sizeof err), MEAO_E_DB);
    assert_null(db);
    assert_non_null(strstr(err, "schema version"));
    assert_int_equal(meao_store_migrate_path(path, 100, err, sizeof err), MEAO_OK);
    assert_int_equal(meao_db_open(path, 100, 0, &db, err, sizeof err), MEAO_OK);
    assert_int_equal(scalar(db, "PRAGMA user_version"), meao_db_schema_latest());
    assert_int_equal(scalar(db, "PRAGMA foreign_keys"), 1);
    assert_int_equal(scalar(db, "PRAGMA synchronous"), 2); /* FULL */
    assert_int_equal(scalar(db, "PRAGMA journal_size_limit"), 67108864);
    {
        sqlite3_stmt *st;
        sqlite3_prepare_v2(meao_db_handle(db), "PRAGMA journal_mode", -1, &st, NULL);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
        sqlite3_finalize(st);
    }
    meao_db_close(db);
    /* migrating again is a no-op */
    assert_int_equal(meao_store_migrate_path(path, 100, err, sizeof err), MEAO_OK);
}

static void newer_schema_is_refused(void **state)
{
    struct meao_db *db;
    char err[256];
    (void)state;
    assert_int_equal(meao_store_migrate_path(path, 100, err, sizeof err), MEAO_OK);
    assert_int_equal(meao_db_open(path, 100, 0, &db, err, sizeof err), MEAO_OK);
    sqlite3_exec(meao_db_handle(db), "PRAGMA user_version = 999", NULL, NULL, NULL);
    meao_db_close(db);
    assert_int_equal(meao_store_migrate_path(path, 100, err, sizeof err), MEAO_E_DB);
    assert_non_null(strstr(err, "newer"));
}

static void concurrent_migrations_apply_once(void **state)
{
    pid_t kids[4];
    struct meao_db *db;
    char err[256];
    (void)state;
    for (int i = 0; i < 4; i++) {
        kids[i] = fork();
        if (kids[i] == 0)
            _exit(meao_store_migrate_path(path, 5000, err, sizeof err) == MEAO_OK ? 0 : 1);
    }
    for (int i = 0; i < 4; i++) {
        int st;
        waitpid(kids[i], &st, 0);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    assert_int_equal(meao_db_open(path, 100, 0, &db, err, sizeof err), MEAO_OK);
    /* migration 1 inserts exactly one meta row: it ran once */
    assert_int_equal(scalar(db, "SELECT count(*) FROM meta WHERE key = 'created_at_ms'"), 1);
    meao_db_close(db);
}

static void statement_cache_reuses_and_resets(void **state)
{
    static const char sql[] = "SELECT ?1 + 1";
    struct meao_db *db;
    sqlite3_stmt *a, *b;
    char err[256];
    (void)state;
    assert_int_equal(meao_db_open(":memory:", 100, MEAO_DB_MIGRATE, &db, err, sizeof err), MEAO_OK);
    a = meao_db_stmt(db, sql);
    assert_non_null(a);
    sqlite3_bind_int(a, 1, 41);
    assert_int_equal(sqlite3_step(a), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(a, 0), 42);
    b = meao_db_stmt(db, sql);
    assert_ptr_equal(a, b);
    assert_int_equal(sqlite3_step(b), SQLITE_ROW);
    assert_int_equal(sqlite3_column_type(b, 0), SQLITE_NULL); /* bindings cleared */
    assert_null(meao_db_stmt(db, "SELEKT nonsense"));
    meao_db_close(db);
    meao_db_close(NULL);
}

static void writable_check_fails_fast_when_locked(void **state)
{
    struct meao_db *a, *b;
    char err[256];
    (void)state;
    assert_int_equal(meao_store_migrate_path(path, 100, err, sizeof err), MEAO_OK);
    assert_int_equal(meao_db_open(path, 5000, 0, &a, err, sizeof err), MEAO_OK);
    assert_int_equal(meao_db_open(path, 5000, 0, &b, err, sizeof err), MEAO_OK);
    assert_int_equal(meao_db_check_writable(b, 50), MEAO_OK);
    assert_int_equal(meao_db_begin_immediate(a), MEAO_OK);
    assert_int_equal(meao_db_check_writable(b, 50), MEAO_E_DB);
    meao_db_rollback(a);
    assert_int_equal(meao_db_check_writable(b, 50), MEAO_OK);
    meao_db_close(a);
    meao_db_close(b);
}

static void garbage_file_is_not_a_database(void **state)
{
    struct meao_db *db;
    char err[256];
    FILE *f = fopen(path, "w");
    (void)state;
    fputs("this is not sqlite, just text padding padding padding padding padding padding\n", f);
    fclose(f);
    assert_int_equal(meao_store_migrate_path(path, 100, err, sizeof err), MEAO_E_DB);
    assert_int_equal(meao_db_open(path, 100, 0, &db, err, sizeof err), MEAO_E_DB);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(migrate_then_open_with_pragmas, setup, teardown),
        cmocka_unit_test_setup_teardown(newer_schema_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_migrations_apply_once, setup, teardown),
        cmocka_unit_test(statement_cache_reuses_and_resets),
        cmocka_unit_test_setup_teardown(writable_check_fails_fast_when_locked, setup, teardown),
        cmocka_unit_test_setup_teardown(garbage_file_is_not_a_database, setup, teardown),
    };
    meao_lib_init();
    meao_log_init("test", MEAO_LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
