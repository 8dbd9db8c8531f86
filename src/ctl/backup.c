/* meaoctl backup / restore: thin wrappers over store/backup.h. */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ctl/ctl.h"
#include "store/backup.h"
#include "store/db.h"

static int exit_for(enum meao_err e)
{
    return e == MEAO_E_DB || e == MEAO_E_IO || e == MEAO_E_UNAVAILABLE ? CTL_EX_UNAVAIL
                                                                       : CTL_EX_FAIL;
}

int meaoctl_backup(const struct meao_config *cfg, int argc, char **argv)
{
    char err[512];
    int pages = 0;
    enum meao_err e;

    if (argc == 2 && strcmp(argv[1], "--help") == 0) {
        puts("usage: meaoctl backup PATH\n"
             "Writes a consistent copy of the database to PATH (a new file, mode 0600) with\n"
             "SQLite's online backup API, while the gateway keeps serving. The copy holds\n"
             "every write committed before it started and passes PRAGMA integrity_check.");
        return CTL_EX_OK;
    }
    if (argc != 2 || argv[1][0] == '\0')
        return meaoctl_fail(CTL_EX_USAGE, "backup needs one PATH");
    e = meao_db_backup(cfg->db_path, argv[1], (int)cfg->db_busy_timeout_ms, &pages, err,
                       sizeof err);
    if (e != MEAO_OK)
        return meaoctl_fail(exit_for(e), "backup failed: %s", err);
    fprintf(stderr, "meaoctl: backup of %s written to %s (%d pages, integrity ok)\n", cfg->db_path,
            argv[1], pages);
    return CTL_EX_OK;
}

/* Run as root, the restored files belong to whoever owns the database's
 * directory (the service user), never to root. */
static void give_to_dir_owner(const char *db_path)
{
    static const char *const suffix[] = {"", "-wal", "-shm"};
    char dir[4096], path[4200];
    struct stat st;

    if (geteuid() != 0 || strlen(db_path) >= sizeof dir)
        return;
    strcpy(dir, db_path);
    if (stat(dirname(dir), &st) != 0)
        return;
    for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
        snprintf(path, sizeof path, "%s%s", db_path, suffix[i]);
        if (chown(path, st.st_uid, st.st_gid) != 0 && errno != ENOENT)
            fprintf(stderr, "meaoctl: warning: cannot chown %s: %s\n", path, strerror(errno));
    }
}

int meaoctl_restore(const struct meao_config *cfg, int argc, char **argv)
{
    char err[512], saved[4200], stamp[32];
    pid_t holder = 0;
    int version = 0;
    enum meao_err e;
    time_t now = time(NULL);
    struct tm tm;

    if (argc == 2 && strcmp(argv[1], "--help") == 0) {
        puts("usage: meaoctl restore PATH\n"
             "Replaces the database with the backup at PATH. Stop the gateway first\n"
             "(systemctl stop meao-fcgi meao-websocketd and any other meao unit that opens\n"
             "the database): restore refuses while another process has it open. The backup\n"
             "must pass PRAGMA integrity_check; the current database is kept as\n"
             "DB.pre-restore-TIMESTAMP; the result is checked again and migrated.");
        return CTL_EX_OK;
    }
    if (argc != 2 || argv[1][0] == '\0')
        return meaoctl_fail(CTL_EX_USAGE, "restore needs one PATH");
    if (meao_db_verify(argv[1], &version, err, sizeof err) != MEAO_OK)
        return meaoctl_fail(CTL_EX_FAIL, "%s is not a usable backup: %s", argv[1], err);
    e = meao_db_in_use(cfg->db_path, &holder, err, sizeof err);
    if (e == MEAO_E_CONFLICT)
        return meaoctl_fail(CTL_EX_FAIL,
                            "%s is in use (pid %ld): stop meao-fcgi, meao-websocketd and the other "
                            "meao units first",
                            cfg->db_path, (long)holder);
    if (e != MEAO_OK)
        return meaoctl_fail(CTL_EX_UNAVAIL, "%s", err);
    if (access(cfg->db_path, F_OK) == 0) {
        gmtime_r(&now, &tm);
        strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
        snprintf(saved, sizeof saved, "%s.pre-restore-%s", cfg->db_path, stamp);
        e = meao_db_backup(cfg->db_path, saved, (int)cfg->db_busy_timeout_ms, NULL, err,
                           sizeof err);
        if (e != MEAO_OK)
            return meaoctl_fail(exit_for(e), "cannot keep the current database: %s", err);
        fprintf(stderr, "meaoctl: kept the current database as %s\n", saved);
    }
    e = meao_db_restore(argv[1], cfg->db_path, (int)cfg->db_busy_timeout_ms, err, sizeof err);
    if (e != MEAO_OK)
        return meaoctl_fail(exit_for(e), "restore failed: %s", err);
    give_to_dir_owner(cfg->db_path);
    fprintf(stderr,
            "meaoctl: restored %s into %s (backup schema %d, now %d; integrity ok); start the "
            "gateway again\n",
            argv[1], cfg->db_path, version, meao_db_schema_latest());
    return CTL_EX_OK;
}
