#include "store/db.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "store/dbmem.h"
#include "store/schema.h"
#include "store/wlock.h"

#define STMT_CACHE 112

/* Transaction control, prepared once per connection like everything else
 * (sqlite3_exec would parse them on every request). */
static const char SQL_BEGIN[] = "BEGIN IMMEDIATE";
static const char SQL_BEGIN_READ[] = "BEGIN";
static const char SQL_COMMIT[] = "COMMIT";
static const char SQL_ROLLBACK[] = "ROLLBACK";
static const char SQL_SYNC_NORMAL[] = "PRAGMA synchronous = NORMAL";
static const char SQL_SYNC_FULL[] = "PRAGMA synchronous = FULL";
static const char SQL_SAVEPOINT[] = "SAVEPOINT meao_part";
static const char SQL_RELEASE[] = "RELEASE meao_part";
static const char SQL_ROLLBACK_TO[] = "ROLLBACK TO meao_part";

struct cached {
    const char *sql;
    sqlite3_stmt *st;
};

struct meao_db {
    sqlite3 *h;
    int busy_timeout_ms;
    bool relaxed;             /* synchronous=NORMAL for the open transaction */
    struct meao_wlock *wlock; /* NULL: SQLite's busy handler alone */
    bool wlocked;             /* this connection holds the writer lock */
    /* group commit (meao_db_group_begin .. meao_db_group_commit) */
    bool group;              /* transactions join one shared transaction */
    bool shared;             /* that transaction is open */
    bool in_part;            /* a caller's transaction is open in it (a savepoint) */
    bool part_full;          /* ... and that caller asked for synchronous=FULL */
    bool group_full;         /* some released part did: commit the whole with FULL */
    enum meao_err group_err; /* the shared transaction was lost: the group failed */
    unsigned joined;         /* parts released into the shared transaction */
    /* revocations waiting for their commit (meao_db_note_revocation) */
    bool revocation_pending; /* in this connection's own transaction */
    bool part_revoked;       /* in the open part of a group */
    bool group_revoked;      /* in a released part, or the shared transaction itself */
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

/* Switching a new file to WAL is not covered by the busy handler: processes
 * opening a fresh database at the same moment (a master and meaoctl, or the
 * migrators of a test) get "database is locked", or a transient I/O error on
 * the loser's side, at once. Retry: locked for up to the busy timeout, an I/O
 * error for up to 100 ms (a real one must not stall an opener for long). */
static int enable_wal(sqlite3 *h, int busy_timeout_ms)
{
    for (int waited_ms = 0;; waited_ms += 5) {
        int rc = exec(h, "PRAGMA journal_mode = WAL");
        int kind = rc & 0xff;
        bool retry = false;
        if (kind == SQLITE_BUSY || kind == SQLITE_LOCKED)
            retry = waited_ms < busy_timeout_ms;
        else if (kind == SQLITE_IOERR)
            retry = waited_ms < 100;
        if (!retry)
            return rc;
        usleep(5000);
    }
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
        rc = enable_wal(db->h, busy_timeout_ms);
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
    if ((flags & MEAO_DB_WRITER_LOCK) && !(flags & MEAO_DB_READONLY) && path[0] != '\0' &&
        strcmp(path, ":memory:") != 0 && strncmp(path, "file:", 5) != 0) {
        char lpath[4200];
        /* without it writers still serialise, through SQLite's busy handler */
        if ((size_t)snprintf(lpath, sizeof lpath, "%s-wlock", path) < sizeof lpath)
            (void)meao_wlock_open(lpath, &db->wlock);
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
    sqlite3_close(db->h); /* rolls back whatever is open */
    if (db->wlocked)
        meao_wlock_release(db->wlock);
    meao_wlock_close(db->wlock);
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

/* Step one of the transaction-control statements above. */
static int run(struct meao_db *db, const char *sql)
{
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    int rc;
    if (st == NULL)
        return SQLITE_ERROR;
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static enum meao_err take_writer(struct meao_db *db, int timeout_ms)
{
    enum meao_err e;
    if (db->wlock == NULL || db->wlocked)
        return MEAO_OK;
    e = meao_wlock_acquire(db->wlock, timeout_ms, NULL);
    if (e == MEAO_OK)
        db->wlocked = true;
    else
        meao_log(MEAO_LOG_WARN, NULL, "sqlite", "writer lock busy for %d ms", timeout_ms);
    return e;
}

/* Let go of the writer lock once no transaction is open any more. */
static void drop_writer(struct meao_db *db)
{
    if (db->wlocked && sqlite3_get_autocommit(db->h)) {
        meao_wlock_release(db->wlock);
        db->wlocked = false;
    }
}

/* Back to synchronous=FULL after a relaxed transaction. */
static void restore_sync(struct meao_db *db)
{
    if (db->relaxed && sqlite3_get_autocommit(db->h)) {
        run(db, SQL_SYNC_FULL);
        db->relaxed = false;
    }
}

/* Open a transaction of the caller's own: writer lock, then BEGIN IMMEDIATE. */
static enum meao_err begin_own(struct meao_db *db, bool relaxed)
{
    int rc = SQLITE_OK;
    enum meao_err e = take_writer(db, db->busy_timeout_ms);
    if (e != MEAO_OK)
        return e;
    if (relaxed) {
        rc = run(db, SQL_SYNC_NORMAL);
        if (rc == SQLITE_OK)
            db->relaxed = true;
    }
    if (rc == SQLITE_OK)
        rc = run(db, SQL_BEGIN);
    if (rc != SQLITE_OK) {
        meao_log(MEAO_LOG_WARN, NULL, "sqlite", "begin: %s", sqlite3_errmsg(db->h));
        restore_sync(db);
        drop_writer(db);
    }
    return meao_db_err(rc);
}

/* SQLite rolled the shared transaction back by itself (I/O error, disk full):
 * everything released into it is gone, so the whole group has failed. */
static void check_shared_lost(struct meao_db *db)
{
    if (db->shared && sqlite3_get_autocommit(db->h)) {
        meao_log(MEAO_LOG_ERROR, NULL, "sqlite", "group transaction lost: %s",
                 sqlite3_errmsg(db->h));
        db->shared = false;
        db->in_part = false;
        if (db->group_err == MEAO_OK)
            db->group_err = MEAO_E_DB;
        restore_sync(db);
        drop_writer(db);
    }
}

/* In a group: open the shared transaction if needed, then the caller's part
 * of it as a savepoint. */
static enum meao_err begin_part(struct meao_db *db, bool full)
{
    enum meao_err e;
    int rc;
    if (db->group_err != MEAO_OK)
        return db->group_err;
    if (db->in_part) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "nested transaction");
        return MEAO_E_INTERNAL;
    }
    if (!db->shared) {
        e = begin_own(db, true);
        if (e != MEAO_OK)
            return e;
        db->shared = true;
    }
    rc = run(db, SQL_SAVEPOINT);
    if (rc != SQLITE_OK) {
        meao_log(MEAO_LOG_WARN, NULL, "sqlite", "savepoint: %s", sqlite3_errmsg(db->h));
        check_shared_lost(db);
        return meao_db_err(rc);
    }
    db->in_part = true;
    db->part_full = full;
    return MEAO_OK;
}

enum meao_err meao_db_begin_immediate(struct meao_db *db)
{
    return db->group ? begin_part(db, true) : begin_own(db, false);
}

enum meao_err meao_db_begin_relaxed(struct meao_db *db)
{
    return db->group ? begin_part(db, false) : begin_own(db, true);
}

enum meao_err meao_db_commit(struct meao_db *db)
{
    int rc;
    if (db->in_part) {
        rc = run(db, SQL_RELEASE);
        if (rc != SQLITE_OK) {
            meao_log(MEAO_LOG_WARN, NULL, "sqlite", "release: %s", sqlite3_errmsg(db->h));
            meao_db_rollback(db);
            return meao_db_err(rc);
        }
        db->in_part = false;
        db->joined++;
        if (db->part_full)
            db->group_full = true;
        if (db->part_revoked)
            db->group_revoked = true;
        db->part_revoked = false;
        return MEAO_OK; /* durable at meao_db_group_commit() */
    }
    rc = run(db, SQL_COMMIT);
    if (rc != SQLITE_OK) {
        meao_log(MEAO_LOG_WARN, NULL, "sqlite", "commit: %s", sqlite3_errmsg(db->h));
        run(db, SQL_ROLLBACK);
    }
    restore_sync(db);
    drop_writer(db);
    if (db->revocation_pending && rc == SQLITE_OK && revocation_hook)
        revocation_hook(revocation_arg);
    db->revocation_pending = false;
    return meao_db_err(rc);
}

void meao_db_rollback(struct meao_db *db)
{
    if (db->in_part) {
        db->in_part = false;
        db->part_revoked = false;
        if (!sqlite3_get_autocommit(db->h)) {
            run(db, SQL_ROLLBACK_TO);
            run(db, SQL_RELEASE);
        }
        check_shared_lost(db);
        return;
    }
    if (db->shared)
        return; /* the caller has no transaction here: the shared one is not theirs */
    if (!sqlite3_get_autocommit(db->h))
        run(db, SQL_ROLLBACK);
    restore_sync(db);
    db->revocation_pending = false;
    drop_writer(db);
}

void meao_db_group_begin(struct meao_db *db)
{
    db->group = true;
    db->group_err = MEAO_OK;
    db->group_full = false;
    db->joined = 0;
}

bool meao_db_group_pending(const struct meao_db *db)
{
    return db->group && (db->shared || db->group_err != MEAO_OK);
}

unsigned meao_db_group_joined(const struct meao_db *db)
{
    return db->joined;
}

/* fsync the WAL: what synchronous=FULL does at a commit. SQLite refuses to
 * change the safety level inside a transaction, so a group holding a FULL
 * part commits with NORMAL and then syncs the WAL itself. */
static int sync_wal(struct meao_db *db)
{
    sqlite3_file *f = NULL;
    int rc = sqlite3_file_control(db->h, "main", SQLITE_FCNTL_JOURNAL_POINTER, &f);
    if (rc != SQLITE_OK)
        return rc;
    if (f == NULL || f->pMethods == NULL)
        return SQLITE_IOERR;
    return f->pMethods->xSync(f, SQLITE_SYNC_FULL);
}

enum meao_err meao_db_group_commit(struct meao_db *db)
{
    enum meao_err e;
    int rc = SQLITE_OK;
    if (db->in_part) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "a transaction was left open; rolled back");
        meao_db_rollback(db);
    }
    check_shared_lost(db);
    e = db->group_err;
    if (db->shared) {
        rc = run(db, SQL_COMMIT);
        if (rc == SQLITE_OK && db->group_full) {
            rc = sync_wal(db); /* committed but perhaps not durable: answer as failed */
            if (rc != SQLITE_OK)
                meao_log(MEAO_LOG_ERROR, NULL, "sqlite", "syncing the WAL failed (%d)", rc);
        }
        if (rc != SQLITE_OK) {
            meao_log(MEAO_LOG_ERROR, NULL, "sqlite", "group commit of %u: %s", db->joined,
                     sqlite3_errmsg(db->h));
            if (!sqlite3_get_autocommit(db->h))
                run(db, SQL_ROLLBACK);
            if (e == MEAO_OK)
                e = meao_db_err(rc) == MEAO_OK ? MEAO_E_DB : meao_db_err(rc);
        }
        db->shared = false;
        restore_sync(db);
        drop_writer(db);
        if (rc == SQLITE_OK && db->group_revoked && revocation_hook)
            revocation_hook(revocation_arg);
    }
    db->group_revoked = false;
    db->group = false;
    db->group_err = MEAO_OK;
    db->joined = 0;
    return e;
}

enum meao_err meao_db_begin_read(struct meao_db *db, bool *mine)
{
    int rc;
    *mine = false;
    if (!sqlite3_get_autocommit(db->h))
        return MEAO_OK; /* read inside the transaction already open here */
    rc = run(db, SQL_BEGIN_READ);
    *mine = rc == SQLITE_OK;
    return meao_db_err(rc);
}

void meao_db_end_read(struct meao_db *db, bool mine)
{
    if (mine && !sqlite3_get_autocommit(db->h))
        run(db, SQL_ROLLBACK);
}

enum meao_err meao_db_check_writable(struct meao_db *db, int timeout_ms)
{
    enum meao_err e;
    int rc;
    if (db->shared)
        return MEAO_OK; /* this connection holds the write lock right now */
    e = take_writer(db, timeout_ms);
    if (e != MEAO_OK)
        return e;
    sqlite3_busy_timeout(db->h, timeout_ms);
    rc = exec(db->h, "BEGIN IMMEDIATE");
    if (rc == SQLITE_OK)
        rc = exec(db->h, "ROLLBACK");
    else if (!sqlite3_get_autocommit(db->h))
        exec(db->h, "ROLLBACK");
    sqlite3_busy_timeout(db->h, db->busy_timeout_ms);
    restore_sync(db);
    drop_writer(db);
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
    if (db->in_part)
        db->part_revoked = true; /* at the group's commit, if this part is released */
    else if (db->shared)
        db->group_revoked = true; /* a bare statement inside the group's transaction */
    else if (!sqlite3_get_autocommit(db->h))
        db->revocation_pending = true; /* at meao_db_commit() */
    else if (revocation_hook)
        revocation_hook(revocation_arg);
}
