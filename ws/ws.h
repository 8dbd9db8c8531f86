/* meao-ws: one WebSocket connection, run by websocketd with the client's
 * frames on stdin (one per line) and ours on stdout (one per line, written
 * whole at once).
 * See ws/README.md for the frames and the lifecycle. */
#ifndef MEAO_WS_WS_H
#define MEAO_WS_WS_H

#include "http/app.h"

#define MEAO_WS_MAX_FRAME (1024 * 1024) /* longest client frame, without its newline */

/* What websocketd tells us about the upgrade request (CGI-style variables;
 * every field may be NULL). Borrowed for the whole run. */
struct meao_ws_env {
    const char *authorization; /* HTTP_AUTHORIZATION — a secret: never logged */
    const char *request_id;    /* HTTP_X_REQUEST_ID: nginx's $request_id */
    const char *real_ip;       /* HTTP_X_REAL_IP set by nginx, else REMOTE_ADDR */
    const char *query;         /* QUERY_STRING */
};

/* Serve one connection until the client goes (EOF on in_fd), the
 * connection is closed by us (auth deadline, idle, revoked token, too many
 * connections) or *stop becomes non-zero (a signal). Returns the process
 * exit status: 0 for a normal end, 1 when the connection could not be
 * served at all. */
int meao_ws_run(struct meao_app *app, const struct meao_ws_env *env, int in_fd, int out_fd,
                volatile int *stop);

#endif
