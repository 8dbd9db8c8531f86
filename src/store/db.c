#include "store/db.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "store/dbmem.h"
#include "store/schema.h"

#define STMT_CACHE 96

struct cached {
    const char *sql;
    sqlite3_stmt *st;
};

struct meao_db {
    sqlite3 *h;
    int busy_timeout_ms;
    bool relaxed;            /* synchronous=NORMAL for the open transaction */
    bool revocation_pending; /* the open transaction revoked tokens */
    size_t ncached;
    struct cached cache[STMT_CACHE];
};

int meao_db_schema_latest(void)
{
    return (int)meao_schema_count;
}

enum meao_err meao_db_err(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW: return MEAO_OK;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_READONLY:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_PROTOCOL: return MEAO_E_DB;
    case SQLITE_CONSTRAINT: return MEAO_E_CONFLICT;
    case SQLITE_NOMEM: return MEAO_E_NOMEM;
    default: return MEAO_E_INTERNAL;
    }
}

static bool low_memory;   /* meao_db_low_memory() was called */
static size_t open_count; /* connections open in this process (low-memory mode) */
static void (*revocation_hook)(void *);
static void *revocation_arg;

static void seterr(char *err, size_t errlen, const char *what, sqlite3 *h)
{
    if (err && errlen)
        snprintf(err, errlen, "database: %s: %s", what, h ? sqlite3_errmsg(h) : "out of memory");
}

static int exec(sqlite3 *h, const char *sql)
{
    return sqlite3_exec(h, sql, NULL, NULL, NULL);
}

static int user_version(sqlite3 *h, int *out)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(h, "PRAGMA user_version", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int(st, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

static enum meao_err migrate(sqlite3 *h, char *err, size_t errlen)
{
    int v = 0, rc;
    char sql[64];

    rc = exec(h, "BEGIN IMMEDIATE");
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "begin migration", h);
        return meao_db_err(rc);
    }
    rc = user_version(h, &v);
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "read schema version", h);
        goto fail;
    }
    if (v > (int)meao_schema_count) {
        if (err)
            snprintf(err, errlen, "database: schema version %d is newer than this binary (%d)", v,
                     (int)meao_schema_count);
        exec(h, "ROLLBACK");
        return MEAO_E_DB;
    }
    for (int i = v; i < (int)meao_schema_count; i++) {
        rc = exec(h, meao_schema[i]);
        if (rc != SQLITE_OK) {
            seterr(err, errlen, "migration failed", h);
            goto fail;
        }
        meao_log(MEAO_LOG_INFO, NULL, "db_migrate", "applied schema migration %d", i + 1);
    }
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", (int)meao_schema_count);
    rc = exec(h, sql);
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "set schema version", h);
        goto fail;
    }
    rc = exec(h, "COMMIT");
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "commit migration", h);
        goto fail;
    }
    return MEAO_OK;
fail:
    exec(h, "ROLLBACK");
    return meao_db_err(rc);
}

enum meao_err meao_db_open(const char *path, int busy_timeout_ms, unsigned flags,
                           struct meao_db **out, char *err, size_t errlen)
{
    struct meao_db *db;
    int rc, v = 0;
    int oflags = (flags & MEAO_DB_READONLY) ? SQLITE_OPEN_READONLY
                                            : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    enum meao_err e = MEAO_E_DB;

    *out = NULL;
    db = calloc(1, sizeof *db);
    if (db == NULL) {
        seterr(err, errlen, "open", NULL);
        return MEAO_E_NOMEM;
    }
    __atomic_add_fetch(&open_count, 1, __ATOMIC_RELAXED);
    db->busy_timeout_ms = busy_timeout_ms;
    rc = sqlite3_open_v2(path, &db->h, oflags | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE, NULL);
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "open", db->h);
        goto fail;
    }
    sqlite3_busy_timeout(db->h, busy_timeout_ms);
    sqlite3_extended_result_codes(db->h, 1);
    if (!(flags & MEAO_DB_READONLY)) {
        if (sqlite3_db_readonly(db->h, "main") == 1) {
            if (err)
                snprintf(err, errlen, "database: %s is not writable", path);
            goto fail;
        }
        rc = exec(db->h, "PRAGMA journal_mode = WAL");
        if (rc != SQLITE_OK) {
            seterr(err, errlen, "enable WAL", db->h);
            goto fail;
        }
    }
    rc = exec(db->h, "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;"
                     " PRAGMA journal_size_limit = 67108864; PRAGMA temp_store = MEMORY;");
    if (rc == SQLITE_OK && low_memory)
        rc = exec(db->h, "PRAGMA cache_size = -64");
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "set pragmas", db->h);
        goto fail;
    }
    if (flags & MEAO_DB_MIGRATE) {
        e = migrate(db->h, err, errlen);
        if (e != MEAO_OK)
            goto fail;
    } else {
        rc = user_version(db->h, &v);
        if (rc != SQLITE_OK) {
            seterr(err, errlen, "read schema version", db->h);
            goto fail;
        }
        if (v != (int)meao_schema_count) {
            if (err)
                snprintf(err, errlen,
                         "database: schema version %d, this binary needs %d (run the migration)", v,
                         (int)meao_schema_count);
            goto fail;
        }
    }
    *out = db;
    return MEAO_OK;
fail:
    meao_db_close(db);
    return e == MEAO_OK ? MEAO_E_DB : e;
}

enum meao_err meao_store_migrate_path(const char *path, int busy_timeout_ms, char *err,
                                      size_t errlen)
{
    struct meao_db *db;
    enum meao_err e = meao_db_open(path, busy_timeout_ms, MEAO_DB_MIGRATE, &db, err, errlen);
    meao_db_close(db);
    return e;
}

void meao_db_close(struct meao_db *db)
{
    if (db == NULL)
        return;
    for (size_t i = 0; i < db->ncached; i++)
        sqlite3_finalize(db->cache[i].st);
    sqlite3_close(db->h);
    free(db);
    __atomic_sub_fetch(&open_count, 1, __ATOMIC_RELAXED);
}

sqlite3 *meao_db_handle(struct meao_db *db)
{
    return db->h;
}

sqlite3_stmt *meao_db_stmt(struct meao_db *db, const char *sql)
{
    sqlite3_stmt *st;
    int rc;
    for (size_t i = 0; i < db->ncached; i++) {
        if (db->cache[i].sql == sql) {
            st = db->cache[i].st;
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            return st;
        }
    }
    if (db->ncached >= STMT_CACHE) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "statement cache full");
        return NULL;
    }
    rc = sqlite3_prepare_v3(db->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "prepare failed: %s", sqlite3_errmsg(db->h));
        return NULL;
    }
    db->cache[db->ncached].sql = sql;
    db->cache[db->ncached].st = st;
    db->ncached++;
    return st;
}

enum meao_err meao_db_begin_immediate(struct meao_db *db)
{
    int rc = exec(db->h, "BEGIN IMMEDIATE");
    if (rc != SQLITE_OK)
        meao_log(MEAO_LOG_WARN, NULL, __func__, "%s", sqlite3_errmsg(db->h));
    return meao_db_err(rc);
}

/* Back to synchronous=FULL after a relaxed transaction. */
static void restore_sync(struct meao_db *db)
{
    if (db->relaxed && sqlite3_get_autocommit(db->h)) {
        exec(db->h, "PRAGMA synchronous = FULL");
        db->relaxed = false;
    }
}

enum meao_err meao_db_begin_relaxed(struct meao_db *db)
{
    int rc = exec(db->h, "PRAGMA synchronous = NORMAL");
    if (rc == SQLITE_OK) {
        db->relaxed = true;
        rc = exec(db->h, "BEGIN IMMEDIATE");
    }
    if (rc != SQLITE_OK) {
        meao_log(MEAO_LOG_WARN, NULL, __func__, "%s", sqlite3_errmsg(db->h));
        restore_sync(db);
    }
    return meao_db_err(rc);
}

enum meao_err meao_db_commit(struct meao_db *db)
{
    int rc = exec(db->h, "COMMIT");
    if (rc != SQLITE_OK) {
        meao_log(MEAO_LOG_WARN, NULL, __func__, "%s", sqlite3_errmsg(db->h));
        exec(db->h, "ROLLBACK");
    }
    restore_sync(db);
    if (db->revocation_pending && rc == SQLITE_OK && revocation_hook)
        revocation_hook(revocation_arg);
    db->revocation_pending = false;
    return meao_db_err(rc);
}

void meao_db_rollback(struct meao_db *db)
{
    if (!sqlite3_get_autocommit(db->h))
        exec(db->h, "ROLLBACK");
    restore_sync(db);
    db->revocation_pending = false;
}

enum meao_err meao_db_check_writable(struct meao_db *db, int timeout_ms)
{
    int rc;
    sqlite3_busy_timeout(db->h, timeout_ms);
    rc = exec(db->h, "BEGIN IMMEDIATE");
    if (rc == SQLITE_OK)
        rc = exec(db->h, "ROLLBACK");
    else
        meao_db_rollback(db);
    sqlite3_busy_timeout(db->h, db->busy_timeout_ms);
    return meao_db_err(rc);
}

enum meao_err meao_db_step(struct meao_db *db, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        if ((rc & 0xff) != SQLITE_CONSTRAINT)
            meao_log(MEAO_LOG_WARN, NULL, "sqlite", "%s", sqlite3_errmsg(db->h));
        return meao_db_err(rc);
    }
    return MEAO_OK;
}

void meao_db_low_memory(void)
{
    /* only takes effect before SQLite initialises, which the first open does */
    if (sqlite3_config(SQLITE_CONFIG_LOOKASIDE, 0, 0) == SQLITE_OK && meao_dbmem_install())
        low_memory = true;
}

void meao_db_release_idle(void)
{
    if (!low_memory || __atomic_load_n(&open_count, __ATOMIC_RELAXED) != 0)
        return;
    /* SQLite's own global state (mutexes, page-cache groups) is freed too;
     * the next open initialises the library again */
    sqlite3_shutdown();
    meao_dbmem_release();
}

void meao_db_set_revocation_hook(void (*fn)(void *), void *arg)
{
    revocation_hook = fn;
    revocation_arg = arg;
}

void meao_db_note_revocation(struct meao_db *db)
{
    if (!sqlite3_get_autocommit(db->h))
        db->revocation_pending = true; /* run at commit */
    else if (revocation_hook)
        revocation_hook(revocation_arg);
}
