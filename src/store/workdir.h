/* Session working directories, confined to the workspace root.
 *
 * Layout: <workspace_root>/<userId>/... Each user's directory and every
 * directory made for a session is created mode 0700. A session's workDir is
 * resolved once, when the session is created:
 *   - absent: <root>/<userId>/<sessionId>, made at the session's first turn
 *     (meao_workdir_ensure): a directory per session is the most expensive
 *     part of creating one, and most sessions of a bot may never run a tool;
 *   - relative: taken relative to <root>/<userId>;
 *   - absolute: must name a directory inside <root>/<userId> (an owner may
 *     name any directory inside <root>).
 * A `..` component is refused outright, and the path is walked one component
 * at a time with openat(O_NOFOLLOW | O_DIRECTORY), so a symlink anywhere
 * below the root (pointing out of it or not) is refused instead of followed.
 * The orchestrator confines its tools to the workDir again; this is the
 * gateway's half. */
#ifndef MEAO_STORE_WORKDIR_H
#define MEAO_STORE_WORKDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define MEAO_WORKDIR_REQUEST_MAX 1024 /* bytes of a client-given workDir */

struct meao_workdir_req {
    const char *root;         /* cfg->workspace_root (created when missing) */
    int64_t user_id;          /* whose directory */
    bool may_use_whole_root;  /* owners: absolute paths anywhere under root */
    const char *requested;    /* the client's workDir, or NULL for the default */
    const char *default_leaf; /* the session id: the default directory's name */
};

/* Resolve the directory and create a requested one; out (outlen bytes)
 * gets its absolute path. MEAO_E_INVALID_PARAMETER with a client-safe reason
 * in why when the request is refused; MEAO_E_IO (reason logged) when the
 * workspace itself cannot be made or opened. */
enum meao_err meao_workdir_resolve(const struct meao_workdir_req *r, char *out, size_t outlen,
                                   char *why, size_t whylen);

/* Make sure dir, a directory resolved earlier under root, exists: create
 * what is missing below the root (mode 0700), refusing any symlink on the way
 * (MEAO_E_IO, logged). Before every turn: the default directory is made
 * there, and one removed meanwhile comes back. */
enum meao_err meao_workdir_ensure(const char *root, const char *dir);

#endif
