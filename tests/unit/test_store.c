/* SQLite store: pragmas, migrations, statement cache, readiness check, group
 * commit and the writer lock across processes. */
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
#include "core/clock.h"
#include "core/config.h"
#include "store/db.h"
#include "store/identity.h"

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

/* One audit row, inside whatever transaction the caller opened. */
static void audit_row(struct meao_db *db, const char *action)
{
    assert_int_equal(meao_audit(db, 1, "rid", 0, action, NULL, NULL), MEAO_OK);
}

static int64_t count_actions(struct meao_db *db, const char *action)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM audit WHERE action = '%s'", action);
    return scalar(db, sql);
}

static void open_pair(struct meao_db **w, struct meao_db **r)
{
    char err[256];
    assert_int_equal(meao_store_migrate_path(path, 100, err, sizeof err), MEAO_OK);
    assert_int_equal(meao_db_open(path, 5000, MEAO_DB_WRITER_LOCK, w, err, sizeof err), MEAO_OK);
    assert_int_equal(meao_db_open(path, 5000, MEAO_DB_WRITER_LOCK, r, err, sizeof err), MEAO_OK);
}

/* Parts of a group are invisible to others until group_commit, then all
 * there at once; a rolled-back part is not; pending says when to hold. */
static void group_commits_parts_together(void **state)
{
    struct meao_db *w, *r;
    bool mine = true;
    (void)state;
    open_pair(&w, &r);
    meao_db_group_begin(w);
    assert_false(meao_db_group_pending(w)); /* nothing written: answer at once */
    assert_int_equal(meao_db_begin_relaxed(w), MEAO_OK);
    audit_row(w, "g.one");
    assert_int_equal(meao_db_commit(w), MEAO_OK);
    assert_true(meao_db_group_pending(w));
    assert_int_equal(meao_db_group_joined(w), 1);

    assert_int_equal(meao_db_begin_relaxed(w), MEAO_OK);
    audit_row(w, "g.undone");
    meao_db_rollback(w); /* only this part */
    meao_db_rollback(w); /* no transaction of the caller's own: a no-op */

    assert_int_equal(meao_db_begin_immediate(w), MEAO_OK); /* a FULL part joins too */
    audit_row(w, "g.two");
    assert_int_equal(meao_db_commit(w), MEAO_OK);
    assert_int_equal(meao_db_group_joined(w), 2);

    /* the connection itself reads its uncommitted parts, in the open transaction */
    assert_int_equal(meao_db_begin_read(w, &mine), MEAO_OK);
    assert_false(mine);
    assert_int_equal(count_actions(w, "g.one"), 1);
    meao_db_end_read(w, mine);
    assert_true(meao_db_group_pending(w)); /* end_read left the group alone */
    assert_int_equal(meao_db_check_writable(w, 50), MEAO_OK);

    assert_int_equal(count_actions(r, "g.one"), 0); /* another connection: not yet */
    assert_int_equal(meao_db_group_commit(w), MEAO_OK);
    assert_false(meao_db_group_pending(w));
    assert_int_equal(count_actions(r, "g.one"), 1);
    assert_int_equal(count_actions(r, "g.two"), 1);
    assert_int_equal(count_actions(r, "g.undone"), 0);

    /* after the group, transactions are the caller's own again */
    assert_int_equal(meao_db_begin_relaxed(w), MEAO_OK);
    audit_row(w, "g.after");
    assert_int_equal(meao_db_commit(w), MEAO_OK);
    assert_int_equal(count_actions(r, "g.after"), 1);
    meao_db_close(w);
    meao_db_close(r);
}

/* The shared transaction holds the write lock until group_commit: another
 * connection's writer waits for it (here: gives up after its timeout). */
static void group_holds_the_write_lock(void **state)
{
    struct meao_db *w, *r;
    (void)state;
    open_pair(&w, &r);
    meao_db_group_begin(w);
    assert_int_equal(meao_db_begin_relaxed(w), MEAO_OK);
    audit_row(w, "g.held");
    assert_int_equal(meao_db_commit(w), MEAO_OK);
    assert_int_equal(meao_db_check_writable(r, 20), MEAO_E_DB);
    assert_int_equal(meao_db_group_commit(w), MEAO_OK);
    assert_int_equal(meao_db_check_writable(r, 20), MEAO_OK);
    /* an empty group commits nothing and succeeds */
    meao_db_group_begin(w);
    assert_int_equal(meao_db_group_commit(w), MEAO_OK);
    meao_db_close(w);
    meao_db_close(r);
}

/* A part its caller never ended is rolled back by group_commit; the rest of
 * the group is still stored. */
static void group_rolls_back_an_unfinished_part(void **state)
{
    struct meao_db *w, *r;
    (void)state;
    open_pair(&w, &r);
    meao_db_group_begin(w);
    assert_int_equal(meao_db_begin_relaxed(w), MEAO_OK);
    audit_row(w, "g.kept");
    assert_int_equal(meao_db_commit(w), MEAO_OK);
    assert_int_equal(meao_db_begin_relaxed(w), MEAO_OK);
    audit_row(w, "g.dangling");
    assert_int_equal(meao_db_begin_relaxed(w), MEAO_E_INTERNAL); /* no nesting */
    assert_int_equal(meao_db_group_commit(w), MEAO_OK);
    assert_int_equal(count_actions(r, "g.kept"), 1);
    assert_int_equal(count_actions(r, "g.dangling"), 0);
    meao_db_close(w);
    meao_db_close(r);
}

/* The connection is dropped mid-batch (an I/O error): the batch reports a
 * failure, so its held answers become errors, and nothing of it is stored. */
static void batch_fails_when_its_connection_is_dropped(void **state)
{
    struct meao_config cfg;
    struct meao_app app;
    struct meao_db *r, *db;
    char err[256];
    (void)state;
    assert_int_equal(meao_store_migrate_path(path, 100, err, sizeof err), MEAO_OK);
    meao_config_defaults(&cfg);
    assert_int_equal(meao_config_set(&cfg, "db_path", path, err, sizeof err), MEAO_OK);
    meao_app_init(&app, &cfg, meao_clock_system(), "test");
    meao_app_batch_begin(&app);
    assert_false(meao_app_batch_pending(&app));
    db = meao_app_db(&app); /* opened inside the batch: joins it */
    assert_non_null(db);
    assert_int_equal(meao_db_begin_relaxed(db), MEAO_OK);
    audit_row(db, "b.lost");
    assert_int_equal(meao_db_commit(db), MEAO_OK);
    assert_true(meao_app_batch_pending(&app));
    assert_int_equal(meao_app_batch_joined(&app), 1);
    meao_app_db_reset(&app);
    assert_true(meao_app_batch_pending(&app));
    assert_int_equal(meao_app_batch_end(&app), MEAO_E_DB);
    assert_false(meao_app_batch_pending(&app));

    /* the next batch works normally */
    meao_app_batch_begin(&app);
    db = meao_app_db(&app);
    assert_non_null(db);
    assert_int_equal(meao_db_begin_relaxed(db), MEAO_OK);
    audit_row(db, "b.kept");
    assert_int_equal(meao_db_commit(db), MEAO_OK);
    assert_int_equal(meao_app_batch_end(&app), MEAO_OK);
    assert_int_equal(meao_db_open(path, 1000, 0, &r, err, sizeof err), MEAO_OK);
    assert_int_equal(count_actions(r, "b.lost"), 0);
    assert_int_equal(count_actions(r, "b.kept"), 1);
    meao_db_close(r);
    meao_app_fini(&app);
    meao_config_free(&cfg);
}

/* Several processes writing through the writer lock: every transaction
 * commits (none gives up busy), nothing is lost. */
static void writers_in_several_processes(void **state)
{
    struct meao_db *r;
    pid_t pids[4];
    char err[256];
    (void)state;
    assert_int_equal(meao_store_migrate_path(path, 100, err, sizeof err), MEAO_OK);
    for (int i = 0; i < 4; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            struct meao_db *db;
            if (meao_db_open(path, 10000, MEAO_DB_WRITER_LOCK, &db, err, sizeof err) != MEAO_OK)
                _exit(1);
            for (int k = 0; k < 200; k++) {
                bool group = k % 2 == 0;
                if (group)
                    meao_db_group_begin(db);
                if (meao_db_begin_relaxed(db) != MEAO_OK ||
                    meao_audit(db, 1, "rid", 0, "p.write", NULL, NULL) != MEAO_OK ||
                    meao_db_commit(db) != MEAO_OK)
                    _exit(2);
                if (group && meao_db_group_commit(db) != MEAO_OK)
                    _exit(3);
            }
            meao_db_close(db);
            _exit(0);
        }
    }
    for (int i = 0; i < 4; i++) {
        int status = 0;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    assert_int_equal(meao_db_open(path, 1000, 0, &r, err, sizeof err), MEAO_OK);
    assert_int_equal(count_actions(r, "p.write"), 800);
    meao_db_close(r);
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
        cmocka_unit_test_setup_teardown(group_commits_parts_together, setup, teardown),
        cmocka_unit_test_setup_teardown(group_holds_the_write_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(group_rolls_back_an_unfinished_part, setup, teardown),
        cmocka_unit_test_setup_teardown(batch_fails_when_its_connection_is_dropped, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(writers_in_several_processes, setup, teardown),
    };
    meao_lib_init();
    meao_log_init("test", MEAO_LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
