/* meaoctl subcommands that live outside meaoctl.c (one file per family).
 * Each takes the loaded configuration (borrowed) and the subcommand's
 * arguments (argv[0] is the subcommand's name), prints results on stdout and
 * one-line errors on stderr, and returns meaoctl's exit code. */
#ifndef MEAO_CTL_CTL_H
#define MEAO_CTL_CTL_H

#include <stdint.h>

#include "core/config.h"

/* meaoctl's exit codes (see meaoctl --help). */
enum { CTL_EX_OK = 0, CTL_EX_FAIL = 1, CTL_EX_USAGE = 2, CTL_EX_UNAVAIL = 3 };

/* "meaoctl: " + the message + newline on stderr; returns code. */
int meaoctl_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parse a point in time for --since/--until: YYYY-MM-DD (midnight UTC),
 * YYYY-MM-DDTHH:MM:SSZ, or N followed by s, m, h or d meaning that long
 * before now_ms. 0 and *out_ms in ms since the epoch, or -1. */
int meaoctl_parse_time(const char *s, int64_t now_ms, int64_t *out_ms);

/* audit export --since T [--until T] [--format jsonl] [--output PATH] |
 * audit prune [--days N] (default audit_retention_days). */
int meaoctl_audit(const struct meao_config *cfg, int argc, char **argv);

/* doctor [--nginx-conf FILE | --no-nginx]: check an installation, print what
 * to fix; config_path is the file the configuration came from (or NULL). */
int meaoctl_doctor(const struct meao_config *cfg, const char *config_path, int argc, char **argv);

/* backup PATH: an online, consistent copy of the database (store/backup.h). */
int meaoctl_backup(const struct meao_config *cfg, int argc, char **argv);

/* restore PATH: refuses while the database is open elsewhere; keeps the
 * current database as DB.pre-restore-TIMESTAMP first. */
int meaoctl_restore(const struct meao_config *cfg, int argc, char **argv);

#endif
