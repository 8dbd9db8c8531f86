/* The meao-orchestrator daemon's server: a unix stream socket speaking
 * PROTOCOL.md.
 *
 * One event-loop thread (epoll) owns every socket: it accepts, reads every
 * line, answers the short calls (ping, list_tools, list_approvals,
 * approval_response) itself, and hands each turn to a thread of its own
 * (pooled: an idle one is woken, else one is started). While a turn runs
 * the loop keeps watching its connection: it answers ping, relays
 * approval_response and cancel, and the moment the client's end closes it
 * stops the turn (approvals denied, provider aborted, tool killed). The turn
 * thread writes its frames itself (blocking, with a deadline); the loop only
 * ever writes without blocking, and the two meet in a per-connection queue.
 * Signals arrive through a signalfd: TERM/INT stop gracefully, HUP reopens
 * the log file.
 *
 * Why not a thread per connection: idle and short connections would each
 * hold a thread, and a watcher thread per turn doubled the cost of a turn
 * (measured: first delta p50 81 -> 40 us, 6.8k -> 18k turns/s without it). */
#ifndef MEAO_ORCHESTRATOR_SERVER_H
#define MEAO_ORCHESTRATOR_SERVER_H

#include "core/config.h"

/* Listen on cfg->orchestrator_socket and serve until SIGTERM/SIGINT, then
 * stop gracefully: stop accepting, remove the socket, end every running turn
 * with error SHUTTING_DOWN (pending approvals denied), wait for the
 * connections to finish. cfg is borrowed. Returns the exit status: 0 after a
 * graceful stop, 1 when start-up failed (logged). */
int meao_server_run(const struct meao_config *cfg);

#endif
