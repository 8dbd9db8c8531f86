/* SQLite store: one database file in WAL mode with busy_timeout, foreign keys,
 * synchronous=FULL (a lost commit could revive a revoked token or a spent
 * pairing code), a bounded WAL, versioned forward-only migrations, and a
 * per-connection cache of prepared statements.
 *
 * Writers (MEAO_DB_WRITER_LOCK) queue on a process-shared mutex
 * (store/wlock.h) before BEGIN IMMEDIATE instead of in SQLite's sleeping
 * busy handler. A connection can also commit in groups: between
 * meao_db_group_begin() and meao_db_group_commit() every transaction the
 * callers open joins one shared transaction as a savepoint, and the whole
 * group becomes durable — or fails — at once at meao_db_group_commit(). */
#ifndef MEAO_STORE_DB_H
#define MEAO_STORE_DB_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"

struct meao_db;

enum {
    MEAO_DB_MIGRATE = 1u << 0,  /* apply pending migrations (one process per start) */
    MEAO_DB_READONLY = 1u << 1, /* open read-only (backups, diagnostics) */
    /* queue writers on the shared mutex in <path>-wlock (store/wlock.h); if
     * that file cannot be made, writers fall back to SQLite's busy handler */
    MEAO_DB_WRITER_LOCK = 1u << 2,
};

/* Schema version this binary expects (the number of migrations). */
int meao_db_schema_latest(void);

/* Open path. With MEAO_DB_MIGRATE pending migrations run inside one
 * BEGIN IMMEDIATE transaction, so concurrent starters serialise and only the
 * first migrates; without it, a schema older or newer than this binary's is
 * MEAO_E_DB. On error *out is NULL and err (may be NULL) gets one line. */
enum meao_err meao_db_open(const char *path, int busy_timeout_ms, unsigned flags,
                           struct meao_db **out, char *err, size_t errlen);

/* Open, migrate and close: what a supervisor runs once before its workers start. */
enum meao_err meao_store_migrate_path(const char *path, int busy_timeout_ms, char *err,
                                      size_t errlen);

void meao_db_close(struct meao_db *db);

sqlite3 *meao_db_handle(struct meao_db *db);

/* A prepared statement for sql, prepared on first use and cached for the
 * life of the connection. sql must be a string with static storage (the
 * cache keys on its address). The statement comes back reset with bindings
 * cleared; NULL on error (logged). Borrowed: never finalize it. */
sqlite3_stmt *meao_db_stmt(struct meao_db *db, const char *sql);

/* Transactions. begin_immediate takes the write lock up front (read-then-write):
 * the writer lock first when the connection has one (waiting at most the busy
 * timeout: MEAO_E_DB), then BEGIN IMMEDIATE. In a group (below) both open a
 * savepoint inside the shared transaction instead. */
enum meao_err meao_db_begin_immediate(struct meao_db *db);
/* BEGIN IMMEDIATE with relaxed durability (synchronous=NORMAL until the
 * transaction ends): the commit survives any process crash, kill -9
 * included (it is in the WAL, in the kernel's page cache), but not a power
 * loss before the next synchronous commit or checkpoint. For frequent rows
 * whose loss on power failure is harmless (sessions, messages) — never for
 * tokens or pairing codes. meao_db_commit()/meao_db_rollback() restore FULL. */
enum meao_err meao_db_begin_relaxed(struct meao_db *db);
/* End the caller's transaction. In a group, commit releases the savepoint
 * into the shared transaction: MEAO_OK then means "durable once
 * meao_db_group_commit() succeeds", and rollback undoes only the caller's
 * part. Outside a transaction of the caller's own, rollback does nothing. */
enum meao_err meao_db_commit(struct meao_db *db);
void meao_db_rollback(struct meao_db *db);

/* Group commit. After group_begin, transactions opened on this connection
 * join one shared write transaction (opened lazily by the first of them,
 * holding the write lock until group_commit), each as its own savepoint.
 * While meao_db_group_pending() is true, anything the caller answers about
 * this connection's writes (or reads: they see uncommitted parts) must wait:
 * group_commit makes all released parts durable at once (committed with
 * synchronous=NORMAL, then the WAL fsynced as FULL would if any part was
 * begun with begin_immediate)
 * and returns MEAO_OK, or an error meaning none of them was stored (the
 * shared transaction failed or SQLite rolled it back on its own). It ends
 * the group; a part still open is rolled back first. One thread only. */
void meao_db_group_begin(struct meao_db *db);
bool meao_db_group_pending(const struct meao_db *db);
/* Parts released into the shared transaction since group_begin. */
unsigned meao_db_group_joined(const struct meao_db *db);
enum meao_err meao_db_group_commit(struct meao_db *db);

/* A read transaction for statements that must see one snapshot. When a
 * transaction is already open on the connection (a group's), reads happen in
 * it and *mine is false; pass *mine to meao_db_end_read(). */
enum meao_err meao_db_begin_read(struct meao_db *db, bool *mine);
void meao_db_end_read(struct meao_db *db, bool mine);

/* Can this connection write right now? Takes and releases the write lock with
 * a short busy timeout (timeout_ms), so a locked or read-only database answers
 * quickly. Used by /ready. */
enum meao_err meao_db_check_writable(struct meao_db *db, int timeout_ms);

/* Step a prepared statement once: MEAO_OK on SQLITE_DONE or SQLITE_ROW,
 * else the mapped error. Failures are logged, except constraint violations,
 * which are answers (a taken name, a used code) rather than faults. */
enum meao_err meao_db_step(struct meao_db *db, sqlite3_stmt *st);

/* Map an SQLite result code to the library error (BUSY/LOCKED/IOERR/READONLY/
 * FULL/CANTOPEN → MEAO_E_DB, CONSTRAINT → MEAO_E_CONFLICT, else INTERNAL). */
enum meao_err meao_db_err(int rc);

/* For programs that run once per connection (meao-ws): before the first
 * open in the process, turn off SQLite's per-connection lookaside allocator,
 * keep the page cache small and give SQLite a private allocator whose pages
 * can all be returned (store/dbmem.h), so an idle process stays small. */
void meao_db_low_memory(void);

/* In low-memory mode, once no connection is open: shut SQLite down and give
 * all of its memory back to the kernel (the next open starts it again). A
 * no-op otherwise. Single-threaded programs only. */
void meao_db_release_idle(void);

/* Revocations: a store function that revoked tokens calls
 * meao_db_note_revocation(); the process's hook then runs once the change is
 * committed (at once outside a transaction, at meao_db_commit() inside one,
 * never after a rollback). meao-fcgi and meaoctl use it to bump the shared
 * revocation counter that open WebSocket connections watch. One hook per
 * process; NULL clears it. */
void meao_db_set_revocation_hook(void (*fn)(void *), void *arg);
void meao_db_note_revocation(struct meao_db *db);

#endif
