/* meaoctl subcommands that live outside meaoctl.c (one file per family).
 * Each takes the loaded configuration (borrowed) and the subcommand's
 * arguments (argv[0] is the subcommand's name), prints results on stdout and
 * one-line errors on stderr, and returns meaoctl's exit code. */
#ifndef MEAO_CTL_CTL_H
#define MEAO_CTL_CTL_H

#include "core/config.h"

/* meaoctl's exit codes (see meaoctl --help). */
enum { CTL_EX_OK = 0, CTL_EX_FAIL = 1, CTL_EX_USAGE = 2, CTL_EX_UNAVAIL = 3 };

/* backup PATH: an online, consistent copy of the database (store/backup.h). */
int meaoctl_backup(const struct meao_config *cfg, int argc, char **argv);

/* restore PATH: refuses while the database is open elsewhere; keeps the
 * current database as DB.pre-restore-TIMESTAMP first. */
int meaoctl_restore(const struct meao_config *cfg, int argc, char **argv);

#endif
