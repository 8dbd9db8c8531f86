/* The Telegram worker (meao-telegram): consumes the durable inbox the webhook
 * fills (store/telegram.h) and answers through the Bot API (botapi.h).
 *
 * Order and concurrency: updates of one chat are handled one at a time in
 * update_id order; up to telegram_max_chats chats run at once, each on its own
 * thread with its own database connection and Bot API handle. Button presses
 * (callback_query) are not queued behind their chat — the turn they answer
 * is what the chat is waiting on — and run at once.
 *
 * Delivery is at-least-once with idempotent steps: a row is marked done only
 * after its reply went out. A worker that dies mid-update (kill -9) leaves the
 * row `working`; the next start takes it again: it releases the turn the dead
 * worker had begun (the lease token is in the row), re-delivers a reply that
 * was already complete in the database instead of running the turn again, or
 * else re-runs the turn, editing the same reply message (its id is in the
 * row). What can repeat after a kill -9: the turn itself (and tools run by a
 * turn that had not completed), an approval prompt, the extra messages of a
 * reply longer than 4096 characters, and a refusal or pairing code sent to a
 * stranger. */
#ifndef MEAO_TELEGRAM_WORKER_H
#define MEAO_TELEGRAM_WORKER_H

#include "core/config.h"

/* Run until *stop becomes non-zero (a signal handler sets it; *reopen, when
 * not NULL, asks for the log file to be reopened and is cleared): poll the
 * inbox every telegram_poll_ms and serve it. Returns the exit status (0 on a
 * clean stop, 1 when it could not start: no token, no database, no secrets).
 * On stop, running turns are cancelled and their updates put back in the
 * inbox, to be run again by the next start. */
int meao_tg_worker_run(const struct meao_config *cfg, const int *stop, int *reopen);

#endif
