/* The database's writer lock: one process-shared robust mutex in a small
 * shared file next to the database (<db_path>-wlock), taken before
 * BEGIN IMMEDIATE and released when the transaction ends.
 *
 * Why: SQLite's own write lock is a non-blocking fcntl lock retried by a busy
 * handler that sleeps 1, 2, 5, 10 … ms between tries, so two responder
 * processes writing at the same time spend most of their waits asleep while
 * the lock is long free (measured: p99 105 ms, a tenth of nginx's rate). A
 * waiter on this mutex sleeps on a futex and is woken the moment the holder
 * lets go. SQLite's busy timeout stays the fallback against writers that do
 * not use this lock (meaoctl, the sqlite3 shell). The pthread mutex is not
 * fair, so a handle that released the lock while others waited lets one of
 * them take it first (waiting at most 250 µs for it) before taking it again.
 *
 * Failure handling: a holder that dies (kill -9) leaves the mutex to the next
 * locker as EOWNERDEAD, which is recovered at once (SQLite has released the
 * dead process's own locks; its open transaction is rolled back). A holder
 * that is alive but stuck makes waiters give up after their timeout instead of
 * hanging. The file records the boot it was made in; a file from an earlier
 * boot (its mutex word may name a thread that no longer exists) is
 * re-initialised under flock before use. */
#ifndef MEAO_STORE_WLOCK_H
#define MEAO_STORE_WLOCK_H

#include <stdbool.h>

#include "core/err.h"

struct meao_wlock;

/* Map (creating it, mode 0600, when missing) the lock file at path. On error
 * *out is NULL and the error is logged (callers go on without the lock). Each
 * handle is its own mapping: it may be used by one thread at a time; any
 * number of handles in any number of processes share the one mutex. */
enum meao_err meao_wlock_open(const char *path, struct meao_wlock **out);

/* Unmap. Must not be held. Accepts NULL. */
void meao_wlock_close(struct meao_wlock *l);

/* Take the lock, waiting at most timeout_ms (< 0: forever). MEAO_OK when
 * taken; *recovered (may be NULL) says whether the previous holder had died
 * holding it. MEAO_E_DB (busy) when the timeout passed. */
enum meao_err meao_wlock_acquire(struct meao_wlock *l, int timeout_ms, bool *recovered);

/* Release a lock taken with meao_wlock_acquire(). */
void meao_wlock_release(struct meao_wlock *l);

#endif
