/* Low-memory mode of the store (meao-ws): SQLite's private allocator, the
 * shut-down-and-release cycle, and the revocation hook. One process: the
 * allocator is installed once, before SQLite initialises. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store/db.h"
#include "store/dbmem.h"

static char dir[64];
static char path[128];

static int group_setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/meao-dbmem-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(path, sizeof path, "%s/t.db", dir);
    meao_db_low_memory(); /* before anything initialises SQLite */
    return meao_store_migrate_path(path, 1000, NULL, 0) == MEAO_OK ? 0 : -1;
}

static int group_teardown(void **state)
{
    char cmd[160];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void allocator_classes_realloc_and_big_blocks(void **state)
{
    char *a, *b, *big;
    (void)state;
    assert_int_equal(sqlite3_initialize(), SQLITE_OK);
    a = sqlite3_malloc(100);
    assert_non_null(a);
    assert_true(sqlite3_msize(a) >= 100);
    memset(a, 'x', 100);
    b = sqlite3_realloc(a, 101); /* same size class: stays */
    assert_ptr_equal(a, b);
    b = sqlite3_realloc(b, 5000); /* moves, keeps the bytes */
    assert_non_null(b);
    assert_memory_equal(b, "xxxxxxxxxx", 10);
    assert_int_equal(b[99], 'x');
    big = sqlite3_malloc(300 * 1024); /* its own mapping */
    assert_non_null(big);
    memset(big, 1, 300 * 1024);
    sqlite3_free(big);
    sqlite3_free(b);
    assert_int_equal(sqlite3_shutdown(), SQLITE_OK);
    assert_int_equal(meao_dbmem_live(), 0);
}

static void idle_release_then_reopen(void **state)
{
    struct meao_db *db;
    char err[256];
    (void)state;
    for (int round = 0; round < 3; round++) {
        sqlite3_stmt *st;
        assert_int_equal(meao_db_open(path, 1000, 0, &db, err, sizeof err), MEAO_OK);
        st = meao_db_stmt(db, "SELECT count(*) FROM sqlite_master");
        assert_non_null(st);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_true(sqlite3_column_int(st, 0) > 0);
        sqlite3_reset(st);
        assert_true(meao_dbmem_live() > 0);
        meao_db_release_idle(); /* a connection is open: nothing happens */
        assert_true(meao_dbmem_live() > 0);
        meao_db_close(db);
        meao_db_release_idle();
        assert_int_equal(meao_dbmem_live(), 0);
        assert_false(meao_dbmem_release()); /* nothing left to give back */
    }
}

static int hook_calls;
static void hook(void *arg)
{
    assert_ptr_equal(arg, &hook_calls);
    hook_calls++;
}

static void revocation_hook_runs_after_commit_only(void **state)
{
    struct meao_db *db;
    char err[256];
    (void)state;
    assert_int_equal(meao_db_open(path, 1000, 0, &db, err, sizeof err), MEAO_OK);
    meao_db_set_revocation_hook(hook, &hook_calls);
    hook_calls = 0;

    meao_db_note_revocation(db); /* outside a transaction: at once */
    assert_int_equal(hook_calls, 1);

    assert_int_equal(meao_db_begin_immediate(db), MEAO_OK);
    meao_db_note_revocation(db);
    meao_db_note_revocation(db);
    assert_int_equal(hook_calls, 1); /* not before the commit */
    assert_int_equal(meao_db_commit(db), MEAO_OK);
    assert_int_equal(hook_calls, 2); /* once per commit */

    assert_int_equal(meao_db_begin_immediate(db), MEAO_OK);
    meao_db_note_revocation(db);
    meao_db_rollback(db);
    assert_int_equal(hook_calls, 2); /* never after a rollback */
    assert_int_equal(meao_db_begin_immediate(db), MEAO_OK);
    assert_int_equal(meao_db_commit(db), MEAO_OK);
    assert_int_equal(hook_calls, 2); /* the rolled-back note is forgotten */

    meao_db_set_revocation_hook(NULL, NULL);
    meao_db_note_revocation(db);
    assert_int_equal(hook_calls, 2);
    meao_db_close(db);
    meao_db_release_idle();
}

static void revocation_hook_in_a_group_runs_after_the_group_commit(void **state)
{
    struct meao_db *db;
    char err[256];
    (void)state;
    assert_int_equal(meao_db_open(path, 1000, 0, &db, err, sizeof err), MEAO_OK);
    meao_db_set_revocation_hook(hook, &hook_calls);
    hook_calls = 0;

    /* a released part: nothing until the group commits, then once */
    meao_db_group_begin(db);
    assert_int_equal(meao_db_begin_immediate(db), MEAO_OK);
    meao_db_note_revocation(db);
    assert_int_equal(meao_db_commit(db), MEAO_OK); /* released into the group */
    assert_int_equal(hook_calls, 0);
    assert_int_equal(meao_db_begin_relaxed(db), MEAO_OK);
    meao_db_note_revocation(db);
    assert_int_equal(meao_db_commit(db), MEAO_OK);
    assert_int_equal(hook_calls, 0);
    assert_int_equal(meao_db_group_commit(db), MEAO_OK);
    assert_int_equal(hook_calls, 1);

    /* a part rolled back: its revocation never happened */
    meao_db_group_begin(db);
    assert_int_equal(meao_db_begin_immediate(db), MEAO_OK);
    meao_db_note_revocation(db);
    meao_db_rollback(db);
    assert_int_equal(meao_db_begin_immediate(db), MEAO_OK);
    assert_int_equal(meao_db_commit(db), MEAO_OK);
    assert_int_equal(meao_db_group_commit(db), MEAO_OK);
    assert_int_equal(hook_calls, 1);

    meao_db_set_revocation_hook(NULL, NULL);
    meao_db_close(db);
    meao_db_release_idle();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(allocator_classes_realloc_and_big_blocks),
        cmocka_unit_test(idle_release_then_reopen),
        cmocka_unit_test(revocation_hook_runs_after_commit_only),
        cmocka_unit_test(revocation_hook_in_a_group_runs_after_the_group_commit),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
