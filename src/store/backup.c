#include "store/backup.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store/db.h"

/* The WAL format's "dead man switch" lock: byte 128 of the -shm file, held
 * shared by every open WAL connection (https://sqlite.org/walformat.html). */
#define SHM_DMS_OFFSET 128

static void seterr(char *err, size_t errlen, const char *what, sqlite3 *h)
{
    if (err && errlen)
        snprintf(err, errlen, "%s: %s", what, h ? sqlite3_errmsg(h) : "out of memory");
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Copy src into dst in one step (one read transaction on src), retrying
 * while a lock is held, for up to busy_timeout_ms. */
static int copy_all(sqlite3 *dst, sqlite3 *src, int busy_timeout_ms, int *pages)
{
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
    int rc, waited = 0;
    if (b == NULL)
        return sqlite3_errcode(dst);
    for (;;) {
        rc = sqlite3_backup_step(b, -1);
        if ((rc != SQLITE_BUSY && rc != SQLITE_LOCKED) || waited >= busy_timeout_ms)
            break;
        sleep_ms(20);
        waited += 20;
    }
    if (pages)
        *pages = sqlite3_backup_pagecount(b);
    if (sqlite3_backup_finish(b) != SQLITE_OK && rc == SQLITE_DONE)
        rc = sqlite3_errcode(dst);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* integrity_check and user_version on an open connection. */
static enum meao_err check_open(sqlite3 *h, int *version, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    enum meao_err e = MEAO_E_DB;
    int rc = sqlite3_prepare_v2(h, "PRAGMA integrity_check(1)", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        seterr(err, errlen, "integrity check", h);
        goto out;
    }
    if (strcmp((const char *)sqlite3_column_text(st, 0), "ok") != 0) {
        if (err)
            snprintf(err, errlen, "integrity check failed: %.180s", sqlite3_column_text(st, 0));
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (version) {
        if (sqlite3_prepare_v2(h, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK ||
            sqlite3_step(st) != SQLITE_ROW) {
            seterr(err, errlen, "read schema version", h);
            goto out;
        }
        *version = sqlite3_column_int(st, 0);
    }
    e = MEAO_OK;
out:
    sqlite3_finalize(st);
    return e;
}

static int fsync_path(const char *path, int flags)
{
    int fd = open(path, flags | O_CLOEXEC), rc;
    if (fd < 0)
        return -1;
    rc = fsync(fd);
    close(fd);
    return rc;
}

static int fsync_dir_of(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return fsync_path(".", O_RDONLY | O_DIRECTORY);
    if (slash == path)
        return fsync_path("/", O_RDONLY | O_DIRECTORY);
    if ((size_t)(slash - path) >= sizeof dir)
        return -1;
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = '\0';
    return fsync_path(dir, O_RDONLY | O_DIRECTORY);
}

enum meao_err meao_db_backup(const char *src_path, const char *dst_path, int busy_timeout_ms,
                             int *pages, char *err, size_t errlen)
{
    sqlite3 *src = NULL, *dst = NULL;
    char tmp[4096];
    enum meao_err e = MEAO_E_DB;
    int fd, rc;

    if (access(dst_path, F_OK) == 0) {
        if (err)
            snprintf(err, errlen, "%s already exists (a backup never overwrites a file)", dst_path);
        return MEAO_E_CONFLICT;
    }
    if (snprintf(tmp, sizeof tmp, "%s.tmp-%ld", dst_path, (long)getpid()) >= (int)sizeof tmp) {
        if (err)
            snprintf(err, errlen, "backup path too long");
        return MEAO_E_INVALID_PARAMETER;
    }
    /* the file is born 0600: a backup holds every token hash and message */
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        if (err)
            snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        return MEAO_E_IO;
    }
    close(fd);
    /* read-write without CREATE: a WAL reader may need to create the -shm;
     * nothing is ever written to the source */
    rc = sqlite3_open_v2(src_path, &src, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "open database", src);
        goto out;
    }
    sqlite3_busy_timeout(src, busy_timeout_ms);
    rc = sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "open backup file", dst);
        goto out;
    }
    rc = copy_all(dst, src, busy_timeout_ms, pages);
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "backup", dst);
        e = meao_db_err(rc);
        goto out;
    }
    /* one self-contained file: no -wal next to it */
    if (sqlite3_exec(dst, "PRAGMA journal_mode = DELETE", NULL, NULL, NULL) != SQLITE_OK) {
        seterr(err, errlen, "backup journal mode", dst);
        goto out;
    }
    if ((e = check_open(dst, NULL, err, errlen)) != MEAO_OK) {
        e = MEAO_E_DB;
        goto out;
    }
    sqlite3_close(dst);
    dst = NULL;
    if (fsync_path(tmp, O_RDONLY) != 0 || rename(tmp, dst_path) != 0 || fsync_dir_of(dst_path)) {
        if (err)
            snprintf(err, errlen, "cannot store %s: %s", dst_path, strerror(errno));
        e = MEAO_E_IO;
        goto out;
    }
    e = MEAO_OK;
out:
    sqlite3_close(dst);
    sqlite3_close(src);
    if (e != MEAO_OK)
        unlink(tmp);
    return e;
}

enum meao_err meao_db_verify(const char *path, int *version, char *err, size_t errlen)
{
    sqlite3 *h = NULL;
    enum meao_err e;
    int rc = sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "open", h);
        sqlite3_close(h);
        return MEAO_E_DB;
    }
    e = check_open(h, version, err, errlen);
    sqlite3_close(h);
    return e;
}

enum meao_err meao_db_in_use(const char *path, pid_t *holder, char *err, size_t errlen)
{
    char shm[4096];
    struct flock fl;
    int fd;

    *holder = 0;
    if (snprintf(shm, sizeof shm, "%s-shm", path) >= (int)sizeof shm) {
        if (err)
            snprintf(err, errlen, "database path too long");
        return MEAO_E_IO;
    }
    fd = open(shm, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return MEAO_OK; /* no WAL connection has the database open */
        if (err)
            snprintf(err, errlen, "cannot open %s: %s", shm, strerror(errno));
        return MEAO_E_IO;
    }
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = SHM_DMS_OFFSET;
    fl.l_len = 1;
    if (fcntl(fd, F_GETLK, &fl) != 0) {
        if (err)
            snprintf(err, errlen, "cannot test the lock on %s: %s", shm, strerror(errno));
        close(fd);
        return MEAO_E_IO;
    }
    close(fd);
    if (fl.l_type == F_UNLCK)
        return MEAO_OK;
    *holder = fl.l_pid;
    return MEAO_E_CONFLICT;
}

enum meao_err meao_db_restore(const char *backup_path, const char *db_path, int busy_timeout_ms,
                              char *err, size_t errlen)
{
    sqlite3 *src = NULL, *dst = NULL;
    struct meao_db *db = NULL;
    enum meao_err e;
    pid_t holder = 0;
    int version = 0, rc;

    if ((e = meao_db_verify(backup_path, &version, err, errlen)) != MEAO_OK)
        return e;
    if (version > meao_db_schema_latest()) {
        if (err)
            snprintf(err, errlen, "the backup's schema version %d is newer than this binary (%d)",
                     version, meao_db_schema_latest());
        return MEAO_E_INVALID_PARAMETER;
    }
    e = meao_db_in_use(db_path, &holder, err, errlen);
    if (e == MEAO_E_CONFLICT && err)
        snprintf(err, errlen,
                 "the database is in use (pid %ld): stop meao-fcgi, meao-websocketd and the other "
                 "meao units first",
                 (long)holder);
    if (e != MEAO_OK)
        return e;
    e = MEAO_E_DB;
    rc = sqlite3_open_v2(backup_path, &src, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "open backup", src);
        goto out;
    }
    rc = sqlite3_open_v2(db_path, &dst,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "open database", dst);
        goto out;
    }
    sqlite3_busy_timeout(dst, busy_timeout_ms);
    rc = copy_all(dst, src, busy_timeout_ms, NULL);
    if (rc != SQLITE_OK) {
        seterr(err, errlen, "restore", dst);
        e = meao_db_err(rc);
        goto out;
    }
    /* back to the serving mode, everything in the main file */
    if (sqlite3_exec(dst, "PRAGMA journal_mode = WAL; PRAGMA wal_checkpoint(TRUNCATE);", NULL, NULL,
                     NULL) != SQLITE_OK) {
        seterr(err, errlen, "restore journal mode", dst);
        goto out;
    }
    if ((e = check_open(dst, NULL, err, errlen)) != MEAO_OK)
        goto out;
    sqlite3_close(dst);
    dst = NULL;
    /* an older backup is brought up to this binary's schema */
    e = meao_db_open(db_path, busy_timeout_ms, MEAO_DB_MIGRATE, &db, err, errlen);
out:
    meao_db_close(db);
    sqlite3_close(dst);
    sqlite3_close(src);
    return e;
}
