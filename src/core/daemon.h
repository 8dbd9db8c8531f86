/* What every meao daemon does at start and stop: listen on a unix socket
 * only a chosen group may use, without stealing a live daemon's socket;
 * write and remove a pid file; raise the descriptor limit. Shared by
 * meao-fcgi's master and meao-orchestrator. */
#ifndef MEAO_CORE_DAEMON_H
#define MEAO_CORE_DAEMON_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

#include "core/config.h"

/* The socket file a daemon created. The listening descriptor belongs to the
 * caller (it closes it when it stops accepting); this only remembers which
 * file to remove at exit. */
struct meao_listener {
    bool own;  /* we created the socket file: remove it on stop */
    dev_t dev; /* identity of the file we created, so a replacement is left alone */
    ino_t ino;
    char path[108];
};

/* Listen on a unix socket at path. A socket file where a peer answers is
 * another live daemon: refuse. A stale one (connection refused) is removed.
 * The socket is bound owner-only, then chmod'ed to mode and chown'ed to group
 * (a name or a number; NULL or empty: unchanged). key names the config key in
 * log lines. Returns the listening descriptor (non-blocking, close-on-exec;
 * the caller owns it), or -1 with the reason logged and nothing left behind. */
int meao_listener_open(struct meao_listener *l, const char *path, const char *key, mode_t mode,
                       const char *group, int backlog);

/* Remove the socket file if it is still the one we created (idempotent). */
void meao_listener_unlink(struct meao_listener *l);

/* Group name or number → gid. 0, or -1 when there is no such group. */
int meao_group_resolve(const char *name, gid_t *out);

/* Write our pid to path (NULL or empty: nothing to do, returns 0). Returns
 * 0 or -1 (logged); *wrote tells whether the caller must remove it. */
int meao_pid_file_write(const char *path, bool *wrote);

/* The command line every daemon shares: [-c|--config FILE] [--check-config]
 * [--version] [-h|--help]. Loads the configuration into cfg and opens the
 * log (program name, level, log_file). Returns -1 when the daemon should go
 * on running (cfg is then the caller's to free), or the exit status to
 * return at once (help, version, a checked config, a bad option or value —
 * reported in one line on stderr; cfg holds nothing then). *config_path
 * (may be NULL) gets the -c argument (borrowed from argv), or NULL. */
int meao_daemon_start(int argc, char **argv, const char *program, void (*usage)(FILE *),
                      struct meao_config *cfg, const char **config_path);

/* Raise the soft RLIMIT_NOFILE towards the hard limit (at most 65536). */
void meao_raise_nofile(void);

#endif
