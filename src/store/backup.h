/* Online backup and restore of the SQLite database (meaoctl backup / restore).
 *
 * A backup is taken with SQLite's online backup API in one step, i.e. inside
 * one read transaction on the live database: in WAL mode writers go on while
 * it runs, and the copy is the database exactly as it was when the backup
 * started (every commit acknowledged before that moment is in it). The copy
 * is a single self-contained file (rollback journal mode, no -wal), written
 * to a temporary name, checked with PRAGMA integrity_check, synced and
 * renamed into place: a backup file that exists is complete. */
#ifndef MEAO_STORE_BACKUP_H
#define MEAO_STORE_BACKUP_H

#include <stddef.h>
#include <sys/types.h>

#include "core/err.h"

/* Copy the database at src_path into the new file dst_path (mode 0600; it
 * must not exist: MEAO_E_CONFLICT). Waits up to busy_timeout_ms for locks.
 * On success *pages (may be NULL) gets the number of pages copied. On error
 * nothing is left at dst_path and err gets one line. */
enum meao_err meao_db_backup(const char *src_path, const char *dst_path, int busy_timeout_ms,
                             int *pages, char *err, size_t errlen);

/* Run PRAGMA integrity_check on the database file at path (opened read-only)
 * and read its schema version into *version (may be NULL). MEAO_OK when the
 * check answers "ok"; MEAO_E_DB (err: the first problem) otherwise, also
 * when path is not an SQLite database. */
enum meao_err meao_db_verify(const char *path, int *version, char *err, size_t errlen);

/* Is another process using the database at path? SQLite holds a shared lock
 * on byte 128 of the -shm file (the "DMS" lock of the WAL format) for as long
 * as a WAL connection is open, so a conflicting lock there means a live
 * connection. MEAO_OK: no one (*holder = 0); MEAO_E_CONFLICT: in use, *holder
 * gets a pid holding it; MEAO_E_IO: cannot tell (err says why). */
enum meao_err meao_db_in_use(const char *path, pid_t *holder, char *err, size_t errlen);

/* Replace the contents of the database at db_path (created when missing)
 * with the backup at backup_path, which must pass meao_db_verify and not be
 * newer than this binary's schema. Refuses (MEAO_E_CONFLICT) while another
 * process has the database open. The restored database is checked again and
 * migrated to the current schema. The caller should have saved the old
 * database first (meaoctl does, with meao_db_backup). */
enum meao_err meao_db_restore(const char *backup_path, const char *db_path, int busy_timeout_ms,
                              char *err, size_t errlen);

#endif
